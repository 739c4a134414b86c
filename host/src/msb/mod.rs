//! MSB, the settlement layer (docs/protocol.md, "MSB"): accounts with TNK balances and roles,
//! the flat fee and its distribution, transfers, validators with stake, indexers, the subnet
//! registry and the settlement of subnet contract transactions, on the ledger engine.
//!
//! - [`ops`]: the operations (double-signed user ops, admin ops, faucet grants);
//! - [`MsbMachine`]: the state machine applying them, one receipt per op (the checkpoint's
//!   receipts root commits to them, which settlement proofs use).

mod machine;
pub mod ops;
pub mod proof;
pub mod validator;

use serde::{Deserialize, Serialize};

pub use machine::{
    Account, Deployment, MsbMachine, ROLE_ADMIN, ROLE_INDEXER, ROLE_VALIDATOR, ROLE_WHITELISTED,
    Refusal, RefusalCode, Supply, TxLocation, account, admin, deployment, indexer_set, keys,
    supply, tx_location,
};
pub use ops::{
    AdminAction, AdminOp, CompleteOp, FEE, MsbOp, PartialOp, STAKE, TNK, UserAction, UserBody,
};
pub use proof::{ProofError, ProofVerifier, SettlementProof, StandardVerifier};
pub use validator::{Rejection, SubmitError, Validator};

use crate::codec;
use crate::crypto::{Domain, DomainKind, Hash32, PublicKey};

/// What defines an MSB network: its admin (first indexer, validator and sequencer), a salt,
/// the genesis funds and the faucet grant (dev networks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsbGenesis {
    /// The admin: the MSB node's key.
    pub admin: PublicKey,
    /// 16 random bytes.
    pub salt: [u8; 16],
    /// Accounts funded at genesis, base units.
    pub funds: Vec<(PublicKey, u128)>,
    /// What the faucet grants each newly seen peer once, if the network has a faucet.
    pub faucet: Option<u128>,
}

impl MsbGenesis {
    /// The network id: BLAKE3(domain(msb-network, 0³²) ‖ encode(genesis)).
    pub fn id(&self) -> Hash32 {
        Domain::global(DomainKind::MsbNetwork).hash(&codec::encode(self))
    }

    /// A dev network: `admin` is the MSB node's key; `peer` (the admin's peer address) gets
    /// 1,000 TNK; the faucet, when set, grants each new peer that much once.
    pub fn dev(admin: PublicKey, peer: PublicKey, faucet: Option<u128>) -> Self {
        MsbGenesis {
            admin,
            salt: rand::random(),
            funds: vec![(peer, 1_000 * TNK)],
            faucet,
        }
    }
}

/// What applying an MSB op produced; the leaves of a checkpoint's receipts root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The op's tx hash.
    pub tx_hash: Hash32,
    /// The op's kind (`transfer`, `tx`, …, `malformed`).
    pub kind: String,
    /// The requester (user ops) or the funded peer (faucet).
    pub requester: Option<PublicKey>,
    /// The validator (user ops).
    pub validator: Option<PublicKey>,
    /// The fee paid, base units.
    #[serde(with = "codec::be_u128")]
    pub fee: u128,
    /// Why the op was refused (nothing changed), if it was.
    pub error: Option<Refusal>,
}
