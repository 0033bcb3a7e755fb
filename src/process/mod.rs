//! Composing Ember's processes: the plumbing every role shares (configuration, database,
//! flow store, transport), then the api, scheduler and volume roles on top of it.
//!
//! `ember all-in-one` runs the three roles in one process on one plumbing; `ember api`,
//! `ember scheduler` and `ember volume` run one role each, normally on PostgreSQL and
//! RabbitMQ. The roles never know which transport or database they run on.

pub mod flow_metrics;
pub mod metrics;
mod roles;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ember_common::config::Config;
use ember_db::flow_store::SqlFlowStore;
use ember_db::{Db, DbOptions, SqlRepo};
use ember_engine::{EngineOptions, FlowStore, WorkerOptions};
use ember_rpc::{Amqp, AmqpOptions, InProcess, RpcClient, Transport};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use roles::{Role, run_roles};

/// The RPC interface version Ember's processes speak.
pub const RPC_VERSION: &str = "3.0";

/// What every role of a process shares.
pub struct Plumbing {
    pub config: Arc<Config>,
    pub db: Db,
    pub repo: Arc<SqlRepo>,
    pub store: Arc<dyn FlowStore>,
    pub transport: Arc<dyn Transport>,
    pub rpc: RpcClient,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// This life of the process: the last part of every owner name it writes on flows.
    pub incarnation: String,
    pub metrics: Arc<metrics::Metrics>,
    /// The engine listener that records flow and step metrics; every engine and worker
    /// of the process is given it.
    pub flow_metrics: Arc<flow_metrics::FlowMetrics>,
    /// The engine listener that wakes API requests waiting for a flow this process runs
    /// (an attach's volume-side flow in all-in-one); every engine and worker has it.
    pub flow_ends: Arc<ember_engine::FlowEnds>,
}

impl Plumbing {
    /// Opens the database (applying migrations), the flow store and the transport.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("create the data directory {}", config.data_dir.display()))?;
        let options = DbOptions {
            pool_timeout: Duration::from_secs(config.database_pool_timeout.max(1)),
            ..DbOptions::new(config.database_url())
        };
        let db = Db::connect(&options).await.context("open the database")?;
        db.migrate().await.context("apply the migrations")?;
        let repo = Arc::new(SqlRepo::new(db.clone(), config.quota_defaults()));
        let store: Arc<dyn FlowStore> = Arc::new(SqlFlowStore::new(db.clone()));
        let transport = open_transport(&config).await?;
        let down_time = ember_rpc::RegistryOptions::from_config(&config).service_down_time();
        let metrics = metrics::Metrics::install().with_liveness(repo.clone(), down_time);
        let rpc = RpcClient::new(transport.clone(), RPC_VERSION);
        Ok(Self {
            config: Arc::new(config),
            db,
            repo,
            store,
            transport,
            rpc,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            metrics: Arc::new(metrics),
            flow_metrics: Arc::default(),
            flow_ends: ember_engine::FlowEnds::new(),
        })
    }

    /// Worker options for flows of `topics`, owned as `role` on this host. At start the
    /// worker takes over what an earlier life of this role on this host held (owners
    /// `host:role:*`), without waiting for the leases to lapse.
    pub fn worker_options(&self, role: &str, topics: Vec<String>) -> WorkerOptions {
        WorkerOptions {
            engine: self.engine_options(role),
            topics,
            flow_names: Vec::new(),
            sweep_interval: Duration::from_secs(2),
            max_flows: 64,
            reclaim_prefix: Some(format!("{}:{role}:", self.config.host)),
        }
    }

    /// Engine options for flows run by `role` on this host: every engine and worker of one
    /// role in one process writes the same owner, `host:role:incarnation`.
    pub fn engine_options(&self, role: &str) -> EngineOptions {
        EngineOptions {
            owner: format!("{}:{role}:{}", self.config.host, self.incarnation),
            lease: Duration::from_secs(self.config.flow_lease.max(1)),
            ..EngineOptions::default()
        }
    }

    /// Stops every role, waits for their tasks, and closes the database.
    pub async fn close(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.db.close().await;
    }
}

/// The in-process bus when no `transport_url` is set, else RabbitMQ.
async fn open_transport(config: &Config) -> anyhow::Result<Arc<dyn Transport>> {
    match config.transport_url.as_deref() {
        None | Some("") | Some("inprocess://") => Ok(Arc::new(InProcess::new())),
        Some(url) if url.starts_with("amqp://") => {
            let options = AmqpOptions {
                url: url.to_owned(),
                connection_name: format!("ember@{}", config.host),
                prefix: config.transport_prefix.clone(),
                ..AmqpOptions::default()
            };
            let amqp = Amqp::connect(options).await.context("connect to RabbitMQ (option transport_url)")?;
            Ok(Arc::new(amqp))
        }
        Some(other) => anyhow::bail!("option transport_url {other:?}: expected amqp://... or inprocess://"),
    }
}
