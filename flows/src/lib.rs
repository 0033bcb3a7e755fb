//! Cinder's volume flows on Ember's flow engine: create (api, scheduler and volume manager
//! flows), delete, extend, and snapshot create and delete.
//!
//! Each flow lives in a file of its own that reads like Cinder's `get_flow`: a doc comment
//! numbering the steps, the tasks (each with its one `Revert:` line), then the builder.
//! Flows hold repositories as trait objects ([`Deps`]) and never touch SQL, the message bus
//! or a driver's internals directly.
//!
//! # Hand-offs between processes
//!
//! A flow that passes work to another process (api → scheduler → volume manager, and back
//! to the scheduler on a reschedule) does not send the work in a message. Its last task
//! records the next flow in the [`FlowStore`](ember_engine::FlowStore) as a PENDING, unowned
//! flow with
//!
//! - a **deterministic id** built from the resource id, the operation and, for creates,
//!   the scheduling attempt (`volume_create_manager:<volume id>:<attempt>`, see
//!   [`handoff`]), so recording it twice records it once (insert-or-ignore by id);
//! - a **topic**: [`SCHEDULER_TOPIC`] for scheduler flows, `volume.<host@backend>`
//!   ([`volume_topic`]) for the volume manager flows of one backend, [`API_TOPIC`] for the
//!   api flows (which a peer API resumes if the process that started them dies).
//!
//! Then it calls the [`Wake`] hook with the topic; the process wires the hook to an RPC
//! cast or an in-process notify ([`LocalWake`]) so a worker of that topic claims the flow
//! at once. A lost wake costs only latency: every worker's periodic sweep claims any flow
//! of its topics that nobody announced, and flows whose owner's lease lapsed. The bus thus
//! carries no state: a restart of the broker or of any process loses nothing.
//!
//! # Idempotency, task by task
//!
//! The engine runs a task again when it finds it RUNNING after a crash, so every task may
//! run twice (see `ember_engine`'s crate docs). How each one copes:
//!
//! - Extract tasks only read.
//! - Quota reserve: a second reservation may be made if the process died between the
//!   reservation and the write of its ids; the orphan only holds `reserved` until it
//!   expires (`reservation_expire`), never `in_use`. Releases are negative reservations,
//!   and an orphaned negative reservation changes nothing.
//! - Quota commit and rollback skip reservations already committed or rolled back.
//! - Entry create uses the id fixed in the flow's inputs; a duplicate means an earlier
//!   attempt inserted it, and the row is adopted.
//! - Status changes are compare-and-swap; a task that loses the swap reads the row and
//!   succeeds when the row already shows its own effect (e.g. `available` with the new size).
//! - Hand-offs are insert-or-ignore by deterministic id (above).
//! - Driver calls rely on the drivers' contract: creating what exists with the same size
//!   succeeds, deleting what is missing succeeds.
//! - Destroy-and-release tasks soft-delete the row (a compare-and-swap, a no-op the second
//!   time) and then commit the release reserved by the step before, which is idempotent.
//!
//! One window remains, written down where it is: a revert that hands usage back after a
//! commit (`QuotaCommit`'s) gives it back at most once; a crash between its swap and its
//! release leaves the usage counted (an operator's `quota sync` repairs it).

pub mod api;
pub mod deps;
pub mod error;
pub mod handoff;
pub mod keys;
pub mod manager;
pub mod ops;
pub mod quota;
pub mod register;
pub mod scheduler;
mod tasks;

pub use deps::{Deps, DriverLookup, FlowConfig, LocalWake, Wake};
pub use error::{Error, Result};
pub use handoff::{API_TOPIC, SCHEDULER_TOPIC, volume_topic};
pub use ops::FlowVolumeOps;
pub use register::{register_api, register_scheduler, register_volume};
