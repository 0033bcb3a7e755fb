//! `ember bench engine`: the flow engine's cost per task, in memory and persisted to a
//! SQLite file next to the measured cost of one SQLite commit on the same file (the floor:
//! a linear flow needs about one commit per task), and Cinder-like five-task flows one and
//! sixteen at a time on SQLite and, where `EMBER_TEST_DATABASE_URL` names a server, on
//! PostgreSQL. Taskflow 6.5 figures are shown only as an older reading taken elsewhere
//! (shared/reference/taskflow-digest.md §7), never as measured here.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ember_db::flow_store::SqlFlowStore;
use ember_db::testing::{DATABASE_URL_ENV, TestDb};
use ember_db::{Db, DbOptions, with_pool};
use ember_engine::{
    CompiledFlow, Context, Engine, EngineOptions, Failure, Flow, FlowStore, Key, MemoryStore, Task, Values,
    async_trait,
};

use super::{Figure, Report};

/// Options of `ember bench engine`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many Cinder-like flows to run per concurrency level.
    #[arg(long, default_value_t = 1000)]
    cinder_flows: usize,
    /// Where the SQLite files go (a fresh temporary directory by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Turns of the commit and the persisted flows per linear size.
const ROUNDS: usize = 3;

/// A persisted task may cost at most this many SQLite commits measured in the same run.
const COMMIT_RATIO_TARGET: f64 = 2.0;

struct Noop(String);

#[async_trait]
impl Task for Noop {
    fn name(&self) -> &str {
        &self.0
    }
    async fn execute(&self, _ctx: &Context) -> Result<Values, Failure> {
        Ok(Values::new())
    }
}

fn linear(n: usize) -> Flow {
    let mut f = Flow::linear("linear");
    for i in 0..n {
        f.push(Noop(format!("t{i}")));
    }
    f
}

fn fan_out() -> Flow {
    let mut middle = Flow::unordered("middle");
    for i in 0..98 {
        middle.push(Noop(format!("m{i}")));
    }
    Flow::linear("fanout").add(Noop("source".into())).add(middle).add(Noop("sink".into()))
}

/// Runs `runs` flows built by `build` one after another; returns microseconds per task.
async fn per_task(
    engine: &Engine,
    runs: usize,
    tasks: usize,
    build: impl Fn() -> Flow,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..runs {
        // As in taskflow's figures, a run includes building and compiling the flow.
        let flow = build().compile()?;
        engine.run(&flow, Values::new()).await?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / (runs * tasks) as f64)
}

/// A per-task figure, with taskflow's figure named for what it is: an older reading of
/// taskflow 6.5 on another run, not measured by this benchmark.
fn figure(case: String, us: f64, taskflow_us: f64) -> Figure {
    Figure::new(case, us, "us/task").with("taskflow_older_reading_us", taskflow_us)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The cost of one commit on the SQLite file at `path`, measured with no engine and no
/// hand-off: a loop of `BEGIN; UPDATE one row; COMMIT` on a connection of its own with the
/// same `synchronous` setting as the store's (read from its pool), on a blocking thread.
/// Microseconds.
async fn commit_cost(path: PathBuf, synchronous: i64, commits: usize) -> anyhow::Result<f64> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS bench_commit (id INTEGER PRIMARY KEY, v BIGINT NOT NULL); \
             INSERT OR IGNORE INTO bench_commit (id, v) VALUES (1, 0);",
        )?;
        let mut begin = conn.prepare("BEGIN")?;
        let mut update = conn.prepare("UPDATE bench_commit SET v = v + 1 WHERE id = 1")?;
        let mut commit = conn.prepare("COMMIT")?;
        let start = Instant::now();
        for _ in 0..commits {
            begin.execute([])?;
            update.execute([])?;
            commit.execute([])?;
        }
        Ok(start.elapsed().as_secs_f64() * 1e6 / commits as f64)
    })
    .await?
}

async fn sqlite_store(dir: &std::path::Path, name: &str) -> anyhow::Result<(Db, Arc<SqlFlowStore>)> {
    let url = format!("sqlite://{}", dir.join(name).display());
    let db = Db::connect(&DbOptions::new(&url)).await.context("open the bench database")?;
    db.migrate().await.context("migrate the bench database")?;
    Ok((db.clone(), Arc::new(SqlFlowStore::new(db))))
}

