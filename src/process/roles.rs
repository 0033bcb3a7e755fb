//! The three roles of an Ember process and how each is started on the shared plumbing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use ember_api::auth::AuthConfig;
use ember_api::state::{Repos, Settings};
use ember_api::{ApiState, FlowAdmin};
use ember_common::repo::QuotaRepo;
use ember_drivers::SharedDriver;
use ember_engine::{Engine, Registry, Worker, WorkerHandle};
use ember_flows::{
    API_TOPIC, Deps, DriverLookup, FlowAttachOps, FlowBackupOps, FlowConfig, FlowVolumeOps, SCHEDULER_TOPIC,
};
use ember_rpc::{ListenOptions, RegistryOptions, RpcServer, ServiceSpec, Target};
use ember_scheduler::{SchedulerOptions, SchedulerService, SchedulerServiceOptions, SharedScheduler};
use ember_volume::{Backends, CapabilityReporter, PublishEndpoint, ReporterHandle, ReporterOptions};

use super::Plumbing;
use super::wake::{RpcWake, WakeEndpoint};
use crate::server;

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Scheduler,
    Volume,
    Backup,
}

/// Starts `roles` on `plumbing`; they run until `plumbing.shutdown` is cancelled.
pub async fn run_roles(plumbing: &Plumbing, roles: &[Role]) -> anyhow::Result<()> {
    let deps = flow_deps(plumbing);
    for role in roles {
        match role {
            Role::Api => start_api(plumbing, deps.clone()).await?,
            Role::Scheduler => start_scheduler(plumbing, deps.clone()).await?,
            Role::Volume => start_volume(plumbing, deps.clone()).await?,
            Role::Backup => start_backup(plumbing, deps.clone(), roles.len() > 1).await?,
        }
    }
    spawn_metrics_upkeep(plumbing);
    if let Some(listen) = &plumbing.config.metrics_listen {
        serve_metrics(plumbing, listen).await?;
    }
    Ok(())
}

/// Serves `GET /metrics` on `listen` (option `metrics_listen`).
async fn serve_metrics(p: &Plumbing, listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind the metrics endpoint to {listen} (option metrics_listen)"))?;
    tracing::info!(%listen, "metrics listening");
    let (metrics, shutdown) = (p.metrics.clone(), p.shutdown.clone());
    p.tasks.spawn(async move {
        if let Err(err) = super::metrics::serve(listener, metrics, shutdown).await {
            tracing::warn!(error = %err, "the metrics endpoint stopped");
        }
    });
    Ok(())
}

/// Runs the metrics exporter's upkeep every 5 seconds.
fn spawn_metrics_upkeep(p: &Plumbing) {
    let (metrics, shutdown) = (p.metrics.clone(), p.shutdown.clone());
    p.tasks.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => metrics.upkeep(),
            }
        }
    });
}

fn flow_deps(p: &Plumbing) -> Deps {
    let config = FlowConfig {
        scheduler_max_attempts: p.config.scheduler_max_attempts,
        default_volume_type: p.config.default_volume_type.clone(),
        storage_availability_zone: p.config.storage_availability_zone.clone(),
        reservation_expire: std::time::Duration::from_secs(p.config.reservation_expire),
        rpc_response_timeout: std::time::Duration::from_secs(p.config.rpc_response_timeout),
        service_down_time: RegistryOptions::from_config(&p.config).service_down_time(),
        backup_container: p.config.backup.backup_container.clone(),
    };
    let wake = Arc::new(RpcWake::new(p.rpc.clone()));
    Deps::new(p.repo.clone(), p.store.clone(), wake, config)
}

/// Spawns a worker for `topics` with the flows `registry` knows; returns its wake handle.
fn spawn_worker(p: &Plumbing, role: &str, topics: Vec<String>, registry: Registry) -> WorkerHandle {
    spawn_worker_when(p, role, topics, registry, std::future::ready(()))
}

