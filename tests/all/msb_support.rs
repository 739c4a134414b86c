//! Support for MSB tests: a single-node MSB (the admin's node: sequencer, first indexer and
//! validator) over a real store, with entries of other writers fed to it as if received;
//! op builders, receipts, state readers, the supply invariant, and subnets trusting an MSB.

use std::collections::BTreeMap;

use tempfile::TempDir;
use trac_host::codec;
use trac_host::crypto::{Hash32, Keypair, PublicKey};
use trac_host::ledger::{Ack, Checkpoint, Ledger, LedgerLimits, LogEntry, Message};
use trac_host::msb::{
    self, Account, AdminAction, AdminOp, CompleteOp, Deployment, MsbGenesis, MsbMachine, MsbOp,
    PartialOp, Receipt, RefusalCode, Supply, TNK, UserAction, UserBody,
};
use trac_host::store::StateView;
use trac_host::subnet::{Action, SettlementScheme, SubnetOp, TxOp, encode_op};

use crate::subnet_support::{Solo, key, open_store};

/// The admin of every test MSB (the MSB node's key).
pub fn admin_key() -> Keypair {
    key(100)
}

/// The peer address funded at genesis (1,000 TNK on a dev network).
pub fn peer_key() -> Keypair {
    key(101)
}

/// A dev genesis with a fixed salt (reproducible network ids).
pub fn dev_genesis(faucet: Option<u128>) -> MsbGenesis {
    MsbGenesis {
        salt: [0x5b; 16],
        ..MsbGenesis::dev(admin_key().public(), peer_key().public(), faucet)
    }
}

/// A dev genesis that also funds the admin with `admin_funds` (admin actions cost it a fee).
pub fn funded_genesis(admin_funds: u128, faucet: Option<u128>) -> MsbGenesis {
    let mut genesis = dev_genesis(faucet);
    genesis.funds.push((admin_key().public(), admin_funds));
    genesis
}

/// Decodes a stored receipt.
pub fn decode_receipt(bytes: &[u8]) -> Receipt {
    codec::decode(bytes).expect("receipt decodes")
}

/// The refusal code of a receipt, if the op was refused.
pub fn code(receipt: &Receipt) -> Option<RefusalCode> {
    receipt.error.as_ref().map(|e| e.code)
}

/// Σ(balance + staked) over every `acct/` record of `state`.
pub fn holdings(state: &dyn StateView) -> u128 {
    state
        .range(b"acct/", Some(b"acct0"), usize::MAX)
        .expect("range")
        .iter()
        .map(|(_, value)| {
            let account: Account = codec::decode(value).expect("account decodes");
            account.balance + account.staked
        })
        .sum()
}

/// A single-node MSB run by the admin's node. Other writers' entries are signed here and fed
/// to it as if received; `cosigners` ack every checkpoint (counted while they are indexers).
pub struct Msb {
    /// The ledger (the admin's node).
    pub ledger: Ledger<MsbMachine>,
    /// The admin (sequencer).
    pub admin: Keypair,
    /// The peer funded at genesis.
    pub peer: Keypair,
    /// Keys that ack every checkpoint proposed through [`Msb::propose`].
    pub cosigners: Vec<Keypair>,
    /// Checkpoint time of the next proposal.
    pub time: u64,
    nonce: u64,
    _dir: TempDir,
}

impl Msb {
    /// A dev MSB ([`dev_genesis`]).
    pub fn dev(faucet: Option<u128>) -> Msb {
        Msb::open(dev_genesis(faucet))
    }

    /// An MSB of `genesis`, whose admin must be [`admin_key`].
    pub fn open(genesis: MsbGenesis) -> Msb {
        let admin = admin_key();
        assert_eq!(genesis.admin, admin.public(), "the test MSB's admin");
        let dir = tempfile::tempdir().expect("tempdir");
        let network = genesis.id();
        let ledger = Ledger::open(
            open_store(dir.path()),
            MsbMachine::new(genesis),
            network,
            Some(admin.clone()),
            LedgerLimits::default(),
        )
        .expect("open MSB ledger");
        Msb {
            ledger,
            admin,
            peer: peer_key(),
            cosigners: Vec::new(),
            time: 1_700_000_000_000,
            nonce: 0,
            _dir: dir,
        }
    }

    /// The network id.
    pub fn network(&self) -> Hash32 {
        self.ledger.network()
    }

    /// The height the next checkpoint will have.
    pub fn next_height(&self) -> u64 {
        self.ledger.status().latest_height + 1
    }

    /// An expiry comfortably in the future.
    pub fn expiry(&self) -> u64 {
        self.next_height() + 1_000
    }

