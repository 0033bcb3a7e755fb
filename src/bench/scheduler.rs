//! `ember bench scheduler`: the time to place one request among many pools.

use super::Report;

/// Options of `ember bench scheduler`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, report: &mut Report) -> anyhow::Result<()> {
    let _ = report;
    anyhow::bail!("the scheduler benchmark is not written yet")
}
