//! The backends a volume service runs: one driver per enabled `[backends.<name>]` section,
//! set up at start and addressed by `host@backend` (Cinder runs one manager per backend).

use std::sync::Arc;

use ember_common::config::{BackendConfig, Config, FileVolumeFormat, TargetProtocol, VolumeDriverKind};
use ember_drivers::{FakeDriver, FakeOp, FakeOptions, FileDriver, FileOptions, ImageFormat, SharedDriver};
use ember_rpc::registry::VOLUME_BINARY;
use ember_rpc::{ServiceSpec, VOLUME_TOPIC};

use crate::{Error, Result};

/// One running backend.
#[derive(Clone)]
pub struct Backend {
    /// The section name, the backend part of `host@backend#pool`.
    pub name: String,
    /// `host@backend`: the service row's host and the backend's RPC topic suffix.
    pub host: String,
    /// The availability zone of the backend's service row.
    pub availability_zone: String,
    pub driver: SharedDriver,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("host", &self.host).field("az", &self.availability_zone).finish()
    }
}

/// The backends of one volume service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Backends {
    list: Arc<[Backend]>,
}

impl Backends {
    /// Builds a driver for every enabled backend of `config`, then runs each driver's
    /// `do_setup` and `check_for_setup_error`. The first backend that fails stops the start,
    /// with an error naming it.
    pub async fn from_config(config: &Config) -> Result<Self> {
        let backends = Self::build(config)?;
        backends.setup().await?;
        Ok(backends)
    }

    /// Builds the drivers without setting them up.
    pub fn build(config: &Config) -> Result<Self> {
        let mut list = Vec::new();
        for (name, section) in config.enabled() {
            let driver = driver_for(config, name, section)?;
            let zone =
                section.backend_availability_zone.as_deref().unwrap_or(&config.storage_availability_zone);
            list.push(Backend {
                name: name.to_owned(),
                host: format!("{}@{name}", config.host),
                availability_zone: zone.to_owned(),
                driver,
            });
        }
        if list.is_empty() {
            return Err(Error::Config("enabled_backends names no backend".into()));
        }
        Ok(Self { list: list.into() })
    }

    /// Backends from drivers already built (for tests and embedders).
    pub fn from_backends(list: Vec<Backend>) -> Self {
        Self { list: list.into() }
    }

    /// Runs `do_setup` then `check_for_setup_error` on every backend, in order.
    pub async fn setup(&self) -> Result<()> {
        for b in self.list.iter() {
            let failed = |source| Error::Driver { backend: b.host.clone(), source };
            b.driver.do_setup().await.map_err(failed)?;
            b.driver.check_for_setup_error().await.map_err(failed)?;
            tracing::info!(backend = %b.host, "backend is set up");
        }
        Ok(())
    }

    /// The driver of `host@backend`; a `#pool` suffix is ignored.
    pub fn driver(&self, host: &str) -> Option<SharedDriver> {
        self.get(host).map(|b| b.driver.clone())
    }

    /// The backend of `host@backend` (a `#pool` suffix is ignored).
    pub fn get(&self, host: &str) -> Option<&Backend> {
        let backend = host.split_once('#').map_or(host, |(backend, _)| backend);
        self.list.iter().find(|b| b.host == backend)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Backend> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The service rows to register: one `ember-volume` row per backend, host `host@backend`.
    pub fn service_specs(&self) -> Vec<ServiceSpec> {
        self.list
            .iter()
            .map(|b| ServiceSpec::new(&b.host, VOLUME_BINARY, VOLUME_TOPIC, &b.availability_zone))
            .collect()
    }
}

/// The driver a section asks for. A backend without pools reports one pool named after its
/// `volume_backend_name`, as Cinder does.
fn driver_for(config: &Config, name: &str, section: &BackendConfig) -> Result<SharedDriver> {
    let backend_name = section.backend_name(name).to_owned();
    Ok(match section.volume_driver {
        VolumeDriverKind::File => Arc::new(FileDriver::new(FileOptions {
            pool_name: backend_name.clone(),
            backend_name,
            data_dir: section.volume_dir(name, &config.data_dir),
            format: match section.file_volume_format {
                FileVolumeFormat::Qcow2 => ImageFormat::Qcow2,
                FileVolumeFormat::Raw => ImageFormat::Raw,
            },
            target_protocol: match section.target_protocol {
                TargetProtocol::Nbd => ember_drivers::TargetProtocol::Nbd,
                TargetProtocol::Iscsi => ember_drivers::TargetProtocol::Iscsi,
            },
            target_prefix: section.target_prefix.clone(),
            target_ip_address: section.target_ip_address.clone(),
            target_port: section.target_port,
            tgt_control_port: section.tgt_control_port,
            reserved_percentage: section.reserved_percentage,
            max_over_subscription_ratio: Some(section.max_over_subscription_ratio),
            qemu_img_timeout: (section.qemu_img_timeout > 0)
                .then(|| std::time::Duration::from_secs(section.qemu_img_timeout)),
            tgtadm_timeout: std::time::Duration::from_secs(section.tgtadm_timeout),
            ..FileOptions::default()
        })),
        VolumeDriverKind::Fake => Arc::new(FakeDriver::new(FakeOptions {
            pool_name: backend_name.clone(),
            backend_name,
            // Checked finite and non-negative by the configuration; `as` saturates.
            capacity_gb: section.fake_capacity_gb as u64,
            fail_always: fail_operations(name, &section.fake_fail_operations)?,
            ..FakeOptions::default()
        })),
    })
}

/// `fake_fail_operations` as the fake driver's operations; an unknown name is a
/// configuration error that names the section and the option.
fn fail_operations(section: &str, names: &[String]) -> Result<Vec<FakeOp>> {
    names
        .iter()
        .map(|n| {
            serde_json::from_value(serde_json::Value::String(n.clone())).map_err(|_| {
                Error::Config(format!("backends.{section}.fake_fail_operations: unknown operation {n:?}"))
            })
        })
        .collect()
}
