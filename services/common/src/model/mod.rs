//! The domain model: what Ember stores about volumes, types, snapshots, backups,
//! attachments, quotas and services. Field names follow Cinder's tables and API.

pub mod attachment;
pub mod backup;
pub mod page;
pub mod quota;
pub mod service;
pub mod snapshot;
pub mod status;
pub mod volume;
pub mod volume_type;

pub use attachment::{AttachmentChanges, AttachmentFilter, VolumeAttachment};
pub use backup::{Backup, BackupChanges, BackupFilter};
pub use page::{ListOptions, SortDir, SortKey};
pub use quota::{QuotaDefaults, QuotaSet, QuotaUsage, Reservation};
pub use service::{Service, ServiceFilter};
pub use snapshot::{Snapshot, SnapshotChanges, SnapshotFilter, SnapshotsExpect};
pub use status::{AttachStatus, BackupStatus, MigrationStatus, SnapshotStatus, UnknownStatus, VolumeStatus};
pub use volume::{Volume, VolumeChanges, VolumeExpect, VolumeFilter};
pub use volume_type::{DEFAULT_VOLUME_TYPE_ID, DEFAULT_VOLUME_TYPE_NAME, VolumeType};
