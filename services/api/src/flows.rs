//! `/flows` (admin): the flows every process recorded, one flow with its atoms, its drawing
//! (DOT or Mermaid) and the operator's actions (`resume`, and `revert` of a flow that cannot finish);
//! and `/volumes/{id}/flows`, `/snapshots/{id}/flows`: the flows that touched a resource.
//!
//! These endpoints are Ember's own (Cinder has no flow engine to show); they follow the
//! API's conventions: admin only, Cinder's fault bodies, times in Cinder's format.

use std::str::FromStr;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use ember_engine::{EngineError, FlowFilter, FlowState};

use crate::context::{Ctx, IdPath, Params};
use crate::extract::Body;
use crate::fault::{ApiResult, Fault};
use crate::flow_views;
use crate::state::{ApiState, FlowAdmin};

/// The routes under `/v3/{project_id}`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/flows", get(list))
        .route("/flows/{id}", get(show))
        .route("/flows/{id}/graph", get(graph))
        .route("/flows/{id}/action", post(action))
        .route("/volumes/{id}/flows", get(of_resource))
        .route("/snapshots/{id}/flows", get(of_resource))
}

/// The admin view, after checking the caller is an admin.
fn admin<'a>(state: &'a ApiState, ctx: &Ctx) -> ApiResult<&'a FlowAdmin> {
    ctx.caller.require_admin()?;
    state
        .flows
        .as_ref()
        .ok_or_else(|| Fault::new(StatusCode::SERVICE_UNAVAILABLE, "The flow store is not available."))
}

/// Store errors are logged; the client sees a generic 500.
fn store_fault(err: EngineError) -> Fault {
    tracing::error!(error = %err, "reading the flow store failed");
    Fault::internal()
}

fn not_found(id: &str) -> Fault {
    Fault::not_found(format!("Flow {id} could not be found."))
}

/// The list filter from the query: `state`, `name`, `subject`, `owner`, `created_after`,
/// `created_before` (ISO time or epoch ms), `limit` (at most `osapi_max_limit`), `offset`.
pub fn filter_from(ctx: &Ctx, max_limit: u32) -> ApiResult<FlowFilter> {
    let text = |name: &str| ctx.param(name).filter(|v| !v.is_empty()).map(str::to_owned);
    let state = match ctx.param("state").filter(|v| !v.is_empty()) {
        Some(s) => Some(
            FlowState::from_str(&s.to_ascii_uppercase())
                .map_err(|_| Fault::bad_request(format!("Invalid flow state {s:?}.")))?,
        ),
        None => None,
    };
    let time = |name: &str| -> ApiResult<Option<i64>> {
        match ctx.param(name).filter(|v| !v.is_empty()) {
            Some(t) => flow_views::parse_time(t)
                .map(Some)
                .ok_or_else(|| Fault::bad_request(format!("Invalid time {t:?} for {name}."))),
            None => Ok(None),
        }
    };
    let number = |name: &str| -> ApiResult<Option<usize>> {
        match ctx.param(name) {
            Some(n) => n
                .parse::<usize>()
                .map(Some)
                .map_err(|_| Fault::bad_request(format!("Invalid {name} {n:?}: a number is expected."))),
            None => Ok(None),
        }
    };
    let max = max_limit as usize;
    Ok(FlowFilter {
        state,
        name: text("name"),
        subject: text("subject"),
        owner: text("owner"),
        created_after: time("created_after")?,
        created_before: time("created_before")?,
        limit: Some(number("limit")?.map_or(max, |l| l.min(max))),
        offset: number("offset")?.unwrap_or(0),
    })
}

/// `GET /flows`: newest first, with an `ETag` (the console polls with `If-None-Match`).
async fn list(State(state): State<ApiState>, ctx: Ctx, headers: HeaderMap) -> ApiResult<Response> {
    let flows = admin(&state, &ctx)?;
    let filter = filter_from(&ctx, state.settings.osapi_max_limit)?;
    let records = flows.store.list_flows(&filter).await.map_err(store_fault)?;
    let items: Vec<Value> = records.iter().map(flow_views::flow).collect();
    Ok(tagged(&headers, json!({ "flows": items })))
}

/// The body with a strong `ETag` (the MD5 of its JSON text), or an empty 304 when the
/// request's `If-None-Match` names that tag: polling an unchanged view costs no body.
pub fn tagged(headers: &HeaderMap, body: Value) -> Response {
    let text = body.to_string();
    let tag = format!("\"{}\"", crate::etag::md5_hex(text.as_bytes()));
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().trim_start_matches("W/") == tag);
    let etag = HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\""));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    ([(header::ETAG, etag), (header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], text)
        .into_response()
}

/// `GET /volumes/{id}/flows`, `GET /snapshots/{id}/flows`: the flows whose subject is the
/// resource, newest first. A deleted resource's flows are listed too, so no existence check.
async fn of_resource(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
) -> ApiResult<Json<Value>> {
    let flows = admin(&state, &ctx)?;
    let filter = FlowFilter {
        subject: Some(p.id),
        limit: Some(state.settings.osapi_max_limit as usize),
        ..FlowFilter::default()
    };
    let records = flows.store.list_flows(&filter).await.map_err(store_fault)?;
    let items: Vec<Value> = records.iter().map(flow_views::flow).collect();
    Ok(Json(json!({ "flows": items })))
}

