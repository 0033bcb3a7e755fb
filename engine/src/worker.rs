//! The worker (taskflow's conductor): claims flows of its topics from the store, rebuilds
//! them through registered factories and runs them under a lease.
//!
//! A hand-off between processes is a PENDING, unowned flow with a deterministic id and a
//! topic. A message only wakes the worker ([`WorkerHandle::wake`]); a periodic sweep
//! claims whatever no message announced, and flows whose owner's lease lapsed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::compile::CompiledFlow;
use crate::engine::{Engine, EngineOptions};
use crate::error::{EngineError, Result};
use crate::flow::Flow;
use crate::listener::Listener;
use crate::runner::Outcome;
use crate::store::{ClaimRequest, FlowRecord, FlowStore, now_ms};
use crate::value::Values;

type Factory = Arc<dyn Fn(&Values) -> Result<Flow> + Send + Sync>;

/// Flow factories by flow name: a stored flow is rebuilt from its name and inputs.
#[derive(Clone, Default)]
pub struct Registry {
    factories: HashMap<String, Factory>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the factory of flow `name`.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        factory: impl Fn(&Values) -> Result<Flow> + Send + Sync + 'static,
    ) {
        self.factories.insert(name.into(), Arc::new(factory));
    }

    /// Builds and compiles flow `name` for `inputs`.
    pub fn build(&self, name: &str, inputs: &Values) -> Result<CompiledFlow> {
        let f = self.factories.get(name).ok_or_else(|| EngineError::UnknownFactory(name.to_owned()))?;
        f(inputs)?.compile()
    }

    /// The registered names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }
}

/// What a worker remembers of the store being out of reach: leases that ran out during an
/// outage ran out because nobody could renew them, not because their owners died, so a
/// worker takes none of them until the store has answered for one whole lease after the
/// outage (each owner renews within a third of one). Leases that had run out before the
/// outage began are fair game at once.
#[derive(Debug, Default)]
struct Outage {
    /// When this worker first failed to reach the store, and when it last failed.
    span: Option<(i64, i64)>,
}

impl Outage {
    fn failed(&mut self, now: i64) {
        let start = self.span.map_or(now, |(start, _)| start);
        self.span = Some((start, now));
    }

    /// The `lapsed_before` of a claim at `now`.
    fn lapsed_before(&mut self, now: i64, lease: Duration) -> i64 {
        match self.span {
            Some((_, last)) if now - last >= lease.as_millis() as i64 => {
                self.span = None;
                now
            }
            Some((start, _)) => start,
            None => now,
        }
    }
}

/// How a worker claims and runs flows.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The engine options; `owner` is this worker's id and `lease` the claim lease.
    pub engine: EngineOptions,
    /// Claim flows of these topics...
    pub topics: Vec<String>,
    /// ...and flows of these names, whatever their topic.
    pub flow_names: Vec<String>,
    /// How often to look for claimable flows without being woken.
    pub sweep_interval: Duration,
    /// At most this many flows at once.
    pub max_flows: usize,
    /// At start, take over at once (without waiting for their leases to lapse) the
    /// unfinished flows of these topics whose owner starts with this prefix: an earlier life
    /// of this worker that died. Owners are `host:role:uuid`, so the prefix is `host:role:`;
    /// two live workers must therefore never share a prefix and a topic.
    pub reclaim_prefix: Option<String>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            engine: EngineOptions::default(),
            topics: vec!["local".to_owned()],
            flow_names: Vec::new(),
            sweep_interval: Duration::from_secs(5),
            max_flows: 64,
            reclaim_prefix: None,
        }
    }
}

/// Wakes a worker so it claims at once.
#[derive(Clone)]
pub struct WorkerHandle {
    wake: Arc<Notify>,
}

impl WorkerHandle {
    /// Makes the worker look for claimable flows now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// What a worker did since it started, for logs and metrics. Counters only grow.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Flows taken over at start from an earlier life of this worker.
    pub reclaimed_at_start: AtomicU64,
    /// Flows claimed by the first sweep at start: hand-offs waiting, and flows whose
    /// owner's lease had lapsed (orphans of a peer).
    pub claimed_at_start: AtomicU64,
    /// Flows claimed since (hand-offs and orphans).
    pub claimed: AtomicU64,
    /// Flows that ended in SUCCESS.
    pub succeeded: AtomicU64,
    /// Flows that ended reverted or failed.
    pub failed: AtomicU64,
    /// Flows suspended by a shutdown.
    pub suspended: AtomicU64,
    /// Runs abandoned because another worker took the flow (or an operator released it),
    /// and claimed flows that could not be rebuilt.
    pub abandoned: AtomicU64,
}

impl WorkerStats {
    /// A snapshot of the counters as (name, value), names in Prometheus style.
    pub fn snapshot(&self) -> [(&'static str, u64); 7] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("flows_reclaimed_at_start", get(&self.reclaimed_at_start)),
            ("flows_claimed_at_start", get(&self.claimed_at_start)),
            ("flows_claimed", get(&self.claimed)),
            ("flows_succeeded", get(&self.succeeded)),
            ("flows_failed", get(&self.failed)),
            ("flows_suspended", get(&self.suspended)),
            ("flows_abandoned", get(&self.abandoned)),
        ]
    }
}

