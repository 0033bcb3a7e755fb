//! `/snapshots`: create, list, detail, show, update and delete, metadata and actions.

pub mod actions;
pub mod metadata;
pub mod views;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use ember_common::model::{ListOptions, SnapshotChanges, SnapshotFilter, SnapshotStatus};
use ember_common::ops::CreateSnapshot;

use crate::context::{Ctx, IdPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::listing::{self, ListQuery};
use crate::state::ApiState;
use crate::validate::{self, MAX_TEXT};
use crate::volumes::filters::parse_metadata;

/// The routes under `/v3/{project_id}`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/snapshots", get(list).post(create))
        .route("/snapshots/detail", get(list_detail))
        .route("/snapshots/{id}", get(show).put(update).delete(delete))
        .route("/snapshots/{id}/action", post(actions::action))
        .route("/snapshots/{id}/metadata", get(metadata::index).post(metadata::create).put(metadata::replace))
        .route(
            "/snapshots/{id}/metadata/{key}",
            get(metadata::show).put(metadata::update_key).delete(metadata::delete_key),
        )
}

pub(crate) use crate::load::snapshot as load;

/// `POST /snapshots` → 202 with the new snapshot in `creating`.
#[utoipa::path(
    post,
    path = "/v3/{project_id}/snapshots",
    tag = "snapshots",
    params(("project_id" = String, Path, description = "The caller's project")),
    request_body = crate::openapi::schemas::SnapshotCreateRequest,
    responses(
        (
            status = 202,
            description = "Accepted; the snapshot is `creating`",
            body = crate::openapi::schemas::SnapshotResponse,
        ),
        (
            status = 400,
            description = "Bad input or a volume status that forbids it",
            body = crate::openapi::schemas::Fault,
        ),
        (status = 404, description = "No such volume", body = crate::openapi::schemas::Fault),
        (status = 413, description = "Over quota (overLimit)", body = crate::openapi::schemas::Fault),
    ),
)]
pub(crate) async fn create(
    State(state): State<ApiState>,
    ctx: Ctx,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    let s = validate::section(&body, "snapshot")?;
    validate::only_keys(
        s,
        &["volume_id", "name", "description", "display_name", "display_description", "force", "metadata"],
    )?;
    let volume_id = validate::required_string(s, "volume_id", MAX_TEXT)?;
    let force = match validate::opt_bool(s, "force")? {
        // From 3.66 in-use volumes are snapshotted without asking; asking not to is refused.
        Some(false) if ctx.at_least(66) => {
            return Err(Fault::bad_request(
                "Since microversion 3.66 the 'force' flag is invalid for this request.  For backward \
                 compatability, however, when the 'force' flag is passed with a value evaluating to True, \
                 it is silently ignored.",
            ));
        }
        _ if ctx.at_least(66) => true,
        given => given.unwrap_or(false),
    };
    let req = CreateSnapshot {
        volume_id,
        name: text(s, "name", "display_name")?,
        description: text(s, "description", "display_description")?,
        force,
        metadata: validate::opt_metadata(s, "metadata")?.unwrap_or_default(),
    };
    crate::load::volume(&state, &ctx, &req.volume_id).await?;
    let snapshot = state.ops.create_snapshot(&ctx.ops(), req).await?;
    let view = views::detail(&ctx, &snapshot, false);
    Ok((StatusCode::ACCEPTED, Json(json!({ "snapshot": view }))).into_response())
}

fn text(s: &validate::Object, key: &str, legacy: &str) -> ApiResult<Option<String>> {
    match validate::opt_string(s, key, MAX_TEXT)? {
        Some(v) => Ok(Some(v)),
        None => validate::opt_string(s, legacy, MAX_TEXT),
    }
}

async fn list(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    list_snapshots(&state, &ctx, false).await.map(Json)
}

async fn list_detail(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    list_snapshots(&state, &ctx, true).await.map(Json)
}

