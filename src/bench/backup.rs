//! `ember bench backup`: the POSIX backup store on a sparse raw volume, as issue 14 asks.
//!
//! Per case (a volume of SIZE MiB holding DATA MiB of random data in islands, the rest
//! never written): a full backup, a restore into a fresh sparse file, then a change of
//! `--change-mib` MiB and an incremental backup. Each step runs in a child process
//! (`ember bench backup-step`, hidden), which reports its own wall time, CPU time (user +
//! system, from /proc/self/stat) and peak RSS (VmHWM from /proc/self/status), so the
//! figures are those of the backup work alone. Cinder 29's figures are printed next to
//! them, labelled as taken from the issue (not measured here).

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use ember_drivers::backup::{BackupDriver as _, BackupSpec, ImageSink, LocalSink, LocalSource, NoProgress};
use ember_drivers::{PosixBackupDriver, PosixBackupOptions};
use serde::{Deserialize, Serialize};

use super::{Figure, Report};

const MIB: u64 = 1 << 20;

/// Options of `ember bench backup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A case as VOLUME_MIB:DATA_MIB; repeat for several. Default: 10240:1024 and 1024:512
    /// (issue 14's two volumes).
    #[arg(long = "case", value_name = "VOLUME_MIB:DATA_MIB")]
    cases: Vec<String>,
    /// MiB changed between the full and the incremental backup.
    #[arg(long, default_value_t = 10)]
    change_mib: u64,
    /// The store's chunk size in MiB (`backup_file_size`).
    #[arg(long, default_value_t = 4)]
    chunk_mib: u64,
    /// Where the volume, the store and the restored copy go (a temporary directory inside
    /// it, removed at the end). Default: the system's temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Compare the restored volume with the source byte for byte (reads both whole).
    #[arg(long)]
    check: bool,
    /// Trust the page cache: the store's `backup_sync = false`, and the restore's final
    /// fsync of the volume skipped (Cinder's posix driver syncs neither).
    #[arg(long)]
    no_sync: bool,
}

/// One step run in a child process: `ember bench backup-step ...` (hidden).
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct StepArgs {
    /// backup or restore.
    #[arg(long)]
    op: String,
    #[arg(long)]
    store: PathBuf,
    #[arg(long)]
    image: PathBuf,
    #[arg(long)]
    id: String,
    #[arg(long)]
    parent: Option<String>,
    #[arg(long)]
    chunk_mib: u64,
    #[arg(long)]
    no_sync: bool,
}

/// What a step reports on its standard output.
#[derive(Debug, Serialize, Deserialize)]
struct StepResult {
    wall_s: f64,
    cpu_s: f64,
    peak_rss_mb: f64,
    read_bytes: u64,
    stored_bytes: u64,
}

/// Cinder 29 on the machine, from issue 14: (full s, restore s, incremental s).
fn cinder(volume_mib: u64, data_mib: u64) -> Option<(f64, f64, f64)> {
    match (volume_mib, data_mib) {
        (10240, 1024) => Some((98.8, 55.0, 17.4)),
        (1024, 512) => Some((18.1, 7.0, 2.7)),
        _ => None,
    }
}

pub async fn run(args: Args, report: &mut Report) -> anyhow::Result<()> {
    let cases = if args.cases.is_empty() {
        vec!["10240:1024".to_owned(), "1024:512".to_owned()]
    } else {
        args.cases.clone()
    };
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    for case in &cases {
        let (volume, data) = case
            .split_once(':')
            .and_then(|(v, d)| Some((v.parse::<u64>().ok()?, d.parse::<u64>().ok()?)))
            .with_context(|| format!("--case {case}: expected VOLUME_MIB:DATA_MIB"))?;
        if data > volume || args.change_mib > data || volume == 0 {
            bail!("--case {case}: the data (and the change) must fit in the volume");
        }
        let dir = tempfile::Builder::new().prefix("ember-bench-backup").tempdir_in(&base)?;
        run_case(&args, dir.path(), volume, data, report).await?;
    }
    Ok(())
}

