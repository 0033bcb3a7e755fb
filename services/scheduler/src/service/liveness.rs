//! The periodic read of the services table into the scheduler's cache, so that down,
//! disabled and frozen volume services are skipped and removed ones forgotten.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ember_common::model::ServiceFilter;
use ember_common::repo::ServiceRepo;
use ember_rpc::registry::VOLUME_BINARY;

use crate::shared::SharedScheduler;
use crate::state::ServiceStatus;
use crate::{Error, Result};

/// Reads the volume services' rows into a [`SharedScheduler`]'s cache.
#[derive(Clone)]
pub struct LivenessRefresh {
    repo: Arc<dyn ServiceRepo>,
    scheduler: SharedScheduler,
    period: Duration,
}

impl std::fmt::Debug for LivenessRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivenessRefresh").field("period", &self.period).finish_non_exhaustive()
    }
}

impl LivenessRefresh {
    pub fn new(repo: Arc<dyn ServiceRepo>, scheduler: SharedScheduler, period: Duration) -> Self {
        Self { repo, scheduler, period }
    }

    /// Reads every `ember-volume` row once: each backend gets its zone, last heartbeat and
    /// flags (the scheduler compares the heartbeat with `service_down_time` when it places),
    /// and backends whose row was deleted are dropped from the cache. Returns how many rows.
    pub async fn refresh_once(&self) -> Result<usize> {
        let filter = ServiceFilter { binary: Some(VOLUME_BINARY.to_owned()), ..ServiceFilter::default() };
        let rows = self.repo.list_services(&filter).await.map_err(Error::Repo)?;
        let mut live = HashSet::with_capacity(rows.len());
        for row in &rows {
            let status = ServiceStatus {
                availability_zone: row.availability_zone.clone(),
                heartbeat_at_ms: row.heartbeat_at.timestamp_millis(),
                disabled: row.disabled,
                frozen: row.frozen,
            };
            self.scheduler.update_service(&row.host, status);
            live.insert(row.host.as_str());
        }
        // Only backends whose row was seen before and is gone now: a report can arrive from a
        // service registered after this read, and must not be dropped until the next one.
        let gone: Vec<String> = self.scheduler.with_cache(|cache| {
            let backends = cache.backends().iter();
            let removed = backends.filter(|b| b.service.is_some() && !live.contains(b.name.as_str()));
            removed.map(|b| b.name.clone()).collect()
        });
        for name in gone {
            self.scheduler.remove_backend(&name);
        }
        Ok(rows.len())
    }

    /// Refreshes every period until `shutdown` or [`LivenessHandle::stop`]; a failed read is
    /// logged and the cache keeps what it had (its heartbeats age, so services turn down
    /// rather than staying up on stale data).
    pub fn spawn(self, shutdown: CancellationToken) -> LivenessHandle {
        let handle =
            LivenessHandle { refresh: self, stop: shutdown.child_token(), tasks: TaskTracker::new() };
        handle.tasks.spawn(refresh_loop(handle.clone()));
        handle.tasks.close();
        handle
    }
}

/// Controls a running liveness refresh. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LivenessHandle {
    refresh: LivenessRefresh,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl LivenessHandle {
    /// Reads the services table now.
    pub async fn refresh_now(&self) -> Result<usize> {
        self.refresh.refresh_once().await
    }

    /// Stops refreshing and waits for a read in progress.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

async fn refresh_loop(handle: LivenessHandle) {
    let period = handle.refresh.period;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = handle.stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = handle.refresh.refresh_once().await {
            tracing::warn!(error = %e, "reading the services table failed");
        }
    }
}
