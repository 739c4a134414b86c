//! Engine-level tests: engines wired in memory exchange the bytes they return.

use std::collections::{BTreeSet, VecDeque};

use serde_bytes::ByteBuf;

use super::frame::{Body, Frame, Invite, Payload, Welcome};
use super::*;
use crate::crypto::{Keypair, PublicKey, Signature};

const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;

fn keypair(i: usize) -> Keypair {
    Keypair::from_seed(&[i as u8 + 1; 32])
}

/// Default settings without proof of work (fast tests).
fn fast() -> Settings {
    Settings {
        pow: false,
        ..Settings::default()
    }
}

/// Engines wired in memory. Node `i` has the key `keypair(i)`.
struct Mesh {
    engines: Vec<Engine>,
    keys: Vec<PublicKey>,
    links: BTreeSet<(usize, usize)>,
    inbox: Vec<Vec<Delivery>>,
    events: Vec<Vec<ScEvent>>,
    disconnects: Vec<usize>,
    now: u64,
}

impl Mesh {
    fn new(settings: Vec<Settings>) -> Mesh {
        let n = settings.len();
        let engines: Vec<Engine> = settings
            .into_iter()
            .enumerate()
            .map(|(i, s)| Engine::new(keypair(i), s, PersistedState::default()))
            .collect();
        Mesh {
            keys: engines.iter().map(Engine::public_key).collect(),
            engines,
            links: BTreeSet::new(),
            inbox: vec![Vec::new(); n],
            events: vec![Vec::new(); n],
            disconnects: Vec::new(),
            now: T0,
        }
    }

    fn uniform(n: usize, settings: Settings) -> Mesh {
        Mesh::new(vec![settings; n])
    }

    fn index(&self, key: &PublicKey) -> Option<usize> {
        self.keys.iter().position(|k| k == key)
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.links.contains(&(a.min(b), a.max(b)))
    }

    fn link(&mut self, a: usize, b: usize) {
        self.links.insert((a.min(b), a.max(b)));
        let (ka, kb) = (self.keys[a], self.keys[b]);
        let out_a = self.engines[a].peer_connected(kb, self.now);
        let out_b = self.engines[b].peer_connected(ka, self.now);
        self.run(a, out_a);
        self.run(b, out_b);
    }

    fn link_all(&mut self) {
        for a in 0..self.engines.len() {
            for b in a + 1..self.engines.len() {
                self.link(a, b);
            }
        }
    }

    /// Delivers `out` (sent by node `from`) and everything it causes, breadth first.
    fn run(&mut self, from: usize, out: Outbound) {
        let mut queue: VecDeque<(usize, usize, Vec<u8>)> = out
            .into_iter()
            .filter_map(|(to, bytes)| self.index(&to).map(|t| (from, t, bytes)))
            .collect();
        while let Some((from, to, bytes)) = queue.pop_front() {
            if !self.linked(from, to) {
                continue;
            }
            let received = self.engines[to].receive(self.keys[from], &bytes, self.now);
            self.inbox[to].extend(received.deliveries);
            self.events[to].extend(received.events);
            if received.disconnect {
                self.disconnects.push(to);
            }
            for (next, bytes) in received.outbound {
                if let Some(n) = self.index(&next) {
                    queue.push_back((to, n, bytes));
                }
            }
        }
    }

    /// Sends raw bytes from node `from` to each of its linked neighbours.
    fn inject(&mut self, from: usize, bytes: Vec<u8>) {
        let out = (0..self.engines.len())
            .filter(|to| *to != from && self.linked(from, *to))
            .map(|to| (self.keys[to], bytes.clone()))
            .collect();
        self.run(from, out);
    }

    fn join(
        &mut self,
        i: usize,
        channel: &str,
        invite: Option<Invite>,
        owner: Option<usize>,
    ) -> JoinOutcome {
        let owner = owner.map(|o| self.keys[o]);
        let (outcome, out) = self.engines[i]
            .join(channel, invite, None, owner, self.now)
            .expect("join");
        self.run(i, out);
        outcome
    }

    fn send(&mut self, i: usize, channel: &str, message: &str) -> Result<Frame, ScError> {
        let (frame, out) = self.engines[i].send(channel, message, None, self.now)?;
        self.run(i, out);
        Ok(frame)
    }

    fn welcome(&mut self, i: usize, channel: &str) -> Welcome {
        let (welcome, out) = self.engines[i]
            .welcome(channel, "welcome", None, self.now)
            .expect("welcome");
        self.run(i, out);
        welcome
    }

    fn invite(&mut self, owner: usize, channel: &str, invitee: usize) -> Invite {
        self.engines[owner]
            .invite(channel, self.keys[invitee], HOUR, self.now)
            .expect("invite")
    }

    fn take(&mut self, i: usize) -> Vec<Delivery> {
        std::mem::take(&mut self.inbox[i])
    }

    fn drops(&self, i: usize, reason: DropReason) -> u64 {
        self.engines[i]
            .stats()
            .drops
            .get(&reason)
            .copied()
            .unwrap_or(0)
    }
}

/// A frame by `author` on `channel` at `ts`, encoded.
fn craft(author: &Keypair, channel: &str, ts: u64, ttl: u8, body: Body) -> Vec<u8> {
    Frame::signed(author, channel.into(), rand::random(), ts, ttl, body)
        .0
        .encode()
}

fn plain(text: &str) -> Body {
    Body::Data(Payload::Plain(text.into()))
}

/// A frame signed by `signer` that claims to be by `claimed`.
fn forge(signer: &Keypair, claimed: PublicKey, channel: &str, body: Body) -> Vec<u8> {
    let (mut frame, _) = Frame::signed(signer, channel.into(), rand::random(), T0, 3, body);
    frame.from = claimed;
    frame.encode()
}

