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
use crate::model::{Snapshot, Volume};

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
    /// Returns the new snapshot in `creating`.
    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        req: CreateSnapshot,
    ) -> Result<Snapshot, ServiceError>;
    /// Moves the snapshot to `deleting` and hands the deletion to its backend.
    async fn delete_snapshot(&self, ctx: &RequestContext, id: &str, force: bool) -> Result<(), ServiceError>;
}
