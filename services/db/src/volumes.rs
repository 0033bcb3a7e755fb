//! The volume repository: rows, metadata, compare-and-swap updates and filtered lists.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;

use ember_common::model::{
    ListOptions, Snapshot, SnapshotChanges, SnapshotsExpect, SortKey, Volume, VolumeChanges, VolumeExpect,
    VolumeFilter,
};
use ember_common::repo::{MetadataKind, VolumeRepo};
use ember_common::{Error, ResourceKind, Result};

use crate::metadata::{self, MetaTable};
use crate::snapshots as snaps;
use crate::sql::{
    Arg, Dialect, Sets, Sql, bind_args, db_err, dt, execute, is_unique_violation, opt_dt, paginate, parse,
    with_tx,
};
use crate::{SqlRepo, with_pool};

const COLUMNS: &str = "id, project_id, user_id, name, description, size, status, attach_status, \
    migration_status, previous_status, availability_zone, host, cluster_name, volume_type_id, \
    snapshot_id, source_volid, backup_id, group_id, bootable, multiattach, encryption_key_id, \
    provider_location, provider_auth, provider_id, replication_status, service_uuid, shared_targets, \
    consumes_quota, created_at, updated_at, scheduled_at, launched_at, terminated_at, deleted, deleted_at";

/// The attach status a volume's live attachments give it (an SQL expression on `volumes`).
const ATTACH: &str = "COALESCE((SELECT MIN(a.attach_status) FROM volume_attachments a \
    WHERE a.volume_id = volumes.id AND a.deleted = FALSE \
    AND a.attach_status NOT IN ('error_attaching', 'error_detaching')), 'detached')";

/// A `volumes` row as stored.
#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    project_id: String,
    user_id: String,
    name: Option<String>,
    description: Option<String>,
    size: i64,
    status: String,
    attach_status: String,
    migration_status: Option<String>,
    previous_status: Option<String>,
    availability_zone: String,
    host: Option<String>,
    cluster_name: Option<String>,
    volume_type_id: String,
    snapshot_id: Option<String>,
    source_volid: Option<String>,
    backup_id: Option<String>,
    group_id: Option<String>,
    bootable: bool,
    multiattach: bool,
    encryption_key_id: Option<String>,
    provider_location: Option<String>,
    provider_auth: Option<String>,
    provider_id: Option<String>,
    replication_status: Option<String>,
    service_uuid: Option<String>,
    shared_targets: Option<bool>,
    consumes_quota: bool,
    created_at: i64,
    updated_at: Option<i64>,
    scheduled_at: Option<i64>,
    launched_at: Option<i64>,
    terminated_at: Option<i64>,
    deleted: bool,
    deleted_at: Option<i64>,
}

impl Row {
    fn into_model(self) -> Result<Volume> {
        Ok(Volume {
            status: parse(&self.status)?,
            attach_status: parse(&self.attach_status)?,
            created_at: dt(self.created_at)?,
            updated_at: opt_dt(self.updated_at)?,
            scheduled_at: opt_dt(self.scheduled_at)?,
            launched_at: opt_dt(self.launched_at)?,
            terminated_at: opt_dt(self.terminated_at)?,
            deleted_at: opt_dt(self.deleted_at)?,
            id: self.id,
            project_id: self.project_id,
            user_id: self.user_id,
            name: self.name,
            description: self.description,
            size: self.size,
            migration_status: self.migration_status,
            previous_status: self.previous_status,
            availability_zone: self.availability_zone,
            host: self.host,
            cluster_name: self.cluster_name,
            volume_type_id: self.volume_type_id,
            snapshot_id: self.snapshot_id,
            source_volid: self.source_volid,
            backup_id: self.backup_id,
            group_id: self.group_id,
            bootable: self.bootable,
            multiattach: self.multiattach,
            encryption_key_id: self.encryption_key_id,
            provider_location: self.provider_location,
            provider_auth: self.provider_auth,
            provider_id: self.provider_id,
            replication_status: self.replication_status,
            service_uuid: self.service_uuid,
            shared_targets: self.shared_targets,
            consumes_quota: self.consumes_quota,
            deleted: self.deleted,
            metadata: BTreeMap::new(),
            admin_metadata: BTreeMap::new(),
        })
    }
}

