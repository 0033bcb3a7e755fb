//! Cinder-style RPC between Ember's processes: cast, call and fanout over a transport.
//!
//! [`RpcClient`] sends, [`RpcServer`] runs an [`Endpoint`]'s methods by name, and a
//! [`Transport`] carries the [`Envelope`]s: [`InProcess`] for the all-in-one mode and
//! [`Amqp`] (RabbitMQ) between machines. Delivery is at least once; handlers must be idempotent.
//!
//! ```
//! use std::sync::Arc;
//!
//! use async_trait::async_trait;
//! use ember_rpc::{Context, Endpoint, InProcess, ListenOptions, Outcome, RemoteError, RpcClient};
//! use ember_rpc::{RpcServer, SCHEDULER_TOPIC, Target, Version};
//! use serde_json::{Value, json};
//!
//! /// A manager serving version 3.12 of its interface.
//! struct Scheduler;
//!
//! #[async_trait]
//! impl Endpoint for Scheduler {
//!     fn version(&self) -> Version {
//!         Version { major: 3, minor: 12 }
//!     }
//!
//!     async fn handle(&self, _ctx: &Context, method: &str, _args: &Value) -> Outcome {
//!         match method {
//!             "get_pools" => Ok(json!([{"name": "node1@lvm#pool"}])),
//!             _ => Err(RemoteError::unknown_method(method)),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ember_rpc::Result<()> {
//! let bus = Arc::new(InProcess::new());
//! let target = Target::topic(SCHEDULER_TOPIC);
//! let server = RpcServer::new(Scheduler).listen(&*bus, &target, ListenOptions::default()).await?;
//! let client = RpcClient::new(bus, "3.0");
//! let timeout = ember_rpc::DEFAULT_CALL_TIMEOUT;
//! let pools = client.call(&Context::internal(), &target, "get_pools", json!({}), timeout).await?;
//! assert_eq!(pools[0]["name"], "node1@lvm#pool");
//! server.stop().await;
//! # Ok(())
//! # }
//! ```

pub mod amqp;
mod client;
mod clock;
mod envelope;
mod error;
mod inprocess;
pub mod registry;
mod server;
mod target;
mod transport;

pub use amqp::{Amqp, AmqpOptions};
pub use client::{DEFAULT_CALL_TIMEOUT, RpcClient};
pub use clock::Clock;
pub use envelope::{CallInfo, Context, Envelope, Outcome, Reply, Version, new_request_id};
pub use error::{Error, RemoteError, Result};
pub use inprocess::InProcess;
pub use registry::{Registry, RegistryHandle, RegistryOptions, ServiceSpec, is_up};
pub use server::{Endpoint, RpcServer};
pub use target::{BACKUP_TOPIC, SCHEDULER_TOPIC, Target, VOLUME_TOPIC};
pub use transport::{Dispatcher, ListenOptions, ServerHandle, Transport};
