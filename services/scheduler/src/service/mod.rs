//! The scheduler process's I/O around the pure scheduler: capability reports from the
//! volume services (an RPC endpoint on the scheduler topic's fanout), service liveness from
//! the services table, and the request for fresh reports when a scheduler starts.

mod liveness;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use ember_common::capabilities::{
    CapabilityReport, PUBLISH_SERVICE_CAPABILITIES, UPDATE_SERVICE_CAPABILITIES,
};
use ember_common::config::Config;
use ember_common::repo::ServiceRepo;
use ember_rpc::{
    Context, Endpoint, Outcome, RemoteError, RpcClient, RpcServer, SCHEDULER_TOPIC, ServerHandle, Transport,
    VOLUME_TOPIC, Version,
};

use crate::shared::SharedScheduler;
use crate::{Error, Result};

pub use liveness::{LivenessHandle, LivenessRefresh};

/// Cinder's `notify_service_capabilities` (capacity notifications); accepted and ignored.
const NOTIFY_SERVICE_CAPABILITIES: &str = "notify_service_capabilities";
/// The volume RPC interface version the publish request is sent at.
const VOLUME_RPC_VERSION: &str = "3.0";

/// How the scheduler service keeps its cache current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerServiceOptions {
    /// Seconds between reads of the services table (liveness, disabled flags, zones).
    /// A refresh this often keeps a live service's heartbeat at most this stale, which must
    /// stay well under `service_down_time`; `report_interval` by default.
    pub service_refresh_interval: u64,
    /// How many capability reports are handled at once.
    pub prefetch: u16,
}

impl Default for SchedulerServiceOptions {
    fn default() -> Self {
        Self { service_refresh_interval: 10, prefetch: 16 }
    }
}

impl SchedulerServiceOptions {
    /// The options the configuration sets.
    pub fn from_config(config: &Config) -> Self {
        Self { service_refresh_interval: config.report_interval, ..Self::default() }
    }

    fn refresh_period(&self) -> Duration {
        Duration::from_secs(self.service_refresh_interval.max(1))
    }
}

/// The scheduler's RPC endpoint for capability reports: `update_service_capabilities` feeds
/// the [`SharedScheduler`]'s cache (Cinder's `SchedulerManager.update_service_capabilities`).
#[derive(Debug, Clone)]
pub struct SchedulerService {
    scheduler: SharedScheduler,
    /// Read the services table again when a report names a backend whose service row
    /// the cache has not seen (a volume service that started after the last refresh).
    refresh: Option<LivenessRefresh>,
}

impl SchedulerService {
    pub fn new(scheduler: SharedScheduler) -> Self {
        Self { scheduler, refresh: None }
    }

    /// Whether the cache holds a service row for `backend`.
    fn knows_service(&self, backend: &str) -> bool {
        self.scheduler.with_cache(|c| c.backends().iter().any(|b| b.name == backend && b.service.is_some()))
    }

    /// Handles `method` if it is one of the capability methods; `None` otherwise, so a
    /// fuller scheduler manager can delegate to this.
    pub fn handle_method(&self, method: &str, args: &Value) -> Option<Outcome> {
        match method {
            UPDATE_SERVICE_CAPABILITIES => Some(self.update_service_capabilities(args)),
            NOTIFY_SERVICE_CAPABILITIES => Some(Ok(Value::Null)),
            _ => None,
        }
    }

    fn update_service_capabilities(&self, args: &Value) -> Outcome {
        let report = CapabilityReport::deserialize(args)
            .map_err(|e| RemoteError::invalid_arguments(UPDATE_SERVICE_CAPABILITIES, &e))?;
        // Backup services report too in Cinder, for backup placement; Ember does not place
        // backups by capability yet, so only volume reports reach the cache.
        if report.service_name != "volume" {
            return Ok(Value::Null);
        }
        let applied =
            self.scheduler.update_capabilities(&report.host, report.timestamp_ms, report.capabilities);
        if !applied {
            tracing::debug!(host = %report.host, "ignored a capability report older than the one held");
        }
        self.record_reported_free(&report.host);
        Ok(Value::Null)
    }

