//! The digest's capacity formulas and the CapacityFilter, as tables of cases.

mod common;

use common::{NOW, add_backend, default_scheduler, pool};
use ember_scheduler::RequestSpec;
use ember_scheduler::capacity::{CapacityInputs, calculate_capacity_factors};
use serde_json::{Value, json};

#[test]
fn capacity_factors_match_the_digest() {
    // (total, free, provisioned, thin_support, mosr, reserved %, thin) →
    // (reserved, total_available, virtual_free, free_percent, provisioned_ratio)
    #[rustfmt::skip]
    let cases = [
        ((100.0, 80.0, 50.0, true, 20.0, 10.0, true), (10.0, 1800.0, 1750.0, 97.22, 0.03)),
        ((100.0, 80.0, 50.0, true, 20.0, 10.0, false), (10.0, 90.0, 40.0, 44.44, 0.56)),
        // A pool without thin support is thick whatever the volume asks.
        ((100.0, 80.0, 50.0, false, 20.0, 10.0, true), (10.0, 90.0, 40.0, 44.44, 0.56)),
        // The reserve is floored: 15 % of 99 is 14.85, so 14.
        ((99.0, 99.0, 0.0, false, 1.0, 15.0, false), (14.0, 85.0, 85.0, 100.0, 0.0)),
        // Reported free below the calculated free wins for thick.
        ((100.0, 10.0, 0.0, false, 1.0, 0.0, false), (0.0, 100.0, 10.0, 10.0, 0.0)),
        // A zero denominator gives zero ratios rather than a division.
        ((0.0, 0.0, 0.0, true, 20.0, 0.0, true), (0.0, 0.0, 0.0, 0.0, 0.0)),
        // Over-provisioned thin pool: virtual free goes negative.
        ((10.0, 5.0, 300.0, true, 20.0, 0.0, true), (0.0, 200.0, -100.0, -50.0, 1.5)),
    ];
    for ((total, free, provisioned, thin_support, mosr, reserved, thin), want) in cases {
        let f = calculate_capacity_factors(CapacityInputs {
            total,
            free,
            provisioned,
            thin_support,
            max_over_subscription_ratio: mosr,
            reserved_percentage: reserved,
            thin,
        });
        let got = (
            f.reserved_capacity,
            f.total_available_capacity,
            f.virtual_free_capacity,
            f.free_percent,
            f.provisioned_ratio,
        );
        assert_eq!(got, want, "total {total} free {free} provisioned {provisioned} thin {thin}");
    }
}

struct Case {
    name: &'static str,
    total: Value,
    free: Value,
    pool: Value,
    size: u64,
    thick_type: bool,
    passes: bool,
}

fn case(name: &'static str, total: Value, free: Value, pool: Value, size: u64, passes: bool) -> Case {
    Case { name, total, free, pool, size, thick_type: false, passes }
}

fn thick_type(mut c: Case) -> Case {
    c.thick_type = true;
    c
}

