//! Unit tests of the heartbeat timing, on an in-memory repository and paused tokio time (the
//! SQL repositories are exercised by `tests/registry.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use ember_common::model::{Service, ServiceFilter};
use ember_common::repo::ServiceRepo;
use ember_common::{Error as DomainError, ResourceKind};

use super::*;

/// Service rows in memory, keyed by (host, binary) as the table is.
#[derive(Default)]
struct MemRepo {
    rows: Mutex<Vec<Service>>,
}

#[async_trait]
impl ServiceRepo for MemRepo {
    async fn register_service(&self, service: &Service) -> ember_common::Result<Service> {
        let mut rows = self.rows.lock();
        match rows.iter_mut().find(|r| r.host == service.host && r.binary == service.binary) {
            Some(row) => {
                row.heartbeat_at = service.heartbeat_at;
                Ok(row.clone())
            }
            None => {
                rows.push(service.clone());
                Ok(service.clone())
            }
        }
    }

    async fn heartbeat(&self, id: &str, now: DateTime<Utc>) -> ember_common::Result<bool> {
        let mut rows = self.rows.lock();
        let Some(row) = rows.iter_mut().find(|r| r.id == id) else { return Ok(false) };
        row.heartbeat_at = now;
        row.report_count += 1;
        Ok(true)
    }

    async fn get_service(&self, host: &str, binary: &str) -> ember_common::Result<Service> {
        let rows = self.rows.lock();
        let row = rows.iter().find(|r| r.host == host && r.binary == binary);
        row.cloned().ok_or_else(|| DomainError::not_found(ResourceKind::Service, host))
    }

    async fn list_services(&self, _filter: &ServiceFilter) -> ember_common::Result<Vec<Service>> {
        Ok(self.rows.lock().clone())
    }

    async fn set_service_disabled(
        &self,
        _host: &str,
        _binary: &str,
        _disabled: bool,
        _reason: Option<&str>,
    ) -> ember_common::Result<bool> {
        Ok(false)
    }

    async fn delete_service(&self, id: &str) -> ember_common::Result<bool> {
        let mut rows = self.rows.lock();
        let before = rows.len();
        rows.retain(|r| r.id != id);
        Ok(rows.len() < before)
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeats_every_report_interval_until_stopped() {
    let repo = Arc::new(MemRepo::default());
    let clock = Clock::tokio();
    let registry = Registry::new(RegistryOptions::default(), repo.clone()).with_clock(clock.clone());
    let specs = vec![ServiceSpec::volume("node1", "fast", "nova"), ServiceSpec::scheduler("node1", "nova")];
    let handle = registry.clone().start(specs, CancellationToken::new()).await.unwrap();
    let hosts: Vec<_> = handle.services().into_iter().map(|s| (s.host, s.binary)).collect();
    assert_eq!(
        hosts,
        [("node1@fast".into(), "ember-volume".into()), ("node1".into(), "ember-scheduler".into())]
    );

    tokio::time::sleep(Duration::from_secs(35)).await;
    let row = repo.get_service("node1@fast", VOLUME_BINARY).await.unwrap();
    assert_eq!(row.report_count, 3, "beats at 10, 20 and 30 s");
    assert!(registry.is_up(&row));

    handle.stop().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let row = repo.get_service("node1@fast", VOLUME_BINARY).await.unwrap();
    assert_eq!(row.report_count, 3, "no beat after stop");
    assert!(registry.is_up(&row), "35 s of silence is within service_down_time");
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(!registry.is_up(&repo.get_service("node1@fast", VOLUME_BINARY).await.unwrap()));
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_token_stops_the_heartbeats() {
    let repo = Arc::new(MemRepo::default());
    let shutdown = CancellationToken::new();
    let registry = Registry::new(RegistryOptions::default(), repo.clone());
    let handle = registry.start(vec![ServiceSpec::backup("b1", "nova")], shutdown.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await;
    shutdown.cancel();
    handle.stop().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(repo.get_service("b1", BACKUP_BINARY).await.unwrap().report_count, 1);
}

#[tokio::test(start_paused = true)]
async fn a_removed_row_is_registered_again_on_the_next_heartbeat() {
    let repo = Arc::new(MemRepo::default());
    let registry = Registry::new(RegistryOptions::default(), repo.clone());
    let handle =
        registry.start(vec![ServiceSpec::api("a1", "nova")], CancellationToken::new()).await.unwrap();
    let first = handle.services()[0].id.clone();
    assert!(repo.delete_service(&first).await.unwrap());
    tokio::time::sleep(Duration::from_secs(11)).await;
    let row = repo.get_service("a1", API_BINARY).await.unwrap();
    assert_ne!(row.id, first);
    assert_eq!(handle.services()[0].id, row.id);
    handle.stop().await;
}

#[test]
fn a_down_time_shorter_than_the_heartbeat_is_raised_as_cinder_does() {
    let o = RegistryOptions { report_interval: 30, service_down_time: 20 };
    assert_eq!(o.service_down_time(), Duration::from_secs(75));
    assert_eq!(RegistryOptions::default().service_down_time(), Duration::from_secs(60));
}

#[test]
fn is_up_compares_the_last_heartbeat_with_the_down_time() {
    let t0 = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
    let mut row = ServiceSpec::scheduler("s", "nova").to_row(t0);
    let down = Duration::from_secs(60);
    assert!(is_up(&row, t0 + Duration::from_secs(60), down));
    assert!(!is_up(&row, t0 + Duration::from_millis(60_001), down));
    row.heartbeat_at = t0 + Duration::from_secs(100);
    assert!(is_up(&row, t0 + Duration::from_secs(120), down));
}
