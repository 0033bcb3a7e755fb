//! `attachment_delete_api`: the API side of Cinder's `attachment_delete` for an attachment
//! that was connected (it has a connector). The API request waits for the
//! `attachment_delete_manager` flow it hands off, then answers the volume's remaining
//! attachments.
//!
//! Steps:
//!
//! 1. `AttachmentDetachEntryTask`: compare-and-swap of the attachment to `detaching`
//!    (from any live status; a re-run finds it there).
//! 2. `AttachmentDeleteCastTask`: hands the detach to the volume's backend.

use std::sync::Arc;

use ember_common::model::{AttachStatus, AttachmentChanges};
use ember_common::ops::RequestContext;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::attachments::{attachment_not_found, own_attachment};
use crate::deps::Deps;
use crate::error::domain;
use crate::handoff::{Handoff, hand_off, request_flow_id, volume_topic, withdraw};
use crate::keys::*;
use crate::manager::delete_attachment::FLOW as MANAGER_FLOW;
use crate::tasks::backend;

/// The flow's name.
pub const FLOW: &str = "attachment_delete_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), ATTACHMENT_ID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(AttachmentDetachEntry { deps: deps.clone() })
        .add(AttachmentDeleteCast { deps })
}

/// The inputs of one delete of attachment `id`.
pub fn inputs(ctx: &RequestContext, id: &str) -> Values {
    Values::new().with(&CONTEXT, ctx.clone()).with(&ATTACHMENT_ID, id.to_owned())
}

/// The id of the volume-side flow that the api flow `api_flow_id` hands off for
/// attachment `id`; the API waits for it.
pub fn manager_flow_id(id: &str, api_flow_id: &str) -> String {
    request_flow_id(MANAGER_FLOW, id, api_flow_id)
}

/// The statuses a detach starts from.
const DETACHABLE: &[AttachStatus] = &[
    AttachStatus::Reserved,
    AttachStatus::Attaching,
    AttachStatus::Attached,
    AttachStatus::Detaching,
    AttachStatus::ErrorAttaching,
    AttachStatus::ErrorDetaching,
];

/// Moves the attachment to `detaching` with one compare-and-swap from any live status
/// (its previous status kept in the result).
/// Revert: back from `detaching` to the status it had (without a result: `attached` if it
/// was attached once, else `error_detaching`).
pub struct AttachmentDetachEntry {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for AttachmentDetachEntry {
    fn name(&self) -> &str {
        "AttachmentDetachEntryTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), ATTACHMENT_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[ATTACHMENT.name(), PREVIOUS_ATTACH_STATUS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let id = ctx.get(&ATTACHMENT_ID)?;
        let a = own_attachment(&self.deps, &ctx.get(&CONTEXT)?, &id).await?;
        let changes = AttachmentChanges {
            attach_status: Some(AttachStatus::Detaching),
            ..AttachmentChanges::default()
        };
        let swapped =
            self.deps.attachments.update_attachment(&id, DETACHABLE, &changes).await.map_err(domain)?;
        let swapped = swapped.ok_or_else(|| attachment_not_found(&id))?;
        Ok(Values::new().with(&ATTACHMENT, swapped).with(&PREVIOUS_ATTACH_STATUS, a.attach_status))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let id = ctx.get(&ATTACHMENT_ID)?;
        let previous = match ctx.result().map(|r| r.get(&PREVIOUS_ATTACH_STATUS)).transpose()?.flatten() {
            Some(previous) => previous,
            // The task failed or died after its swap: the row says what it was, as far as
            // it can (attached once, else an error status a delete accepts again).
            None => match self.deps.attachments.get_attachment(&id).await {
                Ok(a) if a.attached_at.is_some() => AttachStatus::Attached,
                Ok(_) => AttachStatus::ErrorDetaching,
                Err(ember_common::Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(domain(e)),
            },
        };
        if previous == AttachStatus::Detaching {
            return Ok(());
        }
        let changes = AttachmentChanges { attach_status: Some(previous), ..AttachmentChanges::default() };
        self.deps
            .attachments
            .update_attachment(&id, &[AttachStatus::Detaching], &changes)
            .await
            .map_err(domain)?;
        Ok(())
    }
}

/// Hands the detach to the volume's backend: records `attachment_delete_manager` (one per
/// request) and wakes `volume.<host@backend>`.
/// Revert: withdraws the hand-off if no process took it yet; else fails, leaving the
/// attachment to the receiving flow.
pub struct AttachmentDeleteCast {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for AttachmentDeleteCast {
    fn name(&self) -> &str {
        "AttachmentDeleteCastTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), ATTACHMENT.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let a = ctx.get(&ATTACHMENT)?;
        let v = self.deps.volumes.get_volume(&a.volume_id).await.map_err(domain)?;
        let backend = backend(&v)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&ATTACHMENT_ID, a.id.clone())
            .with(&VOLUME_ID, v.id.clone())
            .with(&BACKEND, backend.clone());
        let h = Handoff {
            name: MANAGER_FLOW,
            id: manager_flow_id(&a.id, ctx.flow_id()),
            topic: volume_topic(&backend),
            subject: &v.id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        withdraw(&self.deps, &manager_flow_id(&ctx.get(&ATTACHMENT)?.id, ctx.flow_id())).await
    }
}
