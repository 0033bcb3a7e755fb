//! Another project's resources are invisible, not only forbidden: through the real binary
//! with token auth, a private volume type of another project and a list marker naming
//! another project's volume or snapshot answer exactly as an id that does not exist, and
//! the refused request changes nothing.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::{Cinder, TestCluster};

const CONFIG: &str = r#"
auth_strategy = "token"
[tokens."admin-token"]
user_id = "root"
project_id = "ops"
roles = ["admin"]
[tokens."alice-token"]
user_id = "alice"
project_id = "pa"
roles = ["member"]
[tokens."bob-token"]
user_id = "bob"
project_id = "pb"
roles = ["member"]
"#;

const UNKNOWN: &str = "00000000-0000-4000-8000-000000000000";

/// The status and the fault's key of an answer, which must not tell two refusals apart.
fn refusal(answer: &(u16, Value)) -> (u16, String) {
    let key = answer.1.as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_default();
    (answer.0, key)
}

#[tokio::test]
async fn other_projects_private_types_and_markers_read_as_unknown() {
    let cluster = TestCluster::all_in_one_with(CONFIG).await;
    let admin = Cinder::with_token(&cluster.base_url, "ops", "admin-token");
    let alice = Cinder::with_token(&cluster.base_url, "pa", "alice-token");
    let bob = Cinder::with_token(&cluster.base_url, "pb", "bob-token");

    let (status, body) = admin
        .post(
            "/types",
            json!({ "volume_type": { "name": "secret", "os-volume-type-access:is_public": false } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let type_id = body["volume_type"]["id"].as_str().unwrap().to_owned();
    let (status, _) = admin
        .post(&format!("/types/{type_id}/action"), json!({ "addProjectAccess": { "project": "pa" } }))
        .await;
    assert_eq!(status, 202);

    // Bob cannot use alice's private type, by name or by id, and learns nothing of it.
    for name_or_id in ["secret", type_id.as_str()] {
        let answer =
            bob.post("/volumes", json!({ "volume": { "size": 1, "volume_type": name_or_id } })).await;
        let unknown =
            bob.post("/volumes", json!({ "volume": { "size": 1, "volume_type": "no-such-type" } })).await;
        assert_eq!(refusal(&answer), (404, "itemNotFound".to_owned()), "{answer:?}");
        assert_eq!(refusal(&answer), refusal(&unknown));
    }
    assert_eq!(bob.get("/volumes").await.1["volumes"], json!([]));
    assert_eq!(bob.quota_usage("pb", "volumes").await, (0, 0));

    // Alice may use it.
    let (status, body) =
        alice.post("/volumes", json!({ "volume": { "size": 1, "volume_type": "secret" } })).await;
    assert_eq!(status, 202, "{body}");
    let volume = body["volume"]["id"].as_str().unwrap().to_owned();
    alice
        .wait_status(&format!("/volumes/{volume}"), "available", Instant::now() + Duration::from_secs(30))
        .await;
    let snapshot = alice.create_snapshot(&volume).await;

    // A marker of another project's volume or snapshot answers as an unknown marker.
    for (list, marker) in [("/volumes", &volume), ("/volumes/detail", &volume), ("/snapshots", &snapshot)] {
        let theirs = bob.get(&format!("{list}?marker={marker}")).await;
        let unknown = bob.get(&format!("{list}?marker={UNKNOWN}")).await;
        assert_eq!(refusal(&theirs), refusal(&unknown), "{list}: {theirs:?} vs {unknown:?}");
        assert_eq!(theirs.0, 404);
        // The owner pages past its own marker as before.
        assert_eq!(alice.get(&format!("{list}?marker={marker}")).await.0, 200);
    }
}

#[tokio::test]
async fn other_projects_backups_read_as_unknown() {
    let cluster = TestCluster::all_in_one_with(CONFIG).await;
    let alice = Cinder::with_token(&cluster.base_url, "pa", "alice-token").with_version("3.47");
    let bob = Cinder::with_token(&cluster.base_url, "pb", "bob-token").with_version("3.47");
    let deadline = Instant::now() + Duration::from_secs(60);
    let volume = alice.create_volume(json!({ "size": 1 })).await;
    alice.wait_status(&format!("/volumes/{volume}"), "available", deadline).await;
    let (status, body) = alice.post("/backups", json!({ "backup": { "volume_id": volume } })).await;
    assert_eq!(status, 202, "{body}");
    let backup = body["backup"]["id"].as_str().unwrap().to_owned();
    alice.wait_status(&format!("/backups/{backup}"), "available", deadline).await;
    let bob_volume = bob.create_volume(json!({ "size": 1 })).await;
    bob.wait_status(&format!("/volumes/{bob_volume}"), "available", deadline).await;

    // Every way bob can name alice's backup answers as an id that does not exist.
    let put = json!({ "backup": { "name": "mine" } });
    let restore = json!({ "restore": { "volume_id": bob_volume } });
    for id in [backup.as_str(), UNKNOWN] {
        let asks = [
            bob.get(&format!("/backups/{id}")).await,
            bob.send(reqwest::Method::PUT, &format!("/backups/{id}"), Some(put.clone())).await,
            bob.send(reqwest::Method::DELETE, &format!("/backups/{id}"), None).await,
            bob.post(&format!("/backups/{id}/restore"), restore.clone()).await,
            bob.post(&format!("/backups/{id}/restore"), json!({ "restore": {} })).await,
            bob.get(&format!("/backups?marker={id}")).await,
            bob.get(&format!("/backups/detail?marker={id}")).await,
            bob.post("/volumes", json!({ "volume": { "backup_id": id } })).await,
        ];
        for answer in &asks {
            assert_eq!(refusal(answer), (404, "itemNotFound".to_owned()), "{id}: {answer:?}");
        }
        // Export is an admin's: refused alike, whether the id exists or not.
        let export = bob.get(&format!("/backups/{id}/export_record")).await;
        assert_eq!(export.0, 403, "{export:?}");
    }
    assert_eq!(bob.get("/backups").await.1["backups"], json!([]));
    assert_eq!(bob.get("/backups/detail").await.1["backups"], json!([]));
    assert_eq!(bob.quota_usage("pb", "volumes").await, (1, 0));
    assert_eq!(bob.quota_usage("pb", "backups").await, (0, 0));

    // Nothing of alice's changed, and she pages past her own marker.
    let (_, shown) = alice.get(&format!("/backups/{backup}")).await;
    assert_eq!(shown["backup"]["status"], "available", "{shown}");
    assert_ne!(shown["backup"]["name"], "mine", "{shown}");
    assert_eq!(alice.get(&format!("/backups?marker={backup}")).await.0, 200);
    let (_, v) = bob.get(&format!("/volumes/{bob_volume}")).await;
    assert_eq!(v["volume"]["status"], "available", "{v}");
}
