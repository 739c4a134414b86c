//! `trac bench <suite>`: measured figures for people (a table) and machines (`--json`).

mod store;

use std::time::{Duration, Instant};

use serde::Serialize;

/// The suites `trac bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// State writes, commits and reads on LMDB with the lattice state root.
    Store,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// Operations performed.
    pub ops: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Mean microseconds per operation.
    pub micros_per_op: f64,
}

impl Measurement {
    /// A measurement of `ops` operations that took `elapsed`.
    pub fn new(name: impl Into<String>, ops: u64, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Measurement {
            name: name.into(),
            ops,
            ops_per_sec: ops as f64 / secs,
            micros_per_op: secs * 1e6 / ops.max(1) as f64,
        }
    }

    /// Times `ops` runs of `f`.
    pub fn time(name: impl Into<String>, ops: u64, mut f: impl FnMut(u64)) -> Self {
        let start = Instant::now();
        for i in 0..ops {
            f(i);
        }
        Self::new(name, ops, start.elapsed())
    }
}

/// The results of one suite.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Suite name.
    pub suite: String,
    /// Build profile the figures come from.
    pub profile: &'static str,
    /// The figures.
    pub results: Vec<Measurement>,
}

impl Report {
    /// The table printed for people.
    pub fn table(&self) -> String {
        let width = self
            .results
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = format!(
            "suite {} ({} build)\n{:<width$} | {:>10} | {:>14} | {:>10}\n",
            self.suite, self.profile, "case", "ops", "ops/s", "µs/op"
        );
        out.push_str(&format!("{}\n", "-".repeat(width + 43)));
        for m in &self.results {
            out.push_str(&format!(
                "{:<width$} | {:>10} | {:>14.0} | {:>10.2}\n",
                m.name, m.ops, m.ops_per_sec, m.micros_per_op
            ));
        }
        out
    }
}

/// Runs a suite.
pub fn run(suite: Suite) -> anyhow::Result<Report> {
    let results = match suite {
        Suite::Store => store::run()?,
    };
    Ok(Report {
        suite: format!("{suite:?}").to_lowercase(),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        results,
    })
}
