//! The repository traits: how flows and services read and change stored state.
//!
//! The SQL implementation lives in `ember-db`; flows hold these traits and never sqlx.
//! Every status change is a compare-and-swap: the caller names what it expects, and the
//! answer says whether this caller won (`Some`/`true`) or lost the race (`None`/`false`).
//! Gets and lists skip soft-deleted rows unless asked otherwise.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::model::{
    AttachStatus, AttachmentChanges, AttachmentFilter, Backup, BackupChanges, BackupFilter, BackupStatus,
    ListOptions, QuotaSet, Service, ServiceFilter, Snapshot, SnapshotChanges, SnapshotFilter, SnapshotStatus,
    SnapshotsExpect, Volume, VolumeAttachment, VolumeChanges, VolumeExpect, VolumeFilter, VolumeStatus,
    VolumeType,
};

/// Which metadata of a volume an operation touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetadataKind {
    /// What users set (`/volumes/{id}/metadata`).
    User,
    /// What only admins and services set (`readonly`, `attached_mode`...).
    Admin,
}

/// Volumes and their metadata.
#[async_trait]
pub trait VolumeRepo: Send + Sync {
    /// Inserts `volume` (with its metadata); [`crate::Error::Duplicate`] if its id exists.
    async fn create_volume(&self, volume: &Volume) -> Result<Volume>;
    /// The volume, or [`crate::Error::NotFound`] if it is missing or deleted.
    async fn get_volume(&self, id: &str) -> Result<Volume>;
    /// The volumes that match `filter`, paginated and sorted.
    async fn list_volumes(&self, filter: &VolumeFilter, opts: &ListOptions) -> Result<Vec<Volume>>;
    /// The number of volumes that match `filter` and their total size (GiB).
    async fn volume_summary(&self, filter: &VolumeFilter) -> Result<(i64, i64)>;
    /// Writes `changes` iff the volume exists, is not deleted and matches `expect`.
    /// Returns the updated volume, or `None` when the expectation did not hold.
    async fn update_volume(
        &self,
        id: &str,
        expect: &VolumeExpect,
        changes: &VolumeChanges,
    ) -> Result<Option<Volume>>;
    /// Cinder's cascade delete swap, in one transaction: writes `changes` to the volume iff
    /// it matches `expect` and each of its live snapshots matches `snapshots`, then
    /// `snapshot_changes` to every one of those snapshots. All or nothing: `None` when an
    /// expectation did not hold, and then nothing is written. Returns the volume and its
    /// snapshots as written.
    async fn update_volume_cascade(
        &self,
        id: &str,
        expect: &VolumeExpect,
        changes: &VolumeChanges,
        snapshots: &SnapshotsExpect,
        snapshot_changes: &SnapshotChanges,
    ) -> Result<Option<(Volume, Vec<Snapshot>)>>;
    /// Recomputes `attach_status` and `status` from the volume's live attachments, as
    /// Cinder's `_get_statuses_from_attachments` after a detach: the smallest attachment
    /// status that is not an error (`attached` < `attaching` < `detaching` < `reserved`), or
    /// `detached` when none is left; `status` becomes `in-use` for `attached`, `available`
    /// for `detached`, else the same word. `status` is left alone while the volume is
    /// uploading or migrating. One statement; returns the volume.
    async fn sync_attach_status(&self, id: &str) -> Result<Volume>;
    /// Soft-deletes the volume (status `deleted`, `deleted_at` now) iff it matches `expect`.
    async fn soft_delete_volume(&self, id: &str, expect: &VolumeExpect) -> Result<bool>;
    /// Sets the given keys; with `replace_all`, removes every other key. Returns the result.
    async fn set_volume_metadata(
        &self,
        id: &str,
        kind: MetadataKind,
        items: &BTreeMap<String, String>,
        replace_all: bool,
    ) -> Result<BTreeMap<String, String>>;
    /// Removes one key; `false` if it was not there.
    async fn delete_volume_metadata(&self, id: &str, kind: MetadataKind, key: &str) -> Result<bool>;
}

