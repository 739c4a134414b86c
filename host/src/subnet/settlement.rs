//! How a subnet checks that a contract transaction was settled on MSB.
//!
//! A `tx` op carries an opaque settlement proof; the subnet's [`SettlementVerifier`] turns it
//! into a [`Settlement`] deterministically (from the proof and the subnet state alone, never
//! from a local MSB replica) or refuses it. [`AttestationVerifier`] accepts a settlement signed
//! by one MSB indexer the subnet trusts (`sys/msb`, set by the admin); the MSB layer adds
//! proofs by a majority of indexers over a final checkpoint.

use serde::{Deserialize, Serialize};

use super::values::{Memo, Prepared};
use crate::codec;
use crate::crypto::{
    BatchItem, Domain, DomainKind, Hash32, Keypair, PublicKey, Signature, VerifiedSignatures,
};
use crate::store::StateView;

/// What a valid settlement proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The MSB transaction hash (the subnet's replay guard `tx/<hash>`).
    pub tx_hash: Hash32,
    /// The requester who signed and paid for it.
    pub requester: PublicKey,
    /// The validator that co-signed it.
    pub validator: PublicKey,
    /// The subnet it was settled for.
    pub subnet: Hash32,
    /// The content hash of the call ([`super::TxOp::content_hash`]).
    pub content: Hash32,
}

/// A change of the MSB indexer set, proven by an MSB admin op in a final checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexerChange {
    /// The admin op's tx hash (the subnet's replay guard).
    pub tx_hash: Hash32,
    /// The MSB checkpoint that applied it (changes apply in height order).
    pub height: u64,
    /// The indexer.
    pub key: PublicKey,
    /// Added (`true`) or removed.
    pub added: bool,
}

/// How a subnet accepts settlements (`sys/msb`), chosen by its admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettlementScheme {
    /// A proof: the MSB op, its receipt and Merkle path, and its checkpoint signed by a
    /// majority of the trusted MSB indexers.
    Checkpointed,
    /// An attestation signed by any one trusted MSB indexer (a single settlement authority:
    /// single-operator networks, tests and benchmarks).
    Attested,
}

/// Checks settlement proofs. Must be deterministic: same state and proof, same answer.
pub trait SettlementVerifier: Send + Sync {
    /// The settlement `proof` proves, or why it is refused.
    fn verify(&self, state: &dyn StateView, proof: &[u8]) -> Result<Settlement, String>;

    /// The MSB indexer change `proof` proves, or why it is refused.
    fn verify_indexer_change(
        &self,
        _state: &dyn StateView,
        _proof: &[u8],
    ) -> Result<IndexerChange, String> {
        Err("this verifier does not follow MSB indexer changes".into())
    }

    /// Called with the proofs of a batch of ops before they are applied, so that an
    /// implementation can verify their signatures in one batch. Optional.
    fn prepare(&self, _proofs: &[&[u8]]) {}
}

/// The MSB the subnet trusts (`sys/msb`), set by the admin's `SetMsbTrust`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsbTrust {
    /// The MSB network id (hex).
    pub network: String,
    /// The trusted MSB indexer keys (hex).
    pub indexers: Vec<String>,
    /// How settlements are proven.
    pub scheme: SettlementScheme,
    /// MSB height of the last indexer change applied.
    pub changed_at: u64,
}

/// The MSB trust of `sys/msb`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// The MSB network id.
    pub network: Hash32,
    /// The trusted MSB indexers.
    pub indexers: Vec<PublicKey>,
    /// How settlements are proven.
    pub scheme: SettlementScheme,
}

impl MsbTrust {
    /// The trust recorded in `state`, if any.
    pub fn read(state: &dyn StateView) -> Option<Trust> {
        let bytes = state.get(super::keys::MSB.as_bytes()).ok()??;
        Self::decode(&bytes)
    }

    fn decode(bytes: &[u8]) -> Option<Trust> {
        let trust: MsbTrust = rmp_serde::from_slice(bytes).ok()?;
        let network = Hash32::from_hex(&trust.network).ok()?;
        let indexers = trust
            .indexers
            .iter()
            .filter_map(|k| PublicKey::from_hex(k).ok())
            .collect();
        Some(Trust {
            network,
            indexers,
            scheme: trust.scheme,
        })
    }
}

