//! Export latency of the file driver: `initialize_connection`, `terminate_connection` and
//! `remove_export` of N volumes one after the other, over NBD (one qemu-storage-daemon) and iSCSI (a
//! private tgtd on free ports, skipped when tgt is not installed).
//!
//! `cargo bench -p ember-drivers --bench exports -- [N] [--json]` (default 20 volumes).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember_drivers::{
    AccessMode, Connector, DriverVolume, FileDriver, FileOptions, ImageFormat, TargetProtocol, VolumeDriver,
};

#[tokio::main]
async fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let count: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let scratch = tempfile::tempdir().expect("a temporary directory");
    if !json {
        println!("{count} volumes, one call at a time\n");
        println!("{:<6} {:<22} {:>9} {:>9} {:>9}", "proto", "call", "p50 ms", "p99 ms", "max ms");
    }
    let nbd = FileOptions { data_dir: scratch.path().join("nbd"), ..FileOptions::default() };
    run("nbd", nbd, count, json).await;
    ember_drivers::file::kill_nbd_daemons_under(scratch.path());
    match Tgtd::start() {
        Some(tgtd) => {
            let iscsi = FileOptions {
                data_dir: scratch.path().join("iscsi"),
                format: ImageFormat::Raw,
                target_protocol: TargetProtocol::Iscsi,
                target_port: tgtd.portal_port,
                tgt_control_port: tgtd.control_port,
                ..FileOptions::default()
            };
            run("iscsi", iscsi, count, json).await;
        }
        None => eprintln!("iscsi skipped: tgtd is not installed (Debian package tgt)"),
    }
}

async fn run(protocol: &str, options: FileOptions, count: usize, json: bool) {
    let driver = FileDriver::new(options);
    driver.do_setup().await.expect("setup");
    driver.check_for_setup_error().await.expect("setup check");
    let extra = serde_json::json!({"initiator": "iqn.2026-12.org.example:bench"});
    let connector =
        Connector { extra: extra.as_object().cloned().unwrap_or_default(), ..Connector::default() };
    let mut times: [Vec<Duration>; 3] = Default::default();
    for _ in 0..count {
        let volume = DriverVolume::new(uuid::Uuid::new_v4().to_string(), 1);
        driver.create_volume(&volume).await.expect("create");
        let t = Instant::now();
        driver.initialize_connection(&volume, &connector, AccessMode::Rw).await.expect("initialize");
        times[0].push(t.elapsed());
        let t = Instant::now();
        driver.terminate_connection(&volume, &connector, AccessMode::Rw).await.expect("terminate");
        times[1].push(t.elapsed());
        let t = Instant::now();
        driver.remove_export(&volume).await.expect("remove_export");
        times[2].push(t.elapsed());
        driver.delete_volume(&volume).await.expect("delete");
    }
    let calls = ["initialize_connection", "terminate_connection", "remove_export"];
    for (call, mut samples) in calls.into_iter().zip(times) {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let pct = |p: usize| ms(samples[(samples.len() * p / 100).min(samples.len() - 1)]);
        let max = ms(*samples.last().expect("samples"));
        if json {
            for (stat, value) in [("p50", pct(50)), ("p99", pct(99)), ("max", max)] {
                let case = format!("{protocol}/{call}/{stat}");
                println!(
                    "{}",
                    serde_json::json!({"bench": "exports", "case": case, "value": value, "unit": "ms"})
                );
            }
        } else {
            println!("{protocol:<6} {call:<22} {:>9.2} {:>9.2} {max:>9.2}", pct(50), pct(99));
        }
    }
}

/// A private tgtd on free ports, stopped on drop (it ignores SIGTERM).
struct Tgtd {
    control_port: u16,
    portal_port: u16,
    child: Child,
}

impl Tgtd {
    fn start() -> Option<Tgtd> {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok().map(|a| a.port());
        // tgtadm takes control ports up to 32767.
        let control_port = free()? % 30_000 + 1_000;
        let portal_port = free()?;
        let child = Command::new("tgtd")
            .args([
                "-f",
                "--iscsi",
                &format!("portal=127.0.0.1:{portal_port}"),
                "-C",
                &control_port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let tgtd = Tgtd { control_port, portal_port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", portal_port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(tgtd)
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        // The driver removed every target it made, so tgtd agrees to stop.
        let _ = Command::new("tgtadm")
            .args(["-C", &self.control_port.to_string(), "--op", "delete", "--mode", "system"])
            .output();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // tgtd leaves its control socket and lock file behind.
        for suffix in ["", ".lock"] {
            let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}{suffix}", self.control_port));
        }
    }
}
