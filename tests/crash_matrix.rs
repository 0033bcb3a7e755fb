//! The crash matrix (issue 7): for every failpoint the flows reach (before and after every
//! task of every flow, before and after every hand-off), 27 operations are put in flight,
//! the process dies at the failpoint (abort), restarts, and within 10 s every accepted
//! operation has finished, nothing rests in a transitional status, the backend holds
//! exactly the files of the live volumes and snapshots, and quota usage equals the live
//! resources. On all-in-one; and, where the test services are configured, on `ember api`,
//! `scheduler` and `volume` apart on PostgreSQL and RabbitMQ, killing each role in turn,
//! then with RabbitMQ restarted under load.
//!
//! `EMBER_CRASH_MATRIX=<substring>` runs only the failpoints whose name contains it.
//! Apart, the roles die by default at every hand-off and at each flow's two ends (see
//! `across_processes`); `EMBER_CRASH_FULL=1` crashes them at every failpoint.

mod support;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use futures::future::join_all;

use support::crash::{self, Case, Failpoint, Mode, Role};
use support::multi::{MultiProcess, Process, services};
use support::{Cinder, TestCluster, wait_healthy};

/// How long after the restart everything must have settled.
const RECOVERY: Duration = Duration::from_secs(10);
/// How long a case may take to reach its failpoint.
const REACH: Duration = Duration::from_secs(30);

