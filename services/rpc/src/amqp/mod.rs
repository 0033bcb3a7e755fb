//! The RabbitMQ transport (AMQP 0-9-1 through lapin), laid out as oslo.messaging lays out Cinder's.
//!
//! Topology, with every name behind a configurable prefix so tests can run side by side:
//! - a durable topic exchange (`ember`) that routes by routing key;
//! - a durable queue per routing key (`ember-volume`, `ember-volume.HOST@BACKEND`, ...),
//!   declared by servers and by senders alike so that a cast made before any server started
//!   waits in its queue instead of being dropped by the exchange;
//! - a fanout exchange per topic (`ember-volume_fanout`) with an exclusive queue per server;
//! - an exclusive reply queue per process (`reply_<uuid>`) for calls.
//!
//! Casts are persistent and published with publisher confirms; a cast that is not confirmed
//! (the connection dropped) is published again, so delivery is at least once. Consumers
//! acknowledge after the handler returned. A dead connection is replaced with backoff
//! (`session.rs`), and senders and servers declare their topology again on the new one.

mod publish;
mod replies;
mod server;
mod session;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{BasicProperties, ExchangeKind};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::envelope::{Envelope, Outcome};
use crate::error::{Error, Result};
use crate::target::Target;
use crate::transport::{Dispatcher, ListenOptions, ServerHandle, Transport};

use replies::Replies;
use session::{Live, Session};

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// How to reach RabbitMQ and name things there.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AmqpOptions {
    /// `amqp://user:password@host:port/vhost`; append `?heartbeat=10` to detect dead peers sooner.
    pub url: String,
    /// The topic exchange (oslo's `control_exchange`).
    pub exchange: String,
    /// Put in front of every exchange and queue name, so that several deployments (or tests)
    /// share one broker without seeing each other's messages.
    pub prefix: String,
    /// How long a cast may wait for the broker's confirmation, reconnections included, before
    /// it fails.
    pub publish_timeout_ms: u64,
    /// The connection's name in RabbitMQ's management tools.
    pub connection_name: String,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            exchange: "ember".to_owned(),
            prefix: String::new(),
            publish_timeout_ms: 60_000,
            connection_name: "ember".to_owned(),
        }
    }
}

/// The RabbitMQ transport: one connection shared by the clients and servers of a process.
/// Cheap to clone.
#[derive(Clone)]
pub struct Amqp {
    inner: Arc<Inner>,
}

struct Inner {
    options: AmqpOptions,
    session: Session,
    /// What was declared on the current connection, so each queue and exchange is declared
    /// once per connection.
    declared: Mutex<DeclaredOn>,
    /// Everything this process declared, which [`Amqp::delete_declared`] removes.
    all_declared: Mutex<HashSet<Declared>>,
    replies: Replies,
}

#[derive(Default)]
struct DeclaredOn {
    generation: u64,
    names: HashSet<Declared>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Declared {
    Queue(String),
    Exchange(String),
}

impl std::fmt::Debug for Amqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Amqp").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

impl Amqp {
    /// Connects and declares the topic exchange. An unreachable broker fails here; once
    /// connected, a lost connection is replaced for as long as the transport lives.
    pub async fn connect(options: AmqpOptions) -> Result<Self> {
        let session = Session::connect(&options.url, &options.connection_name).await?;
        let amqp = Self {
            inner: Arc::new(Inner {
                options,
                session,
                declared: Mutex::new(DeclaredOn::default()),
                all_declared: Mutex::new(HashSet::new()),
                replies: Replies::default(),
            }),
        };
        amqp.ensure_exchange(&amqp.exchange_name(), ExchangeKind::Topic).await?;
        Ok(amqp)
    }

    /// Closes the connection and stops reconnecting; servers on it stop and their
    /// unacknowledged messages go back to their queues.
    pub async fn close(&self) -> Result<()> {
        self.inner.session.close().await
    }

    /// Deletes the durable queues and exchanges this process declared (tests clean up with it).
    pub async fn delete_declared(&self) -> Result<()> {
        let declared: Vec<Declared> = self.inner.all_declared.lock().drain().collect();
        let channel = self.inner.session.live().await?.connection.create_channel().await?;
        for item in declared {
            match item {
                Declared::Queue(name) => {
                    channel.queue_delete(name.into(), QueueDeleteOptions::default()).await?;
                }
                Declared::Exchange(name) => {
                    channel.exchange_delete(name.into(), ExchangeDeleteOptions::default()).await?;
                }
            }
        }
        let _ = channel.close(200, "cleaned up".into()).await;
        Ok(())
    }

    fn exchange_name(&self) -> String {
        format!("{}{}", self.inner.options.prefix, self.inner.options.exchange)
    }

