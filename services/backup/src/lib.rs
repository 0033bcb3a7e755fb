//! The backup service's own parts (Cinder's cinder-backup around its manager): the backup
//! store built from `[backup]`, and [`Store`], the flows' [`BackupStore`]: the driver, and
//! how the backup flows open the image a volume service handed over (the file itself on
//! the volume's host, else its NBD export).
//!
//! The role's composition (service row and heartbeat, the worker of `backup.<host>`
//! flows, wakes on `ember-backup.<host>`) is in the `ember` binary's `process/roles.rs`,
//! like the other roles'; the flows themselves are `ember_flows::backup`.

use std::sync::Arc;

use ember_common::config::{BackupDriverKind, Config};
use ember_drivers::backup::nbd::{NbdOptions, NbdSink, NbdSource};
use ember_drivers::backup::{
    BackupDriver, FakeBackupDriver, ImageSink, ImageSource, LocalSink, LocalSource, PosixBackupDriver,
    PosixBackupOptions,
};
use ember_drivers::{ConnectionInfo, DriverError};
use ember_flows::BackupStore;
use ember_flows::keys::BackupDevice;

/// Errors of the backup service's setup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed its checks.
    #[error("backup store: {0}")]
    Store(#[from] DriverError),
    /// The configuration names a store this build cannot run.
    #[error("invalid [backup] configuration: {0}")]
    Config(String),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The backup driver `[backup]` configures, checked (Cinder's `check_for_setup_error`).
pub async fn driver_from_config(config: &Config) -> Result<Arc<dyn BackupDriver>> {
    let driver: Arc<dyn BackupDriver> = match config.backup.backup_driver {
        BackupDriverKind::Fake => Arc::new(FakeBackupDriver::new()),
        BackupDriverKind::Posix => Arc::new(PosixBackupDriver::new(posix_options(config))?),
    };
    driver.check_for_setup_error().await?;
    Ok(driver)
}

/// The POSIX store's options from `[backup]`.
pub fn posix_options(config: &Config) -> PosixBackupOptions {
    let b = &config.backup;
    PosixBackupOptions {
        backup_posix_path: b.posix_path(&config.data_dir),
        backup_file_size: b.backup_chunk_size,
        backup_compression_level: b.backup_compression_level,
        ..PosixBackupOptions::default()
    }
}

/// The backup store of the service on `host`: its driver, and the images it reaches.
pub struct Store {
    host: String,
    driver: Arc<dyn BackupDriver>,
    use_nbd: bool,
}

impl Store {
    /// The store of the backup service on `host`, writing with `driver`.
    pub fn new(host: impl Into<String>, driver: Arc<dyn BackupDriver>) -> Self {
        Self { host: host.into(), driver, use_nbd: false }
    }

    /// Reads and restores through NBD exports even on the volume's own host
    /// (`backup_use_nbd`).
    pub fn with_nbd(mut self, use_nbd: bool) -> Self {
        self.use_nbd = use_nbd;
        self
    }

    /// The local file of `device`, refused on another machine (only its host reaches it).
    fn local<'d>(&self, device: &'d BackupDevice) -> ember_drivers::Result<&'d std::path::Path> {
        match device {
            BackupDevice::Local { host, path, .. } if *host == self.host => Ok(path),
            BackupDevice::Local { host, .. } | BackupDevice::Nbd { host, .. } => {
                Err(DriverError::NotSupported(format!(
                    "the volume's image is a file on host {host} and this backup service runs on {}",
                    self.host
                )))
            }
        }
    }
}

/// The NBD target of a device served over NBD.
fn nbd_info(device: &BackupDevice) -> ember_drivers::Result<Option<ConnectionInfo>> {
    match device {
        BackupDevice::Nbd { connection_info, .. } => serde_json::from_value(connection_info.clone())
            .map(Some)
            .map_err(|e| DriverError::InvalidInput(format!("the NBD connection info is not valid: {e}"))),
        BackupDevice::Local { .. } => Ok(None),
    }
}

#[async_trait::async_trait]
impl BackupStore for Store {
    fn driver(&self) -> Arc<dyn BackupDriver> {
        self.driver.clone()
    }

    fn via_nbd(&self, volume_host: &str) -> bool {
        self.use_nbd || volume_host != self.host
    }

    async fn open_source(&self, device: &BackupDevice) -> ember_drivers::Result<Box<dyn ImageSource>> {
        if let Some(info) = nbd_info(device)? {
            return Ok(Box::new(NbdSource::from_connection_info(&info, &NbdOptions::default()).await?));
        }
        let path = self.local(device)?;
        Ok(Box::new(LocalSource::open_with_size(path, device.size_bytes()).await?))
    }

    async fn open_sink(&self, device: &BackupDevice) -> ember_drivers::Result<Box<dyn ImageSink>> {
        if let Some(info) = nbd_info(device)? {
            return Ok(Box::new(NbdSink::from_connection_info(&info, &NbdOptions::default()).await?));
        }
        let path = self.local(device)?;
        Ok(Box::new(LocalSink::open(path).await?))
    }
}
