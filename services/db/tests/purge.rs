//! Retention (`ember_db::purge`) on SQLite and, with EMBER_TEST_DATABASE_URL, PostgreSQL:
//! which flows and soft-deleted rows go, which stay, and batches larger than one.

use chrono::{Duration, Utc};

use ember_common::model::{DEFAULT_VOLUME_TYPE_ID, QuotaDefaults, Snapshot, Volume, VolumeType};
use ember_common::repo::{SnapshotRepo, VolumeRepo, VolumeTypeRepo};
use ember_db::purge::{self, BATCH};
use ember_db::testing::TestDb;
use ember_db::{Db, SqlRepo, with_pool};

fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn exec(db: &Db, sql: &str, args: &[&str], when: i64) {
    with_pool!(db, |pool| {
        let mut q = sqlx::query(sql).bind(when);
        for a in args {
            q = q.bind(*a);
        }
        q.execute(pool).await.unwrap();
    })
}

/// A flow in `state` about `subject`, last written `age` ago, with one atom.
async fn flow(db: &Db, state: &str, subject: Option<&str>, age: Duration) -> String {
    let flow_id = id();
    let at = (Utc::now() - age).timestamp_millis();
    let subject = subject.unwrap_or("");
    exec(
        db,
        "INSERT INTO flows (id, name, inputs, state, topic, subject, created_at, updated_at) \
         VALUES ($2, 'f', '{}', $3, 'api', NULLIF($4, ''), $1, $1)",
        &[&flow_id, state, subject],
        at,
    )
    .await;
    exec(
        db,
        "INSERT INTO flow_atoms (flow_id, name, kind, state, intention, created_at, updated_at) \
         VALUES ($2, 'T', 'TASK', 'SUCCESS', 'EXECUTE', $1, $1)",
        &[&flow_id],
        at,
    )
    .await;
    flow_id
}

async fn count(db: &Db, sql: &str) -> i64 {
    with_pool!(db, |pool| sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap())
}

async fn soft_delete(db: &Db, table: &str, id: &str, age: Duration) {
    let sql = format!("UPDATE {table} SET deleted = TRUE, deleted_at = $1 WHERE id = $2");
    exec(db, &sql, &[id], (Utc::now() - age).timestamp_millis()).await;
}

#[tokio::test]
async fn purges_finished_flows_of_gone_subjects_and_old_soft_deleted_rows() {
    for t in TestDb::all().await.unwrap() {
        let db = &t.db;
        let repo = SqlRepo::new(db.clone(), QuotaDefaults::default());
        let old = Duration::days(40);
        let used = repo.create_volume_type(&VolumeType::new(id(), "used")).await.unwrap();
        let free = repo.create_volume_type(&VolumeType::new(id(), "free")).await.unwrap();
        soft_delete(db, "volume_types", &used.id, old).await;
        soft_delete(db, "volume_types", &free.id, old).await;
        let live = repo.create_volume(&Volume::new(id(), "p", "u", 1, &used.id, "nova")).await.unwrap();
        let gone = repo
            .create_volume(&Volume::new(id(), "p", "u", 1, DEFAULT_VOLUME_TYPE_ID, "nova"))
            .await
            .unwrap();
        let recent = repo
            .create_volume(&Volume::new(id(), "p", "u", 1, DEFAULT_VOLUME_TYPE_ID, "nova"))
            .await
            .unwrap();
        let snap = repo
            .create_snapshot(&Snapshot::new(id(), "p", "u", &gone.id, DEFAULT_VOLUME_TYPE_ID, 1))
            .await
            .unwrap();
        soft_delete(db, "snapshots", &snap.id, old).await;
        soft_delete(db, "volumes", &gone.id, old).await;
        soft_delete(db, "volumes", &recent.id, Duration::days(1)).await;

        let of_gone = flow(db, "SUCCESS", Some(&gone.id), old).await;
        let reverted = flow(db, "REVERTED", None, old).await;
        let of_live = flow(db, "SUCCESS", Some(&live.id), old).await;
        let young = flow(db, "SUCCESS", Some(&gone.id), Duration::days(2)).await;
        let running = flow(db, "RUNNING", Some(&gone.id), old).await;
        let pending = flow(db, "PENDING", None, old).await;
        let suspended = flow(db, "SUSPENDED", None, old).await;

        let purged = purge::purge_flows(db, Utc::now() - Duration::days(30)).await.unwrap();
        assert_eq!(purged, 2, "{}", t.url);
        let left = |id: &str| format!("SELECT COUNT(*) FROM flows WHERE id = '{id}'");
        for (id, stays) in [
            (&of_gone, false),
            (&reverted, false),
            (&of_live, true),
            (&young, true),
            (&running, true),
            (&pending, true),
            (&suspended, true),
        ] {
            assert_eq!(count(db, &left(id)).await, i64::from(stays), "flow {id} on {}", t.url);
        }
        let atoms = format!("SELECT COUNT(*) FROM flow_atoms WHERE flow_id IN ('{of_gone}', '{reverted}')");
        assert_eq!(count(db, &atoms).await, 0, "their atoms go with them");

        let report = purge::purge_deleted(db, Utc::now() - Duration::days(30)).await.unwrap();
        assert_eq!(report.count("snapshots"), 1, "{report:?}");
        assert_eq!(report.count("volumes"), 1, "{report:?}");
        assert_eq!(report.count("volume_types"), 1, "a type a live volume uses stays: {report:?}");
        let volumes = count(db, "SELECT COUNT(*) FROM volumes").await;
        assert_eq!(volumes, 2, "the live and the recently deleted volume stay");
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn purges_more_than_one_batch() {
    let t = TestDb::sqlite().await.unwrap();
    let n = BATCH + 7;
    for _ in 0..n {
        flow(&t.db, "SUCCESS", None, Duration::days(3)).await;
    }
    let purged = purge::purge_flows(&t.db, Utc::now() - Duration::days(1)).await.unwrap();
    assert_eq!(purged, n as u64);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM flows").await, 0);
}
