//! Servers on RabbitMQ: consume a target's queues with bounded prefetch, dispatch, reply, then ack.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Consumer, ExchangeKind};
use tokio::time::Instant;
use uuid::Uuid;

use super::session::{Live, MAX_PAUSE, MIN_PAUSE};
use super::{Amqp, publish};
use crate::envelope::{CallInfo, Envelope, Outcome, Reply};
use crate::error::{Error, Result};
use crate::target::Target;
use crate::transport::{Dispatcher, ListenOptions, ServerHandle, Workers, dispatch_safely};

/// The longest a dead connection can go unnoticed by a server that receives nothing.
const WATCHDOG: Duration = Duration::from_secs(1);
/// How long to wait for lapin to hand an ack, a cancel or a close to its IO loop. On a
/// connection whose IO loop has ended these never complete, and the broker has already put the
/// messages back, so there is nothing to wait for.
const CHANNEL_OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a channel operation whose failure only needs logging, bounded by [`CHANNEL_OP_TIMEOUT`].
async fn best_effort<T>(what: &str, op: impl Future<Output = lapin::Result<T>>) -> Option<T> {
    match tokio::time::timeout(CHANNEL_OP_TIMEOUT, op).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            tracing::debug!(%err, what, "AMQP channel operation failed");
            None
        }
        Err(_) => {
            tracing::debug!(what, "AMQP channel operation timed out");
            None
        }
    }
}

/// Declares the target's queues, starts one consumer per queue on a channel of the server's
/// own, and returns the handle that stops (or kills) them. The first attach happens here, so a
/// server that cannot start says so; later ones follow connection losses.
pub(super) async fn listen(
    amqp: &Amqp,
    target: &Target,
    dispatcher: Arc<dyn Dispatcher>,
    options: ListenOptions,
    queues: bool,
) -> Result<ServerHandle> {
    let workers = Workers::new(options.prefetch);
    let server = Server {
        amqp: amqp.clone(),
        target: target.clone(),
        options,
        queues,
        workers: workers.clone(),
        dispatcher,
    };
    let what = target.routing_key();
    let attached = publish::retry_until(amqp.publish_deadline(), &what, || server.attach()).await?;
    workers.spawn_loop(server.supervise(attached));
    Ok(ServerHandle { workers })
}

/// Declares this server's own queue on the topic's fanout exchange. It is exclusive, so it goes
/// away with the server's connection; the next attach declares a new one.
async fn declare_fanout_queue(amqp: &Amqp, channel: &Channel, topic: &str) -> Result<String> {
    let exchange = amqp.fanout_exchange_name(topic);
    amqp.ensure_exchange(&exchange, ExchangeKind::Fanout).await?;
    let queue = format!("{exchange}_{}", Uuid::new_v4().simple());
    let options =
        QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await?;
    let bind = QueueBindOptions::default();
    channel
        .queue_bind(queue.as_str().into(), exchange.into(), "".into(), bind, FieldTable::default())
        .await?;
    Ok(queue)
}

#[derive(Clone)]
struct Server {
    amqp: Amqp,
    target: Target,
    options: ListenOptions,
    /// Whether to consume the target's work queues; false for a fanout-only server.
    queues: bool,
    workers: Workers,
    dispatcher: Arc<dyn Dispatcher>,
}

/// A server's channel and consumers on one connection.
struct Attached {
    live: Arc<Live>,
    channel: Channel,
    consumers: Vec<Consumer>,
}

/// Why a server's consumers ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Stopped,
    Killed,
    Lost,
}

impl Server {
    /// Declares the queues on the live connection and starts consuming them.
    async fn attach(&self) -> Result<Attached> {
        let mut queues = Vec::new();
        if self.queues {
            for key in self.target.listen_keys() {
                queues.push(self.amqp.ensure_queue(&key).await?);
            }
        }
        let live = self.amqp.inner.session.live().await?;
        let channel = live.connection.create_channel().await?;
        channel.basic_qos(self.options.prefetch.max(1), BasicQosOptions::default()).await?;
        if self.options.fanout {
            queues.push(declare_fanout_queue(&self.amqp, &channel, &self.target.topic).await?);
        }
        let mut consumers = Vec::with_capacity(queues.len());
        for queue in queues {
            let options = BasicConsumeOptions::default();
            consumers
                .push(channel.basic_consume(queue.into(), "".into(), options, FieldTable::default()).await?);
        }
        Ok(Attached { live, channel, consumers })
    }

