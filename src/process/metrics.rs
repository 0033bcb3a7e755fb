//! The process's metrics: every part of Ember records through the `metrics` crate and
//! `metrics-exporter-prometheus` renders the registry as Prometheus text at `GET /metrics`
//! (on the API's socket, and on `metrics_listen` for processes without the API).
//!
//! Recorded where they happen: requests in `ember-api` (`http_metrics`), RPC messages at
//! `ember_rpc::RpcClient`, backend capacity in `ember_volume::CapabilityReporter`, flows and
//! steps by [`super::flow_metrics::FlowMetrics`] (an engine listener). Refreshed here at
//! each scrape: the flow workers' counters and the services' liveness.

use std::sync::Arc;
use std::time::Duration;

use ember_common::model::ServiceFilter;
use ember_common::repo::ServiceRepo;
use ember_engine::WorkerStats;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use parking_lot::Mutex;

/// Histogram buckets (seconds) shared by request, RPC, flow and step durations: from a
/// millisecond to ten minutes.
const BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];

/// Every metric Ember records, with its help text (also the README's table).
pub const FAMILIES: &[(&str, &str)] = &[
    ("ember_http_requests_total", "HTTP requests answered, by method, route and status."),
    ("ember_http_request_duration_seconds", "Time to answer an HTTP request, by method, route and status."),
    ("ember_flows_started_total", "Flows started in this process, by flow name."),
    ("ember_flows_succeeded_total", "Flows that ended in SUCCESS in this process, by flow name."),
    ("ember_flows_reverted_total", "Flows that ended REVERTED in this process, by flow name."),
    (
        "ember_flows_failed_total",
        "Flows that ended in FAILURE (a revert failed) in this process, by flow name.",
    ),
    (
        "ember_flows_resumed_total",
        "Flows started again after a suspension (shutdown), a failure or a revert request, by flow name.",
    ),
    (
        "ember_flows_taken_over_total",
        "Flows found mid-run and carried on (a crashed owner's, a lapsed lease, an operator's resume), by flow name.",
    ),
    (
        "ember_flow_duration_seconds",
        "Time from a flow's start (or resumption) here to its end, by flow and final state.",
    ),
    (
        "ember_flow_step_duration_seconds",
        "Time of one execute or revert of a step, by flow, step and the state it ended in.",
    ),
    ("ember_flow_step_failures_total", "Step failures, by flow, step and phase (execute or revert)."),
    (
        "ember_worker_flows_reclaimed_at_start_total",
        "Flows a worker took back at start from its own earlier life.",
    ),
    (
        "ember_worker_flows_claimed_at_start_total",
        "Flows waiting at start (hand-offs, orphans) a worker claimed.",
    ),
    (
        "ember_worker_flows_claimed_total",
        "Flows a worker claimed since start (hand-offs, orphans of lapsed leases).",
    ),
    ("ember_worker_flows_succeeded_total", "Claimed flows that ended in SUCCESS."),
    ("ember_worker_flows_failed_total", "Claimed flows that ended reverted or failed."),
    ("ember_worker_flows_suspended_total", "Claimed flows suspended by a shutdown."),
    (
        "ember_worker_flows_abandoned_total",
        "Claimed flows given up: taken by another worker, or not rebuildable.",
    ),
    ("ember_backend_total_capacity_gib", "A pool's total capacity as its backend last reported it."),
    ("ember_backend_free_capacity_gib", "A pool's free capacity as its backend last reported it."),
    ("ember_backend_allocated_capacity_gib", "GiB of volumes placed on a pool."),
    (
        "ember_backend_provisioned_capacity_gib",
        "GiB provisioned on a pool (thin pools may exceed the total).",
    ),
    ("ember_service_up", "1 when a service's last heartbeat is within service_down_time, else 0."),
    ("ember_service_heartbeat_age_seconds", "Seconds since a service's last heartbeat."),
    ("ember_rpc_casts_total", "RPC casts sent, by topic, method and outcome."),
    ("ember_rpc_fanout_casts_total", "RPC fanout casts sent, by topic, method and outcome."),
    (
        "ember_rpc_calls_total",
        "RPC calls made, by topic, method and outcome (ok, remote_error, timeout, error).",
    ),
    ("ember_rpc_call_duration_seconds", "Time for an RPC call's reply, by topic and method."),
    (
        "ember_backup_bytes_read_total",
        "Bytes the backups of this process read from their volumes (a resumed backup reads only what it had not stored).",
    ),
];

struct Worker {
    role: String,
    topic: String,
    stats: Arc<WorkerStats>,
}

/// Where the liveness gauges come from: the services table and the one liveness rule.
struct Liveness {
    repo: Arc<dyn ServiceRepo>,
    service_down_time: Duration,
}

/// The process's registry of metrics and what is refreshed at each scrape.
pub struct Metrics {
    handle: PrometheusHandle,
    workers: Mutex<Vec<Worker>>,
    liveness: Option<Liveness>,
}

impl Metrics {
    /// A Prometheus recorder with Ember's histogram buckets, not yet installed.
    pub fn recorder() -> PrometheusRecorder {
        PrometheusBuilder::new().set_buckets(BUCKETS).expect("the bucket list is not empty").build_recorder()
    }

