//! The crash matrix of issue 7: which failpoints exist, the 20 operations put in flight
//! when a process dies at one, and the checks that nothing was stuck, lost or leaked.
//!
//! Each case runs in a project of its own, so the checks of one case see only its own
//! resources; the backend check adds up the live files of every case so far.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};

use super::Cinder;
use super::scenario::raise_quotas;

/// The process that evaluates a failpoint, in a multi-process deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Api,
    Scheduler,
    Volume,
}

/// One failpoint of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Failpoint {
    pub name: String,
    pub role: Role,
}

/// Which role runs flow `flow` (Ember's flow names end in the role that runs them).
fn role_of_flow(flow: &str) -> Role {
    if flow.ends_with("_scheduler") {
        Role::Scheduler
    } else if flow.ends_with("_manager") {
        Role::Volume
    } else {
        Role::Api
    }
}

/// Which role hands flow `flow` off: the scheduler hands a create to the volume manager,
/// the api everything else.
fn role_handing_off(flow: &str) -> Role {
    if flow == "volume_create_manager" { Role::Scheduler } else { Role::Api }
}

/// Every failpoint the flows recorded in the admin view reach on a normal run: before and
/// after each atom of each flow that ran, and before and after each hand-off.
pub async fn discover(admin: &Cinder) -> Vec<Failpoint> {
    let atoms = flow_atoms(admin).await;
    let mut points = Vec::new();
    for (flow, names) in &atoms {
        for atom in names {
            for when in ["before", "after"] {
                points.push(Failpoint { name: format!("{flow}.{atom}.{when}"), role: role_of_flow(flow) });
            }
        }
    }
    for flow in atoms.keys().filter(|f| !f.ends_with("_api")) {
        for when in ["before", "after"] {
            points.push(Failpoint { name: format!("handoff.{flow}.{when}"), role: role_handing_off(flow) });
        }
    }
    points
}

/// The atoms of every flow the admin view recorded, in each flow's order, by flow name.
pub async fn flow_atoms(admin: &Cinder) -> BTreeMap<String, Vec<String>> {
    let (status, body) = admin.get("/flows?limit=1000").await;
    assert_eq!(status, 200, "list flows: {body}");
    let mut atoms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for flow in body["flows"].as_array().expect("a flow list") {
        let (id, name) = (flow["id"].as_str().unwrap_or_default(), flow["name"].as_str().unwrap_or_default());
        if atoms.contains_key(name) {
            continue;
        }
        let (status, detail) = admin.get(&format!("/flows/{id}")).await;
        assert_eq!(status, 200, "show flow {id}: {detail}");
        let names = detail["flow"]["atoms"].as_array().expect("atoms").iter();
        atoms.insert(name.to_owned(), names.filter_map(|a| a["name"].as_str().map(str::to_owned)).collect());
    }
    atoms
}

/// What a case does to the process at its failpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The process dies (abort); it is restarted or a peer takes over.
    Crash,
    /// The task fails (a panic, caught by the engine): the flow reverts what it did.
    Failure,
}

/// What a case's operations start from.
pub struct Prepared {
    base: String,
    snap: String,
    snap_to_delete: String,
    /// The snapshots of `to_delete[0]`, which is deleted with them (`?cascade=true`).
    cascaded: Vec<String>,
    to_delete: Vec<String>,
    to_extend: Vec<String>,
    other: String,
    /// Completed attachments (of volumes of their own) to delete.
    attached: Vec<String>,
    /// Volumes to attach with a connector.
    to_attach: Vec<String>,
    /// A volume reserved with the legacy `os-reserve`, to `os-initialize_connection`.
    legacy: String,
    /// An attachment connected (`attaching`) to complete.
    to_complete: String,
    /// A volume to reserve with the legacy `os-reserve`.
    to_reserve: String,
    /// What the backup operations start from, where a backup service runs.
    backups: Option<PreparedBackups>,
}

/// What the backup operations start from: volumes holding data and backups of them.
struct PreparedBackups {
    /// A volume to back up in full (it has a backup already: `to_delete`).
    full_source: String,
    /// A volume with an available backup, changed since: backed up incrementally.
    incremental_source: String,
    /// An available backup to restore into a new volume.
    to_restore_new: String,
    /// An available backup to restore into `target`.
    to_restore_existing: String,
    /// An available volume to restore into.
    target: String,
    /// An available backup to delete (of `full_source`: it shares its chunks with the
    /// full backup taken at the same time).
    to_delete: String,
}

