//! Snapshots of volumes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::status::SnapshotStatus;

/// A snapshot (Cinder's `snapshots` row with its metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub volume_id: String,
    pub volume_type_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The size of the volume when the snapshot was taken, GiB.
    pub volume_size: i64,
    pub status: SnapshotStatus,
    /// E.g. `"0%"`, `"100%"`.
    pub progress: Option<String>,
    pub provider_location: Option<String>,
    pub provider_id: Option<String>,
    pub group_snapshot_id: Option<String>,
    pub consumes_quota: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub metadata: BTreeMap<String, String>,
}

impl Snapshot {
    /// A snapshot in `creating` of `volume_id`.
    pub fn new(
        id: impl Into<String>,
        project_id: impl Into<String>,
        user_id: impl Into<String>,
        volume_id: impl Into<String>,
        volume_type_id: impl Into<String>,
        volume_size: i64,
    ) -> Self {
        Self {
            id: id.into(),
            project_id: project_id.into(),
            user_id: user_id.into(),
            volume_id: volume_id.into(),
            volume_type_id: volume_type_id.into(),
            name: None,
            description: None,
            volume_size,
            status: SnapshotStatus::Creating,
            progress: None,
            provider_location: None,
            provider_id: None,
            group_snapshot_id: None,
            consumes_quota: true,
            created_at: Utc::now(),
            updated_at: None,
            deleted: false,
            deleted_at: None,
            metadata: BTreeMap::new(),
        }
    }
}

/// The columns a snapshot update writes; `None` leaves a column alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotChanges {
    pub status: Option<SnapshotStatus>,
    pub progress: Option<Option<String>>,
    pub name: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub provider_location: Option<Option<String>>,
    pub provider_id: Option<Option<String>>,
}

/// What a volume's cascade delete expects of each of the volume's live snapshots (Cinder's
/// `volume_has_undeletable_snapshots_filter`, and `volume_has_other_project_snp_filter`
/// for non-admins). A snapshot of a group snapshot never matches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotsExpect {
    /// The accepted statuses; any status when empty (an admin's `force`).
    pub status: Vec<SnapshotStatus>,
    /// The project every snapshot must belong to, when given.
    pub project_id: Option<String>,
}

impl SnapshotsExpect {
    /// Whether `s` meets the expectation.
    pub fn matches(&self, s: &Snapshot) -> bool {
        s.group_snapshot_id.is_none()
            && (self.status.is_empty() || self.status.contains(&s.status))
            && self.project_id.as_ref().is_none_or(|p| *p == s.project_id)
    }
}

/// Filters of a snapshot list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotFilter {
    /// `None` lists every project's snapshots.
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub status: Option<SnapshotStatus>,
    pub volume_id: Option<String>,
    pub metadata: Vec<(String, String)>,
}
