//! The faults a storage service must survive (issue 15, items 5-7), each on the real binary
//! and each ending with the crash matrix's settle check (no transitional status, backend
//! files == live resources, quota == live resources):
//!
//! - a `qemu-img` that hangs: killed at `qemu_img_timeout` with its children, the step
//!   fails, the flow reverts or reschedules, nothing left running or unreaped;
//! - the backend's file system full: creates, snapshots, extends and clones fail with
//!   Cinder's error statuses, no partial file, quota released; the scheduler hears at once
//!   and stops placing volumes there; all works again once space is freed;
//! - the SQLite file's file system full: 503 faults, an intact database, and all works
//!   again once space is freed.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::crash::{self, Case, Mode};
use support::faults::{FakeQemuImg, SmallFs, eventually, processes_with, zombie_children};
use support::{Cinder, TestCluster};

const PROJECT: &str = "faults";

/// The settle check of the crash matrix on this cluster's one project: after failures,
/// resources may rest in an error status; everything else must hold exactly.
async fn settle(cluster: &TestCluster, c: &Cinder, what: &str) {
    let files = || cluster.backend_files();
    let case = Case { cinder: c, project: PROJECT, what, mode: Mode::Failure, data_dir: None };
    let deadline = Instant::now() + Duration::from_secs(30);
    crash::settle(case, &[], &mut BTreeSet::new(), &files, deadline).await;
}

/// No file of `ids` (volumes or snapshots that failed) nor any `.tmp` is on the backend.
fn assert_no_partial_files(cluster: &TestCluster, failed: &[&str]) {
    let files = cluster.backend_files();
    for f in &files {
        assert!(!f.ends_with(".tmp"), "a partial file is left: {f} (all: {files:?})");
        assert!(!failed.iter().any(|id| f.ends_with(id)), "a failed resource kept its file {f}");
    }
}

async fn post(c: &Cinder, path: &str, body: Value) -> Value {
    let (status, answer) = c.post(path, body).await;
    assert_eq!(status, 202, "POST {path}: {answer}");
    answer
}

/// Creates a 1 GiB volume (from `extra`) and returns its id.
async fn create(c: &Cinder, extra: Value) -> String {
    let mut body = json!({ "size": 1 });
    body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    c.create_volume(body).await
}

