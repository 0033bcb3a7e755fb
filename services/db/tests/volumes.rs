//! The volume repository on SQLite and, with EMBER_TEST_DATABASE_URL, on PostgreSQL:
//! rows, metadata, filters, pagination and compare-and-swap updates under races.

use std::collections::BTreeMap;
use std::sync::Arc;

use ember_common::model::{
    AttachStatus, DEFAULT_VOLUME_TYPE_ID, ListOptions, QuotaDefaults, Snapshot, SnapshotChanges,
    SnapshotStatus, SnapshotsExpect, SortDir, SortKey, Volume, VolumeChanges, VolumeExpect, VolumeFilter,
    VolumeStatus,
};
use ember_common::repo::{MetadataKind, SnapshotRepo, VolumeRepo};
use ember_common::{Error, ResourceKind};
use ember_db::SqlRepo;
use ember_db::testing::TestDb;

fn volume(project: &str, name: &str, size: i64) -> Volume {
    let mut v =
        Volume::new(uuid::Uuid::new_v4().to_string(), project, "user", size, DEFAULT_VOLUME_TYPE_ID, "nova");
    v.name = Some(name.to_owned());
    v
}

#[tokio::test]
async fn volumes_round_trip_with_metadata() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let mut v = volume("p1", "vol", 3);
        v.metadata.insert("k".into(), "v".into());
        v.admin_metadata.insert("readonly".into(), "False".into());
        v.bootable = true;
        v.shared_targets = Some(false);
        let created = repo.create_volume(&v).await.unwrap();
        // Timestamps are stored in milliseconds.
        let mut expected = v.clone();
        expected.created_at =
            chrono::DateTime::from_timestamp_millis(v.created_at.timestamp_millis()).unwrap();
        assert_eq!(created, expected, "{}", t.db.kind());
        assert_eq!(
            repo.create_volume(&v).await.unwrap_err(),
            Error::Duplicate { kind: ResourceKind::Volume, id: v.id.clone() }
        );
        let meta = repo
            .set_volume_metadata(
                &v.id,
                MetadataKind::User,
                &BTreeMap::from([("a".into(), "1".into())]),
                false,
            )
            .await
            .unwrap();
        assert_eq!(meta.len(), 2);
        let meta = repo
            .set_volume_metadata(&v.id, MetadataKind::User, &BTreeMap::from([("a".into(), "2".into())]), true)
            .await
            .unwrap();
        assert_eq!(meta, BTreeMap::from([("a".into(), "2".into())]));
        assert!(repo.delete_volume_metadata(&v.id, MetadataKind::User, "a").await.unwrap());
        assert!(!repo.delete_volume_metadata(&v.id, MetadataKind::User, "a").await.unwrap());
        assert_eq!(repo.get_volume(&v.id).await.unwrap().admin_metadata.len(), 1);
        assert!(matches!(repo.get_volume("nope").await, Err(Error::NotFound { .. })));
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn cas_updates_name_what_they_expect() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let v = repo.create_volume(&volume("p1", "vol", 1)).await.unwrap();
        let to_available = VolumeChanges {
            status: Some(VolumeStatus::Available),
            host: Some(Some("node1@file#pool".into())),
            ..VolumeChanges::default()
        };
        let won = repo
            .update_volume(&v.id, &VolumeExpect::status_in(&[VolumeStatus::Creating]), &to_available)
            .await
            .unwrap()
            .expect("creating -> available wins");
        assert_eq!(won.status, VolumeStatus::Available);
        assert_eq!(won.host.as_deref(), Some("node1@file#pool"));
        assert!(won.updated_at.is_some());
        // The same expectation fails now that the status moved on.
        let lost = repo
            .update_volume(&v.id, &VolumeExpect::status_in(&[VolumeStatus::Creating]), &to_available)
            .await;
        assert_eq!(lost.unwrap(), None);
        // previous_status takes the status from before the update.
        let extend = VolumeChanges {
            status: Some(VolumeStatus::Extending),
            previous_status_from_status: true,
            ..VolumeChanges::default()
        };
        let expect = VolumeExpect::status_in(&[VolumeStatus::Available]).not_migrating();
        let ext = repo.update_volume(&v.id, &expect, &extend).await.unwrap().unwrap();
        assert_eq!(ext.previous_status.as_deref(), Some("available"));
        assert_eq!(ext.status, VolumeStatus::Extending);
        // Other columns are conditions too.
        let wrong_attach =
            VolumeExpect { attach_status: Some(vec![AttachStatus::Attached]), ..VolumeExpect::default() };
        assert_eq!(repo.update_volume(&v.id, &wrong_attach, &extend).await.unwrap(), None);
        let wrong_host = VolumeExpect { host: Some(None), ..VolumeExpect::default() };
        assert_eq!(repo.update_volume(&v.id, &wrong_host, &extend).await.unwrap(), None);
        // Soft delete is a CAS as well, and hides the row.
        assert!(
            !repo.soft_delete_volume(&v.id, &VolumeExpect::status_in(VolumeStatus::DELETABLE)).await.unwrap()
        );
        assert!(
            repo.soft_delete_volume(&v.id, &VolumeExpect::status_in(&[VolumeStatus::Extending]))
                .await
                .unwrap()
        );
        assert!(matches!(repo.get_volume(&v.id).await, Err(Error::NotFound { .. })));
        assert_eq!(repo.update_volume(&v.id, &VolumeExpect::default(), &extend).await.unwrap(), None);
        let all = VolumeFilter { include_deleted: true, ..VolumeFilter::default() };
        let gone = repo.list_volumes(&all, &ListOptions::default()).await.unwrap();
        assert_eq!(gone[0].status, VolumeStatus::Deleted);
        assert!(gone[0].deleted && gone[0].deleted_at.is_some() && gone[0].terminated_at.is_some());
        t.cleanup().await.unwrap();
    }
}

