//! Retention (Cinder's `cinder-manage db purge`): finished flows and soft-deleted rows older
//! than a cutoff are deleted, in batches of a few hundred rows, each batch its own short
//! transaction, so a big purge never holds a lock for long.
//!
//! A flow is purged only when it is finished (SUCCESS, FAILURE, REVERTED; checked again in
//! the DELETE, since an operator may resume a finished flow) and its subject no longer
//! lives: while a volume, snapshot, backup or attachment exists, the admin view still names
//! every flow that touched it.

use chrono::{DateTime, Utc};
use ember_common::Result;

use crate::Db;
use crate::sql::{Sql, bind_args, db_err, ms, with_tx};
use crate::with_pool;

/// Rows deleted per batch.
pub const BATCH: usize = 500;

/// What a purge deleted, per table, in the order it purged them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub tables: Vec<(&'static str, u64)>,
}

impl PurgeReport {
    /// The rows deleted from `table`.
    pub fn count(&self, table: &str) -> u64 {
        self.tables.iter().find(|(t, _)| *t == table).map_or(0, |(_, n)| *n)
    }
}

/// The finished flows whose subject is not a live resource, last written before `$1`.
const FLOW_CANDIDATES: &str = "SELECT f.id FROM flows f \
    WHERE f.state IN ('SUCCESS', 'FAILURE', 'REVERTED') AND f.updated_at < $1 \
    AND (f.subject IS NULL OR NOT ( \
        EXISTS (SELECT 1 FROM volumes r WHERE r.id = f.subject AND r.deleted = FALSE) \
        OR EXISTS (SELECT 1 FROM snapshots r WHERE r.id = f.subject AND r.deleted = FALSE) \
        OR EXISTS (SELECT 1 FROM backups r WHERE r.id = f.subject AND r.deleted = FALSE) \
        OR EXISTS (SELECT 1 FROM volume_attachments r WHERE r.id = f.subject AND r.deleted = FALSE))) \
    LIMIT $2";

/// A soft-deleted table: its name, the tables whose rows die with it (table, column), and
/// what keeps a row (rows of other tables that still point at it).
struct SoftDeleted {
    table: &'static str,
    children: &'static [(&'static str, &'static str)],
    kept_while: &'static str,
}

/// In an order where nothing deleted is still pointed at by a row that stays.
const SOFT_DELETED: &[SoftDeleted] = &[
    SoftDeleted { table: "volume_attachments", children: &[], kept_while: "" },
    SoftDeleted { table: "snapshots", children: &[("snapshot_metadata", "snapshot_id")], kept_while: "" },
    SoftDeleted { table: "backups", children: &[], kept_while: "" },
    SoftDeleted {
        table: "volumes",
        children: &[("volume_metadata", "volume_id"), ("volume_admin_metadata", "volume_id")],
        kept_while: " AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.volume_id = t.id) \
            AND NOT EXISTS (SELECT 1 FROM volume_attachments a WHERE a.volume_id = t.id)",
    },
    SoftDeleted {
        table: "volume_types",
        children: &[
            ("volume_type_extra_specs", "volume_type_id"),
            ("volume_type_projects", "volume_type_id"),
        ],
        kept_while: " AND NOT EXISTS (SELECT 1 FROM volumes v WHERE v.volume_type_id = t.id) \
            AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.volume_type_id = t.id)",
    },
];

/// Deletes the finished flows (and their atoms) last written before `before` whose subject
/// no longer lives; returns how many flows went.
pub async fn purge_flows(db: &Db, before: DateTime<Utc>) -> Result<u64> {
    let mut total = 0;
    loop {
        let ids = select_ids(db, FLOW_CANDIDATES, before).await?;
        if ids.is_empty() {
            return Ok(total);
        }
        let mut atoms = Sql::new("DELETE FROM flow_atoms WHERE flow_id IN ");
        atoms.list(ids.iter().cloned());
        atoms
            .push(" AND flow_id IN (SELECT id FROM flows WHERE state IN ('SUCCESS', 'FAILURE', 'REVERTED'))");
        let mut flows = Sql::new("DELETE FROM flows WHERE id IN ");
        flows.list(ids.iter().cloned());
        flows.push(" AND state IN ('SUCCESS', 'FAILURE', 'REVERTED')");
        total += delete_together(db, &[atoms], flows).await?;
        if ids.len() < BATCH {
            return Ok(total);
        }
    }
}

/// Deletes the soft-deleted rows (volumes, snapshots, backups, attachments, volume types
/// and what hangs off them) deleted before `before`, as `cinder-manage db purge` does.
pub async fn purge_deleted(db: &Db, before: DateTime<Utc>) -> Result<PurgeReport> {
    let mut report = PurgeReport::default();
    for t in SOFT_DELETED {
        let candidates = format!(
            "SELECT t.id FROM {} t WHERE t.deleted = TRUE AND t.deleted_at < $1{} LIMIT $2",
            t.table, t.kept_while
        );
        let mut total = 0;
        loop {
            let ids = select_ids(db, &candidates, before).await?;
            if ids.is_empty() {
                break;
            }
            let children: Vec<Sql> = t
                .children
                .iter()
                .map(|(child, column)| {
                    let mut sql = Sql::new(&format!("DELETE FROM {child} WHERE {column} IN "));
                    sql.list(ids.iter().cloned());
                    sql
                })
                .collect();
            let mut rows = Sql::new(&format!("DELETE FROM {} WHERE deleted = TRUE AND id IN ", t.table));
            rows.list(ids.iter().cloned());
            total += delete_together(db, &children, rows).await?;
            if ids.len() < BATCH {
                break;
            }
        }
        report.tables.push((t.table, total));
    }
    Ok(report)
}

/// One batch of candidate ids.
async fn select_ids(db: &Db, sql: &str, before: DateTime<Utc>) -> Result<Vec<String>> {
    with_pool!(db, |pool| sqlx::query_scalar::<_, String>(sql)
        .bind(ms(before))
        .bind(BATCH as i64)
        .fetch_all(pool)
        .await
        .map_err(db_err))
}

/// Runs `children` then `rows` in one transaction; returns the rows `rows` deleted.
async fn delete_together(db: &Db, children: &[Sql], rows: Sql) -> Result<u64> {
    with_tx!(db, |tx| {
        let mut out = Ok(0);
        for sql in children {
            if let Err(e) = bind_args!(sqlx::query(&sql.text), &sql.args).execute(&mut *tx).await {
                out = Err(db_err(e));
                break;
            }
        }
        if out.is_ok() {
            out = bind_args!(sqlx::query(&rows.text), &rows.args)
                .execute(&mut *tx)
                .await
                .map(|r| r.rows_affected())
                .map_err(db_err);
        }
        out
    })
}
