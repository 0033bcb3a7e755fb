//! The quota engine, as Cinder's `quota_reserve`, `reservation_commit`,
//! `reservation_rollback` and `reservation_expire`.
//!
//! A reservation is one transaction that locks the project's usage rows, checks every
//! positive delta against its limit and records the reservation, so two concurrent
//! reservations can never both take the last unit. SQLite gets there with `BEGIN IMMEDIATE`
//! (one writer at a time); PostgreSQL by creating missing usage rows with
//! `ON CONFLICT DO NOTHING` and then `SELECT ... FOR UPDATE` on them, in resource order so
//! two reservations never wait on each other in a cycle.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use ember_common::error::OverQuotaResource;
use ember_common::model::quota::{self, COUNTED, PER_TYPE, PER_VOLUME_GIGABYTES};
use ember_common::model::{QuotaDefaults, QuotaSet, QuotaUsage};
use ember_common::repo::QuotaRepo;
use ember_common::{Error, Result};

use crate::sql::{Dialect, Sql, bind_args, db_err, execute, ms, with_tx};
use crate::{SqlRepo, with_pool};

/// The quota class whose rows override the configured defaults.
const DEFAULT_CLASS: &str = "default";

/// A released reservation: what to take off `reserved` and add to `in_use`.
type Released = (String, String, i64);

impl SqlRepo {
    /// Every resource a quota set shows: the counted ones, the per-type ones of each live
    /// type, and the limit-only one.
    async fn all_resources(&self) -> Result<Vec<String>> {
        let names: Vec<String> = with_pool!(&self.db, |pool| sqlx::query_scalar::<_, String>(
            "SELECT name FROM volume_types WHERE deleted = FALSE ORDER BY name"
        )
        .fetch_all(pool)
        .await)
        .map_err(db_err)?;
        let mut out: Vec<String> = COUNTED.iter().map(|r| r.to_string()).collect();
        out.push(PER_VOLUME_GIGABYTES.to_owned());
        for name in &names {
            out.extend(PER_TYPE.iter().map(|r| quota::per_type(r, name)));
        }
        Ok(out)
    }

    /// `(resource, limit)` rows of the default class and, when given, of one project.
    async fn limit_rows(
        &self,
        project_id: Option<&str>,
    ) -> Result<(HashMap<String, i64>, HashMap<String, i64>)> {
        let mut sql = Sql::new("SELECT resource, hard_limit FROM quota_classes WHERE class_name = ");
        sql.arg(DEFAULT_CLASS);
        let class = fetch_pairs(&self.db, &sql).await?;
        let project = match project_id {
            Some(p) => {
                let mut sql = Sql::new("SELECT resource, hard_limit FROM quotas WHERE project_id = ");
                sql.arg(p);
                fetch_pairs(&self.db, &sql).await?
            }
            None => HashMap::new(),
        };
        Ok((class, project))
    }

    /// The effective limit: the project's override, else the default class, else the config.
    fn effective(&self, resource: &str, class: &HashMap<String, i64>, project: &HashMap<String, i64>) -> i64 {
        project
            .get(resource)
            .or_else(|| class.get(resource))
            .copied()
            .unwrap_or_else(|| self.quota_defaults.get(resource))
    }
}

async fn fetch_pairs(db: &crate::Db, sql: &Sql) -> Result<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        with_pool!(db, |pool| bind_args!(sqlx::query_as::<_, (String, i64)>(&sql.text), &sql.args)
            .fetch_all(pool)
            .await)
        .map_err(db_err)?;
    Ok(rows.into_iter().collect())
}

/// The statements of one reservation, built before the transaction starts.
struct ReserveSql {
    ensure_usages: Sql,
    lock_usages: Sql,
    limits: Sql,
}

