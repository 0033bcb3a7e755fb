//! Microversions: `OpenStack-API-Version: volume 3.N`, negotiated per request and echoed.

use std::fmt;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::fault::Fault;

/// The header a client names its microversion in (and the one echoed back).
pub const HEADER: &str = "openstack-api-version";
/// The older header some clients still send.
pub const LEGACY_HEADER: &str = "openstack-volume-microversion";
/// The service type that prefixes the version in [`HEADER`].
pub const SERVICE: &str = "volume";

/// A microversion `3.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u16,
    pub minor: u16,
}

/// The lowest microversion served: the default when a request names none.
pub const MIN: ApiVersion = ApiVersion::new(3, 0);
/// The highest microversion served (Cinder 29's).
pub const MAX: ApiVersion = ApiVersion::new(3, 71);

impl ApiVersion {
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// True when this request's version is at least `3.minor`.
    pub fn at_least(self, minor: u16) -> bool {
        self >= ApiVersion::new(3, minor)
    }

    /// Parses `3.N` (no spaces, no leading `+`).
    fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return None;
        }
        Some(Self::new(major.parse().ok()?, minor.parse().ok()?))
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a requested version cannot be served, with the text to echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    Malformed(String),
    Unsupported(String),
}

/// The version a request asks for, from its headers.
pub fn negotiate(headers: &HeaderMap) -> Result<ApiVersion, VersionError> {
    let Some(raw) = requested(headers) else { return Ok(MIN) };
    let wanted = raw.trim();
    if wanted.eq_ignore_ascii_case("latest") {
        return Ok(MAX);
    }
    let version = ApiVersion::parse(wanted).ok_or_else(|| VersionError::Malformed(wanted.to_owned()))?;
    if version < MIN || version > MAX {
        return Err(VersionError::Unsupported(wanted.to_owned()));
    }
    Ok(version)
}

/// The version text after `volume` in the new header, or the legacy header's value.
fn requested(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(HEADER) {
        let text = value.to_str().ok()?;
        for item in text.split(',') {
            let mut words = item.split_whitespace();
            if words.next().is_some_and(|s| s.eq_ignore_ascii_case(SERVICE)) {
                return Some(words.collect::<Vec<_>>().join(" "));
            }
        }
    }
    headers.get(LEGACY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Middleware: puts the negotiated [`ApiVersion`] in the request's extensions, refuses
/// versions out of range (406) or malformed (400), and echoes the version on every answer.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let (version, echo) = match negotiate(request.headers()) {
        Ok(v) => (v, v.to_string()),
        Err(VersionError::Malformed(text)) => {
            let fault = Fault::bad_request(format!(
                "API Version String {text} is of invalid format. Must be of format MajorNum.MinorNum."
            ));
            return with_echo(fault.into_response(), &text);
        }
        Err(VersionError::Unsupported(text)) => {
            let fault = Fault::new(
                StatusCode::NOT_ACCEPTABLE,
                format!("Version {text} is not supported by the API. Minimum is {MIN} and maximum is {MAX}."),
            );
            return with_echo(fault.into_response(), &text);
        }
    };
    request.extensions_mut().insert(version);
    with_echo(next.run(request).await, &echo)
}

fn with_echo(mut response: Response, version: &str) -> Response {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!("{SERVICE} {version}")) {
        headers.insert(HEADER, value);
    }
    headers.append(header::VARY, HeaderValue::from_static("OpenStack-API-Version"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    type Case = (&'static [(&'static str, &'static str)], Result<ApiVersion, VersionError>);

    #[test]
    fn negotiation_follows_cinder() {
        let cases: &[Case] = &[
            (&[], Ok(MIN)),
            (&[(HEADER, "volume 3.27")], Ok(ApiVersion::new(3, 27))),
            (&[(HEADER, "volume latest")], Ok(MAX)),
            (&[(HEADER, "compute 2.1, volume 3.5")], Ok(ApiVersion::new(3, 5))),
            (&[(HEADER, "compute 2.1")], Ok(MIN)),
            (&[(LEGACY_HEADER, "3.10")], Ok(ApiVersion::new(3, 10))),
            (&[(HEADER, "volume 3.999")], Err(VersionError::Unsupported("3.999".into()))),
            (&[(HEADER, "volume 2.0")], Err(VersionError::Unsupported("2.0".into()))),
            (&[(HEADER, "volume 3")], Err(VersionError::Malformed("3".into()))),
            (&[(HEADER, "volume 3.x")], Err(VersionError::Malformed("3.x".into()))),
            (&[(HEADER, "volume -3.1")], Err(VersionError::Malformed("-3.1".into()))),
            (&[(HEADER, "volume 99999999999.1")], Err(VersionError::Malformed("99999999999.1".into()))),
        ];
        for (pairs, want) in cases {
            assert_eq!(&negotiate(&headers(pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn at_least_compares_minor_versions() {
        assert!(ApiVersion::new(3, 27).at_least(27));
        assert!(!ApiVersion::new(3, 26).at_least(27));
    }
}
