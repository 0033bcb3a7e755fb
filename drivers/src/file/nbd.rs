//! NBD exports of volumes through one long-lived `qemu-storage-daemon` per backend, driven
//! over QMP ([`qmp`](super::qmp)): an export is a `blockdev-add` (the volume's image, once
//! per volume) and a `block-export-add` (one per access mode, `writable` for rw only, so a
//! read-only attachment's export refuses writes); removing one is `block-export-del` and
//! `blockdev-del`. Starting a process per attachment was most of an attach's time.
//!
//! The daemon is started lazily (the first export) with `--daemonize`, so it outlives a
//! restart of the volume service the way a real storage target would; the service finds it
//! again through its QMP socket `.ember/nbd/qsd.sock`, and one whose socket is dead is
//! killed (by its pid file, checked against `/proc/<pid>/cmdline`) and started again, after
//! which `ensure_export` re-creates the exports. One NBD server listens on
//! `target_ip_address` at a port chosen once and kept in `.ember/nbd/qsd.json`, reused when
//! the daemon restarts so the connection info given out stays right. Export names are
//! `volume-<id>` (rw) and `volume-<id>.ro` (ro). The daemon stays when its last export goes
//! (an idle daemon costs a few MiB; starting one costs more than the rest of an attach).
//!
//! A second monitor, `.ember/nbd/qsd-tool.sock`, is free for tests and operators: QMP
//! serves one client per socket and the volume service keeps the first one open.
//!
//! A volume exported read-only first gets a read-only node; a read-write export of it later
//! reopens the node writable (`blockdev-reopen`), so rw and ro attachments coexist. NBD has
//! no initiator names, so an export admits anyone who reaches its address;
//! `target_ip_address` decides who can.

use std::ffi::OsString;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::error::{DriverError, Result};
use crate::file::image::{QemuImg, blocking, run_within};
use crate::file::paths::{DataDir, Kind};
use crate::file::qmp::{Qmp, QmpError};
use crate::file::{exists, read_json, remove, write_json};
use crate::types::{AccessMode, ConnectionInfo};

/// The daemon's program (Debian package qemu-utils).
const PROGRAM: &str = "qemu-storage-daemon";
/// How long the daemon may take to start and listen.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a removed export may take to let go of its node, or a killed daemon to exit.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Both modes, for the calls that act on every export of a volume.
const MODES: [AccessMode; 2] = [AccessMode::Rw, AccessMode::Ro];
/// Attempts at a free port, in case another process takes the one picked.
const PORT_ATTEMPTS: usize = 5;

/// Where the daemon's NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    host: String,
    port: u16,
}

impl Record {
    fn info(&self, volume_id: Option<&str>, export_name: &str, mode: AccessMode) -> ConnectionInfo {
        let mut data = Map::new();
        data.insert("host".to_owned(), Value::from(self.host.clone()));
        data.insert("port".to_owned(), Value::from(self.port));
        data.insert("export_name".to_owned(), Value::from(export_name));
        if let Some(id) = volume_id {
            data.insert("volume_id".to_owned(), Value::from(id));
        }
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let uri = format!("nbd://{host}:{}/{export_name}", self.port);
        data.insert("uri".to_owned(), Value::from(uri));
        data.insert("access_mode".to_owned(), Value::from(mode.as_str()));
        ConnectionInfo { driver_volume_type: "nbd".to_owned(), data }
    }
}

/// A running daemon and the session this process holds with it.
#[derive(Debug)]
struct Daemon {
    qmp: Qmp,
    record: Record,
}

/// The NBD exports of one backend: its daemon, reached lazily.
#[derive(Debug)]
pub(crate) struct NbdServer {
    host: String,
    daemon: Mutex<Option<Daemon>>,
}

impl NbdServer {
    /// Exports listening on `host` (Cinder's `target_ip_address`).
    pub(crate) fn new(host: &str) -> Self {
        NbdServer { host: host.to_owned(), daemon: Mutex::new(None) }
    }

