//! The flows the backup service runs (Cinder's `cinder/backup/manager.py`): create, restore
//! and delete of the backups handed to this host (topic `backup.<host>`), with the helpers
//! they share.

use std::sync::Arc;

use ember_drivers::backup::BackupDriver;
use ember_engine::Failure;

use crate::deps::{BackupStore, Deps};
use crate::error::DRIVER_FATAL;

pub mod create_backup;
pub mod delete_backup;
pub mod restore_backup;

/// The backup store of this process, or a failure naming the missing role.
pub(crate) fn store(deps: &Deps) -> Result<Arc<dyn BackupStore>, Failure> {
    deps.backup_store
        .clone()
        .ok_or_else(|| Failure::new(DRIVER_FATAL, "this process runs no backup service".to_owned()))
}

/// The backup driver of this process.
pub(crate) fn backup_driver(deps: &Deps) -> Result<Arc<dyn BackupDriver>, Failure> {
    Ok(store(deps)?.driver())
}

/// Whether the volume service of `backend` (`host@backend`) must serve the image over NBD
/// to this backup service.
pub(crate) fn via_nbd(deps: &Deps, backend: &str) -> Result<bool, Failure> {
    let host = backend.split('@').next().unwrap_or(backend);
    Ok(store(deps)?.via_nbd(host))
}

/// A backup driver error as a task failure.
pub(crate) fn store_failure(err: &ember_drivers::DriverError) -> Failure {
    Failure::new(DRIVER_FATAL, err.to_string())
}
