//! The `VolumeDriver` trait: what the volume manager asks of a storage backend.

use std::sync::Arc;

use async_trait::async_trait;
use ember_common::capabilities::BackendCapabilities;

use crate::error::{DriverError, Result};
use crate::types::{
    AccessMode, BackupSource, ConnectionInfo, Connector, DriverSnapshot, DriverVolume, ModelUpdate, RawExport,
};

/// A shared driver, as the volume manager holds one per backend.
pub type SharedDriver = Arc<dyn VolumeDriver>;

/// A storage backend, in the spirit of Cinder's `VolumeDriver`.
///
/// **Every operation is idempotent**: the flow engine re-executes a step that was running
/// when a process crashed, so a call may repeat one that completed, or half completed.
/// Creating what already exists (complete, with the same size) succeeds; deleting what is
/// missing succeeds; a half-written result of a crash is detected and redone.
///
/// Methods that create return a [`ModelUpdate`] the manager saves on the row.
#[async_trait]
pub trait VolumeDriver: Send + Sync + 'static {
    /// The backend's name (`volume_backend_name`).
    fn backend_name(&self) -> &str;

    /// Prepares the backend (directories, probes); called once at start.
    async fn do_setup(&self) -> Result<()>;

    /// Checks that the backend is usable after `do_setup` (tools present, paths writable).
    async fn check_for_setup_error(&self) -> Result<()>;

    /// Creates a blank volume of `volume.size_gb`.
    async fn create_volume(&self, volume: &DriverVolume) -> Result<ModelUpdate>;

    /// Deletes a volume; a missing volume is not an error.
    async fn delete_volume(&self, volume: &DriverVolume) -> Result<()>;

    /// Takes a snapshot of `snapshot.volume_id`.
    async fn create_snapshot(&self, snapshot: &DriverSnapshot) -> Result<ModelUpdate>;

    /// Deletes a snapshot; a missing snapshot is not an error. Volumes created from it stay
    /// readable (the driver makes them independent first).
    async fn delete_snapshot(&self, snapshot: &DriverSnapshot) -> Result<()>;

    /// Creates `volume` holding the snapshot's data, extended to `volume.size_gb` if larger.
    async fn create_volume_from_snapshot(
        &self,
        volume: &DriverVolume,
        snapshot: &DriverSnapshot,
    ) -> Result<ModelUpdate>;

    /// Creates `volume` as a copy of `source`, extended to `volume.size_gb` if larger.
    async fn create_cloned_volume(&self, volume: &DriverVolume, source: &DriverVolume)
    -> Result<ModelUpdate>;

    /// Grows a volume to `new_size_gb`; a volume already that large is left alone.
    async fn extend_volume(&self, volume: &DriverVolume, new_size_gb: u64) -> Result<()>;

    /// The backend's report for the scheduler; `refresh` forces a new measurement
    /// instead of the cached one.
    async fn get_volume_stats(&self, refresh: bool) -> Result<BackendCapabilities>;

    /// Exports a volume to `connector` in `mode` (creating the export if it is missing, and
    /// admitting the connector to it) and says how to reach it. Calling it again with the same
    /// arguments returns the same answer. A read-only mode gets an export that refuses writes.
    async fn initialize_connection(
        &self,
        volume: &DriverVolume,
        connector: &Connector,
        mode: AccessMode,
    ) -> Result<ConnectionInfo>;

    /// Revokes `connector`'s access given by `initialize_connection`; the export itself stays
    /// for other attachments (see [`VolumeDriver::remove_export`]). Missing is not an error.
    async fn terminate_connection(
        &self,
        volume: &DriverVolume,
        connector: &Connector,
        mode: AccessMode,
    ) -> Result<()>;

    /// Removes every export of the volume, once no attachment needs one (Cinder's
    /// `remove_export`). A volume without an export is not an error.
    async fn remove_export(&self, volume: &DriverVolume) -> Result<()>;

    /// Makes sure the exports that live attachments need exist, re-creating what a restart
    /// lost (Cinder's `ensure_export` at `init_host`): each `(connector, mode)` is admitted
    /// again. Answers like `initialize_connection` would.
    async fn ensure_export(&self, volume: &DriverVolume, grants: &[(Connector, AccessMode)]) -> Result<()> {
        for (connector, mode) in grants {
            self.initialize_connection(volume, connector, *mode).await?;
        }
        Ok(())
    }

    /// The ids of the volumes this backend exports now, whatever the mode (for checks that
    /// no export outlives its attachments).
    async fn list_exports(&self) -> Result<Vec<String>>;

    /// Gives the backup service a raw image of a volume's or snapshot's data to read.
    /// Hand it back with [`VolumeDriver::release_export`].
    async fn export_for_backup(&self, source: BackupSource<'_>) -> Result<RawExport>;

    /// Releases an export made by `export_for_backup`, removing a temporary copy.
    async fn release_export(&self, export: RawExport) -> Result<()>;

    /// Releases every export `export_for_backup` made of `source`, and of a volume every
    /// target `prepare_restore` made for it, that was not released: what a step left that
    /// lost the description of its export (a crash before its result was stored, a failure
    /// after its work). Call it only while no backup or restore of the image uses one
    /// (its volume `backing-up` or `restoring-backup` for the caller). Drivers whose
    /// exports need no release keep this default.
    async fn release_exports_of(&self, _source: BackupSource<'_>) -> Result<()> {
        Ok(())
    }

    /// Gives the backup service a raw file of `volume.size_gb` to restore into.
    /// Finish with [`VolumeDriver::commit_restore`].
    async fn prepare_restore(&self, volume: &DriverVolume) -> Result<RawExport>;

    /// Writes a restored raw file into the volume, replacing its data, and releases it.
    async fn commit_restore(&self, volume: &DriverVolume, export: RawExport) -> Result<()>;

    /// Serves an export made by `export_for_backup` (read-only) or `prepare_restore`
    /// (`writable`) over NBD, for a backup service on another host, and says how to reach
    /// it (`driver_volume_type: nbd`). Calling it again answers the same. A driver that
    /// cannot answers `NotSupported`.
    async fn serve_raw_export(&self, export: &RawExport, writable: bool) -> Result<ConnectionInfo> {
        let _ = (export, writable);
        Err(DriverError::NotSupported("this backend cannot serve a backup's image over NBD".to_owned()))
    }

    /// Stops serving `export` over NBD, closing the connections still open; an export not
    /// served is not an error (so a release re-run after a crash succeeds).
    async fn unserve_raw_export(&self, export: &RawExport) -> Result<()> {
        let _ = export;
        Ok(())
    }
}

/// Refuses a new volume smaller than its source.
pub(crate) fn check_not_smaller(volume: &DriverVolume, source_gb: u64) -> Result<()> {
    if volume.size_gb < source_gb {
        return Err(DriverError::InvalidInput(format!(
            "volume {} of {} GiB is smaller than its {source_gb} GiB source",
            volume.id, volume.size_gb
        )));
    }
    Ok(())
}
