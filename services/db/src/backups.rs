//! The backup repository: rows, the dependent count of incremental chains, compare-and-swap
//! updates and lists.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;

use ember_common::model::{Backup, BackupChanges, BackupFilter, BackupStatus, ListOptions, SortKey};
use ember_common::repo::BackupRepo;
use ember_common::{Error, ResourceKind, Result};

use crate::sql::{
    Arg, Sets, Sql, bind_args, cas_sql, db_err, dt, is_unique_violation, ms, opt_dt, paginate, parse, with_tx,
};
use crate::{SqlRepo, with_pool};

const COLUMNS: &str = "id, project_id, user_id, volume_id, snapshot_id, name, description, status, \
    fail_reason, size, object_count, availability_zone, container, host, service, parent_id, \
    num_dependent_backups, data_timestamp, restore_volume_id, temp_volume_id, temp_snapshot_id, \
    encryption_key_id, service_metadata, metadata, created_at, updated_at, deleted, deleted_at";

/// A `backups` row as stored.
#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    project_id: String,
    user_id: String,
    volume_id: String,
    snapshot_id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    status: String,
    fail_reason: Option<String>,
    size: i64,
    object_count: i64,
    availability_zone: Option<String>,
    container: Option<String>,
    host: Option<String>,
    service: Option<String>,
    parent_id: Option<String>,
    num_dependent_backups: i64,
    data_timestamp: Option<i64>,
    restore_volume_id: Option<String>,
    temp_volume_id: Option<String>,
    temp_snapshot_id: Option<String>,
    encryption_key_id: Option<String>,
    service_metadata: Option<String>,
    metadata: String,
    created_at: i64,
    updated_at: Option<i64>,
    deleted: bool,
    deleted_at: Option<i64>,
}

impl Row {
    fn into_model(self) -> Result<Backup> {
        let metadata: BTreeMap<String, String> = serde_json::from_str(&self.metadata)
            .map_err(|e| Error::Storage(format!("metadata of backup {}: {e}", self.id)))?;
        Ok(Backup {
            status: parse(&self.status)?,
            data_timestamp: opt_dt(self.data_timestamp)?,
            created_at: dt(self.created_at)?,
            updated_at: opt_dt(self.updated_at)?,
            deleted_at: opt_dt(self.deleted_at)?,
            metadata,
            id: self.id,
            project_id: self.project_id,
            user_id: self.user_id,
            volume_id: self.volume_id,
            snapshot_id: self.snapshot_id,
            name: self.name,
            description: self.description,
            fail_reason: self.fail_reason,
            size: self.size,
            object_count: self.object_count,
            availability_zone: self.availability_zone,
            container: self.container,
            host: self.host,
            service: self.service,
            parent_id: self.parent_id,
            num_dependent_backups: self.num_dependent_backups,
            restore_volume_id: self.restore_volume_id,
            temp_volume_id: self.temp_volume_id,
            temp_snapshot_id: self.temp_snapshot_id,
            encryption_key_id: self.encryption_key_id,
            service_metadata: self.service_metadata,
            deleted: self.deleted,
        })
    }
}

fn insert_values(b: &Backup) -> Result<[Arg; 28]> {
    let metadata = serde_json::to_string(&b.metadata).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok([
        b.id.as_str().into(),
        b.project_id.as_str().into(),
        b.user_id.as_str().into(),
        b.volume_id.as_str().into(),
        b.snapshot_id.clone().into(),
        b.name.clone().into(),
        b.description.clone().into(),
        b.status.as_str().into(),
        b.fail_reason.clone().into(),
        b.size.into(),
        b.object_count.into(),
        b.availability_zone.clone().into(),
        b.container.clone().into(),
        b.host.clone().into(),
        b.service.clone().into(),
        b.parent_id.clone().into(),
        b.num_dependent_backups.into(),
        b.data_timestamp.into(),
        b.restore_volume_id.clone().into(),
        b.temp_volume_id.clone().into(),
        b.temp_snapshot_id.clone().into(),
        b.encryption_key_id.clone().into(),
        b.service_metadata.clone().into(),
        metadata.into(),
        b.created_at.into(),
        b.updated_at.into(),
        b.deleted.into(),
        b.deleted_at.into(),
    ])
}

fn sort_column(key: SortKey, m: Option<&Backup>) -> Option<(&'static str, Option<Arg>)> {
    Some(match key {
        SortKey::CreatedAt => ("created_at", m.map(|b| b.created_at.into())),
        SortKey::UpdatedAt => {
            ("COALESCE(updated_at, 0)", m.map(|b| Arg::Int(Some(b.updated_at.map_or(0, ms)))))
        }
        SortKey::Id => ("id", m.map(|b| b.id.as_str().into())),
        SortKey::Name => ("COALESCE(name, '')", m.map(|b| b.name.clone().unwrap_or_default().into())),
        SortKey::Status => ("status", m.map(|b| b.status.as_str().into())),
        SortKey::Size => ("size", m.map(|b| b.size.into())),
        SortKey::AvailabilityZone => (
            "COALESCE(availability_zone, '')",
            m.map(|b| b.availability_zone.clone().unwrap_or_default().into()),
        ),
        SortKey::Bootable => return None,
    })
}

impl SqlRepo {
    async fn fetch_backups(&self, sql: &Sql) -> Result<Vec<Backup>> {
        let rows: Vec<Row> =
            with_pool!(&self.db, |pool| bind_args!(sqlx::query_as::<_, Row>(&sql.text), &sql.args)
                .fetch_all(pool)
                .await)
            .map_err(db_err)?;
        rows.into_iter().map(Row::into_model).collect()
    }

