//! The subnet's system keyspace: every key the system rules write, and the reserved list that
//! contracts may read but never write (docs/protocol.md, "Subnet keyspace").
//!
//! App-visible keys keep the names of the reference (`admin`, `msg/<n>`, `txl`, …) so that
//! `/get --key admin` works the same; indices are decimal without padding. System bookkeeping
//! lives under `sys/` and contract code under `contract/`.

use std::sync::Arc;

use crate::crypto::{Hash32, PublicKey};
use crate::runtime::ReservedKeys;

/// Exact keys reserved for the system.
pub const RESERVED_EXACT: &[&str] = &[
    "admin",
    "auto_add_writers",
    "chat_status",
    "txen",
    "wlst",
    "msgl",
    "delml",
    "pnl",
    "txl",
    "params",
    "wrl",
];

/// Key prefixes reserved for the system (everything under them).
pub const RESERVED_PREFIXES: &[&str] = &[
    "sys/",
    "contract/",
    "sh/",
    "tx/",
    "txi/",
    "utxl/",
    "utxi/",
    "msg/",
    "umsg/",
    "umsgl/",
    "nick/",
    "kcin/",
    "mod/",
    "mtd/",
    "wl/",
    "delm/",
    "pni/",
    "bnd/",
];

/// The reserved keys as the runtime checks them.
pub fn reserved() -> Arc<ReservedKeys> {
    Arc::new(ReservedKeys::new(
        RESERVED_EXACT.iter().map(|k| k.as_bytes().to_vec()),
        RESERVED_PREFIXES.iter().map(|p| p.as_bytes().to_vec()),
    ))
}

/// The admin's public key (hex string), or nil once renounced.
pub const ADMIN: &str = "admin";
/// `"on"` / `"off"`: whether writers may be added by their own signed request.
pub const AUTO_ADD_WRITERS: &str = "auto_add_writers";
/// `"on"` / `"off"`: whether chat posts and nick changes are accepted.
pub const CHAT_STATUS: &str = "chat_status";
/// Whether contract transactions are enabled (absent = enabled).
pub const TXEN: &str = "txen";
/// Whether the chat whitelist is enforced.
pub const WLST: &str = "wlst";
/// Number of chat messages.
pub const MSGL: &str = "msgl";
/// Number of deleted messages.
pub const DELML: &str = "delml";
/// Number of pin slots.
pub const PNL: &str = "pnl";
/// Number of indexed contract transactions.
pub const TXL: &str = "txl";
/// The consensus parameters (limits of contract calls and ops).
pub const PARAMS: &str = "params";

/// The subnet's identity record.
pub const SUBNET: &str = "sys/subnet";
/// The MSB network and indexers the subnet trusts for settlement.
pub const MSB: &str = "sys/msb";
/// The indexer set, sequencer first.
pub const INDEXERS: &str = "sys/indexers";
/// Height up to which expired replay guards were pruned.
pub const GUARDS_PRUNED: &str = "sys/guards-pruned";
/// Prefix of the replay-guard expiry index.
pub const GUARD_INDEX: &str = "sys/guard/";
/// The active contract.
pub const CONTRACT_CURRENT: &str = "contract/current";
/// Number of contract activations so far.
pub const CONTRACT_HISTORY_LEN: &str = "contract/historyl";
/// Outcome of the last deployment attempt.
pub const CONTRACT_LAST_DEPLOY: &str = "contract/last-deploy";

/// Appends the lowercase hex of 32 bytes (what `to_hex` gives, without its per-digit
/// iterator: keys with a hex part are built for every op).
pub(super) fn push_hex32(out: &mut Vec<u8>, bytes: &[u8; 32]) {
    let mut digits = [0u8; 64];
    hex::encode_to_slice(bytes, &mut digits).expect("64 digits for 32 bytes");
    out.extend_from_slice(&digits);
}

/// The lowercase hex of 32 bytes, as `to_hex` gives it.
pub(super) fn hex32(bytes: &[u8; 32]) -> String {
    let mut digits = Vec::with_capacity(64);
    push_hex32(&mut digits, bytes);
    String::from_utf8(digits).expect("hex digits are ASCII")
}

/// `prefix ‖ hex(bytes) ‖ suffix`.
fn hex_between(prefix: &str, bytes: &[u8; 32], suffix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 64 + suffix.len());
    out.extend_from_slice(prefix.as_bytes());
    push_hex32(&mut out, bytes);
    out.extend_from_slice(suffix);
    out
}

fn hex_key(prefix: &str, key: &PublicKey) -> Vec<u8> {
    hex_between(prefix, &key.0, b"")
}

