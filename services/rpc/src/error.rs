//! The crate's error type and the serializable error that travels back to callers.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What can go wrong when sending or serving RPC messages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No reply came back in time: the server is down, busy or the message was lost.
    #[error("timed out after {after:?} waiting for a reply to {method} on {routing_key}")]
    Timeout { method: String, routing_key: String, after: Duration },
    /// The server ran the method and it failed; the server's error is carried unchanged.
    #[error("remote error: {0}")]
    Remote(RemoteError),
    /// The broker refused a message or could not be reached within the publish deadline.
    #[error("message broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a request (an AMQP channel error: a missing exchange, a queue
    /// declared with other arguments, no permission); retrying would not help.
    #[error("refused by the message broker: {0}")]
    Refused(String),
    /// Talking to the broker failed (connection refused or lost, protocol error).
    #[error("AMQP error: {0}")]
    Amqp(String),
    /// A message could not be encoded or decoded as JSON.
    #[error("invalid message: {0}")]
    Codec(#[from] serde_json::Error),
    /// The transport has been shut down.
    #[error("transport is closed")]
    Closed,
    /// The services table could not be read or written (registration, heartbeats).
    #[error("service registry: {0}")]
    Registry(ember_common::Error),
}

/// The result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure returned to a caller: small and serializable so that it crosses process boundaries.
///
/// `kind` names the failure class (Cinder's exception class name, e.g. `VolumeNotFound`), so the
/// API can map it to a fault body; `message` is meant for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    pub kind: String,
    pub message: String,
}

impl RemoteError {
    /// The kind used when a server does not know the method it was asked to run.
    pub const UNKNOWN_METHOD: &'static str = "UnknownMethod";
    /// The kind used when the message's version is newer than the server's.
    pub const UNSUPPORTED_VERSION: &'static str = "UnsupportedVersion";
    /// The kind used when the arguments do not match what the method expects.
    pub const INVALID_ARGUMENTS: &'static str = "InvalidArguments";
    /// The kind used when a handler failed unexpectedly (it panicked).
    pub const INTERNAL: &'static str = "InternalError";

    /// Builds an error of the given kind.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: kind.into(), message: message.into() }
    }

    /// The error a dispatcher returns for a method it does not serve.
    pub fn unknown_method(method: &str) -> Self {
        Self::new(Self::UNKNOWN_METHOD, format!("unknown method {method:?}"))
    }

    /// The error for arguments that do not deserialize into what the method expects.
    pub fn invalid_arguments(method: &str, err: &serde_json::Error) -> Self {
        Self::new(Self::INVALID_ARGUMENTS, format!("invalid arguments for {method}: {err}"))
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for RemoteError {}
