//! The swarm task: builds the behaviours, then routes their events and the handle's commands.
//!
//! Everything mutable lives in [`Task`], owned by one tokio task; handles talk to it through a
//! bounded command channel and the node hears from it through a bounded event channel, so
//! nothing here is shared or locked.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::bytes::Bytes;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, connection_limits, identify, kad, mdns,
    noise, ping, tcp, yamux,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn};

use super::identity::{libp2p_keypair, public_key_of};
use super::queue::{Outbound, PeerQueue, QueueLimits};
use super::sidechannel;
use super::wire::{
    Frame, FrameCodec, FrameKind, LedgerRequest, LedgerResponse, identify_version, protocol_id,
    sidechannel_protocol_id,
};
use super::{NetConfig, NetError, NetEvent, NetHandle, NetStats};
use crate::codec;
use crate::crypto::PublicKey;
use crate::ledger::Message;

/// How long a refused peer is not dialed again on discovery (explicit dials still go through).
const REFUSAL_MEMORY: Duration = Duration::from_secs(600);
/// How long a refused peer's connection is kept before it is closed, so that the peer gets our
/// identify information too and can report the refusal with its own clear message.
const REFUSAL_GRACE: Duration = Duration::from_millis(200);
/// How often timers (identify deadlines, bootstrap redials) are checked.
const TICK: Duration = Duration::from_millis(500);
/// Known peers dialed at start, at most.
const MAX_KNOWN_PEERS: usize = 32;
/// Listen addresses of a peer reported to the node, at most.
const MAX_ANNOUNCED_ADDRS: usize = 8;
/// Bytes of a response frame besides its messages (variant name, array header).
const RESPONSE_OVERHEAD: usize = 32;

/// Where the answer to a request goes (never [`LedgerResponse::Refused`]: that is an error).
type Reply = oneshot::Sender<Result<LedgerResponse, NetError>>;
/// Where the outcome of a dial goes.
type DialReply = oneshot::Sender<Result<PeerId, NetError>>;
/// A request from a peer waiting for the node's answer (`None`: no answer in time).
type PendingAnswer = BoxFuture<'static, (PeerId, ResponseChannel<Bytes>, Option<LedgerResponse>)>;

/// What a [`NetHandle`] asks of the swarm task.
#[derive(Debug)]
pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    ConnectedPeers(oneshot::Sender<Vec<(PeerId, PublicKey)>>),
    Stats(oneshot::Sender<NetStats>),
    Dial {
        addr: Multiaddr,
        reply: DialReply,
    },
    Send {
        peer: PeerId,
        frame: Bytes,
        reply: Reply,
    },
    Push {
        frame: Bytes,
        reply: oneshot::Sender<usize>,
    },
    ScSend {
        peer: PeerId,
        frame: Bytes,
    },
    Disconnect(PeerId),
    Shutdown(oneshot::Sender<()>),
}

/// The node's behaviours, one per protocol.
#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    ledger: request_response::Behaviour<FrameCodec>,
    sidechannel: sidechannel::Behaviour,
}

/// A bootstrap peer as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A multiaddr (or a resolved `ip:port`).
    Addr(Multiaddr),
    /// A host name to resolve at each attempt.
    Host { host: String, port: u16 },
}

/// A bootstrap peer and what is known about it.
#[derive(Debug)]
struct Bootstrap {
    input: String,
    target: Target,
    /// Learned by dialing.
    peer: Option<PeerId>,
    dialing: bool,
    last_attempt: Option<Instant>,
}

/// Parses a bootstrap entry: a multiaddr (`/ip4/…/tcp/…[/p2p/…]`) or `host:port`
/// (`[v6]:port` for IPv6 literals).
fn parse_bootstrap(input: &str) -> Result<Target, NetError> {
    let bad = |reason: String| NetError::Address {
        input: input.to_string(),
        reason,
    };
    let text = input.trim();
    if text.starts_with('/') {
        return text
            .parse::<Multiaddr>()
            .map(Target::Addr)
            .map_err(|e| bad(format!("not a multiaddr: {e}")));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port or a multiaddr".into()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad(format!("'{port}' is not a port number")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("the host is empty".into()));
    }
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => Target::Addr(tcp_addr(SocketAddr::new(ip, port))),
        Err(_) => Target::Host {
            host: host.to_string(),
            port,
        },
    })
}

/// `/ip4|ip6/<ip>/tcp/<port>`.
fn tcp_addr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(match addr.ip() {
            IpAddr::V4(ip) => Protocol::Ip4(ip),
            IpAddr::V6(ip) => Protocol::Ip6(ip),
        })
        .with(Protocol::Tcp(addr.port()))
}

/// A dial in progress.
#[derive(Debug)]
struct DialWaiter {
    addr: String,
    reply: Option<DialReply>,
    bootstrap: Option<usize>,
}

/// A connected, identified peer.
#[derive(Debug)]
struct PeerState {
    public: PublicKey,
    queue: PeerQueue<Reply>,
    /// Sidechannel frames to it.
    sc_queue: ScQueue,
}

