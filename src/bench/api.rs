//! `ember bench api`: volumes created through the REST API of a real `ember all-in-one`
//! (SQLite, in-process bus, file driver), as a cloud's clients would.
//!
//! The benchmark starts the all-in-one as a child process on a fresh data directory and
//! raises the project's quotas. It times `single_samples` volumes created alone one after
//! the other, each read every millisecond until it is `available` (the median
//! create-to-available, with min and max); then `clients` concurrent clients create
//! `volumes` 1 GiB volumes between them, each polling its volume every 10 ms. It prints
//! volumes per second, create-to-available latency (p50, p99), the server's CPU seconds per
//! create (from /proc, user + system) and its peak resident memory (VmHWM), and the memory
//! at rest before the first request. Cinder 29 on this kind of machine: 60-73 s for 100
//! creates with 10 clients, 0.5-0.8 CPU s per create, 0.53-0.94 s create-to-available for
//! one volume, 0.93 GB at rest.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{Figure, Report};

/// Options of `ember bench api`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Volumes to create.
    #[arg(long, default_value_t = 100)]
    volumes: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Also time volumes alone (create to available), as the single-volume figure.
    #[arg(long, default_value_t = true)]
    single: bool,
    /// How many volumes to time alone, one after the other: the figure is their median,
    /// with the min and max.
    #[arg(long, default_value_t = 10)]
    single_samples: usize,
}

pub(super) const PROJECT: &str = "bench00000000000000000000000000a1";

/// How often the concurrent clients read their volumes.
const CLIENTS_POLL: Duration = Duration::from_millis(10);
/// How often a volume created alone is read: often enough that the figure is not rounded up
/// to a poll interval (with 10 ms it was), and harmless with one client.
const SINGLE_POLL: Duration = Duration::from_millis(1);

/// The all-in-one under test; killed when dropped.
pub(super) struct Server {
    child: Child,
    pub(super) base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    /// The NBD export daemon outlives the server on purpose (attached volumes stay
    /// reachable across a restart): the benchmark's data directory takes it along.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        ember_drivers::file::kill_nbd_daemons_under(self._dir.path());
    }
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// Starts the all-in-one, with the configuration file `config` if given.
    pub(super) async fn start_with(config: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("create a data directory")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new(std::env::current_exe().context("find the ember binary")?);
        command.args(["all-in-one", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(dir.path());
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let child = command
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

    /// User + system CPU seconds of the server so far, its waited-for children (qemu-img)
    /// included.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("parse /proc/pid/stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime, stime, cutime, cstime: fields 14 to 17 of proc(5), 11 to 14 after the name.
        let ticks: f64 = (11..15).filter_map(|i| fields.get(i)?.parse::<f64>().ok()).sum();
        Ok(ticks / 100.0)
    }

    /// A memory figure of the server from /proc/pid/status, in MiB (`VmHWM`, `VmRSS`).
    fn memory_mib(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?.trim_start_matches(':').split_whitespace().next()?.parse::<f64>().ok()
            })
            .with_context(|| format!("read {field}"))?;
        Ok(kib / 1024.0)
    }
}

/// One client of the project.
#[derive(Clone)]
pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
}

impl Client {
    pub(super) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}/v3/{PROJECT}{path}", self.base))
            .header("X-Auth-Token", format!("bench:{PROJECT}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Creates one volume and waits for it, reading it every `poll`; returns
    /// create-to-available.
    pub(super) async fn create_and_wait(&self, i: usize, poll: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let body = json!({ "volume": { "size": 1, "name": format!("bench-{i}") } });
        let (status, answer) = self.send(reqwest::Method::POST, "/volumes", Some(body)).await?;
        if status != 202 {
            bail!("create answered {status}: {answer}");
        }
        let id = answer["volume"]["id"].as_str().context("the new volume's id")?.to_owned();
        loop {
            let (_, shown) = self.send(reqwest::Method::GET, &format!("/volumes/{id}"), None).await?;
            match shown["volume"]["status"].as_str() {
                Some("available") => return Ok(started.elapsed()),
                Some(s) if s.starts_with("error") => bail!("volume {id} went to {s}"),
                _ if started.elapsed() > Duration::from_secs(300) => {
                    bail!("volume {id} not available in 300 s")
                }
                _ => tokio::time::sleep(poll).await,
            }
        }
    }
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// `samples` volumes created one after the other, each alone on the server and read every
/// millisecond: the median create-to-available, with the min and max (one sample is mostly
/// noise at this scale).
async fn single(client: &Client, samples: usize) -> anyhow::Result<Figure> {
    let mut alone = Vec::with_capacity(samples);
    for i in 0..samples {
        alone.push(client.create_and_wait(usize::MAX - i, SINGLE_POLL).await?);
    }
    alone.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(Figure::new("one volume alone, create to available (median)", percentile(&alone, 50.0), "ms")
        .with("samples", samples)
        .with("min_ms", super::round(ms(alone[0])))
        .with("max_ms", super::round(ms(alone[samples - 1])))
        .with("cinder_29_ms", "530-940"))
}

pub async fn run(args: Args, report: &mut Report) -> anyhow::Result<()> {
    let server = Server::start().await?;
    let client = Client { http: reqwest::Client::new(), base: server.base.clone() };
    let quota = json!({ "quota_set": { "volumes": -1, "gigabytes": -1 } });
    let (status, body) =
        client.send(reqwest::Method::PUT, &format!("/os-quota-sets/{PROJECT}"), Some(quota)).await?;
    if status != 200 {
        bail!("raising the quotas answered {status}: {body}");
    }
    report
        .push(Figure::new("memory at rest (RSS)", server.memory_mib("VmRSS")?, "MiB").with("cinder_29", 930));
    if args.single && args.single_samples > 0 {
        report.push(single(&client, args.single_samples).await?);
    }
    let cpu_before = server.cpu_seconds()?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.clients.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.volumes {
        let (client, gate) = (client.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            client.create_and_wait(i, CLIENTS_POLL).await
        });
    }
    let mut latencies = Vec::with_capacity(args.volumes);
    while let Some(done) = tasks.join_next().await {
        latencies.push(done.context("a client panicked")??);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds()? - cpu_before;
    latencies.sort();
    let ctx = |f: Figure| f.with("volumes", args.volumes).with("clients", args.clients);
    report
        .push(ctx(Figure::new("total time", wall, "s")).with("cinder_29_s", "60-73 for 100 with 10 clients"));
    report.push(ctx(Figure::new("throughput", args.volumes as f64 / wall, "volumes/s")));
    report.push(ctx(Figure::new("create to available p50", percentile(&latencies, 50.0), "ms")));
    report.push(ctx(Figure::new("create to available p99", percentile(&latencies, 99.0), "ms")));
    report.push(
        ctx(Figure::new("server CPU per create", cpu / args.volumes.max(1) as f64, "s"))
            .with("cinder_29_s", "0.5-0.8"),
    );
    report.push(ctx(Figure::new("server peak RSS", server.memory_mib("VmHWM")?, "MiB")));
    Ok(())
}
