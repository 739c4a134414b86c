//! `trac bench <suite>`: measured figures for people (a table) and machines (`--json`).

mod apply;
mod catchup;
mod child;
mod contract;
mod ledger;
mod settle;
pub mod sidechannel;
mod startup;
mod store;

use std::time::{Duration, Instant};

use serde::Serialize;

/// The suites `trac bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// State writes, commits and reads on LMDB with the lattice state root.
    Store,
    /// Contract calls: throughput, instantiate+call latency, cold load, fuel overhead.
    Contract,
    /// The ledger engine: ops from append to final on one node.
    Ledger,
    /// Settled contract transactions through the whole subnet engine on one node.
    Apply,
    /// Rebuilding a subnet's state from its stored log (`ledger::replay`).
    Replay,
    /// The `/tx` lifecycle: submit → applied on 3 subnet nodes, and the settlement throughput of
    /// one MSB validator.
    Settle,
    /// Start-to-ready time of the `trac run` node (cold and warm), key decryption, the cold
    /// compile of Intercom, and the idle memory of a `trac run` process.
    Startup,
    /// Catch-up of a subnet log (100,000 entries) by a fresh joiner over loopback.
    Catchup,
    /// Signed 1 KiB sidechannel messages between two processes on loopback: one-way latency
    /// with the default policy and without proof of work, sustained throughput, memory.
    Sidechannel,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// The figure.
    pub value: f64,
    /// Its unit (`ops/s`, `µs`, `ms`, `%`).
    pub unit: &'static str,
    /// Operations or samples behind it.
    pub samples: u64,
    /// The target it is held to, if any (e.g. `>= 50000`).
    pub target: Option<String>,
}

impl Measurement {
    /// Throughput of `ops` operations that took `elapsed`.
    pub fn throughput(name: impl Into<String>, ops: u64, elapsed: Duration) -> Self {
        Measurement {
            name: name.into(),
            value: ops as f64 / elapsed.as_secs_f64().max(1e-9),
            unit: "ops/s",
            samples: ops,
            target: None,
        }
    }

    /// Times `ops` runs of `f` and reports the throughput.
    pub fn time(name: impl Into<String>, ops: u64, mut f: impl FnMut(u64)) -> Self {
        let start = Instant::now();
        for i in 0..ops {
            f(i);
        }
        Self::throughput(name, ops, start.elapsed())
    }

    /// The `q`-quantile (0..=1) of `samples`, in microseconds.
    pub fn latency_micros(name: impl Into<String>, samples: &mut [Duration], q: f64) -> Self {
        samples.sort_unstable();
        let index = ((samples.len().saturating_sub(1)) as f64 * q).round() as usize;
        let value = samples.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e6);
        Measurement {
            name: name.into(),
            value,
            unit: "µs",
            samples: samples.len() as u64,
            target: None,
        }
    }

    /// The `q`-quantile (0..=1) of `samples`, in milliseconds.
    pub fn latency_millis(name: impl Into<String>, samples: &mut [Duration], q: f64) -> Self {
        let mut m = Self::latency_micros(name, samples, q);
        m.value /= 1_000.0;
        m.unit = "ms";
        m
    }

    /// A figure in any unit.
    pub fn value(name: impl Into<String>, value: f64, unit: &'static str, samples: u64) -> Self {
        Measurement {
            name: name.into(),
            value,
            unit,
            samples,
            target: None,
        }
    }

    /// A percentage.
    pub fn percent(name: impl Into<String>, value: f64, samples: u64) -> Self {
        Measurement {
            name: name.into(),
            value,
            unit: "%",
            samples,
            target: None,
        }
    }

    /// Replaces the unit (a throughput of entries rather than ops, say).
    pub fn with_unit(mut self, unit: &'static str) -> Self {
        self.unit = unit;
        self
    }

    /// Attaches the target the figure is held to.
    pub fn target(mut self, target: &str) -> Self {
        self.target = Some(target.to_string());
        self
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
            .map(|m| m.name.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = format!(
            "suite {} ({} build)\n{:<width$} | {:>14} | {:<5} | {:>9} | target\n",
            self.suite, self.profile, "case", "value", "unit", "samples"
        );
        out.push_str(&format!("{}\n", "-".repeat(width + 50)));
        for m in &self.results {
            let value = if m.value >= 100.0 {
                format!("{:.0}", m.value)
            } else {
                format!("{:.2}", m.value)
            };
            out.push_str(&format!(
                "{:<width$} | {:>14} | {:<5} | {:>9} | {}\n",
                m.name,
                value,
                m.unit,
                m.samples,
                m.target.as_deref().unwrap_or("")
            ));
        }
        out
    }
}

/// Runs a suite on a thread with a large stack (so contract calls never switch stacks).
pub fn run(suite: Suite) -> anyhow::Result<Report> {
    let results = std::thread::Builder::new()
        .name("bench".into())
        .stack_size(64 << 20)
        .spawn(move || match suite {
            Suite::Store => store::run(),
            Suite::Contract => contract::run(),
            Suite::Ledger => ledger::run(),
            Suite::Apply => apply::run_apply(),
            Suite::Replay => apply::run_replay(),
            Suite::Settle => settle::run(),
            Suite::Startup => startup::run(),
            Suite::Catchup => catchup::run(),
            Suite::Sidechannel => sidechannel::run(),
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))??;
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
