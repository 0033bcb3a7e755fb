//! What a handler knows about its request: the caller, the microversion, the URL it was
//! reached at and the query; plus path extractors whose failures are Cinder faults.

use axum::extract::{FromRequestParts, OriginalUri, Path, Query};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use ember_common::ops::RequestContext;

use crate::auth::{Caller, url_project};
use crate::fault::Fault;
use crate::microversion::{self, ApiVersion};
use crate::projectless::Projectless;
use crate::versions::base_url;

/// The id given to a request by the request-id middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The request as a handler sees it.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub caller: Caller,
    pub version: ApiVersion,
    pub request_id: String,
    /// `scheme://host:port` as the client reached us.
    pub base: String,
    /// The `{project_id}` segment of the URL; `None` for project-less URLs (3.67+).
    pub url_project: Option<String>,
    /// The query pairs, in order.
    pub query: Vec<(String, String)>,
}

impl Ctx {
    /// The context handed to the flows.
    pub fn ops(&self) -> RequestContext {
        RequestContext {
            user_id: self.caller.user_id.clone(),
            project_id: self.caller.project_id.clone(),
            roles: self.caller.roles.clone(),
            is_admin: self.caller.is_admin,
            request_id: self.request_id.clone(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.caller.is_admin
    }

    /// Whether the caller may see a resource of `project_id`: its own, or any for admins.
    pub fn may_see(&self, project_id: &str) -> bool {
        self.caller.is_admin || self.caller.project_id == project_id
    }

    /// True when the request's microversion is at least `3.minor`.
    pub fn at_least(&self, minor: u16) -> bool {
        self.version.at_least(minor)
    }

    /// `{base}/v3/{project}/{path}`, without the project when the request had none.
    pub fn url(&self, path: &str) -> String {
        match &self.url_project {
            Some(project) => format!("{}/v3/{project}/{path}", self.base),
            None => format!("{}/v3/{path}", self.base),
        }
    }

    /// Cinder's `self` and `bookmark` links of one resource.
    pub fn links(&self, collection: &str, id: &str) -> Value {
        let bookmark = match &self.url_project {
            Some(project) => format!("{}/{project}/{collection}/{id}", self.base),
            None => format!("{}/{collection}/{id}", self.base),
        };
        json!([
            {"href": self.url(&format!("{collection}/{id}")), "rel": "self"},
            {"href": bookmark, "rel": "bookmark"},
        ])
    }

    /// The value of query parameter `name`, if given (the last one wins, as in webob).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let version = parts.extensions.get::<ApiVersion>().copied().unwrap_or(microversion::MIN);
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        let uri = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |u| &u.0);
        let url_project = if parts.extensions.get::<Projectless>().is_some() {
            None
        } else {
            Some(url_project(uri.path()).unwrap_or(&caller.project_id).to_owned())
        };
        let query = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|_| Fault::bad_request("Malformed query string."))?
            .0;
        Ok(Self { caller, version, request_id, base: base_url(&parts.headers), url_project, query })
    }
}

/// Path parameters deserialized into `T`; a parameter that cannot be read is a 404.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Params(p.0))
            .map_err(|_| Fault::not_found("The resource could not be found."))
    }
}

/// `/.../{id}`.
#[derive(Debug, Deserialize)]
pub struct IdPath {
    pub id: String,
}

/// `/.../{id}/.../{key}`.
#[derive(Debug, Deserialize)]
pub struct KeyPath {
    pub id: String,
    pub key: String,
}
