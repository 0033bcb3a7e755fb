//! What every handler can reach: the repositories, the flow operations and the settings.

use std::sync::Arc;

use ember_common::config::Config;
use ember_common::model::{Backup, Snapshot, Volume, VolumeAttachment};
use ember_common::ops::{
    AttachOps, BackupOps, CreateAttachment, CreateBackup, CreateSnapshot, CreateVolume, DeleteVolume,
    LegacyAttach, RequestContext, RestoreBackup, Restored, VolumeOps,
};
use ember_common::repo::{
    AttachmentRepo, BackupRepo, QuotaRepo, ServiceRepo, SnapshotRepo, VolumeRepo, VolumeTypeRepo,
};
use ember_common::{ErrorKind, ServiceError};
use ember_engine::{FlowStore, Registry};
use serde_json::Value;

use crate::auth::AuthConfig;

/// The shared state of the application; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub auth: Arc<AuthConfig>,
    pub repos: Repos,
    /// The operations that run as flows (create, delete, extend, snapshot create and delete).
    pub ops: Arc<dyn VolumeOps>,
    /// The attach and detach operations (attachments API and legacy volume actions).
    pub attach: Arc<dyn AttachOps>,
    /// The backup operations (create, delete, restore).
    pub backups: Arc<dyn BackupOps>,
    pub settings: Arc<Settings>,
    /// The admin view of flows; `None` answers its endpoints with 503.
    pub flows: Option<FlowAdmin>,
}

/// Tells the workers of a topic that a flow waits for them.
pub type WakeTopic = Arc<dyn Fn(&str) + Send + Sync>;

/// What the admin view of flows (`/flows`) reads and acts on.
#[derive(Clone)]
pub struct FlowAdmin {
    /// Where every process records its flows.
    pub store: Arc<dyn FlowStore>,
    /// Every flow's factory, used only to rebuild a stored flow's shape for drawing; it is
    /// never given to a worker, so its flows may lack what their tasks need to execute.
    pub shapes: Arc<Registry>,
    /// Tells the workers of a topic that a flow waits for them (after a resume); without
    /// it their periodic sweep claims the flow.
    pub wake: Option<WakeTopic>,
}

impl FlowAdmin {
    /// The admin view on `store`, drawing the flows `shapes` knows.
    pub fn new(store: Arc<dyn FlowStore>, shapes: Registry) -> Self {
        Self { store, shapes: Arc::new(shapes), wake: None }
    }

    /// Wakes the workers of a resumed flow's topic through `wake`.
    pub fn with_wake(mut self, wake: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.wake = Some(Arc::new(wake));
        self
    }
}

/// The repositories the API reads and writes directly.
#[derive(Clone)]
pub struct Repos {
    pub volumes: Arc<dyn VolumeRepo>,
    pub types: Arc<dyn VolumeTypeRepo>,
    pub snapshots: Arc<dyn SnapshotRepo>,
    pub attachments: Arc<dyn AttachmentRepo>,
    pub quotas: Arc<dyn QuotaRepo>,
    pub services: Arc<dyn ServiceRepo>,
    pub backups: Arc<dyn BackupRepo>,
}

impl Repos {
    /// Every repository from one implementation of all the traits (e.g. `ember_db::SqlRepo`).
    pub fn all<R>(repo: Arc<R>) -> Self
    where
        R: VolumeRepo
            + VolumeTypeRepo
            + SnapshotRepo
            + AttachmentRepo
            + QuotaRepo
            + ServiceRepo
            + BackupRepo
            + 'static,
    {
        Self {
            volumes: repo.clone(),
            types: repo.clone(),
            snapshots: repo.clone(),
            attachments: repo.clone(),
            quotas: repo.clone(),
            services: repo.clone(),
            backups: repo,
        }
    }
}

/// The configuration values handlers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The zone this node's services are in (`storage_availability_zone`).
    pub storage_availability_zone: String,
    /// The zone of volumes created without one.
    pub default_availability_zone: String,
    /// Create in the default zone when the requested one does not exist, instead of refusing.
    pub allow_availability_zone_fallback: bool,
    /// The name of the type of volumes created without one.
    pub default_volume_type: String,
    /// The largest page a list returns (`osapi_max_limit`).
    pub osapi_max_limit: u32,
    /// Seconds without a heartbeat after which a service is down.
    pub service_down_time: u64,
}

impl Settings {
    /// The values of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            storage_availability_zone: config.storage_availability_zone.clone(),
            default_availability_zone: config
                .default_availability_zone
                .clone()
                .unwrap_or_else(|| config.storage_availability_zone.clone()),
            allow_availability_zone_fallback: config.allow_availability_zone_fallback,
            default_volume_type: config.default_volume_type.clone(),
            osapi_max_limit: config.osapi_max_limit.max(1),
            service_down_time: config.service_down_time,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}

