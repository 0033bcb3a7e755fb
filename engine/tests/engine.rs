//! The engine's public behaviour on the in-memory store: data flow, patterns, compile
//! errors, revert, retries and drawings.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Log, Probe, assert_legal, check_flow, linear};
use ember_engine::{
    AtomSpec, AtomState, Backoff, CaptureListener, Context, Engine, EngineError, Failure, Flow, FlowFilter,
    FlowState, FlowStore, Key, MemoryStore, Retry, Task, Values, async_trait,
};

const SIZE: Key<u64> = Key::new("size");
const DOUBLED: Key<u64> = Key::new("doubled");
const LABEL: Key<String> = Key::new("label");
const ATTEMPT: Key<u32> = Key::new("attempt");

struct Double;

#[async_trait]
impl Task for Double {
    fn name(&self) -> &str {
        "double"
    }
    fn requires(&self) -> &[&'static str] {
        const R: &[&str] = &[SIZE.name()];
        R
    }
    fn provides(&self) -> &[&'static str] {
        const P: &[&str] = &[DOUBLED.name()];
        P
    }
    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        Ok(Values::new().with(&DOUBLED, ctx.get(&SIZE)? * 2))
    }
}

struct Describe(&'static str);

#[async_trait]
impl Task for Describe {
    fn name(&self) -> &str {
        self.0
    }
    fn requires(&self) -> &[&'static str] {
        const R: &[&str] = &[DOUBLED.name()];
        R
    }
    fn optional(&self) -> &[&'static str] {
        const O: &[&str] = &[ATTEMPT.name()];
        O
    }
    fn provides(&self) -> &[&'static str] {
        const P: &[&str] = &[LABEL.name()];
        P
    }
    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let attempt = ctx.get_optional(&ATTEMPT)?.unwrap_or(0);
        Ok(Values::new().with(&LABEL, format!("{}:{}", ctx.get(&DOUBLED)?, attempt)))
    }
}

fn new_log() -> Log {
    Log::default()
}

#[tokio::test]
async fn values_flow_from_inputs_through_producers() {
    let flow = Flow::linear("data").add(Double).add(Describe("describe")).inputs(&[SIZE.name()]);
    let compiled = flow.compile().unwrap();
    let engine = Engine::new(Arc::new(MemoryStore::new()));
    let out = engine.run(&compiled, Values::new().with(&SIZE, 21)).await.unwrap();
    assert_eq!(out.get(&DOUBLED).unwrap(), Some(42));
    assert_eq!(out.get(&LABEL).unwrap().as_deref(), Some("42:0"));
}

#[tokio::test]
async fn inject_wins_and_rebind_renames() {
    const OTHER: Key<u64> = Key::new("other_size");
    let flow = Flow::linear("data")
        .add(AtomSpec::new(Double).rebind(&SIZE, &OTHER))
        .add(AtomSpec::new(Describe("describe")).inject(&DOUBLED, 7));
    let compiled = flow.compile().unwrap();
    let engine = Engine::new(Arc::new(MemoryStore::new()));
    let out = engine.run(&compiled, Values::new().with(&OTHER, 5)).await.unwrap();
    assert_eq!(out.get(&DOUBLED).unwrap(), Some(10));
    assert_eq!(out.get(&LABEL).unwrap().as_deref(), Some("7:0"));
    let missing = engine.run(&compiled, Values::new().with(&SIZE, 5)).await.unwrap_err();
    assert!(
        matches!(missing, EngineError::MissingRequirement { ref symbol, .. } if symbol == "other_size"),
        "{missing}"
    );
}

#[tokio::test]
async fn a_flow_input_shadows_a_producer() {
    let flow = Flow::linear("data").add(Double).add(Describe("describe"));
    let compiled = flow.compile().unwrap();
    let engine = Engine::new(Arc::new(MemoryStore::new()));
    let out = engine.run(&compiled, Values::new().with(&SIZE, 1).with(&DOUBLED, 100)).await.unwrap();
    assert_eq!(out.get(&LABEL).unwrap().as_deref(), Some("100:0"));
}

