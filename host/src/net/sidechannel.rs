//! The sidechannel protocol (`/trac/sidechannel/2`): one long-lived stream per connection and
//! direction, carrying length-prefixed frames one way and acknowledgements the other.
//!
//! **Wire.** The sender opens one stream on a connection, negotiates the protocol once and
//! writes frames on it as they come: a frame is a `u32` big-endian length followed by that many
//! bytes (the swarm task packs the frames queued for a peer into batches of such frames, one
//! write each). The reader answers with acknowledgements: a `u64` big-endian count of the frames
//! it has taken from the stream so far (delivered, dropped or refused), written whenever it has
//! read everything available, so that one acknowledgement covers a whole burst. They tell the
//! sender which frames it may forget, and pace it: the next batch is written once the previous
//! one is acknowledged (one network round trip on the open stream; meanwhile the frames that
//! come gather into that next batch, one write and one segment instead of one each).
//!
//! **Limits.** A frame above the reader's limit ([`super::NetLimits::max_sidechannel_frame_bytes`])
//! is refused from its length prefix: the reader acknowledges it as taken, closes the stream and
//! reports it ([`Event::Refused`]); the sender opens a new stream for what follows. The reader
//! takes frames only as fast as the swarm task takes the connection's events (bounded), so a
//! fast sender is held back by Yamux flow control; frames the node does not take in time are
//! dropped and counted. The sender keeps at most [`UNACKED_BATCHES`] batch written and not
//! acknowledged, and the swarm task's bounded queue drops the oldest frames of a peer that does
//! not keep up.
//!
//! **Failures.** A stream that fails (an I/O error, or the peer closing it) is opened again and
//! the frames written on it but not acknowledged are written once more; frames that fail a
//! second time are dropped. When the connection closes, those frames go back to the swarm task
//! ([`Event::Unsent`]), which sends them once more on another connection to the peer.
//!
//! **Order.** Frames are handed to the node ([`ScInbound`]) by [`Behaviour`], inside the swarm
//! task, as the connection reports them: a connection's frames reach the swarm before its close,
//! so they are always handed over before the peer's [`ScInboundKind::Disconnected`]. Frames of a
//! peer that has not identified itself yet are held (bounded) until the swarm task reports it
//! ([`Behaviour::peer_connected`]), right after its [`ScInboundKind::Connected`].

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::future::{Ready, ready};
use futures::{AsyncRead, AsyncWrite};
use libp2p::PeerId;
use libp2p::bytes::{Buf, Bytes, BytesMut};
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, Stream, StreamProtocol, StreamUpgradeError, SubstreamProtocol,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{ScInbound, ScInboundKind};
use crate::crypto::PublicKey;

/// Batches written on a stream and not acknowledged beyond which a connection takes no new
/// one: a sender ahead of its peer waits for an acknowledgement while its next frames gather
/// into one batch (one write, one segment) instead of going one by one.
const UNACKED_BATCHES: usize = 1;
/// Bytes read from a stream at once.
const READ_CHUNK: usize = 16 << 10;
/// Bytes of frames read in one turn before they are handed on (the rest waits in the stream).
const READ_TURN: usize = 256 << 10;
/// Frames held for a peer that has not identified itself yet, at most (the oldest go first).
const MAX_HELD_FRAMES: usize = 1024;
/// Bytes held for a peer that has not identified itself yet, at most.
const MAX_HELD_BYTES: usize = 8 << 20;

/// A batch of length-prefixed frames for a connection's handler.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    /// Its number (unique within the node).
    id: u64,
    /// The frames, each a `u32` big-endian length and its bytes.
    bytes: Bytes,
    /// Whether it is a second attempt (it is dropped if that fails too).
    retried: bool,
}

