//! Serving the REST API on a socket until shutdown.

use std::sync::Arc;

use anyhow::Context as _;
use ember_api::{ApiState, app};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::process::metrics::{self, Metrics};

/// Serves the API (and the process's `GET /metrics`) on `listener` until `shutdown` is cancelled; in-flight requests finish.
pub async fn serve_api(
    listener: TcpListener,
    state: ApiState,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listen = listener.local_addr().context("read the API's address")?;
    tracing::info!(%listen, "API listening");
    axum::serve(listener, app(state).merge(metrics::router(metrics)))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serve the API")
}
