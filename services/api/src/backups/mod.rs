//! `/backups`: create, list, detail, show, update (3.9), delete, restore, the admin actions
//! and the record export and import (Cinder's `cinder/api/contrib/backups.py` and
//! `cinder/api/v3/backups.py`).

pub mod actions;
pub mod record;
pub mod views;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use ember_common::model::{Backup, BackupChanges, BackupFilter, BackupStatus, ListOptions};
use ember_common::ops::{CreateBackup, RestoreBackup};

use crate::context::{Ctx, IdPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::listing::{self, ListQuery};
use crate::state::ApiState;
use crate::validate::{self, MAX_TEXT};

/// The routes under `/v3/{project_id}`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/backups", get(list).post(create))
        .route("/backups/detail", get(list_detail))
        .route("/backups/import_record", post(record::import))
        .route("/backups/{id}", get(show).put(update).delete(delete))
        .route("/backups/{id}/restore", post(restore))
        .route("/backups/{id}/action", post(actions::action))
        .route("/backups/{id}/export_record", get(record::export))
}

/// The backup `id` if the caller may see it; another project's reads as unknown.
pub async fn load(state: &ApiState, ctx: &Ctx, id: &str) -> ApiResult<Backup> {
    match state.repos.backups.get_backup(id).await {
        Ok(b) if ctx.may_see(&b.project_id) => Ok(b),
        Ok(_) | Err(ember_common::Error::NotFound { .. }) => {
            Err(Fault::not_found(format!("Backup {id} could not be found.")))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /backups` → 202 with `{"backup": {"id", "links", "name"}}`.
async fn create(State(state): State<ApiState>, ctx: Ctx, Body(body): Body<Value>) -> ApiResult<Response> {
    let b = validate::section(&body, "backup")?;
    let mut allowed =
        vec!["volume_id", "container", "name", "description", "incremental", "force", "snapshot_id"];
    if ctx.at_least(43) {
        allowed.push("metadata");
    }
    if ctx.at_least(51) {
        allowed.push("availability_zone");
    }
    validate::only_keys(b, &allowed)?;
    let req = CreateBackup {
        volume_id: validate::opt_uuid(b, "volume_id")?.ok_or_else(|| {
            Fault::bad_request(
                "Invalid input for field/attribute backup. Value: 'volume_id' is a required property",
            )
        })?,
        container: validate::opt_string(b, "container", MAX_TEXT)?,
        name: validate::opt_string(b, "name", MAX_TEXT)?,
        description: validate::opt_string(b, "description", MAX_TEXT)?,
        incremental: validate::opt_bool(b, "incremental")?.unwrap_or(false),
        force: validate::opt_bool(b, "force")?.unwrap_or(false),
        snapshot_id: validate::opt_uuid(b, "snapshot_id")?,
        metadata: validate::opt_metadata(b, "metadata")?.unwrap_or_default(),
        availability_zone: validate::opt_string(b, "availability_zone", MAX_TEXT)?,
    };
    crate::volumes::load(&state, &ctx, &req.volume_id).await?;
    let backup = state.backups.create_backup(&ctx.ops(), req).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "backup": views::summary(&ctx, &backup) }))).into_response())
}

async fn list(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    list_backups(&state, &ctx, false).await.map(Json)
}

async fn list_detail(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    list_backups(&state, &ctx, true).await.map(Json)
}

async fn list_backups(state: &ApiState, ctx: &Ctx, detail: bool) -> ApiResult<Value> {
    let query = listing::parse(ctx, state.settings.osapi_max_limit)?;
    let Some(filter) = backup_filter(ctx, &query)? else {
        return Ok(json!({ "backups": [] }));
    };
    let backups = state.repos.backups.list_backups(&filter, &query.opts).await.map_err(|e| match e {
        ember_common::Error::NotFound { id, .. } => {
            Fault::not_found(format!("Marker {id} could not be found."))
        }
        other => other.into(),
    })?;
    let items: Vec<Value> =
        backups.iter().map(|b| if detail { views::detail(ctx, b) } else { views::summary(ctx, b) }).collect();
    let mut out = json!({ "backups": items });
    let path = if detail { "backups/detail" } else { "backups" };
    let last = backups.last().map(|b| b.id.as_str());
    if let Some(links) = listing::next_links(ctx, &query, path, backups.len(), last) {
        out["backups_links"] = links;
    }
    if query.with_count {
        // The repository has no count query; a project's backups are few enough to list.
        let all = ListOptions { sort: query.opts.sort.clone(), ..ListOptions::default() };
        out["count"] = json!(state.repos.backups.list_backups(&filter, &all).await?.len());
    }
    Ok(out)
}

/// The filter of a backup list, or `None` when it can match nothing.
fn backup_filter(ctx: &Ctx, query: &ListQuery) -> ApiResult<Option<BackupFilter>> {
    let mut f = BackupFilter {
        project_id: (!(ctx.is_admin() && query.all_tenants)).then(|| ctx.caller.project_id.clone()),
        ..BackupFilter::default()
    };
    for (key, value) in &query.filters {
        match key.as_str() {
            "name" | "display_name" => f.name = Some(value.clone()),
            "status" => match value.parse::<BackupStatus>() {
                Ok(s) => f.status = Some(s),
                Err(_) => return Ok(None),
            },
            "volume_id" => f.volume_id = Some(value.clone()),
            _ if ctx.at_least(31) => {
                return Err(Fault::bad_request(format!("Invalid filters {key} are found in query options.")));
            }
            _ => {}
        }
    }
    Ok(Some(f))
}

async fn show(State(state): State<ApiState>, ctx: Ctx, Params(p): Params<IdPath>) -> ApiResult<Json<Value>> {
    let b = load(&state, &ctx, &p.id).await?;
    Ok(Json(json!({ "backup": views::detail(&ctx, &b) })))
}

/// `PUT /backups/{id}` (3.9): name and description, and metadata from 3.43.
async fn update(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    if !ctx.at_least(9) {
        return Err(Fault::not_found("The resource could not be found."));
    }
    let b = validate::section(&body, "backup")?;
    let mut allowed = vec!["name", "description"];
    if ctx.at_least(43) {
        allowed.push("metadata");
    }
    validate::only_keys(b, &allowed)?;
    let mut changes = BackupChanges::default();
    if b.contains_key("name") {
        changes.name = Some(validate::opt_string(b, "name", MAX_TEXT)?);
    }
    if b.contains_key("description") {
        changes.description = Some(validate::opt_string(b, "description", MAX_TEXT)?);
    }
    changes.metadata = validate::opt_metadata(b, "metadata")?;
    load(&state, &ctx, &p.id).await?;
    let updated = state
        .repos
        .backups
        .update_backup(&p.id, &[], &changes)
        .await?
        .ok_or_else(|| Fault::not_found(format!("Backup {} could not be found.", p.id)))?;
    Ok(Json(json!({ "backup": views::summary(&ctx, &updated) })))
}

/// `DELETE /backups/{id}` → 202.
async fn delete(State(state): State<ApiState>, ctx: Ctx, Params(p): Params<IdPath>) -> ApiResult<StatusCode> {
    load(&state, &ctx, &p.id).await?;
    state.backups.delete_backup(&ctx.ops(), &p.id, false).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /backups/{id}/restore` → 202 `{"restore": {"backup_id", "volume_id", "volume_name"}}`.
async fn restore(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    let r = validate::section(&body, "restore")?;
    validate::only_keys(r, &["volume_id", "name"])?;
    let req = RestoreBackup {
        volume_id: validate::opt_uuid(r, "volume_id")?,
        name: validate::opt_string(r, "name", MAX_TEXT)?,
    };
    load(&state, &ctx, &p.id).await?;
    if let Some(vid) = &req.volume_id {
        crate::volumes::load(&state, &ctx, vid).await?;
    }
    let done = state.backups.restore_backup(&ctx.ops(), &p.id, req).await?;
    let body = json!({"restore": {"backup_id": done.backup_id, "volume_id": done.volume_id, "volume_name": done.volume_name}});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
