//! The OpenAPI document: served without a token, valid OpenAPI 3, and listing exactly the
//! routes the routers serve.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use common::{ADMIN, Harness};

async fn fetch_document(h: &Harness) -> Value {
    let req = Request::builder().uri("/openapi.json").body(Body::empty()).unwrap();
    let response = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).expect("the document is JSON")
}

/// The (method, path) pairs of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&method.as_str()) {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

/// The text of each `.route(...)` call in a source file, nesting included.
fn route_calls(source: &str) -> Vec<&str> {
    let mut calls = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find(".route(") {
        let body = &rest[start + ".route(".len()..];
        let mut depth = 1;
        let end = body
            .char_indices()
            .find_map(|(i, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                (depth == 0).then_some(i)
            })
            .expect("a closed .route(");
        calls.push(&body[..end]);
        rest = &body[end..];
    }
    calls
}

/// The (method, path) pairs a source file's `.route(...)` calls serve, under `prefix`.
fn served_in(source: &str, prefix: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for call in route_calls(source) {
        let path = call.split('"').nth(1).expect("a route path literal");
        let after_path = &call[call.find(path).unwrap() + path.len() + 1..];
        for method in ["get", "post", "put", "delete", "patch"] {
            let hit = after_path.match_indices(&format!("{method}(")).any(|(i, _)| {
                i == 0
                    || !after_path.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && after_path.as_bytes()[i - 1] != b'_'
            });
            if hit {
                out.insert((method.to_owned(), format!("{prefix}{path}")));
            }
        }
    }
    out
}

/// Every route the application serves, read from `lib.rs` and the `routes()` of every
/// module it merges under `/v3/{project_id}`.
fn served() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut out = served_in(&lib, "");
    for merged in lib.split(".merge(").skip(1) {
        let module = merged.split("::routes()").next().unwrap().trim();
        let file = [src.join(module).join("mod.rs"), src.join(format!("{module}.rs"))]
            .into_iter()
            .find(|f| f.exists())
            .unwrap_or_else(|| panic!("no source for merged module {module}"));
        out.extend(served_in(&std::fs::read_to_string(file).unwrap(), "/v3/{project_id}"));
    }
    out
}

#[tokio::test]
async fn openapi_json_is_served_without_a_token() {
    let h = Harness::sqlite().await;
    let doc = fetch_document(&h).await;
    for path in ["/v3/{project_id}/volumes", "/v3/{project_id}/volumes/detail"] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().cloned().unwrap_or_default();
        for name in ["limit", "marker", "sort", "with_count", "all_tenants", "metadata"] {
            assert!(
                params.iter().any(|p| p["name"] == name && p["in"] == "query"),
                "{path} documents {name}"
            );
        }
    }
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string());
    assert_eq!(doc["components"]["securitySchemes"]["token"]["name"], "X-Auth-Token");
    let create = &doc["paths"]["/v3/{project_id}/volumes"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/VolumeCreateRequest"
    );
    assert_eq!(create["security"][0]["token"], serde_json::json!([]));
    assert!(doc["components"]["schemas"]["VolumeView"]["properties"]["size"].is_object());
    let action = &doc["paths"]["/v3/{project_id}/volumes/{id}/action"]["post"];
    assert_eq!(
        action["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/VolumeAction"
    );
    assert!(doc["components"]["schemas"]["VolumeAction"]["properties"]["os-extend"].is_object());
    let snapshot = &doc["paths"]["/v3/{project_id}/snapshots"]["post"];
    assert_eq!(
        snapshot["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/SnapshotResponse"
    );
    // Every metadata write that If-Match guards documents the header and its bare 412.
    for (method, resource, tail) in [
        ("post", "volumes", "metadata"),
        ("put", "volumes", "metadata"),
        ("put", "volumes", "metadata/{key}"),
        ("post", "snapshots", "metadata"),
        ("put", "snapshots", "metadata"),
        ("put", "snapshots", "metadata/{key}"),
    ] {
        let op = &doc["paths"][format!("/v3/{{project_id}}/{resource}/{{id}}/{tail}")][method];
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        assert!(params.iter().any(|p| p["name"] == "If-Match" && p["in"] == "header"), "{method} {resource}");
        let refused = &op["responses"]["412"];
        assert!(refused["description"].is_string(), "{method} {resource} {tail}");
        assert!(refused.get("content").is_none(), "{method} {resource} {tail}: a 412 has no body");
    }
    // Operation ids are unique, and every operation under a project names the token and
    // the microversion header.
    let ids: Vec<_> =
        documented(&doc).iter().map(|(m, p)| doc["paths"][p][m]["operationId"].clone()).collect();
    assert_eq!(ids.iter().map(Value::to_string).collect::<BTreeSet<_>>().len(), ids.len(), "{ids:?}");
    assert!(ids.iter().all(Value::is_string));
    for ((method, path), op) in documented(&doc).iter().map(|k| (k.clone(), &doc["paths"][&k.1][&k.0])) {
        assert!(op["summary"].is_string(), "{method} {path}");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
        if path.starts_with("/v3/{project_id}/") {
            assert_eq!(op["security"][0]["token"], serde_json::json!([]), "{method} {path}");
            let refs = op["parameters"].as_array().unwrap();
            assert!(
                refs.iter().any(|p| p["$ref"] == "#/components/parameters/Microversion"),
                "{method} {path}"
            );
        }
    }
    h.cleanup().await;
}

#[tokio::test]
async fn the_document_lists_exactly_the_served_routes() {
    let h = Harness::sqlite().await;
    let doc = fetch_document(&h).await;
    let served = served();
    assert!(served.len() > 50, "the source parser found only {} routes", served.len());
    let documented = documented(&doc);
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(missing.is_empty(), "served but not in the document (add them to openapi::ROUTES): {missing:?}");
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(extra.is_empty(), "documented but not served: {extra:?}");
    h.cleanup().await;
}

/// Each documented route reaches a handler: never the router's own 404 or 405.
#[tokio::test]
async fn every_documented_route_is_routed() {
    let h = Harness::sqlite().await;
    let doc = fetch_document(&h).await;
    for (method, path) in documented(&doc) {
        let uri = path
            .replace("{project_id}", "p1")
            .replace("{id}", "x")
            .replace("{key}", "k")
            .replace("{action}", "enable");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let a = h.call_url(method.clone(), &uri, ADMIN, "3.71", None).await;
        assert_ne!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        let fallback = a.status == StatusCode::NOT_FOUND
            && a.body["itemNotFound"]["message"] == "The resource could not be found.";
        assert!(!fallback, "{method} {uri} is not routed");
    }
    h.cleanup().await;
}
