//! `/volumes` through the real application on a real database.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{ADMIN, Harness};
use ember_common::model::VolumeStatus;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn sample(name: &str) -> Value {
    let path = format!("{}/tests/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn create_show_list_and_delete() {
    let h = Harness::sqlite().await;
    let body = json!({"volume": {"size": 1, "name": "v1", "description": "d", "metadata": {"k": "v"}}});
    let a = h.post("/volumes", ADMIN, "3.0", body).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    let v = &a.body["volume"];
    assert_eq!(keys(v), keys(&sample("volume-create.json")["volume"]));
    assert_eq!(
        (v["status"].as_str(), v["size"].as_i64(), v["bootable"].as_str()),
        (Some("creating"), Some(1), Some("false"))
    );
    assert_eq!(v["volume_type"], "__DEFAULT__");
    assert_eq!(v["metadata"], json!({"k": "v"}));
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["links"][0]["href"], format!("http://ember.test:8776/v3/p1/volumes/{id}"));
    assert_eq!(v["links"][1]["href"], format!("http://ember.test:8776/p1/volumes/{id}"));
    let created = v["created_at"].as_str().unwrap();
    assert!(created.len() == 26 && created.as_bytes()[19] == b'.', "{created}");

    let a = h.get(&format!("/volumes/{id}"), ADMIN, "3.0").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["volume"]["os-vol-tenant-attr:tenant_id"], "p1");
    assert_eq!(a.body["volume"]["os-vol-host-attr:host"], Value::Null);

    let a = h.get("/volumes", ADMIN, "3.0").await;
    assert_eq!(a.body["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(keys(&a.body["volumes"][0]), ["id", "links", "name"].map(String::from).into());
    let a = h.get("/volumes/detail", ADMIN, "3.0").await;
    assert_eq!(a.body["volumes"][0]["id"], id.as_str());
    assert!(a.body.get("volumes_links").is_none());

    h.set_status(&id, VolumeStatus::Available).await;
    let a = h.call(Method::DELETE, &format!("/volumes/{id}"), ADMIN, "3.0", None).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    h.get(&format!("/volumes/{id}"), ADMIN, "3.0").await.fault(404, "itemNotFound");
    h.call(Method::DELETE, &format!("/volumes/{id}"), ADMIN, "3.0", None).await.fault(404, "itemNotFound");
    h.cleanup().await;
}

#[tokio::test]
async fn views_have_the_keys_of_cinders_samples_at_each_microversion() {
    let h = Harness::sqlite().await;
    let id = h.create_volume(ADMIN, json!({"size": 10})).await;
    let a = h.get(&format!("/volumes/{id}"), ADMIN, "3.69").await;
    assert_eq!(keys(&a.body["volume"]), keys(&sample("volume-show-v3.69.json")["volume"]));
    assert_eq!(a.body["volume"]["shared_targets"], Value::Null);
    assert_eq!(a.body["volume"]["volume_type_id"], ember_common::model::DEFAULT_VOLUME_TYPE_ID);
    let gated = [
        (13, "group_id"),
        (21, "provider_id"),
        (48, "service_uuid"),
        (61, "cluster_name"),
        (63, "volume_type_id"),
        (65, "consumes_quota"),
    ];
    for (minor, key) in gated {
        let before = h.get(&format!("/volumes/{id}"), ADMIN, &format!("3.{}", minor - 1)).await;
        let at = h.get(&format!("/volumes/{id}"), ADMIN, &format!("3.{minor}")).await;
        assert!(before.body["volume"].get(key).is_none(), "{key} before 3.{minor}");
        assert!(at.body["volume"].get(key).is_some(), "{key} at 3.{minor}");
    }
    let a = h.get(&format!("/volumes/{id}"), ADMIN, "3.48").await;
    assert_eq!(a.body["volume"]["shared_targets"], true, "null is shown as true before 3.69");
    h.cleanup().await;
}

#[tokio::test]
async fn bad_creates_are_refused_and_change_nothing() {
    let h = Harness::sqlite().await;
    let cases: Vec<(&str, Value)> = vec![
        ("3.0", json!({"volume": {"size": 0}})),
        ("3.0", json!({"volume": {"size": -1}})),
        ("3.0", json!({"volume": {"size": "abc"}})),
        ("3.0", json!({"volume": {"size": 1.5}})),
        ("3.0", json!({"volume": {"size": 2147483648_i64}})),
        ("3.0", json!({"volume": {"size": true}})),
        ("3.0", json!({"volume": {}})),
        ("3.0", json!({"nothing": {}})),
        ("3.0", json!({"volume": "x"})),
        ("3.0", json!([1, 2])),
        ("3.0", json!({"volume": {"size": 1, "multiattach": true}})),
        ("3.0", json!({"volume": {"size": 1, "name": 7}})),
        ("3.0", json!({"volume": {"size": 1, "name": "n".repeat(256)}})),
        ("3.0", json!({"volume": {"size": 1, "metadata": {"k": 1}}})),
        ("3.0", json!({"volume": {"size": 1, "metadata": "k=v"}})),
        ("3.0", json!({"volume": {"size": 1, "snapshot_id": "nope"}})),
        ("3.0", json!({"volume": {"size": 1, "imageRef": "e0b1a5f6-8d3b-4a3c-9f55-6c0a3b3b7a11"}})),
        ("3.53", json!({"volume": {"size": 1, "colour": "red"}})),
    ];
    for (mv, body) in cases {
        let a = h.post("/volumes", ADMIN, mv, body.clone()).await;
        let message = a.fault(400, "badRequest");
        assert!(!message.is_empty(), "{body}");
    }
    let a = h.post("/volumes", ADMIN, "3.0", json!({"volume": {"size": 1, "colour": "red"}})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "unknown keys are ignored before 3.53");
    assert_eq!(h.volume_rows().await.len(), 1);
    let unknown = json!({"volume": {"size": 1, "snapshot_id": uuid::Uuid::new_v4().to_string()}});
    h.post("/volumes", ADMIN, "3.0", unknown).await.fault(404, "itemNotFound");
    let a = h.post("/volumes", ADMIN, "3.0", json!({"volume": {"size": "3"}})).await;
    assert_eq!(a.body["volume"]["size"], 3, "a digit string is a size");
    assert_eq!(h.volume_rows().await.len(), 2);
    h.cleanup().await;
}

#[tokio::test]
async fn pages_follow_next_links_and_sort_on_every_database() {
    for h in Harness::all().await {
        let mut ids = BTreeSet::new();
        for name in ["c", "a", "e", "b", "d"] {
            ids.insert(h.create_volume(ADMIN, json!({"size": 1, "name": name})).await);
        }
        let mut seen = BTreeSet::new();
        let mut path = "/volumes?limit=2&sort=name:asc".to_owned();
        let mut names = Vec::new();
        for _ in 0..10 {
            let a = h.get(&path, ADMIN, "3.0").await;
            assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
            for v in a.body["volumes"].as_array().unwrap() {
                assert!(seen.insert(v["id"].as_str().unwrap().to_owned()));
                names.push(v["name"].as_str().unwrap().to_owned());
            }
            let Some(next) = a.body["volumes_links"][0]["href"].as_str() else { break };
            path = next.strip_prefix("http://ember.test:8776/v3/p1").unwrap().to_owned();
            assert!(path.contains("limit=2") && path.contains("sort=name%3Aasc"), "{path}");
        }
        assert_eq!(seen, ids);
        assert_eq!(names, ["a", "b", "c", "d", "e"]);

        let a = h.get("/volumes/detail?sort=name:desc&limit=1&offset=1", ADMIN, "3.0").await;
        assert_eq!(a.body["volumes"][0]["name"], "d");
        let a = h.get("/volumes?with_count=true&limit=1", ADMIN, "3.45").await;
        assert_eq!((a.body["count"].as_i64(), a.body["volumes"].as_array().unwrap().len()), (Some(5), 1));
        let a = h.get("/volumes?with_count=true", ADMIN, "3.44").await;
        assert!(a.body.get("count").is_none());
        for bad in [
            "limit=abc",
            "limit=-1",
            "offset=-1",
            "sort=colour:asc",
            "sort=name:sideways",
            "sort=name&sort_key=size",
        ] {
            h.get(&format!("/volumes?{bad}"), ADMIN, "3.0").await.fault(400, "badRequest");
        }
        let unknown = uuid::Uuid::new_v4();
        h.get(&format!("/volumes?marker={unknown}"), ADMIN, "3.0").await.fault(404, "itemNotFound");
        h.cleanup().await;
    }
}

#[tokio::test]
async fn lists_filter_by_name_status_metadata_and_tenant() {
    for h in Harness::all().await {
        filters_on(&h).await;
        h.cleanup().await;
    }
}

async fn filters_on(h: &Harness) {
    let a = h.create_volume(ADMIN, json!({"size": 1, "name": "alpha", "metadata": {"tier": "gold"}})).await;
    h.create_volume(ADMIN, json!({"size": 1, "name": "beta"})).await;
    let other = h.create_volume("u:p2", json!({"size": 1, "name": "gamma"})).await;
    h.set_status(&a, VolumeStatus::Available).await;
    let names = |a: &common::Answer| -> Vec<String> {
        let mut n: Vec<String> = a.body["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&h.get("/volumes?name=alpha", ADMIN, "3.0").await), ["alpha"]);
    assert_eq!(names(&h.get("/volumes?status=available", ADMIN, "3.0").await), ["alpha"]);
    assert_eq!(names(&h.get("/volumes?status=nonsense", ADMIN, "3.0").await), Vec::<String>::new());
    assert_eq!(
        names(&h.get("/volumes?metadata=%7B%27tier%27%3A+%27gold%27%7D", ADMIN, "3.0").await),
        ["alpha"]
    );
    assert_eq!(names(&h.get("/volumes?bootable=false", ADMIN, "3.0").await), ["alpha", "beta"]);
    assert_eq!(names(&h.get("/volumes?all_tenants=1", ADMIN, "3.0").await), ["alpha", "beta", "gamma"]);
    assert_eq!(names(&h.get("/volumes?colour=red", ADMIN, "3.30").await), ["alpha", "beta"]);
    h.get("/volumes?colour=red", ADMIN, "3.31").await.fault(400, "badRequest");
    h.get("/volumes?bootable=maybe", ADMIN, "3.0").await.fault(400, "badRequest");
    let b = h.get("/volumes", "u:p2", "3.0").await;
    assert_eq!(names(&b), ["gamma"]);
    assert_eq!(h.get(&format!("/volumes/{other}"), "u:p2", "3.0").await.status, StatusCode::OK);
}

#[tokio::test]
async fn extend_needs_a_larger_size_and_an_available_volume() {
    let h = Harness::sqlite().await;
    let id = h.create_volume(ADMIN, json!({"size": 2})).await;
    let path = format!("/volumes/{id}/action");
    h.post(&path, ADMIN, "3.0", json!({"os-extend": {"new_size": 3}})).await.fault(400, "badRequest");
    h.set_status(&id, VolumeStatus::Available).await;
    for bad in [
        json!({"os-extend": {"new_size": 2}}),
        json!({"os-extend": {"new_size": 1}}),
        json!({"os-extend": {"new_size": "x"}}),
        json!({"os-extend": {}}),
        json!({"os-extend": {"new_size": 3}, "os-reserve": {}}),
        json!({"os-colour": {}}),
    ] {
        h.post(&path, ADMIN, "3.0", bad).await.fault(400, "badRequest");
    }
    assert_eq!(h.volume_rows().await[0].size, 2);
    let a = h.post(&path, ADMIN, "3.0", json!({"os-extend": {"new_size": "3"}})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    assert_eq!(h.volume_rows().await[0].size, 3);
    h.set_status(&id, VolumeStatus::InUse).await;
    h.post(&path, ADMIN, "3.41", json!({"os-extend": {"new_size": 4}})).await.fault(400, "badRequest");
    let a = h.post(&path, ADMIN, "3.42", json!({"os-extend": {"new_size": 4}})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "in-use volumes extend from 3.42");
    h.post(
        &format!("/volumes/{}/action", uuid::Uuid::new_v4()),
        ADMIN,
        "3.0",
        json!({"os-extend": {"new_size": 9}}),
    )
    .await
    .fault(404, "itemNotFound");
    h.cleanup().await;
}

/// Replaces what differs between two deployments (ids, times, hosts in links, users) so
/// whole views can be compared with Cinder's samples.
fn redact(view: &mut Value) {
    let Some(obj) = view.as_object_mut() else { return };
    for key in ["id", "created_at", "updated_at", "user_id", "os-vol-tenant-attr:tenant_id"] {
        if obj.get(key).is_some_and(|v| !v.is_null()) {
            obj.insert(key.into(), json!("<redacted>"));
        }
    }
    if let Some(links) = obj.get_mut("links").and_then(Value::as_array_mut) {
        for link in links {
            link["href"] = json!("<redacted>");
        }
    }
}

#[tokio::test]
async fn whole_views_equal_cinders_samples_once_ids_and_times_are_redacted() {
    let h = Harness::sqlite().await;
    let a = h.post("/volumes", ADMIN, "3.0", json!({"volume": {"size": 10}})).await;
    let id = a.body["volume"]["id"].as_str().unwrap().to_owned();
    let (mut ours, mut theirs) = (a.body["volume"].clone(), sample("volume-create.json")["volume"].clone());
    redact(&mut ours);
    redact(&mut theirs);
    assert_eq!(ours, theirs);
    let mut ours = h.get(&format!("/volumes/{id}"), ADMIN, "3.69").await.body["volume"].clone();
    let mut theirs = sample("volume-show-v3.69.json")["volume"].clone();
    redact(&mut ours);
    redact(&mut theirs);
    assert_eq!(ours, theirs);
    h.cleanup().await;
}

#[tokio::test]
async fn summary_counts_sizes_and_metadata_from_3_12() {
    let h = Harness::sqlite().await;
    h.create_volume(ADMIN, json!({"size": 2, "metadata": {"a": "1"}})).await;
    h.create_volume(ADMIN, json!({"size": 3, "metadata": {"a": "2", "b": "1"}})).await;
    h.get("/volumes/summary", ADMIN, "3.11").await.fault(404, "itemNotFound");
    let a = h.get("/volumes/summary", ADMIN, "3.12").await;
    assert_eq!(a.body, json!({"volume-summary": {"total_count": 2, "total_size": 5}}));
    let a = h.get("/volumes/summary", ADMIN, "3.36").await;
    assert_eq!(a.body["volume-summary"]["metadata"], json!({"a": ["1", "2"], "b": ["1"]}));
    h.cleanup().await;
}

#[tokio::test]
async fn wrong_methods_and_bodies_are_faults_with_request_ids() {
    let h = Harness::sqlite().await;
    let a = h.call(Method::PATCH, "/volumes", ADMIN, "3.0", Some(json!({}))).await;
    a.fault(405, "badMethod");
    assert!(a.headers["x-openstack-request-id"].to_str().unwrap().starts_with("req-"));
    assert_eq!(a.headers["openstack-api-version"], "volume 3.0");
    let a = h.call(Method::POST, "/volumes", ADMIN, "3.0", None).await;
    a.fault(400, "badRequest");
    h.get("/volumes/%ZZ", ADMIN, "3.0").await.fault(404, "itemNotFound");
    assert!(h.volume_rows().await.is_empty());
    h.cleanup().await;
}

#[tokio::test]
async fn project_less_urls_are_served_from_3_67() {
    let h = Harness::sqlite().await;
    let a =
        h.call_url(Method::POST, "/v3/volumes", ADMIN, "3.67", Some(json!({"volume": {"size": 1}}))).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    let id = a.body["volume"]["id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["volume"]["links"][0]["href"], format!("http://ember.test:8776/v3/volumes/{id}"));
    assert_eq!(a.body["volume"]["links"][1]["href"], format!("http://ember.test:8776/volumes/{id}"));
    let a = h.call_url(Method::GET, "/v3/volumes?limit=1", ADMIN, "3.67", None).await;
    assert_eq!(a.body["volumes"][0]["id"], id.as_str());
    assert!(
        a.body["volumes_links"][0]["href"]
            .as_str()
            .unwrap()
            .starts_with("http://ember.test:8776/v3/volumes?")
    );
    assert_eq!(
        h.call_url(Method::GET, &format!("/v3/volumes/{id}"), ADMIN, "3.67", None).await.status,
        StatusCode::OK
    );
    let other = h.call_url(Method::GET, "/v3/volumes", "u:p2", "3.67", None).await;
    assert_eq!(other.body["volumes"], json!([]), "the token's project decides");
    let old = h.call_url(Method::GET, "/v3/volumes/detail", ADMIN, "3.66", None).await;
    old.fault(400, "badRequest");
    assert_eq!(h.get("/volumes", ADMIN, "3.67").await.body["volumes"][0]["id"], id.as_str());
    h.cleanup().await;
}