fn messages(deliveries: &[Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.message.as_str()).collect()
}

// ---- the receive pipeline, one test per drop reason --------------------------------------

/// Two linked engines (0 sends, 1 receives) with receiver settings `settings`.
fn pair(receiver: Settings) -> Mesh {
    let mut mesh = Mesh::new(vec![fast(), receiver]);
    mesh.link(0, 1);
    mesh
}

#[test]
fn delivers_a_verified_message() {
    let mut mesh = pair(fast());
    let frame = mesh.send(0, ENTRY_CHANNEL, r#"{"a":1}"#).expect("send");
    let got = mesh.take(1);
    assert_eq!(got.len(), 1);
    let d = &got[0];
    assert_eq!(
        (d.channel.as_str(), d.message.as_str(), d.from, d.ts),
        (ENTRY_CHANNEL, r#"{"a":1}"#, mesh.keys[0], T0)
    );
    assert_eq!(d.id, frame.id_hex());
    assert!(d.verified && d.relayed_by.is_none());
    let stats = mesh.engines[1].stats();
    assert_eq!((stats.received, stats.delivered), (1, 1));
    assert_eq!(mesh.engines[0].stats().sent, 1);
}

#[test]
fn drop_oversize() {
    let mut mesh = pair(Settings {
        max_message_bytes: 2_000,
        rate_burst: 2_000,
        ..fast()
    });
    let big = format!("\"{}\"", "x".repeat(2_100));
    mesh.inject(0, craft(&keypair(0), ENTRY_CHANNEL, T0, 3, plain(&big)));
    assert_eq!(mesh.drops(1, DropReason::Oversize), 1);
    assert!(mesh.take(1).is_empty());
}

#[test]
fn drop_rate_limited() {
    let mut mesh = pair(Settings {
        rate_bytes: 10,
        rate_burst: 2_000,
        max_message_bytes: 2_000,
        ..fast()
    });
    let text = format!("\"{}\"", "y".repeat(700));
    for _ in 0..3 {
        mesh.inject(0, craft(&keypair(0), ENTRY_CHANNEL, T0, 3, plain(&text)));
    }
    assert_eq!(mesh.take(1).len(), 2);
    assert_eq!(mesh.drops(1, DropReason::RateLimited), 1);
}

#[test]
fn drop_malformed() {
    let mut mesh = pair(fast());
    mesh.inject(0, vec![0xc1, 0x00]);
    // A channel name that is not in normal form.
    mesh.inject(0, craft(&keypair(0), " padded ", T0, 3, plain("1")));
    // Not JSON.
    mesh.inject(
        0,
        craft(&keypair(0), ENTRY_CHANNEL, T0, 3, plain("not json")),
    );
    // A subscription relayed or by someone else than the neighbour.
    let other = craft(&keypair(5), "x", T0, 0, Body::Subscription { joined: true });
    mesh.inject(0, other);
    assert_eq!(mesh.drops(1, DropReason::Malformed), 4);
}

#[test]
fn drop_not_joined() {
    let mut mesh = pair(fast());
    mesh.inject(0, craft(&keypair(0), "elsewhere", T0, 3, plain("1")));
    assert_eq!(mesh.drops(1, DropReason::NotJoined), 1);
}

#[test]
fn drop_stale_outside_the_window() {
    let mut mesh = pair(fast());
    let window = Settings::default().ts_window_ms;
    for ts in [T0 - window - 1, T0 + window + 1] {
        mesh.inject(0, craft(&keypair(0), ENTRY_CHANNEL, ts, 3, plain("1")));
    }
    for ts in [T0 - window, T0 + window] {
        mesh.inject(0, craft(&keypair(0), ENTRY_CHANNEL, ts, 3, plain("2")));
    }
    assert_eq!(mesh.drops(1, DropReason::Stale), 2);
    assert_eq!(mesh.take(1).len(), 2);
}

#[test]
fn drop_duplicate_and_own_echo() {
    let mut mesh = pair(fast());
    let bytes = craft(&keypair(0), ENTRY_CHANNEL, T0, 3, plain("1"));
    mesh.inject(0, bytes.clone());
    mesh.inject(0, bytes);
    // A frame of node 1 itself, coming back.
    let own = craft(&keypair(1), ENTRY_CHANNEL, T0, 3, plain("2"));
    mesh.inject(0, own);
    assert_eq!(mesh.take(1).len(), 1);
    assert_eq!(mesh.drops(1, DropReason::Duplicate), 2);
}

#[test]
fn drop_pow_checked_with_the_receivers_difficulty() {
    let mut mesh = Mesh::new(vec![
        fast(),
        Settings {
            pow_difficulty: 8,
            ..Settings::default()
        },
        Settings {
            pow_difficulty: 8,
            ..Settings::default()
        },
    ]);
    mesh.link(0, 1);
    mesh.link(2, 1);
    mesh.send(0, ENTRY_CHANNEL, "1").expect("send");
    assert_eq!(mesh.drops(1, DropReason::Pow), 1);
    mesh.send(2, ENTRY_CHANNEL, "2").expect("send with work");
    assert_eq!(messages(&mesh.take(1)), ["2"]);
}

#[test]
fn drop_bad_signature() {
    let mut mesh = pair(fast());
    let forged = forge(&keypair(0), keypair(7).public(), ENTRY_CHANNEL, plain("1"));
    mesh.inject(0, forged);
    let (mut frame, _) = Frame::signed(
        &keypair(0),
        ENTRY_CHANNEL.into(),
        [1; 16],
        T0,
        3,
        plain("1"),
    );
    frame.sig = Signature([0; 64]);
    mesh.inject(0, frame.encode());
    assert_eq!(mesh.drops(1, DropReason::Signature), 2);
    assert!(mesh.take(1).is_empty());
}

#[test]
fn drop_owner_only() {
    let settings = Settings {
        owner_write_channels: vec!["news".into()],
        welcome_required: false,
        ..fast()
    };
    let mut mesh = Mesh::uniform(2, settings);
    mesh.link(0, 1);
    mesh.join(0, "news", None, Some(0));
    mesh.join(1, "news", None, Some(0));
    assert!(matches!(
        mesh.send(1, "news", "1"),
        Err(ScError::OwnerOnly(_))
    ));
    mesh.inject(1, craft(&keypair(1), "news", T0, 3, plain("1")));
    assert_eq!(mesh.drops(0, DropReason::OwnerOnly), 1);
    mesh.send(0, "news", "2").expect("owner sends");
    assert_eq!(messages(&mesh.take(1)), ["2"]);
}

#[test]
fn drop_awaiting_welcome_then_accept_the_same_frame_once_welcomed() {
    let mut mesh = Mesh::uniform(3, fast());
    mesh.link(1, 2);
    mesh.join(1, "room", None, Some(0));
    mesh.join(2, "room", None, Some(0));
    let bytes = craft(&keypair(2), "room", T0, 3, plain("\"early\""));
    mesh.inject(2, bytes.clone());
    assert_eq!(mesh.drops(1, DropReason::AwaitingWelcome), 1);
    // The owner (node 0) joins and welcomes; node 1 stores the welcome.
    mesh.link(0, 1);
    mesh.join(0, "room", None, Some(0));
    mesh.welcome(0, "room");
    assert!(
        mesh.events[1]
            .iter()
            .any(|e| matches!(e, ScEvent::Welcomed { channel, .. } if channel == "room"))
    );
    // The frame refused earlier is accepted when it comes again (fix of reference 7.1.13),
    // but not with another signature.
    let mut tampered = Frame::decode(&bytes).expect("frame");
    tampered.sig = Signature([0; 64]);
    mesh.inject(2, tampered.encode());
    assert_eq!(mesh.drops(1, DropReason::Signature), 1);
    mesh.inject(2, bytes);
    assert_eq!(messages(&mesh.take(1)), ["\"early\""]);
}

#[test]
fn drop_invalid_welcome() {
    let mut mesh = pair(fast());
    mesh.join(1, "room", None, Some(0));
    mesh.join(0, "room", None, Some(0));
    let by_stranger = Welcome::sign(&keypair(5), "room", "hi", T0, 0);
    mesh.inject(
        0,
        craft(&keypair(0), "room", T0, 0, Body::Welcome(by_stranger)),
    );
    let expired = Welcome::sign(&keypair(0), "room", "hi", T0 - 10, T0 - 1);
    mesh.inject(0, craft(&keypair(0), "room", T0, 0, Body::Welcome(expired)));
    assert_eq!(mesh.drops(1, DropReason::InvalidWelcome), 2);
}

fn invite_settings() -> Settings {
    Settings {
        invite_channels: vec!["club".into()],
        ..fast()
    }
}

/// Node 0 owns "club" (invite-only, welcomed); node 1 is invited; node 2 is not.
fn club() -> Mesh {
    let mut mesh = Mesh::uniform(3, invite_settings());
    mesh.join(0, "club", None, Some(0));
    mesh.welcome(0, "club");
    let invite = mesh.invite(0, "club", 1);
    assert_eq!(
        mesh.join(1, "club", Some(invite), None),
        JoinOutcome::Member
    );
    assert_eq!(mesh.join(2, "club", None, Some(0)), JoinOutcome::Relay);
    mesh
}

#[test]
fn drop_invite_unknown_author() {
    let mut mesh = club();
    mesh.link_all();
    // Node 2 (not a member) sends something sealed it cannot have made properly.
    let sealed = Body::Data(Payload::Sealed {
        epoch: 7,
        nonce: [0; 24],
        ciphertext: ByteBuf::from(vec![0; 32]),
    });
    mesh.inject(2, craft(&keypair(2), "club", T0, 3, sealed));
    assert_eq!(mesh.drops(0, DropReason::Invite), 1);
    assert_eq!(mesh.drops(1, DropReason::Invite), 1);
}

#[test]
fn drop_unsealed_and_decrypt() {
    let mut mesh = club();
    mesh.link_all();
    mesh.inject(2, craft(&keypair(2), "club", T0, 3, plain("1")));
    assert_eq!(mesh.drops(0, DropReason::Unsealed), 1);
    assert_eq!(mesh.drops(1, DropReason::Unsealed), 1);
    // A member's frame sealed with a wrong key for the current epoch.
    let sealed = Body::Data(Payload::Sealed {
        epoch: 1,
        nonce: [0; 24],
        ciphertext: ByteBuf::from(vec![0; 32]),
    });
    mesh.inject(1, craft(&keypair(1), "club", T0, 3, sealed));
    // Directly, and through the relay (which knows the member but cannot read).
    assert_eq!(mesh.drops(0, DropReason::Decrypt), 2);
    assert_eq!(mesh.engines[2].stats().relayed, 1);
}

#[test]
fn drop_revoked() {
    let mut mesh = club();
    mesh.link_all();
    let out = mesh.engines[0]
        .revoke("club", mesh.keys[1], mesh.now)
        .expect("revoke");
    mesh.run(0, out);
    // The revoked member's frames (sealed with the old key) are refused by the owner.
    let old = Body::Data(Payload::Sealed {
        epoch: 1,
        nonce: [0; 24],
        ciphertext: ByteBuf::from(vec![0; 32]),
    });
    mesh.inject(1, craft(&keypair(1), "club", T0, 3, old));
    assert_eq!(mesh.drops(0, DropReason::Revoked), 1);
    assert!(matches!(
        mesh.send(1, "club", "1"),
        Err(ScError::NotMember(_))
    ));
}

// ---- the policy matrix --------------------------------------------------------------------

/// Owner 0, member 1, non-member 2, forger 3; fully linked. Channels: entry, "pub" (public,
/// welcomed), "news" (owner-only), "club" (invite-only).
fn matrix() -> Mesh {
    let settings = Settings {
        owner_write_channels: vec!["news".into()],
        invite_channels: vec!["club".into()],
        ..fast()
    };
    let mut mesh = Mesh::uniform(4, settings);
    for channel in ["pub", "news", "club"] {
        mesh.join(0, channel, None, Some(0));
        mesh.welcome(0, channel);
    }
    let invite = mesh.invite(0, "club", 1);
    for node in 1..4 {
        for channel in ["pub", "news"] {
            mesh.join(node, channel, None, Some(0));
        }
    }
    assert_eq!(
        mesh.join(1, "club", Some(invite), None),
        JoinOutcome::Member
    );
    assert_eq!(mesh.join(2, "club", None, Some(0)), JoinOutcome::Relay);
    assert_eq!(mesh.join(3, "club", None, Some(0)), JoinOutcome::Relay);
    mesh.link_all();
    mesh
}

/// Who (of nodes 0..4) received `text`.
fn receivers(mesh: &mut Mesh, text: &str) -> Vec<usize> {
    (0..4)
        .filter(|i| {
            let got = mesh.take(*i);
            let n = got.iter().filter(|d| d.message == text).count();
            assert!(n <= 1, "node {i} got {text} {n} times");
            n == 1
        })
        .collect()
}

#[test]
fn policy_matrix_entry_and_public() {
    let mut mesh = matrix();
    for channel in [ENTRY_CHANNEL, "pub"] {
        for sender in 0..3 {
            let text = format!("\"{channel}-{sender}\"");
            mesh.send(sender, channel, &text).expect("send");
            let expected: Vec<usize> = (0..4).filter(|i| *i != sender).collect();
            assert_eq!(
                receivers(&mut mesh, &text),
                expected,
                "{channel} from {sender}"
            );
        }
        let forged = forge(&keypair(3), mesh.keys[0], channel, plain("\"forged\""));
        mesh.inject(3, forged);
        assert!(receivers(&mut mesh, "\"forged\"").is_empty());
    }
    for node in 1..3 {
        assert_eq!(mesh.drops(node, DropReason::Signature), 2);
    }
    // The owner drops frames claiming to be its own before any other check.
    assert_eq!(mesh.drops(0, DropReason::Signature), 0);
}

#[test]
fn policy_matrix_owner_only() {
    let mut mesh = matrix();
    mesh.send(0, "news", "\"owner\"").expect("owner sends");
    assert_eq!(receivers(&mut mesh, "\"owner\""), [1, 2, 3]);
    for sender in 1..4 {
        assert!(matches!(
            mesh.send(sender, "news", "\"x\""),
            Err(ScError::OwnerOnly(_))
        ));
    }
    mesh.inject(1, craft(&keypair(1), "news", T0, 3, plain("\"member\"")));
    mesh.inject(
        3,
        forge(&keypair(3), mesh.keys[0], "news", plain("\"forged\"")),
    );
    assert!(receivers(&mut mesh, "\"member\"").is_empty());
    assert!(receivers(&mut mesh, "\"forged\"").is_empty());
    assert_eq!(mesh.drops(2, DropReason::OwnerOnly), 1);
    assert_eq!(mesh.drops(2, DropReason::Signature), 1);
}

#[test]
fn policy_matrix_invite_only() {
    let mut mesh = matrix();
    mesh.send(0, "club", "\"from owner\"").expect("owner sends");
    assert_eq!(receivers(&mut mesh, "\"from owner\""), [1]);
    mesh.send(1, "club", "\"from member\"")
        .expect("member sends");
    assert_eq!(receivers(&mut mesh, "\"from member\""), [0]);
    for outsider in [2, 3] {
        assert!(matches!(
            mesh.send(outsider, "club", "\"x\""),
            Err(ScError::NotMember(_))
        ));
    }
    mesh.inject(2, craft(&keypair(2), "club", T0, 3, plain("\"plain\"")));
    mesh.inject(
        3,
        forge(&keypair(3), mesh.keys[0], "club", plain("\"forged\"")),
    );
    assert!(receivers(&mut mesh, "\"plain\"").is_empty());
    assert!(receivers(&mut mesh, "\"forged\"").is_empty());
    let stats = mesh.engines[2].stats();
    let club = stats
        .channels
        .iter()
        .find(|c| c.name == "club")
        .expect("club");
    assert_eq!(
        (club.role, club.invite_only, club.epoch),
        (Role::Relay, true, 0)
    );
    let owner_stats = mesh.engines[0].stats();
    let club = owner_stats
        .channels
        .iter()
        .find(|c| c.name == "club")
        .expect("club");
    assert_eq!(
        (club.role, club.members, club.neighbours),
        (Role::Owner, 1, 3)
    );
}

// ---- relay ---------------------------------------------------------------------------------

#[test]
fn relay_along_a_line_decrements_ttl() {
    let mut mesh = Mesh::uniform(4, fast());
    mesh.link(0, 1);
    mesh.link(1, 2);
    mesh.link(2, 3);
    mesh.send(0, ENTRY_CHANNEL, "\"hop\"").expect("send");
    assert_eq!(messages(&mesh.take(1)), ["\"hop\""]);
    let at_2 = mesh.take(2);
    assert_eq!(at_2[0].relayed_by, Some(mesh.keys[1]));
    let at_3 = mesh.take(3);
    assert_eq!(at_3[0].relayed_by, Some(mesh.keys[2]));
    assert_eq!(mesh.engines[1].stats().relayed, 1);
}

#[test]
fn ttl_is_capped_by_the_receiver() {
    // A frame claiming 200 hops: the relay caps it at its maximum (1) and relays with 0.
    let (from, to) = (keypair(0).public(), keypair(2).public());
    let bytes = craft(&keypair(5), ENTRY_CHANNEL, T0, 200, plain("1"));
    let capped = Settings {
        max_ttl: 1,
        ..fast()
    };
    let mut relay = Engine::new(keypair(1), capped, PersistedState::default());
    relay.peer_connected(from, T0);
    relay.peer_connected(to, T0);
    let out = relay.receive(from, &bytes, T0);
    assert_eq!(out.outbound.len(), 1);
    let relayed = Frame::decode(&out.outbound[0].1).expect("frame");
    assert_eq!(relayed.ttl, 0);
    // ttl 0 is not relayed further.
    let mut next = Engine::new(keypair(2), fast(), PersistedState::default());
    next.peer_connected(relay.public_key(), T0);
    next.peer_connected(keypair(3).public(), T0);
    let out = next.receive(relay.public_key(), &out.outbound[0].1, T0);
    assert_eq!(out.deliveries.len(), 1);
    assert!(out.outbound.is_empty());
}

#[test]
fn non_member_relay_on_an_invite_only_channel_forwards_ciphertext_only() {
    // Line 0 (owner) – 1 (relay, no invite) – 2 (member).
    let mut mesh = Mesh::uniform(3, invite_settings());
    mesh.join(0, "club", None, Some(0));
    mesh.welcome(0, "club");
    let invite = mesh.invite(0, "club", 2);
    assert_eq!(mesh.join(1, "club", None, Some(0)), JoinOutcome::Relay);
    assert_eq!(
        mesh.join(2, "club", Some(invite), None),
        JoinOutcome::Member
    );
    mesh.link(0, 1);
    mesh.link(1, 2);
    mesh.send(0, "club", "\"secret\"").expect("owner sends");
    assert!(mesh.take(1).is_empty(), "the relay reads nothing");
    let at_member = mesh.take(2);
    assert_eq!(messages(&at_member), ["\"secret\""]);
    assert_eq!(at_member[0].relayed_by, Some(mesh.keys[1]));
    mesh.send(2, "club", "\"reply\"").expect("member sends");
    assert!(mesh.take(1).is_empty());
    assert_eq!(messages(&mesh.take(0)), ["\"reply\""]);
    assert_eq!(mesh.engines[1].stats().relayed, 2);
    assert_eq!(mesh.engines[1].stats().delivered, 0);
}

#[test]
fn members_authenticate_each_other_through_a_relay_by_the_epoch_key() {
    // 0 (owner) – 1 (member) – 2 (relay) – 3 (member): 1 and 3 never exchange auth frames.
    let mut mesh = Mesh::uniform(4, invite_settings());
    mesh.join(0, "club", None, Some(0));
    mesh.welcome(0, "club");
    let (i1, i3) = (mesh.invite(0, "club", 1), mesh.invite(0, "club", 3));
    mesh.join(1, "club", Some(i1), None);
    mesh.join(2, "club", None, Some(0));
    mesh.join(3, "club", Some(i3), None);
    mesh.link(0, 1);
    mesh.link(1, 2);
    mesh.link(2, 3);
    mesh.send(1, "club", "\"one\"").expect("send");
    assert_eq!(messages(&mesh.take(3)), ["\"one\""]);
    assert_eq!(messages(&mesh.take(0)), ["\"one\""]);
    mesh.send(3, "club", "\"three\"").expect("send");
    assert_eq!(messages(&mesh.take(1)), ["\"three\""]);
    assert_eq!(
        messages(&mesh.take(0)),
        ["\"three\""],
        "relayed on by member 1"
    );
}

#[test]
fn frames_go_only_to_neighbours_that_joined_the_channel() {
    let mut mesh = Mesh::uniform(
        3,
        Settings {
            welcome_required: false,
            ..fast()
        },
    );
    mesh.link_all();
    mesh.join(0, "room", None, None);
    mesh.join(1, "room", None, None);
    let (_, out) = mesh.engines[0]
        .send("room", "1", None, mesh.now)
        .expect("send");
    let targets: Vec<PublicKey> = out.iter().map(|(k, _)| *k).collect();
    assert_eq!(targets, [mesh.keys[1]]);
    mesh.run(0, out);
    assert_eq!(mesh.take(1).len(), 1);
    // Node 1 leaves: node 0 stops sending to it.
    let out = mesh.engines[1].leave("room", mesh.now).expect("leave");
    mesh.run(1, out);
    let (_, out) = mesh.engines[0]
        .send("room", "2", None, mesh.now)
        .expect("send");
    assert!(out.is_empty());
    assert_eq!(mesh.drops(2, DropReason::NotJoined), 0);
    assert!(matches!(
        mesh.engines[1].leave(ENTRY_CHANNEL, mesh.now),
        Err(ScError::EntryChannel)
    ));
}

// ---- revocation, replay, rate limits ------------------------------------------------------

#[test]
fn revocation_cuts_a_member_off_from_new_messages() {
    let mut mesh = Mesh::uniform(3, invite_settings());
    mesh.join(0, "club", None, Some(0));
    mesh.welcome(0, "club");
    let (i1, i2) = (mesh.invite(0, "club", 1), mesh.invite(0, "club", 2));
    mesh.join(1, "club", Some(i1), None);
    mesh.join(2, "club", Some(i2), None);
    mesh.link_all();
    mesh.send(0, "club", "\"before\"").expect("send");
    assert_eq!(messages(&mesh.take(2)), ["\"before\""]);
    let out = mesh.engines[0]
        .revoke("club", mesh.keys[2], mesh.now)
        .expect("revoke");
    mesh.run(0, out);
    assert!(mesh.events[2].iter().any(|e| matches!(
        e,
        ScEvent::KeyUpdated {
            epoch: 2,
            readable: false,
            ..
        }
    )));
    assert!(mesh.events[1].iter().any(|e| matches!(
        e,
        ScEvent::KeyUpdated {
            epoch: 2,
            readable: true,
            ..
        }
    )));
    mesh.take(1);
    mesh.send(0, "club", "\"after\"").expect("send");
    assert_eq!(messages(&mesh.take(1)), ["\"after\""]);
    assert!(
        mesh.take(2).is_empty(),
        "the revoked member reads nothing new"
    );
    mesh.send(1, "club", "\"member\"")
        .expect("remaining member sends");
    assert_eq!(messages(&mesh.take(0)), ["\"member\""]);
    assert!(mesh.take(2).is_empty());
    let stats = mesh.engines[2].stats();
    let club = stats
        .channels
        .iter()
        .find(|c| c.name == "club")
        .expect("club");
    assert_eq!(club.role, Role::Relay);
    // The revoked member's own frames are refused by the others.
    let stale_key = Body::Data(Payload::Sealed {
        epoch: 1,
        nonce: [0; 24],
        ciphertext: ByteBuf::from(vec![0; 32]),
    });
    mesh.inject(2, craft(&keypair(2), "club", T0, 3, stale_key));
    assert_eq!(mesh.drops(1, DropReason::Revoked), 1);
}

#[test]
fn a_member_invited_before_a_rotation_catches_up_from_the_owner() {
    let mut mesh = Mesh::uniform(3, invite_settings());
    mesh.join(0, "club", None, Some(0));
    mesh.welcome(0, "club");
    let (i1, i2) = (mesh.invite(0, "club", 1), mesh.invite(0, "club", 2));
    let out = mesh.engines[0]
        .revoke("club", mesh.keys[2], mesh.now)
        .expect("revoke");
    mesh.run(0, out);
    // Node 1 joins with its epoch-1 invite after the rotation to epoch 2.
    mesh.join(1, "club", Some(i1), None);
    mesh.link(0, 1);
    assert!(mesh.events[1].iter().any(|e| matches!(
        e,
        ScEvent::KeyUpdated {
            epoch: 2,
            readable: true,
            ..
        }
    )));
    mesh.send(0, "club", "\"now\"").expect("send");
    assert_eq!(messages(&mesh.take(1)), ["\"now\""]);
    // The revoked invite cannot be used to join as a member.
    assert!(
        mesh.engines[2]
            .join("club", Some(i2), None, None, mesh.now)
            .is_ok()
    );
    mesh.link(0, 2);
    assert!(mesh.drops(0, DropReason::Revoked) >= 1);
}

#[test]
fn replay_after_the_window_is_stale() {
    let mut mesh = pair(fast());
    let bytes = craft(&keypair(0), ENTRY_CHANNEL, T0, 3, plain("1"));
    mesh.inject(0, bytes.clone());
    mesh.now = T0 + 60_000;
    mesh.inject(0, bytes.clone());
    mesh.now = T0 + 120_001;
    mesh.inject(0, bytes.clone());
    // Long after: the dedupe entry is gone, the window still refuses it.
    mesh.now = T0 + 10 * HOUR;
    mesh.inject(0, bytes);
    assert_eq!(mesh.take(1).len(), 1);
    assert_eq!(mesh.drops(1, DropReason::Duplicate), 1);
    assert_eq!(mesh.drops(1, DropReason::Stale), 2);
}

#[test]
fn replay_after_a_dedupe_overflow_is_refused() {
    let mut mesh = pair(Settings {
        dedupe_capacity: 2,
        ..fast()
    });
    let first = craft(&keypair(0), ENTRY_CHANNEL, T0 - 10, 3, plain("1"));
    mesh.inject(0, first.clone());
    for i in 0..3 {
        mesh.inject(0, craft(&keypair(0), ENTRY_CHANNEL, T0 + i, 3, plain("2")));
    }
    mesh.inject(0, first);
    assert_eq!(mesh.take(1).len(), 4);
    assert_eq!(mesh.drops(1, DropReason::Stale), 1);
}

#[test]
fn rate_limit_blocks_then_asks_to_disconnect_and_survives_reconnects() {
    let settings = Settings {
        rate_bytes: 100,
        rate_burst: 2_200,
        max_message_bytes: 2_200,
        max_strikes: 2,
        block_ms: 1_000,
        ..fast()
    };
    let mut mesh = pair(settings);
    let text = format!("\"{}\"", "z".repeat(900));
    let frame = |ts| craft(&keypair(0), ENTRY_CHANNEL, ts, 3, plain(&text));
    for _ in 0..4 {
        mesh.inject(0, frame(T0));
    }
    assert_eq!(mesh.take(1).len(), 2);
    assert_eq!(mesh.drops(1, DropReason::RateLimited), 2);
    assert!(
        mesh.events[1]
            .iter()
            .any(|e| matches!(e, ScEvent::NeighbourBlocked { until, .. } if *until == T0 + 1_000))
    );
    assert!(mesh.disconnects.is_empty());
    // Reconnecting does not lift the block.
    mesh.engines[1].peer_disconnected(&mesh.keys[0]);
    mesh.engines[1].peer_connected(mesh.keys[0], mesh.now);
    mesh.inject(0, frame(T0));
    assert_eq!(mesh.drops(1, DropReason::RateLimited), 3);
    // After the block, two more strikes: blocked again, and the node is asked to disconnect.
    mesh.now = T0 + 1_000;
    for _ in 0..2 {
        mesh.inject(0, frame(mesh.now));
    }
    assert_eq!(mesh.disconnects, [1]);
}

// ---- open requests, welcomes, persistence, sizes --------------------------------------------

#[test]
fn remote_open_with_auto_join() {
    let mut mesh = Mesh::new(vec![
        fast(),
        Settings {
            auto_join: true,
            ..fast()
        },
        fast(),
    ]);
    mesh.link_all();
    mesh.join(0, "room", None, Some(0));
    let (welcome, out) = mesh.engines[0]
        .welcome("room", "hello", None, mesh.now)
        .expect("welcome");
    mesh.run(0, out);
    let out = mesh.engines[0]
        .open("room", None, None, Some(welcome), mesh.now)
        .expect("open");
    mesh.run(0, out);
    assert!(mesh.events[1].iter().any(|e| matches!(
        e,
        ScEvent::OpenRequest { outcome: OpenOutcome::Accepted { auto_joined: true }, channel, .. }
            if channel == "room"
    )));
    assert!(mesh.events[2].iter().any(|e| matches!(
        e,
        ScEvent::OpenRequest {
            outcome: OpenOutcome::Accepted { auto_joined: false },
            ..
        }
    )));
    // Node 1 joined (adopting the welcome's owner) and now receives the channel.
    mesh.send(0, "room", "\"in\"").expect("send");
    assert_eq!(messages(&mesh.take(1)), ["\"in\""]);
    assert!(mesh.take(2).is_empty());
}

#[test]
fn remote_open_denials() {
    let mut mesh = Mesh::uniform(
        2,
        Settings {
            auto_join: true,
            invite_channels: vec!["club".into()],
            ..fast()
        },
    );
    mesh.link_all();
    // No welcome for a channel that needs one.
    let out = mesh.engines[0]
        .open("room", None, None, None, mesh.now)
        .expect("open");
    mesh.run(0, out);
    // An invite-only channel without an invite.
    let welcome = Welcome::sign(&keypair(0), "club", "hi", T0, 0);
    let out = mesh.engines[0]
        .open("club", None, None, Some(welcome), mesh.now)
        .expect("open");
    mesh.run(0, out);
    // A name with control characters, crafted by hand.
    let body = Body::OpenChannel {
        channel: "evil\u{1b}[2J".into(),
        invite: None,
        welcome: None,
    };
    mesh.inject(0, craft(&keypair(0), ENTRY_CHANNEL, T0, 3, body));
    let denials: Vec<String> = mesh.events[1]
        .iter()
        .filter_map(|e| match e {
            ScEvent::OpenRequest {
                outcome: OpenOutcome::Denied(reason),
                channel,
                ..
            } => Some(format!("{channel}: {reason}")),
            _ => None,
        })
        .collect();
    assert_eq!(denials.len(), 3, "{denials:?}");
    assert!(denials[0].starts_with("room: missing welcome"));
    assert!(denials[1].starts_with("club: missing invite"));
    assert!(denials[2].starts_with("evil?[2J: invalid"));
    assert_eq!(mesh.engines[1].stats().channels.len(), 1, "nothing joined");
}

#[test]
fn welcome_given_at_join_names_the_owner() {
    let mut mesh = Mesh::uniform(2, fast());
    mesh.link(0, 1);
    mesh.join(0, "room", None, None);
    let (welcome, out) = mesh.engines[0]
        .welcome("room", "hi", Some(HOUR), mesh.now)
        .expect("welcome claims the unowned channel");
    mesh.run(0, out);
    let (_, out) = mesh.engines[1]
        .join("room", None, Some(welcome.clone()), None, mesh.now)
        .expect("join with welcome");
    mesh.run(1, out);
    mesh.send(1, "room", "\"hi owner\"").expect("send");
    assert_eq!(messages(&mesh.take(0)), ["\"hi owner\""]);
    let stats = mesh.engines[1].stats();
    let room = stats
        .channels
        .iter()
        .find(|c| c.name == "room")
        .expect("room");
    assert_eq!(room.owner, Some(mesh.keys[0]));
    assert!(room.welcomed);
    // Only the owner may welcome.
    assert!(matches!(
        mesh.engines[1].welcome("room", "mine", None, mesh.now),
        Err(ScError::NotOwner(_))
    ));
    // A tampered welcome is refused at join.
    let mut bad = welcome;
    bad.text = "changed".into();
    assert!(matches!(
        mesh.engines[1].join(
            "other",
            None,
            Some(Welcome {
                channel: "other".into(),
                ..bad
            }),
            None,
            mesh.now
        ),
        Err(ScError::Policy(_))
    ));
}

#[test]
fn persisted_state_survives_a_restart() {
    let mut mesh = club();
    mesh.link_all();
    let saved = mesh.engines[0].persisted();
    let bytes = saved.encode();
    let restored_state = PersistedState::decode(&bytes).expect("decodes");
    assert_eq!(restored_state, saved);
    let club = saved
        .channels
        .iter()
        .find(|c| c.name == "club")
        .expect("club");
    assert_eq!(
        (club.owner, club.epoch, club.issued.len()),
        (Some(mesh.keys[0]), 1, 1)
    );
    // The restarted owner still seals for the member.
    mesh.engines[0] = Engine::new(keypair(0), invite_settings(), restored_state);
    for peer in [1, 2] {
        let out = mesh.engines[0].peer_connected(mesh.keys[peer], mesh.now);
        mesh.run(0, out);
        let out = mesh.engines[peer].peer_connected(mesh.keys[0], mesh.now);
        mesh.run(peer, out);
    }
    mesh.send(0, "club", "\"again\"").expect("send");
    assert_eq!(messages(&mesh.take(1)), ["\"again\""]);
    // The member's state restores its key too.
    let member = mesh.engines[1].persisted();
    let restored = Engine::new(keypair(1), invite_settings(), member);
    let stats = restored.stats();
    let club = stats
        .channels
        .iter()
        .find(|c| c.name == "club")
        .expect("club");
    assert_eq!(club.role, Role::Member);
}

#[test]
fn the_send_guard_matches_what_receivers_accept_after_relays() {
    let settings = Settings {
        max_message_bytes: 4_000,
        rate_burst: 4_000,
        ..fast()
    };
    let mut mesh = Mesh::uniform(3, settings);
    mesh.link(0, 1);
    mesh.link(1, 2);
    // Find the largest message node 0 may send.
    let mut len = 3_000;
    loop {
        let text = format!("\"{}\"", "m".repeat(len + 1));
        match mesh.engines[0].prepare_send(ENTRY_CHANNEL, &text, None, mesh.now) {
            Ok(_) => len += 1,
            Err(ScError::TooLarge { max, .. }) => {
                assert_eq!(max, 4_000);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let text = format!("\"{}\"", "m".repeat(len));
    mesh.send(0, ENTRY_CHANNEL, &text).expect("largest message");
    assert_eq!(mesh.take(1).len(), 1);
    assert_eq!(mesh.take(2).len(), 1, "relayed within the limit");
    assert_eq!(mesh.drops(2, DropReason::Oversize), 0);
}

#[test]
fn send_checks_names_json_and_proof_of_work_off_thread() {
    let mut engine = Engine::new(keypair(0), Settings::default(), PersistedState::default());
    assert!(matches!(
        engine.send("", "1", None, T0),
        Err(ScError::InvalidName(_))
    ));
    assert!(matches!(
        engine.send(&"n".repeat(129), "1", None, T0),
        Err(ScError::InvalidName(_))
    ));
    assert!(matches!(
        engine.send(ENTRY_CHANNEL, "{not json", None, T0),
        Err(ScError::InvalidMessage(_))
    ));
    let (pending, _) = engine
        .prepare_send(ENTRY_CHANNEL, "1", None, T0)
        .expect("prepare");
    assert!(pending.needs_work());
    assert!(matches!(
        engine.finish_send(pending.clone()),
        Err(ScError::PowMissing)
    ));
    let solved = std::thread::spawn(move || pending.solve())
        .join()
        .expect("solver thread");
    let (frame, _) = engine.finish_send(solved).expect("finish");
    assert!(frame::pow_satisfied(&frame.digest(), frame.pow, 12));
}

#[test]
fn invites_need_an_owner_or_a_keyed_inviter() {
    let inviter = keypair(1).public();
    let settings = Settings {
        inviter_keys: vec![inviter],
        invite_channels: vec!["club".into()],
        ..fast()
    };
    let mut mesh = Mesh::uniform(4, settings);
    mesh.join(0, "club", None, Some(0));
    mesh.welcome(0, "club");
    mesh.join(2, "club", None, Some(0));
    assert!(matches!(
        mesh.engines[2].invite("club", mesh.keys[3], HOUR, mesh.now),
        Err(ScError::NotOwner(_))
    ));
    // A configured inviter without the key cannot invite; with it, it can.
    mesh.join(1, "club", None, Some(0));
    assert!(matches!(
        mesh.engines[1].invite("club", mesh.keys[3], HOUR, mesh.now),
        Err(ScError::NotMember(_))
    ));
    let keyed = mesh.invite(0, "club", 1);
    mesh.join(1, "club", Some(keyed), None);
    let invite = mesh.invite(1, "club", 3);
    assert_eq!(
        mesh.join(3, "club", Some(invite), None),
        JoinOutcome::Member
    );
    assert!(matches!(
        mesh.engines[0].invite("club", mesh.keys[3], 0, mesh.now),
        Err(ScError::InvalidTtl)
    ));
    // An invite for someone else is refused.
    let for_three = mesh.invite(0, "club", 3);
    assert!(matches!(
        mesh.engines[2].join("club", Some(for_three), None, None, mesh.now),
        Err(ScError::Policy(_))
    ));
}

/// Throughput of the receive path: verified 1 KB messages per second on one core, with
/// relaying to two other neighbours. Run with
/// `cargo test --release -p trac-host --lib sidechannel::tests::receive_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn receive_throughput() {
    let settings = Settings {
        rate_bytes: 0,
        ..fast()
    };
    let author = keypair(0);
    let text = format!("{{\"text\":\"{}\"}}", "k".repeat(1_000));
    let frames: Vec<Vec<u8>> = (0..20_000)
        .map(|_| craft(&author, ENTRY_CHANNEL, T0, 3, plain(&text)))
        .collect();
    let mut engine = Engine::new(keypair(1), settings, PersistedState::default());
    for peer in [author.public(), keypair(2).public(), keypair(3).public()] {
        engine.peer_connected(peer, T0);
    }
    let mut latencies = Vec::with_capacity(frames.len());
    let start = std::time::Instant::now();
    for bytes in &frames {
        let t = std::time::Instant::now();
        let received = engine.receive(author.public(), bytes, T0);
        latencies.push(t.elapsed());
        assert_eq!(received.deliveries.len(), 1);
        assert_eq!(received.outbound.len(), 2);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    println!(
        "{} frames of {} bytes: {:.0} frames/s, p50 {:?}, p99 {:?}",
        frames.len(),
        frames[0].len(),
        frames.len() as f64 / elapsed.as_secs_f64(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    );
}
