//! The per-node sidechannel state machine (docs/protocol.md §13.7).
//!
//! One [`Engine`] per node. The node calls it from one task: [`Engine::peer_connected`] and
//! [`Engine::peer_disconnected`] as neighbours come and go, [`Engine::receive`] with every
//! frame a neighbour sends, and the operator's commands ([`Engine::join`], [`Engine::send`],
//! [`Engine::invite`], …). Every call returns the frames to send as an [`Outbound`] list of
//! `(neighbour, bytes)`; the engine itself does no I/O and reads no clock.
//!
//! Proof of work is CPU work. [`Engine::send`] does it inline (fine at the default
//! difficulty, about 4,000 BLAKE3 hashes); a node that wants it off its async runtime calls
//! [`Engine::prepare_send`], runs [`PendingSend::solve`] in `spawn_blocking`, then
//! [`Engine::finish_send`]. Control frames the engine authors itself (subscriptions, welcomes,
//! auth, key updates, open requests) do their work inline.

mod receive;
mod state;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use state::{Channel, Membership, Neighbour};
pub use state::{IssuedInvite, PERSISTED_VERSION, PersistedChannel, PersistedKey, PersistedState};

use super::e2e::{self, E2eError, EpochKey, X25519Secret};
use super::frame::{
    Body, Frame, FrameError, Invite, InviteTerms, KeyUpdate, Payload, RELAY_OVERHEAD, Welcome,
    pow_satisfied, solve_pow,
};
use super::limits::{
    Dedupe, FrameKey, RATE_LIMIT_ENTRIES, RateConfig, RateLimiter, Seen, fingerprint,
};
use super::policy::{self, InviteContext, PolicyError, Settings};
use super::{ENTRY_CHANNEL, normalize_channel};
use crate::crypto::{Hash32, Keypair, PublicKey};

/// Frames to send: `(neighbour, encoded frame)`.
pub type Outbound = Vec<(PublicKey, Vec<u8>)>;

/// Why a received frame was dropped (counted in [`Stats::drops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum DropReason {
    /// Larger than `max_message_bytes` (a strike).
    Oversize,
    /// The neighbour is over its byte budget or blocked.
    RateLimited,
    /// Not a canonical frame of this version, or a body that breaks its rules (a strike).
    Malformed,
    /// A channel this node has not joined.
    NotJoined,
    /// `ts` outside the window around now (or not newer than a forgotten frame).
    Stale,
    /// Seen before (same author and id), or authored by this node.
    Duplicate,
    /// Missing or insufficient proof of work.
    Pow,
    /// The author's signature does not verify (a strike).
    Signature,
    /// An owner-only channel, and the author is not its owner.
    OwnerOnly,
    /// A channel that needs a welcome and has none yet.
    AwaitingWelcome,
    /// A welcome that does not verify against the channel's owner.
    InvalidWelcome,
    /// An invite-only channel, and the author is not known to be authorised.
    Invite,
    /// An invite-only channel, and the author's access was revoked.
    Revoked,
    /// A plain payload on an invite-only channel.
    Unsealed,
    /// A sealed payload that does not open with the epoch key.
    Decrypt,
}

impl DropReason {
    /// A short lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversize => "oversize",
            DropReason::RateLimited => "rate-limited",
            DropReason::Malformed => "malformed",
            DropReason::NotJoined => "not-joined",
            DropReason::Stale => "stale",
            DropReason::Duplicate => "duplicate",
            DropReason::Pow => "pow",
            DropReason::Signature => "signature",
            DropReason::OwnerOnly => "owner-only",
            DropReason::AwaitingWelcome => "awaiting-welcome",
            DropReason::InvalidWelcome => "invalid-welcome",
            DropReason::Invite => "invite",
            DropReason::Revoked => "revoked",
            DropReason::Unsealed => "unsealed",
            DropReason::Decrypt => "decrypt",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How this node takes part in a channel it joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum JoinOutcome {
    /// Reads and sends (on invite-only channels: holds the current epoch key).
    Member,
    /// Invite-only channel without a key: forwards ciphertext, reads and sends nothing.
    Relay,
}

/// This node's role in a channel (for [`ChannelStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Role {
    /// The channel's owner.
    Owner,
    /// A member (reads and sends).
    Member,
    /// A relay (forwards ciphertext only).
    Relay,
}

/// A message delivered to the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// The channel.
    pub channel: String,
    /// The frame id, 32 hex digits.
    pub id: String,
    /// The author.
    pub from: PublicKey,
    /// The author's timestamp, ms.
    pub ts: u64,
    /// The message, JSON text.
    pub message: String,
    /// The last relay, if relayed.
    pub relayed_by: Option<PublicKey>,
    /// The hops the frame had left when it arrived.
    pub ttl: u8,
    /// The author's signature of the frame digest.
    pub sig: crate::crypto::Signature,
    /// Always true: the author's signature of every delivered frame was verified.
    pub verified: bool,
}

