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

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand::RngCore;
use sha2::{Digest, Sha512};

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

fn decode_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let point = CompressedEdwardsY(*bytes).decompress()?;
    (point.compress().as_bytes() == bytes).then_some(point)
}

/// A signature split into its decoded parts.
struct Decoded {
    a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

fn decode(key: &PublicKey, message: &[u8], sig: &Signature) -> Result<Decoded, SignatureError> {
    let a = decode_public_key(key)?;
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
    Ok(Decoded { a, r, s, k })
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
    let d = decode(key, message, sig)?;
    // [S]B − [k]A − R, then clear the cofactor.
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&d.k, &(-d.a), &d.s);
    if (sb_minus_ka - d.r).mul_by_cofactor().is_identity() {
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

/// Verifies many signatures at once; the verdict equals verifying each with [`verify_hash`].
///
/// On failure the error names the first failing index (found by checking each signature
/// singly, which only happens when the batch fails).
pub fn verify_batch(items: &[BatchItem<'_>]) -> Result<(), SignatureError> {
    if items.len() < 2 {
        return items
            .iter()
            .try_for_each(|i| verify_hash(i.key, i.hash, i.signature));
    }
    let mut decoded = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match decode(item.key, item.hash.as_bytes(), item.signature) {
            Ok(d) => decoded.push(d),
            Err(reason) => {
                return Err(SignatureError::InBatch {
                    index,
                    reason: Box::new(reason),
                });
            }
        }
    }
    let mut rng = rand::thread_rng();
    let mut scalars = Vec::with_capacity(2 * decoded.len() + 1);
    let mut points = Vec::with_capacity(2 * decoded.len() + 1);
    let mut s_sum = Scalar::ZERO;
    for d in &decoded {
        let mut z = [0u8; 16];
        rng.fill_bytes(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        s_sum += z * d.s;
        scalars.push(z);
        points.push(d.r);
        scalars.push(z * d.k);
        points.push(d.a);
    }
    scalars.push(-s_sum);
    points.push(ED25519_BASEPOINT_POINT);
    let sum = EdwardsPoint::vartime_multiscalar_mul(scalars.iter(), points.iter());
    if sum.mul_by_cofactor().is_identity() {
        return Ok(());
    }
    for (index, item) in items.iter().enumerate() {
        if let Err(reason) = verify_hash(item.key, item.hash, item.signature) {
            return Err(SignatureError::InBatch {
                index,
                reason: Box::new(reason),
            });
        }
    }
    // With the cofactored equation a batch of individually valid signatures always passes, so
    // this is not reached; the single checks are the authority either way.
    Ok(())
}