    /// Exports a volume in `mode`, or answers with the export already there.
    pub(crate) async fn start(
        &self,
        dir: &DataDir,
        qemu: QemuImg,
        id: &str,
        mode: AccessMode,
    ) -> Result<ConnectionInfo> {
        let image = dir.image(Kind::Volume, id)?;
        if !exists(&image).await? {
            return Err(DriverError::volume_not_found(id));
        }
        let name = DataDir::nbd_export(id, mode)?;
        let node = node_name(id);
        let mut daemon = self.session(dir, true).await?.ok_or_else(|| stopped(id))?;
        let qmp = &mut daemon.qmp;
        let options = blockdev(&node, &image, qemu, mode == AccessMode::Ro)?;
        match qmp.execute("blockdev-add", options).await {
            Ok(_) => {}
            Err(e) if e.says("Duplicate nodes") => {
                // Opened read-only for a read-only export first: a writer needs it writable.
                if mode == AccessMode::Rw {
                    let options = json!({ "options": [blockdev(&node, &image, qemu, false)?] });
                    qmp.execute("blockdev-reopen", options).await.map_err(|e| refused(&e, id))?;
                }
            }
            Err(e) => return Err(refused(&e, id)),
        }
        let export = json!({
            "type": "nbd", "id": name, "node-name": node, "name": name,
            "writable": mode == AccessMode::Rw,
        });
        match qmp.execute("block-export-add", export).await {
            Ok(_) => {}
            Err(e) if e.says("already in use") => {}
            Err(e) => return Err(refused(&e, id)),
        }
        Ok(daemon.record.info(Some(id), &name, mode))
    }

    /// Removes a volume's exports, in both modes, and closes its image. A volume without an
    /// export, or a backend without a daemon, has nothing to remove.
    pub(crate) async fn stop(&self, dir: &DataDir, id: &str) -> Result<()> {
        let Some(mut daemon) = self.session(dir, false).await? else { return Ok(()) };
        let qmp = &mut daemon.qmp;
        for mode in MODES {
            let name = DataDir::nbd_export(id, mode)?;
            // `hard` closes the connections still open instead of waiting for them.
            match qmp.execute("block-export-del", json!({ "id": name, "mode": "hard" })).await {
                Ok(_) => {}
                Err(e) if e.says("not found") => {}
                Err(e) => return Err(refused(&e, id)),
            }
        }
        delete_node(qmp, &node_name(id), id).await
    }

    /// Serves the raw file `path` (a backup's export or a restore's target) as export
    /// `backup-<hash of path>`, read-only unless `writable`, or answers with the export
    /// already there. A read-only node does not lock the file: a forced backup of an
    /// attached volume reads the image its attachment's node holds open.
    pub(crate) async fn serve_file(
        &self,
        dir: &DataDir,
        qemu: QemuImg,
        path: &Path,
        writable: bool,
    ) -> Result<ConnectionInfo> {
        let (name, node) = file_export(path);
        let mode = if writable { AccessMode::Rw } else { AccessMode::Ro };
        let mut daemon = self.session(dir, true).await?.ok_or_else(|| stopped(&name))?;
        let qmp = &mut daemon.qmp;
        let raw = QemuImg { format: crate::file::image::ImageFormat::Raw, ..qemu };
        let mut options = blockdev(&node, path, raw, !writable)?;
        if !writable {
            options["file"]["locking"] = json!("off");
        }
        match qmp.execute("blockdev-add", options).await {
            Ok(_) => {}
            Err(e) if e.says("Duplicate nodes") => {}
            Err(e) => return Err(refused(&e, &name)),
        }
        let export =
            json!({ "type": "nbd", "id": name, "node-name": node, "name": name, "writable": writable });
        match qmp.execute("block-export-add", export).await {
            Ok(_) => {}
            Err(e) if e.says("already in use") => {}
            Err(e) => return Err(refused(&e, &name)),
        }
        Ok(daemon.record.info(None, &name, mode))
    }

