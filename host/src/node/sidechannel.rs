//! The node's sidechannel service: the [`Engine`] of [`crate::sidechannel`] on its own task,
//! fed with the frames of `/trac/sidechannel/2` and the neighbours the network reports, and
//! driven by the terminal's `/sc_*` commands (and, later, the SC-Bridge).
//!
//! - Frames the engine returns go out through [`NetHandle::sidechannel_send`]; a neighbour the
//!   engine wants gone (repeated rate-limit blocks) is disconnected.
//! - Deliveries are printed as `[sidechannel:<channel>] <from>: <message>` unless quiet;
//!   deliveries, joins and leaves of channels (whoever caused them), open requests and
//!   neighbours coming and going are published to subscribers as [`ScNotice`]s
//!   ([`ScHandle::subscribe`]; the SC-Bridge forwards them to its clients).
//! - The engine's persistent state (joined channels, owners, welcomes, invites, members and
//!   channel keys) is saved in the peer store ([`STATE_FILE`]) after every command that changes
//!   it, and reloaded at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::config::write_atomic;
use crate::crypto::{Keypair, PublicKey};
use crate::net::{NetHandle, PeerId, ScInbound, ScInboundKind, peer_id_of};
use crate::node::now_ms;
use crate::sidechannel::{
    Delivery, Engine, Invite, JoinOutcome, OpenOutcome, Outbound, PersistedState, ScError, ScEvent,
    Settings, Stats, Welcome,
};

/// The engine's state, in the peer store folder.
pub const STATE_FILE: &str = "sidechannels.bin";

/// How many notices a subscriber may fall behind before it loses the oldest.
pub const NOTICE_BACKLOG: usize = 4096;

/// Frames waiting for the network at most (beyond, new frames are dropped and logged).
pub const OUTGOING_BACKLOG: usize = 8192;

/// Work run on the engine; the frames it returns are sent.
pub type ScTask = Box<dyn FnOnce(&mut Engine, u64) -> Outbound + Send>;

/// What the service is asked.
pub enum ScCommand {
    /// A neighbour connected (its peer key).
    PeerUp(PeerId, PublicKey),
    /// A neighbour disconnected.
    PeerDown(PeerId),
    /// Runs `work` with the engine; the frames it returns are sent.
    Run(ScTask),
}

/// A handle on the running service (cheap to clone).
#[derive(Debug, Clone)]
pub struct ScHandle {
    commands: mpsc::Sender<ScCommand>,
    notices: broadcast::Sender<ScNotice>,
}

/// What the service publishes to its subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScNotice {
    /// A message delivered on a joined channel (never this node's own).
    Message(Delivery),
    /// This node joined a channel (by the terminal, a bridge client or an accepted open
    /// request).
    Joined {
        /// The channel.
        channel: String,
    },
    /// This node left a channel.
    Left {
        /// The channel.
        channel: String,
    },
    /// A neighbour asked this node to join a channel.
    OpenRequest {
        /// The channel the request came on.
        via: String,
        /// The channel to join.
        channel: String,
        /// Who asked.
        from: PublicKey,
        /// What was done.
        outcome: OpenOutcome,
    },
    /// A neighbour connected (its peer key).
    PeerConnected(PublicKey),
    /// A neighbour disconnected.
    PeerDisconnected(PublicKey),
}

impl std::fmt::Debug for ScCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScCommand::PeerUp(peer, _) => write!(f, "PeerUp({peer})"),
            ScCommand::PeerDown(peer) => write!(f, "PeerDown({peer})"),
            ScCommand::Run(_) => f.write_str("Run"),
        }
    }
}

/// The sidechannel service has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the sidechannel service has stopped")]
pub struct ScStopped;

impl ScHandle {
    /// Tells the service about a neighbour (from the node's network events).
    pub fn peer_up(&self, peer: PeerId, key: PublicKey) {
        let _ = self.commands.try_send(ScCommand::PeerUp(peer, key));
    }

    /// Tells the service a neighbour left.
    pub fn peer_down(&self, peer: PeerId) {
        let _ = self.commands.try_send(ScCommand::PeerDown(peer));
    }

