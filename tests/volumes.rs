//! End-to-end: volumes created, snapshotted, extended and deleted (with their snapshots
//! too, by cascade) through the REST API of the real `ember all-in-one` (SQLite,
//! in-process bus, file driver on qemu-img), and a crash with creates in flight.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;
use support::TestCluster;
use support::scenario::{check_backend_and_quota, fifty_operations, raise_quotas, wait_all};

const PROJECT: &str = "e2e0000000000000000000000000000a";

#[tokio::test]
async fn fifty_concurrent_creates_then_extends_snapshots_and_deletes() {
    let cluster = TestCluster::all_in_one().await;
    let cinder = cluster.client(PROJECT);
    fifty_operations(&cinder, PROJECT, &|| cluster.backend_files()).await;
}

#[tokio::test]
async fn creates_in_flight_survive_a_kill_and_finish_after_restart() {
    let mut cluster = TestCluster::all_in_one().await;
    let cinder = cluster.client(PROJECT);
    raise_quotas(&cinder, PROJECT).await;
    let created =
        join_all((0..20).map(|i| cinder.create_volume(json!({ "size": 1, "name": format!("v{i}") })))).await;
    cluster.kill();
    cluster.start().await;
    let paths: Vec<String> = created.iter().map(|id| format!("/volumes/{id}")).collect();
    // The restarted process takes back the flows its earlier life held and finishes them.
    wait_all(&cinder, &paths, "available", Duration::from_secs(120)).await;
    check_backend_and_quota(&cinder, PROJECT, &|| cluster.backend_files()).await;
}

#[tokio::test]
async fn a_cascade_delete_takes_the_snapshots_their_files_and_their_quota() {
    let cluster = TestCluster::all_in_one().await;
    let cinder = cluster.client(PROJECT);
    let deadline = Instant::now() + Duration::from_secs(60);
    let volume = cinder.create_volume(json!({ "size": 1, "name": "cascade" })).await;
    cinder.wait_status(&format!("/volumes/{volume}"), "available", deadline).await;
    let mut snapshots = Vec::new();
    for _ in 0..2 {
        let id = cinder.create_snapshot(&volume).await;
        cinder.wait_status(&format!("/snapshots/{id}"), "available", deadline).await;
        snapshots.push(id);
    }
    let mut files: Vec<String> = snapshots.iter().map(|s| format!("snapshot-{s}")).collect();
    files.push(format!("volume-{volume}"));
    files.sort();
    assert_eq!(cluster.backend_files(), files);
    for (resource, in_use) in [("volumes", 1), ("snapshots", 2), ("gigabytes", 3)] {
        assert_eq!(cinder.quota_usage(PROJECT, resource).await, (in_use, 0), "{resource}");
    }
    // Without cascade, a volume with snapshots stays.
    assert_eq!(cinder.delete(&format!("/volumes/{volume}")).await, 400);
    assert_eq!(cinder.delete(&format!("/volumes/{volume}?cascade=true")).await, 202);
    cinder.wait_status(&format!("/volumes/{volume}"), "gone", deadline).await;
    for id in &snapshots {
        cinder.wait_status(&format!("/snapshots/{id}"), "gone", deadline).await;
    }
    assert_eq!(cluster.backend_files(), Vec::<String>::new());
    for resource in ["volumes", "snapshots", "gigabytes", "snapshots___DEFAULT__", "gigabytes___DEFAULT__"] {
        cinder.wait_quota(PROJECT, resource, (0, 0), deadline).await;
    }
}