    /// A fresh nonce.
    pub fn nonce(&mut self) -> u64 {
        self.nonce += 1;
        self.nonce
    }

    /// A body of `requester` asking for `action`, with a fresh nonce and [`Msb::expiry`].
    pub fn body(&mut self, requester: &Keypair, action: UserAction) -> UserBody {
        UserBody {
            action,
            requester: requester.public(),
            nonce: self.nonce(),
            expires: self.expiry(),
        }
    }

    /// `requester`'s signed request for `action`.
    pub fn partial(&mut self, requester: &Keypair, action: UserAction) -> PartialOp {
        let body = self.body(requester, action);
        PartialOp::sign(requester, &self.network(), body)
    }

    /// `requester`'s request for `action`, completed by `validator`.
    pub fn complete(
        &mut self,
        requester: &Keypair,
        validator: &Keypair,
        action: UserAction,
    ) -> CompleteOp {
        let network = self.network();
        self.partial(requester, action)
            .complete(validator, &network)
    }

    /// The encoded user op of `requester` for `action`, completed by `validator`.
    pub fn user(
        &mut self,
        requester: &Keypair,
        validator: &Keypair,
        action: UserAction,
    ) -> Vec<u8> {
        encode_user(self.complete(requester, validator, action))
    }

    /// The encoded transfer of `amount` from `from` to `to`, completed by `validator`.
    pub fn transfer(
        &mut self,
        from: &Keypair,
        validator: &Keypair,
        to: &PublicKey,
        amount: u128,
    ) -> Vec<u8> {
        self.user(from, validator, UserAction::Transfer { to: *to, amount })
    }

    /// An admin op signed by `signer` with a fresh nonce and [`Msb::expiry`].
    pub fn admin_signed_by(&mut self, signer: &Keypair, action: AdminAction) -> AdminOp {
        let (nonce, expires) = (self.nonce(), self.expiry());
        AdminOp::sign(signer, &self.network(), action, nonce, expires)
    }

    /// The encoded admin op for `action`, signed by the admin.
    pub fn admin_op(&mut self, action: AdminAction) -> Vec<u8> {
        let admin = self.admin.clone();
        encode_admin(self.admin_signed_by(&admin, action))
    }

    /// The entry of `writer`'s log carrying `ops` (next in its log at this node, no heads).
    pub fn entry_as(&self, writer: &Keypair, ops: Vec<Vec<u8>>) -> LogEntry {
        let (seq, prev) = self.ledger.log_head(&writer.public());
        LogEntry::sign(writer, &self.network(), seq, prev, Vec::new(), ops)
    }

    /// Stores an entry of `writer`'s log carrying `ops`: appended when `writer` is the admin,
    /// fed as a received entry otherwise. Nothing is checkpointed.
    pub fn feed_as(&mut self, writer: &Keypair, ops: Vec<Vec<u8>>) {
        if writer.public() == self.admin.public() {
            self.ledger.append(ops).expect("append");
        } else {
            let entry = self.entry_as(writer, ops);
            self.ledger
                .handle(Message::Entry(entry))
                .expect("entry accepted");
        }
    }

    /// Proposes a checkpoint of what is stored and hands it the cosigners' acks; returns the
    /// checkpoints proposed (none if there was nothing to include).
    pub fn propose(&mut self) -> Vec<Checkpoint> {
        self.time += 1_000;
        let out = self.ledger.propose(self.time).expect("propose");
        let network = self.network();
        let checkpoints: Vec<Checkpoint> = out
            .into_iter()
            .filter_map(|m| match m {
                Message::Checkpoint(c) => Some(c),
                _ => None,
            })
            .collect();
        for checkpoint in &checkpoints {
            for cosigner in &self.cosigners {
                let ack = Ack::sign(cosigner, &network, checkpoint);
                self.ledger.handle(Message::Ack(ack)).expect("ack");
            }
        }
        checkpoints
    }

    /// Checkpoints what is stored, asserts the checkpoint is final and returns the receipts
    /// of the checkpoints that became final.
    pub fn checkpoint(&mut self) -> Vec<Receipt> {
        let before = self.ledger.status().final_height;
        assert!(!self.propose().is_empty(), "nothing to checkpoint");
        let status = self.ledger.status();
        assert_eq!(
            status.final_height, status.latest_height,
            "the checkpoint is not final: {status:?}"
        );
        assert_eq!(status.divergence, None);
        (before + 1..=status.final_height)
            .flat_map(|h| self.receipts(h))
            .collect()
    }

    /// The receipts of the final checkpoint at `height`.
    pub fn receipts(&self, height: u64) -> Vec<Receipt> {
        self.ledger
            .receipts(height)
            .expect("receipts")
            .iter()
            .map(|r| decode_receipt(r))
            .collect()
    }

