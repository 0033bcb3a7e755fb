//! `ember bench engine`: the flow engine's cost per task, in memory and persisted.

use super::Report;

/// Options of `ember bench engine`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, report: &mut Report) -> anyhow::Result<()> {
    let _ = report;
    anyhow::bail!("the engine benchmark is not written yet")
}
