//! The backup store's commands on the real binary: `ember manage backups verify` on a
//! store made with the driver (clean, then a damaged chunk), and a small case of
//! `ember bench backup` with its byte-for-byte check.

use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::Command;

use ember_drivers::backup::{BackupDriver as _, BackupSpec, LocalSource, NoProgress};
use ember_drivers::{PosixBackupDriver, PosixBackupOptions};

const EMBER: &str = env!("CARGO_BIN_EXE_ember");

fn verify(store: &Path, id: &str) -> (bool, String) {
    let out = Command::new(EMBER)
        .args(["manage", "backups", "verify", id, "--backup-posix-path"])
        .arg(store)
        .env_remove("EMBER_CONFIG")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The number on the line of `text` that starts with `name`.
fn figure(text: &str, name: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(name))?.split_whitespace().last()?.parse().ok()
}

#[tokio::test]
async fn manage_backups_verify_reports_damage_with_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("volume.raw");
    let file = std::fs::File::create(&image).unwrap();
    file.set_len(32 << 20).unwrap();
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    file.write_all_at(&data, 5 << 20).unwrap();
    drop(file);
    let store = dir.path().join("store");
    let driver = PosixBackupDriver::new(PosixBackupOptions::new(&store)).unwrap();
    let spec = BackupSpec { backup_id: "b1".into(), volume_id: "v1".into(), parent_id: None };
    let source = LocalSource::open(&image).await.unwrap();
    let out = driver.backup(&spec, &source, &NoProgress).await.unwrap();
    assert!(out.object_count >= 1);

    let (ok, text) = verify(&store, "b1");
    assert!(ok, "{text}");
    assert_eq!(figure(&text, "chunks checked"), Some(out.object_count), "{text}");
    assert_eq!(figure(&text, "bad chunks"), Some(0), "{text}");

    let (ok, text) = verify(&store, "nope");
    assert!(!ok && text.contains("nope"), "{text}");

    // Damage one chunk file.
    let chunk = std::fs::read_dir(store.join("chunks"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .next()
        .unwrap();
    std::fs::OpenOptions::new().write(true).open(&chunk).unwrap().write_all_at(b"rot", 7).unwrap();
    let (ok, text) = verify(&store, "b1");
    assert!(!ok, "{text}");
    assert_eq!(figure(&text, "bad chunks"), Some(1), "{text}");
    let name = chunk.file_stem().unwrap().to_string_lossy().into_owned();
    assert!(text.contains(&format!("bad: {name}")), "{text}");
    assert!(text.contains("damaged"), "{text}");
}

#[test]
fn bench_backup_runs_a_small_case_and_checks_the_restore() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(EMBER)
        .args([
            "bench",
            "--json",
            "backup",
            "--case",
            "64:16",
            "--change-mib",
            "1",
            "--chunk-mib",
            "1",
            "--check",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let find = |case: &str| {
        lines
            .iter()
            .find(|l| l["case"].as_str().is_some_and(|c| c.ends_with(case)))
            .unwrap_or_else(|| panic!("no {case} in {stdout}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(find("restored equals source"), 1.0);
    assert!(lines.iter().all(|l| l["bench"] == "backup" && l["unit"].is_string()));
    // 16 MiB of random data stored once; the 1 MiB change costs one or two 1 MiB chunks.
    let full = find("full backup stored");
    assert!((16.0..=17.0).contains(&full), "{full}");
    let incremental = find("incremental backup stored");
    assert!((1.0..=2.0).contains(&incremental), "{incremental}");
    // The read follows the data, not the 64 MiB volume.
    assert!(find("full backup read") <= 17.0);
    assert!(find("full backup peak RSS") < 64.0);
    // The temporary directory inside --dir is gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