async fn run_case(
    args: &Args,
    dir: &Path,
    volume: u64,
    data: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let image = dir.join("volume.raw");
    let store = dir.join("store");
    let sync = if args.no_sync { "no fsync" } else { "fsync" };
    let label = format!("{volume} MiB volume, {data} MiB data, {sync}");
    write_volume(&image, volume * MIB, data * MIB)?;
    let step = |op: &str, id: &str, parent: Option<&str>, image: &Path| StepArgs {
        op: op.to_owned(),
        store: store.clone(),
        image: image.to_owned(),
        id: id.to_owned(),
        parent: parent.map(str::to_owned),
        chunk_mib: args.chunk_mib,
        no_sync: args.no_sync,
    };
    let full = child(&step("backup", "full", None, &image)).await?;
    push(report, &label, "full backup", &full);
    let restored = dir.join("restored.raw");
    let restore = child(&step("restore", "full", None, &restored)).await?;
    push(report, &label, "restore", &restore);
    if args.check {
        let same = same_content(&image, &restored)?;
        report.push(Figure::new(
            format!("{label}: restored equals source"),
            f64::from(u8::from(same)),
            "bool",
        ));
        if !same {
            bail!("the restored volume differs from the source");
        }
    }
    std::fs::remove_file(&restored)?;
    change(&image, volume * MIB, data * MIB, args.change_mib * MIB)?;
    let incremental = child(&step("backup", "incremental", Some("full"), &image)).await?;
    push(report, &label, "incremental backup", &incremental);
    if let Some((f, r, i)) = cinder(volume, data) {
        let label = format!("{volume} MiB volume, {data} MiB data");
        let note = "Cinder 29, from the issue (not measured here)";
        report.push(Figure::new(format!("{label}: full backup, {note}"), f, "s"));
        report.push(Figure::new(format!("{label}: restore, {note}"), r, "s"));
        report.push(Figure::new(format!("{label}: incremental backup, {note}"), i, "s"));
        if volume == 10240 {
            report.push(Figure::new(format!("{label}: full backup cpu, {note}"), 96.0, "s"));
            report.push(Figure::new(format!("{label}: full backup peak RSS, {note}"), 4200.0, "MB"));
            report.push(Figure::new(format!("{label}: restore peak RSS, {note}"), 5200.0, "MB"));
            report.push(Figure::new(
                format!("{label}: stored by full and incremental, {note}"),
                1110.0,
                "MB",
            ));
        }
    }
    Ok(())
}

fn push(report: &mut Report, label: &str, what: &str, r: &StepResult) {
    let fig = |metric: &str, value: f64, unit: &'static str| {
        Figure::new(format!("{label}: {what} {metric}"), value, unit)
    };
    report.push(fig("wall", r.wall_s, "s"));
    report.push(fig("cpu", r.cpu_s, "s"));
    report.push(fig("peak RSS", r.peak_rss_mb, "MB"));
    if what != "restore" {
        report.push(fig("read", r.read_bytes as f64 / MIB as f64, "MiB"));
        report.push(fig("stored", r.stored_bytes as f64 / MIB as f64, "MiB"));
    }
}

/// Runs one step in a child `ember` and reads what it reports.
async fn child(step: &StepArgs) -> anyhow::Result<StepResult> {
    let exe = std::env::current_exe().context("find the ember binary")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["bench", "backup-step", "--op", &step.op, "--id", &step.id])
        .arg("--store")
        .arg(&step.store)
        .arg("--image")
        .arg(&step.image)
        .args(["--chunk-mib", &step.chunk_mib.to_string()]);
    if let Some(parent) = &step.parent {
        cmd.args(["--parent", parent]);
    }
    if step.no_sync {
        cmd.arg("--no-sync");
    }
    let out = cmd.output().await.context("run the backup step")?;
    if !out.status.success() {
        bail!("the {} step failed: {}", step.op, String::from_utf8_lossy(&out.stderr));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("read the step's report {line:?}"))
}

