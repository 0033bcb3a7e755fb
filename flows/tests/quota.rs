//! Quota usage stays exact through a burst of concurrent operations of every kind.

mod support;

use std::collections::BTreeSet;

use ember_common::model::{ListOptions, SnapshotFilter, SnapshotStatus, VolumeFilter, VolumeStatus};
use ember_common::ops::{CreateSnapshot, CreateVolume, VolumeOps};
use ember_common::repo::{SnapshotRepo, VolumeRepo};
use support::{Cluster, Options, PROJECT, ctx, on_every_db, two_fakes, wait_snapshot};
use tokio::task::JoinSet;

/// Checks `in_use` of every counted resource against the live rows, and nothing reserved.
async fn assert_exact(c: &Cluster) {
    let vf = VolumeFilter { project_id: Some(PROJECT.into()), ..Default::default() };
    let page = ListOptions { limit: Some(1000), ..Default::default() };
    let vols = c.repo.list_volumes(&vf, &page).await.unwrap();
    let sf = SnapshotFilter { project_id: Some(PROJECT.into()), ..Default::default() };
    let snaps = c.repo.list_snapshots(&sf, &page).await.unwrap();
    let gigabytes: i64 =
        vols.iter().map(|v| v.size).sum::<i64>() + snaps.iter().map(|s| s.volume_size).sum::<i64>();
    for (resource, want) in
        [("volumes", vols.len() as i64), ("snapshots", snaps.len() as i64), ("gigabytes", gigabytes)]
    {
        let u = c.usage(resource).await;
        assert_eq!((u.in_use, u.reserved), (want, 0), "{resource}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_exact_after_a_concurrent_mix_of_operations() {
    on_every_db(|db| async move {
        let (fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        // A source volume and a snapshot of it for the derived creates.
        let src =
            c.ops.create_volume(&ctx(), CreateVolume { size: Some(1), ..Default::default() }).await.unwrap();
        c.wait_status(&src.id, VolumeStatus::Available).await;
        let snap_req = CreateSnapshot { volume_id: src.id.clone(), ..Default::default() };
        let snap = c.ops.create_snapshot(&ctx(), snap_req).await.unwrap();
        wait_snapshot(&c, &snap.id, |s| s.status == SnapshotStatus::Available).await;

        // 30 concurrent creates: blank, from the snapshot, clones.
        let mut set = JoinSet::new();
        for i in 0..30 {
            let ops = c.ops.clone();
            let req = match i % 3 {
                0 => CreateVolume { size: Some(1 + (i % 4)), ..Default::default() },
                1 => CreateVolume { size: Some(2), snapshot_id: Some(snap.id.clone()), ..Default::default() },
                _ => CreateVolume { source_volid: Some(src.id.clone()), ..Default::default() },
            };
            set.spawn(async move { ops.create_volume(&ctx(), req).await });
        }
        let mut ids = Vec::new();
        while let Some(r) = set.join_next().await {
            ids.push(r.unwrap().unwrap().id);
        }
        for id in &ids {
            c.wait_status(id, VolumeStatus::Available).await;
        }
        c.wait_idle(true).await;
        assert_exact(&c).await;

        // Then at once: extend a third, snapshot a third, delete a third.
        let mut set = JoinSet::new();
        for (i, id) in ids.iter().enumerate() {
            let ops = c.ops.clone();
            let id = id.clone();
            set.spawn(async move {
                match i % 3 {
                    0 => ops.extend_volume(&ctx(), &id, 5).await,
                    1 => {
                        let req = CreateSnapshot { volume_id: id, ..Default::default() };
                        ops.create_snapshot(&ctx(), req).await.map(drop)
                    }
                    _ => ops.delete_volume(&ctx(), &id, Default::default()).await,
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        c.wait_idle(true).await;
        assert_exact(&c).await;

        // The backends hold exactly the live volumes and snapshots.
        let vf = VolumeFilter { project_id: Some(PROJECT.into()), ..Default::default() };
        let page = ListOptions { limit: Some(1000), ..Default::default() };
        let live: BTreeSet<String> =
            c.repo.list_volumes(&vf, &page).await.unwrap().into_iter().map(|v| v.id).collect();
        let on_backends: Vec<String> = fakes.iter().flat_map(|f| f.volume_ids()).collect();
        assert_eq!(on_backends.len(), live.len());
        assert_eq!(on_backends.into_iter().collect::<BTreeSet<_>>(), live);
        let sf = SnapshotFilter { project_id: Some(PROJECT.into()), ..Default::default() };
        let snaps = c.repo.list_snapshots(&sf, &page).await.unwrap();
        assert!(snaps.iter().all(|s| s.status == SnapshotStatus::Available));
        assert_eq!(fakes.iter().map(|f| f.snapshot_ids().len()).sum::<usize>(), snaps.len());
        for v in c.repo.list_volumes(&vf, &page).await.unwrap() {
            assert_eq!(v.status, VolumeStatus::Available, "{}", v.id);
        }
        c.stop().await;
    })
    .await;
}
