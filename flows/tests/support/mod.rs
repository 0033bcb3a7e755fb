//! A test cluster in one process: a real database (SQLite, or PostgreSQL where
//! `EMBER_TEST_DATABASE_URL` is set), the SQL flow store, workers for the api, the
//! scheduler and each volume backend, an in-process wake, and a scheduler fed with the
//! drivers' own capability reports.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_common::model::{QuotaDefaults, QuotaUsage, Volume, VolumeStatus};
use ember_common::ops::RequestContext;
use ember_common::repo::{QuotaRepo, VolumeRepo};
use ember_db::flow_store::SqlFlowStore;
use ember_db::testing::TestDb;
use ember_db::{Db, DbOptions, SqlRepo};
use ember_drivers::{FakeDriver, FakeOptions, SharedDriver};
use ember_engine::{Engine, EngineOptions, FlowStore, Registry, Worker, WorkerOptions};
use ember_flows::{
    API_TOPIC, Deps, FlowAttachOps, FlowConfig, FlowVolumeOps, LocalWake, SCHEDULER_TOPIC, register_api,
    register_scheduler, register_volume, volume_topic,
};
use ember_scheduler::{SchedulerOptions, ServiceStatus, SharedScheduler};
use tokio::task::JoinHandle;

/// The backends every cluster runs.
pub const BACKENDS: [&str; 2] = ["node1@fake1", "node2@fake2"];
/// The project tests create in.
pub const PROJECT: &str = "p1";

/// The request context of the test project's user.
pub fn ctx() -> RequestContext {
    RequestContext {
        user_id: "u1".into(),
        project_id: PROJECT.into(),
        roles: vec![],
        is_admin: false,
        request_id: "req-test".into(),
    }
}

/// A fake driver with `opts` named after its backend.
pub fn fake(backend: &str, opts: FakeOptions) -> Arc<FakeDriver> {
    Arc::new(FakeDriver::new(FakeOptions { backend_name: backend.to_owned(), ..opts }))
}

/// How a cluster runs.
#[derive(Clone)]
pub struct Options {
    pub lease: Duration,
    pub sweep: Duration,
    pub max_attempts: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self { lease: Duration::from_secs(5), sweep: Duration::from_millis(200), max_attempts: 3 }
    }
}

/// The running parts.
/// How long a wait for a status may take: generous, since two-core CI machines also build
/// while tests run (a wait returns as soon as its condition holds).
const WAIT: Duration = Duration::from_secs(90);

pub struct Cluster {
    pub repo: Arc<SqlRepo>,
    pub store: Arc<dyn FlowStore>,
    pub wake: Arc<LocalWake>,
    pub scheduler: SharedScheduler,
    pub drivers: HashMap<String, SharedDriver>,
    pub deps: Arc<Deps>,
    pub ops: Arc<FlowVolumeOps>,
    /// The attach and detach operations, on the same engine as `ops`.
    pub attach: Arc<FlowAttachOps>,
    opts: Options,
    url: String,
    config: FlowConfig,
    /// The running workers' "process".
    process: Option<Process>,
    generation: u32,
}

