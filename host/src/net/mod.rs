//! The libp2p networking layer: one swarm per node, shared by every ledger it replicates.
//!
//! - **Transport**: TCP + Noise + Yamux. The node's libp2p identity *is* its peer key
//!   ([`peer_id_of`], [`public_key_of`]).
//! - **Discovery**: explicit bootstrap peers (`host:port` or multiaddrs; a bootstrap peer's id is
//!   learned by dialing it), Kademlia (`/trac/kad/1`, server mode) and, on a LAN, mDNS
//!   ([`NetConfig::mdns`]). Peers discovered through the DHT or mDNS are dialed.
//! - **Health**: identify (protocol version `trac/1`) and ping.
//! - **Versioning**: every protocol id carries the version (`/trac/<proto>/1`); a peer whose
//!   identify version differs, or that does not offer `/trac/ledger/1`, is refused with a
//!   [`NetEvent::Refused`] naming both versions, and disconnected.
//! - **Ledger replication** (`/trac/ledger/1`, request-response): frames carry
//!   `{ network, messages: Vec<ledger::Message> }` in the canonical encoding ([`crate::codec`]).
//!   [`NetHandle::send`] asks one peer and returns what its ledger answered;
//!   [`NetHandle::push`] announces to every connected peer. Several ledgers (MSB and a subnet)
//!   share the swarm, told apart by `network`. A third kind of frame, a **call**
//!   ([`NetHandle::call`], [`NetEvent::Call`]), carries a service request to the node behind a
//!   network (submissions to MSB validators, writer requests): opaque bytes both ways.
//! - **Sidechannels** (`/trac/sidechannel/2`, [`sidechannel_protocol_id`]): one long-lived
//!   stream per connection and direction carries length-prefixed frames, in order, and the
//!   reader's acknowledgements back ([`NetHandle::sidechannel_send`], [`ScInbound`]).
//! - **Bounded memory**: frames above [`NetLimits::max_frame_bytes`] are refused from their length
//!   prefix, before anything is decoded; each peer has an in-flight window and a bounded queue
//!   (the oldest pushes are dropped and counted, requests fail with [`NetError::QueueFull`]);
//!   events for the node go through a bounded channel (excess pushes are dropped and counted,
//!   excess requests are answered "busy").
//!
//! The swarm runs on its own tokio task; [`NetHandle`] talks to it through a channel and the node
//! receives [`NetEvent`]s. A node answers [`NetEvent::Request`] by feeding the messages to the
//! ledger of `network` (`Ledger::handle`) and sending back what it returns.
//!
//! ```no_run
//! # async fn example() -> Result<(), trac_host::net::NetError> {
//! use trac_host::crypto::Keypair;
//! use trac_host::net::{Net, NetConfig, NetEvent};
//!
//! let mut config = NetConfig::new(Keypair::generate());
//! config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
//! config.bootstrap = vec!["127.0.0.1:4001".into()];
//! config.mdns = false;
//! let (net, mut events) = Net::start(config)?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         NetEvent::Request { reply, .. } => {
//!             let _ = reply.send(Vec::new()); // the node asks its ledger here
//!         }
//!         other => println!("{other:?}"),
//!     }
//! }
//! net.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod identity;
mod queue;
mod sidechannel;
mod swarm;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use libp2p::multiaddr;
pub use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

pub use identity::{peer_id_of, public_key_of};
pub use wire::{identify_version, protocol_id, sidechannel_protocol_id};

use crate::codec;
use crate::crypto::{Hash32, Keypair, PublicKey};
use crate::ledger::Message;
use wire::{FrameKind, LedgerRequest, LedgerResponse};

/// The network protocol version this build speaks (`/trac/<proto>/1`, identify `trac/1`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Bounds on what the network layer holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLimits {
    /// Largest frame read or written (requests and responses). Larger inbound frames are refused
    /// from their length prefix; larger outbound ones fail with [`NetError::FrameTooLarge`], and a
    /// response too large is cut to the messages that fit (the peer asks again for the rest).
    pub max_frame_bytes: usize,
    /// Frames on the wire to one peer at once.
    pub max_in_flight: usize,
    /// Frames waiting for one peer beyond the in-flight window.
    pub max_queued: usize,
    /// Bytes waiting for one peer beyond the in-flight window.
    pub max_queued_bytes: usize,
    /// Events buffered for the node ([`NetEvent`] channel capacity).
    pub event_capacity: usize,
    /// Established connections in total.
    pub max_connections: u32,
    /// Concurrent request-response substreams per connection (inbound + outbound).
    pub max_streams_per_connection: usize,
    /// Largest sidechannel frame read or written (frames travel in order, batched). A peer
    /// announcing a larger one has its stream closed.
    pub max_sidechannel_frame_bytes: usize,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            max_frame_bytes: 8 << 20,
            max_in_flight: 8,
            max_queued: 256,
            max_queued_bytes: 32 << 20,
            event_capacity: 1024,
            max_connections: 256,
            max_streams_per_connection: 32,
            max_sidechannel_frame_bytes: 1 << 20,
        }
    }
}

