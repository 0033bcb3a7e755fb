//! What the backup flows share: the topics of backup services, reading a backup the caller
//! may see, choosing a backup host, and the volume's way back from `backing-up`.

use chrono::Utc;
use ember_common::ErrorKind;
use ember_common::model::{
    Backup, ServiceFilter, SnapshotChanges, SnapshotStatus, Volume, VolumeChanges, VolumeExpect, VolumeStatus,
};
use ember_common::ops::RequestContext;
use ember_engine::Failure;

use crate::deps::Deps;
use crate::error::{domain, fail};

/// The `binary` of backup service rows.
pub const BACKUP_BINARY: &str = "ember-backup";

/// The topic of the backup flows of the backup service on `host`.
pub fn backup_topic(host: &str) -> String {
    format!("backup.{host}")
}

/// The backup `id` if `rc` may see it (its project's, or any for an admin); another
/// project's reads as unknown.
pub(crate) async fn own_backup(deps: &Deps, rc: &RequestContext, id: &str) -> Result<Backup, Failure> {
    match deps.backups.get_backup(id).await {
        Ok(b) if b.project_id == rc.project_id || rc.is_admin => Ok(b),
        Ok(_) | Err(ember_common::Error::NotFound { .. }) => {
            Err(fail(ErrorKind::NotFound, format!("Backup {id} could not be found.")))
        }
        Err(e) => Err(domain(e)),
    }
}

/// The hosts of the live, enabled backup services in `zone` (any zone when `None`).
pub async fn live_backup_hosts(deps: &Deps, zone: Option<&str>) -> Result<Vec<String>, Failure> {
    let filter = ServiceFilter { binary: Some(BACKUP_BINARY.to_owned()), ..ServiceFilter::default() };
    let rows = deps.services.list_services(&filter).await.map_err(domain)?;
    let down = chrono::Duration::from_std(deps.config.service_down_time).unwrap_or(chrono::Duration::MAX);
    let now = Utc::now();
    let mut hosts: Vec<String> = rows
        .into_iter()
        .filter(|s| !s.disabled && s.is_up(now, down))
        .filter(|s| zone.is_none_or(|z| s.availability_zone == z))
        .map(|s| s.host)
        .collect();
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}

/// Cinder's `_get_available_backup_service_host`: a live backup service in `zone`, the
/// one on the volume's own host when there is one (it reads the image directly), else one
/// picked by the backup id (spreading backups, the same pick on a re-run).
pub(crate) async fn choose_backup_host(
    deps: &Deps,
    volume: &Volume,
    zone: Option<&str>,
    backup_id: &str,
) -> Result<String, Failure> {
    let hosts = live_backup_hosts(deps, zone).await?;
    let volume_host = volume.host.as_deref().and_then(|h| h.split(['@', '#']).next());
    if let Some(same) = hosts.iter().find(|h| Some(h.as_str()) == volume_host) {
        return Ok(same.clone());
    }
    if hosts.is_empty() {
        return Err(fail(ErrorKind::Unavailable, "Service cinder-backup could not be found."));
    }
    let pick = backup_id.bytes().fold(0usize, |acc, b| acc.wrapping_mul(31).wrapping_add(usize::from(b)));
    Ok(hosts[pick % hosts.len()].clone())
}

/// The status a volume in `backing-up` goes back to: the one it had (`previous_status`).
pub(crate) fn status_before_backup(v: &Volume) -> VolumeStatus {
    match v.previous_status.as_deref() {
        Some("in-use") => VolumeStatus::InUse,
        _ => VolumeStatus::Available,
    }
}

/// Moves volume `id` from `from` back to the status it had before (compare-and-swap; a
/// lost swap, the volume elsewhere already, changes nothing).
pub(crate) async fn restore_volume_status(deps: &Deps, id: &str, from: VolumeStatus) -> Result<(), Failure> {
    let v = match deps.volumes.get_volume(id).await {
        Ok(v) => v,
        Err(ember_common::Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(domain(e)),
    };
    if v.status != from {
        return Ok(());
    }
    let changes = VolumeChanges {
        status: Some(status_before_backup(&v)),
        previous_status: Some(None),
        ..VolumeChanges::default()
    };
    deps.volumes.update_volume(id, &VolumeExpect::status_in(&[from]), &changes).await.map_err(domain)?;
    Ok(())
}

/// The source of backup `b` goes back from `backing-up`: its snapshot to `available` when
/// it backs up a snapshot (Cinder swaps the snapshot, not the volume), else its volume to
/// the status it had. Compare-and-swaps: a re-run, or a source elsewhere already, changes
/// nothing.
pub(crate) async fn restore_source_status(deps: &Deps, b: &Backup) -> Result<(), Failure> {
    let Some(sid) = &b.snapshot_id else {
        return restore_volume_status(deps, &b.volume_id, VolumeStatus::BackingUp).await;
    };
    let changes = SnapshotChanges { status: Some(SnapshotStatus::Available), ..SnapshotChanges::default() };
    match deps.snapshots.update_snapshot(sid, &[SnapshotStatus::BackingUp], &changes).await {
        Ok(_) | Err(ember_common::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(domain(e)),
    }
}

/// How long the backup service waits for the volume service's part of a backup or restore
/// (an export of a large qcow2 volume is a full conversion).
pub(crate) const DEVICE_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Waits until flow `id` ends (polling its record: 1 ms doubling to 500 ms) and returns
/// its record; a flow that did not succeed is a failure carrying its first failure.
pub(crate) async fn wait_flow(
    deps: &Deps,
    id: &str,
    limit: std::time::Duration,
) -> Result<ember_engine::FlowDetail, Failure> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match deps.store.get_flow(id).await {
            Ok(Some(detail)) if detail.flow.state == ember_engine::FlowState::Success => return Ok(detail),
            Ok(Some(detail)) if detail.flow.state.is_terminal() => {
                let failure = detail.atoms.iter().find_map(|a| a.failure.clone());
                return Err(failure.unwrap_or_else(|| {
                    Failure::new("FlowFailed", format!("flow {id} ended in {}", detail.flow.state.as_str()))
                }));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(flow_id = %id, error = %e, "reading a flow the backup waits for failed"),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Failure::new("Timeout", format!("flow {id} did not end within {limit:?}")));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(500));
    }
}

