//! The fake driver: the shared suite, capacity and failure injection.

mod suite;

use ember_drivers::{
    DriverError, DriverSnapshot, DriverVolume, FakeDriver, FakeOp, FakeOptions, VolumeDriver,
};

fn fake(capacity_gb: u64, scratch: &tempfile::TempDir) -> FakeDriver {
    FakeDriver::new(FakeOptions {
        capacity_gb,
        scratch_dir: Some(scratch.path().to_owned()),
        ..FakeOptions::default()
    })
}

#[tokio::test]
async fn passes_the_shared_suite() {
    let scratch = tempfile::tempdir().unwrap();
    let driver = fake(100, &scratch);
    driver.do_setup().await.unwrap();
    driver.check_for_setup_error().await.unwrap();
    suite::all(&driver).await;
    assert!(driver.volume_ids().is_empty());
    assert!(driver.snapshot_ids().is_empty());
}

#[tokio::test]
async fn fails_the_next_calls_then_recovers() {
    let scratch = tempfile::tempdir().unwrap();
    let driver = fake(100, &scratch);
    driver.fail_next(FakeOp::CreateVolume, 2);
    let v = DriverVolume::new(suite::id(), 1);
    for _ in 0..2 {
        let err = driver.create_volume(&v).await.unwrap_err();
        assert!(matches!(err, DriverError::Backend(_)) && err.is_reschedulable(), "{err:?}");
    }
    driver.create_volume(&v).await.unwrap();
    assert_eq!(driver.calls(FakeOp::CreateVolume), 3);
    assert_eq!(driver.volume_ids(), vec![v.id.clone()]);
}

#[tokio::test]
async fn fails_for_chosen_names_only() {
    let scratch = tempfile::tempdir().unwrap();
    let driver = fake(100, &scratch);
    let (bad, good) = (DriverVolume::new(suite::id(), 1), DriverVolume::new(suite::id(), 1));
    driver.fail_for(FakeOp::CreateVolume, &bad.name());
    driver.create_volume(&good).await.unwrap();
    assert!(driver.create_volume(&bad).await.is_err());
    assert!(driver.create_volume(&bad).await.is_err());
    let snap = DriverSnapshot::new(suite::id(), good.id.clone(), 1);
    driver.fail_for(FakeOp::CreateSnapshot, &snap.id);
    assert!(driver.create_snapshot(&snap).await.is_err());
    driver.clear_failures();
    driver.create_volume(&bad).await.unwrap();
    driver.create_snapshot(&snap).await.unwrap();
}

#[tokio::test]
async fn configured_failures_never_stop() {
    let driver =
        FakeDriver::new(FakeOptions { fail_always: vec![FakeOp::CreateVolume], ..FakeOptions::default() });
    let v = DriverVolume::new(suite::id(), 1);
    for _ in 0..3 {
        assert!(driver.create_volume(&v).await.is_err());
    }
    driver.clear_failures();
    assert!(driver.create_volume(&v).await.is_err());
    assert!(driver.volume_ids().is_empty());
}

#[tokio::test]
async fn runs_out_of_space() {
    let scratch = tempfile::tempdir().unwrap();
    let driver = fake(10, &scratch);
    let big = DriverVolume::new(suite::id(), 8);
    driver.create_volume(&big).await.unwrap();
    let err = driver.create_volume(&DriverVolume::new(suite::id(), 3)).await.unwrap_err();
    assert!(matches!(err, DriverError::NoSpace(_)), "{err:?}");
    assert!(matches!(driver.extend_volume(&big, 11).await, Err(DriverError::NoSpace(_))));
    let snap = DriverSnapshot::new(suite::id(), big.id.clone(), 8);
    assert!(matches!(driver.create_snapshot(&snap).await, Err(DriverError::NoSpace(_))));
    let pool = &driver.get_volume_stats(false).await.unwrap().pools[0];
    assert_eq!(pool.free_capacity_gb.gb(), Some(2.0));
    assert_eq!(pool.total_capacity_gb.gb(), Some(10.0));
}

#[tokio::test]
async fn backups_need_a_scratch_dir() {
    let driver = FakeDriver::new(FakeOptions::default());
    let v = DriverVolume::new(suite::id(), 1);
    driver.create_volume(&v).await.unwrap();
    let err = driver.export_for_backup(ember_drivers::BackupSource::Volume(&v)).await.unwrap_err();
    assert!(matches!(err, DriverError::NotSupported(_)), "{err:?}");
}
