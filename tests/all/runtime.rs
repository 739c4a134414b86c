//! The contract runtime (`trac_host::runtime`) end to end: real wasmtime, real LMDB state in
//! temporary directories, contracts written in WAT (`wat_contract`).
//!
//! Conventions of the contracts below: static data from 1024 ([`Data`]), return areas of the
//! imports from 600 ([`R`]), and most calls end by returning a snapshot of their memory
//! (`$snapshot`: bytes `0..heap`), which the test decodes with [`Mem`] using the canonical-ABI
//! layouts of the results (e.g. `result<_, state-error>`: discriminant byte at `ret`, variant
//! at `ret + 4`, payload `u32` at `ret + 8`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use tempfile::TempDir;
use trac_host::crypto::{Hash32, PublicKey};
use trac_host::runtime::{
    CallContext, CallFailure, CallOutcome, CallRequest, Contract, Event, HARD_CAPS, Invocation,
    Limits, LoadSource, OpKind, PRICES_V1, ReservedKeys, Runtime, RuntimeConfig, RuntimeError,
    StateView, StateWrite, TxCall, ValidationError, contract_features, instrument_component,
    instrument_module, validate_component,
};
use trac_host::store::{Store, StoreOptions, StoreRead};

use crate::support::{pseudo_random_bytes, tempdir};
use crate::wat_contract::{WORLD_WIT_DIR, WatContract, componentize};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Small map, no fsync.
const FAST: StoreOptions = StoreOptions {
    map_size: 64 << 20,
    sync: false,
};

/// A store in a fresh temporary directory holding `records`.
fn store_with(records: &[(&[u8], &[u8])]) -> (TempDir, Store) {
    let dir = tempdir();
    let store = Store::open(dir.path(), FAST).expect("open store");
    if !records.is_empty() {
        let mut batch = store.write().unwrap();
        for (k, v) in records {
            batch.state_put(k, v).unwrap();
        }
        batch.commit().unwrap();
    }
    (dir, store)
}

/// Applies a call's writes to the store in one batch, commits, and returns the state root.
fn apply(store: &Store, writes: &[StateWrite]) -> Hash32 {
    let mut batch = store.write().unwrap();
    for w in writes {
        match &w.value {
            Some(v) => {
                batch.state_put(&w.key, v).unwrap();
            }
            None => {
                batch.state_delete(&w.key).unwrap();
            }
        }
    }
    batch.commit().unwrap();
    store.state_root().unwrap()
}

/// State records: keys and values.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Every state record of the store.
fn records(store: &Store) -> Records {
    store
        .read()
        .unwrap()
        .state_range(&[], None, usize::MAX)
        .unwrap()
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

fn load(runtime: &Runtime, component: &[u8], limits: &Limits) -> Arc<Contract> {
    runtime.load(component, limits).expect("contract loads")
}

/// A context with every field set to something recognisable.
fn context() -> CallContext {
    CallContext {
        op_kind: OpKind::Tx,
        tx_hash: Hash32([0x11; 32]),
        sender: PublicKey([0x22; 32]),
        validator: Some(PublicKey([0x33; 32])),
        log_position: 0x0102_0304_0506_0708,
        checkpoint_time: 1_700_000_000_123,
    }
}

fn tx(function: &str, args: &[u8]) -> Invocation {
    Invocation::Tx(TxCall {
        function: function.into(),
        args: args.to_vec(),
    })
}

/// `execute` of `function(args)` against `view`, with the test context and no reserved keys.
fn execute(
    runtime: &Runtime,
    contract: &Contract,
    view: &dyn StateView,
    function: &str,
    args: &[u8],
) -> CallOutcome<Vec<u8>> {
    execute_reserved(
        runtime,
        contract,
        view,
        ReservedKeys::none(),
        function,
        args,
    )
}

fn execute_reserved(
    runtime: &Runtime,
    contract: &Contract,
    view: &dyn StateView,
    reserved: ReservedKeys,
    function: &str,
    args: &[u8],
) -> CallOutcome<Vec<u8>> {
    let request = CallRequest {
        view,
        context: context(),
        reserved: Arc::new(reserved),
    };
    runtime
        .execute(contract, &request, &tx(function, args))
        .expect("no node error")
}

/// Bytes placed in the contract's memory from offset 1024.
struct Data {
    next: u32,
    items: Vec<(u32, Vec<u8>)>,
}

/// Where some bytes are: offset and length.
#[derive(Debug, Clone, Copy)]
struct B(u32, u32);

impl Data {
    fn new() -> Self {
        Data {
            next: 1024,
            items: Vec::new(),
        }
    }

    fn add(&mut self, bytes: &[u8]) -> B {
        let at = self.next;
        self.next = (at + bytes.len() as u32 + 3) & !3;
        assert!(self.next <= 4096, "static data overflows into the heap");
        self.items.push((at, bytes.to_vec()));
        B(at, bytes.len() as u32)
    }

    fn into_contract(self, mut contract: WatContract) -> WatContract {
        for (at, bytes) in self.items {
            if !bytes.is_empty() {
                contract = contract.data(at, &bytes);
            }
        }
        contract.extra(SNAPSHOT)
    }
}

/// `$snapshot`: `ok(memory[0..heap])`.
const SNAPSHOT: &str =
    "(func $snapshot (result i32) (call $ok_bytes (i32.const 0) (global.get $heap)))";

/// Return area number `n` for an import (16 bytes each from 600; 8-aligned).
#[allow(non_snake_case)]
fn R(n: u32) -> u32 {
    600 + 16 * n
}

fn put(k: B, v: B, ret: u32) -> String {
    format!(
        "(call $put (i32.const {}) (i32.const {}) (i32.const {}) (i32.const {}) (i32.const {ret}))\n",
        k.0, k.1, v.0, v.1
    )
}

fn del(k: B, ret: u32) -> String {
    format!(
        "(call $delete (i32.const {}) (i32.const {}) (i32.const {ret}))\n",
        k.0, k.1
    )
}

fn get(k: B, ret: u32) -> String {
    format!(
        "(call $get (i32.const {}) (i32.const {}) (i32.const {ret}))\n",
        k.0, k.1
    )
}

fn scan(start: B, end: Option<B>, limit: i32, ret: u32) -> String {
    let (tag, ep, el) = match end {
        Some(B(p, l)) => (1, p, l),
        None => (0, 0, 0),
    };
    format!(
        "(call $scan (i32.const {}) (i32.const {}) (i32.const {tag}) (i32.const {ep}) (i32.const {el}) (i32.const {limit}) (i32.const {ret}))\n",
        start.0, start.1
    )
}

fn emit(topic: B, data: B, ret: u32) -> String {
    format!(
        "(call $emit (i32.const {}) (i32.const {}) (i32.const {}) (i32.const {}) (i32.const {ret}))\n",
        topic.0, topic.1, data.0, data.1
    )
}

/// An `execute` body that runs the case named by the first byte of the function name; each
/// case must end by returning (`(return (call $snapshot))`). Other names return `ok([])`.
fn dispatch(cases: &[(char, String)]) -> String {
    let mut body = String::new();
    for (c, case) in cases {
        body.push_str(&format!(
            "(if (i32.eq (i32.load8_u (local.get $a)) (i32.const {})) (then\n{case}))\n",
            *c as u32
        ));
    }
    body.push_str("(call $ok_empty)");
    body
}

/// A `state-error` as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateErr {
    KeySize(u32),
    ValueSize(u32),
    ReservedKey,
    ReadOnly,
    NoAccess,
    WriteLimit,
}

/// A memory snapshot returned by a contract.
struct Mem(Vec<u8>);

impl Mem {
    fn u8(&self, at: u32) -> u8 {
        self.0[at as usize]
    }

    fn u32(&self, at: u32) -> u32 {
        u32::from_le_bytes(self.0[at as usize..at as usize + 4].try_into().unwrap())
    }

    fn u64(&self, at: u32) -> u64 {
        u64::from_le_bytes(self.0[at as usize..at as usize + 8].try_into().unwrap())
    }

    /// The `list<u8>` whose pointer and length are at `at`.
    fn list(&self, at: u32) -> Vec<u8> {
        let (ptr, len) = (self.u32(at) as usize, self.u32(at + 4) as usize);
        self.0[ptr..ptr + len].to_vec()
    }

    fn state_err(&self, at: u32) -> StateErr {
        match self.u8(at) {
            0 => StateErr::KeySize(self.u32(at + 4)),
            1 => StateErr::ValueSize(self.u32(at + 4)),
            2 => StateErr::ReservedKey,
            3 => StateErr::ReadOnly,
            4 => StateErr::NoAccess,
            5 => StateErr::WriteLimit,
            other => panic!("not a state-error discriminant: {other}"),
        }
    }

    /// `result<_, state-error>` at `ret`.
    fn unit(&self, ret: u32) -> Result<(), StateErr> {
        match self.u8(ret) {
            0 => Ok(()),
            1 => Err(self.state_err(ret + 4)),
            other => panic!("not a result discriminant: {other}"),
        }
    }

    /// `result<option<list<u8>>, state-error>` at `ret`.
    fn get(&self, ret: u32) -> Result<Option<Vec<u8>>, StateErr> {
        match self.u8(ret) {
            0 => Ok(match self.u8(ret + 4) {
                0 => None,
                1 => Some(self.list(ret + 8)),
                other => panic!("not an option discriminant: {other}"),
            }),
            1 => Err(self.state_err(ret + 4)),
            other => panic!("not a result discriminant: {other}"),
        }
    }

    /// `result<list<entry>, state-error>` at `ret`.
    fn scan(&self, ret: u32) -> Result<Records, StateErr> {
        match self.u8(ret) {
            0 => {
                let (ptr, len) = (self.u32(ret + 4), self.u32(ret + 8));
                Ok((0..len)
                    .map(|i| {
                        let entry = ptr + 16 * i;
                        (self.list(entry), self.list(entry + 8))
                    })
                    .collect())
            }
            1 => Err(self.state_err(ret + 4)),
            other => panic!("not a result discriminant: {other}"),
        }
    }

    /// `result<_, string>` at `ret`.
    fn string_result(&self, ret: u32) -> Result<(), String> {
        match self.u8(ret) {
            0 => Ok(()),
            1 => Err(String::from_utf8(self.list(ret + 4)).unwrap()),
            other => panic!("not a result discriminant: {other}"),
        }
    }
}

/// The memory snapshot a successful call returned.
#[track_caller]
fn mem(outcome: &CallOutcome<Vec<u8>>) -> Mem {
    match &outcome.result {
        Ok(bytes) => Mem(bytes.clone()),
        Err(e) => panic!("call failed: {e:?} ({outcome:?})"),
    }
}

fn kv(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (k.to_vec(), v.to_vec())
}

fn write(k: &[u8], v: Option<&[u8]>) -> StateWrite {
    StateWrite {
        key: k.to_vec(),
        value: v.map(<[u8]>::to_vec),
    }
}

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    f(&mut limits);
    limits
}

