//! Quota resources, limits, usage and reservations, as Cinder's `quota.py`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Number of volumes.
pub const VOLUMES: &str = "volumes";
/// GiB of volumes and snapshots.
pub const GIGABYTES: &str = "gigabytes";
/// Number of snapshots.
pub const SNAPSHOTS: &str = "snapshots";
/// Number of backups.
pub const BACKUPS: &str = "backups";
/// GiB of backups.
pub const BACKUP_GIGABYTES: &str = "backup_gigabytes";
/// The largest size of one volume; a limit only, checked with `limit_check`, never reserved.
pub const PER_VOLUME_GIGABYTES: &str = "per_volume_gigabytes";

/// The resources whose usage is tracked, in Cinder's order.
pub const COUNTED: [&str; 5] = [VOLUMES, GIGABYTES, SNAPSHOTS, BACKUPS, BACKUP_GIGABYTES];

/// The resources that have a copy per volume type (`volumes_<type>` ...).
pub const PER_TYPE: [&str; 3] = [VOLUMES, GIGABYTES, SNAPSHOTS];

/// `volumes_<type name>` and friends (Cinder's `add_volume_type_opts`).
pub fn per_type(resource: &str, type_name: &str) -> String {
    format!("{resource}_{type_name}")
}

/// Whether `resource` is a resource Ember knows: one of [`COUNTED`], a per-type variant or
/// [`PER_VOLUME_GIGABYTES`].
pub fn is_known(resource: &str) -> bool {
    if COUNTED.contains(&resource) || resource == PER_VOLUME_GIGABYTES {
        return true;
    }
    PER_TYPE.iter().any(|base| {
        resource.strip_prefix(base).and_then(|rest| rest.strip_prefix('_')).is_some_and(|t| !t.is_empty())
    })
}

/// The default limits when neither the project nor the `default` quota class sets one
/// (Cinder's `quota_*` options; per-type resources default to unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaDefaults {
    pub volumes: i64,
    pub gigabytes: i64,
    pub snapshots: i64,
    pub backups: i64,
    pub backup_gigabytes: i64,
    pub per_volume_gigabytes: i64,
}

impl Default for QuotaDefaults {
    fn default() -> Self {
        Self {
            volumes: 10,
            gigabytes: 1000,
            snapshots: 10,
            backups: 10,
            backup_gigabytes: 1000,
            per_volume_gigabytes: -1,
        }
    }
}

impl QuotaDefaults {
    /// The configured default of `resource`; -1 (unlimited) for per-type resources.
    pub fn get(&self, resource: &str) -> i64 {
        match resource {
            VOLUMES => self.volumes,
            GIGABYTES => self.gigabytes,
            SNAPSHOTS => self.snapshots,
            BACKUPS => self.backups,
            BACKUP_GIGABYTES => self.backup_gigabytes,
            PER_VOLUME_GIGABYTES => self.per_volume_gigabytes,
            _ => -1,
        }
    }
}

/// A limit with what is in use and reserved (`?usage=true` of the quota API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QuotaUsage {
    /// -1 is unlimited.
    pub limit: i64,
    pub in_use: i64,
    pub reserved: i64,
}

impl QuotaUsage {
    /// Cinder's check: over iff `limit >= 0 and delta >= 0 and limit < delta + in_use + reserved`.
    pub fn would_exceed(&self, delta: i64) -> bool {
        self.limit >= 0 && delta >= 0 && self.limit < delta + self.in_use + self.reserved
    }
}

/// The limits of a project, by resource, with usage when it was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QuotaSet {
    pub project_id: String,
    pub resources: BTreeMap<String, QuotaUsage>,
}

/// One resource's share of a reservation (Cinder's `reservations` row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub project_id: String,
    pub resource: String,
    pub delta: i64,
    pub expire_at: DateTime<Utc>,
}

/// The deltas of one volume of `size` GiB and type `type_name` (Cinder's QuotaReserveTask):
/// `volumes`, `gigabytes` and their per-type copies. Negate them to release a volume.
pub fn volume_deltas(size: i64, type_name: &str) -> Vec<(String, i64)> {
    vec![
        (VOLUMES.to_owned(), 1),
        (GIGABYTES.to_owned(), size),
        (per_type(VOLUMES, type_name), 1),
        (per_type(GIGABYTES, type_name), size),
    ]
}

/// The deltas of one snapshot of a `size` GiB volume of type `type_name`: snapshots count
/// against `gigabytes` too, as in Cinder without `no_snapshot_gb_quota`.
pub fn snapshot_deltas(size: i64, type_name: &str) -> Vec<(String, i64)> {
    vec![
        (SNAPSHOTS.to_owned(), 1),
        (GIGABYTES.to_owned(), size),
        (per_type(SNAPSHOTS, type_name), 1),
        (per_type(GIGABYTES, type_name), size),
    ]
}

/// The deltas of one backup of `size` GiB.
pub fn backup_deltas(size: i64) -> Vec<(String, i64)> {
    vec![(BACKUPS.to_owned(), 1), (BACKUP_GIGABYTES.to_owned(), size)]
}

/// The same deltas with their signs turned: what releases them.
pub fn negate(deltas: &[(String, i64)]) -> Vec<(String, i64)> {
    deltas.iter().map(|(r, d)| (r.clone(), -d)).collect()
}

/// Validates a set of deltas: known resources, each named once, not the limit-only one.
/// The error is the message of an invalid request.
pub fn check_deltas(deltas: &[(String, i64)]) -> Result<(), String> {
    for (i, (resource, _)) in deltas.iter().enumerate() {
        if !is_known(resource) || resource == PER_VOLUME_GIGABYTES {
            return Err(format!("unknown quota resource {resource:?}"));
        }
        if deltas[..i].iter().any(|(r, _)| r == resource) {
            return Err(format!("quota resource {resource:?} given twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_quota_rule_is_cinders() {
        let u = QuotaUsage { limit: 10, in_use: 7, reserved: 2 };
        assert!(!u.would_exceed(1));
        assert!(u.would_exceed(2));
        assert!(!u.would_exceed(-5), "releases are never refused");
        assert!(!QuotaUsage { limit: -1, in_use: 1 << 40, reserved: 0 }.would_exceed(1 << 40));
        assert!(QuotaUsage { limit: 0, in_use: 0, reserved: 0 }.would_exceed(1));
        assert!(!QuotaUsage { limit: 0, in_use: 0, reserved: 0 }.would_exceed(0));
    }

    #[test]
    fn known_resources() {
        assert!(is_known("volumes"));
        assert!(is_known("gigabytes___DEFAULT__"));
        assert!(is_known("snapshots_gold"));
        assert!(!is_known("volumes_"));
        assert!(!is_known("backups_gold"));
        assert!(!is_known("cores"));
        assert!(check_deltas(&[("volumes".into(), 1), ("volumes".into(), 1)]).is_err());
        assert!(check_deltas(&[("per_volume_gigabytes".into(), 1)]).is_err());
        assert_eq!(QuotaDefaults::default().get("volumes_gold"), -1);
    }

    #[test]
    fn deltas_of_each_resource_are_valid_and_negate() {
        let v = volume_deltas(5, "__DEFAULT__");
        assert_eq!(v[3], ("gigabytes___DEFAULT__".to_owned(), 5));
        check_deltas(&v).unwrap();
        check_deltas(&snapshot_deltas(5, "gold")).unwrap();
        check_deltas(&backup_deltas(5)).unwrap();
        assert_eq!(
            negate(&backup_deltas(5)),
            [("backups".to_owned(), -1), ("backup_gigabytes".to_owned(), -5)]
        );
    }
}
