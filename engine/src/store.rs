//! Persistence: the `FlowStore` trait, its records, and the in-memory backend.
//!
//! Every write names a [`Fence`] (flow id, owner, claim epoch). A store applies a write
//! only while the flow is still held by that owner under that epoch, so a worker that lost
//! its lease to a peer cannot overwrite the peer's progress. Claims bump the epoch with a
//! compare-and-swap, so two claimers have one winner.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::error::{EngineError, Result};
use crate::retry::History;
use crate::state::{AtomKind, FlowState, Intention};
use crate::value::{Failure, Values};

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A stored flow.
#[derive(Debug, Clone)]
pub struct FlowRecord {
    pub id: String,
    /// The flow (and factory) name.
    pub name: String,
    pub inputs: Values,
    pub state: FlowState,
    pub owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    /// Bumped by every claim; writes are fenced by it.
    pub claim_epoch: i64,
    /// Which workers may claim it.
    pub topic: String,
    /// A free-text id of what the flow works on, for admin views; the engine ignores it.
    pub subject: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A stored atom. A missing record means PENDING with intention EXECUTE.
#[derive(Debug, Clone)]
pub struct AtomRecord {
    pub name: String,
    pub kind: AtomKind,
    pub state: crate::AtomState,
    pub intention: Intention,
    pub result: Option<Values>,
    pub failure: Option<Failure>,
    pub revert_failure: Option<Failure>,
    /// Retries only: the attempts so far.
    pub history: Option<History>,
    /// How many times execute was started: more than one means "maybe executed before".
    pub attempts: u32,
    /// How far a running task says it is (see [`FlowStore::record_progress`]).
    pub progress: Option<Progress>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// How far a long task is, in units of its own choosing (bytes, items): `done` of `total`.
/// Informational only: the engine never reads it, and it is written outside the fenced
/// batches, so it costs a running task no step of its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

impl Progress {
    /// `done` as a whole percentage of `total` (100 for an empty total).
    pub fn percent(&self) -> u64 {
        (u128::from(self.done.min(self.total)) * 100)
            .checked_div(u128::from(self.total))
            .map_or(100, |p| p as u64)
    }
}

/// A flow and its atoms.
#[derive(Debug, Clone)]
pub struct FlowDetail {
    pub flow: FlowRecord,
    pub atoms: Vec<AtomRecord>,
}

/// A flow to record.
#[derive(Debug, Clone)]
pub struct NewFlow {
    /// Deterministic ids make creation idempotent: an existing id is left as it is.
    pub id: String,
    pub name: String,
    pub inputs: Values,
    pub topic: String,
    pub subject: Option<String>,
    /// Created already owned (owner, lease expiry), or unowned for a worker to claim.
    pub owner: Option<(String, i64)>,
}

/// The right to write one flow: its id, the owner and the claim epoch it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub flow_id: Arc<str>,
    pub owner: Arc<str>,
    pub epoch: i64,
}

/// The full new state of one atom.
#[derive(Debug, Clone)]
pub struct AtomWrite {
    pub name: Arc<str>,
    pub kind: AtomKind,
    pub state: crate::AtomState,
    pub intention: Intention,
    pub attempts: u32,
    pub result: Option<Values>,
    pub failure: Option<Failure>,
    pub revert_failure: Option<Failure>,
    pub history: Option<Arc<History>>,
}

/// What to do with ownership after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Keep owner and lease.
    Keep,
    /// The flow is finished: clear the lease, keep the owner's name for the record.
    Finish,
    /// Give the flow up (suspended): clear owner and lease so any worker may claim it.
    Release,
}

/// Everything one engine step changes, written in one transaction.
#[derive(Debug, Clone)]
pub struct WriteBatch {
    pub flow_state: Option<FlowState>,
    pub atoms: Vec<AtomWrite>,
    pub ownership: Ownership,
}

