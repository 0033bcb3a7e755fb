//! Capability reports: every backend's `get_volume_stats`, fanout-cast to the schedulers at
//! start, every `periodic_interval` and on request (Cinder's `_report_driver_status` and
//! `SchedulerAPI.update_service_capabilities`). Each report also sets the backend's
//! capacity gauges (`ember_backend_*_capacity_gib`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ember_common::capabilities::{CapabilityReport, UPDATE_SERVICE_CAPABILITIES};
use ember_common::config::Config;
use ember_rpc::{Clock, Context, RpcClient, SCHEDULER_TOPIC, Transport};

use crate::backends::{Backend, Backends};
use crate::{Error, Result};

/// The scheduler RPC interface version the reports are sent at (Cinder's scheduler API 3.0
/// already has `update_service_capabilities`).
const SCHEDULER_RPC_VERSION: &str = "3.0";

/// How often a backend whose last report showed no free space is measured again, so the
/// schedulers learn at once that space was freed rather than at the next periodic report.
const FULL_RECHECK: Duration = Duration::from_secs(1);

/// How often reports go out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReporterOptions {
    /// Seconds between periodic reports (Cinder's `periodic_interval` /
    /// `backend_stats_polling_interval`, both 60 by default).
    pub periodic_interval: u64,
}

impl Default for ReporterOptions {
    fn default() -> Self {
        Self { periodic_interval: 60 }
    }
}

impl ReporterOptions {
    /// The options the configuration sets.
    pub fn from_config(config: &Config) -> Self {
        Self { periodic_interval: config.periodic_interval }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.periodic_interval.max(1))
    }
}

/// Sends the capability reports of a volume service's backends.
pub struct CapabilityReporter {
    options: ReporterOptions,
    backends: Backends,
    client: RpcClient,
    clock: Clock,
    /// Whether the last round found a pool with no free space.
    full: AtomicBool,
}

impl std::fmt::Debug for CapabilityReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapabilityReporter").field("options", &self.options).finish_non_exhaustive()
    }
}

impl CapabilityReporter {
    /// A reporter for `backends`, sending on `transport`.
    pub fn new(options: ReporterOptions, backends: Backends, transport: Arc<dyn Transport>) -> Self {
        let client = RpcClient::new(transport, SCHEDULER_RPC_VERSION);
        Self { options, backends, client, clock: Clock::System, full: AtomicBool::new(false) }
    }

