//! `volume_extend_manager`: the backend side of an extend (Cinder's
//! `VolumeManager.extend_volume` and `extend_volume_completion`).
//!
//! Steps:
//!
//! 1. `ExtractVolumeRefTask`: reads the volume (in `extending`).
//! 2. `ExtendVolumeOnBackendTask`: the driver grows it (a volume already that large is
//!    left alone, so a re-run is harmless).
//! 3. `ExtendVolumeOnFinishTask`: commits the reservation, then sets the size and the
//!    status the volume had (`available`, or `in-use`) with one compare-and-swap.

use std::sync::Arc;

use ember_common::model::{VolumeChanges, VolumeExpect, VolumeStatus};
use ember_engine::{Context, Failure, Flow, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::domain;
use crate::keys::*;
use crate::manager::create_volume::{ErrorOut, ExtractVolumeRef};
use crate::manager::{driver, driver_failed, driver_volume};
use crate::tasks::restored_status;

/// The flow's name.
pub const FLOW: &str = "volume_extend_manager";

/// The inputs the API records.
pub const INPUTS: &[&str] =
    &[CONTEXT.name(), VOLUME_ID.name(), SIZE.name(), RESERVATIONS.name(), BACKEND.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractVolumeRef {
            deps: deps.clone(),
            error_out: ErrorOut {
                from: VolumeStatus::Extending,
                to: VolumeStatus::ErrorExtending,
                only_own_failure: false,
            },
        })
        .add(ExtendVolumeOnBackend { deps: deps.clone() })
        .add(ExtendVolumeOnFinish { deps })
}

/// Has the driver grow the volume to the new size.
/// Revert: nothing of its own: `ExtractVolumeRefTask`'s revert sets `error_extending` and
/// rolls the reservation back (a no-op once committed), whichever task failed.
pub struct ExtendVolumeOnBackend {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtendVolumeOnBackend {
    fn name(&self) -> &str {
        "ExtendVolumeOnBackendTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME.name(), SIZE.name(), RESERVATIONS.name(), BACKEND.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        let new_size = u64::try_from(ctx.get(&SIZE)?).unwrap_or(0);
        let backend = ctx.get(&BACKEND)?;
        let d = driver(&self.deps, &backend)?;
        d.extend_volume(&driver_volume(&v), new_size)
            .await
            .map_err(|e| driver_failed(&self.deps, &backend, &e))?;
        Ok(Values::new())
    }
}

/// Commits the reservation, then writes the new size and the status the volume had before
/// (`available` or `in-use`, from `previous_status`) (Cinder's
/// `extend_volume_completion`). A re-run commits nothing twice and finds the row done.
/// Revert: nothing.
pub struct ExtendVolumeOnFinish {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtendVolumeOnFinish {
    fn name(&self) -> &str {
        "ExtendVolumeOnFinishTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME_ID.name(), VOLUME.name(), SIZE.name(), RESERVATIONS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        self.deps.quotas.commit(&ctx.get(&RESERVATIONS)?).await.map_err(domain)?;
        let changes = VolumeChanges {
            status: Some(restored_status(&ctx.get(&VOLUME)?)),
            size: Some(ctx.get(&SIZE)?),
            previous_status: Some(None),
            ..VolumeChanges::default()
        };
        let expect = VolumeExpect::status_in(&[VolumeStatus::Extending]);
        self.deps.volumes.update_volume(&ctx.get(&VOLUME_ID)?, &expect, &changes).await.map_err(domain)?;
        tracing::info!(event = "volume.resize.end", volume_id = %ctx.get(&VOLUME_ID)?, "notification");
        Ok(Values::new())
    }
}
