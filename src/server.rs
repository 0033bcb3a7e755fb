//! Serving the REST API on a socket until shutdown.

use std::net::SocketAddr;

use anyhow::Context as _;
use ember_api::{ApiState, app};
use tokio_util::sync::CancellationToken;

/// Binds `listen` and serves the API until `shutdown` is cancelled; in-flight requests finish.
pub async fn serve_api(
    listen: SocketAddr,
    state: ApiState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind the API to {listen}"))?;
    tracing::info!(%listen, "API listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serve the API")
}
