//! Backends built from a TOML configuration (a file backend in a temporary directory and a
//! fake one), set up for real, and registered as service rows on SQLite and PostgreSQL.

mod common;

use std::path::Path;

use ember_common::capabilities::OverSubscription;
use ember_common::config::{Config, Overrides};
use ember_common::model::ServiceFilter;
use ember_db::testing::TestDb;
use ember_volume::{Backends, Error};
use tokio_util::sync::CancellationToken;

fn config(dir: &Path, extra_file_option: &str) -> Config {
    let text = format!(
        r#"
host = "node9"
data_dir = "{data}"
enabled_backends = ["files", "fast"]
storage_availability_zone = "az1"

[backends.files]
volume_driver = "file"
file_volume_format = "raw"
reserved_percentage = 5.0
{extra_file_option}

[backends.fast]
volume_driver = "fake"
fake_capacity_gb = 250.0
backend_availability_zone = "az2"
volume_backend_name = "fast-pool"
"#,
        data = dir.display()
    );
    let path = dir.join("ember.toml");
    std::fs::write(&path, text).unwrap();
    Config::load_without_env(Some(&path), &Overrides::default()).expect("a valid configuration")
}

#[tokio::test]
async fn backends_come_from_the_configuration_and_are_set_up() {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends::from_config(&config(dir.path(), "")).await.unwrap();
    assert_eq!(backends.len(), 2);
    assert!(dir.path().join("volumes/files").is_dir(), "do_setup made the file backend's directory");

    assert!(backends.driver("node9@files").is_some());
    assert!(backends.driver("node9@fast#fast-pool").is_some(), "a pool suffix is ignored");
    assert!(backends.driver("node9@file").is_none(), "the default section is not enabled");
    assert!(backends.driver("other@fast").is_none());

    let files = backends.driver("node9@files").unwrap().get_volume_stats(true).await.unwrap();
    assert_eq!(files.volume_backend_name, "files");
    let pool = &files.pools[0];
    assert_eq!(pool.pool_name, "files");
    assert_eq!(pool.reserved_percentage, 5.0);
    assert_eq!(pool.max_over_subscription_ratio, Some(OverSubscription::Ratio(20.0)));
    assert_eq!(pool.extra["volume_format"], "raw");

    let fast = backends.driver("node9@fast").unwrap().get_volume_stats(true).await.unwrap();
    assert_eq!(fast.volume_backend_name, "fast-pool");
    assert_eq!(
        (fast.pools[0].pool_name.as_str(), fast.pools[0].total_capacity_gb.gb()),
        ("fast-pool", Some(250.0))
    );
}

#[tokio::test]
async fn every_backend_registers_a_row_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends::from_config(&config(dir.path(), "")).await.unwrap();
    for t in TestDb::all().await.unwrap() {
        let repo = common::repo(&t);
        let registry = common::registry(repo.clone(), &common::clock());
        let handle =
            registry.clone().start(backends.service_specs(), CancellationToken::new()).await.unwrap();
        let rows = registry.list(&ServiceFilter::default()).await.unwrap();
        let rows: Vec<_> = rows
            .iter()
            .map(|(s, up)| {
                (s.host.as_str(), s.binary.as_str(), s.topic.as_str(), s.availability_zone.as_str(), *up)
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("node9@fast", "ember-volume", "ember-volume", "az2", true),
                ("node9@files", "ember-volume", "ember-volume", "az1", true),
            ]
        );
        handle.stop().await;
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn a_backend_that_cannot_be_set_up_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("occupied");
    std::fs::write(&not_a_dir, b"a file where the volumes should go").unwrap();
    let option = format!("file_volume_dir = \"{}\"", not_a_dir.display());
    let err = Backends::from_config(&config(dir.path(), &option)).await.unwrap_err();
    assert!(matches!(&err, Error::Driver { backend, .. } if backend == "node9@files"), "{err}");
}
