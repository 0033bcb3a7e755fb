//! Slow or idle clients cannot hold the API's resources: 2,000 connections that never finish
//! their headers do not keep a normal client out, are closed after `client_header_timeout`,
//! and give back the file descriptors and memory they held.

mod support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::TestCluster;

const SLOW: usize = 2000;
const HEADER_TIMEOUT_S: u64 = 4;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns whether it held.
async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_give_back_what_they_held() {
    let cluster =
        TestCluster::all_in_one_with(&format!("client_header_timeout = {HEADER_TIMEOUT_S}\n")).await;
    let pid = cluster.pid().unwrap();
    let c = cluster.client("demo");
    for _ in 0..50 {
        assert_eq!(c.get("/volumes/detail").await.0, 200);
    }
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));

    // Half send part of their headers and stall, half send nothing at all.
    let addr = cluster.base_url.trim_start_matches("http://").to_owned();
    let mut slow = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        if i % 2 == 0 {
            s.write_all(b"GET /v3/demo/volumes HTTP/1.1\r\nHost: ember\r\nX-Auth-Token: a:demo\r\n")
                .await
                .unwrap();
        }
        slow.push(s);
    }
    let held = eventually(Duration::from_secs(10), || open_fds(pid) >= fds_before + SLOW * 9 / 10).await;
    assert!(held, "the server did not take the slow connections: {} fds", open_fds(pid));

    // A normal client is served meanwhile.
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(c.get("/volumes/detail").await.0, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(HEADER_TIMEOUT_S), "normal requests waited");

    // Every slow connection is closed by the server once the header timeout passes.
    let deadline = Instant::now() + Duration::from_secs(HEADER_TIMEOUT_S + 20);
    for s in &mut slow {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(left, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // a 408 answer, then the close
                }
            }
        })
        .await;
        assert!(read.is_ok(), "a slow connection was still open past the header timeout");
    }
    drop(slow);

    let fds_back = eventually(Duration::from_secs(10), || open_fds(pid) <= fds_before + 10).await;
    assert!(fds_back, "descriptors not given back: {} before, {} after", fds_before, open_fds(pid));
    let rss_back = eventually(Duration::from_secs(20), || rss_kib(pid) <= rss_before + 10 * 1024).await;
    assert!(rss_back, "memory not given back: {rss_before} KiB before, {} KiB after", rss_kib(pid));
    println!("slow clients: fds {fds_before} -> {}, RSS {rss_before} -> {} KiB", open_fds(pid), rss_kib(pid));
    assert_eq!(c.get("/volumes/detail").await.0, 200);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_refused_and_changes_nothing() {
    let cluster = TestCluster::all_in_one_with("client_body_timeout = 2\n").await;
    let c = cluster.client("demo");
    let addr = cluster.base_url.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = "POST /v3/demo/volumes HTTP/1.1\r\nHost: ember\r\nX-Auth-Token: a:demo\r\n\
                Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"volume\": {";
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server waited past the body timeout");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert_eq!(c.get("/volumes").await.1["volumes"], serde_json::json!([]));
}
