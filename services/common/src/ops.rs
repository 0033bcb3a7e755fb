//! The operations the API hands over to the flows: the contract between `ember-api`
//! (which parses and checks the shape of requests) and `ember-flows` (which runs them).
//!
//! The API validates syntax (types, sizes that are numbers > 0, known keys) and answers
//! reads straight from the repositories; everything that reserves quota, creates an
//! entry or needs a backend goes through [`VolumeOps`], whose errors carry the
//! [`ErrorKind`](crate::ErrorKind) the API turns into Cinder's fault bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ServiceError;
use crate::model::{Backup, Snapshot, Volume, VolumeAttachment};

/// Who asks, as the API authenticated them; it crosses RPC with the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestContext {
    pub user_id: String,
    pub project_id: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub is_admin: bool,
    /// `req-<uuid>`, the id the API answered in `x-openstack-request-id`.
    #[serde(default)]
    pub request_id: String,
}

/// `POST /volumes`, after the API checked its syntax.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateVolume {
    /// GiB; `None` takes the size of the snapshot, source volume or backup.
    pub size: Option<i64>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// A volume type's name or id; `None` is the default type (or the source's).
    pub volume_type: Option<String>,
    pub availability_zone: Option<String>,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub backup_id: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// `OS-SCH-HNT:scheduler_hints`, passed to the scheduler as Cinder does.
    pub scheduler_hints: Option<serde_json::Value>,
}

/// `DELETE /volumes/{id}` and `os-force_delete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteVolume {
    /// Delete the volume's snapshots too (`?cascade=true`).
    pub cascade: bool,
    /// Admin only: delete whatever the status (`?force=true`, `os-force_delete`).
    pub force: bool,
}

/// `POST /snapshots`, after the API checked its syntax.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateSnapshot {
    pub volume_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Allows a snapshot of an `in-use` volume (before microversion 3.66).
    pub force: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The operations that run as flows. Each returns once the work is durably handed off
/// (the resource is in its transitional status, e.g. `creating`); clients poll for the end.
#[async_trait::async_trait]
pub trait VolumeOps: Send + Sync {
    /// Cinder's `volume_create_api` flow: returns the new volume in `creating`.
    async fn create_volume(&self, ctx: &RequestContext, req: CreateVolume) -> Result<Volume, ServiceError>;
    /// Moves the volume to `deleting` and hands the deletion to its backend.
    async fn delete_volume(
        &self,
        ctx: &RequestContext,
        id: &str,
        opts: DeleteVolume,
    ) -> Result<(), ServiceError>;
    /// `os-extend`: reserves the quota, moves the volume to `extending`, hands it off.
    async fn extend_volume(&self, ctx: &RequestContext, id: &str, new_size: i64) -> Result<(), ServiceError>;
    /// `os-extend` from microversion 3.42, when `allow_in_use`: an `in-use` volume grows
    /// too and goes back to `in-use` at the end. The default serves `available` only.
    async fn extend_volume_allowing_in_use(
        &self,
        ctx: &RequestContext,
        id: &str,
        new_size: i64,
        allow_in_use: bool,
    ) -> Result<(), ServiceError> {
        let _ = allow_in_use;
        self.extend_volume(ctx, id, new_size).await
    }
    /// Returns the new snapshot in `creating`.
    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        req: CreateSnapshot,
    ) -> Result<Snapshot, ServiceError>;
    /// Moves the snapshot to `deleting` and hands the deletion to its backend.
    async fn delete_snapshot(&self, ctx: &RequestContext, id: &str, force: bool) -> Result<(), ServiceError>;
}

/// `POST /attachments`, after the API checked its syntax (and the legacy `os-attach`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateAttachment {
    /// The volume to attach (`volume_uuid`).
    pub volume_id: String,
    /// The server it is attached to, if any (`instance_uuid`).
    pub instance_uuid: Option<String>,
    /// os-brick's connector (a JSON object): with one, the volume is exported at once and
    /// the attachment comes back `attaching` with its connection info.
    pub connector: Option<serde_json::Value>,
    /// `rw` (the default) or `ro` (microversion 3.54).
    pub mode: Option<String>,
}

/// `os-attach` (legacy): records a finished attachment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyAttach {
    pub instance_uuid: Option<String>,
    pub host_name: Option<String>,
    pub mountpoint: Option<String>,
    /// `rw` (the default) or `ro`.
    pub mode: Option<String>,
}

/// The attach and detach operations (Cinder's attachments API, 3.27+, and the legacy volume
/// actions Nova still sends). Every status change is a compare-and-swap; a refused request
/// changes nothing. Errors carry the [`ErrorKind`](crate::ErrorKind) Cinder answers with.
///
/// Connection info is Cinder's attachment form: the driver's `data` flattened, plus
/// `driver_volume_type`, `attachment_id`, `access_mode`... (a JSON object).
#[async_trait::async_trait]
pub trait AttachOps: Send + Sync {
    /// `attachment_create`: the volume moves to `reserved` (or stays `in-use` when it is
    /// multiattach and attached elsewhere) and an attachment `reserved` is recorded; with a
    /// connector, the volume is then exported to it, as [`AttachOps::update_attachment`].
    async fn create_attachment(
        &self,
        ctx: &RequestContext,
        req: CreateAttachment,
    ) -> Result<VolumeAttachment, ServiceError>;

