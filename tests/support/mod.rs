//! `TestCluster`: starts the real `ember` binary on loopback and waits for it to be healthy.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One running `ember` process and its data directory.
pub struct TestCluster {
    child: Child,
    pub base_url: String,
    data_dir: tempfile::TempDir,
}

/// A port that was free a moment ago (the kernel hands out ephemeral ports in turn).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("find a free port")
}

impl TestCluster {
    /// Starts `ember all-in-one` on a free port with a fresh data directory.
    pub async fn all_in_one() -> Self {
        let data_dir = tempfile::tempdir().expect("create the data directory");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_ember"))
            .arg("all-in-one")
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("EMBER_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start ember all-in-one");
        let cluster = Self { child, base_url: format!("http://127.0.0.1:{port}"), data_dir };
        cluster.wait_healthy(Duration::from_secs(30)).await;
        cluster
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.path().join("ember.db")
    }

    /// Polls `/healthcheck` until it answers 200, or panics at the deadline.
    pub async fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::new();
        loop {
            let url = format!("{}/healthcheck", self.base_url);
            let answer = client.get(&url).timeout(Duration::from_secs(2)).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "ember did not become healthy at {url} in {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.kill();
    }
}
