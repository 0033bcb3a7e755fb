//! Creating volumes through the three create flows: blank, from a snapshot, clones, and
//! the failure paths (reschedule, no valid backend).

mod support;

use ember_common::ErrorKind;
use ember_common::model::{SnapshotStatus, VolumeStatus, VolumeType};
use ember_common::ops::{CreateSnapshot, CreateVolume, VolumeOps};
use ember_common::repo::{QuotaRepo, VolumeRepo, VolumeTypeRepo};
use ember_drivers::{FakeOp, FakeOptions, SharedDriver};
use support::{BACKENDS, Cluster, Options, ctx, fake, on_every_db, two_fakes, wait_gone, wait_snapshot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_volume_becomes_available() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let req = CreateVolume { size: Some(2), name: Some("v".into()), ..CreateVolume::default() };
        let v = c.ops.create_volume(&ctx(), req).await.unwrap();
        assert_eq!(v.status, VolumeStatus::Creating);
        assert_eq!(v.size, 2);
        let done = c.wait_status(&v.id, VolumeStatus::Available).await;
        c.wait_idle(true).await;
        assert!(done.launched_at.is_some());
        let host = done.host.clone().unwrap();
        let on_backend: Vec<usize> =
            fakes.iter().map(|f| f.volume_ids().iter().filter(|id| **id == v.id).count()).collect();
        assert_eq!(on_backend.iter().sum::<usize>(), 1, "exactly one backend holds it (host {host})");
        assert_eq!(c.usage("volumes").await.in_use, 1);
        assert_eq!(c.usage("gigabytes").await.in_use, 2);
        assert_eq!(c.usage("gigabytes").await.reserved, 0);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_from_a_snapshot_and_clones_stay_on_their_source_backend() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let src =
            c.ops.create_volume(&ctx(), CreateVolume { size: Some(1), ..Default::default() }).await.unwrap();
        let src = c.wait_status(&src.id, VolumeStatus::Available).await;
        let snap_req = CreateSnapshot { volume_id: src.id.clone(), ..Default::default() };
        let snap = c.ops.create_snapshot(&ctx(), snap_req).await.unwrap();
        assert_eq!(snap.status, SnapshotStatus::Creating);
        wait_snapshot(&c, &snap.id, |s| s.status == SnapshotStatus::Available).await;
        // A bigger volume from the snapshot, and a clone that inherits its source's size.
        let from_snap =
            CreateVolume { size: Some(3), snapshot_id: Some(snap.id.clone()), ..Default::default() };
        let a = c.ops.create_volume(&ctx(), from_snap).await.unwrap();
        let clone = CreateVolume { source_volid: Some(src.id.clone()), ..Default::default() };
        let b = c.ops.create_volume(&ctx(), clone).await.unwrap();
        assert_eq!(b.size, 1);
        let a = c.wait_status(&a.id, VolumeStatus::Available).await;
        let b = c.wait_status(&b.id, VolumeStatus::Available).await;
        assert_eq!(a.snapshot_id.as_deref(), Some(snap.id.as_str()));
        assert_eq!(b.source_volid.as_deref(), Some(src.id.as_str()));
        let backend = |h: &Option<String>| h.as_deref().unwrap().split('#').next().unwrap().to_owned();
        assert_eq!(backend(&a.host), backend(&src.host));
        assert_eq!(backend(&b.host), backend(&src.host));
        let all: usize = fakes.iter().map(|f| f.volume_ids().len()).sum();
        assert_eq!(all, 3);
        assert_eq!(c.usage("volumes").await.in_use, 3);
        assert_eq!(c.usage("snapshots").await.in_use, 1);
        assert_eq!(c.usage("gigabytes").await.in_use, 1 + 1 + 3 + 1);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_gets_its_volumes_rescheduled_to_the_other() {
    on_every_db(|db| async move {
        let broken =
            fake(BACKENDS[0], FakeOptions { fail_always: vec![FakeOp::CreateVolume], ..Default::default() });
        let good = fake(BACKENDS[1], FakeOptions::default());
        let drivers: Vec<(&str, SharedDriver)> =
            vec![(BACKENDS[0], broken.clone()), (BACKENDS[1], good.clone())];
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(
                c.ops
                    .create_volume(&ctx(), CreateVolume { size: Some(1), ..Default::default() })
                    .await
                    .unwrap()
                    .id,
            );
        }
        for id in &ids {
            let v = c.wait_status(id, VolumeStatus::Available).await;
            assert!(v.host.as_deref().unwrap().starts_with(BACKENDS[1]), "placed on {:?}", v.host);
        }
        assert!(broken.calls(FakeOp::CreateVolume) >= 1, "the scheduler never tried the broken backend");
        assert!(broken.volume_ids().is_empty());
        assert_eq!(good.volume_ids().len(), 4);
        assert_eq!(c.usage("volumes").await.in_use, 4);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_that_fails_everywhere_ends_in_error_and_its_delete_releases_the_quota() {
    on_every_db(|db| async move {
        let opts = FakeOptions { fail_always: vec![FakeOp::CreateVolume], ..Default::default() };
        let fakes: Vec<_> = BACKENDS.iter().map(|b| fake(b, opts.clone())).collect();
        let drivers = BACKENDS.iter().zip(&fakes).map(|(b, f)| (*b, f.clone() as SharedDriver)).collect();
        let c = Cluster::start(&db, drivers, Options { max_attempts: 2, ..Options::default() }).await;
        let v =
            c.ops.create_volume(&ctx(), CreateVolume { size: Some(2), ..Default::default() }).await.unwrap();
        c.wait_status(&v.id, VolumeStatus::Error).await;
        assert_eq!(fakes.iter().map(|f| f.calls(FakeOp::CreateVolume)).sum::<u64>(), 2);
        assert!(fakes.iter().all(|f| f.volume_ids().is_empty()));
        assert_eq!(c.usage("gigabytes").await.in_use, 2);
        c.ops.delete_volume(&ctx(), &v.id, Default::default()).await.unwrap();
        wait_gone(&c, &v.id).await;
        c.wait_idle(false).await;
        assert_eq!(c.usage("volumes").await.in_use, 0);
        assert_eq!(c.usage("gigabytes").await.in_use, 0);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_valid_backend_leaves_the_volume_in_error_until_its_delete_releases_the_quota() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let mut vt = VolumeType::new(uuid::Uuid::new_v4().to_string(), "nowhere");
        vt.extra_specs.insert("volume_backend_name".into(), "no-such-backend".into());
        c.repo.create_volume_type(&vt).await.unwrap();
        let req = CreateVolume { size: Some(5), volume_type: Some("nowhere".into()), ..Default::default() };
        let v = c.ops.create_volume(&ctx(), req).await.unwrap();
        let v = c.wait_status(&v.id, VolumeStatus::Error).await;
        assert_eq!(v.host, None);
        assert!(fakes.iter().all(|f| f.calls(FakeOp::CreateVolume) == 0));
        assert_eq!(c.usage("volumes_nowhere").await.in_use, 1);
        // Never scheduled: the API flow deletes it itself, at once.
        c.ops.delete_volume(&ctx(), &v.id, Default::default()).await.unwrap();
        assert!(matches!(c.repo.get_volume(&v.id).await, Err(ember_common::Error::NotFound { .. })));
        for r in ["volumes", "gigabytes", "volumes_nowhere", "gigabytes_nowhere"] {
            let u = c.usage(r).await;
            assert_eq!((u.in_use, u.reserved), (0, 0), "{r}");
        }
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_cinder_errors_and_change_nothing() {
    on_every_db(|db| async move {
        let (_fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let over = c.ops.create_volume(&ctx(), CreateVolume { size: Some(5000), ..Default::default() }).await;
        let err = over.unwrap_err();
        assert_eq!(err.kind, ErrorKind::OverLimit);
        assert!(
            err.message.starts_with("Requested volume or snapshot exceeds allowed gigabytes quota."),
            "{err:?}"
        );
        let missing = CreateVolume { snapshot_id: Some("nope".into()), ..Default::default() };
        assert_eq!(c.ops.create_volume(&ctx(), missing).await.unwrap_err().kind, ErrorKind::NotFound);
        let both = CreateVolume {
            size: Some(1),
            snapshot_id: Some("a".into()),
            source_volid: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(c.ops.create_volume(&ctx(), both).await.unwrap_err().kind, ErrorKind::BadRequest);
        let zero = CreateVolume { size: Some(0), ..Default::default() };
        assert_eq!(c.ops.create_volume(&ctx(), zero).await.unwrap_err().kind, ErrorKind::BadRequest);
        c.repo.set_project_quota(support::PROJECT, "volumes", 1).await.unwrap();
        c.ops.create_volume(&ctx(), CreateVolume { size: Some(1), ..Default::default() }).await.unwrap();
        let err = c
            .ops
            .create_volume(&ctx(), CreateVolume { size: Some(1), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::OverLimit);
        assert_eq!(err.message, "Maximum number of volumes allowed (1) exceeded for quota 'volumes'.");
        let u = c.usage("gigabytes").await;
        assert_eq!((u.in_use, u.reserved), (1, 0));
        c.stop().await;
    })
    .await;
}
