//! `backup_create_api`: the API side of Cinder's `backup.api.API.create`.
//!
//! Steps:
//!
//! 1. `ExtractBackupRequestTask`: checks the volume (and snapshot) may be backed up, finds
//!    the parent of an incremental backup and chooses a live backup service (none: 503).
//! 2. `BackupQuotaReserveTask`: reserves `backups` and `backup_gigabytes`.
//! 3. `BackupVolumeSwapTask`: compare-and-swap of the volume from `available` (or `in-use`
//!    with `force`) to `backing-up`, its status kept in `previous_status`; a backup of a
//!    snapshot swaps the snapshot to `backing-up` instead.
//! 4. `BackupEntryCreateTask`: inserts the backup in `creating` on the chosen host.
//! 5. `BackupQuotaCommitTask`: commits the reservation.
//! 6. `BackupCastTask`: hands the backup to its backup service (`backup_create_backup`).

use std::sync::Arc;

use ember_common::model::quota::backup_deltas;
use ember_common::model::{
    Backup, BackupFilter, BackupStatus, ListOptions, SnapshotChanges, SnapshotStatus, VolumeChanges,
    VolumeExpect, VolumeStatus,
};
use ember_common::ops::{CreateBackup, RequestContext};
use ember_common::{Error as DomainError, ErrorKind};
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::backup::create_backup::FLOW as BACKUP_FLOW;
use crate::backups::{backup_topic, choose_backup_host, restore_volume_status};
use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::handoff::{Handoff, flow_id, hand_off, withdraw};
use crate::keys::*;
use crate::quota::{key, release_now, revert_key};
use crate::tasks::{own_snapshot, own_volume};

/// The flow's name.
pub const FLOW: &str = "backup_create_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), BACKUP_REQUEST.name(), NEW_ID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractBackupRequest { deps: deps.clone() })
        .add(BackupQuotaReserve { deps: deps.clone() })
        .add(BackupVolumeSwap { deps: deps.clone() })
        .add(BackupEntryCreate { deps: deps.clone() })
        .add(BackupQuotaCommit { deps: deps.clone() })
        .add(BackupCast { deps })
}

/// The inputs of one create; `id` is the new backup's.
pub fn inputs(ctx: &RequestContext, req: CreateBackup, id: &str) -> Values {
    Values::new().with(&CONTEXT, ctx.clone()).with(&BACKUP_REQUEST, req).with(&NEW_ID, id.to_owned())
}

/// Cinder's checks: the volume is `available` (or `in-use` with `force`, or when a snapshot
/// is backed up), the snapshot is the volume's and `available`, an incremental backup has
/// an available parent; then a live backup service is chosen.
/// Revert: nothing (it changes nothing).
pub struct ExtractBackupRequest {
    deps: Arc<Deps>,
}

impl ExtractBackupRequest {
    /// The newest available backup of `volume_id`: an incremental backup's parent.
    async fn parent(&self, volume_id: &str) -> Result<String, Failure> {
        let filter = BackupFilter {
            volume_id: Some(volume_id.to_owned()),
            status: Some(BackupStatus::Available),
            ..BackupFilter::default()
        };
        let all = self.deps.backups.list_backups(&filter, &ListOptions::default()).await.map_err(domain)?;
        all.into_iter()
            .max_by_key(|b| (b.data_timestamp.unwrap_or(b.created_at), b.created_at))
            .map(|b| b.id)
            .ok_or_else(|| {
                fail(
                    ErrorKind::BadRequest,
                    "Invalid backup: No backups available to do an incremental backup.",
                )
            })
    }
}