/// Settings the task consults.
#[derive(Debug, Clone)]
struct Settings {
    identify_version: String,
    ledger_protocol: StreamProtocol,
    kad_protocol: StreamProtocol,
    queue: QueueLimits,
    sc_queue: QueueLimits,
    dial_discovered: bool,
    max_frame: usize,
    max_connections: usize,
    identify_timeout: Duration,
    bootstrap_retry: Duration,
    request_timeout: Duration,
}

/// The state of the swarm task.
struct Task {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    settings: Settings,
    listen_addrs: Vec<Multiaddr>,
    /// Identified, compatible peers.
    peers: HashMap<PeerId, PeerState>,
    /// Connected peers that have not identified themselves yet, since when.
    handshakes: HashMap<PeerId, Instant>,
    /// Recently refused peers (not dialed again on discovery).
    refused: HashMap<PeerId, Instant>,
    /// Refused peers to disconnect once [`REFUSAL_GRACE`] has passed.
    closing: Vec<(PeerId, Instant)>,
    dials: HashMap<ConnectionId, DialWaiter>,
    ready_waiters: HashMap<PeerId, Vec<DialReply>>,
    outbound: HashMap<OutboundRequestId, (PeerId, Option<Reply>)>,
    /// Sidechannel frames for peers connected but not identified yet.
    sc_early: HashMap<PeerId, ScQueue>,
    answers: FuturesUnordered<PendingAnswer>,
    bootstrap: Vec<Bootstrap>,
    resolved_tx: mpsc::UnboundedSender<(usize, Result<Vec<SocketAddr>, String>)>,
    resolved_rx: mpsc::UnboundedReceiver<(usize, Result<Vec<SocketAddr>, String>)>,
    stats: NetStats,
}

fn protocol(name: &str, version: u32) -> Result<StreamProtocol, NetError> {
    StreamProtocol::try_from_owned(protocol_id(name, version))
        .map_err(|e| NetError::Setup(format!("protocol id: {e}")))
}

/// Builds the swarm and spawns its task (see [`super::Net::start`]).
pub(crate) fn start(config: NetConfig) -> Result<(NetHandle, mpsc::Receiver<NetEvent>), NetError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetError::NoRuntime)?;
    let bootstrap = config
        .bootstrap
        .iter()
        .map(|input| {
            parse_bootstrap(input).map(|target| Bootstrap {
                input: input.clone(),
                target,
                peer: None,
                dialing: false,
                last_attempt: None,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let key = libp2p_keypair(&config.keypair)?;
    let local = key.public().to_peer_id();
    let limits = config.limits;
    let settings = Settings {
        identify_version: identify_version(config.protocol_version),
        ledger_protocol: protocol("ledger", config.protocol_version)?,
        kad_protocol: protocol("kad", config.protocol_version)?,
        queue: QueueLimits {
            max_in_flight: limits.max_in_flight.max(1),
            max_queued: limits.max_queued,
            max_queued_bytes: limits.max_queued_bytes,
        },
        sc_queue: QueueLimits {
            max_in_flight: 1,
            max_queued: limits.max_queued * 16,
            max_queued_bytes: limits.max_queued_bytes,
        },
        dial_discovered: config.dial_discovered,
        max_frame: limits.max_frame_bytes,
        max_connections: limits.max_connections as usize,
        identify_timeout: config.identify_timeout,
        bootstrap_retry: config.bootstrap_retry,
        request_timeout: config.request_timeout,
    };

    let mut kad_config = kad::Config::new(settings.kad_protocol.clone());
    kad_config
        .set_query_timeout(Duration::from_secs(30))
        .set_periodic_bootstrap_interval(Some(Duration::from_secs(120)));
    let mut kad =
        kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), kad_config);
    // Loopback and LAN nodes have no confirmed external address; serve the DHT regardless.
    kad.set_mode(Some(kad::Mode::Server));
    let mdns = if config.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), local)
                .map_err(|e| NetError::Setup(format!("mDNS: {e}")))?,
        )
    } else {
        None
    };
    let behaviour = Behaviour {
        limits: connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(limits.max_connections))
                .with_max_established_per_peer(Some(2)),
        ),
        identify: identify::Behaviour::new(
            identify::Config::new(settings.identify_version.clone(), key.public())
                .with_agent_version(format!("trac-host/{}", env!("CARGO_PKG_VERSION"))),
        ),
        ping: ping::Behaviour::new(ping::Config::new()),
        // Without dialing what is discovered, the DHT stays off: its lookups would connect to
        // the peers they find.
        kad: Toggle::from(config.dial_discovered.then_some(kad)),
        mdns: Toggle::from(mdns),
        ledger: request_response::Behaviour::with_codec(
            FrameCodec {
                max_frame: limits.max_frame_bytes,
            },
            [(settings.ledger_protocol.clone(), ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(limits.max_streams_per_connection.max(1)),
        ),
        sidechannel: sidechannel::Behaviour::new(
            StreamProtocol::try_from_owned(sidechannel_protocol_id(config.protocol_version))
                .map_err(|e| NetError::Setup(format!("protocol id: {e}")))?,
            config.sidechannel.clone(),
            limits.max_sidechannel_frame_bytes,
        ),
    };

    let idle_timeout = config.idle_timeout;
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Setup(format!("noise: {e}")))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| NetError::Setup(format!("behaviour: {e:?}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    info!(
        peer = %local,
        key = %config.keypair.public(),
        version = %settings.identify_version,
        "network started"
    );

    let (command_tx, command_rx) = mpsc::channel(256);
    let (event_tx, event_rx) = mpsc::channel(limits.event_capacity.max(1));
    let (resolved_tx, resolved_rx) = mpsc::unbounded_channel();
    let mut task = Task {
        swarm,
        commands: command_rx,
        events: event_tx,
        settings,
        listen_addrs: Vec::new(),
        peers: HashMap::new(),
        handshakes: HashMap::new(),
        refused: HashMap::new(),
        closing: Vec::new(),
        dials: HashMap::new(),
        ready_waiters: HashMap::new(),
        outbound: HashMap::new(),
        sc_early: HashMap::new(),
        answers: FuturesUnordered::new(),
        bootstrap,
        resolved_tx,
        resolved_rx,
        stats: NetStats::default(),
    };
    // Peers known from earlier runs: dialed once (failures are expected and quiet).
    for addr in config.known_peers.iter().take(MAX_KNOWN_PEERS) {
        task.dial(addr.to_string(), addr.clone(), None, None);
    }
    let join = runtime.spawn(task.run());
    let handle = NetHandle {
        commands: command_tx,
        peer_id: local,
        public: config.keypair.public(),
        max_frame: limits.max_frame_bytes,
        max_sidechannel_frame: limits.max_sidechannel_frame_bytes,
        task: Arc::new(Mutex::new(Some(join))),
    };
    Ok((handle, event_rx))
}

