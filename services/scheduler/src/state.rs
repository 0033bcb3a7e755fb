//! The scheduler's view of the volume backends: one `BackendState` per `host@backend` with a
//! `PoolState` per pool, fed by capability reports and by the scheduler's own placements
//! (Cinder's `HostManager`, `BackendState` and `PoolState`).

use std::collections::HashMap;

use ember_common::capabilities::{BackendCapabilities, Capacity, OverSubscription, PoolCapabilities};

use crate::capacity::max_over_subscription_ratio;
use crate::extras::{Extras, Interner};

/// What the services table says of a backend's volume service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStatus {
    /// The service's availability zone (Cinder's `storage_availability_zone`).
    pub availability_zone: String,
    /// The service's last heartbeat, in milliseconds since the Unix epoch.
    pub heartbeat_at_ms: i64,
    pub disabled: bool,
    pub frozen: bool,
}

impl ServiceStatus {
    /// An enabled service that heartbeat at `heartbeat_at_ms`.
    pub fn up(availability_zone: impl Into<String>, heartbeat_at_ms: i64) -> Self {
        Self { availability_zone: availability_zone.into(), heartbeat_at_ms, disabled: false, frozen: false }
    }

    /// Cinder's `service_is_up` (the heartbeat is within `service_down_time` of now) and the
    /// service is neither disabled nor frozen.
    pub fn schedulable(&self, now_ms: i64, service_down_ms: i64) -> bool {
        let elapsed = now_ms.saturating_sub(self.heartbeat_at_ms).saturating_abs();
        !self.disabled && !self.frozen && elapsed <= service_down_ms
    }
}

/// One pool as the scheduler sees it: the report as received (read by the CapabilitiesFilter)
/// and the capacities, which the scheduler's own placements change until the next report.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolState {
    /// `host@backend#pool`.
    pub host: String,
    /// The pool's report as received; placements never change it. Boxed so that the fields
    /// the filters read for every pool sit close together.
    pub capabilities: Box<PoolCapabilities>,
    pub total_capacity_gb: Capacity,
    pub free_capacity_gb: Capacity,
    pub allocated_capacity_gb: f64,
    pub provisioned_capacity_gb: f64,
    /// The ratio in force for this pool, computed when the report arrived (as Cinder does).
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: f64,
    pub thin_provisioning_support: bool,
    /// The report's timestamp, or the time of the last placement on this pool.
    pub updated_ms: i64,
    /// `capabilities.extra` in the form the CapabilitiesFilter reads.
    pub extras: Extras,
}

impl PoolState {
    fn from_report(
        backend: &str,
        caps: PoolCapabilities,
        timestamp_ms: i64,
        global: OverSubscription,
        interner: &mut Interner,
    ) -> Self {
        let provisioned = caps.provisioned_capacity_gb.unwrap_or(caps.allocated_capacity_gb);
        let mosr = max_over_subscription_ratio(
            caps.thin_provisioning_support,
            caps.total_capacity_gb,
            caps.free_capacity_gb,
            provisioned,
            caps.max_over_subscription_ratio,
            global,
        );
        Self {
            host: format!("{backend}#{}", caps.pool_name),
            total_capacity_gb: caps.total_capacity_gb,
            free_capacity_gb: caps.free_capacity_gb,
            allocated_capacity_gb: caps.allocated_capacity_gb,
            provisioned_capacity_gb: provisioned,
            max_over_subscription_ratio: mosr,
            updated_ms: timestamp_ms,
            reserved_percentage: caps.reserved_percentage,
            thin_provisioning_support: caps.thin_provisioning_support,
            extras: Extras::from_map(&caps.extra, interner),
            capabilities: Box::new(caps),
        }
    }

    /// The pool's name, the part after `#`.
    pub fn pool_name(&self) -> &str {
        &self.capabilities.pool_name
    }

