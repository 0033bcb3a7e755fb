//! Delete, extend and snapshot flows: their statuses, their driver calls, their quota, and
//! the races they refuse.

mod support;

use ember_common::ErrorKind;
use ember_common::model::{SnapshotStatus, VolumeChanges, VolumeExpect, VolumeStatus};
use ember_common::ops::{CreateSnapshot, CreateVolume, DeleteVolume, VolumeOps};
use ember_common::repo::{QuotaRepo, SnapshotRepo, VolumeRepo};
use ember_drivers::FakeOp;
use support::{Cluster, Options, ctx, on_every_db, two_fakes, wait_gone, wait_snapshot};

async fn available(c: &Cluster, size: i64) -> ember_common::model::Volume {
    let v =
        c.ops.create_volume(&ctx(), CreateVolume { size: Some(size), ..Default::default() }).await.unwrap();
    c.wait_status(&v.id, VolumeStatus::Available).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_grows_the_volume_and_its_quota() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c, 1).await;
        c.ops.extend_volume(&ctx(), &v.id, 4).await.unwrap();
        let v = c.wait_volume(&v.id, |v| v.status == VolumeStatus::Available && v.size == 4).await;
        c.wait_idle(true).await;
        assert_eq!(v.previous_status, None);
        assert_eq!(fakes.iter().map(|f| f.calls(FakeOp::ExtendVolume)).sum::<u64>(), 1);
        let u = c.usage("gigabytes").await;
        assert_eq!((u.in_use, u.reserved), (4, 0));
        // Not bigger: refused, nothing changes.
        let err = c.ops.extend_volume(&ctx(), &v.id, 4).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert_eq!(c.usage("gigabytes").await.in_use, 4);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extend_refused_for_quota_or_status_changes_nothing_not_even_updated_at() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c, 1).await;
        c.wait_idle(true).await;
        let before = c.repo.get_volume(&v.id).await.unwrap();
        c.repo.set_project_quota(support::PROJECT, "gigabytes", 2).await.unwrap();
        let err = c.ops.extend_volume(&ctx(), &v.id, 5).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::OverLimit, "{err:?}");
        let after = c.repo.get_volume(&v.id).await.unwrap();
        assert_eq!(after, before, "a 413 left the volume's row as it was");
        let u = c.usage("gigabytes").await;
        assert_eq!((u.in_use, u.reserved), (1, 0));
        // A status an extend does not start from: 400, and nothing moves either.
        let reset = VolumeChanges::status(VolumeStatus::Error);
        let expect = VolumeExpect::status_in(&[VolumeStatus::Available]);
        c.repo.update_volume(&v.id, &expect, &reset).await.unwrap().expect("set to error");
        let before = c.repo.get_volume(&v.id).await.unwrap();
        let err = c.ops.extend_volume(&ctx(), &v.id, 2).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest, "{err:?}");
        assert_eq!(c.repo.get_volume(&v.id).await.unwrap(), before);
        assert_eq!(c.usage("gigabytes").await.reserved, 0);
        assert_eq!(fakes.iter().map(|f| f.calls(FakeOp::ExtendVolume)).sum::<u64>(), 0);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_extend_ends_in_error_extending_with_its_reservation_rolled_back() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c, 2).await;
        for f in &fakes {
            f.fail_for(FakeOp::ExtendVolume, &v.id);
        }
        c.ops.extend_volume(&ctx(), &v.id, 5).await.unwrap();
        let v = c.wait_status(&v.id, VolumeStatus::ErrorExtending).await;
        c.wait_idle(false).await;
        assert_eq!(v.size, 2);
        let u = c.usage("gigabytes").await;
        assert_eq!((u.in_use, u.reserved), (2, 0));
        // An admin resets it and extends to the same size again: a new request reaches the
        // backend (hand-offs are keyed by request, not by the new size).
        fakes.iter().for_each(|f| f.clear_failures());
        let reset = VolumeChanges::status(VolumeStatus::Available);
        let expect = VolumeExpect::status_in(&[VolumeStatus::ErrorExtending]);
        c.repo.update_volume(&v.id, &expect, &reset).await.unwrap().expect("reset to available");
        c.ops.extend_volume(&ctx(), &v.id, 5).await.unwrap();
        let v = c.wait_volume(&v.id, |v| v.status == VolumeStatus::Available && v.size == 5).await;
        c.wait_idle(false).await;
        assert_eq!(c.usage("gigabytes").await.in_use, 5);
        // error_extending may be deleted (here: available); the usage goes with it.
        c.ops.delete_volume(&ctx(), &v.id, Default::default()).await.unwrap();
        wait_gone(&c, &v.id).await;
        c.wait_idle(false).await;
        assert!(fakes.iter().all(|f| f.volume_ids().is_empty()));
        assert_eq!(c.usage("gigabytes").await.in_use, 0);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_created_and_deleted_with_their_quota() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c, 3).await;
        let req = CreateSnapshot { volume_id: v.id.clone(), name: Some("s".into()), ..Default::default() };
        let s = c.ops.create_snapshot(&ctx(), req).await.unwrap();
        let s = wait_snapshot(&c, &s.id, |s| s.status == SnapshotStatus::Available).await;
        assert_eq!(s.progress.as_deref(), Some("100%"));
        assert!(s.provider_location.is_some());
        assert_eq!(fakes.iter().map(|f| f.snapshot_ids().len()).sum::<usize>(), 1);
        assert_eq!(c.usage("snapshots").await.in_use, 1);
        assert_eq!(c.usage("gigabytes").await.in_use, 6);
        // A volume with a snapshot cannot be deleted (Cinder's InvalidVolume).
        let err = c.ops.delete_volume(&ctx(), &v.id, Default::default()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(err.message.starts_with("Invalid volume"), "{err:?}");
        c.ops.delete_snapshot(&ctx(), &s.id, false).await.unwrap();
        // A second delete loses the compare-and-swap and changes nothing.
        let again = c.ops.delete_snapshot(&ctx(), &s.id, false).await;
        if let Err(e) = again {
            assert!(matches!(e.kind, ErrorKind::BadRequest | ErrorKind::NotFound), "{e:?}");
        }
        support::poll(
            std::time::Duration::from_secs(30),
            "snapshot deletion",
            || {
                let repo = c.repo.clone();
                let id = s.id.clone();
                async move { Some(repo.get_snapshot(&id).await.is_err()) }
            },
            |gone| *gone,
        )
        .await;
        c.wait_idle(false).await;
        assert!(fakes.iter().all(|f| f.snapshot_ids().is_empty()));
        let u = c.usage("snapshots").await;
        assert_eq!((u.in_use, u.reserved), (0, 0));
        assert_eq!(c.usage("gigabytes").await.in_use, 3);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_backend_volume_and_refuses_a_second_delete() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c, 2).await;
        c.ops.delete_volume(&ctx(), &v.id, Default::default()).await.unwrap();
        let second = c.ops.delete_volume(&ctx(), &v.id, Default::default()).await.unwrap_err();
        assert!(matches!(second.kind, ErrorKind::BadRequest | ErrorKind::NotFound), "{second:?}");
        wait_gone(&c, &v.id).await;
        c.wait_idle(false).await;
        assert!(fakes.iter().all(|f| f.volume_ids().is_empty()));
        assert_eq!(fakes.iter().map(|f| f.calls(FakeOp::DeleteVolume)).sum::<u64>(), 1);
        for r in ["volumes", "gigabytes", "volumes___DEFAULT__", "gigabytes___DEFAULT__"] {
            let u = c.usage(r).await;
            assert_eq!((u.in_use, u.reserved), (0, 0), "{r}");
        }
        // Someone else's volume is not found.
        let other = ember_common::ops::RequestContext { project_id: "p2".into(), ..ctx() };
        let w = available(&c, 1).await;
        let err = c.ops.delete_volume(&other, &w.id, Default::default()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_snapshot_ends_in_error_and_its_delete_releases_the_quota() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c, 2).await;
        for f in &fakes {
            f.fail_next(FakeOp::CreateSnapshot, 1);
        }
        let req = CreateSnapshot { volume_id: v.id.clone(), ..Default::default() };
        let s = c.ops.create_snapshot(&ctx(), req).await.unwrap();
        wait_snapshot(&c, &s.id, |s| s.status == SnapshotStatus::Error).await;
        c.wait_idle(false).await;
        assert_eq!(
            c.usage("snapshots").await.in_use,
            1,
            "an error snapshot counts until deleted, as in Cinder"
        );
        c.ops.delete_snapshot(&ctx(), &s.id, false).await.unwrap();
        support::poll(
            std::time::Duration::from_secs(30),
            "snapshot deletion",
            || {
                let repo = c.repo.clone();
                let id = s.id.clone();
                async move { Some(repo.get_snapshot(&id).await.is_err()) }
            },
            |gone| *gone,
        )
        .await;
        c.wait_idle(false).await;
        let u = c.usage("snapshots").await;
        assert_eq!((u.in_use, u.reserved), (0, 0));
        assert_eq!(c.usage("gigabytes").await.in_use, 2);
        // Another project cannot snapshot the volume: it does not see it.
        c.ops.extend_volume(&ctx(), &v.id, 3).await.unwrap();
        c.wait_volume(&v.id, |v| v.size == 3 && v.status == VolumeStatus::Available).await;
        let other = ember_common::ops::RequestContext { project_id: "p2".into(), ..ctx() };
        let req = CreateSnapshot { volume_id: v.id.clone(), ..Default::default() };
        assert_eq!(c.ops.create_snapshot(&other, req).await.unwrap_err().kind, ErrorKind::NotFound);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_left_in_error_deleting_is_finished_by_an_admins_force() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let admin = ember_common::ops::RequestContext { is_admin: true, ..ctx() };
        let force = DeleteVolume { cascade: false, force: true };
        let v = available(&c, 2).await;
        let req = CreateSnapshot { volume_id: v.id.clone(), ..Default::default() };
        let s = c.ops.create_snapshot(&ctx(), req).await.unwrap();
        wait_snapshot(&c, &s.id, |s| s.status == SnapshotStatus::Available).await;
        // A snapshot the backend fails to delete, then deleted again by force.
        for f in &fakes {
            f.fail_next(FakeOp::DeleteSnapshot, 1);
        }
        c.ops.delete_snapshot(&ctx(), &s.id, false).await.unwrap();
        wait_snapshot(&c, &s.id, |s| s.status == SnapshotStatus::ErrorDeleting).await;
        c.wait_idle(false).await;
        c.ops.delete_snapshot(&admin, &s.id, true).await.unwrap();
        support::poll(
            std::time::Duration::from_secs(30),
            "snapshot deletion",
            || {
                let repo = c.repo.clone();
                let id = s.id.clone();
                async move { Some(repo.get_snapshot(&id).await.is_err()) }
            },
            |gone| *gone,
        )
        .await;
        // The same for the volume.
        for f in &fakes {
            f.fail_next(FakeOp::DeleteVolume, 1);
        }
        c.ops.delete_volume(&ctx(), &v.id, Default::default()).await.unwrap();
        c.wait_status(&v.id, VolumeStatus::ErrorDeleting).await;
        c.wait_idle(false).await;
        c.ops.delete_volume(&admin, &v.id, force).await.unwrap();
        wait_gone(&c, &v.id).await;
        c.wait_idle(false).await;
        assert!(fakes.iter().all(|f| f.volume_ids().is_empty() && f.snapshot_ids().is_empty()));
        assert_eq!(c.flow_count("volume_delete_manager").await, 2);
        assert_eq!(c.flow_count("snapshot_delete_manager").await, 2);
        for r in ["volumes", "snapshots", "gigabytes"] {
            let u = c.usage(r).await;
            assert_eq!((u.in_use, u.reserved), (0, 0), "{r}");
        }
        c.stop().await;
    })
    .await;
}