/// How to start the network.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The peer key; also the libp2p identity.
    pub keypair: Keypair,
    /// Addresses to listen on (`/ip4/0.0.0.0/tcp/0` by default; tests use `/ip4/127.0.0.1/tcp/0`).
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers: `host:port` (resolved to `/ip4|ip6/…/tcp/…`) or multiaddrs.
    pub bootstrap: Vec<String>,
    /// mDNS discovery on the local network (on by default; off in tests).
    pub mdns: bool,
    /// Memory bounds.
    pub limits: NetLimits,
    /// Protocol version spoken ([`PROTOCOL_VERSION`]); only compatibility tests set another.
    pub protocol_version: u32,
    /// How long a request may wait for its answer (the peer's node included).
    pub request_timeout: Duration,
    /// How long a connection without traffic stays open.
    pub idle_timeout: Duration,
    /// How long a new connection may take to identify itself before it is refused.
    pub identify_timeout: Duration,
    /// How often unreachable bootstrap peers are dialed again.
    pub bootstrap_retry: Duration,
    /// Peers known from earlier runs (multiaddrs ending in `/p2p/<id>`), dialed once at start
    /// (at most 32; unlike bootstrap peers, not retried).
    pub known_peers: Vec<Multiaddr>,
    /// Where inbound sidechannel frames go (`/trac/sidechannel/2`); without it the node does
    /// not accept the protocol. A full channel drops frames (counted as dropped events).
    pub sidechannel: Option<mpsc::Sender<ScInbound>>,
    /// Dial the peers Kademlia and mDNS discover (on by default; tests of relays through a
    /// line of peers turn it off so that only the configured links exist).
    pub dial_discovered: bool,
}

/// A sidechannel frame from a peer, as received (not decoded by the network layer), or a
/// change of its connection: both travel on one channel, in the order the network saw them,
/// so that a neighbour's first frames and its connection are never seen out of order.
#[derive(Debug, Clone)]
pub struct ScInbound {
    /// The neighbour it came from.
    pub peer: PeerId,
    /// Its peer key (its identity, authenticated by the connection).
    pub key: PublicKey,
    /// The frame (empty for a connection change).
    pub frame: libp2p::bytes::Bytes,
    /// What this is.
    pub kind: ScInboundKind,
}

/// What an [`ScInbound`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScInboundKind {
    /// A frame.
    Frame,
    /// The peer connected and identified itself.
    Connected,
    /// The last connection to the peer closed.
    Disconnected,
}

impl NetConfig {
    /// The defaults for `keypair`: listen on every IPv4 interface (random port), no bootstrap
    /// peers, mDNS on.
    pub fn new(keypair: Keypair) -> Self {
        NetConfig {
            keypair,
            listen: vec!["/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr")],
            bootstrap: Vec::new(),
            mdns: true,
            limits: NetLimits::default(),
            protocol_version: PROTOCOL_VERSION,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(24 * 3600),
            identify_timeout: Duration::from_secs(10),
            bootstrap_retry: Duration::from_secs(30),
            known_peers: Vec::new(),
            sidechannel: None,
            dial_discovered: true,
        }
    }
}