/// As [`spawn_worker`], the worker starting once `ready` completes (wakes until then are
/// kept: the worker claims at its start anyway).
fn spawn_worker_when(
    p: &Plumbing,
    role: &str,
    topics: Vec<String>,
    registry: Registry,
    ready: impl Future<Output = ()> + Send + 'static,
) -> WorkerHandle {
    let worker = Worker::new(p.store.clone(), registry, p.worker_options(role, topics.clone()))
        .with_listener(p.flow_metrics.clone())
        .with_listener(p.flow_ends.clone());
    for topic in &topics {
        p.metrics.add_worker(role, topic, worker.stats());
    }
    let handle = worker.handle();
    let shutdown = p.shutdown.clone();
    let role = role.to_owned();
    p.tasks.spawn(async move {
        tokio::select! {
            () = ready => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(err) = worker.run(shutdown).await {
            tracing::error!(%role, error = %err, "the flow worker stopped");
        }
    });
    handle
}

/// Serves wakes for the flow topics of `handles` on RPC `target`.
async fn serve_wakes(
    p: &Plumbing,
    target: Target,
    handles: HashMap<String, WorkerHandle>,
) -> anyhow::Result<()> {
    let options = ListenOptions { prefetch: 16, fanout: false };
    let server = RpcServer::new(WakeEndpoint::new(handles))
        .listen(&*p.transport, &target, options)
        .await
        .with_context(|| format!("listen on {}", target.routing_key()))?;
    let shutdown = p.shutdown.clone();
    p.tasks.spawn(async move {
        shutdown.cancelled().await;
        server.stop().await;
    });
    Ok(())
}

async fn start_api(p: &Plumbing, deps: Deps) -> anyhow::Result<()> {
    let deps = Arc::new(deps);
    let mut registry = Registry::new();
    ember_flows::register_api(&mut registry, &deps);
    // A peer's (or our own previous life's) api flows are resumed by this worker.
    spawn_worker(p, "api", vec![API_TOPIC.to_owned()], registry);
    let engine = Engine::with_options(p.store.clone(), p.engine_options("api"))
        .with_listener(p.flow_metrics.clone())
        .with_listener(p.flow_ends.clone());
    let attach = FlowAttachOps::new(engine.clone(), deps.clone())
        .context("compile the attach flows")?
        .with_flow_ends(p.flow_ends.clone());
    let mut shapes = Registry::new();
    ember_flows::register_shapes(&mut shapes, &deps);
    let wake = deps.wake.clone();
    let flows = FlowAdmin::new(p.store.clone(), shapes).with_wake(move |topic| wake.wake(topic));
    let ops = Arc::new(FlowVolumeOps::new(engine.clone(), deps.clone()).context("compile the api flows")?);
    let backups = FlowBackupOps::new(engine, deps, ops.clone()).context("compile the backup api flows")?;
    let state = ApiState {
        auth: Arc::new(auth_config(&p.config)?),
        repos: Repos::all(p.repo.clone()),
        ops,
        attach: Arc::new(attach),
        backups: Arc::new(backups),
        settings: Arc::new(Settings::from_config(&p.config)),
        flows: Some(flows),
    };
    let listen: SocketAddr =
        format!("{}:{}", p.config.osapi_volume_listen, p.config.osapi_volume_listen_port)
            .parse()
            .with_context(|| {
                format!("option osapi_volume_listen {:?} is not an IP address", p.config.osapi_volume_listen)
            })?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind the API to {listen}"))?;
    let shutdown = p.shutdown.clone();
    let metrics = p.metrics.clone();
    let options = server::ServeOptions::from_config(&p.config);
    p.tasks.spawn(async move {
        if let Err(err) = server::serve_api(listener, state, metrics, options, shutdown.clone()).await {
            tracing::error!(error = %err, "the API stopped");
            shutdown.cancel();
        }
    });
    Ok(())
}

/// The API's authentication and policy from the configuration (`auth_strategy`,
/// `[tokens]`, `[keystone_authtoken]`, `[oslo_policy]`).
fn auth_config(config: &ember_common::config::Config) -> anyhow::Result<AuthConfig> {
    use ember_common::config::AuthStrategy;
    let strategy = match config.auth_strategy {
        AuthStrategy::Noauth => ember_api::auth::Strategy::Noauth,
        AuthStrategy::Token => ember_api::auth::Strategy::Token,
        AuthStrategy::Keystone => ember_api::auth::Strategy::Keystone,
    };
    let tokens = config
        .tokens
        .iter()
        .map(|(token, t)| {
            let entry = ember_api::auth::TokenEntry {
                user_id: t.user_id.clone(),
                project_id: t.project_id.clone(),
                roles: t.roles.clone(),
            };
            (token.clone(), entry)
        })
        .collect();
    let keystone = match config.auth_strategy {
        AuthStrategy::Keystone => Some(Arc::new(keystone(&config.keystone_authtoken)?)),
        _ => None,
    };
    let policy = ember_api::policy::Policy::load(config.oslo_policy.policy_file.as_deref())
        .context("load [oslo_policy] policy_file")?;
    Ok(AuthConfig { strategy, tokens, keystone, policy: Arc::new(policy) })
}

fn keystone(k: &ember_common::config::KeystoneAuthtoken) -> anyhow::Result<ember_api::keystone::Keystone> {
    let auth_url = k.auth_url.clone().unwrap_or_default();
    let options = ember_api::keystone::KeystoneOptions {
        www_authenticate_uri: k.www_authenticate_uri.clone().unwrap_or_else(|| auth_url.clone()),
        auth_url,
        username: k.username.clone().unwrap_or_default(),
        password: k.password.clone().unwrap_or_default(),
        project_name: k.project_name.clone(),
        user_domain_name: k.user_domain_name.clone(),
        project_domain_name: k.project_domain_name.clone(),
        service_token_roles: k.service_token_roles.clone(),
        service_token_roles_required: k.service_token_roles_required,
        token_cache_time: u64::try_from(k.token_cache_time).ok().map(std::time::Duration::from_secs),
        token_cache_size: k.token_cache_size,
        connect_timeout: std::time::Duration::from_secs(k.http_connect_timeout),
        request_timeout: std::time::Duration::from_secs(k.http_request_timeout),
    };
    ember_api::keystone::Keystone::new(options).context("set up the Keystone client")
}

async fn start_scheduler(p: &Plumbing, deps: Deps) -> anyhow::Result<()> {
    let registry_options = RegistryOptions::from_config(&p.config);
    let options = SchedulerOptions {
        scheduler_max_attempts: p.config.scheduler_max_attempts,
        service_down_time: registry_options.service_down_time().as_secs(),
        ..SchedulerOptions::default()
    };
    let scheduler = SharedScheduler::new(options).context("configure the scheduler")?;
    let service = SchedulerService::new(scheduler.clone())
        .start(
            SchedulerServiceOptions::from_config(&p.config),
            p.repo.clone(),
            p.transport.clone(),
            p.shutdown.clone(),
        )
        .await
        .context("start the scheduler service")?;
    let registration = ember_rpc::Registry::new(registry_options, p.repo.clone())
        .start(
            vec![ServiceSpec::scheduler(&p.config.host, &p.config.storage_availability_zone)],
            p.shutdown.clone(),
        )
        .await
        .context("register the scheduler service")?;
    spawn_reservation_sweep(p);
    spawn_flow_purge(p);
    let deps = Arc::new(deps.with_scheduler(scheduler.clone()));
    let mut registry = Registry::new();
    ember_flows::register_scheduler(&mut registry, &deps)?;
    // Flows wait in the store until every live volume service has reported (or the wait
    // runs out): placing on an empty cache would fail volumes that have a home.
    let wait = std::time::Duration::from_secs(p.config.scheduler_driver_init_wait_time);
    let handle = spawn_worker_when(p, "scheduler", vec![SCHEDULER_TOPIC.to_owned()], registry, async move {
        if !scheduler.wait_ready(wait).await {
            tracing::warn!(
                ?wait,
                "not every live volume service reported its capabilities; scheduling anyway"
            );
        }
    });
    serve_wakes(
        p,
        Target::topic(ember_rpc::SCHEDULER_TOPIC),
        HashMap::from([(SCHEDULER_TOPIC.to_owned(), handle)]),
    )
    .await?;
    let shutdown = p.shutdown.clone();
    p.tasks.spawn(async move {
        shutdown.cancelled().await;
        service.stop().await;
        registration.stop().await;
    });
    Ok(())
}

/// Rolls back quota reservations older than `reservation_expire`, every
/// `reservation_clean_interval` (Cinder's scheduler periodic task); the first sweep runs at
/// start, so reservations a crash left behind go at once.
fn spawn_reservation_sweep(p: &Plumbing) {
    let every = p.config.reservation_clean_interval.unwrap_or(p.config.reservation_expire).max(1);
    let quotas: Arc<dyn QuotaRepo> = p.repo.clone();
    let shutdown = p.shutdown.clone();
    p.tasks.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(every));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match quotas.expire_reservations(chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "rolled back expired quota reservations"),
                Err(err) => tracing::warn!(error = %err, "expiring quota reservations failed"),
            }
        }
    });
}

