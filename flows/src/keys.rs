//! The typed keys of every symbol the flows pass between tasks, named as Cinder's store
//! names them, so a rename is a compile error.

use ember_common::model::{
    AttachStatus, Backup, Snapshot, SnapshotStatus, Volume, VolumeAttachment, VolumeType,
};
use ember_common::ops::{
    CreateAttachment, CreateBackup, CreateSnapshot, CreateVolume, DeleteVolume, LegacyAttach, RequestContext,
};
use ember_engine::Key;
use ember_scheduler::RequestSpec;
use serde::{Deserialize, Serialize};

/// Who asked (every flow's input).
pub const CONTEXT: Key<RequestContext> = Key::new("context");
/// The create request as the API parsed it (api create input).
pub const CREATE_REQUEST: Key<CreateVolume> = Key::new("create_request");
/// The id the new volume or snapshot takes, fixed when the flow is recorded so a re-run
/// of the entry task finds the row an earlier run made.
pub const NEW_ID: Key<String> = Key::new("new_id");
/// The volume the flow works on.
pub const VOLUME_ID: Key<String> = Key::new("volume_id");
/// The snapshot the flow works on.
pub const SNAPSHOT_ID: Key<String> = Key::new("snapshot_id");
/// The volume row as a task read or wrote it.
pub const VOLUME: Key<Volume> = Key::new("volume");
/// The snapshot row as a task read or wrote it.
pub const SNAPSHOT: Key<Snapshot> = Key::new("snapshot");
/// The status a snapshot had before a delete moved it to `deleting`.
pub const PREVIOUS_SNAPSHOT_STATUS: Key<SnapshotStatus> = Key::new("previous_snapshot_status");
/// The snapshots a cascade delete removes with their volume.
pub const SNAPSHOTS: Key<Vec<Snapshot>> = Key::new("snapshots");
/// Whether a volume delete removes the volume's snapshots first (`?cascade=true`). Optional
/// in the manager flow: a flow recorded before cascades were served has none.
pub const CASCADE: Key<bool> = Key::new("cascade");
/// The size in GiB (of the new volume, or the new size of an extend).
pub const SIZE: Key<i64> = Key::new("size");
/// The snapshot a new volume is made from.
pub const SOURCE_SNAPSHOT_ID: Key<Option<String>> = Key::new("source_snapshot_id");
/// The volume a new volume is cloned from.
pub const SOURCE_VOLID: Key<Option<String>> = Key::new("source_volid");
/// The backup a new volume is restored from.
pub const BACKUP_ID: Key<Option<String>> = Key::new("backup_id");
/// The resolved volume type.
pub const VOLUME_TYPE: Key<VolumeType> = Key::new("volume_type");
/// The zones the volume may be placed in (one, or the type's list).
pub const AVAILABILITY_ZONES: Key<Vec<String>> = Key::new("availability_zones");
/// Whether the volume may attach to several hosts.
pub const MULTIATTACH: Key<bool> = Key::new("multiattach");
/// The ids of the reservations a quota reserve made.
pub const RESERVATIONS: Key<Vec<String>> = Key::new("reservations");
/// The ids of the negative reservations that hand usage back on delete.
pub const RELEASE_RESERVATIONS: Key<Vec<String>> = Key::new("release_reservations");
/// The ids of the negative reservations that hand the usage of a cascade's snapshots back.
pub const SNAPSHOT_RELEASE_RESERVATIONS: Key<Vec<String>> = Key::new("snapshot_release_reservations");
/// The request spec as handed to the scheduler (scheduler flow input).
pub const RAW_REQUEST_SPEC: Key<RequestSpec> = Key::new("raw_request_spec");
/// The request spec the scheduler placed (manager flow input, scheduler flow output).
pub const REQUEST_SPEC: Key<RequestSpec> = Key::new("request_spec");
/// The backend (`host@backend`) a volume manager flow runs on.
pub const BACKEND: Key<String> = Key::new("backend");
/// What the volume is created from.
pub const VOLUME_SPEC: Key<VolumeSpec> = Key::new("volume_spec");
/// The delete options.
pub const DELETE_OPTIONS: Key<DeleteVolume> = Key::new("delete_options");
/// The snapshot create request.
pub const SNAPSHOT_REQUEST: Key<CreateSnapshot> = Key::new("snapshot_request");
/// Admin force on snapshot delete.
pub const FORCE: Key<bool> = Key::new("force");
/// Whether an extend may grow an `in-use` volume (microversion 3.42). Optional: an extend
/// recorded before it existed allows `available` only.
pub const ALLOW_IN_USE: Key<bool> = Key::new("allow_in_use");
/// The attachment create request as the API parsed it.
pub const ATTACH_REQUEST: Key<CreateAttachment> = Key::new("attach_request");
/// What a legacy client (`os-attach`, `os-initialize_connection`) said about the attachment.
pub const LEGACY_ATTACH: Key<LegacyAttach> = Key::new("legacy_attach");
/// The attachment the flow works on.
pub const ATTACHMENT_ID: Key<String> = Key::new("attachment_id");
/// The attachment row as a task read or wrote it.
pub const ATTACHMENT: Key<VolumeAttachment> = Key::new("attachment");
/// The status an attachment had before a detach moved it to `detaching`.
pub const PREVIOUS_ATTACH_STATUS: Key<AttachStatus> = Key::new("previous_attach_status");
/// os-brick's connector, as the client sent it (a JSON object).
pub const CONNECTOR: Key<serde_json::Value> = Key::new("connector");
/// Cinder's attachment connection info: the driver's `data` flattened with
/// `driver_volume_type`, `attachment_id`, `access_mode`...
pub const CONNECTION_INFO: Key<serde_json::Value> = Key::new("connection_info");

