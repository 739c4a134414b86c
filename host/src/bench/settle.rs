//! The `settle` suite: the `/tx` lifecycle (`node::txflow`) in process, with real LMDB stores
//! (fsync on every commit, but for the contrast run) in temp dirs.
//!
//! - An MSB dev network of one node (admin = indexer = validator; checkpoints final at once)
//!   and a subnet of three nodes (the creator, sequencer of the subnet, and two indexers, so a
//!   subnet checkpoint is final once one of them acks it), exchanging `Message`s through an
//!   in-memory router; the subnet trusts the MSB by checkpointed settlement proofs.
//! - **Latency**: for each of 200 sequential Intercom `storeSomething` transactions, the time
//!   from `TxFlow::submit` (sign, persist the pending record, validator check and co-sign, MSB
//!   append) through the MSB checkpoint, `TxFlow::poll` (settlement proof, subnet append,
//!   pending record removed) and the subnet checkpoint with every message delivered, until
//!   the transaction is final in the confirmed state of all three subnet nodes; then the same
//!   without fsync, as a contrast.
//! - **Validator throughput**: N partial ops signed by requesters beforehand (the wallet's
//!   work), then checked, co-signed and queued by one validator, appended in entries of 256 and
//!   checkpointed (final) every 256 ops.
//! - **End to end, batched**: N transactions through `TxFlow::submit_many` (256 per call, the
//!   validator pool flushed after each), one MSB checkpoint, one poll, one subnet checkpoint on
//!   the three nodes.
//!
//! Honesty checks: every MSB op of the throughput runs has a receipt without error; every
//! transaction of the latency and batched runs is indexed on all three subnet nodes with a
//! result and no error, and the three nodes have the same state root.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Measurement;
use crate::bundled::INTERCOM;
use crate::codec;
use crate::crypto::{Hash32, Keypair};
use crate::ledger::{Ledger, LedgerLimits, Message};
use crate::msb::{
    MsbGenesis, MsbMachine, PartialOp, Receipt, UserAction, UserBody, Validator, tx_location,
};
use crate::node::{LocalMsb, TxFlow, TxOutcome};
use crate::runtime::{Runtime, RuntimeConfig, TxCall};
use crate::store::{Store, StoreOptions};
use crate::subnet::ops::deploy_ops;
use crate::subnet::{
    Action, OpSigner, SettlementScheme, SubnetGenesis, SubnetMachine, SubnetOp, TxOp, TxRecord,
    encode_op, keys,
};

/// Checkpoint time of the first proposal (milliseconds).
const START_TIME: u64 = 1_700_000_000_000;

/// Intercom's `storeSomething` takes no arguments (MessagePack nil).
const NIL: &[u8] = &[0xc0];

/// Ops per validator flush and per MSB checkpoint in the throughput runs.
const BATCH: usize = 256;

fn keypair(i: u8) -> Keypair {
    Keypair::from_seed(&[i; 32])
}

/// The subnet creator (sequencer) and the peer whose transactions are measured.
fn creator() -> Keypair {
    keypair(1)
}

/// The MSB node's key: admin, indexer, validator.
fn msb_key() -> Keypair {
    keypair(100)
}

fn open_store(dir: &tempfile::TempDir, sync: bool) -> anyhow::Result<Arc<Store>> {
    Ok(Arc::new(Store::open(
        dir.path(),
        StoreOptions {
            sync,
            ..StoreOptions::default()
        },
    )?))
}

/// The MSB node.
struct Msb {
    ledger: Ledger<MsbMachine>,
    validator: Validator,
    time: u64,
    _dir: tempfile::TempDir,
}