    /// Sets `ember_scheduler_reported_free_capacity_gib` (label `pool`, `host@backend#pool`)
    /// for every pool of `backend` to the free space of the report the cache holds for it,
    /// the one the CapacityFilter reads: what this scheduler believes, next to what the volume
    /// service measured (`ember_backend_free_capacity_gib`).
    fn record_reported_free(&self, backend: &str) {
        let pools: Vec<(String, Option<f64>)> = self.scheduler.with_cache(|c| {
            let b = c.backends().iter().find(|b| b.name == backend);
            b.map(|b| {
                b.pools.iter().map(|p| (p.host.clone(), p.capabilities.free_capacity_gb.gb())).collect()
            })
            .unwrap_or_default()
        });
        for (pool, free) in pools {
            if let Some(free) = free {
                metrics::gauge!("ember_scheduler_reported_free_capacity_gib", "pool" => pool).set(free);
            }
        }
    }

    /// Starts the scheduler's side of the reports: reads the services table once, listens
    /// for reports on the scheduler topic's fanout, asks every volume service for a fresh
    /// report (Cinder's `init_host_with_rpc`), then refreshes liveness every
    /// `service_refresh_interval` until `shutdown`.
    pub async fn start(
        self,
        options: SchedulerServiceOptions,
        repo: Arc<dyn ServiceRepo>,
        transport: Arc<dyn Transport>,
        shutdown: CancellationToken,
    ) -> Result<SchedulerServiceHandle> {
        let refresh = LivenessRefresh::new(repo, self.scheduler.clone(), options.refresh_period());
        refresh.refresh_once().await?;
        let endpoint = Self { refresh: Some(refresh.clone()), ..self };
        let server = RpcServer::new(endpoint)
            .listen_fanout(&*transport, SCHEDULER_TOPIC, options.prefetch)
            .await
            .map_err(Error::Rpc)?;
        request_capabilities(&transport).await?;
        let liveness = refresh.spawn(shutdown);
        Ok(SchedulerServiceHandle { server: Arc::new(server), liveness })
    }
}

#[async_trait]
impl Endpoint for SchedulerService {
    /// Cinder's scheduler RPC API version.
    fn version(&self) -> Version {
        Version { major: 3, minor: 12 }
    }

    async fn handle(&self, _ctx: &Context, method: &str, args: &Value) -> Outcome {
        let outcome =
            self.handle_method(method, args).unwrap_or_else(|| Err(RemoteError::unknown_method(method)));
        if method == UPDATE_SERVICE_CAPABILITIES {
            let host = args.get("host").and_then(Value::as_str).unwrap_or_default();
            if let Some(refresh) =
                self.refresh.as_ref().filter(|_| !host.is_empty() && !self.knows_service(host))
            {
                // A new volume service is schedulable as soon as its first report arrives,
                // not only after the next periodic refresh.
                if let Err(err) = refresh.refresh_once().await {
                    tracing::warn!(%host, error = %err, "refreshing service liveness after a new report failed");
                }
            }
        }
        outcome
    }
}

/// Asks every volume service for an immediate capability report (Cinder's
/// `VolumeAPI.publish_service_capabilities`, a fanout cast).
pub async fn request_capabilities(transport: &Arc<dyn Transport>) -> Result<()> {
    let client = RpcClient::new(transport.clone(), VOLUME_RPC_VERSION);
    let ctx = Context::internal();
    client
        .fanout_cast(&ctx, VOLUME_TOPIC, PUBLISH_SERVICE_CAPABILITIES, Value::Null)
        .await
        .map_err(Error::Rpc)
}

/// The running scheduler service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SchedulerServiceHandle {
    server: Arc<ServerHandle>,
    liveness: LivenessHandle,
}

impl SchedulerServiceHandle {
    /// The liveness refresh, to force a read of the services table.
    pub fn liveness(&self) -> &LivenessHandle {
        &self.liveness
    }

    /// Stops listening and refreshing; waits for the reports in hand.
    pub async fn stop(self) {
        self.liveness.stop().await;
        // While another clone holds the server, dropping ours leaves it to that one; the
        // server stops when the last clone is stopped or dropped.
        if let Ok(server) = Arc::try_unwrap(self.server) {
            server.stop().await;
        }
    }
}
