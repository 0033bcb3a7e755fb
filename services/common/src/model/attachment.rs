//! Volume attachments (Cinder's `volume_attachment`, API 3.27+).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::status::AttachStatus;

/// One attachment of a volume to an instance or a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeAttachment {
    pub id: String,
    pub volume_id: String,
    pub project_id: String,
    pub instance_uuid: Option<String>,
    pub attached_host: Option<String>,
    pub mountpoint: Option<String>,
    /// `rw` or `ro`.
    pub attach_mode: String,
    pub attach_status: AttachStatus,
    /// What the client sent about the host (JSON object), once it did.
    pub connector: Option<serde_json::Value>,
    /// What the driver returned to reach the volume (JSON object).
    pub connection_info: Option<serde_json::Value>,
    pub attached_at: Option<DateTime<Utc>>,
    pub detached_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl VolumeAttachment {
    /// An attachment in `reserved`, as `attachment_create` makes it.
    pub fn reserved(
        id: impl Into<String>,
        volume_id: impl Into<String>,
        project_id: impl Into<String>,
        instance_uuid: Option<String>,
    ) -> Self {
        Self {
            id: id.into(),
            volume_id: volume_id.into(),
            project_id: project_id.into(),
            instance_uuid,
            attached_host: None,
            mountpoint: None,
            attach_mode: "rw".into(),
            attach_status: AttachStatus::Reserved,
            connector: None,
            connection_info: None,
            attached_at: None,
            detached_at: None,
            created_at: Utc::now(),
            updated_at: None,
            deleted: false,
            deleted_at: None,
        }
    }
}

/// The columns an attachment update writes; `None` leaves a column alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttachmentChanges {
    pub attach_status: Option<AttachStatus>,
    pub attached_host: Option<Option<String>>,
    pub mountpoint: Option<Option<String>>,
    pub attach_mode: Option<String>,
    pub connector: Option<Option<serde_json::Value>>,
    pub connection_info: Option<Option<serde_json::Value>>,
    pub attached_at: Option<Option<DateTime<Utc>>>,
    pub detached_at: Option<Option<DateTime<Utc>>>,
}

/// The filter of an attachment list (Cinder's `attachment` resource filters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentFilter {
    /// `None` lists every project's attachments.
    pub project_id: Option<String>,
    pub volume_id: Option<String>,
    /// `instance_id` in the query.
    pub instance_uuid: Option<String>,
    /// `status` or `attach_status` in the query.
    pub attach_status: Option<AttachStatus>,
}
