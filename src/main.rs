//! The `ember` binary: every Ember process, the management commands and the benchmarks.

mod bench;
mod manage_backups;
mod manage_flows;
mod process;
mod server;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ember_common::config::{Config, LogFormat, Overrides};
use ember_db::{Db, DbOptions};
use tracing_subscriber::EnvFilter;

use crate::process::{Plumbing, Role};

/// Ember: a block storage service that speaks OpenStack Cinder's Block Storage API v3.
#[derive(Debug, Parser)]
#[command(name = "ember", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every service in one process on the embedded default (SQLite, in-process bus, file driver).
    AllInOne(AllInOneArgs),
    /// The REST API (Cinder's cinder-api).
    Api(AllInOneArgs),
    /// The filter scheduler (Cinder's cinder-scheduler).
    Scheduler(AllInOneArgs),
    /// The volume service of this host's enabled backends (Cinder's cinder-volume).
    Volume(AllInOneArgs),
    /// The backup service of this host (Cinder's cinder-backup).
    Backup(AllInOneArgs),
    /// Management commands (Cinder's cinder-manage).
    #[command(subcommand)]
    Manage(Manage),
    /// Benchmarks that print a table, or JSON lines with --json.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct AllInOneArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Where the configuration comes from: defaults, the `--config` file, `EMBER_*` variables,
/// then these flags.
#[derive(Debug, Clone, clap::Args)]
struct ConfigArgs {
    /// A TOML configuration file (see etc/ember.toml).
    #[arg(long, env = "EMBER_CONFIG")]
    config: Option<PathBuf>,
    /// Where the database and the volume files live (option `data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `sqlite:///path/ember.db` or `postgres://user@host/db` (option `database_url`).
    #[arg(long)]
    database_url: Option<String>,
    /// Address the REST API listens on (options `osapi_volume_listen` and `_port`).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            osapi_volume_listen: self.listen.map(|a| a.ip().to_string()),
            osapi_volume_listen_port: self.listen.map(|a| a.port()),
            ..Overrides::default()
        };
        Ok(Config::load(self.config.as_deref(), &overrides)?)
    }
}

#[derive(Debug, Subcommand)]
enum Manage {
    /// Database commands.
    #[command(subcommand)]
    Db(ManageDb),
    /// The flows every process recorded: list, show, draw, resume, revert.
    #[command(subcommand)]
    Flows(manage_flows::Flows),
    /// The POSIX backup store: verify a backup's chunks.
    #[command(subcommand)]
    Backups(manage_backups::Backups),
}

#[derive(Debug, Subcommand)]
enum ManageDb {
    /// Applies every pending migration.
    Sync(ConfigArgs),
    /// Deletes finished flows and soft-deleted rows older than N days (Cinder's `db purge`).
    Purge(PurgeArgs),
}