/// What a connection's handler reports to [`Behaviour`].
#[derive(Debug)]
pub(crate) enum HandlerEvent {
    /// Frames read from the peer's stream, in order.
    Frames(Vec<Bytes>),
    /// Batch `id` is written and the connection can take the next one.
    Ready(u64),
    /// The peer's stream announced a frame of `size` bytes, above the limit: the stream is
    /// closed.
    Refused {
        /// The announced size.
        size: usize,
    },
    /// The connection closes: frames written or waiting but not acknowledged (to send once
    /// more elsewhere), and the last batch the handler took.
    Unsent {
        /// Batches of frames, each with whether it is a second attempt.
        batches: Vec<(Bytes, bool)>,
        /// The last batch the handler was given.
        last: Option<u64>,
    },
}

/// What [`Behaviour`] reports to the swarm task.
#[derive(Debug)]
pub(crate) enum Event {
    /// The peer's connection took the last batch: the next may go.
    Ready(PeerId),
    /// Batches that did not reach the peer before their connection closed: to send once more
    /// on another connection (each with whether it is already a second attempt).
    Unsent {
        /// The peer.
        peer: PeerId,
        /// The batches.
        batches: Vec<(Bytes, bool)>,
    },
    /// The peer announced a frame above the limit; its stream was closed.
    Refused {
        /// The peer.
        peer: PeerId,
        /// The announced size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// The protocol upgrade: the negotiated stream as it is (no protocol accepted inbound when the
/// node takes no sidechannel frames).
#[derive(Debug, Clone)]
pub(crate) struct Upgrade(Option<StreamProtocol>);

impl UpgradeInfo for Upgrade {
    type Info = StreamProtocol;
    type InfoIter = Option<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone()
    }
}

impl InboundUpgrade<Stream> for Upgrade {
    type Output = Stream;
    type Error = Infallible;
    type Future = Ready<Result<Stream, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, _: StreamProtocol) -> Self::Future {
        ready(Ok(stream))
    }
}

impl OutboundUpgrade<Stream> for Upgrade {
    type Output = Stream;
    type Error = Infallible;
    type Future = Ready<Result<Stream, Infallible>>;

    fn upgrade_outbound(self, stream: Stream, _: StreamProtocol) -> Self::Future {
        ready(Ok(stream))
    }
}

/// The number of length-prefixed frames in `batch` (a batch this node built).
fn count_frames(batch: &[u8]) -> u64 {
    let mut count = 0;
    let mut rest = batch;
    while let Some((prefix, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*prefix) as usize;
        count += 1;
        rest = tail.get(len..).unwrap_or_default();
    }
    count
}

/// `batch` without its first `n` frames.
fn skip_frames(batch: &Bytes, n: u64) -> Bytes {
    let mut offset = 0usize;
    for _ in 0..n {
        let Some(prefix) = batch.get(offset..).and_then(|rest| rest.first_chunk::<4>()) else {
            break;
        };
        offset = offset.saturating_add(4 + u32::from_be_bytes(*prefix) as usize);
    }
    batch.slice(offset.min(batch.len())..)
}

/// Frames to write on the outbound stream, as given (one write each).
#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    frames: u64,
    retried: bool,
}

/// The state of the outbound stream.
#[derive(Debug)]
enum OutState {
    /// None open (none needed yet, or the last one failed).
    Idle,
    /// Being opened.
    Opening,
    /// Open.
    Open(Stream),
    /// The peer does not speak the protocol: batches are dropped.
    Unsupported,
}

/// The outbound side of a connection: the stream, what is written and not acknowledged, and
/// what waits.
#[derive(Debug)]
struct Outbound {
    state: OutState,
    /// Written and not acknowledged (`..cursor`), being written (`cursor`), waiting (after).
    chunks: VecDeque<Chunk>,
    /// The chunk being written.
    cursor: usize,
    /// Bytes of it written.
    offset: usize,
    /// The stream's count of the first frame of `chunks[0]`.
    base: u64,
    /// The highest acknowledgement on the stream.
    acked: u64,
    /// A flush is due.
    flushing: bool,
    /// The acknowledgement being read.
    ack: [u8; 8],
    ack_len: usize,
    /// The batch taken and not reported ready yet.
    batch: Option<u64>,
    /// The last batch taken.
    last: Option<u64>,
}

