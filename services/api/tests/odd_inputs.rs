//! Every field of every body given every odd JSON value: the answer is never a 5xx, and
//! every refusal is a Cinder fault body.

mod common;

use axum::http::Method;
use serde_json::{Value, json};

use common::{ADMIN, Harness};
use ember_common::model::VolumeStatus;

fn odd_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(u64::MAX),
        json!(""),
        json!("1"),
        json!("x"),
        json!("\u{0}"),
        json!("é".repeat(300)),
        json!([]),
        json!([1]),
        json!({}),
        json!({"a": {"b": 1}}),
    ]
}

fn assert_answer(a: &common::Answer, what: &str) {
    assert!(a.status.as_u16() < 500, "{what}: {} {:?}", a.status, a.body);
    if a.status.as_u16() >= 400 {
        let (name, inner) = a.body.as_object().and_then(|o| o.iter().next()).expect("a fault body");
        assert_eq!(inner["code"], a.status.as_u16(), "{what}: {name}");
        assert!(inner["message"].is_string(), "{what}");
    }
}

#[tokio::test]
async fn no_body_field_makes_the_server_fail() {
    let h = Harness::sqlite().await;
    let vid = h.create_volume(ADMIN, json!({"size": 1})).await;
    h.set_status(&vid, VolumeStatus::Available).await;
    let attach = h.post("/attachments", ADMIN, "3.27", json!({"attachment": {"volume_uuid": vid}})).await;
    let aid = attach.body["attachment"]["id"].as_str().expect("an attachment").to_owned();
    let targets: Vec<(Method, String, &str, Vec<&str>)> = vec![
        (
            Method::POST,
            "/volumes".into(),
            "volume",
            vec![
                "size",
                "name",
                "description",
                "volume_type",
                "availability_zone",
                "snapshot_id",
                "source_volid",
                "backup_id",
                "metadata",
                "multiattach",
            ],
        ),
        (Method::PUT, format!("/volumes/{vid}"), "volume", vec!["name", "description", "metadata"]),
        (Method::POST, "/snapshots".into(), "snapshot", vec!["volume_id", "name", "force", "metadata"]),
        (Method::POST, format!("/volumes/{vid}/action"), "os-extend", vec!["new_size"]),
        (
            Method::POST,
            format!("/volumes/{vid}/action"),
            "os-reset_status",
            vec!["status", "attach_status", "migration_status"],
        ),
        (Method::POST, format!("/volumes/{vid}/action"), "os-set_bootable", vec!["bootable"]),
        (Method::POST, format!("/volumes/{vid}/action"), "os-update_readonly_flag", vec!["readonly"]),
        (
            Method::POST,
            "/types".into(),
            "volume_type",
            vec!["name", "description", "os-volume-type-access:is_public", "extra_specs"],
        ),
        (Method::PUT, "/os-quota-sets/p1".into(), "quota_set", vec!["volumes", "gigabytes", "volumes_gold"]),
        (
            Method::POST,
            "/attachments".into(),
            "attachment",
            vec!["volume_uuid", "instance_uuid", "connector", "mode"],
        ),
        (Method::PUT, format!("/attachments/{aid}"), "attachment", vec!["connector"]),
        (Method::POST, format!("/attachments/{aid}/action"), "os-complete", vec![]),
        (
            Method::POST,
            format!("/volumes/{vid}/action"),
            "os-attach",
            vec!["instance_uuid", "host_name", "mountpoint", "mode"],
        ),
        (Method::POST, format!("/volumes/{vid}/action"), "os-detach", vec!["attachment_id"]),
        (
            Method::POST,
            format!("/volumes/{vid}/action"),
            "os-force_detach",
            vec!["attachment_id", "connector"],
        ),
        (Method::POST, format!("/volumes/{vid}/action"), "os-initialize_connection", vec!["connector"]),
        (Method::POST, format!("/volumes/{vid}/action"), "os-terminate_connection", vec!["connector"]),
        (Method::POST, format!("/volumes/{vid}/action"), "os-reserve", vec![]),
        (Method::POST, format!("/volumes/{vid}/action"), "os-unreserve", vec![]),
        (Method::POST, format!("/volumes/{vid}/action"), "os-begin_detaching", vec![]),
        (Method::POST, format!("/volumes/{vid}/action"), "os-roll_detaching", vec![]),
    ];
    for (method, path, section, fields) in targets {
        for value in odd_values() {
            let whole =
                h.call(method.clone(), &path, ADMIN, "3.71", Some(json!({ section: value.clone() }))).await;
            assert_answer(&whole, &format!("{method} {path} {section}={value}"));
            for field in &fields {
                let body = json!({ section: { *field: value.clone() } });
                let a = h.call(method.clone(), &path, ADMIN, "3.71", Some(body)).await;
                assert_answer(&a, &format!("{method} {path} {section}.{field}={value}"));
            }
        }
    }
    for query in [
        "limit=1e9",
        "limit=99999999999999999999",
        "offset=-0",
        "marker=",
        "sort=:",
        "sort=,",
        "sort_dir=up",
        "with_count=2",
        "all_tenants=maybe",
        "metadata=%7B",
        "name~=x",
    ] {
        let a = h.get(&format!("/volumes/detail?{query}"), ADMIN, "3.71").await;
        assert_answer(&a, query);
        let a = h.get(&format!("/snapshots/detail?{query}"), ADMIN, "3.71").await;
        assert_answer(&a, query);
        let a = h.get(&format!("/attachments/detail?{query}"), ADMIN, "3.71").await;
        assert_answer(&a, query);
    }
    h.cleanup().await;
}
