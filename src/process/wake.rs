//! Waking the workers of another process over RPC after a hand-off, and the endpoint
//! that receives those wakes.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use ember_engine::WorkerHandle;
use ember_flows::handoff::{API_TOPIC, SCHEDULER_TOPIC};
use ember_rpc::{Context, Endpoint, Outcome, RemoteError, RpcClient, Target, Version};
use serde_json::{Value, json};

/// The RPC method that wakes the workers of a flow topic.
pub const WAKE: &str = "wake_flows";

/// The RPC target that reaches the workers of flow topic `topic`.
pub fn target(topic: &str) -> Target {
    if let Some(backend) = topic.strip_prefix("volume.") {
        Target::volume_backend(backend)
    } else if let Some(host) = topic.strip_prefix("backup.") {
        Target::server(ember_rpc::BACKUP_TOPIC, host)
    } else if topic == SCHEDULER_TOPIC {
        Target::topic(ember_rpc::SCHEDULER_TOPIC)
    } else if topic == API_TOPIC {
        Target::topic("ember-api")
    } else {
        Target::topic(format!("ember-{topic}"))
    }
}

/// The flows' wake hook as an RPC cast: a lost cast only delays the claim until the
/// receiving worker's next sweep, so casts are fire-and-forget.
pub struct RpcWake {
    client: RpcClient,
}

impl RpcWake {
    pub fn new(client: RpcClient) -> Self {
        Self { client }
    }
}

impl ember_flows::Wake for RpcWake {
    fn wake(&self, topic: &str) {
        let client = self.client.clone();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            let ctx = Context::default();
            if let Err(err) = client.cast(&ctx, &target(&topic), WAKE, json!({ "topic": topic })).await {
                tracing::debug!(%topic, error = %err, "wake cast failed; the sweep will claim the flow");
            }
        });
    }
}

/// Receives wakes for the flow topics of this process's workers.
#[derive(Clone, Default)]
pub struct WakeEndpoint {
    handles: Arc<HashMap<String, WorkerHandle>>,
}

impl WakeEndpoint {
    pub fn new(handles: HashMap<String, WorkerHandle>) -> Self {
        Self { handles: Arc::new(handles) }
    }
}

#[async_trait]
impl Endpoint for WakeEndpoint {
    fn version(&self) -> Version {
        Version { major: 3, minor: 0 }
    }

    async fn handle(&self, _ctx: &Context, method: &str, args: &Value) -> Outcome {
        if method != WAKE {
            return Err(RemoteError::unknown_method(method));
        }
        let topic = args.get("topic").and_then(Value::as_str).unwrap_or_default();
        match self.handles.get(topic) {
            Some(handle) => handle.wake(),
            // A wake for a topic no local worker serves: every worker of this process sweeps.
            None => self.handles.values().for_each(WorkerHandle::wake),
        }
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ember_rpc::{InProcess, ListenOptions, RpcServer, Transport};

    use super::*;
    use crate::process::metrics::Metrics;

    /// Casts and calls through the real wake endpoint are counted by topic, method and
    /// outcome (the end-to-end mix makes no calls, so they are checked here).
    #[test]
    fn rpc_casts_and_calls_are_counted() {
        let recorder = Metrics::recorder();
        let handle = recorder.handle();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let transport: Arc<dyn Transport> = Arc::new(InProcess::new());
                let target = Target::topic("ember-scheduler");
                let options = ListenOptions { prefetch: 4, fanout: false };
                let server = RpcServer::new(WakeEndpoint::default())
                    .listen(&*transport, &target, options)
                    .await
                    .unwrap();
                let client = RpcClient::new(transport, "3.0");
                let (ctx, args, wait) =
                    (Context::default(), json!({ "topic": "scheduler" }), Duration::from_secs(5));
                client.cast(&ctx, &target, WAKE, args.clone()).await.unwrap();
                client.call(&ctx, &target, WAKE, args.clone(), wait).await.unwrap();
                client.call(&ctx, &target, WAKE, args.clone(), wait).await.unwrap();
                assert!(client.call(&ctx, &target, "no_such_method", args, wait).await.is_err());
                server.stop().await;
            })
        });
        let text = handle.render();
        for line in [
            "ember_rpc_casts_total{topic=\"ember-scheduler\",method=\"wake_flows\",outcome=\"ok\"} 1",
            "ember_rpc_calls_total{topic=\"ember-scheduler\",method=\"wake_flows\",outcome=\"ok\"} 2",
            "ember_rpc_calls_total{topic=\"ember-scheduler\",method=\"no_such_method\",outcome=\"remote_error\"} 1",
            "ember_rpc_call_duration_seconds_count{topic=\"ember-scheduler\",method=\"wake_flows\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn flow_topics_map_to_rpc_targets() {
        assert_eq!(
            target("volume.node1@file").routing_key(),
            Target::volume_backend("node1@file").routing_key()
        );
        assert_eq!(target(SCHEDULER_TOPIC).routing_key(), ember_rpc::SCHEDULER_TOPIC);
    }
}
