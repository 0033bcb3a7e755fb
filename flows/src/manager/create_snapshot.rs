//! `snapshot_create_manager`: the backend side of a snapshot create (Cinder's
//! `VolumeManager.create_snapshot`).
//!
//! Steps:
//!
//! 1. `ExtractSnapshotRefTask`: reads the snapshot row.
//! 2. `CreateSnapshotOnBackendTask`: the driver takes it (idempotent) and its model update
//!    is stored.
//! 3. `CreateSnapshotOnFinishTask`: `available`, progress `100%`.

use std::sync::Arc;

use ember_common::model::{SnapshotChanges, SnapshotStatus};
use ember_engine::{Context, Failure, Flow, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::domain;
use crate::keys::*;
use crate::manager::{driver, driver_failed, driver_snapshot};
use crate::tasks::ExtractSnapshotRef;

/// The flow's name.
pub const FLOW: &str = "snapshot_create_manager";

/// The inputs the API records.
pub const INPUTS: &[&str] = &[CONTEXT.name(), SNAPSHOT_ID.name(), BACKEND.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractSnapshotRef {
            deps: deps.clone(),
            error_out: (SnapshotStatus::Creating, SnapshotStatus::Error),
        })
        .add(CreateSnapshotOnBackend { deps: deps.clone() })
        .add(CreateSnapshotOnFinish { deps })
}

/// Has the driver take the snapshot and stores its model update.
/// Revert: nothing of its own: `ExtractSnapshotRefTask`'s revert sets `error` (its usage
/// stays until it is deleted, as in Cinder). The driver's snapshot stays for the delete.
pub struct CreateSnapshotOnBackend {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for CreateSnapshotOnBackend {
    fn name(&self) -> &str {
        "CreateSnapshotOnBackendTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[SNAPSHOT.name(), BACKEND.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let s = ctx.get(&SNAPSHOT)?;
        let backend = ctx.get(&BACKEND)?;
        let d = driver(&self.deps, &backend)?;
        let update = d
            .create_snapshot(&driver_snapshot(&s))
            .await
            .map_err(|e| driver_failed(&self.deps, &backend, &e))?;
        let changes = SnapshotChanges {
            provider_location: update.provider_location.map(Some),
            provider_id: update.provider_id.map(Some),
            ..SnapshotChanges::default()
        };
        self.deps
            .snapshots
            .update_snapshot(&s.id, &[SnapshotStatus::Creating], &changes)
            .await
            .map_err(domain)?;
        Ok(Values::new())
    }
}

/// Marks the snapshot `available` with progress `100%`.
/// Revert: nothing.
pub struct CreateSnapshotOnFinish {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for CreateSnapshotOnFinish {
    fn name(&self) -> &str {
        "CreateSnapshotOnFinishTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[SNAPSHOT_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let changes = SnapshotChanges {
            status: Some(SnapshotStatus::Available),
            progress: Some(Some("100%".to_owned())),
            ..SnapshotChanges::default()
        };
        let id = ctx.get(&SNAPSHOT_ID)?;
        self.deps
            .snapshots
            .update_snapshot(&id, &[SnapshotStatus::Creating], &changes)
            .await
            .map_err(domain)?;
        tracing::info!(event = "snapshot.create.end", snapshot_id = %id, "notification");
        Ok(Values::new())
    }
}
