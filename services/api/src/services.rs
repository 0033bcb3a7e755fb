//! `/os-services` (list, enable, disable, disable-log-reason; admin) and
//! `/os-availability-zone`.
//!
//! Ember's services are `ember-volume`, `ember-scheduler` and `ember-backup`; the API shows
//! them under Cinder's names (`cinder-volume`...) because clients look for those, and
//! accepts either name.

use axum::extract::State;
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{Map, Value, json};

use ember_common::model::{Service, ServiceFilter};

use crate::context::{Ctx, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::state::ApiState;
use crate::validate::{self, MAX_TEXT};
use crate::views::time;

/// The routes under `/v3/{project_id}`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/os-services", get(list))
        .route("/os-services/{action}", put(change))
        .route("/os-availability-zone", get(zones))
}

/// `cinder-volume` for `ember-volume`.
fn shown_binary(binary: &str) -> String {
    binary.strip_prefix("ember-").map_or_else(|| binary.to_owned(), |rest| format!("cinder-{rest}"))
}

/// `ember-volume` for `cinder-volume` (or itself).
fn stored_binary(binary: &str) -> String {
    binary.strip_prefix("cinder-").map_or_else(|| binary.to_owned(), |rest| format!("ember-{rest}"))
}

fn is_up(state: &ApiState, s: &Service) -> bool {
    let down_after =
        chrono::Duration::seconds(i64::try_from(state.settings.service_down_time).unwrap_or(i64::MAX / 1000));
    s.is_up(Utc::now(), down_after)
}

fn view(ctx: &Ctx, state: &ApiState, s: &Service) -> Value {
    let up = is_up(state, s);
    let mut m = Map::new();
    m.insert("binary".into(), json!(shown_binary(&s.binary)));
    m.insert("host".into(), json!(s.host));
    m.insert("zone".into(), json!(s.availability_zone));
    m.insert("status".into(), json!(if s.disabled { "disabled" } else { "enabled" }));
    m.insert("state".into(), json!(if up { "up" } else { "down" }));
    m.insert("updated_at".into(), json!(time(s.heartbeat_at)));
    m.insert("disabled_reason".into(), json!(s.disabled_reason));
    if ctx.at_least(7) {
        m.insert("cluster".into(), json!(s.cluster_name));
    }
    if s.binary.ends_with("-volume") {
        m.insert("replication_status".into(), Value::Null);
        m.insert("active_backend_id".into(), Value::Null);
        m.insert("frozen".into(), json!(s.frozen));
        if ctx.at_least(49) {
            m.insert("backend_state".into(), json!(if up { "up" } else { "down" }));
        }
    }
    Value::Object(m)
}

/// `GET /os-services[?host=&binary=]` (admin).
async fn list(State(state): State<ApiState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    ctx.caller.require_admin()?;
    let filter = ServiceFilter {
        host: ctx.param("host").map(str::to_owned),
        binary: ctx.param("binary").map(stored_binary),
        ..ServiceFilter::default()
    };
    let services = state.repos.services.list_services(&filter).await?;
    let items: Vec<Value> = services.iter().map(|s| view(&ctx, &state, s)).collect();
    Ok(Json(json!({ "services": items })))
}

#[derive(Debug, serde::Deserialize)]
struct ActionPath {
    action: String,
}

/// `PUT /os-services/enable|disable|disable-log-reason` (admin) with `{"host", "binary"}`.
async fn change(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<ActionPath>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    ctx.caller.require_admin()?;
    let obj = body.as_object().ok_or_else(|| Fault::bad_request("Malformed request body"))?;
    let host = validate::required_string(obj, "host", MAX_TEXT)?;
    let binary = validate::required_string(obj, "binary", MAX_TEXT)?;
    let (disabled, reason) = match p.action.as_str() {
        "enable" => (false, None),
        "disable" => (true, None),
        "disable-log-reason" => (true, Some(validate::required_string(obj, "disabled_reason", MAX_TEXT)?)),
        other => return Err(Fault::not_found(format!("Unknown action {other}"))),
    };
    let found = state
        .repos
        .services
        .set_service_disabled(&host, &stored_binary(&binary), disabled, reason.as_deref())
        .await?;
    if !found {
        return Err(Fault::not_found(format!("Service {binary} on host {host} could not be found.")));
    }
    let mut out = json!({
        "host": host,
        "binary": binary,
        "service": "",
        "disabled": disabled,
        "status": if disabled { "disabled" } else { "enabled" },
    });
    if let Some(r) = reason {
        out["disabled_reason"] = json!(r);
    }
    Ok(Json(out))
}

/// The zones of the volume services, each with whether one of its services is enabled.
pub(crate) async fn availability_zones(state: &ApiState) -> ApiResult<Vec<(String, bool)>> {
    let filter = ServiceFilter { binary: Some("ember-volume".into()), ..ServiceFilter::default() };
    let mut zones: Vec<(String, bool)> = Vec::new();
    for s in state.repos.services.list_services(&filter).await? {
        match zones.iter_mut().find(|(name, _)| *name == s.availability_zone) {
            Some((_, available)) => *available |= !s.disabled,
            None => zones.push((s.availability_zone.clone(), !s.disabled)),
        }
    }
    Ok(zones)
}

/// `GET /os-availability-zone`: the zones of the volume services; a zone is available
/// when one of its volume services is enabled (as Cinder's `list_availability_zones`).
async fn zones(State(state): State<ApiState>, _ctx: Ctx) -> ApiResult<Json<Value>> {
    let zones = availability_zones(&state).await?;
    let items: Vec<Value> = zones
        .iter()
        .map(|(name, available)| json!({"zoneName": name, "zoneState": {"available": available}}))
        .collect();
    Ok(Json(json!({ "availabilityZoneInfo": items })))
}
