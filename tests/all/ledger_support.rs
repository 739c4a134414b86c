//! A small state machine for ledger tests (keyed puts, writer and indexer management) and a
//! simulated network of ledger nodes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use trac_host::codec;
use trac_host::crypto::{Hash32, Keypair, PublicKey};
use trac_host::ledger::{
    AppliedOp, Ledger, LedgerLimits, LedgerStatus, LogEntry, Message, StateMachine,
};
use trac_host::store::{StateAccess, StateRecord, Store, StoreError, StoreOptions};

/// The ops of the test machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestOp {
    /// Sets `key` to `value` (keys under `app/`).
    Put { key: String, value: String },
    /// Admits a writer (the admin only).
    AddWriter(PublicKey),
    /// Removes a writer (the admin only).
    RemoveWriter(PublicKey),
    /// Replaces the indexer set, sequencer first (the admin only).
    SetIndexers(Vec<PublicKey>),
}

impl TestOp {
    /// The op's bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }
}

/// The test machine: the admin (genesis key) is the first writer and indexer.
#[derive(Debug, Clone)]
pub struct TestMachine {
    /// The admin.
    pub admin: PublicKey,
    /// A deliberately broken machine: every put also writes `app/extra` (for divergence tests).
    pub diverge: bool,
}

impl TestMachine {
    /// The correct machine with `admin` as genesis key.
    pub fn new(admin: PublicKey) -> Self {
        TestMachine {
            admin,
            diverge: false,
        }
    }
}

fn writer_key(k: &PublicKey) -> Vec<u8> {
    format!("sys/writer/{}", k.to_hex()).into_bytes()
}

impl StateMachine for TestMachine {
    fn genesis(&self, state: &mut dyn StateAccess) -> Result<(), StoreError> {
        state.put(&writer_key(&self.admin), b"1")?;
        state.put(b"sys/indexers", &codec::encode(&vec![self.admin]))
    }

    fn is_writer(&self, state: &dyn StateAccess, writer: &PublicKey) -> Result<bool, StoreError> {
        Ok(state.get(&writer_key(writer))?.is_some())
    }

    fn indexers(&self, state: &dyn StateAccess) -> Result<Vec<PublicKey>, StoreError> {
        let bytes = state.get(b"sys/indexers")?.unwrap_or_default();
        Ok(codec::decode(&bytes).unwrap_or_else(|_| vec![self.admin]))
    }

    fn apply(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
    ) -> Result<Option<Vec<u8>>, trac_host::ledger::LedgerError> {
        let Ok(decoded) = codec::decode::<TestOp>(op.bytes) else {
            return Ok(Some(b"malformed".to_vec()));
        };
        let admin = op.writer == self.admin;
        let outcome: &[u8] = match decoded {
            TestOp::Put { key, value } => {
                state.put(format!("app/{key}").as_bytes(), value.as_bytes())?;
                state.put(b"app-last-position", &op.position.to_be_bytes())?;
                if self.diverge {
                    state.put(b"app/extra", b"!")?;
                }
                b"ok"
            }
            TestOp::AddWriter(k) if admin => {
                state.put(&writer_key(&k), b"1")?;
                b"ok"
            }
            TestOp::RemoveWriter(k) if admin => {
                state.delete(&writer_key(&k))?;
                b"ok"
            }
            TestOp::SetIndexers(set) if admin && !set.is_empty() => {
                state.put(b"sys/indexers", &codec::encode(&set))?;
                b"ok"
            }
            _ => b"refused",
        };
        let mut receipt = op.entry.0.to_vec();
        receipt.extend_from_slice(&op.index.to_be_bytes());
        receipt.extend_from_slice(outcome);
        Ok(Some(receipt))
    }
}

// ---------------------------------------------------------------------------------------------
// Simulated network
// ---------------------------------------------------------------------------------------------

/// The network id every simulated ledger uses.
pub const NETWORK: Hash32 = Hash32([9; 32]);

/// The key pair of seed `[i; 32]`.
pub fn key(i: u8) -> Keypair {
    Keypair::from_seed(&[i; 32])
}

/// A put op.
pub fn put(key: &str, value: &str) -> Vec<u8> {
    TestOp::Put {
        key: key.into(),
        value: value.into(),
    }
    .encode()
}

/// Opens a store in `dir` (no fsync: a dropped store survives, an OS crash is not simulated)
/// and the ledger in it.
pub fn open_ledger(
    dir: &Path,
    key: Option<&Keypair>,
    machine: TestMachine,
    limits: LedgerLimits,
) -> Ledger<TestMachine> {
    open_ledger_of(dir, NETWORK, key, machine, limits)
}