/// What became of a remote open request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OpenOutcome {
    /// Accepted (and joined when `auto_join` is on and the channel was not joined).
    Accepted {
        /// Whether this node joined the channel because of it.
        auto_joined: bool,
    },
    /// Refused, with the reason.
    Denied(String),
    /// Remote opens are disabled: noted and relayed, nothing done.
    Ignored,
}

/// Something the operator may want to know about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ScEvent {
    /// A neighbour asked to join a channel.
    OpenRequest {
        /// The channel the request came on.
        via: String,
        /// The channel to join (as requested; only a valid name is ever joined).
        channel: String,
        /// Who asked.
        from: PublicKey,
        /// What was done.
        outcome: OpenOutcome,
    },
    /// This node joined a channel on its own (auto-join).
    Joined {
        /// The channel.
        channel: String,
        /// As member or relay.
        outcome: JoinOutcome,
    },
    /// The owner rotated a channel's key.
    KeyUpdated {
        /// The channel.
        channel: String,
        /// The new epoch.
        epoch: u32,
        /// Members revoked.
        revoked: Vec<PublicKey>,
        /// Whether this node holds the new key.
        readable: bool,
    },
    /// A (newer) welcome was stored.
    Welcomed {
        /// The channel.
        channel: String,
        /// Its owner.
        owner: PublicKey,
        /// The welcome text.
        text: String,
    },
    /// A member proved its invite.
    MemberAuthorised {
        /// The channel.
        channel: String,
        /// The member.
        member: PublicKey,
        /// Until when, ms.
        expires_at: u64,
    },
    /// A neighbour was blocked by the rate limiter.
    NeighbourBlocked {
        /// The neighbour.
        neighbour: PublicKey,
        /// Until when, ms.
        until: u64,
    },
}

/// The result of [`Engine::receive`].
#[derive(Debug, Default)]
pub struct Received {
    /// Messages for the application.
    pub deliveries: Vec<Delivery>,
    /// Frames to send (relays, replies).
    pub outbound: Outbound,
    /// Events for the operator.
    pub events: Vec<ScEvent>,
    /// The node should disconnect this neighbour (repeatedly blocked).
    pub disconnect: bool,
    /// Why the frame was dropped, if it was (also counted in [`Stats::drops`]).
    pub dropped: Option<DropReason>,
}

/// One channel in [`Stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelStats {
    /// The channel.
    pub name: String,
    /// This node's role.
    pub role: Role,
    /// Invite-only (configured or learned).
    pub invite_only: bool,
    /// Owner-only sending.
    pub owner_only: bool,
    /// Known authorised members (invite-only channels).
    pub members: usize,
    /// Neighbours that joined it.
    pub neighbours: usize,
    /// The current epoch (0: no key).
    pub epoch: u32,
    /// Welcomed (or exempt from welcomes).
    pub welcomed: bool,
    /// The owner, if known.
    pub owner: Option<PublicKey>,
}

/// Counters and channel summaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Joined channels, by name.
    pub channels: Vec<ChannelStats>,
    /// Connected neighbours.
    pub neighbours: usize,
    /// Messages this node sent.
    pub sent: u64,
    /// Frames received.
    pub received: u64,
    /// Messages delivered to the application.
    pub delivered: u64,
    /// Frames relayed.
    pub relayed: u64,
    /// Dropped frames, by reason.
    pub drops: BTreeMap<DropReason, u64>,
}

/// Why an operator's command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScError {
    /// Not a valid channel name.
    #[error("invalid channel name: {0}")]
    InvalidName(String),
    /// The entry channel cannot be left.
    #[error("the entry channel {ENTRY_CHANNEL} cannot be left")]
    EntryChannel,
    /// The channel is not joined.
    #[error("channel {0:?} is not joined")]
    NotJoined(String),
    /// Only the channel's owner (or a configured inviter) may do this.
    #[error("{0}")]
    NotOwner(String),
    /// Only the owner may send on this channel.
    #[error("channel {0:?} is owner-only: only its owner may send")]
    OwnerOnly(String),
    /// An invite-only channel on which this node holds no current key.
    #[error(
        "channel {0:?} is invite-only and this node holds no current key (join it with a valid invite)"
    )]
    NotMember(String),
    /// The encoded frame would exceed the size limit.
    #[error("message too large: {size} bytes encoded (with relay overhead), at most {max}")]
    TooLarge {
        /// Encoded size with the relay overhead.
        size: usize,
        /// `max_message_bytes`.
        max: usize,
    },
    /// The message is not JSON text.
    #[error("message is not valid JSON: {0}")]
    InvalidMessage(String),
    /// The joined-channel limit is reached.
    #[error("at most {0} channels may be joined")]
    TooManyChannels(usize),
    /// Not a usable public key.
    #[error("invalid public key {0}")]
    InvalidKey(String),
    /// An invite needs a lifetime.
    #[error("invite TTL is required (above 0)")]
    InvalidTtl,
    /// [`Engine::finish_send`] got a frame without enough proof of work.
    #[error("proof of work is missing or below the required difficulty")]
    PowMissing,
    /// A welcome or invite that does not check out.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// Undecodable bytes.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// A key that cannot be wrapped or unwrapped.
    #[error("{0}")]
    E2e(#[from] E2eError),
}