#[derive(Debug, clap::Args)]
struct PurgeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Purge what finished (flows) or was deleted (rows) more than this many days ago.
    #[arg(long, value_name = "N")]
    age_in_days: u32,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// One JSON object per line instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    which: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// The flow engine: cost per task in memory and persisted.
    Engine(bench::engine::Args),
    /// The filter scheduler: time to place one request among many pools.
    Scheduler(bench::scheduler::Args),
    /// The REST API of a real all-in-one: volumes per second, latency, CPU and memory.
    Api(bench::api::Args),
    /// Attach cycles (create with a connector, complete, delete) through the REST API.
    Attach(bench::attach::Args),
    /// Keystone tokens: GET /volumes/{id} per second with a cached token against noauth.
    Auth(bench::auth::Args),
    /// The backup path's NBD client against qemu-nbd: sequential reads and block status.
    Nbd(bench::nbd::Args),
    /// The POSIX backup store: full backup, restore and incremental of a sparse volume.
    Backup(bench::backup::Args),
    /// One step of `bench backup`, run in a child process so its usage is its own.
    #[command(hide = true)]
    BackupStep(bench::backup::StepArgs),
    /// A year's database (100,000 volumes, 1,000,000 flows): creates, page reads, restart.
    Scale(bench::scale::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

impl Cli {
    /// The `log_format` of a command that reads the configuration; text otherwise, and
    /// when the configuration cannot be loaded (the command itself reports why).
    fn log_format(&self) -> LogFormat {
        let config = match &self.command {
            Command::AllInOne(a)
            | Command::Api(a)
            | Command::Scheduler(a)
            | Command::Volume(a)
            | Command::Backup(a) => &a.config,
            Command::Manage(Manage::Db(ManageDb::Sync(c) | ManageDb::Purge(PurgeArgs { config: c, .. }))) => {
                c
            }
            _ => return LogFormat::Text,
        };
        config.load().map_or(LogFormat::Text, |c| c.log_format)
    }
}

/// Logs to standard error, filtered by `EMBER_LOG` (default `info`): text, coloured only
/// on a terminal, or one JSON object per line with the current spans (a request's
/// `request_id`, a flow's `flow_id`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("EMBER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(false).with_span_list(true).init()
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::AllInOne(args) => {
            serve(args, &[Role::Volume, Role::Backup, Role::Scheduler, Role::Api]).await
        }
        Command::Api(args) => serve(args, &[Role::Api]).await,
        Command::Scheduler(args) => serve(args, &[Role::Scheduler]).await,
        Command::Volume(args) => serve(args, &[Role::Volume]).await,
        Command::Backup(args) => serve(args, &[Role::Backup]).await,
        Command::Manage(Manage::Db(ManageDb::Sync(args))) => {
            let config = args.load()?;
            let db = open_db(&config).await?;
            db.migrate().await.context("apply the migrations")?;
            println!("database {} is up to date", db.kind());
            Ok(())
        }
        Command::Manage(Manage::Db(ManageDb::Purge(args))) => purge(args).await,
        Command::Manage(Manage::Flows(command)) => manage_flows::run(command).await,
        Command::Manage(Manage::Backups(command)) => manage_backups::run(command).await,
        Command::Bench(BenchArgs { which: Bench::BackupStep(step), .. }) => bench::backup::step(step).await,
        Command::Bench(args) => {
            let (name, json) = match &args.which {
                Bench::Engine(_) => ("engine", args.json),
                Bench::Scheduler(_) => ("scheduler", args.json),
                Bench::Api(_) => ("api", args.json),
                Bench::Attach(_) => ("attach", args.json),
                Bench::Auth(_) => ("auth", args.json),
                Bench::Nbd(_) => ("nbd", args.json),
                Bench::Backup(_) => ("backup", args.json),
                Bench::BackupStep(_) => ("backup-step", args.json),
                Bench::Scale(_) => ("scale", args.json),
            };
            let mut report = bench::Report::new(name, json);
            match args.which {
                Bench::Engine(a) => bench::engine::run(a, &mut report).await?,
                Bench::Scheduler(a) => bench::scheduler::run(a, &mut report).await?,
                Bench::Api(a) => bench::api::run(a, &mut report).await?,
                Bench::Attach(a) => bench::attach::run(a, &mut report).await?,
                Bench::Auth(a) => bench::auth::run(a, &mut report).await?,
                Bench::Nbd(a) => bench::nbd::run(a, &mut report).await?,
                Bench::Backup(a) => bench::backup::run(a, &mut report).await?,
                Bench::BackupStep(a) => bench::backup::step(a).await?,
                Bench::Scale(a) => bench::scale::run(a, &mut report).await?,
            }
            report.finish();
            Ok(())
        }
    }
}

/// `ember manage db purge --age-in-days N`: finished flows whose subject is gone, then
/// soft-deleted rows, each older than N days; prints what went, per table.
async fn purge(args: PurgeArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let db = open_db(&config).await?;
    let before = chrono::Utc::now() - chrono::Duration::days(i64::from(args.age_in_days));
    let flows = ember_db::purge::purge_flows(&db, before).await.context("purge the flows")?;
    let rows = ember_db::purge::purge_deleted(&db, before).await.context("purge the deleted rows")?;
    println!("{:<20} {:>8}", "table", "purged");
    println!("{:<20} {:>8}", "flows", flows);
    for (table, n) in rows.tables {
        println!("{table:<20} {n:>8}");
    }
    db.close().await;
    Ok(())
}

/// Opens the configured database, creating `data_dir` first when the database is the
/// default SQLite file inside it.
async fn open_db(config: &Config) -> anyhow::Result<Db> {
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("create the data directory {}", config.data_dir.display()))?;
    }
    Db::connect(&DbOptions::new(config.database_url())).await.context("open the database")
}

/// Runs `roles` in this process until Ctrl-C or SIGTERM.
async fn serve(args: AllInOneArgs, roles: &[Role]) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let failpoints = ember_engine::failpoint::setup_from_env().map_err(anyhow::Error::msg)?;
    if failpoints > 0 {
        tracing::warn!(failpoints, "failpoints are armed (FAILPOINTS): this process is under a crash test");
    }
    let plumbing = Plumbing::open(config).await?;
    let started = process::run_roles(&plumbing, roles).await;
    if started.is_ok() {
        tracing::info!(
            ?roles,
            data_dir = %plumbing.config.data_dir.display(),
            database = plumbing.db.kind(),
            "ember is up; Ctrl-C stops it"
        );
        tokio::select! {
            result = shutdown_signal() => result?,
            _ = plumbing.shutdown.cancelled() => {}
        }
    }
    plumbing.close().await;
    started
}

/// Waits for Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("wait for Ctrl-C")?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}
