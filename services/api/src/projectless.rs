//! URLs without the project segment (`/v3/volumes`), which Cinder serves from 3.67: such a
//! request is routed as `/v3/-/volumes` and marked [`Projectless`], so the auth layer takes
//! the project from the token alone and links leave the project out.

use axum::extract::Request;
use axum::http::Uri;

use crate::microversion;

/// The first microversion whose URLs may leave out the project.
pub const MIN_MINOR: u16 = 67;

/// The project segment a project-less URL is routed under.
pub const PLACEHOLDER: &str = "-";

/// Marks a request whose URL had no project segment.
#[derive(Debug, Clone, Copy)]
pub struct Projectless;

/// The collections served under `/v3/{project_id}`.
const COLLECTIONS: &[&str] = &[
    "volumes",
    "snapshots",
    "attachments",
    "types",
    "os-quota-sets",
    "limits",
    "os-services",
    "os-availability-zone",
];

/// Rewrites `/v3/<collection>/...` to `/v3/-/<collection>/...` at 3.67 or later.
pub fn rewrite(mut request: Request) -> Request {
    let projectless = microversion::negotiate(request.headers()).is_ok_and(|v| v.at_least(MIN_MINOR));
    if !projectless {
        return request;
    }
    let Some(rest) = request.uri().path().strip_prefix("/v3/") else { return request };
    let first = rest.split('/').next().unwrap_or_default();
    if !COLLECTIONS.contains(&first) {
        return request;
    }
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    if let Ok(uri) = format!("/v3/{PLACEHOLDER}/{rest}{query}").parse::<Uri>() {
        *request.uri_mut() = uri;
        request.extensions_mut().insert(Projectless);
    }
    request
}
