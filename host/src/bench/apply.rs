//! The `apply` and `replay` suites: settled contract transactions through the whole subnet
//! engine on one node (the creator: sole writer, indexer and sequencer), on a real LMDB store.
//!
//! Every op is a `tx` op settled by a trusted MSB indexer (its attestation is batch-verified in
//! `SubnetMachine::prepare`), calling a contract function that writes one key; it is appended
//! to the node's log in entries, the node proposes checkpoints (applied and final at once with
//! one indexer), and the figure covers append + propose + finalisation. Ops are built and
//! signed before the clock starts. Each run then checks, from the confirmed state, that every
//! transaction was applied and succeeded (`txl` = N, no `txi/<n>` with an `err`).
//!
//! `replay` builds such a log once (not timed) and times `ledger::replay::replay` of it into
//! a fresh store, with and without checking every entry's signature.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

use super::Measurement;
use crate::bundled::INTERCOM;
use crate::crypto::{Domain, DomainKind, Hash32, Keypair, PublicKey, Signature, verify_hash};
use crate::ledger::replay::{ReplayOptions, replay};
use crate::ledger::{Ledger, LedgerLimits, StateMachine};
use crate::runtime::{
    CallContext, CallRequest, Invocation, Limits, OpKind, ReservedKeys, Runtime, RuntimeConfig,
    TxCall,
};
use crate::store::{StateView, Store, StoreOptions};
use crate::subnet::ops::deploy_ops;
use crate::subnet::{
    Action, Attestation, OpSigner, Settlement, SettlementScheme, SubnetGenesis, SubnetMachine,
    SubnetOp, TxOp, TxRecord, decode_op, encode_op,
};

/// The SDK probe contract (its `fill` writes `n` keys).
const PROBE: &[u8] = include_bytes!("../../../contracts/artifacts/probe.wasm");

/// The MSB network the bench subnet trusts.
const MSB_NETWORK: Hash32 = Hash32([0x4d; 32]);

/// Checkpoint time of the first proposal (milliseconds).
const START_TIME: u64 = 1_700_000_000_000;

/// A contract and the call every tx makes.
#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    component: &'static [u8],
    function: &'static str,
    /// MessagePack arguments.
    args: &'static [u8],
}

/// `probe.fill({"n": 1})`: writes the key `fill/0`.
const PROBE_FILL: Workload = Workload {
    name: "probe fill(n=1)",
    component: PROBE,
    function: "fill",
    // {"n": 1} as a MessagePack map with a named field.
    args: &[0x81, 0xa1, b'n', 0x01],
};

/// Intercom's `storeSomething(nil)`: writes one key.
const INTERCOM_STORE: Workload = Workload {
    name: "intercom storeSomething",
    component: INTERCOM,
    function: "storeSomething",
    args: &[0xc0],
};

/// How the ops are fed to the ledger.
#[derive(Clone, Copy)]
struct Shape {
    /// Ops per appended entry.
    ops_per_entry: u64,
    /// Entries per proposed checkpoint.
    entries_per_checkpoint: u64,
    /// fsync on every LMDB commit.
    sync: bool,
}

fn keypair(i: u8) -> Keypair {
    Keypair::from_seed(&[i; 32])
}

/// The creator: writer, admin, indexer and sequencer.
fn creator() -> Keypair {
    keypair(1)
}

/// The MSB indexer whose attestations the subnet trusts.
fn msb_indexer() -> Keypair {
    keypair(200)
}

fn genesis() -> SubnetGenesis {
    SubnetGenesis {
        creator: creator().public(),
        channel: "bench".into(),
        salt: [7; 16],
    }
}

/// One subnet node in a temp dir.
struct Node {
    ledger: Ledger<SubnetMachine>,
    time: u64,
    _dir: tempfile::TempDir,
}