    /// Runs `work` on the engine; `T` is its result, the [`Outbound`] frames are sent.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Engine, u64) -> (T, Outbound) + Send + 'static,
    ) -> Result<T, ScStopped> {
        let (task, result) = task(work);
        self.commands
            .send(ScCommand::Run(task))
            .await
            .map_err(|_| ScStopped)?;
        result.await.map_err(|_| ScStopped)
    }

    /// [`ScHandle::run`] from a thread outside the runtime (the terminal).
    pub fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Engine, u64) -> (T, Outbound) + Send + 'static,
    ) -> Result<T, ScStopped> {
        let (task, result) = task(work);
        self.commands
            .blocking_send(ScCommand::Run(task))
            .map_err(|_| ScStopped)?;
        result.blocking_recv().map_err(|_| ScStopped)
    }

    /// Runs fallible `work` on the engine: its frames are sent when it succeeds, and its
    /// error comes back as the inner `Err`.
    pub async fn attempt<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Engine, u64) -> Result<(T, Outbound), ScError> + Send + 'static,
    ) -> Result<Result<T, ScError>, ScStopped> {
        self.run(move |engine, now| split(work(engine, now))).await
    }

    /// [`ScHandle::attempt`] from a thread outside the runtime (the terminal).
    pub fn attempt_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Engine, u64) -> Result<(T, Outbound), ScError> + Send + 'static,
    ) -> Result<Result<T, ScError>, ScStopped> {
        self.run_blocking(move |engine, now| split(work(engine, now)))
    }

    /// Every notice from now on (a receiver that falls more than [`NOTICE_BACKLOG`] notices
    /// behind loses the oldest: [`broadcast::error::RecvError::Lagged`]).
    pub fn subscribe(&self) -> broadcast::Receiver<ScNotice> {
        self.notices.subscribe()
    }
}

/// A fallible engine call's result and the frames to send (none on failure).
fn split<T>(result: Result<(T, Outbound), ScError>) -> (Result<T, ScError>, Outbound) {
    match result {
        Ok((value, out)) => (Ok(value), out),
        Err(e) => (Err(e), Vec::new()),
    }
}

/// Wraps `work` as a task whose result comes back through the receiver.
fn task<T: Send + 'static>(
    work: impl FnOnce(&mut Engine, u64) -> (T, Outbound) + Send + 'static,
) -> (ScTask, oneshot::Receiver<T>) {
    let (reply, result) = oneshot::channel();
    let task: ScTask = Box::new(move |engine: &mut Engine, now: u64| {
        let (value, outbound) = work(engine, now);
        let _ = reply.send(value);
        outbound
    });
    (task, result)
}

/// Reads a welcome or an invite given as base64 or `@file` (a file holding the base64).
pub fn blob(text: &str) -> Result<String, String> {
    let text = text.trim();
    match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(text.to_string()),
    }
}

/// Parses a welcome argument (base64 or `@file`).
pub fn parse_welcome(text: &str) -> Result<Welcome, String> {
    Welcome::from_base64(&blob(text)?).map_err(|_| "Invalid welcome. Pass base64 or @file.".into())
}

/// Parses an invite argument (base64 or `@file`).
pub fn parse_invite(text: &str) -> Result<Invite, String> {
    Invite::from_base64(&blob(text)?).map_err(|_| "Invalid invite. Pass base64 or @file.".into())
}

/// The service: owns the engine.
struct Service {
    engine: Engine,
    net: NetHandle,
    /// Frames that found the network's queue full, in order, for the forwarding task.
    outgoing: mpsc::Sender<(PeerId, Vec<u8>)>,
    /// How many frames the forwarding task holds: while any, new frames queue behind them.
    backlog: Arc<AtomicUsize>,
    peers: BTreeMap<PeerId, PublicKey>,
    keys: BTreeMap<PublicKey, PeerId>,
    state_file: PathBuf,
    saved: Vec<u8>,
    quiet: bool,
    notices: broadcast::Sender<ScNotice>,
    /// The joined channels last published.
    joined: Vec<String>,
}

