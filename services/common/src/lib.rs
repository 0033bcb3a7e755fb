//! Ember's domain model, configuration and the error types shared by its services.

pub mod capabilities;
pub mod host;