impl Task {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        self.close().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.command(command),
                    None => {
                        // Every handle is gone.
                        self.close().await;
                        return;
                    }
                },
                event = self.swarm.select_next_some() => self.swarm_event(event),
                Some((peer, channel, answer)) = self.answers.next(),
                    if !self.answers.is_empty() =>
                {
                    self.answer(peer, channel, answer);
                }
                Some((index, resolved)) = self.resolved_rx.recv() => self.resolved(index, resolved),
                _ = tick.tick() => self.tick(),
            }
        }
    }

    /// Closes every connection (waiting briefly so peers see a clean close) and stops.
    async fn close(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let deadline = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(deadline);
        while self.swarm.network_info().num_peers() > 0 {
            tokio::select! {
                _ = &mut deadline => break,
                event = self.swarm.select_next_some() => {
                    if let SwarmEvent::ConnectionClosed {
                        peer_id,
                        num_established: 0,
                        ..
                    } = event
                    {
                        self.disconnected(peer_id);
                    }
                }
            }
        }
        info!(peer = %self.swarm.local_peer_id(), "network stopped");
    }

    /// Sends an event to the node without ever blocking the swarm; counts what is dropped.
    fn emit(&mut self, event: NetEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(event)) => {
                self.stats.dropped_events += 1;
                warn!(
                    event = event_name(&event),
                    "the node is not reading network events fast enough; event dropped"
                );
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::ConnectedPeers(reply) => {
                let peers = self.peers.iter().map(|(id, s)| (*id, s.public)).collect();
                let _ = reply.send(peers);
            }
            Command::Stats(reply) => {
                let mut stats = self.stats;
                stats.dropped_events += self.swarm.behaviour().sidechannel.dropped();
                let _ = reply.send(stats);
            }
            Command::Dial { addr, reply } => self.dial(addr.to_string(), addr, Some(reply), None),
            Command::Send { peer, frame, reply } => {
                let Some(state) = self.peers.get_mut(&peer) else {
                    let _ = reply.send(Err(NetError::NotConnected(peer)));
                    return;
                };
                match state.queue.request(frame, reply) {
                    Ok(()) => self.pump(peer),
                    Err(full) => {
                        warn!(%peer, queued = full.queued, "outbound queue full; request refused");
                        let _ = full.reply.send(Err(NetError::QueueFull {
                            peer,
                            queued: full.queued,
                            bytes: full.bytes,
                        }));
                    }
                }
            }
            Command::Push { frame, reply } => {
                let peers: Vec<PeerId> = self.peers.keys().copied().collect();
                for peer in &peers {
                    if let Some(state) = self.peers.get_mut(peer) {
                        let dropped = state.queue.push(frame.clone());
                        if dropped > 0 {
                            self.stats.dropped_pushes += dropped;
                            warn!(%peer, dropped, "peer is slow: oldest queued pushes dropped");
                        }
                    }
                    self.pump(*peer);
                }
                let _ = reply.send(peers.len());
            }
            Command::ScSend { peer, frame } => {
                let Some(state) = self.peers.get_mut(&peer) else {
                    // Connected but not identified yet: held until it is.
                    if self.swarm.is_connected(&peer) {
                        let limits = self.settings.sc_queue;
                        self.sc_early.entry(peer).or_default().push(frame, &limits);
                    }
                    return;
                };
                let dropped = state.sc_queue.push(frame, &self.settings.sc_queue);
                if dropped > 0 {
                    self.stats.dropped_pushes += dropped;
                    debug!(%peer, dropped, "sidechannel peer is slow: oldest frames dropped");
                }
                self.pump(peer);
            }
            Command::Disconnect(peer) => {
                warn!(%peer, "disconnecting the peer");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    /// Starts a dial; `reply` hears when the peer has identified itself.
    fn dial(
        &mut self,
        label: String,
        addr: Multiaddr,
        reply: Option<DialReply>,
        bootstrap: Option<usize>,
    ) {
        let opts = match addr.iter().last() {
            Some(Protocol::P2p(peer)) if self.peers.contains_key(&peer) => {
                // Already connected and identified.
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(peer));
                }
                return;
            }
            Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build(),
            _ => DialOpts::unknown_peer_id().address(addr).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                debug!(addr = %label, "dialing");
                self.dials.insert(
                    id,
                    DialWaiter {
                        addr: label,
                        reply,
                        bootstrap,
                    },
                );
            }
            Err(e) => {
                warn!(addr = %label, "cannot dial: {e}");
                if let Some(i) = bootstrap {
                    self.bootstrap[i].dialing = false;
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Err(NetError::Dial {
                        addr: label,
                        reason: e.to_string(),
                    }));
                }
            }
        }
    }

    /// Puts queued frames for `peer` on the wire while its windows have room.
    fn pump(&mut self, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some((batch, retried)) = state.sc_queue.next_batch(SIDECHANNEL_BATCH)
            && !self
                .swarm
                .behaviour_mut()
                .sidechannel
                .send(peer, batch, retried)
        {
            // No connection to carry it (the peer is leaving): dropped with the peer.
            state.sc_queue.in_flight = false;
            debug!(%peer, "sidechannel batch dropped: no connection to the peer");
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        while let Some(item) = state.queue.next_ready() {
            let (frame, reply) = match item {
                Outbound::Push(frame) => (frame, None),
                Outbound::Request(frame, reply) => (frame, Some(reply)),
            };
            let id = self
                .swarm
                .behaviour_mut()
                .ledger
                .send_request(&peer, Frame::Bytes(frame));
            self.outbound.insert(id, (peer, reply));
        }
    }

    fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen_addrs.push(address.clone());
                self.emit(NetEvent::Listening(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                warn!(?addresses, ?reason, "listener closed");
                self.listen_addrs.retain(|a| !addresses.contains(a));
            }
            SwarmEvent::ListenerError { error, .. } => warn!("listener error: {error}"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                debug!(
                    peer = %peer_id,
                    addr = %endpoint.get_remote_address(),
                    "connection established"
                );
                self.connected(peer_id, connection_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, ?cause, "connection closed");
                if num_established == 0 {
                    self.disconnected(peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                let Some(waiter) = self.dials.remove(&connection_id) else {
                    debug!("outgoing connection failed: {error}");
                    return;
                };
                if let Some(i) = waiter.bootstrap {
                    self.bootstrap[i].dialing = false;
                    warn!(
                        addr = %waiter.addr,
                        retry = ?self.settings.bootstrap_retry,
                        "bootstrap peer unreachable: {error}"
                    );
                } else {
                    debug!(addr = %waiter.addr, "dial failed: {error}");
                }
                if let Some(reply) = waiter.reply {
                    let _ = reply.send(Err(NetError::Dial {
                        addr: waiter.addr,
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                debug!("incoming connection failed: {error}");
            }
            SwarmEvent::Behaviour(event) => self.behaviour_event(event),
            _ => {}
        }
    }

    fn connected(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(waiter) = self.dials.remove(&connection) {
            if let Some(i) = waiter.bootstrap {
                self.bootstrap[i].peer = Some(peer);
                self.bootstrap[i].dialing = false;
            }
            if let Some(reply) = waiter.reply {
                if self.peers.contains_key(&peer) {
                    let _ = reply.send(Ok(peer));
                } else {
                    self.ready_waiters.entry(peer).or_default().push(reply);
                }
            }
        }
        if !self.peers.contains_key(&peer) {
            self.handshakes.entry(peer).or_insert_with(Instant::now);
        }
    }

    fn disconnected(&mut self, peer: PeerId) {
        self.handshakes.remove(&peer);
        self.sc_early.remove(&peer);
        for reply in self.ready_waiters.remove(&peer).unwrap_or_default() {
            let _ = reply.send(Err(NetError::Dial {
                addr: peer.to_string(),
                reason: "the connection closed before the peer identified itself".into(),
            }));
        }
        if let Some(mut state) = self.peers.remove(&peer) {
            for reply in state.queue.drain_requests() {
                let _ = reply.send(Err(NetError::NotConnected(peer)));
            }
            info!(%peer, "peer disconnected");
            self.emit(NetEvent::PeerDisconnected(peer));
            self.swarm
                .behaviour_mut()
                .sidechannel
                .peer_disconnected(peer, state.public);
        }
    }

    fn behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Limits(never) => match never {},
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.identified(peer_id, info);
            }
            BehaviourEvent::Identify(identify::Event::Error { peer_id, error, .. }) => {
                debug!(peer = %peer_id, "identify failed: {error}");
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(event) => trace!(?event, "ping"),
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                addresses,
                ..
            }) => {
                debug!(%peer, "DHT routing table: new peer");
                self.discovered(peer, addresses.into_vec());
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::Bootstrap(result),
                ..
            }) => match result {
                Ok(ok) => debug!(remaining = ok.num_remaining, "DHT bootstrap progressed"),
                Err(e) => debug!("DHT bootstrap: {e:?}"),
            },
            BehaviourEvent::Kad(event) => trace!(?event, "kad"),
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    debug!(%peer, %addr, "mDNS: discovered");
                    self.discovered(peer, vec![addr]);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            BehaviourEvent::Ledger(event) => self.ledger_event(event),
            BehaviourEvent::Sidechannel(event) => self.sidechannel_event(event),
        }
    }

    /// Dials a peer found through the DHT or mDNS, unless known, refused or over the limit.
    fn discovered(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) {
        if !self.settings.dial_discovered
            || peer == *self.swarm.local_peer_id()
            || addresses.is_empty()
            || self.swarm.is_connected(&peer)
            || self.refused.contains_key(&peer)
            || self.swarm.network_info().num_peers() >= self.settings.max_connections
        {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addresses)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, "not dialing discovered peer: {e}");
        }
    }

    /// Why a peer's identify information makes it incompatible, if it does.
    fn incompatibility(&self, info: &identify::Info) -> Option<String> {
        let ours = &self.settings.identify_version;
        if &info.protocol_version != ours {
            return Some(format!(
                "peer speaks protocol version '{}', this node speaks '{ours}'; \
                 both must run the same protocol version (upgrade the older node)",
                info.protocol_version
            ));
        }
        if !info.protocols.contains(&self.settings.ledger_protocol) {
            let offered: Vec<String> = info
                .protocols
                .iter()
                .filter(|p| p.as_ref().starts_with("/trac/"))
                .map(ToString::to_string)
                .collect();
            return Some(format!(
                "peer does not offer {} (its trac protocols: {})",
                self.settings.ledger_protocol,
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            ));
        }
        None
    }

    fn identified(&mut self, peer: PeerId, info: identify::Info) {
        if let Some(reason) = self.incompatibility(&info) {
            self.refuse(peer, reason);
            return;
        }
        let Some(public) = public_key_of(&peer) else {
            self.refuse(peer, "its peer id is not an ed25519 key".into());
            return;
        };
        if info.protocols.contains(&self.settings.kad_protocol)
            && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
        {
            for addr in info.listen_addrs.iter().take(16) {
                kad.add_address(&peer, addr.clone());
            }
        }
        if self.peers.contains_key(&peer) || !self.swarm.is_connected(&peer) {
            return;
        }
        self.handshakes.remove(&peer);
        self.peers.insert(
            peer,
            PeerState {
                public,
                queue: PeerQueue::new(self.settings.queue),
                sc_queue: self.sc_early.remove(&peer).unwrap_or_default(),
            },
        );
        info!(%peer, key = %public, agent = %info.agent_version, "peer connected");
        for reply in self.ready_waiters.remove(&peer).unwrap_or_default() {
            let _ = reply.send(Ok(peer));
        }
        let addrs: Vec<Multiaddr> = info
            .listen_addrs
            .into_iter()
            .filter(is_dialable)
            .take(MAX_ANNOUNCED_ADDRS)
            .collect();
        self.emit(NetEvent::PeerConnected(peer, public, addrs));
        self.swarm
            .behaviour_mut()
            .sidechannel
            .peer_connected(peer, public);
        // Sidechannel frames held while it identified itself go out now.
        self.pump(peer);
        if self.bootstrap.iter().any(|b| b.peer == Some(peer))
            && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
        {
            // A bootstrap peer is in: look ourselves up to fill the routing table.
            if let Err(e) = kad.bootstrap() {
                debug!("DHT bootstrap not started: {e}");
            }
        }
    }

    /// Refuses a peer: tells the node and any dialer why, and disconnects.
    fn refuse(&mut self, peer: PeerId, reason: String) {
        warn!(%peer, %reason, "peer refused");
        self.stats.refused_peers += 1;
        self.refused.insert(peer, Instant::now());
        self.handshakes.remove(&peer);
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            kad.remove_peer(&peer);
        }
        for reply in self.ready_waiters.remove(&peer).unwrap_or_default() {
            let _ = reply.send(Err(NetError::Refused {
                peer,
                reason: reason.clone(),
            }));
        }
        if let Some(mut state) = self.peers.remove(&peer) {
            for reply in state.queue.drain_requests() {
                let _ = reply.send(Err(NetError::NotConnected(peer)));
            }
            self.emit(NetEvent::PeerDisconnected(peer));
            self.swarm
                .behaviour_mut()
                .sidechannel
                .peer_disconnected(peer, state.public);
        }
        self.emit(NetEvent::Refused { peer, reason });
        self.closing.push((peer, Instant::now()));
    }

    /// An inbound frame was refused (too large, malformed): counted and reported, the
    /// connection stays.
    fn frame_refused(&mut self, peer: PeerId, reason: String) {
        warn!(%peer, %reason, "ledger frame refused");
        self.stats.refused_frames += 1;
        self.emit(NetEvent::Refused { peer, reason });
    }

    fn ledger_event(&mut self, event: request_response::Event<Frame, Bytes>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.inbound(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.response(peer, request_id, Ok(response)),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => self.response(peer, request_id, Err(error.to_string())),
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, "inbound ledger request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn sidechannel_event(&mut self, event: sidechannel::Event) {
        match event {
            sidechannel::Event::Ready(peer) => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.sc_queue.in_flight = false;
                }
                self.pump(peer);
            }
            sidechannel::Event::Unsent { peer, batches } => {
                // Sent once more on another connection, if the peer still has one.
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.sc_queue.retry.extend(batches);
                }
                self.pump(peer);
            }
            sidechannel::Event::Refused { peer, size, max } => {
                let reason = format!(
                    "1 sidechannel frame ({size} bytes) above {max} bytes refused; \
                     its stream is closed"
                );
                warn!(%peer, %reason, "sidechannel frame refused");
                self.stats.refused_frames += 1;
                self.emit(NetEvent::Refused { peer, reason });
            }
        }
    }

    fn respond(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<Bytes>,
        response: &LedgerResponse,
    ) {
        let frame = Bytes::from(codec::encode(response));
        if self
            .swarm
            .behaviour_mut()
            .ledger
            .send_response(channel, frame)
            .is_err()
        {
            debug!(%peer, "response not sent: the request timed out or the connection closed");
        }
    }

    fn inbound(&mut self, peer: PeerId, frame: Frame, channel: ResponseChannel<Bytes>) {
        if self.closing.iter().any(|(p, _)| *p == peer) {
            let refused = LedgerResponse::Refused("this node refused the connection".into());
            self.respond(peer, channel, &refused);
            return;
        }
        let frame = match frame {
            Frame::Bytes(frame) => frame,
            Frame::TooLarge(too_large) => {
                let reason = format!("ledger frame refused: {too_large}");
                self.frame_refused(peer, reason.clone());
                self.respond(peer, channel, &LedgerResponse::Refused(reason));
                return;
            }
        };
        let request: LedgerRequest = match codec::decode(&frame) {
            Ok(request) => request,
            Err(e) => {
                let reason = format!("malformed ledger frame of {} bytes: {e}", frame.len());
                self.frame_refused(peer, reason.clone());
                self.respond(peer, channel, &LedgerResponse::Refused(reason));
                return;
            }
        };
        let LedgerRequest {
            network,
            kind,
            messages,
            call,
        } = request;
        trace!(%peer, %network, ?kind, count = messages.len(), "ledger frame");
        match kind {
            FrameKind::Push => {
                self.respond(peer, channel, &LedgerResponse::Messages(Vec::new()));
                self.emit(NetEvent::Pushed {
                    peer,
                    network,
                    messages,
                });
            }
            FrameKind::Request => {
                let (reply, answer) = oneshot::channel();
                let event = NetEvent::Request {
                    peer,
                    network,
                    messages,
                    reply,
                };
                self.await_node(peer, channel, event, answer, LedgerResponse::Messages);
            }
            FrameKind::Call => {
                let (reply, answer) = oneshot::channel();
                let event = NetEvent::Call {
                    peer,
                    network,
                    body: call.into_vec(),
                    reply,
                };
                self.await_node(peer, channel, event, answer, |body| {
                    LedgerResponse::Called(serde_bytes::ByteBuf::from(body))
                });
            }
        }
    }

    /// Hands `event` to the node and keeps `channel` until the node's answer comes (wrapped
    /// by `wrap`) or the request timeout passes; a node that cannot take the event is busy.
    fn await_node<T: Send + 'static>(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<Bytes>,
        event: NetEvent,
        answer: oneshot::Receiver<T>,
        wrap: fn(T) -> LedgerResponse,
    ) {
        if self.emit(event) {
            // The wait is bounded: a node that neither answers nor drops `reply` must not pin
            // the entry here forever.
            let timeout = self.settings.request_timeout;
            self.answers.push(Box::pin(async move {
                let answer = tokio::time::timeout(timeout, answer).await;
                (peer, channel, answer.ok().and_then(Result::ok).map(wrap))
            }));
        } else {
            let busy = LedgerResponse::Refused("the node is busy; retry later".into());
            self.respond(peer, channel, &busy);
        }
    }

    /// The node answered a peer's request.
    fn answer(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<Bytes>,
        answer: Option<LedgerResponse>,
    ) {
        let budget = self.settings.max_frame.saturating_sub(RESPONSE_OVERHEAD);
        let response = match answer {
            Some(LedgerResponse::Messages(messages)) => {
                LedgerResponse::Messages(self.fit(messages))
            }
            Some(LedgerResponse::Called(body)) if body.len() > budget => LedgerResponse::Refused(
                format!("the answer of {} bytes exceeds the frame limit", body.len()),
            ),
            Some(other) => other,
            None => LedgerResponse::Refused("the node did not answer the request".into()),
        };
        self.respond(peer, channel, &response);
    }

    /// Cuts an answer to the messages that fit in one frame (the peer asks again for the rest).
    fn fit(&self, mut messages: Vec<Message>) -> Vec<Message> {
        let budget = self.settings.max_frame.saturating_sub(RESPONSE_OVERHEAD);
        if codec::encode(&messages).len() <= budget {
            return messages;
        }
        let mut total = 0usize;
        let mut keep = 0usize;
        for message in &messages {
            total += codec::encode(message).len();
            if total > budget {
                break;
            }
            keep += 1;
        }
        warn!(
            kept = keep,
            dropped = messages.len() - keep,
            "answer larger than a frame: cut to what fits"
        );
        messages.truncate(keep);
        messages
    }

    /// A request or push of ours got its answer or failed.
    fn response(&mut self, peer: PeerId, id: OutboundRequestId, result: Result<Bytes, String>) {
        let Some((_, reply)) = self.outbound.remove(&id) else {
            return;
        };
        if let Some(state) = self.peers.get_mut(&peer) {
            state.queue.finished();
        }
        let outcome = match result {
            Ok(frame) => match codec::decode::<LedgerResponse>(&frame) {
                Ok(LedgerResponse::Refused(reason)) => Err(NetError::Remote { peer, reason }),
                Ok(response) => Ok(response),
                Err(e) => {
                    let reason = format!("malformed ledger response: {e}");
                    self.frame_refused(peer, reason.clone());
                    Err(NetError::Request { peer, reason })
                }
            },
            Err(reason) => Err(NetError::Request { peer, reason }),
        };
        match reply {
            Some(reply) => {
                let _ = reply.send(outcome);
            }
            None => {
                if let Err(e) = outcome {
                    debug!(%peer, "push not delivered: {e}");
                }
            }
        }
        self.pump(peer);
    }

    /// Timers: identify deadlines, forgotten refusals, bootstrap (re)dials.
    fn tick(&mut self) {
        let now = Instant::now();
        let timeout = self.settings.identify_timeout;
        let late: Vec<PeerId> = self
            .handshakes
            .iter()
            .filter(|(_, since)| now.duration_since(**since) > timeout)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in late {
            self.refuse(
                peer,
                format!("peer did not identify itself within {timeout:?}"),
            );
        }
        self.refused
            .retain(|_, since| now.duration_since(*since) < REFUSAL_MEMORY);
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.closing)
            .into_iter()
            .partition(|(_, since)| now.duration_since(*since) >= REFUSAL_GRACE);
        self.closing = waiting;
        for (peer, _) in due {
            let _ = self.swarm.disconnect_peer_id(peer);
        }

        for i in 0..self.bootstrap.len() {
            let entry = &self.bootstrap[i];
            let connected = entry.peer.is_some_and(|p| self.swarm.is_connected(&p));
            let recent = entry
                .last_attempt
                .is_some_and(|t| now.duration_since(t) < self.settings.bootstrap_retry);
            if entry.dialing || connected || recent {
                continue;
            }
            let entry = &mut self.bootstrap[i];
            entry.last_attempt = Some(now);
            entry.dialing = true;
            match entry.target.clone() {
                Target::Addr(addr) => {
                    let label = entry.input.clone();
                    self.dial(label, addr, None, Some(i));
                }
                Target::Host { host, port } => {
                    let tx = self.resolved_tx.clone();
                    tokio::spawn(async move {
                        let resolved = tokio::net::lookup_host((host.as_str(), port))
                            .await
                            .map(|addrs| addrs.collect::<Vec<_>>())
                            .map_err(|e| e.to_string());
                        let _ = tx.send((i, resolved));
                    });
                }
            }
        }
    }

    /// A bootstrap host name resolved (or did not).
    fn resolved(&mut self, index: usize, resolved: Result<Vec<SocketAddr>, String>) {
        let Some(entry) = self.bootstrap.get_mut(index) else {
            return;
        };
        let addrs = resolved.unwrap_or_else(|e| {
            warn!(input = %entry.input, "cannot resolve bootstrap peer: {e}");
            Vec::new()
        });
        // Prefer IPv4 (what nodes listen on by default).
        let Some(addr) = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
        else {
            entry.dialing = false;
            return;
        };
        let label = entry.input.clone();
        self.dial(label, tcp_addr(addr), None, Some(index));
    }
}

