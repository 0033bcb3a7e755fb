//! Volume update, metadata, admin actions and project isolation.

mod common;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{ADMIN, Harness};
use ember_common::model::{AttachStatus, VolumeAttachment, VolumeStatus};
use ember_common::repo::{AttachmentRepo, VolumeRepo};

#[tokio::test]
async fn update_renames_and_replaces_metadata_but_not_in_maintenance() {
    let h = Harness::sqlite().await;
    let id = h.create_volume(ADMIN, json!({"size": 1, "name": "a", "metadata": {"old": "1"}})).await;
    let path = format!("/volumes/{id}");
    let body = json!({"volume": {"name": "b", "description": "d", "metadata": {"new": "2"}}});
    let a = h.call(Method::PUT, &path, ADMIN, "3.0", Some(body)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(
        (a.body["volume"]["name"].as_str(), a.body["volume"]["description"].as_str()),
        (Some("b"), Some("d"))
    );
    assert_eq!(a.body["volume"]["metadata"], json!({"new": "2"}));
    let a = h.call(Method::PUT, &path, ADMIN, "3.0", Some(json!({"volume": {"display_name": "c"}}))).await;
    assert_eq!(a.body["volume"]["name"], "c");
    assert_eq!(a.body["volume"]["description"], "d");
    let a = h.call(Method::PUT, &path, ADMIN, "3.0", Some(json!({"volume": {}}))).await;
    assert_eq!(a.status, StatusCode::OK, "an empty update is fine before 3.53");
    for (mv, body) in [
        ("3.53", json!({"volume": {}})),
        ("3.53", json!({"volume": {"size": 5}})),
        ("3.0", json!({"volume": {"name": 1}})),
        ("3.0", json!({})),
    ] {
        h.call(Method::PUT, &path, ADMIN, mv, Some(body)).await.fault(400, "badRequest");
    }
    h.set_status(&id, VolumeStatus::Maintenance).await;
    h.call(Method::PUT, &path, ADMIN, "3.0", Some(json!({"volume": {"name": "x"}})))
        .await
        .fault(400, "badRequest");
    assert_eq!(h.volume_rows().await[0].name.as_deref(), Some("c"));
    h.cleanup().await;
}

#[tokio::test]
async fn metadata_items_can_be_read_set_and_removed() {
    let h = Harness::sqlite().await;
    let id = h.create_volume(ADMIN, json!({"size": 1, "metadata": {"a": "1"}})).await;
    let base = format!("/volumes/{id}/metadata");
    let a = h.post(&base, ADMIN, "3.0", json!({"metadata": {"b": "2"}})).await;
    assert_eq!(a.body, json!({"metadata": {"a": "1", "b": "2"}}));
    assert_eq!(h.get(&format!("{base}/b"), ADMIN, "3.0").await.body, json!({"meta": {"b": "2"}}));
    let a = h.call(Method::PUT, &format!("{base}/b"), ADMIN, "3.0", Some(json!({"meta": {"b": "3"}}))).await;
    assert_eq!(a.body, json!({"meta": {"b": "3"}}));
    for bad in
        [json!({"meta": {"c": "3"}}), json!({"meta": {"b": "3", "c": "4"}}), json!({"meta": "b"}), json!({})]
    {
        h.call(Method::PUT, &format!("{base}/b"), ADMIN, "3.0", Some(bad)).await.fault(400, "badRequest");
    }
    assert_eq!(h.call(Method::DELETE, &format!("{base}/a"), ADMIN, "3.0", None).await.status, StatusCode::OK);
    h.call(Method::DELETE, &format!("{base}/a"), ADMIN, "3.0", None).await.fault(404, "itemNotFound");
    let a = h.call(Method::PUT, &base, ADMIN, "3.0", Some(json!({"metadata": {"z": "9"}}))).await;
    assert_eq!(a.body, json!({"metadata": {"z": "9"}}));
    assert_eq!(h.get(&base, ADMIN, "3.0").await.body, json!({"metadata": {"z": "9"}}));
    h.post(&base, ADMIN, "3.0", json!({"metadata": {"k": 5}})).await.fault(400, "badRequest");
    h.cleanup().await;
}

#[tokio::test]
async fn reset_status_is_checked_then_written_directly() {
    let h = Harness::sqlite().await;
    let id = h.create_volume(ADMIN, json!({"size": 1})).await;
    let path = format!("/volumes/{id}/action");
    let bad: Vec<Value> = vec![
        json!({"os-reset_status": {}}),
        json!({"os-reset_status": {"status": "deleting"}}),
        json!({"os-reset_status": {"status": "sideways"}}),
        json!({"os-reset_status": {"status": "in-use"}}),
        json!({"os-reset_status": {"attach_status": "reserved"}}),
        json!({"os-reset_status": {"migration_status": "flying"}}),
        json!({"os-reset_status": {"status": 3}}),
    ];
    for body in bad {
        h.post(&path, ADMIN, "3.0", body.clone()).await.fault(400, "badRequest");
        assert_eq!(h.volume_rows().await[0].status, VolumeStatus::Creating, "{body}");
    }
    let body = json!({"os-reset_status": {"status": "error", "migration_status": "none"}});
    assert_eq!(h.post(&path, ADMIN, "3.0", body).await.status, StatusCode::ACCEPTED);
    let v = &h.volume_rows().await[0];
    assert_eq!((v.status, v.migration_status.as_deref()), (VolumeStatus::Error, None));

    let attachment = VolumeAttachment::reserved(uuid::Uuid::new_v4().to_string(), &id, "p1", None);
    h.repo.create_attachment(&attachment).await.unwrap();
    let body = json!({"os-reset_status": {"status": "in-use", "attach_status": "attached"}});
    assert_eq!(h.post(&path, ADMIN, "3.0", body).await.status, StatusCode::ACCEPTED);
    let body = json!({"os-reset_status": {"status": "available", "attach_status": "detached"}});
    assert_eq!(h.post(&path, ADMIN, "3.0", body).await.status, StatusCode::ACCEPTED);
    assert!(
        h.repo.list_attachments(Some(&id), None).await.unwrap().is_empty(),
        "detached drops the attachments"
    );
    assert_eq!(h.volume_rows().await[0].attach_status, AttachStatus::Detached);
    h.cleanup().await;
}

#[tokio::test]
async fn bootable_readonly_and_force_delete() {
    let h = Harness::sqlite().await;
    let id = h.create_volume(ADMIN, json!({"size": 1})).await;
    let path = format!("/volumes/{id}/action");
    assert_eq!(
        h.post(&path, ADMIN, "3.0", json!({"os-set_bootable": {"bootable": "true"}})).await.status,
        StatusCode::OK
    );
    assert_eq!(h.get(&format!("/volumes/{id}"), ADMIN, "3.0").await.body["volume"]["bootable"], "true");
    h.post(&path, ADMIN, "3.0", json!({"os-set_bootable": {}})).await.fault(400, "badRequest");
    h.post(&path, ADMIN, "3.0", json!({"os-update_readonly_flag": {"readonly": true}}))
        .await
        .fault(400, "badRequest");
    h.set_status(&id, VolumeStatus::Available).await;
    h.post(&path, ADMIN, "3.0", json!({"os-update_readonly_flag": {"readonly": "x"}}))
        .await
        .fault(400, "badRequest");
    let a = h.post(&path, ADMIN, "3.0", json!({"os-update_readonly_flag": {"readonly": true}})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(h.repo.get_volume(&id).await.unwrap().admin_metadata["readonly"], "True");
    h.set_status(&id, VolumeStatus::Error).await;
    let stuck = h.set_status(&id, VolumeStatus::Extending).await;
    assert_eq!(stuck.status, VolumeStatus::Extending);
    h.call(Method::DELETE, &format!("/volumes/{id}"), ADMIN, "3.0", None).await.fault(400, "badRequest");
    assert_eq!(
        h.post(&path, ADMIN, "3.0", json!({"os-force_delete": {}})).await.status,
        StatusCode::ACCEPTED
    );
    assert!(h.volume_rows().await.is_empty());
    h.cleanup().await;
}

#[tokio::test]
async fn members_see_only_their_project_and_cannot_use_admin_actions() {
    let h = Harness::with_tokens().await;
    let mine = h.create_volume("alice", json!({"size": 1})).await;
    let theirs = h.create_volume("bob", json!({"size": 1})).await;
    let ids = |a: &common::Answer| -> Vec<String> {
        a.body["volumes"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(&h.get("/volumes", "alice", "3.0").await), std::slice::from_ref(&mine));
    assert_eq!(ids(&h.get("/volumes?all_tenants=1", "alice", "3.0").await), std::slice::from_ref(&mine));
    assert_eq!(ids(&h.get("/volumes?all_tenants=1", "admin", "3.0").await).len(), 2);
    h.get(&format!("/volumes/{theirs}"), "alice", "3.0").await.fault(404, "itemNotFound");
    h.call(Method::DELETE, &format!("/volumes/{theirs}"), "alice", "3.0", None)
        .await
        .fault(404, "itemNotFound");
    let a = h.get(&format!("/volumes/{mine}"), "alice", "3.61").await;
    assert!(a.body["volume"].get("os-vol-host-attr:host").is_none());
    assert!(a.body["volume"].get("migration_status").is_none());
    assert!(a.body["volume"].get("cluster_name").is_none());
    assert_eq!(a.body["volume"]["os-vol-tenant-attr:tenant_id"], "p1");
    let reset = json!({"os-reset_status": {"status": "error"}});
    h.post(&format!("/volumes/{mine}/action"), "alice", "3.0", reset).await.fault(403, "forbidden");
    h.post(&format!("/volumes/{mine}/action"), "alice", "3.0", json!({"os-force_delete": {}}))
        .await
        .fault(403, "forbidden");
    h.call(Method::DELETE, &format!("/volumes/{mine}?force=true"), "alice", "3.23", None)
        .await
        .fault(403, "forbidden");
    let clone = json!({"volume": {"source_volid": theirs}});
    h.post("/volumes", "alice", "3.0", clone).await.fault(404, "itemNotFound");
    let snap = json!({"snapshot": {"volume_id": theirs}});
    h.post("/snapshots", "alice", "3.0", snap).await.fault(404, "itemNotFound");
    h.cleanup().await;
}