/// Starts the service on the current runtime: loads the persisted state from `peer_store`
/// (the engine joins the entry channel and `settings.extras`, and stores the configured
/// welcomes), and returns its handle. `inbound` is the channel
/// the network hands `/trac/sidechannel/2` frames to.
pub fn start(
    keypair: Keypair,
    settings: &Settings,
    peer_store: &Path,
    net: NetHandle,
    inbound: mpsc::Receiver<ScInbound>,
) -> anyhow::Result<ScHandle> {
    let state_file = peer_store.join(STATE_FILE);
    let persisted: PersistedState = match std::fs::read(&state_file) {
        Ok(bytes) => PersistedState::decode(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is corrupt: {e}", state_file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedState::default(),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", state_file.display())),
    };
    let engine = Engine::new(keypair, settings.clone(), persisted);
    let (commands, receiver) = mpsc::channel(1024);
    let (notices, _) = broadcast::channel(NOTICE_BACKLOG);
    let joined = engine.joined_channels();
    let (outgoing, frames) = mpsc::channel(OUTGOING_BACKLOG);
    let backlog = Arc::new(AtomicUsize::new(0));
    tokio::spawn(forward(net.clone(), frames, backlog.clone()));
    let service = Service {
        engine,
        outgoing,
        backlog,
        net,
        peers: BTreeMap::new(),
        keys: BTreeMap::new(),
        state_file,
        saved: Vec::new(),
        quiet: settings.quiet,
        notices: notices.clone(),
        joined,
    };
    tokio::spawn(service.run(receiver, inbound));
    Ok(ScHandle { commands, notices })
}

impl Service {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<ScCommand>,
        mut inbound: mpsc::Receiver<ScInbound>,
    ) {
        self.save();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                frame = inbound.recv() => match frame {
                    Some(frame) => self.receive(frame),
                    None => break,
                },
            }
        }
        self.save();
    }

    fn command(&mut self, command: ScCommand) {
        let now = now_ms();
        match command {
            ScCommand::PeerUp(peer, key) => self.neighbour(peer, key, now),
            ScCommand::PeerDown(peer) => self.gone(peer),
            ScCommand::Run(work) => {
                let outbound = work(&mut self.engine, now);
                self.send(outbound);
                self.publish_membership();
                self.save();
            }
        }
    }

    /// Starts a neighbour once per connection (from its first frame or the node's report,
    /// whichever comes first): the engine sends it this node's subscriptions.
    fn neighbour(&mut self, peer: PeerId, key: PublicKey, now: u64) {
        if self.peers.contains_key(&peer) {
            return;
        }
        self.peers.insert(peer, key);
        self.keys.insert(key, peer);
        let _ = self.notices.send(ScNotice::PeerConnected(key));
        let outbound = self.engine.peer_connected(key, now);
        self.send(outbound);
    }

    /// A neighbour's connection closed.
    fn gone(&mut self, peer: PeerId) {
        if let Some(key) = self.peers.remove(&peer) {
            self.keys.remove(&key);
            self.engine.peer_disconnected(&key);
            let _ = self.notices.send(ScNotice::PeerDisconnected(key));
        }
    }

    fn receive(&mut self, inbound: ScInbound) {
        let now = now_ms();
        match inbound.kind {
            ScInboundKind::Frame => {}
            ScInboundKind::Connected => return self.neighbour(inbound.peer, inbound.key, now),
            ScInboundKind::Disconnected => return self.gone(inbound.peer),
        }
        // A frame may come before the peer's identification: the neighbour starts here.
        self.neighbour(inbound.peer, inbound.key, now);
        let received = self.engine.receive(inbound.key, &inbound.frame, now);
        if self.engine.settings().debug {
            match received.dropped {
                Some(reason) => eprintln!(
                    "[sidechannel] drop ({reason:?}) {} bytes from {}",
                    inbound.frame.len(),
                    inbound.key
                ),
                None => eprintln!(
                    "[sidechannel] recv {} bytes from {}: {} delivered, {} frames out",
                    inbound.frame.len(),
                    inbound.key,
                    received.deliveries.len(),
                    received.outbound.len()
                ),
            }
        }
        for delivery in received.deliveries {
            if !self.quiet {
                println!(
                    "[sidechannel:{}] {}: {}",
                    crate::terminal::sanitize(&delivery.channel),
                    delivery.from,
                    crate::terminal::sanitize(&delivery.message)
                );
            }
            let _ = self.notices.send(ScNotice::Message(delivery));
        }
        for event in &received.events {
            self.event(event);
        }
        self.send(received.outbound);
        if received.disconnect {
            let net = self.net.clone();
            let peer = inbound.peer;
            tokio::spawn(async move {
                let _ = net.disconnect(peer).await;
            });
        }
        if !received.events.is_empty() {
            self.publish_membership();
            self.save();
        }
    }

    /// Publishes the channels joined and left since the last call.
    fn publish_membership(&mut self) {
        let now = self.engine.joined_channels();
        if now == self.joined {
            return;
        }
        for channel in self.joined.iter().filter(|c| !now.contains(c)) {
            let _ = self.notices.send(ScNotice::Left {
                channel: channel.clone(),
            });
        }
        for channel in now.iter().filter(|c| !self.joined.contains(c)) {
            let _ = self.notices.send(ScNotice::Joined {
                channel: channel.clone(),
            });
        }
        self.joined = now;
    }

    fn event(&self, event: &ScEvent) {
        tracing::info!(?event, "sidechannel");
        if let ScEvent::OpenRequest {
            via,
            channel,
            from,
            outcome,
        } = event
        {
            let _ = self.notices.send(ScNotice::OpenRequest {
                via: via.clone(),
                channel: channel.clone(),
                from: *from,
                outcome: outcome.clone(),
            });
        }
        match event {
            ScEvent::Joined { channel, .. } => println!(
                "[sidechannel] auto-joined channel: {}",
                crate::terminal::sanitize(channel)
            ),
            ScEvent::OpenRequest {
                channel,
                outcome: OpenOutcome::Accepted { .. },
                ..
            } => println!(
                "[sidechannel] channel request received: {}",
                crate::terminal::sanitize(channel)
            ),
            _ => {}
        }
    }

    /// Hands frames to the network in the order the engine made them: straight to its queue
    /// when it has room and nothing waits, else behind the frames the forwarding task holds.
    fn send(&self, outbound: Outbound) {
        for (key, frame) in outbound {
            let Some(peer) = self
                .keys
                .get(&key)
                .copied()
                .or_else(|| peer_id_of(&key).ok())
            else {
                continue;
            };
            let frame = if self.backlog.load(Ordering::SeqCst) == 0 {
                match self.net.try_sidechannel_send(peer, frame) {
                    Ok(None) => continue,
                    Ok(Some(frame)) => frame,
                    Err(e) => {
                        tracing::debug!(%peer, "sidechannel frame not queued: {e}");
                        continue;
                    }
                }
            } else {
                frame
            };
            self.backlog.fetch_add(1, Ordering::SeqCst);
            if self.outgoing.try_send((peer, frame)).is_err() {
                self.backlog.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(%peer, "sidechannel frame dropped: {OUTGOING_BACKLOG} frames already wait for the network");
            }
        }
    }

    /// Writes the engine's persistent state when it changed.
    fn save(&mut self) {
        let bytes = self.engine.persisted().encode();
        if bytes == self.saved {
            return;
        }
        match write_atomic(&self.state_file, &bytes) {
            Ok(()) => self.saved = bytes,
            Err(e) => tracing::warn!("cannot save the sidechannel state: {e}"),
        }
    }
}

