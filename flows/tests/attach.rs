//! Attach and detach flows: the attachments API cycle (create with a connector, complete,
//! delete), multiattach, refusals, read-only mode at the driver, reverts of a failed
//! export, the legacy actions, extend of an in-use volume, and workers crashing mid-attach.

mod support;

use std::time::Duration;

use ember_common::ErrorKind;
use ember_common::model::{AttachStatus, Volume, VolumeChanges, VolumeExpect, VolumeStatus};
use ember_common::ops::{AttachOps, CreateAttachment, CreateVolume, LegacyAttach, VolumeOps};
use ember_common::repo::{AttachmentRepo, VolumeRepo};
use ember_drivers::{FakeOp, FakeOptions};
use serde_json::{Value, json};
use support::{BACKENDS, Cluster, Options, ctx, fake, on_every_db, poll, two_fakes};

async fn available(c: &Cluster) -> Volume {
    let v = c.ops.create_volume(&ctx(), CreateVolume { size: Some(1), ..Default::default() }).await.unwrap();
    c.wait_status(&v.id, VolumeStatus::Available).await
}

fn connector(host: &str) -> Value {
    json!({ "host": host, "ip": "10.0.0.1", "initiator": format!("iqn.1993-08.org.debian:01:{host}") })
}

fn request(v: &Volume, host: Option<&str>, mode: Option<&str>) -> CreateAttachment {
    CreateAttachment {
        volume_id: v.id.clone(),
        instance_uuid: Some(uuid::Uuid::new_v4().to_string()),
        connector: host.map(connector),
        mode: mode.map(str::to_owned),
    }
}

/// Every export of every backend.
async fn exports(c: &Cluster) -> Vec<String> {
    let mut all = Vec::new();
    for d in c.drivers.values() {
        all.extend(d.list_exports().await.unwrap());
    }
    all.sort();
    all
}

async fn volume(c: &Cluster, id: &str) -> Volume {
    c.repo.get_volume(id).await.unwrap()
}