impl Node {
    fn open(runtime: &Arc<Runtime>, sync: bool) -> anyhow::Result<Node> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(Store::open(
            dir.path(),
            StoreOptions {
                sync,
                ..StoreOptions::default()
            },
        )?);
        let genesis = genesis();
        let id = genesis.id();
        let ledger = Ledger::open(
            store,
            SubnetMachine::standard(genesis, runtime.clone()),
            id,
            Some(creator()),
            LedgerLimits::default(),
        )?;
        Ok(Node {
            ledger,
            time: START_TIME,
            _dir: dir,
        })
    }

    fn id(&self) -> Hash32 {
        self.ledger.network()
    }

    /// Proposes a checkpoint of what is appended and checks it is final.
    fn checkpoint(&mut self) -> anyhow::Result<()> {
        self.time += 1_000;
        self.ledger.propose(self.time)?;
        let status = self.ledger.status();
        anyhow::ensure!(
            status.final_height == status.latest_height,
            "checkpoint {} is not final (final height {})",
            status.latest_height,
            status.final_height
        );
        Ok(())
    }

    /// The first admin, the MSB trust and the deployment of `component`, applied.
    fn create(&mut self, component: &[u8]) -> anyhow::Result<()> {
        let admin = creator();
        let signer = OpSigner::new(admin.clone(), self.id());
        let expires = self.ledger.status().latest_height + 1_000;
        let mut ops = vec![encode_op(&SubnetOp::AddAdmin {
            key: admin.public(),
        })];
        ops.push(signer.sign(
            Action::SetMsbTrust {
                network: MSB_NETWORK,
                indexers: vec![msb_indexer().public()],
                scheme: SettlementScheme::Attested,
            },
            expires,
        ));
        ops.extend(deploy_ops(&signer, component, expires));
        self.ledger.append(ops)?;
        self.checkpoint()?;
        let active = self
            .ledger
            .read(true, |s| SubnetMachine::contract_record(s))??;
        anyhow::ensure!(
            active.is_some(),
            "the bench contract was not activated: {:?}",
            self.ledger
                .read(true, |s| s.get(b"contract/last-deploy").ok().flatten())?
                .map(|v| crate::codec::json::msgpack_to_json(&v))
        );
        Ok(())
    }

    /// A confirmed system value.
    fn value<T: serde::de::DeserializeOwned>(&mut self, key: &[u8]) -> anyhow::Result<Option<T>> {
        let bytes = self.ledger.read(true, |s| s.get(key))??;
        Ok(match bytes {
            Some(bytes) => Some(rmp_serde::from_slice(&bytes)?),
            None => None,
        })
    }

    /// Fails unless exactly `txs` transactions are indexed and every one succeeded.
    fn check_txs(&mut self, txs: u64) -> anyhow::Result<()> {
        let indexed = self.value::<u64>(b"txl")?.unwrap_or(0);
        anyhow::ensure!(
            indexed == txs,
            "{indexed} transactions indexed (txl), expected {txs}"
        );
        self.ledger.read(true, |s| check_records(s, txs))?
    }
}

/// Fails unless `txi/0..txs` all hold a successful transaction.
fn check_records(state: &dyn StateView, txs: u64) -> anyhow::Result<()> {
    for n in 0..txs {
        let key = format!("txi/{n}");
        let bytes = state
            .get(key.as_bytes())?
            .ok_or_else(|| anyhow::anyhow!("{key} is missing"))?;
        let record: TxRecord = rmp_serde::from_slice(&bytes)?;
        if let Some(err) = record.err {
            anyhow::bail!("transaction {n} ({}) failed: {err}", record.function);
        }
        anyhow::ensure!(record.result.is_some(), "transaction {n} has no result");
    }
    Ok(())
}

/// `txs` settled tx ops with distinct tx hashes, encoded.
fn tx_ops(subnet: &Hash32, workload: &Workload, txs: u64) -> Vec<Vec<u8>> {
    let indexer = msb_indexer();
    let requester: PublicKey = keypair(2).public();
    let validator = keypair(201).public();
    let content = TxOp::content_hash(subnet, workload.function, workload.args);
    (0..txs)
        .map(|i| {
            let mut tx_hash = [0u8; 32];
            tx_hash[..8].copy_from_slice(&i.to_be_bytes());
            tx_hash[8] = 0x7a;
            let settlement = Settlement {
                tx_hash: Hash32(tx_hash),
                requester,
                validator,
                subnet: *subnet,
                content,
            };
            encode_op(&SubnetOp::Tx(TxOp {
                function: workload.function.into(),
                args: ByteBuf::from(workload.args.to_vec()),
                settlement: ByteBuf::from(Attestation::sign(&indexer, &MSB_NETWORK, settlement)),
            }))
        })
        .collect()
}

