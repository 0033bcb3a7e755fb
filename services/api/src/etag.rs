//! ETags of metadata (3.15+): `GET .../metadata` answers one, `If-Match` guards the writes.
//!
//! The tag is Cinder's: the MD5 hex digest of `{"metadata": {...}}` serialized. Keys are in
//! sorted order (`BTreeMap`), so one set of key/values always has one tag, on every process.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use md5::{Digest, Md5};
use serde_json::json;

use crate::context::Ctx;
use crate::fault::{ApiResult, Fault};

/// The microversion that added metadata ETags.
pub const MIN_MINOR: u16 = 15;

/// The ETag of a metadata set.
pub fn of(metadata: &BTreeMap<String, String>) -> String {
    let body = json!({ "metadata": metadata }).to_string();
    md5_hex(body.as_bytes())
}

/// The MD5 hex digest of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    let digest = Md5::digest(bytes);
    digest.iter().fold(String::with_capacity(32), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// True when the `If-Match` header (if any) names `current` or `*`.
///
/// Tags may be quoted or not and weak (`W/`) or not: Cinder (webob) accepts all of them.
pub fn matches(headers: &HeaderMap, current: &str) -> bool {
    let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return true;
    }
    values.filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|tag| {
        let tag = tag.trim();
        let tag = tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"');
        tag == "*" || tag == current
    })
}

/// Refuses a write with 412 and an empty body, as Cinder does, when the request (3.15+)
/// carries an `If-Match` that does not name the metadata's current tag.
pub fn check(ctx: &Ctx, headers: &HeaderMap, metadata: &BTreeMap<String, String>) -> ApiResult<()> {
    if !ctx.version.at_least(MIN_MINOR) || matches(headers, &of(metadata)) {
        return Ok(());
    }
    Err(Fault::precondition_failed(
        "The metadata changed since it was read (If-Match does not match its ETag).",
    ))
}

/// `{"metadata": {...}}`, with its `ETag` header from 3.15.
pub fn metadata_response(ctx: &Ctx, metadata: BTreeMap<String, String>) -> Response {
    let tag = ctx.version.at_least(MIN_MINOR).then(|| of(&metadata));
    let mut response = Json(json!({ "metadata": metadata })).into_response();
    if let Some(value) = tag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_is_md5_of_the_sorted_document() {
        let mut m = BTreeMap::new();
        // Python: hashlib.md5(b'{"metadata":{}}').hexdigest(), and so on.
        assert_eq!(of(&m), "3abe95242a8789bc8f8ded84af06bf0c");
        m.insert("b".to_owned(), "2".to_owned());
        m.insert("a".to_owned(), "1".to_owned());
        let tag = of(&m);
        assert_eq!(tag, "f94aab2fcc14fd2d153b39695f5d1174");
        let mut other = m.clone();
        other.insert("a".to_owned(), "x".to_owned());
        assert_ne!(of(&other), tag);
    }

    #[test]
    fn if_match_forms() {
        let mut h = HeaderMap::new();
        assert!(matches(&h, "abc"));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"zzz\", W/\"abc\""));
        assert!(matches(&h, "abc"));
        assert!(!matches(&h, "abd"));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert!(matches(&h, "anything"));
    }
}
