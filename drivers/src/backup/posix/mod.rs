//! `PosixBackupDriver`, Cinder's posix backup driver redone as a content-addressed chunk
//! store in a directory (a local disk or an NFS mount), in the manner of Proxmox Backup
//! Server: fixed-size chunks named by their SHA-256, compressed with zstd, each content
//! stored once whichever backups share it. A backup's record lists every chunk it holds
//! (shared ones included), so a restore reads one record and deleting a parent never
//! breaks a child. The layout is in `store.rs`; the data paths in `backup.rs` (read,
//! hash, compress, write, pipelined) and `restore.rs` (restore and verify); `delete.rs`
//! removes a backup and collects the chunks no other backup references.

mod backup;
mod delete;
mod restore;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backup::{
    BackupDriver, BackupOutcome, BackupSpec, ImageSink, ImageSource, Progress, RestoreOutcome, VerifyReport,
};
use crate::error::{DriverError, Result};

pub use store::{BackupRecord, ChunkRef};

/// How chunks are compressed (Cinder's `backup_compression_algorithm`; Cinder's `off` and
/// `no` read as `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    #[serde(alias = "off", alias = "no")]
    None,
}

/// The options of the POSIX store, with Cinder's names where Cinder has the option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PosixBackupOptions {
    /// The store's directory (Cinder's `backup_posix_path`): a local disk or an NFS mount.
    pub backup_posix_path: PathBuf,
    /// The chunk size in bytes (Cinder's `backup_file_size` is its object size; here it is
    /// the unit of deduplication): 64 KiB to 64 MiB, a multiple of 4 KiB. 4 MiB by default.
    pub backup_file_size: u64,
    /// `zstd` (default) or `none`. Chunks that do not shrink are stored as they are.
    pub backup_compression_algorithm: Compression,
    /// zstd's level, 1 (fastest, the default) to 19.
    pub backup_compression_level: i32,
    /// Chunks in flight at once (each holds two chunk-sized buffers); 0 picks twice the
    /// number of cores, at least 4.
    pub backup_chunks_in_flight: usize,
    /// Make every chunk durable (fsync before its rename, the journal in batches, the chunk
    /// directories before the record). `false` trusts the page cache, as Cinder's posix
    /// driver does: faster on a slow disk, but a power cut can lose chunks of a backup
    /// already reported available (a process crash cannot).
    pub backup_sync: bool,
}

impl Default for PosixBackupOptions {
    fn default() -> Self {
        Self {
            backup_posix_path: PathBuf::from("ember-data/backup"),
            backup_file_size: 4 << 20,
            backup_compression_algorithm: Compression::Zstd,
            backup_compression_level: 1,
            backup_chunks_in_flight: 0,
            backup_sync: true,
        }
    }
}

impl PosixBackupOptions {
    /// A store in `path` with the other options at their defaults.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { backup_posix_path: path.into(), ..Self::default() }
    }

    fn check(&self) -> Result<()> {
        let size = self.backup_file_size;
        if !(64 << 10..=64 << 20).contains(&size) || !size.is_multiple_of(4096) {
            return Err(DriverError::InvalidInput(format!(
                "backup_file_size must be a multiple of 4096 between 65536 and 67108864, not {size}"
            )));
        }
        if !(1..=19).contains(&self.backup_compression_level) {
            return Err(DriverError::InvalidInput(format!(
                "backup_compression_level must be between 1 and 19, not {}",
                self.backup_compression_level
            )));
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        match self.backup_chunks_in_flight {
            0 => std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).max(4)),
            n => n,
        }
    }
}

/// The POSIX backup store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PosixBackupDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: PosixBackupOptions,
    layout: store::Layout,
}

impl PosixBackupDriver {
    /// Checks the options; the directory is created by the first call that needs it.
    pub fn new(options: PosixBackupOptions) -> Result<Self> {
        options.check()?;
        let layout = store::Layout { root: options.backup_posix_path.clone() };
        Ok(Self { inner: Arc::new(Inner { options, layout }) })
    }

    pub fn options(&self) -> &PosixBackupOptions {
        &self.inner.options
    }

    pub fn path(&self) -> &Path {
        &self.inner.layout.root
    }

