//! Builders shared by the scheduler's integration tests: pools and reports from JSON, a
//! cache of up services, and a scheduler with Cinder's defaults.

#![allow(dead_code)]

use ember_common::capabilities::{BackendCapabilities, PoolCapabilities};
use ember_scheduler::{FilterScheduler, HostStateCache, SchedulerOptions, ServiceStatus};
use serde_json::{Value, json};

/// The time every test runs at (milliseconds since the epoch).
pub const NOW: i64 = 1_700_000_000_000;

/// A pool report: `pool(name, total, free)` plus any other fields merged in.
pub fn pool(name: &str, total: Value, free: Value, extra: Value) -> PoolCapabilities {
    let mut v = json!({ "pool_name": name, "total_capacity_gb": total, "free_capacity_gb": free });
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    serde_json::from_value(v).expect("a valid pool report")
}

/// A thick pool with `total` and `free` GiB and nothing else.
pub fn thick(name: &str, total: f64, free: f64) -> PoolCapabilities {
    pool(name, json!(total), json!(free), json!({}))
}

/// A backend report holding `pools`.
pub fn report(backend_name: &str, pools: Vec<PoolCapabilities>) -> BackendCapabilities {
    let mut caps: BackendCapabilities = serde_json::from_value(json!({
        "volume_backend_name": backend_name,
        "vendor_name": "Ember",
        "driver_version": "1.0",
        "storage_protocol": "nbd",
        "pools": []
    }))
    .expect("a valid backend report");
    caps.pools = pools;
    caps
}

/// Adds an up service in `az` with its report taken at `NOW - 1000`.
pub fn add_backend(cache: &mut HostStateCache, backend: &str, az: &str, pools: Vec<PoolCapabilities>) {
    cache.update_service(backend, ServiceStatus::up(az, NOW));
    let name = backend.split('@').nth(1).unwrap_or(backend);
    assert!(cache.update_capabilities(backend, NOW - 1000, report(name, pools)));
}

pub fn scheduler(options: SchedulerOptions) -> FilterScheduler {
    FilterScheduler::with_seed(options, 7).expect("valid options")
}

pub fn default_scheduler() -> FilterScheduler {
    scheduler(SchedulerOptions::default())
}
