//! One test suite for every flow store: memory, SQLite and (where configured) PostgreSQL.

use std::sync::Arc;

use ember_db::flow_store::SqlFlowStore;
use ember_db::testing::TestDb;
use ember_engine::store::now_ms;
use ember_engine::{
    AtomKind, AtomState, AtomWrite, ClaimRequest, EngineError, Failure, Fence, FlowFilter, FlowState,
    FlowStore, Intention, Key, MemoryStore, NewFlow, Ownership, Progress, Values, WriteBatch,
};

const SIZE: Key<u64> = Key::new("size");
const NAME: Key<String> = Key::new("name");

fn new_flow(id: &str, topic: &str, owner: Option<(&str, i64)>) -> NewFlow {
    NewFlow {
        id: id.to_owned(),
        name: "demo".to_owned(),
        inputs: Values::new().with(&SIZE, 3),
        topic: topic.to_owned(),
        subject: Some(format!("vol-{id}")),
        owner: owner.map(|(o, l)| (o.to_owned(), l)),
    }
}

fn fence(id: &str, owner: &str, epoch: i64) -> Fence {
    Fence { flow_id: Arc::from(id), owner: Arc::from(owner), epoch }
}

fn atom(name: &str, state: AtomState, result: Option<Values>) -> AtomWrite {
    AtomWrite {
        name: Arc::from(name),
        kind: AtomKind::Task,
        state,
        intention: Intention::Execute,
        attempts: 1,
        result,
        failure: None,
        revert_failure: None,
        history: None,
    }
}

fn claim_req(owner: &str, topic: &str, lease_until: i64) -> ClaimRequest {
    ClaimRequest {
        owner: owner.to_owned(),
        topics: vec![topic.to_owned()],
        names: Vec::new(),
        lease_until,
        now: now_ms(),
        lapsed_before: i64::MAX,
        limit: 10,
        reclaim: None,
    }
}

async fn creation_is_idempotent(store: &dyn FlowStore) {
    let (rec, created) = store.create_flow(&new_flow("f1", "t", None)).await.unwrap();
    assert!(created);
    assert_eq!((rec.state, rec.owner.as_deref(), rec.claim_epoch), (FlowState::Pending, None, 0));
    let (again, created) = store.create_flow(&new_flow("f1", "other", Some(("x", 1)))).await.unwrap();
    assert!(!created, "an existing id is left alone");
    assert_eq!((again.topic.as_str(), again.owner), ("t", None));
    assert_eq!(again.inputs.get(&SIZE).unwrap(), Some(3));
}

async fn writes_are_fenced_and_round_trip(store: &dyn FlowStore) {
    let lease = now_ms() + 60_000;
    store.create_flow(&new_flow("f2", "t", Some(("w1", lease)))).await.unwrap();
    let out = Values::new().with(&NAME, "disk".to_owned());
    let mut failed = atom("b", AtomState::Failure, None);
    failed.failure = Some(Failure { kind: "Boom".into(), message: "no".into(), causes: vec!["deep".into()] });
    failed.intention = Intention::Revert;
    let batch = WriteBatch {
        flow_state: Some(FlowState::Running),
        atoms: vec![atom("a", AtomState::Success, Some(out)), failed],
        ownership: Ownership::Keep,
    };
    store.write(&fence("f2", "w1", 1), batch.clone()).await.unwrap();
    let detail = store.get_flow("f2").await.unwrap().unwrap();
    assert_eq!(detail.flow.state, FlowState::Running);
    assert_eq!(detail.atoms.len(), 2);
    let a = detail.atoms.iter().find(|a| a.name == "a").unwrap();
    assert_eq!(a.result.as_ref().unwrap().get(&NAME).unwrap().as_deref(), Some("disk"));
    let b = detail.atoms.iter().find(|a| a.name == "b").unwrap();
    assert_eq!((b.state, b.intention), (AtomState::Failure, Intention::Revert));
    assert_eq!(b.failure.as_ref().unwrap().causes, ["deep"]);

    let stale = store.write(&fence("f2", "w1", 0), batch.clone()).await;
    assert!(matches!(stale, Err(EngineError::LeaseLost { .. })), "{stale:?}");
    let other = store.write(&fence("f2", "w2", 1), batch).await;
    assert!(matches!(other, Err(EngineError::LeaseLost { .. })), "{other:?}");

    let fin =
        WriteBatch { flow_state: Some(FlowState::Success), atoms: vec![], ownership: Ownership::Finish };
    store.write(&fence("f2", "w1", 1), fin).await.unwrap();
    let done = store.get_flow("f2").await.unwrap().unwrap().flow;
    assert_eq!(
        (done.state, done.owner.as_deref(), done.lease_expires_at),
        (FlowState::Success, Some("w1"), None)
    );
}