/// The names of the flows that touched volume `id` (admin view).
async fn flows_of(c: &Cinder, id: &str) -> Vec<String> {
    let (status, body) = c.get(&format!("/volumes/{id}/flows")).await;
    assert_eq!(status, 200, "flows of {id}: {body}");
    body["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect()
}

/// The free capacity (GiB) of the backend's one pool in the last report the scheduler
/// applied (`ember_scheduler_reported_free_capacity_gib`): what its CapacityFilter reads.
/// The volume service's own gauge is set before the report travels, so waiting on it
/// leaves a create racing the report to the scheduler.
async fn reported_free_gib(base_url: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base_url}/metrics")).await.ok()?.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with("ember_scheduler_reported_free_capacity_gib{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn wait_reported_free(base_url: &str, what: &str, limit: Duration, ok: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let free = reported_free_gib(base_url).await;
        if free.is_some_and(&ok) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the scheduler's free capacity is {free:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Item 7: a stuck `qemu-img` (a copy and a resize that never end) is killed at
/// `qemu_img_timeout`; the snapshot goes to `error`, the clone is rescheduled and, with no
/// other backend, ends in `error`, the extend in `error_extending`; quota is released,
/// no partial file is left, the stuck child and its own child are gone and nothing is a
/// zombie. Once qemu-img answers again the same operations succeed.
#[tokio::test]
async fn a_hung_qemu_img_is_killed_and_its_step_fails() {
    let fake = FakeQemuImg::new();
    let toml = "[backends.file]\nqemu_img_timeout = 2\n";
    let env = vec![("PATH".to_owned(), fake.path_env())];
    let cluster = TestCluster::all_in_one_env(toml, env).await;
    let c = cluster.client(PROJECT);
    let deadline = || Instant::now() + Duration::from_secs(30);
    let base = create(&c, json!({ "name": "base" })).await;
    let to_extend = create(&c, json!({ "name": "to-extend" })).await;
    for v in [&base, &to_extend] {
        c.wait_status(&format!("/volumes/{v}"), "available", deadline()).await;
    }

    fake.hang(&["convert", "resize"]);
    let started = Instant::now();
    let snap = c.create_snapshot(&base).await;
    let clone = create(&c, json!({ "source_volid": base, "name": "clone" })).await;
    post(&c, &format!("/volumes/{to_extend}/action"), json!({ "os-extend": { "new_size": 2 } })).await;
    c.wait_status(&format!("/snapshots/{snap}"), "error", deadline()).await;
    c.wait_status(&format!("/volumes/{clone}"), "error", deadline()).await;
    c.wait_status(&format!("/volumes/{to_extend}"), "error_extending", deadline()).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "three 2 s deadlines took {took:?}");
    eventually("the hung qemu-img's child is killed", Duration::from_secs(10), || {
        processes_with(&fake.marker).is_empty()
    })
    .await;
    let pid = cluster.pid().expect("ember runs");
    eventually("no child of ember is left a zombie", Duration::from_secs(10), || {
        zombie_children(pid).is_empty()
    })
    .await;
    assert_no_partial_files(&cluster, &[&snap, &clone]);
    settle(&cluster, &c, "after the deadlines").await;

    fake.hang(&[]);
    let snap2 = c.create_snapshot(&base).await;
    let clone2 = create(&c, json!({ "source_volid": base, "name": "clone-2" })).await;
    c.wait_status(&format!("/snapshots/{snap2}"), "available", deadline()).await;
    c.wait_status(&format!("/volumes/{clone2}"), "available", deadline()).await;
    settle(&cluster, &c, "after qemu-img answers again").await;
}

/// Item 5: the backend's own small file system, filled to the last byte. A blank create
/// reaches the driver (the scheduler's last report still shows room) and fails; the
/// failure makes the volume service report at once, and the next create is refused by the
/// scheduler itself (no manager flow ran for it). Snapshots, extends and clones fail with
/// Cinder's statuses, leave no partial file and release their quota. Once the filler is
/// removed the backend reports room within seconds and everything succeeds again.
#[tokio::test]
async fn a_full_backend_fails_cleanly_and_recovers() {
    let Some(fs) = SmallFs::mount(256) else { return };
    let dir = fs.path().join("volumes");
    // periodic_interval is long, so only the report a failure asks for can explain the
    // scheduler's prompt change of mind.
    let toml = format!(
        "periodic_interval = 600\n[backends.file]\nfile_volume_dir = {:?}\n",
        dir.display().to_string()
    );
    let cluster = TestCluster::all_in_one_with(&toml).await;
    let files = || support::multi::list_files(&dir);
    let c = cluster.client(PROJECT);
    let deadline = || Instant::now() + Duration::from_secs(30);
    let base = create(&c, json!({ "name": "base" })).await;
    let to_extend = create(&c, json!({ "name": "to-extend" })).await;
    for v in [&base, &to_extend] {
        c.wait_status(&format!("/volumes/{v}"), "available", deadline()).await;
    }
    wait_reported_free(&cluster.base_url, "before filling", Duration::from_secs(10), |f| f > 0.1).await;

    let filled = fs.fill();
    assert!(fs.free_bytes() < 1 << 20, "the filler ({filled} bytes) left {} bytes free", fs.free_bytes());
    let blank = create(&c, json!({ "name": "blank-on-full" })).await;
    c.wait_status(&format!("/volumes/{blank}"), "error", deadline()).await;
    assert!(
        flows_of(&c, &blank).await.iter().any(|f| f == "volume_create_manager"),
        "the first create on the full backend reached its volume service"
    );
    wait_reported_free(&cluster.base_url, "after a failure", Duration::from_secs(5), |f| f == 0.0).await;
    let refused = create(&c, json!({ "name": "refused" })).await;
    c.wait_status(&format!("/volumes/{refused}"), "error", deadline()).await;
    let flows = flows_of(&c, &refused).await;
    assert!(!flows.iter().any(|f| f == "volume_create_manager"), "the scheduler placed it anyway: {flows:?}");

    let snap = c.create_snapshot(&base).await;
    let clone = create(&c, json!({ "source_volid": base, "name": "clone" })).await;
    post(&c, &format!("/volumes/{to_extend}/action"), json!({ "os-extend": { "new_size": 2 } })).await;
    c.wait_status(&format!("/snapshots/{snap}"), "error", deadline()).await;
    c.wait_status(&format!("/volumes/{clone}"), "error", deadline()).await;
    c.wait_status(&format!("/volumes/{to_extend}"), "error_extending", deadline()).await;
    let (_, volume) = c.get(&format!("/volumes/{to_extend}")).await;
    assert_eq!(volume["volume"]["size"], 1, "a failed extend keeps the size");
    for f in files() {
        assert!(!f.ends_with(".tmp"), "a partial file is left: {f}");
        assert!(![&blank, &refused, &clone, &snap].iter().any(|id| f.ends_with(id.as_str())), "{f} kept");
    }
    settle_dir(&c, &files, "on the full backend").await;

    fs.free();
    wait_reported_free(&cluster.base_url, "after freeing space", Duration::from_secs(5), |f| f > 0.1).await;
    let again = create(&c, json!({ "name": "after-freeing" })).await;
    let snap2 = c.create_snapshot(&base).await;
    let clone2 = create(&c, json!({ "source_volid": base, "name": "clone-2" })).await;
    c.wait_status(&format!("/volumes/{again}"), "available", deadline()).await;
    c.wait_status(&format!("/snapshots/{snap2}"), "available", deadline()).await;
    c.wait_status(&format!("/volumes/{clone2}"), "available", deadline()).await;
    settle_dir(&c, &files, "after freeing space").await;
}

async fn settle_dir(c: &Cinder, files: &dyn Fn() -> Vec<String>, what: &str) {
    let case = Case { cinder: c, project: PROJECT, what, mode: Mode::Failure, data_dir: None };
    let deadline = Instant::now() + Duration::from_secs(30);
    crash::settle(case, &[], &mut BTreeSet::new(), files, deadline).await;
}

/// Item 6: the SQLite file's own small file system, filled to the last byte. Writes fail
/// with a 503 `serviceUnavailable` fault at once (never a hang, never a 500), the process
/// stays up, `PRAGMA integrity_check` finds the database intact, and once space is freed
/// creates succeed again and everything settles.
#[tokio::test]
async fn a_full_sqlite_file_system_gives_503_and_recovers() {
    let Some(fs) = SmallFs::mount(64) else { return };
    let db = fs.path().join("ember.db");
    let toml = format!("database_url = \"sqlite://{}\"\n", db.display());
    let mut cluster = TestCluster::all_in_one_with(&toml).await;
    let c = cluster.client(PROJECT);
    let deadline = || Instant::now() + Duration::from_secs(30);
    let before = create(&c, json!({ "name": "before" })).await;
    c.wait_status(&format!("/volumes/{before}"), "available", deadline()).await;

    fs.fill();
    // The WAL may still have room a checkpoint freed: write until SQLite needs a new page.
    let mut refused = None;
    let mut accepted = Vec::new();
    for i in 0..300 {
        let started = Instant::now();
        let body = json!({ "volume": { "size": 1, "name": format!("on-full-{i}") } });
        let (status, answer) = c.post("/volumes", body).await;
        assert!(started.elapsed() < Duration::from_secs(10), "a request took {:?}", started.elapsed());
        match status {
            202 => accepted.push(answer["volume"]["id"].as_str().unwrap_or_default().to_owned()),
            503 => {
                refused = Some(answer);
                break;
            }
            other => panic!("a create on a full database answered {other}: {answer}"),
        }
    }
    let refused = refused.expect("300 creates on a full file system all succeeded");
    let message = refused["serviceUnavailable"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("database is unavailable"), "{refused}");
    assert_eq!(refused["serviceUnavailable"]["code"], 503, "{refused}");
    assert!(cluster.wait_exit(Duration::from_millis(200)).await.is_none(), "ember exited on a full disk");
    assert_eq!(integrity_check(&db), "ok");

    fs.free();
    let after = create(&c, json!({ "name": "after" })).await;
    c.wait_status(&format!("/volumes/{after}"), "available", deadline()).await;
    settle(&cluster, &c, "after freeing the database's space").await;
    assert_eq!(integrity_check(&db), "ok");
}

/// `PRAGMA integrity_check` on the database file, from a connection of its own.
fn integrity_check(path: &std::path::Path) -> String {
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the database read-only");
    conn.query_row("PRAGMA integrity_check", [], |row| row.get::<_, String>(0)).expect("run integrity_check")
}

/// Item 4, with the outage the default test plays: PostgreSQL restarted (every connection
/// killed, refused for a second) and then unreachable for a few seconds (longer than a
/// flow lease), under load, on separate processes. `EMBER_FAULTS_PG_OUTAGE_SECS` sets
/// another length.
#[tokio::test]
async fn postgres_restarted_and_unreachable_under_load() {
    let secs = std::env::var("EMBER_FAULTS_PG_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    postgres_outage(Duration::from_secs(secs)).await;
}

/// Item 4 as issue 15 words it: a 30 s outage.
#[tokio::test]
#[ignore = "30 s of outage: too long for CI, where the shorter outage above runs"]
async fn postgres_unreachable_for_30_s_under_load() {
    postgres_outage(Duration::from_secs(30)).await;
}

/// The processes reach PostgreSQL through a proxy the test controls. With copies in flight
/// on the volume service (a slow qemu-img) and creates in flight everywhere, PostgreSQL
/// "restarts", then is out of reach for `outage`: every process stays up, requests get a
/// 503 `serviceUnavailable` within the pool timeout (2 s) rather than hang, and once it is
/// back every accepted operation finishes (none ends in error), nothing is left in
/// transition, the backend and quota hold exactly the live resources, and no flow was taken
/// over from its live owner (`ember_flows_taken_over_total` stays 0: leases that ran out
/// during the outage were not stolen).
async fn postgres_outage(outage: Duration) {
    use support::multi::{MultiProcess, services};
    use support::proxy::{TcpProxy, address_of};

    let Some((db, amqp)) = services().await else { return };
    let proxy = TcpProxy::start(&address_of(&db.url)).await;
    let url = proxy.rewrite(&db.url);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let host = format!("pg-outage-{}", &tag[..8]);
    let metrics = support::free_port();
    let volume_toml = format!(
        "metrics_listen = \"127.0.0.1:{metrics}\"\nenabled_backends = [\"file\"]\n[backends.file]\n\
         volume_driver = \"file\"\n"
    );
    // A lease shorter than the outage: only the outage guard keeps the leases with their owners.
    let common = "database_pool_timeout = 2\nflow_lease = 4\n";
    let mut cluster = MultiProcess::start_custom(db, &url, &amqp, &[(&host, &volume_toml)], "", common).await;
    let fake = FakeQemuImg::new();
    cluster.volumes[0].env.push(("PATH".to_owned(), fake.path_env()));
    cluster.volumes[0].restart();
    let c = cluster.client(PROJECT);
    support::scenario::raise_quotas(&c, PROJECT).await;
    let long = || Instant::now() + Duration::from_secs(60);
    let base = create(&c, json!({ "name": "base" })).await;
    c.wait_status(&format!("/volumes/{base}"), "available", long()).await;

    // Load: copies that take 3 s on the volume service, and blank creates.
    fake.slow(&["convert"]);
    let mut paths = Vec::new();
    for i in 0..2 {
        paths.push(format!("/snapshots/{}", c.create_snapshot(&base).await));
        paths.push(format!(
            "/volumes/{}",
            create(&c, json!({ "source_volid": base, "name": format!("clone-{i}") })).await
        ));
    }
    for i in 0..3 {
        paths.push(format!("/volumes/{}", create(&c, json!({ "name": format!("blank-{i}") })).await));
    }
    wait_for_running_copy(&c).await;

    // A restart: every connection killed, new ones refused for a second.
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    // Then an outage.
    proxy.cut();
    let started = Instant::now();
    for (method, path) in [("GET", "/volumes/detail"), ("POST", "/volumes")] {
        let asked = Instant::now();
        let (status, body) = match method {
            "GET" => c.get(path).await,
            _ => c.post(path, json!({ "volume": { "size": 1, "name": "during-outage" } })).await,
        };
        let took = asked.elapsed();
        assert_eq!(status, 503, "{method} {path} during the outage: {body}");
        assert_eq!(body["serviceUnavailable"]["code"], 503, "{body}");
        assert!(took < Duration::from_secs(6), "{method} {path} took {took:?} to fail");
    }
    for p in [&mut cluster.api, &mut cluster.scheduler, &mut cluster.volumes[0]] {
        assert!(p.running(), "ember {} exited during the outage", p.role);
    }
    if let Some(rest) = outage.checked_sub(started.elapsed()) {
        // The fault lasts this long; nothing waits on state here.
        tokio::time::sleep(rest).await;
    }
    for p in [&mut cluster.api, &mut cluster.scheduler, &mut cluster.volumes[0]] {
        assert!(p.running(), "ember {} exited during the outage", p.role);
    }
    proxy.restore();
    fake.slow(&[]);

    let deadline = long();
    for path in &paths {
        c.wait_status(path, "available", deadline).await;
    }
    let files = || cluster.files(&host, "file");
    let case =
        Case { cinder: &c, project: PROJECT, what: "after the outage", mode: Mode::Crash, data_dir: None };
    crash::settle(case, &[], &mut BTreeSet::new(), &files, long()).await;
    for url in [cluster.base_url.clone(), format!("http://127.0.0.1:{metrics}")] {
        let taken = taken_over(&url).await;
        assert_eq!(taken, 0.0, "{url}: flows were taken over from their live owners");
    }
    let queues = [format!("ember-volume.{host}@file")];
    cluster.stop(&amqp, &queues).await;
}

/// Waits until the volume service runs one of the slow copies (a manager flow is RUNNING).
async fn wait_for_running_copy(c: &Cinder) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = c.get("/flows?state=running&limit=100").await;
        assert_eq!(status, 200, "{body}");
        let running = body["flows"].as_array().into_iter().flatten();
        if running.filter_map(|f| f["name"].as_str()).any(|n| n.ends_with("_manager")) {
            return;
        }
        assert!(Instant::now() < deadline, "no copy is running on the volume service: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of `ember_flows_taken_over_total` on a process's `/metrics` (0 when absent).
async fn taken_over(base_url: &str) -> f64 {
    let text = reqwest::get(format!("{base_url}/metrics")).await.expect("read metrics").text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("ember_flows_taken_over_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