async fn list_snapshots(state: &ApiState, ctx: &Ctx, detail: bool) -> ApiResult<Value> {
    let query = listing::parse(ctx, state.settings.osapi_max_limit)?;
    let Some(filter) = snapshot_filter(ctx, &query)? else {
        return Ok(json!({ "snapshots": [] }));
    };
    let snapshots =
        state.repos.snapshots.list_snapshots(&filter, &query.opts).await.map_err(|e| match e {
            ember_common::Error::NotFound { id, .. } => {
                Fault::not_found(format!("Marker {id} could not be found."))
            }
            other => other.into(),
        })?;
    let items: Vec<Value> = snapshots
        .iter()
        .map(|s| if detail { views::detail(ctx, s, true) } else { Value::Object(views::summary(s)) })
        .collect();
    let mut out = json!({ "snapshots": items });
    let path = if detail { "snapshots/detail" } else { "snapshots" };
    let last = snapshots.last().map(|s| s.id.as_str());
    if let Some(links) = listing::next_links(ctx, &query, path, snapshots.len(), last) {
        out["snapshots_links"] = links;
    }
    if query.with_count {
        // The repository has no count query; a project's snapshots are few enough to list.
        let all = ListOptions { sort: query.opts.sort.clone(), ..ListOptions::default() };
        out["count"] = json!(state.repos.snapshots.list_snapshots(&filter, &all).await?.len());
    }
    Ok(out)
}

/// The filter of a snapshot list, or `None` when it can match nothing.
fn snapshot_filter(ctx: &Ctx, query: &ListQuery) -> ApiResult<Option<SnapshotFilter>> {
    let mut f = SnapshotFilter {
        project_id: (!(ctx.is_admin() && query.all_tenants)).then(|| ctx.caller.project_id.clone()),
        ..SnapshotFilter::default()
    };
    for (key, value) in &query.filters {
        match key.as_str() {
            "name" | "display_name" => f.name = Some(value.clone()),
            "status" => match value.parse::<SnapshotStatus>() {
                Ok(s) => f.status = Some(s),
                Err(_) => return Ok(None),
            },
            "volume_id" => f.volume_id = Some(value.clone()),
            "project_id" if ctx.is_admin() && query.all_tenants => f.project_id = Some(value.clone()),
            "metadata" => f.metadata.extend(parse_metadata(value)?),
            // Valid Cinder filters that every Ember snapshot matches.
            "availability_zone" | "consumes_quota" => {}
            _ if ctx.at_least(31) => {
                return Err(Fault::bad_request(format!("Invalid filters {key} are found in query options.")));
            }
            _ => {}
        }
    }
    Ok(Some(f))
}

#[utoipa::path(
    get,
    path = "/v3/{project_id}/snapshots/{id}",
    tag = "snapshots",
    params(
        ("project_id" = String, Path, description = "The caller's project"),
        ("id" = String, Path, description = "The snapshot's id"),
    ),
    responses(
        (status = 200, description = "The snapshot", body = crate::openapi::schemas::SnapshotResponse),
        (
            status = 404,
            description = "No such snapshot visible to the caller",
            body = crate::openapi::schemas::Fault,
        ),
    ),
)]
pub(crate) async fn show(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
) -> ApiResult<Json<Value>> {
    let s = load(&state, &ctx, &p.id).await?;
    Ok(Json(json!({ "snapshot": views::detail(&ctx, &s, true) })))
}

/// `PUT /snapshots/{id}`: name and description.
async fn update(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    validate::only_top_key(&body, "snapshot")?;
    let s = validate::section(&body, "snapshot")?;
    const FIELDS: &[&str] = &["name", "description", "display_name", "display_description"];
    validate::only_keys(s, FIELDS)?;
    if !FIELDS.iter().any(|k| s.contains_key(*k)) {
        // Cinder's schema: anyOf required name, description or their display_ forms.
        return Err(Fault::bad_request(format!(
            "Invalid input for field/attribute snapshot. Value: {}. {{}} is not valid under any of the given schemas",
            Value::Object(s.clone())
        )));
    }
    let mut changes = SnapshotChanges::default();
    for (key, legacy, slot) in [
        ("name", "display_name", &mut changes.name),
        ("description", "display_description", &mut changes.description),
    ] {
        if let Some(k) = [key, legacy].into_iter().find(|k| s.contains_key(*k)) {
            *slot = Some(validate::opt_string(s, k, MAX_TEXT)?);
        }
    }
    load(&state, &ctx, &p.id).await?;
    let updated = state
        .repos
        .snapshots
        .update_snapshot(&p.id, &[], &changes)
        .await?
        .ok_or_else(|| Fault::not_found(format!("Snapshot {} could not be found.", p.id)))?;
    Ok(Json(json!({ "snapshot": views::detail(&ctx, &updated, false) })))
}

/// `DELETE /snapshots/{id}` → 202.
async fn delete(State(state): State<ApiState>, ctx: Ctx, Params(p): Params<IdPath>) -> ApiResult<StatusCode> {
    load(&state, &ctx, &p.id).await?;
    state.ops.delete_snapshot(&ctx.ops(), &p.id, false).await?;
    Ok(StatusCode::ACCEPTED)
}
