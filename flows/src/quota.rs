//! Quota deltas of volumes and snapshots, and Cinder's over-quota messages.

use chrono::Utc;
use ember_common::model::quota::{GIGABYTES, PER_VOLUME_GIGABYTES, SNAPSHOTS, VOLUMES, per_type};
use ember_common::{Error as DomainError, ErrorKind};
use ember_engine::{Context, Failure};

use crate::deps::Deps;
use crate::error::{domain, fail};

/// The deltas of `count` volumes of `size` GiB of type `type_name` (Cinder's reserve
/// options with `add_volume_type_opts`).
pub fn volume_deltas(count: i64, size: i64, type_name: &str) -> Vec<(String, i64)> {
    vec![
        (VOLUMES.to_owned(), count),
        (GIGABYTES.to_owned(), size),
        (per_type(VOLUMES, type_name), count),
        (per_type(GIGABYTES, type_name), size),
    ]
}

/// The deltas of growing a volume of type `type_name` by `delta` GiB.
pub fn extend_deltas(delta: i64, type_name: &str) -> Vec<(String, i64)> {
    vec![(GIGABYTES.to_owned(), delta), (per_type(GIGABYTES, type_name), delta)]
}

/// The deltas of `count` snapshots of `size` GiB of type `type_name`.
pub fn snapshot_deltas(count: i64, size: i64, type_name: &str) -> Vec<(String, i64)> {
    vec![
        (SNAPSHOTS.to_owned(), count),
        (GIGABYTES.to_owned(), size),
        (per_type(SNAPSHOTS, type_name), count),
        (per_type(GIGABYTES, type_name), size),
    ]
}

/// The reservation key of the task `ctx` runs: one reservation per execution of a task,
/// however often a crash makes the engine execute it again.
pub(crate) fn key(ctx: &Context) -> String {
    format!("{}/{}", ctx.flow_id(), ctx.atom_name())
}

/// The reservation key of the revert of the task `ctx` reverts.
pub(crate) fn revert_key(ctx: &Context) -> String {
    format!("{}/{}/revert", ctx.flow_id(), ctx.atom_name())
}

/// Reserves `deltas` for `project_id` once per `key`, with Cinder's 413 messages when over
/// quota.
pub(crate) async fn reserve(
    deps: &Deps,
    key: &str,
    project_id: &str,
    deltas: &[(String, i64)],
) -> Result<Vec<String>, Failure> {
    let expire =
        chrono::Duration::from_std(deps.config.reservation_expire).unwrap_or(chrono::Duration::days(1));
    deps.quotas.reserve_once(key, project_id, deltas, Utc::now() + expire).await.map_err(over_quota)
}

/// Hands usage back: reserves the negated deltas (once per `key`); the caller commits them
/// once the resource is gone. A negative reservation that is never committed changes
/// nothing.
pub(crate) async fn reserve_release(
    deps: &Deps,
    key: &str,
    project_id: &str,
    deltas: &[(String, i64)],
) -> Result<Vec<String>, Failure> {
    let negated: Vec<(String, i64)> = deltas.iter().map(|(r, d)| (r.clone(), -d)).collect();
    reserve(deps, key, project_id, &negated).await
}

/// Reserves the negated deltas and commits them at once (a revert's hand-back), once per
/// `key`: a revert run again after a crash does not hand back twice.
pub(crate) async fn release_now(
    deps: &Deps,
    key: &str,
    project_id: &str,
    deltas: &[(String, i64)],
) -> Result<(), Failure> {
    let ids = reserve_release(deps, key, project_id, deltas).await?;
    deps.quotas.commit(&ids).await.map_err(domain)
}

/// Cinder's `per_volume_gigabytes` check (`VolumeSizeExceedsLimit`, 413).
pub(crate) async fn check_size_limit(deps: &Deps, project_id: &str, size: i64) -> Result<(), Failure> {
    match deps.quotas.limit_check(project_id, PER_VOLUME_GIGABYTES, size).await {
        Ok(()) => Ok(()),
        Err(DomainError::OverQuota(overs)) => {
            let limit = overs.first().map_or(0, |o| o.usage.limit);
            Err(fail(
                ErrorKind::OverLimit,
                format!("Requested volume size {size}G is larger than maximum allowed limit {limit}G."),
            ))
        }
        Err(e) => Err(domain(e)),
    }
}

/// Cinder's `process_reserve_over_quota`: a gigabytes resource gives
/// `VolumeSizeExceedsAvailableQuota`, a count `VolumeLimitExceeded` / `SnapshotLimitExceeded`.
fn over_quota(err: DomainError) -> Failure {
    let DomainError::OverQuota(overs) = &err else { return domain(err) };
    let Some(over) = overs.first() else { return domain(err) };
    let u = &over.usage;
    let message = if over.resource.contains("gigabytes") {
        format!(
            "Requested volume or snapshot exceeds allowed {} quota. Requested {}G, quota is {}G and {}G has \
             been consumed.",
            over.resource,
            over.requested,
            u.limit,
            u.in_use + u.reserved
        )
    } else if over.resource.starts_with(SNAPSHOTS) {
        format!("Maximum number of snapshots allowed ({}) exceeded", u.limit)
    } else {
        format!("Maximum number of volumes allowed ({}) exceeded for quota '{}'.", u.limit, over.resource)
    };
    fail(ErrorKind::OverLimit, message)
}
