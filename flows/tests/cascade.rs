//! Cascade delete (`DELETE /volumes/{id}?cascade=true`): the volume's snapshots are deleted
//! on the backend, their rows and usage go, then the volume's; a snapshot in transit
//! refuses the whole delete and changes nothing; a driver failure leaves `error_deleting`
//! for an admin's force; a crash mid-way finishes once on restart.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ember_common::ErrorKind;
use ember_common::model::{Snapshot, SnapshotChanges, SnapshotFilter, SnapshotStatus, Volume, VolumeStatus};
use ember_common::ops::{CreateSnapshot, CreateVolume, DeleteVolume, RequestContext, VolumeOps};
use ember_common::repo::{SnapshotRepo, VolumeRepo};
use ember_drivers::{FakeDriver, FakeOp, FakeOptions, SharedDriver};
use support::{
    BACKENDS, Cluster, Options, ctx, fake, on_every_db, poll, two_fakes, wait_gone, wait_snapshot,
};

const CASCADE: DeleteVolume = DeleteVolume { cascade: true, force: false };

fn admin() -> RequestContext {
    RequestContext { is_admin: true, ..ctx() }
}

async fn available(c: &Cluster, size: i64) -> Volume {
    let v =
        c.ops.create_volume(&ctx(), CreateVolume { size: Some(size), ..Default::default() }).await.unwrap();
    c.wait_status(&v.id, VolumeStatus::Available).await
}

/// A snapshot of `volume`, once it has left `creating`.
async fn snapshot(c: &Cluster, volume: &str) -> Snapshot {
    let req = CreateSnapshot { volume_id: volume.to_owned(), ..Default::default() };
    let s = c.ops.create_snapshot(&ctx(), req).await.unwrap();
    wait_snapshot(c, &s.id, |s| s.status != SnapshotStatus::Creating).await
}

/// The live snapshots of `volume`, by id.
async fn snapshots_of(c: &Cluster, volume: &str) -> Vec<Snapshot> {
    let filter = SnapshotFilter { volume_id: Some(volume.to_owned()), ..Default::default() };
    let mut all = c.repo.list_snapshots(&filter, &Default::default()).await.unwrap();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all
}

/// Asserts the project's usage (in use, nothing reserved) of volumes, snapshots and
/// gigabytes, overall and for the default type.
async fn assert_usage(c: &Cluster, volumes: i64, snapshots: i64, gigabytes: i64) {
    for (resource, expected) in [
        ("volumes", volumes),
        ("snapshots", snapshots),
        ("gigabytes", gigabytes),
        ("volumes___DEFAULT__", volumes),
        ("snapshots___DEFAULT__", snapshots),
        ("gigabytes___DEFAULT__", gigabytes),
    ] {
        let u = c.usage(resource).await;
        assert_eq!((u.in_use, u.reserved), (expected, 0), "{resource}");
    }
}

fn backend_snapshots(fakes: &[Arc<FakeDriver>]) -> Vec<String> {
    fakes.iter().flat_map(|f| f.snapshot_ids()).collect()
}

