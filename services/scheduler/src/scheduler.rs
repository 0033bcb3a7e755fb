//! The filter scheduler: filter the pools, weigh the survivors, pick the heaviest and take its
//! space in the cache (Cinder's `FilterScheduler._schedule` and `_get_weighted_candidates`).

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

use ember_common::host::{Level, extract_host};

use crate::Result;
use crate::filters::{capabilities_pass, capacity_passes, retry_passes};
use crate::options::{FilterKind, SchedulerOptions, WeigherKind};
use crate::request::{Prepared, RequestSpec, RetryInfo, names_pool};
use crate::state::{BackendState, HostStateCache, PoolState};
use crate::weighers::{add_normalised, allocated_weight, best, bounds, capacity_weight};

/// Where a volume goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// `host@backend#pool`: the volume row's `host`.
    pub host: String,
    /// The chosen service's availability zone, which the volume takes.
    pub availability_zone: String,
    /// The retry bookkeeping to hand to the next attempt if this one fails; `None` when
    /// retries are disabled (`scheduler_max_attempts = 1`).
    pub retry: Option<RetryInfo>,
    /// The winning total weight.
    pub weight: f64,
}

impl Placement {
    /// `host@backend`, the RPC routing key of the volume service.
    pub fn backend(&self) -> &str {
        extract_host(&self.host, Level::Backend, false).unwrap_or(&self.host)
    }

    /// The pool name.
    pub fn pool(&self) -> &str {
        extract_host(&self.host, Level::Pool, true).unwrap_or_default()
    }
}

/// How many pools one filter (or rule) turned away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub by: String,
    pub pools: usize,
}

/// No pool can take the volume (Cinder's `NoValidBackend`); `reason` says why.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("No valid backend was found. {reason}")]
pub struct NoValidBackend {
    pub reason: String,
    /// Every pool in the cache; the rejections add up to it.
    pub pools_considered: usize,
    /// Who turned pools away, in filter order; only non-zero counts.
    pub rejections: Vec<Rejection>,
}

impl NoValidBackend {
    fn plain(reason: String) -> Self {
        Self { reason, pools_considered: 0, rejections: Vec::new() }
    }
}

const DOWN: &str = "service down, disabled or frozen";
const IGNORED: &str = "ignore_hosts";
const NOT_RESOURCE_BACKEND: &str = "resource_backend";

/// Why a pool is not a candidate.
#[derive(Debug, Clone, Copy)]
enum Reject {
    Ignored,
    NotResourceBackend,
    Filter(FilterKind),
}

/// Per-request counts for the no-valid-backend message.
#[derive(Debug, Default)]
struct Tally {
    considered: usize,
    down: usize,
    ignored: usize,
    not_resource_backend: usize,
    by_filter: [usize; 4],
}

impl Tally {
    fn into_error(self, filters: &[FilterKind]) -> NoValidBackend {
        let mut rejections = Vec::new();
        let mut push = |by: &str, pools: usize| {
            if pools > 0 {
                rejections.push(Rejection { by: by.to_owned(), pools });
            }
        };
        push(DOWN, self.down);
        push(IGNORED, self.ignored);
        push(NOT_RESOURCE_BACKEND, self.not_resource_backend);
        for f in filters {
            push(f.name(), self.by_filter[*f as usize]);
        }
        let mut reason = format!("No weighed backends available ({} pools considered", self.considered);
        for r in &rejections {
            let _ = write!(reason, "; {}: {} rejected", r.by, r.pools);
        }
        reason.push(')');
        NoValidBackend { reason, pools_considered: self.considered, rejections }
    }
}

/// The filter scheduler: options plus buffers reused from one request to the next, so that
/// scheduling allocates nothing per pool. It works on a [`HostStateCache`] it is handed.
#[derive(Debug)]
pub struct FilterScheduler {
    options: SchedulerOptions,
    rng: StdRng,
    /// (backend index, pool index) of the pools that passed every filter.
    candidates: Vec<(u32, u32)>,
    raw: Vec<f64>,
    totals: Vec<f64>,
}

