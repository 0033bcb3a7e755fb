//! `/types`, extra specs and type access.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use common::Harness;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn sample(name: &str) -> Value {
    let path = format!("{}/tests/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn type_count(h: &Harness) -> usize {
    h.get("/types?is_public=all", "admin", "3.0").await.body["volume_types"].as_array().unwrap().len()
}

#[tokio::test]
async fn types_are_created_listed_updated_and_deleted() {
    let h = Harness::with_tokens().await;
    let body = json!({"volume_type": {"name": "gold", "description": "fast", "extra_specs": {"volume_backend_name": "file", "multiattach": "<is> True"}}});
    let a = h.post("/types", "admin", "3.0", body.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(keys(&a.body["volume_type"]), keys(&sample("volume-type-show.json")["volume_type"]));
    let id = a.body["volume_type"]["id"].as_str().unwrap().to_owned();
    h.post("/types", "admin", "3.0", body).await.fault(409, "conflictingRequest");

    let a = h.get(&format!("/types/{id}"), "alice", "3.0").await;
    assert_eq!(
        a.body["volume_type"]["extra_specs"],
        json!({"multiattach": "<is> True"}),
        "members see only user-visible specs"
    );
    assert!(a.body["volume_type"].get("qos_specs_id").is_none());
    let a = h.get("/types", "alice", "3.0").await;
    let names: BTreeSet<&str> =
        a.body["volume_types"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["__DEFAULT__", "gold"]));
    let a = h.get("/types?limit=1", "admin", "3.0").await;
    assert_eq!(a.body["volume_types"].as_array().unwrap().len(), 1);
    assert!(a.body["volume_type_links"][0]["href"].as_str().unwrap().contains("marker="));
    assert_eq!(h.get("/types/default", "alice", "3.0").await.body["volume_type"]["name"], "__DEFAULT__");

    let a = h
        .call(
            Method::PUT,
            &format!("/types/{id}"),
            "admin",
            "3.0",
            Some(json!({"volume_type": {"name": "platinum"}})),
        )
        .await;
    assert_eq!((a.status, a.body["volume_type"]["name"].as_str()), (StatusCode::OK, Some("platinum")));
    assert_eq!(a.body["volume_type"]["description"], "fast");
    h.call(Method::PUT, &format!("/types/{id}"), "admin", "3.0", Some(json!({"volume_type": {}})))
        .await
        .fault(400, "badRequest");

    h.create_volume("alice", json!({"size": 1, "volume_type": "platinum"})).await;
    h.call(Method::DELETE, &format!("/types/{id}"), "admin", "3.0", None).await.fault(400, "badRequest");
    let default_id =
        h.get("/types/default", "admin", "3.0").await.body["volume_type"]["id"].as_str().unwrap().to_owned();
    h.call(Method::DELETE, &format!("/types/{default_id}"), "admin", "3.0", None)
        .await
        .fault(400, "badRequest");
    let spare = h.post("/types", "admin", "3.0", json!({"volume_type": {"name": "spare"}})).await;
    let spare = spare.body["volume_type"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        h.call(Method::DELETE, &format!("/types/{spare}"), "admin", "3.0", None).await.status,
        StatusCode::ACCEPTED
    );
    h.get(&format!("/types/{spare}"), "admin", "3.0").await.fault(404, "itemNotFound");
    h.cleanup().await;
}

