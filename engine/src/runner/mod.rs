//! One run of a compiled flow: readiness by in-degree counters, bounded concurrency,
//! failure handling (retry scopes, revert-all), and one store write per step.

mod resume;
mod revert;

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::compile::{Inner, Work};
use crate::error::{EngineError, Result};
use crate::failpoint;
use crate::listener::{Event, Listener};
use crate::retry::{Attempt, History};
use crate::state::{AtomState, FlowState, Intention, Transitions, can_transition_atom};
use crate::store::{AtomRecord, AtomWrite, Fence, FlowStore, NewFlow, Ownership, WriteBatch, now_ms};
use crate::task::{Context, RevertContext, Task};
use crate::value::{Failure, Values};

/// How a run ended when it did not fail.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every atom succeeded; the values every atom provided.
    Success(Values),
    /// Stopped on request (shutdown); a worker resumes it later.
    Suspended,
}

/// The runtime state of one atom.
#[derive(Default)]
struct Rt {
    state: Option<AtomState>,
    intention: Option<Intention>,
    attempts: u32,
    result: Option<Values>,
    failure: Option<Failure>,
    revert_failure: Option<Failure>,
    history: Option<Arc<History>>,
    /// Predecessors not yet in SUCCESS.
    waiting: u32,
    /// A future for it is in flight.
    live: bool,
    dirty: bool,
    queued_revert: bool,
    /// Retries: a RETRY decision is being carried out, with this many atoms left to revert.
    active: bool,
    outstanding: u32,
}

impl Rt {
    fn state(&self) -> AtomState {
        self.state.unwrap_or(AtomState::Pending)
    }
    fn intention(&self) -> Intention {
        self.intention.unwrap_or(Intention::Execute)
    }
    fn ran(&self) -> bool {
        use AtomState::*;
        matches!(self.state(), Running | Success | Failure | Reverting)
    }
}

enum Done {
    Exec(u32, Result<Values, Failure>),
    Revert(u32, Result<(), Failure>),
    Timer(u32),
    /// An atom whose execute or revert met an unavailable dependency may run again.
    Again(u32, Phase),
}

/// Which half of an atom runs again after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Execute,
    Revert,
}

/// How long a patient run waits before it runs again an atom that met an unavailable
/// dependency, and the longest it waits between two tries of a store write.
const TRANSIENT_DELAY: Duration = Duration::from_secs(1);

/// Shared parts of an engine that a run borrows.
pub(crate) struct Env<'a> {
    pub store: &'a dyn FlowStore,
    pub listeners: &'a [Arc<dyn Listener>],
    pub max_concurrency: usize,
    pub lease: Duration,
    /// A worker's run waits out an unavailable store (and atoms whose failure is
    /// transient) instead of giving up: its flow pauses and goes on when the store is back.
    /// A run inline in a request gives up at once, so the request fails quickly.
    pub patient: bool,
}

pub(crate) struct Run<'a> {
    env: Env<'a>,
    flow: &'a Inner,
    fence: Fence,
    flow_name: Arc<str>,
    inputs: Values,
    atoms: Vec<Rt>,
    dirty: Vec<u32>,
    flow_state: FlowState,
    flow_state_dirty: bool,
    ready: VecDeque<u32>,
    ready_revert: VecDeque<u32>,
    timers: Vec<(u32, Duration)>,
    /// Atoms to run again after [`TRANSIENT_DELAY`] (patient runs).
    again: Vec<(u32, Phase)>,
    /// The run's cancellation (shutdown): a patient write stops waiting when it fires.
    cancel: CancellationToken,
    /// Retry delays in flight: a suspension does not wait for them.
    pending_timers: usize,
    in_flight: usize,
    revert_all: bool,
    stopping: bool,
    first_failure: Option<u32>,
    revert_failure: Option<u32>,
    failures: Arc<BTreeMap<Arc<str>, Failure>>,
    /// A flow not stored yet: the first write records it (`FlowStore::create_with`).
    create: Option<NewFlow>,
}

