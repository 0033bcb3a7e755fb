//! The OpenAPI 3 document of the whole API, served without a token at `GET /openapi.json`.
//!
//! The main volume operations are described by `#[utoipa::path]` on their handlers, with
//! full schemas ([`schemas`]); every other route comes from [`ROUTES`], one row per
//! method and path the router serves, written once next to the routers. A test parses the
//! routers' sources and checks that the two agree, so a new route cannot be left out.

pub mod schemas;

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::OpenApi;

/// One route: method (lower case), path as clients write it, summary, tag.
pub type Route = (&'static str, &'static str, &'static str, &'static str);

/// Every method and path the router serves. Paths under a project carry `{project_id}`.
pub const ROUTES: &[Route] = &[
    ("get", "/", "The versions document (300 Multiple Choices)", "versions"),
    ("get", "/v3", "Redirects to /v3/", "versions"),
    ("get", "/v3/", "The v3 versions document", "versions"),
    ("get", "/v3/{project_id}", "The v3 versions document (keystoneauth discovery)", "versions"),
    ("get", "/healthcheck", "Answers OK while the process serves", "versions"),
    ("get", "/openapi.json", "This document", "versions"),
    ("get", "/console", "The operator's web console (HTML; its data calls need an admin token)", "flows"),
    ("get", "/v3/{project_id}/volumes", "Lists volumes (summaries)", "volumes"),
    ("post", "/v3/{project_id}/volumes", "Creates a volume", "volumes"),
    ("get", "/v3/{project_id}/volumes/detail", "Lists volumes (detail)", "volumes"),
    (
        "get",
        "/v3/{project_id}/volumes/summary",
        "Count, total size and metadata of volumes (3.12+)",
        "volumes",
    ),
    ("get", "/v3/{project_id}/volumes/{id}", "Shows a volume", "volumes"),
    ("put", "/v3/{project_id}/volumes/{id}", "Updates a volume's name, description, metadata", "volumes"),
    ("delete", "/v3/{project_id}/volumes/{id}", "Deletes a volume", "volumes"),
    (
        "post",
        "/v3/{project_id}/volumes/{id}/action",
        "A volume action: os-extend, os-reset_status, os-force_delete, os-set_bootable, \
         os-update_readonly_flag; legacy attach: os-reserve, os-unreserve, os-begin_detaching, \
         os-roll_detaching, os-initialize_connection, os-terminate_connection, os-attach, \
         os-detach, os-force_detach",
        "volumes",
    ),
    ("get", "/v3/{project_id}/volumes/{id}/metadata", "Shows a volume's metadata (ETag 3.15+)", "volumes"),
    ("post", "/v3/{project_id}/volumes/{id}/metadata", "Adds or changes metadata keys", "volumes"),
    ("put", "/v3/{project_id}/volumes/{id}/metadata", "Replaces a volume's metadata", "volumes"),
    ("get", "/v3/{project_id}/volumes/{id}/metadata/{key}", "Shows one metadata key", "volumes"),
    ("put", "/v3/{project_id}/volumes/{id}/metadata/{key}", "Sets one metadata key", "volumes"),
    ("delete", "/v3/{project_id}/volumes/{id}/metadata/{key}", "Deletes one metadata key", "volumes"),
    (
        "get",
        "/v3/{project_id}/attachments",
        "Lists attachments: volume_id, instance_id, status filters, pages (3.27+)",
        "attachments",
    ),
    (
        "post",
        "/v3/{project_id}/attachments",
        "Creates an attachment: reserved, or attaching with a connector (3.27+, mode 3.54+)",
        "attachments",
    ),
    ("get", "/v3/{project_id}/attachments/detail", "Lists attachments in detail (3.27+)", "attachments"),
    ("get", "/v3/{project_id}/attachments/{id}", "Shows an attachment (3.27+)", "attachments"),
    (
        "put",
        "/v3/{project_id}/attachments/{id}",
        "Exports the volume to a connector; the attachment is attaching (3.27+)",
        "attachments",
    ),
    (
        "delete",
        "/v3/{project_id}/attachments/{id}",
        "Deletes an attachment; lists the volume's remaining ones (3.27+)",
        "attachments",
    ),
    (
        "post",
        "/v3/{project_id}/attachments/{id}/action",
        "os-complete: the attachment attached, the volume in-use (3.44+, 204)",
        "attachments",
    ),
    (
        "get",
        "/v3/{project_id}/flows",
        "Lists flows: state, name, subject, owner, time range (admin)",
        "flows",
    ),
    ("get", "/v3/{project_id}/flows/{id}", "Shows a flow with its atoms (admin)", "flows"),
    (
        "get",
        "/v3/{project_id}/flows/{id}/graph",
        "Draws a flow as DOT or Mermaid text, or its atoms and edges as JSON (admin)",
        "flows",
    ),
    (
        "post",
        "/v3/{project_id}/flows/{id}/action",
        "Resumes a flow now (`resume`) or reverts what ran of one that cannot finish (`revert`) (admin)",
        "flows",
    ),
    (
        "get",
        "/v3/{project_id}/volumes/{id}/flows",
        "Lists the flows that worked on a volume (admin)",
        "flows",
    ),
    (
        "get",
        "/v3/{project_id}/snapshots/{id}/flows",
        "Lists the flows that worked on a snapshot (admin)",
        "flows",
    ),
    ("get", "/v3/{project_id}/backups", "Lists backups (summaries)", "backups"),
    ("post", "/v3/{project_id}/backups", "Creates a backup of a volume or snapshot", "backups"),
    ("get", "/v3/{project_id}/backups/detail", "Lists backups (detail)", "backups"),
    (
        "post",
        "/v3/{project_id}/backups/import_record",
        "Imports an exported backup record (admin)",
        "backups",
    ),
    ("get", "/v3/{project_id}/backups/{id}", "Shows a backup", "backups"),
    (
        "put",
        "/v3/{project_id}/backups/{id}",
        "Updates a backup's name, description, metadata (3.9)",
        "backups",
    ),
    ("delete", "/v3/{project_id}/backups/{id}", "Deletes a backup", "backups"),
    (
        "post",
        "/v3/{project_id}/backups/{id}/restore",
        "Restores a backup to a new or existing volume",
        "backups",
    ),
    ("post", "/v3/{project_id}/backups/{id}/action", "os-reset_status, os-force_delete (admin)", "backups"),
    ("get", "/v3/{project_id}/backups/{id}/export_record", "Exports a backup's record (admin)", "backups"),
    ("get", "/v3/{project_id}/snapshots", "Lists snapshots (summaries)", "snapshots"),
    ("post", "/v3/{project_id}/snapshots", "Creates a snapshot", "snapshots"),
    ("get", "/v3/{project_id}/snapshots/detail", "Lists snapshots (detail)", "snapshots"),
    ("get", "/v3/{project_id}/snapshots/{id}", "Shows a snapshot", "snapshots"),
    ("put", "/v3/{project_id}/snapshots/{id}", "Updates a snapshot's name and description", "snapshots"),
    ("delete", "/v3/{project_id}/snapshots/{id}", "Deletes a snapshot", "snapshots"),
    (
        "post",
        "/v3/{project_id}/snapshots/{id}/action",
        "A snapshot action: os-reset_status, os-force_delete",
        "snapshots",
    ),
    (
        "get",
        "/v3/{project_id}/snapshots/{id}/metadata",
        "Shows a snapshot's metadata (ETag 3.15+)",
        "snapshots",
    ),
    ("post", "/v3/{project_id}/snapshots/{id}/metadata", "Adds or changes metadata keys", "snapshots"),
    ("put", "/v3/{project_id}/snapshots/{id}/metadata", "Replaces a snapshot's metadata", "snapshots"),
    ("get", "/v3/{project_id}/snapshots/{id}/metadata/{key}", "Shows one metadata key", "snapshots"),
    ("put", "/v3/{project_id}/snapshots/{id}/metadata/{key}", "Sets one metadata key", "snapshots"),
    ("delete", "/v3/{project_id}/snapshots/{id}/metadata/{key}", "Deletes one metadata key", "snapshots"),
    ("get", "/v3/{project_id}/types", "Lists volume types", "types"),
    ("post", "/v3/{project_id}/types", "Creates a volume type (admin)", "types"),
    ("get", "/v3/{project_id}/types/default", "Shows the default volume type", "types"),
    ("get", "/v3/{project_id}/types/{id}", "Shows a volume type", "types"),
    ("put", "/v3/{project_id}/types/{id}", "Updates a volume type (admin)", "types"),
    ("delete", "/v3/{project_id}/types/{id}", "Deletes a volume type (admin)", "types"),
    (
        "post",
        "/v3/{project_id}/types/{id}/action",
        "Type access: addProjectAccess, removeProjectAccess (admin)",
        "types",
    ),
    (
        "get",
        "/v3/{project_id}/types/{id}/os-volume-type-access",
        "Lists the projects of a private type",
        "types",
    ),
    ("get", "/v3/{project_id}/types/{id}/extra_specs", "Lists a type's extra specs", "types"),
    ("post", "/v3/{project_id}/types/{id}/extra_specs", "Adds or changes extra specs (admin)", "types"),
    ("get", "/v3/{project_id}/types/{id}/extra_specs/{key}", "Shows one extra spec", "types"),
    ("put", "/v3/{project_id}/types/{id}/extra_specs/{key}", "Sets one extra spec (admin)", "types"),
    ("delete", "/v3/{project_id}/types/{id}/extra_specs/{key}", "Deletes one extra spec (admin)", "types"),
    (
        "get",
        "/v3/{project_id}/os-quota-sets/{id}",
        "Shows a project's quotas (`usage=true` for usage)",
        "quotas",
    ),
    ("put", "/v3/{project_id}/os-quota-sets/{id}", "Updates a project's quotas (admin)", "quotas"),
    (
        "delete",
        "/v3/{project_id}/os-quota-sets/{id}",
        "Resets a project's quotas to the defaults (admin)",
        "quotas",
    ),
    ("get", "/v3/{project_id}/os-quota-sets/{id}/defaults", "Shows the default quotas", "quotas"),
    ("get", "/v3/{project_id}/limits", "Shows the caller's absolute limits", "quotas"),
    ("get", "/v3/{project_id}/os-services", "Lists services (admin)", "services"),
    (
        "put",
        "/v3/{project_id}/os-services/{action}",
        "enable, disable or disable-log-reason a service (admin)",
        "services",
    ),
    ("get", "/v3/{project_id}/os-availability-zone", "Lists availability zones", "services"),
];