#[tokio::test]
async fn bad_type_requests_are_refused_and_change_nothing() {
    let h = Harness::with_tokens().await;
    let before = type_count(&h).await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("admin", json!({"volume_type": {}}), 400, "badRequest"),
        ("admin", json!({"volume_type": {"name": ""}}), 400, "badRequest"),
        ("admin", json!({"volume_type": {"name": 5}}), 400, "badRequest"),
        ("admin", json!({"volume_type": {"name": "x", "extra_specs": {"a": 1}}}), 400, "badRequest"),
        (
            "admin",
            json!({"volume_type": {"name": "x", "os-volume-type-access:is_public": "maybe"}}),
            400,
            "badRequest",
        ),
        ("admin", json!({"type": {"name": "x"}}), 400, "badRequest"),
        // Cinder's schema allows no other key, in the type or beside it.
        ("admin", json!({"volume_type": {"name": "x", "colour": "red"}}), 400, "badRequest"),
        ("admin", json!({"volume_type": {"name": "x"}, "extra": 1}), 400, "badRequest"),
        ("alice", json!({"volume_type": {"name": "x"}}), 403, "forbidden"),
    ];
    for (token, body, status, name) in cases {
        h.post("/types", token, "3.0", body).await.fault(status, name);
    }
    assert_eq!(type_count(&h).await, before);
    h.get(&format!("/types/{}", uuid::Uuid::new_v4()), "alice", "3.0").await.fault(404, "itemNotFound");
    h.cleanup().await;
}

#[tokio::test]
async fn extra_specs_and_private_type_access() {
    let h = Harness::with_tokens().await;
    let a = h
        .post(
            "/types",
            "admin",
            "3.0",
            json!({"volume_type": {"name": "secret", "os-volume-type-access:is_public": false}}),
        )
        .await;
    let id = a.body["volume_type"]["id"].as_str().unwrap().to_owned();
    h.get(&format!("/types/{id}"), "alice", "3.0").await.fault(404, "itemNotFound");
    let action = format!("/types/{id}/action");
    assert_eq!(
        h.post(&action, "admin", "3.0", json!({"addProjectAccess": {"project": "p1"}})).await.status,
        StatusCode::ACCEPTED
    );
    h.post(&action, "admin", "3.0", json!({"addProjectAccess": {"project": "p1"}}))
        .await
        .fault(409, "conflictingRequest");
    assert_eq!(h.get(&format!("/types/{id}"), "alice", "3.0").await.status, StatusCode::OK);
    let a = h.get(&format!("/types/{id}/os-volume-type-access"), "admin", "3.0").await;
    assert_eq!(a.body, json!({"volume_type_access": [{"volume_type_id": id, "project_id": "p1"}]}));
    h.post(&action, "alice", "3.0", json!({"removeProjectAccess": {"project": "p1"}}))
        .await
        .fault(403, "forbidden");
    assert_eq!(
        h.post(&action, "admin", "3.0", json!({"removeProjectAccess": {"project": "p1"}})).await.status,
        StatusCode::ACCEPTED
    );
    h.post(&action, "admin", "3.0", json!({"removeProjectAccess": {"project": "p1"}}))
        .await
        .fault(404, "itemNotFound");

    let specs = format!("/types/{id}/extra_specs");
    let a = h
        .post(&specs, "admin", "3.0", json!({"extra_specs": {"volume_backend_name": "file", "k": "v"}}))
        .await;
    assert_eq!(a.body, json!({"extra_specs": {"volume_backend_name": "file", "k": "v"}}));
    assert_eq!(h.get(&format!("{specs}/k"), "admin", "3.0").await.body, json!({"k": "v"}));
    let a = h.call(Method::PUT, &format!("{specs}/k"), "admin", "3.0", Some(json!({"k": "w"}))).await;
    assert_eq!(a.body, json!({"k": "w"}));
    h.call(Method::PUT, &format!("{specs}/k"), "admin", "3.0", Some(json!({"j": "w"})))
        .await
        .fault(400, "badRequest");
    assert_eq!(
        h.call(Method::DELETE, &format!("{specs}/k"), "admin", "3.0", None).await.status,
        StatusCode::ACCEPTED
    );
    h.get(&format!("{specs}/k"), "admin", "3.0").await.fault(404, "itemNotFound");
    assert_eq!(
        h.get(&specs, "admin", "3.0").await.body,
        json!({"extra_specs": {"volume_backend_name": "file"}})
    );
    h.create_volume("admin", json!({"size": 1, "volume_type": id})).await;
    h.post(&specs, "admin", "3.0", json!({"extra_specs": {"x": "y"}})).await.fault(400, "badRequest");
    h.cleanup().await;
}
