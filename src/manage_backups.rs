//! `ember manage backups verify <id>`: re-reads every chunk of one backup in the configured
//! POSIX store and checks its SHA-256 (no running service needed).
//!
//! The store is the one the backup service writes: the configuration's `[backup]` section
//! (`backup_posix_path`, default `<data_dir>/backups`; `backup_chunk_size`...), read from
//! the `--config` file and `EMBER_*` variables as every command does;
//! `--backup-posix-path` overrides the path.

use std::path::PathBuf;

use anyhow::Context as _;
use ember_common::config::{Config, Overrides};
use ember_drivers::backup::BackupDriver as _;
use ember_drivers::{PosixBackupDriver, PosixBackupOptions};

/// The backup commands.
#[derive(Debug, clap::Subcommand)]
pub enum Backups {
    /// Re-reads every chunk of a backup and checks its hash; exits non-zero on damage.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The backup's id.
    id: String,
    /// A TOML configuration file (see etc/ember.toml).
    #[arg(long, env = "EMBER_CONFIG")]
    config: Option<PathBuf>,
    /// The store's directory, over `backup_posix_path` from the configuration.
    #[arg(long)]
    backup_posix_path: Option<PathBuf>,
}

pub async fn run(command: Backups) -> anyhow::Result<()> {
    match command {
        Backups::Verify(args) => verify(args).await,
    }
}

/// The store's options from the configuration's `[backup]` section.
fn options(args: &VerifyArgs) -> anyhow::Result<PosixBackupOptions> {
    let config = Config::load(args.config.as_deref(), &Overrides::default())?;
    let mut options = ember_backup::posix_options(&config);
    if let Some(path) = &args.backup_posix_path {
        options.backup_posix_path = path.clone();
    }
    Ok(options)
}

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let options = options(&args)?;
    let path = options.backup_posix_path.clone();
    let driver = PosixBackupDriver::new(options)?;
    let report = driver
        .verify(&args.id)
        .await
        .with_context(|| format!("verify backup {} in the store at {}", args.id, path.display()))?;
    println!("backup {} in {}", args.id, path.display());
    println!("{:<16} {:>8}", "chunks checked", report.chunks_checked);
    println!("{:<16} {:>8}", "bad chunks", report.bad_chunks.len());
    for chunk in &report.bad_chunks {
        println!("  bad: {chunk}");
    }
    if !report.bad_chunks.is_empty() {
        anyhow::bail!("backup {} is damaged: {} bad chunk(s)", args.id, report.bad_chunks.len());
    }
    Ok(())
}
