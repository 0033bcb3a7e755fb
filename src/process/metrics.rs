//! The process's metrics in Prometheus' text format: what each flow worker did since the
//! process started (flows resumed from an earlier life, claimed, finished).

use std::fmt::Write as _;
use std::sync::Arc;

use ember_engine::WorkerStats;
use parking_lot::Mutex;

/// The help line of each worker counter, by its name in [`WorkerStats::snapshot`].
const HELP: &[(&str, &str)] = &[
    ("flows_reclaimed_at_start", "Flows this process took over at start from its own earlier life."),
    (
        "flows_claimed_at_start",
        "Flows waiting at start (hand-offs, orphans of lapsed leases) this process claimed.",
    ),
    ("flows_claimed", "Flows claimed since start (hand-offs, orphans of lapsed leases)."),
    ("flows_succeeded", "Claimed flows that ended in SUCCESS."),
    ("flows_failed", "Claimed flows that ended reverted or failed."),
    ("flows_suspended", "Claimed flows suspended by a shutdown."),
    ("flows_abandoned", "Claimed flows given up: taken by another worker, or not rebuildable."),
];

struct Entry {
    role: String,
    topic: String,
    stats: Arc<WorkerStats>,
}

/// The counters of every worker of this process.
#[derive(Default)]
pub struct Metrics {
    workers: Mutex<Vec<Entry>>,
}

impl Metrics {
    /// Adds the counters of a worker of `role` on `topic`.
    pub fn add_worker(&self, role: &str, topic: &str, stats: Arc<WorkerStats>) {
        self.workers.lock().push(Entry { role: role.to_owned(), topic: topic.to_owned(), stats });
    }

    /// Every counter, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let workers = self.workers.lock();
        let snapshots: Vec<_> = workers.iter().map(|w| (w, w.stats.snapshot())).collect();
        let mut out = String::with_capacity(256 + 96 * HELP.len() * workers.len().max(1));
        for (k, (name, help)) in HELP.iter().enumerate() {
            let _ = writeln!(out, "# HELP ember_{name} {help}\n# TYPE ember_{name} counter");
            for (w, snap) in &snapshots {
                debug_assert_eq!(snap[k].0, *name);
                let _ =
                    writeln!(out, "ember_{name}{{role=\"{}\",topic=\"{}\"}} {}", w.role, w.topic, snap[k].1);
            }
        }
        out
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
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn renders_every_counter_per_worker() {
        let m = Metrics::default();
        let stats = Arc::new(WorkerStats::default());
        stats.reclaimed_at_start.fetch_add(3, Ordering::Relaxed);
        m.add_worker("volume", "volume.h@file", stats);
        let text = m.render();
        assert!(text.contains("ember_flows_reclaimed_at_start{role=\"volume\",topic=\"volume.h@file\"} 3\n"));
        assert!(text.contains("# TYPE ember_flows_succeeded counter\n"));
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), HELP.len());
    }
}
