//! The `/tx` lifecycle of one peer (DESIGN §10, §11.7, §11.10; reference trac-peer §3):
//!
//! 1. [`TxFlow::map`]: the subnet's active contract maps a command string to a call
//!    (`something` → `storeSomething(nil)` in Intercom);
//! 2. [`TxFlow::simulate`]: the call runs on the subnet's *unconfirmed* view, nothing kept, after
//!    the same MSB preflight a real transaction meets, and reports result, fuel, writes, events;
//! 3. [`TxFlow::submit`]: the peer signs the MSB op (`Tx{subnet, content hash}`), **persists a
//!    pending record** in the subnet node's store, then hands the op to a validator;
//! 4. [`TxFlow::poll`]: each pending transaction whose settlement proof can be built (applied
//!    in a final MSB checkpoint) is appended to this node's subnet log as a `tx` op carrying the
//!    proof — every subnet node applies it once checkpointed — and its record is removed only
//!    after that append committed; refused or expired ones are dropped with the reason;
//! 5. [`TxFlow::import`]: any subnet writer appends a transaction settled by someone else (a
//!    peer that went away, a wallet that settled directly), after checking the call matches the
//!    settled content hash; importing twice is harmless.
//!
//! The pending table survives restarts ([`TxFlow::open`] reloads it and the next poll finishes
//! the work), which fixes the reference's memory-only pool, its silent overflow and its observer
//! that forgot a transaction before appending it (trac-peer §11.3).
//!
//! The MSB side is reached through [`MsbAccess`]; [`LocalMsb`](super::LocalMsb) is the
//! in-process one (an MSB ledger and its validator in this process). Everything is
//! synchronous: the caller sends the [`Message`]s returned and decides when to poll.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::msb_access::{MsbAccess, MsbHeights};
use crate::crypto::{Hash32, Keypair, PublicKey};
use crate::ledger::{Ledger, LedgerError, LogEntry, Message};
use crate::msb::{
    PartialOp, ProofError, RefusalCode, Rejection, SettlementProof, StandardVerifier, SubmitError,
    UserAction, UserBody,
};
use crate::runtime::{
    CallContext, CallFailure, CallRequest, Event, Invocation, OpKind, RuntimeError, StateWrite,
    TxCall,
};
use crate::store::{StateView, Store, StoreError, StoreRead, Table};
use crate::subnet::ops::{MAX_FUNCTION_BYTES, encode_op};
use crate::subnet::settlement::SettlementVerifier;
use crate::subnet::{SubnetMachine, SubnetOp, TxOp, keys};

/// How many MSB checkpoints after the current one a submitted transaction stays valid.
pub const DEFAULT_EXPIRY_WINDOW: u64 = 100;

/// Room left in a `tx` op for its settlement proof when checking a call's size up front (a
/// proof with the acks of 32 MSB indexers stays well below it).
pub const PROOF_ALLOWANCE: usize = 16 << 10;

/// The subnet store table of pending transactions, by MSB tx hash.
const PENDING_TABLE: &str = "txflow.pending";

/// Most `tx` ops appended in one log entry (the ledger's default entry limit).
const MAX_OPS_PER_ENTRY: usize = 256;

/// Most bytes of `tx` ops appended in one log entry (well below the ledger's 4 MiB).
const MAX_ENTRY_BYTES: usize = 1 << 20;

/// Where a pending transaction is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingStage {
    /// Persisted, not yet accepted by a validator (a crash here is retried by the next poll).
    Submitting,
    /// Accepted by a validator: waiting for its settlement to be final on MSB.
    Submitted,
}

/// A transaction this peer signed and has not appended to the subnet yet (persisted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTx {
    /// The contract function.
    pub function: String,
    /// Its MessagePack arguments.
    pub args: ByteBuf,
    /// The MSB op as the peer signed it.
    pub partial: PartialOp,
    /// Where it is.
    pub stage: PendingStage,
    /// The latest MSB height when it was signed (settlement comes at a later height).
    pub msb_height: u64,
}

impl PendingTx {
    /// The last MSB checkpoint height at which it can be settled.
    pub fn expires(&self) -> u64 {
        self.partial.body.expires
    }
}

