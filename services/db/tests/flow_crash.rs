//! Crash and takeover: a persisted flow survives SIGKILL inside any of its tasks, and a
//! worker takes over a flow whose owner died.
//!
//! The crash test re-executes this test binary as the child process (`--exact
//! crash_child`), with `EMBER_CRASH_CHILD` telling it to act as the child.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_db::flow_store::SqlFlowStore;
use ember_db::testing::TestDb;
use ember_db::{Db, DbOptions};
use ember_engine::{
    AtomState, Context, EngineOptions, Failure, Flow, FlowSpec, FlowState, FlowStore, Key, Registry,
    RevertContext, Task, Values, Worker, WorkerOptions, async_trait,
};
use tokio_util::sync::CancellationToken;

const DIR: Key<String> = Key::new("dir");
/// "execute": the child dies inside task k's execute; "revert": t10 fails and the child
/// dies inside task k's revert.
const MODE: Key<String> = Key::new("mode");
const TASKS: usize = 10;
const CHILD_ENV: &str = "EMBER_CRASH_CHILD";
const TOPIC: &str = "crash";

/// Appends a line to `<dir>/<name>.count` on every execute (`.revert` on every revert);
/// blocks forever inside task `block` after writing `<dir>/inside`, when this process is
/// the crash child.
struct Counted {
    name: String,
    index: usize,
    block: Option<usize>,
    in_revert: bool,
}

async fn count(dir: &Path, file: &str, attempt: u32) -> Result<(), Failure> {
    let path = dir.join(file);
    let mut old = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    old.push_str(&format!("attempt {attempt}\n"));
    tokio::fs::write(&path, old).await?;
    Ok(())
}

async fn block_here(dir: &Path, name: &str) -> Result<(), Failure> {
    tokio::fs::write(dir.join("inside"), name.as_bytes()).await?;
    std::future::pending::<()>().await;
    Ok(())
}

#[async_trait]
impl Task for Counted {
    fn name(&self) -> &str {
        &self.name
    }
    fn requires(&self) -> &[&'static str] {
        const R: &[&str] = &[DIR.name()];
        R
    }
    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let dir = PathBuf::from(ctx.get(&DIR)?);
        count(&dir, &format!("{}.count", self.name), ctx.attempt()).await?;
        if self.in_revert && self.index == TASKS {
            return Err(Failure::new("Planned", "the last task fails so that the flow reverts"));
        }
        if !self.in_revert && self.block == Some(self.index) {
            block_here(&dir, &self.name).await?;
        }
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let dir = PathBuf::from(ctx.get(&DIR)?);
        count(&dir, &format!("{}.revert", self.name), ctx.attempt()).await?;
        if self.in_revert && self.block == Some(self.index) {
            block_here(&dir, &self.name).await?;
        }
        Ok(())
    }
}

fn registry(block: Option<usize>) -> Registry {
    let mut r = Registry::new();
    r.register("ten", move |inputs: &Values| {
        let in_revert = inputs.get(&MODE).ok().flatten().as_deref() == Some("revert");
        let mut f = Flow::linear("ten");
        for i in 1..=TASKS {
            f.push(Counted { name: format!("t{i}"), index: i, block, in_revert });
        }
        Ok(f)
    });
    r
}

fn worker(store: Arc<dyn FlowStore>, owner: &str, block: Option<usize>, lease_ms: u64) -> Worker {
    let opts = WorkerOptions {
        engine: EngineOptions {
            owner: owner.to_owned(),
            lease: Duration::from_millis(lease_ms),
            ..EngineOptions::default()
        },
        topics: vec![TOPIC.to_owned()],
        sweep_interval: Duration::from_millis(50),
        max_flows: 4,
        ..WorkerOptions::default()
    };
    Worker::new(store, registry(block), opts)
}

fn counts(dir: &Path) -> Vec<usize> {
    calls(dir, "count")
}

fn calls(dir: &Path, ext: &str) -> Vec<usize> {
    (1..=TASKS)
        .map(|i| std::fs::read_to_string(dir.join(format!("t{i}.{ext}"))).map_or(0, |s| s.lines().count()))
        .collect()
}

