//! The flow store's writer on a SQLite file: a thread of its own with its own connection.
//!
//! A step of a flow is a hand-off to this thread and one commit. Going through the pool
//! would add the writer task's hop and sqlx's command channel to every step, and prepare
//! nothing once; here every statement is prepared once per shape and cached, and the
//! thread blocks on its queue, never on the async runtime. It takes everything queued at
//! once (up to [`MAX_GROUP`] writes) into one `BEGIN IMMEDIATE` ... `COMMIT`, so flows
//! running together share commits; a group of one statement runs without a transaction.
//! The connection uses the pool's `synchronous` setting, read at start, so durability is
//! the pool's: a returned write is in the WAL before the caller goes on.

use std::path::PathBuf;
use std::time::Duration;

use ember_engine::store::now_ms;
use ember_engine::{EngineError, Fence, Ownership};
use rusqlite::{Connection, OpenFlags, ToSql, TransactionBehavior};
use sqlx::SqlitePool;

use super::{
    CREATE, EResult, MAX_GROUP, Queued, WriteJob, flow_update_sql, outcome, statements, store_err,
    updates_flow, upsert_sql,
};

/// How many queued writes the channel holds before callers wait.
const QUEUE: usize = 4096;

/// Whether the pool is on a file (an in-memory database has no file another connection
/// could open).
pub(super) fn on_file(pool: &SqlitePool) -> bool {
    let opts = pool.connect_options();
    !opts.get_filename().to_string_lossy().starts_with("file:")
}

/// Reads the pool's `synchronous` setting and starts the writer thread.
pub(super) async fn start(pool: &SqlitePool) -> EResult<flume::Sender<Queued>> {
    let synchronous: i64 =
        sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.map_err(store_err)?;
    let path = pool.connect_options().get_filename().to_owned();
    let (tx, rx) = flume::bounded(QUEUE);
    std::thread::Builder::new()
        .name("ember-flow-writer".into())
        .spawn(move || run(&path, synchronous, &rx))
        .map_err(store_err)?;
    Ok(tx)
}

/// Short waits first, then 1 ms ones, for 30 s in all.
const BUSY_SHORT: i32 = 100;
const BUSY_RETRIES: i32 = BUSY_SHORT + 30_000;

/// While another connection of the process (a task's own write) holds SQLite's write lock,
/// for a statement or two: try again after 20 µs, where SQLite's default handler would
/// sleep a whole millisecond first, which is many steps of every flow here.
fn busy(retries: i32) -> bool {
    if retries >= BUSY_RETRIES {
        return false;
    }
    let wait = if retries < BUSY_SHORT { Duration::from_micros(20) } else { Duration::from_millis(1) };
    std::thread::sleep(wait);
    true
}

