//! Property tests over random DAGs and failure points: edges are respected, every atom that
//! ran is reverted exactly once in reverse order, only legal transitions occur, and
//! retries stop at their limit.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{Log, Probe, assert_legal};
use ember_engine::{
    AtomState, CaptureListener, Engine, EngineOptions, Flow, MemoryStore, Retry, Transitions, Values,
};
use proptest::prelude::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Index of the first event where `atom` entered `state`.
fn index_of(events: &[(String, AtomState)], atom: &str, state: AtomState) -> Option<usize> {
    events.iter().position(|(a, s)| a == atom && *s == state)
}

fn dag() -> impl Strategy<Value = (usize, Vec<(usize, usize)>, Option<usize>, usize)> {
    (2usize..12).prop_flat_map(|n| {
        let pairs: Vec<(usize, usize)> = (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))).collect();
        let edges = proptest::sample::subsequence(pairs.clone(), 0..=pairs.len());
        (Just(n), edges, proptest::option::of(0..n), 1usize..5)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_respect_edges_and_revert_exactly_once((n, edges, fail, conc) in dag()) {
        let log = Log::default();
        let mut flow = Flow::graph("g");
        for i in 0..n {
            let p = Probe::new(&format!("a{i}"), &log);
            flow = flow.add(if Some(i) == fail { p.failing(1) } else { p });
        }
        for (u, v) in &edges {
            flow = flow.link(format!("a{u}"), format!("a{v}"));
        }
        let listener = CaptureListener::new();
        let opts = EngineOptions { max_concurrency: conc, ..Default::default() };
        let engine = Engine::with_options(Arc::new(MemoryStore::new()), opts).with_listener(listener.clone());
        let compiled = flow.compile().unwrap();
        let result = runtime().block_on(engine.run(&compiled, Values::new()));
        assert_legal(&listener);
        let ev = listener.atom_transitions();
        let name = |i: usize| format!("a{i}");
        for (u, v) in &edges {
            if let Some(start_v) = index_of(&ev, &name(*v), AtomState::Running) {
                let done_u = index_of(&ev, &name(*u), AtomState::Success);
                prop_assert!(done_u.is_some_and(|d| d < start_v), "a{v} started before a{u} succeeded");
            }
        }
        let mut reverted: HashMap<String, usize> = HashMap::new();
        for (a, s) in &ev {
            if *s == AtomState::Reverted {
                *reverted.entry(a.clone()).or_default() += 1;
            }
        }
        match fail {
            None => {
                prop_assert!(result.is_ok());
                prop_assert!(reverted.is_empty());
            }
            Some(f) => {
                prop_assert!(result.is_err());
                for i in 0..n {
                    let ran = index_of(&ev, &name(i), AtomState::Running).is_some();
                    let times = reverted.get(&name(i)).copied().unwrap_or(0);
                    prop_assert_eq!(times, usize::from(ran), "a{} ran={} reverted {} times", i, ran, times);
                }
                prop_assert_eq!(reverted.get(&name(f)).copied(), Some(1));
                for (u, v) in &edges {
                    if let (Some(rv), Some(ru)) = (
                        index_of(&ev, &name(*v), AtomState::Reverted),
                        index_of(&ev, &name(*u), AtomState::Reverting),
                    ) {
                        prop_assert!(rv < ru, "a{u} began reverting before its successor a{v} was reverted");
                    }
                }
            }
        }
    }

    #[test]
    fn retries_stop_at_their_limit(attempts in 1u32..5, failures in 0u32..6) {
        let log = Log::default();
        let flow = Flow::linear("f")
            .add(Probe::new("a", &log))
            .add(Flow::linear("s").retry(Retry::times("r", attempts)).add(Probe::new("b", &log).failing(failures)));
        let listener = CaptureListener::new();
        let engine = Engine::new(Arc::new(MemoryStore::new())).with_listener(listener.clone());
        let result = runtime().block_on(engine.run(&flow.compile().unwrap(), Values::new()));
        assert_legal(&listener);
        let runs = log.lock().iter().filter(|l| *l == "b.execute").count() as u32;
        prop_assert_eq!(runs, (failures + 1).min(attempts));
        prop_assert_eq!(result.is_ok(), failures < attempts);
        let a_reverts = log.lock().iter().filter(|l| *l == "a.revert").count();
        prop_assert_eq!(a_reverts, usize::from(failures >= attempts));
    }

    #[test]
    fn retried_random_dags_undo_every_failed_attempt(
        (n, edges, fail, conc) in dag(),
        attempts in 1u32..4,
        failures in 0u32..4,
    ) {
        let log = Log::default();
        let mut flow = Flow::graph("g").retry(Retry::times("r", attempts));
        let failing = fail.unwrap_or(0);
        for i in 0..n {
            let p = Probe::new(&format!("a{i}"), &log);
            flow = flow.add(if i == failing { p.failing(failures) } else { p });
        }
        for (u, v) in &edges {
            flow = flow.link(format!("a{u}"), format!("a{v}"));
        }
        let listener = CaptureListener::new();
        let opts = EngineOptions { max_concurrency: conc, ..Default::default() };
        let engine = Engine::with_options(Arc::new(MemoryStore::new()), opts).with_listener(listener.clone());
        let result = runtime().block_on(engine.run(&flow.compile().unwrap(), Values::new()));
        assert_legal(&listener);
        prop_assert_eq!(result.is_ok(), failures < attempts);
        let calls = log.lock().clone();
        let count = |s: String| calls.iter().filter(|c| **c == s).count();
        prop_assert_eq!(count(format!("a{failing}.execute")) as u32, (failures + 1).min(attempts));
        for i in 0..n {
            let (ex, rv) = (count(format!("a{i}.execute")), count(format!("a{i}.revert")));
            let left = if result.is_ok() { 1 } else { 0 };
            prop_assert_eq!(ex - rv.min(ex), left, "a{}: {} executes, {} reverts", i, ex, rv);
            prop_assert!(rv <= ex);
        }
    }

    #[test]
    fn nested_retries_multiply_their_attempts(outer in 1u32..4, inner in 1u32..4, failures in 0u32..12) {
        let log = Log::default();
        let sub = Flow::linear("in").retry(Retry::times("r_in", inner)).add(Probe::new("y", &log).failing(failures));
        let flow = Flow::linear("out").retry(Retry::times("r_out", outer)).add(Probe::new("x", &log)).add(sub);
        let listener = CaptureListener::new();
        let engine = Engine::new(Arc::new(MemoryStore::new())).with_listener(listener.clone());
        let result = runtime().block_on(engine.run(&flow.compile().unwrap(), Values::new()));
        assert_legal(&listener);
        let runs = (failures + 1).min(outer * inner);
        let count = |s: &str| log.lock().iter().filter(|c| *c == s).count() as u32;
        prop_assert_eq!(result.is_ok(), failures < outer * inner);
        prop_assert_eq!(count("y.execute"), runs);
        prop_assert_eq!(count("x.execute"), runs.div_ceil(inner));
        prop_assert_eq!(count("x.revert") + u32::from(result.is_ok()), count("x.execute"));
    }

    #[test]
    fn random_state_sequences_follow_the_table(steps in proptest::collection::vec(0usize..9, 1..30)) {
        // Drive random events through the table: a legal path never reaches a state from
        // which the table allows nothing but an illegal move.
        let mut s = AtomState::Pending;
        for k in steps {
            let to = AtomState::ALL[k];
            if s.can_transition(to) {
                s = to;
            }
        }
        prop_assert!(AtomState::ALL.contains(&s));
        prop_assert!(s != AtomState::Retrying, "a task never reaches RETRYING");
    }
}
