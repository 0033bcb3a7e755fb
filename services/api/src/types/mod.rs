//! `/types`: volume types (list, show, default; admin create, update, delete), their
//! extra specs and their project access.

pub mod access;
pub mod extra_specs;
pub mod views;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use ember_common::model::VolumeType;

use crate::context::{Ctx, IdPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::listing;
use crate::state::ApiState;
use crate::validate::{self, MAX_TEXT};

/// The routes under `/v3/{project_id}`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/types", get(list).post(create))
        .route("/types/default", get(default))
        .route("/types/{id}", get(show).put(update).delete(delete))
        .route("/types/{id}/action", post(access::action))
        .route("/types/{id}/os-volume-type-access", get(access::list))
        .route("/types/{id}/extra_specs", get(extra_specs::index).post(extra_specs::create))
        .route(
            "/types/{id}/extra_specs/{key}",
            get(extra_specs::show).put(extra_specs::update).delete(extra_specs::delete),
        )
}

fn type_not_found(id: &str) -> Fault {
    Fault::not_found(format!("Volume type {id} could not be found."))
}

/// The type `id` if the caller may see it: public ones, and private ones its project has
/// access to; admins see every type.
pub async fn load(state: &ApiState, ctx: &Ctx, id: &str) -> ApiResult<VolumeType> {
    let t = match state.repos.types.get_volume_type(id).await {
        Ok(t) => t,
        Err(ember_common::Error::NotFound { .. }) => return Err(type_not_found(id)),
        Err(e) => return Err(e.into()),
    };
    if ember_common::access::may_use_type(state.repos.types.as_ref(), &ctx.ops(), &t).await? {
        Ok(t)
    } else {
        Err(type_not_found(id))
    }
}

/// `GET /types[?is_public=true|false|all]`, paginated by `limit` and `marker` in memory
/// (a deployment has a handful of types).
async fn list(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let query = listing::parse(&ctx, state.settings.osapi_max_limit)?;
    let is_public = match ctx.param("is_public") {
        Some(text) if text.eq_ignore_ascii_case("none") || text.eq_ignore_ascii_case("all") => None,
        Some(text) => Some(listing::bool_param("is_public", text)?),
        None => Some(true),
    };
    let mut types = if ctx.is_admin() && is_public != Some(true) {
        state.repos.types.list_volume_types(None).await?
    } else {
        state.repos.types.list_volume_types(Some(&ctx.caller.project_id)).await?
    };
    if ctx.is_admin() && is_public == Some(false) {
        types.retain(|t| !t.is_public);
    }
    if let Some(marker) = &query.opts.marker {
        let at = types
            .iter()
            .position(|t| &t.id == marker)
            .ok_or_else(|| Fault::not_found(format!("Marker {marker} could not be found.")))?;
        types.drain(..=at);
    }
    types.truncate(query.page_size as usize);
    let items: Vec<Value> = types.iter().map(|t| views::show(&ctx, t)).collect();
    let mut out = json!({ "volume_types": items });
    if let Some(links) =
        listing::next_links(&ctx, &query, "types", types.len(), types.last().map(|t| t.id.as_str()))
    {
        out["volume_type_links"] = links;
    }
    Ok(Json(out))
}

async fn show(State(state): State<ApiState>, ctx: Ctx, Params(p): Params<IdPath>) -> ApiResult<Json<Value>> {
    let t = load(&state, &ctx, &p.id).await?;
    Ok(Json(json!({ "volume_type": views::show(&ctx, &t) })))
}

/// `GET /types/default`: the configured `default_volume_type`.
async fn default(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let name = &state.settings.default_volume_type;
    let t = state.repos.types.get_volume_type_by_name(name).await.map_err(|e| match e {
        ember_common::Error::NotFound { .. } => {
            Fault::not_found(format!("Default volume type {name} could not be found."))
        }
        other => other.into(),
    })?;
    Ok(Json(json!({ "volume_type": views::show(&ctx, &t) })))
}

/// `POST /types` (admin) → 200.
async fn create(State(state): State<ApiState>, ctx: Ctx, Body(body): Body<Value>) -> ApiResult<Json<Value>> {
    ctx.caller.require_admin()?;
    validate::only_top_key(&body, "volume_type")?;
    let b = validate::section(&body, "volume_type")?;
    validate::only_keys(b, &["name", "description", "extra_specs", "os-volume-type-access:is_public"])?;
    let name = validate::required_string(b, "name", MAX_TEXT)?;
    let mut t = VolumeType::new(uuid::Uuid::new_v4().to_string(), name.trim());
    t.description = validate::opt_string(b, "description", MAX_TEXT)?;
    t.is_public = validate::opt_bool(b, "os-volume-type-access:is_public")?.unwrap_or(true);
    t.extra_specs = validate::opt_metadata(b, "extra_specs")?.unwrap_or_default();
    let created = state.repos.types.create_volume_type(&t).await.map_err(|e| match e {
        ember_common::Error::Duplicate { .. } => {
            Fault::conflict(format!("Volume Type {} already exists.", t.name))
        }
        other => other.into(),
    })?;
    Ok(Json(json!({ "volume_type": views::show(&ctx, &created) })))
}

/// `PUT /types/{id}` (admin): name, description, is_public.
async fn update(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    ctx.caller.require_admin()?;
    validate::only_top_key(&body, "volume_type")?;
    let b = validate::section(&body, "volume_type")?;
    validate::only_keys(b, &["name", "description", "is_public"])?;
    let name = validate::opt_string(b, "name", MAX_TEXT)?;
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(Fault::bad_request("Invalid input received: the volume type name must not be empty"));
    }
    let description = validate::opt_string(b, "description", MAX_TEXT)?;
    let is_public = validate::opt_bool(b, "is_public")?;
    if name.is_none() && !b.contains_key("description") && is_public.is_none() {
        return Err(Fault::bad_request(
            "Specify volume type name, description, is_public or a combination thereof.",
        ));
    }
    load(&state, &ctx, &p.id).await?;
    let described = b.contains_key("description").then_some(description.as_deref());
    let t =
        state.repos.types.update_volume_type(&p.id, name.as_deref(), described, is_public).await.map_err(
            |e| match e {
                ember_common::Error::Duplicate { .. } => {
                    Fault::conflict("A volume type with this name already exists.")
                }
                other => other.into(),
            },
        )?;
    Ok(Json(json!({ "volume_type": views::show(&ctx, &t) })))
}

/// `DELETE /types/{id}` (admin) → 202; refused while a volume uses it or when it is the default.
async fn delete(State(state): State<ApiState>, ctx: Ctx, Params(p): Params<IdPath>) -> ApiResult<StatusCode> {
    ctx.caller.require_admin()?;
    let t = load(&state, &ctx, &p.id).await?;
    if t.name == state.settings.default_volume_type {
        return Err(Fault::bad_request("Default volume type can not be deleted."));
    }
    state.repos.types.delete_volume_type(&p.id).await.map_err(|e| match e {
        ember_common::Error::Invalid(_) => Fault::bad_request("Target volume type is still in use."),
        other => other.into(),
    })?;
    Ok(StatusCode::ACCEPTED)
}