impl<'a> Run<'a> {
    pub(crate) fn new(env: Env<'a>, flow: &'a Inner, fence: Fence, inputs: Values, state: FlowState) -> Self {
        let n = flow.nodes.len();
        let mut atoms: Vec<Rt> = (0..n).map(|_| Rt::default()).collect();
        for (i, rt) in atoms.iter_mut().enumerate() {
            rt.waiting = flow.pred[i].len() as u32;
        }
        Self {
            env,
            flow,
            fence,
            flow_name: Arc::from(flow.name.as_str()),
            inputs,
            atoms,
            dirty: Vec::new(),
            flow_state: state,
            flow_state_dirty: false,
            ready: VecDeque::new(),
            ready_revert: VecDeque::new(),
            timers: Vec::new(),
            again: Vec::new(),
            cancel: CancellationToken::new(),
            pending_timers: 0,
            in_flight: 0,
            revert_all: false,
            stopping: false,
            first_failure: None,
            revert_failure: None,
            failures: Arc::default(),
            create: None,
        }
    }

    /// Records `new` with the first write instead of before the run.
    pub(crate) fn creating(mut self, new: NewFlow) -> Self {
        self.create = Some(new);
        self
    }

    /// Runs to the end (or to a suspension).
    pub(crate) async fn drive(
        mut self,
        records: &[AtomRecord],
        cancel: &CancellationToken,
    ) -> Result<Outcome> {
        if self.flow_state.is_terminal() {
            self.restore(records)?;
            return self.outcome();
        }
        self.cancel = cancel.clone();
        self.set_flow_state(FlowState::Running)?;
        if records.is_empty() {
            self.ready.extend((0..self.atoms.len() as u32).filter(|&i| self.atoms[i as usize].waiting == 0));
        } else {
            self.restore(records)?;
            self.resume_queues();
        }
        let mut running: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
        let period = self.env.lease / 3;
        let renew = tokio::time::sleep(period);
        tokio::pin!(renew);
        let mut starts = Vec::new();
        loop {
            self.start_ready(&mut starts)?;
            self.flush(Ownership::Keep).await?;
            for s in starts.drain(..) {
                running.push(s);
            }
            for (r, delay) in self.timers.drain(..) {
                self.pending_timers += 1;
                running.push(Box::pin(async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Done::Timer(r)
                }));
            }
            for (i, phase) in self.again.drain(..) {
                self.pending_timers += 1;
                running.push(Box::pin(async move {
                    tokio::time::sleep(TRANSIENT_DELAY).await;
                    Done::Again(i, phase)
                }));
            }
            if running.is_empty() || (self.stopping && running.len() == self.pending_timers) {
                break;
            }
            tokio::select! {
                biased;
                done = running.next() => {
                    if let Some(d) = done {
                        self.on_done(d)?;
                    }
                    while let Some(Some(d)) = running.next().now_or_never() {
                        self.on_done(d)?;
                    }
                }
                () = &mut renew => {
                    let until = now_ms() + self.env.lease.as_millis() as i64;
                    let next = match self.env.store.renew(&self.fence, until).await {
                        Ok(true) => period,
                        Ok(false) => {
                            tracing::warn!(flow_id = %self.fence.flow_id, flow = %self.flow_name,
                                "lease lost to another worker; abandoning the run");
                            return Err(EngineError::LeaseLost { flow_id: self.fence.flow_id.to_string() });
                        }
                        // Nobody can take the flow while nobody reaches the store; renew
                        // as soon as it answers (peers wait a lease after an outage).
                        Err(EngineError::Unavailable(e)) if self.env.patient => {
                            tracing::warn!(flow_id = %self.fence.flow_id, flow = %self.flow_name, error = %e,
                                "cannot renew the lease: the store is unavailable; trying again");
                            period.min(TRANSIENT_DELAY)
                        }
                        Err(e) => return Err(e),
                    };
                    renew.as_mut().reset(tokio::time::Instant::now() + next);
                }
                () = cancel.cancelled(), if !self.stopping => self.stopping = true,
            }
        }
        self.finish().await
    }

    fn mark(&mut self, i: u32) {
        let rt = &mut self.atoms[i as usize];
        if !rt.dirty {
            rt.dirty = true;
            self.dirty.push(i);
        }
    }

    fn set_state(&mut self, i: u32, to: AtomState) -> Result<()> {
        let node = &self.flow.nodes[i as usize];
        let rt = &mut self.atoms[i as usize];
        let from = rt.state();
        if !can_transition_atom(node.kind(), from, to) {
            return Err(EngineError::IllegalAtomTransition {
                flow: self.flow.name.clone(),
                atom: node.name.to_string(),
                from,
                to,
            });
        }
        rt.state = Some(to);
        let (intention, attempt) = (rt.intention(), rt.attempts);
        self.mark(i);
        tracing::debug!(flow_id = %self.fence.flow_id, flow = %self.flow_name, atom = %node.name,
            %from, %to, %intention, attempt, "atom transition");
        if !self.env.listeners.is_empty() {
            let ev = Event::Atom {
                flow_id: self.fence.flow_id.clone(),
                flow: self.flow_name.clone(),
                atom: node.name.clone(),
                kind: node.kind(),
                from,
                to,
                intention,
                attempt,
            };
            self.env.listeners.iter().for_each(|l| l.on_event(&ev));
        }
        Ok(())
    }

    fn set_intention(&mut self, i: u32, to: Intention) -> Result<()> {
        let rt = &mut self.atoms[i as usize];
        let from = rt.intention();
        if from == to {
            return Ok(());
        }
        if !from.can_transition(to) {
            return Err(EngineError::IllegalIntention {
                flow: self.flow.name.clone(),
                atom: self.flow.nodes[i as usize].name.to_string(),
                from,
                to,
            });
        }
        rt.intention = Some(to);
        self.mark(i);
        Ok(())
    }

    fn set_flow_state(&mut self, to: FlowState) -> Result<()> {
        let from = self.flow_state;
        if !from.can_transition(to) {
            return Err(EngineError::IllegalFlowTransition { flow: self.flow.name.clone(), from, to });
        }
        if from == to {
            return Ok(());
        }
        self.flow_state = to;
        self.flow_state_dirty = true;
        tracing::debug!(flow_id = %self.fence.flow_id, flow = %self.flow_name, %from, %to, "flow transition");
        if !self.env.listeners.is_empty() {
            let ev =
                Event::Flow { flow_id: self.fence.flow_id.clone(), flow: self.flow_name.clone(), from, to };
            self.env.listeners.iter().for_each(|l| l.on_event(&ev));
        }
        Ok(())
    }

    /// Writes everything changed since the last write in one batch.
    async fn flush(&mut self, ownership: Ownership) -> Result<()> {
        if self.dirty.is_empty() && !self.flow_state_dirty && ownership == Ownership::Keep {
            return Ok(());
        }
        let mut atoms = Vec::with_capacity(self.dirty.len());
        for i in self.dirty.drain(..) {
            let rt = &mut self.atoms[i as usize];
            rt.dirty = false;
            let node = &self.flow.nodes[i as usize];
            atoms.push(AtomWrite {
                name: node.name.clone(),
                kind: node.kind(),
                state: rt.state(),
                intention: rt.intention(),
                attempts: rt.attempts,
                result: rt.result.clone(),
                failure: rt.failure.clone(),
                revert_failure: rt.revert_failure.clone(),
                history: rt.history.clone(),
            });
        }
        let flow_state = self.flow_state_dirty.then_some(self.flow_state);
        self.flow_state_dirty = false;
        let batch = WriteBatch { flow_state, atoms, ownership };
        match self.create.take() {
            None if self.env.patient => self.write_patiently(batch).await,
            None => self.env.store.write(&self.fence, batch).await,
            Some(new) => match self.env.store.create_with(&new, &self.fence, batch).await? {
                true => Ok(()),
                false => Err(EngineError::AlreadyExists { flow_id: new.id }),
            },
        }
    }

    /// Writes `batch`, trying again while the store is unavailable (backing off to
    /// [`TRANSIENT_DELAY`]): the run pauses where it is and goes on when the store is back.
    /// A write is fenced and idempotent, so one that was applied before its answer was
    /// lost does no harm when repeated.
    async fn write_patiently(&self, batch: WriteBatch) -> Result<()> {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.env.store.write(&self.fence, batch.clone()).await {
                // A process shutting down does not wait: the flow keeps its lease, which
                // lapses for the next life (or a peer) to take it.
                Err(EngineError::Unavailable(e)) if !self.cancel.is_cancelled() => {
                    tracing::warn!(flow_id = %self.fence.flow_id, flow = %self.flow_name, error = %e,
                        "the store is unavailable; the flow waits for it");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(TRANSIENT_DELAY);
                }
                other => return other,
            }
        }
    }

    /// Starts ready atoms up to the concurrency bound.
    fn start_ready(&mut self, starts: &mut Vec<BoxFuture<'static, Done>>) -> Result<()> {
        while self.in_flight < self.env.max_concurrency && !self.stopping && self.revert_failure.is_none() {
            if let Some(i) = self.ready_revert.pop_front() {
                starts.push(self.start_revert(i)?);
                continue;
            }
            if self.revert_all {
                break;
            }
            let Some(i) = self.ready.pop_front() else { break };
            let rt = &self.atoms[i as usize];
            // Entries can be stale: the atom may have been started, or a retry may have
            // decided to revert its subflow (and reset it) since the atom was queued.
            let startable = (matches!(rt.state(), AtomState::Pending | AtomState::Retrying)
                && rt.waiting == 0)
                || (rt.state() == AtomState::Running && !rt.live);
            if !startable || rt.intention() != Intention::Execute || self.active_retry_of(i).is_some() {
                continue;
            }
            let flow = self.flow;
            match &flow.nodes[i as usize].work {
                Work::Task(task) => starts.push(self.start_exec(i, task.clone())?),
                Work::Retry(_) => self.run_retry(i)?,
            }
        }
        Ok(())
    }

    /// The arguments of atom `i`: injected, then flow inputs, then the producer's result.
    fn args(&self, i: u32) -> Values {
        let mut args = Values::new();
        for arg in &self.flow.nodes[i as usize].args {
            let slot = arg.inject.clone().or_else(|| self.inputs.slot(&arg.symbol).cloned()).or_else(|| {
                let p = &self.atoms[arg.producer? as usize];
                p.result.as_ref()?.slot(&arg.symbol).cloned()
            });
            if let Some(slot) = slot {
                args.insert_slot(std::borrow::Cow::Borrowed(arg.param), slot);
            }
        }
        args
    }

    fn context(&self, i: u32) -> Context {
        Context {
            flow_id: self.fence.flow_id.clone(),
            atom: self.flow.nodes[i as usize].name.clone(),
            attempt: self.atoms[i as usize].attempts,
            args: self.args(i),
        }
    }

    fn start_exec(&mut self, i: u32, task: Arc<dyn Task>) -> Result<BoxFuture<'static, Done>> {
        self.atoms[i as usize].attempts += 1;
        self.set_state(i, AtomState::Running)?;
        self.mark(i);
        self.atoms[i as usize].live = true;
        self.in_flight += 1;
        let ctx = self.context(i);
        let flow = self.flow_name.clone();
        Ok(Box::pin(async move {
            // Polled only after the RUNNING state is stored; the result is stored after it.
            let run = async {
                failpoint::hit(|| format!("{flow}.{}.before", ctx.atom));
                let r = task.execute(&ctx).await;
                failpoint::hit(|| format!("{flow}.{}.after", ctx.atom));
                r
            };
            let r = AssertUnwindSafe(run).catch_unwind().await;
            Done::Exec(i, r.unwrap_or_else(|p| Err(panic_failure(p))))
        }))
    }

    fn start_revert(&mut self, i: u32) -> Result<BoxFuture<'static, Done>> {
        self.atoms[i as usize].queued_revert = false;
        self.set_state(i, AtomState::Reverting)?;
        self.atoms[i as usize].live = true;
        self.in_flight += 1;
        let rt = &self.atoms[i as usize];
        let task = match &self.flow.nodes[i as usize].work {
            Work::Task(t) => Some(t.clone()),
            Work::Retry(_) => None,
        };
        let ctx = RevertContext {
            ctx: self.context(i),
            result: rt.result.clone(),
            failure: rt.failure.clone(),
            flow_failures: self.failures.clone(),
        };
        let flow = self.flow_name.clone();
        Ok(Box::pin(async move {
            let r = match task {
                Some(t) => AssertUnwindSafe(async {
                    failpoint::hit(|| format!("{flow}.{}.revert", ctx.ctx.atom));
                    t.revert(&ctx).await
                })
                .catch_unwind()
                .await
                .unwrap_or_else(|p| Err(panic_failure(p))),
                None => Ok(()),
            };
            Done::Revert(i, r)
        }))
    }

    /// A retry controller's execute: it provides the value of the next attempt.
    fn run_retry(&mut self, r: u32) -> Result<()> {
        let Work::Retry(retry) = &self.flow.nodes[r as usize].work else { return Ok(()) };
        let history = self.atoms[r as usize].history.clone().unwrap_or_default();
        self.atoms[r as usize].attempts += 1;
        self.set_state(r, AtomState::Running)?;
        match retry.next_value(&history) {
            Some((values, json)) => {
                let mut h = (*history).clone();
                h.push(Attempt { value: Some(json), failures: BTreeMap::new() });
                let rt = &mut self.atoms[r as usize];
                rt.history = Some(Arc::new(h));
                rt.result = Some(values);
                self.on_success(r)
            }
            None => {
                let f = Failure::new("RetryExhausted", format!("retry {:?} has no value left", retry.name()));
                self.on_failure(r, f)
            }
        }
    }

    fn on_done(&mut self, done: Done) -> Result<()> {
        match done {
            Done::Exec(i, res) => {
                self.in_flight -= 1;
                self.atoms[i as usize].live = false;
                match res {
                    Ok(values) => {
                        self.atoms[i as usize].result = Some(values);
                        self.on_success(i)
                    }
                    Err(f) if f.is_transient() => self.wait_out(i, Phase::Execute, &f),
                    Err(f) => self.on_failure(i, f),
                }
            }
            Done::Revert(i, res) => {
                self.in_flight -= 1;
                self.atoms[i as usize].live = false;
                match res {
                    Ok(()) => self.on_reverted(i),
                    Err(f) if f.is_transient() => self.wait_out(i, Phase::Revert, &f),
                    Err(f) => {
                        self.atoms[i as usize].revert_failure = Some(f);
                        self.set_state(i, AtomState::RevertFailure)?;
                        self.revert_failure.get_or_insert(i);
                        Ok(())
                    }
                }
            }
            Done::Timer(r) => {
                self.pending_timers -= 1;
                self.ready.push_front(r);
                Ok(())
            }
            Done::Again(i, phase) => {
                self.pending_timers -= 1;
                match phase {
                    // Still RUNNING and not live: `start_ready` runs it again.
                    Phase::Execute => self.ready.push_front(i),
                    Phase::Revert => {
                        self.atoms[i as usize].queued_revert = true;
                        self.ready_revert.push_front(i);
                    }
                }
                Ok(())
            }
        }
    }

    /// Keeps atom `i` in its state (RUNNING or REVERTING): its failure said a dependency is
    /// unavailable for now, which is no reason to revert (or fail) the flow. A patient run
    /// runs it again after [`TRANSIENT_DELAY`]; a run inline in a request gives up at once
    /// (`EngineError::Unavailable`), as a crash would leave it: the flow keeps its lease,
    /// and a worker takes it over when the lease lapses and carries it on.
    fn wait_out(&mut self, i: u32, phase: Phase, f: &Failure) -> Result<()> {
        tracing::warn!(flow_id = %self.fence.flow_id, flow = %self.flow_name,
            atom = %self.flow.nodes[i as usize].name, failure = %f, ?phase, patient = self.env.patient,
            "atom met an unavailable dependency");
        if !self.env.patient {
            return Err(EngineError::Unavailable(f.message.clone()));
        }
        self.again.push((i, phase));
        Ok(())
    }

    fn on_success(&mut self, i: u32) -> Result<()> {
        self.set_state(i, AtomState::Success)?;
        if self.atoms[i as usize].intention() != Intention::Execute {
            self.try_revert_ready(i);
            return Ok(());
        }
        for &s in &self.flow.succ[i as usize] {
            let rt = &mut self.atoms[s as usize];
            rt.waiting = rt.waiting.saturating_sub(1);
            if rt.waiting == 0 && rt.state() == AtomState::Pending {
                self.ready.push_back(s);
            }
        }
        Ok(())
    }

    /// The end: the final state, written with the last atom changes in one batch.
    async fn finish(mut self) -> Result<Outcome> {
        let all_done = self.atoms.iter().all(|a| matches!(a.state(), AtomState::Success | AtomState::Ignore));
        let to = if self.revert_failure.is_some() {
            FlowState::Failure
        } else if all_done {
            FlowState::Success
        } else if self.stopping {
            FlowState::Suspended
        } else if self.revert_all {
            FlowState::Reverted
        } else {
            // Nothing runs and nothing is ready, yet atoms are unfinished: a bug of the
            // engine. End the flow visibly rather than hang.
            tracing::error!(flow_id = %self.fence.flow_id, flow = %self.flow_name, "flow stalled with unfinished atoms");
            FlowState::Failure
        };
        self.set_flow_state(to)?;
        let ownership = if to == FlowState::Suspended { Ownership::Release } else { Ownership::Finish };
        self.flush(ownership).await?;
        // Only now does a reader of the store see the end, so only now is it announced to
        // those who wait on it (the transition event above came before the write).
        if to.is_terminal() {
            self.env.listeners.iter().for_each(|l| l.on_flow_stored(&self.fence.flow_id, to));
        }
        self.outcome()
    }

    fn outcome(&self) -> Result<Outcome> {
        match self.flow_state {
            FlowState::Success => {
                let mut out = Values::new();
                for a in &self.atoms {
                    if let Some(r) = &a.result {
                        out.extend_from(r);
                    }
                }
                Ok(Outcome::Success(out))
            }
            FlowState::Failure | FlowState::Reverted => Err(self.failed_error()),
            _ => Ok(Outcome::Suspended),
        }
    }

    fn failed_error(&self) -> EngineError {
        let name = |i: u32| self.flow.nodes[i as usize].name.to_string();
        let first = self.first_failure.or(self.revert_failure);
        let (atom, failure) = match first {
            Some(i) => {
                let f = self.atoms[i as usize].failure.clone();
                (name(i), f.unwrap_or_else(|| Failure::new("Unknown", "the failure was not recorded")))
            }
            None => (String::new(), Failure::new("Unknown", "the flow ended without a recorded failure")),
        };
        EngineError::Failed(Box::new(crate::error::FlowFailed {
            flow_id: self.fence.flow_id.to_string(),
            flow: self.flow.name.clone(),
            state: self.flow_state,
            atom,
            failure,
            revert_failure: self.revert_failure.map(|i| {
                (
                    name(i),
                    self.atoms[i as usize]
                        .revert_failure
                        .clone()
                        .unwrap_or_else(|| Failure::new("Unknown", "")),
                )
            }),
        }))
    }
}