fn reserve_sql(dialect: Dialect, project_id: &str, resources: &[&str], now: i64) -> ReserveSql {
    let mut ensure_usages =
        Sql::new("INSERT INTO quota_usages (project_id, resource, in_use, reserved, created_at) VALUES ");
    for (i, r) in resources.iter().enumerate() {
        if i > 0 {
            ensure_usages.push(", ");
        }
        ensure_usages.push("(").arg(project_id).push(", ").arg(*r).push(", 0, 0, ").arg(now).push(")");
    }
    ensure_usages.push(" ON CONFLICT (project_id, resource) DO NOTHING");
    let mut lock_usages = Sql::new("SELECT resource, in_use, reserved FROM quota_usages WHERE project_id = ");
    lock_usages.arg(project_id).push(" AND resource IN ").list(resources.iter().copied());
    lock_usages.push(" ORDER BY resource").push(dialect.for_update());
    // Project overrides sort before class defaults, so the first row per resource wins.
    let mut limits = Sql::new("SELECT resource, hard_limit, 0 AS prio FROM quotas WHERE project_id = ");
    limits.arg(project_id).push(" AND resource IN ").list(resources.iter().copied());
    limits.push(" UNION ALL SELECT resource, hard_limit, 1 AS prio FROM quota_classes WHERE class_name = ");
    limits.arg(DEFAULT_CLASS).push(" AND resource IN ").list(resources.iter().copied());
    limits.push(" ORDER BY prio");
    ReserveSql { ensure_usages, lock_usages, limits }
}

/// The limit of each resource from the rows of `ReserveSql::limits` (project overrides
/// first), falling back to the configured defaults.
fn resolve_limits(
    rows: Vec<(String, i64, i32)>,
    resources: &[&str],
    defaults: &QuotaDefaults,
) -> HashMap<String, i64> {
    let mut limits: HashMap<String, i64> = HashMap::new();
    for (r, limit, _) in rows {
        limits.entry(r).or_insert(limit);
    }
    for r in resources {
        limits.entry((*r).to_owned()).or_insert_with(|| defaults.get(r));
    }
    limits
}

/// The resources `deltas` would take over their limits.
fn over_quota(
    deltas: &[(String, i64)],
    usages: &[(String, i64, i64)],
    limits: &HashMap<String, i64>,
) -> Vec<OverQuotaResource> {
    let mut overs = Vec::new();
    for (resource, delta) in deltas {
        let (in_use, reserved) = usages.iter().find(|u| &u.0 == resource).map_or((0, 0), |u| (u.1, u.2));
        let usage = QuotaUsage { limit: limits.get(resource).copied().unwrap_or(-1), in_use, reserved };
        if usage.would_exceed(*delta) {
            overs.push(OverQuotaResource { resource: resource.clone(), requested: *delta, usage });
        }
    }
    overs
}

/// The statements that record a reservation that passed the check.
fn record_sql(
    project_id: &str,
    deltas: &[(String, i64)],
    ids: &[String],
    expire_at: i64,
    now: i64,
) -> Vec<Sql> {
    let mut out = Vec::with_capacity(deltas.len() + 1);
    let mut insert =
        Sql::new("INSERT INTO reservations (id, project_id, resource, delta, expire_at, created_at) VALUES ");
    for (i, ((resource, delta), id)) in deltas.iter().zip(ids).enumerate() {
        if i > 0 {
            insert.push(", ");
        }
        insert.list([
            id.as_str().into(),
            project_id.into(),
            resource.as_str().into(),
            (*delta).into(),
            expire_at.into(),
            now.into(),
        ] as [crate::sql::Arg; 6]);
    }
    out.push(insert);
    for (resource, delta) in deltas.iter().filter(|(_, d)| *d > 0) {
        let mut up = Sql::new("UPDATE quota_usages SET reserved = reserved + ");
        up.arg(*delta).push(", updated_at = ").arg(now);
        up.push(" WHERE project_id = ").arg(project_id).push(" AND resource = ").arg(resource.as_str());
        out.push(up);
    }
    out
}

