//! The file driver against real qemu-img and qemu-storage-daemon in a temporary directory.

mod suite;

use std::path::{Path, PathBuf};
use std::process::Command;

use ember_drivers::{
    AccessMode, BackupSource, Connector, DirectIo, DriverError, DriverSnapshot, DriverVolume, FileDriver,
    FileOptions, GIB, ImageFormat, VolumeDriver,
};
use serde_json::Value;

struct Fixture {
    _daemon: NbdDaemon,
    dir: tempfile::TempDir,
    driver: FileDriver,
}

impl Fixture {
    async fn new(format: ImageFormat) -> Self {
        Self::with(format, DirectIo::Auto).await
    }

    async fn with(format: ImageFormat, direct_io: DirectIo) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let driver = FileDriver::new(FileOptions {
            data_dir: dir.path().join("volumes"),
            format,
            direct_io,
            ..FileOptions::default()
        });
        driver.do_setup().await.unwrap();
        driver.check_for_setup_error().await.unwrap();
        Fixture { _daemon: NbdDaemon(dir.path().join("volumes")), dir, driver }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("volumes")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    /// The image files in the data directory, sorted (driver-private `.ember` left out).
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != ".ember")
            .collect();
        names.sort();
        names
    }
}

/// Kills the NBD export daemon of a data directory, which outlives its driver on purpose
/// (it survives a restart of the volume service). Declared before the directory, so it is
/// dropped first.
struct NbdDaemon(PathBuf);

impl Drop for NbdDaemon {
    fn drop(&mut self) {
        let _ = ember_drivers::file::kill_nbd_daemon(&self.0);
    }
}

/// `qemu-img info --output=json`.
fn info(path: &Path) -> Value {
    let out = Command::new("qemu-img").args(["info", "--output=json"]).arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes `data` at the start of an image with `qemu-img convert -n` (no guest needed).
fn write_into(target: &str, format: &str, data: &[u8]) {
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), data).unwrap();
    let out = Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", format])
        .arg(src.path())
        .arg(target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The first `len` bytes of a volume or snapshot, read through a backup export.
async fn read_back(driver: &FileDriver, source: BackupSource<'_>, len: usize) -> Vec<u8> {
    use std::io::Read;

    let export = driver.export_for_backup(source).await.unwrap();
    let mut data = vec![0u8; len];
    std::fs::File::open(&export.path).unwrap().read_exact(&mut data).unwrap();
    driver.release_export(export).await.unwrap();
    data
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..(1u32 << 20)).map(|i| (i % 251) as u8 ^ seed).collect()
}

#[tokio::test]
async fn qcow2_passes_the_shared_suite() {
    let fx = Fixture::new(ImageFormat::Qcow2).await;
    suite::all(&fx.driver).await;
    assert!(fx.files().is_empty(), "left behind: {:?}", fx.files());
}

#[tokio::test]
async fn raw_passes_the_shared_suite() {
    let fx = Fixture::new(ImageFormat::Raw).await;
    suite::all(&fx.driver).await;
    assert!(fx.files().is_empty(), "left behind: {:?}", fx.files());
}

#[tokio::test]
async fn files_are_named_and_shaped_as_cinder_does() {
    let fx = Fixture::new(ImageFormat::Qcow2).await;
    let v1 = DriverVolume::new(suite::id(), 1);
    fx.driver.create_volume(&v1).await.unwrap();
    let snap = DriverSnapshot::new(suite::id(), v1.id.clone(), 1);
    fx.driver.create_snapshot(&snap).await.unwrap();
    let v2 = DriverVolume::new(suite::id(), 2);
    fx.driver.create_volume_from_snapshot(&v2, &snap).await.unwrap();
    let v3 = DriverVolume::new(suite::id(), 1);
    fx.driver.create_cloned_volume(&v3, &v1).await.unwrap();

    let mut expected = vec![v1.name(), v2.name(), v3.name(), snap.name()];
    expected.sort();
    assert_eq!(fx.files(), expected);
    let overlay = info(&fx.path(&v2.name()));
    assert_eq!(overlay["format"], "qcow2");
    assert_eq!(overlay["virtual-size"], 2 * GIB);
    assert_eq!(overlay["backing-filename"], snap.name(), "a volume from a snapshot is an overlay");
    assert!(info(&fx.path(&v3.name())).get("backing-filename").is_none(), "a clone stands alone");
    assert!(info(&fx.path(&snap.name())).get("backing-filename").is_none(), "a snapshot stands alone");
}

