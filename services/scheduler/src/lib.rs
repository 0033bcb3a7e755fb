//! Cinder's filter scheduler: pick a backend pool with filters and weighers.
//!
//! Volume services report their pools ([`HostStateCache::update_capabilities`]); the
//! services table says which are up ([`HostStateCache::update_service`]);
//! [`FilterScheduler::schedule`] filters the pools (AvailabilityZone, Capacity,
//! Capabilities, Retry), weighs the survivors (Capacity, AllocatedCapacity, Chance) with
//! Cinder's normalisation, and takes the volume's size from the winner so that a burst of
//! requests spreads out. [`SharedScheduler`] puts both behind one lock for concurrent use.

pub mod capacity;
pub mod extra_specs;
pub mod extras;
pub mod filters;
pub mod options;
pub mod request;
pub mod scheduler;
pub mod service;
pub mod shared;
pub mod state;
pub mod weighers;

pub use options::{FilterKind, SchedulerOptions, WeigherKind};
pub use request::{RequestSpec, RetryInfo};
pub use scheduler::{FilterScheduler, NoValidBackend, Placement, Rejection};
pub use service::{
    LivenessHandle, LivenessRefresh, SchedulerService, SchedulerServiceHandle, SchedulerServiceOptions,
    request_capabilities,
};
pub use shared::{SharedScheduler, now_ms};
pub use state::{BackendState, HostStateCache, PoolState, ServiceStatus};

/// Errors of the scheduler crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid scheduler options: {0}")]
    InvalidOptions(String),
    #[error(transparent)]
    NoValidBackend(#[from] NoValidBackend),
    /// The services table could not be read.
    #[error("reading the services table: {0}")]
    Repo(#[source] ember_common::Error),
    /// Listening for reports or asking for them failed.
    #[error(transparent)]
    Rpc(ember_rpc::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
