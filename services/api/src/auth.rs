//! Who is calling and what they may do: Cinder's noauth tokens (`user:project`), tokens from
//! the configuration, or Keystone tokens ([`crate::keystone`]); then Cinder's policy
//! ([`crate::policy`]) for the route, checked once per request.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body as RawBody;
use axum::extract::{FromRequestParts, MatchedPath, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::extract::MAX_BODY_BYTES;
use crate::fault::Fault;
use crate::keystone::{Keystone, KeystoneError};
use crate::policy::{self, Creds, Policy, Target};

/// The token header (Keystone's, and cinderclient's noauth plugin's).
pub const TOKEN_HEADER: &str = "x-auth-token";
/// A service's own token beside the user's (keystonemiddleware's service tokens).
pub const SERVICE_TOKEN_HEADER: &str = "x-service-token";

/// How tokens are checked.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Cinder's noauth: `X-Auth-Token: user:project` names the caller, who is an admin.
    #[default]
    Noauth,
    /// Only the tokens listed in the configuration are accepted.
    Token,
    /// Keystone tokens, validated by [`AuthConfig::keystone`].
    Keystone,
}

/// One configured token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    pub user_id: String,
    pub project_id: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The authentication settings and the policy.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub strategy: Strategy,
    /// Token → identity, used by [`Strategy::Token`].
    pub tokens: HashMap<String, TokenEntry>,
    /// The validator of [`Strategy::Keystone`].
    pub keystone: Option<Arc<Keystone>>,
    /// Cinder's rules, with the operator's overrides.
    pub policy: Arc<Policy>,
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub project_id: String,
    pub roles: Vec<String>,
    /// Cinder's `context.is_admin`: the policy's `context_is_admin` rule.
    pub is_admin: bool,
    /// The policy granted this request a rule whose default is an admin's (an admin
    /// action, or one an operator opened to others): the handler's admin checks pass.
    pub admin_rule_granted: bool,
}

impl Caller {
    /// Refuses callers who are not admins, unless the policy granted this very request an
    /// admin rule.
    pub fn require_admin(&self) -> Result<(), Fault> {
        if self.is_admin || self.admin_rule_granted {
            Ok(())
        } else {
            Err(Fault::forbidden("Policy doesn't allow this operation to be performed."))
        }
    }
}

/// Keystone's bootstrap roles imply one another (admin → member → reader); Keystone's
/// tokens list the implied roles, and the other strategies get them here.
fn with_implied(mut roles: Vec<String>) -> Vec<String> {
    for (role, implied) in [("admin", "member"), ("member", "reader")] {
        if roles.iter().any(|r| r.eq_ignore_ascii_case(role)) && !roles.iter().any(|r| r == implied) {
            roles.push(implied.to_owned());
        }
    }
    roles
}

impl AuthConfig {
    /// The caller a token names, or why it is refused (noauth and configured tokens).
    pub fn authenticate(&self, token: &str) -> Result<Caller, Fault> {
        let (user_id, project_id, roles) = match self.strategy {
            Strategy::Noauth => {
                // Cinder's NoAuthMiddleware: `user:project`, or a bare user that is its own project.
                let (user, project) = token.split_once(':').unwrap_or((token, token));
                let project = if project.is_empty() { user } else { project };
                if user.is_empty() || !valid_id(user) || !valid_id(project) {
                    return Err(Fault::unauthorized("Authentication required"));
                }
                (user.to_owned(), project.to_owned(), vec!["admin".to_owned()])
            }
            Strategy::Token => {
                let entry =
                    self.tokens.get(token).ok_or_else(|| Fault::unauthorized("Authentication required"))?;
                (entry.user_id.clone(), entry.project_id.clone(), entry.roles.clone())
            }
            Strategy::Keystone => return Err(Fault::unauthorized("Authentication required")),
        };
        Ok(self.caller(user_id, project_id, with_implied(roles)))
    }

