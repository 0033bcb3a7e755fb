//! The legacy attach actions of `POST /volumes/{id}/action` (Nova's old path), with
//! `TestAttachOps` standing in for the flows: each reaches its operation with the parsed
//! arguments, bad bodies are refused before anything changes, `os-force_detach` is admin's.

mod common;

use axum::http::StatusCode;
use serde_json::{Value, json};

use common::{ADMIN, Harness};
use ember_common::model::{AttachStatus, VolumeAttachment, VolumeStatus};
use ember_common::repo::{AttachmentRepo, VolumeRepo};

const SERVER: &str = "95D9EF50-507D-11E5-B970-0800200C9A66";

fn connector() -> Value {
    json!({"platform": "x86_64", "host": "node2", "do_local_attach": false, "ip": "192.168.13.101",
           "os_type": "linux2", "multipath": false, "initiator": "iqn.1994-05.com.redhat:d16cbb5d31e5"})
}

async fn status(h: &Harness, id: &str) -> VolumeStatus {
    h.repo.get_volume(id).await.unwrap().status
}

async fn rows(h: &Harness) -> Vec<VolumeAttachment> {
    h.repo.list_attachments(None, None).await.unwrap()
}

/// Posts `body` to the volume's action URL and expects `code`.
async fn act(h: &Harness, token: &str, vol: &str, body: Value, code: StatusCode) -> Value {
    let a = h.post(&format!("/volumes/{vol}/action"), token, "3.0", body.clone()).await;
    assert_eq!(a.status, code, "{body}: {:?}", a.body);
    a.body
}

#[tokio::test]
async fn nova_s_old_attach_and_detach_sequence_moves_the_volume() {
    let h = Harness::sqlite().await;
    let vol = h.create_volume(ADMIN, json!({"size": 1})).await;
    h.set_status(&vol, VolumeStatus::Available).await;

    act(&h, ADMIN, &vol, json!({"os-reserve": null}), StatusCode::ACCEPTED).await;
    assert_eq!(status(&h, &vol).await, VolumeStatus::Attaching);
    act(&h, ADMIN, &vol, json!({"os-unreserve": {}}), StatusCode::ACCEPTED).await;
    assert_eq!(status(&h, &vol).await, VolumeStatus::Available);
    act(&h, ADMIN, &vol, json!({"os-reserve": {}}), StatusCode::ACCEPTED).await;

    let body =
        act(&h, ADMIN, &vol, json!({"os-initialize_connection": {"connector": connector()}}), StatusCode::OK)
            .await;
    assert_eq!(body["connection_info"]["driver_volume_type"], "file");
    assert_eq!(body["connection_info"]["data"]["host"], "node2", "the connector reached the operation");

    let attach = json!({"os-attach": {"instance_uuid": SERVER, "mountpoint": "/dev/vdc", "mode": "rw"}});
    act(&h, ADMIN, &vol, attach, StatusCode::ACCEPTED).await;
    assert_eq!(status(&h, &vol).await, VolumeStatus::InUse);
    let attached = rows(&h).await;
    assert_eq!(attached.len(), 1);
    assert_eq!(
        (attached[0].instance_uuid.as_deref(), attached[0].mountpoint.as_deref()),
        (Some(SERVER), Some("/dev/vdc"))
    );
    let shown = h.get(&format!("/volumes/{vol}"), ADMIN, "3.0").await.body;
    assert_eq!(shown["volume"]["attachments"][0]["device"], "/dev/vdc");

    act(&h, ADMIN, &vol, json!({"os-begin_detaching": {}}), StatusCode::ACCEPTED).await;
    assert_eq!(status(&h, &vol).await, VolumeStatus::Detaching);
    act(&h, ADMIN, &vol, json!({"os-roll_detaching": {}}), StatusCode::ACCEPTED).await;
    assert_eq!(status(&h, &vol).await, VolumeStatus::InUse);
    act(
        &h,
        ADMIN,
        &vol,
        json!({"os-terminate_connection": {"connector": connector()}}),
        StatusCode::ACCEPTED,
    )
    .await;
    let detach = json!({"os-detach": {"attachment_id": attached[0].id}});
    act(&h, ADMIN, &vol, detach, StatusCode::ACCEPTED).await;
    assert_eq!(status(&h, &vol).await, VolumeStatus::Available);
    assert!(rows(&h).await.is_empty());

    // A status the operation refuses is its 400, and nothing moves.
    act(&h, ADMIN, &vol, json!({"os-roll_detaching": {}}), StatusCode::BAD_REQUEST).await;
    assert_eq!(status(&h, &vol).await, VolumeStatus::Available);
    h.cleanup().await;
}