impl Prepared {
    /// How many expectations [`launch`] returns when every operation is accepted.
    pub fn all_accepted(&self) -> usize {
        // The cascade promises 3, the legacy initialize and reserve nothing; a backup
        // restore promises the volume and the backup.
        27 + if self.backups.is_some() { 7 } else { 0 }
    }
}

/// The microversion of the attachment requests (`os-complete` needs 3.44).
const ATTACH_VERSION: &str = "3.44";

/// A connector as os-brick sends it, one host per volume.
fn connector(host: &str) -> Value {
    json!({ "host": host, "ip": "127.0.0.1", "initiator": format!("iqn.2026-12.test:{host}") })
}

/// Attaches volume `v` with a connector (the attachment `attaching`); returns its id.
async fn attach_connected(c: &Cinder, v: &str) -> String {
    let body = json!({ "attachment": { "volume_uuid": v, "connector": connector(v) } });
    let (status, answer) = c.with_version(ATTACH_VERSION).post("/attachments", body).await;
    assert_eq!(status, 200, "attach {v}: {answer}");
    answer["attachment"]["id"].as_str().expect("an attachment id").to_owned()
}

/// Attaches volume `v` with a connector and completes the attachment; returns its id.
async fn attach_completed(c: &Cinder, v: &str) -> String {
    let cv = c.with_version(ATTACH_VERSION);
    let id = attach_connected(c, v).await;
    let (status, answer) = cv.post(&format!("/attachments/{id}/action"), json!({ "os-complete": {} })).await;
    assert_eq!(status, 204, "complete {id}: {answer}");
    id
}

/// Writes each (offset, length, byte) of `writes` into the image of volume `id` with one
/// qemu-io.
fn write_patterns(volume_dir: &Path, id: &str, writes: &[(&str, &str, u8)]) {
    let image = volume_dir.join(format!("volume-{id}"));
    let mut cmd = Command::new("qemu-io");
    for (offset, len, pattern) in writes {
        cmd.args(["-c", &format!("write -P {pattern} {offset} {len}")]);
    }
    let out = cmd.arg(&image).output().expect("run qemu-io");
    assert!(out.status.success(), "qemu-io on {}: {}", image.display(), String::from_utf8_lossy(&out.stderr));
}

/// Creates a backup (the inside of `{"backup": ...}`); returns its id.
async fn create_backup(c: &Cinder, body: Value) -> String {
    let (status, answer) = c.post("/backups", json!({ "backup": body })).await;
    assert_eq!(status, 202, "create a backup: {answer}");
    answer["backup"]["id"].as_str().expect("a backup id").to_owned()
}