/// Claims and runs flows until shut down.
pub struct Worker {
    engine: Engine,
    registry: Arc<Registry>,
    opts: WorkerOptions,
    wake: Arc<Notify>,
    stats: Arc<WorkerStats>,
}

impl Worker {
    /// A worker on `store` running flows built by `registry`.
    pub fn new(store: Arc<dyn FlowStore>, registry: Registry, opts: WorkerOptions) -> Self {
        let engine = Engine::with_options(store, opts.engine.clone());
        Self {
            engine,
            registry: Arc::new(registry),
            opts,
            wake: Arc::new(Notify::new()),
            stats: Arc::default(),
        }
    }

    /// The worker's counters (shared: they keep counting while the worker runs).
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Adds a listener to the engine that runs the claimed flows.
    pub fn with_listener(mut self, listener: Arc<dyn Listener>) -> Self {
        self.engine = self.engine.with_listener(listener);
        self
    }

    /// A handle to wake the worker.
    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle { wake: self.wake.clone() }
    }

    /// The engine the worker runs flows with.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Claims and runs flows until `shutdown` is cancelled; then suspends the running flows
    /// (their atoms in flight finish), which releases them for any worker to claim.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let mut running: JoinSet<()> = JoinSet::new();
        let owner = &self.opts.engine.owner;
        if let Some(prefix) = &self.opts.reclaim_prefix {
            match self.claim(self.opts.max_flows, Some(prefix.clone()), i64::MAX).await {
                Ok(flows) => {
                    self.stats.reclaimed_at_start.fetch_add(flows.len() as u64, Ordering::Relaxed);
                    if !flows.is_empty() {
                        let ids: Vec<&str> = flows.iter().map(|f| f.id.as_str()).collect();
                        tracing::info!(%owner, topics = ?self.opts.topics, count = flows.len(), flows = ?ids,
                            "resuming the flows an earlier life of this process held");
                    }
                    self.spawn_all(&mut running, flows, &shutdown);
                }
                Err(e) => {
                    tracing::warn!(%owner, error = %e, "reclaiming the flows of an earlier life failed")
                }
            }
        }
        let mut first = true;
        let mut outage = Outage::default();
        loop {
            while running.try_join_next().is_some() {}
            let free = self.opts.max_flows.saturating_sub(running.len());
            if free > 0 {
                let lapsed_before = outage.lapsed_before(now_ms(), self.opts.engine.lease);
                match self.claim(free, None, lapsed_before).await {
                    Ok(flows) => {
                        let n = flows.len() as u64;
                        if first {
                            self.stats.claimed_at_start.fetch_add(n, Ordering::Relaxed);
                            tracing::info!(%owner, topics = ?self.opts.topics, count = n,
                                "claimed the flows waiting at start (hand-offs and orphans of lapsed leases)");
                        } else {
                            self.stats.claimed.fetch_add(n, Ordering::Relaxed);
                        }
                        first = false;
                        self.spawn_all(&mut running, flows, &shutdown);
                    }
                    Err(e) => {
                        outage.failed(now_ms());
                        tracing::warn!(%owner, error = %e, "claiming flows failed")
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.opts.sweep_interval) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        while running.join_next().await.is_some() {}
        Ok(())
    }

    fn spawn_all(&self, running: &mut JoinSet<()>, flows: Vec<FlowRecord>, shutdown: &CancellationToken) {
        for record in flows {
            let (engine, registry, stats) = (self.engine.clone(), self.registry.clone(), self.stats.clone());
            let cancel = shutdown.child_token();
            running.spawn(async move { run_one(engine, registry, record, cancel, &stats).await });
        }
    }

    async fn claim(
        &self,
        limit: usize,
        reclaim: Option<String>,
        lapsed_before: i64,
    ) -> Result<Vec<FlowRecord>> {
        let now = now_ms();
        let req = ClaimRequest {
            lapsed_before,
            owner: self.opts.engine.owner.clone(),
            topics: self.opts.topics.clone(),
            names: self.opts.flow_names.clone(),
            lease_until: now + self.opts.engine.lease.as_millis() as i64,
            now,
            limit,
            reclaim,
        };
        self.engine.store().claim(&req).await
    }
}

async fn run_one(
    engine: Engine,
    registry: Arc<Registry>,
    record: FlowRecord,
    cancel: CancellationToken,
    stats: &WorkerStats,
) {
    let flow = match registry.build(&record.name, &record.inputs) {
        Ok(f) => f,
        Err(e) => {
            // The lease lapses and another worker (perhaps one that knows the name) retries.
            tracing::error!(flow_id = %record.id, flow = %record.name, error = %e, "cannot rebuild a claimed flow");
            stats.abandoned.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let counter = match engine.resume(&flow, &record, &cancel).await {
        Ok(Outcome::Success(_)) => {
            tracing::info!(flow_id = %record.id, flow = %record.name, "flow succeeded");
            &stats.succeeded
        }
        Ok(Outcome::Suspended) => {
            tracing::info!(flow_id = %record.id, flow = %record.name, "flow suspended");
            &stats.suspended
        }
        Err(e @ EngineError::LeaseLost { .. }) => {
            tracing::warn!(flow_id = %record.id, flow = %record.name, error = %e, "flow taken by another worker");
            &stats.abandoned
        }
        Err(e) => {
            tracing::warn!(flow_id = %record.id, flow = %record.name, error = %e, "flow did not succeed");
            &stats.failed
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
}