#[tokio::test]
async fn a_host_attach_and_a_force_detach_by_the_admin() {
    let h = Harness::with_tokens().await;
    let vol = h.create_volume("alice", json!({"size": 1})).await;
    h.set_status(&vol, VolumeStatus::Available).await;
    let attach = json!({"os-attach": {"host_name": "backup-host", "mountpoint": "/mnt/v"}});
    act(&h, "alice", &vol, attach, StatusCode::ACCEPTED).await;
    let row = rows(&h).await.remove(0);
    assert_eq!(
        (row.attached_host.as_deref(), row.attach_status),
        (Some("backup-host"), AttachStatus::Attached)
    );

    let force = json!({"os-force_detach": {"attachment_id": row.id, "connector": connector()}});
    let denied = h.post(&format!("/volumes/{vol}/action"), "alice", "3.0", force.clone()).await;
    denied.fault(403, "forbidden");
    assert_eq!(rows(&h).await.len(), 1);
    // The policy refuses the admin action to any member before a volume is read, so
    // another project's member learns as little as from an unknown id.
    h.post(&format!("/volumes/{vol}/action"), "bob", "3.0", force.clone()).await.fault(403, "forbidden");
    let unknown = format!("/volumes/{}/action", uuid::Uuid::new_v4());
    h.post(&unknown, "bob", "3.0", force.clone()).await.fault(403, "forbidden");
    act(&h, "admin", &vol, force, StatusCode::ACCEPTED).await;
    assert!(rows(&h).await.is_empty());
    assert_eq!(status(&h, &vol).await, VolumeStatus::Available);
    act(&h, "admin", &vol, json!({"os-force_detach": null}), StatusCode::ACCEPTED).await;
    h.cleanup().await;
}

#[tokio::test]
async fn bad_legacy_bodies_are_refused_naming_the_field_and_change_nothing() {
    let h = Harness::sqlite().await;
    let vol = h.create_volume(ADMIN, json!({"size": 1})).await;
    h.set_status(&vol, VolumeStatus::Available).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"os-initialize_connection": {}}), "connector"),
        (json!({"os-initialize_connection": {"connector": "node2"}}), "connector"),
        (json!({"os-initialize_connection": {"connector": null}}), "connector"),
        (json!({"os-initialize_connection": {"connector": {}, "extra": 1}}), "extra"),
        (json!({"os-terminate_connection": {}}), "connector"),
        (json!({"os-terminate_connection": {"connector": [1]}}), "connector"),
        (json!({"os-attach": {"instance_uuid": SERVER}}), "mountpoint"),
        (json!({"os-attach": {"instance_uuid": SERVER, "mountpoint": ""}}), "mountpoint"),
        (json!({"os-attach": {"instance_uuid": SERVER, "mountpoint": 5}}), "mountpoint"),
        (json!({"os-attach": {"instance_uuid": "server-1", "mountpoint": "/dev/vdb"}}), "instance_uuid"),
        (json!({"os-attach": {"mountpoint": "/dev/vdb"}}), "invalid target"),
        (
            json!({"os-attach": {"instance_uuid": SERVER, "host_name": "h", "mountpoint": "/dev/vdb"}}),
            "simultaneously",
        ),
        (json!({"os-attach": {"host_name": "h", "mountpoint": "/dev/vdb", "mode": "wr"}}), "mode"),
        (json!({"os-attach": {"host_name": "h".repeat(256), "mountpoint": "/dev/vdb"}}), "host_name"),
        (json!({"os-attach": {"host_name": "h", "mountpoint": "/dev/vdb", "device": "x"}}), "device"),
        (json!({"os-attach": null}), "mountpoint"),
        (json!({"os-detach": {"attachment_id": "a-1"}}), "attachment_id"),
        (json!({"os-detach": {"attachment_id": 1}}), "attachment_id"),
        (json!({"os-detach": {"force": true}}), "force"),
        (json!({"os-force_detach": {"connector": "c"}}), "connector"),
        (json!({"os-force_detach": {"attachment_id": 1}}), "attachment_id"),
        (json!({"os-force_detach": {"host": "h"}}), "host"),
        (json!({"os-reserve": "now"}), "os-reserve"),
        (json!({"os-reserve": {}, "os-attach": {}}), "one action"),
    ];
    let before = (rows(&h).await, h.volume_rows().await);
    for (body, word) in cases {
        let a = h.post(&format!("/volumes/{vol}/action"), ADMIN, "3.0", body.clone()).await;
        let message = a.fault(400, "badRequest");
        assert!(message.contains(word), "{body}: {message}");
        assert_eq!((rows(&h).await, h.volume_rows().await), before, "{body}");
    }
    let unknown = uuid::Uuid::new_v4();
    h.post(&format!("/volumes/{unknown}/action"), ADMIN, "3.0", json!({"os-reserve": {}}))
        .await
        .fault(404, "itemNotFound");
    h.cleanup().await;
}
