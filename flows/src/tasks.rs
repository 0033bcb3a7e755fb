//! Tasks and helpers several flows share: reading rows the caller may see, type names for
//! per-type quotas, and the two-step release of a deleted resource's usage.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{ListOptions, Snapshot, SnapshotChanges, SnapshotFilter, SnapshotStatus, Volume};
use ember_common::ops::RequestContext;
use ember_engine::{Context, Failure, RevertContext, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::keys::*;
use crate::quota::{key, reserve_release, snapshot_deltas, volume_deltas};

/// The volume `id` if `rc` may see it (its project's, or any for an admin).
pub(crate) async fn own_volume(deps: &Deps, rc: &RequestContext, id: &str) -> Result<Volume, Failure> {
    match deps.volumes.get_volume(id).await {
        Ok(v) if v.project_id == rc.project_id || rc.is_admin => Ok(v),
        Ok(_) | Err(ember_common::Error::NotFound { .. }) => {
            Err(fail(ErrorKind::NotFound, format!("Volume {id} could not be found.")))
        }
        Err(e) => Err(domain(e)),
    }
}

/// The snapshot `id` if `rc` may see it.
pub(crate) async fn own_snapshot(deps: &Deps, rc: &RequestContext, id: &str) -> Result<Snapshot, Failure> {
    match deps.snapshots.get_snapshot(id).await {
        Ok(s) if s.project_id == rc.project_id || rc.is_admin => Ok(s),
        Ok(_) | Err(ember_common::Error::NotFound { .. }) => {
            Err(fail(ErrorKind::NotFound, format!("Snapshot {id} could not be found.")))
        }
        Err(e) => Err(domain(e)),
    }
}

/// Moves snapshot `id` from `from` to `to` (a compare-and-swap; a lost swap changes
/// nothing).
pub(crate) async fn swap_snapshot_status(
    deps: &Deps,
    id: &str,
    from: SnapshotStatus,
    to: SnapshotStatus,
) -> Result<(), Failure> {
    let changes = SnapshotChanges { status: Some(to), ..SnapshotChanges::default() };
    deps.snapshots.update_snapshot(id, &[from], &changes).await.map_err(domain)?;
    Ok(())
}

/// Moves the snapshots of volume `volume_id` still in `deleting` (a cascade's, not removed)
/// to `to`, each with a compare-and-swap.
pub(crate) async fn settle_cascaded_snapshots(
    deps: &Deps,
    volume_id: &str,
    to: SnapshotStatus,
) -> Result<(), Failure> {
    let filter = SnapshotFilter {
        volume_id: Some(volume_id.to_owned()),
        status: Some(SnapshotStatus::Deleting),
        ..SnapshotFilter::default()
    };
    let left = deps.snapshots.list_snapshots(&filter, &ListOptions::default()).await.map_err(domain)?;
    for s in left {
        swap_snapshot_status(deps, &s.id, SnapshotStatus::Deleting, to).await?;
    }
    Ok(())
}

/// The name of volume type `id`, which per-type quota resources are named after.
pub(crate) async fn type_name(deps: &Deps, id: &str) -> Result<String, Failure> {
    deps.types.get_volume_type(id).await.map(|t| t.name).map_err(domain)
}

/// The status an extend of `v` (in `extending`) goes back to: `in-use` if it was (an
/// attached volume grown from microversion 3.42), else `available`.
pub(crate) fn restored_status(v: &Volume) -> ember_common::model::VolumeStatus {
    match v.previous_status.as_deref() {
        Some("in-use") => ember_common::model::VolumeStatus::InUse,
        _ => ember_common::model::VolumeStatus::Available,
    }
}

/// `host@backend` of a placed volume, or a bad request naming the volume.
pub(crate) fn backend(v: &Volume) -> Result<String, Failure> {
    v.host
        .as_deref()
        .map(|h| ember_common::host::backend_of(h).to_owned())
        .ok_or_else(|| fail(ErrorKind::BadRequest, format!("Invalid volume: volume {} has no host.", v.id)))
}

/// Reads the snapshot row and its volume's backend.
/// Revert: the snapshot goes from `error_out.0` to `error_out.1` (a manager flow's failure,
/// whichever task failed: `error`, `error_deleting`).
pub struct ExtractSnapshotRef {
    pub(crate) deps: Arc<Deps>,
    pub(crate) error_out: (SnapshotStatus, SnapshotStatus),
}

#[async_trait]
impl Task for ExtractSnapshotRef {
    fn name(&self) -> &str {
        "ExtractSnapshotRefTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[SNAPSHOT_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[SNAPSHOT.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let s = self.deps.snapshots.get_snapshot(&ctx.get(&SNAPSHOT_ID)?).await.map_err(domain)?;
        Ok(Values::new().with(&SNAPSHOT, s))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let (from, to) = self.error_out;
        swap_snapshot_status(&self.deps, &ctx.get(&SNAPSHOT_ID)?, from, to).await
    }
}

/// What a release hands back.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Released {
    Volume,
    Snapshot,
    /// The snapshots of a cascade delete ([`SNAPSHOTS`]), released apart from their volume
    /// under names and keys of their own.
    Snapshots,
}

