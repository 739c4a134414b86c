//! The call context: state access, the deterministic inputs of the call, events.

use std::cell::OnceCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::trac::contract::types::CallContext;
use crate::bindings::trac::contract::{context, crypto, events, state};

pub use crate::bindings::trac::contract::types::OpKind;

/// A state record: key and raw value.
pub type Record = (Vec<u8>, Vec<u8>);

/// A chat message handed to [`crate::Contract::on_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The text.
    pub text: String,
    /// The poster's public key.
    pub author: [u8; 32],
    /// The message's number in the chat log.
    pub number: u64,
}

/// What a contract function works with: the state (reads see the call's own writes), the
/// deterministic context of the call, and events.
///
/// State values written with [`Ctx::put`] are MessagePack with field names, so people and tools
/// can read them as JSON.
#[derive(Default)]
pub struct Ctx {
    info: OnceCell<CallContext>,
}

impl Ctx {
    pub(crate) fn new() -> Self {
        Ctx::default()
    }

    fn info(&self) -> &CallContext {
        self.info.get_or_init(context::current)
    }

    /// What kind of operation runs.
    pub fn op_kind(&self) -> OpKind {
        self.info().op_kind
    }

    /// The requester's public key.
    pub fn sender(&self) -> [u8; 32] {
        to_32(&self.info().sender)
    }

    /// The requester's public key in hex.
    pub fn sender_hex(&self) -> String {
        hex(&self.sender())
    }

    /// The requester's `trac1…` address.
    pub fn sender_address(&self) -> String {
        address(&self.sender())
    }

    /// The MSB validator that settled the transaction, if any.
    pub fn validator(&self) -> Option<[u8; 32]> {
        self.info().validator.as_deref().map(to_32)
    }

    /// Hash of the transaction or log entry.
    pub fn tx_hash(&self) -> [u8; 32] {
        to_32(&self.info().tx_hash)
    }

    /// Position of the operation in the confirmed order.
    pub fn log_position(&self) -> u64 {
        self.info().log_position
    }

    /// Deterministic time of the checkpoint, milliseconds since the Unix epoch. The only clock
    /// a contract has.
    pub fn time(&self) -> u64 {
        self.info().checkpoint_time
    }

    /// The call's deterministic 32-byte seed: the same on every node, unknown before the
    /// operation is ordered. The only randomness a contract has.
    pub fn seed(&self) -> [u8; 32] {
        to_32(&self.info().seed)
    }

    /// The raw bytes stored under `key`.
    pub fn get_raw(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        Ok(state::get(key.as_ref())?)
    }

    /// The value stored under `key`, decoded from MessagePack.
    pub fn get<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>, Error> {
        let key = key.as_ref();
        match self.get_raw(key)? {
            None => Ok(None),
            Some(bytes) => rmp_serde::from_slice(&bytes).map(Some).map_err(|e| {
                Error::failed(format!(
                    "state value at {:?} does not decode: {e}",
                    String::from_utf8_lossy(key)
                ))
            }),
        }
    }

    /// Stores raw bytes under `key`.
    pub fn put_raw(&mut self, key: impl AsRef<[u8]>, value: &[u8]) -> Result<(), Error> {
        Ok(state::put(key.as_ref(), value)?)
    }

    /// Stores `value` under `key` as MessagePack (with field names).
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<(), Error> {
        let bytes = encode(value)?;
        self.put_raw(key, &bytes)
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<(), Error> {
        Ok(state::delete(key.as_ref())?)
    }

    /// Up to `limit` records whose keys start with `prefix`, in key order (raw values).
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>, limit: u32) -> Result<Vec<Record>, Error> {
        let prefix = prefix.as_ref();
        let end = prefix_end(prefix);
        let entries = state::scan(prefix, end.as_deref(), limit)?;
        Ok(entries.into_iter().map(|e| (e.key, e.value)).collect())
    }

    /// Emits a consensus event with MessagePack data.
    pub fn emit<T: Serialize + ?Sized>(&mut self, topic: &str, data: &T) -> Result<(), Error> {
        let bytes = encode(data)?;
        events::emit(topic, &bytes).map_err(Error::Failed)
    }

    /// A debug line in the node's log (not consensus).
    pub fn log(&self, message: &str) {
        events::debug(message);
    }

    /// BLAKE3-256 of `data`.
    pub fn blake3(&self, data: &[u8]) -> [u8; 32] {
        to_32(&crypto::blake3(data))
    }

    /// Whether `signature` by `public_key` over `message` is valid.
    pub fn verify(&self, public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
        crypto::ed25519_verify(public_key, message, signature)
    }
}

/// MessagePack with field names (how the SDK stores values and returns results).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::failed(format!("cannot encode: {e}")))
}

/// The smallest key above every key starting with `prefix` (`None`: no upper bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn to_32(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let n = bytes.len().min(32);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// The `trac1…` address of a public key.
pub fn address(key: &[u8; 32]) -> String {
    let hrp = bech32::Hrp::parse("trac").expect("static HRP");
    bech32::encode::<bech32::Bech32m>(hrp, key).expect("32 bytes encode")
}
