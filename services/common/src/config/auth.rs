//! The Keystone and policy sections: `[keystone_authtoken]` with keystonemiddleware's option
//! names, and `[oslo_policy]` with oslo.policy's.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[keystone_authtoken]`: how the API validates Keystone tokens under
/// `auth_strategy = "keystone"` (keystonemiddleware's `auth_token` options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeystoneAuthtoken {
    /// The Keystone endpoint clients authenticate at, sent back in
    /// `WWW-Authenticate: Keystone uri="..."` with every 401; defaults to `auth_url`.
    pub www_authenticate_uri: Option<String>,
    /// Where Ember itself reaches Keystone, e.g. `http://keystone:5000` or `.../v3` (plain
    /// HTTP: Ember's client has no TLS, so use Keystone's internal endpoint).
    pub auth_url: Option<String>,
    /// Only `password` is supported: Ember logs in as its service user.
    pub auth_type: String,
    /// Ember's service user, which needs the `service` role (or an admin one) to validate
    /// tokens.
    pub username: Option<String>,
    pub password: Option<String>,
    /// The project the service user's own token is scoped to (usually `service`).
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
    /// Roles a service token (`X-Service-Token`) must hold one of to count as a service's.
    pub service_token_roles: Vec<String>,
    /// Refuse a request whose service token holds none of `service_token_roles`.
    pub service_token_roles_required: bool,
    /// Seconds a validated token is trusted without asking Keystone again (never past its
    /// expiry); `-1` asks Keystone for every request.
    pub token_cache_time: i64,
    /// Ember's own: how many validated tokens the cache holds at most.
    pub token_cache_size: usize,
    /// Seconds to wait for Keystone to accept a connection and to answer; past it the
    /// request gets a 503.
    pub http_connect_timeout: u64,
    pub http_request_timeout: u64,
}

impl Default for KeystoneAuthtoken {
    fn default() -> Self {
        Self {
            www_authenticate_uri: None,
            auth_url: None,
            auth_type: "password".into(),
            username: None,
            password: None,
            project_name: "service".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
            service_token_roles: vec!["service".into()],
            service_token_roles_required: false,
            token_cache_time: 300,
            token_cache_size: 10_000,
            http_connect_timeout: 2,
            http_request_timeout: 5,
        }
    }
}

impl KeystoneAuthtoken {
    /// The first missing or wrong option for `auth_strategy = "keystone"`, as (option, reason).
    pub fn check(&self) -> Option<(&'static str, &'static str)> {
        let missing = [
            ("keystone_authtoken.auth_url", &self.auth_url),
            ("keystone_authtoken.username", &self.username),
            ("keystone_authtoken.password", &self.password),
        ];
        if let Some((name, _)) = missing.iter().find(|(_, v)| v.as_deref().is_none_or(str::is_empty)) {
            return Some((name, "is needed with auth_strategy = \"keystone\""));
        }
        let url = self.auth_url.as_deref().unwrap_or_default();
        if !url.starts_with("http://") {
            // Ember's HTTP client is built without TLS: reach Keystone's internal endpoint.
            return Some((
                "keystone_authtoken.auth_url",
                "must start with http:// (TLS to Keystone is not built in)",
            ));
        }
        if self.auth_type != "password" {
            return Some(("keystone_authtoken.auth_type", "only \"password\" is supported"));
        }
        if self.token_cache_time < -1 {
            return Some(("keystone_authtoken.token_cache_time", "must be -1 (no cache) or more"));
        }
        if self.http_connect_timeout == 0 || self.http_request_timeout == 0 {
            return Some((
                "keystone_authtoken.http_connect_timeout",
                "timeouts (http_connect_timeout, http_request_timeout) must be at least 1",
            ));
        }
        None
    }
}

/// `[oslo_policy]`: where the operator's policy overrides are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OsloPolicy {
    /// A YAML (or JSON) file of `rule name: check string`, Cinder's `policy.yaml`; its rules
    /// replace the defaults of the same name. Unset: Cinder's defaults only.
    pub policy_file: Option<PathBuf>,
}
