//! The backup service's own parts (Cinder's cinder-backup around its manager): the backup
//! store built from `[backup]`, and [`Store`], the flows' [`BackupStore`]: the driver, and
//! how the backup flows open the image a volume service handed over.
//!
//! The role's composition (service row and heartbeat, the worker of `backup.<host>`
//! flows, wakes on `ember-backup.<host>`) is in the `ember` binary's `process/roles.rs`,
//! like the other roles'; the flows themselves are `ember_flows::backup`.

use std::sync::Arc;

use ember_common::config::{BackupDriverKind, Config};
use ember_drivers::DriverError;
use ember_drivers::backup::{
    BackupDriver, FakeBackupDriver, ImageSink, ImageSource, LocalSink, LocalSource, PosixBackupDriver,
    PosixBackupOptions,
};
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
}

impl Store {
    /// The store of the backup service on `host`, writing with `driver`.
    pub fn new(host: impl Into<String>, driver: Arc<dyn BackupDriver>) -> Self {
        Self { host: host.into(), driver }
    }

    /// Refuses a device on another machine: a local file is only reachable on its host.
    fn local<'d>(&self, device: &'d BackupDevice) -> ember_drivers::Result<&'d std::path::Path> {
        match device {
            BackupDevice::Local { host, path, .. } if *host == self.host => Ok(path),
            BackupDevice::Local { host, .. } => Err(DriverError::NotSupported(format!(
                "the volume's image is on host {host} and this backup service runs on {}; reading it \
                 through an NBD export is not wired yet",
                self.host
            ))),
        }
    }
}

#[async_trait::async_trait]
impl BackupStore for Store {
    fn driver(&self) -> Arc<dyn BackupDriver> {
        self.driver.clone()
    }

    async fn open_source(&self, device: &BackupDevice) -> ember_drivers::Result<Box<dyn ImageSource>> {
        let path = self.local(device)?;
        Ok(Box::new(LocalSource::open_with_size(path, device.size_bytes()).await?))
    }

    async fn open_sink(&self, device: &BackupDevice) -> ember_drivers::Result<Box<dyn ImageSink>> {
        let path = self.local(device)?;
        Ok(Box::new(LocalSink::open(path).await?))
    }
}
