//! Compilation: a nested flow becomes one DAG of atoms, validated (duplicate names, cycles,
//! unsatisfied and ambiguous requirements) with every argument's producer resolved.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use petgraph::algo::{DfsSpace, has_path_connecting, tarjan_scc};
use petgraph::graph::{DiGraph, NodeIndex};
use smallvec::SmallVec;

use crate::error::{EngineError, Result};
use crate::flow::{Flow, Item, Pattern};
use crate::retry::Retry;
use crate::state::AtomKind;
use crate::task::Task;
use crate::value::{Name, Slot, Values};

pub(crate) type Adj = SmallVec<[u32; 2]>;

/// Where one argument of an atom comes from.
#[derive(Clone)]
pub(crate) struct Arg {
    /// The parameter name the task reads.
    pub param: &'static str,
    /// The symbol it is bound to (the parameter itself unless rebound).
    pub symbol: Name,
    pub optional: bool,
    /// A constant injected for this atom: wins over every other source.
    pub inject: Option<Slot>,
    /// The nearest upstream atom that provides the symbol.
    pub producer: Option<u32>,
}

/// What runs for an atom.
#[derive(Clone)]
pub(crate) enum Work {
    Task(Arc<dyn Task>),
    Retry(Retry),
}

/// One atom of a compiled flow.
#[derive(Clone)]
pub(crate) struct Node {
    pub name: Arc<str>,
    pub work: Work,
    pub args: Vec<Arg>,
    /// The nearest enclosing retry controller.
    pub retry: Option<u32>,
    /// For a retry: the atoms of its subflow, `scope.0..scope.1`.
    pub scope: (u32, u32),
    /// The flows enclosing the atom, outermost first (for drawings).
    pub path: Arc<[Arc<str>]>,
}

impl Node {
    pub(crate) fn kind(&self) -> AtomKind {
        match self.work {
            Work::Task(_) => AtomKind::Task,
            Work::Retry(_) => AtomKind::Retry,
        }
    }
}

pub(crate) struct Inner {
    pub name: String,
    pub nodes: Vec<Node>,
    pub succ: Vec<Adj>,
    pub pred: Vec<Adj>,
    /// Required arguments with no producer and no injection: flow inputs.
    pub external: Vec<(u32, Name)>,
}

/// A validated flow, ready to run any number of times. Cheap to clone.
#[derive(Clone)]
pub struct CompiledFlow {
    pub(crate) inner: Arc<Inner>,
}

impl CompiledFlow {
    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How many atoms (tasks and retries).
    pub fn len(&self) -> usize {
        self.inner.nodes.len()
    }

    /// Whether the flow has no atoms.
    pub fn is_empty(&self) -> bool {
        self.inner.nodes.is_empty()
    }

    /// The atom names, in the order they were added.
    pub fn atom_names(&self) -> impl Iterator<Item = &str> {
        self.inner.nodes.iter().map(|n| n.name.as_ref())
    }

    /// The edges, as (from, to) atom names.
    pub fn edges(&self) -> impl Iterator<Item = (&str, &str)> {
        let n = &self.inner.nodes;
        self.inner
            .succ
            .iter()
            .enumerate()
            .flat_map(move |(u, s)| s.iter().map(move |&v| (n[u].name.as_ref(), n[v as usize].name.as_ref())))
    }

    /// The symbols the caller must supply as inputs.
    pub fn requires(&self) -> impl Iterator<Item = &str> {
        self.inner.external.iter().map(|(_, s)| s.as_ref())
    }

    /// Checks that `inputs` holds every symbol the flow needs from its caller.
    pub fn validate_inputs(&self, inputs: &Values) -> Result<()> {
        match self.inner.external.iter().find(|(_, s)| !inputs.contains(s)) {
            None => Ok(()),
            Some((atom, symbol)) => Err(EngineError::MissingRequirement {
                flow: self.inner.name.clone(),
                atom: self.inner.nodes[*atom as usize].name.to_string(),
                symbol: symbol.to_string(),
            }),
        }
    }
}

