//! NBD exports of volumes: one `qemu-nbd` daemon per exported volume and access mode, on
//! a free TCP port; the read-only one runs with `--read-only`, so it refuses writes.
//!
//! The daemon is started with `--fork --persistent --pid-file`, so it outlives a restart
//! of the volume service the way a real storage target would, and is found again by its
//! pid file (checked against `/proc/<pid>/cmdline`, so a reused pid is never signalled).
//! `.ember/nbd/volume-<id>[.ro].json` records the address, written before the daemon
//! starts. NBD has no initiator names, so an export admits anyone who reaches its address;
//! `target_ip_address` decides who can.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{DriverError, Result};
use crate::file::image::{QemuImg, blocking, run_within};
use crate::file::paths::{DataDir, Kind};
use crate::file::{exists, read_json, remove, write_json};
use crate::types::{AccessMode, ConnectionInfo};

/// How long a stopping daemon may take to exit.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How long `qemu-nbd --fork` may take to open the image and listen.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Both modes, for the calls that act on every export of a volume.
const MODES: [AccessMode; 2] = [AccessMode::Rw, AccessMode::Ro];
/// Attempts at a free port, in case another process takes the one picked.
const PORT_ATTEMPTS: usize = 5;

/// Where an export listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    host: String,
    port: u16,
    export_name: String,
}

impl Record {
    fn info(&self, volume_id: &str, mode: AccessMode) -> ConnectionInfo {
        let mut data = Map::new();
        data.insert("host".to_owned(), Value::from(self.host.clone()));
        data.insert("port".to_owned(), Value::from(self.port));
        data.insert("export_name".to_owned(), Value::from(self.export_name.clone()));
        data.insert("volume_id".to_owned(), Value::from(volume_id));
        let uri = format!("nbd://{}:{}/{}", self.host, self.port, self.export_name);
        data.insert("uri".to_owned(), Value::from(uri));
        data.insert("access_mode".to_owned(), Value::from(mode.as_str()));
        ConnectionInfo { driver_volume_type: "nbd".to_owned(), data }
    }
}

/// Exports a volume in `mode`, or returns the export already running.
pub(crate) async fn start(
    dir: &DataDir,
    qemu: QemuImg,
    host: &str,
    id: &str,
    mode: AccessMode,
) -> Result<ConnectionInfo> {
    let image = dir.image(Kind::Volume, id)?;
    if !exists(&image).await? {
        return Err(DriverError::volume_not_found(id));
    }
    let (record_path, pid_path) = (dir.nbd_record(id, mode)?, dir.nbd_pid(id, mode)?);
    if running(&pid_path, &image).await?.is_some() {
        if let Some(record) = read_json::<Record>(&record_path).await? {
            return Ok(record.info(id, mode));
        }
        stop_mode(dir, id, mode).await?;
    }
    let export_name = DataDir::name(Kind::Volume, id)?;
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port(host).await?;
        let record = Record { host: host.to_owned(), port, export_name: export_name.clone() };
        write_json(&record_path, &record).await?;
        match run_within("qemu-nbd", &daemon_args(qemu, &record, mode, &pid_path, &image), START_DEADLINE)
            .await
        {
            Ok(_) => return Ok(record.info(id, mode)),
            Err(DriverError::Command { stderr, .. }) if stderr.contains("in use") => continue,
            Err(e) => {
                remove(&record_path).await?;
                return Err(e);
            }
        }
    }
    remove(&record_path).await?;
    Err(DriverError::Backend(format!("no free port for an NBD export on {host}")))
}

/// Stops a volume's exports, if any, in both modes.
pub(crate) async fn stop(dir: &DataDir, id: &str) -> Result<()> {
    for mode in MODES {
        stop_mode(dir, id, mode).await?;
    }
    Ok(())
}

