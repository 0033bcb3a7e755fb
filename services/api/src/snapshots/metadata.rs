//! `/snapshots/{id}/metadata[/{key}]`: a snapshot's metadata.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::context::{Ctx, IdPath, KeyPath, Params};
use crate::etag;
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::state::ApiState;
use crate::volumes::metadata::{meta_item, metadata_body};

fn item_not_found() -> Fault {
    Fault::not_found("Metadata item was not found")
}

pub async fn index(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
) -> ApiResult<Response> {
    let s = super::load(&state, &ctx, &p.id).await?;
    Ok(etag::metadata_response(&ctx, s.metadata))
}

pub async fn create(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    headers: HeaderMap,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    let items = metadata_body(&body)?;
    let current = super::load(&state, &ctx, &p.id).await?;
    etag::check(&ctx, &headers, &current.metadata)?;
    let all = state.repos.snapshots.set_snapshot_metadata(&p.id, &items, false).await?;
    Ok(etag::metadata_response(&ctx, all))
}

pub async fn replace(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    headers: HeaderMap,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    let items = metadata_body(&body)?;
    let current = super::load(&state, &ctx, &p.id).await?;
    etag::check(&ctx, &headers, &current.metadata)?;
    let all = state.repos.snapshots.set_snapshot_metadata(&p.id, &items, true).await?;
    Ok(etag::metadata_response(&ctx, all))
}

pub async fn show(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<KeyPath>,
) -> ApiResult<Json<Value>> {
    let s = super::load(&state, &ctx, &p.id).await?;
    let value = s.metadata.get(&p.key).ok_or_else(item_not_found)?;
    Ok(Json(json!({ "meta": { p.key.as_str(): value } })))
}

pub async fn update_key(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<KeyPath>,
    headers: HeaderMap,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    let items = meta_item(&body, &p.key)?;
    let current = super::load(&state, &ctx, &p.id).await?;
    etag::check(&ctx, &headers, &current.metadata)?;
    state.repos.snapshots.set_snapshot_metadata(&p.id, &items, false).await?;
    Ok(Json(json!({ "meta": items })))
}

/// Removes one key. The snapshot repository has no single-key delete, so the remaining
/// keys are written back as a whole; a concurrent change to another key may be lost.
pub async fn delete_key(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<KeyPath>,
) -> ApiResult<StatusCode> {
    let mut s = super::load(&state, &ctx, &p.id).await?;
    if s.metadata.remove(&p.key).is_none() {
        return Err(item_not_found());
    }
    state.repos.snapshots.set_snapshot_metadata(&p.id, &s.metadata, true).await?;
    Ok(StatusCode::OK)
}
