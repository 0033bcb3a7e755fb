//! Cinder's capacity formulas (`sched_utils.calculate_capacity_factors` and
//! `calculate_max_over_subscription_ratio`), shared by the CapacityFilter and the CapacityWeigher.

use ember_common::capabilities::{Capacity, OverSubscription};

/// The ratio Cinder uses for `auto` while a pool has nothing provisioned yet (`INITIAL_AUTO_MOSR`).
pub const INITIAL_AUTO_MOSR: f64 = 20.0;

/// What Cinder derives from a pool's report to decide whether a volume fits.
///
/// The fields Cinder rounds to two decimals in its returned dict are rounded here too, so a
/// comparison against `virtual_free_capacity` gives the same answer as Cinder's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityFactors {
    pub total_capacity: f64,
    pub free_capacity: f64,
    pub reserved_capacity: f64,
    pub total_reserved_available_capacity: f64,
    pub total_available_capacity: f64,
    pub provisioned_capacity: f64,
    pub calculated_free_capacity: f64,
    pub virtual_free_capacity: f64,
    pub free_percent: f64,
    pub provisioned_ratio: f64,
    /// True when thin provisioning was asked for and the pool supports it.
    pub thin: bool,
}

/// The inputs of [`calculate_capacity_factors`], named as in Cinder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityInputs {
    pub total: f64,
    pub free: f64,
    pub provisioned: f64,
    pub thin_support: bool,
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: f64,
    /// Whether the volume asks for thin provisioning (`provisioning:type` is not `thick`).
    pub thin: bool,
}

/// Cinder's `calculate_capacity_factors`.
pub fn calculate_capacity_factors(i: CapacityInputs) -> CapacityFactors {
    let reserved_capacity = (i.total * i.reserved_percentage / 100.0).floor();
    let total_reserved_available = i.total - reserved_capacity;
    let thin = i.thin && i.thin_support;
    let (total_available, virtual_free, calculated_free) = if thin {
        let total_available = total_reserved_available * i.max_over_subscription_ratio;
        let calculated = total_available - i.provisioned;
        (total_available, calculated, calculated)
    } else {
        let calculated = total_reserved_available - i.provisioned;
        (total_reserved_available, i.free.min(calculated), calculated)
    };
    // Python treats a zero denominator as "no ratio" rather than dividing.
    let (provisioned_ratio, free_percent) = if total_available != 0.0 {
        (i.provisioned / total_available, virtual_free / total_available * 100.0)
    } else {
        (0.0, 0.0)
    };
    CapacityFactors {
        total_capacity: i.total,
        free_capacity: i.free,
        reserved_capacity,
        total_reserved_available_capacity: round2(total_reserved_available),
        total_available_capacity: round2(total_available),
        provisioned_capacity: i.provisioned,
        calculated_free_capacity: round2(calculated_free),
        virtual_free_capacity: round2(virtual_free),
        free_percent: round2(free_percent),
        provisioned_ratio: round2(provisioned_ratio),
        thin,
    }
}

/// The two factors the filter and the weigher read, `(total_available_capacity,
/// virtual_free_capacity)`, computed (and rounded) exactly as in [`calculate_capacity_factors`]
/// without the rest: this runs for every pool on every request.
pub fn available_and_virtual_free(i: CapacityInputs) -> (f64, f64) {
    let reserved_capacity = (i.total * i.reserved_percentage / 100.0).floor();
    let total_reserved_available = i.total - reserved_capacity;
    if i.thin && i.thin_support {
        let total_available = total_reserved_available * i.max_over_subscription_ratio;
        (round2(total_available), round2(total_available - i.provisioned))
    } else {
        let calculated = total_reserved_available - i.provisioned;
        (round2(total_reserved_available), round2(i.free.min(calculated)))
    }
}

/// Rounds to two decimals, as Python's `round(x, 2)` does for all but exact binary ties.
pub fn round2(x: f64) -> f64 {
    let scaled = (x * 100.0).round() / 100.0;
    // Values so large that scaling overflows are already integral.
    if scaled.is_finite() { scaled } else { x }
}

/// Cinder's `calculate_max_over_subscription_ratio` for one pool report.
///
/// `reported` is the pool's own value, `global` the configured default; `provisioned` is the
/// report's `provisioned_capacity_gb` (or `allocated_capacity_gb` when it has none).
pub fn max_over_subscription_ratio(
    thin_support: bool,
    total: Capacity,
    free: Capacity,
    provisioned: f64,
    reported: Option<OverSubscription>,
    global: OverSubscription,
) -> f64 {
    if !thin_support {
        return 1.0;
    }
    let (Some(total), Some(free)) = (total.gb(), free.gb()) else {
        return 1.0;
    };
    // Python's `reported or global` also falls back when the pool reports 0.
    let chosen = match reported {
        Some(OverSubscription::Ratio(0.0)) => global,
        Some(r) => r,
        None => global,
    };
    match chosen {
        OverSubscription::Ratio(r) => r,
        OverSubscription::Auto(_) if provisioned != 0.0 => 1.0 + provisioned / ((total - free) + 1.0),
        OverSubscription::Auto(_) => INITIAL_AUTO_MOSR,
    }
}

#[cfg(test)]
mod tests {
    use ember_common::capabilities::{AutoKeyword, CapacityKeyword};

    use super::*;

    fn inputs(
        total: f64,
        free: f64,
        provisioned: f64,
        mosr: f64,
        reserved: f64,
        thin: bool,
    ) -> CapacityInputs {
        CapacityInputs {
            total,
            free,
            provisioned,
            thin_support: true,
            max_over_subscription_ratio: mosr,
            reserved_percentage: reserved,
            thin,
        }
    }

    #[test]
    fn the_digest_example_holds() {
        // total 100, free 80, provisioned 50, reserved 10 %.
        let thin = calculate_capacity_factors(inputs(100.0, 80.0, 50.0, 20.0, 10.0, true));
        assert_eq!(thin.virtual_free_capacity, 1750.0);
        assert_eq!(thin.total_available_capacity, 1800.0);
        assert_eq!(
            available_and_virtual_free(inputs(100.0, 80.0, 50.0, 20.0, 10.0, true)),
            (thin.total_available_capacity, thin.virtual_free_capacity)
        );
        let thick = calculate_capacity_factors(inputs(100.0, 80.0, 50.0, 20.0, 10.0, false));
        assert_eq!(thick.virtual_free_capacity, 40.0);
        assert_eq!(thick.total_available_capacity, 90.0);
        assert_eq!(thick.reserved_capacity, 10.0);
    }

    #[test]
    fn auto_ratio_follows_use() {
        let auto = Some(OverSubscription::Auto(AutoKeyword::Auto));
        let g = OverSubscription::Ratio(20.0);
        let t = Capacity::Gb(100.0);
        // used = 100 - 60 = 40; 1 + 82 / 41 = 3.
        assert_eq!(max_over_subscription_ratio(true, t, Capacity::Gb(60.0), 82.0, auto, g), 3.0);
        assert_eq!(max_over_subscription_ratio(true, t, Capacity::Gb(60.0), 0.0, auto, g), 20.0);
        assert_eq!(max_over_subscription_ratio(false, t, Capacity::Gb(60.0), 5.0, auto, g), 1.0);
        let inf = Capacity::Keyword(CapacityKeyword::Infinite);
        assert_eq!(max_over_subscription_ratio(true, inf, Capacity::Gb(60.0), 5.0, auto, g), 1.0);
        assert_eq!(max_over_subscription_ratio(true, t, t, 0.0, None, OverSubscription::Ratio(7.5)), 7.5);
    }
}