impl Msb {
    fn open(funded: &[Keypair], sync: bool) -> anyhow::Result<Msb> {
        let mut genesis = MsbGenesis::dev(msb_key().public(), creator().public(), None);
        genesis
            .funds
            .extend(funded.iter().map(|k| (k.public(), 1_000 * crate::msb::TNK)));
        let dir = tempfile::tempdir()?;
        let ledger = Ledger::open(
            open_store(&dir, sync)?,
            MsbMachine::new(genesis.clone()),
            genesis.id(),
            Some(msb_key()),
            LedgerLimits::default(),
        )?;
        Ok(Msb {
            ledger,
            validator: Validator::new(msb_key()),
            time: START_TIME,
            _dir: dir,
        })
    }

    fn network(&self) -> Hash32 {
        self.ledger.network()
    }

    fn access(&mut self) -> LocalMsb<'_> {
        LocalMsb::new(&mut self.ledger, &mut self.validator)
    }

    /// Proposes a checkpoint and checks it is final.
    fn checkpoint(&mut self) -> anyhow::Result<()> {
        self.time += 1;
        self.ledger.propose(self.time)?;
        let status = self.ledger.status();
        anyhow::ensure!(
            status.final_height == status.latest_height,
            "MSB checkpoint {} is not final",
            status.latest_height
        );
        Ok(())
    }

    /// A partial op of `requester`.
    fn partial(&mut self, requester: &Keypair, action: UserAction, nonce: u64) -> PartialOp {
        let body = UserBody {
            action,
            requester: requester.public(),
            nonce,
            expires: self.ledger.status().latest_height + 1_000,
        };
        PartialOp::sign(requester, &self.network(), body)
    }

    /// Fails unless every op in `hashes` is applied (a receipt without error).
    fn check_applied(&mut self, hashes: &[Hash32]) -> anyhow::Result<()> {
        let missing = self.ledger.read(true, |s| -> anyhow::Result<usize> {
            let mut missing = 0;
            for hash in hashes {
                if tx_location(s, hash)?.is_none() {
                    missing += 1;
                }
            }
            Ok(missing)
        })??;
        anyhow::ensure!(
            missing == 0,
            "{missing} of {} MSB ops are not applied",
            hashes.len()
        );
        let mut refused = 0;
        for height in 1..=self.ledger.status().final_height {
            for bytes in self.ledger.receipts(height)? {
                let receipt: Receipt = codec::decode(&bytes)?;
                refused += usize::from(receipt.error.is_some());
            }
        }
        anyhow::ensure!(refused == 0, "{refused} MSB ops were refused");
        Ok(())
    }
}

/// Three subnet nodes and the router between them.
struct Subnet {
    nodes: Vec<Ledger<SubnetMachine>>,
    time: u64,
    delivered: u64,
    _dirs: Vec<tempfile::TempDir>,
}

impl Subnet {
    fn open(runtime: &Arc<Runtime>, sync: bool) -> anyhow::Result<Subnet> {
        let genesis = SubnetGenesis {
            creator: creator().public(),
            channel: "bench-settle".into(),
            salt: [7; 16],
        };
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for i in 1..=3 {
            let dir = tempfile::tempdir()?;
            nodes.push(Ledger::open(
                open_store(&dir, sync)?,
                SubnetMachine::standard(genesis.clone(), runtime.clone()),
                genesis.id(),
                Some(keypair(i)),
                LedgerLimits::default(),
            )?);
            dirs.push(dir);
        }
        Ok(Subnet {
            nodes,
            time: START_TIME,
            delivered: 0,
            _dirs: dirs,
        })
    }

    fn id(&self) -> Hash32 {
        self.nodes[0].network()
    }

    /// Sends `messages` from node `from` to the others and everything they answer, until
    /// nothing is in flight (replies to requests go back to the asker only).
    fn deliver(&mut self, from: usize, messages: Vec<Message>) -> anyhow::Result<()> {
        let n = self.nodes.len();
        let mut queue: VecDeque<(usize, usize, Message)> = VecDeque::new();
        let broadcast = |queue: &mut VecDeque<_>, from: usize, messages: Vec<Message>| {
            for message in messages {
                for to in (0..n).filter(|&to| to != from) {
                    queue.push_back((from, to, message.clone()));
                }
            }
        };
        broadcast(&mut queue, from, messages);
        while let Some((from, to, message)) = queue.pop_front() {
            let request = matches!(
                message,
                Message::WantEntries { .. } | Message::WantCheckpoints { .. }
            );
            self.delivered += 1;
            let out = self.nodes[to].handle(message)?;
            if request {
                queue.extend(out.into_iter().map(|m| (to, from, m)));
            } else {
                broadcast(&mut queue, to, out);
            }
        }
        Ok(())
    }