/// `GET /flows/{id}`: the flow with its atoms, in the flow's order, with an `ETag`.
async fn show(
    State(state): State<ApiState>,
    ctx: Ctx,
    headers: HeaderMap,
    Params(p): Params<IdPath>,
) -> ApiResult<Response> {
    let flows = admin(&state, &ctx)?;
    let mut detail =
        flows.store.get_flow(&p.id).await.map_err(store_fault)?.ok_or_else(|| not_found(&p.id))?;
    flow_views::order_atoms(&mut detail, &flows.shapes);
    Ok(tagged(&headers, json!({ "flow": flow_views::detail(&detail) })))
}

/// The drawings `GET /flows/{id}/graph` gives.
enum Drawing {
    Dot,
    Mermaid,
    Json,
}

/// `GET /flows/{id}/graph?format=dot|mermaid|json`: the compiled flow's drawing as text, or
/// as JSON (`{"graph": {"name", "atoms": [..], "edges": [[from, to], ..]}}`, for the console).
async fn graph(State(state): State<ApiState>, ctx: Ctx, Params(p): Params<IdPath>) -> ApiResult<Response> {
    let flows = admin(&state, &ctx)?;
    let drawing = match ctx.param("format").unwrap_or("dot") {
        "dot" => Drawing::Dot,
        "mermaid" => Drawing::Mermaid,
        "json" => Drawing::Json,
        other => {
            return Err(Fault::bad_request(format!("Invalid format {other:?}: use dot, mermaid or json.")));
        }
    };
    let detail = flows.store.get_flow(&p.id).await.map_err(store_fault)?.ok_or_else(|| not_found(&p.id))?;
    let record = &detail.flow;
    let compiled = flows.shapes.build(&record.name, &record.inputs).map_err(|err| {
        Fault::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("Flow {} ({}) cannot be drawn: {err}", record.id, record.name),
        )
    })?;
    let text = match drawing {
        Drawing::Dot => compiled.to_dot(),
        Drawing::Mermaid => compiled.to_mermaid(),
        Drawing::Json => {
            let atoms: Vec<&str> = compiled.atom_names().collect();
            let edges: Vec<[&str; 2]> = compiled.edges().map(|(u, v)| [u, v]).collect();
            let body = json!({ "graph": { "name": compiled.name(), "atoms": atoms, "edges": edges } });
            return Ok(Json(body).into_response());
        }
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// `POST /flows/{id}/action` with `{"resume": {}}` or `{"revert": {}}`.
async fn action(
    State(state): State<ApiState>,
    ctx: Ctx,
    Params(p): Params<IdPath>,
    Body(body): Body<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let flows = admin(&state, &ctx)?;
    let obj = body.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
        Fault::bad_request("The body must name one action: {\"resume\": {}} or {\"revert\": {}}.")
    })?;
    match obj.keys().next().map(String::as_str) {
        Some("resume") => resume(flows, &p.id).await,
        Some("revert") => revert(flows, &p.id).await,
        Some(other) => Err(Fault::bad_request(format!("Unknown flow action {other:?}."))),
        None => Err(Fault::bad_request("The body must name one action.")),
    }
}

/// Marks the flow for revert (a compare-and-swap: not once it succeeded or was reverted)
/// and wakes its topic's workers, which revert what ran in reverse order.
async fn revert(flows: &FlowAdmin, id: &str) -> ApiResult<(StatusCode, Json<Value>)> {
    match flows.store.request_revert(id).await.map_err(store_fault)? {
        Some(record) => {
            tracing::info!(flow_id = %id, topic = %record.topic, state = %record.state, "an operator reverted a flow");
            if let Some(wake) = &flows.wake {
                wake(&record.topic);
            }
            Ok((StatusCode::ACCEPTED, Json(json!({ "flow": flow_views::flow(&record) }))))
        }
        None => match flows.store.get_flow(id).await.map_err(store_fault)? {
            Some(d) => Err(Fault::conflict(format!(
                "Flow {id} has ended in {}; there is nothing to revert.",
                d.flow.state
            ))),
            None => Err(not_found(id)),
        },
    }
}

/// Releases the flow (a compare-and-swap on a live state) and wakes its topic's workers.
async fn resume(flows: &FlowAdmin, id: &str) -> ApiResult<(StatusCode, Json<Value>)> {
    match flows.store.release(id).await.map_err(store_fault)? {
        Some(record) => {
            tracing::info!(flow_id = %id, topic = %record.topic, "an operator resumed a flow");
            if let Some(wake) = &flows.wake {
                wake(&record.topic);
            }
            Ok((StatusCode::ACCEPTED, Json(json!({ "flow": flow_views::flow(&record) }))))
        }
        None => match flows.store.get_flow(id).await.map_err(store_fault)? {
            Some(d) => Err(Fault::conflict(format!(
                "Flow {id} has finished ({}); there is nothing to resume.",
                d.flow.state
            ))),
            None => Err(not_found(id)),
        },
    }
}