/// A signed message waiting for its proof of work ([`Engine::prepare_send`]).
#[derive(Debug, Clone)]
pub struct PendingSend {
    frame: Frame,
    digest: Hash32,
    difficulty: u8,
}

impl PendingSend {
    /// The frame (its `pow` is 0 until [`PendingSend::solve`]).
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// Whether proof of work is needed.
    pub fn needs_work(&self) -> bool {
        self.difficulty > 0
    }

    /// Finds the proof-of-work nonce: CPU work, to run off the async runtime.
    pub fn solve(mut self) -> PendingSend {
        if self.difficulty > 0 {
            self.frame.pow = solve_pow(&self.digest, self.difficulty);
        }
        self
    }
}

#[derive(Debug, Default)]
struct Counters {
    sent: u64,
    received: u64,
    delivered: u64,
    relayed: u64,
    drops: BTreeMap<DropReason, u64>,
}

/// One node's sidechannel state machine.
#[derive(Debug)]
pub struct Engine {
    keypair: Keypair,
    me: PublicKey,
    x25519: X25519Secret,
    settings: Settings,
    channels: HashMap<String, Channel>,
    neighbours: BTreeMap<PublicKey, Neighbour>,
    limiter: RateLimiter,
    dedupe: Dedupe,
    counters: Counters,
}

impl Engine {
    /// An engine for `keypair` with `settings` (out-of-range values are clamped; validate them
    /// first with [`Settings::validate`]) and the state saved by a previous run. The entry
    /// channel and `settings.extras` are joined (invalid extra names are skipped); configured
    /// welcomes that verify against their configured owner are stored.
    pub fn new(keypair: Keypair, settings: Settings, persisted: PersistedState) -> Engine {
        let settings = settings.clamped();
        let mut engine = Engine {
            me: keypair.public(),
            x25519: X25519Secret::from_keypair(&keypair),
            keypair,
            limiter: RateLimiter::new(RATE_LIMIT_ENTRIES),
            dedupe: Dedupe::new(settings.dedupe_capacity),
            settings,
            channels: HashMap::new(),
            neighbours: BTreeMap::new(),
            counters: Counters::default(),
        };
        for saved in persisted.channels {
            if super::is_normal_channel(&saved.name) {
                let name = saved.name.clone();
                engine.channels.insert(name, Channel::restore(saved));
            }
        }
        let extras = engine.settings.extras.clone();
        for name in std::iter::once(ENTRY_CHANNEL.to_string()).chain(extras) {
            if let Ok(name) = normalize_channel(&name) {
                engine.channel_mut(name).joined = true;
            }
        }
        engine.store_configured_welcomes();
        engine
    }

    fn store_configured_welcomes(&mut self) {
        let welcomes = self.settings.welcomes.clone();
        for (name, welcome) in welcomes {
            // Checked against the channel's owner (a channel without a configured owner takes
            // the welcome's signer, as a welcome given to `join` does); expiry is checked
            // whenever it is used (the engine has no clock here).
            let known = self.owner_of(&name);
            let valid = known.is_none_or(|owner| owner == welcome.owner)
                && welcome.channel == name
                && welcome.verify_signature().is_ok();
            if valid
                && super::is_normal_channel(&name)
                && (known.is_some() || self.set_owner(&name, welcome.owner).is_ok())
            {
                self.store_welcome(&name, welcome);
            }
        }
    }

