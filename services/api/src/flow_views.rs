//! The JSON views of stored flows and the parsing of their list filters, shared by the
//! `/flows` endpoints and `ember manage flows`.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

use ember_engine::{AtomRecord, Failure, FlowDetail, FlowRecord, Registry, Values};

use crate::views::time;

/// A result or input longer than this (as JSON text) is shown truncated.
pub const MAX_SUMMARY_CHARS: usize = 512;

/// A stored millisecond time as Cinder prints times, or `null`.
pub fn ms_time(ms: i64) -> Value {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or(Value::Null, |t| Value::String(time(t)))
}

/// Parses a time filter: milliseconds since the epoch, RFC 3339 (`2026-11-21T20:00:00Z`) or
/// Cinder's UTC form without an offset (`2026-11-21T20:00:00[.ffffff]`). Returns epoch ms.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .map(|t| t.and_utc().timestamp_millis())
}

/// Values as JSON; a long text is cut at [`MAX_SUMMARY_CHARS`] and returned as a string
/// ending in `...` (`truncated` tells which).
pub fn summary(values: &Values) -> Value {
    let json = match values.to_json() {
        Ok(j) => j,
        Err(e) => return json!({ "unreadable": e.to_string() }),
    };
    let text = json.to_string();
    if text.len() <= MAX_SUMMARY_CHARS {
        return json;
    }
    let mut cut = MAX_SUMMARY_CHARS;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    json!({ "truncated": format!("{}...", &text[..cut]), "chars": text.len() })
}

/// A failure with its cause chain.
pub fn failure(f: &Failure) -> Value {
    json!({ "kind": f.kind, "message": f.message, "causes": f.causes })
}

/// One flow as listed.
pub fn flow(f: &FlowRecord) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(f.id));
    m.insert("name".into(), json!(f.name));
    m.insert("state".into(), json!(f.state.as_str()));
    m.insert("topic".into(), json!(f.topic));
    m.insert("subject".into(), json!(f.subject));
    m.insert("owner".into(), json!(f.owner));
    m.insert("lease_expires_at".into(), f.lease_expires_at.map_or(Value::Null, ms_time));
    m.insert("claim_epoch".into(), json!(f.claim_epoch));
    m.insert("created_at".into(), ms_time(f.created_at));
    m.insert("updated_at".into(), ms_time(f.updated_at));
    Value::Object(m)
}

/// One atom of a flow.
pub fn atom(a: &AtomRecord) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(a.name));
    m.insert("kind".into(), json!(a.kind.as_str()));
    m.insert("state".into(), json!(a.state.as_str()));
    m.insert("intention".into(), json!(a.intention.as_str()));
    m.insert("attempts".into(), json!(a.attempts));
    m.insert("created_at".into(), ms_time(a.created_at));
    m.insert("updated_at".into(), ms_time(a.updated_at));
    m.insert("duration_ms".into(), json!(a.updated_at.saturating_sub(a.created_at)));
    m.insert("result".into(), a.result.as_ref().map_or(Value::Null, summary));
    m.insert("failure".into(), a.failure.as_ref().map_or(Value::Null, failure));
    m.insert("revert_failure".into(), a.revert_failure.as_ref().map_or(Value::Null, failure));
    if let Some(history) = &a.history {
        m.insert("retry_attempts".into(), json!(history.len()));
    }
    if let Some(p) = a.progress {
        m.insert("progress".into(), json!({ "done": p.done, "total": p.total, "percent": p.percent() }));
    }
    Value::Object(m)
}

/// Puts the atoms in the order of the compiled flow when `shapes` can rebuild it (the
/// store lists atoms written in the same millisecond by name); atoms it does not know go last.
pub fn order_atoms(detail: &mut FlowDetail, shapes: &Registry) {
    let Ok(compiled) = shapes.build(&detail.flow.name, &detail.flow.inputs) else { return };
    let order: Vec<&str> = compiled.atom_names().collect();
    detail.atoms.sort_by_key(|a| order.iter().position(|n| *n == a.name).unwrap_or(usize::MAX));
}

/// One flow with its inputs and atoms.
pub fn detail(d: &FlowDetail) -> Value {
    let mut v = flow(&d.flow);
    v["inputs"] = summary(&d.flow.inputs);
    v["atoms"] = Value::Array(d.atoms.iter().map(atom).collect());
    v
}

#[cfg(test)]
mod tests {
    use ember_engine::Key;

    use super::*;

    #[test]
    fn times_parse_in_every_form() {
        let ms = 1_795_285_426_000;
        assert_eq!(parse_time("1795285426000"), Some(ms));
        assert_eq!(parse_time("2026-11-21T18:23:46Z"), Some(ms));
        assert_eq!(parse_time("2026-11-21T19:23:46+01:00"), Some(ms));
        assert_eq!(parse_time("2026-11-21T18:23:46.000000"), Some(ms));
        assert_eq!(parse_time("2026-11-21"), Some(1_795_219_200_000));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn long_values_are_truncated_on_a_char_boundary() {
        const TEXT: Key<String> = Key::new("text");
        let short = Values::new().with(&TEXT, "ok".to_owned());
        assert_eq!(summary(&short), json!({"text": "ok"}));
        let long = Values::new().with(&TEXT, "é".repeat(1000));
        let s = summary(&long);
        assert!(s["truncated"].as_str().unwrap().ends_with("..."));
        assert!(s["chars"].as_u64().unwrap() > MAX_SUMMARY_CHARS as u64);
    }
}
