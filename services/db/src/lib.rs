//! SQL storage for Ember, written once for SQLite and PostgreSQL.
//!
//! [`Db`] is a pool on either database; [`with_pool!`] runs the same sqlx code
//! on whichever one it holds, so every query is written once and compiled for both.
//! [`SqlRepo`] implements the repository traits of `ember_common::repo` and the quota
//! engine on a [`Db`].

mod attachments;
mod backups;
pub mod flow_store;
mod metadata;
pub mod pool;
pub mod purge;
mod quota_sync;
mod quotas;
mod services;
mod snapshots;
mod sql;
pub mod testing;
mod volume_types;
mod volumes;

pub use pool::{Db, DbError, DbOptions, Result};

use ember_common::model::QuotaDefaults;

/// The SQL implementation of every repository trait and of the quota engine.
#[derive(Debug, Clone)]
pub struct SqlRepo {
    db: Db,
    quota_defaults: QuotaDefaults,
}

impl SqlRepo {
    /// Repositories on `db`, with `quota_defaults` where no quota class or project sets a limit.
    pub fn new(db: Db, quota_defaults: QuotaDefaults) -> Self {
        Self { db, quota_defaults }
    }

    /// The pool underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }
}