    /// Consumes until the server stops or is killed, attaching again (with backoff) whenever
    /// the connection is lost.
    async fn supervise(self, first: Attached) {
        let mut attached = Some(first);
        let mut pause = MIN_PAUSE;
        loop {
            let current = match attached.take() {
                Some(current) => current,
                None => {
                    let result = tokio::select! {
                        _ = self.workers.stop.cancelled() => return,
                        result = self.attach() => result,
                    };
                    match result {
                        Ok(current) => current,
                        Err(Error::Closed) => return,
                        Err(err) => {
                            tracing::warn!(%err, target = %self.target, "could not resume an RPC server; retrying");
                            tokio::select! {
                                _ = self.workers.stop.cancelled() => return,
                                () = tokio::time::sleep(pause) => {}
                            }
                            pause = (pause * 2).min(MAX_PAUSE);
                            continue;
                        }
                    }
                }
            };
            pause = MIN_PAUSE;
            if self.run(current).await != Ended::Lost {
                return;
            }
            tracing::warn!(target = %self.target, "RPC server lost its connection; resuming");
        }
    }

    /// Runs the consumers of one attachment; on a stop, lets the messages in hand finish before
    /// closing the channel; on a kill or a loss, closes it at once, and the broker puts back
    /// whatever was not acknowledged.
    async fn run(&self, attached: Attached) -> Ended {
        let Attached { live, channel, consumers } = attached;
        let mut loops: FuturesUnordered<_> =
            consumers.into_iter().map(|consumer| self.consume(&channel, consumer)).collect();
        let watchdog = async {
            loop {
                tokio::time::sleep(WATCHDOG).await;
                if !live.healthy() || !channel.status().connected() {
                    break;
                }
            }
        };
        let ended = tokio::select! {
            _ = self.workers.kill.cancelled() => Ended::Killed,
            _ = loops.next() => if self.workers.stop.is_cancelled() { Ended::Stopped } else { Ended::Lost },
            () = watchdog => Ended::Lost,
        };
        if ended == Ended::Stopped {
            tokio::select! {
                _ = self.workers.kill.cancelled() => {}
                () = async {
                    while loops.next().await.is_some() {}
                    self.workers.drain_handlers().await;
                } => {}
            }
        }
        drop(loops);
        best_effort("close", channel.close(200, "server stopped".into())).await;
        ended
    }

    /// Takes messages from one consumer while handler slots are free; returns when the server
    /// stops (cancelling the consumer) or the consumer ends or fails.
    async fn consume(&self, channel: &Channel, mut consumer: Consumer) {
        while let Some(permit) = self.workers.permit().await {
            let next = tokio::select! {
                _ = self.workers.stop.cancelled() => break,
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let server = self.clone();
                    self.workers.spawn_handler(async move {
                        server.handle(delivery).await;
                        drop(permit);
                    });
                }
                Some(Err(err)) => {
                    tracing::warn!(%err, queue = %consumer.queue(), "AMQP consumer failed");
                    return;
                }
                None => return,
            }
        }
        best_effort("cancel", channel.basic_cancel(consumer.tag(), BasicCancelOptions::default())).await;
    }

    async fn handle(&self, delivery: Delivery) {
        let envelope: Envelope = match serde_json::from_slice(&delivery.data) {
            Ok(envelope) => envelope,
            Err(err) => {
                // Requeueing a message that cannot be read would only bring it back forever.
                tracing::error!(%err, "dropping an undecodable RPC message");
                best_effort("reject", delivery.acker.reject(BasicRejectOptions { requeue: false })).await;
                return;
            }
        };
        let outcome = dispatch_safely(&*self.dispatcher, &envelope).await;
        if let Some(call) = &envelope.call {
            self.reply(call, outcome).await;
        }
        if best_effort("ack", delivery.acker.ack(BasicAckOptions::default())).await != Some(true) {
            // The channel this came on is gone, so the broker delivers the message again.
            tracing::debug!(message_id = %envelope.message_id, "could not acknowledge an RPC message");
        }
    }

    async fn reply(&self, call: &CallInfo, outcome: Outcome) {
        let reply = Reply::new(call.msg_id.clone(), outcome);
        let body = match serde_json::to_vec(&reply) {
            Ok(body) => body,
            Err(err) => {
                tracing::error!(%err, "could not encode an RPC reply");
                return;
            }
        };
        let props = BasicProperties::default().with_correlation_id(call.msg_id.as_str().into());
        let deadline = Instant::now() + Duration::from_millis(call.timeout_ms);
        // Replies go through the default exchange straight to the caller's queue.
        let session = &self.amqp.inner.session;
        if let Err(err) = publish::publish(session, "", &call.reply_to, &body, props, deadline).await {
            tracing::warn!(%err, reply_to = %call.reply_to, "could not send an RPC reply");
        }
    }
}
