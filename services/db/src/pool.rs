//! The connection pool on SQLite or PostgreSQL, and the migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database url {0:?}: expected sqlite://... or postgres://...")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The storage layer's result.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// How to open the database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// `sqlite:///path/to/file.db`, `sqlite::memory:` or `postgres://user@host/db`.
    pub url: String,
    /// Upper bound of pooled connections (SQLite serialises writers anyway).
    pub max_connections: u32,
    /// SQLite only: `PRAGMA synchronous=FULL` makes every commit survive power loss;
    /// the default `NORMAL` (in WAL mode) survives a crash of the process, not of the
    /// machine, and commits several times faster.
    pub sqlite_synchronous_full: bool,
    /// How long a statement waits for a pooled connection (oslo.db's `pool_timeout`)
    /// before it fails as unavailable: with the database down, requests answer 503 after
    /// this rather than hang.
    pub pool_timeout: Duration,
}

impl DbOptions {
    /// Options for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            sqlite_synchronous_full: false,
            pool_timeout: Duration::from_secs(30),
        }
    }
}

/// A pool on one of the two supported databases.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`.
///
/// The body is compiled once per database, so one piece of sqlx code serves both:
/// write queries with `$N` placeholders (SQLite accepts them), `RETURNING` and
/// `ON CONFLICT`.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    };
}

impl Db {
    /// Opens a pool for `opts.url`. A SQLite file is created if missing and put in WAL mode.
    pub async fn connect(opts: &DbOptions) -> Result<Self> {
        let url = opts.url.as_str();
        if url.starts_with("sqlite:") {
            let sync = if opts.sqlite_synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            };
            let connect = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(sync)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true);
            // An in-memory database exists once per connection: keep exactly one.
            let max = if url.contains(":memory:") { 1 } else { opts.max_connections };
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(opts.pool_timeout)
                .connect_with(connect)
                .await?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let connect = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.pool_timeout)
                .connect_with(connect)
                .await?;
            Ok(Db::Postgres(pool))
        } else {
            Err(DbError::UnsupportedUrl(url.to_owned()))
        }
    }

    /// Applies every migration of this database's kind that is not applied yet.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Db::Sqlite(pool) => sqlx::migrate!("../../migrations/sqlite").run(pool).await?,
            Db::Postgres(pool) => sqlx::migrate!("../../migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}