#[tokio::test]
async fn data_survives_snapshots_clones_and_flattening() {
    let fx = Fixture::new(ImageFormat::Qcow2).await;
    let v1 = DriverVolume::new(suite::id(), 1);
    fx.driver.create_volume(&v1).await.unwrap();
    let (first, second) = (pattern(1), pattern(2));
    write_into(fx.path(&v1.name()).to_str().unwrap(), "qcow2", &first);
    let snap = DriverSnapshot::new(suite::id(), v1.id.clone(), 1);
    fx.driver.create_snapshot(&snap).await.unwrap();
    // Writes to the volume after the snapshot do not reach the snapshot or its children.
    write_into(fx.path(&v1.name()).to_str().unwrap(), "qcow2", &second);
    let child = DriverVolume::new(suite::id(), 1);
    fx.driver.create_volume_from_snapshot(&child, &snap).await.unwrap();
    let clone = DriverVolume::new(suite::id(), 2);
    fx.driver.create_cloned_volume(&clone, &v1).await.unwrap();

    let len = first.len();
    assert_eq!(read_back(&fx.driver, BackupSource::Snapshot(&snap), len).await, first);
    assert_eq!(read_back(&fx.driver, BackupSource::Volume(&child), len).await, first);
    assert_eq!(read_back(&fx.driver, BackupSource::Volume(&clone), len).await, second);
    assert_eq!(info(&fx.path(&clone.name()))["virtual-size"], 2 * GIB);

    // Deleting the snapshot flattens its child first: the child keeps its data.
    fx.driver.delete_snapshot(&snap).await.unwrap();
    assert!(!fx.path(&snap.name()).exists());
    assert!(info(&fx.path(&child.name())).get("backing-filename").is_none());
    assert_eq!(read_back(&fx.driver, BackupSource::Volume(&child), len).await, first);
    // And the volume the snapshot was taken of never depended on it.
    assert_eq!(read_back(&fx.driver, BackupSource::Volume(&v1), len).await, second);
}

#[tokio::test]
async fn leftovers_of_a_crash_are_redone() {
    let fx = Fixture::new(ImageFormat::Qcow2).await;
    let v = DriverVolume::new(suite::id(), 1);
    // A half-written image from a crash mid-create: garbage under the .tmp name.
    std::fs::write(fx.path(&format!("{}.tmp", v.name())), b"half a header").unwrap();
    fx.driver.create_volume(&v).await.unwrap();
    assert_eq!(fx.files(), vec![v.name()]);
    assert_eq!(info(&fx.path(&v.name()))["virtual-size"], GIB);

    let snap = DriverSnapshot::new(suite::id(), v.id.clone(), 1);
    std::fs::write(fx.path(&format!("{}.tmp", snap.name())), b"junk").unwrap();
    fx.driver.create_snapshot(&snap).await.unwrap();
    let child = DriverVolume::new(suite::id(), 1);
    std::fs::write(fx.path(&format!("{}.tmp", child.name())), b"junk").unwrap();
    fx.driver.create_volume_from_snapshot(&child, &snap).await.unwrap();
    let mut expected = vec![v.name(), child.name(), snap.name()];
    expected.sort();
    assert_eq!(fx.files(), expected);

    // A crash mid-delete of a snapshot may leave its .tmp and a half-flattened child;
    // the repeated delete finishes both.
    std::fs::write(fx.path(&format!("{}.tmp", snap.name())), b"junk").unwrap();
    fx.driver.delete_snapshot(&snap).await.unwrap();
    fx.driver.delete_snapshot(&snap).await.unwrap();
    let mut expected = vec![v.name(), child.name()];
    expected.sort();
    assert_eq!(fx.files(), expected);

    // A leftover .tmp of a volume goes with the volume.
    std::fs::write(fx.path(&format!("{}.tmp", v.name())), b"junk").unwrap();
    fx.driver.delete_volume(&v).await.unwrap();
    assert_eq!(fx.files(), vec![child.name()]);
}

