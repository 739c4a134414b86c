//! Per-channel and per-neighbour state, and what of it survives a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::crypto::PublicKey;
use crate::sidechannel::e2e::EpochKey;
use crate::sidechannel::frame::{FrameError, Invite, KeyUpdate, Welcome};

/// Most channels a neighbour's subscriptions are remembered for.
pub(crate) const MAX_NEIGHBOUR_CHANNELS: usize = 1024;

/// Epoch keys kept per channel (the current one and older ones, for frames in flight).
pub(crate) const KEPT_EPOCHS: usize = 3;

/// Format version of [`PersistedState`].
pub const PERSISTED_VERSION: u8 = 1;

/// Why a member is authorised, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Membership {
    /// When the authorising invite (or key update) was issued.
    pub issued_at: u64,
    /// When it expires (`u64::MAX`: until revoked).
    pub expires_at: u64,
}

/// What this node knows about a channel (joined or not).
#[derive(Debug, Default)]
pub(crate) struct Channel {
    pub joined: bool,
    /// Runtime owner (takes precedence over the configured one).
    pub owner: Option<PublicKey>,
    /// Learned to be invite-only (an invite, a key update, or this node's own invites).
    pub invite_only: bool,
    /// The stored welcome (verified when stored).
    pub welcome: Option<Welcome>,
    /// This node's own invite.
    pub local_invite: Option<Invite>,
    /// The current epoch (0: no key yet).
    pub epoch: u32,
    pub keys: BTreeMap<u32, EpochKey>,
    /// Authorised members known to this node.
    pub members: HashMap<PublicKey, Membership>,
    /// Invites this node issued as the owner, by invitee.
    pub issued: BTreeMap<PublicKey, IssuedInvite>,
    /// Revocations: member → when revoked.
    pub revoked: BTreeMap<PublicKey, u64>,
}

impl Channel {
    /// The key of the current epoch, if held.
    pub fn current_key(&self) -> Option<(u32, &EpochKey)> {
        self.keys.get(&self.epoch).map(|k| (self.epoch, k))
    }

    /// Adds an epoch key and forgets keys older than the last [`KEPT_EPOCHS`].
    pub fn add_key(&mut self, epoch: u32, key: EpochKey) {
        self.keys.insert(epoch, key);
        self.epoch = self.epoch.max(epoch);
        while self.keys.len() > KEPT_EPOCHS {
            self.keys.pop_first();
        }
    }

    /// Records a member unless a later revocation cancels it.
    pub fn add_member(&mut self, member: PublicKey, membership: Membership) {
        if self
            .revoked
            .get(&member)
            .is_some_and(|at| *at >= membership.issued_at)
        {
            return;
        }
        let entry = self.members.entry(member).or_insert(membership);
        if membership.issued_at >= entry.issued_at {
            *entry = membership;
        }
    }

    /// Revokes `member` at `at`.
    pub fn revoke(&mut self, member: PublicKey, at: u64) {
        let entry = self.revoked.entry(member).or_insert(at);
        *entry = (*entry).max(at);
        if self.members.get(&member).is_some_and(|m| m.issued_at <= at) {
            self.members.remove(&member);
        }
        self.issued.remove(&member);
    }

    /// Applies the owner's key update (made at `at`) as seen by `me`: invite-only from now
    /// on, revocations recorded, wrapped-to members learned, the epoch advanced. The caller
    /// adds `me`'s own new key.
    pub fn apply_key_update(&mut self, me: &PublicKey, update: &KeyUpdate, at: u64) {
        self.invite_only = true;
        for revoked in &update.revoked {
            self.revoke(*revoked, at);
            if revoked == me {
                self.local_invite = None;
            }
        }
        for (member, _) in update.wraps.iter().filter(|(m, _)| m != me) {
            let membership = Membership {
                issued_at: at,
                expires_at: u64::MAX,
            };
            self.add_member(*member, membership);
        }
        self.epoch = self.epoch.max(update.epoch);
    }

    /// Forgets the members learned from the network (keeps those this node invited).
    pub fn forget_learned_members(&mut self) {
        let issued = &self.issued;
        self.members.retain(|member, _| issued.contains_key(member));
    }

