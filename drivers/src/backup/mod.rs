//! Backup drivers behind Cinder's `BackupDriver` contract, and the images they read and write.
//!
//! The contract between the three parts of the backup path:
//! - an [`ImageSource`] is a raw image to back up: a local file (the volume driver's
//!   [`RawExport`](crate::RawExport)) or an NBD export made by the volume service when the
//!   backup host is another machine; it knows its allocation map, so holes are never read;
//! - an [`ImageSink`] is a raw image to restore into, local or over NBD;
//! - a [`BackupDriver`] stores a source's data under a backup id and writes it back into a
//!   sink (the POSIX store: content-addressed, compressed chunks).
//!
//! Every call is idempotent, as the flow engine re-runs a step a crash interrupted:
//! [`BackupDriver::backup`] called again with the same backup id goes on from the last
//! stored chunk, and a delete of what is missing succeeds.

mod fake;
pub mod local;
pub mod nbd;
pub mod posix;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

pub use fake::FakeBackupDriver;
pub use local::{LocalSink, LocalSource};
pub use posix::{Compression, PosixBackupDriver, PosixBackupOptions};

/// A range of a raw image and whether it holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    /// False for a hole or a range known to read as zeros: never read, never stored.
    pub data: bool,
}

/// A raw image a backup reads.
#[async_trait]
pub trait ImageSource: Send + Sync {
    /// The image's size in bytes (the volume's virtual size).
    fn size(&self) -> u64;

    /// The allocation map of `[offset, offset + length)`: extents in order that cover the
    /// range exactly. A source that cannot tell answers one data extent.
    async fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>>;

    /// Fills `buf` (all of its `len()`) with the bytes at `offset` and hands it back, so
    /// callers reuse their buffers.
    async fn read_at(&self, offset: u64, buf: Vec<u8>) -> Result<Vec<u8>>;
}

/// A raw image a restore writes.
#[async_trait]
pub trait ImageSink: Send + Sync {
    /// The image's size in bytes.
    fn size(&self) -> u64;

    /// Writes all of `buf` at `offset` and hands the buffer back.
    async fn write_at(&self, offset: u64, buf: Vec<u8>) -> Result<Vec<u8>>;

    /// Makes `[offset, offset + length)` read as zeros, deallocating it where the image can.
    async fn zero(&self, offset: u64, length: u64) -> Result<()>;

    /// Makes every write durable.
    async fn flush(&self) -> Result<()>;
}

/// Told how far a backup or restore is, in bytes of the data it has to move.
pub trait Progress: Send + Sync {
    fn report(&self, done_bytes: u64, total_bytes: u64);
}

/// A [`Progress`] that ignores reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _done_bytes: u64, _total_bytes: u64) {}
}

/// What to back up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSpec {
    pub backup_id: String,
    pub volume_id: String,
    /// The backup an incremental backup builds on (its latest available backup).
    pub parent_id: Option<String>,
}

/// What a backup did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupOutcome {
    /// The source's size in bytes.
    pub size_bytes: u64,
    /// Bytes read from the source (its allocated and, for an incremental, changed ranges).
    pub read_bytes: u64,
    /// Bytes newly written to the store (compressed, after deduplication).
    pub stored_bytes: u64,
    /// Chunks the backup's metadata lists (Cinder's `object_count`).
    pub object_count: u64,
    /// The driver's record of the backup (Cinder's `service_metadata`).
    pub service_metadata: String,
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOutcome {
    /// Bytes written to the sink (zeros excluded).
    pub written_bytes: u64,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub chunks_checked: u64,
    /// Chunks missing or whose content does not match its SHA-256, by their hash.
    pub bad_chunks: Vec<String>,
}

/// A backup store, in the spirit of Cinder's `BackupDriver`.
#[async_trait]
pub trait BackupDriver: Send + Sync + 'static {
    /// The driver's name, recorded as the backup's `service`.
    fn name(&self) -> &str;

    /// Checks the store is usable (paths exist and are writable).
    async fn check_for_setup_error(&self) -> Result<()>;

    /// Stores `source`'s data as `spec.backup_id`. Resumable: a second call for the same
    /// backup id skips what the first stored.
    async fn backup(
        &self,
        spec: &BackupSpec,
        source: &dyn ImageSource,
        progress: &dyn Progress,
    ) -> Result<BackupOutcome>;

    /// Writes `backup_id`'s data (through its parents) into `sink`, checking every chunk's
    /// hash as it goes; ranges the backup holds no data for read as zeros.
    async fn restore(
        &self,
        backup_id: &str,
        sink: &dyn ImageSink,
        progress: &dyn Progress,
    ) -> Result<RestoreOutcome>;

    /// Removes the backup and the chunks no other backup references; missing is not an error.
    async fn delete(&self, backup_id: &str) -> Result<()>;

    /// Re-reads every chunk of the backup and checks its hash.
    async fn verify(&self, backup_id: &str) -> Result<VerifyReport>;

    /// The backup's metadata, for Cinder's `export_record`.
    async fn export_record(&self, backup_id: &str) -> Result<serde_json::Value>;

    /// Takes back a record made by `export_record` under `backup_id`.
    async fn import_record(&self, backup_id: &str, record: &serde_json::Value) -> Result<()>;
}

impl fmt::Debug for dyn BackupDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupDriver").field("name", &self.name()).finish()
    }
}
