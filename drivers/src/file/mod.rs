//! The `file` driver: volumes as qcow2 (or raw) files in one directory, a local disk or an
//! NFS mount as in Cinder's NFS driver, handled through `qemu-img` and exported over NBD
//! (one `qemu-storage-daemon` per backend) or iSCSI (tgt, raw volumes only), as the backend's `target_protocol` says.
//!
//! Layout and rules:
//! - `volume-<id>` and `snapshot-<id>` are complete images; every change is made in
//!   `<name>.tmp` and renamed into place, so a crash leaves at most a `.tmp` to redo.
//! - A snapshot is a full, flattened copy of its volume (`qemu-img convert`, O_DIRECT):
//!   volumes never depend on snapshots they were snapshotted to, and a snapshot never
//!   depends on its volume, so either can be deleted first.
//! - A volume from a snapshot is a qcow2 overlay whose backing file is the snapshot
//!   (instant, thin). Before a snapshot is deleted its dependents are flattened
//!   (`qemu-img rebase -b ""`), so a backing file is never removed under an overlay.
//!   Only snapshots are ever backing files, so chains are at most two deep.
//! - A clone never uses its (writable) source as a backing file. A clone of an overlay
//!   is a new overlay on the same snapshot holding a copy of the source's own clusters
//!   (`qemu-img convert -B`); a clone of a standalone volume is a full copy.
//! - In raw format every copy is a full sparse copy; nothing has a backing file.
//! - A blank qcow2 volume is written natively ([`qcow2`]), byte for byte what
//!   `qemu-img create` writes: spawning qemu-img was most of a create's time.

mod backup;
mod exports;
mod image;
mod iscsi;
mod nbd;
mod paths;
mod qcow2;
mod qmp;
mod snapshots;
mod stats;
mod tgt;
mod tgt_ipc;
mod volumes;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use ember_common::capabilities::{BackendCapabilities, OverSubscription};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::GIB;
use crate::driver::VolumeDriver;
use crate::error::{DriverError, Result};
use crate::locks::{KeyGuard, KeyedLocks};
use crate::types::{
    AccessMode, BackupSource, ConnectionInfo, Connector, DriverSnapshot, DriverVolume, ModelUpdate, RawExport,
};

pub use image::ImageFormat;
use image::{QemuImg, blocking};
use iscsi::IscsiTargets;
use nbd::NbdServer;
pub use nbd::{
    exported_backup_images as nbd_exported_backup_images, exported_volumes as nbd_exported_volumes,
    kill_daemon as kill_nbd_daemon, kill_daemons_under as kill_nbd_daemons_under,
};
use paths::DataDir;
use tgt::Tgtadm;

/// Settings of a file backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileOptions {
    /// `volume_backend_name` in stats.
    pub backend_name: String,
    /// The one pool's name.
    pub pool_name: String,
    /// The directory holding the images (created if missing).
    pub data_dir: PathBuf,
    /// The images' format; changing it on a directory with volumes is not supported.
    pub format: ImageFormat,
    /// Whether bulk copies use O_DIRECT: `auto` probes the file system at setup.
    pub direct_io: DirectIo,
    /// How volumes are exported to attachments: `nbd` or `iscsi` (Cinder's
    /// `target_protocol`).
    pub target_protocol: TargetProtocol,
    /// iSCSI: the prefix of target names (Cinder's `target_prefix`).
    pub target_prefix: String,
    /// The address NBD exports listen on, and the iSCSI portal's address given to
    /// initiators (Cinder's `target_ip_address`).
    pub target_ip_address: String,
    /// iSCSI: the portal's port (Cinder's `target_port`). The NBD daemon takes a free port.
    pub target_port: u16,
    /// iSCSI: tgtd's control port, `tgtadm -C` (0 is tgtd's default, the system tgt service).
    pub tgt_control_port: u16,
    pub reserved_percentage: f64,
    /// The ratio reported for the pool: a number or `auto`; `None` reports none, so the
    /// scheduler's configured `max_over_subscription_ratio` applies.
    pub max_over_subscription_ratio: Option<OverSubscription>,
    /// How long one `qemu-img` call may run before it is killed and the operation fails
    /// (`None`: no limit).
    pub qemu_img_timeout: Option<Duration>,
    /// How long one `tgtadm` call may run before it is killed.
    pub tgtadm_timeout: Duration,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            backend_name: "file".to_owned(),
            pool_name: "file".to_owned(),
            data_dir: PathBuf::from("/var/lib/ember/volumes"),
            format: ImageFormat::Qcow2,
            direct_io: DirectIo::Auto,
            target_protocol: TargetProtocol::Nbd,
            target_prefix: "iqn.2010-10.org.openstack:".to_owned(),
            target_ip_address: "127.0.0.1".to_owned(),
            target_port: 3260,
            tgt_control_port: 0,
            reserved_percentage: 0.0,
            max_over_subscription_ratio: None,
            qemu_img_timeout: Some(Duration::from_secs(3600)),
            tgtadm_timeout: Duration::from_secs(30),
        }
    }
}

