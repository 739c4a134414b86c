//! Settlement proofs (DESIGN §11.10, docs/protocol.md "Settlement proofs"): an MSB op, its
//! receipt, the receipt's Merkle path to a checkpoint's receipts root, and that checkpoint
//! signed by a majority of the MSB indexers a subnet trusts. A subnet checks one with its own
//! state alone — no MSB replica, no waiting.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::Receipt;
use super::machine::{self, MsbMachine, TxLocation};
use super::ops::{self, AdminAction, MsbOp, UserAction};
use crate::codec;
use crate::crypto::{
    BatchItem, Domain, DomainKind, Hash32, PublicKey, Signature, hash_parts, verify_batch,
};
use crate::ledger::{Ack, Checkpoint, Ledger, LedgerError, LogEntry, merkle, quorum};
use crate::store::StateView;
use crate::subnet::settlement::{
    AttestationVerifier, IndexerChange, Settlement, SettlementScheme, SettlementVerifier,
    TrustCache,
};

/// Proof that an MSB op was applied, without error, in a final checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementProof {
    /// The MSB network.
    pub network: Hash32,
    /// The op (a user op, or an admin op for indexer changes).
    pub op: MsbOp,
    /// Its receipt.
    pub receipt: Receipt,
    /// The receipt's Merkle path to the checkpoint's receipts root.
    pub path: Vec<(Hash32, bool)>,
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Acks of the checkpoint (with the sequencer's signature, a majority of the trusted set).
    pub acks: Vec<Ack>,
}

