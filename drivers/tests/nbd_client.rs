//! The NBD client against the real servers: qemu-nbd over TCP and a Unix socket, on raw and
//! qcow2 images, read-write and read-only; qemu-storage-daemon's NBD server; and the file
//! driver's own exports through their `connection_info`. Every server is a child killed by
//! a guard, so none outlives its test.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember_drivers::backup::nbd::{NbdAddress, NbdClient, NbdOptions, NbdSink, NbdSource};
use ember_drivers::backup::{Extent, ImageSink, ImageSource};
use ember_drivers::{AccessMode, Connector, DriverVolume, FileDriver, FileOptions, VolumeDriver};

const MIB: u64 = 1 << 20;
const EXPORT: &str = "vol";

/// A server process, killed and reaped when the guard goes.
struct Server {
    child: Child,
    address: NbdAddress,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Listen {
    Tcp,
    Unix,
}

impl Server {
    /// `qemu-nbd` exporting `image` as [`EXPORT`], waited for until it accepts connections.
    fn qemu_nbd(image: &Path, format: &str, listen: Listen, read_only: bool) -> Server {
        for _ in 0..5 {
            let address = match listen {
                Listen::Tcp => NbdAddress::Tcp { host: "127.0.0.1".into(), port: free_port() },
                Listen::Unix => NbdAddress::Unix(image.with_extension("sock")),
            };
            let mut cmd = Command::new("qemu-nbd");
            cmd.args(["--persistent", "--shared=8", "--discard=unmap", "-x", EXPORT, "-f", format]);
            match &address {
                NbdAddress::Tcp { host, port } => cmd.args(["-b", host, "-p", &port.to_string()]),
                NbdAddress::Unix(path) => cmd.arg("-k").arg(path),
            };
            if read_only {
                cmd.arg("--read-only");
            }
            let child = cmd.arg(image).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
            if let Some(server) = Server::ready(child, address) {
                return server;
            }
        }
        panic!("qemu-nbd did not start");
    }

