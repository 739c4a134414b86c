//! Support for subnet tests: a subnet node (ledger + subnet machine) in a temp dir, op
//! builders, state readers, assembled test contracts and a simulated network of subnet nodes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use trac_host::crypto::{Hash32, Keypair, PublicKey};
use trac_host::ledger::{Ack, Ledger, LedgerLimits, LedgerStatus, LogEntry, Message};
use trac_host::runtime::{Runtime, RuntimeConfig};
use trac_host::store::{Store, StoreOptions};
use trac_host::subnet::ops::deploy_ops;
use trac_host::subnet::{
    Action, Attestation, OpSigner, Settlement, SettlementScheme, SignedOp, SubnetGenesis,
    SubnetMachine, SubnetOp, TxOp, decode_op, encode_op, keys,
};

use crate::ledger_support::{NetConfig, Sim};
use crate::wat_contract::WatContract;

/// One runtime for the whole test binary (compiled contracts are shared).
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Arc::new(Runtime::new(RuntimeConfig::default()).expect("runtime")))
        .clone()
}

/// A deterministic keypair.
pub fn key(i: u8) -> Keypair {
    Keypair::from_seed(&[i; 32])
}

/// The subnet creator and first admin of every test subnet.
pub fn creator() -> Keypair {
    key(1)
}

/// The genesis every test subnet uses (creator = key 1).
pub fn genesis() -> SubnetGenesis {
    SubnetGenesis {
        creator: creator().public(),
        channel: "test-subnet".into(),
        salt: [7; 16],
    }
}

/// A fresh machine of the test subnet.
pub fn machine() -> SubnetMachine {
    SubnetMachine::standard(genesis(), runtime())
}

/// The MSB network id of the tests.
pub const MSB_NETWORK: Hash32 = Hash32([0x4d; 32]);

/// The MSB indexer whose attestations the test subnets trust.
pub fn msb_indexer() -> Keypair {
    key(200)
}

/// The validator named in the tests' settlements.
pub fn validator() -> PublicKey {
    key(201).public()
}

/// The probe contract (contracts/probe).
pub const PROBE: &[u8] = include_bytes!("../../contracts/artifacts/probe.wasm");

/// The key whose value only records that guards were pruned up to a height: written by the
/// first op of every checkpoint, whatever the op, so refusals are judged without it.
pub const PRUNE_MARK: &str = keys::GUARDS_PRUNED;

/// Opens a store in `dir` (no fsync).
pub fn open_store(dir: &Path) -> Arc<Store> {
    Arc::new(
        Store::open(
            dir,
            StoreOptions {
                map_size: 1 << 30,
                sync: false,
            },
        )
        .expect("open store"),
    )
}

/// Opens a subnet node in `dir` with `keypair` as its writer key.
pub fn open_node(dir: &Path, keypair: Option<&Keypair>) -> Ledger<SubnetMachine> {
    let id = genesis().id();
    Ledger::open(
        open_store(dir),
        machine(),
        id,
        keypair.cloned(),
        LedgerLimits::default(),
    )
    .expect("open")
}

/// MessagePack of a JSON value (contract arguments, feature values).
pub fn msgpack(value: serde_json::Value) -> Vec<u8> {
    trac_host::codec::json::json_to_msgpack(&value).expect("msgpack")
}

/// The replay-guard key (`sh/<hash>`) of an encoded signed op of `subnet`.
pub fn guard_key(subnet: &Hash32, op: &[u8]) -> String {
    match decode_op(op).expect("decodes") {
        SubnetOp::Signed(signed) => {
            String::from_utf8(keys::replay_guard(&signed.hash(subnet))).expect("utf-8")
        }
        other => panic!("not a signed op: {other:?}"),
    }
}

/// An encoded signed op of `subnet` with explicit nonce and expiry.
pub fn signed_for(
    subnet: &Hash32,
    keypair: &Keypair,
    action: Action,
    nonce: u64,
    expires: u64,
) -> Vec<u8> {
    encode_op(&SubnetOp::Signed(SignedOp::sign(
        keypair, subnet, action, nonce, expires,
    )))
}

/// The settlement proof `attester` signs for `settlement` on MSB `network`.
pub fn attest(attester: &Keypair, network: &Hash32, settlement: Settlement) -> Vec<u8> {
    Attestation::sign(attester, network, settlement)
}

/// The settlement of `function(args)` by `requester` in `subnet`, with tx hash `tx` and the
/// tests' validator.
pub fn settlement_for(
    subnet: &Hash32,
    requester: &PublicKey,
    tx: Hash32,
    function: &str,
    args: &[u8],
) -> Settlement {
    Settlement {
        tx_hash: tx,
        requester: *requester,
        validator: validator(),
        subnet: *subnet,
        content: TxOp::content_hash(subnet, function, args),
    }
}

