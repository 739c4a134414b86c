//! Signature verification with one rule for single and batch checks.
//!
//! Consensus needs every node to reach the same verdict on every signature, including hostile
//! ones. Plain ("cofactorless") Ed25519 batch verification can disagree with single
//! verification, and between two runs with different random coefficients, on signatures whose
//! points carry a small torsion component. This module therefore uses the **cofactored**
//! equation `[8]([S]B − R − [k]A) = 0` for single signatures and
//! `[8](−[Σ zᵢSᵢ]B + Σ [zᵢ]Rᵢ + Σ [zᵢkᵢ]Aᵢ) = 0` for batches, where the torsion components
//! vanish, so both always agree (up to the 2⁻¹²⁸ soundness error of random `zᵢ`). On top of
//! the equation, encodings must be canonical: `A` and `R` must decode and re-encode to the same
//! bytes, `S` must be below the group order, and `A` must not be of small order.
//! Signatures made by any standard Ed25519 signer verify.
//!
//! Speed: canonical point encodings are recognised from the bytes (no re-encoding, which would
//! cost a field inversion per point); a batch decodes each distinct public key once and merges
//! its terms `Σ [zᵢkᵢ]A` into one; large batches are split across the available cores, each
//! part checked as its own batch. None of this changes a verdict.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand::RngCore;
use sha2::{Digest, Sha512};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::OnceLock;

use super::hash::Hash32;
use super::keys::{PublicKey, Signature};

/// Why a signature or public key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not the canonical encoding of a curve point.
    #[error("public key is not a valid Ed25519 point")]
    InvalidPublicKey,
    /// The public key is a point of small order (it would verify forged signatures).
    #[error("public key is a small-order point")]
    WeakPublicKey,
    /// `R` or `S` is not canonically encoded.
    #[error("signature is not canonically encoded")]
    MalformedSignature,
    /// The signature does not match the key and message.
    #[error("signature does not verify")]
    Mismatch,
    /// In a batch, the signature at this index does not verify.
    #[error("signature {index} of the batch does not verify: {reason}")]
    InBatch {
        /// Index into the batch.
        index: usize,
        /// Why it failed.
        reason: Box<SignatureError>,
    },
}

/// Decodes a public key under the verification rule.
pub(crate) fn decode_public_key(key: &PublicKey) -> Result<EdwardsPoint, SignatureError> {
    let point = decode_point(key.as_bytes()).ok_or(SignatureError::InvalidPublicKey)?;
    if point.is_small_order() {
        return Err(SignatureError::WeakPublicKey);
    }
    Ok(point)
}

/// Decodes a point whose encoding must be canonical: exactly the encodings that decompress and
/// re-compress to the same bytes.
fn decode_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !canonical_encoding(bytes) {
        return None;
    }
    CompressedEdwardsY(*bytes).decompress()
}

/// Whether `bytes`, if it decompresses at all, is the encoding that the point re-compresses to.
///
/// Decompression reads `y` from the low 255 bits reduced mod p = 2²⁵⁵ − 19 and takes the sign
/// of `x` from the top bit; compression writes `y mod p` and the sign of `x`, which is clear
/// when `x = 0`. So the round trip keeps the bytes exactly when `y < p` and, if `x = 0`, the
/// sign bit is clear. On the curve `x = 0` exactly when `y² = 1`: `y = 1` (the identity) or
/// `y = p − 1` (the point of order 2).
fn canonical_encoding(bytes: &[u8; 32]) -> bool {
    let top = bytes[31] & 0x7f;
    let middle = &bytes[1..31];
    // p = 0x7f ff … ff ed (little-endian: ed, ff × 30, 7f); y ≥ p only at the very top.
    let middle_all_ff = top == 0x7f && middle.iter().all(|&b| b == 0xff);
    if middle_all_ff && bytes[0] >= 0xed {
        return false;
    }
    if bytes[31] & 0x80 != 0 {
        let is_one = bytes[0] == 1 && top == 0 && middle.iter().all(|&b| b == 0);
        let is_minus_one = bytes[0] == 0xec && middle_all_ff;
        if is_one || is_minus_one {
            return false;
        }
    }
    true
}