/// Volume types and their extra specs.
#[async_trait]
pub trait VolumeTypeRepo: Send + Sync {
    /// Inserts `vt` with its extra specs; [`crate::Error::Duplicate`] if the id or the name of
    /// a live type is taken.
    async fn create_volume_type(&self, vt: &VolumeType) -> Result<VolumeType>;
    /// The type by id, or not found.
    async fn get_volume_type(&self, id: &str) -> Result<VolumeType>;
    /// The live type named `name`, or not found.
    async fn get_volume_type_by_name(&self, name: &str) -> Result<VolumeType>;
    /// Live types by name: with `visible_to`, the public ones and the private ones that
    /// project was given access to; without, every type (what an admin sees).
    async fn list_volume_types(&self, visible_to: Option<&str>) -> Result<Vec<VolumeType>>;
    /// Gives `project_id` access to a private type; [`crate::Error::Duplicate`] if it has it.
    async fn add_volume_type_access(&self, id: &str, project_id: &str) -> Result<()>;
    /// Takes a project's access away; `false` if it had none.
    async fn remove_volume_type_access(&self, id: &str, project_id: &str) -> Result<bool>;
    /// The projects with access to a type, sorted.
    async fn volume_type_access(&self, id: &str) -> Result<Vec<String>>;
    /// Changes the name, description or visibility.
    async fn update_volume_type(
        &self,
        id: &str,
        name: Option<&str>,
        description: Option<Option<&str>>,
        is_public: Option<bool>,
    ) -> Result<VolumeType>;
    /// Soft-deletes the type iff no live volume uses it; [`crate::Error::Invalid`] if one does.
    async fn delete_volume_type(&self, id: &str) -> Result<()>;
    /// Sets the given extra specs (others are kept).
    async fn set_extra_specs(&self, id: &str, specs: &BTreeMap<String, String>) -> Result<()>;
    /// Removes one extra spec; `false` if it was not there.
    async fn delete_extra_spec(&self, id: &str, key: &str) -> Result<bool>;
    /// Whether a live volume has this type.
    async fn volume_type_in_use(&self, id: &str) -> Result<bool>;
}

/// Snapshots and their metadata.
#[async_trait]
pub trait SnapshotRepo: Send + Sync {
    async fn create_snapshot(&self, snapshot: &Snapshot) -> Result<Snapshot>;
    /// Inserts `snapshot` only while its volume is live and in one of `volume_in`, decided
    /// under the volume's row lock, so this insert and a concurrent change of the volume
    /// (a delete, which refuses a volume with snapshots) have exactly one winner. `None`,
    /// with nothing written, when the volume was not in those statuses.
    async fn create_snapshot_of(
        &self,
        snapshot: &Snapshot,
        volume_in: &[VolumeStatus],
    ) -> Result<Option<Snapshot>>;
    async fn get_snapshot(&self, id: &str) -> Result<Snapshot>;
    async fn list_snapshots(&self, filter: &SnapshotFilter, opts: &ListOptions) -> Result<Vec<Snapshot>>;
    /// Writes `changes` iff the snapshot is live and its status is in `expected`
    /// (any status when `expected` is empty).
    async fn update_snapshot(
        &self,
        id: &str,
        expected: &[SnapshotStatus],
        changes: &SnapshotChanges,
    ) -> Result<Option<Snapshot>>;
    /// Soft-deletes iff the status is in `expected` (any when empty).
    async fn soft_delete_snapshot(&self, id: &str, expected: &[SnapshotStatus]) -> Result<bool>;
    /// Sets the given keys; with `replace_all`, removes every other key.
    async fn set_snapshot_metadata(
        &self,
        id: &str,
        items: &BTreeMap<String, String>,
        replace_all: bool,
    ) -> Result<BTreeMap<String, String>>;
}

/// Backups.
#[async_trait]
pub trait BackupRepo: Send + Sync {
    /// Inserts `backup`; an incremental one counts as a dependent of its parent.
    async fn create_backup(&self, backup: &Backup) -> Result<Backup>;
    async fn get_backup(&self, id: &str) -> Result<Backup>;
    async fn list_backups(&self, filter: &BackupFilter, opts: &ListOptions) -> Result<Vec<Backup>>;
    /// Writes `changes` iff the backup is live and its status is in `expected` (any when empty).
    async fn update_backup(
        &self,
        id: &str,
        expected: &[BackupStatus],
        changes: &BackupChanges,
    ) -> Result<Option<Backup>>;
    /// Soft-deletes iff the status is in `expected` (any when empty) and no live backup
    /// depends on it; the parent's dependent count goes down.
    async fn soft_delete_backup(&self, id: &str, expected: &[BackupStatus]) -> Result<bool>;
}

/// Volume attachments.
#[async_trait]
pub trait AttachmentRepo: Send + Sync {
    async fn create_attachment(&self, attachment: &VolumeAttachment) -> Result<VolumeAttachment>;
    async fn get_attachment(&self, id: &str) -> Result<VolumeAttachment>;
    /// The live attachments of a volume, or of every volume of a project, oldest first.
    async fn list_attachments(
        &self,
        volume_id: Option<&str>,
        project_id: Option<&str>,
    ) -> Result<Vec<VolumeAttachment>>;
    /// One page of the live attachments that match `filter`, in `opts`' order (sort keys
    /// `created_at`, `updated_at`, `id`, `status`; others are [`crate::Error::Invalid`]); an
    /// unknown marker is [`crate::Error::NotFound`].
    async fn list_attachments_by(
        &self,
        filter: &AttachmentFilter,
        opts: &ListOptions,
    ) -> Result<Vec<VolumeAttachment>>;
    /// Writes `changes` iff the attachment is live and its status is in `expected` (any when empty).
    async fn update_attachment(
        &self,
        id: &str,
        expected: &[AttachStatus],
        changes: &AttachmentChanges,
    ) -> Result<Option<VolumeAttachment>>;
    /// Soft-deletes the attachment (status `deleted`, `detached_at` now); `false` if it was gone.
    async fn soft_delete_attachment(&self, id: &str) -> Result<bool>;
}

