//! List queries as Cinder reads them: `limit`, `marker`, `offset`, `sort` (or the
//! deprecated `sort_key`/`sort_dir`), `with_count`, `all_tenants`, and the next-page link.

use serde_json::{Value, json};

use ember_common::model::{ListOptions, SortDir, SortKey};

use crate::context::Ctx;
use crate::fault::Fault;
use crate::validate::parse_bool;

/// The query parameters that are not filters.
const CONTROL: &[&str] =
    &["limit", "marker", "offset", "sort", "sort_key", "sort_dir", "with_count", "all_tenants"];

/// A parsed list request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub opts: ListOptions,
    /// The page size after capping: a page this full gets a next link.
    pub page_size: u32,
    /// `with_count=true` at 3.45 or later.
    pub with_count: bool,
    /// `all_tenants` was true (only honoured for admins).
    pub all_tenants: bool,
    /// The other parameters, to be checked as filters by the resource.
    pub filters: Vec<(String, String)>,
}

/// Parses the list parameters of `ctx`'s query; pages are at most `max_limit` long.
pub fn parse(ctx: &Ctx, max_limit: u32) -> Result<ListQuery, Fault> {
    let page_size = match ctx.param("limit") {
        None => max_limit,
        Some(text) => limit(text)?.min(max_limit),
    };
    let offset = ctx.param("offset").map(offset).transpose()?;
    let marker = ctx.param("marker").filter(|m| !m.is_empty()).map(str::to_owned);
    let sort = sort(ctx)?;
    let with_count = match ctx.param("with_count") {
        Some(text) if ctx.at_least(45) => bool_param("with_count", text)?,
        _ => false,
    };
    let all_tenants =
        ctx.param("all_tenants").map(|t| bool_param("all_tenants", t)).transpose()?.unwrap_or(false);
    let filters =
        ctx.query.iter().filter(|(k, _)| !CONTROL.contains(&k.as_str())).cloned().collect::<Vec<_>>();
    Ok(ListQuery {
        opts: ListOptions { limit: Some(page_size), marker, offset, sort },
        page_size,
        with_count,
        all_tenants,
        filters,
    })
}

fn limit(text: &str) -> Result<u32, Fault> {
    let n: i64 = text.trim().parse().map_err(|_| Fault::bad_request("limit param must be an integer"))?;
    if n < 0 {
        return Err(Fault::bad_request("limit param must be positive"));
    }
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

fn offset(text: &str) -> Result<u32, Fault> {
    let n: i64 = text.trim().parse().map_err(|_| Fault::bad_request("offset param must be an integer"))?;
    if n < 0 {
        return Err(Fault::bad_request("offset param must be positive"));
    }
    u32::try_from(n).map_err(|_| Fault::bad_request("offset param is too large"))
}

/// A boolean query parameter (`1`, `true`, `yes`... or their opposites).
pub fn bool_param(name: &str, text: &str) -> Result<bool, Fault> {
    parse_bool(text).ok_or_else(|| {
        Fault::bad_request(format!("Invalid input received: {name} is not a valid boolean: {text}"))
    })
}

/// `sort=k1:d1,k2` or `sort_key=k&sort_dir=d`; mixing the two forms is refused.
fn sort(ctx: &Ctx) -> Result<Vec<(SortKey, SortDir)>, Fault> {
    let mut pairs = Vec::new();
    if let Some(sort) = ctx.param("sort") {
        if ctx.param("sort_key").is_some() || ctx.param("sort_dir").is_some() {
            return Err(Fault::bad_request(
                "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.",
            ));
        }
        for item in sort.split(',') {
            let (key, dir) = item.split_once(':').unwrap_or((item, ""));
            pairs.push((key.trim(), dir.trim()));
        }
    } else if ctx.param("sort_key").is_some() || ctx.param("sort_dir").is_some() {
        pairs.push((
            ctx.param("sort_key").unwrap_or("created_at").trim(),
            ctx.param("sort_dir").unwrap_or("").trim(),
        ));
    }
    pairs
        .into_iter()
        .map(|(key, dir)| {
            let key = key
                .parse::<SortKey>()
                .map_err(|_| Fault::bad_request(format!("Invalid input received: Invalid sort key {key}")))?;
            let dir = if dir.is_empty() {
                SortDir::Desc
            } else {
                dir.parse::<SortDir>()
                    .map_err(|_| Fault::bad_request("Unknown sort direction, must be 'desc' or 'asc'"))?
            };
            Ok((key, dir))
        })
        .collect()
}

/// `"<collection>_links": [{"rel": "next", ...}]` when a page came back full: the same
/// query with `marker` set to the last id.
pub fn next_links(
    ctx: &Ctx,
    query: &ListQuery,
    path: &str,
    returned: usize,
    last_id: Option<&str>,
) -> Option<Value> {
    let last = last_id?;
    if query.page_size == 0 || returned < query.page_size as usize {
        return None;
    }
    let mut params: Vec<(&str, &str)> =
        ctx.query.iter().filter(|(k, _)| k != "marker").map(|(k, v)| (k.as_str(), v.as_str())).collect();
    params.push(("marker", last));
    let encoded: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    Some(json!([{"href": format!("{}?{}", ctx.url(path), encoded.join("&")), "rel": "next"}]))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_characters() {
        assert_eq!(encode("a b/c:d~e"), "a%20b%2Fc%3Ad~e");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn limits_and_offsets_are_checked() {
        assert_eq!(limit("5").unwrap(), 5);
        assert_eq!(limit("x").unwrap_err().message, "limit param must be an integer");
        assert_eq!(limit("-1").unwrap_err().message, "limit param must be positive");
        assert!(offset("-3").is_err());
        assert_eq!(offset("0").unwrap(), 0);
    }
}
