//! `volume_delete_api`: the API side of Cinder's `volume.api.API.delete`.
//!
//! Steps:
//!
//! 1. `VolumeDeleteEntryTask`: compare-and-swap of the volume to `deleting` under Cinder's
//!    conditions (status, not attached, not migrating, no group, no snapshots). With
//!    `cascade`, the volume's snapshots must instead all be `available` or `error` (any
//!    status with `force`; a non-admin's must all be of their project), and they move to
//!    `deleting` in the same transaction as the volume, or nothing moves.
//! 2. `QuotaReleaseReserveTask` and 3. `EntryDestroyTask`: for a volume that was never
//!    scheduled (no host), the API deletes the row and hands its usage back itself, as
//!    Cinder does; they do nothing for a scheduled volume.
//! 4. `VolumeDeleteCastTask`: hands a scheduled volume to its backend's
//!    `volume_delete_manager` flow, which deletes a cascade's snapshots first.

use std::sync::Arc;

use chrono::Utc;
use ember_common::ErrorKind;
use ember_common::model::{
    AttachStatus, SnapshotChanges, SnapshotStatus, SnapshotsExpect, Volume, VolumeChanges, VolumeExpect,
    VolumeStatus,
};
use ember_common::ops::{DeleteVolume, RequestContext};
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::handoff::{Handoff, hand_off, request_flow_id, volume_topic, withdraw};
use crate::keys::*;
use crate::manager::delete_volume::FLOW as MANAGER_FLOW;
use crate::tasks::{
    EntryDestroy, QuotaReleaseReserve, Released, backend, own_volume, settle_cascaded_snapshots,
};

/// The flow's name.
pub const FLOW: &str = "volume_delete_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), VOLUME_ID.name(), DELETE_OPTIONS.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(VolumeDeleteEntry { deps: deps.clone() })
        .add(QuotaReleaseReserve { deps: deps.clone(), what: Released::Volume, only_unscheduled: true })
        .add(EntryDestroy { deps: deps.clone(), what: Released::Volume, only_unscheduled: true })
        .add(VolumeDeleteCast { deps })
}

/// The inputs of one delete.
pub fn inputs(ctx: &RequestContext, id: &str, opts: DeleteVolume) -> Values {
    Values::new().with(&CONTEXT, ctx.clone()).with(&VOLUME_ID, id.to_owned()).with(&DELETE_OPTIONS, opts)
}

/// Cinder's message when the delete's compare-and-swap is lost.
const INVALID: &str = "Invalid volume: Volume status must be available or error or error_restoring or \
                       error_extending or error_managing and must not be migrating, attached, belong to a \
                       group, have snapshots or be disassociated from snapshots after volume transfer.";

