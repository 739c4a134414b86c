//! Sidechannel wire types, their canonical encoding, signatures and proof of work
//! (docs/protocol.md §13).
//!
//! A frame is the canonical MessagePack of [`Frame`]. Its author signs the **message digest**
//! `BLAKE3(domain(sidechannel-msg, BLAKE3(channel)) ‖ encode((channel, id, from, ts, body)))`;
//! `ttl`, `pow` and `relayed_by` are not covered, so relays forward without re-signing. Proof of
//! work is `BLAKE3(digest ‖ u64be(pow))` with at least the receiver's difficulty in leading zero
//! bits. Welcomes and invites are signed by their owner and inviter in their own domains.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};

use crate::codec::{self, CodecError};
use crate::crypto::{
    Domain, DomainKind, Hash32, Keypair, PublicKey, Signature, SignatureError, hash, verify_hash,
};

/// Format version of frames.
pub const FRAME_VERSION: u8 = 1;

/// Format version of welcomes.
pub const WELCOME_VERSION: u8 = 1;

/// Highest proof-of-work difficulty (leading zero bits) a node may demand or search for.
pub const MAX_POW_DIFFICULTY: u8 = 32;

/// Bytes a frame can grow by between its author and any receiver: the largest `pow` encoding
/// (8 more bytes than nonce 0) and a `relayed_by` key (33 more bytes than none).
pub const RELAY_OVERHEAD: usize = 8 + 33;

/// Why bytes are not a frame, a welcome or an invite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not the canonical encoding of the expected type.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// A frame of another format version.
    #[error("unsupported sidechannel frame version {0} (this node speaks version {FRAME_VERSION})")]
    Version(u8),
    /// Text that is not base64.
    #[error("invalid base64: {0}")]
    Base64(String),
    /// A signature that does not verify.
    #[error("{0}")]
    Signature(#[from] SignatureError),
}

/// One sidechannel frame, as sent between neighbours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// [`FRAME_VERSION`].
    pub version: u8,
    /// The channel name (normalised: trimmed, 1 to 128 bytes, no control characters).
    pub channel: String,
    /// 16 random bytes chosen by the author; `(from, id)` identifies the frame.
    #[serde(with = "serde_bytes")]
    pub id: [u8; 16],
    /// The author.
    pub from: PublicKey,
    /// The author's clock, ms since the Unix epoch.
    pub ts: u64,
    /// Hops left; each relay forwards with `ttl − 1` (receivers first cap it at their maximum).
    pub ttl: u8,
    /// What the frame carries.
    pub body: Body,
    /// Proof-of-work nonce (0 when no work was done).
    pub pow: u64,
    /// The author's signature of the message digest ([`Frame::digest`]).
    pub sig: Signature,
    /// The last relay, if the frame was relayed.
    pub relayed_by: Option<PublicKey>,
}

/// What a frame carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// An application message.
    Data(Payload),
    /// The channel owner's welcome (sent to each neighbour that joins the channel).
    Welcome(Welcome),
    /// The author's invite to the channel (sent to each neighbour that joins the channel).
    Auth(Invite),
    /// A request to join `channel`, broadcast on another channel (by default the entry channel).
    OpenChannel {
        /// The channel to join.
        channel: String,
        /// The requester's invite to `channel`, if it is invite-only.
        invite: Option<Invite>,
        /// The owner's welcome of `channel`.
        welcome: Option<Welcome>,
    },
    /// A new epoch key of an invite-only channel, from its owner.
    KeyUpdate(KeyUpdate),
    /// The author joined (`true`) or left (`false`) the frame's channel; neighbours forward a
    /// channel's frames only to neighbours that joined it. Sent to direct neighbours only.
    Subscription {
        /// Joined or left.
        joined: bool,
    },
}

/// An application message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// The message as JSON text, as given by the sender.
    Plain(String),
    /// The message sealed with the channel's epoch key (invite-only channels).
    Sealed {
        /// The epoch of the key.
        epoch: u32,
        /// 24 random bytes.
        #[serde(with = "serde_bytes")]
        nonce: [u8; 24],
        /// XChaCha20-Poly1305 of the JSON text, with a 16-byte tag.
        ciphertext: ByteBuf,
    },
}

/// An owner's blessing of a channel name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The channel.
    pub channel: String,
    /// The channel's owner, who signs.
    pub owner: PublicKey,
    /// Free text shown to joiners.
    pub text: String,
    /// When it was signed, ms.
    pub issued_at: u64,
    /// When it stops being valid, ms (0 = never).
    pub expires_at: u64,
    /// [`WELCOME_VERSION`].
    pub version: u8,
    /// The owner's signature of [`Welcome::digest`].
    pub sig: Signature,
}