/// Why the `/tx` lifecycle refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum TxFlowError {
    /// The contract maps no operation to the command.
    #[error("command not found: the subnet's contract maps no operation to {0:?}")]
    CommandNotFound(String),
    /// The contract's command mapping failed (for example malformed JSON).
    #[error("the contract refused command {command:?}: {failure}")]
    CommandFailed {
        /// The command.
        command: String,
        /// Why.
        failure: CallFailure,
    },
    /// The subnet has no active contract yet.
    #[error("no contract is deployed in this subnet yet")]
    NoContract,
    /// The subnet's admin disabled transactions (`txen` is false).
    #[error("transactions are disabled in this subnet (the admin set txen to false)")]
    TransactionsDisabled,
    /// The function name cannot be a `tx` op's.
    #[error(
        "invalid function name {0:?}: it must be 1 to {MAX_FUNCTION_BYTES} bytes without control characters"
    )]
    InvalidFunction(String),
    /// The call would make a `tx` op larger than the subnet accepts.
    #[error(
        "a call of {size} bytes is too large: this subnet takes tx ops up to {max} bytes, of which {PROOF_ALLOWANCE} are kept for the settlement proof"
    )]
    TooLarge {
        /// Function name plus arguments, bytes.
        size: usize,
        /// The subnet's `max_tx_bytes`.
        max: u32,
    },
    /// MSB (its validator) refuses the transaction.
    #[error("MSB refuses the transaction: {0}")]
    Rejected(Rejection),
    /// No settlement proof of the transaction exists (yet).
    #[error("transaction {tx_hash} is not settled: {source}")]
    NotSettled {
        /// The transaction.
        tx_hash: Hash32,
        /// Why no proof.
        source: ProofError,
    },
    /// The transaction was settled for another subnet.
    #[error("transaction {tx_hash} was settled for subnet {settled}, not this one ({subnet})")]
    WrongSubnet {
        /// The transaction.
        tx_hash: Hash32,
        /// The subnet it names.
        settled: Hash32,
        /// This subnet.
        subnet: Hash32,
    },
    /// The call does not match the settled content hash.
    #[error(
        "the call does not match transaction {tx_hash}: it settled content {settled}, {function}(args) hashes to {computed}"
    )]
    ContentMismatch {
        /// The transaction.
        tx_hash: Hash32,
        /// The function given.
        function: String,
        /// The content hash MSB settled.
        settled: Hash32,
        /// The content hash of the call given.
        computed: Hash32,
    },
    /// The subnet would refuse the settlement proof (for example it trusts another MSB).
    #[error("this subnet refuses the settlement proof of {tx_hash}: {reason}")]
    ProofRefused {
        /// The transaction.
        tx_hash: Hash32,
        /// Why.
        reason: String,
    },
    /// A transaction signed elsewhere is not acceptable (wrong call or subnet, bad signature,
    /// expired).
    #[error("invalid signed transaction: {0}")]
    Invalid(String),
    /// This node cannot append to the subnet.
    #[error("this node ({0}) is not a writer of the subnet, so it cannot append transactions")]
    NotWriter(PublicKey),
    /// The ledger passed in is another subnet's.
    #[error("this tx flow belongs to subnet {expected}, the ledger given is {got}")]
    WrongLedger {
        /// The tx flow's subnet.
        expected: Hash32,
        /// The ledger's network.
        got: Hash32,
    },
    /// A ledger failed (a node fault).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The store failed (a node fault).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The contract runtime failed (a node fault, never a contract failure).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl TxFlowError {
    /// The MSB refusal code, when MSB's rules refused the transaction.
    pub fn refusal_code(&self) -> Option<RefusalCode> {
        match self {
            TxFlowError::Rejected(rejection) => rejection.code(),
            _ => None,
        }
    }
}

impl From<SubmitError> for TxFlowError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Rejected(rejection) => TxFlowError::Rejected(rejection),
            SubmitError::Node(e) => TxFlowError::Ledger(e),
        }
    }
}

/// What a simulated call did (nothing of it is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulation {
    /// The MessagePack result, or the failure the subnet would record.
    pub result: Result<Vec<u8>, CallFailure>,
    /// Fuel used.
    pub fuel: u64,
    /// The writes it would make (none when it fails).
    pub writes: Vec<StateWrite>,
    /// The events it would emit.
    pub events: Vec<Event>,
    /// The contract's debug lines.
    pub debug: Vec<String>,
}

/// Why a pending transaction is still pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// MSB has not applied it in a final checkpoint yet.
    NotApplied,
    /// Applied, its checkpoint is not final yet.
    NotFinal,
    /// Settled, but this node is not a subnet writer: another writer can import it.
    NotWriter,
    /// Settled, but the subnet would refuse the proof now (for example it trusts no MSB yet).
    ProofRefused(String),
    /// Not accepted by a validator yet (retried on every poll).
    Resubmit(String),
}

/// Why a pending transaction was dropped (its record removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// MSB refused it: at validation, or when applying it.
    Refused {
        /// The kind, when MSB's rules refused it.
        code: Option<RefusalCode>,
        /// What exactly.
        message: String,
    },
    /// Its expiry passed before MSB applied it.
    Expired {
        /// The last height it could apply at.
        expires: u64,
        /// MSB's final height when it was dropped.
        final_height: u64,
    },
}

/// What became of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutcome {
    /// Its `tx` op is appended to this node's subnet log (it applies on every subnet node once
    /// checkpointed); the record is removed.
    Appended,
    /// The subnet has it already (`tx/<hash>` in the unconfirmed view); the record is removed.
    AlreadyApplied,
    /// Still pending.
    Waiting(WaitReason),
    /// Dropped; the record is removed.
    Dropped(DropReason),
}

/// One transaction's outcome in a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxReport {
    /// The MSB tx hash.
    pub tx_hash: Hash32,
    /// What became of it.
    pub outcome: TxOutcome,
}

/// What a poll did.
#[derive(Debug, Clone, Default)]
pub struct PollReport {
    /// Every pending transaction's outcome.
    pub txs: Vec<TxReport>,
    /// The subnet messages to broadcast (the entries appended).
    pub messages: Vec<Message>,
}

