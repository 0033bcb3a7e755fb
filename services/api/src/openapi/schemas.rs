//! Schemas of the main bodies, for the OpenAPI document only.
//!
//! The handlers read bodies as `serde_json::Value` and check them field by field with
//! Cinder's messages (`validate.rs`); these types describe the same shapes to readers of
//! the document and are never deserialized.

use std::collections::BTreeMap;

use utoipa::ToSchema;

/// `POST /volumes`: `{"volume": {...}}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VolumeCreateRequest {
    pub volume: VolumeCreate,
    /// Scheduler hints, accepted as Cinder does.
    #[schema(rename = "OS-SCH-HNT:scheduler_hints")]
    pub scheduler_hints: Option<BTreeMap<String, serde_json::Value>>,
}

/// The fields of a volume to create; `size` may be left out when a source gives it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VolumeCreate {
    /// GiB, 1 to 2^31-1 (an integer or a string of digits).
    #[schema(minimum = 1, maximum = 2147483647)]
    pub size: Option<i64>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// A volume type's name or id; the default type when left out.
    pub volume_type: Option<String>,
    pub availability_zone: Option<String>,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    /// 3.47+.
    pub backup_id: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    /// Refused when true: multiattach comes from the volume type, as in Cinder.
    pub multiattach: Option<bool>,
}

/// `{"volume": {...}}` as create, show and update answer it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VolumeResponse {
    pub volume: VolumeView,
}

/// One link of a resource (`self`, `bookmark`, `next`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Link {
    pub href: String,
    pub rel: String,
}

/// The detail view of a volume at 3.0; later microversions add keys (`group_id` from
/// 3.13, `provider_id` 3.21 for admins, `shared_targets` and `service_uuid` from 3.48,
/// `cluster_name` 3.61 for admins, `volume_type_id` 3.63, `consumes_quota` 3.65). Admins
/// also see `migration_status` and the `os-vol-host-attr:host` extension attributes.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VolumeView {
    pub id: String,
    /// `creating`, `available`, `in-use`, `deleting`, `error`, `extending`...
    pub status: String,
    pub size: i64,
    pub availability_zone: Option<String>,
    /// `2026-11-21T18:23:46.000000`.
    pub created_at: String,
    pub updated_at: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The type's name.
    pub volume_type: Option<String>,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub links: Vec<Link>,
    pub user_id: String,
    /// `"true"` or `"false"`, a string as in Cinder.
    pub bootable: String,
    pub encrypted: bool,
    pub replication_status: Option<String>,
    pub consistencygroup_id: Option<String>,
    pub multiattach: bool,
    pub attachments: Vec<serde_json::Value>,
    #[schema(rename = "os-vol-tenant-attr:tenant_id")]
    pub tenant_id: Option<String>,
}

/// `{"volumes": [...], "volumes_links": [...]}`; `count` with `with_count=true` (3.45+).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VolumeList {
    pub volumes: Vec<VolumeView>,
    pub volumes_links: Option<Vec<Link>>,
    pub count: Option<i64>,
}

/// `{"volume": {...}}` of `PUT /volumes/{id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VolumeUpdateRequest {
    pub volume: VolumeUpdate,
}

/// The fields an update may change.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VolumeUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `{"metadata": {...}}`: a volume's or snapshot's user metadata.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Metadata {
    pub metadata: BTreeMap<String, String>,
}

/// `POST /volumes/{id}/action`: exactly one of these keys.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VolumeAction {
    /// Grows the volume (202).
    #[schema(rename = "os-extend")]
    pub extend: Option<NewSize>,
    /// Admin: sets the status fields directly (202).
    #[schema(rename = "os-reset_status")]
    pub reset_status: Option<ResetStatus>,
    /// Admin: deletes whatever the status (202); the value is `{}` or null.
    #[schema(rename = "os-force_delete")]
    pub force_delete: Option<BTreeMap<String, serde_json::Value>>,
    /// Sets the bootable flag (200).
    #[schema(rename = "os-set_bootable")]
    pub set_bootable: Option<Bootable>,
    /// Sets the read-only flag (202).
    #[schema(rename = "os-update_readonly_flag")]
    pub update_readonly_flag: Option<Readonly>,
    /// Legacy: `available` -> `attaching` (202); the value is `{}` or null.
    #[schema(rename = "os-reserve")]
    pub reserve: Option<BTreeMap<String, serde_json::Value>>,
    /// Legacy: `attaching` -> `in-use` or `available` (202).
    #[schema(rename = "os-unreserve")]
    pub unreserve: Option<BTreeMap<String, serde_json::Value>>,
    /// Legacy: `in-use` -> `detaching` (202).
    #[schema(rename = "os-begin_detaching")]
    pub begin_detaching: Option<BTreeMap<String, serde_json::Value>>,
    /// Legacy: `detaching` -> `in-use` (202).
    #[schema(rename = "os-roll_detaching")]
    pub roll_detaching: Option<BTreeMap<String, serde_json::Value>>,
    /// Legacy: exports the volume to the connector; 200 `{"connection_info": {...}}`.
    #[schema(rename = "os-initialize_connection")]
    pub initialize_connection: Option<ConnectorArg>,
    /// Legacy: revokes the connector and unreserves the volume (202).
    #[schema(rename = "os-terminate_connection")]
    pub terminate_connection: Option<ConnectorArg>,
    /// Legacy: records a finished attachment (202).
    #[schema(rename = "os-attach")]
    pub attach: Option<LegacyAttach>,
    /// Legacy: ends an attachment (202).
    #[schema(rename = "os-detach")]
    pub detach: Option<Detach>,
    /// Admin: terminates the connection and ends the attachment(s), whatever their status (202).
    #[schema(rename = "os-force_detach")]
    pub force_detach: Option<ForceDetach>,
}

