//! Sidechannel settings and the pure per-channel policy decisions (docs/protocol.md §13.6).
//!
//! [`Settings`] holds every sidechannel setting of the reference node plus the knobs its
//! weaknesses called for (relay, TTL cap, timestamp window, strike window, block time). The
//! checks here are pure functions of settings, a channel's known owner and `now`: the
//! [`Engine`](super::Engine) applies them.

use std::collections::BTreeMap;

use super::frame::{Invite, MAX_POW_DIFFICULTY, Welcome};
use super::{ENTRY_CHANNEL, MAX_CHANNEL_NAME_BYTES, normalize_channel};
use crate::crypto::PublicKey;

/// Why a setting, a welcome or an invite is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A setting out of its range.
    #[error("invalid sidechannel setting {name}: {reason}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The welcome names another channel.
    #[error("welcome is for channel {found:?}, not {expected:?}")]
    WelcomeChannel {
        /// The channel it was checked for.
        expected: String,
        /// The channel it names.
        found: String,
    },
    /// The welcome is not signed by the channel's owner, or no owner is known.
    #[error("welcome of {channel:?} is not by its owner")]
    WelcomeOwner {
        /// The channel.
        channel: String,
    },
    /// The welcome has expired, is from the future, or has another format version.
    #[error("welcome of {channel:?} is not current")]
    WelcomeStale {
        /// The channel.
        channel: String,
    },
    /// The welcome's signature does not verify.
    #[error("welcome of {channel:?} has a bad signature")]
    WelcomeSignature {
        /// The channel.
        channel: String,
    },
    /// The invite names another channel or invitee.
    #[error("invite is for {found}, not {expected}")]
    InviteTarget {
        /// What it was checked for (`channel/invitee`).
        expected: String,
        /// What it names.
        found: String,
    },
    /// The inviter is neither the channel's owner nor a configured inviter.
    #[error("invite to {channel:?} is by {inviter}, who may not invite")]
    InviteInviter {
        /// The channel.
        channel: String,
        /// The inviter.
        inviter: String,
    },
    /// The invite has expired or is from the future.
    #[error("invite to {channel:?} is not current")]
    InviteStale {
        /// The channel.
        channel: String,
    },
    /// The invitee's access was revoked after the invite was issued.
    #[error("invite to {channel:?} was revoked")]
    InviteRevoked {
        /// The channel.
        channel: String,
    },
    /// The invite's signature (or its embedded welcome's) does not verify.
    #[error("invite to {channel:?} has a bad signature or welcome")]
    InviteSignature {
        /// The channel.
        channel: String,
    },
}

