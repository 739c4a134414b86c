//! The `contract` suite: what a contract call costs.
//!
//! - calls/s of a cached call that writes one key, applied to an LMDB write batch;
//! - p50/p99 of instantiate + call (a fresh instance from the pooling allocator per call);
//! - a cold load from the disk cache (a new runtime whose memory cache is empty);
//! - fuel overhead: the same core-wasm loops on an engine with and without fuel metering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use wasmtime::{Config, Engine, Instance, Module, Store};

use super::Measurement;
use crate::runtime::testkit::WatContract;
use crate::runtime::{
    CallContext, CallRequest, Invocation, Limits, LoadSource, OpKind, ReservedKeys, Runtime,
    RuntimeConfig, TxCall,
};
use crate::store::{Store as StateStore, StoreOptions};

/// A contract whose `execute` writes its arguments as both key and value.
fn writer_component() -> anyhow::Result<Vec<u8>> {
    Ok(WatContract::new()
        .body(
            "execute",
            "(call $put (local.get $c) (local.get $d) (local.get $c) (local.get $d) (i32.const 600))
             (call $ok_empty)",
        )
        .build()?)
}

/// Calls per throughput run.
const CALLS: u64 = 20_000;
/// Calls per committed batch.
const BATCH: u64 = 1_000;

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Measurement>> {
    let mut out = Vec::new();
    let cache = tempfile::tempdir()?;
    let component = writer_component()?;
    let limits = Limits::default();

    let compile_start = Instant::now();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })?;
    let (contract, source) = runtime.load_traced(&component, &limits)?;
    anyhow::ensure!(source == LoadSource::Compiled, "expected a cold compile");
    let mut compile = vec![compile_start.elapsed()];
    out.push(
        Measurement::latency_micros("compile + validate + instrument (cold)", &mut compile, 0.5)
            .in_millis(),
    );

    let state_dir = tempfile::tempdir()?;
    let store = StateStore::open(
        state_dir.path(),
        StoreOptions {
            sync: false,
            ..StoreOptions::default()
        },
    )?;
    let reserved = Arc::new(ReservedKeys::none());
    let mut latencies = Vec::with_capacity(CALLS as usize);
    let started = Instant::now();
    let mut i = 0u64;
    while i < CALLS {
        let mut batch = store.write()?;
        for _ in 0..BATCH {
            let key = i.to_be_bytes().to_vec();
            let request = CallRequest {
                view: &batch,
                context: CallContext::read_only(OpKind::Tx),
                reserved: reserved.clone(),
            };
            let invocation = Invocation::Tx(TxCall {
                function: "put".into(),
                args: key,
            });
            let call_start = Instant::now();
            let outcome = runtime.execute(&contract, &request, &invocation)?;
            latencies.push(call_start.elapsed());
            anyhow::ensure!(
                outcome.result.is_ok(),
                "bench call failed: {:?}",
                outcome.result
            );
            for write in outcome.writes {
                if let Some(value) = write.value {
                    batch.state_put(&write.key, &value)?;
                }
            }
            i += 1;
        }
        batch.commit()?;
    }
    out.push(
        Measurement::throughput(
            "cached call writing 1 key into an LMDB batch",
            CALLS,
            started.elapsed(),
        )
        .target(">= 50000 ops/s"),
    );
    out.push(
        Measurement::latency_micros("instantiate + call, p50", &mut latencies, 0.5)
            .target("<= 10 µs"),
    );
    out.push(Measurement::latency_micros(
        "instantiate + call, p99",
        &mut latencies,
        0.99,
    ));

    out.extend(intercom_calls(&runtime, &store)?);

    let mut cold = Vec::new();
    for _ in 0..20 {
        let fresh = Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            ..RuntimeConfig::default()
        })?;
        let start = Instant::now();
        let (_, source) = fresh.load_traced(&component, &limits)?;
        cold.push(start.elapsed());
        anyhow::ensure!(
            source == LoadSource::Disk,
            "expected a disk-cache hit, got {source:?}"
        );
    }
    out.push(
        Measurement::latency_micros("cold load from the disk cache, p50", &mut cold, 0.5)
            .in_millis()
            .target("<= 1 ms"),
    );

    for (name, wat) in [
        ("fuel overhead, arithmetic loop", ARITHMETIC_LOOP),
        ("fuel overhead, memory loop", MEMORY_LOOP),
    ] {
        let (with, without) = fuel_overhead(wat)?;
        out.push(Measurement::percent(
            name,
            (with.as_secs_f64() / without.as_secs_f64() - 1.0) * 100.0,
            LOOP_ITERATIONS as u64,
        ));
    }
    Ok(out)
}