/// What the network reports to the node.
#[derive(Debug)]
pub enum NetEvent {
    /// The node listens on this address.
    Listening(Multiaddr),
    /// A peer connected and identified itself as compatible; its peer key and the listen
    /// addresses it announced (dialable ones, at most 8).
    PeerConnected(PeerId, PublicKey, Vec<Multiaddr>),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A peer asks the ledger of `network`; answer through `reply` (what `Ledger::handle`
    /// returned). Dropping `reply` answers with a refusal.
    Request {
        /// Who asks.
        peer: PeerId,
        /// Which ledger.
        network: Hash32,
        /// The messages to handle.
        messages: Vec<Message>,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<Message>>,
    },
    /// A peer calls the node behind `network` ([`NetHandle::call`]); answer through `reply`.
    /// Dropping `reply` answers with a refusal.
    Call {
        /// Who calls.
        peer: PeerId,
        /// Which ledger's node.
        network: Hash32,
        /// The request, as the caller encoded it (not decoded by the network layer).
        body: Vec<u8>,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// A peer announced messages for the ledger of `network` (already acknowledged).
    Pushed {
        /// Who announced.
        peer: PeerId,
        /// Which ledger.
        network: Hash32,
        /// The messages.
        messages: Vec<Message>,
    },
    /// A peer, or something it sent, was refused: another protocol version or a missing
    /// protocol (the connection is closed), an oversized or malformed frame (only that frame is
    /// dropped).
    Refused {
        /// The peer.
        peer: PeerId,
        /// Why, for people.
        reason: String,
    },
}

/// Counters of what the network dropped or refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Pushes dropped because a peer's queue was full (oldest first).
    pub dropped_pushes: u64,
    /// Events dropped because the node did not read them fast enough.
    pub dropped_events: u64,
    /// Inbound frames refused (too large, malformed).
    pub refused_frames: u64,
    /// Peers refused (version mismatch, missing protocol, no identification).
    pub refused_peers: u64,
}

/// Why a network operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    /// A listen or bootstrap address that does not parse.
    #[error("invalid address '{input}': {reason}")]
    Address {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Listening failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The peer key cannot serve as a libp2p identity.
    #[error("network identity: {0}")]
    Identity(String),
    /// [`Net::start`] was called outside a tokio runtime.
    #[error("the network needs a tokio runtime: call Net::start from inside one")]
    NoRuntime,
    /// Building the transport or a behaviour failed.
    #[error("network setup failed: {0}")]
    Setup(String),
    /// The peer is not connected (or has not identified itself yet).
    #[error("peer {0} is not connected")]
    NotConnected(PeerId),
    /// Dialing failed.
    #[error("dialing {addr} failed: {reason}")]
    Dial {
        /// The address dialed.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The peer was refused (version mismatch, ...).
    #[error("peer {peer} was refused: {reason}")]
    Refused {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// A frame above [`NetLimits::max_frame_bytes`].
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The peer's outbound queue is full (it is slow or stuck).
    #[error(
        "outbound queue to {peer} is full ({queued} frames, {bytes} bytes waiting); retry later"
    )]
    QueueFull {
        /// The peer.
        peer: PeerId,
        /// Frames waiting.
        queued: usize,
        /// Bytes waiting.
        bytes: usize,
    },
    /// The request failed on the way (timeout, connection closed, stream error).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The peer answered with a refusal.
    #[error("peer {peer} refused the request: {reason}")]
    Remote {
        /// The peer.
        peer: PeerId,
        /// Its reason.
        reason: String,
    },
    /// The network task has stopped ([`NetHandle::shutdown`] or a fatal error).
    #[error("the network has stopped")]
    Stopped,
}

/// A response of the wrong kind (messages for a call, or the reverse).
fn unexpected(peer: PeerId, response: &LedgerResponse) -> NetError {
    let kind = match response {
        LedgerResponse::Messages(_) => "ledger messages",
        LedgerResponse::Called(_) => "a call answer",
        LedgerResponse::Refused(_) => "a refusal",
    };
    NetError::Request {
        peer,
        reason: format!("unexpected response: {kind}"),
    }
}

/// Starts the network.
#[derive(Debug)]
pub struct Net;

impl Net {
    /// Builds the swarm, starts listening and dialing the bootstrap peers, and spawns the swarm
    /// task on the current tokio runtime. Returns the handle and the node's event stream.
    ///
    /// Fails on an unusable key, an unparsable listen or bootstrap address, or an address that
    /// cannot be listened on. Unreachable bootstrap peers are not an error: they are dialed
    /// again every [`NetConfig::bootstrap_retry`].
    pub fn start(config: NetConfig) -> Result<(NetHandle, mpsc::Receiver<NetEvent>), NetError> {
        swarm::start(config)
    }
}

/// A handle on the running network (cheap to clone).
#[derive(Debug, Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<swarm::Command>,
    peer_id: PeerId,
    public: PublicKey,
    max_frame: usize,
    max_sidechannel_frame: usize,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl NetHandle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// This node's peer key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> swarm::Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// The addresses the node listens on (empty until the listeners are up; see
    /// [`NetEvent::Listening`]).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(swarm::Command::ListenAddrs).await
    }

    /// The connected, identified peers and their peer keys.
    pub async fn connected_peers(&self) -> Result<Vec<(PeerId, PublicKey)>, NetError> {
        self.ask(swarm::Command::ConnectedPeers).await
    }

    /// What was dropped or refused so far.
    pub async fn stats(&self) -> Result<NetStats, NetError> {
        self.ask(swarm::Command::Stats).await
    }

    /// Dials `addr` and waits until the peer there has identified itself as compatible;
    /// returns its id.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.ask(|reply| swarm::Command::Dial { addr, reply })
            .await?
    }

    fn frame(
        &self,
        network: Hash32,
        kind: FrameKind,
        messages: Vec<Message>,
        call: Vec<u8>,
    ) -> Result<libp2p::bytes::Bytes, NetError> {
        let frame = codec::encode(&LedgerRequest {
            network,
            kind,
            messages,
            call: serde_bytes::ByteBuf::from(call),
        });
        if frame.len() > self.max_frame {
            return Err(NetError::FrameTooLarge {
                size: frame.len(),
                max: self.max_frame,
            });
        }
        Ok(frame.into())
    }

    /// Sends `messages` for the ledger of `network` to `peer` and returns what its ledger
    /// answered.
    pub async fn send(
        &self,
        peer: PeerId,
        network: Hash32,
        messages: Vec<Message>,
    ) -> Result<Vec<Message>, NetError> {
        let frame = self.frame(network, FrameKind::Request, messages, Vec::new())?;
        match self
            .ask(|reply| swarm::Command::Send { peer, frame, reply })
            .await??
        {
            LedgerResponse::Messages(messages) => Ok(messages),
            other => Err(unexpected(peer, &other)),
        }
    }

    /// Calls the node behind `network` on `peer` with `body` (a service request whose
    /// meaning the nodes agree on) and returns its answer.
    pub async fn call(
        &self,
        peer: PeerId,
        network: Hash32,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        let frame = self.frame(network, FrameKind::Call, Vec::new(), body)?;
        match self
            .ask(|reply| swarm::Command::Send { peer, frame, reply })
            .await??
        {
            LedgerResponse::Called(body) => Ok(body.into_vec()),
            other => Err(unexpected(peer, &other)),
        }
    }

    /// Announces `messages` for the ledger of `network` to every connected peer (fire and
    /// forget; a slow peer's oldest pushes are dropped). Returns how many peers it was queued
    /// for.
    pub async fn push(&self, network: Hash32, messages: Vec<Message>) -> Result<usize, NetError> {
        let frame = self.frame(network, FrameKind::Push, messages, Vec::new())?;
        self.ask(|reply| swarm::Command::Push { frame, reply })
            .await
    }

    /// Queues a sidechannel frame for `peer` (`/trac/sidechannel/2`; fire and forget: a slow
    /// peer's oldest frames are dropped, an unknown peer's are ignored).
    pub async fn sidechannel_send(&self, peer: PeerId, frame: Vec<u8>) -> Result<(), NetError> {
        if frame.len() > self.max_sidechannel_frame {
            return Err(NetError::FrameTooLarge {
                size: frame.len(),
                max: self.max_sidechannel_frame,
            });
        }
        self.commands
            .send(swarm::Command::ScSend {
                peer,
                frame: frame.into(),
            })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// [`NetHandle::sidechannel_send`] without waiting: `Ok(Some(frame))` gives the frame back
    /// when the network's command queue is full (send it later, in order).
    pub fn try_sidechannel_send(
        &self,
        peer: PeerId,
        frame: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, NetError> {
        if frame.len() > self.max_sidechannel_frame {
            return Err(NetError::FrameTooLarge {
                size: frame.len(),
                max: self.max_sidechannel_frame,
            });
        }
        let command = swarm::Command::ScSend {
            peer,
            frame: frame.into(),
        };
        match self.commands.try_send(command) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(swarm::Command::ScSend { frame, .. })) => {
                Ok(Some(Vec::from(frame)))
            }
            // Only `ScSend` is sent above.
            Err(mpsc::error::TrySendError::Full(_)) => Ok(None),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(NetError::Stopped),
        }
    }

    /// Closes the connections to `peer` (a peer that keeps abusing its limits).
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), NetError> {
        self.commands
            .send(swarm::Command::Disconnect(peer))
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Closes every connection and stops the swarm task (waits for it). Other handles then
    /// fail with [`NetError::Stopped`].
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(swarm::Command::Shutdown(tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
