//! Creating volumes through the three create flows: blank, from a snapshot, clones, and
//! the failure paths (reschedule, no valid backend).

mod support;

use ember_common::model::VolumeStatus;
use ember_common::ops::{CreateVolume, VolumeOps};
use support::{Cluster, Options, ctx, on_every_db, two_fakes};

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
