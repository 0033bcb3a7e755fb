//! Metadata ETags (3.15+): `GET .../metadata` answers one and `If-Match` guards the writes.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use common::{ADMIN, Answer, Harness};

/// Sends one request with an optional `If-Match` header.
async fn send(
    h: &Harness,
    method: Method,
    path: &str,
    mv: &str,
    if_match: Option<&str>,
    body: Value,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("/v3/p1{path}"))
        .header("x-auth-token", ADMIN)
        .header("openstack-api-version", format!("volume {mv}"))
        .header("content-type", "application/json");
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
    let response = h.app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    // Cinder answers a failed If-Match with a bare 412: no fault body.
    assert!(status != StatusCode::PRECONDITION_FAILED || bytes.is_empty(), "a 412 with a body: {bytes:?}");
    Answer { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

fn etag(a: &Answer) -> String {
    a.headers.get("etag").expect("an ETag header").to_str().unwrap().to_owned()
}

/// Checks one metadata collection (`/volumes/{id}` or `/snapshots/{id}`).
async fn check_collection(h: &Harness, base: &str) {
    let meta = format!("{base}/metadata");
    let before = send(h, Method::GET, &meta, "3.15", None, Value::Null).await;
    assert_eq!(before.status, StatusCode::OK);
    let tag = etag(&before);
    assert_eq!(tag.len(), 32);
    // Below 3.15 there is no tag and `If-Match` is not looked at.
    let old = send(h, Method::GET, &meta, "3.14", None, Value::Null).await;
    assert!(old.headers.get("etag").is_none());

    // A stale tag is refused and changes nothing, on every guarded write.
    let stale = "\"0123456789abcdef0123456789abcdef\"";
    for (method, path, body) in [
        (Method::PUT, meta.clone(), json!({"metadata": {"x": "1"}})),
        (Method::POST, meta.clone(), json!({"metadata": {"x": "1"}})),
        (Method::PUT, format!("{meta}/k"), json!({"meta": {"k": "changed"}})),
    ] {
        let a = send(h, method, &path, "3.15", Some(stale), body).await;
        assert_eq!(a.status, StatusCode::PRECONDITION_FAILED, "{:?}", a.body);
        let now = send(h, Method::GET, &meta, "3.15", None, Value::Null).await;
        assert_eq!(now.body, before.body);
        assert_eq!(etag(&now), tag);
    }
    // Below 3.15 the stale tag is ignored, as in Cinder.
    let a = send(h, Method::POST, &meta, "3.14", Some(stale), json!({"metadata": {"y": "2"}})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);

    // The current tag (quoted or not) lets the write through, and the tag changes with it.
    let current = send(h, Method::GET, &meta, "3.15", None, Value::Null).await;
    let tag = etag(&current);
    let a =
        send(h, Method::PUT, &meta, "3.15", Some(&format!("\"{tag}\"")), json!({"metadata": {"k": "v2"}}))
            .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body, json!({"metadata": {"k": "v2"}}));
    let new_tag = etag(&a);
    assert_ne!(new_tag, tag);
    let a = send(h, Method::PUT, &format!("{meta}/k"), "3.15", Some(&new_tag), json!({"meta": {"k": "v3"}}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let a = send(h, Method::PUT, &meta, "3.15", Some("*"), json!({"metadata": {}})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
}

#[tokio::test]
async fn volume_and_snapshot_metadata_carry_etags() {
    let h = Harness::sqlite().await;
    let id = h.create_volume(ADMIN, json!({"size": 1, "metadata": {"k": "v"}})).await;
    check_collection(&h, &format!("/volumes/{id}")).await;

    h.set_status(&id, ember_common::model::VolumeStatus::Available).await;
    let body = json!({"snapshot": {"volume_id": id, "metadata": {"k": "v"}}});
    let a = h.post("/snapshots", ADMIN, "3.0", body).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    let snap = a.body["snapshot"]["id"].as_str().unwrap().to_owned();
    check_collection(&h, &format!("/snapshots/{snap}")).await;
    h.cleanup().await;
}
