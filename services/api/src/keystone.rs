//! Keystone tokens, validated as keystonemiddleware's `auth_token` does: Ember logs in as its
//! service user and asks `GET /v3/auth/tokens` (`X-Subject-Token`) about each token it has
//! not seen, then trusts the answer from a bounded cache until the token expires or
//! `token_cache_time` passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

/// How long a refused token is remembered as refused.
const NEGATIVE_CACHE_TIME: Duration = Duration::from_secs(10);

/// keystonemiddleware's message when Keystone cannot be reached.
pub const UNAVAILABLE: &str = "The Keystone service is temporarily unavailable.";

/// How to reach Keystone and how long to trust its answers (from `[keystone_authtoken]`).
#[derive(Clone)]
pub struct KeystoneOptions {
    /// Keystone's v3 root, e.g. `http://127.0.0.1:5000/v3` (a URL without `/v3` gets it).
    pub auth_url: String,
    /// Sent in `WWW-Authenticate: Keystone uri="..."`.
    pub www_authenticate_uri: String,
    pub username: String,
    pub password: String,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
    pub service_token_roles: Vec<String>,
    pub service_token_roles_required: bool,
    /// `None`: every request asks Keystone.
    pub token_cache_time: Option<Duration>,
    pub token_cache_size: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl std::fmt::Debug for KeystoneOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneOptions")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("project_name", &self.project_name)
            .field("token_cache_time", &self.token_cache_time)
            .finish_non_exhaustive()
    }
}

/// Who a valid token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    /// `None` for a token not scoped to a project.
    pub project_id: Option<String>,
    pub roles: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystoneError {
    /// Keystone does not know the token, or it expired or was revoked: a 401.
    #[error("the token is not valid")]
    Invalid,
    /// Keystone could not answer (down, slow, refusing Ember's own login): a 503.
    #[error("keystone is unavailable: {0}")]
    Unavailable(String),
}

/// The token validator: one per API process, shared by every request.
pub struct Keystone {
    options: KeystoneOptions,
    http: reqwest::Client,
    /// Ember's own token and when to log in again.
    service_token: tokio::sync::Mutex<Option<(String, Instant)>>,
    cache: TokenCache,
}

impl std::fmt::Debug for Keystone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystone").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Keystone {
    pub fn new(mut options: KeystoneOptions) -> Result<Self, KeystoneError> {
        let root = options.auth_url.trim_end_matches('/');
        options.auth_url = if root.ends_with("/v3") { root.to_owned() } else { format!("{root}/v3") };
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| KeystoneError::Unavailable(format!("HTTP client: {e}")))?;
        let cache = TokenCache::new(options.token_cache_size);
        Ok(Self { options, http, service_token: tokio::sync::Mutex::new(None), cache })
    }

    pub fn options(&self) -> &KeystoneOptions {
        &self.options
    }

    /// Who `token` stands for: from the cache, or from Keystone.
    pub async fn validate(&self, token: &str) -> Result<Arc<Identity>, KeystoneError> {
        if let Some(known) = self.cache.get(token, Instant::now()) {
            return known.ok_or(KeystoneError::Invalid);
        }
        let Some(ttl) = self.options.token_cache_time else {
            return self.ask(token).await.map(Arc::new);
        };
        let now = Instant::now();
        match self.ask(token).await {
            Ok(identity) => {
                let identity = Arc::new(identity);
                let left = (identity.expires_at - Utc::now()).to_std().unwrap_or_default();
                self.cache.insert(token, Some(identity.clone()), now + ttl.min(left), now);
                Ok(identity)
            }
            // As keystonemiddleware, a refused token is remembered too (for less time), so
            // a client retrying a bad token does not send every retry to Keystone.
            Err(KeystoneError::Invalid) => {
                self.cache.insert(token, None, now + ttl.min(NEGATIVE_CACHE_TIME), now);
                Err(KeystoneError::Invalid)
            }
            Err(unavailable) => Err(unavailable),
        }
    }

    /// How many tokens the cache holds now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Asks Keystone about `token`, logging in again once if Ember's own token was refused.
    async fn ask(&self, token: &str) -> Result<Identity, KeystoneError> {
        if token.len() > 8192 || reqwest::header::HeaderValue::from_str(token).is_err() {
            return Err(KeystoneError::Invalid);
        }
        for attempt in 0..2 {
            let service = self.service_token(attempt > 0).await?;
            let response = self
                .http
                .get(format!("{}/auth/tokens", self.options.auth_url))
                .header("X-Auth-Token", &service)
                .header("X-Subject-Token", token)
                .send()
                .await
                .map_err(|e| unavailable("validate a token", &e))?;
            match response.status().as_u16() {
                200 => {
                    let body: TokenBody = response
                        .json()
                        .await
                        .map_err(|e| KeystoneError::Unavailable(format!("unreadable token body: {e}")))?;
                    return body.identity();
                }
                404 => return Err(KeystoneError::Invalid),
                401 if attempt == 0 => continue,
                status => {
                    tracing::error!(status, "Keystone refused to validate a token for Ember's service user");
                    return Err(KeystoneError::Unavailable(format!("token validation answered {status}")));
                }
            }
        }
        Err(KeystoneError::Unavailable("Keystone refuses Ember's service token".into()))
    }

    /// Ember's own token, logging in with the service user's password when there is none,
    /// it is about to expire, or `fresh` asks for a new one.
    async fn service_token(&self, fresh: bool) -> Result<String, KeystoneError> {
        let mut held = self.service_token.lock().await;
        if let Some((token, renew_at)) = held.as_ref()
            && !fresh
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let o = &self.options;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": o.username, "domain": {"name": o.user_domain_name}, "password": o.password}}},
            "scope": {"project": {"name": o.project_name, "domain": {"name": o.project_domain_name}}},
        }});
        let response = self
            .http
            .post(format!("{}/auth/tokens", o.auth_url))
            .json(&body)
            .send()
            .await
            .map_err(|e| unavailable("log in as Ember's service user", &e))?;
        let status = response.status().as_u16();
        if status != 201 {
            tracing::error!(status, user = %o.username, "Keystone refused Ember's service user");
            return Err(KeystoneError::Unavailable(format!("service user login answered {status}")));
        }
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| KeystoneError::Unavailable("no X-Subject-Token in the login answer".into()))?;
        let expires_at = response.json::<TokenBody>().await.map(|b| b.token.expires_at).ok();
        // Renew a minute early, so no validation goes out with a token about to lapse.
        let left = expires_at.and_then(|e| (e - Utc::now()).to_std().ok()).unwrap_or_default();
        let renew_at = Instant::now() + left.saturating_sub(Duration::from_secs(60));
        *held = Some((token.clone(), renew_at));
        Ok(token)
    }
}

