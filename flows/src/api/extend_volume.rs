//! `volume_extend_api`: the API side of Cinder's `volume.api.API.extend`.
//!
//! Steps:
//!
//! 1. `ExtendVolumeCheckTask`: reads the volume and checks the new size, its status
//!    (`available`, or `in-use` when the request allows it, microversion 3.42) and its
//!    placement: a refused request has changed nothing.
//! 2. `ExtendQuotaReserveTask`: checks `per_volume_gigabytes` and reserves the gigabytes
//!    the volume grows by (and their per-type copy): a 413 has changed nothing either.
//! 3. `ExtendVolumeEntryTask`: compare-and-swap of the volume from the status step 1 saw
//!    to `extending` (its status saved in `previous_status`); a lost race is a 400 and the
//!    reservation is rolled back.
//! 4. `ExtendVolumeCastTask`: hands the extend to the volume's backend, reservation and all.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{VolumeChanges, VolumeExpect, VolumeStatus};
use ember_common::ops::RequestContext;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::handoff::{Handoff, hand_off, request_flow_id, volume_topic, withdraw};
use crate::keys::*;
use crate::manager::extend_volume::FLOW as MANAGER_FLOW;
use crate::quota::{check_size_limit, extend_deltas, key, reserve};
use crate::tasks::{backend, own_volume, restored_status, type_name};

/// The flow's name.
pub const FLOW: &str = "volume_extend_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), VOLUME_ID.name(), SIZE.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtendVolumeCheck { deps: deps.clone() })
        .add(ExtendQuotaReserve { deps: deps.clone() })
        .add(ExtendVolumeEntry { deps: deps.clone() })
        .add(ExtendVolumeCast { deps })
}

/// The inputs of one extend to `new_size` GiB (of an `in-use` volume too if `allow_in_use`).
pub fn inputs(ctx: &RequestContext, id: &str, new_size: i64, allow_in_use: bool) -> Values {
    Values::new()
        .with(&CONTEXT, ctx.clone())
        .with(&VOLUME_ID, id.to_owned())
        .with(&SIZE, new_size)
        .with(&ALLOW_IN_USE, allow_in_use)
}

/// The statuses an extend starts from.
fn extendable(ctx: &Context) -> Result<&'static [VolumeStatus], Failure> {
    Ok(if ctx.get_optional(&ALLOW_IN_USE)?.unwrap_or(false) {
        &[VolumeStatus::Available, VolumeStatus::InUse]
    } else {
        &[VolumeStatus::Available]
    })
}

/// Cinder's `InvalidVolume` of an extend from `status`.
fn wrong_status(id: &str, statuses: &[VolumeStatus], status: VolumeStatus) -> Failure {
    fail(
        ErrorKind::BadRequest,
        format!(
            "Invalid volume: Volume {id} status must be {} to extend, but current status is: {status}.",
            if statuses.len() > 1 { "available or in-use" } else { "available" },
        ),
    )
}

