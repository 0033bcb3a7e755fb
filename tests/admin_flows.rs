//! End-to-end: the admin view of flows on the real `ember all-in-one`: a volume's create
//! flows are listed by its id, shown and drawn.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::TestCluster;

// Noauth callers are admins, as in Cinder; the 403 for members is tested in ember-api.

const PROJECT: &str = "adm00000000000000000000000000000";

async fn admin_get(cluster: &TestCluster, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/v3/{PROJECT}{path}", cluster.base_url))
        .header("X-Auth-Token", format!("admin:{PROJECT}"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_volumes_create_flows_are_listed_shown_and_drawn() {
    let cluster = TestCluster::all_in_one().await;
    let cinder = cluster.client(PROJECT);
    let id = cinder.create_volume(json!({ "size": 1 })).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    cinder.wait_status(&format!("/volumes/{id}"), "available", deadline).await;

    // The api flow finishes after its hand-off; poll until every flow of the volume is done.
    let flows = loop {
        let body: Value = admin_get(&cluster, &format!("/volumes/{id}/flows")).await.json().await.unwrap();
        let flows = body["flows"].as_array().cloned().unwrap_or_default();
        if flows.len() >= 2 && flows.iter().all(|f| f["state"] == "SUCCESS") {
            break flows;
        }
        assert!(Instant::now() < deadline, "the flows of {id} did not all succeed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = flows.iter().filter_map(|f| f["name"].as_str()).collect();
    assert!(names.contains(&"volume_create_manager"), "{names:?}");

    let manager = flows.iter().find(|f| f["name"] == "volume_create_manager").unwrap();
    let flow_id = manager["id"].as_str().unwrap();
    let path = format!("/flows/{}", urlencode(flow_id));
    let shown: Value = admin_get(&cluster, &path).await.json().await.unwrap();
    let atoms = shown["flow"]["atoms"].as_array().unwrap();
    assert!(!atoms.is_empty() && atoms.iter().all(|a| a["state"] == "SUCCESS"), "{shown}");

    let drawing = admin_get(&cluster, &format!("{path}/graph?format=mermaid")).await;
    assert_eq!(drawing.status(), 200);
    assert!(drawing.text().await.unwrap().starts_with("flowchart TD"));
}

/// Flow ids hold `:`; keep them in one path segment.
fn urlencode(id: &str) -> String {
    id.replace(':', "%3A")
}