/// The protocol attachments reach a backend's volumes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetProtocol {
    /// One `qemu-storage-daemon` per backend, an export per volume and mode (Debian
    /// package qemu-utils).
    #[default]
    Nbd,
    /// One tgt target per exported volume and mode, with CHAP and an initiator ACL
    /// (Debian package tgt, its tgtd running); raw volumes only.
    Iscsi,
}

impl TargetProtocol {
    /// The `storage_protocol` the backend reports, in Cinder's spelling.
    pub fn storage_protocol(self) -> &'static str {
        match self {
            TargetProtocol::Nbd => "nbd",
            TargetProtocol::Iscsi => "iSCSI",
        }
    }
}

/// Whether to bypass the page cache on bulk copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectIo {
    #[default]
    Auto,
    On,
    Off,
}

/// What `do_setup` establishes.
#[derive(Debug)]
struct Setup {
    dir: DataDir,
    qemu: QemuImg,
}

/// The file driver.
#[derive(Debug)]
pub struct FileDriver {
    options: FileOptions,
    setup: OnceLock<Setup>,
    locks: KeyedLocks,
    stats: Mutex<Option<BackendCapabilities>>,
    iscsi: IscsiTargets,
    nbd: NbdServer,
}

impl FileDriver {
    pub fn new(options: FileOptions) -> Self {
        let ip = &options.target_ip_address;
        let host = if ip.contains(':') { format!("[{ip}]") } else { ip.clone() };
        let iscsi = IscsiTargets {
            tgt: Tgtadm { control_port: options.tgt_control_port, timeout: options.tgtadm_timeout },
            prefix: options.target_prefix.clone(),
            portal: format!("{host}:{}", options.target_port),
            create: tokio::sync::Mutex::new(()),
        };
        let nbd = NbdServer::new(&options.target_ip_address);
        FileDriver {
            nbd,
            options,
            setup: OnceLock::new(),
            locks: KeyedLocks::default(),
            stats: Mutex::new(None),
            iscsi,
        }
    }

    /// The data directory, as configured.
    pub fn data_dir(&self) -> &Path {
        &self.options.data_dir
    }

    /// Whether bulk copies use O_DIRECT (known after `do_setup`).
    pub fn direct_io(&self) -> Option<bool> {
        self.setup.get().map(|s| s.qemu.direct_io)
    }

    fn setup(&self) -> Result<&Setup> {
        self.setup.get().ok_or_else(|| DriverError::NotInitialized("do_setup has not run".to_owned()))
    }

    fn model_update(&self, setup: &Setup) -> ModelUpdate {
        ModelUpdate { provider_location: Some(setup.dir.root().display().to_string()), provider_id: None }
    }

    /// The exclusive lock of a volume, for calls that change it.
    async fn lock_volume(&self, id: &str) -> KeyGuard<'_> {
        self.locks.write(format!("volume-{id}")).await
    }

    /// A shared lock of a volume, for calls that only read it.
    async fn read_volume(&self, id: &str) -> KeyGuard<'_> {
        self.locks.read(format!("volume-{id}")).await
    }

    /// The exclusive lock of a snapshot, for its creation and deletion.
    async fn lock_snapshot(&self, id: &str) -> KeyGuard<'_> {
        self.locks.write(format!("snapshot-{id}")).await
    }

    /// A shared lock of a snapshot, for volumes made from it.
    async fn read_snapshot(&self, id: &str) -> KeyGuard<'_> {
        self.locks.read(format!("snapshot-{id}")).await
    }
}

/// A size in GiB as bytes, refusing zero and overflow.
fn bytes(size_gb: u64) -> Result<u64> {
    match size_gb.checked_mul(GIB) {
        Some(b) if b > 0 => Ok(b),
        _ => Err(DriverError::InvalidInput(format!("invalid size {size_gb} GiB"))),
    }
}

/// Whether a regular file exists at `path`.
async fn exists(path: &Path) -> Result<bool> {
    let p = path.to_owned();
    blocking("cannot stat", path, move || paths::is_file(&p)).await
}

/// Removes a file if present.
async fn remove(path: &Path) -> Result<()> {
    let p = path.to_owned();
    blocking("cannot remove", path, move || paths::remove_if_exists(&p)).await
}

/// Reads a driver record (JSON); a missing or unreadable one is `None`, to be rewritten.
async fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let p = path.to_owned();
    let text = blocking("cannot read", path, move || match std::fs::read(&p) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    })
    .await?;
    Ok(text.and_then(|t| serde_json::from_slice(&t).ok()))
}

/// Writes a driver record (JSON) durably, through a `.tmp` renamed into place. Records
/// readable by the owner only: some hold CHAP secrets.
async fn write_json<T: Serialize>(path: &Path, record: &T) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let text = serde_json::to_vec(record).map_err(|e| DriverError::Backend(e.to_string()))?;
    let (p, tmp) = (path.to_owned(), path.with_extension("json.tmp"));
    blocking("cannot write", path, move || {
        // A leftover `.tmp` would keep its own mode.
        paths::remove_if_exists(&tmp)?;
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(&text)?;
        drop(file);
        paths::publish(&tmp, &p)
    })
    .await
}