/// Reads the volume and checks that it grows, is placed and is in a status an extend
/// starts from, changing nothing.
/// Revert: nothing to undo.
pub struct ExtendVolumeCheck {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtendVolumeCheck {
    fn name(&self) -> &str {
        "ExtendVolumeCheckTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME_ID.name(), SIZE.name()] }
    }
    fn optional(&self) -> &[&'static str] {
        // An extend recorded before 3.42 was served has none: `available` only.
        const { &[ALLOW_IN_USE.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[VOLUME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let id = ctx.get(&VOLUME_ID)?;
        let new_size = ctx.get(&SIZE)?;
        let current = own_volume(&self.deps, &rc, &id).await?;
        if new_size <= current.size {
            return Err(fail(
                ErrorKind::BadRequest,
                format!(
                    "Invalid input received: New size for extend must be greater than current size. \
                     (current: {}, extended: {new_size}).",
                    current.size
                ),
            ));
        }
        let statuses = extendable(ctx)?;
        if !statuses.contains(&current.status) {
            return Err(wrong_status(&id, statuses, current.status));
        }
        backend(&current)?;
        Ok(Values::new().with(&VOLUME, current))
    }
}

/// Moves the volume from the status [`ExtendVolumeCheck`] saw to `extending` with one
/// compare-and-swap (a lost swap is Cinder's `InvalidVolume`).
/// Revert: back from `extending` to the status it had.
pub struct ExtendVolumeEntry {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtendVolumeEntry {
    fn name(&self) -> &str {
        "ExtendVolumeEntryTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME_ID.name(), VOLUME.name()] }
    }
    fn optional(&self) -> &[&'static str] {
        const { &[ALLOW_IN_USE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let id = ctx.get(&VOLUME_ID)?;
        let seen = ctx.get(&VOLUME)?;
        let changes = VolumeChanges {
            status: Some(VolumeStatus::Extending),
            previous_status_from_status: true,
            ..VolumeChanges::default()
        };
        let statuses = extendable(ctx)?;
        let expect = VolumeExpect { host: Some(seen.host.clone()), ..VolumeExpect::status_in(statuses) };
        if self.deps.volumes.update_volume(&id, &expect, &changes).await.map_err(domain)?.is_some() {
            return Ok(Values::new());
        }
        let current = self.deps.volumes.get_volume(&id).await.map_err(domain)?;
        if ctx.attempt() > 1 && current.status == VolumeStatus::Extending {
            // An earlier run of this task won the swap and died before its result was stored.
            return Ok(Values::new());
        }
        Err(wrong_status(&id, statuses, current.status))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        if ctx.result().is_none() {
            return Ok(());
        }
        let id = ctx.get(&VOLUME_ID)?;
        let current = self.deps.volumes.get_volume(&id).await.map_err(domain)?;
        let changes = VolumeChanges {
            status: Some(restored_status(&current)),
            previous_status: Some(None),
            ..VolumeChanges::default()
        };
        let expect = VolumeExpect::status_in(&[VolumeStatus::Extending]);
        self.deps.volumes.update_volume(&id, &expect, &changes).await.map_err(domain)?;
        Ok(())
    }
}

/// Checks `per_volume_gigabytes` against the new size and reserves the growth.
/// Revert: rolls the reservation back.
pub struct ExtendQuotaReserve {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtendQuotaReserve {
    fn name(&self) -> &str {
        "ExtendQuotaReserveTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[SIZE.name(), VOLUME.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[RESERVATIONS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        let new_size = ctx.get(&SIZE)?;
        check_size_limit(&self.deps, &v.project_id, new_size).await?;
        let t = type_name(&self.deps, &v.volume_type_id).await?;
        let ids =
            reserve(&self.deps, &key(ctx), &v.project_id, &extend_deltas(new_size - v.size, &t)).await?;
        Ok(Values::new().with(&RESERVATIONS, ids))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        // By key, not by the result: the task may have reserved and then failed or died.
        self.deps.quotas.rollback_once(&key(ctx)).await.map_err(domain)
    }
}

/// Hands the extend to the volume's backend: records `volume_extend_manager` (one per
/// request, see [`request_flow_id`]: a re-extend to the same size after a reset is a new
/// flow) and wakes `volume.<host@backend>`.
/// Revert: withdraws the hand-off if no process took it yet; else fails, which ends the
/// flow in FAILURE and leaves the resource to the receiving flow.
pub struct ExtendVolumeCast {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtendVolumeCast {
    fn name(&self) -> &str {
        "ExtendVolumeCastTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME.name(), SIZE.name(), RESERVATIONS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        let new_size = ctx.get(&SIZE)?;
        let backend = backend(&v)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&VOLUME_ID, v.id.clone())
            .with(&SIZE, new_size)
            .with(&RESERVATIONS, ctx.get(&RESERVATIONS)?)
            .with(&BACKEND, backend.clone());
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
