//! The flows the volume process runs on one backend (Cinder's
//! `cinder/volume/flows/manager` and the manager halves of delete, extend and snapshots),
//! with the small helpers they share.

use ember_common::model::{Snapshot, Volume};
use ember_drivers::{DriverError, DriverSnapshot, DriverVolume, SharedDriver};
use ember_engine::Failure;

use crate::deps::Deps;
use crate::error::RESCHEDULABLE;

pub mod backup_device;
pub mod create_snapshot;
pub mod create_volume;
pub mod delete_attachment;
pub mod delete_snapshot;
pub mod delete_volume;
pub mod extend_volume;
pub mod update_attachment;

/// The driver of `backend`, or a failure another backend could avoid.
pub(crate) fn driver(deps: &Deps, backend: &str) -> Result<SharedDriver, Failure> {
    deps.drivers.as_ref().and_then(|d| d.driver(backend)).ok_or_else(|| {
        Failure::new(RESCHEDULABLE, format!("backend {backend} is not served by this process"))
    })
}

/// A driver error of a call on `backend` as a task failure; a full backend also asks for
/// a capability report at once, so the schedulers stop placing volumes on it.
pub(crate) fn driver_failed(deps: &Deps, backend: &str, err: &DriverError) -> Failure {
    if matches!(err, DriverError::NoSpace(_))
        && let Some(d) = deps.drivers.as_ref()
    {
        d.out_of_space(backend);
    }
    crate::error::driver(err)
}

/// The volume as its driver sees it.
pub(crate) fn driver_volume(v: &Volume) -> DriverVolume {
    DriverVolume {
        id: v.id.clone(),
        size_gb: u64::try_from(v.size).unwrap_or(0),
        provider_location: v.provider_location.clone(),
        snapshot_id: v.snapshot_id.clone(),
        source_volid: v.source_volid.clone(),
    }
}

/// The snapshot as its driver sees it.
pub(crate) fn driver_snapshot(s: &Snapshot) -> DriverSnapshot {
    DriverSnapshot {
        id: s.id.clone(),
        volume_id: s.volume_id.clone(),
        volume_size_gb: u64::try_from(s.volume_size).unwrap_or(0),
        provider_location: s.provider_location.clone(),
    }
}
