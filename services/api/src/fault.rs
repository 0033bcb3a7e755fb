//! Cinder's fault bodies: `{"badRequest": {"code": 400, "message": "..."}}` and friends.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use ember_common::{Error, ErrorKind, ServiceError};

/// An error answered to the client in Cinder's fault format.
///
/// The message is shown to the client as is; 5xx faults carry a generic message and
/// the details go to the log where the fault is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub status: StatusCode,
    pub message: String,
}

impl Fault {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn over_limit(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// A failed `If-Match`: answered as Cinder does (`webob.Response(status_int=412)`), with
    /// no body; the message is only for logs.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, message)
    }

    /// A 500 whose details were logged by the caller; the client sees a generic message.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server has either erred or is incapable of performing the requested operation.",
        )
    }

    /// Cinder's fault name for a status (`wsgi.Fault._fault_names`).
    pub fn name(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "badMethod",
            406 => "notAcceptable",
            409 => "conflictingRequest",
            413 => "overLimit",
            415 => "badMediaType",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "computeFault",
        }
    }

    /// The JSON body of this fault.
    pub fn body(&self) -> serde_json::Value {
        let code = self.status.as_u16();
        let mut inner = json!({ "code": code, "message": self.message });
        if code == 413 {
            inner["retryAfter"] = json!("0");
        }
        json!({ Self::name(self.status): inner })
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        if self.status == StatusCode::PRECONDITION_FAILED {
            // Cinder's 412 is a bare response, not a fault: clients expect no body.
            return StatusCode::PRECONDITION_FAILED.into_response();
        }
        let body = self.body().to_string();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
        }
        response
    }
}

impl From<ServiceError> for Fault {
    /// The kind decides the status and fault name; internal errors keep their details in the log.
    fn from(err: ServiceError) -> Self {
        if err.kind == ErrorKind::Internal {
            tracing::error!(message = %err.message, resource = ?err.resource, "internal error");
            return Fault::internal();
        }
        let status =
            StatusCode::from_u16(err.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Fault::new(status, err.message)
    }
}

impl From<Error> for Fault {
    fn from(err: Error) -> Self {
        match &err {
            // Cinder's wording: "Volume <id> could not be found."
            Error::NotFound { kind, id } => {
                Fault::not_found(format!("{} {id} could not be found.", capitalized(kind.as_str())))
            }
            Error::Invalid(reason) => Fault::bad_request(format!("Invalid input received: {reason}")),
            Error::Storage(detail) => {
                tracing::error!(%detail, "storage error");
                Fault::internal()
            }
            Error::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                ServiceError::from(&err).into()
            }
            _ => ServiceError::from(&err).into(),
        }
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, Fault>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_cinder() {
        let f = Fault::bad_request("Invalid input");
        assert_eq!(f.body(), json!({"badRequest": {"code": 400, "message": "Invalid input"}}));
        let f = Fault::not_found("Volume x could not be found.");
        assert_eq!(f.body()["itemNotFound"]["code"], 404);
        let f = Fault::over_limit("VolumeLimitExceeded: ...");
        assert_eq!(f.body()["overLimit"]["retryAfter"], "0");
        assert_eq!(Fault::name(StatusCode::CONFLICT), "conflictingRequest");
        assert_eq!(Fault::name(StatusCode::BAD_GATEWAY), "computeFault");
    }

    #[test]
    fn service_errors_map_to_their_status() {
        let quota = Fault::from(ServiceError::new(ErrorKind::OverLimit, "VolumeLimitExceeded: too many"));
        assert_eq!(quota.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(quota.into_response().headers()[header::RETRY_AFTER], "0");
        let internal = Fault::from(ServiceError::new(ErrorKind::Internal, "db password wrong"));
        assert!(!internal.message.contains("password"));
        let missing = Fault::from(Error::not_found(ember_common::ResourceKind::VolumeType, "x"));
        assert_eq!(missing.message, "Volume type x could not be found.");
        assert_eq!(Fault::from(Error::Storage("secret".into())).status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
