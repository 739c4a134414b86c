//! `trac replay --store <dir> [--to <height>] [--verify] [--trace <tx>] [--into <dir>] [--json]`:
//! rebuilds a subnet's state from its stored log and checks every checkpoint's root.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value as Json, json};

use crate::codec::json::msgpack_to_json;
use crate::crypto::Hash32;
use crate::ledger::replay::{ReplayDivergence, ReplayProgress};
use crate::subnet::TraceRead;
use crate::subnet::TxTrace;
use crate::subnet::replay::{self, SubnetReplayOptions, SubnetReplayReport};

/// `trac replay` arguments.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The subnet's store directory (only read).
    #[arg(long)]
    store: PathBuf,
    /// Stop after this checkpoint height (default: the last final checkpoint).
    #[arg(long)]
    to: Option<u64>,
    /// Also check every entry's signature, and compare the rebuilt final root with the store's
    /// confirmed root.
    #[arg(long)]
    verify: bool,
    /// Show what this transaction (MSB tx hash, 64 hex digits) did: result, fuel, reads,
    /// writes, events and debug lines.
    #[arg(long, value_name = "TX_HASH")]
    trace: Option<String>,
    /// Rebuild into this directory (new or empty) and keep it (default: a temporary directory,
    /// removed afterwards).
    #[arg(long, value_name = "DIR")]
    into: Option<PathBuf>,
    /// Directory of compiled contracts (default: a directory inside the scratch directory).
    #[arg(long, env = "TRAC_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print one JSON object instead of text (and no progress bar).
    #[arg(long)]
    json: bool,
}

/// Runs `trac replay`: exit status 1 on a divergence, a root that differs from the source's
/// (with `--verify`) or a traced transaction that was not applied.
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let trace = args
        .trace
        .as_deref()
        .map(|text| {
            Hash32::from_hex(text.trim())
                .with_context(|| format!("--trace {text:?} is not a transaction hash"))
        })
        .transpose()?;
    let options = SubnetReplayOptions {
        to: args.to,
        verify_signatures: args.verify,
        trace,
        into: args.into.clone(),
        cache_dir: args.cache_dir.clone(),
    };
    let bar = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(0);
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} checkpoint {pos}/{len} [{bar:40}] {msg} ({elapsed}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    };
    let mut progress = |p: &ReplayProgress| {
        bar.set_length(p.target);
        bar.set_position(p.height);
        bar.set_message(format!("{} ops", p.ops));
    };
    let result = replay::replay(&args.store, &options, &mut progress);
    bar.finish_and_clear();
    let report = result.context("replay failed")?;

    if args.json {
        println!("{}", to_json(&args, &report));
    } else {
        print!("{}", text(&args, &report));
    }
    if let Some(d) = &report.replay.divergence {
        bail!(
            "the replay diverged from the stored log at checkpoint {}",
            d.height
        );
    }
    if args.verify && report.matches_source() == Some(false) {
        bail!(
            "the rebuilt final root {} differs from the store's confirmed root {}",
            report.replay.root,
            report.source_root
        );
    }
    if let (Some(tx), None) = (trace, &report.trace) {
        bail!(
            "transaction {tx} was not applied in checkpoints 1 to {}",
            report.replay.height
        );
    }
    Ok(())
}

/// The divergence line.
fn divergence_line(d: &ReplayDivergence) -> String {
    let mut line = format!(
        "first divergent checkpoint {}: ops at positions {}..{}, expected root {}, computed {}",
        d.height, d.first_position, d.end_position, d.expected, d.computed
    );
    if !d.receipts_match {
        line.push_str(" (the receipts root differs too)");
    }
    line
}

/// A key or other bytes as text when they are printable UTF-8, else as hex.
fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.is_empty() && !text.chars().any(char::is_control) => text.to_string(),
        _ => format!("0x{}", hex::encode(bytes)),
    }
}

/// A MessagePack value as JSON text when it decodes, else hex.
fn show_msgpack(bytes: &[u8]) -> String {
    match msgpack_to_json(bytes) {
        Some(value) => value.to_string(),
        None => format!("0x{}", hex::encode(bytes)),
    }
}

