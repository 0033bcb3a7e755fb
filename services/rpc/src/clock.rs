//! The wall clock that heartbeats and liveness checks read, replaceable in tests.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// Where "now" comes from. Heartbeats are compared across processes, so production reads
/// the system clock; tests use a manual clock they move by hand, or one that follows tokio's
/// (possibly paused) time.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// A clock that only moves when told to ([`Clock::advance`], [`Clock::set`]); clones share it.
    Manual(Arc<Mutex<DateTime<Utc>>>),
    /// The wall time at creation plus the tokio time elapsed since, so that it moves with
    /// `tokio::time::pause` / `advance`.
    Tokio { wall: DateTime<Utc>, at: tokio::time::Instant },
}

impl Clock {
    /// A manual clock reading `start`.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Clock::Manual(Arc::new(Mutex::new(start)))
    }

    /// A clock that follows tokio's time from now on.
    pub fn tokio() -> Self {
        Clock::Tokio { wall: Utc::now(), at: tokio::time::Instant::now() }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(at) => *at.lock(),
            Clock::Tokio { wall, at } => *wall + at.elapsed(),
        }
    }

    /// The current time in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// Moves a manual clock forward; other clocks ignore it.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(at) = self {
            let mut at = at.lock();
            *at += by;
        }
    }

    /// Sets a manual clock; other clocks ignore it.
    pub fn set(&self, to: DateTime<Utc>) {
        if let Clock::Manual(at) = self {
            *at.lock() = to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        let clock = Clock::manual(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        shared.advance(Duration::from_secs(10));
        assert_eq!(clock.now_ms(), 1_700_000_010_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_follows_paused_time() {
        let clock = Clock::tokio();
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(clock.now() - before, chrono::Duration::seconds(61));
    }
}
