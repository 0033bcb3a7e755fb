//! `backup_delete_backup`: the backup service's side of a delete (Cinder's
//! `BackupManager.delete_backup`).
//!
//! Steps:
//!
//! 1. `ExtractBackupDeleteRefTask`: reads the backup (in `deleting`).
//! 2. `BackupDeleteDataTask`: the backup driver removes the backup and the chunks no other
//!    backup references.
//! 3. `BackupQuotaReleaseReserveTask`: reserves the negated usage (keyed).
//! 4. `BackupDestroyTask`: soft-deletes the row (its parent counts one dependent less) and
//!    commits the release.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::quota::backup_deltas;
use ember_common::model::{BackupChanges, BackupStatus};
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::backup::create_backup::fail_reason;
use crate::backup::{backup_driver, store_failure};
use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::keys::*;
use crate::quota::{key, reserve_release};

/// The flow's name.
pub const FLOW: &str = "backup_delete_backup";

/// The inputs the API records.
pub const INPUTS: &[&str] = &[CONTEXT.name(), BACKUP_UUID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractBackupDeleteRef { deps: deps.clone() })
        .add(BackupDeleteData { deps: deps.clone() })
        .add(BackupQuotaReleaseReserve { deps: deps.clone() })
        .add(BackupDestroy { deps })
}

/// Reads the backup, which must be `deleting`.
/// Revert: the backup goes from `deleting` to `error_deleting`, whichever task failed.
pub struct ExtractBackupDeleteRef {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtractBackupDeleteRef {
    fn name(&self) -> &str {
        "ExtractBackupDeleteRefTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKUP_UUID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[BACKUP.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = self.deps.backups.get_backup(&ctx.get(&BACKUP_UUID)?).await.map_err(domain)?;
        if b.status != BackupStatus::Deleting {
            return Err(fail(
                ErrorKind::BadRequest,
                format!("backup {} is {}, not deleting", b.id, b.status),
            ));
        }
        Ok(Values::new().with(&BACKUP, b))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let changes = BackupChanges {
            status: Some(BackupStatus::ErrorDeleting),
            fail_reason: Some(Some(fail_reason(ctx))),
            ..BackupChanges::default()
        };
        let id = ctx.get(&BACKUP_UUID)?;
        self.deps.backups.update_backup(&id, &[BackupStatus::Deleting], &changes).await.map_err(domain)?;
        Ok(())
    }
}

/// The backup driver deletes the backup (a missing one is deleted already).
/// Revert: nothing (what is deleted stays deleted).
pub struct BackupDeleteData {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BackupDeleteData {
    fn name(&self) -> &str {
        "BackupDeleteDataTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKUP.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        backup_driver(&self.deps)?.delete(&b.id).await.map_err(|e| store_failure(&e))?;
        Ok(Values::new())
    }
}

/// Reserves the negated usage of the backup (once, keyed); the destroy commits it.
/// Revert: nothing (an uncommitted negative reservation changes no usage).
pub struct BackupQuotaReleaseReserve {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BackupQuotaReleaseReserve {
    fn name(&self) -> &str {
        "BackupQuotaReleaseReserveTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKUP.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[RELEASE_RESERVATIONS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        let ids = reserve_release(&self.deps, &key(ctx), &b.project_id, &backup_deltas(b.size)).await?;
        Ok(Values::new().with(&RELEASE_RESERVATIONS, ids))
    }
}

/// Soft-deletes the backup in `deleting`, then commits the release (a re-run finds the
/// row gone and commits nothing twice).
/// Revert: nothing.
pub struct BackupDestroy {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BackupDestroy {
    fn name(&self) -> &str {
        "BackupDestroyTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[BACKUP.name(), RELEASE_RESERVATIONS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        let deleted =
            self.deps.backups.soft_delete_backup(&b.id, &[BackupStatus::Deleting]).await.map_err(domain)?;
        if !deleted && self.deps.backups.get_backup(&b.id).await.is_ok() {
            return Err(fail(
                ErrorKind::BadRequest,
                format!("Invalid backup: Incremental backups exist for backup {}.", b.id),
            ));
        }
        self.deps.quotas.commit(&ctx.get(&RELEASE_RESERVATIONS)?).await.map_err(domain)?;
        tracing::info!(event = "backup.delete.end", backup_id = %b.id, "notification");
        Ok(Values::new())
    }
}
