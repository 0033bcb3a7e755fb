//! Building blocks shared by the repositories: a statement builder with `$N` placeholders,
//! the binding of its arguments, transactions that take the write lock first, keyset
//! pagination, the few dialect differences, and conversions at the storage boundary.

use chrono::{DateTime, Utc};

use ember_common::model::{ListOptions, SortDir, SortKey};
use ember_common::{Error, Result};

use crate::Db;

/// One bound value. Every column Ember stores is text, a 64-bit integer or a boolean.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(Some(v))
    }
}
impl From<Option<bool>> for Arg {
    fn from(v: Option<bool>) -> Self {
        Arg::Bool(v)
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Int(Some(ms(v)))
    }
}
impl From<Option<DateTime<Utc>>> for Arg {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Arg::Int(v.map(ms))
    }
}

/// A statement under construction: SQL text with `$N` placeholders and their values.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self { text: text.to_owned(), args: Vec::new() }
    }

    /// Appends SQL text.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `arg`.
    pub fn arg(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into());
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// Appends `(a, b, c)` placeholders for a non-empty list.
    pub fn list<A: Into<Arg>>(&mut self, items: impl IntoIterator<Item = A>) -> &mut Self {
        self.push("(");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.arg(item);
        }
        self.push(")")
    }

    /// Appends ` AND column IN (..)`, accepting NULL for a `None` item.
    pub fn and_in_nullable(&mut self, column: &str, items: &[Option<String>]) -> &mut Self {
        let values: Vec<String> = items.iter().flatten().cloned().collect();
        let with_null = items.iter().any(Option::is_none);
        self.push(" AND (");
        if !values.is_empty() {
            self.push(column).push(" IN ").list(values);
        } else {
            self.push("FALSE");
        }
        if with_null {
            self.push(" OR ").push(column).push(" IS NULL");
        }
        self.push(")")
    }
}

/// The list of `column = $n` assignments of an UPDATE.
#[derive(Debug, Default)]
pub(crate) struct Sets(pub Vec<(&'static str, Arg)>);

impl Sets {
    /// Adds `column = value` when `value` is given.
    pub fn opt<T: Into<Arg>>(&mut self, column: &'static str, value: Option<T>) {
        if let Some(v) = value {
            self.0.push((column, v.into()));
        }
    }

    /// Writes `SET a = $1, b = $2` into `sql`, after any assignments already there.
    pub fn write(self, sql: &mut Sql, first: bool) {
        for (i, (column, value)) in self.0.into_iter().enumerate() {
            if i > 0 || !first {
                sql.push(", ");
            }
            sql.push(column).push(" = ").arg(value);
        }
    }
}

/// Binds every argument of a [`Sql`] to a sqlx query (`query`, `query_as`, `query_scalar`).
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for a in $args {
            q = match a {
                $crate::sql::Arg::Text(v) => q.bind(v.as_deref()),
                $crate::sql::Arg::Int(v) => q.bind(*v),
                $crate::sql::Arg::Bool(v) => q.bind(*v),
            };
        }
        q
    }};
}
pub(crate) use bind_args;

/// Runs `$body` in a transaction on `$tx`, committing when it returns `Ok`.
///
/// On SQLite the transaction starts with `BEGIN IMMEDIATE`: it takes the write lock at
/// once, so two writers queue on the busy timeout instead of one failing with SQLITE_BUSY
/// when a deferred transaction tries to upgrade its read lock. The body is compiled once
/// per database, as with [`crate::with_pool!`].
macro_rules! with_tx {
    ($db:expr, |$tx:ident| $body:expr) => {
        match $db {
            $crate::Db::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err($crate::sql::db_err)?;
                let out = $body;
                if out.is_ok() {
                    $tx.commit().await.map_err($crate::sql::db_err)?;
                }
                out
            }
            $crate::Db::Postgres(pool) => {
                let mut $tx = pool.begin().await.map_err($crate::sql::db_err)?;
                let out = $body;
                if out.is_ok() {
                    $tx.commit().await.map_err($crate::sql::db_err)?;
                }
                out
            }
        }
    };
}
pub(crate) use with_tx;

/// The places where SQLite and PostgreSQL need different SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn of(db: &Db) -> Self {
        match db {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Row locks for a read-then-update inside a transaction. SQLite has none (and needs
    /// none: `BEGIN IMMEDIATE` already holds the database's only write lock).
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

/// Maps a sqlx error into the domain's error; unique violations become `Duplicate` at the
/// call sites that know what was duplicated, and a database that cannot be reached or
/// written for now is `Unavailable` (a 503 for clients).
pub(crate) fn db_err(err: sqlx::Error) -> Error {
    if is_unavailable(&err) { Error::Unavailable(err.to_string()) } else { Error::Storage(err.to_string()) }
}

/// Whether `err` says the database is out of reach or out of space for now, rather than
/// that this statement is wrong: no connection within the pool's timeout, a connection
/// lost, a server shutting down or starting, a full disk (SQLite's `SQLITE_FULL` and I/O
/// errors, PostgreSQL's class 53 and 57P0x, 08xxx).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| unavailable_code(&code)),
        _ => false,
    }
}

/// A database error code (SQLite's extended result code as a number, PostgreSQL's
/// SQLSTATE) that means "not now" rather than "never".
pub(crate) fn unavailable_code(code: &str) -> bool {
    if let Ok(n) = code.parse::<i32>() {
        // SQLITE_FULL (13), SQLITE_IOERR (10) and its extended codes, SQLITE_CANTOPEN (14).
        return matches!(n & 0xff, 10 | 13 | 14);
    }
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
}

