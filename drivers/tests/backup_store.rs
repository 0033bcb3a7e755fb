//! The POSIX backup store on real files in temporary directories: backups of sparse
//! images restored byte for byte, incrementals, deduplication, resume after a failure,
//! damage found by verify and refused by restore, deletes that leave no unreferenced chunk.

use std::collections::HashSet;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use ember_drivers::backup::{
    BackupDriver, BackupSpec, Extent, ImageSink, ImageSource, LocalSink, LocalSource, PosixBackupDriver,
    PosixBackupOptions, Progress,
};
use ember_drivers::{Compression, DriverError};
use parking_lot::Mutex;
use rand::{Rng as _, RngCore as _, SeedableRng as _};
use sha2::{Digest as _, Sha256};

const MIB: u64 = 1 << 20;
/// Small chunks, so small images have many.
const CHUNK: u64 = 256 << 10;

fn driver(dir: &Path) -> PosixBackupDriver {
    let mut options = PosixBackupOptions::new(dir.join("store"));
    options.backup_file_size = CHUNK;
    PosixBackupDriver::new(options).unwrap()
}

fn spec(id: &str, volume: &str, parent: Option<&str>) -> BackupSpec {
    BackupSpec { backup_id: id.into(), volume_id: volume.into(), parent_id: parent.map(Into::into) }
}

/// A sparse image of `size` bytes: random islands (some across chunk boundaries), a range
/// written with zeros (allocated, reads as zeros) and holes. Answers the bytes of random data.
fn sparse_image(path: &Path, size: u64, seed: u64) -> u64 {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = 0;
    for i in 0..12u64 {
        let len = rng.random_range(4096..(3 * CHUNK)) as usize;
        let at = (size / 12) * i + rng.random_range(0..CHUNK);
        let mut buf = vec![0u8; len];
        rng.fill_bytes(&mut buf);
        file.write_all_at(&buf, at).unwrap();
        data += len as u64;
    }
    // Two chunks' worth of written zeros: allocated, never stored.
    file.write_all_at(&vec![0u8; 2 * CHUNK as usize], size / 24).unwrap();
    file.sync_all().unwrap();
    data
}

fn file_sha(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("{:x}", hasher.finalize())
}

