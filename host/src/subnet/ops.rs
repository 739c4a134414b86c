//! Subnet operations: what writers append to their logs (docs/protocol.md, "Subnet ops").
//!
//! Every op is the canonical encoding of an [`Envelope`] (format version + [`SubnetOp`]).
//! System actions are [`SignedOp`]s: the signer signs the action, a nonce and an expiry height in
//! the subnet's `subnet-op` domain, so a signature is valid in one subnet only, and only until
//! its expiry; authority comes from the signature, never from the writer that relays the op.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::settlement::SettlementScheme;
use crate::codec;
use crate::crypto::{Domain, DomainKind, Hash32, Keypair, PublicKey, Signature};
use crate::runtime::{HARD_CAPS, Limits};

/// Format version of subnet ops.
pub const OP_VERSION: u8 = 1;

/// Bytes of every chunk of a deployed component but the last.
pub const CHUNK_BYTES: usize = 512 << 10;

/// Longest nick, in UTF-8 bytes.
pub const MAX_NICK_BYTES: usize = 32;
/// Most attachments of one chat message.
pub const MAX_ATTACHMENTS: usize = 8;
/// Longest attachment reference, in bytes.
pub const MAX_ATTACHMENT_BYTES: usize = 256;
/// Longest feature name.
pub const MAX_FEATURE_NAME_BYTES: usize = 64;
/// Longest feature key.
pub const MAX_FEATURE_KEY_BYTES: usize = 256;
/// Longest contract function name.
pub const MAX_FUNCTION_BYTES: usize = 128;
/// Most writers that can be indexers at once.
pub const MAX_INDEXERS: usize = 32;
/// Longest op that is not a contract chunk.
pub const MAX_SYSTEM_OP_BYTES: usize = 64 << 10;

/// An op with its format version, as stored in a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`OP_VERSION`].
    pub version: u8,
    /// The op.
    pub op: SubnetOp,
}

/// The ops of a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubnetOp {
    /// Sets the first admin. Effective only in the subnet creator's own log while no admin
    /// record exists (one-shot, like the reference's `addAdmin`).
    AddAdmin {
        /// The admin key.
        key: PublicKey,
    },
    /// A signed system action.
    Signed(SignedOp),
    /// A chunk of a component announced by a signed `DeployContract` (any writer may relay it:
    /// its hash is in the signed announcement).
    ContractChunk {
        /// The component's hash.
        hash: Hash32,
        /// The chunk's index.
        index: u32,
        /// Its bytes.
        bytes: ByteBuf,
    },
    /// A contract transaction settled on MSB.
    Tx(TxOp),
    /// A change of the MSB indexer set the subnet trusts, with the MSB proof of the admin op
    /// that made it (any writer may relay it).
    MsbIndexerChange {
        /// The settlement proof of the MSB `addIndexer` / `removeIndexer` op.
        proof: ByteBuf,
    },
}

/// A settled contract transaction: the call and the settlement that authorises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxOp {
    /// The contract function.
    pub function: String,
    /// Its MessagePack arguments.
    pub args: ByteBuf,
    /// The settlement proof, checked by the subnet's [`super::SettlementVerifier`].
    pub settlement: ByteBuf,
}

impl TxOp {
    /// The content hash a settlement must commit to: BLAKE3 in the subnet's `subnet-op` domain
    /// of `encode(("tx", function, args))`.
    pub fn content_hash(subnet: &Hash32, function: &str, args: &[u8]) -> Hash32 {
        let payload = codec::encode(&("tx", function, serde_bytes::Bytes::new(args)));
        Domain::new(DomainKind::SubnetOp, *subnet).hash(&payload)
    }
}

/// A system action with its signer's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOp {
    /// What is asked.
    pub action: Action,
    /// Who signs (the admin, a moderator, a user, depending on the action).
    pub signer: PublicKey,
    /// Makes otherwise identical actions distinct.
    pub nonce: u64,
    /// Last checkpoint height at which the op may apply.
    pub expires: u64,
    /// Signature of [`SignedOp::hash`].
    pub signature: Signature,
}

impl SignedOp {
    /// Signs `action` for `subnet`.
    pub fn sign(
        keypair: &Keypair,
        subnet: &Hash32,
        action: Action,
        nonce: u64,
        expires: u64,
    ) -> Self {
        let signer = keypair.public();
        let hash = Self::signed_hash(subnet, &action, &signer, nonce, expires);
        SignedOp {
            signature: keypair.sign_hash(&hash),
            action,
            signer,
            nonce,
            expires,
        }
    }

