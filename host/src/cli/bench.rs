//! `trac bench <suite> [--json]`.

use clap::Args;

use crate::bench::{self, Suite};

/// `trac bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which suite to run.
    #[arg(value_enum)]
    suite: Suite,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: the receiving process of the `sidechannel` suite, with its policy
    /// (`pow=<bits>,rate=<bytes/s>`).
    #[arg(long, hide = true, value_name = "POLICY")]
    serve: Option<String>,
}

/// Runs the suite and prints its report.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(policy) = &args.serve {
        anyhow::ensure!(
            args.suite == Suite::Sidechannel,
            "--serve is for the sidechannel suite only"
        );
        return bench::sidechannel::serve(policy);
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; build with --release for meaningful figures");
    }
    let report = bench::run(args.suite)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
