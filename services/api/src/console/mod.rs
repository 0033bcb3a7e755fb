//! `GET /console`: the operator's web console, one page of plain HTML, CSS and JavaScript
//! embedded in the binary (no build step). The page itself holds no data and is served
//! without a token; it asks the operator for an admin token and a project id, keeps them in
//! the tab's `sessionStorage`, and every call it makes goes to the admin endpoints under
//! `/v3/{project_id}` (`/flows`, `/flows/{id}`, `/flows/{id}/graph?format=json`,
//! `/flows/{id}/action`), so the API's own auth and policy decide what it may see and do.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const HTML: &str = include_str!("console.html");
const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// The page, assembled once.
fn page_text() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| HTML.replacen("/*STYLE*/", CSS, 1).replacen("/*SCRIPT*/", JS, 1))
}

/// `GET /console`.
pub async fn page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        // The page talks only to its own origin, and no other site may frame it.
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, page_text()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_embeds_its_style_and_script() {
        let page = page_text();
        assert!(!page.contains("/*STYLE*/") && !page.contains("/*SCRIPT*/"));
        assert!(page.contains("function renderGraph") && page.contains("#graph svg"));
    }
}