#[tokio::test]
async fn compile_rejects_bad_flows_naming_the_atoms() {
    let log = new_log();
    let dup =
        Flow::linear("f").add(Probe::new("a", &log)).add(Flow::unordered("in").add(Probe::new("a", &log)));
    assert!(matches!(dup.compile(), Err(EngineError::DuplicateName { atom, .. }) if atom == "a"));

    let cyc =
        Flow::graph("g").add(Probe::new("a", &log)).add(Probe::new("b", &log)).link("a", "b").link("b", "a");
    assert!(matches!(cyc.compile(), Err(EngineError::Cycle { atoms, .. }) if atoms == ["a", "b"]));

    let missing = Flow::linear("f").add(Probe::new("a", &log).requires(&["x"])).inputs(&["y"]);
    assert!(
        matches!(missing.compile(), Err(EngineError::MissingRequirement { atom, symbol, .. }) if atom == "a" && symbol == "x")
    );

    let ambiguous = Flow::graph("g")
        .add(Probe::new("p1", &log).provides(&["x"]))
        .add(Probe::new("p2", &log).provides(&["x"]))
        .add(Probe::new("c", &log).requires(&["x"]));
    match ambiguous.compile() {
        Err(EngineError::AmbiguousProvider { atom, providers, .. }) => {
            assert_eq!(atom, "c");
            assert_eq!(providers, ["p1", "p2"]);
        }
        other => panic!("expected an ambiguity, got {:?}", other.err()),
    }

    let unknown = Flow::graph("g").add(Probe::new("a", &log)).link("a", "zz");
    assert!(matches!(unknown.compile(), Err(EngineError::UnknownLinkTarget { item, .. }) if item == "zz"));
}

#[tokio::test]
async fn graph_flow_orders_by_requires_and_provides() {
    let log = new_log();
    let flow = Flow::graph("g")
        .add(Probe::new("c", &log).requires(&["y"]))
        .add(Probe::new("b", &log).requires(&["x"]).provides(&["y"]))
        .add(Probe::new("a", &log).provides(&["x"]));
    let compiled = flow.clone().compile().unwrap();
    let mut edges: Vec<_> = compiled.edges().map(|(u, v)| format!("{u}->{v}")).collect();
    edges.sort();
    assert_eq!(edges, ["a->b", "b->c"]);
    check_flow(flow, &log, &["a.execute", "b.execute", "c.execute"]).await.0.unwrap();
}

#[tokio::test]
async fn failure_reverts_what_ran_in_reverse_order() {
    let log = new_log();
    let (res, listener) = check_flow(
        linear(4, Some(3), &log),
        &log,
        &["t1.execute", "t2.execute", "t3.execute", "t3.revert", "t2.revert", "t1.revert"],
    )
    .await;
    match res.unwrap_err() {
        EngineError::Failed(f) => {
            let ember_engine::FlowFailed { state, atom, failure, revert_failure, .. } = *f;
            assert_eq!(state, FlowState::Reverted);
            assert_eq!(atom, "t3");
            assert_eq!(failure.message, "t3 failed");
            assert!(revert_failure.is_none());
        }
        other => panic!("unexpected {other}"),
    }
    let t4: Vec<_> = listener.atom_transitions().into_iter().filter(|(a, _)| a == "t4").collect();
    assert!(t4.is_empty(), "t4 never ran, so it is never reverted: {t4:?}");
}