// ---------------------------------------------------------------------------------------------
// 1. Determinism
// ---------------------------------------------------------------------------------------------

/// Reads a counter, increments it, hashes the seed, copies the sender, deletes a key, emits an
/// event and stores a float result.
fn determinism_contract() -> Vec<u8> {
    let mut d = Data::new();
    let counter = d.add(b"counter");
    let seedhash = d.add(b"seedhash");
    let sender = d.add(b"sender");
    let old = d.add(b"old");
    let float = d.add(b"float");
    let topic = d.add(b"counted");
    let body = format!(
        "{get}
         (i32.store (i32.const 2000) (i32.add (i32.load (i32.load (i32.const {gv}))) (i32.const 1)))
         {put_counter}
         (call $current (i32.const 800))
         (call $blake3 (i32.load (i32.const 848)) (i32.load (i32.const 852)) (i32.const {r3}))
         (call $put (i32.const {sh0}) (i32.const {sh1}) (i32.load (i32.const {r3})) (i32.load (i32.const {r3p4})) (i32.const {r4}))
         (call $put (i32.const {se0}) (i32.const {se1}) (i32.load (i32.const 812)) (i32.load (i32.const 816)) (i32.const {r5}))
         {del_old}
         (f64.store (i32.const 2008) (f64.sqrt (f64.convert_i32_u (i32.load (i32.const 2000)))))
         {put_float}
         {emit}
         (call $ok_bytes (i32.const 2000) (i32.const 4))",
        get = get(counter, R(0)),
        gv = R(0) + 8,
        put_counter = put(counter, B(2000, 4), R(1)),
        r3 = R(2),
        r3p4 = R(2) + 4,
        sh0 = seedhash.0,
        sh1 = seedhash.1,
        r4 = R(3),
        se0 = sender.0,
        se1 = sender.1,
        r5 = R(4),
        del_old = del(old, R(5)),
        put_float = put(float, B(2008, 8), R(6)),
        emit = emit(topic, B(2000, 4), R(7)),
    );
    d.into_contract(WatContract::new().body("execute", &body))
        .build()
}

const DETERMINISM_BASE: [(&[u8], &[u8]); 3] = [
    (b"counter", &[5, 0, 0, 0]),
    (b"old", b"to be deleted"),
    (b"other", b"stays"),
];

/// Runs the determinism contract once on a fresh store; returns the outcome and the state root
/// after its writes were committed.
fn determinism_run(runtime: &Runtime, contract: &Contract) -> (CallOutcome<Vec<u8>>, Hash32) {
    let (_dir, store) = store_with(&DETERMINISM_BASE);
    let before = store.state_root().unwrap();
    let batch = store.write().unwrap();
    let outcome = execute(runtime, contract, &batch, "run", b"");
    drop(batch);
    let root = apply(&store, &outcome.writes);
    assert_ne!(root, before, "the call changed the state");
    (outcome, root)
}

#[test]
fn determinism_across_runs_runtimes_and_caches() {
    let component = determinism_contract();
    let limits = Limits::default();

    let first = runtime();
    let contract = load(&first, &component, &limits);
    let (reference, root) = determinism_run(&first, &contract);
    assert_eq!(reference.result, Ok(vec![6, 0, 0, 0]));

    // What the writes must be, independently of the runtime.
    let ctx = context();
    let seedhash = blake3::hash(ctx.seed().as_bytes());
    assert_eq!(
        reference.writes,
        vec![
            write(b"counter", Some(&[6, 0, 0, 0])),
            write(b"float", Some(&6f64.sqrt().to_le_bytes())),
            write(b"old", None),
            write(b"seedhash", Some(seedhash.as_bytes())),
            write(b"sender", Some(&[0x22; 32])),
        ]
    );
    assert_eq!(
        reference.events,
        vec![Event {
            topic: "counted".into(),
            data: vec![6, 0, 0, 0]
        }]
    );
    let (_dir, expected) = store_with(&[
        (b"counter", &[6, 0, 0, 0]),
        (b"float", &6f64.sqrt().to_le_bytes()),
        (b"other", b"stays"),
        (b"seedhash", seedhash.as_bytes()),
        (b"sender", &[0x22; 32]),
    ]);
    assert_eq!(root, expected.state_root().unwrap());

    // Repeated runs on the same runtime and contract.
    for _ in 0..3 {
        assert_eq!(
            determinism_run(&first, &contract),
            (reference.clone(), root)
        );
    }

    // A second runtime with its own engine.
    let second = runtime();
    let contract2 = load(&second, &component, &limits);
    assert_eq!(
        determinism_run(&second, &contract2),
        (reference.clone(), root)
    );

    // The disk cache: cold (compiled), then warm from disk in a new runtime, then memory.
    let cache = tempdir();
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    let cold = Runtime::new(config.clone()).unwrap();
    let (c, source) = cold.load_traced(&component, &limits).unwrap();
    assert_eq!(source, LoadSource::Compiled);
    assert_eq!(determinism_run(&cold, &c), (reference.clone(), root));
    let (_, source) = cold.load_traced(&component, &limits).unwrap();
    assert_eq!(source, LoadSource::Memory);
    drop(cold);

    let warm = Runtime::new(config).unwrap();
    let (c, source) = warm.load_traced(&component, &limits).unwrap();
    assert_eq!(source, LoadSource::Disk);
    assert_eq!(determinism_run(&warm, &c), (reference.clone(), root));
    let (c, source) = warm.load_traced(&component, &limits).unwrap();
    assert_eq!(source, LoadSource::Memory);
    assert_eq!(determinism_run(&warm, &c), (reference, root));
}

