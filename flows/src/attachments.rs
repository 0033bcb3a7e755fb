//! Tasks and helpers the attach and detach flows share: reading an attachment the caller
//! may see, the connection info in Cinder's attachment form, the export lock of a volume,
//! and the tasks several of those flows run (`ExtractAttachmentRefTask`,
//! `VolumeAttachStatusSyncTask`, `AttachmentDestroyTask`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use ember_common::ErrorKind;
use ember_common::model::{AttachStatus, AttachmentChanges, Volume, VolumeAttachment, VolumeStatus};
use ember_common::ops::RequestContext;
use ember_drivers::{AccessMode, ConnectionInfo, Connector, SharedDriver};
use ember_engine::{Context, Failure, RevertContext, Task, Values, async_trait};
use serde_json::{Value, json};

use crate::deps::Deps;
use crate::error::{domain, driver as driver_failure, fail};
use crate::keys::*;
use crate::manager::driver_volume;

/// The attachment statuses of an attachment that holds (or is getting) an export: its
/// connector is recorded and it is neither in error nor gone.
pub const CONNECTED: &[AttachStatus] =
    &[AttachStatus::Reserved, AttachStatus::Attaching, AttachStatus::Attached, AttachStatus::Detaching];

/// Whether `a` needs its volume's export (a connector recorded, a live status).
pub fn needs_export(a: &VolumeAttachment) -> bool {
    a.connector.is_some() && CONNECTED.contains(&a.attach_status)
}

/// Cinder's `VolumeAttachmentNotFound`.
pub(crate) fn attachment_not_found(id: &str) -> Failure {
    fail(
        ErrorKind::NotFound,
        format!("Volume attachment could not be found with filter: attachment_id = {id}."),
    )
}

/// The attachment `id` if `rc` may see it (its project's, or any for an admin).
pub(crate) async fn own_attachment(
    deps: &Deps,
    rc: &RequestContext,
    id: &str,
) -> Result<VolumeAttachment, Failure> {
    match deps.attachments.get_attachment(id).await {
        Ok(a) if a.project_id == rc.project_id || rc.is_admin => Ok(a),
        Ok(_) | Err(ember_common::Error::NotFound { .. }) => Err(attachment_not_found(id)),
        Err(e) => Err(domain(e)),
    }
}

/// The attachment's mode as the driver takes it (`rw` unless it says `ro`).
pub(crate) fn access_mode(a: &VolumeAttachment) -> AccessMode {
    AccessMode::parse(&a.attach_mode).unwrap_or_default()
}

/// The connector a client sent, as the driver takes it; a bad request if it is no object.
pub(crate) fn connector(value: &Value) -> Result<Connector, Failure> {
    if !value.is_object() {
        return Err(fail(ErrorKind::BadRequest, "Invalid input received: connector must be an object."));
    }
    serde_json::from_value(value.clone())
        .map_err(|e| fail(ErrorKind::BadRequest, format!("Invalid input received: bad connector: {e}.")))
}

/// Cinder's attachment connection info: the driver's `data` flattened, then
/// `driver_volume_type`, `attachment_id`, `access_mode` and the fixed keys Cinder adds.
pub fn flatten_connection_info(info: &ConnectionInfo, attachment_id: &str, mode: AccessMode) -> Value {
    let mut out = info.data.clone();
    out.insert("driver_volume_type".into(), json!(info.driver_volume_type));
    out.insert("attachment_id".into(), json!(attachment_id));
    // The driver's word on the export's mode wins (it is what the export enforces).
    out.entry("access_mode").or_insert_with(|| json!(mode.as_str()));
    out.insert("encrypted".into(), json!(false));
    out.insert("cacheable".into(), json!(false));
    out.insert("qos_specs".into(), Value::Null);
    out.insert("enforce_multipath".into(), json!(false));
    Value::Object(out)
}

/// The lock that orders, per volume, the exports made for attachments and their removal in
/// this process (a backend's volume flows run in one volume process): a removal decides
/// from the attachments recorded while it holds the lock, and an export made after it
/// waits for the removal to end.
pub(crate) async fn export_lock(volume_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
    static LOCKS: LazyLock<parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Default::default);
    let lock = {
        let mut locks = LOCKS.lock();
        // Forget the locks nobody holds or waits for, so the map stays small.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(volume_id.to_owned()).or_default().clone()
    };
    lock.lock_owned().await
}

/// Removes the volume's export unless an attachment other than `except` still needs it.
/// Returns whether it removed it.
pub(crate) async fn remove_export_unless_needed(
    deps: &Deps,
    driver: &SharedDriver,
    volume: &Volume,
    except: &str,
) -> Result<bool, Failure> {
    let _guard = export_lock(&volume.id).await;
    let live = deps.attachments.list_attachments(Some(&volume.id), None).await.map_err(domain)?;
    if live.iter().any(|a| a.id != except && needs_export(a)) {
        return Ok(false);
    }
    driver.remove_export(&driver_volume(volume)).await.map_err(|e| driver_failure(&e))?;
    Ok(true)
}

/// What a failed attach or detach flow does to its attachment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttachErrorOut {
    pub from: &'static [AttachStatus],
    pub to: AttachStatus,
}

