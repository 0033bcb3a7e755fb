//! The engine's error type: compile errors that name the atoms involved, store errors and
//! the outcome of a flow that did not succeed.

use crate::state::{AtomState, FlowState, Intention};
use crate::value::Failure;

/// Errors of the flow engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("flow {flow:?}: duplicate atom name {atom:?}")]
    DuplicateName { flow: String, atom: String },
    #[error("flow {flow:?}: cycle through atoms {atoms:?}")]
    Cycle { flow: String, atoms: Vec<String> },
    #[error("flow {flow:?}: atom {atom:?} requires {symbol:?}, which nothing provides")]
    MissingRequirement { flow: String, atom: String, symbol: String },
    #[error("flow {flow:?}: atom {atom:?} requires {symbol:?}, provided ambiguously by {providers:?}")]
    AmbiguousProvider { flow: String, atom: String, symbol: String, providers: Vec<String> },
    #[error("flow {flow:?}: link names {item:?}, which is not an item of graph flow {graph:?}")]
    UnknownLinkTarget { flow: String, graph: String, item: String },
    #[error("flow {flow:?}: atom {atom:?} may not go from {from} to {to}")]
    IllegalAtomTransition { flow: String, atom: String, from: AtomState, to: AtomState },
    #[error("flow {flow:?}: atom {atom:?} may not change intention from {from} to {to}")]
    IllegalIntention { flow: String, atom: String, from: Intention, to: Intention },
    #[error("flow {flow:?} may not go from {from} to {to}")]
    IllegalFlowTransition { flow: String, from: FlowState, to: FlowState },
    #[error("flow {flow_id}: this worker no longer holds its lease (another one claimed it)")]
    LeaseLost { flow_id: String },
    #[error("flow {flow_id} exists already (hand-offs use Engine::submit)")]
    AlreadyExists { flow_id: String },
    #[error("flow {flow_id} was suspended")]
    Suspended { flow_id: String },
    #[error("flow {flow_id} was not found")]
    NotFound { flow_id: String },
    #[error("no factory is registered for flow name {0:?}")]
    UnknownFactory(String),
    #[error("flow {flow_id}: stored data cannot be used: {message}")]
    Corrupt { flow_id: String, message: String },
    #[error("flow store: {0}")]
    Store(String),
    /// The store cannot be reached or written for now (a database that is down, a full
    /// disk): the same call may succeed later, so a run waits for it rather than give up.
    #[error("flow store unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(Box<FlowFailed>),
}

/// How a flow that did not succeed ended: the original failure and, if reverting failed
/// too, the revert failure.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowFailed {
    pub flow_id: String,
    pub flow: String,
    /// REVERTED when every atom that ran was reverted, FAILURE when a revert failed.
    pub state: FlowState,
    /// The atom whose failure started the revert.
    pub atom: String,
    /// Its failure: the original error.
    pub failure: Failure,
    /// The atom whose revert failed, if one did, and how.
    pub revert_failure: Option<(String, Failure)>,
}

impl std::fmt::Display for FlowFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flow {} ({}) ended {}: atom {:?} failed: {}",
            self.flow_id, self.flow, self.state, self.atom, self.failure
        )?;
        if let Some((a, e)) = &self.revert_failure {
            write!(f, "; then reverting atom {a:?} failed: {e}")?;
        }
        Ok(())
    }
}

/// The engine's result.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
