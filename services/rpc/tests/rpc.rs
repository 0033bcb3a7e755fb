//! The RPC suite, run on the in-process bus always and on RabbitMQ where EMBER_TEST_AMQP_URL is set.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Bus, Recorder, Seen, buses, eventually, topic};
use ember_rpc::{Context, Error, ListenOptions, RemoteError, RpcClient, RpcServer, Target, Transport};
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);

fn ctx() -> Context {
    Context {
        user_id: Some("alice".into()),
        project_id: Some("p1".into()),
        request_id: "req-test".into(),
        ..Context::default()
    }
}

async fn serve(
    transport: &Arc<dyn Transport>,
    target: &Target,
    recorder: Recorder,
) -> ember_rpc::ServerHandle {
    RpcServer::new(recorder).listen(&**transport, target, ListenOptions::default()).await.expect("listen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cast_reaches_the_topic_and_the_named_server() {
    for bus in buses("cast") {
        cast_case(&bus).await;
        bus.cleanup().await;
    }
}

async fn cast_case(bus: &Bus) {
    let topic = topic("cast");
    let client = RpcClient::new(bus.transport().await, "3.0");
    // A cast made before any server runs waits in the topic's queue.
    client.cast(&ctx(), &Target::topic(&topic), "record", json!({"n": 1})).await.unwrap();
    let seen = Seen::default();
    let server = serve(&bus.transport().await, &Target::server(&topic, "a"), Recorder::new("a", &seen)).await;
    client.cast(&ctx(), &Target::server(&topic, "a"), "record", json!({"n": 2})).await.unwrap();
    assert!(eventually(WAIT, || seen.len() == 2).await, "{}: saw {:?}", bus.name(), seen.all());
    server.stop().await;
    let mut ns: Vec<u64> = seen.all().iter().map(|(_, n, _)| n.as_u64().unwrap()).collect();
    ns.sort_unstable();
    assert_eq!(ns, [1, 2], "{}", bus.name());
    // The caller's context crossed the bus with the message.
    assert!(seen.all().iter().all(|(_, _, request_id)| request_id == "req-test"), "{}", bus.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_returns_the_result_or_the_remote_error() {
    for bus in buses("call") {
        call_case(&bus).await;
        bus.cleanup().await;
    }
}

async fn call_case(bus: &Bus) {
    let topic = topic("call");
    let target = Target::topic(&topic);
    let server = serve(&bus.transport().await, &target, Recorder::new("a", &Seen::default())).await;
    let client = RpcClient::new(bus.transport().await, "3.1");
    let name = bus.name();

    let echoed = client.call(&ctx(), &target, "echo", json!({"size": 1}), WAIT).await.unwrap();
    assert_eq!(echoed, json!({"args": {"size": 1}, "user": "alice"}), "{name}");

    let cases = [
        (client.clone(), "fail", "VolumeNotFound"),
        (client.clone(), "no_such_method", RemoteError::UNKNOWN_METHOD),
        (client.clone(), "panic", RemoteError::INTERNAL),
        (client.at_version("3.3"), "echo", RemoteError::UNSUPPORTED_VERSION),
        (client.at_version("4.0"), "echo", RemoteError::UNSUPPORTED_VERSION),
        (client.at_version("three"), "echo", RemoteError::UNSUPPORTED_VERSION),
    ];
    for (client, method, kind) in cases {
        match client.call(&ctx(), &target, method, json!({}), WAIT).await {
            Err(Error::Remote(err)) => assert_eq!(err.kind, kind, "{name}: {method}"),
            other => panic!("{name}: {method} gave {other:?}"),
        }
    }
    // The server is still there after the failures.
    let whoami = client.call(&ctx(), &target, "whoami", json!({}), WAIT).await.unwrap();
    assert_eq!(whoami, json!("a"), "{name}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_without_a_server_times_out() {
    for bus in buses("timeout") {
        let client = RpcClient::new(bus.transport().await, "3.0");
        let target = Target::server(topic("timeout"), "nobody");
        let started = Instant::now();
        let result = client.call(&ctx(), &target, "echo", json!({}), Duration::from_millis(300)).await;
        assert!(matches!(result, Err(Error::Timeout { .. })), "{}: {result:?}", bus.name());
        assert!(started.elapsed() < Duration::from_secs(5), "{}: took {:?}", bus.name(), started.elapsed());
        bus.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_to_a_hung_server_times_out() {
    for bus in buses("hung") {
        let target = Target::topic(topic("hung"));
        let server = serve(&bus.transport().await, &target, Recorder::new("a", &Seen::default())).await;
        let client = RpcClient::new(bus.transport().await, "3.0");
        let result = client.call(&ctx(), &target, "hang", json!({"n": 1}), Duration::from_millis(300)).await;
        assert!(matches!(result, Err(Error::Timeout { .. })), "{}: {result:?}", bus.name());
        server.kill().await;
        bus.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_is_dropped_and_the_server_goes_on() {
    for bus in buses("garbage") {
        let topic = topic("garbage");
        let target = Target::topic(&topic);
        let seen = Seen::default();
        let server = serve(&bus.transport().await, &target, Recorder::new("a", &seen)).await;
        let client = RpcClient::new(bus.transport().await, "3.0");
        if bus.publish_raw(&topic, b"{not json").await {
            client.cast(&ctx(), &target, "record", json!({"n": 1})).await.unwrap();
            assert!(eventually(WAIT, || seen.len() == 1).await, "{}: the server stopped", bus.name());
        }
        let whoami = client.call(&ctx(), &target, "whoami", json!({}), WAIT).await.unwrap();
        assert_eq!(whoami, json!("a"), "{}", bus.name());
        server.stop().await;
        bus.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_reaches_every_server_and_a_cast_only_one() {
    for bus in buses("fanout") {
        fanout_case(&bus).await;
        bus.cleanup().await;
    }
}

async fn fanout_case(bus: &Bus) {
    let topic = topic("fanout");
    let seen = Seen::default();
    let mut servers = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let transport = bus.transport().await;
        servers.push(serve(&transport, &Target::server(&topic, name), Recorder::new(name, &seen)).await);
    }
    let client = RpcClient::new(bus.transport().await, "3.0");
    client.fanout_cast(&ctx(), &topic, "record", json!({"n": 1})).await.unwrap();
    client.cast(&ctx(), &Target::topic(&topic), "record", json!({"n": 2})).await.unwrap();
    assert!(eventually(WAIT, || seen.len() == 4).await, "{}: saw {:?}", bus.name(), seen.all());
    for server in servers {
        server.stop().await;
    }
    let fanned: HashSet<String> =
        seen.all().into_iter().filter(|(_, n, _)| n == &json!(1)).map(|(server, _, _)| server).collect();
    assert_eq!(fanned, HashSet::from(["s1".into(), "s2".into(), "s3".into()]), "{}", bus.name());
    assert_eq!(seen.counts().get(&2), Some(&1), "{}", bus.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_only_server_takes_broadcasts_but_no_work() {
    for bus in buses("fanout-only") {
        fanout_only_case(&bus).await;
        bus.cleanup().await;
    }
}

async fn fanout_only_case(bus: &Bus) {
    let topic = topic("fanout-only");
    let seen = Seen::default();
    let transport = bus.transport().await;
    let listener = RpcServer::new(Recorder::new("fan", &seen));
    let fan = listener.listen_fanout(&*transport, &topic, 4).await.unwrap();
    let worker = serve(&transport, &Target::topic(&topic), Recorder::new("work", &seen)).await;
    let client = RpcClient::new(bus.transport().await, "3.0");
    for n in 0..5 {
        client.cast(&ctx(), &Target::topic(&topic), "record", json!({"n": n})).await.unwrap();
    }
    client.fanout_cast(&ctx(), &topic, "record", json!({"n": 99})).await.unwrap();
    // Five casts for the worker, and the broadcast for both.
    assert!(eventually(WAIT, || seen.len() == 7).await, "{}: saw {:?}", bus.name(), seen.all());
    fan.stop().await;
    worker.stop().await;
    let by_fan: Vec<_> = seen.all().into_iter().filter(|(s, _, _)| s == "fan").map(|(_, n, _)| n).collect();
    assert_eq!(by_fan, [json!(99)], "{}", bus.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_casts_are_delivered_exactly_once() {
    for bus in buses("many") {
        many_casts_case(&bus, 10_000).await;
        bus.cleanup().await;
    }
}

/// Sends `count` casts, 256 at a time, each with its own `n`.
async fn send_many(client: &RpcClient, target: &Target, count: u64) -> Vec<ember_rpc::Result<()>> {
    futures::stream::iter(0..count)
        .map(|n| {
            let client = client.clone();
            let target = target.clone();
            async move { client.cast(&ctx(), &target, "record", json!({"n": n})).await }
        })
        .buffer_unordered(256)
        .collect()
        .await
}

async fn many_casts_case(bus: &Bus, count: u64) {
    let target = Target::topic(topic("many"));
    let seen = Seen::default();
    let options = ListenOptions { prefetch: 64, fanout: false };
    let transport = bus.transport().await;
    let server =
        RpcServer::new(Recorder::new("a", &seen)).listen(&*transport, &target, options).await.unwrap();
    let client = RpcClient::new(bus.transport().await, "3.0");
    let started = Instant::now();
    let sent = send_many(&client, &target, count).await;
    assert!(sent.iter().all(Result::is_ok), "{}: a cast failed", bus.name());
    let all_in = eventually(Duration::from_secs(120), || seen.len() >= count as usize).await;
    println!("{}: {count} casts sent and handled in {:?}", bus.name(), started.elapsed());
    // Stopping waits for the handlers in hand, so anything duplicated would show now.
    server.stop().await;
    assert!(all_in, "{}: only {} of {count} arrived", bus.name(), seen.len());
    let counts = seen.counts();
    assert_eq!(counts.len() as u64, count, "{}: some casts were lost", bus.name());
    assert!(counts.values().all(|&times| times == 1), "{}: some casts arrived twice", bus.name());
    assert_eq!(seen.len() as u64, count, "{}", bus.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_a_killed_server_goes_to_a_peer() {
    for bus in buses("kill") {
        kill_case(&bus).await;
        bus.cleanup().await;
    }
}

async fn kill_case(bus: &Bus) {
    let target = Target::topic(topic("kill"));
    let options = ListenOptions { prefetch: 1, fanout: false };
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let victim = Recorder { started: Some(started_tx), ..Recorder::new("victim", &Seen::default()) };
    let victim =
        RpcServer::new(victim).listen(&*bus.transport().await, &target, options.clone()).await.unwrap();
    let client = RpcClient::new(bus.transport().await, "3.0");
    client.cast(&ctx(), &target, "hang", json!({"n": 7})).await.unwrap();
    let taken = tokio::time::timeout(WAIT, started_rx.recv()).await;
    assert_eq!(
        taken.ok().flatten().as_deref(),
        Some("7"),
        "{}: the victim did not take the message",
        bus.name()
    );

    // The peer only sees the message if the victim's death hands it back.
    let (peer_tx, mut peer_rx) = tokio::sync::mpsc::unbounded_channel();
    let peer = Recorder { started: Some(peer_tx), ..Recorder::new("peer", &Seen::default()) };
    let peer = RpcServer::new(peer).listen(&*bus.transport().await, &target, options).await.unwrap();
    victim.kill().await;
    let redelivered = tokio::time::timeout(WAIT, peer_rx.recv()).await;
    assert_eq!(redelivered.ok().flatten().as_deref(), Some("7"), "{}: not redelivered", bus.name());
    peer.kill().await;
}
