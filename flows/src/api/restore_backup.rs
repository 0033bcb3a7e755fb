//! `backup_restore_api`: the API side of Cinder's `backup.api.API.restore`, once the
//! target volume exists (a new one is created first by [`crate::FlowBackupOps`]).
//!
//! Steps:
//!
//! 1. `ExtractRestoreRequestTask`: the backup is `available`, the volume `available` and
//!    large enough, the backup's service up.
//! 2. `RestoreBackupSwapTask`: compare-and-swap of the backup to `restoring`.
//! 3. `RestoreVolumeSwapTask`: compare-and-swap of the volume to `restoring-backup`.
//! 4. `RestoreCastTask`: hands the restore to the backup's service.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{BackupChanges, BackupStatus, VolumeChanges, VolumeExpect, VolumeStatus};
use ember_common::ops::RequestContext;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::backup::restore_backup::FLOW as BACKUP_FLOW;
use crate::backups::{backup_topic, live_backup_hosts, own_backup};
use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::handoff::{Handoff, hand_off, request_flow_id, withdraw};
use crate::keys::*;
use crate::tasks::{backend, own_volume};

/// The flow's name.
pub const FLOW: &str = "backup_restore_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), BACKUP_UUID.name(), VOLUME_ID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractRestoreRequest { deps: deps.clone() })
        .add(RestoreBackupSwap { deps: deps.clone() })
        .add(RestoreVolumeSwap { deps: deps.clone() })
        .add(RestoreCast { deps })
}

/// The inputs of one restore of backup `id` into volume `volume_id`.
pub fn inputs(ctx: &RequestContext, id: &str, volume_id: &str) -> Values {
    Values::new()
        .with(&CONTEXT, ctx.clone())
        .with(&BACKUP_UUID, id.to_owned())
        .with(&VOLUME_ID, volume_id.to_owned())
}

/// Cinder's checks of a restore.
/// Revert: nothing (it changes nothing).
pub struct ExtractRestoreRequest {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtractRestoreRequest {
    fn name(&self) -> &str {
        "ExtractRestoreRequestTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), BACKUP_UUID.name(), VOLUME_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[BACKUP.name(), VOLUME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let b = own_backup(&self.deps, &rc, &ctx.get(&BACKUP_UUID)?).await?;
        let v = own_volume(&self.deps, &rc, &ctx.get(&VOLUME_ID)?).await?;
        let rerun = ctx.attempt() > 1 && b.status == BackupStatus::Restoring;
        if b.status != BackupStatus::Available && !rerun {
            return Err(fail(ErrorKind::BadRequest, "Invalid backup: Backup status must be available"));
        }
        let ok_volume =
            v.status == VolumeStatus::Available || (rerun && v.status == VolumeStatus::RestoringBackup);
        if !ok_volume {
            return Err(fail(
                ErrorKind::BadRequest,
                "Invalid volume: Volume to be restored to must be available",
            ));
        }
        if v.size < b.size {
            return Err(fail(
                ErrorKind::BadRequest,
                format!(
                    "Invalid volume: volume size {} is too small to restore backup of size {}.",
                    v.size, b.size
                ),
            ));
        }
        backend(&v)?;
        if !live_backup_hosts(&self.deps, None).await?.contains(&b.host.clone().unwrap_or_default()) {
            return Err(fail(ErrorKind::Unavailable, "Service cinder-backup could not be found."));
        }
        Ok(Values::new().with(&BACKUP, b).with(&VOLUME, v))
    }
}

/// The backup goes from `available` to `restoring`, naming the volume.
/// Revert: back to `available`.
pub struct RestoreBackupSwap {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for RestoreBackupSwap {
    fn name(&self) -> &str {
        "RestoreBackupSwapTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKUP.name(), VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        let volume_id = ctx.get(&VOLUME_ID)?;
        let changes = BackupChanges {
            status: Some(BackupStatus::Restoring),
            restore_volume_id: Some(Some(volume_id.clone())),
            ..BackupChanges::default()
        };
        if self
            .deps
            .backups
            .update_backup(&b.id, &[BackupStatus::Available], &changes)
            .await
            .map_err(domain)?
            .is_some()
        {
            return Ok(Values::new());
        }
        let now = self.deps.backups.get_backup(&b.id).await.map_err(domain)?;
        if ctx.attempt() > 1 && now.restore_volume_id.as_deref() == Some(volume_id.as_str()) {
            return Ok(Values::new());
        }
        Err(fail(ErrorKind::BadRequest, "Invalid backup: Backup status must be available"))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        if ctx.result().is_none() {
            return Ok(());
        }
        let changes = BackupChanges {
            status: Some(BackupStatus::Available),
            restore_volume_id: Some(None),
            ..BackupChanges::default()
        };
        let b = ctx.get(&BACKUP)?;
        self.deps.backups.update_backup(&b.id, &[BackupStatus::Restoring], &changes).await.map_err(domain)?;
        Ok(())
    }
}

/// The volume goes from `available` to `restoring-backup`.
/// Revert: back to `available`.
pub struct RestoreVolumeSwap {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for RestoreVolumeSwap {
    fn name(&self) -> &str {
        "RestoreVolumeSwapTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        if v.status == VolumeStatus::RestoringBackup {
            return Ok(Values::new());
        }
        let changes = VolumeChanges::status(VolumeStatus::RestoringBackup);
        let expect = VolumeExpect::status_in(&[VolumeStatus::Available]).not_migrating();
        if self.deps.volumes.update_volume(&v.id, &expect, &changes).await.map_err(domain)?.is_some() {
            return Ok(Values::new());
        }
        let now = self.deps.volumes.get_volume(&v.id).await.map_err(domain)?;
        if ctx.attempt() > 1 && now.status == VolumeStatus::RestoringBackup {
            return Ok(Values::new());
        }
        Err(fail(ErrorKind::BadRequest, "Invalid volume: Volume to be restored to must be available"))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        if ctx.result().is_none() {
            return Ok(());
        }
        let changes = VolumeChanges::status(VolumeStatus::Available);
        let expect = VolumeExpect::status_in(&[VolumeStatus::RestoringBackup]);
        self.deps.volumes.update_volume(&ctx.get(&VOLUME)?.id, &expect, &changes).await.map_err(domain)?;
        Ok(())
    }
}

/// Hands the restore to the backup's service: records `backup_restore_backup` (one per
/// request) and wakes `backup.<host>`.
/// Revert: withdraws the hand-off if no process took it yet; else fails.
pub struct RestoreCast {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for RestoreCast {
    fn name(&self) -> &str {
        "RestoreCastTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), BACKUP.name(), VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&BACKUP_UUID, b.id.clone())
            .with(&VOLUME_ID, ctx.get(&VOLUME_ID)?);
        let h = Handoff {
            name: BACKUP_FLOW,
            id: request_flow_id(BACKUP_FLOW, &b.id, ctx.flow_id()),
            topic: backup_topic(b.host.as_deref().unwrap_or_default()),
            subject: &b.id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        withdraw(&self.deps, &request_flow_id(BACKUP_FLOW, &ctx.get(&BACKUP)?.id, ctx.flow_id())).await
    }
}
