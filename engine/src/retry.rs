//! Retry controllers: scoped to a subflow, they decide what a failure inside it leads to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::value::{Failure, Name, Slot, Values};

/// What a retry controller decides after a failure in its subflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Revert the subflow, then run it again.
    Retry,
    /// Revert the subflow and the retry, and let the enclosing retry decide (the whole flow
    /// is reverted when there is none): taskflow's `defer_reverts`, always on.
    Revert,
    /// Revert the whole flow, whatever enclosing retries would say.
    RevertAll,
}

/// The delay before a subflow is run again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    None,
    Fixed(Duration),
    /// `base * 2^(attempt-1)`, at most `max`, then a random part of up to `jitter` (0..=1)
    /// of it is taken off so that many flows do not retry in step.
    Exponential {
        base: Duration,
        max: Duration,
        jitter: f64,
    },
}

impl Backoff {
    /// The delay before attempt `attempt + 1`, after `attempt` failed ones.
    pub fn delay(&self, attempt: u32) -> Duration {
        match *self {
            Backoff::None => Duration::ZERO,
            Backoff::Fixed(d) => d,
            Backoff::Exponential { base, max, jitter } => {
                let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max);
                let cut = jitter.clamp(0.0, 1.0) * rand::random::<f64>();
                exp.mul_f64(1.0 - cut)
            }
        }
    }
}

/// One attempt of a retried subflow: the value the retry provided and what failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub value: Option<Json>,
    pub failures: BTreeMap<String, Failure>,
}

/// The attempts so far.
pub type History = Vec<Attempt>;

#[derive(Clone)]
pub(crate) enum Strategy {
    Times(u32),
    ForEach(Arc<[Json]>),
}

/// A retry controller attached to a flow with [`crate::Flow::retry`].
#[derive(Clone)]
pub struct Retry {
    pub(crate) name: String,
    pub(crate) strategy: Strategy,
    pub(crate) backoff: Backoff,
    pub(crate) provides: Option<Name>,
    pub(crate) revert_all: bool,
}

impl Retry {
    /// Runs the subflow at most `attempts` times in all (taskflow's `Times`). It provides
    /// the attempt number (1, 2, ...) under the key given to [`Retry::provides`].
    pub fn times(name: impl Into<String>, attempts: u32) -> Self {
        Self {
            name: name.into(),
            strategy: Strategy::Times(attempts.max(1)),
            backoff: Backoff::None,
            provides: None,
            revert_all: false,
        }
    }

    /// Runs the subflow once per value until one attempt succeeds, providing the value
    /// under `key` (taskflow's `ForEach`).
    pub fn for_each<T: crate::Value>(
        name: impl Into<String>,
        key: &crate::Key<T>,
        values: impl IntoIterator<Item = T>,
    ) -> Self {
        let values: Vec<Json> = values.into_iter().filter_map(|v| serde_json::to_value(v).ok()).collect();
        Self {
            name: name.into(),
            strategy: Strategy::ForEach(values.into()),
            backoff: Backoff::None,
            provides: Some(Name::Borrowed(key.name())),
            revert_all: false,
        }
    }

    /// Waits this long before each new attempt.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Provides the attempt number under `key`.
    pub fn provides(mut self, key: &crate::Key<u32>) -> Self {
        self.provides = Some(Name::Borrowed(key.name()));
        self
    }

    /// When attempts run out, reverts the whole flow rather than deferring to the
    /// enclosing retry.
    pub fn revert_all(mut self) -> Self {
        self.revert_all = true;
        self
    }

    /// The retry atom's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The symbol this retry provides, if any.
    pub(crate) fn provided(&self) -> Option<&str> {
        self.provides.as_deref()
    }

    /// What to do after the attempts in `history` (the last one failed).
    pub fn on_failure(&self, history: &History) -> Decision {
        let more = match &self.strategy {
            Strategy::Times(n) => (history.len() as u32) < *n,
            Strategy::ForEach(values) => history.len() < values.len(),
        };
        match (more, self.revert_all) {
            (true, _) => Decision::Retry,
            (false, true) => Decision::RevertAll,
            (false, false) => Decision::Revert,
        }
    }

    /// The value for the next attempt, given the attempts so far; `None` when a for-each
    /// has no value left.
    pub(crate) fn next_value(&self, history: &History) -> Option<(Values, Json)> {
        let (slot, json) = match &self.strategy {
            Strategy::Times(_) => {
                let n = history.len() as u32 + 1;
                (Slot::new(n), Json::from(n))
            }
            Strategy::ForEach(values) => {
                let v = values.get(history.len())?.clone();
                (Slot::Json(Arc::new(v.clone())), v)
            }
        };
        let mut out = Values::new();
        if let Some(p) = &self.provides {
            out.insert_slot(p.clone(), slot);
        }
        Some((out, json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_counts_total_attempts() {
        let r = Retry::times("r", 3);
        let mut h = History::new();
        h.push(Attempt::default());
        assert_eq!(r.on_failure(&h), Decision::Retry);
        h.push(Attempt::default());
        assert_eq!(r.on_failure(&h), Decision::Retry);
        h.push(Attempt::default());
        assert_eq!(r.on_failure(&h), Decision::Revert);
        assert_eq!(r.clone().revert_all().on_failure(&h), Decision::RevertAll);
    }

    #[test]
    fn exponential_backoff_grows_and_is_capped() {
        let b = Backoff::Exponential {
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
            jitter: 0.0,
        };
        assert_eq!(b.delay(1), Duration::from_millis(10));
        assert_eq!(b.delay(2), Duration::from_millis(20));
        assert_eq!(b.delay(9), Duration::from_millis(50));
        let j = Backoff::Exponential {
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
            jitter: 0.5,
        };
        let d = j.delay(2);
        assert!(d <= Duration::from_millis(20) && d >= Duration::from_millis(10), "{d:?}");
    }
}
