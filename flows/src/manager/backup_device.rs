//! The volume service's part of backups and restores (Cinder's `get_backup_device`,
//! `secure_file_operations` and the restore's attach and detach): four one-task flows the
//! backup service hands off to the volume's backend and, where it needs their result,
//! waits for.
//!
//! - `backup_export_volume`: `ExportForBackupTask` (the driver's raw image of the volume or
//!   snapshot; of a temporary snapshot for an `in-use` volume backed up with `force`);
//! - `backup_release_volume`: `ReleaseBackupDeviceTask` (the driver drops the export and
//!   the backup's temporary snapshot, if any);
//! - `restore_prepare_volume`: `PrepareRestoreTask` (a raw image to restore into);
//! - `restore_commit_volume`: `CommitRestoreTask` (the restored image becomes the volume).
//!
//! With `via_nbd` (a backup service on another host) the image is also served over NBD
//! by the driver, read-only for a backup and writable for a restore; the release and the
//! commit stop that export first (a stop of what is gone succeeds, so both re-run safely).

use std::sync::Arc;

use ember_common::model::{Volume, VolumeStatus};
use ember_drivers::{BackupSource, DriverSnapshot};
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::{domain, driver as driver_failure};
use crate::keys::*;
use crate::manager::{driver, driver_snapshot, driver_volume};

/// Exports a volume or snapshot for a backup.
pub const EXPORT_FLOW: &str = "backup_export_volume";
/// Releases an export (of a backup or a restore).
pub const RELEASE_FLOW: &str = "backup_release_volume";
/// Prepares a restore's target.
pub const PREPARE_FLOW: &str = "restore_prepare_volume";
/// Writes a restored image into its volume.
pub const COMMIT_FLOW: &str = "restore_commit_volume";

/// Builds `backup_export_volume`; inputs: context, volume id, source snapshot id, backend,
/// via_nbd (optional) and (optional, recorded by backups since temporary snapshots) the
/// backup's id.
pub fn export_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(EXPORT_FLOW)
        .inputs(&[
            CONTEXT.name(),
            VOLUME_ID.name(),
            SOURCE_SNAPSHOT_ID.name(),
            BACKEND.name(),
            VIA_NBD.name(),
        ])
        .add(ExportForBackup { deps })
}

/// Builds `backup_release_volume`; inputs: context, backend, device, and (optional) the
/// backup's id and volume id, whose temporary snapshot goes too.
pub fn release_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(RELEASE_FLOW)
        .inputs(&[CONTEXT.name(), BACKEND.name(), BACKUP_DEVICE.name()])
        .add(ReleaseBackupDevice { deps })
}

/// The driver's temporary snapshot of volume `v` for backup `backup_id` (Cinder's
/// `backup-snap-<volume>`): named by the backup, so a re-run finds its own and never an
/// older backup's.
fn temp_snapshot(backup_id: &str, v: &Volume) -> DriverSnapshot {
    DriverSnapshot::new(format!("backup-snap-{backup_id}"), v.id.clone(), u64::try_from(v.size).unwrap_or(0))
}

/// Whether a backup of `v` (no snapshot named) reads a temporary snapshot: the volume was
/// `in-use` when the backup began (so `force` was given), as Cinder's
/// `backup_use_temp_snapshot`: the data is a point in time, not a file being written.
fn needs_temp_snapshot(v: &Volume) -> bool {
    v.status == VolumeStatus::BackingUp && v.previous_status.as_deref() == Some("in-use")
}

/// Deletes backup `backup_id`'s temporary snapshot of volume `volume_id` on `backend`
/// (a missing one is done).
async fn drop_temp_snapshot(
    deps: &Deps,
    backend: &str,
    backup_id: &str,
    volume_id: &str,
) -> Result<(), Failure> {
    let d = driver(deps, backend)?;
    let snap = DriverSnapshot::new(format!("backup-snap-{backup_id}"), volume_id.to_owned(), 0);
    d.delete_snapshot(&snap).await.map_err(|e| driver_failure(&e))
}

/// Builds `restore_prepare_volume`; inputs: context, volume id, backend, via_nbd (optional).
pub fn prepare_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(PREPARE_FLOW)
        .inputs(&[CONTEXT.name(), VOLUME_ID.name(), BACKEND.name(), VIA_NBD.name()])
        .add(PrepareRestore { deps })
}

/// Builds `restore_commit_volume`; inputs: context, volume id, backend, device.
pub fn commit_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(COMMIT_FLOW)
        .inputs(&[CONTEXT.name(), VOLUME_ID.name(), BACKEND.name(), BACKUP_DEVICE.name()])
        .add(CommitRestore { deps })
}

async fn volume(deps: &Deps, id: &str) -> Result<Volume, Failure> {
    deps.volumes.get_volume(id).await.map_err(domain)
}

