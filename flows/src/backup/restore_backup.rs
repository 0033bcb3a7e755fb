//! `backup_restore_backup`: the backup service's side of a restore (Cinder's
//! `BackupManager.restore_backup`).
//!
//! Steps:
//!
//! 1. `ExtractRestoreRefTask`: reads the backup (in `restoring`) and the target volume (in
//!    `restoring-backup`) and its backend.
//! 2. `PrepareRestoreDeviceTask`: hands `restore_prepare_volume` to the volume's backend
//!    and waits for the image to write.
//! 3. `RestoreDataTask`: the backup driver writes the backup into it, checking every
//!    chunk's hash.
//! 4. `CommitRestoreDeviceTask`: hands `restore_commit_volume` to the backend and waits
//!    until the restored image is the volume's.
//! 5. `RestoreOnFinishTask`: the volume goes `available`, the backup back to `available`.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{BackupChanges, BackupStatus, VolumeChanges, VolumeExpect, VolumeStatus};
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::backup::create_backup::fail_reason;
use crate::backup::{store, store_failure, via_nbd};
use crate::backups::{DEVICE_WAIT, FlowProgress, atom_output, handed_off_device, wait_flow};
use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::handoff::{Handoff, flow_id, hand_off, volume_topic};
use crate::keys::*;
use crate::manager::backup_device::{COMMIT_FLOW, PREPARE_FLOW, RELEASE_FLOW};
use crate::tasks::backend;

/// The flow's name.
pub const FLOW: &str = "backup_restore_backup";

/// The inputs the API records.
pub const INPUTS: &[&str] = &[CONTEXT.name(), BACKUP_UUID.name(), VOLUME_ID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractRestoreRef { deps: deps.clone() })
        .add(PrepareRestoreDevice { deps: deps.clone() })
        .add(RestoreData { deps: deps.clone() })
        .add(CommitRestoreDevice { deps: deps.clone() })
        .add(RestoreOnFinish { deps })
}