    /// This node's public key.
    pub fn public_key(&self) -> PublicKey {
        self.me
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What to save for the next run.
    pub fn persisted(&self) -> PersistedState {
        let mut channels: Vec<PersistedChannel> = self
            .channels
            .iter()
            .filter(|(name, _)| name.as_str() != ENTRY_CHANNEL)
            .map(|(name, channel)| channel.persist(name))
            .collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        PersistedState {
            version: PERSISTED_VERSION,
            channels,
        }
    }

    /// A neighbour connected: tells it which channels this node joined. Welcomes (when this
    /// node owns a channel) and auth frames (when it holds an invite) follow as soon as the
    /// neighbour says it joined the same channel.
    pub fn peer_connected(&mut self, peer: PublicKey, now: u64) -> Outbound {
        self.neighbours.insert(peer, Neighbour::default());
        let mut names: Vec<String> = self
            .channels
            .iter()
            .filter(|(name, c)| c.joined && name.as_str() != ENTRY_CHANNEL)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        let mut out = Outbound::new();
        for name in names {
            let body = Body::Subscription { joined: true };
            if let Ok(bytes) = self.author(&name, 0, body, now) {
                out.push((peer, bytes));
            }
        }
        out
    }

    /// A neighbour disconnected (its rate-limit state is kept).
    pub fn peer_disconnected(&mut self, peer: &PublicKey) {
        self.neighbours.remove(peer);
    }

    /// Joins `channel` (or updates it when joined): `owner` sets the channel's owner key
    /// (persisted; it takes precedence over the configured one); `welcome` is checked against
    /// the owner and stored — when no owner is known, the welcome's signer becomes the owner;
    /// `invite` is this node's invite, checked for this node, its key unwrapped — when no
    /// owner is known, the invite's welcome names it, failing that its inviter. On an
    /// invite-only channel a node without the current key joins as a [`JoinOutcome::Relay`].
    pub fn join(
        &mut self,
        channel: &str,
        invite: Option<Invite>,
        welcome: Option<Welcome>,
        owner: Option<PublicKey>,
        now: u64,
    ) -> Result<(JoinOutcome, Outbound), ScError> {
        let name = normalize_channel(channel)?.to_string();
        if name == ENTRY_CHANNEL {
            return Ok((JoinOutcome::Member, Outbound::new()));
        }
        let newly = !self.joined(&name);
        if newly && self.joined_count() >= self.settings.max_channels {
            return Err(ScError::TooManyChannels(self.settings.max_channels));
        }
        if let Some(owner) = owner {
            self.set_owner(&name, owner)?;
        }
        if let Some(welcome) = welcome {
            self.accept_welcome(&name, welcome, now)?;
        }
        let invited = invite.is_some();
        if let Some(invite) = invite {
            self.accept_local_invite(&name, invite, now)?;
        }
        self.channel_mut(&name).joined = true;
        self.ensure_owner_key(&name);
        let mut out = Outbound::new();
        if newly {
            let body = Body::Subscription { joined: true };
            let bytes = self.author(&name, 0, body, now)?;
            out.extend(self.neighbours.keys().map(|n| (*n, bytes.clone())));
        }
        if newly || invited {
            for neighbour in self.subscribers(&name) {
                out.extend(self.hello(&name, neighbour, now));
            }
        }
        Ok((self.join_outcome(&name), out))
    }

    /// Leaves `channel` and tells the neighbours. What the node owns there (owner key,
    /// welcome, invites, epoch keys) is kept for a later join.
    pub fn leave(&mut self, channel: &str, now: u64) -> Result<Outbound, ScError> {
        let name = normalize_channel(channel)?.to_string();
        if name == ENTRY_CHANNEL {
            return Err(ScError::EntryChannel);
        }
        if !self.joined(&name) {
            return Err(ScError::NotJoined(name));
        }
        let ch = self.channel_mut(&name);
        ch.joined = false;
        ch.forget_learned_members();
        let body = Body::Subscription { joined: false };
        let bytes = self.author(&name, 0, body, now)?;
        Ok(self
            .neighbours
            .keys()
            .map(|n| (*n, bytes.clone()))
            .collect())
    }

    /// Sends `message_json` on `channel`, proof of work included (see the module
    /// documentation to do it off-thread). Joins the channel first if needed (with `invite`
    /// when given; a new invite is also announced to the neighbours). Returns the frame and
    /// everything to send.
    pub fn send(
        &mut self,
        channel: &str,
        message_json: &str,
        invite: Option<Invite>,
        now: u64,
    ) -> Result<(Frame, Outbound), ScError> {
        let (pending, mut out) = self.prepare_send(channel, message_json, invite, now)?;
        let (frame, sent) = self.finish_send(pending.solve())?;
        out.extend(sent);
        Ok((frame, out))
    }

    /// The first half of [`Engine::send`]: checks, joins, seals and signs, without proof of
    /// work. The [`Outbound`] holds frames to send before the message (subscription, auth).
    pub fn prepare_send(
        &mut self,
        channel: &str,
        message_json: &str,
        invite: Option<Invite>,
        now: u64,
    ) -> Result<(PendingSend, Outbound), ScError> {
        let name = normalize_channel(channel)?.to_string();
        serde_json::from_str::<serde::de::IgnoredAny>(message_json)
            .map_err(|e| ScError::InvalidMessage(e.to_string()))?;
        let mut out = Outbound::new();
        if !self.joined(&name) || invite.is_some() {
            out = self.join(&name, invite, None, None, now)?.1;
        }
        if self.settings.owner_write(&name) && !self.is_owner(&name) {
            return Err(ScError::OwnerOnly(name));
        }
        let id: [u8; 16] = rand::random();
        let payload = self.payload(&name, &id, message_json, now)?;
        let ttl = self.settings.max_ttl;
        let (frame, digest) = Frame::signed(
            &self.keypair,
            name.clone(),
            id,
            now,
            ttl,
            Body::Data(payload),
        );
        self.check_size(&frame)?;
        let difficulty = self.difficulty(&name);
        let pending = PendingSend {
            frame,
            digest,
            difficulty,
        };
        Ok((pending, out))
    }

    /// The second half of [`Engine::send`]: checks the proof of work and fans the frame out
    /// to the neighbours that joined its channel.
    pub fn finish_send(&mut self, pending: PendingSend) -> Result<(Frame, Outbound), ScError> {
        let PendingSend {
            frame,
            digest,
            difficulty,
        } = pending;
        if !pow_satisfied(&digest, frame.pow, difficulty) {
            return Err(ScError::PowMissing);
        }
        let bytes = frame.encode();
        self.remember_own(&frame, digest);
        self.counters.sent += 1;
        let out = self
            .subscribers(&frame.channel)
            .into_iter()
            .map(|n| (n, bytes.clone()))
            .collect();
        Ok((frame, out))
    }

    /// Asks the neighbours on `via` (default: the entry channel) to join `target`. `invite`
    /// is this node's own invite to `target` (accepted locally, and proof of authorisation
    /// for invite-only targets); the welcome sent is `welcome`, else the invite's, else the
    /// stored one. This node does not join `target`.
    pub fn open(
        &mut self,
        target: &str,
        via: Option<&str>,
        invite: Option<Invite>,
        welcome: Option<Welcome>,
        now: u64,
    ) -> Result<Outbound, ScError> {
        let target = normalize_channel(target)?.to_string();
        let via = normalize_channel(via.unwrap_or(ENTRY_CHANNEL))?.to_string();
        if !self.joined(&via) {
            return Err(ScError::NotJoined(via));
        }
        if let Some(invite) = &invite {
            self.accept_local_invite(&target, invite.clone(), now)?;
        }
        if let Some(welcome) = &welcome {
            self.accept_welcome(&target, welcome.clone(), now)?;
        }
        let welcome = welcome
            .or_else(|| invite.as_ref().and_then(|i| i.welcome.clone()))
            .or_else(|| self.channel(&target).and_then(|c| c.welcome.clone()));
        let body = Body::OpenChannel {
            channel: target,
            invite,
            welcome,
        };
        let bytes = self.author(&via, self.settings.max_ttl, body, now)?;
        Ok(self
            .subscribers(&via)
            .into_iter()
            .map(|n| (n, bytes.clone()))
            .collect())
    }

    /// Invites `invitee` to `channel` for `ttl_ms`. Only the owner, or a configured inviter
    /// holding the channel's epoch key, may invite; the channel becomes invite-only for this
    /// node; the invite carries the epoch key wrapped to the invitee and the stored welcome.
    /// The owner records the invitee as a member (persisted).
    pub fn invite(
        &mut self,
        channel: &str,
        invitee: PublicKey,
        ttl_ms: u64,
        now: u64,
    ) -> Result<Invite, ScError> {
        let name = normalize_channel(channel)?.to_string();
        if !self.joined(&name) {
            return Err(ScError::NotJoined(name));
        }
        invitee
            .validate()
            .map_err(|_| ScError::InvalidKey(invitee.to_hex()))?;
        if ttl_ms == 0 {
            return Err(ScError::InvalidTtl);
        }
        let is_owner = self.is_owner(&name);
        if !is_owner && !self.settings.is_inviter(&self.me) {
            return Err(ScError::NotOwner(format!(
                "only the owner of {name:?} or a configured inviter may invite"
            )));
        }
        if is_owner {
            self.channel_mut(&name).invite_only = true;
            self.ensure_owner_key(&name);
        }
        let key = self.wrap_current_key(&name, &invitee)?;
        self.channel_mut(&name).invite_only = true;
        let expires_at = now.saturating_add(ttl_ms);
        let terms = InviteTerms {
            channel: name.clone(),
            invitee,
            issued_at: now,
            expires_at,
            nonce: rand::random(),
            key: Some(key),
            welcome: self.current_welcome(&name, now),
        };
        let invite = Invite::sign(&self.keypair, terms);
        if is_owner {
            self.record_issued(&name, &invite);
        }
        Ok(invite)
    }

    /// Revokes `invitee`'s access to `channel` (owner only): rotates the epoch key and sends
    /// a key update (the new key wrapped to every remaining member) on the channel. Members
    /// and relays forward it; members drop the revoked node's frames from then on.
    pub fn revoke(
        &mut self,
        channel: &str,
        invitee: PublicKey,
        now: u64,
    ) -> Result<Outbound, ScError> {
        let name = normalize_channel(channel)?.to_string();
        if !self.joined(&name) {
            return Err(ScError::NotJoined(name));
        }
        if !self.is_owner(&name) {
            return Err(ScError::NotOwner(format!(
                "only the owner of {name:?} may revoke"
            )));
        }
        let ch = self.channel_mut(&name);
        ch.invite_only = true;
        ch.revoke(invitee, now);
        ch.purge_members(now);
        let epoch = ch.epoch.saturating_add(1);
        ch.add_key(epoch, EpochKey::generate());
        let update = self.key_update(&name, epoch, vec![invitee])?;
        let bytes = self.author(&name, self.settings.max_ttl, Body::KeyUpdate(update), now)?;
        Ok(self
            .subscribers(&name)
            .into_iter()
            .map(|n| (n, bytes.clone()))
            .collect())
    }

    /// Signs and stores a welcome of `channel` (valid for `ttl_ms`, or forever) and sends it
    /// to the neighbours on the channel. This node must be the channel's owner; when no owner
    /// is known it becomes the owner (persisted).
    pub fn welcome(
        &mut self,
        channel: &str,
        text: &str,
        ttl_ms: Option<u64>,
        now: u64,
    ) -> Result<(Welcome, Outbound), ScError> {
        let name = normalize_channel(channel)?.to_string();
        if !self.joined(&name) {
            return Err(ScError::NotJoined(name));
        }
        match self.owner_of(&name) {
            Some(owner) if owner != self.me => {
                return Err(ScError::NotOwner(format!(
                    "{name:?} is owned by {owner}; only its owner may welcome"
                )));
            }
            Some(_) => {}
            None => self.channel_mut(&name).owner = Some(self.me),
        }
        let expires_at = ttl_ms.map_or(0, |ttl| now.saturating_add(ttl.max(1)));
        let welcome = Welcome::sign(&self.keypair, &name, text, now, expires_at);
        let bytes = self.author(&name, 0, Body::Welcome(welcome.clone()), now)?;
        self.channel_mut(&name).welcome = Some(welcome.clone());
        let out = self
            .subscribers(&name)
            .into_iter()
            .map(|n| (n, bytes.clone()))
            .collect();
        Ok((welcome, out))
    }

    /// Counters and a summary of every joined channel.
    pub fn stats(&self) -> Stats {
        let mut channels: Vec<ChannelStats> = self
            .channels
            .iter()
            .filter(|(_, c)| c.joined)
            .map(|(name, c)| self.channel_stats(name, c))
            .collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        Stats {
            channels,
            neighbours: self.neighbours.len(),
            sent: self.counters.sent,
            received: self.counters.received,
            delivered: self.counters.delivered,
            relayed: self.counters.relayed,
            drops: self.counters.drops.clone(),
        }
    }

    fn channel_stats(&self, name: &str, c: &Channel) -> ChannelStats {
        ChannelStats {
            name: name.to_string(),
            role: self.role(name),
            invite_only: self.invite_only(name),
            owner_only: self.settings.owner_write(name),
            members: c.members.len(),
            neighbours: self.subscribers(name).len(),
            epoch: c.epoch,
            welcomed: self.welcomed(name, None),
            owner: self.owner_of(name),
        }
    }

    // ---- channel knowledge ----------------------------------------------------------

    fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.get(name)
    }

