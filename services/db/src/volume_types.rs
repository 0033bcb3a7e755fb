//! The volume type repository: types, extra specs and the in-use guard on delete.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;

use ember_common::model::VolumeType;
use ember_common::repo::VolumeTypeRepo;
use ember_common::{Error, ResourceKind, Result};

use crate::metadata::{self, MetaTable};
use crate::sql::{Sets, Sql, bind_args, db_err, dt, execute, is_unique_violation, opt_dt, with_tx};
use crate::{SqlRepo, with_pool};

const COLUMNS: &str =
    "id, name, description, is_public, qos_specs_id, created_at, updated_at, deleted, deleted_at";

/// A `volume_types` row as stored.
#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    name: String,
    description: Option<String>,
    is_public: bool,
    qos_specs_id: Option<String>,
    created_at: i64,
    updated_at: Option<i64>,
    deleted: bool,
    deleted_at: Option<i64>,
}

impl Row {
    fn into_model(self) -> Result<VolumeType> {
        Ok(VolumeType {
            created_at: dt(self.created_at)?,
            updated_at: opt_dt(self.updated_at)?,
            deleted_at: opt_dt(self.deleted_at)?,
            id: self.id,
            name: self.name,
            description: self.description,
            is_public: self.is_public,
            qos_specs_id: self.qos_specs_id,
            deleted: self.deleted,
            extra_specs: BTreeMap::new(),
        })
    }
}

impl SqlRepo {
    async fn fetch_types(&self, sql: &Sql) -> Result<Vec<VolumeType>> {
        let rows: Vec<Row> =
            with_pool!(&self.db, |pool| bind_args!(sqlx::query_as::<_, Row>(&sql.text), &sql.args)
                .fetch_all(pool)
                .await)
            .map_err(db_err)?;
        let mut types = rows.into_iter().map(Row::into_model).collect::<Result<Vec<_>>>()?;
        if !types.is_empty() {
            let ids: Vec<&str> = types.iter().map(|t| t.id.as_str()).collect();
            let mut specs = metadata::load_many(&self.db, MetaTable::ExtraSpecs, &ids).await?;
            for t in &mut types {
                t.extra_specs = specs.remove(&t.id).unwrap_or_default();
            }
        }
        Ok(types)
    }

    async fn fetch_one_type(&self, column: &str, value: &str) -> Result<VolumeType> {
        let mut sql =
            Sql::new(&format!("SELECT {COLUMNS} FROM volume_types WHERE deleted = FALSE AND {column} = "));
        sql.arg(value);
        self.fetch_types(&sql).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::VolumeType, value))
    }
}

#[async_trait]
impl VolumeTypeRepo for SqlRepo {
    async fn create_volume_type(&self, vt: &VolumeType) -> Result<VolumeType> {
        let mut sql = Sql::new(&format!("INSERT INTO volume_types ({COLUMNS}) VALUES "));
        sql.list([
            vt.id.as_str().into(),
            vt.name.as_str().into(),
            vt.description.clone().into(),
            vt.is_public.into(),
            vt.qos_specs_id.clone().into(),
            vt.created_at.into(),
            vt.updated_at.into(),
            vt.deleted.into(),
            vt.deleted_at.into(),
        ] as [crate::sql::Arg; 9]);
        let specs = metadata::upsert_sql(MetaTable::ExtraSpecs, &vt.id, &vt.extra_specs);
        let res: Result<()> = with_tx!(&self.db, |tx| {
            match bind_args!(sqlx::query(&sql.text), &sql.args).execute(&mut *tx).await {
                Err(e) if is_unique_violation(&e) => {
                    Err(Error::Duplicate { kind: ResourceKind::VolumeType, id: vt.name.clone() })
                }
                Err(e) => Err(db_err(e)),
                Ok(_) => match &specs {
                    Some(s) => bind_args!(sqlx::query(&s.text), &s.args)
                        .execute(&mut *tx)
                        .await
                        .map(|_| ())
                        .map_err(db_err),
                    None => Ok(()),
                },
            }
        });
        res?;
        self.get_volume_type(&vt.id).await
    }

    async fn get_volume_type(&self, id: &str) -> Result<VolumeType> {
        self.fetch_one_type("id", id).await
    }

    async fn get_volume_type_by_name(&self, name: &str) -> Result<VolumeType> {
        self.fetch_one_type("name", name).await
    }