fn unavailable(what: &str, err: &reqwest::Error) -> KeystoneError {
    tracing::warn!(error = %err, "could not reach Keystone to {what}");
    KeystoneError::Unavailable(format!("could not reach Keystone to {what}"))
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: DateTime<Utc>,
    #[serde(default)]
    user: Option<Named>,
    #[serde(default)]
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

impl TokenBody {
    fn identity(self) -> Result<Identity, KeystoneError> {
        let t = self.token;
        if t.expires_at <= Utc::now() {
            return Err(KeystoneError::Invalid);
        }
        let user = t.user.ok_or(KeystoneError::Invalid)?;
        Ok(Identity {
            user_id: user.id,
            project_id: t.project.map(|p| p.id),
            roles: t.roles.into_iter().map(|r| r.name).collect(),
            expires_at: t.expires_at,
        })
    }
}

/// What the cache knows of a token: who it stands for, or `None` when Keystone refused it.
type Known = Option<Arc<Identity>>;

/// Validated tokens (`Some`) and refused ones (`None`), at most `capacity`, each until its
/// own deadline.
///
/// A miss costs a round trip to Keystone, a hit one short lock: the lock is held for a
/// hash lookup and an `Arc` clone only. When full, expired entries go first, then an
/// arbitrary one (a busy API keeps its hot tokens, which come back at once).
struct TokenCache {
    capacity: usize,
    entries: Mutex<HashMap<String, (Known, Instant)>>,
}

impl TokenCache {
    fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), entries: Mutex::new(HashMap::new()) }
    }

    /// `Some(known)` while `token`'s entry lasts: `Some(identity)` valid, `None` refused.
    fn get(&self, token: &str, now: Instant) -> Option<Known> {
        let mut entries = self.entries.lock();
        match entries.get(token) {
            Some((identity, until)) if *until > now => Some(identity.clone()),
            Some(_) => {
                entries.remove(token);
                None
            }
            None => None,
        }
    }

    fn insert(&self, token: &str, identity: Known, until: Instant, now: Instant) {
        if until <= now {
            return;
        }
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(token) {
            entries.retain(|_, (_, u)| *u > now);
            if entries.len() >= self.capacity
                && let Some(victim) = entries.keys().next().cloned()
            {
                entries.remove(&victim);
            }
        }
        entries.insert(token.to_owned(), (identity, until));
    }

    fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user: &str) -> Option<Arc<Identity>> {
        Some(Arc::new(Identity {
            user_id: user.into(),
            project_id: Some("p".into()),
            roles: vec!["reader".into()],
            expires_at: Utc::now(),
        }))
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_at_each_deadline() {
        let cache = TokenCache::new(3);
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        cache.insert("a", identity("a"), now + Duration::from_secs(1), now);
        cache.insert("b", identity("b"), later, now);
        cache.insert("c", identity("c"), later, now);
        assert_eq!(cache.get("a", now).flatten().unwrap().user_id, "a");
        assert!(cache.get("a", now + Duration::from_secs(2)).is_none(), "past its deadline");
        cache.insert("a", identity("a"), now + Duration::from_secs(1), now);
        // Full: the expired entry goes first, the live ones stay.
        cache.insert("d", identity("d"), later, now + Duration::from_secs(2));
        assert_eq!(cache.len(), 3);
        assert!(cache.get("b", now).is_some() && cache.get("c", now).is_some());
        for i in 0..100 {
            cache.insert(&format!("t{i}"), identity("t"), later, now);
        }
        assert_eq!(cache.len(), 3, "never more than its capacity");
        cache.insert("dead", identity("x"), now, now);
        assert!(cache.get("dead", now).is_none(), "an already expired token is not kept");
        cache.insert("bad", None, later, now);
        assert_eq!(cache.get("bad", now), Some(None), "a refused token is remembered as refused");
    }

    #[test]
    fn a_token_body_gives_user_project_and_roles() {
        let body: TokenBody = serde_json::from_value(json!({"token": {
            "expires_at": "2999-12-07T17:35:49.000000Z",
            "user": {"id": "u1", "name": "alice", "domain": {"id": "default"}},
            "project": {"id": "p1", "name": "demo"},
            "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "reader"}],
        }}))
        .unwrap();
        let id = body.identity().unwrap();
        assert_eq!((id.user_id.as_str(), id.project_id.as_deref()), ("u1", Some("p1")));
        assert_eq!(id.roles, ["member", "reader"]);
        let expired: TokenBody = serde_json::from_value(json!({"token": {
            "expires_at": "2001-01-01T00:00:00.000000Z", "user": {"id": "u1"}}}))
        .unwrap();
        assert_eq!(expired.identity(), Err(KeystoneError::Invalid));
    }
}
