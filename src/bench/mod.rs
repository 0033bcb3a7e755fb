//! `ember bench ...`: benchmarks that print a readable table, or JSON lines with `--json`.

pub mod api;
pub mod attach;
pub mod auth;
pub mod backup;
pub mod engine;
pub mod nbd;
pub mod scale;
pub mod scheduler;

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub case: String,
    pub value: f64,
    pub unit: &'static str,
    /// Anything that helps read the figure (sizes, counts, the target to beat).
    pub context: Map<String, Value>,
}

impl Figure {
    pub fn new(case: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self { case: case.into(), value, unit, context: Map::new() }
    }

    /// Adds a context field shown in the table and in the JSON line.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.context.insert(key.to_owned(), value.into());
        self
    }
}

/// Prints figures as they come: one JSON object per line, or a table at the end.
#[derive(Debug)]
pub struct Report {
    bench: &'static str,
    json: bool,
    rows: Vec<Figure>,
}

impl Report {
    pub fn new(bench: &'static str, json: bool) -> Self {
        Self { bench, json, rows: Vec::new() }
    }

    /// Records a figure; in JSON mode it is printed at once.
    pub fn push(&mut self, figure: Figure) {
        if self.json {
            let mut obj = Map::new();
            obj.insert("bench".into(), self.bench.into());
            obj.insert("case".into(), figure.case.clone().into());
            obj.insert("value".into(), round(figure.value).into());
            obj.insert("unit".into(), figure.unit.into());
            obj.extend(figure.context.clone());
            println!("{}", Value::Object(obj));
        } else {
            eprintln!("  {:<48} {:>12} {}", figure.case, fmt_value(figure.value), figure.unit);
        }
        self.rows.push(figure);
    }

    /// Prints the table (nothing in JSON mode).
    pub fn finish(self) {
        if self.json {
            return;
        }
        println!("{}", self.table());
    }

    fn table(&self) -> String {
        let case_w = self.rows.iter().map(|r| r.case.len()).max().unwrap_or(4).max(4);
        let mut out = String::new();
        let _ = writeln!(out, "bench {}", self.bench);
        let _ = writeln!(out, "{:<case_w$}  {:>14}  {:<8}  context", "case", "value", "unit");
        let _ = writeln!(out, "{}", "-".repeat(case_w + 40));
        for r in &self.rows {
            let ctx: Vec<String> = r.context.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect();
            let _ = writeln!(
                out,
                "{:<case_w$}  {:>14}  {:<8}  {}",
                r.case,
                fmt_value(r.value),
                r.unit,
                ctx.join(" ")
            );
        }
        out
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), fmt_value),
        other => other.to_string(),
    }
}

fn round(v: f64) -> f64 {
    if v.abs() >= 100.0 { (v * 10.0).round() / 10.0 } else { (v * 1000.0).round() / 1000.0 }
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_figure_with_its_context() {
        let mut r = Report::new("demo", false);
        r.rows.push(Figure::new("linear 10", 1.25, "us/task").with("tasks", 10));
        let t = r.table();
        assert!(t.contains("linear 10"), "{t}");
        assert!(t.contains("1.250"), "{t}");
        assert!(t.contains("tasks=10"), "{t}");
    }
}
