//! The drawing registry (`register_shapes`) knows every flow of every role (backup too) and compiles each
//! without a scheduler or drivers, so the admin view can draw any stored flow.

use std::sync::Arc;

use ember_common::model::QuotaDefaults;
use ember_db::SqlRepo;
use ember_db::flow_store::SqlFlowStore;
use ember_db::testing::TestDb;
use ember_engine::{FlowStore, Registry, Values};
use ember_flows::{Deps, FlowConfig, LocalWake, register_api, register_shapes};

#[tokio::test]
async fn every_flow_of_every_role_can_be_drawn() {
    let db = TestDb::sqlite().await.unwrap();
    let repo = Arc::new(SqlRepo::new(db.db.clone(), QuotaDefaults::default()));
    let store: Arc<dyn FlowStore> = Arc::new(SqlFlowStore::new(db.db.clone()));
    let deps = Arc::new(Deps::new(repo, store, Arc::new(LocalWake::new()), FlowConfig::default()));
    let mut shapes = Registry::new();
    register_shapes(&mut shapes, &deps);
    let mut api = Registry::new();
    register_api(&mut api, &deps);
    let names: Vec<&str> = shapes.names().collect();
    assert_eq!(names.len(), 33, "18 api, 1 scheduler, 11 volume and 3 backup flows: {names:?}");
    assert!(api.names().all(|n| names.contains(&n)));
    for name in names {
        let compiled = shapes.build(name, &Values::new()).unwrap();
        // The legacy one-swap flows and the legacy entry are one task: a node, no edge.
        let one_task = [
            "volume_reserve_api",
            "volume_unreserve_api",
            "volume_begin_detaching_api",
            "volume_roll_detaching_api",
            "legacy_attachment_create_api",
            // The volume side of a backup or restore: one driver call each.
            "backup_export_volume",
            "backup_release_volume",
            "restore_prepare_volume",
            "restore_commit_volume",
        ]
        .contains(&name);
        assert!(one_task || compiled.to_dot().contains("->"), "{name} has edges");
        assert!(compiled.to_dot().contains("Task"), "{name} has its tasks");
        assert!(compiled.to_mermaid().starts_with("flowchart TD"));
    }
    db.cleanup().await.unwrap();
}
