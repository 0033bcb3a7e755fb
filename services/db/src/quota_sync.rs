//! Recomputing quota usage from the live resources (Cinder's `cinder-manage quota sync`).

use std::collections::BTreeMap;

use chrono::Utc;

use ember_common::Result;
use ember_common::model::quota::{self, BACKUP_GIGABYTES, BACKUPS, GIGABYTES, SNAPSHOTS, VOLUMES};

use crate::SqlRepo;
use crate::sql::{Arg, Dialect, Sql, bind_args, db_err, ms, with_tx};

/// Count and GiB of live, quota-consuming volumes of a project, per type name.
const VOLUMES_BY_TYPE: &str = "SELECT t.name, COUNT(*), CAST(COALESCE(SUM(v.size), 0) AS BIGINT) \
    FROM volumes v LEFT JOIN volume_types t ON t.id = v.volume_type_id \
    WHERE v.deleted = FALSE AND v.consumes_quota = TRUE AND v.project_id = $1 GROUP BY t.name";

/// Count and GiB of live, quota-consuming snapshots of a project, per type name.
const SNAPSHOTS_BY_TYPE: &str = "SELECT t.name, COUNT(*), CAST(COALESCE(SUM(s.volume_size), 0) AS BIGINT) \
    FROM snapshots s LEFT JOIN volume_types t ON t.id = s.volume_type_id \
    WHERE s.deleted = FALSE AND s.consumes_quota = TRUE AND s.project_id = $1 GROUP BY t.name";

/// Count and GiB of live backups of a project.
const BACKUP_TOTALS: &str = "SELECT CAST(NULL AS TEXT), COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) \
    FROM backups WHERE deleted = FALSE AND project_id = $1";

type Counts = Vec<(Option<String>, i64, i64)>;

/// The in-use amount of every counted resource, from the three counts.
fn usage_from(volumes: &Counts, snapshots: &Counts, backups: &Counts) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = [VOLUMES, GIGABYTES, SNAPSHOTS, BACKUPS, BACKUP_GIGABYTES]
        .iter()
        .map(|r| ((*r).to_owned(), 0))
        .collect();
    let mut add = |resource: String, n: i64| *out.entry(resource).or_insert(0) += n;
    for (name, count, gb) in volumes {
        add(VOLUMES.into(), *count);
        add(GIGABYTES.into(), *gb);
        if let Some(t) = name {
            add(quota::per_type(VOLUMES, t), *count);
            add(quota::per_type(GIGABYTES, t), *gb);
        }
    }
    // Snapshots count against gigabytes too, as in Cinder without `no_snapshot_gb_quota`.
    for (name, count, gb) in snapshots {
        add(SNAPSHOTS.into(), *count);
        add(GIGABYTES.into(), *gb);
        if let Some(t) = name {
            add(quota::per_type(SNAPSHOTS, t), *count);
            add(quota::per_type(GIGABYTES, t), *gb);
        }
    }
    for (_, count, gb) in backups {
        add(BACKUPS.into(), *count);
        add(BACKUP_GIGABYTES.into(), *gb);
    }
    out
}

impl SqlRepo {
    /// Counts the project's live resources and writes them as `in_use`, in one transaction
    /// that holds the project's usage rows (so no reservation of the project runs meanwhile).
    pub(crate) async fn sync_usage_from_resources(&self, project_id: &str) -> Result<()> {
        let now = ms(Utc::now());
        let mut lock = Sql::new("SELECT resource FROM quota_usages WHERE project_id = ");
        lock.arg(project_id).push(" ORDER BY resource").push(Dialect::of(&self.db).for_update());
        with_tx!(&self.db, |tx| async {
            bind_args!(sqlx::query_scalar::<_, String>(&lock.text), &lock.args)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            let mut counts: Vec<Counts> = Vec::with_capacity(3);
            for q in [VOLUMES_BY_TYPE, SNAPSHOTS_BY_TYPE, BACKUP_TOTALS] {
                let rows: Counts = sqlx::query_as::<_, (Option<String>, i64, i64)>(q)
                    .bind(project_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
                counts.push(rows);
            }
            let usage = usage_from(&counts[0], &counts[1], &counts[2]);
            // Rows of resources that no longer have anything live go to zero.
            let mut zero = Sql::new("UPDATE quota_usages SET in_use = 0, updated_at = ");
            zero.arg(now).push(" WHERE project_id = ").arg(project_id).push(" AND resource NOT IN ");
            zero.list(usage.keys().map(String::as_str));
            bind_args!(sqlx::query(&zero.text), &zero.args).execute(&mut *tx).await.map_err(db_err)?;
            let mut upsert = Sql::new(
                "INSERT INTO quota_usages (project_id, resource, in_use, reserved, created_at) VALUES ",
            );
            for (i, (resource, in_use)) in usage.iter().enumerate() {
                if i > 0 {
                    upsert.push(", ");
                }
                let row: [Arg; 5] =
                    [project_id.into(), resource.as_str().into(), (*in_use).into(), 0i64.into(), now.into()];
                upsert.list(row);
            }
            upsert.push(
                " ON CONFLICT (project_id, resource) DO UPDATE SET in_use = excluded.in_use, updated_at = ",
            );
            upsert.arg(now);
            bind_args!(sqlx::query(&upsert.text), &upsert.args).execute(&mut *tx).await.map_err(db_err)?;
            Ok(())
        }
        .await)
    }
}