/// Reads the attachment and its volume for the volume service's part of an attach or
/// detach.
/// Revert: the attachment goes from `error_out.from` to `error_out.to` and the volume's
/// status is recomputed from its attachments, whichever task failed.
pub struct ExtractAttachmentRef {
    pub(crate) deps: Arc<Deps>,
    pub(crate) error_out: AttachErrorOut,
}

#[async_trait]
impl Task for ExtractAttachmentRef {
    fn name(&self) -> &str {
        "ExtractAttachmentRefTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[ATTACHMENT_ID.name(), VOLUME_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[ATTACHMENT.name(), VOLUME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let id = ctx.get(&ATTACHMENT_ID)?;
        let a = self.deps.attachments.get_attachment(&id).await.map_err(|e| match e {
            ember_common::Error::NotFound { .. } => attachment_not_found(&id),
            e => domain(e),
        })?;
        let v = self.deps.volumes.get_volume(&ctx.get(&VOLUME_ID)?).await.map_err(domain)?;
        Ok(Values::new().with(&ATTACHMENT, a).with(&VOLUME, v))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let AttachErrorOut { from, to } = self.error_out;
        let changes = AttachmentChanges { attach_status: Some(to), ..AttachmentChanges::default() };
        let id = ctx.get(&ATTACHMENT_ID)?;
        self.deps.attachments.update_attachment(&id, from, &changes).await.map_err(domain)?;
        self.deps.volumes.sync_attach_status(&ctx.get(&VOLUME_ID)?).await.map_err(domain)?;
        Ok(())
    }
}

/// Recomputes the volume's `status` and `attach_status` from its live attachments
/// (Cinder's `_get_statuses_from_attachments`), in one statement.
/// Revert: nothing (the tasks before it undo their attachment, and their revert recomputes).
pub struct VolumeAttachStatusSync {
    pub(crate) deps: Arc<Deps>,
}

#[async_trait]
impl Task for VolumeAttachStatusSync {
    fn name(&self) -> &str {
        "VolumeAttachStatusSyncTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        self.deps.volumes.sync_attach_status(&ctx.get(&VOLUME_ID)?).await.map_err(domain)?;
        Ok(Values::new())
    }
}

/// Soft-deletes the attachment (status `deleted`, `detached_at` now); gone already is done.
/// Revert: nothing (a deleted attachment stays deleted).
pub struct AttachmentDestroy {
    pub(crate) deps: Arc<Deps>,
}

#[async_trait]
impl Task for AttachmentDestroy {
    fn name(&self) -> &str {
        "AttachmentDestroyTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[ATTACHMENT_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        self.deps.attachments.soft_delete_attachment(&ctx.get(&ATTACHMENT_ID)?).await.map_err(domain)?;
        Ok(Values::new())
    }
}

/// Cinder's `init_host` `ensure_export` for one backend (`host@backend`): each volume of
/// the backend with connected attachments (`attaching`, `attached`) gets its export back
/// with their grants;
/// an `in-use` volume whose export cannot be re-created goes to `error` (a
/// compare-and-swap) and is logged. Returns how many volumes were exported again.
pub async fn ensure_exports(deps: &Deps, backend: &str) -> Result<usize, crate::Error> {
    let Ok(d) = crate::manager::driver(deps, backend) else {
        return Err(crate::Error::MissingDependency("the driver of a backend this process serves"));
    };
    let all = match deps.attachments.list_attachments(None, None).await {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(backend, error = %e, "cannot list attachments to ensure exports");
            return Ok(0);
        }
    };
    let mut grants: std::collections::BTreeMap<String, Vec<(Connector, AccessMode)>> = Default::default();
    // Not a `detaching` one: its flow, resumed after this, removes the export (ensured
    // again here it would outlive the attachment once the flow is past its removal).
    let attached = |a: &&VolumeAttachment| {
        a.connection_info.is_some()
            && a.connector.is_some()
            && matches!(a.attach_status, AttachStatus::Attaching | AttachStatus::Attached)
    };
    for a in all.iter().filter(attached) {
        let Some(Ok(conn)) = a.connector.as_ref().map(connector) else { continue };
        grants.entry(a.volume_id.clone()).or_default().push((conn, access_mode(a)));
    }
    let mut exported = 0;
    for (volume_id, grants) in grants {
        let Ok(v) = deps.volumes.get_volume(&volume_id).await else { continue };
        if crate::tasks::backend(&v).ok().as_deref() != Some(backend) {
            continue;
        }
        let result = {
            let _guard = export_lock(&v.id).await;
            d.ensure_export(&driver_volume(&v), &grants).await
        };
        match result {
            Ok(()) => exported += 1,
            Err(e) => {
                tracing::error!(volume_id = %v.id, backend, error = %e, "cannot re-create the export of a volume");
                let expect = ember_common::model::VolumeExpect::status_in(&[VolumeStatus::InUse]);
                let changes = ember_common::model::VolumeChanges::status(VolumeStatus::Error);
                if let Err(e) = deps.volumes.update_volume(&v.id, &expect, &changes).await {
                    tracing::warn!(volume_id = %v.id, error = %e, "cannot put the volume in error");
                }
            }
        }
    }
    Ok(exported)
}
