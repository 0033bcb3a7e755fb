//! The service registry on the real SQL repositories (SQLite always, PostgreSQL where
//! `EMBER_TEST_DATABASE_URL` is set), with a manual clock so that up and down are exact.

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use tokio_util::sync::CancellationToken;

use ember_common::model::{QuotaDefaults, ServiceFilter};
use ember_common::repo::ServiceRepo;
use ember_db::SqlRepo;
use ember_db::testing::TestDb;
use ember_rpc::registry::{SCHEDULER_BINARY, VOLUME_BINARY};
use ember_rpc::{Clock, Registry, RegistryOptions, ServiceSpec};

/// Heartbeats are driven by hand; the loop's period is far beyond the test.
fn options() -> RegistryOptions {
    RegistryOptions { report_interval: 3600, service_down_time: 7200 }
}

fn clock() -> Clock {
    Clock::manual(DateTime::from_timestamp_millis(1_700_000_000_000).unwrap())
}

#[tokio::test]
async fn rows_heartbeat_and_go_down_when_silent() {
    for t in TestDb::all().await.unwrap() {
        let repo = Arc::new(SqlRepo::new(t.db.clone(), QuotaDefaults::default()));
        let clock = clock();
        let opts = RegistryOptions { report_interval: 3600, service_down_time: 7200 };
        let registry = Registry::new(opts, repo.clone()).with_clock(clock.clone());
        let specs = [
            ServiceSpec::volume("node1", "fast", "az1"),
            ServiceSpec::volume("node1", "slow", "az2"),
            ServiceSpec::scheduler("node1", "az1").with_rpc_version("3.12"),
        ];
        let volumes = registry.clone().start(specs[..2].to_vec(), CancellationToken::new()).await.unwrap();
        let scheduler = registry.clone().start(specs[2..].to_vec(), CancellationToken::new()).await.unwrap();

        let vol_filter = ServiceFilter { binary: Some(VOLUME_BINARY.into()), ..ServiceFilter::default() };
        let listed = registry.list(&vol_filter).await.unwrap();
        let hosts: Vec<_> =
            listed.iter().map(|(s, up)| (s.host.as_str(), s.availability_zone.as_str(), *up)).collect();
        assert_eq!(hosts, [("node1@fast", "az1", true), ("node1@slow", "az2", true)]);
        let sched = repo.get_service("node1", SCHEDULER_BINARY).await.unwrap();
        assert_eq!(
            (sched.topic.as_str(), sched.rpc_current_version.as_deref()),
            ("ember-scheduler", Some("3.12"))
        );

        // Only the volume services keep beating; past the down time the scheduler is down.
        clock.advance(Duration::from_secs(7000));
        volumes.heartbeat_now().await.unwrap();
        clock.advance(Duration::from_secs(201));
        let all = registry.list(&ServiceFilter::default()).await.unwrap();
        let up: Vec<_> = all.iter().map(|(s, up)| (s.host.as_str(), s.binary.as_str(), *up)).collect();
        assert_eq!(
            up,
            [
                ("node1", SCHEDULER_BINARY, false),
                ("node1@fast", VOLUME_BINARY, true),
                ("node1@slow", VOLUME_BINARY, true)
            ]
        );
        assert_eq!(repo.get_service("node1@fast", VOLUME_BINARY).await.unwrap().report_count, 1);
        volumes.stop().await;
        scheduler.stop().await;
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn a_restarted_service_keeps_its_row_and_disabled_flag() {
    for t in TestDb::all().await.unwrap() {
        let repo = Arc::new(SqlRepo::new(t.db.clone(), QuotaDefaults::default()));
        let clock = clock();
        let registry = Registry::new(options(), repo.clone()).with_clock(clock.clone());
        let spec = vec![ServiceSpec::volume("node2", "file", "nova")];
        let first = registry.clone().start(spec.clone(), CancellationToken::new()).await.unwrap();
        let id = first.services()[0].id.clone();
        first.stop().await;
        assert!(
            repo.set_service_disabled("node2@file", VOLUME_BINARY, true, Some("maintenance")).await.unwrap()
        );

        clock.advance(Duration::from_secs(9000));
        let second = registry.clone().start(spec, CancellationToken::new()).await.unwrap();
        let row = &second.services()[0];
        assert_eq!(row.id, id);
        assert!(row.disabled);
        assert_eq!(row.disabled_reason.as_deref(), Some("maintenance"));
        assert!(registry.is_up(row), "registration counts as a heartbeat");
        second.stop().await;
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn a_deleted_row_comes_back_on_the_next_heartbeat() {
    for t in TestDb::all().await.unwrap() {
        let repo = Arc::new(SqlRepo::new(t.db.clone(), QuotaDefaults::default()));
        let registry = Registry::new(options(), repo.clone()).with_clock(clock());
        let handle = registry
            .start(vec![ServiceSpec::backup("node3", "nova")], CancellationToken::new())
            .await
            .unwrap();
        let id = handle.services()[0].id.clone();
        assert!(repo.delete_service(&id).await.unwrap());
        handle.heartbeat_now().await.unwrap();
        let row = repo.get_service("node3", "ember-backup").await.unwrap();
        assert_ne!(row.id, id);
        assert_eq!(handle.services()[0].id, row.id);
        handle.stop().await;
        t.cleanup().await.unwrap();
    }
}
