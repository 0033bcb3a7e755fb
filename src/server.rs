//! Serving the REST API on a socket until shutdown, with bounds on what a client may hold:
//! a deadline for a request's headers (which also closes idle keep-alive connections), a
//! deadline for its body, and a cap on the connections served at once.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::Request;
use ember_api::{ApiState, app};
use ember_common::config::Config;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::process::metrics::{self, Metrics};

/// What a client may hold of the API process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Time to send a request's headers; a connection still silent then is closed.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
    /// Connections served at once; the rest wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl ServeOptions {
    /// The options `client_header_timeout`, `client_body_timeout`, `osapi_max_connections`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            header_timeout: Duration::from_secs(config.client_header_timeout),
            body_timeout: Duration::from_secs(config.client_body_timeout),
            max_connections: usize::try_from(config.osapi_max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// Serves the API (and the process's `GET /metrics`) on `listener` until `shutdown` is
/// cancelled; requests in flight then finish.
pub async fn serve_api(
    listener: TcpListener,
    state: ApiState,
    metrics: Arc<Metrics>,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listen = listener.local_addr().context("read the API's address")?;
    tracing::info!(%listen, max_connections = options.max_connections, "API listening");
    let app =
        app(state).merge(metrics::router(metrics)).layer(RequestBodyTimeoutLayer::new(options.body_timeout));
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let connections = TaskTracker::new();
    tokio::spawn(release_memory_after_bursts(slots.clone(), options.max_connections, shutdown.clone()));
    loop {
        // A slot first, then a connection: past the cap, clients wait in the accept queue
        // instead of costing this process memory and a file descriptor each.
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.context("the connection slots closed")?,
        };
        let stream = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors or memory: back off instead of spinning on it.
                    tracing::warn!(%err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(|req: Request<Incoming>| req.map(Body::new));
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            // HTTP/1 only: the protocol sniffing of hyper-util's auto builder reads the first
            // bytes without a deadline, so a client that sends nothing would be held forever.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            let mut conn = pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%err, "connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Connections that must have ended since the last release before memory is released again.
const RELEASE_AFTER: usize = 256;

/// Hands the memory freed by a burst of closed connections back to the system: glibc keeps
/// freed memory in its per-thread arenas, fragmented, so without this thousands of slow
/// clients would leave the process tens of megabytes larger after they are gone.
async fn release_memory_after_bursts(slots: Arc<Semaphore>, max: usize, shutdown: CancellationToken) {
    let mut peak = 0usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let live = max.saturating_sub(slots.available_permits());
        peak = peak.max(live);
        if peak >= live + RELEASE_AFTER {
            peak = live;
            let _ = tokio::task::spawn_blocking(release_freed_memory).await;
        }
    }
}

/// Returns the free pages of every malloc arena to the system (`malloc_trim(0)`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: malloc_trim takes no pointer and only walks glibc's own arenas, under their
    // locks; any thread may call it at any time. std offers no safe way to ask for it.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}