    async fn backup_where(&self, live_only: bool, id: &str) -> Result<Backup> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM backups WHERE id = "));
        sql.arg(id);
        if live_only {
            sql.push(" AND deleted = FALSE");
        }
        self.fetch_backups(&sql).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Backup, id))
    }
}

#[async_trait]
impl BackupRepo for SqlRepo {
    async fn create_backup(&self, b: &Backup) -> Result<Backup> {
        let mut sql = Sql::new(&format!("INSERT INTO backups ({COLUMNS}) VALUES "));
        sql.list(insert_values(b)?);
        let mut parent =
            Sql::new("UPDATE backups SET num_dependent_backups = num_dependent_backups + 1 WHERE id = ");
        parent.arg(b.parent_id.clone()).push(" AND deleted = FALSE");
        let res: Result<()> = with_tx!(&self.db, |tx| {
            match bind_args!(sqlx::query(&sql.text), &sql.args).execute(&mut *tx).await {
                Err(e) if is_unique_violation(&e) => {
                    Err(Error::Duplicate { kind: ResourceKind::Backup, id: b.id.clone() })
                }
                Err(e) => Err(db_err(e)),
                Ok(_) if b.parent_id.is_some() => {
                    match bind_args!(sqlx::query(&parent.text), &parent.args).execute(&mut *tx).await {
                        Ok(r) if r.rows_affected() == 1 => Ok(()),
                        Ok(_) => Err(Error::not_found(
                            ResourceKind::Backup,
                            b.parent_id.clone().unwrap_or_default(),
                        )),
                        Err(e) => Err(db_err(e)),
                    }
                }
                Ok(_) => Ok(()),
            }
        });
        res?;
        self.get_backup(&b.id).await
    }

    async fn get_backup(&self, id: &str) -> Result<Backup> {
        self.backup_where(true, id).await
    }

    async fn list_backups(&self, f: &BackupFilter, opts: &ListOptions) -> Result<Vec<Backup>> {
        let marker = match &opts.marker {
            Some(id) => Some(self.backup_where(false, id).await?),
            None => None,
        };
        // A marker of another project than the listed one reads as an unknown id, so a
        // caller cannot tell which ids exist elsewhere.
        if let (Some(m), Some(project)) = (&marker, &f.project_id)
            && m.project_id != *project
        {
            return Err(Error::not_found(ResourceKind::Backup, &m.id));
        }
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM backups WHERE deleted = FALSE"));
        for (column, value) in [("project_id", &f.project_id), ("name", &f.name), ("volume_id", &f.volume_id)]
        {
            if let Some(v) = value {
                sql.push(" AND ").push(column).push(" = ").arg(v.as_str());
            }
        }
        if let Some(st) = f.status {
            sql.push(" AND status = ").arg(st.as_str());
        }
        paginate(&mut sql, opts, marker.as_ref(), &sort_column, opts.marker.as_deref())?;
        self.fetch_backups(&sql).await
    }

    async fn update_backup(
        &self,
        id: &str,
        expected: &[BackupStatus],
        c: &BackupChanges,
    ) -> Result<Option<Backup>> {
        let mut sets = Sets::default();
        sets.opt("status", c.status.map(|s| s.as_str()));
        sets.opt("fail_reason", c.fail_reason.clone());
        sets.opt("name", c.name.clone());
        sets.opt("description", c.description.clone());
        sets.opt("object_count", c.object_count);
        sets.opt("container", c.container.clone());
        sets.opt("host", c.host.clone());
        sets.opt("service", c.service.clone());
        sets.opt("restore_volume_id", c.restore_volume_id.clone());
        sets.opt("temp_volume_id", c.temp_volume_id.clone());
        sets.opt("temp_snapshot_id", c.temp_snapshot_id.clone());
        sets.opt("service_metadata", c.service_metadata.clone());
        sets.opt("data_timestamp", c.data_timestamp);
        if let Some(m) = &c.metadata {
            sets.opt("metadata", Some(serde_json::to_string(m).map_err(|e| Error::Invalid(e.to_string()))?));
        }
        let expected: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
        let sql = cas_sql("backups", "status", id, &expected, sets, COLUMNS);
        Ok(self.fetch_backups(&sql).await?.pop())
    }

    async fn soft_delete_backup(&self, id: &str, expected: &[BackupStatus]) -> Result<bool> {
        let now = Utc::now();
        let mut sql = Sql::new("UPDATE backups SET status = 'deleted', deleted = TRUE, deleted_at = ");
        sql.arg(now).push(", updated_at = ").arg(now);
        sql.push(" WHERE deleted = FALSE AND num_dependent_backups = 0 AND id = ").arg(id);
        if !expected.is_empty() {
            sql.push(" AND status IN ").list(expected.iter().map(|s| s.as_str()));
        }
        sql.push(" RETURNING parent_id");
        let mut parent =
            Sql::new("UPDATE backups SET num_dependent_backups = num_dependent_backups - 1 WHERE id = ");
        let res: Result<bool> = with_tx!(&self.db, |tx| {
            let deleted = bind_args!(sqlx::query_scalar::<_, Option<String>>(&sql.text), &sql.args)
                .fetch_optional(&mut *tx)
                .await;
            match deleted {
                Err(e) => Err(db_err(e)),
                Ok(None) => Ok(false),
                Ok(Some(None)) => Ok(true),
                Ok(Some(Some(parent_id))) => {
                    parent.arg(parent_id).push(" AND num_dependent_backups > 0");
                    bind_args!(sqlx::query(&parent.text), &parent.args)
                        .execute(&mut *tx)
                        .await
                        .map(|_| true)
                        .map_err(db_err)
                }
            }
        });
        res
    }
}
