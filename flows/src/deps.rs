//! What the flows need from their process: repositories, the flow store, the scheduler,
//! the drivers, the wake hook and configuration, in one [`Deps`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ember_common::model::DEFAULT_VOLUME_TYPE_NAME;
use ember_common::repo::{
    AttachmentRepo, BackupRepo, QuotaRepo, ServiceRepo, SnapshotRepo, VolumeRepo, VolumeTypeRepo,
};
use ember_drivers::SharedDriver;
use ember_drivers::backup::{BackupDriver, ImageSink, ImageSource};
use ember_engine::{FlowStore, WorkerHandle};
use ember_scheduler::SharedScheduler;
use parking_lot::RwLock;

use crate::keys::BackupDevice;

/// Wakes the workers of a topic after a hand-off, so they claim the new flow at once.
///
/// The process wires it to an RPC cast or to [`LocalWake`]; the flows never know which.
/// A lost wake only delays the claim until the next sweep.
pub trait Wake: Send + Sync {
    /// Tells the workers of `topic` that a flow waits for them.
    fn wake(&self, topic: &str);
}

/// The in-process wake: the worker handles of each topic.
#[derive(Default)]
pub struct LocalWake {
    topics: RwLock<HashMap<String, Vec<WorkerHandle>>>,
}

impl LocalWake {
    /// No worker yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes `handle` for every flow handed off to `topic`.
    pub fn add(&self, topic: impl Into<String>, handle: WorkerHandle) {
        self.topics.write().entry(topic.into()).or_default().push(handle);
    }

    /// Forgets every handle (e.g. when the workers stop).
    pub fn clear(&self) {
        self.topics.write().clear();
    }
}

impl Wake for LocalWake {
    fn wake(&self, topic: &str) {
        if let Some(handles) = self.topics.read().get(topic) {
            handles.iter().for_each(WorkerHandle::wake);
        }
    }
}

/// Finds the driver of a backend of this volume process.
pub trait DriverLookup: Send + Sync {
    /// The driver of `backend` (`host@backend`), if this process runs it.
    fn driver(&self, backend: &str) -> Option<SharedDriver>;

    /// A driver call on `backend` found it out of space: its capacity should reach the
    /// schedulers now rather than at the next periodic report.
    fn out_of_space(&self, _backend: &str) {}
}

impl DriverLookup for HashMap<String, SharedDriver> {
    fn driver(&self, backend: &str) -> Option<SharedDriver> {
        self.get(backend).cloned()
    }
}

/// The backup role's store and how it reaches volume data (Cinder's backup manager with its
/// driver and `_attach_device`).
#[async_trait::async_trait]
pub trait BackupStore: Send + Sync {
    /// The backup driver backups are written with.
    fn driver(&self) -> Arc<dyn BackupDriver>;
    /// Whether a volume service on `volume_host` must serve the image over NBD (this
    /// backup service runs elsewhere, or is told to use NBD anyway).
    fn via_nbd(&self, volume_host: &str) -> bool;
    /// Opens the image a volume service exported for a backup.
    async fn open_source(&self, device: &BackupDevice) -> ember_drivers::Result<Box<dyn ImageSource>>;
    /// Opens the image a volume service prepared for a restore.
    async fn open_sink(&self, device: &BackupDevice) -> ember_drivers::Result<Box<dyn ImageSink>>;
}

/// The configuration values the flows read.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// Attempts to place one volume before it ends in `error` (Cinder's option of that name).
    pub scheduler_max_attempts: u32,
    /// The type of volumes created without one and without a source.
    pub default_volume_type: String,
    /// The zone of volumes created without one (Cinder's `storage_availability_zone`).
    pub storage_availability_zone: String,
    /// How long a reservation lives before the expiry sweep rolls it back.
    pub reservation_expire: Duration,
    /// How long an API request waits for the volume service's part of an attach or detach
    /// (Cinder's `rpc_response_timeout` for its RPC calls).
    pub rpc_response_timeout: Duration,
    /// Seconds without a heartbeat after which a service counts as down (choosing a backup
    /// host, and the API's 503 when none is up).
    pub service_down_time: Duration,
    /// The container of backups created without one.
    pub backup_container: String,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            scheduler_max_attempts: 3,
            default_volume_type: DEFAULT_VOLUME_TYPE_NAME.to_owned(),
            storage_availability_zone: "nova".to_owned(),
            reservation_expire: Duration::from_secs(86_400),
            rpc_response_timeout: Duration::from_secs(60),
            service_down_time: Duration::from_secs(60),
            backup_container: "backups".to_owned(),
        }
    }
}

/// Everything a flow's tasks use. Roles need only part of it: the scheduler role needs
/// `scheduler`, the volume role `drivers`.
#[derive(Clone)]
pub struct Deps {
    pub volumes: Arc<dyn VolumeRepo>,
    pub snapshots: Arc<dyn SnapshotRepo>,
    pub types: Arc<dyn VolumeTypeRepo>,
    pub quotas: Arc<dyn QuotaRepo>,
    pub attachments: Arc<dyn AttachmentRepo>,
    pub backups: Arc<dyn BackupRepo>,
    pub services: Arc<dyn ServiceRepo>,
    /// Where hand-offs are recorded.
    pub store: Arc<dyn FlowStore>,
    pub wake: Arc<dyn Wake>,
    pub config: FlowConfig,
    pub scheduler: Option<SharedScheduler>,
    pub drivers: Option<Arc<dyn DriverLookup>>,
    /// The backup store (the backup role).
    pub backup_store: Option<Arc<dyn BackupStore>>,
}

impl Deps {
    /// Deps whose repositories are all `repo` (e.g. `ember_db::SqlRepo`).
    pub fn new<R>(repo: Arc<R>, store: Arc<dyn FlowStore>, wake: Arc<dyn Wake>, config: FlowConfig) -> Self
    where
        R: VolumeRepo
            + SnapshotRepo
            + VolumeTypeRepo
            + QuotaRepo
            + AttachmentRepo
            + BackupRepo
            + ServiceRepo
            + 'static,
    {
        Self {
            volumes: repo.clone(),
            snapshots: repo.clone(),
            types: repo.clone(),
            quotas: repo.clone(),
            attachments: repo.clone(),
            backups: repo.clone(),
            services: repo,
            store,
            wake,
            config,
            scheduler: None,
            drivers: None,
            backup_store: None,
        }
    }

    /// With the scheduler (the scheduler role).
    pub fn with_scheduler(mut self, scheduler: SharedScheduler) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// With the backup store (the backup role).
    pub fn with_backup_store(mut self, store: Arc<dyn BackupStore>) -> Self {
        self.backup_store = Some(store);
        self
    }

    /// With the drivers of this process's backends (the volume role).
    pub fn with_drivers(mut self, drivers: Arc<dyn DriverLookup>) -> Self {
        self.drivers = Some(drivers);
        self
    }
}
