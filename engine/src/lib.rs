//! Ember's flow engine: durable flows of revertable tasks, after OpenStack taskflow.
//!
//! This crate knows nothing of volumes, HTTP, AMQP or SQL.