#[test]
fn capacity_filter_cases() {
    let thin = |mosr: Value, extra: Value| {
        let mut v = json!({ "thin_provisioning_support": true, "max_over_subscription_ratio": mosr });
        v.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        v
    };
    let cases = [
        case("thick pool with exactly enough", json!(100), json!(50), json!({}), 50, true),
        case("thick pool one GiB short", json!(100), json!(50), json!({}), 51, false),
        // Reserved space comes off the total: min(95, 100 - 10) = 90.
        case(
            "reserve limits a thick pool",
            json!(100),
            json!(95),
            json!({"reserved_percentage": 10}),
            90,
            true,
        ),
        case(
            "reserve rejects a thick pool",
            json!(100),
            json!(95),
            json!({"reserved_percentage": 10}),
            91,
            false,
        ),
        // The digest's example: min(80, 90 - 50) = 40.
        case(
            "provisioned space counts for thick",
            json!(100),
            json!(80),
            json!({"allocated_capacity_gb": 50, "reserved_percentage": 10}),
            40,
            true,
        ),
        case(
            "provisioned space rejects for thick",
            json!(100),
            json!(80),
            json!({"allocated_capacity_gb": 50, "reserved_percentage": 10}),
            41,
            false,
        ),
        // Thin: 90 × 20 − 50 = 1750.
        case(
            "thin pool over-subscribes",
            json!(100),
            json!(80),
            thin(json!(20), json!({"provisioned_capacity_gb": 50, "reserved_percentage": 10})),
            1750,
            true,
        ),
        case(
            "thin pool past its over-subscription",
            json!(100),
            json!(80),
            thin(json!(20), json!({"provisioned_capacity_gb": 50, "reserved_percentage": 10})),
            1751,
            false,
        ),
        thick_type(case(
            "a thick type on a thin pool uses free space",
            json!(100),
            json!(80),
            thin(json!(20), json!({"provisioned_capacity_gb": 50, "reserved_percentage": 10})),
            41,
            false,
        )),
        thick_type(case(
            "a thick type on a thin pool fits in free space",
            json!(100),
            json!(80),
            thin(json!(20), json!({"provisioned_capacity_gb": 50, "reserved_percentage": 10})),
            40,
            true,
        )),
        case("a ratio below 1 rejects thin", json!(100), json!(100), thin(json!(0.5), json!({})), 1, false),
        thick_type(case(
            "a ratio below 1 allows thick",
            json!(100),
            json!(100),
            thin(json!(0.5), json!({})),
            1,
            true,
        )),
        case(
            "ratio 1 is plain thin",
            json!(100),
            json!(100),
            thin(json!(1), json!({"provisioned_capacity_gb": 90})),
            10,
            true,
        ),
        case(
            "ratio 1 rejects past total",
            json!(100),
            json!(100),
            thin(json!(1), json!({"provisioned_capacity_gb": 90})),
            11,
            false,
        ),
        // auto: 1 + 82 / ((100 − 60) + 1) = 3, so 300 − 82 = 218.
        case(
            "auto ratio from use",
            json!(100),
            json!(60),
            thin(json!("auto"), json!({"provisioned_capacity_gb": 82})),
            218,
            true,
        ),
        case(
            "auto ratio from use, short",
            json!(100),
            json!(60),
            thin(json!("auto"), json!({"provisioned_capacity_gb": 82})),
            219,
            false,
        ),
        // auto with nothing provisioned: 20.
        case("auto ratio starts at 20", json!(10), json!(10), thin(json!("auto"), json!({})), 200, true),
        case(
            "auto ratio starts at 20, short",
            json!(10),
            json!(10),
            thin(json!("auto"), json!({})),
            201,
            false,
        ),
        case("infinite free passes", json!(100), json!("infinite"), json!({}), 100_000, true),
        case("unknown free passes", json!(100), json!("unknown"), json!({}), 100_000, true),
        case("infinite total without reserve passes", json!("infinite"), json!(1), json!({}), 100_000, true),
        case(
            "unknown total with a reserve fails",
            json!("unknown"),
            json!(1),
            json!({"reserved_percentage": 5}),
            1,
            false,
        ),
        case("zero total fails", json!(0), json!(0), json!({}), 1, false),
        case("a manage request (size 0) passes anything", json!(0), json!(0), json!({}), 0, true),
    ];
    for c in cases {
        let mut s = default_scheduler();
        let mut cache = s.new_cache();
        add_backend(&mut cache, "node1@lvm", "nova", vec![pool("p", c.total, c.free, c.pool)]);
        let mut spec = RequestSpec { size_gb: c.size, ..RequestSpec::default() };
        if c.thick_type {
            spec.extra_specs.insert("provisioning:type".into(), "thick".into());
        }
        let got = s.schedule(&mut cache, &spec, NOW);
        assert_eq!(got.is_ok(), c.passes, "{}: {got:?}", c.name);
        if let Err(e) = got {
            assert!(e.reason.contains("CapacityFilter: 1 rejected"), "{}: {e}", c.name);
        }
    }
}