    fn channel_mut(&mut self, name: &str) -> &mut Channel {
        self.channels.entry(name.to_string()).or_default()
    }

    /// Whether `channel` is joined (the name is normalised first).
    pub fn is_joined(&self, channel: &str) -> bool {
        normalize_channel(channel).is_ok_and(|name| self.joined(name))
    }

    /// The names of the joined channels (the entry channel included), in name order.
    pub fn joined_channels(&self) -> Vec<String> {
        self.channels
            .iter()
            .filter(|(_, c)| c.joined)
            .map(|(name, _)| name.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    fn joined(&self, name: &str) -> bool {
        self.channel(name).is_some_and(|c| c.joined)
    }

    fn joined_count(&self) -> usize {
        self.channels
            .iter()
            .filter(|(name, c)| c.joined && name.as_str() != ENTRY_CHANNEL)
            .count()
    }

    /// The runtime owner, else the configured one.
    fn owner_of(&self, name: &str) -> Option<PublicKey> {
        self.channel(name)
            .and_then(|c| c.owner)
            .or_else(|| self.settings.owners.get(name).copied())
    }

    fn is_owner(&self, name: &str) -> bool {
        self.owner_of(name) == Some(self.me)
    }

    fn invite_only(&self, name: &str) -> bool {
        self.settings.invite_required(name) || self.channel(name).is_some_and(|c| c.invite_only)
    }

    /// Whether the channel is welcomed: exempt, owned by this node, or holding a welcome of
    /// its current owner (current at `now`, when given).
    fn welcomed(&self, name: &str, now: Option<u64>) -> bool {
        if !self.settings.welcome_gate(name) || self.is_owner(name) {
            return true;
        }
        let owner = self.owner_of(name);
        self.channel(name)
            .and_then(|c| c.welcome.as_ref())
            .is_some_and(|w| Some(w.owner) == owner && now.is_none_or(|now| w.is_current(now)))
    }

    fn current_welcome(&self, name: &str, now: u64) -> Option<Welcome> {
        let owner = self.owner_of(name);
        self.channel(name)
            .and_then(|c| c.welcome.clone())
            .filter(|w| Some(w.owner) == owner && w.is_current(now))
    }

    fn role(&self, name: &str) -> Role {
        if self.is_owner(name) {
            Role::Owner
        } else if !self.invite_only(name)
            || self
                .channel(name)
                .is_some_and(|c| c.current_key().is_some())
        {
            Role::Member
        } else {
            Role::Relay
        }
    }

    fn join_outcome(&self, name: &str) -> JoinOutcome {
        match self.role(name) {
            Role::Relay => JoinOutcome::Relay,
            Role::Owner | Role::Member => JoinOutcome::Member,
        }
    }

    /// Neighbours that joined `name` (every neighbour for the entry channel).
    fn subscribers(&self, name: &str) -> Vec<PublicKey> {
        self.neighbours
            .iter()
            .filter(|(_, n)| name == ENTRY_CHANNEL || n.channels.contains(name))
            .map(|(k, _)| *k)
            .collect()
    }

    // ---- owners, welcomes, invites, keys ------------------------------------------

    fn set_owner(&mut self, name: &str, owner: PublicKey) -> Result<(), ScError> {
        owner
            .validate()
            .map_err(|_| ScError::InvalidKey(owner.to_hex()))?;
        let ch = self.channel_mut(name);
        ch.owner = Some(owner);
        if ch.welcome.as_ref().is_some_and(|w| w.owner != owner) {
            ch.welcome = None;
        }
        Ok(())
    }

    /// Checks and stores a welcome the operator gave; adopts its signer as the owner when
    /// no owner is known.
    fn accept_welcome(&mut self, name: &str, welcome: Welcome, now: u64) -> Result<(), ScError> {
        let known = self.owner_of(name);
        let owner = known.unwrap_or(welcome.owner);
        policy::check_welcome(
            &welcome,
            name,
            Some(&owner),
            now,
            self.settings.ts_window_ms,
        )?;
        if known.is_none() {
            self.set_owner(name, owner)?;
        }
        self.store_welcome(name, welcome);
        Ok(())
    }

    /// Stores `welcome` unless a newer one is stored; returns whether it was stored.
    fn store_welcome(&mut self, name: &str, welcome: Welcome) -> bool {
        let ch = self.channel_mut(name);
        let newer = ch
            .welcome
            .as_ref()
            .is_none_or(|w| w.owner != welcome.owner || welcome.issued_at > w.issued_at);
        if newer {
            ch.welcome = Some(welcome);
        }
        newer
    }

    /// Checks this node's own invite, unwraps its key and stores it.
    fn accept_local_invite(&mut self, name: &str, invite: Invite, now: u64) -> Result<(), ScError> {
        let known = self.owner_of(name);
        let owner = known.or_else(|| {
            let named = invite.welcome.as_ref().map(|w| w.owner);
            named.or((!self.settings.is_inviter(&invite.inviter)).then_some(invite.inviter))
        });
        let ctx = self.invite_context(name, &self.me, owner.as_ref(), now);
        policy::check_invite(&invite, &ctx)?;
        let key = match &invite.key {
            Some(wrap) => Some((
                wrap.epoch,
                e2e::unwrap_epoch_key(&self.x25519, &invite.inviter, name, wrap)?,
            )),
            None => None,
        };
        if let (None, Some(owner)) = (known, owner) {
            self.set_owner(name, owner)?;
        }
        if let Some(welcome) = invite.welcome.clone() {
            self.store_welcome(name, welcome);
        }
        let ch = self.channel_mut(name);
        ch.invite_only = true;
        if let Some((epoch, key)) = key {
            ch.add_key(epoch, key);
        }
        ch.local_invite = Some(invite);
        Ok(())
    }

    fn invite_context<'a>(
        &'a self,
        name: &'a str,
        invitee: &'a PublicKey,
        owner: Option<&'a PublicKey>,
        now: u64,
    ) -> InviteContext<'a> {
        InviteContext {
            channel: name,
            invitee,
            owner,
            inviters: &self.settings.inviter_keys,
            revoked_at: self
                .channel(name)
                .and_then(|c| c.revoked.get(invitee).copied()),
            now,
            window_ms: self.settings.ts_window_ms,
        }
    }