fn open(path: &PathBuf, synchronous: i64) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_handler(Some(busy))?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Answers every queued write until the last sender is gone.
fn run(path: &PathBuf, synchronous: i64, rx: &flume::Receiver<Queued>) {
    let conn = match open(path, synchronous) {
        Ok(conn) => conn,
        Err(e) => {
            let msg = format!("the flow store writer cannot open {}: {e}", path.display());
            tracing::error!("{msg}");
            for q in rx.iter() {
                let _ = q.reply.send(Err(EngineError::Store(msg.clone())));
            }
            return;
        }
    };
    let mut sql = Sql::new();
    let mut group: Vec<Queued> = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = rx.recv() {
        group.push(first);
        group.extend(rx.try_iter().take(MAX_GROUP - 1));
        match commit(&conn, &mut sql, &group, now_ms()) {
            Ok(results) => {
                for (q, r) in group.drain(..).zip(results) {
                    let _ = q.reply.send(r);
                }
            }
            Err(e) => {
                let err = store_err(e);
                for q in group.drain(..) {
                    let _ = q.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// The statements' text in SQLite's numbered form (`?N` binds the N-th value, where a
/// named `$N` would be numbered by first appearance), built once: the upserts by atom
/// count.
struct Sql {
    create: String,
    updates: [String; 3],
    upserts: Vec<Option<String>>,
}

fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}

impl Sql {
    fn new() -> Self {
        let update = |o| numbered(flow_update_sql(o));
        Self {
            create: numbered(CREATE),
            updates: [update(Ownership::Keep), update(Ownership::Finish), update(Ownership::Release)],
            upserts: Vec::new(),
        }
    }

    fn update(&self, o: Ownership) -> &str {
        let i = match o {
            Ownership::Keep => 0,
            Ownership::Finish => 1,
            Ownership::Release => 2,
        };
        &self.updates[i]
    }

    fn upsert(&mut self, n: usize) -> &str {
        if self.upserts.len() <= n {
            self.upserts.resize(n + 1, None);
        }
        self.upserts[n].get_or_insert_with(|| numbered(&upsert_sql(n)))
    }
}

fn commit(
    conn: &Connection,
    sql: &mut Sql,
    group: &[Queued],
    now: i64,
) -> rusqlite::Result<Vec<EResult<bool>>> {
    if statements(group) <= 1 {
        return apply(conn, sql, group, now);
    }
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let results = apply(&tx, sql, group, now)?;
    tx.commit()?;
    Ok(results)
}

fn apply(
    conn: &Connection,
    sql: &mut Sql,
    group: &[Queued],
    now: i64,
) -> rusqlite::Result<Vec<EResult<bool>>> {
    let mut results = Vec::with_capacity(group.len());
    for q in group {
        let mut created = true;
        if let Some(f) = &q.job.create {
            let mut stmt = conn.prepare_cached(&sql.create)?;
            let values: [&dyn ToSql; 10] = [
                &f.id,
                &f.name,
                &f.inputs,
                &f.state,
                &f.owner,
                &f.lease_expires_at,
                &f.claim_epoch,
                &f.topic,
                &f.subject,
                &f.created_at,
            ];
            created = stmt.execute(values.as_slice())? == 1;
        }
        let held = match q.job.write.as_ref().filter(|_| created) {
            Some(w) => write(conn, sql, w, now)?,
            None => true,
        };
        results.push(outcome(&q.job, created, held));
    }
    Ok(results)
}

/// A fenced write; false when the fence no longer holds.
fn write(conn: &Connection, sql: &mut Sql, w: &WriteJob, now: i64) -> rusqlite::Result<bool> {
    // The atoms first: a release clears the owner the atoms' fence checks.
    let mut held = true;
    if !w.atoms.is_empty() {
        let mut stmt = conn.prepare_cached(sql.upsert(w.atoms.len()))?;
        bind_fence(&mut stmt, &w.fence, now)?;
        for (i, a) in w.atoms.iter().enumerate() {
            let values: [&dyn ToSql; 9] = [
                &a.name,
                &a.kind,
                &a.state,
                &a.intention,
                &a.result,
                &a.failure,
                &a.revert_failure,
                &a.history,
                &a.attempts,
            ];
            for (k, v) in values.into_iter().enumerate() {
                stmt.raw_bind_parameter(5 + i * 9 + k, v)?;
            }
        }
        held = stmt.raw_execute()? > 0;
    }
    if held && updates_flow(w.state, w.ownership) {
        let mut stmt = conn.prepare_cached(sql.update(w.ownership))?;
        let values: [&dyn ToSql; 5] = [&now, &w.state, &&*w.fence.flow_id, &&*w.fence.owner, &w.fence.epoch];
        held = stmt.execute(values.as_slice())? == 1;
    }
    Ok(held)
}

/// Binds the upsert's first four values: flow id, now, owner, epoch.
fn bind_fence(stmt: &mut rusqlite::CachedStatement<'_>, fence: &Fence, now: i64) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(1, &*fence.flow_id)?;
    stmt.raw_bind_parameter(2, now)?;
    stmt.raw_bind_parameter(3, &*fence.owner)?;
    stmt.raw_bind_parameter(4, fence.epoch)
}