fn text(args: &ReplayArgs, report: &SubnetReplayReport) -> String {
    use std::fmt::Write;
    let r = &report.replay;
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<12} {value}");
    };
    line(
        "subnet",
        format!("{} (channel {:?})", report.subnet, report.channel),
    );
    line(
        "checkpoints",
        format!(
            "{} replayed (the store's final height is {})",
            r.height, report.source_final_height
        ),
    );
    line("ops", r.ops.to_string());
    line("entries", r.entries.to_string());
    line("skipped", r.skipped.to_string());
    line("final root", r.root.to_hex());
    line("time", format!("{:.3} s", report.elapsed.as_secs_f64()));
    line("ops/s", format!("{:.0}", report.ops_per_second()));
    if args.verify {
        let verdict = match report.matches_source() {
            Some(true) => "signatures ok; the final root matches the store's confirmed root".into(),
            Some(false) => format!(
                "signatures ok; the final root DIFFERS from the store's confirmed root {}",
                report.source_root
            ),
            None => format!(
                "signatures ok up to checkpoint {}; the final root is not compared (the replay stopped before the store's final height)",
                r.height
            ),
        };
        line("verified", verdict);
    }
    if let Some(kept) = &report.kept {
        line("kept", kept.display().to_string());
    }
    if let Some(d) = &r.divergence {
        let _ = writeln!(out, "{}", divergence_line(d));
    }
    if let Some(trace) = &report.trace {
        out.push_str(&trace_text(trace));
    }
    out
}

fn trace_text(trace: &TxTrace) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<12} {value}");
    };
    line("trace", trace.tx_hash.to_hex());
    line("function", trace.function.clone());
    line("position", trace.position.to_string());
    match &trace.result {
        Ok(bytes) => line("result", format!("ok {}", show_msgpack(bytes))),
        Err(e) => line("result", format!("error: {e}")),
    }
    line("fuel", trace.fuel.to_string());
    for read in &trace.reads {
        match read {
            TraceRead::Get { key, found } => line(
                "read",
                match found {
                    Some(len) => format!("{} found ({len} bytes)", show_bytes(key)),
                    None => format!("{} absent", show_bytes(key)),
                },
            ),
            TraceRead::Range {
                start,
                end,
                records,
            } => line(
                "read range",
                format!(
                    "{}..{} ({records} records)",
                    show_bytes(start),
                    end.as_deref().map_or_else(String::new, show_bytes)
                ),
            ),
        }
    }
    for write in &trace.writes {
        line(
            "write",
            match &write.value {
                Some(value) => format!("{} = {} bytes", show_bytes(&write.key), value.len()),
                None => format!("{} deleted", show_bytes(&write.key)),
            },
        );
    }
    for event in &trace.events {
        line(
            "event",
            format!("{} 0x{}", event.topic, hex::encode(&event.data)),
        );
    }
    for debug in &trace.debug {
        line("debug", debug.clone());
    }
    out
}

fn trace_json(trace: &TxTrace) -> Json {
    let reads: Vec<Json> = trace
        .reads
        .iter()
        .map(|read| match read {
            TraceRead::Get { key, found } => json!({
                "kind": "get",
                "key": show_bytes(key),
                "found": found.is_some(),
                "len": found,
            }),
            TraceRead::Range {
                start,
                end,
                records,
            } => json!({
                "kind": "range",
                "start": show_bytes(start),
                "end": end.as_deref().map(show_bytes),
                "records": records,
            }),
        })
        .collect();
    let writes: Vec<Json> = trace
        .writes
        .iter()
        .map(|w| {
            json!({
                "key": show_bytes(&w.key),
                "len": w.value.as_ref().map(Vec::len),
                "deleted": w.value.is_none(),
            })
        })
        .collect();
    let events: Vec<Json> = trace
        .events
        .iter()
        .map(|e| json!({ "topic": e.topic, "data": hex::encode(&e.data) }))
        .collect();
    json!({
        "tx": trace.tx_hash.to_hex(),
        "function": trace.function,
        "position": trace.position,
        "result": trace.result.as_ref().ok().map(|bytes| {
            msgpack_to_json(bytes).unwrap_or_else(|| Json::String(hex::encode(bytes)))
        }),
        "error": trace.result.as_ref().err(),
        "fuel": trace.fuel,
        "reads": reads,
        "writes": writes,
        "events": events,
        "debug": trace.debug,
    })
}

fn to_json(args: &ReplayArgs, report: &SubnetReplayReport) -> Json {
    let r = &report.replay;
    json!({
        "subnet": report.subnet.to_hex(),
        "channel": report.channel,
        "store": args.store.display().to_string(),
        "checkpoints": r.height,
        "source_final_height": report.source_final_height,
        "ops": r.ops,
        "entries": r.entries,
        "skipped": r.skipped,
        "final_root": r.root.to_hex(),
        "source_root": report.source_root.to_hex(),
        "matches_source": report.matches_source(),
        "signatures_verified": args.verify,
        "seconds": report.elapsed.as_secs_f64(),
        "ops_per_second": report.ops_per_second(),
        "kept": report.kept.as_ref().map(|p| p.display().to_string()),
        "divergence": r.divergence.as_ref().map(|d| json!({
            "height": d.height,
            "first_position": d.first_position,
            "end_position": d.end_position,
            "expected": d.expected.to_hex(),
            "computed": d.computed.to_hex(),
            "receipts_match": d.receipts_match,
            "message": divergence_line(d),
        })),
        "trace": report.trace.as_ref().map(trace_json),
    })
}