    /// The owner of an invite-only channel holds a key from the start (epoch 1).
    fn ensure_owner_key(&mut self, name: &str) {
        if self.is_owner(name) && self.invite_only(name) {
            let ch = self.channel_mut(name);
            if ch.current_key().is_none() {
                let epoch = ch.epoch.max(1);
                ch.add_key(epoch, EpochKey::generate());
            }
        }
    }

    fn wrap_current_key(
        &self,
        name: &str,
        member: &PublicKey,
    ) -> Result<super::frame::KeyWrap, ScError> {
        let (epoch, key) = self
            .channel(name)
            .and_then(|c| c.current_key())
            .ok_or_else(|| ScError::NotMember(name.to_string()))?;
        Ok(e2e::wrap_epoch_key(
            &self.x25519,
            member,
            name,
            epoch,
            key,
            rand::random(),
        )?)
    }

    fn record_issued(&mut self, name: &str, invite: &Invite) {
        let ch = self.channel_mut(name);
        ch.issued.insert(
            invite.invitee,
            IssuedInvite {
                invitee: invite.invitee,
                issued_at: invite.issued_at,
                expires_at: invite.expires_at,
                nonce: invite.nonce,
            },
        );
        ch.add_member(
            invite.invitee,
            Membership {
                issued_at: invite.issued_at,
                expires_at: invite.expires_at,
            },
        );
    }

