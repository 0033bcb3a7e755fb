//! `POST /volumes/{id}/action`: one action per body (`os-extend`, `os-reset_status`,
//! `os-force_delete`, `os-set_bootable`, `os-update_readonly_flag`, and the legacy attach
//! actions of [`super::attach`]).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use ember_common::model::{AttachStatus, MigrationStatus, Volume, VolumeChanges, VolumeExpect, VolumeStatus};
use ember_common::ops::DeleteVolume;
use ember_common::repo::MetadataKind;

use crate::context::{Ctx, IdPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::state::ApiState;
use crate::validate::{self, Object};

/// The statuses `os-reset_status` accepts: Cinder's `VolumeStatus.ALL` without `deleting`.
const RESETTABLE: &[VolumeStatus] = {
    use VolumeStatus::*;
    &[
        Creating,
        Available,
        Error,
        ErrorDeleting,
        ErrorManaging,
        Managing,
        Attaching,
        InUse,
        Detaching,
        Maintenance,
        RestoringBackup,
        ErrorRestoring,
        Reserved,
        AwaitingTransfer,
        BackingUp,
        ErrorBackingUp,
        ErrorExtending,
        Downloading,
        Uploading,
        Retyping,
        Extending,
    ]
};

/// Dispatches on the body's one key.
#[utoipa::path(
    post,
    path = "/v3/{project_id}/volumes/{id}/action",
    tag = "volumes",
    params(
        ("project_id" = String, Path, description = "The caller's project"),
        ("id" = String, Path, description = "The volume's id"),
    ),
    request_body = crate::openapi::schemas::VolumeAction,
    responses(
        (
            status = 202,
            description = "Accepted (os-extend, os-reset_status, os-force_delete, os-update_readonly_flag, \
                           os-reserve, os-unreserve, os-begin_detaching, os-roll_detaching, \
                           os-terminate_connection, os-attach, os-detach, os-force_detach)",
        ),
        (
            status = 200,
            description = "Done (os-set_bootable); `{\"connection_info\": {...}}` (os-initialize_connection)",
        ),
        (
            status = 400,
            description = "Bad input, an unknown action or a status that forbids it",
            body = crate::openapi::schemas::Fault,
        ),
        (status = 404, description = "No such volume", body = crate::openapi::schemas::Fault),
        (status = 413, description = "Over quota (os-extend)", body = crate::openapi::schemas::Fault),
    ),
)]
pub async fn action(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    let (name, args) = one_action(&body)?;
    let volume = super::load(&state, &ctx, &p.id).await?;
    match name {
        "os-extend" => extend(&state, &ctx, &volume, args).await,
        "os-reset_status" => reset_status(&state, &ctx, &volume, args).await,
        "os-force_delete" => force_delete(&state, &ctx, &volume).await,
        "os-set_bootable" => set_bootable(&state, &volume, args).await,
        "os-update_readonly_flag" => update_readonly(&state, &volume, args).await,
        legacy if super::attach::ACTIONS.contains(&legacy) => {
            super::attach::action(&state, &ctx, &volume, legacy, args).await
        }
        other => Err(Fault::bad_request(format!("There is no such action: {other}"))),
    }
}

/// The action's name and its arguments (an object; `null` counts as `{}`).
pub fn one_action(body: &Value) -> ApiResult<(&str, Object)> {
    let obj = body.as_object().ok_or_else(|| Fault::bad_request("Malformed request body"))?;
    let mut keys = obj.keys();
    match (keys.next(), keys.next()) {
        (Some(name), None) => Ok((name.as_str(), validate::optional_section(body, name)?)),
        (None, _) => Err(Fault::bad_request("Malformed request body: no action given")),
        (Some(_), Some(_)) => Err(Fault::bad_request("Malformed request body: only one action may be given")),
    }
}