/// Every column of `v` with its value, in [`COLUMNS`] order.
fn insert_values(v: &Volume) -> Vec<Arg> {
    vec![
        v.id.as_str().into(),
        v.project_id.as_str().into(),
        v.user_id.as_str().into(),
        v.name.clone().into(),
        v.description.clone().into(),
        v.size.into(),
        v.status.as_str().into(),
        v.attach_status.as_str().into(),
        v.migration_status.clone().into(),
        v.previous_status.clone().into(),
        v.availability_zone.as_str().into(),
        v.host.clone().into(),
        v.cluster_name.clone().into(),
        v.volume_type_id.as_str().into(),
        v.snapshot_id.clone().into(),
        v.source_volid.clone().into(),
        v.backup_id.clone().into(),
        v.group_id.clone().into(),
        v.bootable.into(),
        v.multiattach.into(),
        v.encryption_key_id.clone().into(),
        v.provider_location.clone().into(),
        v.provider_auth.clone().into(),
        v.provider_id.clone().into(),
        v.replication_status.clone().into(),
        v.service_uuid.clone().into(),
        v.shared_targets.into(),
        v.consumes_quota.into(),
        v.created_at.into(),
        v.updated_at.into(),
        v.scheduled_at.into(),
        v.launched_at.into(),
        v.terminated_at.into(),
        v.deleted.into(),
        v.deleted_at.into(),
    ]
}

/// The SET list of `changes` (without `updated_at`).
fn change_sets(c: &VolumeChanges) -> Sets {
    let mut s = Sets::default();
    s.opt("status", c.status.map(|v| v.as_str()));
    s.opt("attach_status", c.attach_status.map(|v| v.as_str()));
    s.opt("previous_status", c.previous_status.clone());
    s.opt("migration_status", c.migration_status.clone());
    s.opt("name", c.name.clone());
    s.opt("description", c.description.clone());
    s.opt("size", c.size);
    s.opt("host", c.host.clone());
    s.opt("cluster_name", c.cluster_name.clone());
    s.opt("availability_zone", c.availability_zone.clone());
    s.opt("volume_type_id", c.volume_type_id.clone());
    s.opt("bootable", c.bootable);
    s.opt("multiattach", c.multiattach);
    s.opt("provider_location", c.provider_location.clone());
    s.opt("provider_auth", c.provider_auth.clone());
    s.opt("provider_id", c.provider_id.clone());
    s.opt("replication_status", c.replication_status.clone());
    s.opt("service_uuid", c.service_uuid.clone());
    s.opt("shared_targets", c.shared_targets);
    s.opt("scheduled_at", c.scheduled_at);
    s.opt("launched_at", c.launched_at);
    s.opt("terminated_at", c.terminated_at);
    s
}

/// The compare-and-swap UPDATE of one live volume, returning its new row.
fn update_sql(id: &str, expect: &VolumeExpect, changes: &VolumeChanges) -> Sql {
    let mut sql = Sql::new("UPDATE volumes SET updated_at = ");
    sql.arg(Utc::now());
    // SQL evaluates every right-hand side against the old row, so this copies the status
    // from before the update whatever the order of the assignments.
    if changes.previous_status_from_status {
        sql.push(", previous_status = status");
    }
    change_sets(changes).write(&mut sql, false);
    sql.push(" WHERE id = ").arg(id).push(" AND deleted = FALSE");
    push_expect(&mut sql, expect);
    sql.push(&format!(" RETURNING {COLUMNS}"));
    sql
}

/// Appends the conditions of `expect` to a statement already filtered by id.
fn push_expect(sql: &mut Sql, e: &VolumeExpect) {
    if let Some(statuses) = &e.status {
        sql.push(" AND status IN ");
        if statuses.is_empty() {
            sql.push("(NULL)");
        } else {
            sql.list(statuses.iter().map(|s| s.as_str()));
        }
    }
    if let Some(statuses) = &e.attach_status {
        sql.push(" AND attach_status IN ");
        if statuses.is_empty() {
            sql.push("(NULL)");
        } else {
            sql.list(statuses.iter().map(|s| s.as_str()));
        }
    }
    if let Some(items) = &e.migration_status {
        sql.and_in_nullable("migration_status", items);
    }
    if let Some(m) = e.multiattach {
        sql.push(" AND multiattach = ").arg(m);
    }
    for (column, value) in [("host", &e.host), ("group_id", &e.group_id)] {
        match value {
            Some(Some(v)) => {
                sql.push(" AND ").push(column).push(" = ").arg(v.as_str());
            }
            Some(None) => {
                sql.push(" AND ").push(column).push(" IS NULL");
            }
            None => {}
        }
    }
    if e.no_snapshots {
        sql.push(" AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.volume_id = volumes.id AND s.deleted = FALSE)");
    }
    if e.no_attachments {
        sql.push(
            " AND NOT EXISTS (SELECT 1 FROM volume_attachments a \
             WHERE a.volume_id = volumes.id AND a.deleted = FALSE)",
        );
    }
}

