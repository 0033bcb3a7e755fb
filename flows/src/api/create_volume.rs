//! `volume_create_api`, Cinder's `cinder/volume/flows/api/create_volume.py`.
//!
//! Run by the API inside `POST /volumes`, persisted, so a peer API resumes it if this one
//! dies. Steps:
//!
//! 1. `ExtractVolumeRequestTask`: validates the request against its source (snapshot,
//!    volume or backup), resolves size, type, zone and multiattach.
//! 2. `QuotaReserveTask`: checks `per_volume_gigabytes`, reserves `volumes`, `gigabytes`
//!    and their per-type copies.
//! 3. `EntryCreateTask`: inserts the row in `creating` under the id fixed in the inputs.
//! 4. `QuotaCommitTask`: turns the reservation into usage.
//! 5. `VolumeCastTask`: hands the volume to the scheduler (a durable hand-off).

use std::sync::Arc;

use ember_common::access;
use ember_common::model::{BackupStatus, SnapshotStatus, Volume, VolumeExpect, VolumeStatus, VolumeType};
use ember_common::ops::{CreateVolume, RequestContext};
use ember_common::{Error as DomainError, ErrorKind};
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};
use ember_scheduler::RequestSpec;

use crate::backups::own_backup;
use crate::deps::Deps;
use crate::error::{domain, fail};
use crate::handoff::{Handoff, SCHEDULER_TOPIC, flow_id, hand_off, withdraw};
use crate::keys::*;
use crate::quota::{check_size_limit, key, release_now, reserve, revert_key, volume_deltas};
use crate::scheduler::create_volume::FLOW as SCHEDULER_FLOW;

/// The flow's name, its factory's name in a worker's registry.
pub const FLOW: &str = "volume_create_api";

/// The inputs the caller supplies.
pub const INPUTS: &[&str] = &[CONTEXT.name(), CREATE_REQUEST.name(), NEW_ID.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractVolumeRequest { deps: deps.clone() })
        .add(QuotaReserve { deps: deps.clone() })
        .add(EntryCreate { deps: deps.clone() })
        .add(QuotaCommit { deps: deps.clone() })
        .add(VolumeCast { deps })
}

/// The inputs of one create.
pub fn inputs(ctx: &RequestContext, req: CreateVolume, new_id: &str) -> Values {
    Values::new().with(&CONTEXT, ctx.clone()).with(&CREATE_REQUEST, req).with(&NEW_ID, new_id.to_owned())
}

/// Checks the request against its source and resolves size, type, zones and multiattach.
/// Revert: nothing (it changes nothing).
pub struct ExtractVolumeRequest {
    deps: Arc<Deps>,
}

/// What a new volume inherits from its source.
#[derive(Default)]
struct Source {
    size: Option<i64>,
    type_id: Option<String>,
    zone: Option<String>,
}

