//! Cinder-style RPC between Ember's processes: cast, call and fanout over a transport.
//!
//! [`RpcClient`] sends, [`RpcServer`] runs an [`Endpoint`]'s methods by name, and a
//! [`Transport`] carries the [`Envelope`]s: [`InProcess`] for the all-in-one mode and
//! [`Amqp`] (RabbitMQ) between machines. Delivery is at least once; handlers must be idempotent.

pub mod amqp;
mod client;
mod envelope;
mod error;
mod inprocess;
mod server;
mod target;
mod transport;

pub use amqp::{Amqp, AmqpOptions};
pub use client::{DEFAULT_CALL_TIMEOUT, RpcClient};
pub use envelope::{CallInfo, Context, Envelope, Outcome, Reply, Version, new_request_id};
pub use error::{Error, RemoteError, Result};
pub use inprocess::InProcess;
pub use server::{Endpoint, RpcServer};
pub use target::{BACKUP_TOPIC, SCHEDULER_TOPIC, Target, VOLUME_TOPIC};
pub use transport::{Dispatcher, ListenOptions, ServerHandle, Transport};