/// Reads the backup (in `restoring`), the volume (in `restoring-backup`) and its backend.
/// Revert: the volume goes from `restoring-backup` to `error_restoring`, the backup from
/// `restoring` back to `available` (Cinder's), whichever task failed.
pub struct ExtractRestoreRef {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtractRestoreRef {
    fn name(&self) -> &str {
        "ExtractRestoreRefTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKUP_UUID.name(), VOLUME_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[BACKUP.name(), BACKEND.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = self.deps.backups.get_backup(&ctx.get(&BACKUP_UUID)?).await.map_err(domain)?;
        let v = self.deps.volumes.get_volume(&ctx.get(&VOLUME_ID)?).await.map_err(domain)?;
        if b.status != BackupStatus::Restoring || v.status != VolumeStatus::RestoringBackup {
            return Err(fail(
                ErrorKind::BadRequest,
                format!(
                    "backup {} is {} and volume {} is {}: no restore to run",
                    b.id, b.status, v.id, v.status
                ),
            ));
        }
        Ok(Values::new().with(&BACKEND, backend(&v)?).with(&BACKUP, b))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let changes = VolumeChanges::status(VolumeStatus::ErrorRestoring);
        let expect = VolumeExpect::status_in(&[VolumeStatus::RestoringBackup]);
        self.deps.volumes.update_volume(&ctx.get(&VOLUME_ID)?, &expect, &changes).await.map_err(domain)?;
        let changes = BackupChanges {
            status: Some(BackupStatus::Available),
            restore_volume_id: Some(None),
            fail_reason: Some(Some(fail_reason(ctx))),
            ..BackupChanges::default()
        };
        let id = ctx.get(&BACKUP_UUID)?;
        self.deps.backups.update_backup(&id, &[BackupStatus::Restoring], &changes).await.map_err(domain)?;
        Ok(())
    }
}

/// Hands the preparation of the target image to the volume's backend and waits for it.
/// Revert: hands the release of the prepared image, if one was made, to the backend (when
/// the result was lost, the preparation's hand-off is withdrawn or its flow waited for).
pub struct PrepareRestoreDevice {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for PrepareRestoreDevice {
    fn name(&self) -> &str {
        "PrepareRestoreDeviceTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME_ID.name(), BACKEND.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[BACKUP_DEVICE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let backend = ctx.get(&BACKEND)?;
        let volume_id = ctx.get(&VOLUME_ID)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&VOLUME_ID, volume_id.clone())
            .with(&BACKEND, backend.clone())
            .with(&VIA_NBD, via_nbd(&self.deps, &backend)?);
        let id = flow_id(PREPARE_FLOW, ctx.flow_id(), None);
        let h = Handoff {
            name: PREPARE_FLOW,
            id: id.clone(),
            topic: volume_topic(&backend),
            subject: &volume_id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        let detail = wait_flow(&self.deps, &id, DEVICE_WAIT).await?;
        Ok(Values::new().with(&BACKUP_DEVICE, atom_output(&detail, &BACKUP_DEVICE)?))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let device = match ctx.result().map(|r| r.get(&BACKUP_DEVICE)).transpose()?.flatten() {
            Some(d) => d,
            // The preparation may still be under way: withdrawn, or waited for.
            None => match handed_off_device(&self.deps, &flow_id(PREPARE_FLOW, ctx.flow_id(), None)).await? {
                Some(d) => d,
                None => return Ok(()),
            },
        };
        let backend = ctx.get(&BACKEND)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&BACKEND, backend.clone())
            .with(&BACKUP_DEVICE, device);
        let volume_id = ctx.get(&VOLUME_ID)?;
        let h = Handoff {
            name: RELEASE_FLOW,
            id: flow_id(RELEASE_FLOW, ctx.flow_id(), None),
            topic: volume_topic(&backend),
            subject: &volume_id,
            inputs,
        };
        hand_off(&self.deps, h).await.map(drop)
    }
}

/// The backup driver writes the backup into the prepared image (holes as zeros, every
/// chunk's hash checked); progress is logged every 10 %. A re-run writes it again.
/// Revert: nothing (the image is released by the task before).
pub struct RestoreData {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for RestoreData {
    fn name(&self) -> &str {
        "RestoreDataTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKUP.name(), BACKUP_DEVICE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        let store = store(&self.deps)?;
        let sink = store.open_sink(&ctx.get(&BACKUP_DEVICE)?).await.map_err(|e| store_failure(&e))?;
        let progress = FlowProgress::start(&self.deps, ctx, "restore", &b.id);
        let outcome =
            store.driver().restore(&b.id, sink.as_ref(), &progress).await.map_err(|e| store_failure(&e))?;
        tracing::info!(backup_id = %b.id, written_bytes = outcome.written_bytes, "backup restored");
        Ok(Values::new())
    }
}

/// Hands the commit of the restored image to the volume's backend and waits for it.
/// Revert: nothing.
pub struct CommitRestoreDevice {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for CommitRestoreDevice {
    fn name(&self) -> &str {
        "CommitRestoreDeviceTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME_ID.name(), BACKEND.name(), BACKUP_DEVICE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let backend = ctx.get(&BACKEND)?;
        let volume_id = ctx.get(&VOLUME_ID)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&VOLUME_ID, volume_id.clone())
            .with(&BACKEND, backend.clone())
            .with(&BACKUP_DEVICE, ctx.get(&BACKUP_DEVICE)?);
        let id = flow_id(COMMIT_FLOW, ctx.flow_id(), None);
        let h = Handoff {
            name: COMMIT_FLOW,
            id: id.clone(),
            topic: volume_topic(&backend),
            subject: &volume_id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        wait_flow(&self.deps, &id, DEVICE_WAIT).await?;
        Ok(Values::new())
    }
}

/// The volume goes from `restoring-backup` to `available`, the backup from `restoring` to
/// `available` (compare-and-swaps: a re-run finds them done).
/// Revert: nothing.
pub struct RestoreOnFinish {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for RestoreOnFinish {
    fn name(&self) -> &str {
        "RestoreOnFinishTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKUP.name(), VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let changes = VolumeChanges::status(VolumeStatus::Available);
        let expect = VolumeExpect::status_in(&[VolumeStatus::RestoringBackup]);
        self.deps.volumes.update_volume(&ctx.get(&VOLUME_ID)?, &expect, &changes).await.map_err(domain)?;
        let changes = BackupChanges {
            status: Some(BackupStatus::Available),
            restore_volume_id: Some(None),
            ..BackupChanges::default()
        };
        let b = ctx.get(&BACKUP)?;
        self.deps.backups.update_backup(&b.id, &[BackupStatus::Restoring], &changes).await.map_err(domain)?;
        tracing::info!(event = "backup.restore.end", backup_id = %b.id, "notification");
        Ok(Values::new())
    }
}
