//! The test harness shared by the RPC tests: the buses to run on and a recording endpoint.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ember_rpc::{Amqp, AmqpOptions, Context, Endpoint, InProcess, Outcome, RemoteError, Transport, Version};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One bus the shared suite runs on.
pub enum Bus {
    InProcess(InProcess),
    Amqp { options: AmqpOptions, opened: Mutex<Vec<Amqp>> },
}

/// The buses to test on: in-process always, RabbitMQ where `EMBER_TEST_AMQP_URL` is set.
pub fn buses(test: &str) -> Vec<Bus> {
    let mut buses = vec![Bus::InProcess(InProcess::new())];
    match std::env::var("EMBER_TEST_AMQP_URL") {
        Ok(url) => {
            let prefix = format!("test-{}-{}.", test, uuid::Uuid::new_v4().simple());
            let options = AmqpOptions { url, prefix, publish_timeout_ms: 30_000, ..AmqpOptions::default() };
            buses.push(Bus::Amqp { options, opened: Mutex::new(Vec::new()) });
        }
        Err(_) => println!("skipped: EMBER_TEST_AMQP_URL is not set, {test} runs in-process only"),
    }
    buses
}

impl Bus {
    pub fn name(&self) -> &'static str {
        match self {
            Bus::InProcess(_) => "in-process",
            Bus::Amqp { .. } => "amqp",
        }
    }

    /// A transport on this bus; on RabbitMQ each one is a connection of its own, as a separate
    /// process would have.
    pub async fn transport(&self) -> Arc<dyn Transport> {
        self.connect("ember-test").await.0
    }

    /// Like [`Bus::transport`], with a RabbitMQ connection name (so a test can find it) and
    /// the concrete AMQP transport when there is one.
    pub async fn connect(&self, connection_name: &str) -> (Arc<dyn Transport>, Option<Amqp>) {
        match self {
            Bus::InProcess(bus) => (Arc::new(bus.clone()), None),
            Bus::Amqp { options, opened } => {
                let options = AmqpOptions { connection_name: connection_name.to_owned(), ..options.clone() };
                let amqp = Amqp::connect(options).await.expect("connect to RabbitMQ");
                opened.lock().push(amqp.clone());
                (Arc::new(amqp.clone()), Some(amqp))
            }
        }
    }

    /// Publishes raw bytes to a routing key of the topic exchange, bypassing the client (to
    /// test what servers do with garbage). In-process there is no wire, so this does nothing.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) -> bool {
        let Bus::Amqp { options, .. } = self else { return false };
        let connection = lapin::Connection::connect(&options.url, lapin::ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("open a channel");
        let exchange = format!("{}{}", options.prefix, options.exchange);
        let publish = lapin::options::BasicPublishOptions::default();
        let properties = lapin::BasicProperties::default();
        let confirm = channel.basic_publish(exchange.into(), routing_key.into(), publish, body, properties);
        confirm.await.expect("publish").await.expect("published");
        let _ = connection.close(200, "done".into()).await;
        true
    }

    /// Deletes what the test declared on the broker and closes its connections.
    pub async fn cleanup(self) {
        if let Bus::Amqp { opened, .. } = self {
            let opened: Vec<Amqp> = opened.lock().drain(..).collect();
            for amqp in &opened {
                amqp.delete_declared().await.expect("delete test queues and exchanges");
            }
            for amqp in &opened {
                let _ = amqp.close().await;
            }
        }
    }
}

/// A unique topic per test case.
pub fn topic(name: &str) -> String {
    format!("ember-{name}-{}", uuid::Uuid::new_v4().simple())
}

/// What a [`Recorder`] saw: the `n` argument of every `record` message, by server name.
#[derive(Default, Clone)]
pub struct Seen {
    inner: Arc<Mutex<Vec<(String, Value, String)>>>,
}

impl Seen {
    /// `(server, n, message id)` of every message recorded so far.
    pub fn all(&self) -> Vec<(String, Value, String)> {
        self.inner.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// How many times each `n` was seen.
    pub fn counts(&self) -> HashMap<u64, usize> {
        let mut counts = HashMap::new();
        for (_, n, _) in self.inner.lock().iter() {
            *counts.entry(n.as_u64().unwrap_or(u64::MAX)).or_default() += 1;
        }
        counts
    }
}

/// A test endpoint: `record` notes its argument, `echo` returns it, `fail` fails, `panic` panics, `whoami`
/// names the server and `hang` tells the test it started and never finishes.
pub struct Recorder {
    pub name: String,
    pub seen: Seen,
    pub started: Option<mpsc::UnboundedSender<String>>,
}

impl Recorder {
    pub fn new(name: &str, seen: &Seen) -> Self {
        Self { name: name.to_owned(), seen: seen.clone(), started: None }
    }
}

#[async_trait]
impl Endpoint for Recorder {
    fn version(&self) -> Version {
        Version { major: 3, minor: 2 }
    }

    async fn handle(&self, ctx: &Context, method: &str, args: &Value) -> Outcome {
        match method {
            "record" => {
                let entry = (self.name.clone(), args["n"].clone(), ctx.request_id.clone());
                self.seen.inner.lock().push(entry);
                Ok(Value::Null)
            }
            "echo" => Ok(json!({"args": args, "user": ctx.user_id})),
            "whoami" => Ok(json!(self.name)),
            "fail" => Err(RemoteError::new("VolumeNotFound", "volume v1 could not be found")),
            "panic" => panic!("the handler of panic panics, as a buggy manager would"),
            "hang" => {
                if let Some(started) = &self.started {
                    let _ = started.send(args["n"].to_string());
                }
                std::future::pending().await
            }
            _ => Err(RemoteError::unknown_method(method)),
        }
    }
}

/// Polls `done` until it holds or `within` passes; returns whether it held.
pub async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}
