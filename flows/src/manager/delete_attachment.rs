//! `attachment_delete_manager`: the backend side of a detach (Cinder's
//! `VolumeManager.attachment_delete`, then the API's `finish_detach`).
//!
//! Steps:
//!
//! 1. `ExtractAttachmentRefTask`: reads the attachment (in `detaching`) and its volume.
//! 2. `TerminateConnectionTask`: the driver revokes the attachment's connector.
//! 3. `RemoveExportTask`: the driver removes the volume's export, unless another live
//!    attachment of the volume needs it.
//! 4. `AttachmentDestroyTask`: soft-deletes the attachment.
//! 5. `VolumeAttachStatusSyncTask`: the volume's status from the attachments left.

use std::sync::Arc;

use ember_common::model::AttachStatus;
use ember_engine::{Context, Failure, Flow, Task, Values, async_trait};

use crate::attachments::{
    AttachErrorOut, AttachmentDestroy, ExtractAttachmentRef, VolumeAttachStatusSync, access_mode, connector,
    remove_export_unless_needed,
};
use crate::deps::Deps;
use crate::error::driver as driver_failure;
use crate::keys::*;
use crate::manager::{driver, driver_volume};

/// The flow's name.
pub const FLOW: &str = "attachment_delete_manager";

/// The inputs the API records.
pub const INPUTS: &[&str] = &[CONTEXT.name(), ATTACHMENT_ID.name(), VOLUME_ID.name(), BACKEND.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractAttachmentRef {
            deps: deps.clone(),
            error_out: AttachErrorOut { from: &[AttachStatus::Detaching], to: AttachStatus::ErrorDetaching },
        })
        .add(TerminateConnection { deps: deps.clone() })
        .add(RemoveExport { deps: deps.clone() })
        .add(AttachmentDestroy { deps: deps.clone() })
        .add(VolumeAttachStatusSync { deps })
}

/// Has the driver revoke the attachment's connector (nothing to do for an attachment that
/// never had one); revoking what is gone succeeds, so a re-run is harmless.
/// Revert: nothing (`ExtractAttachmentRefTask`'s revert sets `error_detaching`).
pub struct TerminateConnection {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for TerminateConnection {
    fn name(&self) -> &str {
        "TerminateConnectionTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[ATTACHMENT.name(), VOLUME.name(), BACKEND.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let a = ctx.get(&ATTACHMENT)?;
        let Some(raw) = a.connector.as_ref() else { return Ok(Values::new()) };
        let conn = connector(raw)?;
        let d = driver(&self.deps, &ctx.get(&BACKEND)?)?;
        d.terminate_connection(&driver_volume(&ctx.get(&VOLUME)?), &conn, access_mode(&a))
            .await
            .map_err(|e| driver_failure(&e))?;
        Ok(Values::new())
    }
}

/// Has the driver remove the volume's export once no other live attachment of the volume
/// needs it (decided under the volume's export lock); removing what is gone succeeds.
/// Revert: nothing (`ExtractAttachmentRefTask`'s revert sets `error_detaching`).
pub struct RemoveExport {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for RemoveExport {
    fn name(&self) -> &str {
        "RemoveExportTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[ATTACHMENT_ID.name(), VOLUME.name(), BACKEND.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let d = driver(&self.deps, &ctx.get(&BACKEND)?)?;
        remove_export_unless_needed(&self.deps, &d, &ctx.get(&VOLUME)?, &ctx.get(&ATTACHMENT_ID)?).await?;
        Ok(Values::new())
    }
}
