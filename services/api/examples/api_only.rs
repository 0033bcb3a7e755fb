//! The API alone, for running the client conformance harness against it before the flows
//! are wired: a throw-away SQLite database, one registered volume service, and the tests'
//! stand-in operations made instant (volumes and snapshots are `available` at once, no quota;
//! attachments as the tests' `TestAttachOps`, with fake connection info).
//!
//! `cargo run -p ember-api --example api_only [127.0.0.1:18776]`, then
//! `conformance/run.sh http://127.0.0.1:18776` with `CONFORMANCE_SKIP=backup`.

#[path = "../tests/common/attach.rs"]
mod attach;
#[path = "../tests/common/ops.rs"]
mod ops;

use std::sync::Arc;

use ember_api::{ApiState, Repos, Settings, VolumeOps, app};
use ember_common::ServiceError;
use ember_common::model::{
    Service, Snapshot, SnapshotChanges, SnapshotStatus, Volume, VolumeChanges, VolumeExpect, VolumeStatus,
};
use ember_common::ops::{CreateSnapshot, CreateVolume, DeleteVolume, RequestContext};
use ember_common::repo::{ServiceRepo, SnapshotRepo, VolumeRepo};
use ember_db::SqlRepo;
use ember_db::testing::TestDb;

/// The stand-in operations, with the end states the services would reach written at once.
struct Instant(ops::TestOps, Arc<SqlRepo>);

#[async_trait::async_trait]
impl VolumeOps for Instant {
    async fn create_volume(&self, ctx: &RequestContext, req: CreateVolume) -> Result<Volume, ServiceError> {
        let v = self.0.create_volume(ctx, req).await?;
        let mut c = VolumeChanges::status(VolumeStatus::Available);
        c.host = Some(Some("node@file#pool".into()));
        self.1.update_volume(&v.id, &VolumeExpect::default(), &c).await?;
        Ok(v)
    }
    async fn delete_volume(
        &self,
        ctx: &RequestContext,
        id: &str,
        o: DeleteVolume,
    ) -> Result<(), ServiceError> {
        self.0.delete_volume(ctx, id, o).await
    }
    async fn extend_volume(&self, ctx: &RequestContext, id: &str, n: i64) -> Result<(), ServiceError> {
        self.0.extend_volume(ctx, id, n).await
    }
    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        req: CreateSnapshot,
    ) -> Result<Snapshot, ServiceError> {
        let s = self.0.create_snapshot(ctx, req).await?;
        let c = SnapshotChanges { status: Some(SnapshotStatus::Available), ..Default::default() };
        self.1.update_snapshot(&s.id, &[], &c).await?;
        Ok(s)
    }
    async fn delete_snapshot(&self, ctx: &RequestContext, id: &str, f: bool) -> Result<(), ServiceError> {
        self.0.delete_snapshot(ctx, id, f).await
    }
}

#[tokio::main]
async fn main() {
    let tdb = TestDb::sqlite().await.unwrap();
    let repo = Arc::new(SqlRepo::new(tdb.db.clone(), Default::default()));
    let now = chrono::Utc::now();
    // A heartbeat ten hours ahead keeps the service up for the run without a heartbeat task.
    let svc = Service {
        id: "s1".into(),
        host: "node@file".into(),
        binary: "ember-volume".into(),
        topic: "ember-volume".into(),
        availability_zone: "nova".into(),
        disabled: false,
        disabled_reason: None,
        frozen: false,
        cluster_name: None,
        report_count: 1,
        version: "0".into(),
        rpc_current_version: None,
        heartbeat_at: now + chrono::Duration::hours(10),
        created_at: now,
    };
    repo.register_service(&svc).await.unwrap();
    let state = ApiState {
        auth: Arc::new(Default::default()),
        repos: Repos::all(repo.clone()),
        ops: Arc::new(Instant(ops::TestOps::new(repo.clone()), repo.clone())),
        attach: Arc::new(attach::TestAttachOps::new(repo)),
        backups: Arc::new(ember_api::state::UnwiredOps),
        settings: Arc::new(Settings::default()),
        flows: None,
    };
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18776".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!("serving the API on http://{addr}");
    axum::serve(listener, app(state)).await.unwrap();
}