async fn claims_have_one_winner_and_fence_the_loser(store: &dyn FlowStore) {
    store.create_flow(&new_flow("c1", "claims", None)).await.unwrap();
    let lease = now_ms() + 60_000;
    let got = store.claim(&claim_req("w1", "claims", lease)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].owner.as_deref(), got[0].claim_epoch), (Some("w1"), 1));
    assert!(store.claim(&claim_req("w2", "claims", lease)).await.unwrap().is_empty(), "held flows stay held");
    assert!(store.claim(&claim_req("w2", "elsewhere", lease)).await.unwrap().is_empty());

    // The lease lapses: w2 takes the flow and w1 is fenced off.
    assert!(store.renew(&fence("c1", "w1", 1), now_ms() - 1).await.unwrap());
    let got = store.claim(&claim_req("w2", "claims", lease)).await.unwrap();
    assert_eq!((got[0].owner.as_deref(), got[0].claim_epoch), (Some("w2"), 2));
    assert!(!store.renew(&fence("c1", "w1", 1), lease).await.unwrap());
    assert!(store.renew(&fence("c1", "w2", 2), lease).await.unwrap());
    let w = WriteBatch {
        flow_state: None,
        atoms: vec![atom("x", AtomState::Running, None)],
        ownership: Ownership::Keep,
    };
    assert!(matches!(
        store.write(&fence("c1", "w1", 1), w.clone()).await,
        Err(EngineError::LeaseLost { .. })
    ));
    store.write(&fence("c1", "w2", 2), w).await.unwrap();

    // Released flows are claimable at once; finished ones never.
    let rel =
        WriteBatch { flow_state: Some(FlowState::Suspended), atoms: vec![], ownership: Ownership::Release };
    store.write(&fence("c1", "w2", 2), rel).await.unwrap();
    let by_name =
        ClaimRequest { topics: vec![], names: vec!["demo".into()], ..claim_req("w3", "claims", lease) };
    let got = store.claim(&by_name).await.unwrap();
    assert!(got.iter().any(|f| f.id == "c1" && f.claim_epoch == 3), "{got:?}");
    let fin =
        WriteBatch { flow_state: Some(FlowState::Reverted), atoms: vec![], ownership: Ownership::Finish };
    let f3 = fence("c1", "w3", 3);
    store.write(&f3, WriteBatch { flow_state: Some(FlowState::Running), ..fin.clone() }).await.unwrap();
    store.renew(&f3, 1).await.unwrap();
    store.write(&f3, fin).await.unwrap();
    assert!(store.claim(&claim_req("w4", "claims", lease)).await.unwrap().is_empty());
}

async fn lists_filter_and_page(store: &dyn FlowStore) {
    let before = now_ms();
    for i in 0..5 {
        let mut nf = new_flow(&format!("l{i}"), "list", None);
        nf.subject = Some(if i % 2 == 0 { "even".into() } else { "odd".into() });
        store.create_flow(&nf).await.unwrap();
    }
    let all = FlowFilter { created_after: Some(before), ..Default::default() };
    let listed = store.list_flows(&all).await.unwrap();
    assert!(listed.len() >= 5);
    let even = store.list_flows(&FlowFilter { subject: Some("even".into()), ..all.clone() }).await.unwrap();
    assert_eq!(even.len(), 3);
    let page = FlowFilter { subject: Some("even".into()), limit: Some(2), offset: 2, ..all.clone() };
    assert_eq!(store.list_flows(&page).await.unwrap().len(), 1);
    let none = FlowFilter { state: Some(FlowState::Success), name: Some("demo".into()), ..all.clone() };
    assert!(store.list_flows(&none).await.unwrap().iter().all(|f| f.state == FlowState::Success));
    let owned = store.list_flows(&FlowFilter { owner: Some("nobody".into()), ..all.clone() }).await.unwrap();
    assert!(owned.is_empty());
    let earlier = FlowFilter { created_before: Some(before), subject: Some("odd".into()), ..all };
    assert!(store.list_flows(&earlier).await.unwrap().is_empty());
    assert!(store.get_flow("missing").await.unwrap().is_none());
}

