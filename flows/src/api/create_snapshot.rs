//! `snapshot_create_api`: the API side of Cinder's `volume.api.API.create_snapshot`.
//!
//! Steps:
//!
//! 1. `ExtractSnapshotRequestTask`: the volume must be placed and `available` (or
//!    `in-use` with `force`) and not migrating.
//! 2. `SnapshotQuotaReserveTask`: reserves `snapshots` and `gigabytes` (and per-type).
//! 3. `SnapshotEntryCreateTask`: inserts the row in `creating` under the id fixed in the
//!    inputs.
//! 4. `SnapshotQuotaCommitTask`: turns the reservation into usage.
//! 5. `SnapshotCastTask`: hands the snapshot to the volume's backend.

use std::sync::Arc;

use ember_common::model::{Snapshot, SnapshotStatus, VolumeStatus, VolumeType};
use ember_common::ops::{CreateSnapshot, RequestContext};
use ember_common::{Error as DomainError, ErrorKind};
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::handoff::{Handoff, flow_id, hand_off, volume_topic, withdraw};
use crate::keys::*;
use crate::manager::create_snapshot::FLOW as MANAGER_FLOW;
use crate::quota::{key, release_now, reserve, revert_key, snapshot_deltas};
use crate::tasks::{backend, own_volume};

/// The flow's name.
pub const FLOW: &str = "snapshot_create_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), SNAPSHOT_REQUEST.name(), NEW_ID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractSnapshotRequest { deps: deps.clone() })
        .add(SnapshotQuotaReserve { deps: deps.clone() })
        .add(SnapshotEntryCreate { deps: deps.clone() })
        .add(SnapshotQuotaCommit { deps: deps.clone() })
        .add(SnapshotCast { deps })
}

/// The inputs of one snapshot create.
pub fn inputs(ctx: &RequestContext, req: CreateSnapshot, new_id: &str) -> Values {
    Values::new().with(&CONTEXT, ctx.clone()).with(&SNAPSHOT_REQUEST, req).with(&NEW_ID, new_id.to_owned())
}

