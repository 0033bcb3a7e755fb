//! End-to-end: operating Ember. `/metrics` after a scripted mix of operations holds every
//! family with the right counts (and a takeover after a crash); JSON logs parse line by
//! line and carry request and flow ids; text logs into a file have no colours; finished
//! flows are purged by the scheduler and by `ember manage db purge`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Cinder, TestCluster};

const PROJECT: &str = "obs00000000000000000000000000000";

/// Every sample of `/metrics` as `name{labels}` → value.
async fn scrape(base_url: &str) -> BTreeMap<String, f64> {
    let text = reqwest::get(format!("{base_url}/metrics")).await.expect("GET /metrics").text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Polls `/metrics` until every `(series, value)` of `want` holds, or panics at the deadline
/// naming what differs (flows finish a moment after their resource's status changes).
async fn wait_metrics(base_url: &str, want: &[(&str, f64)]) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = scrape(base_url).await;
        let wrong: Vec<_> =
            want.iter().filter(|(s, v)| got.get(*s) != Some(v)).map(|(s, v)| (s, v, got.get(*s))).collect();
        if wrong.is_empty() {
            return got;
        }
        assert!(Instant::now() < deadline, "metrics differ (series, wanted, got): {wrong:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sum(got: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    got.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[tokio::test]
async fn metrics_count_a_scripted_mix_of_operations() {
    let cluster = TestCluster::all_in_one_with("quota_gigabytes = 10\n").await;
    let c = cluster.client(PROJECT);
    let vol = c.create_volume(json!({ "size": 1 })).await;
    c.wait_status(&format!("/volumes/{vol}"), "available", deadline()).await;
    let (status, _) =
        c.post(&format!("/volumes/{vol}/action"), json!({ "os-extend": { "new_size": 2 } })).await;
    assert_eq!(status, 202);
    let extended = loop {
        let v = c.wait_status(&format!("/volumes/{vol}"), "available", deadline()).await;
        if v["size"] == 2 {
            break v;
        }
    };
    assert_eq!(extended["size"], 2);
    let snap = c.create_snapshot(&vol).await;
    c.wait_status(&format!("/snapshots/{snap}"), "available", deadline()).await;
    assert_eq!(c.delete(&format!("/snapshots/{snap}")).await, 202);
    c.wait_status(&format!("/snapshots/{snap}"), "gone", deadline()).await;
    // Over quota: the api flow fails at QuotaReserveTask and reverts.
    let (status, _) = c.post("/volumes", json!({ "volume": { "size": 50 } })).await;
    assert_eq!(status, 413);
    assert_eq!(c.get("/volumes/00000000-0000-0000-0000-000000000000").await.0, 404);
    assert_eq!(c.get("/no-such-thing/1").await.0, 404);
    let outside = reqwest::get(format!("{}/no-such-thing", cluster.base_url)).await.unwrap();
    assert_eq!(outside.status(), 404);
    assert_eq!(c.delete(&format!("/volumes/{vol}")).await, 202);
    c.wait_status(&format!("/volumes/{vol}"), "gone", deadline()).await;

    let volumes = "/v3/{project_id}/volumes";
    let one = |flow: &str, what: &str| (format!("ember_flows_{what}_total{{flow=\"{flow}\"}}"), 1.0);
    let mut want: Vec<(String, f64)> = vec![
        (format!("ember_http_requests_total{{method=\"POST\",route=\"{volumes}\",status=\"202\"}}"), 1.0),
        (format!("ember_http_requests_total{{method=\"POST\",route=\"{volumes}\",status=\"413\"}}"), 1.0),
        (format!("ember_http_requests_total{{method=\"DELETE\",route=\"{volumes}/{{id}}\",status=\"202\"}}"), 1.0),
        (format!("ember_http_request_duration_seconds_count{{method=\"POST\",route=\"{volumes}\",status=\"413\"}}"), 1.0),
        ("ember_flows_started_total{flow=\"volume_create_api\"}".into(), 2.0),
        ("ember_flows_reverted_total{flow=\"volume_create_api\"}".into(), 1.0),
        (
            "ember_flow_step_failures_total{flow=\"volume_create_api\",step=\"QuotaReserveTask\",phase=\"execute\"}"
                .into(),
            1.0,
        ),
        (
            "ember_flow_step_duration_seconds_count{flow=\"volume_create_manager\",step=\"CreateVolumeFromSpecTask\",state=\"SUCCESS\"}"
                .into(),
            1.0,
        ),
    ];
    for flow in [
        "volume_create_scheduler",
        "volume_create_manager",
        "volume_extend_api",
        "volume_extend_manager",
        "snapshot_create_api",
        "snapshot_create_manager",
        "snapshot_delete_api",
        "snapshot_delete_manager",
        "volume_delete_api",
        "volume_delete_manager",
    ] {
        want.push(one(flow, "started"));
        want.push(one(flow, "succeeded"));
    }
    want.push(one("volume_create_api", "succeeded"));
    let want: Vec<(&str, f64)> = want.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    let got = wait_metrics(&cluster.base_url, &want).await;

    // The missing volume (and the poll that saw the deleted one gone) is counted under its
    // route; unknown paths (under a project and outside) share one series.
    let missing =
        "ember_http_requests_total{method=\"GET\",route=\"/v3/{project_id}/volumes/{id}\",status=\"404\"}";
    assert_eq!(got.get(missing), Some(&2.0), "{got:#?}");
    assert!(!got.keys().any(|k| k.contains("no-such-thing")), "{got:#?}");
    let unmatched = "ember_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}";
    assert_eq!(got.get(unmatched), Some(&2.0), "{got:#?}");
    assert_eq!(sum(&got, "ember_flows_failed_total"), 0.0);
    assert_eq!(sum(&got, "ember_flows_resumed_total") + sum(&got, "ember_flows_taken_over_total"), 0.0);
    assert_eq!(sum(&got, "ember_flow_step_failures_total"), 1.0);
    assert!(got.keys().any(|k| k.starts_with("ember_http_request_duration_seconds_bucket{")));
    assert!(
        got.keys()
            .any(|k| k.starts_with("ember_flow_duration_seconds_bucket{flow=\"volume_create_manager\""))
    );
    // The workers claimed the hand-offs: scheduler (1) and volume (5 manager flows), in
    // their first sweep or later.
    let claimed = |role: &str| {
        let role = format!("role=\"{role}\"");
        got.iter()
            .filter(|(k, _)| k.starts_with("ember_worker_flows_claimed") && k.contains(&role))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert_eq!(claimed("scheduler"), 1.0, "{got:#?}");
    assert_eq!(claimed("volume"), 5.0, "{got:#?}");
    assert_eq!(sum(&got, "ember_worker_flows_succeeded_total{role=\"volume\""), 5.0, "{got:#?}");
    // Backend capacity, reported by the file backend's pool.
    for kind in ["total", "free", "allocated", "provisioned"] {
        let series = got.iter().find(|(k, _)| k.starts_with(&format!("ember_backend_{kind}_capacity_gib{{")));
        let (_, value) = series.unwrap_or_else(|| panic!("no {kind} capacity gauge: {got:#?}"));
        assert!(*value >= 0.0, "{kind}: {value}");
    }
    // Liveness of every service of the all-in-one.
    for binary in ["ember-volume", "ember-scheduler"] {
        let up = got.iter().find(|(k, _)| k.starts_with(&format!("ember_service_up{{binary=\"{binary}\"")));
        assert_eq!(up.map(|(_, v)| *v), Some(1.0), "{binary} is up: {got:#?}");
        assert!(
            got.keys()
                .any(|k| k.starts_with(&format!("ember_service_heartbeat_age_seconds{{binary=\"{binary}\"")))
        );
    }
    // RPC: a wake cast per hand-off (scheduler 1, volume 5), capability reports fanned out.
    // Today's flows make no RPC calls, so that family has no series yet.
    assert!(sum(&got, "ember_rpc_casts_total{topic=\"") >= 6.0, "{got:#?}");
    assert!(
        got.keys().any(|k| k.starts_with("ember_rpc_fanout_casts_total{")
            && k.contains("method=\"update_service_capabilities\"")
            && k.contains("outcome=\"ok\"")),
        "{got:#?}"
    );
    assert!(!got.keys().any(|k| k.starts_with("ember_rpc_calls_total{")));
}

#[tokio::test]
async fn a_flow_taken_over_after_a_crash_is_counted() {
    let mut cluster = TestCluster::all_in_one().await;
    cluster.kill();
    let failpoint = "volume_create_manager.CreateVolumeFromSpecTask.after";
    cluster.env = vec![("FAILPOINTS".into(), format!("{failpoint}=1*return"))];
    cluster.start().await;
    let c = cluster.client(PROJECT);
    let vol = c.create_volume(json!({ "size": 1 })).await;
    assert!(cluster.wait_exit(Duration::from_secs(60)).await.is_some(), "{failpoint} was not reached");
    cluster.env.clear();
    cluster.start().await;
    c.wait_status(&format!("/volumes/{vol}"), "available", deadline()).await;
    let got = wait_metrics(
        &cluster.base_url,
        &[
            ("ember_flows_taken_over_total{flow=\"volume_create_manager\"}", 1.0),
            ("ember_flows_succeeded_total{flow=\"volume_create_manager\"}", 1.0),
        ],
    )
    .await;
    assert_eq!(sum(&got, "ember_worker_flows_reclaimed_at_start_total{role=\"volume\""), 1.0, "{got:#?}");
    assert_eq!(sum(&got, "ember_flows_started_total{flow=\"volume_create_manager\"}"), 0.0, "{got:#?}");
}

/// Starts `ember all-in-one` with `env`, standard error into `log`; returns the child
/// and its base URL once healthy.
async fn start_logging(dir: &Path, log: &Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    let port = support::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["all-in-one", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start ember all-in-one");
    let base_url = format!("http://127.0.0.1:{port}");
    support::wait_healthy(&base_url, Duration::from_secs(30)).await;
    (child, base_url)
}

fn spans(line: &Value) -> Vec<Value> {
    line["spans"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn json_logs_parse_and_carry_request_and_flow_ids() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ember.log");
    let env = [("EMBER_LOG_FORMAT", "json"), ("EMBER_LOG", "info,ember_engine=debug")];
    let (mut child, base_url) = start_logging(dir.path(), &log, &env).await;
    let response = reqwest::Client::new()
        .post(format!("{base_url}/v3/{PROJECT}/volumes"))
        .header("X-Auth-Token", format!("tester:{PROJECT}"))
        .json(&json!({ "volume": { "size": 1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let request_id = response.headers()["x-openstack-request-id"].to_str().unwrap().to_owned();
    let id = response.json::<Value>().await.unwrap()["volume"]["id"].as_str().unwrap().to_owned();
    Cinder::new(&base_url, PROJECT).wait_status(&format!("/volumes/{id}"), "available", deadline()).await;
    // The manager flow logs its last transitions a moment after the status changes.
    let deadline = deadline();
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let done = lines.iter().any(|l| {
            l["message"] == "flow transition" && l["flow"] == "volume_create_manager" && l["to"] == "SUCCESS"
        });
        if done {
            break lines;
        }
        assert!(Instant::now() < deadline, "the manager flow's success was not logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    for line in &lines {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string() && line["target"].is_string(),
            "{line}"
        );
        for span in spans(line) {
            if span["name"] == "request" {
                assert!(span["request_id"].as_str().is_some_and(|r| r.starts_with("req-")), "{line}");
            }
        }
        // Every line a flow causes names it: the engine's transitions carry the flow span.
        if line["message"] == "atom transition" || line["message"] == "flow transition" {
            let flow = spans(line).into_iter().find(|s| s["name"] == "flow");
            let flow = flow.unwrap_or_else(|| panic!("no flow span: {line}"));
            assert_eq!(flow["flow_id"], line["flow_id"], "{line}");
        }
    }
    // The api flow ran inside the request: its lines carry both ids.
    let in_request = lines.iter().filter(|l| {
        let s = spans(l);
        s.iter().any(|s| s["name"] == "request" && s["request_id"] == request_id.as_str())
            && s.iter().any(|s| s["name"] == "flow" && s["flow"] == "volume_create_api")
    });
    assert!(in_request.count() >= 5, "the api flow's transitions carry request {request_id}");
}

#[tokio::test]
async fn text_logs_into_a_file_have_no_colours() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ember.log");
    let (mut child, _) = start_logging(dir.path(), &log, &[("EMBER_LOG", "info")]).await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("ember is up"), "{text}");
    assert!(!text.contains('\u{1b}'), "ANSI escapes in a file: {text}");
}

async fn flows_of(cluster: &TestCluster, id: &str) -> Vec<Value> {
    let (status, body) = cluster.client(PROJECT).get(&format!("/flows?subject={id}")).await;
    assert_eq!(status, 200, "{body}");
    body["flows"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn finished_flows_are_purged_by_the_scheduler_and_by_manage() {
    let mut cluster = TestCluster::all_in_one().await;
    let c = cluster.client(PROJECT);
    let kept = c.create_volume(json!({ "size": 1 })).await;
    let gone = c.create_volume(json!({ "size": 1 })).await;
    for id in [&kept, &gone] {
        c.wait_status(&format!("/volumes/{id}"), "available", deadline()).await;
    }
    assert_eq!(c.delete(&format!("/volumes/{gone}")).await, 202);
    c.wait_status(&format!("/volumes/{gone}"), "gone", deadline()).await;
    let deadline = deadline();
    while !flows_of(&cluster, &gone).await.iter().all(|f| f["state"] == "SUCCESS") {
        assert!(Instant::now() < deadline, "the flows of {gone} did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        flows_of(&cluster, &gone).await.len(),
        5,
        "create (api, scheduler, manager), delete (api, manager)"
    );
    cluster.kill();

    // Forty days pass for every flow.
    let url = format!("sqlite://{}", cluster.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "UPDATE flows SET updated_at = updated_at - 40 * 86400000, created_at = created_at - 40 * 86400000",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    cluster.start().await;
    // The scheduler's purge at start takes the finished flows of the deleted volume; the
    // live volume's flows stay.
    while !flows_of(&cluster, &gone).await.is_empty() {
        assert!(Instant::now() < deadline, "the flows of {gone} were not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(flows_of(&cluster, &kept).await.len(), 3, "the flows of a live volume stay");

    // On demand: the soft-deleted volume row goes too.
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["manage", "db", "purge", "--age-in-days", "0", "--data-dir"])
        .arg(cluster.data_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let volumes = stdout.lines().find(|l| l.starts_with("volumes ")).unwrap_or_default();
    assert!(volumes.ends_with(" 1"), "one deleted volume purged: {stdout}");
    let (status, _) = c.get(&format!("/volumes/{gone}")).await;
    assert_eq!(status, 404);
    assert_eq!(flows_of(&cluster, &kept).await.len(), 3, "manage keeps a live volume's flows too");
}