    /// The caller a token names, asking Keystone under [`Strategy::Keystone`].
    pub async fn authenticate_async(&self, token: &str, headers: &HeaderMap) -> Result<Caller, Fault> {
        let Some(keystone) = self.keystone.as_ref().filter(|_| self.strategy == Strategy::Keystone) else {
            return self.authenticate(token);
        };
        let identity = keystone.validate(token).await.map_err(keystone_fault)?;
        // Cinder needs a project: a domain- or system-scoped token cannot use the API.
        let project_id =
            identity.project_id.clone().ok_or_else(|| Fault::unauthorized("Authentication required"))?;
        if let Some(service) = header_token(headers, SERVICE_TOKEN_HEADER) {
            let service = keystone.validate(service).await.map_err(keystone_fault)?;
            let roles = &keystone.options().service_token_roles;
            let holds = service.roles.iter().any(|r| roles.iter().any(|w| w.eq_ignore_ascii_case(r)));
            if !holds && keystone.options().service_token_roles_required {
                return Err(Fault::unauthorized("Authentication required"));
            }
        }
        Ok(self.caller(identity.user_id.clone(), project_id, identity.roles.clone()))
    }

    fn caller(&self, user_id: String, project_id: String, roles: Vec<String>) -> Caller {
        let creds = Creds { user_id: &user_id, project_id: &project_id, roles: &roles, is_admin: false };
        let target = Target { project_id: &project_id, user_id: &user_id };
        let is_admin = self.policy.allows("context_is_admin", &creds, &target);
        Caller { user_id, project_id, roles, is_admin, admin_rule_granted: false }
    }

    /// Checks `rule` for `caller` on `target_project`; records an admin rule's grant.
    pub fn enforce(&self, caller: &mut Caller, rule: &str, target_project: &str) -> Result<(), Fault> {
        let creds = Creds {
            user_id: &caller.user_id,
            project_id: &caller.project_id,
            roles: &caller.roles,
            is_admin: caller.is_admin,
        };
        let target = Target { project_id: target_project, user_id: &caller.user_id };
        if !self.policy.allows(rule, &creds, &target) {
            return Err(Fault::forbidden(format!("Policy doesn't allow {rule} to be performed.")));
        }
        caller.admin_rule_granted |= policy::is_admin_rule(rule);
        Ok(())
    }

    /// The `WWW-Authenticate` value of a 401 under Keystone (keystonemiddleware's).
    fn www_authenticate(&self) -> Option<HeaderValue> {
        let keystone = self.keystone.as_ref().filter(|_| self.strategy == Strategy::Keystone)?;
        HeaderValue::from_str(&format!("Keystone uri=\"{}\"", keystone.options().www_authenticate_uri)).ok()
    }
}

fn keystone_fault(err: KeystoneError) -> Fault {
    match err {
        KeystoneError::Invalid => Fault::unauthorized("Authentication required"),
        KeystoneError::Unavailable(_) => {
            Fault::new(StatusCode::SERVICE_UNAVAILABLE, crate::keystone::UNAVAILABLE)
        }
    }
}

/// Ids are printable, short and free of separators that would confuse URLs.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Middleware for `/v3/{project_id}/...`: authenticates the token, checks that the
/// project in the URL is the caller's, as Cinder does ("Malformed request url"), then the
/// policy rule of the route (and of the action, read from the body of an action).
pub async fn layer(State(config): State<Arc<AuthConfig>>, request: Request, next: Next) -> Response {
    match authorize(&config, request).await {
        Ok(request) => next.run(request).await,
        Err(fault) => {
            let unauthorized = fault.status == StatusCode::UNAUTHORIZED;
            let mut response = fault.into_response();
            if unauthorized && let Some(value) = config.www_authenticate() {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            }
            response
        }
    }
}

