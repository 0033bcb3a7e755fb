//! `ember manage backups list|show|verify`: the backups of the configured database with
//! their status, size and the progress of a running backup or restore (read from the
//! running atom of its flow), and `verify <id>`, which re-reads every chunk of one backup in
//! the configured POSIX store and checks its SHA-256 (no running service needed).
//!
//! The store is the one the backup service writes: the configuration's `[backup]` section
//! (`backup_posix_path`, default `<data_dir>/backups`; `backup_chunk_size`...), read from
//! the `--config` file and `EMBER_*` variables as every command does;
//! `--backup-posix-path` overrides the path.

use std::path::PathBuf;

use anyhow::Context as _;
use ember_common::config::{Config, Overrides};
use ember_common::model::{Backup, BackupFilter, BackupStatus, ListOptions};
use ember_common::repo::BackupRepo as _;
use ember_db::SqlRepo;
use ember_db::flow_store::SqlFlowStore;
use ember_drivers::backup::BackupDriver as _;
use ember_drivers::{PosixBackupDriver, PosixBackupOptions};
use ember_engine::{FlowFilter, FlowStore as _, Progress};

use crate::manage_flows::progress_cell;
use crate::{ConfigArgs, open_db};

/// The backup commands.
#[derive(Debug, clap::Subcommand)]
pub enum Backups {
    /// Lists backups (every project's), newest first, with status, size and progress.
    List(ListArgs),
    /// Shows one backup, with the progress of its running backup or restore.
    Show(ShowArgs),
    /// Re-reads every chunk of a backup and checks its hash; exits non-zero on damage.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only backups in this status (creating, available, restoring, error...).
    #[arg(long)]
    status: Option<String>,
    /// Only backups of this volume.
    #[arg(long)]
    volume_id: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The backup's id.
    id: String,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The backup's id.
    id: String,
    /// A TOML configuration file (see etc/ember.toml).
    #[arg(long, env = "EMBER_CONFIG")]
    config: Option<PathBuf>,
    /// The store's directory, over `backup_posix_path` from the configuration.
    #[arg(long)]
    backup_posix_path: Option<PathBuf>,
}

pub async fn run(command: Backups) -> anyhow::Result<()> {
    match command {
        Backups::List(args) => list(args).await,
        Backups::Show(args) => show(args).await,
        Backups::Verify(args) => verify(args).await,
    }
}

/// The flows of the backup service that report progress, by name, with the work each does.
const PROGRESS_FLOWS: [(&str, &str); 2] = [
    (ember_flows::backup::create_backup::FLOW, "backup"),
    (ember_flows::backup::restore_backup::FLOW, "restore"),
];

/// The configured database's repositories and flow store (only read).
async fn open(config: &ConfigArgs) -> anyhow::Result<(SqlRepo, SqlFlowStore)> {
    let config = config.load()?;
    let db = open_db(&config).await?;
    Ok((SqlRepo::new(db.clone(), config.quota_defaults()), SqlFlowStore::new(db)))
}

/// What the newest backup or restore flow of backup `b` did last: its work (`backup`,
/// `restore`), its flow's id and state, and the progress its running task recorded.
async fn progress_of(
    store: &SqlFlowStore,
    b: &Backup,
) -> anyhow::Result<Option<(&'static str, String, String, Option<Progress>)>> {
    let filter = FlowFilter { subject: Some(b.id.clone()), limit: Some(20), ..FlowFilter::default() };
    let flows = store.list_flows(&filter).await?;
    let Some((flow, what)) = flows
        .iter()
        .find_map(|f| PROGRESS_FLOWS.iter().find(|(name, _)| *name == f.name).map(|(_, what)| (f, *what)))
    else {
        return Ok(None);
    };
    let progress =
        store.get_flow(&flow.id).await?.and_then(|d| d.atoms.iter().filter_map(|a| a.progress).next_back());
    Ok(Some((what, flow.id.clone(), flow.state.to_string(), progress)))
}

