//! Private volume types: `GET /types/{id}/os-volume-type-access` and the
//! `addProjectAccess` / `removeProjectAccess` actions (admin).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::context::{Ctx, IdPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::state::ApiState;
use crate::validate;
use crate::volumes::actions::one_action;

pub async fn list(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
) -> ApiResult<Json<Value>> {
    ctx.caller.require_admin()?;
    let t = super::load(&state, &ctx, &p.id).await?;
    if t.is_public {
        return Err(Fault::not_found("Access list not available for public volume types."));
    }
    let projects = state.repos.types.volume_type_access(&p.id).await?;
    let items: Vec<Value> =
        projects.iter().map(|project| json!({"volume_type_id": p.id, "project_id": project})).collect();
    Ok(Json(json!({ "volume_type_access": items })))
}

pub async fn action(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<StatusCode> {
    ctx.caller.require_admin()?;
    let (name, args) = one_action(&body)?;
    let project = validate::required_string(&args, "project", 255)?;
    let t = super::load(&state, &ctx, &p.id).await?;
    match name {
        "addProjectAccess" => {
            if t.is_public {
                return Err(Fault::bad_request(
                    "Invalid volume type: Type access modification is not applicable to public volume type.",
                ));
            }
            state.repos.types.add_volume_type_access(&p.id, &project).await.map_err(|e| match e {
                ember_common::Error::Duplicate { .. } => Fault::conflict(format!(
                    "Volume type access for {} / {project} combination already exists.",
                    p.id
                )),
                other => other.into(),
            })?;
        }
        "removeProjectAccess" => {
            if !state.repos.types.remove_volume_type_access(&p.id, &project).await? {
                return Err(Fault::not_found(format!(
                    "Volume type access not found for {} / {project} combination.",
                    p.id
                )));
            }
        }
        other => return Err(Fault::bad_request(format!("There is no such action: {other}"))),
    }
    Ok(StatusCode::ACCEPTED)
}
