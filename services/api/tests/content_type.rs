//! A body that is not declared as JSON is refused with Cinder's 400 and changes nothing.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;

use common::{ADMIN, Harness};

async fn post_volume(h: &Harness, content_type: Option<&str>) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder()
        .method("POST")
        .uri("/v3/p1/volumes")
        .header("host", "ember.test:8776")
        .header("x-auth-token", ADMIN)
        .header("content-length", "26");
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let response = h.app.clone().oneshot(req.body(Body::from(r#"{"volume": {"size": 1}}  "#)).unwrap()).await;
    let response = response.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn only_json_bodies_are_read() {
    let h = Harness::sqlite().await;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/xml"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let (status, body) = post_volume(&h, ct).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{ct:?}: {body}");
        let message = body["badRequest"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("Invalid content type"), "{ct:?}: {body}");
    }
    assert!(h.volume_rows().await.is_empty(), "a refused request created a volume");
    for ct in ["application/json", "application/json; charset=UTF-8", "Application/JSON"] {
        let (status, body) = post_volume(&h, Some(ct)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{ct}: {body}");
    }
    assert_eq!(h.volume_rows().await.len(), 3);
}
