//! `ember bench auth`: what Keystone tokens cost a busy API. Requests per second of
//! `GET /volumes/{id}` on a real `ember all-in-one` with `auth_strategy = "keystone"` and a
//! token already in its cache, against the same on noauth; the cache must keep it within
//! 10 % of noauth.
//!
//! Both servers run at once, each with one volume; rounds alternate between them so drift
//! on the machine hits both alike, and each figure is the median of its rounds. Keystone is
//! a real one given by `--keystone-url` (with Ember's service user and a user to log in), or
//! else a stand-in served by the benchmark itself, which also counts how often Ember asked it
//! to validate a token (the cache's work: once).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{Figure, Report};

/// Options of `ember bench auth`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of each round.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds per server (alternating); the figure is the median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// A real Keystone (`http://host:5000/v3`); without it a stand-in is served.
    #[arg(long)]
    keystone_url: Option<String>,
    /// With `--keystone-url`: Ember's service user, its password and project.
    #[arg(long, default_value = "ember")]
    service_user: String,
    #[arg(long, default_value = "")]
    service_password: String,
    #[arg(long, default_value = "service")]
    service_project: String,
    /// With `--keystone-url`: the user whose token the clients send (a member), its
    /// password and project.
    #[arg(long, default_value = "demo")]
    user: String,
    #[arg(long, default_value = "")]
    user_password: String,
    #[arg(long, default_value = "demo")]
    user_project: String,
}

const STAND_IN_PROJECT: &str = "bench00000000000000000000000000b2";
const STAND_IN_TOKEN: &str = "bench-user-token";

