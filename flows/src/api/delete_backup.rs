//! `backup_delete_api`: the API side of Cinder's `backup.api.API.delete`.
//!
//! Steps:
//!
//! 1. `BackupDeleteEntryTask`: checks the backup has no incremental children and its
//!    backup service is up, then compare-and-swap from `available` or `error` (with
//!    `force`: any status but `deleting` and `restoring`) to `deleting`.
//! 2. `BackupDeleteCastTask`: hands the delete to the backup's service.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{BackupChanges, BackupStatus};
use ember_common::ops::RequestContext;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::backup::delete_backup::FLOW as BACKUP_FLOW;
use crate::backups::{backup_topic, live_backup_hosts, own_backup};
use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::handoff::{Handoff, hand_off, request_flow_id, withdraw};
use crate::keys::*;

/// The flow's name.
pub const FLOW: &str = "backup_delete_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), BACKUP_UUID.name(), FORCE.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(BackupDeleteEntry { deps: deps.clone() })
        .add(BackupDeleteCast { deps })
}

/// The inputs of one delete.
pub fn inputs(ctx: &RequestContext, id: &str, force: bool) -> Values {
    Values::new().with(&CONTEXT, ctx.clone()).with(&BACKUP_UUID, id.to_owned()).with(&FORCE, force)
}

/// Cinder's checks, then one compare-and-swap to `deleting` (a lost swap is Cinder's
/// `InvalidBackup`).
/// Revert: back from `deleting` to the status it had.
pub struct BackupDeleteEntry {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BackupDeleteEntry {
    fn name(&self) -> &str {
        "BackupDeleteEntryTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), BACKUP_UUID.name(), FORCE.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[BACKUP.name(), PREVIOUS_BACKUP_STATUS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let b = own_backup(&self.deps, &rc, &ctx.get(&BACKUP_UUID)?).await?;
        if ctx.attempt() > 1 && b.status == BackupStatus::Deleting {
            // An earlier run swapped and died before its result was stored.
            let previous = BackupStatus::Available;
            return Ok(Values::new().with(&PREVIOUS_BACKUP_STATUS, previous).with(&BACKUP, b));
        }
        let force = ctx.get(&FORCE)?;
        let expected: &[BackupStatus] = if force {
            &[
                BackupStatus::Available,
                BackupStatus::Error,
                BackupStatus::Creating,
                BackupStatus::ErrorDeleting,
            ]
        } else {
            &[BackupStatus::Available, BackupStatus::Error]
        };
        if !expected.contains(&b.status) {
            return Err(fail(
                ErrorKind::BadRequest,
                "Invalid backup: Backup status must be available or error",
            ));
        }
        if b.num_dependent_backups > 0 {
            return Err(fail(
                ErrorKind::BadRequest,
                "Invalid backup: Incremental backups exist for this backup.",
            ));
        }
        let host = b.host.clone().unwrap_or_default();
        if !live_backup_hosts(&self.deps, None).await?.contains(&host) {
            return Err(fail(ErrorKind::Unavailable, "Service cinder-backup could not be found."));
        }
        let changes = BackupChanges { status: Some(BackupStatus::Deleting), ..BackupChanges::default() };
        match self.deps.backups.update_backup(&b.id, &[b.status], &changes).await.map_err(domain)? {
            Some(now) => Ok(Values::new().with(&PREVIOUS_BACKUP_STATUS, b.status).with(&BACKUP, now)),
            None => {
                Err(fail(ErrorKind::BadRequest, "Invalid backup: Backup status must be available or error"))
            }
        }
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let Some(result) = ctx.result() else { return Ok(()) };
        let previous = result.get(&PREVIOUS_BACKUP_STATUS)?.unwrap_or(BackupStatus::Available);
        let changes = BackupChanges { status: Some(previous), ..BackupChanges::default() };
        let id = ctx.get(&BACKUP_UUID)?;
        self.deps.backups.update_backup(&id, &[BackupStatus::Deleting], &changes).await.map_err(domain)?;
        Ok(())
    }
}

/// Hands the delete to the backup's service: records `backup_delete_backup` (one per
/// request) and wakes `backup.<host>`.
/// Revert: withdraws the hand-off if no process took it yet; else fails, leaving the
/// backup to the receiving flow.
pub struct BackupDeleteCast {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BackupDeleteCast {
    fn name(&self) -> &str {
        "BackupDeleteCastTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), BACKUP.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        let inputs = Values::new().with(&CONTEXT, ctx.get(&CONTEXT)?).with(&BACKUP_UUID, b.id.clone());
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
