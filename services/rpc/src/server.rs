//! The server's side: an endpoint (a manager) whose methods are run by name, with version checks.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::envelope::{Context, Envelope, Outcome, Version};
use crate::error::{RemoteError, Result};
use crate::target::Target;
use crate::transport::{Dispatcher, ListenOptions, ServerHandle, Transport};

/// A manager that serves an RPC interface (Cinder's `VolumeManager`, `SchedulerManager`...).
#[async_trait]
pub trait Endpoint: Send + Sync + 'static {
    /// The newest interface version this endpoint serves.
    fn version(&self) -> Version;

    /// Runs `method`. Unknown methods return [`RemoteError::unknown_method`]. The message is
    /// acknowledged after this returns, so make the work durable before returning, and make it
    /// idempotent: a message can arrive twice (see [`Envelope::message_id`]).
    async fn handle(&self, ctx: &Context, method: &str, args: &Value) -> Outcome;
}

/// Dispatches messages to an [`Endpoint`] after checking their version as Cinder does: the
/// major must match and the minor may not be newer than the endpoint's.
#[derive(Debug)]
pub struct RpcServer<E> {
    endpoint: E,
}

impl<E: Endpoint> RpcServer<E> {
    /// Wraps an endpoint.
    pub fn new(endpoint: E) -> Self {
        Self { endpoint }
    }

    /// Starts serving `target` on `transport`.
    pub async fn listen(
        self,
        transport: &dyn Transport,
        target: &Target,
        options: ListenOptions,
    ) -> Result<ServerHandle> {
        transport.listen(target, Arc::new(self), options).await
    }

    /// Starts serving only the fanout casts of `topic` on `transport`.
    pub async fn listen_fanout(
        self,
        transport: &dyn Transport,
        topic: &str,
        prefetch: u16,
    ) -> Result<ServerHandle> {
        transport.listen_fanout(topic, Arc::new(self), prefetch).await
    }
}

#[async_trait]
impl<E: Endpoint> Dispatcher for RpcServer<E> {
    async fn dispatch(&self, envelope: &Envelope) -> Outcome {
        let ours = self.endpoint.version();
        match Version::parse(&envelope.version) {
            Some(sent) if ours.can_handle(sent) => {}
            _ => {
                return Err(RemoteError::new(
                    RemoteError::UNSUPPORTED_VERSION,
                    format!(
                        "{} at version {} is not supported by a server at {}.{}",
                        envelope.method, envelope.version, ours.major, ours.minor
                    ),
                ));
            }
        }
        self.endpoint.handle(&envelope.context, &envelope.method, &envelope.args).await
    }
}
