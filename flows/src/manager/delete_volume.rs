//! `volume_delete_manager`: the backend side of a delete (Cinder's
//! `VolumeManager.delete_volume`).
//!
//! Steps:
//!
//! 1. `ExtractVolumeRefTask`: reads the volume (in `deleting`).
//! 2. `DeleteVolumeOnBackendTask`: the driver deletes it (a missing volume is deleted).
//! 3. `QuotaReleaseReserveTask`: reserves the negated usage.
//! 4. `EntryDestroyTask`: soft-deletes the row and commits the release.

use std::sync::Arc;

use ember_common::model::{VolumeChanges, VolumeExpect, VolumeStatus};
use ember_drivers::DriverError;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::{domain, driver as driver_failure};
use crate::keys::*;
use crate::manager::create_volume::{ErrorOut, ExtractVolumeRef};
use crate::manager::{driver, driver_volume};
use crate::tasks::{EntryDestroy, QuotaReleaseReserve, Released};

/// The flow's name.
pub const FLOW: &str = "volume_delete_manager";

/// The inputs the API records.
pub const INPUTS: &[&str] = &[CONTEXT.name(), VOLUME_ID.name(), BACKEND.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractVolumeRef {
            deps: deps.clone(),
            error_out: ErrorOut {
                from: VolumeStatus::Deleting,
                to: VolumeStatus::ErrorDeleting,
                only_own_failure: false,
            },
        })
        .add(DeleteVolumeOnBackend { deps: deps.clone() })
        .add(QuotaReleaseReserve { deps: deps.clone(), what: Released::Volume, only_unscheduled: false })
        .add(EntryDestroy { deps, what: Released::Volume, only_unscheduled: false })
}

/// Has the driver delete the volume.
/// Revert: `error_deleting` (or back to `available` when the backend said it is busy).
pub struct DeleteVolumeOnBackend {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for DeleteVolumeOnBackend {
    fn name(&self) -> &str {
        "DeleteVolumeOnBackendTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME.name(), BACKEND.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        let d = driver(&self.deps, &ctx.get(&BACKEND)?)?;
        match d.delete_volume(&driver_volume(&v)).await {
            Ok(()) | Err(DriverError::NotFound { .. }) => Ok(Values::new()),
            Err(e @ DriverError::Busy(_)) => Err(Failure::new("driver.busy", e.to_string())),
            Err(e) => Err(driver_failure(&e)),
        }
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let busy = ctx.failure().is_some_and(|f| f.kind == "driver.busy");
        let status = if busy { VolumeStatus::Available } else { VolumeStatus::ErrorDeleting };
        let expect = VolumeExpect::status_in(&[VolumeStatus::Deleting]);
        self.deps
            .volumes
            .update_volume(&ctx.get(&VOLUME)?.id, &expect, &VolumeChanges::status(status))
            .await
            .map_err(domain)?;
        Ok(())
    }
}
