//! A stand-in for the flows: [`VolumeOps`] done directly on the repositories, with the
//! same compare-and-swap conditions, so the API can be tested without a scheduler or driver.

use std::sync::Arc;

use ember_common::model::{
    DEFAULT_VOLUME_TYPE_NAME, Snapshot, SnapshotStatus, Volume, VolumeChanges, VolumeExpect, VolumeStatus,
};
use ember_common::ops::{CreateSnapshot, CreateVolume, DeleteVolume, RequestContext, VolumeOps};
use ember_common::repo::{SnapshotRepo, VolumeRepo, VolumeTypeRepo};
use ember_common::{Error, ErrorKind, ServiceError};
use ember_db::SqlRepo;

pub struct TestOps {
    repo: Arc<SqlRepo>,
}

impl TestOps {
    pub fn new(repo: Arc<SqlRepo>) -> Self {
        Self { repo }
    }
}

fn bad(message: &str) -> ServiceError {
    ServiceError::new(ErrorKind::BadRequest, message)
}

fn not_found(kind: &str, id: &str) -> ServiceError {
    ServiceError::new(ErrorKind::NotFound, format!("{kind} {id} could not be found."))
}

#[async_trait::async_trait]
impl VolumeOps for TestOps {
    async fn create_volume(&self, ctx: &RequestContext, req: CreateVolume) -> Result<Volume, ServiceError> {
        let vt = match &req.volume_type {
            Some(t) => match self.repo.get_volume_type(t).await {
                Ok(vt) => vt,
                Err(_) => {
                    self.repo.get_volume_type_by_name(t).await.map_err(|_| not_found("Volume type", t))?
                }
            },
            None => self.repo.get_volume_type_by_name(DEFAULT_VOLUME_TYPE_NAME).await?,
        };
        let mut size = req.size;
        if let Some(sid) = &req.snapshot_id {
            let s = self.repo.get_snapshot(sid).await.map_err(|_| not_found("Snapshot", sid))?;
            size = size.or(Some(s.volume_size));
        }
        if let Some(vid) = &req.source_volid {
            let v = self.repo.get_volume(vid).await.map_err(|_| not_found("Volume", vid))?;
            size = size.or(Some(v.size));
        }
        let az = req.availability_zone.clone().unwrap_or_else(|| "nova".into());
        let id = uuid::Uuid::new_v4().to_string();
        let mut v = Volume::new(id, &ctx.project_id, &ctx.user_id, size.unwrap_or(1), vt.id, az);
        v.name = req.name;
        v.description = req.description;
        v.metadata = req.metadata;
        v.snapshot_id = req.snapshot_id;
        v.source_volid = req.source_volid;
        Ok(self.repo.create_volume(&v).await?)
    }

    async fn delete_volume(
        &self,
        _: &RequestContext,
        id: &str,
        opts: DeleteVolume,
    ) -> Result<(), ServiceError> {
        let mut expect = if opts.force {
            VolumeExpect::default()
        } else {
            VolumeExpect::status_in(VolumeStatus::DELETABLE)
        };
        expect.no_snapshots = !opts.cascade;
        expect.no_attachments = true;
        if self.repo.soft_delete_volume(id, &expect).await? {
            Ok(())
        } else {
            Err(bad(
                "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.",
            ))
        }
    }

    async fn extend_volume(&self, _: &RequestContext, id: &str, new_size: i64) -> Result<(), ServiceError> {
        let expect = VolumeExpect::status_in(&[VolumeStatus::Available, VolumeStatus::InUse]);
        let changes = VolumeChanges { size: Some(new_size), ..VolumeChanges::default() };
        match self.repo.update_volume(id, &expect, &changes).await? {
            Some(_) => Ok(()),
            None => Err(bad("Invalid volume: the volume cannot be extended in its status")),
        }
    }

    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        req: CreateSnapshot,
    ) -> Result<Snapshot, ServiceError> {
        let v = self.repo.get_volume(&req.volume_id).await.map_err(|e| match e {
            Error::NotFound { .. } => not_found("Volume", &req.volume_id),
            other => other.into(),
        })?;
        let ok = v.status == VolumeStatus::Available || (req.force && v.status == VolumeStatus::InUse);
        if !ok {
            return Err(bad("Invalid volume: Volume status must be available"));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut s = Snapshot::new(id, &ctx.project_id, &ctx.user_id, &v.id, &v.volume_type_id, v.size);
        s.name = req.name;
        s.description = req.description;
        s.metadata = req.metadata;
        s.progress = Some("0%".into());
        Ok(self.repo.create_snapshot(&s).await?)
    }

    async fn delete_snapshot(&self, _: &RequestContext, id: &str, force: bool) -> Result<(), ServiceError> {
        let expected: &[SnapshotStatus] =
            if force { &[] } else { &[SnapshotStatus::Available, SnapshotStatus::Error] };
        if self.repo.soft_delete_snapshot(id, expected).await? {
            Ok(())
        } else {
            Err(bad("Invalid snapshot: Snapshot status must be available or error"))
        }
    }
}
