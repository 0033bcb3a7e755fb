//! The volume views of `cinder/api/v3/views/volumes.py`: summary, detail and the
//! extension attributes of show and detail.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use ember_common::model::{AttachStatus, Volume, VolumeAttachment, VolumeStatus};

use crate::context::Ctx;
use crate::fault::ApiResult;
use crate::state::ApiState;
use crate::views::{opt_time, time};

/// What a detail view needs beyond the row: the type's name and the live attachments.
#[derive(Debug, Clone, Default)]
pub struct Related {
    pub type_name: Option<String>,
    pub attachments: Vec<VolumeAttachment>,
}

/// `{"id", "name", "links"}`, the list entry.
pub fn summary(ctx: &Ctx, v: &Volume) -> Value {
    json!({"id": v.id, "name": v.name, "links": ctx.links("volumes", &v.id)})
}

/// The status clients see: the managing states are shown as Cinder's API shows them.
fn shown_status(status: VolumeStatus) -> &'static str {
    match status {
        VolumeStatus::Managing => "creating",
        VolumeStatus::ErrorManaging => "error",
        VolumeStatus::ErrorManagingDeleting => "deleting",
        other => other.as_str(),
    }
}

/// The detail view; `extended` adds the extension attributes of show and detail
/// (`os-vol-host-attr:host`...), which create and update responses do not carry.
pub fn detail(ctx: &Ctx, v: &Volume, related: &Related, extended: bool) -> Value {
    let mut m = base(ctx, v, related);
    versioned(ctx, v, &mut m);
    if extended {
        m.insert("os-vol-tenant-attr:tenant_id".into(), json!(v.project_id));
        if ctx.is_admin() {
            m.insert("os-vol-host-attr:host".into(), json!(v.host));
            m.insert("os-vol-mig-status-attr:migstat".into(), json!(v.migration_status));
            m.insert("os-vol-mig-status-attr:name_id".into(), Value::Null);
        }
    }
    Value::Object(m)
}

/// The keys of Cinder's 3.0 detail view.
fn base(ctx: &Ctx, v: &Volume, related: &Related) -> Map<String, Value> {
    let admin = ctx.is_admin();
    let mut m = Map::new();
    let mut put = |k: &str, val: Value| {
        m.insert(k.to_owned(), val);
    };
    put("id", json!(v.id));
    put("status", json!(shown_status(v.status)));
    put("size", json!(v.size));
    put("availability_zone", json!(v.availability_zone));
    put("created_at", json!(time(v.created_at)));
    put("updated_at", opt_time(v.updated_at));
    put("name", json!(v.name));
    put("description", json!(v.description));
    put("volume_type", json!(related.type_name.as_deref().unwrap_or(&v.volume_type_id)));
    put("snapshot_id", json!(v.snapshot_id));
    put("source_volid", json!(v.source_volid));
    put("metadata", json!(v.metadata));
    put("links", ctx.links("volumes", &v.id));
    put("user_id", json!(v.user_id));
    put("bootable", json!(if v.bootable { "true" } else { "false" }));
    put("encrypted", json!(v.encrypted()));
    put("replication_status", json!(v.replication_status));
    put("consistencygroup_id", Value::Null);
    put("multiattach", json!(v.multiattach));
    // Glance, backed by Cinder, reads the host as a service to decide multiattach detaches.
    let sees_host = admin || ctx.caller.roles.iter().any(|r| r == "service");
    put("attachments", attachments(v, &related.attachments, sees_host));
    if admin {
        put("migration_status", json!(v.migration_status));
    }
    m
}

/// The keys later microversions added.
fn versioned(ctx: &Ctx, v: &Volume, m: &mut Map<String, Value>) {
    let admin = ctx.is_admin();
    let mut put = |k: &str, val: Value| {
        m.insert(k.to_owned(), val);
    };
    if ctx.at_least(13) {
        put("group_id", json!(v.group_id));
    }
    if ctx.at_least(21) && admin {
        put("provider_id", json!(v.provider_id));
    }
    if ctx.at_least(48) {
        // Before 3.69 a null `shared_targets` is shown as true, the safe answer for os-brick.
        let shared = match v.shared_targets {
            None if !ctx.at_least(69) => json!(true),
            other => json!(other),
        };
        put("shared_targets", shared);
        put("service_uuid", json!(v.service_uuid));
    }
    if ctx.at_least(61) && admin {
        put("cluster_name", json!(v.cluster_name));
    }
    if ctx.at_least(63) {
        put("volume_type_id", json!(v.volume_type_id));
    }
    if let Some(key) = v.encryption_key_id.as_ref().filter(|_| ctx.at_least(64)) {
        put("encryption_key_id", json!(key));
    }
    if ctx.at_least(65) {
        put("consumes_quota", json!(v.consumes_quota));
    }
}

/// The `attached` attachments, as Cinder lists them in the volume; `host_name` only for
/// admins and services.
fn attachments(v: &Volume, all: &[VolumeAttachment], sees_host: bool) -> Value {
    let items: Vec<Value> = all
        .iter()
        .filter(|a| a.attach_status == AttachStatus::Attached)
        .map(|a| {
            json!({
                "id": v.id,
                "attachment_id": a.id,
                "volume_id": v.id,
                "server_id": a.instance_uuid,
                "host_name": if sees_host { json!(a.attached_host) } else { Value::Null },
                "device": a.mountpoint,
                "attached_at": opt_time(a.attached_at),
            })
        })
        .collect();
    Value::Array(items)
}

/// Loads what the detail views of `volumes` need: type names (one query) and the
/// attachments of the volumes that have any.
pub async fn related(state: &ApiState, volumes: &[Volume]) -> ApiResult<Vec<Related>> {
    let names: HashMap<String, String> = if volumes.len() > 1 {
        state.repos.types.list_volume_types(None).await?.into_iter().map(|t| (t.id, t.name)).collect()
    } else {
        HashMap::new()
    };
    let mut out = Vec::with_capacity(volumes.len());
    for v in volumes {
        let type_name = match names.get(&v.volume_type_id) {
            Some(name) => Some(name.clone()),
            None => state.repos.types.get_volume_type(&v.volume_type_id).await.ok().map(|t| t.name),
        };
        let attachments = if v.attach_status == AttachStatus::Detached {
            Vec::new()
        } else {
            state.repos.attachments.list_attachments(Some(&v.id), None).await?
        };
        out.push(Related { type_name, attachments });
    }
    Ok(out)
}
