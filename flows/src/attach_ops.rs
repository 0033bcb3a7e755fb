//! [`FlowAttachOps`]: the API's [`AttachOps`] contract (attachments API and legacy volume
//! actions), run as api-side flows; where Cinder makes an RPC call to the volume service,
//! the request waits for the volume-side flow it handed off.

use std::sync::Arc;
use std::time::Duration;

use ember_common::model::{AttachStatus, VolumeAttachment};
use ember_common::ops::{AttachOps, CreateAttachment, LegacyAttach, RequestContext};
use ember_common::{ErrorKind, ServiceError};
use ember_engine::{CompiledFlow, Engine, FlowDetail, FlowEnds, FlowState, Values};
use serde_json::Value;
use tokio::time::Instant;

use crate::api;
use crate::deps::Deps;
use crate::error::{Result, service_error};
use crate::handoff::flow_id;

/// The longest pause between two reads of a flow the request waits for.
const MAX_POLL: Duration = Duration::from_millis(20);

/// Runs the attach and detach api flows inside API requests, on an [`Engine`] whose every
/// step is persisted (topic `api`, so a peer API resumes them). The flows are compiled once.
///
/// The wait for a volume-side flow reads its record in the flow store until it ends or
/// `rpc_response_timeout` lapses (then 503; the flow goes on and the attachment shows where
/// it got to). Between two reads it sleeps, first 1 ms and then with a backoff doubling to
/// 20 ms, or less: where the volume service runs in this process ([`FlowEnds`], given with
/// [`FlowAttachOps::with_flow_ends`]), the end of the flow wakes the wait at once.
pub struct FlowAttachOps {
    engine: Engine,
    ends: Option<Arc<FlowEnds>>,
    deps: Arc<Deps>,
    create: CompiledFlow,
    update: CompiledFlow,
    complete: CompiledFlow,
    delete: CompiledFlow,
    delete_reserved: CompiledFlow,
    legacy_entry: CompiledFlow,
    reserve: CompiledFlow,
    unreserve: CompiledFlow,
    begin_detaching: CompiledFlow,
    roll_detaching: CompiledFlow,
}

impl FlowAttachOps {
    /// Compiles the attach api flows on `deps`, to run on `engine`.
    pub fn new(engine: Engine, deps: Arc<Deps>) -> Result<Self> {
        use api::legacy_swaps as swaps;
        Ok(Self {
            engine,
            ends: None,
            create: api::create_attachment::get_flow(deps.clone()).compile()?,
            update: api::update_attachment::get_flow(deps.clone()).compile()?,
            complete: api::complete_attachment::get_flow(deps.clone()).compile()?,
            delete: api::delete_attachment::get_flow(deps.clone()).compile()?,
            delete_reserved: api::delete_reserved_attachment::get_flow(deps.clone()).compile()?,
            legacy_entry: api::legacy_attachment::get_flow(deps.clone()).compile()?,
            reserve: swaps::reserve_flow(deps.clone()).compile()?,
            unreserve: swaps::unreserve_flow(deps.clone()).compile()?,
            begin_detaching: swaps::begin_detaching_flow(deps.clone()).compile()?,
            roll_detaching: swaps::roll_detaching_flow(deps.clone()).compile()?,
            deps,
        })
    }

    /// Wakes the waits for volume-side flows when an engine of this process stores their
    /// end (`ends` must be a listener of the engines and workers of the process).
    pub fn with_flow_ends(mut self, ends: Arc<FlowEnds>) -> Self {
        self.ends = Some(ends);
        self
    }

    /// Runs `flow` as flow `id` about `subject`.
    async fn run(
        &self,
        flow: &CompiledFlow,
        id: String,
        subject: &str,
        inputs: Values,
    ) -> Result<(), ServiceError> {
        crate::ops::run_api_flow(&self.engine, flow, id, subject, inputs).await.map(drop)
    }

    /// Runs `flow` under a fresh id about `subject`; returns the id.
    async fn run_fresh(
        &self,
        flow: &CompiledFlow,
        subject: &str,
        inputs: Values,
    ) -> Result<String, ServiceError> {
        let id = format!("{}:{subject}:{}", flow.name(), uuid::Uuid::new_v4());
        self.run(flow, id.clone(), subject, inputs).await?;
        Ok(id)
    }

