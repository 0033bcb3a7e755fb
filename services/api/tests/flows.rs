//! `/flows` (admin): flows recorded by the real engine in the real SQL store (SQLite), listed
//! with filters, shown with their atoms, drawn, and resumed.

mod common;

use axum::http::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use common::{ADMIN, Harness, demo};
use ember_engine::store::now_ms;
use ember_engine::{ClaimRequest, Engine, FlowSpec, FlowStore, NewFlow, Values};

/// Runs the demo flow on `subject`; it fails (and is reverted) when `fail` is set.
async fn run_demo(h: &Harness, subject: &str, fail: bool) -> String {
    let engine = Engine::new(h.flows.clone());
    let id = format!("flow-{subject}");
    let spec = FlowSpec {
        id: Some(id.clone()),
        subject: Some(subject.to_owned()),
        inputs: Values::new().with(&demo::FAIL, fail),
        ..FlowSpec::default()
    };
    let compiled = demo::flow().compile().unwrap();
    let outcome = engine.run_spec(&compiled, spec, &CancellationToken::new()).await;
    assert_eq!(outcome.is_err(), fail, "{:?}", outcome.err());
    id
}

/// A flow held by a dead owner whose lease has not lapsed yet.
async fn stuck_flow(h: &Harness, id: &str) {
    let new = NewFlow {
        id: id.to_owned(),
        name: demo::FLOW.to_owned(),
        inputs: Values::new().with(&demo::FAIL, false),
        topic: "stuck-topic".to_owned(),
        subject: Some("vol-stuck".to_owned()),
        owner: Some(("dead-worker".to_owned(), now_ms() + 600_000)),
    };
    h.flows.create_flow(&new).await.unwrap();
}

fn claim(owner: &str) -> ClaimRequest {
    let now = now_ms();
    ClaimRequest {
        owner: owner.to_owned(),
        topics: vec!["stuck-topic".to_owned()],
        names: Vec::new(),
        lease_until: now + 30_000,
        now,
        lapsed_before: i64::MAX,
        limit: 10,
        reclaim: None,
    }
}

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["flows"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn list_filters_and_pages() {
    let h = Harness::sqlite().await;
    let failed = run_demo(&h, "vol-1", true).await;
    let done = run_demo(&h, "vol-2", false).await;
    stuck_flow(&h, "stuck").await;

    let all = h.get("/flows", ADMIN, "3.0").await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    assert_eq!(ids(&all.body).len(), 3);
    let by_subject = h.get("/flows?subject=vol-1", ADMIN, "3.0").await;
    assert_eq!(ids(&by_subject.body), [failed.as_str()]);
    let state = by_subject.body["flows"][0]["state"].as_str().unwrap().to_owned();
    assert_eq!(state, "REVERTED");
    let by_state = h.get("/flows?state=success", ADMIN, "3.0").await;
    assert_eq!(ids(&by_state.body), [done.as_str()]);
    let by_owner = h.get("/flows?owner=dead-worker", ADMIN, "3.0").await;
    assert_eq!(ids(&by_owner.body), ["stuck"]);
    let by_name = h.get("/flows?name=other", ADMIN, "3.0").await;
    assert!(ids(&by_name.body).is_empty());
    let future = now_ms() + 60_000;
    let later = h.get(&format!("/flows?created_after={future}"), ADMIN, "3.0").await;
    assert!(ids(&later.body).is_empty());
    let before = h.get("/flows?created_before=2100-01-01T00:00:00Z", ADMIN, "3.0").await;
    assert_eq!(ids(&before.body).len(), 3);
    let page = h.get("/flows?limit=2&offset=1", ADMIN, "3.0").await;
    assert_eq!(ids(&page.body), ids(&all.body)[1..3]);

    let of_volume = h.get("/volumes/vol-1/flows", ADMIN, "3.0").await;
    assert_eq!(ids(&of_volume.body), [failed.as_str()]);
    let of_snapshot = h.get("/snapshots/vol-stuck/flows", ADMIN, "3.0").await;
    assert_eq!(ids(&of_snapshot.body), ["stuck"]);

    h.get("/flows?state=sleeping", ADMIN, "3.0").await.fault(400, "badRequest");
    h.get("/flows?created_after=yesterday", ADMIN, "3.0").await.fault(400, "badRequest");
    h.get("/flows?limit=many", ADMIN, "3.0").await.fault(400, "badRequest");
    h.cleanup().await;
}

#[tokio::test]
async fn show_gives_atoms_with_results_and_failures() {
    let h = Harness::sqlite().await;
    let id = run_demo(&h, "vol-1", true).await;
    let a = h.get(&format!("/flows/{id}"), ADMIN, "3.0").await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let flow = &a.body["flow"];
    assert_eq!((flow["name"].as_str(), flow["subject"].as_str()), (Some(demo::FLOW), Some("vol-1")));
    assert_eq!(flow["inputs"], json!({"fail": true}));
    let atoms = flow["atoms"].as_array().unwrap();
    let atom = |name: &str| atoms.iter().find(|a| a["name"] == name).unwrap().clone();
    let measure = atom("measure");
    assert_eq!(measure["state"], "REVERTED");
    assert_eq!(measure["attempts"], 1);
    let attach = atom("attach");
    assert_eq!(attach["failure"]["kind"], "AttachFailed");
    assert_eq!(attach["failure"]["causes"], json!(["disk full"]));
    assert!(attach["created_at"].is_string() && attach["duration_ms"].is_number());

    let ok = run_demo(&h, "vol-2", false).await;
    let a = h.get(&format!("/flows/{ok}"), ADMIN, "3.0").await;
    // Atoms come in the flow's order, whatever millisecond each was written in.
    let atoms = a.body["flow"]["atoms"].as_array().unwrap();
    let names: Vec<&str> = atoms.iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names, ["measure", "attach"]);
    let measure = &atoms[0];
    assert_eq!((&measure["state"], &measure["result"]), (&json!("SUCCESS"), &json!({"measured_size": 42})));

    h.get("/flows/nope", ADMIN, "3.0").await.fault(404, "itemNotFound");
    h.cleanup().await;
}

