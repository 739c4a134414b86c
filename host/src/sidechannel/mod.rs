//! Sidechannels: fast, ephemeral, signed P2P messages next to the log (docs/protocol.md §13).
//!
//! This module is a pure, synchronous, message-driven library: it does no I/O, reads no clock
//! (every call takes `now_ms`) and draws randomness only for frame ids, nonces and epoch keys.
//! The networked node owns one [`Engine`] and calls it from one task: it hands over the bytes a
//! neighbour sent ([`Engine::receive`]) and sends the bytes the engine returns ([`Outbound`]).
//!
//! - [`frame`]: the wire types, their canonical encoding, signatures and proof of work;
//! - [`e2e`]: end-to-end encryption of invite-only channels (epoch keys, X25519 key wraps);
//! - [`policy`]: [`Settings`] and the pure per-channel policy decisions;
//! - [`engine`]: the per-node state machine (neighbours, channels, receive pipeline, relay).
//!
//! ```
//! use trac_host::crypto::Keypair;
//! use trac_host::sidechannel::{Engine, PersistedState, Settings, ENTRY_CHANNEL};
//!
//! let settings = Settings { pow: false, ..Settings::default() };
//! let mut alice = Engine::new(Keypair::from_seed(&[1; 32]), settings.clone(), PersistedState::default());
//! let mut bob = Engine::new(Keypair::from_seed(&[2; 32]), settings, PersistedState::default());
//! let now = 1_700_000_000_000;
//! alice.peer_connected(bob.public_key(), now);
//! bob.peer_connected(alice.public_key(), now);
//!
//! let (_frame, outbound) = alice.send(ENTRY_CHANNEL, r#"{"hello":"bob"}"#, None, now).unwrap();
//! let (to, bytes) = &outbound[0];
//! assert_eq!(*to, bob.public_key());
//! let received = bob.receive(alice.public_key(), bytes, now);
//! assert_eq!(received.deliveries[0].message, r#"{"hello":"bob"}"#);
//! assert!(received.deliveries[0].verified);
//! ```

pub mod e2e;
pub mod engine;
pub mod frame;
mod limits;
pub mod policy;

#[cfg(test)]
mod tests;

pub use engine::{
    ChannelStats, Delivery, DropReason, Engine, JoinOutcome, OpenOutcome, Outbound, PendingSend,
    PersistedState, Received, Role, ScError, ScEvent, Stats,
};
pub use frame::{Frame, Invite, KeyUpdate, KeyWrap, Payload, Welcome};
pub use policy::Settings;

/// The entry channel: always joined, never left, exempt from owner, welcome and invite rules
/// (proof of work and rate limits still apply).
pub const ENTRY_CHANNEL: &str = "0000intercom";

/// The protocol name; the node speaks it as `/trac/sidechannel/2`.
pub const PROTOCOL: &str = "sidechannel";

/// Longest channel name, in UTF-8 bytes (after trimming).
pub const MAX_CHANNEL_NAME_BYTES: usize = 128;

/// Normalises a channel name: trims it and checks that it is 1 to
/// [`MAX_CHANNEL_NAME_BYTES`] bytes without control characters.
pub fn normalize_channel(name: &str) -> Result<&str, ScError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ScError::InvalidName("empty channel name".into()));
    }
    if name.len() > MAX_CHANNEL_NAME_BYTES {
        return Err(ScError::InvalidName(format!(
            "channel name is {} bytes, at most {MAX_CHANNEL_NAME_BYTES} allowed",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ScError::InvalidName(
            "channel name contains control characters".into(),
        ));
    }
    Ok(name)
}

/// Whether `name` is already in normal form (what a received frame must carry).
pub fn is_normal_channel(name: &str) -> bool {
    normalize_channel(name).is_ok_and(|n| n.len() == name.len())
}
