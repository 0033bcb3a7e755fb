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
