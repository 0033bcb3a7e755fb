//! `/attachments` (microversion 3.27+): create, update, complete (3.44+), delete, list,
//! detail and show, as `cinder/api/v3/attachments.py` serves them.
//!
//! Bodies are checked here ([`body`]); the work (statuses, exports, connection info) is
//! [`AttachOps`](ember_common::ops::AttachOps)'. Another project's volume or attachment
//! is answered exactly as an unknown one.

pub mod body;
pub mod views;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use ember_common::model::{AttachStatus, AttachmentFilter, VolumeAttachment};

use crate::context::{Ctx, IdPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::listing::{self, ListQuery};
use crate::state::ApiState;

/// The first microversion with `/attachments`.
const MIN_MINOR: u16 = 27;
/// The first microversion with `os-complete`.
const COMPLETE_MINOR: u16 = 44;
/// The first microversion with `mode` in a create body.
const MODE_MINOR: u16 = 54;

/// The routes under `/v3/{project_id}`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/attachments", get(list).post(create))
        .route("/attachments/detail", get(detail))
        .route("/attachments/{id}", get(show).put(update).delete(delete))
        .route("/attachments/{id}/action", post(action))
}

/// Below `3.minor` the method does not exist: Cinder answers 404.
fn require_version(ctx: &Ctx, minor: u16) -> ApiResult<()> {
    if ctx.at_least(minor) { Ok(()) } else { Err(Fault::not_found("The resource could not be found.")) }
}

fn attachment_not_found(id: &str) -> Fault {
    Fault::not_found(format!("Volume attachment could not be found with filter: attachment_id = {id}."))
}

/// The attachment `id` if the caller may see it; another project's is "not found".
pub async fn load(state: &ApiState, ctx: &Ctx, id: &str) -> ApiResult<VolumeAttachment> {
    match state.repos.attachments.get_attachment(id).await {
        Ok(a) if ctx.may_see(&a.project_id) => Ok(a),
        Ok(_) | Err(ember_common::Error::NotFound { .. }) => Err(attachment_not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// `POST /attachments` → 200 with the attachment: `reserved`, or `attaching` with its
/// connection info when a connector was given.
async fn create(State(state): State<ApiState>, ctx: Ctx, Body(body): Body<Value>) -> ApiResult<Json<Value>> {
    require_version(&ctx, MIN_MINOR)?;
    let req = body::create(&body, ctx.at_least(MODE_MINOR))?;
    crate::load::volume(&state, &ctx, &req.volume_id).await?;
    let attachment = state.attach.create_attachment(&ctx.ops(), req).await?;
    Ok(Json(json!({ "attachment": views::detail(&attachment) })))
}

/// `PUT /attachments/{id}` → 200: the volume exported to the connector, `attaching`.
async fn update(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    require_version(&ctx, MIN_MINOR)?;
    let connector = body::update(&body)?;
    load(&state, &ctx, &p.id).await?;
    let attachment = state.attach.update_attachment(&ctx.ops(), &p.id, connector).await?;
    Ok(Json(json!({ "attachment": views::detail(&attachment) })))
}

/// `POST /attachments/{id}/action` with `{"os-complete": ...}` (3.44+) → 204. Cinder
/// gives the action no schema and reads nothing of its value, which clients fill as
/// they like: `null`, `{}`, or the attachment's id (openstacksdk).
async fn action(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    require_version(&ctx, MIN_MINOR)?;
    let name = body::action_name(&body)?;
    if name != "os-complete" {
        return Err(Fault::bad_request(format!("There is no such action: {name}")));
    }
    require_version(&ctx, COMPLETE_MINOR)?;
    load(&state, &ctx, &p.id).await?;
    state.attach.complete_attachment(&ctx.ops(), &p.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /attachments/{id}` → 200 with the summaries of the volume's other attachments.
async fn delete(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
) -> ApiResult<Json<Value>> {
    require_version(&ctx, MIN_MINOR)?;
    load(&state, &ctx, &p.id).await?;
    let remaining = state.attach.delete_attachment(&ctx.ops(), &p.id).await?;
    Ok(Json(views::list(&remaining, false)))
}

/// `GET /attachments`: summaries.
async fn list(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    page(&state, &ctx, false).await.map(Json)
}

/// `GET /attachments/detail`: detail views.
async fn detail(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    page(&state, &ctx, true).await.map(Json)
}

/// `GET /attachments/{id}`.
async fn show(State(state): State<ApiState>, ctx: Ctx, Params(p): Params<IdPath>) -> ApiResult<Json<Value>> {
    require_version(&ctx, MIN_MINOR)?;
    let a = load(&state, &ctx, &p.id).await?;
    Ok(Json(json!({ "attachment": views::detail(&a) })))
}

/// One page of the attachments the caller may see, with a next link when it is full.
async fn page(state: &ApiState, ctx: &Ctx, detailed: bool) -> ApiResult<Value> {
    require_version(ctx, MIN_MINOR)?;
    let query = listing::parse(ctx, state.settings.osapi_max_limit)?;
    let Some(filter) = filter(ctx, &query)? else {
        return Ok(views::list(&[], detailed));
    };
    let items =
        state.repos.attachments.list_attachments_by(&filter, &query.opts).await.map_err(|e| match e {
            ember_common::Error::NotFound { id, .. } => {
                Fault::not_found(format!("Marker {id} could not be found."))
            }
            other => other.into(),
        })?;
    let mut out = views::list(&items, detailed);
    let path = if detailed { "attachments/detail" } else { "attachments" };
    if let Some(links) =
        listing::next_links(ctx, &query, path, items.len(), items.last().map(|a| a.id.as_str()))
    {
        out["attachments_links"] = links;
    }
    Ok(out)
}

/// The filter of a list request (`volume_id`, `instance_id`, `status` or `attach_status`),
/// or `None` when it can match nothing (an unknown status). Every project's attachments
/// for an admin asking `all_tenants`. Unknown filters are refused from 3.31 on, ignored
/// before, as for volumes.
fn filter(ctx: &Ctx, query: &ListQuery) -> ApiResult<Option<AttachmentFilter>> {
    let mut f = AttachmentFilter {
        project_id: (!(ctx.is_admin() && query.all_tenants)).then(|| ctx.caller.project_id.clone()),
        ..AttachmentFilter::default()
    };
    for (key, value) in &query.filters {
        match key.as_str() {
            "volume_id" => f.volume_id = Some(value.clone()),
            "instance_id" => f.instance_uuid = Some(value.clone()),
            "status" | "attach_status" => match value.parse::<AttachStatus>() {
                Ok(s) => f.attach_status = Some(s),
                Err(_) => return Ok(None),
            },
            _ if ctx.at_least(31) => {
                return Err(Fault::bad_request(format!("Invalid filters {key} are found in query options.")));
            }
            _ => {}
        }
    }
    Ok(Some(f))
}