/// Service records and heartbeats.
#[async_trait]
pub trait ServiceRepo: Send + Sync {
    /// Inserts the service, or (same host and binary) refreshes its topic, zone, version and
    /// heartbeat while keeping its id, disabled flag and reason. Returns the stored row.
    async fn register_service(&self, service: &Service) -> Result<Service>;
    /// Records a heartbeat at `now`; `false` if the service row is gone.
    async fn heartbeat(&self, id: &str, now: DateTime<Utc>) -> Result<bool>;
    async fn get_service(&self, host: &str, binary: &str) -> Result<Service>;
    async fn list_services(&self, filter: &ServiceFilter) -> Result<Vec<Service>>;
    /// Enables or disables; `false` if there is no such service.
    async fn set_service_disabled(
        &self,
        host: &str,
        binary: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> Result<bool>;
    /// Removes the service row; `false` if it was not there.
    async fn delete_service(&self, id: &str) -> Result<bool>;
}

/// Quotas as Cinder keeps them: limits, usage, reservations.
#[async_trait]
pub trait QuotaRepo: Send + Sync {
    /// The default limit of every resource: the `default` quota class over the configured
    /// defaults, with the per-type resources of every live volume type.
    async fn quota_defaults(&self) -> Result<BTreeMap<String, i64>>;
    /// The project's limits (its overrides over the defaults), with usage.
    async fn project_quotas(&self, project_id: &str) -> Result<QuotaSet>;
    /// Sets a project's limit of `resource` (-1 is unlimited).
    async fn set_project_quota(&self, project_id: &str, resource: &str, limit: i64) -> Result<()>;
    /// Sets the `default` quota class's limit of `resource`.
    async fn set_default_quota(&self, resource: &str, limit: i64) -> Result<()>;
    /// Removes a project's overrides, so the defaults apply again.
    async fn delete_project_quotas(&self, project_id: &str) -> Result<()>;
    /// Checks a limit-only resource (e.g. `per_volume_gigabytes`): over iff
    /// `limit >= 0 and limit < value`.
    async fn limit_check(&self, project_id: &str, resource: &str, value: i64) -> Result<()>;
    /// Atomically checks every positive delta against its limit and reserves them all, or
    /// none ([`crate::Error::OverQuota`] naming every resource over). Negative deltas
    /// (releases) are never refused. Returns one reservation id per delta.
    async fn reserve(
        &self,
        project_id: &str,
        deltas: &[(String, i64)],
        expire_at: DateTime<Utc>,
    ) -> Result<Vec<String>>;
    /// As [`QuotaRepo::reserve`], at most once per `key`: the first call reserves and
    /// records the key in the same transaction; a later call with the key changes nothing
    /// and returns the same ids (committed, rolled back or still pending), so a task that
    /// runs again after a crash neither reserves twice nor releases twice. Keys older than
    /// twice the reservation's life are forgotten by [`QuotaRepo::expire_reservations`].
    async fn reserve_once(
        &self,
        key: &str,
        project_id: &str,
        deltas: &[(String, i64)],
        expire_at: DateTime<Utc>,
    ) -> Result<Vec<String>>;
    /// Rolls back what [`QuotaRepo::reserve_once`] reserved under `key`, if it is still
    /// pending: a revert that does not know whether its task's reservation was made (the
    /// task failed or died after it) undoes it by its key.
    async fn rollback_once(&self, key: &str) -> Result<()>;
    /// Turns reservations into usage. Ids already committed, rolled back or expired are
    /// skipped, so a repeated commit changes nothing.
    async fn commit(&self, reservation_ids: &[String]) -> Result<()>;
    /// Drops reservations without using them; unknown ids are skipped.
    async fn rollback(&self, reservation_ids: &[String]) -> Result<()>;
    /// Rolls back every reservation whose expiry is at or before `now`; returns how many.
    async fn expire_reservations(&self, now: DateTime<Utc>) -> Result<u64>;
    /// Recomputes the project's `in_use` of every counted resource from its live volumes,
    /// snapshots and backups (Cinder's `cinder-manage quota sync`), keeping `reserved`, and
    /// returns the result. A resource created but whose reservation is not committed yet
    /// would be counted twice, so this is an operator's repair for a quiet project.
    async fn sync_usage(&self, project_id: &str) -> Result<QuotaSet>;
}
