//! The replicated multi-writer ledger engine, shared by MSB and every subnet
//! (docs/protocol.md, "Ledger").
//!
//! - **Writer logs** ([`LogEntry`]): each writer appends signed, hash-chained entries carrying
//!   a batch of ops and optional causal heads; local-first, replicated later.
//! - **Checkpoints** ([`Checkpoint`]): the sequencer (first indexer of the set in force) orders
//!   the known entries deterministically ([`order`]), applies them to the state through the
//!   [`StateMachine`], and signs the resulting state root, receipts root, time and frontier.
//!   Indexers recompute it and sign an [`Ack`]; a checkpoint is **final** once a majority of the
//!   indexer set in force before it has signed (the sequencer's signature counts), in order.
//! - **Views**: *confirmed* is the state after the last final checkpoint (persisted, one LMDB
//!   transaction per checkpoint); *unconfirmed* is confirmed plus every known entry not yet
//!   final, in the same order (an in-memory overlay rebuilt when something changes).
//! - **Divergence**: an indexer that computes another root refuses to ack, raises
//!   [`LedgerStatus::divergence`] and logs the checkpoint.
//!
//! The engine is synchronous and does no I/O besides its store: a node feeds it messages and
//! sends what it returns. That keeps it testable with simulated networks and replayable.

mod applier;
pub mod archive;
mod checkpoint;
mod engine;
mod entry;
pub mod merkle;
pub mod order;
pub mod replay;

pub use checkpoint::{Ack, AckBody, Checkpoint, CheckpointBody, LogFrontier};
pub use engine::{Divergence, Ledger, LedgerStatus, MAX_ENTRIES_PER_ANSWER, Message};
pub use entry::{EntryBody, EntryRef, LogEntry};

use crate::crypto::{Hash32, PublicKey};
use crate::store::{StateAccess, StoreError};

/// Format version of entries, checkpoints and acks.
pub const FORMAT_VERSION: u8 = 1;

/// Limits of the ledger (consensus: an entry beyond them is refused by every node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerLimits {
    /// Most ops in one entry.
    pub max_ops_per_entry: usize,
    /// Most bytes of ops in one entry.
    pub max_entry_bytes: usize,
    /// Most causal heads of one entry.
    pub max_heads: usize,
    /// Most entries one checkpoint includes.
    pub max_entries_per_checkpoint: usize,
    /// Most out-of-order entries kept in memory while their predecessors are missing.
    pub max_orphans: usize,
}

impl Default for LedgerLimits {
    fn default() -> Self {
        LedgerLimits {
            max_ops_per_entry: 256,
            max_entry_bytes: 4 << 20,
            max_heads: 16,
            max_entries_per_checkpoint: 10_000,
            max_orphans: 10_000,
        }
    }
}

/// Why the ledger refused something or failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A format version this node does not speak.
    #[error("unsupported {what} format version {got} (this node speaks {FORMAT_VERSION})")]
    Version {
        /// What carried it.
        what: &'static str,
        /// The version found.
        got: u8,
    },
    /// Malformed or inconsistent data.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Above a limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A signature that does not verify.
    #[error("bad signature: {0}")]
    Signature(String),
    /// Storage failed (a node error).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state machine hit a fault of this node (not a property of the ops): applying stops
    /// instead of computing a state other nodes would not.
    #[error("node fault while applying: {0}")]
    Node(String),
}

/// One op being applied, with its place in the confirmed order.
#[derive(Debug, Clone, Copy)]
pub struct AppliedOp<'a> {
    /// The entry's writer.
    pub writer: PublicKey,
    /// The entry's hash.
    pub entry: Hash32,
    /// The entry's sequence number in its log.
    pub seq: u64,
    /// The op's index within the entry's batch.
    pub index: u32,
    /// The op's position in the whole confirmed order (from 0).
    pub position: u64,
    /// Height of the checkpoint that includes it.
    pub height: u64,
    /// Time of that checkpoint (milliseconds).
    pub time: u64,
    /// The op's bytes.
    pub bytes: &'a [u8],
}

/// The rules a ledger applies: genesis, membership, the indexer set and the ops themselves.
/// Implementations must be deterministic: same state and op in, same writes and receipt out.
/// They are shared between threads (ops are prepared on one while others are applied).
pub trait StateMachine: Sync {
    /// Writes the genesis state (height 0).
    fn genesis(&self, state: &mut dyn StateAccess) -> Result<(), StoreError>;

    /// Whether `writer` may write at this point of the order. Entries of other writers are
    /// skipped (every node skips the same ones).
    fn is_writer(&self, state: &dyn StateAccess, writer: &PublicKey) -> Result<bool, StoreError>;

    /// The indexer set in force, sequencer first. Never empty.
    fn indexers(&self, state: &dyn StateAccess) -> Result<Vec<PublicKey>, StoreError>;

    /// Called with the ops of a batch of entries before they are applied (in order), so the
    /// machine can verify their signatures in one batch. Optional; must not change state.
    fn prepare(&self, _ops: &[&[u8]]) {}

    /// Applies one op. An op the rules refuse is not an error: the machine records what it
    /// wants (or nothing) and returns. Returns the op's receipt, if the machine keeps receipts.
    /// An error is a fault of this node (storage, engine), never a verdict on the op.
    fn apply(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
    ) -> Result<Option<Vec<u8>>, LedgerError>;
}

/// The majority of an indexer set of `n`: more than half.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}