/// A progress cell: `backup 1048576/4194304 (25%)`, or `-`.
fn progress_text(p: Option<&(&'static str, String, String, Option<Progress>)>) -> String {
    match p {
        Some((what, _, _, Some(progress))) => format!("{what} {}", progress_cell(*progress)),
        _ => "-".to_owned(),
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let status = match &args.status {
        Some(s) => Some(s.parse::<BackupStatus>().map_err(anyhow::Error::msg)?),
        None => None,
    };
    let (repo, store) = open(&args.config).await?;
    let filter = BackupFilter { status, volume_id: args.volume_id.clone(), ..BackupFilter::default() };
    let options = ListOptions { limit: Some(args.limit), ..ListOptions::default() };
    let backups = repo.list_backups(&filter, &options).await?;
    let mut rows = Vec::new();
    for b in &backups {
        let progress = progress_of(&store, b).await?;
        rows.push(vec![
            b.id.clone(),
            b.name.clone().unwrap_or_else(|| "-".to_owned()),
            b.status.to_string(),
            format!("{} GiB", b.size),
            b.object_count.to_string(),
            b.volume_id.clone(),
            b.parent_id.as_ref().map_or("full", |_| "incremental").to_owned(),
            progress_text(progress.as_ref()),
            b.created_at.format("%F %T").to_string(),
        ]);
    }
    let headers = ["ID", "NAME", "STATUS", "SIZE", "OBJECTS", "VOLUME", "KIND", "PROGRESS", "CREATED"];
    print!("{}", crate::manage_flows::table(&headers, rows));
    Ok(())
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let (repo, store) = open(&args.config).await?;
    let b = repo.get_backup(&args.id).await.with_context(|| format!("backup {}", args.id))?;
    let progress = progress_of(&store, &b).await?;
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let mut fields = vec![
        ("id", b.id.clone()),
        ("name", or_dash(&b.name)),
        ("status", b.status.to_string()),
        ("fail_reason", or_dash(&b.fail_reason)),
        ("volume_id", b.volume_id.clone()),
        ("snapshot_id", or_dash(&b.snapshot_id)),
        ("size", format!("{} GiB", b.size)),
        ("object_count", b.object_count.to_string()),
        ("parent_id", or_dash(&b.parent_id)),
        ("host", or_dash(&b.host)),
        ("service", or_dash(&b.service)),
        ("container", or_dash(&b.container)),
        ("created_at", b.created_at.format("%F %T").to_string()),
    ];
    if let Some((what, flow_id, state, _)) = &progress {
        fields.push(("flow", format!("{flow_id} ({what}, {state})")));
    }
    fields.push(("progress", progress_text(progress.as_ref())));
    for (key, value) in fields {
        println!("{key:<14} {value}");
    }
    Ok(())
}

/// The store's options from the configuration's `[backup]` section.
fn options(args: &VerifyArgs) -> anyhow::Result<PosixBackupOptions> {
    let config = Config::load(args.config.as_deref(), &Overrides::default())?;
    let mut options = ember_backup::posix_options(&config);
    if let Some(path) = &args.backup_posix_path {
        options.backup_posix_path = path.clone();
    }
    Ok(options)
}

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let options = options(&args)?;
    let path = options.backup_posix_path.clone();
    let driver = PosixBackupDriver::new(options)?;
    let report = driver
        .verify(&args.id)
        .await
        .with_context(|| format!("verify backup {} in the store at {}", args.id, path.display()))?;
    println!("backup {} in {}", args.id, path.display());
    println!("{:<16} {:>8}", "chunks checked", report.chunks_checked);
    println!("{:<16} {:>8}", "bad chunks", report.bad_chunks.len());
    for chunk in &report.bad_chunks {
        println!("  bad: {chunk}");
    }
    if !report.bad_chunks.is_empty() {
        anyhow::bail!("backup {} is damaged: {} bad chunk(s)", args.id, report.bad_chunks.len());
    }
    Ok(())
}
