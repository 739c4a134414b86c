//! The receive pipeline (docs/protocol.md §13.7): cheap checks first, one signature
//! verification per frame, every drop counted by reason.

use serde::de::IgnoredAny;

use super::state::{MAX_NEIGHBOUR_CHANNELS, Membership};
use super::{Delivery, DropReason, Engine, OpenOutcome, Received, ScEvent, policy};
use crate::crypto::PublicKey;
use crate::sidechannel::e2e;
use crate::sidechannel::frame::{Body, Frame, Invite, KeyUpdate, Payload, Welcome, pow_satisfied};
use crate::sidechannel::limits::{Admit, Seen, fingerprint};
use crate::sidechannel::policy::PolicyError;
use crate::sidechannel::{ENTRY_CHANNEL, MAX_CHANNEL_NAME_BYTES, is_normal_channel};

/// Members remembered per channel before expired ones are purged.
const MEMBER_PURGE_THRESHOLD: usize = 4096;

impl Engine {
    /// Handles the bytes `neighbour` sent: checks them (size, rate, encoding, channel, time,
    /// duplicates, proof of work, signature, policy), delivers what is for the application,
    /// applies control frames and returns what to relay. Never fails: a refused frame is
    /// counted in [`Stats::drops`](super::Stats::drops).
    pub fn receive(&mut self, neighbour: PublicKey, bytes: &[u8], now: u64) -> Received {
        let mut out = Received::default();
        self.counters.received += 1;
        if let Err(reason) = self.pipeline(neighbour, bytes, now, &mut out) {
            *self.counters.drops.entry(reason).or_default() += 1;
            out.dropped = Some(reason);
        }
        out
    }

    fn pipeline(
        &mut self,
        neighbour: PublicKey,
        bytes: &[u8],
        now: u64,
        out: &mut Received,
    ) -> Result<(), DropReason> {
        self.admit(&neighbour, bytes.len(), now, out)?;
        let mut frame = self.decode(&neighbour, bytes, now, out)?;
        self.check_header(&frame, now)?;
        frame.ttl = frame.ttl.min(self.settings.max_ttl);
        self.authenticate(&neighbour, &frame, now, out)?;
        let relay = self.apply(neighbour, &frame, now, out)?;
        self.dedupe.accept(&(frame.from, frame.id));
        if relay {
            self.relay(neighbour, frame, out);
        }
        Ok(())
    }

    /// (1) size, (2) the neighbour's token bucket.
    fn admit(
        &mut self,
        neighbour: &PublicKey,
        size: usize,
        now: u64,
        out: &mut Received,
    ) -> Result<(), DropReason> {
        if size > self.settings.max_message_bytes {
            self.strike(neighbour, now, out);
            return Err(DropReason::Oversize);
        }
        let before = self.limiter.blocked_until(neighbour, now);
        let cfg = self.rate_config();
        match self.limiter.admit(neighbour, size, now, &cfg) {
            Admit::Pass => Ok(()),
            Admit::Limited { disconnect } => {
                out.disconnect |= disconnect;
                self.note_block(neighbour, before, now, out);
                Err(DropReason::RateLimited)
            }
        }
    }

    fn strike(&mut self, neighbour: &PublicKey, now: u64, out: &mut Received) {
        let before = self.limiter.blocked_until(neighbour, now);
        let cfg = self.rate_config();
        out.disconnect |= self.limiter.strike(neighbour, now, &cfg);
        self.note_block(neighbour, before, now, out);
    }

    fn note_block(&self, neighbour: &PublicKey, before: Option<u64>, now: u64, out: &mut Received) {
        let after = self.limiter.blocked_until(neighbour, now);
        if let Some(until) = after.filter(|_| after != before) {
            out.events.push(ScEvent::NeighbourBlocked {
                neighbour: *neighbour,
                until,
            });
        }
    }

    /// (3) canonical decoding, with a normalised channel name.
    fn decode(
        &mut self,
        neighbour: &PublicKey,
        bytes: &[u8],
        now: u64,
        out: &mut Received,
    ) -> Result<Frame, DropReason> {
        match Frame::decode(bytes) {
            Ok(frame) if is_normal_channel(&frame.channel) => Ok(frame),
            _ => {
                self.strike(neighbour, now, out);
                Err(DropReason::Malformed)
            }
        }
    }

