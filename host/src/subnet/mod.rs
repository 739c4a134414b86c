//! The subnet: an app's multi-writer log applied to key/value state by the system rules
//! (admin, writers and indexers, auto-add, chat, features, transactions switch) and by the
//! app's contract (docs/protocol.md, "Subnet").
//!
//! - [`ops`]: what writers append: signed system actions, contract chunks, settled txs;
//! - [`keys`]: the system keyspace and the reserved list contracts cannot write;
//! - [`SubnetMachine`]: the [`crate::ledger::StateMachine`] applying them;
//! - [`settlement`]: how a tx proves it was settled on MSB;
//! - [`logfile`]: exporting and importing a subnet's log;
//! - [`replay`]: rebuilding state from the log alone and checking every checkpoint's root.

mod chat;
mod contract;
pub mod keys;
pub mod logfile;
mod machine;
pub mod ops;
pub mod replay;
pub mod settlement;
mod values;

use serde::{Deserialize, Serialize};

pub use contract::{ContractRecord, DeployRecord, TraceRead, TxRecord, TxTrace};
pub use machine::SubnetMachine;
pub use ops::{Action, OpSigner, Params, SignedOp, SubnetOp, TxOp, decode_op, encode_op};
pub use settlement::{
    Attestation, AttestationVerifier, IndexerChange, MsbTrust, Settlement, SettlementScheme,
    SettlementVerifier, Trust, TrustCache,
};
pub use values::ChatMessage;

use crate::crypto::{Domain, DomainKind, Hash32, PublicKey};

/// Longest subnet channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 128;

/// What defines a subnet: its creator, channel and a random salt. Its hash is the subnet id
/// (the "subnet bootstrap" users share), so re-creating a subnet never reuses an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetGenesis {
    /// The creator: first writer, indexer and sequencer, and the only key that can set the
    /// first admin.
    pub creator: PublicKey,
    /// The channel name (1 to 128 bytes).
    pub channel: String,
    /// 16 random bytes.
    pub salt: [u8; 16],
}

impl SubnetGenesis {
    /// A new genesis with a random salt.
    pub fn new(creator: PublicKey, channel: impl Into<String>) -> Self {
        SubnetGenesis {
            creator,
            channel: channel.into(),
            salt: rand::random(),
        }
    }

    /// The subnet id: BLAKE3(domain(subnet-id, 0) ‖ creator ‖ channel ‖ salt).
    pub fn id(&self) -> Hash32 {
        let mut hasher = Domain::global(DomainKind::SubnetId).hasher();
        hasher.update(self.creator.as_bytes());
        hasher.update(self.channel.as_bytes());
        hasher.update(&self.salt);
        Hash32(*hasher.finalize().as_bytes())
    }

    /// Checks the channel name.
    pub fn check(&self) -> Result<(), String> {
        if self.channel.is_empty()
            || self.channel.len() > MAX_CHANNEL_BYTES
            || self.channel.chars().any(char::is_control)
        {
            return Err(format!(
                "subnet channel must be 1 to {MAX_CHANNEL_BYTES} bytes without control characters"
            ));
        }
        Ok(())
    }
}