    /// Appends `ops` in one entry of the admin's log, checkpoints it; returns the receipts.
    pub fn apply(&mut self, ops: Vec<Vec<u8>>) -> Vec<Receipt> {
        let admin = self.admin.clone();
        self.apply_as(&admin, ops)
    }

    /// Stores `ops` in one entry of `writer`'s log and checkpoints it; returns the receipts.
    pub fn apply_as(&mut self, writer: &Keypair, ops: Vec<Vec<u8>>) -> Vec<Receipt> {
        self.feed_as(writer, ops);
        self.checkpoint()
    }

    /// Applies one op in the admin's log and asserts it was accepted; returns its receipt.
    #[track_caller]
    pub fn accept(&mut self, op: Vec<u8>, what: &str) -> Receipt {
        let admin = self.admin.clone();
        self.accept_as(&admin, op, what)
    }

    /// Applies one op in `writer`'s log and asserts it was accepted; returns its receipt.
    #[track_caller]
    pub fn accept_as(&mut self, writer: &Keypair, op: Vec<u8>, what: &str) -> Receipt {
        let receipts = self.apply_as(writer, vec![op]);
        assert_eq!(receipts.len(), 1, "{what}: one receipt expected");
        let receipt = receipts.into_iter().next().expect("one receipt");
        assert_eq!(receipt.error, None, "{what}: refused");
        receipt
    }

    /// Applies `op` in one entry of `writer`'s log and asserts that the rules refused it with
    /// `code`, its receipt says so and charges nothing, and the confirmed state is exactly as
    /// before. Returns the receipt.
    #[track_caller]
    pub fn refuse_as(
        &mut self,
        writer: &Keypair,
        op: Vec<u8>,
        expected: RefusalCode,
        what: &str,
    ) -> Receipt {
        let before = self.state();
        let position = self.ledger.status().position;
        let receipts = self.apply_as(writer, vec![op]);
        assert_eq!(
            self.ledger.status().position,
            position + 1,
            "{what}: the op did not reach the machine"
        );
        assert_eq!(receipts.len(), 1, "{what}: one receipt expected");
        let receipt = receipts.into_iter().next().expect("one receipt");
        assert_eq!(code(&receipt), Some(expected), "{what}: {receipt:?}");
        assert_eq!(receipt.fee, 0, "{what}: a refused op pays no fee");
        assert_eq!(
            self.state(),
            before,
            "{what}: a refused op changed the state"
        );
        receipt
    }

    /// [`Msb::refuse_as`] in the admin's log.
    #[track_caller]
    pub fn refuse(&mut self, op: Vec<u8>, expected: RefusalCode, what: &str) -> Receipt {
        let admin = self.admin.clone();
        self.refuse_as(&admin, op, expected, what)
    }

    /// The confirmed state, every record.
    pub fn state(&mut self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.ledger
            .read(true, |s| s.range(b"", None, usize::MAX).expect("range"))
            .expect("read")
            .into_iter()
            .collect()
    }

    /// The confirmed account of `key`.
    pub fn account(&mut self, key: &PublicKey) -> Account {
        self.ledger
            .read(true, |s| msb::account(s, key))
            .expect("read")
            .expect("account")
    }

    /// Whether `key` has an account record (confirmed).
    pub fn has_account(&mut self, key: &PublicKey) -> bool {
        let record = msb::keys::account(key);
        self.ledger
            .read(true, |s| s.get(&record).expect("get").is_some())
            .expect("read")
    }

    /// The confirmed balance of `key`.
    pub fn balance(&mut self, key: &PublicKey) -> u128 {
        self.account(key).balance
    }

    /// The confirmed supply totals.
    pub fn supply(&mut self) -> Supply {
        self.ledger
            .read(true, |s| msb::supply(s))
            .expect("read")
            .expect("supply")
    }

    /// The confirmed indexer set, sequencer first.
    pub fn indexers(&mut self) -> Vec<PublicKey> {
        self.ledger
            .read(true, |s| msb::indexer_set(s))
            .expect("read")
            .expect("indexers")
    }

    /// Whether `key` is a writer of the MSB log (confirmed).
    pub fn is_writer(&mut self, key: &PublicKey) -> bool {
        let record = msb::keys::writer(key);
        self.ledger
            .read(true, |s| s.get(&record).expect("get").is_some())
            .expect("read")
    }

    /// The confirmed registration of `subnet`.
    pub fn deployment(&mut self, subnet: &Hash32) -> Option<Deployment> {
        self.ledger
            .read(true, |s| msb::deployment(s, subnet))
            .expect("read")
            .expect("deployment")
    }

