//! `attachment_complete_api`: Cinder's `attachment_complete` (`os-complete`, 3.44), done
//! in the API as Cinder does.
//!
//! Steps:
//!
//! 1. `AttachmentCompleteTask`: compare-and-swap of the attachment from `attaching` (or
//!    `reserved`) to `attached`, with `attached_at`.
//! 2. `VolumeAttachStatusSyncTask`: the volume's status from its attachments (`in-use`).

use std::sync::Arc;

use chrono::Utc;
use ember_common::ErrorKind;
use ember_common::model::{AttachStatus, AttachmentChanges};
use ember_common::ops::RequestContext;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::attachments::{VolumeAttachStatusSync, own_attachment};
use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::keys::*;

/// The flow's name.
pub const FLOW: &str = "attachment_complete_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), ATTACHMENT_ID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(AttachmentComplete { deps: deps.clone() })
        .add(VolumeAttachStatusSync { deps })
}

/// The inputs of one `os-complete` of attachment `id`.
pub fn inputs(ctx: &RequestContext, id: &str) -> Values {
    Values::new().with(&CONTEXT, ctx.clone()).with(&ATTACHMENT_ID, id.to_owned())
}

/// Moves the attachment to `attached` (`attached_at` now) with one compare-and-swap from
/// `attaching` or `reserved`; one already `attached` is done (a re-run, or a client that
/// completes twice).
/// Revert: the volume's status recomputed from its attachments (the swap may have been
/// made before the failure; an attached attachment is ended by a delete).
pub struct AttachmentComplete {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for AttachmentComplete {
    fn name(&self) -> &str {
        "AttachmentCompleteTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), ATTACHMENT_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let id = ctx.get(&ATTACHMENT_ID)?;
        let a = own_attachment(&self.deps, &ctx.get(&CONTEXT)?, &id).await?;
        if a.attach_status == AttachStatus::Attached {
            return Ok(Values::new().with(&VOLUME_ID, a.volume_id));
        }
        let changes = AttachmentChanges {
            attach_status: Some(AttachStatus::Attached),
            attached_at: Some(Some(Utc::now())),
            ..AttachmentChanges::default()
        };
        let expected = [AttachStatus::Attaching, AttachStatus::Reserved];
        match self.deps.attachments.update_attachment(&id, &expected, &changes).await.map_err(domain)? {
            Some(a) => Ok(Values::new().with(&VOLUME_ID, a.volume_id)),
            None => Err(fail(
                ErrorKind::BadRequest,
                format!(
                    "Invalid volume attachment: attachment {id} status must be attaching or reserved to \
                     complete, but the current status is {}.",
                    a.attach_status
                ),
            )),
        }
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        // By the row: the task may have swapped and then failed, leaving no result.
        let id = ctx.get(&ATTACHMENT_ID)?;
        match self.deps.attachments.get_attachment(&id).await {
            Ok(a) => {
                self.deps.volumes.sync_attach_status(&a.volume_id).await.map_err(domain)?;
                Ok(())
            }
            Err(ember_common::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(domain(e)),
        }
    }
}