    /// Waits for the volume-side flow `id` to end; its failure is the request's.
    async fn wait(&self, id: &str) -> Result<(), ServiceError> {
        let deadline = Instant::now() + self.deps.config.rpc_response_timeout;
        let mut pause = Duration::from_millis(1);
        // Watched before the first read, so an end stored after that read still wakes us.
        let watch = self.ends.as_ref().map(|ends| ends.watch(id));
        loop {
            match self.deps.store.get_flow(id).await {
                Ok(Some(detail)) if detail.flow.state.is_terminal() => return outcome(&detail),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(flow_id = %id, error = %e, "reading a flow the request waits for failed")
                }
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(flow_id = %id, "the volume service did not answer within rpc_response_timeout");
                return Err(ServiceError::new(
                    ErrorKind::Unavailable,
                    "The volume service did not answer in time; the operation goes on.",
                ));
            }
            let sleep = tokio::time::sleep(pause.min(deadline - now));
            match &watch {
                Some(watch) => tokio::select! {
                    () = watch.ended() => {}
                    () = sleep => {}
                },
                None => sleep.await,
            }
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// Connects attachment `id` to `connector`: the update api flow, then the wait.
    async fn connect(&self, ctx: &RequestContext, id: &str, connector: Value) -> Result<(), ServiceError> {
        let inputs = api::update_attachment::inputs(ctx, id, connector);
        let api_flow = self.run_fresh(&self.update, id, inputs).await?;
        self.wait(&api::update_attachment::manager_flow_id(id, &api_flow)).await
    }

    /// The attachment `id` as stored, if the caller may see it.
    async fn visible(&self, ctx: &RequestContext, id: &str) -> Result<VolumeAttachment, ServiceError> {
        crate::attachments::own_attachment(&self.deps, ctx, id).await.map_err(|f| service_error(&f))
    }

    /// The live attachments of volume `volume_id`.
    async fn live(&self, volume_id: &str) -> Result<Vec<VolumeAttachment>, ServiceError> {
        self.deps
            .attachments
            .list_attachments(Some(volume_id), None)
            .await
            .map_err(|e| ServiceError::from(&e))
    }

    /// Ends attachment `a`: without a hand-off when it was never connected, else through
    /// the volume service (the request waits).
    async fn end(&self, ctx: &RequestContext, a: &VolumeAttachment) -> Result<(), ServiceError> {
        if a.attach_status == AttachStatus::Reserved && a.connector.is_none() {
            let inputs = api::delete_reserved_attachment::inputs(ctx, &a.id, &a.volume_id);
            return self.run_fresh(&self.delete_reserved, &a.id, inputs).await.map(drop);
        }
        let api_flow =
            self.run_fresh(&self.delete, &a.id, api::delete_attachment::inputs(ctx, &a.id)).await?;
        self.wait(&api::delete_attachment::manager_flow_id(&a.id, &api_flow)).await
    }

    /// Records a legacy attachment of `volume_id`; returns its id.
    async fn legacy_entry(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        req: LegacyAttach,
    ) -> Result<String, ServiceError> {
        let id = uuid::Uuid::new_v4().to_string();
        let fid = flow_id(api::legacy_attachment::FLOW, &id, None);
        let inputs = api::legacy_attachment::inputs(ctx, volume_id, req, &id);
        self.run(&self.legacy_entry, fid, &id, inputs).await?;
        Ok(id)
    }

    /// The one attachment of `volume_id` named by `attachment_id`, or its only one.
    async fn pick(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        attachment_id: Option<&str>,
    ) -> Result<Option<VolumeAttachment>, ServiceError> {
        if let Some(id) = attachment_id {
            let a = self.visible(ctx, id).await?;
            if a.volume_id != volume_id {
                return Err(not_found(id));
            }
            return Ok(Some(a));
        }
        let live = self.live(volume_id).await?;
        match live.len() {
            0 => Ok(None),
            1 => Ok(live.into_iter().next()),
            _ => Err(ServiceError::new(
                ErrorKind::BadRequest,
                format!(
                    "Invalid volume: Volume {volume_id} has several attachments; name the one to detach."
                ),
            )),
        }
    }
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::new(
        ErrorKind::NotFound,
        format!("Volume attachment could not be found with filter: attachment_id = {id}."),
    )
}

/// The answer of a finished volume-side flow: success, or the failure of the task that
/// failed (the kind it carries, else a 500 whose details stay in the log).
fn outcome(detail: &FlowDetail) -> Result<(), ServiceError> {
    if detail.flow.state == FlowState::Success {
        return Ok(());
    }
    match detail.atoms.iter().find_map(|a| a.failure.as_ref()) {
        Some(f) => Err(service_error(f)),
        None => {
            tracing::warn!(flow_id = %detail.flow.id, state = %detail.flow.state.as_str(), "a flow ended without a failure");
            Err(ServiceError::new(ErrorKind::Internal, "the request could not be completed"))
        }
    }
}

#[async_trait::async_trait]
impl AttachOps for FlowAttachOps {
    async fn create_attachment(
        &self,
        ctx: &RequestContext,
        req: CreateAttachment,
    ) -> Result<VolumeAttachment, ServiceError> {
        let id = uuid::Uuid::new_v4().to_string();
        let connector = req.connector.clone();
        let volume_id = req.volume_id.clone();
        let fid = flow_id(api::create_attachment::FLOW, &id, None);
        self.run(&self.create, fid, &volume_id, api::create_attachment::inputs(ctx, req, &id)).await?;
        if let Some(connector) = connector {
            self.connect(ctx, &id, connector).await?;
        }
        self.visible(ctx, &id).await
    }

