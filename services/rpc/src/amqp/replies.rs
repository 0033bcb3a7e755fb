//! The reply side of calls: one exclusive reply queue per process and the calls waiting on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use super::Amqp;
use crate::envelope::{CallInfo, Envelope, Outcome, Reply};
use crate::error::{Error, Result};

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Reply>>>>;

/// The process's reply queue and the calls waiting for an answer, by correlation id.
pub(super) struct Replies {
    queue: String,
    pending: Pending,
}

impl Replies {
    /// Declares the reply queue (exclusive: it goes away with the connection, and lapin declares
    /// it again on recovery) and starts routing replies to their callers.
    pub(super) async fn start(connection: &Connection, prefix: &str) -> Result<Self> {
        let queue = format!("{prefix}reply_{}", Uuid::new_v4().simple());
        let channel = connection.create_channel().await?;
        let options =
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await?;
        let consume = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let consumer =
            channel.basic_consume(queue.as_str().into(), "".into(), consume, FieldTable::default()).await?;
        let pending = Pending::default();
        tokio::spawn(route(channel, consumer, Arc::downgrade(&pending)));
        Ok(Self { queue, pending })
    }

    /// Publishes a call and waits for its reply until `deadline`.
    pub(super) async fn call(
        &self,
        amqp: &Amqp,
        routing_key: &str,
        mut envelope: Envelope,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<Outcome> {
        let msg_id = Uuid::new_v4().simple().to_string();
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        envelope.call = Some(CallInfo { msg_id: msg_id.clone(), reply_to: self.queue.clone(), timeout_ms });
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(msg_id.clone(), tx);
        let _forget = Forget { pending: &self.pending, msg_id: &msg_id };
        // The message expires with the call, so a server that comes back later does not run
        // work nobody waits for any more.
        let props = super::properties(&envelope)
            .with_correlation_id(msg_id.as_str().into())
            .with_reply_to(self.queue.as_str().into())
            .with_expiration(timeout_ms.to_string().into());
        let body = super::encode(&envelope)?;
        let inner = &amqp.inner;
        inner
            .publisher
            .publish(&inner.connection, &amqp.exchange_name(), routing_key, &body, props, deadline)
            .await?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => Ok(reply.into_outcome()),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Unavailable("no reply".to_owned())),
        }
    }
}

/// Removes a call from the pending map however the call ends.
struct Forget<'a> {
    pending: &'a Pending,
    msg_id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(self.msg_id);
    }
}

/// Hands each reply to the call waiting for it, until the transport is dropped.
async fn route(
    channel: Channel,
    mut consumer: Consumer,
    pending: std::sync::Weak<Mutex<HashMap<String, oneshot::Sender<Reply>>>>,
) {
    while let Some(delivery) = consumer.next().await {
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(err) => {
                if let Err(err) = channel.wait_for_recovery(err).await {
                    tracing::error!(%err, "the AMQP reply queue is gone; calls will time out");
                    return;
                }
                continue;
            }
        };
        let Some(pending) = pending.upgrade() else { return };
        match serde_json::from_slice::<Reply>(&delivery.data) {
            Ok(reply) => {
                if let Some(tx) = pending.lock().remove(&reply.msg_id) {
                    let _ = tx.send(reply);
                }
            }
            Err(err) => tracing::warn!(%err, "dropping an undecodable RPC reply"),
        }
    }
}
