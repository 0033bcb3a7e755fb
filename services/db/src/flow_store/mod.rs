//! The flow engine's SQL store on SQLite and PostgreSQL, written once with [`with_pool!`].
//!
//! Writes go through one writer that group-commits: it takes every write waiting in its
//! queue (from all the flows running in this process), applies them in one transaction
//! and answers each caller only after the commit. A step of a flow is thus durable when
//! its `write` returns, while concurrent flows share commits. On a SQLite file the writer
//! is led by the callers themselves on a connection of its own with statements prepared
//! once ([`sqlite`]): the first caller to find nobody committing commits the queue on its
//! own thread, so a step alone costs its commit and no thread hand-off. On PostgreSQL
//! (and an in-memory SQLite) it is a task on a pooled connection.
//!
//! Durability follows the database settings ([`crate::DbOptions`]): SQLite in WAL mode
//! with `synchronous=NORMAL` (the default) survives a crash of the process but may lose
//! the last commits on power loss; `sqlite_synchronous_full` survives power loss at the
//! price of an fsync per commit (the SQLite writer uses the pool's setting, and commits
//! on a blocking thread then);
//! PostgreSQL follows its own `synchronous_commit`.
//!
//! Every write is fenced: it applies only while the flow's owner and claim epoch are the
//! writer's. The atoms of a step are written by one multi-row upsert guarded by
//! `WHERE EXISTS (flow with this owner and epoch)`; the flow row itself is updated (with the
//! same guard, after the atoms) only when its state or ownership changes, so a step costs
//! one statement. `flows.updated_at` therefore moves with the flow's state,
//! `flow_atoms.updated_at` with every step.

mod sqlite;

use std::fmt::Display;
use std::sync::Arc;

use async_trait::async_trait;
use ember_engine::store::now_ms;
use ember_engine::{
    AtomRecord, ClaimRequest, EngineError, Failure, Fence, FlowDetail, FlowFilter, FlowRecord, FlowState,
    FlowStore, History, NewFlow, Ownership, Progress, Values, WriteBatch,
};
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Sqlite};
use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::{Db, with_pool};

type EResult<T> = Result<T, EngineError>;

/// How long the writer keeps its connection while no write is queued.
const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_millis(20);

/// At most this many queued writes share one transaction.
const MAX_GROUP: usize = 256;

const TERMINAL: &str = "('SUCCESS', 'FAILURE', 'REVERTED')";

const FLOW_COLUMNS: &str =
    "id, name, inputs, state, owner, lease_expires_at, claim_epoch, topic, subject, created_at, updated_at";

/// A flow row as stored.
#[derive(sqlx::FromRow)]
struct FlowRow {
    id: String,
    name: String,
    inputs: String,
    state: String,
    owner: Option<String>,
    lease_expires_at: Option<i64>,
    claim_epoch: i64,
    topic: String,
    subject: Option<String>,
    created_at: i64,
    updated_at: i64,
}