    async fn update_attachment(
        &self,
        ctx: &RequestContext,
        id: &str,
        connector: Value,
    ) -> Result<VolumeAttachment, ServiceError> {
        self.connect(ctx, id, connector).await?;
        self.visible(ctx, id).await
    }

    async fn complete_attachment(&self, ctx: &RequestContext, id: &str) -> Result<(), ServiceError> {
        self.run_fresh(&self.complete, id, api::complete_attachment::inputs(ctx, id)).await.map(drop)
    }

    async fn delete_attachment(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> Result<Vec<VolumeAttachment>, ServiceError> {
        let a = self.visible(ctx, id).await?;
        self.end(ctx, &a).await?;
        self.live(&a.volume_id).await
    }

    async fn reserve_volume(&self, ctx: &RequestContext, volume_id: &str) -> Result<(), ServiceError> {
        let inputs = api::legacy_swaps::inputs(ctx, volume_id);
        self.run_fresh(&self.reserve, volume_id, inputs).await.map(drop)
    }

    async fn unreserve_volume(&self, ctx: &RequestContext, volume_id: &str) -> Result<(), ServiceError> {
        let inputs = api::legacy_swaps::inputs(ctx, volume_id);
        self.run_fresh(&self.unreserve, volume_id, inputs).await.map(drop)
    }

    async fn begin_detaching(&self, ctx: &RequestContext, volume_id: &str) -> Result<(), ServiceError> {
        let inputs = api::legacy_swaps::inputs(ctx, volume_id);
        self.run_fresh(&self.begin_detaching, volume_id, inputs).await.map(drop)
    }

    async fn roll_detaching(&self, ctx: &RequestContext, volume_id: &str) -> Result<(), ServiceError> {
        let inputs = api::legacy_swaps::inputs(ctx, volume_id);
        self.run_fresh(&self.roll_detaching, volume_id, inputs).await.map(drop)
    }

    async fn initialize_connection(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        connector: Value,
    ) -> Result<Value, ServiceError> {
        // The same connector again reuses its attachment, as Cinder's answer is the same.
        let live = self.live(volume_id).await?;
        let id = match live.iter().find(|a| a.connector.as_ref() == Some(&connector)) {
            Some(a) => a.id.clone(),
            None => self.legacy_entry(ctx, volume_id, LegacyAttach::default()).await?,
        };
        self.connect(ctx, &id, connector).await?;
        let a = self.visible(ctx, &id).await?;
        Ok(legacy_connection_info(a.connection_info.unwrap_or(Value::Null)))
    }

    async fn terminate_connection(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        connector: Value,
    ) -> Result<(), ServiceError> {
        for a in self.live(volume_id).await? {
            if a.connector.as_ref() == Some(&connector) {
                self.end(ctx, &a).await?;
            }
        }
        // Cinder's terminate also unreserves a volume left `attaching` by `os-reserve`.
        let _ = self.unreserve_volume(ctx, volume_id).await;
        Ok(())
    }

    async fn attach(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        req: LegacyAttach,
    ) -> Result<VolumeAttachment, ServiceError> {
        // The attachment `os-initialize_connection` made, else a new one.
        let live = self.live(volume_id).await?;
        let id = match live.iter().find(|a| a.attach_status == AttachStatus::Attaching) {
            Some(a) => a.id.clone(),
            None => self.legacy_entry(ctx, volume_id, req).await?,
        };
        self.complete_attachment(ctx, &id).await?;
        self.visible(ctx, &id).await
    }

    async fn detach(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        attachment_id: Option<&str>,
    ) -> Result<(), ServiceError> {
        match self.pick(ctx, volume_id, attachment_id).await? {
            Some(a) => self.end(ctx, &a).await,
            // Already ended (by `os-terminate_connection`): the volume's status is settled.
            None => Ok(()),
        }
    }

    async fn force_detach(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        attachment_id: Option<&str>,
        _connector: Option<Value>,
    ) -> Result<(), ServiceError> {
        if !ctx.is_admin {
            return Err(ServiceError::new(
                ErrorKind::Forbidden,
                "Policy doesn't allow volume_extension:volume_admin_actions:force_detach to be performed.",
            ));
        }
        let targets = match attachment_id {
            Some(id) => vec![self.pick(ctx, volume_id, Some(id)).await?.ok_or_else(|| not_found(id))?],
            None => self.live(volume_id).await?,
        };
        for a in targets {
            self.end(ctx, &a).await?;
        }
        Ok(())
    }
}

/// Cinder's legacy `os-initialize_connection` answer: `{"driver_volume_type", "data"}`,
/// the data being the attachment's connection info without its type.
fn legacy_connection_info(flat: Value) -> Value {
    let Value::Object(mut data) = flat else { return Value::Null };
    let kind = data.remove("driver_volume_type").unwrap_or(Value::Null);
    let enforce = data.get("enforce_multipath").cloned().unwrap_or(Value::Bool(false));
    serde_json::json!({ "driver_volume_type": kind, "data": data, "enforce_multipath": enforce })
}
