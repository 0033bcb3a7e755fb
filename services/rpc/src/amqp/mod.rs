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
//! acknowledge after the handler returned. lapin's own recovery reconnects with backoff and
//! replays the declared topology, QoS, confirm mode and consumers; this module waits for it
//! and resumes.

mod publish;
mod replies;
mod server;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::envelope::{Envelope, Outcome};
use crate::error::{Error, Result};
use crate::target::Target;
use crate::transport::{Dispatcher, ListenOptions, ServerHandle, Transport};

use publish::Publisher;
use replies::Replies;

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
    connection: Connection,
    publisher: Publisher,
    /// Durable queues and exchanges already declared, so each is declared once per process;
    /// also what [`Amqp::delete_declared`] removes.
    declared: Mutex<HashSet<Declared>>,
    replies: OnceCell<Replies>,
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
    /// Connects and declares the topic exchange.
    ///
    /// The first attempt is made without recovery so that a wrong URL or password fails at
    /// once; the connection kept uses lapin's recovery with a backoff capped at 5 s and no limit
    /// on attempts, so a broker restart of any length is ridden out.
    pub async fn connect(options: AmqpOptions) -> Result<Self> {
        let probe = Connection::connect(&options.url, ConnectionProperties::default()).await?;
        let _ = probe.close(200, "probe".into()).await;
        let properties = ConnectionProperties::default()
            .with_connection_name(options.connection_name.as_str().into())
            .enable_auto_recover()
            .configure_backoff(|backoff| {
                backoff
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(5))
                    .without_max_times()
            });
        let connection = Connection::connect(&options.url, properties).await?;
        let publisher = Publisher::open(&connection).await?;
        let amqp = Self {
            inner: Arc::new(Inner {
                options,
                connection,
                publisher,
                declared: Mutex::new(HashSet::new()),
                replies: OnceCell::new(),
            }),
        };
        let exchange = amqp.exchange_name();
        amqp.ensure_exchange(&exchange, ExchangeKind::Topic).await?;
        Ok(amqp)
    }

    /// Closes the connection; servers on it stop and their unacknowledged messages go back to
    /// their queues.
    pub async fn close(&self) -> Result<()> {
        Ok(self.inner.connection.close(200, "closing".into()).await?)
    }

    /// Deletes the durable queues and exchanges this process declared (tests clean up with it).
    pub async fn delete_declared(&self) -> Result<()> {
        let declared: Vec<Declared> = self.inner.declared.lock().drain().collect();
        let channel = self.inner.connection.create_channel().await?;
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

    /// Declares the durable queue of `routing_key` and binds it, once per process.
    async fn ensure_queue(&self, routing_key: &str) -> Result<String> {
        let name = self.queue_name(routing_key);
        if !self.inner.declared.lock().contains(&Declared::Queue(name.clone())) {
            let channel = self.inner.publisher.channel(&self.inner.connection).await?;
            publish::declare_queue(&channel, &name, &self.exchange_name(), routing_key).await?;
            self.inner.declared.lock().insert(Declared::Queue(name.clone()));
        }
        Ok(name)
    }

    /// Declares a durable exchange, once per process.
    async fn ensure_exchange(&self, name: &str, kind: ExchangeKind) -> Result<()> {
        if !self.inner.declared.lock().contains(&Declared::Exchange(name.to_owned())) {
            let channel = self.inner.publisher.channel(&self.inner.connection).await?;
            publish::declare_exchange(&channel, name, kind).await?;
            self.inner.declared.lock().insert(Declared::Exchange(name.to_owned()));
        }
        Ok(())
    }

    async fn replies(&self) -> Result<&Replies> {
        self.inner
            .replies
            .get_or_try_init(|| Replies::start(&self.inner.connection, &self.inner.options.prefix))
            .await
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
        self.ensure_queue(&routing_key).await?;
        let props = properties(&envelope).with_delivery_mode(PERSISTENT);
        let body = encode(&envelope)?;
        let deadline = self.publish_deadline();
        self.inner
            .publisher
            .publish(&self.inner.connection, &self.exchange_name(), &routing_key, &body, props, deadline)
            .await
    }

    async fn call(&self, target: &Target, envelope: Envelope, timeout: Duration) -> Result<Outcome> {
        let deadline = Instant::now() + timeout;
        let routing_key = target.routing_key();
        let method = envelope.method.clone();
        let timed_out =
            || Error::Timeout { method: method.clone(), routing_key: routing_key.clone(), after: timeout };
        let work = async {
            self.ensure_queue(&routing_key).await?;
            let replies = self.replies().await?;
            replies.call(self, &routing_key, envelope, timeout, deadline).await
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(Err(Error::Unavailable(_))) | Err(_) => Err(timed_out()),
            Ok(result) => result,
        }
    }

    async fn fanout_cast(&self, topic: &str, envelope: Envelope) -> Result<()> {
        let exchange = self.fanout_exchange_name(topic);
        self.ensure_exchange(&exchange, ExchangeKind::Fanout).await?;
        let body = encode(&envelope)?;
        let deadline = self.publish_deadline();
        self.inner
            .publisher
            .publish(&self.inner.connection, &exchange, "", &body, properties(&envelope), deadline)
            .await
    }

    async fn listen(
        &self,
        target: &Target,
        dispatcher: Arc<dyn Dispatcher>,
        options: ListenOptions,
    ) -> Result<ServerHandle> {
        server::listen(self, target, dispatcher, options).await
    }
}