/// Appends the WHERE conditions of a list filter.
fn push_filter(sql: &mut Sql, f: &VolumeFilter) {
    sql.push(" WHERE 1 = 1");
    if !f.include_deleted {
        sql.push(" AND deleted = FALSE");
    }
    let text_eq = [
        ("project_id", &f.project_id),
        ("name", &f.name),
        ("availability_zone", &f.availability_zone),
        ("migration_status", &f.migration_status),
        ("host", &f.host),
        ("volume_type_id", &f.volume_type_id),
        ("group_id", &f.group_id),
    ];
    for (column, value) in text_eq {
        if let Some(v) = value {
            sql.push(" AND ").push(column).push(" = ").arg(v.as_str());
        }
    }
    if let Some(like) = &f.name_like {
        let pattern = format!("%{}%", like.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        sql.push(" AND name LIKE ").arg(pattern).push(" ESCAPE '\\'");
    }
    if let Some(s) = f.status {
        sql.push(" AND status = ").arg(s.as_str());
    }
    if let Some(b) = f.bootable {
        sql.push(" AND bootable = ").arg(b);
    }
    if let Some(size) = f.size {
        sql.push(" AND size = ").arg(size);
    }
    if let Some(q) = f.consumes_quota {
        sql.push(" AND consumes_quota = ").arg(q);
    }
    for (k, v) in &f.metadata {
        sql.push(" AND EXISTS (SELECT 1 FROM volume_metadata m WHERE m.volume_id = volumes.id AND m.key = ")
            .arg(k.as_str())
            .push(" AND m.value = ")
            .arg(v.as_str())
            .push(")");
    }
}

/// The column of a sort key, and the marker's value of it.
fn sort_column(key: SortKey, m: Option<&Volume>) -> Option<(&'static str, Option<Arg>)> {
    Some(match key {
        SortKey::CreatedAt => ("created_at", m.map(|v| v.created_at.into())),
        SortKey::UpdatedAt => {
            ("COALESCE(updated_at, 0)", m.map(|v| Arg::Int(Some(v.updated_at.map_or(0, crate::sql::ms)))))
        }
        SortKey::Id => ("id", m.map(|v| v.id.as_str().into())),
        SortKey::Name => ("COALESCE(name, '')", m.map(|v| v.name.clone().unwrap_or_default().into())),
        SortKey::Status => ("status", m.map(|v| v.status.as_str().into())),
        SortKey::Size => ("size", m.map(|v| v.size.into())),
        SortKey::AvailabilityZone => ("availability_zone", m.map(|v| v.availability_zone.as_str().into())),
        SortKey::Bootable => ("bootable", m.map(|v| v.bootable.into())),
    })
}

impl SqlRepo {
    async fn fetch_volumes(&self, sql: &Sql) -> Result<Vec<Volume>> {
        let rows: Vec<Row> =
            with_pool!(&self.db, |pool| bind_args!(sqlx::query_as::<_, Row>(&sql.text), &sql.args)
                .fetch_all(pool)
                .await)
            .map_err(db_err)?;
        let mut volumes = rows.into_iter().map(Row::into_model).collect::<Result<Vec<_>>>()?;
        self.attach_volume_metadata(&mut volumes).await?;
        Ok(volumes)
    }

    /// Loads the user and admin metadata of `volumes` with one query per kind.
    async fn attach_volume_metadata(&self, volumes: &mut [Volume]) -> Result<()> {
        if volumes.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = volumes.iter().map(|v| v.id.as_str()).collect();
        let mut user = metadata::load_many(&self.db, MetaTable::Volume, &ids).await?;
        let mut admin = metadata::load_many(&self.db, MetaTable::VolumeAdmin, &ids).await?;
        for v in volumes.iter_mut() {
            v.metadata = user.remove(&v.id).unwrap_or_default();
            v.admin_metadata = admin.remove(&v.id).unwrap_or_default();
        }
        Ok(())
    }

    /// The volume even when soft-deleted (for list markers), or not found.
    async fn volume_any(&self, id: &str) -> Result<Volume> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM volumes WHERE id = "));
        sql.arg(id);
        self.fetch_volumes(&sql).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Volume, id))
    }
}

