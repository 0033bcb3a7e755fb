//! Ember's domain model, configuration and the error types shared by its services.

pub mod access;
pub mod capabilities;
pub mod config;
pub mod error;
pub mod host;
pub mod model;
pub mod ops;
pub mod repo;

pub use error::{Error, ErrorKind, ResourceKind, Result, ServiceError};