impl PollReport {
    /// The hashes of the transactions with outcome `outcome`.
    pub fn with_outcome(&self, outcome: &TxOutcome) -> Vec<Hash32> {
        self.txs
            .iter()
            .filter(|t| t.outcome == *outcome)
            .map(|t| t.tx_hash)
            .collect()
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// Appended to this node's subnet log.
    Appended {
        /// The subnet messages to broadcast (the entry appended).
        messages: Vec<Message>,
    },
    /// The subnet has the transaction already (unconfirmed view): nothing appended.
    AlreadyApplied {
        /// Its index (`txi/<n>`), once applied.
        index: Option<u64>,
    },
}

/// The `/tx` lifecycle of one peer on one subnet: its key (requester and subnet writer), the
/// persisted pending transactions and a settlement verifier to check proofs before appending.
pub struct TxFlow {
    subnet: Hash32,
    peer: Keypair,
    store: Arc<Store>,
    table: Table<Hash32, PendingTx>,
    pending: BTreeMap<Hash32, PendingTx>,
    verifier: StandardVerifier,
    expiry_window: u64,
    /// MSB heights up to this one were searched for refusals of the pending transactions.
    scanned: u64,
}

impl std::fmt::Debug for TxFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxFlow")
            .field("subnet", &self.subnet)
            .field("peer", &self.peer.public())
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// Checks a call as the subnet will take it: the function name, the size of the `tx` op it
/// makes, and the `txen` switch.
fn check_call(state: &dyn StateView, function: &str, args: &[u8]) -> Result<(), TxFlowError> {
    if function.is_empty()
        || function.len() > MAX_FUNCTION_BYTES
        || function.chars().any(char::is_control)
    {
        return Err(TxFlowError::InvalidFunction(function.to_string()));
    }
    let max = SubnetMachine::params(state)?.max_tx_bytes;
    let size = function.len() + args.len();
    if size + PROOF_ALLOWANCE > max as usize {
        return Err(TxFlowError::TooLarge { size, max });
    }
    // Absent, or anything but a stored `false`, means enabled (the subnet's own rule).
    let disabled = state
        .get(keys::TXEN.as_bytes())?
        .and_then(|bytes| rmp_serde::from_slice::<bool>(&bytes).ok())
        == Some(false);
    if disabled {
        return Err(TxFlowError::TransactionsDisabled);
    }
    Ok(())
}

impl TxFlow {
    /// The tx flow of peer `peer` (its subnet writer key and the requester of its
    /// transactions) on the subnet of `subnet`, reloading the pending transactions from the
    /// subnet node's store.
    pub fn open(subnet: &Ledger<SubnetMachine>, peer: Keypair) -> Result<Self, TxFlowError> {
        let store = subnet.store().clone();
        let table: Table<Hash32, PendingTx> = store.table(PENDING_TABLE)?;
        let mut pending = BTreeMap::new();
        for (key, record) in store.read()?.scan_prefix(&table, &[], usize::MAX)? {
            let key: [u8; 32] = key.as_slice().try_into().map_err(|_| {
                LedgerError::Invalid(format!("corrupt key in table {PENDING_TABLE}"))
            })?;
            pending.insert(Hash32(key), record);
        }
        if !pending.is_empty() {
            tracing::info!(
                subnet = %subnet.network(),
                pending = pending.len(),
                "reloaded pending transactions"
            );
        }
        let scanned = pending
            .values()
            .map(|p: &PendingTx| p.msb_height)
            .min()
            .unwrap_or(0);
        Ok(TxFlow {
            subnet: subnet.network(),
            peer,
            store,
            table,
            pending,
            verifier: StandardVerifier::new(),
            expiry_window: DEFAULT_EXPIRY_WINDOW,
            scanned,
        })
    }

    /// Sets how many MSB checkpoints after the current one new transactions stay valid.
    pub fn with_expiry_window(mut self, window: u64) -> Self {
        self.expiry_window = window.max(1);
        self
    }

    /// The peer key (requester and subnet writer).
    pub fn peer(&self) -> PublicKey {
        self.peer.public()
    }

    /// The subnet.
    pub fn subnet(&self) -> Hash32 {
        self.subnet
    }

    /// The pending transactions, by tx hash.
    pub fn pending(&self) -> &BTreeMap<Hash32, PendingTx> {
        &self.pending
    }

    fn check_ledger(&self, ledger: &Ledger<SubnetMachine>) -> Result<(), TxFlowError> {
        if ledger.network() != self.subnet {
            return Err(TxFlowError::WrongLedger {
                expected: self.subnet,
                got: ledger.network(),
            });
        }
        Ok(())
    }

    /// Maps `command` to a call with the subnet's active contract (unconfirmed view).
    pub fn map(
        &self,
        subnet: &mut Ledger<SubnetMachine>,
        command: &str,
    ) -> Result<TxCall, TxFlowError> {
        self.check_ledger(subnet)?;
        let (contract, runtime) = subnet.read_with_machine(false, |state, machine| {
            machine
                .current_contract(state)
                .map(|c| (c, machine.runtime().clone()))
        })??;
        let contract = contract.ok_or(TxFlowError::NoContract)?;
        match runtime.map_command(&contract, command)?.result {
            Ok(Some(op)) => Ok(TxCall {
                function: op.function,
                args: op.args,
            }),
            Ok(None) => Err(TxFlowError::CommandNotFound(command.to_string())),
            Err(failure) => Err(TxFlowError::CommandFailed {
                command: command.to_string(),
                failure,
            }),
        }
    }

