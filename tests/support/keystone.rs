//! A real Keystone for the end-to-end tests: keystone from PyPI on SQLite under gunicorn
//! (`scripts/keystone.sh serve`), one per test binary, with Ember's service user, two
//! projects with a reader, a member and an admin each, and Ember in the catalog.
//!
//! It runs from the venv named by `EMBER_KEYSTONE_VENV` (else `target/keystone-venv`, which
//! `scripts/keystone.sh venv` makes and `.ci/run` makes in CI); without one the tests skip,
//! saying so. The Keystone stops when the test binary exits (its stdin closes).

use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::free_port;

/// The password of every user the fixture makes.
pub const PASSWORD: &str = "ember-test-password";
const ADMIN_PASSWORD: &str = "ember-keystone-admin";

/// One user of the fixture: name and project, as a client logs in.
#[derive(Debug, Clone, Default)]
pub struct User {
    pub name: String,
    pub project_name: String,
    pub project_id: String,
}

/// The running Keystone and what the fixture made in it.
pub struct Keystone {
    /// `http://127.0.0.1:PORT/v3`.
    pub url: String,
    pub venv: PathBuf,
    /// Ember's service user (role `service` in project `service`).
    pub service_user: String,
    /// Reader, member and admin of project 1, then of project 2.
    pub p1: [User; 3],
    pub p2: [User; 3],
    _server: Option<(Child, ChildStdin)>,
}

static SHARED: OnceCell<Option<Keystone>> = OnceCell::const_new();

/// The test binary's Keystone, started on first use; `None` (after saying why) when there
/// is no keystone venv.
pub async fn shared() -> Option<&'static Keystone> {
    SHARED.get_or_init(start).await.as_ref()
}

fn venv() -> PathBuf {
    std::env::var_os("EMBER_KEYSTONE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/keystone-venv"))
}

async fn start() -> Option<Keystone> {
    let venv = venv();
    if !venv.join("bin/keystone-manage").exists() {
        eprintln!(
            "skipped: no keystone venv at {} (make one with scripts/keystone.sh venv, or set \
             EMBER_KEYSTONE_VENV), so the Keystone tests are not run",
            venv.display()
        );
        return None;
    }
    let port = free_port();
    let state = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("keystone-state");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/keystone.sh");
    let mut child = Command::new("bash")
        .arg(script)
        .args(["serve", &state.display().to_string(), &port.to_string(), ADMIN_PASSWORD])
        .env("EMBER_KEYSTONE_VENV", &venv)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start scripts/keystone.sh serve");
    let stdin = child.stdin.take().expect("the script's stdin");
    let url = format!("http://127.0.0.1:{port}/v3");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(r) = http.get(&url).timeout(Duration::from_secs(5)).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("scripts/keystone.sh serve exited with {status}; see {}", state.display());
        }
        assert!(Instant::now() < deadline, "Keystone did not answer at {url}; see {}", state.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut keystone = Keystone {
        url,
        venv,
        service_user: String::new(),
        p1: Default::default(),
        p2: Default::default(),
        _server: Some((child, stdin)),
    };
    keystone.populate().await;
    Some(keystone)
}

/// Admin calls to Keystone's API.
struct Admin {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Admin {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.url));
        request = request.header("X-Auth-Token", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("Keystone answers");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    async fn create(&self, collection: &str, item: &str, body: Value) -> String {
        let answer =
            self.call(reqwest::Method::POST, &format!("/{collection}"), Some(json!({ item: body }))).await;
        answer[item]["id"].as_str().expect("an id").to_owned()
    }

    async fn role_id(&self, name: &str) -> String {
        let roles = self.call(reqwest::Method::GET, &format!("/roles?name={name}"), None).await;
        roles["roles"][0]["id"].as_str().unwrap_or_else(|| panic!("role {name} exists")).to_owned()
    }

    async fn grant(&self, project: &str, user: &str, role: &str) {
        let path = format!("/projects/{project}/users/{user}/roles/{role}");
        self.call(reqwest::Method::PUT, &path, None).await;
    }
}

impl Keystone {
    async fn admin(&self) -> Admin {
        let (token, _) =
            password_token(&self.url, "admin", "admin", ADMIN_PASSWORD).await.expect("admin login");
        Admin { http: reqwest::Client::new(), url: self.url.clone(), token }
    }

    /// Makes the service user and two projects with their users; names carry a tag of this
    /// run, so runs on one state directory do not collide.
    async fn populate(&mut self) {
        let admin = self.admin().await;
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let service_project = admin
            .create("projects", "project", json!({"name": format!("service-{tag}"), "domain_id": "default"}))
            .await;
        self.service_user = format!("ember-{tag}");
        let user = json!({"name": self.service_user, "password": PASSWORD, "domain_id": "default"});
        let service_user = admin.create("users", "user", user).await;
        admin.grant(&service_project, &service_user, &admin.role_id("service").await).await;
        let roles =
            [admin.role_id("reader").await, admin.role_id("member").await, admin.role_id("admin").await];
        for (n, slot) in [(1, &mut self.p1), (2, &mut self.p2)] {
            let project_name = format!("p{n}-{tag}");
            let project_id = admin
                .create("projects", "project", json!({"name": project_name, "domain_id": "default"}))
                .await;
            for (i, persona) in ["reader", "member", "admin"].iter().enumerate() {
                let name = format!("{persona}{n}-{tag}");
                let body = json!({"name": name, "password": PASSWORD, "domain_id": "default"});
                let user_id = admin.create("users", "user", body).await;
                admin.grant(&project_id, &user_id, &roles[i]).await;
                slot[i] = User { name, project_name: project_name.clone(), project_id: project_id.clone() };
            }
        }
    }

