//! Ember's flow engine: durable flows of revertable tasks, after OpenStack taskflow.
//!
//! This crate knows nothing of volumes, HTTP, AMQP or SQL.
//!
//! # Model
//!
//! A [`Task`] has a unique name, the symbols it requires and provides (named by typed
//! [`Key`]s, so a rename is a compile error), an async `execute` and an async `revert`.
//! Tasks are arranged in [`Flow`]s: linear, unordered or graph (edges from
//! [`Flow::link`] and from requires/provides), nested freely, optionally under a [`Retry`]
//! controller. [`Flow::compile`] turns the tree into one DAG and rejects duplicate atom
//! names, cycles, ambiguous providers and (when the flow declares its inputs) requirements
//! nothing provides; every error names the atoms involved.
//!
//! An argument is looked up as in taskflow: a value injected for the atom
//! ([`AtomSpec::inject`]) wins, then the flow's inputs, then the nearest upstream atom
//! that provides the symbol (after [`AtomSpec::rebind`]).
//!
//! ```
//! use std::sync::Arc;
//! use ember_engine::{async_trait, Context, Engine, Failure, Flow, Key, MemoryStore, Task, Values};
//!
//! const SIZE: Key<u64> = Key::new("size");
//! const RESERVATION: Key<u64> = Key::new("reservation");
//!
//! /// Reserves quota for the volume. Revert: releases the reservation.
//! struct QuotaReserve;
//!
//! #[async_trait]
//! impl Task for QuotaReserve {
//!     fn name(&self) -> &str {
//!         "quota_reserve"
//!     }
//!     fn requires(&self) -> &[&'static str] {
//!         const R: &[&str] = &[SIZE.name()];
//!         R
//!     }
//!     fn provides(&self) -> &[&'static str] {
//!         const P: &[&str] = &[RESERVATION.name()];
//!         P
//!     }
//!     async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
//!         Ok(Values::new().with(&RESERVATION, ctx.get(&SIZE)? * 1024))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let flow = Flow::linear("create_volume").add(QuotaReserve).inputs(&[SIZE.name()]).compile()?;
//! let engine = Engine::new(Arc::new(MemoryStore::new()));
//! let out = engine.run(&flow, Values::new().with(&SIZE, 2)).await?;
//! assert_eq!(out.get(&RESERVATION).unwrap(), Some(2048));
//! # Ok::<(), ember_engine::EngineError>(())
//! # }).unwrap();
//! ```
//!
//! # Running
//!
//! An [`Engine`] runs a compiled flow: atoms whose predecessors all succeeded run
//! concurrently, up to `max_concurrency`; readiness is tracked with in-degree counters, so
//! a step costs the same in a flow of 10 atoms or of 1000. When an atom fails and no retry
//! covers it, every atom that ran is reverted once, in reverse dependency order, the failed
//! one included, and the run returns [`EngineError::Failed`] with the failing atom's name
//! and its original failure; the flow ends REVERTED. A failing revert stops reverting and
//! the flow ends FAILURE (the atom REVERT_FAILURE).
//!
//! Retries ([`Retry::times`], [`Retry::for_each`], with a [`Backoff`]) decide after a
//! failure in their subflow: RETRY reverts the subflow and runs it again; REVERT reverts it
//! and defers to the enclosing retry, the whole flow being reverted when there is none
//! (taskflow's `defer_reverts=True`, which taskflow's own docs call the desirable
//! behaviour; it is the only one here); REVERT_ALL reverts everything.
//!
//! States, intentions and their one transition table are in [`state`]; the engine refuses
//! an illegal transition with an error.
//!
//! # Persistence (always on)
//!
//! Every run is recorded in a [`FlowStore`] ([`MemoryStore`] here; the SQL store for
//! SQLite and PostgreSQL lives in `ember-db`). A step writes one batch: the results of
//! the atoms that finished together with the RUNNING state of the atoms about to start,
//! so RUNNING is stored before `execute` starts and a result is stored right after it
//! returns, before anything that depends on it starts. Only changed atoms are written;
//! an atom without a record is PENDING.
//!
//! Flows are owned through a lease ([`EngineOptions::lease`]) that the engine renews while
//! it runs; every write is fenced by (owner, claim epoch), so a worker that lost its flow
//! to a peer cannot write to it any more. A [`Worker`] claims PENDING unowned flows and
//! flows whose lease lapsed, rebuilds them with a factory from its [`Registry`] (by flow
//! name, from the stored inputs) and resumes them.
//!
//! # The contract on tasks
//!
//! Because a crash can happen between any two writes:
//!
//! - **execute must be idempotent.** An atom found RUNNING on resume is executed again
//!   from scratch with the same inputs, although its first execute may have done all or
//!   part of its work. [`Context::attempt`] says how many times it was started: more than
//!   1 means "maybe executed before", so the task should look for (and adopt) what an
//!   earlier attempt made, e.g. by deriving resource names from the inputs.
//! - **revert must be idempotent and tolerant.** It may run twice (a crash inside it),
//!   with `result()` absent (the atom was running when the revert was decided), or with
//!   `failure()` set (its own execute failed).
//! - **Inputs and results must serialize to JSON** to survive a restart. They stay typed
//!   in memory; a value restored from a store is deserialized when a task reads it.
//! - **Tasks must not block the thread**: the atoms of one flow run as futures on the
//!   engine's own task (no spawn per atom), so blocking work belongs in
//!   `tokio::task::spawn_blocking`. A panic in a task is caught and becomes a failure.
//!
//! # Observability
//!
//! Every transition is a `tracing` debug event carrying `flow_id`, `flow` and `atom`, and
//! goes to every [`Listener`]; a compiled flow draws itself as DOT
//! ([`CompiledFlow::to_dot`]) or Mermaid ([`CompiledFlow::to_mermaid`]).

pub mod compile;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod flow;
pub mod listener;
mod render;
pub mod retry;
mod runner;
pub mod state;
pub mod store;
pub mod task;
pub mod value;
pub mod worker;

pub use compile::CompiledFlow;
pub use engine::{Engine, EngineOptions, FlowSpec};
pub use error::{EngineError, FlowFailed, Result};
pub use flow::{Flow, Item, Pattern};
pub use listener::{CaptureListener, Event, FlowEndWatch, FlowEnds, Listener};
pub use retry::{Attempt, Backoff, Decision, History, Retry};
pub use runner::Outcome;
pub use state::{
    AtomKind, AtomState, FlowState, Intention, Transitions, can_transition, can_transition_atom,
};
pub use store::{
    AtomRecord, AtomWrite, ClaimRequest, Fence, FlowDetail, FlowFilter, FlowRecord, FlowStore, MemoryStore,
    NewFlow, Ownership, Progress, WriteBatch,
};
pub use task::{AtomSpec, Context, RevertContext, Task};
pub use value::{Failure, Key, Name, Slot, Value, Values};
pub use worker::{Registry, Worker, WorkerHandle, WorkerOptions, WorkerStats};

/// Re-exported so tasks can be written without naming the crate's dependency.
pub use async_trait::async_trait;