    /// The sequencer checkpoints what it has; everything is delivered.
    fn checkpoint(&mut self) -> anyhow::Result<()> {
        self.time += 1;
        let out = self.nodes[0].propose(self.time)?;
        self.deliver(0, out)
    }

    /// Whether every node's latest checkpoint is final and the same.
    fn settled(&self) -> bool {
        let first = self.nodes[0].status();
        self.nodes.iter().all(|node| {
            let s = node.status();
            s.final_height == first.latest_height && s.final_root == first.final_root
        })
    }

    /// Creates the subnet: admin, MSB trust, Intercom, two more indexers.
    fn create(&mut self, msb: &Hash32) -> anyhow::Result<()> {
        let signer = OpSigner::new(creator(), self.id());
        let mut ops = vec![encode_op(&SubnetOp::AddAdmin {
            key: creator().public(),
        })];
        ops.push(signer.sign(
            Action::SetMsbTrust {
                network: *msb,
                indexers: vec![msb_key().public()],
                scheme: SettlementScheme::Checkpointed,
            },
            1_000,
        ));
        ops.extend(deploy_ops(&signer, INTERCOM, 1_000));
        for i in 2..=3 {
            ops.push(signer.sign(
                Action::AddIndexer {
                    key: keypair(i).public(),
                },
                1_000,
            ));
        }
        let entry = self.nodes[0].append(ops)?;
        self.deliver(0, vec![Message::Entry(entry)])?;
        self.checkpoint()?;
        anyhow::ensure!(
            self.settled(),
            "the subnet's creation is not final everywhere"
        );
        let active = self.nodes[2].read(true, |s| SubnetMachine::contract_record(s))??;
        anyhow::ensure!(active.is_some(), "Intercom is not active");
        Ok(())
    }

