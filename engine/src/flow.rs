//! Flow patterns: linear, unordered and graph flows of atoms and nested flows.

use crate::retry::Retry;
use crate::task::{AtomSpec, Task};

/// How a flow orders its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Each item runs after the previous one.
    Linear,
    /// No order: items may run at the same time; they cannot see each other's outputs.
    Unordered,
    /// Order from explicit links and from requires/provides between items.
    Graph,
}

/// An item of a flow: an atom or a nested flow.
#[derive(Clone)]
pub enum Item {
    Atom(AtomSpec),
    Flow(Flow),
}

impl<T: Task> From<T> for Item {
    fn from(task: T) -> Self {
        Item::Atom(AtomSpec::new(task))
    }
}

impl From<AtomSpec> for Item {
    fn from(spec: AtomSpec) -> Self {
        Item::Atom(spec)
    }
}

impl From<Flow> for Item {
    fn from(flow: Flow) -> Self {
        Item::Flow(flow)
    }
}

impl Item {
    /// The atom's or the nested flow's name.
    pub fn name(&self) -> &str {
        match self {
            Item::Atom(a) => a.name(),
            Item::Flow(f) => &f.name,
        }
    }
}

/// A flow: a pattern over items, optionally under a retry controller.
#[derive(Clone)]
pub struct Flow {
    pub(crate) name: String,
    pub(crate) pattern: Pattern,
    pub(crate) items: Vec<Item>,
    pub(crate) links: Vec<(String, String)>,
    pub(crate) retry: Option<Retry>,
    pub(crate) inputs: Option<Vec<&'static str>>,
}

impl Flow {
    fn new(name: impl Into<String>, pattern: Pattern) -> Self {
        Self { name: name.into(), pattern, items: Vec::new(), links: Vec::new(), retry: None, inputs: None }
    }

    /// A linear flow: each item after the previous one, reverted in the reverse order.
    pub fn linear(name: impl Into<String>) -> Self {
        Self::new(name, Pattern::Linear)
    }

    /// An unordered flow: its items may run concurrently.
    pub fn unordered(name: impl Into<String>) -> Self {
        Self::new(name, Pattern::Unordered)
    }

    /// A graph flow: edges from [`Flow::link`] and from requires/provides.
    pub fn graph(name: impl Into<String>) -> Self {
        Self::new(name, Pattern::Graph)
    }

    /// Adds an item (a task, an [`AtomSpec`] or a flow).
    // `add` is taskflow's name for it and reads like Cinder's get_flow; it is not `Add`.
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, item: impl Into<Item>) -> Self {
        self.items.push(item.into());
        self
    }

    /// Adds an item in place.
    pub fn push(&mut self, item: impl Into<Item>) {
        self.items.push(item.into());
    }

    /// Graph flows: `to` runs after `from` (item names: atoms or nested flows).
    pub fn link(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.links.push((from.into(), to.into()));
        self
    }

    /// Puts the flow's items under a retry controller.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Declares the symbols the caller supplies as inputs, so that [`Flow::compile`]
    /// rejects a requirement that nothing provides. Without it the check happens when the
    /// flow starts, against the inputs actually given.
    pub fn inputs(mut self, names: &[&'static str]) -> Self {
        self.inputs = Some(names.to_vec());
        self
    }

    /// The flow's name (the factory name when it is run by a worker).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pattern.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }
}