    /// `attachment_update`: exports the volume to `connector` on its backend and stores the
    /// connection info; attachment and volume move to `attaching`.
    async fn update_attachment(
        &self,
        ctx: &RequestContext,
        id: &str,
        connector: serde_json::Value,
    ) -> Result<VolumeAttachment, ServiceError>;

    /// `os-complete` (3.44): attachment `attached`, volume `in-use`.
    async fn complete_attachment(&self, ctx: &RequestContext, id: &str) -> Result<(), ServiceError>;

    /// `attachment_delete`: revokes the connector, removes the export when no other
    /// attachment needs it, deletes the attachment and recomputes the volume's status from
    /// the attachments left. Returns the volume's remaining attachments.
    async fn delete_attachment(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> Result<Vec<VolumeAttachment>, ServiceError>;

    /// Legacy `os-reserve`: `available` (or `in-use` when multiattach) -> `attaching`.
    async fn reserve_volume(&self, ctx: &RequestContext, volume_id: &str) -> Result<(), ServiceError>;

    /// Legacy `os-unreserve`: `attaching` -> `in-use` if attached, else `available`.
    async fn unreserve_volume(&self, ctx: &RequestContext, volume_id: &str) -> Result<(), ServiceError>;

    /// Legacy `os-begin_detaching`: `in-use` -> `detaching`.
    async fn begin_detaching(&self, ctx: &RequestContext, volume_id: &str) -> Result<(), ServiceError>;

    /// Legacy `os-roll_detaching`: `detaching` -> `in-use`.
    async fn roll_detaching(&self, ctx: &RequestContext, volume_id: &str) -> Result<(), ServiceError>;

    /// Legacy `os-initialize_connection`: exports the volume to `connector` and returns
    /// Cinder's `{"driver_volume_type": ..., "data": {...}}`.
    async fn initialize_connection(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        connector: serde_json::Value,
    ) -> Result<serde_json::Value, ServiceError>;

    /// Legacy `os-terminate_connection`: revokes `connector` (removing the export if no
    /// attachment needs it) and unreserves the volume.
    async fn terminate_connection(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        connector: serde_json::Value,
    ) -> Result<(), ServiceError>;

    /// Legacy `os-attach`: records the attachment `attached` and the volume `in-use`.
    async fn attach(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        req: LegacyAttach,
    ) -> Result<VolumeAttachment, ServiceError>;

    /// Legacy `os-detach`: ends one attachment (the only one when `attachment_id` is
    /// `None`) and recomputes the volume's status.
    async fn detach(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        attachment_id: Option<&str>,
    ) -> Result<(), ServiceError>;

    /// Admin `os-force_detach`: terminates the connection and ends the attachment (all of
    /// the volume's when `attachment_id` is `None`), whatever their status.
    async fn force_detach(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        attachment_id: Option<&str>,
        connector: Option<serde_json::Value>,
    ) -> Result<(), ServiceError>;
}

/// `POST /backups`, after the API checked its syntax.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateBackup {
    pub volume_id: String,
    /// `None`: the backup service's `backup_container`.
    pub container: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Build on the volume's latest available backup.
    pub incremental: bool,
    /// Allows a backup of an `in-use` volume.
    pub force: bool,
    /// Back up this snapshot of the volume instead of the volume.
    pub snapshot_id: Option<String>,
    /// Microversion 3.43.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Microversion 3.51: the zone of the backup service to use.
    pub availability_zone: Option<String>,
}

/// `POST /backups/{id}/restore`, after the API checked its syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreBackup {
    /// The volume to overwrite; `None` restores into a new volume of the backup's size.
    pub volume_id: Option<String>,
    /// The new volume's name.
    pub name: Option<String>,
}

/// What a restore answers (Cinder's `{"restore": {...}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    pub backup_id: String,
    pub volume_id: String,
    pub volume_name: Option<String>,
}

/// The backup operations that run as flows (Cinder's `cinder.backup.api.API`). Each returns
/// once the work is durably handed off; clients poll for the end.
#[async_trait::async_trait]
pub trait BackupOps: Send + Sync {
    /// Reserves the quota, moves the volume to `backing-up` (its status kept) and returns
    /// the new backup in `creating`.
    async fn create_backup(&self, ctx: &RequestContext, req: CreateBackup) -> Result<Backup, ServiceError>;
    /// Moves the backup to `deleting` and hands the deletion to its backup service; `force`
    /// (admin) deletes from any status but `deleting` and `restoring`.
    async fn delete_backup(&self, ctx: &RequestContext, id: &str, force: bool) -> Result<(), ServiceError>;
    /// Restores into `req.volume_id`, or into a new volume made for it.
    async fn restore_backup(
        &self,
        ctx: &RequestContext,
        id: &str,
        req: RestoreBackup,
    ) -> Result<Restored, ServiceError>;
}
