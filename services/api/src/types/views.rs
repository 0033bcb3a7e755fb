//! The volume type view of `cinder/api/views/types.py`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use ember_common::model::VolumeType;

use crate::context::Ctx;

/// The extra specs non-admins may read (Cinder's user-visible keys).
const USER_VISIBLE: &[&str] = &["RESKEY:availability_zones", "multiattach", "replication_enabled"];

/// The extra specs `ctx` may read.
pub fn visible_specs(ctx: &Ctx, specs: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    if ctx.is_admin() {
        return specs.clone();
    }
    specs
        .iter()
        .filter(|(k, _)| USER_VISIBLE.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One type.
pub fn show(ctx: &Ctx, t: &VolumeType) -> Value {
    let mut v = json!({
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "is_public": t.is_public,
        "os-volume-type-access:is_public": t.is_public,
        "extra_specs": visible_specs(ctx, &t.extra_specs),
    });
    if ctx.is_admin() {
        v["qos_specs_id"] = json!(t.qos_specs_id);
    }
    v
}
