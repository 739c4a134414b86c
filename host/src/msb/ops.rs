//! MSB operations (docs/protocol.md, "MSB").
//!
//! User operations are double-signed: the requester signs the [`UserBody`] (its hash is the
//! transaction hash), a validator checks it, co-signs `(tx hash, validator)` and appends the
//! [`CompleteOp`] to its own log — the appending writer must be that validator. Admin
//! operations are signed by the admin key. Everything is scoped to the MSB network id.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::crypto::{Domain, DomainKind, Hash32, Keypair, PublicKey, Signature};

/// Format version of MSB ops.
pub const OP_VERSION: u8 = 1;

/// 1 TNK in base units.
pub const TNK: u128 = 1_000_000_000_000_000_000;

/// The flat fee of every user operation: 0.03 TNK.
pub const FEE: u128 = 30_000_000_000_000_000;

/// The stake a validator locks: 10 × FEE = 0.3 TNK.
pub const STAKE: u128 = 10 * FEE;

/// Longest subnet channel name.
pub const MAX_CHANNEL_BYTES: usize = 128;

/// An op with its format version, as stored in a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`OP_VERSION`].
    pub version: u8,
    /// The op.
    pub op: MsbOp,
}

/// The ops of the MSB log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsbOp {
    /// A user operation completed by the validator that appends it.
    User(CompleteOp),
    /// An operation of the admin.
    Admin(AdminOp),
    /// Funds a newly seen peer once from the faucet (dev networks with a faucet; appended by
    /// the admin's own log).
    Faucet {
        /// The peer.
        to: PublicKey,
    },
}

/// What a requester asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserAction {
    /// Moves `amount` to `to` (the fee comes on top).
    Transfer {
        /// The recipient.
        to: PublicKey,
        /// Base units.
        #[serde(with = "codec::be_u128")]
        amount: u128,
    },
    /// Registers a subnet; the requester becomes its deployer (first come, first served).
    DeploySubnet {
        /// The subnet id.
        subnet: Hash32,
        /// Its channel name.
        channel: String,
    },
    /// Settles a contract transaction of a deployed subnet.
    Tx {
        /// The subnet id.
        subnet: Hash32,
        /// The call's content hash (`subnet::TxOp::content_hash`).
        content: Hash32,
    },
    /// A whitelisted account joins the validators, locking [`STAKE`].
    JoinValidators,
    /// A validator leaves, getting its stake back.
    LeaveValidators,
}

impl UserAction {
    /// The action's name.
    pub fn name(&self) -> &'static str {
        match self {
            UserAction::Transfer { .. } => "transfer",
            UserAction::DeploySubnet { .. } => "deploySubnet",
            UserAction::Tx { .. } => "tx",
            UserAction::JoinValidators => "joinValidators",
            UserAction::LeaveValidators => "leaveValidators",
        }
    }
}

/// The part of a user operation the requester signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBody {
    /// What is asked.
    pub action: UserAction,
    /// Who asks and pays.
    pub requester: PublicKey,
    /// Makes otherwise identical operations distinct.
    pub nonce: u64,
    /// Last MSB checkpoint height at which it may apply.
    pub expires: u64,
}

impl UserBody {
    /// The transaction hash: BLAKE3(domain(msb-op, network) ‖ encode(("user", body))).
    pub fn tx_hash(&self, network: &Hash32) -> Hash32 {
        Domain::new(DomainKind::MsbOp, *network).hash(&codec::encode(&("user", self)))
    }
}

/// A user operation signed by its requester, before a validator completes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialOp {
    /// The body.
    pub body: UserBody,
    /// The requester's signature of the tx hash.
    pub requester_sig: Signature,
}

impl PartialOp {
    /// Signs `body` (the requester must be `keypair`).
    pub fn sign(keypair: &Keypair, network: &Hash32, body: UserBody) -> Self {
        PartialOp {
            requester_sig: keypair.sign_hash(&body.tx_hash(network)),
            body,
        }
    }

    /// The hash a validator signs: BLAKE3(domain(msb-op, network) ‖ encode(("validate", tx
    /// hash, validator))).
    pub fn validation_hash(network: &Hash32, tx_hash: &Hash32, validator: &PublicKey) -> Hash32 {
        Domain::new(DomainKind::MsbOp, *network)
            .hash(&codec::encode(&("validate", tx_hash, validator)))
    }