    /// BLAKE3(domain(subnet-op, subnet) ‖ encode((action, signer, nonce, expires))): what is
    /// signed, and the op's identity in the replay guard.
    pub fn signed_hash(
        subnet: &Hash32,
        action: &Action,
        signer: &PublicKey,
        nonce: u64,
        expires: u64,
    ) -> Hash32 {
        let payload = codec::encode(&(action, signer, nonce, expires));
        Domain::new(DomainKind::SubnetOp, *subnet).hash(&payload)
    }

    /// This op's signed hash.
    pub fn hash(&self, subnet: &Hash32) -> Hash32 {
        Self::signed_hash(subnet, &self.action, &self.signer, self.nonce, self.expires)
    }
}

/// The system actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Admin: hands the admin role to another key, or renounces it (`None`, irreversible).
    UpdateAdmin {
        /// The new admin.
        admin: Option<PublicKey>,
    },
    /// Admin: adds a writer.
    AddWriter {
        /// The writer key.
        key: PublicKey,
    },
    /// Admin: adds an indexer (also a writer).
    AddIndexer {
        /// The indexer key.
        key: PublicKey,
    },
    /// Admin: removes a writer or indexer (never the last indexer) and bans it from auto-add.
    RemoveWriter {
        /// The key.
        key: PublicKey,
    },
    /// Admin: demotes an indexer to a plain writer (never the last indexer).
    RemoveIndexer {
        /// The key.
        key: PublicKey,
    },
    /// Admin: makes an indexer the sequencer (first of the set).
    SetSequencer {
        /// The indexer key.
        key: PublicKey,
    },
    /// Admin: lets keys add themselves as writers.
    SetAutoAddWriters {
        /// On or off.
        enabled: bool,
    },
    /// Signed by the key that asks to become a writer (effective while auto-add is on and
    /// the key is not banned).
    AutoAddWriter,
    /// Admin: turns chat on or off.
    SetChatStatus {
        /// On or off.
        enabled: bool,
    },
    /// Admin: enables or disables contract transactions.
    EnableTransactions {
        /// Enabled or not.
        enabled: bool,
    },
    /// Admin: enforces the chat whitelist or not.
    EnableWhitelist {
        /// Enforced or not.
        enabled: bool,
    },
    /// Admin: whitelists a user or not.
    SetWhitelistStatus {
        /// The user.
        user: PublicKey,
        /// Whitelisted or not.
        status: bool,
    },
    /// Admin: makes a user a moderator or not.
    SetMod {
        /// The user.
        user: PublicKey,
        /// Moderator or not.
        enabled: bool,
    },
    /// Admin, or a moderator for a user who is neither admin nor moderator: mutes or unmutes.
    MuteStatus {
        /// The user.
        user: PublicKey,
        /// Muted or not.
        muted: bool,
    },
    /// The user, the admin, or a moderator (for a user who is neither): sets a unique nick.
    SetNick {
        /// Whose nick.
        user: PublicKey,
        /// The nick (1 to 32 UTF-8 bytes, no control characters).
        nick: String,
    },
    /// The author: posts a chat message.
    PostMessage {
        /// The text.
        text: String,
        /// Attachment references.
        attachments: Vec<String>,
        /// The message it replies to.
        reply_to: Option<u64>,
    },
    /// The admin, a moderator (not on the admin's messages) or the author: deletes a message.
    DeleteMessage {
        /// The message number.
        id: u64,
    },
    /// Admin or moderator: pins or unpins a message (keeping its pin slot).
    PinMessage {
        /// The message number.
        id: u64,
        /// Pinned or not.
        pinned: bool,
    },
    /// Admin or moderator: unpins by pin slot and frees the message's slot.
    UnpinMessage {
        /// The pin slot.
        pin: u64,
    },
    /// Admin: a feature entry for the contract (for example the timer).
    Feature {
        /// The feature.
        feature: String,
        /// The entry's key.
        key: String,
        /// Its MessagePack value.
        value: ByteBuf,
    },
    /// Admin: announces a component; its chunks follow as `ContractChunk` ops and it is
    /// activated at the op that completes it.
    DeployContract {
        /// BLAKE3 of the component.
        hash: Hash32,
        /// Its size in bytes.
        size: u64,
        /// BLAKE3 of each chunk ([`CHUNK_BYTES`] each, the last one shorter).
        chunks: Vec<Hash32>,
    },
    /// Admin: sets the MSB network and indexer keys whose settlements the subnet accepts.
    SetMsbTrust {
        /// The MSB network id.
        network: Hash32,
        /// Its indexer keys (1 to 32).
        indexers: Vec<PublicKey>,
        /// How settlements are proven.
        scheme: SettlementScheme,
    },
    /// Admin: sets the consensus parameters (within the protocol hard caps).
    SetParams {
        /// The parameters.
        params: Params,
    },
}

