//! `volume_create_scheduler`, Cinder's `cinder/scheduler/flows/create_volume.py`.
//!
//! Claimed by a scheduler worker from the `scheduler` topic. Steps:
//!
//! 1. `ExtractSchedulerSpecTask`: passes the request spec through, filling the volume id.
//! 2. `ScheduleCreateVolumeTask`: picks a pool with the filter scheduler, sets the
//!    volume's host with a compare-and-swap and hands the volume to the manager flow of
//!    that backend. `NoValidBackend` leaves the volume in `error` (its quota stays
//!    counted until the volume is deleted, as in Cinder).

use std::sync::Arc;

use chrono::Utc;
use ember_common::host::backend_of;
use ember_common::model::{VolumeChanges, VolumeExpect, VolumeStatus};
use ember_engine::{Context, Failure, Flow, RevertContext, Task, Values, async_trait};
use ember_scheduler::{Placement, RequestSpec};

use crate::deps::Deps;
use crate::error::domain;
use crate::handoff::{
    Handoff, VOLUME_CREATE_MANAGER as MANAGER_FLOW, VOLUME_CREATE_SCHEDULER, flow_id, hand_off, volume_topic,
    withdraw,
};
use crate::keys::*;

/// The flow's name.
pub const FLOW: &str = VOLUME_CREATE_SCHEDULER;

/// The inputs the sending task records.
pub const INPUTS: &[&str] = &[CONTEXT.name(), VOLUME_ID.name(), RAW_REQUEST_SPEC.name()];

/// Builds the flow.
pub fn get_flow(deps: Arc<Deps>) -> Flow {
    Flow::linear(FLOW)
        .inputs(INPUTS)
        .add(ExtractSchedulerSpec { deps: deps.clone() })
        .add(ScheduleCreateVolume { deps })
}

/// Passes the request spec through, filling the volume id if the sender left it out.
/// Revert: a volume still `creating` and unplaced goes to `error` (the flow failed before
/// it could place it; a placed one is `ScheduleCreateVolumeTask`'s revert's).
pub struct ExtractSchedulerSpec {
    deps: Arc<Deps>,
}

#[async_trait]
impl Task for ExtractSchedulerSpec {
    fn name(&self) -> &str {
        "ExtractSchedulerSpecTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[RAW_REQUEST_SPEC.name(), VOLUME_ID.name()] }
    }
    fn provides(&self) -> &[&'static str] {
        const { &[REQUEST_SPEC.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let mut spec = ctx.get(&RAW_REQUEST_SPEC)?;
        if spec.volume_id.is_none() {
            spec.volume_id = Some(ctx.get(&VOLUME_ID)?);
        }
        Ok(Values::new().with(&REQUEST_SPEC, spec))
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let expect = VolumeExpect { host: Some(None), ..VolumeExpect::status_in(&[VolumeStatus::Creating]) };
        let changes = VolumeChanges::status(VolumeStatus::Error);
        self.deps.volumes.update_volume(&ctx.get(&VOLUME_ID)?, &expect, &changes).await.map_err(domain)?;
        Ok(())
    }
}

/// Places the volume, records the pool on its row (compare-and-swap from `creating` with
/// no host) and hands it to the chosen backend's manager flow. A volume already placed by
/// an earlier run of this task is handed to its backend again (insert-or-ignore).
/// Revert: withdraws the hand-off to the manager if no process took it yet (else fails:
/// the manager flow owns the volume), then a volume still `creating` goes to `error`.
pub struct ScheduleCreateVolume {
    deps: Arc<Deps>,
}

impl ScheduleCreateVolume {
    /// Marks the volume `error` after a placement failure; lost races change nothing.
    async fn set_error(&self, id: &str, reason: &str) -> Result<(), Failure> {
        tracing::warn!(volume_id = %id, reason, "scheduling the volume failed");
        let expect = VolumeExpect { host: Some(None), ..VolumeExpect::status_in(&[VolumeStatus::Creating]) };
        self.deps
            .volumes
            .update_volume(id, &expect, &VolumeChanges::status(VolumeStatus::Error))
            .await
            .map_err(domain)?;
        Ok(())
    }

    async fn send(&self, ctx: &Context, host: &str, spec: RequestSpec) -> Result<(), Failure> {
        let id = ctx.get(&VOLUME_ID)?;
        let backend = backend_of(host).to_owned();
        let attempt = spec.retry.as_ref().map_or(1, |r| r.num_attempts);
        let inputs = Values::new()
            .with(&CONTEXT, ctx.get(&CONTEXT)?)
            .with(&VOLUME_ID, id.clone())
            .with(&REQUEST_SPEC, spec)
            .with(&BACKEND, backend.clone());
        let h = Handoff {
            name: MANAGER_FLOW,
            id: flow_id(MANAGER_FLOW, &id, Some(attempt)),
            topic: volume_topic(&backend),
            subject: &id,
            inputs,
        };
        hand_off(&self.deps, h).await.map(drop)
    }

    /// Whether an earlier run of this task handed the volume off already: the manager
    /// flow of this attempt exists. Scheduling again would place a volume whose manager
    /// flow may already have failed and handed it to the next attempt.
    async fn handed_off(&self, ctx: &Context, spec: &RequestSpec) -> Result<bool, Failure> {
        if ctx.attempt() == 1 {
            return Ok(false);
        }
        let id = self.manager_flow_id(&ctx.get(&VOLUME_ID)?, spec);
        let found = self
            .deps
            .store
            .get_flow(&id)
            .await
            .map_err(|e| Failure::new("service.internal", e.to_string()))?;
        Ok(found.is_some())
    }

    /// The id of the manager flow this run hands volume `id` to, from the request spec as
    /// the sender recorded it (the placement counts one more attempt).
    fn manager_flow_id(&self, id: &str, spec: &RequestSpec) -> String {
        let attempt = if self.deps.config.scheduler_max_attempts > 1 {
            spec.retry.as_ref().map_or(0, |r| r.num_attempts) + 1
        } else {
            1
        };
        flow_id(MANAGER_FLOW, id, Some(attempt))
    }

    async fn place(&self, id: &str, spec: &RequestSpec) -> Result<Option<Placement>, Failure> {
        let Some(scheduler) = &self.deps.scheduler else {
            return Err(Failure::new("service.internal", "this process has no scheduler"));
        };
        match scheduler.schedule(spec) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                self.set_error(id, &e.to_string()).await?;
                Ok(None)
            }
        }
    }
}