    async fn list_volume_types(&self, visible_to: Option<&str>) -> Result<Vec<VolumeType>> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM volume_types WHERE deleted = FALSE"));
        if let Some(project) = visible_to {
            sql.push(" AND (is_public = ").arg(true);
            sql.push(
                " OR EXISTS (SELECT 1 FROM volume_type_projects p WHERE p.volume_type_id = volume_types.id",
            );
            sql.push(" AND p.project_id = ").arg(project).push("))");
        }
        sql.push(" ORDER BY name, id");
        self.fetch_types(&sql).await
    }

    async fn add_volume_type_access(&self, id: &str, project_id: &str) -> Result<()> {
        self.get_volume_type(id).await?;
        let mut sql = Sql::new("INSERT INTO volume_type_projects (volume_type_id, project_id) VALUES ");
        sql.list([id, project_id]);
        let res = with_pool!(&self.db, |pool| bind_args!(sqlx::query(&sql.text), &sql.args)
            .execute(pool)
            .await
            .map(|_| ()));
        match res {
            Err(e) if is_unique_violation(&e) => Err(Error::Duplicate {
                kind: ResourceKind::VolumeType,
                id: format!("{id} access for {project_id}"),
            }),
            other => other.map_err(db_err),
        }
    }

    async fn remove_volume_type_access(&self, id: &str, project_id: &str) -> Result<bool> {
        let mut sql = Sql::new("DELETE FROM volume_type_projects WHERE volume_type_id = ");
        sql.arg(id).push(" AND project_id = ").arg(project_id);
        Ok(execute(&self.db, &sql).await? == 1)
    }

    async fn volume_type_access(&self, id: &str) -> Result<Vec<String>> {
        let mut sql = Sql::new("SELECT project_id FROM volume_type_projects WHERE volume_type_id = ");
        sql.arg(id).push(" ORDER BY project_id");
        with_pool!(&self.db, |pool| bind_args!(sqlx::query_scalar::<_, String>(&sql.text), &sql.args)
            .fetch_all(pool)
            .await)
        .map_err(db_err)
    }

    async fn update_volume_type(
        &self,
        id: &str,
        name: Option<&str>,
        description: Option<Option<&str>>,
        is_public: Option<bool>,
    ) -> Result<VolumeType> {
        let mut sets = Sets::default();
        sets.opt("name", name);
        sets.opt("description", description.map(|d| d.map(String::from)));
        sets.opt("is_public", is_public);
        let mut sql = Sql::new("UPDATE volume_types SET updated_at = ");
        sql.arg(Utc::now());
        sets.write(&mut sql, false);
        sql.push(" WHERE deleted = FALSE AND id = ").arg(id);
        let res = with_pool!(&self.db, |pool| bind_args!(sqlx::query(&sql.text), &sql.args)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()));
        match res {
            Err(e) if is_unique_violation(&e) => Err(Error::Duplicate {
                kind: ResourceKind::VolumeType,
                id: name.unwrap_or_default().to_owned(),
            }),
            Err(e) => Err(db_err(e)),
            Ok(0) => Err(Error::not_found(ResourceKind::VolumeType, id)),
            Ok(_) => self.get_volume_type(id).await,
        }
    }

    async fn delete_volume_type(&self, id: &str) -> Result<()> {
        let now = Utc::now();
        // The in-use check and the delete are one statement, not a read and then a write.
        let mut sql = Sql::new("UPDATE volume_types SET deleted = TRUE, deleted_at = ");
        sql.arg(now).push(", updated_at = ").arg(now).push(" WHERE deleted = FALSE AND id = ").arg(id);
        sql.push(" AND NOT EXISTS (SELECT 1 FROM volumes v WHERE v.volume_type_id = ")
            .arg(id)
            .push(" AND v.deleted = FALSE)");
        let n = with_pool!(&self.db, |pool| bind_args!(sqlx::query(&sql.text), &sql.args)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(db_err)?;
        if n == 1 {
            return Ok(());
        }
        self.get_volume_type(id).await?;
        Err(Error::Invalid(format!("volume type {id} is in use by a volume")))
    }

    async fn set_extra_specs(&self, id: &str, specs: &BTreeMap<String, String>) -> Result<()> {
        self.get_volume_type(id).await?;
        metadata::set(&self.db, MetaTable::ExtraSpecs, id, specs, false).await.map(|_| ())
    }

    async fn delete_extra_spec(&self, id: &str, key: &str) -> Result<bool> {
        metadata::delete(&self.db, MetaTable::ExtraSpecs, id, key).await
    }

    async fn volume_type_in_use(&self, id: &str) -> Result<bool> {
        let mut sql = Sql::new("SELECT COUNT(*) FROM volumes WHERE deleted = FALSE AND volume_type_id = ");
        sql.arg(id);
        let n: i64 =
            with_pool!(&self.db, |pool| bind_args!(sqlx::query_scalar::<_, i64>(&sql.text), &sql.args)
                .fetch_one(pool)
                .await)
            .map_err(db_err)?;
        Ok(n > 0)
    }
}
