//! `ember bench scale`: Ember with the database of a cloud that has run for a year.
//!
//! For each database (SQLite always; PostgreSQL with `--database-url` or
//! `EMBER_TEST_DATABASE_URL`, in a database of its own, dropped at the end) it:
//!
//! 1. starts a real `ember all-in-one` on the empty database and times volume creates
//!    (create to available, one after the other, the median);
//! 2. stops it and fills the database with bulk `INSERT .. SELECT`s: `--volumes` volumes of
//!    one project and `--flows` finished flows (ten operations' names, their subjects the
//!    volumes, a year of creation times, 5% reverted, no owner: the store clears a finished
//!    flow's owner);
//! 3. starts the process again (time to healthy), times the same creates, and the p99 of
//!    reads: a page of the volume list and of its detail (first page and one from a marker
//!    deep in the list), one volume, and pages of the admin flow list with its filters;
//! 4. starts creates, kills the process with SIGKILL while their flows run, restarts it and
//!    times start to healthy and to every volume available: the restarted process takes back
//!    the flows its earlier life held (`reclaim_prefix`) over the full flows table.
//!
//! Targets (issue 16): a create within 1.5 times its cost on the empty database, pages under
//! 50 ms p99, start and take back under 2 s.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use sqlx::Connection as _;
use sqlx::Executor as _;

use ember_db::{Db, DbOptions, with_pool};

use super::api::{Client, PROJECT, percentile};
use super::{Figure, Report};

/// Options of `ember bench scale`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Volumes in the filled database (all in the benchmark's project).
    #[arg(long, default_value_t = 100_000)]
    volumes: u64,
    /// Finished flows in the filled database.
    #[arg(long, default_value_t = 1_000_000)]
    flows: u64,
    /// Volumes created one after the other on each database, for the create's cost.
    #[arg(long, default_value_t = 20)]
    creates: usize,
    /// Requests per read case (the p99 is over these).
    #[arg(long, default_value_t = 200)]
    reads: usize,
    /// Volumes whose create flows are in flight when the process is killed.
    #[arg(long, default_value_t = 10)]
    in_flight: usize,
    /// A PostgreSQL server (any database on it): the benchmark creates a database of its own
    /// there and drops it at the end. Defaults to `EMBER_TEST_DATABASE_URL`; without either,
    /// only SQLite is measured.
    #[arg(long)]
    database_url: Option<String>,
    /// Only SQLite, even when a PostgreSQL URL is known.
    #[arg(long)]
    sqlite_only: bool,
}

/// The names the filled flows take in turn.
const FLOW_NAMES: &[&str] = &[
    "volume_create_api",
    "volume_create_scheduler",
    "volume_create_manager",
    "volume_extend_api",
    "volume_extend_manager",
    "snapshot_create_api",
    "snapshot_create_manager",
    "attachment_update_api",
    "attachment_update_manager",
    "volume_delete_api",
];

/// One year, in milliseconds: the filled rows' creation times spread over it.
const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;

pub async fn run(args: Args, report: &mut Report) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("create a data directory")?;
    let sqlite = format!("sqlite://{}", dir.path().join("sqlite").join("ember.db").display());
    std::fs::create_dir_all(dir.path().join("sqlite"))?;
    run_on("sqlite", &sqlite, &dir.path().join("sqlite"), &args, report).await?;
    let pg = args.database_url.clone().or_else(|| std::env::var("EMBER_TEST_DATABASE_URL").ok());
    if let (Some(base), false) = (pg, args.sqlite_only) {
        let name = format!("ember_bench_scale_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&base).await.context("connect to PostgreSQL")?;
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        let url = ember_db::testing::replace_database(&base, &name);
        let data = dir.path().join("postgres");
        std::fs::create_dir_all(&data)?;
        let outcome = run_on("postgres", &url, &data, &args, report).await;
        admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await?;
        admin.close().await?;
        outcome?;
    }
    Ok(())
}

