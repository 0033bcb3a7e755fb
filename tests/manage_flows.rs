//! `ember manage flows`: the real binary against a SQLite file holding flows recorded by
//! the real SQL store.

use ember_db::flow_store::SqlFlowStore;
use ember_db::testing::TestDb;
use ember_engine::store::now_ms;
use std::process::Output;
use std::sync::Arc;

use ember_engine::{
    AtomKind, AtomState, AtomWrite, Failure, Fence, FlowState, FlowStore, Intention, NewFlow, Ownership,
    Values, WriteBatch,
};

async fn ember(url: &str, args: &[&str]) -> Output {
    let mut all = vec!["manage", "flows"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--database-url", url]);
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(&all)
        .env("EMBER_LOG", "warn")
        .env_remove("EMBER_CONFIG")
        .output()
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    assert!(!o.status.success(), "stdout: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn flow(id: &str, subject: &str, owner: Option<&str>) -> NewFlow {
    NewFlow {
        id: id.to_owned(),
        name: ember_flows::api::create_volume::FLOW.to_owned(),
        inputs: Values::new(),
        topic: "api".to_owned(),
        subject: Some(subject.to_owned()),
        owner: owner.map(|o| (o.to_owned(), now_ms() + 600_000)),
    }
}

#[tokio::test]
async fn list_show_draw_resume_and_revert() {
    let db = TestDb::sqlite().await.unwrap();
    let store = SqlFlowStore::new(db.db.clone());
    store.create_flow(&flow("flow-a", "vol-a", Some("dead-api"))).await.unwrap();
    store.create_flow(&flow("flow-b", "vol-b", None)).await.unwrap();
    let url = db.url.clone();

    let list = stdout(&ember(&url, &["list"]).await);
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("SUBJECT"), "{list}");
    assert_eq!(lines.len(), 3, "{list}");
    let only_a = stdout(&ember(&url, &["list", "--subject", "vol-a", "--state", "pending"]).await);
    assert!(
        only_a.contains("flow-a") && only_a.contains("dead-api") && !only_a.contains("flow-b"),
        "{only_a}"
    );
    assert!(stderr(&ember(&url, &["list", "--since", "someday"]).await).contains("invalid time"));

    let show = stdout(&ember(&url, &["show", "flow-b"]).await);
    assert!(show.contains("flow-b") && show.contains("no atom has run yet"), "{show}");
    let mut failure = Failure::new("VolumeBackendAPIException", "create failed");
    failure.causes.push("disk full".into());
    let atom = AtomWrite {
        name: Arc::from("create_volume"),
        kind: AtomKind::Task,
        state: AtomState::Failure,
        intention: Intention::Revert,
        attempts: 2,
        result: None,
        failure: Some(failure),
        revert_failure: None,
        history: None,
    };
    let fence = Fence { flow_id: Arc::from("flow-a"), owner: Arc::from("dead-api"), epoch: 1 };
    let batch =
        WriteBatch { flow_state: Some(FlowState::Running), atoms: vec![atom], ownership: Ownership::Keep };
    store.write(&fence, batch).await.unwrap();
    let show = stdout(&ember(&url, &["show", "flow-a"]).await);
    let row = show.lines().find(|l| l.starts_with("create_volume")).unwrap_or_else(|| panic!("{show}"));
    assert!(
        row.contains("FAILURE") && row.contains(" 2 ") && row.contains("create failed: disk full"),
        "{row}"
    );
    assert!(stderr(&ember(&url, &["show", "nope"]).await).contains("could not be found"));

    let dot = stdout(&ember(&url, &["draw", "flow-a"]).await);
    assert!(dot.starts_with("digraph") && dot.contains("->"), "{dot}");
    let mermaid = stdout(&ember(&url, &["draw", "flow-a", "--format", "mermaid"]).await);
    assert!(mermaid.starts_with("flowchart TD"), "{mermaid}");

    let resumed = stdout(&ember(&url, &["resume", "flow-a"]).await);
    assert!(resumed.contains("released"), "{resumed}");
    assert_eq!(store.get_flow("flow-a").await.unwrap().unwrap().flow.owner, None);
    // flow-a's create_volume ran (and failed): a worker of its topic reverts it.
    let reverted = stdout(&ember(&url, &["revert", "flow-a"]).await);
    assert!(reverted.contains("marked for revert"), "{reverted}");
    let stored = store.get_flow("flow-a").await.unwrap().unwrap();
    assert_eq!((stored.flow.state, stored.atoms[0].intention), (FlowState::Running, Intention::Revert));
    let reverted = stdout(&ember(&url, &["revert", "flow-b"]).await);
    assert!(reverted.contains("none of its tasks had run"), "{reverted}");
    assert!(stderr(&ember(&url, &["revert", "flow-b"]).await).contains("nothing to revert"));
    db.cleanup().await.unwrap();
}
