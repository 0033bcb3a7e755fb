//! `TestCluster`: starts the real `ember` binary on loopback and waits for it to be healthy,
//! and `Cinder`, a small REST client that speaks the API as the real clients do.

#![allow(dead_code)]

pub mod backups;
mod client;
pub mod crash;
pub mod faults;
pub mod keystone;
pub mod multi;
pub mod proxy;
pub mod scenario;
pub mod webdriver;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use client::Cinder;

/// One running `ember all-in-one` process and its data directory.
pub struct TestCluster {
    child: Option<Child>,
    pub base_url: String,
    port: u16,
    data_dir: tempfile::TempDir,
    config: Option<PathBuf>,
    /// Extra environment of the next start (e.g. `FAILPOINTS`).
    pub env: Vec<(String, String)>,
}

/// A port that was free a moment ago (the kernel hands out ephemeral ports in turn).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("find a free port")
}

impl TestCluster {
    /// Starts `ember all-in-one` on a free port with a fresh data directory.
    pub async fn all_in_one() -> Self {
        Self::all_in_one_with("").await
    }

    /// Starts `ember all-in-one` with `toml` as its configuration file.
    pub async fn all_in_one_with(toml: &str) -> Self {
        Self::all_in_one_env(toml, Vec::new()).await
    }

    /// As [`TestCluster::all_in_one_with`], with `env` added to the process's environment.
    pub async fn all_in_one_env(toml: &str, env: Vec<(String, String)>) -> Self {
        let data_dir = tempfile::tempdir().expect("create the data directory");
        let config = (!toml.is_empty()).then(|| {
            let path = data_dir.path().join("ember.toml");
            std::fs::write(&path, toml).expect("write the configuration");
            path
        });
        let port = free_port();
        let base_url = format!("http://127.0.0.1:{port}");
        let mut cluster = Self { child: None, base_url, port, data_dir, config, env };
        cluster.start().await;
        cluster
    }

    /// Starts the process (again) on the same port and data directory.
    pub async fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_ember"))
            .arg("all-in-one")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(self.config.iter().flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]))
            .env("EMBER_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .spawn()
            .expect("start ember all-in-one");
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(30)).await;
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.path().join("ember.db")
    }

    /// The directory of the default file backend's volumes.
    pub fn volume_dir(&self) -> PathBuf {
        self.data_dir.path().join("volumes").join("file")
    }

    /// The names of the volume and snapshot files of the default file backend, and
    /// `export-volume-<id>` for each volume its NBD export daemon exports.
    pub fn backend_files(&self) -> Vec<String> {
        multi::list_files(&self.volume_dir())
    }

    /// A client of project `project` (noauth token `user:project`).
    pub fn client(&self, project: &str) -> Cinder {
        Cinder::new(&self.base_url, project)
    }

    /// Polls `/healthcheck` until it answers 200, or panics at the deadline.
    pub async fn wait_healthy(&self, timeout: Duration) {
        wait_healthy(&self.base_url, timeout).await;
    }

    /// Waits for the process to exit on its own (a failpoint), polling until `timeout`;
    /// `None` while it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, timeout).await
    }

    /// Stops the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `child` until it exited (then reaps it and returns how) or `timeout` passes.
pub async fn wait_exit(child: &mut Option<Child>, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = child.as_mut()?.try_wait().expect("poll a child process");
        if let Some(status) = status {
            *child = None;
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `base_url/healthcheck` until it answers 200, or panics at the deadline.
pub async fn wait_healthy(base_url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let client = reqwest::Client::new();
    let url = format!("{base_url}/healthcheck");
    loop {
        let answer = client.get(&url).timeout(Duration::from_secs(2)).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "ember did not become healthy at {url} in {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for TestCluster {
    /// A crash (`kill`) leaves the NBD export daemon running, as it should; the end of the
    /// test does not.
    fn drop(&mut self) {
        self.kill();
        multi::kill_export_daemons(self.data_dir.path());
    }
}
