//! `/volumes`: create, list, detail, show, update and delete; metadata and actions live
//! in their own modules.

pub mod actions;
pub mod attach;
pub mod create;
pub mod filters;
pub mod metadata;
pub mod views;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use ember_common::model::{Volume, VolumeChanges, VolumeExpect, VolumeStatus};
use ember_common::ops::DeleteVolume;
use ember_common::repo::MetadataKind;

use crate::context::{Ctx, IdPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::listing::{self, bool_param};
use crate::state::ApiState;
use crate::validate::{self, MAX_TEXT};

/// The routes under `/v3/{project_id}`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/volumes", get(list).post(create))
        .route("/volumes/detail", get(list_detail))
        .route("/volumes/summary", get(summary))
        .route("/volumes/{id}", get(show).put(update).delete(delete))
        .route("/volumes/{id}/action", post(actions::action))
        .route("/volumes/{id}/metadata", get(metadata::index).post(metadata::create).put(metadata::replace))
        .route(
            "/volumes/{id}/metadata/{key}",
            get(metadata::show).put(metadata::update_key).delete(metadata::delete_key),
        )
}

pub(crate) use crate::load::volume as load;

/// `{"volume": <detail>}` of one volume.
async fn one(state: &ApiState, ctx: &Ctx, v: &Volume, extended: bool) -> ApiResult<Value> {
    let related = views::related(state, std::slice::from_ref(v)).await?;
    let view = views::detail(ctx, v, related.first().unwrap_or(&views::Related::default()), extended);
    Ok(json!({ "volume": view }))
}

/// `POST /volumes` → 202 with the new volume in `creating`.
#[utoipa::path(
    post,
    path = "/v3/{project_id}/volumes",
    tag = "volumes",
    params(
        ("project_id" = String, Path, description = "The caller's project (left out of the URL from 3.67)"),
    ),
    request_body = crate::openapi::schemas::VolumeCreateRequest,
    responses(
        (
            status = 202,
            description = "Accepted; the volume is `creating`",
            body = crate::openapi::schemas::VolumeResponse,
        ),
        (status = 400, description = "Bad input", body = crate::openapi::schemas::Fault),
        (
            status = 404,
            description = "Unknown type, snapshot, source volume or backup",
            body = crate::openapi::schemas::Fault,
        ),
        (status = 413, description = "Over quota (overLimit)", body = crate::openapi::schemas::Fault),
    ),
)]
pub(crate) async fn create(
    State(state): State<ApiState>,
    ctx: Ctx,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    let mut req = create::parse(&body, ctx.at_least(53), ctx.at_least(47))?;
    req.availability_zone = known_zone(&state, req.availability_zone).await?;
    // A source the caller may not see is "not found", whatever the flows would do with it.
    if let Some(id) = &req.snapshot_id {
        crate::load::snapshot(&state, &ctx, id).await?;
    }
    if let Some(id) = &req.source_volid {
        load(&state, &ctx, id).await?;
    }
    let volume = state.ops.create_volume(&ctx.ops(), req).await?;
    Ok((StatusCode::ACCEPTED, Json(one(&state, &ctx, &volume, false).await?)).into_response())
}

/// A requested zone that no volume service is in is refused (Cinder's
/// `InvalidAvailabilityZone`), or replaced by the default zone with
/// `allow_availability_zone_fallback`, before anything is reserved.
async fn known_zone(state: &ApiState, zone: Option<String>) -> ApiResult<Option<String>> {
    let Some(zone) = zone else { return Ok(None) };
    if crate::services::availability_zones(state).await?.iter().any(|(name, _)| *name == zone) {
        return Ok(Some(zone));
    }
    if state.settings.allow_availability_zone_fallback {
        return Ok(Some(state.settings.default_availability_zone.clone()));
    }
    Err(Fault::bad_request(format!("Availability zone '{zone}' is invalid.")))
}

