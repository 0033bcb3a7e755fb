//! The service repository: registration, heartbeats and the enabled/disabled switch.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use ember_common::model::{Service, ServiceFilter};
use ember_common::repo::ServiceRepo;
use ember_common::{Error, ResourceKind, Result};

use crate::sql::{Arg, Sql, bind_args, db_err, dt, execute};
use crate::{SqlRepo, with_pool};

const COLUMNS: &str = "id, host, \"binary\", topic, availability_zone, disabled, disabled_reason, frozen, \
    cluster_name, report_count, version, rpc_current_version, heartbeat_at, created_at";

/// A `services` row as stored.
#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    host: String,
    binary: String,
    topic: String,
    availability_zone: String,
    disabled: bool,
    disabled_reason: Option<String>,
    frozen: bool,
    cluster_name: Option<String>,
    report_count: i64,
    version: String,
    rpc_current_version: Option<String>,
    heartbeat_at: i64,
    created_at: i64,
}

impl Row {
    fn into_model(self) -> Result<Service> {
        Ok(Service {
            heartbeat_at: dt(self.heartbeat_at)?,
            created_at: dt(self.created_at)?,
            id: self.id,
            host: self.host,
            binary: self.binary,
            topic: self.topic,
            availability_zone: self.availability_zone,
            disabled: self.disabled,
            disabled_reason: self.disabled_reason,
            frozen: self.frozen,
            cluster_name: self.cluster_name,
            report_count: self.report_count,
            version: self.version,
            rpc_current_version: self.rpc_current_version,
        })
    }
}

impl SqlRepo {
    async fn fetch_services(&self, sql: &Sql) -> Result<Vec<Service>> {
        let rows: Vec<Row> =
            with_pool!(&self.db, |pool| bind_args!(sqlx::query_as::<_, Row>(&sql.text), &sql.args)
                .fetch_all(pool)
                .await)
            .map_err(db_err)?;
        rows.into_iter().map(Row::into_model).collect()
    }
}

#[async_trait]
impl ServiceRepo for SqlRepo {
    async fn register_service(&self, s: &Service) -> Result<Service> {
        let mut sql = Sql::new(&format!("INSERT INTO services ({COLUMNS}) VALUES "));
        let values: [Arg; 14] = [
            s.id.as_str().into(),
            s.host.as_str().into(),
            s.binary.as_str().into(),
            s.topic.as_str().into(),
            s.availability_zone.as_str().into(),
            s.disabled.into(),
            s.disabled_reason.clone().into(),
            s.frozen.into(),
            s.cluster_name.clone().into(),
            s.report_count.into(),
            s.version.as_str().into(),
            s.rpc_current_version.clone().into(),
            s.heartbeat_at.into(),
            s.created_at.into(),
        ];
        sql.list(values);
        // A restarted service keeps its row, id and the operator's disabled flag.
        sql.push(
            " ON CONFLICT (host, \"binary\") DO UPDATE SET topic = excluded.topic, \
             availability_zone = excluded.availability_zone, version = excluded.version, \
             rpc_current_version = excluded.rpc_current_version, cluster_name = excluded.cluster_name, \
             heartbeat_at = excluded.heartbeat_at",
        );
        execute(&self.db, &sql).await?;
        self.get_service(&s.host, &s.binary).await
    }

    async fn heartbeat(&self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        let mut sql = Sql::new("UPDATE services SET report_count = report_count + 1, heartbeat_at = ");
        sql.arg(now).push(" WHERE id = ").arg(id);
        Ok(execute(&self.db, &sql).await? == 1)
    }

    async fn get_service(&self, host: &str, binary: &str) -> Result<Service> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM services WHERE host = "));
        sql.arg(host).push(" AND \"binary\" = ").arg(binary);
        self.fetch_services(&sql)
            .await?
            .pop()
            .ok_or_else(|| Error::not_found(ResourceKind::Service, format!("{binary} on {host}")))
    }

    async fn list_services(&self, f: &ServiceFilter) -> Result<Vec<Service>> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM services WHERE 1 = 1"));
        for (column, value) in [("host", &f.host), ("\"binary\"", &f.binary), ("topic", &f.topic)] {
            if let Some(v) = value {
                sql.push(" AND ").push(column).push(" = ").arg(v.as_str());
            }
        }
        if let Some(d) = f.disabled {
            sql.push(" AND disabled = ").arg(d);
        }
        sql.push(" ORDER BY host, \"binary\"");
        self.fetch_services(&sql).await
    }

    async fn set_service_disabled(
        &self,
        host: &str,
        binary: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> Result<bool> {
        let mut sql = Sql::new("UPDATE services SET disabled = ");
        sql.arg(disabled).push(", disabled_reason = ").arg(reason.map(String::from));
        sql.push(" WHERE host = ").arg(host).push(" AND \"binary\" = ").arg(binary);
        Ok(execute(&self.db, &sql).await? == 1)
    }

    async fn delete_service(&self, id: &str) -> Result<bool> {
        let mut sql = Sql::new("DELETE FROM services WHERE id = ");
        sql.arg(id);
        Ok(execute(&self.db, &sql).await? == 1)
    }
}