/// Sidechannel frames are packed into batches of at most this many bytes, one write on the
/// stream each; a larger frame travels alone.
const SIDECHANNEL_BATCH: usize = 64 << 10;

/// The sidechannel frames waiting for one peer. Frames go out in order, in batches (one batch
/// handed to the connection at a time: under load each batch carries everything queued since
/// the last).
#[derive(Debug, Default)]
struct ScQueue {
    pending: std::collections::VecDeque<Bytes>,
    pending_bytes: usize,
    in_flight: bool,
    /// Batches whose connection closed before they were acknowledged, sent again before
    /// anything else (with whether they are already a second attempt).
    retry: std::collections::VecDeque<(Bytes, bool)>,
}

impl ScQueue {
    /// Queues a frame; when over the limits the oldest frames are dropped (returns how many).
    fn push(&mut self, frame: Bytes, limits: &QueueLimits) -> u64 {
        self.pending_bytes += frame.len();
        self.pending.push_back(frame);
        let mut dropped = 0;
        while self.pending.len() > 1
            && (self.pending.len() > limits.max_queued
                || self.pending_bytes > limits.max_queued_bytes)
        {
            if let Some(old) = self.pending.pop_front() {
                self.pending_bytes -= old.len();
                dropped += 1;
            }
        }
        dropped
    }