/// The device of `export` made on `backend`: served over NBD (writable for a restore)
/// when `via_nbd`, the export released again if serving it fails.
async fn device(
    d: &ember_drivers::SharedDriver,
    backend: &str,
    export: ember_drivers::RawExport,
    via_nbd: bool,
    writable: bool,
) -> Result<BackupDevice, Failure> {
    if !via_nbd {
        return Ok(BackupDevice::local(backend, export));
    }
    match d.serve_raw_export(&export, writable).await {
        Ok(info) => Ok(BackupDevice::nbd(backend, export, &info, !writable)),
        Err(e) => {
            let failure = driver_failure(&e);
            if let Err(e) = d.release_export(export).await {
                tracing::warn!(error = %e, "releasing an export that could not be served failed");
            }
            Err(failure)
        }
    }
}

/// Stops serving `device` over NBD (if it is served) and has the driver release it.
async fn release_device(d: &ember_drivers::SharedDriver, device: &BackupDevice) -> Result<(), Failure> {
    if device.is_nbd() {
        d.unserve_raw_export(&device.raw_export()).await.map_err(|e| driver_failure(&e))?;
    }
    d.release_export(device.raw_export()).await.map_err(|e| driver_failure(&e))
}

/// Has the driver hand over a raw image of the volume, or of its snapshot (a re-run first
/// releases what an earlier run may have made).
/// Revert: the driver releases the export it made (found by its source when the result
/// was lost).
pub struct ExportForBackup {
    deps: Arc<Deps>,
}