/// How many deployments of one matrix run side by side (`EMBER_CRASH_SHARDS`, default 2):
/// a case mostly waits for processes to start, die and settle, so two cores carry several.
fn shards() -> usize {
    std::env::var("EMBER_CRASH_SHARDS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(2)
}

/// Deals the numbered failpoints round-robin into `n` shards (the number names each
/// case's project, so it stays unique across shards).
fn deal(points: Vec<Failpoint>, n: usize) -> Vec<Vec<(usize, Failpoint)>> {
    let mut shards: Vec<Vec<(usize, Failpoint)>> = (0..n).map(|_| Vec::new()).collect();
    for (k, fp) in points.into_iter().enumerate() {
        shards[k % n].push((k, fp));
    }
    shards
}

fn project(mode: &str, k: usize) -> String {
    format!("{mode}{k:0>width$}", width = 32 - mode.len())
}

fn failpoints_env(fp: &Failpoint) -> Vec<(String, String)> {
    vec![("FAILPOINTS".to_owned(), format!("{}=1*return", fp.name))]
}

fn assert_aborted(status: Option<ExitStatus>, fp: &Failpoint) {
    let status =
        status.unwrap_or_else(|| panic!("{}: the failpoint was never reached in {REACH:?}", fp.name));
    assert_eq!(status.signal(), Some(6), "{}: the process should die by abort, not {status}", fp.name);
}

/// The sum of one counter over every worker of the process at `base_url`.
async fn metric(base_url: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{base_url}/metrics")).await.expect("GET /metrics").text().await.unwrap();
    let prefix = format!("ember_{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The file backend's directory of the all-in-one whose data directory is `data_dir`.
fn volume_dir(data_dir: Option<&Path>) -> Option<PathBuf> {
    data_dir.map(|d| d.join("volumes").join("file"))
}

/// Runs the operations once without failpoints and names every failpoint they reached.
async fn warm_up(
    c: &Cinder,
    project: &str,
    files: &dyn Fn() -> Vec<String>,
    data_dir: Option<&Path>,
) -> (Vec<Failpoint>, BTreeSet<String>) {
    let prepared = crash::prepare(c, project, volume_dir(data_dir).as_deref()).await;
    let expect = crash::launch(c, &prepared, Mode::Crash).await;
    assert_eq!(expect.len(), prepared.all_accepted(), "without failpoints every operation is accepted");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut live = BTreeSet::new();
    crash::settle(
        Case { cinder: c, project, what: "warm-up", mode: Mode::Crash, data_dir },
        &expect,
        &mut live,
        files,
        deadline,
    )
    .await;
    let points = crash::discover(c).await;
    let flows: BTreeSet<&str> = points.iter().filter_map(|p| p.name.split('.').next()).collect();
    assert!(flows.len() >= 19, "every flow kind ran in the warm-up: {flows:?}");
    (crash::selected(points), live)
}

#[tokio::test]
async fn all_in_one_dies_at_every_failpoint_and_finishes_everything_after_restart() {
    let cluster = TestCluster::all_in_one().await;
    let warm = project("warm", 0);
    let (points, live) =
        warm_up(&cluster.client(&warm), &warm, &|| cluster.backend_files(), Some(cluster.data_dir())).await;
    let total = points.len();
    let mut shards = deal(points, shards()).into_iter();
    let first = all_in_one_crashes(cluster, live, shards.next().unwrap_or_default());
    let rest = shards.map(|cases| async move {
        all_in_one_crashes(TestCluster::all_in_one().await, BTreeSet::new(), cases).await
    });
    let (first, rest) = tokio::join!(first, join_all(rest));
    let slowest = rest.into_iter().fold(first, Ord::max);
    println!("all-in-one: {total} failpoints; slowest recovery {:?} at {}", slowest.0, slowest.1);
}

/// The crash cases of one shard on its own all-in-one; the slowest recovery.
async fn all_in_one_crashes(
    mut cluster: TestCluster,
    mut live: BTreeSet<String>,
    cases: Vec<(usize, Failpoint)>,
) -> (Duration, String) {
    let mut slowest = (Duration::ZERO, String::new());
    for (k, fp) in &cases {
        let project = project("aio", *k);
        let c = cluster.client(&project);
        let prepared = crash::prepare(&c, &project, backups_for(&fp.name, &cluster).as_deref()).await;
        cluster.kill();
        cluster.env = failpoints_env(fp);
        cluster.start().await;
        let expect = crash::launch(&c, &prepared, Mode::Crash).await;
        assert_aborted(cluster.wait_exit(REACH).await, fp);

        cluster.env.clear();
        let restarted = Instant::now();
        cluster.start().await;
        let files = || cluster.backend_files();
        let deadline = restarted + RECOVERY;
        crash::settle(
            Case {
                cinder: &c,
                project: &project,
                what: &fp.name,
                mode: Mode::Crash,
                data_dir: Some(cluster.data_dir()),
            },
            &expect,
            &mut live,
            &files,
            deadline,
        )
        .await;
        slowest = slowest.max((restarted.elapsed(), fp.name.clone()));
        let resumed = metric(&cluster.base_url, "worker_flows_reclaimed_at_start_total").await;
        assert!(resumed >= 1, "{}: the restarted process resumed the flow it died in: {resumed}", fp.name);
    }
    slowest
}

/// How many flows have ended reverted or failed (admin view).
async fn failed_flows(c: &Cinder) -> usize {
    let mut n = 0;
    for state in ["reverted", "failure"] {
        let (status, body) = c.get(&format!("/flows?state={state}&limit=10000")).await;
        assert_eq!(status, 200, "{body}");
        n += body["flows"].as_array().map_or(0, Vec::len);
    }
    n
}

#[tokio::test]
async fn a_task_failing_after_its_work_is_reverted_cleanly_in_every_flow() {
    let cluster = TestCluster::all_in_one().await;
    let warm = project("fwarm", 0);
    let (points, live) =
        warm_up(&cluster.client(&warm), &warm, &|| cluster.backend_files(), Some(cluster.data_dir())).await;
    // A task that did its work and then fails: its own revert and those of the tasks before
    // it must undo everything. Not the api entry tasks whose work is one status swap on an
    // existing resource, their last statement: nothing real fails after it, and their
    // revert cannot tell their swap from a concurrent request's (a crash after it is the
    // crash matrix's, where the task runs again and adopts its swap).
    const SWAP_LAST: &[&str] = &[
        "volume_delete_api.VolumeDeleteEntryTask.after",
        "snapshot_delete_api.SnapshotDeleteEntryTask.after",
        "volume_extend_api.ExtendVolumeEntryTask.after",
        "backup_delete_api.BackupDeleteEntryTask.after",
        // Likewise the swaps of the backup api flows before anything else is recorded: the
        // volume's to `backing-up` (the backup's row comes after it), and a restore's
        // backup to `restoring` and volume to `restoring-backup`.
        "backup_create_api.BackupVolumeSwapTask.after",
        "backup_restore_api.RestoreBackupSwapTask.after",
        "backup_restore_api.RestoreVolumeSwapTask.after",
    ];
    let points: Vec<Failpoint> = points
        .into_iter()
        .filter(|p| p.name.ends_with(".after") && !SWAP_LAST.contains(&p.name.as_str()))
        .collect();
    let total = points.len();
    let mut shards = deal(points, shards()).into_iter();
    let first = failing_tasks(cluster, live, shards.next().unwrap_or_default());
    let rest = shards.map(|cases| async move {
        failing_tasks(TestCluster::all_in_one().await, BTreeSet::new(), cases).await
    });
    tokio::join!(first, join_all(rest));
    println!("failures: {total} tasks failed after their work, every flow reverted cleanly");
}

/// The volume directory `crash::prepare` needs to put backup operations in flight, for a
/// case whose failpoint (or flow) is one of the backup family's (`backup_*`, `restore_*`,
/// the volume side's device flows): they cost a backup of four written volumes each, so
/// the other cases run the volume operations alone. The settle check still reads the
/// backup store in every case.
fn backups_for(name: &str, cluster: &TestCluster) -> Option<PathBuf> {
    (name.contains("backup") || name.contains("restore")).then(|| cluster.volume_dir())
}

/// The failure cases of one shard on its own all-in-one.
async fn failing_tasks(mut cluster: TestCluster, mut live: BTreeSet<String>, cases: Vec<(usize, Failpoint)>) {
    let mut checked = BTreeSet::new();
    for (k, fp) in &cases {
        let project = project("fail", *k);
        let c = cluster.client(&project);
        let prepared = crash::prepare(&c, &project, backups_for(&fp.name, &cluster).as_deref()).await;
        let before = failed_flows(&c).await;
        cluster.kill();
        cluster.env = vec![("FAILPOINTS".to_owned(), format!("{}=1*panic", fp.name))];
        cluster.start().await;
        let expect = crash::launch(&c, &prepared, Mode::Failure).await;
        let files = || cluster.backend_files();
        let deadline = Instant::now() + Duration::from_secs(30);
        crash::settle(
            Case {
                cinder: &c,
                project: &project,
                what: &fp.name,
                mode: Mode::Failure,
                data_dir: Some(cluster.data_dir()),
            },
            &expect,
            &mut live,
            &files,
            deadline,
        )
        .await;
        assert!(
            failed_flows(&c).await > before,
            "{}: no flow failed, so the failpoint was not reached",
            fp.name
        );
        crash::assert_reverts_clean(&c, &mut checked, &fp.name).await;
    }
}

#[tokio::test]
async fn a_process_dying_while_a_flow_reverts_goes_on_reverting_after_restart() {
    let mut cluster = TestCluster::all_in_one().await;
    let warm = project("rwarm", 0);
    let (_, mut live) =
        warm_up(&cluster.client(&warm), &warm, &|| cluster.backend_files(), Some(cluster.data_dir())).await;
    let flows = crash::flow_atoms(&cluster.client(&warm)).await;
    let (mut cases, mut checked) = (0, BTreeSet::new());
    for (k, (flow, atoms)) in flows.iter().enumerate() {
        // The last task fails before its work (so nothing was handed off yet), and the
        // process dies in the revert of the first: the restart must finish the revert.
        let (Some(first), Some(last)) = (atoms.first(), atoms.last()) else { continue };
        if first == last || !crash::selected_name(flow) {
            continue;
        }
        cases += 1;
        let what = format!("{flow}: {last} fails, the process dies reverting {first}");
        let project = project("rev", k);
        let c = cluster.client(&project);
        let prepared = crash::prepare(&c, &project, backups_for(flow, &cluster).as_deref()).await;
        cluster.kill();
        let spec = format!("{flow}.{last}.before=1*panic;{flow}.{first}.revert=1*return");
        cluster.env = vec![("FAILPOINTS".to_owned(), spec)];
        cluster.start().await;
        let expect = crash::launch(&c, &prepared, Mode::Failure).await;
        let fp = Failpoint { name: what.clone(), role: Role::Api };
        assert_aborted(cluster.wait_exit(REACH).await, &fp);
        cluster.env.clear();
        let restarted = Instant::now();
        cluster.start().await;
        let files = || cluster.backend_files();
        let case = Case {
            cinder: &c,
            project: &project,
            what: &what,
            mode: Mode::Failure,
            data_dir: Some(cluster.data_dir()),
        };
        crash::settle(case, &expect, &mut live, &files, restarted + RECOVERY).await;
        crash::assert_reverts_clean(&c, &mut checked, &what).await;
    }
    println!("reverts: {cases} flows died while reverting and finished their reverts after restart");
}

/// One volume process's configuration: the file backend.
const FILE_BACKEND: &str = "enabled_backends = [\"file\"]\n[backends.file]\nvolume_driver = \"file\"\n";

/// The crash cases of one shard, each in the process of its role, on `cluster` (whose one
/// volume process is `host`); the slowest recovery.
async fn role_crashes(
    cluster: &mut MultiProcess,
    host: &str,
    live: &mut BTreeSet<String>,
    cases: Vec<(usize, Failpoint)>,
) -> (Duration, String) {
    let base_url = cluster.base_url.clone();
    let mut slowest = (Duration::ZERO, String::new());
    for (k, fp) in &cases {
        let project = project("mp", *k);
        let c = cluster.client(&project);
        let prepared = crash::prepare(&c, &project, None).await;
        let role = fp.role;
        let process = match role {
            Role::Api => &mut cluster.api,
            Role::Scheduler => &mut cluster.scheduler,
            Role::Volume => &mut cluster.volumes[0],
        };
        arm(process, fp, &base_url).await;
        let expect = crash::launch(&c, &prepared, Mode::Crash).await;
        assert_aborted(process.wait_exit(REACH).await, fp);
        process.env.clear();
        let restarted = Instant::now();
        process.restart();
        if role == Role::Api {
            wait_healthy(&base_url, RECOVERY).await;
        }
        let deadline = restarted + RECOVERY;
        let files = || cluster.files(host, "file");
        crash::settle(
            Case { cinder: &c, project: &project, what: &fp.name, mode: Mode::Crash, data_dir: None },
            &expect,
            live,
            &files,
            deadline,
        )
        .await;
        slowest = slowest.max((restarted.elapsed(), fp.name.clone()));
    }
    slowest
}

/// The failpoints the multi-process matrix crashes at. The all-in-one matrix crashes at
/// every failpoint; apart, what differs is how the processes hand work to each other
/// (durable queues, redelivery, another process's store), so by default the roles die at
/// every hand-off and at each flow's two ends (before its first step, after its last),
/// which resume the hand-off on both sides. `EMBER_CRASH_FULL=1`, or naming failpoints with
/// `EMBER_CRASH_MATRIX`, crashes at all of them.
fn across_processes(points: Vec<Failpoint>) -> Vec<Failpoint> {
    let full = std::env::var("EMBER_CRASH_FULL").is_ok_and(|v| v == "1")
        || std::env::var("EMBER_CRASH_MATRIX").is_ok_and(|v| !v.is_empty() && v != "all");
    if full {
        return points;
    }
    // `points` lists each flow's atoms in order, "before" then "after", then the hand-offs.
    let mut ends: std::collections::BTreeMap<&str, (&str, &str)> = std::collections::BTreeMap::new();
    for p in points.iter().filter(|p| !p.name.starts_with("handoff.")) {
        let flow = p.name.split('.').next().unwrap_or_default();
        let entry = ends.entry(flow).or_insert((p.name.as_str(), p.name.as_str()));
        entry.1 = p.name.as_str();
    }
    let keep: BTreeSet<String> = ends.values().flat_map(|(a, b)| [a.to_string(), b.to_string()]).collect();
    points.into_iter().filter(|p| p.name.starts_with("handoff.") || keep.contains(&p.name)).collect()
}

/// Restarts `p` armed with `fp` and, for the api, waits for it to serve.
async fn arm(p: &mut Process, fp: &Failpoint, base_url: &str) {
    p.env = failpoints_env(fp);
    p.restart();
    if p.role == "api" {
        wait_healthy(base_url, Duration::from_secs(30)).await;
    }
}

#[tokio::test]
async fn each_role_dies_at_its_failpoints_on_postgres_and_rabbitmq() {
    let Some((db, amqp)) = services().await else { return };
    let host = format!("crash-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut cluster = MultiProcess::start(db, &amqp, &[(&host, FILE_BACKEND)]).await;
    let files = |c: &MultiProcess| c.files(&host, "file");
    let warm = project("mpwarm", 0);
    let (points, mut live) = {
        let c = cluster.client(&warm);
        // The first creates wait for the volume service's first capability report.
        warm_up(&c, &warm, &|| files(&cluster), None).await
    };
    let discovered = points.len();
    let points = across_processes(points);
    let total = points.len();
    println!("multi-process: {total} of {discovered} failpoints (EMBER_CRASH_FULL=1 runs them all)");
    let mut shards = deal(points, shards()).into_iter();
    let first = role_crashes(&mut cluster, &host, &mut live, shards.next().unwrap_or_default());
    let rest = shards.map(|cases| {
        let amqp = amqp.clone();
        async move {
            let (db, _) = services().await.expect("the services answered a moment ago");
            let host = format!("crash-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            let mut shard = MultiProcess::start(db, &amqp, &[(&host, FILE_BACKEND)]).await;
            let slowest = role_crashes(&mut shard, &host, &mut BTreeSet::new(), cases).await;
            shard.stop(&amqp, &[format!("ember-volume.{host}@file")]).await;
            slowest
        }
    });
    let (first, rest) = tokio::join!(first, join_all(rest));
    let slowest = rest.into_iter().fold(first, Ord::max);
    println!(
        "multi-process: {total} failpoints, each in the process of its role; slowest recovery {:?} at {}",
        slowest.0, slowest.1
    );
    let base_url = cluster.base_url.clone();

    // A peer takes over: the api dies in the middle of creates and stays dead; a second api
    // process claims its flows once their lease (3 s here) lapses, and finishes them.
    {
        let (mut peer, peer_url) = cluster.start_peer_api("api-peer").await;
        let project = project("mppeer", 0);
        let c = cluster.client(&project);
        let prepared = crash::prepare(&c, &project, None).await;
        let fp = Failpoint { name: "volume_create_api.QuotaCommitTask.after".into(), role: Role::Api };
        cluster.api.env = failpoints_env(&fp);
        cluster.api.env.push(("EMBER_FLOW_LEASE".into(), "3".into()));
        cluster.api.restart();
        wait_healthy(&base_url, Duration::from_secs(30)).await;
        let expect = crash::launch(&c, &prepared, Mode::Crash).await;
        assert_aborted(cluster.api.wait_exit(REACH).await, &fp);
        let died = Instant::now();
        let through_peer = Cinder::new(&peer_url, &project);
        let case = Case {
            cinder: &through_peer,
            project: &project,
            what: "peer takeover",
            mode: Mode::Crash,
            data_dir: None,
        };
        let deadline = died + Duration::from_secs(3) + RECOVERY;
        crash::settle(case, &expect, &mut live, &|| files(&cluster), deadline).await;
        println!("peer takeover: settled {:?} after the api died (lease 3 s)", died.elapsed());
        cluster.api.env.clear();
        cluster.api.restart();
        wait_healthy(&base_url, Duration::from_secs(30)).await;
        peer.kill();
    }

    // RabbitMQ restarted under load: what was accepted finishes, nothing leaks.
    if rabbitmq_restart_available().await {
        let project = project("mprabbit", 0);
        let c = cluster.client(&project);
        let prepared = crash::prepare(&c, &project, None).await;
        let load = {
            let c = c.clone();
            tokio::spawn(async move { crash::launch(&c, &prepared, Mode::Crash).await })
        };
        rabbitmqctl(&["stop_app"]).await.expect("stop RabbitMQ");
        rabbitmqctl(&["start_app"]).await.expect("start RabbitMQ");
        let restarted = Instant::now();
        let expect = load.await.expect("the load");
        let deadline = restarted + RECOVERY;
        let case = Case {
            cinder: &c,
            project: &project,
            what: "RabbitMQ restart",
            mode: Mode::Crash,
            data_dir: None,
        };
        crash::settle(case, &expect, &mut live, &|| files(&cluster), deadline).await;
    } else {
        println!(
            "skipped: rabbitmqctl cannot restart the broker here, so the RabbitMQ restart case is not run"
        );
    }
    let queues = [format!("ember-volume.{host}@file")];
    cluster.stop(&amqp, &queues).await;
}

async fn rabbitmqctl(args: &[&str]) -> Option<String> {
    let output = tokio::process::Command::new("rabbitmqctl").args(args).output().await.ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn rabbitmq_restart_available() -> bool {
    rabbitmqctl(&["-q", "status"]).await.is_some()
}
