//! The attachment repository: rows, compare-and-swap updates and per-volume lists.

use async_trait::async_trait;
use chrono::Utc;

use ember_common::model::{
    AttachStatus, AttachmentChanges, AttachmentFilter, ListOptions, SortKey, VolumeAttachment,
};
use ember_common::repo::AttachmentRepo;
use ember_common::{Error, ResourceKind, Result};

use crate::sql::{
    Arg, Sets, Sql, bind_args, cas_sql, db_err, dt, execute, is_unique_violation, ms, opt_dt, paginate, parse,
};
use crate::{SqlRepo, with_pool};

const COLUMNS: &str = "id, volume_id, project_id, instance_uuid, attached_host, mountpoint, attach_mode, \
    attach_status, connector, connection_info, attached_at, detached_at, created_at, updated_at, deleted, \
    deleted_at";

/// A `volume_attachments` row as stored.
#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    volume_id: String,
    project_id: String,
    instance_uuid: Option<String>,
    attached_host: Option<String>,
    mountpoint: Option<String>,
    attach_mode: String,
    attach_status: String,
    connector: Option<String>,
    connection_info: Option<String>,
    attached_at: Option<i64>,
    detached_at: Option<i64>,
    created_at: i64,
    updated_at: Option<i64>,
    deleted: bool,
    deleted_at: Option<i64>,
}

fn json_in(id: &str, text: Option<String>) -> Result<Option<serde_json::Value>> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| Error::Storage(format!("attachment {id}: {e}"))))
        .transpose()
}

fn json_out(value: &Option<serde_json::Value>) -> Option<String> {
    value.as_ref().map(serde_json::Value::to_string)
}

impl Row {
    fn into_model(self) -> Result<VolumeAttachment> {
        Ok(VolumeAttachment {
            attach_status: parse(&self.attach_status)?,
            connector: json_in(&self.id, self.connector)?,
            connection_info: json_in(&self.id, self.connection_info)?,
            attached_at: opt_dt(self.attached_at)?,
            detached_at: opt_dt(self.detached_at)?,
            created_at: dt(self.created_at)?,
            updated_at: opt_dt(self.updated_at)?,
            deleted_at: opt_dt(self.deleted_at)?,
            id: self.id,
            volume_id: self.volume_id,
            project_id: self.project_id,
            instance_uuid: self.instance_uuid,
            attached_host: self.attached_host,
            mountpoint: self.mountpoint,
            attach_mode: self.attach_mode,
            deleted: self.deleted,
        })
    }
}

/// The columns an attachment list sorts by; attachments have no name, size, zone or
/// bootable flag.
fn sort_column(key: SortKey, m: Option<&VolumeAttachment>) -> Option<(&'static str, Option<Arg>)> {
    Some(match key {
        SortKey::CreatedAt => ("created_at", m.map(|a| a.created_at.into())),
        SortKey::UpdatedAt => {
            ("COALESCE(updated_at, 0)", m.map(|a| Arg::Int(Some(a.updated_at.map_or(0, ms)))))
        }
        SortKey::Id => ("id", m.map(|a| a.id.as_str().into())),
        SortKey::Status => ("attach_status", m.map(|a| a.attach_status.as_str().into())),
        SortKey::Name | SortKey::Size | SortKey::AvailabilityZone | SortKey::Bootable => return None,
    })
}

impl SqlRepo {
    async fn fetch_attachments(&self, sql: &Sql) -> Result<Vec<VolumeAttachment>> {
        let rows: Vec<Row> =
            with_pool!(&self.db, |pool| bind_args!(sqlx::query_as::<_, Row>(&sql.text), &sql.args)
                .fetch_all(pool)
                .await)
            .map_err(db_err)?;
        rows.into_iter().map(Row::into_model).collect()
    }
}