pub async fn run(args: Args, report: &mut Report) -> anyhow::Result<()> {
    let tmp = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ember-bench-{}", std::process::id())));
    std::fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let result = run_all(&args, &tmp, report).await;
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

async fn run_all(args: &Args, dir: &std::path::Path, report: &mut Report) -> anyhow::Result<()> {
    let memory = Engine::new(Arc::new(MemoryStore::new()));
    per_task(&memory, 200, 10, || linear(10)).await?; // warm-up
    let mut mem10 = 0.0;
    for (n, runs, taskflow) in [(10, 5000, 1394.0), (100, 500, 2670.0), (1000, 50, 16244.0)] {
        let us = per_task(&memory, runs, n, || linear(n)).await?;
        if n == 10 {
            mem10 = us;
        }
        let mut f = figure(format!("linear {n}, memory"), us, taskflow).with("runs", runs);
        if n == 1000 {
            f = f.with("vs_linear_10", (us / mem10 * 100.0).round() / 100.0).with("linear_target", 1.5);
        }
        report.push(f);
    }
    let (db, store) = sqlite_store(dir, "linear.db").await?;
    let sqlite = Engine::new(store);
    per_task(&sqlite, 50, 10, || linear(10)).await?; // warm-up: statements prepared, file grown
    let synchronous: i64 =
        with_pool!(&db, |pool| sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await)?;
    commit_cost(dir.join("linear.db"), synchronous, 500).await?; // warm-up
    for (n, runs, taskflow) in [(10, 300_usize, 47369.0), (100, 30, 45128.0), (1000, 3, 74440.0)] {
        // The machine is shared: the commit and the flows are measured in turns, and the
        // figures are the fastest turn of each, which both saw the same machine.
        let (mut commit, mut us) = (f64::MAX, f64::MAX);
        for _ in 0..ROUNDS {
            commit = commit.min(commit_cost(dir.join("linear.db"), synchronous, 300).await?);
            us = us.min(per_task(&sqlite, runs.div_ceil(ROUNDS), n, || linear(n)).await?);
        }
        report.push(
            figure(format!("linear {n}, sqlite file"), us, taskflow)
                .with("runs", runs.div_ceil(ROUNDS) * ROUNDS)
                .with("commit_us", round2(commit))
                .with("per_commit", round2(us / commit))
                .with("per_commit_target", COMMIT_RATIO_TARGET),
        );
    }
    db.close().await;
    let opts = EngineOptions { max_concurrency: 8, ..EngineOptions::default() };
    let fan = Engine::with_options(Arc::new(MemoryStore::new()), opts);
    let us = per_task(&fan, 300, 100, fan_out).await?;
    report.push(figure("fan-out 1+98+1, memory, 8 at a time".into(), us, 1622.0).with("runs", 300));
    for concurrency in [1, 16] {
        let (db, _) = sqlite_store(dir, &format!("cinder-{concurrency}.db")).await?;
        cinder(&db, args.cinder_flows, concurrency, report).await?;
        db.close().await;
    }
    match TestDb::postgres().await.context("create a PostgreSQL database for the bench")? {
        Some(pg) => {
            for concurrency in [1, 16] {
                cinder(&pg.db, args.cinder_flows, concurrency, report).await?;
            }
            pg.cleanup().await?;
        }
        None => eprintln!("  (PostgreSQL cases skipped: set {DATABASE_URL_ENV} to a server's url)"),
    }
    eprintln!(
        "  (taskflow_older_reading_*: taskflow 6.5, an older reading taken elsewhere, not measured here)"
    );
    Ok(())
}

const SIZE: Key<u64> = Key::new("size");
const RESERVATION: Key<u64> = Key::new("reservation");
const VOLUME_ID: Key<String> = Key::new("volume_id");

/// The five steps of Cinder's api create flow, with the entry INSERT as the one real write.
struct Step {
    name: &'static str,
    db: Option<Db>,
}

#[async_trait]
impl Task for Step {
    fn name(&self) -> &str {
        self.name
    }
    fn requires(&self) -> &[&'static str] {
        const RESERVE: &[&str] = &[SIZE.name()];
        const ENTRY: &[&str] = &[SIZE.name(), RESERVATION.name()];
        const REST: &[&str] = &[VOLUME_ID.name()];
        match self.name {
            "extract" => &[],
            "reserve" => RESERVE,
            "entry_create" => ENTRY,
            _ => REST,
        }
    }
    fn provides(&self) -> &[&'static str] {
        const EXTRACT: &[&str] = &[SIZE.name()];
        const RESERVE: &[&str] = &[RESERVATION.name()];
        const ENTRY: &[&str] = &[VOLUME_ID.name()];
        match self.name {
            "extract" => EXTRACT,
            "reserve" => RESERVE,
            "entry_create" => ENTRY,
            _ => &[],
        }
    }
    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        match self.name {
            "extract" => Ok(Values::new().with(&SIZE, 10)),
            "reserve" => Ok(Values::new().with(&RESERVATION, ctx.get(&SIZE)? * 1024)),
            "entry_create" => {
                let id = ctx.flow_id().to_owned();
                let size = ctx.get(&SIZE)? as i64;
                // The flow id makes the INSERT idempotent when the task is re-executed.
                let sql = "INSERT INTO bench_volumes (id, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING";
                let Some(db) = &self.db else { return Err(Failure::new("NoDb", "no database")) };
                let now = ember_engine::store::now_ms();
                with_pool!(db, |pool| sqlx::query(sql)
                    .bind(&id)
                    .bind(size)
                    .bind(now)
                    .execute(pool)
                    .await
                    .map(|_| ()))
                .map_err(|e| Failure::new("Db", e.to_string()))?;
                Ok(Values::new().with(&VOLUME_ID, id))
            }
            _ => {
                ctx.get(&VOLUME_ID)?;
                Ok(Values::new())
            }
        }
    }
}