#[async_trait]
impl VolumeRepo for SqlRepo {
    async fn create_volume(&self, volume: &Volume) -> Result<Volume> {
        let mut sql = Sql::new(&format!("INSERT INTO volumes ({COLUMNS}) VALUES "));
        sql.list(insert_values(volume));
        let user_meta = metadata::upsert_sql(MetaTable::Volume, &volume.id, &volume.metadata);
        let admin_meta = metadata::upsert_sql(MetaTable::VolumeAdmin, &volume.id, &volume.admin_metadata);
        let res: Result<()> = with_tx!(&self.db, |tx| {
            match bind_args!(sqlx::query(&sql.text), &sql.args).execute(&mut *tx).await {
                Err(e) if is_unique_violation(&e) => {
                    Err(Error::Duplicate { kind: ResourceKind::Volume, id: volume.id.clone() })
                }
                Err(e) => Err(db_err(e)),
                Ok(_) => {
                    let mut out = Ok(());
                    for meta in [&user_meta, &admin_meta].into_iter().flatten() {
                        if out.is_ok() {
                            out = bind_args!(sqlx::query(&meta.text), &meta.args)
                                .execute(&mut *tx)
                                .await
                                .map(|_| ())
                                .map_err(db_err);
                        }
                    }
                    out
                }
            }
        });
        res?;
        self.get_volume(&volume.id).await
    }

