//! Volume types, snapshots, backups, attachments and services on SQLite and, with
//! EMBER_TEST_DATABASE_URL, on PostgreSQL.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};

use ember_common::model::{
    AttachStatus, AttachmentChanges, AttachmentFilter, Backup, BackupChanges, BackupFilter, BackupStatus,
    DEFAULT_VOLUME_TYPE_ID, DEFAULT_VOLUME_TYPE_NAME, ListOptions, QuotaDefaults, Service, ServiceFilter,
    Snapshot, SnapshotChanges, SnapshotFilter, SnapshotStatus, SortDir, SortKey, Volume, VolumeAttachment,
    VolumeExpect, VolumeStatus, VolumeType,
};
use ember_common::repo::{AttachmentRepo, BackupRepo, ServiceRepo, SnapshotRepo, VolumeRepo, VolumeTypeRepo};
use ember_common::{Error, ResourceKind};
use ember_db::SqlRepo;
use ember_db::testing::TestDb;

fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn new_volume(repo: &SqlRepo, type_id: &str) -> Volume {
    repo.create_volume(&Volume::new(id(), "p1", "u1", 1, type_id, "nova")).await.unwrap()
}

#[tokio::test]
async fn volume_types_and_extra_specs() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let default = repo.get_volume_type_by_name(DEFAULT_VOLUME_TYPE_NAME).await.unwrap();
        assert_eq!(default.id, DEFAULT_VOLUME_TYPE_ID, "the migration creates __DEFAULT__ with its fixed id");
        let mut gold = VolumeType::new(id(), "gold");
        gold.extra_specs.insert("volume_backend_name".into(), "file".into());
        gold.extra_specs.insert("multiattach".into(), "<is> True".into());
        let gold = repo.create_volume_type(&gold).await.unwrap();
        assert!(gold.multiattach());
        let dup = repo.create_volume_type(&VolumeType::new(id(), "gold")).await.unwrap_err();
        assert!(matches!(dup, Error::Duplicate { kind: ResourceKind::VolumeType, .. }));
        let mut private = VolumeType::new(id(), "private");
        private.is_public = false;
        repo.create_volume_type(&private).await.unwrap();
        assert_eq!(repo.list_volume_types(Some("p1")).await.unwrap().len(), 2);
        assert_eq!(repo.list_volume_types(None).await.unwrap().len(), 3);
        repo.add_volume_type_access(&private.id, "p1").await.unwrap();
        assert!(matches!(repo.add_volume_type_access(&private.id, "p1").await, Err(Error::Duplicate { .. })));
        assert_eq!(repo.list_volume_types(Some("p1")).await.unwrap().len(), 3);
        assert_eq!(repo.list_volume_types(Some("p2")).await.unwrap().len(), 2);
        assert_eq!(repo.volume_type_access(&private.id).await.unwrap(), ["p1"]);
        assert!(repo.remove_volume_type_access(&private.id, "p1").await.unwrap());
        assert!(!repo.remove_volume_type_access(&private.id, "p1").await.unwrap());
        repo.set_extra_specs(&gold.id, &BTreeMap::from([("k".into(), "v".into())])).await.unwrap();
        assert!(repo.delete_extra_spec(&gold.id, "multiattach").await.unwrap());
        let gold = repo.get_volume_type(&gold.id).await.unwrap();
        assert_eq!(gold.extra_specs.keys().collect::<Vec<_>>(), ["k", "volume_backend_name"]);
        let renamed =
            repo.update_volume_type(&gold.id, Some("platinum"), Some(Some("shiny")), None).await.unwrap();
        assert_eq!((renamed.name.as_str(), renamed.description.as_deref()), ("platinum", Some("shiny")));
        // A type in use cannot be deleted; once its volume is gone it can, and its name is free.
        let v = new_volume(&repo, &gold.id).await;
        assert!(repo.volume_type_in_use(&gold.id).await.unwrap());
        assert!(matches!(repo.delete_volume_type(&gold.id).await, Err(Error::Invalid(_))));
        assert!(repo.soft_delete_volume(&v.id, &VolumeExpect::default()).await.unwrap());
        repo.delete_volume_type(&gold.id).await.unwrap();
        assert!(matches!(repo.get_volume_type(&gold.id).await, Err(Error::NotFound { .. })));
        repo.create_volume_type(&VolumeType::new(id(), "platinum")).await.unwrap();
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn snapshots_and_the_volume_delete_guard() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let v = new_volume(&repo, DEFAULT_VOLUME_TYPE_ID).await;
        let mut s = Snapshot::new(id(), "p1", "u1", &v.id, DEFAULT_VOLUME_TYPE_ID, 1);
        s.metadata.insert("a".into(), "1".into());
        let s = repo.create_snapshot(&s).await.unwrap();
        assert_eq!(s.metadata["a"], "1");
        // Cinder's delete: no live snapshots.
        let guard = VolumeExpect { no_snapshots: true, ..VolumeExpect::default() };
        assert!(!repo.soft_delete_volume(&v.id, &guard).await.unwrap());
        let done = SnapshotChanges {
            status: Some(SnapshotStatus::Available),
            progress: Some(Some("100%".into())),
            ..SnapshotChanges::default()
        };
        let won = repo.update_snapshot(&s.id, &[SnapshotStatus::Creating], &done).await.unwrap().unwrap();
        assert_eq!((won.status, won.progress.as_deref()), (SnapshotStatus::Available, Some("100%")));
        assert_eq!(repo.update_snapshot(&s.id, &[SnapshotStatus::Creating], &done).await.unwrap(), None);
        let filter = SnapshotFilter { volume_id: Some(v.id.clone()), ..SnapshotFilter::default() };
        assert_eq!(repo.list_snapshots(&filter, &ListOptions::default()).await.unwrap().len(), 1);
        let by_meta =
            SnapshotFilter { metadata: vec![("a".into(), "2".into())], ..SnapshotFilter::default() };
        assert!(repo.list_snapshots(&by_meta, &ListOptions::default()).await.unwrap().is_empty());
        let meta = repo
            .set_snapshot_metadata(&s.id, &BTreeMap::from([("b".into(), "2".into())]), true)
            .await
            .unwrap();
        assert_eq!(meta.len(), 1);
        assert!(!repo.soft_delete_snapshot(&s.id, &[SnapshotStatus::Error]).await.unwrap());
        assert!(repo.soft_delete_snapshot(&s.id, &[SnapshotStatus::Available]).await.unwrap());
        assert!(matches!(repo.get_snapshot(&s.id).await, Err(Error::NotFound { .. })));
        assert!(repo.soft_delete_volume(&v.id, &guard).await.unwrap());
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn backups_keep_their_dependent_counts() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let v = new_volume(&repo, DEFAULT_VOLUME_TYPE_ID).await;
        let mut full = Backup::new(id(), "p1", "u1", &v.id, 1);
        full.metadata.insert("k".into(), "v".into());
        let full = repo.create_backup(&full).await.unwrap();
        assert_eq!(full.metadata["k"], "v");
        let mut incr = Backup::new(id(), "p1", "u1", &v.id, 1);
        incr.parent_id = Some(full.id.clone());
        let incr = repo.create_backup(&incr).await.unwrap();
        assert!(incr.is_incremental());
        assert_eq!(repo.get_backup(&full.id).await.unwrap().num_dependent_backups, 1);
        let ok = BackupChanges {
            status: Some(BackupStatus::Available),
            object_count: Some(3),
            ..BackupChanges::default()
        };
        for b in [&full, &incr] {
            assert!(repo.update_backup(&b.id, &[BackupStatus::Creating], &ok).await.unwrap().is_some());
        }
        let deletable = [BackupStatus::Available, BackupStatus::Error];
        assert!(!repo.soft_delete_backup(&full.id, &deletable).await.unwrap(), "a parent with a child stays");
        assert!(repo.soft_delete_backup(&incr.id, &deletable).await.unwrap());
        assert_eq!(repo.get_backup(&full.id).await.unwrap().num_dependent_backups, 0);
        assert!(repo.soft_delete_backup(&full.id, &deletable).await.unwrap());
        let live = repo.list_backups(&BackupFilter::default(), &ListOptions::default()).await.unwrap();
        assert!(live.is_empty());
        let mut orphan = Backup::new(id(), "p1", "u1", &v.id, 1);
        orphan.parent_id = Some(full.id.clone());
        assert!(matches!(repo.create_backup(&orphan).await, Err(Error::NotFound { .. })));
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn attachments_carry_connector_and_connection_info() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let v = new_volume(&repo, DEFAULT_VOLUME_TYPE_ID).await;
        let a = VolumeAttachment::reserved(id(), &v.id, "p1", Some("instance-1".into()));
        let a = repo.create_attachment(&a).await.unwrap();
        let connector = serde_json::json!({"host": "node1", "initiator": "iqn.x"});
        let info = serde_json::json!({"driver_volume_type": "nbd", "data": {"port": 10809}});
        let attaching = AttachmentChanges {
            attach_status: Some(AttachStatus::Attaching),
            connector: Some(Some(connector.clone())),
            connection_info: Some(Some(info.clone())),
            attached_host: Some(Some("node1".into())),
            ..AttachmentChanges::default()
        };
        let got =
            repo.update_attachment(&a.id, &[AttachStatus::Reserved], &attaching).await.unwrap().unwrap();
        assert_eq!((got.connector, got.connection_info), (Some(connector), Some(info)));
        assert_eq!(repo.update_attachment(&a.id, &[AttachStatus::Reserved], &attaching).await.unwrap(), None);
        assert_eq!(repo.list_attachments(Some(&v.id), None).await.unwrap().len(), 1);
        let guard =
            VolumeExpect { no_attachments: true, ..VolumeExpect::status_in(&[VolumeStatus::Creating]) };
        assert!(!repo.soft_delete_volume(&v.id, &guard).await.unwrap());
        assert!(repo.soft_delete_attachment(&a.id).await.unwrap());
        assert!(!repo.soft_delete_attachment(&a.id).await.unwrap());
        assert!(repo.list_attachments(Some(&v.id), None).await.unwrap().is_empty());
        assert!(repo.soft_delete_volume(&v.id, &guard).await.unwrap());
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn services_register_heartbeat_and_disable() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        // Stored timestamps have millisecond precision.
        let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        let mut s = Service {
            id: id(),
            host: "node1@file".into(),
            binary: "ember-volume".into(),
            topic: "ember-volume".into(),
            availability_zone: "nova".into(),
            disabled: false,
            disabled_reason: None,
            frozen: false,
            cluster_name: None,
            report_count: 0,
            version: "0.1.0".into(),
            rpc_current_version: Some("1.0".into()),
            heartbeat_at: now,
            created_at: now,
        };
        let first = repo.register_service(&s).await.unwrap();
        assert!(repo.set_service_disabled(&s.host, &s.binary, true, Some("maintenance")).await.unwrap());
        // A restart registers again under a new id: the row, its id and the disabled flag stay.
        let original_id = s.id.clone();
        s.id = id();
        s.version = "0.2.0".into();
        let again = repo.register_service(&s).await.unwrap();
        assert_eq!(again.id, original_id);
        assert_eq!(again.version, "0.2.0");
        assert!(again.disabled);
        assert_eq!(again.disabled_reason.as_deref(), Some("maintenance"));
        let later = now + Duration::seconds(30);
        assert!(repo.heartbeat(&first.id, later).await.unwrap());
        let got = repo.get_service("node1@file", "ember-volume").await.unwrap();
        assert_eq!(got.report_count, 1);
        assert!(got.is_up(later + Duration::seconds(60), Duration::seconds(60)));
        assert!(!got.is_up(later + Duration::seconds(61), Duration::seconds(60)));
        let disabled = ServiceFilter { disabled: Some(true), ..ServiceFilter::default() };
        assert_eq!(repo.list_services(&disabled).await.unwrap().len(), 1);
        assert!(repo.delete_service(&first.id).await.unwrap());
        assert!(!repo.heartbeat(&first.id, later).await.unwrap());
        assert!(matches!(repo.get_service("node1@file", "ember-volume").await, Err(Error::NotFound { .. })));
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn volume_status_follows_its_attachments() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let v = new_volume(&repo, DEFAULT_VOLUME_TYPE_ID).await;
        let a1 = repo.create_attachment(&VolumeAttachment::reserved(id(), &v.id, "p1", None)).await.unwrap();
        let synced = repo.sync_attach_status(&v.id).await.unwrap();
        assert_eq!((synced.status, synced.attach_status), (VolumeStatus::Reserved, AttachStatus::Reserved));
        let attached =
            AttachmentChanges { attach_status: Some(AttachStatus::Attached), ..AttachmentChanges::default() };
        repo.update_attachment(&a1.id, &[], &attached).await.unwrap().unwrap();
        let a2 = repo.create_attachment(&VolumeAttachment::reserved(id(), &v.id, "p1", None)).await.unwrap();
        let failed = AttachmentChanges {
            attach_status: Some(AttachStatus::ErrorAttaching),
            ..AttachmentChanges::default()
        };
        repo.update_attachment(&a2.id, &[], &failed).await.unwrap().unwrap();
        let synced = repo.sync_attach_status(&v.id).await.unwrap();
        assert_eq!((synced.status, synced.attach_status), (VolumeStatus::InUse, AttachStatus::Attached));
        repo.soft_delete_attachment(&a1.id).await.unwrap();
        let synced = repo.sync_attach_status(&v.id).await.unwrap();
        assert_eq!((synced.status, synced.attach_status), (VolumeStatus::Available, AttachStatus::Detached));
        assert!(matches!(repo.sync_attach_status("nope").await, Err(Error::NotFound { .. })));
        t.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn attachment_lists_filter_sort_and_page_past_a_deleted_marker() {
    for t in TestDb::all().await.unwrap() {
        let repo = SqlRepo::new(t.db.clone(), QuotaDefaults::default());
        let v1 = new_volume(&repo, DEFAULT_VOLUME_TYPE_ID).await;
        let v2 = new_volume(&repo, DEFAULT_VOLUME_TYPE_ID).await;
        let start = Utc::now() - Duration::minutes(5);
        let mut ids = Vec::new();
        for i in 0..5_i64 {
            let (vol, project) = if i == 4 { (&v2, "p2") } else { (&v1, "p1") };
            let mut a = VolumeAttachment::reserved(id(), &vol.id, project, Some(format!("srv-{i}")));
            a.created_at = start + Duration::seconds(i);
            a.attach_status = if i % 2 == 0 { AttachStatus::Attached } else { AttachStatus::Reserved };
            ids.push(repo.create_attachment(&a).await.unwrap().id);
        }
        let list = |f: AttachmentFilter, opts: ListOptions| {
            let repo = &repo;
            async move {
                repo.list_attachments_by(&f, &opts)
                    .await
                    .map(|l| l.into_iter().map(|a| a.id).collect::<Vec<_>>())
            }
        };
        let p1 = || AttachmentFilter { project_id: Some("p1".into()), ..AttachmentFilter::default() };
        assert_eq!(
            list(p1(), ListOptions::default()).await.unwrap(),
            [&ids[3], &ids[2], &ids[1], &ids[0]].map(String::clone)
        );
        let by_status = ListOptions {
            sort: vec![(SortKey::Status, SortDir::Asc), (SortKey::CreatedAt, SortDir::Asc)],
            ..ListOptions::default()
        };
        assert_eq!(
            list(p1(), by_status).await.unwrap(),
            [&ids[0], &ids[2], &ids[1], &ids[3]].map(String::clone)
        );
        let attached =
            AttachmentFilter { attach_status: Some(AttachStatus::Attached), ..AttachmentFilter::default() };
        assert_eq!(
            list(attached, ListOptions::default()).await.unwrap(),
            [&ids[4], &ids[2], &ids[0]].map(String::clone)
        );
        let server =
            AttachmentFilter { instance_uuid: Some("srv-1".into()), volume_id: Some(v1.id.clone()), ..p1() };
        assert_eq!(list(server, ListOptions::default()).await.unwrap(), [ids[1].clone()]);

        // The marker was deleted after the first page was read: the next page still follows it.
        let first = ListOptions {
            limit: Some(2),
            sort: vec![(SortKey::CreatedAt, SortDir::Asc)],
            ..ListOptions::default()
        };
        assert_eq!(list(p1(), first.clone()).await.unwrap(), [&ids[0], &ids[1]].map(String::clone));
        assert!(repo.soft_delete_attachment(&ids[1]).await.unwrap());
        let next = ListOptions { marker: Some(ids[1].clone()), ..first };
        assert_eq!(list(p1(), next.clone()).await.unwrap(), [&ids[2], &ids[3]].map(String::clone));

        let unknown = ListOptions { marker: Some(id()), ..next };
        assert!(matches!(
            list(p1(), unknown).await,
            Err(Error::NotFound { kind: ResourceKind::Attachment, .. })
        ));
        let by_name = ListOptions { sort: vec![(SortKey::Name, SortDir::Asc)], ..ListOptions::default() };
        assert!(matches!(list(p1(), by_name).await, Err(Error::Invalid(_))));
        t.cleanup().await.unwrap();
    }
}
