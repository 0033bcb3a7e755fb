//! A store that is out of reach for a while (a database restarting): a worker's run waits
//! it out and finishes without running a step twice or reverting, a run inline in a request
//! gives up at once, and a claim after an outage leaves alone the leases the outage let lapse.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Log, Probe};
use ember_engine::store::{ClaimRequest, FlowDetail, FlowFilter, FlowRecord, NewFlow, now_ms};
use ember_engine::{
    Context, Engine, EngineError, EngineOptions, Failure, Fence, Flow, FlowSpec, FlowState, FlowStore,
    MemoryStore, Registry, Task, Values, Worker, WorkerOptions, WriteBatch, async_trait,
};
use tokio_util::sync::CancellationToken;

/// A memory store whose writes, creates and renewals fail as `Unavailable` while `down`.
#[derive(Default)]
struct Flaky {
    inner: MemoryStore,
    down: AtomicBool,
    refused: AtomicUsize,
}

impl Flaky {
    fn check(&self) -> Result<(), EngineError> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(EngineError::Unavailable("the store is down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl FlowStore for Flaky {
    async fn create_flow(&self, new: &NewFlow) -> Result<(FlowRecord, bool), EngineError> {
        self.check()?;
        self.inner.create_flow(new).await
    }
    async fn write(&self, fence: &Fence, batch: WriteBatch) -> Result<(), EngineError> {
        self.check()?;
        self.inner.write(fence, batch).await
    }
    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<FlowRecord>, EngineError> {
        self.check()?;
        self.inner.claim(req).await
    }
    async fn renew(&self, fence: &Fence, lease_until: i64) -> Result<bool, EngineError> {
        self.check()?;
        self.inner.renew(fence, lease_until).await
    }
    async fn get_flow(&self, id: &str) -> Result<Option<FlowDetail>, EngineError> {
        self.inner.get_flow(id).await
    }
    async fn list_flows(&self, filter: &FlowFilter) -> Result<Vec<FlowRecord>, EngineError> {
        self.inner.list_flows(filter).await
    }
    async fn release(&self, id: &str) -> Result<Option<FlowRecord>, EngineError> {
        self.inner.release(id).await
    }
    async fn request_revert(&self, id: &str) -> Result<Option<FlowRecord>, EngineError> {
        self.inner.request_revert(id).await
    }
    async fn cancel(&self, id: &str) -> Result<Option<bool>, EngineError> {
        self.inner.cancel(id).await
    }
}

/// A step that takes the store down while it runs (its result cannot be stored), and
/// brings it back `after` later.
struct TakesTheStoreDown {
    store: Arc<Flaky>,
    after: Duration,
    runs: Arc<AtomicUsize>,
}

#[async_trait]
impl Task for TakesTheStoreDown {
    fn name(&self) -> &str {
        "down"
    }
    async fn execute(&self, _: &Context) -> Result<Values, Failure> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.store.down.store(true, Ordering::SeqCst);
        let (store, after) = (self.store.clone(), self.after);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            store.down.store(false, Ordering::SeqCst);
        });
        Ok(Values::new())
    }
}

/// A step whose first two tries meet an unavailable database (a transient failure).
struct Transient {
    runs: Arc<AtomicUsize>,
}

#[async_trait]
impl Task for Transient {
    fn name(&self) -> &str {
        "transient"
    }
    async fn execute(&self, _: &Context) -> Result<Values, Failure> {
        if self.runs.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(Failure::new("service.unavailable", "the database is down"));
        }
        Ok(Values::new())
    }
}

#[tokio::test]
async fn a_workers_run_waits_out_the_store_and_runs_nothing_twice() {
    let store = Arc::new(Flaky::default());
    let log = Log::default();
    let (down_runs, transient_runs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut registry = Registry::new();
    {
        let (store, log, down_runs, transient_runs) =
            (store.clone(), log.clone(), down_runs.clone(), transient_runs.clone());
        registry.register("patient", move |_| {
            let down = TakesTheStoreDown {
                store: store.clone(),
                after: Duration::from_millis(1500),
                runs: down_runs.clone(),
            };
            Ok(Flow::linear("patient")
                .add(down)
                .add(Probe::new("after", &log))
                .add(Transient { runs: transient_runs.clone() }))
        });
    }
    let engine = Engine::with_options(
        store.clone(),
        EngineOptions {
            owner: "w1".into(),
            lease: Duration::from_millis(600),
            topic: "t".into(),
            ..Default::default()
        },
    );
    engine
        .submit("patient", FlowSpec { id: Some("f1".into()), topic: Some("t".into()), ..Default::default() })
        .await
        .unwrap();
    let opts = WorkerOptions {
        engine: EngineOptions { owner: "w1".into(), lease: Duration::from_millis(600), ..Default::default() },
        topics: vec!["t".into()],
        sweep_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(store.clone(), registry, opts).run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let detail = store.inner.get_flow("f1").await.unwrap().unwrap();
        if detail.flow.state.is_terminal() {
            break detail.flow.state;
        }
        assert!(Instant::now() < deadline, "the flow did not end: {:?}", detail.flow.state);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(state, FlowState::Success);
    assert!(store.refused.load(Ordering::SeqCst) > 0, "the store never refused a write");
    assert_eq!(down_runs.load(Ordering::SeqCst), 1, "the step whose result could not be stored ran again");
    assert_eq!(*log.lock(), ["after.execute"], "a step ran twice or was reverted");
    assert_eq!(transient_runs.load(Ordering::SeqCst), 3, "the transient failure was not tried again");
}

#[tokio::test]
async fn a_run_inline_in_a_request_gives_up_at_once() {
    let store = Arc::new(Flaky::default());
    store.down.store(true, Ordering::SeqCst);
    let engine = Engine::new(store.clone());
    let log = Log::default();
    let started = Instant::now();
    let err = engine
        .run(&Flow::linear("inline").add(Probe::new("a", &log)).compile().unwrap(), Values::new())
        .await;
    assert!(matches!(err, Err(EngineError::Unavailable(_))), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(log.lock().is_empty(), "a step ran before its flow was recorded");
}

#[test]
fn a_claim_after_an_outage_leaves_the_leases_it_let_lapse() {
    let now = now_ms();
    let flow = |lease: i64| FlowRecord {
        id: "f".into(),
        name: "n".into(),
        state: FlowState::Running,
        topic: "t".into(),
        owner: Some("live".into()),
        lease_expires_at: Some(lease),
        inputs: Values::new(),
        claim_epoch: 1,
        subject: None,
        created_at: now,
        updated_at: now,
    };
    let req = |lapsed_before| ClaimRequest {
        owner: "peer".into(),
        topics: vec!["t".into()],
        names: vec![],
        lease_until: now + 1000,
        now,
        lapsed_before,
        limit: 1,
        reclaim: None,
    };
    // The outage began 10 s ago: a lease that ran out 5 s ago lapsed during it.
    assert!(!req(now - 10_000).takes(&flow(now - 5_000)));
    assert!(req(now - 10_000).takes(&flow(now - 20_000)), "a lease lapsed before the outage is taken");
    assert!(req(now).takes(&flow(now - 5_000)), "without an outage a lapsed lease is taken");
}