    /// A finished backup's record, if the store has one.
    pub async fn record(&self, backup_id: &str) -> Result<Option<BackupRecord>> {
        check_id(backup_id)?;
        let path = self.inner.layout.record(backup_id);
        let layout = self.inner.layout.clone();
        blocking("cannot read the backup record", &path.clone(), move || layout.read_record(&path)).await
    }
}

/// Refuses ids that cannot name a file.
fn check_id(id: &str) -> Result<()> {
    if store::valid_id(id) {
        Ok(())
    } else {
        Err(DriverError::InvalidInput(format!(
            "invalid backup id {id:?}: [A-Za-z0-9_-], at most 128 characters"
        )))
    }
}

fn backup_not_found(id: &str) -> DriverError {
    DriverError::NotFound { resource: "backup", id: id.to_owned() }
}

/// Runs `f` on the blocking pool, turning its I/O error into a [`DriverError::Io`] on `path`.
async fn blocking<T, F>(context: &'static str, path: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| DriverError::io(context, path, e)),
        Err(e) => Err(DriverError::Backend(format!("a blocking backup task failed: {e}"))),
    }
}

#[async_trait]
impl BackupDriver for PosixBackupDriver {
    fn name(&self) -> &str {
        "ember.backup.drivers.posix.PosixBackupDriver"
    }

    async fn check_for_setup_error(&self) -> Result<()> {
        let layout = self.inner.layout.clone();
        let probe = layout.root.join(format!(".probe-{}", uuid::Uuid::new_v4().simple()));
        blocking("the backup store is not writable", &layout.root.clone(), move || {
            layout.create()?;
            std::fs::write(&probe, b"ember")?;
            std::fs::remove_file(&probe)
        })
        .await
    }

    async fn backup(
        &self,
        spec: &BackupSpec,
        source: &dyn ImageSource,
        progress: &dyn Progress,
    ) -> Result<BackupOutcome> {
        backup::run(&self.inner, spec, source, progress).await
    }

    async fn restore(
        &self,
        backup_id: &str,
        sink: &dyn ImageSink,
        progress: &dyn Progress,
    ) -> Result<RestoreOutcome> {
        restore::restore(&self.inner, backup_id, sink, progress).await
    }

    async fn delete(&self, backup_id: &str) -> Result<()> {
        delete::run(&self.inner, backup_id).await
    }

    async fn verify(&self, backup_id: &str) -> Result<VerifyReport> {
        restore::verify(&self.inner, backup_id).await
    }

    async fn export_record(&self, backup_id: &str) -> Result<serde_json::Value> {
        let record = self.record(backup_id).await?.ok_or_else(|| backup_not_found(backup_id))?;
        serde_json::to_value(record)
            .map_err(|e| DriverError::Backend(format!("cannot encode the record: {e}")))
    }

    async fn import_record(&self, backup_id: &str, record: &serde_json::Value) -> Result<()> {
        check_id(backup_id)?;
        let mut record: BackupRecord = serde_json::from_value(record.clone())
            .map_err(|e| DriverError::InvalidInput(format!("not a backup record of this store: {e}")))?;
        record.check().map_err(|e| DriverError::InvalidInput(format!("invalid backup record: {e}")))?;
        record.backup_id = backup_id.to_owned();
        let layout = self.inner.layout.clone();
        let path = layout.record(backup_id);
        let id = backup_id.to_owned();
        blocking("cannot import the backup record", &path.clone(), move || {
            layout.create()?;
            if let Some(missing) = record.hashes().find(|h| layout.find_chunk(h).is_none()) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("chunk {} of the record is not in this store", store::hex(&missing)),
                ));
            }
            match layout.read_record(&path)? {
                Some(existing) if existing == record => Ok(()),
                Some(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("backup {id} exists with another record"),
                )),
                None => layout.write_record(&path, &record),
            }
        })
        .await
        .map_err(|e| match e {
            DriverError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                DriverError::AlreadyExists {
                    resource: "backup",
                    id: backup_id.to_owned(),
                    detail: source.to_string(),
                }
            }
            DriverError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                DriverError::InvalidInput(source.to_string())
            }
            other => other,
        })
    }
}