/// Which flows a worker claims.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub owner: String,
    /// Claim flows of these topics...
    pub topics: Vec<String>,
    /// ...or of these flow names.
    pub names: Vec<String>,
    pub lease_until: i64,
    pub now: i64,
    /// A flow whose owner's lease lapsed is taken only if it lapsed before this moment:
    /// normally `now`; after the store was out of reach, the moment the outage began, so
    /// that leases which ran out only because no owner could renew them during the outage
    /// stay with their (live) owners.
    pub lapsed_before: i64,
    pub limit: usize,
    /// Takes, instead of unowned and lapsed flows, the unfinished flows of these topics and
    /// names whose owner starts with this prefix but is not `owner`, whatever their lease:
    /// an earlier life of the same worker (`host:role:`) that crashed before its lease ran
    /// out. Only a worker that starts uses it.
    pub reclaim: Option<String>,
}

impl ClaimRequest {
    /// Whether `f` is one this request takes at `self.now`.
    pub fn takes(&self, f: &FlowRecord) -> bool {
        if f.state.is_terminal() || !(self.topics.contains(&f.topic) || self.names.contains(&f.name)) {
            return false;
        }
        match &self.reclaim {
            None => claimable(f, self.lapsed_before.min(self.now)),
            Some(prefix) => {
                f.owner.as_ref().is_some_and(|o| o.starts_with(prefix.as_str()) && *o != self.owner)
            }
        }
    }
}

/// Filters of [`FlowStore::list_flows`]; newest first.
#[derive(Debug, Clone, Default)]
pub struct FlowFilter {
    pub state: Option<FlowState>,
    pub name: Option<String>,
    pub subject: Option<String>,
    pub owner: Option<String>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    pub limit: Option<usize>,
    pub offset: usize,
}

impl FlowFilter {
    /// Whether `f` passes the filter (limit and offset aside).
    pub fn matches(&self, f: &FlowRecord) -> bool {
        self.state.is_none_or(|s| s == f.state)
            && self.name.as_ref().is_none_or(|n| *n == f.name)
            && self.subject.as_ref().is_none_or(|s| Some(s) == f.subject.as_ref())
            && self.owner.as_ref().is_none_or(|o| Some(o) == f.owner.as_ref())
            && self.created_after.is_none_or(|t| f.created_at >= t)
            && self.created_before.is_none_or(|t| f.created_at < t)
    }
}

/// Where flows and atoms are persisted.
#[async_trait]
pub trait FlowStore: Send + Sync + 'static {
    /// Records a flow unless one with its id exists; returns the stored flow and whether
    /// this call created it.
    async fn create_flow(&self, new: &NewFlow) -> Result<(FlowRecord, bool)>;

    /// Applies a batch atomically if `fence` still holds, else fails with `LeaseLost`.
    async fn write(&self, fence: &Fence, batch: WriteBatch) -> Result<()>;

    /// Records a flow owned by its creator (`new.owner` set, so its claim epoch is 1) and
    /// applies its first batch under `fence`, as one write where the store can: a flow run
    /// at once then costs no commit of its own. Returns false, writing nothing, when a flow
    /// with this id exists.
    async fn create_with(&self, new: &NewFlow, fence: &Fence, batch: WriteBatch) -> Result<bool> {
        let (_, created) = self.create_flow(new).await?;
        if created {
            self.write(fence, batch).await?;
        }
        Ok(created)
    }

    /// Takes up to `limit` flows that are unowned or whose lease lapsed.
    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<FlowRecord>>;

    /// Extends the lease; false when the fence no longer holds.
    async fn renew(&self, fence: &Fence, lease_until: i64) -> Result<bool>;

    /// One flow with its atoms.
    async fn get_flow(&self, id: &str) -> Result<Option<FlowDetail>>;

    /// Flows matching `filter`, newest first.
    async fn list_flows(&self, filter: &FlowFilter) -> Result<Vec<FlowRecord>>;

    /// An operator's resume: clears the owner and lease of a flow that has not finished and
    /// bumps its claim epoch, so any worker of its topic claims it at once and a previous
    /// owner still running it is fenced out at its next write. Returns the released flow, or
    /// `None` when it is missing or finished (a compare-and-swap on the state).
    async fn release(&self, id: &str) -> Result<Option<FlowRecord>>;

    /// An operator's revert of a flow that cannot finish: every atom's intention becomes
    /// REVERT (an atom whose revert failed is given another try), the owner and lease are
    /// cleared and the claim epoch bumped, so a worker of its topic claims it and reverts
    /// what ran, in reverse order. A flow in which nothing ran becomes REVERTED at once.
    /// Returns the flow, or `None` when it is missing, succeeded or already reverted.
    async fn request_revert(&self, id: &str) -> Result<Option<FlowRecord>>;

    /// Withdraws a hand-off no worker has claimed yet: a PENDING, unowned flow becomes
    /// REVERTED (a compare-and-swap against a claim). Returns `Some(true)` when withdrawn,
    /// `Some(false)` when a worker took it first (or it ended), `None` when it is missing.
    async fn cancel(&self, id: &str) -> Result<Option<bool>>;

    /// Records how far atom `atom` of flow `flow_id` is, for admin views. Not fenced: a
    /// stale report changes nothing but the figure shown. A missing atom is left alone. The
    /// default keeps nothing (a store without the column).
    async fn record_progress(&self, flow_id: &str, atom: &str, progress: Progress) -> Result<()> {
        let _ = (flow_id, atom, progress);
        Ok(())
    }
}

