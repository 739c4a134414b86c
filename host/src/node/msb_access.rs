//! How the `/tx` lifecycle reaches MSB: the [`MsbAccess`] trait (heights, preflight,
//! submission to a validator, settlement proofs, refusals) and [`LocalMsb`], its in-process
//! implementation over an MSB ledger and validator (the networked node implements the same
//! trait over MSB peers).

use std::collections::{HashMap, HashSet};

use crate::codec;
use crate::crypto::{Hash32, PublicKey};
use crate::ledger::{Ledger, LedgerError, Message};
use crate::msb::{
    MsbMachine, PartialOp, ProofError, ROLE_VALIDATOR, Receipt, Refusal, Rejection,
    SettlementProof, SubmitError, UserAction, Validator,
};

/// MSB heights as this peer knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsbHeights {
    /// The latest verified checkpoint (the base of a new transaction's expiry).
    pub latest: u64,
    /// The last final checkpoint (settlement proofs exist up to it).
    pub final_height: u64,
}

/// What the `/tx` lifecycle needs from MSB. [`LocalMsb`] serves it from an MSB ledger and
/// validator in this process; a networked implementation answers from what it learned from
/// MSB nodes (heights announced, proofs fetched) and forwards submissions to a validator.
pub trait MsbAccess {
    /// The MSB network id (the domain of the ops the peer signs).
    fn network(&self) -> Hash32;

    /// The validator that co-signs this peer's transactions, if known (named in simulations).
    fn validator(&self) -> Option<PublicKey>;

    /// The current heights.
    fn heights(&mut self) -> Result<MsbHeights, LedgerError>;

    /// Whether a transaction of `requester` for `subnet` would pass the validator now (account,
    /// fee, deployment): the typed refusal a real submission would meet, without submitting.
    fn preflight(&mut self, requester: &PublicKey, subnet: &Hash32) -> Result<(), SubmitError>;

    /// Hands a signed op to the validator; its tx hash once accepted.
    fn submit(&mut self, partial: PartialOp) -> Result<Hash32, SubmitError>;

    /// The settlement proof of `tx_hash`.
    fn proof(&mut self, tx_hash: &Hash32) -> Result<SettlementProof, ProofError>;

    /// The settlement proofs of `tx_hashes`, in order (an implementation may share the work
    /// of proofs from one checkpoint).
    fn proofs(&mut self, tx_hashes: &[Hash32]) -> Vec<Result<SettlementProof, ProofError>> {
        tx_hashes.iter().map(|hash| self.proof(hash)).collect()
    }

    /// The refusals MSB recorded for any of `wanted` in the final checkpoints of heights
    /// `from..=to`.
    fn refusals(
        &mut self,
        wanted: &HashSet<Hash32>,
        from: u64,
        to: u64,
    ) -> Result<HashMap<Hash32, Refusal>, LedgerError>;
}

/// [`MsbAccess`] to the MSB ledger replica in this process, with either this node's own
/// validator or, for a node that is not a validator, submissions forwarded to one over the
/// network ([`LocalMsb::forwarding`]).
///
/// With a validator, accepted ops are appended at once (one log entry per submission) unless
/// built with [`LocalMsb::deferred`]; the entries to broadcast to other MSB nodes collect in
/// [`LocalMsb::take_messages`]. Forwarding, a submission is only queued
/// ([`LocalMsb::take_forwarded`]) and counts as accepted: the node sends it to a validator
/// and reports a refusal to the tx flow when the answer comes.
pub struct LocalMsb<'a> {
    ledger: &'a mut Ledger<MsbMachine>,
    validator: Option<&'a mut Validator>,
    flush_each: bool,
    outbox: Vec<Message>,
    forwarded: Vec<PartialOp>,
}

impl<'a> LocalMsb<'a> {
    /// Submissions go to `validator` and are appended to the MSB log at once.
    pub fn new(ledger: &'a mut Ledger<MsbMachine>, validator: &'a mut Validator) -> Self {
        LocalMsb {
            ledger,
            validator: Some(validator),
            flush_each: true,
            outbox: Vec::new(),
            forwarded: Vec::new(),
        }
    }

    /// Submissions are queued for a validator elsewhere ([`LocalMsb::take_forwarded`]);
    /// heights, preflights and proofs come from `ledger`, the local MSB replica.
    pub fn forwarding(ledger: &'a mut Ledger<MsbMachine>) -> Self {
        LocalMsb {
            ledger,
            validator: None,
            flush_each: true,
            outbox: Vec::new(),
            forwarded: Vec::new(),
        }
    }