/// What one timed run measured.
struct Run {
    elapsed: Duration,
    /// Time of each `propose` (apply + commit + finalise of one checkpoint).
    checkpoints: Vec<Duration>,
    /// Time from the first append of each checkpoint's ops to the checkpoint being final.
    cycles: Vec<Duration>,
    node: Node,
}

/// Creates a subnet with `workload`'s contract and times `ops` (settled txs built by
/// [`tx_ops`]; every node of the suite has the same subnet id) through it.
fn run_txs(
    runtime: &Arc<Runtime>,
    workload: &Workload,
    ops: &[Vec<u8>],
    shape: Shape,
) -> anyhow::Result<Run> {
    let mut node = Node::open(runtime, shape.sync)?;
    node.create(workload.component)?;
    let txs = ops.len() as u64;
    let base = node.ledger.status().position;
    let entries: Vec<Vec<Vec<u8>>> = ops
        .chunks(shape.ops_per_entry as usize)
        .map(<[Vec<u8>]>::to_vec)
        .collect();
    let mut checkpoints = Vec::new();
    let mut cycles = Vec::new();
    let start = Instant::now();
    let mut cycle = start;
    for (i, entry) in entries.into_iter().enumerate() {
        node.ledger.append(entry)?;
        let entries = i as u64 + 1;
        if entries.is_multiple_of(shape.entries_per_checkpoint)
            || entries * shape.ops_per_entry >= txs
        {
            let at = Instant::now();
            node.checkpoint()?;
            let now = Instant::now();
            checkpoints.push(now - at);
            cycles.push(now - cycle);
            cycle = now;
        }
    }
    let elapsed = start.elapsed();
    let position = node.ledger.status().position;
    anyhow::ensure!(
        position == base + txs,
        "only {} of {txs} ops final",
        position - base
    );
    node.check_txs(txs)?;
    Ok(Run {
        elapsed,
        checkpoints,
        cycles,
        node,
    })
}

fn micros(name: String, value: f64, samples: u64) -> Measurement {
    Measurement {
        name,
        value,
        unit: "µs",
        samples,
        target: None,
    }
}

fn label(workload: &Workload, shape: &Shape) -> String {
    format!(
        "{}, {} op{}/entry, {} entr{}/checkpoint, {}",
        workload.name,
        shape.ops_per_entry,
        if shape.ops_per_entry == 1 { "" } else { "s" },
        shape.entries_per_checkpoint,
        if shape.entries_per_checkpoint == 1 {
            "y"
        } else {
            "ies"
        },
        if shape.sync { "fsync" } else { "no fsync" }
    )
}