/// Every chunk file of the store (temporary files excluded).
fn chunk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root.join("store/chunks")) else { return out };
    for dir in dirs {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if !p.to_string_lossy().ends_with(".tmp") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A source that counts what it reads and fails once `fail_after` bytes have been read.
struct Counting {
    inner: LocalSource,
    read: AtomicU64,
    fail_after: u64,
}

impl Counting {
    fn new(inner: LocalSource, fail_after: u64) -> Self {
        Self { inner, read: AtomicU64::new(0), fail_after }
    }
    fn read(&self) -> u64 {
        self.read.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ImageSource for Counting {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    async fn extents(&self, offset: u64, length: u64) -> ember_drivers::Result<Vec<Extent>> {
        self.inner.extents(offset, length).await
    }
    async fn read_at(&self, offset: u64, buf: Vec<u8>) -> ember_drivers::Result<Vec<u8>> {
        let before = self.read.fetch_add(buf.len() as u64, Ordering::SeqCst);
        if before >= self.fail_after {
            return Err(DriverError::Backend("the source went away".into()));
        }
        self.inner.read_at(offset, buf).await
    }
}

/// Records every progress report.
#[derive(Default)]
struct Reports(Mutex<Vec<(u64, u64)>>);

impl Progress for Reports {
    fn report(&self, done: u64, total: u64) {
        self.0.lock().push((done, total));
    }
}

/// Backs up the raw file at `image`.
async fn backup(
    store: &PosixBackupDriver,
    id: &str,
    volume: &str,
    parent: Option<&str>,
    image: &Path,
) -> ember_drivers::Result<ember_drivers::backup::BackupOutcome> {
    let source = LocalSource::open(image).await.unwrap();
    store.backup(&spec(id, volume, parent), &source, &Reports::default()).await
}

async fn restore_to_new(driver: &PosixBackupDriver, id: &str, path: &Path, size: u64) -> u64 {
    let sink = LocalSink::create(path, size).await.unwrap();
    driver.restore(id, &sink, &Reports::default()).await.unwrap().written_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_backup_of_a_sparse_image_restores_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("volume.raw");
    let size = 64 * MIB;
    let data = sparse_image(&image, size, 1);
    let store = driver(dir.path());
    store.check_for_setup_error().await.unwrap();
    let source = Counting::new(LocalSource::open(&image).await.unwrap(), u64::MAX);
    let reports = Reports::default();
    let out = store.backup(&spec("b1", "v1", None), &source, &reports).await.unwrap();

    assert_eq!(out.size_bytes, size);
    // Holes are never read: what was read is the allocated data (the islands and the
    // written zeros, in whole file-system blocks), far below the size.
    let allocated = std::fs::metadata(&image).unwrap().blocks() * 512;
    assert_eq!(source.read(), out.read_bytes);
    assert!(out.read_bytes <= allocated, "read {} of {allocated} allocated", out.read_bytes);
    assert!(out.read_bytes < size / 4, "read {}", out.read_bytes);
    // Random data does not compress: the store holds about the data, whole chunks at most.
    assert!(out.stored_bytes >= data, "stored {} for {data}", out.stored_bytes);
    assert!(out.stored_bytes <= data + 24 * CHUNK, "stored {} for {data}", out.stored_bytes);
    // The written zeros are not listed.
    let record = store.record("b1").await.unwrap().unwrap();
    assert_eq!(out.object_count, record.chunks.len() as u64);
    assert!(!record.chunks.iter().any(|c| c.offset == size / 24 + CHUNK), "a zero chunk was stored");
    let last = *reports.0.lock().last().unwrap();
    assert_eq!(last.0, last.1, "progress ends at its total: {last:?}");

    // Into a fresh sparse file: byte for byte, and sparse.
    let restored = dir.path().join("restored.raw");
    restore_to_new(&store, "b1", &restored, size).await;
    assert_eq!(file_sha(&restored), file_sha(&image));
    let blocks = std::fs::metadata(&restored).unwrap().blocks() * 512;
    assert!(blocks <= out.stored_bytes + 24 * CHUNK, "restore wrote {blocks} bytes");

    // Into an existing volume full of other data: the holes are zeroed too.
    let old = dir.path().join("old.raw");
    std::fs::write(&old, vec![0xa5u8; size as usize]).unwrap();
    let sink = LocalSink::open(&old).await.unwrap();
    store.restore("b1", &sink, &Reports::default()).await.unwrap();
    assert_eq!(file_sha(&old), file_sha(&image));

    // A second call with the same id finds the backup done and reads nothing.
    let again = Counting::new(LocalSource::open(&image).await.unwrap(), u64::MAX);
    let out2 = store.backup(&spec("b1", "v1", None), &again, &Reports::default()).await.unwrap();
    assert_eq!(again.read(), 0);
    assert_eq!(out2, out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_backup_stores_little_more_than_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("volume.raw");
    let size = 64 * MIB;
    sparse_image(&image, size, 2);
    let original = file_sha(&image);
    let store = driver(dir.path());
    let source = LocalSource::open(&image).await.unwrap();
    store.backup(&spec("full", "v1", None), &source, &Reports::default()).await.unwrap();

    // A 100 KiB change inside one chunk's data, and a new island in a hole.
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut change = vec![0u8; 100 << 10];
    rng.fill_bytes(&mut change);
    let f = std::fs::OpenOptions::new().write(true).open(&image).unwrap();
    f.write_all_at(&change, 10 * CHUNK + 1000).unwrap();
    f.write_all_at(&change, size - 3 * CHUNK).unwrap();
    drop(f);
    let source = LocalSource::open(&image).await.unwrap();
    let out = store.backup(&spec("incr", "v1", Some("full")), &source, &Reports::default()).await.unwrap();
    assert!(out.stored_bytes > 0);
    assert!(out.stored_bytes <= 3 * CHUNK, "stored {} for a 200 KiB change", out.stored_bytes);

    // The incremental's record lists every chunk (shared ones too): it restores alone.
    let restored = dir.path().join("incr.raw");
    restore_to_new(&store, "incr", &restored, size).await;
    assert_eq!(file_sha(&restored), file_sha(&image));
    let restored = dir.path().join("full.raw");
    restore_to_new(&store, "full", &restored, size).await;
    assert_eq!(file_sha(&restored), original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_volumes_with_the_same_content_share_their_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.raw");
    let b = dir.path().join("b.raw");
    sparse_image(&a, 32 * MIB, 3);
    sparse_image(&b, 32 * MIB, 3);
    let store = driver(dir.path());
    let first = backup(&store, "ba", "va", None, &a).await.unwrap();
    let files = chunk_files(dir.path());
    let second = backup(&store, "bb", "vb", None, &b).await.unwrap();
    assert!(first.stored_bytes > 0);
    assert_eq!(second.stored_bytes, 0, "the same content is stored once");
    assert_eq!(second.object_count, first.object_count);
    assert_eq!(chunk_files(dir.path()), files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backup_goes_on_from_what_it_stored() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("volume.raw");
    let size = 64 * MIB;
    // Data everywhere: 64 MiB of random data, 256 chunks.
    let mut buf = vec![0u8; size as usize];
    rand::rngs::StdRng::seed_from_u64(4).fill_bytes(&mut buf);
    std::fs::write(&image, &buf).unwrap();
    drop(buf);
    let store = driver(dir.path());

    let failing = Counting::new(LocalSource::open(&image).await.unwrap(), size / 2);
    let err = store.backup(&spec("b", "v", None), &failing, &Reports::default()).await.unwrap_err();
    assert!(err.to_string().contains("went away"), "{err}");
    assert!(store.record("b").await.unwrap().is_none());

    let rest = Counting::new(LocalSource::open(&image).await.unwrap(), u64::MAX);
    let out = store.backup(&spec("b", "v", None), &rest, &Reports::default()).await.unwrap();
    // The second call reads only the chunks the first did not store: about half.
    assert!(rest.read() <= size / 2 + 8 * CHUNK, "read {} of {size} again", rest.read());
    assert!(rest.read() >= size / 2 - 8 * CHUNK, "read {}", rest.read());
    assert_eq!(out.object_count, size / CHUNK);
    let restored = dir.path().join("restored.raw");
    restore_to_new(&store, "b", &restored, size).await;
    assert_eq!(file_sha(&restored), file_sha(&image));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_damaged_chunk_and_restore_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("volume.raw");
    sparse_image(&image, 16 * MIB, 5);
    let store = driver(dir.path());
    let out = backup(&store, "b", "v", None, &image).await.unwrap();
    let report = store.verify("b").await.unwrap();
    assert_eq!(report.chunks_checked, out.object_count);
    assert!(report.bad_chunks.is_empty());

    let files = chunk_files(dir.path());
    let victim = &files[files.len() / 2];
    let f = std::fs::OpenOptions::new().write(true).open(victim).unwrap();
    f.write_all_at(b"rot", 100).unwrap();
    drop(f);
    let name = victim.file_stem().unwrap().to_string_lossy().into_owned();
    let report = store.verify("b").await.unwrap();
    assert_eq!(report.bad_chunks, vec![name.clone()]);

    let sink = LocalSink::create(dir.path().join("r.raw"), 16 * MIB).await.unwrap();
    let err = store.restore("b", &sink, &Reports::default()).await.unwrap_err();
    assert!(err.to_string().contains(&name) && err.to_string().contains("damaged"), "{err}");

    std::fs::remove_file(victim).unwrap();
    assert_eq!(store.verify("b").await.unwrap().bad_chunks, vec![name.clone()]);
    let err = store.restore("b", &sink, &Reports::default()).await.unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_parent_keeps_its_child_and_deletes_leave_no_unreferenced_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("volume.raw");
    let size = 32 * MIB;
    sparse_image(&image, size, 6);
    let store = driver(dir.path());
    backup(&store, "p", "v", None, &image).await.unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&image).unwrap();
    f.write_all_at(&[7u8; 8192], CHUNK * 3).unwrap();
    drop(f);
    let child = LocalSource::open(&image).await.unwrap();
    store.backup(&spec("c", "v", Some("p")), &child, &Reports::default()).await.unwrap();
    let before = chunk_files(dir.path()).len();
    let hashes = |r: ember_drivers::backup::posix::BackupRecord| -> HashSet<String> {
        r.chunks.into_iter().map(|c| c.sha256).collect()
    };
    let parent_only = hashes(store.record("p").await.unwrap().unwrap())
        .difference(&hashes(store.record("c").await.unwrap().unwrap()))
        .count();
    assert!(parent_only <= 1);

    store.delete("p").await.unwrap();
    store.delete("p").await.unwrap();
    assert!(store.record("p").await.unwrap().is_none());
    // Only what the parent alone had went.
    assert_eq!(chunk_files(dir.path()).len(), before - parent_only);
    assert!(store.verify("c").await.unwrap().bad_chunks.is_empty());
    let restored = dir.path().join("c.raw");
    restore_to_new(&store, "c", &restored, size).await;
    assert_eq!(file_sha(&restored), file_sha(&image));

    // A delete that died after its first step (the record moved aside) is finished by
    // the next one.
    std::fs::rename(dir.path().join("store/backups/c.json"), dir.path().join("store/deleting/c.json"))
        .unwrap();
    store.delete("c").await.unwrap();
    assert_eq!(chunk_files(dir.path()), Vec::<PathBuf>::new());
    assert!(std::fs::read_dir(dir.path().join("store/deleting")).unwrap().next().is_none());

    // A failed backup that is never resumed is deleted with what it stored.
    let failing = Counting::new(LocalSource::open(&image).await.unwrap(), 2 * CHUNK);
    store.backup(&spec("f", "v", None), &failing, &Reports::default()).await.unwrap_err();
    assert!(!chunk_files(dir.path()).is_empty());
    store.delete("f").await.unwrap();
    assert_eq!(chunk_files(dir.path()), Vec::<PathBuf>::new());
    assert!(std::fs::read_dir(dir.path().join("store/journal")).unwrap().next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_export_and_import_and_compression_is_chosen_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("volume.raw");
    let size = 8 * MIB;
    // Compressible text in the first half, random data in the second.
    let mut buf: Vec<u8> = b"ember backup ".iter().copied().cycle().take((size / 2) as usize).collect();
    let mut random = vec![0u8; (size / 2) as usize];
    rand::rngs::StdRng::seed_from_u64(8).fill_bytes(&mut random);
    buf.extend_from_slice(&random);
    std::fs::write(&image, &buf).unwrap();
    let store = driver(dir.path());
    let out = backup(&store, "b", "v", None, &image).await.unwrap();
    let files = chunk_files(dir.path());
    assert!(files.iter().any(|f| f.extension().unwrap() == "zst"));
    assert!(files.iter().any(|f| f.extension().unwrap() == "raw"), "random data is stored as it is");
    assert!(out.stored_bytes < size / 2 + size / 8, "stored {}", out.stored_bytes);

    let record = store.export_record("b").await.unwrap();
    store.import_record("b2", &record).await.unwrap();
    store.import_record("b2", &record).await.unwrap();
    let restored = dir.path().join("b2.raw");
    restore_to_new(&store, "b2", &restored, size).await;
    assert_eq!(file_sha(&restored), file_sha(&image));
    let err = store.import_record("b3", &serde_json::json!({"chunks": 1})).await.unwrap_err();
    assert!(matches!(err, DriverError::InvalidInput(_)), "{err}");

    // Without compression every chunk is stored as it is.
    let mut options = PosixBackupOptions::new(dir.path().join("plain"));
    options.backup_compression_algorithm = Compression::None;
    let plain = PosixBackupDriver::new(options).unwrap();
    let out = backup(&plain, "b", "v", None, &image).await.unwrap();
    assert_eq!(out.stored_bytes, size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("volume.raw");
    sparse_image(&image, 4 * MIB, 9);
    let store = driver(dir.path());
    let source = LocalSource::open(&image).await.unwrap();
    let none = Reports::default();

    let err = store.backup(&spec("../x", "v", None), &source, &none).await.unwrap_err();
    assert!(matches!(err, DriverError::InvalidInput(_)), "{err}");
    let err = store.backup(&spec("b", "v", Some("nope")), &source, &none).await.unwrap_err();
    assert!(matches!(err, DriverError::NotFound { .. }), "{err}");
    assert!(matches!(store.verify("nope").await.unwrap_err(), DriverError::NotFound { .. }));
    assert!(matches!(store.export_record("nope").await.unwrap_err(), DriverError::NotFound { .. }));
    store.delete("nope").await.unwrap();

    store.backup(&spec("b", "v", None), &source, &none).await.unwrap();
    let small = LocalSink::create(dir.path().join("small.raw"), MIB).await.unwrap();
    let err = store.restore("b", &small, &none).await.unwrap_err();
    assert!(matches!(err, DriverError::InvalidInput(_)), "{err}");

    for size in [1000, 128 << 20] {
        let mut options = PosixBackupOptions::new(dir.path().join("x"));
        options.backup_file_size = size;
        assert!(matches!(PosixBackupDriver::new(options).unwrap_err(), DriverError::InvalidInput(_)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_source_maps_holes_and_local_sink_punches_them() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("volume.raw");
    let f = std::fs::File::create(&image).unwrap();
    f.set_len(8 * MIB).unwrap();
    f.write_all_at(&[1u8; 4096], 2 * MIB).unwrap();
    drop(f);
    let source = LocalSource::open(&image).await.unwrap();
    let extents = source.extents(0, 8 * MIB).await.unwrap();
    assert_eq!(extents.iter().map(|e| e.length).sum::<u64>(), 8 * MIB);
    let data: Vec<_> = extents.iter().filter(|e| e.data).collect();
    assert_eq!(data.len(), 1, "{extents:?}");
    assert!(data[0].offset <= 2 * MIB && data[0].offset + data[0].length >= 2 * MIB + 4096);
    assert!(data[0].length < MIB, "{extents:?}");

    let sink = LocalSink::open(&image).await.unwrap();
    sink.zero(0, 8 * MIB).await.unwrap();
    sink.flush().await.unwrap();
    assert_eq!(std::fs::metadata(&image).unwrap().blocks(), 0);
    assert!(source.extents(0, 8 * MIB).await.unwrap().iter().all(|e| !e.data));
    let err = sink.write_at(8 * MIB - 10, vec![0u8; 20]).await.unwrap_err();
    assert!(matches!(err, DriverError::InvalidInput(_)), "{err}");
}