impl ExtractVolumeRequest {
    async fn source(&self, ctx: &RequestContext, req: &CreateVolume) -> Result<Source, Failure> {
        let given =
            [&req.snapshot_id, &req.source_volid, &req.backup_id].iter().filter(|s| s.is_some()).count();
        if given > 1 {
            return Err(fail(
                ErrorKind::BadRequest,
                "May specify only one of snapshot, imageRef, source volume or backup.",
            ));
        }
        if let Some(id) = &req.backup_id {
            // Another project's backup reads as an unknown one (`own_backup`).
            let b = own_backup(&self.deps, ctx, id).await?;
            if b.status != BackupStatus::Available {
                return Err(fail(
                    ErrorKind::BadRequest,
                    format!("Invalid backup: Backup status must be available, not {}.", b.status),
                ));
            }
            return Ok(Source { size: Some(b.size), type_id: None, zone: None });
        }
        if let Some(id) = &req.snapshot_id {
            let snap = self.deps.snapshots.get_snapshot(id).await.map_err(domain)?;
            if snap.project_id != ctx.project_id && !ctx.is_admin {
                return Err(fail(ErrorKind::NotFound, format!("Snapshot {id} could not be found.")));
            }
            if snap.status != SnapshotStatus::Available {
                return Err(fail(
                    ErrorKind::BadRequest,
                    format!(
                        "Invalid snapshot: Originating snapshot status must be 'available', not {}.",
                        snap.status
                    ),
                ));
            }
            let parent = self.deps.volumes.get_volume(&snap.volume_id).await.ok();
            return Ok(Source {
                size: Some(snap.volume_size),
                type_id: Some(snap.volume_type_id),
                zone: parent.map(|v| v.availability_zone),
            });
        }
        if let Some(id) = &req.source_volid {
            let src = self.deps.volumes.get_volume(id).await.map_err(domain)?;
            if src.project_id != ctx.project_id && !ctx.is_admin {
                return Err(fail(ErrorKind::NotFound, format!("Volume {id} could not be found.")));
            }
            if !matches!(src.status, VolumeStatus::Available | VolumeStatus::InUse) {
                return Err(fail(
                    ErrorKind::BadRequest,
                    format!(
                        "Invalid volume: Source volume status must be 'available' or 'in-use', not {}.",
                        src.status
                    ),
                ));
            }
            return Ok(Source {
                size: Some(src.size),
                type_id: Some(src.volume_type_id),
                zone: Some(src.availability_zone),
            });
        }
        Ok(Source::default())
    }

    async fn volume_type(
        &self,
        rc: &RequestContext,
        req: &CreateVolume,
        source: &Source,
    ) -> Result<VolumeType, Failure> {
        let types = &self.deps.types;
        match (&req.volume_type, &source.type_id) {
            (Some(name_or_id), _) => {
                let not_found =
                    || fail(ErrorKind::NotFound, format!("Volume type {name_or_id} could not be found."));
                let t = match types.get_volume_type_by_name(name_or_id).await {
                    Ok(t) => t,
                    Err(_) => types.get_volume_type(name_or_id).await.map_err(|_| not_found())?,
                };
                // Another project's private type reads exactly as an unknown one.
                if access::may_use_type(types.as_ref(), rc, &t).await.map_err(domain)? {
                    Ok(t)
                } else {
                    Err(not_found())
                }
            }
            (None, Some(id)) => types.get_volume_type(id).await.map_err(domain),
            (None, None) => {
                types.get_volume_type_by_name(&self.deps.config.default_volume_type).await.map_err(|e| {
                    tracing::error!(error = %e, "the default volume type is misconfigured");
                    fail(ErrorKind::Internal, "The default volume type is misconfigured.")
                })
            }
        }
    }
}

#[async_trait]
impl Task for ExtractVolumeRequest {
    fn name(&self) -> &str {
        "ExtractVolumeRequestTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), CREATE_REQUEST.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const {
            &[
                SIZE.name(),
                SOURCE_SNAPSHOT_ID.name(),
                SOURCE_VOLID.name(),
                BACKUP_ID.name(),
                VOLUME_TYPE.name(),
                AVAILABILITY_ZONES.name(),
                MULTIATTACH.name(),
            ]
        }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let req = ctx.get(&CREATE_REQUEST)?;
        let source = self.source(&rc, &req).await?;
        let size = match (req.size, source.size) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => {
                return Err(fail(ErrorKind::BadRequest, "Invalid input received: size is required."));
            }
        };
        if size <= 0 {
            return Err(fail(
                ErrorKind::BadRequest,
                format!("Invalid input received: size {size} must be > 0."),
            ));
        }
        if let Some(min) = source.size.filter(|min| size < *min) {
            return Err(fail(
                ErrorKind::BadRequest,
                format!("Invalid input received: size {size}G is smaller than its source's {min}G."),
            ));
        }
        let vt = self.volume_type(&rc, &req, &source).await?;
        let zone = req
            .availability_zone
            .clone()
            .or(source.zone)
            .unwrap_or_else(|| self.deps.config.storage_availability_zone.clone());
        let multiattach = vt.multiattach();
        Ok(Values::new()
            .with(&SIZE, size)
            .with(&SOURCE_SNAPSHOT_ID, req.snapshot_id)
            .with(&SOURCE_VOLID, req.source_volid)
            .with(&BACKUP_ID, req.backup_id)
            .with(&VOLUME_TYPE, vt)
            .with(&AVAILABILITY_ZONES, vec![zone])
            .with(&MULTIATTACH, multiattach))
    }
}

