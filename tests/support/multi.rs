//! `MultiProcess`: `ember api`, `ember scheduler` and volume processes apart, on a
//! PostgreSQL database of their own and RabbitMQ, as a deployment runs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember_db::testing::TestDb;

use super::{Cinder, free_port, wait_healthy};

/// One `ember <role>` process, restartable with the same configuration.
pub struct Process {
    pub role: String,
    config: PathBuf,
    child: Option<Child>,
    /// Extra environment of the next start (e.g. `FAILPOINTS`).
    pub env: Vec<(String, String)>,
}

impl Process {
    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_ember"))
            .arg(&self.role)
            .arg("--config")
            .arg(&self.config)
            .env("EMBER_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start ember {}: {e}", self.role));
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// Waits for the process to exit on its own (a failpoint); `None` while it runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        super::wait_exit(&mut self.child, timeout).await
    }

    /// Whether the process is running (it was started and has not been seen to exit).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

/// A whole deployment on loopback; every process is killed and the database dropped at
/// the end.
pub struct MultiProcess {
    pub db: Option<TestDb>,
    pub api: Process,
    pub scheduler: Process,
    pub volumes: Vec<Process>,
    pub base_url: String,
    /// In front of every RabbitMQ name of this deployment (`transport_prefix`), so that
    /// deployments of tests running at once never see each other's messages.
    pub prefix: String,
    dir: tempfile::TempDir,
    /// The configuration every process shares (database, transport, intervals).
    common: String,
    /// What the api processes' configuration adds (auth, say).
    api_extra: String,
}

/// Where a test deployment runs, or `None` (after saying why) when the services are not
/// configured.
pub async fn services() -> Option<(TestDb, String)> {
    let Ok(amqp) = std::env::var("EMBER_TEST_AMQP_URL") else {
        eprintln!("skipped: EMBER_TEST_AMQP_URL is not set, so the multi-process test is not run");
        return None;
    };
    let db = TestDb::postgres().await.expect("create a PostgreSQL test database")?;
    Some((db, amqp))
}

impl MultiProcess {
    /// Starts api and scheduler, then one volume process per `(host, backend TOML)`.
    pub async fn start(db: TestDb, amqp: &str, volumes: &[(&str, &str)]) -> Self {
        Self::start_with_api(db, amqp, volumes, "").await
    }

    /// As [`MultiProcess::start`], with `api_extra` at the end of every api's configuration
    /// (peers' too).
    pub async fn start_with_api(db: TestDb, amqp: &str, volumes: &[(&str, &str)], api_extra: &str) -> Self {
        let url = db.url.clone();
        Self::start_custom(db, &url, amqp, volumes, api_extra, "").await
    }

    /// As [`MultiProcess::start_with_api`], with the processes reaching the database at
    /// `url` (a proxy of `db`, say) and `common_extra` in every process's configuration.
    pub async fn start_custom(
        db: TestDb,
        url: &str,
        amqp: &str,
        volumes: &[(&str, &str)],
        api_extra: &str,
        common_extra: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("create the deployment's directory");
        let port = free_port();
        // An API request that waits for a volume-side flow (an attachment's export) gives up
        // after rpc_response_timeout: short here, so a volume process killed by a crash test
        // does not hold the requests in flight (and the test) for Cinder's 60 s.
        let prefix = format!("t{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let common = format!(
            "database_url = {url:?}\ntransport_url = {amqp:?}\ntransport_prefix = {prefix:?}\nreport_interval = 2\n\
             periodic_interval = 2\nrpc_response_timeout = 5\n{common_extra}",
        );
        let write = |name: &str, body: String| -> PathBuf {
            let data = dir.path().join(name);
            let path = dir.path().join(format!("{name}.toml"));
            let text =
                format!("data_dir = {:?}\nhost = {name:?}\n{common}{body}", data.display().to_string());
            std::fs::write(&path, text).expect("write a configuration file");
            path
        };
        let listen =
            format!("osapi_volume_listen = \"127.0.0.1\"\nosapi_volume_listen_port = {port}\n{api_extra}");
        let mut api =
            Process { role: "api".into(), config: write("api", listen), child: None, env: Vec::new() };
        let mut scheduler = Process {
            role: "scheduler".into(),
            config: write("scheduler", String::new()),
            child: None,
            env: Vec::new(),
        };
        let mut procs: Vec<Process> = volumes
            .iter()
            .map(|(host, toml)| Process {
                role: "volume".into(),
                config: write(host, (*toml).to_owned()),
                child: None,
                env: Vec::new(),
            })
            .collect();
        for p in procs.iter_mut() {
            p.start();
        }
        scheduler.start();
        api.start();
        let base_url = format!("http://127.0.0.1:{port}");
        wait_healthy(&base_url, Duration::from_secs(60)).await;
        let api_extra = api_extra.to_owned();
        let cluster =
            Self { db: Some(db), api, scheduler, volumes: procs, base_url, prefix, dir, common, api_extra };
        cluster.wait_volume_services(volumes.len()).await;
        cluster
    }

