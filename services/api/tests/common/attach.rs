//! A stand-in for the attach flows: [`AttachOps`] done directly on the repositories with
//! Cinder's compare-and-swap conditions (digest §3.1), so the API's side of attaching
//! (routes, bodies, views, isolation) can be tested without a driver. Connection info is
//! a fixed fake in the attachment form (the driver's `data` flattened).

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};

use ember_common::model::{
    AttachStatus, AttachmentChanges, Volume, VolumeAttachment, VolumeChanges, VolumeExpect, VolumeStatus,
};
use ember_common::ops::{AttachOps, CreateAttachment, LegacyAttach, RequestContext};
use ember_common::repo::{AttachmentRepo, VolumeRepo};
use ember_common::{Error, ErrorKind, ServiceError};
use ember_db::SqlRepo;

pub struct TestAttachOps {
    repo: Arc<SqlRepo>,
}

impl TestAttachOps {
    pub fn new(repo: Arc<SqlRepo>) -> Self {
        Self { repo }
    }

    async fn volume(&self, id: &str) -> Result<Volume, ServiceError> {
        self.repo.get_volume(id).await.map_err(|e| match e {
            Error::NotFound { .. } => {
                ServiceError::new(ErrorKind::NotFound, format!("Volume {id} could not be found."))
            }
            other => other.into(),
        })
    }

    async fn attachment(&self, id: &str) -> Result<VolumeAttachment, ServiceError> {
        self.repo.get_attachment(id).await.map_err(|e| match e {
            Error::NotFound { .. } => ServiceError::new(
                ErrorKind::NotFound,
                format!("Volume attachment could not be found with filter: attachment_id = {id}."),
            ),
            other => other.into(),
        })
    }

    /// Swaps the volume from one of `from` to `to`, or refuses as Cinder's `InvalidVolume`.
    async fn swap(
        &self,
        id: &str,
        from: &[VolumeStatus],
        changes: VolumeChanges,
    ) -> Result<(), ServiceError> {
        match self.repo.update_volume(id, &VolumeExpect::status_in(from), &changes).await? {
            Some(_) => Ok(()),
            None => {
                let v = self.volume(id).await?;
                Err(bad(format!(
                    "Invalid volume: Volume {id} status is {}; it cannot be attached or detached now.",
                    v.status
                )))
            }
        }
    }

    /// Exports to `connector`: fake connection info, attachment and volume `attaching`.
    async fn connect(
        &self,
        a: &VolumeAttachment,
        connector: Value,
    ) -> Result<VolumeAttachment, ServiceError> {
        let info = json!({
            "driver_volume_type": "file",
            "device_path": format!("/dev/fake/{}", a.volume_id),
            "attachment_id": a.id,
            "access_mode": a.attach_mode,
            "encrypted": false,
            "cacheable": false,
            "qos_specs": null,
            "enforce_multipath": false,
        });
        let changes = AttachmentChanges {
            attach_status: Some(AttachStatus::Attaching),
            attached_host: Some(connector.get("host").and_then(Value::as_str).map(str::to_owned)),
            connector: Some(Some(connector)),
            connection_info: Some(Some(info)),
            ..AttachmentChanges::default()
        };
        let expected = [AttachStatus::Reserved, AttachStatus::Attaching];
        let updated =
            self.repo.update_attachment(&a.id, &expected, &changes).await?.ok_or_else(|| {
                bad(format!("Invalid attachment: {} cannot be updated in its status.", a.id))
            })?;
        let from = [VolumeStatus::Reserved, VolumeStatus::Attaching, VolumeStatus::InUse];
        self.swap(&a.volume_id, &from, VolumeChanges::status(VolumeStatus::Attaching)).await?;
        Ok(updated)
    }

    /// Cinder's `_get_statuses_from_attachments`: the volume's status from what is left.
    async fn settle(&self, volume_id: &str) -> Result<Vec<VolumeAttachment>, ServiceError> {
        let left = self.repo.list_attachments(Some(volume_id), None).await?;
        let lowest = left
            .iter()
            .map(|a| a.attach_status)
            .filter(|s| !s.as_str().starts_with("error_"))
            .min_by_key(|s| s.as_str());
        let (status, attach_status) = match lowest {
            None => (VolumeStatus::Available, AttachStatus::Detached),
            Some(AttachStatus::Attached) => (VolumeStatus::InUse, AttachStatus::Attached),
            Some(s) => (s.as_str().parse().unwrap_or(VolumeStatus::Error), s),
        };
        let changes =
            VolumeChanges { status: Some(status), attach_status: Some(attach_status), ..Default::default() };
        self.repo.update_volume(volume_id, &VolumeExpect::default(), &changes).await?;
        Ok(left)
    }
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorKind::BadRequest, message)
}

#[async_trait::async_trait]
impl AttachOps for TestAttachOps {
    async fn create_attachment(
        &self,
        ctx: &RequestContext,
        req: CreateAttachment,
    ) -> Result<VolumeAttachment, ServiceError> {
        let v = self.volume(&req.volume_id).await?;
        let mut from = vec![VolumeStatus::Available, VolumeStatus::Downloading];
        if v.multiattach {
            from.push(VolumeStatus::InUse);
        }
        self.swap(&v.id, &from, VolumeChanges::status(VolumeStatus::Reserved)).await?;
        let mut row = VolumeAttachment::reserved(
            uuid::Uuid::new_v4().to_string(),
            &v.id,
            &ctx.project_id,
            req.instance_uuid,
        );
        row.attach_mode = req.mode.unwrap_or_else(|| "rw".into());
        let row = self.repo.create_attachment(&row).await?;
        match req.connector {
            Some(connector) => self.connect(&row, connector).await,
            None => Ok(row),
        }
    }

