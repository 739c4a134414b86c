//! The subnet state machine: genesis, membership and the dispatch of every op.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::SubnetGenesis;
use super::contract::TxTrace;
use super::keys;
use super::ops::{
    self, Action, CHUNK_BYTES, MAX_INDEXERS, MAX_SYSTEM_OP_BYTES, Params, SignedOp, SubnetOp,
};
use super::settlement::{MsbTrust, SettlementVerifier};
use super::values::{self, on_off};
use crate::crypto::{BatchItem, Hash32, PublicKey, Signature, VerifiedSignatures};
use crate::ledger::{AppliedOp, LedgerError, StateMachine};
use crate::runtime::{Contract, ReservedKeys, Runtime, runtime_protocol_version};
use crate::store::{StateAccess, StateView, StoreError};

/// The verdict of the rules on one op: applied, or refused with the reason (state unchanged).
pub(super) type Verdict = Result<(), String>;

/// Most expired replay guards pruned while applying one op.
const PRUNE_PER_OP: usize = 256;

/// The identity record of a subnet (`sys/subnet`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SubnetRecord {
    id: String,
    creator: String,
    channel: String,
    salt: String,
    runtime: String,
}

/// The subnet's [`StateMachine`]: system rules plus the app's contract.
pub struct SubnetMachine {
    pub(super) genesis: SubnetGenesis,
    pub(super) id: Hash32,
    pub(super) runtime: Arc<Runtime>,
    pub(super) verifier: Arc<dyn SettlementVerifier>,
    pub(super) reserved: Arc<ReservedKeys>,
    pub(super) contracts: Mutex<HashMap<Hash32, Arc<Contract>>>,
    signatures: VerifiedSignatures,
    /// Signed and tx ops decoded by `prepare`, by their bytes; each is taken when the op of
    /// the same bytes is applied (it decodes to the same op).
    prepared: values::Prepared<SubnetOp>,
    params_memo: values::Memo<Params>,
    pub(super) contract_memo: values::Memo<Hash32>,
    pub(super) trace: Mutex<Option<(Hash32, Option<TxTrace>)>>,
    /// Whether a trace was ever asked for (spares the lock of `trace` on every tx otherwise).
    pub(super) tracing: AtomicBool,
}

impl std::fmt::Debug for SubnetMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubnetMachine")
            .field("id", &self.id)
            .finish()
    }
}

impl SubnetMachine {
    /// The machine of the subnet `genesis` defines, running contracts on `runtime` and
    /// checking settlements with `verifier`.
    pub fn new(
        genesis: SubnetGenesis,
        runtime: Arc<Runtime>,
        verifier: Arc<dyn SettlementVerifier>,
    ) -> Self {
        SubnetMachine {
            id: genesis.id(),
            genesis,
            runtime,
            verifier,
            reserved: keys::reserved(),
            contracts: Mutex::new(HashMap::new()),
            signatures: VerifiedSignatures::new(),
            prepared: values::Prepared::default(),
            params_memo: values::Memo::default(),
            contract_memo: values::Memo::default(),
            trace: Mutex::new(None),
            tracing: AtomicBool::new(false),
        }
    }

    /// The machine of `genesis` with the standard settlement verifier (MSB proofs, or
    /// attestations when the subnet's admin chose that scheme).
    pub fn standard(genesis: SubnetGenesis, runtime: Arc<Runtime>) -> Self {
        Self::new(
            genesis,
            runtime,
            Arc::new(crate::msb::StandardVerifier::new()),
        )
    }

    /// The genesis recorded in a subnet's state (`sys/subnet`), so that a store or an exported
    /// log is all it takes to rebuild the machine.
    pub fn genesis_in(state: &dyn StateView) -> Result<Option<SubnetGenesis>, LedgerError> {
        let Some(record) = values::get::<SubnetRecord>(state, keys::SUBNET.as_bytes())? else {
            return Ok(None);
        };
        let creator = PublicKey::from_hex(&record.creator)
            .map_err(|e| LedgerError::Invalid(format!("subnet record: {e}")))?;
        let salt: [u8; 16] = crate::crypto::parse_fixed_hex(&record.salt)
            .map_err(|e| LedgerError::Invalid(format!("subnet record: {e}")))?;
        Ok(Some(SubnetGenesis {
            creator,
            channel: record.channel,
            salt,
        }))
    }

