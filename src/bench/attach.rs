//! `ember bench attach`: attach cycles through the REST API of a real `ember all-in-one`
//! (SQLite, in-process bus, file driver exporting over NBD, or iSCSI with a backend
//! configured for it), as Nova drives them.
//!
//! One cycle on one `available` volume: `POST /attachments` with a connector (the volume
//! is exported, the answer holds the connection info), `os-complete`, then
//! `DELETE /attachments/{id}` and reads of the volume until it is `available` again. The
//! cycles run one after the other, each on its own volume (created beforehand), and the
//! benchmark prints p50, p90 and max of the cycle and of each of its three calls. Cinder
//! 29, measured elsewhere (issue 13): 224 ms for one cycle with its NFS driver.
//!
//! `--protocol iscsi` without `--config` starts a private tgtd on free ports (as the
//! export tests do) and an all-in-one whose backend is raw and exports through it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::api::{Client, PROJECT, Server, percentile};
use super::{Figure, Report};

/// Options of `ember bench attach`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Attach cycles to time, each on a volume of its own.
    #[arg(long, default_value_t = 30)]
    volumes: usize,
    /// The export protocol the backend is expected to answer (`driver_volume_type`): `nbd`
    /// (the file driver's default) or `iscsi` (a private tgtd is started unless `--config`
    /// names a backend exporting over iSCSI).
    #[arg(long, default_value = "nbd")]
    protocol: String,
    /// A TOML configuration for the all-in-one (e.g. a backend configured for iSCSI).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Cinder 29's attach cycle, for the table.
const CINDER_MS: f64 = 224.0;
/// The microversion of the calls (`os-complete` needs 3.44).
const VERSION: &str = "volume 3.44";

