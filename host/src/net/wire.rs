//! What travels on `/trac/ledger/<version>`: length-prefixed frames of canonical MessagePack.
//!
//! Each request/response exchange uses its own substream: the requester writes one frame (a
//! [`LedgerRequest`]) and closes its side, the responder answers with one frame (a
//! [`LedgerResponse`]). A frame is a 4-byte big-endian length followed by that many bytes; the
//! length is checked against the node's limit **before** any of the body is read, and the body
//! is read as it arrives (no allocation of the announced size up front). Decoding (strict,
//! canonical: [`crate::codec::decode`]) happens in the swarm task once the frame is complete.
//!
//! An inbound request above the limit is not an I/O error (libp2p would drop it silently): the
//! codec skips its body without keeping it (up to [`DISCARD_FACTOR`] times the limit; a larger
//! one is not read at all) and hands the swarm task a [`Frame::TooLarge`], which answers the
//! peer with a refusal naming both sizes and reports it to the node.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::crypto::Hash32;
use crate::ledger::Message;

/// Whether a request wants the peer's answer or only announces something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FrameKind {
    /// The sender waits for the messages the peer's ledger returns.
    Request,
    /// An announcement (new entries, checkpoints, acks): the peer acknowledges at once with an
    /// empty answer and hands the messages to its node.
    Push,
    /// A service call to the node behind `network` (a submission to an MSB validator, a
    /// request to be added as a subnet writer): `call` carries the request, the answer is a
    /// [`LedgerResponse::Called`]. `messages` is empty.
    Call,
}

/// One request on the ledger protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LedgerRequest {
    /// The ledger the messages belong to (MSB network id or subnet id).
    pub network: Hash32,
    /// Request or push.
    pub kind: FrameKind,
    /// The ledger messages (empty for a call).
    pub messages: Vec<Message>,
    /// The body of a [`FrameKind::Call`] (empty otherwise); the node gives it its meaning.
    pub call: serde_bytes::ByteBuf,
}

/// The answer to a [`LedgerRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum LedgerResponse {
    /// What the peer's ledger returned (empty for a push).
    Messages(Vec<Message>),
    /// The peer refused the request (malformed, node busy, ...), with its reason.
    Refused(String),
    /// The node's answer to a [`FrameKind::Call`].
    Called(serde_bytes::ByteBuf),
}

/// How far above the limit an oversized request body is still read (and thrown away) so that
/// the sender can be answered with a clear refusal; beyond it the stream is dropped unread.
pub(crate) const DISCARD_FACTOR: usize = 4;

/// An inbound request frame as the codec hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete frame within the limit.
    Bytes(Bytes),
    /// A frame above the limit (its body was skipped).
    TooLarge(FrameTooLarge),
}

/// A frame above the limit of the side reading or writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {size} bytes exceeds the limit of {max} bytes")]
pub(crate) struct FrameTooLarge {
    /// Announced (or attempted) size.
    pub size: usize,
    /// The limit.
    pub max: usize,
}

/// Length-prefixed frames with a size limit; the request-response codec of the ledger protocol.
#[derive(Debug, Clone)]
pub(crate) struct FrameCodec {
    /// Largest frame read or written.
    pub max_frame: usize,
}

impl FrameCodec {
    /// Reads a length prefix and checks it.
    async fn read_prefix<T>(&self, io: &mut T) -> io::Result<Result<usize, FrameTooLarge>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut prefix = [0u8; 4];
        io.read_exact(&mut prefix).await?;
        let size = u32::from_be_bytes(prefix) as usize;
        Ok(if size > self.max_frame {
            Err(FrameTooLarge {
                size,
                max: self.max_frame,
            })
        } else {
            Ok(size)
        })
    }

    /// Reads an inbound request: oversized ones are skipped and reported as such.
    async fn read_request_frame<T>(&self, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        match self.read_prefix(io).await? {
            Ok(size) => self.read_body(io, size).await.map(Frame::Bytes),
            Err(too_large) => {
                if too_large.size <= self.max_frame.saturating_mul(DISCARD_FACTOR) {
                    futures::io::copy(io.take(too_large.size as u64), &mut futures::io::sink())
                        .await?;
                }
                Ok(Frame::TooLarge(too_large))
            }
        }
    }

    /// Reads a frame; an oversized one is an error.
    async fn read_frame<T>(&self, io: &mut T) -> io::Result<Bytes>
    where
        T: AsyncRead + Unpin + Send,
    {
        match self.read_prefix(io).await? {
            Ok(size) => self.read_body(io, size).await,
            Err(too_large) => Err(io::Error::new(io::ErrorKind::InvalidData, too_large)),
        }
    }

    async fn read_body<T>(&self, io: &mut T, size: usize) -> io::Result<Bytes>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut body = Vec::new();
        io.take(size as u64).read_to_end(&mut body).await?;
        if body.len() != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("frame truncated: {} of {size} bytes", body.len()),
            ));
        }
        Ok(Bytes::from(body))
    }

    async fn write_frame<T>(&self, io: &mut T, frame: Bytes) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let size = u32::try_from(frame.len())
            .ok()
            .filter(|_| frame.len() <= self.max_frame)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    FrameTooLarge {
                        size: frame.len(),
                        max: self.max_frame,
                    },
                )
            })?;
        io.write_all(&size.to_be_bytes()).await?;
        io.write_all(&frame).await?;
        io.flush().await
    }
}

