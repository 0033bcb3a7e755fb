//! The small descriptions of volumes, snapshots and connections that drivers work on.
//!
//! They hold only what a driver needs, so this crate does not depend on the domain model;
//! the volume manager builds them from its rows and stores the [`ModelUpdate`]s it gets back.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A volume as a driver sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverVolume {
    /// The volume's id (a UUID in Ember); backend names derive from it.
    pub id: String,
    /// The size in GiB.
    pub size_gb: u64,
    /// Where the backend put it, as returned earlier in a [`ModelUpdate`].
    #[serde(default)]
    pub provider_location: Option<String>,
    /// The snapshot this volume is created from, if any (informational).
    #[serde(default)]
    pub snapshot_id: Option<String>,
    /// The volume this volume is cloned from, if any (informational).
    #[serde(default)]
    pub source_volid: Option<String>,
}

impl DriverVolume {
    /// A volume with only an id and a size.
    pub fn new(id: impl Into<String>, size_gb: u64) -> Self {
        DriverVolume {
            id: id.into(),
            size_gb,
            provider_location: None,
            snapshot_id: None,
            source_volid: None,
        }
    }

    /// Cinder's `volume_name_template`: `volume-<id>`.
    pub fn name(&self) -> String {
        format!("volume-{}", self.id)
    }
}

/// A snapshot as a driver sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverSnapshot {
    /// The snapshot's id.
    pub id: String,
    /// The id of the volume it was taken of.
    pub volume_id: String,
    /// The size of that volume in GiB when the snapshot was taken.
    pub volume_size_gb: u64,
    /// Where the backend put it, as returned earlier in a [`ModelUpdate`].
    #[serde(default)]
    pub provider_location: Option<String>,
}

impl DriverSnapshot {
    /// A snapshot of `volume_id` with only ids and a size.
    pub fn new(id: impl Into<String>, volume_id: impl Into<String>, volume_size_gb: u64) -> Self {
        DriverSnapshot { id: id.into(), volume_id: volume_id.into(), volume_size_gb, provider_location: None }
    }

    /// Cinder's `snapshot_name_template`: `snapshot-<id>`.
    pub fn name(&self) -> String {
        format!("snapshot-{}", self.id)
    }
}

/// Fields a driver asks the manager to store on the volume or snapshot row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
}

/// Cinder's connector: who wants to attach (host, ip, initiator...), as os-brick sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connector {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    /// Anything else os-brick reports (initiator, multipath, platform...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How an attachment may use the volume (Cinder's `attach_mode`: `rw` or `ro`).
///
/// A driver enforces it at the export: a read-only attachment is given an export that
/// refuses writes, not only a flag in its connection info.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    #[default]
    Rw,
    Ro,
}

impl AccessMode {
    /// Cinder's spelling: `rw` or `ro`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Rw => "rw",
            AccessMode::Ro => "ro",
        }
    }

    /// Parses `rw` or `ro`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rw" => Some(AccessMode::Rw),
            "ro" => Some(AccessMode::Ro),
            _ => None,
        }
    }
}

/// What `initialize_connection` returns, in Cinder's shape:
/// `{"driver_volume_type": "nbd", "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub driver_volume_type: String,
    pub data: Map<String, Value>,
}

/// What a backup reads from or a restore writes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupSource<'a> {
    Volume(&'a DriverVolume),
    Snapshot(&'a DriverSnapshot),
}

/// A raw (byte-for-byte, possibly sparse) image of a volume's data in a local file.
///
/// The backup service reads it (after `export_for_backup`) or writes it (after
/// `prepare_restore`) with ordinary file I/O, then hands it back to the driver
/// (`release_export` or `commit_restore`). A raw file was chosen over a stream because
/// backups read fixed-size chunks at known offsets and can skip holes, which a file
/// supports directly (`tokio::fs::File` is `AsyncRead + AsyncSeek + AsyncWrite`).
#[derive(Debug, PartialEq, Eq)]
pub struct RawExport {
    /// The raw file.
    pub path: PathBuf,
    /// The data's size in bytes (the volume's virtual size).
    pub size_bytes: u64,
    /// True when `path` is a copy made for this export, removed on release; false when it
    /// is the volume's own file (raw volumes), which a restore writes in place.
    pub temporary: bool,
}