/// Every sidechannel setting. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Channels to join at start (`--sidechannels`; the entry channel is always joined).
    pub extras: Vec<String>,
    /// Verbose logs (for the node; the engine does not log).
    pub debug: bool,
    /// Do not print received messages (for the node; the engine still delivers and relays).
    pub quiet: bool,
    /// Largest encoded frame, in bytes, for sending **and** receiving (default 256,000 = the
    /// default rate burst). The sender counts the worst-case relay overhead, so every frame a
    /// node may send is accepted by receivers with the same setting after any number of hops.
    pub max_message_bytes: usize,
    /// Act on `OpenChannel` requests (default on).
    pub allow_remote_open: bool,
    /// Join channels of accepted open requests (default off).
    pub auto_join: bool,
    /// Proof of work on (default on).
    pub pow: bool,
    /// Leading zero bits required (default 12, at most 32). A receiver checks its own
    /// difficulty; a sender searches with its own.
    pub pow_difficulty: u8,
    /// Proof of work only on the entry channel.
    pub pow_entry: bool,
    /// Proof of work only on these channels (overrides `pow_entry`).
    pub pow_channels: Vec<String>,
    /// Token-bucket refill per neighbour, bytes/s (default 64,000; 0 disables the limiter).
    pub rate_bytes: u64,
    /// Token-bucket capacity, bytes (default 256,000).
    pub rate_burst: u64,
    /// Strikes within `strike_window_ms` before a neighbour is blocked (default 3).
    pub max_strikes: u32,
    /// Invite-only for every non-entry channel unless `invite_channels`/`invite_prefixes`
    /// narrow it down.
    pub invite_required: bool,
    /// Invite-only channels (implies invites without `invite_required`).
    pub invite_channels: Vec<String>,
    /// Invite-only channel prefixes (implies invites without `invite_required`).
    pub invite_prefixes: Vec<String>,
    /// Keys trusted to invite to any invite-only channel (they must hold its epoch key to
    /// include it in their invites).
    pub inviter_keys: Vec<PublicKey>,
    /// Default invite lifetime, ms (default 604,800,000 = 7 days; the flag is in seconds).
    pub invite_ttl_ms: u64,
    /// Channel owners (`--sidechannel-owner chan:key`); a runtime owner set by
    /// [`Engine::join`](super::Engine::join) takes precedence.
    pub owners: BTreeMap<String, PublicKey>,
    /// Owner-only sending on every non-entry channel.
    pub owner_write_only: bool,
    /// Owner-only sending on these channels.
    pub owner_write_channels: Vec<String>,
    /// Welcomes configured at start, by channel.
    pub welcomes: BTreeMap<String, Welcome>,
    /// Non-entry channels accept frames only once welcomed (default on).
    pub welcome_required: bool,
    /// Forward frames to other neighbours (default on).
    pub relay: bool,
    /// Largest TTL: set on sent frames and applied to received ones (default 3).
    pub max_ttl: u8,
    /// Frames whose `ts` is further than this from now are refused (default 120,000 ms).
    pub ts_window_ms: u64,
    /// Strikes are counted in fixed windows of this length (default 5,000 ms).
    pub strike_window_ms: u64,
    /// How long a neighbour is blocked after `max_strikes` strikes (default 30,000 ms).
    pub block_ms: u64,
    /// Blocks (each within 10 block times of the previous) after which the node is asked to
    /// disconnect the neighbour (default 2).
    pub disconnect_after_blocks: u32,
    /// Most joined channels, auto-joins included (default 256).
    pub max_channels: usize,
    /// Most remembered frame ids (default 100,000); when full, the oldest is forgotten and
    /// frames not newer than it are refused as stale, so a replay is never accepted.
    pub dedupe_capacity: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            extras: Vec::new(),
            debug: false,
            quiet: false,
            max_message_bytes: 256_000,
            allow_remote_open: true,
            auto_join: false,
            pow: true,
            pow_difficulty: 12,
            pow_entry: false,
            pow_channels: Vec::new(),
            rate_bytes: 64_000,
            rate_burst: 256_000,
            max_strikes: 3,
            invite_required: false,
            invite_channels: Vec::new(),
            invite_prefixes: Vec::new(),
            inviter_keys: Vec::new(),
            invite_ttl_ms: 604_800_000,
            owners: BTreeMap::new(),
            owner_write_only: false,
            owner_write_channels: Vec::new(),
            welcomes: BTreeMap::new(),
            welcome_required: true,
            relay: true,
            max_ttl: 3,
            ts_window_ms: 120_000,
            strike_window_ms: 5_000,
            block_ms: 30_000,
            disconnect_after_blocks: 2,
            max_channels: 256,
            dedupe_capacity: 100_000,
        }
    }
}

/// Smallest accepted `max_message_bytes`.
pub const MIN_MESSAGE_BYTES: usize = 1_024;

/// Largest accepted `max_message_bytes` (16 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Largest accepted `max_ttl`.
pub const MAX_TTL: u8 = 16;

impl Settings {
    /// Whether frames on `channel` need proof of work (by this node's settings).
    pub fn pow_required(&self, channel: &str) -> bool {
        if !self.pow || self.pow_difficulty == 0 {
            return false;
        }
        if !self.pow_channels.is_empty() {
            return self.pow_channels.iter().any(|c| c == channel);
        }
        !self.pow_entry || channel == ENTRY_CHANNEL
    }

    /// Whether `channel` is invite-only by configuration: never the entry channel; a listed
    /// channel or prefix always; otherwise every channel when `invite_required` is on and no
    /// list narrows it down.
    pub fn invite_required(&self, channel: &str) -> bool {
        if channel == ENTRY_CHANNEL {
            return false;
        }
        let listed = self.invite_channels.iter().any(|c| c == channel)
            || self
                .invite_prefixes
                .iter()
                .any(|p| !p.is_empty() && channel.starts_with(p.as_str()));
        listed
            || (self.invite_required
                && self.invite_channels.is_empty()
                && self.invite_prefixes.is_empty())
    }

    /// Whether only the owner may send on `channel` (never the entry channel).
    pub fn owner_write(&self, channel: &str) -> bool {
        channel != ENTRY_CHANNEL
            && (self.owner_write_only || self.owner_write_channels.iter().any(|c| c == channel))
    }

    /// Whether `channel` accepts frames only once welcomed (never the entry channel).
    pub fn welcome_gate(&self, channel: &str) -> bool {
        self.welcome_required && channel != ENTRY_CHANNEL
    }

    /// Whether `key` is a configured inviter.
    pub fn is_inviter(&self, key: &PublicKey) -> bool {
        self.inviter_keys.contains(key)
    }

