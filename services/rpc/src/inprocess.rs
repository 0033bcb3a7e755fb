//! The in-process bus: tokio-friendly channels with the same semantics as the AMQP transport.
//!
//! Each routing key has a work queue shared by all its consumers (round robin); each fanout
//! listener has a queue of its own. Messages are moved, never serialized. A message taken by a
//! server that is killed before it finishes goes back to its queue, as AMQP redelivers an
//! unacknowledged message, so the all-in-one mode keeps the delivery guarantees of the broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::envelope::{CallInfo, Envelope, Outcome};
use crate::error::{Error, Result};
use crate::target::Target;
use crate::transport::{Dispatcher, ListenOptions, ServerHandle, Transport, Workers, dispatch_safely};

/// The in-process transport. Clones share one bus.
#[derive(Clone, Default)]
pub struct InProcess {
    bus: Arc<Bus>,
}

#[derive(Default)]
struct Bus {
    /// Work queues by routing key; like durable queues they outlive their consumers.
    queues: Mutex<HashMap<String, Queue>>,
    /// The queues of the fanout listeners of each topic.
    fanouts: Mutex<HashMap<String, Vec<flume::Sender<Delivery>>>>,
}

#[derive(Clone)]
struct Queue {
    tx: flume::Sender<Delivery>,
    rx: flume::Receiver<Delivery>,
}

struct Delivery {
    envelope: Arc<Envelope>,
    reply: Option<oneshot::Sender<Outcome>>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess").finish_non_exhaustive()
    }
}

impl InProcess {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn queue(&self, key: &str) -> Queue {
        let mut queues = self.bus.queues.lock();
        if let Some(queue) = queues.get(key) {
            return queue.clone();
        }
        let (tx, rx) = flume::unbounded();
        let queue = Queue { tx, rx };
        queues.insert(key.to_owned(), queue.clone());
        queue
    }

    fn send(&self, target: &Target, delivery: Delivery) {
        let mut queues = self.bus.queues.lock();
        // Most messages go to a whole topic, whose key needs no formatting.
        let key = match &target.server {
            None => std::borrow::Cow::Borrowed(target.topic.as_str()),
            Some(_) => std::borrow::Cow::Owned(target.routing_key()),
        };
        let queue = match queues.get(key.as_ref()) {
            Some(queue) => queue,
            None => {
                let (tx, rx) = flume::unbounded();
                queues.entry(key.into_owned()).or_insert(Queue { tx, rx })
            }
        };
        // The queue holds its own receiver, so a send cannot fail; an unbounded send never waits.
        let _ = queue.tx.send(delivery);
    }

    fn subscribe_fanout(&self, topic: &str) -> flume::Receiver<Delivery> {
        let (tx, rx) = flume::unbounded();
        self.bus.fanouts.lock().entry(topic.to_owned()).or_default().push(tx);
        rx
    }
}

#[async_trait]
impl Transport for InProcess {
    async fn cast(&self, target: &Target, envelope: Envelope) -> Result<()> {
        self.send(target, Delivery { envelope: Arc::new(envelope), reply: None });
        Ok(())
    }

