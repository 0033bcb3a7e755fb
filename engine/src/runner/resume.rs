//! Resuming a run from stored atoms: what ran, what was running, what was being reverted.

use std::sync::Arc;
use std::time::Duration;

use super::Run;
use crate::error::Result;
use crate::state::{AtomState, Intention};
use crate::store::AtomRecord;

impl Run<'_> {
    /// Loads stored atoms into the runtime state.
    pub(super) fn restore(&mut self, records: &[AtomRecord]) -> Result<()> {
        let by_name: std::collections::HashMap<&str, u32> =
            self.flow.nodes.iter().enumerate().map(|(i, n)| (n.name.as_ref(), i as u32)).collect();
        let failures = Arc::make_mut(&mut self.failures);
        for rec in records {
            let Some(&i) = by_name.get(rec.name.as_str()) else { continue };
            let rt = &mut self.atoms[i as usize];
            rt.state = Some(rec.state);
            rt.intention = Some(rec.intention);
            rt.attempts = rec.attempts;
            rt.result = rec.result.clone();
            rt.failure = rec.failure.clone();
            rt.revert_failure = rec.revert_failure.clone();
            rt.history = rec.history.clone().map(Arc::new);
            if let Some(f) = &rec.failure {
                failures.insert(self.flow.nodes[i as usize].name.clone(), f.clone());
            }
            if rec.state == AtomState::RevertFailure {
                self.revert_failure = Some(i);
            }
        }
        for i in 0..self.atoms.len() {
            let done = self.flow.pred[i]
                .iter()
                .filter(|&&p| {
                    matches!(self.atoms[p as usize].state(), AtomState::Success | AtomState::Ignore)
                })
                .count();
            self.atoms[i].waiting = (self.flow.pred[i].len() - done) as u32;
        }
        self.first_failure = self.failures.keys().next().and_then(|n| by_name.get(n.as_ref()).copied());
        Ok(())
    }

    /// After a restore: picks up RETRY decisions and revert-all, and queues what to run.
    pub(super) fn resume_queues(&mut self) {
        for r in 0..self.atoms.len() as u32 {
            let rt = &self.atoms[r as usize];
            if rt.intention() == Intention::Retry && rt.state() == AtomState::Success {
                let (a, b) = self.flow.nodes[r as usize].scope;
                let outstanding = (a..b).filter(|&j| self.atoms[j as usize].ran()).count() as u32;
                let rt = &mut self.atoms[r as usize];
                rt.active = true;
                rt.outstanding = outstanding;
            }
        }
        self.revert_all = (0..self.atoms.len() as u32).any(|i| {
            let rt = &self.atoms[i as usize];
            rt.intention() == Intention::Revert
                && rt.state() != AtomState::Pending
                && self.active_retry_of(i).is_none()
        });
        for i in 0..self.atoms.len() as u32 {
            let rt = &self.atoms[i as usize];
            match (rt.state(), rt.intention()) {
                (AtomState::Running, Intention::Execute) if !self.revert_all => self.ready.push_back(i),
                (AtomState::Pending, Intention::Execute) if rt.waiting == 0 && !self.revert_all => {
                    self.ready.push_back(i)
                }
                (AtomState::Retrying, _) => self.timers.push((i, Duration::ZERO)),
                _ => self.try_revert_ready(i),
            }
        }
        for r in 0..self.atoms.len() as u32 {
            if self.atoms[r as usize].active && self.atoms[r as usize].outstanding == 0 {
                let _ = self.complete_retry(r);
            }
        }
    }

    /// The innermost retry carrying out a RETRY decision whose subflow holds `i`.
    pub(super) fn active_retry_of(&self, i: u32) -> Option<u32> {
        let mut r = self.flow.nodes[i as usize].retry;
        while let Some(x) = r {
            if self.atoms[x as usize].active {
                return Some(x);
            }
            r = self.flow.nodes[x as usize].retry;
        }
        None
    }
}
