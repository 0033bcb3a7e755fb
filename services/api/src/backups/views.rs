//! The backup views of `cinder/api/views/backups.py`.

use serde_json::{Map, Value, json};

use ember_common::model::Backup;

use crate::context::Ctx;
use crate::views::{opt_time, time};

/// `{"id", "links", "name"}`, the list entry and the create answer.
pub fn summary(ctx: &Ctx, b: &Backup) -> Value {
    json!({"id": b.id, "links": ctx.links("backups", &b.id), "name": b.name})
}

/// The detail view, with the fields each microversion adds.
pub fn detail(ctx: &Ctx, b: &Backup) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("id", json!(b.id));
    put("status", json!(b.status));
    put("size", json!(b.size));
    put("object_count", json!(b.object_count));
    put("availability_zone", json!(b.availability_zone));
    put("container", json!(b.container));
    put("created_at", json!(time(b.created_at)));
    put("updated_at", opt_time(b.updated_at));
    put("name", json!(b.name));
    put("description", json!(b.description));
    put("fail_reason", json!(b.fail_reason));
    put("volume_id", json!(b.volume_id));
    put("links", ctx.links("backups", &b.id));
    put("is_incremental", json!(b.is_incremental()));
    put("has_dependent_backups", json!(b.num_dependent_backups > 0));
    put("snapshot_id", json!(b.snapshot_id));
    put("data_timestamp", opt_time(b.data_timestamp));
    if ctx.at_least(18) {
        put("os-backup-project-attr:project_id", json!(b.project_id));
    }
    if ctx.at_least(43) {
        put("metadata", json!(b.metadata));
    }
    if ctx.at_least(56) {
        put("user_id", json!(b.user_id));
    }
    if ctx.at_least(64) {
        put("encryption_key_id", json!(b.encryption_key_id));
    }
    Value::Object(m)
}
