//! [`FlowBackupOps`]: the API's [`BackupOps`] contract, run as api-side flows (like
//! [`crate::FlowVolumeOps`]), each handing off to the backup service.

use std::sync::Arc;
use std::time::Duration;

use ember_common::model::{Backup, VolumeStatus};
use ember_common::ops::{
    BackupOps, CreateBackup, CreateVolume, RequestContext, RestoreBackup, Restored, VolumeOps,
};
use ember_common::{ErrorKind, ServiceError};
use ember_engine::{CompiledFlow, Engine, Values};

use crate::api;
use crate::deps::Deps;
use crate::error::{Result, service_error};
use crate::handoff::flow_id;
use crate::keys::BACKUP;

/// Runs the backup api flows inside API requests; a restore into a new volume first
/// creates it through `volumes` and waits until it is `available`, as Cinder's API does.
pub struct FlowBackupOps {
    engine: Engine,
    deps: Arc<Deps>,
    volumes: Arc<dyn VolumeOps>,
    create: CompiledFlow,
    delete: CompiledFlow,
    restore: CompiledFlow,
}

impl FlowBackupOps {
    /// Compiles the backup api flows on `deps`, to run on `engine`.
    pub fn new(engine: Engine, deps: Arc<Deps>, volumes: Arc<dyn VolumeOps>) -> Result<Self> {
        Ok(Self {
            engine,
            create: api::create_backup::get_flow(deps.clone()).compile()?,
            delete: api::delete_backup::get_flow(deps.clone()).compile()?,
            restore: api::restore_backup::get_flow(deps.clone()).compile()?,
            deps,
            volumes,
        })
    }

    async fn run(
        &self,
        flow: &CompiledFlow,
        id: String,
        subject: &str,
        inputs: Values,
    ) -> Result<Values, ServiceError> {
        crate::ops::run_api_flow(&self.engine, flow, id, subject, inputs).await
    }

    /// Waits until the new volume `id` leaves `creating` (1 ms doubling to 200 ms, up to
    /// `rpc_response_timeout`); it must end `available`.
    async fn wait_created(&self, id: &str) -> Result<(), ServiceError> {
        let deadline = tokio::time::Instant::now() + self.deps.config.rpc_response_timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let v = self.deps.volumes.get_volume(id).await.map_err(|e| ServiceError::from(&e))?;
            match v.status {
                VolumeStatus::Available => return Ok(()),
                VolumeStatus::Creating => {}
                other => {
                    return Err(ServiceError::new(
                        ErrorKind::BadRequest,
                        format!("Invalid volume: The volume created for the restore is {other}."),
                    ));
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ServiceError::new(
                    ErrorKind::Unavailable,
                    "The volume created for the restore is not available yet; try the restore again.",
                ));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[async_trait::async_trait]
impl BackupOps for FlowBackupOps {
    async fn create_backup(&self, ctx: &RequestContext, req: CreateBackup) -> Result<Backup, ServiceError> {
        let id = new_id();
        let fid = flow_id(api::create_backup::FLOW, &id, None);
        let values = self.run(&self.create, fid, &id, api::create_backup::inputs(ctx, req, &id)).await?;
        values
            .get(&BACKUP)
            .map_err(|f| service_error(&f))?
            .ok_or_else(|| ServiceError::new(ErrorKind::Internal, "the request could not be completed"))
    }

    async fn delete_backup(&self, ctx: &RequestContext, id: &str, force: bool) -> Result<(), ServiceError> {
        let fid = format!("{}:{id}:{}", api::delete_backup::FLOW, new_id());
        self.run(&self.delete, fid, id, api::delete_backup::inputs(ctx, id, force)).await.map(drop)
    }

    async fn restore_backup(
        &self,
        ctx: &RequestContext,
        id: &str,
        req: RestoreBackup,
    ) -> Result<Restored, ServiceError> {
        let backup = crate::backups::own_backup(&self.deps, ctx, id).await.map_err(|f| service_error(&f))?;
        let (volume_id, volume_name) = match req.volume_id {
            Some(vid) => {
                let v =
                    crate::tasks::own_volume(&self.deps, ctx, &vid).await.map_err(|f| service_error(&f))?;
                (v.id, v.name)
            }
            None => {
                if backup.status != ember_common::model::BackupStatus::Available {
                    return Err(ServiceError::new(
                        ErrorKind::BadRequest,
                        "Invalid backup: Backup status must be available",
                    ));
                }
                let name = req.name.clone().unwrap_or_else(|| format!("restore_backup_{id}"));
                let create = CreateVolume {
                    size: Some(backup.size),
                    name: Some(name.clone()),
                    description: Some(format!("auto-created_from_restore_from_backup_{id}")),
                    availability_zone: backup.availability_zone.clone(),
                    ..CreateVolume::default()
                };
                let v = self.volumes.create_volume(ctx, create).await?;
                self.wait_created(&v.id).await?;
                (v.id, Some(name))
            }
        };
        let fid = format!("{}:{id}:{}", api::restore_backup::FLOW, new_id());
        self.run(&self.restore, fid, id, api::restore_backup::inputs(ctx, id, &volume_id)).await?;
        Ok(Restored { backup_id: id.to_owned(), volume_id, volume_name })
    }
}