/// An atom row as stored.
#[derive(sqlx::FromRow)]
struct AtomRow {
    name: String,
    kind: String,
    state: String,
    intention: String,
    result: Option<String>,
    failure: Option<String>,
    revert_failure: Option<String>,
    history: Option<String>,
    attempts: i64,
    progress_done: Option<i64>,
    progress_total: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

/// An atom write, serialized by the caller so the writer task only runs SQL.
struct AtomSql {
    name: String,
    kind: &'static str,
    state: &'static str,
    intention: &'static str,
    result: Option<String>,
    failure: Option<String>,
    revert_failure: Option<String>,
    history: Option<String>,
    attempts: i64,
}

/// A fenced write of a flow's atoms and, when they change, its state and ownership.
struct WriteJob {
    fence: Fence,
    state: Option<&'static str>,
    ownership: Ownership,
    atoms: Vec<AtomSql>,
}

impl WriteJob {
    fn statements(&self) -> usize {
        usize::from(updates_flow(self.state, self.ownership)) + usize::from(!self.atoms.is_empty())
    }
}

/// What the writer applies for one caller: a flow to create (insert-or-ignore), a write, or
/// both (a flow created with its first step; the write is skipped when the flow existed).
/// The answer is whether the flow was created (true for a write alone).
struct Job {
    create: Option<Box<FlowRow>>,
    write: Option<WriteJob>,
}

struct Queued {
    job: Job,
    reply: oneshot::Sender<EResult<bool>>,
}

/// Where writes are queued: the writer task on a pooled connection, or the SQLite file's
/// writer (made at the first write, once the pool's `synchronous` setting is read).
#[derive(Clone)]
enum Queue {
    Task(mpsc::Sender<Queued>),
    File(Arc<OnceCell<Arc<sqlite::Writer>>>),
}

/// The SQL flow store. Cheap to clone; the writer ends when the last clone is dropped.
#[derive(Clone)]
pub struct SqlFlowStore {
    db: Db,
    queue: Queue,
}

/// A store error; a database out of reach or out of space (sqlx's or the SQLite writer's
/// rusqlite error) is `Unavailable`, which a run waits out.
fn store_err<E: Display + 'static>(e: E) -> EngineError {
    let any = &e as &dyn std::any::Any;
    let unavailable = if let Some(err) = any.downcast_ref::<sqlx::Error>() {
        crate::sql::is_unavailable(err)
    } else if let Some(rusqlite::Error::SqliteFailure(err, _)) = any.downcast_ref::<rusqlite::Error>() {
        crate::sql::unavailable_code(&err.extended_code.to_string())
    } else {
        false
    };
    if unavailable { EngineError::Unavailable(e.to_string()) } else { EngineError::Store(e.to_string()) }
}

fn to_json<T: serde::Serialize>(v: &T) -> EResult<String> {
    serde_json::to_string(v).map_err(store_err)
}

fn values_json(v: &Values) -> EResult<String> {
    to_json(&v.to_json().map_err(store_err)?)
}

impl SqlFlowStore {
    /// A store on `db` (migrated), with its writer task spawned on the current runtime.
    pub fn new(db: Db) -> Self {
        if let Db::Sqlite(pool) = &db
            && sqlite::on_file(pool)
        {
            return Self { db, queue: Queue::File(Arc::new(OnceCell::new())) };
        }
        let (queue, rx) = mpsc::channel(4096);
        tokio::spawn(writer(db.clone(), rx));
        Self { db, queue: Queue::Task(queue) }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn submit(&self, job: Job) -> EResult<bool> {
        let stopped = || store_err("the flow store writer has stopped");
        let rx = match (&self.queue, &self.db) {
            (Queue::Task(queue), _) => {
                let (reply, rx) = oneshot::channel();
                queue.send(Queued { job, reply }).await.map_err(|_| stopped())?;
                rx
            }
            (Queue::File(cell), Db::Sqlite(pool)) => {
                cell.get_or_try_init(|| sqlite::Writer::start(pool)).await?.submit(job)
            }
            (Queue::File(_), Db::Postgres(_)) => return Err(store_err("no SQLite writer on PostgreSQL")),
        };
        rx.await.map_err(|_| stopped())?
    }

    async fn fetch_flow(&self, id: &str) -> EResult<Option<FlowRecord>> {
        let sql = format!("SELECT {FLOW_COLUMNS} FROM flows WHERE id = $1");
        let row: Option<FlowRow> = with_pool!(&self.db, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(store_err)?);
        row.map(flow_record).transpose()
    }
}

/// The writer's own connection, held across groups while writes keep coming (and re-opened
/// after an error), so a group costs BEGIN, its statements and COMMIT, with no pool round
/// trip.
enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

macro_rules! with_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => $body,
            Conn::Postgres($c) => $body,
        }
    };
}

async fn connect(db: &Db) -> Result<Conn, sqlx::Error> {
    Ok(match db {
        Db::Sqlite(p) => Conn::Sqlite(p.acquire().await?),
        Db::Postgres(p) => Conn::Postgres(p.acquire().await?),
    })
}