    /// Runs `function(args)` for `requester` on the subnet's unconfirmed view and reports what
    /// it would do; nothing is kept. Fails first where a real transaction would: the call's
    /// shape, `txen`, then the MSB preflight (account, deployment, fee) with the same typed
    /// refusal.
    pub fn simulate(
        &self,
        subnet: &mut Ledger<SubnetMachine>,
        msb: &mut dyn MsbAccess,
        function: &str,
        args: &[u8],
        requester: &PublicKey,
    ) -> Result<Simulation, TxFlowError> {
        self.check_ledger(subnet)?;
        subnet.read(false, |state| check_call(state, function, args))??;
        msb.preflight(requester, &self.subnet)?;
        let status = subnet.status();
        let checkpoint_time = subnet
            .checkpoint(status.latest_height)?
            .map_or(0, |c| c.body.time);
        // The hash a transaction of this call would have with nonce 0.
        let tx_hash = UserBody {
            action: UserAction::Tx {
                subnet: self.subnet,
                content: TxOp::content_hash(&self.subnet, function, args),
            },
            requester: *requester,
            nonce: 0,
            expires: 0,
        }
        .tx_hash(&msb.network());
        let context = CallContext {
            op_kind: OpKind::Tx,
            tx_hash,
            sender: *requester,
            validator: msb.validator(),
            log_position: status.position,
            checkpoint_time,
        };
        let invocation = Invocation::Tx(TxCall {
            function: function.to_string(),
            args: args.to_vec(),
        });
        let outcome = subnet.read_with_machine(false, |state, machine| {
            let contract = machine
                .current_contract(state)?
                .ok_or(TxFlowError::NoContract)?;
            let request = CallRequest {
                view: state,
                context,
                reserved: machine.reserved().clone(),
            };
            Ok::<_, TxFlowError>(
                machine
                    .runtime()
                    .execute(&contract, &request, &invocation)?,
            )
        })??;
        tracing::debug!(
            subnet = %self.subnet,
            function,
            fuel = outcome.fuel_used,
            ok = outcome.result.is_ok(),
            "simulated transaction"
        );
        Ok(Simulation {
            result: outcome.result,
            fuel: outcome.fuel_used,
            writes: outcome.writes,
            events: outcome.events,
            debug: outcome.debug,
        })
    }

    /// Writes pending records in one commit.
    fn persist<'r>(
        &self,
        records: impl IntoIterator<Item = (&'r Hash32, &'r PendingTx)>,
    ) -> Result<(), StoreError> {
        let mut records = records.into_iter().peekable();
        if records.peek().is_none() {
            return Ok(());
        }
        let mut batch = self.store.write()?;
        for (tx_hash, record) in records {
            batch.put(&self.table, tx_hash, record)?;
        }
        batch.commit()
    }

    fn forget(&mut self, hashes: &[Hash32]) -> Result<(), StoreError> {
        if hashes.is_empty() {
            return Ok(());
        }
        let mut batch = self.store.write()?;
        for hash in hashes {
            batch.delete(&self.table, hash)?;
        }
        batch.commit()?;
        for hash in hashes {
            self.pending.remove(hash);
        }
        Ok(())
    }

    /// Signs a transaction of `function(args)` as the peer, persists it as pending, then hands
    /// it to the validator. Returns its MSB tx hash. A typed refusal removes the record and is
    /// returned; a node fault leaves it pending (the next poll submits it again).
    pub fn submit(
        &mut self,
        subnet: &mut Ledger<SubnetMachine>,
        msb: &mut dyn MsbAccess,
        function: &str,
        args: &[u8],
    ) -> Result<Hash32, TxFlowError> {
        let call = TxCall {
            function: function.to_string(),
            args: args.to_vec(),
        };
        self.submit_many(subnet, msb, std::slice::from_ref(&call))?
            .pop()
            .expect("one result per call")
    }

    /// [`TxFlow::submit`] for many calls: the records are persisted in one commit before the
    /// first is handed to the validator, and their stages updated in one more. Returns one
    /// result per call, in order; the outer error is a fault of this node's store.
    pub fn submit_many(
        &mut self,
        subnet: &mut Ledger<SubnetMachine>,
        msb: &mut dyn MsbAccess,
        calls: &[TxCall],
    ) -> Result<Vec<Result<Hash32, TxFlowError>>, TxFlowError> {
        self.check_ledger(subnet)?;
        let checks: Vec<Result<(), TxFlowError>> = subnet.read(false, |state| {
            calls
                .iter()
                .map(|call| check_call(state, &call.function, &call.args))
                .collect()
        })?;
        let network = msb.network();
        let heights = msb.heights()?;
        let mut results = Vec::with_capacity(calls.len());
        let mut signed = Vec::new();
        for (index, (call, check)) in calls.iter().zip(checks).enumerate() {
            if let Err(e) = check {
                results.push(Err(e));
                continue;
            }
            let (tx_hash, record) = self.sign(&network, heights.latest, call);
            results.push(Ok(tx_hash));
            signed.push((index, tx_hash, record));
        }
        let outcomes = self.submit_records(
            msb,
            signed
                .iter()
                .map(|(_, hash, record)| (*hash, record.clone()))
                .collect(),
        )?;
        for ((index, _, _), outcome) in signed.iter().zip(outcomes) {
            if let Err(e) = outcome {
                results[*index] = Err(e);
            }
        }
        Ok(results)
    }

