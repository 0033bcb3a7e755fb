//! Durable hand-offs: the next flow is recorded as a PENDING, unowned flow with a
//! deterministic id and a topic, then the topic's workers are woken (see the crate docs).

use ember_engine::{Failure, NewFlow, Values, failpoint};

use crate::deps::Deps;

/// The topic of api flows (resumed by any API process).
pub const API_TOPIC: &str = "api";
/// The topic of scheduler flows.
pub const SCHEDULER_TOPIC: &str = "scheduler";

/// The create flow of the scheduler, handed off by the api flow and by a reschedule.
pub const VOLUME_CREATE_SCHEDULER: &str = "volume_create_scheduler";
/// The create flow of the volume manager, handed off by the scheduler flow.
pub const VOLUME_CREATE_MANAGER: &str = "volume_create_manager";

/// The topic of the volume manager flows of `backend` (`host@backend`).
pub fn volume_topic(backend: &str) -> String {
    format!("volume.{backend}")
}

/// The deterministic id of flow `name` on resource `id`, for attempt `attempt` if the
/// operation may run more than once (creates are rescheduled).
pub fn flow_id(name: &str, id: &str, attempt: Option<u32>) -> String {
    match attempt {
        Some(a) => format!("{name}:{id}:{a}"),
        None => format!("{name}:{id}"),
    }
}

/// The id of flow `name` on resource `id` handed off by the api flow `api_flow_id` (one
/// request): the api flow's own unique suffix keeps it deterministic, so a re-run of the
/// hand-off records it once, while a later request on the same resource (an admin's force
/// delete after `error_deleting`) records a flow of its own.
pub fn request_flow_id(name: &str, id: &str, api_flow_id: &str) -> String {
    let request = api_flow_id.rsplit(':').next().unwrap_or(api_flow_id);
    format!("{name}:{id}:{request}")
}

/// One flow to hand to another process.
#[derive(Debug)]
pub(crate) struct Handoff<'a> {
    pub name: &'a str,
    pub id: String,
    pub topic: String,
    pub subject: &'a str,
    pub inputs: Values,
}

/// The revert of a hand-off task: withdraws the hand-off `id` if no process took it yet (so
/// the reverts before it may undo the request), or fails when one did (the operation goes on
/// there, and the reverts before must not pull the resource from under it: the flow ends in
/// FAILURE, the resource is the receiving flow's).
pub(crate) async fn withdraw(deps: &Deps, id: &str) -> Result<(), Failure> {
    match deps.store.cancel(id).await {
        Ok(Some(true)) => {
            tracing::info!(flow_id = %id, "hand-off withdrawn before any process took it");
            Ok(())
        }
        Ok(None) => Ok(()),
        Ok(Some(false)) => Err(Failure::new(
            "HandoffTaken",
            format!("flow {id} was taken by its receiver, which carries the operation on"),
        )),
        Err(e) => Err(Failure::new(store_failure_kind(&e), format!("withdrawing flow {id} failed: {e}"))),
    }
}

/// The failure kind of a flow store error: transient when the store is unavailable, so a
/// worker's run waits and tries again rather than revert.
fn store_failure_kind(e: &ember_engine::EngineError) -> &'static str {
    match e {
        ember_engine::EngineError::Unavailable(_) => "service.unavailable",
        _ => "service.internal",
    }
}

/// Records the flow unless its id exists (insert-or-ignore), then wakes its topic.
/// Returns whether this call recorded it.
pub(crate) async fn hand_off(deps: &Deps, h: Handoff<'_>) -> Result<bool, Failure> {
    failpoint::hit(|| format!("handoff.{}.before", h.name));
    let new = NewFlow {
        id: h.id,
        name: h.name.to_owned(),
        inputs: h.inputs,
        topic: h.topic,
        subject: Some(h.subject.to_owned()),
        owner: None,
    };
    let (record, created) = deps.store.create_flow(&new).await.map_err(|e| {
        tracing::warn!(flow_id = %new.id, error = %e, "recording a hand-off failed");
        Failure::new(store_failure_kind(&e), format!("recording flow {} failed: {e}", new.id))
    })?;
    if !created {
        tracing::debug!(flow_id = %record.id, "hand-off recorded by an earlier attempt");
    }
    // Between the record and the wake: the next process must find the flow by its sweep.
    failpoint::hit(|| format!("handoff.{}.after", record.name));
    // Wake even when it existed: the earlier attempt may have died before waking.
    deps.wake.wake(&record.topic);
    Ok(created)
}