impl Action {
    /// The action's name (as in logs and the reference).
    pub fn name(&self) -> &'static str {
        match self {
            Action::UpdateAdmin { .. } => "updateAdmin",
            Action::AddWriter { .. } => "addWriter",
            Action::AddIndexer { .. } => "addIndexer",
            Action::RemoveWriter { .. } => "removeWriter",
            Action::RemoveIndexer { .. } => "removeIndexer",
            Action::SetSequencer { .. } => "setSequencer",
            Action::SetAutoAddWriters { .. } => "setAutoAddWriters",
            Action::AutoAddWriter => "autoAddWriter",
            Action::SetChatStatus { .. } => "setChatStatus",
            Action::EnableTransactions { .. } => "enableTransactions",
            Action::EnableWhitelist { .. } => "enableWhitelist",
            Action::SetWhitelistStatus { .. } => "setWhitelistStatus",
            Action::SetMod { .. } => "setMod",
            Action::MuteStatus { .. } => "muteStatus",
            Action::SetNick { .. } => "setNick",
            Action::PostMessage { .. } => "msg",
            Action::DeleteMessage { .. } => "deleteMessage",
            Action::PinMessage { .. } => "pinMessage",
            Action::UnpinMessage { .. } => "unpinMessage",
            Action::Feature { .. } => "feature",
            Action::DeployContract { .. } => "deployContract",
            Action::SetMsbTrust { .. } => "setMsbTrust",
            Action::SetParams { .. } => "setParams",
        }
    }

    /// Length and format checks of the fields (the same on every node).
    pub fn check_fields(&self, params: &Params) -> Result<(), String> {
        match self {
            Action::SetNick { nick, .. } => check_nick(nick),
            Action::PostMessage {
                text, attachments, ..
            } => {
                if text.is_empty() {
                    return Err("empty message".into());
                }
                if text.len() > params.max_message_bytes as usize {
                    return Err(format!(
                        "message of {} bytes exceeds {}",
                        text.len(),
                        params.max_message_bytes
                    ));
                }
                if attachments.len() > MAX_ATTACHMENTS {
                    return Err(format!("more than {MAX_ATTACHMENTS} attachments"));
                }
                if attachments
                    .iter()
                    .any(|a| a.is_empty() || a.len() > MAX_ATTACHMENT_BYTES || has_control(a))
                {
                    return Err(format!(
                        "attachments must be 1 to {MAX_ATTACHMENT_BYTES} bytes without control characters"
                    ));
                }
                Ok(())
            }
            Action::Feature {
                feature,
                key,
                value,
            } => {
                check_name("feature", feature, MAX_FEATURE_NAME_BYTES)?;
                check_name("feature key", key, MAX_FEATURE_KEY_BYTES)?;
                if value.len() > params.max_feature_bytes as usize {
                    return Err(format!(
                        "feature value of {} bytes exceeds {}",
                        value.len(),
                        params.max_feature_bytes
                    ));
                }
                Ok(())
            }
            Action::DeployContract { size, chunks, .. } => {
                if *size == 0 || *size > u64::from(params.limits.max_component_bytes) {
                    return Err(format!(
                        "component of {size} bytes: must be 1 to {} bytes",
                        params.limits.max_component_bytes
                    ));
                }
                let expected = size.div_ceil(CHUNK_BYTES as u64);
                if chunks.len() as u64 != expected {
                    return Err(format!(
                        "{} chunk hashes for {size} bytes (expected {expected})",
                        chunks.len()
                    ));
                }
                Ok(())
            }
            Action::SetMsbTrust { indexers, .. } => {
                if indexers.is_empty() || indexers.len() > MAX_INDEXERS {
                    return Err(format!("1 to {MAX_INDEXERS} MSB indexers"));
                }
                Ok(())
            }
            Action::SetParams { params } => params.check(),
            _ => Ok(()),
        }
    }
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

fn check_name(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.is_empty() || text.len() > max || has_control(text) {
        return Err(format!(
            "{what} must be 1 to {max} bytes without control characters"
        ));
    }
    Ok(())
}

/// Checks a nick: 1 to [`MAX_NICK_BYTES`] UTF-8 bytes, no control characters, no `/`.
pub fn check_nick(nick: &str) -> Result<(), String> {
    check_name("nick", nick, MAX_NICK_BYTES)?;
    if nick.trim() != nick || nick.contains('/') {
        return Err("nick must not start or end with spaces or contain '/'".into());
    }
    Ok(())
}

