//! The errors of the domain layer, and the small serializable error that crosses RPC.
//!
//! [`Error`] is what repositories and the quota engine return. [`ServiceError`] is its
//! wire form: a [`ErrorKind`], a message and the resource it is about; the API maps the
//! kind to Cinder's fault body (`badRequest`, `itemNotFound`, `overLimit`, ...).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::quota::QuotaUsage;

/// The domain layer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a resource is, for error messages and the `resource` field of [`ServiceError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Volume,
    VolumeType,
    Snapshot,
    Backup,
    Attachment,
    Quota,
    Reservation,
    Service,
}

impl ResourceKind {
    /// The resource's name in messages, as Cinder words it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Volume => "volume",
            ResourceKind::VolumeType => "volume type",
            ResourceKind::Snapshot => "snapshot",
            ResourceKind::Backup => "backup",
            ResourceKind::Attachment => "attachment",
            ResourceKind::Quota => "quota",
            ResourceKind::Reservation => "reservation",
            ResourceKind::Service => "service",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resource that a reservation would take over its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverQuotaResource {
    /// The resource name, e.g. `gigabytes` or `volumes___DEFAULT__`.
    pub resource: String,
    /// What was asked for.
    pub requested: i64,
    /// The limit, in use and reserved amounts when the request was refused.
    pub usage: QuotaUsage,
}

/// Errors of the domain layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The resource does not exist (or is deleted).
    #[error("{kind} {id} could not be found")]
    NotFound { kind: ResourceKind, id: String },
    /// A resource with this id or name exists already.
    #[error("{kind} {id} already exists")]
    Duplicate { kind: ResourceKind, id: String },
    /// A reservation would go over one or more quotas; every such resource is named.
    #[error("quota exceeded for resources: {}", over_list(.0))]
    OverQuota(Vec<OverQuotaResource>),
    /// The request is malformed or names something unknown.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The storage layer failed; the message is for logs, not for clients.
    #[error("storage error: {0}")]
    Storage(String),
    /// The database cannot be reached or written for now (down, restarting, out of space):
    /// a 503, and the same request may succeed later. The message is for logs.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// What a client is told when the database is out of reach or out of space.
pub const UNAVAILABLE_MESSAGE: &str =
    "The database is unavailable (unreachable or out of space); try again later.";

fn over_list(overs: &[OverQuotaResource]) -> String {
    let parts: Vec<String> = overs
        .iter()
        .map(|o| {
            format!(
                "{} (requested {}, limit {}, in use {}, reserved {})",
                o.resource, o.requested, o.usage.limit, o.usage.in_use, o.usage.reserved
            )
        })
        .collect();
    parts.join(", ")
}

impl Error {
    /// A [`Error::NotFound`] for `kind` and `id`.
    pub fn not_found(kind: ResourceKind, id: impl Into<String>) -> Self {
        Error::NotFound { kind, id: id.into() }
    }
}

/// The class of a [`ServiceError`], which decides the HTTP status and fault name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 400 `badRequest`.
    BadRequest,
    /// 403 `forbidden`.
    Forbidden,
    /// 404 `itemNotFound`.
    NotFound,
    /// 409 `conflictingRequest`.
    Conflict,
    /// 413 `overLimit` (quota).
    OverLimit,
    /// 503 `serviceUnavailable`.
    Unavailable,
    /// 500 `computeFault`; the details go to the log.
    Internal,
}

impl ErrorKind {
    /// The HTTP status code Cinder answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::OverLimit => 413,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// The key of Cinder's fault body, e.g. `itemNotFound`.
    pub fn fault_name(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "badRequest",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "itemNotFound",
            ErrorKind::Conflict => "conflictingRequest",
            ErrorKind::OverLimit => "overLimit",
            ErrorKind::Unavailable => "serviceUnavailable",
            ErrorKind::Internal => "computeFault",
        }
    }
}

/// The serializable error that crosses RPC and reaches the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    /// A message fit for the client (internal details are logged, not sent).
    pub message: String,
    /// The resource concerned, e.g. `volume 1b2c...`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

impl ServiceError {
    /// An error of `kind` with `message` and no resource.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), resource: None }
    }
}

impl From<&Error> for ServiceError {
    fn from(err: &Error) -> Self {
        match err {
            Error::NotFound { kind, id } => Self {
                kind: ErrorKind::NotFound,
                message: err.to_string(),
                resource: Some(format!("{kind} {id}")),
            },
            Error::Duplicate { kind, id } => Self {
                kind: ErrorKind::Conflict,
                message: err.to_string(),
                resource: Some(format!("{kind} {id}")),
            },
            Error::OverQuota(_) => Self::new(ErrorKind::OverLimit, err.to_string()),
            Error::Invalid(_) => Self::new(ErrorKind::BadRequest, err.to_string()),
            // Storage details stay in the log; the client learns only that it failed.
            Error::Storage(_) => Self::new(ErrorKind::Internal, "the request could not be completed"),
            Error::Unavailable(_) => Self::new(ErrorKind::Unavailable, UNAVAILABLE_MESSAGE),
        }
    }
}

impl From<Error> for ServiceError {
    fn from(err: Error) -> Self {
        Self::from(&err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_error_round_trips_through_json() {
        let err = ServiceError::from(Error::not_found(ResourceKind::Volume, "v1"));
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"not_found","message":"volume v1 could not be found","resource":"volume v1"}"#
        );
        assert_eq!(serde_json::from_str::<ServiceError>(&json).unwrap(), err);
        assert_eq!(err.kind.fault_name(), "itemNotFound");
        assert_eq!(err.kind.http_status(), 404);
    }

    #[test]
    fn storage_details_do_not_reach_the_client() {
        let err = ServiceError::from(Error::Storage("password=secret".into()));
        assert_eq!(err.kind, ErrorKind::Internal);
        assert!(!err.message.contains("secret"));
    }
}