#[async_trait]
impl Task for ExtractBackupRequest {
    fn name(&self) -> &str {
        "ExtractBackupRequestTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), BACKUP_REQUEST.name(), NEW_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[VOLUME.name(), SIZE.name(), PARENT_BACKUP_ID.name(), BACKUP_HOST.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let req = ctx.get(&BACKUP_REQUEST)?;
        let v = own_volume(&self.deps, &rc, &req.volume_id).await?;
        let mut size = v.size;
        if let Some(sid) = &req.snapshot_id {
            let s = own_snapshot(&self.deps, &rc, sid).await?;
            if s.volume_id != v.id {
                return Err(fail(
                    ErrorKind::BadRequest,
                    format!("Invalid snapshot: Snapshot {sid} is not a snapshot of volume {}.", v.id),
                ));
            }
            let rerun = ctx.attempt() > 1 && s.status == SnapshotStatus::BackingUp;
            if s.status != SnapshotStatus::Available && !rerun {
                return Err(fail(
                    ErrorKind::BadRequest,
                    format!(
                        "Invalid snapshot: Snapshot to be backed up must be available, but the current status \
                         is \"{}\".",
                        s.status
                    ),
                ));
            }
            size = s.volume_size;
        }
        let in_use_allowed = req.force || req.snapshot_id.is_some();
        match v.status {
            VolumeStatus::Available => {}
            VolumeStatus::InUse if in_use_allowed => {}
            VolumeStatus::InUse => {
                return Err(fail(
                    ErrorKind::BadRequest,
                    "Invalid volume: Backing up an in-use volume must use the force flag.",
                ));
            }
            VolumeStatus::BackingUp if ctx.attempt() > 1 => {}
            other => {
                return Err(fail(
                    ErrorKind::BadRequest,
                    format!(
                        "Invalid volume: Volume to be backed up must be available or in-use, but the current \
                         status is \"{other}\"."
                    ),
                ));
            }
        }
        let parent = if req.incremental { Some(self.parent(&v.id).await?) } else { None };
        let zone = req.availability_zone.clone().unwrap_or_else(|| v.availability_zone.clone());
        let host = choose_backup_host(&self.deps, &v, Some(&zone), &ctx.get(&NEW_ID)?).await?;
        Ok(Values::new()
            .with(&VOLUME, v)
            .with(&SIZE, size)
            .with(&PARENT_BACKUP_ID, parent)
            .with(&BACKUP_HOST, host))
    }
}

