//! The service registry: each process's rows in the services table, kept alive by heartbeats,
//! and the one rule that says whether a service is up (Cinder's `Service.report_state` and
//! `service_is_up`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use ember_common::config::Config;
use ember_common::model::{Service, ServiceFilter};
use ember_common::repo::ServiceRepo;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::target::{BACKUP_TOPIC, SCHEDULER_TOPIC, VOLUME_TOPIC};

/// The binary name of volume services (one row per backend, host `host@backend`).
pub const VOLUME_BINARY: &str = "ember-volume";
/// The binary name of schedulers.
pub const SCHEDULER_BINARY: &str = "ember-scheduler";
/// The binary name of backup services.
pub const BACKUP_BINARY: &str = "ember-backup";
/// The binary name of API processes (they have no RPC server; the topic is informative).
pub const API_BINARY: &str = "ember-api";

/// How often services heartbeat and how long a silent one stays up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryOptions {
    /// Seconds between heartbeats (Cinder's `report_interval`).
    pub report_interval: u64,
    /// Seconds without a heartbeat after which a service is down (`service_down_time`).
    pub service_down_time: u64,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self { report_interval: 10, service_down_time: 60 }
    }
}

impl RegistryOptions {
    /// The options the configuration sets.
    pub fn from_config(config: &Config) -> Self {
        Self { report_interval: config.report_interval, service_down_time: config.service_down_time }
    }

    /// The time between heartbeats, at least one second.
    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.report_interval.max(1))
    }

    /// The down time in force. As Cinder does, a down time too short for the heartbeat
    /// period is raised to 2.5 × `report_interval`, so a healthy service never looks down.
    pub fn service_down_time(&self) -> Duration {
        let interval = self.report_interval();
        let configured = Duration::from_secs(self.service_down_time);
        if configured <= interval { interval.mul_f64(2.5) } else { configured }
    }
}

/// Whether a service is up at `now`: its last heartbeat is within `service_down_time`
/// (Cinder's `service_is_up`). Every process that judges liveness uses this one rule.
pub fn is_up(service: &Service, now: DateTime<Utc>, service_down_time: Duration) -> bool {
    chrono::Duration::from_std(service_down_time).is_ok_and(|down| service.is_up(now, down))
}

/// What one service row says of the process: who it is and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `host` for schedulers, APIs and backups; `host@backend` for volume services.
    pub host: String,
    pub binary: String,
    pub topic: String,
    pub availability_zone: String,
    /// Ember's version.
    pub version: String,
    /// The newest RPC interface version this service serves (Cinder pins senders to the
    /// oldest one among the rows of a binary).
    pub rpc_current_version: Option<String>,
}

impl ServiceSpec {
    /// A row for `binary` on `host`, at this build's version.
    pub fn new(host: &str, binary: &str, topic: &str, availability_zone: &str) -> Self {
        Self {
            host: host.to_owned(),
            binary: binary.to_owned(),
            topic: topic.to_owned(),
            availability_zone: availability_zone.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            rpc_current_version: None,
        }
    }

    /// The row of one volume backend: host `host@backend`, topic `ember-volume`.
    pub fn volume(host: &str, backend: &str, availability_zone: &str) -> Self {
        Self::new(&format!("{host}@{backend}"), VOLUME_BINARY, VOLUME_TOPIC, availability_zone)
    }

    /// The row of a scheduler on `host`.
    pub fn scheduler(host: &str, availability_zone: &str) -> Self {
        Self::new(host, SCHEDULER_BINARY, SCHEDULER_TOPIC, availability_zone)
    }

    /// The row of a backup service on `host`.
    pub fn backup(host: &str, availability_zone: &str) -> Self {
        Self::new(host, BACKUP_BINARY, BACKUP_TOPIC, availability_zone)
    }

    /// The row of an API process on `host`.
    pub fn api(host: &str, availability_zone: &str) -> Self {
        Self::new(host, API_BINARY, API_BINARY, availability_zone)
    }

    /// Sets the RPC interface version the service serves.
    pub fn with_rpc_version(mut self, version: &str) -> Self {
        self.rpc_current_version = Some(version.to_owned());
        self
    }

    fn to_row(&self, now: DateTime<Utc>) -> Service {
        Service {
            id: Uuid::new_v4().to_string(),
            host: self.host.clone(),
            binary: self.binary.clone(),
            topic: self.topic.clone(),
            availability_zone: self.availability_zone.clone(),
            disabled: false,
            disabled_reason: None,
            frozen: false,
            cluster_name: None,
            report_count: 0,
            version: self.version.clone(),
            rpc_current_version: self.rpc_current_version.clone(),
            heartbeat_at: now,
            created_at: now,
        }
    }
}

