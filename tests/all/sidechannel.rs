//! Sidechannels across real `trac run` processes on 127.0.0.1 (port 0, mDNS off), driven
//! through their terminal (docs/protocol.md §13): the entry channel with the default proof of
//! work, the policy matrix of public, owner-only and invite-only channels, frames forged,
//! replayed, stale, oversize or flooding from a raw libp2p client, relaying along a line
//! A–B–C, revocation, what a restarted node keeps, channels joined at start, and bursts
//! between nodes with different frame limits.
//!
//! Determinism: every send waits for the neighbours (and their subscriptions) it needs, shown
//! by `/sc_stats`; channels are joined at runtime once every node registered its neighbours
//! (subscriptions exchanged while connecting can be lost: see
//! `channels_joined_at_start_are_announced_to_every_neighbour`); "never printed" is checked
//! after a **barrier**: a later message on the entry channel from the same sender over the
//! same link, printed by the receiver, proves the earlier frame was processed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::runtime::Runtime;
use trac_host::crypto::{Keypair, PublicKey};
use trac_host::net::{Multiaddr, Net, NetConfig, NetHandle, PeerId};
use trac_host::sidechannel::ENTRY_CHANNEL;
use trac_host::sidechannel::frame::{Body, Frame, Payload, pow_satisfied, solve_pow};

use crate::node_support::{NodeProc, banner, joining, preset_peer_key};
use crate::support::{pseudo_random_bytes, tempdir};

/// Bound on a message or a state change travelling between nodes on loopback.
const WAIT: Duration = Duration::from_secs(20);

/// Proof of work off, where it is not the point (fast sends).
const NO_POW: [&str; 2] = ["--sidechannel-pow", "0"];

/// The default proof-of-work difficulty (`--sidechannel-pow-difficulty`).
const DEFAULT_POW_BITS: u8 = 12;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

// ---- the terminal ---------------------------------------------------------------------

/// What `/sc_stats` printed.
#[derive(Debug)]
struct ScStats {
    /// `N neighbours, sent …, received …, delivered …, relayed …`.
    summary: String,
    /// One line per joined channel: `<name>: <Role>, neighbours N, welcomed …, …`.
    channels: Vec<String>,
    /// `Drops:` by reason (`Signature`, `OwnerOnly`, …).
    drops: BTreeMap<String, u64>,
}

impl ScStats {
    /// A counter of the summary line: `neighbours`, `sent`, `received`, `delivered`, `relayed`.
    fn counter(&self, name: &str) -> u64 {
        self.summary
            .split(", ")
            .find_map(|part| {
                if name == "neighbours" {
                    part.strip_suffix(" neighbours")
                } else {
                    part.strip_prefix(&format!("{name} "))
                }
            })
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.summary))
            .parse()
            .expect("a number")
    }

    /// The line of `channel`, if joined.
    fn channel(&self, channel: &str) -> Option<&str> {
        let prefix = format!("{channel}: ");
        self.channels
            .iter()
            .find(|l| l.starts_with(&prefix))
            .map(String::as_str)
    }

    /// A field of `channel`'s line (`role`, `neighbours`, `welcomed`, `owner`, `invite-only`,
    /// `owner-only`, `members`, `epoch`); `None` when the channel is not joined.
    fn field(&self, channel: &str, name: &str) -> Option<String> {
        let line = self.channel(channel)?;
        let rest = &line[channel.len() + 2..];
        let mut parts = rest.split(", ");
        let role = parts.next().expect("a role").to_string();
        if name == "role" {
            return Some(role);
        }
        let found = parts
            .find_map(|p| p.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"));
        Some(found.to_string())
    }

    /// A numeric field of `channel`'s line (0 when the channel is not joined).
    fn number(&self, channel: &str, name: &str) -> u64 {
        self.field(channel, name)
            .map_or(0, |v| v.parse().expect("a number"))
    }

    /// Frames dropped for `reason` (its `Debug` name).
    fn dropped(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }
}

/// Runs `/sc_stats` and reads its lines (deliveries printed meanwhile are skipped).
fn sc_stats(node: &mut NodeProc) -> ScStats {
    node.send("/sc_stats");
    let summary = node.expect_line("Sidechannels:");
    let mut channels = Vec::new();
    let drops = loop {
        let line = node.expect_line("");
        if let Some(rest) = line.strip_prefix("Drops:") {
            let rest = rest.trim();
            let mut drops = BTreeMap::new();
            if rest != "none" {
                for part in rest.split(", ") {
                    let (reason, n) = part.rsplit_once(' ').expect("reason count");
                    drops.insert(reason.to_string(), n.parse().expect("a count"));
                }
            }
            break drops;
        }
        if !line.starts_with("[sidechannel") {
            channels.push(line);
        }
    };
    ScStats {
        summary,
        channels,
        drops,
    }
}

