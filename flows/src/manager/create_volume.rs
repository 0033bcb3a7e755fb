//! `volume_create_manager`, Cinder's `cinder/volume/flows/manager/create_volume.py`.
//!
//! Claimed by the volume worker of the backend the scheduler chose (topic
//! `volume.<host@backend>`). Steps:
//!
//! 1. `ExtractVolumeRefTask`: reads the volume row.
//! 2. `OnFailureRescheduleTask`: does nothing; its revert reschedules or fails the volume.
//! 3. `ExtractVolumeSpecTask`: says what the volume is made from.
//! 4. `NotifyVolumeActionTask`: emits `volume.create.start`.
//! 5. `CreateVolumeFromSpecTask`: has the driver make it (blank, from a snapshot, a clone;
//!    a volume from a backup is made blank).
//! 6. `RestoreBackupCastTask`: a volume from a backup goes `restoring-backup` and the
//!    backup's service restores into it (`backup_restore_backup`, which ends it
//!    `available`); other volumes pass.
//! 7. `CreateVolumeOnFinishTask`: `available`, `launched_at`, `volume.create.end`.

use std::sync::Arc;

use chrono::Utc;
use ember_common::ErrorKind;
use ember_common::model::{
    Backup, BackupChanges, BackupStatus, SnapshotStatus, Volume, VolumeChanges, VolumeExpect, VolumeStatus,
};
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::backup::restore_backup::FLOW as RESTORE_FLOW;
use crate::backups::backup_topic;
use crate::deps::Deps;
use crate::error::{RESCHEDULABLE, domain, fail};
use crate::handoff::{
    Handoff, SCHEDULER_TOPIC, VOLUME_CREATE_MANAGER, VOLUME_CREATE_SCHEDULER as SCHEDULER_FLOW, flow_id,
    hand_off, withdraw,
};
use crate::keys::*;
use crate::manager::{driver, driver_failed, driver_snapshot, driver_volume};
use crate::tasks::settle_cascaded_snapshots;

/// The flow's name.
pub const FLOW: &str = VOLUME_CREATE_MANAGER;

/// The inputs the scheduler records.
pub const INPUTS: &[&str] = &[CONTEXT.name(), VOLUME_ID.name(), REQUEST_SPEC.name(), BACKEND.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractVolumeRef {
            deps: deps.clone(),
            error_out: ErrorOut {
                from: VolumeStatus::Creating,
                to: VolumeStatus::Error,
                only_own_failure: true,
            },
        })
        .add(OnFailureReschedule { deps: deps.clone() })
        .add(ExtractVolumeSpec)
        .add(NotifyVolumeAction { event: "volume.create.start" })
        .add(CreateVolumeFromSpec { deps: deps.clone() })
        .add(RestoreBackupCast { deps: deps.clone() })
        .add(CreateVolumeOnFinish { deps })
}

/// Reads the volume row (deleted meanwhile: the flow fails without a reschedule).
/// Revert: puts the volume in its error status (`error_out`), rolls back the flow's
/// reservation if it has one, and puts the snapshots a cascade left in `deleting` in
/// `error_deleting`: every failure of the flow ends here, whichever task failed.
pub struct ExtractVolumeRef {
    pub(crate) deps: Arc<Deps>,
    pub(crate) error_out: ErrorOut,
}

/// What a manager flow's failure does to its volume (Cinder's manager does it in its
/// exception handlers: `error`, `error_deleting`, `error_extending`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorOut {
    pub from: VolumeStatus,
    pub to: VolumeStatus,
    /// Only when this task itself failed: a create's later failures are
    /// `OnFailureRescheduleTask`'s to handle (reschedule or `error`). Cinder leaves a volume
    /// whose reference could not be extracted in `creating`.
    pub only_own_failure: bool,
}

#[async_trait]
impl Task for ExtractVolumeRef {
    fn name(&self) -> &str {
        "ExtractVolumeRefTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[VOLUME.name()] }
    }

