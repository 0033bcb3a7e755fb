//! Crashes: workers killed with flows in flight (and API requests cut off mid-flow) are
//! replaced by new workers on the same database; every operation finishes once, with no
//! duplicate backend volume and exact quota usage.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ember_common::model::{ListOptions, VolumeFilter, VolumeStatus};
use ember_common::ops::{CreateVolume, VolumeOps};
use ember_common::repo::{QuotaRepo, VolumeRepo};
use ember_drivers::{FakeDriver, FakeOptions, SharedDriver};
use ember_engine::{FlowFilter, FlowState};
use support::{BACKENDS, Cluster, Options, PROJECT, ctx, fake, on_every_db, poll, wait_gone};
use tokio::task::JoinSet;

fn slow_fakes(latency_ms: u64) -> (Vec<Arc<FakeDriver>>, Vec<(&'static str, SharedDriver)>) {
    let fakes: Vec<_> =
        BACKENDS.iter().map(|b| fake(b, FakeOptions { latency_ms, ..Default::default() })).collect();
    let shared = BACKENDS.iter().zip(&fakes).map(|(b, f)| (*b, f.clone() as SharedDriver)).collect();
    (fakes, shared)
}

fn crash_options() -> Options {
    Options { lease: Duration::from_secs(3), sweep: Duration::from_millis(100), max_attempts: 3 }
}

/// Every backend volume id, with duplicates across backends kept.
fn backend_volumes(fakes: &[Arc<FakeDriver>]) -> Vec<String> {
    let mut all: Vec<String> = fakes.iter().flat_map(|f| f.volume_ids()).collect();
    all.sort();
    all
}

async fn live_volumes(c: &Cluster) -> Vec<ember_common::model::Volume> {
    let filter = VolumeFilter { project_id: Some(PROJECT.into()), ..Default::default() };
    c.repo.list_volumes(&filter, &ListOptions { limit: Some(1000), ..Default::default() }).await.unwrap()
}

async fn assert_usage(c: &Cluster, volumes: i64, gigabytes: i64) {
    let v = c.usage("volumes").await;
    let g = c.usage("gigabytes").await;
    assert_eq!((v.in_use, v.reserved), (volumes, 0), "volumes usage");
    assert_eq!((g.in_use, g.reserved), (gigabytes, 0), "gigabytes usage");
}

/// Starts `n` creates at once and returns the new volumes' ids.
async fn create_many(c: &Cluster, n: usize) -> Vec<String> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let ops = c.ops.clone();
        let size = 1 + (i % 3) as i64;
        set.spawn(async move {
            ops.create_volume(&ctx(), CreateVolume { size: Some(size), ..Default::default() }).await
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        ids.push(r.unwrap().unwrap().id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_are_replaced_and_every_volume_is_made_once() {
    on_every_db(|db| async move {
        let (fakes, drivers) = slow_fakes(400);
        let mut c = Cluster::start(&db, drivers, crash_options()).await;
        let ids = create_many(&c, 20).await;
        // Kill the workers once several volumes are handed to their backends, whose driver
        // calls are then in flight.
        poll(
            Duration::from_secs(30),
            "volumes to be handed to their backends",
            || async { Some(c.flow_count("volume_create_manager").await) },
            |n| *n >= 5,
        )
        .await;
        c.crash_workers().await;
        let made_before = backend_volumes(&fakes).len();
        assert!(made_before < 20, "every volume was made before the crash; the test proves nothing");
        c.start_workers().await;
        for id in &ids {
            let v = c.wait_status(id, VolumeStatus::Available).await;
            let backend = v.host.as_deref().unwrap().split('#').next().unwrap().to_owned();
            let i = BACKENDS.iter().position(|b| *b == backend).unwrap();
            assert!(fakes[i].volume_ids().contains(id), "{id} is not on its host {backend}");
        }
        c.wait_idle(true).await;
        let want: BTreeSet<String> = ids.iter().cloned().collect();
        let on_backends = backend_volumes(&fakes);
        assert_eq!(on_backends.len(), 20, "a volume was made twice or is missing: {on_backends:?}");
        assert_eq!(on_backends.into_iter().collect::<BTreeSet<_>>(), want);
        let gigabytes: i64 = live_volumes(&c).await.iter().map(|v| v.size).sum();
        assert_usage(&c, 20, gigabytes).await;

        // Now delete them all and crash again half-way.
        let mut set = JoinSet::new();
        for id in ids.clone() {
            let ops = c.ops.clone();
            set.spawn(async move { ops.delete_volume(&ctx(), &id, Default::default()).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        c.crash_workers().await;
        c.start_workers().await;
        for id in &ids {
            wait_gone(&c, id).await;
        }
        c.wait_idle(true).await;
        assert!(backend_volumes(&fakes).is_empty());
        assert_usage(&c, 0, 0).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_cut_off_mid_flow_are_finished_by_a_peer() {
    on_every_db(|db| async move {
        let (fakes, drivers) = slow_fakes(0);
        let c = Cluster::start(&db, drivers, crash_options()).await;
        // Requests whose process dies at every point of the api flow.
        let (api_rt, api_ops) = c.api_process().await;
        for _ in 0..12 {
            let ops = api_ops.clone();
            api_rt.spawn(async move {
                ops.create_volume(&ctx(), CreateVolume { size: Some(1), ..Default::default() }).await
            });
        }
        // Cut them off as soon as all twelve are recorded, most of them mid-way.
        let store = c.store.clone();
        poll(
            Duration::from_secs(30),
            "the api flows to be recorded",
            move || {
                let store = store.clone();
                async move {
                    let filter = FlowFilter { name: Some("volume_create_api".into()), ..Default::default() };
                    store.list_flows(&filter).await.ok().map(|f| f.len())
                }
            },
            |n| *n == 12,
        )
        .await;
        api_rt.shutdown_background();
        drop(api_ops);
        // The api worker resumes what the dead requests left, once their lease lapses.
        let store = c.store.clone();
        let api_flows = poll(
            Duration::from_secs(30),
            "every recorded api flow to finish",
            move || {
                let store = store.clone();
                async move {
                    let filter = FlowFilter { name: Some("volume_create_api".into()), ..Default::default() };
                    store.list_flows(&filter).await.ok()
                }
            },
            |flows| flows.iter().all(|f| f.state.is_terminal()),
        )
        .await;
        assert!(api_flows.iter().all(|f| f.state == FlowState::Success), "{api_flows:?}");
        let n = api_flows.len();
        assert_eq!(n, 12);
        let resumed =
            api_flows.iter().filter(|f| f.owner.as_deref().is_some_and(|o| o.starts_with("api-"))).count();
        eprintln!("{n} api flows recorded, {resumed} finished by the api worker");
        assert!(resumed >= 1, "no request was cut off; the test proves nothing");
        let vols = poll(
            Duration::from_secs(30),
            "every volume to be available",
            || async { Some(live_volumes(&c).await) },
            |v| v.len() == n && v.iter().all(|v| v.status == VolumeStatus::Available),
        )
        .await;
        c.wait_idle(true).await;
        assert_eq!(backend_volumes(&fakes).len(), n);
        // A request cut off between a reservation and the write of its id leaves the
        // reservation to expire; the expiry sweep rolls it back.
        c.repo.expire_reservations(chrono::Utc::now() + chrono::Duration::days(2)).await.unwrap();
        assert_usage(&c, n as i64, vols.len() as i64).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_flow_whose_owner_died_is_claimed_and_run_by_the_api_worker() {
    on_every_db(|db| async move {
        let (fakes, drivers) = slow_fakes(0);
        let c = Cluster::start(&db, drivers, crash_options()).await;
        // What an API process leaves when it dies right after recording the flow.
        let id = uuid::Uuid::new_v4().to_string();
        let inputs = ember_flows::api::create_volume::inputs(
            &ctx(),
            CreateVolume { size: Some(2), ..Default::default() },
            &id,
        );
        let dead = ember_engine::NewFlow {
            id: format!("volume_create_api:{id}"),
            name: "volume_create_api".into(),
            inputs,
            topic: ember_flows::API_TOPIC.into(),
            subject: Some(id.clone()),
            owner: Some(("dead-api".into(), ember_engine::store::now_ms() - 1)),
        };
        c.store.create_flow(&dead).await.unwrap();
        let v = c.wait_status(&id, VolumeStatus::Available).await;
        assert_eq!(v.size, 2);
        assert_eq!(backend_volumes(&fakes), vec![id.clone()]);
        assert_usage(&c, 1, 2).await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_that_died_after_placing_a_volume_hands_it_off_on_resume() {
    on_every_db(|db| async move {
        let (fakes, drivers) = slow_fakes(0);
        let c = Cluster::start(&db, drivers, crash_options()).await;
        // The row as the scheduler left it: placed on the second backend, not handed off.
        let id = uuid::Uuid::new_v4().to_string();
        let mut v = ember_common::model::Volume::new(
            &id,
            PROJECT,
            "u1",
            1,
            ember_common::model::DEFAULT_VOLUME_TYPE_ID,
            "nova",
        );
        v.host = Some(format!("{}#fake", BACKENDS[1]));
        c.repo.create_volume(&v).await.unwrap();
        let spec =
            ember_scheduler::RequestSpec { volume_id: Some(id.clone()), size_gb: 1, ..Default::default() };
        let inputs = ember_engine::Values::new()
            .with(&ember_flows::keys::CONTEXT, ctx())
            .with(&ember_flows::keys::VOLUME_ID, id.clone())
            .with(&ember_flows::keys::RAW_REQUEST_SPEC, spec);
        let dead = ember_engine::NewFlow {
            id: format!("volume_create_scheduler:{id}:1"),
            name: "volume_create_scheduler".into(),
            inputs,
            topic: ember_flows::SCHEDULER_TOPIC.into(),
            subject: Some(id.clone()),
            owner: Some(("dead-scheduler".into(), ember_engine::store::now_ms() - 1)),
        };
        c.store.create_flow(&dead).await.unwrap();
        let v = c.wait_status(&id, VolumeStatus::Available).await;
        assert_eq!(v.host.as_deref(), Some(format!("{}#fake", BACKENDS[1]).as_str()));
        assert_eq!(fakes[1].volume_ids(), vec![id.clone()]);
        assert!(fakes[0].volume_ids().is_empty());
        // The manager flow carries the attempt the dead run counted.
        let filter = FlowFilter { name: Some("volume_create_manager".into()), ..Default::default() };
        let flows = c.store.list_flows(&filter).await.unwrap();
        assert_eq!(
            flows.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
            vec![format!("volume_create_manager:{id}:1")]
        );
        c.stop().await;
    })
    .await;
}
