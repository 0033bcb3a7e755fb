//! The quota engine on SQLite and, with EMBER_TEST_DATABASE_URL, on PostgreSQL: limits,
//! reserve / commit / rollback / expire, a race for the last units, and a property test.

use std::sync::Arc;

use chrono::{Duration, Utc};

use ember_common::Error;
use ember_common::model::QuotaDefaults;
use ember_common::repo::QuotaRepo;
use ember_db::SqlRepo;
use ember_db::testing::TestDb;

fn project() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn d(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect()
}

fn later() -> chrono::DateTime<Utc> {
    Utc::now() + Duration::hours(24)
}

#[tokio::test]
async fn limits_come_from_project_then_default_class_then_config() {
    for t in TestDb::all().await.unwrap() {
        let defaults = QuotaDefaults { volumes: 7, ..QuotaDefaults::default() };
        let repo = SqlRepo::new(t.db.clone(), defaults);
        let all = repo.quota_defaults().await.unwrap();
        assert_eq!(all["volumes"], 7);
        assert_eq!(all["gigabytes"], 1000);
        assert_eq!(all["snapshots"], 10);
        assert_eq!(all["backups"], 10);
        assert_eq!(all["backup_gigabytes"], 1000);
        assert_eq!(all["per_volume_gigabytes"], -1);
        assert_eq!(all["volumes___DEFAULT__"], -1);
        assert_eq!(all["gigabytes___DEFAULT__"], -1);
        assert_eq!(all["snapshots___DEFAULT__"], -1);
        repo.set_default_quota("volumes", 5).await.unwrap();
        assert_eq!(repo.quota_defaults().await.unwrap()["volumes"], 5);
        let p = project();
        repo.set_project_quota(&p, "volumes", 3).await.unwrap();
        repo.set_project_quota(&p, "volumes", 4).await.unwrap();
        let set = repo.project_quotas(&p).await.unwrap();
        assert_eq!(set.resources["volumes"].limit, 4);
        assert_eq!(set.resources["gigabytes"].limit, 1000);
        assert_eq!(repo.project_quotas(&project()).await.unwrap().resources["volumes"].limit, 5);
        repo.delete_project_quotas(&p).await.unwrap();
        assert_eq!(repo.project_quotas(&p).await.unwrap().resources["volumes"].limit, 5);
        assert!(matches!(repo.set_project_quota(&p, "cores", 1).await, Err(Error::Invalid(_))));
        assert!(matches!(repo.set_project_quota(&p, "volumes", -2).await, Err(Error::Invalid(_))));
        repo.set_project_quota(&p, "per_volume_gigabytes", 100).await.unwrap();
        repo.limit_check(&p, "per_volume_gigabytes", 100).await.unwrap();
        assert!(matches!(repo.limit_check(&p, "per_volume_gigabytes", 101).await, Err(Error::OverQuota(_))));
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn reserve_commit_rollback_and_expire() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let p = project();
        repo.set_project_quota(&p, "volumes", 2).await.unwrap();
        repo.set_project_quota(&p, "gigabytes", 10).await.unwrap();
        let r1 = repo.reserve(&p, &d(&[("volumes", 1), ("gigabytes", 6)]), later()).await.unwrap();
        assert_eq!(r1.len(), 2);
        let usage = |set: &ember_common::model::QuotaSet, r: &str| {
            let u = set.resources[r];
            (u.in_use, u.reserved)
        };
        let set = repo.project_quotas(&p).await.unwrap();
        assert_eq!(usage(&set, "gigabytes"), (0, 6));
        // 6 reserved + 5 asked > 10: refused, naming the resource and its figures.
        let err = repo.reserve(&p, &d(&[("volumes", 1), ("gigabytes", 5)]), later()).await.unwrap_err();
        let Error::OverQuota(overs) = err else { panic!("expected OverQuota, got {err:?}") };
        assert_eq!(overs.len(), 1);
        assert_eq!(overs[0].resource, "gigabytes");
        assert_eq!((overs[0].requested, overs[0].usage.limit, overs[0].usage.reserved), (5, 10, 6));
        // Nothing of the refused request was kept.
        assert_eq!(usage(&repo.project_quotas(&p).await.unwrap(), "volumes"), (0, 1));
        repo.commit(&r1).await.unwrap();
        repo.commit(&r1).await.unwrap();
        assert_eq!(
            usage(&repo.project_quotas(&p).await.unwrap(), "gigabytes"),
            (6, 0),
            "a repeated commit is a no-op"
        );
        let r2 = repo.reserve(&p, &d(&[("gigabytes", 4)]), later()).await.unwrap();
        repo.rollback(&r2).await.unwrap();
        assert_eq!(usage(&repo.project_quotas(&p).await.unwrap(), "gigabytes"), (6, 0));
        // Releases are never refused, even past the limit.
        repo.set_project_quota(&p, "gigabytes", 1).await.unwrap();
        let r3 = repo.reserve(&p, &d(&[("gigabytes", -6), ("volumes", -1)]), later()).await.unwrap();
        repo.commit(&r3).await.unwrap();
        assert_eq!(usage(&repo.project_quotas(&p).await.unwrap(), "gigabytes"), (0, 0));
        // Stale reservations expire; fresh ones stay.
        let stale = repo.reserve(&p, &d(&[("volumes", 1)]), Utc::now() - Duration::seconds(1)).await.unwrap();
        let fresh = repo.reserve(&p, &d(&[("volumes", 1)]), later()).await.unwrap();
        assert!(repo.expire_reservations(Utc::now()).await.unwrap() >= 1);
        assert_eq!(usage(&repo.project_quotas(&p).await.unwrap(), "volumes"), (0, 1));
        repo.commit(&stale).await.unwrap();
        assert_eq!(
            usage(&repo.project_quotas(&p).await.unwrap(), "volumes"),
            (0, 1),
            "expired ids commit nothing"
        );
        repo.commit(&fresh).await.unwrap();
        assert_eq!(usage(&repo.project_quotas(&p).await.unwrap(), "volumes"), (1, 0));
        // Per-type resources are unlimited by default and tracked.
        let r4 = repo.reserve(&p, &d(&[("volumes___DEFAULT__", 100)]), later()).await.unwrap();
        repo.commit(&r4).await.unwrap();
        assert_eq!(usage(&repo.project_quotas(&p).await.unwrap(), "volumes___DEFAULT__"), (100, 0));
        assert!(matches!(repo.reserve(&p, &d(&[("cores", 1)]), later()).await, Err(Error::Invalid(_))));
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn fifty_concurrent_reservations_for_the_last_units() {
    for t in TestDb::all().await.unwrap() {
        let repo = Arc::new(SqlRepo::new(t.db.clone(), QuotaDefaults::default()));
        let p = project();
        repo.set_project_quota(&p, "volumes", 20).await.unwrap();
        let used = repo.reserve(&p, &d(&[("volumes", 15)]), later()).await.unwrap();
        repo.commit(&used).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let repo = repo.clone();
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                repo.reserve(&p, &d(&[("volumes", 1), ("gigabytes", 1)]), later()).await
            }));
        }
        let (mut won, mut refused) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(Error::OverQuota(_)) => refused += 1,
                Err(e) => panic!("{}: unexpected error {e}", t.db.kind()),
            }
        }
        assert_eq!((won, refused), (5, 45), "{}", t.db.kind());
        let u = repo.project_quotas(&p).await.unwrap().resources["volumes"];
        assert_eq!((u.in_use, u.reserved), (15, 5));
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn sync_recomputes_usage_from_live_resources() {
    use ember_common::model::{Backup, DEFAULT_VOLUME_TYPE_ID, Snapshot, Volume, VolumeExpect, VolumeType};
    use ember_common::repo::{BackupRepo, SnapshotRepo, VolumeRepo, VolumeTypeRepo};

    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let p = project();
        let gold = repo.create_volume_type(&VolumeType::new(project(), "gold")).await.unwrap();
        let mut ids = Vec::new();
        for (size, type_id) in [(1, DEFAULT_VOLUME_TYPE_ID), (2, gold.id.as_str()), (4, gold.id.as_str())] {
            let v = Volume::new(project(), &p, "u", size, type_id, "nova");
            ids.push(repo.create_volume(&v).await.unwrap().id);
        }
        let mut temp = Volume::new(project(), &p, "u", 100, DEFAULT_VOLUME_TYPE_ID, "nova");
        temp.consumes_quota = false;
        repo.create_volume(&temp).await.unwrap();
        assert!(repo.soft_delete_volume(&ids[0], &VolumeExpect::default()).await.unwrap());
        repo.create_snapshot(&Snapshot::new(project(), &p, "u", &ids[1], &gold.id, 2)).await.unwrap();
        repo.create_backup(&Backup::new(project(), &p, "u", &ids[2], 4)).await.unwrap();
        // Drifted usage, and a pending reservation that the sync must keep.
        let drift = repo.reserve(&p, &d(&[("volumes", 9), ("backups", 3)]), later()).await.unwrap();
        repo.commit(&drift).await.unwrap();
        repo.reserve(&p, &d(&[("gigabytes", 5)]), later()).await.unwrap();
        let set = repo.sync_usage(&p).await.unwrap();
        let in_use = |r: &str| set.resources[r].in_use;
        assert_eq!(in_use("volumes"), 2);
        assert_eq!(in_use("gigabytes"), 2 + 4 + 2, "volumes and snapshots");
        assert_eq!(in_use("snapshots"), 1);
        assert_eq!(in_use("backups"), 1);
        assert_eq!(in_use("backup_gigabytes"), 4);
        assert_eq!(in_use("volumes_gold"), 2);
        assert_eq!(in_use("gigabytes_gold"), 8);
        assert_eq!(in_use("snapshots_gold"), 1);
        assert_eq!(in_use("volumes___DEFAULT__"), 0);
        assert_eq!(set.resources["gigabytes"].reserved, 5);
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn commits_racing_the_expiry_sweep_release_each_reservation_once() {
    for t in TestDb::all().await.unwrap() {
        let repo = Arc::new(SqlRepo::new(t.db.clone(), QuotaDefaults::default()));
        let p = project();
        repo.set_project_quota(&p, "volumes", -1).await.unwrap();
        let past = Utc::now() - Duration::seconds(1);
        let mut ids = Vec::new();
        for _ in 0..30 {
            ids.extend(repo.reserve(&p, &d(&[("volumes", 1), ("gigabytes", 2)]), past).await.unwrap());
        }
        let mut tasks = Vec::new();
        for i in 0..8 {
            let repo = repo.clone();
            // Overlapping sets in opposite orders, racing the sweep over the same rows.
            let mut mine = ids.clone();
            if i % 2 == 1 {
                mine.reverse();
            }
            tasks.push(tokio::spawn(async move {
                if i % 4 == 3 {
                    repo.expire_reservations(Utc::now()).await.map(|_| ())
                } else {
                    repo.commit(&mine).await
                }
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap_or_else(|e| panic!("{}: {e}", t.db.kind()));
        }
        let set = repo.project_quotas(&p).await.unwrap();
        let (v, g) = (set.resources["volumes"], set.resources["gigabytes"]);
        assert_eq!((v.reserved, g.reserved), (0, 0), "{}", t.db.kind());
        assert_eq!(g.in_use, 2 * v.in_use, "each reservation pair went one way, whole");
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn a_keyed_reservation_is_made_once_however_often_it_is_asked() {
    for t in TestDb::all().await.unwrap() {
        let repo = Arc::new(SqlRepo::new(t.db.clone(), QuotaDefaults::default()));
        let p = project();
        let gb = |repo: Arc<SqlRepo>, p: String| async move {
            let u = repo.project_quotas(&p).await.unwrap().resources["gigabytes"];
            (u.in_use, u.reserved)
        };
        // Ten concurrent executions of one task (a crash made the engine run it again).
        let asks = (0..10).map(|_| {
            let (repo, p) = (repo.clone(), p.clone());
            tokio::spawn(async move {
                repo.reserve_once("flow-1/QuotaReserve", &p, &d(&[("gigabytes", 3)]), later()).await
            })
        });
        let ids: Vec<Vec<String>> =
            futures::future::join_all(asks).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "every call answers the same ids: {ids:?}");
        assert_eq!(gb(repo.clone(), p.clone()).await, (0, 3));
        repo.commit(&ids[0]).await.unwrap();
        // A release done once, then asked again after the commit: nothing changes.
        for _ in 0..2 {
            let back =
                repo.reserve_once("flow-1/release", &p, &d(&[("gigabytes", -3)]), later()).await.unwrap();
            repo.commit(&back).await.unwrap();
        }
        assert_eq!(gb(repo.clone(), p.clone()).await, (0, 0));
        let again =
            repo.reserve_once("flow-1/QuotaReserve", &p, &d(&[("gigabytes", 3)]), later()).await.unwrap();
        assert_eq!(again, ids[0]);
        assert_eq!(gb(repo.clone(), p.clone()).await, (0, 0), "a committed key reserves nothing again");
        // Keys are forgotten once twice their reservation's life has passed.
        let soon = Utc::now() + Duration::milliseconds(1);
        repo.reserve_once("flow-2/QuotaReserve", &p, &d(&[("volumes", 1)]), soon).await.unwrap();
        repo.expire_reservations(Utc::now() + Duration::hours(100)).await.unwrap();
        let fresh =
            repo.reserve_once("flow-1/QuotaReserve", &p, &d(&[("gigabytes", 3)]), later()).await.unwrap();
        assert_eq!(fresh, ids[0], "same key, same ids");
        assert_eq!(gb(repo.clone(), p.clone()).await, (0, 3), "a forgotten key reserves anew");
        // A revert that never saw the ids rolls the reservation back by its key, once.
        repo.rollback_once("flow-1/QuotaReserve").await.unwrap();
        repo.rollback_once("flow-1/QuotaReserve").await.unwrap();
        repo.rollback_once("flow-1/Quota").await.unwrap();
        assert_eq!(gb(repo.clone(), p.clone()).await, (0, 0));
        t.cleanup().await.unwrap();
    }
}