    /// The body of a transaction of `function(args)` on this subnet that `requester` signs
    /// (a wallet, through the RPC): its tx hash is what the requester's key signs.
    pub fn prepare(
        &self,
        requester: PublicKey,
        function: &str,
        args: &[u8],
        nonce: u64,
        msb_height: u64,
    ) -> UserBody {
        UserBody {
            action: UserAction::Tx {
                subnet: self.subnet,
                content: TxOp::content_hash(&self.subnet, function, args),
            },
            requester,
            nonce,
            expires: msb_height + self.expiry_window,
        }
    }

    /// Takes a transaction signed elsewhere (a wallet through the RPC) and follows it like
    /// [`TxFlow::submit`]: `partial` must be a `Tx` of this subnet committing to
    /// `function(args)`, signed by its requester, not expired; the call must pass the same
    /// checks. Returns its tx hash.
    pub fn submit_signed(
        &mut self,
        subnet: &mut Ledger<SubnetMachine>,
        msb: &mut dyn MsbAccess,
        function: &str,
        args: &[u8],
        partial: PartialOp,
    ) -> Result<Hash32, TxFlowError> {
        self.check_ledger(subnet)?;
        subnet.read(false, |state| check_call(state, function, args))??;
        let network = msb.network();
        let heights = msb.heights()?;
        let expected = TxOp::content_hash(&self.subnet, function, args);
        match &partial.body.action {
            UserAction::Tx { subnet, content }
                if *subnet == self.subnet && *content == expected => {}
            UserAction::Tx { .. } => {
                return Err(TxFlowError::Invalid(
                    "the signed op does not commit to this call on this subnet".into(),
                ));
            }
            _ => {
                return Err(TxFlowError::Invalid(
                    "the signed op is not a transaction".into(),
                ));
            }
        }
        if partial.body.expires <= heights.latest {
            return Err(TxFlowError::Invalid(format!(
                "the signed op expired at MSB height {} (now {})",
                partial.body.expires, heights.latest
            )));
        }
        let tx_hash = partial.body.tx_hash(&network);
        crate::crypto::verify_hash(&partial.body.requester, &tx_hash, &partial.requester_sig)
            .map_err(|_| TxFlowError::Invalid("the signature does not verify".into()))?;
        if self.pending.contains_key(&tx_hash) {
            return Ok(tx_hash);
        }
        let record = PendingTx {
            function: function.to_string(),
            args: ByteBuf::from(args.to_vec()),
            partial,
            stage: PendingStage::Submitting,
            msb_height: heights.latest,
        };
        self.submit_records(msb, vec![(tx_hash, record)])?
            .pop()
            .expect("one result per record")
            .map(|()| tx_hash)
    }

    /// Persists new pending records, then hands each to the validator: accepted ones are
    /// marked submitted, refused ones removed (their refusal returned), node faults left to
    /// the next poll. One result per record, in order.
    fn submit_records(
        &mut self,
        msb: &mut dyn MsbAccess,
        signed: Vec<(Hash32, PendingTx)>,
    ) -> Result<Vec<Result<(), TxFlowError>>, TxFlowError> {
        // Persisted before anyone else sees them: a crash from here on loses nothing.
        self.persist(signed.iter().map(|(hash, record)| (hash, record)))?;
        for (tx_hash, record) in &signed {
            self.pending.insert(*tx_hash, record.clone());
        }
        let mut results = Vec::with_capacity(signed.len());
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for (tx_hash, mut record) in signed {
            let function = record.function.clone();
            match msb.submit(record.partial.clone()) {
                Ok(_) => {
                    tracing::info!(subnet = %self.subnet, %tx_hash, function, "transaction submitted to MSB");
                    record.stage = PendingStage::Submitted;
                    accepted.push((tx_hash, record));
                    results.push(Ok(()));
                }
                Err(SubmitError::Rejected(rejection)) => {
                    tracing::info!(subnet = %self.subnet, %tx_hash, function, "MSB refuses the transaction: {rejection}");
                    refused.push(tx_hash);
                    results.push(Err(TxFlowError::Rejected(rejection)));
                }
                Err(SubmitError::Node(e)) => {
                    tracing::warn!(%tx_hash, "submitting to MSB failed, retrying on the next poll: {e}");
                    results.push(Err(TxFlowError::Ledger(e)));
                }
            }
        }
        self.persist(accepted.iter().map(|(hash, record)| (hash, record)))?;
        self.pending.extend(accepted);
        self.forget(&refused)?;
        Ok(results)
    }