    /// `qemu-storage-daemon` exporting a raw `image` writable on a Unix socket.
    fn storage_daemon(image: &Path) -> Server {
        let socket = image.with_extension("qsd.sock");
        let child = Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!("driver=file,filename={},node-name=file0,discard=unmap", image.display()))
            .args(["--blockdev", "driver=raw,file=file0,node-name=fmt0,discard=unmap"])
            .arg("--nbd-server")
            .arg(format!("addr.type=unix,addr.path={}", socket.display()))
            .args(["--export", &format!("type=nbd,id=e0,node-name=fmt0,name={EXPORT},writable=on")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Server::ready(child, NbdAddress::Unix(socket)).expect("qemu-storage-daemon did not start")
    }

    /// Polls the address until it accepts a connection; `None` if the process exited
    /// (a port taken between `free_port` and the bind).
    fn ready(mut child: Child, address: NbdAddress) -> Option<Server> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = match &address {
                NbdAddress::Tcp { host, port } => {
                    std::net::TcpStream::connect((host.as_str(), *port)).is_ok()
                }
                NbdAddress::Unix(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
            };
            if up {
                return Some(Server { child, address });
            }
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            assert!(Instant::now() < deadline, "the server at {address} never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A sparse raw image of `size` bytes.
fn raw_image(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("disk.raw");
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    path
}

fn qcow2_image(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("disk.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-f", "qcow2"])
        .arg(&path)
        .arg(size.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

fn pattern(seed: u64, len: u64) -> Vec<u8> {
    (0..len).map(|i| ((i / 512 + seed).wrapping_mul(2654435761) >> 7) as u8 | 1).collect()
}

/// Writes through the sink (one write larger than qemu's 32 MiB maximum block size),
/// flushes, reads back through a source and compares.
async fn round_trip(address: &NbdAddress) {
    let sink = NbdSink::connect(address, EXPORT, &NbdOptions::default()).await.unwrap();
    assert_eq!(sink.size(), 64 * MIB);
    let writes = [(0, 40 * MIB, 1), (48 * MIB, MIB, 2), (60 * MIB + 4096, 8192, 3)];
    for (offset, len, seed) in writes {
        let buf = sink.write_at(offset, pattern(seed, len)).await.unwrap();
        assert_eq!(buf.len() as u64, len, "the buffer comes back");
    }
    sink.flush().await.unwrap();
    sink.close().await.unwrap();

    let source = NbdSource::connect(address, EXPORT, &NbdOptions::default()).await.unwrap();
    for (offset, len, seed) in writes {
        let got = source.read_at(offset, vec![0xaa; len as usize]).await.unwrap();
        assert!(got == pattern(seed, len), "data at {offset} differs");
    }
    let between = source.read_at(40 * MIB, vec![0xaa; (8 * MIB) as usize]).await.unwrap();
    assert!(between.iter().all(|b| *b == 0), "never-written ranges read as zeros");
    source.close().await.unwrap();
}

fn data_ranges(extents: &[Extent]) -> Vec<(u64, u64)> {
    extents.iter().filter(|e| e.data).map(|e| (e.offset, e.length)).collect()
}

fn assert_covers(extents: &[Extent], offset: u64, length: u64) {
    let mut at = offset;
    for e in extents {
        assert_eq!(e.offset, at, "{extents:?}");
        at += e.length;
    }
    assert_eq!(at, offset + length, "{extents:?}");
}

#[tokio::test]
async fn raw_over_tcp_round_trips_and_matches_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let image = raw_image(dir.path(), 64 * MIB);
    let server = Server::qemu_nbd(&image, "raw", Listen::Tcp, false);
    round_trip(&server.address).await;
    // The bytes on disk are the ones written.
    let mut on_disk = vec![0u8; MIB as usize];
    std::fs::File::open(&image).unwrap().read_exact_at(&mut on_disk, 48 * MIB).unwrap();
    assert!(on_disk == pattern(2, MIB));
}

#[tokio::test]
async fn qcow2_over_a_unix_socket_round_trips_and_reports_unallocated_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let image = qcow2_image(dir.path(), 64 * MIB);
    let server = Server::qemu_nbd(&image, "qcow2", Listen::Unix, false);
    round_trip(&server.address).await;
    let source = NbdSource::connect(&server.address, EXPORT, &NbdOptions::default()).await.unwrap();
    let extents = source.extents(0, 64 * MIB).await.unwrap();
    assert_covers(&extents, 0, 64 * MIB);
    // qcow2 allocates 64 KiB clusters: the data extents are the written ranges, rounded.
    assert_eq!(data_ranges(&extents), vec![(0, 40 * MIB), (48 * MIB, MIB), (60 * MIB, 64 << 10)]);
}

#[tokio::test]
async fn block_status_finds_the_holes_of_a_sparse_raw_file() {
    let dir = tempfile::tempdir().unwrap();
    let image = raw_image(dir.path(), 256 * MIB);
    let file = std::fs::OpenOptions::new().write(true).open(&image).unwrap();
    file.write_all_at(&pattern(1, MIB), MIB).unwrap();
    file.write_all_at(&pattern(2, 3 * MIB), 100 * MIB).unwrap();
    // Allocated zeros read as zeros: qemu reports them as data or zero, either is right.
    file.sync_all().unwrap();
    let server = Server::qemu_nbd(&image, "raw", Listen::Tcp, false);
    let source = NbdSource::connect(&server.address, EXPORT, &NbdOptions::default()).await.unwrap();
    let extents = source.extents(0, 256 * MIB).await.unwrap();
    assert_covers(&extents, 0, 256 * MIB);
    assert_eq!(data_ranges(&extents), vec![(MIB, MIB), (100 * MIB, 3 * MIB)]);
    // A sub-range starts and ends where asked.
    let part = source.extents(MIB + 4096, 100 * MIB).await.unwrap();
    assert_covers(&part, MIB + 4096, 100 * MIB);
    assert_eq!(data_ranges(&part), vec![(MIB + 4096, MIB - 4096), (100 * MIB, 4096 + MIB)]);
}

#[tokio::test]
async fn write_zeroes_punches_holes() {
    let dir = tempfile::tempdir().unwrap();
    let image = raw_image(dir.path(), 64 * MIB);
    let server = Server::qemu_nbd(&image, "raw", Listen::Unix, false);
    let sink = NbdSink::connect(&server.address, EXPORT, &NbdOptions::default()).await.unwrap();
    sink.write_at(0, pattern(9, 16 * MIB)).await.unwrap();
    sink.flush().await.unwrap();
    let before = std::fs::metadata(&image).unwrap().blocks() * 512;
    assert!(before >= 16 * MIB, "{before}");
    sink.zero(4 * MIB, 8 * MIB).await.unwrap();
    sink.flush().await.unwrap();
    let after = std::fs::metadata(&image).unwrap().blocks() * 512;
    assert!(after <= before - 8 * MIB, "write-zeroes did not deallocate: {before} -> {after}");
    let source = NbdSource::connect(&server.address, EXPORT, &NbdOptions::default()).await.unwrap();
    let zeros = source.read_at(4 * MIB, vec![1; (8 * MIB) as usize]).await.unwrap();
    assert!(zeros.iter().all(|b| *b == 0));
    let extents = source.extents(0, 16 * MIB).await.unwrap();
    assert_eq!(data_ranges(&extents), vec![(0, 4 * MIB), (12 * MIB, 4 * MIB)]);
}

#[tokio::test]
async fn a_read_only_export_refuses_writes_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let image = raw_image(dir.path(), 8 * MIB);
    let server = Server::qemu_nbd(&image, "raw", Listen::Tcp, true);
    let e = NbdSink::connect(&server.address, EXPORT, &NbdOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), "not_supported");
    assert!(e.to_string().contains("read-only"), "{e}");
    let client = NbdClient::connect(&server.address, EXPORT, &NbdOptions::default()).await.unwrap();
    assert!(client.info().flags.read_only());
    let e = client.write(0, vec![1; 4096]).await.unwrap_err();
    assert!(e.to_string().contains("read-only") && e.to_string().contains(EXPORT), "{e}");
    // Reads still work.
    assert_eq!(client.read(0, vec![1; 4096]).await.unwrap(), vec![0; 4096]);
}

#[tokio::test]
async fn a_wrong_export_name_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let image = raw_image(dir.path(), 8 * MIB);
    let server = Server::qemu_nbd(&image, "raw", Listen::Tcp, false);
    let e = NbdSource::connect(&server.address, "no-such-export", &NbdOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), "not_found", "{e}");
    assert!(e.to_string().contains("no-such-export"), "{e}");
    // Nothing listening: a clear error naming the address.
    drop(server);
    let e = NbdSource::connect(
        &NbdAddress::Tcp { host: "127.0.0.1".into(), port: free_port() },
        EXPORT,
        &NbdOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("cannot connect"), "{e}");
}