/// Volumes holding data (written into the file driver's images under `volume_dir`) and
/// backups of them; `vols` are five fresh available volumes.
async fn prepare_backups(c: &Cinder, project: &str, volume_dir: &Path, vols: &[String]) -> PreparedBackups {
    let body = json!({ "quota_set": { "backups": 100, "backup_gigabytes": 1000 } });
    let (status, answer) =
        c.send(reqwest::Method::PUT, &format!("/os-quota-sets/{project}"), Some(body)).await;
    assert_eq!(status, 200, "backup quota update: {answer}");
    let [full_source, incremental_source, target, a, b] = vols else { panic!("five volumes") };
    // Two chunks of data each, the second the same in all; `a` and `b` hold the same data.
    for (i, v) in [full_source, incremental_source, a, b].into_iter().enumerate() {
        let own = if i < 2 { 0x30 + i as u8 } else { 0x32 };
        write_patterns(volume_dir, v, &[("1M", "3M", own), ("600M", "1M", 0x11)]);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let ids = join_all(
        [full_source, incremental_source, a, b].map(|v| create_backup(c, json!({ "volume_id": v }))),
    )
    .await;
    for id in &ids {
        c.wait_status(&format!("/backups/{id}"), "available", deadline).await;
    }
    for v in [full_source, incremental_source, a, b] {
        c.wait_status(&format!("/volumes/{v}"), "available", deadline).await;
    }
    // A change for the incremental backup to store.
    write_patterns(volume_dir, incremental_source, &[("900M", "64k", 0x22)]);
    PreparedBackups {
        full_source: full_source.clone(),
        incremental_source: incremental_source.clone(),
        target: target.clone(),
        to_delete: ids[0].clone(),
        to_restore_new: ids[2].clone(),
        to_restore_existing: ids[3].clone(),
    }
}

/// Creates what the operations need and waits for it to be available. With `volume_dir`
/// (the file backend's directory, where a backup service runs: all-in-one), the backup
/// operations too.
pub async fn prepare(c: &Cinder, project: &str, volume_dir: Option<&Path>) -> Prepared {
    raise_quotas(c, project).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let n = if volume_dir.is_some() { 18 } else { 13 };
    let vols =
        join_all((0..n).map(|i| c.create_volume(json!({ "size": 1, "name": format!("pre-{i}") })))).await;
    for v in &vols {
        c.wait_status(&format!("/volumes/{v}"), "available", deadline).await;
    }
    let snaps = join_all([&vols[0], &vols[0], &vols[1], &vols[1]].map(|v| c.create_snapshot(v))).await;
    for s in &snaps {
        c.wait_status(&format!("/snapshots/{s}"), "available", deadline).await;
    }
    let attached = join_all(vols[6..8].iter().map(|v| attach_completed(c, v))).await;
    let (status, body) = c.post(&format!("/volumes/{}/action", vols[10]), json!({ "os-reserve": {} })).await;
    assert_eq!(status, 202, "os-reserve: {body}");
    let to_complete = attach_connected(c, &vols[11]).await;
    let backups = match volume_dir {
        Some(dir) => Some(prepare_backups(c, project, dir, &vols[13..18]).await),
        None => None,
    };
    Prepared {
        backups,
        attached,
        to_complete,
        to_reserve: vols[12].clone(),
        to_attach: vols[8..10].to_vec(),
        legacy: vols[10].clone(),
        base: vols[0].clone(),
        snap: snaps[0].clone(),
        snap_to_delete: snaps[1].clone(),
        cascaded: snaps[2..].to_vec(),
        to_delete: vols[1..3].to_vec(),
        to_extend: vols[3..5].to_vec(),
        other: vols[5].clone(),
    }
}

/// What an accepted operation must have led to.
#[derive(Debug)]
pub enum Expect {
    Available(String),
    Gone(String),
    Size(String, i64),
}

/// Starts the 27 volume operations at once: 6 blank creates, 3 from a snapshot, 3 clones, 2
/// deletes (one a cascade with two snapshots), 2 extends, 3 snapshot creates, a
/// snapshot delete, 2 attachment deletes, 2 attachment creates with a connector, an
/// `os-complete`, a legacy `os-reserve` and a legacy `os-initialize_connection` of a
/// reserved volume; and where a backup service runs, 5 backup operations: a full and an
/// incremental backup, a restore into a new and one into an existing volume, a backup
/// delete. Returns what the accepted ones must lead to; a request the dying process never
/// answered promises nothing.
pub async fn launch(c: &Cinder, p: &Prepared, mode: Mode) -> Vec<Expect> {
    use reqwest::Method;
    let mut ops: Vec<(Method, String, Option<Value>)> = Vec::new();
    let create = |body: Value| (Method::POST, "/volumes".to_owned(), Some(json!({ "volume": body })));
    for i in 0..6 {
        ops.push(create(json!({ "size": 1, "name": format!("blank-{i}") })));
    }
    for i in 0..3 {
        ops.push(create(json!({ "snapshot_id": p.snap, "name": format!("from-snap-{i}") })));
        ops.push(create(json!({ "source_volid": p.base, "name": format!("clone-{i}") })));
    }
    ops.push((Method::DELETE, format!("/volumes/{}?cascade=true", p.to_delete[0]), None));
    for v in &p.to_delete[1..] {
        ops.push((Method::DELETE, format!("/volumes/{v}"), None));
    }
    for v in &p.to_extend {
        ops.push((
            Method::POST,
            format!("/volumes/{v}/action"),
            Some(json!({ "os-extend": { "new_size": 2 } })),
        ));
    }
    for v in [&p.base, &p.base, &p.other] {
        ops.push((Method::POST, "/snapshots".to_owned(), Some(json!({ "snapshot": { "volume_id": v } }))));
    }
    ops.push((Method::DELETE, format!("/snapshots/{}", p.snap_to_delete), None));
    for a in &p.attached {
        ops.push((Method::DELETE, format!("/attachments/{a}"), None));
    }
    for v in &p.to_attach {
        let body = json!({ "attachment": { "volume_uuid": v, "connector": connector(v) } });
        ops.push((Method::POST, "/attachments".to_owned(), Some(body)));
    }
    let init = json!({ "os-initialize_connection": { "connector": connector(&p.legacy) } });
    ops.push((Method::POST, format!("/volumes/{}/action", p.legacy), Some(init)));
    let complete = json!({ "os-complete": {} });
    ops.push((Method::POST, format!("/attachments/{}/action", p.to_complete), Some(complete)));
    ops.push((Method::POST, format!("/volumes/{}/action", p.to_reserve), Some(json!({ "os-reserve": {} }))));
    assert_eq!(ops.len(), 27);
    if let Some(b) = &p.backups {
        let create = |body: Value| (Method::POST, "/backups".to_owned(), Some(json!({ "backup": body })));
        ops.push(create(json!({ "volume_id": b.full_source, "name": "full" })));
        ops.push(create(json!({ "volume_id": b.incremental_source, "name": "incr", "incremental": true })));
        ops.push((
            Method::POST,
            format!("/backups/{}/restore", b.to_restore_new),
            Some(json!({ "restore": {} })),
        ));
        let existing = json!({ "restore": { "volume_id": b.target } });
        ops.push((Method::POST, format!("/backups/{}/restore", b.to_restore_existing), Some(existing)));
        ops.push((Method::DELETE, format!("/backups/{}", b.to_delete), None));
    }
    let cv = c.with_version(ATTACH_VERSION);
    let answers =
        join_all(ops.iter().map(|(m, path, body)| cv.try_send(m.clone(), path, body.clone()))).await;
    let mut expect = Vec::new();
    for ((method, path, _), answer) in ops.iter().zip(answers) {
        let Some((status, body)) = answer else { continue };
        // A task failing inside the API's own flow answers 500, as Cinder does. A request
        // waiting for a volume-side flow whose process died answers 503 after
        // rpc_response_timeout ("the operation goes on"): it promises nothing, and the
        // settle check holds whatever became of it.
        // A restore into a new volume waits for the volume's create.
        let waits_on_volume =
            path.starts_with("/attachments") || path.ends_with("/action") || path.ends_with("/restore");
        assert!(
            status < 500 || mode == Mode::Failure || (status == 503 && waits_on_volume),
            "{method} {path} answered {status}: {body}"
        );
        if status >= 300 {
            continue;
        }
        if path.ends_with("?cascade=true") {
            expect.extend(p.cascaded.iter().map(|s| Expect::Gone(format!("/snapshots/{s}"))));
        }
        if path.starts_with("/volumes/") && path.ends_with("/action") && status != 202 {
            // The legacy initialize (200): the volume waits for its client's os-attach.
            continue;
        }
        if *path == format!("/volumes/{}/action", p.to_reserve) {
            // The legacy reserve: the volume waits in `attaching` for its client.
            continue;
        }
        if path.ends_with("/restore") {
            let volume = body["restore"]["volume_id"].as_str().expect("the restored volume");
            expect.push(Expect::Available(format!("/volumes/{volume}")));
            expect.push(Expect::Available(path.trim_end_matches("/restore").to_owned()));
            continue;
        }
        if path.starts_with("/attachments/") && method == Method::POST {
            expect.push(Expect::Available(path.trim_end_matches("/action").to_owned()));
            continue;
        }
        expect.push(match (method.as_str(), path.as_str()) {
            ("POST", "/attachments") => {
                Expect::Available(format!("/attachments/{}", body["attachment"]["id"].as_str().unwrap()))
            }
            ("POST", "/volumes") => {
                Expect::Available(format!("/volumes/{}", body["volume"]["id"].as_str().unwrap()))
            }
            ("POST", "/backups") => {
                Expect::Available(format!("/backups/{}", body["backup"]["id"].as_str().unwrap()))
            }
            ("POST", "/snapshots") => {
                Expect::Available(format!("/snapshots/{}", body["snapshot"]["id"].as_str().unwrap()))
            }
            ("DELETE", _) => Expect::Gone(path.trim_end_matches("?cascade=true").to_owned()),
            _ => Expect::Size(path.trim_end_matches("/action").to_owned(), 2),
        });
    }
    expect
}

/// Statuses a resource rests in; anything else is in transition (or an error). Once
/// every flow has ended, a volume `reserved` or `attaching` and an attachment `reserved` or
/// `attaching` wait for their client (to connect, to complete), as in Cinder; they are
/// not stuck. `attached` is an attachment's rest.
const RESTING: &[&str] = &["available", "in-use", "reserved", "attaching", "attached"];

fn resources(list: &Value, key: &str) -> Vec<(String, String, i64)> {
    list[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|v| {
                    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                    (s("id"), s("status"), v["size"].as_i64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What [`Seen::find`] answers for an attachment (only its presence is checked).
static ATTACHMENT_FOUND: (String, String, i64) = (String::new(), String::new(), 0);

/// The status a backup rests in; anything else is in transition (or an error).
const BACKUP_RESTING: &[&str] = &["available"];

/// The project's state at one moment.
struct Seen {
    volumes: Vec<(String, String, i64)>,
    snapshots: Vec<(String, String, i64)>,
    backups: Vec<(String, String, i64)>,
    /// (id, status, volume id) of each live attachment.
    attachments: Vec<(String, String, String)>,
}

impl Seen {
    async fn read(c: &Cinder) -> Self {
        let list = |path: &'static str| async move {
            let (status, body) = c.get(path).await;
            assert_eq!(status, 200, "GET {path}: {body}");
            body
        };
        let volumes = resources(&list("/volumes/detail?limit=1000").await, "volumes");
        let snapshots = resources(&list("/snapshots/detail?limit=1000").await, "snapshots");
        let backups = resources(&list("/backups/detail?limit=1000").await, "backups");
        let (status, body) = c.with_version(ATTACH_VERSION).get("/attachments?limit=1000").await;
        assert_eq!(status, 200, "GET /attachments: {body}");
        let attachments = body["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
                (s("id"), s("status"), s("volume_id"))
            })
            .collect();
        Self { volumes, snapshots, backups, attachments }
    }

    /// The volumes whose export a live attachment needs (`attaching` or `attached`: both
    /// were connected), and those of the attachments in an error status.
    fn exports_needed(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let of = |keep: &dyn Fn(&str) -> bool| {
            self.attachments.iter().filter(|a| keep(&a.1)).map(|a| format!("export-volume-{}", a.2)).collect()
        };
        (of(&|s| s == "attaching" || s == "attached"), of(&|s| s.starts_with("error")))
    }

    fn find(&self, path: &str) -> Option<&(String, String, i64)> {
        let (kind, id) = path.trim_start_matches('/').split_once('/')?;
        if kind == "attachments" {
            return self.attachments.iter().find(|(i, _, _)| i == id).map(|_| &ATTACHMENT_FOUND);
        }
        let list = match kind {
            "volumes" => &self.volumes,
            "backups" => &self.backups,
            _ => &self.snapshots,
        };
        list.iter().find(|(i, _, _)| i == id)
    }

    /// What still keeps the case from being settled, or `None`. After a failure a
    /// resource may rest in an error status, and the accepted operations may have failed.
    fn unsettled(&self, expect: &[Expect], mode: Mode) -> Option<String> {
        let resting = |s: &str| RESTING.contains(&s) || (mode == Mode::Failure && s.starts_with("error"));
        let moving = self.volumes.iter().chain(&self.snapshots).find(|(_, s, _)| !resting(s));
        if let Some((id, status, _)) = moving {
            return Some(format!("{id} is {status}"));
        }
        if let Some((id, status, _)) = self.attachments.iter().find(|(_, s, _)| !resting(s)) {
            return Some(format!("attachment {id} is {status}"));
        }
        let backup_resting =
            |s: &str| BACKUP_RESTING.contains(&s) || (mode == Mode::Failure && s.starts_with("error"));
        if let Some((id, status, _)) = self.backups.iter().find(|(_, s, _)| !backup_resting(s)) {
            return Some(format!("backup {id} is {status}"));
        }
        if mode == Mode::Failure {
            return None;
        }
        for e in expect {
            let ok = match e {
                Expect::Available(p) => self.find(p).is_some(),
                Expect::Gone(p) => self.find(p).is_none(),
                Expect::Size(p, size) => self.find(p).is_some_and(|(_, _, s)| s == size),
            };
            if !ok {
                return Some(format!("{e:?} does not hold"));
            }
        }
        None
    }

    /// The backend files of the resources whose status passes `keep`.
    fn files_where(&self, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
        let vols = self.volumes.iter().filter(|v| keep(&v.1)).map(|(id, _, _)| format!("volume-{id}"));
        let snaps = self.snapshots.iter().filter(|s| keep(&s.1)).map(|(id, _, _)| format!("snapshot-{id}"));
        vols.chain(snaps).collect()
    }

    fn files(&self) -> BTreeSet<String> {
        self.files_where(|_| true)
    }

    /// (resource, in_use) as quota usage must show it.
    fn usage(&self) -> [(&'static str, i64); 5] {
        let gigabytes = self.volumes.iter().chain(&self.snapshots).map(|(_, _, s)| s).sum();
        [
            ("volumes", self.volumes.len() as i64),
            ("snapshots", self.snapshots.len() as i64),
            ("gigabytes", gigabytes),
            ("backups", self.backups.len() as i64),
            ("backup_gigabytes", self.backups.iter().map(|(_, _, s)| s).sum()),
        ]
    }

    /// What the backup store must hold beside what `live` holds: `Err` names what it
    /// holds wrongly. No leftovers (journals, delete marks, temporary files, the file
    /// driver's backup exports); a record for every available backup, none for a backup
    /// that is gone; every chunk a record lists, none that no record lists. After a
    /// failure, a backup in an error status may or may not have kept its record.
    fn check_store(&self, store: &StoreEntries, live: &BTreeSet<String>, mode: Mode) -> Result<(), String> {
        if !store.leftovers.is_empty() {
            return Err(format!("leftovers in the backup store or exports: {:?}", store.leftovers));
        }
        let available: BTreeSet<&str> =
            self.backups.iter().filter(|b| b.1 == "available").map(|b| b.0.as_str()).collect();
        let errored: BTreeSet<&str> =
            self.backups.iter().filter(|b| b.1.starts_with("error")).map(|b| b.0.as_str()).collect();
        let missing: Vec<&&str> = available.iter().filter(|id| !store.records.contains(**id)).collect();
        if !missing.is_empty() {
            return Err(format!("available backups without a record: {missing:?}"));
        }
        let stray: Vec<&String> = store
            .records
            .iter()
            .filter(|id| {
                let mine = available.contains(id.as_str())
                    || (mode == Mode::Failure && errored.contains(id.as_str()));
                !mine && !live.contains(&format!("backup-record-{id}"))
            })
            .collect();
        if !stray.is_empty() {
            return Err(format!("records of backups that are not live: {stray:?}"));
        }
        let unreferenced: Vec<&String> = store.chunks.difference(&store.referenced).take(5).collect();
        let lost: Vec<&String> = store.referenced.difference(&store.chunks).take(5).collect();
        if !unreferenced.is_empty() || !lost.is_empty() {
            return Err(format!(
                "{} chunks no record lists ({unreferenced:?}), {} listed chunks missing ({lost:?})",
                store.chunks.difference(&store.referenced).count(),
                store.referenced.difference(&store.chunks).count()
            ));
        }
        Ok(())
    }
}

/// What the POSIX backup store and the file driver's backup exports hold, read from the
/// disk (see `drivers/src/backup/posix/store.rs` for the store's layout).
#[derive(Debug, Default)]
pub struct StoreEntries {
    /// The backups with a record (`backups/<id>.json`).
    records: BTreeSet<String>,
    /// The chunks stored (`chunks/<2 hex>/<sha256>.zst|.raw`), by SHA-256.
    chunks: BTreeSet<String>,
    /// The chunks some record lists.
    referenced: BTreeSet<String>,
    /// What a settled store must not hold: journals, delete marks, temporary files, the
    /// file driver's backup exports (`.ember/exports/`).
    leftovers: Vec<String>,
}

fn dir_names(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    names.sort();
    names
}

impl StoreEntries {
    /// Reads the store in `store` and the exports of the file backend in `volume_dir`.
    pub fn read(store: &Path, volume_dir: &Path) -> Self {
        let mut out = Self::default();
        for (name, path) in dir_names(&store.join("backups")) {
            match name.strip_suffix(".json") {
                Some(id) => {
                    out.records.insert(id.to_owned());
                    // A record being replaced or removed may vanish between the listing and
                    // the read: the next poll sees it settled.
                    let Ok(bytes) = std::fs::read(&path) else { continue };
                    let record: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    for c in record["chunks"].as_array().into_iter().flatten() {
                        out.referenced.insert(c["sha256"].as_str().unwrap_or_default().to_owned());
                    }
                }
                None => out.leftovers.push(format!("backups/{name}")),
            }
        }
        for (prefix, path) in dir_names(&store.join("chunks")) {
            for (name, _) in dir_names(&path) {
                match name.strip_suffix(".zst").or_else(|| name.strip_suffix(".raw")) {
                    Some(hash) if hash.len() == 64 => {
                        out.chunks.insert(hash.to_owned());
                    }
                    _ => out.leftovers.push(format!("chunks/{prefix}/{name}")),
                }
            }
        }
        for dir in ["journal", "deleting"] {
            out.leftovers.extend(dir_names(&store.join(dir)).into_iter().map(|(n, _)| format!("{dir}/{n}")));
        }
        let exports = volume_dir.join(".ember").join("exports");
        out.leftovers.extend(dir_names(&exports).into_iter().map(|(n, _)| format!(".ember/exports/{n}")));
        out
    }
}

/// Which case [`settle`] checks: the project's client, the project, a name for messages.
#[derive(Clone, Copy)]
pub struct Case<'a> {
    pub cinder: &'a Cinder,
    pub project: &'a str,
    pub what: &'a str,
    pub mode: Mode,
    /// The all-in-one's data directory, whose backup store (`backups/`) and file backend
    /// (`volumes/file/`) are checked too; `None` where no backup service runs.
    pub data_dir: Option<&'a Path>,
}

/// A flow that has not ended, if any (admin view): while one runs, resources may still
/// appear (a resumed api flow creates its volume's row late) or change.
async fn unfinished_flow(c: &Cinder) -> Option<String> {
    for state in ["pending", "running", "suspended", "suspending", "resuming"] {
        let (status, body) = c.get(&format!("/flows?state={state}&limit=1")).await;
        assert_eq!(status, 200, "list {state} flows: {body}");
        if let Some(f) = body["flows"].as_array().and_then(|f| f.first()) {
            return Some(format!("flow {} ({}) is {}", f["id"], f["name"], f["state"]));
        }
    }
    None
}

/// Waits until every flow has ended, every accepted operation of the case has finished
/// and nothing of the project is in transition; and then the backend must hold exactly
/// the live files (`live` holds those of the cases before, and gets this project's; `files`
/// lists the backend) and quota usage must equal the live resources with nothing reserved.
/// All of it before `deadline`.
pub async fn settle(
    case: Case<'_>,
    expect: &[Expect],
    live: &mut BTreeSet<String>,
    files: &dyn Fn() -> Vec<String>,
    deadline: Instant,
) {
    let Case { cinder: c, project, what, mode, data_dir } = case;
    loop {
        let flow = unfinished_flow(c).await;
        let seen = Seen::read(c).await;
        let why = match flow.or_else(|| seen.unsettled(expect, mode)) {
            Some(why) => why,
            None => 'check: {
                let (exports, found): (BTreeSet<String>, BTreeSet<String>) =
                    files().into_iter().partition(|f| f.starts_with("export-"));
                // Exports: exactly those a connected attachment needs, but an attachment in
                // error (after a failure) may or may not keep its volume's export.
                let (needed, errored) = seen.exports_needed();
                let mine_exports: BTreeSet<String> = match mode {
                    Mode::Crash => needed,
                    Mode::Failure => {
                        needed.union(&exports.intersection(&errored).cloned().collect()).cloned().collect()
                    }
                };
                let exports_ok = exports.is_superset(&mine_exports)
                    && exports.difference(&mine_exports).all(|e| live.contains(e));
                if !exports_ok {
                    let extra: Vec<String> = exports
                        .difference(&mine_exports)
                        .filter(|e| !live.contains(*e))
                        .map(|e| {
                            let id = e.trim_start_matches("export-volume-");
                            let v = seen.volumes.iter().find(|v| v.0 == id).map(|v| v.1.clone());
                            let a: Vec<&str> =
                                seen.attachments.iter().filter(|a| a.2 == id).map(|a| a.1.as_str()).collect();
                            format!("{id} (volume {v:?}, attachments {a:?})")
                        })
                        .collect();
                    break 'check format!(
                        "exports not needed: {extra:?}; missing: {:?}",
                        mine_exports.difference(&exports).collect::<Vec<_>>()
                    );
                }
                // After a failure, a resource in an error status may or may not have kept
                // its file (the revert removed it, or a failed delete had already); every
                // other file must still belong to a resource, and every healthy one has one.
                let mine: BTreeSet<String> = match mode {
                    Mode::Crash => seen.files(),
                    Mode::Failure => {
                        let healthy = seen.files_where(|s| RESTING.contains(&s));
                        let errored = seen.files_where(|s| !RESTING.contains(&s));
                        healthy.union(&found.intersection(&errored).cloned().collect()).cloned().collect()
                    }
                };
                let want: BTreeSet<String> = live.union(&mine).cloned().collect();
                let usage = join_all(seen.usage().map(|(r, _)| c.quota_usage(project, r))).await;
                let want_usage: Vec<(i64, i64)> = seen.usage().iter().map(|(_, n)| (*n, 0)).collect();
                let want: BTreeSet<String> = want
                    .into_iter()
                    .filter(|f| !f.starts_with("export-") && !f.starts_with("backup-record-"))
                    .collect();
                let store = data_dir
                    .map(|d| StoreEntries::read(&d.join("backups"), &d.join("volumes").join("file")))
                    .unwrap_or_default();
                let store_ok = seen.check_store(&store, live, mode);
                if found == want && usage == want_usage && store_ok.is_ok() {
                    live.extend(mine);
                    live.extend(mine_exports);
                    live.extend(store.records.iter().map(|id| format!("backup-record-{id}")));
                    return;
                }
                format!(
                    "the backend holds {} files not live ({:?}) and misses {:?}; quota usage (volumes, \
                     snapshots, gigabytes, backups, backup_gigabytes) is {usage:?}, the live resources make \
                     {want_usage:?}; backup store: {store_ok:?}",
                    found.difference(&want).count(),
                    found.difference(&want).take(5).collect::<Vec<_>>(),
                    want.difference(&found).take(5).collect::<Vec<_>>(),
                )
            }
        };
        assert!(Instant::now() < deadline, "{what}: not settled at the deadline: {why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the flows that ended in FAILURE and were not checked before (their ids are
/// added to `checked`): a revert may only have stopped because its hand-off had been taken
/// by the receiving process (`HandoffTaken`); any other revert failure is a bug of a revert.
pub async fn assert_reverts_clean(admin: &Cinder, checked: &mut BTreeSet<String>, what: &str) {
    let (status, body) = admin.get("/flows?state=failure&limit=10000").await;
    assert_eq!(status, 200, "list failed flows: {body}");
    for flow in body["flows"].as_array().expect("a flow list") {
        let id = flow["id"].as_str().unwrap_or_default().to_owned();
        if !checked.insert(id.clone()) {
            continue;
        }
        let (_, detail) = admin.get(&format!("/flows/{id}")).await;
        for atom in detail["flow"]["atoms"].as_array().into_iter().flatten() {
            let kind = &atom["revert_failure"]["kind"];
            assert!(
                kind.is_null() || kind == "HandoffTaken",
                "{what}: flow {id} ({}) failed to revert {}: {}",
                flow["name"],
                atom["name"],
                atom["revert_failure"]
            );
        }
    }
}

/// Whether `name` (a failpoint or a flow) is chosen by `EMBER_CRASH_MATRIX`.
pub fn selected_name(name: &str) -> bool {
    match std::env::var("EMBER_CRASH_MATRIX") {
        Ok(f) if !f.is_empty() && f != "all" => name.contains(&f),
        _ => true,
    }
}

/// The failpoints chosen by `EMBER_CRASH_MATRIX` (a substring each must contain, or `all`,
/// the default), so a developer can run one case.
pub fn selected(points: Vec<Failpoint>) -> Vec<Failpoint> {
    points.into_iter().filter(|p| selected_name(&p.name)).collect()
}
