//! Ember's configuration: defaults, then one TOML file, then `EMBER_*` environment
//! variables, then command-line flags, each layer overriding the one before.
//!
//! Option names are Cinder's where Cinder has the option (`enabled_backends`,
//! `default_volume_type`, `quota_volumes`, `report_interval`...). Top-level keys play the part
//! of Cinder's `[DEFAULT]` group and `[backends.<name>]` the per-backend groups. Nested keys
//! come from the environment with `__` between the parts:
//! `EMBER_BACKENDS__FILE__FILE_VOLUME_DIR=/srv/volumes`. Lists are written as
//! `EMBER_ENABLED_BACKENDS=[file,fast]`.

mod auth;
mod backend;
mod backup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Source};
use serde::{Deserialize, Serialize};

pub use auth::{KeystoneAuthtoken, OsloPolicy};
pub use backend::{BackendConfig, FileVolumeFormat, TargetHelper, TargetProtocol, VolumeDriverKind};
pub use backup::{BackupConfig, BackupDriverKind};

use crate::model::QuotaDefaults;
use crate::model::volume_type::DEFAULT_VOLUME_TYPE_NAME;

/// The prefix of the environment variables that set options.
pub const ENV_PREFIX: &str = "EMBER_";

/// A configuration that could not be loaded: which option, from where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ConfigError {
    /// The option's key, e.g. `quota_volumes` or `backends.file.reserved_percentage`; empty
    /// when the whole source is wrong (a file that cannot be read or parsed).
    pub option: String,
    /// Where the value came from: the file's path, the environment, or the defaults.
    pub source_name: String,
    pub reason: String,
}

impl ConfigError {
    fn describe(&self) -> String {
        if self.option.is_empty() {
            format!("configuration from {}: {}", self.source_name, self.reason)
        } else {
            format!("invalid value for option `{}` in {}: {}", self.option, self.source_name, self.reason)
        }
    }
}

/// How the API authenticates requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthStrategy {
    /// Cinder's noauth: `X-Auth-Token: user:project` is trusted as is (development only).
    Noauth,
    /// Tokens checked by Ember, with project isolation and an admin role.
    Token,
    /// Keystone tokens, validated against Keystone's v3 API (`[keystone_authtoken]`).
    Keystone,
}

/// How log lines are written (standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event; ANSI colours only when standard error is a terminal.
    Text,
    /// One JSON object per line, for log shippers: the event's fields at the top level and
    /// its spans (the request's `request_id`, the flow's `flow_id`) in `spans`.
    Json,
}