    /// Whether the op `tx_hash` is applied (confirmed).
    pub fn applied(&mut self, tx_hash: &Hash32) -> bool {
        self.ledger
            .read(true, |s| msb::tx_location(s, tx_hash))
            .expect("read")
            .expect("location")
            .is_some()
    }

    /// Checks Σ(balance + staked) + burned == minted in the confirmed state.
    #[track_caller]
    pub fn assert_supply_conserved(&mut self) {
        let (total, supply) = self
            .ledger
            .read(true, |s| (holdings(s), msb::supply(s).expect("supply")))
            .expect("read");
        assert_eq!(
            total + supply.burned,
            supply.minted,
            "holdings {total} + burned {} != minted {}",
            supply.burned,
            supply.minted
        );
    }

    /// Gives `to` `amount` from the genesis peer (validated by the admin).
    pub fn fund(&mut self, to: &PublicKey, amount: u128) {
        let peer = self.peer.clone();
        let admin = self.admin.clone();
        let op = self.transfer(&peer, &admin, to, amount);
        self.accept(op, "funding");
    }

    /// Makes `who` a validator: funds it with 1 TNK, whitelists it and has it join
    /// (validated by the admin).
    pub fn make_validator(&mut self, who: &Keypair) {
        self.fund(&who.public(), TNK);
        let whitelist = self.admin_op(AdminAction::Whitelist {
            account: who.public(),
        });
        self.accept(whitelist, "whitelist");
        let admin = self.admin.clone();
        let join = self.user(who, &admin, UserAction::JoinValidators);
        self.accept(join, "join the validators");
    }

    /// Registers `subnet` with `deployer` as its deployer, validated by `validator` (whose log
    /// appends it).
    pub fn deploy(&mut self, deployer: &Keypair, validator: &Keypair, subnet: Hash32) -> Receipt {
        let op = self.user(
            deployer,
            validator,
            UserAction::DeploySubnet {
                subnet,
                channel: "test-channel".into(),
            },
        );
        self.accept_as(validator, op, "deploy subnet")
    }
}

/// The encoded user op of `requester` for `action` on MSB `network`, completed by
/// `validator` (for ledgers other than an [`Msb`]'s).
pub fn user_op(
    network: &Hash32,
    requester: &Keypair,
    validator: &Keypair,
    action: UserAction,
    nonce: u64,
    expires: u64,
) -> Vec<u8> {
    let body = UserBody {
        action,
        requester: requester.public(),
        nonce,
        expires,
    };
    encode_user(PartialOp::sign(requester, network, body).complete(validator, network))
}

/// The encoded admin op for `action` on MSB `network`, signed by `admin`.
pub fn admin_op_of(
    network: &Hash32,
    admin: &Keypair,
    action: AdminAction,
    nonce: u64,
    expires: u64,
) -> Vec<u8> {
    encode_admin(AdminOp::sign(admin, network, action, nonce, expires))
}

/// Encodes a user op for the MSB log.
pub fn encode_user(op: CompleteOp) -> Vec<u8> {
    msb::ops::encode_op(&MsbOp::User(op))
}

/// Encodes an admin op for the MSB log.
pub fn encode_admin(op: AdminOp) -> Vec<u8> {
    msb::ops::encode_op(&MsbOp::Admin(op))
}

/// Encodes a faucet grant to `to`.
pub fn faucet(to: &PublicKey) -> Vec<u8> {
    msb::ops::encode_op(&MsbOp::Faucet { to: *to })
}

/// The MSB `Tx` action settling `function(args)` in `subnet`.
pub fn tx_action(subnet: &Hash32, function: &str, args: &[u8]) -> UserAction {
    UserAction::Tx {
        subnet: *subnet,
        content: TxOp::content_hash(subnet, function, args),
    }
}

/// A subnet (admin: its creator) trusting the MSB `network` with `indexers`, by proofs over
/// final checkpoints.
pub fn trusting_subnet(network: Hash32, indexers: Vec<PublicKey>) -> Solo {
    let mut solo = Solo::new();
    let trust = solo.admin(Action::SetMsbTrust {
        network,
        indexers,
        scheme: SettlementScheme::Checkpointed,
    });
    solo.apply(vec![Solo::add_admin_op(), trust]);
    solo
}

/// The subnet op relaying an MSB indexer change with its proof.
pub fn indexer_change_op(proof: Vec<u8>) -> Vec<u8> {
    encode_op(&SubnetOp::MsbIndexerChange {
        proof: serde_bytes::ByteBuf::from(proof),
    })
}
