//! Domain separation (docs/protocol.md, "Domains").
//!
//! Every hashed or signed preimage starts with `"trac/v1/" ‖ kind ‖ 0x00 ‖ scope`, where `kind`
//! names the operation family and `scope` is the 32-byte id the preimage belongs to (an MSB
//! network id, a subnet id, or BLAKE3 of a channel name). A signature made for one kind or scope
//! therefore never verifies for another: no cross-subnet or cross-operation replay.

use std::fmt;

use super::hash::{Hash32, hash_parts};

/// Protocol prefix of every domain.
pub const DOMAIN_PREFIX: &[u8] = b"trac/v1/";

/// The families of preimages. The string of each kind is part of the protocol: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DomainKind {
    /// An MSB operation signed by a requester or a validator.
    MsbOp,
    /// A subnet system operation or contract transaction.
    SubnetOp,
    /// A writer-log entry (hash chain link and signature).
    LogEntry,
    /// A checkpoint proposed by the sequencer.
    Checkpoint,
    /// An indexer's acknowledgement of a checkpoint.
    CheckpointAck,
    /// A sidechannel message.
    SidechannelMsg,
    /// A sidechannel invite.
    Invite,
    /// A sidechannel welcome.
    Welcome,
    /// Derivation of a subnet id from its creator and channel.
    SubnetId,
    /// Derivation of an MSB network id from its genesis.
    MsbNetwork,
    /// A record (key and value) of the key/value state, expanded into the state lattice.
    StateRecord,
    /// Associated data of an encrypted keystore.
    Keystore,
}

impl DomainKind {
    /// Every kind, in a fixed order (used by tests and documentation).
    pub const ALL: [DomainKind; 12] = [
        DomainKind::MsbOp,
        DomainKind::SubnetOp,
        DomainKind::LogEntry,
        DomainKind::Checkpoint,
        DomainKind::CheckpointAck,
        DomainKind::SidechannelMsg,
        DomainKind::Invite,
        DomainKind::Welcome,
        DomainKind::SubnetId,
        DomainKind::MsbNetwork,
        DomainKind::StateRecord,
        DomainKind::Keystore,
    ];

    /// The kind's protocol string (ASCII, no NUL).
    pub const fn as_str(self) -> &'static str {
        match self {
            DomainKind::MsbOp => "msb-op",
            DomainKind::SubnetOp => "subnet-op",
            DomainKind::LogEntry => "log-entry",
            DomainKind::Checkpoint => "checkpoint",
            DomainKind::CheckpointAck => "checkpoint-ack",
            DomainKind::SidechannelMsg => "sidechannel-msg",
            DomainKind::Invite => "invite",
            DomainKind::Welcome => "welcome",
            DomainKind::SubnetId => "subnet-id",
            DomainKind::MsbNetwork => "msb-network",
            DomainKind::StateRecord => "state-record",
            DomainKind::Keystore => "keystore",
        }
    }
}

impl fmt::Display for DomainKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A domain: an operation family within one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain {
    /// The operation family.
    pub kind: DomainKind,
    /// The 32-byte id the preimage belongs to.
    pub scope: Hash32,
}

impl Domain {
    /// A domain of `kind` within `scope`.
    pub const fn new(kind: DomainKind, scope: Hash32) -> Self {
        Domain { kind, scope }
    }

    /// A domain whose scope is not tied to a network (the scope is all zeros), used for
    /// network-independent preimages such as the state lattice and keystores.
    pub const fn global(kind: DomainKind) -> Self {
        Domain {
            kind,
            scope: Hash32::ZERO,
        }
    }

    /// The preimage prefix `"trac/v1/" ‖ kind ‖ 0x00 ‖ scope`.
    pub fn prefix(&self) -> Vec<u8> {
        let kind = self.kind.as_str().as_bytes();
        let mut out = Vec::with_capacity(DOMAIN_PREFIX.len() + kind.len() + 1 + 32);
        out.extend_from_slice(DOMAIN_PREFIX);
        out.extend_from_slice(kind);
        out.push(0);
        out.extend_from_slice(self.scope.as_bytes());
        out
    }

    /// Starts a BLAKE3 hasher that has already absorbed the domain prefix.
    pub fn hasher(&self) -> blake3::Hasher {
        let mut hasher = blake3::Hasher::new();
        hasher.update(DOMAIN_PREFIX);
        hasher.update(self.kind.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(self.scope.as_bytes());
        hasher
    }

    /// BLAKE3-256 of `prefix ‖ payload`: the hash that is signed for `payload` in this domain.
    pub fn hash(&self, payload: &[u8]) -> Hash32 {
        let prefix = self.prefix();
        hash_parts(&[&prefix, payload])
    }
}