/// Sets the status of snapshot `id` whatever it was.
async fn set_snapshot_status(repo: &SqlRepo, id: &str, status: SnapshotStatus) {
    let changes = SnapshotChanges { status: Some(status), ..SnapshotChanges::default() };
    repo.update_snapshot(id, &[], &changes).await.unwrap().unwrap();
}

/// The status of volume `id` and of its snapshots `snaps`.
async fn statuses(repo: &SqlRepo, id: &str, snaps: &[String]) -> (VolumeStatus, Vec<SnapshotStatus>) {
    let volume = repo.get_volume(id).await.unwrap().status;
    let mut out = Vec::new();
    for s in snaps {
        out.push(repo.get_snapshot(s).await.unwrap().status);
    }
    (volume, out)
}

#[tokio::test]
async fn a_cascade_swap_moves_the_volume_and_its_snapshots_or_nothing() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let v = repo.create_volume(&volume("p1", "vol", 2)).await.unwrap();
        repo.update_volume(&v.id, &VolumeExpect::default(), &VolumeChanges::status(VolumeStatus::Available))
            .await
            .unwrap()
            .unwrap();
        let mut snaps = Vec::new();
        for (i, status) in [SnapshotStatus::Available, SnapshotStatus::Error, SnapshotStatus::Creating]
            .into_iter()
            .enumerate()
        {
            let mut s = Snapshot::new(format!("snap-{i}"), "p1", "user", &v.id, DEFAULT_VOLUME_TYPE_ID, 2);
            s.metadata.insert("n".into(), i.to_string());
            repo.create_snapshot(&s).await.unwrap();
            set_snapshot_status(&repo, &s.id, status).await;
            snaps.push(s.id);
        }
        let other = repo.create_volume(&volume("p1", "other", 1)).await.unwrap();
        let untouched = Snapshot::new("snap-other", "p1", "user", &other.id, DEFAULT_VOLUME_TYPE_ID, 1);
        repo.create_snapshot(&untouched).await.unwrap();
        set_snapshot_status(&repo, &untouched.id, SnapshotStatus::Available).await;

        let expect = VolumeExpect::status_in(VolumeStatus::DELETABLE);
        let changes = VolumeChanges::status(VolumeStatus::Deleting);
        let deletable = SnapshotsExpect { status: SnapshotStatus::DELETABLE.to_vec(), project_id: None };
        let to_deleting = SnapshotChanges { status: Some(SnapshotStatus::Deleting), ..Default::default() };
        let cascade = |snapshots: SnapshotsExpect| {
            let (repo, expect, changes, to_deleting, id) = (&repo, &expect, &changes, &to_deleting, &v.id);
            async move { repo.update_volume_cascade(id, expect, changes, &snapshots, to_deleting).await.unwrap() }
        };
        let unchanged = || statuses(&repo, &v.id, &snaps);
        let before = unchanged().await;
        // A snapshot in a transitional status refuses the whole swap.
        assert_eq!(cascade(deletable.clone()).await, None, "{}", t.db.kind());
        assert_eq!(unchanged().await, before);
        // So does a snapshot of another project, for a non-admin.
        set_snapshot_status(&repo, &snaps[2], SnapshotStatus::Available).await;
        let before = unchanged().await;
        let own = SnapshotsExpect { project_id: Some("p2".into()), ..deletable.clone() };
        assert_eq!(cascade(own).await, None);
        assert_eq!(unchanged().await, before);
        // And a volume that does not match.
        let busy = VolumeExpect::status_in(&[VolumeStatus::InUse]);
        let lost = repo.update_volume_cascade(&v.id, &busy, &changes, &deletable, &to_deleting).await;
        assert_eq!(lost.unwrap(), None);
        assert_eq!(unchanged().await, before);
        // Now every snapshot is deletable: all move together.
        let (vol, moved) = cascade(deletable.clone()).await.expect("the cascade swap wins");
        assert_eq!(vol.status, VolumeStatus::Deleting);
        assert_eq!(moved.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), snaps);
        assert!(moved.iter().all(|s| s.status == SnapshotStatus::Deleting && s.metadata.len() == 1));
        assert_eq!(repo.get_snapshot(&untouched.id).await.unwrap().status, SnapshotStatus::Available);
        // The volume is no longer deletable: a second swap loses.
        assert_eq!(cascade(deletable.clone()).await, None);
        // An admin's force accepts any snapshot status; a volume without snapshots moves alone.
        let forced = SnapshotsExpect::default();
        let any = VolumeExpect::default();
        let (vol, moved) =
            repo.update_volume_cascade(&v.id, &any, &changes, &forced, &to_deleting).await.unwrap().unwrap();
        assert_eq!((vol.status, moved.len()), (VolumeStatus::Deleting, 3));
        let (_, none) = repo
            .update_volume_cascade(&other.id, &any, &changes, &forced, &to_deleting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(none.len(), 1, "the other volume's own snapshot");
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn twenty_concurrent_cas_updates_have_one_winner() {
    for t in TestDb::all().await.unwrap() {
        let repo = Arc::new(SqlRepo::new(t.db.clone(), QuotaDefaults::default()));
        let v = repo.create_volume(&volume("p1", "vol", 1)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let repo = repo.clone();
            let id = v.id.clone();
            tasks.push(tokio::spawn(async move {
                let changes = VolumeChanges {
                    status: Some(VolumeStatus::Available),
                    host: Some(Some(format!("node{i}@file"))),
                    ..VolumeChanges::default()
                };
                repo.update_volume(&id, &VolumeExpect::status_in(&[VolumeStatus::Creating]), &changes)
                    .await
                    .unwrap()
                    .map(|v| v.host)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(host) = task.await.unwrap() {
                winners.push(host);
            }
        }
        assert_eq!(winners.len(), 1, "{}: exactly one CAS wins", t.db.kind());
        assert_eq!(repo.get_volume(&v.id).await.unwrap().host, winners[0]);
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn lists_filter_sort_and_paginate() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let mut ids = Vec::new();
        for i in 0..7 {
            let mut v = volume(if i % 2 == 0 { "p1" } else { "p2" }, &format!("vol-{}", i % 3), i + 1);
            v.created_at += chrono::Duration::milliseconds(i);
            v.bootable = i == 3;
            if i == 4 {
                v.metadata.insert("tier".into(), "gold".into());
            }
            ids.push(repo.create_volume(&v).await.unwrap().id);
        }
        let f = |p: Option<&str>| VolumeFilter { project_id: p.map(String::from), ..VolumeFilter::default() };
        let all = repo.list_volumes(&f(None), &ListOptions::default()).await.unwrap();
        // The default order is created_at descending.
        assert_eq!(
            all.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
            ids.iter().rev().cloned().collect::<Vec<_>>()
        );
        assert_eq!(repo.list_volumes(&f(Some("p1")), &ListOptions::default()).await.unwrap().len(), 4);
        let named = VolumeFilter { name: Some("vol-1".into()), ..VolumeFilter::default() };
        assert_eq!(repo.list_volumes(&named, &ListOptions::default()).await.unwrap().len(), 2);
        let boot = VolumeFilter { bootable: Some(true), ..VolumeFilter::default() };
        assert_eq!(repo.list_volumes(&boot, &ListOptions::default()).await.unwrap()[0].id, ids[3]);
        let meta = VolumeFilter { metadata: vec![("tier".into(), "gold".into())], ..VolumeFilter::default() };
        assert_eq!(repo.list_volumes(&meta, &ListOptions::default()).await.unwrap()[0].id, ids[4]);
        let like = VolumeFilter { name_like: Some("l-2".into()), ..VolumeFilter::default() };
        assert_eq!(repo.list_volumes(&like, &ListOptions::default()).await.unwrap().len(), 2);
        assert_eq!(repo.volume_summary(&f(Some("p2"))).await.unwrap(), (3, 2 + 4 + 6));
        // Pages by name then size, ascending, three at a time, cover everything once in order.
        let sort = vec![(SortKey::Name, SortDir::Asc), (SortKey::Size, SortDir::Desc)];
        let mut seen = Vec::new();
        let mut marker = None;
        loop {
            let opts =
                ListOptions { limit: Some(3), marker: marker.clone(), sort: sort.clone(), offset: None };
            let page = repo.list_volumes(&f(None), &opts).await.unwrap();
            if page.is_empty() {
                break;
            }
            marker = page.last().map(|v| v.id.clone());
            seen.extend(page.into_iter().map(|v| (v.name.unwrap(), v.size)));
        }
        let mut expected = seen.clone();
        expected.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        assert_eq!(seen, expected);
        assert_eq!(seen.len(), 7);
        let skip = ListOptions { offset: Some(5), sort: sort.clone(), ..ListOptions::default() };
        let rest = repo.list_volumes(&f(None), &skip).await.unwrap();
        assert_eq!(rest.into_iter().map(|v| (v.name.unwrap(), v.size)).collect::<Vec<_>>(), expected[5..]);
        let bad_marker = ListOptions { marker: Some("nope".into()), ..ListOptions::default() };
        assert!(matches!(repo.list_volumes(&f(None), &bad_marker).await, Err(Error::NotFound { .. })));
        t.cleanup().await.unwrap();
    }
}