/// As [`open_ledger`] for any state machine and network id.
pub fn open_ledger_of<M: StateMachine>(
    dir: &Path,
    network: Hash32,
    key: Option<&Keypair>,
    machine: M,
    limits: LedgerLimits,
) -> Ledger<M> {
    let store = Arc::new(
        Store::open(
            dir,
            StoreOptions {
                map_size: 256 << 20,
                sync: false,
            },
        )
        .expect("open store"),
    );
    Ledger::open(store, machine, network, key.cloned(), limits).expect("open ledger")
}

/// A small deterministic generator (SplitMix64): a failing seed replays exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }
}

/// How the simulated network treats each delivery.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    /// Smallest delay of a delivery (simulated steps).
    pub min_delay: u64,
    /// Largest delay (a spread reorders messages).
    pub max_delay: u64,
    /// Chance a delivery is lost, in thousandths.
    pub drop_per_mille: u32,
    /// Chance a delivery arrives twice, in thousandths.
    pub dup_per_mille: u32,
}

impl NetConfig {
    /// In order, nothing lost or duplicated.
    pub fn reliable() -> Self {
        NetConfig {
            min_delay: 1,
            max_delay: 1,
            drop_per_mille: 0,
            dup_per_mille: 0,
        }
    }

    /// Reordered, some lost, some duplicated.
    pub fn lossy() -> Self {
        NetConfig {
            min_delay: 1,
            max_delay: 40,
            drop_per_mille: 150,
            dup_per_mille: 100,
        }
    }
}

/// Builds the state machine of node `i` (when it starts and on every restart).
pub type MachineFactory<M> = Box<dyn Fn(usize) -> M>;

/// One simulated node: a key and a ledger over a real LMDB store.
pub struct SimNode<M: StateMachine = TestMachine> {
    /// The node's key (its writer key and, if in the set, its indexer key).
    pub key: Keypair,
    dir: TempDir,
    ledger: Option<Ledger<M>>,
}

struct Delivery {
    from: usize,
    to: usize,
    message: Message,
}

/// A node's status and views, for comparing nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `Ledger::status`.
    pub status: LedgerStatus,
    /// The confirmed state, every record.
    pub confirmed: Vec<StateRecord>,
    /// The root of the unconfirmed view.
    pub unconfirmed_root: Hash32,
}

/// In-process nodes connected by a simulated network: per-delivery random delay (which
/// reorders), duplicates, losses and partitions. Whatever a node's `handle` returns goes to
/// every other node, except replies to `Want*` requests, which go back to the asker.
/// Generic over the state machine (the ledger tests' [`TestMachine`] by default).
pub struct Sim<M: StateMachine = TestMachine> {
    /// The nodes, by index.
    pub nodes: Vec<SimNode<M>>,
    /// The network's behaviour (may be changed between phases).
    pub net: NetConfig,
    /// The randomness of the network.
    pub rng: Rng,
    /// The deterministic clock handed to `propose` (milliseconds).
    pub time: u64,
    /// Errors returned by `handle` (an honest run has none).
    pub errors: Vec<(usize, String)>,
    /// Deliveries handled so far.
    pub delivered: u64,
    limits: LedgerLimits,
    network: Hash32,
    machines: MachineFactory<M>,
    now: u64,
    sent: u64,
    queue: BTreeMap<(u64, u64), Delivery>,
    group: Vec<u32>,
}

impl Sim<TestMachine> {
    /// Nodes with the given keys and machines; `seed` drives the network's randomness.
    pub fn new(nodes: Vec<(Keypair, TestMachine)>, net: NetConfig, seed: u64) -> Sim {
        Self::with_limits(nodes, net, seed, LedgerLimits::default())
    }

    /// As [`Sim::new`] with other ledger limits.
    pub fn with_limits(
        nodes: Vec<(Keypair, TestMachine)>,
        net: NetConfig,
        seed: u64,
        limits: LedgerLimits,
    ) -> Sim {
        let (keys, machines): (Vec<Keypair>, Vec<TestMachine>) = nodes.into_iter().unzip();
        Sim::with_machines(
            NETWORK,
            keys,
            Box::new(move |i| machines[i].clone()),
            net,
            seed,
            limits,
        )
    }

    /// `n` nodes with keys `key(1)..=key(n)` and correct machines; node 0 is the admin (the
    /// genesis writer, indexer and sequencer).
    pub fn honest(n: usize, net: NetConfig, seed: u64) -> Sim {
        let admin = key(1).public();
        let nodes = (1..=n as u8)
            .map(|i| (key(i), TestMachine::new(admin)))
            .collect();
        Sim::new(nodes, net, seed)
    }
}