    /// Installs the process's recorder (the first call in a process; a later one keeps
    /// the first recorder and warns) and describes every family.
    pub fn install() -> Self {
        let recorder = Self::recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was installed already; this registry stays empty");
        }
        describe();
        Self::with_handle(handle)
    }

    /// Metrics rendered from the recorder of `handle`.
    pub fn with_handle(handle: PrometheusHandle) -> Self {
        Self { handle, workers: Mutex::default(), liveness: None }
    }

    /// Reports every service's liveness at each scrape, read from `repo`.
    pub fn with_liveness(mut self, repo: Arc<dyn ServiceRepo>, service_down_time: Duration) -> Self {
        self.liveness = Some(Liveness { repo, service_down_time });
        self
    }

    /// Adds the counters of a worker of `role` on `topic`.
    pub fn add_worker(&self, role: &str, topic: &str, stats: Arc<WorkerStats>) {
        self.workers.lock().push(Worker { role: role.to_owned(), topic: topic.to_owned(), stats });
    }

    /// Drains histogram samples into their buckets (the exporter's upkeep); call it
    /// every few seconds so samples between scrapes do not pile up.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Refreshes what is read at scrape time, then renders every metric.
    pub async fn render(&self) -> String {
        self.record_workers();
        if let Some(liveness) = &self.liveness {
            liveness.record().await;
        }
        self.handle.render()
    }

    fn record_workers(&self) {
        for w in self.workers.lock().iter() {
            for (name, value) in w.stats.snapshot() {
                let labels = [("role", w.role.clone()), ("topic", w.topic.clone())];
                metrics::counter!(format!("ember_worker_{name}_total"), &labels).absolute(value);
            }
        }
    }
}

impl Liveness {
    /// Sets `ember_service_up` and `ember_service_heartbeat_age_seconds` of every service.
    async fn record(&self) {
        let services = match self.repo.list_services(&ServiceFilter::default()).await {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the services for the liveness metrics");
                return;
            }
        };
        let now = chrono::Utc::now();
        for s in services {
            let labels = [("binary", s.binary.clone()), ("host", s.host.clone())];
            let up = ember_rpc::registry::is_up(&s, now, self.service_down_time);
            metrics::gauge!("ember_service_up", &labels).set(if up { 1.0 } else { 0.0 });
            let age = (now - s.heartbeat_at).num_milliseconds() as f64 / 1000.0;
            metrics::gauge!("ember_service_heartbeat_age_seconds", &labels).set(age.max(0.0));
        }
    }
}

/// Gives every family its help line.
fn describe() {
    for (name, help) in FAMILIES {
        let (name, help) = (*name, *help);
        if name.ends_with("_total") {
            metrics::describe_counter!(name, help);
        } else if name.ends_with("_seconds") {
            metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
        } else {
            metrics::describe_gauge!(name, help);
        }
    }
}

/// `GET /metrics` on its own socket, for a process without the API.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// A router answering `GET /metrics`.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render().await)
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn renders_worker_counters_and_histograms() {
        let recorder = Metrics::recorder();
        let m = Metrics::with_handle(recorder.handle());
        let stats = Arc::new(WorkerStats::default());
        stats.reclaimed_at_start.fetch_add(3, Ordering::Relaxed);
        m.add_worker("volume", "volume.h@file", stats);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let text = metrics::with_local_recorder(&recorder, || {
            describe();
            metrics::histogram!("ember_flow_duration_seconds", "flow" => "f", "state" => "SUCCESS")
                .record(0.3);
            runtime.block_on(m.render())
        });
        assert!(
            text.contains(
                "ember_worker_flows_reclaimed_at_start_total{role=\"volume\",topic=\"volume.h@file\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE ember_worker_flows_succeeded_total counter\n"), "{text}");
        assert!(
            text.contains("ember_flow_duration_seconds_bucket{flow=\"f\",state=\"SUCCESS\",le=\"0.5\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ember_flow_duration_seconds_bucket{flow=\"f\",state=\"SUCCESS\",le=\"0.25\"} 0\n"),
            "{text}"
        );
    }

    /// Liveness is read from the services table at each scrape: a fresh heartbeat is up,
    /// one older than `service_down_time` is down.
    #[test]
    fn liveness_follows_the_heartbeats() {
        use ember_common::model::Service;
        use ember_db::testing::TestDb;

        let recorder = Metrics::recorder();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let text = metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let db = TestDb::sqlite().await.unwrap();
                let repo = Arc::new(ember_db::SqlRepo::new(db.db.clone(), Default::default()));
                let now = chrono::Utc::now();
                let row = |host: &str, at| Service {
                    id: uuid::Uuid::new_v4().to_string(),
                    host: host.to_owned(),
                    binary: "ember-volume".to_owned(),
                    topic: "ember-volume".to_owned(),
                    availability_zone: "nova".to_owned(),
                    disabled: false,
                    disabled_reason: None,
                    frozen: false,
                    cluster_name: None,
                    report_count: 0,
                    version: "0.1.0".to_owned(),
                    rpc_current_version: None,
                    heartbeat_at: at,
                    created_at: at,
                };
                repo.register_service(&row("live@file", now)).await.unwrap();
                repo.register_service(&row("dead@file", now - chrono::Duration::seconds(600))).await.unwrap();
                let m = Metrics::with_handle(recorder.handle()).with_liveness(repo, Duration::from_secs(60));
                m.render().await
            })
        });
        assert!(text.contains("ember_service_up{binary=\"ember-volume\",host=\"live@file\"} 1\n"), "{text}");
        assert!(text.contains("ember_service_up{binary=\"ember-volume\",host=\"dead@file\"} 0\n"), "{text}");
        let age = text.lines().find(|l| {
            l.starts_with("ember_service_heartbeat_age_seconds{binary=\"ember-volume\",host=\"dead@file\"}")
        });
        let age: f64 = age.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or_default();
        assert!((600.0..700.0).contains(&age), "{text}");
    }
}
