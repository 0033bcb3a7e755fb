//! A small Cinder REST client for the end-to-end tests.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Talks to `/v3/{project}` with a noauth token.
#[derive(Clone)]
pub struct Cinder {
    http: reqwest::Client,
    base: String,
    token: String,
    /// `OpenStack-API-Version` sent with every request, if any.
    version: Option<String>,
}

impl Cinder {
    pub fn new(base_url: &str, project: &str) -> Self {
        Self {
            // The server closes a keep-alive connection idle for `client_header_timeout`
            // (10 s); a test that blocked its runtime meanwhile (a child process it waits
            // for) would send on the closed connection before noticing. Idle connections
            // are dropped well before that instead.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(4))
                .build()
                .expect("build the HTTP client"),
            base: format!("{base_url}/v3/{project}"),
            token: format!("tester:{project}"),
            version: None,
        }
    }

    /// A client of `project` that sends `token` (for `auth_strategy = "token"`).
    pub fn with_token(base_url: &str, project: &str, token: &str) -> Self {
        Self { token: token.to_owned(), ..Self::new(base_url, project) }
    }

    /// The same client asking for microversion `version` (e.g. `3.44`) on every request.
    pub fn with_version(&self, version: &str) -> Self {
        Self { version: Some(format!("volume {version}")), ..self.clone() }
    }

    /// Sends a request; returns the status and the JSON body (null when empty).
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let what = format!("{method} {path}");
        self.try_send(method, path, body).await.unwrap_or_else(|| panic!("{what}: ember did not answer"))
    }

    /// As [`Cinder::send`], but `None` when no answer came (the server died mid-request).
    pub async fn try_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Auth-Token", &self.token)
            .timeout(Duration::from_secs(60));
        if let Some(version) = &self.version {
            request = request.header("OpenStack-API-Version", version);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.ok()?;
        Some((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.send(reqwest::Method::DELETE, path, None).await.0
    }

    /// Creates a volume from `body` (the inside of `{"volume": ...}`); returns its id.
    pub async fn create_volume(&self, body: Value) -> String {
        let (status, answer) = self.post("/volumes", json!({ "volume": body })).await;
        assert_eq!(status, 202, "create volume: {answer}");
        answer["volume"]["id"].as_str().expect("the new volume's id").to_owned()
    }

    /// Creates a snapshot of `volume_id`; returns its id.
    pub async fn create_snapshot(&self, volume_id: &str) -> String {
        let (status, answer) =
            self.post("/snapshots", json!({ "snapshot": { "volume_id": volume_id } })).await;
        assert_eq!(status, 202, "create snapshot: {answer}");
        answer["snapshot"]["id"].as_str().expect("the new snapshot's id").to_owned()
    }

    /// Polls `path` (a volume or snapshot) until its status is `want`, or panics at the
    /// deadline; a status in `fail` ends the wait at once. `want = "gone"` waits for a 404.
    pub async fn wait_status(&self, path: &str, want: &str, deadline: Instant) -> Value {
        loop {
            let (code, body) = self.get(path).await;
            let resource = body.as_object().and_then(|o| o.values().next()).cloned().unwrap_or(Value::Null);
            let status = resource["status"].as_str().unwrap_or_default().to_owned();
            if (want == "gone" && code == 404) || status == want {
                return resource;
            }
            assert!(!status.starts_with("error"), "{path} went to {status} while waiting for {want}: {body}");
            assert!(Instant::now() < deadline, "{path} is {status} ({code}), not {want}, at the deadline");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `in_use` and `reserved` of quota `resource` for this project.
    pub async fn quota_usage(&self, project: &str, resource: &str) -> (i64, i64) {
        let (status, body) = self.get(&format!("/os-quota-sets/{project}?usage=true")).await;
        assert_eq!(status, 200, "quota usage: {body}");
        let usage = &body["quota_set"][resource];
        (usage["in_use"].as_i64().unwrap_or(-1), usage["reserved"].as_i64().unwrap_or(-1))
    }

    /// Polls quota `resource` of `project` until it is `want` as (in_use, reserved), or
    /// panics at the deadline: a flow releases quota a moment after the resource is gone.
    pub async fn wait_quota(&self, project: &str, resource: &str, want: (i64, i64), deadline: Instant) {
        loop {
            let got = self.quota_usage(project, resource).await;
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "quota {resource} of {project} is {got:?}, not {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