/// `GET /volumes`: summaries.
#[utoipa::path(
    get,
    path = "/v3/{project_id}/volumes",
    tag = "volumes",
    params(
        ("project_id" = String, Path, description = "The caller's project (left out of the URL from 3.67)"),
        crate::openapi::schemas::VolumeListQuery,
    ),
    responses((status = 200, description = "Summaries (id, name, links)", body = serde_json::Value)),
)]
pub(crate) async fn list(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    list_volumes(&state, &ctx, false).await.map(Json)
}

/// `GET /volumes/detail`: detail views.
#[utoipa::path(
    get,
    path = "/v3/{project_id}/volumes/detail",
    tag = "volumes",
    params(
        ("project_id" = String, Path, description = "The caller's project (left out of the URL from 3.67)"),
        crate::openapi::schemas::VolumeListQuery,
    ),
    responses((status = 200, description = "Detail views", body = crate::openapi::schemas::VolumeList)),
)]
pub(crate) async fn list_detail(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    list_volumes(&state, &ctx, true).await.map(Json)
}

async fn list_volumes(state: &ApiState, ctx: &Ctx, detail: bool) -> ApiResult<Value> {
    let query = listing::parse(ctx, state.settings.osapi_max_limit)?;
    let Some(filter) = filters::volume_filter(ctx, &query)? else {
        return Ok(empty_page(&query));
    };
    let volumes = state.repos.volumes.list_volumes(&filter, &query.opts).await.map_err(|e| match e {
        ember_common::Error::NotFound { id, .. } => {
            Fault::not_found(format!("Marker {id} could not be found."))
        }
        other => other.into(),
    })?;
    let items: Vec<Value> = if detail {
        let related = views::related(state, &volumes).await?;
        volumes.iter().zip(&related).map(|(v, r)| views::detail(ctx, v, r, true)).collect()
    } else {
        volumes.iter().map(|v| views::summary(ctx, v)).collect()
    };
    let mut out = json!({ "volumes": items });
    let path = if detail { "volumes/detail" } else { "volumes" };
    if let Some(links) =
        listing::next_links(ctx, &query, path, volumes.len(), volumes.last().map(|v| v.id.as_str()))
    {
        out["volumes_links"] = links;
    }
    if query.with_count {
        out["count"] = json!(state.repos.volumes.volume_summary(&filter).await?.0);
    }
    Ok(out)
}

/// `GET /volumes/summary` (3.12+): count and total size of the listed volumes, and from
/// 3.36 every metadata key with the values it takes.
async fn summary(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    if !ctx.at_least(12) {
        return Err(Fault::not_found("The resource could not be found."));
    }
    let query = listing::parse(&ctx, state.settings.osapi_max_limit)?;
    let filter = filters::volume_filter(&ctx, &query)?;
    let (count, size) = match &filter {
        Some(f) => state.repos.volumes.volume_summary(f).await?,
        None => (0, 0),
    };
    let mut out = json!({"volume-summary": {"total_count": count, "total_size": size}});
    if ctx.at_least(36) {
        // Sets keep the values sorted, so the answer does not depend on the list order.
        let mut metadata: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        if let Some(f) = &filter {
            for v in state.repos.volumes.list_volumes(f, &Default::default()).await? {
                for (k, val) in v.metadata {
                    metadata.entry(k).or_default().insert(val);
                }
            }
        }
        out["volume-summary"]["metadata"] = json!(metadata);
    }
    Ok(Json(out))
}

fn empty_page(query: &listing::ListQuery) -> Value {
    let mut out = json!({ "volumes": [] });
    if query.with_count {
        out["count"] = json!(0);
    }
    out
}

/// `GET /volumes/{id}`.
#[utoipa::path(
    get,
    path = "/v3/{project_id}/volumes/{id}",
    tag = "volumes",
    params(
        ("project_id" = String, Path, description = "The caller's project (left out of the URL from 3.67)"),
        ("id" = String, Path, description = "The volume's id"),
    ),
    responses(
        (status = 200, description = "The volume", body = crate::openapi::schemas::VolumeResponse),
        (
            status = 404,
            description = "No such volume visible to the caller",
            body = crate::openapi::schemas::Fault,
        ),
    ),
)]
pub(crate) async fn show(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
) -> ApiResult<Json<Value>> {
    let volume = load(&state, &ctx, &p.id).await?;
    one(&state, &ctx, &volume, true).await.map(Json)
}