/// A tx op of `subnet` for `function(args)` by `requester` with tx hash `tx`, attested by the
/// tests' MSB indexer.
pub fn settled_tx(
    subnet: &Hash32,
    requester: &PublicKey,
    tx: Hash32,
    function: &str,
    args: &[u8],
) -> Vec<u8> {
    let settlement = settlement_for(subnet, requester, tx, function, args);
    tx_op(
        function,
        args,
        attest(&msb_indexer(), &MSB_NETWORK, settlement),
    )
}

/// A tx op calling `function(args)` with settlement proof `proof`.
pub fn tx_op(function: &str, args: &[u8], proof: Vec<u8>) -> Vec<u8> {
    encode_op(&SubnetOp::Tx(TxOp {
        function: function.into(),
        args: serde_bytes::ByteBuf::from(args.to_vec()),
        settlement: serde_bytes::ByteBuf::from(proof),
    }))
}

/// `component` with a custom section of `extra` bytes appended: another component (another
/// hash) that behaves the same, as large as a test needs.
pub fn padded(component: &[u8], extra: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"padding";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.resize(payload.len() + extra, 0x5a);
    let mut out = component.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// A WAT contract describing itself as `wat-test` `version` (5 bytes, like `1.0.0`). Its
/// `execute` (txs, features, chat hook) tries to put `"x"` under each of `keys`, ignoring the
/// errors, then puts `app/ok`; its `migrate` puts the version it migrates from under
/// `app/migrated`, or fails when `failing_migrate`.
pub fn wat_app(version: &str, keys: &[&str], failing_migrate: bool) -> Vec<u8> {
    assert_eq!(version.len(), 5, "the template's version is 5 bytes");
    const VALUE: u32 = 1024; // msgpack "x"
    const OK_KEY: (u32, &str) = (1030, "app/ok");
    const MIGRATED_KEY: (u32, &str) = (1040, "app/migrated");
    let mut contract = WatContract::new()
        .data(110, version.as_bytes())
        .data(VALUE, b"\xa1x")
        .data(OK_KEY.0, OK_KEY.1.as_bytes())
        .data(MIGRATED_KEY.0, MIGRATED_KEY.1.as_bytes());
    let put = |offset: u32, len: usize| {
        format!(
            "(call $put (i32.const {offset}) (i32.const {len}) (i32.const {VALUE}) (i32.const 2) (i32.const 600))\n"
        )
    };
    let mut execute = String::new();
    let mut offset = 1100;
    for key in keys {
        contract = contract.data(offset, key.as_bytes());
        execute.push_str(&put(offset, key.len()));
        offset += key.len() as u32 + 1;
    }
    assert!(offset < 4096, "too many keys for the data area");
    execute.push_str(&put(OK_KEY.0, OK_KEY.1.len()));
    execute.push_str("(call $ok_empty)");
    let migrate = if failing_migrate {
        "(call $failed (i32.const 100) (i32.const 8))".to_string()
    } else {
        format!(
            "(call $put (i32.const {}) (i32.const {}) (local.get $vp) (local.get $vl) (i32.const 600))
             (call $ok_empty)",
            MIGRATED_KEY.0,
            MIGRATED_KEY.1.len()
        )
    };
    contract
        .body("execute", &execute)
        .body("migrate", &migrate)
        .build()
}

/// A single-node subnet driven by its creator (the sequencer). Further indexers may be
/// simulated by `cosigners`, whose acks every checkpoint collects.
pub struct Solo {
    /// The ledger.
    pub ledger: Ledger<SubnetMachine>,
    /// Checkpoint time of the next proposal.
    pub time: u64,
    /// Keys that ack every checkpoint (ignored by the ledger unless they are indexers).
    pub cosigners: Vec<Keypair>,
    _dir: tempfile::TempDir,
}

impl Default for Solo {
    fn default() -> Self {
        Self::new()
    }
}

impl Solo {
    /// A fresh subnet.
    pub fn new() -> Solo {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = open_node(dir.path(), Some(&creator()));
        Solo {
            ledger,
            time: 1_700_000_000_000,
            cosigners: Vec::new(),
            _dir: dir,
        }
    }

    /// Its id.
    pub fn id(&self) -> Hash32 {
        self.ledger.network()
    }

    /// A signer for this subnet.
    pub fn signer(&self, keypair: &Keypair) -> OpSigner {
        OpSigner::new(keypair.clone(), self.id())
    }

    /// The ledger's status.
    pub fn status(&self) -> LedgerStatus {
        self.ledger.status()
    }

    /// The height the next checkpoint will have.
    pub fn next_height(&self) -> u64 {
        self.ledger.status().latest_height + 1
    }

    /// An expiry comfortably in the future.
    pub fn expiry(&self) -> u64 {
        self.next_height() + 1_000
    }

    /// Appends `ops` in one entry of the creator's log and checkpoints it.
    pub fn apply(&mut self, ops: Vec<Vec<u8>>) {
        self.ledger.append(ops).expect("append");
        self.checkpoint();
    }

    /// The next entry of `keypair`'s log carrying `ops` (no causal heads).
    pub fn entry_as(&self, keypair: &Keypair, ops: Vec<Vec<u8>>) -> LogEntry {
        let (seq, prev) = self.ledger.log_head(&keypair.public());
        LogEntry::sign(keypair, &self.id(), seq, prev, Vec::new(), ops)
    }

    /// Feeds an entry of `keypair`'s log carrying `ops` (as if received from that writer) and
    /// checkpoints it.
    pub fn apply_as(&mut self, keypair: &Keypair, ops: Vec<Vec<u8>>) {
        let entry = self.entry_as(keypair, ops);
        self.ledger
            .handle(Message::Entry(entry))
            .expect("entry accepted");
        self.checkpoint();
    }

    /// Checkpoints what is stored, collects the cosigners' acks and checks the checkpoint is
    /// final.
    pub fn checkpoint(&mut self) {
        self.time += 1_000;
        let out = self.ledger.propose(self.time).expect("propose");
        let checkpoints: Vec<_> = out
            .into_iter()
            .filter_map(|m| match m {
                Message::Checkpoint(c) => Some(c),
                _ => None,
            })
            .collect();
        assert!(!checkpoints.is_empty(), "nothing to checkpoint");
        for checkpoint in &checkpoints {
            for cosigner in &self.cosigners {
                let ack = Ack::sign(cosigner, &self.id(), checkpoint);
                self.ledger.handle(Message::Ack(ack)).expect("ack");
            }
        }
        let status = self.ledger.status();
        assert_eq!(
            status.final_height, status.latest_height,
            "the checkpoint is not final: {status:?}"
        );
        assert_eq!(status.divergence, None);
    }

    /// A signed op by `keypair`.
    pub fn signed(&self, keypair: &Keypair, action: Action) -> Vec<u8> {
        self.signer(keypair).sign(action, self.expiry())
    }

    /// A signed op by the admin (the creator).
    pub fn admin(&self, action: Action) -> Vec<u8> {
        self.signed(&creator(), action)
    }

    /// A signed op by `keypair` with explicit nonce and expiry.
    pub fn signed_with(
        &self,
        keypair: &Keypair,
        action: Action,
        nonce: u64,
        expires: u64,
    ) -> Vec<u8> {
        signed_for(&self.id(), keypair, action, nonce, expires)
    }

    /// The `AddAdmin` op making the creator the admin.
    pub fn add_admin_op() -> Vec<u8> {
        encode_op(&SubnetOp::AddAdmin {
            key: creator().public(),
        })
    }

    /// The op trusting the tests' MSB indexer.
    pub fn trust_op(&self) -> Vec<u8> {
        self.admin(Action::SetMsbTrust {
            network: MSB_NETWORK,
            indexers: vec![msb_indexer().public()],
            scheme: SettlementScheme::Attested,
        })
    }

    /// The ops deploying `component`, signed by the admin.
    pub fn deploy(&self, component: &[u8]) -> Vec<Vec<u8>> {
        deploy_ops(&self.signer(&creator()), component, self.expiry())
    }

    /// The admin op, the MSB trust and the deployment of `component`, as the creator's node
    /// appends them when it creates a subnet.
    pub fn create_ops(&self, component: &[u8]) -> Vec<Vec<u8>> {
        let mut ops = vec![Self::add_admin_op(), self.trust_op()];
        ops.extend(self.deploy(component));
        ops
    }

    /// Creates the subnet with `component` as its app.
    pub fn create(&mut self, component: &[u8]) {
        let ops = self.create_ops(component);
        self.apply(ops);
    }

    /// The settlement of `function(args)` by `requester` in this subnet, with tx hash `tx`.
    pub fn settlement(
        &self,
        requester: &PublicKey,
        tx: Hash32,
        function: &str,
        args: &[u8],
    ) -> Settlement {
        settlement_for(&self.id(), requester, tx, function, args)
    }

    /// A settled tx op for `function(args)` by `requester`, with tx hash `tx`.
    pub fn tx(&self, requester: &PublicKey, tx: Hash32, function: &str, args: &[u8]) -> Vec<u8> {
        settled_tx(&self.id(), requester, tx, function, args)
    }

    /// A confirmed state value.
    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.ledger
            .read(true, |s| s.get(key.as_bytes()).expect("get"))
            .expect("read")
    }

    /// A confirmed value decoded as JSON.
    pub fn json(&mut self, key: &str) -> serde_json::Value {
        match self.get(key) {
            Some(bytes) => trac_host::codec::json::msgpack_to_json(&bytes).expect("json"),
            None => serde_json::Value::Null,
        }
    }

    /// The confirmed state, every record.
    pub fn state(&mut self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.ledger
            .read(true, |s| s.range(b"", None, usize::MAX).expect("range"))
            .expect("read")
            .into_iter()
            .collect()
    }

    /// The confirmed keys starting with `prefix`.
    pub fn keys_under(&mut self, prefix: &str) -> Vec<String> {
        self.state()
            .into_keys()
            .filter(|k| k.starts_with(prefix.as_bytes()))
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect()
    }

    /// The confirmed state root.
    pub fn root(&mut self) -> Hash32 {
        self.ledger.status().final_root
    }

    /// Applies `ops` in one entry of `writer`'s log (the creator's when `None`) and its own
    /// checkpoint, and asserts that every op reached the machine and that the rules refused
    /// them all: the state is unchanged but for the pruning of expired replay guards (which
    /// the first op of any checkpoint does, see [`changed_keys`]).
    pub fn assert_refused_by(&mut self, writer: Option<&Keypair>, ops: Vec<Vec<u8>>, what: &str) {
        let before = self.state();
        let status = self.status();
        let height = self.next_height();
        let count = ops.len() as u64;
        match writer {
            Some(writer) => self.apply_as(writer, ops),
            None => self.apply(ops),
        }
        let after = self.state();
        let now = self.status();
        assert_eq!(
            now.position,
            status.position + count,
            "{what}: the ops did not all reach the machine"
        );
        assert_eq!(now.skipped, status.skipped, "{what}: the entry was skipped");
        let changed = changed_keys(&before, &after, height);
        assert!(
            changed.is_empty(),
            "{what}: the op was not refused, it changed {changed:?}"
        );
    }

    /// [`Solo::assert_refused_by`] for one op in the creator's log.
    pub fn assert_refused(&mut self, op: Vec<u8>, what: &str) {
        self.assert_refused_by(None, vec![op], what);
    }

    /// Applies `op` in the creator's log and returns the keys it changed (pruning aside, see
    /// [`changed_keys`]), asserting it changed something.
    pub fn assert_accepted(&mut self, op: Vec<u8>, what: &str) -> Vec<String> {
        let before = self.state();
        let height = self.next_height();
        self.apply(vec![op]);
        let after = self.state();
        let changed = changed_keys(&before, &after, height);
        assert!(!changed.is_empty(), "{what}: the op changed nothing");
        changed
    }
}

