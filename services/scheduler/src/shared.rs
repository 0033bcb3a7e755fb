//! A cheap-to-clone handle that lets report handlers and request handlers share one
//! scheduler and its cache; a placement holds the lock from filtering to consuming, so two
//! concurrent requests never both count on the same free space.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use ember_common::capabilities::BackendCapabilities;

use crate::Result;
use crate::options::SchedulerOptions;
use crate::request::RequestSpec;
use crate::scheduler::{FilterScheduler, NoValidBackend, Placement};
use crate::state::{HostStateCache, ServiceStatus};

#[derive(Debug)]
struct Inner {
    scheduler: FilterScheduler,
    cache: HostStateCache,
}

/// The scheduler and its host-state cache behind one lock.
#[derive(Debug, Clone)]
pub struct SharedScheduler {
    inner: Arc<Mutex<Inner>>,
}

impl SharedScheduler {
    pub fn new(options: SchedulerOptions) -> Result<Self> {
        Ok(Self::from_scheduler(FilterScheduler::new(options)?))
    }

    pub fn from_scheduler(scheduler: FilterScheduler) -> Self {
        let cache = scheduler.new_cache();
        Self { inner: Arc::new(Mutex::new(Inner { scheduler, cache })) }
    }

    /// Records a service's status from the services table.
    pub fn update_service(&self, backend: &str, status: ServiceStatus) {
        self.inner.lock().cache.update_service(backend, status);
    }

    /// Applies a capability report; false when it is older than the last one applied.
    pub fn update_capabilities(&self, backend: &str, timestamp_ms: i64, caps: BackendCapabilities) -> bool {
        self.inner.lock().cache.update_capabilities(backend, timestamp_ms, caps)
    }

    pub fn remove_backend(&self, backend: &str) -> bool {
        self.inner.lock().cache.remove_backend(backend)
    }

    /// Places one volume now.
    pub fn schedule(&self, spec: &RequestSpec) -> std::result::Result<Placement, NoValidBackend> {
        self.schedule_at(spec, now_ms())
    }

    /// Places one volume as if the time were `now_ms` (milliseconds since the Unix epoch).
    pub fn schedule_at(
        &self,
        spec: &RequestSpec,
        now_ms: i64,
    ) -> std::result::Result<Placement, NoValidBackend> {
        let mut guard = self.inner.lock();
        let Inner { scheduler, cache } = &mut *guard;
        scheduler.schedule(cache, spec, now_ms)
    }

    /// Cinder's `has_all_capabilities`: every volume service that is up (its heartbeat is
    /// within `service_down_time`) has reported its capabilities. A scheduler that places
    /// before this may find no pool at all and fail a volume that a moment later would have
    /// had a home, so it waits for this after a start (Cinder's `_wait_for_scheduler`).
    pub fn has_all_capabilities(&self, now_ms: i64) -> bool {
        let guard = self.inner.lock();
        let down_ms = guard.scheduler.options().service_down_ms();
        guard.cache.backends().iter().all(|b| {
            b.capabilities.is_some() || !b.service.as_ref().is_some_and(|s| s.schedulable(now_ms, down_ms))
        })
    }

    /// Waits until [`SharedScheduler::has_all_capabilities`] or `limit` passes; returns
    /// whether it is ready.
    pub async fn wait_ready(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.has_all_capabilities(now_ms()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Reads the cache under the lock (for the pools admin API and tests).
    pub fn with_cache<R>(&self, f: impl FnOnce(&HostStateCache) -> R) -> R {
        f(&self.inner.lock().cache)
    }
}

/// Milliseconds since the Unix epoch; a clock before 1970 reads as 0.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