/// Registers service rows and judges liveness; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    options: RegistryOptions,
    repo: Arc<dyn ServiceRepo>,
    clock: Clock,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry on `repo`, reading the system clock.
    pub fn new(options: RegistryOptions, repo: Arc<dyn ServiceRepo>) -> Self {
        Self { options, repo, clock: Clock::System }
    }

    /// The same registry reading `clock` (for tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Whether `service` is up now.
    pub fn is_up(&self, service: &Service) -> bool {
        is_up(service, self.clock.now(), self.options.service_down_time())
    }

    /// The services that match `filter`, each with whether it is up now.
    pub async fn list(&self, filter: &ServiceFilter) -> Result<Vec<(Service, bool)>> {
        let now = self.clock.now();
        let down = self.options.service_down_time();
        let rows = self.repo.list_services(filter).await.map_err(Error::Registry)?;
        Ok(rows
            .into_iter()
            .map(|s| {
                let up = is_up(&s, now, down);
                (s, up)
            })
            .collect())
    }

    /// Registers (or re-registers after a restart, keeping the row's id and disabled flag)
    /// one row per spec, then heartbeats them every `report_interval` until `shutdown` or
    /// [`RegistryHandle::stop`].
    pub async fn start(self, specs: Vec<ServiceSpec>, shutdown: CancellationToken) -> Result<RegistryHandle> {
        let now = self.clock.now();
        let mut rows = Vec::with_capacity(specs.len());
        for spec in &specs {
            rows.push(self.repo.register_service(&spec.to_row(now)).await.map_err(Error::Registry)?);
        }
        let inner = Arc::new(Inner { registry: self, specs, rows: Mutex::new(rows) });
        let handle = RegistryHandle { inner, stop: shutdown.child_token(), tasks: TaskTracker::new() };
        handle.tasks.spawn(heartbeat_loop(handle.clone()));
        handle.tasks.close();
        Ok(handle)
    }
}

struct Inner {
    registry: Registry,
    specs: Vec<ServiceSpec>,
    /// The rows as last registered, in `specs` order.
    rows: Mutex<Vec<Service>>,
}

/// The running heartbeats of one process's services. Cheap to clone.
#[derive(Clone)]
pub struct RegistryHandle {
    inner: Arc<Inner>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for RegistryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryHandle").field("services", &self.inner.specs).finish_non_exhaustive()
    }
}

impl RegistryHandle {
    /// The rows as registered (ids, and the disabled flags they had at registration).
    pub fn services(&self) -> Vec<Service> {
        self.inner.rows.lock().clone()
    }

    /// Heartbeats every row now. A row that is gone (an operator removed the service) is
    /// registered again, as Cinder's `report_state` recreates it. Errors are returned after
    /// every row was tried.
    pub async fn heartbeat_now(&self) -> Result<()> {
        let registry = &self.inner.registry;
        let now = registry.clock.now();
        let ids: Vec<String> = self.inner.rows.lock().iter().map(|s| s.id.clone()).collect();
        let mut first_error = None;
        for (i, id) in ids.iter().enumerate() {
            let result = match registry.repo.heartbeat(id, now).await {
                Ok(true) => Ok(()),
                Ok(false) => self.reregister(i, now).await,
                Err(e) => Err(Error::Registry(e)),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn reregister(&self, i: usize, now: DateTime<Utc>) -> Result<()> {
        let spec = &self.inner.specs[i];
        tracing::warn!(host = %spec.host, binary = %spec.binary, "service row is gone; registering again");
        let row =
            self.inner.registry.repo.register_service(&spec.to_row(now)).await.map_err(Error::Registry)?;
        self.inner.rows.lock()[i] = row;
        Ok(())
    }

    /// Stops heartbeating and waits for a heartbeat in progress to finish. The rows stay, so
    /// the services turn down after `service_down_time` (as a stopped Cinder service does).
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

/// Heartbeats every `report_interval`; a failed heartbeat is logged and the next one tried.
async fn heartbeat_loop(handle: RegistryHandle) {
    let period = handle.inner.registry.options.report_interval();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // After a stall (a slow database), beat once and keep the period rather than catch up.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = handle.stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = handle.heartbeat_now().await {
            tracing::warn!(error = %e, "service heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests;
