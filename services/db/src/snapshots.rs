//! The snapshot repository: rows, metadata, compare-and-swap updates and lists.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;

use ember_common::model::{
    ListOptions, Snapshot, SnapshotChanges, SnapshotFilter, SnapshotStatus, SortKey, VolumeStatus,
};
use ember_common::repo::SnapshotRepo;
use ember_common::{Error, ResourceKind, Result};

use crate::metadata::{self, MetaTable};
use crate::sql::{
    Arg, Dialect, Sets, Sql, bind_args, cas_sql, db_err, dt, execute, is_unique_violation, ms, opt_dt,
    paginate, parse, with_tx,
};
use crate::{SqlRepo, with_pool};

pub(crate) const COLUMNS: &str = "id, project_id, user_id, volume_id, volume_type_id, name, description, volume_size, \
    status, progress, provider_location, provider_id, group_snapshot_id, consumes_quota, created_at, \
    updated_at, deleted, deleted_at";

/// A `snapshots` row as stored.
#[derive(sqlx::FromRow)]
pub(crate) struct Row {
    id: String,
    project_id: String,
    user_id: String,
    volume_id: String,
    volume_type_id: String,
    name: Option<String>,
    description: Option<String>,
    volume_size: i64,
    status: String,
    progress: Option<String>,
    provider_location: Option<String>,
    provider_id: Option<String>,
    group_snapshot_id: Option<String>,
    consumes_quota: bool,
    created_at: i64,
    updated_at: Option<i64>,
    deleted: bool,
    deleted_at: Option<i64>,
}

impl Row {
    pub(crate) fn into_model(self) -> Result<Snapshot> {
        Ok(Snapshot {
            status: parse(&self.status)?,
            created_at: dt(self.created_at)?,
            updated_at: opt_dt(self.updated_at)?,
            deleted_at: opt_dt(self.deleted_at)?,
            id: self.id,
            project_id: self.project_id,
            user_id: self.user_id,
            volume_id: self.volume_id,
            volume_type_id: self.volume_type_id,
            name: self.name,
            description: self.description,
            volume_size: self.volume_size,
            progress: self.progress,
            provider_location: self.provider_location,
            provider_id: self.provider_id,
            group_snapshot_id: self.group_snapshot_id,
            consumes_quota: self.consumes_quota,
            deleted: self.deleted,
            metadata: BTreeMap::new(),
        })
    }
}

/// The SET list of `c` (without `updated_at`).
pub(crate) fn change_sets(c: &SnapshotChanges) -> Sets {
    let mut sets = Sets::default();
    sets.opt("status", c.status.map(|s| s.as_str()));
    sets.opt("progress", c.progress.clone());
    sets.opt("name", c.name.clone());
    sets.opt("description", c.description.clone());
    sets.opt("provider_location", c.provider_location.clone());
    sets.opt("provider_id", c.provider_id.clone());
    sets
}

fn sort_column(key: SortKey, m: Option<&Snapshot>) -> Option<(&'static str, Option<Arg>)> {
    Some(match key {
        SortKey::CreatedAt => ("created_at", m.map(|s| s.created_at.into())),
        SortKey::UpdatedAt => {
            ("COALESCE(updated_at, 0)", m.map(|s| Arg::Int(Some(s.updated_at.map_or(0, ms)))))
        }
        SortKey::Id => ("id", m.map(|s| s.id.as_str().into())),
        SortKey::Name => ("COALESCE(name, '')", m.map(|s| s.name.clone().unwrap_or_default().into())),
        SortKey::Status => ("status", m.map(|s| s.status.as_str().into())),
        SortKey::Size => ("volume_size", m.map(|s| s.volume_size.into())),
        SortKey::AvailabilityZone | SortKey::Bootable => return None,
    })
}

impl SqlRepo {
    async fn fetch_snapshots(&self, sql: &Sql) -> Result<Vec<Snapshot>> {
        let rows: Vec<Row> =
            with_pool!(&self.db, |pool| bind_args!(sqlx::query_as::<_, Row>(&sql.text), &sql.args)
                .fetch_all(pool)
                .await)
            .map_err(db_err)?;
        let mut snaps = rows.into_iter().map(Row::into_model).collect::<Result<Vec<_>>>()?;
        self.attach_snapshot_metadata(&mut snaps).await?;
        Ok(snaps)
    }

    /// Loads the metadata of `snaps` with one query.
    pub(crate) async fn attach_snapshot_metadata(&self, snaps: &mut [Snapshot]) -> Result<()> {
        if !snaps.is_empty() {
            let ids: Vec<&str> = snaps.iter().map(|s| s.id.as_str()).collect();
            let mut meta = metadata::load_many(&self.db, MetaTable::Snapshot, &ids).await?;
            for s in snaps {
                s.metadata = meta.remove(&s.id).unwrap_or_default();
            }
        }
        Ok(())
    }

    async fn snapshot_where(&self, live_only: bool, id: &str) -> Result<Snapshot> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM snapshots WHERE id = "));
        sql.arg(id);
        if live_only {
            sql.push(" AND deleted = FALSE");
        }
        self.fetch_snapshots(&sql).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Snapshot, id))
    }
}

/// Runs the statements of [`insert_sql`] in transaction `$tx` (a taken id is `Duplicate`);
/// a macro, like `with_tx!`, so it compiles once per database.
macro_rules! insert_rows {
    ($tx:ident, $s:expr, $inserts:expr) => {{
        let (sql, meta) = &$inserts;
        match bind_args!(sqlx::query(&sql.text), &sql.args).execute(&mut *$tx).await {
            Err(e) if is_unique_violation(&e) => {
                Err(Error::Duplicate { kind: ResourceKind::Snapshot, id: $s.id.clone() })
            }
            Err(e) => Err(db_err(e)),
            Ok(_) => match meta {
                Some(m) => bind_args!(sqlx::query(&m.text), &m.args)
                    .execute(&mut *$tx)
                    .await
                    .map(|_| ())
                    .map_err(db_err),
                None => Ok(()),
            },
        }
    }};
}

