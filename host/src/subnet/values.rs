//! Reading and writing system values. App-visible values are MessagePack maps with named
//! fields (`rmp_serde::to_vec_named`), so that `/get` and contracts see the reference's shapes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::ledger::LedgerError;
use crate::store::{StateAccess, StateView};

/// Encodes a system value (named fields; scalars as plain MessagePack).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    rmp_serde::to_vec_named(value).expect("serialising a system value")
}

/// Reads a system value. A value that does not decode reads as absent (system keys are
/// written only by the system rules, so this never happens on an intact store).
pub fn get<T: DeserializeOwned>(
    state: &dyn StateView,
    key: &[u8],
) -> Result<Option<T>, LedgerError> {
    let Some(bytes) = state.get(key)? else {
        return Ok(None);
    };
    match rmp_serde::from_slice(&bytes) {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), "system value does not decode: {e}");
            Ok(None)
        }
    }
}

/// Writes a system value.
pub fn put<T: Serialize + ?Sized>(
    state: &mut dyn StateAccess,
    key: &[u8],
    value: &T,
) -> Result<(), LedgerError> {
    Ok(state.put(key, &encode(value))?)
}

/// A counter (absent = 0).
pub fn counter(state: &dyn StateView, key: &[u8]) -> Result<u64, LedgerError> {
    Ok(get::<u64>(state, key)?.unwrap_or(0))
}

/// A boolean flag (absent = false).
pub fn flag(state: &dyn StateView, key: &[u8]) -> Result<bool, LedgerError> {
    Ok(get::<bool>(state, key)?.unwrap_or(false))
}

/// An `"on"`/`"off"` switch (absent = off).
pub fn switch(state: &dyn StateView, key: &str) -> Result<bool, LedgerError> {
    Ok(get::<String>(state, key.as_bytes())?.as_deref() == Some("on"))
}

/// `"on"` or `"off"`.
pub fn on_off(enabled: bool) -> &'static str {
    if enabled { "on" } else { "off" }
}

/// A public key stored as lowercase hex.
pub fn key_hex(state: &dyn StateView, key: &[u8]) -> Result<Option<PublicKey>, LedgerError> {
    Ok(get::<Option<String>>(state, key)?
        .flatten()
        .and_then(|hex| PublicKey::from_hex(&hex).ok()))
}

/// A chat message as stored under `msg/<n>` (the reference's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Always `"msg"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text (`None` once deleted).
    pub msg: Option<String>,
    /// The author's public key (hex).
    pub address: String,
    /// Attachment references (emptied on deletion).
    pub attachments: Vec<String>,
    /// Who deleted it (hex), if deleted.
    pub deleted_by: Option<String>,
    /// The message it replies to.
    pub reply_to: Option<u64>,
    /// Whether it is pinned.
    pub pinned: bool,
    /// Its pin slot, if it has one.
    pub pin_id: Option<u64>,
}

/// A pin slot as stored under `pni/<n>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    /// The message number.
    pub msg: u64,
    /// Whether it is pinned.
    pub pinned: bool,
}

/// A decoded system value remembered with the bytes it was decoded from, so that values read
/// by every op (parameters, the MSB trust, the contract record) are decoded once per change.
#[derive(Debug)]
pub struct Memo<T> {
    slot: std::sync::Mutex<Option<(Vec<u8>, T)>>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            slot: std::sync::Mutex::new(None),
        }
    }
}

impl<T: Clone> Memo<T> {
    /// The value of `key` in `state` (`None` when absent or when `decode` refuses it),
    /// decoding only when its bytes differ from the last ones seen.
    pub fn read(
        &self,
        state: &dyn StateView,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, LedgerError> {
        let Some(bytes) = state.get(key)? else {
            return Ok(None);
        };
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, value)) = slot.as_ref()
            && *seen == bytes
        {
            return Ok(Some(value.clone()));
        }
        let value = decode(&bytes);
        if let Some(value) = &value {
            *slot = Some((bytes, value.clone()));
        }
        Ok(value)
    }
}
