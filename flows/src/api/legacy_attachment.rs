//! `legacy_attachment_create_api`: the attachment the legacy actions
//! (`os-initialize_connection`, `os-attach`) work on, recorded without a reserve of the
//! volume (a legacy client reserved it with `os-reserve`, or attaches it straight away).
//! [`crate::FlowAttachOps`] then runs `attachment_update_api` (a connector) or
//! `attachment_complete_api` (`os-attach`) on it, as for the attachments API.
//!
//! Steps:
//!
//! 1. `LegacyAttachmentEntryTask`: checks the volume may be attached (not in error or
//!    maintenance; a non-multiattach volume has no other live attachment) and records
//!    the attachment in `reserved`, with its instance, host, mountpoint and mode.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{VolumeAttachment, VolumeStatus};
use ember_common::ops::{LegacyAttach, RequestContext};
use ember_drivers::AccessMode;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::keys::*;
use crate::tasks::own_volume;

/// The flow's name.
pub const FLOW: &str = "legacy_attachment_create_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), VOLUME_ID.name(), LEGACY_ATTACH.name(), NEW_ID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW).inputs(INPUTS).add(LegacyAttachmentEntry { deps })
}

/// The inputs of one legacy attachment of volume `volume_id`, whose id is `new_id`.
pub fn inputs(ctx: &RequestContext, volume_id: &str, req: LegacyAttach, new_id: &str) -> Values {
    Values::new()
        .with(&CONTEXT, ctx.clone())
        .with(&VOLUME_ID, volume_id.to_owned())
        .with(&LEGACY_ATTACH, req)
        .with(&NEW_ID, new_id.to_owned())
}

/// Records the attachment in `reserved` once the volume may take it; a re-run finds the
/// row an earlier run made.
/// Revert: soft-deletes the attachment.
pub struct LegacyAttachmentEntry {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for LegacyAttachmentEntry {
    fn name(&self) -> &str {
        "LegacyAttachmentEntryTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME_ID.name(), LEGACY_ATTACH.name(), NEW_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[ATTACHMENT.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let new_id = ctx.get(&NEW_ID)?;
        if let Ok(a) = self.deps.attachments.get_attachment(&new_id).await {
            return Ok(Values::new().with(&ATTACHMENT, a));
        }
        let v = own_volume(&self.deps, &ctx.get(&CONTEXT)?, &ctx.get(&VOLUME_ID)?).await?;
        if v.status.as_str().contains("error") || v.status == VolumeStatus::Maintenance {
            return Err(fail(
                ErrorKind::BadRequest,
                format!("Invalid volume: Volume {} status must not be {}.", v.id, v.status),
            ));
        }
        let live = self.deps.attachments.list_attachments(Some(&v.id), None).await.map_err(domain)?;
        if !v.multiattach && !live.is_empty() {
            return Err(fail(
                ErrorKind::BadRequest,
                format!("Invalid volume: Volume {} is already attached and is not multiattach.", v.id),
            ));
        }
        let req = ctx.get(&LEGACY_ATTACH)?;
        let mode = match req.mode.as_deref() {
            None => AccessMode::Rw,
            Some(m) => AccessMode::parse(m).ok_or_else(|| {
                fail(ErrorKind::BadRequest, format!("Invalid input received: Invalid attach mode {m}."))
            })?,
        };
        let mut a = VolumeAttachment::reserved(new_id, &v.id, &v.project_id, req.instance_uuid);
        a.attached_host = req.host_name;
        a.mountpoint = req.mountpoint;
        a.attach_mode = mode.as_str().to_owned();
        let a = match self.deps.attachments.create_attachment(&a).await {
            Ok(a) => a,
            Err(ember_common::Error::Duplicate { .. }) => {
                self.deps.attachments.get_attachment(&a.id).await.map_err(domain)?
            }
            Err(e) => return Err(domain(e)),
        };
        Ok(Values::new().with(&ATTACHMENT, a))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        self.deps.attachments.soft_delete_attachment(&ctx.get(&NEW_ID)?).await.map_err(domain)?;
        Ok(())
    }
}