impl FilterScheduler {
    pub fn new(options: SchedulerOptions) -> Result<Self> {
        Self::build(options, StdRng::from_os_rng())
    }

    /// A scheduler whose ChanceWeigher draws from a seeded generator, for tests.
    pub fn with_seed(options: SchedulerOptions, seed: u64) -> Result<Self> {
        Self::build(options, StdRng::seed_from_u64(seed))
    }

    fn build(options: SchedulerOptions, rng: StdRng) -> Result<Self> {
        options.validate()?;
        Ok(Self { options, rng, candidates: Vec::new(), raw: Vec::new(), totals: Vec::new() })
    }

    pub fn options(&self) -> &SchedulerOptions {
        &self.options
    }

    /// An empty cache configured as this scheduler expects.
    pub fn new_cache(&self) -> HostStateCache {
        HostStateCache::new(self.options.max_over_subscription_ratio)
    }

    /// Places one volume at time `now_ms`: counts the attempt, gives back what a failed
    /// previous attempt took, filters, weighs, and takes the size from the chosen pool.
    pub fn schedule(
        &mut self,
        cache: &mut HostStateCache,
        spec: &RequestSpec,
        now_ms: i64,
    ) -> std::result::Result<Placement, NoValidBackend> {
        let retry = self.populate_retry(spec)?;
        if retry.is_some()
            && let Some(last) = spec.retry.as_ref().and_then(|r| r.backends.last())
        {
            cache.release(last, spec.size_gb as f64);
        }
        let req = Prepared::new(spec, cache.interner());
        let mut tally = Tally::default();
        self.filter(cache.backends(), &req, now_ms, &mut tally);
        if self.candidates.is_empty() {
            return Err(tally.into_error(&self.options.scheduler_default_filters));
        }
        let (chosen, weight) = self.weigh(cache.backends(), &req);
        let (bi, pi) = self.candidates[chosen];
        let backend = &mut cache.backends_mut()[bi as usize];
        let availability_zone = backend.availability_zone().unwrap_or_default().to_owned();
        let pool = &mut backend.pools[pi as usize];
        pool.consume(req.size, Some(now_ms));
        let host = pool.host.clone();
        let retry = retry.map(|mut r| {
            r.backends.push(host.clone());
            r
        });
        Ok(Placement { host, availability_zone, retry, weight })
    }

    /// Cinder's `_populate_retry`: count this attempt and refuse one too many.
    fn populate_retry(&self, spec: &RequestSpec) -> std::result::Result<Option<RetryInfo>, NoValidBackend> {
        let max = self.options.scheduler_max_attempts;
        if max == 1 {
            return Ok(None);
        }
        let mut retry = spec.retry.clone().unwrap_or_default();
        retry.num_attempts = retry.num_attempts.saturating_add(1);
        if retry.num_attempts > max {
            let id = spec.volume_id.as_deref().unwrap_or("(no id)");
            return Err(NoValidBackend::plain(format!(
                "Exceeded max scheduling attempts {max} for resource {id}"
            )));
        }
        Ok(Some(retry))
    }

    /// Runs the filters over every pool of every schedulable backend into `self.candidates`.
    fn filter(&mut self, backends: &[BackendState], req: &Prepared<'_>, now_ms: i64, tally: &mut Tally) {
        self.candidates.clear();
        let down_ms = self.options.service_down_ms();
        for (bi, b) in backends.iter().enumerate() {
            tally.considered += b.pools.len();
            if !b.schedulable(now_ms, down_ms) {
                tally.down += b.pools.len();
                continue;
            }
            // The zone belongs to the service, so it is checked once for all its pools.
            let az_ok = req.az.passes(b.availability_zone());
            for (pi, p) in b.pools.iter().enumerate() {
                match self.rejection(b, p, req, az_ok) {
                    Some(Reject::Ignored) => tally.ignored += 1,
                    Some(Reject::NotResourceBackend) => tally.not_resource_backend += 1,
                    Some(Reject::Filter(f)) => tally.by_filter[f as usize] += 1,
                    None => self.candidates.push((bi as u32, pi as u32)),
                }
            }
        }
    }

