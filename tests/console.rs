//! End-to-end: the web console (`GET /console`) in a real headless Chromium, driven over
//! WebDriver, against the real `ember all-in-one`. A volume's create flow fails and its
//! revert fails too (failpoints), so the flow ends in FAILURE; the operator finds it in the
//! list, by the volume's id, sees its graph and timeline, and reverts it from the page.
//! Screenshots go to `<target>/console-screenshots/` (CI keeps them).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::TestCluster;
use support::webdriver::{self, Browser};

const PROJECT: &str = "con00000000000000000000000000000";
const FLOW: &str = "volume_create_manager";
const WAIT: Duration = Duration::from_secs(60);

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("console-screenshots")
}

async fn admin_get(cluster: &TestCluster, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/v3/{PROJECT}{path}", cluster.base_url))
        .header("X-Auth-Token", format!("admin:{PROJECT}"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the admin API until the volume's manager flow is in `state`; returns the flow.
async fn wait_flow_state(cluster: &TestCluster, volume: &str, state: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let body = admin_get(cluster, &format!("/flows?subject={volume}&name={FLOW}")).await;
        if let Some(f) = body["flows"].as_array().and_then(|a| a.iter().find(|f| f["state"] == state)) {
            return f.clone();
        }
        assert!(Instant::now() < deadline, "the {FLOW} flow of {volume} never reached {state}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_console_lists_draws_and_reverts_a_failed_flow_in_a_browser() {
    if let Some(why) = webdriver::missing() {
        println!("skipped: {why}");
        return;
    }
    let mut cluster = TestCluster::all_in_one().await;
    cluster.kill();
    // The driver step fails, then the first step's revert fails too: the flow stops in
    // FAILURE with a revert failure, waiting for an operator. Each failpoint fires once.
    cluster.env = vec![(
        "FAILPOINTS".into(),
        format!("{FLOW}.CreateVolumeFromSpecTask.before=1*panic;{FLOW}.ExtractVolumeRefTask.revert=1*panic"),
    )];
    cluster.start().await;
    let cinder = cluster.client(PROJECT);
    let failed = cinder.create_volume(json!({ "size": 1, "name": "fails" })).await;
    let flow = wait_flow_state(&cluster, &failed, "FAILURE").await;
    let flow_id = flow["id"].as_str().unwrap().to_owned();
    let ok = cinder.create_volume(json!({ "size": 1, "name": "works" })).await;
    cinder.wait_status(&format!("/volumes/{ok}"), "available", Instant::now() + WAIT).await;

    let browser = Browser::start().await;
    let dir = screenshots();
    browser.goto(&format!("{}/console", cluster.base_url)).await;
    // Without a token the page says what it needs and shows no data.
    browser
        .wait_for("the token prompt", "return document.getElementById('error').innerText", json!([]), WAIT)
        .await;
    browser.type_into("#token", &format!("admin:{PROJECT}")).await;
    browser.click("#login button").await;

    // The list: both volumes' flows, the failed one marked FAILURE; new flows appear live.
    let rows = r#"return [...document.querySelectorAll('#flows tbody tr')].map(r => [r.dataset.flow, r.dataset.state])"#;
    let listed = browser
        .wait_for(
            "the flows of both volumes",
            &format!("const r = (() => {{ {rows} }})(); return r.length >= 6 && r.some(x => x[0] === arguments[0] && x[1] === 'FAILURE') ? r : null"),
            json!([flow_id]),
            WAIT,
        )
        .await;
    assert!(listed.as_array().unwrap().iter().any(|r| r[1] == "SUCCESS"), "{listed}");
    browser.screenshot(&dir.join("1-list.png")).await;

    // The search by resource id: only the failed volume's flows.
    browser.type_into("#f-subject", &failed).await;
    browser.click("#filters button[type=submit]").await;
    let subjects = r#"const s = [...document.querySelectorAll('#flows tbody tr td:nth-child(4)')].map(td => td.innerText);
        return s.length > 0 && s.every(x => x === arguments[0]) ? s : null"#;
    browser.wait_for("only the failed volume's flows", subjects, json!([failed]), WAIT).await;
    browser.screenshot(&dir.join("2-by-volume.png")).await;

    // The flow: its graph with coloured steps, its timeline with the failure and its cause.
    browser.click(&format!("#flows tbody tr[data-flow='{flow_id}'] td a")).await;
    let atoms = r#"const g = [...document.querySelectorAll('#graph svg g.atom')];
        return g.length ? g.map(a => [a.dataset.atom, a.dataset.state, a.querySelector('rect').getAttribute('fill')]) : null"#;
    let drawn = browser.wait_for("the graph", atoms, json!([]), WAIT).await;
    let drawn = drawn.as_array().unwrap();
    let state_of = |name: &str| drawn.iter().find(|a| a[0] == name).map(|a| (a[1].clone(), a[2].clone()));
    // The failed step was reverted with the others (its failure stays in the timeline).
    let (s, fill) = state_of("CreateVolumeFromSpecTask").expect("the driver step is drawn");
    assert_eq!(s, "REVERTED", "{drawn:?}");
    assert_eq!(fill, "#ef6c00", "a reverted step is orange: {drawn:?}");
    let (s, fill) = state_of("ExtractVolumeRefTask").expect("the first step is drawn");
    assert_eq!(s, "REVERT_FAILURE", "{drawn:?}");
    assert_ne!(fill, "#c62828", "{drawn:?}");
    assert_eq!(drawn.len(), 7, "every step of {FLOW} is drawn: {drawn:?}");
    let edges = browser
        .eval("return document.querySelectorAll('#graph svg path[marker-end]').length", json!([]))
        .await;
    assert_eq!(edges, json!(6), "a linear flow of seven steps has six edges");
    let timeline = r#"return [...document.querySelectorAll('#timeline tbody tr')].map(r =>
        [r.dataset.atom, r.dataset.state, r.cells[2].innerText, r.cells[6].innerText])"#;
    let steps = browser.eval(timeline, json!([])).await;
    let failing = steps
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == "CreateVolumeFromSpecTask")
        .expect("in the timeline");
    assert!(failing[3].as_str().unwrap().contains("failpoint"), "the failure's cause is shown: {steps}");
    assert_eq!(failing[2], "1", "one attempt: {steps}");
    let first = steps.as_array().unwrap().iter().find(|r| r[0] == "ExtractVolumeRefTask").unwrap();
    assert!(first[3].as_str().unwrap().starts_with("revert:"), "the revert failure is shown: {steps}");
    browser.screenshot(&dir.join("3-flow-failed.png")).await;

    // Revert, with a confirmation: Cancel changes nothing, Confirm reverts.
    browser.click("#revert").await;
    browser.wait_for("the dialog", "return document.getElementById('confirm').open", json!([]), WAIT).await;
    browser.screenshot(&dir.join("4-confirm.png")).await;
    browser.click("#confirm-cancel").await;
    let after_cancel = admin_get(&cluster, &format!("/flows/{}", flow_id.replace(':', "%3A"))).await;
    assert_eq!(after_cancel["flow"]["state"], "FAILURE", "cancel must not act: {after_cancel}");
    browser.click("#revert").await;
    browser.wait_for("the dialog", "return document.getElementById('confirm').open", json!([]), WAIT).await;
    browser.click("#confirm-ok").await;
    let state =
        "const s = document.getElementById('flow-state').innerText; return s === 'REVERTED' ? s : null";
    browser.wait_for("the flow to be reverted on the page", state, json!([]), WAIT).await;
    browser
        .wait_for(
            "every step reverted in the graph",
            "const g = [...document.querySelectorAll('#graph svg g.atom')]; return g.length === 7 && g.every(a => ['REVERTED','PENDING'].includes(a.dataset.state))",
            json!([]),
            WAIT,
        )
        .await;
    browser.screenshot(&dir.join("5-flow-reverted.png")).await;
    let reverted = wait_flow_state(&cluster, &failed, "REVERTED").await;
    assert_eq!(reverted["id"], json!(flow_id));
    // The volume left its transition: the first step's revert puts it in error.
    cinder.wait_status(&format!("/volumes/{failed}"), "error", Instant::now() + WAIT).await;
}

#[tokio::test]
async fn the_console_page_is_served_and_its_data_needs_an_admin() {
    let cluster = TestCluster::all_in_one().await;
    let r = reqwest::get(format!("{}/console", cluster.base_url)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("Ember console"));
    // The data calls go through the API's auth: no token, no flows.
    let r = reqwest::get(format!("{}/v3/{PROJECT}/flows", cluster.base_url)).await.unwrap();
    assert_eq!(r.status(), 401);
}
