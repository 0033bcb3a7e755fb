//! What a volume backend reports of itself and its pools, as Cinder's `get_volume_stats`.
//!
//! Volume services send these to the schedulers; drivers produce them; the filter
//! scheduler reads them. Field names are Cinder's, so reports look like Cinder's.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A capacity in GiB, or Cinder's `"infinite"` / `"unknown"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Capacity {
    Gb(f64),
    Keyword(CapacityKeyword),
}

/// The two words Cinder allows in place of a number of GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapacityKeyword {
    Infinite,
    Unknown,
}

impl Capacity {
    /// The number of GiB, if this is one.
    pub fn gb(self) -> Option<f64> {
        match self {
            Capacity::Gb(v) => Some(v),
            Capacity::Keyword(_) => None,
        }
    }
}

/// `max_over_subscription_ratio`: a number, or `"auto"` (derived from the pool's use).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OverSubscription {
    Ratio(f64),
    Auto(AutoKeyword),
}

/// The word `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoKeyword {
    Auto,
}

impl Default for OverSubscription {
    fn default() -> Self {
        OverSubscription::Ratio(20.0)
    }
}

/// One pool of a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolCapabilities {
    pub pool_name: String,
    pub total_capacity_gb: Capacity,
    pub free_capacity_gb: Capacity,
    /// GiB allocated to volumes by this Cinder (Ember) on the pool.
    #[serde(default)]
    pub allocated_capacity_gb: f64,
    /// GiB promised to volumes, thin or thick; defaults to `allocated_capacity_gb`.
    #[serde(default)]
    pub provisioned_capacity_gb: Option<f64>,
    /// The pool's own ratio; absent means "not reported", so the scheduler's configured
    /// `max_over_subscription_ratio` applies (Python's `reported or global`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_over_subscription_ratio: Option<OverSubscription>,
    #[serde(default)]
    pub reserved_percentage: f64,
    #[serde(default)]
    pub thin_provisioning_support: bool,
    /// `None` when the pool does not report it: the CapabilitiesFilter then fails any extra
    /// spec on it, as Cinder's does for a missing capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thick_provisioning_support: Option<bool>,
    /// `None` when the pool does not report it (see `thick_provisioning_support`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiattach: Option<bool>,
    /// Any other capability, matched by the CapabilitiesFilter against extra specs.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What one backend (`host@backend`) reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendCapabilities {
    pub volume_backend_name: String,
    #[serde(default)]
    pub vendor_name: String,
    #[serde(default)]
    pub driver_version: String,
    #[serde(default)]
    pub storage_protocol: String,
    pub pools: Vec<PoolCapabilities>,
    /// Any other backend-wide capability.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The RPC method volume services fanout-cast to every scheduler with a [`CapabilityReport`]
/// (Cinder's `update_service_capabilities`).
pub const UPDATE_SERVICE_CAPABILITIES: &str = "update_service_capabilities";

/// The RPC method schedulers fanout-cast to every volume service to ask for an immediate
/// report (Cinder's `publish_service_capabilities`); it takes no arguments.
pub const PUBLISH_SERVICE_CAPABILITIES: &str = "publish_service_capabilities";

/// The arguments of [`UPDATE_SERVICE_CAPABILITIES`]: one backend's report and when it was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityReport {
    /// `volume` (or `backup`), as Cinder's `service_name`.
    pub service_name: String,
    /// `host@backend` for volume services.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    pub capabilities: BackendCapabilities,
    /// When the driver was asked for its stats, in milliseconds since the Unix epoch; a
    /// scheduler ignores a report older than the one it holds.
    pub timestamp_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_cinder_style_report() {
        let report: BackendCapabilities = serde_json::from_value(serde_json::json!({
            "volume_backend_name": "file-1",
            "vendor_name": "Ember",
            "driver_version": "1.0",
            "storage_protocol": "nbd",
            "pools": [{
                "pool_name": "_pool0",
                "total_capacity_gb": "infinite",
                "free_capacity_gb": 100.5,
                "max_over_subscription_ratio": "auto",
                "thin_provisioning_support": true,
                "compression": "<is> True"
            }]
        }))
        .unwrap();
        let pool = &report.pools[0];
        assert_eq!(pool.total_capacity_gb, Capacity::Keyword(CapacityKeyword::Infinite));
        assert_eq!(pool.free_capacity_gb.gb(), Some(100.5));
        assert_eq!(pool.max_over_subscription_ratio, Some(OverSubscription::Auto(AutoKeyword::Auto)));
        assert_eq!(pool.thick_provisioning_support, None, "not reported");
        assert_eq!(pool.multiattach, None, "not reported");
        assert_eq!(pool.extra["compression"], "<is> True");
    }

    #[test]
    fn unreported_fields_stay_absent_on_the_wire() {
        let pool: PoolCapabilities = serde_json::from_value(serde_json::json!({
            "pool_name": "p", "total_capacity_gb": 10, "free_capacity_gb": 5
        }))
        .unwrap();
        assert_eq!(pool.max_over_subscription_ratio, None);
        let wire = serde_json::to_value(&pool).unwrap();
        for key in ["max_over_subscription_ratio", "thick_provisioning_support", "multiattach"] {
            assert!(wire.get(key).is_none(), "{key} in {wire}");
        }
        let back: PoolCapabilities = serde_json::from_value(wire).unwrap();
        assert_eq!(back, pool);
    }
}