/// A signed permission for `invitee` to take part in an invite-only channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The channel.
    pub channel: String,
    /// Who is invited.
    pub invitee: PublicKey,
    /// Who invites (the owner or a configured inviter), and signs.
    pub inviter: PublicKey,
    /// When it was signed, ms.
    pub issued_at: u64,
    /// When it expires, ms.
    pub expires_at: u64,
    /// 16 random bytes.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 16],
    /// The channel's epoch key, wrapped to the invitee.
    pub key: Option<KeyWrap>,
    /// The owner's welcome of the channel.
    pub welcome: Option<Welcome>,
    /// The inviter's signature of [`Invite::digest`] (covers the key wrap and the welcome).
    pub sig: Signature,
}

/// What an inviter signs in an [`Invite`] (everything but the signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteTerms {
    /// The channel.
    pub channel: String,
    /// Who is invited.
    pub invitee: PublicKey,
    /// When it is signed, ms.
    pub issued_at: u64,
    /// When it expires, ms.
    pub expires_at: u64,
    /// 16 random bytes.
    pub nonce: [u8; 16],
    /// The wrapped epoch key.
    pub key: Option<KeyWrap>,
    /// The owner's welcome.
    pub welcome: Option<Welcome>,
}

/// A channel's epoch key encrypted to one member (docs/protocol.md §13.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyWrap {
    /// The key's epoch.
    pub epoch: u32,
    /// 24 random bytes.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 24],
    /// XChaCha20-Poly1305 of the 32-byte key (48 bytes with the tag).
    pub ciphertext: ByteBuf,
}

/// A key rotation of an invite-only channel, signed (as a frame) by its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUpdate {
    /// The new epoch.
    pub epoch: u32,
    /// Members whose invites are revoked from now on.
    pub revoked: Vec<PublicKey>,
    /// The new key wrapped to each remaining member.
    pub wraps: Vec<(PublicKey, KeyWrap)>,
}

/// The scope of a channel's domains: BLAKE3 of the channel name's UTF-8 bytes.
pub fn channel_scope(channel: &str) -> Hash32 {
    hash(channel.as_bytes())
}

/// The message digest the author signs (docs/protocol.md §13.2).
pub fn message_digest(
    channel: &str,
    id: &[u8; 16],
    from: &PublicKey,
    ts: u64,
    body: &Body,
) -> Hash32 {
    let mut hasher = Domain::new(DomainKind::SidechannelMsg, channel_scope(channel)).hasher();
    let fields = (channel, Bytes::new(id), from, ts, body);
    // Streams the canonical encoding into the hasher: no intermediate buffer.
    rmp_serde::encode::write(&mut hasher, &fields).expect("writing into a hasher cannot fail");
    hasher.finalize().into()
}

impl Frame {
    /// A frame signed by `keypair`, without proof of work, with its digest.
    pub fn signed(
        keypair: &Keypair,
        channel: String,
        id: [u8; 16],
        ts: u64,
        ttl: u8,
        body: Body,
    ) -> (Frame, Hash32) {
        let from = keypair.public();
        let digest = message_digest(&channel, &id, &from, ts, &body);
        let frame = Frame {
            version: FRAME_VERSION,
            channel,
            id,
            from,
            ts,
            ttl,
            body,
            pow: 0,
            sig: keypair.sign_hash(&digest),
            relayed_by: None,
        };
        (frame, digest)
    }

    /// The message digest the author signed.
    pub fn digest(&self) -> Hash32 {
        message_digest(&self.channel, &self.id, &self.from, self.ts, &self.body)
    }

    /// Checks the author's signature over `digest` (which must be [`Frame::digest`]).
    pub fn verify(&self, digest: &Hash32) -> Result<(), FrameError> {
        verify_hash(&self.from, digest, &self.sig).map_err(FrameError::from)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a frame, refusing non-canonical bytes and other format versions.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        let frame: Frame = codec::decode(bytes)?;
        if frame.version != FRAME_VERSION {
            return Err(FrameError::Version(frame.version));
        }
        Ok(frame)
    }