async fn extend(state: &ApiState, ctx: &Ctx, v: &Volume, args: Object) -> ApiResult<Response> {
    let raw = args
        .get("new_size")
        .ok_or_else(|| Fault::bad_request("Invalid input received: 'new_size' is a required property"))?;
    let new_size = validate::positive_int("new_size", raw)?;
    if new_size <= v.size {
        return Err(Fault::bad_request(format!(
            "New size for extend must be greater than current size. (current: {}, extended: {}).",
            v.size, new_size
        )));
    }
    let allowed =
        v.status == VolumeStatus::Available || (v.status == VolumeStatus::InUse && ctx.at_least(42));
    if !allowed {
        return Err(Fault::bad_request(format!(
            "Invalid volume: Volume {} status must be available{} to extend, but current status is: {}.",
            v.id,
            if ctx.at_least(42) { " or in-use" } else { "" },
            v.status
        )));
    }
    state.ops.extend_volume_allowing_in_use(&ctx.ops(), &v.id, new_size, ctx.at_least(42)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Admin: writes the given statuses directly, as Cinder does (no compare-and-swap on the
/// old status: this is the operator's repair tool).
async fn reset_status(state: &ApiState, ctx: &Ctx, v: &Volume, args: Object) -> ApiResult<Response> {
    ctx.caller.require_admin()?;
    let changes = reset_changes(&args)?;
    let attachments = state.repos.attachments.list_attachments(Some(&v.id), None).await?;
    if changes.status == Some(VolumeStatus::InUse) && attachments.is_empty() {
        return Err(Fault::bad_request(
            "Invalid volume: Cannot reset-state to in-use because volume does not have any attachments.",
        ));
    }
    state
        .repos
        .volumes
        .update_volume(&v.id, &VolumeExpect::default(), &changes)
        .await?
        .ok_or_else(|| Fault::not_found(format!("Volume {} could not be found.", v.id)))?;
    if changes.attach_status == Some(AttachStatus::Detached) {
        for a in attachments {
            state.repos.attachments.soft_delete_attachment(&a.id).await?;
        }
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The columns `os-reset_status` writes, checked as Cinder's `validate_volume_reset_body`.
fn reset_changes(args: &Object) -> ApiResult<VolumeChanges> {
    let status = validate::opt_string(args, "status", 255)?;
    let attach = validate::opt_string(args, "attach_status", 255)?;
    let migration = validate::opt_string(args, "migration_status", 255)?;
    if status.is_none() && attach.is_none() && migration.is_none() {
        return Err(Fault::bad_request(
            "Must specify 'status', 'attach_status' or 'migration_status' for update.",
        ));
    }
    let mut changes = VolumeChanges::default();
    if let Some(s) = status {
        let parsed = s.to_ascii_lowercase().parse::<VolumeStatus>().ok().filter(|s| RESETTABLE.contains(s));
        changes.status =
            Some(parsed.ok_or_else(|| Fault::bad_request(format!("Must specify a valid status: {s}")))?);
    }
    if let Some(a) = attach {
        let parsed = match a.to_ascii_lowercase().as_str() {
            "attached" => AttachStatus::Attached,
            "detached" => AttachStatus::Detached,
            _ => return Err(Fault::bad_request(format!("Must specify a valid attach status: {a}"))),
        };
        changes.attach_status = Some(parsed);
    }
    if let Some(m) = migration {
        let parsed = m
            .to_ascii_lowercase()
            .parse::<MigrationStatus>()
            .ok()
            .filter(|m| *m != MigrationStatus::Deleting)
            .ok_or_else(|| Fault::bad_request(format!("Must specify a valid migration status: {m}")))?;
        changes.migration_status =
            Some((parsed != MigrationStatus::None).then(|| parsed.as_str().to_owned()));
    }
    Ok(changes)
}

async fn force_delete(state: &ApiState, ctx: &Ctx, v: &Volume) -> ApiResult<Response> {
    ctx.caller.require_admin()?;
    state.ops.delete_volume(&ctx.ops(), &v.id, DeleteVolume { cascade: false, force: true }).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn set_bootable(state: &ApiState, v: &Volume, args: Object) -> ApiResult<Response> {
    let raw = args.get("bootable").ok_or_else(|| Fault::bad_request("Must specify bootable in request."))?;
    let bootable = validate::bool_value("bootable", raw)?;
    let changes = VolumeChanges { bootable: Some(bootable), ..VolumeChanges::default() };
    state
        .repos
        .volumes
        .update_volume(&v.id, &VolumeExpect::default(), &changes)
        .await?
        .ok_or_else(|| Fault::not_found(format!("Volume {} could not be found.", v.id)))?;
    Ok(StatusCode::OK.into_response())
}

/// Sets the admin metadata `readonly` to `True` or `False`, as Cinder writes it.
async fn update_readonly(state: &ApiState, v: &Volume, args: Object) -> ApiResult<Response> {
    let raw = args.get("readonly").ok_or_else(|| Fault::bad_request("Must specify readonly in request."))?;
    let readonly = validate::bool_value("readonly", raw)?;
    if v.status != VolumeStatus::Available {
        return Err(Fault::bad_request(
            "Invalid volume: The volume must be available to update readonly flag.",
        ));
    }
    let items = BTreeMap::from([("readonly".to_owned(), if readonly { "True" } else { "False" }.to_owned())]);
    state.repos.volumes.set_volume_metadata(&v.id, MetadataKind::Admin, &items, false).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
