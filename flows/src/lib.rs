//! Cinder's volume flows on Ember's flow engine: create (api, scheduler and volume manager
//! flows), delete, extend, snapshot create and delete, and attach and detach.
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
//!   [`handoff`]), for deletes the request's api flow (a volume or snapshot left in
//!   `error_deleting` may be deleted again), so recording it twice records it once
//!   (insert-or-ignore by id);
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
//!   time) and then commit the release reserved by the step before, which is idempotent. A
//!   cascade's snapshots go the same way in steps of their own, each step covering all of
//!   them, so the release of every snapshot is stored before the first row goes.
//!
//! - `ScheduleCreateVolumeTask`, run again, first looks for the manager flow of its attempt
//!   (handed off already: done), then for a host on the row (placed but not handed off:
//!   hand off to that backend with the retry bookkeeping the dead run made).
//! - Swaps that a re-run finds already made (`deleting`, `extending`) are adopted only when
//!   `Context::attempt` says the task ran before; on a first run a lost swap is a 400.
//!
//! - Attach and detach: the attachment's entry uses the id fixed in the inputs; the
//!   reserve, run again after its entry exists, adopts it; saving the connector and the
//!   connection info are swaps from `reserved` or `attaching` that a re-run makes again
//!   with the same values; `initialize_connection` answers the same to the same arguments
//!   and revoking or removing what is gone succeeds (the drivers' contract);
//!   `AttachmentComplete` finds `attached` done; a soft delete of a deleted attachment is
//!   a no-op; recomputing the volume's status from its attachments is one statement.
//!
//! Reverts read only the arguments their task declares (the engine hands a revert the same
//! arguments as its execute), and must tolerate a missing result.
//!
//! Quota moves are keyed by flow and task (`QuotaRepo::reserve_once`): a task run again gets
//! its reservation back, a revert hands usage back once however often it runs, and a revert
//! that never saw its task's reservation ids rolls them back by key. One window remains: a
//! database failure between `EntryDestroyTask`'s soft delete and its commit leaves the
//! release uncommitted when the flow is reverted rather than resumed; an operator's `quota
//! sync` repairs it.
//!
//! A failed flow leaves nothing in transition: the first task of every scheduler and manager
//! flow errors its resource out (`error`, `error_deleting`, `error_extending`) when the flow
//! reverts, and a hand-off task's revert withdraws a hand-off no process took, or else stops
//! the revert so the receiving flow keeps the resource.
//!
//! # Where Ember departs from Cinder
//!
//! - `QuotaCommitTask`'s revert destroys the entry it hands usage back for; Cinder leaves
//!   the row in `error`, whose later delete would release the usage a second time.
//! - Attach and detach are flows (Cinder's are RPC calls): the API request waits for the
//!   volume flow it handed off by reading its record, up to `rpc_response_timeout`. A
//!   failed export reverts: the connector is revoked, the export removed unless another
//!   attachment needs it, the attachment left in `error_attaching` and the volume's status
//!   recomputed (so `available` again, or `in-use` when attached elsewhere). Legacy
//!   `os-initialize_connection` records an attachment (Cinder records none until
//!   `os-attach`), so every export has an attachment that holds it.
//! - Delete, extend and snapshots are flows (Cinder has plain methods), and extend and
//!   snapshot create go to the volume's backend directly, without the scheduler's capacity
//!   check on that backend.
//! - `OnFailureRescheduleTask` stops at `scheduler_max_attempts` itself instead of casting
//!   one more time to a scheduler that would refuse it; the outcome (`error`) is the same.
//! - A cascade delete moves the volume and its snapshots to `deleting` in one transaction,
//!   or none of them: a snapshot in another status is a clean 400 that changes nothing,
//!   where Cinder's separate swaps leave the volume in `error_deleting`. The backend deletes
//!   every snapshot, then releases their usage and removes their rows together, then does
//!   the same for the volume (Cinder finishes each snapshot in turn); a failure leaves the
//!   snapshots not yet removed and the volume in `error_deleting`, including a snapshot the
//!   driver found busy (Cinder puts that one back to `available` and carries on).
//! - A volume from a backup (3.47) is scheduled and made blank like any create, then
//!   `RestoreBackupCastTask` swaps the backup to `restoring` and the volume to
//!   `restoring-backup` and hands the restore to the backup's service; a re-run that finds
//!   the restore recorded does nothing more (the restore owns both).
//! - Not yet: volumes from images (a clear 400 up front), the availability-zone
//!   check against the services' zones, and holding a snapshot or source volume against
//!   deletion while a volume is made from it.

pub mod api;
pub mod attach_ops;
pub mod attachments;
pub mod backup;
pub mod backup_ops;
pub mod backups;
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

pub use attach_ops::FlowAttachOps;
pub use attachments::ensure_exports;
pub use backup_ops::FlowBackupOps;
pub use backups::backup_topic;
pub use deps::{BackupStore, Deps, DriverLookup, FlowConfig, LocalWake, Wake};
pub use error::{Error, Result};
pub use handoff::{API_TOPIC, SCHEDULER_TOPIC, volume_topic};
pub use ops::FlowVolumeOps;
pub use register::{register_api, register_backup, register_scheduler, register_shapes, register_volume};