    /// The id as 32 lower-case hex digits.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

impl Welcome {
    /// A welcome of `channel` signed by its owner `keypair` (`expires_at` 0 = never).
    pub fn sign(
        keypair: &Keypair,
        channel: &str,
        text: &str,
        issued_at: u64,
        expires_at: u64,
    ) -> Welcome {
        let mut welcome = Welcome {
            channel: channel.to_string(),
            owner: keypair.public(),
            text: text.to_string(),
            issued_at,
            expires_at,
            version: WELCOME_VERSION,
            sig: Signature([0; 64]),
        };
        welcome.sig = keypair.sign_hash(&welcome.digest());
        welcome
    }

    /// `BLAKE3(domain(welcome, BLAKE3(channel)) ‖ encode((channel, owner, text, issued_at,
    /// expires_at, version)))`.
    pub fn digest(&self) -> Hash32 {
        let fields = (
            &self.channel,
            &self.owner,
            &self.text,
            self.issued_at,
            self.expires_at,
            self.version,
        );
        Domain::new(DomainKind::Welcome, channel_scope(&self.channel)).hash(&codec::encode(&fields))
    }

    /// Checks the owner's signature.
    pub fn verify_signature(&self) -> Result<(), FrameError> {
        verify_hash(&self.owner, &self.digest(), &self.sig).map_err(FrameError::from)
    }

    /// Whether it has not expired at `now`.
    pub fn is_current(&self, now: u64) -> bool {
        self.expires_at == 0 || self.expires_at > now
    }

    /// Base64 (standard alphabet, padded) of the canonical encoding.
    pub fn to_base64(&self) -> String {
        BASE64.encode(codec::encode(self))
    }

    /// Reads [`Welcome::to_base64`] text (surrounding whitespace is ignored). The signature is
    /// not checked here.
    pub fn from_base64(text: &str) -> Result<Welcome, FrameError> {
        from_base64(text)
    }
}

impl Invite {
    /// An invite with `terms`, signed by the inviter `keypair`.
    pub fn sign(keypair: &Keypair, terms: InviteTerms) -> Invite {
        let mut invite = Invite {
            channel: terms.channel,
            invitee: terms.invitee,
            inviter: keypair.public(),
            issued_at: terms.issued_at,
            expires_at: terms.expires_at,
            nonce: terms.nonce,
            key: terms.key,
            welcome: terms.welcome,
            sig: Signature([0; 64]),
        };
        invite.sig = keypair.sign_hash(&invite.digest());
        invite
    }

    /// `BLAKE3(domain(invite, BLAKE3(channel)) ‖ encode((channel, invitee, inviter, issued_at,
    /// expires_at, nonce, key, welcome)))`.
    pub fn digest(&self) -> Hash32 {
        let fields = (
            &self.channel,
            &self.invitee,
            &self.inviter,
            self.issued_at,
            self.expires_at,
            Bytes::new(&self.nonce),
            &self.key,
            &self.welcome,
        );
        Domain::new(DomainKind::Invite, channel_scope(&self.channel)).hash(&codec::encode(&fields))
    }

    /// Checks the inviter's signature.
    pub fn verify_signature(&self) -> Result<(), FrameError> {
        verify_hash(&self.inviter, &self.digest(), &self.sig).map_err(FrameError::from)
    }

    /// Base64 (standard alphabet, padded) of the canonical encoding.
    pub fn to_base64(&self) -> String {
        BASE64.encode(codec::encode(self))
    }

    /// Reads [`Invite::to_base64`] text (surrounding whitespace is ignored). The signature is
    /// not checked here.
    pub fn from_base64(text: &str) -> Result<Invite, FrameError> {
        from_base64(text)
    }
}

fn from_base64<T: Serialize + serde::de::DeserializeOwned>(text: &str) -> Result<T, FrameError> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|e| FrameError::Base64(e.to_string()))?;
    Ok(codec::decode(&bytes)?)
}

/// `BLAKE3(digest ‖ u64be(nonce))`: the proof-of-work hash.
pub fn pow_hash(digest: &Hash32, nonce: u64) -> Hash32 {
    let mut input = [0u8; 40];
    input[..32].copy_from_slice(digest.as_bytes());
    input[32..].copy_from_slice(&nonce.to_be_bytes());
    hash(&input)
}

/// Leading zero bits of `bytes` (most significant bit of the first byte first).
pub fn leading_zero_bits(bytes: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in bytes {
        if *byte != 0 {
            return bits + byte.leading_zeros();
        }
        bits += 8;
    }
    bits
}

/// Whether `nonce` proves `difficulty` bits of work for `digest`.
pub fn pow_satisfied(digest: &Hash32, nonce: u64, difficulty: u8) -> bool {
    difficulty == 0
        || leading_zero_bits(pow_hash(digest, nonce).as_bytes()) >= u32::from(difficulty)
}

