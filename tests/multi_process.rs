//! End-to-end across processes: `ember api`, `ember scheduler` and two `ember volume`
//! processes with different backends, on PostgreSQL and RabbitMQ. One backend's creates
//! always fail, so every volume scheduled there is rescheduled to the other; a volume
//! process killed with creates in flight finishes them after its restart.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;
use support::multi::{MultiProcess, services};
use support::scenario::fifty_operations;

const PROJECT: &str = "e2e0000000000000000000000000000b";

#[tokio::test]
async fn api_scheduler_and_two_volume_services_on_postgres_and_rabbitmq() {
    let Some((db, amqp)) = services().await else { return };
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (good, broken) = (format!("good-{}", &tag[..8]), format!("broken-{}", &tag[..8]));
    let good_toml = "enabled_backends = [\"file\"]\n[backends.file]\nvolume_driver = \"file\"\n";
    // The broken backend reports far more free space, so the weigher sends volumes there first.
    let broken_toml = "enabled_backends = [\"fake\"]\n[backends.fake]\nvolume_driver = \"fake\"\n\
                       fake_capacity_gb = 1000000.0\nfake_fail_operations = [\"create_volume\"]\n";
    let mut cluster = MultiProcess::start(db, &amqp, &[(&good, good_toml), (&broken, broken_toml)]).await;
    let cinder = cluster.client(PROJECT);
    let quota = json!({ "quota_set": { "volumes": 100, "gigabytes": 1000 } });
    let (status, body) =
        cinder.send(reqwest::Method::PUT, &format!("/os-quota-sets/{PROJECT}"), Some(quota)).await;
    assert_eq!(status, 200, "{body}");

    // MultiProcess::start waited for both volume services, so some creates land on the broken one.

    let ids =
        join_all((0..10).map(|i| cinder.create_volume(json!({ "size": 1, "name": format!("mp-{i}") }))))
            .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        let volume = cinder.wait_status(&format!("/volumes/{id}"), "available", deadline).await;
        let host = volume["os-vol-host-attr:host"].as_str().unwrap_or_default();
        assert!(
            host.starts_with(&format!("{good}@file")),
            "{id} lives on {host}, not on the working backend"
        );
    }
    let expected: Vec<String> = {
        let mut v: Vec<String> = ids.iter().map(|id| format!("volume-{id}")).collect();
        v.sort();
        v
    };
    assert_eq!(cluster.files(&good, "file"), expected);
    cinder.wait_quota(PROJECT, "volumes", (10, 0), Instant::now() + Duration::from_secs(30)).await;

    // One attach cycle through the api and the volume process: exported over NBD by the
    // volume process while the API request waits, completed, detached and unexported.
    let v3 = cinder.with_version("3.44");
    let connector = json!({ "host": "mp-compute", "ip": "127.0.0.1", "initiator": "iqn.2026-12.test:mp" });
    let body = json!({ "attachment": { "volume_uuid": ids[0], "connector": connector } });
    let (status, created) = v3.post("/attachments", body).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["attachment"]["status"], "attaching", "{created}");
    assert_eq!(created["attachment"]["connection_info"]["driver_volume_type"], "nbd", "{created}");
    let attachment = created["attachment"]["id"].as_str().expect("an attachment id").to_owned();
    assert!(cluster.files(&good, "file").contains(&format!("export-volume-{}", ids[0])), "exported");
    let (status, body) =
        v3.post(&format!("/attachments/{attachment}/action"), json!({ "os-complete": {} })).await;
    assert_eq!(status, 204, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    cinder.wait_status(&format!("/volumes/{}", ids[0]), "in-use", deadline).await;
    let (status, body) = v3.send(reqwest::Method::DELETE, &format!("/attachments/{attachment}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["attachments"], json!([]));
    cinder.wait_status(&format!("/volumes/{}", ids[0]), "available", deadline).await;
    assert_eq!(cluster.files(&good, "file"), expected, "the export is gone with the attachment");

    // Kill the working volume service right after five more creates are accepted; whatever
    // was in flight finishes after its restart.
    let more =
        join_all((0..5).map(|i| cinder.create_volume(json!({ "size": 1, "name": format!("kill-{i}") }))))
            .await;
    cluster.volumes[0].kill();
    cluster.volumes[0].restart();
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &more {
        cinder.wait_status(&format!("/volumes/{id}"), "available", deadline).await;
    }
    cinder.wait_quota(PROJECT, "volumes", (15, 0), Instant::now() + Duration::from_secs(30)).await;

    for id in ids.iter().chain(&more) {
        assert_eq!(cinder.delete(&format!("/volumes/{id}")).await, 202);
    }
    // (The deletes are checked below; the 50-operation scenario then runs on the same
    // deployment, its sources pinned to the working backend as Cinder pins them.)
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in ids.iter().chain(&more) {
        cinder.wait_status(&format!("/volumes/{id}"), "gone", deadline).await;
    }
    assert!(cluster.files(&good, "file").is_empty(), "no file is left behind");
    cinder.wait_quota(PROJECT, "volumes", (0, 0), Instant::now() + Duration::from_secs(30)).await;
    cinder.wait_quota(PROJECT, "gigabytes", (0, 0), Instant::now() + Duration::from_secs(30)).await;

    fifty_operations(&cinder, PROJECT, &|| cluster.files(&good, "file")).await;
    let queues = [format!("ember-volume.{good}@file"), format!("ember-volume.{broken}@fake")];
    cluster.stop(&amqp, &queues).await;
}
