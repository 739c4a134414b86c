//! The validator service: checks partial user operations against the unconfirmed MSB state
//! (the exact apply rules, on an overlay that also holds the ops it accepted but has not
//! appended yet, so a double spend across requests is refused), co-signs the good ones and
//! appends them in batches to its own log. Refusals carry a typed reason.

use std::collections::{BTreeMap, HashSet};

use super::Receipt;
use super::machine::{MAX_OP_BYTES, MsbMachine, Refusal, RefusalCode};
use super::ops::{self, CompleteOp, MsbOp, PartialOp};
use crate::codec;
use crate::crypto::{Hash32, Keypair, PublicKey};
use crate::ledger::{AppliedOp, Ledger, LedgerError, LogEntry, StateMachine};
use crate::store::{StateAccess, StateRecord, StateView, StoreError, range_through};

/// Most ops appended in one entry.
pub const MAX_BATCH: usize = 256;

/// Why a validator refused a partial operation (also the answer of a validator reached over the
/// network).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Rejection {
    /// This node is not a validator of the network (yet).
    #[error("this node is not a validator")]
    NotValidator,
    /// The apply rules refuse it.
    #[error("{code:?}: {message}")]
    Refused {
        /// The kind.
        code: RefusalCode,
        /// What exactly.
        message: String,
    },
    /// The same transaction is already waiting in this validator's pool.
    #[error("transaction {0} is already pending")]
    Pending(Hash32),
    /// The pool is full; try again shortly.
    #[error("the validator is busy ({0} operations pending)")]
    Busy(usize),
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Self {
        Rejection::Refused {
            code: refusal.code,
            message: refusal.message,
        }
    }
}

impl Rejection {
    /// The refusal code, when the rules refused it.
    pub fn code(&self) -> Option<RefusalCode> {
        match self {
            Rejection::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// State reads fall through to a base view; writes stay in memory.
struct Layer<'a> {
    base: &'a dyn StateView,
    diff: &'a mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl StateView for Layer<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.diff.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.base.get(key),
        }
    }
    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateRecord>, StoreError> {
        range_through(self.base, self.diff, start, end, limit)
    }
}

impl StateAccess for Layer<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.diff.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.diff.insert(key.to_vec(), None);
        Ok(())
    }
    fn root(&self) -> Result<Hash32, StoreError> {
        // The MSB rules never read the root; a validator's dry run has none.
        Ok(Hash32::ZERO)
    }
}

/// A validator: its key, the accepted ops not appended yet and their effect on the state.
pub struct Validator {
    keypair: Keypair,
    pool: Vec<CompleteOp>,
    pending: HashSet<Hash32>,
    diff: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    max_pool: usize,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("key", &self.keypair.public())
            .field("pending", &self.pool.len())
            .finish()
    }
}

impl Validator {
    /// A validator signing with `keypair` (the MSB node's key, a writer of the MSB log).
    pub fn new(keypair: Keypair) -> Self {
        Validator {
            keypair,
            pool: Vec::new(),
            pending: HashSet::new(),
            diff: BTreeMap::new(),
            max_pool: 16 * MAX_BATCH,
        }
    }

    /// The validator's key.
    pub fn public(&self) -> PublicKey {
        self.keypair.public()
    }

    /// Operations accepted and not appended yet.
    pub fn pending(&self) -> usize {
        self.pool.len()
    }

    /// Checks `partial`, co-signs it and queues it for [`Validator::flush`]. Returns the tx
    /// hash.
    pub fn submit(
        &mut self,
        ledger: &mut Ledger<MsbMachine>,
        partial: PartialOp,
    ) -> Result<Hash32, SubmitError> {
        let network = ledger.network();
        let tx_hash = partial.body.tx_hash(&network);
        if self.pending.contains(&tx_hash) {
            return Err(Rejection::Pending(tx_hash).into());
        }
        if self.pool.len() >= self.max_pool {
            return Err(Rejection::Busy(self.pool.len()).into());
        }
        let complete = partial.complete(&self.keypair, &network);
        let bytes = ops::encode_op(&MsbOp::User(complete.clone()));
        if bytes.len() > MAX_OP_BYTES {
            return Err(Rejection::Refused {
                code: RefusalCode::Malformed,
                message: format!("operation of {} bytes exceeds {MAX_OP_BYTES}", bytes.len()),
            }
            .into());
        }
        let me = self.keypair.public();
        let height = ledger.status().latest_height + 1;
        let mut diff = self.diff.clone();
        let receipt = ledger.read_with_machine(
            false,
            |state, machine| -> Result<Vec<u8>, LedgerError> {
                if !ledger_is_validator(state, &me)? {
                    return Ok(Vec::new());
                }
                let mut layer = Layer {
                    base: state,
                    diff: &mut diff,
                };
                let applied = AppliedOp {
                    writer: me,
                    entry: Hash32::ZERO,
                    seq: 0,
                    index: 0,
                    position: 0,
                    height,
                    time: 0,
                    bytes: &bytes,
                };
                Ok(machine.apply(&mut layer, &applied)?.unwrap_or_default())
            },
        )??;
        if receipt.is_empty() {
            return Err(Rejection::NotValidator.into());
        }
        let receipt: Receipt = codec::decode(&receipt)
            .map_err(|e| LedgerError::Invalid(format!("dry-run receipt: {e}")))?;
        if let Some(refusal) = receipt.error {
            return Err(Rejection::from(refusal).into());
        }
        self.diff = diff;
        self.pending.insert(tx_hash);
        self.pool.push(complete);
        Ok(tx_hash)
    }

    /// Appends the queued operations to this node's log (up to [`MAX_BATCH`] per entry) and
    /// returns the entries to broadcast.
    pub fn flush(&mut self, ledger: &mut Ledger<MsbMachine>) -> Result<Vec<LogEntry>, LedgerError> {
        let mut entries = Vec::new();
        while !self.pool.is_empty() {
            let take = self.pool.len().min(MAX_BATCH);
            let batch: Vec<Vec<u8>> = self.pool[..take]
                .iter()
                .map(|op| ops::encode_op(&MsbOp::User(op.clone())))
                .collect();
            entries.push(ledger.append(batch)?);
            self.pool.drain(..take);
        }
        // The log holds them now: the unconfirmed view includes their effects.
        self.pending.clear();
        self.diff.clear();
        Ok(entries)
    }
}

/// A validator failure: a typed rejection for the requester, or a fault of this node.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The operation is refused.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// This node failed.
    #[error(transparent)]
    Node(#[from] LedgerError),
}

fn ledger_is_validator(state: &dyn StateView, key: &PublicKey) -> Result<bool, LedgerError> {
    Ok(super::machine::account(state, key)?.has(super::machine::ROLE_VALIDATOR))
}