/// Throughput (and, with `details`, per-op cost and checkpoint latencies) of one shape.
fn apply_case(
    runtime: &Arc<Runtime>,
    workload: &Workload,
    ops: &[Vec<u8>],
    shape: Shape,
    target: Option<&str>,
    details: bool,
) -> anyhow::Result<Vec<Measurement>> {
    let txs = ops.len() as u64;
    let mut run = run_txs(runtime, workload, ops, shape)?;
    let mut throughput = Measurement::throughput(label(workload, &shape), txs, run.elapsed);
    if let Some(target) = target {
        throughput = throughput.target(target);
    }
    let mut out = vec![throughput];
    if details {
        let ops_per_checkpoint = shape.ops_per_entry * shape.entries_per_checkpoint;
        out.push(micros(
            "  per op (append + apply + commit + finalise)".into(),
            run.elapsed.as_secs_f64() * 1e6 / txs as f64,
            txs,
        ));
        let what = if shape.entries_per_checkpoint == 1 && shape.ops_per_entry == 1 {
            "op".to_string()
        } else {
            format!("checkpoint of {ops_per_checkpoint} ops")
        };
        let mut series = vec![("propose → final", &mut run.checkpoints)];
        if shape.ops_per_entry == 1 {
            // One op at a time: its whole latency, as the JavaScript baseline reports it.
            series.push(("append → final", &mut run.cycles));
        }
        for (label, samples) in series {
            // p99 of fewer than 100 samples is their maximum: say so.
            let high = if samples.len() >= 100 { "p99" } else { "max" };
            for (q, quantile) in [(0.5, "p50"), (0.99, high)] {
                let mut m = Measurement::latency_micros(
                    format!("  {label}, {what}, {quantile}"),
                    samples,
                    q,
                );
                m.value /= 1000.0;
                m.unit = "ms";
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// Where the time of one tx op goes, each part timed alone over `ops` in checkpoint-sized
/// chunks: decoding, the batch verification of the settlements (`SubnetMachine::prepare`),
/// and the contract call on an LMDB write batch.
fn breakdown(
    runtime: &Arc<Runtime>,
    workload: &Workload,
    ops: &[Vec<u8>],
    chunk: usize,
) -> anyhow::Result<Vec<Measurement>> {
    let txs = ops.len() as u64;
    let per_op = |elapsed: Duration| elapsed.as_secs_f64() * 1e6 / txs as f64;
    let mut out = Vec::new();

    let start = Instant::now();
    for op in ops {
        let decoded = decode_op(op).map_err(|e| anyhow::anyhow!("bench op: {e}"))?;
        std::hint::black_box(decoded);
    }
    out.push(micros(
        "breakdown: decode a tx op".into(),
        per_op(start.elapsed()),
        txs,
    ));

    let machine = SubnetMachine::standard(genesis(), runtime.clone());
    let start = Instant::now();
    for chunk in ops.chunks(chunk) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        machine.prepare(&refs);
    }
    out.push(micros(
        format!("breakdown: prepare (decode + batch-verify {chunk} settlements)"),
        per_op(start.elapsed()),
        txs,
    ));

    let proofs: Vec<(PublicKey, Hash32, Signature)> = ops
        .iter()
        .filter_map(|op| match decode_op(op) {
            Ok(SubnetOp::Tx(tx)) => crate::codec::decode::<Attestation>(&tx.settlement).ok(),
            _ => None,
        })
        .map(|a| {
            let hash = Domain::new(DomainKind::MsbOp, a.network)
                .hash(&crate::codec::encode(&("settled", &a.settlement)));
            (a.attester, hash, a.signature)
        })
        .collect();
    anyhow::ensure!(proofs.len() == ops.len(), "bench ops without a settlement");
    let start = Instant::now();
    for (key, hash, signature) in &proofs {
        anyhow::ensure!(
            verify_hash(key, hash, signature).is_ok(),
            "bench settlement does not verify"
        );
    }
    out.push(micros(
        "breakdown: verify one settlement singly (contrast)".into(),
        per_op(start.elapsed()),
        txs,
    ));

    let contract = runtime.load(workload.component, &Limits::default())?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path(),
        StoreOptions {
            sync: false,
            ..StoreOptions::default()
        },
    )?;
    let reserved = Arc::new(ReservedKeys::none());
    let invocation = Invocation::Tx(TxCall {
        function: workload.function.into(),
        args: workload.args.to_vec(),
    });
    let start = Instant::now();
    for chunk in ops.chunks(chunk) {
        let mut batch = store.write()?;
        for _ in chunk {
            let request = CallRequest {
                view: &batch,
                context: CallContext::read_only(OpKind::Tx),
                reserved: reserved.clone(),
            };
            let outcome = runtime.execute(&contract, &request, &invocation)?;
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
        }
        batch.commit()?;
    }
    out.push(micros(
        format!("breakdown: contract call ({}) + its write", workload.name),
        per_op(start.elapsed()),
        txs,
    ));
    Ok(out)
}

/// Settled txs per batched run.
const TXS: u64 = 20_000;
/// Settled txs of the one-op-per-entry run (each appended and finalised alone).
const SINGLE_TXS: u64 = 1_000;

/// The batched shape: entries of 200 ops, a checkpoint every 10 entries (2,000 ops).
fn batched(sync: bool) -> Shape {
    Shape {
        ops_per_entry: 200,
        entries_per_checkpoint: 10,
        sync,
    }
}

/// Runs the `apply` suite.
pub fn run_apply() -> anyhow::Result<Vec<Measurement>> {
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let subnet = genesis().id();
    let probe = tx_ops(&subnet, &PROBE_FILL, TXS);
    let mut out = Vec::new();
    for sync in [false, true] {
        out.extend(apply_case(
            &runtime,
            &PROBE_FILL,
            &probe,
            batched(sync),
            Some(">= 20000 ops/s"),
            true,
        )?);
    }
    let intercom = tx_ops(&subnet, &INTERCOM_STORE, TXS / 2);
    out.extend(apply_case(
        &runtime,
        &INTERCOM_STORE,
        &intercom,
        batched(true),
        None,
        false,
    )?);
    out.extend(apply_case(
        &runtime,
        &PROBE_FILL,
        &probe[..SINGLE_TXS as usize],
        Shape {
            ops_per_entry: 1,
            entries_per_checkpoint: 1,
            sync: true,
        },
        None,
        true,
    )?);
    let shape = batched(true);
    out.extend(breakdown(
        &runtime,
        &PROBE_FILL,
        &probe,
        (shape.ops_per_entry * shape.entries_per_checkpoint) as usize,
    )?);
    Ok(out)
}

/// Runs the `replay` suite.
pub fn run_replay() -> anyhow::Result<Vec<Measurement>> {
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let shape = batched(false);
    let ops = tx_ops(&genesis().id(), &PROBE_FILL, TXS);
    let source = run_txs(&runtime, &PROBE_FILL, &ops, shape)?.node;
    let network = source.id();
    let status = source.ledger.status();
    let store = source.ledger.store().clone();
    let mut out = Vec::new();
    for (verify_signatures, sync) in [(false, true), (true, true), (false, false)] {
        let dir = tempfile::tempdir()?;
        let target = Store::open(
            dir.path(),
            StoreOptions {
                sync,
                ..StoreOptions::default()
            },
        )?;
        // A fresh machine (its contract cache empty), as a node replaying from scratch has.
        let machine = SubnetMachine::standard(genesis(), runtime.clone());
        let start = Instant::now();
        let report = replay(
            &store,
            &network,
            &machine,
            &target,
            &ReplayOptions {
                to: None,
                verify_signatures,
            },
            &mut |_| {},
        )?;
        let elapsed = start.elapsed();
        anyhow::ensure!(
            report.divergence.is_none(),
            "replay diverged: {:?}",
            report.divergence
        );
        anyhow::ensure!(
            report.height == status.final_height && report.ops == status.position,
            "replayed {} ops to height {}, expected {} to {}",
            report.ops,
            report.height,
            status.position,
            status.final_height
        );
        anyhow::ensure!(report.root == status.final_root, "replayed root differs");
        let read = target.read()?;
        let indexed: u64 = StateView::get(&read, b"txl")?
            .map(|b| rmp_serde::from_slice(&b))
            .transpose()?
            .unwrap_or(0);
        anyhow::ensure!(
            indexed == TXS,
            "{indexed} transactions replayed, expected {TXS}"
        );
        check_records(&read, TXS)?;
        drop(read);
        out.push(
            Measurement::throughput(
                format!(
                    "replay of {TXS} txs ({} ops/entry, {} entries/checkpoint), {}, {}",
                    shape.ops_per_entry,
                    shape.entries_per_checkpoint,
                    if verify_signatures {
                        "entry signatures verified"
                    } else {
                        "roots only"
                    },
                    if sync { "fsync" } else { "no fsync" }
                ),
                report.ops,
                elapsed,
            )
            .target(">= 50000 ops/s"),
        );
    }
    Ok(out)
}