/// Purges finished flows older than `flow_retention_days` (whose subject is gone) at start
/// and every hour; 0 keeps them. Every scheduler does it: the deletes are idempotent.
fn spawn_flow_purge(p: &Plumbing) {
    let days = p.config.flow_retention_days;
    if days == 0 {
        return;
    }
    let (db, shutdown) = (p.db.clone(), p.shutdown.clone());
    p.tasks.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
            match ember_db::purge::purge_flows(&db, before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, days, "purged finished flows (flow_retention_days)"),
                Err(err) => tracing::warn!(error = %err, "purging finished flows failed"),
            }
        }
    });
}

/// The drivers of this process's backends, for the volume flows, and the reporter that
/// tells the schedulers at once when one of them is full.
struct BackendDrivers(Backends, ReporterHandle);

impl DriverLookup for BackendDrivers {
    fn driver(&self, backend: &str) -> Option<SharedDriver> {
        self.0.driver(backend)
    }

    fn out_of_space(&self, backend: &str) {
        tracing::warn!(backend, "the backend is out of space; reporting its capacity now");
        self.1.request_report();
    }
}

async fn start_volume(p: &Plumbing, deps: Deps) -> anyhow::Result<()> {
    let backends = Backends::from_config(&p.config).await.context("set up the volume backends")?;
    let registration = ember_rpc::Registry::new(RegistryOptions::from_config(&p.config), p.repo.clone())
        .start(backends.service_specs(), p.shutdown.clone())
        .await
        .context("register the volume services")?;
    let reporter = CapabilityReporter::new(
        ReporterOptions::from_config(&p.config),
        backends.clone(),
        p.transport.clone(),
    )
    .spawn(p.shutdown.clone());
    let publish = RpcServer::new(PublishEndpoint::new(reporter.clone()))
        .listen_fanout(&*p.transport, ember_rpc::VOLUME_TOPIC, 4)
        .await
        .context("listen for capability requests")?;
    let hosts: Vec<String> = backends.iter().map(|b| b.host.clone()).collect();
    let deps = Arc::new(deps.with_drivers(Arc::new(BackendDrivers(backends, reporter.clone()))));
    for host in hosts {
        // Cinder's `init_host`: the exports live attachments need, before any flow runs.
        match ember_flows::ensure_exports(&deps, &host).await {
            Ok(n) => tracing::info!(backend = %host, volumes = n, "exports ensured"),
            Err(e) => tracing::warn!(backend = %host, error = %e, "ensuring exports failed"),
        }
        let mut registry = Registry::new();
        ember_flows::register_volume(&mut registry, &deps)?;
        let topic = ember_flows::volume_topic(&host);
        let handle = spawn_worker(p, "volume", vec![topic.clone()], registry);
        serve_wakes(p, Target::volume_backend(&host), HashMap::from([(topic, handle)])).await?;
    }
    let shutdown = p.shutdown.clone();
    p.tasks.spawn(async move {
        shutdown.cancelled().await;
        publish.stop().await;
        reporter.stop().await;
        registration.stop().await;
    });
    Ok(())
}