#[tokio::test]
async fn large_requests_are_split_under_the_servers_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let image = raw_image(dir.path(), 128 * MIB);
    let data = pattern(4, 100 * MIB);
    std::fs::OpenOptions::new().write(true).open(&image).unwrap().write_all_at(&data, 0).unwrap();
    let server = Server::qemu_nbd(&image, "raw", Listen::Unix, false);
    let client = NbdClient::connect(&server.address, EXPORT, &NbdOptions::default()).await.unwrap();
    assert!(client.info().max_block <= 32 * MIB as u32, "{:?}", client.info());
    let got = client.read(0, vec![0; data.len()]).await.unwrap();
    assert!(got == data, "a 100 MiB read differs");
    // Tiny requests (64 KiB) also reassemble: 1600 requests in flight for one call.
    let small = NbdOptions { max_request: 64 << 10, ..NbdOptions::default() };
    let client = NbdClient::connect(&server.address, EXPORT, &small).await.unwrap();
    let got = client.read(4096, vec![0; (100 * MIB - 8192) as usize]).await.unwrap();
    assert!(got[..] == data[4096..data.len() - 4096], "a split read differs");
}

#[tokio::test]
async fn concurrent_reads_return_the_right_data() {
    let dir = tempfile::tempdir().unwrap();
    let image = raw_image(dir.path(), 64 * MIB);
    let data = pattern(5, 64 * MIB);
    std::fs::OpenOptions::new().write(true).open(&image).unwrap().write_all_at(&data, 0).unwrap();
    let server = Server::qemu_nbd(&image, "raw", Listen::Tcp, false);
    for connections in [1, 4] {
        let options = NbdOptions { connections, ..NbdOptions::default() };
        let source =
            std::sync::Arc::new(NbdSource::connect(&server.address, EXPORT, &options).await.unwrap());
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let source = source.clone();
            // Odd sizes and offsets, so replies of different lengths interleave.
            let (offset, len) = ((i * 7919 * 4096) % (60 * MIB), 4096 * (1 + i % 97));
            tasks.push(tokio::spawn(
                async move { (offset, source.read_at(offset, vec![0; len as usize]).await) },
            ));
        }
        for task in tasks {
            let (offset, got) = task.await.unwrap();
            let got = got.unwrap();
            assert!(
                got[..] == data[offset as usize..offset as usize + got.len()],
                "read at {offset} differs"
            );
        }
    }
}