impl Cluster {
    /// Starts workers on `db` for `drivers` (backend name to driver).
    pub async fn start(db: &TestDb, drivers: Vec<(&str, SharedDriver)>, opts: Options) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let repo = Arc::new(SqlRepo::new(db.db.clone(), QuotaDefaults::default()));
        repo.set_project_quota(PROJECT, "volumes", 200).await.unwrap();
        repo.set_project_quota(PROJECT, "gigabytes", 2000).await.unwrap();
        repo.set_project_quota(PROJECT, "snapshots", 200).await.unwrap();
        let store: Arc<dyn FlowStore> = Arc::new(SqlFlowStore::new(db.db.clone()));
        let wake = Arc::new(LocalWake::new());
        let sched_opts =
            SchedulerOptions { scheduler_max_attempts: opts.max_attempts, ..SchedulerOptions::default() };
        let scheduler = SharedScheduler::new(sched_opts).unwrap();
        let drivers: HashMap<String, SharedDriver> =
            drivers.into_iter().map(|(b, d)| (b.to_owned(), d)).collect();
        for (backend, d) in &drivers {
            d.do_setup().await.unwrap();
            report(&scheduler, backend, d).await;
        }
        let c_attempts = opts.max_attempts;
        let config = FlowConfig { scheduler_max_attempts: opts.max_attempts, ..FlowConfig::default() };
        let deps = Arc::new(
            Deps::new(repo.clone(), store.clone(), wake.clone(), config)
                .with_scheduler(scheduler.clone())
                .with_drivers(Arc::new(drivers.clone())),
        );
        let engine = Engine::with_options(store.clone(), engine_options("api-request", &opts));
        let attach = Arc::new(FlowAttachOps::new(engine.clone(), deps.clone()).unwrap());
        let ops = Arc::new(FlowVolumeOps::new(engine, deps.clone()).unwrap());
        let mut c = Self {
            repo,
            store,
            wake,
            scheduler,
            drivers,
            deps,
            ops,
            attach,
            opts,
            url: db.url.clone(),
            config: FlowConfig { scheduler_max_attempts: c_attempts, ..FlowConfig::default() },
            process: None,
            generation: 0,
        };
        c.start_workers().await;
        c
    }

    /// A separate "API process": `FlowVolumeOps` on a runtime and a pool of its own; the
    /// caller drops the runtime (`shutdown_background`) to play the process's death.
    pub async fn api_process(&self) -> (tokio::runtime::Runtime, Arc<FlowVolumeOps>) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (url, wake, config, opts) =
            (self.url.clone(), self.wake.clone(), self.config.clone(), self.opts.clone());
        let ops = rt
            .spawn(async move {
                let db = Db::connect(&DbOptions::new(&url)).await.unwrap();
                let repo = Arc::new(SqlRepo::new(db.clone(), QuotaDefaults::default()));
                let store: Arc<dyn FlowStore> = Arc::new(SqlFlowStore::new(db));
                let deps = Arc::new(Deps::new(repo, store.clone(), wake, config));
                let engine = Engine::with_options(store, engine_options("doomed-api-process", &opts));
                Arc::new(FlowVolumeOps::new(engine, deps).unwrap())
            })
            .await
            .unwrap();
        (rt, ops)
    }

    /// Starts one worker for the api, one for the scheduler and one per backend, as one
    /// "process": a runtime of its own with its own database pool and flow store writer,
    /// so that a crash (dropping the runtime) leaves nothing of it running.
    pub async fn start_workers(&mut self) {
        self.generation += 1;
        let g = self.generation;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (url, wake, config, opts) =
            (self.url.clone(), self.wake.clone(), self.config.clone(), self.opts.clone());
        let (scheduler, drivers) = (self.scheduler.clone(), self.drivers.clone());
        let workers = rt
            .spawn(async move {
                let db = Db::connect(&DbOptions::new(&url)).await.unwrap();
                let repo = Arc::new(SqlRepo::new(db, QuotaDefaults::default()));
                let store: Arc<dyn FlowStore> = Arc::new(SqlFlowStore::new(repo.db().clone()));
                let backends: Vec<String> = drivers.keys().cloned().collect();
                let deps = Arc::new(
                    Deps::new(repo, store.clone(), wake.clone(), config)
                        .with_scheduler(scheduler)
                        .with_drivers(Arc::new(drivers)),
                );
                let mut api = Registry::new();
                register_api(&mut api, &deps);
                let mut sched = Registry::new();
                register_scheduler(&mut sched, &deps).unwrap();
                let mut roles = vec![
                    (format!("api-{g}"), API_TOPIC.to_owned(), api),
                    (format!("scheduler-{g}"), SCHEDULER_TOPIC.to_owned(), sched),
                ];
                for b in backends {
                    let mut vol = Registry::new();
                    register_volume(&mut vol, &deps).unwrap();
                    roles.push((format!("volume-{b}-{g}"), volume_topic(&b), vol));
                }
                roles
                    .into_iter()
                    .map(|(owner, topic, reg)| spawn(&store, &wake, &opts, owner, topic, reg))
                    .collect()
            })
            .await
            .unwrap();
        self.process = Some(Process { rt, workers });
    }

    /// Kills every worker at once, as a crash would: their runtime is dropped, flows in
    /// flight stop where they are, still owned until their lease lapses, and the database
    /// sees the process's connections close.
    pub async fn crash_workers(&mut self) {
        self.wake.clear();
        if let Some(p) = self.process.take() {
            p.rt.shutdown_background();
        }
    }

    /// Stops the workers cleanly.
    pub async fn stop(mut self) {
        self.wake.clear();
        if let Some(p) = self.process.take() {
            for (t, h) in p.workers {
                t.cancel();
                let _ = h.await;
            }
            p.rt.shutdown_background();
        }
    }

    /// The volume, once `done` holds for it, or a panic naming the last state seen.
    pub async fn wait_volume(&self, id: &str, done: impl Fn(&Volume) -> bool) -> Volume {
        let repo = self.repo.clone();
        let id2 = id.to_owned();
        poll(
            WAIT,
            &format!("volume {id}"),
            move || {
                let repo = repo.clone();
                let id = id2.clone();
                async move { repo.get_volume(&id).await.ok() }
            },
            done,
        )
        .await
    }

    /// Waits until the volume has `status`.
    pub async fn wait_status(&self, id: &str, status: VolumeStatus) -> Volume {
        self.wait_volume(id, |v| v.status == status).await
    }

    /// The test project's usage of `resource`.
    pub async fn usage(&self, resource: &str) -> QuotaUsage {
        let set = self.repo.project_quotas(PROJECT).await.unwrap();
        set.resources.get(resource).cloned().unwrap_or_default()
    }
}

/// Workers running on a runtime of their own.
struct Process {
    rt: tokio::runtime::Runtime,
    workers: Vec<(tokio_util::sync::CancellationToken, JoinHandle<()>)>,
}

