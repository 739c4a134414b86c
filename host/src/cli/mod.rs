//! The `trac` command line (clap). Every flag also reads an environment variable; a flag wins
//! over the variable, the variable over the default.

mod bench;
mod contract;
mod keys;
mod log;
mod passphrase;
mod replay;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The Trac node and its tools.
#[derive(Debug, Parser)]
#[command(name = "trac", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log filter (for example `info` or `trac_host=debug`).
    #[arg(
        long,
        env = "TRAC_LOG",
        default_value = "warn,libp2p_kad=error",
        global = true
    )]
    pub log_level: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Intercom node: `trac run [store-label] [flags]` (see `trac run --help`).
    Run(Box<run::RunArgs>),
    /// Create, inspect, import and export the peer keystore.
    Keys(keys::KeysArgs),
    /// Inspect contract components and run calls against a local state.
    Contract(contract::ContractArgs),
    /// Run a benchmark suite and print a table (or JSON with --json).
    Bench(bench::BenchArgs),
    /// Rebuild a subnet's state from its stored log alone, checking every checkpoint's root.
    Replay(replay::ReplayArgs),
    /// Export a subnet's log to a portable file, or import one into a new store.
    Log(log::LogArgs),
}

/// Parses the process arguments, runs the command and turns its outcome into an exit code
/// (0 success, 1 failure, 2 usage error).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli.log_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Keys(args) => keys::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Contract(args) => contract::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Log(args) => log::run(args),
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}