/// The operations described on their handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ember Block Storage API v3",
        description = "OpenStack Cinder's Block Storage API v3 (microversions 3.0 to 3.71), \
                       as Ember serves it."
    ),
    paths(
        crate::volumes::list,
        crate::volumes::list_detail,
        crate::volumes::create,
        crate::volumes::show,
        crate::volumes::update,
        crate::volumes::delete,
        crate::volumes::metadata::index,
        crate::volumes::metadata::create,
        crate::volumes::metadata::replace,
        crate::volumes::actions::action,
        crate::snapshots::create,
        crate::snapshots::show,
    ),
    components(schemas(
        schemas::VolumeCreateRequest,
        schemas::VolumeCreate,
        schemas::VolumeResponse,
        schemas::VolumeView,
        schemas::VolumeList,
        schemas::VolumeUpdateRequest,
        schemas::VolumeUpdate,
        schemas::Metadata,
        schemas::VolumeAction,
        schemas::NewSize,
        schemas::ResetStatus,
        schemas::Bootable,
        schemas::Readonly,
        schemas::ConnectorArg,
        schemas::LegacyAttach,
        schemas::Detach,
        schemas::ForceDetach,
        schemas::SnapshotCreateRequest,
        schemas::SnapshotCreate,
        schemas::SnapshotResponse,
        schemas::SnapshotView,
        schemas::Link,
        schemas::Fault,
        schemas::FaultDetail,
    ))
)]
struct Annotated;