    /// The submissions queued for a validator elsewhere.
    pub fn take_forwarded(&mut self) -> Vec<PartialOp> {
        std::mem::take(&mut self.forwarded)
    }

    /// Submissions wait in the validator's pool until [`LocalMsb::flush`] (batches of up to
    /// 256 ops per entry). Preflights do not see the pool: use it for bulk submission.
    pub fn deferred(ledger: &'a mut Ledger<MsbMachine>, validator: &'a mut Validator) -> Self {
        LocalMsb {
            flush_each: false,
            ..Self::new(ledger, validator)
        }
    }

    /// Appends the validator's pool to the MSB log.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        let Some(validator) = self.validator.as_deref_mut() else {
            return Ok(());
        };
        let entries = validator.flush(self.ledger)?;
        self.outbox.extend(entries.into_iter().map(Message::Entry));
        Ok(())
    }

    /// The MSB messages to broadcast (the entries appended so far).
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.outbox)
    }
}

impl MsbAccess for LocalMsb<'_> {
    fn network(&self) -> Hash32 {
        self.ledger.network()
    }

    fn validator(&self) -> Option<PublicKey> {
        self.validator.as_ref().map(|v| v.public())
    }

    fn heights(&mut self) -> Result<MsbHeights, LedgerError> {
        let status = self.ledger.status();
        Ok(MsbHeights {
            latest: status.latest_height,
            final_height: status.final_height,
        })
    }

    fn preflight(&mut self, requester: &PublicKey, subnet: &Hash32) -> Result<(), SubmitError> {
        let validator = self.validator.as_ref().map(|v| v.public());
        // In the order a submission meets them: the validator service's own role, then the
        // machine's rules for a `tx` op that need neither the signatures nor the expiry.
        let action = UserAction::Tx {
            subnet: *subnet,
            // The rules do not look at the call.
            content: Hash32::ZERO,
        };
        let verdict = self.ledger.read_with_machine(
            false,
            |state, machine| -> Result<Result<(), Rejection>, LedgerError> {
                // Forwarded submissions meet a validator chosen later: only the rules apply.
                if let Some(validator) = &validator {
                    if !crate::msb::account(state, validator)?.has(ROLE_VALIDATOR) {
                        return Ok(Err(Rejection::NotValidator));
                    }
                    if let Err(refusal) = MsbMachine::check_not_own_validator(requester, validator)
                    {
                        return Ok(Err(refusal.into()));
                    }
                }
                Ok(machine
                    .preflight(state, requester, &action)?
                    .map_err(Rejection::from))
            },
        )??;
        Ok(verdict?)
    }

    fn submit(&mut self, partial: PartialOp) -> Result<Hash32, SubmitError> {
        let Some(validator) = self.validator.as_deref_mut() else {
            let tx_hash = partial.body.tx_hash(&self.ledger.network());
            self.forwarded.push(partial);
            return Ok(tx_hash);
        };
        let tx_hash = validator.submit(self.ledger, partial)?;
        if self.flush_each {
            self.flush()?;
        }
        Ok(tx_hash)
    }

    fn proof(&mut self, tx_hash: &Hash32) -> Result<SettlementProof, ProofError> {
        SettlementProof::build(self.ledger, tx_hash)
    }

    fn proofs(&mut self, tx_hashes: &[Hash32]) -> Vec<Result<SettlementProof, ProofError>> {
        SettlementProof::build_many(self.ledger, tx_hashes)
    }

    fn refusals(
        &mut self,
        wanted: &HashSet<Hash32>,
        from: u64,
        to: u64,
    ) -> Result<HashMap<Hash32, Refusal>, LedgerError> {
        let mut found = HashMap::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        for height in from.max(1)..=to.min(self.ledger.status().final_height) {
            for bytes in self.ledger.receipts(height)? {
                let receipt: Receipt = codec::decode(&bytes)
                    .map_err(|e| LedgerError::Invalid(format!("stored MSB receipt: {e}")))?;
                if let Some(error) = receipt.error
                    && wanted.contains(&receipt.tx_hash)
                {
                    found.insert(receipt.tx_hash, error);
                }
            }
        }
        Ok(found)
    }
}