async fn run_on(
    kind: &'static str,
    url: &str,
    data: &Path,
    args: &Args,
    report: &mut Report,
) -> anyhow::Result<()> {
    let db = Db::connect(&DbOptions::new(url)).await.context("open the database")?;
    db.migrate().await.context("migrate the database")?;
    let on = |f: Figure| f.with("db", kind);

    // 1. The empty database.
    let server = Server::start(url, data).await?;
    let client = server.client();
    raise_quotas(&client).await?;
    let empty = creates(&client, args.creates).await?;
    report.push(
        on(Figure::new("create to available, empty database (median)", empty, "ms"))
            .with("samples", args.creates),
    );
    drop(server);

    // 2. A year of use.
    let started = Instant::now();
    fill(&db, args.volumes, args.flows).await?;
    report.push(
        on(Figure::new("fill the database", started.elapsed().as_secs_f64(), "s"))
            .with("volumes", args.volumes)
            .with("flows", args.flows),
    );
    db.close().await;

    // 3. The same operations on it.
    let spawned = Instant::now();
    let server = Server::start(url, data).await?;
    report.push(on(Figure::new("start to healthy, filled database", ms(spawned.elapsed()), "ms")));
    let client = server.client();
    let full = creates(&client, args.creates).await?;
    report.push(
        on(Figure::new("create to available, filled database (median)", full, "ms"))
            .with("samples", args.creates)
            .with("ratio", super::round(full / empty))
            .with("target_ratio", 1.5),
    );
    for (case, path) in read_cases(&client).await? {
        let p99 = p99_of(&client, &path, args.reads).await?;
        report.push(on(Figure::new(case, p99, "ms")).with("requests", args.reads).with("target_ms", 50));
    }

    // 4. Killed with flows in flight, started again.
    let mut server = server;
    let mut ids = Vec::new();
    for i in 0..args.in_flight {
        let body = json!({ "volume": { "size": 1, "name": format!("inflight-{i}") } });
        let (status, answer) = client.send(reqwest::Method::POST, "/volumes", Some(body)).await?;
        if status != 202 {
            bail!("create answered {status}: {answer}");
        }
        ids.push(answer["volume"]["id"].as_str().context("the new volume's id")?.to_owned());
    }
    server.kill();
    let spawned = Instant::now();
    let server = Server::start(url, data).await?;
    let healthy = spawned.elapsed();
    let client = server.client();
    let mut unfinished = 0;
    for id in &ids {
        let (_, shown) = client.send(reqwest::Method::GET, &format!("/volumes/{id}"), None).await?;
        unfinished += usize::from(shown["volume"]["status"] != "available");
    }
    for id in &ids {
        wait_available(&client, id).await?;
    }
    let taken_back = spawned.elapsed();
    report.push(on(Figure::new("restart after kill -9: start to healthy", ms(healthy), "ms")));
    report.push(
        on(Figure::new("restart after kill -9: start to its flows finished", ms(taken_back), "ms"))
            .with("volumes_in_flight", args.in_flight)
            .with("unfinished_at_healthy", unfinished)
            .with("target_ms", 2000),
    );
    drop(server);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn raise_quotas(client: &Client) -> anyhow::Result<()> {
    let quota = json!({ "quota_set": { "volumes": -1, "gigabytes": -1 } });
    let (status, body) =
        client.send(reqwest::Method::PUT, &format!("/os-quota-sets/{PROJECT}"), Some(quota)).await?;
    if status != 200 {
        bail!("raising the quotas answered {status}: {body}");
    }
    Ok(())
}

/// The median create-to-available of `n` volumes created one after the other.
async fn creates(client: &Client, n: usize) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n.max(1) {
        times.push(client.create_and_wait(i, Duration::from_millis(1)).await?);
    }
    times.sort();
    Ok(percentile(&times, 50.0))
}

async fn wait_available(client: &Client, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, shown) = client.send(reqwest::Method::GET, &format!("/volumes/{id}"), None).await?;
        match shown["volume"]["status"].as_str() {
            Some("available") => return Ok(()),
            Some(s) if s.starts_with("error") => bail!("volume {id} went to {s}"),
            _ if Instant::now() > deadline => bail!("volume {id} was not available in 120 s"),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// The read cases: a name and a path under the project.
async fn read_cases(client: &Client) -> anyhow::Result<Vec<(&'static str, String)>> {
    // A marker deep in the list: the 500th page's last volume, found by the filled ids.
    let deep = volume_id(50_000);
    let (status, body) = client.send(reqwest::Method::GET, &format!("/volumes/{deep}"), None).await?;
    if status != 200 {
        bail!("the filled volume {deep} is not readable ({status}): {body}");
    }
    let subject = volume_id(12_345);
    Ok(vec![
        ("volume list, first page of 100 p99", "/volumes?limit=100".to_owned()),
        ("volume list detail, first page of 100 p99", "/volumes/detail?limit=100".to_owned()),
        (
            "volume list detail, page of 100 after a deep marker p99",
            format!("/volumes/detail?limit=100&marker={deep}"),
        ),
        ("volume show p99", format!("/volumes/{deep}")),
        ("flow list, first page of 100 p99", "/flows?limit=100".to_owned()),
        (
            "flow list by state and name, page of 100 p99",
            "/flows?state=REVERTED&name=volume_extend_manager&limit=100".to_owned(),
        ),
        ("flow list by resource id p99", format!("/flows?subject={subject}")),
        ("flow list by owner, page of 100 p99", "/flows?owner=scale-host:volume:3&limit=100".to_owned()),
        ("flow list by name, page of 100 p99", "/flows?name=volume_create_manager&limit=100".to_owned()),
        (
            "flow list by creation time, page of 100 p99",
            format!("/flows?created_before={}&limit=100", now_ms() - YEAR_MS / 2),
        ),
    ])
}

async fn p99_of(client: &Client, path: &str, n: usize) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let started = Instant::now();
        let (status, body) = client.send(reqwest::Method::GET, path, None).await?;
        times.push(started.elapsed());
        if status != 200 {
            bail!("GET {path} answered {status}: {body}");
        }
    }
    times.sort();
    Ok(percentile(&times, 99.0))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The id of the `i`th filled volume: a UUID's shape, recognisable.
