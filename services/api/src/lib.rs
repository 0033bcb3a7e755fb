//! Cinder's Block Storage API v3 over HTTP: routing, microversions, auth and faults.
//!
//! [`app`] builds the whole HTTP application from an [`ApiState`]; tests drive it with
//! `tower::ServiceExt::oneshot` and one test binds a real port. Reads are answered from
//! the repositories; operations that run as flows go through [`VolumeOps`].

pub mod attachments;
pub mod auth;
pub mod backups;
pub mod console;
pub mod context;
pub mod etag;
pub mod extract;
pub mod fault;
pub mod flow_views;
pub mod flows;
pub mod http_metrics;
pub mod keystone;
pub mod listing;
pub mod load;
pub mod microversion;
pub mod openapi;
pub mod policy;
pub mod projectless;
pub mod quotas;
pub mod services;
pub mod snapshots;
pub mod state;
pub mod types;
pub mod validate;
pub mod versions;
pub mod views;
pub mod volumes;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument as _;

pub use ember_common::ops::VolumeOps;
pub use state::{ApiState, FlowAdmin, Repos, Settings, UnwiredOps};

use crate::context::RequestId;
use crate::fault::Fault;

/// The HTTP application: versions documents without a token, `/v3/{project_id}/...` with one.
pub fn app(state: ApiState) -> Router {
    let project = Router::new()
        .merge(volumes::routes())
        .merge(attachments::routes())
        .merge(snapshots::routes())
        .merge(backups::routes())
        .merge(types::routes())
        .merge(quotas::routes())
        .merge(services::routes())
        .merge(flows::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(bad_method)
        .layer(middleware::from_fn(extract::json_content_type))
        .layer(middleware::from_fn_with_state(state.auth.clone(), auth::layer))
        .with_state(state);
    let routes = Router::new()
        .route("/", get(versions::root))
        .route("/v3", get(versions::v3_redirect))
        .route("/v3/", get(versions::v3))
        // keystoneauth discovers at the endpoint itself (`/v3/{project_id}`) and sends no
        // token there: it gets the versions document, as at `/v3/`.
        .route("/v3/{project_id}", get(versions::v3))
        .route("/healthcheck", get(|| async { "OK" }))
        .route("/openapi.json", get(openapi::serve))
        .route("/console", get(console::page))
        .nest("/v3/{project_id}", project)
        .fallback(not_found)
        .method_not_allowed_fallback(bad_method)
        .layer(middleware::from_fn(microversion::layer))
        .layer(middleware::from_fn(request_id))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            Fault::internal().into_response()
        }))
        // Outermost, so a request answered by any layer (or a caught panic) is counted.
        .layer(middleware::from_fn(http_metrics::record));
    // Routing happens inside `routes`, so project-less URLs are rewritten before it.
    Router::new()
        .fallback_service(tower::ServiceBuilder::new().map_request(projectless::rewrite).service(routes))
}

async fn not_found() -> Fault {
    Fault::not_found("The resource could not be found.")
}

async fn bad_method() -> Fault {
    Fault::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "The method is not allowed for this resource.")
}

/// Gives every request an id (`req-<uuid>`), visible to handlers as [`RequestId`] and
/// returned in Cinder's two headers.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    request.extensions_mut().insert(RequestId(id.clone()));
    // At ERROR level so that whatever filter lets a line through also keeps this span.
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let span = tracing::error_span!("request", request_id = %id, %method, %path);
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-openstack-request-id", value.clone());
        response.headers_mut().insert("x-compute-request-id", value);
    }
    response
}