impl Outbound {
    fn new() -> Self {
        Outbound {
            state: OutState::Idle,
            chunks: VecDeque::new(),
            cursor: 0,
            offset: 0,
            base: 0,
            acked: 0,
            flushing: false,
            ack: [0; 8],
            ack_len: 0,
            batch: None,
            last: None,
        }
    }

    /// Takes everything off the stream: acknowledged frames are forgotten, frames written (even
    /// in part) count as attempted — a second attempt is dropped, a first one becomes a second —
    /// and frames never written keep their state. Returns what is left and how many frames were
    /// dropped.
    fn take_unsent(&mut self) -> (VecDeque<Chunk>, u64) {
        let mut skip = self.acked.saturating_sub(self.base);
        let attempted = self.cursor + usize::from(self.offset > 0);
        let mut dropped = 0;
        let mut left = VecDeque::new();
        for (i, mut chunk) in std::mem::take(&mut self.chunks).into_iter().enumerate() {
            if i < attempted && skip > 0 {
                let n = skip.min(chunk.frames);
                chunk.bytes = skip_frames(&chunk.bytes, n);
                chunk.frames -= n;
                skip -= n;
            }
            if chunk.frames == 0 || chunk.bytes.is_empty() {
                continue;
            }
            if i < attempted {
                if chunk.retried {
                    dropped += chunk.frames;
                    continue;
                }
                chunk.retried = true;
            }
            left.push_back(chunk);
        }
        self.cursor = 0;
        self.offset = 0;
        self.base = 0;
        self.acked = 0;
        self.flushing = false;
        self.ack_len = 0;
        (left, dropped)
    }

    /// The stream failed: what it did not deliver waits for a new one (once).
    fn fail(&mut self, reason: &str) {
        let (left, dropped) = self.take_unsent();
        debug!(
            resent = left.iter().map(|c| c.frames).sum::<u64>(),
            dropped, "sidechannel stream failed: {reason}"
        );
        self.chunks = left;
        self.state = OutState::Idle;
    }

    /// Opening a stream failed: what waits counts as attempted (a second failure drops it).
    fn open_failed(&mut self, reason: &str) {
        let mut dropped = 0;
        self.chunks.retain_mut(|chunk| {
            if chunk.retried {
                dropped += chunk.frames;
                return false;
            }
            chunk.retried = true;
            true
        });
        debug!(dropped, "sidechannel stream not opened: {reason}");
        self.state = OutState::Idle;
    }