/// The operations of a process that runs no flows: every call answers 503, so an API
/// started without its flows says so instead of pretending.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnwiredOps;

fn unwired() -> ServiceError {
    ServiceError::new(ErrorKind::Unavailable, "The volume service is not available.")
}

#[async_trait::async_trait]
impl VolumeOps for UnwiredOps {
    async fn create_volume(&self, _: &RequestContext, _: CreateVolume) -> Result<Volume, ServiceError> {
        Err(unwired())
    }

    async fn delete_volume(&self, _: &RequestContext, _: &str, _: DeleteVolume) -> Result<(), ServiceError> {
        Err(unwired())
    }

    async fn extend_volume(&self, _: &RequestContext, _: &str, _: i64) -> Result<(), ServiceError> {
        Err(unwired())
    }

    async fn create_snapshot(&self, _: &RequestContext, _: CreateSnapshot) -> Result<Snapshot, ServiceError> {
        Err(unwired())
    }

    async fn delete_snapshot(&self, _: &RequestContext, _: &str, _: bool) -> Result<(), ServiceError> {
        Err(unwired())
    }
}

#[async_trait::async_trait]
impl AttachOps for UnwiredOps {
    async fn create_attachment(
        &self,
        _: &RequestContext,
        _: CreateAttachment,
    ) -> Result<VolumeAttachment, ServiceError> {
        Err(unwired())
    }

    async fn update_attachment(
        &self,
        _: &RequestContext,
        _: &str,
        _: Value,
    ) -> Result<VolumeAttachment, ServiceError> {
        Err(unwired())
    }

    async fn complete_attachment(&self, _: &RequestContext, _: &str) -> Result<(), ServiceError> {
        Err(unwired())
    }

    async fn delete_attachment(
        &self,
        _: &RequestContext,
        _: &str,
    ) -> Result<Vec<VolumeAttachment>, ServiceError> {
        Err(unwired())
    }

    async fn reserve_volume(&self, _: &RequestContext, _: &str) -> Result<(), ServiceError> {
        Err(unwired())
    }

    async fn unreserve_volume(&self, _: &RequestContext, _: &str) -> Result<(), ServiceError> {
        Err(unwired())
    }

    async fn begin_detaching(&self, _: &RequestContext, _: &str) -> Result<(), ServiceError> {
        Err(unwired())
    }

    async fn roll_detaching(&self, _: &RequestContext, _: &str) -> Result<(), ServiceError> {
        Err(unwired())
    }

    async fn initialize_connection(
        &self,
        _: &RequestContext,
        _: &str,
        _: Value,
    ) -> Result<Value, ServiceError> {
        Err(unwired())
    }

    async fn terminate_connection(&self, _: &RequestContext, _: &str, _: Value) -> Result<(), ServiceError> {
        Err(unwired())
    }

    async fn attach(
        &self,
        _: &RequestContext,
        _: &str,
        _: LegacyAttach,
    ) -> Result<VolumeAttachment, ServiceError> {
        Err(unwired())
    }

    async fn detach(&self, _: &RequestContext, _: &str, _: Option<&str>) -> Result<(), ServiceError> {
        Err(unwired())
    }

    async fn force_detach(
        &self,
        _: &RequestContext,
        _: &str,
        _: Option<&str>,
        _: Option<Value>,
    ) -> Result<(), ServiceError> {
        Err(unwired())
    }
}

#[async_trait::async_trait]
impl BackupOps for UnwiredOps {
    async fn create_backup(&self, _: &RequestContext, _: CreateBackup) -> Result<Backup, ServiceError> {
        Err(no_backup_service())
    }

    async fn delete_backup(&self, _: &RequestContext, _: &str, _: bool) -> Result<(), ServiceError> {
        Err(no_backup_service())
    }

    async fn restore_backup(
        &self,
        _: &RequestContext,
        _: &str,
        _: RestoreBackup,
    ) -> Result<Restored, ServiceError> {
        Err(no_backup_service())
    }
}

fn no_backup_service() -> ServiceError {
    ServiceError::new(ErrorKind::Unavailable, "Service cinder-backup could not be found.")
}

impl ApiState {
    /// The hosts of the live, enabled backup services.
    pub async fn backup_hosts(&self) -> Result<Vec<String>, ServiceError> {
        let filter = ember_common::model::ServiceFilter {
            binary: Some("ember-backup".to_owned()),
            ..ember_common::model::ServiceFilter::default()
        };
        let rows = self.repos.services.list_services(&filter).await.map_err(|e| ServiceError::from(&e))?;
        let down =
            chrono::Duration::seconds(i64::try_from(self.settings.service_down_time).unwrap_or(i64::MAX));
        let now = chrono::Utc::now();
        Ok(rows.into_iter().filter(|s| !s.disabled && s.is_up(now, down)).map(|s| s.host).collect())
    }
}
