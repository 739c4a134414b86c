//! Canonical binary encoding of every consensus value (docs/protocol.md, "Canonical encoding").
//!
//! Values are MessagePack as written by `rmp_serde::to_vec`: structs are positional arrays in
//! declaration order, byte strings are `bin`, integers take their shortest form, enum variants
//! are written by name. Consensus types hold no floats; amounts are 16-byte big-endian `u128`
//! (`bin 8` of length 16, which is how the encoder writes every `u128`).
//!
//! Decoding is strict: [`decode`] re-encodes the value it read and refuses the input unless the
//! bytes are identical, so every value has exactly one accepted encoding and a hash or
//! signature over encoded bytes can never be bypassed by an alternative encoding.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use trac_host::codec;
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Transfer { to: String, amount: u128 }
//!
//! let t = Transfer { to: "bob".into(), amount: 5 };
//! let bytes = codec::encode(&t);
//! assert_eq!(codec::decode::<Transfer>(&bytes).unwrap(), t);
//! // The same value with the amount written as a plain integer is refused.
//! let mut loose = vec![0x92, 0xa3, b'b', b'o', b'b', 0x05];
//! assert!(codec::decode::<Transfer>(&loose).is_err());
//! ```

pub mod json;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes were refused as the canonical encoding of a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes do not decode as the expected type.
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// The bytes decode, but are followed by more bytes.
    #[error("{0} trailing bytes after the encoded value")]
    TrailingBytes(usize),
    /// The bytes decode, but are not the canonical encoding of the decoded value.
    #[error("non-canonical encoding (the value re-encodes to different bytes)")]
    NonCanonical,
}

/// Encodes `value` canonically.
///
/// Consensus types are plain data, so encoding cannot fail; a type that makes rmp-serde fail
/// (for example a map with non-string keys and a serialiser error) is a programming error.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("consensus values always encode")
}

/// Decodes `bytes` as a `T`, refusing trailing bytes and any non-canonical encoding.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut reader = bytes;
    let value: T = {
        let mut de = rmp_serde::Deserializer::new(&mut reader);
        serde::Deserialize::deserialize(&mut de)
            .map_err(|e| CodecError::Malformed(e.to_string()))?
    };
    if !reader.is_empty() {
        return Err(CodecError::TrailingBytes(reader.len()));
    }
    if encode(&value) != bytes {
        return Err(CodecError::NonCanonical);
    }
    Ok(value)
}

/// Serde adapter that writes a `u128` as 16 big-endian bytes, for fields that must say so
/// explicitly (`#[serde(with = "trac_host::codec::be_u128")]`). The default encoding of `u128` is
/// the same; the adapter also refuses other lengths with a clear error.
pub mod be_u128 {
    use serde::{Deserializer, Serializer};

    /// Writes 16 big-endian bytes.
    pub fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&value.to_be_bytes())
    }

    /// Reads exactly 16 big-endian bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = u128;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("16 big-endian bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<u128, E> {
                let bytes: [u8; 16] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(u128::from_be_bytes(bytes))
            }
        }
        deserializer.deserialize_bytes(V)
    }
}