/// The usage updates that release reservations: positive deltas leave `reserved`, and
/// with `commit` every delta goes into `in_use` (never below zero).
fn release_sql(released: &mut [Released], commit: bool, now: i64) -> Vec<Sql> {
    // One lock order for every transaction that touches usage rows.
    released.sort();
    released
        .iter()
        .map(|(project_id, resource, delta)| {
            let mut up = Sql::new("UPDATE quota_usages SET reserved = reserved - CASE WHEN ");
            up.arg(*delta).push(" <= 0 THEN 0 WHEN ").arg(*delta).push(" > reserved THEN reserved ELSE ");
            up.arg(*delta).push(" END");
            if commit {
                up.push(", in_use = CASE WHEN in_use + ").arg(*delta).push(" < 0 THEN 0 ELSE in_use + ");
                up.arg(*delta).push(" END");
            }
            up.push(", updated_at = ").arg(now);
            up.push(" WHERE project_id = ")
                .arg(project_id.as_str())
                .push(" AND resource = ")
                .arg(resource.as_str());
            up
        })
        .collect()
}

/// The id of the reservation of `resource` made under `key`.
fn reservation_id(key: &str, resource: &str) -> String {
    format!("{key}#{resource}")
}

/// Which reservations to release.
enum Which<'a> {
    Ids(&'a [String]),
    ExpiredAt(i64),
    /// The reservations made under a key of `reserve_once` (ids `key#resource`).
    Key(&'a str),
}

/// `SELECT id` of the reservations to release, locked in id order on PostgreSQL so that two
/// releases of overlapping sets (a commit racing the expiry sweep) never deadlock.
fn lock_reservations(dialect: Dialect, which: &Which<'_>) -> Sql {
    let mut sql = Sql::new("SELECT id FROM reservations WHERE ");
    match which {
        Which::Ids(ids) => sql.push("id IN ").list(ids.iter().map(String::as_str)),
        Which::ExpiredAt(now) => sql.push("expire_at <= ").arg(*now),
        Which::Key(key) => {
            let prefix = reservation_id(key, "");
            // (PostgreSQL's substr takes an INTEGER length, SQLite's any number.)
            sql.push("substr(id, 1, CAST(")
                .arg(prefix.chars().count() as i64)
                .push(" AS INTEGER)) = ")
                .arg(prefix)
        }
    };
    sql.push(" ORDER BY id").push(dialect.for_update());
    sql
}

fn delete_ids(ids: &[String]) -> Sql {
    let mut sql = Sql::new("DELETE FROM reservations WHERE id IN ");
    sql.list(ids.iter().map(String::as_str)).push(" RETURNING project_id, resource, delta");
    sql
}

impl SqlRepo {
    /// Deletes the chosen reservations and releases them, in one transaction. Returns how
    /// many there were; ids already gone are skipped.
    async fn release(&self, which: Which<'_>, commit: bool) -> Result<u64> {
        let now = ms(Utc::now());
        let lock = lock_reservations(Dialect::of(&self.db), &which);
        with_tx!(&self.db, |tx| async {
            let ids: Vec<String> = bind_args!(sqlx::query_scalar::<_, String>(&lock.text), &lock.args)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            if ids.is_empty() {
                return Ok(0);
            }
            let delete = delete_ids(&ids);
            let mut released: Vec<Released> =
                bind_args!(sqlx::query_as::<_, Released>(&delete.text), &delete.args)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
            let count = released.len() as u64;
            for up in release_sql(&mut released, commit, now) {
                bind_args!(sqlx::query(&up.text), &up.args).execute(&mut *tx).await.map_err(db_err)?;
            }
            Ok(count)
        }
        .await)
    }
}

impl SqlRepo {
    /// Reserves `deltas`; with a `key`, at most once (see [`QuotaRepo::reserve_once`]).
    async fn reserve_keyed(
        &self,
        key: Option<&str>,
        project_id: &str,
        deltas: &[(String, i64)],
        expire_at: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        quota::check_deltas(deltas).map_err(Error::Invalid)?;
        if deltas.is_empty() {
            return Ok(Vec::new());
        }
        let mut deltas = deltas.to_vec();
        deltas.sort();
        let resources: Vec<&str> = deltas.iter().map(|(r, _)| r.as_str()).collect();
        let now = ms(Utc::now());
        let q = reserve_sql(Dialect::of(&self.db), project_id, &resources, now);
        let ids: Vec<String> = match key {
            // Deterministic, so a repeated call answers the same ids.
            Some(key) => deltas.iter().map(|(resource, _)| reservation_id(key, resource)).collect(),
            None => deltas.iter().map(|_| uuid::Uuid::new_v4().to_string()).collect(),
        };
        let record = record_sql(project_id, &deltas, &ids, ms(expire_at), now);
        with_tx!(&self.db, |tx| {
            async {
            if let Some(key) = key {
                // SQLite's BEGIN IMMEDIATE holds the write lock, PostgreSQL's unique index
                // makes a concurrent twin wait: either way the second call finds the key.
                const SQL: &str = "INSERT INTO reservation_keys (key, expire_at, created_at) VALUES ($1, $2, $3) \
                                   ON CONFLICT (key) DO NOTHING";
                let query = sqlx::query(SQL).bind(key).bind(ms(expire_at)).bind(now);
                let done = query.execute(&mut *tx).await.map_err(db_err)?;
                if done.rows_affected() == 0 {
                    return Ok(ids.clone());
                }
            }
            bind_args!(sqlx::query(&q.ensure_usages.text), &q.ensure_usages.args)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            let usages: Vec<(String, i64, i64)> =
                bind_args!(sqlx::query_as::<_, (String, i64, i64)>(&q.lock_usages.text), &q.lock_usages.args)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
            let rows: Vec<(String, i64, i32)> =
                bind_args!(sqlx::query_as::<_, (String, i64, i32)>(&q.limits.text), &q.limits.args)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
            let limits = resolve_limits(rows, &resources, &self.quota_defaults);
            let overs = over_quota(&deltas, &usages, &limits);
            if !overs.is_empty() {
                return Err(Error::OverQuota(overs));
            }
            for sql in &record {
                bind_args!(sqlx::query(&sql.text), &sql.args).execute(&mut *tx).await.map_err(db_err)?;
            }
            Ok(ids.clone())
        }
        .await
        })
    }
}

#[async_trait]
impl QuotaRepo for SqlRepo {
    async fn quota_defaults(&self) -> Result<BTreeMap<String, i64>> {
        let (class, project) = self.limit_rows(None).await?;
        let resources = self.all_resources().await?;
        Ok(resources
            .into_iter()
            .map(|r| {
                let limit = self.effective(&r, &class, &project);
                (r, limit)
            })
            .collect())
    }

    async fn project_quotas(&self, project_id: &str) -> Result<QuotaSet> {
        let (class, project) = self.limit_rows(Some(project_id)).await?;
        let mut sql = Sql::new("SELECT resource, in_use, reserved FROM quota_usages WHERE project_id = ");
        sql.arg(project_id);
        let usages: Vec<(String, i64, i64)> = with_pool!(&self.db, |pool| bind_args!(
            sqlx::query_as::<_, (String, i64, i64)>(&sql.text),
            &sql.args
        )
        .fetch_all(pool)
        .await)
        .map_err(db_err)?;
        let mut resources = BTreeMap::new();
        for r in self.all_resources().await?.into_iter().chain(project.keys().cloned()) {
            let limit = self.effective(&r, &class, &project);
            resources.insert(r, QuotaUsage { limit, in_use: 0, reserved: 0 });
        }
        for (r, in_use, reserved) in usages {
            let limit = self.effective(&r, &class, &project);
            resources.insert(r, QuotaUsage { limit, in_use, reserved });
        }
        Ok(QuotaSet { project_id: project_id.to_owned(), resources })
    }

    async fn set_project_quota(&self, project_id: &str, resource: &str, limit: i64) -> Result<()> {
        check_limit(resource, limit)?;
        let now = ms(Utc::now());
        let mut sql = Sql::new("INSERT INTO quotas (project_id, resource, hard_limit, created_at) VALUES ");
        sql.list([project_id.into(), resource.into(), limit.into(), now.into()] as [crate::sql::Arg; 4]);
        sql.push(" ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit, updated_at = ");
        sql.arg(now);
        execute(&self.db, &sql).await.map(|_| ())
    }

    async fn set_default_quota(&self, resource: &str, limit: i64) -> Result<()> {
        check_limit(resource, limit)?;
        let now = ms(Utc::now());
        let mut sql =
            Sql::new("INSERT INTO quota_classes (class_name, resource, hard_limit, created_at) VALUES ");
        sql.list([DEFAULT_CLASS.into(), resource.into(), limit.into(), now.into()] as [crate::sql::Arg; 4]);
        sql.push(" ON CONFLICT (class_name, resource) DO UPDATE SET hard_limit = excluded.hard_limit, updated_at = ");
        sql.arg(now);
        execute(&self.db, &sql).await.map(|_| ())
    }

    async fn delete_project_quotas(&self, project_id: &str) -> Result<()> {
        let mut sql = Sql::new("DELETE FROM quotas WHERE project_id = ");
        sql.arg(project_id);
        execute(&self.db, &sql).await.map(|_| ())
    }

    async fn limit_check(&self, project_id: &str, resource: &str, value: i64) -> Result<()> {
        if value < 0 {
            return Err(Error::Invalid(format!("quota value for {resource} must not be negative")));
        }
        let (class, project) = self.limit_rows(Some(project_id)).await?;
        let limit = self.effective(resource, &class, &project);
        if limit >= 0 && limit < value {
            let usage = QuotaUsage { limit, in_use: 0, reserved: 0 };
            return Err(Error::OverQuota(vec![OverQuotaResource {
                resource: resource.to_owned(),
                requested: value,
                usage,
            }]));
        }
        Ok(())
    }

    async fn reserve(
        &self,
        project_id: &str,
        deltas: &[(String, i64)],
        expire_at: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        self.reserve_keyed(None, project_id, deltas, expire_at).await
    }

    async fn reserve_once(
        &self,
        key: &str,
        project_id: &str,
        deltas: &[(String, i64)],
        expire_at: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        self.reserve_keyed(Some(key), project_id, deltas, expire_at).await
    }

    async fn rollback_once(&self, key: &str) -> Result<()> {
        self.release(Which::Key(key), false).await.map(|_| ())
    }

    async fn commit(&self, reservation_ids: &[String]) -> Result<()> {
        if reservation_ids.is_empty() {
            return Ok(());
        }
        self.release(Which::Ids(reservation_ids), true).await.map(|_| ())
    }

    async fn rollback(&self, reservation_ids: &[String]) -> Result<()> {
        if reservation_ids.is_empty() {
            return Ok(());
        }
        self.release(Which::Ids(reservation_ids), false).await.map(|_| ())
    }

    async fn expire_reservations(&self, now: DateTime<Utc>) -> Result<u64> {
        let expired = self.release(Which::ExpiredAt(ms(now)), false).await?;
        // A key outlives its reservations (they are gone by `expire_at`) long enough for any
        // task that ran before to have finished; forgetting it only bounds the table.
        const SQL: &str = "DELETE FROM reservation_keys WHERE 2 * expire_at - created_at <= $1";
        with_pool!(&self.db, |pool| sqlx::query(SQL)
            .bind(ms(now))
            .execute(pool)
            .await
            .map_err(db_err)?
            .rows_affected());
        Ok(expired)
    }

    async fn sync_usage(&self, project_id: &str) -> Result<QuotaSet> {
        self.sync_usage_from_resources(project_id).await?;
        self.project_quotas(project_id).await
    }
}

fn check_limit(resource: &str, limit: i64) -> Result<()> {
    if !quota::is_known(resource) {
        return Err(Error::Invalid(format!("unknown quota resource {resource:?}")));
    }
    if limit < -1 {
        return Err(Error::Invalid(format!("quota limit of {resource} must be -1 or more, not {limit}")));
    }
    Ok(())
}
