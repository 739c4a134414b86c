//! `trac log export|import <file> --store <dir>`: a subnet's log as one portable file.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::subnet::logfile;
use crate::subnet::replay::runtime;

/// `trac log` arguments.
#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(subcommand)]
    command: LogCommand,
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Write the subnet's log (entries, final checkpoints, acks) to a file.
    Export {
        /// The log file to write (replaced if it exists).
        file: PathBuf,
        /// The subnet's store directory (only read).
        #[arg(long)]
        store: PathBuf,
    },
    /// Rebuild a subnet store from a log file, verifying every record and checkpoint.
    Import {
        /// The log file to read.
        file: PathBuf,
        /// The new store's directory (new or empty).
        #[arg(long)]
        store: PathBuf,
        /// Directory of compiled contracts (default: none, contracts compile in memory).
        #[arg(long, env = "TRAC_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
}

/// Runs a `trac log` command.
pub fn run(args: LogArgs) -> anyhow::Result<()> {
    match args.command {
        LogCommand::Export { file, store } => {
            let report = logfile::export(&store, &file).context("export failed")?;
            println!(
                "subnet       {} (channel {:?})",
                report.subnet, report.channel
            );
            println!("file         {}", file.display());
            println!("entries      {}", report.stats.entries);
            println!("checkpoints  {}", report.stats.checkpoints);
            println!("acks         {}", report.stats.acks);
            println!("final height {}", report.final_height);
            println!("bytes        {}", report.stats.bytes);
            Ok(())
        }
        LogCommand::Import {
            file,
            store,
            cache_dir,
        } => {
            let runtime = runtime(cache_dir.as_deref()).context("import failed")?;
            let report = logfile::import(&file, &store, runtime).context("import failed")?;
            println!(
                "subnet       {} (channel {:?})",
                report.subnet, report.channel
            );
            println!("store        {}", store.display());
            println!("entries      {}", report.entries);
            println!("checkpoints  {}", report.checkpoints);
            println!("acks         {}", report.acks);
            println!("final height {}", report.final_height);
            println!("final root   {}", report.final_root);
            println!("bytes        {}", report.bytes);
            Ok(())
        }
    }
}