#[tokio::test]
async fn extend_grows_the_virtual_size() {
    for format in [ImageFormat::Qcow2, ImageFormat::Raw] {
        let fx = Fixture::new(format).await;
        let v = DriverVolume::new(suite::id(), 1);
        fx.driver.create_volume(&v).await.unwrap();
        fx.driver.extend_volume(&v, 3).await.unwrap();
        let found = info(&fx.path(&v.name()));
        assert_eq!(found["virtual-size"], 3 * GIB, "{format:?}");
        assert_eq!(found["format"], format.as_str());
        // A repeated or late extend to a smaller size changes nothing.
        fx.driver.extend_volume(&v, 2).await.unwrap();
        assert_eq!(info(&fx.path(&v.name()))["virtual-size"], 3 * GIB);
    }
}

#[tokio::test]
async fn stats_come_from_the_file_system() {
    let fx = Fixture::new(ImageFormat::Qcow2).await;
    let v = DriverVolume::new(suite::id(), 5);
    fx.driver.create_volume(&v).await.unwrap();
    let stats = fx.driver.get_volume_stats(true).await.unwrap();
    assert_eq!(stats.storage_protocol, "nbd");
    let pool = &stats.pools[0];
    let fs = rustix::fs::statvfs(fx.root()).unwrap();
    let total = (fs.f_blocks * fs.f_frsize) as f64 / GIB as f64;
    assert!((pool.total_capacity_gb.gb().unwrap() - total).abs() < 0.02, "{pool:?}");
    let free = pool.free_capacity_gb.gb().unwrap();
    assert!(free > 0.0 && free <= total, "{pool:?}");
    assert_eq!(pool.provisioned_capacity_gb, Some(5.0));
    assert!(pool.thin_provisioning_support && pool.thick_provisioning_support == Some(false));
    assert_eq!(pool.extra["total_volumes"], 1);
    // Without refresh the cached report comes back, even after a change.
    fx.driver.create_volume(&DriverVolume::new(suite::id(), 1)).await.unwrap();
    assert_eq!(fx.driver.get_volume_stats(false).await.unwrap(), stats);
    assert_eq!(suite::provisioned(&fx.driver).await, 6.0);
}

#[tokio::test]
async fn ids_cannot_leave_the_directory() {
    let fx = Fixture::new(ImageFormat::Qcow2).await;
    for bad in ["../escape", "a/b", "x.tmp", ""] {
        let err = fx.driver.create_volume(&DriverVolume::new(bad, 1)).await.unwrap_err();
        assert!(matches!(err, DriverError::InvalidInput(_)), "{bad}: {err:?}");
        let snap = DriverSnapshot::new(bad, suite::id(), 1);
        assert!(matches!(fx.driver.delete_snapshot(&snap).await, Err(DriverError::InvalidInput(_))));
    }
    assert!(fx.files().is_empty());
    assert!(!fx.dir.path().join("volume-").exists());
    // An export path handed back by a caller must be one of ours.
    let v = DriverVolume::new(suite::id(), 1);
    fx.driver.create_volume(&v).await.unwrap();
    let mut export = fx.driver.export_for_backup(BackupSource::Volume(&v)).await.unwrap();
    let real = export.path.clone();
    export.path = fx.path(&v.name());
    let err = fx.driver.release_export(export).await.unwrap_err();
    assert!(matches!(err, DriverError::InvalidInput(_)), "{err:?}");
    assert!(fx.path(&v.name()).exists());
    std::fs::remove_file(real).unwrap();
}

#[tokio::test]
async fn calls_before_setup_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let driver = FileDriver::new(FileOptions { data_dir: dir.path().to_owned(), ..FileOptions::default() });
    let err = driver.create_volume(&DriverVolume::new(suite::id(), 1)).await.unwrap_err();
    assert!(matches!(err, DriverError::NotInitialized(_)), "{err:?}");
}

