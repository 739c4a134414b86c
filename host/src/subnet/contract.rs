//! The app's contract in the subnet: deployment by chunks, activation and migration,
//! features, and settled transactions with their index.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::keys;
use super::machine::{SubnetMachine, Verdict};
use super::ops::{CHUNK_BYTES, MAX_FUNCTION_BYTES, Params, TxOp};
use super::values;
use crate::crypto::{Hash32, PublicKey, hash};
use crate::ledger::{AppliedOp, LedgerError};
use crate::runtime::{
    CallContext, CallFailure, CallOutcome, CallRequest, Contract, Event, FeatureCall, Invocation,
    Limits, OpKind, RuntimeError, StateWrite, TxCall, validate_component,
};
use crate::store::{StateAccess, StateRecord, StateView, StoreError};

/// The active contract (`contract/current`) and each activation (`contract/history/<n>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractRecord {
    /// BLAKE3 of the component (hex).
    pub hash: String,
    /// The contract's name (from `describe`).
    pub name: String,
    /// The contract's version (from `describe`).
    pub version: String,
    /// Size in bytes.
    pub size: u64,
    /// Position of the op that activated it.
    pub position: u64,
    /// Height of the checkpoint that included that op.
    pub height: u64,
}

/// The outcome of the last deployment attempt (`contract/last-deploy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// BLAKE3 of the component (hex).
    pub hash: String,
    /// Position of the op that completed it.
    pub position: u64,
    /// `None` when activated; why not otherwise.
    pub error: Option<String>,
}

/// An announced deployment collecting its chunks (`contract/upload/<hash>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Upload {
    size: u64,
    chunks: Vec<Hash32>,
    received: u32,
    expires: u64,
}

/// A component whose chunks are all stored (`contract/stored/<hash>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    size: u64,
    chunks: u32,
}

/// An indexed transaction (`txi/<n>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// The MSB transaction hash (hex).
    pub tx: String,
    /// The contract function.
    pub function: String,
    /// Its MessagePack arguments.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// The requester (hex).
    pub ipk: String,
    /// The validator (hex).
    pub wp: String,
    /// The function's MessagePack result, when it succeeded.
    pub result: Option<serde_bytes::ByteBuf>,
    /// Why it failed, when it did (its writes were rolled back).
    pub err: Option<String>,
    /// Fuel used.
    pub fuel: u64,
    /// The events it emitted.
    pub events: Vec<Event>,
    /// Its position in the confirmed order.
    pub position: u64,
    /// The checkpoint height that included it.
    pub height: u64,
}

/// A [`TxRecord`] to write, borrowing its parts: the same fields in the same order, so the
/// same encoding.
#[derive(Serialize)]
struct TxRecordRef<'a> {
    tx: &'a str,
    function: &'a str,
    #[serde(with = "serde_bytes")]
    args: &'a [u8],
    ipk: &'a str,
    wp: &'a str,
    result: Option<&'a serde_bytes::Bytes>,
    err: Option<String>,
    fuel: u64,
    events: &'a [Event],
    position: u64,
    height: u64,
}

/// One read a traced call made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceRead {
    /// A key and whether it was present.
    Get {
        /// The key.
        key: Vec<u8>,
        /// The value's length, if present.
        found: Option<usize>,
    },
    /// A range scan and how many records it returned.
    Range {
        /// First key.
        start: Vec<u8>,
        /// End bound.
        end: Option<Vec<u8>>,
        /// Records returned.
        records: usize,
    },
}

/// What one traced transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxTrace {
    /// The transaction hash.
    pub tx_hash: Hash32,
    /// The function.
    pub function: String,
    /// Its position in the order.
    pub position: u64,
    /// Success, or why it failed.
    pub result: Result<Vec<u8>, String>,
    /// Fuel used.
    pub fuel: u64,
    /// Reads, in order.
    pub reads: Vec<TraceRead>,
    /// Writes (rolled back when it failed).
    pub writes: Vec<StateWrite>,
    /// Events.
    pub events: Vec<Event>,
    /// Debug lines the contract logged.
    pub debug: Vec<String>,
}

/// A view that records the reads passing through it.
struct RecordingView<'a> {
    inner: &'a dyn StateView,
    reads: RefCell<Vec<TraceRead>>,
}

