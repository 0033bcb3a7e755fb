//! The message envelope every transport carries: method, JSON arguments, version and caller context.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::RemoteError;

/// What the handler of a message returns: a JSON result or an error for the caller.
pub type Outcome = Result<Value, RemoteError>;

/// Who asked for the work, carried with every message as Cinder's `_context_*` fields are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default)]
    pub is_admin: bool,
    /// The API request this message belongs to (`req-<uuid>`), for tracing across processes.
    #[serde(default)]
    pub request_id: String,
}

impl Context {
    /// A context for work that Ember starts on its own (periodic tasks, capability reports).
    pub fn internal() -> Self {
        Self { is_admin: true, request_id: new_request_id(), ..Self::default() }
    }
}

/// A new request id in Cinder's format, `req-<uuid>`.
pub fn new_request_id() -> String {
    format!("req-{}", Uuid::new_v4())
}

/// Where a call's reply goes; present only on calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    /// The correlation id that ties the reply to the call (oslo's `_msg_id`).
    pub msg_id: String,
    /// The caller's reply queue (oslo's `_reply_q`).
    pub reply_to: String,
    /// How long the caller waits, so a server can skip work nobody waits for any more.
    pub timeout_ms: u64,
}

/// One RPC message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub method: String,
    pub args: Value,
    /// The interface version the sender prepared the message for, `"MAJOR.MINOR"`.
    pub version: String,
    /// Unique per message and kept across redeliveries, so receivers can drop duplicates.
    pub message_id: String,
    pub context: Context,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<CallInfo>,
}

impl Envelope {
    /// Builds a message with a fresh message id.
    pub fn new(context: Context, method: impl Into<String>, args: Value, version: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            args,
            version: version.into(),
            message_id: Uuid::new_v4().simple().to_string(),
            context,
            call: None,
        }
    }
}

/// The answer to a call, as it travels on the reply queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub msg_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RemoteError>,
}

impl Reply {
    /// Wraps a handler's outcome for the call with correlation id `msg_id`.
    pub fn new(msg_id: String, outcome: Outcome) -> Self {
        match outcome {
            Ok(value) => Self { msg_id, result: Some(value), failure: None },
            Err(err) => Self { msg_id, result: None, failure: Some(err) },
        }
    }

    /// Turns the reply back into the handler's outcome.
    pub fn into_outcome(self) -> Outcome {
        match self.failure {
            Some(err) => Err(err),
            None => Ok(self.result.unwrap_or(Value::Null)),
        }
    }
}

/// An RPC interface version, `MAJOR.MINOR`, compared as Cinder does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    /// Parses `"3"` or `"3.12"`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = match text.split_once('.') {
            Some((major, minor)) => (major, minor),
            None => (text, "0"),
        };
        Some(Self { major: major.parse().ok()?, minor: minor.parse().ok()? })
    }

    /// Whether a server at version `self` can handle a message sent at `sent`: the major must
    /// match and the minor may not be newer than the server's.
    pub fn can_handle(self, sent: Version) -> bool {
        self.major == sent.major && sent.minor <= self.minor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_cinder() {
        let server = Version::parse("3.12").unwrap();
        let cases =
            [("3.0", true), ("3.12", true), ("3", true), ("3.13", false), ("2.0", false), ("4.0", false)];
        for (sent, ok) in cases {
            assert_eq!(server.can_handle(Version::parse(sent).unwrap()), ok, "{sent}");
        }
        for bad in ["", "x", "3.x", "3.1.2", "-1.0"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn envelope_round_trips_through_json() {
        let mut envelope = Envelope::new(
            Context { user_id: Some("u".into()), roles: vec!["admin".into()], ..Context::internal() },
            "create_volume",
            serde_json::json!({"volume_id": "v1", "size": 1}),
            "3.0",
        );
        envelope.call = Some(CallInfo { msg_id: "m".into(), reply_to: "reply_x".into(), timeout_ms: 5 });
        let text = serde_json::to_string(&envelope).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);
    }

    #[test]
    fn reply_carries_result_or_failure() {
        let ok = Reply::new("m".into(), Ok(serde_json::json!(7)));
        assert_eq!(ok.into_outcome(), Ok(serde_json::json!(7)));
        let err = RemoteError::new("VolumeNotFound", "no such volume");
        let failed: Reply =
            serde_json::from_str(&serde_json::to_string(&Reply::new("m".into(), Err(err.clone()))).unwrap())
                .unwrap();
        assert_eq!(failed.into_outcome(), Err(err));
    }
}