/// Atoms flattened so far, with edges.
struct Builder {
    flow: String,
    nodes: Vec<Node>,
    edges: Vec<(u32, u32)>,
    names: HashSet<Arc<str>>,
    /// (requires, provides) symbol names per atom, before resolution.
    requires: Vec<Vec<Name>>,
    provides: Vec<Vec<Name>>,
}

/// The entry and exit atoms of a compiled item, and its atom range.
struct Part {
    sources: Vec<u32>,
    sinks: Vec<u32>,
    range: (u32, u32),
}

impl Flow {
    /// Validates the flow and compiles it to one graph of atoms.
    pub fn compile(self) -> Result<CompiledFlow> {
        compile(self)
    }
}

fn compile(flow: Flow) -> Result<CompiledFlow> {
    let mut b = Builder {
        flow: flow.name.clone(),
        nodes: Vec::new(),
        edges: Vec::new(),
        names: HashSet::new(),
        requires: Vec::new(),
        provides: Vec::new(),
    };
    let declared = flow.inputs.clone();
    b.add_flow(&flow, None, &Arc::from(Vec::new()))?;
    let n = b.nodes.len();
    b.edges.sort_unstable();
    b.edges.dedup();
    let mut succ = vec![Adj::new(); n];
    let mut pred = vec![Adj::new(); n];
    for &(u, v) in &b.edges {
        succ[u as usize].push(v);
        pred[v as usize].push(u);
    }
    let graph = b.graph();
    b.check_cycles(&graph)?;
    let external = b.resolve(&graph)?;
    if let Some(declared) = declared
        && let Some((atom, symbol)) = external.iter().find(|(_, s)| !declared.contains(&s.as_ref()))
    {
        return Err(EngineError::MissingRequirement {
            flow: b.flow,
            atom: b.nodes[*atom as usize].name.to_string(),
            symbol: symbol.to_string(),
        });
    }
    Ok(CompiledFlow { inner: Arc::new(Inner { name: b.flow, nodes: b.nodes, succ, pred, external }) })
}

impl Builder {
    fn add_name(&mut self, name: &str) -> Result<Arc<str>> {
        let name: Arc<str> = Arc::from(name);
        if !self.names.insert(name.clone()) {
            return Err(EngineError::DuplicateName { flow: self.flow.clone(), atom: name.to_string() });
        }
        Ok(name)
    }

    fn add_flow(&mut self, flow: &Flow, retry: Option<u32>, path: &Arc<[Arc<str>]>) -> Result<Part> {
        let start = self.nodes.len() as u32;
        let mut inner_path: Vec<Arc<str>> = path.to_vec();
        inner_path.push(Arc::from(flow.name.as_str()));
        let inner_path: Arc<[Arc<str>]> = inner_path.into();
        let retry_node = match &flow.retry {
            Some(r) => Some(self.add_retry(r, retry, &inner_path)?),
            None => None,
        };
        let scope_retry = retry_node.or(retry);
        let mut parts = Vec::with_capacity(flow.items.len());
        for item in &flow.items {
            parts.push(match item {
                Item::Atom(spec) => self.add_atom(spec, scope_retry, &inner_path)?,
                Item::Flow(f) => self.add_flow(f, scope_retry, &inner_path)?,
            });
        }
        let (mut sources, mut sinks) = match flow.pattern {
            Pattern::Linear => self.chain(&parts),
            Pattern::Unordered => (
                parts.iter().flat_map(|p| p.sources.clone()).collect(),
                parts.iter().flat_map(|p| p.sinks.clone()).collect(),
            ),
            Pattern::Graph => self.graph_edges(flow, &parts)?,
        };
        if let Some(r) = retry_node {
            for &s in &sources {
                self.edges.push((r, s));
            }
            sources = vec![r];
            if sinks.is_empty() {
                sinks = vec![r];
            }
            self.nodes[r as usize].scope = (r + 1, self.nodes.len() as u32);
        }
        Ok(Part { sources, sinks, range: (start, self.nodes.len() as u32) })
    }

