//! The peer key as the libp2p identity: one ed25519 key, two views of it.
//!
//! A node's libp2p key pair is built from the seed of its [`Keypair`], so its [`PeerId`] is
//! derived from the same ed25519 public key that signs its log entries. The mapping is exact
//! in both directions for ed25519 peers: a `PeerId` of an ed25519 key inlines the key itself
//! (an identity multihash of the protobuf-encoded key), so [`public_key_of`] needs no lookup.

use libp2p::PeerId;
use libp2p::identity;

use super::NetError;
use crate::crypto::{Keypair, PublicKey};

/// Multihash code of the identity hash (the digest is the input itself).
const IDENTITY_MULTIHASH: u64 = 0;

/// The libp2p key pair of `keypair` (same ed25519 secret).
pub(crate) fn libp2p_keypair(keypair: &Keypair) -> Result<identity::Keypair, NetError> {
    let mut seed = keypair.seed();
    // `ed25519_from_bytes` zeroes the buffer it is given; `seed` is zeroed on drop as well.
    identity::Keypair::ed25519_from_bytes(&mut *seed)
        .map_err(|e| NetError::Identity(format!("the peer key is not a valid ed25519 seed: {e}")))
}

/// The libp2p [`PeerId`] of a peer key.
///
/// Fails only if the 32 bytes are not a valid ed25519 point (no real peer key is).
pub fn peer_id_of(key: &PublicKey) -> Result<PeerId, NetError> {
    let public = identity::ed25519::PublicKey::try_from_bytes(key.as_bytes())
        .map_err(|e| NetError::Identity(format!("{key} is not a valid ed25519 public key: {e}")))?;
    Ok(identity::PublicKey::from(public).to_peer_id())
}

/// The peer key behind a [`PeerId`], if the peer id is an inlined ed25519 key (every trac peer's
/// is; RSA or secp256k1 peers, or hashed peer ids, give `None`).
pub fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH {
        return None;
    }
    let public = identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed25519 = public.try_into_ed25519().ok()?;
    Some(PublicKey(ed25519.to_bytes()))
}
