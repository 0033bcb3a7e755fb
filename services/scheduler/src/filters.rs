//! The filters: AvailabilityZoneFilter, CapacityFilter, CapabilitiesFilter and RetryFilter,
//! each a pure function of one pool and the prepared request (Cinder's `filters/*.py`).

use serde_json::Value;

use ember_common::capabilities::{
    BackendCapabilities, Capacity, CapacityKeyword, OverSubscription, PoolCapabilities,
};

use crate::capacity::{CapacityInputs, available_and_virtual_free};
use crate::extra_specs::{CapValue, Matcher, SpecCheck};
use crate::extras::{Extras, Interner};
use crate::state::{BackendState, PoolState};

/// CapacityFilter (`filters/capacity_filter.py`): whether `requested` GiB fit in the pool.
pub fn capacity_passes(pool: &PoolState, requested: f64, thin: bool) -> bool {
    // A manage request takes no new space.
    if requested == 0.0 {
        return true;
    }
    let reserved = pool.reserved_percentage;
    let free = match pool.free_capacity_gb {
        // Backends that cannot tell are assumed to have room; a retry copes if not.
        Capacity::Keyword(_) => return true,
        Capacity::Gb(free) => free,
    };
    let total = match pool.total_capacity_gb {
        // The reserve cannot be computed from an unknown total.
        Capacity::Keyword(_) => return reserved == 0.0,
        Capacity::Gb(total) => total,
    };
    if total <= 0.0 {
        return false;
    }
    let thin_support = pool.thin_provisioning_support;
    let mosr = pool.max_over_subscription_ratio;
    let (total_available, virtual_free) = available_and_virtual_free(CapacityInputs {
        total,
        free,
        provisioned: pool.provisioned_capacity_gb,
        thin_support,
        max_over_subscription_ratio: mosr,
        reserved_percentage: reserved,
        thin,
    });
    if thin && thin_support && mosr >= 1.0 {
        let provisioned_ratio = (pool.provisioned_capacity_gb + requested) / total_available;
        if provisioned_ratio > mosr {
            return false;
        }
        return virtual_free >= requested && reported_room(pool, total, requested);
    }
    if thin && thin_support {
        // A ratio below 1 is a misconfiguration; Cinder filters such pools out.
        return false;
    }
    virtual_free >= requested
}

/// Whether the pool's last report leaves any real space after the reserve: a thin pool
/// whose file system is full takes nothing, whatever its over-subscription ratio promises.
///
/// Cinder's present thin formula reads only the provisioned capacity, so a pool whose file
/// system is full still passes while its thin volumes use less than they promise (issue 15
/// item 5). Only a pool with no space left is refused here, so Cinder's formula decides
/// every other case unchanged. The free space read is the one reported, which placements
/// never lower: the placements between two reports are what the provisioned check counts.
fn reported_room(pool: &PoolState, total: f64, _requested: f64) -> bool {
    let Capacity::Gb(reported) = pool.capabilities.free_capacity_gb else {
        return true;
    };
    let reserved = (total * pool.reserved_percentage / 100.0).floor();
    reported - reserved > 0.0
}

/// RetryFilter: a pool already tried for this volume is skipped.
pub fn retry_passes(pool: &PoolState, tried: &[String]) -> bool {
    !tried.contains(&pool.host)
}

/// A capability the report holds in a typed field rather than in its free-form map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    PoolName,
    TotalCapacity,
    FreeCapacity,
    AllocatedCapacity,
    ProvisionedCapacity,
    MaxOverSubscriptionRatio,
    ReservedPercentage,
    ThinSupport,
    ThickSupport,
    Multiattach,
    VolumeBackendName,
    VendorName,
    DriverVersion,
    StorageProtocol,
    Other,
}

impl Field {
    fn of(name: &str) -> Self {
        match name {
            "pool_name" => Field::PoolName,
            "total_capacity_gb" => Field::TotalCapacity,
            "free_capacity_gb" => Field::FreeCapacity,
            "allocated_capacity_gb" => Field::AllocatedCapacity,
            "provisioned_capacity_gb" => Field::ProvisionedCapacity,
            "max_over_subscription_ratio" => Field::MaxOverSubscriptionRatio,
            "reserved_percentage" => Field::ReservedPercentage,
            "thin_provisioning_support" => Field::ThinSupport,
            "thick_provisioning_support" => Field::ThickSupport,
            "multiattach" => Field::Multiattach,
            "volume_backend_name" => Field::VolumeBackendName,
            "vendor_name" => Field::VendorName,
            "driver_version" => Field::DriverVersion,
            "storage_protocol" => Field::StorageProtocol,
            _ => Field::Other,
        }
    }
}

/// An extra spec whose first key is resolved once per request: to a typed field, and to the
/// interned id of a free-form capability (`None` when no report ever used that name).
#[derive(Debug)]
pub(crate) struct ResolvedSpec<'a> {
    check: SpecCheck<'a>,
    field: Field,
    extra_id: Option<u32>,
}