    /// Forgets expired members.
    pub fn purge_members(&mut self, now: u64) {
        self.members.retain(|_, m| m.expires_at > now);
        self.issued.retain(|_, i| i.expires_at > now);
    }
}

/// A neighbour: a connected peer and the channels it joined.
#[derive(Debug, Default)]
pub(crate) struct Neighbour {
    pub channels: BTreeSet<String>,
}

/// An invite issued by this node as a channel's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedInvite {
    /// Who was invited.
    pub invitee: PublicKey,
    /// When, ms.
    pub issued_at: u64,
    /// Until when, ms.
    pub expires_at: u64,
    /// The invite's nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 16],
}

/// A channel's epoch key, as persisted. **Secret**: the peer store that holds it must be as
/// protected as the keystore.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedKey {
    /// The epoch.
    pub epoch: u32,
    /// The 32-byte key.
    #[serde(with = "serde_bytes")]
    pub key: [u8; 32],
}

impl std::fmt::Debug for PersistedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PersistedKey({}, …)", self.epoch)
    }
}

/// What the engine remembers of a channel across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedChannel {
    /// The channel name.
    pub name: String,
    /// Joined (rejoined at start).
    pub joined: bool,
    /// Runtime owner key.
    pub owner: Option<PublicKey>,
    /// Learned to be invite-only.
    pub invite_only: bool,
    /// The stored welcome.
    pub welcome: Option<Welcome>,
    /// This node's own invite.
    pub local_invite: Option<Invite>,
    /// The current epoch.
    pub epoch: u32,
    /// Epoch keys held.
    pub keys: Vec<PersistedKey>,
    /// Invites issued as the owner.
    pub issued: Vec<IssuedInvite>,
    /// Revocations (member, when).
    pub revoked: Vec<(PublicKey, u64)>,
}

/// The engine's durable state, saved by the node in its peer store (canonical MessagePack,
/// channels sorted by name). It holds epoch keys: treat it as secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// [`PERSISTED_VERSION`].
    pub version: u8,
    /// Known channels.
    pub channels: Vec<PersistedChannel>,
}

impl Default for PersistedState {
    fn default() -> Self {
        PersistedState {
            version: PERSISTED_VERSION,
            channels: Vec::new(),
        }
    }
}

impl PersistedState {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes [`PersistedState::encode`] output.
    pub fn decode(bytes: &[u8]) -> Result<PersistedState, FrameError> {
        let state: PersistedState = codec::decode(bytes)?;
        if state.version != PERSISTED_VERSION {
            return Err(FrameError::Version(state.version));
        }
        Ok(state)
    }
}

impl Channel {
    /// The durable part of this channel.
    pub fn persist(&self, name: &str) -> PersistedChannel {
        PersistedChannel {
            name: name.to_string(),
            joined: self.joined,
            owner: self.owner,
            invite_only: self.invite_only,
            welcome: self.welcome.clone(),
            local_invite: self.local_invite.clone(),
            epoch: self.epoch,
            keys: self
                .keys
                .iter()
                .map(|(epoch, key)| PersistedKey {
                    epoch: *epoch,
                    key: *key.as_bytes(),
                })
                .collect(),
            issued: self.issued.values().cloned().collect(),
            revoked: self.revoked.iter().map(|(k, at)| (*k, *at)).collect(),
        }
    }

    /// A channel restored from its durable part.
    pub fn restore(saved: PersistedChannel) -> Channel {
        let mut channel = Channel {
            joined: saved.joined,
            owner: saved.owner,
            invite_only: saved.invite_only,
            welcome: saved.welcome,
            local_invite: saved.local_invite,
            epoch: saved.epoch,
            revoked: saved.revoked.into_iter().collect(),
            ..Channel::default()
        };
        for key in saved.keys {
            channel
                .keys
                .insert(key.epoch, EpochKey::from_bytes(key.key));
        }
        for issued in saved.issued {
            channel.add_member(
                issued.invitee,
                Membership {
                    issued_at: issued.issued_at,
                    expires_at: issued.expires_at,
                },
            );
            channel.issued.insert(issued.invitee, issued);
        }
        channel
    }
}
