//! SQL storage for Ember, written once for SQLite and PostgreSQL.
//!
//! [`Db`] is a pool on either database; [`with_pool!`] runs the same sqlx code
//! on whichever one it holds, so every query is written once and compiled for both.

pub mod flow_store;
pub mod pool;
pub mod testing;

pub use pool::{Db, DbError, DbOptions, Result};
