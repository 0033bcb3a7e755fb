//! End-to-end: the real `ember all-in-one` process serves the API on its embedded default.

mod support;

use support::TestCluster;

#[tokio::test]
async fn all_in_one_serves_the_versions_document() {
    let cluster = TestCluster::all_in_one().await;
    let response = reqwest::get(format!("{}/v3/", cluster.base_url)).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["versions"][0]["id"], "v3.0");
    assert!(cluster.db_path().exists(), "the SQLite database is created under the data directory");
}

#[tokio::test]
async fn configured_tokens_isolate_projects_and_guard_admin_actions() {
    let config = r#"
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
    let cluster = TestCluster::all_in_one_with(config).await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: &str| {
        http.request(method, format!("{}/v3/{path}", cluster.base_url)).header("X-Auth-Token", token)
    };
    let created = call(reqwest::Method::POST, "pa/volumes", "alice-token")
        .json(&serde_json::json!({ "volume": { "size": 1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let id = created.json::<serde_json::Value>().await.unwrap()["volume"]["id"].as_str().unwrap().to_owned();

    // A noauth-style token is refused, another member sees nothing of alice's.
    assert_eq!(call(reqwest::Method::GET, "pa/volumes", "alice:pa").send().await.unwrap().status(), 401);
    let bobs: serde_json::Value =
        call(reqwest::Method::GET, "pb/volumes", "bob-token").send().await.unwrap().json().await.unwrap();
    assert_eq!(bobs["volumes"], serde_json::json!([]));
    assert_eq!(call(reqwest::Method::GET, "pa/volumes", "bob-token").send().await.unwrap().status(), 400);
    // Admin actions need the admin role.
    let reset = serde_json::json!({ "os-reset_status": { "status": "error" } });
    let path = format!("pa/volumes/{id}/action");
    let refused = call(reqwest::Method::POST, &path, "alice-token").json(&reset).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let admin_path = format!("ops/volumes/{id}/action");
    let done = call(reqwest::Method::POST, &admin_path, "admin-token").json(&reset).send().await.unwrap();
    assert_eq!(done.status(), 202);
}
