//! Property test of resumption: a run "crashes" at a random write (the write fails and the
//! run is dropped), then another engine claims the flow and resumes it. The resumed run
//! must end (no stall), make only legal transitions, respect every edge, and never run
//! again an atom that was stored as SUCCESS.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Log, Probe, assert_legal};
use ember_engine::store::now_ms;
use ember_engine::{
    AtomState, CaptureListener, ClaimRequest, Engine, EngineError, EngineOptions, Fence, Flow, FlowDetail,
    FlowFilter, FlowRecord, FlowState, FlowStore, Intention, MemoryStore, NewFlow, Retry, WriteBatch,
    async_trait,
};
use proptest::prelude::*;

/// A memory store whose writes start failing after `left` of them, as if the process died.
struct CrashingStore {
    inner: Arc<MemoryStore>,
    left: AtomicUsize,
}

#[async_trait]
impl FlowStore for CrashingStore {
    async fn create_flow(&self, new: &NewFlow) -> ember_engine::Result<(FlowRecord, bool)> {
        self.inner.create_flow(new).await
    }
    async fn write(&self, fence: &Fence, batch: WriteBatch) -> ember_engine::Result<()> {
        if self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1)).is_err() {
            return Err(EngineError::Store("crashed".into()));
        }
        self.inner.write(fence, batch).await
    }
    async fn claim(&self, req: &ClaimRequest) -> ember_engine::Result<Vec<FlowRecord>> {
        self.inner.claim(req).await
    }
    async fn renew(&self, fence: &Fence, lease_until: i64) -> ember_engine::Result<bool> {
        self.inner.renew(fence, lease_until).await
    }
    async fn get_flow(&self, id: &str) -> ember_engine::Result<Option<FlowDetail>> {
        self.inner.get_flow(id).await
    }
    async fn list_flows(&self, filter: &FlowFilter) -> ember_engine::Result<Vec<FlowRecord>> {
        self.inner.list_flows(filter).await
    }
    async fn release(&self, id: &str) -> ember_engine::Result<Option<FlowRecord>> {
        self.inner.release(id).await
    }
    async fn cancel(&self, id: &str) -> ember_engine::Result<Option<bool>> {
        self.inner.cancel(id).await
    }
    async fn request_revert(&self, id: &str) -> ember_engine::Result<Option<FlowRecord>> {
        self.inner.request_revert(id).await
    }
}

fn build(n: usize, edges: &[(usize, usize)], fail: Option<usize>, retry: bool, log: &Log) -> Flow {
    let mut flow = Flow::graph("g");
    if retry {
        flow = flow.retry(Retry::times("r", 2));
    }
    for i in 0..n {
        let p = Probe::new(&format!("a{i}"), log);
        flow = flow.add(if Some(i) == fail { p.failing(1) } else { p });
    }
    for (u, v) in edges {
        flow = flow.link(format!("a{u}"), format!("a{v}"));
    }
    flow
}

/// (atoms, edges, failing atom, writes before the crash, under a retry, concurrency).
type Scenario = (usize, Vec<(usize, usize)>, Option<usize>, usize, bool, usize);

fn scenario() -> impl Strategy<Value = Scenario> {
    (2usize..9).prop_flat_map(|n| {
        let pairs: Vec<(usize, usize)> = (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))).collect();
        let edges = proptest::sample::subsequence(pairs.clone(), 0..=pairs.len());
        (Just(n), edges, proptest::option::of(0..n), 0usize..(3 * n + 4), any::<bool>(), 1usize..4)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_run_crashed_at_any_write_resumes_to_the_end((n, edges, fail, crash_at, retry, conc) in scenario()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let log = Log::default();
            // The failing counter lives in the probes, so it survives the "crash" like the
            // outside world would.
            let flow = build(n, &edges, fail, retry, &log).compile().unwrap();
            let memory = Arc::new(MemoryStore::new());
            let crashing = Arc::new(CrashingStore { inner: memory.clone(), left: AtomicUsize::new(crash_at) });
            let first = Engine::with_options(
                crashing,
                EngineOptions { owner: "first".into(), max_concurrency: conc, ..Default::default() },
            );
            let spec = ember_engine::FlowSpec { id: Some("f".into()), ..Default::default() };
            let crashed = first.run_spec(&flow, spec, &Default::default()).await;
            let before = memory.get_flow("f").await.unwrap().unwrap();
            if before.flow.state.is_terminal() {
                prop_assert!(!matches!(crashed, Err(EngineError::Store(_))));
                return Ok(());
            }
            // The first owner is gone: let its lease lapse and claim the flow.
            let fence = Fence { flow_id: Arc::from("f"), owner: Arc::from("first"), epoch: 1 };
            memory.renew(&fence, 0).await.unwrap();
            let req = ClaimRequest {
                owner: "second".into(),
                topics: vec!["local".into()],
                names: vec![],
                lease_until: now_ms() + 60_000,
                now: now_ms(),
                lapsed_before: i64::MAX,
                limit: 1,
                reclaim: None,
            };
            let claimed = memory.claim(&req).await.unwrap();
            prop_assert_eq!(claimed.len(), 1);
            let listener = CaptureListener::new();
            let second = Engine::with_options(
                memory.clone(),
                EngineOptions { owner: "second".into(), max_concurrency: conc, ..Default::default() },
            )
            .with_listener(listener.clone());
            let resumed = second.resume(&flow, &claimed[0], &Default::default()).await;
            assert_legal(&listener);
            match &resumed {
                Ok(_) => {}
                Err(EngineError::Failed(f)) => prop_assert_eq!(f.state, FlowState::Reverted),
                Err(other) => prop_assert!(false, "resume ended with {}", other),
            }
            let after = memory.get_flow("f").await.unwrap().unwrap();
            prop_assert!(after.flow.state.is_terminal(), "stalled in {}", after.flow.state);
            let ev = listener.atom_transitions();
            let done_before: Vec<&str> = before
                .atoms
                .iter()
                .filter(|a| a.state == AtomState::Success && a.intention == Intention::Execute)
                .map(|a| a.name.as_str())
                .collect();
            if !retry {
                for name in &done_before {
                    let rerun = ev.iter().any(|(a, s)| a == name && *s == AtomState::Running);
                    prop_assert!(!rerun, "{} was stored SUCCESS and ran again", name);
                }
            }
            for (u, v) in &edges {
                let start_v = ev.iter().position(|(a, s)| *a == format!("a{v}") && *s == AtomState::Running);
                if let Some(start_v) = start_v {
                    let u_name = format!("a{u}");
                    let done_u = done_before.contains(&u_name.as_str())
                        || ev[..start_v].iter().any(|(a, s)| *a == u_name && *s == AtomState::Success);
                    prop_assert!(done_u, "a{} started before a{} succeeded", v, u);
                }
            }
            Ok(())
        })?;
    }
}
