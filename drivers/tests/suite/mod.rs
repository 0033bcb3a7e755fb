//! The behaviour every `VolumeDriver` shares, checked through the trait alone, so the
//! same scenarios run on the fake and the file drivers.

use ember_drivers::{
    AccessMode, BackupSource, Connector, DriverError, DriverSnapshot, DriverVolume, GIB, VolumeDriver,
};

/// A fresh id, as the manager would give.
pub fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The pool's provisioned capacity in GiB, measured anew.
pub async fn provisioned(driver: &dyn VolumeDriver) -> f64 {
    let stats = driver.get_volume_stats(true).await.unwrap();
    assert_eq!(stats.pools.len(), 1);
    stats.pools[0].provisioned_capacity_gb.unwrap()
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, DriverError>) {
    assert!(matches!(result, Err(DriverError::NotFound { .. })), "expected NotFound, got {result:?}");
}

/// Create, snapshot, create from snapshot, clone, extend, delete: every call repeated,
/// as the flow engine repeats a step that was running at a crash.
pub async fn lifecycle(driver: &dyn VolumeDriver) {
    let base = provisioned(driver).await;
    let v1 = DriverVolume::new(id(), 1);
    let update = driver.create_volume(&v1).await.unwrap();
    assert_eq!(driver.create_volume(&v1).await.unwrap(), update, "a repeated create succeeds");
    let bigger = DriverVolume::new(v1.id.clone(), 2);
    let clash = driver.create_volume(&bigger).await;
    assert!(matches!(clash, Err(DriverError::AlreadyExists { .. })), "{clash:?}");

    let s1 = DriverSnapshot::new(id(), v1.id.clone(), 1);
    driver.create_snapshot(&s1).await.unwrap();
    driver.create_snapshot(&s1).await.unwrap();

    let mut v2 = DriverVolume::new(id(), 2);
    v2.snapshot_id = Some(s1.id.clone());
    driver.create_volume_from_snapshot(&v2, &s1).await.unwrap();
    driver.create_volume_from_snapshot(&v2, &s1).await.unwrap();

    let v3 = DriverVolume::new(id(), 1);
    driver.create_cloned_volume(&v3, &v1).await.unwrap();
    driver.create_cloned_volume(&v3, &v1).await.unwrap();

    driver.extend_volume(&v1, 3).await.unwrap();
    driver.extend_volume(&v1, 3).await.unwrap();
    driver.extend_volume(&v1, 2).await.unwrap();
    assert_eq!(provisioned(driver).await - base, 6.0, "3 + 2 + 1 GiB of volumes");

    // A clone smaller than its (now 3 GiB) source is refused.
    let small = driver.create_cloned_volume(&DriverVolume::new(id(), 1), &v1).await;
    assert!(matches!(small, Err(DriverError::InvalidInput(_))), "{small:?}");

    // The snapshot goes while v2 was made from it; v2 stays whole and usable.
    driver.delete_snapshot(&s1).await.unwrap();
    driver.delete_snapshot(&s1).await.unwrap();
    let s2 = DriverSnapshot::new(id(), v2.id.clone(), 2);
    driver.create_snapshot(&s2).await.unwrap();
    driver.delete_snapshot(&s2).await.unwrap();
    driver.extend_volume(&v2, 4).await.unwrap();

    for volume in [&v1, &v2, &v3] {
        driver.delete_volume(volume).await.unwrap();
        driver.delete_volume(volume).await.unwrap();
    }
    assert_eq!(provisioned(driver).await, base);
}

/// Operations on what does not exist say NotFound, except deletes, which succeed.
pub async fn missing(driver: &dyn VolumeDriver) {
    let ghost = DriverVolume::new(id(), 1);
    let ghost_snap = DriverSnapshot::new(id(), ghost.id.clone(), 1);
    driver.delete_volume(&ghost).await.unwrap();
    driver.delete_snapshot(&ghost_snap).await.unwrap();
    assert_not_found(driver.create_snapshot(&ghost_snap).await);
    assert_not_found(driver.create_volume_from_snapshot(&DriverVolume::new(id(), 1), &ghost_snap).await);
    assert_not_found(driver.create_cloned_volume(&DriverVolume::new(id(), 1), &ghost).await);
    assert_not_found(driver.extend_volume(&ghost, 2).await);
    assert_not_found(driver.initialize_connection(&ghost, &Connector::default(), AccessMode::Rw).await);
    assert_not_found(driver.export_for_backup(BackupSource::Volume(&ghost)).await);
    driver.terminate_connection(&ghost, &Connector::default(), AccessMode::Rw).await.unwrap();
    driver.remove_export(&ghost).await.unwrap();
}

/// A volume from a snapshot cannot be smaller than the snapshot.
pub async fn sizes(driver: &dyn VolumeDriver) {
    let v = DriverVolume::new(id(), 2);
    driver.create_volume(&v).await.unwrap();
    let s = DriverSnapshot::new(id(), v.id.clone(), 2);
    driver.create_snapshot(&s).await.unwrap();
    let small = driver.create_volume_from_snapshot(&DriverVolume::new(id(), 1), &s).await;
    assert!(matches!(small, Err(DriverError::InvalidInput(_))), "{small:?}");
    let zero = driver.create_volume(&DriverVolume::new(id(), 0)).await;
    assert!(zero.is_err(), "a volume of 0 GiB was created");
    driver.delete_snapshot(&s).await.unwrap();
    driver.delete_volume(&v).await.unwrap();
}

/// Exports are repeatable and their removal too; the same info comes back.
pub async fn connections(driver: &dyn VolumeDriver) {
    let v = DriverVolume::new(id(), 1);
    driver.create_volume(&v).await.unwrap();
    let connector = Connector { host: Some("compute-1".to_owned()), ..Connector::default() };
    let info = driver.initialize_connection(&v, &connector, AccessMode::Rw).await.unwrap();
    assert_eq!(driver.initialize_connection(&v, &connector, AccessMode::Rw).await.unwrap(), info);
    assert_eq!(driver.list_exports().await.unwrap(), vec![v.id.clone()]);
    driver.terminate_connection(&v, &connector, AccessMode::Rw).await.unwrap();
    driver.terminate_connection(&v, &connector, AccessMode::Rw).await.unwrap();
    driver.remove_export(&v).await.unwrap();
    driver.remove_export(&v).await.unwrap();
    assert!(driver.list_exports().await.unwrap().is_empty());
    driver.delete_volume(&v).await.unwrap();
}

/// A backup export has the volume's size and goes away when released.
pub async fn backup_exports(driver: &dyn VolumeDriver) {
    let v = DriverVolume::new(id(), 1);
    driver.create_volume(&v).await.unwrap();
    let export = driver.export_for_backup(BackupSource::Volume(&v)).await.unwrap();
    assert_eq!(export.size_bytes, GIB);
    let len = tokio::fs::metadata(&export.path).await.unwrap().len();
    assert_eq!(len, GIB);
    let path = export.path.clone();
    let temporary = export.temporary;
    driver.release_export(export).await.unwrap();
    assert_eq!(tokio::fs::try_exists(&path).await.unwrap(), !temporary);
    let target = driver.prepare_restore(&v).await.unwrap();
    assert_eq!(target.size_bytes, GIB);
    driver.commit_restore(&v, target).await.unwrap();
    driver.delete_volume(&v).await.unwrap();
}

/// Every shared scenario, in order.
pub async fn all(driver: &dyn VolumeDriver) {
    lifecycle(driver).await;
    missing(driver).await;
    sizes(driver).await;
    connections(driver).await;
    backup_exports(driver).await;
}
