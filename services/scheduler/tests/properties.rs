//! Properties of the scheduler over random pools and requests.

mod common;

use common::{NOW, add_backend, default_scheduler, pool};
use ember_common::capabilities::PoolCapabilities;
use ember_scheduler::capacity::{CapacityInputs, available_and_virtual_free, calculate_capacity_factors};
use ember_scheduler::weighers::capacity_weight;
use ember_scheduler::{HostStateCache, RequestSpec};
use proptest::prelude::*;
use serde_json::{Value, json};

fn capacity() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (0u32..2000).prop_map(|v| json!(v)),
        1 => Just(json!("infinite")),
        1 => Just(json!("unknown")),
    ]
}

fn ratio() -> impl Strategy<Value = Value> {
    prop_oneof![(0u32..40).prop_map(|r| json!(f64::from(r) / 2.0)), Just(json!("auto"))]
}

fn a_pool() -> impl Strategy<Value = (Value, Value, Value)> {
    (capacity(), capacity(), 0u32..1500, 0u32..50, any::<bool>(), ratio()).prop_map(
        |(total, free, allocated, reserved, thin, mosr)| {
            let extra = json!({
                "allocated_capacity_gb": allocated,
                "reserved_percentage": reserved,
                "thin_provisioning_support": thin,
                "max_over_subscription_ratio": mosr,
            });
            (total, free, extra)
        },
    )
}

fn a_cache(pools: Vec<(Value, Value, Value)>, backends: usize) -> HostStateCache {
    let mut cache = default_scheduler().new_cache();
    let mut per_backend: Vec<Vec<PoolCapabilities>> = vec![Vec::new(); backends.max(1)];
    for (i, (total, free, extra)) in pools.into_iter().enumerate() {
        per_backend[i % backends.max(1)].push(pool(&format!("p{i}"), total, free, extra));
    }
    for (i, pools) in per_backend.into_iter().enumerate() {
        add_backend(&mut cache, &format!("node{i}@b"), "nova", pools);
    }
    cache
}

fn request(size: u64, thick: bool) -> RequestSpec {
    let mut spec = RequestSpec { size_gb: size, ..RequestSpec::default() };
    if thick {
        spec.extra_specs.insert("provisioning:type".into(), "thick".into());
    }
    spec
}

proptest! {
    #[test]
    fn the_fast_capacity_path_agrees_with_the_full_factors(
        total in 0.0f64..1e6,
        free in -10.0f64..1e6,
        provisioned in 0.0f64..1e7,
        thin_support in any::<bool>(),
        mosr in 0.0f64..40.0,
        reserved in 0.0f64..100.0,
        thin in any::<bool>(),
    ) {
        let i = CapacityInputs {
            total, free, provisioned, thin_support, max_over_subscription_ratio: mosr,
            reserved_percentage: reserved, thin,
        };
        let f = calculate_capacity_factors(i);
        prop_assert_eq!(available_and_virtual_free(i), (f.total_available_capacity, f.virtual_free_capacity));
    }

    #[test]
    fn the_chosen_pool_passes_every_filter_and_weighs_most(
        pools in prop::collection::vec(a_pool(), 1..12),
        backends in 1usize..4,
        size in 0u64..500,
        thick in any::<bool>(),
    ) {
        let mut cache = a_cache(pools, backends);
        let before = cache.clone();
        let mut s = default_scheduler();
        let spec = request(size, thick);
        let passing: Vec<String> = before
            .backends()
            .iter()
            .flat_map(|b| b.pools.iter())
            .filter(|p| s.backend_passes_filters(&before, &spec, &p.host, NOW).is_ok())
            .map(|p| p.host.clone())
            .collect();
        match s.schedule(&mut cache, &spec, NOW) {
            Ok(placed) => {
                prop_assert!(passing.contains(&placed.host));
                let weight = |host: &str| capacity_weight(before.pool(host).unwrap(), !thick, 1.0);
                let best = passing.iter().map(|h| weight(h)).fold(f64::NEG_INFINITY, f64::max);
                prop_assert_eq!(weight(&placed.host), best);
            }
            Err(e) => {
                prop_assert!(passing.is_empty(), "{} but {:?} pass", e, passing);
                prop_assert_eq!(e.pools_considered, before.pool_count());
            }
        }
    }

    #[test]
    fn a_thick_placement_never_makes_free_space_negative(
        pools in prop::collection::vec(a_pool(), 1..12),
        sizes in prop::collection::vec(1u64..300, 1..40),
    ) {
        let mut cache = a_cache(pools, 2);
        let mut s = default_scheduler();
        for size in sizes {
            if let Ok(placed) = s.schedule(&mut cache, &request(size, true), NOW) {
                let pool = cache.pool(&placed.host).unwrap();
                // Cinder lets a pool with an infinite or unknown total (and no reserve) pass
                // whatever its free space says, so only pools with a known total count.
                if let (Some(free), Some(_)) = (pool.free_capacity_gb.gb(), pool.total_capacity_gb.gb()) {
                    prop_assert!(free >= 0.0, "{} left with {free}", placed.host);
                }
            }
        }
    }

    #[test]
    fn placements_account_for_every_gib(
        pools in prop::collection::vec(a_pool(), 1..12),
        sizes in prop::collection::vec(0u64..300, 1..40),
    ) {
        let mut cache = a_cache(pools, 3);
        let allocated = |c: &HostStateCache| -> f64 {
            c.backends().iter().flat_map(|b| b.pools.iter()).map(|p| p.allocated_capacity_gb).sum()
        };
        let start = allocated(&cache);
        let mut s = default_scheduler();
        let mut placed = 0u64;
        for size in sizes {
            if s.schedule(&mut cache, &request(size, false), NOW).is_ok() {
                placed += size;
            }
        }
        prop_assert_eq!(allocated(&cache) - start, placed as f64);
    }
}