    /// The pending record of a new transaction of `call`, signed by the peer.
    fn sign(&self, network: &Hash32, msb_height: u64, call: &TxCall) -> (Hash32, PendingTx) {
        let body = UserBody {
            action: UserAction::Tx {
                subnet: self.subnet,
                content: TxOp::content_hash(&self.subnet, &call.function, &call.args),
            },
            requester: self.peer.public(),
            nonce: rand::random(),
            expires: msb_height + self.expiry_window,
        };
        let tx_hash = body.tx_hash(network);
        let record = PendingTx {
            function: call.function.clone(),
            args: ByteBuf::from(call.args.clone()),
            partial: PartialOp::sign(&self.peer, network, body),
            stage: PendingStage::Submitting,
            msb_height,
        };
        (tx_hash, record)
    }

    /// Moves every pending transaction forward: resubmits those no validator accepted yet,
    /// appends the settled ones to this node's subnet log (records removed after the append
    /// committed), drops the refused and expired ones, and reports each outcome with the
    /// messages to broadcast.
    pub fn poll(
        &mut self,
        subnet: &mut Ledger<SubnetMachine>,
        msb: &mut dyn MsbAccess,
    ) -> Result<PollReport, TxFlowError> {
        self.check_ledger(subnet)?;
        let mut report = PollReport::default();
        if self.pending.is_empty() {
            return Ok(report);
        }
        let heights = msb.heights()?;
        let mut dropped: Vec<Hash32> = Vec::new();
        let mut unapplied: Vec<Hash32> = Vec::new();
        let mut settled: Vec<(Hash32, SettlementProof)> = Vec::new();
        let mut submitted: Vec<Hash32> = Vec::with_capacity(self.pending.len());
        let hashes: Vec<Hash32> = self.pending.keys().copied().collect();
        for tx_hash in hashes {
            if self.pending[&tx_hash].stage == PendingStage::Submitting
                && let Some(outcome) = self.resubmit(msb, &tx_hash)?
            {
                if matches!(outcome, TxOutcome::Dropped(_)) {
                    dropped.push(tx_hash);
                }
                report.txs.push(TxReport { tx_hash, outcome });
                continue;
            }
            submitted.push(tx_hash);
        }
        let proofs = msb.proofs(&submitted);
        for (tx_hash, proof) in submitted.into_iter().zip(proofs) {
            match proof {
                Ok(proof) => settled.push((tx_hash, proof)),
                Err(ProofError::NotApplied(_)) => unapplied.push(tx_hash),
                Err(ProofError::NotFinal(_)) => report.txs.push(TxReport {
                    tx_hash,
                    outcome: TxOutcome::Waiting(WaitReason::NotFinal),
                }),
                Err(ProofError::Ledger(e)) => return Err(e.into()),
            }
        }
        self.resolve_unapplied(msb, heights, &unapplied, &mut dropped, &mut report)?;
        for tx in &report.txs {
            if let TxOutcome::Dropped(reason) = &tx.outcome {
                tracing::warn!(subnet = %self.subnet, tx_hash = %tx.tx_hash, ?reason, "pending transaction dropped");
            }
        }
        self.forget(&dropped)?;
        self.append_settled(subnet, settled, &mut report)?;
        Ok(report)
    }

    /// Submits a record no validator accepted yet again. `None`: accepted (or already known
    /// to MSB), go on; otherwise the outcome to report.
    fn resubmit(
        &mut self,
        msb: &mut dyn MsbAccess,
        tx_hash: &Hash32,
    ) -> Result<Option<TxOutcome>, TxFlowError> {
        let mut record = self.pending[tx_hash].clone();
        match msb.submit(record.partial.clone()) {
            // Accepted now, already in the validator's pool, or applied on MSB: submitted.
            Ok(_)
            | Err(SubmitError::Rejected(Rejection::Pending(_)))
            | Err(SubmitError::Rejected(Rejection::Refused {
                code: RefusalCode::Duplicate,
                ..
            })) => {}
            Err(SubmitError::Rejected(
                rejection @ (Rejection::Busy(_) | Rejection::NotValidator),
            )) => {
                return Ok(Some(TxOutcome::Waiting(WaitReason::Resubmit(
                    rejection.to_string(),
                ))));
            }
            Err(SubmitError::Rejected(rejection)) => {
                return Ok(Some(TxOutcome::Dropped(DropReason::Refused {
                    code: rejection.code(),
                    message: rejection.to_string(),
                })));
            }
            Err(SubmitError::Node(e)) => {
                return Ok(Some(TxOutcome::Waiting(WaitReason::Resubmit(
                    e.to_string(),
                ))));
            }
        }
        record.stage = PendingStage::Submitted;
        self.persist([(tx_hash, &record)])?;
        self.pending.insert(*tx_hash, record);
        Ok(None)
    }

