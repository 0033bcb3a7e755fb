//! The volume service's answer to a scheduler's `publish_service_capabilities` broadcast.

use async_trait::async_trait;
use serde_json::Value;

use ember_common::capabilities::PUBLISH_SERVICE_CAPABILITIES;
use ember_rpc::{Context, Endpoint, Outcome, RemoteError, Version};

use crate::reporter::ReporterHandle;

/// An RPC endpoint for the volume topic's fanout that asks the reporter for a fresh report
/// when a scheduler starts (Cinder's `VolumeManager.publish_service_capabilities`).
///
/// Serve it with [`ember_rpc::RpcServer::listen_fanout`] on `ember-volume`, next to the volume
/// manager (which serves the topic's work queues); a manager that also listens for the fanout
/// can instead call [`PublishEndpoint::handle_method`] for the methods it does not know.
#[derive(Debug, Clone)]
pub struct PublishEndpoint {
    reporter: ReporterHandle,
}

impl PublishEndpoint {
    pub fn new(reporter: ReporterHandle) -> Self {
        Self { reporter }
    }

    /// Handles `method` if it is this endpoint's; `None` otherwise.
    pub fn handle_method(&self, method: &str) -> Option<Outcome> {
        (method == PUBLISH_SERVICE_CAPABILITIES).then(|| {
            self.reporter.request_report();
            Ok(Value::Null)
        })
    }
}

#[async_trait]
impl Endpoint for PublishEndpoint {
    /// Cinder's volume RPC API version.
    fn version(&self) -> Version {
        Version { major: 3, minor: 20 }
    }

    async fn handle(&self, _ctx: &Context, method: &str, _args: &Value) -> Outcome {
        self.handle_method(method).unwrap_or_else(|| Err(RemoteError::unknown_method(method)))
    }
}