    async fn call(&self, target: &Target, mut envelope: Envelope, timeout: Duration) -> Result<Outcome> {
        let (tx, rx) = oneshot::channel();
        envelope.call = Some(CallInfo {
            msg_id: Uuid::new_v4().simple().to_string(),
            reply_to: "in-process".to_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        });
        let method = envelope.method.clone();
        self.send(target, Delivery { envelope: Arc::new(envelope), reply: Some(tx) });
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            // The bus never drops a message with its reply sender, so this means shutdown.
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout { method, routing_key: target.routing_key(), after: timeout }),
        }
    }

    async fn fanout_cast(&self, topic: &str, envelope: Envelope) -> Result<()> {
        let envelope = Arc::new(envelope);
        let mut fanouts = self.bus.fanouts.lock();
        if let Some(listeners) = fanouts.get_mut(topic) {
            listeners.retain(|tx| tx.send(Delivery { envelope: Arc::clone(&envelope), reply: None }).is_ok());
        }
        Ok(())
    }

    async fn listen(
        &self,
        target: &Target,
        dispatcher: Arc<dyn Dispatcher>,
        options: ListenOptions,
    ) -> Result<ServerHandle> {
        let workers = Workers::new(options.prefetch);
        for key in target.listen_keys() {
            let queue = self.queue(&key);
            workers.spawn_loop(consume(workers.clone(), queue.rx, Some(queue.tx), dispatcher.clone()));
        }
        if options.fanout {
            let rx = self.subscribe_fanout(&target.topic);
            workers.spawn_loop(consume(workers.clone(), rx, None, dispatcher));
        }
        Ok(ServerHandle { workers })
    }

    async fn listen_fanout(
        &self,
        topic: &str,
        dispatcher: Arc<dyn Dispatcher>,
        prefetch: u16,
    ) -> Result<ServerHandle> {
        let workers = Workers::new(prefetch);
        let rx = self.subscribe_fanout(topic);
        workers.spawn_loop(consume(workers.clone(), rx, None, dispatcher));
        Ok(ServerHandle { workers })
    }
}

/// Takes messages from one queue while handler slots are free, until the server stops.
async fn consume(
    workers: Workers,
    rx: flume::Receiver<Delivery>,
    requeue: Option<flume::Sender<Delivery>>,
    dispatcher: Arc<dyn Dispatcher>,
) {
    // Take the slot before the message so that a stopping server holds no message it has not
    // started to handle.
    while let Some(permit) = workers.permit().await {
        let delivery = tokio::select! {
            _ = workers.stop.cancelled() => break,
            delivery = rx.recv_async() => match delivery {
                Ok(delivery) => delivery,
                Err(_) => break,
            },
        };
        let unacked = Unacked { delivery: Some(delivery), requeue: requeue.clone() };
        let dispatcher = dispatcher.clone();
        workers.spawn_handler(async move {
            handle(&*dispatcher, unacked).await;
            drop(permit);
        });
    }
}

async fn handle(dispatcher: &dyn Dispatcher, mut unacked: Unacked) {
    let Some(delivery) = unacked.delivery.as_ref() else { return };
    // A caller that gave up no longer waits for the answer: skip the work, as AMQP expires it.
    let expired = delivery.reply.as_ref().is_some_and(oneshot::Sender::is_closed);
    let outcome = if expired { None } else { Some(dispatch_safely(dispatcher, &delivery.envelope).await) };
    if let (Some(delivery), Some(outcome)) = (unacked.ack(), outcome)
        && let Some(reply) = delivery.reply
    {
        let _ = reply.send(outcome);
    }
}

/// A message being handled; dropped before [`Unacked::ack`] (its server was killed), it goes
/// back to its queue for another server.
struct Unacked {
    delivery: Option<Delivery>,
    requeue: Option<flume::Sender<Delivery>>,
}

impl Unacked {
    fn ack(&mut self) -> Option<Delivery> {
        self.delivery.take()
    }
}

impl Drop for Unacked {
    fn drop(&mut self) {
        if let (Some(delivery), Some(requeue)) = (self.delivery.take(), &self.requeue) {
            tracing::debug!(message_id = %delivery.envelope.message_id, "requeueing an abandoned message");
            let _ = requeue.send(delivery);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::envelope::Context;

    #[tokio::test(start_paused = true)]
    async fn a_call_nobody_serves_times_out_after_its_timeout() {
        let bus = InProcess::new();
        let envelope = Envelope::new(Context::internal(), "get_pools", json!({}), "3.0");
        let started = tokio::time::Instant::now();
        let result = bus.call(&Target::topic("ember-scheduler"), envelope, Duration::from_secs(60)).await;
        assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }
}
