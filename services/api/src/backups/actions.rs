//! `POST /backups/{id}/action`: `os-reset_status` and `os-force_delete` (admin).

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use ember_common::model::{BackupChanges, BackupStatus};

use crate::context::{Ctx, IdPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::state::ApiState;
use crate::validate;
use crate::volumes::actions::one_action;

pub async fn action(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<StatusCode> {
    let (name, args) = one_action(&body)?;
    let backup = super::load(&state, &ctx, &p.id).await?;
    match name {
        "os-reset_status" => {
            ctx.caller.require_admin()?;
            let text = validate::required_string(&args, "status", 255)?;
            // Cinder's validator: an operator may only set `available` or `error`.
            let status = match text.to_ascii_lowercase().as_str() {
                "available" => BackupStatus::Available,
                "error" => BackupStatus::Error,
                _ => {
                    return Err(Fault::bad_request(format!(
                        "Invalid input for field/attribute status. Value: {text}. '{text}' is not one of \
                         ['available', 'error']"
                    )));
                }
            };
            let changes = BackupChanges { status: Some(status), ..BackupChanges::default() };
            // The operator's repair tool writes whatever the current status (as Cinder).
            state
                .repos
                .backups
                .update_backup(&backup.id, &[], &changes)
                .await?
                .ok_or_else(|| Fault::not_found(format!("Backup {} could not be found.", backup.id)))?;
            Ok(StatusCode::ACCEPTED)
        }
        "os-force_delete" => {
            ctx.caller.require_admin()?;
            state.backups.delete_backup(&ctx.ops(), &backup.id, true).await?;
            Ok(StatusCode::ACCEPTED)
        }
        other => Err(Fault::bad_request(format!("There is no such action: {other}"))),
    }
}
