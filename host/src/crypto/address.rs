//! `trac1…` addresses: bech32m of the 32-byte public key with the human-readable part `trac`.

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};

use super::keys::PublicKey;

/// Human-readable part of every address (the signing domain, not the address, separates
/// networks).
pub const ADDRESS_HRP: &str = "trac";

/// Length of an address in characters: `trac` + `1` + 52 data characters + 6 checksum characters.
pub const ADDRESS_LEN: usize = 63;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not 63 characters long.
    #[error("invalid address: expected {ADDRESS_LEN} characters, got {0}")]
    Length(usize),
    /// Not lower case (the canonical form).
    #[error("invalid address: must be lower case")]
    Case,
    /// Not valid bech32m (bad characters or checksum).
    #[error("invalid address: {0}")]
    Bech32(String),
    /// Another human-readable part than `trac`.
    #[error("invalid address: expected prefix \"{ADDRESS_HRP}1\", got \"{0}1\"")]
    Prefix(String),
    /// The data is not a 32-byte key.
    #[error("invalid address: it holds {0} bytes, expected a 32-byte public key")]
    KeyLength(usize),
}

/// The address of `key`.
pub fn encode_address(key: &PublicKey) -> String {
    let hrp = Hrp::parse(ADDRESS_HRP).expect("static HRP is valid");
    bech32::encode::<Bech32m>(hrp, key.as_bytes()).expect("32 bytes fit in a bech32m string")
}

/// Parses an address back into its public key. The key's point is not checked here; every
/// signature check validates it.
pub fn decode_address(address: &str) -> Result<PublicKey, AddressError> {
    if !address.is_ascii() {
        return Err(AddressError::Bech32("non-ASCII characters".into()));
    }
    if address.len() != ADDRESS_LEN {
        return Err(AddressError::Length(address.len()));
    }
    if address.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(AddressError::Case);
    }
    let checked = CheckedHrpstring::new::<Bech32m>(address)
        .map_err(|e| AddressError::Bech32(e.to_string()))?;
    let hrp = checked.hrp();
    if hrp.as_str() != ADDRESS_HRP {
        return Err(AddressError::Prefix(hrp.to_string()));
    }
    // The 4 bits after the key's 256 must be zero, or several strings would name one key.
    checked
        .validate_segwit_padding()
        .map_err(|e| AddressError::Bech32(e.to_string()))?;
    let bytes: Vec<u8> = checked.byte_iter().collect();
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| AddressError::KeyLength(bytes.len()))?;
    Ok(PublicKey(key))
}