/// Reserves one backup and its GiB (keyed: a re-run gets the same reservation back), with
/// Cinder's 413 messages.
/// Revert: rolls the reservation back (by key).
pub struct BackupQuotaReserve {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BackupQuotaReserve {
    fn name(&self) -> &str {
        "BackupQuotaReserveTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME.name(), SIZE.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[RESERVATIONS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        let size = ctx.get(&SIZE)?;
        let expire = chrono::Duration::from_std(self.deps.config.reservation_expire)
            .unwrap_or(chrono::Duration::days(1));
        let ids = self
            .deps
            .quotas
            .reserve_once(&key(ctx), &v.project_id, &backup_deltas(size), chrono::Utc::now() + expire)
            .await
            .map_err(|e| over_quota(e, size))?;
        Ok(Values::new().with(&RESERVATIONS, ids))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        self.deps.quotas.rollback_once(&key(ctx)).await.map_err(domain)
    }
}

/// Moves the volume to `backing-up` with one compare-and-swap, its status kept in
/// `previous_status` (a lost swap is Cinder's `InvalidVolume`); a backup of a snapshot
/// swaps the snapshot from `available` to `backing-up` instead and leaves the volume as it
/// is, as Cinder does.
/// Revert: the swapped one goes back from `backing-up` to the status it had.
pub struct BackupVolumeSwap {
    deps: Arc<Deps>,
}

impl BackupVolumeSwap {
    async fn swap_snapshot(&self, ctx: &Context, sid: &str) -> Result<Values, Failure> {
        let changes =
            SnapshotChanges { status: Some(SnapshotStatus::BackingUp), ..SnapshotChanges::default() };
        let snapshots = &self.deps.snapshots;
        if snapshots
            .update_snapshot(sid, &[SnapshotStatus::Available], &changes)
            .await
            .map_err(domain)?
            .is_some()
        {
            return Ok(Values::new());
        }
        let now = snapshots.get_snapshot(sid).await.map_err(domain)?;
        if ctx.attempt() > 1 && now.status == SnapshotStatus::BackingUp {
            return Ok(Values::new());
        }
        Err(fail(
            ErrorKind::BadRequest,
            format!(
                "Invalid snapshot: Snapshot to be backed up must be available, but the current status is \"{}\".",
                now.status
            ),
        ))
    }
}

#[async_trait]
impl Task for BackupVolumeSwap {
    fn name(&self) -> &str {
        "BackupVolumeSwapTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME.name(), BACKUP_REQUEST.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        let req = ctx.get(&BACKUP_REQUEST)?;
        if let Some(sid) = &req.snapshot_id {
            return self.swap_snapshot(ctx, sid).await;
        }
        if v.status == VolumeStatus::BackingUp {
            // Seen by a re-run of the extract task: an earlier run of this task swapped.
            return Ok(Values::new());
        }
        let statuses: &[VolumeStatus] = if req.force || req.snapshot_id.is_some() {
            &[VolumeStatus::Available, VolumeStatus::InUse]
        } else {
            &[VolumeStatus::Available]
        };
        let changes = VolumeChanges {
            status: Some(VolumeStatus::BackingUp),
            previous_status_from_status: true,
            ..VolumeChanges::default()
        };
        let expect = VolumeExpect::status_in(statuses).not_migrating();
        match self.deps.volumes.update_volume(&v.id, &expect, &changes).await.map_err(domain)? {
            Some(_) => Ok(Values::new()),
            None if ctx.attempt() > 1
                && self.deps.volumes.get_volume(&v.id).await.map_err(domain)?.status
                    == VolumeStatus::BackingUp =>
            {
                Ok(Values::new())
            }
            None => Err(fail(
                ErrorKind::BadRequest,
                format!(
                    "Invalid volume: Volume to be backed up must be available or in-use, but the current status \
                     is \"{}\".",
                    self.deps
                        .volumes
                        .get_volume(&v.id)
                        .await
                        .map(|v| v.status.to_string())
                        .unwrap_or_default()
                ),
            )),
        }
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        if ctx.result().is_none() {
            return Ok(());
        }
        if let Some(sid) = ctx.get(&BACKUP_REQUEST)?.snapshot_id {
            let changes =
                SnapshotChanges { status: Some(SnapshotStatus::Available), ..SnapshotChanges::default() };
            let snapshots = &self.deps.snapshots;
            snapshots.update_snapshot(&sid, &[SnapshotStatus::BackingUp], &changes).await.map_err(domain)?;
            return Ok(());
        }
        restore_volume_status(&self.deps, &ctx.get(&VOLUME)?.id, VolumeStatus::BackingUp).await
    }
}

/// Inserts the backup in `creating` under the id fixed in the inputs (a re-run finds the
/// row an earlier run made).
/// Revert: soft-deletes the row (in `creating`); its parent counts one dependent less.
pub struct BackupEntryCreate {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BackupEntryCreate {
    fn name(&self) -> &str {
        "BackupEntryCreateTask"
    }
    fn requires(&self) -> &[&'static str] {
        const {
            &[
                CONTEXT.name(),
                BACKUP_REQUEST.name(),
                NEW_ID.name(),
                VOLUME.name(),
                SIZE.name(),
                PARENT_BACKUP_ID.name(),
                BACKUP_HOST.name(),
            ]
        }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[BACKUP.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let id = ctx.get(&NEW_ID)?;
        if let Ok(existing) = self.deps.backups.get_backup(&id).await {
            return Ok(Values::new().with(&BACKUP, existing));
        }
        let rc = ctx.get(&CONTEXT)?;
        let req = ctx.get(&BACKUP_REQUEST)?;
        let v = ctx.get(&VOLUME)?;
        let mut b = Backup::new(&id, &v.project_id, &rc.user_id, &v.id, ctx.get(&SIZE)?);
        b.name = req.name;
        b.description = req.description;
        b.snapshot_id = req.snapshot_id;
        b.metadata = req.metadata;
        b.availability_zone = Some(req.availability_zone.unwrap_or_else(|| v.availability_zone.clone()));
        b.container = Some(req.container.unwrap_or_else(|| self.deps.config.backup_container.clone()));
        b.host = Some(ctx.get(&BACKUP_HOST)?);
        b.parent_id = ctx.get(&PARENT_BACKUP_ID)?;
        b.data_timestamp = Some(b.created_at);
        match self.deps.backups.create_backup(&b).await {
            Ok(b) => Ok(Values::new().with(&BACKUP, b)),
            Err(DomainError::Duplicate { .. }) => {
                let b = self.deps.backups.get_backup(&id).await.map_err(domain)?;
                Ok(Values::new().with(&BACKUP, b))
            }
            Err(DomainError::NotFound { .. }) => Err(fail(
                ErrorKind::BadRequest,
                "Invalid backup: the parent backup of this incremental backup is gone.",
            )),
            Err(e) => Err(domain(e)),
        }
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let id = ctx.get(&NEW_ID)?;
        self.deps.backups.soft_delete_backup(&id, &[BackupStatus::Creating]).await.map_err(domain)?;
        Ok(())
    }
}

/// Commits the reservation: the backup now counts in `in_use`.
/// Revert: once the entry is gone (the reverts after it ran), makes sure the reservation
/// was committed and hands the usage back, once (keyed).
pub struct BackupQuotaCommit {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BackupQuotaCommit {
    fn name(&self) -> &str {
        "BackupQuotaCommitTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[RESERVATIONS.name(), BACKUP.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        self.deps.quotas.commit(&ctx.get(&RESERVATIONS)?).await.map_err(domain)?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let b = ctx.get(&BACKUP)?;
        let destroyed =
            self.deps.backups.soft_delete_backup(&b.id, &[BackupStatus::Creating]).await.map_err(domain)?
                || matches!(self.deps.backups.get_backup(&b.id).await, Err(DomainError::NotFound { .. }));
        if destroyed {
            self.deps.quotas.commit(&ctx.get(&RESERVATIONS)?).await.map_err(domain)?;
            release_now(&self.deps, &revert_key(ctx), &b.project_id, &backup_deltas(b.size)).await?;
        }
        Ok(())
    }
}

/// Hands the backup to the chosen backup service: records `backup_create_backup` and wakes
/// `backup.<host>` (Cinder's cast of `create_backup`).
/// Revert: withdraws the hand-off if no process took it yet; else fails, which ends the
/// flow in FAILURE and leaves the backup to the receiving flow.
pub struct BackupCast {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BackupCast {
    fn name(&self) -> &str {
        "BackupCastTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), BACKUP.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let b = ctx.get(&BACKUP)?;
        let host = b.host.clone().unwrap_or_default();
        let inputs = Values::new().with(&CONTEXT, ctx.get(&CONTEXT)?).with(&BACKUP_UUID, b.id.clone());
        let h = Handoff {
            name: BACKUP_FLOW,
            id: flow_id(BACKUP_FLOW, &b.id, None),
            topic: backup_topic(&host),
            subject: &b.id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        withdraw(&self.deps, &flow_id(BACKUP_FLOW, &ctx.get(&BACKUP)?.id, None)).await
    }
}

/// Cinder's `BackupLimitExceeded` and `VolumeBackupSizeExceedsAvailableQuota` (413).
fn over_quota(err: DomainError, size: i64) -> Failure {
    let DomainError::OverQuota(overs) = &err else { return domain(err) };
    let Some(over) = overs.first() else { return domain(err) };
    let u = &over.usage;
    if over.resource.contains("gigabytes") {
        fail(
            ErrorKind::OverLimit,
            format!(
                "Requested backup exceeds allowed Backup gigabytes quota. Requested {size}G, quota is {}G and \
                 {}G has been consumed.",
                u.limit,
                u.in_use + u.reserved
            ),
        )
    } else {
        fail(ErrorKind::OverLimit, format!("Maximum number of backups allowed ({}) exceeded", u.limit))
    }
}
