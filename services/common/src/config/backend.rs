//! One volume backend's section, `[backends.<name>]` (Cinder's per-backend config group).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capabilities::OverSubscription;

/// The volume driver a backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeDriverKind {
    /// Volumes as image files in a directory, through qemu-img (Cinder's NFS driver in spirit).
    File,
    /// In memory, for tests and benchmarks of the control plane.
    Fake,
}

/// The image format of the file driver's volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileVolumeFormat {
    /// Sparse, with snapshots and clones as overlays.
    Qcow2,
    /// Plain files; snapshots and clones are full copies.
    Raw,
}

/// How attachments reach a file backend's volumes (Cinder's `target_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetProtocol {
    /// NBD, one `qemu-storage-daemon` per backend: nothing to install beyond qemu-utils.
    Nbd,
    /// iSCSI through tgt (needs `file_volume_format = "raw"` and a running tgtd).
    Iscsi,
}

/// The tool that makes exports (Cinder's `target_helper`): one per protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetHelper {
    /// NBD exports through one `qemu-storage-daemon`; `qemu-nbd`, the name of the tool
    /// used before, is accepted for the same.
    #[serde(rename = "qemu-storage-daemon", alias = "qemu-nbd")]
    QemuStorageDaemon,
    #[serde(rename = "tgtadm")]
    Tgtadm,
}

/// One backend, `[backends.<name>]`. The section name is the backend part of
/// `host@backend#pool`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// `file` or `fake`.
    pub volume_driver: VolumeDriverKind,
    /// The name volume types select with the extra spec `volume_backend_name`; defaults to
    /// the section name.
    pub volume_backend_name: Option<String>,
    /// The availability zone of this backend (Cinder's `backend_availability_zone`);
    /// defaults to `storage_availability_zone`.
    pub backend_availability_zone: Option<String>,
    /// File driver: the directory holding the volume files; defaults to
    /// `<data_dir>/volumes/<section name>`.
    pub file_volume_dir: Option<PathBuf>,
    /// File driver: `qcow2` (default) or `raw`.
    pub file_volume_format: FileVolumeFormat,
    /// File driver: `nbd` (default) or `iscsi`.
    pub target_protocol: TargetProtocol,
    /// File driver: `qemu-storage-daemon` for nbd, `tgtadm` for iscsi; defaults to the
    /// protocol's.
    pub target_helper: Option<TargetHelper>,
    /// iSCSI: the prefix of target names.
    pub target_prefix: String,
    /// The address exports listen on (NBD) or the iSCSI portal initiators are given.
    pub target_ip_address: String,
    /// iSCSI: the portal's port (the NBD daemon takes a free port, kept across restarts).
    pub target_port: u16,
    /// iSCSI: the control port of the tgtd to use (`tgtadm -C`); 0 is the system tgtd.
    pub tgt_control_port: u16,
    /// Fake driver: the capacity it reports, in GiB.
    pub fake_capacity_gb: f64,
    /// Fake driver: operations that always fail (`create_volume`, `extend_volume`...), so a
    /// real process can play a broken backend in tests.
    pub fake_fail_operations: Vec<String>,
    /// How far thin provisioning may over-commit the pool: a ratio of at least 1.0, or
    /// `"auto"` (Cinder's default is 20.0).
    pub max_over_subscription_ratio: OverSubscription,
    /// The share of capacity kept free, 0 to 100.
    pub reserved_percentage: f64,
    /// Whether the backend reports thin provisioning support.
    pub thin_provisioning: bool,
    /// File driver: seconds one `qemu-img` call (a copy, a resize, a flatten) may run
    /// before it is killed and its step fails; 0 waits as long as it takes.
    pub qemu_img_timeout: u64,
    /// File driver, iSCSI: seconds one `tgtadm` call may run before it is killed.
    pub tgtadm_timeout: u64,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            volume_driver: VolumeDriverKind::File,
            volume_backend_name: None,
            backend_availability_zone: None,
            file_volume_dir: None,
            file_volume_format: FileVolumeFormat::Qcow2,
            target_protocol: TargetProtocol::Nbd,
            target_helper: None,
            target_prefix: "iqn.2010-10.org.openstack:".to_owned(),
            target_ip_address: "127.0.0.1".to_owned(),
            target_port: 3260,
            tgt_control_port: 0,
            fake_capacity_gb: 1000.0,
            fake_fail_operations: Vec::new(),
            max_over_subscription_ratio: OverSubscription::default(),
            reserved_percentage: 0.0,
            thin_provisioning: true,
            qemu_img_timeout: 3600,
            tgtadm_timeout: 30,
        }
    }
}

