//! Failure handling: retry decisions, reverting in reverse dependency order, resetting a
//! retried subflow.

use std::sync::Arc;

use super::Run;
use crate::compile::Work;
use crate::error::Result;
use crate::retry::{Attempt, Decision, History};
use crate::state::{AtomState, Intention};
use crate::value::Failure;

impl Run<'_> {
    pub(super) fn on_failure(&mut self, i: u32, f: Failure) -> Result<()> {
        let name = self.flow.nodes[i as usize].name.clone();
        tracing::info!(flow_id = %self.fence.flow_id, flow = %self.flow_name, atom = %name, failure = %f, "atom failed");
        Arc::make_mut(&mut self.failures).insert(name.clone(), f.clone());
        self.atoms[i as usize].failure = Some(f.clone());
        self.set_state(i, AtomState::Failure)?;
        if self.revert_all || self.atoms[i as usize].intention() == Intention::Revert {
            self.set_intention(i, Intention::Revert)?;
            self.record_in_history(i, &name, &f);
            self.try_revert_ready(i);
            return Ok(());
        }
        let mut r = self.flow.nodes[i as usize].retry;
        while let Some(x) = r {
            let Work::Retry(retry) = &self.flow.nodes[x as usize].work else { break };
            let history = self.add_failure(x, &name, &f);
            match retry.on_failure(&history) {
                Decision::Retry => return self.activate_retry(x),
                Decision::Revert => r = self.flow.nodes[x as usize].retry,
                Decision::RevertAll => break,
            }
        }
        self.first_failure.get_or_insert(i);
        self.start_revert_all()
    }

    /// Adds a failure to a retry's current attempt; returns the history.
    pub(super) fn add_failure(&mut self, r: u32, atom: &Arc<str>, f: &Failure) -> Arc<History> {
        let rt = &mut self.atoms[r as usize];
        let h = Arc::make_mut(rt.history.get_or_insert_with(Default::default));
        if h.is_empty() {
            h.push(Attempt::default());
        }
        if let Some(last) = h.last_mut() {
            last.failures.insert(atom.to_string(), f.clone());
        }
        let h = rt.history.clone().unwrap_or_default();
        self.mark(r);
        h
    }

    pub(super) fn record_in_history(&mut self, i: u32, name: &Arc<str>, f: &Failure) {
        if let Some(r) = self.active_retry_of(i) {
            self.add_failure(r, name, f);
        }
    }

    /// Carries out a RETRY decision: revert the retry's subflow, then run it again.
    pub(super) fn activate_retry(&mut self, r: u32) -> Result<()> {
        self.set_intention(r, Intention::Retry)?;
        let (a, b) = self.flow.nodes[r as usize].scope;
        let mut outstanding = 0;
        for j in a..b {
            let rt = &mut self.atoms[j as usize];
            rt.active = false;
            if rt.ran() {
                outstanding += 1;
                self.set_intention(j, Intention::Revert)?;
            }
        }
        let rt = &mut self.atoms[r as usize];
        rt.active = true;
        rt.outstanding = outstanding;
        for j in a..b {
            self.try_revert_ready(j);
        }
        if outstanding == 0 { self.complete_retry(r) } else { Ok(()) }
    }

    /// The subflow of a retrying controller is reverted: reset it and schedule the retry.
    pub(super) fn complete_retry(&mut self, r: u32) -> Result<()> {
        let (a, b) = self.flow.nodes[r as usize].scope;
        let failures = Arc::make_mut(&mut self.failures);
        for j in a..b {
            failures.remove(&self.flow.nodes[j as usize].name);
        }
        for j in a..b {
            if self.atoms[j as usize].state() == AtomState::Reverted {
                self.set_state(j, AtomState::Pending)?;
            }
            let rt = &mut self.atoms[j as usize];
            rt.result = None;
            rt.failure = None;
            rt.history = None;
            self.set_intention(j, Intention::Execute)?;
        }
        let rt = &mut self.atoms[r as usize];
        rt.active = false;
        self.set_intention(r, Intention::Execute)?;
        self.set_state(r, AtomState::Retrying)?;
        for j in (a - 1)..b {
            self.recount(j);
            for &s in &self.flow.succ[j as usize] {
                self.recount(s);
            }
        }
        let Work::Retry(retry) = &self.flow.nodes[r as usize].work else { return Ok(()) };
        let tries = self.atoms[r as usize].history.as_ref().map_or(0, |h| h.len()) as u32;
        self.timers.push((r, retry.backoff.delay(tries)));
        Ok(())
    }

    pub(super) fn recount(&mut self, j: u32) {
        let done = self.flow.pred[j as usize]
            .iter()
            .filter(|&&p| matches!(self.atoms[p as usize].state(), AtomState::Success | AtomState::Ignore))
            .count();
        self.atoms[j as usize].waiting = (self.flow.pred[j as usize].len() - done) as u32;
    }

    pub(super) fn start_revert_all(&mut self) -> Result<()> {
        self.revert_all = true;
        for j in 0..self.atoms.len() as u32 {
            self.atoms[j as usize].active = false;
            if self.atoms[j as usize].ran() {
                self.set_intention(j, Intention::Revert)?;
            }
        }
        for j in 0..self.atoms.len() as u32 {
            self.try_revert_ready(j);
        }
        Ok(())
    }

    /// Queues `i` for revert when it is due and no successor still needs reverting.
    pub(super) fn try_revert_ready(&mut self, i: u32) {
        let rt = &self.atoms[i as usize];
        let revertable = matches!(
            rt.state(),
            AtomState::Success | AtomState::Failure | AtomState::Running | AtomState::Reverting
        );
        if rt.intention() != Intention::Revert || !revertable || rt.live || rt.queued_revert {
            return;
        }
        let blocked = self.flow.succ[i as usize].iter().any(|&s| {
            let s = &self.atoms[s as usize];
            match s.state() {
                AtomState::Running | AtomState::Reverting | AtomState::RevertFailure => true,
                AtomState::Success | AtomState::Failure => s.intention() != Intention::Execute,
                _ => false,
            }
        });
        if !blocked {
            self.atoms[i as usize].queued_revert = true;
            self.ready_revert.push_back(i);
        }
    }

    pub(super) fn on_reverted(&mut self, i: u32) -> Result<()> {
        self.set_state(i, AtomState::Reverted)?;
        if matches!(self.flow.nodes[i as usize].work, Work::Retry(_)) {
            self.atoms[i as usize].history = None;
        }
        for k in 0..self.flow.pred[i as usize].len() {
            let p = self.flow.pred[i as usize][k];
            self.try_revert_ready(p);
        }
        if let Some(r) = self.active_retry_of(i) {
            let rt = &mut self.atoms[r as usize];
            rt.outstanding = rt.outstanding.saturating_sub(1);
            if rt.outstanding == 0 {
                return self.complete_retry(r);
            }
        }
        Ok(())
    }
}
