//! Serving the REST API on a socket until shutdown.

use anyhow::Context as _;
use ember_api::{ApiState, app};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the API on `listener` until `shutdown` is cancelled; in-flight requests finish.
pub async fn serve_api(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listen = listener.local_addr().context("read the API's address")?;
    tracing::info!(%listen, "API listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serve the API")
}
