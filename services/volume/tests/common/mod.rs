//! Shared by the volume service's tests: the buses to run on, a manual clock, and a volume
//! service and a scheduler composed the way a process composes them.

#![allow(dead_code)]

use std::sync::Arc;

use chrono::DateTime;
use tokio_util::sync::CancellationToken;

use ember_common::model::QuotaDefaults;
use ember_common::repo::ServiceRepo;
use ember_db::SqlRepo;
use ember_db::testing::TestDb;
use ember_drivers::{FakeDriver, FakeOptions};
use ember_rpc::{Amqp, AmqpOptions, Clock, InProcess, Registry, RegistryHandle, RegistryOptions, Transport};
use ember_scheduler::SharedScheduler;
use ember_scheduler::{SchedulerOptions, SchedulerService, SchedulerServiceHandle, SchedulerServiceOptions};
use ember_volume::{Backend, Backends, CapabilityReporter, PublishEndpoint, ReporterHandle, ReporterOptions};

/// One bus the tests run on.
pub enum Bus {
    InProcess(InProcess),
    Amqp { options: AmqpOptions, opened: parking_lot::Mutex<Vec<Amqp>> },
}

/// In-process always; RabbitMQ where `EMBER_TEST_AMQP_URL` is set.
pub fn buses(test: &str) -> Vec<Bus> {
    let mut buses = vec![Bus::InProcess(InProcess::new())];
    match std::env::var("EMBER_TEST_AMQP_URL") {
        Ok(url) => {
            let prefix = format!("test-{test}-{}.", uuid::Uuid::new_v4().simple());
            let options = AmqpOptions { url, prefix, publish_timeout_ms: 30_000, ..AmqpOptions::default() };
            buses.push(Bus::Amqp { options, opened: parking_lot::Mutex::new(Vec::new()) });
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

    /// A transport of its own, as a separate process would have.
    pub async fn transport(&self) -> Arc<dyn Transport> {
        match self {
            Bus::InProcess(bus) => Arc::new(bus.clone()),
            Bus::Amqp { options, opened } => {
                let amqp = Amqp::connect(options.clone()).await.expect("connect to RabbitMQ");
                opened.lock().push(amqp.clone());
                Arc::new(amqp)
            }
        }
    }

    /// Deletes what the test declared on RabbitMQ and closes the connections.
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

/// A manual clock at a fixed start.
pub fn clock() -> Clock {
    Clock::manual(DateTime::from_timestamp_millis(1_700_000_000_000).unwrap())
}

pub fn repo(t: &TestDb) -> Arc<dyn ServiceRepo> {
    Arc::new(SqlRepo::new(t.db.clone(), QuotaDefaults::default()))
}

/// Timers far beyond any test: everything is driven by hand or by requests.
pub fn registry(repo: Arc<dyn ServiceRepo>, clock: &Clock) -> Registry {
    let options = RegistryOptions { report_interval: 3600, service_down_time: 60 };
    Registry::new(options, repo).with_clock(clock.clone())
}

/// A fake backend `host@name` of `capacity_gb`.
pub fn fake_backend(host: &str, name: &str, capacity_gb: u64) -> Backend {
    let options = FakeOptions {
        backend_name: name.to_owned(),
        pool_name: name.to_owned(),
        capacity_gb,
        ..FakeOptions::default()
    };
    Backend {
        name: name.to_owned(),
        host: format!("{host}@{name}"),
        availability_zone: "nova".to_owned(),
        driver: Arc::new(FakeDriver::new(options)),
    }
}

/// A volume service as a process runs it: rows and heartbeats, reports, and the listener
/// for publish requests.
pub struct VolumeService {
    pub registry: RegistryHandle,
    pub reporter: ReporterHandle,
    pub publish: ember_rpc::ServerHandle,
}

impl VolumeService {
    pub async fn start(
        backends: Backends,
        registry: Registry,
        transport: Arc<dyn Transport>,
        clock: &Clock,
        periodic_interval: u64,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let registry = registry.start(backends.service_specs(), shutdown.clone()).await.expect("register");
        let options = ReporterOptions { periodic_interval };
        let reporter = CapabilityReporter::new(options, backends, transport.clone())
            .with_clock(clock.clone())
            .spawn(shutdown);
        let publish = ember_rpc::RpcServer::new(PublishEndpoint::new(reporter.clone()))
            .listen_fanout(&*transport, ember_rpc::VOLUME_TOPIC, 4)
            .await
            .expect("listen for publish requests");
        Self { registry, reporter, publish }
    }

    pub async fn stop(self) {
        self.publish.stop().await;
        self.reporter.stop().await;
        self.registry.stop().await;
    }
}

/// A scheduler with Cinder's defaults and its service started.
pub async fn scheduler(
    repo: Arc<dyn ServiceRepo>,
    transport: Arc<dyn Transport>,
) -> (SharedScheduler, SchedulerServiceHandle) {
    let scheduler = SharedScheduler::new(SchedulerOptions::default()).expect("scheduler");
    let options =
        SchedulerServiceOptions { service_refresh_interval: 3600, ..SchedulerServiceOptions::default() };
    let handle = SchedulerService::new(scheduler.clone())
        .start(options, repo, transport, CancellationToken::new())
        .await
        .expect("start the scheduler service");
    (scheduler, handle)
}

/// Polls `check` until it holds or `limit` passes.
pub async fn eventually(limit: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    check()
}