    /// Completes the op as `validator`.
    pub fn complete(self, validator: &Keypair, network: &Hash32) -> CompleteOp {
        let tx_hash = self.body.tx_hash(network);
        let validator_key = validator.public();
        CompleteOp {
            validator_sig: validator.sign_hash(&Self::validation_hash(
                network,
                &tx_hash,
                &validator_key,
            )),
            validator: validator_key,
            body: self.body,
            requester_sig: self.requester_sig,
        }
    }
}

/// A user operation co-signed by a validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteOp {
    /// The body.
    pub body: UserBody,
    /// The requester's signature of the tx hash.
    pub requester_sig: Signature,
    /// The validator.
    pub validator: PublicKey,
    /// The validator's signature of the validation hash.
    pub validator_sig: Signature,
}

/// What the admin does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminAction {
    /// Whitelists an account (allowed to join the validators).
    Whitelist {
        /// The account.
        account: PublicKey,
    },
    /// Makes a validator an indexer.
    AddIndexer {
        /// The validator.
        key: PublicKey,
    },
    /// Makes an indexer a validator again (never the last indexer).
    RemoveIndexer {
        /// The indexer.
        key: PublicKey,
    },
    /// Removes a validator (its stake returns to its balance) and its whitelisting.
    RemoveValidator {
        /// The validator.
        key: PublicKey,
    },
}

impl AdminAction {
    /// The action's name.
    pub fn name(&self) -> &'static str {
        match self {
            AdminAction::Whitelist { .. } => "whitelist",
            AdminAction::AddIndexer { .. } => "addIndexer",
            AdminAction::RemoveIndexer { .. } => "removeIndexer",
            AdminAction::RemoveValidator { .. } => "removeValidator",
        }
    }
}

/// An admin operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOp {
    /// What is done.
    pub action: AdminAction,
    /// Makes otherwise identical operations distinct.
    pub nonce: u64,
    /// Last height at which it may apply.
    pub expires: u64,
    /// The admin's signature of [`AdminOp::hash`].
    pub signature: Signature,
}

impl AdminOp {
    /// BLAKE3(domain(msb-op, network) ‖ encode(("admin", action, nonce, expires))): what the
    /// admin signs, and the op's tx hash.
    pub fn signed_hash(network: &Hash32, action: &AdminAction, nonce: u64, expires: u64) -> Hash32 {
        Domain::new(DomainKind::MsbOp, *network)
            .hash(&codec::encode(&("admin", action, nonce, expires)))
    }

    /// Signs `action` as the admin.
    pub fn sign(
        admin: &Keypair,
        network: &Hash32,
        action: AdminAction,
        nonce: u64,
        expires: u64,
    ) -> Self {
        let hash = Self::signed_hash(network, &action, nonce, expires);
        AdminOp {
            signature: admin.sign_hash(&hash),
            action,
            nonce,
            expires,
        }
    }

    /// This op's hash.
    pub fn hash(&self, network: &Hash32) -> Hash32 {
        Self::signed_hash(network, &self.action, self.nonce, self.expires)
    }
}

/// Encodes an op for a log.
pub fn encode_op(op: &MsbOp) -> Vec<u8> {
    codec::encode(&Envelope {
        version: OP_VERSION,
        op: op.clone(),
    })
}

/// Decodes an op (strict canonical decoding, version checked).
pub fn decode_op(bytes: &[u8]) -> Result<MsbOp, String> {
    let envelope: Envelope = codec::decode(bytes).map_err(|e| e.to_string())?;
    if envelope.version != OP_VERSION {
        return Err(format!(
            "MSB op format version {} (this node speaks {OP_VERSION})",
            envelope.version
        ));
    }
    Ok(envelope.op)
}

/// Formats base units as TNK with up to 18 decimals (`0.03`, `1000`).
pub fn format_amount(amount: u128) -> String {
    let whole = amount / TNK;
    let frac = amount % TNK;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:018}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a TNK amount with up to 18 decimals (`"0.5"`, `"12"`) into base units.
pub fn parse_amount(text: &str) -> Result<u128, String> {
    let text = text.trim();
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits_ok(whole) || !digits_ok(frac) {
        return Err(format!(
            "{text:?} is not an amount (digits with up to 18 decimals)"
        ));
    }
    if frac.len() > 18 {
        return Err(format!("{text:?} has more than 18 decimals"));
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?
    };
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<18}")
            .parse()
            .map_err(|_| format!("{text:?} is not an amount"))?
    };
    whole
        .checked_mul(TNK)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(|| format!("{text:?} is too large"))
}
