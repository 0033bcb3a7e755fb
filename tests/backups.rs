//! End-to-end backups on the real `ember all-in-one` (SQLite, in-process bus, file driver,
//! the POSIX backup store): a volume with data is backed up, changed, backed up again
//! incrementally, restored to a new volume whose image equals the source's, and the
//! backups are deleted leaving no chunk, no record and no quota behind. Noauth callers are
//! admins here, as in Cinder, so isolation is not what these tests check.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Cinder, TestCluster};

const PROJECT: &str = "bak00000000000000000000000000000";

/// Writes `pattern` bytes over `len` at `offset` of a volume's image with qemu-io.
fn write_pattern(image: &Path, offset: &str, len: &str, pattern: u8) {
    let out = Command::new("qemu-io")
        .args(["-c", &format!("write -P {pattern} {offset} {len}")])
        .arg(image)
        .output()
        .expect("run qemu-io");
    assert!(out.status.success(), "qemu-io: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether two images hold the same data, as `qemu-img compare` says.
fn same_data(a: &Path, b: &Path) -> bool {
    Command::new("qemu-img").arg("compare").arg(a).arg(b).status().expect("run qemu-img").success()
}

async fn backup(c: &Cinder, body: serde_json::Value, deadline: Instant) -> String {
    let (status, created) = c.post("/backups", json!({ "backup": body })).await;
    assert_eq!(status, 202, "create a backup: {created}");
    let id = created["backup"]["id"].as_str().expect("a backup id").to_owned();
    c.wait_status(&format!("/backups/{id}"), "available", deadline).await;
    id
}

/// The files of the store under `dir` (chunks and records), sorted.
fn store_files(dir: &Path, sub: &str) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join(sub), &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn a_backup_and_its_incremental_restore_the_data_and_leave_nothing_when_deleted() {
    let cluster = TestCluster::all_in_one().await;
    let c = cluster.client(PROJECT).with_version("3.51");
    let deadline = Instant::now() + Duration::from_secs(120);
    let vol = c.create_volume(json!({ "size": 1, "name": "source" })).await;
    c.wait_status(&format!("/volumes/{vol}"), "available", deadline).await;
    let image = cluster.volume_dir().join(format!("volume-{vol}"));
    write_pattern(&image, "1M", "3M", 0xab);
    write_pattern(&image, "500M", "1M", 0x11);

    let full = backup(&c, json!({ "volume_id": vol, "name": "full" }), deadline).await;
    let (_, shown) = c.get(&format!("/backups/{full}")).await;
    assert_eq!(shown["backup"]["object_count"], 2, "two 4 MiB chunks hold data: {shown}");
    let (_, v) = c.get(&format!("/volumes/{vol}")).await;
    assert_eq!(v["volume"]["status"], "available", "the volume is back to its status");

    // A change, then an incremental backup: it stores only the changed chunk.
    let store = cluster.data_dir().join("backups");
    let chunks_before = store_files(&store, "chunks").len();
    write_pattern(&image, "900M", "64k", 0x22);
    let incr = backup(&c, json!({ "volume_id": vol, "name": "incr", "incremental": true }), deadline).await;
    assert_eq!(store_files(&store, "chunks").len(), chunks_before + 1, "one new chunk");
    // The parent of an incremental cannot go first.
    let (status, body) = c.send(reqwest::Method::DELETE, &format!("/backups/{full}"), None).await;
    assert_eq!(status, 400, "{body}");

    // Restore the incremental into a new volume: same data as the source.
    let (status, restored) = c.post(&format!("/backups/{incr}/restore"), json!({ "restore": {} })).await;
    assert_eq!(status, 202, "restore: {restored}");
    let new_vol = restored["restore"]["volume_id"].as_str().expect("the new volume").to_owned();
    c.wait_status(&format!("/volumes/{new_vol}"), "available", deadline).await;
    c.wait_status(&format!("/backups/{incr}"), "available", deadline).await;
    assert!(
        same_data(&image, &cluster.volume_dir().join(format!("volume-{new_vol}"))),
        "the restore equals the source"
    );
    assert_eq!(c.quota_usage(PROJECT, "backups").await, (2, 0));

    // Delete both: no chunk, record or quota is left.
    for id in [&incr, &full] {
        assert_eq!(c.delete(&format!("/backups/{id}")).await, 202);
        c.wait_status(&format!("/backups/{id}"), "gone", deadline).await;
    }
    c.wait_quota(PROJECT, "backups", (0, 0), deadline).await;
    c.wait_quota(PROJECT, "backup_gigabytes", (0, 0), deadline).await;
    assert_eq!(store_files(&store, "chunks"), Vec::<String>::new());
    assert_eq!(store_files(&store, "backups"), Vec::<String>::new());
}

#[tokio::test]
async fn bad_backup_creates_are_refused_and_change_nothing() {
    let cluster = TestCluster::all_in_one().await;
    let c = cluster.client(PROJECT);
    let deadline = Instant::now() + Duration::from_secs(60);
    let vol = c.create_volume(json!({ "size": 1 })).await;
    c.wait_status(&format!("/volumes/{vol}"), "available", deadline).await;
    let id = backup(&c, json!({ "volume_id": vol }), deadline).await;
    assert_eq!(c.get(&format!("/backups/{id}")).await.0, 200);
    for bad in [json!({}), json!({ "backup": {} }), json!({ "backup": { "volume_id": "nope" } })] {
        let (status, body) = c.post("/backups", bad).await;
        assert!(status == 400 || status == 404, "{status}: {body}");
    }
    assert_eq!(c.quota_usage(PROJECT, "backups").await, (1, 0));
}