    /// Whether `tx_hash` is in the confirmed state of every node.
    fn applied_everywhere(&mut self, tx_hash: &Hash32) -> anyhow::Result<bool> {
        let key = keys::tx_by_hash(tx_hash);
        for node in &mut self.nodes {
            if node.read(true, |s| s.get(&key))??.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Fails unless every node indexes exactly `txs` transactions, each with a result and no
    /// error, and the nodes have one state root.
    fn check_txs(&mut self, txs: u64) -> anyhow::Result<()> {
        anyhow::ensure!(self.settled(), "the subnet nodes disagree");
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let failed = node.read(true, |s| -> anyhow::Result<u64> {
                let count: u64 = match s.get(b"txl")? {
                    Some(bytes) => rmp_serde::from_slice(&bytes)?,
                    None => 0,
                };
                anyhow::ensure!(
                    count == txs,
                    "node {i} indexes {count} transactions, not {txs}"
                );
                let mut failed = 0;
                for n in 0..txs {
                    let bytes = s
                        .get(&keys::tx_record(n))?
                        .ok_or_else(|| anyhow::anyhow!("node {i} lacks txi/{n}"))?;
                    let record: TxRecord = rmp_serde::from_slice(&bytes)?;
                    failed += u64::from(record.err.is_some() || record.result.is_none());
                }
                Ok(failed)
            })??;
            anyhow::ensure!(failed == 0, "node {i}: {failed} transactions failed");
        }
        Ok(())
    }
}

/// A quantile (0..=1) of `samples` in milliseconds.
fn millis(name: &str, samples: &mut [Duration], q: f64, target: Option<&str>) -> Measurement {
    let mut m = Measurement::latency_micros(name, samples, q);
    m.value /= 1_000.0;
    m.unit = "ms";
    m.target = target.map(str::to_string);
    m
}

/// Sequential transactions from submit to final on all three subnet nodes.
fn latency(runtime: &Arc<Runtime>, txs: usize, sync: bool) -> anyhow::Result<Vec<Measurement>> {
    let mut msb = Msb::open(&[], sync)?;
    let mut subnet = Subnet::open(runtime, sync)?;
    deploy(&mut msb, &subnet)?;
    subnet.create(&msb.network())?;
    let mut flow = TxFlow::open(&subnet.nodes[0], creator())?;
    let mut total = Vec::with_capacity(txs);
    let mut stages: [Vec<Duration>; 4] = Default::default();
    let delivered = subnet.delivered;
    for _ in 0..txs {
        let start = Instant::now();
        let tx_hash = flow.submit(
            &mut subnet.nodes[0],
            &mut msb.access(),
            "storeSomething",
            NIL,
        )?;
        let submitted = Instant::now();
        msb.checkpoint()?;
        let settled = Instant::now();
        let report = flow.poll(&mut subnet.nodes[0], &mut msb.access())?;
        anyhow::ensure!(
            report.txs.len() == 1 && report.txs[0].outcome == TxOutcome::Appended,
            "the transaction was not appended: {:?}",
            report.txs
        );
        let polled = Instant::now();
        subnet.deliver(0, report.messages)?;
        subnet.checkpoint()?;
        anyhow::ensure!(
            subnet.applied_everywhere(&tx_hash)?,
            "transaction {tx_hash} is not final on every subnet node"
        );
        let done = Instant::now();
        total.push(done - start);
        stages[0].push(submitted - start);
        stages[1].push(settled - submitted);
        stages[2].push(polled - settled);
        stages[3].push(done - polled);
    }
    subnet.check_txs(txs as u64)?;
    let per_tx = (subnet.delivered - delivered) / txs as u64;
    let [submit, checkpoint, poll, apply] = &mut stages;
    if !sync {
        return Ok(vec![
            millis(
                "submit → applied on 3 subnet nodes, no fsync (contrast), p50",
                &mut total,
                0.5,
                None,
            ),
            millis("… no fsync, p99", &mut total, 0.99, None),
        ]);
    }
    Ok(vec![
        millis(
            "submit → applied on 3 subnet nodes, p50",
            &mut total,
            0.5,
            Some("<= 20"),
        ),
        millis(
            "submit → applied on 3 subnet nodes, p99",
            &mut total,
            0.99,
            None,
        ),
        millis(
            "… submit (sign, persist, validator, MSB append), p50",
            submit,
            0.5,
            None,
        ),
        millis("… MSB checkpoint (1 indexer), p50", checkpoint, 0.5, None),
        millis(
            "… poll (proof, subnet append, record removed), p50",
            poll,
            0.5,
            None,
        ),
        millis(
            &format!("… subnet checkpoint, 3 nodes, {per_tx} deliveries/tx, p50"),
            apply,
            0.5,
            None,
        ),
    ])
}

/// Registers the subnet on MSB (its creator pays).
fn deploy(msb: &mut Msb, subnet: &Subnet) -> anyhow::Result<()> {
    let partial = msb.partial(
        &creator(),
        UserAction::DeploySubnet {
            subnet: subnet.id(),
            channel: "bench-settle".into(),
        },
        0,
    );
    let hash = msb.validator.submit(&mut msb.ledger, partial)?;
    msb.validator.flush(&mut msb.ledger)?;
    msb.checkpoint()?;
    msb.check_applied(&[hash])
}

/// Pre-signed ops through one validator: check + co-sign, append, checkpoint.
fn validator_throughput(runtime: &Arc<Runtime>, txs: usize) -> anyhow::Result<Vec<Measurement>> {
    // Several requesters, as many wallets would be.
    let requesters: Vec<Keypair> = (10..26).map(keypair).collect();
    let mut msb = Msb::open(&requesters, true)?;
    let subnet = Subnet::open(runtime, true)?;
    deploy(&mut msb, &subnet)?;
    let id = subnet.id();
    let partials: Vec<PartialOp> = (0..txs)
        .map(|i| {
            let args = format!("call {i}");
            let action = UserAction::Tx {
                subnet: id,
                content: TxOp::content_hash(&id, "storeSomething", args.as_bytes()),
            };
            msb.partial(&requesters[i % requesters.len()], action, i as u64)
        })
        .collect();
    let start = Instant::now();
    let mut hashes = Vec::with_capacity(txs);
    for chunk in partials.chunks(BATCH) {
        for partial in chunk {
            hashes.push(msb.validator.submit(&mut msb.ledger, partial.clone())?);
        }
        msb.validator.flush(&mut msb.ledger)?;
        msb.checkpoint()?;
    }
    let elapsed = start.elapsed();
    msb.check_applied(&hashes)?;
    Ok(vec![
        Measurement::throughput(
            format!("settlement through 1 validator (check, co-sign, append {BATCH}/entry, checkpoint every {BATCH})"),
            txs as u64,
            elapsed,
        )
        .target(">= 2000"),
    ])
}

/// N transactions of one peer: submit all, one MSB checkpoint, one poll, one subnet
/// checkpoint.
fn batched(runtime: &Arc<Runtime>, txs: usize) -> anyhow::Result<Vec<Measurement>> {
    let mut msb = Msb::open(&[], true)?;
    let mut subnet = Subnet::open(runtime, true)?;
    deploy(&mut msb, &subnet)?;
    subnet.create(&msb.network())?;
    let mut flow = TxFlow::open(&subnet.nodes[0], creator())?;
    // Distinct values written by each call (`submitted_by/<peer>` holds the last one).
    let calls = (0..txs)
        .map(|i| -> anyhow::Result<TxCall> {
            let args = crate::codec::json::json_to_msgpack(&serde_json::json!({
                "op": "do_something",
                "some_key": format!("k{i}"),
            }))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(TxCall {
                function: "submitSomething".into(),
                args,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start = Instant::now();
    for chunk in calls.chunks(BATCH) {
        let mut access = LocalMsb::deferred(&mut msb.ledger, &mut msb.validator);
        for result in flow.submit_many(&mut subnet.nodes[0], &mut access, chunk)? {
            result?;
        }
        access.flush()?;
    }
    msb.validator.flush(&mut msb.ledger)?;
    let submitted = Instant::now();
    msb.checkpoint()?;
    let settled = Instant::now();
    let report = flow.poll(&mut subnet.nodes[0], &mut msb.access())?;
    let appended = report.with_outcome(&TxOutcome::Appended).len();
    anyhow::ensure!(appended == txs, "{appended} of {txs} appended");
    let polled = Instant::now();
    subnet.deliver(0, report.messages)?;
    subnet.checkpoint()?;
    let done = Instant::now();
    subnet.check_txs(txs as u64)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let part = |name: &str, d: Duration| Measurement {
        name: format!("… {name}"),
        value: ms(d),
        unit: "ms",
        samples: txs as u64,
        target: None,
    };
    Ok(vec![
        Measurement::throughput(
            format!("{txs} txs of one peer: submit all → applied on 3 subnet nodes"),
            txs as u64,
            done - start,
        ),
        part(
            "TxFlow::submit_many per 256 (sign, persist, validator, MSB append)",
            submitted - start,
        ),
        part("MSB checkpoint", settled - submitted),
        part(
            "poll (proofs, subnet append, records removed)",
            polled - settled,
        ),
        part("subnet checkpoint on 3 nodes", done - polled),
    ])
}

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Measurement>> {
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let mut results = latency(&runtime, 200, true)?;
    results.extend(latency(&runtime, 200, false)?);
    results.extend(validator_throughput(&runtime, 5_120)?);
    results.extend(batched(&runtime, 1_000)?);
    Ok(results)
}
