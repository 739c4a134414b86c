//! End-to-end encryption of invite-only channels (docs/protocol.md §13.5).
//!
//! Each invite-only channel has an **epoch key** (32 random bytes) held by its owner. The owner
//! (or an inviter holding the key) wraps it to each invitee with XChaCha20-Poly1305 under a key
//! derived from a static-static X25519 exchange between their Ed25519 identities, so no
//! ephemeral key is needed and both sides derive the same wrap key:
//!
//! ```text
//! x25519 secret  = the clamped scalar of SHA-512(seed)[..32] (as Ed25519 derives it)
//! x25519 public  = the Montgomery form of the Ed25519 public key
//! shared         = X25519(own secret, peer public)           (all zero: refused)
//! wrap key       = BLAKE3::derive_key("trac/v1 sidechannel key wrap",
//!                                     shared ‖ BLAKE3(channel) ‖ u32be(epoch))
//! ```
//!
//! Messages are sealed with the epoch key and a random 24-byte nonce; the associated data is
//! `encode((channel, id, from, ts, epoch))`, so a sealed payload cannot be moved to another
//! frame, channel, author or epoch.

use chacha20poly1305::aead::{Aead, KeyInit, Payload as AeadPayload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_bytes::{ByteBuf, Bytes};
use zeroize::Zeroizing;

use super::frame::{KeyWrap, channel_scope};
use crate::codec;
use crate::crypto::{Keypair, PublicKey};

/// The BLAKE3 key-derivation context of wrap keys.
pub const KEY_WRAP_CONTEXT: &str = "trac/v1 sidechannel key wrap";

/// Why a key could not be wrapped, unwrapped or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    /// The peer's key is not a usable Ed25519 public key.
    #[error("public key {0} is not a valid Ed25519 point")]
    InvalidKey(String),
    /// The X25519 exchange gave the all-zero secret (a low-order point).
    #[error("X25519 shared secret with {0} is all zero (low-order key)")]
    LowOrder(String),
    /// Authentication failed: wrong key, or the data was altered.
    #[error("decryption failed (wrong key or altered data)")]
    Decrypt,
    /// Encryption failed (the plaintext is too long for the cipher).
    #[error("encryption failed")]
    Encrypt,
    /// A key wrap that does not hold a 32-byte key.
    #[error("key wrap holds {0} bytes, expected a 32-byte key")]
    WrapLength(usize),
}

/// A channel's epoch key (zeroed on drop).
#[derive(Clone, PartialEq, Eq)]
pub struct EpochKey(Zeroizing<[u8; 32]>);

impl EpochKey {
    /// A new random key.
    pub fn generate() -> Self {
        EpochKey(Zeroizing::new(rand::random()))
    }

    /// The key of these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        EpochKey(Zeroizing::new(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochKey(…)")
    }
}

/// A node's X25519 secret, derived from its Ed25519 key (zeroed on drop).
#[derive(Clone)]
pub struct X25519Secret(Zeroizing<[u8; 32]>);

impl X25519Secret {
    /// The secret of `keypair`: the scalar bytes of SHA-512 of its seed (clamped when used).
    pub fn from_keypair(keypair: &Keypair) -> Self {
        let signing = SigningKey::from_bytes(&keypair.seed());
        X25519Secret(Zeroizing::new(signing.to_scalar_bytes()))
    }

    /// The matching X25519 public key (equals [`x25519_public`] of the Ed25519 public key).
    pub fn public(&self) -> [u8; 32] {
        MontgomeryPoint::mul_base_clamped(*self.0).to_bytes()
    }

    /// `X25519(self, peer)`, refusing an invalid or low-order peer key.
    pub fn shared(&self, peer: &PublicKey) -> Result<Zeroizing<[u8; 32]>, E2eError> {
        let point = MontgomeryPoint(x25519_public(peer)?);
        let shared = Zeroizing::new(point.mul_clamped(*self.0).to_bytes());
        if shared.iter().all(|b| *b == 0) {
            return Err(E2eError::LowOrder(peer.to_hex()));
        }
        Ok(shared)
    }
}

impl std::fmt::Debug for X25519Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("X25519Secret(…)")
    }
}

/// The X25519 (Montgomery) form of an Ed25519 public key, which must be a valid point of
/// large order.
pub fn x25519_public(key: &PublicKey) -> Result<[u8; 32], E2eError> {
    key.validate()
        .map_err(|_| E2eError::InvalidKey(key.to_hex()))?;
    let verifying =
        VerifyingKey::from_bytes(key.as_bytes()).map_err(|_| E2eError::InvalidKey(key.to_hex()))?;
    Ok(verifying.to_montgomery().to_bytes())
}

/// The wrap key of `channel`'s `epoch` between two nodes (the same from both sides).
pub fn wrap_key(
    secret: &X25519Secret,
    peer: &PublicKey,
    channel: &str,
    epoch: u32,
) -> Result<Zeroizing<[u8; 32]>, E2eError> {
    let shared = secret.shared(peer)?;
    let mut material = Zeroizing::new([0u8; 68]);
    material[..32].copy_from_slice(&shared[..]);
    material[32..64].copy_from_slice(channel_scope(channel).as_bytes());
    material[64..].copy_from_slice(&epoch.to_be_bytes());
    Ok(Zeroizing::new(blake3::derive_key(
        KEY_WRAP_CONTEXT,
        &material[..],
    )))
}

