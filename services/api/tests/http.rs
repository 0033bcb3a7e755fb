//! The HTTP contract that every client relies on, driven through `oneshot`.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

async fn send(request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let harness = common::Harness::sqlite().await;
    let response = harness.app.clone().oneshot(request).await.unwrap();
    harness.cleanup().await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

fn get(uri: &str) -> axum::http::request::Builder {
    Request::builder().uri(uri).header("host", "example:8776")
}

#[tokio::test]
async fn versions_documents_need_no_token() {
    let (status, _, body) = send(get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(body["versions"][0]["version"], "3.71");
    assert_eq!(body["versions"][0]["min_version"], "3.0");
    let (status, _, body) = send(get("/v3/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["versions"][0]["links"][1]["href"], "http://example:8776/v3/");
}

#[tokio::test]
async fn microversions_are_echoed_and_checked() {
    let req = get("/v3/").header("OpenStack-API-Version", "volume 3.27").body(Body::empty()).unwrap();
    let (_, headers, _) = send(req).await;
    assert_eq!(headers["openstack-api-version"], "volume 3.27");
    assert!(headers.get_all("vary").iter().any(|v| v == "OpenStack-API-Version"));
    assert!(headers["x-openstack-request-id"].to_str().unwrap().starts_with("req-"));
    let req = get("/v3/").header("OpenStack-API-Version", "volume 3.999").body(Body::empty()).unwrap();
    let (status, headers, body) = send(req).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(headers["openstack-api-version"], "volume 3.999");
    assert_eq!(body["notAcceptable"]["code"], 406);
    let (_, headers, _) = send(get("/v3/").body(Body::empty()).unwrap()).await;
    assert_eq!(headers["openstack-api-version"], "volume 3.0");
}

#[tokio::test]
async fn project_urls_need_a_matching_token() {
    let (status, _, body) = send(get("/v3/p1/volumes").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["unauthorized"]["code"], 401);
    let req = get("/v3/p1/volumes").header("X-Auth-Token", "u:p2").body(Body::empty()).unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["badRequest"]["message"], "Malformed request url");
}

#[tokio::test]
async fn unknown_paths_are_item_not_found() {
    let req = get("/v3/p1/nothing-here").header("X-Auth-Token", "u:p1").body(Body::empty()).unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["itemNotFound"]["code"], 404);
}

#[tokio::test]
async fn the_project_endpoint_itself_is_a_versions_document_without_token() {
    let (status, _, body) = send(get("/v3/p1").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["versions"][0]["version"], "3.71");
    let (status, _, _) = send(get("/v3/p1/volumes").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "everything below it still needs a token");
}
