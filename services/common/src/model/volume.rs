//! Volumes: the row clients see through the API, what a compare-and-swap update expects and
//! changes, and how lists are filtered.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::status::{AttachStatus, VolumeStatus};

/// A volume (Cinder's `volumes` row with its metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    /// `display_name` in Cinder's table, `name` in the API.
    pub name: Option<String>,
    pub description: Option<String>,
    /// GiB.
    pub size: i64,
    pub status: VolumeStatus,
    pub attach_status: AttachStatus,
    /// `None` when the volume was never migrated; see [`crate::model::MigrationStatus`].
    pub migration_status: Option<String>,
    /// The status to return to after a temporary one (backing-up, extending, uploading).
    pub previous_status: Option<String>,
    pub availability_zone: String,
    /// `host@backend#pool` once scheduled.
    pub host: Option<String>,
    pub cluster_name: Option<String>,
    pub volume_type_id: String,
    /// The snapshot this volume was created from.
    pub snapshot_id: Option<String>,
    /// The volume this volume was cloned from.
    pub source_volid: Option<String>,
    /// The backup this volume was restored from at creation.
    pub backup_id: Option<String>,
    pub group_id: Option<String>,
    pub bootable: bool,
    pub multiattach: bool,
    /// Set when the volume type is encrypted; `encrypted` in the API is `is_some()`.
    pub encryption_key_id: Option<String>,
    /// Driver data: where the backend keeps the volume.
    pub provider_location: Option<String>,
    pub provider_auth: Option<String>,
    pub provider_id: Option<String>,
    pub replication_status: Option<String>,
    pub service_uuid: Option<String>,
    pub shared_targets: Option<bool>,
    /// False for temporary volumes (Cinder's `use_quota`, `consumes_quota` in the API).
    pub consumes_quota: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub launched_at: Option<DateTime<Utc>>,
    pub terminated_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub metadata: BTreeMap<String, String>,
    /// Admin-only metadata (e.g. `readonly`, `attached_mode`).
    pub admin_metadata: BTreeMap<String, String>,
}

impl Volume {
    /// A volume in `creating` / `detached` with every optional field empty.
    pub fn new(
        id: impl Into<String>,
        project_id: impl Into<String>,
        user_id: impl Into<String>,
        size: i64,
        volume_type_id: impl Into<String>,
        availability_zone: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            project_id: project_id.into(),
            user_id: user_id.into(),
            name: None,
            description: None,
            size,
            status: VolumeStatus::Creating,
            attach_status: AttachStatus::Detached,
            migration_status: None,
            previous_status: None,
            availability_zone: availability_zone.into(),
            host: None,
            cluster_name: None,
            volume_type_id: volume_type_id.into(),
            snapshot_id: None,
            source_volid: None,
            backup_id: None,
            group_id: None,
            bootable: false,
            multiattach: false,
            encryption_key_id: None,
            provider_location: None,
            provider_auth: None,
            provider_id: None,
            replication_status: None,
            service_uuid: None,
            shared_targets: None,
            consumes_quota: true,
            created_at: Utc::now(),
            updated_at: None,
            scheduled_at: None,
            launched_at: None,
            terminated_at: None,
            deleted: false,
            deleted_at: None,
            metadata: BTreeMap::new(),
            admin_metadata: BTreeMap::new(),
        }
    }

    /// Whether the volume's type is encrypted (the API's `encrypted`).
    pub fn encrypted(&self) -> bool {
        self.encryption_key_id.is_some()
    }
}

/// What a compare-and-swap update of a volume expects: every condition given must hold in
/// the row at the time of the update, or nothing is written.
///
/// A `None` field is not checked. A list holds the accepted values (SQL `IN`); a `None`
/// inside a list of nullable values accepts NULL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeExpect {
    pub status: Option<Vec<VolumeStatus>>,
    pub attach_status: Option<Vec<AttachStatus>>,
    /// Cinder's "not migrating" is `[None, "deleting", "error", "success"]`.
    pub migration_status: Option<Vec<Option<String>>>,
    pub multiattach: Option<bool>,
    pub host: Option<Option<String>>,
    pub group_id: Option<Option<String>>,
    /// The volume has no snapshot that is not deleted (Cinder's delete filter).
    pub no_snapshots: bool,
    /// The volume has no attachment that is not deleted.
    pub no_attachments: bool,
}

impl VolumeExpect {
    /// Expects one of `statuses`.
    pub fn status_in(statuses: &[VolumeStatus]) -> Self {
        Self { status: Some(statuses.to_vec()), ..Self::default() }
    }

    /// Cinder's "not migrating" condition on `migration_status`.
    pub fn not_migrating(mut self) -> Self {
        self.migration_status =
            Some(vec![None, Some("deleting".into()), Some("error".into()), Some("success".into())]);
        self
    }
}

/// The columns a compare-and-swap update writes; a `None` field is left alone, and
/// `Some(None)` writes NULL. `updated_at` is always set to now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeChanges {
    pub status: Option<VolumeStatus>,
    pub attach_status: Option<AttachStatus>,
    /// Copies the current `status` into `previous_status` before writing the new status.
    pub previous_status_from_status: bool,
    pub previous_status: Option<Option<String>>,
    pub migration_status: Option<Option<String>>,
    pub name: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub size: Option<i64>,
    pub host: Option<Option<String>>,
    pub cluster_name: Option<Option<String>>,
    pub availability_zone: Option<String>,
    pub volume_type_id: Option<String>,
    pub bootable: Option<bool>,
    pub multiattach: Option<bool>,
    pub provider_location: Option<Option<String>>,
    pub provider_auth: Option<Option<String>>,
    pub provider_id: Option<Option<String>>,
    pub replication_status: Option<Option<String>>,
    pub service_uuid: Option<Option<String>>,
    pub shared_targets: Option<Option<bool>>,
    pub scheduled_at: Option<Option<DateTime<Utc>>>,
    pub launched_at: Option<Option<DateTime<Utc>>>,
    pub terminated_at: Option<Option<DateTime<Utc>>>,
}

impl VolumeChanges {
    /// Changes only the status.
    pub fn status(status: VolumeStatus) -> Self {
        Self { status: Some(status), ..Self::default() }
    }
}

/// Filters of a volume list (Cinder's `resource_filters.json` for volumes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeFilter {
    /// `None` lists every project's volumes (`all_tenants`).
    pub project_id: Option<String>,
    pub name: Option<String>,
    /// Substring match on the name (the `name~` filter).
    pub name_like: Option<String>,
    pub status: Option<VolumeStatus>,
    pub bootable: Option<bool>,
    pub availability_zone: Option<String>,
    pub migration_status: Option<String>,
    pub size: Option<i64>,
    pub host: Option<String>,
    pub volume_type_id: Option<String>,
    pub group_id: Option<String>,
    pub consumes_quota: Option<bool>,
    /// Every pair must be in the volume's metadata.
    pub metadata: Vec<(String, String)>,
    /// Include soft-deleted volumes too.
    pub include_deleted: bool,
}