/// The value `key` one of flow `detail`'s atoms produced.
pub(crate) fn atom_output<T: ember_engine::Value>(
    detail: &ember_engine::FlowDetail,
    key: &ember_engine::Key<T>,
) -> Result<T, Failure> {
    for atom in &detail.atoms {
        if let Some(values) = &atom.result
            && let Some(v) = values.get(key)?
        {
            return Ok(v);
        }
    }
    Err(Failure::new("MissingResult", format!("flow {} produced no {}", detail.flow.id, key.name())))
}

/// How often at most a running backup or restore records its progress in its atom.
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// A backup's or restore's progress: logged every 10 % and recorded (at most every
/// [`PROGRESS_INTERVAL`], and once more at the end) in the running atom, where the admin
/// view of the flow and `ember manage backups` show it.
pub(crate) struct FlowProgress {
    log: TenPercent,
    tx: tokio::sync::watch::Sender<Option<ember_engine::Progress>>,
}

impl FlowProgress {
    /// Progress of `what` (`backup`, `restore`) of backup `id`, recorded in `ctx`'s atom.
    pub(crate) fn start(deps: &Deps, ctx: &ember_engine::Context, what: &'static str, id: &str) -> Self {
        let (tx, mut rx) = tokio::sync::watch::channel(None::<ember_engine::Progress>);
        let store = deps.store.clone();
        let flow_id = ctx.flow_id().to_owned();
        let atom = ctx.atom_name().to_owned();
        // Ends once the reporter is dropped and its last value is written.
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(p) = *rx.borrow_and_update() else { continue };
                if let Err(e) = store.record_progress(&flow_id, &atom, p).await {
                    tracing::debug!(flow_id = %flow_id, error = %e, "recording progress failed");
                }
                tokio::time::sleep(PROGRESS_INTERVAL).await;
            }
        });
        Self { log: TenPercent::new(what, id), tx }
    }
}

impl ember_drivers::backup::Progress for FlowProgress {
    fn report(&self, done_bytes: u64, total_bytes: u64) {
        self.log.report(done_bytes, total_bytes);
        self.tx.send_replace(Some(ember_engine::Progress { done: done_bytes, total: total_bytes }));
    }
}

/// Logs a backup's or restore's progress every 10 % (the flow's `tracing` span names it).
pub(crate) struct TenPercent {
    what: &'static str,
    id: String,
    last: std::sync::atomic::AtomicU64,
}

impl TenPercent {
    pub(crate) fn new(what: &'static str, id: &str) -> Self {
        Self { what, id: id.to_owned(), last: std::sync::atomic::AtomicU64::new(0) }
    }
}

impl ember_drivers::backup::Progress for TenPercent {
    fn report(&self, done_bytes: u64, total_bytes: u64) {
        let tenth = done_bytes.saturating_mul(10).checked_div(total_bytes).unwrap_or(10);
        let before = self.last.fetch_max(tenth, std::sync::atomic::Ordering::Relaxed);
        if tenth > before {
            tracing::info!(
                what = self.what,
                id = %self.id,
                done_bytes,
                total_bytes,
                percent = tenth * 10,
                "{} progress", self.what
            );
        }
    }
}

/// An [`ImageSource`](ember_drivers::backup::ImageSource) that counts the bytes read
/// through it in `ember_backup_bytes_read_total` (a resumed backup reads only what it had
/// not stored).
pub(crate) struct CountedSource<'a>(pub(crate) &'a dyn ember_drivers::backup::ImageSource);

#[async_trait::async_trait]
impl ember_drivers::backup::ImageSource for CountedSource<'_> {
    fn size(&self) -> u64 {
        self.0.size()
    }

    async fn extents(
        &self,
        offset: u64,
        length: u64,
    ) -> ember_drivers::Result<Vec<ember_drivers::backup::Extent>> {
        self.0.extents(offset, length).await
    }

    async fn read_at(&self, offset: u64, buf: Vec<u8>) -> ember_drivers::Result<Vec<u8>> {
        let buf = self.0.read_at(offset, buf).await?;
        metrics::counter!("ember_backup_bytes_read_total").increment(buf.len() as u64);
        Ok(buf)
    }
}

/// The device the volume service's flow `id` (an export or a restore target) made, for a
/// revert that lost its task's result: the hand-off is withdrawn if no process took it
/// yet (nothing was made); else the flow is waited for, and only a flow that succeeded
/// made a device to release (one that failed released its own).
pub(crate) async fn handed_off_device(
    deps: &Deps,
    id: &str,
) -> Result<Option<crate::keys::BackupDevice>, Failure> {
    match deps.store.cancel(id).await {
        Ok(Some(true) | None) => return Ok(None),
        Ok(Some(false)) => {}
        Err(e) => return Err(Failure::new("service.internal", format!("withdrawing flow {id} failed: {e}"))),
    }
    match wait_flow(deps, id, DEVICE_WAIT).await {
        Ok(detail) => Ok(Some(atom_output(&detail, &crate::keys::BACKUP_DEVICE)?)),
        Err(_) => Ok(None),
    }
}
