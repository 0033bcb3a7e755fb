//! The scheduler's capability endpoint, through the RPC server on the in-process bus.

mod common;

use std::sync::Arc;

use serde_json::json;

use common::{report, thick};
use ember_common::capabilities::{CapabilityReport, UPDATE_SERVICE_CAPABILITIES};
use ember_rpc::{Context, InProcess, RemoteError, RpcClient, RpcServer, Target};
use ember_scheduler::{SchedulerOptions, SchedulerService, SharedScheduler};

fn args(host: &str, service_name: &str, timestamp_ms: i64, free: f64) -> serde_json::Value {
    let report = CapabilityReport {
        service_name: service_name.into(),
        host: host.into(),
        cluster_name: None,
        capabilities: report("lvm", vec![thick("p", 100.0, free)]),
        timestamp_ms,
    };
    serde_json::to_value(report).unwrap()
}

#[tokio::test]
async fn reports_feed_the_cache_and_older_ones_are_ignored() {
    let bus = Arc::new(InProcess::new());
    let scheduler = SharedScheduler::new(SchedulerOptions::default()).unwrap();
    let target = Target::topic("scheduler-test");
    let server =
        RpcServer::new(SchedulerService::new(scheduler.clone())).listen(&*bus, &target, Default::default());
    let server = server.await.unwrap();
    let client = RpcClient::new(bus, "3.0");
    let ctx = Context::internal();
    let call = |args| {
        let (client, ctx, target) = (client.clone(), ctx.clone(), target.clone());
        async move {
            client
                .call(&ctx, &target, UPDATE_SERVICE_CAPABILITIES, args, ember_rpc::DEFAULT_CALL_TIMEOUT)
                .await
        }
    };
    let free = |s: &SharedScheduler| s.with_cache(|c| c.pool("n@lvm#p").map(|p| p.free_capacity_gb.gb()));

    call(args("n@lvm", "volume", 2_000, 80.0)).await.unwrap();
    assert_eq!(free(&scheduler), Some(Some(80.0)));
    call(args("n@lvm", "volume", 1_000, 10.0)).await.unwrap();
    assert_eq!(free(&scheduler), Some(Some(80.0)), "an older report is ignored");
    call(args("n@lvm", "volume", 3_000, 70.0)).await.unwrap();
    assert_eq!(free(&scheduler), Some(Some(70.0)));
    call(args("b1", "backup", 4_000, 1.0)).await.unwrap();
    assert_eq!(
        scheduler.with_cache(|c| c.backends().len()),
        1,
        "backup reports do not reach the volume cache"
    );

    let bad = call(json!({"host": "n@lvm"})).await.unwrap_err();
    assert!(matches!(&bad, ember_rpc::Error::Remote(e) if e.kind == RemoteError::INVALID_ARGUMENTS), "{bad}");
    server.stop().await;
}

#[tokio::test]
async fn a_scheduler_is_ready_once_every_live_volume_service_reported() {
    use ember_scheduler::ServiceStatus;
    let scheduler = SharedScheduler::new(SchedulerOptions::default()).unwrap();
    let now = ember_scheduler::now_ms();
    assert!(scheduler.has_all_capabilities(now), "no service: nothing to wait for");
    scheduler.update_service("a@lvm", ServiceStatus::up("nova", now));
    scheduler.update_service("dead@lvm", ServiceStatus::up("nova", now - 3_600_000));
    assert!(!scheduler.has_all_capabilities(now), "a@lvm is up and has not reported");
    assert!(!scheduler.wait_ready(std::time::Duration::from_millis(30)).await);
    scheduler.update_capabilities("a@lvm", now, report("lvm", vec![thick("p", 100.0, 50.0)]));
    assert!(scheduler.has_all_capabilities(now), "a service down for an hour is not waited for");
    assert!(scheduler.wait_ready(std::time::Duration::ZERO).await);
}