    /// (4) joined channel (subscriptions excepted), (5) timestamp window; own frames.
    fn check_header(&self, frame: &Frame, now: u64) -> Result<(), DropReason> {
        if frame.from == self.me {
            return Err(DropReason::Duplicate);
        }
        let subscription = matches!(frame.body, Body::Subscription { .. });
        if !subscription && !self.joined(&frame.channel) {
            return Err(DropReason::NotJoined);
        }
        let window = self.settings.ts_window_ms;
        let floor = self.dedupe.floor();
        let too_old = frame.ts.saturating_add(window) < now || (floor > 0 && frame.ts <= floor);
        if too_old || frame.ts > now.saturating_add(window) {
            return Err(DropReason::Stale);
        }
        Ok(())
    }

    /// (7) duplicates, (8) proof of work, (9) the author's signature; then remembers the
    /// frame. A frame remembered but refused by the policy goes through the policy again
    /// without a second signature check when digest and signature are the ones verified — it
    /// may pass now, e.g. once the welcome has arrived.
    fn authenticate(
        &mut self,
        neighbour: &PublicKey,
        frame: &Frame,
        now: u64,
        out: &mut Received,
    ) -> Result<(), DropReason> {
        let key = (frame.from, frame.id);
        let previous = self.dedupe.get(&key).copied();
        if previous.is_some_and(|seen| seen.accepted) {
            return Err(DropReason::Duplicate);
        }
        let digest = frame.digest();
        if !pow_satisfied(&digest, frame.pow, self.difficulty(&frame.channel)) {
            return Err(DropReason::Pow);
        }
        let print = fingerprint(&digest, &frame.sig);
        if previous.is_none_or(|seen| seen.print != print) {
            if frame.verify(&digest).is_err() {
                self.strike(neighbour, now, out);
                return Err(DropReason::Signature);
            }
            let seen = Seen {
                print,
                ts: frame.ts,
                accepted: false,
            };
            let expires = now.saturating_add(2 * self.settings.ts_window_ms);
            self.dedupe.insert(key, seen, now, expires);
        }
        Ok(())
    }

    /// (10) policy and (11) the body. Returns whether the frame is to be relayed.
    fn apply(
        &mut self,
        neighbour: PublicKey,
        frame: &Frame,
        now: u64,
        out: &mut Received,
    ) -> Result<bool, DropReason> {
        if let Body::Subscription { joined } = frame.body {
            self.on_subscription(neighbour, frame, joined, now, out)?;
            return Ok(false);
        }
        let known = self.gate(frame, now, out)?;
        match &frame.body {
            Body::Data(payload) => self.on_data(frame, payload, known, out),
            Body::Welcome(_) | Body::Subscription { .. } => Ok(false),
            Body::Auth(invite) => self.on_auth(neighbour, frame, invite, now, out),
            Body::OpenChannel {
                channel,
                invite,
                welcome,
            } => Ok(self.on_open(frame, channel, invite.as_ref(), welcome.as_ref(), now, out)),
            Body::KeyUpdate(update) => self.on_key_update(frame, update, out),
        }
    }

    /// Owner-only, welcome and invite rules. Returns whether the author is known to be
    /// authorised (always on channels that are not invite-only).
    fn gate(&mut self, frame: &Frame, now: u64, out: &mut Received) -> Result<bool, DropReason> {
        let name = frame.channel.as_str();
        let owner = self.owner_of(name);
        let auth = matches!(frame.body, Body::Auth(_));
        if self.settings.owner_write(name) && !auth && owner != Some(frame.from) {
            return Err(DropReason::OwnerOnly);
        }
        self.welcome_gate(frame, owner, now, out)?;
        if auth || !self.invite_only(name) {
            return Ok(true);
        }
        self.authorised(name, &frame.from, owner, now)
    }

    /// Stores a carried welcome, then requires the channel to be welcomed — except for
    /// frames of the owner and auth frames (whose invites the owner or an inviter signed).
    fn welcome_gate(
        &mut self,
        frame: &Frame,
        owner: Option<PublicKey>,
        now: u64,
        out: &mut Received,
    ) -> Result<(), DropReason> {
        let name = frame.channel.as_str();
        let window = self.settings.ts_window_ms;
        match &frame.body {
            Body::Welcome(welcome) => {
                policy::check_welcome(welcome, name, owner.as_ref(), now, window)
                    .map_err(|_| DropReason::InvalidWelcome)?;
                self.note_welcome(name, welcome, out);
            }
            // An invite's welcome is used when it checks out (the invite may outlive it).
            Body::Auth(Invite {
                welcome: Some(welcome),
                ..
            }) if policy::check_welcome(welcome, name, owner.as_ref(), now, window).is_ok() => {
                self.note_welcome(name, welcome, out);
            }
            _ => {}
        }
        let exempt = matches!(frame.body, Body::Auth(_)) || owner == Some(frame.from);
        if exempt || self.welcomed(name, Some(now)) {
            Ok(())
        } else {
            Err(DropReason::AwaitingWelcome)
        }
    }

