//! `attachment_update_api`: the API side of Cinder's `attachment_update` (an attachment
//! create with a connector runs it too). The API request then waits for the
//! `attachment_update_manager` flow it handed off, as Cinder waits for its RPC call.
//!
//! Steps:
//!
//! 1. `AttachmentUpdateEntryTask`: reads the attachment (which must be `reserved` or
//!    `attaching`: Cinder lets a client connect again, with another connector) and its
//!    volume (not in error, placed).
//! 2. `AttachmentUpdateCastTask`: hands the export to the volume's backend
//!    (`volume.<host@backend>`), connector and all.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::AttachStatus;
use ember_common::ops::RequestContext;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::attachments::{connector, own_attachment};
use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::handoff::{Handoff, hand_off, request_flow_id, volume_topic, withdraw};
use crate::keys::*;
use crate::manager::update_attachment::FLOW as MANAGER_FLOW;
use crate::tasks::backend;

/// The flow's name.
pub const FLOW: &str = "attachment_update_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), ATTACHMENT_ID.name(), CONNECTOR.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(AttachmentUpdateEntry { deps: deps.clone() })
        .add(AttachmentUpdateCast { deps })
}

/// The inputs of one update of attachment `id` with `connector`.
pub fn inputs(ctx: &RequestContext, id: &str, connector: serde_json::Value) -> Values {
    Values::new().with(&CONTEXT, ctx.clone()).with(&ATTACHMENT_ID, id.to_owned()).with(&CONNECTOR, connector)
}

/// The id of the volume-side flow that the api flow `api_flow_id` hands off for
/// attachment `id`; the API waits for it.
pub fn manager_flow_id(id: &str, api_flow_id: &str) -> String {
    request_flow_id(MANAGER_FLOW, id, api_flow_id)
}

/// Checks the connector's shape, that the attachment may be connected (`reserved`, or
/// `attaching` again, with this or another connector, as Cinder allows) and that its volume is placed and not in
/// error (Cinder's 409 for a volume in error).
/// Revert: nothing (it changed nothing).
pub struct AttachmentUpdateEntry {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for AttachmentUpdateEntry {
    fn name(&self) -> &str {
        "AttachmentUpdateEntryTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), ATTACHMENT_ID.name(), CONNECTOR.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[ATTACHMENT.name(), VOLUME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let id = ctx.get(&ATTACHMENT_ID)?;
        let wanted = ctx.get(&CONNECTOR)?;
        connector(&wanted)?;
        let a = own_attachment(&self.deps, &ctx.get(&CONTEXT)?, &id).await?;
        if !matches!(a.attach_status, AttachStatus::Reserved | AttachStatus::Attaching) {
            return Err(fail(
                ErrorKind::BadRequest,
                format!(
                    "Invalid volume attachment: attachment {id} status must be reserved or attaching to update, but \
                     the current status is {}.",
                    a.attach_status
                ),
            ));
        }
        let v = self.deps.volumes.get_volume(&a.volume_id).await.map_err(domain)?;
        if v.status.as_str().contains("error") {
            return Err(fail(
                ErrorKind::Conflict,
                format!("Invalid volume: Volume {} status must not be in error: {}.", v.id, v.status),
            ));
        }
        backend(&v)?;
        Ok(Values::new().with(&ATTACHMENT, a).with(&VOLUME, v))
    }
}

/// Hands the export to the volume's backend: records `attachment_update_manager` (one
/// per request) and wakes `volume.<host@backend>`.
/// Revert: withdraws the hand-off if no process took it yet; else fails, leaving the
/// attachment to the receiving flow.
pub struct AttachmentUpdateCast {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for AttachmentUpdateCast {
    fn name(&self) -> &str {
        "AttachmentUpdateCastTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), ATTACHMENT.name(), VOLUME.name(), CONNECTOR.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let a = ctx.get(&ATTACHMENT)?;
        let v = ctx.get(&VOLUME)?;
        let backend = backend(&v)?;
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&ATTACHMENT_ID, a.id.clone())
            .with(&VOLUME_ID, v.id.clone())
            .with(&CONNECTOR, ctx.get(&CONNECTOR)?)
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