/// One token the API accepts under `auth_strategy = "token"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub user_id: String,
    pub project_id: String,
    /// `admin` grants the admin actions (reset status, force delete, other projects...).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Every option of every Ember process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's name in service records and host strings (`host@backend#pool`);
    /// defaults to the machine's host name.
    pub host: String,
    /// Where the embedded SQLite database and the file driver's volumes live by default.
    pub data_dir: PathBuf,
    /// `sqlite:///path/ember.db` or `postgres://user@host/db`; defaults to
    /// `<data_dir>/ember.db` on SQLite.
    pub database_url: Option<String>,
    /// Seconds a statement waits for a database connection before the request fails with
    /// a 503 (oslo.db's `[database] pool_timeout`): what a client waits while the database
    /// is down or restarting.
    pub database_pool_timeout: u64,
    /// `amqp://user:pass@host:5672/%2f` for RabbitMQ; unset means the in-process bus
    /// (every service in one process).
    pub transport_url: Option<String>,
    /// Put in front of every RabbitMQ exchange and queue name, so that several deployments
    /// share one broker (one vhost) without seeing each other's messages. Empty by default.
    pub transport_prefix: String,
    /// The backend sections the volume service runs, by name.
    pub enabled_backends: Vec<String>,
    /// The volume type of volumes created without one.
    pub default_volume_type: String,
    /// The availability zone of this node's services.
    pub storage_availability_zone: String,
    /// The zone of volumes created without one; defaults to `storage_availability_zone`.
    pub default_availability_zone: Option<String>,
    /// Create in the default zone when the requested one does not exist, instead of failing.
    pub allow_availability_zone_fallback: bool,
    /// Default quota: number of volumes per project.
    pub quota_volumes: i64,
    /// Default quota: GiB of volumes and snapshots per project.
    pub quota_gigabytes: i64,
    /// Default quota: number of snapshots per project.
    pub quota_snapshots: i64,
    /// Default quota: number of backups per project.
    pub quota_backups: i64,
    /// Default quota: GiB of backups per project.
    pub quota_backup_gigabytes: i64,
    /// The largest volume a project may create, GiB (-1: no limit).
    pub per_volume_size_limit: i64,
    /// Seconds until an uncommitted quota reservation expires and is rolled back.
    pub reservation_expire: u64,
    /// Seconds between sweeps of expired reservations; defaults to `reservation_expire`.
    pub reservation_clean_interval: Option<u64>,
    /// Seconds between service heartbeats.
    pub report_interval: u64,
    /// Seconds without a heartbeat after which a service counts as down.
    pub service_down_time: u64,
    /// How many backends the scheduler tries for one volume before it gives up.
    pub scheduler_max_attempts: u32,
    /// Seconds a process holds a flow without renewing its lease (it renews every third of
    /// it); a dead process's flows go to a live peer of its role once this has passed.
    pub flow_lease: u64,
    /// Seconds a starting scheduler waits for every live volume service's capabilities
    /// before it places volumes (Cinder's option of the same name).
    pub scheduler_driver_init_wait_time: u64,
    /// Seconds between runs of periodic tasks (capability reports, sweeps).
    pub periodic_interval: u64,
    /// Seconds an RPC call waits for its reply.
    pub rpc_response_timeout: u64,
    /// The address the API listens on.
    pub osapi_volume_listen: String,
    /// The port the API listens on.
    pub osapi_volume_listen_port: u16,
    /// The largest page a list returns.
    pub osapi_max_limit: u32,
    /// Seconds a client has to send a request's headers; a connection that has not sent
    /// them by then (a slow or idle client, including an idle keep-alive) is closed.
    pub client_header_timeout: u64,
    /// Seconds a client has to send a request's body once its headers are in.
    pub client_body_timeout: u64,
    /// Connections the API serves at once; more wait in the kernel's accept queue.
    pub osapi_max_connections: u32,
    /// `address:port` where a process without the API (scheduler, volume) serves
    /// `GET /metrics`; the API serves it on its own port.
    pub metrics_listen: Option<String>,
    /// `text` or `json` (one JSON object per line).
    pub log_format: LogFormat,
    /// Days a finished flow is kept; the scheduler purges older ones (unless their subject
    /// still lives) at start and every hour. 0 keeps them forever.
    pub flow_retention_days: u32,
    /// `noauth`, `token` or `keystone`.
    pub auth_strategy: AuthStrategy,
    /// With `auth_strategy = "token"`: `[tokens."<secret>"]` sections, each naming the user,
    /// project and roles the token stands for.
    pub tokens: BTreeMap<String, TokenConfig>,
    /// With `auth_strategy = "keystone"`: how tokens are validated (keystonemiddleware's options).
    pub keystone_authtoken: KeystoneAuthtoken,
    /// The policy file that overrides Cinder's default rules.
    pub oslo_policy: OsloPolicy,
    /// Backend sections, `[backends.<name>]`; only those in `enabled_backends` run.
    pub backends: BTreeMap<String, BackendConfig>,
    /// `[backup]`: the backup service's store.
    pub backup: BackupConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: default_host(),
            data_dir: PathBuf::from("ember-data"),
            database_url: None,
            database_pool_timeout: 5,
            transport_url: None,
            transport_prefix: String::new(),
            enabled_backends: vec!["file".into()],
            default_volume_type: DEFAULT_VOLUME_TYPE_NAME.into(),
            storage_availability_zone: "nova".into(),
            default_availability_zone: None,
            allow_availability_zone_fallback: false,
            quota_volumes: 10,
            quota_gigabytes: 1000,
            quota_snapshots: 10,
            quota_backups: 10,
            quota_backup_gigabytes: 1000,
            per_volume_size_limit: -1,
            reservation_expire: 86400,
            reservation_clean_interval: None,
            report_interval: 10,
            service_down_time: 60,
            scheduler_max_attempts: 3,
            scheduler_driver_init_wait_time: 60,
            flow_lease: 15,
            periodic_interval: 60,
            rpc_response_timeout: 60,
            osapi_volume_listen: "127.0.0.1".into(),
            osapi_volume_listen_port: 8776,
            osapi_max_limit: 1000,
            client_header_timeout: 10,
            client_body_timeout: 60,
            osapi_max_connections: 4096,
            metrics_listen: None,
            log_format: LogFormat::Text,
            flow_retention_days: 30,
            auth_strategy: AuthStrategy::Noauth,
            tokens: BTreeMap::new(),
            keystone_authtoken: KeystoneAuthtoken::default(),
            oslo_policy: OsloPolicy::default(),
            backends: BTreeMap::from([("file".to_owned(), BackendConfig::default())]),
            backup: BackupConfig::default(),
        }
    }
}