/// `GET /openapi.json`: the document, built once.
pub async fn serve() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| document().to_string()).as_str();
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The whole document: the annotated operations, every other route from [`ROUTES`], and
/// on every operation under a project the token and microversion it takes.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(Annotated::openapi()).unwrap_or_else(|_| json!({"openapi": "3.1.0"}));
    let mut paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for &(method, path, summary, tag) in ROUTES {
        let item = paths.entry(path).or_insert_with(|| json!({}));
        let Some(item) = item.as_object_mut() else { continue };
        let operation = item.entry(method).or_insert_with(|| generated(method, path, tag));
        operation["summary"] = json!(summary);
        // Annotated handlers would be named after their functions, which repeat
        // (`create`...); ids must be unique in a document.
        operation["operationId"] = json!(operation_id(method, path));
        if path.starts_with("/v3/{project_id}/") {
            protect(operation);
        }
        if is_guarded_metadata_write(method, path) {
            if_match(operation);
        }
    }
    doc["paths"] = Value::Object(paths);
    doc["components"]["securitySchemes"] = json!({
        "token": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Auth-Token",
            "description": "noauth: `user:project` (Cinder's noauth); \
                            token auth: a token from the configuration"
        }
    });
    doc["components"]["parameters"] = json!({
        "Microversion": {
            "name": "OpenStack-API-Version",
            "in": "header",
            "required": false,
            "description": "`volume 3.N` (3.0 to 3.71, `volume latest`); \
                            echoed in the answer, 406 out of range",
            "schema": {"type": "string", "example": "volume 3.71"}
        }
    });
    doc
}

