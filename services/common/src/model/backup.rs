//! Backups of volumes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::status::BackupStatus;

/// A backup (Cinder's `backups` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub volume_id: String,
    pub snapshot_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub status: BackupStatus,
    pub fail_reason: Option<String>,
    /// GiB of the source volume.
    pub size: i64,
    pub object_count: i64,
    pub availability_zone: Option<String>,
    pub container: Option<String>,
    /// The backup service's host that holds the backup.
    pub host: Option<String>,
    /// The backup driver that wrote it.
    pub service: Option<String>,
    /// The backup an incremental backup is based on.
    pub parent_id: Option<String>,
    pub num_dependent_backups: i64,
    pub data_timestamp: Option<DateTime<Utc>>,
    pub restore_volume_id: Option<String>,
    pub temp_volume_id: Option<String>,
    pub temp_snapshot_id: Option<String>,
    pub encryption_key_id: Option<String>,
    /// The driver's own record of what it stored (JSON).
    pub service_metadata: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Backup {
    /// A backup in `creating` of `volume_id`.
    pub fn new(
        id: impl Into<String>,
        project_id: impl Into<String>,
        user_id: impl Into<String>,
        volume_id: impl Into<String>,
        size: i64,
    ) -> Self {
        Self {
            id: id.into(),
            project_id: project_id.into(),
            user_id: user_id.into(),
            volume_id: volume_id.into(),
            snapshot_id: None,
            name: None,
            description: None,
            status: BackupStatus::Creating,
            fail_reason: None,
            size,
            object_count: 0,
            availability_zone: None,
            container: None,
            host: None,
            service: None,
            parent_id: None,
            num_dependent_backups: 0,
            data_timestamp: None,
            restore_volume_id: None,
            temp_volume_id: None,
            temp_snapshot_id: None,
            encryption_key_id: None,
            service_metadata: None,
            metadata: BTreeMap::new(),
            created_at: Utc::now(),
            updated_at: None,
            deleted: false,
            deleted_at: None,
        }
    }

    /// The API's `is_incremental`.
    pub fn is_incremental(&self) -> bool {
        self.parent_id.is_some()
    }
}

/// The columns a backup update writes; `None` leaves a column alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupChanges {
    pub status: Option<BackupStatus>,
    pub fail_reason: Option<Option<String>>,
    pub name: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub object_count: Option<i64>,
    pub container: Option<Option<String>>,
    pub host: Option<Option<String>>,
    pub service: Option<Option<String>>,
    pub restore_volume_id: Option<Option<String>>,
    pub temp_volume_id: Option<Option<String>>,
    pub temp_snapshot_id: Option<Option<String>>,
    pub service_metadata: Option<Option<String>>,
    pub data_timestamp: Option<Option<DateTime<Utc>>>,
    /// Replaces the user's metadata.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Filters of a backup list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupFilter {
    /// `None` lists every project's backups.
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub status: Option<BackupStatus>,
    pub volume_id: Option<String>,
}
