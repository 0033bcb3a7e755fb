//! The scheduler's configuration, with Cinder's option names and defaults.

use serde::{Deserialize, Serialize};

use ember_common::capabilities::OverSubscription;

use crate::{Error, Result};

/// A filter, named as in Cinder's `scheduler_default_filters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FilterKind {
    AvailabilityZoneFilter,
    CapacityFilter,
    CapabilitiesFilter,
    /// Skips the pools a request was already tried on (Cinder's `RetryFilter`).
    RetryFilter,
}

impl FilterKind {
    pub fn name(self) -> &'static str {
        match self {
            FilterKind::AvailabilityZoneFilter => "AvailabilityZoneFilter",
            FilterKind::CapacityFilter => "CapacityFilter",
            FilterKind::CapabilitiesFilter => "CapabilitiesFilter",
            FilterKind::RetryFilter => "RetryFilter",
        }
    }
}

/// A weigher, named as in Cinder's `scheduler_default_weighers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WeigherKind {
    CapacityWeigher,
    AllocatedCapacityWeigher,
    ChanceWeigher,
}

/// Options of the filter scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerOptions {
    /// Filters run on every request, in order (`scheduler_default_filters`). Cinder's default
    /// is the first three; Ember adds `RetryFilter` so that a rescheduled volume does not go
    /// back to the pool that just failed it.
    pub scheduler_default_filters: Vec<FilterKind>,
    /// Weighers whose normalised weights are summed (`scheduler_default_weighers`).
    pub scheduler_default_weighers: Vec<WeigherKind>,
    /// CapacityWeigher multiplier; negative stacks volumes instead of spreading them.
    pub capacity_weight_multiplier: f64,
    /// AllocatedCapacityWeigher multiplier; negative prefers the least allocated pool.
    pub allocated_capacity_weight_multiplier: f64,
    /// ChanceWeigher multiplier (Cinder's `BaseWeigher` default).
    pub chance_weight_multiplier: f64,
    /// Attempts to place one volume before giving up (at least 1; 1 disables retries).
    pub scheduler_max_attempts: u32,
    /// Used for pools that report no ratio of their own; a number or `auto`.
    pub max_over_subscription_ratio: OverSubscription,
    /// A service whose last heartbeat is older than this (seconds) is down.
    pub service_down_time: u64,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            scheduler_default_filters: vec![
                FilterKind::AvailabilityZoneFilter,
                FilterKind::CapacityFilter,
                FilterKind::CapabilitiesFilter,
                FilterKind::RetryFilter,
            ],
            scheduler_default_weighers: vec![WeigherKind::CapacityWeigher],
            capacity_weight_multiplier: 1.0,
            allocated_capacity_weight_multiplier: -1.0,
            chance_weight_multiplier: 1.0,
            scheduler_max_attempts: 3,
            max_over_subscription_ratio: OverSubscription::Ratio(20.0),
            service_down_time: 60,
        }
    }
}

impl SchedulerOptions {
    /// Rejects values Cinder's option definitions would reject.
    pub fn validate(&self) -> Result<()> {
        if self.scheduler_max_attempts < 1 {
            return Err(Error::InvalidOptions("scheduler_max_attempts must be at least 1".into()));
        }
        if let OverSubscription::Ratio(r) = self.max_over_subscription_ratio
            && !(r.is_finite() && r >= 0.0)
        {
            return Err(Error::InvalidOptions(format!("max_over_subscription_ratio {r} is not a ratio")));
        }
        let multipliers = [
            self.capacity_weight_multiplier,
            self.allocated_capacity_weight_multiplier,
            self.chance_weight_multiplier,
        ];
        if multipliers.iter().any(|m| !m.is_finite()) {
            return Err(Error::InvalidOptions("weight multipliers must be finite numbers".into()));
        }
        Ok(())
    }

    /// The service-down time in milliseconds, saturating on absurd values.
    pub(crate) fn service_down_ms(&self) -> i64 {
        i64::try_from(self.service_down_time.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_cinders_and_parse_from_names() {
        let o: SchedulerOptions = serde_json::from_value(serde_json::json!({
            "scheduler_default_weighers": ["AllocatedCapacityWeigher", "ChanceWeigher"],
            "max_over_subscription_ratio": "auto"
        }))
        .unwrap();
        assert_eq!(o.scheduler_max_attempts, 3);
        assert_eq!(o.capacity_weight_multiplier, 1.0);
        assert_eq!(o.allocated_capacity_weight_multiplier, -1.0);
        assert_eq!(o.scheduler_default_weighers.len(), 2);
        assert!(o.validate().is_ok());
        let bad = SchedulerOptions { scheduler_max_attempts: 0, ..SchedulerOptions::default() };
        assert!(bad.validate().is_err());
    }
}