/// Checks `per_volume_gigabytes` and reserves the volume's quota.
/// Revert: rolls the reservation back (a no-op once committed).
pub struct QuotaReserve {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for QuotaReserve {
    fn name(&self) -> &str {
        "QuotaReserveTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), SIZE.name(), VOLUME_TYPE.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[RESERVATIONS.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let size = ctx.get(&SIZE)?;
        let vt = ctx.get(&VOLUME_TYPE)?;
        check_size_limit(&self.deps, &rc.project_id, size).await?;
        let ids = reserve(&self.deps, &key(ctx), &rc.project_id, &volume_deltas(1, size, &vt.name)).await?;
        Ok(Values::new().with(&RESERVATIONS, ids))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        // By key, not by the result: the task may have reserved and then failed or died.
        self.deps.quotas.rollback_once(&key(ctx)).await.map_err(domain)
    }
}

/// Inserts the volume row in `creating` under the id fixed in the flow's inputs; a row an
/// earlier attempt inserted is adopted.
/// Revert: soft-deletes the row while it is still `creating` and unscheduled.
pub struct EntryCreate {
    deps: Arc<Deps>,
}

impl EntryCreate {
    fn build(ctx: &Context) -> Result<Volume, Failure> {
        let rc = ctx.get(&CONTEXT)?;
        let req = ctx.get(&CREATE_REQUEST)?;
        let vt = ctx.get(&VOLUME_TYPE)?;
        let zone = ctx.get(&AVAILABILITY_ZONES)?.into_iter().next().unwrap_or_default();
        let mut v = Volume::new(ctx.get(&NEW_ID)?, &rc.project_id, &rc.user_id, ctx.get(&SIZE)?, vt.id, zone);
        v.name = req.name;
        v.description = req.description;
        v.metadata = req.metadata;
        v.snapshot_id = ctx.get(&SOURCE_SNAPSHOT_ID)?;
        v.source_volid = ctx.get(&SOURCE_VOLID)?;
        v.backup_id = ctx.get(&BACKUP_ID)?;
        v.multiattach = ctx.get(&MULTIATTACH)?;
        Ok(v)
    }
}

#[async_trait]
impl Task for EntryCreate {
    fn name(&self) -> &str {
        "EntryCreateTask"
    }
    fn requires(&self) -> &[&'static str] {
        const {
            &[
                CONTEXT.name(),
                CREATE_REQUEST.name(),
                NEW_ID.name(),
                SIZE.name(),
                VOLUME_TYPE.name(),
                AVAILABILITY_ZONES.name(),
                SOURCE_SNAPSHOT_ID.name(),
                SOURCE_VOLID.name(),
                BACKUP_ID.name(),
                MULTIATTACH.name(),
                RESERVATIONS.name(),
            ]
        }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[VOLUME_ID.name(), VOLUME.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let v = Self::build(ctx)?;
        let volume = match self.deps.volumes.create_volume(&v).await {
            Ok(v) => v,
            Err(ember_common::Error::Duplicate { .. }) => {
                self.deps.volumes.get_volume(&v.id).await.map_err(domain)?
            }
            Err(e) => return Err(domain(e)),
        };
        Ok(Values::new().with(&VOLUME_ID, volume.id.clone()).with(&VOLUME, volume))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let id = ctx.get(&NEW_ID)?;
        let expect = VolumeExpect { host: Some(None), ..VolumeExpect::status_in(&[VolumeStatus::Creating]) };
        self.deps.volumes.soft_delete_volume(&id, &expect).await.map_err(domain)?;
        Ok(())
    }
}

/// Commits the reservation: the volume now counts in `in_use`.
/// Revert: destroys the entry and, once it is gone, makes sure the reservation was
/// committed and hands the usage back, once (keyed): whether this task finished, or failed
/// or died after its commit, and however often the revert runs. Cinder leaves the row in
/// `error`, whose later delete would hand the usage back a second time.
pub struct QuotaCommit {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for QuotaCommit {
    fn name(&self) -> &str {
        "QuotaCommitTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[RESERVATIONS.name(), VOLUME.name(), VOLUME_TYPE.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        self.deps.quotas.commit(&ctx.get(&RESERVATIONS)?).await.map_err(domain)?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let v = ctx.get(&VOLUME)?;
        let expect = VolumeExpect { host: Some(None), ..VolumeExpect::status_in(&[VolumeStatus::Creating]) };
        let destroyed = self.deps.volumes.soft_delete_volume(&v.id, &expect).await.map_err(domain)?
            || matches!(self.deps.volumes.get_volume(&v.id).await, Err(DomainError::NotFound { .. }));
        if destroyed {
            self.deps.quotas.commit(&ctx.get(&RESERVATIONS)?).await.map_err(domain)?;
            let vt = ctx.get(&VOLUME_TYPE)?;
            release_now(&self.deps, &revert_key(ctx), &v.project_id, &volume_deltas(1, v.size, &vt.name))
                .await?;
        }
        Ok(())
    }
}

/// Builds the request spec and hands the volume to the scheduler: records the
/// `volume_create_scheduler` flow of attempt 1 and wakes the scheduler topic.
/// Revert: withdraws the hand-off if no process took it yet; else fails, which ends the
/// flow in FAILURE and leaves the resource to the receiving flow. After a withdrawal,
/// `QuotaCommitTask`'s revert destroys the entry.
pub struct VolumeCast {
    deps: Arc<Deps>,
}

impl VolumeCast {
    /// Cinder's `resource_backend`: a volume made from a snapshot or a clone stays on the
    /// source's backend (`snapshot_same_host`), where the driver finds the source.
    async fn resource_backend(&self, ctx: &Context) -> Result<Option<String>, Failure> {
        let source_volume = match (ctx.get(&SOURCE_SNAPSHOT_ID)?, ctx.get(&SOURCE_VOLID)?) {
            (Some(snap), _) => self.deps.snapshots.get_snapshot(&snap).await.map_err(domain)?.volume_id,
            (None, Some(vol)) => vol,
            (None, None) => return Ok(None),
        };
        let src = self.deps.volumes.get_volume(&source_volume).await.map_err(domain)?;
        Ok(src.host.map(|h| ember_common::host::backend_of(&h).to_owned()))
    }
}

#[async_trait]
impl Task for VolumeCast {
    fn name(&self) -> &str {
        "VolumeCastTask"
    }
    fn requires(&self) -> &[&'static str] {
        const {
            &[
                CONTEXT.name(),
                VOLUME.name(),
                VOLUME_TYPE.name(),
                AVAILABILITY_ZONES.name(),
                MULTIATTACH.name(),
                SOURCE_SNAPSHOT_ID.name(),
                SOURCE_VOLID.name(),
            ]
        }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let volume = ctx.get(&VOLUME)?;
        let spec = RequestSpec {
            volume_id: Some(volume.id.clone()),
            size_gb: u64::try_from(volume.size).unwrap_or(0),
            extra_specs: ctx.get(&VOLUME_TYPE)?.extra_specs,
            availability_zones: Some(ctx.get(&AVAILABILITY_ZONES)?),
            multiattach: ctx.get(&MULTIATTACH)?,
            resource_backend: self.resource_backend(ctx).await?,
            ..RequestSpec::default()
        };
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&VOLUME_ID, volume.id.clone())
            .with(&RAW_REQUEST_SPEC, spec);
        let h = Handoff {
            name: SCHEDULER_FLOW,
            id: flow_id(SCHEDULER_FLOW, &volume.id, Some(1)),
            topic: SCHEDULER_TOPIC.to_owned(),
            subject: &volume.id,
            inputs,
        };
        hand_off(&self.deps, h).await?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        withdraw(&self.deps, &flow_id(SCHEDULER_FLOW, &ctx.get(&VOLUME)?.id, Some(1))).await
    }
}