    /// Checks every setting, naming the first that is out of range. A node validates its
    /// settings before starting; [`Engine::new`](super::Engine::new) clamps what it must.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |name: &'static str, reason: String| Err(PolicyError::Setting { name, reason });
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return bad(
                "max_message_bytes",
                format!(
                    "{} is outside {MIN_MESSAGE_BYTES}..={MAX_MESSAGE_BYTES}",
                    self.max_message_bytes
                ),
            );
        }
        if self.pow_difficulty > MAX_POW_DIFFICULTY {
            return bad(
                "pow_difficulty",
                format!("{} is above {MAX_POW_DIFFICULTY}", self.pow_difficulty),
            );
        }
        if self.rate_bytes > 0 && self.rate_burst < self.max_message_bytes as u64 {
            return bad(
                "rate_burst",
                format!(
                    "{} is below max_message_bytes ({}): the largest frames could never pass",
                    self.rate_burst, self.max_message_bytes
                ),
            );
        }
        if self.max_ttl > MAX_TTL {
            return bad("max_ttl", format!("{} is above {MAX_TTL}", self.max_ttl));
        }
        for (name, value) in [
            ("ts_window_ms", self.ts_window_ms),
            ("strike_window_ms", self.strike_window_ms),
            ("max_strikes", u64::from(self.max_strikes)),
            ("max_channels", self.max_channels as u64),
            ("dedupe_capacity", self.dedupe_capacity as u64),
        ] {
            if value == 0 {
                return bad(name, "must be above 0".into());
            }
        }
        let names = self
            .extras
            .iter()
            .chain(&self.pow_channels)
            .chain(&self.invite_channels)
            .chain(&self.owner_write_channels)
            .chain(self.owners.keys())
            .chain(self.welcomes.keys());
        for name in names {
            if let Err(e) = normalize_channel(name) {
                return bad("channel", format!("{name:?}: {e}"));
            }
        }
        if self
            .invite_prefixes
            .iter()
            .any(|p| p.len() > MAX_CHANNEL_NAME_BYTES)
        {
            return bad(
                "invite_prefixes",
                "a prefix is longer than a channel name".into(),
            );
        }
        Ok(())
    }

    /// The settings with out-of-range values pulled into range (what the engine runs with).
    pub(crate) fn clamped(mut self) -> Settings {
        self.max_message_bytes = self
            .max_message_bytes
            .clamp(MIN_MESSAGE_BYTES, MAX_MESSAGE_BYTES);
        self.pow_difficulty = self.pow_difficulty.min(MAX_POW_DIFFICULTY);
        self.max_ttl = self.max_ttl.min(MAX_TTL);
        self.ts_window_ms = self.ts_window_ms.max(1);
        self.strike_window_ms = self.strike_window_ms.max(1);
        self.max_strikes = self.max_strikes.max(1);
        self.max_channels = self.max_channels.max(1);
        self.dedupe_capacity = self.dedupe_capacity.max(1);
        self
    }
}

/// Parses owner entries `chan:key` (or `chan=key`), comma separated, into a map; empty
/// entries are skipped.
pub fn parse_owners(text: &str) -> Result<BTreeMap<String, PublicKey>, PolicyError> {
    let mut owners = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |reason: String| PolicyError::Setting {
            name: "owners",
            reason,
        };
        let (channel, key) = entry
            .split_once(':')
            .or_else(|| entry.split_once('='))
            .ok_or_else(|| bad(format!("{entry:?} is not chan:key")))?;
        let channel = normalize_channel(channel).map_err(|e| bad(e.to_string()))?;
        let key = PublicKey::from_hex(key.trim()).map_err(|e| bad(format!("{entry:?}: {e}")))?;
        owners.insert(channel.to_string(), key);
    }
    Ok(owners)
}

/// Checks `welcome` for `channel`: it names the channel, is signed by `owner` (which must be
/// known), is of format version 1, was not issued more than `window_ms` in the future and has
/// not expired.
pub fn check_welcome(
    welcome: &Welcome,
    channel: &str,
    owner: Option<&PublicKey>,
    now: u64,
    window_ms: u64,
) -> Result<(), PolicyError> {
    if welcome.channel != channel {
        return Err(PolicyError::WelcomeChannel {
            expected: channel.into(),
            found: welcome.channel.clone(),
        });
    }
    if owner != Some(&welcome.owner) {
        return Err(PolicyError::WelcomeOwner {
            channel: channel.into(),
        });
    }
    let future = welcome.issued_at > now.saturating_add(window_ms);
    if future || !welcome.is_current(now) || welcome.version != super::frame::WELCOME_VERSION {
        return Err(PolicyError::WelcomeStale {
            channel: channel.into(),
        });
    }
    welcome
        .verify_signature()
        .map_err(|_| PolicyError::WelcomeSignature {
            channel: channel.into(),
        })
}

