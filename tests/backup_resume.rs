//! Issue 14, "How it is checked": the process dies (SIGKILL) when a backup of a 1 GiB
//! volume holding 512 MiB of random data has stored about half its chunks; after the
//! restart the backup goes on from the last stored chunk, so it reads well under the data
//! again (`ember_backup_bytes_read_total` of the restarted process), and a restore of it
//! equals the source (SHA-256 of the whole image). On the real `ember all-in-one`.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Cinder, TestCluster};

const PROJECT: &str = "bkres000000000000000000000000000";
/// The random data written at the start of the volume.
const DATA: u64 = 512 << 20;
/// The store's chunk size (the default).
const CHUNK: u64 = 4 << 20;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The format of the image at `path`, as `qemu-img info` reads it.
fn format_of(path: &Path) -> String {
    let info = run(Command::new("qemu-img").args(["info", "--output=json"]).arg(path));
    let info: serde_json::Value = serde_json::from_str(&info).expect("qemu-img info's JSON");
    info["format"].as_str().expect("a format").to_owned()
}

/// The SHA-256 of the raw content of the image at `path` (converted to raw in `scratch`).
fn sha256_of_image(path: &Path, scratch: &Path) -> String {
    let raw = scratch.join("image.raw");
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(path).arg(&raw));
    let sum = run(Command::new("sha256sum").arg(&raw));
    std::fs::remove_file(&raw).expect("remove the raw copy");
    sum.split_whitespace().next().expect("a digest").to_owned()
}

/// The chunks the store under `store` holds (whole ones, not temporary files).
fn chunk_count(store: &Path) -> usize {
    std::fs::read_dir(store.join("chunks"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|f| {
            let name = f.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".zst") || name.ends_with(".raw")
        })
        .count()
}

/// The leftovers a finished backup must not leave: temporary chunk files, journals.
fn leftovers(store: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(store.join("chunks")).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if !(name.ends_with(".zst") || name.ends_with(".raw")) {
                out.push(name);
            }
        }
    }
    for f in std::fs::read_dir(store.join("journal")).into_iter().flatten().flatten() {
        out.push(f.file_name().to_string_lossy().into_owned());
    }
    out
}

/// `ember_backup_bytes_read_total` of the process at `base_url`.
async fn bytes_read(base_url: &str) -> u64 {
    let text = reqwest::get(format!("{base_url}/metrics")).await.expect("GET /metrics").text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("ember_backup_bytes_read_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

async fn wait_available(c: &Cinder, path: &str, deadline: Instant) {
    c.wait_status(path, "available", deadline).await;
}

#[tokio::test]
async fn a_backup_killed_halfway_goes_on_from_its_last_chunk_after_the_restart() {
    let mut cluster = TestCluster::all_in_one().await;
    let c = cluster.client(PROJECT);
    let deadline = Instant::now() + Duration::from_secs(300);
    let vol = c.create_volume(json!({ "size": 1, "name": "source" })).await;
    wait_available(&c, &format!("/volumes/{vol}"), deadline).await;

    // 512 MiB of random data at the start of the 1 GiB volume.
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let random = scratch.path().join("random.raw");
    {
        let mut from = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
        let mut to = std::fs::File::create(&random).expect("create the random file");
        let copied = std::io::copy(&mut std::io::Read::take(&mut from, DATA), &mut to).expect("copy");
        assert_eq!(copied, DATA);
    }
    let image = cluster.volume_dir().join(format!("volume-{vol}"));
    let format = format_of(&image);
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", &format])
        .arg(&random)
        .arg(&image));
    std::fs::remove_file(&random).expect("remove the random file");
    let source_sha = sha256_of_image(&image, scratch.path());

    // A fresh client: the server closed the idle connections while the data was written.
    let c = cluster.client(PROJECT);
    let (status, created) = c.post("/backups", json!({ "backup": { "volume_id": vol } })).await;
    assert_eq!(status, 202, "create the backup: {created}");
    let id = created["backup"]["id"].as_str().expect("a backup id").to_owned();

    // Kill the process once about half the chunks are stored.
    let store = cluster.data_dir().join("backups");
    let total = (DATA / CHUNK) as usize;
    let at_kill = loop {
        let n = chunk_count(&store);
        if n >= total / 2 {
            break n;
        }
        assert!(Instant::now() < deadline, "the backup stored {n} of {total} chunks by the deadline");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    cluster.kill();
    assert!(
        at_kill < total,
        "the backup was still running when the process died ({at_kill} of {total} chunks)"
    );
    assert!(!store.join("backups").join(format!("{id}.json")).exists(), "no record before the restart");

    cluster.start().await;
    let c = cluster.client(PROJECT);
    wait_available(&c, &format!("/backups/{id}"), deadline).await;
    let read = bytes_read(&cluster.base_url).await;
    println!(
        "killed at {at_kill} of {total} chunks; the restarted process read {} MiB of the {} MiB of data",
        read >> 20,
        DATA >> 20
    );
    assert!(read > 0, "the restarted process finished the backup");
    assert!(
        read <= DATA * 3 / 5,
        "after the restart the backup read {read} bytes again, not well under {DATA}"
    );
    let (_, shown) = c.get(&format!("/backups/{id}")).await;
    assert_eq!(shown["backup"]["object_count"], total, "every chunk of data is in the backup: {shown}");
    assert_eq!(leftovers(&store), Vec::<String>::new(), "no temporary chunk or journal is left");
    assert_eq!(chunk_count(&store), total);

    // A restore into a new volume equals the source.
    let (status, restored) = c.post(&format!("/backups/{id}/restore"), json!({ "restore": {} })).await;
    assert_eq!(status, 202, "restore: {restored}");
    let new_vol = restored["restore"]["volume_id"].as_str().expect("the new volume").to_owned();
    wait_available(&c, &format!("/volumes/{new_vol}"), deadline).await;
    wait_available(&c, &format!("/backups/{id}"), deadline).await;
    let restored_sha =
        sha256_of_image(&cluster.volume_dir().join(format!("volume-{new_vol}")), scratch.path());
    assert_eq!(restored_sha, source_sha, "the restore equals the source");
}
