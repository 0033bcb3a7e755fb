//! The flow store's writer on a SQLite file: its own rusqlite connection, led by the
//! callers themselves (group commit without a hand-off).
//!
//! A caller queues its write and, when no other caller is committing, becomes the leader:
//! it takes everything queued (up to [`MAX_GROUP`] writes, its own among them) into one
//! `BEGIN IMMEDIATE` ... `COMMIT` on its own thread, answers every write in the group, and
//! goes on while more were queued meanwhile. Callers that find a leader at work wait for
//! its answer. A flow's step alone thus costs its commit and no thread wake-up, and flows
//! running together share commits. Every statement is prepared once per shape and cached;
//! a group of one statement runs without a transaction.
//!
//! The leader commits on the caller's (async runtime) thread only while a commit is cheap:
//! with `synchronous=NORMAL` (or OFF) a WAL commit writes the log without an fsync. With
//! `synchronous=FULL` every commit waits for the disk, so the group goes to a blocking
//! thread instead. The inline leader also gives up the SQLite write lock quickly when
//! another connection holds it (a task's own write, maybe held across an await on this
//! very thread) and hands the group to a blocking thread that waits as long as it takes.
//! After [`INLINE_ROUNDS`] groups in a row an inline leader hands the rest over too, so a
//! busy store does not hold one caller (and its runtime thread) forever.
//!
//! The connection uses the pool's `synchronous` setting, read at start, so durability is
//! the pool's: a write is answered only after its commit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ember_engine::store::now_ms;
use ember_engine::{EngineError, Fence, Ownership};
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, ToSql, TransactionBehavior};
use sqlx::SqlitePool;
use tokio::sync::oneshot;

use super::{
    CREATE, EResult, Job, MAX_GROUP, Queued, WriteJob, flow_update_sql, outcome, statements, store_err,
    updates_flow, upsert_sql,
};

/// How many groups an inline leader commits before it hands the queue to a blocking thread.
const INLINE_ROUNDS: usize = 4;

/// Whether the pool is on a file (an in-memory database has no file another connection
/// could open).
pub(super) fn on_file(pool: &SqlitePool) -> bool {
    let opts = pool.connect_options();
    !opts.get_filename().to_string_lossy().starts_with("file:")
}

/// The queue and whether a leader is at work on it.
#[derive(Default)]
struct State {
    queue: Vec<Queued>,
    leading: bool,
}

/// The writer: its queue and its connection (opened by the first leader).
pub(super) struct Writer {
    state: Mutex<State>,
    conn: Mutex<Option<Open>>,
    path: PathBuf,
    synchronous: i64,
}

/// The open connection and its statements' text.
struct Open {
    conn: Connection,
    sql: Sql,
    patient: bool,
}

impl Writer {
    /// Reads the pool's `synchronous` setting; the connection is opened at the first write.
    pub(super) async fn start(pool: &SqlitePool) -> EResult<Arc<Writer>> {
        let synchronous: i64 =
            sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.map_err(store_err)?;
        let path = pool.connect_options().get_filename().to_owned();
        Ok(Arc::new(Writer { state: Mutex::default(), conn: Mutex::new(None), path, synchronous }))
    }

    /// Queues `job`; the answer comes once its group has committed.
    pub(super) fn submit(self: &Arc<Self>, job: Job) -> oneshot::Receiver<EResult<bool>> {
        let (reply, rx) = oneshot::channel();
        let lead = {
            let mut s = self.state.lock();
            s.queue.push(Queued { job, reply });
            !std::mem::replace(&mut s.leading, true)
        };
        if lead {
            // NORMAL (1) and OFF (0) commit without an fsync: cheap enough to do here.
            let inline = self.synchronous < 2 && tokio::runtime::Handle::try_current().is_ok();
            if !inline || self.lead(false) == Led::HandOver {
                self.hand_over();
            }
        }
        rx
    }

