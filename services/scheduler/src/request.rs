//! What the scheduler is asked to place (Cinder's `request_spec` and `filter_properties`),
//! and its per-request preparation: extra specs are parsed once, not once per pool.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::extra_specs::{Matcher, SpecCheck, parse_specs};
use crate::extras::Interner;
use crate::filters::ResolvedSpec;

/// The hosts a volume was already tried on (Cinder's `filter_properties['retry']`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryInfo {
    /// Attempts made so far, this one included once the scheduler has counted it.
    pub num_attempts: u32,
    /// The pools (`host@backend#pool`) chosen by earlier attempts, oldest first.
    pub backends: Vec<String>,
}

/// One volume to place.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestSpec {
    /// For messages only.
    pub volume_id: Option<String>,
    /// GiB to allocate; 0 (a manage request) passes every capacity check.
    pub size_gb: u64,
    /// The volume type's extra specs.
    pub extra_specs: BTreeMap<String, String>,
    /// `resource_properties.availability_zone`.
    pub availability_zone: Option<String>,
    /// `request_spec.availability_zones`: any of these zones will do (wins over the above).
    pub availability_zones: Option<Vec<String>>,
    /// The volume may attach to several hosts; the pool must report `multiattach`.
    pub multiattach: bool,
    /// Retry bookkeeping from earlier attempts; `None` on the first.
    pub retry: Option<RetryInfo>,
    /// Backends (`host@backend`) or pools (`host@backend#pool`) never to choose.
    pub ignore_hosts: Vec<String>,
    /// Only this backend or pool may be chosen (Cinder's `resource_backend`).
    pub resource_backend: Option<String>,
}

/// How the AvailabilityZoneFilter reads a request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AzRule<'a> {
    Any,
    OneOf(&'a [String]),
    Exactly(&'a str),
}

impl AzRule<'_> {
    pub(crate) fn passes(&self, az: Option<&str>) -> bool {
        match (self, az) {
            (AzRule::Any, _) => true,
            (AzRule::OneOf(zones), Some(az)) => zones.iter().any(|z| z == az),
            (AzRule::Exactly(want), Some(az)) => *want == az,
            (_, None) => false,
        }
    }
}

/// A request ready to be matched against many pools.
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    pub size: f64,
    /// Thin unless the type says `provisioning:type: thick` (as both capacity checks read it).
    pub thin: bool,
    pub specs: Vec<ResolvedSpec<'a>>,
    pub az: AzRule<'a>,
    pub tried: &'a [String],
    pub ignore: &'a [String],
    pub resource_backend: Option<&'a str>,
}

impl<'a> Prepared<'a> {
    pub(crate) fn new(spec: &'a RequestSpec, interner: &Interner) -> Self {
        let mut checks: Vec<SpecCheck<'a>> =
            parse_specs(spec.extra_specs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // Cinder adds `multiattach: <is> True` to the type when the volume asks for it.
        if spec.multiattach && !spec.extra_specs.contains_key("multiattach") {
            checks.push(SpecCheck {
                key: "multiattach",
                path: vec!["multiattach"],
                matcher: Matcher::Is(true),
            });
        }
        let az = match (&spec.availability_zones, &spec.availability_zone) {
            (Some(zones), _) if !zones.is_empty() => AzRule::OneOf(zones),
            (_, Some(az)) if !az.is_empty() => AzRule::Exactly(az),
            _ => AzRule::Any,
        };
        Self {
            size: spec.size_gb as f64,
            thin: spec.extra_specs.get("provisioning:type").map(String::as_str) != Some("thick"),
            specs: checks.into_iter().map(|c| ResolvedSpec::new(c, interner)).collect(),
            az,
            tried: spec.retry.as_ref().map_or(&[], |r| r.backends.as_slice()),
            ignore: &spec.ignore_hosts,
            resource_backend: spec.resource_backend.as_deref(),
        }
    }
}

/// Whether `pattern` names this pool: a pool name must match exactly, a backend name matches
/// every pool of the backend (as Cinder compares `resource_backend`).
pub(crate) fn names_pool(pattern: &str, backend: &str, pool_host: &str) -> bool {
    if pattern.contains('#') { pattern == pool_host } else { pattern == backend }
}