    fn chain(&mut self, parts: &[Part]) -> (Vec<u32>, Vec<u32>) {
        for w in parts.windows(2) {
            for &u in &w[0].sinks {
                for &v in &w[1].sources {
                    self.edges.push((u, v));
                }
            }
        }
        let first = parts.iter().find(|p| !p.sources.is_empty());
        let last = parts.iter().rev().find(|p| !p.sinks.is_empty());
        (
            first.map(|p| p.sources.clone()).unwrap_or_default(),
            last.map(|p| p.sinks.clone()).unwrap_or_default(),
        )
    }

    /// Edges of a graph flow: explicit links, then requires/provides between items.
    fn graph_edges(&mut self, flow: &Flow, parts: &[Part]) -> Result<(Vec<u32>, Vec<u32>)> {
        let index: HashMap<&str, usize> =
            flow.items.iter().enumerate().map(|(i, it)| (it.name(), i)).collect();
        let mut item_edges: Vec<(usize, usize)> = Vec::new();
        for (from, to) in &flow.links {
            let find = |n: &String| {
                index.get(n.as_str()).copied().ok_or_else(|| EngineError::UnknownLinkTarget {
                    flow: self.flow.clone(),
                    graph: flow.name.clone(),
                    item: n.clone(),
                })
            };
            item_edges.push((find(from)?, find(to)?));
        }
        let (reqs, provs): (Vec<_>, Vec<_>) = parts.iter().map(|p| self.item_symbols(p.range)).unzip();
        for (v, needs) in reqs.iter().enumerate() {
            for sym in needs {
                let providers: Vec<usize> =
                    (0..parts.len()).filter(|&u| u != v && provs[u].contains(sym)).collect();
                match providers.as_slice() {
                    [] => {}
                    [u] => item_edges.push((*u, v)),
                    many => {
                        return Err(EngineError::AmbiguousProvider {
                            flow: self.flow.clone(),
                            atom: flow.items[v].name().to_owned(),
                            symbol: sym.to_string(),
                            providers: many.iter().map(|&u| flow.items[u].name().to_owned()).collect(),
                        });
                    }
                }
            }
        }
        let mut has_in = vec![false; parts.len()];
        let mut has_out = vec![false; parts.len()];
        for &(u, v) in &item_edges {
            has_out[u] = true;
            has_in[v] = true;
            for &a in &parts[u].sinks {
                for &b in &parts[v].sources {
                    self.edges.push((a, b));
                }
            }
        }
        let sources =
            (0..parts.len()).filter(|&i| !has_in[i]).flat_map(|i| parts[i].sources.clone()).collect();
        let sinks = (0..parts.len()).filter(|&i| !has_out[i]).flat_map(|i| parts[i].sinks.clone()).collect();
        Ok((sources, sinks))
    }

    /// What an item needs from outside it, and what it provides.
    fn item_symbols(&self, (a, b): (u32, u32)) -> (Vec<Name>, Vec<Name>) {
        let provides: Vec<Name> = (a..b).flat_map(|i| self.provides[i as usize].clone()).collect();
        let mut requires: Vec<Name> = (a..b)
            .flat_map(|i| self.requires[i as usize].clone())
            .filter(|s| !provides.contains(s))
            .collect();
        requires.sort();
        requires.dedup();
        (requires, provides)
    }

    fn add_retry(&mut self, r: &Retry, parent: Option<u32>, path: &Arc<[Arc<str>]>) -> Result<u32> {
        let name = self.add_name(r.name())?;
        let idx = self.nodes.len() as u32;
        self.nodes.push(Node {
            name,
            work: Work::Retry(r.clone()),
            args: Vec::new(),
            retry: parent,
            scope: (idx + 1, idx + 1),
            path: path.clone(),
        });
        self.requires.push(Vec::new());
        self.provides.push(r.provided().map(|p| Name::Owned(p.to_owned())).into_iter().collect());
        Ok(idx)
    }

