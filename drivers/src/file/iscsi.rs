//! iSCSI exports of volumes through tgt, as Cinder's LVM driver with the `tgtadm` helper:
//! one target per exported volume and access mode (`<prefix>volume-<id>` for rw,
//! `<prefix>volume-<id>:ro` for ro, whose LUN refuses writes), LUN 1 backed by the volume's
//! raw file, the volume's CHAP account bound to it and the connector's initiator in its ACL.
//!
//! tgtd keeps targets in memory, so every call reads its listing and creates what is
//! missing: a repeated call, a call after a crash half-way, and `ensure_export` after tgtd
//! restarted all end with the same target. The CHAP credentials are generated once per
//! volume and kept in `.ember/iscsi/volume-<id>.json` (they outlive tgtd and this process,
//! so a re-export answers with the same ones) until the volume is deleted.
//!
//! Only raw volumes can be served: tgt's `rdwr` backing store gives the file's bytes to
//! the initiator as the disk, and a qcow2 file's bytes are its container (header, tables),
//! not the guest's data. The driver refuses `iscsi` with `qcow2` at setup.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::error::{DriverError, Result};
use crate::file::paths::{DataDir, Kind};
use crate::file::tgt::{Target, Tgtadm};
use crate::file::{exists, read_json, remove, write_json};
use crate::types::{AccessMode, ConnectionInfo};

/// The LUN holding the volume's data (LUN 0 is tgt's controller), as in Cinder.
const DATA_LUN: u32 = 1;
/// Attempts at a free target id, in case another process sharing tgtd takes the one picked.
const TID_ATTEMPTS: usize = 5;

/// The settings of the iSCSI exports of one backend.
#[derive(Debug)]
pub(crate) struct IscsiTargets {
    pub tgt: Tgtadm,
    /// Cinder's `target_prefix`.
    pub prefix: String,
    /// `ip:port` of the portal, as initiators are told.
    pub portal: String,
    /// Serializes the choice of a new target id within this process.
    pub create: Mutex<()>,
}

/// A volume's CHAP credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chap {
    auth_username: String,
    auth_password: String,
}

impl Chap {
    /// Fresh random credentials (from the OS's random source, through UUID v4).
    fn generate() -> Self {
        let hex = || uuid::Uuid::new_v4().simple().to_string();
        Chap { auth_username: hex()[..20].to_owned(), auth_password: hex()[..24].to_owned() }
    }
}

impl IscsiTargets {
    /// The target name of a volume's export in `mode`. Ids have no `:`, so no two
    /// (volume, mode) pairs share a name.
    fn iqn(&self, id: &str, mode: AccessMode) -> String {
        match mode {
            AccessMode::Rw => format!("{}volume-{id}", self.prefix),
            AccessMode::Ro => format!("{}volume-{id}:ro", self.prefix),
        }
    }

    /// Exports the volume in `mode` (creating what is missing) and admits `initiator`.
    pub(crate) async fn connect(
        &self,
        dir: &DataDir,
        id: &str,
        initiator: &str,
        mode: AccessMode,
    ) -> Result<ConnectionInfo> {
        check_initiator(initiator)?;
        let image = dir.image(Kind::Volume, id)?;
        if !exists(&image).await? {
            return Err(DriverError::volume_not_found(id));
        }
        let chap = self.chap(dir, id).await?;
        let iqn = self.iqn(id, mode);
        let target = self.target(&iqn).await?;
        if target.lun(DATA_LUN).is_none() {
            self.tgt.new_lun(target.tid, DATA_LUN, &image.to_string_lossy()).await?;
        }
        // Read-only before anyone is admitted: a crash in between leaves a target nobody
        // can reach, and the next call finishes it.
        if mode == AccessMode::Ro && !target.lun(DATA_LUN).is_some_and(|l| l.readonly) {
            self.tgt.set_readonly(target.tid, DATA_LUN).await?;
        }
        self.tgt.new_account(&chap.auth_username, &chap.auth_password).await?;
        if !target.accounts.contains(&chap.auth_username) {
            self.tgt.bind_account(target.tid, &chap.auth_username).await?;
        }
        if !target.acl.iter().any(|a| a == initiator) {
            self.tgt.bind_initiator(target.tid, initiator).await?;
        }
        Ok(self.info(id, &iqn, &chap, mode))
    }

    /// Withdraws `initiator` from the volume's export in `mode` and closes the sessions it
    /// still has there (an ACL only gates new logins); the target stays.
    pub(crate) async fn disconnect(&self, id: &str, initiator: &str, mode: AccessMode) -> Result<()> {
        let iqn = self.iqn(id, mode);
        let targets = self.tgt.targets().await?;
        let Some(target) = targets.iter().find(|t| t.iqn == iqn) else { return Ok(()) };
        if target.acl.iter().any(|a| a == initiator) {
            self.tgt.unbind_initiator(target.tid, initiator).await?;
        }
        for session in target.sessions.iter().filter(|s| s.initiator == initiator) {
            for cid in &session.cids {
                self.tgt.close_connection(target.tid, session.sid, *cid).await?;
            }
        }
        Ok(())
    }