/// The backup role (Cinder's cinder-backup): the store from `[backup]`, the `ember-backup`
/// service row and its heartbeat, and a worker for the `backup.<host>` flows with its wakes
/// on `ember-backup.<host>`. Inside a process of several roles (all-in-one) a store that
/// cannot be set up is logged and the role left out: the API then answers backup requests
/// with 503, as Cinder without a backup service.
async fn start_backup(p: &Plumbing, deps: Deps, among_others: bool) -> anyhow::Result<()> {
    let driver = match ember_backup::driver_from_config(&p.config).await {
        Ok(d) => d,
        Err(e) if among_others => {
            tracing::error!(error = %e, "the backup service is not started");
            return Ok(());
        }
        Err(e) => return Err(e).context("set up the backup store"),
    };
    tracing::info!(driver = driver.name(), "backup store ready");
    let host = p.config.host.clone();
    let store =
        Arc::new(ember_backup::Store::new(host.clone(), driver).with_nbd(p.config.backup.backup_use_nbd));
    let deps = Arc::new(deps.with_backup_store(store));
    let mut registry = Registry::new();
    ember_flows::register_backup(&mut registry, &deps)?;
    let topic = ember_flows::backup_topic(&host);
    let handle = spawn_worker(p, "backup", vec![topic.clone()], registry);
    serve_wakes(p, Target::server(ember_rpc::BACKUP_TOPIC, &host), HashMap::from([(topic, handle)])).await?;
    let registration = ember_rpc::Registry::new(RegistryOptions::from_config(&p.config), p.repo.clone())
        .start(vec![ServiceSpec::backup(&host, &p.config.storage_availability_zone)], p.shutdown.clone())
        .await
        .context("register the backup service")?;
    let shutdown = p.shutdown.clone();
    p.tasks.spawn(async move {
        shutdown.cancelled().await;
        registration.stop().await;
    });
    Ok(())
}