async fn release_makes_a_flow_claimable_and_fences_its_owner(store: &dyn FlowStore) {
    let lease = now_ms() + 60_000;
    store.create_flow(&new_flow("r1", "release", Some(("w1", lease)))).await.unwrap();
    assert!(store.claim(&claim_req("w2", "release", lease)).await.unwrap().is_empty(), "leased");
    let released = store.release("r1").await.unwrap().unwrap();
    assert_eq!((released.owner, released.lease_expires_at, released.claim_epoch), (None, None, 2));
    let stale =
        WriteBatch { flow_state: Some(FlowState::Running), atoms: Vec::new(), ownership: Ownership::Keep };
    let err = store.write(&fence("r1", "w1", 1), stale).await.unwrap_err();
    assert!(matches!(err, EngineError::LeaseLost { .. }), "{err:?}");
    let claimed = store.claim(&claim_req("w2", "release", lease)).await.unwrap();
    assert_eq!(claimed.iter().map(|f| (f.id.as_str(), f.claim_epoch)).collect::<Vec<_>>(), [("r1", 3)]);
    let fin =
        WriteBatch { flow_state: Some(FlowState::Success), atoms: Vec::new(), ownership: Ownership::Finish };
    store.write(&fence("r1", "w2", 3), fin).await.unwrap();
    assert!(store.release("r1").await.unwrap().is_none(), "a finished flow stays finished");
    assert!(store.release("missing").await.unwrap().is_none());
    assert_eq!(store.get_flow("r1").await.unwrap().unwrap().flow.owner.as_deref(), Some("w2"));
}

async fn cancel_withdraws_only_an_unclaimed_hand_off(store: &dyn FlowStore) {
    let lease = now_ms() + 60_000;
    store.create_flow(&new_flow("w-1", "cancel", None)).await.unwrap();
    store.create_flow(&new_flow("w-2", "cancel", None)).await.unwrap();
    let claimed = store.claim(&ClaimRequest { limit: 1, ..claim_req("w1", "cancel", lease) }).await.unwrap();
    assert_eq!(claimed.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["w-1"], "oldest first");
    assert_eq!(store.cancel("w-1").await.unwrap(), Some(false), "a claimed flow is the worker's");
    assert_eq!(store.cancel("w-2").await.unwrap(), Some(true));
    assert_eq!(store.get_flow("w-2").await.unwrap().unwrap().flow.state, FlowState::Reverted);
    assert!(store.claim(&claim_req("w2", "cancel", lease)).await.unwrap().is_empty(), "withdrawn for good");
    assert_eq!(store.cancel("w-2").await.unwrap(), Some(false));
    assert_eq!(store.cancel("missing").await.unwrap(), None);
}