    /// Leads on a blocking thread until the queue is empty.
    fn hand_over(self: &Arc<Self>) {
        let writer = self.clone();
        let lead = move || {
            writer.lead(true);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(lead)),
            // No runtime (never the case for an async caller): a thread of its own.
            Err(_) => {
                if let Err(e) = std::thread::Builder::new().name("ember-flow-writer".into()).spawn(lead) {
                    self.fail_all(&store_err(e));
                }
            }
        }
    }

    /// Answers every queued write with `err` and ends the lead.
    fn fail_all(&self, err: &EngineError) {
        let mut s = self.state.lock();
        for q in s.queue.drain(..) {
            let _ = q.reply.send(Err(err.clone()));
        }
        s.leading = false;
    }

    /// Commits queued groups until the queue is empty (then the lead ends) or, when not
    /// `patient`, until the inline rounds are used up or SQLite's write lock is held
    /// elsewhere (then the lead is to be handed over, with the queue as it is).
    fn lead(&self, patient: bool) -> Led {
        let mut guard = self.conn.lock();
        let mut round = 0;
        loop {
            round += 1;
            let group = {
                let mut s = self.state.lock();
                if s.queue.is_empty() {
                    s.leading = false;
                    return Led::Done;
                }
                if !patient && round > INLINE_ROUNDS {
                    return Led::HandOver;
                }
                let n = s.queue.len().min(MAX_GROUP);
                s.queue.drain(..n).collect::<Vec<_>>()
            };
            let open = match guard.as_mut() {
                Some(open) => open,
                None => match open(&self.path, self.synchronous) {
                    Ok(open) => guard.insert(open),
                    Err(e) => {
                        let msg = format!("the flow store writer cannot open {}: {e}", self.path.display());
                        tracing::error!("{msg}");
                        reply_all(group, &EngineError::Store(msg));
                        continue;
                    }
                },
            };
            if let Err(e) = open.set_patient(patient) {
                reply_all(group, &store_err(e));
                *guard = None;
                continue;
            }
            match commit(&open.conn, &mut open.sql, &group, now_ms()) {
                Ok(results) => {
                    for (q, r) in group.into_iter().zip(results) {
                        let _ = q.reply.send(r);
                    }
                }
                // Nothing of the group was written: it goes back to the head of the queue
                // for a patient leader.
                Err(e) if !patient && is_busy(&e) => {
                    let mut s = self.state.lock();
                    let rest = std::mem::take(&mut s.queue);
                    s.queue = group;
                    s.queue.extend(rest);
                    return Led::HandOver;
                }
                Err(e) => reply_all(group, &store_err(e)),
            }
        }
    }
}

/// How a lead ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Led {
    /// The queue is empty and the lead is over.
    Done,
    /// The queue is to be led on a blocking thread.
    HandOver,
}

fn reply_all(group: Vec<Queued>, err: &EngineError) {
    for q in group {
        let _ = q.reply.send(Err(err.clone()));
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(err, _) if err.code == rusqlite::ErrorCode::DatabaseBusy)
}

/// A patient leader waits for the write lock: short waits first, then 1 ms ones, for
/// 30 s in all.
const BUSY_SHORT: i32 = 100;
const BUSY_RETRIES: i32 = BUSY_SHORT + 30_000;
/// An inline leader waits this many short waits at most before it hands over.
const BUSY_INLINE: i32 = 10;

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

/// The inline leader's handler: a few short waits, then SQLITE_BUSY (and a hand-over).
fn busy_inline(retries: i32) -> bool {
    if retries >= BUSY_INLINE {
        return false;
    }
    std::thread::sleep(Duration::from_micros(20));
    true
}

impl Open {
    fn set_patient(&mut self, patient: bool) -> rusqlite::Result<()> {
        if self.patient != patient {
            self.conn.busy_handler(Some(if patient { busy } else { busy_inline }))?;
            self.patient = patient;
        }
        Ok(())
    }
}

fn open(path: &PathBuf, synchronous: i64) -> rusqlite::Result<Open> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_handler(Some(busy))?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(Open { conn, sql: Sql::new(), patient: true })
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
