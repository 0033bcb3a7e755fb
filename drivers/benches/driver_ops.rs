//! Driver throughput and latency: N creates (blank, from a snapshot, clones) and deletes
//! with C concurrent callers, on the file driver (real qemu-img) and the fake driver.
//!
//! `cargo bench -p ember-drivers --bench driver_ops -- [N] [C] [DIR]`
//! (defaults: 100 volumes, 10 callers, a temporary directory).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_drivers::{
    DriverSnapshot, DriverVolume, FakeDriver, FakeOptions, FileDriver, FileOptions, SharedDriver,
};
use tokio::sync::Semaphore;

/// One kind of operation to time.
#[derive(Debug, Clone, Copy)]
enum Op {
    Blank,
    FromSnapshot,
    Clone,
    Delete,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let count: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100);
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let dir = args.get(2).map(Into::into).unwrap_or_else(|| scratch.path().join("volumes"));

    let file = FileDriver::new(FileOptions { data_dir: dir, ..FileOptions::default() });
    let fake = FakeDriver::new(FakeOptions { capacity_gb: u64::MAX / 2, ..FakeOptions::default() });
    for (name, driver) in [("file", Arc::new(file) as SharedDriver), ("fake", Arc::new(fake) as SharedDriver)]
    {
        driver.do_setup().await.expect("setup");
        println!("{name} driver, {count} volumes, {concurrency} concurrent callers");
        run(&driver, count, concurrency).await;
    }
}

async fn run(driver: &SharedDriver, count: usize, concurrency: usize) {
    let source = DriverVolume::new(uuid::Uuid::new_v4().to_string(), 1);
    driver.create_volume(&source).await.expect("source volume");
    let snapshot = DriverSnapshot::new(uuid::Uuid::new_v4().to_string(), source.id.clone(), 1);
    driver.create_snapshot(&snapshot).await.expect("snapshot");
    let mut made = Vec::new();
    for op in [Op::Blank, Op::FromSnapshot, Op::Clone] {
        let volumes: Vec<DriverVolume> =
            (0..count).map(|_| DriverVolume::new(uuid::Uuid::new_v4().to_string(), 1)).collect();
        measure(driver, op, &volumes, &source, &snapshot, concurrency).await;
        made.extend(volumes);
    }
    measure(driver, Op::Delete, &made, &source, &snapshot, concurrency).await;
    driver.delete_snapshot(&snapshot).await.expect("snapshot delete");
    driver.delete_volume(&source).await.expect("source delete");
}

async fn measure(
    driver: &SharedDriver,
    op: Op,
    volumes: &[DriverVolume],
    source: &DriverVolume,
    snapshot: &DriverSnapshot,
    concurrency: usize,
) {
    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for volume in volumes {
        let (driver, gate) = (driver.clone(), gate.clone());
        let (volume, source, snapshot) = (volume.clone(), source.clone(), snapshot.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("open semaphore");
            let begun = Instant::now();
            let result = match op {
                Op::Blank => driver.create_volume(&volume).await.map(drop),
                Op::FromSnapshot => driver.create_volume_from_snapshot(&volume, &snapshot).await.map(drop),
                Op::Clone => driver.create_cloned_volume(&volume, &source).await.map(drop),
                Op::Delete => driver.delete_volume(&volume).await,
            };
            result.expect("driver call");
            begun.elapsed()
        });
    }
    let mut latencies: Vec<Duration> = tasks.join_all().await;
    let wall = started.elapsed();
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "  {:<13} {:>8.1} ops/s   p50 {:>8.2} ms   p99 {:>8.2} ms",
        format!("{op:?}"),
        volumes.len() as f64 / wall.as_secs_f64(),
        pct(50).as_secs_f64() * 1e3,
        pct(99).as_secs_f64() * 1e3,
    );
}
