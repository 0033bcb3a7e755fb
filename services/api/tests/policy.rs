//! Cinder's policy through the whole application: readers read, members also write, admins
//! also act as admins and on other projects, and a policy file overrides one rule.

mod common;

use axum::http::Method;
use common::Harness;
use ember_common::model::VolumeStatus;
use serde_json::json;

#[tokio::test]
async fn readers_read_their_project_and_change_nothing() {
    let h = Harness::with_tokens().await;
    let id = h.create_volume("alice", json!({"size": 1})).await;
    assert_eq!(h.get("/volumes", "carol", "3.0").await.status, 200);
    assert_eq!(h.get("/volumes/detail", "carol", "3.0").await.status, 200);
    assert_eq!(h.get(&format!("/volumes/{id}"), "carol", "3.0").await.status, 200);
    assert_eq!(h.get(&format!("/volumes/{id}/metadata"), "carol", "3.0").await.status, 200);
    assert_eq!(h.get("/types", "carol", "3.0").await.status, 200);
    assert_eq!(h.get("/os-quota-sets/p1", "carol", "3.0").await.status, 200);
    assert_eq!(h.get("/limits", "carol", "3.0").await.status, 200);
    let a = h.post("/volumes", "carol", "3.0", json!({"volume": {"size": 1}})).await;
    a.fault(403, "forbidden");
    assert_eq!(a.body["forbidden"]["message"], "Policy doesn't allow volume:create to be performed.");
    h.call(Method::DELETE, &format!("/volumes/{id}"), "carol", "3.0", None).await.fault(403, "forbidden");
    h.call(Method::PUT, &format!("/volumes/{id}"), "carol", "3.0", Some(json!({"volume": {"name": "x"}})))
        .await
        .fault(403, "forbidden");
    let a =
        h.post(&format!("/volumes/{id}/action"), "carol", "3.0", json!({"os-extend": {"new_size": 2}})).await;
    a.fault(403, "forbidden");
    assert_eq!(a.body["forbidden"]["message"], "Policy doesn't allow volume:extend to be performed.");
    h.post(&format!("/volumes/{id}/metadata"), "carol", "3.0", json!({"metadata": {"k": "v"}}))
        .await
        .fault(403, "forbidden");
    assert_eq!(h.volume_rows().await.len(), 1, "nothing was created");
    // A caller with none of reader, member and admin may not even read.
    h.get("/volumes", "nobody", "3.0").await.fault(403, "forbidden");
    h.cleanup().await;
}

#[tokio::test]
async fn members_write_in_their_project_and_admins_do_the_rest() {
    let h = Harness::with_tokens().await;
    let id = h.create_volume("alice", json!({"size": 1})).await;
    h.set_status(&id, VolumeStatus::Available).await;
    let extend = json!({"os-extend": {"new_size": 2}});
    let a = h.post(&format!("/volumes/{id}/action"), "alice", "3.0", extend).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    h.get("/os-quota-sets/p2", "alice", "3.0").await.fault(403, "forbidden");
    h.get("/os-services", "alice", "3.0").await.fault(403, "forbidden");
    h.get("/flows", "alice", "3.0").await.fault(403, "forbidden");
    h.post("/types", "alice", "3.0", json!({"volume_type": {"name": "gold"}})).await.fault(403, "forbidden");
    let reset = json!({"os-reset_status": {"status": "error"}});
    let a = h.post(&format!("/volumes/{id}/action"), "alice", "3.0", reset.clone()).await;
    assert_eq!(
        a.body["forbidden"]["message"],
        "Policy doesn't allow volume_extension:volume_admin_actions:reset_status to be performed."
    );
    assert_eq!(h.get("/os-quota-sets/p2", "admin", "3.0").await.status, 200);
    assert_eq!(h.get("/os-services", "admin", "3.0").await.status, 200);
    assert_eq!(h.post(&format!("/volumes/{id}/action"), "admin", "3.0", reset).await.status, 202);
    // A body that is no action is a member's write, then the handler's 400.
    h.post(&format!("/volumes/{id}/action"), "carol", "3.0", json!([])).await.fault(403, "forbidden");
    h.post(&format!("/volumes/{id}/action"), "alice", "3.0", json!([])).await.fault(400, "badRequest");
    h.cleanup().await;
}

#[tokio::test]
async fn a_policy_file_overrides_one_rule_and_the_handlers_follow() {
    let yaml = "# Only admins create; members may reset a status.\n\
                \"volume:create\": \"rule:context_is_admin\"\n\
                \"volume_extension:volume_admin_actions:reset_status\": \"rule:project_member_or_admin\"\n";
    let h = Harness::with_policy(yaml).await;
    h.post("/volumes", "alice", "3.0", json!({"volume": {"size": 1}})).await.fault(403, "forbidden");
    let id = h.create_volume("admin", json!({"size": 1})).await;
    let reset = json!({"os-reset_status": {"status": "error"}});
    assert_eq!(h.post(&format!("/volumes/{id}/action"), "alice", "3.0", reset).await.status, 202);
    assert_eq!(h.get(&format!("/volumes/{id}"), "alice", "3.0").await.body["volume"]["status"], "error");
    // The rules the file leaves alone keep Cinder's defaults.
    h.post(&format!("/volumes/{id}/action"), "alice", "3.0", json!({"os-force_delete": {}}))
        .await
        .fault(403, "forbidden");
    assert_eq!(h.call(Method::DELETE, &format!("/volumes/{id}"), "alice", "3.0", None).await.status, 202);
    h.cleanup().await;
}
