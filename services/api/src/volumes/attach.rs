//! The legacy attach actions of `POST /volumes/{id}/action` that Nova still sends:
//! `os-reserve`, `os-unreserve`, `os-begin_detaching`, `os-roll_detaching`,
//! `os-initialize_connection`, `os-terminate_connection`, `os-attach`, `os-detach` and the
//! admin's `os-force_detach`. Bodies are checked as Cinder's schemas
//! (`cinder/api/schemas/volume_actions.py`, `admin_actions.py`); the work is `AttachOps`'.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use ember_common::model::Volume;
use ember_common::ops::LegacyAttach;

use crate::attachments::body::connector;
use crate::context::Ctx;
use crate::fault::{ApiResult, Fault};
use crate::state::ApiState;
use crate::validate::{self, MAX_TEXT, Object};

/// The action names this module serves.
pub const ACTIONS: &[&str] = &[
    "os-reserve",
    "os-unreserve",
    "os-begin_detaching",
    "os-roll_detaching",
    "os-initialize_connection",
    "os-terminate_connection",
    "os-attach",
    "os-detach",
    "os-force_detach",
];

/// Runs the legacy action `name` (one of [`ACTIONS`]) on `v`.
pub async fn action(
    state: &ApiState,
    ctx: &Ctx,
    v: &Volume,
    name: &str,
    args: Object,
) -> ApiResult<Response> {
    let ops = &state.attach;
    let rc = ctx.ops();
    match name {
        // Cinder gives these four no schema: their bodies are not read.
        "os-reserve" => ops.reserve_volume(&rc, &v.id).await?,
        "os-unreserve" => ops.unreserve_volume(&rc, &v.id).await?,
        "os-begin_detaching" => ops.begin_detaching(&rc, &v.id).await?,
        "os-roll_detaching" => ops.roll_detaching(&rc, &v.id).await?,
        "os-initialize_connection" => {
            validate::only_keys(&args, &["connector"])?;
            let connector = connector(&args, true)?.unwrap_or(Value::Null);
            let info = ops.initialize_connection(&rc, &v.id, connector).await?;
            return Ok((StatusCode::OK, Json(json!({ "connection_info": info }))).into_response());
        }
        "os-terminate_connection" => {
            validate::only_keys(&args, &["connector"])?;
            let connector = connector(&args, true)?.unwrap_or(Value::Null);
            ops.terminate_connection(&rc, &v.id, connector).await?;
        }
        "os-attach" => {
            ops.attach(&rc, &v.id, legacy_attach(&args)?).await?;
        }
        "os-detach" => {
            validate::only_keys(&args, &["attachment_id"])?;
            let attachment_id = validate::opt_uuid(&args, "attachment_id")?;
            ops.detach(&rc, &v.id, attachment_id.as_deref()).await?;
        }
        "os-force_detach" => {
            ctx.caller.require_admin()?;
            validate::only_keys(&args, &["attachment_id", "connector"])?;
            let attachment_id = validate::opt_string(&args, "attachment_id", MAX_TEXT)?;
            let connector = connector(&args, false)?;
            ops.force_detach(&rc, &v.id, attachment_id.as_deref(), connector).await?;
        }
        other => return Err(Fault::bad_request(format!("There is no such action: {other}"))),
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `os-attach`: `mountpoint` (1 to 255 characters) and exactly one of `instance_uuid` (a
/// UUID) or `host_name`; `mode` `rw` or `ro`.
fn legacy_attach(args: &Object) -> ApiResult<LegacyAttach> {
    validate::only_keys(args, &["instance_uuid", "mountpoint", "host_name", "mode"])?;
    let mountpoint = validate::required_string(args, "mountpoint", MAX_TEXT)?;
    let instance_uuid = validate::opt_uuid(args, "instance_uuid")?;
    let host_name = validate::opt_string(args, "host_name", MAX_TEXT)?;
    let mode = match args.get("mode") {
        None => None,
        Some(Value::String(m)) if m == "rw" || m == "ro" => Some(m.clone()),
        Some(other) => return Err(validate::invalid("mode", other, "is not one of ['rw', 'ro']")),
    };
    match (&instance_uuid, &host_name) {
        (Some(i), Some(h)) => Err(Fault::bad_request(format!(
            "Invalid request to attach volume to an instance {i} and a host {h} simultaneously"
        ))),
        (None, None) => Err(Fault::bad_request("Invalid request to attach volume to an invalid target")),
        _ => Ok(LegacyAttach { instance_uuid, host_name, mountpoint: Some(mountpoint), mode }),
    }
}