    /// A validator reached over the network did not take a transaction this flow counted as
    /// submitted ([`crate::node::LocalMsb::forwarding`]): `rejection` is its answer, `None`
    /// when no validator could be reached. A refusal of the rules drops the record; a busy,
    /// missing or unreachable validator sends it back to be submitted again on the next poll;
    /// an op already pending or applied stays submitted. `None` when the tx is not pending.
    pub fn forward_failed(
        &mut self,
        tx_hash: &Hash32,
        rejection: Option<Rejection>,
    ) -> Result<Option<TxOutcome>, TxFlowError> {
        let Some(record) = self.pending.get(tx_hash) else {
            return Ok(None);
        };
        let outcome = match rejection {
            Some(Rejection::Pending(_))
            | Some(Rejection::Refused {
                code: RefusalCode::Duplicate,
                ..
            }) => return Ok(None),
            None => TxOutcome::Waiting(WaitReason::Resubmit(
                "no MSB validator is reachable".to_string(),
            )),
            Some(rejection @ (Rejection::Busy(_) | Rejection::NotValidator)) => {
                TxOutcome::Waiting(WaitReason::Resubmit(rejection.to_string()))
            }
            Some(rejection) => TxOutcome::Dropped(DropReason::Refused {
                code: rejection.code(),
                message: rejection.to_string(),
            }),
        };
        if matches!(outcome, TxOutcome::Dropped(_)) {
            tracing::warn!(subnet = %self.subnet, %tx_hash, ?outcome, "pending transaction dropped");
            self.forget(&[*tx_hash])?;
        } else {
            let mut record = record.clone();
            record.stage = PendingStage::Submitting;
            self.persist([(tx_hash, &record)])?;
            self.pending.insert(*tx_hash, record);
        }
        Ok(Some(outcome))
    }

    /// Sorts transactions MSB has not applied: refused when applied (a receipt with an error),
    /// expired, or still waiting.
    fn resolve_unapplied(
        &mut self,
        msb: &mut dyn MsbAccess,
        heights: MsbHeights,
        unapplied: &[Hash32],
        dropped: &mut Vec<Hash32>,
        report: &mut PollReport,
    ) -> Result<(), TxFlowError> {
        if unapplied.is_empty() {
            self.scanned = self.scanned.max(heights.final_height);
            return Ok(());
        }
        // Settlement comes after the height a transaction was signed at; heights up to
        // `scanned` were searched already for every transaction pending then.
        let oldest = unapplied
            .iter()
            .map(|h| self.pending[h].msb_height)
            .min()
            .unwrap_or(0);
        let from = oldest.max(self.scanned) + 1;
        let wanted: HashSet<Hash32> = unapplied.iter().copied().collect();
        let refusals = msb.refusals(&wanted, from, heights.final_height)?;
        self.scanned = self.scanned.max(heights.final_height);
        for tx_hash in unapplied {
            let outcome = if let Some(refusal) = refusals.get(tx_hash) {
                TxOutcome::Dropped(DropReason::Refused {
                    code: Some(refusal.code),
                    message: refusal.message.clone(),
                })
            } else if heights.final_height > self.pending[tx_hash].expires() {
                TxOutcome::Dropped(DropReason::Expired {
                    expires: self.pending[tx_hash].expires(),
                    final_height: heights.final_height,
                })
            } else {
                TxOutcome::Waiting(WaitReason::NotApplied)
            };
            if matches!(outcome, TxOutcome::Dropped(_)) {
                dropped.push(*tx_hash);
            }
            report.txs.push(TxReport {
                tx_hash: *tx_hash,
                outcome,
            });
        }
        Ok(())
    }

    /// Appends the settled transactions this node can append, in entries of up to
    /// [`MAX_OPS_PER_ENTRY`] ops, removing each entry's records once it is committed.
    fn append_settled(
        &mut self,
        subnet: &mut Ledger<SubnetMachine>,
        settled: Vec<(Hash32, SettlementProof)>,
        report: &mut PollReport,
    ) -> Result<(), TxFlowError> {
        if settled.is_empty() {
            return Ok(());
        }
        let me = self.peer.public();
        let verifier = &self.verifier;
        let subnet_id = self.subnet;
        let pending = &self.pending;
        // Judged on the unconfirmed view: it holds what this node appended already.
        let (writer, verdicts) = subnet.read(false, |state| -> Result<_, TxFlowError> {
            let writer = state.get(&keys::writer(&me))?.is_some();
            let mut verdicts = Vec::with_capacity(settled.len());
            for (tx_hash, proof) in settled {
                if state.get(&keys::tx_by_hash(&tx_hash))?.is_some() {
                    verdicts.push((tx_hash, Err(TxOutcome::AlreadyApplied)));
                    continue;
                }
                let record = &pending[&tx_hash];
                let tx = TxOp {
                    function: record.function.clone(),
                    args: record.args.clone(),
                    settlement: ByteBuf::from(proof.encode()),
                };
                let verdict = match check_settlement(verifier, state, &subnet_id, &tx_hash, &tx) {
                    Ok(()) => Ok(encode_op(&SubnetOp::Tx(tx))),
                    Err(reason) => Err(TxOutcome::Waiting(WaitReason::ProofRefused(reason))),
                };
                verdicts.push((tx_hash, verdict));
            }
            Ok((writer, verdicts))
        })??;
        let mut batch: Vec<(Hash32, Vec<u8>)> = Vec::new();
        let mut already = Vec::new();
        for (tx_hash, verdict) in verdicts {
            match verdict {
                Ok(_) if !writer => report.txs.push(TxReport {
                    tx_hash,
                    outcome: TxOutcome::Waiting(WaitReason::NotWriter),
                }),
                Ok(op) => batch.push((tx_hash, op)),
                Err(outcome) => {
                    if outcome == TxOutcome::AlreadyApplied {
                        already.push(tx_hash);
                    } else {
                        tracing::warn!(%tx_hash, "settled transaction kept pending: {outcome:?}");
                    }
                    report.txs.push(TxReport { tx_hash, outcome });
                }
            }
        }
        self.forget(&already)?;
        if !writer && !batch.is_empty() {
            tracing::warn!(subnet = %self.subnet, key = %me, "settled transactions wait: this node is not a subnet writer");
        }
        let mut rest = batch.into_iter().peekable();
        while rest.peek().is_some() {
            let mut hashes = Vec::new();
            let mut ops = Vec::new();
            let mut bytes = 0;
            while let Some((_, op)) = rest.peek() {
                if !ops.is_empty()
                    && (ops.len() == MAX_OPS_PER_ENTRY || bytes + op.len() > MAX_ENTRY_BYTES)
                {
                    break;
                }
                let (tx_hash, op) = rest.next().expect("peeked");
                bytes += op.len();
                hashes.push(tx_hash);
                ops.push(op);
            }
            let entry: LogEntry = subnet.append(ops)?;
            // The entry is committed: only now are the records removed.
            self.forget(&hashes)?;
            tracing::info!(
                subnet = %self.subnet,
                txs = hashes.len(),
                seq = entry.body.seq,
                "settled transactions appended"
            );
            report.messages.push(Message::Entry(entry));
            report
                .txs
                .extend(hashes.into_iter().map(|tx_hash| TxReport {
                    tx_hash,
                    outcome: TxOutcome::Appended,
                }));
        }
        Ok(())
    }

