//! Servers on RabbitMQ: consume a target's queues with bounded prefetch, dispatch, reply, then ack.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Consumer, ExchangeKind};
use tokio::time::Instant;
use uuid::Uuid;

use super::Amqp;
use crate::envelope::{CallInfo, Envelope, Outcome, Reply};
use crate::error::Result;
use crate::target::Target;
use crate::transport::{Dispatcher, ListenOptions, ServerHandle, Workers, dispatch_safely};

/// Declares the target's queues, starts one consumer per queue on a channel of the server's
/// own, and returns the handle that stops (or kills) them.
pub(super) async fn listen(
    amqp: &Amqp,
    target: &Target,
    dispatcher: Arc<dyn Dispatcher>,
    options: ListenOptions,
) -> Result<ServerHandle> {
    let mut queues = Vec::new();
    for key in target.listen_keys() {
        queues.push(amqp.ensure_queue(&key).await?);
    }
    let channel = amqp.inner.connection.create_channel().await?;
    channel.basic_qos(options.prefetch.max(1), BasicQosOptions::default()).await?;
    if options.fanout {
        queues.push(declare_fanout_queue(amqp, &channel, &target.topic).await?);
    }
    let mut consumers = Vec::with_capacity(queues.len());
    for queue in queues {
        let consumer = channel
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        consumers.push(consumer);
    }
    let workers = Workers::new(options.prefetch);
    let server = Server { amqp: amqp.clone(), channel, workers: workers.clone(), dispatcher };
    workers.spawn_loop(server.supervise(consumers));
    Ok(ServerHandle { workers })
}

/// Declares this server's own queue on the topic's fanout exchange. It is exclusive, so it goes
/// away with the server's connection, and lapin declares and binds it again on recovery.
async fn declare_fanout_queue(amqp: &Amqp, channel: &Channel, topic: &str) -> Result<String> {
    let exchange = amqp.fanout_exchange_name(topic);
    amqp.ensure_exchange(&exchange, ExchangeKind::Fanout).await?;
    let queue = format!("{exchange}_{}", Uuid::new_v4().simple());
    let options =
        QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(queue)
}

#[derive(Clone)]
struct Server {
    amqp: Amqp,
    channel: Channel,
    workers: Workers,
    dispatcher: Arc<dyn Dispatcher>,
}

impl Server {
    /// Runs the consumers until the server stops (then lets the messages in hand finish) or is
    /// killed, and closes the channel: the broker puts back whatever was not acknowledged.
    async fn supervise(self, consumers: Vec<Consumer>) {
        let consuming = join_all(consumers.into_iter().map(|consumer| self.clone().consume(consumer)));
        tokio::select! {
            _ = self.workers.kill.cancelled() => {}
            _ = async { consuming.await; self.workers.drain_handlers().await } => {}
        }
        let _ = self.channel.close(200, "server stopped".into()).await;
    }

    async fn consume(self, mut consumer: Consumer) {
        while let Some(permit) = self.workers.permit().await {
            let next = tokio::select! {
                _ = self.workers.stop.cancelled() => break,
                next = consumer.next() => next,
            };
            match next {
                None => break,
                Some(Ok(delivery)) => {
                    let server = self.clone();
                    self.workers.spawn_handler(async move {
                        server.handle(delivery).await;
                        drop(permit);
                    });
                }
                Some(Err(err)) => {
                    // The connection dropped: lapin reconnects and replays this consumer; the
                    // broker redelivers what was not acknowledged.
                    tracing::warn!(%err, queue = %consumer.queue(), "AMQP consumer interrupted; waiting for recovery");
                    let recovered = tokio::select! {
                        _ = self.workers.stop.cancelled() => break,
                        recovered = self.channel.wait_for_recovery(err) => recovered,
                    };
                    if let Err(err) = recovered {
                        tracing::error!(%err, queue = %consumer.queue(), "AMQP consumer lost for good");
                        break;
                    }
                }
            }
        }
        let _ = self.channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
    }

    async fn handle(&self, delivery: Delivery) {
        let envelope: Envelope = match serde_json::from_slice(&delivery.data) {
            Ok(envelope) => envelope,
            Err(err) => {
                // Requeueing a message that cannot be read would only bring it back forever.
                tracing::error!(%err, "dropping an undecodable RPC message");
                let _ = delivery.acker.reject(BasicRejectOptions { requeue: false }).await;
                return;
            }
        };
        let outcome = dispatch_safely(&*self.dispatcher, &envelope).await;
        if let Some(call) = &envelope.call {
            self.reply(call, outcome).await;
        }
        if let Err(err) = delivery.acker.ack(BasicAckOptions::default()).await {
            // The channel this came on is gone, so the broker delivers the message again.
            tracing::warn!(%err, message_id = %envelope.message_id, "could not acknowledge an RPC message");
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
        let inner = &self.amqp.inner;
        // Replies go through the default exchange straight to the caller's queue.
        if let Err(err) =
            inner.publisher.publish(&inner.connection, "", &call.reply_to, &body, props, deadline).await
        {
            tracing::warn!(%err, reply_to = %call.reply_to, "could not send an RPC reply");
        }
    }
}
