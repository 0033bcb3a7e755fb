//! Conflicting operations on one volume have exactly one winner, decided in the database:
//! a delete of a volume fired together with a snapshot of it, many times, on SQLite and
//! PostgreSQL. After the dust settles no snapshot outlives its volume, nothing is left in
//! transition and quota usage equals the live resources.

mod support;

use ember_common::model::{SnapshotFilter, VolumeFilter, VolumeStatus};
use ember_common::ops::{CreateSnapshot, CreateVolume, DeleteVolume, VolumeOps};
use ember_common::repo::{SnapshotRepo, VolumeRepo};
use support::{Cluster, Options, ctx, on_every_db, two_fakes, wait_gone, wait_snapshot};

const ROUNDS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_against_snapshot_create_has_one_winner() {
    on_every_db(|db| async move {
        let (_fakes, drivers) = two_fakes();
        let c = Cluster::start(&db, drivers, Options::default()).await;
        let mut volumes = Vec::new();
        for _ in 0..ROUNDS {
            let v = c.ops.create_volume(&ctx(), CreateVolume { size: Some(1), ..Default::default() }).await;
            volumes.push(v.unwrap().id);
        }
        for id in &volumes {
            c.wait_status(id, VolumeStatus::Available).await;
        }
        let (mut deletes, mut snapshots) = (0, 0);
        for id in &volumes {
            let snap = CreateSnapshot { volume_id: id.clone(), ..Default::default() };
            let rc = ctx();
            let (deleted, snapped) = tokio::join!(
                c.ops.delete_volume(&rc, id, DeleteVolume::default()),
                c.ops.create_snapshot(&rc, snap),
            );
            match (deleted, snapped) {
                (Ok(()), Err(_)) => {
                    deletes += 1;
                    wait_gone(&c, id).await;
                }
                (Err(_), Ok(s)) => {
                    snapshots += 1;
                    wait_snapshot(&c, &s.id, |s| s.status.as_str() == "available").await;
                }
                (d, s) => panic!("volume {id}: delete {d:?} and snapshot {s:?} both won or both lost"),
            }
        }
        // The refused requests' api flows end reverted.
        c.wait_idle(false).await;
        // Every live snapshot's volume is live; the counts add up.
        let live: Vec<_> = c.repo.list_volumes(&VolumeFilter::default(), &Default::default()).await.unwrap();
        let snaps = c.repo.list_snapshots(&SnapshotFilter::default(), &Default::default()).await.unwrap();
        for s in &snaps {
            assert!(
                live.iter().any(|v| v.id == s.volume_id),
                "snapshot {} outlived volume {}",
                s.id,
                s.volume_id
            );
        }
        assert_eq!(live.len(), snapshots, "{deletes} deletes and {snapshots} snapshots won");
        assert_eq!(snaps.len(), snapshots);
        assert_eq!(c.usage("volumes").await.in_use, snapshots as i64);
        assert_eq!(c.usage("snapshots").await.in_use, snapshots as i64);
        println!("delete vs snapshot create: {deletes} deletes won, {snapshots} snapshots won");
        c.stop().await;
    })
    .await;
}
