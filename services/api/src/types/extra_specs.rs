//! `/types/{id}/extra_specs[/{key}]`; changes are admin only and refused while a volume
//! has the type.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::context::{Ctx, IdPath, KeyPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::state::ApiState;
use crate::validate;

use super::views::visible_specs;

async fn check_unused(state: &ApiState, id: &str) -> ApiResult<()> {
    if state.repos.types.volume_type_in_use(id).await? {
        return Err(Fault::bad_request("Volume Type is currently in use."));
    }
    Ok(())
}

pub async fn index(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
) -> ApiResult<Json<Value>> {
    let t = super::load(&state, &ctx, &p.id).await?;
    Ok(Json(json!({ "extra_specs": visible_specs(&ctx, &t.extra_specs) })))
}

/// `POST`: sets the given specs (others are kept) and echoes them.
pub async fn create(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    ctx.caller.require_admin()?;
    let specs = match body.get("extra_specs") {
        Some(v) => validate::metadata_value("extra_specs", v)?,
        None => return Err(Fault::bad_request("Missing required element 'extra_specs' in request body.")),
    };
    super::load(&state, &ctx, &p.id).await?;
    check_unused(&state, &p.id).await?;
    state.repos.types.set_extra_specs(&p.id, &specs).await?;
    Ok(Json(json!({ "extra_specs": specs })))
}

pub async fn show(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<KeyPath>,
) -> ApiResult<Json<Value>> {
    let t = super::load(&state, &ctx, &p.id).await?;
    let specs = visible_specs(&ctx, &t.extra_specs);
    let value = specs.get(&p.key).ok_or_else(|| {
        Fault::not_found(format!("Volume Type {} has no extra specs with key {}.", p.id, p.key))
    })?;
    Ok(Json(json!({ p.key.as_str(): value })))
}

/// `PUT .../{key}` with `{"<key>": "<value>"}`.
pub async fn update(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<KeyPath>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    ctx.caller.require_admin()?;
    let item: BTreeMap<String, String> = validate::metadata_value("extra_specs", &body)?;
    if item.len() > 1 {
        return Err(Fault::bad_request("Request body contains too many items."));
    }
    if !item.contains_key(&p.key) {
        return Err(Fault::bad_request("Request body and URI mismatch"));
    }
    super::load(&state, &ctx, &p.id).await?;
    check_unused(&state, &p.id).await?;
    state.repos.types.set_extra_specs(&p.id, &item).await?;
    Ok(Json(json!(item)))
}

pub async fn delete(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<KeyPath>,
) -> ApiResult<StatusCode> {
    ctx.caller.require_admin()?;
    super::load(&state, &ctx, &p.id).await?;
    check_unused(&state, &p.id).await?;
    if state.repos.types.delete_extra_spec(&p.id, &p.key).await? {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(Fault::not_found(format!("Volume Type {} has no extra specs with key {}.", p.id, p.key)))
    }
}
