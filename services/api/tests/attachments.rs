//! The read side of `/attachments`: gated at 3.27, project-scoped, Cinder's views.

mod common;

use common::{ADMIN, Harness};
use ember_common::model::VolumeAttachment;
use ember_common::repo::AttachmentRepo;
use serde_json::json;

#[tokio::test]
async fn attachments_are_listed_from_3_27_and_only_to_their_project() {
    let h = Harness::sqlite().await;
    let volume = h.create_volume(ADMIN, json!({ "size": 1 })).await;
    let row = VolumeAttachment::reserved("att-1", volume.as_str(), "p1", Some("server-1".to_owned()));
    h.repo.create_attachment(&row).await.unwrap();

    h.get("/attachments", ADMIN, "3.26").await.fault(404, "itemNotFound");
    let list = h.get("/attachments", ADMIN, "3.27").await;
    assert_eq!(list.status.as_u16(), 200, "{:?}", list.body);
    assert_eq!(
        list.body["attachments"][0],
        json!({
            "id": "att-1", "status": "reserved", "instance": "server-1", "volume_id": volume
        })
    );
    let detail = h.get(&format!("/attachments/detail?volume_id={volume}"), ADMIN, "3.27").await;
    assert_eq!(detail.body["attachments"][0]["attach_mode"], "rw");
    assert_eq!(detail.body["attachments"][0]["attached_at"], "");
    let shown = h.get("/attachments/att-1", ADMIN, "3.27").await;
    assert_eq!(shown.body["attachment"]["id"], "att-1", "{:?}", shown);

    let other = h.get("/attachments", "bob:p2", "3.27").await;
    assert_eq!(other.body["attachments"], json!([]));
    h.get("/attachments/nope", ADMIN, "3.27").await.fault(404, "itemNotFound");
    h.cleanup().await;
}