/// One request with the attachments microversion.
async fn call(
    client: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = client
        .http
        .request(method, format!("{}/v3/{PROJECT}{path}", client.base))
        .header("X-Auth-Token", format!("bench:{PROJECT}"))
        .header("OpenStack-API-Version", VERSION);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// The times of one cycle: create (exported), complete, delete until `available`.
struct Cycle {
    create: Duration,
    complete: Duration,
    detach: Duration,
}

async fn cycle(client: &Client, volume_id: &str, protocol: &str) -> anyhow::Result<Cycle> {
    let connector =
        json!({ "host": "bench-compute", "ip": "127.0.0.1", "initiator": "iqn.2026-12.bench:compute" });
    let body = json!({ "attachment": { "volume_uuid": volume_id, "connector": connector } });
    let started = Instant::now();
    let (status, answer) = call(client, reqwest::Method::POST, "/attachments", Some(body)).await?;
    if status != 200 {
        bail!("attachment create answered {status}: {answer}");
    }
    let create = started.elapsed();
    let id = answer["attachment"]["id"].as_str().context("the attachment's id")?.to_owned();
    let kind = &answer["attachment"]["connection_info"]["driver_volume_type"];
    if kind != protocol {
        bail!("the backend exported over {kind}, not {protocol} (see --protocol and --config)");
    }
    let at = Instant::now();
    let complete = json!({ "os-complete": {} });
    let (status, answer) =
        call(client, reqwest::Method::POST, &format!("/attachments/{id}/action"), Some(complete)).await?;
    if status != 204 {
        bail!("os-complete answered {status}: {answer}");
    }
    let complete = at.elapsed();
    let at = Instant::now();
    let (status, answer) = call(client, reqwest::Method::DELETE, &format!("/attachments/{id}"), None).await?;
    if status != 200 {
        bail!("attachment delete answered {status}: {answer}");
    }
    loop {
        let (_, shown) = call(client, reqwest::Method::GET, &format!("/volumes/{volume_id}"), None).await?;
        match shown["volume"]["status"].as_str() {
            Some("available") => break,
            Some(s) if at.elapsed() > Duration::from_secs(60) => bail!("volume {volume_id} stuck in {s}"),
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    Ok(Cycle { create, complete, detach: at.elapsed() })
}

pub async fn run(args: Args, report: &mut Report) -> anyhow::Result<()> {
    if args.volumes == 0 {
        bail!("--volumes must be at least 1");
    }
    // A private tgtd for iSCSI, unless the configuration names one; killed on drop.
    let mut tgtd = None;
    let mut config = args.config.clone();
    if args.protocol == "iscsi" && config.is_none() {
        let started = Tgtd::start().await?;
        config = Some(started.config()?);
        tgtd = Some(started);
    }
    let server = Server::start_with(config.as_deref()).await?;
    let client = Client { http: reqwest::Client::new(), base: server.base.clone() };
    let quota = json!({ "quota_set": { "volumes": -1, "gigabytes": -1 } });
    let (status, body) =
        client.send(reqwest::Method::PUT, &format!("/os-quota-sets/{PROJECT}"), Some(quota)).await?;
    if status != 200 {
        bail!("raising the quotas answered {status}: {body}");
    }
    for i in 0..args.volumes {
        client.create_and_wait(i, Duration::from_millis(5)).await?;
    }
    let (_, listed) = client.send(reqwest::Method::GET, "/volumes?limit=1000", None).await?;
    let volumes: Vec<String> = listed["volumes"]
        .as_array()
        .context("the volume list")?
        .iter()
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    let (mut total, mut creates, mut completes, mut detaches) = (vec![], vec![], vec![], vec![]);
    for id in volumes.iter().take(args.volumes) {
        let c = cycle(&client, id, &args.protocol).await?;
        total.push(c.create + c.complete + c.detach);
        creates.push(c.create);
        completes.push(c.complete);
        detaches.push(c.detach);
    }
    let p = &args.protocol;
    for (name, mut times) in [
        ("attach cycle", total),
        ("create with connector (exported)", creates),
        ("os-complete", completes),
        ("delete until available", detaches),
    ] {
        times.sort();
        let with = |f: Figure| f.with("protocol", p.as_str()).with("cycles", times.len());
        report.push(with(Figure::new(format!("{p}: {name} p50"), percentile(&times, 50.0), "ms")));
        report.push(with(Figure::new(format!("{p}: {name} p90"), percentile(&times, 90.0), "ms")));
        report.push(with(Figure::new(format!("{p}: {name} max"), percentile(&times, 100.0), "ms")));
    }
    let target = if args.protocol == "iscsi" { ISCSI_TARGET_MS } else { CINDER_MS / 10.0 };
    report.push(
        Figure::new("Cinder 29, measured elsewhere (issue 13): attach cycle", CINDER_MS, "ms")
            .with("target_p50_ms", target),
    );
    // Every attachment was deleted, so the server, then tgtd, stop with nothing exported.
    drop(server);
    drop(tgtd);
    Ok(())
}

/// The iSCSI target of issue 13: a cycle under 50 ms.
const ISCSI_TARGET_MS: f64 = 50.0;

/// A private tgtd on free ports (tgtadm takes control ports up to 32767), killed on drop
/// (it ignores SIGTERM), with a configuration file for an all-in-one exporting through it.
struct Tgtd {
    child: tokio::process::Child,
    control_port: u16,
    portal_port: u16,
    dir: tempfile::TempDir,
}

impl Tgtd {
    async fn start() -> anyhow::Result<Self> {
        let free = || -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
        };
        let control_port = free()? % 30_000 + 1_000;
        let portal_port = free()?;
        let portal = format!("portal=127.0.0.1:{portal_port}");
        let child = tokio::process::Command::new("tgtd")
            .args(["-f", "--iscsi", &portal, "-C", &control_port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start tgtd (Debian package tgt)")?;
        let tgtd = Tgtd { child, control_port, portal_port, dir: tempfile::tempdir()? };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", portal_port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("tgtd did not listen on 127.0.0.1:{portal_port} in 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(tgtd)
    }

    /// A configuration whose one backend is raw and exports through this tgtd.
    fn config(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join("ember.toml");
        let text = format!(
            "enabled_backends = [\"file\"]\n[backends.file]\nvolume_driver = \"file\"\n\
             file_volume_format = \"raw\"\ntarget_protocol = \"iscsi\"\ntarget_port = {}\n\
             tgt_control_port = {}\n",
            self.portal_port, self.control_port
        );
        std::fs::write(&path, text).context("write the iSCSI configuration")?;
        Ok(path)
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // tgtd leaves its control socket and lock file behind.
        for suffix in ["", ".lock"] {
            let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}{suffix}", self.control_port));
        }
    }
}