/// A signature split into its decoded parts (the public key `A` is kept by the caller).
struct Decoded {
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// Decodes `R` and `S` and computes `k`; the key is decoded separately (once per key in a batch).
fn decode_signature(
    key: &PublicKey,
    message: &[u8],
    sig: &Signature,
) -> Result<Decoded, SignatureError> {
    let r_bytes: [u8; 32] = sig.0[..32].try_into().expect("64-byte signature");
    let s_bytes: [u8; 32] = sig.0[32..].try_into().expect("64-byte signature");
    let r = decode_point(&r_bytes).ok_or(SignatureError::MalformedSignature)?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))
        .ok_or(SignatureError::MalformedSignature)?;
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(key.as_bytes());
    h.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    Ok(Decoded { r, s, k })
}

/// The single (cofactored) equation `[8]([S]B − [k]A − R) = 0`.
fn single_holds(a: &EdwardsPoint, d: &Decoded) -> bool {
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&d.k, &(-a), &d.s);
    (sb_minus_ka - d.r).mul_by_cofactor().is_identity()
}

/// Verifies one signature over a 32-byte (already domain-separated) hash.
pub fn verify_hash(key: &PublicKey, hash: &Hash32, sig: &Signature) -> Result<(), SignatureError> {
    verify_message(key, hash.as_bytes(), sig)
}

/// Verifies one signature over an arbitrary message, under the same rule. Protocol signatures
/// are always over a domain hash ([`verify_hash`]); contracts may verify their own formats.
pub fn verify_message(
    key: &PublicKey,
    message: &[u8],
    sig: &Signature,
) -> Result<(), SignatureError> {
    let a = decode_public_key(key)?;
    let d = decode_signature(key, message, sig)?;
    if single_holds(&a, &d) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// One item of a batch: who signed which hash with which signature.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// The signer.
    pub key: &'a PublicKey,
    /// The domain-separated hash that was signed.
    pub hash: &'a Hash32,
    /// The signature.
    pub signature: &'a Signature,
}

/// Batches at least this long are split across the available cores.
const PARALLEL_MIN_ITEMS: usize = 64;

/// Each part of a split batch holds at least this many items.
const PARALLEL_MIN_PART: usize = 32;

/// When a batch fails, parts at most this long are searched by single checks (longer ones are
/// halved and the halves batch-checked, so one bad signature costs O(n), not n single checks).
const SEARCH_LEAF: usize = 8;

/// A signature with its signer and the hash it signs, owned (for collecting before a batch).
pub type SignedHash = (PublicKey, Hash32, Signature);

