//! Backups across hosts: the backup service reads a volume through an NBD export made by
//! the volume service and restores through a writable one (issue 14 item 6), and shows how
//! far a backup or restore is (item 7).
//!
//! - On separate processes (PostgreSQL, RabbitMQ), the backup process on a host of its
//!   own: a full backup, an incremental one, a restore into a new volume whose data has
//!   the source's SHA-256, and no export left afterwards; `ember manage backups list|show`
//!   print the backups with their progress.
//! - On all-in-one with `backup_use_nbd = true` and raw volumes: the export serves the
//!   volume's own file, and a restore writes the volume's own file through NBD.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::backups::{backup, write_pattern};
use support::multi::{MultiProcess, live_exports, services};
use support::{Cinder, TestCluster};

const PROJECT: &str = "bxh00000000000000000000000000000";

/// The SHA-256 of the data of a volume's image (whatever its format): its raw conversion.
fn data_sha256(image: &Path) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let raw = dir.path().join("image.raw");
    let out = Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(image).arg(&raw).output();
    let out = out.expect("run qemu-img");
    assert!(out.status.success(), "qemu-img convert: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("sha256sum").arg(&raw).output().expect("run sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

/// Restores backup `id` into a new volume and waits until both are available.
async fn restore(c: &Cinder, id: &str, deadline: Instant) -> String {
    let (status, restored) = c.post(&format!("/backups/{id}/restore"), json!({ "restore": {} })).await;
    assert_eq!(status, 202, "restore: {restored}");
    let new_vol = restored["restore"]["volume_id"].as_str().expect("the new volume").to_owned();
    c.wait_status(&format!("/volumes/{new_vol}"), "available", deadline).await;
    c.wait_status(&format!("/backups/{id}"), "available", deadline).await;
    new_vol
}

/// Waits until `binary`'s services count `want` up.
async fn wait_services_up(c: &Cinder, binary: &str, want: usize, deadline: Instant) {
    loop {
        let (_, services) = c.get(&format!("/os-services?binary={binary}")).await;
        let up =
            services["services"].as_array().map_or(0, |s| s.iter().filter(|s| s["state"] == "up").count());
        if up == want {
            return;
        }
        assert!(Instant::now() < deadline, "{want} {binary} up: {services}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `ember manage backups <args>` against the configuration `config`; its stdout.
fn manage_backups(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["manage", "backups"])
        .args(args)
        .arg("--config")
        .arg(config)
        .env("EMBER_LOG", "warn")
        .output()
        .expect("run ember manage backups");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "manage backups {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The exports serving a backup's or restore's image on the file backend in `dir`.
fn backup_exports(dir: &Path) -> Vec<String> {
    ember_drivers::file::nbd_exported_backup_images(dir).expect("ask the NBD export daemon for its exports")
}

#[tokio::test]
async fn a_backup_host_of_its_own_backs_up_and_restores_through_nbd_exports() {
    let Some((db, amqp)) = services().await else { return };
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (vhost, bhost) = (format!("vol-{tag}"), format!("bak-{tag}"));
    let file_toml = "enabled_backends = [\"file\"]\n[backends.file]\nvolume_driver = \"file\"\n";
    let cluster = MultiProcess::start(db, &amqp, &[(&vhost, file_toml)]).await;
    let mut backup_process = cluster.start_role("backup", &bhost, "");
    let c = cluster.client(PROJECT).with_version("3.51");
    let deadline = Instant::now() + Duration::from_secs(120);
    wait_services_up(&c, "cinder-volume", 1, deadline).await;
    wait_services_up(&c, "cinder-backup", 1, deadline).await;

    let vol = c.create_volume(json!({ "size": 1, "name": "source" })).await;
    c.wait_status(&format!("/volumes/{vol}"), "available", deadline).await;
    let volume_dir = cluster.data_dir(&vhost).join("volumes").join("file");
    let image = volume_dir.join(format!("volume-{vol}"));
    write_pattern(&image, "1M", "3M", 0xab);
    write_pattern(&image, "500M", "1M", 0x11);

    let full = backup(&c, json!({ "volume_id": vol, "name": "full" }), deadline).await;
    let (_, shown) = c.get(&format!("/backups/{full}")).await;
    assert_eq!(shown["backup"]["object_count"], 2, "two 4 MiB chunks hold data (holes unread): {shown}");
    let store = cluster.data_dir(&bhost).join("backups");
    assert!(store.join("chunks").is_dir(), "the backup host's own store holds the chunks");

    write_pattern(&image, "900M", "64k", 0x22);
    let incr = backup(&c, json!({ "volume_id": vol, "name": "incr", "incremental": true }), deadline).await;
    let (_, shown) = c.get(&format!("/backups/{incr}")).await;
    assert_eq!(shown["backup"]["is_incremental"], true, "{shown}");

    let new_vol = restore(&c, &incr, deadline).await;
    let restored = volume_dir.join(format!("volume-{new_vol}"));
    assert_eq!(data_sha256(&restored), data_sha256(&image), "the restore holds the source's data");
    assert_eq!(backup_exports(&volume_dir), Vec::<String>::new(), "no backup export is left");
    assert_eq!(live_exports(&volume_dir), Vec::<String>::new(), "no volume export is left");

    // Progress: the finished backup and restore show all of their bytes done.
    let config = cluster.config_path(&bhost);
    let list = manage_backups(&config, &["list"]);
    for id in [&full, &incr] {
        let row = list
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} listed: {list}"));
        assert!(row.contains("available"), "{row}");
    }
    let full_row = list.lines().find(|l| l.starts_with(full.as_str())).unwrap_or_default();
    assert!(
        full_row.contains("backup ") && full_row.contains("(100%)"),
        "the full backup's progress: {full_row}"
    );
    let show = manage_backups(&config, &["show", &incr]);
    assert!(show.contains("restore ") && show.contains("(100%)"), "the restore's progress: {show}");

    // Deleting them (the incremental first) leaves the backup host's store empty.
    for id in [&incr, &full] {
        assert_eq!(c.delete(&format!("/backups/{id}")).await, 202, "delete {id}");
        c.wait_status(&format!("/backups/{id}"), "gone", deadline).await;
    }
    let chunks = walk_files(&store.join("chunks"));
    assert!(chunks.is_empty(), "no chunk is left once every backup is deleted: {chunks:?}");
    backup_process.kill();
    let queues = [format!("ember-volume.{vhost}@file"), format!("ember-backup.{bhost}")];
    cluster.stop(&amqp, &queues).await;
}

#[tokio::test]
async fn backup_use_nbd_reads_and_restores_raw_volumes_through_their_export_on_one_host() {
    let toml = "enabled_backends = [\"file\"]\n[backends.file]\nvolume_driver = \"file\"\nfile_volume_format = \"raw\"\n\
                [backup]\nbackup_use_nbd = true\n";
    let cluster = TestCluster::all_in_one_with(toml).await;
    let c = cluster.client(PROJECT).with_version("3.51");
    let deadline = Instant::now() + Duration::from_secs(120);
    let vol = c.create_volume(json!({ "size": 1 })).await;
    c.wait_status(&format!("/volumes/{vol}"), "available", deadline).await;
    let image = cluster.volume_dir().join(format!("volume-{vol}"));
    write_pattern(&image, "0", "1M", 0x5a);
    write_pattern(&image, "700M", "2M", 0x6b);
    let id = backup(&c, json!({ "volume_id": vol }), deadline).await;
    let (_, shown) = c.get(&format!("/backups/{id}")).await;
    assert_eq!(shown["backup"]["object_count"], 2, "{shown}");

    // Into an existing volume: its own raw file is written through a writable export.
    let target = c.create_volume(json!({ "size": 1 })).await;
    c.wait_status(&format!("/volumes/{target}"), "available", deadline).await;
    let body = json!({ "restore": { "volume_id": target } });
    let (status, answer) = c.post(&format!("/backups/{id}/restore"), body).await;
    assert_eq!(status, 202, "{answer}");
    c.wait_status(&format!("/volumes/{target}"), "available", deadline).await;
    c.wait_status(&format!("/backups/{id}"), "available", deadline).await;
    let restored = cluster.volume_dir().join(format!("volume-{target}"));
    assert_eq!(data_sha256(&restored), data_sha256(&image));
    assert_eq!(backup_exports(&cluster.volume_dir()), Vec::<String>::new(), "no backup export is left");
}

/// Every file under `dir` (none when it does not exist).
fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk_files(&path)) } else { files.push(path) }
    }
    files
}