#[tokio::test]
async fn copies_work_with_and_without_o_direct() {
    for mode in [DirectIo::On, DirectIo::Off] {
        let fx = Fixture::with(ImageFormat::Qcow2, mode).await;
        assert_eq!(fx.driver.direct_io(), Some(mode == DirectIo::On));
        let v = DriverVolume::new(suite::id(), 1);
        fx.driver.create_volume(&v).await.unwrap();
        write_into(fx.path(&v.name()).to_str().unwrap(), "qcow2", &pattern(3));
        let clone = DriverVolume::new(suite::id(), 1);
        fx.driver.create_cloned_volume(&clone, &v).await.unwrap();
        assert_eq!(read_back(&fx.driver, BackupSource::Volume(&clone), 1 << 20).await, pattern(3));
    }
}

#[tokio::test]
async fn o_direct_is_probed_and_refused_where_unsupported() {
    // tmpfs refuses O_DIRECT on older kernels and accepts it on newer ones; either way the
    // probe must agree with what the file system does and copies must work.
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        println!("skipped: /dev/shm is absent");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let driver = FileDriver::new(FileOptions { data_dir: dir.path().to_owned(), ..FileOptions::default() });
    driver.do_setup().await.unwrap();
    let probe = dir.path().join("probe");
    let accepts = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(&probe)
            .is_ok()
    };
    assert_eq!(driver.direct_io(), Some(accepts));
    println!("tmpfs accepts O_DIRECT: {accepts}");
    let v = DriverVolume::new(suite::id(), 1);
    driver.create_volume(&v).await.unwrap();
    driver.create_cloned_volume(&DriverVolume::new(suite::id(), 1), &v).await.unwrap();
}

#[tokio::test]
async fn restore_replaces_the_data() {
    for format in [ImageFormat::Qcow2, ImageFormat::Raw] {
        let fx = Fixture::new(format).await;
        let v = DriverVolume::new(suite::id(), 1);
        fx.driver.create_volume(&v).await.unwrap();
        let target = fx.driver.prepare_restore(&v).await.unwrap();
        write_into(target.path.to_str().unwrap(), "raw", &pattern(7));
        fx.driver.commit_restore(&v, target).await.unwrap();
        assert_eq!(read_back(&fx.driver, BackupSource::Volume(&v), 1 << 20).await, pattern(7), "{format:?}");
        assert_eq!(fx.files(), vec![v.name()]);
        let exports = std::fs::read_dir(fx.root().join(".ember/exports")).unwrap().count();
        assert_eq!(exports, 0, "an export was left behind");
    }
}