/// Consensus parameters held in subnet state (`params`), changed by `SetParams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Limits of contract calls.
    pub limits: Limits,
    /// Farthest expiry a signed op may name, in checkpoints after the one applying it.
    pub max_op_ttl: u64,
    /// Longest chat message text.
    pub max_message_bytes: u32,
    /// Longest transaction op.
    pub max_tx_bytes: u32,
    /// Longest feature value.
    pub max_feature_bytes: u32,
}

/// The hard caps of the subnet parameters (part of the protocol).
pub const PARAM_CAPS: Params = Params {
    limits: HARD_CAPS,
    max_op_ttl: 1_000_000,
    max_message_bytes: 64 << 10,
    max_tx_bytes: 1 << 20,
    max_feature_bytes: 64 << 10,
};

impl Default for Params {
    fn default() -> Self {
        Params {
            limits: Limits::default(),
            max_op_ttl: 100_000,
            max_message_bytes: 4 << 10,
            max_tx_bytes: 64 << 10,
            max_feature_bytes: 4 << 10,
        }
    }
}

impl Params {
    /// Checks every parameter against [`PARAM_CAPS`] (none may be zero).
    pub fn check(&self) -> Result<(), String> {
        self.limits.check().map_err(|e| e.to_string())?;
        let pairs = [
            ("max_op_ttl", self.max_op_ttl, PARAM_CAPS.max_op_ttl),
            (
                "max_message_bytes",
                self.max_message_bytes.into(),
                PARAM_CAPS.max_message_bytes.into(),
            ),
            (
                "max_tx_bytes",
                self.max_tx_bytes.into(),
                PARAM_CAPS.max_tx_bytes.into(),
            ),
            (
                "max_feature_bytes",
                self.max_feature_bytes.into(),
                PARAM_CAPS.max_feature_bytes.into(),
            ),
        ];
        for (name, value, cap) in pairs {
            if value == 0 || value > cap {
                return Err(format!("parameter {name} = {value} must be 1 to {cap}"));
            }
        }
        Ok(())
    }
}

/// Encodes an op for a log.
pub fn encode_op(op: &SubnetOp) -> Vec<u8> {
    codec::encode(&Envelope {
        version: OP_VERSION,
        op: op.clone(),
    })
}

/// Decodes an op (strict canonical decoding, version checked).
pub fn decode_op(bytes: &[u8]) -> Result<SubnetOp, String> {
    let envelope: Envelope = codec::decode(bytes).map_err(|e| e.to_string())?;
    if envelope.version != OP_VERSION {
        return Err(format!(
            "op format version {} (this node speaks {OP_VERSION})",
            envelope.version
        ));
    }
    Ok(envelope.op)
}

/// Signs actions of one key for one subnet and encodes them as ops.
#[derive(Clone)]
pub struct OpSigner {
    keypair: Keypair,
    subnet: Hash32,
}

impl OpSigner {
    /// A signer for `subnet`.
    pub fn new(keypair: Keypair, subnet: Hash32) -> Self {
        OpSigner { keypair, subnet }
    }

    /// The signing key.
    pub fn public(&self) -> PublicKey {
        self.keypair.public()
    }

    /// A signed op, encoded, with a random nonce.
    pub fn sign(&self, action: Action, expires: u64) -> Vec<u8> {
        self.sign_with_nonce(action, rand::random(), expires)
    }

    /// A signed op, encoded, with the given nonce.
    pub fn sign_with_nonce(&self, action: Action, nonce: u64, expires: u64) -> Vec<u8> {
        encode_op(&SubnetOp::Signed(SignedOp::sign(
            &self.keypair,
            &self.subnet,
            action,
            nonce,
            expires,
        )))
    }
}

/// The ops that deploy `component`: the signed announcement, then one op per chunk.
pub fn deploy_ops(signer: &OpSigner, component: &[u8], expires: u64) -> Vec<Vec<u8>> {
    let hash = crate::crypto::hash(component);
    let chunks: Vec<&[u8]> = component.chunks(CHUNK_BYTES).collect();
    let mut ops = vec![signer.sign(
        Action::DeployContract {
            hash,
            size: component.len() as u64,
            chunks: chunks.iter().map(|c| crate::crypto::hash(c)).collect(),
        },
        expires,
    )];
    ops.extend(chunks.iter().enumerate().map(|(index, bytes)| {
        encode_op(&SubnetOp::ContractChunk {
            hash,
            index: index as u32,
            bytes: ByteBuf::from(bytes.to_vec()),
        })
    }));
    ops
}
