//! The error every driver returns, with kinds the volume manager can act on.

use std::path::PathBuf;

/// What went wrong in a driver call.
///
/// The manager decides from the kind: `NotFound` on delete is success, `NoSpace` and
/// `Backend` are worth a reschedule to another backend, `InvalidInput` is not, and `Busy`
/// means "try again later" (for example a snapshot whose dependents are in use).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The volume, snapshot or export does not exist on the backend.
    #[error("{resource} {id} not found on the backend")]
    NotFound { resource: &'static str, id: String },
    /// The resource exists and differs from what was asked, so it cannot be reused.
    #[error("{resource} {id} already exists on the backend: {detail}")]
    AlreadyExists { resource: &'static str, id: String, detail: String },
    /// The backend has no room for the request.
    #[error("not enough space on the backend: {0}")]
    NoSpace(String),
    /// The request itself is wrong (a bad id, a shrinking extend, a size too small).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The resource is in use (exported, locked by another process); retry later.
    #[error("resource busy: {0}")]
    Busy(String),
    /// A helper command did not finish within its deadline (`qemu_img_timeout`,
    /// `tgtadm_timeout`) and was killed; another backend may do better.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The driver does not implement this operation.
    #[error("not supported by this driver: {0}")]
    NotSupported(String),
    /// `do_setup` has not run or failed.
    #[error("driver not initialized: {0}")]
    NotInitialized(String),
    /// A file operation failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An external command (qemu-img, qemu-storage-daemon, tgtadm) failed.
    #[error("{program} {args} failed ({status}): {stderr}")]
    Command { program: &'static str, args: String, status: String, stderr: String },
    /// Anything else the backend reported, including injected failures of the fake driver.
    #[error("backend error: {0}")]
    Backend(String),
}

/// Results of driver calls.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;

impl DriverError {
    /// True when another backend could succeed where this one failed, as Cinder's
    /// `OnFailureRescheduleTask` decides (bad input and missing sources are not retried).
    pub fn is_reschedulable(&self) -> bool {
        !matches!(
            self,
            DriverError::NotFound { .. } | DriverError::InvalidInput(_) | DriverError::AlreadyExists { .. }
        )
    }

    /// A stable name of the kind, for the serializable errors that cross RPC.
    pub fn kind(&self) -> &'static str {
        match self {
            DriverError::NotFound { .. } => "not_found",
            DriverError::AlreadyExists { .. } => "already_exists",
            DriverError::NoSpace(_) => "no_space",
            DriverError::InvalidInput(_) => "invalid_input",
            DriverError::Busy(_) => "busy",
            DriverError::Timeout(_) => "timeout",
            DriverError::NotSupported(_) => "not_supported",
            DriverError::NotInitialized(_) => "not_initialized",
            DriverError::Io { .. } | DriverError::Command { .. } | DriverError::Backend(_) => "backend",
        }
    }

    /// A file operation's error; a full file system (ENOSPC, EDQUOT) is `NoSpace`.
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
            return DriverError::NoSpace(format!("{context} {}: {source}", path.display()));
        }
        DriverError::Io { context, path, source }
    }

    pub(crate) fn volume_not_found(id: &str) -> Self {
        DriverError::NotFound { resource: "volume", id: id.to_owned() }
    }

    pub(crate) fn snapshot_not_found(id: &str) -> Self {
        DriverError::NotFound { resource: "snapshot", id: id.to_owned() }
    }
}