/// Hands the frames that found the network's queue full to the network one by one, keeping
/// their order.
async fn forward(
    net: NetHandle,
    mut frames: mpsc::Receiver<(PeerId, Vec<u8>)>,
    backlog: Arc<AtomicUsize>,
) {
    while let Some((peer, frame)) = frames.recv().await {
        if let Err(e) = net.sidechannel_send(peer, frame).await {
            tracing::debug!(%peer, "sidechannel frame not queued: {e}");
        }
        backlog.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one `/sc_*` terminal command on the service; the text to print.
pub fn terminal(handle: &ScHandle, command: crate::terminal::Command) -> Result<String, String> {
    use crate::terminal::Command as C;
    let stopped = |_: ScStopped| "Sidechannel not initialized.".to_string();
    match command {
        C::ScJoin {
            channel,
            invite,
            welcome,
            owner,
        } => {
            let invite = invite.as_deref().map(parse_invite).transpose()?;
            let welcome = welcome.as_deref().map(parse_welcome).transpose()?;
            let name = channel.clone();
            let outcome = handle
                .attempt_blocking(move |engine, now| {
                    engine.join(&channel, invite, welcome, owner, now)
                })
                .map_err(stopped)?;
            match outcome {
                Ok(JoinOutcome::Member) => Ok(format!("Joined sidechannel: {name}")),
                Ok(JoinOutcome::Relay) => Ok(format!(
                    "Joined sidechannel: {name} (as a relay: no invite, messages stay encrypted)"
                )),
                Err(e) => Err(format!("Join denied: {e}")),
            }
        }
        C::ScSend {
            channel,
            message,
            invite,
        } => {
            let invite = invite.as_deref().map(parse_invite).transpose()?;
            let json = serde_json::to_string(&message).map_err(|e| e.to_string())?;
            let outcome = handle
                .attempt_blocking(move |engine, now| {
                    engine
                        .send(&channel, &json, invite, now)
                        .map(|(_, out)| ((), out))
                })
                .map_err(stopped)?;
            outcome
                .map(|()| String::new())
                .map_err(|e: ScError| format!("Send denied: {e}"))
        }
        C::ScOpen {
            channel,
            via,
            invite,
            welcome,
        } => {
            let invite = invite.as_deref().map(parse_invite).transpose()?;
            let welcome = welcome.as_deref().map(parse_welcome).transpose()?;
            let name = channel.clone();
            let outcome = handle
                .attempt_blocking(move |engine, now| {
                    engine
                        .open(&channel, via.as_deref(), invite, welcome, now)
                        .map(|out| ((), out))
                })
                .map_err(stopped)?;
            outcome
                .map(|()| format!("Requested channel: {name}"))
                .map_err(|e| e.to_string())
        }
        C::ScInvite {
            channel,
            pubkey,
            ttl,
        } => {
            let outcome = handle
                .run_blocking(move |engine, now| {
                    let ttl_ms = ttl.map_or(engine.settings().invite_ttl_ms, |t| t * 1000);
                    (engine.invite(&channel, pubkey, ttl_ms, now), Vec::new())
                })
                .map_err(stopped)?;
            let invite = outcome.map_err(|e| e.to_string())?;
            Ok(format!(
                "Invite for {} on {} (expires {}):\ninvite_b64: {}",
                invite.invitee,
                crate::terminal::sanitize(&invite.channel),
                invite.expires_at,
                invite.to_base64()
            ))
        }
        C::ScRevoke { channel, pubkey } => {
            let outcome = handle
                .attempt_blocking(move |engine, now| {
                    engine.revoke(&channel, pubkey, now).map(|out| ((), out))
                })
                .map_err(stopped)?;
            outcome
                .map(|()| format!("Revoked {pubkey}: the channel key rotated."))
                .map_err(|e| e.to_string())
        }
        C::ScWelcome { channel, text } => {
            let outcome = handle
                .attempt_blocking(move |engine, now| engine.welcome(&channel, &text, None, now))
                .map_err(stopped)?;
            let welcome = outcome.map_err(|e| e.to_string())?;
            Ok(format!("welcome_b64: {}", welcome.to_base64()))
        }
        C::ScLeave { channel } => {
            let name = channel.clone();
            let outcome = handle
                .attempt_blocking(move |engine, now| {
                    engine.leave(&channel, now).map(|out| ((), out))
                })
                .map_err(stopped)?;
            outcome
                .map(|()| format!("Left sidechannel: {name}"))
                .map_err(|e| e.to_string())
        }
        C::ScStats => {
            let stats = handle
                .run_blocking(|engine, _| (engine.stats(), Vec::new()))
                .map_err(stopped)?;
            Ok(render_stats(&stats))
        }
        other => Err(format!("{} is not a sidechannel command", other.name())),
    }
}

/// `/sc_stats`.
pub fn render_stats(stats: &Stats) -> String {
    let mut out = format!(
        "Sidechannels: {} neighbours, sent {}, received {}, delivered {}, relayed {}\n",
        stats.neighbours, stats.sent, stats.received, stats.delivered, stats.relayed
    );
    for c in &stats.channels {
        let yes = |b: bool| if b { "yes" } else { "no" };
        out.push_str(&format!(
            "  {}: {:?}, neighbours {}, welcomed {}, owner {}, invite-only {}, owner-only {}, members {}, epoch {}\n",
            crate::terminal::sanitize(&c.name),
            c.role,
            c.neighbours,
            yes(c.welcomed),
            c.owner.map_or("-".to_string(), |o| o.to_hex()),
            yes(c.invite_only),
            yes(c.owner_only),
            c.members,
            c.epoch
        ));
    }
    if stats.drops.is_empty() {
        out.push_str("Drops: none");
    } else {
        let drops: Vec<String> = stats
            .drops
            .iter()
            .map(|(reason, n)| format!("{reason:?} {n}"))
            .collect();
        out.push_str(&format!("Drops: {}", drops.join(", ")));
    }
    out
}