/// Renames a finished `.tmp` into place durably.
/// Removes `tmp` when building it failed (a full disk, a killed qemu-img), so a failure
/// leaves no partial file behind; the error is the build's.
async fn discard_on_error<T>(tmp: &Path, built: Result<T>) -> Result<T> {
    if built.is_err() {
        let _ = remove(tmp).await;
    }
    built
}

async fn publish(tmp: &Path, target: &Path) -> Result<()> {
    let (t, p) = (tmp.to_owned(), target.to_owned());
    blocking("cannot publish", target, move || paths::publish(&t, &p)).await
}

#[async_trait]
impl VolumeDriver for FileDriver {
    fn backend_name(&self) -> &str {
        &self.options.backend_name
    }

    async fn do_setup(&self) -> Result<()> {
        if self.setup.get().is_some() {
            return Ok(());
        }
        let root = self.options.data_dir.clone();
        let mode = self.options.direct_io;
        let (dir, probed) = blocking("cannot set up", &self.options.data_dir, move || {
            let dir = DataDir::open(&root)?;
            let probed = image::probe_direct_io(&dir.exports_dir())?;
            Ok((dir, probed))
        })
        .await?;
        let direct_io = match mode {
            DirectIo::Auto => probed,
            DirectIo::On => true,
            DirectIo::Off => false,
        };
        tracing::info!(dir = %dir.root().display(), direct_io, format = self.options.format.as_str(), "file backend ready");
        let qemu = QemuImg { format: self.options.format, direct_io, timeout: self.options.qemu_img_timeout };
        let _ = self.setup.set(Setup { dir, qemu });
        Ok(())
    }

    async fn check_for_setup_error(&self) -> Result<()> {
        self.setup()?;
        image::run("qemu-img", &["--version"]).await?;
        self.check_target().await
    }

    async fn create_volume(&self, volume: &DriverVolume) -> Result<ModelUpdate> {
        self.create_blank(volume).await
    }

    async fn delete_volume(&self, volume: &DriverVolume) -> Result<()> {
        self.remove_volume(volume).await
    }

    async fn create_snapshot(&self, snapshot: &DriverSnapshot) -> Result<ModelUpdate> {
        self.copy_to_snapshot(snapshot).await
    }

    async fn delete_snapshot(&self, snapshot: &DriverSnapshot) -> Result<()> {
        self.remove_snapshot(snapshot).await
    }

    async fn create_volume_from_snapshot(
        &self,
        volume: &DriverVolume,
        snapshot: &DriverSnapshot,
    ) -> Result<ModelUpdate> {
        self.overlay_on_snapshot(volume, snapshot).await
    }

    async fn create_cloned_volume(
        &self,
        volume: &DriverVolume,
        source: &DriverVolume,
    ) -> Result<ModelUpdate> {
        self.copy_volume(volume, source).await
    }

    async fn extend_volume(&self, volume: &DriverVolume, new_size_gb: u64) -> Result<()> {
        self.grow(volume, new_size_gb).await
    }

    async fn get_volume_stats(&self, refresh: bool) -> Result<BackendCapabilities> {
        if !refresh && let Some(cached) = self.stats.lock().clone() {
            return Ok(cached);
        }
        let report = self.measure().await?;
        *self.stats.lock() = Some(report.clone());
        Ok(report)
    }

    async fn initialize_connection(
        &self,
        volume: &DriverVolume,
        connector: &Connector,
        mode: AccessMode,
    ) -> Result<ConnectionInfo> {
        self.connect(volume, connector, mode).await
    }

    async fn terminate_connection(
        &self,
        volume: &DriverVolume,
        connector: &Connector,
        mode: AccessMode,
    ) -> Result<()> {
        self.disconnect(volume, connector, mode).await
    }

    async fn remove_export(&self, volume: &DriverVolume) -> Result<()> {
        self.unexport(volume).await
    }

    async fn list_exports(&self) -> Result<Vec<String>> {
        self.exported_ids().await
    }

    async fn export_for_backup(&self, source: BackupSource<'_>) -> Result<RawExport> {
        self.export(source).await
    }

    async fn release_export(&self, export: RawExport) -> Result<()> {
        self.release(export).await
    }

    async fn release_exports_of(&self, source: BackupSource<'_>) -> Result<()> {
        self.release_all(source).await
    }

    async fn prepare_restore(&self, volume: &DriverVolume) -> Result<RawExport> {
        self.restore_target(volume).await
    }

    async fn commit_restore(&self, volume: &DriverVolume, export: RawExport) -> Result<()> {
        self.restore_into(volume, export).await
    }

    async fn serve_raw_export(&self, export: &RawExport, writable: bool) -> Result<ConnectionInfo> {
        self.serve_backup_export(export, writable).await
    }

    async fn unserve_raw_export(&self, export: &RawExport) -> Result<()> {
        self.unserve_backup_export(export).await
    }
}