/// Reserves the negated usage of the volume or snapshot(s) being deleted; the destroy task
/// after it commits the release once the rows are gone. Skipped (nothing reserved) when
/// `only_unscheduled` is set and the volume has a host: its backend's flow releases it.
/// Revert: nothing (an uncommitted negative reservation changes no usage).
pub struct QuotaReleaseReserve {
    pub(crate) deps: Arc<Deps>,
    pub(crate) what: Released,
    pub(crate) only_unscheduled: bool,
}

#[async_trait]
impl Task for QuotaReleaseReserve {
    fn name(&self) -> &str {
        match self.what {
            Released::Snapshots => "SnapshotsQuotaReleaseReserveTask",
            Released::Volume | Released::Snapshot => "QuotaReleaseReserveTask",
        }
    }
    fn optional(&self) -> &[&'static str] {
        const { &[VOLUME.name(), SNAPSHOT.name(), SNAPSHOTS.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        match self.what {
            Released::Snapshots => const { &[SNAPSHOT_RELEASE_RESERVATIONS.name()] },
            Released::Volume | Released::Snapshot => const { &[RELEASE_RESERVATIONS.name()] },
        }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let key = key(ctx);
        let snapshot_release = |s: Snapshot, key: String| async move {
            let t = type_name(&self.deps, &s.volume_type_id).await?;
            reserve_release(&self.deps, &key, &s.project_id, &snapshot_deltas(1, s.volume_size, &t)).await
        };
        let ids = match self.what {
            Released::Volume => {
                let v = ctx.get(&VOLUME)?;
                if self.only_unscheduled && v.host.is_some() {
                    return Ok(Values::new().with(&RELEASE_RESERVATIONS, Vec::new()));
                }
                let t = type_name(&self.deps, &v.volume_type_id).await?;
                reserve_release(&self.deps, &key, &v.project_id, &volume_deltas(1, v.size, &t)).await?
            }
            Released::Snapshot => snapshot_release(ctx.get(&SNAPSHOT)?, key).await?,
            Released::Snapshots => {
                // One reservation per snapshot (each may have its own project and type), each
                // under a key of its own, so a re-run finds the reservations already made.
                let mut ids = Vec::new();
                for s in ctx.get(&SNAPSHOTS)? {
                    let snapshot_key = format!("{key}/{}", s.id);
                    ids.extend(snapshot_release(s, snapshot_key).await?);
                }
                return Ok(Values::new().with(&SNAPSHOT_RELEASE_RESERVATIONS, ids));
            }
        };
        Ok(Values::new().with(&RELEASE_RESERVATIONS, ids))
    }
}

/// Soft-deletes the row(s) in `deleting` and commits the release reserved before; a
/// re-run finds the rows gone and commits again, which skips what was committed. Skipped
/// like [`QuotaReleaseReserve`] for a scheduled volume in the api flow.
/// Revert: nothing (a deleted row stays deleted).
pub struct EntryDestroy {
    pub(crate) deps: Arc<Deps>,
    pub(crate) what: Released,
    pub(crate) only_unscheduled: bool,
}

#[async_trait]
impl Task for EntryDestroy {
    fn name(&self) -> &str {
        match self.what {
            Released::Snapshots => "SnapshotsEntryDestroyTask",
            Released::Volume | Released::Snapshot => "EntryDestroyTask",
        }
    }
    fn requires(&self) -> &[&'static str] {
        match self.what {
            Released::Snapshots => const { &[SNAPSHOT_RELEASE_RESERVATIONS.name()] },
            Released::Volume | Released::Snapshot => const { &[RELEASE_RESERVATIONS.name()] },
        }
    }
    fn optional(&self) -> &[&'static str] {
        const { &[VOLUME.name(), SNAPSHOT.name(), SNAPSHOTS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        use ember_common::model::{SnapshotStatus, VolumeExpect, VolumeStatus};
        let deleting = [SnapshotStatus::Deleting];
        let reservations = match self.what {
            Released::Volume => {
                let v = ctx.get(&VOLUME)?;
                if self.only_unscheduled && v.host.is_some() {
                    return Ok(Values::new());
                }
                let expect = VolumeExpect::status_in(&[VolumeStatus::Deleting]);
                self.deps.volumes.soft_delete_volume(&v.id, &expect).await.map_err(domain)?;
                ctx.get(&RELEASE_RESERVATIONS)?
            }
            Released::Snapshot => {
                let s = ctx.get(&SNAPSHOT)?;
                self.deps.snapshots.soft_delete_snapshot(&s.id, &deleting).await.map_err(domain)?;
                ctx.get(&RELEASE_RESERVATIONS)?
            }
            Released::Snapshots => {
                for s in ctx.get(&SNAPSHOTS)? {
                    self.deps.snapshots.soft_delete_snapshot(&s.id, &deleting).await.map_err(domain)?;
                }
                ctx.get(&SNAPSHOT_RELEASE_RESERVATIONS)?
            }
        };
        self.deps.quotas.commit(&reservations).await.map_err(domain)?;
        Ok(Values::new())
    }
}