/// What an invite is checked against.
#[derive(Debug, Clone, Copy)]
pub struct InviteContext<'a> {
    /// The channel.
    pub channel: &'a str,
    /// Who must be the invitee.
    pub invitee: &'a PublicKey,
    /// The channel's owner, if known.
    pub owner: Option<&'a PublicKey>,
    /// Configured inviters.
    pub inviters: &'a [PublicKey],
    /// When the invitee's access was last revoked (ms), if ever.
    pub revoked_at: Option<u64>,
    /// Now, ms.
    pub now: u64,
    /// Tolerated clock skew, ms.
    pub window_ms: u64,
}

/// Checks `invite` in `ctx`: channel and invitee match; the inviter is the owner or a
/// configured inviter; issued no later than `now + window`, not expired, issued after the
/// invitee's last revocation; the signature verifies; an embedded welcome is the owner's.
pub fn check_invite(invite: &Invite, ctx: &InviteContext<'_>) -> Result<(), PolicyError> {
    let channel = ctx.channel;
    if invite.channel != channel || invite.invitee != *ctx.invitee {
        return Err(PolicyError::InviteTarget {
            expected: format!("{channel}/{}", ctx.invitee),
            found: format!("{}/{}", invite.channel, invite.invitee),
        });
    }
    if ctx.owner != Some(&invite.inviter) && !ctx.inviters.contains(&invite.inviter) {
        return Err(PolicyError::InviteInviter {
            channel: channel.into(),
            inviter: invite.inviter.to_hex(),
        });
    }
    let future = invite.issued_at > ctx.now.saturating_add(ctx.window_ms);
    if future || invite.expires_at <= ctx.now || invite.expires_at <= invite.issued_at {
        return Err(PolicyError::InviteStale {
            channel: channel.into(),
        });
    }
    if ctx.revoked_at.is_some_and(|at| at >= invite.issued_at) {
        return Err(PolicyError::InviteRevoked {
            channel: channel.into(),
        });
    }
    let sig = || PolicyError::InviteSignature {
        channel: channel.into(),
    };
    invite.verify_signature().map_err(|_| sig())?;
    if let Some(welcome) = &invite.welcome {
        check_welcome(welcome, channel, ctx.owner, ctx.now, ctx.window_ms).map_err(|_| sig())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;
    use crate::sidechannel::frame::InviteTerms;

    fn key(n: u8) -> Keypair {
        Keypair::from_seed(&[n; 32])
    }

    #[test]
    fn defaults_are_the_documented_ones_and_consistent() {
        let s = Settings::default();
        assert_eq!(s.max_message_bytes as u64, s.rate_burst);
        assert!(s.pow && s.pow_difficulty == 12 && s.welcome_required && s.allow_remote_open);
        assert_eq!(
            (s.max_ttl, s.ts_window_ms, s.block_ms),
            (3, 120_000, 30_000)
        );
        assert_eq!(s.invite_ttl_ms, 604_800_000);
        s.validate().expect("defaults are valid");
    }

    #[test]
    fn validation_names_the_bad_setting() {
        let mut s = Settings {
            max_message_bytes: 300_000,
            ..Settings::default()
        };
        assert!(matches!(
            s.validate(),
            Err(PolicyError::Setting {
                name: "rate_burst",
                ..
            })
        ));
        s.rate_bytes = 0;
        s.validate().expect("no limiter, no burst constraint");
        s.pow_difficulty = 40;
        assert!(matches!(
            s.validate(),
            Err(PolicyError::Setting {
                name: "pow_difficulty",
                ..
            })
        ));
        let s = Settings {
            extras: vec!["bad\u{1b}[31m".into()],
            ..Settings::default()
        };
        assert!(matches!(
            s.validate(),
            Err(PolicyError::Setting {
                name: "channel",
                ..
            })
        ));
    }

    #[test]
    fn pow_scope() {
        let mut s = Settings::default();
        assert!(s.pow_required("x") && s.pow_required(ENTRY_CHANNEL));
        s.pow_entry = true;
        assert!(!s.pow_required("x") && s.pow_required(ENTRY_CHANNEL));
        s.pow_channels = vec!["x".into()];
        assert!(s.pow_required("x") && !s.pow_required(ENTRY_CHANNEL));
        s.pow_difficulty = 0;
        assert!(!s.pow_required("x"));
    }

    #[test]
    fn invite_lists_imply_invites_without_the_master_switch() {
        let mut s = Settings {
            invite_channels: vec!["vip".into()],
            invite_prefixes: vec!["team-".into()],
            ..Settings::default()
        };
        assert!(s.invite_required("vip") && s.invite_required("team-a"));
        assert!(!s.invite_required("public") && !s.invite_required(ENTRY_CHANNEL));
        s.invite_required = true;
        assert!(
            !s.invite_required("public"),
            "lists narrow the master switch"
        );
        s.invite_channels.clear();
        s.invite_prefixes.clear();
        assert!(s.invite_required("public") && !s.invite_required(ENTRY_CHANNEL));
    }

    #[test]
    fn owner_write_scope() {
        let mut s = Settings {
            owner_write_channels: vec!["news".into()],
            ..Settings::default()
        };
        assert!(s.owner_write("news") && !s.owner_write("chat"));
        s.owner_write_only = true;
        assert!(s.owner_write("chat") && !s.owner_write(ENTRY_CHANNEL));
    }

    #[test]
    fn owners_parse() {
        let k = key(1).public();
        let owners = parse_owners(&format!("a:{k}, b={k},")).expect("parses");
        assert_eq!(owners.len(), 2);
        assert!(parse_owners("a").is_err());
        assert!(parse_owners("a:zz").is_err());
    }

    #[test]
    fn welcome_checks() {
        let owner = key(1);
        let w = Welcome::sign(&owner, "c", "hi", 1_000, 5_000);
        let pk = owner.public();
        check_welcome(&w, "c", Some(&pk), 2_000, 100).expect("valid");
        assert!(check_welcome(&w, "d", Some(&pk), 2_000, 100).is_err());
        assert!(check_welcome(&w, "c", None, 2_000, 100).is_err());
        assert!(check_welcome(&w, "c", Some(&key(2).public()), 2_000, 100).is_err());
        assert!(
            check_welcome(&w, "c", Some(&pk), 5_000, 100).is_err(),
            "expired"
        );
        assert!(
            check_welcome(&w, "c", Some(&pk), 800, 100).is_err(),
            "future"
        );
        let mut forged = w;
        forged.text = "other".into();
        assert!(matches!(
            check_welcome(&forged, "c", Some(&pk), 2_000, 100),
            Err(PolicyError::WelcomeSignature { .. })
        ));
    }

    #[test]
    fn invite_checks() {
        let (owner, invitee, inviter) = (key(1), key(2), key(3));
        let terms = |issued_at, expires_at| InviteTerms {
            channel: "c".into(),
            invitee: invitee.public(),
            issued_at,
            expires_at,
            nonce: [0; 16],
            key: None,
            welcome: Some(Welcome::sign(&owner, "c", "hi", 0, 0)),
        };
        let invite = Invite::sign(&owner, terms(1_000, 9_000));
        let (o, i) = (owner.public(), invitee.public());
        let ctx = InviteContext {
            channel: "c",
            invitee: &i,
            owner: Some(&o),
            inviters: &[],
            revoked_at: None,
            now: 2_000,
            window_ms: 100,
        };
        check_invite(&invite, &ctx).expect("valid");
        let other = key(4).public();
        assert!(
            check_invite(
                &invite,
                &InviteContext {
                    invitee: &other,
                    ..ctx
                }
            )
            .is_err()
        );
        assert!(check_invite(&invite, &InviteContext { now: 9_000, ..ctx }).is_err());
        assert!(check_invite(&invite, &InviteContext { owner: None, ..ctx }).is_err());
        assert!(matches!(
            check_invite(
                &invite,
                &InviteContext {
                    revoked_at: Some(1_000),
                    ..ctx
                }
            ),
            Err(PolicyError::InviteRevoked { .. })
        ));
        check_invite(
            &invite,
            &InviteContext {
                revoked_at: Some(999),
                ..ctx
            },
        )
        .expect("re-invited after the revocation");
        // A configured inviter may invite; anyone else may not.
        let by_inviter = Invite::sign(&inviter, terms(1_000, 9_000));
        assert!(check_invite(&by_inviter, &ctx).is_err());
        let inviters = [inviter.public()];
        check_invite(
            &by_inviter,
            &InviteContext {
                inviters: &inviters,
                ..ctx
            },
        )
        .expect("configured inviter");
        // The embedded welcome must be the owner's.
        let mut bad_welcome = terms(1_000, 9_000);
        bad_welcome.welcome = Some(Welcome::sign(&inviter, "c", "hi", 0, 0));
        let invite = Invite::sign(&owner, bad_welcome);
        assert!(check_invite(&invite, &ctx).is_err());
    }
}
