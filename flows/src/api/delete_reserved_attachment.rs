//! `attachment_delete_reserved_api`: Cinder's `attachment_delete` of an attachment that
//! was never connected (`reserved`, no connector): no backend has anything to undo, so the
//! API deletes it without a hand-off.
//!
//! Steps:
//!
//! 1. `ReservedAttachmentEntryTask`: checks the attachment is still `reserved` without a
//!    connector (a compare-and-swap that asserts its status).
//! 2. `AttachmentDestroyTask`: soft-deletes it.
//! 3. `VolumeAttachStatusSyncTask`: the volume's status from the attachments left.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{AttachStatus, AttachmentChanges};
use ember_common::ops::RequestContext;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::attachments::{AttachmentDestroy, VolumeAttachStatusSync, own_attachment};
use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::keys::*;

/// The flow's name.
pub const FLOW: &str = "attachment_delete_reserved_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), ATTACHMENT_ID.name(), VOLUME_ID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ReservedAttachmentEntry { deps: deps.clone() })
        .add(AttachmentDestroy { deps: deps.clone() })
        .add(VolumeAttachStatusSync { deps })
}

/// The inputs of one delete of attachment `id` of volume `volume_id`.
pub fn inputs(ctx: &RequestContext, id: &str, volume_id: &str) -> Values {
    Values::new()
        .with(&CONTEXT, ctx.clone())
        .with(&ATTACHMENT_ID, id.to_owned())
        .with(&VOLUME_ID, volume_id.to_owned())
}

/// Checks that the attachment is visible and still `reserved` without a connector (one
/// compare-and-swap that writes no status, so an export started meanwhile wins and this
/// request is refused); a re-run after the delete finds it gone and is done.
/// Revert: the volume's status recomputed from its attachments (a later task may have
/// deleted the attachment before failing).
pub struct ReservedAttachmentEntry {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ReservedAttachmentEntry {
    fn name(&self) -> &str {
        "ReservedAttachmentEntryTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), ATTACHMENT_ID.name(), VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let id = ctx.get(&ATTACHMENT_ID)?;
        let rc = ctx.get(&CONTEXT)?;
        if ctx.attempt() > 1 {
            let gone = self.deps.attachments.get_attachment(&id).await;
            if let Err(ember_common::Error::NotFound { .. }) = gone {
                return Ok(Values::new());
            }
        }
        let a = own_attachment(&self.deps, &rc, &id).await?;
        let unchanged = AttachmentChanges { connector: Some(None), ..AttachmentChanges::default() };
        let held = a.connector.is_none()
            && a.volume_id == ctx.get(&VOLUME_ID)?
            && self
                .deps
                .attachments
                .update_attachment(&id, &[AttachStatus::Reserved], &unchanged)
                .await
                .map_err(domain)?
                .is_some();
        if !held {
            return Err(fail(
                ErrorKind::Conflict,
                format!("Invalid volume attachment: attachment {id} was connected meanwhile."),
            ));
        }
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        self.deps.volumes.sync_attach_status(&ctx.get(&VOLUME_ID)?).await.map_err(domain)?;
        Ok(())
    }
}
