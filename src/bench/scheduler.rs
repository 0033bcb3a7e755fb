//! `ember bench scheduler`: the time to place one request among many pools.
//!
//! Each run fills a host-state cache with `pools` pools (ten per backend, thin and thick,
//! some with infinite capacity, a few free-form capabilities), then times single placements
//! of a 1 GiB volume whose type carries extra specs, with the default filters and the
//! CapacityWeigher. Every placement consumes space as a real one would.

use std::time::Instant;

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use ember_common::capabilities::{
    BackendCapabilities, Capacity, CapacityKeyword, OverSubscription, PoolCapabilities,
};
use ember_scheduler::{RequestSpec, SchedulerOptions, ServiceStatus, SharedScheduler};

use super::{Figure, Report};

/// The target from the issue: one placement among 10,000 pools in under 1 ms.
const TARGET_US: f64 = 1000.0;
const POOLS_PER_BACKEND: usize = 10;

/// Options of `ember bench scheduler`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pool counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 1_000, 10_000])]
    pools: Vec<usize>,
    /// Timed placements per pool count (after as many untimed ones to warm up).
    #[arg(long, default_value_t = 2_000)]
    iterations: usize,
}

pub async fn run(args: Args, report: &mut Report) -> anyhow::Result<()> {
    for pools in args.pools {
        let iterations = args.iterations.max(1);
        let figures = tokio::task::spawn_blocking(move || measure(pools, iterations))
            .await
            .context("the benchmark thread panicked")??;
        for f in figures {
            report.push(f);
        }
    }
    Ok(())
}

/// Times `iterations` placements among `pools` pools; returns the median, p99 and min figures.
fn measure(pools: usize, iterations: usize) -> anyhow::Result<Vec<Figure>> {
    let scheduler = SharedScheduler::new(SchedulerOptions::default())?;
    let now = ember_scheduler::shared::now_ms();
    for b in 0..pools.div_ceil(POOLS_PER_BACKEND) {
        let backend = format!("node{b}@file");
        let zone = if b % 4 == 3 { "az2" } else { "nova" };
        scheduler.update_service(&backend, ServiceStatus::up(zone, now));
        let count = POOLS_PER_BACKEND.min(pools - b * POOLS_PER_BACKEND);
        scheduler.update_capabilities(&backend, now, backend_report(b, count));
    }
    let spec = request();
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations * 2 {
        let start = Instant::now();
        let placed = scheduler.schedule(&spec);
        let took = start.elapsed();
        placed.with_context(|| format!("placement {i} among {pools} pools"))?;
        if i >= iterations {
            samples.push(took.as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let figure = |stat: &str, value: f64| {
        Figure::new(format!("schedule 1 volume among {pools} pools, {stat}"), value, "us")
            .with("pools", pools)
            .with("stat", stat)
            .with("iterations", iterations)
            .with("target_us", TARGET_US)
    };
    // The fastest run shows the cost without preemption by other processes.
    Ok(vec![figure("median", at(0.5)), figure("p99", at(0.99)), figure("min", at(0.0))])
}

/// A volume type asking for a protocol and compression, in the default zone.
fn request() -> RequestSpec {
    let mut spec =
        RequestSpec { size_gb: 1, availability_zone: Some("nova".into()), ..RequestSpec::default() };
    spec.extra_specs.insert("capabilities:storage_protocol".into(), "nbd".into());
    spec.extra_specs.insert("compression".into(), "<is> True".into());
    spec.extra_specs.insert("RESKEY:availability_zones".into(), "nova".into());
    spec
}

fn backend_report(b: usize, count: usize) -> BackendCapabilities {
    BackendCapabilities {
        volume_backend_name: "file".into(),
        vendor_name: "Ember".into(),
        driver_version: "1.0".into(),
        storage_protocol: "nbd".into(),
        pools: (0..count).map(|p| pool(b * POOLS_PER_BACKEND + p)).collect(),
        extra: Map::new(),
    }
}

/// Pool `i`: sizes and kinds vary with `i` so that filters and weighers have work to do.
fn pool(i: usize) -> PoolCapabilities {
    let total = 1_000.0 + ((i * 7_919) % 50_000) as f64;
    let thin = i.is_multiple_of(2);
    let mut extra = Map::new();
    extra.insert(
        "compression".into(),
        Value::String(if i.is_multiple_of(5) { "False" } else { "True" }.into()),
    );
    extra.insert("tiers".into(), json!(["gold", "silver"]));
    PoolCapabilities {
        pool_name: format!("pool{i}"),
        total_capacity_gb: if i.is_multiple_of(97) {
            Capacity::Keyword(CapacityKeyword::Infinite)
        } else {
            Capacity::Gb(total)
        },
        free_capacity_gb: Capacity::Gb(total * 0.6),
        allocated_capacity_gb: total * 0.4,
        provisioned_capacity_gb: Some(total * 0.5),
        max_over_subscription_ratio: Some(OverSubscription::Ratio(if thin { 20.0 } else { 1.0 })),
        reserved_percentage: (i % 10) as f64,
        thin_provisioning_support: thin,
        thick_provisioning_support: Some(!thin),
        multiattach: Some(i.is_multiple_of(3)),
        extra,
    }
}