/// Drains the queue into transactions until every sender is gone.
async fn writer(db: Db, mut rx: mpsc::Receiver<Queued>) {
    let mut group: Vec<Queued> = Vec::with_capacity(MAX_GROUP);
    let mut conn: Option<Conn> = None;
    loop {
        // The connection goes back to the pool once the queue has been idle for a moment,
        // so `Db::close` (which waits for every connection) is not held up by the writer.
        let first = match tokio::time::timeout(IDLE_RELEASE, rx.recv()).await {
            Ok(Some(q)) => q,
            Ok(None) => break,
            Err(_) => {
                conn = None;
                match rx.recv().await {
                    Some(q) => q,
                    None => break,
                }
            }
        };
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(q) => group.push(q),
                Err(_) => break,
            }
        }
        let outcome = match conn.take() {
            Some(c) => Ok(c),
            None => connect(&db).await,
        };
        let outcome = match outcome {
            Ok(mut c) => {
                let r = commit(&mut c, &group, now_ms()).await;
                if r.is_ok() {
                    conn = Some(c);
                }
                r
            }
            Err(e) => Err(e),
        };
        match outcome {
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

/// The fenced update of a flow row: $1 now, $2 state (or NULL to keep it), $3 flow id,
/// $4 owner, $5 epoch.
fn flow_update_sql(o: Ownership) -> &'static str {
    match o {
        Ownership::Keep => {
            "UPDATE flows SET updated_at = $1, state = COALESCE($2, state) \
             WHERE id = $3 AND owner = $4 AND claim_epoch = $5"
        }
        Ownership::Finish => {
            "UPDATE flows SET updated_at = $1, state = COALESCE($2, state), lease_expires_at = NULL \
             WHERE id = $3 AND owner = $4 AND claim_epoch = $5"
        }
        Ownership::Release => {
            "UPDATE flows SET updated_at = $1, state = COALESCE($2, state), owner = NULL, \
             lease_expires_at = NULL WHERE id = $3 AND owner = $4 AND claim_epoch = $5"
        }
    }
}

/// One statement that writes `n` atoms if, and only if, the fence holds: $1 flow id,
/// $2 now, $3 owner, $4 epoch, then 9 values per atom.
fn upsert_sql(n: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO flow_atoms (flow_id, created_at, updated_at, name, kind, state, intention, result, failure, \
         revert_failure, history, attempts) SELECT $1, $2, $2, v.* FROM (VALUES ",
    );
    for i in 0..n {
        let b = 5 + i * 9;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for k in 0..9 {
            if k > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", b + k));
        }
        sql.push(')');
    }
    sql.push_str(
        ") AS v WHERE EXISTS (SELECT 1 FROM flows WHERE id = $1 AND owner = $3 AND claim_epoch = $4) \
         ON CONFLICT (flow_id, name) DO UPDATE SET state = excluded.state, intention = excluded.intention, \
         result = excluded.result, failure = excluded.failure, revert_failure = excluded.revert_failure, \
         history = excluded.history, attempts = excluded.attempts, updated_at = excluded.updated_at",
    );
    sql
}

const CREATE: &str = "INSERT INTO flows (id, name, inputs, state, owner, lease_expires_at, claim_epoch, \
    topic, subject, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
    ON CONFLICT (id) DO NOTHING";

/// Whether a write changes the flow row (its state or ownership).
fn updates_flow(state: Option<&str>, ownership: Ownership) -> bool {
    state.is_some() || ownership != Ownership::Keep
}

/// How many statements a group takes.
fn statements(group: &[Queued]) -> usize {
    group
        .iter()
        .map(|q| usize::from(q.job.create.is_some()) + q.job.write.as_ref().map_or(0, WriteJob::statements))
        .sum()
}

