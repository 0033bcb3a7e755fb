//! `POST /snapshots/{id}/action`: `os-reset_status` and `os-force_delete` (admin).

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use ember_common::model::{SnapshotChanges, SnapshotStatus};

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
    let snapshot = super::load(&state, &ctx, &p.id).await?;
    match name {
        "os-reset_status" => {
            ctx.caller.require_admin()?;
            let text = validate::required_string(&args, "status", 255)?;
            let status = text
                .to_ascii_lowercase()
                .parse::<SnapshotStatus>()
                .map_err(|_| Fault::bad_request(format!("Must specify a valid status: {text}")))?;
            let changes = SnapshotChanges { status: Some(status), ..SnapshotChanges::default() };
            // The operator's repair tool writes whatever the current status (as Cinder).
            state
                .repos
                .snapshots
                .update_snapshot(&snapshot.id, &[], &changes)
                .await?
                .ok_or_else(|| Fault::not_found(format!("Snapshot {} could not be found.", snapshot.id)))?;
            Ok(StatusCode::ACCEPTED)
        }
        "os-force_delete" => {
            ctx.caller.require_admin()?;
            state.ops.delete_snapshot(&ctx.ops(), &snapshot.id, true).await?;
            Ok(StatusCode::ACCEPTED)
        }
        other => Err(Fault::bad_request(format!("There is no such action: {other}"))),
    }
}