    /// Why one pool of a schedulable backend is turned away, if it is.
    fn rejection(&self, b: &BackendState, p: &PoolState, req: &Prepared<'_>, az_ok: bool) -> Option<Reject> {
        if req.ignore.iter().any(|h| names_pool(h, &b.name, &p.host)) {
            return Some(Reject::Ignored);
        }
        if req.resource_backend.is_some_and(|rb| !names_pool(rb, &b.name, &p.host)) {
            return Some(Reject::NotResourceBackend);
        }
        let filters = &self.options.scheduler_default_filters;
        let rejected_by = filters.iter().find(|f| match f {
            FilterKind::AvailabilityZoneFilter => !az_ok,
            FilterKind::CapacityFilter => !capacity_passes(p, req.size, req.thin),
            FilterKind::CapabilitiesFilter => !capabilities_pass(b, p, &req.specs),
            FilterKind::RetryFilter => !retry_passes(p, req.tried),
        });
        rejected_by.map(|f| Reject::Filter(*f))
    }

    /// Cinder's `backend_passes_filters`: whether the request could be placed on this pool
    /// (`host@backend#pool`) now, without weighing or taking any space. Used for extend,
    /// manage and snapshot requests, and by tests to check a placement.
    pub fn backend_passes_filters(
        &self,
        cache: &HostStateCache,
        spec: &RequestSpec,
        host: &str,
        now_ms: i64,
    ) -> std::result::Result<(), NoValidBackend> {
        let cannot = || NoValidBackend::plain(format!("Cannot place volume on {host}"));
        let backend_name = extract_host(host, Level::Backend, false).ok_or_else(cannot)?;
        let b = cache.backends().iter().find(|b| b.name == backend_name).ok_or_else(cannot)?;
        let p = b.pools.iter().find(|p| p.host == host).ok_or_else(cannot)?;
        if !b.schedulable(now_ms, self.options.service_down_ms()) {
            return Err(cannot());
        }
        let req = Prepared::new(spec, cache.interner());
        let az_ok = req.az.passes(b.availability_zone());
        match self.rejection(b, p, &req, az_ok) {
            None => Ok(()),
            Some(_) => Err(cannot()),
        }
    }

    /// Sums the normalised weights of the candidates; returns the winner and its weight.
    fn weigh(&mut self, backends: &[BackendState], req: &Prepared<'_>) -> (usize, f64) {
        let n = self.candidates.len();
        self.totals.clear();
        self.totals.resize(n, 0.0);
        for w in &self.options.scheduler_default_weighers {
            let pools = self.candidates.iter().map(|&(b, p)| &backends[b as usize].pools[p as usize]);
            self.raw.clear();
            let multiplier = match w {
                WeigherKind::CapacityWeigher => {
                    let m = self.options.capacity_weight_multiplier;
                    self.raw.extend(pools.map(|p| capacity_weight(p, req.thin, m)));
                    m
                }
                WeigherKind::AllocatedCapacityWeigher => {
                    self.raw.extend(pools.map(allocated_weight));
                    self.options.allocated_capacity_weight_multiplier
                }
                WeigherKind::ChanceWeigher => {
                    let rng = &mut self.rng;
                    self.raw.extend((0..n).map(|_| rng.random::<f64>()));
                    self.options.chance_weight_multiplier
                }
            };
            let b = bounds(&mut self.raw, *w == WeigherKind::CapacityWeigher);
            add_normalised(&self.raw, b, multiplier, &mut self.totals);
        }
        // `candidates` is not empty here, so there is a best one.
        let i = best(&self.totals).unwrap_or(0);
        (i, self.totals[i])
    }
}
