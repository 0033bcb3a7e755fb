//! `snapshot_delete_api`: the API side of Cinder's `volume.api.API.delete_snapshot`.
//!
//! Steps:
//!
//! 1. `SnapshotDeleteEntryTask`: compare-and-swap of the snapshot from `available` or
//!    `error` (any status with an admin's `force`) to `deleting`.
//! 2. `SnapshotDeleteCastTask`: hands the delete to the backend of the snapshot's volume.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{SnapshotChanges, SnapshotStatus};
use ember_common::ops::RequestContext;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::handoff::{Handoff, hand_off, request_flow_id, volume_topic, withdraw};
use crate::keys::*;
use crate::manager::delete_snapshot::FLOW as MANAGER_FLOW;
use crate::tasks::{backend, own_snapshot, swap_snapshot_status};

/// The flow's name.
pub const FLOW: &str = "snapshot_delete_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), SNAPSHOT_ID.name(), FORCE.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(SnapshotDeleteEntry { deps: deps.clone() })
        .add(SnapshotDeleteCast { deps })
}

/// The inputs of one snapshot delete.
pub fn inputs(ctx: &RequestContext, id: &str, force: bool) -> Values {
    Values::new().with(&CONTEXT, ctx.clone()).with(&SNAPSHOT_ID, id.to_owned()).with(&FORCE, force)
}

/// Moves the snapshot to `deleting` with one compare-and-swap; a lost swap is Cinder's
/// `InvalidSnapshot` (400). A re-run after a crash adopts a snapshot already `deleting`.
/// Revert (when a later task failed): a snapshot still in `deleting` goes back to the status
/// this task found. Without a result this run's swap is not known to have happened.
pub struct SnapshotDeleteEntry {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for SnapshotDeleteEntry {
    fn name(&self) -> &str {
        "SnapshotDeleteEntryTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), SNAPSHOT_ID.name(), FORCE.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[SNAPSHOT.name(), PREVIOUS_SNAPSHOT_STATUS.name()] }
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let found = ctx.result().map(|r| r.get(&PREVIOUS_SNAPSHOT_STATUS)).transpose()?.flatten();
        let Some(back) = found else { return Ok(()) };
        swap_snapshot_status(&self.deps, &ctx.get(&SNAPSHOT_ID)?, SnapshotStatus::Deleting, back).await
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let id = ctx.get(&SNAPSHOT_ID)?;
        let force = ctx.get(&FORCE)?;
        if force && !rc.is_admin {
            return Err(fail(
                ErrorKind::Forbidden,
                "Policy doesn't allow volume:snapshot_force_delete to be performed.",
            ));
        }
        let current = own_snapshot(&self.deps, &rc, &id).await?;
        let expected: &[SnapshotStatus] =
            if force { &[] } else { &[SnapshotStatus::Available, SnapshotStatus::Error] };
        let changes =
            SnapshotChanges { status: Some(SnapshotStatus::Deleting), ..SnapshotChanges::default() };
        match self.deps.snapshots.update_snapshot(&id, expected, &changes).await.map_err(domain)? {
            Some(s) => Ok(Values::new().with(&SNAPSHOT, s).with(&PREVIOUS_SNAPSHOT_STATUS, current.status)),
            None if ctx.attempt() > 1 && current.status == SnapshotStatus::Deleting => Ok(Values::new()
                .with(&SNAPSHOT, current)
                .with(&PREVIOUS_SNAPSHOT_STATUS, SnapshotStatus::Error)),
            None => Err(fail(
                ErrorKind::BadRequest,
                "Invalid snapshot: Snapshot status must be available or error and must not be part of a group.",
            )),
        }
    }
}

/// Hands the delete to the backend of the snapshot's volume: records
/// `snapshot_delete_manager` (one per request, see [`request_flow_id`]) and wakes
/// `volume.<host@backend>`.
/// Revert: withdraws the hand-off if no process took it yet; else fails, which ends the
/// flow in FAILURE and leaves the snapshot to the receiving flow.
pub struct SnapshotDeleteCast {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for SnapshotDeleteCast {
    fn name(&self) -> &str {
        "SnapshotDeleteCastTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), SNAPSHOT.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let s = ctx.get(&SNAPSHOT)?;
        let v = self.deps.volumes.get_volume(&s.volume_id).await.map_err(domain)?;
        let backend = backend(&v)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&SNAPSHOT_ID, s.id.clone())
            .with(&BACKEND, backend.clone());
        let h = Handoff {
            name: MANAGER_FLOW,
            id: request_flow_id(MANAGER_FLOW, &s.id, ctx.flow_id()),
            topic: volume_topic(&backend),
            subject: &s.id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        withdraw(&self.deps, &request_flow_id(MANAGER_FLOW, &ctx.get(&SNAPSHOT)?.id, ctx.flow_id())).await
    }
}
