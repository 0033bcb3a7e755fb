//! Service records: one row per running process kind on a host, with its heartbeat.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// A service (Cinder's `services` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    /// `host` for schedulers and backup services, `host@backend` for volume services.
    pub host: String,
    /// `ember-volume`, `ember-scheduler`, `ember-backup`.
    pub binary: String,
    pub topic: String,
    pub availability_zone: String,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub frozen: bool,
    pub cluster_name: Option<String>,
    pub report_count: i64,
    /// Ember's version string.
    pub version: String,
    pub rpc_current_version: Option<String>,
    /// The last heartbeat (Cinder's `updated_at` of the row).
    pub heartbeat_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl Service {
    /// Cinder's `service_is_up`: a heartbeat within `service_down_time`.
    pub fn is_up(&self, now: DateTime<Utc>, service_down_time: Duration) -> bool {
        now.signed_duration_since(self.heartbeat_at) <= service_down_time
    }
}

/// Filters of a service list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceFilter {
    pub host: Option<String>,
    pub binary: Option<String>,
    pub topic: Option<String>,
    pub disabled: Option<bool>,
}