    fn optional(&self) -> &[&'static str] {
        const { &[RESERVATIONS.name(), CASCADE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = self.deps.volumes.get_volume(&ctx.get(&VOLUME_ID)?).await.map_err(domain)?;
        Ok(Values::new().with(&VOLUME, v))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let ErrorOut { from, to, only_own_failure } = self.error_out;
        if only_own_failure && ctx.failure().is_none() {
            return Ok(());
        }
        let id = ctx.get(&VOLUME_ID)?;
        let expect = VolumeExpect::status_in(&[from]);
        self.deps.volumes.update_volume(&id, &expect, &VolumeChanges::status(to)).await.map_err(domain)?;
        if let Some(ids) = ctx.get_optional(&RESERVATIONS)? {
            self.deps.quotas.rollback(&ids).await.map_err(domain)?;
        }
        if ctx.get_optional(&CASCADE)?.unwrap_or(false) {
            // The snapshots a cascade moved to `deleting` and the flow did not remove.
            settle_cascaded_snapshots(&self.deps, &id, SnapshotStatus::ErrorDeleting).await?;
        }
        Ok(())
    }
}

/// Does nothing on execute; all its work is in its revert.
/// Revert: a failure a driver of another backend could avoid goes back to the scheduler
/// (host cleared, the half-made backend volume deleted, the scheduler flow of the next
/// attempt recorded) while attempts remain; anything else leaves the volume in `error`.
pub struct OnFailureReschedule {
    deps: Arc<Deps>,
}

impl OnFailureReschedule {
    async fn set_error(&self, id: &str) -> Result<(), Failure> {
        let expect = VolumeExpect::status_in(&[VolumeStatus::Creating]);
        self.deps
            .volumes
            .update_volume(id, &expect, &VolumeChanges::status(VolumeStatus::Error))
            .await
            .map_err(domain)?;
        Ok(())
    }

    async fn reschedule(&self, ctx: &RevertContext, volume: &Volume, attempt: u32) -> Result<(), Failure> {
        let backend = ctx.get(&BACKEND)?;
        if let Ok(d) = driver(&self.deps, &backend)
            && let Err(e) = d.delete_volume(&driver_volume(volume)).await
        {
            tracing::warn!(volume_id = %volume.id, error = %e, "cleaning up before a reschedule failed");
        }
        let expect = VolumeExpect {
            host: Some(volume.host.clone()),
            ..VolumeExpect::status_in(&[VolumeStatus::Creating])
        };
        let changes = VolumeChanges {
            host: Some(None),
            scheduled_at: Some(Some(Utc::now())),
            ..VolumeChanges::default()
        };
        // A lost swap means an earlier run of this revert cleared the host already; the
        // hand-off below is then a no-op or finishes what that run began.
        self.deps.volumes.update_volume(&volume.id, &expect, &changes).await.map_err(domain)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&VOLUME_ID, volume.id.clone())
            .with(&RAW_REQUEST_SPEC, ctx.get(&REQUEST_SPEC)?);
        let h = Handoff {
            name: SCHEDULER_FLOW,
            id: flow_id(SCHEDULER_FLOW, &volume.id, Some(attempt + 1)),
            topic: SCHEDULER_TOPIC.to_owned(),
            subject: &volume.id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        tracing::info!(volume_id = %volume.id, attempt = attempt + 1, "volume rescheduled");
        Ok(())
    }
}

#[async_trait]
impl Task for OnFailureReschedule {
    fn name(&self) -> &str {
        "OnFailureRescheduleTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), REQUEST_SPEC.name(), VOLUME.name(), BACKEND.name()] }
    }

    async fn execute(&self, _ctx: &Context) -> Result<Values, Failure> {
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let volume = ctx.get(&VOLUME)?;
        let failures = ctx.flow_failures();
        let reschedulable = !failures.is_empty() && failures.values().all(|f| f.kind == RESCHEDULABLE);
        let attempt = ctx.get(&REQUEST_SPEC)?.retry.map(|r| r.num_attempts);
        match attempt {
            Some(a) if reschedulable && a < self.deps.config.scheduler_max_attempts => {
                self.reschedule(ctx, &volume, a).await
            }
            _ => {
                tracing::warn!(volume_id = %volume.id, failures = ?failures, "creating the volume failed");
                self.set_error(&volume.id).await
            }
        }
    }
}

/// Says what the volume is made from (Cinder's `volume_spec`).
/// Revert: nothing (sources keep their status in Ember while they are read).
pub struct ExtractVolumeSpec;

#[async_trait]
impl Task for ExtractVolumeSpec {
    fn name(&self) -> &str {
        "ExtractVolumeSpecTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[VOLUME_SPEC.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        let spec = match (v.snapshot_id, v.source_volid, v.backup_id) {
            (Some(snapshot_id), _, _) => VolumeSpec::Snap { snapshot_id },
            (None, Some(source_volid), _) => VolumeSpec::SourceVol { source_volid },
            (None, None, Some(backup_id)) => VolumeSpec::Backup { backup_id },
            (None, None, None) => VolumeSpec::Raw,
        };
        Ok(Values::new().with(&VOLUME_SPEC, spec))
    }
}

/// Emits a usage notification (a tracing event; Ember has no notifier yet).
/// Revert: nothing.
pub struct NotifyVolumeAction {
    pub(crate) event: &'static str,
}

#[async_trait]
impl Task for NotifyVolumeAction {
    fn name(&self) -> &str {
        "NotifyVolumeActionTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        tracing::info!(event = self.event, volume_id = %v.id, project_id = %v.project_id, size = v.size, "notification");
        Ok(Values::new())
    }
}

/// Has the driver make the volume from its spec and stores the driver's model update.
/// Drivers' creates are idempotent, so a re-run adopts what an earlier run made.
/// Revert: nothing; `OnFailureRescheduleTask` removes a half-made volume.
pub struct CreateVolumeFromSpec {
    deps: Arc<Deps>,
}

impl CreateVolumeFromSpec {
    async fn create(&self, ctx: &Context, v: &Volume) -> Result<ember_drivers::ModelUpdate, Failure> {
        let backend = ctx.get(&BACKEND)?;
        let d = driver(&self.deps, &backend)?;
        let dv = driver_volume(v);
        let res = match ctx.get(&VOLUME_SPEC)? {
            VolumeSpec::Raw => d.create_volume(&dv).await,
            VolumeSpec::Snap { snapshot_id } => {
                let s = self.deps.snapshots.get_snapshot(&snapshot_id).await.map_err(domain)?;
                d.create_volume_from_snapshot(&dv, &driver_snapshot(&s)).await
            }
            VolumeSpec::SourceVol { source_volid } => {
                let src = self.deps.volumes.get_volume(&source_volid).await.map_err(domain)?;
                d.create_cloned_volume(&dv, &driver_volume(&src)).await
            }
            // Cinder's generic path (no driver has `create_volume_from_backup`): a blank
            // volume the backup service then restores into.
            VolumeSpec::Backup { .. } => d.create_volume(&dv).await,
        };
        res.map_err(|e| driver_failed(&self.deps, &backend, &e))
    }
}

#[async_trait]
impl Task for CreateVolumeFromSpec {
    fn name(&self) -> &str {
        "CreateVolumeFromSpecTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME.name(), VOLUME_SPEC.name(), BACKEND.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        let update = self.create(ctx, &v).await?;
        if update.provider_location.is_some() || update.provider_id.is_some() {
            let changes = VolumeChanges {
                provider_location: update.provider_location.map(Some),
                provider_id: update.provider_id.map(Some),
                ..VolumeChanges::default()
            };
            let expect = VolumeExpect::status_in(&[VolumeStatus::Creating]);
            self.deps.volumes.update_volume(&v.id, &expect, &changes).await.map_err(domain)?;
        }
        Ok(Values::new())
    }
}

/// A volume made from a backup (Cinder's `_create_from_backup`): the backup goes from
/// `available` to `restoring` naming the volume, the volume from `creating` to
/// `restoring-backup`, and the restore is handed to the backup's service
/// (`backup_restore_backup`, one per volume), which ends both `available`. Other volumes
/// pass through.
/// Revert: withdraws the hand-off if no process took it yet (else fails, leaving the
/// volume to the restore), then the volume goes from `restoring-backup` to `error` and
/// the backup back to `available`.
pub struct RestoreBackupCast {
    deps: Arc<Deps>,
}

/// The id of the restore that volume `volume_id`, made from a backup, hands off.
fn restore_flow_id(volume_id: &str) -> String {
    flow_id(RESTORE_FLOW, volume_id, None)
}

impl RestoreBackupCast {
    /// Swaps the backup to `restoring` for volume `v` (done already by an earlier run
    /// counts as done).
    async fn swap_backup(&self, backup_id: &str, v: &Volume) -> Result<Backup, Failure> {
        let changes = BackupChanges {
            status: Some(BackupStatus::Restoring),
            restore_volume_id: Some(Some(v.id.clone())),
            ..BackupChanges::default()
        };
        let backups = &self.deps.backups;
        if let Some(b) =
            backups.update_backup(backup_id, &[BackupStatus::Available], &changes).await.map_err(domain)?
        {
            return Ok(b);
        }
        let b = backups.get_backup(backup_id).await.map_err(domain)?;
        if b.status == BackupStatus::Restoring && b.restore_volume_id.as_deref() == Some(v.id.as_str()) {
            return Ok(b);
        }
        Err(fail(
            ErrorKind::BadRequest,
            format!("Invalid backup: Backup status must be available, not {}.", b.status),
        ))
    }
}

#[async_trait]
impl Task for RestoreBackupCast {
    fn name(&self) -> &str {
        "RestoreBackupCastTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME.name(), VOLUME_SPEC.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let VolumeSpec::Backup { backup_id } = ctx.get(&VOLUME_SPEC)? else {
            return Ok(Values::new());
        };
        let v = ctx.get(&VOLUME)?;
        let id = restore_flow_id(&v.id);
        // A re-run after the hand-off: the restore owns both now (and may have ended).
        if self
            .deps
            .store
            .get_flow(&id)
            .await
            .map_err(|e| fail(ErrorKind::Internal, e.to_string()))?
            .is_some()
        {
            return Ok(Values::new());
        }
        let b = self.swap_backup(&backup_id, &v).await?;
        let expect = VolumeExpect::status_in(&[VolumeStatus::Creating, VolumeStatus::RestoringBackup]);
        let changes = VolumeChanges::status(VolumeStatus::RestoringBackup);
        if self.deps.volumes.update_volume(&v.id, &expect, &changes).await.map_err(domain)?.is_none() {
            return Err(fail(ErrorKind::BadRequest, format!("volume {} left creating", v.id)));
        }
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&BACKUP_UUID, b.id.clone())
            .with(&VOLUME_ID, v.id.clone());
        let h = Handoff {
            name: RESTORE_FLOW,
            id,
            topic: backup_topic(b.host.as_deref().unwrap_or_default()),
            subject: &b.id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let VolumeSpec::Backup { backup_id } = ctx.get(&VOLUME_SPEC)? else {
            return Ok(());
        };
        let v = ctx.get(&VOLUME)?;
        withdraw(&self.deps, &restore_flow_id(&v.id)).await?;
        let expect = VolumeExpect::status_in(&[VolumeStatus::RestoringBackup]);
        let changes = VolumeChanges::status(VolumeStatus::Error);
        self.deps.volumes.update_volume(&v.id, &expect, &changes).await.map_err(domain)?;
        let b = match self.deps.backups.get_backup(&backup_id).await {
            Ok(b) => b,
            Err(ember_common::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(domain(e)),
        };
        if b.restore_volume_id.as_deref() == Some(v.id.as_str()) {
            let changes = BackupChanges {
                status: Some(BackupStatus::Available),
                restore_volume_id: Some(None),
                ..BackupChanges::default()
            };
            self.deps
                .backups
                .update_backup(&b.id, &[BackupStatus::Restoring], &changes)
                .await
                .map_err(domain)?;
        }
        Ok(())
    }
}

/// Marks the volume `available` with its `launched_at`, and emits `volume.create.end`.
/// Revert: nothing.
pub struct CreateVolumeOnFinish {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for CreateVolumeOnFinish {
    fn name(&self) -> &str {
        "CreateVolumeOnFinishTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        let changes = VolumeChanges {
            status: Some(VolumeStatus::Available),
            launched_at: Some(Some(Utc::now())),
            ..VolumeChanges::default()
        };
        let expect = VolumeExpect::status_in(&[VolumeStatus::Creating]);
        if self.deps.volumes.update_volume(&v.id, &expect, &changes).await.map_err(domain)?.is_none() {
            // A re-run after the status was written, or an admin reset it meanwhile.
            tracing::info!(volume_id = %v.id, "the volume left creating before the create finished");
        }
        tracing::info!(event = "volume.create.end", volume_id = %v.id, "notification");
        Ok(Values::new())
    }
}