    /// An acknowledgement: chunks fully acknowledged are forgotten.
    fn acknowledged(&mut self, count: u64) {
        self.acked = self.acked.max(count);
        while self.cursor > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            if self.base.saturating_add(front.frames) > self.acked {
                break;
            }
            self.base += front.frames;
            self.chunks.pop_front();
            self.cursor -= 1;
        }
    }

    /// Writes what waits, reads acknowledgements; a failure leaves the stream closed.
    fn poll(&mut self, cx: &mut Context<'_>) {
        let OutState::Open(stream) = &mut self.state else {
            return;
        };
        let mut failure: Option<String> = None;
        let mut acked: Option<u64> = None;
        loop {
            if let Some(chunk) = self.chunks.get(self.cursor) {
                let rest = chunk.bytes.get(self.offset..).unwrap_or_default();
                match Pin::new(&mut *stream).poll_write(cx, rest) {
                    Poll::Ready(Ok(0)) => {
                        failure = Some("the stream takes no more bytes".into());
                        break;
                    }
                    Poll::Ready(Ok(n)) => {
                        self.offset += n;
                        if self.offset >= chunk.bytes.len() {
                            self.cursor += 1;
                            self.offset = 0;
                            self.flushing = true;
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        failure = Some(format!("write: {e}"));
                        break;
                    }
                    Poll::Pending => break,
                }
            } else if self.flushing {
                match Pin::new(&mut *stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flushing = false,
                    Poll::Ready(Err(e)) => {
                        failure = Some(format!("flush: {e}"));
                        break;
                    }
                    Poll::Pending => break,
                }
            } else {
                break;
            }
        }
        if failure.is_none() {
            loop {
                let buf = &mut self.ack[self.ack_len..];
                match Pin::new(&mut *stream).poll_read(cx, buf) {
                    Poll::Ready(Ok(0)) => {
                        failure = Some("closed by the peer".into());
                        break;
                    }
                    Poll::Ready(Ok(n)) => {
                        self.ack_len += n;
                        if self.ack_len == self.ack.len() {
                            self.ack_len = 0;
                            let count = u64::from_be_bytes(self.ack);
                            acked = Some(acked.unwrap_or_default().max(count));
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        failure = Some(format!("read: {e}"));
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        if let Some(count) = acked {
            self.acknowledged(count);
        }
        if let Some(reason) = failure {
            self.fail(&reason);
        }
    }

    /// The batch taken, once it is written and the window has room.
    fn ready(&mut self) -> Option<u64> {
        let written = self.cursor >= self.chunks.len() && !self.flushing;
        let room = self.cursor < UNACKED_BATCHES;
        if (written && room) || matches!(self.state, OutState::Unsupported) {
            return self.batch.take();
        }
        None
    }
}

/// The inbound side of a connection: the peer's stream, read frame by frame.
struct Inbound {
    stream: Stream,
    buf: BytesMut,
    /// Frames taken from the stream (handed on or refused).
    received: u64,
    /// The count in the last acknowledgement (written or being written).
    ack_sent: u64,
    ack: [u8; 8],
    /// Bytes of `ack` written (8: none being written).
    ack_pos: usize,
    flushing: bool,
    /// A frame above the limit came: the stream is acknowledged and closed.
    refused: bool,
}

impl Inbound {
    fn new(stream: Stream) -> Self {
        Inbound {
            stream,
            buf: BytesMut::new(),
            received: 0,
            ack_sent: 0,
            ack: [0; 8],
            ack_pos: 8,
            flushing: false,
            refused: false,
        }
    }

    /// Reads the frames available (when `read`), then writes the acknowledgement. Returns
    /// `Ok(true)` once the stream is done with.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        max_frame: usize,
        read: bool,
        events: &mut VecDeque<HandlerEvent>,
    ) -> io::Result<bool> {
        if read && !self.refused {
            let mut frames = Vec::new();
            let mut taken = 0usize;
            let mut finished = None;
            'read: loop {
                while let Some(prefix) = self.buf.first_chunk::<4>() {
                    let len = u32::from_be_bytes(*prefix) as usize;
                    if len > max_frame {
                        self.refused = true;
                        self.received += 1;
                        if !frames.is_empty() {
                            events.push_back(HandlerEvent::Frames(std::mem::take(&mut frames)));
                        }
                        events.push_back(HandlerEvent::Refused { size: len });
                        break 'read;
                    }
                    let Some(frame) = self.buf.get(4..4 + len) else {
                        self.buf.reserve(len + 4 - self.buf.len());
                        break;
                    };
                    // Copied out, so that a frame does not keep the read buffer alive.
                    frames.push(Bytes::copy_from_slice(frame));
                    self.buf.advance(4 + len);
                    self.received += 1;
                    taken += len + 4;
                }
                if taken >= READ_TURN {
                    break;
                }
                let start = self.buf.len();
                self.buf.resize(start + READ_CHUNK, 0);
                let polled = Pin::new(&mut self.stream).poll_read(cx, &mut self.buf[start..]);
                match polled {
                    Poll::Ready(Ok(0)) => {
                        self.buf.truncate(start);
                        finished = Some(Ok(true));
                        break;
                    }
                    Poll::Ready(Ok(n)) => self.buf.truncate(start + n),
                    Poll::Ready(Err(e)) => {
                        self.buf.truncate(start);
                        finished = Some(Err(e));
                        break;
                    }
                    Poll::Pending => {
                        self.buf.truncate(start);
                        break;
                    }
                }
            }
            if !frames.is_empty() {
                events.push_back(HandlerEvent::Frames(frames));
            }
            if let Some(finished) = finished {
                return finished;
            }
        }
        loop {
            if self.ack_pos < self.ack.len() {
                let rest = &self.ack[self.ack_pos..];
                match Pin::new(&mut self.stream).poll_write(cx, rest)? {
                    Poll::Ready(0) => return Ok(true),
                    Poll::Ready(n) => {
                        self.ack_pos += n;
                        self.flushing = self.ack_pos == self.ack.len();
                    }
                    Poll::Pending => return Ok(false),
                }
            } else if self.flushing {
                match Pin::new(&mut self.stream).poll_flush(cx)? {
                    Poll::Ready(()) => self.flushing = false,
                    Poll::Pending => return Ok(false),
                }
            } else if self.received > self.ack_sent {
                self.ack_sent = self.received;
                self.ack = self.received.to_be_bytes();
                self.ack_pos = 0;
            } else {
                break;
            }
        }
        if self.refused {
            // Acknowledged up to the refused frame: close our side, and drop the stream.
            return match Pin::new(&mut self.stream).poll_close(cx) {
                Poll::Ready(_) => Ok(true),
                Poll::Pending => Ok(false),
            };
        }
        Ok(false)
    }
}

/// The sidechannel streams of one connection.
pub(crate) struct Handler {
    protocol: StreamProtocol,
    accept: bool,
    max_frame: usize,
    inbound: Option<Inbound>,
    outbound: Outbound,
    events: VecDeque<HandlerEvent>,
    closed: bool,
}

impl Handler {
    fn new(protocol: StreamProtocol, accept: bool, max_frame: usize) -> Self {
        Handler {
            protocol,
            accept,
            max_frame,
            inbound: None,
            outbound: Outbound::new(),
            events: VecDeque::new(),
            closed: false,
        }
    }

    /// Drops what waits (the peer does not speak the protocol).
    fn unsupported(&mut self) {
        let frames: u64 = self.outbound.chunks.iter().map(|c| c.frames).sum();
        if frames > 0 {
            debug!(frames, "the peer does not take sidechannel frames: dropped");
        }
        self.outbound.chunks.clear();
        self.outbound.state = OutState::Unsupported;
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Batch;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = Upgrade;
    type OutboundProtocol = Upgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Upgrade, ()> {
        let protocol = self.accept.then(|| self.protocol.clone());
        SubstreamProtocol::new(Upgrade(protocol), ())
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Upgrade, (), HandlerEvent>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
            }
            if matches!(self.outbound.state, OutState::Idle) && !self.outbound.chunks.is_empty() {
                self.outbound.state = OutState::Opening;
                return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(Upgrade(Some(self.protocol.clone())), ()),
                });
            }
            if let Some(inbound) = &mut self.inbound {
                // Frames are read only once the last ones are handed on (bounded memory).
                let read = self.events.is_empty();
                match inbound.poll(cx, self.max_frame, read, &mut self.events) {
                    Ok(false) => {}
                    Ok(true) => self.inbound = None,
                    Err(e) => {
                        debug!("inbound sidechannel stream failed: {e}");
                        self.inbound = None;
                    }
                }
            }
            self.outbound.poll(cx);
            if let Some(id) = self.outbound.ready() {
                self.events.push_back(HandlerEvent::Ready(id));
            }
            let reopen =
                matches!(self.outbound.state, OutState::Idle) && !self.outbound.chunks.is_empty();
            if self.events.is_empty() && !reopen {
                return Poll::Pending;
            }
        }
    }

    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<Option<HandlerEvent>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        if self.closed {
            return Poll::Ready(None);
        }
        self.closed = true;
        let (left, dropped) = self.outbound.take_unsent();
        if dropped > 0 {
            debug!(
                dropped,
                "connection closed: sidechannel frames sent twice dropped"
            );
        }
        let batches: Vec<(Bytes, bool)> = left.into_iter().map(|c| (c.bytes, c.retried)).collect();
        if batches.is_empty() && self.outbound.last.is_none() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(HandlerEvent::Unsent {
            batches,
            last: self.outbound.last,
        }))
    }

    fn on_behaviour_event(&mut self, batch: Batch) {
        self.outbound.last = Some(batch.id);
        self.outbound.batch = Some(batch.id);
        if matches!(self.outbound.state, OutState::Unsupported) {
            return;
        }
        let frames = count_frames(&batch.bytes);
        if frames > 0 {
            self.outbound.chunks.push_back(Chunk {
                bytes: batch.bytes,
                frames,
                retried: batch.retried,
            });
        }
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<Upgrade, Upgrade, (), ()>) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: mut stream,
                ..
            }) => {
                if !self.accept {
                    return;
                }
                // Long-lived: it does not keep an idle connection open on its own.
                stream.ignore_for_keep_alive();
                if self.inbound.is_some() {
                    debug!("the peer opened a new sidechannel stream: the old one is dropped");
                }
                self.inbound = Some(Inbound::new(stream));
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                if matches!(self.outbound.state, OutState::Opening) {
                    stream.ignore_for_keep_alive();
                    self.outbound.state = OutState::Open(stream);
                }
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => match error {
                StreamUpgradeError::NegotiationFailed => self.unsupported(),
                StreamUpgradeError::Apply(never) => match never {},
                StreamUpgradeError::Timeout => self.outbound.open_failed("timed out"),
                StreamUpgradeError::Io(e) => self.outbound.open_failed(&e.to_string()),
            },
            _ => {}
        }
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("protocol", &self.protocol)
            .field("inbound", &self.inbound.is_some())
            .field("outbound", &self.outbound.state)
            .finish()
    }
}

