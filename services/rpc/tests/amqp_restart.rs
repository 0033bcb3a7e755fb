//! A full RabbitMQ restart mid-load loses nothing. Opt-in (EMBER_TEST_AMQP_RESTART=1) because it
//! stops the broker for every other user of it; kept in a file of its own so that no other test
//! of this crate runs beside it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Bus, Recorder, Seen, buses, eventually, topic};
use ember_rpc::{Context, ListenOptions, RpcClient, RpcServer, Target};
use futures::StreamExt;
use serde_json::json;
use tokio::process::Command;

async fn rabbitmqctl(args: &[&str]) -> bool {
    let status = Command::new("rabbitmqctl").args(args).status().await;
    status.is_ok_and(|status| status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_load_loses_nothing() {
    if std::env::var("EMBER_TEST_AMQP_RESTART").as_deref() != Ok("1") {
        println!("skipped: EMBER_TEST_AMQP_RESTART is not 1 (this test restarts RabbitMQ)");
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    for bus in buses("restart") {
        if matches!(bus, Bus::InProcess(_)) {
            continue;
        }
        restart_case(&bus).await;
        bus.cleanup().await;
    }
}

async fn restart_case(bus: &Bus) {
    let target = Target::topic(topic("restart"));
    let seen = Seen::default();
    let server_transport = bus.transport().await;
    let options = ListenOptions { prefetch: 32, fanout: false };
    let server =
        RpcServer::new(Recorder::new("a", &seen)).listen(&*server_transport, &target, options).await.unwrap();
    let client = RpcClient::new(bus.transport().await, "3.0");

    let done = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(send_until(client.clone(), target.clone(), done.clone()));
    assert!(eventually(Duration::from_secs(20), || seen.len() >= 500).await, "the load did not start");
    assert!(rabbitmqctl(&["stop_app"]).await, "rabbitmqctl stop_app");
    assert!(rabbitmqctl(&["start_app"]).await, "rabbitmqctl start_app");
    let at_restart = seen.len();
    assert!(
        eventually(Duration::from_secs(60), || seen.len() >= at_restart + 500).await,
        "no progress after the restart"
    );
    done.store(true, Ordering::Relaxed);
    let (sent, failures) = sender.await.unwrap();
    assert_eq!(failures, 0, "{failures} of {sent} casts failed");

    let all_in = eventually(Duration::from_secs(120), || seen.counts().len() as u64 == sent).await;
    let duplicates: usize = seen.counts().values().map(|times| times - 1).sum();
    println!("amqp: {sent} casts across a broker restart, {duplicates} delivered twice, none lost: {all_in}");
    assert!(all_in, "lost {} of {sent} casts", sent - seen.counts().len() as u64);
    let reply =
        client.call(&Context::internal(), &target, "whoami", json!({}), Duration::from_secs(20)).await;
    assert_eq!(reply.unwrap(), json!("a"));
    server.stop().await;
}

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
    (results.len() as u64, results.iter().filter(|ok| !**ok).count())
}
