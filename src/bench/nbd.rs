//! `ember bench nbd`: the backup path's NBD client against a real `qemu-nbd`.
//!
//! Sequential read throughput of a raw image (1 GiB by default, filled with data and so in
//! the page cache: this measures the client, the server and the loopback, not a disk),
//! read in consecutive requests with 1 and N requests in flight on one connection, and with
//! N connections of one request each; then the time to get the whole allocation map of a
//! sparse image (10 GiB by default, one 64 KiB extent of data every 64 MiB) through
//! `NBD_CMD_BLOCK_STATUS`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use ember_drivers::backup::ImageSource;
use ember_drivers::backup::nbd::{NbdAddress, NbdOptions, NbdSource};

use super::{Figure, Report};

const MIB: u64 = 1 << 20;
const EXPORT: &str = "bench";

/// Options of `ember bench nbd`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the image read sequentially, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Size of the sparse image whose allocation map is read, in GiB.
    #[arg(long, default_value_t = 10)]
    sparse_gib: u64,
    /// Bytes per read request, in KiB (the backup store's chunk size is a few MiB).
    #[arg(long, default_value_t = 4096)]
    request_kib: u64,
    /// Requests in flight to compare.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 4, 16])]
    in_flight: Vec<u64>,
    /// Passes over the image per case; the best is reported.
    #[arg(long, default_value_t = 3)]
    passes: u32,
    /// Where the images go (the system's temporary directory by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A `qemu-nbd` child, killed when it goes.
struct QemuNbd {
    child: Child,
    address: NbdAddress,
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl QemuNbd {
    async fn start(image: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("qemu-nbd")
            .args(["--persistent", "--shared=32", "-x", EXPORT, "-f", "raw", "-b", "127.0.0.1"])
            .args(["-p", &port.to_string()])
            .arg(image)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start qemu-nbd (Debian package qemu-utils)")?;
        let mut server = QemuNbd { child, address: NbdAddress::Tcp { host: "127.0.0.1".into(), port } };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if server.child.try_wait()?.is_some() || Instant::now() > deadline {
                bail!("qemu-nbd did not listen on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(server)
    }
}

pub async fn run(args: Args, report: &mut Report) -> anyhow::Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).with_context(|| format!("a directory in {}", base.display()))?;
    sequential(&args, dir.path(), report).await?;
    block_status(&args, dir.path(), report).await
}

/// Writes an image of `size` bytes of non-zero data.
async fn full_image(path: PathBuf, size: u64) -> anyhow::Result<PathBuf> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<PathBuf> {
        use std::io::Write as _;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let block: Vec<u8> = (0..4 * MIB).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8 | 1).collect();
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            file.write_all(&block[..n])?;
            left -= n as u64;
        }
        file.flush()?;
        Ok(path)
    })
    .await?
}

async fn sequential(args: &Args, dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let size = args.size_mib * MIB;
    let image = full_image(dir.join("full.raw"), size).await?;
    let server = QemuNbd::start(&image).await?;
    let request = args.request_kib * 1024;
    let mut cases: Vec<(u64, usize)> = args.in_flight.iter().map(|n| (*n, 1)).collect();
    cases.extend(args.in_flight.iter().filter(|n| **n > 1).map(|n| (*n, *n as usize)));
    for (in_flight, connections) in cases {
        let options = NbdOptions { connections, ..NbdOptions::default() };
        let source = Arc::new(NbdSource::connect(&server.address, EXPORT, &options).await?);
        let mut best = f64::MAX;
        for _ in 0..args.passes.max(1) {
            best = best.min(read_all(&source, request, in_flight).await?);
        }
        let case = if connections == 1 {
            format!("sequential read, 1 connection, {in_flight} in flight")
        } else {
            format!("sequential read, {connections} connections, 1 in flight each")
        };
        let mb_s = size as f64 / 1e6 / best;
        report.push(
            Figure::new(case, mb_s, "MB/s")
                .with("size_mib", args.size_mib)
                .with("request_kib", args.request_kib)
                .with("seconds", best),
        );
        if let Ok(source) = Arc::try_unwrap(source) {
            source.close().await?;
        }
    }
    if let Some(max) = args.in_flight.iter().max() {
        nbdcopy(&server.address, size, request, *max, args, report).await?;
    }
    drop(server);
    tokio::fs::remove_file(&image).await?;
    Ok(())
}

/// The same read by libnbd's `nbdcopy` (C) into `null:`, for reference, when installed.
async fn nbdcopy(
    address: &NbdAddress,
    size: u64,
    request: u64,
    in_flight: u64,
    args: &Args,
    report: &mut Report,
) -> anyhow::Result<()> {
    let uri = format!("nbd://{address}/{EXPORT}");
    let mut best = f64::MAX;
    for _ in 0..args.passes.max(1) {
        let started = Instant::now();
        let status = match tokio::process::Command::new("nbdcopy")
            .args([
                "--connections=1",
                &format!("--requests={in_flight}"),
                &format!("--request-size={request}"),
            ])
            .args([uri.as_str(), "null:"])
            .status()
            .await
        {
            Ok(status) => status,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !status.success() {
            bail!("nbdcopy {uri} null: failed ({status})");
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    report.push(
        Figure::new(
            format!("reference: nbdcopy (libnbd), 1 connection, {in_flight} in flight"),
            size as f64 / 1e6 / best,
            "MB/s",
        )
        .with("size_mib", args.size_mib)
        .with("request_kib", args.request_kib)
        .with("seconds", best),
    );
    Ok(())
}

/// Reads the whole image in consecutive requests, `in_flight` at a time; seconds taken.
async fn read_all(source: &Arc<NbdSource>, request: u64, in_flight: u64) -> anyhow::Result<f64> {
    let size = source.size();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let (source, next) = (source.clone(), next.clone());
        workers.spawn(async move {
            let mut buf = vec![0u8; request as usize];
            loop {
                let offset = next.fetch_add(request, Ordering::Relaxed);
                if offset >= size {
                    return Ok::<_, ember_drivers::DriverError>(());
                }
                buf.resize(request.min(size - offset) as usize, 0);
                buf = source.read_at(offset, buf).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn block_status(args: &Args, dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let size = args.sparse_gib << 30;
    let path = dir.join("sparse.raw");
    let data_extents = size / (64 * MIB);
    let image = path.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let file = std::fs::File::create(&image)?;
        file.set_len(size)?;
        let data = vec![0x5au8; 64 << 10];
        for i in 0..data_extents {
            file.write_all_at(&data, i * 64 * MIB)?;
        }
        Ok(())
    })
    .await??;
    let server = QemuNbd::start(&path).await?;
    let source = NbdSource::connect(&server.address, EXPORT, &NbdOptions::default()).await?;
    let mut samples = Vec::new();
    let mut extents = Vec::new();
    for _ in 0..args.passes.max(1) * 3 {
        let started = Instant::now();
        extents = source.extents(0, size).await?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let found = extents.iter().filter(|e| e.data).count() as u64;
    if found != data_extents {
        bail!("block status found {found} data extents, expected {data_extents}");
    }
    samples.sort_by(f64::total_cmp);
    report.push(
        Figure::new(
            format!("block status of a {} GiB sparse image", args.sparse_gib),
            samples[samples.len() / 2],
            "ms",
        )
        .with("data_extents", data_extents)
        .with("extents", extents.len() as u64),
    );
    source.close().await?;
    Ok(())
}
