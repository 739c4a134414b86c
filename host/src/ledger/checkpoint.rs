//! Checkpoints (proposed by the sequencer) and acks (by indexers after recomputing the root).

use serde::{Deserialize, Serialize};

use super::{FORMAT_VERSION, LedgerError};
use crate::codec;
use crate::crypto::{Domain, DomainKind, Hash32, Keypair, PublicKey, Signature, verify_hash};

/// How far one writer's log is included: entries with `seq < next` are in, and the last of them
/// has hash `last` (which pins the branch if the writer ever signed two entries at one `seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogFrontier {
    /// The writer.
    pub writer: PublicKey,
    /// The first sequence number not yet included.
    pub next: u64,
    /// Hash of the entry at `next - 1`.
    pub last: Hash32,
}

/// The signed part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    /// Format version.
    pub version: u8,
    /// Height, from 1 (height 0 is the genesis state).
    pub height: u64,
    /// Hash of the previous checkpoint ([`Hash32::ZERO`] for height 1).
    pub prev: Hash32,
    /// Deterministic time in milliseconds; never below the previous checkpoint's.
    pub time: u64,
    /// How far every log is included, sorted by writer key; a writer absent here is not
    /// included at all.
    pub frontier: Vec<LogFrontier>,
    /// The state root after applying the checkpoint.
    pub state_root: Hash32,
    /// The Merkle root of the checkpoint's receipts ([`Hash32::ZERO`] when there are none).
    pub receipts_root: Hash32,
    /// The sequencer that proposed it.
    pub sequencer: PublicKey,
}

/// A checkpoint signed by its sequencer (the signature counts as the sequencer's ack).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// What is signed.
    pub body: CheckpointBody,
    /// The sequencer's signature over [`CheckpointBody::hash`].
    pub signature: Signature,
}

impl CheckpointBody {
    /// `BLAKE3(domain(checkpoint, network) ‖ encode(body))`.
    pub fn hash(&self, network: &Hash32) -> Hash32 {
        Domain::new(DomainKind::Checkpoint, *network).hash(&codec::encode(self))
    }

    /// The frontier entry of `writer` (0 when absent).
    pub fn next_seq(&self, writer: &PublicKey) -> u64 {
        self.frontier
            .binary_search_by(|f| f.writer.cmp(writer))
            .map(|i| self.frontier[i].next)
            .unwrap_or(0)
    }
}

impl Checkpoint {
    /// Signs a checkpoint body.
    pub fn sign(keypair: &Keypair, network: &Hash32, body: CheckpointBody) -> Checkpoint {
        let signature = keypair.sign_hash(&body.hash(network));
        Checkpoint { body, signature }
    }

    /// The checkpoint's hash.
    pub fn hash(&self, network: &Hash32) -> Hash32 {
        self.body.hash(network)
    }

    /// Checks version, frontier order and the sequencer's signature; returns the hash.
    pub fn verify(&self, network: &Hash32) -> Result<Hash32, LedgerError> {
        if self.body.version != FORMAT_VERSION {
            return Err(LedgerError::Version {
                what: "checkpoint",
                got: self.body.version,
            });
        }
        if !self
            .body
            .frontier
            .windows(2)
            .all(|w| w[0].writer < w[1].writer)
        {
            return Err(LedgerError::Invalid(
                "checkpoint frontier is not sorted by writer without duplicates".into(),
            ));
        }
        if self.body.frontier.iter().any(|f| f.next == 0) {
            return Err(LedgerError::Invalid(
                "checkpoint frontier lists a log with nothing included".into(),
            ));
        }
        let hash = self.hash(network);
        verify_hash(&self.body.sequencer, &hash, &self.signature)
            .map_err(|e| LedgerError::Signature(format!("checkpoint {}: {e}", self.body.height)))?;
        Ok(hash)
    }
}

/// The signed part of an ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckBody {
    /// Format version.
    pub version: u8,
    /// Height of the acknowledged checkpoint.
    pub height: u64,
    /// Its hash.
    pub checkpoint: Hash32,
    /// The state root the indexer computed (equal to the checkpoint's).
    pub state_root: Hash32,
    /// The indexer.
    pub indexer: PublicKey,
}

/// An indexer's acknowledgement: it recomputed the checkpoint and got the same root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// What is signed.
    pub body: AckBody,
    /// The indexer's signature over `BLAKE3(domain(checkpoint-ack, network) ‖ encode(body))`.
    pub signature: Signature,
}

impl Ack {
    /// Signs an ack of `checkpoint`.
    pub fn sign(keypair: &Keypair, network: &Hash32, checkpoint: &Checkpoint) -> Ack {
        let body = AckBody {
            version: FORMAT_VERSION,
            height: checkpoint.body.height,
            checkpoint: checkpoint.hash(network),
            state_root: checkpoint.body.state_root,
            indexer: keypair.public(),
        };
        let hash = Domain::new(DomainKind::CheckpointAck, *network).hash(&codec::encode(&body));
        Ack {
            signature: keypair.sign_hash(&hash),
            body,
        }
    }

    /// Checks version and signature.
    pub fn verify(&self, network: &Hash32) -> Result<(), LedgerError> {
        if self.body.version != FORMAT_VERSION {
            return Err(LedgerError::Version {
                what: "ack",
                got: self.body.version,
            });
        }
        let hash =
            Domain::new(DomainKind::CheckpointAck, *network).hash(&codec::encode(&self.body));
        verify_hash(&self.body.indexer, &hash, &self.signature)
            .map_err(|e| LedgerError::Signature(format!("ack of {}: {e}", self.body.height)))
    }
}
