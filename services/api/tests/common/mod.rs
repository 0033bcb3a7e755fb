//! The test harness: the real application on a real database (SQLite always, PostgreSQL
//! where `EMBER_TEST_DATABASE_URL` is set), with [`TestOps`] and [`TestAttachOps`] standing
//! in for the flows.
#![allow(dead_code)]

pub mod attach;
pub mod demo;
pub mod ops;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use ember_api::auth::{AuthConfig, Strategy, TokenEntry};
use ember_api::policy::Policy;
use ember_api::{ApiState, FlowAdmin, Repos, Settings, app};
use ember_common::model::{ListOptions, Volume, VolumeChanges, VolumeExpect, VolumeFilter, VolumeStatus};
use ember_common::repo::VolumeRepo;
use ember_db::SqlRepo;
use ember_db::flow_store::SqlFlowStore;
use ember_db::testing::TestDb;

pub use attach::TestAttachOps;
pub use ops::TestOps;

/// The admin's noauth token (project `p1`).
pub const ADMIN: &str = "admin:p1";

/// One application on one database.
pub struct Harness {
    pub tdb: TestDb,
    pub repo: Arc<SqlRepo>,
    /// The flow store behind `/flows`.
    pub flows: Arc<SqlFlowStore>,
    pub app: Router,
}

/// An answer: status, headers and the JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts a Cinder fault with this status and name; returns its message.
    pub fn fault(&self, status: u16, name: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(self.body[name]["code"], status, "{:?}", self.body);
        self.body[name]["message"].as_str().unwrap_or_default().to_owned()
    }
}

impl Harness {
    /// Noauth, on SQLite.
    pub async fn sqlite() -> Self {
        Self::on(TestDb::sqlite().await.unwrap(), AuthConfig::default(), Settings::default())
    }

    /// Noauth, on SQLite and (where configured) PostgreSQL.
    pub async fn all() -> Vec<Self> {
        let dbs = TestDb::all().await.unwrap();
        dbs.into_iter().map(|db| Self::on(db, AuthConfig::default(), Settings::default())).collect()
    }

    /// Token auth: `admin` (admin of p1), `alice` (member of p1), `bob` (member of p2),
    /// `carol` (reader of p1), `nobody` (no role in p1).
    pub async fn with_tokens() -> Self {
        Self::with_policy("").await
    }

    /// As [`Harness::with_tokens`], with the rules of a policy file's `yaml` over the defaults.
    pub async fn with_policy(yaml: &str) -> Self {
        let mut tokens = HashMap::new();
        for (token, user, project, role) in [
            ("admin", "root", "p1", "admin"),
            ("alice", "alice", "p1", "member"),
            ("bob", "bob", "p2", "member"),
            ("carol", "carol", "p1", "reader"),
            ("nobody", "nobody", "p1", "creator"),
        ] {
            let entry =
                TokenEntry { user_id: user.into(), project_id: project.into(), roles: vec![role.into()] };
            tokens.insert(token.to_owned(), entry);
        }
        let mut policy = Policy::default();
        policy.apply("policy.yaml", yaml).unwrap();
        let auth =
            AuthConfig { strategy: Strategy::Token, tokens, policy: Arc::new(policy), ..Default::default() };
        Self::on(TestDb::sqlite().await.unwrap(), auth, Settings::default())
    }

    /// SQLite with custom settings.
    pub async fn with_settings(settings: Settings) -> Self {
        Self::on(TestDb::sqlite().await.unwrap(), AuthConfig::default(), settings)
    }

    fn on(tdb: TestDb, auth: AuthConfig, settings: Settings) -> Self {
        let repo = Arc::new(SqlRepo::new(tdb.db.clone(), Default::default()));
        let flows = Arc::new(SqlFlowStore::new(tdb.db.clone()));
        let state = ApiState {
            auth: Arc::new(auth),
            repos: Repos::all(repo.clone()),
            ops: Arc::new(TestOps::new(repo.clone())),
            attach: Arc::new(TestAttachOps::new(repo.clone())),
            backups: Arc::new(ember_api::state::UnwiredOps),
            settings: Arc::new(settings),
            flows: Some(FlowAdmin::new(flows.clone(), demo::registry())),
        };
        Self { tdb, repo, flows, app: app(state) }
    }

    pub async fn cleanup(self) {
        self.tdb.cleanup().await.unwrap();
    }

    /// Sends one request as `token` to `/v3/{project of token}{path}` at microversion `mv`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        mv: &str,
        body: Option<Value>,
    ) -> Answer {
        let project = self.project_of(token);
        self.call_url(method, &format!("/v3/{project}{path}"), token, mv, body).await
    }

    /// Sends one request to `uri` as given.
    pub async fn call_url(
        &self,
        method: Method,
        uri: &str,
        token: &str,
        mv: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "ember.test:8776")
            .header("x-auth-token", token)
            .header("openstack-api-version", format!("volume {mv}"));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let response = self.app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, headers, body }
    }

    /// Sends a GET as `token` and returns the status, the content type and the body as text.
    pub async fn get_text(&self, path: &str, token: &str) -> (StatusCode, String, String) {
        let uri = format!("/v3/{}{path}", self.project_of(token));
        let req = Request::builder()
            .uri(uri)
            .header("host", "ember.test:8776")
            .header("x-auth-token", token)
            .body(Body::empty())
            .unwrap();
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, content_type, String::from_utf8(bytes.to_vec()).unwrap())
    }

    pub async fn get(&self, path: &str, token: &str, mv: &str) -> Answer {
        self.call(Method::GET, path, token, mv, None).await
    }

    pub async fn post(&self, path: &str, token: &str, mv: &str, body: Value) -> Answer {
        self.call(Method::POST, path, token, mv, Some(body)).await
    }

    fn project_of(&self, token: &str) -> &'static str {
        match token {
            "admin" | "alice" | "carol" | "nobody" => "p1",
            "bob" => "p2",
            t => match t.split_once(':') {
                Some((_, "p2")) => "p2",
                _ => "p1",
            },
        }
    }

    /// Creates a volume through the API and returns its id.
    pub async fn create_volume(&self, token: &str, body: Value) -> String {
        let a = self.post("/volumes", token, "3.0", serde_json::json!({ "volume": body })).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
        a.body["volume"]["id"].as_str().unwrap().to_owned()
    }

    /// Sets a volume's status directly, as a volume service would.
    pub async fn set_status(&self, id: &str, status: VolumeStatus) -> Volume {
        self.repo
            .update_volume(id, &VolumeExpect::default(), &VolumeChanges::status(status))
            .await
            .unwrap()
            .unwrap()
    }

    /// Every live volume of every project.
    pub async fn volume_rows(&self) -> Vec<Volume> {
        self.repo.list_volumes(&VolumeFilter::default(), &ListOptions::default()).await.unwrap()
    }
}