async fn concurrent_writes_group_commit(store: Arc<dyn FlowStore>) {
    let lease = now_ms() + 60_000;
    let mut handles = Vec::new();
    for i in 0..32 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let id = format!("g{i}");
            store.create_flow(&new_flow(&id, "g", Some(("w", lease)))).await.unwrap();
            for step in 0..5 {
                let w = WriteBatch {
                    flow_state: Some(FlowState::Running),
                    atoms: vec![atom(&format!("a{step}"), AtomState::Running, None)],
                    ownership: Ownership::Keep,
                };
                store.write(&fence(&id, "w", 1), w).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    for i in 0..32 {
        assert_eq!(store.get_flow(&format!("g{i}")).await.unwrap().unwrap().atoms.len(), 5);
    }
}

async fn a_flow_is_created_with_its_first_step_once(store: &dyn FlowStore) {
    let lease = now_ms() + 60_000;
    let batch = || WriteBatch {
        flow_state: Some(FlowState::Running),
        atoms: vec![atom("a", AtomState::Running, None)],
        ownership: Ownership::Keep,
    };
    let new = new_flow("cw1", "t", Some(("w1", lease)));
    assert!(store.create_with(&new, &fence("cw1", "w1", 1), batch()).await.unwrap());
    let got = store.get_flow("cw1").await.unwrap().unwrap();
    assert_eq!(
        (got.flow.state, got.flow.owner.as_deref(), got.flow.claim_epoch),
        (FlowState::Running, Some("w1"), 1)
    );
    assert_eq!(got.atoms.len(), 1);
    assert_eq!((got.atoms[0].name.as_str(), got.atoms[0].state), ("a", AtomState::Running));
    // The same id again creates nothing and writes nothing, even for the same owner.
    let again = WriteBatch { atoms: vec![atom("b", AtomState::Running, None)], ..batch() };
    assert!(!store.create_with(&new, &fence("cw1", "w1", 1), again).await.unwrap());
    let got = store.get_flow("cw1").await.unwrap().unwrap();
    assert_eq!(got.atoms.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["a"]);
}

async fn progress_is_kept_across_the_atoms_own_writes(store: &dyn FlowStore) {
    let lease = now_ms() + 60_000;
    store.create_flow(&new_flow("p1", "t", Some(("w1", lease)))).await.unwrap();
    let running = || WriteBatch {
        flow_state: Some(FlowState::Running),
        atoms: vec![atom("copy", AtomState::Running, None)],
        ownership: Ownership::Keep,
    };
    store.write(&fence("p1", "w1", 1), running()).await.unwrap();
    let shown =
        |d: ember_engine::FlowDetail| d.atoms.iter().find(|a| a.name == "copy").and_then(|a| a.progress);
    assert_eq!(shown(store.get_flow("p1").await.unwrap().unwrap()), None, "no report yet");
    let half = Progress { done: 1 << 30, total: 1 << 31 };
    store.record_progress("p1", "copy", half).await.unwrap();
    assert_eq!(shown(store.get_flow("p1").await.unwrap().unwrap()), Some(half));
    assert_eq!(half.percent(), 50);
    // The atom's own next write keeps the figure; a report on a missing atom changes nothing.
    let done = WriteBatch { atoms: vec![atom("copy", AtomState::Success, None)], ..running() };
    store.write(&fence("p1", "w1", 1), done).await.unwrap();
    store.record_progress("p1", "nope", half).await.unwrap();
    let detail = store.get_flow("p1").await.unwrap().unwrap();
    assert_eq!(detail.atoms.len(), 1);
    assert_eq!(shown(detail), Some(half));
}

async fn suite(store: Arc<dyn FlowStore>) {
    progress_is_kept_across_the_atoms_own_writes(&*store).await;
    creation_is_idempotent(&*store).await;
    a_flow_is_created_with_its_first_step_once(&*store).await;
    writes_are_fenced_and_round_trip(&*store).await;
    claims_have_one_winner_and_fence_the_loser(&*store).await;
    lists_filter_and_page(&*store).await;
    release_makes_a_flow_claimable_and_fences_its_owner(&*store).await;
    cancel_withdraws_only_an_unclaimed_hand_off(&*store).await;
    concurrent_writes_group_commit(store).await;
}

#[tokio::test]
async fn memory_store_passes_the_suite() {
    suite(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn sql_store_passes_the_suite_on_sqlite_and_postgres() {
    for db in TestDb::all().await.unwrap() {
        eprintln!("flow store suite on {}", db.db.kind());
        suite(Arc::new(SqlFlowStore::new(db.db.clone()))).await;
        db.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn migrations_match_between_databases() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
    let names = |d: &str| {
        let mut v: Vec<_> = std::fs::read_dir(format!("{root}/{d}"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("sqlite"), names("postgres"));
}