/// The batch handed to a connection and not reported ready yet.
#[derive(Debug)]
struct Outstanding {
    connection: ConnectionId,
    id: u64,
    batch: Bytes,
    retried: bool,
}

/// The sidechannel behaviour: a [`Handler`] per connection, the peers' frames handed to the
/// node in order with their connection changes, and the batches of the swarm task sent on one
/// connection per peer.
pub(crate) struct Behaviour {
    protocol: StreamProtocol,
    inbound: Option<mpsc::Sender<ScInbound>>,
    max_frame: usize,
    /// Established connections of each peer, oldest first.
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// The connection carrying each peer's frames.
    active: HashMap<PeerId, ConnectionId>,
    /// Peers reported connected to the node, and their keys.
    identified: HashMap<PeerId, PublicKey>,
    /// Frames of peers not identified yet, and their bytes.
    held: HashMap<PeerId, (VecDeque<Bytes>, usize)>,
    outstanding: HashMap<PeerId, Outstanding>,
    /// The last batch a closing connection's handler had taken.
    taken: HashMap<ConnectionId, u64>,
    next_id: u64,
    events: VecDeque<ToSwarm<Event, Batch>>,
    waker: Option<Waker>,
    /// Inbound frames and connection changes the node could not take.
    dropped: u64,
}

