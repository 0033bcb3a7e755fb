//! The end-to-end scenario of issue 5, run on every deployment shape: 50 concurrent creates
//! (blank, from a snapshot, clones), then extends, snapshots and deletes, checking after
//! each phase that the backend holds exactly the live volumes and snapshots and that quota
//! usage equals them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};

use super::Cinder;

/// Raises the project's quotas so the scenario is bound by nothing but the backends.
pub async fn raise_quotas(cinder: &Cinder, project: &str) {
    let body = json!({ "quota_set": { "volumes": 200, "gigabytes": 2000, "snapshots": 200 } });
    let (status, answer) =
        cinder.send(reqwest::Method::PUT, &format!("/os-quota-sets/{project}"), Some(body)).await;
    assert_eq!(status, 200, "quota update: {answer}");
}

fn ids(list: &Value, key: &str) -> Vec<(String, i64)> {
    list[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|v| (v["id"].as_str().unwrap_or_default().to_owned(), v["size"].as_i64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// The backend holds exactly the files of the live volumes and snapshots, and quota usage
/// equals them with nothing left reserved (polled: a flow releases quota a moment after the
/// resource is gone from the API).
pub async fn check_backend_and_quota(cinder: &Cinder, project: &str, files: &dyn Fn() -> Vec<String>) {
    let volumes = ids(&cinder.get("/volumes/detail").await.1, "volumes");
    let snapshots = ids(&cinder.get("/snapshots/detail").await.1, "snapshots");
    let mut expected: BTreeSet<String> = volumes.iter().map(|(id, _)| format!("volume-{id}")).collect();
    expected.extend(snapshots.iter().map(|(id, _)| format!("snapshot-{id}")));
    let found: BTreeSet<String> = files().into_iter().collect();
    assert_eq!(found, expected, "the backend holds exactly the live volumes and snapshots");
    let deadline = Instant::now() + Duration::from_secs(30);
    cinder.wait_quota(project, "volumes", (volumes.len() as i64, 0), deadline).await;
    cinder.wait_quota(project, "snapshots", (snapshots.len() as i64, 0), deadline).await;
    let gigabytes: i64 = volumes.iter().chain(&snapshots).map(|(_, size)| size).sum();
    cinder.wait_quota(project, "gigabytes", (gigabytes, 0), deadline).await;
}

pub async fn wait_all(cinder: &Cinder, paths: &[String], want: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    join_all(paths.iter().map(|p| cinder.wait_status(p, want, deadline))).await;
}

/// The whole scenario; `files` lists the backend's `volume-*`/`snapshot-*` files.
pub async fn fifty_operations(cinder: &Cinder, project: &str, files: &dyn Fn() -> Vec<String>) {
    raise_quotas(cinder, project).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let base = cinder.create_volume(json!({ "size": 1, "name": "base" })).await;
    cinder.wait_status(&format!("/volumes/{base}"), "available", deadline).await;
    let snap = cinder.create_snapshot(&base).await;
    cinder.wait_status(&format!("/snapshots/{snap}"), "available", deadline).await;

    // 50 at once: blank, from the snapshot, and clones of the base volume.
    let bodies: Vec<Value> = (0..50)
        .map(|i| match i % 3 {
            0 => json!({ "size": 1, "name": format!("blank-{i}") }),
            1 => json!({ "snapshot_id": snap, "name": format!("from-snap-{i}") }),
            _ => json!({ "source_volid": base, "name": format!("clone-{i}") }),
        })
        .collect();
    let created = join_all(bodies.into_iter().map(|b| cinder.create_volume(b))).await;
    let paths: Vec<String> = created.iter().map(|id| format!("/volumes/{id}")).collect();
    wait_all(cinder, &paths, "available", Duration::from_secs(180)).await;
    check_backend_and_quota(cinder, project, files).await;

    // Extend ten, snapshot ten others.
    for id in &created[..10] {
        let (status, body) =
            cinder.post(&format!("/volumes/{id}/action"), json!({ "os-extend": { "new_size": 2 } })).await;
        assert_eq!(status, 202, "extend: {body}");
    }
    let snaps = join_all(created[10..20].iter().map(|id| cinder.create_snapshot(id))).await;
    wait_all(cinder, &paths[..10], "available", Duration::from_secs(120)).await;
    let snap_paths: Vec<String> = snaps.iter().map(|id| format!("/snapshots/{id}")).collect();
    wait_all(cinder, &snap_paths, "available", Duration::from_secs(120)).await;
    for path in &paths[..10] {
        assert_eq!(cinder.get(path).await.1["volume"]["size"], 2, "{path} was extended");
    }
    check_backend_and_quota(cinder, project, files).await;

    // Delete everything: snapshots first, then volumes.
    let mut all_snaps = snap_paths.clone();
    all_snaps.push(format!("/snapshots/{snap}"));
    for path in &all_snaps {
        assert_eq!(cinder.delete(path).await, 202, "delete {path}");
    }
    wait_all(cinder, &all_snaps, "gone", Duration::from_secs(120)).await;
    let mut all_volumes = paths.clone();
    all_volumes.push(format!("/volumes/{base}"));
    for path in &all_volumes {
        assert_eq!(cinder.delete(path).await, 202, "delete {path}");
    }
    wait_all(cinder, &all_volumes, "gone", Duration::from_secs(120)).await;
    check_backend_and_quota(cinder, project, files).await;
    assert!(files().is_empty(), "no file is left behind");
}