    /// Stops serving the raw file `path` (closing its connections) and closes its node;
    /// nothing served is nothing to stop.
    pub(crate) async fn unserve_file(&self, dir: &DataDir, path: &Path) -> Result<()> {
        let (name, node) = file_export(path);
        let Some(mut daemon) = self.session(dir, false).await? else { return Ok(()) };
        let qmp = &mut daemon.qmp;
        match qmp.execute("block-export-del", json!({ "id": name, "mode": "hard" })).await {
            Ok(_) => {}
            Err(e) if e.says("not found") => {}
            Err(e) => return Err(refused(&e, &name)),
        }
        delete_node(qmp, &node, &name).await
    }

    /// The ids of the volumes with a live export, in any mode.
    pub(crate) async fn list(&self, dir: &DataDir) -> Result<Vec<String>> {
        let Some(mut daemon) = self.session(dir, false).await? else { return Ok(Vec::new()) };
        let exports = daemon.qmp.execute("query-block-exports", json!({})).await;
        let mut ids = export_ids(&exports.map_err(|e| refused(&e, "*"))?);
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Whether the volume has a live export in any mode.
    pub(crate) async fn is_exported(&self, dir: &DataDir, id: &str) -> Result<bool> {
        Ok(self.list(dir).await?.iter().any(|v| v == id))
    }

    /// The session with the backend's daemon: the one held, if it still answers, or a new
    /// one with the daemon found through its socket, or (with `start`) a daemon started.
    /// `None` when no daemon runs and `start` is false.
    async fn session(&self, dir: &DataDir, start: bool) -> Result<Option<MappedMutexGuard<'_, Daemon>>> {
        let mut slot = self.daemon.lock().await;
        if let Some(daemon) = slot.as_mut()
            && daemon.qmp.execute("query-version", json!({})).await.is_err()
        {
            tracing::warn!(dir = %dir.root().display(), "the NBD export daemon stopped answering");
            *slot = None;
        }
        if slot.is_none() {
            *slot = match self.reach(dir).await? {
                Some(daemon) => Some(daemon),
                None if start => Some(self.launch(dir).await?),
                None => None,
            };
        }
        Ok(MutexGuard::try_map(slot, Option::as_mut).ok())
    }

    /// The daemon a previous run started, if it is alive and serves the configured address.
    async fn reach(&self, dir: &DataDir) -> Result<Option<Daemon>> {
        let Some(record) = read_json::<Record>(&record_path(dir)).await? else { return Ok(None) };
        let mut qmp = match Qmp::connect(&socket_path(dir)).await {
            Ok(qmp) => qmp,
            Err(QmpError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(DriverError::Busy(format!(
                    "the NBD export daemon of {} answers another client: {e}",
                    dir.root().display()
                )));
            }
            Err(_) => return Ok(None),
        };
        if record.host != self.host {
            // target_ip_address changed: a new daemon listens on the new one.
            let _ = qmp.execute("quit", json!({})).await;
            kill_leftover(dir).await?;
            return Ok(None);
        }
        tracing::info!(dir = %dir.root().display(), port = record.port, "NBD export daemon found");
        Ok(Some(Daemon { qmp, record }))
    }

