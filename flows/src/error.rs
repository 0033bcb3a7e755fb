//! The crate's error type, and how failures of tasks carry a client-facing error kind
//! across the engine (and a restart) back to [`crate::FlowVolumeOps`].

use ember_common::{ErrorKind, ServiceError};
use ember_engine::{EngineError, Failure};

/// Errors of the flows crate outside of task failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The engine or its store failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A dependency a role needs was not given (e.g. a scheduler for the scheduler role).
    #[error("missing dependency: {0}")]
    MissingDependency(&'static str),
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The prefix of failure kinds that carry a [`ServiceError`] kind.
const SERVICE_PREFIX: &str = "service.";
/// The failure kind of a driver error worth a reschedule.
pub(crate) const RESCHEDULABLE: &str = "driver.reschedulable";
/// The failure kind of a driver error no other backend would fix.
pub(crate) const DRIVER_FATAL: &str = "driver.fatal";

/// A task failure that the API shows as `kind` with `message`.
pub(crate) fn fail(kind: ErrorKind, message: impl Into<String>) -> Failure {
    let kind =
        serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    Failure::new(format!("{SERVICE_PREFIX}{kind}"), message)
}

/// A domain error as a task failure, keeping its client-facing kind.
pub(crate) fn domain(err: ember_common::Error) -> Failure {
    let se = ServiceError::from(&err);
    if se.kind == ErrorKind::Unavailable {
        tracing::warn!(error = %err, "database unavailable in a flow");
    }
    if se.kind == ErrorKind::Internal {
        // The details stay in the flow's record and the log, not in the client's answer.
        tracing::warn!(error = %err, "storage failure in a flow");
        return Failure::new(format!("{SERVICE_PREFIX}internal"), err.to_string());
    }
    fail(se.kind, se.message)
}

/// A driver error as a task failure that says whether a reschedule could help.
pub(crate) fn driver(err: &ember_drivers::DriverError) -> Failure {
    let kind = if err.is_reschedulable() { RESCHEDULABLE } else { DRIVER_FATAL };
    Failure::new(kind, err.to_string())
}

/// The client-facing error of a failure (internal when it carries no kind).
pub fn service_error(failure: &Failure) -> ServiceError {
    let kind = failure
        .kind
        .strip_prefix(SERVICE_PREFIX)
        .and_then(|k| serde_json::from_value::<ErrorKind>(serde_json::Value::String(k.to_owned())).ok());
    match kind {
        Some(ErrorKind::Internal) | None => {
            tracing::warn!(failure = %failure, "a flow failed");
            ServiceError::new(ErrorKind::Internal, "the request could not be completed")
        }
        Some(kind) => ServiceError::new(kind, failure.message.clone()),
    }
}

/// The client-facing error of a flow run that did not succeed.
pub fn engine_service_error(err: &EngineError) -> ServiceError {
    match err {
        EngineError::Failed(f) => service_error(&f.failure),
        EngineError::Unavailable(detail) => {
            tracing::warn!(%detail, "flow store unavailable");
            ServiceError::new(ErrorKind::Unavailable, ember_common::error::UNAVAILABLE_MESSAGE)
        }
        other => {
            tracing::warn!(error = %other, "running a flow failed");
            ServiceError::new(ErrorKind::Internal, "the request could not be completed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_a_failure() {
        let f = fail(ErrorKind::OverLimit, "too much");
        let back = service_error(&f);
        assert_eq!(back.kind, ErrorKind::OverLimit);
        assert_eq!(back.message, "too much");
        let internal = service_error(&Failure::new("Weird", "secret"));
        assert_eq!(internal.kind, ErrorKind::Internal);
        assert!(!internal.message.contains("secret"));
    }
}