fn panic_failure(p: Box<dyn std::any::Any + Send>) -> Failure {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a task panicked".to_owned());
    Failure::new("Panic", msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Flow;
    use crate::store::MemoryStore;

    struct Nop;

    #[async_trait::async_trait]
    impl Task for Nop {
        fn name(&self) -> &str {
            "nop"
        }
        async fn execute(&self, _ctx: &Context) -> Result<Values, Failure> {
            Ok(Values::new())
        }
    }

    #[test]
    fn the_runner_refuses_an_illegal_transition() {
        let flow = Flow::linear("f").add(Nop).compile().unwrap();
        let store = MemoryStore::new();
        let env = Env {
            store: &store,
            listeners: &[],
            max_concurrency: 1,
            lease: Duration::from_secs(1),
            patient: false,
        };
        let fence = Fence { flow_id: Arc::from("x"), owner: Arc::from("o"), epoch: 1 };
        let mut run = Run::new(env, &flow.inner, fence, Values::new(), FlowState::Pending);
        let err = run.set_state(0, AtomState::Reverted).unwrap_err();
        assert!(matches!(err, EngineError::IllegalAtomTransition { from: AtomState::Pending, .. }), "{err}");
        assert!(run.set_intention(0, Intention::Revert).is_ok());
        assert!(matches!(run.set_intention(0, Intention::Retry), Err(EngineError::IllegalIntention { .. })));
        assert!(matches!(
            run.set_flow_state(FlowState::Success),
            Err(EngineError::IllegalFlowTransition { .. })
        ));
    }
}
