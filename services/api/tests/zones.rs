//! A volume asked in a zone no volume service is in is refused (Cinder's
//! `InvalidAvailabilityZone`) and changes nothing, or lands in the default zone with
//! `allow_availability_zone_fallback`.

mod common;

use chrono::Utc;
use serde_json::json;

use common::{ADMIN, Harness};
use ember_api::Settings;
use ember_common::model::Service;
use ember_common::repo::ServiceRepo;

fn volume_service(zone: &str) -> Service {
    let now = Utc::now();
    Service {
        id: uuid::Uuid::new_v4().to_string(),
        host: format!("node-{zone}@file"),
        binary: "ember-volume".into(),
        topic: "ember-volume".into(),
        availability_zone: zone.into(),
        disabled: false,
        disabled_reason: None,
        frozen: false,
        cluster_name: None,
        report_count: 1,
        version: "0.1.0".into(),
        rpc_current_version: None,
        heartbeat_at: now,
        created_at: now,
    }
}

#[tokio::test]
async fn unknown_zones_are_refused_before_anything_changes() {
    let h = Harness::sqlite().await;
    h.repo.register_service(&volume_service("nova")).await.unwrap();
    for zone in ["../../etc", "east", ""] {
        let body = json!({"volume": {"size": 1, "availability_zone": zone}});
        let a = h.post("/volumes", ADMIN, "3.0", body).await;
        let message = a.fault(400, "badRequest");
        if !zone.is_empty() {
            assert_eq!(message, format!("Availability zone '{zone}' is invalid."));
        }
    }
    assert!(h.volume_rows().await.is_empty(), "a refused create left a volume");
    let a = h.get("/os-quota-sets/p1?usage=true", ADMIN, "3.0").await;
    assert_eq!(a.body["quota_set"]["volumes"]["reserved"], 0);
    assert_eq!(a.body["quota_set"]["volumes"]["in_use"], 0);
    let a =
        h.post("/volumes", ADMIN, "3.0", json!({"volume": {"size": 1, "availability_zone": "nova"}})).await;
    assert_eq!(a.status.as_u16(), 202, "{:?}", a.body);
}

#[tokio::test]
async fn with_fallback_an_unknown_zone_becomes_the_default() {
    let settings = Settings { allow_availability_zone_fallback: true, ..Settings::default() };
    let h = Harness::with_settings(settings).await;
    h.repo.register_service(&volume_service("nova")).await.unwrap();
    let a =
        h.post("/volumes", ADMIN, "3.0", json!({"volume": {"size": 1, "availability_zone": "east"}})).await;
    assert_eq!(a.status.as_u16(), 202, "{:?}", a.body);
    assert_eq!(a.body["volume"]["availability_zone"], "nova");
}
