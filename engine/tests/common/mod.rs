//! Test tasks that record what they do, and `check_flow`, the data-driven flow check.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;

use ember_engine::{
    AtomSpec, CaptureListener, Context, Engine, EngineError, Failure, Flow, MemoryStore, RevertContext, Task,
    Values, async_trait,
};
use parking_lot::Mutex;

/// A shared log of `"name.execute"` / `"name.revert"` lines.
pub type Log = Arc<Mutex<Vec<String>>>;

/// A task that logs its calls and fails where told.
#[derive(Clone)]
pub struct Probe {
    pub name: String,
    pub requires: Vec<&'static str>,
    pub provides: Vec<&'static str>,
    pub log: Log,
    /// Execute fails on these attempts of this atom (1-based, counted per engine run).
    pub fail_executes: Arc<Mutex<u32>>,
    pub fail_revert: bool,
}

impl Probe {
    pub fn new(name: &str, log: &Log) -> Self {
        Self {
            name: name.to_owned(),
            requires: Vec::new(),
            provides: Vec::new(),
            log: log.clone(),
            fail_executes: Arc::new(Mutex::new(0)),
            fail_revert: false,
        }
    }

    /// Fails the next `n` executes.
    pub fn failing(self, n: u32) -> Self {
        *self.fail_executes.lock() = n;
        self
    }

    pub fn failing_revert(mut self) -> Self {
        self.fail_revert = true;
        self
    }

    pub fn requires(mut self, names: &[&'static str]) -> Self {
        self.requires = names.to_vec();
        self
    }

    pub fn provides(mut self, names: &[&'static str]) -> Self {
        self.provides = names.to_vec();
        self
    }
}

#[async_trait]
impl Task for Probe {
    fn name(&self) -> &str {
        &self.name
    }
    fn requires(&self) -> &[&'static str] {
        &self.requires
    }
    fn provides(&self) -> &[&'static str] {
        &self.provides
    }
    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        self.log.lock().push(format!("{}.execute", self.name));
        tokio::task::yield_now().await;
        {
            let mut left = self.fail_executes.lock();
            if *left > 0 {
                *left -= 1;
                return Err(Failure::new("Boom", format!("{} failed", self.name)));
            }
        }
        let mut out = Values::new();
        for p in &self.provides {
            let key: ember_engine::Key<String> = ember_engine::Key::new(p);
            out.set(&key, format!("{}@{}", p, self.name));
        }
        let _ = ctx;
        Ok(out)
    }
    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        self.log.lock().push(format!("{}.revert", self.name));
        let _ = ctx;
        if self.fail_revert {
            return Err(Failure::new("RevertBoom", format!("{} revert failed", self.name)));
        }
        Ok(())
    }
}

/// A linear flow of probes `t1..tn`; `fail` fails once in execute.
pub fn linear(n: usize, fail: Option<usize>, log: &Log) -> Flow {
    let mut f = Flow::linear("lin");
    for i in 1..=n {
        let p = Probe::new(&format!("t{i}"), log);
        f.push(if Some(i) == fail { p.failing(1) } else { p });
    }
    f
}

/// Runs `flow` on a memory store and checks the exact sequence of calls. Returns the
/// run's result and the listener.
pub async fn check_flow(
    flow: Flow,
    log: &Log,
    expected: &[&str],
) -> (Result<Values, EngineError>, Arc<CaptureListener>) {
    let listener = CaptureListener::new();
    let engine = Engine::new(Arc::new(MemoryStore::new())).with_listener(listener.clone());
    let compiled = flow.compile().expect("the flow compiles");
    let result = engine.run(&compiled, Values::new()).await;
    let got = log.lock().clone();
    assert_eq!(got, expected, "calls differ from the scenario");
    assert_legal(&listener);
    (result, listener)
}

/// Asserts every recorded atom transition is in the table.
pub fn assert_legal(listener: &CaptureListener) {
    for e in listener.events() {
        if let ember_engine::Event::Atom { kind, from, to, atom, .. } = e {
            assert!(ember_engine::can_transition_atom(kind, from, to), "{atom}: illegal {from} -> {to}");
        }
    }
}

/// The atoms named in `log` lines with `suffix`.
pub fn called(log: &Log, suffix: &str) -> HashSet<String> {
    log.lock().iter().filter_map(|l| l.strip_suffix(suffix).map(str::to_owned)).collect()
}

pub fn spec(p: Probe) -> AtomSpec {
    AtomSpec::new(p)
}
