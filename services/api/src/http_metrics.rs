//! Request metrics: every request counted and timed by route, method and status through the
//! `metrics` crate (`ember_http_requests_total`, `ember_http_request_duration_seconds`).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// The route label of a request no route matched: unknown paths must not each make a
/// series of their own.
pub const UNMATCHED: &str = "unmatched";

/// Middleware that records one request. Laid on the router (inside routing), so the route
/// is the matched pattern (`/v3/{project_id}/volumes/{id}`), never the raw path.
pub async fn record(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, |p| p.as_str()).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [("method", method), ("route", route), ("status", response.status().as_u16().to_string())];
    metrics::counter!("ember_http_requests_total", &labels).increment(1);
    metrics::histogram!("ember_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