/// Whether the volume has a live export in any mode.
pub(crate) async fn is_exported(dir: &DataDir, id: &str) -> Result<bool> {
    let image = dir.image(Kind::Volume, id)?;
    for mode in MODES {
        if running(&dir.nbd_pid(id, mode)?, &image).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Stops a volume's export in one mode, if any, and waits for the daemon to exit
/// (releasing the image's lock) before removing its records.
async fn stop_mode(dir: &DataDir, id: &str, mode: AccessMode) -> Result<()> {
    let image = dir.image(Kind::Volume, id)?;
    let pid_path = dir.nbd_pid(id, mode)?;
    let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
    let mut signalled = 0u32;
    while let Some(pid) = running(&pid_path, &image).await? {
        // qemu-nbd can lose a SIGTERM that lands while it is still starting (it sets its
        // state to running after installing the handler), so the signal is repeated.
        if signalled.is_multiple_of(20) {
            terminate(pid, &image)?;
        }
        signalled += 1;
        if tokio::time::Instant::now() >= deadline {
            return Err(DriverError::Busy(format!("the NBD export of volume {id} does not stop")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    remove(&pid_path).await?;
    remove(&dir.nbd_record(id, mode)?).await
}

/// The ids of the volumes whose export daemon is alive.
pub(crate) async fn list(dir: &DataDir) -> Result<Vec<String>> {
    let nbd_dir = dir.nbd_dir();
    let context = nbd_dir.clone();
    let names = blocking("cannot list", &context, move || {
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(&nbd_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_prefix("volume-").and_then(|n| n.strip_suffix(".pid")) else {
                continue;
            };
            // Ids have no dot, so `.ro` can only be the mode's suffix.
            names.push(stem.strip_suffix(".ro").unwrap_or(stem).to_owned());
        }
        Ok(names)
    })
    .await?;
    let mut ids = Vec::new();
    for id in names {
        if is_exported(dir, &id).await? {
            ids.push(id);
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Sends SIGTERM to a daemon found alive a moment ago.
fn terminate(pid: i32, image: &Path) -> Result<()> {
    let raw = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| DriverError::Backend(format!("invalid pid {pid}")))?;
    match rustix::process::kill_process(raw, rustix::process::Signal::TERM) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(DriverError::io("cannot stop the NBD export of", image, e.into())),
    }
}

fn daemon_args(
    qemu: QemuImg,
    record: &Record,
    mode: AccessMode,
    pid_path: &Path,
    image: &Path,
) -> Vec<OsString> {
    let cache = if qemu.direct_io { "none" } else { "writeback" };
    let mut pid_file = OsString::from("--pid-file=");
    pid_file.push(pid_path);
    let mut args: Vec<OsString> = [
        "--fork".to_owned(),
        "--persistent".to_owned(),
        "--shared=8".to_owned(),
        "--discard=unmap".to_owned(),
        format!("--cache={cache}"),
        format!("--format={}", qemu.format.as_str()),
        format!("--bind={}", record.host),
        format!("--port={}", record.port),
        format!("--export-name={}", record.export_name),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    if mode == AccessMode::Ro {
        args.push("--read-only".into());
    }
    // The image goes as its own argument, byte for byte, so `running` can find it.
    args.extend([pid_file, image.as_os_str().to_owned()]);
    args
}

/// The pid of the daemon exporting `image`, if one is alive.
async fn running(pid_path: &Path, image: &Path) -> Result<Option<i32>> {
    let (pid_path, image): (PathBuf, PathBuf) = (pid_path.to_owned(), image.to_owned());
    let context = pid_path.clone();
    blocking("cannot read", &context, move || {
        let text = match std::fs::read_to_string(&pid_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(pid) = text.trim().parse::<i32>() else { return Ok(None) };
        // A zombie or another program with this pid has a different (or empty) command line.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_nbd = args.first().is_some_and(|a| a.ends_with(b"qemu-nbd"));
        let ours = args.iter().any(|a| *a == image.as_os_str().as_encoded_bytes());
        Ok((is_nbd && ours).then_some(pid))
    })
    .await
}

/// A port free right now on `host`; the daemon may still lose it to a race, hence retries.
async fn free_port(host: &str) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind((host, 0))
        .await
        .map_err(|e| DriverError::io("cannot bind", host, e))?;
    let port = listener.local_addr().map_err(|e| DriverError::io("cannot bind", host, e))?.port();
    Ok(port)
}