impl<'a> BatchItem<'a> {
    /// Batch items borrowing `triples`.
    pub fn from_triples(triples: &'a [SignedHash]) -> Vec<BatchItem<'a>> {
        triples
            .iter()
            .map(|(key, hash, signature)| BatchItem {
                key,
                hash,
                signature,
            })
            .collect()
    }
}

/// Verifies many signatures at once; the verdict equals verifying each with [`verify_hash`].
///
/// On failure the error names the first failing index, with the reason its single check gives.
/// The batch is checked with one random linear combination; only when that fails are parts of
/// it checked again (halving, then single checks) to find the failing member.
pub fn verify_batch(items: &[BatchItem<'_>]) -> Result<(), SignatureError> {
    if items.len() < 2 {
        return items
            .iter()
            .try_for_each(|i| verify_hash(i.key, i.hash, i.signature));
    }
    let parts = parallel_parts(items.len());
    let outcome = if parts <= 1 {
        check_part(items)
    } else {
        check_in_parallel(items, items.len().div_ceil(parts))
    };
    outcome.map_err(|(index, reason)| SignatureError::InBatch {
        index,
        reason: Box::new(reason),
    })
}

/// How many parts to split a batch of `len` items into.
fn parallel_parts(len: usize) -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    if len < PARALLEL_MIN_ITEMS {
        return 1;
    }
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    cores.min(len / PARALLEL_MIN_PART).max(1)
}

/// Checks consecutive parts of `part_len` items on their own threads (the first on this one);
/// the first failing part names the failing index.
fn check_in_parallel(
    items: &[BatchItem<'_>],
    part_len: usize,
) -> Result<(), (usize, SignatureError)> {
    std::thread::scope(|scope| {
        let mut parts = items.chunks(part_len);
        let first = parts.next().unwrap_or_default();
        let spawned: Vec<_> = parts
            .map(|part| {
                std::thread::Builder::new()
                    .name("verify-batch".into())
                    .spawn_scoped(scope, move || check_part(part))
                    // No thread to be had: check the part here, in order.
                    .map_err(|_| check_part(part))
            })
            .collect();
        check_part(first)?;
        for (number, handle) in spawned.into_iter().enumerate() {
            let outcome = match handle {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(outcome) => outcome,
            };
            let offset = (number + 1) * part_len;
            outcome.map_err(|(index, reason)| (offset + index, reason))?;
        }
        Ok(())
    })
}

/// The decoded members of (a prefix of) a batch, each distinct public key decoded once.
struct DecodedBatch {
    /// The distinct keys, in order of first use.
    keys: Vec<EdwardsPoint>,
    /// For each member: the index of its key and its decoded signature.
    members: Vec<(usize, Decoded)>,
}

/// Checks one batch (or part of one); the error names the first failing index in `items`.
fn check_part(items: &[BatchItem<'_>]) -> Result<(), (usize, SignatureError)> {
    let mut batch = DecodedBatch {
        keys: Vec::new(),
        members: Vec::with_capacity(items.len()),
    };
    let mut key_index: HashMap<&[u8; 32], usize> = HashMap::new();
    let mut previous: Option<(&PublicKey, usize)> = None;
    let mut refused = None;
    for (index, item) in items.iter().enumerate() {
        let key = match previous {
            Some((key, at)) if key == item.key => Ok(at),
            _ => match key_index.entry(item.key.as_bytes()) {
                Entry::Occupied(entry) => Ok(*entry.get()),
                Entry::Vacant(entry) => decode_public_key(item.key).map(|point| {
                    batch.keys.push(point);
                    *entry.insert(batch.keys.len() - 1)
                }),
            },
        };
        let decoded = key.and_then(|key| {
            previous = Some((item.key, key));
            decode_signature(item.key, item.hash.as_bytes(), item.signature).map(|d| (key, d))
        });
        match decoded {
            Ok(member) => batch.members.push(member),
            Err(reason) => {
                // Members before this one may still fail their equation; they come first.
                refused = Some((index, reason));
                break;
            }
        }
    }
    if !batch_holds(&batch.keys, &batch.members)
        && let Some(index) = first_failure(&batch.keys, &batch.members)
    {
        return Err((index, SignatureError::Mismatch));
    }
    refused.map_or(Ok(()), Err)
}

/// The batch equation `[8](−[Σ zᵢSᵢ]B + Σ [zᵢ]Rᵢ + Σ [zᵢkᵢ]Aᵢ) = 0` over `members`, with the
/// terms of each key merged.
fn batch_holds(keys: &[EdwardsPoint], members: &[(usize, Decoded)]) -> bool {
    if members.is_empty() {
        return true;
    }
    let mut rng = rand::thread_rng();
    let mut key_scalars: Vec<Option<Scalar>> = vec![None; keys.len()];
    let mut scalars = Vec::with_capacity(members.len() + keys.len() + 1);
    let mut points = Vec::with_capacity(members.len() + keys.len() + 1);
    let mut s_sum = Scalar::ZERO;
    for (key, d) in members {
        let mut z = [0u8; 16];
        rng.fill_bytes(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        s_sum += z * d.s;
        scalars.push(z);
        points.push(d.r);
        let zk = z * d.k;
        let slot = &mut key_scalars[*key];
        *slot = Some(slot.map_or(zk, |sum| sum + zk));
    }
    for (point, scalar) in keys.iter().zip(key_scalars) {
        if let Some(scalar) = scalar {
            scalars.push(scalar);
            points.push(*point);
        }
    }
    scalars.push(-s_sum);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars.iter(), points.iter())
        .mul_by_cofactor()
        .is_identity()
}

/// The index of the first member whose single equation fails, if any. A part whose batch
/// equation holds is skipped: with the cofactored equation a part of valid signatures always
/// holds, and a part holding despite a bad member has probability 2⁻¹²⁸ as for the whole batch.
fn first_failure(keys: &[EdwardsPoint], members: &[(usize, Decoded)]) -> Option<usize> {
    if members.len() <= SEARCH_LEAF {
        return members
            .iter()
            .position(|(key, d)| !single_holds(&keys[*key], d));
    }
    let (left, right) = members.split_at(members.len() / 2);
    if !batch_holds(keys, left)
        && let Some(index) = first_failure(keys, left)
    {
        return Some(index);
    }
    first_failure(keys, right).map(|index| left.len() + index)
}

#[cfg(test)]
mod tests {
    //! The batch equation itself. Through the public API a wrong batch equation would only show
    //! as slowness (a failing batch falls back to the authoritative single checks), so it is
    //! checked here directly. Verdicts are tested in tests/all/crypto.rs.

    use super::*;
    use crate::crypto::keys::Keypair;

    /// `count` signatures by `keys` distinct keys, in turn, decoded as one batch.
    fn decoded(count: usize, keys: u8) -> (Vec<PublicKey>, Vec<Hash32>, Vec<Signature>) {
        let keypairs: Vec<Keypair> = (0..keys).map(|i| Keypair::from_seed(&[i; 32])).collect();
        let mut public = Vec::new();
        let mut hashes = Vec::new();
        let mut sigs = Vec::new();
        for i in 0..count {
            let keypair = &keypairs[i % keypairs.len()];
            let hash = Hash32([i as u8; 32]);
            public.push(keypair.public());
            sigs.push(keypair.sign_hash(&hash));
            hashes.push(hash);
        }
        (public, hashes, sigs)
    }

    fn decode_all(keys: &[PublicKey], hashes: &[Hash32], sigs: &[Signature]) -> DecodedBatch {
        let mut batch = DecodedBatch {
            keys: Vec::new(),
            members: Vec::new(),
        };
        let mut seen: Vec<PublicKey> = Vec::new();
        for ((key, hash), sig) in keys.iter().zip(hashes).zip(sigs) {
            let at = seen.iter().position(|k| k == key).unwrap_or_else(|| {
                seen.push(*key);
                batch.keys.push(decode_public_key(key).unwrap());
                seen.len() - 1
            });
            let d = decode_signature(key, hash.as_bytes(), sig).unwrap();
            batch.members.push((at, d));
        }
        batch
    }

    #[test]
    fn merged_batch_equation_holds_exactly_for_valid_members() {
        for keys in [1, 3, 40] {
            let (public, hashes, sigs) = decoded(40, keys);
            let batch = decode_all(&public, &hashes, &sigs);
            assert_eq!(batch.keys.len(), usize::from(keys));
            for _ in 0..8 {
                assert!(batch_holds(&batch.keys, &batch.members), "{keys} keys");
            }
            assert_eq!(first_failure(&batch.keys, &batch.members), None);
            // Another member's hash: the equation fails, and the search names the member.
            let mut wrong = hashes.clone();
            wrong[29] = Hash32([0xee; 32]);
            let batch = decode_all(&public, &wrong, &sigs);
            assert!(!batch_holds(&batch.keys, &batch.members));
            assert_eq!(first_failure(&batch.keys, &batch.members), Some(29));
        }
    }

    #[test]
    fn canonical_encoding_rejects_exactly_the_non_round_tripping_edges() {
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        for sign in [0u8, 0x80] {
            for low in 0..=255u8 {
                for base in [[0u8; 32], p] {
                    let mut bytes = base;
                    bytes[0] = low;
                    bytes[31] |= sign;
                    let reference = CompressedEdwardsY(bytes)
                        .decompress()
                        .is_some_and(|point| point.compress().to_bytes() == bytes);
                    assert_eq!(decode_point(&bytes).is_some(), reference, "{bytes:?}");
                }
            }
        }
    }
}