    /// A key update of `epoch` wrapping the current key to every known member but this node.
    fn key_update(
        &self,
        name: &str,
        epoch: u32,
        revoked: Vec<PublicKey>,
    ) -> Result<KeyUpdate, ScError> {
        let mut members: Vec<PublicKey> = self
            .channel(name)
            .map(|c| c.members.keys().copied().collect())
            .unwrap_or_default();
        members.sort();
        members.retain(|m| *m != self.me);
        let mut wraps = Vec::with_capacity(members.len());
        for member in members {
            // A member key that is not a usable point gets no wrap.
            if let Ok(wrap) = self.wrap_current_key(name, &member) {
                wraps.push((member, wrap));
            }
        }
        Ok(KeyUpdate {
            epoch,
            revoked,
            wraps,
        })
    }

    /// The message payload: sealed on invite-only channels.
    fn payload(
        &mut self,
        name: &str,
        id: &[u8; 16],
        message: &str,
        now: u64,
    ) -> Result<Payload, ScError> {
        if !self.invite_only(name) {
            return Ok(Payload::Plain(message.to_string()));
        }
        self.ensure_owner_key(name);
        let (epoch, key) = self
            .channel(name)
            .and_then(|c| c.current_key())
            .ok_or_else(|| ScError::NotMember(name.to_string()))?;
        let nonce: [u8; 24] = rand::random();
        let aad = e2e::payload_aad(name, id, &self.me, now, epoch);
        let ciphertext = e2e::seal(key, &nonce, &aad, message.as_bytes())?;
        Ok(Payload::Sealed {
            epoch,
            nonce,
            ciphertext: serde_bytes::ByteBuf::from(ciphertext),
        })
    }

