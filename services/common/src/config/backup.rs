//! The backup service's section, `[backup]` (Cinder's `backup_*` options).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The store the backup service writes to (Cinder's `backup_driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupDriverKind {
    /// A directory, local or an NFS mount: content-addressed, compressed chunks.
    Posix,
    /// In memory, for tests of the control plane.
    Fake,
}

/// `[backup]`: what `ember backup` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// `posix` or `fake`.
    pub backup_driver: BackupDriverKind,
    /// The POSIX store's directory (Cinder's `backup_posix_path`); defaults to
    /// `<data_dir>/backups`.
    pub backup_posix_path: Option<PathBuf>,
    /// Bytes of volume data per chunk (Cinder's `backup_file_size`, here much smaller so
    /// memory stays bounded and shared content is found); a power of two, 64 KiB to 64 MiB.
    pub backup_chunk_size: u64,
    /// zstd level of stored chunks (1 to 19).
    pub backup_compression_level: i32,
    /// The container of backups created without one (Cinder's `backup_container`).
    pub backup_container: String,
    /// Reads and restores volumes through an NBD export made by the volume service even
    /// when the backup service runs on the volume's own host (it does so anyway on another
    /// host); for testing the cross-host path on one machine.
    pub backup_use_nbd: bool,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            backup_driver: BackupDriverKind::Posix,
            backup_posix_path: None,
            backup_chunk_size: 4 << 20,
            backup_compression_level: 3,
            backup_container: "backups".into(),
            backup_use_nbd: false,
        }
    }
}

impl BackupConfig {
    /// The first wrong value, as (option, reason).
    pub(super) fn check(&self) -> Option<(&'static str, String)> {
        let size = self.backup_chunk_size;
        if !size.is_power_of_two() || !(64 << 10..=64 << 20).contains(&size) {
            return Some(("backup_chunk_size", "must be a power of two from 65536 to 67108864".into()));
        }
        if !(1..=19).contains(&self.backup_compression_level) {
            return Some(("backup_compression_level", "must be from 1 to 19".into()));
        }
        if self.backup_container.is_empty() || self.backup_container.len() > 255 {
            return Some(("backup_container", "must be 1 to 255 characters".into()));
        }
        None
    }

    /// `backup_posix_path`, or `<data_dir>/backups`.
    pub fn posix_path(&self, data_dir: &Path) -> PathBuf {
        self.backup_posix_path.clone().unwrap_or_else(|| data_dir.join("backups"))
    }
}