    async fn get_volume(&self, id: &str) -> Result<Volume> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM volumes WHERE deleted = FALSE AND id = "));
        sql.arg(id);
        self.fetch_volumes(&sql).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Volume, id))
    }

    async fn list_volumes(&self, filter: &VolumeFilter, opts: &ListOptions) -> Result<Vec<Volume>> {
        let marker = match &opts.marker {
            Some(id) => Some(self.volume_any(id).await?),
            None => None,
        };
        // A marker of another project than the listed one reads as an unknown id, so a
        // caller cannot tell which ids exist elsewhere.
        if let (Some(m), Some(project)) = (&marker, &filter.project_id)
            && m.project_id != *project
        {
            return Err(Error::not_found(ResourceKind::Volume, &m.id));
        }
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM volumes"));
        push_filter(&mut sql, filter);
        paginate(&mut sql, opts, marker.as_ref(), &sort_column, opts.marker.as_deref())?;
        self.fetch_volumes(&sql).await
    }

    async fn volume_summary(&self, filter: &VolumeFilter) -> Result<(i64, i64)> {
        let mut sql = Sql::new("SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM volumes");
        push_filter(&mut sql, filter);
        with_pool!(&self.db, |pool| bind_args!(sqlx::query_as::<_, (i64, i64)>(&sql.text), &sql.args)
            .fetch_one(pool)
            .await)
        .map_err(db_err)
    }

    async fn update_volume(
        &self,
        id: &str,
        expect: &VolumeExpect,
        changes: &VolumeChanges,
    ) -> Result<Option<Volume>> {
        let update = update_sql(id, expect, changes);
        if !expect.no_snapshots || Dialect::of(&self.db) == Dialect::Sqlite {
            return Ok(self.fetch_volumes(&update).await?.pop());
        }
        // "No snapshots" is a second table: on PostgreSQL the volume's row is locked first,
        // so a snapshot insert holding that lock (`create_snapshot_of`) has committed before
        // the UPDATE takes its snapshot of the data and sees it. One statement alone would
        // recheck only the row, not the subquery, and both would win. (SQLite serializes
        // writers already.)
        let mut lock = Sql::new("SELECT id FROM volumes WHERE id = ");
        lock.arg(id).push(Dialect::Postgres.for_update());
        let row: Result<Option<Row>> = with_tx!(&self.db, |tx| async {
            bind_args!(sqlx::query(&lock.text), &lock.args).execute(&mut *tx).await.map_err(db_err)?;
            bind_args!(sqlx::query_as::<_, Row>(&update.text), &update.args)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)
        }
        .await);
        let mut volumes = row?.map(Row::into_model).transpose()?.into_iter().collect::<Vec<_>>();
        self.attach_volume_metadata(&mut volumes).await?;
        Ok(volumes.pop())
    }

    async fn update_volume_cascade(
        &self,
        id: &str,
        expect: &VolumeExpect,
        changes: &VolumeChanges,
        snapshots: &SnapshotsExpect,
        snapshot_changes: &SnapshotChanges,
    ) -> Result<Option<(Volume, Vec<Snapshot>)>> {
        let mut held = Sql::new(&format!(
            "SELECT {} FROM snapshots WHERE deleted = FALSE AND volume_id = ",
            snaps::COLUMNS
        ));
        held.arg(id).push(" ORDER BY id").push(Dialect::of(&self.db).for_update());
        let volume = update_sql(id, expect, changes);
        let written: Result<Option<(Row, Vec<snaps::Row>)>> = with_tx!(&self.db, |tx| async {
            // The snapshots are read (and on PostgreSQL locked) before anything is written,
            // so a refusal leaves every row as it was.
            let rows: Vec<snaps::Row> = bind_args!(sqlx::query_as::<_, snaps::Row>(&held.text), &held.args)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            let current = rows.into_iter().map(snaps::Row::into_model).collect::<Result<Vec<_>>>()?;
            if !current.iter().all(|s| snapshots.matches(s)) {
                return Ok(None);
            }
            let row = bind_args!(sqlx::query_as::<_, Row>(&volume.text), &volume.args)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            let Some(row) = row else { return Ok(None) };
            if current.is_empty() {
                return Ok(Some((row, Vec::new())));
            }
            let mut update = Sql::new("UPDATE snapshots SET updated_at = ");
            update.arg(Utc::now());
            snaps::change_sets(snapshot_changes).write(&mut update, false);
            update.push(" WHERE deleted = FALSE AND id IN ").list(current.iter().map(|s| s.id.as_str()));
            update.push(&format!(" RETURNING {}", snaps::COLUMNS));
            let updated: Vec<snaps::Row> =
                bind_args!(sqlx::query_as::<_, snaps::Row>(&update.text), &update.args)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
            if updated.len() != current.len() {
                // Cannot happen under the locks; an error rolls the volume's swap back.
                return Err(Error::Storage(format!("volume {id}: snapshots changed during a cascade")));
            }
            Ok(Some((row, updated)))
        }
        .await);
        let Some((row, rows)) = written? else { return Ok(None) };
        let mut volumes = vec![row.into_model()?];
        self.attach_volume_metadata(&mut volumes).await?;
        let mut snapshots = rows.into_iter().map(snaps::Row::into_model).collect::<Result<Vec<_>>>()?;
        snapshots.sort_by(|a, b| a.id.cmp(&b.id));
        self.attach_snapshot_metadata(&mut snapshots).await?;
        Ok(volumes.pop().map(|v| (v, snapshots)))
    }

    async fn sync_attach_status(&self, id: &str) -> Result<Volume> {
        let mut sql = Sql::new("UPDATE volumes SET updated_at = ");
        sql.arg(Utc::now());
        sql.push(&format!(
            ", attach_status = {ATTACH}, status = CASE WHEN status = 'uploading' \
             OR migration_status IN ('migrating', 'starting', 'completing') THEN status \
             ELSE CASE {ATTACH} WHEN 'attached' THEN 'in-use' WHEN 'detached' THEN 'available' \
             ELSE {ATTACH} END END"
        ));
        sql.push(" WHERE deleted = FALSE AND id = ").arg(id);
        if execute(&self.db, &sql).await? == 0 {
            return Err(Error::not_found(ResourceKind::Volume, id));
        }
        self.get_volume(id).await
    }

    async fn soft_delete_volume(&self, id: &str, expect: &VolumeExpect) -> Result<bool> {
        let now = Utc::now();
        let mut sql = Sql::new("UPDATE volumes SET status = 'deleted', deleted = TRUE, deleted_at = ");
        sql.arg(now).push(", updated_at = ").arg(now).push(", terminated_at = COALESCE(terminated_at, ");
        sql.arg(now).push(") WHERE id = ").arg(id).push(" AND deleted = FALSE");
        push_expect(&mut sql, expect);
        let done = with_pool!(&self.db, |pool| bind_args!(sqlx::query(&sql.text), &sql.args)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(db_err)?;
        Ok(done == 1)
    }

    async fn set_volume_metadata(
        &self,
        id: &str,
        kind: MetadataKind,
        items: &BTreeMap<String, String>,
        replace_all: bool,
    ) -> Result<BTreeMap<String, String>> {
        self.get_volume(id).await?;
        let table = match kind {
            MetadataKind::User => MetaTable::Volume,
            MetadataKind::Admin => MetaTable::VolumeAdmin,
        };
        metadata::set(&self.db, table, id, items, replace_all).await
    }

    async fn delete_volume_metadata(&self, id: &str, kind: MetadataKind, key: &str) -> Result<bool> {
        let table = match kind {
            MetadataKind::User => MetaTable::Volume,
            MetadataKind::Admin => MetaTable::VolumeAdmin,
        };
        metadata::delete(&self.db, table, id, key).await
    }
}