/// The MSB trust of a state, decoded once per change of its record (it is read for every
/// settled tx).
#[derive(Debug, Default)]
pub struct TrustCache(Memo<std::sync::Arc<Trust>>);

impl TrustCache {
    /// The trust in `state`, or why there is none.
    pub fn get(&self, state: &dyn StateView) -> Result<std::sync::Arc<Trust>, String> {
        self.0
            .read(state, super::keys::MSB.as_bytes(), |bytes| {
                MsbTrust::decode(bytes).map(std::sync::Arc::new)
            })
            .map_err(|e| format!("reading the MSB trust: {e}"))?
            .ok_or_else(|| "the subnet trusts no MSB yet".to_string())
    }
}

/// A settlement signed by a trusted MSB indexer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The settlement.
    pub settlement: Settlement,
    /// The MSB network it was settled on.
    pub network: Hash32,
    /// The attesting indexer.
    pub attester: PublicKey,
    /// Signature of BLAKE3(domain(msb-op, network) ‖ encode(("settled", settlement))).
    pub signature: Signature,
}

impl Attestation {
    fn signed_hash(network: &Hash32, settlement: &Settlement) -> Hash32 {
        Domain::new(DomainKind::MsbOp, *network).hash(&codec::encode(&("settled", settlement)))
    }

    /// Signs `settlement` as an indexer of `network` and encodes the proof.
    pub fn sign(attester: &Keypair, network: &Hash32, settlement: Settlement) -> Vec<u8> {
        let hash = Self::signed_hash(network, &settlement);
        codec::encode(&Attestation {
            signature: attester.sign_hash(&hash),
            network: *network,
            attester: attester.public(),
            settlement,
        })
    }
}

/// Accepts [`Attestation`]s by an MSB indexer the subnet trusts (`sys/msb`); signatures are
/// batch-verified when prepared.
#[derive(Debug, Default)]
pub struct AttestationVerifier {
    verified: VerifiedSignatures,
    trust: TrustCache,
    /// Proofs decoded by `prepare` (canonical, as `verify` would decode them), with whether
    /// their signature is valid; each is taken by the `verify` of the same bytes.
    prepared: Prepared<(Attestation, bool)>,
}

impl AttestationVerifier {
    /// A verifier.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SettlementVerifier for AttestationVerifier {
    fn verify(&self, state: &dyn StateView, proof: &[u8]) -> Result<Settlement, String> {
        let (attestation, signature_valid) = match self.prepared.take(proof) {
            Some((attestation, valid)) => (attestation, Some(valid)),
            None => {
                let attestation: Attestation =
                    codec::decode(proof).map_err(|e| format!("malformed attestation: {e}"))?;
                (attestation, None)
            }
        };
        let trust = self.trust.get(state)?;
        let network = trust.network;
        if attestation.network != network {
            return Err("attested on another MSB network".into());
        }
        if !trust.indexers.contains(&attestation.attester) {
            return Err("the attester is not a trusted MSB indexer".into());
        }
        let valid = signature_valid.unwrap_or_else(|| {
            let hash = Attestation::signed_hash(&network, &attestation.settlement);
            self.verified
                .verify(&attestation.attester, &hash, &attestation.signature)
        });
        if !valid {
            return Err("attestation signature does not verify".into());
        }
        Ok(attestation.settlement)
    }

    fn prepare(&self, proofs: &[&[u8]]) {
        let decoded: Vec<(&[u8], Attestation, Hash32)> = proofs
            .iter()
            .filter_map(|p| Some((*p, codec::decode::<Attestation>(p).ok()?)))
            .map(|(p, a)| {
                let hash = Attestation::signed_hash(&a.network, &a.settlement);
                (p, a, hash)
            })
            .collect();
        let items: Vec<BatchItem<'_>> = decoded
            .iter()
            .map(|(_, a, hash)| BatchItem {
                key: &a.attester,
                hash,
                signature: &a.signature,
            })
            .collect();
        self.verified.verify_batch(&items);
        // Each signature is checked here (taken from the batch just verified, or verified
        // singly when the batch failed), off the thread that applies when prepared ahead.
        self.prepared
            .keep(decoded.into_iter().map(|(proof, a, hash)| {
                let valid = self.verified.verify(&a.attester, &hash, &a.signature);
                (proof, (a, valid))
            }));
    }
}