    /// The service project's name (`service-<tag>`), for `[keystone_authtoken]`.
    pub fn service_project(&self) -> String {
        self.service_user.replacen("ember-", "service-", 1)
    }

    /// Ember's `[keystone_authtoken]` section for a Keystone at `auth_url`.
    pub fn ember_config(&self, auth_url: &str, extra: &str) -> String {
        format!(
            "auth_strategy = \"keystone\"\n[keystone_authtoken]\nauth_url = {auth_url:?}\n\
             www_authenticate_uri = {:?}\nusername = {:?}\npassword = {PASSWORD:?}\n\
             project_name = {:?}\n{extra}",
            self.url,
            self.service_user,
            self.service_project()
        )
    }

    /// Registers Ember at `base_url` in a region of its own (`block-storage` and
    /// `volumev3`), so each test's clients find their own Ember; returns the region.
    pub async fn register(&self, base_url: &str) -> String {
        let admin = self.admin().await;
        let region = format!("ember-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        admin.call(reqwest::Method::POST, "/regions", Some(json!({"region": {"id": region}}))).await;
        let ember = format!("{base_url}/v3/%(project_id)s");
        // Clients look up names in Keystone too: the region gets an identity endpoint.
        let entries = [
            ("identity", "keystone", self.url.clone()),
            ("block-storage", "cinder", ember.clone()),
            ("volumev3", "cinderv3", ember),
        ];
        for (kind, name, url) in entries {
            let found = admin.call(reqwest::Method::GET, &format!("/services?type={kind}"), None).await;
            let service = match found["services"][0]["id"].as_str() {
                Some(id) => id.to_owned(),
                None => admin.create("services", "service", json!({"type": kind, "name": name})).await,
            };
            let endpoint =
                json!({"service_id": service, "interface": "public", "region_id": region, "url": url});
            admin.create("endpoints", "endpoint", endpoint).await;
        }
        region
    }

    /// A project-scoped token of `user` and its project id.
    pub async fn token(&self, user: &User) -> String {
        password_token(&self.url, &user.name, &user.project_name, PASSWORD).await.expect("user login").0
    }

    /// Revokes `token` (`DELETE /v3/auth/tokens`).
    pub async fn revoke(&self, token: &str) {
        let admin = self.admin().await;
        let response = admin
            .http
            .delete(format!("{}/auth/tokens", self.url))
            .header("X-Auth-Token", &admin.token)
            .header("X-Subject-Token", token)
            .send()
            .await
            .expect("Keystone answers");
        assert_eq!(response.status().as_u16(), 204, "revoke a token");
    }

    /// Runs a client of the venv (`openstack`, `cinder`, `python`) as `user` in `region`;
    /// returns whether it succeeded and what it printed.
    pub async fn client(&self, user: &User, region: &str, program: &str, args: &[&str]) -> (bool, String) {
        let output = tokio::process::Command::new(self.venv.join("bin").join(program))
            .args(args)
            .env("OS_AUTH_URL", &self.url)
            .env("OS_AUTH_TYPE", "password")
            .env("OS_USERNAME", &user.name)
            .env("OS_PASSWORD", PASSWORD)
            .env("OS_PROJECT_NAME", &user.project_name)
            .env("OS_USER_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_DOMAIN_NAME", "Default")
            .env("OS_REGION_NAME", region)
            .env("OS_IDENTITY_API_VERSION", "3")
            .env("OS_INTERFACE", "public")
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(120), output)
            .await
            .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in 120 s"))
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }
}

/// Logs `user` in to `project` with a password; the token and its body.
pub async fn password_token(url: &str, user: &str, project: &str, password: &str) -> Option<(String, Value)> {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}},
    }});
    let response = reqwest::Client::new().post(format!("{url}/auth/tokens")).json(&body).send().await.ok()?;
    if response.status().as_u16() != 201 {
        return None;
    }
    let token = response.headers().get("x-subject-token")?.to_str().ok()?.to_owned();
    Some((token, response.json().await.ok()?))
}

/// A TCP relay in front of Keystone that a test can cut ("Keystone is down") and restore.
pub struct Relay {
    pub url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    _task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays `127.0.0.1:<new port>` to the host and port of `target_url`.
    pub async fn start(target_url: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let target =
            target_url.trim_start_matches("http://").split('/').next().expect("host:port").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let up = std::sync::Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (flag, cuts) = (up.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let target = target.clone();
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { url: format!("http://127.0.0.1:{port}/v3"), up, cut, _task: task }
    }

    /// Keystone goes away: open connections are cut and new ones closed at once.
    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }
}
