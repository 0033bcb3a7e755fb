//! Observability: every transition is a tracing event and goes to the registered listeners.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::state::{AtomKind, AtomState, FlowState, Intention};

/// One transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Flow {
        flow_id: Arc<str>,
        flow: Arc<str>,
        from: FlowState,
        to: FlowState,
    },
    Atom {
        flow_id: Arc<str>,
        flow: Arc<str>,
        atom: Arc<str>,
        kind: AtomKind,
        from: AtomState,
        to: AtomState,
        intention: Intention,
        attempt: u32,
    },
}

/// A subscriber to transitions (metrics, logs, tests). Called inline by the engine, so it
/// must be quick and must not block.
pub trait Listener: Send + Sync + 'static {
    fn on_event(&self, event: &Event);
}

/// Records every event, for tests.
#[derive(Debug, Default)]
pub struct CaptureListener {
    events: Mutex<Vec<Event>>,
}

impl CaptureListener {
    /// An empty recorder.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }

    /// `(atom, to)` for every atom transition, in order.
    pub fn atom_transitions(&self) -> Vec<(String, AtomState)> {
        self.events
            .lock()
            .iter()
            .filter_map(|e| match e {
                Event::Atom { atom, to, .. } => Some((atom.to_string(), *to)),
                Event::Flow { .. } => None,
            })
            .collect()
    }

    /// Forgets the events so far.
    pub fn clear(&self) {
        self.events.lock().clear();
    }
}

impl Listener for CaptureListener {
    fn on_event(&self, event: &Event) {
        self.events.lock().push(event.clone());
    }
}