#[tokio::test]
async fn graphs_are_dot_or_mermaid_text() {
    let h = Harness::sqlite().await;
    let id = run_demo(&h, "vol-1", false).await;
    let (status, content_type, dot) = h.get_text(&format!("/flows/{id}/graph"), ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{dot}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(dot.starts_with("digraph") && dot.contains("\"measure\" -> \"attach\""), "{dot}");
    let (status, _, mermaid) = h.get_text(&format!("/flows/{id}/graph?format=mermaid"), ADMIN).await;
    assert_eq!(status, StatusCode::OK);
    assert!(mermaid.starts_with("flowchart TD") && mermaid.contains("a0 --> a1"), "{mermaid}");

    h.get(&format!("/flows/{id}/graph?format=png"), ADMIN, "3.0").await.fault(400, "badRequest");
    h.get("/flows/nope/graph", ADMIN, "3.0").await.fault(404, "itemNotFound");
    // A flow whose factory the registry does not know cannot be drawn, and says so.
    let unknown = NewFlow {
        id: "unknown".into(),
        name: "mystery".into(),
        inputs: Values::new(),
        topic: "t".into(),
        subject: None,
        owner: None,
    };
    h.flows.create_flow(&unknown).await.unwrap();
    let msg = h.get("/flows/unknown/graph", ADMIN, "3.0").await.fault(501, "notImplemented");
    assert!(msg.contains("mystery"), "{msg}");
    h.cleanup().await;
}

#[tokio::test]
async fn the_graph_as_json_gives_atoms_and_edges_for_the_console() {
    let h = Harness::sqlite().await;
    let id = run_demo(&h, "vol-1", false).await;
    let answer = h.get(&format!("/flows/{id}/graph?format=json"), ADMIN, "3.0").await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let body = answer.body;
    let atoms: Vec<&str> =
        body["graph"]["atoms"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert!(atoms.contains(&"measure") && atoms.contains(&"attach"), "{body}");
    assert!(body["graph"]["edges"].as_array().unwrap().contains(&json!(["measure", "attach"])), "{body}");
    h.cleanup().await;
}

/// GET with `If-None-Match: tag`: the status, the ETag answered and the body text.
async fn get_if_none_match(h: &Harness, path: &str, tag: Option<&str>) -> (StatusCode, String, String) {
    use tower::ServiceExt as _;
    let mut req = axum::http::Request::builder().uri(format!("/v3/p1{path}")).header("x-auth-token", ADMIN);
    if let Some(tag) = tag {
        req = req.header("if-none-match", tag);
    }
    let response = h.app.clone().oneshot(req.body(axum::body::Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, etag, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn polls_of_an_unchanged_list_or_flow_answer_304() {
    let h = Harness::sqlite().await;
    let id = run_demo(&h, "vol-1", false).await;
    for path in ["/flows".to_owned(), format!("/flows/{id}")] {
        let (status, tag, body) = get_if_none_match(&h, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(tag.starts_with('"') && tag.len() == 34, "{tag}");
        let (status, again, body) = get_if_none_match(&h, &path, Some(&tag)).await;
        assert_eq!((status, again.as_str(), body.as_str()), (StatusCode::NOT_MODIFIED, tag.as_str(), ""));
        let (status, _, _) = get_if_none_match(&h, &path, Some("\"other\"")).await;
        assert_eq!(status, StatusCode::OK);
    }
    // A change gives a new tag.
    let (_, before, _) = get_if_none_match(&h, "/flows", None).await;
    run_demo(&h, "vol-2", false).await;
    let (status, after, _) = get_if_none_match(&h, "/flows", Some(&before)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(after, before);
    h.cleanup().await;
}

#[tokio::test]
async fn resume_and_revert_act_on_a_stuck_flow() {
    let h = Harness::sqlite().await;
    stuck_flow(&h, "stuck").await;
    assert!(h.flows.claim(&claim("peer")).await.unwrap().is_empty(), "the lease holds");

    let a = h.post("/flows/stuck/action", ADMIN, "3.0", json!({"resume": {}})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    assert_eq!(a.body["flow"]["owner"], serde_json::Value::Null);
    let claimed = h.flows.claim(&claim("peer")).await.unwrap();
    assert_eq!(claimed.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["stuck"]);

    let done = run_demo(&h, "vol-2", false).await;
    let msg = h.post(&format!("/flows/{done}/action"), ADMIN, "3.0", json!({"resume": {}})).await;
    assert!(msg.fault(409, "conflictingRequest").contains("SUCCESS"));
    h.post("/flows/nope/action", ADMIN, "3.0", json!({"resume": {}})).await.fault(404, "itemNotFound");
    h.post("/flows/stuck/action", ADMIN, "3.0", json!({"fly": {}})).await.fault(400, "badRequest");
    // Nothing of the stuck flow ran, so a revert ends it at once; then there is nothing left.
    let revert = h.post("/flows/stuck/action", ADMIN, "3.0", json!({"revert": {}})).await;
    assert_eq!(revert.status, StatusCode::ACCEPTED, "{:?}", revert.body);
    assert_eq!(
        (&revert.body["flow"]["state"], &revert.body["flow"]["owner"]),
        (&json!("REVERTED"), &json!(null))
    );
    let again = h.post("/flows/stuck/action", ADMIN, "3.0", json!({"revert": {}})).await;
    assert!(again.fault(409, "conflictingRequest").contains("REVERTED"));
    h.post("/flows/nope/action", ADMIN, "3.0", json!({"revert": {}})).await.fault(404, "itemNotFound");
    h.cleanup().await;
}

#[tokio::test]
async fn only_admins_see_flows() {
    let h = Harness::with_tokens().await;
    run_demo(&h, "vol-1", false).await;
    for path in ["/flows", "/flows/flow-vol-1", "/flows/flow-vol-1/graph", "/volumes/vol-1/flows"] {
        h.get(path, "alice", "3.0").await.fault(403, "forbidden");
        assert_eq!(h.get(path, "bob", "3.0").await.status, StatusCode::FORBIDDEN);
    }
    let a = h.post("/flows/flow-vol-1/action", "alice", "3.0", json!({"resume": {}})).await;
    a.fault(403, "forbidden");
    assert_eq!(h.get("/flows", "admin", "3.0").await.status, StatusCode::OK);
    h.cleanup().await;
}