/// Starts one worker on the current runtime.
fn spawn(
    store: &Arc<dyn FlowStore>,
    wake: &LocalWake,
    opts: &Options,
    owner: String,
    topic: String,
    registry: Registry,
) -> (tokio_util::sync::CancellationToken, JoinHandle<()>) {
    let wopts = WorkerOptions {
        engine: engine_options(&owner, opts),
        topics: vec![topic.clone()],
        flow_names: Vec::new(),
        sweep_interval: opts.sweep,
        max_flows: 64,
        reclaim_prefix: None,
    };
    let worker = Worker::new(store.clone(), registry, wopts);
    wake.add(topic, worker.handle());
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    let handle = tokio::spawn(async move {
        let _ = worker.run(t).await;
    });
    (token, handle)
}

/// Feeds the scheduler the driver's own capability report and an up service.
pub async fn report(scheduler: &SharedScheduler, backend: &str, driver: &SharedDriver) {
    let now = ember_scheduler::shared::now_ms();
    scheduler.update_service(backend, ServiceStatus::up("nova", now));
    let caps = driver.get_volume_stats(true).await.unwrap();
    scheduler.update_capabilities(backend, now, caps);
}

fn engine_options(owner: &str, opts: &Options) -> EngineOptions {
    EngineOptions {
        owner: owner.to_owned(),
        lease: opts.lease,
        topic: API_TOPIC.to_owned(),
        ..EngineOptions::default()
    }
}

/// Polls `get` until `done` holds for its value, or panics after `deadline` with the last
/// value seen.
pub async fn poll<T: std::fmt::Debug, F, Fut>(
    deadline: Duration,
    what: &str,
    get: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        let last = get().await;
        if let Some(v) = last.as_ref().filter(|v| done(v)) {
            let _ = v;
            return last.unwrap();
        }
        if Instant::now() >= end {
            let mut seen = format!("{last:?}");
            seen.truncate(1500);
            panic!("timed out waiting for {what}; last seen: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `scenario` on SQLite, then on PostgreSQL where configured.
pub async fn on_every_db<F, Fut>(scenario: F)
where
    F: Fn(Arc<TestDb>) -> Fut,
    Fut: Future<Output = ()>,
{
    for db in TestDb::all().await.unwrap() {
        let db = Arc::new(db);
        scenario(db.clone()).await;
        if let Ok(db) = Arc::try_unwrap(db) {
            db.cleanup().await.unwrap();
        }
    }
}

/// Two fake backends with default options.
pub fn two_fakes() -> (Vec<Arc<FakeDriver>>, Vec<(&'static str, SharedDriver)>) {
    let fakes: Vec<Arc<FakeDriver>> = BACKENDS.iter().map(|b| fake(b, FakeOptions::default())).collect();
    let shared = BACKENDS.iter().zip(&fakes).map(|(b, f)| (*b, f.clone() as SharedDriver)).collect();
    (fakes, shared)
}

/// Waits until snapshot `id` satisfies `done`.
pub async fn wait_snapshot(
    c: &Cluster,
    id: &str,
    done: impl Fn(&ember_common::model::Snapshot) -> bool,
) -> ember_common::model::Snapshot {
    use ember_common::repo::SnapshotRepo;
    let repo = c.repo.clone();
    let id2 = id.to_owned();
    poll(
        WAIT,
        &format!("snapshot {id}"),
        move || {
            let repo = repo.clone();
            let id = id2.clone();
            async move { repo.get_snapshot(&id).await.ok() }
        },
        done,
    )
    .await
}

/// Waits until volume `id` is gone (soft-deleted).
pub async fn wait_gone(c: &Cluster, id: &str) {
    let repo = c.repo.clone();
    let id2 = id.to_owned();
    poll(
        WAIT,
        &format!("volume {id} to be deleted"),
        move || {
            let repo = repo.clone();
            let id = id2.clone();
            async move {
                match repo.get_volume(&id).await {
                    Err(ember_common::Error::NotFound { .. }) => Some(None),
                    Ok(v) => Some(Some(v.status)),
                    Err(_) => None,
                }
            }
        },
        |s: &Option<VolumeStatus>| s.is_none(),
    )
    .await;
}

impl Cluster {
    /// Waits until every recorded flow has ended; with `all_succeed`, checks none failed
    /// (reverted flows are expected where a create fails on a backend).
    pub async fn wait_idle(&self, all_succeed: bool) {
        let store = self.store.clone();
        let flows = poll(
            WAIT,
            "every flow to end",
            move || {
                let store = store.clone();
                async move { store.list_flows(&Default::default()).await.ok() }
            },
            |flows: &Vec<ember_engine::FlowRecord>| flows.iter().all(|f| f.state.is_terminal()),
        )
        .await;
        let failed: Vec<_> = flows
            .iter()
            .filter(|f| f.state != ember_engine::FlowState::Success)
            .map(|f| (&f.id, f.state))
            .collect();
        assert!(!all_succeed || failed.is_empty(), "flows that did not succeed: {failed:?}");
    }

    /// How many flows named `name` are recorded.
    pub async fn flow_count(&self, name: &str) -> usize {
        let filter = ember_engine::FlowFilter { name: Some(name.to_owned()), ..Default::default() };
        self.store.list_flows(&filter).await.map(|f| f.len()).unwrap_or(0)
    }
}
