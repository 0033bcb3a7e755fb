//! `/volumes/{id}/metadata[/{key}]`: a volume's user metadata.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use ember_common::repo::MetadataKind;

use crate::context::{Ctx, IdPath, KeyPath, Params};
use crate::etag;
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::state::ApiState;
use crate::validate;

/// `{"metadata": {...}}` of a body, checked.
pub fn metadata_body(body: &Value) -> ApiResult<BTreeMap<String, String>> {
    match body.get("metadata") {
        Some(v) => validate::metadata_value("metadata", v),
        None => Err(Fault::bad_request("Malformed request body: 'metadata' is required")),
    }
}

/// `{"meta": {key: value}}` of a body for the item at `key`.
pub fn meta_item(body: &Value, key: &str) -> ApiResult<BTreeMap<String, String>> {
    let items = match body.get("meta") {
        Some(v) => validate::metadata_value("meta", v)?,
        None => return Err(Fault::bad_request("Malformed request body: 'meta' is required")),
    };
    if items.len() > 1 {
        return Err(Fault::bad_request("Request body contains too many items"));
    }
    if !items.contains_key(key) {
        return Err(Fault::bad_request("Request body and URI mismatch"));
    }
    Ok(items)
}

fn item_not_found() -> Fault {
    Fault::not_found("Metadata item was not found")
}

#[utoipa::path(
    get,
    path = "/v3/{project_id}/volumes/{id}/metadata",
    tag = "volumes",
    params(
        ("project_id" = String, Path, description = "The caller's project (left out of the URL from 3.67)"),
        ("id" = String, Path, description = "The volume's id"),
    ),
    responses(
        (
            status = 200,
            description = "The metadata; from 3.15 with an `ETag` header",
            body = crate::openapi::schemas::Metadata,
            headers(("ETag" = String, description = "MD5 of the metadata document (3.15+)")),
        ),
    ),
)]
pub async fn index(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
) -> ApiResult<Response> {
    let v = super::load(&state, &ctx, &p.id).await?;
    Ok(etag::metadata_response(&ctx, v.metadata))
}

/// `POST`: adds or changes the given keys, keeps the others.
#[utoipa::path(
    post,
    path = "/v3/{project_id}/volumes/{id}/metadata",
    tag = "volumes",
    params(
        ("project_id" = String, Path, description = "The caller's project (left out of the URL from 3.67)"),
        ("id" = String, Path, description = "The volume's id"),
        (
            "If-Match" = Option<String>,
            Header,
            description = "3.15+: the ETag read before; another one answers 412",
        ),
    ),
    request_body = crate::openapi::schemas::Metadata,
    responses(
        (
            status = 200,
            description = "All the metadata after the change",
            body = crate::openapi::schemas::Metadata,
        ),
        (status = 412, description = "If-Match names another ETag; the body is empty, as Cinder's"),
    ),
)]
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
    let all = state.repos.volumes.set_volume_metadata(&p.id, MetadataKind::User, &items, false).await?;
    Ok(etag::metadata_response(&ctx, all))
}

/// `PUT`: replaces the whole metadata.
#[utoipa::path(
    put,
    path = "/v3/{project_id}/volumes/{id}/metadata",
    tag = "volumes",
    params(
        ("project_id" = String, Path, description = "The caller's project (left out of the URL from 3.67)"),
        ("id" = String, Path, description = "The volume's id"),
        (
            "If-Match" = Option<String>,
            Header,
            description = "3.15+: the ETag read before; another one answers 412",
        ),
    ),
    request_body = crate::openapi::schemas::Metadata,
    responses(
        (status = 200, description = "The new metadata", body = crate::openapi::schemas::Metadata),
        (status = 412, description = "If-Match names another ETag; the body is empty, as Cinder's"),
    ),
)]
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
    let all = state.repos.volumes.set_volume_metadata(&p.id, MetadataKind::User, &items, true).await?;
    Ok(etag::metadata_response(&ctx, all))
}

pub async fn show(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<KeyPath>,
) -> ApiResult<Json<Value>> {
    let v = super::load(&state, &ctx, &p.id).await?;
    let value = v.metadata.get(&p.key).ok_or_else(item_not_found)?;
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
    state.repos.volumes.set_volume_metadata(&p.id, MetadataKind::User, &items, false).await?;
    Ok(Json(json!({ "meta": items })))
}

pub async fn delete_key(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<KeyPath>,
) -> ApiResult<StatusCode> {
    super::load(&state, &ctx, &p.id).await?;
    if state.repos.volumes.delete_volume_metadata(&p.id, MetadataKind::User, &p.key).await? {
        Ok(StatusCode::OK)
    } else {
        Err(item_not_found())
    }
}
