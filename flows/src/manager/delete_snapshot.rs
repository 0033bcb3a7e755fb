//! `snapshot_delete_manager`: the backend side of a snapshot delete (Cinder's
//! `VolumeManager.delete_snapshot`).
//!
//! Steps:
//!
//! 1. `ExtractSnapshotRefTask`: reads the snapshot (in `deleting`).
//! 2. `DeleteSnapshotOnBackendTask`: the driver deletes it (a missing one is deleted).
//! 3. `QuotaReleaseReserveTask`: reserves the negated usage.
//! 4. `EntryDestroyTask`: soft-deletes the row and commits the release.

use std::sync::Arc;

use ember_common::model::SnapshotStatus;
use ember_drivers::DriverError;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::driver as driver_failure;
use crate::keys::*;
use crate::manager::{driver, driver_snapshot};
use crate::tasks::{EntryDestroy, ExtractSnapshotRef, QuotaReleaseReserve, Released, swap_snapshot_status};

/// The flow's name.
pub const FLOW: &str = "snapshot_delete_manager";

/// The inputs the API records.
pub const INPUTS: &[&str] = &[CONTEXT.name(), SNAPSHOT_ID.name(), BACKEND.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractSnapshotRef {
            deps: deps.clone(),
            error_out: (SnapshotStatus::Deleting, SnapshotStatus::ErrorDeleting),
        })
        .add(DeleteSnapshotOnBackend { deps: deps.clone() })
        .add(QuotaReleaseReserve { deps: deps.clone(), what: Released::Snapshot, only_unscheduled: false })
        .add(EntryDestroy { deps, what: Released::Snapshot, only_unscheduled: false })
}

/// Has the driver delete the snapshot.
/// Revert: `error_deleting`, or back to `available` when the backend said it is busy.
pub struct DeleteSnapshotOnBackend {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for DeleteSnapshotOnBackend {
    fn name(&self) -> &str {
        "DeleteSnapshotOnBackendTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[SNAPSHOT.name(), BACKEND.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let s = ctx.get(&SNAPSHOT)?;
        let d = driver(&self.deps, &ctx.get(&BACKEND)?)?;
        match d.delete_snapshot(&driver_snapshot(&s)).await {
            Ok(()) | Err(DriverError::NotFound { .. }) => Ok(Values::new()),
            Err(e @ DriverError::Busy(_)) => Err(Failure::new("driver.busy", e.to_string())),
            Err(e) => Err(driver_failure(&e)),
        }
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let busy = ctx.failure().is_some_and(|f| f.kind == "driver.busy");
        let status = if busy { SnapshotStatus::Available } else { SnapshotStatus::ErrorDeleting };
        swap_snapshot_status(&self.deps, &ctx.get(&SNAPSHOT)?.id, SnapshotStatus::Deleting, status).await
    }
}
