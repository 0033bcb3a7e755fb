//! AMQP connection handling: RabbitMQ closing the connections mid-load loses nothing (needs
//! EMBER_TEST_AMQP_URL and rabbitmqctl), and a broker that cannot be reached fails at start.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Bus, Recorder, Seen, buses, eventually, topic};
use ember_rpc::{Amqp, AmqpOptions, Context, ListenOptions, RpcClient, RpcServer, Target};
use futures::StreamExt;
use serde_json::json;
use tokio::process::Command;

#[tokio::test]
async fn connecting_to_no_broker_fails_at_once() {
    // Port 1 on loopback refuses connections, so this needs no broker.
    let options = AmqpOptions { url: "amqp://guest:guest@127.0.0.1:1/%2f".into(), ..AmqpOptions::default() };
    let result = tokio::time::timeout(Duration::from_secs(10), Amqp::connect(options)).await;
    assert!(matches!(result, Ok(Err(ember_rpc::Error::Amqp(_)))), "{result:?}");
}

/// Runs rabbitmqctl; `None` where it is not installed or may not talk to the broker.
async fn rabbitmqctl(args: &[&str]) -> Option<String> {
    let output = Command::new("rabbitmqctl").args(args).output().await.ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Makes the broker close every connection whose client properties mention `name`; returns
/// how many it closed.
async fn close_connections(name: &str) -> usize {
    let listing = rabbitmqctl(&["list_connections", "-q", "--no-table-headers", "pid", "client_properties"])
        .await
        .expect("list connections");
    let mut closed = 0;
    for line in listing.lines().filter(|line| line.contains(name)) {
        let pid = line.split_whitespace().next().expect("a pid column");
        rabbitmqctl(&["close_connection", pid, "test: the broker closes the connection"])
            .await
            .expect("close a connection");
        closed += 1;
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_closing_connections_mid_load_loses_nothing() {
    for bus in buses("recovery") {
        if matches!(bus, Bus::InProcess(_)) {
            continue;
        }
        if rabbitmqctl(&["-q", "list_connections", "pid"]).await.is_none() {
            println!("skipped: rabbitmqctl is not available to close connections");
            return;
        }
        recovery_case(&bus).await;
        bus.cleanup().await;
    }
}

async fn recovery_case(bus: &Bus) {
    let name = uuid::Uuid::new_v4().simple().to_string();
    let target = Target::topic(topic("recovery"));
    let seen = Seen::default();
    let (server_transport, _) = bus.connect(&format!("{name}-server")).await;
    let options = ListenOptions { prefetch: 32, fanout: false };
    let server =
        RpcServer::new(Recorder::new("a", &seen)).listen(&*server_transport, &target, options).await.unwrap();
    let (client_transport, _) = bus.connect(&format!("{name}-client")).await;
    let client = RpcClient::new(client_transport, "3.0");

    // Casts flow until well after the connections were closed, so the close lands mid-load.
    let done = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(send_until(client.clone(), target.clone(), done.clone()));
    assert!(eventually(Duration::from_secs(20), || seen.len() >= 500).await, "the load did not start");
    assert_eq!(close_connections(&name).await, 2, "both connections should be found and closed");
    let at_close = seen.len();
    assert!(
        eventually(Duration::from_secs(60), || seen.len() >= at_close + 500).await,
        "no progress after the close"
    );
    done.store(true, Ordering::Relaxed);
    let (sent, failures) = sender.await.unwrap();
    assert_eq!(failures, 0, "{failures} of {sent} casts failed");

    let all_in = eventually(Duration::from_secs(120), || seen.counts().len() as u64 == sent).await;
    let counts = seen.counts();
    let duplicates: usize = counts.values().map(|times| times - 1).sum();
    println!("amqp: {sent} casts across a forced close, {duplicates} delivered twice, none lost: {all_in}");
    assert!(all_in, "lost {} of {sent} casts", sent - counts.len() as u64);
    assert!(counts.keys().all(|&n| n < sent));

    // Calls work again too: the reply queue came back with the connection.
    let ctx = Context::internal();
    let reply = client.call(&ctx, &target, "whoami", json!({}), Duration::from_secs(20)).await.unwrap();
    assert_eq!(reply, json!("a"));
    server.stop().await;
}

/// Casts `0, 1, 2, ...` 64 at a time until `done`; returns how many were sent and how many failed.
async fn send_until(client: RpcClient, target: Target, done: Arc<AtomicBool>) -> (u64, usize) {
    let ctx = Context::internal();
    let numbers =
        futures::stream::iter(0u64..).take_while(|_| futures::future::ready(!done.load(Ordering::Relaxed)));
    let results: Vec<bool> = numbers
        .map(|n| {
            let (client, target, ctx) = (client.clone(), target.clone(), ctx.clone());
            async move { client.cast(&ctx, &target, "record", json!({"n": n})).await.is_ok() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let failures = results.iter().filter(|ok| !**ok).count();
    (results.len() as u64, failures)
}
