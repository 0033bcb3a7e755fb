//! `ember manage flows list|show|draw|resume|revert`: the admin view of flows from the
//! command line, reading the configured database directly (no running API needed).

use std::sync::Arc;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use ember_api::flow_views::{self, parse_time};
use ember_db::SqlRepo;
use ember_db::flow_store::SqlFlowStore;
use ember_engine::{FlowFilter, FlowRecord, FlowState, FlowStore, Registry};
use ember_flows::{Deps, FlowConfig, LocalWake};

use crate::{ConfigArgs, open_db};

/// The flow commands.
#[derive(Debug, clap::Subcommand)]
pub enum Flows {
    /// Lists flows, newest first.
    List(ListArgs),
    /// Shows one flow with one row per atom.
    Show(IdArgs),
    /// Prints a flow's drawing (Graphviz DOT or Mermaid).
    Draw(DrawArgs),
    /// Makes a flow that has not finished claimable now by any worker of its topic.
    Resume(IdArgs),
    /// Reverts a flow that cannot finish: a worker reverts what ran, in reverse order.
    Revert(IdArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only flows in this state (PENDING, RUNNING, SUCCESS, FAILURE, REVERTED, SUSPENDED...).
    #[arg(long)]
    state: Option<String>,
    /// Only flows of this name (e.g. volume_create_manager).
    #[arg(long)]
    name: Option<String>,
    /// Only flows working on this resource id.
    #[arg(long)]
    subject: Option<String>,
    /// Only flows held by this owner.
    #[arg(long)]
    owner: Option<String>,
    /// Only flows created at or after this time (ISO 8601 or epoch milliseconds).
    #[arg(long)]
    since: Option<String>,
    /// Only flows created before this time (ISO 8601 or epoch milliseconds).
    #[arg(long)]
    until: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(long, default_value_t = 0)]
    offset: usize,
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The flow id.
    id: String,
}

#[derive(Debug, clap::Args)]
pub struct DrawArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The flow id.
    id: String,
    /// `dot` or `mermaid`.
    #[arg(long, default_value = "dot")]
    format: String,
}

/// Runs one flow command, printing to stdout.
pub async fn run(command: Flows) -> anyhow::Result<()> {
    match command {
        Flows::List(args) => {
            let filter = filter(&args)?;
            let (store, _) = open(&args.config).await?;
            let flows = store.list_flows(&filter).await?;
            print!("{}", flow_table(&flows));
            Ok(())
        }
        Flows::Show(args) => show(args).await,
        Flows::Draw(args) => draw(args).await,
        Flows::Resume(args) => resume(args).await,
        Flows::Revert(args) => revert(args).await,
    }
}

async fn revert(args: IdArgs) -> anyhow::Result<()> {
    let (store, _) = open(&args.config).await?;
    if let Some(f) = store.request_revert(&args.id).await? {
        if f.state == FlowState::Reverted {
            println!("flow {} ({}) reverted: none of its tasks had run", f.id, f.name);
        } else {
            println!(
                "flow {} ({}) marked for revert: a worker of topic {} claims it at its next sweep and reverts \
                 what ran, in reverse order",
                f.id, f.name, f.topic
            );
        }
        return Ok(());
    }
    match store.get_flow(&args.id).await? {
        Some(d) => bail!("flow {} has ended in {}; there is nothing to revert", d.flow.id, d.flow.state),
        None => bail!(missing(&args.id)),
    }
}

async fn show(args: IdArgs) -> anyhow::Result<()> {
    let (store, repo) = open(&args.config).await?;
    let mut detail = store.get_flow(&args.id).await?.with_context(|| missing(&args.id))?;
    flow_views::order_atoms(&mut detail, &shapes(store, repo));
    print!("{}", flow_table(std::slice::from_ref(&detail.flow)));
    println!();
    if detail.atoms.is_empty() {
        println!("no atom has run yet");
    } else {
        print!("{}", atom_table(&detail));
    }
    Ok(())
}

/// Releases the flow (a compare-and-swap on a live state); this process cannot wake the
/// workers, so the flow waits for their next sweep (2 s).
async fn resume(args: IdArgs) -> anyhow::Result<()> {
    let (store, _) = open(&args.config).await?;
    if let Some(f) = store.release(&args.id).await? {
        println!(
            "flow {} ({}) released: a worker of topic {} claims it at its next sweep",
            f.id, f.state, f.topic
        );
        return Ok(());
    }
    match store.get_flow(&args.id).await? {
        Some(d) => bail!("flow {} has finished ({}); there is nothing to resume", d.flow.id, d.flow.state),
        None => bail!(missing(&args.id)),
    }
}

fn missing(id: &str) -> String {
    format!("flow {id} could not be found")
}

