//! The `fake` driver: volumes in a map, for tests and control-plane benchmarks.
//!
//! It keeps no data, only sizes and relations, enforces a thick capacity so tests can run
//! a backend out of space, and injects failures on chosen operations and ids.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use ember_common::capabilities::{BackendCapabilities, Capacity, PoolCapabilities};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::GIB;
use crate::driver::{VolumeDriver, check_not_smaller};
use crate::error::{DriverError, Result};
use crate::types::{
    AccessMode, BackupSource, ConnectionInfo, Connector, DriverSnapshot, DriverVolume, ModelUpdate, RawExport,
};

/// Settings of a fake backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeOptions {
    /// `volume_backend_name` in stats.
    pub backend_name: String,
    /// The one pool's name.
    pub pool_name: String,
    /// Total capacity in GiB; volumes and snapshots use their full size (thick).
    pub capacity_gb: u64,
    /// A pause added to every call, to mimic a backend's latency in benchmarks.
    pub latency_ms: u64,
    /// Operations that always fail, so a configured process can play a broken backend.
    pub fail_always: Vec<FakeOp>,
    /// Where backup exports are written; without it backups are not supported.
    pub scratch_dir: Option<PathBuf>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            backend_name: "fake".to_owned(),
            pool_name: "fake".to_owned(),
            capacity_gb: 1024,
            latency_ms: 0,
            fail_always: Vec::new(),
            scratch_dir: None,
        }
    }
}

/// The operations failures can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FakeOp {
    CreateVolume,
    DeleteVolume,
    CreateSnapshot,
    DeleteSnapshot,
    CreateVolumeFromSnapshot,
    CreateClonedVolume,
    ExtendVolume,
    GetVolumeStats,
    InitializeConnection,
    TerminateConnection,
    Backup,
}

#[derive(Debug, Default)]
struct State {
    volumes: HashMap<String, u64>,
    /// Snapshot id to (volume id, size in GiB).
    snapshots: HashMap<String, (String, u64)>,
    exports: HashSet<String>,
    fail_next: HashMap<FakeOp, u32>,
    fail_ids: HashSet<(FakeOp, String)>,
    calls: HashMap<FakeOp, u64>,
}

impl State {
    fn used_gb(&self) -> u64 {
        self.volumes.values().sum::<u64>() + self.snapshots.values().map(|(_, size)| size).sum::<u64>()
    }

    fn reserve(&self, capacity_gb: u64, size_gb: u64) -> Result<()> {
        let used = self.used_gb();
        if used.saturating_add(size_gb) > capacity_gb {
            return Err(DriverError::NoSpace(format!(
                "{size_gb} GiB requested, {} GiB free",
                capacity_gb.saturating_sub(used)
            )));
        }
        Ok(())
    }

    /// Inserts a volume of `size_gb`, or accepts an existing one of that size.
    fn put_volume(&mut self, capacity_gb: u64, id: &str, size_gb: u64) -> Result<ModelUpdate> {
        if size_gb == 0 {
            return Err(DriverError::InvalidInput(format!("volume {id} of 0 GiB")));
        }
        match self.volumes.get(id) {
            Some(&size) if size == size_gb => {}
            Some(&size) => {
                return Err(DriverError::AlreadyExists {
                    resource: "volume",
                    id: id.to_owned(),
                    detail: format!("it has {size} GiB, not {size_gb}"),
                });
            }
            None => {
                self.reserve(capacity_gb, size_gb)?;
                self.volumes.insert(id.to_owned(), size_gb);
            }
        }
        Ok(ModelUpdate { provider_location: Some(format!("fake:volume-{id}")), provider_id: None })
    }
}

/// The in-memory driver.
#[derive(Debug)]
pub struct FakeDriver {
    options: FakeOptions,
    state: Mutex<State>,
}

impl FakeDriver {
    pub fn new(options: FakeOptions) -> Self {
        FakeDriver { options, state: Mutex::new(State::default()) }
    }

    /// Makes the next `count` calls of `op` fail with a backend error.
    pub fn fail_next(&self, op: FakeOp, count: u32) {
        self.state.lock().fail_next.insert(op, count);
    }

    /// Makes every call of `op` on `id` (a volume or snapshot id, or its `volume-<id>` /
    /// `snapshot-<id>` name) fail until [`FakeDriver::clear_failures`].
    pub fn fail_for(&self, op: FakeOp, id: &str) {
        let id = id.strip_prefix("volume-").or_else(|| id.strip_prefix("snapshot-")).unwrap_or(id);
        self.state.lock().fail_ids.insert((op, id.to_owned()));
    }

    /// Removes every injected failure (not those of `FakeOptions::fail_always`).
    pub fn clear_failures(&self) {
        let mut state = self.state.lock();
        state.fail_next.clear();
        state.fail_ids.clear();
    }

