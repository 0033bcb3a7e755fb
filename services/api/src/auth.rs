//! Who is calling: Cinder's noauth tokens (`user:project`) or tokens from the configuration.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::fault::Fault;

/// The token header (Keystone's, and cinderclient's noauth plugin's).
pub const TOKEN_HEADER: &str = "x-auth-token";

/// How tokens are checked.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Cinder's noauth: `X-Auth-Token: user:project` names the caller, who is an admin.
    #[default]
    Noauth,
    /// Only the tokens listed in the configuration are accepted.
    Token,
}

/// One configured token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    pub user_id: String,
    pub project_id: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The authentication settings.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub strategy: Strategy,
    /// Token → identity, used by [`Strategy::Token`].
    #[serde(default)]
    pub tokens: HashMap<String, TokenEntry>,
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub project_id: String,
    pub roles: Vec<String>,
    pub is_admin: bool,
}

impl Caller {
    /// Refuses callers without the admin role.
    pub fn require_admin(&self) -> Result<(), Fault> {
        if self.is_admin {
            Ok(())
        } else {
            Err(Fault::forbidden("Policy doesn't allow this operation to be performed."))
        }
    }
}

impl AuthConfig {
    /// The caller a token names, or why it is refused.
    pub fn authenticate(&self, token: &str) -> Result<Caller, Fault> {
        match self.strategy {
            Strategy::Noauth => {
                // Cinder's NoAuthMiddleware: `user:project`, or a bare user that is its own project.
                let (user, project) = token.split_once(':').unwrap_or((token, token));
                let project = if project.is_empty() { user } else { project };
                if user.is_empty() || !valid_id(user) || !valid_id(project) {
                    return Err(Fault::unauthorized("Authentication required"));
                }
                Ok(Caller {
                    user_id: user.to_owned(),
                    project_id: project.to_owned(),
                    roles: vec!["admin".to_owned()],
                    is_admin: true,
                })
            }
            Strategy::Token => {
                let entry =
                    self.tokens.get(token).ok_or_else(|| Fault::unauthorized("Authentication required"))?;
                Ok(Caller {
                    user_id: entry.user_id.clone(),
                    project_id: entry.project_id.clone(),
                    is_admin: entry.roles.iter().any(|r| r == "admin"),
                    roles: entry.roles.clone(),
                })
            }
        }
    }
}

/// Ids are printable, short and free of separators that would confuse URLs.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Middleware for `/v3/{project_id}/...`: authenticates the token and checks that the
/// project in the URL is the caller's, as Cinder does ("Malformed request url").
pub async fn layer(State(config): State<Arc<AuthConfig>>, mut request: Request, next: Next) -> Response {
    let caller = match authenticate(&config, request.headers()) {
        Ok(c) => c,
        Err(fault) => return fault.into_response(),
    };
    // Inside a nested router the path is stripped: read the one the client sent.
    let path = request.extensions().get::<OriginalUri>().map_or(request.uri().path(), |u| u.0.path());
    let projectless = request.extensions().get::<crate::projectless::Projectless>().is_some();
    if !projectless && url_project(path).is_some_and(|project| project != caller.project_id) {
        return Fault::bad_request("Malformed request url").into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn authenticate(config: &AuthConfig, headers: &HeaderMap) -> Result<Caller, Fault> {
    let token = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Fault::unauthorized("Authentication required"))?;
    config.authenticate(token)
}

/// The `{project_id}` segment of `/v3/{project_id}/...`.
pub fn url_project(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v3/")?;
    let segment = rest.split('/').next()?;
    (!segment.is_empty()).then_some(segment)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Fault::unauthorized("Authentication required"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noauth_tokens_name_user_and_project() {
        let config = AuthConfig::default();
        let c = config.authenticate("alice:p1").unwrap();
        assert_eq!((c.user_id.as_str(), c.project_id.as_str(), c.is_admin), ("alice", "p1", true));
        let c = config.authenticate("bob").unwrap();
        assert_eq!(c.project_id, "bob");
        assert!(config.authenticate(":p1").is_err());
        assert!(config.authenticate("a:b/c").is_err());
    }

    #[test]
    fn configured_tokens_carry_roles() {
        let mut config = AuthConfig { strategy: Strategy::Token, ..Default::default() };
        config.tokens.insert(
            "s3cret".into(),
            TokenEntry { user_id: "u".into(), project_id: "p".into(), roles: vec!["member".into()] },
        );
        let c = config.authenticate("s3cret").unwrap();
        assert!(!c.is_admin);
        assert!(c.require_admin().is_err());
        assert!(config.authenticate("u:p").is_err());
    }

    #[test]
    fn url_project_is_the_first_segment_after_v3() {
        assert_eq!(url_project("/v3/p1/volumes"), Some("p1"));
        assert_eq!(url_project("/v3/"), None);
        assert_eq!(url_project("/"), None);
    }
}
