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
use support::TestCluster;
use support::backups::{backup, write_pattern};

const PROJECT: &str = "bak00000000000000000000000000000";

/// Whether two images hold the same data, as `qemu-img compare` says.
fn same_data(a: &Path, b: &Path) -> bool {
    Command::new("qemu-img").arg("compare").arg(a).arg(b).status().expect("run qemu-img").success()
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

#[tokio::test]
async fn a_volume_created_from_a_backup_holds_its_data_and_bad_backup_ids_are_refused() {
    let cluster = TestCluster::all_in_one().await;
    let c = cluster.client(PROJECT).with_version("3.47");
    let deadline = Instant::now() + Duration::from_secs(120);
    let vol = c.create_volume(json!({ "size": 2, "name": "source" })).await;
    c.wait_status(&format!("/volumes/{vol}"), "available", deadline).await;
    let image = cluster.volume_dir().join(format!("volume-{vol}"));
    write_pattern(&image, "1M", "2M", 0x5a);
    write_pattern(&image, "1500M", "1M", 0x33);
    let bk = backup(&c, json!({ "volume_id": vol }), deadline).await;

    // Refusals change nothing: smaller than the backup, unknown, not available.
    let volumes_before = c.quota_usage(PROJECT, "volumes").await;
    let (status, body) = c.post("/volumes", json!({ "volume": { "backup_id": bk, "size": 1 } })).await;
    assert_eq!(status, 400, "smaller than the backup: {body}");
    let unknown = "00000000-0000-4000-8000-000000000000";
    let (status, body) = c.post("/volumes", json!({ "volume": { "backup_id": unknown } })).await;
    assert_eq!(status, 404, "unknown backup: {body}");
    assert!(body["itemNotFound"].is_object(), "{body}");
    let reset = json!({ "os-reset_status": { "status": "error" } });
    assert_eq!(c.post(&format!("/backups/{bk}/action"), reset).await.0, 202);
    let (status, body) = c.post("/volumes", json!({ "volume": { "backup_id": bk } })).await;
    assert_eq!(status, 400, "a backup in error: {body}");
    let reset = json!({ "os-reset_status": { "status": "available" } });
    assert_eq!(c.post(&format!("/backups/{bk}/action"), reset).await.0, 202);
    assert_eq!(c.quota_usage(PROJECT, "volumes").await, volumes_before);

    // The size comes from the backup; the new volume ends `available` with the data.
    let (status, body) = c.post("/volumes", json!({ "volume": { "backup_id": bk, "name": "frombk" } })).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["volume"]["size"], 2, "{body}");
    let new_vol = body["volume"]["id"].as_str().expect("a volume id").to_owned();
    c.wait_status(&format!("/volumes/{new_vol}"), "available", deadline).await;
    c.wait_status(&format!("/backups/{bk}"), "available", deadline).await;
    assert!(
        same_data(&image, &cluster.volume_dir().join(format!("volume-{new_vol}"))),
        "the new volume equals the backed-up one"
    );
    assert_eq!(c.quota_usage(PROJECT, "volumes").await, (volumes_before.0 + 1, 0));
    // A larger volume than the backup is fine too.
    let bigger = c.create_volume(json!({ "backup_id": bk, "size": 3 })).await;
    c.wait_status(&format!("/volumes/{bigger}"), "available", deadline).await;
}

