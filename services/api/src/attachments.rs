//! `/attachments` (microversion 3.27+), read side: list, detail and show.
//!
//! Creating, updating, completing and deleting attachments needs the attach flows, which
//! are not built yet; until then those methods answer 405 through the router's fallback.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use ember_common::model::VolumeAttachment;

use crate::context::{Ctx, IdPath, Params};
use crate::fault::{ApiResult, Fault};
use crate::state::ApiState;
use crate::views::opt_time;

/// The first microversion with `/attachments`.
const MIN_MINOR: u16 = 27;

/// The routes under `/v3/{project_id}`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/attachments", get(list))
        .route("/attachments/detail", get(detail))
        .route("/attachments/{id}", get(show))
}

fn require_version(ctx: &Ctx) -> ApiResult<()> {
    if ctx.at_least(MIN_MINOR) { Ok(()) } else { Err(Fault::not_found("The resource could not be found.")) }
}

fn summary(a: &VolumeAttachment) -> Value {
    json!({
        "id": a.id,
        "status": a.attach_status.as_str(),
        "instance": a.instance_uuid,
        "volume_id": a.volume_id,
    })
}

fn detailed(a: &VolumeAttachment) -> Value {
    let mut v = summary(a);
    let empty = |t: Value| if t.is_null() { json!("") } else { t };
    v["attached_at"] = empty(opt_time(a.attached_at));
    v["detached_at"] = empty(opt_time(a.detached_at));
    v["attach_mode"] = json!(a.attach_mode);
    v["connection_info"] = a.connection_info.clone().unwrap_or(Value::Null);
    v
}

/// The attachments the caller may see: its project's, or every project's for an admin
/// asking `all_tenants`, filtered by `volume_id` and `status` when given.
async fn visible(state: &ApiState, ctx: &Ctx) -> ApiResult<Vec<VolumeAttachment>> {
    require_version(ctx)?;
    let all =
        ctx.caller.is_admin && ctx.param("all_tenants").is_some_and(|v| matches!(v, "1" | "true" | "True"));
    let project = (!all).then_some(ctx.caller.project_id.as_str());
    let mut items = state.repos.attachments.list_attachments(ctx.param("volume_id"), project).await?;
    if let Some(status) = ctx.param("status").or_else(|| ctx.param("attach_status")) {
        items.retain(|a| a.attach_status.as_str() == status);
    }
    if let Some(instance) = ctx.param("instance_id") {
        items.retain(|a| a.instance_uuid.as_deref() == Some(instance));
    }
    Ok(items)
}

/// `GET /attachments`
async fn list(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let items = visible(&state, &ctx).await?;
    Ok(Json(json!({ "attachments": items.iter().map(summary).collect::<Vec<_>>() })))
}

/// `GET /attachments/detail`
async fn detail(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let items = visible(&state, &ctx).await?;
    Ok(Json(json!({ "attachments": items.iter().map(detailed).collect::<Vec<_>>() })))
}

/// `GET /attachments/{id}`
async fn show(State(state): State<ApiState>, ctx: Ctx, Params(p): Params<IdPath>) -> ApiResult<Json<Value>> {
    require_version(&ctx)?;
    let id = p.id;
    let not_found = || Fault::not_found(format!("Attachment {id} could not be found."));
    let a = state.repos.attachments.get_attachment(&id).await.map_err(|_| not_found())?;
    if a.project_id != ctx.caller.project_id && !ctx.caller.is_admin {
        return Err(not_found());
    }
    Ok(Json(json!({ "attachment": detailed(&a) })))
}
