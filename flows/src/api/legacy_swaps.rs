//! The legacy volume actions that are one compare-and-swap of the volume's status, each a
//! one-task api flow (Cinder's `reserve_volume`, `unreserve_volume`, `begin_detaching`,
//! `roll_detaching` in `cinder/volume/api.py`). They share this file because each flow
//! is its task and nothing more; the tasks are apart so the admin view names each one.
//!
//! - `volume_reserve_api`: `ReserveVolumeTask`: `available` (or `in-use` when multiattach,
//!   expecting the flag read) -> `attaching`.
//! - `volume_unreserve_api`: `UnreserveVolumeTask`: `attaching` -> `in-use` when an
//!   attachment is attached, else `available`.
//! - `volume_begin_detaching_api`: `BeginDetachingTask`: `in-use` and `attached`, not
//!   migrating -> `detaching`.
//! - `volume_roll_detaching_api`: `RollDetachingTask`: `detaching` -> `in-use`.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{AttachStatus, Volume, VolumeChanges, VolumeExpect, VolumeStatus};
use ember_common::ops::RequestContext;
use ember_engine::{Context, Failure, Flow, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::keys::*;
use crate::tasks::own_volume;

/// `os-reserve`.
pub const RESERVE_FLOW: &str = "volume_reserve_api";
/// `os-unreserve`.
pub const UNRESERVE_FLOW: &str = "volume_unreserve_api";
/// `os-begin_detaching`.
pub const BEGIN_DETACHING_FLOW: &str = "volume_begin_detaching_api";
/// `os-roll_detaching`.
pub const ROLL_DETACHING_FLOW: &str = "volume_roll_detaching_api";

/// The inputs every one of them takes.
pub const INPUTS: &[&str] = &[CONTEXT.name(), VOLUME_ID.name()];

/// The inputs of one action on volume `id`.
pub fn inputs(ctx: &RequestContext, id: &str) -> Values {
    Values::new().with(&CONTEXT, ctx.clone()).with(&VOLUME_ID, id.to_owned())
}

/// Builds `volume_reserve_api`.
pub fn reserve_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(RESERVE_FLOW).inputs(INPUTS).add(ReserveVolume { deps })
}

/// Builds `volume_unreserve_api`.
pub fn unreserve_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(UNRESERVE_FLOW).inputs(INPUTS).add(UnreserveVolume { deps })
}

/// Builds `volume_begin_detaching_api`.
pub fn begin_detaching_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(BEGIN_DETACHING_FLOW).inputs(INPUTS).add(BeginDetaching { deps })
}

/// Builds `volume_roll_detaching_api`.
pub fn roll_detaching_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(ROLL_DETACHING_FLOW).inputs(INPUTS).add(RollDetaching { deps })
}

/// One swap of the volume `ctx`'s task names: done when it already has `to` on a re-run,
/// Cinder's `InvalidVolume` when the expectation does not hold.
async fn swap(
    deps: &Deps,
    ctx: &Context,
    expect: VolumeExpect,
    to: VolumeStatus,
    refused: impl FnOnce(&Volume) -> String,
) -> Result<Values, Failure> {
    let id = ctx.get(&VOLUME_ID)?;
    let current = own_volume(deps, &ctx.get(&CONTEXT)?, &id).await?;
    if ctx.attempt() > 1 && current.status == to {
        return Ok(Values::new());
    }
    match deps.volumes.update_volume(&id, &expect, &VolumeChanges::status(to)).await.map_err(domain)? {
        Some(_) => Ok(Values::new()),
        None => Err(fail(ErrorKind::BadRequest, format!("Invalid volume: {}", refused(&current)))),
    }
}

/// Moves the volume from `available` (or a multiattach volume's `in-use`) to `attaching`,
/// expecting the multiattach flag it read.
/// Revert: nothing (the swap is the whole flow).
pub struct ReserveVolume {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ReserveVolume {
    fn name(&self) -> &str {
        "ReserveVolumeTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = own_volume(&self.deps, &ctx.get(&CONTEXT)?, &ctx.get(&VOLUME_ID)?).await?;
        let statuses: &[VolumeStatus] = if v.multiattach {
            &[VolumeStatus::Available, VolumeStatus::InUse]
        } else {
            &[VolumeStatus::Available]
        };
        let expect = VolumeExpect { multiattach: Some(v.multiattach), ..VolumeExpect::status_in(statuses) };
        swap(&self.deps, ctx, expect, VolumeStatus::Attaching, |v| {
            format!("Volume {} status must be available to reserve, but the status is {}.", v.id, v.status)
        })
        .await
    }
}

/// Moves the volume from `attaching` back to `in-use` when one of its attachments is
/// attached, else to `available`.
/// Revert: nothing (the swap is the whole flow).
pub struct UnreserveVolume {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for UnreserveVolume {
    fn name(&self) -> &str {
        "UnreserveVolumeTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let id = ctx.get(&VOLUME_ID)?;
        let live = self.deps.attachments.list_attachments(Some(&id), None).await.map_err(domain)?;
        let to = if live.iter().any(|a| a.attach_status == AttachStatus::Attached) {
            VolumeStatus::InUse
        } else {
            VolumeStatus::Available
        };
        let expect = VolumeExpect::status_in(&[VolumeStatus::Attaching]);
        swap(&self.deps, ctx, expect, to, |v| {
            format!("Volume {} status must be attaching to unreserve, but the status is {}.", v.id, v.status)
        })
        .await
    }
}

/// Moves an `in-use`, `attached`, not migrating volume to `detaching`.
/// Revert: nothing (the swap is the whole flow).
pub struct BeginDetaching {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for BeginDetaching {
    fn name(&self) -> &str {
        "BeginDetachingTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let expect = VolumeExpect {
            attach_status: Some(vec![AttachStatus::Attached]),
            ..VolumeExpect::status_in(&[VolumeStatus::InUse]).not_migrating()
        };
        swap(&self.deps, ctx, expect, VolumeStatus::Detaching, |v| {
            format!(
                "Volume {} status must be in-use and attach_status must be attached to detach, but the \
                 status is {} and attach_status is {}.",
                v.id, v.status, v.attach_status
            )
        })
        .await
    }
}

/// Moves a `detaching` volume back to `in-use`.
/// Revert: nothing (the swap is the whole flow).
pub struct RollDetaching {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for RollDetaching {
    fn name(&self) -> &str {
        "RollDetachingTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let expect = VolumeExpect::status_in(&[VolumeStatus::Detaching]);
        swap(&self.deps, ctx, expect, VolumeStatus::InUse, |v| {
            format!("Volume {} status must be detaching to roll back, but the status is {}.", v.id, v.status)
        })
        .await
    }
}