impl<M: StateMachine> Sim<M> {
    /// Nodes of `network` with the given keys, each running the machine `machines(i)` over a
    /// real store in its own temp dir; `seed` drives the network's randomness.
    pub fn with_machines(
        network: Hash32,
        keys: Vec<Keypair>,
        machines: MachineFactory<M>,
        net: NetConfig,
        seed: u64,
        limits: LedgerLimits,
    ) -> Sim<M> {
        let count = keys.len();
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let dir = tempfile::tempdir().expect("tempdir");
                let ledger = open_ledger_of(dir.path(), network, Some(&key), machines(i), limits);
                SimNode {
                    key,
                    dir,
                    ledger: Some(ledger),
                }
            })
            .collect();
        Sim {
            nodes,
            net,
            rng: Rng::new(seed),
            time: 1_000,
            errors: Vec::new(),
            delivered: 0,
            limits,
            network,
            machines,
            now: 0,
            sent: 0,
            queue: BTreeMap::new(),
            group: vec![0; count],
        }
    }

    /// The network id of the simulated ledgers.
    pub fn network(&self) -> Hash32 {
        self.network
    }

    /// The ledger of node `i` (panics if it is down).
    pub fn ledger(&mut self, i: usize) -> &mut Ledger<M> {
        self.nodes[i].ledger.as_mut().expect("node is down")
    }

    /// The public key of node `i`.
    pub fn public(&self, i: usize) -> PublicKey {
        self.nodes[i].key.public()
    }

    /// Whether node `i` is running.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].ledger.is_some()
    }

    /// Stops node `i`: its ledger and store are dropped (every call commits before it returns,
    /// so this is a crash between commits). Messages to it are lost while it is down.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].ledger = None;
    }

    /// Restarts node `i` from its directory.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.is_up(i), "node {i} is running");
        let machine = (self.machines)(i);
        let node = &mut self.nodes[i];
        node.ledger = Some(open_ledger_of(
            node.dir.path(),
            self.network,
            Some(&node.key),
            machine,
            self.limits,
        ));
    }

    /// Splits the nodes: nodes in different groups cannot reach each other (deliveries between
    /// them are lost) until [`Sim::heal`]. Nodes in no group form one more group.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        self.group = vec![u32::MAX; self.nodes.len()];
        for (g, members) in groups.iter().enumerate() {
            for &i in *members {
                self.group[i] = g as u32;
            }
        }
    }

    /// Ends any partition.
    pub fn heal(&mut self) {
        self.group = vec![0; self.nodes.len()];
    }

    /// Sends one message (subject to loss, duplication and delay).
    pub fn send(&mut self, from: usize, to: usize, message: Message) {
        if self.rng.chance(self.net.drop_per_mille) {
            return;
        }
        let copies = if self.rng.chance(self.net.dup_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let spread = self.net.max_delay - self.net.min_delay + 1;
            let at = self.now + self.net.min_delay + self.rng.below(spread);
            self.sent += 1;
            self.queue.insert(
                (at, self.sent),
                Delivery {
                    from,
                    to,
                    message: message.clone(),
                },
            );
        }
    }

    /// Sends `messages` from `from` to every other node.
    pub fn broadcast(&mut self, from: usize, messages: Vec<Message>) {
        for message in messages {
            for to in 0..self.nodes.len() {
                if to != from {
                    self.send(from, to, message.clone());
                }
            }
        }
    }

    /// Hands `message` to node `i` directly (as if from a local client), broadcasting what
    /// it returns. Returns `handle`'s result.
    pub fn submit(&mut self, i: usize, message: Message) -> Result<(), String> {
        let result = self.ledger(i).handle(message).map_err(|e| e.to_string());
        match result {
            Ok(out) => {
                self.broadcast(i, out);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Node `i` appends `ops` to its own log and broadcasts the entry.
    pub fn append(&mut self, i: usize, ops: Vec<Vec<u8>>) -> LogEntry {
        let entry = self.ledger(i).append(ops).expect("append");
        self.broadcast(i, vec![Message::Entry(entry.clone())]);
        entry
    }

    /// Delivers the next message in flight; false when none is left.
    pub fn deliver_one(&mut self) -> bool {
        let Some(((at, _), delivery)) = self.queue.pop_first() else {
            return false;
        };
        self.now = self.now.max(at);
        let Delivery { from, to, message } = delivery;
        if self.group[from] != self.group[to] || !self.is_up(to) {
            return true;
        }
        self.delivered += 1;
        let is_request = matches!(
            message,
            Message::WantEntries { .. } | Message::WantCheckpoints { .. }
        );
        match self.ledger(to).handle(message) {
            Ok(out) if is_request => {
                for reply in out {
                    self.send(to, from, reply);
                }
            }
            Ok(out) => self.broadcast(to, out),
            Err(e) => self.errors.push((to, e.to_string())),
        }
        true
    }

    /// Delivers until nothing is in flight; panics after `bound` deliveries (a message storm
    /// is a bug, and a test must not hang on it). Returns the number of deliveries.
    pub fn deliver_until_quiet(&mut self, bound: usize) -> usize {
        let mut steps = 0;
        while self.deliver_one() {
            steps += 1;
            assert!(
                steps <= bound,
                "still {} messages in flight after {bound} deliveries",
                self.queue.len()
            );
        }
        steps
    }

    /// Delivers up to `n` messages.
    pub fn deliver_some(&mut self, n: usize) {
        for _ in 0..n {
            if !self.deliver_one() {
                break;
            }
        }
    }

    /// One period: the clock advances, every running node may propose (only the sequencer in
    /// force does) and sends its sync requests.
    pub fn tick(&mut self) {
        self.time += 1_000;
        for i in 0..self.nodes.len() {
            if !self.is_up(i) {
                continue;
            }
            let time = self.time;
            let proposed = self.ledger(i).propose(time).expect("propose");
            self.broadcast(i, proposed);
            let sync = self.ledger(i).sync_requests().expect("sync requests");
            self.broadcast(i, sync);
        }
    }

    /// Node `i`'s status.
    pub fn status(&mut self, i: usize) -> LedgerStatus {
        self.ledger(i).status()
    }

    /// The state root of node `i`'s confirmed or unconfirmed view.
    pub fn root(&mut self, i: usize, confirmed: bool) -> Hash32 {
        self.ledger(i)
            .read(confirmed, |s| s.root().expect("root"))
            .expect("read")
    }

    /// The value of `key` in node `i`'s view.
    pub fn get(&mut self, i: usize, confirmed: bool, key: &str) -> Option<Vec<u8>> {
        self.ledger(i)
            .read(confirmed, |s| s.get(key.as_bytes()).expect("get"))
            .expect("read")
    }

    /// Status, confirmed records and unconfirmed root of node `i`.
    pub fn snapshot(&mut self, i: usize) -> Snapshot {
        let confirmed = self
            .ledger(i)
            .read(true, |s| s.range(b"", None, usize::MAX).expect("range"))
            .expect("read");
        Snapshot {
            status: self.status(i),
            confirmed,
            unconfirmed_root: self.root(i, false),
        }
    }

    /// Entries no final checkpoint includes yet, at node `i`.
    pub fn unincluded(&mut self, i: usize) -> u64 {
        let status = self.status(i);
        let included: u64 = match self
            .ledger(i)
            .checkpoint(status.final_height)
            .expect("read")
        {
            Some(c) => c.body.frontier.iter().map(|f| f.next).sum(),
            None => 0,
        };
        status.entries - included
    }

    /// Whether every running node has the same final checkpoint, nothing pending, and every
    /// entry it stores included.
    pub fn consistent(&mut self) -> bool {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.is_up(i)).collect();
        let first = self.status(up[0]);
        for i in up {
            let s = self.status(i);
            let same = s.final_height == first.final_height
                && s.final_root == first.final_root
                && s.latest_height == s.final_height
                && s.entries == first.entries
                && s.skipped == first.skipped;
            if !same || self.unincluded(i) != 0 {
                return false;
            }
        }
        true
    }

    /// Ticks and delivers until the nodes are consistent for two periods in a row; panics
    /// (with every node's status) after `max_rounds` periods. Returns the periods used.
    pub fn await_consistency(&mut self, max_rounds: usize) -> usize {
        let mut stable = 0;
        for round in 1..=max_rounds {
            self.tick();
            self.deliver_until_quiet(200_000);
            if self.consistent() {
                stable += 1;
                if stable == 2 {
                    return round;
                }
            } else {
                stable = 0;
            }
        }
        let statuses: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some(format!("node {i}: {:?}", n.ledger.as_ref()?.status())))
            .collect();
        panic!(
            "no consistency after {max_rounds} periods; errors {:?}\n{}",
            self.errors,
            statuses.join("\n")
        );
    }
}

/// The receipts Merkle root (the engine's rule, for comparing with stored checkpoints).
pub fn receipts_root(receipts: &[Vec<u8>]) -> Hash32 {
    trac_host::ledger::merkle::root(receipts)
}