/// Runs a group's statements on `$ex` (a `&mut` connection); evaluates to the results.
macro_rules! apply_group {
    ($ex:ident, $group:expr, $now:expr) => {{
        let mut results = Vec::with_capacity($group.len());
        for q in $group {
            let mut created = true;
            if let Some(f) = &q.job.create {
                let done = sqlx::query(CREATE)
                    .bind(&f.id)
                    .bind(&f.name)
                    .bind(&f.inputs)
                    .bind(&f.state)
                    .bind(&f.owner)
                    .bind(f.lease_expires_at)
                    .bind(f.claim_epoch)
                    .bind(&f.topic)
                    .bind(&f.subject)
                    .bind(f.created_at)
                    .execute(&mut *$ex)
                    .await?;
                created = done.rows_affected() == 1;
            }
            let mut held = true;
            if let Some(w) = q.job.write.as_ref().filter(|_| created) {
                // The atoms first: a release clears the owner the atoms' fence checks.
                if !w.atoms.is_empty() {
                    let sql = upsert_sql(w.atoms.len());
                    let mut query = sqlx::query(&sql)
                        .bind(&*w.fence.flow_id)
                        .bind($now)
                        .bind(&*w.fence.owner)
                        .bind(w.fence.epoch);
                    for a in &w.atoms {
                        query = query
                            .bind(&a.name)
                            .bind(a.kind)
                            .bind(a.state)
                            .bind(a.intention)
                            .bind(&a.result)
                            .bind(&a.failure)
                            .bind(&a.revert_failure)
                            .bind(&a.history)
                            .bind(a.attempts);
                    }
                    held = query.execute(&mut *$ex).await?.rows_affected() > 0;
                }
                if held && updates_flow(w.state, w.ownership) {
                    let done = sqlx::query(flow_update_sql(w.ownership))
                        .bind($now)
                        .bind(w.state)
                        .bind(&*w.fence.flow_id)
                        .bind(&*w.fence.owner)
                        .bind(w.fence.epoch)
                        .execute(&mut *$ex)
                        .await?;
                    held = done.rows_affected() == 1;
                }
            }
            results.push(outcome(&q.job, created, held));
        }
        results
    }};
}

/// A job's answer: whether its flow was created, or `LeaseLost` when its write was fenced
/// off.
fn outcome(job: &Job, created: bool, held: bool) -> EResult<bool> {
    match &job.write {
        Some(w) if !held => Err(EngineError::LeaseLost { flow_id: w.fence.flow_id.to_string() }),
        _ => Ok(created),
    }
}

/// Applies a group of jobs atomically; a fenced-off write fails alone. A group of one
/// statement (a flow's step while no other flow writes) runs without BEGIN and COMMIT:
/// one statement is atomic on its own, and this saves two round trips.
async fn commit(conn: &mut Conn, group: &[Queued], now: i64) -> Result<Vec<EResult<bool>>, sqlx::Error> {
    let single = statements(group) <= 1;
    with_conn!(conn, |c| {
        if single {
            let ex = &mut **c;
            Ok(apply_group!(ex, group, now))
        } else {
            let mut tx = sqlx::Connection::begin(&mut **c).await?;
            let results = {
                let ex = &mut *tx;
                apply_group!(ex, group, now)
            };
            tx.commit().await?;
            Ok(results)
        }
    })
}

fn parse<T: std::str::FromStr<Err = String>>(s: &str) -> EResult<T> {
    s.parse().map_err(store_err)
}

fn json_opt<T: serde::de::DeserializeOwned>(s: &Option<String>) -> EResult<Option<T>> {
    s.as_deref().map(|s| serde_json::from_str(s).map_err(store_err)).transpose()
}

fn values_from(s: &str) -> EResult<Values> {
    let json: serde_json::Value = serde_json::from_str(s).map_err(store_err)?;
    Values::from_json(json).map_err(store_err)
}

