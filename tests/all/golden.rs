//! The golden vectors of docs/protocol.md, checked against the code.
//!
//! Every fenced block tagged `vector` in the document is parsed as `field: value` lines and
//! recomputed here; a block whose outputs differ fails with the computed values, so the
//! document and the implementation cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trac_host::codec;
use trac_host::crypto::keystore::{self, KdfParams, SecretBox};
use trac_host::crypto::{Domain, DomainKind, Hash32, Keypair, PublicKey, decode_address};
use trac_host::ledger::{
    Ack, Checkpoint, CheckpointBody, LedgerLimits, LogEntry, LogFrontier, merkle,
};
use trac_host::msb::{MsbGenesis, PartialOp, Receipt, UserAction, UserBody};
use trac_host::runtime::{CallContext, OpKind, runtime_protocol_version};
use trac_host::store::Lattice;
use trac_host::subnet::{Action, SignedOp, SubnetGenesis, SubnetOp, TxOp, decode_op, encode_op};

type Vector = BTreeMap<String, String>;

fn vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
    let mut out = Vec::new();
    let mut current: Option<Vector> = None;
    for line in doc.lines() {
        match (&mut current, line.trim()) {
            (None, "```vector") => current = Some(Vector::new()),
            (Some(_), "```") => out.push(current.take().expect("inside a block")),
            (Some(v), field) => {
                let (key, value) = field
                    .split_once(':')
                    .unwrap_or_else(|| panic!("vector line without ':': {field}"));
                v.insert(key.trim().to_string(), value.trim().to_string());
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "unterminated vector block");
    out
}

fn field<'a>(v: &'a Vector, key: &str) -> &'a str {
    v.get(key)
        .unwrap_or_else(|| panic!("vector {:?} lacks field {key}", v.get("name")))
}

fn bytes(v: &Vector, key: &str) -> Vec<u8> {
    let text = field(v, key);
    if text == "(empty)" {
        return Vec::new();
    }
    hex::decode(text).unwrap_or_else(|e| panic!("field {key}: {e}"))
}

fn arr<const N: usize>(v: &Vector, key: &str) -> [u8; N] {
    bytes(v, key)
        .try_into()
        .unwrap_or_else(|_| panic!("field {key} must be {N} bytes"))
}

fn domain_kind(name: &str) -> DomainKind {
    DomainKind::ALL
        .into_iter()
        .find(|k| k.as_str() == name)
        .unwrap_or_else(|| panic!("unknown domain kind {name}"))
}

/// Collects mismatches so one run reports every wrong output.
struct Check {
    failures: Vec<String>,
}