    /// The subnet id (the ledger's network id).
    pub fn id(&self) -> Hash32 {
        self.id
    }

    /// The genesis.
    pub fn genesis(&self) -> &SubnetGenesis {
        &self.genesis
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The reserved keys contracts cannot write.
    pub fn reserved(&self) -> &Arc<ReservedKeys> {
        &self.reserved
    }

    /// The consensus parameters in `state`.
    pub fn params(state: &dyn StateView) -> Result<Params, LedgerError> {
        Ok(values::get(state, keys::PARAMS.as_bytes())?.unwrap_or_default())
    }

    /// The consensus parameters in `state`, decoded once per change.
    pub(super) fn params_of(&self, state: &dyn StateView) -> Result<Params, LedgerError> {
        Ok(self
            .params_memo
            .read(state, keys::PARAMS.as_bytes(), |b| {
                rmp_serde::from_slice(b).ok()
            })?
            .unwrap_or_default())
    }

    /// The admin in `state`, if any.
    pub fn admin(state: &dyn StateView) -> Result<Option<PublicKey>, LedgerError> {
        values::key_hex(state, keys::ADMIN.as_bytes())
    }

    /// Whether peers may add themselves as writers (`/set_auto_add_writers`) in `state`.
    pub fn auto_add_writers(state: &dyn StateView) -> Result<bool, LedgerError> {
        values::switch(state, keys::AUTO_ADD_WRITERS)
    }

    /// Whether `key` was removed as a writer (and may not add itself again) in `state`.
    pub fn is_banned(state: &dyn StateView, key: &PublicKey) -> Result<bool, LedgerError> {
        Ok(state.get(&keys::banned(key))?.is_some())
    }

    /// Whether `key` is a moderator in `state`.
    pub(super) fn is_mod(state: &dyn StateView, key: &PublicKey) -> Result<bool, LedgerError> {
        values::flag(state, &keys::moderator(key))
    }

    fn indexer_list(state: &dyn StateView) -> Result<Vec<PublicKey>, LedgerError> {
        Ok(
            values::get::<Vec<String>>(state, keys::INDEXERS.as_bytes())?
                .unwrap_or_default()
                .iter()
                .filter_map(|hex| PublicKey::from_hex(hex).ok())
                .collect(),
        )
    }

    fn put_indexers(
        state: &mut dyn StateAccess,
        indexers: &[PublicKey],
    ) -> Result<(), LedgerError> {
        let hex: Vec<String> = indexers.iter().map(PublicKey::to_hex).collect();
        values::put(state, keys::INDEXERS.as_bytes(), &hex)
    }

    fn writer_exists(state: &dyn StateView, key: &PublicKey) -> Result<bool, LedgerError> {
        Ok(state.get(&keys::writer(key))?.is_some())
    }

    /// Removes replay guards that expired before `height` (a bounded number per op).
    fn prune_guards(&self, state: &mut dyn StateAccess, height: u64) -> Result<(), LedgerError> {
        let pruned = values::counter(state, keys::GUARDS_PRUNED.as_bytes())?;
        if pruned >= height {
            return Ok(());
        }
        let bound = keys::guard_index_bound(height);
        let expired = state.range(keys::GUARD_INDEX.as_bytes(), Some(&bound), PRUNE_PER_OP)?;
        let done = expired.len() < PRUNE_PER_OP;
        for (key, _) in expired {
            // `sys/guard/<expiry>/<hash>` → `sh/<hash>`.
            if let Some(hash) = key.rsplit(|b| *b == b'/').next() {
                let mut guard = b"sh/".to_vec();
                guard.extend_from_slice(hash);
                state.delete(&guard)?;
            }
            state.delete(&key)?;
        }
        if done {
            values::put(state, keys::GUARDS_PRUNED.as_bytes(), &height)?;
        }
        Ok(())
    }

    fn apply_op(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
    ) -> Result<Verdict, LedgerError> {
        self.prune_guards(state, op.height)?;
        let params = self.params_of(state)?;
        let max = (CHUNK_BYTES + 1024).max(params.max_tx_bytes as usize);
        if op.bytes.len() > max {
            return Ok(Err(format!("op of {} bytes is oversized", op.bytes.len())));
        }
        if let Some(decoded) = self.prepared.take(op.bytes) {
            let verdict = self.apply_decoded(state, op, &params, &decoded);
            // Freed where it was decoded.
            self.prepared.used(decoded);
            return verdict;
        }
        match ops::decode_op(op.bytes) {
            Ok(decoded) => self.apply_decoded(state, op, &params, &decoded),
            Err(e) => Ok(Err(format!("malformed op: {e}"))),
        }
    }

    fn apply_decoded(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        params: &Params,
        decoded: &SubnetOp,
    ) -> Result<Verdict, LedgerError> {
        match decoded {
            SubnetOp::AddAdmin { key } => {
                if op.bytes.len() > MAX_SYSTEM_OP_BYTES {
                    return Ok(Err("oversized op".into()));
                }
                self.add_admin(state, op, *key)
            }
            SubnetOp::Signed(signed) => {
                let limit = if matches!(signed.action, Action::DeployContract { .. }) {
                    MAX_SYSTEM_OP_BYTES * 4
                } else {
                    MAX_SYSTEM_OP_BYTES
                };
                if op.bytes.len() > limit {
                    return Ok(Err("oversized signed op".into()));
                }
                self.apply_signed(state, op, params, signed)
            }
            SubnetOp::ContractChunk { hash, index, bytes } => {
                self.contract_chunk(state, op, params, hash, *index, bytes)
            }
            SubnetOp::MsbIndexerChange { proof } => {
                if op.bytes.len() > params.max_tx_bytes as usize {
                    return Ok(Err("oversized indexer change".into()));
                }
                self.msb_indexer_change(state, proof)
            }
            SubnetOp::Tx(tx) => {
                if op.bytes.len() > params.max_tx_bytes as usize {
                    return Ok(Err(format!(
                        "tx op of {} bytes exceeds {}",
                        op.bytes.len(),
                        params.max_tx_bytes
                    )));
                }
                self.apply_tx(state, op, params, tx)
            }
        }
    }

    fn msb_indexer_change(
        &self,
        state: &mut dyn StateAccess,
        proof: &[u8],
    ) -> Result<Verdict, LedgerError> {
        let change = match self.verifier.verify_indexer_change(&*state, proof) {
            Ok(change) => change,
            Err(e) => return Ok(Err(format!("MSB indexer change refused: {e}"))),
        };
        let Some(mut trust) = values::get::<MsbTrust>(state, keys::MSB.as_bytes())? else {
            return Ok(Err("the subnet trusts no MSB yet".into()));
        };
        if change.height <= trust.changed_at {
            // MSB changes its indexer set at most once per checkpoint: changes apply in order,
            // each verified with the set in force before it.
            return Ok(Err(
                "not a later MSB indexer change than the last one applied".into(),
            ));
        }
        let guard = keys::tx_by_hash(&change.tx_hash);
        if state.get(&guard)?.is_some() {
            return Ok(Err("this MSB indexer change is already applied".into()));
        }
        let hex = change.key.to_hex();
        if change.added {
            if trust.indexers.contains(&hex) {
                return Ok(Err(format!("{} is already trusted", change.key)));
            }
            if trust.indexers.len() >= MAX_INDEXERS {
                return Ok(Err("too many trusted MSB indexers".into()));
            }
            trust.indexers.push(hex);
        } else {
            if !trust.indexers.contains(&hex) {
                return Ok(Err(format!("{} is not trusted", change.key)));
            }
            if trust.indexers.len() == 1 {
                return Ok(Err("the last trusted MSB indexer cannot be removed".into()));
            }
            trust.indexers.retain(|k| *k != hex);
        }
        trust.changed_at = change.height;
        values::put(state, keys::MSB.as_bytes(), &trust)?;
        values::put(state, &guard, &change.height)?;
        Ok(Ok(()))
    }

    fn add_admin(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        key: PublicKey,
    ) -> Result<Verdict, LedgerError> {
        if op.writer != self.genesis.creator {
            return Ok(Err(
                "only the subnet creator's log can set the first admin".into()
            ));
        }
        if state.get(keys::ADMIN.as_bytes())?.is_some() {
            return Ok(Err("the admin is already set".into()));
        }
        if key.validate().is_err() {
            return Ok(Err("the admin key is not a valid public key".into()));
        }
        values::put(state, keys::ADMIN.as_bytes(), &Some(key.to_hex()))?;
        tracing::info!(subnet = %self.id, admin = %key, "admin added");
        Ok(Ok(()))
    }

    fn apply_signed(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        params: &Params,
        signed: &SignedOp,
    ) -> Result<Verdict, LedgerError> {
        if let Err(e) = signed.action.check_fields(params) {
            return Ok(Err(format!("{}: {e}", signed.action.name())));
        }
        if op.height > signed.expires {
            return Ok(Err(format!(
                "expired at height {} (applying at {})",
                signed.expires, op.height
            )));
        }
        if signed.expires > op.height.saturating_add(params.max_op_ttl) {
            return Ok(Err(format!(
                "expiry {} is beyond the allowed {} heights",
                signed.expires, params.max_op_ttl
            )));
        }
        let hash = signed.hash(&self.id);
        let guard = keys::replay_guard(&hash);
        if state.get(&guard)?.is_some() {
            return Ok(Err("replayed signature".into()));
        }
        if !self
            .signatures
            .verify(&signed.signer, &hash, &signed.signature)
        {
            return Ok(Err("signature does not verify".into()));
        }
        let verdict = self.apply_action(state, op, params, signed, &hash)?;
        if verdict.is_ok() {
            values::put(state, &guard, &signed.expires)?;
            state.put(&keys::guard_index(signed.expires, &hash), b"")?;
        }
        Ok(verdict)
    }

    fn require_admin(state: &dyn StateView, signer: &PublicKey) -> Result<Verdict, LedgerError> {
        Ok(match Self::admin(state)? {
            Some(admin) if admin == *signer => Ok(()),
            Some(_) => Err("not signed by the admin".into()),
            None => Err("the subnet has no admin".into()),
        })
    }

    fn apply_action(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        params: &Params,
        signed: &SignedOp,
        hash: &Hash32,
    ) -> Result<Verdict, LedgerError> {
        let signer = &signed.signer;
        // Actions a user, a moderator or the joining key may sign.
        match &signed.action {
            Action::AutoAddWriter => return self.auto_add_writer(state, signer),
            Action::MuteStatus { user, muted } => {
                return self.mute_status(state, signer, user, *muted);
            }
            Action::SetNick { user, nick } => return self.set_nick(state, signer, user, nick),
            Action::PostMessage {
                text,
                attachments,
                reply_to,
            } => {
                return self.post_message(state, op, signer, hash, text, attachments, *reply_to);
            }
            Action::DeleteMessage { id } => return self.delete_message(state, signer, *id),
            Action::PinMessage { id, pinned } => {
                return self.pin_message(state, signer, *id, *pinned);
            }
            Action::UnpinMessage { pin } => return self.unpin_message(state, signer, *pin),
            _ => {}
        }
        if let Err(e) = Self::require_admin(state, signer)? {
            return Ok(Err(e));
        }
        match &signed.action {
            Action::UpdateAdmin { admin } => {
                if admin.is_some_and(|a| a.validate().is_err()) {
                    return Ok(Err("the new admin is not a valid public key".into()));
                }
                values::put(
                    state,
                    keys::ADMIN.as_bytes(),
                    &admin.as_ref().map(PublicKey::to_hex),
                )?;
                Ok(Ok(()))
            }
            Action::AddWriter { key } => self.add_writer(state, key, false),
            Action::AddIndexer { key } => self.add_writer(state, key, true),
            Action::RemoveWriter { key } => self.remove_writer(state, key),
            Action::RemoveIndexer { key } => self.remove_indexer(state, key),
            Action::SetSequencer { key } => {
                let mut indexers = Self::indexer_list(state)?;
                let Some(at) = indexers.iter().position(|k| k == key) else {
                    return Ok(Err(format!("{key} is not an indexer")));
                };
                let key = indexers.remove(at);
                indexers.insert(0, key);
                Self::put_indexers(state, &indexers)?;
                Ok(Ok(()))
            }
            Action::SetAutoAddWriters { enabled } => {
                values::put(state, keys::AUTO_ADD_WRITERS.as_bytes(), on_off(*enabled))?;
                Ok(Ok(()))
            }
            Action::SetChatStatus { enabled } => {
                values::put(state, keys::CHAT_STATUS.as_bytes(), on_off(*enabled))?;
                Ok(Ok(()))
            }
            Action::EnableTransactions { enabled } => {
                values::put(state, keys::TXEN.as_bytes(), enabled)?;
                Ok(Ok(()))
            }
            Action::EnableWhitelist { enabled } => {
                values::put(state, keys::WLST.as_bytes(), enabled)?;
                Ok(Ok(()))
            }
            Action::SetWhitelistStatus { user, status } => {
                values::put(state, &keys::whitelist(user), status)?;
                Ok(Ok(()))
            }
            Action::SetMod { user, enabled } => {
                values::put(state, &keys::moderator(user), enabled)?;
                Ok(Ok(()))
            }
            Action::Feature {
                feature,
                key,
                value,
            } => self.feature(state, op, signer, hash, feature, key, value),
            Action::DeployContract { hash, size, chunks } => {
                self.announce_deploy(state, op, params, signed.expires, hash, *size, chunks)
            }
            Action::SetMsbTrust {
                network,
                indexers,
                scheme,
            } => {
                let trust = MsbTrust {
                    network: network.to_hex(),
                    indexers: indexers.iter().map(PublicKey::to_hex).collect(),
                    scheme: *scheme,
                    changed_at: 0,
                };
                values::put(state, keys::MSB.as_bytes(), &trust)?;
                Ok(Ok(()))
            }
            Action::SetParams { params: new } => {
                if let Err(e) = Self::fits_limits(state, &new.limits)? {
                    return Ok(Err(e));
                }
                values::put(state, keys::PARAMS.as_bytes(), new)?;
                tracing::info!(subnet = %self.id, "parameters changed");
                Ok(Ok(()))
            }
            Action::AutoAddWriter
            | Action::MuteStatus { .. }
            | Action::SetNick { .. }
            | Action::PostMessage { .. }
            | Action::DeleteMessage { .. }
            | Action::PinMessage { .. }
            | Action::UnpinMessage { .. } => Ok(Err("unreachable dispatch".into())),
        }
    }

    fn add_writer(
        &self,
        state: &mut dyn StateAccess,
        key: &PublicKey,
        indexer: bool,
    ) -> Result<Verdict, LedgerError> {
        if key.validate().is_err() {
            return Ok(Err("not a valid public key".into()));
        }
        let mut indexers = Self::indexer_list(state)?;
        let is_writer = Self::writer_exists(state, key)?;
        if indexer {
            if indexers.contains(key) {
                return Ok(Err(format!("{key} is already an indexer")));
            }
            if indexers.len() >= MAX_INDEXERS {
                return Ok(Err(format!(
                    "the subnet has {MAX_INDEXERS} indexers already"
                )));
            }
            indexers.push(*key);
            Self::put_indexers(state, &indexers)?;
        } else if is_writer {
            return Ok(Err(format!("{key} is already a writer")));
        }
        state.put(&keys::writer(key), &values::encode(&true))?;
        state.delete(&keys::banned(key))?;
        tracing::info!(subnet = %self.id, %key, indexer, "writer added");
        Ok(Ok(()))
    }

    fn remove_writer(
        &self,
        state: &mut dyn StateAccess,
        key: &PublicKey,
    ) -> Result<Verdict, LedgerError> {
        if !Self::writer_exists(state, key)? {
            return Ok(Err(format!("{key} is not a writer")));
        }
        let mut indexers = Self::indexer_list(state)?;
        if indexers.contains(key) {
            if indexers.len() == 1 {
                return Ok(Err("the last indexer cannot be removed".into()));
            }
            indexers.retain(|k| k != key);
            Self::put_indexers(state, &indexers)?;
        }
        state.delete(&keys::writer(key))?;
        values::put(state, &keys::banned(key), &true)?;
        tracing::info!(subnet = %self.id, %key, "writer removed");
        Ok(Ok(()))
    }

    fn remove_indexer(
        &self,
        state: &mut dyn StateAccess,
        key: &PublicKey,
    ) -> Result<Verdict, LedgerError> {
        let mut indexers = Self::indexer_list(state)?;
        if !indexers.contains(key) {
            return Ok(Err(format!("{key} is not an indexer")));
        }
        if indexers.len() == 1 {
            return Ok(Err("the last indexer cannot be removed".into()));
        }
        indexers.retain(|k| k != key);
        Self::put_indexers(state, &indexers)?;
        Ok(Ok(()))
    }

    fn auto_add_writer(
        &self,
        state: &mut dyn StateAccess,
        key: &PublicKey,
    ) -> Result<Verdict, LedgerError> {
        if !values::switch(state, keys::AUTO_ADD_WRITERS)? {
            return Ok(Err("auto-add of writers is off".into()));
        }
        if state.get(&keys::banned(key))?.is_some() {
            return Ok(Err(format!("{key} was removed and cannot re-add itself")));
        }
        if Self::writer_exists(state, key)? {
            return Ok(Err(format!("{key} is already a writer")));
        }
        state.put(&keys::writer(key), &values::encode(&true))?;
        tracing::info!(subnet = %self.id, %key, "writer auto added");
        Ok(Ok(()))
    }
}

impl StateMachine for SubnetMachine {
    fn genesis(&self, state: &mut dyn StateAccess) -> Result<(), StoreError> {
        let creator = self.genesis.creator;
        let record = SubnetRecord {
            id: self.id.to_hex(),
            creator: creator.to_hex(),
            channel: self.genesis.channel.clone(),
            salt: hex::encode(self.genesis.salt),
            runtime: runtime_protocol_version().to_hex(),
        };
        state.put(keys::SUBNET.as_bytes(), &values::encode(&record))?;
        state.put(&keys::writer(&creator), &values::encode(&true))?;
        state.put(
            keys::INDEXERS.as_bytes(),
            &values::encode(&vec![creator.to_hex()]),
        )?;
        state.put(keys::PARAMS.as_bytes(), &values::encode(&Params::default()))?;
        Ok(())
    }

