//! The file backend's capability report: file-system capacity from statvfs, plus the
//! virtual sizes of its volumes (provisioned capacity, qcow2 and sparse raw being thin).

use ember_common::capabilities::{BackendCapabilities, Capacity, OverSubscription, PoolCapabilities};
use serde_json::{Map, Value};

use crate::GIB;
use crate::error::{DriverError, Result};
use crate::file::FileDriver;
use crate::file::image::{blocking, read_header};
use crate::file::paths::Kind;

/// What one scan of the directory finds.
#[derive(Debug)]
struct Usage {
    total_bytes: u64,
    free_bytes: u64,
    provisioned_bytes: u64,
    volumes: usize,
    snapshots: usize,
}

/// The over-subscription ratio the space check uses when the backend reports `auto` or none
/// (Cinder's default `max_over_subscription_ratio`).
const DEFAULT_RATIO: f64 = 20.0;

/// Below this many free bytes nothing is started: even a blank image needs its metadata.
const MIN_FREE_BYTES: u64 = 4 << 20;

impl FileDriver {
    /// Refuses, as `NoSpace`, an operation that would write up to `requested` bytes of
    /// thin images when the file system cannot hold them, as Cinder's NFS driver does
    /// (`_is_share_eligible`): the free space times the over-subscription ratio must exceed
    /// the request, the space used must stay under `100 - reserved_percentage` percent, and
    /// a few MiB must be free. Checked before anything is written, so a full backend leaves
    /// no partial file; a copy that still meets ENOSPC fails the same way.
    pub(super) async fn check_space(&self, requested: u64) -> Result<()> {
        let setup = self.setup()?;
        let dir = setup.dir.root().to_owned();
        let fs = blocking("cannot measure", setup.dir.root(), move || Ok(rustix::fs::statvfs(&dir)?)).await?;
        let total = fs.f_blocks.saturating_mul(fs.f_frsize);
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        let ratio = match self.options.max_over_subscription_ratio {
            Some(OverSubscription::Ratio(r)) if r >= 1.0 => r,
            _ => DEFAULT_RATIO,
        };
        let used_ratio = 1.0 - self.options.reserved_percentage / 100.0;
        let used = if total == 0 { 1.0 } else { (total - free.min(total)) as f64 / total as f64 };
        let refused = if free < MIN_FREE_BYTES {
            Some(format!("{free} bytes free"))
        } else if used > used_ratio {
            Some(format!("{:.1} % used, more than the {:.1} % allowed", used * 100.0, used_ratio * 100.0))
        } else if (free as f64) * ratio < requested as f64 {
            Some(format!("{free} bytes free (x{ratio} over-subscription) for {requested} bytes"))
        } else {
            None
        };
        match refused {
            Some(why) => Err(DriverError::NoSpace(format!("{}: {why}", setup.dir.root().display()))),
            None => Ok(()),
        }
    }

    /// Measures the file system and the images (blocking work on the blocking pool).
    pub(super) async fn measure(&self) -> Result<BackendCapabilities> {
        let setup = self.setup()?;
        let dir = setup.dir.clone();
        let format = setup.qemu.format;
        let usage = blocking("cannot measure", setup.dir.root(), move || {
            let fs = rustix::fs::statvfs(dir.root())?;
            let mut provisioned_bytes = 0;
            let volumes = dir.list(Kind::Volume)?;
            for id in &volumes {
                // A volume deleted since the listing simply no longer counts.
                if let Ok(header) = read_header(&dir.root().join(format!("volume-{id}")), format) {
                    provisioned_bytes += header.virtual_size;
                }
            }
            Ok(Usage {
                total_bytes: fs.f_blocks.saturating_mul(fs.f_frsize),
                free_bytes: fs.f_bavail.saturating_mul(fs.f_frsize),
                provisioned_bytes,
                volumes: volumes.len(),
                snapshots: dir.list(Kind::Snapshot)?.len(),
            })
        })
        .await?;
        Ok(self.report(&usage))
    }

    fn report(&self, usage: &Usage) -> BackendCapabilities {
        let gb = |bytes: u64| (bytes as f64 / GIB as f64 * 100.0).floor() / 100.0;
        let provisioned = gb(usage.provisioned_bytes);
        let mut extra = Map::new();
        extra.insert("volume_format".to_owned(), Value::from(self.options.format.as_str()));
        extra.insert("total_volumes".to_owned(), Value::from(usage.volumes));
        extra.insert("total_snapshots".to_owned(), Value::from(usage.snapshots));
        BackendCapabilities {
            volume_backend_name: self.options.backend_name.clone(),
            vendor_name: "Ember".to_owned(),
            driver_version: env!("CARGO_PKG_VERSION").to_owned(),
            storage_protocol: self.options.target_protocol.storage_protocol().to_owned(),
            pools: vec![PoolCapabilities {
                pool_name: self.options.pool_name.clone(),
                total_capacity_gb: Capacity::Gb(gb(usage.total_bytes)),
                free_capacity_gb: Capacity::Gb(gb(usage.free_bytes)),
                allocated_capacity_gb: provisioned,
                provisioned_capacity_gb: Some(provisioned),
                max_over_subscription_ratio: self.options.max_over_subscription_ratio,
                reserved_percentage: self.options.reserved_percentage,
                thin_provisioning_support: true,
                thick_provisioning_support: Some(false),
                multiattach: Some(false),
                extra,
            }],
            extra: Map::new(),
        }
    }
}