#[tokio::test]
async fn a_forced_backup_of_an_in_use_volume_reads_a_temporary_snapshot_and_removes_it() {
    // The backup pauses before it reads, so the temporary snapshot can be seen.
    let pause =
        ("FAILPOINTS".to_owned(), "backup_create_backup.BackupDataTask.before=1*sleep(1500)".to_owned());
    let cluster = TestCluster::all_in_one_env("", vec![pause]).await;
    let c = cluster.client(PROJECT).with_version("3.44");
    let deadline = Instant::now() + Duration::from_secs(120);
    let vol = c.create_volume(json!({ "size": 1 })).await;
    c.wait_status(&format!("/volumes/{vol}"), "available", deadline).await;
    let image = cluster.volume_dir().join(format!("volume-{vol}"));
    write_pattern(&image, "2M", "1M", 0x77);
    // Attached without a connector, then completed: `in-use`, not exported.
    let (status, created) = c
        .post(
            "/attachments",
            json!({ "attachment": { "volume_uuid": vol, "instance_uuid": "11111111-1111-4111-8111-111111111111" } }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let attachment = created["attachment"]["id"].as_str().expect("an attachment id").to_owned();
    let (status, body) =
        c.post(&format!("/attachments/{attachment}/action"), json!({ "os-complete": {} })).await;
    assert_eq!(status, 204, "{body}");
    c.wait_status(&format!("/volumes/{vol}"), "in-use", deadline).await;

    let (status, body) = c.post("/backups", json!({ "backup": { "volume_id": vol } })).await;
    assert_eq!(status, 400, "in-use without force: {body}");
    let (status, created) =
        c.post("/backups", json!({ "backup": { "volume_id": vol, "force": true } })).await;
    assert_eq!(status, 202, "{created}");
    let bk = created["backup"]["id"].as_str().expect("a backup id").to_owned();
    let temp = format!("snapshot-backup-snap-{bk}");
    while !cluster.backend_files().iter().any(|f| f.contains(&temp)) {
        assert!(Instant::now() < deadline, "no temporary snapshot {temp}: {:?}", cluster.backend_files());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.wait_status(&format!("/backups/{bk}"), "available", deadline).await;
    c.wait_status(&format!("/volumes/{vol}"), "in-use", deadline).await;
    // The release is handed off, not waited for: the snapshot goes a moment later.
    while cluster.backend_files().iter().any(|f| f.contains("backup-snap")) {
        assert!(Instant::now() < deadline, "the temporary snapshot stays: {:?}", cluster.backend_files());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, restored) = c.post(&format!("/backups/{bk}/restore"), json!({ "restore": {} })).await;
    assert_eq!(status, 202, "restore: {restored}");
    let new_vol = restored["restore"]["volume_id"].as_str().expect("the new volume").to_owned();
    c.wait_status(&format!("/volumes/{new_vol}"), "available", deadline).await;
    assert!(
        same_data(&image, &cluster.volume_dir().join(format!("volume-{new_vol}"))),
        "restore equals source"
    );
}

#[tokio::test]
async fn a_snapshot_backup_holds_the_snapshots_data_and_swaps_the_snapshot() {
    let cluster = TestCluster::all_in_one().await;
    let c = cluster.client(PROJECT).with_version("3.47");
    let deadline = Instant::now() + Duration::from_secs(120);
    let vol = c.create_volume(json!({ "size": 1 })).await;
    c.wait_status(&format!("/volumes/{vol}"), "available", deadline).await;
    let image = cluster.volume_dir().join(format!("volume-{vol}"));
    write_pattern(&image, "4M", "1M", 0x01);
    let snap = c.create_snapshot(&vol).await;
    c.wait_status(&format!("/snapshots/{snap}"), "available", deadline).await;
    // The volume changes after the snapshot: the backup must not see the change.
    let reference = cluster.data_dir().join("reference.img");
    std::fs::copy(&image, &reference).expect("copy the image as of the snapshot");
    write_pattern(&image, "4M", "1M", 0x02);

    let (status, created) =
        c.post("/backups", json!({ "backup": { "volume_id": vol, "snapshot_id": snap } })).await;
    assert_eq!(status, 202, "{created}");
    let bk = created["backup"]["id"].as_str().expect("a backup id").to_owned();
    // The volume is never moved to `backing-up`: it stays usable.
    let (_, v) = c.get(&format!("/volumes/{vol}")).await;
    assert_eq!(v["volume"]["status"], "available", "{v}");
    c.wait_status(&format!("/backups/{bk}"), "available", deadline).await;
    c.wait_status(&format!("/snapshots/{snap}"), "available", deadline).await;

    let new_vol = c.create_volume(json!({ "backup_id": bk })).await;
    c.wait_status(&format!("/volumes/{new_vol}"), "available", deadline).await;
    let restored = cluster.volume_dir().join(format!("volume-{new_vol}"));
    assert!(same_data(&reference, &restored), "the backup holds the snapshot's data");
    assert!(!same_data(&image, &restored), "not the volume's later data");
}

#[tokio::test]
async fn an_imported_backup_counts_in_the_quota() {
    let cluster = TestCluster::all_in_one().await;
    let c = cluster.client(PROJECT);
    let deadline = Instant::now() + Duration::from_secs(60);
    let vol = c.create_volume(json!({ "size": 1 })).await;
    c.wait_status(&format!("/volumes/{vol}"), "available", deadline).await;
    let bk = backup(&c, json!({ "volume_id": vol }), deadline).await;
    let (status, record) = c.get(&format!("/backups/{bk}/export_record")).await;
    assert_eq!(status, 200, "{record}");
    // The same record under a new id, as another deployment sharing the store would have
    // it (the quota is what is checked here, not the data).
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut row: serde_json::Value =
        serde_json::from_slice(&b64.decode(record["backup-record"]["backup_url"].as_str().unwrap()).unwrap())
            .unwrap();
    let imported = "22222222-2222-4222-8222-222222222222";
    row["id"] = json!(imported);
    let mut record = record["backup-record"].clone();
    record["backup_url"] = json!(b64.encode(serde_json::to_vec(&row).unwrap()));
    assert_eq!(c.quota_usage(PROJECT, "backups").await, (1, 0));

    let put = |n: i64| json!({ "quota_set": { "backups": n } });
    let (status, body) =
        c.send(reqwest::Method::PUT, &format!("/os-quota-sets/{PROJECT}"), Some(put(1))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c.post("/backups/import_record", json!({ "backup-record": record.clone() })).await;
    assert_eq!(status, 413, "over quota: {body}");
    assert_eq!(c.get(&format!("/backups/{imported}")).await.0, 404, "nothing imported");
    assert_eq!(c.quota_usage(PROJECT, "backups").await, (1, 0));

    let (status, body) =
        c.send(reqwest::Method::PUT, &format!("/os-quota-sets/{PROJECT}"), Some(put(10))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c.post("/backups/import_record", json!({ "backup-record": record })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(c.get(&format!("/backups/{imported}")).await.0, 200);
    assert_eq!(c.quota_usage(PROJECT, "backups").await, (2, 0));
    assert_eq!(c.quota_usage(PROJECT, "backup_gigabytes").await, (2, 0));
}