    /// How many times `op` was called, failed calls included.
    pub fn calls(&self, op: FakeOp) -> u64 {
        self.state.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// The ids of the volumes that exist, sorted.
    pub fn volume_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.state.lock().volumes.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The ids of the snapshots that exist, sorted.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.state.lock().snapshots.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Counts the call, waits the configured latency, and fails it if a failure is due.
    async fn enter(&self, op: FakeOp, id: &str) -> Result<()> {
        if self.options.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.options.latency_ms)).await;
        }
        let mut state = self.state.lock();
        *state.calls.entry(op).or_default() += 1;
        // The id is copied only when some id failure is set: benchmarks call this a lot.
        let mut fail = self.options.fail_always.contains(&op)
            || (!state.fail_ids.is_empty() && state.fail_ids.contains(&(op, id.to_owned())));
        if let Some(remaining) = state.fail_next.get_mut(&op).filter(|n| **n > 0) {
            *remaining -= 1;
            fail = true;
        }
        if fail {
            return Err(DriverError::Backend(format!("injected failure of {op:?} on {id}")));
        }
        Ok(())
    }

    fn scratch_file(&self) -> Result<PathBuf> {
        let dir = self.options.scratch_dir.as_ref().ok_or_else(|| {
            DriverError::NotSupported("backups on the fake driver need `scratch_dir`".to_owned())
        })?;
        Ok(dir.join(format!("fake-export-{}.raw", uuid::Uuid::new_v4())))
    }

    /// Makes a sparse zero-filled raw file of `size_gb` in the scratch directory.
    async fn make_scratch(&self, size_gb: u64) -> Result<RawExport> {
        let path = self.scratch_file()?;
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| DriverError::io("cannot create export", &path, e))?;
        let size_bytes = size_gb * GIB;
        file.set_len(size_bytes).await.map_err(|e| DriverError::io("cannot size export", &path, e))?;
        Ok(RawExport { path, size_bytes, temporary: true })
    }

    async fn remove_scratch(&self, export: RawExport) -> Result<()> {
        match tokio::fs::remove_file(&export.path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(DriverError::io("cannot remove export", export.path, e))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl VolumeDriver for FakeDriver {
    fn backend_name(&self) -> &str {
        &self.options.backend_name
    }

    async fn do_setup(&self) -> Result<()> {
        Ok(())
    }

    async fn check_for_setup_error(&self) -> Result<()> {
        Ok(())
    }

    async fn create_volume(&self, volume: &DriverVolume) -> Result<ModelUpdate> {
        self.enter(FakeOp::CreateVolume, &volume.id).await?;
        self.state.lock().put_volume(self.options.capacity_gb, &volume.id, volume.size_gb)
    }

    async fn delete_volume(&self, volume: &DriverVolume) -> Result<()> {
        self.enter(FakeOp::DeleteVolume, &volume.id).await?;
        let mut state = self.state.lock();
        state.volumes.remove(&volume.id);
        state.exports.remove(&volume.id);
        Ok(())
    }

    async fn create_snapshot(&self, snapshot: &DriverSnapshot) -> Result<ModelUpdate> {
        self.enter(FakeOp::CreateSnapshot, &snapshot.id).await?;
        let mut state = self.state.lock();
        let update = ModelUpdate {
            provider_location: Some(format!("fake:snapshot-{}", snapshot.id)),
            provider_id: None,
        };
        if state.snapshots.contains_key(&snapshot.id) {
            return Ok(update);
        }
        let size = *state
            .volumes
            .get(&snapshot.volume_id)
            .ok_or_else(|| DriverError::volume_not_found(&snapshot.volume_id))?;
        state.reserve(self.options.capacity_gb, size)?;
        state.snapshots.insert(snapshot.id.clone(), (snapshot.volume_id.clone(), size));
        Ok(update)
    }

    async fn delete_snapshot(&self, snapshot: &DriverSnapshot) -> Result<()> {
        self.enter(FakeOp::DeleteSnapshot, &snapshot.id).await?;
        self.state.lock().snapshots.remove(&snapshot.id);
        Ok(())
    }

    async fn create_volume_from_snapshot(
        &self,
        volume: &DriverVolume,
        snapshot: &DriverSnapshot,
    ) -> Result<ModelUpdate> {
        self.enter(FakeOp::CreateVolumeFromSnapshot, &volume.id).await?;
        let mut state = self.state.lock();
        let (_, size) =
            state.snapshots.get(&snapshot.id).ok_or_else(|| DriverError::snapshot_not_found(&snapshot.id))?;
        check_not_smaller(volume, *size)?;
        state.put_volume(self.options.capacity_gb, &volume.id, volume.size_gb)
    }

    async fn create_cloned_volume(
        &self,
        volume: &DriverVolume,
        source: &DriverVolume,
    ) -> Result<ModelUpdate> {
        self.enter(FakeOp::CreateClonedVolume, &volume.id).await?;
        let mut state = self.state.lock();
        let size = state.volumes.get(&source.id).ok_or_else(|| DriverError::volume_not_found(&source.id))?;
        check_not_smaller(volume, *size)?;
        state.put_volume(self.options.capacity_gb, &volume.id, volume.size_gb)
    }

    async fn extend_volume(&self, volume: &DriverVolume, new_size_gb: u64) -> Result<()> {
        self.enter(FakeOp::ExtendVolume, &volume.id).await?;
        let mut state = self.state.lock();
        let size = *state.volumes.get(&volume.id).ok_or_else(|| DriverError::volume_not_found(&volume.id))?;
        if new_size_gb > size {
            state.reserve(self.options.capacity_gb, new_size_gb - size)?;
            state.volumes.insert(volume.id.clone(), new_size_gb);
        }
        Ok(())
    }

    async fn get_volume_stats(&self, _refresh: bool) -> Result<BackendCapabilities> {
        self.enter(FakeOp::GetVolumeStats, "").await?;
        let state = self.state.lock();
        let used = state.used_gb();
        let provisioned: u64 = state.volumes.values().sum();
        Ok(BackendCapabilities {
            volume_backend_name: self.options.backend_name.clone(),
            vendor_name: "Ember".to_owned(),
            driver_version: env!("CARGO_PKG_VERSION").to_owned(),
            storage_protocol: "fake".to_owned(),
            pools: vec![PoolCapabilities {
                pool_name: self.options.pool_name.clone(),
                total_capacity_gb: Capacity::Gb(self.options.capacity_gb as f64),
                free_capacity_gb: Capacity::Gb(self.options.capacity_gb.saturating_sub(used) as f64),
                allocated_capacity_gb: used as f64,
                provisioned_capacity_gb: Some(provisioned as f64),
                // Thick only: the ratio does not apply, so none is reported.
                max_over_subscription_ratio: None,
                reserved_percentage: 0.0,
                thin_provisioning_support: false,
                thick_provisioning_support: Some(true),
                multiattach: Some(true),
                extra: Map::new(),
            }],
            extra: Map::new(),
        })
    }

    async fn initialize_connection(
        &self,
        volume: &DriverVolume,
        _connector: &Connector,
        mode: AccessMode,
    ) -> Result<ConnectionInfo> {
        self.enter(FakeOp::InitializeConnection, &volume.id).await?;
        let mut state = self.state.lock();
        if !state.volumes.contains_key(&volume.id) {
            return Err(DriverError::volume_not_found(&volume.id));
        }
        state.exports.insert(volume.id.clone());
        let data = json!({ "volume_id": volume.id, "name": volume.name(), "access_mode": mode.as_str() });
        Ok(ConnectionInfo { driver_volume_type: "fake".to_owned(), data: object(data) })
    }

    async fn terminate_connection(
        &self,
        volume: &DriverVolume,
        _connector: &Connector,
        _mode: AccessMode,
    ) -> Result<()> {
        self.enter(FakeOp::TerminateConnection, &volume.id).await?;
        Ok(())
    }

    async fn remove_export(&self, volume: &DriverVolume) -> Result<()> {
        self.enter(FakeOp::TerminateConnection, &volume.id).await?;
        self.state.lock().exports.remove(&volume.id);
        Ok(())
    }

    async fn list_exports(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self.state.lock().exports.iter().cloned().collect();
        ids.sort();
        Ok(ids)
    }

    async fn export_for_backup(&self, source: BackupSource<'_>) -> Result<RawExport> {
        let (id, size) = {
            let state = self.state.lock();
            match source {
                BackupSource::Volume(v) => (
                    v.id.clone(),
                    *state.volumes.get(&v.id).ok_or_else(|| DriverError::volume_not_found(&v.id))?,
                ),
                BackupSource::Snapshot(s) => (
                    s.id.clone(),
                    state.snapshots.get(&s.id).ok_or_else(|| DriverError::snapshot_not_found(&s.id))?.1,
                ),
            }
        };
        self.enter(FakeOp::Backup, &id).await?;
        self.make_scratch(size).await
    }

    async fn release_export(&self, export: RawExport) -> Result<()> {
        self.remove_scratch(export).await
    }

    async fn prepare_restore(&self, volume: &DriverVolume) -> Result<RawExport> {
        self.enter(FakeOp::Backup, &volume.id).await?;
        let size = *self
            .state
            .lock()
            .volumes
            .get(&volume.id)
            .ok_or_else(|| DriverError::volume_not_found(&volume.id))?;
        self.make_scratch(size).await
    }

    async fn commit_restore(&self, volume: &DriverVolume, export: RawExport) -> Result<()> {
        if !self.state.lock().volumes.contains_key(&volume.id) {
            return Err(DriverError::volume_not_found(&volume.id));
        }
        self.remove_scratch(export).await
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
