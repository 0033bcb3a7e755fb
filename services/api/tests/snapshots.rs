//! `/snapshots` through the real application on a real database.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{ADMIN, Harness};
use ember_common::model::{ListOptions, SnapshotFilter, VolumeStatus};
use ember_common::repo::SnapshotRepo;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn sample(name: &str) -> Value {
    let path = format!("{}/tests/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn snapshot_count(h: &Harness) -> usize {
    h.repo.list_snapshots(&SnapshotFilter::default(), &ListOptions::default()).await.unwrap().len()
}

async fn available_volume(h: &Harness) -> String {
    let id = h.create_volume(ADMIN, json!({"size": 10})).await;
    h.set_status(&id, VolumeStatus::Available).await;
    id
}

#[tokio::test]
async fn create_show_list_update_and_delete() {
    let h = Harness::sqlite().await;
    let vid = available_volume(&h).await;
    let body = json!({"snapshot": {"volume_id": vid, "name": "snap-001", "description": "Daily backup", "metadata": {"key": "v3"}}});
    let a = h.post("/snapshots", ADMIN, "3.65", body).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    let s = &a.body["snapshot"];
    assert_eq!((s["status"].as_str(), s["size"].as_i64()), (Some("creating"), Some(10)));
    let id = s["id"].as_str().unwrap().to_owned();

    let a = h.get(&format!("/snapshots/{id}"), ADMIN, "3.65").await;
    assert_eq!(keys(&a.body["snapshot"]), keys(&sample("snapshot-show-v3.65.json")["snapshot"]));
    assert_eq!(a.body["snapshot"]["os-extended-snapshot-attributes:project_id"], "p1");
    let a = h.get("/snapshots", ADMIN, "3.0").await;
    assert_eq!(keys(&a.body["snapshots"][0]), keys(&sample("snapshots-list.json")["snapshots"][0]));
    let a = h.get(&format!("/snapshots/detail?volume_id={vid}"), ADMIN, "3.0").await;
    assert_eq!(a.body["snapshots"][0]["id"], id.as_str());
    let a = h.get("/snapshots?with_count=true&limit=5", ADMIN, "3.45").await;
    assert_eq!(a.body["count"], 1);
    let a = h.get("/snapshots?name=other", ADMIN, "3.0").await;
    assert_eq!(a.body["snapshots"], json!([]));

    let a = h
        .call(
            Method::PUT,
            &format!("/snapshots/{id}"),
            ADMIN,
            "3.0",
            Some(json!({"snapshot": {"name": "renamed"}})),
        )
        .await;
    assert_eq!((a.status, a.body["snapshot"]["name"].as_str()), (StatusCode::OK, Some("renamed")));
    assert_eq!(a.body["snapshot"]["description"], "Daily backup");
    // An update naming nothing to change, or something else, is refused and changes nothing.
    let before = h.get(&format!("/snapshots/{id}"), ADMIN, "3.0").await.body;
    for body in [json!({"snapshot": {}}), json!({}), json!({"snapshot": {"name": "x"}, "extra": 1})] {
        h.call(Method::PUT, &format!("/snapshots/{id}"), ADMIN, "3.0", Some(body))
            .await
            .fault(400, "badRequest");
    }
    assert_eq!(h.get(&format!("/snapshots/{id}"), ADMIN, "3.0").await.body, before);
    // An admin's list of every project honours a project filter, at 3.0 as at 3.71.
    for mv in ["3.0", "3.71"] {
        let a = h.get("/snapshots?all_tenants=1&project_id=nobody", ADMIN, mv).await;
        assert_eq!((a.status, a.body["snapshots"].clone()), (StatusCode::OK, json!([])), "{mv}");
        let a = h.get("/snapshots?all_tenants=1&project_id=p1", ADMIN, mv).await;
        assert_eq!(a.body["snapshots"].as_array().map(Vec::len), Some(1), "{mv}: {:?}", a.body);
    }

    h.call(Method::DELETE, &format!("/snapshots/{id}"), ADMIN, "3.0", None).await.fault(400, "badRequest");
    let a = h
        .post(
            &format!("/snapshots/{id}/action"),
            ADMIN,
            "3.0",
            json!({"os-reset_status": {"status": "available"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    let a = h.call(Method::DELETE, &format!("/snapshots/{id}"), ADMIN, "3.0", None).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    h.get(&format!("/snapshots/{id}"), ADMIN, "3.0").await.fault(404, "itemNotFound");
    h.cleanup().await;
}

#[tokio::test]
async fn bad_creates_are_refused_and_change_nothing() {
    let h = Harness::sqlite().await;
    let vid = available_volume(&h).await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("3.0", json!({"nothing": {}}), 400, "badRequest"),
        ("3.0", json!({"snapshot": {}}), 400, "badRequest"),
        ("3.0", json!({"snapshot": {"volume_id": 5}}), 400, "badRequest"),
        ("3.0", json!({"snapshot": {"volume_id": vid, "force": "perhaps"}}), 400, "badRequest"),
        ("3.0", json!({"snapshot": {"volume_id": vid, "metadata": {"a": []}}}), 400, "badRequest"),
        ("3.0", json!({"snapshot": {"volume_id": vid, "colour": "red"}}), 400, "badRequest"),
        ("3.66", json!({"snapshot": {"volume_id": vid, "force": false}}), 400, "badRequest"),
        ("3.0", json!({"snapshot": {"volume_id": uuid::Uuid::new_v4().to_string()}}), 404, "itemNotFound"),
    ];
    for (mv, body, status, name) in cases {
        let message = h.post("/snapshots", ADMIN, mv, body.clone()).await.fault(status, name);
        assert!(!message.is_empty(), "{body}");
    }
    h.set_status(&vid, VolumeStatus::InUse).await;
    let in_use = json!({"snapshot": {"volume_id": vid}});
    h.post("/snapshots", ADMIN, "3.0", in_use.clone()).await.fault(400, "badRequest");
    assert_eq!(snapshot_count(&h).await, 0);
    let a = h.post("/snapshots", ADMIN, "3.66", in_use).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "in-use volumes are snapshotted from 3.66: {:?}", a.body);
    assert_eq!(snapshot_count(&h).await, 1);
    h.cleanup().await;
}

#[tokio::test]
async fn metadata_and_admin_actions() {
    let h = Harness::sqlite().await;
    let vid = available_volume(&h).await;
    let a = h.post("/snapshots", ADMIN, "3.0", json!({"snapshot": {"volume_id": vid}})).await;
    let id = a.body["snapshot"]["id"].as_str().unwrap().to_owned();
    let base = format!("/snapshots/{id}/metadata");
    let a = h.post(&base, ADMIN, "3.0", json!({"metadata": {"a": "1", "b": "2"}})).await;
    assert_eq!(a.body["metadata"], json!({"a": "1", "b": "2"}));
    let a = h.call(Method::PUT, &format!("{base}/a"), ADMIN, "3.0", Some(json!({"meta": {"a": "9"}}))).await;
    assert_eq!(a.body, json!({"meta": {"a": "9"}}));
    h.call(Method::PUT, &format!("{base}/a"), ADMIN, "3.0", Some(json!({"meta": {"b": "9"}})))
        .await
        .fault(400, "badRequest");
    let a = h.call(Method::DELETE, &format!("{base}/b"), ADMIN, "3.0", None).await;
    assert_eq!(a.status, StatusCode::OK);
    h.get(&format!("{base}/b"), ADMIN, "3.0").await.fault(404, "itemNotFound");
    assert_eq!(h.get(&base, ADMIN, "3.0").await.body, json!({"metadata": {"a": "9"}}));
    let a = h.call(Method::PUT, &base, ADMIN, "3.0", Some(json!({"metadata": {"z": "26"}}))).await;
    assert_eq!(a.body, json!({"metadata": {"z": "26"}}));

    let action = format!("/snapshots/{id}/action");
    for bad in [
        json!({"os-reset_status": {"status": "sideways"}}),
        json!({"os-reset_status": {}}),
        json!({"os-unknown": {}}),
    ] {
        h.post(&action, ADMIN, "3.0", bad).await.fault(400, "badRequest");
    }
    let a = h.post(&action, ADMIN, "3.0", json!({"os-reset_status": {"status": "error"}})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(h.get(&format!("/snapshots/{id}"), ADMIN, "3.0").await.body["snapshot"]["status"], "error");
    let a = h.post(&action, ADMIN, "3.0", json!({"os-force_delete": {}})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(snapshot_count(&h).await, 0);
    h.cleanup().await;
}

#[tokio::test]
async fn snapshot_pages_follow_next_links_on_every_database() {
    for h in Harness::all().await {
        let vid = available_volume(&h).await;
        let mut ids = BTreeSet::new();
        for name in ["s1", "s2", "s3"] {
            let a = h
                .post("/snapshots", ADMIN, "3.0", json!({"snapshot": {"volume_id": vid, "name": name}}))
                .await;
            ids.insert(a.body["snapshot"]["id"].as_str().unwrap().to_owned());
        }
        let mut seen = BTreeSet::new();
        let mut path = "/snapshots/detail?limit=2".to_owned();
        for _ in 0..5 {
            let a = h.get(&path, ADMIN, "3.0").await;
            assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
            for s in a.body["snapshots"].as_array().unwrap() {
                assert!(seen.insert(s["id"].as_str().unwrap().to_owned()));
            }
            let Some(next) = a.body["snapshots_links"][0]["href"].as_str() else { break };
            path = next.strip_prefix("http://ember.test:8776/v3/p1").unwrap().to_owned();
        }
        assert_eq!(seen, ids);
        let a = h.get("/snapshots?sort=name:asc", ADMIN, "3.0").await;
        let names: Vec<&str> =
            a.body["snapshots"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["s1", "s2", "s3"]);
        h.get(&format!("/snapshots?marker={}", uuid::Uuid::new_v4()), ADMIN, "3.0")
            .await
            .fault(404, "itemNotFound");
        h.get("/snapshots?sort=bootable", ADMIN, "3.0").await.fault(400, "badRequest");
        h.cleanup().await;
    }
}