/// Moves the volume to `deleting` (and sets `terminated_at`) with one compare-and-swap; a
/// lost swap is Cinder's `InvalidVolume` (400). With `cascade`, the volume's snapshots move
/// to `deleting` in the same transaction, all or none. A re-run after a crash adopts a
/// volume already in `deleting`. The status it had is kept in `previous_status`.
/// Revert (when a later task failed): a volume still in `deleting` goes back to its previous
/// status (`error_deleting` when none was kept), and the snapshots a cascade moved to
/// `deleting` go to `error` (which of `available` or `error` they had is not kept): nothing
/// is left in transition. Without a result this run's swap is not known to have happened
/// (another request's may have), so nothing is touched.
pub struct VolumeDeleteEntry {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for VolumeDeleteEntry {
    fn name(&self) -> &str {
        "VolumeDeleteEntryTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME_ID.name(), DELETE_OPTIONS.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[VOLUME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let opts = ctx.get(&DELETE_OPTIONS)?;
        let id = ctx.get(&VOLUME_ID)?;
        let current = own_volume(&self.deps, &rc, &id).await?;
        if opts.force && !rc.is_admin {
            return Err(fail(
                ErrorKind::Forbidden,
                "Policy doesn't allow volume:force_delete to be performed.",
            ));
        }
        let mut expect = VolumeExpect {
            attach_status: Some(
                AttachStatus::ALL.iter().copied().filter(|s| *s != AttachStatus::Attached).collect(),
            ),
            group_id: Some(None),
            no_snapshots: !opts.cascade,
            // Cinder refuses a volume with attachments, even forced: detach it first.
            no_attachments: true,
            ..VolumeExpect::default()
        }
        .not_migrating();
        if !opts.force {
            expect.status = Some(VolumeStatus::DELETABLE.to_vec());
        }
        let changes = VolumeChanges {
            status: Some(VolumeStatus::Deleting),
            terminated_at: Some(Some(Utc::now())),
            previous_status_from_status: true,
            ..VolumeChanges::default()
        };
        let won = if opts.cascade {
            self.cascade(&rc, &id, opts.force, &expect, &changes).await?
        } else {
            self.deps.volumes.update_volume(&id, &expect, &changes).await.map_err(domain)?
        };
        match won {
            Some(v) => Ok(Values::new().with(&VOLUME, v)),
            // An earlier run of this task won the swap and died before its result was stored.
            None if ctx.attempt() > 1 && current.status == VolumeStatus::Deleting => {
                Ok(Values::new().with(&VOLUME, current))
            }
            None => Err(fail(ErrorKind::BadRequest, INVALID)),
        }
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        if ctx.result().is_none() {
            return Ok(());
        }
        let id = ctx.get(&VOLUME_ID)?;
        let v = match self.deps.volumes.get_volume(&id).await {
            Ok(v) if v.status == VolumeStatus::Deleting => v,
            Ok(_) | Err(ember_common::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(domain(e)),
        };
        let back = v
            .previous_status
            .as_deref()
            .and_then(|s| s.parse::<VolumeStatus>().ok())
            .filter(|s| *s != VolumeStatus::Deleting)
            .unwrap_or(VolumeStatus::ErrorDeleting);
        let changes =
            VolumeChanges { status: Some(back), previous_status: Some(None), ..VolumeChanges::default() };
        let expect = VolumeExpect::status_in(&[VolumeStatus::Deleting]);
        self.deps.volumes.update_volume(&id, &expect, &changes).await.map_err(domain)?;
        if ctx.get(&DELETE_OPTIONS)?.cascade {
            settle_cascaded_snapshots(&self.deps, &id, SnapshotStatus::Error).await?;
        }
        Ok(())
    }
}

impl VolumeDeleteEntry {
    /// Cinder's cascade conditions on the snapshots (`volume_has_undeletable_snapshots_filter`,
    /// and `volume_has_other_project_snp_filter` for non-admins), applied with the volume's
    /// swap in one transaction, so a refusal changes no row (Cinder's separate swaps leave
    /// the volume in `error_deleting` when a snapshot's is lost).
    async fn cascade(
        &self,
        rc: &RequestContext,
        id: &str,
        force: bool,
        expect: &VolumeExpect,
        changes: &VolumeChanges,
    ) -> Result<Option<Volume>, Failure> {
        let snapshots = SnapshotsExpect {
            status: if force { Vec::new() } else { SnapshotStatus::DELETABLE.to_vec() },
            project_id: (!rc.is_admin).then(|| rc.project_id.clone()),
        };
        let to_deleting =
            SnapshotChanges { status: Some(SnapshotStatus::Deleting), ..SnapshotChanges::default() };
        let won = self
            .deps
            .volumes
            .update_volume_cascade(id, expect, changes, &snapshots, &to_deleting)
            .await
            .map_err(domain)?;
        Ok(won.map(|(v, _)| v))
    }
}

/// Hands a scheduled volume to its backend: records `volume_delete_manager` (one per
/// request, see [`request_flow_id`]) and wakes `volume.<host@backend>`.
/// Revert: withdraws the hand-off if no process took it yet; else fails, which ends the
/// flow in FAILURE and leaves the volume to the receiving flow.
pub struct VolumeDeleteCast {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for VolumeDeleteCast {
    fn name(&self) -> &str {
        "VolumeDeleteCastTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME.name(), DELETE_OPTIONS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        if v.host.is_none() {
            return Ok(Values::new());
        }
        let backend = backend(&v)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&VOLUME_ID, v.id.clone())
            .with(&BACKEND, backend.clone())
            .with(&CASCADE, ctx.get(&DELETE_OPTIONS)?.cascade);
        let h = Handoff {
            name: MANAGER_FLOW,
            id: request_flow_id(MANAGER_FLOW, &v.id, ctx.flow_id()),
            topic: volume_topic(&backend),
            subject: &v.id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        withdraw(&self.deps, &request_flow_id(MANAGER_FLOW, &ctx.get(&VOLUME)?.id, ctx.flow_id())).await
    }
}
