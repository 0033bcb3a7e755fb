//! Request bodies parsed into typed values, with Cinder's errors for every way they go wrong.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::fault::Fault;

/// The largest body accepted (Cinder's `osapi_max_request_body_size`, 112 KiB).
pub const MAX_BODY_BYTES: usize = 114_688;

/// A JSON body of type `T`; malformed JSON or a wrong shape is a 400 `badRequest` that
/// says what is wrong, and an oversized body a 413.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Fault;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
            return Err(too_large());
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|_| too_large())?;
        parse(&bytes).map(Body)
    }
}

/// The body types Cinder deserializes (its `_supported_content_types`).
const JSON_TYPES: &[&str] = &["application/json", "application/vnd.openstack.volume+json"];

/// Refuses a request whose body is not declared as JSON (Cinder's `InvalidContentType`)
/// before any handler reads it: a form, XML, plain text or an undeclared body changes
/// nothing. Requests without a body pass whatever they declare.
pub async fn json_content_type(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    if has_body {
        let declared = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()));
        let essence = declared.as_deref().map(|v| v.split(';').next().unwrap_or_default().trim());
        if !essence.is_some_and(|e| JSON_TYPES.iter().any(|t| e.eq_ignore_ascii_case(t))) {
            let shown = declared.as_deref().unwrap_or("None");
            return Fault::bad_request(format!("Invalid content type {shown}.")).into_response();
        }
    }
    next.run(request).await
}

/// Parses a body already read.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Fault> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Fault::bad_request("Missing request body."));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Fault::bad_request(format!("Invalid input received: {e}")),
        _ => Fault::bad_request("Malformed request body"),
    })
}

fn too_large() -> Fault {
    Fault::over_limit("Request is too large.")
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Thing {
        #[allow(dead_code)]
        size: u32,
    }

    #[test]
    fn bad_bodies_are_bad_requests() {
        assert_eq!(parse::<Thing>(b"{").unwrap_err().status.as_u16(), 400);
        assert_eq!(parse::<Thing>(b"").unwrap_err().message, "Missing request body.");
        let e = parse::<Thing>(br#"{"size": "x"}"#).unwrap_err();
        assert!(e.message.starts_with("Invalid input received"), "{}", e.message);
        assert_eq!(parse::<Thing>(&vec![b' '; MAX_BODY_BYTES + 1]).unwrap_err().status.as_u16(), 413);
        assert!(parse::<Thing>(br#"{"size": 3}"#).is_ok());
    }
}