    fn add_atom(
        &mut self,
        spec: &crate::task::AtomSpec,
        retry: Option<u32>,
        path: &Arc<[Arc<str>]>,
    ) -> Result<Part> {
        let task = &spec.task;
        let name = self.add_name(task.name())?;
        let params =
            task.requires().iter().map(|p| (*p, false)).chain(task.optional().iter().map(|p| (*p, true)));
        let mut args = Vec::new();
        let mut requires = Vec::new();
        for (param, optional) in params {
            let symbol = spec
                .rebind
                .iter()
                .find(|(p, _)| *p == param)
                .map_or(Name::Borrowed(param), |(_, s)| s.clone());
            let inject = spec.inject.slot(param).cloned();
            if inject.is_none() && !optional {
                requires.push(symbol.clone());
            }
            args.push(Arg { param, symbol, optional, inject, producer: None });
        }
        let idx = self.nodes.len() as u32;
        self.nodes.push(Node {
            name,
            work: Work::Task(task.clone()),
            args,
            retry,
            scope: (0, 0),
            path: path.clone(),
        });
        self.requires.push(requires);
        self.provides.push(task.provides().iter().map(|p| Name::Borrowed(*p)).collect());
        Ok(Part { sources: vec![idx], sinks: vec![idx], range: (idx, idx + 1) })
    }

    fn graph(&self) -> DiGraph<(), ()> {
        let mut g = DiGraph::with_capacity(self.nodes.len(), self.edges.len());
        for _ in 0..self.nodes.len() {
            g.add_node(());
        }
        for &(u, v) in &self.edges {
            g.add_edge(NodeIndex::new(u as usize), NodeIndex::new(v as usize), ());
        }
        g
    }

    fn check_cycles(&self, g: &DiGraph<(), ()>) -> Result<()> {
        if !petgraph::algo::is_cyclic_directed(g) {
            return Ok(());
        }
        for scc in tarjan_scc(g) {
            let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
            if scc.len() > 1 || self_loop {
                let mut atoms: Vec<String> =
                    scc.iter().map(|i| self.nodes[i.index()].name.to_string()).collect();
                atoms.sort();
                return Err(EngineError::Cycle { flow: self.flow.clone(), atoms });
            }
        }
        Err(EngineError::Cycle { flow: self.flow.clone(), atoms: Vec::new() })
    }

    /// Finds each argument's producer: the nearest upstream provider, the one downstream of
    /// every other upstream provider. Returns the required symbols nobody provides.
    fn resolve(&mut self, g: &DiGraph<(), ()>) -> Result<Vec<(u32, Name)>> {
        let mut providers: HashMap<Name, Vec<u32>> = HashMap::new();
        for (i, ps) in self.provides.iter().enumerate() {
            for p in ps {
                providers.entry(p.clone()).or_default().push(i as u32);
            }
        }
        let mut space = DfsSpace::new(g);
        let mut external = Vec::new();
        for i in 0..self.nodes.len() {
            for a in 0..self.nodes[i].args.len() {
                let arg = &self.nodes[i].args[a];
                if arg.inject.is_some() {
                    continue;
                }
                let cands: Vec<u32> = providers.get(&arg.symbol).map_or_else(Vec::new, |c| {
                    c.iter()
                        .copied()
                        .filter(|&c| {
                            c as usize != i
                                && has_path_connecting(g, node(c), node(i as u32), Some(&mut space))
                        })
                        .collect()
                });
                let nearest = cands.iter().copied().find(|&c| {
                    cands
                        .iter()
                        .all(|&o| o == c || has_path_connecting(g, node(o), node(c), Some(&mut space)))
                });
                match (nearest, cands.is_empty()) {
                    (Some(p), _) => self.nodes[i].args[a].producer = Some(p),
                    (None, true) if !arg.optional => external.push((i as u32, arg.symbol.clone())),
                    (None, true) => {}
                    (None, false) => {
                        return Err(EngineError::AmbiguousProvider {
                            flow: self.flow.clone(),
                            atom: self.nodes[i].name.to_string(),
                            symbol: arg.symbol.to_string(),
                            providers: cands
                                .iter()
                                .map(|&c| self.nodes[c as usize].name.to_string())
                                .collect(),
                        });
                    }
                }
            }
        }
        Ok(external)
    }
}

fn node(i: u32) -> NodeIndex {
    NodeIndex::new(i as usize)
}