    fn is_writer(&self, state: &dyn StateAccess, writer: &PublicKey) -> Result<bool, StoreError> {
        Ok(state.get(&keys::writer(writer))?.is_some())
    }

    fn indexers(&self, state: &dyn StateAccess) -> Result<Vec<PublicKey>, StoreError> {
        let indexers = Self::indexer_list(state).map_err(|e| match e {
            LedgerError::Store(e) => e,
            other => StoreError::Corrupt {
                path: Default::default(),
                reason: other.to_string(),
            },
        })?;
        // Never empty: the rules refuse removing the last indexer.
        Ok(if indexers.is_empty() {
            vec![self.genesis.creator]
        } else {
            indexers
        })
    }

    fn prepare(&self, ops: &[&[u8]]) {
        let decoded: Vec<(&[u8], SubnetOp)> = ops
            .iter()
            .filter_map(|bytes| match ops::decode_op(bytes) {
                Ok(op @ (SubnetOp::Signed(_) | SubnetOp::Tx(_))) => Some((*bytes, op)),
                _ => None,
            })
            .collect();
        let hashes: Vec<(Hash32, PublicKey, Signature)> = decoded
            .iter()
            .filter_map(|(_, op)| match op {
                SubnetOp::Signed(s) => Some((s.hash(&self.id), s.signer, s.signature)),
                _ => None,
            })
            .collect();
        let items: Vec<BatchItem<'_>> = hashes
            .iter()
            .map(|(hash, key, signature)| BatchItem {
                key,
                hash,
                signature,
            })
            .collect();
        self.signatures.verify_batch(&items);
        let proofs: Vec<&[u8]> = decoded
            .iter()
            .filter_map(|(_, op)| match op {
                SubnetOp::Tx(tx) => Some(tx.settlement.as_slice()),
                _ => None,
            })
            .collect();
        if !proofs.is_empty() {
            self.verifier.prepare(&proofs);
        }
        self.prepared.keep(decoded);
    }

    fn apply(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        if let Err(reason) = self.apply_op(state, op)? {
            tracing::debug!(
                subnet = %self.id,
                position = op.position,
                writer = %op.writer,
                "op refused: {reason}"
            );
        }
        Ok(None)
    }
}