/// An operation for a route without annotations: its path parameters, a JSON body for
/// writes, and the answers every route may give.
fn generated(method: &str, path: &str, tag: &str) -> Value {
    let parameters: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let fault = json!({"description": "A Cinder fault", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Fault"}}}});
    let ok = json!({"description": "Success (200, or 202 for accepted work); the body is Cinder's",
        "content": {"application/json": {"schema": {"type": "object"}}}});
    let mut op = json!({
        "tags": [tag],
        "parameters": parameters,
        "responses": {"2XX": ok, "400": fault, "404": fault},
    });
    if method == "post" || method == "put" {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {
            "schema": {"type": "object", "description": "Cinder's body for this request"}}}});
    }
    op
}

/// The writes of volume and snapshot metadata that `If-Match` guards (3.15+):
/// `POST`/`PUT .../metadata` and `PUT .../metadata/{key}`.
fn is_guarded_metadata_write(method: &str, path: &str) -> bool {
    let metadata = path.ends_with("/{id}/metadata") || path.ends_with("/{id}/metadata/{key}");
    let resource =
        path.starts_with("/v3/{project_id}/volumes/") || path.starts_with("/v3/{project_id}/snapshots/");
    resource && metadata && (method == "put" || (method == "post" && path.ends_with("/metadata")))
}

/// Documents `If-Match` and its 412 on a guarded write (the annotated ones have them).
fn if_match(operation: &mut Value) {
    let Some(params) = operation.get_mut("parameters").and_then(Value::as_array_mut) else { return };
    if !params.iter().any(|p| p["name"] == "If-Match") {
        params.push(json!({"name": "If-Match", "in": "header", "required": false,
            "description": "3.15+: the ETag read before; another one answers 412",
            "schema": {"type": "string"}}));
    }
    if operation["responses"].get("412").is_none() {
        operation["responses"]["412"] =
            json!({"description": "If-Match names another ETag; the body is empty, as Cinder's"});
    }
}

/// `get__v3_project_id_volumes_id` for `get /v3/{project_id}/volumes/{id}`: unique,
/// because paths are.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_owned();
    id.extend(
        path.chars()
            .filter(|c| !matches!(c, '{' | '}'))
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    id
}

/// Marks an operation under a project: it takes a token and a microversion.
fn protect(operation: &mut Value) {
    operation["security"] = json!([{"token": []}]);
    let microversion = json!({"$ref": "#/components/parameters/Microversion"});
    match operation.get_mut("parameters").and_then(Value::as_array_mut) {
        Some(params) => params.push(microversion),
        None => operation["parameters"] = json!([microversion]),
    }
    if !operation["responses"].is_object() {
        operation["responses"] = json!({});
    }
    let responses = &mut operation["responses"];
    for (code, what) in
        [("401", "No or a bad token"), ("403", "Not allowed for the caller"), ("406", "Unknown microversion")]
    {
        if responses.get(code).is_none() {
            responses[code] = json!({"description": what, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Fault"}}}});
        }
    }
}
