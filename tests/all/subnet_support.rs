//! Support for subnet tests: a subnet node (ledger + subnet machine) in a temp dir, op
//! builders, and state readers.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use trac_host::crypto::{Hash32, Keypair, PublicKey};
use trac_host::ledger::{Ledger, LedgerLimits, Message};
use trac_host::runtime::{Runtime, RuntimeConfig};
use trac_host::store::{Store, StoreOptions};
use trac_host::subnet::ops::deploy_ops;
use trac_host::subnet::{
    Action, Attestation, OpSigner, Settlement, SubnetGenesis, SubnetMachine, SubnetOp, TxOp,
    encode_op,
};

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

/// The genesis every test subnet uses (creator = key 1).
pub fn genesis() -> SubnetGenesis {
    SubnetGenesis {
        creator: key(1).public(),
        channel: "test-subnet".into(),
        salt: [7; 16],
    }
}

/// The MSB network id of the tests.
pub const MSB_NETWORK: Hash32 = Hash32([0x4d; 32]);

/// The MSB indexer whose attestations the test subnets trust.
pub fn msb_indexer() -> Keypair {
    key(200)
}

/// Opens a subnet node in `dir` with `keypair` as its writer key.
pub fn open_node(dir: &Path, keypair: Option<&Keypair>) -> Ledger<SubnetMachine> {
    let store = Arc::new(
        Store::open(
            dir,
            StoreOptions {
                map_size: 1 << 30,
                sync: false,
            },
        )
        .expect("open store"),
    );
    let genesis = genesis();
    let id = genesis.id();
    let machine = SubnetMachine::standard(genesis, runtime());
    Ledger::open(
        store,
        machine,
        id,
        keypair.cloned(),
        LedgerLimits::default(),
    )
    .expect("open")
}

/// A single-node subnet driven by its creator (who is the only indexer).
pub struct Solo {
    /// The ledger.
    pub ledger: Ledger<SubnetMachine>,
    /// Checkpoint time of the next proposal.
    pub time: u64,
    _dir: tempfile::TempDir,
}

impl Solo {
    /// A fresh subnet.
    pub fn new() -> Solo {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = open_node(dir.path(), Some(&key(1)));
        Solo {
            ledger,
            time: 1_700_000_000_000,
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

    /// The height the next checkpoint will have.
    pub fn next_height(&self) -> u64 {
        self.ledger.status().latest_height + 1
    }

    /// An expiry comfortably in the future.
    pub fn expiry(&self) -> u64 {
        self.next_height() + 1_000
    }

    /// Appends `ops` in one entry and checkpoints it (final at once: one indexer).
    pub fn apply(&mut self, ops: Vec<Vec<u8>>) {
        self.ledger.append(ops).expect("append");
        self.checkpoint();
    }

    /// Checkpoints what is appended.
    pub fn checkpoint(&mut self) {
        self.time += 1_000;
        let out = self.ledger.propose(self.time).expect("propose");
        assert!(
            out.iter().any(|m| matches!(m, Message::Checkpoint(_))),
            "nothing to checkpoint"
        );
    }

    /// A signed op by `keypair`.
    pub fn signed(&self, keypair: &Keypair, action: Action) -> Vec<u8> {
        self.signer(keypair).sign(action, self.expiry())
    }

    /// The admin op, the MSB trust and the deployment of `component`, as the creator's node
    /// appends them when it creates a subnet.
    pub fn create_ops(&self, component: &[u8]) -> Vec<Vec<u8>> {
        let admin = key(1);
        let mut ops = vec![encode_op(&SubnetOp::AddAdmin {
            key: admin.public(),
        })];
        ops.push(self.signed(
            &admin,
            Action::SetMsbTrust {
                network: MSB_NETWORK,
                indexers: vec![msb_indexer().public()],
            },
        ));
        ops.extend(deploy_ops(&self.signer(&admin), component, self.expiry()));
        ops
    }

    /// Creates the subnet with `component` as its app.
    pub fn create(&mut self, component: &[u8]) {
        let ops = self.create_ops(component);
        self.apply(ops);
    }

    /// A settled tx op for `function(args)` by `requester`, with tx hash `tx`.
    pub fn tx(&self, requester: &PublicKey, tx: Hash32, function: &str, args: &[u8]) -> Vec<u8> {
        let settlement = Settlement {
            tx_hash: tx,
            requester: *requester,
            validator: key(201).public(),
            subnet: self.id(),
            content: TxOp::content_hash(&self.id(), function, args),
        };
        encode_op(&SubnetOp::Tx(TxOp {
            function: function.into(),
            args: serde_bytes::ByteBuf::from(args.to_vec()),
            settlement: serde_bytes::ByteBuf::from(Attestation::sign(
                &msb_indexer(),
                &MSB_NETWORK,
                settlement,
            )),
        }))
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

    /// The confirmed state root.
    pub fn root(&mut self) -> Hash32 {
        self.ledger.status().final_root
    }
}