    /// The next batch (frames as `u32` big-endian length + bytes, up to `limit` bytes) when
    /// none is on the wire, and whether it is a failed batch sent again.
    fn next_batch(&mut self, limit: usize) -> Option<(Bytes, bool)> {
        if self.in_flight {
            return None;
        }
        if let Some(retry) = self.retry.pop_front() {
            self.in_flight = true;
            return Some(retry);
        }
        if self.pending.is_empty() {
            return None;
        }
        let mut batch = Vec::new();
        while let Some(frame) = self.pending.front() {
            if !batch.is_empty() && batch.len() + 4 + frame.len() > limit {
                break;
            }
            let Some(frame) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= frame.len();
            batch.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            batch.extend_from_slice(&frame);
        }
        self.in_flight = true;
        Some((Bytes::from(batch), false))
    }
}

/// Whether an announced listen address can be dialed back (not an unspecified IP).
fn is_dialable(addr: &Multiaddr) -> bool {
    addr.iter().all(|p| match p {
        Protocol::Ip4(ip) => !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_unspecified(),
        _ => true,
    })
}

fn event_name(event: &NetEvent) -> &'static str {
    match event {
        NetEvent::Listening(_) => "listening",
        NetEvent::PeerConnected(..) => "peer-connected",
        NetEvent::PeerDisconnected(_) => "peer-disconnected",
        NetEvent::Request { .. } => "request",
        NetEvent::Call { .. } => "call",
        NetEvent::Pushed { .. } => "pushed",
        NetEvent::Refused { .. } => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidechannel_batches_keep_order_and_respect_limits() {
        let limits = QueueLimits {
            max_in_flight: 1,
            max_queued: 3,
            max_queued_bytes: 1 << 20,
        };
        let mut queue = ScQueue::default();
        for i in 0..5u8 {
            queue.push(Bytes::from(vec![i; 10]), &limits);
        }
        // Over the count limit: the two oldest went.
        let (batch, _) = queue.next_batch(1 << 16).expect("a batch");
        assert!(
            queue.next_batch(1 << 16).is_none(),
            "one batch handed to the connection at a time"
        );
        let mut expected = Vec::new();
        for i in 2..5u8 {
            expected.extend_from_slice(&10u32.to_be_bytes());
            expected.extend_from_slice(&[i; 10]);
        }
        assert_eq!(&batch[..], &expected[..]);
        // A batch stops before its limit.
        queue.in_flight = false;
        queue.push(Bytes::from(vec![9; 60]), &limits);
        queue.push(Bytes::from(vec![8; 60]), &limits);
        let (batch, retried) = queue.next_batch(100).expect("a batch");
        assert!(!retried);
        assert_eq!(batch.len(), 64);
        // Batches back from a closed connection go first, in order, as they were.
        queue.in_flight = false;
        queue.retry.push_back((batch.clone(), true));
        queue.retry.push_back((Bytes::from_static(b"x"), false));
        assert_eq!(queue.next_batch(100), Some((batch, true)));
        queue.in_flight = false;
        assert_eq!(
            queue.next_batch(100),
            Some((Bytes::from_static(b"x"), false))
        );
        queue.in_flight = false;
        assert_eq!(queue.next_batch(100).map(|(b, _)| b.len()), Some(64));
    }

    #[test]
    fn bootstrap_entries() {
        assert_eq!(
            parse_bootstrap("127.0.0.1:4001").unwrap(),
            Target::Addr("/ip4/127.0.0.1/tcp/4001".parse().unwrap())
        );
        assert_eq!(
            parse_bootstrap("[::1]:9").unwrap(),
            Target::Addr("/ip6/::1/tcp/9".parse().unwrap())
        );
        assert_eq!(
            parse_bootstrap("seed.example:4001").unwrap(),
            Target::Host {
                host: "seed.example".into(),
                port: 4001
            }
        );
        assert_eq!(
            parse_bootstrap("/ip4/10.0.0.1/tcp/5").unwrap(),
            Target::Addr("/ip4/10.0.0.1/tcp/5".parse().unwrap())
        );
        for bad in [
            "",
            "host",
            "host:port",
            ":4001",
            "/not/a/multiaddr",
            "h:70000",
        ] {
            let err = parse_bootstrap(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid address '{bad}'")),
                "{err}"
            );
        }
    }
}