impl Behaviour {
    /// A behaviour speaking `protocol`; inbound frames of at most `max_frame` bytes go to
    /// `inbound` (none: the protocol is not accepted inbound).
    pub fn new(
        protocol: StreamProtocol,
        inbound: Option<mpsc::Sender<ScInbound>>,
        max_frame: usize,
    ) -> Self {
        Behaviour {
            protocol,
            inbound,
            max_frame,
            connections: HashMap::new(),
            active: HashMap::new(),
            identified: HashMap::new(),
            held: HashMap::new(),
            outstanding: HashMap::new(),
            taken: HashMap::new(),
            next_id: 0,
            events: VecDeque::new(),
            waker: None,
            dropped: 0,
        }
    }

    /// Inbound frames and connection changes dropped because the node did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn push(&mut self, event: ToSwarm<Event, Batch>) {
        self.events.push_back(event);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Hands one item to the node; counts it when the node does not keep up.
    fn deliver(&mut self, peer: PeerId, key: PublicKey, frame: Bytes, kind: ScInboundKind) {
        let Some(inbound) = &self.inbound else {
            return;
        };
        let item = ScInbound {
            peer,
            key,
            frame,
            kind,
        };
        if inbound.try_send(item).is_err() {
            self.dropped += 1;
            if kind != ScInboundKind::Frame {
                warn!(%peer, ?kind, "the sidechannel receiver is full: connection change dropped");
            }
        }
    }

