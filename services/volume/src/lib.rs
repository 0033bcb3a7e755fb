//! The volume service's own parts: its backends, built from the configuration, and the
//! capability reports it sends to the schedulers.
//!
//! [`Backends`] turns `enabled_backends` and their `[backends.<name>]` sections into set-up
//! drivers, addressed by `host@backend`. [`CapabilityReporter`] fanout-casts every backend's
//! `get_volume_stats` to the schedulers at start, every `periodic_interval`, and whenever a
//! scheduler asks ([`PublishEndpoint`]), as Cinder's `_report_driver_status` does. The rows
//! and heartbeats of the services themselves come from [`ember_rpc::registry`]:
//! [`Backends::service_specs`] says which rows to register.

mod backends;
mod publish;
mod reporter;

pub use backends::{Backend, Backends};
pub use publish::PublishEndpoint;
pub use reporter::{CapabilityReporter, ReporterHandle, ReporterOptions};

use ember_drivers::DriverError;

/// Errors of the volume service's components.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend's driver failed to set up, or failed an operation asked of it.
    #[error("backend {backend}: {source}")]
    Driver {
        backend: String,
        #[source]
        source: DriverError,
    },
    /// The configuration does not describe a usable backend.
    #[error("invalid backend configuration: {0}")]
    Config(String),
    /// Sending or serving an RPC message failed.
    #[error(transparent)]
    Rpc(#[from] ember_rpc::Error),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