#[async_trait]
impl AttachmentRepo for SqlRepo {
    async fn create_attachment(&self, a: &VolumeAttachment) -> Result<VolumeAttachment> {
        let mut sql = Sql::new(&format!("INSERT INTO volume_attachments ({COLUMNS}) VALUES "));
        let values: [Arg; 16] = [
            a.id.as_str().into(),
            a.volume_id.as_str().into(),
            a.project_id.as_str().into(),
            a.instance_uuid.clone().into(),
            a.attached_host.clone().into(),
            a.mountpoint.clone().into(),
            a.attach_mode.as_str().into(),
            a.attach_status.as_str().into(),
            json_out(&a.connector).into(),
            json_out(&a.connection_info).into(),
            a.attached_at.into(),
            a.detached_at.into(),
            a.created_at.into(),
            a.updated_at.into(),
            a.deleted.into(),
            a.deleted_at.into(),
        ];
        sql.list(values);
        let res = with_pool!(&self.db, |pool| bind_args!(sqlx::query(&sql.text), &sql.args)
            .execute(pool)
            .await
            .map(|_| ()));
        match res {
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Duplicate { kind: ResourceKind::Attachment, id: a.id.clone() });
            }
            Err(e) => return Err(db_err(e)),
            Ok(_) => {}
        }
        self.get_attachment(&a.id).await
    }

    async fn get_attachment(&self, id: &str) -> Result<VolumeAttachment> {
        let mut sql =
            Sql::new(&format!("SELECT {COLUMNS} FROM volume_attachments WHERE deleted = FALSE AND id = "));
        sql.arg(id);
        self.fetch_attachments(&sql)
            .await?
            .pop()
            .ok_or_else(|| Error::not_found(ResourceKind::Attachment, id))
    }

    async fn list_attachments(
        &self,
        volume_id: Option<&str>,
        project_id: Option<&str>,
    ) -> Result<Vec<VolumeAttachment>> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM volume_attachments WHERE deleted = FALSE"));
        for (column, value) in [("volume_id", volume_id), ("project_id", project_id)] {
            if let Some(v) = value {
                sql.push(" AND ").push(column).push(" = ").arg(v);
            }
        }
        sql.push(" ORDER BY created_at, id");
        self.fetch_attachments(&sql).await
    }

    async fn list_attachments_by(
        &self,
        f: &AttachmentFilter,
        opts: &ListOptions,
    ) -> Result<Vec<VolumeAttachment>> {
        // The marker may have been deleted since the page that named it was read.
        let marker = match &opts.marker {
            Some(id) => {
                let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM volume_attachments WHERE id = "));
                sql.arg(id.as_str());
                let found = self.fetch_attachments(&sql).await?.pop();
                Some(found.ok_or_else(|| Error::not_found(ResourceKind::Attachment, id))?)
            }
            None => None,
        };
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM volume_attachments WHERE deleted = FALSE"));
        let text_eq =
            [("project_id", &f.project_id), ("volume_id", &f.volume_id), ("instance_uuid", &f.instance_uuid)];
        for (column, value) in text_eq {
            if let Some(v) = value {
                sql.push(" AND ").push(column).push(" = ").arg(v.as_str());
            }
        }
        if let Some(status) = f.attach_status {
            sql.push(" AND attach_status = ").arg(status.as_str());
        }
        paginate(&mut sql, opts, marker.as_ref(), &sort_column, opts.marker.as_deref())?;
        self.fetch_attachments(&sql).await
    }

    async fn update_attachment(
        &self,
        id: &str,
        expected: &[AttachStatus],
        c: &AttachmentChanges,
    ) -> Result<Option<VolumeAttachment>> {
        let mut sets = Sets::default();
        sets.opt("attach_status", c.attach_status.map(|s| s.as_str()));
        sets.opt("attached_host", c.attached_host.clone());
        sets.opt("mountpoint", c.mountpoint.clone());
        sets.opt("attach_mode", c.attach_mode.clone());
        sets.opt("connector", c.connector.as_ref().map(json_out));
        sets.opt("connection_info", c.connection_info.as_ref().map(json_out));
        sets.opt("attached_at", c.attached_at);
        sets.opt("detached_at", c.detached_at);
        let expected: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
        let sql = cas_sql("volume_attachments", "attach_status", id, &expected, sets, COLUMNS);
        Ok(self.fetch_attachments(&sql).await?.pop())
    }

    async fn soft_delete_attachment(&self, id: &str) -> Result<bool> {
        let now = Utc::now();
        let mut sql = Sql::new(
            "UPDATE volume_attachments SET attach_status = 'deleted', deleted = TRUE, deleted_at = ",
        );
        sql.arg(now).push(", updated_at = ").arg(now).push(", detached_at = COALESCE(detached_at, ").arg(now);
        sql.push(") WHERE deleted = FALSE AND id = ").arg(id);
        Ok(execute(&self.db, &sql).await? == 1)
    }
}