    /// Waits until `count` volume services are registered and up. A volume service
    /// registers, then reports its capabilities, and a report from a service the scheduler
    /// does not know makes it read the services table: a create sent before that may find
    /// no pool (`NoValidBackend`) and end in `error` although the backend was starting.
    pub async fn wait_volume_services(&self, count: usize) {
        let admin = self.client("waitservices");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, services) = admin.get("/os-services?binary=cinder-volume").await;
            if status == 401 || status == 403 {
                // Token auth (Keystone): a noauth caller cannot look; such a test waits its own way.
                return;
            }
            let up = services["services"]
                .as_array()
                .map_or(0, |s| s.iter().filter(|s| s["state"] == "up").count());
            if up >= count {
                return;
            }
            assert!(Instant::now() < deadline, "{count} volume services up: {services}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `ember <role>` as host `name` (its own data directory) with the deployment's
    /// common configuration and `extra`; the caller kills it (or drops it).
    pub fn start_role(&self, role: &str, name: &str, extra: &str) -> Process {
        let path = self.dir.path().join(format!("{name}.toml"));
        let data = self.dir.path().join(name).display().to_string();
        let text = format!("data_dir = {data:?}\nhost = {name:?}\n{}{extra}", self.common);
        std::fs::write(&path, text).expect("write a configuration file");
        let mut process = Process { role: role.into(), config: path, child: None, env: Vec::new() };
        process.start();
        process
    }

    /// The configuration file of process `name`.
    pub fn config_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.toml"))
    }

    /// Starts another `ember api` named `name` on a port of its own, a peer of `api` that
    /// takes over its flows when it dies; returns it and its base URL once it serves.
    pub async fn start_peer_api(&self, name: &str) -> (Process, String) {
        let port = free_port();
        let path = self.dir.path().join(format!("{name}.toml"));
        let data = self.dir.path().join(name).display().to_string();
        let text = format!(
            "data_dir = {data:?}\nhost = {name:?}\n{}osapi_volume_listen = \"127.0.0.1\"\n\
             osapi_volume_listen_port = {port}\n{}",
            self.common, self.api_extra
        );
        std::fs::write(&path, text).expect("write a configuration file");
        let mut peer = Process { role: "api".into(), config: path, child: None, env: Vec::new() };
        peer.start();
        let base_url = format!("http://127.0.0.1:{port}");
        wait_healthy(&base_url, Duration::from_secs(60)).await;
        (peer, base_url)
    }

    pub fn client(&self, project: &str) -> Cinder {
        Cinder::new(&self.base_url, project)
    }

    /// The data directory of process `name`.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The volume files of backend `backend` of host `host`.
    pub fn files(&self, host: &str, backend: &str) -> Vec<String> {
        list_files(&self.data_dir(host).join("volumes").join(backend))
    }

    /// Kills every process, deletes its durable queues (the shared topics' and those named
    /// after its volume hosts, given unprefixed: the processes died without a chance to) and
    /// drops the database.
    pub async fn stop(mut self, amqp: &str, queues: &[String]) {
        self.api.kill();
        self.scheduler.kill();
        self.volumes.iter_mut().for_each(Process::kill);
        kill_export_daemons(self.dir.path());
        let names: Vec<String> = SHARED_QUEUES
            .iter()
            .map(|q| (*q).to_owned())
            .chain(queues.iter().cloned())
            .map(|q| format!("{}{q}", self.prefix))
            .collect();
        delete_queues(amqp, &names).await;
        if let Some(db) = self.db.take() {
            db.cleanup().await.expect("drop the test database");
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for MultiProcess {
    fn drop(&mut self) {
        self.api.kill();
        self.scheduler.kill();
        self.volumes.iter_mut().for_each(Process::kill);
        kill_export_daemons(self.dir.path());
    }
}

/// The `volume-*` and `snapshot-*` files in `dir`, sorted.
pub fn list_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("volume-") || n.starts_with("snapshot-"))
                .collect()
        })
        .unwrap_or_default();
    names.extend(live_exports(dir).into_iter().map(|id| format!("export-volume-{id}")));
    names.sort();
    names
}

/// The volumes the file driver in `dir` exports now, asked of its NBD export daemon
/// (`list_exports` cannot be reached from a test).
pub fn live_exports(dir: &Path) -> Vec<String> {
    ember_drivers::file::nbd_exported_volumes(dir).expect("ask the NBD export daemon for its exports")
}

/// Kills the NBD export daemons of the file backends under `root` (they outlive the volume
/// services on purpose).
pub fn kill_export_daemons(root: &Path) {
    ember_drivers::file::kill_nbd_daemons_under(root);
}

/// The durable queues of the topics every deployment shares.
const SHARED_QUEUES: &[&str] = &["ember-scheduler", "ember-volume", "ember-api", "ember-backup"];

/// Deletes `queues`, those that exist (a channel each: a refused delete closes its channel).
async fn delete_queues(amqp: &str, queues: &[String]) {
    use lapin::options::QueueDeleteOptions;
    let connection = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ to clean up");
    for name in queues {
        let channel = connection.create_channel().await.expect("open a channel to clean up");
        if let Err(e) = channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await {
            assert!(e.to_string().contains("NOT_FOUND"), "delete the test queue {name}: {e}");
        }
    }
    let _ = connection.close(0, "".into()).await;
}