/// Wraps `key` (of `epoch`) from `secret`'s owner to `peer`, with this `nonce`.
pub fn wrap_epoch_key(
    secret: &X25519Secret,
    peer: &PublicKey,
    channel: &str,
    epoch: u32,
    key: &EpochKey,
    nonce: [u8; 24],
) -> Result<KeyWrap, E2eError> {
    let wrap = wrap_key(secret, peer, channel, epoch)?;
    let ciphertext = seal_raw(&wrap, &nonce, &[], key.as_bytes())?;
    Ok(KeyWrap {
        epoch,
        nonce,
        ciphertext: ByteBuf::from(ciphertext),
    })
}

/// Unwraps an epoch key that `peer` wrapped to `secret`'s owner.
pub fn unwrap_epoch_key(
    secret: &X25519Secret,
    peer: &PublicKey,
    channel: &str,
    wrapped: &KeyWrap,
) -> Result<EpochKey, E2eError> {
    let wrap = wrap_key(secret, peer, channel, wrapped.epoch)?;
    let plain = Zeroizing::new(open_raw(&wrap, &wrapped.nonce, &[], &wrapped.ciphertext)?);
    let bytes: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| E2eError::WrapLength(plain.len()))?;
    Ok(EpochKey::from_bytes(bytes))
}

/// The associated data of a sealed payload: `encode((channel, id, from, ts, epoch))`.
pub fn payload_aad(channel: &str, id: &[u8; 16], from: &PublicKey, ts: u64, epoch: u32) -> Vec<u8> {
    codec::encode(&(channel, Bytes::new(id), from, ts, epoch))
}

/// XChaCha20-Poly1305 of `plaintext` under an epoch key.
pub fn seal(
    key: &EpochKey,
    nonce: &[u8; 24],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, E2eError> {
    seal_raw(key.as_bytes(), nonce, aad, plaintext)
}

/// Opens what [`seal`] sealed.
pub fn open(
    key: &EpochKey,
    nonce: &[u8; 24],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, E2eError> {
    open_raw(key.as_bytes(), nonce, aad, ciphertext)
}

fn seal_raw(
    key: &[u8; 32],
    nonce: &[u8; 24],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, E2eError> {
    XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(nonce),
            AeadPayload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| E2eError::Encrypt)
}

fn open_raw(
    key: &[u8; 32],
    nonce: &[u8; 24],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, E2eError> {
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            AeadPayload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| E2eError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(n: u8) -> Keypair {
        Keypair::from_seed(&[n; 32])
    }

    #[test]
    fn x25519_keys_derived_from_ed25519_agree() {
        let (a, b) = (keypair(1), keypair(2));
        let (sa, sb) = (
            X25519Secret::from_keypair(&a),
            X25519Secret::from_keypair(&b),
        );
        assert_eq!(sa.public(), x25519_public(&a.public()).expect("valid"));
        assert_eq!(sb.public(), x25519_public(&b.public()).expect("valid"));
        let ab = sa.shared(&b.public()).expect("shared");
        let ba = sb.shared(&a.public()).expect("shared");
        assert_eq!(*ab, *ba);
        assert_ne!(*ab, [0; 32]);
    }

    #[test]
    fn low_order_and_invalid_keys_are_refused() {
        let secret = X25519Secret::from_keypair(&keypair(1));
        // The identity point (y = 1) is of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            secret.shared(&PublicKey(identity)),
            Err(E2eError::InvalidKey(_))
        ));
        // All zero bytes (y = 0) is a point of order 4.
        assert!(secret.shared(&PublicKey([0; 32])).is_err());
        // Not a point at all.
        let mut bad = [0xff; 32];
        bad[31] = 0x7f;
        assert!(secret.shared(&PublicKey(bad)).is_err());
    }

    #[test]
    fn wrap_and_unwrap_between_the_two_sides() {
        let (owner, member, other) = (keypair(1), keypair(2), keypair(3));
        let so = X25519Secret::from_keypair(&owner);
        let sm = X25519Secret::from_keypair(&member);
        let key = EpochKey::generate();
        let wrapped =
            wrap_epoch_key(&so, &member.public(), "club", 4, &key, [9; 24]).expect("wraps");
        assert_eq!(wrapped.ciphertext.len(), 48);
        let back = unwrap_epoch_key(&sm, &owner.public(), "club", &wrapped).expect("unwraps");
        assert_eq!(back, key);
        // Another node, channel or epoch cannot unwrap it.
        let so3 = X25519Secret::from_keypair(&other);
        assert_eq!(
            unwrap_epoch_key(&so3, &owner.public(), "club", &wrapped),
            Err(E2eError::Decrypt)
        );
        assert_eq!(
            unwrap_epoch_key(&sm, &owner.public(), "club2", &wrapped),
            Err(E2eError::Decrypt)
        );
        let mut later = wrapped.clone();
        later.epoch = 5;
        assert_eq!(
            unwrap_epoch_key(&sm, &owner.public(), "club", &later),
            Err(E2eError::Decrypt)
        );
    }

    #[test]
    fn sealed_payloads_are_bound_to_their_frame() {
        let key = EpochKey::generate();
        let from = keypair(1).public();
        let aad = payload_aad("club", &[1; 16], &from, 100, 2);
        let sealed = seal(&key, &[3; 24], &aad, b"{\"m\":1}").expect("seals");
        assert_eq!(
            open(&key, &[3; 24], &aad, &sealed).expect("opens"),
            b"{\"m\":1}"
        );
        let other_ts = payload_aad("club", &[1; 16], &from, 101, 2);
        assert_eq!(
            open(&key, &[3; 24], &other_ts, &sealed),
            Err(E2eError::Decrypt)
        );
        assert_eq!(
            open(&EpochKey::generate(), &[3; 24], &aad, &sealed),
            Err(E2eError::Decrypt)
        );
    }
}
