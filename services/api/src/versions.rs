//! The versions document at `/` (300) and `/v3/` (200), served without a token.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use crate::microversion::{MAX, MIN};

/// `GET /`: the list of API versions, as Cinder's 300 Multiple Choices.
pub async fn root(headers: HeaderMap) -> Response {
    (StatusCode::MULTIPLE_CHOICES, Json(document(&headers))).into_response()
}

/// `GET /v3/`: the same document with 200 (keystoneauth discovers here without a token).
pub async fn v3(headers: HeaderMap) -> Response {
    (StatusCode::OK, Json(document(&headers))).into_response()
}

/// `GET /v3`: Cinder redirects to `/v3/`.
pub async fn v3_redirect() -> Redirect {
    Redirect::to("/v3/")
}

/// The base URL clients reached us at, from the `Host` header.
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1:8776");
    let scheme = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("http");
    format!("{scheme}://{host}")
}

fn document(headers: &HeaderMap) -> Value {
    json!({
        "versions": [{
            "id": "v3.0",
            "status": "CURRENT",
            "version": MAX.to_string(),
            "min_version": MIN.to_string(),
            "updated": "2023-08-31T00:00:00Z",
            "links": [
                {"href": "https://docs.openstack.org/", "rel": "describedby", "type": "text/html"},
                {"href": format!("{}/v3/", base_url(headers)), "rel": "self"}
            ],
            "media-types": [{
                "base": "application/json",
                "type": "application/vnd.openstack.volume+json;version=3"
            }]
        }]
    })
}
