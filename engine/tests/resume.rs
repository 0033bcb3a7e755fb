//! Resumption and ownership on the in-memory store: a crashed flow's stored atoms decide
//! what runs again, a reverting flow goes on reverting, a suspended flow is released.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Log, linear};
use ember_engine::store::now_ms;
use ember_engine::{
    AtomKind, AtomState, AtomWrite, ClaimRequest, Engine, EngineError, EngineOptions, Failure, Fence, Flow,
    FlowSpec, FlowState, FlowStore, Intention, MemoryStore, NewFlow, Outcome, Ownership, Registry, Values,
    Worker, WorkerOptions, WriteBatch,
};
use tokio_util::sync::CancellationToken;

fn write(name: &str, state: AtomState, intention: Intention, failure: Option<&str>) -> AtomWrite {
    AtomWrite {
        name: Arc::from(name),
        kind: AtomKind::Task,
        state,
        intention,
        attempts: 1,
        result: Some(Values::new()),
        failure: failure.map(|m| Failure::new("Boom", m)),
        revert_failure: None,
        history: None,
    }
}

/// A flow "left behind" by a dead owner whose lease lapsed, with the given atoms stored.
async fn crashed_flow(store: &MemoryStore, atoms: Vec<AtomWrite>) {
    let new = NewFlow {
        id: "crashed".into(),
        name: "lin".into(),
        inputs: Values::new(),
        topic: "local".into(),
        subject: None,
        owner: Some(("dead".into(), now_ms() - 1)),
    };
    store.create_flow(&new).await.unwrap();
    let fence = Fence { flow_id: Arc::from("crashed"), owner: Arc::from("dead"), epoch: 1 };
    let batch = WriteBatch { flow_state: Some(FlowState::Running), atoms, ownership: Ownership::Keep };
    store.write(&fence, batch).await.unwrap();
}

async fn claim_and_resume(store: Arc<MemoryStore>, flow: Flow) -> Result<Outcome, EngineError> {
    let engine =
        Engine::with_options(store.clone(), EngineOptions { owner: "me".into(), ..Default::default() });
    let req = ClaimRequest {
        owner: "me".into(),
        topics: vec!["local".into()],
        names: vec![],
        lease_until: now_ms() + 30_000,
        now: now_ms(),
        lapsed_before: i64::MAX,
        limit: 1,
        reclaim: None,
    };
    let claimed = store.claim(&req).await.unwrap();
    assert_eq!(claimed.len(), 1);
    engine.resume(&flow.compile().unwrap(), &claimed[0], &CancellationToken::new()).await
}

#[tokio::test]
async fn resume_skips_successes_and_reruns_the_running_atom() {
    let log = Log::default();
    let store = Arc::new(MemoryStore::new());
    crashed_flow(
        &store,
        vec![
            write("t1", AtomState::Success, Intention::Execute, None),
            write("t2", AtomState::Running, Intention::Execute, None),
        ],
    )
    .await;
    let out = claim_and_resume(store.clone(), linear(4, None, &log)).await.unwrap();
    assert!(matches!(out, Outcome::Success(_)));
    assert_eq!(*log.lock(), ["t2.execute", "t3.execute", "t4.execute"]);
    let detail = store.get_flow("crashed").await.unwrap().unwrap();
    assert_eq!(detail.flow.state, FlowState::Success);
    let t2 = detail.atoms.iter().find(|a| a.name == "t2").unwrap();
    assert_eq!(t2.attempts, 2, "the re-run is visible to the task as attempt 2");
}

#[tokio::test]
async fn resume_goes_on_reverting() {
    let log = Log::default();
    let store = Arc::new(MemoryStore::new());
    crashed_flow(
        &store,
        vec![
            write("t1", AtomState::Success, Intention::Revert, None),
            write("t2", AtomState::Reverting, Intention::Revert, None),
            write("t3", AtomState::Reverted, Intention::Revert, Some("t3 failed")),
        ],
    )
    .await;
    let err = claim_and_resume(store.clone(), linear(4, None, &log)).await.unwrap_err();
    match err {
        EngineError::Failed(f) => assert_eq!((f.state, f.atom.as_str()), (FlowState::Reverted, "t3")),
        other => panic!("unexpected {other}"),
    }
    assert_eq!(*log.lock(), ["t2.revert", "t1.revert"]);
}

#[tokio::test]
async fn an_atom_running_when_revert_was_decided_is_reverted_without_a_result() {
    let log = Log::default();
    let store = Arc::new(MemoryStore::new());
    let flow = Flow::linear("lin")
        .add(common::Probe::new("t1", &log))
        .add(Flow::unordered("u").add(common::Probe::new("t2", &log)).add(common::Probe::new("t3", &log)));
    crashed_flow(
        &store,
        vec![
            write("t1", AtomState::Success, Intention::Revert, None),
            write("t2", AtomState::Running, Intention::Revert, None),
            write("t3", AtomState::Failure, Intention::Revert, Some("t3 failed")),
        ],
    )
    .await;
    assert!(claim_and_resume(store, flow).await.is_err());
    let calls = log.lock().clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[2], "t1.revert", "{calls:?}");
}

#[tokio::test]
async fn shutdown_suspends_and_releases_then_a_worker_finishes() {
    let log = Log::default();
    let store = Arc::new(MemoryStore::new());
    let mut registry = Registry::new();
    let l2 = log.clone();
    registry.register("lin", move |_| Ok(linear(5, None, &l2)));
    let engine = Engine::new(store.clone());
    let cancel = CancellationToken::new();
    cancel.cancel();
    let flow = registry.build("lin", &Values::new()).unwrap();
    let out = engine
        .run_spec(&flow, FlowSpec { id: Some("s".into()), ..Default::default() }, &cancel)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Suspended));
    let rec = store.get_flow("s").await.unwrap().unwrap().flow;
    assert_eq!((rec.state, rec.owner), (FlowState::Suspended, None));

    // This worker claims by flow name, not by topic.
    let opts = WorkerOptions {
        topics: vec![],
        flow_names: vec!["lin".into()],
        sweep_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let worker = Worker::new(store.clone(), registry, opts);
    worker.handle().wake();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.get_flow("s").await.unwrap().unwrap().flow.state != FlowState::Success {
        assert!(Instant::now() < deadline, "the worker did not finish the suspended flow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(log.lock().len(), 5);
}
