//! `attachment_update_manager`: the backend side of an attach (Cinder's
//! `VolumeManager.attachment_update`, `_connection_create`).
//!
//! Steps:
//!
//! 1. `ExtractAttachmentRefTask`: reads the attachment and its volume.
//! 2. `AttachmentConnectorSaveTask`: records the connector on the attachment, so a detach
//!    of another attachment sees that this one needs the export.
//! 3. `InitializeConnectionTask`: the driver exports the volume to the connector in the
//!    attachment's mode; the connection info in Cinder's attachment form.
//! 4. `AttachmentConnectedTask`: stores the connection info, attachment -> `attaching`.
//! 5. `VolumeAttachStatusSyncTask`: the volume's status from its attachments (`attaching`,
//!    or `in-use` while another is attached).

use std::sync::Arc;

use ember_common::ErrorKind;
use ember_common::model::{AttachStatus, AttachmentChanges};
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};

use crate::attachments::{
    AttachErrorOut, ExtractAttachmentRef, VolumeAttachStatusSync, access_mode, connector, export_lock,
    flatten_connection_info, remove_export_unless_needed,
};
use crate::deps::Deps;
use crate::error::{domain, driver as driver_failure, fail};
use crate::keys::*;
use crate::manager::{driver, driver_volume};

/// The flow's name.
pub const FLOW: &str = "attachment_update_manager";

/// The inputs the API records.
pub const INPUTS: &[&str] =
    &[CONTEXT.name(), ATTACHMENT_ID.name(), VOLUME_ID.name(), CONNECTOR.name(), BACKEND.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractAttachmentRef {
            deps: deps.clone(),
            error_out: AttachErrorOut {
                from: &[AttachStatus::Reserved, AttachStatus::Attaching],
                to: AttachStatus::ErrorAttaching,
            },
        })
        .add(AttachmentConnectorSave { deps: deps.clone() })
        .add(InitializeConnection { deps: deps.clone() })
        .add(AttachmentConnected { deps: deps.clone() })
        .add(VolumeAttachStatusSync { deps })
}

/// The attachment no longer waits for this connection (deleted or moved on).
fn gone(id: &str) -> Failure {
    fail(
        ErrorKind::BadRequest,
        format!("Invalid volume attachment: attachment {id} changed during the attach."),
    )
}

/// Records the connector on the attachment (a compare-and-swap from `reserved` or
/// `attaching`).
/// Revert: nothing of its own (`ExtractAttachmentRefTask`'s revert puts the attachment in
/// `error_attaching`, which needs no export).
pub struct AttachmentConnectorSave {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for AttachmentConnectorSave {
    fn name(&self) -> &str {
        "AttachmentConnectorSaveTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[ATTACHMENT_ID.name(), CONNECTOR.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let id = ctx.get(&ATTACHMENT_ID)?;
        let connector = ctx.get(&CONNECTOR)?;
        let host = connector.get("host").and_then(|h| h.as_str()).map(str::to_owned);
        let changes = AttachmentChanges {
            connector: Some(Some(connector)),
            attached_host: Some(host),
            ..AttachmentChanges::default()
        };
        let expected = [AttachStatus::Reserved, AttachStatus::Attaching];
        match self.deps.attachments.update_attachment(&id, &expected, &changes).await.map_err(domain)? {
            Some(_) => Ok(Values::new()),
            None => Err(gone(&id)),
        }
    }
}

/// Has the driver export the volume to the connector in the attachment's mode (under the
/// volume's export lock) and answers Cinder's attachment connection info.
/// Revert: revokes the connector and removes the export unless another attachment needs it.
pub struct InitializeConnection {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for InitializeConnection {
    fn name(&self) -> &str {
        "InitializeConnectionTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[ATTACHMENT.name(), VOLUME.name(), CONNECTOR.name(), BACKEND.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[CONNECTION_INFO.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let a = ctx.get(&ATTACHMENT)?;
        let v = ctx.get(&VOLUME)?;
        let conn = connector(&ctx.get(&CONNECTOR)?)?;
        let d = driver(&self.deps, &ctx.get(&BACKEND)?)?;
        let mode = access_mode(&a);
        let info = {
            let _guard = export_lock(&v.id).await;
            d.initialize_connection(&driver_volume(&v), &conn, mode).await.map_err(|e| driver_failure(&e))?
        };
        Ok(Values::new().with(&CONNECTION_INFO, flatten_connection_info(&info, &a.id, mode)))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        // Whether or not execute finished: it may have exported and then died.
        let a = ctx.get(&ATTACHMENT)?;
        let v = ctx.get(&VOLUME)?;
        let d = driver(&self.deps, &ctx.get(&BACKEND)?)?;
        if let Ok(conn) = connector(&ctx.get(&CONNECTOR)?) {
            d.terminate_connection(&driver_volume(&v), &conn, access_mode(&a))
                .await
                .map_err(|e| driver_failure(&e))?;
        }
        remove_export_unless_needed(&self.deps, &d, &v, &a.id).await?;
        Ok(())
    }
}

/// Stores the connection info and moves the attachment to `attaching` (a compare-and-swap
/// from `reserved` or `attaching`; a lost swap fails, so the export is undone).
/// Revert: nothing of its own (`ExtractAttachmentRefTask`'s revert sets `error_attaching`).
pub struct AttachmentConnected {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for AttachmentConnected {
    fn name(&self) -> &str {
        "AttachmentConnectedTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[ATTACHMENT_ID.name(), CONNECTION_INFO.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let id = ctx.get(&ATTACHMENT_ID)?;
        let changes = AttachmentChanges {
            attach_status: Some(AttachStatus::Attaching),
            connection_info: Some(Some(ctx.get(&CONNECTION_INFO)?)),
            ..AttachmentChanges::default()
        };
        let expected = [AttachStatus::Reserved, AttachStatus::Attaching];
        match self.deps.attachments.update_attachment(&id, &expected, &changes).await.map_err(domain)? {
            Some(_) => Ok(Values::new()),
            None => Err(gone(&id)),
        }
    }
}
