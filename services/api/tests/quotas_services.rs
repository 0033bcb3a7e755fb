//! Quota sets, limits, services and availability zones.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

use common::{ADMIN, Harness};
use ember_common::model::Service;
use ember_common::repo::{QuotaRepo, ServiceRepo};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn sample(name: &str) -> Value {
    let path = format!("{}/tests/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn service(host: &str, binary: &str, zone: &str, heartbeat_age: i64) -> Service {
    let now = Utc::now();
    Service {
        id: uuid::Uuid::new_v4().to_string(),
        host: host.into(),
        binary: binary.into(),
        topic: binary.into(),
        availability_zone: zone.into(),
        disabled: false,
        disabled_reason: None,
        frozen: false,
        cluster_name: None,
        report_count: 1,
        version: "0.1.0".into(),
        rpc_current_version: None,
        heartbeat_at: now - Duration::seconds(heartbeat_age),
        created_at: now,
    }
}

#[tokio::test]
async fn quota_sets_show_usage_update_and_delete() {
    let h = Harness::sqlite().await;
    h.create_volume(ADMIN, json!({"size": 3})).await;
    h.repo
        .reserve("p1", &[("volumes".into(), 1), ("gigabytes".into(), 3)], Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    let a = h.get("/os-quota-sets/p1", ADMIN, "3.0").await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(
        (a.body["quota_set"]["id"].as_str(), a.body["quota_set"]["volumes"].as_i64()),
        (Some("p1"), Some(10))
    );
    let a = h.get("/os-quota-sets/p1?usage=true", ADMIN, "3.0").await;
    let mut expected = keys(&sample("quotas-show-usage.json")["quota_set"]);
    expected.remove("groups");
    assert_eq!(keys(&a.body["quota_set"]), expected, "Cinder's keys but groups, which Ember does not have");
    assert_eq!(a.body["quota_set"]["volumes"], json!({"limit": 10, "in_use": 0, "reserved": 1}));
    assert_eq!(h.get("/os-quota-sets/p1/defaults", ADMIN, "3.0").await.body["quota_set"]["gigabytes"], 1000);

    let put = |body: Value| h.call(Method::PUT, "/os-quota-sets/p1", ADMIN, "3.0", Some(body));
    let a = put(json!({"quota_set": {"volumes": 42, "snapshots": "7", "tenant_id": "p1"}})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!((a.body["quota_set"]["volumes"].as_i64(), a.body["quota_set"].get("id")), (Some(42), None));
    for bad in [
        json!({"quota_set": {"cores": 1}}),
        json!({"quota_set": {"volumes": -2}}),
        json!({"quota_set": {"volumes": "x"}}),
        json!({"quota_set": {"volumes": 1, "gigabytes": 2}}),
        json!({"quota": {}}),
    ] {
        put(bad).await.fault(400, "badRequest");
    }
    assert_eq!(
        h.repo.project_quotas("p1").await.unwrap().resources["volumes"].limit,
        42,
        "a refused update writes nothing"
    );
    assert_eq!(h.call(Method::DELETE, "/os-quota-sets/p1", ADMIN, "3.0", None).await.status, StatusCode::OK);
    assert_eq!(h.get("/os-quota-sets/p1", ADMIN, "3.0").await.body["quota_set"]["volumes"], 10);

    let a = h.get("/limits", ADMIN, "3.0").await;
    assert_eq!(keys(&a.body["limits"]["absolute"]), keys(&sample("limits-show.json")["limits"]["absolute"]));
    assert_eq!(a.body["limits"]["rate"], json!([]));
    assert_eq!(a.body["limits"]["absolute"]["maxTotalVolumes"], 10);
    h.cleanup().await;
}

#[tokio::test]
async fn members_read_only_their_own_quotas() {
    let h = Harness::with_tokens().await;
    assert_eq!(h.get("/os-quota-sets/p1", "alice", "3.0").await.status, StatusCode::OK);
    h.get("/os-quota-sets/p2", "alice", "3.0").await.fault(403, "forbidden");
    h.call(Method::PUT, "/os-quota-sets/p1", "alice", "3.0", Some(json!({"quota_set": {"volumes": 99}})))
        .await
        .fault(403, "forbidden");
    h.call(Method::DELETE, "/os-quota-sets/p1", "alice", "3.0", None).await.fault(403, "forbidden");
    h.get("/os-services", "alice", "3.0").await.fault(403, "forbidden");
    h.cleanup().await;
}

#[tokio::test]
async fn services_are_listed_enabled_and_disabled_and_zones_follow() {
    let h = Harness::sqlite().await;
    h.repo.register_service(&service("node1@file", "ember-volume", "nova", 0)).await.unwrap();
    h.repo.register_service(&service("node2@file", "ember-volume", "east", 3600)).await.unwrap();
    h.repo.register_service(&service("node1", "ember-scheduler", "nova", 0)).await.unwrap();
    let a = h.get("/os-services", ADMIN, "3.49").await;
    let services = a.body["services"].as_array().unwrap();
    assert_eq!(services.len(), 3);
    let sample = sample("services-list-v3.49.json");
    let volume = services.iter().find(|s| s["host"] == "node1@file").unwrap();
    assert_eq!(keys(volume), keys(&sample["services"][1]));
    assert_eq!(
        (volume["binary"].as_str(), volume["state"].as_str(), volume["status"].as_str()),
        (Some("cinder-volume"), Some("up"), Some("enabled"))
    );
    let scheduler = services.iter().find(|s| s["binary"] == "cinder-scheduler").unwrap();
    assert_eq!(keys(scheduler), keys(&sample["services"][0]));
    let down = services.iter().find(|s| s["host"] == "node2@file").unwrap();
    assert_eq!(down["state"], "down");
    let a = h.get("/os-services?binary=cinder-volume&host=node1@file", ADMIN, "3.0").await;
    assert_eq!(a.body["services"].as_array().unwrap().len(), 1);

    let body = json!({"host": "node2@file", "binary": "cinder-volume", "disabled_reason": "maintenance"});
    let a = h.call(Method::PUT, "/os-services/disable-log-reason", ADMIN, "3.0", Some(body)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(
        (a.body["status"].as_str(), a.body["disabled_reason"].as_str()),
        (Some("disabled"), Some("maintenance"))
    );
    let a = h.get("/os-availability-zone", ADMIN, "3.0").await;
    let mut zones: Vec<(String, bool)> = a.body["availabilityZoneInfo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| (z["zoneName"].as_str().unwrap().to_owned(), z["zoneState"]["available"].as_bool().unwrap()))
        .collect();
    zones.sort();
    assert_eq!(zones, [("east".to_owned(), false), ("nova".to_owned(), true)]);
    let a = h
        .call(
            Method::PUT,
            "/os-services/enable",
            ADMIN,
            "3.0",
            Some(json!({"host": "node2@file", "binary": "cinder-volume"})),
        )
        .await;
    assert_eq!((a.status, a.body["disabled"].as_bool()), (StatusCode::OK, Some(false)));
    for (action, body, status, name) in [
        ("enable", json!({"host": "nowhere", "binary": "cinder-volume"}), 404, "itemNotFound"),
        ("disable", json!({"host": "node1@file"}), 400, "badRequest"),
        ("disable-log-reason", json!({"host": "node1@file", "binary": "cinder-volume"}), 400, "badRequest"),
        ("reboot", json!({"host": "node1@file", "binary": "cinder-volume"}), 404, "itemNotFound"),
    ] {
        h.call(Method::PUT, &format!("/os-services/{action}"), ADMIN, "3.0", Some(body))
            .await
            .fault(status, name);
    }
    assert!(h.repo.list_services(&Default::default()).await.unwrap().iter().all(|s| !s.disabled));
    h.cleanup().await;
}
