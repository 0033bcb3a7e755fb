//! The caller's side: cast, call and fanout cast with a version and the caller's context;
//! every message sent is counted through the `metrics` crate (`ember_rpc_*`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::envelope::{Context, Envelope};
use crate::error::{Error, Result};
use crate::target::Target;
use crate::transport::Transport;

/// How long a call waits for its reply unless told otherwise (oslo's `rpc_response_timeout`).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends messages of one RPC interface, stamped with the interface version they were prepared
/// for. Cheap to clone.
#[derive(Clone)]
pub struct RpcClient {
    transport: Arc<dyn Transport>,
    version: Arc<str>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient").field("version", &self.version).finish_non_exhaustive()
    }
}

impl RpcClient {
    /// A client whose messages carry `version` (`"MAJOR.MINOR"`, e.g. `"3.0"`).
    pub fn new(transport: Arc<dyn Transport>, version: &str) -> Self {
        Self { transport, version: Arc::from(version) }
    }

    /// The same client sending at another version, as oslo's `prepare(version=...)`.
    pub fn at_version(&self, version: &str) -> Self {
        Self { transport: self.transport.clone(), version: Arc::from(version) }
    }

    fn envelope(&self, ctx: &Context, method: &str, args: Value) -> Envelope {
        Envelope::new(ctx.clone(), method, args, &*self.version)
    }

    /// Sends `method(args)` to one server of `target` without waiting for it to run; returns
    /// once the bus has stored the message.
    pub async fn cast(&self, ctx: &Context, target: &Target, method: &str, args: Value) -> Result<()> {
        let result = self.transport.cast(target, self.envelope(ctx, method, args)).await;
        count("ember_rpc_casts_total", &target.topic, method, outcome(&result));
        result
    }

    /// Runs `method(args)` on one server of `target` and returns its result; the server's
    /// error comes back as [`Error::Remote`], and no reply within `timeout` as [`Error::Timeout`].
    pub async fn call(
        &self,
        ctx: &Context,
        target: &Target,
        method: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let envelope = self.envelope(ctx, method, args);
        let started = Instant::now();
        let result =
            self.transport.call(target, envelope, timeout).await.and_then(|r| r.map_err(Error::Remote));
        let labels = [("topic", target.topic.clone()), ("method", method.to_owned())];
        metrics::histogram!("ember_rpc_call_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        count("ember_rpc_calls_total", &target.topic, method, outcome(&result));
        result
    }

    /// Sends `method(args)` to every server of `topic` that listens for fanout casts.
    pub async fn fanout_cast(&self, ctx: &Context, topic: &str, method: &str, args: Value) -> Result<()> {
        let result = self.transport.fanout_cast(topic, self.envelope(ctx, method, args)).await;
        count("ember_rpc_fanout_casts_total", topic, method, outcome(&result));
        result
    }
}

/// Counts one message sent, by topic, method and outcome (through the `metrics` facade:
/// nothing is recorded unless the process installed a recorder).
fn count(name: &'static str, topic: &str, method: &str, outcome: &'static str) {
    let labels =
        [("topic", topic.to_owned()), ("method", method.to_owned()), ("outcome", outcome.to_owned())];
    metrics::counter!(name, &labels).increment(1);
}

/// `ok`, `remote_error` (the server's method failed), `timeout`, or `error` (the bus).
fn outcome<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Error::Remote(_)) => "remote_error",
        Err(Error::Timeout { .. }) => "timeout",
        Err(_) => "error",
    }
}