    /// The peer identified itself: the node hears of it, then of the frames held meanwhile.
    pub fn peer_connected(&mut self, peer: PeerId, key: PublicKey) {
        self.identified.insert(peer, key);
        self.deliver(peer, key, Bytes::new(), ScInboundKind::Connected);
        if let Some((frames, _)) = self.held.remove(&peer) {
            for frame in frames {
                self.deliver(peer, key, frame, ScInboundKind::Frame);
            }
        }
    }

    /// The peer left (its last connection closed, or it was refused): the node hears of it
    /// after every frame it sent.
    pub fn peer_disconnected(&mut self, peer: PeerId, key: PublicKey) {
        self.held.remove(&peer);
        if self.identified.remove(&peer).is_some() {
            self.deliver(peer, key, Bytes::new(), ScInboundKind::Disconnected);
        }
    }

    /// Hands a batch to the connection carrying the peer's frames; false when the peer has
    /// none. [`Event::Ready`] tells when the next may go.
    pub fn send(&mut self, peer: PeerId, batch: Bytes, retried: bool) -> bool {
        let Some(connections) = self.connections.get(&peer) else {
            return false;
        };
        let connection = match self.active.get(&peer) {
            Some(active) if connections.contains(active) => *active,
            _ => match connections.first() {
                Some(first) => *first,
                None => return false,
            },
        };
        self.active.insert(peer, connection);
        let id = self.next_id;
        self.next_id += 1;
        self.outstanding.insert(
            peer,
            Outstanding {
                connection,
                id,
                batch: batch.clone(),
                retried,
            },
        );
        self.push(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(connection),
            event: Batch {
                id,
                bytes: batch,
                retried,
            },
        });
        true
    }

    fn frames(&mut self, peer: PeerId, frames: Vec<Bytes>) {
        if let Some(key) = self.identified.get(&peer).copied() {
            for frame in frames {
                self.deliver(peer, key, frame, ScInboundKind::Frame);
            }
            return;
        }
        // Not identified yet: held until it is (the oldest dropped beyond the bounds).
        let (held, bytes) = self.held.entry(peer).or_default();
        let mut dropped = 0;
        for frame in frames {
            *bytes += frame.len();
            held.push_back(frame);
            while held.len() > MAX_HELD_FRAMES || *bytes > MAX_HELD_BYTES {
                let Some(old) = held.pop_front() else {
                    break;
                };
                *bytes -= old.len();
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.dropped += dropped;
            debug!(%peer, dropped, "sidechannel frames of a peer not identified yet dropped");
        }
    }

    fn closed(&mut self, peer: PeerId, connection: ConnectionId, remaining: usize) {
        let taken = self.taken.remove(&connection);
        if let Some(connections) = self.connections.get_mut(&peer) {
            connections.retain(|c| *c != connection);
        }
        if self.active.get(&peer) == Some(&connection) {
            self.active.remove(&peer);
        }
        if remaining == 0 {
            self.connections.remove(&peer);
            self.held.remove(&peer);
        }
        let on_it = self
            .outstanding
            .get(&peer)
            .is_some_and(|o| o.connection == connection);
        if !on_it {
            return;
        }
        let Some(outstanding) = self.outstanding.remove(&peer) else {
            return;
        };
        if taken != Some(outstanding.id) {
            // The handler never got it: it goes out again as it was.
            self.push(ToSwarm::GenerateEvent(Event::Unsent {
                peer,
                batches: vec![(outstanding.batch, outstanding.retried)],
            }));
        }
        self.push(ToSwarm::GenerateEvent(Event::Ready(peer)));
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(
            self.protocol.clone(),
            self.inbound.is_some(),
            self.max_frame,
        ))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(
            self.protocol.clone(),
            self.inbound.is_some(),
            self.max_frame,
        ))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            }) => {
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .push(connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                remaining_established,
                ..
            }) => self.closed(peer_id, connection_id, remaining_established),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            HandlerEvent::Frames(frames) => self.frames(peer, frames),
            HandlerEvent::Ready(id) => {
                let mine = self
                    .outstanding
                    .get(&peer)
                    .is_some_and(|o| o.connection == connection && o.id == id);
                if mine {
                    self.outstanding.remove(&peer);
                    self.push(ToSwarm::GenerateEvent(Event::Ready(peer)));
                }
            }
            HandlerEvent::Refused { size } => {
                self.push(ToSwarm::GenerateEvent(Event::Refused {
                    peer,
                    size,
                    max: self.max_frame,
                }));
            }
            HandlerEvent::Unsent { batches, last } => {
                if let Some(last) = last {
                    self.taken.insert(connection, last);
                }
                if !batches.is_empty() {
                    self.push(ToSwarm::GenerateEvent(Event::Unsent { peer, batches }));
                }
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(frames: &[&[u8]]) -> Bytes {
        let mut out = Vec::new();
        for frame in frames {
            out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            out.extend_from_slice(frame);
        }
        Bytes::from(out)
    }

    #[test]
    fn frames_are_counted_and_skipped() {
        let b = batch(&[b"ab", b"", b"cde"]);
        assert_eq!(count_frames(&b), 3);
        assert_eq!(skip_frames(&b, 1), batch(&[b"", b"cde"]));
        assert_eq!(skip_frames(&b, 2), batch(&[b"cde"]));
        assert_eq!(skip_frames(&b, 3), Bytes::new());
        assert_eq!(skip_frames(&b, 9), Bytes::new());
        // A truncated batch counts its last frame and skips to the end.
        assert_eq!(count_frames(&[0, 0, 0, 9, 1]), 1);
        assert_eq!(
            skip_frames(&Bytes::from_static(&[0, 0, 0, 9, 1]), 1),
            Bytes::new()
        );
    }

    fn chunk(frames: &[&[u8]], retried: bool) -> Chunk {
        let bytes = batch(frames);
        Chunk {
            frames: count_frames(&bytes),
            bytes,
            retried,
        }
    }

    #[test]
    fn unacknowledged_frames_are_sent_once_more() {
        let mut out = Outbound::new();
        out.chunks.push_back(chunk(&[b"a", b"b"], false));
        out.chunks.push_back(chunk(&[b"c"], true));
        out.chunks.push_back(chunk(&[b"d", b"e"], false));
        out.chunks.push_back(chunk(&[b"f"], true));
        // The first three written, the fourth waits; "a" acknowledged.
        out.cursor = 3;
        out.acknowledged(1);
        assert_eq!(
            out.chunks.len(),
            4,
            "a chunk goes once all of it is acknowledged"
        );
        // The stream fails: "b" and "d", "e" go once more, "c" (a second attempt) is dropped,
        // "f" (never written) keeps its state.
        let (left, dropped) = out.take_unsent();
        assert_eq!(dropped, 1);
        let left: Vec<(Bytes, bool)> = left.into_iter().map(|c| (c.bytes, c.retried)).collect();
        assert_eq!(
            left,
            vec![
                (batch(&[b"b"]), true),
                (batch(&[b"d", b"e"]), true),
                (batch(&[b"f"]), true),
            ]
        );
        // A full acknowledgement forgets the written chunks, and bogus counts change nothing
        // beyond them.
        let mut out = Outbound::new();
        out.chunks.push_back(chunk(&[b"a"], false));
        out.chunks.push_back(chunk(&[b"b"], false));
        out.cursor = 1;
        out.acknowledged(u64::MAX);
        assert_eq!(out.chunks.len(), 1);
        assert_eq!(out.cursor, 0);
        let (left, dropped) = out.take_unsent();
        assert_eq!((left.len(), dropped), (1, 0));
        assert!(!left[0].retried);
    }
}
