//! `volume_delete_manager`: the backend side of a delete (Cinder's
//! `VolumeManager.delete_volume`).
//!
//! Steps:
//!
//! 1. `ExtractVolumeRefTask`: reads the volume (in `deleting`).
//! 2. `ExtractSnapshotsRefTask`: with `cascade`, reads the volume's snapshots, which the
//!    API moved to `deleting` (none without `cascade`).
//! 3. `DeleteSnapshotsOnBackendTask`: the driver deletes each snapshot.
//! 4. `SnapshotsQuotaReleaseReserveTask`: reserves the snapshots' negated usage.
//! 5. `SnapshotsEntryDestroyTask`: soft-deletes their rows and commits the release.
//! 6. `DeleteVolumeOnBackendTask`: the driver deletes the volume (a missing volume is
//!    deleted).
//! 7. `QuotaReleaseReserveTask`: reserves the volume's negated usage.
//! 8. `EntryDestroyTask`: soft-deletes the row and commits the release.
//!
//! Cinder's `delete_volume` with `cascade` runs its `delete_snapshot` on each snapshot in
//! turn (driver, quota, row) before the volume; here each step covers every snapshot, so
//! the release reserved for all of them is stored before any row goes and a re-run after a
//! crash commits it, where a release per snapshot inside one task could be lost between a
//! row's delete and its commit.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{SnapshotFilter, SnapshotStatus, VolumeChanges, VolumeExpect, VolumeStatus};
use ember_drivers::DriverError;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::{domain, driver as driver_failure, fail};
use crate::keys::*;
use crate::manager::create_volume::{ErrorOut, ExtractVolumeRef};
use crate::manager::{driver, driver_snapshot, driver_volume};
use crate::tasks::{EntryDestroy, QuotaReleaseReserve, Released};

/// The flow's name.
pub const FLOW: &str = "volume_delete_manager";

/// The inputs the API records.
/// (`cascade` is optional: absent, as in flows recorded before cascades, it is false.)
pub const INPUTS: &[&str] = &[CONTEXT.name(), VOLUME_ID.name(), BACKEND.name(), CASCADE.name()];

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
        .add(ExtractSnapshotsRef { deps: deps.clone() })
        .add(DeleteSnapshotsOnBackend { deps: deps.clone() })
        .add(QuotaReleaseReserve { deps: deps.clone(), what: Released::Snapshots, only_unscheduled: false })
        .add(EntryDestroy { deps: deps.clone(), what: Released::Snapshots, only_unscheduled: false })
        .add(DeleteVolumeOnBackend { deps: deps.clone() })
        .add(QuotaReleaseReserve { deps: deps.clone(), what: Released::Volume, only_unscheduled: false })
        .add(EntryDestroy { deps, what: Released::Volume, only_unscheduled: false })
}

/// Reads the volume's live snapshots when `cascade` is set; every one must be `deleting`,
/// as the API left it (Cinder's `InvalidSnapshot` otherwise). Without `cascade`: none.
/// Revert: nothing (on any failure of the flow, `ExtractVolumeRefTask` puts the volume, and
/// the snapshots still in `deleting`, in `error_deleting`, Cinder's `_clear_db`).
pub struct ExtractSnapshotsRef {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtractSnapshotsRef {
    fn name(&self) -> &str {
        "ExtractSnapshotsRefTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME.name()] }
    }
    fn optional(&self) -> &[&'static str] {
        const { &[CASCADE.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[SNAPSHOTS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        if !ctx.get_optional(&CASCADE)?.unwrap_or(false) {
            return Ok(Values::new().with(&SNAPSHOTS, Vec::new()));
        }
        let v = ctx.get(&VOLUME)?;
        let filter = SnapshotFilter { volume_id: Some(v.id.clone()), ..SnapshotFilter::default() };
        let mut snapshots =
            self.deps.snapshots.list_snapshots(&filter, &Default::default()).await.map_err(domain)?;
        if let Some(s) = snapshots.iter().find(|s| s.status != SnapshotStatus::Deleting) {
            return Err(fail(
                ErrorKind::BadRequest,
                format!(
                    "Invalid snapshot: Snapshot {} was found in state {} rather than 'deleting' during \
                     cascade delete.",
                    s.id, s.status
                ),
            ));
        }
        snapshots.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Values::new().with(&SNAPSHOTS, snapshots))
    }
}

/// Has the driver delete each snapshot of a cascade (a missing one is deleted).
/// Revert: nothing of its own: `ExtractVolumeRefTask`'s revert puts the volume and the
/// snapshots still `deleting` in `error_deleting`, whichever task failed.
pub struct DeleteSnapshotsOnBackend {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for DeleteSnapshotsOnBackend {
    fn name(&self) -> &str {
        "DeleteSnapshotsOnBackendTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[SNAPSHOTS.name(), BACKEND.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let snapshots = ctx.get(&SNAPSHOTS)?;
        if snapshots.is_empty() {
            return Ok(Values::new());
        }
        let d = driver(&self.deps, &ctx.get(&BACKEND)?)?;
        for s in &snapshots {
            match d.delete_snapshot(&driver_snapshot(s)).await {
                Ok(()) | Err(DriverError::NotFound { .. }) => {}
                Err(e) => return Err(driver_failure(&e)),
            }
        }
        Ok(Values::new())
    }
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
