//! The snapshot views of `cinder/api/v3/views/snapshots.py` and the extended attributes.

use serde_json::{Map, Value, json};

use ember_common::model::Snapshot;

use crate::context::Ctx;
use crate::views::{opt_time, time};

/// The list entry of `GET /snapshots`.
pub fn summary(s: &Snapshot) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(s.id));
    m.insert("created_at".into(), json!(time(s.created_at)));
    m.insert("updated_at".into(), opt_time(s.updated_at));
    m.insert("name".into(), json!(s.name));
    m.insert("description".into(), json!(s.description));
    m.insert("volume_id".into(), json!(s.volume_id));
    m.insert("status".into(), json!(s.status));
    m.insert("size".into(), json!(s.volume_size));
    m.insert("metadata".into(), json!(s.metadata));
    m
}

/// The detail view; `extended` adds `os-extended-snapshot-attributes:*` (show and detail).
pub fn detail(ctx: &Ctx, s: &Snapshot, extended: bool) -> Value {
    let mut m = summary(s);
    if ctx.at_least(14) {
        m.insert("group_snapshot_id".into(), json!(s.group_snapshot_id));
    }
    if ctx.at_least(41) {
        m.insert("user_id".into(), json!(s.user_id));
    }
    if ctx.at_least(65) {
        m.insert("consumes_quota".into(), json!(s.consumes_quota));
    }
    if extended {
        m.insert("os-extended-snapshot-attributes:progress".into(), json!(s.progress));
        m.insert("os-extended-snapshot-attributes:project_id".into(), json!(s.project_id));
    }
    Value::Object(m)
}
