//! The reply side of calls: one exclusive reply queue per process and the calls waiting on it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use super::session::Live;
use super::{Amqp, publish};
use crate::envelope::{CallInfo, Envelope, Outcome, Reply};
use crate::error::{Error, Result};

type Pending = Mutex<HashMap<String, oneshot::Sender<Reply>>>;

/// The process's reply queue and the calls waiting for an answer, by correlation id.
#[derive(Default)]
pub(super) struct Replies {
    /// The queue on the current connection; exclusive, so it dies with its connection and is
    /// declared again on the next one.
    queue: tokio::sync::Mutex<Option<ReplyQueue>>,
    pending: Arc<Pending>,
}

struct ReplyQueue {
    name: String,
    channel: Channel,
    generation: u64,
}

impl Replies {
    /// The name of a working reply queue on `live`, declared (and consumed) if need be.
    async fn queue(&self, live: &Live, prefix: &str) -> Result<String> {
        let mut queue = self.queue.lock().await;
        if let Some(queue) = queue.as_ref()
            && queue.generation == live.generation
            && queue.channel.status().connected()
        {
            return Ok(queue.name.clone());
        }
        let name = format!("{prefix}reply_{}", Uuid::new_v4().simple());
        let channel = live.connection.create_channel().await?;
        let options =
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(name.as_str().into(), options, FieldTable::default()).await?;
        let consume = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let consumer =
            channel.basic_consume(name.as_str().into(), "".into(), consume, FieldTable::default()).await?;
        tokio::spawn(route(consumer, Arc::downgrade(&self.pending)));
        *queue = Some(ReplyQueue { name: name.clone(), channel, generation: live.generation });
        Ok(name)
    }

    /// Publishes a call and waits for its reply until `deadline`; a reply that does not come
    /// in time is [`Error::Unavailable`], which the transport reports as a timeout.
    pub(super) async fn call(
        &self,
        amqp: &Amqp,
        routing_key: &str,
        mut envelope: Envelope,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<Outcome> {
        let inner = &amqp.inner;
        let reply_to = publish::retry_until(deadline, "reply queue", || async {
            let live = inner.session.live().await?;
            self.queue(&live, &inner.options.prefix).await
        })
        .await?;
        let msg_id = Uuid::new_v4().simple().to_string();
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        envelope.call = Some(CallInfo { msg_id: msg_id.clone(), reply_to: reply_to.clone(), timeout_ms });
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(msg_id.clone(), tx);
        let _forget = Forget { pending: &self.pending, msg_id: &msg_id };
        // The message expires with the call, so a server that comes back later does not run
        // work nobody waits for any more.
        let props = super::properties(&envelope)
            .with_correlation_id(msg_id.as_str().into())
            .with_reply_to(reply_to.as_str().into())
            .with_expiration(timeout_ms.to_string().into());
        let body = super::encode(&envelope)?;
        publish::publish(&inner.session, &amqp.exchange_name(), routing_key, &body, props, deadline).await?;
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

/// Hands each reply to the call waiting for it, until the queue's channel or the transport goes.
async fn route(mut consumer: Consumer, pending: Weak<Pending>) {
    while let Some(Ok(delivery)) = consumer.next().await {
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
