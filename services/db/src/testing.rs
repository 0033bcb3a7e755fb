//! Throw-away databases for tests: a SQLite file in a temporary directory, and a fresh
//! PostgreSQL database under `EMBER_TEST_DATABASE_URL` when that variable is set.

use std::path::PathBuf;

use sqlx::{Connection, Executor, PgConnection};

use crate::{Db, DbOptions, Result};

/// The environment variable that names the PostgreSQL server tests may use.
pub const DATABASE_URL_ENV: &str = "EMBER_TEST_DATABASE_URL";

/// A migrated database that is removed when [`TestDb::cleanup`] runs.
pub struct TestDb {
    pub db: Db,
    /// The url the pool was opened with (another process may open it too).
    pub url: String,
    dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A migrated SQLite database in a file of its own.
    pub async fn sqlite() -> Result<Self> {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path: PathBuf = dir.path().join("ember.db");
        let url = format!("sqlite://{}", path.display());
        let db = Db::connect(&DbOptions::new(&url)).await?;
        db.migrate().await?;
        Ok(Self { db, url, dir: Some(dir), pg: None })
    }

    /// A migrated PostgreSQL database of its own, or `None` (after saying why on stderr)
    /// when `EMBER_TEST_DATABASE_URL` is not set.
    pub async fn postgres() -> Result<Option<Self>> {
        let Ok(base) = std::env::var(DATABASE_URL_ENV) else {
            eprintln!("skipped: {DATABASE_URL_ENV} is not set, so the PostgreSQL variant is not run");
            return Ok(None);
        };
        let name = format!("ember_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&base).await?;
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        admin.close().await?;
        let url = replace_database(&base, &name);
        let db = Db::connect(&DbOptions::new(&url)).await?;
        db.migrate().await?;
        Ok(Some(Self { db, url, dir: None, pg: Some((base, name)) }))
    }

    /// The SQLite database, then the PostgreSQL one where configured.
    pub async fn all() -> Result<Vec<Self>> {
        let mut dbs = vec![Self::sqlite().await?];
        dbs.extend(Self::postgres().await?);
        Ok(dbs)
    }

    /// Closes the pool and drops the database.
    pub async fn cleanup(self) -> Result<()> {
        self.db.close().await;
        if let Some((base, name)) = self.pg {
            let mut admin = PgConnection::connect(&base).await?;
            admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await?;
            admin.close().await?;
        }
        drop(self.dir);
        Ok(())
    }
}

/// `postgres://u@h:5432/test?x=y` with its database replaced by `name`.
pub fn replace_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let path_start = head[scheme_end..].find('/').map(|i| scheme_end + i);
    let mut url = match path_start {
        Some(i) => format!("{}/{name}", &head[..i]),
        None => format!("{head}/{name}"),
    };
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            replace_database("postgres://root@127.0.0.1:5432/test", "x"),
            "postgres://root@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database("postgres://root@h/test?sslmode=disable", "x"),
            "postgres://root@h/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://root@h", "x"), "postgres://root@h/x");
    }
}
