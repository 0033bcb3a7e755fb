//! What a caller may use of resources shared between projects: one decision, taken here
//! for the API's handlers and the flows alike, so a resource another project may not use
//! reads as not found everywhere.

use crate::error::Result;
use crate::model::VolumeType;
use crate::ops::RequestContext;
use crate::repo::VolumeTypeRepo;

/// Whether `caller` may see and use volume type `t`: a public type, a private one its
/// project was given access to, or any type for an admin (Cinder's `volume_type_get` with
/// a project-only context).
pub async fn may_use_type(
    types: &dyn VolumeTypeRepo,
    caller: &RequestContext,
    t: &VolumeType,
) -> Result<bool> {
    if t.is_public || caller.is_admin {
        return Ok(true);
    }
    Ok(types.volume_type_access(&t.id).await?.contains(&caller.project_id))
}
