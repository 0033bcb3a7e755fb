//! Drawings of a compiled flow: Graphviz DOT and Mermaid text, for the admin endpoints.

use std::fmt::Write as _;

use crate::compile::{CompiledFlow, Work};

impl CompiledFlow {
    /// The flow as a Graphviz `digraph`; retries are drawn as diamonds.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quote(&self.inner.name));
        let _ = writeln!(out, "  rankdir=TB;");
        for n in &self.inner.nodes {
            let shape = match n.work {
                Work::Task(_) => "box",
                Work::Retry(_) => "diamond",
            };
            let path: Vec<&str> = n.path.iter().map(|p| p.as_ref()).collect();
            let _ =
                writeln!(out, "  {} [shape={shape}, tooltip={}];", quote(&n.name), quote(&path.join("/")));
        }
        for (u, v) in self.edges() {
            let _ = writeln!(out, "  {} -> {};", quote(u), quote(v));
        }
        out.push_str("}\n");
        out
    }

    /// The flow as a Mermaid `flowchart`; node ids are positions, labels the atom names.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for (i, n) in self.inner.nodes.iter().enumerate() {
            let label = n.name.replace('"', "#quot;");
            let _ = match n.work {
                Work::Task(_) => writeln!(out, "  a{i}[\"{label}\"]"),
                Work::Retry(_) => writeln!(out, "  a{i}{{\"{label}\"}}"),
            };
        }
        for (u, succ) in self.inner.succ.iter().enumerate() {
            for v in succ {
                let _ = writeln!(out, "  a{u} --> a{v}");
            }
        }
        out
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
