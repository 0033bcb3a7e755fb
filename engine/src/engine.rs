//! The `Engine`: records flows in a store and runs them with bounded concurrency.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::compile::CompiledFlow;
use crate::error::{EngineError, Result};
use crate::listener::Listener;
use crate::runner::{Env, Outcome, Run};
use crate::store::{Fence, FlowRecord, FlowStore, NewFlow, now_ms};
use crate::value::Values;

/// How an engine runs flows.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The owner name written on the flows this engine runs (a worker's id).
    pub owner: String,
    /// At most this many atoms of one flow execute or revert at the same time.
    pub max_concurrency: usize,
    /// How long a flow stays owned without a renewal; the engine renews every third of it.
    pub lease: Duration,
    /// The topic of flows created by [`Engine::run`].
    pub topic: String,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            owner: format!("engine-{}", uuid::Uuid::new_v4()),
            max_concurrency: 16,
            lease: Duration::from_secs(30),
            topic: "local".to_owned(),
        }
    }
}

/// What to record for a new flow.
#[derive(Debug, Clone, Default)]
pub struct FlowSpec {
    /// A deterministic id makes the hand-off idempotent; a random one is made otherwise.
    pub id: Option<String>,
    /// The topic whose workers may claim it (the engine's topic by default).
    pub topic: Option<String>,
    /// What the flow works on, for admin views.
    pub subject: Option<String>,
    pub inputs: Values,
}

/// Runs compiled flows, persisting every step in its store. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn FlowStore>,
    opts: Arc<EngineOptions>,
    listeners: Arc<Vec<Arc<dyn Listener>>>,
}

impl Engine {
    /// An engine on `store` with the default options.
    pub fn new(store: Arc<dyn FlowStore>) -> Self {
        Self::with_options(store, EngineOptions::default())
    }

    /// An engine on `store` with `opts`.
    pub fn with_options(store: Arc<dyn FlowStore>, opts: EngineOptions) -> Self {
        Self { store, opts: Arc::new(opts), listeners: Arc::new(Vec::new()) }
    }

    /// Adds a listener that sees every transition.
    pub fn with_listener(mut self, listener: Arc<dyn Listener>) -> Self {
        Arc::make_mut(&mut self.listeners).push(listener);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn FlowStore> {
        &self.store
    }

    /// The options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Records a new flow owned by this engine and runs it to the end. Returns the values
    /// every atom provided, or [`EngineError::Failed`] with the original failure.
    pub async fn run(&self, flow: &CompiledFlow, inputs: Values) -> Result<Values> {
        let spec = FlowSpec { inputs, ..FlowSpec::default() };
        match self.run_spec(flow, spec, &CancellationToken::new()).await? {
            Outcome::Success(v) => Ok(v),
            // Nothing cancels this run, so it cannot be suspended; say so rather than panic.
            Outcome::Suspended => Err(EngineError::Suspended { flow_id: flow.name().to_owned() }),
        }
    }

    /// Records a new flow owned by this engine and runs it until it ends or `cancel`
    /// suspends it. An id that exists already is an error: hand-offs use [`Engine::submit`].
    pub async fn run_spec(
        &self,
        flow: &CompiledFlow,
        spec: FlowSpec,
        cancel: &CancellationToken,
    ) -> Result<Outcome> {
        flow.validate_inputs(&spec.inputs)?;
        let id = spec.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let new = self.new_flow(flow.name(), id, spec, true);
        // The flow is recorded with the run's first step (its RUNNING state and the first
        // atoms' RUNNING), in one write.
        let now = now_ms();
        let record = FlowRecord {
            id: new.id.clone(),
            name: new.name.clone(),
            inputs: new.inputs.clone(),
            state: crate::state::FlowState::Pending,
            owner: Some(self.opts.owner.clone()),
            lease_expires_at: new.owner.as_ref().map(|(_, l)| *l),
            claim_epoch: 1,
            topic: new.topic.clone(),
            subject: new.subject.clone(),
            created_at: now,
            updated_at: now,
        };
        let run = self.run_for(flow, &record, false).creating(new);
        run.drive(&[], cancel).instrument(flow_span(&record)).await
    }

    /// Records a flow as PENDING and unowned, for a worker of its topic to claim. Creating
    /// an id that exists is a no-op; returns the stored flow and whether it was created.
    pub async fn submit(&self, flow_name: &str, spec: FlowSpec) -> Result<(FlowRecord, bool)> {
        let id = spec.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let new = self.new_flow(flow_name, id, spec, false);
        self.store.create_flow(&new).await
    }

    /// Resumes a flow this engine holds (`record` comes from a claim by this engine's
    /// owner): atoms in SUCCESS keep their results, atoms found RUNNING run again and a
    /// flow that was reverting goes on reverting. The run is patient: it waits out a store
    /// that is unavailable, from this first read on, rather than give the flow up.
    pub async fn resume(
        &self,
        flow: &CompiledFlow,
        record: &FlowRecord,
        cancel: &CancellationToken,
    ) -> Result<Outcome> {
        let detail = loop {
            match self.store.get_flow(&record.id).await {
                Err(EngineError::Unavailable(e)) if !cancel.is_cancelled() => {
                    tracing::warn!(flow_id = %record.id, error = %e, "the store is unavailable; the flow waits for it");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => break other?,
            }
        }
        .ok_or_else(|| EngineError::NotFound { flow_id: record.id.clone() })?;
        let mut current = detail.flow;
        // The claim is what we hold; the stored record may be older than our claim only if
        // someone else claimed after us, which the fence will reveal at the first write.
        current.claim_epoch = record.claim_epoch;
        current.owner = record.owner.clone();
        self.run_for(flow, &current, true).drive(&detail.atoms, cancel).instrument(flow_span(&current)).await
    }

    fn new_flow(&self, name: &str, id: String, spec: FlowSpec, owned: bool) -> NewFlow {
        let lease_until = now_ms() + self.opts.lease.as_millis() as i64;
        NewFlow {
            id,
            name: name.to_owned(),
            inputs: spec.inputs,
            topic: spec.topic.unwrap_or_else(|| self.opts.topic.clone()),
            subject: spec.subject,
            owner: owned.then(|| (self.opts.owner.clone(), lease_until)),
        }
    }

    /// A run of `flow`; a `patient` one (a worker's resume of a claimed flow) waits out an
    /// unavailable store rather than give up.
    fn run_for<'a>(&'a self, flow: &'a CompiledFlow, record: &FlowRecord, patient: bool) -> Run<'a> {
        let owner = record.owner.clone().unwrap_or_else(|| self.opts.owner.clone());
        let fence = Fence {
            flow_id: Arc::from(record.id.as_str()),
            owner: Arc::from(owner),
            epoch: record.claim_epoch,
        };
        let env = Env {
            store: &*self.store,
            listeners: &self.listeners,
            max_concurrency: self.opts.max_concurrency.max(1),
            lease: self.opts.lease.max(Duration::from_millis(30)),
            patient,
        };
        Run::new(env, &flow.inner, fence, record.inputs.clone(), record.state)
    }
}

/// The span of one run: every line the run causes (its tasks' too) names the flow. At ERROR
/// level so that whatever filter lets a line through also keeps the span that names its flow.
fn flow_span(record: &FlowRecord) -> tracing::Span {
    tracing::error_span!("flow", flow_id = %record.id, flow = %record.name)
}