impl ExportForBackup {
    /// Has the driver release every export of this backup's source (the volume is
    /// `backing-up` for this backup, so no other backup reads one).
    async fn release_all(&self, ctx: &Context) -> Result<(), Failure> {
        let d = driver(&self.deps, &ctx.get(&BACKEND)?)?;
        let released = match ctx.get(&SOURCE_SNAPSHOT_ID)? {
            Some(sid) => match self.deps.snapshots.get_snapshot(&sid).await {
                Ok(s) => d.release_exports_of(BackupSource::Snapshot(&driver_snapshot(&s))).await,
                Err(ember_common::Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(domain(e)),
            },
            None => match self.deps.volumes.get_volume(&ctx.get(&VOLUME_ID)?).await {
                Ok(v) => d.release_exports_of(BackupSource::Volume(&driver_volume(&v))).await,
                Err(ember_common::Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(domain(e)),
            },
        };
        released.map_err(|e| driver_failure(&e))
    }
}

#[async_trait]
impl Task for ExportForBackup {
    fn name(&self) -> &str {
        "ExportForBackupTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME_ID.name(), SOURCE_SNAPSHOT_ID.name(), BACKEND.name()] }
    }
    fn optional(&self) -> &[&'static str] {
        const { &[BACKUP_UUID.name(), VIA_NBD.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[BACKUP_DEVICE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let backend = ctx.get(&BACKEND)?;
        let d = driver(&self.deps, &backend)?;
        if ctx.attempt() > 1 {
            // An earlier run may have made an export and died before its result was stored.
            self.release_all(ctx).await?;
        }
        let export = match ctx.get(&SOURCE_SNAPSHOT_ID)? {
            Some(sid) => {
                let s = self.deps.snapshots.get_snapshot(&sid).await.map_err(domain)?;
                d.export_for_backup(BackupSource::Snapshot(&driver_snapshot(&s))).await
            }
            None => {
                let v = volume(&self.deps, &ctx.get(&VOLUME_ID)?).await?;
                match ctx.get_optional(&BACKUP_UUID)? {
                    Some(bid) if needs_temp_snapshot(&v) => {
                        // Created again by a re-run: the driver adopts the one it finds.
                        let snap = temp_snapshot(&bid, &v);
                        d.create_snapshot(&snap).await.map_err(|e| driver_failure(&e))?;
                        tracing::info!(backup_id = %bid, volume_id = %v.id, "temporary snapshot taken for the backup");
                        d.export_for_backup(BackupSource::Snapshot(&snap)).await
                    }
                    _ => d.export_for_backup(BackupSource::Volume(&driver_volume(&v))).await,
                }
            }
        }
        .map_err(|e| driver_failure(&e))?;
        let via_nbd = ctx.get_optional(&VIA_NBD)?.unwrap_or(false);
        let device = device(&d, &backend, export, via_nbd, false).await?;
        Ok(Values::new().with(&BACKUP_DEVICE, device))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let backend = ctx.get(&BACKEND)?;
        match ctx.result().map(|r| r.get(&BACKUP_DEVICE)).transpose()?.flatten() {
            Some(device) => {
                release_device(&driver(&self.deps, &backend)?, &device).await?;
            }
            // The export, if one was made, is not described: the driver finds it by its source.
            None => self.release_all(ctx).await?,
        }
        // By name, not by result: the task may have taken it and then failed.
        if let Some(bid) = ctx.get_optional(&BACKUP_UUID)? {
            drop_temp_snapshot(&self.deps, &backend, &bid, &ctx.get(&VOLUME_ID)?).await?;
        }
        Ok(())
    }
}

/// Has the driver stop serving an export over NBD, if it does, and drop it (a temporary copy is removed; a missing one is done),
/// then the backup's temporary snapshot when the release names a backup (a missing one
/// is done, so a release run twice, or for a backup that took none, is harmless).
/// Revert: nothing.
pub struct ReleaseBackupDevice {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ReleaseBackupDevice {
    fn name(&self) -> &str {
        "ReleaseBackupDeviceTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKEND.name(), BACKUP_DEVICE.name()] }
    }
    fn optional(&self) -> &[&'static str] {
        const { &[BACKUP_UUID.name(), VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let backend = ctx.get(&BACKEND)?;
        let d = driver(&self.deps, &backend)?;
        release_device(&d, &ctx.get(&BACKUP_DEVICE)?).await?;
        if let (Some(bid), Some(vid)) = (ctx.get_optional(&BACKUP_UUID)?, ctx.get_optional(&VOLUME_ID)?) {
            drop_temp_snapshot(&self.deps, &backend, &bid, &vid).await?;
        }
        Ok(Values::new())
    }
}

/// Has the driver hand over a raw image of the volume's size to restore into (a re-run
/// first releases what an earlier run may have made).
/// Revert: the driver releases it (found by its volume when the result was lost).
pub struct PrepareRestore {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for PrepareRestore {
    fn name(&self) -> &str {
        "PrepareRestoreTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME_ID.name(), BACKEND.name()] }
    }
    fn optional(&self) -> &[&'static str] {
        const { &[VIA_NBD.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[BACKUP_DEVICE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let backend = ctx.get(&BACKEND)?;
        let d = driver(&self.deps, &backend)?;
        let v = volume(&self.deps, &ctx.get(&VOLUME_ID)?).await?;
        if ctx.attempt() > 1 {
            // An earlier run may have made a target and died before its result was stored
            // (the volume is `restoring-backup` for this restore: no other one uses one).
            d.release_exports_of(BackupSource::Volume(&driver_volume(&v)))
                .await
                .map_err(|e| driver_failure(&e))?;
        }
        let export = d.prepare_restore(&driver_volume(&v)).await.map_err(|e| driver_failure(&e))?;
        let via_nbd = ctx.get_optional(&VIA_NBD)?.unwrap_or(false);
        let device = device(&d, &backend, export, via_nbd, true).await?;
        Ok(Values::new().with(&BACKUP_DEVICE, device))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let Some(device) = ctx.result().map(|r| r.get(&BACKUP_DEVICE)).transpose()?.flatten() else {
            // A target, if one was made, is not described: the driver finds it by its volume.
            let d = driver(&self.deps, &ctx.get(&BACKEND)?)?;
            return match self.deps.volumes.get_volume(&ctx.get(&VOLUME_ID)?).await {
                Ok(v) => d
                    .release_exports_of(BackupSource::Volume(&driver_volume(&v)))
                    .await
                    .map_err(|e| driver_failure(&e)),
                Err(ember_common::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(domain(e)),
            };
        };
        release_device(&driver(&self.deps, &ctx.get(&BACKEND)?)?, &device).await
    }
}

/// Has the driver stop serving the restored image over NBD, if it does, and write it into
/// the volume. A re-run after a crash that finds a temporary image gone knows the earlier
/// run put it in place.
/// Revert: nothing (the volume's restore flow marks it `error_restoring`).
pub struct CommitRestore {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for CommitRestore {
    fn name(&self) -> &str {
        "CommitRestoreTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME_ID.name(), BACKEND.name(), BACKUP_DEVICE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let device = ctx.get(&BACKUP_DEVICE)?;
        let d = driver(&self.deps, &ctx.get(&BACKEND)?)?;
        if device.is_nbd() {
            d.unserve_raw_export(&device.raw_export()).await.map_err(|e| driver_failure(&e))?;
        }
        let export = device.raw_export();
        if ctx.attempt() > 1 && export.temporary && !tokio::fs::try_exists(&export.path).await.unwrap_or(true)
        {
            return Ok(Values::new());
        }
        let v = volume(&self.deps, &ctx.get(&VOLUME_ID)?).await?;
        d.commit_restore(&driver_volume(&v), export).await.map_err(|e| driver_failure(&e))?;
        Ok(Values::new())
    }
}