    /// Appends a transaction settled on MSB (by this peer or any other) to this node's subnet
    /// log, after checking that `function(args)` is the call MSB settled for this subnet.
    /// Importing a transaction the subnet has already is reported, not repeated.
    pub fn import(
        &mut self,
        subnet: &mut Ledger<SubnetMachine>,
        msb: &mut dyn MsbAccess,
        tx_hash: &Hash32,
        function: &str,
        args: &[u8],
    ) -> Result<Imported, TxFlowError> {
        self.check_ledger(subnet)?;
        if let Some(index) = applied_index(subnet, tx_hash)? {
            return Ok(Imported::AlreadyApplied { index });
        }
        let proof = msb
            .proof(tx_hash)
            .map_err(|source| TxFlowError::NotSettled {
                tx_hash: *tx_hash,
                source,
            })?;
        let op = encode_op(&SubnetOp::Tx(TxOp {
            function: function.to_string(),
            args: ByteBuf::from(args.to_vec()),
            settlement: ByteBuf::from(proof.encode()),
        }));
        let me = self.peer.public();
        let subnet_id = self.subnet;
        let verifier = &self.verifier;
        subnet.read(false, |state| -> Result<(), TxFlowError> {
            check_call(state, function, args)?;
            let settlement = verifier.verify(state, &proof.encode()).map_err(|reason| {
                TxFlowError::ProofRefused {
                    tx_hash: *tx_hash,
                    reason,
                }
            })?;
            if settlement.subnet != subnet_id {
                return Err(TxFlowError::WrongSubnet {
                    tx_hash: *tx_hash,
                    settled: settlement.subnet,
                    subnet: subnet_id,
                });
            }
            let computed = TxOp::content_hash(&subnet_id, function, args);
            if settlement.content != computed {
                return Err(TxFlowError::ContentMismatch {
                    tx_hash: *tx_hash,
                    function: function.to_string(),
                    settled: settlement.content,
                    computed,
                });
            }
            if state.get(&keys::writer(&me))?.is_none() {
                return Err(TxFlowError::NotWriter(me));
            }
            Ok(())
        })??;
        let entry = subnet.append(vec![op])?;
        if self.pending.contains_key(tx_hash) {
            self.forget(&[*tx_hash])?;
        }
        tracing::info!(subnet = %self.subnet, %tx_hash, function, "settled transaction imported");
        Ok(Imported::Appended {
            messages: vec![Message::Entry(entry)],
        })
    }
}

/// Checks a `tx` op's settlement as the subnet will: the proof verifies against the subnet's
/// trust, names this subnet and the call's content hash.
fn check_settlement(
    verifier: &StandardVerifier,
    state: &dyn StateView,
    subnet: &Hash32,
    tx_hash: &Hash32,
    tx: &TxOp,
) -> Result<(), String> {
    let settlement = verifier.verify(state, &tx.settlement)?;
    if settlement.tx_hash != *tx_hash {
        return Err(format!("the proof settles {}", settlement.tx_hash));
    }
    if settlement.subnet != *subnet {
        return Err(format!("settled for subnet {}", settlement.subnet));
    }
    if settlement.content != TxOp::content_hash(subnet, &tx.function, &tx.args) {
        return Err("the call does not match the settled content hash".into());
    }
    Ok(())
}

/// `Some(index)` when the subnet's unconfirmed view has `tx/<hash>` (`index` = its `txi/<n>`).
fn applied_index(
    subnet: &mut Ledger<SubnetMachine>,
    tx_hash: &Hash32,
) -> Result<Option<Option<u64>>, TxFlowError> {
    let value = subnet.read(false, |state| state.get(&keys::tx_by_hash(tx_hash)))??;
    Ok(value.map(|bytes| rmp_serde::from_slice::<u64>(&bytes).ok()))
}
