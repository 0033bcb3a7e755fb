//! End-to-end: volumes created, snapshotted, extended and deleted through the REST API of
//! the real `ember all-in-one` (SQLite, in-process bus, file driver on qemu-img), and a
//! crash with creates in flight.

mod support;

use std::time::Duration;

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