/// `sys/writer/<pk>`: present for every writer (indexers included).
pub fn writer(key: &PublicKey) -> Vec<u8> {
    hex_key("sys/writer/", key)
}

/// `bnd/<pk>`: a removed writer, which cannot re-add itself through auto-add.
pub fn banned(key: &PublicKey) -> Vec<u8> {
    hex_key("bnd/", key)
}

/// `wl/<pk>`: chat whitelist status.
pub fn whitelist(key: &PublicKey) -> Vec<u8> {
    hex_key("wl/", key)
}

/// `mod/<pk>`: moderator status.
pub fn moderator(key: &PublicKey) -> Vec<u8> {
    hex_key("mod/", key)
}

/// `mtd/<pk>`: mute status.
pub fn muted(key: &PublicKey) -> Vec<u8> {
    hex_key("mtd/", key)
}

/// `nick/<pk>`: a user's nick.
pub fn nick(key: &PublicKey) -> Vec<u8> {
    hex_key("nick/", key)
}

/// `kcin/<nick>`: the owner of a nick.
pub fn nick_owner(nick: &str) -> Vec<u8> {
    format!("kcin/{nick}").into_bytes()
}

/// `msg/<n>`: chat message `n`.
pub fn message(n: u64) -> Vec<u8> {
    format!("msg/{n}").into_bytes()
}

/// `umsgl/<pk>`: number of messages of a user.
pub fn user_message_count(key: &PublicKey) -> Vec<u8> {
    hex_key("umsgl/", key)
}

/// `umsg/<pk>/<n>`: the user's `n`-th message (value `"msg/<id>"`).
pub fn user_message(key: &PublicKey, n: u64) -> Vec<u8> {
    format!("umsg/{}/{n}", key.to_hex()).into_bytes()
}

/// `delm/<n>`: the `n`-th deleted message id.
pub fn deleted(n: u64) -> Vec<u8> {
    format!("delm/{n}").into_bytes()
}

/// `pni/<n>`: pin slot `n`.
pub fn pin(n: u64) -> Vec<u8> {
    format!("pni/{n}").into_bytes()
}

/// `sh/<hash>`: the replay guard of a signed op (value: its expiry height).
pub fn replay_guard(hash: &Hash32) -> Vec<u8> {
    hex_between("sh/", &hash.0, b"")
}

/// `sys/guard/<expiry, 20 digits>/<hash>`: the expiry index of replay guards.
pub fn guard_index(expires: u64, hash: &Hash32) -> Vec<u8> {
    format!("{GUARD_INDEX}{expires:020}/{}", hash.to_hex()).into_bytes()
}

/// The first guard-index key at or above `expires` (exclusive bound of a prune scan).
pub fn guard_index_bound(expires: u64) -> Vec<u8> {
    format!("{GUARD_INDEX}{expires:020}/").into_bytes()
}

/// `txi/<n>`: the `n`-th indexed transaction.
pub fn tx_record(n: u64) -> Vec<u8> {
    format!("txi/{n}").into_bytes()
}

/// `tx/<hash>`: the index of a settled transaction (its replay guard).
pub fn tx_by_hash(hash: &Hash32) -> Vec<u8> {
    hex_between("tx/", &hash.0, b"")
}

/// `utxl/<pk>`: number of transactions of a requester.
pub fn user_tx_count(key: &PublicKey) -> Vec<u8> {
    hex_key("utxl/", key)
}

/// `utxi/<pk>/<n>`: the requester's `n`-th transaction (value: the global index).
pub fn user_tx(key: &PublicKey, n: u64) -> Vec<u8> {
    hex_between("utxi/", &key.0, format!("/{n}").as_bytes())
}

/// `contract/code/<hash>/<i>`: chunk `i` of a component.
pub fn code_chunk(hash: &Hash32, index: u32) -> Vec<u8> {
    format!("contract/code/{}/{index}", hash.to_hex()).into_bytes()
}

/// `contract/upload/<hash>`: an announced deployment collecting its chunks.
pub fn upload(hash: &Hash32) -> Vec<u8> {
    format!("contract/upload/{}", hash.to_hex()).into_bytes()
}

/// `contract/history/<n>`: the `n`-th contract activation.
pub fn contract_history(n: u64) -> Vec<u8> {
    format!("contract/history/{n}").into_bytes()
}

/// `contract/stored/<hash>`: a component whose chunks are all stored (its size).
pub fn code_stored(hash: &Hash32) -> Vec<u8> {
    format!("contract/stored/{}", hash.to_hex()).into_bytes()
}