/// Keys whose value differs between two states, except what pruning the replay guards
/// does when a checkpoint of `height` applies its first op: the prune mark, and the removal
/// of guards (`sh/<hash>` and their `sys/guard/<expiry>/<hash>` index) that expired before
/// `height`.
pub fn changed_keys(
    before: &BTreeMap<Vec<u8>, Vec<u8>>,
    after: &BTreeMap<Vec<u8>, Vec<u8>>,
    height: u64,
) -> Vec<String> {
    let pruned = |key: &[u8]| -> bool {
        if after.contains_key(key) {
            return false;
        }
        let text = String::from_utf8_lossy(key);
        if text.starts_with("sh/") {
            let expiry: Option<u64> = before.get(key).and_then(|v| rmp_serde::from_slice(v).ok());
            return expiry.is_some_and(|e| e < height);
        }
        text.strip_prefix(keys::GUARD_INDEX)
            .and_then(|rest| rest.split('/').next())
            .and_then(|digits| digits.parse::<u64>().ok())
            .is_some_and(|e| e < height)
    };
    let mut keys: Vec<&Vec<u8>> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| k.as_slice() != PRUNE_MARK.as_bytes() && before.get(*k) != after.get(*k))
        .filter(|k| !pruned(k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// A simulated network of subnet nodes with keys `key(1)..=key(n)` (node 0 is the creator),
/// each with its own machine and store.
pub fn subnet_sim(n: u8, net: NetConfig, seed: u64) -> Sim<SubnetMachine> {
    Sim::with_machines(
        genesis().id(),
        (1..=n).map(key).collect(),
        Box::new(|_| machine()),
        net,
        seed,
        LedgerLimits::default(),
    )
}