/// Polls `/sc_stats` until `ok` holds (at most [`WAIT`]); returns the last reading.
#[track_caller]
fn await_sc(node: &mut NodeProc, what: &str, ok: impl Fn(&ScStats) -> bool) -> ScStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = sc_stats(node);
        if ok(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: {stats:#?}\nstdout:\n{}",
            node.seen.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the node has at least `n` neighbours (connected peers, registered by its
/// sidechannel service).
#[track_caller]
fn await_neighbours(node: &mut NodeProc, n: u64) -> ScStats {
    await_sc(node, &format!("{n} neighbours"), |s| {
        s.counter("neighbours") >= n
    })
}

/// Waits until `n` neighbours of the node joined `channel` (their subscriptions arrived).
#[track_caller]
fn await_subscribers(node: &mut NodeProc, channel: &str, n: u64) -> ScStats {
    await_sc(node, &format!("{n} neighbours on {channel}"), |s| {
        s.number(channel, "neighbours") >= n
    })
}

/// Sends `line` and returns the rest of the reply line starting with `expect`; panics on a
/// `Command failed:` reply.
#[track_caller]
fn command(node: &mut NodeProc, line: &str, expect: &str) -> String {
    node.send(line);
    loop {
        let out = node.expect_line("");
        if let Some(rest) = out.strip_prefix(expect) {
            return rest.trim().to_string();
        }
        assert!(!out.starts_with("Command failed:"), "{line}: {out}");
    }
}

/// Sends `line` and returns its `Command failed:` reply.
fn refused(node: &mut NodeProc, line: &str) -> String {
    node.send(line);
    node.expect_line("Command failed:")
}

/// `/sc_send` (which prints nothing when it succeeds).
fn sc_send(node: &mut NodeProc, channel: &str, message: &str) {
    node.send(&format!("/sc_send --channel {channel} --message {message}"));
}

/// The line a node prints for `text` (sent with `/sc_send`, so a JSON string) by `from`.
fn printed(channel: &str, from: &str, text: &str) -> String {
    format!("[sidechannel:{channel}] {from}: \"{text}\"")
}

/// The first node (it creates the dev MSB network and the subnet); returns it and its banner.
fn first(dir: &Path, flags: &[&str]) -> (NodeProc, String, String, String) {
    let mut node = NodeProc::start(dir, flags);
    let (msb, subnet, addr) = banner(&mut node);
    (node, msb, subnet, addr)
}

/// A node joining the networks `msb`/`subnet` through `bootstrap` (CSV of `host:port`);
/// returns it and its address.
fn joiner(
    dir: &Path,
    (msb, subnet): (&str, &str),
    bootstrap: &str,
    flags: &[&str],
) -> (NodeProc, String) {
    let mut all = joining(msb, subnet, bootstrap);
    all.extend_from_slice(flags);
    let mut node = NodeProc::start(dir, &all);
    let (_, _, addr) = banner(&mut node);
    (node, addr)
}

// ---- 1. the entry channel -------------------------------------------------------------

/// Three nodes in a full mesh on the default settings (proof of work on, 12 bits): a message
/// on the entry channel reaches both others once, signed by its author, although each gets it
/// directly and relayed; the counters show it.
#[test]
fn entry_channel_messages_reach_every_node_once_with_default_pow() {
    let dirs = [tempdir(), tempdir(), tempdir()];
    let (mut admin, msb, subnet, admin_addr) = first(dirs[0].path(), &[]);
    let ids = (msb.as_str(), subnet.as_str());
    let (mut alice, alice_addr) = joiner(dirs[1].path(), ids, &admin_addr, &[]);
    let (mut bob, _) = joiner(
        dirs[2].path(),
        ids,
        &format!("{admin_addr},{alice_addr}"),
        &[],
    );
    let pow = admin
        .seen
        .iter()
        .find(|l| l.contains("--sidechannel-pow "))
        .expect("the resolved configuration names the proof of work");
    assert!(pow.contains("on, 12 bits"), "{pow}");
    for node in [&mut admin, &mut alice, &mut bob] {
        let stats = await_neighbours(node, 2);
        let entry = stats.channel(ENTRY_CHANNEL).expect("the entry channel");
        assert!(entry.contains(": Member,"), "{entry}");
        assert_eq!(stats.counter("sent"), 0);
    }
    let alice_key = alice.writer_key();

    sc_send(&mut alice, ENTRY_CHANNEL, "hello-entry");
    let line = printed(ENTRY_CHANNEL, &alice_key, "hello-entry");
    admin.await_printed(&line, WAIT);
    bob.await_printed(&line, WAIT);
    // Every copy is counted: 2 direct ones and at least one relayed by the node that got it
    // first; the later copy is a duplicate and nothing is delivered twice.
    let deadline = Instant::now() + WAIT;
    let (a, b) = loop {
        let (a, b) = (sc_stats(&mut admin), sc_stats(&mut bob));
        if a.counter("received") + b.counter("received") >= 3 {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "no relayed copy: {a:#?} {b:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for stats in [&a, &b] {
        assert_eq!(stats.counter("delivered"), 1, "{stats:#?}");
        assert_eq!(stats.counter("sent"), 0, "{stats:#?}");
    }
    assert!(
        a.counter("relayed") + b.counter("relayed") >= 1,
        "{a:#?} {b:#?}"
    );
    assert!(
        a.dropped("Duplicate") + b.dropped("Duplicate") >= 1,
        "{a:#?} {b:#?}"
    );
    for node in [&admin, &bob] {
        assert_eq!(node.count_seen("hello-entry"), 1, "{:#?}", node.seen);
    }
    let stats = sc_stats(&mut alice);
    assert_eq!(stats.counter("sent"), 1, "{stats:#?}");
    assert_eq!(stats.counter("delivered"), 0, "{stats:#?}");

    // And back: bob's message reaches alice and the admin.
    sc_send(&mut bob, ENTRY_CHANNEL, "hello-back");
    let line = printed(ENTRY_CHANNEL, &bob.writer_key(), "hello-back");
    alice.await_printed(&line, WAIT);
    admin.await_printed(&line, WAIT);
    assert_eq!(sc_stats(&mut bob).counter("sent"), 1);
    for node in [bob, alice, admin] {
        node.exit();
    }
}

// ---- 2. the policy matrix ---------------------------------------------------------------

/// Owner O, member M and non-member N (full mesh, every node configured with O as the owner
/// of `news` and `club`, `news` owner-only, `club` invite-only; channels joined once every
/// node knows its neighbours):
/// - `lobby`, public with the welcome gate: O's welcome, given at join
///   (`/sc_join --welcome`), lets everyone talk;
/// - `news`, owner-only: O's messages arrive, M's sends are refused at the sender;
/// - `club`, invite-only: M joins with O's invite and reads O (and O reads M); N, without an
///   invite, joins as a relay, may not send and never prints a `club` message.
#[test]
fn policy_matrix_public_owner_only_and_invite_only_channels() {
    let (o_dir, m_dir, n_dir) = (tempdir(), tempdir(), tempdir());
    let owner = preset_peer_key(o_dir.path()).public().to_hex();
    let owners = format!("news:{owner},club:{owner}");
    let common = [
        NO_POW[0],
        NO_POW[1],
        "--sidechannel-owner-write-channels",
        "news",
        "--sidechannel-owner",
        &owners,
        "--sidechannel-invite-channels",
        "club",
    ];
    let (mut o, msb, subnet, o_addr) = first(o_dir.path(), &common);
    assert_eq!(o.writer_key(), owner);
    let ids = (msb.as_str(), subnet.as_str());
    let (mut m, m_addr) = joiner(m_dir.path(), ids, &o_addr, &common);
    let (mut n, _) = joiner(n_dir.path(), ids, &format!("{o_addr},{m_addr}"), &common);
    let (m_key, n_key) = (m.writer_key(), n.writer_key());
    for node in [&mut o, &mut m, &mut n] {
        await_neighbours(node, 2);
    }

    // The owner opens the public channel and signs its welcome; the others join with it.
    assert_eq!(
        command(&mut o, "/sc_join --channel lobby", "Joined sidechannel:"),
        "lobby"
    );
    let welcome = command(
        &mut o,
        "/sc_welcome --channel lobby --text welcome-to-the-lobby",
        "welcome_b64:",
    );
    for node in [&mut m, &mut n] {
        let joined = command(
            node,
            &format!("/sc_join --channel lobby --welcome {welcome}"),
            "Joined sidechannel:",
        );
        assert_eq!(joined, "lobby");
    }
    for node in [&mut o, &mut m, &mut n] {
        let joined = command(node, "/sc_join --channel news", "Joined sidechannel:");
        assert_eq!(joined, "news");
    }
    for node in [&mut o, &mut m, &mut n] {
        await_subscribers(node, "lobby", 2);
        let stats = await_subscribers(node, "news", 2);
        assert_eq!(stats.field("lobby", "welcomed").as_deref(), Some("yes"));
        assert_eq!(stats.field("lobby", "owner"), Some(owner.clone()));
        assert_eq!(stats.field("news", "owner-only").as_deref(), Some("yes"));
        assert_eq!(stats.field("news", "owner"), Some(owner.clone()));
    }

    // Public: members other than the owner talk once welcomed.
    sc_send(&mut m, "lobby", "m-lobby");
    let line = printed("lobby", &m_key, "m-lobby");
    o.await_printed(&line, WAIT);
    n.await_printed(&line, WAIT);
    sc_send(&mut n, "lobby", "n-lobby");
    let line = printed("lobby", &n_key, "n-lobby");
    o.await_printed(&line, WAIT);
    m.await_printed(&line, WAIT);

    // Owner-only: the owner's message arrives; the member's send is refused at the sender.
    sc_send(&mut o, "news", "o-news");
    let line = printed("news", &owner, "o-news");
    m.await_printed(&line, WAIT);
    n.await_printed(&line, WAIT);
    let sent_before = sc_stats(&mut m).counter("sent");
    let denied = refused(&mut m, "/sc_send --channel news --message m-news");
    assert!(
        denied.contains("Send denied") && denied.contains("owner-only"),
        "{denied}"
    );
    assert_eq!(sc_stats(&mut m).counter("sent"), sent_before);

    // Invite-only: O invites M; N joins without an invite, as a relay.
    assert_eq!(
        command(&mut o, "/sc_join --channel club", "Joined sidechannel:"),
        "club"
    );
    command(
        &mut o,
        "/sc_welcome --channel club --text members-only",
        "welcome_b64:",
    );
    let invite = command(
        &mut o,
        &format!("/sc_invite --channel club --pubkey {m_key}"),
        "invite_b64:",
    );
    let joined = command(
        &mut m,
        &format!("/sc_join --channel club --invite {invite}"),
        "Joined sidechannel:",
    );
    assert_eq!(joined, "club");
    let joined = command(&mut n, "/sc_join --channel club", "Joined sidechannel:");
    assert!(
        joined.starts_with("club") && joined.contains("as a relay"),
        "{joined}"
    );
    let denied = refused(&mut n, "/sc_send --channel club --message n-club");
    assert!(
        denied.contains("Send denied") && denied.contains("no current key"),
        "{denied}"
    );
    let roles = [(&mut o, "Owner"), (&mut m, "Member"), (&mut n, "Relay")];
    for (node, role) in roles {
        let stats = await_subscribers(node, "club", 2);
        assert_eq!(
            stats.field("club", "role").as_deref(),
            Some(role),
            "{stats:#?}"
        );
        assert_eq!(stats.field("club", "invite-only").as_deref(), Some("yes"));
    }

    sc_send(&mut o, "club", "o-club");
    m.await_printed(&printed("club", &owner, "o-club"), WAIT);
    sc_send(&mut m, "club", "m-club");
    o.await_printed(&printed("club", &m_key, "m-club"), WAIT);
    // Barriers: later entry-channel messages of O and M reached N, so N processed theirs on
    // `club` too, and printed none.
    sc_send(&mut o, ENTRY_CHANNEL, "o-barrier");
    n.await_printed(&printed(ENTRY_CHANNEL, &owner, "o-barrier"), WAIT);
    sc_send(&mut m, ENTRY_CHANNEL, "m-barrier");
    n.await_printed(&printed(ENTRY_CHANNEL, &m_key, "m-barrier"), WAIT);
    assert_eq!(n.count_seen("[sidechannel:club]"), 0, "{:#?}", n.seen);
    assert_eq!(n.count_seen("-club\""), 0, "{:#?}", n.seen);
    let stats = sc_stats(&mut n);
    assert_eq!(stats.field("club", "role").as_deref(), Some("Relay"));
    assert_eq!(stats.number("club", "epoch"), 0, "{stats:#?}");
    for node in [n, m, o] {
        node.exit();
    }
}

/// Channels joined at start (`--sidechannels`, `--sidechannel-welcome`) are announced to
/// every neighbour as it connects: O (owner of `lobby`, which it opened before anyone
/// connected), M (`--sidechannel-welcome lobby:<O's welcome>`) and N (`--sidechannels
/// news,lobby` and O named as the owner: it gets the welcome from O) all see each other on
/// both channels and exchange messages there.
///
#[test]
fn channels_joined_at_start_are_announced_to_every_neighbour() {
    let (o_dir, m_dir, n_dir) = (tempdir(), tempdir(), tempdir());
    let owner = preset_peer_key(o_dir.path()).public().to_hex();
    let flags = [NO_POW[0], NO_POW[1], "--sidechannels", "news"];
    let (mut o, msb, subnet, o_addr) = first(o_dir.path(), &flags);
    let ids = (msb.as_str(), subnet.as_str());
    command(&mut o, "/sc_join --channel lobby", "Joined sidechannel:");
    let welcome = command(
        &mut o,
        "/sc_welcome --channel lobby --text lobby-rules",
        "welcome_b64:",
    );
    let lobby_welcome = format!("lobby:{welcome}");
    // A startup welcome admits a channel; joining it at start takes `--sidechannels`.
    let m_flags = [
        NO_POW[0],
        NO_POW[1],
        "--sidechannels",
        "news,lobby",
        "--sidechannel-welcome",
        &lobby_welcome,
    ];
    let (mut m, m_addr) = joiner(m_dir.path(), ids, &o_addr, &m_flags);
    let lobby_owner = format!("lobby:{owner}");
    let n_flags = [
        NO_POW[0],
        NO_POW[1],
        "--sidechannels",
        "news,lobby",
        "--sidechannel-owner",
        &lobby_owner,
    ];
    let (mut n, _) = joiner(n_dir.path(), ids, &format!("{o_addr},{m_addr}"), &n_flags);
    assert_eq!(
        m.count_seen("Sidechannel extras: news, lobby"),
        1,
        "{:#?}",
        m.seen
    );
    let m_key = m.writer_key();
    for node in [&mut o, &mut m, &mut n] {
        await_neighbours(node, 2);
    }
    for node in [&mut o, &mut m, &mut n] {
        await_subscribers(node, "news", 2);
        let stats = await_subscribers(node, "lobby", 2);
        assert_eq!(stats.field("lobby", "owner"), Some(owner.clone()));
    }
    await_sc(&mut n, "lobby welcomed", |s| {
        s.field("lobby", "welcomed").as_deref() == Some("yes")
    });
    // `lobby` is welcomed everywhere: its messages flow both ways. `news` has no owner, so
    // with welcomes required its messages wait for a welcome (dropped, never printed).
    sc_send(&mut o, "lobby", "o-lobby");
    m.await_printed(&printed("lobby", &owner, "o-lobby"), WAIT);
    n.await_printed(&printed("lobby", &owner, "o-lobby"), WAIT);
    sc_send(&mut m, "lobby", "m-lobby");
    o.await_printed(&printed("lobby", &m_key, "m-lobby"), WAIT);
    n.await_printed(&printed("lobby", &m_key, "m-lobby"), WAIT);
    for node in [n, m, o] {
        node.exit();
    }
}

// ---- 2b. a forger on a raw libp2p connection --------------------------------------------

/// A raw libp2p peer in the test process speaking `/trac/sidechannel/2` with its own key,
/// connected to one node (the forger, and a bursty sender).
struct RawPeer {
    runtime: Runtime,
    net: NetHandle,
    keypair: Keypair,
    target: PeerId,
    next_id: u64,
}

impl RawPeer {
    /// Starts the client on 127.0.0.1 with a sidechannel frame limit of `frame_limit` bytes
    /// (which sets the size of the batches it sends) and dials `addr` (`127.0.0.1:<port>`).
    fn connect(addr: &str, frame_limit: usize) -> RawPeer {
        let runtime = Runtime::new().expect("a tokio runtime");
        let keypair = Keypair::generate();
        let mut config = NetConfig::new(keypair.clone());
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
        config.mdns = false;
        config.dial_discovered = false;
        config.limits.max_sidechannel_frame_bytes = frame_limit;
        let (frames, mut inbound) = tokio::sync::mpsc::channel(1024);
        config.sidechannel = Some(frames);
        let (net, mut events) = {
            let _guard = runtime.enter();
            Net::start(config).expect("start the raw peer's network")
        };
        // What the node sends (ledger requests, its sidechannel frames) is read and ignored:
        // a dropped reply answers a request with a refusal.
        runtime.spawn(async move { while events.recv().await.is_some() {} });
        runtime.spawn(async move { while inbound.recv().await.is_some() {} });
        let port = addr.rsplit(':').next().expect("a port");
        let target: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}")
            .parse()
            .expect("multiaddr");
        let target = runtime
            .block_on(net.dial(target))
            .expect("dial the target node");
        RawPeer {
            runtime,
            net,
            keypair,
            target,
            next_id: 0,
        }
    }

    fn public(&self) -> PublicKey {
        self.keypair.public()
    }

    /// A fresh frame id.
    fn id(&mut self) -> [u8; 16] {
        self.next_id += 1;
        let seed = format!("{} {}", self.public(), self.next_id);
        pseudo_random_bytes(seed.as_bytes(), 16)
            .try_into()
            .expect("16 bytes")
    }

    /// A message frame signed by the forger, `text` as a JSON string, without work.
    fn message(&mut self, channel: &str, text: &str, ts: u64) -> Frame {
        let json = serde_json::to_string(text).expect("json");
        let id = self.id();
        let body = Body::Data(Payload::Plain(json));
        Frame::signed(&self.keypair, channel.to_string(), id, ts, 3, body).0
    }

    /// Queues `bytes` for the target node.
    fn send(&self, bytes: Vec<u8>) {
        self.runtime
            .block_on(self.net.sidechannel_send(self.target, bytes))
            .expect("frame queued");
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.runtime.block_on(self.net.shutdown());
    }
}

/// Does the proof of work the default settings require.
fn with_work(mut frame: Frame) -> Frame {
    frame.pow = solve_pow(&frame.digest(), DEFAULT_POW_BITS);
    frame
}

/// Waits until the target counted `n` more drops for `reason` than in `before`.
#[track_caller]
fn await_drop(node: &mut NodeProc, before: &ScStats, reason: &str, n: u64) -> ScStats {
    let want = before.dropped(reason) + n;
    await_sc(node, &format!("{want} {reason} drops"), |s| {
        s.dropped(reason) >= want
    })
}

/// A forger (a raw libp2p client with its own key, connected to member M) cannot pass its
/// frames off as the owner's nor get around the receive pipeline of M (default proof of work,
/// `--sidechannel-max-bytes 4096`, a small rate budget): a frame claiming the owner as author
/// (Signature), its own frame on the owner-only channel (OwnerOnly), a frame without work
/// (Pow), a valid frame sent twice (printed once, then Duplicate), a frame 10 minutes old
/// (Stale), an oversize frame (refused) and a flood (RateLimited, after which even its valid
/// frames are dropped while the owner's still arrive). None of the forged frames is printed.
#[test]
fn a_forger_cannot_pass_off_replay_or_flood_frames() {
    let (o_dir, m_dir) = (tempdir(), tempdir());
    let owner = preset_peer_key(o_dir.path()).public();
    let owner_hex = owner.to_hex();
    let owners = format!("news:{owner_hex}");
    let common = [
        "--sidechannel-owner-write-channels",
        "news",
        "--sidechannel-owner",
        &owners,
    ];
    let (mut o, msb, subnet, o_addr) = first(o_dir.path(), &common);
    let mut m_flags = common.to_vec();
    m_flags.extend([
        "--sidechannel-max-bytes",
        "4096",
        "--sidechannel-rate-bytes",
        "4000",
        "--sidechannel-rate-burst",
        "16000",
    ]);
    let (mut m, m_addr) = joiner(
        m_dir.path(),
        (msb.as_str(), subnet.as_str()),
        &o_addr,
        &m_flags,
    );
    // Frames up to 60 KB, in batches no larger than M accepts (64 KiB for frames of at most
    // 4096 bytes; see `a_burst_reaches_a_node_with_a_smaller_frame_limit`).
    let mut forger = RawPeer::connect(&m_addr, 60_000);
    // M's neighbours: O and the forger (which may have reached O as well).
    await_neighbours(&mut m, 2);
    await_neighbours(&mut o, 1);
    for node in [&mut o, &mut m] {
        command(node, "/sc_join --channel news", "Joined sidechannel:");
    }
    await_subscribers(&mut m, "news", 1);
    await_subscribers(&mut o, "news", 1);

    // The owner's own frames pass.
    sc_send(&mut o, "news", "o-news");
    m.await_printed(&printed("news", &owner_hex, "o-news"), WAIT);
    let base = sc_stats(&mut m);

    // (a) The owner named as author, signed by the forger (with valid work): Signature.
    let mut frame = forger.message("news", "forged-as-owner", now_ms());
    frame.from = owner;
    forger.send(with_work(frame).encode());
    await_drop(&mut m, &base, "Signature", 1);

    // (b) Correctly signed by the forger, on the owner-only channel: OwnerOnly.
    let frame = forger.message("news", "forged-owner-only", now_ms());
    forger.send(with_work(frame).encode());
    await_drop(&mut m, &base, "OwnerOnly", 1);

    // (g) No proof of work: Pow.
    let mut frame = forger.message(ENTRY_CHANNEL, "forged-no-work", now_ms());
    let digest = frame.digest();
    while pow_satisfied(&digest, frame.pow, DEFAULT_POW_BITS) {
        frame.pow += 1;
    }
    forger.send(frame.encode());
    await_drop(&mut m, &base, "Pow", 1);

    // (c) A valid frame, sent twice: printed once, then Duplicate.
    let valid = with_work(forger.message(ENTRY_CHANNEL, "forger-valid", now_ms())).encode();
    forger.send(valid.clone());
    forger.send(valid);
    let forger_hex = forger.public().to_hex();
    m.await_printed(&printed(ENTRY_CHANNEL, &forger_hex, "forger-valid"), WAIT);
    await_drop(&mut m, &base, "Duplicate", 1);

    // (d) Ten minutes old: Stale.
    let old = now_ms() - 10 * 60 * 1000;
    let frame = forger.message(ENTRY_CHANNEL, "forged-stale", old);
    forger.send(with_work(frame).encode());
    await_drop(&mut m, &base, "Stale", 1);

    // (e) Above --sidechannel-max-bytes: refused by M's network layer (whose frame limit
    // follows the setting) before the engine sees it; M names it on stderr (checked at the
    // end). A valid frame sent after it still passes, so the oversize one was processed.
    let big = format!("forged-oversize-{}", "x".repeat(6000));
    let frame = forger.message(ENTRY_CHANNEL, &big, now_ms());
    forger.send(with_work(frame).encode());
    let after = with_work(forger.message(ENTRY_CHANNEL, "forger-after-oversize", now_ms()));
    forger.send(after.encode());
    m.await_printed(
        &printed(ENTRY_CHANNEL, &forger_hex, "forger-after-oversize"),
        WAIT,
    );

    let stats = sc_stats(&mut m);
    for reason in ["Signature", "OwnerOnly", "Pow", "Duplicate", "Stale"] {
        assert_eq!(
            stats.dropped(reason),
            base.dropped(reason) + 1,
            "{reason}: {stats:#?}"
        );
    }
    assert_eq!(stats.dropped("RateLimited"), 0, "{stats:#?}");

    // (f) A flood far above the budget (16,000 bytes, 4,000 bytes/s): RateLimited. The frames
    // name a channel nobody joined, so the ones within budget are dropped too.
    let filler = "f".repeat(3400);
    for _ in 0..40 {
        let frame = forger.message("flood-nowhere", &filler, now_ms());
        forger.send(frame.encode());
    }
    let stats = await_drop(&mut m, &base, "RateLimited", 1);
    assert!(stats.dropped("NotJoined") >= 1, "{stats:#?}");
    // Blocked now: even a valid frame of the forger is dropped, while the owner's arrive.
    let frame = forger.message(ENTRY_CHANNEL, "forged-while-blocked", now_ms());
    forger.send(with_work(frame).encode());
    let limited = stats.dropped("RateLimited");
    await_sc(&mut m, "the blocked frame dropped", |s| {
        s.dropped("RateLimited") > limited
    });
    sc_send(&mut o, ENTRY_CHANNEL, "o-after-flood");
    m.await_printed(&printed(ENTRY_CHANNEL, &owner_hex, "o-after-flood"), WAIT);

    // Nothing forged was printed, on M or (relayed) on O; the valid frame once.
    o.await_printed(&printed(ENTRY_CHANNEL, &forger_hex, "forger-valid"), WAIT);
    for node in [&m, &o] {
        assert_eq!(node.count_seen("forged-"), 0, "{:#?}", node.seen);
        assert_eq!(node.count_seen("fffff"), 0, "{:#?}", node.seen);
        assert_eq!(node.count_seen("forger-valid"), 1, "{:#?}", node.seen);
    }
    drop(forger);
    let (code, stderr) = m.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("above 4096 bytes refused"),
        "the oversize frame was not refused: {stderr}"
    );
    o.exit();
}

// ---- 3. relaying along a line -----------------------------------------------------------

/// A line A–B–C (A and C only know B; no node dials the peers it discovers). On a public
/// channel A's message reaches C through B. On an invite-only channel owned by A, with C a
/// member and B a relay without invite, C reads A (and A reads C) through B, while B prints
/// nothing and counts the frames it relayed.
#[test]
fn messages_cross_a_relay_that_cannot_read_them() {
    let (a_dir, b_dir, c_dir) = (tempdir(), tempdir(), tempdir());
    let flags = [
        NO_POW[0],
        NO_POW[1],
        "--dial-discovered",
        "false",
        "--sidechannel-invite-channels",
        "vault",
    ];
    let (mut b, msb, subnet, b_addr) = first(b_dir.path(), &flags);
    let ids = (msb.as_str(), subnet.as_str());
    let (mut a, _) = joiner(a_dir.path(), ids, &b_addr, &flags);
    let (mut c, _) = joiner(c_dir.path(), ids, &b_addr, &flags);
    let (a_key, c_key) = (a.writer_key(), c.writer_key());
    await_neighbours(&mut b, 2);
    await_neighbours(&mut a, 1);
    await_neighbours(&mut c, 1);
    // A line: A and C know only B (give the DHT a moment to break it).
    std::thread::sleep(Duration::from_secs(2));
    for node in [&mut a, &mut c] {
        let stats = sc_stats(node);
        assert_eq!(
            stats.counter("neighbours"),
            1,
            "not a line: A and C got connected although every node runs with \
             --dial-discovered false: {stats:#?}"
        );
    }

    // Public channel, owned by B: A and C join with B's welcome.
    command(&mut b, "/sc_join --channel plaza", "Joined sidechannel:");
    let welcome = command(
        &mut b,
        "/sc_welcome --channel plaza --text plaza-rules",
        "welcome_b64:",
    );
    for node in [&mut a, &mut c] {
        let joined = command(
            node,
            &format!("/sc_join --channel plaza --welcome {welcome}"),
            "Joined sidechannel:",
        );
        assert_eq!(joined, "plaza");
    }
    await_subscribers(&mut b, "plaza", 2);
    await_subscribers(&mut a, "plaza", 1);
    await_subscribers(&mut c, "plaza", 1);
    sc_send(&mut a, "plaza", "a-plaza");
    let line = c.await_printed(&printed("plaza", &a_key, "a-plaza"), WAIT);
    assert!(line.contains(&a_key), "{line}");
    b.await_printed(&printed("plaza", &a_key, "a-plaza"), WAIT);
    assert!(sc_stats(&mut b).counter("relayed") >= 1);

    // Invite-only channel, owned by A: C is invited, B joins without an invite.
    let joined = command(
        &mut a,
        &format!("/sc_join --channel vault --owner {a_key}"),
        "Joined sidechannel:",
    );
    assert_eq!(joined, "vault");
    command(
        &mut a,
        "/sc_welcome --channel vault --text vault-rules",
        "welcome_b64:",
    );
    let invite = command(
        &mut a,
        &format!("/sc_invite --channel vault --pubkey {c_key}"),
        "invite_b64:",
    );
    let joined = command(
        &mut c,
        &format!("/sc_join --channel vault --invite {invite}"),
        "Joined sidechannel:",
    );
    assert_eq!(joined, "vault");
    let joined = command(
        &mut b,
        &format!("/sc_join --channel vault --owner {a_key}"),
        "Joined sidechannel:",
    );
    assert!(joined.contains("as a relay"), "{joined}");
    await_subscribers(&mut a, "vault", 1);
    await_subscribers(&mut c, "vault", 1);
    await_subscribers(&mut b, "vault", 2);
    // B learned C's membership from C's auth frame (so it forwards C's frames too).
    let stats = await_sc(&mut b, "C known as a member", |s| {
        s.number("vault", "members") >= 1
    });
    assert_eq!(stats.field("vault", "role").as_deref(), Some("Relay"));
    assert_eq!(stats.field("vault", "owner"), Some(a_key.clone()));
    let relayed = stats.counter("relayed");

    sc_send(&mut a, "vault", "a-vault");
    c.await_printed(&printed("vault", &a_key, "a-vault"), WAIT);
    assert!(sc_stats(&mut b).counter("relayed") > relayed);
    sc_send(&mut c, "vault", "c-vault");
    a.await_printed(&printed("vault", &c_key, "c-vault"), WAIT);
    // Barriers from A and C: B processed both vault messages, and printed neither.
    sc_send(&mut a, ENTRY_CHANNEL, "a-barrier");
    b.await_printed(&printed(ENTRY_CHANNEL, &a_key, "a-barrier"), WAIT);
    sc_send(&mut c, ENTRY_CHANNEL, "c-barrier");
    b.await_printed(&printed(ENTRY_CHANNEL, &c_key, "c-barrier"), WAIT);
    assert_eq!(b.count_seen("[sidechannel:vault]"), 0, "{:#?}", b.seen);
    assert_eq!(b.count_seen("-vault\""), 0, "{:#?}", b.seen);
    // The entry-channel barriers crossed B as well; A and C still have B as only neighbour.
    c.await_printed(&printed(ENTRY_CHANNEL, &a_key, "a-barrier"), WAIT);
    for node in [&mut a, &mut c] {
        let stats = sc_stats(node);
        assert_eq!(stats.counter("neighbours"), 1, "{stats:#?}");
    }
    for node in [c, a, b] {
        node.exit();
    }
}

// ---- 4. revocation ----------------------------------------------------------------------

/// The owner revokes member M1 of an invite-only channel: the key rotates (epoch 2) for the
/// remaining member M2 only; the owner's next message reaches M2 but not M1, which stays
/// connected, may no longer send, and cannot join again with its old invite.
#[test]
fn a_revoked_member_no_longer_reads_the_channel() {
    let (o_dir, m1_dir, m2_dir) = (tempdir(), tempdir(), tempdir());
    let owner = preset_peer_key(o_dir.path()).public().to_hex();
    let owners = format!("club:{owner}");
    let flags = [
        NO_POW[0],
        NO_POW[1],
        "--sidechannel-invite-channels",
        "club",
        "--sidechannel-owner",
        &owners,
    ];
    let (mut o, msb, subnet, o_addr) = first(o_dir.path(), &flags);
    let ids = (msb.as_str(), subnet.as_str());
    let (mut m1, m1_addr) = joiner(m1_dir.path(), ids, &o_addr, &flags);
    let (mut m2, _) = joiner(m2_dir.path(), ids, &format!("{o_addr},{m1_addr}"), &flags);
    let (m1_key, m2_key) = (m1.writer_key(), m2.writer_key());
    for node in [&mut o, &mut m1, &mut m2] {
        await_neighbours(node, 2);
    }

    command(&mut o, "/sc_join --channel club", "Joined sidechannel:");
    let mut invites = Vec::new();
    for (node, key) in [(&mut m1, &m1_key), (&mut m2, &m2_key)] {
        let invite = command(
            &mut o,
            &format!("/sc_invite --channel club --pubkey {key}"),
            "invite_b64:",
        );
        let joined = command(
            node,
            &format!("/sc_join --channel club --invite {invite}"),
            "Joined sidechannel:",
        );
        assert_eq!(joined, "club");
        invites.push(invite);
    }
    for node in [&mut o, &mut m1, &mut m2] {
        let stats = await_subscribers(node, "club", 2);
        assert_eq!(stats.number("club", "epoch"), 1, "{stats:#?}");
    }
    sc_send(&mut o, "club", "before-revoke");
    let line = printed("club", &owner, "before-revoke");
    m1.await_printed(&line, WAIT);
    m2.await_printed(&line, WAIT);

    let revoked = command(
        &mut o,
        &format!("/sc_revoke --channel club --pubkey {m1_key}"),
        "Revoked",
    );
    assert!(revoked.contains("rotated"), "{revoked}");
    let stats = await_sc(&mut m2, "epoch 2 on M2", |s| s.number("club", "epoch") == 2);
    assert_eq!(stats.field("club", "role").as_deref(), Some("Member"));
    let stats = await_sc(&mut m1, "epoch 2 on M1", |s| s.number("club", "epoch") == 2);
    assert_eq!(stats.field("club", "role").as_deref(), Some("Relay"));
    assert_eq!(stats.counter("neighbours"), 2, "M1 stays connected");

    sc_send(&mut o, "club", "after-revoke");
    m2.await_printed(&printed("club", &owner, "after-revoke"), WAIT);
    sc_send(&mut m2, "club", "m2-after");
    o.await_printed(&printed("club", &m2_key, "m2-after"), WAIT);
    // Barriers: M1 processed what O and M2 sent (directly and relayed), and printed none.
    sc_send(&mut o, ENTRY_CHANNEL, "o-barrier");
    m1.await_printed(&printed(ENTRY_CHANNEL, &owner, "o-barrier"), WAIT);
    sc_send(&mut m2, ENTRY_CHANNEL, "m2-barrier");
    m1.await_printed(&printed(ENTRY_CHANNEL, &m2_key, "m2-barrier"), WAIT);
    assert_eq!(m1.count_seen("after-revoke"), 0, "{:#?}", m1.seen);
    assert_eq!(m1.count_seen("m2-after"), 0, "{:#?}", m1.seen);

    let denied = refused(&mut m1, "/sc_send --channel club --message m1-after");
    assert!(denied.contains("no current key"), "{denied}");
    let denied = refused(
        &mut m1,
        &format!("/sc_join --channel club --invite {}", invites[0]),
    );
    assert!(
        denied.contains("Join denied") && denied.contains("revoked"),
        "{denied}"
    );
    for node in [m2, m1, o] {
        node.exit();
    }
}

// ---- 5. restarts ------------------------------------------------------------------------

/// Owner O and member M of an invite-only channel set up only at runtime (owner by welcome,
/// membership by invite, no sidechannel flags), after O's first message reached M; returns
/// them, O's key and M's key.
fn invite_only_pair(o_dir: &Path, m_dir: &Path) -> (NodeProc, NodeProc, String, String) {
    let (mut o, msb, subnet, o_addr) = first(o_dir, &NO_POW);
    let (mut m, _) = joiner(m_dir, (msb.as_str(), subnet.as_str()), &o_addr, &NO_POW);
    let (owner, m_key) = (o.writer_key(), m.writer_key());
    await_neighbours(&mut o, 1);
    await_neighbours(&mut m, 1);
    command(&mut o, "/sc_join --channel club", "Joined sidechannel:");
    command(
        &mut o,
        "/sc_welcome --channel club --text members-only",
        "welcome_b64:",
    );
    let invite = command(
        &mut o,
        &format!("/sc_invite --channel club --pubkey {m_key}"),
        "invite_b64:",
    );
    let joined = command(
        &mut m,
        &format!("/sc_join --channel club --invite {invite}"),
        "Joined sidechannel:",
    );
    assert_eq!(joined, "club");
    await_subscribers(&mut o, "club", 1);
    await_subscribers(&mut m, "club", 1);
    sc_send(&mut o, "club", "before-restart");
    m.await_printed(&printed("club", &owner, "before-restart"), WAIT);
    (o, m, owner, m_key)
}

/// `club`'s line of `/sc_stats` without its neighbour count (which depends on connections).
fn club_state(stats: &ScStats) -> String {
    let line = stats.channel("club").expect("club joined");
    let count = format!(", neighbours {}", stats.number("club", "neighbours"));
    line.replacen(&count, "", 1)
}

/// Stops `node` (`/exit`) and starts it again in `dir` without flags but `--sidechannel-pow 0`
/// (it knows its networks and its peers' addresses); checks `sidechannels.bin` is there.
fn restart(node: NodeProc, dir: &Path) -> NodeProc {
    node.exit();
    let state = dir.join("stores/peer/sidechannels.bin");
    assert!(state.is_file(), "{} missing", state.display());
    let mut node = NodeProc::start(dir, &NO_POW);
    banner(&mut node);
    node
}

/// The member of an invite-only channel restarts without flags: it still has the channel
/// (joined, member, owner, welcome, invite-only, epoch key) and receives the owner's messages
/// on it, and it can send there again.
#[test]
fn a_restarted_member_keeps_its_invite_only_channel() {
    let (o_dir, m_dir) = (tempdir(), tempdir());
    let (mut o, m, owner, m_key) = invite_only_pair(o_dir.path(), m_dir.path());
    let mut m = m;
    let before = club_state(&sc_stats(&mut m));
    for part in [
        ": Member,",
        "welcomed yes",
        &format!("owner {owner}"),
        "invite-only yes",
        "epoch 1",
    ] {
        assert!(before.contains(part), "{part}: {before}");
    }

    let mut m = restart(m, m_dir.path());
    let after = await_neighbours(&mut m, 1);
    assert_eq!(club_state(&after), before, "{after:#?}");
    await_subscribers(&mut o, "club", 1);
    sc_send(&mut o, "club", "after-member-restart");
    m.await_printed(&printed("club", &owner, "after-member-restart"), WAIT);
    // The other way: M must learn again that O joined `club` (the subscriptions exchanged on
    // connection; see `channels_joined_at_start_are_announced_to_every_neighbour`).
    await_subscribers(&mut m, "club", 1);
    sc_send(&mut m, "club", "member-back");
    o.await_printed(&printed("club", &m_key, "member-back"), WAIT);
    m.exit();
    o.exit();
}

/// The owner of an invite-only channel restarts without flags: it is still the owner, with
/// its welcome, epoch key and member, so its messages reach the member and the member's reach
/// it.
#[test]
fn a_restarted_owner_keeps_its_channel_key_and_members() {
    let (o_dir, m_dir) = (tempdir(), tempdir());
    let (o, mut m, owner, m_key) = invite_only_pair(o_dir.path(), m_dir.path());
    let mut o = o;
    let before = club_state(&sc_stats(&mut o));
    for part in [
        ": Owner,",
        "welcomed yes",
        "invite-only yes",
        "members 1",
        "epoch 1",
    ] {
        assert!(before.contains(part), "{part}: {before}");
    }

    let mut o = restart(o, o_dir.path());
    let after = await_neighbours(&mut o, 1);
    assert_eq!(club_state(&after), before, "{after:#?}");
    // Both ends must learn again that the other joined `club`.
    await_subscribers(&mut o, "club", 1);
    sc_send(&mut o, "club", "after-owner-restart");
    m.await_printed(&printed("club", &owner, "after-owner-restart"), WAIT);
    await_subscribers(&mut m, "club", 1);
    sc_send(&mut m, "club", "member-again");
    o.await_printed(&printed("club", &m_key, "member-again"), WAIT);
    m.exit();
    o.exit();
}

// ---- frame limits between nodes -----------------------------------------------------------

/// Sends `count` messages of about 3.8 KB as fast as possible from `sender` to `receiver`, a
/// node with `--sidechannel-max-bytes 4096` (frames below both limits): every one must be
/// printed by `receiver` within [`WAIT`].
#[track_caller]
fn burst(receiver: &mut NodeProc, sender: &str, count: usize, mut send: impl FnMut(&str)) {
    let pad = "p".repeat(3600);
    for i in 0..count {
        send(&format!("burst-{i}-{pad}"));
    }
    let deadline = Instant::now() + WAIT;
    for i in 0..count {
        let left = deadline.saturating_duration_since(Instant::now());
        let needle = format!("[sidechannel:{ENTRY_CHANNEL}] {sender}: \"burst-{i}-p");
        if receiver.find_within(&needle, left).is_none() {
            let stats = sc_stats(receiver);
            panic!("message {i} of {count} never arrived; the receiver: {stats:#?}");
        }
    }
}

/// A sender whose frame limit is the default one (256,000 bytes) sends a quick burst of
/// messages of about 3.8 KB (each below both limits) to a node with `--sidechannel-max-bytes
/// 4096`: every one is delivered. First from a raw client with that limit (frames queued in a
/// tight loop), then from a node on the default settings (150 messages typed at its
/// terminal).
/// (Batches have one size on every node, so that a node with a small frame limit still reads
/// batches of small frames.)
#[test]
fn a_burst_reaches_a_node_with_a_smaller_frame_limit() {
    let (o_dir, m_dir) = (tempdir(), tempdir());
    let (mut o, msb, subnet, o_addr) = first(o_dir.path(), &NO_POW);
    let mut m_flags = NO_POW.to_vec();
    m_flags.extend([
        "--sidechannel-max-bytes",
        "4096",
        "--sidechannel-rate-bytes",
        "0",
    ]);
    let (mut m, m_addr) = joiner(
        m_dir.path(),
        (msb.as_str(), subnet.as_str()),
        &o_addr,
        &m_flags,
    );
    await_neighbours(&mut o, 1);

    let mut client = RawPeer::connect(&m_addr, 256_000);
    await_neighbours(&mut m, 2);
    let client_key = client.public().to_hex();
    burst(&mut m, &client_key, 40, |text| {
        let frame = client.message(ENTRY_CHANNEL, text, now_ms());
        client.send(frame.encode());
    });
    drop(client);

    let owner = o.writer_key();
    burst(&mut m, &owner, 150, |text| {
        sc_send(&mut o, ENTRY_CHANNEL, text);
    });
    assert_eq!(sc_stats(&mut o).counter("sent"), 150);
    m.exit();
    o.exit();
}
