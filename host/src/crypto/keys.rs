//! Ed25519 keys and signatures over domain-separated BLAKE3 hashes.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use super::domain::Domain;
use super::hash::{Hash32, HexError, fixed_bytes, parse_fixed_hex};
use super::verify::{self, SignatureError};

/// An Ed25519 public key (32 bytes, compressed Edwards point).
///
/// Holding a `PublicKey` does not mean the bytes are a valid point; [`PublicKey::validate`]
/// and every verification check that.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex form (64 digits).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 hex digits (the point is not validated).
    pub fn from_hex(text: &str) -> Result<Self, HexError> {
        parse_fixed_hex::<32>(text).map(PublicKey)
    }

    /// Checks that the bytes are the canonical encoding of a point that is not of small order,
    /// the condition every verification applies to the key.
    pub fn validate(&self) -> Result<(), SignatureError> {
        verify::decode_public_key(self).map(|_| ())
    }

    /// Verifies `signature` over `payload` in `domain` (docs/protocol.md, "Signatures").
    pub fn verify(
        &self,
        domain: &Domain,
        payload: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        verify::verify_hash(self, &domain.hash(payload), signature)
    }

    /// The `trac1…` address of this key.
    pub fn address(&self) -> String {
        super::address::encode_address(self)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fixed_bytes::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        fixed_bytes::deserialize(deserializer).map(PublicKey)
    }
}

/// An Ed25519 signature (`R ‖ S`, 64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// Lower-case hex form (128 digits).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 128 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, HexError> {
        parse_fixed_hex::<64>(text).map(Signature)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fixed_bytes::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        fixed_bytes::deserialize(deserializer).map(Signature)
    }
}

/// An Ed25519 key pair. The secret is zeroed when the pair is dropped.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    /// A new key pair from the operating system's random source.
    pub fn generate() -> Self {
        Keypair {
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The key pair of a 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Keypair {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte secret seed (zeroed on drop).
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// The `trac1…` address of the public key.
    pub fn address(&self) -> String {
        self.public().address()
    }

    /// Signs `payload` in `domain`: an Ed25519 signature over `domain.hash(payload)`.
    pub fn sign(&self, domain: &Domain, payload: &[u8]) -> Signature {
        self.sign_hash(&domain.hash(payload))
    }

    /// Signs an already domain-separated 32-byte hash.
    pub fn sign_hash(&self, hash: &Hash32) -> Signature {
        Signature(self.signing.sign(hash.as_bytes()).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.public().to_hex())
    }
}