fn filter(args: &ListArgs) -> anyhow::Result<FlowFilter> {
    let time = |t: &Option<String>| -> anyhow::Result<Option<i64>> {
        t.as_deref()
            .map(|t| parse_time(t).with_context(|| format!("invalid time {t:?}: use ISO 8601 or epoch ms")))
            .transpose()
    };
    let state = match &args.state {
        Some(s) => Some(s.to_ascii_uppercase().parse::<FlowState>().map_err(anyhow::Error::msg)?),
        None => None,
    };
    Ok(FlowFilter {
        state,
        name: args.name.clone(),
        subject: args.subject.clone(),
        owner: args.owner.clone(),
        created_after: time(&args.since)?,
        created_before: time(&args.until)?,
        limit: Some(args.limit),
        offset: args.offset,
    })
}

/// The configured database's flow store and repositories (not migrated: this only reads
/// and releases).
async fn open(config: &ConfigArgs) -> anyhow::Result<(Arc<SqlFlowStore>, Arc<SqlRepo>)> {
    let config = config.load()?;
    let db = open_db(&config).await?;
    let repo = Arc::new(SqlRepo::new(db.clone(), config.quota_defaults()));
    Ok((Arc::new(SqlFlowStore::new(db)), repo))
}

async fn draw(args: DrawArgs) -> anyhow::Result<()> {
    let mermaid = match args.format.as_str() {
        "dot" => false,
        "mermaid" => true,
        other => bail!("unknown format {other:?}: use dot or mermaid"),
    };
    let (store, repo) = open(&args.config).await?;
    let detail = store.get_flow(&args.id).await?.with_context(|| missing(&args.id))?;
    let compiled = shapes(store, repo)
        .build(&detail.flow.name, &detail.flow.inputs)
        .with_context(|| format!("draw flow {} ({})", detail.flow.id, detail.flow.name))?;
    print!("{}", if mermaid { compiled.to_mermaid() } else { compiled.to_dot() });
    Ok(())
}

/// Every flow's factory, to rebuild a stored flow's shape (never to run it).
fn shapes(store: Arc<SqlFlowStore>, repo: Arc<SqlRepo>) -> Registry {
    let store: Arc<dyn FlowStore> = store;
    let deps = Arc::new(Deps::new(repo, store, Arc::new(LocalWake::new()), FlowConfig::default()));
    let mut shapes = Registry::new();
    ember_flows::register_shapes(&mut shapes, &deps);
    shapes
}

/// `2026-11-21 20:11:51.123`, or `-`.
fn when(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map_or_else(|| "-".to_owned(), |t| t.format("%F %T%.3f").to_string())
}

fn flow_table(flows: &[FlowRecord]) -> String {
    let rows = flows.iter().map(|f| {
        vec![
            f.id.clone(),
            f.name.clone(),
            f.state.to_string(),
            f.subject.clone().unwrap_or_else(|| "-".into()),
            f.owner.clone().unwrap_or_else(|| "-".into()),
            when(f.created_at),
            when(f.updated_at),
        ]
    });
    table(&["ID", "NAME", "STATE", "SUBJECT", "OWNER", "CREATED", "UPDATED"], rows.collect())
}

fn atom_table(detail: &ember_engine::FlowDetail) -> String {
    let rows = detail.atoms.iter().map(|a| {
        let failure = a
            .failure
            .as_ref()
            .or(a.revert_failure.as_ref())
            .map_or_else(|| "-".to_owned(), |f| clip(&f.to_string(), 80));
        let result = a
            .result
            .as_ref()
            .map_or_else(|| "-".to_owned(), |r| clip(&flow_views::summary(r).to_string(), 60));
        vec![
            a.name.clone(),
            a.state.to_string(),
            a.intention.to_string(),
            a.attempts.to_string(),
            when(a.created_at),
            format!("{} ms", a.updated_at.saturating_sub(a.created_at)),
            a.progress.map_or_else(|| "-".to_owned(), progress_cell),
            result,
            failure,
        ]
    });
    let headers =
        ["ATOM", "STATE", "INTENTION", "ATTEMPTS", "STARTED", "TOOK", "PROGRESS", "RESULT", "FAILURE"];
    table(&headers, rows.collect())
}

/// A task's progress as `done/total (percent%)`.
pub(crate) fn progress_cell(p: ember_engine::Progress) -> String {
    format!("{}/{} ({}%)", p.done, p.total, p.percent())
}

/// `text` cut to `max` characters, with `...` when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// Columns padded to their widest cell, separated by two spaces.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_clip_long_cells() {
        let t = table(&["A", "LONG HEADER"], vec![vec!["wide cell".into(), "x".into()]]);
        assert_eq!(t, "A          LONG HEADER\nwide cell  x\n");
        assert_eq!(clip("ééééé", 3), "ééé...");
        assert_eq!(clip("abc", 3), "abc");
    }
}