    /// Cinder's `consume_from_volume`: a placement takes `size` GiB until the next report.
    /// A negative size gives it back (Cinder's `revert_volume_consumed_capacity`).
    pub fn consume(&mut self, size_gb: f64, now_ms: Option<i64>) {
        self.allocated_capacity_gb += size_gb;
        self.provisioned_capacity_gb += size_gb;
        if let Capacity::Gb(free) = &mut self.free_capacity_gb {
            *free -= size_gb;
        }
        if let Some(now) = now_ms {
            self.updated_ms = now;
        }
    }
}

/// One `host@backend`: its service, its backend-wide capabilities and its pools.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendState {
    /// `host@backend`.
    pub name: String,
    pub service: Option<ServiceStatus>,
    /// The last report without its pools (they live in `pools`); `None` before any report.
    pub capabilities: Option<BackendCapabilities>,
    pub reported_at_ms: Option<i64>,
    pub pools: Vec<PoolState>,
    /// The backend-wide `capabilities.extra` in the form the CapabilitiesFilter reads.
    pub extras: Extras,
}

impl BackendState {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            service: None,
            capabilities: None,
            reported_at_ms: None,
            pools: Vec::new(),
            extras: Extras::default(),
        }
    }

    /// Whether the backend may take volumes now: its service is known, up, enabled and not
    /// frozen, and it has reported its capabilities.
    pub fn schedulable(&self, now_ms: i64, service_down_ms: i64) -> bool {
        self.capabilities.is_some()
            && self.service.as_ref().is_some_and(|s| s.schedulable(now_ms, service_down_ms))
    }

    /// The service's availability zone, if the service is known.
    pub fn availability_zone(&self) -> Option<&str> {
        self.service.as_ref().map(|s| s.availability_zone.as_str())
    }
}

/// Every backend the scheduler knows, in the order it first heard of them (which is the
/// order ties are broken in, as in Cinder's insertion-ordered maps).
#[derive(Debug, Clone)]
pub struct HostStateCache {
    backends: Vec<BackendState>,
    index: HashMap<String, usize>,
    global_mosr: OverSubscription,
    interner: Interner,
}

impl HostStateCache {
    /// An empty cache; `global_mosr` applies to pools that report no ratio of their own.
    pub fn new(global_mosr: OverSubscription) -> Self {
        Self { backends: Vec::new(), index: HashMap::new(), global_mosr, interner: Interner::default() }
    }

    pub fn backends(&self) -> &[BackendState] {
        &self.backends
    }

    pub(crate) fn backends_mut(&mut self) -> &mut [BackendState] {
        &mut self.backends
    }

    /// The ids of the free-form capability names reports have used.
    pub fn interner(&self) -> &Interner {
        &self.interner
    }

    /// The number of pools over every backend.
    pub fn pool_count(&self) -> usize {
        self.backends.iter().map(|b| b.pools.len()).sum()
    }

    fn entry_index(&mut self, backend: &str) -> usize {
        match self.index.get(backend) {
            Some(&i) => i,
            None => {
                self.backends.push(BackendState::new(backend));
                self.index.insert(backend.to_owned(), self.backends.len() - 1);
                self.backends.len() - 1
            }
        }
    }

    fn entry(&mut self, backend: &str) -> &mut BackendState {
        let i = self.entry_index(backend);
        &mut self.backends[i]
    }

    /// Records what the services table says of a backend's service.
    pub fn update_service(&mut self, backend: &str, status: ServiceStatus) {
        self.entry(backend).service = Some(status);
    }

