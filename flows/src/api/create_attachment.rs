//! `attachment_create_api`: the API side of Cinder's `attachment_create` (its
//! `_attachment_reserve`). With a connector, [`crate::FlowAttachOps`] then runs
//! `attachment_update_api` on the new attachment.
//!
//! Steps:
//!
//! 1. `AttachmentReserveTask`: compare-and-swap of the volume from `available` or
//!    `downloading` (and `in-use` when it is multiattach: then it stays `in-use`) to
//!    `reserved`, expecting the multiattach flag it read.
//! 2. `AttachmentEntryCreateTask`: records the attachment in `reserved`, in the mode asked.

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{
    AttachStatus, Volume, VolumeAttachment, VolumeChanges, VolumeExpect, VolumeStatus,
};
use ember_common::ops::{CreateAttachment, RequestContext};
use ember_drivers::AccessMode;
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::keys::*;
use crate::tasks::own_volume;

/// The flow's name.
pub const FLOW: &str = "attachment_create_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), VOLUME_ID.name(), ATTACH_REQUEST.name(), NEW_ID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(AttachmentReserve { deps: deps.clone() })
        .add(AttachmentEntryCreate { deps })
}

/// The inputs of one attachment create; `new_id` is the attachment's id.
pub fn inputs(ctx: &RequestContext, req: CreateAttachment, new_id: &str) -> Values {
    Values::new()
        .with(&CONTEXT, ctx.clone())
        .with(&VOLUME_ID, req.volume_id.clone())
        .with(&ATTACH_REQUEST, req)
        .with(&NEW_ID, new_id.to_owned())
}

/// Reserves the volume for one more attachment: `available`/`downloading` -> `reserved`,
/// or a multiattach volume's `in-use` kept, by one compare-and-swap that also expects the
/// multiattach flag read (a lost swap is Cinder's `InvalidVolume`, 400).
/// Revert: the volume's status recomputed from its attachments (so `available` again when
/// it has none).
pub struct AttachmentReserve {
    deps: Arc<Deps>,
}

/// The statuses a volume is reserved from.
fn reservable(multiattach: bool) -> &'static [VolumeStatus] {
    if multiattach {
        &[VolumeStatus::Available, VolumeStatus::Downloading, VolumeStatus::InUse]
    } else {
        &[VolumeStatus::Available, VolumeStatus::Downloading]
    }
}

impl AttachmentReserve {
    /// Whether an earlier run of this task reserved the volume: its entry exists, or the
    /// volume is `reserved` with no live attachment at all (the earlier run died between
    /// its swap and the entry; no other request holds the volume without an entry for
    /// longer than that same step).
    async fn earlier_run_reserved(&self, attachment_id: &str, v: &Volume) -> Result<bool, Failure> {
        if self.deps.attachments.get_attachment(attachment_id).await.is_ok() {
            return Ok(true);
        }
        if v.status != VolumeStatus::Reserved {
            return Ok(false);
        }
        let live = self.deps.attachments.list_attachments(Some(&v.id), None).await.map_err(domain)?;
        Ok(live.is_empty())
    }
}

#[async_trait]
impl Task for AttachmentReserve {
    fn name(&self) -> &str {
        "AttachmentReserveTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), VOLUME_ID.name(), NEW_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[VOLUME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let id = ctx.get(&VOLUME_ID)?;
        let current = own_volume(&self.deps, &rc, &id).await?;
        if ctx.attempt() > 1 && self.earlier_run_reserved(&ctx.get(&NEW_ID)?, &current).await? {
            // An earlier run won the swap and died before its result was stored: the swap
            // below would be refused.
            return Ok(Values::new().with(&VOLUME, current));
        }
        if current.status.as_str().contains("error") {
            return Err(fail(
                ErrorKind::BadRequest,
                format!("Invalid volume: Volume {id} status must not be in error: {}.", current.status),
            ));
        }
        let statuses = reservable(current.multiattach);
        let changes = if current.status == VolumeStatus::InUse {
            // A multiattach volume attached elsewhere stays in-use: the swap only asserts.
            VolumeChanges::default()
        } else {
            VolumeChanges::status(VolumeStatus::Reserved)
        };
        let expect = VolumeExpect {
            multiattach: Some(current.multiattach),
            status: Some(vec![current.status]),
            ..VolumeExpect::default()
        };
        let won = if statuses.contains(&current.status) {
            self.deps.volumes.update_volume(&id, &expect, &changes).await.map_err(domain)?
        } else {
            None
        };
        won.map(|v| Values::new().with(&VOLUME, v)).ok_or_else(|| {
            let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            fail(
                ErrorKind::BadRequest,
                format!(
                    "Invalid volume: Volume {id} status must be {} to reserve, but the current status is {}.",
                    names.join(" or "),
                    current.status
                ),
            )
        })
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        if ctx.result().is_none() {
            return Ok(());
        }
        self.deps.volumes.sync_attach_status(&ctx.get(&VOLUME_ID)?).await.map_err(domain)?;
        Ok(())
    }
}

/// Records the attachment in `reserved` with the instance and mode asked; a re-run finds
/// the row an earlier run made.
/// Revert: soft-deletes the attachment.
pub struct AttachmentEntryCreate {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for AttachmentEntryCreate {
    fn name(&self) -> &str {
        "AttachmentEntryCreateTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME.name(), ATTACH_REQUEST.name(), NEW_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[ATTACHMENT.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = ctx.get(&VOLUME)?;
        let req = ctx.get(&ATTACH_REQUEST)?;
        let mode = match req.mode.as_deref() {
            None => AccessMode::Rw,
            Some(m) => AccessMode::parse(m).ok_or_else(|| {
                fail(ErrorKind::BadRequest, format!("Invalid input received: Invalid attach mode {m}."))
            })?,
        };
        let mut a = VolumeAttachment::reserved(ctx.get(&NEW_ID)?, &v.id, &v.project_id, req.instance_uuid);
        a.attach_mode = mode.as_str().to_owned();
        debug_assert_eq!(a.attach_status, AttachStatus::Reserved);
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
        // By id, not by result: the task may have inserted and then died.
        self.deps.attachments.soft_delete_attachment(&ctx.get(&NEW_ID)?).await.map_err(domain)?;
        Ok(())
    }
}