/// `PUT /volumes/{id}`: name, description and metadata (which replaces the old one).
#[utoipa::path(
    put,
    path = "/v3/{project_id}/volumes/{id}",
    tag = "volumes",
    params(
        ("project_id" = String, Path, description = "The caller's project (left out of the URL from 3.67)"),
        ("id" = String, Path, description = "The volume's id"),
    ),
    request_body = crate::openapi::schemas::VolumeUpdateRequest,
    responses(
        (status = 200, description = "The changed volume", body = crate::openapi::schemas::VolumeResponse),
        (status = 400, description = "Bad input", body = crate::openapi::schemas::Fault),
        (status = 404, description = "No such volume", body = crate::openapi::schemas::Fault),
    ),
)]
pub(crate) async fn update(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    let v = validate::section(&body, "volume")?;
    if ctx.at_least(53) {
        validate::only_keys(v, &["name", "description", "display_name", "display_description", "metadata"])?;
        if v.is_empty() {
            return Err(Fault::bad_request(
                "Invalid input received: the volume must have at least one property",
            ));
        }
    }
    let name = first_present(v, "name", "display_name")?;
    let description = first_present(v, "description", "display_description")?;
    let metadata = validate::opt_metadata(v, "metadata")?;
    load(&state, &ctx, &p.id).await?;
    let changes = VolumeChanges { name, description, ..VolumeChanges::default() };
    let not_maintenance: Vec<VolumeStatus> =
        VolumeStatus::ALL.iter().copied().filter(|s| *s != VolumeStatus::Maintenance).collect();
    let updated = state
        .repos
        .volumes
        .update_volume(&p.id, &VolumeExpect::status_in(&not_maintenance), &changes)
        .await?
        .ok_or_else(|| {
            Fault::bad_request("Invalid volume: The volume cannot be updated during maintenance.")
        })?;
    let mut volume = updated;
    if let Some(items) = metadata {
        volume.metadata =
            state.repos.volumes.set_volume_metadata(&p.id, MetadataKind::User, &items, true).await?;
    }
    one(&state, &ctx, &volume, false).await.map(Json)
}

/// A text field given under its name or its legacy name: `Some(value)` when present
/// (`Some(None)` for null), `None` when absent.
fn first_present(v: &validate::Object, key: &str, legacy: &str) -> ApiResult<Option<Option<String>>> {
    for k in [key, legacy] {
        if v.contains_key(k) {
            return Ok(Some(validate::opt_string(v, k, MAX_TEXT)?));
        }
    }
    Ok(None)
}

/// `DELETE /volumes/{id}[?cascade=true][&force=true]` → 202.
#[utoipa::path(
    delete,
    path = "/v3/{project_id}/volumes/{id}",
    tag = "volumes",
    params(
        ("project_id" = String, Path, description = "The caller's project (left out of the URL from 3.67)"),
        ("id" = String, Path, description = "The volume's id"),
        ("cascade" = Option<bool>, Query, description = "Also deletes the volume's snapshots"),
        ("force" = Option<bool>, Query, description = "3.23+, admin: deletes whatever the status"),
    ),
    responses(
        (status = 202, description = "Accepted; the volume is `deleting`"),
        (status = 400, description = "The volume's status forbids it", body = crate::openapi::schemas::Fault),
        (status = 404, description = "No such volume", body = crate::openapi::schemas::Fault),
    ),
)]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
) -> ApiResult<StatusCode> {
    let cascade = ctx.param("cascade").map(|t| bool_param("cascade", t)).transpose()?.unwrap_or(false);
    let force = match ctx.param("force") {
        Some(text) if ctx.at_least(23) => bool_param("force", text)?,
        _ => false,
    };
    if force {
        ctx.caller.require_admin()?;
    }
    load(&state, &ctx, &p.id).await?;
    state.ops.delete_volume(&ctx.ops(), &p.id, DeleteVolume { cascade, force }).await?;
    Ok(StatusCode::ACCEPTED)
}