    fn queue_name(&self, routing_key: &str) -> String {
        format!("{}{routing_key}", self.inner.options.prefix)
    }

    fn fanout_exchange_name(&self, topic: &str) -> String {
        format!("{}{topic}_fanout", self.inner.options.prefix)
    }

    fn publish_deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.inner.options.publish_timeout_ms)
    }

    /// Declares the durable queue of `routing_key` and binds it, once per connection.
    async fn ensure_queue(&self, routing_key: &str) -> Result<String> {
        let name = self.queue_name(routing_key);
        let item = Declared::Queue(name.clone());
        if let Some(channel) = self.to_declare(&item).await? {
            publish::declare_queue(&channel, &name, &self.exchange_name(), routing_key).await?;
            self.mark_declared(item);
        }
        Ok(name)
    }

    /// Declares a durable exchange, once per connection.
    async fn ensure_exchange(&self, name: &str, kind: ExchangeKind) -> Result<()> {
        let item = Declared::Exchange(name.to_owned());
        if let Some(channel) = self.to_declare(&item).await? {
            publish::declare_exchange(&channel, name, kind).await?;
            self.mark_declared(item);
        }
        Ok(())
    }

    /// The channel to declare `item` on, or `None` if it was declared on this connection.
    async fn to_declare(&self, item: &Declared) -> Result<Option<lapin::Channel>> {
        let live = self.inner.session.live().await?;
        if self.is_declared(&live, item) {
            return Ok(None);
        }
        Ok(Some(live.publisher().await?))
    }

    fn mark_declared(&self, item: Declared) {
        self.inner.declared.lock().names.insert(item.clone());
        self.inner.all_declared.lock().insert(item);
    }

    fn is_declared(&self, live: &Live, item: &Declared) -> bool {
        let mut declared = self.inner.declared.lock();
        if declared.generation != live.generation {
            // A new connection: the broker may have lost what was declared (a new node), so
            // declare again, which costs one round trip per queue.
            *declared = DeclaredOn { generation: live.generation, names: HashSet::new() };
        }
        declared.names.contains(item)
    }
}

impl From<lapin::Error> for Error {
    fn from(err: lapin::Error) -> Self {
        if err.is_amqp_soft_error() { Error::Refused(err.to_string()) } else { Error::Amqp(err.to_string()) }
    }
}

fn encode(envelope: &Envelope) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(envelope)?)
}

fn properties(envelope: &Envelope) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(envelope.message_id.as_str().into())
}

#[async_trait]
impl Transport for Amqp {
    async fn cast(&self, target: &Target, envelope: Envelope) -> Result<()> {
        let routing_key = target.routing_key();
        let deadline = self.publish_deadline();
        publish::retry_until(deadline, &routing_key, || self.ensure_queue(&routing_key)).await?;
        let props = properties(&envelope).with_delivery_mode(PERSISTENT);
        let body = encode(&envelope)?;
        publish::publish(&self.inner.session, &self.exchange_name(), &routing_key, &body, props, deadline)
            .await
    }

    async fn call(&self, target: &Target, envelope: Envelope, timeout: Duration) -> Result<Outcome> {
        let deadline = Instant::now() + timeout;
        let routing_key = target.routing_key();
        let method = envelope.method.clone();
        let timed_out =
            || Error::Timeout { method: method.clone(), routing_key: routing_key.clone(), after: timeout };
        let work = async {
            publish::retry_until(deadline, &routing_key, || self.ensure_queue(&routing_key)).await?;
            self.inner.replies.call(self, &routing_key, envelope, timeout, deadline).await
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(Err(Error::Unavailable(_))) | Err(_) => Err(timed_out()),
            Ok(result) => result,
        }
    }

    async fn fanout_cast(&self, topic: &str, envelope: Envelope) -> Result<()> {
        let exchange = self.fanout_exchange_name(topic);
        let deadline = self.publish_deadline();
        publish::retry_until(deadline, &exchange, || self.ensure_exchange(&exchange, ExchangeKind::Fanout))
            .await?;
        let body = encode(&envelope)?;
        publish::publish(&self.inner.session, &exchange, "", &body, properties(&envelope), deadline).await
    }

    async fn listen(
        &self,
        target: &Target,
        dispatcher: Arc<dyn Dispatcher>,
        options: ListenOptions,
    ) -> Result<ServerHandle> {
        server::listen(self, target, dispatcher, options, true).await
    }

    async fn listen_fanout(
        &self,
        topic: &str,
        dispatcher: Arc<dyn Dispatcher>,
        prefetch: u16,
    ) -> Result<ServerHandle> {
        let options = ListenOptions { prefetch, fanout: true };
        server::listen(self, &Target::topic(topic), dispatcher, options, false).await
    }
}