/// Checks the volume can be snapshotted and resolves its type.
/// Revert: nothing.
pub struct ExtractSnapshotRequest {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtractSnapshotRequest {
    fn name(&self) -> &str {
        "ExtractSnapshotRequestTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), SNAPSHOT_REQUEST.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[VOLUME.name(), VOLUME_TYPE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let req = ctx.get(&SNAPSHOT_REQUEST)?;
        let v = own_volume(&self.deps, &rc, &req.volume_id).await?;
        let allowed = v.status == VolumeStatus::Available || (req.force && v.status == VolumeStatus::InUse);
        let migrating =
            v.migration_status.as_deref().is_some_and(|m| !["deleting", "error", "success"].contains(&m));
        if !allowed || migrating || v.host.is_none() {
            return Err(fail(
                ErrorKind::BadRequest,
                format!(
                    "Invalid volume: Volume {} status must be available, but current status is: {}.",
                    v.id, v.status
                ),
            ));
        }
        let vt: VolumeType = self.deps.types.get_volume_type(&v.volume_type_id).await.map_err(domain)?;
        Ok(Values::new().with(&VOLUME, v).with(&VOLUME_TYPE, vt))
    }
}

/// Reserves the snapshot's quota.
/// Revert: rolls the reservation back (a no-op once committed).
pub struct SnapshotQuotaReserve {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for SnapshotQuotaReserve {
    fn name(&self) -> &str {
        "SnapshotQuotaReserveTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME.name(), VOLUME_TYPE.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[RESERVATIONS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let v = ctx.get(&VOLUME)?;
        let t = ctx.get(&VOLUME_TYPE)?;
        let ids =
            reserve(&self.deps, &key(ctx), &rc.project_id, &snapshot_deltas(1, v.size, &t.name)).await?;
        Ok(Values::new().with(&RESERVATIONS, ids))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        // By key, not by the result: the task may have reserved and then failed or died.
        self.deps.quotas.rollback_once(&key(ctx)).await.map_err(domain)
    }
}

/// Inserts the snapshot row in `creating`; a row an earlier attempt inserted is adopted.
/// Revert: soft-deletes the row while it is still `creating`.
pub struct SnapshotEntryCreate {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for SnapshotEntryCreate {
    fn name(&self) -> &str {
        "SnapshotEntryCreateTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), SNAPSHOT_REQUEST.name(), NEW_ID.name(), VOLUME.name(), RESERVATIONS.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[SNAPSHOT_ID.name(), SNAPSHOT.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let req = ctx.get(&SNAPSHOT_REQUEST)?;
        let v = ctx.get(&VOLUME)?;
        let mut s =
            Snapshot::new(ctx.get(&NEW_ID)?, &rc.project_id, &rc.user_id, &v.id, &v.volume_type_id, v.size);
        s.name = req.name;
        s.description = req.description;
        s.metadata = req.metadata;
        s.progress = Some("0%".to_owned());
        // Decided under the volume's row lock: a delete of the volume racing this insert
        // has one winner (the delete refuses a volume with snapshots).
        let allowed: &[VolumeStatus] = if req.force {
            &[VolumeStatus::Available, VolumeStatus::InUse]
        } else {
            &[VolumeStatus::Available]
        };
        let snap = match self.deps.snapshots.create_snapshot_of(&s, allowed).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(fail(
                    ErrorKind::BadRequest,
                    format!("Invalid volume: Volume {} status must be available, but it changed.", v.id),
                ));
            }
            Err(ember_common::Error::Duplicate { .. }) => {
                self.deps.snapshots.get_snapshot(&s.id).await.map_err(domain)?
            }
            Err(e) => return Err(domain(e)),
        };
        Ok(Values::new().with(&SNAPSHOT_ID, snap.id.clone()).with(&SNAPSHOT, snap))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        self.deps
            .snapshots
            .soft_delete_snapshot(&ctx.get(&NEW_ID)?, &[SnapshotStatus::Creating])
            .await
            .map_err(domain)?;
        Ok(())
    }
}

/// Commits the reservation.
/// Revert: destroys the entry and, once it is gone, makes sure the reservation was
/// committed and hands the usage back, once (keyed), as `QuotaCommitTask` does.
pub struct SnapshotQuotaCommit {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for SnapshotQuotaCommit {
    fn name(&self) -> &str {
        "SnapshotQuotaCommitTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[RESERVATIONS.name(), SNAPSHOT.name(), VOLUME_TYPE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        self.deps.quotas.commit(&ctx.get(&RESERVATIONS)?).await.map_err(domain)?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let s = ctx.get(&SNAPSHOT)?;
        let snapshots = &self.deps.snapshots;
        let destroyed =
            snapshots.soft_delete_snapshot(&s.id, &[SnapshotStatus::Creating]).await.map_err(domain)?
                || matches!(snapshots.get_snapshot(&s.id).await, Err(DomainError::NotFound { .. }));
        if destroyed {
            self.deps.quotas.commit(&ctx.get(&RESERVATIONS)?).await.map_err(domain)?;
            let t = ctx.get(&VOLUME_TYPE)?;
            release_now(
                &self.deps,
                &revert_key(ctx),
                &s.project_id,
                &snapshot_deltas(1, s.volume_size, &t.name),
            )
            .await?;
        }
        Ok(())
    }
}

/// Hands the snapshot to its volume's backend: records `snapshot_create_manager` and
/// wakes `volume.<host@backend>`.
/// Revert: withdraws the hand-off if no process took it yet; else fails, which ends the
/// flow in FAILURE and leaves the resource to the receiving flow. After a withdrawal,
/// `SnapshotQuotaCommitTask`'s revert destroys the entry.
pub struct SnapshotCast {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for SnapshotCast {
    fn name(&self) -> &str {
        "SnapshotCastTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME.name(), SNAPSHOT.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        let s = ctx.get(&SNAPSHOT)?;
        let backend = backend(&v)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&SNAPSHOT_ID, s.id.clone())
            .with(&BACKEND, backend.clone());
        let h = Handoff {
            name: MANAGER_FLOW,
            id: flow_id(MANAGER_FLOW, &s.id, None),
            topic: volume_topic(&backend),
            subject: &s.id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        withdraw(&self.deps, &flow_id(MANAGER_FLOW, &ctx.get(&SNAPSHOT)?.id, None)).await
    }
}