/// The options a command line may set; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub osapi_volume_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub osapi_volume_listen_port: Option<u16>,
}

/// The machine's host name, or `localhost` when it cannot be read.
fn default_host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The top-level option names, for picking `EMBER_*` variables that are options (others,
/// such as `EMBER_LOG`, belong to other parts of the program).
fn option_names() -> Vec<String> {
    match figment::value::Value::serialize(Config::default()) {
        Ok(figment::value::Value::Dict(_, dict)) => dict.into_keys().collect(),
        _ => Vec::new(),
    }
}

impl Config {
    /// Loads the layers: defaults, `file` (when given; it must exist), `EMBER_*` variables,
    /// then `overrides`. Every value is checked; an error names the option and its source.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let names = option_names();
        let env = Env::prefixed(ENV_PREFIX)
            .filter(move |key| {
                let first = key.as_str().split("__").next().unwrap_or_default();
                names.iter().any(|n| n.eq_ignore_ascii_case(first))
            })
            .split("__");
        Self::from_figment(Self::figment(file, Some(env), overrides))
    }

    /// Defaults, then `file`, then `overrides`, without the environment.
    pub fn load_without_env(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(file, None, overrides))
    }

    /// The layers in order; a later `merge` wins over an earlier one.
    fn figment(file: Option<&Path>, env: Option<Env>, overrides: &Overrides) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        if let Some(env) = env {
            figment = figment.merge(env);
        }
        figment.merge(Serialized::defaults(overrides.clone()))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|e| extract_error(&figment, e))?;
        config.check().map_err(|(option, reason)| ConfigError {
            source_name: source_of(&figment, &option),
            option,
            reason,
        })?;
        Ok(config)
    }

    /// The first wrong value, as (option, reason).
    fn check(&self) -> Result<(), (String, String)> {
        self.check_values().map_err(|(option, reason)| (option.to_owned(), reason.to_owned()))?;
        if let Some((option, reason)) = self.backup.check() {
            return Err((format!("backup.{option}"), reason));
        }
        self.check_backends()
    }

    /// Checks the top-level options.
    fn check_values(&self) -> Result<(), (&'static str, &'static str)> {
        let quotas = [
            ("quota_volumes", self.quota_volumes),
            ("quota_gigabytes", self.quota_gigabytes),
            ("quota_snapshots", self.quota_snapshots),
            ("quota_backups", self.quota_backups),
            ("quota_backup_gigabytes", self.quota_backup_gigabytes),
            ("per_volume_size_limit", self.per_volume_size_limit),
        ];
        if let Some((name, _)) = quotas.iter().find(|(_, v)| *v < -1) {
            return Err((name, "must be -1 (unlimited) or more"));
        }
        if self.auth_strategy == AuthStrategy::Token && self.tokens.is_empty() {
            return Err(("auth_strategy", "\"token\" needs at least one [tokens.\"<token>\"] section"));
        }
        if self.auth_strategy == AuthStrategy::Keystone
            && let Some(wrong) = self.keystone_authtoken.check()
        {
            return Err(wrong);
        }
        let db_schemes = ["sqlite:", "postgres:", "postgresql:"];
        if let Some(url) = &self.database_url
            && !db_schemes.iter().any(|s| url.starts_with(s))
        {
            return Err(("database_url", "must start with sqlite: or postgres://"));
        }
        if let Some(url) = &self.transport_url
            && !url.starts_with("amqp://")
            && !url.starts_with("amqps://")
        {
            return Err(("transport_url", "must start with amqp:// (leave it unset for the in-process bus)"));
        }
        let names = [
            ("host", &self.host),
            ("default_volume_type", &self.default_volume_type),
            ("storage_availability_zone", &self.storage_availability_zone),
        ];
        if let Some((name, _)) = names.iter().find(|(_, v)| v.is_empty()) {
            return Err((name, "must not be empty"));
        }
        if self.host.contains(['@', '#']) {
            return Err(("host", "must not contain '@' or '#' (they separate backend and pool)"));
        }
        let positive = [
            ("report_interval", self.report_interval),
            ("periodic_interval", self.periodic_interval),
            ("reservation_expire", self.reservation_expire),
            ("rpc_response_timeout", self.rpc_response_timeout),
            ("scheduler_max_attempts", u64::from(self.scheduler_max_attempts)),
            ("osapi_max_limit", u64::from(self.osapi_max_limit)),
            ("client_header_timeout", self.client_header_timeout),
            ("client_body_timeout", self.client_body_timeout),
            ("osapi_max_connections", u64::from(self.osapi_max_connections)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err((name, "must be at least 1"));
        }
        if self.service_down_time <= self.report_interval {
            return Err(("service_down_time", "must be longer than report_interval"));
        }
        Ok(())
    }

    /// Checks `enabled_backends` and every `[backends.<name>]` section.
    fn check_backends(&self) -> Result<(), (String, String)> {
        if let Some(name) = self.enabled_backends.iter().find(|n| !self.backends.contains_key(*n)) {
            let reason = format!("names {name:?}, which has no [backends.{name}] section");
            return Err(("enabled_backends".into(), reason));
        }
        for (name, backend) in &self.backends {
            if name.is_empty() || name.contains(['@', '#', '.']) {
                let reason = "a backend name must be non-empty without '@', '#' or '.'";
                return Err((format!("backends.{name}"), reason.into()));
            }
            if let Some((option, reason)) = backend.check() {
                return Err((format!("backends.{name}.{option}"), reason));
            }
        }
        Ok(())
    }

    /// `database_url`, or the SQLite file under `data_dir`.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("ember.db").display()))
    }

    /// The zone of volumes created without one.
    pub fn default_availability_zone(&self) -> &str {
        self.default_availability_zone.as_deref().unwrap_or(&self.storage_availability_zone)
    }

    /// The default quota limits (Cinder's `quota_*` options).
    pub fn quota_defaults(&self) -> QuotaDefaults {
        QuotaDefaults {
            volumes: self.quota_volumes,
            gigabytes: self.quota_gigabytes,
            snapshots: self.quota_snapshots,
            backups: self.quota_backups,
            backup_gigabytes: self.quota_backup_gigabytes,
            per_volume_gigabytes: self.per_volume_size_limit,
        }
    }

    /// The enabled backends with their sections, in `enabled_backends` order.
    pub fn enabled(&self) -> impl Iterator<Item = (&str, &BackendConfig)> {
        self.enabled_backends.iter().filter_map(|n| self.backends.get(n).map(|b| (n.as_str(), b)))
    }
}

/// Where the value of `option` came from, for messages.
fn source_of(figment: &Figment, option: &str) -> String {
    figment.find_metadata(option).map_or_else(|| "the defaults".into(), describe)
}

fn describe(meta: &figment::Metadata) -> String {
    match &meta.source {
        Some(Source::File(path)) => path.display().to_string(),
        _ => meta.name.to_string(),
    }
}

fn extract_error(figment: &Figment, err: figment::Error) -> ConfigError {
    let option = err.path.join(".");
    let source_name = match &err.metadata {
        Some(meta) => describe(meta),
        None => source_of(figment, &option),
    };
    ConfigError { option, source_name, reason: err.kind.to_string() }
}

#[cfg(test)]
mod tests;