/// Whether an atom in `state` has run and so needs a revert when its flow is reverted.
pub fn atom_ran(state: crate::AtomState) -> bool {
    use crate::AtomState::*;
    !matches!(state, Pending | Reverted | Ignore)
}

/// Whether a flow in `state` may be reverted by an operator.
pub fn revertible(state: FlowState) -> bool {
    !matches!(state, FlowState::Success | FlowState::Reverted)
}

/// Whether a worker may claim `f` at `now`.
pub fn claimable(f: &FlowRecord, now: i64) -> bool {
    !f.state.is_terminal() && (f.owner.is_none() || f.lease_expires_at.is_some_and(|t| t < now))
}

struct MemFlow {
    record: FlowRecord,
    atoms: HashMap<Arc<str>, AtomRecord>,
    order: Vec<Arc<str>>,
}

/// The in-memory store: the fastest, and gone with the process.
#[derive(Default)]
pub struct MemoryStore {
    flows: Mutex<HashMap<String, MemFlow>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn fenced<'a>(flows: &'a mut HashMap<String, MemFlow>, fence: &Fence) -> Result<&'a mut MemFlow> {
    match flows.get_mut(&*fence.flow_id) {
        Some(f)
            if f.record.owner.as_deref() == Some(&*fence.owner) && f.record.claim_epoch == fence.epoch =>
        {
            Ok(f)
        }
        _ => Err(EngineError::LeaseLost { flow_id: fence.flow_id.to_string() }),
    }
}

fn apply_atom(f: &mut MemFlow, w: AtomWrite, now: i64) {
    let rec = AtomRecord {
        name: String::new(),
        kind: w.kind,
        state: w.state,
        intention: w.intention,
        result: w.result,
        failure: w.failure,
        revert_failure: w.revert_failure,
        history: w.history.map(|h| (*h).clone()),
        attempts: w.attempts,
        progress: None,
        created_at: now,
        updated_at: now,
    };
    match f.atoms.get_mut(&w.name) {
        Some(old) => {
            *old = AtomRecord {
                name: std::mem::take(&mut old.name),
                created_at: old.created_at,
                progress: old.progress,
                ..rec
            }
        }
        None => {
            f.order.push(w.name.clone());
            f.atoms.insert(w.name.clone(), AtomRecord { name: w.name.to_string(), ..rec });
        }
    }
}

#[async_trait]
impl FlowStore for MemoryStore {
    async fn create_flow(&self, new: &NewFlow) -> Result<(FlowRecord, bool)> {
        let mut flows = self.flows.lock();
        if let Some(f) = flows.get(&new.id) {
            return Ok((f.record.clone(), false));
        }
        let now = now_ms();
        let record = FlowRecord {
            id: new.id.clone(),
            name: new.name.clone(),
            inputs: new.inputs.clone(),
            state: FlowState::Pending,
            owner: new.owner.as_ref().map(|(o, _)| o.clone()),
            lease_expires_at: new.owner.as_ref().map(|(_, l)| *l),
            claim_epoch: i64::from(new.owner.is_some()),
            topic: new.topic.clone(),
            subject: new.subject.clone(),
            created_at: now,
            updated_at: now,
        };
        let mem = MemFlow { record: record.clone(), atoms: HashMap::new(), order: Vec::new() };
        flows.insert(new.id.clone(), mem);
        Ok((record, true))
    }

