//! `GET /backups/{id}/export_record` and `POST /backups/import_record` (admin): a backup's
//! row as an opaque `backup_url` (base64 of JSON), so another deployment that shares the
//! store can take the backup in.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use ember_common::model::quota::backup_deltas;
use ember_common::model::{Backup, BackupStatus};

use crate::context::{Ctx, IdPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::state::ApiState;
use crate::validate::{self, MAX_TEXT};

/// `GET /backups/{id}/export_record` → `{"backup-record": {"backup_service", "backup_url"}}`.
pub async fn export(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
) -> ApiResult<Json<Value>> {
    ctx.caller.require_admin()?;
    let b = super::load(&state, &ctx, &p.id).await?;
    if b.status != BackupStatus::Available {
        return Err(Fault::bad_request("Invalid backup: Backup status must be available and not restoring."));
    }
    let row = serde_json::to_vec(&b).map_err(|e| Fault::bad_request(format!("Invalid backup: {e}")))?;
    Ok(Json(json!({"backup-record": {
        "backup_service": b.service,
        "backup_url": STANDARD.encode(row),
    }})))
}

/// Inserts an imported backup with its quota (`backups` 1, `backup_gigabytes` its size),
/// as Cinder's import counts it: reserved first (413 when over), committed once the row
/// is in, rolled back if the insert fails. A crash between the insert and the commit
/// leaves the reservation to expire and the usage one backup short, which
/// `QuotaRepo::sync_usage` (Cinder's quota sync) repairs.
async fn insert_counted(state: &ApiState, b: &Backup) -> ApiResult<Backup> {
    let quotas = &state.repos.quotas;
    let key = format!("backup_import:{}:{}", b.id, uuid::Uuid::new_v4());
    let expire = chrono::Utc::now() + chrono::Duration::hours(1);
    let ids = quotas
        .reserve_once(&key, &b.project_id, &backup_deltas(b.size), expire)
        .await
        .map_err(|e| over_quota(e, b.size))?;
    match state.repos.backups.create_backup(b).await {
        Ok(created) => {
            quotas.commit(&ids).await?;
            Ok(created)
        }
        Err(e) => {
            if let Err(rollback) = quotas.rollback(&ids).await {
                tracing::warn!(error = %rollback, "rolling back an import's reservation failed; it expires");
            }
            Err(e.into())
        }
    }
}

/// Cinder's `BackupLimitExceeded` and `VolumeBackupSizeExceedsAvailableQuota` (413).
fn over_quota(err: ember_common::Error, size: i64) -> Fault {
    let ember_common::Error::OverQuota(overs) = &err else { return err.into() };
    let Some(over) = overs.first() else { return err.into() };
    let u = &over.usage;
    let message = if over.resource.contains("gigabytes") {
        format!(
            "Requested backup exceeds allowed Backup gigabytes quota. Requested {size}G, quota is {}G and \
             {}G has been consumed.",
            u.limit,
            u.in_use + u.reserved
        )
    } else {
        format!("Maximum number of backups allowed ({}) exceeded", u.limit)
    };
    Fault::from(ember_common::ServiceError::new(ember_common::ErrorKind::OverLimit, message))
}

/// `POST /backups/import_record` → 201 with the backup's summary: the row comes back
/// `available` under its own id, in the caller's project, on a live backup service.
pub async fn import(State(state): State<ApiState>, ctx: Ctx, Body(body): Body<Value>) -> ApiResult<Response> {
    ctx.caller.require_admin()?;
    let r = validate::section(&body, "backup-record")?;
    validate::only_keys(r, &["backup_service", "backup_url"])?;
    let service = validate::required_string(r, "backup_service", MAX_TEXT)?;
    let url = validate::required_string(r, "backup_url", 1 << 20)?;
    let invalid =
        |why: String| Fault::bad_request(format!("Invalid backup: Can't parse backup record: {why}"));
    let bytes = STANDARD.decode(url.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    let mut b: Backup = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if b.service.as_deref() != Some(service.as_str()) {
        return Err(invalid(format!("backup_service {service} is not the record's")));
    }
    match state.repos.backups.get_backup(&b.id).await {
        Ok(_) => return Err(Fault::bad_request(format!("Invalid backup: Backup {} already exists.", b.id))),
        Err(ember_common::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let hosts = state.backup_hosts().await?;
    let host = match b.host.clone().filter(|h| hosts.contains(h)) {
        Some(h) => h,
        None => hosts.first().cloned().ok_or_else(|| {
            Fault::from(ember_common::ServiceError::new(
                ember_common::ErrorKind::Unavailable,
                "Service cinder-backup could not be found.",
            ))
        })?,
    };
    b.host = Some(host);
    b.status = BackupStatus::Available;
    b.project_id = ctx.caller.project_id.clone();
    b.user_id = ctx.caller.user_id.clone();
    b.parent_id = None;
    b.num_dependent_backups = 0;
    b.deleted = false;
    b.deleted_at = None;
    let created = insert_counted(&state, &b).await?;
    Ok((StatusCode::CREATED, Json(json!({"backup": super::views::summary(&ctx, &created)}))).into_response())
}
