//! The reporter's timing on paused tokio time: a report at start, one every
//! `periodic_interval`, one more on request, none after stop; and a failing backend does not
//! stop the others' reports.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use common::fake_backend;
use ember_common::capabilities::{CapabilityReport, UPDATE_SERVICE_CAPABILITIES};
use ember_drivers::{FakeDriver, FakeOp, FakeOptions};
use ember_rpc::{
    Clock, Context, Endpoint, InProcess, Outcome, RemoteError, RpcServer, SCHEDULER_TOPIC, Version,
};
use ember_volume::{Backend, Backends, CapabilityReporter, ReporterOptions};

/// A scheduler stand-in that records (host, timestamp relative to the start) of each report.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Vec<(String, i64)>>>);

struct Recorder {
    reports: Reports,
    start_ms: i64,
}

#[async_trait]
impl Endpoint for Recorder {
    fn version(&self) -> Version {
        Version { major: 3, minor: 12 }
    }

    async fn handle(&self, _ctx: &Context, method: &str, args: &Value) -> Outcome {
        if method != UPDATE_SERVICE_CAPABILITIES {
            return Err(RemoteError::unknown_method(method));
        }
        let report: CapabilityReport = serde_json::from_value(args.clone()).unwrap();
        self.reports.0.lock().push((report.host, report.timestamp_ms - self.start_ms));
        Ok(Value::Null)
    }
}

#[tokio::test(start_paused = true)]
async fn reports_at_start_then_every_period_and_on_request() {
    let bus = Arc::new(InProcess::new());
    let clock = Clock::tokio();
    let reports = Reports::default();
    let recorder = Recorder { reports: reports.clone(), start_ms: clock.now_ms() };
    let server = RpcServer::new(recorder).listen_fanout(&*bus, SCHEDULER_TOPIC, 1).await.unwrap();

    let backends = Backends::from_backends(vec![fake_backend("n", "a", 10)]);
    let reporter = CapabilityReporter::new(ReporterOptions::default(), backends, bus.clone())
        .with_clock(clock.clone())
        .spawn(CancellationToken::new());
    tokio::time::sleep(Duration::from_secs(125)).await;
    let at: Vec<i64> = reports.0.lock().iter().map(|(_, t)| *t).collect();
    assert_eq!(at, [0, 60_000, 120_000]);

    reporter.request_report();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(reports.0.lock().last().map(|(_, t)| *t), Some(125_000));
    assert_eq!(reporter.rounds(), 4);

    reporter.stop().await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(reports.0.lock().len(), 4, "nothing after stop");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_backend_does_not_silence_the_others() {
    let bus = Arc::new(InProcess::new());
    let reports = Reports::default();
    let recorder = Recorder { reports: reports.clone(), start_ms: 0 };
    let server = RpcServer::new(recorder).listen_fanout(&*bus, SCHEDULER_TOPIC, 1).await.unwrap();
    let broken = FakeOptions { fail_always: vec![FakeOp::GetVolumeStats], ..FakeOptions::default() };
    let broken = Backend {
        name: "broken".into(),
        host: "n@broken".into(),
        availability_zone: "nova".into(),
        driver: Arc::new(FakeDriver::new(broken)),
    };
    let backends = Backends::from_backends(vec![broken, fake_backend("n", "ok", 10)]);
    let reporter = CapabilityReporter::new(ReporterOptions::default(), backends, bus.clone());
    let err = reporter.report_once().await.unwrap_err();
    assert!(err.to_string().contains("n@broken"), "{err}");
    tokio::time::sleep(Duration::from_millis(1)).await;
    let hosts: Vec<String> = reports.0.lock().iter().map(|(h, _)| h.clone()).collect();
    assert_eq!(hosts, ["n@ok"]);
    server.stop().await;
}
