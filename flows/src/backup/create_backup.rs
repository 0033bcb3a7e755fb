//! `backup_create_backup`: the backup service's side of a backup (Cinder's
//! `BackupManager.create_backup` and `continue_backup`).
//!
//! Steps:
//!
//! 1. `ExtractBackupRefTask`: reads the backup (in `creating`) and its volume's backend.
//! 2. `GetBackupDeviceTask`: hands `backup_export_volume` to the volume's backend and
//!    waits for the export of the volume (or its snapshot, or a temporary snapshot of an
//!    `in-use` volume backed up with `force`).
//! 3. `BackupDataTask`: the backup driver reads the export and stores it (resuming from
//!    the last stored chunk when it runs again).
//! 4. `ReleaseBackupDeviceTask`: hands `backup_release_volume` to the backend (which
//!    also deletes a temporary snapshot).
//! 5. `BackupOnFinishTask`: the backup goes `available` with its object count and the
//!    driver's record; the volume goes back to the status it had.

use std::sync::Arc;

use ember_common::model::{Backup, BackupChanges, BackupStatus};
use ember_drivers::backup::BackupSpec;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::backup::{backup_driver, store, store_failure, via_nbd};
use crate::backups::{
    CountedSource, DEVICE_WAIT, FlowProgress, atom_output, handed_off_device, restore_source_status,
    wait_flow,
};
use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::handoff::{Handoff, flow_id, hand_off, volume_topic};
use crate::keys::*;
use crate::manager::backup_device::{EXPORT_FLOW, RELEASE_FLOW};
use crate::tasks::backend;

/// The flow's name.
pub const FLOW: &str = "backup_create_backup";

/// The inputs the API records.
pub const INPUTS: &[&str] = &[CONTEXT.name(), BACKUP_UUID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractBackupRef { deps: deps.clone() })
        .add(GetBackupDevice { deps: deps.clone() })
        .add(BackupData { deps: deps.clone() })
        .add(ReleaseBackupDevice { deps: deps.clone() })
        .add(BackupOnFinish { deps })
}

/// The first failure of a flow, as a backup's `fail_reason`.
pub(crate) fn fail_reason(ctx: &RevertContext) -> String {
    let reason = ctx.flow_failures().values().next().map(|f| f.message.clone()).unwrap_or_default();
    reason.chars().take(255).collect()
}

