//! Tasks: the `Task` trait, the contexts handed to `execute` and `revert`, and `AtomSpec`,
//! which places a task in a flow with rebinds and injected values.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::value::{Failure, Key, Name, Slot, Value, Values};

/// A unit of work with an undo. See the crate docs for the contract (idempotence).
#[async_trait]
pub trait Task: Send + Sync + 'static {
    /// The atom name, unique within a flow: it links a rebuilt flow to its stored atoms.
    fn name(&self) -> &str;

    /// The symbols `execute` needs, by parameter name (use `KEY.name()`).
    fn requires(&self) -> &[&'static str] {
        &[]
    }

    /// Symbols passed when some provider has them, left out otherwise.
    fn optional(&self) -> &[&'static str] {
        &[]
    }

    /// The symbols `execute` returns in its [`Values`].
    fn provides(&self) -> &[&'static str] {
        &[]
    }

    /// Does the work and returns the provided values.
    async fn execute(&self, ctx: &Context) -> Result<Values, Failure>;

    /// Undoes the work. `ctx.result()` is this task's own result, or `ctx.failure()` its
    /// failure; either may be absent after a crash.
    async fn revert(&self, ctx: &RevertContext) -> Result<(), Failure> {
        let _ = ctx;
        Ok(())
    }
}

/// What `execute` sees: its arguments and how many times it has been started.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) flow_id: Arc<str>,
    pub(crate) atom: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) args: Values,
}

impl Context {
    /// A required argument.
    pub fn get<T: Value>(&self, key: &Key<T>) -> Result<T, Failure> {
        self.args.get(key)?.ok_or_else(|| {
            Failure::new("MissingArgument", format!("atom {:?} has no argument {:?}", self.atom, key.name()))
        })
    }

    /// An optional argument.
    pub fn get_optional<T: Value>(&self, key: &Key<T>) -> Result<Option<T>, Failure> {
        self.args.get(key)
    }

    /// 1 on the first start; more means an earlier start may have done (part of) the work,
    /// because the process died or a peer took the flow over.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The flow's id.
    pub fn flow_id(&self) -> &str {
        &self.flow_id
    }

    /// This atom's name.
    pub fn atom_name(&self) -> &str {
        &self.atom
    }

    /// Every argument.
    pub fn args(&self) -> &Values {
        &self.args
    }
}

/// What `revert` sees: the execute context, its own outcome and the flow's failures.
#[derive(Debug, Clone)]
pub struct RevertContext {
    pub(crate) ctx: Context,
    pub(crate) result: Option<Values>,
    pub(crate) failure: Option<Failure>,
    pub(crate) flow_failures: Arc<BTreeMap<Arc<str>, Failure>>,
}

impl RevertContext {
    /// The task's own result, when its execute succeeded and the result was stored.
    pub fn result(&self) -> Option<&Values> {
        self.result.as_ref()
    }

    /// The task's own failure, when its execute failed.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Every execute failure of the flow so far, by atom name.
    pub fn flow_failures(&self) -> &BTreeMap<Arc<str>, Failure> {
        &self.flow_failures
    }
}

impl std::ops::Deref for RevertContext {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

/// A task placed in a flow: rebinds (parameter -> symbol) and injected constants.
#[derive(Clone)]
pub struct AtomSpec {
    pub(crate) task: Arc<dyn Task>,
    pub(crate) rebind: Vec<(&'static str, Name)>,
    pub(crate) inject: Values,
}

impl AtomSpec {
    /// `task` with no rebinds or injections.
    pub fn new(task: impl Task) -> Self {
        Self { task: Arc::new(task), rebind: Vec::new(), inject: Values::new() }
    }

    /// Reads parameter `param` from the symbol `symbol`.
    pub fn rebind<T>(mut self, param: &Key<T>, symbol: &Key<T>) -> Self {
        self.rebind.push((param.name(), Name::Borrowed(symbol.name())));
        self
    }

    /// Gives parameter `param` a constant; it wins over every other source.
    pub fn inject<T: Value>(mut self, param: &Key<T>, value: T) -> Self {
        self.inject.insert_slot(Name::Borrowed(param.name()), Slot::new(value));
        self
    }

    /// The atom's name.
    pub fn name(&self) -> &str {
        self.task.name()
    }
}

impl<T: Task> From<T> for AtomSpec {
    fn from(task: T) -> Self {
        AtomSpec::new(task)
    }
}
