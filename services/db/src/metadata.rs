//! Key/value tables that hang off a row: volume metadata and admin metadata, snapshot
//! metadata and volume type extra specs. One set of queries serves them all.

use std::collections::{BTreeMap, HashMap};

use ember_common::Result;

use crate::sql::{Sql, bind_args, db_err, with_tx};
use crate::{Db, with_pool};

/// One of the key/value tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaTable {
    Volume,
    VolumeAdmin,
    Snapshot,
    ExtraSpecs,
}

impl MetaTable {
    /// The table and the column naming the owner row.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            MetaTable::Volume => ("volume_metadata", "volume_id"),
            MetaTable::VolumeAdmin => ("volume_admin_metadata", "volume_id"),
            MetaTable::Snapshot => ("snapshot_metadata", "snapshot_id"),
            MetaTable::ExtraSpecs => ("volume_type_extra_specs", "volume_type_id"),
        }
    }
}

/// One multi-row upsert of `items` for `owner`, or `None` when there is nothing to write.
pub(crate) fn upsert_sql(table: MetaTable, owner: &str, items: &BTreeMap<String, String>) -> Option<Sql> {
    if items.is_empty() {
        return None;
    }
    let (name, owner_col) = table.names();
    let mut sql = Sql::new(&format!("INSERT INTO {name} ({owner_col}, key, value) VALUES "));
    for (i, (k, v)) in items.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.list([owner, k.as_str(), v.as_str()]);
    }
    sql.push(&format!(" ON CONFLICT ({owner_col}, key) DO UPDATE SET value = excluded.value"));
    Some(sql)
}

/// The metadata of every owner in `owners`, by owner.
pub(crate) async fn load_many(
    db: &Db,
    table: MetaTable,
    owners: &[&str],
) -> Result<HashMap<String, BTreeMap<String, String>>> {
    let (name, owner_col) = table.names();
    let mut sql = Sql::new(&format!("SELECT {owner_col}, key, value FROM {name} WHERE {owner_col} IN "));
    sql.list(owners.iter().copied());
    let rows: Vec<(String, String, String)> = with_pool!(db, |pool| bind_args!(
        sqlx::query_as::<_, (String, String, String)>(&sql.text),
        &sql.args
    )
    .fetch_all(pool)
    .await)
    .map_err(db_err)?;
    let mut out: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for (owner, k, v) in rows {
        out.entry(owner).or_default().insert(k, v);
    }
    Ok(out)
}

/// The metadata of one owner.
pub(crate) async fn load(db: &Db, table: MetaTable, owner: &str) -> Result<BTreeMap<String, String>> {
    Ok(load_many(db, table, &[owner]).await?.remove(owner).unwrap_or_default())
}

/// Sets `items`; with `replace_all` removes every other key, in one transaction.
pub(crate) async fn set(
    db: &Db,
    table: MetaTable,
    owner: &str,
    items: &BTreeMap<String, String>,
    replace_all: bool,
) -> Result<BTreeMap<String, String>> {
    let (name, owner_col) = table.names();
    let mut delete = Sql::new(&format!("DELETE FROM {name} WHERE {owner_col} = "));
    delete.arg(owner);
    if !items.is_empty() {
        delete.push(" AND key NOT IN ").list(items.keys().map(String::as_str));
    }
    let upsert = upsert_sql(table, owner, items);
    let res: Result<()> = with_tx!(db, |tx| {
        let mut out = Ok(());
        if replace_all {
            out = bind_args!(sqlx::query(&delete.text), &delete.args).execute(&mut *tx).await.map(|_| ());
        }
        if let (Ok(()), Some(up)) = (&out, &upsert) {
            out = bind_args!(sqlx::query(&up.text), &up.args).execute(&mut *tx).await.map(|_| ());
        }
        out.map_err(db_err)
    });
    res?;
    load(db, table, owner).await
}

/// Removes one key; `false` if it was not there.
pub(crate) async fn delete(db: &Db, table: MetaTable, owner: &str, key: &str) -> Result<bool> {
    let (name, owner_col) = table.names();
    let mut sql = Sql::new(&format!("DELETE FROM {name} WHERE {owner_col} = "));
    sql.arg(owner).push(" AND key = ").arg(key);
    let n = with_pool!(db, |pool| bind_args!(sqlx::query(&sql.text), &sql.args)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
    .map_err(db_err)?;
    Ok(n > 0)
}
