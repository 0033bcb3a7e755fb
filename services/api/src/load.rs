//! Loading the resources a request names, deciding once what the caller may see: another
//! project's resource reads exactly as one that does not exist.

use ember_common::model::{Snapshot, Volume};

use crate::context::Ctx;
use crate::fault::{ApiResult, Fault};
use crate::state::ApiState;

/// The fault of a volume the caller cannot see.
pub fn volume_not_found(id: &str) -> Fault {
    Fault::not_found(format!("Volume {id} could not be found."))
}

/// The volume `id` if the caller may see it.
pub async fn volume(state: &ApiState, ctx: &Ctx, id: &str) -> ApiResult<Volume> {
    match state.repos.volumes.get_volume(id).await {
        Ok(v) if ctx.may_see(&v.project_id) => Ok(v),
        Ok(_) | Err(ember_common::Error::NotFound { .. }) => Err(volume_not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// The snapshot `id` if the caller may see it.
pub async fn snapshot(state: &ApiState, ctx: &Ctx, id: &str) -> ApiResult<Snapshot> {
    match state.repos.snapshots.get_snapshot(id).await {
        Ok(s) if ctx.may_see(&s.project_id) => Ok(s),
        Ok(_) | Err(ember_common::Error::NotFound { .. }) => {
            Err(Fault::not_found(format!("Snapshot {id} could not be found.")))
        }
        Err(e) => Err(e.into()),
    }
}
