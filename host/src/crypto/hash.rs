//! BLAKE3-256 hashes and the fixed-size byte arrays used in consensus types.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A 32-byte BLAKE3 hash (also used for ids: subnet ids, network ids, code hashes).
///
/// Encodes as a MessagePack `bin 8` of exactly 32 bytes and displays as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// The all-zero hash, used where a value is absent by definition (for example `prev` of the
    /// first entry of a log).
    pub const ZERO: Hash32 = Hash32([0u8; 32]);

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, HexError> {
        parse_fixed_hex::<32>(text).map(Hash32)
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", self.to_hex())
    }
}

impl FromStr for Hash32 {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash32::from_hex(s)
    }
}

impl From<blake3::Hash> for Hash32 {
    fn from(h: blake3::Hash) -> Self {
        Hash32(*h.as_bytes())
    }
}

/// BLAKE3-256 of `data`.
pub fn hash(data: &[u8]) -> Hash32 {
    blake3::hash(data).into()
}

/// BLAKE3-256 of the concatenation of `parts`, without building the concatenation.
pub fn hash_parts(parts: &[&[u8]]) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// A hex string that does not have the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// Wrong number of hex digits.
    #[error("expected {expected} hex characters, got {got}")]
    Length {
        /// Digits required.
        expected: usize,
        /// Digits given.
        got: usize,
    },
    /// A character that is not a hex digit.
    #[error("invalid hex: {0}")]
    Invalid(String),
}

/// Parses exactly `2 * N` hex digits into `N` bytes.
pub fn parse_fixed_hex<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let text = text.trim();
    if text.len() != 2 * N {
        return Err(HexError::Length {
            expected: 2 * N,
            got: text.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|e| HexError::Invalid(e.to_string()))?;
    Ok(out)
}

/// Serde support for fixed-size byte arrays as MessagePack `bin` (not as an array of integers).
pub(crate) mod fixed_bytes {
    use super::*;

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        struct FixedVisitor<const N: usize>;
        impl<const N: usize> Visitor<'_> for FixedVisitor<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{N} bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        deserializer.deserialize_bytes(FixedVisitor::<N>)
    }
}

impl Serialize for Hash32 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fixed_bytes::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        fixed_bytes::deserialize(deserializer).map(Hash32)
    }
}
