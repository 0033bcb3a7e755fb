//! Capability reports from volume services to the scheduler's cache, on the in-process bus
//! always and on RabbitMQ where `EMBER_TEST_AMQP_URL` is set; the services table on SQLite.

mod common;

use std::time::Duration;

use common::{Bus, VolumeService, buses, clock, eventually, fake_backend};
use ember_db::testing::TestDb;
use ember_scheduler::{RequestSpec, SharedScheduler};
use ember_volume::Backends;

const WAIT: Duration = Duration::from_secs(20);

fn spec(size_gb: u64) -> RequestSpec {
    RequestSpec { size_gb, ..RequestSpec::default() }
}

fn pools(scheduler: &SharedScheduler) -> Vec<String> {
    scheduler
        .with_cache(|c| c.backends().iter().flat_map(|b| b.pools.iter().map(|p| p.host.clone())).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_reach_the_scheduler_and_place_volumes() {
    for bus in buses("reports") {
        reports_case(&bus).await;
        bus.cleanup().await;
    }
}

async fn reports_case(bus: &Bus) {
    let name = bus.name();
    let t = TestDb::sqlite().await.unwrap();
    let clock = clock();
    let repo = common::repo(&t);
    let (scheduler, sched) = common::scheduler(repo.clone(), bus.transport().await).await;
    let backends =
        Backends::from_backends(vec![fake_backend("node1", "a", 100), fake_backend("node1", "b", 500)]);
    let registry = common::registry(repo.clone(), &clock);
    let volume = VolumeService::start(backends, registry, bus.transport().await, &clock, 3600).await;

    assert!(eventually(WAIT, || pools(&scheduler).len() == 2).await, "{name}: {:?}", pools(&scheduler));
    // Reports are handled concurrently, so the cache may have heard of either first.
    let mut heard = pools(&scheduler);
    heard.sort();
    assert_eq!(heard, ["node1@a#a", "node1@b#b"], "{name}");
    let reported_at = scheduler.with_cache(|c| c.backends()[0].reported_at_ms);
    assert_eq!(reported_at, Some(clock.now_ms()), "{name}: the report carries its timestamp");

    // The rows were registered after the scheduler's first read; the first report of a
    // backend whose row it has not seen makes it read the services table again, so the
    // pools are schedulable without waiting for the periodic refresh.
    let schedulable = || scheduler.with_cache(|c| c.backends().iter().all(|b| b.service.is_some()));
    assert!(eventually(WAIT, schedulable).await, "{name}: the reports made the scheduler read the rows");
    assert_eq!(sched.liveness().refresh_now().await.unwrap(), 2);
    let placed = scheduler.schedule_at(&spec(10), clock.now_ms()).unwrap();
    assert_eq!(placed.host, "node1@b#b", "{name}: the emptier pool wins");

    volume.stop().await;
    sched.stop().await;
    t.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_started_later_asks_for_reports() {
    for bus in buses("publish") {
        late_scheduler_case(&bus).await;
        bus.cleanup().await;
    }
}

async fn late_scheduler_case(bus: &Bus) {
    let name = bus.name();
    let t = TestDb::sqlite().await.unwrap();
    let clock = clock();
    let repo = common::repo(&t);
    let backends = Backends::from_backends(vec![fake_backend("node2", "only", 100)]);
    // The periodic report is an hour away: only the report at start, which nobody hears,
    // and the one the scheduler asks for can reach it.
    let volume = VolumeService::start(
        backends,
        common::registry(repo.clone(), &clock),
        bus.transport().await,
        &clock,
        3600,
    )
    .await;
    assert!(eventually(WAIT, || volume.reporter.rounds() == 1).await, "{name}: the report at start");

    let (scheduler, sched) = common::scheduler(repo.clone(), bus.transport().await).await;
    assert!(eventually(WAIT, || pools(&scheduler).len() == 1).await, "{name}: no report came");
    // The round is counted after its casts, so the cache can fill a moment before.
    assert!(eventually(WAIT, || volume.reporter.rounds() == 2).await, "{name}: one round per request");
    // The scheduler read the services table at start, after the volume service registered.
    let placed = scheduler.schedule_at(&spec(1), clock.now_ms()).unwrap();
    assert_eq!(placed.host, "node2@only#only", "{name}");

    volume.stop().await;
    sched.stop().await;
    t.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_stops_heartbeating_is_skipped() {
    for bus in buses("down") {
        down_case(&bus).await;
        bus.cleanup().await;
    }
}

async fn down_case(bus: &Bus) {
    let name = bus.name();
    let t = TestDb::sqlite().await.unwrap();
    let clock = clock();
    let repo = common::repo(&t);
    let (scheduler, sched) = common::scheduler(repo.clone(), bus.transport().await).await;
    let start = |host: &'static str, capacity| {
        let backends = Backends::from_backends(vec![fake_backend(host, "lvm", capacity)]);
        let registry = common::registry(repo.clone(), &clock);
        let (clock, bus) = (clock.clone(), bus);
        async move { VolumeService::start(backends, registry, bus.transport().await, &clock, 3600).await }
    };
    let small = start("small", 100).await;
    let big = start("big", 1000).await;
    assert!(eventually(WAIT, || pools(&scheduler).len() == 2).await, "{name}: {:?}", pools(&scheduler));
    sched.liveness().refresh_now().await.unwrap();
    assert_eq!(scheduler.schedule_at(&spec(1), clock.now_ms()).unwrap().host, "big@lvm#lvm", "{name}");

    // The big backend's process stops; the small one keeps heartbeating.
    big.stop().await;
    clock.advance(Duration::from_secs(61));
    small.registry.heartbeat_now().await.unwrap();
    sched.liveness().refresh_now().await.unwrap();
    for _ in 0..3 {
        let placed = scheduler.schedule_at(&spec(1), clock.now_ms()).unwrap();
        assert_eq!(placed.host, "small@lvm#lvm", "{name}: the silent service is down");
    }

    // A disabled service is skipped too, even while it heartbeats.
    let repo2 = common::repo(&t);
    assert!(repo2.set_service_disabled("small@lvm", "ember-volume", true, Some("test")).await.unwrap());
    sched.liveness().refresh_now().await.unwrap();
    assert!(scheduler.schedule_at(&spec(1), clock.now_ms()).is_err(), "{name}: no backend left");

    // A service whose row is deleted is forgotten, reports and all.
    let id = small.registry.services()[0].id.clone();
    small.stop().await;
    assert!(repo2.delete_service(&id).await.unwrap());
    sched.liveness().refresh_now().await.unwrap();
    assert_eq!(pools(&scheduler), ["big@lvm#lvm"], "{name}");

    sched.stop().await;
    t.cleanup().await.unwrap();
}