    fn note_welcome(&mut self, name: &str, welcome: &Welcome, out: &mut Received) {
        if self.store_welcome(name, welcome.clone()) {
            out.events.push(ScEvent::Welcomed {
                channel: name.to_string(),
                owner: welcome.owner,
                text: welcome.text.clone(),
            });
        }
    }

    /// On an invite-only channel: the owner, configured inviters and members with a current,
    /// unrevoked invite are authorised; a revoked member is refused; anyone else is unknown.
    fn authorised(
        &self,
        name: &str,
        from: &PublicKey,
        owner: Option<PublicKey>,
        now: u64,
    ) -> Result<bool, DropReason> {
        if owner == Some(*from) || self.settings.is_inviter(from) {
            return Ok(true);
        }
        let Some(channel) = self.channel(name) else {
            return Ok(false);
        };
        let member = channel.members.get(from).filter(|m| m.expires_at > now);
        match (member, channel.revoked.get(from)) {
            (Some(m), Some(at)) if m.issued_at <= *at => Err(DropReason::Revoked),
            (Some(_), _) => Ok(true),
            (None, Some(_)) => Err(DropReason::Revoked),
            (None, None) => Ok(false),
        }
    }

    /// A message: delivered when readable (and relayed in any case). On invite-only
    /// channels an author not known to be authorised is accepted only if its payload opens
    /// under the current epoch key, which only members hold.
    fn on_data(
        &mut self,
        frame: &Frame,
        payload: &Payload,
        known: bool,
        out: &mut Received,
    ) -> Result<bool, DropReason> {
        let message = match payload {
            Payload::Plain(_) if self.invite_only(&frame.channel) => {
                return Err(DropReason::Unsealed);
            }
            Payload::Plain(text) => Some(text.clone()),
            Payload::Sealed {
                epoch,
                nonce,
                ciphertext,
            } => self.open_sealed(frame, *epoch, nonce, ciphertext, known)?,
        };
        if let Some(message) = message {
            if serde_json::from_str::<IgnoredAny>(&message).is_err() {
                return Err(DropReason::Malformed);
            }
            self.deliver(frame, message, out);
        }
        Ok(true)
    }

