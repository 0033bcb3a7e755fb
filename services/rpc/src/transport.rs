//! The transport trait that both buses implement, and the server-side plumbing they share.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::envelope::{Envelope, Outcome};
use crate::error::{RemoteError, Result};
use crate::target::Target;

/// Runs the method a message names; implemented by [`crate::RpcServer`] over an endpoint.
#[async_trait]
pub trait Dispatcher: Send + Sync + 'static {
    /// Handles one message. The transport acknowledges the message only after this returns,
    /// so the work must be durable (or idempotent to redo) by then.
    async fn dispatch(&self, envelope: &Envelope) -> Outcome;
}

/// How a server consumes its queues.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// How many messages a server handles at once (AMQP `basic.qos` prefetch).
    pub prefetch: u16,
    /// Whether to also receive the topic's fanout casts.
    pub fanout: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self { prefetch: 16, fanout: true }
    }
}

/// A message bus: in-process ([`crate::InProcess`]) or RabbitMQ ([`crate::Amqp`]).
///
/// Delivery is at least once: a message whose handler did not finish (the server died, the
/// connection dropped) is delivered again, possibly to another server, so handlers must be
/// idempotent and dedupe on [`Envelope::message_id`] where redoing the work would be wrong.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends a message to one server of `target` and returns once the bus has stored it.
    async fn cast(&self, target: &Target, envelope: Envelope) -> Result<()>;

    /// Sends a message to one server of `target` and waits up to `timeout` for its reply.
    /// The transport fills in [`Envelope::call`].
    async fn call(&self, target: &Target, envelope: Envelope, timeout: Duration) -> Result<Outcome>;

    /// Sends a message to every server of `topic` that listens for fanout casts right now.
    async fn fanout_cast(&self, topic: &str, envelope: Envelope) -> Result<()>;

    /// Starts consuming `target`'s queues, handing each message to `dispatcher`.
    async fn listen(
        &self,
        target: &Target,
        dispatcher: Arc<dyn Dispatcher>,
        options: ListenOptions,
    ) -> Result<ServerHandle>;

    /// Starts consuming only the fanout casts of `topic` (a queue of this server's own), not
    /// the topic's work queues: for a component that answers broadcasts (capability reports,
    /// requests for them) next to the manager that takes the topic's work.
    async fn listen_fanout(
        &self,
        topic: &str,
        dispatcher: Arc<dyn Dispatcher>,
        prefetch: u16,
    ) -> Result<ServerHandle>;
}

/// Controls a listening server. Dropping it stops the server from taking new messages.
#[derive(Debug)]
pub struct ServerHandle {
    pub(crate) workers: Workers,
}

impl ServerHandle {
    /// Stops taking messages and waits for the messages in hand to be handled and acknowledged.
    pub async fn stop(self) {
        self.workers.stop.cancel();
        self.workers.wait().await;
    }

    /// Stops at once, abandoning the messages in hand without acknowledging them, as a process
    /// that dies would; the bus delivers them again to another server.
    pub async fn kill(self) {
        self.workers.kill.cancel();
        self.workers.wait().await;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.workers.stop.cancel();
    }
}

/// The tasks of one server: consumer loops and message handlers, with their stop signals and
/// the permits that bound how many messages are handled at once.
#[derive(Debug, Clone)]
pub(crate) struct Workers {
    /// Cancelled to stop consuming; a child of `kill`, so a kill stops consuming too.
    pub(crate) stop: CancellationToken,
    /// Cancelled to abandon the messages in hand.
    pub(crate) kill: CancellationToken,
    /// Consumer loops (and, on AMQP, the supervisor that owns the channel).
    loops: TaskTracker,
    /// Message handlers.
    handlers: TaskTracker,
    permits: Arc<Semaphore>,
}

impl Workers {
    pub(crate) fn new(prefetch: u16) -> Self {
        let kill = CancellationToken::new();
        Self {
            stop: kill.child_token(),
            kill,
            loops: TaskTracker::new(),
            handlers: TaskTracker::new(),
            permits: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
        }
    }

    /// Waits for a free handler slot; `None` once the server is stopping.
    pub(crate) async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            _ = self.stop.cancelled() => None,
            permit = self.permits.clone().acquire_owned() => permit.ok(),
        }
    }

    /// Spawns a consumer loop; it should watch `stop` itself.
    pub(crate) fn spawn_loop(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.loops.spawn(task);
    }

    /// Spawns a message handler that is dropped mid-way if the server is killed.
    pub(crate) fn spawn_handler(&self, task: impl Future<Output = ()> + Send + 'static) {
        let kill = self.kill.clone();
        self.handlers.spawn(async move {
            tokio::select! {
                _ = kill.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Waits for the handlers once no loop spawns new ones.
    pub(crate) async fn drain_handlers(&self) {
        self.handlers.close();
        self.handlers.wait().await;
    }

    async fn wait(&self) {
        self.loops.close();
        self.loops.wait().await;
        self.drain_handlers().await;
    }
}

/// Runs the dispatcher, turning a panic into an error reply so that a bad message cannot
/// crash the server or come back forever.
pub(crate) async fn dispatch_safely(dispatcher: &dyn Dispatcher, envelope: &Envelope) -> Outcome {
    match AssertUnwindSafe(dispatcher.dispatch(envelope)).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(_) => {
            tracing::error!(method = %envelope.method, message_id = %envelope.message_id, "RPC handler panicked");
            Err(RemoteError::new(RemoteError::INTERNAL, format!("handler of {} failed", envelope.method)))
        }
    }
}
