//! Reading and writing system values. App-visible values are MessagePack maps with named
//! fields (`rmp_serde::to_vec_named`), so that `/get` and contracts see the reference's shapes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::ledger::LedgerError;
use crate::store::{StateAccess, StateView};

/// Encodes a system value (named fields; scalars as plain MessagePack).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // What `rmp_serde::to_vec_named` does, into a buffer that most values fit without growing.
    let mut out = Vec::with_capacity(256);
    // Serialising plain data into a Vec cannot fail.
    rmp_serde::encode::write_named(&mut out, value).expect("serialising a system value");
    out
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

/// Decoded forms of byte strings (ops, settlement proofs) kept between the batch preparation
/// of a checkpoint's ops and their application, so that each is decoded once.
///
/// Strings are applied in the order they were prepared, so the memory is a queue: a string is
/// looked for from the front, and the strings before it (prepared but not applied, say ops of
/// a skipped entry) are dropped. The memory is bounded (by the bytes of the kept strings) and
/// cleared when full; a string not found is simply decoded again.
///
/// Preparing often runs on another thread than applying: what was allocated there is freed
/// there too, at the next [`Prepared::keep`] (freeing it on the applying thread would contend
/// with the preparing thread's allocations).
#[derive(Debug)]
pub struct Prepared<T> {
    slot: std::sync::Mutex<PreparedSlot<T>>,
}

#[derive(Debug)]
struct PreparedSlot<T> {
    queue: std::collections::VecDeque<(Vec<u8>, T)>,
    /// Bytes of the strings in `queue`.
    bytes: usize,
    /// Strings taken, to be freed by `keep`.
    spent: Vec<Vec<u8>>,
    /// Decoded forms used, to be freed by `keep`.
    used: Vec<T>,
}

impl<T> Default for Prepared<T> {
    fn default() -> Self {
        Prepared {
            slot: std::sync::Mutex::new(PreparedSlot {
                queue: std::collections::VecDeque::new(),
                bytes: 0,
                spent: Vec::new(),
                used: Vec::new(),
            }),
        }
    }
}

impl<T> Prepared<T> {
    /// Most bytes of kept strings.
    const BUDGET: usize = 8 << 20;
    /// Longest string kept.
    const LONGEST: usize = 16 << 10;
    /// Most strings looked at to find one.
    const LOOKAHEAD: usize = 4096;
    /// Most strings and decoded forms waiting for [`Self::keep`] to free them.
    const SPENT: usize = 1 << 14;

    fn lock(&self) -> std::sync::MutexGuard<'_, PreparedSlot<T>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the decoded form of each string, after those kept before.
    pub fn keep<'a>(&self, items: impl IntoIterator<Item = (&'a [u8], T)>) {
        // Copied before locking: the applying thread may be waiting to take.
        let fresh: Vec<(Vec<u8>, T)> = items
            .into_iter()
            .filter(|(key, _)| key.len() <= Self::LONGEST)
            .map(|(key, value)| (key.to_vec(), value))
            .collect();
        let (spent, used) = {
            let mut slot = self.lock();
            let slot = &mut *slot;
            for (key, value) in fresh {
                if slot.bytes + key.len() > Self::BUDGET {
                    slot.queue.clear();
                    slot.bytes = 0;
                }
                slot.bytes += key.len();
                slot.queue.push_back((key, value));
            }
            (
                std::mem::take(&mut slot.spent),
                std::mem::take(&mut slot.used),
            )
        };
        drop((spent, used));
    }

    /// Takes the decoded form of `key`, if kept, dropping those kept before it.
    pub fn take(&self, key: &[u8]) -> Option<T> {
        let mut slot = self.lock();
        let slot = &mut *slot;
        let at = slot
            .queue
            .iter()
            .take(Self::LOOKAHEAD)
            .position(|(kept, _)| kept.as_slice() == key)?;
        if slot.spent.len() + at >= Self::SPENT {
            // Nothing was kept for a while: free here rather than hold on.
            slot.spent.clear();
            slot.used.clear();
        }
        let mut taken = None;
        for (kept, value) in slot.queue.drain(..=at) {
            slot.bytes -= kept.len();
            slot.spent.push(kept);
            if let Some(skipped) = taken.replace(value) {
                slot.used.push(skipped);
            }
        }
        taken
    }

    /// Hands back a decoded form [`Self::take`] gave, once used, to be freed by the next
    /// [`Self::keep`].
    pub fn used(&self, value: T) {
        let mut slot = self.lock();
        if slot.used.len() >= Self::SPENT {
            slot.used.clear();
        }
        slot.used.push(value);
    }
}

#[cfg(test)]
mod tests {
    use super::Prepared;

    #[test]
    fn prepared_strings_are_taken_in_order_once() {
        let prepared = Prepared::default();
        prepared.keep([(&b"a"[..], 1), (b"b", 2), (b"c", 3), (b"b", 4)]);
        assert_eq!(prepared.take(b"a"), Some(1));
        assert_eq!(prepared.take(b"a"), None);
        // "b" is skipped: taking "c" drops it.
        assert_eq!(prepared.take(b"c"), Some(3));
        assert_eq!(prepared.take(b"b"), Some(4));
        assert_eq!(prepared.take(b"b"), None);
        assert_eq!(prepared.take(b"x"), None);
        prepared.used(3);
        prepared.keep([(&b"d"[..], 5)]);
        assert_eq!(prepared.take(b"d"), Some(5));
    }

    #[test]
    fn long_strings_are_not_kept() {
        let prepared = Prepared::default();
        let long = vec![1u8; Prepared::<u8>::LONGEST + 1];
        prepared.keep([(&long[..], 1u8)]);
        assert_eq!(prepared.take(&long), None);
    }
}
