//! Registration of the flow factories of each role in an engine [`Registry`], so a
//! [`Worker`](ember_engine::Worker) rebuilds a stored flow from its name and inputs.

use std::sync::Arc;

use ember_engine::{Flow, Registry, Values};

use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::{api, backup, manager, scheduler};

fn add(registry: &mut Registry, name: &'static str, deps: &Arc<Deps>, build: fn(Arc<Deps>) -> Flow) {
    let deps = deps.clone();
    registry.register(name, move |_: &Values| Ok(build(deps.clone())));
}

/// The api role's flows, so a peer API resumes the flows of one that died.
pub fn register_api(registry: &mut Registry, deps: &Arc<Deps>) {
    add(registry, api::create_volume::FLOW, deps, api::create_volume::get_flow);
    add(registry, api::delete_volume::FLOW, deps, api::delete_volume::get_flow);
    add(registry, api::extend_volume::FLOW, deps, api::extend_volume::get_flow);
    add(registry, api::create_snapshot::FLOW, deps, api::create_snapshot::get_flow);
    add(registry, api::delete_snapshot::FLOW, deps, api::delete_snapshot::get_flow);
    add(registry, api::create_attachment::FLOW, deps, api::create_attachment::get_flow);
    add(registry, api::update_attachment::FLOW, deps, api::update_attachment::get_flow);
    add(registry, api::complete_attachment::FLOW, deps, api::complete_attachment::get_flow);
    add(registry, api::delete_attachment::FLOW, deps, api::delete_attachment::get_flow);
    add(registry, api::delete_reserved_attachment::FLOW, deps, api::delete_reserved_attachment::get_flow);
    add(registry, api::legacy_attachment::FLOW, deps, api::legacy_attachment::get_flow);
    add(registry, api::legacy_swaps::RESERVE_FLOW, deps, api::legacy_swaps::reserve_flow);
    add(registry, api::legacy_swaps::UNRESERVE_FLOW, deps, api::legacy_swaps::unreserve_flow);
    add(registry, api::legacy_swaps::BEGIN_DETACHING_FLOW, deps, api::legacy_swaps::begin_detaching_flow);
    add(registry, api::legacy_swaps::ROLL_DETACHING_FLOW, deps, api::legacy_swaps::roll_detaching_flow);
    add(registry, api::create_backup::FLOW, deps, api::create_backup::get_flow);
    add(registry, api::delete_backup::FLOW, deps, api::delete_backup::get_flow);
    add(registry, api::restore_backup::FLOW, deps, api::restore_backup::get_flow);
}

/// The backup role's flows; `deps` must hold the backup store.
pub fn register_backup(registry: &mut Registry, deps: &Arc<Deps>) -> Result<()> {
    if deps.backup_store.is_none() {
        return Err(Error::MissingDependency("a backup store for the backup role"));
    }
    add_backup(registry, deps);
    Ok(())
}

fn add_backup(registry: &mut Registry, deps: &Arc<Deps>) {
    add(registry, backup::create_backup::FLOW, deps, backup::create_backup::get_flow);
    add(registry, backup::restore_backup::FLOW, deps, backup::restore_backup::get_flow);
    add(registry, backup::delete_backup::FLOW, deps, backup::delete_backup::get_flow);
}

fn add_volume_backup(registry: &mut Registry, deps: &Arc<Deps>) {
    use manager::backup_device as bd;
    add(registry, bd::EXPORT_FLOW, deps, bd::export_flow);
    add(registry, bd::RELEASE_FLOW, deps, bd::release_flow);
    add(registry, bd::PREPARE_FLOW, deps, bd::prepare_flow);
    add(registry, bd::COMMIT_FLOW, deps, bd::commit_flow);
}

/// The scheduler role's flows; `deps` must hold a scheduler.
pub fn register_scheduler(registry: &mut Registry, deps: &Arc<Deps>) -> Result<()> {
    if deps.scheduler.is_none() {
        return Err(Error::MissingDependency("a scheduler for the scheduler role"));
    }
    add(registry, scheduler::create_volume::FLOW, deps, scheduler::create_volume::get_flow);
    Ok(())
}

/// The volume role's flows; `deps` must hold the drivers of the backends this process
/// serves (its workers claim the topics `volume.<backend>` of those backends).
pub fn register_volume(registry: &mut Registry, deps: &Arc<Deps>) -> Result<()> {
    if deps.drivers.is_none() {
        return Err(Error::MissingDependency("drivers for the volume role"));
    }
    add(registry, manager::create_volume::FLOW, deps, manager::create_volume::get_flow);
    add(registry, manager::delete_volume::FLOW, deps, manager::delete_volume::get_flow);
    add(registry, manager::extend_volume::FLOW, deps, manager::extend_volume::get_flow);
    add(registry, manager::create_snapshot::FLOW, deps, manager::create_snapshot::get_flow);
    add(registry, manager::delete_snapshot::FLOW, deps, manager::delete_snapshot::get_flow);
    add(registry, manager::update_attachment::FLOW, deps, manager::update_attachment::get_flow);
    add(registry, manager::delete_attachment::FLOW, deps, manager::delete_attachment::get_flow);
    add_volume_backup(registry, deps);
    Ok(())
}

/// Every role's flows, for drawing only (the admin view rebuilds a stored flow's shape from
/// its name). The flows are built without the scheduler or drivers their tasks need to
/// execute, so this registry must never be given to a worker.
pub fn register_shapes(registry: &mut Registry, deps: &Arc<Deps>) {
    register_api(registry, deps);
    add(registry, scheduler::create_volume::FLOW, deps, scheduler::create_volume::get_flow);
    add(registry, manager::create_volume::FLOW, deps, manager::create_volume::get_flow);
    add(registry, manager::delete_volume::FLOW, deps, manager::delete_volume::get_flow);
    add(registry, manager::extend_volume::FLOW, deps, manager::extend_volume::get_flow);
    add(registry, manager::create_snapshot::FLOW, deps, manager::create_snapshot::get_flow);
    add(registry, manager::delete_snapshot::FLOW, deps, manager::delete_snapshot::get_flow);
    add(registry, manager::update_attachment::FLOW, deps, manager::update_attachment::get_flow);
    add(registry, manager::delete_attachment::FLOW, deps, manager::delete_attachment::get_flow);
    add_volume_backup(registry, deps);
    add_backup(registry, deps);
}