#[async_trait]
impl Task for ScheduleCreateVolume {
    fn name(&self) -> &str {
        "ScheduleCreateVolumeTask"
    }
    fn requires(&self) -> &[&'static str] {
        const { &[CONTEXT.name(), REQUEST_SPEC.name(), VOLUME_ID.name()] }
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        let id = ctx.get(&VOLUME_ID)?;
        let mut spec = ctx.get(&REQUEST_SPEC)?;
        let volume = match self.deps.volumes.get_volume(&id).await {
            Ok(v) => v,
            Err(ember_common::Error::NotFound { .. }) => {
                tracing::info!(volume_id = %id, "the volume was deleted before it was scheduled");
                return Ok(Values::new());
            }
            Err(e) => return Err(domain(e)),
        };
        if volume.status != VolumeStatus::Creating || self.handed_off(ctx, &spec).await? {
            return Ok(Values::new());
        }
        if let Some(host) = &volume.host {
            // An earlier run placed it and died before the hand-off: rebuild the retry
            // bookkeeping that run made, as the scheduler does (count it, add the pool).
            if self.deps.config.scheduler_max_attempts > 1 {
                let mut r = spec.retry.take().unwrap_or_default();
                r.num_attempts += 1;
                r.backends.push(host.clone());
                spec.retry = Some(r);
            }
            return self.send(ctx, host, spec).await.map(|()| Values::new());
        }
        let Some(p) = self.place(&id, &spec).await? else { return Ok(Values::new()) };
        let changes = VolumeChanges {
            host: Some(Some(p.host.clone())),
            availability_zone: Some(p.availability_zone.clone()),
            scheduled_at: Some(Some(Utc::now())),
            ..VolumeChanges::default()
        };
        let expect = VolumeExpect { host: Some(None), ..VolumeExpect::status_in(&[VolumeStatus::Creating]) };
        if self.deps.volumes.update_volume(&id, &expect, &changes).await.map_err(domain)?.is_none() {
            tracing::info!(volume_id = %id, "the volume changed while it was scheduled; nothing to do");
            return Ok(Values::new());
        }
        spec.retry = p.retry.clone();
        self.send(ctx, &p.host, spec).await?;
        Ok(Values::new())
    }

    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let id = ctx.get(&VOLUME_ID)?;
        withdraw(&self.deps, &self.manager_flow_id(&id, &ctx.get(&REQUEST_SPEC)?)).await?;
        let expect = VolumeExpect::status_in(&[VolumeStatus::Creating]);
        self.deps
            .volumes
            .update_volume(&id, &expect, &VolumeChanges::status(VolumeStatus::Error))
            .await
            .map_err(domain)?;
        Ok(())
    }
}
