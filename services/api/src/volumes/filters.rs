//! The filters of a volume list (Cinder's `resource_filters.json` for volumes).

use std::collections::BTreeMap;

use ember_common::model::{VolumeFilter, VolumeStatus};

use crate::context::Ctx;
use crate::fault::{ApiResult, Fault};
use crate::listing::{ListQuery, bool_param};

/// The filter of a list request, or `None` when it can match nothing (an unknown status).
///
/// Unknown filters are refused from 3.31 on, ignored before, as Cinder does.
pub fn volume_filter(ctx: &Ctx, query: &ListQuery) -> ApiResult<Option<VolumeFilter>> {
    let mut f = VolumeFilter {
        project_id: (!(ctx.is_admin() && query.all_tenants)).then(|| ctx.caller.project_id.clone()),
        ..VolumeFilter::default()
    };
    for (key, value) in &query.filters {
        match key.as_str() {
            "name" | "display_name" => f.name = Some(value.clone()),
            "name~" | "display_name~" if ctx.at_least(34) => f.name_like = Some(value.clone()),
            "status" => match value.parse::<VolumeStatus>() {
                Ok(s) => f.status = Some(s),
                Err(_) => return Ok(None),
            },
            "metadata" => f.metadata.extend(parse_metadata(value)?),
            "bootable" => f.bootable = Some(bool_param("bootable", value)?),
            "availability_zone" => f.availability_zone = Some(value.clone()),
            "migration_status" if ctx.is_admin() => f.migration_status = Some(value.clone()),
            "size" => f.size = Some(value.parse().map_err(|_| bad_filter(key, value))?),
            "group_id" => f.group_id = Some(value.clone()),
            "consumes_quota" if ctx.at_least(65) => f.consumes_quota = Some(bool_param(key, value)?),
            "project_id" if ctx.is_admin() && query.all_tenants => f.project_id = Some(value.clone()),
            _ if ctx.at_least(31) => {
                return Err(Fault::bad_request(format!("Invalid filters {key} are found in query options.")));
            }
            _ => {}
        }
    }
    Ok(Some(f))
}

fn bad_filter(key: &str, value: &str) -> Fault {
    Fault::bad_request(format!("Invalid input received: {key}={value}"))
}

/// `metadata={"k": "v"}` as JSON, or as the Python dict repr cinderclient sends (`{'k': 'v'}`).
pub fn parse_metadata(text: &str) -> ApiResult<Vec<(String, String)>> {
    let parsed = serde_json::from_str::<BTreeMap<String, serde_json::Value>>(text)
        .or_else(|_| serde_json::from_str(&text.replace('\'', "\"")))
        .map_err(|_| bad_filter("metadata", text))?;
    Ok(parsed
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filters_accept_json_and_python_reprs() {
        assert_eq!(parse_metadata(r#"{"a": "b"}"#).unwrap(), [("a".to_owned(), "b".to_owned())]);
        assert_eq!(parse_metadata("{'a': 'b'}").unwrap(), [("a".to_owned(), "b".to_owned())]);
        assert!(parse_metadata("nope").is_err());
    }
}