    /// The same reporter stamping reports with `clock` (for tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Reports every backend once. A backend whose driver fails is logged and skipped (the
    /// scheduler keeps its last report until the service goes down); the first such error is
    /// returned after the others were sent.
    pub async fn report_once(&self) -> Result<usize> {
        let mut sent = 0;
        let mut first_error = None;
        let mut full = false;
        for backend in self.backends.iter() {
            match self.report(backend).await {
                Ok(backend_full) => {
                    sent += 1;
                    full |= backend_full;
                }
                Err(e) => {
                    tracing::warn!(backend = %backend.host, error = %e, "capability report failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        self.full.store(full, Ordering::Relaxed);
        first_error.map_or(Ok(sent), Err)
    }

    /// Reports one backend; true when one of its pools has no free space left.
    async fn report(&self, backend: &Backend) -> Result<bool> {
        // Stamped before the driver measures, so a placement the scheduler makes while the
        // report is on its way is newer than the report and survives it.
        let timestamp_ms = self.clock.now_ms();
        let capabilities = backend
            .driver
            .get_volume_stats(true)
            .await
            .map_err(|source| Error::Driver { backend: backend.host.clone(), source })?;
        record_capacity(&backend.host, &capabilities);
        let full = capabilities.pools.iter().any(
            |p| matches!(p.free_capacity_gb, ember_common::capabilities::Capacity::Gb(free) if free <= 0.0),
        );
        let report = CapabilityReport {
            service_name: "volume".to_owned(),
            host: backend.host.clone(),
            cluster_name: None,
            capabilities,
            timestamp_ms,
        };
        let args = serde_json::to_value(&report).map_err(ember_rpc::Error::Codec)?;
        let ctx = Context::internal();
        self.client.fanout_cast(&ctx, SCHEDULER_TOPIC, UPDATE_SERVICE_CAPABILITIES, args).await?;
        Ok(full)
    }

    /// Reports now, then every `periodic_interval` and whenever
    /// [`ReporterHandle::request_report`] is called, until `shutdown`.
    pub fn spawn(self, shutdown: CancellationToken) -> ReporterHandle {
        let handle = ReporterHandle {
            inner: Arc::new(HandleInner { wake: Notify::new(), rounds: AtomicU64::new(0) }),
            stop: shutdown.child_token(),
            tasks: TaskTracker::new(),
        };
        handle.tasks.spawn(report_loop(self, handle.clone()));
        handle.tasks.close();
        handle
    }
}

#[derive(Debug)]
struct HandleInner {
    wake: Notify,
    rounds: AtomicU64,
}

/// Controls a running reporter. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReporterHandle {
    inner: Arc<HandleInner>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl ReporterHandle {
    /// Asks for a report of every backend as soon as possible (a scheduler started and asked
    /// for them). Requests made while a report runs are folded into one more report.
    pub fn request_report(&self) {
        self.inner.wake.notify_one();
    }

    /// How many rounds of reports have finished (successful or not).
    pub fn rounds(&self) -> u64 {
        self.inner.rounds.load(Ordering::Acquire)
    }

    /// Stops reporting and waits for a report in progress.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

async fn report_loop(reporter: CapabilityReporter, handle: ReporterHandle) {
    let period = reporter.options.period();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // The first tick completes at once: the report at start. A full backend is
        // measured again every FULL_RECHECK until it has room.
        let full = reporter.full.load(Ordering::Relaxed);
        tokio::select! {
            _ = handle.stop.cancelled() => return,
            _ = ticker.tick() => {}
            () = handle.inner.wake.notified() => {}
            () = tokio::time::sleep(FULL_RECHECK), if full => {}
        }
        // Errors are logged per backend inside; the next round tries again.
        let _ = reporter.report_once().await;
        handle.inner.rounds.fetch_add(1, Ordering::AcqRel);
    }
}

/// Sets the capacity gauges of every pool of `backend` (`ember_backend_*_capacity_gib`,
/// labels `backend` and `pool`): total and free as reported (`infinite` as +Inf, `unknown`
/// left unset), allocated, and provisioned (the allocated capacity when the driver reports
/// none, as Cinder's scheduler assumes).
fn record_capacity(backend: &str, capabilities: &ember_common::capabilities::BackendCapabilities) {
    use ember_common::capabilities::{Capacity, CapacityKeyword};
    let value = |c: Capacity| match c {
        Capacity::Gb(v) => Some(v),
        Capacity::Keyword(CapacityKeyword::Infinite) => Some(f64::INFINITY),
        Capacity::Keyword(CapacityKeyword::Unknown) => None,
    };
    for pool in &capabilities.pools {
        let labels = [("backend", backend.to_owned()), ("pool", pool.pool_name.clone())];
        if let Some(v) = value(pool.total_capacity_gb) {
            metrics::gauge!("ember_backend_total_capacity_gib", &labels).set(v);
        }
        if let Some(v) = value(pool.free_capacity_gb) {
            metrics::gauge!("ember_backend_free_capacity_gib", &labels).set(v);
        }
        metrics::gauge!("ember_backend_allocated_capacity_gib", &labels).set(pool.allocated_capacity_gb);
        let provisioned = pool.provisioned_capacity_gb.unwrap_or(pool.allocated_capacity_gb);
        metrics::gauge!("ember_backend_provisioned_capacity_gib", &labels).set(provisioned);
    }
}