#[test]
fn damaged_disk_cache_entry_is_rebuilt() {
    let component = WatContract::new().build();
    let cache = tempdir();
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    let limits = Limits::default();
    let (_, source) = Runtime::new(config.clone())
        .unwrap()
        .load_traced(&component, &limits)
        .unwrap();
    assert_eq!(source, LoadSource::Compiled);
    // Flip a byte in the middle of every artifact.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let runtime = Runtime::new(config).unwrap();
    let (contract, source) = runtime.load_traced(&component, &limits).unwrap();
    assert_eq!(source, LoadSource::Compiled);
    let info = runtime.describe(&contract).unwrap().result.unwrap();
    assert_eq!(
        (info.name.as_str(), info.version.as_str()),
        ("wat-test", "0.1.0")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Golden fuel vectors
// ---------------------------------------------------------------------------------------------

/// Exact fuel of reference calls under `Limits::default()` and `PRICES_V1`.
///
/// Fuel is consensus: every node must charge exactly these amounts. A wasmtime bump, a change of
/// the instrumentation or of the price table that alters any of them must fail here, and is a
/// deliberate protocol change (a new runtime protocol version), never a silent update of the
/// constants.
#[test]
fn golden_fuel_vectors() {
    const DESCRIBE: u64 = 90;
    const EXECUTE_ONE_WRITE: u64 = 1_355;
    const EXECUTE_LOOP_1000: u64 = 8_158;
    const QUERY_ONE_READ: u64 = 1_262;

    let rt = runtime();
    let limits = Limits::default();
    let kv_contract = WatContract::new()
        .data(1024, b"keyvalue")
        .body(
            "execute",
            "(call $put (i32.const 1024) (i32.const 3) (i32.const 1027) (i32.const 5) (i32.const 600))
             (call $ok_empty)",
        )
        .body(
            "query",
            "(call $get (i32.const 1024) (i32.const 3) (i32.const 600))
             (call $ok_bytes (i32.load (i32.const 608)) (i32.load (i32.const 612)))",
        )
        .build();
    let loop_contract = WatContract::new()
        .body(
            "execute",
            "(local $i i32)
             (loop $l
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
             (call $ok_empty)",
        )
        .build();
    let kv = load(&rt, &kv_contract, &limits);
    let looping = load(&rt, &loop_contract, &limits);
    let (_dir, store) = store_with(&[(b"key", b"value")]);
    let view = store.read().unwrap();

    let describe = rt.describe(&kv).unwrap();
    assert!(describe.result.is_ok());
    let one_write = execute(&rt, &kv, &view, "set", b"");
    assert_eq!(one_write.writes, vec![write(b"key", Some(b"value"))]);
    let loop_1000 = execute(&rt, &looping, &view, "loop", b"");
    assert_eq!(loop_1000.result, Ok(vec![]));
    let query = rt.query(&kv, &view, "get", b"").unwrap();
    assert_eq!(query.result, Ok(b"value".to_vec()));

    let measured = [
        describe.fuel_used,
        one_write.fuel_used,
        loop_1000.fuel_used,
        query.fuel_used,
    ];
    assert_eq!(
        measured,
        [
            DESCRIBE,
            EXECUTE_ONE_WRITE,
            EXECUTE_LOOP_1000,
            QUERY_ONE_READ
        ],
        "fuel changed: a consensus change (see the comment above)"
    );
    // The host charges are inside them.
    assert!(measured[1] > PRICES_V1.host_call + 8 * PRICES_V1.write_byte);
    assert!(measured[3] > PRICES_V1.host_call + 8 * PRICES_V1.read_byte);
    assert!(measured[2] > 1000);
}

// ---------------------------------------------------------------------------------------------
// 3. Fuel exhaustion
// ---------------------------------------------------------------------------------------------

#[test]
fn infinite_loop_runs_out_of_fuel_and_changes_nothing() {
    let rt = runtime();
    let small = limits(|l| l.fuel_per_call = 1_000_000);
    let mut d = Data::new();
    let key = d.add(b"key");
    let value = d.add(b"value");
    let topic = d.add(b"topic");
    let body = format!(
        "{}{}(call $debug (i32.const {}) (i32.const {})) (loop $l (br $l)) (call $ok_empty)",
        put(key, value, R(0)),
        emit(topic, value, R(1)),
        topic.0,
        topic.1,
    );
    let component = d
        .into_contract(
            WatContract::new()
                .body("execute", &body)
                .body("query", "(loop $l (br $l)) (call $ok_empty)"),
        )
        .build();
    let contract = load(&rt, &component, &small);
    let (_dir, store) = store_with(&[(b"key", b"before")]);
    let root = store.state_root().unwrap();

    // More calls than the instance pool has slots: failed calls give theirs back.
    for _ in 0..40 {
        let batch = store.write().unwrap();
        let outcome = execute(&rt, &contract, &batch, "spin", b"");
        drop(batch);
        assert_eq!(outcome.result, Err(CallFailure::OutOfFuel));
        assert_eq!(outcome.fuel_used, small.fuel_per_call);
        assert!(outcome.writes.is_empty(), "{outcome:?}");
        assert!(outcome.events.is_empty(), "{outcome:?}");
        // Debug output is not consensus and is kept for failed calls.
        assert_eq!(outcome.debug, vec!["topic".to_string()]);
        assert_eq!(apply(&store, &outcome.writes), root);
    }
    assert_eq!(records(&store), vec![kv(b"key", b"before")]);

    // Queries are metered the same way.
    let view = store.read().unwrap();
    let query = rt.query(&contract, &view, "spin", b"").unwrap();
    assert_eq!(query.result, Err(CallFailure::OutOfFuel));
    assert_eq!(query.fuel_used, small.fuel_per_call);
    drop(view);

    // The host is healthy: the same contract still describes itself, and a normal call of
    // another contract on the same runtime writes.
    assert!(rt.describe(&contract).unwrap().result.is_ok());
    let mut d = Data::new();
    let key = d.add(b"key");
    let value = d.add(b"after");
    let normal = d
        .into_contract(WatContract::new().body(
            "execute",
            &format!("{}(call $ok_empty)", put(key, value, R(0))),
        ))
        .build();
    let normal = load(&rt, &normal, &Limits::default());
    let batch = store.write().unwrap();
    let outcome = execute(&rt, &normal, &batch, "set", b"");
    drop(batch);
    assert_eq!(outcome.result, Ok(vec![]));
    assert_ne!(apply(&store, &outcome.writes), root);
    assert_eq!(records(&store), vec![kv(b"key", b"after")]);
}

#[test]
fn arguments_and_results_are_charged_per_byte() {
    let rt = runtime();
    let tiny = limits(|l| l.fuel_per_call = 1_000);
    let contract = load(&rt, &WatContract::new().build(), &tiny);
    // Arguments larger than the whole budget: out of fuel before the contract runs.
    let outcome = execute(&rt, &contract, &EmptyView, "f", &[0; 2_000]);
    assert_eq!(outcome.result, Err(CallFailure::OutOfFuel));
    assert_eq!(outcome.fuel_used, tiny.fuel_per_call);

    // Every argument byte costs `io_byte`, every result byte too.
    let echo = WatContract::new()
        .body("execute", "(call $ok_bytes (local.get $c) (local.get $d))")
        .build();
    let echo = load(&rt, &echo, &Limits::default());
    let short = execute(&rt, &echo, &EmptyView, "f", &[1; 10]);
    let long = execute(&rt, &echo, &EmptyView, "f", &[1; 110]);
    assert_eq!(long.result, Ok(vec![1; 110]));
    assert_eq!(long.fuel_used - short.fuel_used, 200 * PRICES_V1.io_byte);

    // A result above the limit is a recorded failure.
    let small_results = limits(|l| l.max_result_bytes = 100);
    let echo = WatContract::new()
        .body("execute", "(call $ok_bytes (local.get $c) (local.get $d))")
        .build();
    let rt2 = runtime();
    let echo = load(&rt2, &echo, &small_results);
    let outcome = rt2
        .execute(
            &echo,
            &CallRequest {
                view: &EmptyView,
                context: context(),
                reserved: Arc::new(ReservedKeys::none()),
            },
            &tx("f", &[1; 101]),
        )
        .unwrap();
    assert_eq!(outcome.result, Err(CallFailure::ResultTooLarge(101)));
}

/// A view with no records.
struct EmptyView;

impl StateView for EmptyView {
    fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, trac_host::store::StoreError> {
        Ok(None)
    }
    fn range(
        &self,
        _: &[u8],
        _: Option<&[u8]>,
        _: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, trac_host::store::StoreError> {
        Ok(Vec::new())
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Memory and table limits
// ---------------------------------------------------------------------------------------------

#[test]
fn memory_bombs_hit_the_memory_limit() {
    let rt = runtime();
    // 16 pages.
    let lim = limits(|l| {
        l.max_memory_bytes = 1 << 20;
        l.max_table_elements = 100;
    });
    let cases = [
        (
            'l',
            "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
             (return (call $ok_empty))",
        ),
        (
            'h',
            "(drop (memory.grow (i32.const 1000))) (return (call $ok_empty))",
        ),
        (
            'x',
            "(drop (memory.grow (i32.const 65535))) (return (call $ok_empty))",
        ),
        // Exactly up to the limit: allowed.
        (
            'e',
            "(i32.store (i32.const 2000) (memory.grow (i32.const 15)))
             (i32.store (i32.const 2004) (memory.size))
             (return (call $ok_bytes (i32.const 2000) (i32.const 8)))",
        ),
        // One page past it.
        (
            'o',
            "(drop (memory.grow (i32.const 15))) (drop (memory.grow (i32.const 1)))
             (return (call $ok_empty))",
        ),
        (
            'n',
            "(i32.store (i32.const 2000) (memory.grow (i32.const 65536)))
             (return (call $ok_bytes (i32.const 2000) (i32.const 4)))",
        ),
        (
            't',
            "(drop (table.grow $bomb (ref.null func) (i32.const 1000))) (return (call $ok_empty))",
        ),
    ];
    let cases: Vec<(char, String)> = cases.iter().map(|(c, b)| (*c, b.to_string())).collect();
    let component = WatContract::new()
        .extra("(table $bomb 1 funcref)")
        .body("execute", &dispatch(&cases))
        .build();
    let contract = load(&rt, &component, &lim);
    let run = |name: &str, args: &[u8]| execute(&rt, &contract, &EmptyView, name, args);

    // Past the addressable 4 GiB too: the limit is checked first.
    for name in ["loop", "huge", "xhuge", "over", "n"] {
        let outcome = run(name, b"");
        assert_eq!(outcome.result, Err(CallFailure::MemoryLimit), "{name}");
        assert!(outcome.writes.is_empty());
    }
    assert_eq!(
        run("exact", b"").result,
        Ok(vec![1, 0, 0, 0, 16, 0, 0, 0]),
        "growing to exactly the limit works"
    );
    assert_eq!(run("table", b"").result, Err(CallFailure::TableLimit));
    // Arguments too large for the memory limit: the host's allocation in the guest fails.
    assert_eq!(
        run("args", &vec![0; 2 << 20]).result,
        Err(CallFailure::MemoryLimit)
    );
    // Still healthy.
    assert_eq!(run("exact", b"").result, Ok(vec![1, 0, 0, 0, 16, 0, 0, 0]));
}

#[test]
fn initial_memory_above_the_limit_is_refused_at_validation() {
    let lim = limits(|l| l.max_memory_bytes = 1 << 20);
    let wat = WatContract::new().wat().replace(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 17)",
    );
    let component = componentize(wat::parse_str(&wat).unwrap(), WORLD_WIT_DIR, "contract");
    match validate_component(&component, &lim) {
        Err(ValidationError::TooMany { what, count, max }) => {
            assert!(what.contains("initial memory"), "{what}");
            assert_eq!((count, max), (17 * 65_536, 1 << 20));
        }
        other => panic!("expected TooMany, got {other:?}"),
    }
    assert!(matches!(
        runtime().load(&component, &lim),
        Err(RuntimeError::Validation(ValidationError::TooMany { .. }))
    ));
    // At the limit it is accepted.
    let wat = WatContract::new().wat().replace(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 16)",
    );
    let component = componentize(wat::parse_str(&wat).unwrap(), WORLD_WIT_DIR, "contract");
    assert!(validate_component(&component, &lim).is_ok());

    // An initial table above the limit too.
    let component = WatContract::new().extra("(table $big 101 funcref)").build();
    let lim = limits(|l| l.max_table_elements = 100);
    assert!(matches!(
        validate_component(&component, &lim),
        Err(ValidationError::TooMany { .. })
    ));
}

#[test]
fn data_segment_outside_memory_is_refused_at_validation() {
    // Every instantiation of such a component would trap, so it is refused up front.
    let component = WatContract::new()
        .extra("(data (i32.const 65535) \"xy\")")
        .build();
    match validate_component(&component, &Limits::default()) {
        Err(ValidationError::Invalid(m)) => assert!(m.contains("data segment"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Exactly at the end of memory is fine.
    let fits = WatContract::new()
        .extra("(data (i32.const 65534) \"xy\")")
        .build();
    assert!(validate_component(&fits, &Limits::default()).is_ok());
}

// ---------------------------------------------------------------------------------------------
// 5. Call depth
// ---------------------------------------------------------------------------------------------

#[test]
fn unbounded_recursion_is_a_call_depth_failure() {
    let rt = runtime();
    let plain = WatContract::new()
        .extra("(func $rec (param i32) (result i32) (call $rec (i32.add (local.get 0) (i32.const 1))))")
        .body("execute", "(drop (call $rec (i32.const 0))) (call $ok_empty)")
        .build();
    // Through a table (`call_indirect`) and mutual recursion.
    let indirect = WatContract::new()
        .extra(
            "(type $void (func))
             (table $fns 2 funcref)
             (elem (table $fns) (i32.const 0) func $ping $pong)
             (func $ping (type $void) (call_indirect $fns (type $void) (i32.const 1)))
             (func $pong (type $void) (call_indirect $fns (type $void) (i32.const 0)))",
        )
        .body("execute", "(call $ping) (call $ok_empty)")
        .build();
    for limits in [
        Limits::default(),
        limits(|l| l.max_call_depth = HARD_CAPS.max_call_depth),
    ] {
        for component in [&plain, &indirect, &large_frame_contract()] {
            let contract = load(&rt, component, &limits);
            let outcome = execute(&rt, &contract, &EmptyView, "f", b"");
            assert_eq!(outcome.result, Err(CallFailure::CallDepth));
            assert!(outcome.writes.is_empty());
        }
    }
}

/// A recursion whose frames hold 1 000 `i64` locals, all live across the recursive call.
fn large_frame_contract() -> Vec<u8> {
    const LOCALS: usize = 1_000;
    let mut f = String::from("(func $big (param $n i64) (result i64)\n");
    f.push_str(&format!("(local {})\n", "i64 ".repeat(LOCALS)));
    for i in 1..=LOCALS {
        f.push_str(&format!(
            "(local.set {i} (i64.load offset={} (i32.const 0)))\n",
            8 * i
        ));
    }
    f.push_str("(call $big (i64.add (local.get $n) (i64.const 1)))\n");
    for i in 1..=LOCALS {
        f.push_str(&format!("(i64.xor (local.get {i})) "));
    }
    f.push_str(")\n");
    WatContract::new()
        .extra(&f)
        .body(
            "execute",
            "(drop (call $big (i64.const 1))) (call $ok_empty)",
        )
        .build()
}

#[test]
fn call_depth_limit_is_exact() {
    // `$rec n` makes n frames; with the export itself a call is n + 1 levels deep.
    let component = WatContract::new()
        .extra(
            "(func $rec (param $n i32)
               (if (i32.gt_u (local.get $n) (i32.const 1))
                 (then (call $rec (i32.sub (local.get $n) (i32.const 1))))))",
        )
        .body(
            "execute",
            "(if (i32.load (local.get $c)) (then (call $rec (i32.load (local.get $c)))))
             (call $ok_empty)",
        )
        .build();
    let rt = runtime();
    for max in [10u32, 1000] {
        let contract = load(&rt, &component, &limits(|l| l.max_call_depth = max));
        let levels = |levels: u32| {
            let n = levels - 1;
            execute(&rt, &contract, &EmptyView, "rec", &n.to_le_bytes()).result
        };
        assert_eq!(levels(1), Ok(vec![]));
        assert_eq!(levels(max - 1), Ok(vec![]), "max {max}");
        assert_eq!(levels(max), Ok(vec![]), "max {max}: exactly the limit");
        assert_eq!(levels(max + 1), Err(CallFailure::CallDepth), "max {max}");
        assert_eq!(levels(max + 2), Err(CallFailure::CallDepth), "max {max}");
        // The same on a second run: nothing is left over from the trapped call.
        assert_eq!(levels(max), Ok(vec![]), "max {max}");
    }
}

#[test]
fn worst_case_frames_never_exhaust_the_native_stack() {
    // Frames as large as validation allows, with every value live across the recursive call
    // (loads: cranelift cannot recompute them after the call), at the hard-cap depth, must
    // still end in the deterministic depth failure (the instrumentation's stack guard).
    let hard = limits(|l| l.max_call_depth = HARD_CAPS.max_call_depth);
    // validate::MAX_LOCALS (declared locals per function), all v128.
    let locals = 2_048;
    let mut f = String::from("(func $locals (param $n i32) (result v128)\n");
    f.push_str(&format!("(local {})\n", "v128 ".repeat(locals)));
    for i in 1..=locals {
        f.push_str(&format!(
            "(local.set {i} (v128.load offset={} (i32.const 0)))\n",
            16 * (i % 4000)
        ));
    }
    f.push_str("(call $locals (i32.add (local.get $n) (i32.const 1)))\n");
    for i in 1..=locals {
        f.push_str(&format!("(v128.xor (local.get {i})) "));
    }
    f.push_str(")\n");
    // The operand stack instead of locals: 4 000 values (the body size limit allows 100 times
    // more).
    let values = 4_000;
    let mut g = String::from("(func $stack (param $n i32) (result v128)\n");
    for i in 0..values {
        g.push_str(&format!(
            "(v128.load offset={} (i32.const 0))\n",
            16 * (i % 4000)
        ));
    }
    g.push_str("(call $stack (i32.add (local.get $n) (i32.const 1)))\n");
    for _ in 0..values {
        g.push_str("v128.xor ");
    }
    g.push_str(")\n");
    let component = WatContract::new()
        .extra(&f)
        .extra(&g)
        .body(
            "execute",
            &dispatch(&[
                (
                    'l',
                    "(drop (call $locals (i32.const 1))) (return (call $ok_empty))".into(),
                ),
                (
                    's',
                    "(drop (call $stack (i32.const 1))) (return (call $ok_empty))".into(),
                ),
            ]),
        )
        .build();
    // A second engine, served from the first one's disk cache (the compilation is slow).
    let cache = tempdir();
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    let rt = Runtime::new(config.clone()).unwrap();
    let contract = load(&rt, &component, &hard);
    let other = Runtime::new(config).unwrap();
    let (other_contract, source) = other.load_traced(&component, &hard).unwrap();
    assert_eq!(source, LoadSource::Disk);
    for name in ["locals", "stack"] {
        let run = |rt: &Runtime, contract: &Contract| {
            rt.execute(
                contract,
                &CallRequest {
                    view: &EmptyView,
                    context: context(),
                    reserved: Arc::new(ReservedKeys::none()),
                },
                &tx(name, b""),
            )
        };
        let outcome = run(&rt, &contract);
        match &outcome {
            Ok(o) => assert_eq!(o.result, Err(CallFailure::CallDepth), "{name}"),
            Err(e) => panic!("{name}: node error {e:?}"),
        }
        // At the same point everywhere: the same fuel in another engine.
        assert_eq!(
            run(&other, &other_contract).unwrap().fuel_used,
            outcome.unwrap().fuel_used,
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Validation
// ---------------------------------------------------------------------------------------------

/// A WIT directory: `world.wit` and the contract package under `deps/`, plus `deps` files.
fn wit_dir(world: &str, deps: &[(&str, &str)]) -> TempDir {
    let dir = tempdir();
    std::fs::write(dir.path().join("world.wit"), world).unwrap();
    std::fs::create_dir(dir.path().join("deps")).unwrap();
    std::fs::copy(
        Path::new(WORLD_WIT_DIR).join("contract.wit"),
        dir.path().join("deps/contract.wit"),
    )
    .unwrap();
    for (name, text) in deps {
        std::fs::write(dir.path().join("deps").join(name), text).unwrap();
    }
    dir
}

/// The template's WAT with `imports` added after its own.
fn wat_with_imports(imports: &str) -> String {
    let wat = WatContract::new().wat();
    let at = wat.find("  (memory").expect("template memory");
    format!("{}{imports}\n{}", &wat[..at], &wat[at..])
}

#[test]
fn forbidden_imports_are_refused_by_name() {
    let lim = Limits::default();
    // WASI.
    let dir = wit_dir(
        "package test:evil;
         world evil {
             include trac:contract/contract@0.1.0;
             import wasi:cli/environment@0.2.0;
         }",
        &[(
            "wasi-cli.wit",
            "package wasi:cli@0.2.0;
             interface environment {
                 get-arguments: func() -> list<string>;
             }",
        )],
    );
    let module = wat::parse_str(wat_with_imports(
        r#"(import "wasi:cli/environment@0.2.0" "get-arguments" (func $args (param i32)))"#,
    ))
    .unwrap();
    let wasi = componentize(module, dir.path().to_str().unwrap(), "evil");
    assert_eq!(
        validate_component(&wasi, &lim).unwrap_err(),
        ValidationError::ForbiddenImport("wasi:cli/environment@0.2.0".into())
    );
    let err = runtime().load(&wasi, &lim).unwrap_err();
    assert!(
        err.to_string().contains("wasi:cli/environment@0.2.0"),
        "{err}"
    );

    // An interface of another package.
    let dir = wit_dir(
        "package test:evil;
         interface net { connect: func(); }
         world evil {
             include trac:contract/contract@0.1.0;
             import net;
         }",
        &[],
    );
    let module = wat::parse_str(wat_with_imports(
        r#"(import "test:evil/net" "connect" (func $c))"#,
    ))
    .unwrap();
    let net = componentize(module, dir.path().to_str().unwrap(), "evil");
    assert_eq!(
        validate_component(&net, &lim).unwrap_err(),
        ValidationError::ForbiddenImport("test:evil/net".into())
    );

    // A bare function.
    let dir = wit_dir(
        "package test:evil;
         world evil {
             include trac:contract/contract@0.1.0;
             import launch: func();
         }",
        &[],
    );
    let module = wat::parse_str(wat_with_imports(
        r#"(import "$root" "launch" (func $launch))"#,
    ))
    .unwrap();
    let bare = componentize(module, dir.path().to_str().unwrap(), "evil");
    assert_eq!(
        validate_component(&bare, &lim).unwrap_err(),
        ValidationError::ForbiddenImport("launch".into())
    );
}

#[test]
fn malformed_contracts_are_refused_with_a_clear_error() {
    let lim = Limits::default();
    let rt = runtime();

    // A plain core module.
    let core = WatContract::new().core_module();
    assert_eq!(
        validate_component(&core, &lim).unwrap_err(),
        ValidationError::CoreModule
    );
    assert!(matches!(
        rt.load(&core, &lim),
        Err(RuntimeError::Validation(ValidationError::CoreModule))
    ));

    // A component of a world with only `describe`.
    let dir = wit_dir(
        "package test:partial;
         world partial {
             use trac:contract/types@0.1.0.{contract-info};
             export describe: func() -> contract-info;
         }",
        &[],
    );
    let module = wat::parse_str(
        r#"(module
             (memory (export "memory") 1)
             (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096))
             (func (export "describe") (result i32) (i32.const 512)))"#,
    )
    .unwrap();
    let partial = componentize(module, dir.path().to_str().unwrap(), "partial");
    assert_eq!(
        validate_component(&partial, &lim).unwrap_err(),
        ValidationError::MissingExport("map-command".into())
    );

    // Every trapping float-to-int conversion (reserved for the depth guard).
    for (instruction, ty) in [
        ("i32.trunc_f32_s", "f32"),
        ("i32.trunc_f32_u", "f32"),
        ("i32.trunc_f64_s", "f64"),
        ("i32.trunc_f64_u", "f64"),
        ("i64.trunc_f32_s", "f32"),
        ("i64.trunc_f32_u", "f32"),
        ("i64.trunc_f64_s", "f64"),
        ("i64.trunc_f64_u", "f64"),
    ] {
        let result = if instruction.starts_with("i32") {
            "i32"
        } else {
            "i64"
        };
        let component = WatContract::new()
            .extra(&format!(
                "(func $conv (param {ty}) (result {result}) ({instruction} (local.get 0)))"
            ))
            .build();
        match validate_component(&component, &lim) {
            Err(ValidationError::ForbiddenInstruction {
                instruction: found, ..
            }) => assert_eq!(found, instruction),
            other => panic!("{instruction}: {other:?}"),
        }
    }
    // Their saturating forms are fine.
    let component = WatContract::new()
        .extra("(func $conv (param f32) (result i32) (i32.trunc_sat_f32_s (local.get 0)))")
        .build();
    assert!(validate_component(&component, &lim).is_ok());

    // Tail calls are outside the contract feature set (they would escape the depth guard).
    let component = WatContract::new()
        .extra("(func $t (result i32) (return_call $t))")
        .build();
    assert!(
        matches!(
            validate_component(&component, &lim),
            Err(ValidationError::Invalid(_))
        ),
        "{:?}",
        validate_component(&component, &lim)
    );

    // Too large.
    let component = WatContract::new().build();
    let small = limits(|l| l.max_component_bytes = 1_000);
    assert!(matches!(
        validate_component(&component, &small),
        Err(ValidationError::TooLarge { max: 1_000, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// 7. NaN canonicalisation
// ---------------------------------------------------------------------------------------------

#[test]
fn nans_are_canonical() {
    // Operands come from the arguments, so nothing is folded at compile time:
    // 0: f32 0.0, 4: f32 NaN with a payload (signalling), 8: f64 -1.0,
    // 16: f64 negative NaN with a payload, 24: f32 -1.0.
    let mut args = Vec::new();
    args.extend_from_slice(&0f32.to_le_bytes());
    args.extend_from_slice(&0x7fa0_0001u32.to_le_bytes());
    args.extend_from_slice(&(-1f64).to_le_bytes());
    args.extend_from_slice(&0xfff0_0000_0000_0001u64.to_le_bytes());
    args.extend_from_slice(&(-1f32).to_le_bytes());
    let mut d = Data::new();
    let key = d.add(b"nan");
    let body = format!(
        "(f32.store (i32.const 2000) (f32.div (f32.load (local.get $c)) (f32.load (local.get $c))))
         (f32.store (i32.const 2004) (f32.add (f32.load offset=4 (local.get $c)) (f32.const 1)))
         (f32.store (i32.const 2008) (f32.sqrt (f32.load offset=24 (local.get $c))))
         (f32.store (i32.const 2012) (f32.demote_f64 (f64.load offset=16 (local.get $c))))
         (f64.store (i32.const 2016) (f64.sqrt (f64.load offset=8 (local.get $c))))
         (f64.store (i32.const 2024) (f64.mul (f64.load offset=16 (local.get $c)) (f64.const 1)))
         (f64.store (i32.const 2032) (f64.promote_f32 (f32.load offset=4 (local.get $c))))
         (f64.store (i32.const 2040) (f64.div (f64.load offset=8 (local.get $c)) (f64.const 0)))
         (v128.store (i32.const 2048)
           (f32x4.div (f32x4.splat (f32.load (local.get $c))) (f32x4.splat (f32.load (local.get $c)))))
         (v128.store (i32.const 2064) (f64x2.sqrt (f64x2.splat (f64.load offset=8 (local.get $c)))))
         {}
         (call $ok_empty)",
        put(key, B(2000, 80), R(0))
    );
    let component = d
        .into_contract(WatContract::new().body("execute", &body))
        .build();
    let rt = runtime();
    let contract = load(&rt, &component, &Limits::default());
    let outcome = execute(&rt, &contract, &EmptyView, "nan", &args);
    assert_eq!(outcome.result, Ok(vec![]));
    let value = outcome.writes[0].value.clone().unwrap();
    let f32_at = |i: usize| u32::from_le_bytes(value[i..i + 4].try_into().unwrap());
    let f64_at = |i: usize| u64::from_le_bytes(value[i..i + 8].try_into().unwrap());
    for at in [0, 4, 8, 12] {
        assert_eq!(f32_at(at), 0x7fc0_0000, "f32 at {at}: {:#x}", f32_at(at));
    }
    for at in [16, 24, 32] {
        assert_eq!(
            f64_at(at),
            0x7ff8_0000_0000_0000,
            "f64 at {at}: {:#x}",
            f64_at(at)
        );
    }
    // Results that are not NaN pass unchanged (-1 / 0).
    assert_eq!(f64::from_bits(f64_at(40)), f64::NEG_INFINITY);
    for lane in 0..4 {
        assert_eq!(f32_at(48 + 4 * lane), 0x7fc0_0000, "f32x4 lane {lane}");
    }
    for lane in 0..2 {
        assert_eq!(
            f64_at(64 + 8 * lane),
            0x7ff8_0000_0000_0000,
            "f64x2 lane {lane}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8. State access errors
// ---------------------------------------------------------------------------------------------

#[test]
fn state_errors_are_deterministic_results() {
    let lim = limits(|l| {
        l.max_key_len = 8;
        l.max_value_len = 16;
        l.max_writes_per_call = 3;
        l.max_write_bytes_per_call = 40;
    });
    let reserved = || ReservedKeys::new([b"root".to_vec()], [b"sys/".to_vec()]);
    let mut d = Data::new();
    let empty = d.add(b"");
    let key9 = d.add(b"kkkkkkkkk");
    let key8 = d.add(b"kkkkkkkk");
    let k1 = d.add(b"k1");
    let sys_a = d.add(b"sys/a");
    let sys_x = d.add(b"sys/x");
    let root = d.add(b"root");
    let one = d.add(b"1");
    let val16 = d.add(&[b'v'; 16]);
    let val17 = d.add(&[b'v'; 17]);
    let [a, b, c, dd, x, y, z, w] =
        [b"a", b"b", b"c", b"d", b"x", b"y", b"z", b"w"].map(|k| d.add(k));
    let errors = [
        put(empty, one, R(0)),
        put(key9, one, R(1)),
        put(k1, val17, R(2)),
        put(sys_a, one, R(3)),
        put(root, one, R(4)),
        get(empty, R(5)),
        del(key9, R(6)),
        del(sys_x, R(7)),
        get(key9, R(8)),
        get(sys_a, R(9)),
        put(k1, val16, R(10)),
        put(key8, one, R(11)),
        del(empty, R(12)),
        "(return (call $snapshot))".into(),
    ]
    .concat();
    let count_limit = [
        put(a, one, R(0)),
        put(b, one, R(1)),
        put(c, one, R(2)),
        put(dd, one, R(3)),
        put(a, one, R(4)),
        del(dd, R(5)),
        del(b, R(6)),
        "(return (call $snapshot))".into(),
    ]
    .concat();
    let byte_limit = [
        put(x, val16, R(0)),
        put(y, val16, R(1)),
        put(z, val16, R(2)),
        put(w, one, R(3)),
        "(return (call $snapshot))".into(),
    ]
    .concat();
    let query = [
        put(k1, one, R(0)),
        del(k1, R(1)),
        put(empty, one, R(2)),
        get(sys_a, R(3)),
        emit(k1, one, R(4)),
        "(call $snapshot)".into(),
    ]
    .concat();
    let describe = [
        put(k1, one, R(0)),
        get(k1, R(1)),
        scan(k1, None, 10, R(2)),
        del(k1, R(3)),
        emit(k1, one, R(4)),
        // Keep only the discriminant of emit's result (its message pointer could be any byte).
        "(i64.store (i32.const 668) (i64.const 0))
         (drop (call $describe_default))
         (i32.store (i32.const 512) (i32.const 600)) (i32.store (i32.const 516) (i32.const 80))
         (i32.const 512)"
            .into(),
    ]
    .concat();
    let init = format!(
        "(call $put (i32.const {}) (i32.const {}) (local.get $ap) (local.get $al) (i32.const 600))
         (if (i32.load8_u (i32.const 600)) (then (return (call $failed (i32.const {}) (i32.const {})))))
         (call $ok_empty)",
        k1.0, k1.1, root.0, root.1
    );
    let component = d
        .into_contract(
            WatContract::new()
                .body(
                    "execute",
                    &dispatch(&[('e', errors), ('c', count_limit), ('b', byte_limit)]),
                )
                .body("query", &query)
                .body("describe", &describe)
                .body("init", &init),
        )
        .build();
    let rt = runtime();
    let contract = load(&rt, &component, &lim);
    let (_dir, store) = store_with(&[(b"sys/a", b"system"), (b"b", b"base")]);
    let view = store.read().unwrap();

    let outcome = execute_reserved(&rt, &contract, &view, reserved(), "errors", b"");
    let m = mem(&outcome);
    assert_eq!(m.unit(R(0)), Err(StateErr::KeySize(8)), "empty key");
    assert_eq!(m.unit(R(1)), Err(StateErr::KeySize(8)), "key of 9");
    assert_eq!(m.unit(R(2)), Err(StateErr::ValueSize(16)), "value of 17");
    assert_eq!(m.unit(R(3)), Err(StateErr::ReservedKey), "reserved prefix");
    assert_eq!(m.unit(R(4)), Err(StateErr::ReservedKey), "reserved key");
    assert_eq!(m.get(R(5)), Err(StateErr::KeySize(8)), "get empty key");
    assert_eq!(m.unit(R(6)), Err(StateErr::KeySize(8)), "delete key of 9");
    assert_eq!(m.unit(R(7)), Err(StateErr::ReservedKey), "delete reserved");
    assert_eq!(m.get(R(8)), Err(StateErr::KeySize(8)), "get key of 9");
    assert_eq!(
        m.get(R(9)),
        Ok(Some(b"system".to_vec())),
        "reserved keys are readable"
    );
    assert_eq!(m.unit(R(10)), Ok(()), "value of exactly the limit");
    assert_eq!(m.unit(R(11)), Ok(()), "key of exactly the limit");
    assert_eq!(m.unit(R(12)), Err(StateErr::KeySize(8)), "delete empty key");
    assert_eq!(
        outcome.writes,
        vec![
            write(b"k1", Some(&[b'v'; 16])),
            write(b"kkkkkkkk", Some(b"1"))
        ]
    );

    let outcome = execute_reserved(&rt, &contract, &view, reserved(), "count", b"");
    let m = mem(&outcome);
    let results: Vec<_> = (0..7).map(|i| m.unit(R(i))).collect();
    use StateErr::WriteLimit;
    assert_eq!(
        results,
        [
            Ok(()),
            Ok(()),
            Ok(()),
            Err(WriteLimit),
            Ok(()),
            Err(WriteLimit),
            Ok(())
        ],
        "three distinct keys; rewriting one of them is fine"
    );
    assert_eq!(
        outcome.writes,
        vec![
            write(b"a", Some(b"1")),
            write(b"b", None),
            write(b"c", Some(b"1"))
        ]
    );

    let outcome = execute_reserved(&rt, &contract, &view, reserved(), "bytes", b"");
    let m = mem(&outcome);
    let results: Vec<_> = (0..4).map(|i| m.unit(R(i))).collect();
    assert_eq!(results, [Ok(()), Ok(()), Err(WriteLimit), Ok(())]);
    assert_eq!(outcome.writes.len(), 3);

    let outcome = rt.query(&contract, &view, "q", b"").unwrap();
    let m = mem(&outcome);
    assert_eq!(m.unit(R(0)), Err(StateErr::ReadOnly));
    assert_eq!(m.unit(R(1)), Err(StateErr::ReadOnly));
    assert_eq!(m.unit(R(2)), Err(StateErr::ReadOnly));
    assert_eq!(m.get(R(3)), Ok(Some(b"system".to_vec())));
    assert_eq!(
        m.string_result(R(4)),
        Err("events can only be emitted by execute, init and migrate".into())
    );
    assert!(outcome.writes.is_empty() && outcome.events.is_empty());

    let outcome = rt.describe(&contract).unwrap();
    let name = outcome.result.unwrap().name.into_bytes();
    let m = Mem([vec![0; 600], name].concat());
    assert_eq!(m.unit(R(0)), Err(StateErr::NoAccess), "put");
    assert_eq!(m.get(R(1)), Err(StateErr::NoAccess), "get");
    assert_eq!(m.scan(R(2)), Err(StateErr::NoAccess), "scan");
    assert_eq!(m.unit(R(3)), Err(StateErr::NoAccess), "delete");
    assert_eq!(m.u8(R(4)), 1, "emit refused");

    // init writes like execute and honours the reserved keys.
    let request = CallRequest {
        view: &view,
        context: CallContext {
            op_kind: OpKind::Init,
            ..context()
        },
        reserved: Arc::new(reserved()),
    };
    let outcome = rt.init(&contract, &request, b"init!").unwrap();
    assert_eq!(outcome.result, Ok(()));
    assert_eq!(outcome.writes, vec![write(b"k1", Some(b"init!"))]);
    let outcome = rt.init(&contract, &request, &[b'v'; 17]).unwrap();
    assert_eq!(outcome.result, Err(CallFailure::Contract("root".into())));
    assert!(outcome.writes.is_empty());
}

#[test]
fn scan_bounds_longer_than_any_key_work() {
    // Scan bounds are not keys: any length is a valid bound, even beyond what the store can
    // hold, and must never become a node error.
    let mut d = Data::new();
    let long = d.add(&[b'z'; 600]);
    let a = d.add(b"a");
    let body = [
        scan(long, None, 10, R(0)),
        scan(a, Some(long), 10, R(1)),
        "(call $snapshot)".into(),
    ]
    .concat();
    let component = d
        .into_contract(WatContract::new().body("query", &body))
        .build();
    let rt = runtime();
    let contract = load(&rt, &component, &Limits::default());
    let (_dir, store) = store_with(&[(b"a", b"1"), (b"zz", b"2")]);
    let view = store.read().unwrap();
    let outcome = match rt.query(&contract, &view, "q", b"") {
        Ok(outcome) => outcome,
        Err(e) => panic!("a contract's scan caused a node error: {e}"),
    };
    let m = mem(&outcome);
    assert_eq!(m.scan(R(0)), Ok(vec![]));
    assert_eq!(m.scan(R(1)), Ok(vec![kv(b"a", b"1"), kv(b"zz", b"2")]));
}

#[test]
fn command_entry_points_have_their_access() {
    let mut d = Data::new();
    let k = d.add(b"k");
    let f = d.add(b"f");
    let ro = d.add(b"read-only");
    // run-command: ok("read-only") iff `put` answered read-only.
    let run_command = format!(
        "{}
         (i32.store8 (i32.const 512) (i32.eqz (i32.and
           (i32.eq (i32.load8_u (i32.const 600)) (i32.const 1))
           (i32.eq (i32.load8_u (i32.const 604)) (i32.const 3)))))
         (i32.store (i32.const 516) (i32.const {})) (i32.store (i32.const 520) (i32.const {}))
         (i32.const 512)",
        put(k, k, R(0)),
        ro.0,
        ro.1
    );
    // map-command: some({function: "f", args: []}) iff `get` answered no-access.
    let map_command = format!(
        "{}
         (i32.store8 (i32.const 512) (i32.eqz (i32.and
           (i32.eq (i32.load8_u (i32.const 600)) (i32.const 1))
           (i32.eq (i32.load8_u (i32.const 604)) (i32.const 4)))))
         (i32.store8 (i32.const 516) (i32.const 1))
         (i32.store (i32.const 520) (i32.const {})) (i32.store (i32.const 524) (i32.const {}))
         (i32.store (i32.const 528) (i32.const 0)) (i32.store (i32.const 532) (i32.const 0))
         (i32.const 512)",
        get(k, R(0)),
        f.0,
        f.1
    );
    let component = d
        .into_contract(
            WatContract::new()
                .body("run-command", &run_command)
                .body("map-command", &map_command),
        )
        .build();
    let rt = runtime();
    let contract = load(&rt, &component, &Limits::default());
    let (_dir, store) = store_with(&[(b"k", b"v")]);
    let view = store.read().unwrap();
    let outcome = rt
        .run_command(&contract, &view, "/x", &["a".into()])
        .unwrap();
    assert_eq!(outcome.result, Ok("read-only".into()));
    assert!(outcome.writes.is_empty());
    let outcome = rt.map_command(&contract, "/x --y").unwrap();
    match outcome.result {
        Ok(Some(op)) => assert_eq!((op.function.as_str(), op.args.len()), ("f", 0)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(rt.commands(&contract).unwrap().result, Ok(c) if c.is_empty()));
}

// ---------------------------------------------------------------------------------------------
// 9. Host calls are metered
// ---------------------------------------------------------------------------------------------

#[test]
fn host_call_spam_is_metered() {
    let mut d = Data::new();
    let key = d.add(b"k");
    let loop_with = |call: &str| {
        format!(
            "(loop $l {call}
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
             (return (call $ok_empty))"
        )
    };
    let blake3_1k = "(call $blake3 (i32.const 1024) (i32.const 1024) (i32.const 600))";
    let get_k = get(key, R(0));
    let cases = [
        ('p', loop_with("")),
        ('h', loop_with(blake3_1k)),
        ('g', loop_with(&get_k)),
        (
            'H',
            format!("(loop $l {blake3_1k} (br $l)) (return (call $ok_empty))"),
        ),
        (
            'G',
            format!("(loop $l {get_k} (br $l)) (return (call $ok_empty))"),
        ),
    ];
    let body = format!("(local $i i32)\n{}", dispatch(&cases));
    let component = d
        .into_contract(WatContract::new().body("execute", &body))
        .build();
    let rt = runtime();
    let contract = load(&rt, &component, &Limits::default());
    let (_dir, store) = store_with(&[(b"k", b"0123456789")]);
    let view = store.read().unwrap();
    let run = |name: &str| {
        let outcome = execute(&rt, &contract, &view, name, b"");
        assert_eq!(outcome.result, Ok(vec![]), "{name}");
        outcome.fuel_used
    };
    let plain = run("p");
    let hashing = run("h");
    let getting = run("g");
    let hash_charge = PRICES_V1.host_call + 1024 * PRICES_V1.hash_byte;
    let get_charge = PRICES_V1.host_call + (1 + 10) * PRICES_V1.read_byte;
    assert!(
        hashing - plain >= 1000 * hash_charge,
        "{hashing} - {plain} < 1000 × {hash_charge}"
    );
    assert!(
        getting - plain >= 1000 * get_charge,
        "{getting} - {plain} < 1000 × {get_charge}"
    );
    // The host charge dominates: the wasm around each call is small.
    assert!(hashing - plain < 1000 * (hash_charge + 200));
    assert!(getting - plain < 1000 * (get_charge + 200));

    // With a small budget the spam runs out of fuel, at exactly the budget.
    let small = limits(|l| l.fuel_per_call = 1_000_000);
    let contract = load(&rt, &component, &small);
    for name in ["H", "G"] {
        let outcome = execute(&rt, &contract, &view, name, b"");
        assert_eq!(outcome.result, Err(CallFailure::OutOfFuel), "{name}");
        assert_eq!(outcome.fuel_used, small.fuel_per_call, "{name}");
    }
}

#[test]
fn each_load_runs_with_its_own_limits() {
    // Limits are consensus parameters that `setParams` changes: a contract loaded again with
    // new limits must run with them, even when the compiled artifact is cached.
    let rt = runtime();
    let component = WatContract::new()
        .body("execute", "(loop $l (br $l)) (call $ok_empty)")
        .build();
    for fuel in [1_000_000, 2_000_000, 1_000_000] {
        let (contract, _) = rt
            .load_traced(&component, &limits(|l| l.fuel_per_call = fuel))
            .unwrap();
        assert_eq!(contract.limits().fuel_per_call, fuel);
        let outcome = execute(&rt, &contract, &EmptyView, "spin", b"");
        assert_eq!(outcome.result, Err(CallFailure::OutOfFuel));
        assert_eq!(outcome.fuel_used, fuel);
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Per-call atomicity and the call's view of state
// ---------------------------------------------------------------------------------------------

#[test]
fn failed_calls_change_nothing_and_reads_see_own_writes() {
    let mut d = Data::new();
    let [a, b, c, k, dd, zk] = [b"a", b"b", b"c", b"k", b"d", b"z"].map(|x| d.add(x));
    let [a0, a1, a2, a3, a4, a5, a9] =
        [b"a0", b"a1", b"a2", b"a3", b"a4", b"a5", b"a9"].map(|x| d.add(x));
    let one = d.add(b"1");
    let new = d.add(b"new");
    let zz = d.add(b"zz");
    let topic = d.add(b"topic");
    let boom = d.add("boom: bad ✗".as_bytes());
    let nope = d.add(b"nope");
    let v3 = d.add(b"3x");
    let v5 = d.add(b"5");
    let v0 = d.add(b"0");
    let vc = d.add(b"c");
    let writes_then = |end: &str| {
        format!(
            "{}{}{}(call $debug (i32.const {}) (i32.const {})) {end}",
            put(a, one, R(0)),
            put(b, one, R(1)),
            emit(topic, one, R(2)),
            topic.0,
            topic.1
        )
    };
    let error_variant = |variant: u32, m: B| {
        format!(
            "(i32.store8 (i32.const 512) (i32.const 1)) (i32.store8 (i32.const 516) (i32.const {variant}))
             (i32.store (i32.const 520) (i32.const {})) (i32.store (i32.const 524) (i32.const {}))
             (return (i32.const 512))",
            m.0, m.1
        )
    };
    let reads = [
        put(k, new, R(0)),
        get(k, R(1)),
        del(dd, R(2)),
        get(dd, R(3)),
        get(zk, R(4)),
        del(zk, R(5)),
        put(zk, zz, R(6)),
        get(zk, R(7)),
        del(c, R(8)),
        "(return (call $snapshot))".into(),
    ]
    .concat();
    let scans = [
        put(a0, v0, R(0)),
        del(a2, R(1)),
        put(a3, v3, R(2)),
        put(a5, v5, R(3)),
        put(c, vc, R(4)),
        del(a9, R(5)),
        scan(a, Some(b), 10, R(6)),
        scan(a, Some(b), 2, R(7)),
        scan(a1, None, 100, R(8)),
        scan(a2, Some(a4), 10, R(9)),
        scan(d.add(b""), None, -1, R(10)),
        scan(a2, Some(b), 2, R(11)),
        scan(b, Some(b), 10, R(12)),
        scan(c, Some(dd), 10, R(13)),
        scan(a, None, 0, R(14)),
        "(return (call $snapshot))".into(),
    ]
    .concat();
    let cases = [
        ('t', writes_then("unreachable")),
        (
            'a',
            writes_then(&format!(
                "(call $abort (i32.const {}) (i32.const {})) unreachable",
                boom.0, boom.1
            )),
        ),
        (
            'f',
            writes_then(&format!(
                "(return (call $failed (i32.const {}) (i32.const {})))",
                nope.0, nope.1
            )),
        ),
        ('u', writes_then(&error_variant(0, nope))),
        ('i', writes_then(&error_variant(1, nope))),
        ('o', writes_then("(return (call $ok_empty))")),
        ('r', reads),
        ('s', scans),
    ];
    let component = d
        .into_contract(WatContract::new().body("execute", &dispatch(&cases)))
        .build();
    let rt = runtime();
    let lim = limits(|l| l.max_scan_limit = 5);
    let contract = load(&rt, &component, &lim);
    let base: [(&[u8], &[u8]); 8] = [
        (b"a1", b"1"),
        (b"a2", b"2"),
        (b"a3", b"3"),
        (b"a4", b"4"),
        (b"b1", b"b"),
        (b"c", b"base"),
        (b"d", b"gone"),
        (b"k", b"old"),
    ];
    let (_dir, store) = store_with(&base);
    let root = store.state_root().unwrap();
    let run = |name: &str| {
        let batch = store.write().unwrap();
        let outcome = execute(&rt, &contract, &batch, name, b"");
        drop(batch);
        outcome
    };

    type Check = fn(&Result<Vec<u8>, CallFailure>) -> bool;
    let failures: [(&str, Check); 5] = [
        (
            "trap",
            |r| matches!(r, Err(CallFailure::Trap(m)) if m.contains("unreachable")),
        ),
        ("abort", |r| {
            r == &Err(CallFailure::Aborted("boom: bad ✗".into()))
        }),
        ("fail", |r| r == &Err(CallFailure::Contract("nope".into()))),
        ("unknown", |r| {
            r == &Err(CallFailure::UnknownFunction("nope".into()))
        }),
        ("invalid", |r| {
            r == &Err(CallFailure::InvalidArgs("nope".into()))
        }),
    ];
    for (name, expected) in failures {
        let outcome = run(name);
        assert!(expected(&outcome.result), "{name}: {outcome:?}");
        assert!(outcome.writes.is_empty(), "{name}: {outcome:?}");
        assert!(outcome.events.is_empty(), "{name}: {outcome:?}");
        assert!(outcome.fuel_used > 0);
        assert_eq!(outcome.debug, vec!["topic".to_string()], "{name}");
        assert_eq!(apply(&store, &outcome.writes), root);
    }
    // The same writes without the failure go through.
    let outcome = run("ok");
    assert_eq!(
        outcome.writes,
        vec![write(b"a", Some(b"1")), write(b"b", Some(b"1"))]
    );
    assert_eq!(outcome.events.len(), 1);

    // Reads see the call's own writes.
    let outcome = run("reads");
    let m = mem(&outcome);
    assert_eq!(m.unit(R(0)), Ok(()));
    assert_eq!(m.get(R(1)), Ok(Some(b"new".to_vec())), "put then get");
    assert_eq!(m.get(R(3)), Ok(None), "delete then get");
    assert_eq!(m.get(R(4)), Ok(None), "never written");
    assert_eq!(m.get(R(7)), Ok(Some(b"zz".to_vec())), "delete then put");
    assert_eq!(
        outcome.writes,
        vec![
            write(b"c", None),
            write(b"d", None),
            write(b"k", Some(b"new")),
            write(b"z", Some(b"zz")),
        ]
    );
    let committed = apply(&store, &outcome.writes);
    assert_ne!(committed, root);
    let (_dir2, expected) = store_with(&[
        (b"a1", b"1"),
        (b"a2", b"2"),
        (b"a3", b"3"),
        (b"a4", b"4"),
        (b"b1", b"b"),
        (b"k", b"new"),
        (b"z", b"zz"),
    ]);
    assert_eq!(committed, expected.state_root().unwrap());
    assert_eq!(records(&store), records(&expected));

    // Scans merge the call's writes over the base state, in key order, within the limit.
    let outcome = run("scans");
    let m = mem(&outcome);
    let a3x = kv(b"a3", b"3x");
    assert_eq!(
        m.scan(R(6)).unwrap(),
        vec![
            kv(b"a0", b"0"),
            kv(b"a1", b"1"),
            a3x.clone(),
            kv(b"a4", b"4"),
            kv(b"a5", b"5")
        ],
        "[a, b) limit 10, capped at max_scan_limit 5"
    );
    assert_eq!(
        m.scan(R(7)).unwrap(),
        vec![kv(b"a0", b"0"), kv(b"a1", b"1")],
        "limit 2"
    );
    assert_eq!(
        m.scan(R(8)).unwrap(),
        vec![
            kv(b"a1", b"1"),
            a3x.clone(),
            kv(b"a4", b"4"),
            kv(b"a5", b"5"),
            kv(b"b1", b"b")
        ],
        "[a1, ∞) capped at 5"
    );
    assert_eq!(m.scan(R(9)).unwrap(), vec![a3x.clone()], "[a2, a4)");
    assert_eq!(
        m.scan(R(10)).unwrap(),
        vec![
            kv(b"a0", b"0"),
            kv(b"a1", b"1"),
            a3x.clone(),
            kv(b"a4", b"4"),
            kv(b"a5", b"5")
        ],
        "everything, limit u32::MAX capped at 5"
    );
    assert_eq!(
        m.scan(R(11)).unwrap(),
        vec![a3x, kv(b"a4", b"4")],
        "a deleted base record does not use up the limit"
    );
    assert_eq!(m.scan(R(12)).unwrap(), vec![], "empty range");
    assert_eq!(
        m.scan(R(13)).unwrap(),
        vec![kv(b"c", b"c")],
        "overlay value over base"
    );
    assert_eq!(m.scan(R(14)).unwrap(), vec![], "limit 0");
}

// ---------------------------------------------------------------------------------------------
// 11. Malformed bytes
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_bytes_are_errors_never_panics() {
    let rt = runtime();
    let lim = Limits::default();
    let valid = WatContract::new().build();
    // Loads `bytes`; panics if anything panics or the error is not a validation or compile
    // error. Returns whether it loaded (a flipped byte can leave a valid component).
    let check = |bytes: &[u8], what: &str| -> bool {
        let loaded = catch_unwind(AssertUnwindSafe(|| rt.load(bytes, &lim)))
            .unwrap_or_else(|_| panic!("{what}: load panicked"));
        match loaded {
            Err(RuntimeError::Validation(e)) => {
                assert!(!e.to_string().is_empty());
                false
            }
            Err(RuntimeError::Compile(e)) => {
                assert!(!e.is_empty());
                false
            }
            Err(e) => panic!("{what}: unexpected error {e:?}"),
            Ok(contract) => {
                // It loaded: calling it must not panic either.
                catch_unwind(AssertUnwindSafe(|| {
                    let _ = rt.describe(&contract);
                    let _ = rt.execute(
                        &contract,
                        &CallRequest {
                            view: &EmptyView,
                            context: context(),
                            reserved: Arc::new(ReservedKeys::none()),
                        },
                        &tx("f", b""),
                    );
                }))
                .unwrap_or_else(|_| panic!("{what}: calling it panicked"));
                true
            }
        }
    };

    assert!(!check(b"", "empty"));
    assert!(!check(b"\0asm", "magic only"));
    assert!(!check(b"\0asm\x0d\x00\x01\x00", "component header only"));
    assert!(!check(b"\0asm\x01\x00\x00\x00", "module header only"));
    for (seed, len) in [(0u8, 1), (1, 64), (2, 4096), (3, 100_000)] {
        assert!(!check(&pseudo_random_bytes(&[seed], len), "random"));
        // Random bytes behind a valid header.
        let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
        bytes.extend(pseudo_random_bytes(&[seed, 1], len));
        assert!(!check(&bytes, "header + random"));
    }
    let step = valid.len() / 97 + 1;
    for len in (0..valid.len()).step_by(step) {
        assert!(!check(&valid[..len], &format!("truncated to {len}")));
    }
    // Every byte flipped, validated (cheap); a stride of them also loaded and called.
    let mut rejected = 0;
    for at in 0..valid.len() {
        let mut bytes = valid.clone();
        bytes[at] ^= 0xff;
        let verdict = catch_unwind(|| validate_component(&bytes, &lim))
            .unwrap_or_else(|_| panic!("flip at {at}: validation panicked"));
        rejected += usize::from(verdict.is_err());
        if at % step == 0 {
            check(&bytes, &format!("flip at {at}"));
        }
    }
    assert!(
        rejected > valid.len() / 2,
        "{rejected} of {} flips rejected",
        valid.len()
    );
    // The runtime is fine afterwards.
    let contract = load(&rt, &valid, &lim);
    assert!(rt.describe(&contract).unwrap().result.is_ok());
}

// ---------------------------------------------------------------------------------------------
// 12. Events and context
// ---------------------------------------------------------------------------------------------

#[test]
fn events_are_limited_and_dropped_on_failure() {
    let lim = limits(|l| {
        l.max_events_per_call = 2;
        l.max_event_bytes_per_call = 64;
    });
    let mut d = Data::new();
    let [t1, t2, t3] = [b"t1", b"t2", b"t3"].map(|x| d.add(x));
    let d1 = d.add(b"d1");
    let empty = d.add(b"");
    let big = d.add(b"big");
    let ok = d.add(b"ok");
    let data70 = d.add(&[7; 70]);
    let cases = [
        (
            'e',
            [
                emit(t1, d1, R(0)),
                emit(t2, empty, R(1)),
                emit(t3, d1, R(2)),
                "(return (call $snapshot))".into(),
            ]
            .concat(),
        ),
        (
            'b',
            [
                emit(big, data70, R(0)),
                // 2 + 62 = 64 bytes: exactly the limit.
                emit(ok, B(data70.0, 62), R(1)),
                emit(ok, empty, R(2)),
                "(return (call $snapshot))".into(),
            ]
            .concat(),
        ),
        ('x', [emit(t1, d1, R(0)), "unreachable".into()].concat()),
    ];
    let component = d
        .into_contract(WatContract::new().body("execute", &dispatch(&cases)))
        .build();
    let rt = runtime();
    let contract = load(&rt, &component, &lim);

    let outcome = execute(&rt, &contract, &EmptyView, "events", b"");
    let m = mem(&outcome);
    assert_eq!(m.string_result(R(0)), Ok(()));
    assert_eq!(m.string_result(R(1)), Ok(()));
    assert_eq!(
        m.string_result(R(2)),
        Err("event limit of 2 per call reached".into())
    );
    assert_eq!(
        outcome.events,
        vec![
            Event {
                topic: "t1".into(),
                data: b"d1".to_vec()
            },
            Event {
                topic: "t2".into(),
                data: vec![]
            },
        ]
    );

    let outcome = execute(&rt, &contract, &EmptyView, "bytes", b"");
    let m = mem(&outcome);
    assert_eq!(
        m.string_result(R(0)),
        Err("event size limit of 64 bytes per call reached".into())
    );
    assert_eq!(m.string_result(R(1)), Ok(()));
    assert_eq!(
        m.string_result(R(2)),
        Err("event size limit of 64 bytes per call reached".into())
    );
    assert_eq!(
        outcome.events,
        vec![Event {
            topic: "ok".into(),
            data: vec![7; 62]
        }]
    );

    let outcome = execute(&rt, &contract, &EmptyView, "x", b"");
    assert!(matches!(outcome.result, Err(CallFailure::Trap(_))));
    assert!(outcome.events.is_empty());
}

#[test]
fn context_reaches_the_contract() {
    let component = WatContract::new()
        .extra(SNAPSHOT)
        .body(
            "execute",
            "(call $current (i32.const 800)) (call $snapshot)",
        )
        .body("query", "(call $current (i32.const 800)) (call $snapshot)")
        .build();
    let rt = runtime();
    let contract = load(&rt, &component, &Limits::default());
    let ctx = context();
    let outcome = execute(&rt, &contract, &EmptyView, "ctx", b"");
    let m = mem(&outcome);
    let r = 800;
    assert_eq!(m.u8(r), 0, "op-kind tx");
    assert_eq!(m.list(r + 4), ctx.tx_hash.0.to_vec());
    assert_eq!(m.list(r + 12), ctx.sender.0.to_vec());
    assert_eq!(m.u8(r + 20), 1, "validator present");
    assert_eq!(m.list(r + 24), vec![0x33; 32]);
    assert_eq!(m.u64(r + 32), ctx.log_position);
    assert_eq!(m.u64(r + 40), ctx.checkpoint_time);
    assert_eq!(m.list(r + 48), ctx.seed().0.to_vec());

    // Other op kinds and no validator.
    for (op_kind, index) in [
        (OpKind::Feature, 1),
        (OpKind::Message, 2),
        (OpKind::Init, 4),
        (OpKind::Migrate, 5),
    ] {
        let request = CallRequest {
            view: &EmptyView,
            context: CallContext {
                op_kind,
                validator: None,
                log_position: 9,
                ..context()
            },
            reserved: Arc::new(ReservedKeys::none()),
        };
        let outcome = rt.execute(&contract, &request, &tx("ctx", b"")).unwrap();
        let m = mem(&outcome);
        assert_eq!(m.u8(r), index);
        assert_eq!(m.u8(r + 20), 0, "no validator");
        assert_eq!(m.u64(r + 32), 9);
        assert_eq!(m.list(r + 48), request.context.seed().0.to_vec());
        assert_ne!(request.context.seed(), ctx.seed());
    }

    // A query runs with the read-only context.
    let outcome = rt.query(&contract, &EmptyView, "ctx", b"").unwrap();
    let m = mem(&outcome);
    let read_only = CallContext::read_only(OpKind::Query);
    assert_eq!(m.u8(r), 3, "op-kind query");
    assert_eq!(m.list(r + 4), vec![0; 32]);
    assert_eq!(m.list(r + 12), vec![0; 32]);
    assert_eq!(m.u8(r + 20), 0);
    assert_eq!(m.list(r + 48), read_only.seed().0.to_vec());
}

#[test]
fn every_invocation_kind_reaches_execute() {
    // Returns the first string of the invocation and writes its tag (and a message's number).
    let mut d = Data::new();
    let tag = d.add(b"tag");
    let number = d.add(b"number");
    let body = format!(
        "(i32.store8 (i32.const 2000) (local.get $tag))
         (i64.store (i32.const 2008) (local.get $e))
         {}
         (if (i32.eq (local.get $tag) (i32.const 2)) (then {}))
         (call $ok_bytes (local.get $a) (local.get $b))",
        put(tag, B(2000, 1), R(0)),
        put(number, B(2008, 8), R(1)),
    );
    let component = d
        .into_contract(WatContract::new().body("execute", &body))
        .build();
    let rt = runtime();
    let contract = load(&rt, &component, &Limits::default());
    let request = CallRequest {
        view: &EmptyView,
        context: context(),
        reserved: Arc::new(ReservedKeys::none()),
    };
    let cases = [
        (tx("transfer", b"\x80"), "transfer", 0u8),
        (
            Invocation::Feature(trac_host::runtime::FeatureCall {
                feature: "timer".into(),
                key: "currentTime".into(),
                value: vec![1, 2, 3],
            }),
            "timer",
            1,
        ),
        (
            Invocation::Message(trac_host::runtime::MessageCall {
                text: "hello".into(),
                author: vec![5; 32],
                number: 0x0102_0304_0506_0708,
            }),
            "hello",
            2,
        ),
    ];
    for (invocation, first, tag) in cases {
        let outcome = rt.execute(&contract, &request, &invocation).unwrap();
        assert_eq!(outcome.result, Ok(first.as_bytes().to_vec()));
        let mut expected = vec![write(b"tag", Some(&[tag]))];
        if tag == 2 {
            let number = 0x0102_0304_0506_0708u64.to_le_bytes();
            expected.insert(0, write(b"number", Some(&number)));
        }
        assert_eq!(outcome.writes, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// 13. The instrumentation itself
// ---------------------------------------------------------------------------------------------

#[test]
fn instrumented_components_validate() {
    for component in [WatContract::new().build(), determinism_contract()] {
        for depth in [1, 256, HARD_CAPS.max_call_depth] {
            let instrumented = instrument_component(&component, depth).unwrap();
            wasmparser::Validator::new_with_features(contract_features())
                .validate_all(&instrumented)
                .unwrap();
            // The guard's own trapping conversion is what contract code may not contain.
            assert!(matches!(
                validate_component(&instrumented, &Limits::default()),
                Err(ValidationError::ForbiddenInstruction { instruction, .. }) if instruction == "i32.trunc_f32_u"
            ));
        }
    }
    assert!(instrument_component(b"not wasm", 10).is_err());
}

#[test]
fn instrumented_modules_validate() {
    let modules = [
        // Multi-value results, `return`s, branches to the function label, an imported global
        // and function, no global section.
        r#"(module
             (import "env" "g" (global $g i64))
             (import "env" "f" (func $f (param i32) (result i32 i32)))
             (func $a (param i32) (result i32 i64 f32)
               (if (local.get 0) (then (return (i32.const 1) (i64.const 2) (f32.const 3))))
               (i32.const 4) (i64.const 5) (f32.const 6))
             (func $b (result i32 i64 f32) (call $a (i32.const 0)))
             (func $c (result i32 i32) (call $f (i32.wrap_i64 (global.get $g))))
             (func $d (result i32 i32) (return (call $c)))
             (func (export "run") (param i32) (result i32)
               (block (br_if 1 (i32.const 3) (local.get 0)) (drop))
               (br_table 0 0 (i32.const 4) (local.get 0))))"#,
        // Defined globals of other types: the counters must get fresh indices.
        r#"(module
             (global $x (mut f32) (f32.const 1))
             (global $y i64 (i64.const 2))
             (func (export "run") (result f32)
               (global.set $x (f32.add (global.get $x) (f32.convert_i64_s (global.get $y))))
               (global.get $x)))"#,
        // Nothing but a start function.
        r#"(module (func $s) (start $s))"#,
    ];
    for wat in modules {
        let module = wat::parse_str(wat).unwrap();
        wasmparser::Validator::new()
            .validate_all(&module)
            .unwrap_or_else(|e| panic!("{e}\n{wat}"));
        for depth in [1, 1024] {
            let instrumented = instrument_module(&module, depth).unwrap();
            wasmparser::Validator::new()
                .validate_all(&instrumented)
                .unwrap_or_else(|e| {
                    panic!(
                        "{e}\n{wat}\n{}",
                        wasmprinter::print_bytes(&instrumented).unwrap()
                    )
                });
            let text = wasmprinter::print_bytes(&instrumented).unwrap();
            assert!(text.contains("i32.trunc_f32_u"), "{text}");
            assert!(text.contains("(global (;"), "{text}");
        }
    }
}

#[test]
fn instrumented_code_behaves_like_the_original() {
    // Every way out of a function (end, `return`, `br`/`br_if`/`br_table` to the function
    // label) must undo its depth: 300 iterations of calls with a depth limit of 2 (the export
    // and one callee) only pass if none leaks.
    let component = WatContract::new()
        .extra(
            "(func $mv (param $x i32) (result i32 i64)
               (if (i32.eqz (local.get $x)) (then (return (i32.const 7) (i64.const 8))))
               (local.get $x) (i64.extend_i32_u (local.get $x)))
             (func $brf (param $x i32) (result i32)
               (block $b (drop (br_if 1 (i32.const 11) (local.get $x))))
               (i32.const 12))
             (func $tbl (param $x i32) (result i32)
               (block $a (result i32)
                 (block $b (result i32)
                   (br_table $b $a 2 (i32.const 30) (local.get $x)))
                 (i32.add (i32.const 100)))
               (i32.add (i32.const 1000)))
             (func $early (param $x i32) (result i32)
               (loop $l
                 (if (i32.gt_u (local.get $x) (i32.const 5)) (then (return (local.get $x))))
                 (local.set $x (i32.add (local.get $x) (i32.const 2)))
                 (br $l))
               (unreachable))
             (func $brend (param $x i32) (result i32)
               (br 0 (i32.mul (local.get $x) (i32.const 3))))",
        )
        .body(
            "execute",
            "(local $i i32) (local $acc i32) (local $t i64)
             (loop $l
               (call $mv (i32.rem_u (local.get $i) (i32.const 3)))
               (local.set $t)
               (local.set $acc (i32.add (local.get $acc)))
               (local.set $acc (i32.add (local.get $acc) (i32.wrap_i64 (local.get $t))))
               (local.set $acc (i32.add (local.get $acc) (call $brf (i32.rem_u (local.get $i) (i32.const 2)))))
               (local.set $acc (i32.add (local.get $acc) (call $tbl (i32.rem_u (local.get $i) (i32.const 4)))))
               (local.set $acc (i32.add (local.get $acc) (call $early (i32.rem_u (local.get $i) (i32.const 9)))))
               (local.set $acc (i32.add (local.get $acc) (call $brend (local.get $i))))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 300))))
             (i32.store (i32.const 2000) (local.get $acc))
             (if (i32.eq (local.get $b) (i32.const 5))
               (then (return (call $ok_bytes (i32.const 2000) (i32.const 4)))))
             (call $ok_bytes (i32.const 2000) (i32.const 4))",
        )
        .build();
    let mut expected = 0u32;
    for i in 0..300u32 {
        let (x, y) = if i % 3 == 0 { (7, 8) } else { (i % 3, i % 3) };
        expected = expected.wrapping_add(x + y);
        expected += if i % 2 != 0 { 11 } else { 12 };
        expected += match i % 4 {
            0 => 1130,
            1 => 1030,
            _ => 30,
        };
        let mut e = i % 9;
        while e <= 5 {
            e += 2;
        }
        expected += e;
        expected += 3 * i;
    }
    let rt = runtime();
    let contract = load(&rt, &component, &limits(|l| l.max_call_depth = 2));
    // "early" returns through `return` in the export, "plain" through its end.
    for name in ["early", "plain"] {
        let outcome = execute(&rt, &contract, &EmptyView, name, b"");
        assert_eq!(
            outcome.result,
            Ok(expected.to_le_bytes().to_vec()),
            "{name}"
        );
    }
    // One level less and the callees do not fit.
    let contract = load(&rt, &component, &limits(|l| l.max_call_depth = 1));
    let outcome = execute(&rt, &contract, &EmptyView, "plain", b"");
    assert_eq!(outcome.result, Err(CallFailure::CallDepth));
}

#[test]
fn contracts_of_another_runtime_are_refused() {
    let component = WatContract::new().build();
    let first = runtime();
    let contract = load(&first, &component, &Limits::default());
    let second = runtime();
    let result = catch_unwind(AssertUnwindSafe(|| second.describe(&contract)));
    match result {
        Ok(Err(RuntimeError::Engine(_))) => {}
        Ok(other) => panic!("expected an engine error, got {other:?}"),
        Err(_) => panic!("using a contract with another runtime panicked"),
    }
}