/// Cinder's `volume_spec`: what `CreateVolumeFromSpec` makes the volume from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VolumeSpec {
    /// A blank volume.
    Raw,
    /// From a snapshot.
    Snap { snapshot_id: String },
    /// A clone of another volume.
    SourceVol { source_volid: String },
    /// Restored from a backup.
    Backup { backup_id: String },
}

/// The backup create request as the API parsed it.
pub const BACKUP_REQUEST: Key<CreateBackup> = Key::new("backup_request");
/// The backup the flow works on.
pub const BACKUP_UUID: Key<String> = Key::new("backup_uuid");
/// The backup row as a task read or wrote it.
pub const BACKUP: Key<Backup> = Key::new("backup");
/// The backup an incremental backup builds on.
pub const PARENT_BACKUP_ID: Key<Option<String>> = Key::new("parent_backup_id");
/// The backup service's host chosen for the backup (`ember-backup` row's host).
pub const BACKUP_HOST: Key<String> = Key::new("backup_host");
/// What a volume service exported for a backup or prepared for a restore.
pub const BACKUP_DEVICE: Key<BackupDevice> = Key::new("backup_device");
/// What the backup driver reported of a backup.
pub const BACKUP_OUTCOME: Key<ember_drivers::backup::BackupOutcome> = Key::new("backup_outcome");
/// The status a backup had before a delete moved it to `deleting`.
pub const PREVIOUS_BACKUP_STATUS: Key<ember_common::model::BackupStatus> = Key::new("previous_backup_status");

/// Whether the volume service serves a backup's or restore's image over NBD (the backup
/// service runs on another host, or `backup_use_nbd` asks for it). Optional: a flow
/// recorded before NBD was served has none, and reads the image locally.
pub const VIA_NBD: Key<bool> = Key::new("via_nbd");

/// A volume's data handed to the backup service: where it is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackupDevice {
    /// A raw file on the volume service's machine (the volume driver's `RawExport`), read
    /// or written directly when the backup service runs on the same host.
    Local {
        /// The volume service's host (the `host` of `host@backend`).
        host: String,
        path: std::path::PathBuf,
        size_bytes: u64,
        /// A copy made for this backup (removed on release), not the volume's own file.
        temporary: bool,
    },
    /// The same raw file served over NBD by the volume's backend, for a backup service on
    /// another host: read-only for a backup, writable for a restore. The release stops the
    /// export (idempotent) before the driver drops the file.
    Nbd {
        /// The volume service's host.
        host: String,
        /// The file served (the volume service's, for the release and the commit).
        path: std::path::PathBuf,
        size_bytes: u64,
        temporary: bool,
        /// Cinder's `connection_info` of the export (`driver_volume_type: nbd`).
        connection_info: serde_json::Value,
        /// The export's name on the NBD server.
        export_name: String,
        read_only: bool,
    },
}

impl BackupDevice {
    /// The image's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        match self {
            BackupDevice::Local { size_bytes, .. } | BackupDevice::Nbd { size_bytes, .. } => *size_bytes,
        }
    }

    /// The device of `export`, made on `backend` (`host@backend`).
    pub fn local(backend: &str, export: ember_drivers::RawExport) -> Self {
        BackupDevice::Local {
            host: host_of(backend),
            path: export.path,
            size_bytes: export.size_bytes,
            temporary: export.temporary,
        }
    }

    /// The device of `export` served over NBD as `info` by `backend`'s driver.
    pub fn nbd(
        backend: &str,
        export: ember_drivers::RawExport,
        info: &ember_drivers::ConnectionInfo,
        read_only: bool,
    ) -> Self {
        let export_name =
            info.data.get("export_name").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        BackupDevice::Nbd {
            host: host_of(backend),
            path: export.path,
            size_bytes: export.size_bytes,
            temporary: export.temporary,
            connection_info: serde_json::to_value(info).unwrap_or_default(),
            export_name,
            read_only,
        }
    }

    /// Whether the image is served over NBD (and the export must be stopped on release).
    pub fn is_nbd(&self) -> bool {
        matches!(self, BackupDevice::Nbd { .. })
    }

    /// The driver's export this device stands for.
    pub fn raw_export(&self) -> ember_drivers::RawExport {
        match self {
            BackupDevice::Local { path, size_bytes, temporary, .. }
            | BackupDevice::Nbd { path, size_bytes, temporary, .. } => ember_drivers::RawExport {
                path: path.clone(),
                size_bytes: *size_bytes,
                temporary: *temporary,
            },
        }
    }
}

/// The `host` of `host@backend`.
fn host_of(backend: &str) -> String {
    backend.split('@').next().unwrap_or(backend).to_owned()
}