#[tokio::test]
async fn a_server_that_dies_fails_the_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let image = raw_image(dir.path(), 64 * MIB);
    let mut server = Server::qemu_nbd(&image, "raw", Listen::Tcp, false);
    let client = NbdClient::connect(&server.address, EXPORT, &NbdOptions::default()).await.unwrap();
    client.read(0, vec![0; 4096]).await.unwrap();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let e = loop {
        match tokio::time::timeout(Duration::from_secs(10), client.read(0, vec![0; 4096])).await.unwrap() {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "reads succeed on a dead server"),
        }
    };
    assert!(e.to_string().contains("NBD connection"), "{e}");
}

#[tokio::test]
async fn qemu_storage_daemon_exports_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let image = raw_image(dir.path(), 64 * MIB);
    let server = Server::storage_daemon(&image);
    round_trip(&server.address).await;
    let source = NbdSource::connect(&server.address, EXPORT, &NbdOptions::default()).await.unwrap();
    let extents = source.extents(0, 64 * MIB).await.unwrap();
    assert_eq!(data_ranges(&extents), vec![(0, 40 * MIB), (48 * MIB, MIB), (60 * MIB + 4096, 8192)]);
}

/// Kills the daemons whose pid files are in a directory (the file driver's forked exports).
struct ForkedDaemons(PathBuf);

impl Drop for ForkedDaemons {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.0) else { return };
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "pid")
                && let Ok(pid) = std::fs::read_to_string(entry.path())
            {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

/// The file driver's export, reached through the `connection_info` it returns, as the
/// backup service on another host will.
#[tokio::test]
async fn the_file_drivers_connection_info_opens_a_source_and_a_sink() {
    let dir = tempfile::tempdir().unwrap();
    let driver =
        FileDriver::new(FileOptions { data_dir: dir.path().join("volumes"), ..FileOptions::default() });
    driver.do_setup().await.unwrap();
    let volume = DriverVolume::new(uuid::Uuid::new_v4().to_string(), 1);
    driver.create_volume(&volume).await.unwrap();
    let connector = Connector {
        host: Some("backup-host".into()),
        ip: Some("127.0.0.1".into()),
        extra: Default::default(),
    };
    let info = driver.initialize_connection(&volume, &connector, AccessMode::Rw).await.unwrap();
    // The driver's qemu-nbd is forked: kill it whatever happens below.
    let _daemons = ForkedDaemons(dir.path().join("volumes/.ember/nbd"));
    let options = NbdOptions::default();
    let sink = NbdSink::from_connection_info(&info, &options).await.unwrap();
    assert_eq!(sink.size(), 1 << 30);
    sink.write_at(512 * MIB, pattern(6, 2 * MIB)).await.unwrap();
    sink.flush().await.unwrap();
    sink.close().await.unwrap();
    let source = NbdSource::from_connection_info(&info, &options).await.unwrap();
    let got = source.read_at(512 * MIB, vec![0; (2 * MIB) as usize]).await.unwrap();
    assert!(got == pattern(6, 2 * MIB));
    let extents = source.extents(0, 1 << 30).await.unwrap();
    let data = data_ranges(&extents);
    assert_eq!(data.len(), 1, "{extents:?}");
    assert!(data[0].0 <= 512 * MIB && data[0].0 + data[0].1 >= 514 * MIB, "{extents:?}");
    source.close().await.unwrap();
    driver.remove_export(&volume).await.unwrap();
}
