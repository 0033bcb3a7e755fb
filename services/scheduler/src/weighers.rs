//! The weighers and Cinder's normalisation (`base_weight.py`, `weights/capacity.py`,
//! `weights/chance.py`): raw weights are min-max normalised per weigher, multiplied by the
//! weigher's multiplier and summed.

use ember_common::capabilities::Capacity;

use crate::capacity::{CapacityInputs, available_and_virtual_free};
use crate::state::PoolState;

/// Added above the largest finite capacity weight when some weights are infinite and all the
/// finite ones are equal (Cinder's `OFFSET_MIN`).
pub const OFFSET_MIN: f64 = 10_000.0;
/// Infinite capacity weights become `max + OFFSET_MULT × (max − min)` (Cinder's `OFFSET_MULT`).
pub const OFFSET_MULT: f64 = 100.0;

/// CapacityWeigher's raw weight: the pool's virtual free capacity. A pool that cannot report
/// its capacity gets −1 when spreading (multiplier > 0) and +∞ when stacking, so that once
/// multiplied it sorts last either way.
pub fn capacity_weight(pool: &PoolState, thin: bool, multiplier: f64) -> f64 {
    let (Capacity::Gb(total), Capacity::Gb(free)) = (pool.total_capacity_gb, pool.free_capacity_gb) else {
        return if multiplier > 0.0 { -1.0 } else { f64::INFINITY };
    };
    available_and_virtual_free(CapacityInputs {
        total,
        free,
        provisioned: pool.provisioned_capacity_gb,
        thin_support: pool.thin_provisioning_support,
        max_over_subscription_ratio: pool.max_over_subscription_ratio,
        reserved_percentage: pool.reserved_percentage,
        thin,
    })
    .1
}

/// AllocatedCapacityWeigher's raw weight.
pub fn allocated_weight(pool: &PoolState) -> f64 {
    pool.allocated_capacity_gb
}

/// The bounds Cinder normalises with. For the CapacityWeigher, infinite weights are first
/// replaced in `raw` by a value just above the finite ones (`CapacityWeigher.weigh_objects`).
pub fn bounds(raw: &mut [f64], replace_infinite: bool) -> (f64, f64) {
    let (min, mut max) = min_max(raw.iter().copied());
    if replace_infinite && max.is_infinite() {
        let (_, finite_max) = min_max(raw.iter().copied().filter(|w| !w.is_infinite()));
        if finite_max.is_finite() {
            let offset = (finite_max - min) * OFFSET_MULT;
            max = finite_max + if offset == 0.0 { OFFSET_MIN } else { offset };
            for w in raw.iter_mut().filter(|w| w.is_infinite()) {
                *w = max;
            }
        }
    }
    (min, max)
}

fn min_max(it: impl Iterator<Item = f64>) -> (f64, f64) {
    it.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), w| (lo.min(w), hi.max(w)))
}

/// Cinder's `normalize`, applied in place then scaled into the running totals.
pub fn add_normalised(raw: &[f64], (min, max): (f64, f64), multiplier: f64, totals: &mut [f64]) {
    // All equal (including all infinite): every weight normalises to 0.
    if min == max {
        return;
    }
    let range = max - min;
    for (t, w) in totals.iter_mut().zip(raw) {
        *t += multiplier * ((w - min) / range);
    }
}

/// The index of the highest total; the first one wins a tie, as after Python's stable sort.
pub fn best(totals: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &w) in totals.iter().enumerate() {
        if best.is_none_or(|(_, b)| w > b) {
            best = Some((i, w));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_is_min_max_and_all_equal_is_zero() {
        let mut totals = vec![0.0; 3];
        let mut raw = vec![10.0, 20.0, 30.0];
        let b = bounds(&mut raw, false);
        add_normalised(&raw, b, 2.0, &mut totals);
        assert_eq!(totals, [0.0, 1.0, 2.0]);
        let mut same = vec![5.0, 5.0, 5.0];
        let b = bounds(&mut same, false);
        add_normalised(&same, b, 1.0, &mut totals);
        assert_eq!(totals, [0.0, 1.0, 2.0]);
    }

    #[test]
    fn infinite_weights_sit_just_above_the_finite_ones() {
        let mut raw = vec![10.0, f64::INFINITY, 30.0];
        assert_eq!(bounds(&mut raw, true), (10.0, 30.0 + 100.0 * 20.0));
        assert_eq!(raw[1], 2030.0);
        let mut raw = vec![7.0, f64::INFINITY];
        assert_eq!(bounds(&mut raw, true), (7.0, 10_007.0));
        let mut all_inf = vec![f64::INFINITY, f64::INFINITY];
        let b = bounds(&mut all_inf, true);
        let mut totals = vec![0.0; 2];
        add_normalised(&all_inf, b, 1.0, &mut totals);
        assert_eq!(totals, [0.0, 0.0]);
    }

    #[test]
    fn ties_go_to_the_first() {
        assert_eq!(best(&[1.0, 3.0, 3.0, 2.0]), Some(1));
        assert_eq!(best(&[]), None);
    }
}