#[tokio::test]
async fn nbd_exports_serve_the_volume() {
    let fx = Fixture::new(ImageFormat::Qcow2).await;
    let v = DriverVolume::new(suite::id(), 1);
    fx.driver.create_volume(&v).await.unwrap();
    let connector = Connector::default();
    let conn = fx.driver.initialize_connection(&v, &connector, AccessMode::Rw).await.unwrap();
    assert_eq!(conn.driver_volume_type, "nbd");
    assert_eq!(conn.data["host"], "127.0.0.1");
    assert_eq!(conn.data["export_name"], v.name());
    let uri = conn.data["uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("nbd://127.0.0.1:"), "{uri}");

    // qemu-img is an NBD client: it sees the volume's size and writes through the export.
    let remote = Command::new("qemu-img").args(["info", "--output=json", &uri]).output().unwrap();
    assert!(remote.status.success(), "{}", String::from_utf8_lossy(&remote.stderr));
    let remote: Value = serde_json::from_slice(&remote.stdout).unwrap();
    assert_eq!(remote["virtual-size"], GIB);
    write_into(&uri, "raw", &pattern(9));

    // The export holds the image: changes that need it whole wait for the detach.
    let busy = fx.driver.extend_volume(&v, 2).await.unwrap_err();
    assert!(matches!(busy, DriverError::Busy(_)), "{busy:?}");

    fx.driver.terminate_connection(&v, &connector, AccessMode::Rw).await.unwrap();
    fx.driver.remove_export(&v).await.unwrap();
    assert!(Command::new("qemu-img").args(["info", &uri]).output().unwrap().status.code() != Some(0));
    assert_eq!(read_back(&fx.driver, BackupSource::Volume(&v), 1 << 20).await, pattern(9));
    fx.driver.extend_volume(&v, 2).await.unwrap();

    // Deleting an exported volume stops its export first.
    fx.driver.initialize_connection(&v, &connector, AccessMode::Rw).await.unwrap();
    fx.driver.delete_volume(&v).await.unwrap();
    assert!(fx.files().is_empty());
    assert!(fx.driver.list_exports().await.unwrap().is_empty());
    assert!(ember_drivers::file::nbd_exported_volumes(&fx.root()).unwrap().is_empty());
}

#[tokio::test]
async fn clones_of_overlays_share_the_snapshot() {
    let fx = Fixture::new(ImageFormat::Qcow2).await;
    let base = DriverVolume::new(suite::id(), 1);
    fx.driver.create_volume(&base).await.unwrap();
    write_into(fx.path(&base.name()).to_str().unwrap(), "qcow2", &pattern(4));
    let snap = DriverSnapshot::new(suite::id(), base.id.clone(), 1);
    fx.driver.create_snapshot(&snap).await.unwrap();
    let child = DriverVolume::new(suite::id(), 1);
    fx.driver.create_volume_from_snapshot(&child, &snap).await.unwrap();
    // The child's own write covers the first half of the pattern.
    let mut expected = pattern(4);
    let own = pattern(5)[..1 << 19].to_vec();
    expected[..own.len()].copy_from_slice(&own);
    write_into(fx.path(&child.name()).to_str().unwrap(), "qcow2", &own);

    let clone = DriverVolume::new(suite::id(), 2);
    fx.driver.create_cloned_volume(&clone, &child).await.unwrap();
    let found = info(&fx.path(&clone.name()));
    assert_eq!(found["backing-filename"], snap.name(), "the clone is an overlay on the same snapshot");
    assert_eq!(found["virtual-size"], 2 * GIB);
    let clone_bytes = std::fs::metadata(fx.path(&clone.name())).unwrap().len();
    assert!(clone_bytes < 4 << 20, "the clone copied more than the child's own clusters: {clone_bytes}");
    assert_eq!(read_back(&fx.driver, BackupSource::Volume(&clone), 1 << 20).await, expected);

    // Both dependents are flattened when the snapshot goes.
    fx.driver.delete_snapshot(&snap).await.unwrap();
    for volume in [&child, &clone] {
        assert!(info(&fx.path(&volume.name())).get("backing-filename").is_none());
        assert_eq!(read_back(&fx.driver, BackupSource::Volume(volume), 1 << 20).await, expected);
    }
}

#[tokio::test]
async fn a_snapshot_deleted_during_creates_from_it_leaves_no_dangling_overlay() {
    let fx = Fixture::new(ImageFormat::Qcow2).await;
    let driver = std::sync::Arc::new(fx.driver);
    let base = DriverVolume::new(suite::id(), 1);
    driver.create_volume(&base).await.unwrap();
    let snap = DriverSnapshot::new(suite::id(), base.id.clone(), 1);
    driver.create_snapshot(&snap).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let (driver, snap) = (driver.clone(), snap.clone());
        tasks.spawn(async move {
            if i == 6 {
                driver.delete_snapshot(&snap).await.map(|_| None)
            } else {
                // Each volume is created twice at once, as two executors of one step would.
                let volume = DriverVolume::new(format!("vol-{}", i / 2), 1);
                driver.create_volume_from_snapshot(&volume, &snap).await.map(|_| Some(volume))
            }
        });
    }
    let mut created = Vec::new();
    for result in tasks.join_all().await {
        match result {
            Ok(Some(volume)) => created.push(volume),
            Ok(None) => {}
            Err(DriverError::NotFound { .. }) => {}
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    assert!(!fx.dir.path().join("volumes").join(snap.name()).exists());
    assert!(!created.is_empty(), "no create ran before the delete");
    for volume in &created {
        // qemu-img opens the whole chain: a dangling backing file would fail here.
        let found = info(&fx.dir.path().join("volumes").join(volume.name()));
        assert!(found.get("backing-filename").is_none(), "{found}");
    }
}