    /// Deletes every target of the volume (by name, and by backing file in case the prefix
    /// changed) and its CHAP account; the credentials stay on record for the next export.
    pub(crate) async fn remove(&self, dir: &DataDir, id: &str) -> Result<()> {
        let image = dir.image(Kind::Volume, id)?;
        let names = [self.iqn(id, AccessMode::Rw), self.iqn(id, AccessMode::Ro)];
        for target in self.tgt.targets().await? {
            let serves = target.lun(DATA_LUN).and_then(|l| l.path.as_deref()) == Some(image.as_path());
            if serves || names.contains(&target.iqn) {
                self.tgt.delete_target(target.tid).await?;
            }
        }
        if let Some(chap) = read_json::<Chap>(&dir.chap_record(id)?).await? {
            self.tgt.delete_account(&chap.auth_username).await?;
        }
        Ok(())
    }

    /// Removes the exports and forgets the credentials (the volume is being deleted).
    pub(crate) async fn forget(&self, dir: &DataDir, id: &str) -> Result<()> {
        self.remove(dir, id).await?;
        remove(&dir.chap_record(id)?).await
    }

    /// Whether any target serves the volume.
    pub(crate) async fn is_exported(&self, dir: &DataDir, id: &str) -> Result<bool> {
        let image = dir.image(Kind::Volume, id)?;
        Ok(self.tgt.targets().await?.iter().any(|t| serves(t).is_some_and(|p| p == image)))
    }

    /// The ids of the volumes of this data directory that a target serves.
    pub(crate) async fn list(&self, dir: &DataDir) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .tgt
            .targets()
            .await?
            .iter()
            .filter_map(serves)
            .filter(|path| path.parent() == Some(dir.root()))
            .filter_map(|path| path.file_name()?.to_str()?.strip_prefix("volume-").map(str::to_owned))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The target named `iqn`, created if missing with the next free target id.
    async fn target(&self, iqn: &str) -> Result<Target> {
        let _guard = self.create.lock().await;
        for _ in 0..TID_ATTEMPTS {
            let targets = self.tgt.targets().await?;
            if let Some(found) = targets.iter().find(|t| t.iqn == iqn) {
                return Ok(found.clone());
            }
            let tid = targets.iter().map(|t| t.tid).max().unwrap_or(0) + 1;
            if self.tgt.new_target(tid, iqn).await? {
                return Ok(Target { tid, iqn: iqn.to_owned(), ..Target::default() });
            }
        }
        Err(DriverError::Busy(format!("no free target id for {iqn} after {TID_ATTEMPTS} attempts")))
    }

    /// The volume's CHAP credentials, generated and recorded on first use.
    async fn chap(&self, dir: &DataDir, id: &str) -> Result<Chap> {
        let path = dir.chap_record(id)?;
        if let Some(chap) = read_json::<Chap>(&path).await? {
            return Ok(chap);
        }
        let chap = Chap::generate();
        write_json(&path, &chap).await?;
        Ok(chap)
    }

    /// Cinder's iSCSI connection info.
    fn info(&self, id: &str, iqn: &str, chap: &Chap, mode: AccessMode) -> ConnectionInfo {
        let mut data = Map::new();
        data.insert("target_discovered".to_owned(), Value::from(false));
        data.insert("target_iqn".to_owned(), Value::from(iqn));
        data.insert("target_portal".to_owned(), Value::from(self.portal.clone()));
        data.insert("target_lun".to_owned(), Value::from(DATA_LUN));
        data.insert("volume_id".to_owned(), Value::from(id));
        data.insert("auth_method".to_owned(), Value::from("CHAP"));
        data.insert("auth_username".to_owned(), Value::from(chap.auth_username.clone()));
        data.insert("auth_password".to_owned(), Value::from(chap.auth_password.clone()));
        data.insert("access_mode".to_owned(), Value::from(mode.as_str()));
        data.insert("encrypted".to_owned(), Value::from(false));
        ConnectionInfo { driver_volume_type: "iscsi".to_owned(), data }
    }
}

/// The backing file of a target's data LUN.
fn serves(target: &Target) -> Option<&Path> {
    target.lun(DATA_LUN)?.path.as_deref()
}

/// An initiator name goes into tgtd's ACL: it must be an iSCSI name (`iqn.`, `eui.` or
/// `naa.`), which also keeps out `ALL` (anyone) and anything tgtadm would read as an option.
pub(crate) fn check_initiator(initiator: &str) -> Result<()> {
    let lower = initiator.to_ascii_lowercase();
    let named = ["iqn.", "eui.", "naa."].iter().any(|p| lower.starts_with(p));
    let clean = initiator.len() <= 223 && initiator.bytes().all(|b| b.is_ascii_graphic());
    if named && clean {
        Ok(())
    } else {
        Err(DriverError::InvalidInput(format!("invalid iSCSI initiator name {initiator:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_iscsi_names_enter_an_acl() {
        for good in ["iqn.1993-08.org.debian:01:abc", "eui.02004567A425678D", "naa.52004567BA64678D"] {
            check_initiator(good).unwrap();
        }
        for bad in ["", "ALL", "-T", "iqn.x y", "iqn.\u{e9}", "host", &format!("iqn.{}", "a".repeat(230))] {
            assert!(check_initiator(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn credentials_are_random() {
        let (a, b) = (Chap::generate(), Chap::generate());
        assert_ne!(a.auth_password, b.auth_password);
        assert_eq!((a.auth_username.len(), a.auth_password.len()), (20, 24));
    }
}