fn volume_id(i: u64) -> String {
    format!("5ca1e000-0000-4000-8000-{i:012}")
}

/// Fills the database: volumes, then flows, each one `INSERT .. SELECT` over a generated
/// series (a recursive CTE on SQLite, `generate_series` on PostgreSQL), in batches.
async fn fill(db: &Db, volumes: u64, flows: u64) -> anyhow::Result<()> {
    let now = now_ms();
    let (series, vol_id) = match db {
        Db::Sqlite(_) => (
            "WITH RECURSIVE s(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < $2)",
            "printf('5ca1e000-0000-4000-8000-%012d', {})",
        ),
        Db::Postgres(_) => (
            "WITH s(i) AS (SELECT generate_series($1::bigint, $2::bigint - 1))",
            "'5ca1e000-0000-4000-8000-' || lpad(({})::text, 12, '0')",
        ),
    };
    let volume_sql = format!(
        "{series} INSERT INTO volumes (id, project_id, user_id, name, size, status, attach_status, \
         availability_zone, host, volume_type_id, created_at, updated_at, launched_at) \
         SELECT {}, '{PROJECT}', 'scale', 'scale-' || i, 1, 'available', 'detached', 'nova', \
         'scale-host@file#file', '{}', $3 + i * $4, $3 + i * $4, $3 + i * $4 FROM s",
        vol_id.replace("{}", "i"),
        ember_common::model::DEFAULT_VOLUME_TYPE_ID,
    );
    let names: Vec<String> = FLOW_NAMES.iter().map(|n| format!("'{n}'")).collect();
    let k = FLOW_NAMES.len();
    let flow_sql = format!(
        "{series} INSERT INTO flows (id, name, inputs, state, owner, lease_expires_at, claim_epoch, \
         topic, subject, created_at, updated_at) \
         SELECT 'scale-flow-' || i, (CASE i % {k} {}), '{{}}', \
         CASE WHEN (i / {k}) % 20 = 7 THEN 'REVERTED' ELSE 'SUCCESS' END, \
         NULL, NULL, 1, CASE i % 3 WHEN 0 THEN 'api' WHEN 1 THEN 'scheduler' ELSE 'volume.scale-host@file' END, \
         {}, $3 + i * $4, $3 + i * $4 + 40 FROM s",
        names.iter().enumerate().map(|(j, n)| format!("WHEN {j} THEN {n}")).collect::<Vec<_>>().join(" ")
            + " END",
        vol_id.replace("{}", &format!("(i / {k}) % {}", volumes.max(1))),
    );
    batches(db, &volume_sql, volumes, now - YEAR_MS, YEAR_MS / volumes.max(1) as i64).await?;
    batches(db, &flow_sql, flows, now - YEAR_MS, YEAR_MS / flows.max(1) as i64).await?;
    with_pool!(db, |pool| sqlx::query("ANALYZE").execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// Runs `sql` over `[0, n)` in batches of 50,000, each its own statement (bounded memory
/// on both databases, and SQLite's recursion stays short).
async fn batches(db: &Db, sql: &str, n: u64, start: i64, step: i64) -> anyhow::Result<()> {
    const BATCH: u64 = 50_000;
    let mut from = 0;
    while from < n {
        let to = (from + BATCH).min(n);
        with_pool!(db, |pool| sqlx::query(sql)
            .bind(from as i64)
            .bind(to as i64)
            .bind(start)
            .bind(step)
            .execute(pool)
            .await
            .map(|_| ()))
        .with_context(|| format!("insert rows {from}..{to}"))?;
        from = to;
    }
    Ok(())
}

/// An `ember all-in-one` on the given database; killed when dropped.
struct Server {
    child: Option<Child>,
    base: String,
}

impl Server {
    async fn start(url: &str, data: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(std::env::current_exe().context("find the ember binary")?)
            .args(["all-in-one", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .env("EMBER_DATABASE_URL", url)
            .env("EMBER_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("start ember all-in-one")?;
        let server = Self { child: Some(child), base: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http
            .get(format!("{}/healthcheck", server.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                bail!("ember all-in-one did not become healthy in 60 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(server)
    }

    fn client(&self) -> Client {
        Client { http: reqwest::Client::new(), base: self.base.clone() }
    }

    /// SIGKILL: nothing is flushed or released, as in a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