#[async_trait]
impl SnapshotRepo for SqlRepo {
    async fn create_snapshot(&self, s: &Snapshot) -> Result<Snapshot> {
        let inserts = insert_sql(s);
        let res: Result<()> = with_tx!(&self.db, |tx| insert_rows!(tx, s, inserts));
        res?;
        self.get_snapshot(&s.id).await
    }

    async fn create_snapshot_of(&self, s: &Snapshot, volume_in: &[VolumeStatus]) -> Result<Option<Snapshot>> {
        let inserts = insert_sql(s);
        let mut lock = Sql::new("SELECT status FROM volumes WHERE deleted = FALSE AND id = ");
        lock.arg(s.volume_id.as_str()).push(Dialect::of(&self.db).for_update());
        let written: Result<bool> = with_tx!(&self.db, |tx| async {
            // The volume's row is locked before its status is read: a delete waiting on
            // that lock then sees this snapshot, and one that came first is seen here.
            let status: Option<(String,)> =
                bind_args!(sqlx::query_as::<_, (String,)>(&lock.text), &lock.args)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
            if !status.is_some_and(|(st,)| volume_in.iter().any(|v| v.as_str() == st)) {
                return Ok(false);
            }
            insert_rows!(tx, s, inserts).map(|()| true)
        }
        .await);
        if !written? {
            return Ok(None);
        }
        self.get_snapshot(&s.id).await.map(Some)
    }

    async fn get_snapshot(&self, id: &str) -> Result<Snapshot> {
        self.snapshot_where(true, id).await
    }

    async fn list_snapshots(&self, f: &SnapshotFilter, opts: &ListOptions) -> Result<Vec<Snapshot>> {
        let marker = match &opts.marker {
            Some(id) => Some(self.snapshot_where(false, id).await?),
            None => None,
        };
        // A marker of another project than the listed one reads as an unknown id, so a
        // caller cannot tell which ids exist elsewhere.
        if let (Some(m), Some(project)) = (&marker, &f.project_id)
            && m.project_id != *project
        {
            return Err(Error::not_found(ResourceKind::Snapshot, &m.id));
        }
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM snapshots WHERE deleted = FALSE"));
        for (column, value) in [("project_id", &f.project_id), ("name", &f.name), ("volume_id", &f.volume_id)]
        {
            if let Some(v) = value {
                sql.push(" AND ").push(column).push(" = ").arg(v.as_str());
            }
        }
        if let Some(st) = f.status {
            sql.push(" AND status = ").arg(st.as_str());
        }
        for (k, v) in &f.metadata {
            sql.push(" AND EXISTS (SELECT 1 FROM snapshot_metadata m WHERE m.snapshot_id = snapshots.id AND m.key = ")
                .arg(k.as_str())
                .push(" AND m.value = ")
                .arg(v.as_str())
                .push(")");
        }
        paginate(&mut sql, opts, marker.as_ref(), &sort_column, opts.marker.as_deref())?;
        self.fetch_snapshots(&sql).await
    }

    async fn update_snapshot(
        &self,
        id: &str,
        expected: &[SnapshotStatus],
        c: &SnapshotChanges,
    ) -> Result<Option<Snapshot>> {
        let expected: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
        let sql = cas_sql("snapshots", "status", id, &expected, change_sets(c), COLUMNS);
        Ok(self.fetch_snapshots(&sql).await?.pop())
    }

    async fn soft_delete_snapshot(&self, id: &str, expected: &[SnapshotStatus]) -> Result<bool> {
        let now = Utc::now();
        let mut sets = Sets::default();
        sets.opt("status", Some(SnapshotStatus::Deleted.as_str()));
        sets.opt("deleted", Some(true));
        sets.opt("deleted_at", Some(now));
        let expected: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
        let sql = cas_sql("snapshots", "status", id, &expected, sets, "id");
        Ok(execute(&self.db, &sql).await? == 1)
    }

    async fn set_snapshot_metadata(
        &self,
        id: &str,
        items: &BTreeMap<String, String>,
        replace_all: bool,
    ) -> Result<BTreeMap<String, String>> {
        self.get_snapshot(id).await?;
        metadata::set(&self.db, MetaTable::Snapshot, id, items, replace_all).await
    }
}

/// The statements that insert a snapshot and its metadata.
fn insert_sql(s: &Snapshot) -> (Sql, Option<Sql>) {
    let mut sql = Sql::new(&format!("INSERT INTO snapshots ({COLUMNS}) VALUES "));
    let values: [Arg; 18] = [
        s.id.as_str().into(),
        s.project_id.as_str().into(),
        s.user_id.as_str().into(),
        s.volume_id.as_str().into(),
        s.volume_type_id.as_str().into(),
        s.name.clone().into(),
        s.description.clone().into(),
        s.volume_size.into(),
        s.status.as_str().into(),
        s.progress.clone().into(),
        s.provider_location.clone().into(),
        s.provider_id.clone().into(),
        s.group_snapshot_id.clone().into(),
        s.consumes_quota.into(),
        s.created_at.into(),
        s.updated_at.into(),
        s.deleted.into(),
        s.deleted_at.into(),
    ];
    sql.list(values);
    (sql, metadata::upsert_sql(MetaTable::Snapshot, &s.id, &s.metadata))
}