/// Whether `err` is a unique or primary key violation.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// Milliseconds since the Unix epoch, the stored form of every timestamp.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The timestamp of stored milliseconds.
pub(crate) fn dt(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| Error::Storage(format!("timestamp {ms} out of range")))
}

/// [`dt`] for a nullable column.
pub(crate) fn opt_dt(ms: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    ms.map(dt).transpose()
}

/// Parses a stored enum string.
pub(crate) fn parse<T: std::str::FromStr>(value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| Error::Storage(format!("stored value: {e}")))
}

/// A sortable column: the SQL expression (NULL-free, so both databases order it alike) and
/// the marker row's value of it.
pub(crate) struct SortColumn {
    pub expr: &'static str,
    pub marker_value: Option<Arg>,
    pub dir: SortDir,
}

/// Maps sort keys to columns for one resource; `None` means the resource lacks the key.
pub(crate) type SortMap<'a, T> = &'a dyn Fn(SortKey, Option<&T>) -> Option<(&'static str, Option<Arg>)>;

/// Appends the keyset condition after `marker`, `ORDER BY` and `LIMIT` for `opts`.
///
/// The id is always the last key, so the order is total and a marker is a precise point.
pub(crate) fn paginate<T>(
    sql: &mut Sql,
    opts: &ListOptions,
    marker: Option<&T>,
    map: SortMap<'_, T>,
    marker_id: Option<&str>,
) -> Result<()> {
    let mut keys: Vec<(SortKey, SortDir)> = opts.sort.clone();
    if keys.is_empty() {
        keys.push((SortKey::CreatedAt, SortDir::Desc));
    }
    let last_dir = keys.last().map_or(SortDir::Desc, |k| k.1);
    let mut columns = Vec::with_capacity(keys.len() + 1);
    for (key, dir) in keys.iter().filter(|(k, _)| *k != SortKey::Id) {
        let (expr, marker_value) =
            map(*key, marker).ok_or_else(|| Error::Invalid(format!("cannot sort by {key:?}")))?;
        columns.push(SortColumn { expr, marker_value, dir: *dir });
    }
    let id_dir = keys.iter().find(|(k, _)| *k == SortKey::Id).map_or(last_dir, |k| k.1);
    columns.push(SortColumn { expr: "id", marker_value: marker_id.map(Arg::from), dir: id_dir });
    if marker.is_some() {
        keyset_condition(sql, &columns);
    }
    sql.push(" ORDER BY ");
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push(c.expr).push(if c.dir == SortDir::Asc { " ASC" } else { " DESC" });
    }
    // SQLite accepts OFFSET only after a LIMIT, so an offset without a limit gets the
    // largest one (PostgreSQL would refuse SQLite's `LIMIT -1`).
    match (opts.limit, opts.offset) {
        (Some(limit), _) => {
            sql.push(" LIMIT ").arg(i64::from(limit));
        }
        (None, Some(_)) => {
            sql.push(" LIMIT ").arg(i64::MAX);
        }
        (None, None) => {}
    }
    if let Some(offset) = opts.offset {
        sql.push(" OFFSET ").arg(i64::from(offset));
    }
    Ok(())
}

/// ` AND ((k1 > v1) OR (k1 = v1 AND k2 > v2) OR ...)`, with `<` for descending keys.
fn keyset_condition(sql: &mut Sql, columns: &[SortColumn]) {
    sql.push(" AND (");
    for i in 0..columns.len() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        for c in &columns[..i] {
            sql.push(c.expr).push(" = ").arg(c.marker_value.clone().unwrap_or(Arg::Text(None)));
            sql.push(" AND ");
        }
        let c = &columns[i];
        let op = if c.dir == SortDir::Asc { " > " } else { " < " };
        sql.push(c.expr).push(op).arg(c.marker_value.clone().unwrap_or(Arg::Text(None)));
        sql.push(")");
    }
    sql.push(")");
}

/// A compare-and-swap update of one live row of `table`, returning its new row: writes
/// `sets` (and `updated_at`) iff the row's `status_column` is one of `expected` (any value
/// when `expected` is empty). The statement returns no row when the update lost.
pub(crate) fn cas_sql(
    table: &str,
    status_column: &str,
    id: &str,
    expected: &[&str],
    sets: Sets,
    returning: &str,
) -> Sql {
    let mut sql = Sql::new(&format!("UPDATE {table} SET updated_at = "));
    sql.arg(Utc::now());
    sets.write(&mut sql, false);
    sql.push(" WHERE deleted = FALSE AND id = ").arg(id);
    if !expected.is_empty() {
        sql.push(" AND ").push(status_column).push(" IN ").list(expected.iter().copied());
    }
    sql.push(" RETURNING ").push(returning);
    sql
}

/// Runs a statement and returns the number of rows it changed.
pub(crate) async fn execute(db: &Db, sql: &Sql) -> Result<u64> {
    crate::with_pool!(db, |pool| bind_args!(sqlx::query(&sql.text), &sql.args)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
    .map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut sql = Sql::new("SELECT * FROM t WHERE a = ");
        sql.arg("x").push(" AND b IN ").list([1i64, 2]);
        assert_eq!(sql.text, "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)");
        assert_eq!(sql.args.len(), 3);
    }

    #[test]
    fn nullable_in_accepts_null() {
        let mut sql = Sql::new("x");
        sql.and_in_nullable("m", &[None, Some("error".into())]);
        assert_eq!(sql.text, "x AND (m IN ($1) OR m IS NULL)");
    }
}
