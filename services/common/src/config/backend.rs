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
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            volume_driver: VolumeDriverKind::File,
            volume_backend_name: None,
            backend_availability_zone: None,
            file_volume_dir: None,
            file_volume_format: FileVolumeFormat::Qcow2,
            fake_capacity_gb: 1000.0,
            fake_fail_operations: Vec::new(),
            max_over_subscription_ratio: OverSubscription::default(),
            reserved_percentage: 0.0,
            thin_provisioning: true,
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
        if self.volume_backend_name.as_deref().is_some_and(str::is_empty) {
            return Some(("volume_backend_name", "must not be empty".into()));
        }
        None
    }
}