#[tokio::test]
async fn a_failing_revert_stops_reverting_and_fails_the_flow() {
    let log = new_log();
    let flow = Flow::linear("f")
        .add(Probe::new("t1", &log))
        .add(Probe::new("t2", &log).failing_revert())
        .add(Probe::new("t3", &log).failing(1));
    let (res, listener) =
        check_flow(flow, &log, &["t1.execute", "t2.execute", "t3.execute", "t3.revert", "t2.revert"]).await;
    match res.unwrap_err() {
        EngineError::Failed(f) => {
            let ember_engine::FlowFailed { state, atom, revert_failure, .. } = *f;
            assert_eq!(state, FlowState::Failure);
            assert_eq!(atom, "t3");
            assert_eq!(revert_failure.map(|(a, _)| a).as_deref(), Some("t2"));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(listener.atom_transitions().contains(&("t2".into(), AtomState::RevertFailure)));
}

#[tokio::test]
async fn parallel_branches_finish_and_are_reverted_too() {
    let log = new_log();
    let flow = Flow::linear("f")
        .add(Probe::new("a", &log))
        .add(Flow::unordered("u").add(Probe::new("b", &log)).add(Probe::new("c", &log).failing(1)))
        .add(Probe::new("d", &log));
    let compiled = flow.compile().unwrap();
    let engine = Engine::new(Arc::new(MemoryStore::new()));
    assert!(engine.run(&compiled, Values::new()).await.is_err());
    let calls = log.lock().clone();
    let pos =
        |s: &str| calls.iter().position(|c| c == s).unwrap_or_else(|| panic!("{s} missing in {calls:?}"));
    assert!(pos("b.revert") < pos("a.revert") && pos("c.revert") < pos("a.revert"), "{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("d.")), "{calls:?}");
}

#[tokio::test]
async fn retry_times_reruns_the_subflow_then_succeeds() {
    let log = new_log();
    let flow = Flow::linear("f").add(Probe::new("a", &log)).add(
        Flow::linear("sub")
            .retry(Retry::times("r", 3).provides(&ATTEMPT))
            .add(Probe::new("b", &log))
            .add(Probe::new("c", &log).failing(2)),
    );
    let expected = [
        "a.execute",
        "b.execute",
        "c.execute",
        "c.revert",
        "b.revert",
        "b.execute",
        "c.execute",
        "c.revert",
        "b.revert",
        "b.execute",
        "c.execute",
    ];
    let (res, _) = check_flow(flow, &log, &expected).await;
    assert_eq!(res.unwrap().get(&ATTEMPT).unwrap(), Some(3));
}

#[tokio::test]
async fn retry_stops_at_its_limit_and_reverts_everything() {
    let log = new_log();
    let flow = Flow::linear("f")
        .add(Probe::new("a", &log))
        .add(Flow::linear("sub").retry(Retry::times("r", 2)).add(Probe::new("b", &log).failing(5)));
    let expected = ["a.execute", "b.execute", "b.revert", "b.execute", "b.revert", "a.revert"];
    let (res, _) = check_flow(flow, &log, &expected).await;
    assert!(
        matches!(res.unwrap_err(), EngineError::Failed(f) if f.state == FlowState::Reverted && f.atom == "b")
    );
}

#[tokio::test]
async fn nested_retry_defers_to_the_outer_one() {
    let log = new_log();
    let inner = Flow::linear("inner").retry(Retry::times("r_in", 2)).add(Probe::new("b", &log).failing(3));
    let flow = Flow::linear("outer").retry(Retry::times("r_out", 2)).add(Probe::new("a", &log)).add(inner);
    let expected = [
        "a.execute",
        "b.execute",
        "b.revert",
        "b.execute",
        "b.revert",
        "a.revert", // inner gives up
        "a.execute",
        "b.execute",
        "b.revert",
        "b.execute", // outer's second attempt
    ];
    check_flow(flow, &log, &expected).await.0.unwrap();
}

#[tokio::test]
async fn for_each_tries_each_value() {
    const HOST: Key<String> = Key::new("host");
    let log = new_log();
    let hosts = ["h1", "h2", "h3"].map(String::from);
    let flow = Flow::linear("f").add(
        Flow::linear("sub").retry(Retry::for_each("r", &HOST, hosts)).add(Probe::new("b", &log).failing(1)),
    );
    let compiled = flow.compile().unwrap();
    let engine = Engine::new(Arc::new(MemoryStore::new()));
    let out = engine.run(&compiled, Values::new()).await.unwrap();
    assert_eq!(out.get(&HOST).unwrap().as_deref(), Some("h2"));
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_between_attempts() {
    let log = new_log();
    let flow = Flow::linear("f").add(
        Flow::linear("sub")
            .retry(Retry::times("r", 3).backoff(Backoff::Fixed(Duration::from_secs(10))))
            .add(Probe::new("b", &log).failing(2)),
    );
    let compiled = flow.compile().unwrap();
    let engine = Engine::new(Arc::new(MemoryStore::new()));
    let start = tokio::time::Instant::now();
    engine.run(&compiled, Values::new()).await.unwrap();
    assert_eq!(start.elapsed().as_secs(), 20);
}

#[tokio::test]
async fn the_store_holds_the_flow_and_its_atoms() {
    let log = new_log();
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    let compiled = linear(3, Some(2), &log).compile().unwrap();
    let err = engine.run(&compiled, Values::new()).await.unwrap_err();
    let EngineError::Failed(f) = err else { panic!("{err}") };
    let flow_id = f.flow_id;
    let detail = store.get_flow(&flow_id).await.unwrap().unwrap();
    assert_eq!(detail.flow.state, FlowState::Reverted);
    assert_eq!(detail.flow.lease_expires_at, None);
    let states: Vec<_> = detail.atoms.iter().map(|a| (a.name.as_str(), a.state, a.attempts)).collect();
    assert_eq!(states, [("t1", AtomState::Reverted, 1), ("t2", AtomState::Reverted, 1)]);
    assert_eq!(detail.atoms[1].failure.as_ref().map(|f| f.message.as_str()), Some("t2 failed"));
    let listed = store
        .list_flows(&FlowFilter { state: Some(FlowState::Reverted), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn drawings_name_every_atom_and_edge() {
    let log = new_log();
    let compiled = Flow::linear("f")
        .add(Probe::new("a", &log))
        .add(Flow::linear("s").retry(Retry::times("r", 2)).add(Probe::new("b", &log)))
        .compile()
        .unwrap();
    let dot = compiled.to_dot();
    assert!(
        dot.contains("\"a\" -> \"r\"") && dot.contains("\"r\" -> \"b\"") && dot.contains("diamond"),
        "{dot}"
    );
    let mermaid = compiled.to_mermaid();
    assert!(mermaid.contains("a0 --> a1") && mermaid.contains("a1{\"r\"}"), "{mermaid}");
}

#[tokio::test]
async fn listeners_see_flow_and_atom_transitions() {
    let log = new_log();
    let listener = CaptureListener::new();
    let engine = Engine::new(Arc::new(MemoryStore::new())).with_listener(listener.clone());
    engine.run(&linear(2, None, &log).compile().unwrap(), Values::new()).await.unwrap();
    assert_legal(&listener);
    assert_eq!(
        listener.atom_transitions(),
        [
            ("t1".into(), AtomState::Running),
            ("t1".into(), AtomState::Success),
            ("t2".into(), AtomState::Running),
            ("t2".into(), AtomState::Success)
        ]
    );
    let flows: Vec<_> = listener
        .events()
        .into_iter()
        .filter_map(|e| match e {
            ember_engine::Event::Flow { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(flows, [FlowState::Running, FlowState::Success]);
}

/// A waiter on a flow's end wakes once the store holds the end, and not for other flows.
#[tokio::test]
async fn flow_ends_wake_a_waiter_once_the_end_is_stored() {
    let log = new_log();
    let store = Arc::new(MemoryStore::new());
    let ends = ember_engine::FlowEnds::new();
    let engine = Engine::new(store.clone()).with_listener(ends.clone());
    let watch = ends.watch("w");
    let other = ends.watch("other");
    let spec = ember_engine::FlowSpec { id: Some("w".into()), ..Default::default() };
    let cancel = tokio_util::sync::CancellationToken::new();
    let flow = linear(2, None, &log).compile().unwrap();
    engine.run_spec(&flow, spec, &cancel).await.unwrap();
    // The wake was kept for a waiter that was not waiting yet, and the store has the end.
    tokio::time::timeout(Duration::from_secs(5), watch.ended()).await.expect("no wake for the flow's end");
    assert_eq!(store.get_flow("w").await.unwrap().unwrap().flow.state, FlowState::Success);
    let quiet = tokio::time::timeout(Duration::from_millis(20), other.ended()).await;
    assert!(quiet.is_err(), "another flow's end woke this waiter");
    drop((watch, other));
    assert_eq!(ends.watched(), 0, "dropped watches are forgotten");
}

/// Cancels a token when a retry starts waiting out its backoff.
struct CancelOnRetrying(tokio_util::sync::CancellationToken);

impl ember_engine::Listener for CancelOnRetrying {
    fn on_event(&self, event: &ember_engine::Event) {
        if let ember_engine::Event::Atom { to: AtomState::Retrying, .. } = event {
            self.0.cancel();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn suspension_does_not_wait_out_a_retry_backoff() {
    let log = new_log();
    let flow = Flow::linear("f").add(
        Flow::linear("sub")
            .retry(Retry::times("r", 3).backoff(Backoff::Fixed(Duration::from_secs(3600))))
            .add(Probe::new("b", &log).failing(1)),
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone()).with_listener(Arc::new(CancelOnRetrying(cancel.clone())));
    let start = tokio::time::Instant::now();
    let spec = ember_engine::FlowSpec { id: Some("s".into()), ..Default::default() };
    let out = engine.run_spec(&flow.compile().unwrap(), spec, &cancel).await.unwrap();
    assert!(matches!(out, ember_engine::Outcome::Suspended));
    assert!(start.elapsed() < Duration::from_secs(3600));
    let detail = store.get_flow("s").await.unwrap().unwrap();
    assert_eq!(detail.flow.state, FlowState::Suspended);
    let r = detail.atoms.iter().find(|a| a.name == "r").unwrap();
    assert_eq!((r.state, r.history.as_ref().map(Vec::len)), (AtomState::Retrying, Some(1)));
}

#[tokio::test]
async fn links_between_subflows_join_every_sink_to_every_source() {
    let log = new_log();
    let left = Flow::unordered("left").add(Probe::new("l1", &log)).add(Probe::new("l2", &log));
    let right = Flow::unordered("right").add(Probe::new("r1", &log)).add(Probe::new("r2", &log));
    let flow = Flow::graph("g").add(right).add(left).link("left", "right");
    let compiled = flow.compile().unwrap();
    let mut edges: Vec<_> = compiled.edges().map(|(u, v)| format!("{u}->{v}")).collect();
    edges.sort();
    assert_eq!(edges, ["l1->r1", "l1->r2", "l2->r1", "l2->r2"]);
    let engine = Engine::new(Arc::new(MemoryStore::new()));
    engine.run(&compiled, Values::new()).await.unwrap();
    let calls = log.lock().clone();
    let pos = |s: &str| calls.iter().position(|c| c == s).unwrap();
    assert!(pos("l1.execute").max(pos("l2.execute")) < pos("r1.execute").min(pos("r2.execute")), "{calls:?}");
}
