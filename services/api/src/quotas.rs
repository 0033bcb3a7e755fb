//! `/os-quota-sets/{project}` (show with `usage=true`, defaults, admin update and delete)
//! and `/limits`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use ember_common::model::QuotaSet;
use ember_common::model::quota::{self, BACKUP_GIGABYTES, BACKUPS, GIGABYTES, SNAPSHOTS, VOLUMES};

use crate::context::{Ctx, IdPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::listing::bool_param;
use crate::state::ApiState;
use crate::validate;

/// The routes under `/v3/{project_id}`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/os-quota-sets/{id}", get(show).put(update).delete(delete))
        .route("/os-quota-sets/{id}/defaults", get(defaults))
        .route("/limits", get(limits))
}

/// Keys of a quota update that are accepted and not stored.
const NOT_LIMITS: &[&str] = &["id", "tenant_id", "groups"];

/// Callers read their own project's quotas; other projects' are for admins.
fn may_read(ctx: &Ctx, project_id: &str) -> ApiResult<()> {
    if ctx.caller.project_id == project_id { Ok(()) } else { ctx.caller.require_admin() }
}

/// `{"id": .., "<resource>": limit}` or, with usage, `{"<resource>": {limit, in_use, reserved}}`.
fn quota_view(set: &QuotaSet, usage: bool, with_id: bool) -> Value {
    let mut m = Map::new();
    if with_id {
        m.insert("id".into(), json!(set.project_id));
    }
    for (resource, u) in &set.resources {
        let value = if usage {
            json!({"limit": u.limit, "in_use": u.in_use, "reserved": u.reserved})
        } else {
            json!(u.limit)
        };
        m.insert(resource.clone(), value);
    }
    json!({ "quota_set": m })
}

async fn show(State(state): State<ApiState>, ctx: Ctx, Params(p): Params<IdPath>) -> ApiResult<Json<Value>> {
    may_read(&ctx, &p.id)?;
    let usage = ctx.param("usage").map(|t| bool_param("usage", t)).transpose()?.unwrap_or(false);
    let set = state.repos.quotas.project_quotas(&p.id).await?;
    Ok(Json(quota_view(&set, usage, true)))
}

async fn defaults(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
) -> ApiResult<Json<Value>> {
    may_read(&ctx, &p.id)?;
    let mut m = Map::new();
    m.insert("id".into(), json!(p.id));
    for (resource, limit) in state.repos.quotas.quota_defaults().await? {
        m.insert(resource, json!(limit));
    }
    Ok(Json(json!({ "quota_set": m })))
}

/// `PUT` (admin): every key is checked before any is written; a limit below what the
/// project already uses and reserves is refused, as in Cinder.
async fn update(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    ctx.caller.require_admin()?;
    let given = validate::section(&body, "quota_set")?;
    let current = state.repos.quotas.project_quotas(&p.id).await?;
    let mut limits = BTreeMap::new();
    for (resource, value) in given {
        // Cinder skips these keys (cinderclient sends `tenant_id`); `groups` is Cinder's
        // group quota, and Ember has no groups to limit.
        if NOT_LIMITS.contains(&resource.as_str()) {
            continue;
        }
        if !quota::is_known(resource) {
            return Err(Fault::bad_request(format!("Bad key(s) in quota set: {resource}")));
        }
        let limit = quota_limit(resource, value)?;
        let used = current.resources.get(resource).map_or(0, |u| u.in_use + u.reserved);
        if limit >= 0 && limit < used {
            return Err(Fault::bad_request(format!(
                "Invalid input received: Quota {resource} limit must be equal or greater than existing resources. Current usage is {used} and the requested limit is {limit}."
            )));
        }
        limits.insert(resource.clone(), limit);
    }
    for (resource, limit) in &limits {
        state.repos.quotas.set_project_quota(&p.id, resource, *limit).await?;
    }
    let set = state.repos.quotas.project_quotas(&p.id).await?;
    Ok(Json(quota_view(&set, false, false)))
}

/// A limit: an integer (or digit string) of -1 (unlimited) or more.
fn quota_limit(resource: &str, value: &Value) -> ApiResult<i64> {
    let n = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (-1..=validate::MAX_INT).contains(&n) => Ok(n),
        _ => Err(validate::invalid(resource, value, "must be an integer from -1 to 2147483647")),
    }
}

/// `DELETE` (admin): the project's overrides go, the defaults apply again.
async fn delete(State(state): State<ApiState>, ctx: Ctx, Params(p): Params<IdPath>) -> ApiResult<StatusCode> {
    ctx.caller.require_admin()?;
    state.repos.quotas.delete_project_quotas(&p.id).await?;
    Ok(StatusCode::OK)
}

/// `GET /limits`: the caller's absolute limits and usage (admins may name `project_id`
/// from 3.39); no rate limits.
async fn limits(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let project = match ctx.param("project_id") {
        Some(p) if ctx.at_least(39) && ctx.is_admin() => p.to_owned(),
        _ => ctx.caller.project_id.clone(),
    };
    let set = state.repos.quotas.project_quotas(&project).await?;
    let get = |r: &str| set.resources.get(r).copied().unwrap_or_default();
    Ok(Json(json!({
        "limits": {
            "rate": [],
            "absolute": {
                "maxTotalVolumes": get(VOLUMES).limit,
                "maxTotalSnapshots": get(SNAPSHOTS).limit,
                "maxTotalVolumeGigabytes": get(GIGABYTES).limit,
                "maxTotalBackups": get(BACKUPS).limit,
                "maxTotalBackupGigabytes": get(BACKUP_GIGABYTES).limit,
                "totalVolumesUsed": get(VOLUMES).in_use,
                "totalGigabytesUsed": get(GIGABYTES).in_use,
                "totalSnapshotsUsed": get(SNAPSHOTS).in_use,
                "totalBackupsUsed": get(BACKUPS).in_use,
                "totalBackupGigabytesUsed": get(BACKUP_GIGABYTES).in_use,
            }
        }
    })))
}