async fn make_multiattach(c: &Cluster, v: &Volume) {
    let changes = VolumeChanges { multiattach: Some(true), ..VolumeChanges::default() };
    let expect = VolumeExpect::status_in(&[VolumeStatus::Available]);
    c.repo.update_volume(&v.id, &expect, &changes).await.unwrap().expect("multiattach set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_cycle_exports_completes_and_detaches() {
    on_every_db(|db| async move {
        let (_fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c).await;

        let a = c.attach.create_attachment(&ctx(), request(&v, Some("compute-1"), None)).await.unwrap();
        assert_eq!(a.attach_status, AttachStatus::Attaching);
        assert_eq!(a.attach_mode, "rw");
        assert_eq!(a.attached_host.as_deref(), Some("compute-1"));
        assert_eq!(a.connector, Some(connector("compute-1")));
        let info = a.connection_info.clone().expect("connection info");
        assert_eq!(info["driver_volume_type"], "fake");
        assert_eq!(info["volume_id"], v.id.as_str());
        assert_eq!(info["attachment_id"], a.id.as_str());
        assert_eq!(info["access_mode"], "rw");
        for (k, want) in
            [("encrypted", json!(false)), ("cacheable", json!(false)), ("qos_specs", Value::Null)]
        {
            assert_eq!(info[k], want, "{k}");
        }
        assert_eq!(info["enforce_multipath"], false);
        let after = volume(&c, &v.id).await;
        assert_eq!((after.status, after.attach_status), (VolumeStatus::Attaching, AttachStatus::Attaching));
        assert_eq!(exports(&c).await, vec![v.id.clone()]);

        c.attach.complete_attachment(&ctx(), &a.id).await.unwrap();
        let done = c.repo.get_attachment(&a.id).await.unwrap();
        assert_eq!(done.attach_status, AttachStatus::Attached);
        assert!(done.attached_at.is_some());
        let after = volume(&c, &v.id).await;
        assert_eq!((after.status, after.attach_status), (VolumeStatus::InUse, AttachStatus::Attached));

        // An attached volume is not deleted, even forced by an admin.
        let err = c.ops.delete_volume(&ctx(), &v.id, Default::default()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);

        let left = c.attach.delete_attachment(&ctx(), &a.id).await.unwrap();
        assert!(left.is_empty());
        let after = volume(&c, &v.id).await;
        assert_eq!((after.status, after.attach_status), (VolumeStatus::Available, AttachStatus::Detached));
        assert!(exports(&c).await.is_empty());
        assert!(c.repo.get_attachment(&a.id).await.is_err());
        c.wait_idle(false).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_attachment_is_updated_later_or_deleted_without_the_backend() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c).await;
        let a = c.attach.create_attachment(&ctx(), request(&v, None, None)).await.unwrap();
        assert_eq!(a.attach_status, AttachStatus::Reserved);
        assert_eq!(a.connection_info, None);
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::Reserved);
        assert!(c.attach.delete_attachment(&ctx(), &a.id).await.unwrap().is_empty());
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::Available);
        assert_eq!(c.flow_count("attachment_delete_manager").await, 0);
        assert_eq!(fakes.iter().map(|f| f.calls(FakeOp::TerminateConnection)).sum::<u64>(), 0);

        // Reserved, then connected by an update.
        let a = c.attach.create_attachment(&ctx(), request(&v, None, None)).await.unwrap();
        let a = c.attach.update_attachment(&ctx(), &a.id, connector("compute-2")).await.unwrap();
        assert_eq!(a.attach_status, AttachStatus::Attaching);
        assert!(a.connection_info.is_some());
        // Again with another connector, as Cinder's attachment_update allows.
        let a = c.attach.update_attachment(&ctx(), &a.id, connector("compute-3")).await.unwrap();
        assert_eq!(a.attach_status, AttachStatus::Attaching);
        assert_eq!(a.connector.as_ref().and_then(|c| c["host"].as_str()), Some("compute-3"));
        c.attach.delete_attachment(&ctx(), &a.id).await.unwrap();
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::Available);
        assert!(exports(&c).await.is_empty());
        // Another project sees nothing.
        let other = ember_common::ops::RequestContext { project_id: "p2".into(), ..ctx() };
        let a = c.attach.create_attachment(&ctx(), request(&v, None, None)).await.unwrap();
        let err = c.attach.delete_attachment(&other, &a.id).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        c.wait_idle(false).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_attachment_of_a_plain_volume_is_refused() {
    on_every_db(|db| async move {
        let (_fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c).await;
        let a = c.attach.create_attachment(&ctx(), request(&v, Some("compute-1"), None)).await.unwrap();
        c.attach.complete_attachment(&ctx(), &a.id).await.unwrap();
        let err = c.attach.create_attachment(&ctx(), request(&v, Some("compute-2"), None)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(err.message.contains("must be available or downloading to reserve"), "{}", err.message);
        assert_eq!(c.repo.list_attachments(Some(&v.id), None).await.unwrap().len(), 1);
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::InUse);
        assert_eq!(exports(&c).await, vec![v.id.clone()]);
        c.attach.delete_attachment(&ctx(), &a.id).await.unwrap();
        c.wait_idle(false).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiattach_volume_stays_in_use_and_exported_until_its_last_attachment_goes() {
    on_every_db(|db| async move {
        let (_fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c).await;
        make_multiattach(&c, &v).await;
        let a1 = c.attach.create_attachment(&ctx(), request(&v, Some("compute-1"), None)).await.unwrap();
        c.attach.complete_attachment(&ctx(), &a1.id).await.unwrap();
        let a2 = c.attach.create_attachment(&ctx(), request(&v, Some("compute-2"), None)).await.unwrap();
        // Attached elsewhere: the volume stays in-use while the second one attaches.
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::InUse);
        c.attach.complete_attachment(&ctx(), &a2.id).await.unwrap();

        let left = c.attach.delete_attachment(&ctx(), &a1.id).await.unwrap();
        assert_eq!(left.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), vec![a2.id.as_str()]);
        let after = volume(&c, &v.id).await;
        assert_eq!((after.status, after.attach_status), (VolumeStatus::InUse, AttachStatus::Attached));
        assert_eq!(exports(&c).await, vec![v.id.clone()]);

        assert!(c.attach.delete_attachment(&ctx(), &a2.id).await.unwrap().is_empty());
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::Available);
        assert!(exports(&c).await.is_empty());
        c.wait_idle(true).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_attachment_reaches_the_driver_in_ro() {
    on_every_db(|db| async move {
        let (_fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c).await;
        let a = c.attach.create_attachment(&ctx(), request(&v, Some("compute-1"), Some("ro"))).await.unwrap();
        assert_eq!(a.attach_mode, "ro");
        // The fake driver answers the mode it was given.
        assert_eq!(a.connection_info.unwrap()["access_mode"], "ro");
        let err = c.attach.create_attachment(&ctx(), request(&v, None, Some("rx"))).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        c.attach.delete_attachment(&ctx(), &a.id).await.unwrap();
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::Available);
        c.wait_idle(false).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_leaves_error_attaching_the_volume_as_it_was_and_no_export() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c).await;
        fakes.iter().for_each(|f| f.fail_for(FakeOp::InitializeConnection, &v.id));
        let err = c.attach.create_attachment(&ctx(), request(&v, Some("compute-1"), None)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        let all = c.repo.list_attachments(Some(&v.id), None).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].attach_status, AttachStatus::ErrorAttaching);
        let after = volume(&c, &v.id).await;
        assert_eq!((after.status, after.attach_status), (VolumeStatus::Available, AttachStatus::Detached));
        assert!(exports(&c).await.is_empty());

        // A multiattach volume in use elsewhere goes back to in-use, its export kept.
        fakes.iter().for_each(|f| f.clear_failures());
        c.attach.delete_attachment(&ctx(), &all[0].id).await.unwrap();
        make_multiattach(&c, &v).await;
        let a1 = c.attach.create_attachment(&ctx(), request(&v, Some("compute-1"), None)).await.unwrap();
        c.attach.complete_attachment(&ctx(), &a1.id).await.unwrap();
        fakes.iter().for_each(|f| f.fail_next(FakeOp::InitializeConnection, 1));
        c.attach.create_attachment(&ctx(), request(&v, Some("compute-2"), None)).await.unwrap_err();
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::InUse);
        assert_eq!(exports(&c).await, vec![v.id.clone()]);
        c.wait_idle(false).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_actions_attach_and_detach() {
    on_every_db(|db| async move {
        let (_fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c).await;
        c.attach.reserve_volume(&ctx(), &v.id).await.unwrap();
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::Attaching);
        assert_eq!(c.attach.reserve_volume(&ctx(), &v.id).await.unwrap_err().kind, ErrorKind::BadRequest);
        c.attach.unreserve_volume(&ctx(), &v.id).await.unwrap();
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::Available);

        c.attach.reserve_volume(&ctx(), &v.id).await.unwrap();
        let info = c.attach.initialize_connection(&ctx(), &v.id, connector("compute-1")).await.unwrap();
        assert_eq!(info["driver_volume_type"], "fake");
        assert_eq!(info["data"]["volume_id"], v.id.as_str());
        // The same connector again: the same answer, one attachment.
        let again = c.attach.initialize_connection(&ctx(), &v.id, connector("compute-1")).await.unwrap();
        assert_eq!(again, info);
        let req = LegacyAttach { mountpoint: Some("/dev/vdb".into()), ..LegacyAttach::default() };
        let a = c.attach.attach(&ctx(), &v.id, req).await.unwrap();
        assert_eq!(a.attach_status, AttachStatus::Attached);
        assert_eq!(c.repo.list_attachments(Some(&v.id), None).await.unwrap().len(), 1);
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::InUse);

        c.attach.begin_detaching(&ctx(), &v.id).await.unwrap();
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::Detaching);
        c.attach.roll_detaching(&ctx(), &v.id).await.unwrap();
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::InUse);
        c.attach.begin_detaching(&ctx(), &v.id).await.unwrap();
        c.attach.terminate_connection(&ctx(), &v.id, connector("compute-1")).await.unwrap();
        assert!(exports(&c).await.is_empty());
        c.attach.detach(&ctx(), &v.id, None).await.unwrap();
        let after = volume(&c, &v.id).await;
        assert_eq!((after.status, after.attach_status), (VolumeStatus::Available, AttachStatus::Detached));

        // os-attach alone, then an admin's force detach.
        let a = c.attach.attach(&ctx(), &v.id, LegacyAttach::default()).await.unwrap();
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::InUse);
        let err = c.attach.force_detach(&ctx(), &v.id, Some(&a.id), None).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Forbidden);
        let admin = ember_common::ops::RequestContext { is_admin: true, ..ctx() };
        c.attach.force_detach(&admin, &v.id, None, None).await.unwrap();
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::Available);
        c.wait_idle(false).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_use_volume_is_extended_from_3_42_and_stays_in_use() {
    on_every_db(|db| async move {
        let (_fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let v = available(&c).await;
        let a = c.attach.create_attachment(&ctx(), request(&v, Some("compute-1"), None)).await.unwrap();
        c.attach.complete_attachment(&ctx(), &a.id).await.unwrap();
        let err = c.ops.extend_volume(&ctx(), &v.id, 2).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        c.ops.extend_volume_allowing_in_use(&ctx(), &v.id, 2, true).await.unwrap();
        let after = c.wait_volume(&v.id, |v| v.size == 2 && v.status != VolumeStatus::Extending).await;
        assert_eq!(after.status, VolumeStatus::InUse);
        assert_eq!(after.previous_status, None);
        c.attach.delete_attachment(&ctx(), &a.id).await.unwrap();
        c.wait_idle(false).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_whose_workers_crash_mid_export_finishes_after_restart() {
    on_every_db(|db| async move {
        let fakes: Vec<_> =
            BACKENDS.iter().map(|b| fake(b, FakeOptions { latency_ms: 400, ..Default::default() })).collect();
        let drivers = BACKENDS.iter().zip(&fakes).map(|(b, f)| (*b, f.clone() as _)).collect();
        let opts =
            Options { lease: Duration::from_secs(2), sweep: Duration::from_millis(100), max_attempts: 3 };
        let mut c = Cluster::start(&db, drivers, opts).await;
        let v = available(&c).await;
        let attach = c.attach.clone();
        let req = request(&v, Some("compute-1"), None);
        let call = tokio::spawn(async move { attach.create_attachment(&ctx(), req).await });
        // The connector is saved: the export is under way in the volume worker.
        let repo = c.repo.clone();
        let vid = v.id.clone();
        poll(
            Duration::from_secs(60),
            "the connector saved",
            move || {
                let (repo, vid) = (repo.clone(), vid.clone());
                async move { repo.list_attachments(Some(&vid), None).await.ok() }
            },
            |all: &Vec<ember_common::model::VolumeAttachment>| all.iter().any(|a| a.connector.is_some()),
        )
        .await;
        c.crash_workers().await;
        c.start_workers().await;
        let a = call.await.unwrap().expect("the attach finishes after the restart");
        assert_eq!(a.attach_status, AttachStatus::Attaching);
        assert_eq!(exports(&c).await, vec![v.id.clone()]);
        c.attach.complete_attachment(&ctx(), &a.id).await.unwrap();
        c.attach.delete_attachment(&ctx(), &a.id).await.unwrap();
        assert!(exports(&c).await.is_empty());
        assert_eq!(volume(&c, &v.id).await.status, VolumeStatus::Available);
        c.wait_idle(true).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_start_re_creates_the_exports_of_connected_attachments_or_errors_the_volume() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let (kept, lost) = (available(&c).await, available(&c).await);
        for v in [&kept, &lost] {
            let a = c.attach.create_attachment(&ctx(), request(v, Some("compute-1"), None)).await.unwrap();
            c.attach.complete_attachment(&ctx(), &a.id).await.unwrap();
        }
        // A restart lost every export; one volume's cannot be made again.
        for d in c.drivers.values() {
            for v in [&kept, &lost] {
                d.remove_export(&ember_drivers::DriverVolume::new(v.id.clone(), 1)).await.unwrap();
            }
        }
        assert!(exports(&c).await.is_empty());
        fakes.iter().for_each(|f| f.fail_for(FakeOp::InitializeConnection, &lost.id));
        let mut exported = 0;
        for backend in BACKENDS {
            exported += ember_flows::ensure_exports(&c.deps, backend).await.unwrap();
        }
        assert_eq!(exported, 1);
        assert_eq!(exports(&c).await, vec![kept.id.clone()]);
        assert_eq!(volume(&c, &kept.id).await.status, VolumeStatus::InUse);
        assert_eq!(volume(&c, &lost.id).await.status, VolumeStatus::Error);
        c.wait_idle(true).await;
        c.stop().await;
    })
    .await;
}