    // ---- authoring frames -----------------------------------------------------------

    fn difficulty(&self, name: &str) -> u8 {
        if self.settings.pow_required(name) {
            self.settings.pow_difficulty
        } else {
            0
        }
    }

    /// Refuses a frame that could exceed `max_message_bytes` at any receiver.
    fn check_size(&self, frame: &Frame) -> Result<(), ScError> {
        let size = frame.encode().len() + RELAY_OVERHEAD;
        let max = self.settings.max_message_bytes;
        if size > max {
            return Err(ScError::TooLarge { size, max });
        }
        Ok(())
    }

    /// Authors a control frame on `name`: signs it, does its proof of work, remembers its id
    /// and returns its encoding.
    fn author(&mut self, name: &str, ttl: u8, body: Body, now: u64) -> Result<Vec<u8>, ScError> {
        let (mut frame, digest) = Frame::signed(
            &self.keypair,
            name.to_string(),
            rand::random(),
            now,
            ttl,
            body,
        );
        self.check_size(&frame)?;
        let difficulty = self.difficulty(name);
        if difficulty > 0 {
            frame.pow = solve_pow(&digest, difficulty);
        }
        self.remember_own(&frame, digest);
        Ok(frame.encode())
    }

    /// Own frames are remembered as accepted, so echoes are dropped.
    fn remember_own(&mut self, frame: &Frame, digest: Hash32) {
        let seen = Seen {
            print: fingerprint(&digest, &frame.sig),
            ts: frame.ts,
            accepted: true,
        };
        let key: FrameKey = (frame.from, frame.id);
        let expires = frame.ts.saturating_add(2 * self.settings.ts_window_ms);
        self.dedupe.insert(key, seen, frame.ts, expires);
    }

    /// What a neighbour that just joined `name` should get from this node: the welcome (if
    /// this node owns the channel) and this node's auth (if it holds a current invite).
    fn hello(&mut self, name: &str, neighbour: PublicKey, now: u64) -> Outbound {
        let mut bodies = Vec::new();
        if self.is_owner(name)
            && let Some(welcome) = self.current_welcome(name, now)
        {
            bodies.push(Body::Welcome(welcome));
        }
        let invite = self
            .channel(name)
            .and_then(|c| c.local_invite.clone())
            .filter(|i| i.expires_at > now);
        if let Some(invite) = invite {
            bodies.push(Body::Auth(invite));
        }
        bodies
            .into_iter()
            .filter_map(|body| self.author(name, 0, body, now).ok())
            .map(|bytes| (neighbour, bytes))
            .collect()
    }

    fn rate_config(&self) -> RateConfig {
        RateConfig {
            rate_bytes: self.settings.rate_bytes,
            burst: self.settings.rate_burst,
            max_strikes: self.settings.max_strikes,
            strike_window_ms: self.settings.strike_window_ms,
            block_ms: self.settings.block_ms,
            disconnect_after_blocks: self.settings.disconnect_after_blocks,
        }
    }
}