/// Why a proof cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The MSB has not applied that transaction (yet), or refused it: a refused op leaves
    /// only its receipt (see [`MsbAccess::refusals`](crate::node::MsbAccess::refusals)).
    #[error("transaction {0} is not applied on MSB")]
    NotApplied(Hash32),
    /// It is applied but its checkpoint is not final yet.
    #[error("transaction {0} is not final on MSB yet")]
    NotFinal(Hash32),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl SettlementProof {
    /// Builds the proof of `tx_hash` from an MSB node's ledger (confirmed state).
    pub fn build(ledger: &mut Ledger<MsbMachine>, tx_hash: &Hash32) -> Result<Self, ProofError> {
        Self::build_many(ledger, std::slice::from_ref(tx_hash))
            .pop()
            .expect("one result per tx")
    }

    /// Builds the proofs of `tx_hashes` (one result each, in order) from an MSB node's ledger
    /// (confirmed state). The txs of one checkpoint share its work: its receipts are read and
    /// decoded once, its Merkle tree built once, its checkpoint and acks read once, and each
    /// log entry is read once.
    pub fn build_many(
        ledger: &mut Ledger<MsbMachine>,
        tx_hashes: &[Hash32],
    ) -> Vec<Result<Self, ProofError>> {
        let mut out: Vec<Option<Result<Self, ProofError>>> = std::iter::repeat_with(|| None)
            .take(tx_hashes.len())
            .collect();
        let located = ledger.read(true, |s| {
            tx_hashes
                .iter()
                .map(|h| machine::tx_location(s, h))
                .collect::<Vec<_>>()
        });
        let located = match located {
            Ok(located) => located,
            Err(e) => {
                let all: Vec<usize> = (0..tx_hashes.len()).collect();
                answer_all(&mut out, &all, e);
                return finish(out);
            }
        };
        let mut by_height: BTreeMap<u64, Vec<(usize, TxLocation)>> = BTreeMap::new();
        let mut unlocated = Vec::new();
        for (i, found) in located.into_iter().enumerate() {
            match found {
                Ok(Some(location)) => by_height
                    .entry(location.height)
                    .or_default()
                    .push((i, location)),
                Ok(None) => unlocated.push(i),
                Err(e) => out[i] = Some(Err(e.into())),
            }
        }
        if !unlocated.is_empty() {
            // Applied in the unconfirmed view only: its checkpoint is not final (or not made)
            // yet — the caller should wait, not give up.
            let unconfirmed = ledger.read(false, |s| {
                unlocated
                    .iter()
                    .map(|&i| machine::tx_location(s, &tx_hashes[i]))
                    .collect::<Vec<_>>()
            });
            match unconfirmed {
                Ok(found) => {
                    for (&i, found) in unlocated.iter().zip(found) {
                        out[i] = Some(match found {
                            Ok(Some(_)) => Err(ProofError::NotFinal(tx_hashes[i])),
                            Ok(None) => Err(ProofError::NotApplied(tx_hashes[i])),
                            Err(e) => Err(e.into()),
                        });
                    }
                }
                Err(e) => answer_all(&mut out, &unlocated, e),
            }
        }
        let final_height = ledger.status().final_height;
        let mut entries = HashMap::new();
        for (height, group) in by_height {
            let indices: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
            if height > final_height {
                for &i in &indices {
                    out[i] = Some(Err(ProofError::NotFinal(tx_hashes[i])));
                }
                continue;
            }
            match Self::build_at(ledger, height, &group, tx_hashes, &mut entries) {
                Ok(built) => {
                    for (i, result) in indices.into_iter().zip(built) {
                        out[i] = Some(result);
                    }
                }
                Err(e) => answer_all(&mut out, &indices, e),
            }
        }
        finish(out)
    }

    /// The proofs of the txs of `group` (index in `tx_hashes`, location), all applied in the
    /// final checkpoint at `height`. The error is one of the whole checkpoint; `entries`
    /// keeps the log entries read so far.
    fn build_at(
        ledger: &Ledger<MsbMachine>,
        height: u64,
        group: &[(usize, TxLocation)],
        tx_hashes: &[Hash32],
        entries: &mut HashMap<(PublicKey, u64), LogEntry>,
    ) -> Result<Vec<Result<Self, ProofError>>, LedgerError> {
        let receipts = ledger.receipts(height)?;
        let decoded = receipts
            .iter()
            .map(|bytes| {
                codec::decode::<Receipt>(bytes)
                    .map_err(|e| LedgerError::Invalid(format!("stored receipt: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The first successful receipt of each tx (a refused duplicate may come after it; an
        // op appended by another writer than its validator, refused, before it).
        let mut applied: HashMap<Hash32, usize> = HashMap::with_capacity(decoded.len());
        for (index, receipt) in decoded.iter().enumerate() {
            if receipt.error.is_none() {
                applied.entry(receipt.tx_hash).or_insert(index);
            }
        }
        let levels = merkle::levels(&receipts);
        let checkpoint = ledger.checkpoint(height)?;
        let acks = match checkpoint {
            Some(_) => ledger.acks(height)?,
            None => Vec::new(),
        };
        let network = ledger.network();
        let mut built = Vec::with_capacity(group.len());
        for (i, location) in group {
            let tx_hash = tx_hashes[*i];
            let Some(&index) = applied.get(&tx_hash) else {
                built.push(Err(ProofError::NotApplied(tx_hash)));
                continue;
            };
            let Some(checkpoint) = &checkpoint else {
                built.push(Err(ProofError::NotFinal(tx_hash)));
                continue;
            };
            let op = match Self::op_at(ledger, location, entries) {
                Ok(op) => op,
                Err(e) => {
                    built.push(Err(e.into()));
                    continue;
                }
            };
            built.push(Ok(SettlementProof {
                network,
                op,
                receipt: decoded[index].clone(),
                path: merkle::path(&levels, index).expect("index within the receipts"),
                checkpoint: checkpoint.clone(),
                acks: acks.clone(),
            }));
        }
        Ok(built)
    }

    /// The op at `location`, its entry read once per `entries`.
    fn op_at(
        ledger: &Ledger<MsbMachine>,
        location: &TxLocation,
        entries: &mut HashMap<(PublicKey, u64), LogEntry>,
    ) -> Result<MsbOp, LedgerError> {
        let key = (location.writer, location.seq);
        let entry = match entries.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(vacant) => {
                let entry = ledger
                    .entry(&location.writer, location.seq)?
                    .ok_or_else(|| LedgerError::Invalid("the tx's log entry is missing".into()))?;
                vacant.insert(entry)
            }
        };
        let bytes = entry
            .body
            .ops
            .get(location.index as usize)
            .ok_or_else(|| LedgerError::Invalid("the tx's op is missing".into()))?;
        ops::decode_op(bytes).map_err(LedgerError::Invalid)
    }

    /// Encodes the proof (what a subnet `tx` op carries).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The op's tx hash.
    fn op_hash(&self, network: &Hash32) -> Option<Hash32> {
        match &self.op {
            MsbOp::User(op) => Some(op.body.tx_hash(network)),
            MsbOp::Admin(op) => Some(op.hash(network)),
            MsbOp::Faucet { .. } => None,
        }
    }

    /// The signatures that make the checkpoint final for `trusted`: the sequencer's and the
    /// acks of trusted indexers, each `(key, hash, signature)`.
    fn signatures(
        &self,
        network: &Hash32,
        trusted: &[PublicKey],
    ) -> Result<Vec<(PublicKey, Hash32, Signature)>, String> {
        let body = &self.checkpoint.body;
        if body.version != crate::ledger::FORMAT_VERSION {
            return Err("unsupported checkpoint version".into());
        }
        if !trusted.contains(&body.sequencer) {
            return Err("the checkpoint's sequencer is not a trusted MSB indexer".into());
        }
        let checkpoint_hash = self.checkpoint.hash(network);
        let mut signers = BTreeSet::from([body.sequencer]);
        let mut out = vec![(body.sequencer, checkpoint_hash, self.checkpoint.signature)];
        for ack in &self.acks {
            let b = &ack.body;
            if b.version != crate::ledger::FORMAT_VERSION
                || b.checkpoint != checkpoint_hash
                || b.height != body.height
                || b.state_root != body.state_root
                || !trusted.contains(&b.indexer)
                || !signers.insert(b.indexer)
            {
                continue;
            }
            let hash = Domain::new(DomainKind::CheckpointAck, *network).hash(&codec::encode(b));
            out.push((b.indexer, hash, ack.signature));
        }
        if signers.len() < quorum(trusted.len()) {
            return Err(format!(
                "the checkpoint is signed by {} of the {} trusted MSB indexers (needs {})",
                signers.len(),
                trusted.len(),
                quorum(trusted.len())
            ));
        }
        Ok(out)
    }

    /// Checks everything but the signatures: the receipt is the op's, successful, and in the
    /// checkpoint's receipts root.
    fn check_inclusion(&self, network: &Hash32) -> Result<Hash32, String> {
        let tx_hash = self
            .op_hash(network)
            .ok_or("a faucet grant settles nothing")?;
        let receipt = &self.receipt;
        if receipt.tx_hash != tx_hash {
            return Err("the receipt belongs to another op".into());
        }
        if let Some(error) = &receipt.error {
            return Err(format!("MSB refused the op: {error}"));
        }
        if let MsbOp::User(op) = &self.op
            && (receipt.validator != Some(op.validator)
                || receipt.requester != Some(op.body.requester))
        {
            return Err("the receipt names another requester or validator".into());
        }
        if !merkle::verify(
            &self.checkpoint.body.receipts_root,
            &codec::encode(receipt),
            &self.path,
        ) {
            return Err("the receipt is not in the checkpoint's receipts root".into());
        }
        Ok(tx_hash)
    }
}

/// Answers the txs at `indices` with `error`, which they share: the first gets it, the others
/// its description.
fn answer_all(
    out: &mut [Option<Result<SettlementProof, ProofError>>],
    indices: &[usize],
    error: LedgerError,
) {
    let Some((&first, rest)) = indices.split_first() else {
        return;
    };
    for &i in rest {
        out[i] = Some(Err(LedgerError::Node(error.to_string()).into()));
    }
    out[first] = Some(Err(error.into()));
}

/// The answers, every tx answered.
fn finish(
    out: Vec<Option<Result<SettlementProof, ProofError>>>,
) -> Vec<Result<SettlementProof, ProofError>> {
    out.into_iter()
        .map(|result| result.expect("every tx is answered"))
        .collect()
}

/// Verifies [`SettlementProof`]s for subnets trusting an MSB by its indexer set. Verified
/// checkpoint signatures are remembered, so the many txs of one checkpoint cost one check,
/// and [`SettlementVerifier::prepare`] verifies a batch's checkpoints in one batch.
#[derive(Debug, Default)]
pub struct ProofVerifier {
    known: Mutex<HashSet<Hash32>>,
    trust: TrustCache,
}

/// Most remembered signatures.
const MAX_REMEMBERED: usize = 1 << 14;

type Triple = (PublicKey, Hash32, Signature);

fn fingerprint((key, hash, signature): &Triple) -> Hash32 {
    hash_parts(&[key.as_bytes(), hash.as_bytes(), signature.as_bytes()])
}

impl ProofVerifier {
    /// A verifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `triples` (those not remembered) in one batch and remembers them.
    fn verify_triples(&self, triples: &[Triple]) -> Result<(), String> {
        let unknown: Vec<&Triple> = {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            triples
                .iter()
                .filter(|t| !known.contains(&fingerprint(t)))
                .collect()
        };
        if unknown.is_empty() {
            return Ok(());
        }
        let items: Vec<BatchItem<'_>> = unknown
            .iter()
            .map(|(key, hash, signature)| BatchItem {
                key,
                hash,
                signature,
            })
            .collect();
        verify_batch(&items).map_err(|e| format!("checkpoint signatures: {e}"))?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() + unknown.len() > MAX_REMEMBERED {
            known.clear();
        }
        known.extend(unknown.iter().map(|t| fingerprint(t)));
        Ok(())
    }

    /// Checks `proof` against the trust in `state`; returns the op's tx hash.
    fn check(&self, state: &dyn StateView, proof: &SettlementProof) -> Result<Hash32, String> {
        let trust = self.trust.get(state)?;
        if proof.network != trust.network {
            return Err("settled on another MSB network".into());
        }
        let tx_hash = proof.check_inclusion(&trust.network)?;
        let signatures = proof.signatures(&trust.network, &trust.indexers)?;
        self.verify_triples(&signatures)?;
        Ok(tx_hash)
    }

    fn decode(proof: &[u8]) -> Result<SettlementProof, String> {
        codec::decode(proof).map_err(|e| format!("malformed settlement proof: {e}"))
    }
}

impl SettlementVerifier for ProofVerifier {
    fn verify(&self, state: &dyn StateView, proof: &[u8]) -> Result<Settlement, String> {
        let proof = Self::decode(proof)?;
        let tx_hash = self.check(state, &proof)?;
        let MsbOp::User(op) = &proof.op else {
            return Err("not a user operation".into());
        };
        let UserAction::Tx { subnet, content } = op.body.action else {
            return Err(format!(
                "a {} operation is not a contract transaction",
                op.body.action.name()
            ));
        };
        Ok(Settlement {
            tx_hash,
            requester: op.body.requester,
            validator: op.validator,
            subnet,
            content,
        })
    }

    fn verify_indexer_change(
        &self,
        state: &dyn StateView,
        proof: &[u8],
    ) -> Result<IndexerChange, String> {
        let proof = Self::decode(proof)?;
        let tx_hash = self.check(state, &proof)?;
        let MsbOp::Admin(op) = &proof.op else {
            return Err("not an admin operation".into());
        };
        let (key, added) = match op.action {
            AdminAction::AddIndexer { key } => (key, true),
            AdminAction::RemoveIndexer { key } => (key, false),
            _ => {
                return Err(format!(
                    "a {} operation does not change the indexers",
                    op.action.name()
                ));
            }
        };
        Ok(IndexerChange {
            tx_hash,
            height: proof.checkpoint.body.height,
            key,
            added,
        })
    }

    fn prepare(&self, proofs: &[&[u8]]) {
        // The checkpoint signatures of the batch (each checkpoint once), verified together;
        // whether their signers are trusted is decided when each proof is applied.
        let mut seen = HashSet::new();
        let mut triples = Vec::new();
        for bytes in proofs {
            let Ok(proof) = Self::decode(bytes) else {
                continue;
            };
            let network = proof.network;
            let checkpoint_hash = proof.checkpoint.hash(&network);
            if !seen.insert(checkpoint_hash) {
                continue;
            }
            triples.push((
                proof.checkpoint.body.sequencer,
                checkpoint_hash,
                proof.checkpoint.signature,
            ));
            for ack in &proof.acks {
                let hash =
                    Domain::new(DomainKind::CheckpointAck, network).hash(&codec::encode(&ack.body));
                triples.push((ack.body.indexer, hash, ack.signature));
            }
        }
        // A failing batch remembers nothing: each proof is then checked on its own.
        let _ = self.verify_triples(&triples);
    }
}

/// The verifier of [`SubnetMachine::standard`](crate::subnet::SubnetMachine::standard): MSB
/// proofs, or attestations when the subnet's admin chose that scheme (`sys/msb`).
#[derive(Debug, Default)]
pub struct StandardVerifier {
    proofs: ProofVerifier,
    attestations: AttestationVerifier,
    trust: TrustCache,
}

impl StandardVerifier {
    /// A verifier.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SettlementVerifier for StandardVerifier {
    fn verify(&self, state: &dyn StateView, proof: &[u8]) -> Result<Settlement, String> {
        match self.trust.get(state)?.scheme {
            SettlementScheme::Attested => self.attestations.verify(state, proof),
            SettlementScheme::Checkpointed => self.proofs.verify(state, proof),
        }
    }

    fn verify_indexer_change(
        &self,
        state: &dyn StateView,
        proof: &[u8],
    ) -> Result<IndexerChange, String> {
        self.proofs.verify_indexer_change(state, proof)
    }

    fn prepare(&self, proofs: &[&[u8]]) {
        self.proofs.prepare(proofs);
        self.attestations.prepare(proofs);
    }
}
