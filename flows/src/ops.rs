//! [`FlowVolumeOps`]: the API's [`VolumeOps`] contract, run as api-side flows on an
//! [`Engine`] whose every step is persisted in the flow store.

use std::sync::Arc;

use ember_common::model::{Snapshot, Volume};
use ember_common::ops::{CreateSnapshot, CreateVolume, DeleteVolume, RequestContext, VolumeOps};
use ember_common::{ErrorKind, ServiceError};
use ember_engine::{CompiledFlow, Engine, FlowSpec, Key, Outcome, Value, Values};
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::deps::Deps;
use crate::error::{Result, engine_service_error};
use crate::handoff::{API_TOPIC, flow_id};
use crate::keys::{SNAPSHOT, VOLUME};

/// Runs the api-side flows synchronously inside API requests. Each flow is recorded in the
/// engine's store under topic `api` (a create under an id derived from the new volume's
/// id), so a peer API's worker resumes it if this process dies mid-way. The flows are
/// compiled once.
pub struct FlowVolumeOps {
    engine: Engine,
    create_volume: CompiledFlow,
    delete_volume: CompiledFlow,
    extend_volume: CompiledFlow,
    create_snapshot: CompiledFlow,
    delete_snapshot: CompiledFlow,
}

impl FlowVolumeOps {
    /// Compiles the api flows on `deps`, to run on `engine` (its store is the flow store).
    pub fn new(engine: Engine, deps: Arc<Deps>) -> Result<Self> {
        Ok(Self {
            engine,
            create_volume: api::create_volume::get_flow(deps.clone()).compile()?,
            delete_volume: api::delete_volume::get_flow(deps.clone()).compile()?,
            extend_volume: api::extend_volume::get_flow(deps.clone()).compile()?,
            create_snapshot: api::create_snapshot::get_flow(deps.clone()).compile()?,
            delete_snapshot: api::delete_snapshot::get_flow(deps).compile()?,
        })
    }

    /// Runs `flow` as flow `id` about `subject` and returns what its atoms provided.
    async fn run(
        &self,
        flow: &CompiledFlow,
        id: String,
        subject: &str,
        inputs: Values,
    ) -> Result<Values, ServiceError> {
        run_api_flow(&self.engine, flow, id, subject, inputs).await
    }

    /// Runs a flow about an existing resource; its id is fresh, so a refused request may
    /// be sent again.
    async fn run_on(
        &self,
        flow: &CompiledFlow,
        subject: &str,
        inputs: Values,
    ) -> Result<Values, ServiceError> {
        let id = format!("{}:{subject}:{}", flow.name(), new_id());
        self.run(flow, id, subject, inputs).await
    }
}

/// A value every successful run of the flow provides.
fn provided<T: Value>(values: &Values, key: &Key<T>) -> Result<T, ServiceError> {
    values.get(key).ok().flatten().ok_or_else(|| {
        tracing::error!(symbol = key.name(), "a flow succeeded without providing its result");
        ServiceError::new(ErrorKind::Internal, "the request could not be completed")
    })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[async_trait::async_trait]
impl VolumeOps for FlowVolumeOps {
    async fn create_volume(&self, ctx: &RequestContext, req: CreateVolume) -> Result<Volume, ServiceError> {
        let id = new_id();
        let flow_id = flow_id(api::create_volume::FLOW, &id, None);
        let values =
            self.run(&self.create_volume, flow_id, &id, api::create_volume::inputs(ctx, req, &id)).await?;
        provided(&values, &VOLUME)
    }

    async fn delete_volume(
        &self,
        ctx: &RequestContext,
        id: &str,
        opts: DeleteVolume,
    ) -> Result<(), ServiceError> {
        self.run_on(&self.delete_volume, id, api::delete_volume::inputs(ctx, id, opts)).await.map(drop)
    }

    async fn extend_volume(&self, ctx: &RequestContext, id: &str, new_size: i64) -> Result<(), ServiceError> {
        self.extend_volume_allowing_in_use(ctx, id, new_size, false).await
    }

    async fn extend_volume_allowing_in_use(
        &self,
        ctx: &RequestContext,
        id: &str,
        new_size: i64,
        allow_in_use: bool,
    ) -> Result<(), ServiceError> {
        let inputs = api::extend_volume::inputs(ctx, id, new_size, allow_in_use);
        self.run_on(&self.extend_volume, id, inputs).await.map(drop)
    }

    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        req: CreateSnapshot,
    ) -> Result<Snapshot, ServiceError> {
        let id = new_id();
        let flow_id = flow_id(api::create_snapshot::FLOW, &id, None);
        let values = self
            .run(&self.create_snapshot, flow_id, &id, api::create_snapshot::inputs(ctx, req, &id))
            .await?;
        provided(&values, &SNAPSHOT)
    }

    async fn delete_snapshot(&self, ctx: &RequestContext, id: &str, force: bool) -> Result<(), ServiceError> {
        self.run_on(&self.delete_snapshot, id, api::delete_snapshot::inputs(ctx, id, force)).await.map(drop)
    }
}

/// Runs `flow` in this process as api flow `id` about `subject` (the request waits for it)
/// and returns what its atoms provided; a suspended run is a 503. Every `*Ops` of the
/// flows runs its requests through this.
pub(crate) async fn run_api_flow(
    engine: &Engine,
    flow: &CompiledFlow,
    id: String,
    subject: &str,
    inputs: Values,
) -> Result<Values, ServiceError> {
    let spec = FlowSpec {
        id: Some(id),
        topic: Some(API_TOPIC.to_owned()),
        subject: Some(subject.to_owned()),
        inputs,
    };
    match engine.run_spec(flow, spec, &CancellationToken::new()).await {
        Ok(Outcome::Success(values)) => Ok(values),
        Ok(Outcome::Suspended) => Err(ServiceError::new(ErrorKind::Unavailable, "the request was suspended")),
        Err(e) => Err(engine_service_error(&e)),
    }
}