    /// Applies a capability report taken at `timestamp_ms` (Cinder's
    /// `update_service_capabilities` then `update_from_volume_capability`).
    ///
    /// A report older than the backend's last one is ignored (returns false). Otherwise it
    /// replaces the backend's pools: pools missing from it are dropped, new ones are added,
    /// and a pool keeps its state when a placement touched it after the report was taken.
    pub fn update_capabilities(
        &mut self,
        backend: &str,
        timestamp_ms: i64,
        mut caps: BackendCapabilities,
    ) -> bool {
        let global = self.global_mosr;
        let i = self.entry_index(backend);
        let (state, interner) = (&mut self.backends[i], &mut self.interner);
        if state.reported_at_ms.is_some_and(|t| t > timestamp_ms) {
            return false;
        }
        let reported = std::mem::take(&mut caps.pools);
        let mut old: HashMap<String, PoolState> =
            state.pools.drain(..).map(|p| (p.capabilities.pool_name.clone(), p)).collect();
        for pool in reported {
            match old.remove(&pool.pool_name) {
                Some(kept) if kept.updated_ms > timestamp_ms => state.pools.push(kept),
                _ => state.pools.push(PoolState::from_report(backend, pool, timestamp_ms, global, interner)),
            }
        }
        state.extras = Extras::from_map(&caps.extra, interner);
        state.capabilities = Some(caps);
        state.reported_at_ms = Some(timestamp_ms);
        true
    }

    /// Forgets a backend (its service was removed).
    pub fn remove_backend(&mut self, backend: &str) -> bool {
        let Some(i) = self.index.remove(backend) else {
            return false;
        };
        // `remove`, not `swap_remove`: the order breaks ties and must stay stable.
        self.backends.remove(i);
        for v in self.index.values_mut() {
            if *v > i {
                *v -= 1;
            }
        }
        true
    }

    /// The pool named by `host@backend#pool`.
    pub fn pool(&self, host: &str) -> Option<&PoolState> {
        let (backend, _) = host.split_once('#')?;
        let b = &self.backends[*self.index.get(backend)?];
        b.pools.iter().find(|p| p.host == host)
    }

    fn pool_mut(&mut self, host: &str) -> Option<&mut PoolState> {
        let (backend, _) = host.split_once('#')?;
        let i = *self.index.get(backend)?;
        self.backends[i].pools.iter_mut().find(|p| p.host == host)
    }

    /// Takes `size_gb` from a pool as a placement does; false if the pool is unknown.
    pub fn consume(&mut self, host: &str, size_gb: f64, now_ms: i64) -> bool {
        self.pool_mut(host).map(|p| p.consume(size_gb, Some(now_ms))).is_some()
    }

    /// Gives back what a failed placement took (Cinder's `revert_volume_consumed_capacity`).
    pub fn release(&mut self, host: &str, size_gb: f64) -> bool {
        self.pool_mut(host).map(|p| p.consume(-size_gb, None)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn thin_pool(mosr: Option<&str>) -> BackendCapabilities {
        let mut pool = json!({
            "pool_name": "p", "total_capacity_gb": 100, "free_capacity_gb": 100,
            "thin_provisioning_support": true
        });
        if let Some(m) = mosr {
            pool["max_over_subscription_ratio"] = json!(m.parse::<f64>().map_or(json!(m), |r| json!(r)));
        }
        serde_json::from_value(json!({"volume_backend_name": "b", "pools": [pool]})).unwrap()
    }

    #[test]
    fn a_pool_without_a_ratio_takes_the_configured_one() {
        let mut cache = HostStateCache::new(OverSubscription::Ratio(7.5));
        cache.update_capabilities("h@none", 1, thin_pool(None));
        cache.update_capabilities("h@own", 1, thin_pool(Some("3")));
        cache.update_capabilities("h@auto", 1, thin_pool(Some("auto")));
        assert_eq!(cache.pool("h@none#p").unwrap().max_over_subscription_ratio, 7.5);
        assert_eq!(cache.pool("h@own#p").unwrap().max_over_subscription_ratio, 3.0);
        // `auto` on an empty pool starts at Cinder's initial 20.
        assert_eq!(cache.pool("h@auto#p").unwrap().max_over_subscription_ratio, 20.0);
    }
}