    /// Starts the daemon (after killing one whose socket is dead), on the port it had
    /// before if that is still free.
    async fn launch(&self, dir: &DataDir) -> Result<Daemon> {
        kill_leftover(dir).await?;
        for path in [socket_path(dir), tool_socket_path(dir), pid_path(dir)] {
            remove(&path).await?;
        }
        let previous = read_json::<Record>(&record_path(dir)).await?.filter(|r| r.host == self.host);
        let mut port = match previous {
            Some(record) => record.port,
            None => free_port(&self.host).await?,
        };
        for _ in 0..PORT_ATTEMPTS {
            let record = Record { host: self.host.clone(), port };
            write_json(&record_path(dir), &record).await?;
            match run_within(PROGRAM, &daemon_args(dir, &record), START_DEADLINE).await {
                Ok(_) => {
                    let qmp = Qmp::connect(&socket_path(dir)).await.map_err(|e| {
                        DriverError::Backend(format!("the NBD export daemon started but QMP fails: {e}"))
                    })?;
                    tracing::info!(dir = %dir.root().display(), port, "NBD export daemon started");
                    return Ok(Daemon { qmp, record });
                }
                Err(DriverError::Command { stderr, .. }) if stderr.contains("in use") => {
                    port = free_port(&self.host).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(DriverError::Backend(format!("no free port for the NBD export daemon on {}", self.host)))
    }
}

/// The daemon's QMP socket held by the volume service.
fn socket_path(dir: &DataDir) -> PathBuf {
    dir.nbd_dir().join("qsd.sock")
}

/// The daemon's second QMP socket, for tests and operators.
fn tool_socket_path(dir: &DataDir) -> PathBuf {
    dir.nbd_dir().join("qsd-tool.sock")
}

fn pid_path(dir: &DataDir) -> PathBuf {
    dir.nbd_dir().join("qsd.pid")
}

fn record_path(dir: &DataDir) -> PathBuf {
    dir.nbd_dir().join("qsd.json")
}

/// Closes node `node` once no export holds it (an export being torn down still holds it
/// for a moment); a missing node is closed already.
async fn delete_node(qmp: &mut Qmp, node: &str, what: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
    loop {
        match qmp.execute("blockdev-del", json!({ "node-name": node })).await {
            Ok(_) => return Ok(()),
            Err(e) if e.says("Failed to find node") => return Ok(()),
            Err(QmpError::Refused { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(refused(&e, what)),
        }
    }
}

/// A stable 120-bit hash of `key` as 30 hex digits (FNV-1a, two seeds).
fn hash120(key: &str) -> String {
    let fnv =
        |seed: u64| key.bytes().fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{:016x}{:014x}", fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142) >> 8)
}

/// A node name for a volume's image: qemu allows 31 characters, fewer than `v` and an id,
/// so it is a stable hash of the id.
fn node_name(id: &str) -> String {
    format!("v{}", hash120(id))
}

/// The export name and node name serving the raw file `path` for a backup or restore:
/// `backup-<hash>` and `b<hash>` (never a volume's `volume-` name, so the volumes' export
/// listing leaves them out).
fn file_export(path: &Path) -> (String, String) {
    let hash = hash120(&path.to_string_lossy());
    (format!("{BACKUP_EXPORT_PREFIX}{hash}"), format!("b{hash}"))
}

/// The prefix of the exports serving a backup's or restore's raw file.
const BACKUP_EXPORT_PREFIX: &str = "backup-";

/// `blockdev-add`'s (and `blockdev-reopen`'s) options for a volume's image.
fn blockdev(node: &str, image: &Path, qemu: QemuImg, read_only: bool) -> Result<Value> {
    let filename = image
        .to_str()
        .ok_or_else(|| DriverError::InvalidInput(format!("{} is not UTF-8", image.display())))?;
    Ok(json!({
        "node-name": node,
        "driver": qemu.format.as_str(),
        "read-only": read_only,
        "discard": "unmap",
        "cache": { "direct": qemu.direct_io, "no-flush": false },
        "file": { "driver": "file", "filename": filename },
    }))
}

/// The volume ids in `query-block-exports`'s answer (exports being torn down left out).
fn export_ids(exports: &Value) -> Vec<String> {
    let Some(list) = exports.as_array() else { return Vec::new() };
    list.iter()
        .filter(|e| e["shutting-down"] != true)
        .filter_map(|e| e["id"].as_str()?.strip_prefix("volume-"))
        .map(|name| name.strip_suffix(".ro").unwrap_or(name).to_owned())
        .collect()
}

/// A refusal of the daemon as the driver's error: a held image lock is `Busy`.
fn refused(error: &QmpError, id: &str) -> DriverError {
    match error {
        QmpError::Refused { desc, .. } if desc.contains("lock") => {
            DriverError::Busy(format!("volume {id} is in use: {desc}"))
        }
        QmpError::Refused { .. } => DriverError::Backend(format!("NBD export of volume {id}: {error}")),
        QmpError::Io(e) => DriverError::Backend(format!("the NBD export daemon is unreachable: {e}")),
    }
}

fn stopped(id: &str) -> DriverError {
    DriverError::Backend(format!("no NBD export daemon to export volume {id}"))
}

/// qemu's option syntax doubles a comma inside a value.
fn escape(value: &Path) -> OsString {
    let text = std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str());
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    std::os::unix::ffi::OsStringExt::from_vec(out)
}

fn daemon_args(dir: &DataDir, record: &Record) -> Vec<OsString> {
    let chardev = |path: PathBuf, id: &str| {
        let mut arg = OsString::from("socket,path=");
        arg.push(escape(&path));
        arg.push(format!(",server=on,wait=off,id={id}"));
        arg
    };
    vec![
        "--chardev".into(),
        chardev(socket_path(dir), "ember"),
        "--monitor".into(),
        "chardev=ember".into(),
        "--chardev".into(),
        chardev(tool_socket_path(dir), "tool"),
        "--monitor".into(),
        "chardev=tool".into(),
        "--nbd-server".into(),
        format!("addr.type=inet,addr.host={},addr.port={}", record.host.replace(',', ",,"), record.port)
            .into(),
        "--daemonize".into(),
        "--pidfile".into(),
        escape(&pid_path(dir)),
    ]
}

/// The pid of the daemon of the NBD directory `nbd_dir`, if one is alive: its pid file
/// names a `qemu-storage-daemon` whose command line holds this directory's socket (so a
/// reused pid is never signalled). Blocking.
fn daemon_pid(nbd_dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(nbd_dir.join("qsd.pid")).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let socket = nbd_dir.join("qsd.sock");
    let ours = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg.windows(socket.as_os_str().len()).any(|w| w == socket.as_os_str().as_encoded_bytes()));
    let is_qsd = cmdline.split(|b| *b == 0).next().is_some_and(|a| a.ends_with(PROGRAM.as_bytes()));
    (ours && is_qsd).then_some(pid)
}

/// SIGKILLs the daemon of `nbd_dir` and waits (up to a deadline) until it is gone; whether
/// one was running. Blocking.
fn kill_and_wait(nbd_dir: &Path) -> std::io::Result<bool> {
    let Some(pid) = daemon_pid(nbd_dir) else { return Ok(false) };
    if let Some(raw) = rustix::process::Pid::from_raw(pid) {
        match rustix::process::kill_process(raw, rustix::process::Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = std::time::Instant::now() + STOP_DEADLINE;
    // Reaped by init, or a zombie (an empty command line): either way it no longer serves.
    while std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()) {
        if std::time::Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("pid {pid} survives SIGKILL"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(true)
}

/// Kills a daemon whose socket is dead (hung, or serving another address).
async fn kill_leftover(dir: &DataDir) -> Result<()> {
    let nbd_dir = dir.nbd_dir();
    blocking("cannot stop the NBD export daemon of", &nbd_dir.clone(), move || kill_and_wait(&nbd_dir))
        .await
        .map(drop)
}

/// Kills the NBD export daemon of the file backend whose data directory is `volume_dir`,
/// if one runs, and waits until it is gone; whether one ran. The daemon outlives the volume
/// service on purpose, so tests and tools that own a data directory call this when they
/// drop it. Blocking.
pub fn kill_daemon(volume_dir: &Path) -> std::io::Result<bool> {
    kill_and_wait(&volume_dir.join(".ember").join("nbd"))
}

/// [`kill_daemon`] for every file backend data directory found under `root` (a few
/// levels down): for tests and benchmarks that drop a whole Ember data directory.
pub fn kill_daemons_under(root: &Path) {
    fn walk(dir: &Path, depth: usize) {
        if dir.join(".ember").join("nbd").is_dir() {
            let _ = kill_daemon(dir);
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            if depth > 0 && entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), depth - 1);
            }
        }
    }
    walk(root, 4);
}

/// The ids of the volumes the NBD export daemon of `volume_dir` exports now, asked through
/// its second QMP socket (the volume service holds the first): for tests, which cannot
/// reach a volume service's `list_exports`. No daemon, no export. Blocking.
pub fn exported_volumes(volume_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut ids = export_ids(&query_exports(volume_dir)?);
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The names of the exports serving a backup's or restore's image that the NBD export
/// daemon of `volume_dir` has now (for tests: none should outlive its backup). Blocking.
pub fn exported_backup_images(volume_dir: &Path) -> std::io::Result<Vec<String>> {
    let exports = query_exports(volume_dir)?;
    let Some(list) = exports.as_array() else { return Ok(Vec::new()) };
    Ok(list
        .iter()
        .filter(|e| e["shutting-down"] != true)
        .filter_map(|e| e["id"].as_str())
        .filter(|id| id.starts_with(BACKUP_EXPORT_PREFIX))
        .map(str::to_owned)
        .collect())
}

/// `query-block-exports`' answer from the daemon of `volume_dir`, through its second QMP
/// socket; no daemon answers an empty list. Blocking.
fn query_exports(volume_dir: &Path) -> std::io::Result<Value> {
    let nbd_dir = volume_dir.join(".ember").join("nbd");
    if daemon_pid(&nbd_dir).is_none() {
        return Ok(Value::Array(Vec::new()));
    }
    let stream = std::os::unix::net::UnixStream::connect(nbd_dir.join("qsd-tool.sock"))?;
    stream.set_read_timeout(Some(STOP_DEADLINE))?;
    let mut writer = stream.try_clone()?;
    let mut lines = std::io::BufReader::new(stream).lines();
    let mut next = || -> std::io::Result<Value> {
        let line = lines.next().ok_or_else(|| std::io::Error::other("QMP closed"))??;
        serde_json::from_str(&line).map_err(std::io::Error::other)
    };
    next()?;
    writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-block-exports\"}\n")?;
    let mut answers: Vec<Value> = Vec::new();
    while answers.len() < 2 {
        let message = next()?;
        if message.get("event").is_none() {
            answers.push(message);
        }
    }
    Ok(answers[1]["return"].take())
}

/// A port free right now on `host`; the daemon may still lose it to a race, hence retries.
async fn free_port(host: &str) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind((host, 0))
        .await
        .map_err(|e| DriverError::io("cannot bind", host, e))?;
    let port = listener.local_addr().map_err(|e| DriverError::io("cannot bind", host, e))?.port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_fit_qemu_and_differ() {
        let a = node_name("3f8c2a52-8c5e-4b8e-9a0e-6f1f4b1f0c11");
        let b = node_name("3f8c2a52-8c5e-4b8e-9a0e-6f1f4b1f0c12");
        assert_eq!(a.len(), 31);
        assert!(a.starts_with('v') && a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(a, node_name("3f8c2a52-8c5e-4b8e-9a0e-6f1f4b1f0c11"), "stable across runs");
    }

    #[test]
    fn exports_list_as_volume_ids() {
        let answer = json!([
            { "id": "volume-a", "node-name": "v1", "shutting-down": false, "type": "nbd" },
            { "id": "volume-a.ro", "node-name": "v1", "shutting-down": false, "type": "nbd" },
            { "id": "volume-b", "node-name": "v2", "shutting-down": true, "type": "nbd" },
            { "id": "other", "node-name": "x", "shutting-down": false, "type": "nbd" },
        ]);
        assert_eq!(export_ids(&answer), ["a", "a"]);
        assert!(export_ids(&json!({})).is_empty());
    }

    #[test]
    fn commas_in_option_values_are_doubled() {
        assert_eq!(escape(Path::new("/a,b/c")), OsString::from("/a,,b/c"));
    }
}