impl libp2p::request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Bytes;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_request_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Bytes>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match request {
            Frame::Bytes(frame) => self.write_frame(io, frame).await,
            Frame::TooLarge(too_large) => {
                Err(io::Error::new(io::ErrorKind::InvalidInput, too_large))
            }
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Bytes,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_frame(io, response).await
    }
}

/// The id of protocol `name` at `version`: `/trac/<name>/<version>`.
pub fn protocol_id(name: &str, version: u32) -> String {
    format!("/trac/{name}/{version}")
}

/// The id of the sidechannel protocol at network `version`: `/trac/sidechannel/<version + 1>`
/// (`/trac/sidechannel/2` for version 1). Its wire changed once within network version 1 (a
/// long-lived stream with acknowledgements replaced a request-response exchange per batch), so
/// it runs one above the other protocols.
pub fn sidechannel_protocol_id(version: u32) -> String {
    protocol_id("sidechannel", version.saturating_add(1))
}

/// The identify protocol-version string of `version`: `trac/<version>`.
pub fn identify_version(version: u32) -> String {
    format!("trac/{version}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    #[test]
    fn frames_round_trip_and_limits_apply_before_the_body() {
        let codec = FrameCodec { max_frame: 16 };
        let mut out = Cursor::new(Vec::new());
        block_on(codec.write_frame(&mut out, Bytes::from_static(b"hello"))).unwrap();
        let bytes = out.into_inner();
        assert_eq!(&bytes[..4], &5u32.to_be_bytes());
        let read = block_on(codec.read_frame(&mut Cursor::new(bytes))).unwrap();
        assert_eq!(&read[..], b"hello");

        // A 4 GiB announcement is refused from the prefix alone.
        let huge = u32::MAX.to_be_bytes().to_vec();
        let err = block_on(codec.read_frame(&mut Cursor::new(huge))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("exceeds the limit of 16 bytes"),
            "{err}"
        );

        // Writing above the limit fails too, and a truncated body is an error.
        let err = block_on(codec.write_frame(&mut Cursor::new(Vec::new()), vec![0; 17].into()))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let mut short = 8u32.to_be_bytes().to_vec();
        short.extend_from_slice(b"abc");
        let err = block_on(codec.read_frame(&mut Cursor::new(short))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn oversized_requests_are_skipped_and_reported() {
        let codec = FrameCodec { max_frame: 16 };
        // 40 bytes (within 4x the limit) are skipped: the next frame on the stream reads fine.
        let mut stream = 40u32.to_be_bytes().to_vec();
        stream.extend_from_slice(&[1; 40]);
        stream.extend_from_slice(&2u32.to_be_bytes());
        stream.extend_from_slice(b"ok");
        let mut io = Cursor::new(stream);
        assert_eq!(
            block_on(codec.read_request_frame(&mut io)).unwrap(),
            Frame::TooLarge(FrameTooLarge { size: 40, max: 16 })
        );
        assert_eq!(
            block_on(codec.read_request_frame(&mut io)).unwrap(),
            Frame::Bytes(Bytes::from_static(b"ok"))
        );
        // Far above the limit: reported without reading the body.
        let mut io = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        assert!(matches!(
            block_on(codec.read_request_frame(&mut io)).unwrap(),
            Frame::TooLarge(FrameTooLarge { size, .. }) if size == u32::MAX as usize
        ));
        assert_eq!(io.position(), 4);
    }

    #[test]
    fn protocol_names() {
        assert_eq!(protocol_id("ledger", 1), "/trac/ledger/1");
        assert_eq!(sidechannel_protocol_id(1), "/trac/sidechannel/2");
        assert_eq!(identify_version(2), "trac/2");
    }
}
