//! Property test of the quota engine: random sequences of reserve, commit, rollback and
//! expire keep the stored usage equal to a model of Cinder's rules (in use = what was
//! committed, never below zero; reserved = pending positive deltas) and never over a limit.
//! Runs on SQLite and, with EMBER_TEST_DATABASE_URL, on PostgreSQL.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use ember_common::Error;
use ember_common::model::QuotaDefaults;
use ember_common::repo::QuotaRepo;
use ember_db::SqlRepo;
use ember_db::testing::TestDb;

const LIMITS: [(&str, i64); 2] = [("volumes", 5), ("gigabytes", 20)];

#[derive(Debug, Clone)]
enum Op {
    /// Reserve these deltas of volumes and gigabytes, expiring `expire` ms after the base time.
    Reserve {
        volumes: i64,
        gigabytes: i64,
        expire: i64,
    },
    /// Commit the pending reservation at this index (modulo the number pending).
    Commit(usize),
    Rollback(usize),
    /// Expire everything due `at` ms after the base time.
    Expire(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (-2i64..4, -8i64..12, 0i64..100).prop_map(|(volumes, gigabytes, expire)| Op::Reserve { volumes, gigabytes, expire }),
        2 => any::<usize>().prop_map(Op::Commit),
        1 => any::<usize>().prop_map(Op::Rollback),
        1 => (0i64..100).prop_map(Op::Expire),
    ]
}

/// What the engine should hold for one project.
#[derive(Debug, Default)]
struct Model {
    in_use: [i64; 2],
    /// Pending reservations: ids, deltas and expiry (ms after base).
    pending: Vec<(Vec<String>, [i64; 2], i64)>,
}

impl Model {
    fn reserved(&self) -> [i64; 2] {
        let mut r = [0, 0];
        for (_, deltas, _) in &self.pending {
            for (sum, delta) in r.iter_mut().zip(deltas) {
                *sum += delta.max(&0);
            }
        }
        r
    }

    fn would_exceed(&self, deltas: [i64; 2]) -> bool {
        let reserved = self.reserved();
        (0..2).any(|i| deltas[i] >= 0 && LIMITS[i].1 < deltas[i] + self.in_use[i] + reserved[i])
    }
}

async fn apply(
    repo: &SqlRepo,
    project: &str,
    base: DateTime<Utc>,
    model: &mut Model,
    op: &Op,
) -> Result<(), TestCaseError> {
    match *op {
        Op::Reserve { volumes, gigabytes, expire } => {
            let deltas = vec![("volumes".to_owned(), volumes), ("gigabytes".to_owned(), gigabytes)];
            let res = repo.reserve(project, &deltas, base + Duration::milliseconds(expire)).await;
            match res {
                Ok(ids) => {
                    prop_assert!(
                        !model.would_exceed([volumes, gigabytes]),
                        "reserve should have been refused"
                    );
                    model.pending.push((ids, [volumes, gigabytes], expire));
                }
                Err(Error::OverQuota(_)) => prop_assert!(model.would_exceed([volumes, gigabytes])),
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            }
        }
        Op::Commit(i) | Op::Rollback(i) if !model.pending.is_empty() => {
            let (ids, deltas, _) = model.pending.remove(i % model.pending.len());
            if let Op::Commit(_) = op {
                repo.commit(&ids).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                for (used, delta) in model.in_use.iter_mut().zip(deltas) {
                    *used = (*used + delta).max(0);
                }
            } else {
                repo.rollback(&ids).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
        Op::Commit(_) | Op::Rollback(_) => {}
        Op::Expire(at) => {
            repo.expire_reservations(base + Duration::milliseconds(at))
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            model.pending.retain(|(_, _, expire)| *expire > at);
        }
    }
    Ok(())
}

async fn check(repo: &SqlRepo, project: &str, model: &Model) -> Result<(), TestCaseError> {
    let set = repo.project_quotas(project).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    let reserved = model.reserved();
    for (i, (resource, limit)) in LIMITS.iter().enumerate() {
        let u = set.resources[*resource];
        prop_assert_eq!((u.in_use, u.reserved), (model.in_use[i], reserved[i]), "{}", resource);
        prop_assert!(u.in_use + u.reserved <= *limit, "{} over its limit: {:?}", resource, u);
    }
    Ok(())
}

#[test]
fn random_reserve_commit_rollback_expire_keep_usage_exact() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for t in rt.block_on(TestDb::all()).unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let config = Config { cases: 32, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
            rt.block_on(async {
                // A project per case, so the cases share one database without interfering. Cases
                // run one after another and each base time is later than the last, so an
                // Expire only reaches back to reservations of cases that are over.
                let project = uuid::Uuid::new_v4().to_string();
                let base = Utc::now();
                for (resource, limit) in LIMITS {
                    repo.set_project_quota(&project, resource, limit).await.unwrap();
                }
                let mut model = Model::default();
                for op in &ops {
                    apply(&repo, &project, base, &mut model, op).await?;
                    check(&repo, &project, &model).await?;
                }
                Ok(())
            })
        });
        if let Err(e) = result {
            panic!("{}: {e}", t.db.kind());
        }
        rt.block_on(t.cleanup()).unwrap();
    }
}