impl BackendConfig {
    /// A backend of the fake driver.
    pub fn fake() -> Self {
        Self { volume_driver: VolumeDriverKind::Fake, ..Self::default() }
    }

    /// `volume_backend_name`, or the section name.
    pub fn backend_name<'a>(&'a self, section: &'a str) -> &'a str {
        self.volume_backend_name.as_deref().unwrap_or(section)
    }

    /// `file_volume_dir`, or `<data_dir>/volumes/<section>`.
    pub fn volume_dir(&self, section: &str, data_dir: &Path) -> PathBuf {
        self.file_volume_dir.clone().unwrap_or_else(|| data_dir.join("volumes").join(section))
    }

    /// The first wrong value of the section, as (option, reason).
    pub(crate) fn check(&self) -> Option<(&'static str, String)> {
        if !(0.0..=100.0).contains(&self.reserved_percentage) {
            return Some(("reserved_percentage", "must be between 0 and 100".into()));
        }
        if let OverSubscription::Ratio(r) = self.max_over_subscription_ratio
            && !(r >= 1.0 && r.is_finite())
        {
            return Some(("max_over_subscription_ratio", "must be at least 1.0, or \"auto\"".into()));
        }
        if !(self.fake_capacity_gb >= 0.0 && self.fake_capacity_gb.is_finite()) {
            return Some(("fake_capacity_gb", "must be a number of GiB, 0 or more".into()));
        }
        if self.tgtadm_timeout == 0 {
            return Some(("tgtadm_timeout", "must be at least 1 second".into()));
        }
        if self.volume_backend_name.as_deref().is_some_and(str::is_empty) {
            return Some(("volume_backend_name", "must not be empty".into()));
        }
        self.check_target()
    }

    /// The first wrong export option, as (option, reason).
    fn check_target(&self) -> Option<(&'static str, String)> {
        let helper = match self.target_protocol {
            TargetProtocol::Nbd => TargetHelper::QemuStorageDaemon,
            TargetProtocol::Iscsi => TargetHelper::Tgtadm,
        };
        if self.target_helper.is_some_and(|h| h != helper) {
            return Some((
                "target_helper",
                "must be qemu-storage-daemon with target_protocol nbd, tgtadm with iscsi".into(),
            ));
        }
        let file = self.volume_driver == VolumeDriverKind::File;
        if file
            && self.target_protocol == TargetProtocol::Iscsi
            && self.file_volume_format != FileVolumeFormat::Raw
        {
            return Some((
                "target_protocol",
                "iscsi needs file_volume_format = \"raw\" (tgt serves a file's bytes as the disk)".into(),
            ));
        }
        if self.target_prefix.is_empty() || self.target_prefix.contains(char::is_whitespace) {
            return Some(("target_prefix", "must be an iSCSI name prefix without spaces".into()));
        }
        if self.tgt_control_port > 32767 {
            return Some(("tgt_control_port", "must be at most 32767 (tgtadm's limit)".into()));
        }
        if self.target_ip_address.parse::<std::net::IpAddr>().is_err() {
            return Some(("target_ip_address", "must be an IP address".into()));
        }
        None
    }
}