fn flow_record(r: FlowRow) -> EResult<FlowRecord> {
    Ok(FlowRecord {
        inputs: values_from(&r.inputs)?,
        state: parse(&r.state)?,
        id: r.id,
        name: r.name,
        owner: r.owner,
        lease_expires_at: r.lease_expires_at,
        claim_epoch: r.claim_epoch,
        topic: r.topic,
        subject: r.subject,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

fn atom_record(r: AtomRow) -> EResult<AtomRecord> {
    Ok(AtomRecord {
        kind: parse(&r.kind)?,
        state: parse(&r.state)?,
        intention: parse(&r.intention)?,
        result: r.result.as_deref().map(values_from).transpose()?,
        failure: json_opt::<Failure>(&r.failure)?,
        revert_failure: json_opt::<Failure>(&r.revert_failure)?,
        history: json_opt::<History>(&r.history)?,
        attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
        progress: match (r.progress_done, r.progress_total) {
            (Some(done), Some(total)) => Some(Progress {
                done: u64::try_from(done).unwrap_or(0),
                total: u64::try_from(total).unwrap_or(0),
            }),
            _ => None,
        },
        created_at: r.created_at,
        updated_at: r.updated_at,
        name: r.name,
    })
}

fn atom_sql(w: &ember_engine::AtomWrite) -> EResult<AtomSql> {
    Ok(AtomSql {
        name: w.name.to_string(),
        kind: w.kind.as_str(),
        state: w.state.as_str(),
        intention: w.intention.as_str(),
        result: w.result.as_ref().map(values_json).transpose()?,
        failure: w.failure.as_ref().map(to_json).transpose()?,
        revert_failure: w.revert_failure.as_ref().map(to_json).transpose()?,
        history: w.history.as_ref().map(|h| to_json(&**h)).transpose()?,
        attempts: i64::from(w.attempts),
    })
}

fn flow_row(new: &NewFlow, state: FlowState, now: i64) -> EResult<FlowRow> {
    Ok(FlowRow {
        id: new.id.clone(),
        name: new.name.clone(),
        inputs: values_json(&new.inputs)?,
        state: state.as_str().to_owned(),
        owner: new.owner.as_ref().map(|(o, _)| o.clone()),
        lease_expires_at: new.owner.as_ref().map(|(_, l)| *l),
        claim_epoch: i64::from(new.owner.is_some()),
        topic: new.topic.clone(),
        subject: new.subject.clone(),
        created_at: now,
        updated_at: now,
    })
}

fn write_job(fence: &Fence, batch: &WriteBatch) -> EResult<WriteJob> {
    Ok(WriteJob {
        fence: fence.clone(),
        state: batch.flow_state.map(FlowState::as_str),
        ownership: batch.ownership,
        atoms: batch.atoms.iter().map(atom_sql).collect::<EResult<Vec<_>>>()?,
    })
}

#[async_trait]
impl FlowStore for SqlFlowStore {
    async fn create_flow(&self, new: &NewFlow) -> EResult<(FlowRecord, bool)> {
        let now = now_ms();
        let row = flow_row(new, FlowState::Pending, now)?;
        if self.submit(Job { create: Some(Box::new(row)), write: None }).await? {
            let record = FlowRecord {
                id: new.id.clone(),
                name: new.name.clone(),
                inputs: new.inputs.clone(),
                state: FlowState::Pending,
                owner: new.owner.as_ref().map(|(o, _)| o.clone()),
                lease_expires_at: new.owner.as_ref().map(|(_, l)| *l),
                claim_epoch: i64::from(new.owner.is_some()),
                topic: new.topic.clone(),
                subject: new.subject.clone(),
                created_at: now,
                updated_at: now,
            };
            return Ok((record, true));
        }
        let existing = self.fetch_flow(&new.id).await?;
        Ok((existing.ok_or_else(|| EngineError::NotFound { flow_id: new.id.clone() })?, false))
    }

    async fn write(&self, fence: &Fence, batch: WriteBatch) -> EResult<()> {
        self.submit(Job { create: None, write: Some(write_job(fence, &batch)?) }).await?;
        Ok(())
    }

    async fn create_with(&self, new: &NewFlow, fence: &Fence, mut batch: WriteBatch) -> EResult<bool> {
        // The flow row is inserted in the batch's state, so the write adds only the atoms.
        let state = batch.flow_state.take().unwrap_or(FlowState::Pending);
        let row = flow_row(new, state, now_ms())?;
        self.submit(Job { create: Some(Box::new(row)), write: Some(write_job(fence, &batch)?) }).await
    }

    async fn claim(&self, req: &ClaimRequest) -> EResult<Vec<FlowRecord>> {
        if req.topics.is_empty() && req.names.is_empty() {
            return Ok(Vec::new());
        }
        let candidates = claim_candidates(&self.db, req).await?;
        let mut claimed = Vec::new();
        // A lapsed lease may be renewed between the two statements (a renewal keeps the
        // epoch), so a normal claim checks the lapse again; a reclaim takes the flow from
        // an earlier life of the claimer, which renews nothing any more.
        // ($6 is used either way: PostgreSQL refuses a bound parameter the SQL never names.)
        let lapsed =
            if req.reclaim.is_some() { "$6 = $6" } else { "(owner IS NULL OR lease_expires_at < $6)" };
        let sql = format!(
            "UPDATE flows SET owner = $1, lease_expires_at = $2, claim_epoch = claim_epoch + 1, updated_at = $3 \
             WHERE id = $4 AND claim_epoch = $5 AND {lapsed} AND state NOT IN {TERMINAL} RETURNING {FLOW_COLUMNS}"
        );
        for (id, epoch) in candidates {
            let row: Option<FlowRow> = with_pool!(&self.db, |pool| sqlx::query_as(&sql)
                .bind(&req.owner)
                .bind(req.lease_until)
                .bind(req.now)
                .bind(&id)
                .bind(epoch)
                .bind(req.lapsed_before.min(req.now))
                .fetch_optional(pool)
                .await
                .map_err(store_err)?);
            if let Some(row) = row {
                claimed.push(flow_record(row)?);
            }
        }
        Ok(claimed)
    }

    async fn renew(&self, fence: &Fence, lease_until: i64) -> EResult<bool> {
        const SQL: &str =
            "UPDATE flows SET lease_expires_at = $1 WHERE id = $2 AND owner = $3 AND claim_epoch = $4";
        let done = with_pool!(&self.db, |pool| sqlx::query(SQL)
            .bind(lease_until)
            .bind(&*fence.flow_id)
            .bind(&*fence.owner)
            .bind(fence.epoch)
            .execute(pool)
            .await
            .map_err(store_err)?
            .rows_affected());
        Ok(done == 1)
    }

    async fn get_flow(&self, id: &str) -> EResult<Option<FlowDetail>> {
        let Some(flow) = self.fetch_flow(id).await? else { return Ok(None) };
        const SQL: &str = "SELECT name, kind, state, intention, result, failure, revert_failure, history, attempts, \
            progress_done, progress_total, created_at, updated_at FROM flow_atoms WHERE flow_id = $1 ORDER BY created_at, name";
        let rows: Vec<AtomRow> = with_pool!(&self.db, |pool| sqlx::query_as(SQL)
            .bind(id)
            .fetch_all(pool)
            .await
            .map_err(store_err)?);
        let atoms = rows.into_iter().map(atom_record).collect::<EResult<Vec<_>>>()?;
        Ok(Some(FlowDetail { flow, atoms }))
    }

    async fn list_flows(&self, filter: &FlowFilter) -> EResult<Vec<FlowRecord>> {
        let rows: Vec<FlowRow> = with_pool!(&self.db, |pool| {
            let mut q = sqlx::QueryBuilder::new(format!("SELECT {FLOW_COLUMNS} FROM flows WHERE 1 = 1"));
            if let Some(s) = filter.state {
                q.push(" AND state = ").push_bind(s.as_str());
            }
            if let Some(n) = &filter.name {
                q.push(" AND name = ").push_bind(n.clone());
            }
            if let Some(s) = &filter.subject {
                q.push(" AND subject = ").push_bind(s.clone());
            }
            if let Some(o) = &filter.owner {
                q.push(" AND owner = ").push_bind(o.clone());
            }
            if let Some(t) = filter.created_after {
                q.push(" AND created_at >= ").push_bind(t);
            }
            if let Some(t) = filter.created_before {
                q.push(" AND created_at < ").push_bind(t);
            }
            let limit = filter.limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
            q.push(" ORDER BY created_at DESC, id LIMIT ").push_bind(limit);
            q.push(" OFFSET ").push_bind(i64::try_from(filter.offset).unwrap_or(i64::MAX));
            q.build_query_as().fetch_all(pool).await.map_err(store_err)?
        });
        rows.into_iter().map(flow_record).collect()
    }

    async fn release(&self, id: &str) -> EResult<Option<FlowRecord>> {
        let sql = format!(
            "UPDATE flows SET owner = NULL, lease_expires_at = NULL, claim_epoch = claim_epoch + 1, \
             updated_at = $1 WHERE id = $2 AND state NOT IN {TERMINAL} RETURNING {FLOW_COLUMNS}"
        );
        let row: Option<FlowRow> = with_pool!(&self.db, |pool| sqlx::query_as(&sql)
            .bind(now_ms())
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(store_err)?);
        row.map(flow_record).transpose()
    }

    async fn record_progress(&self, flow_id: &str, atom: &str, progress: Progress) -> EResult<()> {
        const SQL: &str =
            "UPDATE flow_atoms SET progress_done = $1, progress_total = $2 WHERE flow_id = $3 AND name = $4";
        let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        with_pool!(&self.db, |pool| sqlx::query(SQL)
            .bind(big(progress.done))
            .bind(big(progress.total))
            .bind(flow_id)
            .bind(atom)
            .execute(pool)
            .await
            .map_err(store_err)?
            .rows_affected());
        Ok(())
    }

    async fn cancel(&self, id: &str) -> EResult<Option<bool>> {
        const SQL: &str = "UPDATE flows SET state = 'REVERTED', updated_at = $1 WHERE id = $2 AND state = 'PENDING' AND owner IS NULL";
        let done = with_pool!(&self.db, |pool| sqlx::query(SQL)
            .bind(now_ms())
            .bind(id)
            .execute(pool)
            .await
            .map_err(store_err)?
            .rows_affected());
        if done == 1 {
            return Ok(Some(true));
        }
        Ok(self.fetch_flow(id).await?.map(|_| false))
    }

    async fn request_revert(&self, id: &str) -> EResult<Option<FlowRecord>> {
        // One transaction: the flow row first (it takes SQLite's write lock and PostgreSQL's
        // row lock), then its atoms, so a concurrent writer sees both or neither.
        let flow_sql = format!(
            "UPDATE flows SET state = CASE \
               WHEN NOT EXISTS (SELECT 1 FROM flow_atoms WHERE flow_id = $2 \
                                AND state NOT IN ('PENDING', 'REVERTED', 'IGNORE')) THEN 'REVERTED' \
               WHEN state = 'FAILURE' THEN 'RUNNING' ELSE state END, \
             owner = NULL, lease_expires_at = NULL, claim_epoch = claim_epoch + 1, updated_at = $1 \
             WHERE id = $2 AND state NOT IN ('SUCCESS', 'REVERTED') RETURNING {FLOW_COLUMNS}"
        );
        const ATOMS_SQL: &str = "UPDATE flow_atoms SET intention = 'REVERT', \
            state = CASE WHEN state = 'REVERT_FAILURE' THEN 'FAILURE' ELSE state END, updated_at = $1 \
            WHERE flow_id = $2";
        let now = now_ms();
        let row: Option<FlowRow> = with_pool!(&self.db, |pool| {
            let mut tx = pool.begin().await.map_err(store_err)?;
            let row: Option<FlowRow> = sqlx::query_as(&flow_sql)
                .bind(now)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_err)?;
            if row.is_some() {
                sqlx::query(ATOMS_SQL).bind(now).bind(id).execute(&mut *tx).await.map_err(store_err)?;
            }
            tx.commit().await.map_err(store_err)?;
            row
        });
        row.map(flow_record).transpose()
    }
}

/// Flows a claim may take: unowned or with a lapsed lease (or, for a reclaim, held by an
/// earlier life of the claimer), oldest first.
async fn claim_candidates(db: &Db, req: &ClaimRequest) -> EResult<Vec<(String, i64)>> {
    let rows: Vec<(String, i64)> = with_pool!(db, |pool| {
        let mut q = sqlx::QueryBuilder::new(format!(
            "SELECT id, claim_epoch FROM flows WHERE state NOT IN {TERMINAL} AND "
        ));
        match &req.reclaim {
            None => {
                q.push("(owner IS NULL OR lease_expires_at < ")
                    .push_bind(req.lapsed_before.min(req.now))
                    .push(")");
            }
            Some(prefix) => {
                q.push("substr(owner, 1, length(")
                    .push_bind(prefix.clone())
                    .push(")) = ")
                    .push_bind(prefix.clone())
                    .push(" AND owner <> ")
                    .push_bind(req.owner.clone());
            }
        }
        q.push(" AND (");
        let mut any = false;
        for (column, list) in [("topic", &req.topics), ("name", &req.names)] {
            if list.is_empty() {
                continue;
            }
            if any {
                q.push(" OR ");
            }
            any = true;
            q.push(column).push(" IN (");
            let mut sep = q.separated(", ");
            for v in list {
                sep.push_bind(v.clone());
            }
            q.push(")");
        }
        q.push(") ORDER BY created_at, id LIMIT ").push_bind(i64::try_from(req.limit).unwrap_or(i64::MAX));
        q.build_query_as().fetch_all(pool).await.map_err(store_err)?
    });
    Ok(rows)
}