/// An `ember all-in-one` child; killed when dropped.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("create a data directory")?;
        let path = dir.path().join("ember.toml");
        std::fs::write(&path, config).context("write the configuration")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(std::env::current_exe().context("find the ember binary")?)
            .args(["all-in-one", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path())
            .env("EMBER_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("start ember all-in-one")?;
        let server = Self { child, base: format!("http://127.0.0.1:{port}"), _dir: dir };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .get(format!("{}/healthcheck", server.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                bail!("ember all-in-one did not become healthy in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(server)
    }
}

/// The stand-in Keystone: logs anyone in, knows one user token, counts validations.
async fn stand_in(validations: Arc<AtomicU64>) -> anyhow::Result<String> {
    use axum::routing::post;
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let body = move |project: &str| {
        json!({"token": {"expires_at": expires, "user": {"id": "bench-user"},
            "project": {"id": project}, "roles": [{"name": "member"}, {"name": "reader"}]}})
    };
    let (login, check) = (body("service"), body(STAND_IN_PROJECT));
    let app = axum::Router::new().route(
        "/v3/auth/tokens",
        post(move || async move {
            (StatusCode::CREATED, [("x-subject-token", "bench-service-token")], axum::Json(login))
        })
        .get(move |headers: HeaderMap| async move {
            validations.fetch_add(1, Ordering::Relaxed);
            match headers.get("x-subject-token").and_then(|v| v.to_str().ok()) {
                Some(STAND_IN_TOKEN) => axum::Json(check).into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v3", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// The Keystone to use, the `[keystone_authtoken]` section, and the clients' token and project.
async fn keystone(args: &Args, validations: Arc<AtomicU64>) -> anyhow::Result<(String, String, String)> {
    let Some(url) = &args.keystone_url else {
        let url = stand_in(validations).await?;
        let section =
            format!("[keystone_authtoken]\nauth_url = {url:?}\nusername = \"ember\"\npassword = \"x\"\n");
        return Ok((section, STAND_IN_TOKEN.into(), STAND_IN_PROJECT.into()));
    };
    let section = format!(
        "[keystone_authtoken]\nauth_url = {url:?}\nusername = {:?}\npassword = {:?}\nproject_name = {:?}\n",
        args.service_user, args.service_password, args.service_project
    );
    let login = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": args.user, "domain": {"id": "default"}, "password": args.user_password}}},
        "scope": {"project": {"name": args.user_project, "domain": {"id": "default"}}}}});
    let response = reqwest::Client::new().post(format!("{url}/auth/tokens")).json(&login).send().await?;
    if response.status().as_u16() != 201 {
        bail!("logging {} in to Keystone answered {}", args.user, response.status());
    }
    let token = response.headers().get("x-subject-token").context("no X-Subject-Token")?.to_str()?.to_owned();
    let body: Value = response.json().await?;
    let project = body["token"]["project"]["id"].as_str().context("a project-scoped token")?.to_owned();
    Ok((section, token, project))
}

/// One server under load: where, with which token, and the volume to read.
struct Target {
    server: Server,
    token: String,
    url: String,
}

impl Target {
    async fn new(server: Server, token: String, project: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{}/v3/{project}/volumes", server.base))
            .header("X-Auth-Token", &token)
            .json(&json!({"volume": {"size": 1, "name": "bench-auth"}}))
            .send()
            .await?;
        if response.status().as_u16() != 202 {
            bail!("create a volume answered {}: {}", response.status(), response.text().await?);
        }
        let body: Value = response.json().await?;
        let id = body["volume"]["id"].as_str().context("the volume's id")?;
        let url = format!("{}/v3/{project}/volumes/{id}", server.base);
        Ok(Self { server, token, url })
    }

    /// Requests per second of `clients` clients reading the volume for `seconds`.
    async fn round(&self, clients: usize, seconds: f64) -> anyhow::Result<f64> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients.max(1) {
            let (http, url, token) = (http.clone(), self.url.clone(), self.token.clone());
            tasks.spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let response = http.get(&url).header("X-Auth-Token", &token).send().await?;
                    if response.status() != StatusCode::OK {
                        bail!("GET answered {}", response.status());
                    }
                    response.bytes().await?;
                    done += 1;
                }
                Ok(done)
            });
        }
        let mut total = 0;
        while let Some(done) = tasks.join_next().await {
            total += done.context("a client panicked")??;
        }
        Ok(total as f64 / started.elapsed().as_secs_f64())
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

pub async fn run(args: Args, report: &mut Report) -> anyhow::Result<()> {
    let validations = Arc::new(AtomicU64::new(0));
    let (section, token, project) = keystone(&args, validations.clone()).await?;
    let noauth = Server::start("auth_strategy = \"noauth\"\n").await?;
    let noauth = Target::new(noauth, format!("bench:{project}"), &project).await?;
    let keystone = Server::start(&format!("auth_strategy = \"keystone\"\n{section}")).await?;
    let keystone = Target::new(keystone, token, &project).await?;
    // Warm both (connections, the token cache) before measuring.
    noauth.round(args.clients, 0.5).await?;
    keystone.round(args.clients, 0.5).await?;
    let (mut plain, mut cached) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        // Who goes first changes every round, so neither always runs on a warmer machine.
        if round % 2 == 0 {
            plain.push(noauth.round(args.clients, args.seconds).await?);
            cached.push(keystone.round(args.clients, args.seconds).await?);
        } else {
            cached.push(keystone.round(args.clients, args.seconds).await?);
            plain.push(noauth.round(args.clients, args.seconds).await?);
        }
    }
    let (plain, cached) = (median(plain), median(cached));
    let ctx =
        |f: Figure| f.with("clients", args.clients).with("rounds", args.rounds).with("seconds", args.seconds);
    report.push(ctx(Figure::new("GET /volumes/{id} noauth", plain, "req/s")));
    report.push(ctx(Figure::new("GET /volumes/{id} keystone, cached token", cached, "req/s")));
    report.push(
        ctx(Figure::new("keystone / noauth", 100.0 * cached / plain.max(f64::MIN_POSITIVE), "%"))
            .with("target", ">= 90"),
    );
    if args.keystone_url.is_none() {
        report.push(Figure::new(
            "token validations asked of Keystone",
            validations.load(Ordering::Relaxed) as f64,
            "calls",
        ));
    }
    drop((noauth.server, keystone.server));
    Ok(())
}