impl StateView for RecordingView<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.inner.get(key)?;
        self.reads.borrow_mut().push(TraceRead::Get {
            key: key.to_vec(),
            found: value.as_ref().map(Vec::len),
        });
        Ok(value)
    }
    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateRecord>, StoreError> {
        let records = self.inner.range(start, end, limit)?;
        self.reads.borrow_mut().push(TraceRead::Range {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            records: records.len(),
        });
        Ok(records)
    }
}

fn node_fault(e: RuntimeError) -> LedgerError {
    LedgerError::Node(e.to_string())
}

impl SubnetMachine {
    /// Asks the machine to record what the transaction `tx_hash` does when it is applied next.
    pub fn trace(&self, tx_hash: Hash32) {
        *self.trace.lock().unwrap_or_else(|e| e.into_inner()) = Some((tx_hash, None));
        self.tracing.store(true, Ordering::Release);
    }

    /// The trace recorded since [`Self::trace`], if that transaction was applied.
    pub fn take_trace(&self) -> Option<TxTrace> {
        self.trace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|(_, t)| t.take())
    }

    fn traced(&self, tx_hash: &Hash32) -> bool {
        if !self.tracing.load(Ordering::Acquire) {
            return false;
        }
        self.trace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(h, _)| h == tx_hash)
    }

    /// The active contract record in `state`.
    pub fn contract_record(state: &dyn StateView) -> Result<Option<ContractRecord>, LedgerError> {
        values::get(state, keys::CONTRACT_CURRENT.as_bytes())
    }

    /// The bytes of a stored component.
    pub fn component_bytes(
        state: &dyn StateView,
        code: &Hash32,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        let Some(stored) = values::get::<Stored>(state, &keys::code_stored(code))? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(stored.size as usize);
        for index in 0..stored.chunks {
            match state.get(&keys::code_chunk(code, index))? {
                Some(chunk) => bytes.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
        Ok(Some(bytes))
    }

    /// The active contract, loaded for the current limits (cached by code hash).
    pub fn current_contract(
        &self,
        state: &dyn StateView,
    ) -> Result<Option<Arc<Contract>>, LedgerError> {
        self.contract_under(state, None)
    }

    /// [`Self::current_contract`], with the current limits when the caller has them.
    fn contract_under(
        &self,
        state: &dyn StateView,
        limits: Option<&Limits>,
    ) -> Result<Option<Arc<Contract>>, LedgerError> {
        let record =
            self.contract_memo
                .read(state, keys::CONTRACT_CURRENT.as_bytes(), |bytes| {
                    let record: ContractRecord = rmp_serde::from_slice(bytes).ok()?;
                    Hash32::from_hex(&record.hash).ok()
                })?;
        let Some(code) = record else {
            if state.get(keys::CONTRACT_CURRENT.as_bytes())?.is_some() {
                return Err(LedgerError::Node("corrupt contract record".into()));
            }
            return Ok(None);
        };
        let limits = match limits {
            Some(limits) => *limits,
            None => self.params_of(state)?.limits,
        };
        if let Some(contract) = self
            .contracts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&code)
            .filter(|c| *c.limits() == limits)
        {
            return Ok(Some(contract.clone()));
        }
        let bytes = Self::component_bytes(state, &code)?
            .ok_or_else(|| LedgerError::Node(format!("contract {code} is not stored")))?;
        let contract = self.runtime.load(&bytes, &limits).map_err(node_fault)?;
        self.contracts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(code, contract.clone());
        Ok(Some(contract))
    }

    /// Whether the active contract (if any) still validates under `limits`: parameters that
    /// refuse it would make loading it a node fault on every node, halting the subnet.
    pub(super) fn fits_limits(
        state: &dyn StateView,
        limits: &Limits,
    ) -> Result<Verdict, LedgerError> {
        let Some(record) = Self::contract_record(state)? else {
            return Ok(Ok(()));
        };
        let code = Hash32::from_hex(&record.hash)
            .map_err(|e| LedgerError::Node(format!("corrupt contract record: {e}")))?;
        let Some(bytes) = Self::component_bytes(state, &code)? else {
            return Ok(Ok(()));
        };
        Ok(validate_component(&bytes, limits)
            .map(|_| ())
            .map_err(|e| format!("the active contract would not load under these limits: {e}")))
    }

    pub(super) fn apply_writes(
        state: &mut dyn StateAccess,
        writes: &[StateWrite],
    ) -> Result<(), LedgerError> {
        for write in writes {
            match &write.value {
                Some(value) => state.put(&write.key, value)?,
                None => state.delete(&write.key)?,
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn feature(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        signer: &PublicKey,
        hash: &Hash32,
        feature: &str,
        key: &str,
        value: &[u8],
    ) -> Result<Verdict, LedgerError> {
        let Some(contract) = self.current_contract(state)? else {
            return Ok(Err("no contract is deployed".into()));
        };
        let request = CallRequest {
            view: &*state,
            context: CallContext {
                op_kind: OpKind::Feature,
                tx_hash: *hash,
                sender: *signer,
                validator: None,
                log_position: op.position,
                checkpoint_time: op.time,
            },
            reserved: self.reserved.clone(),
        };
        let invocation = Invocation::Feature(FeatureCall {
            feature: feature.to_string(),
            key: key.to_string(),
            value: value.to_vec(),
        });
        let outcome = self
            .runtime
            .execute(&contract, &request, &invocation)
            .map_err(node_fault)?;
        match outcome.result {
            Ok(_) => Self::apply_writes(state, &outcome.writes)?,
            // The entry is consumed (its guard is written); the contract's writes are not.
            Err(e) => tracing::debug!(subnet = %self.id, feature, key, "feature failed: {e}"),
        }
        Ok(Ok(()))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn announce_deploy(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        params: &Params,
        expires: u64,
        code: &Hash32,
        size: u64,
        chunks: &[Hash32],
    ) -> Result<Verdict, LedgerError> {
        if Self::contract_record(state)?.is_some_and(|r| r.hash == code.to_hex()) {
            return Ok(Err(format!("contract {code} is already active")));
        }
        if values::get::<Stored>(state, &keys::code_stored(code))?.is_some() {
            // Stored earlier (an older version): activate it again.
            return self.activate(state, op, params, code);
        }
        if let Some(previous) = values::get::<Upload>(state, &keys::upload(code))? {
            // A new announcement restarts an unfinished (say expired) upload: the chunks it
            // stored are dropped, or they would be refused as duplicates and the upload could
            // never complete.
            for index in 0..previous.chunks.len() {
                state.delete(&keys::code_chunk(code, index as u32))?;
            }
        }
        let upload = Upload {
            size,
            chunks: chunks.to_vec(),
            received: 0,
            expires,
        };
        values::put(state, &keys::upload(code), &upload)?;
        Ok(Ok(()))
    }

    pub(super) fn contract_chunk(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        params: &Params,
        code: &Hash32,
        index: u32,
        bytes: &[u8],
    ) -> Result<Verdict, LedgerError> {
        let upload_key = keys::upload(code);
        let Some(mut upload) = values::get::<Upload>(state, &upload_key)? else {
            return Ok(Err(format!("no deployment of {code} is announced")));
        };
        if op.height > upload.expires {
            return Ok(Err(format!("the deployment of {code} expired")));
        }
        let Some(expected) = upload.chunks.get(index as usize) else {
            return Ok(Err(format!("chunk {index} is beyond the announced chunks")));
        };
        let start = u64::from(index) * CHUNK_BYTES as u64;
        let len = (upload.size - start).min(CHUNK_BYTES as u64);
        if bytes.len() as u64 != len {
            return Ok(Err(format!(
                "chunk {index} has {} bytes, expected {len}",
                bytes.len()
            )));
        }
        if hash(bytes) != *expected {
            return Ok(Err(format!(
                "chunk {index} does not match its announced hash"
            )));
        }
        let chunk_key = keys::code_chunk(code, index);
        if state.get(&chunk_key)?.is_some() {
            return Ok(Err(format!("chunk {index} is already stored")));
        }
        state.put(&chunk_key, bytes)?;
        upload.received += 1;
        if (upload.received as usize) < upload.chunks.len() {
            values::put(state, &upload_key, &upload)?;
            return Ok(Ok(()));
        }
        state.delete(&upload_key)?;
        let stored = Stored {
            size: upload.size,
            chunks: upload.chunks.len() as u32,
        };
        values::put(state, &keys::code_stored(code), &stored)?;
        self.activate(state, op, params, code)
    }

    fn record_deploy(
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        code: &Hash32,
        error: Option<String>,
    ) -> Result<(), LedgerError> {
        if let Some(error) = &error {
            tracing::warn!(%code, "contract deployment refused: {error}");
        }
        let record = DeployRecord {
            hash: code.to_hex(),
            position: op.position,
            error,
        };
        values::put(state, keys::CONTRACT_LAST_DEPLOY.as_bytes(), &record)
    }

    /// Validates the stored component and switches to it, calling `init` (first contract) or
    /// `migrate(previous version)`; a failure keeps the previous contract and is recorded.
    fn activate(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        params: &Params,
        code: &Hash32,
    ) -> Result<Verdict, LedgerError> {
        let Some(bytes) = Self::component_bytes(state, code)? else {
            return Ok(Err(format!("component {code} is not stored")));
        };
        if hash(&bytes) != *code {
            Self::record_deploy(
                state,
                op,
                code,
                Some("the chunks do not hash to the announced component".into()),
            )?;
            return Ok(Ok(()));
        }
        if let Err(e) = validate_component(&bytes, &params.limits) {
            Self::record_deploy(state, op, code, Some(format!("invalid component: {e}")))?;
            return Ok(Ok(()));
        }
        let contract = match self.runtime.load(&bytes, &params.limits) {
            Ok(contract) => contract,
            Err(e @ (RuntimeError::Validation(_) | RuntimeError::Limits(_))) => {
                Self::record_deploy(state, op, code, Some(e.to_string()))?;
                return Ok(Ok(()));
            }
            Err(e) => return Err(node_fault(e)),
        };
        let info = match self.runtime.describe(&contract).map_err(node_fault)?.result {
            Ok(info) => info,
            Err(e) => {
                Self::record_deploy(state, op, code, Some(format!("describe failed: {e}")))?;
                return Ok(Ok(()));
            }
        };
        let previous = Self::contract_record(state)?;
        let request = CallRequest {
            view: &*state,
            context: CallContext {
                op_kind: if previous.is_some() {
                    OpKind::Migrate
                } else {
                    OpKind::Init
                },
                tx_hash: *code,
                sender: self.genesis.creator,
                validator: None,
                log_position: op.position,
                checkpoint_time: op.time,
            },
            reserved: self.reserved.clone(),
        };
        let outcome = match &previous {
            Some(previous) => self
                .runtime
                .migrate(&contract, &request, &previous.version)
                .map_err(node_fault)?,
            None => self
                .runtime
                .init(&contract, &request, &[])
                .map_err(node_fault)?,
        };
        if let Err(e) = outcome.result {
            let what = if previous.is_some() {
                "migrate"
            } else {
                "init"
            };
            Self::record_deploy(state, op, code, Some(format!("{what} failed: {e}")))?;
            return Ok(Ok(()));
        }
        Self::apply_writes(state, &outcome.writes)?;
        let record = ContractRecord {
            hash: code.to_hex(),
            name: info.name,
            version: info.version,
            size: bytes.len() as u64,
            position: op.position,
            height: op.height,
        };
        let n = values::counter(state, keys::CONTRACT_HISTORY_LEN.as_bytes())?;
        values::put(state, &keys::contract_history(n), &record)?;
        values::put(state, keys::CONTRACT_HISTORY_LEN.as_bytes(), &(n + 1))?;
        values::put(state, keys::CONTRACT_CURRENT.as_bytes(), &record)?;
        Self::record_deploy(state, op, code, None)?;
        self.contracts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*code, contract);
        tracing::info!(subnet = %self.id, %code, version = %record.version, position = op.position, "contract activated");
        Ok(Ok(()))
    }

    pub(super) fn apply_tx(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        params: &Params,
        tx: &TxOp,
    ) -> Result<Verdict, LedgerError> {
        if tx.function.is_empty()
            || tx.function.len() > MAX_FUNCTION_BYTES
            || tx.function.chars().any(char::is_control)
        {
            return Ok(Err(format!(
                "function name must be 1 to {MAX_FUNCTION_BYTES} bytes without control characters"
            )));
        }
        let settlement = match self.verifier.verify(&*state, &tx.settlement) {
            Ok(s) => s,
            Err(e) => return Ok(Err(format!("settlement refused: {e}"))),
        };
        if settlement.subnet != self.id {
            return Ok(Err("settled for another subnet".into()));
        }
        if settlement.content != TxOp::content_hash(&self.id, &tx.function, &tx.args) {
            return Ok(Err(
                "the call does not match the settled content hash".into()
            ));
        }
        let by_hash = keys::tx_by_hash(&settlement.tx_hash);
        if state.get(&by_hash)?.is_some() {
            return Ok(Err(format!(
                "transaction {} is already applied",
                settlement.tx_hash
            )));
        }
        let traced = self.traced(&settlement.tx_hash);
        let (outcome, reads) = if values::get::<bool>(state, keys::TXEN.as_bytes())? == Some(false)
        {
            (
                failed(CallFailure::Contract("transactions are disabled".into())),
                Vec::new(),
            )
        } else if let Some(contract) = self.contract_under(state, Some(&params.limits))? {
            let recorder = RecordingView {
                inner: &*state,
                reads: RefCell::new(Vec::new()),
            };
            let view: &dyn StateView = if traced { &recorder } else { &*state };
            let request = CallRequest {
                view,
                context: CallContext {
                    op_kind: OpKind::Tx,
                    tx_hash: settlement.tx_hash,
                    sender: settlement.requester,
                    validator: Some(settlement.validator),
                    log_position: op.position,
                    checkpoint_time: op.time,
                },
                reserved: self.reserved.clone(),
            };
            let invocation = Invocation::Tx(TxCall {
                function: tx.function.clone(),
                args: tx.args.to_vec(),
            });
            let outcome = self
                .runtime
                .execute(&contract, &request, &invocation)
                .map_err(node_fault)?;
            (outcome, recorder.reads.into_inner())
        } else {
            (
                failed(CallFailure::Contract("no contract is deployed".into())),
                Vec::new(),
            )
        };
        if outcome.result.is_ok() {
            Self::apply_writes(state, &outcome.writes)?;
        }
        let n = values::counter(state, keys::TXL.as_bytes())?;
        let requester = settlement.requester;
        let user_count = keys::user_tx_count(&requester);
        let u = values::counter(state, &user_count)?;
        let record = TxRecordRef {
            tx: &keys::hex32(&settlement.tx_hash.0),
            function: &tx.function,
            args: &tx.args,
            ipk: &keys::hex32(&requester.0),
            wp: &keys::hex32(&settlement.validator.0),
            result: outcome
                .result
                .as_ref()
                .ok()
                .map(|r| serde_bytes::Bytes::new(r)),
            err: outcome.result.as_ref().err().map(ToString::to_string),
            fuel: outcome.fuel_used,
            events: &outcome.events,
            position: op.position,
            height: op.height,
        };
        values::put(state, &keys::tx_record(n), &record)?;
        values::put(state, keys::TXL.as_bytes(), &(n + 1))?;
        values::put(state, &by_hash, &n)?;
        values::put(state, &keys::user_tx(&requester, u), &n)?;
        values::put(state, &user_count, &(u + 1))?;
        if traced {
            let trace = TxTrace {
                tx_hash: settlement.tx_hash,
                function: tx.function.clone(),
                position: op.position,
                result: outcome.result.map_err(|e| e.to_string()),
                fuel: outcome.fuel_used,
                reads,
                writes: outcome.writes,
                events: outcome.events,
                debug: outcome.debug,
            };
            if let Some((_, slot)) = self
                .trace
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                *slot = Some(trace);
            }
        }
        Ok(Ok(()))
    }
}

fn failed(failure: CallFailure) -> CallOutcome<Vec<u8>> {
    CallOutcome {
        result: Err(failure),
        fuel_used: 0,
        writes: Vec::new(),
        events: Vec::new(),
        debug: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record written through [`TxRecordRef`] reads back as the [`TxRecord`] it mirrors, and
    /// encodes to the same bytes.
    #[test]
    fn borrowed_record_encodes_as_the_record() {
        for (result, err, events) in [
            (Some(vec![0x93, 1, 2, 3]), None, Vec::new()),
            (
                None,
                Some("contract error: nope".to_string()),
                vec![Event {
                    topic: "moved".into(),
                    data: vec![0xc0],
                }],
            ),
        ] {
            let record = TxRecord {
                tx: "ab".repeat(32),
                function: "fill".into(),
                args: vec![0x81, 0xa1, b'n', 0x01],
                ipk: "cd".repeat(32),
                wp: "ef".repeat(32),
                result: result.clone().map(serde_bytes::ByteBuf::from),
                err: err.clone(),
                fuel: 1234,
                events: events.clone(),
                position: 77,
                height: 3,
            };
            let borrowed = TxRecordRef {
                tx: &record.tx,
                function: &record.function,
                args: &record.args,
                ipk: &record.ipk,
                wp: &record.wp,
                result: result.as_deref().map(serde_bytes::Bytes::new),
                err,
                fuel: record.fuel,
                events: &events,
                position: record.position,
                height: record.height,
            };
            assert_eq!(values::encode(&borrowed), values::encode(&record));
        }
    }
}