impl Check {
    fn eq(&mut self, v: &Vector, key: &str, computed: &str) {
        let expected = field(v, key);
        if expected != computed {
            self.failures.push(format!(
                "vector {}: {key} is {expected}, computed {computed}",
                field(v, "name")
            ));
        }
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Sample {
    version: u8,
    seq: u64,
    amount: u128,
    memo: String,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    hash: Hash32,
    parent: Option<Hash32>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum SampleOp {
    Ping,
    Transfer { to: PublicKey, amount: u128 },
}

/// Encodes the named sample value and checks that decoding its encoding gives it back.
fn encode_sample(name: &str) -> Vec<u8> {
    fn round<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        value: T,
    ) -> Vec<u8> {
        let bytes = codec::encode(&value);
        assert_eq!(codec::decode::<T>(&bytes).expect("canonical"), value);
        bytes
    }
    match name {
        "u64 5" => round(5u64),
        "u64 300" => round(300u64),
        "u64 max" => round(u64::MAX),
        "i64 -1" => round(-1i64),
        "u128 fee" => round(30_000_000_000_000_000u128),
        "string trac" => round("trac".to_string()),
        "bytes 010203" => round(serde_bytes::ByteBuf::from(vec![1u8, 2, 3])),
        "hash32 0x11" => round(Hash32([0x11; 32])),
        "none" => round(Option::<u64>::None),
        "bool true" => round(true),
        "struct sample" => round(Sample {
            version: 1,
            seq: 7,
            amount: 1_000_000_000_000_000_000,
            memo: "hi".into(),
            data: vec![0xde, 0xad],
            hash: Hash32([0x22; 32]),
            parent: None,
        }),
        "enum ping" => round(SampleOp::Ping),
        "enum transfer" => round(SampleOp::Transfer {
            to: PublicKey([0x33; 32]),
            amount: 5,
        }),
        other => panic!("unknown sample {other}"),
    }
}

#[test]
fn protocol_document_vectors_match_the_code() {
    let vectors = vectors();
    assert!(
        vectors.len() >= 20,
        "expected the document's vectors, found {}",
        vectors.len()
    );
    let mut check = Check {
        failures: Vec::new(),
    };
    let mut kinds = BTreeMap::<String, usize>::new();
    for v in &vectors {
        let kind = field(v, "kind").to_string();
        *kinds.entry(kind.clone()).or_default() += 1;
        match kind.as_str() {
            "encoding" => {
                let computed = encode_sample(field(v, "value"));
                check.eq(v, "bytes", &hex::encode(&computed));
            }
            "domain" => {
                let domain = Domain::new(
                    domain_kind(field(v, "domain")),
                    Hash32(arr::<32>(v, "scope")),
                );
                check.eq(v, "prefix", &hex::encode(domain.prefix()));
                check.eq(v, "hash", &domain.hash(&bytes(v, "payload")).to_hex());
            }
            "signature" => {
                let keypair = Keypair::from_seed(&arr::<32>(v, "seed"));
                let domain = Domain::new(
                    domain_kind(field(v, "domain")),
                    Hash32(arr::<32>(v, "scope")),
                );
                let payload = bytes(v, "payload");
                let signature = keypair.sign(&domain, &payload);
                check.eq(v, "public-key", &keypair.public().to_hex());
                check.eq(v, "signature", &signature.to_hex());
                assert!(
                    keypair
                        .public()
                        .verify(&domain, &payload, &signature)
                        .is_ok()
                );
            }
            "address" => {
                let key = PublicKey(arr::<32>(v, "public-key"));
                let address = key.address();
                check.eq(v, "address", &address);
                assert_eq!(decode_address(&address), Ok(key));
            }
            "keystore" => {
                let keypair = Keypair::from_seed(&arr::<32>(v, "seed"));
                let kdf = KdfParams {
                    m_cost_kib: field(v, "m-cost-kib").parse().expect("number"),
                    t_cost: field(v, "t-cost").parse().expect("number"),
                    p_cost: field(v, "p-cost").parse().expect("number"),
                };
                let file = keystore::seal_with(
                    &keypair,
                    field(v, "passphrase"),
                    kdf,
                    &arr::<16>(v, "salt"),
                    &arr::<24>(v, "nonce"),
                )
                .expect("valid parameters");
                let SecretBox::Argon2idXchacha20poly1305 { ciphertext, .. } = &file.secret else {
                    panic!("a passphrase encrypts");
                };
                check.eq(v, "ciphertext", ciphertext);
            }
            "state-root" => {
                let mut lattice = Lattice::new();
                let records = field(v, "records");
                if records != "(none)" {
                    for record in records.split(',') {
                        let (key, value) = record.trim().split_once('=').expect("key=value");
                        lattice.insert(
                            &hex::decode(key).expect("hex key"),
                            &hex::decode(value).expect("hex value"),
                        );
                    }
                }
                check.eq(v, "root", &lattice.root().to_hex());
            }
            "call-seed" => {
                let context = CallContext {
                    op_kind: OpKind::Tx,
                    tx_hash: Hash32(arr::<32>(v, "tx-hash")),
                    sender: PublicKey(arr::<32>(v, "sender")),
                    validator: None,
                    log_position: field(v, "log-position").parse().expect("number"),
                    checkpoint_time: field(v, "checkpoint-time").parse().expect("number"),
                };
                check.eq(v, "seed", &context.seed().to_hex());
            }
            "log-entry" => {
                let keypair = Keypair::from_seed(&arr::<32>(v, "seed"));
                let network = Hash32(arr::<32>(v, "network"));
                let ops: Vec<Vec<u8>> = field(v, "ops")
                    .split(',')
                    .map(|op| hex::decode(op.trim()).expect("hex op"))
                    .collect();
                let entry = LogEntry::sign(
                    &keypair,
                    &network,
                    field(v, "seq").parse().expect("number"),
                    Hash32(arr::<32>(v, "prev")),
                    Vec::new(),
                    ops,
                );
                check.eq(v, "hash", &entry.hash(&network).to_hex());
                check.eq(v, "signature", &entry.signature.to_hex());
                entry
                    .verify(&network, &LedgerLimits::default())
                    .expect("the vector's entry verifies");
            }
            "checkpoint" => {
                let keypair = Keypair::from_seed(&arr::<32>(v, "seed"));
                let network = Hash32(arr::<32>(v, "network"));
                let body = CheckpointBody {
                    version: 1,
                    height: field(v, "height").parse().expect("number"),
                    prev: Hash32(arr::<32>(v, "prev")),
                    time: field(v, "time").parse().expect("number"),
                    frontier: vec![LogFrontier {
                        writer: PublicKey(arr::<32>(v, "frontier-writer")),
                        next: field(v, "frontier-next").parse().expect("number"),
                        last: Hash32(arr::<32>(v, "frontier-last")),
                    }],
                    state_root: Hash32(arr::<32>(v, "state-root")),
                    receipts_root: Hash32(arr::<32>(v, "receipts-root")),
                    sequencer: keypair.public(),
                };
                let checkpoint = Checkpoint::sign(&keypair, &network, body);
                check.eq(v, "hash", &checkpoint.hash(&network).to_hex());
                let ack = Ack::sign(&keypair, &network, &checkpoint);
                check.eq(v, "ack-signature", &ack.signature.to_hex());
                checkpoint
                    .verify(&network)
                    .expect("the vector's checkpoint verifies");
                ack.verify(&network).expect("the vector's ack verifies");
            }
            "merkle" => {
                let receipts: Vec<Vec<u8>> = field(v, "receipts")
                    .split(',')
                    .map(|r| hex::decode(r.trim()).expect("hex receipt"))
                    .collect();
                let root = merkle::root(&receipts);
                check.eq(v, "root", &root.to_hex());
                for (i, receipt) in receipts.iter().enumerate() {
                    let proof = merkle::proof(&receipts, i).expect("in range");
                    assert!(merkle::verify(&root, receipt, &proof));
                }
            }
            "runtime-version" => {
                check.eq(v, "version", &runtime_protocol_version().to_hex());
            }
            "subnet-id" => {
                let genesis = SubnetGenesis {
                    creator: PublicKey(arr::<32>(v, "creator")),
                    channel: field(v, "channel").to_string(),
                    salt: arr::<16>(v, "salt"),
                };
                check.eq(v, "id", &genesis.id().to_hex());
            }
            "subnet-op" => {
                let keypair = Keypair::from_seed(&arr::<32>(v, "seed"));
                let subnet = Hash32(arr::<32>(v, "subnet"));
                let signed = SignedOp::sign(
                    &keypair,
                    &subnet,
                    Action::SetChatStatus { enabled: true },
                    field(v, "nonce").parse().expect("number"),
                    field(v, "expires").parse().expect("number"),
                );
                let op = encode_op(&SubnetOp::Signed(signed.clone()));
                check.eq(v, "op", &hex::encode(&op));
                check.eq(v, "hash", &signed.hash(&subnet).to_hex());
                check.eq(v, "signature", &signed.signature.to_hex());
                assert_eq!(decode_op(&op), Ok(SubnetOp::Signed(signed)));
            }
            "tx-content" => {
                let subnet = Hash32(arr::<32>(v, "subnet"));
                let content = TxOp::content_hash(&subnet, field(v, "function"), &bytes(v, "args"));
                check.eq(v, "content", &content.to_hex());
            }
            "msb-network" => {
                let genesis = MsbGenesis {
                    admin: PublicKey(arr::<32>(v, "admin")),
                    salt: arr::<16>(v, "salt"),
                    funds: vec![(
                        PublicKey(arr::<32>(v, "fund-key")),
                        field(v, "fund-amount").parse().expect("number"),
                    )],
                    faucet: Some(field(v, "faucet").parse().expect("number")),
                };
                check.eq(v, "id", &genesis.id().to_hex());
            }
            "msb-user-op" => {
                let network = Hash32(arr::<32>(v, "network"));
                let requester = Keypair::from_seed(&arr::<32>(v, "requester-seed"));
                let validator = Keypair::from_seed(&arr::<32>(v, "validator-seed"));
                let body = UserBody {
                    action: UserAction::Transfer {
                        to: PublicKey(arr::<32>(v, "to")),
                        amount: field(v, "amount").parse().expect("number"),
                    },
                    requester: requester.public(),
                    nonce: field(v, "nonce").parse().expect("number"),
                    expires: field(v, "expires").parse().expect("number"),
                };
                let partial = PartialOp::sign(&requester, &network, body);
                check.eq(v, "tx-hash", &partial.body.tx_hash(&network).to_hex());
                check.eq(v, "requester-sig", &partial.requester_sig.to_hex());
                let complete = partial.complete(&validator, &network);
                check.eq(v, "validator-sig", &complete.validator_sig.to_hex());
            }
            "msb-receipt" => {
                let receipt = Receipt {
                    tx_hash: Hash32(arr::<32>(v, "tx-hash")),
                    kind: "transfer".into(),
                    requester: Some(PublicKey(arr::<32>(v, "requester"))),
                    validator: Some(PublicKey(arr::<32>(v, "validator"))),
                    fee: field(v, "fee").parse().expect("number"),
                    error: None,
                };
                let bytes = codec::encode(&receipt);
                check.eq(v, "bytes", &hex::encode(&bytes));
                check.eq(v, "leaf", &merkle::leaf(&bytes).to_hex());
            }
            other => panic!("unknown vector kind {other}"),
        }
    }
    assert!(
        check.failures.is_empty(),
        "docs/protocol.md disagrees with the code:\n{}",
        check.failures.join("\n")
    );
    for required in [
        "encoding",
        "domain",
        "signature",
        "address",
        "keystore",
        "state-root",
    ] {
        assert!(
            kinds.contains_key(required),
            "no {required} vectors in docs/protocol.md"
        );
    }
}

/// The sidechannel vectors of docs/protocol.md §13: fenced blocks tagged
/// `sidechannel-vector`, in the same `field: value` form.
fn sidechannel_vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
    let mut out = Vec::new();
    let mut current: Option<Vector> = None;
    for line in doc.lines() {
        match (&mut current, line.trim()) {
            (None, "```sidechannel-vector") => current = Some(Vector::new()),
            (Some(_), "```") => out.push(current.take().expect("inside a block")),
            (Some(v), text) => {
                let (key, value) = text
                    .split_once(':')
                    .unwrap_or_else(|| panic!("vector line without ':': {text}"));
                v.insert(key.trim().to_string(), value.trim().to_string());
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "unterminated sidechannel vector block");
    out
}

fn number<T: std::str::FromStr>(v: &Vector, key: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    field(v, key).parse().expect("a number")
}

fn sc_body(text: &str) -> trac_host::sidechannel::frame::Body {
    use trac_host::sidechannel::frame::{Body, Payload};
    match text.split_once(' ') {
        Some(("plain", json)) => Body::Data(Payload::Plain(json.to_string())),
        Some(("subscription", joined)) => Body::Subscription {
            joined: joined == "true",
        },
        _ => panic!("unknown sidechannel body {text}"),
    }
}

fn check_sidechannel_vector(check: &mut Check, v: &Vector) {
    use base64::Engine as _;
    use trac_host::sidechannel::e2e::{self, EpochKey, X25519Secret};
    use trac_host::sidechannel::frame::{
        Frame, Invite, InviteTerms, Welcome, channel_scope, pow_hash, pow_satisfied, solve_pow,
    };
    let seed_key = |key: &str| Keypair::from_seed(&arr::<32>(v, key));
    match field(v, "kind") {
        "sc-frame" => {
            let (mut frame, digest) = Frame::signed(
                &seed_key("seed"),
                field(v, "channel").to_string(),
                arr::<16>(v, "id"),
                number(v, "ts"),
                number(v, "ttl"),
                sc_body(field(v, "body")),
            );
            frame.pow = number(v, "pow");
            if field(v, "relayed-by") != "(none)" {
                frame.relayed_by = Some(PublicKey(arr::<32>(v, "relayed-by")));
            }
            let encoded = frame.encode();
            check.eq(v, "scope", &channel_scope(&frame.channel).to_hex());
            check.eq(v, "digest", &digest.to_hex());
            check.eq(v, "signature", &frame.sig.to_hex());
            check.eq(v, "bytes", &hex::encode(&encoded));
            let back = Frame::decode(&encoded).expect("the vector's frame decodes");
            assert_eq!(back.digest(), digest);
            back.verify(&digest)
                .expect("the vector's signature verifies");
        }
        "sc-pow" => {
            let digest = Hash32(arr::<32>(v, "digest"));
            let difficulty: u8 = number(v, "difficulty");
            let nonce = solve_pow(&digest, difficulty);
            check.eq(v, "nonce", &nonce.to_string());
            check.eq(v, "hash", &pow_hash(&digest, nonce).to_hex());
            assert!(pow_satisfied(&digest, nonce, difficulty));
        }
        "sc-welcome" => {
            let welcome = Welcome::sign(
                &seed_key("seed"),
                field(v, "channel"),
                field(v, "text"),
                number(v, "issued-at"),
                number(v, "expires-at"),
            );
            check.eq(v, "digest", &welcome.digest().to_hex());
            check.eq(v, "signature", &welcome.sig.to_hex());
            check.eq(v, "base64", &welcome.to_base64());
            assert_eq!(Welcome::from_base64(&welcome.to_base64()), Ok(welcome));
        }
        "sc-x25519" => {
            let (a, b) = (seed_key("seed-a"), seed_key("seed-b"));
            let (sa, sb) = (
                X25519Secret::from_keypair(&a),
                X25519Secret::from_keypair(&b),
            );
            check.eq(v, "x25519-public-a", &hex::encode(sa.public()));
            check.eq(v, "x25519-public-b", &hex::encode(sb.public()));
            let shared = sa.shared(&b.public()).expect("shared secret");
            check.eq(v, "shared", &hex::encode(*shared));
            assert_eq!(*sb.shared(&a.public()).expect("shared secret"), *shared);
        }
        "sc-key-wrap" => {
            let (inviter, invitee) = (seed_key("inviter-seed"), seed_key("invitee-seed"));
            let secret = X25519Secret::from_keypair(&inviter);
            let channel = field(v, "channel");
            let epoch: u32 = number(v, "epoch");
            let key = EpochKey::from_bytes(arr::<32>(v, "epoch-key"));
            let wrap_key =
                e2e::wrap_key(&secret, &invitee.public(), channel, epoch).expect("wrap key");
            check.eq(v, "wrap-key", &hex::encode(*wrap_key));
            let wrap = e2e::wrap_epoch_key(
                &secret,
                &invitee.public(),
                channel,
                epoch,
                &key,
                arr::<24>(v, "nonce"),
            )
            .expect("wraps");
            check.eq(v, "ciphertext", &hex::encode(&wrap.ciphertext));
            let unwrapped = e2e::unwrap_epoch_key(
                &X25519Secret::from_keypair(&invitee),
                &inviter.public(),
                channel,
                &wrap,
            )
            .expect("the invitee unwraps");
            assert_eq!(unwrapped, key);
        }
        "sc-invite" => {
            let (inviter, invitee) = (seed_key("inviter-seed"), seed_key("invitee-seed"));
            let channel = field(v, "channel");
            let wrap = e2e::wrap_epoch_key(
                &X25519Secret::from_keypair(&inviter),
                &invitee.public(),
                channel,
                number(v, "epoch"),
                &EpochKey::from_bytes(arr::<32>(v, "epoch-key")),
                arr::<24>(v, "wrap-nonce"),
            )
            .expect("wraps");
            let terms = InviteTerms {
                channel: channel.to_string(),
                invitee: invitee.public(),
                issued_at: number(v, "issued-at"),
                expires_at: number(v, "expires-at"),
                nonce: arr::<16>(v, "nonce"),
                key: Some(wrap),
                welcome: None,
            };
            let invite = Invite::sign(&inviter, terms);
            check.eq(v, "digest", &invite.digest().to_hex());
            check.eq(v, "signature", &invite.sig.to_hex());
            check.eq(v, "base64", &invite.to_base64());
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(invite.to_base64())
                .expect("base64");
            assert_eq!(decoded, codec::encode(&invite));
            invite
                .verify_signature()
                .expect("the vector's invite verifies");
        }
        "sc-sealed" => {
            let key = EpochKey::from_bytes(arr::<32>(v, "epoch-key"));
            let from = seed_key("from-seed").public();
            let aad = e2e::payload_aad(
                field(v, "channel"),
                &arr::<16>(v, "id"),
                &from,
                number(v, "ts"),
                number(v, "epoch"),
            );
            check.eq(v, "aad", &hex::encode(&aad));
            let nonce = arr::<24>(v, "nonce");
            let sealed =
                e2e::seal(&key, &nonce, &aad, field(v, "message").as_bytes()).expect("seals");
            check.eq(v, "ciphertext", &hex::encode(&sealed));
            let opened = e2e::open(&key, &nonce, &aad, &sealed).expect("opens");
            assert_eq!(opened, field(v, "message").as_bytes());
        }
        other => panic!("unknown sidechannel vector kind {other}"),
    }
}

#[test]
fn sidechannel_vectors_match_the_code() {
    let vectors = sidechannel_vectors();
    let mut check = Check {
        failures: Vec::new(),
    };
    let mut kinds = BTreeMap::<String, usize>::new();
    for v in &vectors {
        *kinds.entry(field(v, "kind").to_string()).or_default() += 1;
        check_sidechannel_vector(&mut check, v);
    }
    assert!(
        check.failures.is_empty(),
        "docs/protocol.md §13 disagrees with the code:\n{}",
        check.failures.join("\n")
    );
    for required in [
        "sc-frame",
        "sc-pow",
        "sc-welcome",
        "sc-x25519",
        "sc-key-wrap",
        "sc-invite",
        "sc-sealed",
    ] {
        assert!(
            kinds.contains_key(required),
            "no {required} vectors in docs/protocol.md §13"
        );
    }
}