async fn wait_for_state(store: &dyn FlowStore, id: &str, want: FlowState, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let state = store.get_flow(id).await.unwrap().map(|d| d.flow.state);
        if state == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "flow {id} is {state:?}, not {want} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The child: submits the flow and runs a worker until it is killed inside task k.
#[tokio::test]
async fn crash_child() {
    let (Ok(k), Ok(dir), Ok(url)) =
        (std::env::var(CHILD_ENV), std::env::var("EMBER_CRASH_DIR"), std::env::var("EMBER_CRASH_URL"))
    else {
        // Run directly, this is the entry point of the crash test's child and does nothing.
        return;
    };
    let k: usize = k.parse().unwrap();
    let mode = std::env::var("EMBER_CRASH_MODE").unwrap_or_else(|_| "execute".into());
    let db = Db::connect(&DbOptions::new(&url)).await.unwrap();
    let store: Arc<dyn FlowStore> = Arc::new(SqlFlowStore::new(db));
    let w = worker(store.clone(), "child", Some(k), 300);
    let spec = FlowSpec {
        id: Some("crash-flow".into()),
        topic: Some(TOPIC.into()),
        inputs: Values::new().with(&DIR, dir).with(&MODE, mode),
        ..Default::default()
    };
    w.engine().submit("ten", spec).await.unwrap();
    w.handle().wake();
    w.run(CancellationToken::new()).await.unwrap();
    panic!("the crash child must be killed inside task {k}");
}

/// Runs the child until it is inside task k (in `mode`), kills it with SIGKILL, checks
/// the stored state, resumes the flow with a worker of this process and waits for `end`.
async fn crash_and_resume(
    k: usize,
    mode: &str,
    end: FlowState,
) -> (tempfile::TempDir, Arc<dyn FlowStore>, TestDb) {
    let tdb = TestDb::sqlite().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, k.to_string())
        .env("EMBER_CRASH_MODE", mode)
        .env("EMBER_CRASH_DIR", dir.path())
        .env("EMBER_CRASH_URL", &tdb.url)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.path().join("inside").exists() {
        assert!(Instant::now() < deadline, "the child never reached task {k}");
        assert!(child.try_wait().unwrap().is_none(), "the child exited before task {k}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let store: Arc<dyn FlowStore> = Arc::new(SqlFlowStore::new(tdb.db.clone()));
    let stored = store.get_flow("crash-flow").await.unwrap().unwrap();
    let caught = if mode == "execute" { AtomState::Running } else { AtomState::Reverting };
    let busy: Vec<_> = stored.atoms.iter().filter(|a| a.state == caught).map(|a| a.name.clone()).collect();
    assert_eq!(busy, [format!("t{k}")], "k={k}: exactly the killed task is {caught}");

    let shutdown = CancellationToken::new();
    let w = worker(store.clone(), "resumer", None, 300);
    let task = tokio::spawn(w.run(shutdown.clone()));
    wait_for_state(&*store, "crash-flow", end, Duration::from_secs(30)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    (dir, store, tdb)
}

#[tokio::test]
async fn sigkill_inside_any_task_resumes_with_each_finished_task_run_once() {
    for k in 1..=TASKS {
        let (dir, store, tdb) = crash_and_resume(k, "execute", FlowState::Success).await;
        let c = counts(dir.path());
        for (i, n) in c.iter().enumerate() {
            let want = if i + 1 == k { 2 } else { 1 };
            assert_eq!(*n, want, "k={k}: task t{} ran {n} times; all counts {c:?}", i + 1);
        }
        let detail = store.get_flow("crash-flow").await.unwrap().unwrap();
        let attempts = detail.atoms.iter().find(|a| a.name == format!("t{k}")).unwrap().attempts;
        assert_eq!(attempts, 2, "the re-executed task sees attempt 2");
        tdb.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn sigkill_inside_any_revert_goes_on_reverting() {
    for k in 1..TASKS {
        let (dir, _store, tdb) = crash_and_resume(k, "revert", FlowState::Reverted).await;
        assert_eq!(counts(dir.path()), [1; TASKS], "k={k}: no execute runs again");
        let r = calls(dir.path(), "revert");
        for (i, n) in r.iter().enumerate() {
            let want = if i + 1 == k { 2 } else { 1 };
            assert_eq!(*n, want, "k={k}: t{} reverted {n} times; all {r:?}", i + 1);
        }
        tdb.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn a_peer_takes_over_a_flow_whose_owner_died() {
    for tdb in TestDb::all().await.unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn FlowStore> = Arc::new(SqlFlowStore::new(tdb.db.clone()));
        let a = worker(store.clone(), "worker-a", Some(3), 300);
        let spec = FlowSpec {
            id: Some("takeover".into()),
            topic: Some(TOPIC.into()),
            subject: Some("vol-1".into()),
            inputs: Values::new().with(&DIR, dir.path().display().to_string()),
        };
        a.engine().submit("ten", spec).await.unwrap();
        let a_task = tokio::spawn(a.run(CancellationToken::new()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.path().join("inside").exists() {
            assert!(Instant::now() < deadline, "worker a never reached t3");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Worker a dies holding the flow: no release, no more renewals.
        a_task.abort();
        let _ = a_task.await;
        let held = store.get_flow("takeover").await.unwrap().unwrap().flow;
        assert_eq!(held.owner.as_deref(), Some("worker-a"));

        let shutdown = CancellationToken::new();
        let b = worker(store.clone(), "worker-b", None, 300);
        let b_task = tokio::spawn(b.run(shutdown.clone()));
        wait_for_state(&*store, "takeover", FlowState::Success, Duration::from_secs(30)).await;
        shutdown.cancel();
        b_task.await.unwrap().unwrap();
        let done = store.get_flow("takeover").await.unwrap().unwrap().flow;
        assert_eq!((done.owner.as_deref(), done.claim_epoch), (Some("worker-b"), 2));
        assert_eq!(counts(dir.path()), [1, 1, 2, 1, 1, 1, 1, 1, 1, 1]);
        tdb.cleanup().await.unwrap();
    }
}

/// Submits "ten" as `id` and runs it on a worker `owner` with a long lease until it is
/// inside t3; then the worker dies holding the flow (no release, no renewal).
async fn die_inside_t3(store: &Arc<dyn FlowStore>, owner: &str, id: &str, dir: &Path) {
    let a = worker(store.clone(), owner, Some(3), 60_000);
    let spec = FlowSpec {
        id: Some(id.into()),
        topic: Some(TOPIC.into()),
        inputs: Values::new().with(&DIR, dir.display().to_string()),
        ..Default::default()
    };
    a.engine().submit("ten", spec).await.unwrap();
    let a_task = tokio::spawn(a.run(CancellationToken::new()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("inside").exists() {
        assert!(Instant::now() < deadline, "worker {owner} never reached t3");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a_task.abort();
    let _ = a_task.await;
    std::fs::remove_file(dir.join("inside")).unwrap();
}

#[tokio::test]
async fn a_restarted_worker_takes_back_its_earlier_lifes_flows_at_once() {
    for tdb in TestDb::all().await.unwrap() {
        let (mine, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store: Arc<dyn FlowStore> = Arc::new(SqlFlowStore::new(tdb.db.clone()));
        die_inside_t3(&store, "host:volume:life1", "mine", mine.path()).await;
        die_inside_t3(&store, "host:volumex:peer", "theirs", theirs.path()).await;

        // The next life claims with the same prefix; both leases still run for a minute.
        let mut opts = WorkerOptions {
            engine: EngineOptions { owner: "host:volume:life2".into(), ..EngineOptions::default() },
            topics: vec![TOPIC.to_owned()],
            sweep_interval: Duration::from_millis(50),
            ..WorkerOptions::default()
        };
        opts.reclaim_prefix = Some("host:volume:".into());
        let life2 = Worker::new(store.clone(), registry(None), opts);
        let stats = life2.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(life2.run(shutdown.clone()));
        wait_for_state(&*store, "mine", FlowState::Success, Duration::from_secs(10)).await;
        shutdown.cancel();
        task.await.unwrap().unwrap();

        assert_eq!(counts(mine.path()), [1, 1, 2, 1, 1, 1, 1, 1, 1, 1]);
        let theirs_now = store.get_flow("theirs").await.unwrap().unwrap().flow;
        assert_eq!(
            (theirs_now.state, theirs_now.owner.as_deref()),
            (FlowState::Running, Some("host:volumex:peer")),
            "another prefix's flow waits for its lease"
        );
        let snap = stats.snapshot();
        assert_eq!(snap[0], ("flows_reclaimed_at_start", 1));
        assert_eq!(snap[3], ("flows_succeeded", 1));
        tdb.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn an_operator_revert_reverts_what_ran() {
    for tdb in TestDb::all().await.unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn FlowStore> = Arc::new(SqlFlowStore::new(tdb.db.clone()));
        die_inside_t3(&store, "dead", "stuck", dir.path()).await;

        let marked = store.request_revert("stuck").await.unwrap().expect("a running flow is revertible");
        assert_eq!((marked.owner, marked.state), (None, FlowState::Running));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker(store.clone(), "operator-peer", None, 300).run(shutdown.clone()));
        wait_for_state(&*store, "stuck", FlowState::Reverted, Duration::from_secs(10)).await;
        shutdown.cancel();
        task.await.unwrap().unwrap();

        assert_eq!(counts(dir.path()), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], "nothing runs again");
        assert_eq!(calls(dir.path(), "revert"), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], "what ran is reverted once");
        let atoms = store.get_flow("stuck").await.unwrap().unwrap().atoms;
        let reverted = atoms.iter().filter(|a| a.state == AtomState::Reverted).count();
        assert_eq!(reverted, 3);
        assert!(store.request_revert("stuck").await.unwrap().is_none(), "a reverted flow stays reverted");
        assert!(store.request_revert("nope").await.unwrap().is_none());

        // A flow in which nothing ran is reverted on the spot.
        let spec = FlowSpec { id: Some("idle".into()), topic: Some("nobody".into()), ..Default::default() };
        worker(store.clone(), "x", None, 300).engine().submit("ten", spec).await.unwrap();
        let idle = store.request_revert("idle").await.unwrap().unwrap();
        assert_eq!(idle.state, FlowState::Reverted);
        tdb.cleanup().await.unwrap();
    }
}