fn cinder_flow(db: &Db) -> anyhow::Result<CompiledFlow> {
    let mut f = Flow::linear("create_volume");
    for name in ["extract", "reserve", "entry_create", "commit", "cast"] {
        f.push(Step { name, db: (name == "entry_create").then(|| db.clone()) });
    }
    Ok(f.compile()?)
}

/// `flows` Cinder-like flows on `db`, `concurrency` at a time, on one engine and store.
async fn cinder(db: &Db, flows: usize, concurrency: usize, report: &mut Report) -> anyhow::Result<()> {
    const TABLE: &str = "CREATE TABLE IF NOT EXISTS bench_volumes (id TEXT PRIMARY KEY, size BIGINT NOT NULL, created_at BIGINT NOT NULL)";
    with_pool!(db, |pool| sqlx::query(TABLE).execute(pool).await.map(|_| ()))?;
    with_pool!(db, |pool| sqlx::query("DELETE FROM bench_volumes").execute(pool).await.map(|_| ()))?;
    let store = Arc::new(SqlFlowStore::new(db.clone()));
    let engine = Engine::new(store.clone() as Arc<dyn FlowStore>);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (engine, db, next) = (engine.clone(), db.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < flows {
                let t = Instant::now();
                // Like Cinder, every request builds its flow.
                let flow = cinder_flow(&db)?;
                engine.run(&flow, Values::new()).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(flows);
    for w in workers {
        latencies.extend(w.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    let rows: i64 = with_pool!(db, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM bench_volumes")
        .fetch_one(pool)
        .await)?;
    anyhow::ensure!(rows as usize == flows, "expected {flows} volume rows, found {rows}");
    latencies.sort();
    let p = |q: f64| {
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3
    };
    let taskflow = if concurrency == 1 { 1.97 } else { 2.06 };
    let mut figure = Figure::new(
        format!("cinder-like 5 tasks, {}, {concurrency} at a time", db.kind()),
        flows as f64 / secs,
        "flows/s",
    );
    if concurrency == 16 && db.kind() == "sqlite" {
        figure = figure.with("target_flows_s", 5000);
    }
    report.push(
        figure
            .with("us_per_task", (secs * 1e6 / (flows * 5) as f64 * 10.0).round() / 10.0)
            .with("p50_ms", (p(0.5) * 100.0).round() / 100.0)
            .with("p99_ms", (p(0.99) * 100.0).round() / 100.0)
            .with("flows", flows)
            .with("taskflow_older_reading_flows_s", taskflow),
    );
    Ok(())
}