/// Calls of the bundled Intercom component (a Rust contract built with the SDK): the
/// `storeSomething` transaction and the `readSnapshot` query.
fn intercom_calls(runtime: &Runtime, store: &StateStore) -> anyhow::Result<Vec<Measurement>> {
    const N: usize = 5_000;
    let contract = runtime.load(crate::bundled::INTERCOM, &Limits::default())?;
    let reserved = Arc::new(ReservedKeys::none());
    let batch = store.write()?;
    let request = CallRequest {
        view: &batch,
        context: CallContext::read_only(OpKind::Tx),
        reserved,
    };
    let invocation = Invocation::Tx(TxCall {
        function: "storeSomething".into(),
        args: vec![0xc0],
    });
    let mut tx = Vec::with_capacity(N);
    let mut fuel = 0;
    for _ in 0..N {
        let start = Instant::now();
        let outcome = runtime.execute(&contract, &request, &invocation)?;
        tx.push(start.elapsed());
        anyhow::ensure!(
            outcome.result.is_ok(),
            "storeSomething failed: {:?}",
            outcome.result
        );
        fuel = outcome.fuel_used;
    }
    let mut query = Vec::with_capacity(N);
    for _ in 0..N {
        let start = Instant::now();
        let outcome = runtime.query(&contract, &batch, "readSnapshot", &[0xc0])?;
        query.push(start.elapsed());
        anyhow::ensure!(
            outcome.result.is_ok(),
            "readSnapshot failed: {:?}",
            outcome.result
        );
    }
    let mut out = vec![
        Measurement::latency_micros("intercom storeSomething (tx), p50", &mut tx, 0.5),
        Measurement::latency_micros("intercom readSnapshot (query), p50", &mut query, 0.5),
    ];
    out.push(Measurement {
        name: "intercom storeSomething fuel".into(),
        value: fuel as f64,
        unit: "fuel",
        samples: 1,
        target: None,
    });
    Ok(out)
}

impl Measurement {
    /// Converts a latency in microseconds to milliseconds.
    fn in_millis(mut self) -> Self {
        self.value /= 1000.0;
        self.unit = "ms";
        self
    }
}

const LOOP_ITERATIONS: i32 = 20_000_000;

const ARITHMETIC_LOOP: &str = r#"(module
  (func (export "run") (param $n i32) (result i32)
    (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 31)) (local.get $n)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $l (local.get $n)))
    (local.get $acc)))"#;

const MEMORY_LOOP: &str = r#"(module
  (memory 1)
  (func (export "run") (param $n i32) (result i32)
    (loop $l
      (i32.store (i32.and (local.get $n) (i32.const 0xfffc))
        (i32.add (i32.load (i32.and (local.get $n) (i32.const 0xfffc))) (local.get $n)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $l (local.get $n)))
    (i32.load (i32.const 0))))"#;

/// Runs `wat`'s `run(LOOP_ITERATIONS)` on engines with and without fuel; best of 3 each.
fn fuel_overhead(wat: &str) -> anyhow::Result<(Duration, Duration)> {
    let time = |fuel: bool| -> anyhow::Result<Duration> {
        let mut config = Config::new();
        config
            .consume_fuel(fuel)
            .cranelift_nan_canonicalization(true);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let bytes = wat::parse_str(wat)?;
        let module = Module::new(&engine, &bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let mut store = Store::new(&engine, ());
            if fuel {
                store
                    .set_fuel(u64::MAX)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let instance =
                Instance::new(&mut store, &module, &[]).map_err(|e| anyhow::anyhow!("{e}"))?;
            let run = instance
                .get_typed_func::<i32, i32>(&mut store, "run")
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let start = Instant::now();
            run.call(&mut store, LOOP_ITERATIONS)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("fuel benchmark loop")?;
            best = best.min(start.elapsed());
        }
        Ok(best)
    };
    Ok((time(true)?, time(false)?))
}
