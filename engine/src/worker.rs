//! The worker (taskflow's conductor): claims flows of its topics from the store, rebuilds
//! them through registered factories and runs them under a lease.
//!
//! A hand-off between processes is a PENDING, unowned flow with a deterministic id and a
//! topic. A message only wakes the worker ([`WorkerHandle::wake`]); a periodic sweep
//! claims whatever no message announced, and flows whose owner's lease lapsed.

use std::collections::HashMap;
use std::sync::Arc;
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
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            engine: EngineOptions::default(),
            topics: vec!["local".to_owned()],
            flow_names: Vec::new(),
            sweep_interval: Duration::from_secs(5),
            max_flows: 64,
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

/// Claims and runs flows until shut down.
pub struct Worker {
    engine: Engine,
    registry: Arc<Registry>,
    opts: WorkerOptions,
    wake: Arc<Notify>,
}

impl Worker {
    /// A worker on `store` running flows built by `registry`.
    pub fn new(store: Arc<dyn FlowStore>, registry: Registry, opts: WorkerOptions) -> Self {
        let engine = Engine::with_options(store, opts.engine.clone());
        Self { engine, registry: Arc::new(registry), opts, wake: Arc::new(Notify::new()) }
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
        loop {
            while running.try_join_next().is_some() {}
            let free = self.opts.max_flows.saturating_sub(running.len());
            if free > 0 {
                match self.claim(free).await {
                    Ok(flows) => {
                        for record in flows {
                            let (engine, registry) = (self.engine.clone(), self.registry.clone());
                            let cancel = shutdown.child_token();
                            running.spawn(async move { run_one(engine, registry, record, cancel).await });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(owner = %self.opts.engine.owner, error = %e, "claiming flows failed")
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

    async fn claim(&self, limit: usize) -> Result<Vec<FlowRecord>> {
        let now = now_ms();
        let req = ClaimRequest {
            owner: self.opts.engine.owner.clone(),
            topics: self.opts.topics.clone(),
            names: self.opts.flow_names.clone(),
            lease_until: now + self.opts.engine.lease.as_millis() as i64,
            now,
            limit,
        };
        self.engine.store().claim(&req).await
    }
}

async fn run_one(engine: Engine, registry: Arc<Registry>, record: FlowRecord, cancel: CancellationToken) {
    let span = tracing::info_span!("flow", flow_id = %record.id, flow = %record.name);
    let _enter = span.enter();
    let flow = match registry.build(&record.name, &record.inputs) {
        Ok(f) => f,
        Err(e) => {
            // The lease lapses and another worker (perhaps one that knows the name) retries.
            tracing::error!(error = %e, "cannot rebuild a claimed flow");
            return;
        }
    };
    drop(_enter);
    match engine.resume(&flow, &record, &cancel).await {
        Ok(Outcome::Success(_)) => tracing::info!(flow_id = %record.id, "flow succeeded"),
        Ok(Outcome::Suspended) => tracing::info!(flow_id = %record.id, "flow suspended"),
        Err(e) => tracing::warn!(flow_id = %record.id, error = %e, "flow did not succeed"),
    }
}