fn backend_volumes(fakes: &[Arc<FakeDriver>]) -> Vec<String> {
    fakes.iter().flat_map(|f| f.volume_ids()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_delete_removes_the_snapshots_then_the_volume_with_their_quota() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c, 2).await;
        let s1 = snapshot(&c, &v.id).await;
        let s2 = snapshot(&c, &v.id).await;
        for f in &fakes {
            f.fail_next(FakeOp::CreateSnapshot, 1);
        }
        let failed = snapshot(&c, &v.id).await;
        assert_eq!(
            [s1.status, s2.status, failed.status],
            [SnapshotStatus::Available, SnapshotStatus::Available, SnapshotStatus::Error]
        );
        c.wait_idle(false).await;
        assert_usage(&c, 1, 3, 8).await;
        // Without cascade, a volume with snapshots is refused.
        let err = c.ops.delete_volume(&ctx(), &v.id, DeleteVolume::default()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);

        c.ops.delete_volume(&ctx(), &v.id, CASCADE).await.unwrap();
        // The API moved the snapshots with the volume; a second delete is refused.
        let again = c.ops.delete_volume(&ctx(), &v.id, CASCADE).await.unwrap_err();
        assert!(matches!(again.kind, ErrorKind::BadRequest | ErrorKind::NotFound), "{again:?}");
        wait_gone(&c, &v.id).await;
        c.wait_idle(false).await;
        assert!(snapshots_of(&c, &v.id).await.is_empty());
        for s in [&s1, &s2, &failed] {
            assert!(c.repo.get_snapshot(&s.id).await.is_err(), "snapshot {} is gone", s.id);
        }
        assert!(backend_snapshots(&fakes).is_empty());
        assert!(backend_volumes(&fakes).is_empty());
        assert_eq!(fakes.iter().map(|f| f.calls(FakeOp::DeleteSnapshot)).sum::<u64>(), 3);
        assert_usage(&c, 0, 0, 0).await;
        assert_eq!(c.flow_count("volume_delete_manager").await, 1);
        assert_eq!(c.flow_count("snapshot_delete_manager").await, 0, "no flow per snapshot");
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_is_refused_while_a_snapshot_is_in_transit_and_changes_nothing() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c, 1).await;
        let s1 = snapshot(&c, &v.id).await;
        let s2 = snapshot(&c, &v.id).await;
        c.wait_idle(true).await;
        for transit in [SnapshotStatus::BackingUp, SnapshotStatus::Deleting, SnapshotStatus::ErrorDeleting] {
            let changes = SnapshotChanges { status: Some(transit), ..Default::default() };
            c.repo.update_snapshot(&s2.id, &[], &changes).await.unwrap().unwrap();
            let before = snapshots_of(&c, &v.id).await;
            let err = c.ops.delete_volume(&ctx(), &v.id, CASCADE).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::BadRequest, "{transit}");
            assert!(err.message.starts_with("Invalid volume"), "{err:?}");
            assert_eq!(c.repo.get_volume(&v.id).await.unwrap().status, VolumeStatus::Available, "{transit}");
            assert_eq!(snapshots_of(&c, &v.id).await, before, "{transit}: no snapshot changed");
        }
        // Force is an admin's.
        let forced = DeleteVolume { cascade: true, force: true };
        let err = c.ops.delete_volume(&ctx(), &v.id, forced).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Forbidden);
        c.wait_idle(false).await;
        assert_eq!(c.flow_count("volume_delete_manager").await, 0);
        assert_eq!(backend_snapshots(&fakes).len(), 2);
        assert_usage(&c, 1, 2, 3).await;

        // Back to error, the snapshot may go with its volume.
        let changes = SnapshotChanges { status: Some(SnapshotStatus::Error), ..Default::default() };
        c.repo.update_snapshot(&s2.id, &[], &changes).await.unwrap().unwrap();
        c.ops.delete_volume(&ctx(), &v.id, CASCADE).await.unwrap();
        wait_gone(&c, &v.id).await;
        c.wait_idle(false).await;
        assert!(c.repo.get_snapshot(&s1.id).await.is_err());
        assert!(backend_snapshots(&fakes).is_empty());
        // A volume without snapshots is cascade-deleted as a plain delete.
        let w = available(&c, 1).await;
        c.ops.delete_volume(&ctx(), &w.id, CASCADE).await.unwrap();
        wait_gone(&c, &w.id).await;
        c.wait_idle(false).await;
        assert!(backend_volumes(&fakes).is_empty());
        assert_usage(&c, 0, 0, 0).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_driver_cannot_delete_leaves_error_deleting_for_a_forced_cascade() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c, 2).await;
        let s1 = snapshot(&c, &v.id).await;
        let s2 = snapshot(&c, &v.id).await;
        for f in &fakes {
            f.fail_for(FakeOp::DeleteSnapshot, &s2.id);
        }
        c.ops.delete_volume(&ctx(), &v.id, CASCADE).await.unwrap();
        let failed = c.wait_status(&v.id, VolumeStatus::ErrorDeleting).await;
        c.wait_idle(false).await;
        assert!(backend_volumes(&fakes).contains(&failed.id), "the volume was not deleted");
        let left = snapshots_of(&c, &v.id).await;
        assert!(left.iter().any(|s| s.id == s2.id), "{left:?}");
        assert!(left.iter().all(|s| s.status == SnapshotStatus::ErrorDeleting), "{left:?}");
        // Nothing was released: every row is still there.
        assert_usage(&c, 1, 2, 6).await;
        // error_deleting is not deletable without force.
        let err = c.ops.delete_volume(&admin(), &v.id, CASCADE).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);

        for f in &fakes {
            f.clear_failures();
        }
        c.ops.delete_volume(&admin(), &v.id, DeleteVolume { cascade: true, force: true }).await.unwrap();
        wait_gone(&c, &v.id).await;
        c.wait_idle(false).await;
        for s in [&s1, &s2] {
            assert!(c.repo.get_snapshot(&s.id).await.is_err());
        }
        assert!(backend_snapshots(&fakes).is_empty() && backend_volumes(&fakes).is_empty());
        assert_usage(&c, 0, 0, 0).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascades_cut_off_by_a_crash_finish_once_on_restart() {
    on_every_db(|db| async move {
        let fakes: Vec<Arc<FakeDriver>> =
            BACKENDS.iter().map(|b| fake(b, FakeOptions { latency_ms: 150, ..Default::default() })).collect();
        let drivers = BACKENDS.iter().zip(&fakes).map(|(b, f)| (*b, f.clone() as SharedDriver)).collect();
        let opts =
            Options { lease: Duration::from_secs(3), sweep: Duration::from_millis(100), max_attempts: 3 };
        let mut c = Cluster::start(&db, drivers, opts).await;
        let mut volumes = Vec::new();
        for _ in 0..3 {
            let v = available(&c, 1).await;
            for _ in 0..3 {
                snapshot(&c, &v.id).await;
            }
            volumes.push(v.id);
        }
        c.wait_idle(true).await;
        assert_usage(&c, 3, 9, 12).await;
        for id in &volumes {
            c.ops.delete_volume(&ctx(), id, CASCADE).await.unwrap();
        }
        // Crash once the backends are deleting snapshots, with driver calls in flight.
        poll(
            Duration::from_secs(30),
            "snapshot deletes on the backends",
            || async { Some(fakes.iter().map(|f| f.calls(FakeOp::DeleteSnapshot)).sum::<u64>()) },
            |n| *n >= 2,
        )
        .await;
        c.crash_workers().await;
        c.start_workers().await;
        for id in &volumes {
            wait_gone(&c, id).await;
        }
        c.wait_idle(true).await;
        for id in &volumes {
            assert!(snapshots_of(&c, id).await.is_empty());
        }
        assert!(backend_snapshots(&fakes).is_empty() && backend_volumes(&fakes).is_empty());
        assert_usage(&c, 0, 0, 0).await;
        c.stop().await;
    })
    .await;
}