    async fn update_attachment(
        &self,
        _: &RequestContext,
        id: &str,
        connector: Value,
    ) -> Result<VolumeAttachment, ServiceError> {
        let a = self.attachment(id).await?;
        self.connect(&a, connector).await
    }

    async fn complete_attachment(&self, _: &RequestContext, id: &str) -> Result<(), ServiceError> {
        let a = self.attachment(id).await?;
        let changes = AttachmentChanges {
            attach_status: Some(AttachStatus::Attached),
            attached_at: Some(Some(Utc::now())),
            ..AttachmentChanges::default()
        };
        self.repo.update_attachment(id, &[], &changes).await?;
        let changes = VolumeChanges {
            status: Some(VolumeStatus::InUse),
            attach_status: Some(AttachStatus::Attached),
            ..VolumeChanges::default()
        };
        self.repo.update_volume(&a.volume_id, &VolumeExpect::default(), &changes).await?;
        Ok(())
    }

    async fn delete_attachment(
        &self,
        _: &RequestContext,
        id: &str,
    ) -> Result<Vec<VolumeAttachment>, ServiceError> {
        let a = self.attachment(id).await?;
        self.repo.soft_delete_attachment(id).await?;
        self.settle(&a.volume_id).await
    }

    async fn reserve_volume(&self, _: &RequestContext, volume_id: &str) -> Result<(), ServiceError> {
        self.swap(volume_id, &[VolumeStatus::Available], VolumeChanges::status(VolumeStatus::Attaching)).await
    }

    async fn unreserve_volume(&self, _: &RequestContext, volume_id: &str) -> Result<(), ServiceError> {
        let attached = !self.repo.list_attachments(Some(volume_id), None).await?.is_empty();
        let to = if attached { VolumeStatus::InUse } else { VolumeStatus::Available };
        self.swap(volume_id, &[VolumeStatus::Attaching], VolumeChanges::status(to)).await
    }

    async fn begin_detaching(&self, _: &RequestContext, volume_id: &str) -> Result<(), ServiceError> {
        self.swap(volume_id, &[VolumeStatus::InUse], VolumeChanges::status(VolumeStatus::Detaching)).await
    }

    async fn roll_detaching(&self, _: &RequestContext, volume_id: &str) -> Result<(), ServiceError> {
        self.swap(volume_id, &[VolumeStatus::Detaching], VolumeChanges::status(VolumeStatus::InUse)).await
    }

    async fn initialize_connection(
        &self,
        _: &RequestContext,
        volume_id: &str,
        connector: Value,
    ) -> Result<Value, ServiceError> {
        let v = self.volume(volume_id).await?;
        if v.status == VolumeStatus::Maintenance {
            return Err(bad("Invalid volume: Volume is in maintenance."));
        }
        Ok(json!({
            "driver_volume_type": "file",
            "data": {"device_path": format!("/dev/fake/{volume_id}"), "host": connector.get("host")},
        }))
    }

    async fn terminate_connection(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        _: Value,
    ) -> Result<(), ServiceError> {
        let v = self.volume(volume_id).await?;
        if v.status == VolumeStatus::Attaching {
            self.unreserve_volume(ctx, volume_id).await?;
        }
        Ok(())
    }

    async fn attach(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        req: LegacyAttach,
    ) -> Result<VolumeAttachment, ServiceError> {
        let from = [VolumeStatus::Attaching, VolumeStatus::Available];
        let changes = VolumeChanges {
            status: Some(VolumeStatus::InUse),
            attach_status: Some(AttachStatus::Attached),
            ..VolumeChanges::default()
        };
        self.swap(volume_id, &from, changes).await?;
        let mut row = VolumeAttachment::reserved(
            uuid::Uuid::new_v4().to_string(),
            volume_id,
            &ctx.project_id,
            req.instance_uuid,
        );
        row.attach_status = AttachStatus::Attached;
        row.attached_host = req.host_name;
        row.mountpoint = req.mountpoint;
        row.attach_mode = req.mode.unwrap_or_else(|| "rw".into());
        row.attached_at = Some(Utc::now());
        Ok(self.repo.create_attachment(&row).await?)
    }

    async fn detach(
        &self,
        _: &RequestContext,
        volume_id: &str,
        attachment_id: Option<&str>,
    ) -> Result<(), ServiceError> {
        let left = self.repo.list_attachments(Some(volume_id), None).await?;
        let target = match attachment_id {
            Some(id) => left.iter().find(|a| a.id == id),
            None if left.len() == 1 => left.first(),
            None => {
                return Err(bad(
                    "Invalid volume: Volume has more than one attachment; name the one to detach.",
                ));
            }
        };
        let target = target.ok_or_else(|| bad("Invalid volume: No such attachment on the volume."))?;
        self.repo.soft_delete_attachment(&target.id).await?;
        self.settle(volume_id).await.map(|_| ())
    }

    async fn force_detach(
        &self,
        _: &RequestContext,
        volume_id: &str,
        attachment_id: Option<&str>,
        _: Option<Value>,
    ) -> Result<(), ServiceError> {
        for a in self.repo.list_attachments(Some(volume_id), None).await? {
            if attachment_id.is_none_or(|id| id == a.id) {
                self.repo.soft_delete_attachment(&a.id).await?;
            }
        }
        self.settle(volume_id).await.map(|_| ())
    }
}