impl<'a> ResolvedSpec<'a> {
    pub(crate) fn new(check: SpecCheck<'a>, interner: &Interner) -> Self {
        let first = check.path.first().copied();
        let field = first.map_or(Field::Other, Field::of);
        let extra_id = first.and_then(|k| interner.get(k));
        Self { check, field, extra_id }
    }
}

fn capacity_value(c: Capacity) -> CapValue<'static> {
    match c {
        Capacity::Gb(v) => CapValue::Num(v),
        Capacity::Keyword(CapacityKeyword::Infinite) => CapValue::Str("infinite"),
        Capacity::Keyword(CapacityKeyword::Unknown) => CapValue::Str("unknown"),
    }
}

/// The pool's own typed fields, as its report gave them.
fn pool_field(pool: &PoolCapabilities, field: Field) -> Option<CapValue<'_>> {
    Some(match field {
        Field::PoolName => CapValue::Str(&pool.pool_name),
        Field::TotalCapacity => capacity_value(pool.total_capacity_gb),
        Field::FreeCapacity => capacity_value(pool.free_capacity_gb),
        Field::AllocatedCapacity => CapValue::Num(pool.allocated_capacity_gb),
        Field::ProvisionedCapacity => CapValue::Num(pool.provisioned_capacity_gb?),
        Field::MaxOverSubscriptionRatio => match pool.max_over_subscription_ratio? {
            OverSubscription::Ratio(r) => CapValue::Num(r),
            OverSubscription::Auto(_) => CapValue::Str("auto"),
        },
        Field::ReservedPercentage => CapValue::Num(pool.reserved_percentage),
        Field::ThinSupport => CapValue::Bool(pool.thin_provisioning_support),
        Field::ThickSupport => CapValue::Bool(pool.thick_provisioning_support?),
        Field::Multiattach => CapValue::Bool(pool.multiattach?),
        _ => return None,
    })
}

fn backend_field(backend: &BackendCapabilities, field: Field) -> Option<CapValue<'_>> {
    Some(match field {
        Field::VolumeBackendName => CapValue::Str(&backend.volume_backend_name),
        Field::VendorName => CapValue::Str(&backend.vendor_name),
        Field::DriverVersion => CapValue::Str(&backend.driver_version),
        Field::StorageProtocol => CapValue::Str(&backend.storage_protocol),
        _ => return None,
    })
}

/// The value of a typed pool flag that neither the pool nor its backend reported: a pool is
/// taken to support thick provisioning and not multiattach, the defaults reports had before
/// the flags could be left out (so a type asking `multiattach: <is> False` still matches).
fn unreported_default(field: Field) -> Option<CapValue<'static>> {
    match field {
        Field::ThickSupport => Some(CapValue::Bool(true)),
        Field::Multiattach => Some(CapValue::Bool(false)),
        _ => None,
    }
}

/// Looks a capability up: the pool's report first, then its backend's (Cinder copies the
/// backend's name, vendor, version and protocol into each pool; Ember also lets the other
/// backend-wide keys through, so a backend-wide capability can be asked for).
fn lookup<'c>(
    backend: &'c BackendState,
    pool: &'c PoolState,
    spec: &ResolvedSpec<'_>,
) -> Option<CapValue<'c>> {
    let (_, rest) = spec.check.path.split_first()?;
    let extra = |extras: &'c Extras| spec.extra_id.and_then(|id| extras.get(id));
    let top = pool_field(&pool.capabilities, spec.field)
        .or_else(|| extra(&pool.extras))
        .or_else(|| backend.capabilities.as_ref().and_then(|caps| backend_field(caps, spec.field)))
        .or_else(|| extra(&backend.extras))
        .or_else(|| unreported_default(spec.field))?;
    if rest.is_empty() {
        return Some(top);
    }
    // Nested keys (`capabilities:a:b`) walk into JSON objects; anything else has no keys.
    let CapValue::Json(mut v) = top else { return None };
    for key in rest {
        v = v.as_object()?.get(*key)?;
    }
    Some(CapValue::from_json(v))
}

fn spec_matches(value: CapValue<'_>, matcher: &Matcher<'_>) -> bool {
    match value {
        // A list capability passes when any element matches (or, for `<all-in>`, as a whole).
        CapValue::Json(Value::Array(items)) if !matcher.wants_whole_list() => {
            items.iter().any(|i| matcher.matches(CapValue::from_json(i)))
        }
        v => matcher.matches(v),
    }
}

/// CapabilitiesFilter (`filters/capabilities_filter.py`): every extra spec in scope matches.
pub(crate) fn capabilities_pass(
    backend: &BackendState,
    pool: &PoolState,
    specs: &[ResolvedSpec<'_>],
) -> bool {
    specs.iter().all(|s| lookup(backend, pool, s).is_some_and(|v| spec_matches(v, &s.check.matcher)))
}