/// The child: runs one step and prints its [`StepResult`] as JSON.
pub async fn step(args: StepArgs) -> anyhow::Result<()> {
    let mut options = PosixBackupOptions::new(&args.store);
    options.backup_file_size = args.chunk_mib * MIB;
    options.backup_sync = !args.no_sync;
    let driver = PosixBackupDriver::new(options)?;
    let started = Instant::now();
    let (read_bytes, stored_bytes) = match args.op.as_str() {
        "backup" => {
            let source = LocalSource::open(&args.image).await?;
            let spec = BackupSpec {
                backup_id: args.id.clone(),
                volume_id: "bench".into(),
                parent_id: args.parent.clone(),
            };
            let out = driver.backup(&spec, &source, &NoProgress).await?;
            (out.read_bytes, out.stored_bytes)
        }
        "restore" => {
            let record = driver.record(&args.id).await?.context("no such backup")?;
            let sink = LocalSink::create(&args.image, record.size_bytes).await?;
            let sink = Sink { inner: sink, flush: !args.no_sync };
            let out = driver.restore(&args.id, &sink, &NoProgress).await?;
            (0, out.written_bytes)
        }
        other => bail!("unknown step {other}"),
    };
    let wall_s = started.elapsed().as_secs_f64();
    let (cpu_s, peak_rss_mb) = own_usage()?;
    let result = StepResult { wall_s, cpu_s, peak_rss_mb, read_bytes, stored_bytes };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// A local sink whose flush can be skipped (`--no-sync`).
struct Sink {
    inner: LocalSink,
    flush: bool,
}

#[async_trait::async_trait]
impl ImageSink for Sink {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    async fn write_at(&self, offset: u64, buf: Vec<u8>) -> ember_drivers::Result<Vec<u8>> {
        self.inner.write_at(offset, buf).await
    }
    async fn zero(&self, offset: u64, length: u64) -> ember_drivers::Result<()> {
        self.inner.zero(offset, length).await
    }
    async fn flush(&self) -> ember_drivers::Result<()> {
        if self.flush { self.inner.flush().await } else { Ok(()) }
    }
}

/// This process's CPU seconds (user + system, every thread, from /proc/self/stat in
/// USER_HZ = 100 ticks) and peak RSS in MB (VmHWM).
fn own_usage() -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("/proc/self/stat")?.1.split_whitespace().collect();
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu = (ticks(14) + ticks(15)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .context("VmHWM in /proc/self/status")?;
    Ok((cpu, hwm_kb * 1024.0 / 1e6))
}

/// A fast, incompressible byte stream (xorshift64*): random enough for zstd and SHA-256.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
    }
}

/// Islands of 16 MiB of random data, spread evenly over a sparse volume.
const ISLAND: u64 = 16 * MIB;

fn write_volume(path: &Path, size: u64, data: u64) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)?;
    file.set_len(size)?;
    let islands = data.div_ceil(ISLAND);
    let stride = size / islands.max(1);
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![0u8; ISLAND as usize];
    for i in 0..islands {
        let len = ISLAND.min(data - i * ISLAND);
        noise.fill(&mut buf[..len as usize]);
        file.write_all_at(&buf[..len as usize], i * stride)?;
    }
    file.sync_all()?;
    Ok(())
}

/// Overwrites `change` bytes with new random data at the start of the middle island.
fn change(path: &Path, size: u64, data: u64, change: u64) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let islands = data.div_ceil(ISLAND);
    let at = (islands / 2) * (size / islands.max(1));
    let mut noise = Noise(0x1234_5678_9abc_def1);
    let mut buf = vec![0u8; MIB as usize];
    let mut done = 0;
    while done < change {
        let n = MIB.min(change - done);
        noise.fill(&mut buf[..n as usize]);
        file.write_all_at(&buf[..n as usize], at + done)?;
        done += n;
    }
    file.sync_all()?;
    Ok(())
}

fn same_content(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (fa, fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let size = fa.metadata()?.len();
    if fb.metadata()?.len() != size {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 4 * MIB as usize], vec![0u8; 4 * MIB as usize]);
    let mut at = 0;
    while at < size {
        let n = (4 * MIB).min(size - at) as usize;
        fa.read_exact_at(&mut ba[..n], at)?;
        fb.read_exact_at(&mut bb[..n], at)?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}