async fn authorize(config: &AuthConfig, mut request: Request) -> Result<Request, Fault> {
    let token = header_token(request.headers(), TOKEN_HEADER)
        .ok_or_else(|| Fault::unauthorized("Authentication required"))?
        .to_owned();
    let mut caller = config.authenticate_async(&token, request.headers()).await?;
    // Inside a nested router the path is stripped: read the one the client sent.
    let path = request.extensions().get::<OriginalUri>().map_or(request.uri().path(), |u| u.0.path());
    let projectless = request.extensions().get::<crate::projectless::Projectless>().is_some();
    if !projectless && url_project(path).is_some_and(|project| project != caller.project_id) {
        return Err(Fault::bad_request("Malformed request url"));
    }
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map(|m| project_route(m.as_str()).to_owned());
    let route = route.unwrap_or_default();
    let query = request.uri().query().unwrap_or_default();
    // Quota sets name their project in the path; everything else acts in the caller's.
    let target = match route.as_str() {
        "/os-quota-sets/{id}" | "/os-quota-sets/{id}/defaults" => {
            path.rsplit("/os-quota-sets/").next().and_then(|rest| rest.split('/').next()).unwrap_or_default()
        }
        _ => caller.project_id.as_str(),
    }
    .to_owned();
    if let Some(collection) = policy::action_collection(&method, &route) {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| Fault::over_limit("Request is too large."))?;
        for action in action_names(&bytes) {
            config.enforce(&mut caller, policy::action_rule(collection, &action), &target)?;
        }
        request = Request::from_parts(parts, RawBody::from(bytes));
    } else {
        config.enforce(&mut caller, policy::rule_for(&method, &route, query), &target)?;
    }
    request.extensions_mut().insert(caller);
    Ok(request)
}

/// The keys of an action body (`{"os-extend": {...}}`); none when it is not a JSON object
/// (the handler answers that with a 400, after the default write rule was checked).
fn action_names(bytes: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes) {
        Ok(map) if !map.is_empty() => map.into_iter().map(|(k, _)| k).collect(),
        _ => vec![String::new()],
    }
}

/// The route under the project: `/v3/{project_id}/volumes/{id}` → `/volumes/{id}`.
fn project_route(matched: &str) -> &str {
    matched.strip_prefix("/v3/{project_id}").unwrap_or(matched)
}

fn header_token<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|t| !t.is_empty())
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
        let mut c = config.authenticate("s3cret").unwrap();
        assert!(!c.is_admin);
        assert_eq!(c.roles, ["member", "reader"], "member implies reader, as in Keystone");
        assert!(c.require_admin().is_err());
        assert!(config.authenticate("u:p").is_err());
        // A granted admin rule lets the handler's admin check pass for this request only.
        assert!(config.enforce(&mut c, "volume:create", "p").is_ok());
        assert!(c.require_admin().is_err());
        let err =
            config.enforce(&mut c, "volume_extension:volume_admin_actions:reset_status", "p").unwrap_err();
        assert_eq!(
            err.message,
            "Policy doesn't allow volume_extension:volume_admin_actions:reset_status to be performed."
        );
        let mut open = Policy::default();
        open.apply("t", "volume_extension:volume_admin_actions:reset_status: rule:project_member_or_admin")
            .unwrap();
        let config = AuthConfig { policy: Arc::new(open), ..config };
        config.enforce(&mut c, "volume_extension:volume_admin_actions:reset_status", "p").unwrap();
        assert!(c.require_admin().is_ok());
    }

    #[test]
    fn action_names_are_the_body_keys() {
        assert_eq!(action_names(br#"{"os-extend": {"new_size": 2}}"#), ["os-extend"]);
        assert_eq!(action_names(b"not json"), [""]);
        assert_eq!(action_names(b"{}"), [""]);
        assert_eq!(project_route("/v3/{project_id}/volumes/{id}"), "/volumes/{id}");
    }

    #[test]
    fn url_project_is_the_first_segment_after_v3() {
        assert_eq!(url_project("/v3/p1/volumes"), Some("p1"));
        assert_eq!(url_project("/v3/"), None);
        assert_eq!(url_project("/"), None);
    }
}