    async fn write(&self, fence: &Fence, batch: WriteBatch) -> Result<()> {
        let now = now_ms();
        let mut flows = self.flows.lock();
        let f = fenced(&mut flows, fence)?;
        if let Some(s) = batch.flow_state {
            f.record.state = s;
        }
        f.record.updated_at = now;
        match batch.ownership {
            Ownership::Keep => {}
            Ownership::Finish => f.record.lease_expires_at = None,
            Ownership::Release => {
                f.record.owner = None;
                f.record.lease_expires_at = None;
            }
        }
        for w in batch.atoms {
            apply_atom(f, w, now);
        }
        Ok(())
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<FlowRecord>> {
        let mut flows = self.flows.lock();
        let mut cands: Vec<&mut MemFlow> = flows.values_mut().filter(|f| req.takes(&f.record)).collect();
        cands.sort_by_key(|f| (f.record.created_at, f.record.id.clone()));
        Ok(cands
            .into_iter()
            .take(req.limit)
            .map(|f| {
                f.record.owner = Some(req.owner.clone());
                f.record.lease_expires_at = Some(req.lease_until);
                f.record.claim_epoch += 1;
                f.record.clone()
            })
            .collect())
    }

    async fn renew(&self, fence: &Fence, lease_until: i64) -> Result<bool> {
        let mut flows = self.flows.lock();
        Ok(match fenced(&mut flows, fence) {
            Ok(f) => {
                f.record.lease_expires_at = Some(lease_until);
                true
            }
            Err(_) => false,
        })
    }

    async fn get_flow(&self, id: &str) -> Result<Option<FlowDetail>> {
        let flows = self.flows.lock();
        Ok(flows.get(id).map(|f| FlowDetail {
            flow: f.record.clone(),
            atoms: f.order.iter().filter_map(|n| f.atoms.get(n).cloned()).collect(),
        }))
    }

    async fn list_flows(&self, filter: &FlowFilter) -> Result<Vec<FlowRecord>> {
        let flows = self.flows.lock();
        let mut out: Vec<FlowRecord> =
            flows.values().filter(|f| filter.matches(&f.record)).map(|f| f.record.clone()).collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(out.into_iter().skip(filter.offset).take(filter.limit.unwrap_or(usize::MAX)).collect())
    }

    async fn release(&self, id: &str) -> Result<Option<FlowRecord>> {
        let mut flows = self.flows.lock();
        Ok(flows.get_mut(id).filter(|f| !f.record.state.is_terminal()).map(|f| {
            f.record.owner = None;
            f.record.lease_expires_at = None;
            f.record.claim_epoch += 1;
            f.record.updated_at = now_ms();
            f.record.clone()
        }))
    }

    async fn record_progress(&self, flow_id: &str, atom: &str, progress: Progress) -> Result<()> {
        let mut flows = self.flows.lock();
        if let Some(a) = flows.get_mut(flow_id).and_then(|f| f.atoms.get_mut(atom)) {
            a.progress = Some(progress);
        }
        Ok(())
    }

    async fn cancel(&self, id: &str) -> Result<Option<bool>> {
        let mut flows = self.flows.lock();
        Ok(flows.get_mut(id).map(|f| {
            let unclaimed = f.record.state == FlowState::Pending && f.record.owner.is_none();
            if unclaimed {
                f.record.state = FlowState::Reverted;
                f.record.updated_at = now_ms();
            }
            unclaimed
        }))
    }

    async fn request_revert(&self, id: &str) -> Result<Option<FlowRecord>> {
        let mut flows = self.flows.lock();
        let now = now_ms();
        Ok(flows.get_mut(id).filter(|f| revertible(f.record.state)).map(|f| {
            let mut ran = false;
            for a in f.atoms.values_mut() {
                ran |= atom_ran(a.state);
                a.intention = Intention::Revert;
                if a.state == crate::AtomState::RevertFailure {
                    a.state = crate::AtomState::Failure;
                }
                a.updated_at = now;
            }
            f.record.state = match f.record.state {
                _ if !ran => FlowState::Reverted,
                FlowState::Failure => FlowState::Running,
                s => s,
            };
            f.record.owner = None;
            f.record.lease_expires_at = None;
            f.record.claim_epoch += 1;
            f.record.updated_at = now;
            f.record.clone()
        }))
    }
}
