//! Writer-log entries: each writer's hash-chained, signed, append-only log.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{FORMAT_VERSION, LedgerError, LedgerLimits};
use crate::codec;
use crate::crypto::{Domain, DomainKind, Hash32, Keypair, PublicKey, Signature};

/// A reference to an entry of some writer's log (a causal head).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryRef {
    /// The writer.
    pub writer: PublicKey,
    /// Its sequence number.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash32,
}

/// The signed part of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u8,
    /// The writer.
    pub writer: PublicKey,
    /// Position in the writer's log, from 0.
    pub seq: u64,
    /// Hash of the previous entry of the same log ([`Hash32::ZERO`] for `seq` 0).
    pub prev: Hash32,
    /// Entries of other logs this one was written after (causal order).
    pub heads: Vec<EntryRef>,
    /// The batch of operations (opaque to the ledger; the state machine decodes them).
    pub ops: Vec<ByteBuf>,
}

/// A signed writer-log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// What is signed.
    pub body: EntryBody,
    /// The writer's signature over [`LogEntry::hash`].
    pub signature: Signature,
}

impl EntryBody {
    /// The entry's hash: `BLAKE3(domain(log-entry, network) ‖ encode(body))`.
    pub fn hash(&self, network: &Hash32) -> Hash32 {
        Domain::new(DomainKind::LogEntry, *network).hash(&codec::encode(self))
    }
}

impl LogEntry {
    /// Builds and signs an entry.
    pub fn sign(
        keypair: &Keypair,
        network: &Hash32,
        seq: u64,
        prev: Hash32,
        heads: Vec<EntryRef>,
        ops: Vec<Vec<u8>>,
    ) -> LogEntry {
        let body = EntryBody {
            version: FORMAT_VERSION,
            writer: keypair.public(),
            seq,
            prev,
            heads,
            ops: ops.into_iter().map(ByteBuf::from).collect(),
        };
        let signature = keypair.sign_hash(&body.hash(network));
        LogEntry { body, signature }
    }

    /// The entry's hash.
    pub fn hash(&self, network: &Hash32) -> Hash32 {
        self.body.hash(network)
    }

    /// A reference to this entry.
    pub fn reference(&self, network: &Hash32) -> EntryRef {
        EntryRef {
            writer: self.body.writer,
            seq: self.body.seq,
            hash: self.hash(network),
        }
    }

    /// Checks what can be checked of an entry alone: version, limits, shape and signature.
    /// Returns its hash. The chain (`prev`) is checked against the stored log.
    pub fn verify(&self, network: &Hash32, limits: &LedgerLimits) -> Result<Hash32, LedgerError> {
        let hash = self.check_shape(network, limits)?;
        crate::crypto::verify_hash(&self.body.writer, &hash, &self.signature).map_err(|e| {
            LedgerError::Signature(format!("entry {}/{}: {e}", self.body.writer, self.body.seq))
        })?;
        Ok(hash)
    }

    /// [`LogEntry::verify`] without the signature (for callers that verify many signatures in
    /// one batch): version, limits and shape. Returns the hash the signature must cover.
    pub fn check_shape(
        &self,
        network: &Hash32,
        limits: &LedgerLimits,
    ) -> Result<Hash32, LedgerError> {
        let body = &self.body;
        if body.version != FORMAT_VERSION {
            return Err(LedgerError::Version {
                what: "entry",
                got: body.version,
            });
        }
        if body.ops.is_empty() {
            return Err(LedgerError::Invalid(
                "an entry needs at least one op".into(),
            ));
        }
        if body.ops.len() > limits.max_ops_per_entry {
            return Err(LedgerError::TooLarge(format!(
                "{} ops in one entry (at most {})",
                body.ops.len(),
                limits.max_ops_per_entry
            )));
        }
        if body.heads.len() > limits.max_heads {
            return Err(LedgerError::TooLarge(format!(
                "{} causal heads (at most {})",
                body.heads.len(),
                limits.max_heads
            )));
        }
        let size: usize = body.ops.iter().map(|op| op.len()).sum();
        if size > limits.max_entry_bytes {
            return Err(LedgerError::TooLarge(format!(
                "{size} bytes of ops in one entry (at most {})",
                limits.max_entry_bytes
            )));
        }
        if (body.seq == 0) != (body.prev == Hash32::ZERO) {
            return Err(LedgerError::Invalid(
                "prev must be zero exactly for the first entry of a log".into(),
            ));
        }
        if body.heads.iter().any(|h| h.writer == body.writer) {
            return Err(LedgerError::Invalid(
                "a causal head may not name the entry's own log".into(),
            ));
        }
        Ok(body.hash(network))
    }
}
