//! Observability: every transition is a tracing event and goes to the registered listeners.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;

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

    /// A flow's final state is in the store: a reader of the store sees it from now on.
    fn on_flow_stored(&self, _flow_id: &str, _state: FlowState) {}
}

/// Wakes whoever waits in this process for a flow to end, as soon as an engine of the
/// process (one this listener was given to) has stored the end: a waiter that reads the
/// store then needs no polling. Flows run by other processes never wake it, so a waiter
/// keeps a polling fallback.
#[derive(Debug, Default)]
pub struct FlowEnds {
    waiting: Mutex<HashMap<String, Vec<Weak<Notify>>>>,
}

/// One wait on the end of one flow, from [`FlowEnds::watch`].
#[derive(Debug)]
pub struct FlowEndWatch {
    ends: Arc<FlowEnds>,
    flow_id: String,
    notify: Arc<Notify>,
}

impl FlowEnds {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts watching flow `flow_id`. Call it before reading the store: an end stored
    /// after this call is never missed (the wake is kept until [`FlowEndWatch::ended`]).
    pub fn watch(self: &Arc<Self>, flow_id: &str) -> FlowEndWatch {
        let notify = Arc::new(Notify::new());
        self.waiting.lock().entry(flow_id.to_owned()).or_default().push(Arc::downgrade(&notify));
        FlowEndWatch { ends: self.clone(), flow_id: flow_id.to_owned(), notify }
    }

    /// How many flows are watched now (for tests: watches are forgotten when dropped).
    pub fn watched(&self) -> usize {
        self.waiting.lock().len()
    }
}

impl FlowEndWatch {
    /// Returns once the flow's end was stored since [`FlowEnds::watch`].
    pub async fn ended(&self) {
        self.notify.notified().await;
    }
}

impl Drop for FlowEndWatch {
    fn drop(&mut self) {
        let mut waiting = self.ends.waiting.lock();
        if let Some(list) = waiting.get_mut(&self.flow_id) {
            list.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.notify)));
            if list.is_empty() {
                waiting.remove(&self.flow_id);
            }
        }
    }
}

impl Listener for FlowEnds {
    fn on_event(&self, _event: &Event) {}

    fn on_flow_stored(&self, flow_id: &str, _state: FlowState) {
        let Some(list) = self.waiting.lock().remove(flow_id) else { return };
        // `notify_one` keeps the wake for a waiter not polling yet.
        list.iter().filter_map(Weak::upgrade).for_each(|n| n.notify_one());
    }
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
