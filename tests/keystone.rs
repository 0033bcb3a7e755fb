//! End-to-end behind a real Keystone (keystone from PyPI, tests/support/keystone.rs):
//! unmodified clients log in with a password and find Ember in the catalog; Keystone tokens
//! carry project isolation and Cinder's reader/member/admin rules across two api processes
//! on PostgreSQL; refusals are 401s with `WWW-Authenticate`; with Keystone down, cached
//! tokens still work and others get a quick 503.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::keystone::{self, Relay};
use support::multi::{MultiProcess, services};
use support::{Cinder, TestCluster};

const FILE_BACKEND: &str = "enabled_backends = [\"file\"]\n[backends.file]\nvolume_driver = \"file\"\n";

/// Parses a client's JSON output (`-f json`), or panics with what it printed.
fn parse(out: &str) -> Value {
    let start = out.find(['{', '[']).unwrap_or_else(|| panic!("no JSON in: {out}"));
    serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn openstack_cinder_and_openstacksdk_reach_ember_through_the_catalog() {
    let Some(ks) = keystone::shared().await else { return };
    let ember = TestCluster::all_in_one_with(&ks.ember_config(&ks.url, "")).await;
    let region = ks.register(&ember.base_url).await;
    let [reader, member, _] = &ks.p1;

    let (ok, out) = ks
        .client(member, &region, "openstack", &["volume", "create", "--size", "1", "osc-vol", "-f", "json"])
        .await;
    assert!(ok, "openstack volume create: {out}");
    let id = parse(&out)["id"].as_str().expect("the volume's id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = ks.client(member, &region, "openstack", &["volume", "show", &id, "-f", "json"]).await;
        assert!(ok, "openstack volume show: {out}");
        if parse(&out)["status"] == "available" {
            break;
        }
        assert!(Instant::now() < deadline, "{id} not available: {out}");
    }
    let (ok, out) = ks.client(reader, &region, "openstack", &["volume", "list", "-f", "json"]).await;
    assert!(ok && out.contains(&id), "the reader lists the volume: {out}");
    let (ok, out) = ks
        .client(reader, &region, "openstack", &["volume", "create", "--size", "1", "nope", "-f", "json"])
        .await;
    assert!(!ok && out.contains("volume:create"), "the reader may not create: {out}");

    let (ok, out) = ks.client(member, &region, "cinder", &["create", "--name", "cinder-vol", "1"]).await;
    assert!(ok, "cinder create: {out}");
    let (ok, out) = ks.client(member, &region, "cinder", &["list"]).await;
    assert!(ok && out.contains("cinder-vol") && out.contains("osc-vol"), "cinder list: {out}");

    let sdk = "import openstack\n\
               c = openstack.connect()\n\
               v = c.block_storage.create_volume(size=1, name='sdk-vol')\n\
               c.block_storage.wait_for_status(v, 'available', wait=60)\n\
               print(sorted(x.name for x in c.block_storage.volumes()))\n";
    let (ok, out) = ks.client(member, &region, "python", &["-c", sdk]).await;
    assert!(ok && out.contains("'sdk-vol'") && out.contains("'osc-vol'"), "openstacksdk: {out}");

    // Another project's users see none of it.
    let (ok, out) = ks.client(&ks.p2[1], &region, "openstack", &["volume", "list", "-f", "json"]).await;
    assert!(ok && parse(&out) == json!([]), "project 2 sees nothing of project 1: {out}");
    let (ok, out) = ks.client(member, &region, "openstack", &["volume", "delete", &id]).await;
    assert!(ok, "openstack volume delete: {out}");
}

#[tokio::test]
async fn keystone_tokens_carry_isolation_and_roles_across_api_processes_on_postgres() {
    let Some(ks) = keystone::shared().await else { return };
    let Some((db, amqp)) = services().await else { return };
    let host = format!("ks-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // A short cache, so a revoked token is refused soon.
    let auth = ks.ember_config(&ks.url, "token_cache_time = 1\n");
    let cluster = MultiProcess::start_with_api(db, &amqp, &[(&host, FILE_BACKEND)], &auth).await;
    let (mut peer, peer_url) = cluster.start_peer_api("api-b").await;
    let [reader1, member1, admin1] = &ks.p1;
    let member2 = &ks.p2[1];
    let (p1, p2) = (member1.project_id.clone(), member2.project_id.clone());
    let (t_reader1, t_member1) = (ks.token(reader1).await, ks.token(member1).await);
    let (t_admin1, t_member2) = (ks.token(admin1).await, ks.token(member2).await);
    let a_member1 = Cinder::with_token(&cluster.base_url, &p1, &t_member1);
    let b_reader1 = Cinder::with_token(&peer_url, &p1, &t_reader1);
    let b_admin1 = Cinder::with_token(&peer_url, &p1, &t_admin1);
    let a_member2 = Cinder::with_token(&cluster.base_url, &p2, &t_member2);

    let mine = a_member1.create_volume(json!({"size": 1, "name": "p1-vol"})).await;
    let theirs = a_member2.create_volume(json!({"size": 1, "name": "p2-vol"})).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    b_reader1.wait_status(&format!("/volumes/{mine}"), "available", deadline).await;
    a_member2.wait_status(&format!("/volumes/{theirs}"), "available", deadline).await;

    // Isolation: by id, in lists, and in the URL.
    assert_eq!(b_reader1.get(&format!("/volumes/{theirs}")).await.0, 404);
    let (_, list) = a_member2.get("/volumes").await;
    assert_eq!(list["volumes"].as_array().map(Vec::len), Some(1), "{list}");
    let wrong_url = Cinder::with_token(&cluster.base_url, &p1, &t_member2);
    assert_eq!(wrong_url.get("/volumes").await.0, 400, "a token of p2 on p1's URL");
    let (_, all) = b_admin1.get("/volumes?all_tenants=1").await;
    let names: Vec<&str> =
        all["volumes"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert!(names.contains(&"p1-vol") && names.contains(&"p2-vol"), "the admin sees every project: {all}");
    assert_eq!(b_admin1.get(&format!("/volumes/{theirs}")).await.0, 200);

    // Roles, on both processes.
    for base in [&cluster.base_url, &peer_url] {
        let reader = Cinder::with_token(base, &p1, &t_reader1);
        let (status, body) = reader.post("/volumes", json!({"volume": {"size": 1}})).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["forbidden"]["message"], "Policy doesn't allow volume:create to be performed.");
        assert_eq!(reader.delete(&format!("/volumes/{mine}")).await, 403);
        let member = Cinder::with_token(base, &p1, &t_member1);
        let reset = json!({"os-reset_status": {"status": "available"}});
        assert_eq!(member.post(&format!("/volumes/{mine}/action"), reset.clone()).await.0, 403);
        let admin = Cinder::with_token(base, &p1, &t_admin1);
        assert_eq!(admin.post(&format!("/volumes/{mine}/action"), reset).await.0, 202);
        assert_eq!(member.get(&format!("/os-quota-sets/{p2}")).await.0, 403);
        assert_eq!(admin.get(&format!("/os-quota-sets/{p2}")).await.0, 200);
    }

    // Refusals are keystonemiddleware's 401 with the Keystone to go to.
    for base in [&cluster.base_url, &peer_url] {
        for token in [None, Some("not-a-token"), Some("gAAAAABsomething-made-up")] {
            let mut request = reqwest::Client::new().get(format!("{base}/v3/{p1}/volumes"));
            if let Some(token) = token {
                request = request.header("X-Auth-Token", token);
            }
            let response = request.send().await.expect("ember answers");
            assert_eq!(response.status().as_u16(), 401, "{token:?}");
            let header = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok());
            assert_eq!(header, Some(format!("Keystone uri=\"{}\"", ks.url)).as_deref());
            let body: Value = response.json().await.expect("a fault body");
            assert_eq!(body["unauthorized"]["code"], 401, "{body}");
        }
    }

    // A revoked token is refused once its cache time has passed, on both processes.
    let doomed = ks.token(member1).await;
    for base in [&cluster.base_url, &peer_url] {
        assert_eq!(Cinder::with_token(base, &p1, &doomed).get("/volumes").await.0, 200);
    }
    ks.revoke(&doomed).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for base in [&cluster.base_url, &peer_url] {
        let client = Cinder::with_token(base, &p1, &doomed);
        loop {
            let (status, _) = client.get("/volumes").await;
            if status == 401 {
                break;
            }
            assert!(Instant::now() < deadline, "a revoked token still answers {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    assert_eq!(a_member1.delete(&format!("/volumes/{mine}")).await, 202);
    peer.kill();
    cluster.stop(&amqp, &[format!("ember-volume.{host}@file")]).await;
}

#[tokio::test]
async fn with_keystone_down_cached_tokens_work_and_others_get_a_quick_503() {
    let Some(ks) = keystone::shared().await else { return };
    let relay = Relay::start(&ks.url).await;
    let ember = TestCluster::all_in_one_with(&ks.ember_config(&relay.url, "")).await;
    let [reader1, member1, _] = &ks.p1;
    let p1 = &member1.project_id;
    let seen = ks.token(member1).await;
    let unseen = ks.token(reader1).await;
    let client = Cinder::with_token(&ember.base_url, p1, &seen);
    assert_eq!(client.get("/volumes").await.0, 200);

    relay.down();
    let (status, body) = client.get("/volumes").await;
    assert_eq!(status, 200, "a cached token works without Keystone: {body}");
    let started = Instant::now();
    let (status, body) = Cinder::with_token(&ember.base_url, p1, &unseen).get("/volumes").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["serviceUnavailable"]["message"], "The Keystone service is temporarily unavailable.");
    assert!(started.elapsed() < Duration::from_secs(3), "the 503 took {:?}", started.elapsed());
}