/// Reads the backup (in `creating`), its volume and the volume's backend.
/// Revert: the backup goes from `creating` to `error` with the failure as its reason, the
/// volume (or the snapshot backed up) from `backing-up` back to the status it had,
/// whichever task failed.
pub struct ExtractBackupRef {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtractBackupRef {
    fn name(&self) -> &str {
        "ExtractBackupRefTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKUP_UUID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[BACKUP.name(), BACKEND.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = self.deps.backups.get_backup(&ctx.get(&BACKUP_UUID)?).await.map_err(domain)?;
        if b.status != BackupStatus::Creating {
            return Err(fail(
                ember_common::ErrorKind::BadRequest,
                format!("backup {} is {}, not creating", b.id, b.status),
            ));
        }
        let v = self.deps.volumes.get_volume(&b.volume_id).await.map_err(domain)?;
        Ok(Values::new().with(&BACKEND, backend(&v)?).with(&BACKUP, b))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let id = ctx.get(&BACKUP_UUID)?;
        let changes = BackupChanges {
            status: Some(BackupStatus::Error),
            fail_reason: Some(Some(fail_reason(ctx))),
            ..BackupChanges::default()
        };
        let b = self
            .deps
            .backups
            .update_backup(&id, &[BackupStatus::Creating], &changes)
            .await
            .map_err(domain)?;
        if let Some(b) = b.or(self.deps.backups.get_backup(&id).await.ok()) {
            restore_source_status(&self.deps, &b).await?;
        }
        Ok(())
    }
}

/// The id of the export flow of backup `b`.
fn export_flow_id(b: &Backup) -> String {
    flow_id(EXPORT_FLOW, &b.id, None)
}

/// Hands the export of the volume (or of the backup's snapshot) to the volume's backend
/// and waits for it (Cinder's `get_backup_device` call): the flow's id is the backup's,
/// so a re-run waits for the same export.
/// Revert: hands the release of the export, if one was made, to the backend (when the
/// result was lost, the export's hand-off is withdrawn or its flow waited for).
pub struct GetBackupDevice {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for GetBackupDevice {
    fn name(&self) -> &str {
        "GetBackupDeviceTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), BACKUP.name(), BACKEND.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[BACKUP_DEVICE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        let backend = ctx.get(&BACKEND)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&VOLUME_ID, b.volume_id.clone())
            .with(&SOURCE_SNAPSHOT_ID, b.snapshot_id.clone())
            .with(&BACKEND, backend.clone())
            .with(&BACKUP_UUID, b.id.clone())
            .with(&VIA_NBD, via_nbd(&self.deps, &backend)?);
        let id = export_flow_id(&b);
        let h = Handoff {
            name: EXPORT_FLOW,
            id: id.clone(),
            topic: volume_topic(&backend),
            subject: &b.id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        let detail = wait_flow(&self.deps, &id, DEVICE_WAIT).await?;
        Ok(Values::new().with(&BACKUP_DEVICE, atom_output(&detail, &BACKUP_DEVICE)?))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let b = ctx.get(&BACKUP)?;
        let device = match ctx.result().map(|r| r.get(&BACKUP_DEVICE)).transpose()?.flatten() {
            Some(d) => d,
            // The export may still be under way: withdrawn, or waited for.
            None => match handed_off_device(&self.deps, &export_flow_id(&b)).await? {
                Some(d) => d,
                None => return Ok(()),
            },
        };
        release(&self.deps, ctx, &b, &ctx.get(&BACKEND)?, device).await
    }
}

/// Records the release of `device` on `backend` (once per backup).
async fn release(
    deps: &Deps,
    ctx: &Context,
    b: &Backup,
    backend: &str,
    device: BackupDevice,
) -> Result<(), Failure> {
    let inputs = Values::new()
        .with(&CONTEXT, ctx.get(&CONTEXT)?)
        .with(&BACKEND, backend.to_owned())
        .with(&BACKUP_DEVICE, device)
        .with(&BACKUP_UUID, b.id.clone())
        .with(&VOLUME_ID, b.volume_id.clone());
    let h = Handoff {
        name: RELEASE_FLOW,
        id: flow_id(RELEASE_FLOW, &format!("{}:{}", b.id, ctx.flow_id()), None),
        topic: volume_topic(backend),
        subject: &b.id,
        inputs,
    };
    hand_off(deps, h).await.map(drop)
}

/// The backup driver stores the export's data under the backup's id (an incremental one
/// against its parent); progress is logged every 10 %.
/// Revert: the driver deletes what it stored of this backup (chunks no other backup
/// references).
pub struct BackupData {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BackupData {
    fn name(&self) -> &str {
        "BackupDataTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKUP.name(), BACKUP_DEVICE.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[BACKUP_OUTCOME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        let store = store(&self.deps)?;
        let source = store.open_source(&ctx.get(&BACKUP_DEVICE)?).await.map_err(|e| store_failure(&e))?;
        let spec =
            BackupSpec { backup_id: b.id.clone(), volume_id: b.volume_id.clone(), parent_id: b.parent_id };
        let progress = FlowProgress::start(&self.deps, ctx, "backup", &b.id);
        let source = CountedSource(source.as_ref());
        let outcome =
            store.driver().backup(&spec, &source, &progress).await.map_err(|e| store_failure(&e))?;
        tracing::info!(
            backup_id = %b.id,
            read_bytes = outcome.read_bytes,
            stored_bytes = outcome.stored_bytes,
            objects = outcome.object_count,
            "backup stored"
        );
        Ok(Values::new().with(&BACKUP_OUTCOME, outcome))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let b = ctx.get(&BACKUP)?;
        // A backup that went available is another flow's now (a restore may read it): the
        // finish's revert failed to take it back, so its data stays.
        match self.deps.backups.get_backup(&b.id).await {
            Ok(now) if matches!(now.status, BackupStatus::Available | BackupStatus::Restoring) => {
                return Ok(());
            }
            _ => {}
        }
        backup_driver(&self.deps)?.delete(&b.id).await.map_err(|e| store_failure(&e))
    }
}

/// Hands the release of the export to the volume's backend (it need not wait: the
/// release is durable once recorded).
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
        const { &[CONTEXT.name(), BACKUP.name(), BACKEND.name(), BACKUP_DEVICE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        release(&self.deps, ctx, &b, &ctx.get(&BACKEND)?, ctx.get(&BACKUP_DEVICE)?).await?;
        Ok(Values::new())
    }
}

/// The backup goes from `creating` to `available` with its object count, the driver's
/// name and record; then the volume (or the snapshot backed up) goes back from
/// `backing-up` (both compare-and-swaps,
/// so a re-run finds them done).
/// Revert: the backup goes from `available` to `error` (a failure after the finish).
pub struct BackupOnFinish {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BackupOnFinish {
    fn name(&self) -> &str {
        "BackupOnFinishTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKUP.name(), BACKUP_OUTCOME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        let outcome = ctx.get(&BACKUP_OUTCOME)?;
        let changes = BackupChanges {
            status: Some(BackupStatus::Available),
            object_count: Some(i64::try_from(outcome.object_count).unwrap_or(i64::MAX)),
            service: Some(Some(backup_driver(&self.deps)?.name().to_owned())),
            service_metadata: Some(Some(outcome.service_metadata)),
            fail_reason: Some(None),
            ..BackupChanges::default()
        };
        self.deps.backups.update_backup(&b.id, &[BackupStatus::Creating], &changes).await.map_err(domain)?;
        restore_source_status(&self.deps, &b).await?;
        tracing::info!(event = "backup.create.end", backup_id = %b.id, "notification");
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        // Failed after its work: the backup goes from `available` to `error` (so the
        // reverts before it remove its data), unless another request took it since. The
        // volume is already back to its status.
        let b = ctx.get(&BACKUP)?;
        let changes = BackupChanges {
            status: Some(BackupStatus::Error),
            fail_reason: Some(Some(fail_reason(ctx))),
            ..BackupChanges::default()
        };
        self.deps.backups.update_backup(&b.id, &[BackupStatus::Available], &changes).await.map_err(domain)?;
        Ok(())
    }
}