/// The first nonce, counting from 0, that proves `difficulty` bits of work for `digest`
/// (about 2^difficulty hashes; `difficulty` is capped at [`MAX_POW_DIFFICULTY`]). This is CPU
/// work: a node runs it off its async runtime (`spawn_blocking`).
pub fn solve_pow(digest: &Hash32, difficulty: u8) -> u64 {
    let difficulty = difficulty.min(MAX_POW_DIFFICULTY);
    let mut input = [0u8; 40];
    input[..32].copy_from_slice(digest.as_bytes());
    let mut nonce = 0u64;
    loop {
        input[32..].copy_from_slice(&nonce.to_be_bytes());
        if leading_zero_bits(blake3::hash(&input).as_bytes()) >= u32::from(difficulty) {
            return nonce;
        }
        // 2^64 hashes are out of reach: the search ends long before the counter wraps.
        nonce = nonce.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(n: u8) -> Keypair {
        Keypair::from_seed(&[n; 32])
    }

    fn sample_frame() -> Frame {
        Frame::signed(
            &keypair(1),
            "lobby".into(),
            [7; 16],
            1_700_000_000_000,
            3,
            Body::Data(Payload::Plain(r#"{"hi":1}"#.into())),
        )
        .0
    }

    fn sample_welcome() -> Welcome {
        Welcome::sign(&keypair(2), "lobby", "welcome!", 10, 0)
    }

    fn sample_invite() -> Invite {
        Invite::sign(
            &keypair(2),
            InviteTerms {
                channel: "lobby".into(),
                invitee: keypair(3).public(),
                issued_at: 10,
                expires_at: 20,
                nonce: [9; 16],
                key: Some(KeyWrap {
                    epoch: 1,
                    nonce: [4; 24],
                    ciphertext: ByteBuf::from(vec![5; 48]),
                }),
                welcome: Some(sample_welcome()),
            },
        )
    }

    fn all_bodies() -> Vec<Body> {
        vec![
            Body::Data(Payload::Plain("\"x\"".into())),
            Body::Data(Payload::Sealed {
                epoch: 3,
                nonce: [1; 24],
                ciphertext: ByteBuf::from(vec![2; 20]),
            }),
            Body::Welcome(sample_welcome()),
            Body::Auth(sample_invite()),
            Body::OpenChannel {
                channel: "other".into(),
                invite: Some(sample_invite()),
                welcome: None,
            },
            Body::KeyUpdate(KeyUpdate {
                epoch: 2,
                revoked: vec![keypair(4).public()],
                wraps: vec![(
                    keypair(3).public(),
                    KeyWrap {
                        epoch: 2,
                        nonce: [6; 24],
                        ciphertext: ByteBuf::from(vec![7; 48]),
                    },
                )],
            }),
            Body::Subscription { joined: true },
        ]
    }

    #[test]
    fn every_body_round_trips_and_verifies() {
        for body in all_bodies() {
            let (mut frame, digest) =
                Frame::signed(&keypair(1), "lobby".into(), [3; 16], 42, 2, body);
            frame.pow = 77;
            frame.relayed_by = Some(keypair(5).public());
            let bytes = frame.encode();
            let back = Frame::decode(&bytes).expect("canonical");
            assert_eq!(back, frame);
            assert_eq!(back.digest(), digest);
            back.verify(&digest).expect("signature verifies");
        }
    }

    #[test]
    fn digest_streams_the_same_bytes_as_the_codec() {
        let frame = sample_frame();
        let fields = (
            &frame.channel,
            Bytes::new(&frame.id),
            &frame.from,
            frame.ts,
            &frame.body,
        );
        let expected = Domain::new(DomainKind::SidechannelMsg, channel_scope(&frame.channel))
            .hash(&codec::encode(&fields));
        assert_eq!(frame.digest(), expected);
    }

    #[test]
    fn ids_and_nonces_encode_as_bin() {
        let bytes = sample_frame().encode();
        // array of 10, version 1, "lobby", then the id as bin 8 of 16 bytes.
        assert_eq!(
            &bytes[..9],
            &[0x9a, 0x01, 0xa5, b'l', b'o', b'b', b'b', b'y', 0xc4]
        );
        assert_eq!(bytes[9], 16);
    }

    #[test]
    fn non_canonical_and_foreign_frames_are_refused() {
        let (frame, _) = Frame::signed(
            &keypair(1),
            "lobby".into(),
            [7; 16],
            5,
            3,
            Body::Data(Payload::Plain("1".into())),
        );
        let bytes = frame.encode();
        // Trailing byte.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Frame::decode(&trailing),
            Err(FrameError::Codec(CodecError::TrailingBytes(1)))
        ));
        // ts 5 written as a u64 (cf) instead of a positive fixint.
        let head = 1 + 1 + 6 + 18 + 34;
        assert_eq!(bytes[head], 5);
        let mut long = bytes[..head].to_vec();
        long.push(0xcf);
        long.extend_from_slice(&5u64.to_be_bytes());
        long.extend_from_slice(&bytes[head + 1..]);
        assert!(matches!(
            Frame::decode(&long),
            Err(FrameError::Codec(CodecError::NonCanonical))
        ));
        // The id as an array of integers instead of bin.
        let mut as_array = vec![0x9a, 0x01, 0xa5];
        as_array.extend_from_slice(b"lobby");
        as_array.push(0xdc);
        as_array.extend_from_slice(&16u16.to_be_bytes());
        as_array.extend(std::iter::repeat_n(7u8, 16));
        as_array.extend_from_slice(&bytes[1 + 1 + 6 + 18..]);
        assert!(Frame::decode(&as_array).is_err());
        // Another version.
        let mut v2 = frame.clone();
        v2.version = 2;
        assert_eq!(Frame::decode(&v2.encode()), Err(FrameError::Version(2)));
        // Garbage.
        assert!(Frame::decode(&[0xc1]).is_err());
        assert!(Frame::decode(&[]).is_err());
    }

    #[test]
    fn signature_covers_the_body_but_not_ttl_pow_or_relay() {
        let frame = sample_frame();
        let digest = frame.digest();
        let mut relayed = frame.clone();
        relayed.ttl = 0;
        relayed.pow = 12345;
        relayed.relayed_by = Some(keypair(9).public());
        assert_eq!(relayed.digest(), digest);
        relayed.verify(&digest).expect("still verifies");

        let mut tampered = frame.clone();
        tampered.body = Body::Data(Payload::Plain(r#"{"hi":2}"#.into()));
        assert!(tampered.verify(&tampered.digest()).is_err());
        let mut moved = frame.clone();
        moved.channel = "elsewhere".into();
        assert!(moved.verify(&moved.digest()).is_err());
        let mut forged = frame;
        forged.from = keypair(8).public();
        assert!(forged.verify(&forged.digest()).is_err());
    }

    #[test]
    fn welcome_and_invite_signatures_cover_every_field() {
        let welcome = sample_welcome();
        welcome.verify_signature().expect("verifies");
        let mut longer = welcome.clone();
        longer.expires_at = 99;
        assert!(longer.verify_signature().is_err());

        let invite = sample_invite();
        invite.verify_signature().expect("verifies");
        let mut no_key = invite.clone();
        no_key.key = None;
        assert!(no_key.verify_signature().is_err());
        let mut other_welcome = invite.clone();
        other_welcome.welcome = None;
        assert!(other_welcome.verify_signature().is_err());
        let mut other_invitee = invite;
        other_invitee.invitee = keypair(7).public();
        assert!(other_invitee.verify_signature().is_err());
    }

    #[test]
    fn base64_round_trips() {
        let welcome = sample_welcome();
        assert_eq!(
            Welcome::from_base64(&format!(" {}\n", welcome.to_base64())),
            Ok(welcome)
        );
        let invite = sample_invite();
        assert_eq!(Invite::from_base64(&invite.to_base64()), Ok(invite));
        assert!(matches!(
            Invite::from_base64("not base64!"),
            Err(FrameError::Base64(_))
        ));
        assert!(matches!(
            Invite::from_base64("AAAA"),
            Err(FrameError::Codec(_))
        ));
    }

    #[test]
    fn proof_of_work_search_and_check_agree() {
        let digest = sample_frame().digest();
        for difficulty in [0u8, 1, 4, 8, 12] {
            let nonce = solve_pow(&digest, difficulty);
            assert!(pow_satisfied(&digest, nonce, difficulty));
            // The search starts at 0, so no smaller nonce works.
            assert!((0..nonce).all(|n| !pow_satisfied(&digest, n, difficulty)));
        }
        assert_eq!(solve_pow(&digest, 0), 0);
        assert_eq!(leading_zero_bits(&[0, 0x10]), 11);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
        assert_eq!(leading_zero_bits(&[0x80]), 0);
    }
}
