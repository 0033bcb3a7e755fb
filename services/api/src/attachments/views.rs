//! The attachment views of `cinder/api/v3/views/attachments.py`: summary and detail.

use serde_json::{Value, json};

use ember_common::model::VolumeAttachment;

use crate::views::time;

/// `{id, status, instance, volume_id}`: list entries and what a delete leaves.
pub fn summary(a: &VolumeAttachment) -> Value {
    json!({
        "id": a.id,
        "status": a.attach_status.as_str(),
        "instance": a.instance_uuid,
        "volume_id": a.volume_id,
    })
}

/// The summary plus `attached_at`, `detached_at` (an empty string when unset, as
/// Cinder's `_normalize`), `attach_mode` and `connection_info` as stored (the driver's
/// `data` flattened with `attachment_id`, `access_mode`...).
pub fn detail(a: &VolumeAttachment) -> Value {
    let mut v = summary(a);
    let stamp = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or_else(|| json!(""), |t| json!(time(t)));
    v["attached_at"] = stamp(a.attached_at);
    v["detached_at"] = stamp(a.detached_at);
    v["attach_mode"] = json!(a.attach_mode);
    v["connection_info"] = a.connection_info.clone().unwrap_or(Value::Null);
    v
}

/// `{"attachments": [...]}` in summary or detail form.
pub fn list(items: &[VolumeAttachment], detailed: bool) -> Value {
    let view = if detailed { detail } else { summary };
    json!({ "attachments": items.iter().map(view).collect::<Vec<_>>() })
}
