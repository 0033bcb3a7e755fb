//! The flows on the real `file` driver (qcow2 files through qemu-img) in temporary
//! directories: the directories hold exactly the files of live volumes and snapshots.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use ember_common::model::{SnapshotStatus, VolumeStatus};
use ember_common::ops::{CreateSnapshot, CreateVolume, VolumeOps};
use ember_common::repo::SnapshotRepo;
use ember_drivers::{FileDriver, FileOptions, SharedDriver};
use support::{BACKENDS, Cluster, Options, ctx, on_every_db, poll, wait_gone, wait_snapshot};

/// The image files (`volume-*`, `snapshot-*`) in `dir`.
fn images(dirs: &[&Path]) -> BTreeSet<String> {
    dirs.iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| (n.starts_with("volume-") || n.starts_with("snapshot-")) && !n.ends_with(".tmp"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_snapshots_clones_extends_and_deletes_on_qcow2_files() {
    on_every_db(|db| async move {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<_> = BACKENDS.iter().map(|b| tmp.path().join(b.replace('@', "_"))).collect();
        let drivers: Vec<(&str, SharedDriver)> = BACKENDS
            .iter()
            .zip(&dirs)
            .map(|(b, d)| {
                let opts = FileOptions {
                    backend_name: (*b).to_owned(),
                    data_dir: d.clone(),
                    ..FileOptions::default()
                };
                (*b, Arc::new(FileDriver::new(opts)) as SharedDriver)
            })
            .collect();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let dir_refs: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();

        let a =
            c.ops.create_volume(&ctx(), CreateVolume { size: Some(1), ..Default::default() }).await.unwrap();
        c.wait_status(&a.id, VolumeStatus::Available).await;
        let snap_req = CreateSnapshot { volume_id: a.id.clone(), ..Default::default() };
        let snap = c.ops.create_snapshot(&ctx(), snap_req).await.unwrap();
        wait_snapshot(&c, &snap.id, |s| s.status == SnapshotStatus::Available).await;
        let from_snap =
            CreateVolume { size: Some(2), snapshot_id: Some(snap.id.clone()), ..Default::default() };
        let b = c.ops.create_volume(&ctx(), from_snap).await.unwrap();
        let clone = CreateVolume { source_volid: Some(a.id.clone()), ..Default::default() };
        let d = c.ops.create_volume(&ctx(), clone).await.unwrap();
        c.wait_status(&b.id, VolumeStatus::Available).await;
        c.wait_status(&d.id, VolumeStatus::Available).await;
        c.ops.extend_volume(&ctx(), &d.id, 3).await.unwrap();
        c.wait_volume(&d.id, |v| v.status == VolumeStatus::Available && v.size == 3).await;
        c.wait_idle(true).await;
        let want: BTreeSet<String> = [
            format!("volume-{}", a.id),
            format!("volume-{}", b.id),
            format!("volume-{}", d.id),
            format!("snapshot-{}", snap.id),
        ]
        .into();
        assert_eq!(images(&dir_refs), want);

        // Delete everything, the snapshot before its volume.
        for id in [&b.id, &d.id] {
            c.ops.delete_volume(&ctx(), id, Default::default()).await.unwrap();
        }
        c.ops.delete_snapshot(&ctx(), &snap.id, false).await.unwrap();
        let repo = c.repo.clone();
        let sid = snap.id.clone();
        poll(
            std::time::Duration::from_secs(30),
            "the snapshot to be deleted",
            move || {
                let repo = repo.clone();
                let sid = sid.clone();
                async move { Some(repo.get_snapshot(&sid).await.is_err()) }
            },
            |gone| *gone,
        )
        .await;
        c.ops.delete_volume(&ctx(), &a.id, Default::default()).await.unwrap();
        for id in [&a.id, &b.id, &d.id] {
            wait_gone(&c, id).await;
        }
        c.wait_idle(true).await;
        assert!(images(&dir_refs).is_empty(), "{:?}", images(&dir_refs));
        for r in ["volumes", "snapshots", "gigabytes"] {
            let u = c.usage(r).await;
            assert_eq!((u.in_use, u.reserved), (0, 0), "{r}");
        }
        c.stop().await;
    })
    .await;
}