/// `os-initialize_connection`'s and `os-terminate_connection`'s argument: os-brick's
/// connector (`host`, `initiator`, `ip`, `platform`...).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ConnectorArg {
    pub connector: BTreeMap<String, serde_json::Value>,
}

/// `os-attach`'s arguments: `mountpoint` and one of `instance_uuid` or `host_name`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LegacyAttach {
    pub instance_uuid: Option<String>,
    pub host_name: Option<String>,
    pub mountpoint: String,
    /// `rw` (the default) or `ro`.
    pub mode: Option<String>,
}

/// `os-detach`'s argument: the attachment to end (the only one when left out).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Detach {
    pub attachment_id: Option<String>,
}

/// `os-force_detach`'s arguments: the attachment (all when left out) and its connector.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ForceDetach {
    pub attachment_id: Option<String>,
    pub connector: Option<BTreeMap<String, serde_json::Value>>,
}

/// `os-extend`'s argument.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NewSize {
    /// GiB, larger than the current size.
    pub new_size: i64,
}

/// `os-reset_status`'s arguments; at least one is given.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ResetStatus {
    pub status: Option<String>,
    pub attach_status: Option<String>,
    pub migration_status: Option<String>,
}

/// `os-set_bootable`'s argument (a boolean or `"true"`/`"false"`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Bootable {
    pub bootable: bool,
}

/// `os-update_readonly_flag`'s argument (a boolean or `"true"`/`"false"`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Readonly {
    pub readonly: bool,
}

/// `POST /snapshots`: `{"snapshot": {...}}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SnapshotCreateRequest {
    pub snapshot: SnapshotCreate,
}

/// The fields of a snapshot to create.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SnapshotCreate {
    pub volume_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Snapshots an `in-use` volume too.
    pub force: Option<bool>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `{"snapshot": {...}}` as create and show answer it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SnapshotResponse {
    pub snapshot: SnapshotView,
}

/// The detail view of a snapshot; `group_snapshot_id` from 3.14, `user_id` from 3.41,
/// `consumes_quota` from 3.65; show and detail add the
/// `os-extended-snapshot-attributes:progress` and `:project_id` attributes.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SnapshotView {
    pub id: String,
    pub created_at: String,
    pub updated_at: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub volume_id: String,
    /// `creating`, `available`, `deleting`, `error`...
    pub status: String,
    /// The volume's size in GiB.
    pub size: i64,
    pub metadata: BTreeMap<String, String>,
}

/// Cinder's fault body: one key naming the fault (`badRequest`, `itemNotFound`,
/// `overLimit`, `conflictingRequest`...) holding `code` and `message`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Fault {
    #[schema(rename = "badRequest")]
    pub bad_request: FaultDetail,
}

/// The inside of a fault body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FaultDetail {
    pub code: u16,
    pub message: String,
}

/// The query of a volume list (`GET /volumes`, `GET /volumes/detail`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VolumeListQuery {
    /// At most this many (capped by osapi_max_limit)
    pub limit: Option<u32>,
    /// The id of the last volume of the previous page
    pub marker: Option<String>,
    /// `key[:asc|desc],...`
    pub sort: Option<String>,
    /// Skips this many
    pub offset: Option<u32>,
    /// 3.45+: adds `count`
    pub with_count: Option<bool>,
    /// Admin: every project's volumes
    pub all_tenants: Option<bool>,
    /// Filter by name
    pub name: Option<String>,
    /// Filter by status
    pub status: Option<String>,
    /// Filter by metadata, a Python dict literal
    pub metadata: Option<String>,
}