    /// Opens a sealed payload: `None` when this node has no key for its epoch (a relay).
    fn open_sealed(
        &self,
        frame: &Frame,
        epoch: u32,
        nonce: &[u8; 24],
        ciphertext: &[u8],
        known: bool,
    ) -> Result<Option<String>, DropReason> {
        let channel = self.channel(&frame.channel);
        let Some(key) = channel.and_then(|c| c.keys.get(&epoch)) else {
            return if known {
                Ok(None)
            } else {
                Err(DropReason::Invite)
            };
        };
        let aad = e2e::payload_aad(&frame.channel, &frame.id, &frame.from, frame.ts, epoch);
        let plain = e2e::open(key, nonce, &aad, ciphertext).map_err(|_| DropReason::Decrypt)?;
        if !known && channel.is_none_or(|c| c.epoch != epoch) {
            return Err(DropReason::Invite);
        }
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| DropReason::Malformed)
    }

    fn deliver(&mut self, frame: &Frame, message: String, out: &mut Received) {
        self.counters.delivered += 1;
        out.deliveries.push(Delivery {
            channel: frame.channel.clone(),
            id: frame.id_hex(),
            from: frame.from,
            ts: frame.ts,
            message,
            relayed_by: frame.relayed_by,
            ttl: frame.ttl,
            sig: frame.sig,
            verified: true,
        });
    }

    /// A neighbour joined or left a channel. Only the neighbour itself may say so.
    fn on_subscription(
        &mut self,
        neighbour: PublicKey,
        frame: &Frame,
        joined: bool,
        now: u64,
        out: &mut Received,
    ) -> Result<(), DropReason> {
        if frame.from != neighbour || frame.relayed_by.is_some() {
            return Err(DropReason::Malformed);
        }
        let name = frame.channel.as_str();
        let Some(state) = self.neighbours.get_mut(&neighbour) else {
            return Ok(());
        };
        if name == ENTRY_CHANNEL {
            return Ok(());
        }
        if !joined {
            state.channels.remove(name);
            return Ok(());
        }
        if state.channels.contains(name) || state.channels.len() >= MAX_NEIGHBOUR_CHANNELS {
            return Ok(());
        }
        state.channels.insert(name.to_string());
        if self.joined(name) {
            let hello = self.hello(name, neighbour, now);
            out.outbound.extend(hello);
        }
        Ok(())
    }

    /// An auth frame: the author proves its invite (checked for the author, not for the
    /// neighbour). Never delivered nor relayed. The owner answers a member whose invite
    /// carries an older key with the current one.
    fn on_auth(
        &mut self,
        neighbour: PublicKey,
        frame: &Frame,
        invite: &Invite,
        now: u64,
        out: &mut Received,
    ) -> Result<bool, DropReason> {
        let name = frame.channel.as_str();
        let owner = self.owner_of(name);
        let ctx = self.invite_context(name, &frame.from, owner.as_ref(), now);
        policy::check_invite(invite, &ctx).map_err(|e| match e {
            PolicyError::InviteRevoked { .. } => DropReason::Revoked,
            _ => DropReason::Invite,
        })?;
        let channel = self.channel_mut(name);
        channel.invite_only = true;
        if channel.members.len() >= MEMBER_PURGE_THRESHOLD {
            channel.purge_members(now);
        }
        let membership = Membership {
            issued_at: invite.issued_at,
            expires_at: invite.expires_at,
        };
        channel.add_member(frame.from, membership);
        out.events.push(ScEvent::MemberAuthorised {
            channel: name.to_string(),
            member: frame.from,
            expires_at: invite.expires_at,
        });
        self.catch_up(neighbour, frame.from, name, invite, now, out);
        Ok(false)
    }

    /// The owner sends the current key to a member whose invite carries an older one.
    fn catch_up(
        &mut self,
        neighbour: PublicKey,
        member: PublicKey,
        name: &str,
        invite: &Invite,
        now: u64,
        out: &mut Received,
    ) {
        if !self.is_owner(name) {
            return;
        }
        let Some(current) = self
            .channel(name)
            .and_then(|c| c.current_key())
            .map(|(e, _)| e)
        else {
            return;
        };
        if invite.key.as_ref().is_some_and(|k| k.epoch >= current) {
            return;
        }
        let Ok(wrap) = self.wrap_current_key(name, &member) else {
            return;
        };
        let update = KeyUpdate {
            epoch: current,
            revoked: Vec::new(),
            wraps: vec![(member, wrap)],
        };
        if let Ok(bytes) = self.author(name, 0, Body::KeyUpdate(update), now) {
            out.outbound.push((neighbour, bytes));
        }
    }

    /// A key update: accepted from the owner only, never for an older epoch. Applies the
    /// revocations, learns the members it wraps to, and unwraps this node's new key.
    fn on_key_update(
        &mut self,
        frame: &Frame,
        update: &KeyUpdate,
        out: &mut Received,
    ) -> Result<bool, DropReason> {
        let name = frame.channel.as_str();
        if self.owner_of(name) != Some(frame.from) {
            return Err(DropReason::OwnerOnly);
        }
        let previous = self.channel(name).map_or(0, |c| c.epoch);
        if update.epoch < previous {
            return Err(DropReason::Stale);
        }
        let own_key = update
            .wraps
            .iter()
            .find(|(member, wrap)| *member == self.me && wrap.epoch == update.epoch)
            .and_then(|(_, wrap)| {
                e2e::unwrap_epoch_key(&self.x25519, &frame.from, name, wrap).ok()
            });
        let me = self.me;
        let channel = self.channel_mut(name);
        channel.apply_key_update(&me, update, frame.ts);
        let had_key = channel.current_key().is_some();
        if let Some(key) = own_key {
            channel.add_key(update.epoch, key);
        }
        let readable = channel.current_key().is_some();
        if update.epoch > previous || readable != had_key {
            out.events.push(ScEvent::KeyUpdated {
                channel: name.to_string(),
                epoch: update.epoch,
                revoked: update.revoked.clone(),
                readable,
            });
        }
        Ok(true)
    }

    /// A remote request to join `target`. Returns whether to relay it (accepted or ignored
    /// requests are relayed, denied ones are not).
    fn on_open(
        &mut self,
        frame: &Frame,
        target: &str,
        invite: Option<&Invite>,
        welcome: Option<&Welcome>,
        now: u64,
        out: &mut Received,
    ) -> bool {
        let event = |outcome| ScEvent::OpenRequest {
            via: frame.channel.clone(),
            channel: printable(target),
            from: frame.from,
            outcome,
        };
        if !self.settings.allow_remote_open {
            out.events.push(event(OpenOutcome::Ignored));
            return true;
        }
        if !is_normal_channel(target) || target == ENTRY_CHANNEL {
            out.events
                .push(event(OpenOutcome::Denied("invalid channel name".into())));
            return false;
        }
        let welcome = welcome.or_else(|| invite.and_then(|i| i.welcome.as_ref()));
        match self.judge_open(target, &frame.from, invite, welcome, now) {
            Err(reason) => {
                out.events.push(event(OpenOutcome::Denied(reason)));
                false
            }
            Ok(adopt) => {
                let auto_joined = self.settings.auto_join
                    && !self.joined(target)
                    && self.auto_join(target, adopt, welcome, now, out);
                out.events
                    .push(event(OpenOutcome::Accepted { auto_joined }));
                true
            }
        }
    }

    /// Checks an open request: the welcome (if any) must be the owner's — when no owner is
    /// known, its signer is taken as the owner, to adopt on auto-join; without a welcome the
    /// target must not need one; an invite-only target needs an invite valid for the origin.
    /// Returns the owner to adopt.
    fn judge_open(
        &self,
        target: &str,
        origin: &PublicKey,
        invite: Option<&Invite>,
        welcome: Option<&Welcome>,
        now: u64,
    ) -> Result<Option<PublicKey>, String> {
        let window = self.settings.ts_window_ms;
        let known = self.owner_of(target);
        let mut owner = known;
        match welcome {
            Some(welcome) => {
                let expected = known.unwrap_or(welcome.owner);
                policy::check_welcome(welcome, target, Some(&expected), now, window)
                    .map_err(|e| format!("welcome: {e}"))?;
                owner = Some(expected);
            }
            None if !self.welcomed(target, Some(now)) => return Err("missing welcome".into()),
            None => {}
        }
        if self.invite_only(target) || invite.is_some() {
            let invite = invite.ok_or_else(|| "missing invite".to_string())?;
            let ctx = self.invite_context(target, origin, owner.as_ref(), now);
            policy::check_invite(invite, &ctx).map_err(|e| format!("invite: {e}"))?;
        }
        Ok(if known.is_none() { owner } else { None })
    }

    /// Joins `target` for an accepted request (within the channel limit).
    fn auto_join(
        &mut self,
        target: &str,
        adopt: Option<PublicKey>,
        welcome: Option<&Welcome>,
        now: u64,
        out: &mut Received,
    ) -> bool {
        if self.joined_count() >= self.settings.max_channels {
            return false;
        }
        if let Some(owner) = adopt
            && self.set_owner(target, owner).is_err()
        {
            return false;
        }
        if let Some(welcome) = welcome {
            self.store_welcome(target, welcome.clone());
        }
        match self.join(target, None, None, None, now) {
            Ok((outcome, outbound)) => {
                out.outbound.extend(outbound);
                out.events.push(ScEvent::Joined {
                    channel: target.to_string(),
                    outcome,
                });
                true
            }
            Err(_) => false,
        }
    }

    /// (12) Forwards a frame with `ttl − 1` to the other neighbours on its channel (not
    /// back to the one it came from, nor to its author). Welcomes, auth frames and
    /// subscriptions are for direct neighbours only.
    fn relay(&mut self, neighbour: PublicKey, mut frame: Frame, out: &mut Received) {
        let direct_only = matches!(
            frame.body,
            Body::Welcome(_) | Body::Auth(_) | Body::Subscription { .. }
        );
        if !self.settings.relay || frame.ttl == 0 || direct_only {
            return;
        }
        let targets: Vec<PublicKey> = self
            .subscribers(&frame.channel)
            .into_iter()
            .filter(|n| *n != neighbour && *n != frame.from)
            .collect();
        if targets.is_empty() {
            return;
        }
        frame.ttl -= 1;
        frame.relayed_by = Some(self.me);
        let bytes = frame.encode();
        if bytes.len() > self.settings.max_message_bytes {
            return;
        }
        out.outbound
            .extend(targets.into_iter().map(|n| (n, bytes.clone())));
        self.counters.relayed += 1;
    }
}

/// A remote string made safe to show: control characters replaced, length bounded.
fn printable(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_CHANNEL_NAME_BYTES {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}
