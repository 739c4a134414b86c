//! Keys, domain-separated signatures, batch verification and addresses (docs/protocol.md §2–4).

use bech32::primitives::iter::{ByteIterExt, Fe32IterExt};
use bech32::{Bech32, Bech32m, Fe32, Hrp};
use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::Signer;
use proptest::prelude::*;
use sha2::{Digest, Sha512};
use trac_host::crypto::{
    ADDRESS_LEN, AddressError, BatchItem, Domain, DomainKind, Hash32, Keypair, PublicKey,
    Signature, SignatureError, VerifiedSignatures, decode_address, encode_address, verify_batch,
    verify_hash,
};

fn domain(kind: DomainKind, scope: u8) -> Domain {
    Domain::new(kind, Hash32([scope; 32]))
}

/// The group order ℓ = 2²⁵² + 27742317777372353535851937790883648493, little-endian.
fn group_order_bytes() -> [u8; 32] {
    let mut l = [0u8; 32];
    l[..16].copy_from_slice(&[
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14,
    ]);
    l[31] = 0x10;
    // ℓ itself is not a canonical scalar, ℓ − 1 is.
    assert!(Option::<Scalar>::from(Scalar::from_canonical_bytes(l)).is_none());
    let mut l_minus_1 = l;
    l_minus_1[0] -= 1;
    assert!(Option::<Scalar>::from(Scalar::from_canonical_bytes(l_minus_1)).is_some());
    l
}

/// `a + b` of two little-endian 256-bit numbers (no overflow for the values used here).
fn add_le(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "overflow");
    out
}

/// A signature made "by hand" with secret scalar `a` and nonce point `R = [r]B + extra_r`,
/// so tests can give `R` a small-order component that a standard signer never produces.
fn raw_sign(
    a: &Scalar,
    r: &Scalar,
    extra_r: &EdwardsPoint,
    hash: &Hash32,
) -> (PublicKey, Signature) {
    let public = EdwardsPoint::mul_base(a).compress().to_bytes();
    let r_point = (EdwardsPoint::mul_base(r) + extra_r).compress().to_bytes();
    let mut h = Sha512::new();
    h.update(r_point);
    h.update(public);
    h.update(hash.as_bytes());
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r_point);
    sig[32..].copy_from_slice(&s.to_bytes());
    (PublicKey(public), Signature(sig))
}

fn scalar_of(seed: u8) -> Scalar {
    Scalar::from_bytes_mod_order(*blake3::hash(&[seed]).as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Domain separation

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn signature_verifies_only_in_its_own_domain(
        seed in any::<[u8; 32]>(),
        payload in proptest::collection::vec(any::<u8>(), 0..100),
        kind_index in 0..DomainKind::ALL.len(),
        other_kind_index in 0..DomainKind::ALL.len(),
        scope in any::<[u8; 32]>(),
        other_scope in any::<[u8; 32]>(),
    ) {
        let keypair = Keypair::from_seed(&seed);
        let kind = DomainKind::ALL[kind_index];
        let home = Domain::new(kind, Hash32(scope));
        let sig = keypair.sign(&home, &payload);
        prop_assert_eq!(keypair.public().verify(&home, &payload, &sig), Ok(()));
        prop_assert_eq!(verify_hash(&keypair.public(), &home.hash(&payload), &sig), Ok(()));

        let other_kind = DomainKind::ALL[other_kind_index];
        let elsewhere = Domain::new(other_kind, Hash32(other_scope));
        let verdict = keypair.public().verify(&elsewhere, &payload, &sig);
        if other_kind == kind && other_scope == scope {
            prop_assert_eq!(verdict, Ok(()));
        } else {
            prop_assert_eq!(verdict, Err(SignatureError::Mismatch));
        }
        // Another payload or another key never verifies either.
        let mut other_payload = payload.clone();
        other_payload.push(0);
        prop_assert_eq!(
            keypair.public().verify(&home, &other_payload, &sig),
            Err(SignatureError::Mismatch)
        );
        let mut other_seed = seed;
        other_seed[0] ^= 1;
        let stranger = Keypair::from_seed(&other_seed).public();
        prop_assert_eq!(stranger.verify(&home, &payload, &sig), Err(SignatureError::Mismatch));
    }
}

#[test]
fn every_pair_of_kinds_and_scopes_is_separated() {
    let keypair = Keypair::from_seed(&[7u8; 32]);
    for kind in DomainKind::ALL {
        let sig = keypair.sign(&domain(kind, 1), b"payload");
        for other in DomainKind::ALL {
            for scope in [1u8, 2] {
                let verdict = keypair
                    .public()
                    .verify(&domain(other, scope), b"payload", &sig);
                assert_eq!(
                    verdict.is_ok(),
                    other == kind && scope == 1,
                    "signed in {kind}/1, checked in {other}/{scope}"
                );
            }
        }
    }
    // The global domain is the zero scope.
    let global = Domain::global(DomainKind::Keystore);
    assert_eq!(global, domain(DomainKind::Keystore, 0));
}

// ---------------------------------------------------------------------------------------------
// Interoperability with standard Ed25519

#[test]
fn standard_ed25519_signatures_verify_and_ours_are_standard() {
    for seed_byte in [0u8, 1, 7, 0x9d, 0xff] {
        let seed = [seed_byte; 32];
        let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
        let keypair = Keypair::from_seed(&seed);
        assert_eq!(keypair.public().0, dalek.verifying_key().to_bytes());
        let d = domain(DomainKind::SubnetOp, seed_byte);
        for payload in [&b""[..], b"hello", &[0u8; 1000]] {
            let hash = d.hash(payload);
            let standard = Signature(dalek.sign(hash.as_bytes()).to_bytes());
            assert_eq!(keypair.public().verify(&d, payload, &standard), Ok(()));
            // Ed25519 is deterministic, so our signer produces the very same bytes, and a
            // standard strict verifier accepts ours.
            let ours = keypair.sign(&d, payload);
            assert_eq!(ours, standard);
            dalek
                .verifying_key()
                .verify_strict(
                    hash.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&ours.0),
                )
                .expect("strict ed25519 accepts our signature");
        }
    }
}

#[test]
fn signing_is_over_the_domain_hash_not_the_payload() {
    let keypair = Keypair::from_seed(&[3u8; 32]);
    let d = domain(DomainKind::MsbOp, 9);
    let sig = keypair.sign(&d, b"tx");
    assert_eq!(sig, keypair.sign_hash(&d.hash(b"tx")));
    let dalek = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let over_raw_payload = Signature(dalek.sign(b"tx").to_bytes());
    assert_eq!(
        keypair.public().verify(&d, b"tx", &over_raw_payload),
        Err(SignatureError::Mismatch)
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile keys and signatures

#[test]
fn small_order_public_keys_are_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let identity = PublicKey(identity);
    assert_eq!(identity.validate(), Err(SignatureError::WeakPublicKey));
    // With A the identity, R = identity and S = 0 satisfy the equation for every message: the
    // key must be refused before the equation is checked.
    let mut forged = [0u8; 64];
    forged[0] = 1;
    let forged = Signature(forged);
    let hash = domain(DomainKind::SubnetOp, 1).hash(b"anything");
    assert_eq!(
        verify_hash(&identity, &hash, &forged),
        Err(SignatureError::WeakPublicKey)
    );
    // Every point of the 8-torsion subgroup is refused.
    for point in EIGHT_TORSION {
        let key = PublicKey(point.compress().to_bytes());
        assert_eq!(
            key.validate(),
            Err(SignatureError::WeakPublicKey),
            "{key:?}"
        );
        assert_eq!(
            verify_hash(&key, &hash, &forged),
            Err(SignatureError::WeakPublicKey)
        );
    }
    // ... also inside a batch, at its index.
    let good = Keypair::from_seed(&[5u8; 32]);
    let good_sig = good.sign_hash(&hash);
    let good_key = good.public();
    let items = [
        BatchItem {
            key: &good_key,
            hash: &hash,
            signature: &good_sig,
        },
        BatchItem {
            key: &identity,
            hash: &hash,
            signature: &forged,
        },
    ];
    assert_eq!(
        verify_batch(&items),
        Err(SignatureError::InBatch {
            index: 1,
            reason: Box::new(SignatureError::WeakPublicKey)
        })
    );
}

#[test]
fn non_canonical_and_invalid_public_keys_are_refused() {
    // y = p (2²⁵⁵ − 19) decodes to the same point as y = 0, but is not its canonical encoding.
    let mut y_is_p = [0xffu8; 32];
    y_is_p[0] = 0xed;
    y_is_p[31] = 0x7f;
    assert!(CompressedEdwardsY(y_is_p).decompress().is_some());
    assert_eq!(
        PublicKey(y_is_p).validate(),
        Err(SignatureError::InvalidPublicKey)
    );
    // A y coordinate with no point on the curve.
    let not_on_curve = (2u8..=255)
        .map(|y| {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            bytes
        })
        .find(|bytes| CompressedEdwardsY(*bytes).decompress().is_none())
        .expect("some small y has no point");
    let key = PublicKey(not_on_curve);
    assert_eq!(key.validate(), Err(SignatureError::InvalidPublicKey));
    let hash = Hash32([1; 32]);
    assert_eq!(
        verify_hash(&key, &hash, &Signature([0; 64])),
        Err(SignatureError::InvalidPublicKey)
    );
}

#[test]
fn non_canonical_s_is_refused() {
    let keypair = Keypair::from_seed(&[8u8; 32]);
    let d = domain(DomainKind::Checkpoint, 4);
    let sig = keypair.sign(&d, b"checkpoint");
    assert_eq!(keypair.public().verify(&d, b"checkpoint", &sig), Ok(()));
    let s: [u8; 32] = sig.0[32..].try_into().unwrap();
    // S + ℓ satisfies the equation exactly like S (the scalar is the same mod ℓ): it must be
    // refused for its encoding.
    let s_plus_l = add_le(&s, &group_order_bytes());
    let mut malleated = sig;
    malleated.0[32..].copy_from_slice(&s_plus_l);
    assert_ne!(malleated, sig);
    assert_eq!(
        keypair.public().verify(&d, b"checkpoint", &malleated),
        Err(SignatureError::MalformedSignature)
    );
    // S = ℓ exactly, and S with the top bit set.
    let mut s_is_l = sig;
    s_is_l.0[32..].copy_from_slice(&group_order_bytes());
    assert_eq!(
        keypair.public().verify(&d, b"checkpoint", &s_is_l),
        Err(SignatureError::MalformedSignature)
    );
    let mut high = sig;
    high.0[63] |= 0x80;
    assert_eq!(
        keypair.public().verify(&d, b"checkpoint", &high),
        Err(SignatureError::MalformedSignature)
    );
    // In a batch the malleated signature is named by index.
    let key = keypair.public();
    let hash = d.hash(b"checkpoint");
    let items = [
        BatchItem {
            key: &key,
            hash: &hash,
            signature: &sig,
        },
        BatchItem {
            key: &key,
            hash: &hash,
            signature: &sig,
        },
        BatchItem {
            key: &key,
            hash: &hash,
            signature: &malleated,
        },
    ];
    assert_eq!(
        verify_batch(&items),
        Err(SignatureError::InBatch {
            index: 2,
            reason: Box::new(SignatureError::MalformedSignature)
        })
    );
}

#[test]
fn non_canonical_r_is_refused() {
    let keypair = Keypair::from_seed(&[9u8; 32]);
    let hash = Hash32([2; 32]);
    let mut sig = keypair.sign_hash(&hash);
    let mut y_is_p = [0xffu8; 32];
    y_is_p[0] = 0xed;
    y_is_p[31] = 0x7f;
    sig.0[..32].copy_from_slice(&y_is_p);
    assert_eq!(
        verify_hash(&keypair.public(), &hash, &sig),
        Err(SignatureError::MalformedSignature)
    );
}

// ---------------------------------------------------------------------------------------------
// Batch verification

/// How the bad member of a batch is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    OtherHash,
    OtherKey,
    FlipR,
    FlipS,
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::OtherHash),
        Just(Damage::OtherKey),
        Just(Damage::FlipR),
        Just(Damage::FlipS),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn batch_agrees_with_single_verification(
        seeds in proptest::collection::vec(any::<[u8; 32]>(), 2..10),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        bad in proptest::option::of(any::<prop::sample::Index>()),
        damage in damage_strategy(),
        bit in 0..256usize,
    ) {
        let keypairs: Vec<Keypair> = seeds.iter().map(Keypair::from_seed).collect();
        let mut keys: Vec<PublicKey> = keypairs.iter().map(Keypair::public).collect();
        let mut hashes: Vec<Hash32> = (0..keypairs.len())
            .map(|i| domain(DomainKind::LogEntry, i as u8).hash(&payload))
            .collect();
        let mut sigs: Vec<Signature> = keypairs
            .iter()
            .zip(&hashes)
            .map(|(k, h)| k.sign_hash(h))
            .collect();
        let bad = bad.map(|b| b.index(keypairs.len()));
        if let Some(b) = bad {
            match damage {
                Damage::OtherHash => hashes[b].0[bit / 8] ^= 1 << (bit % 8),
                Damage::OtherKey => keys[b] = Keypair::from_seed(&[0xab; 32]).public(),
                Damage::FlipR => sigs[b].0[bit / 8] ^= 1 << (bit % 8),
                Damage::FlipS => sigs[b].0[32 + bit / 8] ^= 1 << (bit % 8),
            }
        }
        let singles: Vec<Result<(), SignatureError>> = (0..keys.len())
            .map(|i| verify_hash(&keys[i], &hashes[i], &sigs[i]))
            .collect();
        let items: Vec<BatchItem<'_>> = (0..keys.len())
            .map(|i| BatchItem { key: &keys[i], hash: &hashes[i], signature: &sigs[i] })
            .collect();
        let batch = verify_batch(&items);
        match bad {
            None => {
                prop_assert!(singles.iter().all(Result::is_ok));
                prop_assert_eq!(batch, Ok(()));
            }
            Some(b) => {
                for (i, single) in singles.iter().enumerate() {
                    prop_assert_eq!(single.is_ok(), i != b, "single verdict of {}", i);
                }
                let expected = SignatureError::InBatch {
                    index: b,
                    reason: Box::new(singles[b].clone().unwrap_err()),
                };
                prop_assert_eq!(batch, Err(expected));
            }
        }
    }
}

#[test]
fn batch_names_the_first_of_several_failures() {
    let keypairs: Vec<Keypair> = (0..6u8).map(|i| Keypair::from_seed(&[i; 32])).collect();
    let keys: Vec<PublicKey> = keypairs.iter().map(Keypair::public).collect();
    let hashes: Vec<Hash32> = (0..6u8).map(|i| Hash32([i; 32])).collect();
    let mut sigs: Vec<Signature> = keypairs
        .iter()
        .zip(&hashes)
        .map(|(k, h)| k.sign_hash(h))
        .collect();
    sigs.swap(2, 4);
    let items: Vec<BatchItem<'_>> = (0..6)
        .map(|i| BatchItem {
            key: &keys[i],
            hash: &hashes[i],
            signature: &sigs[i],
        })
        .collect();
    assert_eq!(
        verify_batch(&items),
        Err(SignatureError::InBatch {
            index: 2,
            reason: Box::new(SignatureError::Mismatch)
        })
    );
    // Empty and one-element batches behave like single checks.
    assert_eq!(verify_batch(&[]), Ok(()));
    assert_eq!(verify_batch(&items[..1]), Ok(()));
    assert_eq!(verify_batch(&items[2..3]), Err(SignatureError::Mismatch));
}

/// A signature whose `R` carries a small-order component passes the cofactored single check;
/// the batch check must reach the same verdict every time (a cofactorless batch would reject
/// it with probability 7/8 per run, depending on its random coefficients).
#[test]
fn torsion_in_r_gets_the_same_verdict_single_and_batch() {
    let mut keys = Vec::new();
    let mut hashes = Vec::new();
    let mut sigs = Vec::new();
    for i in 0..4u8 {
        let hash = Hash32([i + 1; 32]);
        let extra = if i % 2 == 0 {
            EIGHT_TORSION[usize::from(i) + 1]
        } else {
            EdwardsPoint::default()
        };
        let (key, sig) = raw_sign(&scalar_of(i), &scalar_of(100 + i), &extra, &hash);
        assert_eq!(verify_hash(&key, &hash, &sig), Ok(()), "member {i}");
        keys.push(key);
        hashes.push(hash);
        sigs.push(sig);
    }
    // The strict standard verifier (cofactorless) rejects the torsioned ones: they really are
    // the hostile case.
    let dalek_key = ed25519_dalek::VerifyingKey::from_bytes(&keys[0].0).unwrap();
    assert!(
        dalek_key
            .verify_strict(
                hashes[0].as_bytes(),
                &ed25519_dalek::Signature::from_bytes(&sigs[0].0)
            )
            .is_err()
    );
    let items: Vec<BatchItem<'_>> = (0..keys.len())
        .map(|i| BatchItem {
            key: &keys[i],
            hash: &hashes[i],
            signature: &sigs[i],
        })
        .collect();
    for _ in 0..32 {
        assert_eq!(verify_batch(&items), Ok(()));
    }
    // A torsioned signature over another hash is refused by both.
    let mut wrong = hashes.clone();
    wrong[2] = Hash32([0xee; 32]);
    assert_eq!(
        verify_hash(&keys[2], &wrong[2], &sigs[2]),
        Err(SignatureError::Mismatch)
    );
    let items: Vec<BatchItem<'_>> = (0..keys.len())
        .map(|i| BatchItem {
            key: &keys[i],
            hash: &wrong[i],
            signature: &sigs[i],
        })
        .collect();
    assert_eq!(
        verify_batch(&items),
        Err(SignatureError::InBatch {
            index: 2,
            reason: Box::new(SignatureError::Mismatch)
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Canonical encodings, hostile batches

/// p = 2²⁵⁵ − 19, little-endian.
const FIELD_P: [u8; 32] = {
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// The little-endian 255-bit number `y` (small) as an encoding, with the sign bit `sign`.
fn encoding_of_small(y: u8, sign: bool) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[0] = y;
    if sign {
        bytes[31] |= 0x80;
    }
    bytes
}

/// The encoding of `y = p + offset` (`offset` may be negative), with the sign bit `sign`.
fn encoding_near_p(offset: i16, sign: bool) -> [u8; 32] {
    let mut bytes = FIELD_P;
    // p's low byte is 0xed: offsets in −0xed..=0x12 only touch it (and p + 0x12 = 2²⁵⁵ − 1).
    bytes[0] = u8::try_from(i16::from(bytes[0]) + offset).expect("offset in range");
    if sign {
        bytes[31] |= 0x80;
    }
    bytes
}

/// Whether dalek decompresses `bytes` and re-compresses the point to the same bytes: the
/// reference definition of a canonical point encoding.
fn reference_canonical_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let point = CompressedEdwardsY(*bytes).decompress()?;
    (point.compress().as_bytes() == bytes).then_some(point)
}

/// Edge encodings: every `y` near 0 and near p (including the 19 values ≥ p), small-order
/// points, with and without the sign bit.
fn edge_encodings() -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for sign in [false, true] {
        for y in 0..=64u8 {
            out.push(encoding_of_small(y, sign));
        }
        for offset in -64..=0x12i16 {
            out.push(encoding_near_p(offset, sign));
        }
        for point in EIGHT_TORSION {
            let mut bytes = point.compress().to_bytes();
            if sign {
                bytes[31] ^= 0x80;
            }
            out.push(bytes);
        }
        // y = 2²⁵⁵ − 1 … 2²⁵⁵ − 256 and values with one high limb off.
        let mut all_ff = [0xffu8; 32];
        all_ff[31] = if sign { 0xff } else { 0x7f };
        out.push(all_ff);
        for byte in 1..31 {
            let mut bytes = encoding_near_p(0, sign);
            bytes[byte] = 0xfe;
            out.push(bytes);
            let mut bytes = encoding_of_small(1, sign);
            bytes[byte] = 1;
            out.push(bytes);
        }
        let mut below_top = encoding_near_p(0, sign);
        below_top[31] = if sign { 0xfe } else { 0x7e };
        out.push(below_top);
    }
    out
}

/// `count` pseudo-random 32-byte strings (about half of them are points).
fn random_encodings(count: usize, seed: &[u8]) -> Vec<[u8; 32]> {
    let mut reader = blake3::Hasher::new().update(seed).finalize_xof();
    (0..count)
        .map(|_| {
            let mut bytes = [0u8; 32];
            reader.fill(&mut bytes);
            bytes
        })
        .collect()
}

/// The byte check of canonical encodings accepts exactly what decompress-and-re-compress
/// accepts, for `A` (key validation) and for `R` (signature decoding), on edge and random
/// encodings.
#[test]
fn canonical_encoding_check_equals_decompress_and_recompress() {
    let keypair = Keypair::from_seed(&[21u8; 32]);
    let key = keypair.public();
    let hash = Hash32([21; 32]);
    let honest = keypair.sign_hash(&hash);
    let mut encodings = edge_encodings();
    let edge_count = encodings.len();
    encodings.extend(random_encodings(4000, b"canonical encodings"));
    // Valid points with the other sign: canonical unless x = 0.
    let flipped: Vec<[u8; 32]> = encodings
        .iter()
        .map(|bytes| {
            let mut bytes = *bytes;
            bytes[31] ^= 0x80;
            bytes
        })
        .collect();
    encodings.extend(flipped);
    let (mut canonical, mut decodable_only) = (0, 0);
    for (n, bytes) in encodings.iter().enumerate() {
        let reference = reference_canonical_point(bytes);
        let decodes = CompressedEdwardsY(*bytes).decompress().is_some();
        match &reference {
            Some(_) => canonical += 1,
            None if decodes => decodable_only += 1,
            None => {}
        }
        let expected_key = match reference {
            None => Err(SignatureError::InvalidPublicKey),
            Some(point) if point.is_small_order() => Err(SignatureError::WeakPublicKey),
            Some(_) => Ok(()),
        };
        assert_eq!(
            PublicKey(*bytes).validate(),
            expected_key,
            "key {}",
            hex::encode(bytes)
        );
        // The same bytes as R (the S half stays canonical). Checking R costs a verification:
        // do it for every edge encoding and a part of the random ones.
        if n < edge_count || n % 4 == 0 {
            let mut sig = honest;
            sig.0[..32].copy_from_slice(bytes);
            let expected_r = if reference.is_some() {
                Err(SignatureError::Mismatch)
            } else {
                Err(SignatureError::MalformedSignature)
            };
            assert_eq!(
                verify_hash(&key, &hash, &sig),
                expected_r,
                "R {}",
                hex::encode(bytes)
            );
        }
    }
    // The sample holds all three kinds: canonical points, points with a non-canonical encoding
    // (y ≥ p, or x = 0 with the sign bit set), and non-points.
    assert!(canonical > 1000, "{canonical}");
    assert!(decodable_only >= 10, "{decodable_only}");
    assert!(encodings.len() - canonical - decodable_only > 1000);
}

/// Non-canonical encodings of small-order points, which decode to the same point as a
/// canonical one: (canonical, non-canonical).
fn non_canonical_small_order_encodings() -> Vec<([u8; 32], [u8; 32])> {
    let identity = encoding_of_small(1, false);
    let order_two = encoding_near_p(-1, false);
    let order_four = encoding_of_small(0, false);
    let order_four_negated = encoding_of_small(0, true);
    vec![
        (identity, encoding_of_small(1, true)),
        (identity, encoding_near_p(1, false)),
        (identity, encoding_near_p(1, true)),
        (order_two, encoding_near_p(-1, true)),
        (order_four, encoding_near_p(0, false)),
        (order_four_negated, encoding_near_p(0, true)),
    ]
}

#[test]
fn non_canonical_encodings_of_small_order_points_decode_to_the_same_point() {
    for (canonical, other) in non_canonical_small_order_encodings() {
        let a = CompressedEdwardsY(canonical).decompress().unwrap();
        let b = CompressedEdwardsY(other).decompress().unwrap();
        assert_eq!(a, b);
        assert!(a.is_small_order());
        assert_eq!(a.compress().to_bytes(), canonical);
    }
}

/// A signature with secret scalar `a`, nonce `r` and the given encoding of `R` (which the
/// caller makes an encoding of `[r]B` plus a small-order point, canonical or not): `k` hashes
/// exactly these bytes.
fn sign_with_r_bytes(
    a: &Scalar,
    r: &Scalar,
    r_bytes: [u8; 32],
    hash: &Hash32,
) -> (PublicKey, Signature) {
    let public = EdwardsPoint::mul_base(a).compress().to_bytes();
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(public);
    h.update(hash.as_bytes());
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r_bytes);
    sig[32..].copy_from_slice(&s.to_bytes());
    (PublicKey(public), Signature(sig))
}

#[test]
fn small_order_r_verifies_only_when_canonically_encoded() {
    let a = scalar_of(40);
    let hash = Hash32([40; 32]);
    let mut keys = Vec::new();
    let mut sigs = Vec::new();
    let mut expected = Vec::new();
    // R = a small-order point itself (nonce 0): the cofactored equation holds.
    for point in EIGHT_TORSION {
        let (key, sig) = sign_with_r_bytes(&a, &Scalar::ZERO, point.compress().to_bytes(), &hash);
        assert_eq!(verify_hash(&key, &hash, &sig), Ok(()));
        keys.push(key);
        sigs.push(sig);
        expected.push(Ok(()));
    }
    // The same points under a non-canonical encoding: the equation would hold, the encoding
    // is what is refused.
    for (_, other) in non_canonical_small_order_encodings() {
        let (key, sig) = sign_with_r_bytes(&a, &Scalar::ZERO, other, &hash);
        assert_eq!(
            verify_hash(&key, &hash, &sig),
            Err(SignatureError::MalformedSignature),
            "{}",
            hex::encode(other)
        );
        keys.push(key);
        sigs.push(sig);
        expected.push(Err(SignatureError::MalformedSignature));
    }
    let items: Vec<BatchItem<'_>> = (0..keys.len())
        .map(|i| BatchItem {
            key: &keys[i],
            hash: &hash,
            signature: &sigs[i],
        })
        .collect();
    assert_eq!(verify_batch(&items[..8]), Ok(()));
    assert_eq!(
        verify_batch(&items),
        Err(SignatureError::InBatch {
            index: 8,
            reason: Box::new(SignatureError::MalformedSignature)
        })
    );
}

#[test]
fn non_canonical_encodings_of_small_order_keys_are_invalid_not_weak() {
    let hash = Hash32([41; 32]);
    let good = Keypair::from_seed(&[41u8; 32]);
    let good_key = good.public();
    let good_sig = good.sign_hash(&hash);
    for (canonical, other) in non_canonical_small_order_encodings() {
        assert_eq!(
            PublicKey(canonical).validate(),
            Err(SignatureError::WeakPublicKey)
        );
        let key = PublicKey(other);
        assert_eq!(key.validate(), Err(SignatureError::InvalidPublicKey));
        // With nonce 0 and A of small order, S = 0 would satisfy the cofactored equation.
        let mut forged = [0u8; 64];
        forged[..32].copy_from_slice(&encoding_of_small(1, false));
        let forged = Signature(forged);
        assert_eq!(
            verify_hash(&key, &hash, &forged),
            Err(SignatureError::InvalidPublicKey)
        );
        let items = [
            BatchItem {
                key: &good_key,
                hash: &hash,
                signature: &good_sig,
            },
            BatchItem {
                key: &key,
                hash: &hash,
                signature: &forged,
            },
        ];
        assert_eq!(
            verify_batch(&items),
            Err(SignatureError::InBatch {
                index: 1,
                reason: Box::new(SignatureError::InvalidPublicKey)
            })
        );
    }
}

/// One member of a hostile batch.
#[derive(Debug, Clone, Copy)]
enum Member {
    /// A standard signature by one of a few keys (keys repeat within a batch).
    Valid(u8),
    /// A signature whose `R` carries a small-order component (valid under the cofactored rule).
    TorsionR(u8, usize),
    /// `R` is a small-order point (nonce 0), canonically encoded: valid.
    SmallOrderR(u8, usize),
    /// `R` is a small-order point under a non-canonical encoding.
    NonCanonicalR(u8, usize),
    /// A valid signature checked against another hash.
    WrongHash(u8),
    /// The key is a small-order point.
    SmallOrderKey(usize),
    /// The key is a non-canonical encoding of a small-order point.
    NonCanonicalKey(usize),
    /// `S` plus the group order.
    NonCanonicalS(u8),
    /// One bit of the signature flipped.
    FlippedBit(u8, usize),
}

fn member_strategy() -> impl Strategy<Value = Member> {
    prop_oneof![
        6 => (0..3u8).prop_map(Member::Valid),
        2 => (0..3u8, 1..8usize).prop_map(|(k, t)| Member::TorsionR(k, t)),
        1 => (0..3u8, 0..8usize).prop_map(|(k, t)| Member::SmallOrderR(k, t)),
        1 => (0..3u8, 0..6usize).prop_map(|(k, t)| Member::NonCanonicalR(k, t)),
        1 => (0..3u8).prop_map(Member::WrongHash),
        1 => (0..8usize).prop_map(Member::SmallOrderKey),
        1 => (0..6usize).prop_map(Member::NonCanonicalKey),
        1 => (0..3u8).prop_map(Member::NonCanonicalS),
        1 => (0..3u8, 0..512usize).prop_map(|(k, b)| Member::FlippedBit(k, b)),
    ]
}

/// Builds member `index` of a batch: its key, hash, signature and the single verdict it must
/// get.
fn build_member(member: Member, index: usize) -> (PublicKey, Hash32, Signature, bool) {
    let hash = Hash32(*blake3::hash(&(index as u64).to_le_bytes()).as_bytes());
    let keypair = |k: u8| Keypair::from_seed(&[k + 50; 32]);
    let nonce = scalar_of(index as u8).invert() * Scalar::from(index as u64 + 3);
    match member {
        Member::Valid(k) => (keypair(k).public(), hash, keypair(k).sign_hash(&hash), true),
        Member::TorsionR(k, t) => {
            let (key, sig) = raw_sign(&scalar_of(k), &nonce, &EIGHT_TORSION[t], &hash);
            (key, hash, sig, true)
        }
        Member::SmallOrderR(k, t) => {
            let r_bytes = EIGHT_TORSION[t].compress().to_bytes();
            let (key, sig) = sign_with_r_bytes(&scalar_of(k), &Scalar::ZERO, r_bytes, &hash);
            (key, hash, sig, true)
        }
        Member::NonCanonicalR(k, t) => {
            let (_, r_bytes) = non_canonical_small_order_encodings()[t];
            let (key, sig) = sign_with_r_bytes(&scalar_of(k), &Scalar::ZERO, r_bytes, &hash);
            (key, hash, sig, false)
        }
        Member::WrongHash(k) => {
            let sig = keypair(k).sign_hash(&hash);
            (keypair(k).public(), Hash32([0xee; 32]), sig, false)
        }
        Member::SmallOrderKey(t) => {
            let mut forged = [0u8; 64];
            forged[0] = 1;
            let key = PublicKey(EIGHT_TORSION[t].compress().to_bytes());
            (key, hash, Signature(forged), false)
        }
        Member::NonCanonicalKey(t) => {
            let (_, key) = non_canonical_small_order_encodings()[t];
            let mut forged = [0u8; 64];
            forged[0] = 1;
            (PublicKey(key), hash, Signature(forged), false)
        }
        Member::NonCanonicalS(k) => {
            let mut sig = keypair(k).sign_hash(&hash);
            let s: [u8; 32] = sig.0[32..].try_into().unwrap();
            sig.0[32..].copy_from_slice(&add_le(&s, &group_order_bytes()));
            (keypair(k).public(), hash, sig, false)
        }
        Member::FlippedBit(k, bit) => {
            let mut sig = keypair(k).sign_hash(&hash);
            sig.0[bit / 8] ^= 1 << (bit % 8);
            (keypair(k).public(), hash, sig, false)
        }
    }
}

/// What verifying `items` one by one gives: the first failure, named by index.
fn expected_batch_verdict(items: &[BatchItem<'_>]) -> Result<(), SignatureError> {
    if items.len() == 1 {
        return verify_hash(items[0].key, items[0].hash, items[0].signature);
    }
    for (index, item) in items.iter().enumerate() {
        if let Err(reason) = verify_hash(item.key, item.hash, item.signature) {
            return Err(SignatureError::InBatch {
                index,
                reason: Box::new(reason),
            });
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random mixes of valid and hostile members (repeated keys, torsion, small-order and
    /// non-canonical `R` and `A`, non-canonical `S`, flipped bits): the batch verdict is the
    /// verdict of the single checks, and names the first failing member.
    #[test]
    fn hostile_batches_agree_with_single_verification(
        members in proptest::collection::vec(member_strategy(), 0..40),
    ) {
        let built: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(i, m)| build_member(*m, i))
            .collect();
        for ((key, hash, sig, valid), member) in built.iter().zip(&members) {
            prop_assert_eq!(
                verify_hash(key, hash, sig).is_ok(),
                *valid,
                "single verdict of {:?}",
                member
            );
        }
        let items: Vec<BatchItem<'_>> = built
            .iter()
            .map(|(key, hash, signature, _)| BatchItem { key, hash, signature })
            .collect();
        prop_assert_eq!(verify_batch(&items), expected_batch_verdict(&items));
    }
}

#[test]
fn batch_names_a_mismatch_before_a_later_malformed_member() {
    let members = [
        Member::Valid(0),
        Member::WrongHash(1),
        Member::NonCanonicalS(2),
        Member::NonCanonicalKey(0),
    ];
    let built: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(i, m)| build_member(*m, i))
        .collect();
    let items: Vec<BatchItem<'_>> = built
        .iter()
        .map(|(key, hash, signature, _)| BatchItem {
            key,
            hash,
            signature,
        })
        .collect();
    assert_eq!(
        verify_batch(&items),
        Err(SignatureError::InBatch {
            index: 1,
            reason: Box::new(SignatureError::Mismatch)
        })
    );
    assert_eq!(
        verify_batch(&items[2..]),
        Err(SignatureError::InBatch {
            index: 0,
            reason: Box::new(SignatureError::MalformedSignature)
        })
    );
}

/// 500 signatures by a few keys (large enough to be split across cores): one bad member
/// anywhere — in particular in the second half, around the split — is named by its index.
#[test]
fn large_batch_names_its_bad_member() {
    let keypairs: Vec<Keypair> = (0..5u8)
        .map(|i| Keypair::from_seed(&[i + 60; 32]))
        .collect();
    let count = 500;
    let keys: Vec<PublicKey> = (0..count).map(|i| keypairs[i % 5].public()).collect();
    let hashes: Vec<Hash32> = (0..count)
        .map(|i| domain(DomainKind::SubnetOp, 3).hash(&(i as u64).to_le_bytes()))
        .collect();
    let sigs: Vec<Signature> = (0..count)
        .map(|i| keypairs[i % 5].sign_hash(&hashes[i]))
        .collect();
    let verify = |sigs: &[Signature]| -> Result<(), SignatureError> {
        let items: Vec<BatchItem<'_>> = (0..count)
            .map(|i| BatchItem {
                key: &keys[i],
                hash: &hashes[i],
                signature: &sigs[i],
            })
            .collect();
        verify_batch(&items)
    };
    assert_eq!(verify(&sigs), Ok(()));
    for bad in [377, 250, 251, 249, 499, 0] {
        // Another member's signature: a mismatch.
        let mut swapped = sigs.clone();
        swapped[bad] = sigs[(bad + 5) % count];
        assert_eq!(
            verify(&swapped),
            Err(SignatureError::InBatch {
                index: bad,
                reason: Box::new(SignatureError::Mismatch)
            }),
            "mismatch at {bad}"
        );
        // A malformed S.
        let mut malformed = sigs.clone();
        malformed[bad].0[63] |= 0x80;
        assert_eq!(
            verify(&malformed),
            Err(SignatureError::InBatch {
                index: bad,
                reason: Box::new(SignatureError::MalformedSignature)
            }),
            "malformed at {bad}"
        );
    }
    // Several bad members: the first is named, whatever its kind and whichever part of the
    // split it falls in.
    let mut several = sigs.clone();
    several[480].0[63] |= 0x80;
    several[420] = sigs[421];
    several[300] = sigs[301];
    assert_eq!(
        verify(&several),
        Err(SignatureError::InBatch {
            index: 300,
            reason: Box::new(SignatureError::Mismatch)
        })
    );
    several[100].0[63] |= 0x80;
    assert_eq!(
        verify(&several),
        Err(SignatureError::InBatch {
            index: 100,
            reason: Box::new(SignatureError::MalformedSignature)
        })
    );
}

/// 300 signatures by 300 distinct keys, with a torsioned `R` here and there: valid, in one
/// batch, every time.
#[test]
fn large_batch_of_distinct_keys_with_torsion_verifies() {
    let count = 300;
    let built: Vec<_> = (0..count)
        .map(|i| {
            let hash = Hash32(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes());
            let a = Scalar::from(i as u64 + 1) * scalar_of(7);
            let torsion = EIGHT_TORSION[if i % 7 == 0 { i % 8 } else { 0 }];
            let (key, sig) = raw_sign(&a, &scalar_of(i as u8), &torsion, &hash);
            (key, hash, sig)
        })
        .collect();
    let items: Vec<BatchItem<'_>> = built
        .iter()
        .map(|(key, hash, signature)| BatchItem {
            key,
            hash,
            signature,
        })
        .collect();
    for _ in 0..4 {
        assert_eq!(verify_batch(&items), Ok(()));
    }
    let mut wrong = built.clone();
    wrong[222].1 = Hash32([0xee; 32]);
    let items: Vec<BatchItem<'_>> = wrong
        .iter()
        .map(|(key, hash, signature)| BatchItem {
            key,
            hash,
            signature,
        })
        .collect();
    assert_eq!(
        verify_batch(&items),
        Err(SignatureError::InBatch {
            index: 222,
            reason: Box::new(SignatureError::Mismatch)
        })
    );
}

#[test]
fn verified_signatures_accept_exactly_the_valid_ones() {
    let members = [
        Member::Valid(0),
        Member::Valid(0),
        Member::TorsionR(1, 3),
        Member::WrongHash(2),
        Member::Valid(1),
    ];
    let built: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(i, m)| build_member(*m, i))
        .collect();
    let items: Vec<BatchItem<'_>> = built
        .iter()
        .map(|(key, hash, signature, _)| BatchItem {
            key,
            hash,
            signature,
        })
        .collect();
    // A batch holding a bad member, then the valid part alone.
    for batch in [&items[..], &items[..3]] {
        let verified = VerifiedSignatures::new();
        verified.verify_batch(batch);
        for _ in 0..2 {
            for (key, hash, sig, valid) in &built {
                assert_eq!(verified.verify(key, hash, sig), *valid);
            }
        }
    }
}

/// Release-mode timings of single and batch verification (run with
/// `cargo test --release -p trac-tests --test all crypto::verification_timings -- --ignored --nocapture`).
#[test]
#[ignore = "timing measurement, run on demand in release mode"]
fn verification_timings() {
    use std::time::Instant;

    fn signed(count: usize, keys: usize) -> (Vec<PublicKey>, Vec<Hash32>, Vec<Signature>) {
        let keypairs: Vec<Keypair> = (0..keys)
            .map(|i| Keypair::from_seed(blake3::hash(&(i as u64).to_le_bytes()).as_bytes()))
            .collect();
        let mut public = Vec::with_capacity(count);
        let mut hashes = Vec::with_capacity(count);
        let mut sigs = Vec::with_capacity(count);
        for i in 0..count {
            let keypair = &keypairs[i % keys];
            let hash = domain(DomainKind::SubnetOp, 1).hash(&(i as u64).to_le_bytes());
            public.push(keypair.public());
            sigs.push(keypair.sign_hash(&hash));
            hashes.push(hash);
        }
        (public, hashes, sigs)
    }

    /// The best of `rounds` runs of `f`, in microseconds.
    fn best(rounds: usize, mut f: impl FnMut()) -> f64 {
        (0..rounds)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e6
            })
            .fold(f64::INFINITY, f64::min)
    }

    let (keys, hashes, sigs) = signed(200, 200);
    let single = best(5, || {
        for i in 0..keys.len() {
            assert_eq!(verify_hash(&keys[i], &hashes[i], &sigs[i]), Ok(()));
        }
    }) / keys.len() as f64;
    println!("single verify_hash: {single:.2} µs");
    for (label, key_count) in [("one key", 1), ("2000 keys", 2000)] {
        let (keys, hashes, sigs) = signed(2000, key_count);
        let items: Vec<BatchItem<'_>> = (0..keys.len())
            .map(|i| BatchItem {
                key: &keys[i],
                hash: &hashes[i],
                signature: &sigs[i],
            })
            .collect();
        let total = best(5, || assert_eq!(verify_batch(&items), Ok(())));
        println!(
            "batch of 2000, {label}: {:.2} ms, {:.2} µs/signature",
            total / 1e3,
            total / items.len() as f64
        );
        // One bad signature: the failing member must be found as well.
        let mut bad = items.clone();
        let other = sigs[0];
        bad[1500].signature = &other;
        let total = best(3, || assert!(verify_batch(&bad).is_err()));
        println!(
            "batch of 2000, {label}, bad signature at 1500: {:.2} ms",
            total / 1e3
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses

/// A bech32m (or other checksum) string of `data` with `hrp`.
fn bech32_string<Ck: bech32::Checksum>(hrp: &str, data: &[u8]) -> String {
    bech32::encode::<Ck>(Hrp::parse(hrp).unwrap(), data).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn address_round_trip(key in any::<[u8; 32]>()) {
        let key = PublicKey(key);
        let address = encode_address(&key);
        prop_assert_eq!(address.len(), ADDRESS_LEN);
        prop_assert!(address.starts_with("trac1"), "{}", address);
        prop_assert_eq!(address.to_lowercase(), address.clone());
        prop_assert_eq!(&key.address(), &address);
        prop_assert_eq!(decode_address(&address), Ok(key));
    }

    #[test]
    fn changing_any_character_breaks_the_address(
        key in any::<[u8; 32]>(),
        position in 5..ADDRESS_LEN,
        replacement in prop::sample::select(b"qpzry9x8gf2tvdw0s3jn54khce6mua7l".to_vec()),
    ) {
        let address = encode_address(&PublicKey(key));
        let mut bytes = address.clone().into_bytes();
        prop_assume!(bytes[position] != replacement);
        bytes[position] = replacement;
        let damaged = String::from_utf8(bytes).unwrap();
        prop_assert!(
            matches!(decode_address(&damaged), Err(AddressError::Bech32(_))),
            "{} accepted", damaged
        );
    }
}

#[test]
fn address_of_wrong_length_is_refused() {
    let address = encode_address(&PublicKey([0x33; 32]));
    assert_eq!(
        decode_address(&address[..62]),
        Err(AddressError::Length(62))
    );
    assert_eq!(
        decode_address(&format!("{address}q")),
        Err(AddressError::Length(64))
    );
    assert_eq!(decode_address(""), Err(AddressError::Length(0)));
    // A valid bech32m string of 31 or 33 bytes has another length.
    let short = bech32_string::<Bech32m>("trac", &[0x33; 31]);
    assert!(matches!(
        decode_address(&short),
        Err(AddressError::Length(_))
    ));
    let long = bech32_string::<Bech32m>("trac", &[0x33; 33]);
    assert!(matches!(
        decode_address(&long),
        Err(AddressError::Length(_))
    ));
}

#[test]
fn upper_and_mixed_case_addresses_are_refused() {
    let address = encode_address(&PublicKey([0x44; 32]));
    // Upper case is valid bech32m, but not the canonical form.
    assert_eq!(
        decode_address(&address.to_uppercase()),
        Err(AddressError::Case)
    );
    let mixed = format!("{}{}", &address[..10], address[10..].to_uppercase());
    assert_eq!(decode_address(&mixed), Err(AddressError::Case));
    let mut one = address.clone().into_bytes();
    let at = one.iter().rposition(u8::is_ascii_lowercase).unwrap();
    one[at] = one[at].to_ascii_uppercase();
    assert_eq!(
        decode_address(&String::from_utf8(one).unwrap()),
        Err(AddressError::Case)
    );
}

#[test]
fn another_prefix_is_refused() {
    // "btc" with 33 bytes gives the right length (3 + 1 + 53 + 6), so the prefix is what fails.
    let btc = bech32_string::<Bech32m>("btc", &[0x11; 33]);
    assert_eq!(btc.len(), ADDRESS_LEN);
    assert_eq!(
        decode_address(&btc),
        Err(AddressError::Prefix("btc".into()))
    );
    // "btc" with a 32-byte key is refused too (by its length).
    let btc32 = bech32_string::<Bech32m>("btc", &[0x11; 32]);
    assert!(decode_address(&btc32).is_err());
    // A four-letter prefix with a 32-byte key.
    let tbtc = bech32_string::<Bech32m>("tbtc", &[0x11; 32]);
    assert_eq!(tbtc.len(), ADDRESS_LEN);
    assert_eq!(
        decode_address(&tbtc),
        Err(AddressError::Prefix("tbtc".into()))
    );
}

#[test]
fn bad_checksums_are_refused() {
    let address = encode_address(&PublicKey([0x55; 32]));
    let mut bytes = address.clone().into_bytes();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'q' { b'p' } else { b'q' };
    assert!(matches!(
        decode_address(&String::from_utf8(bytes).unwrap()),
        Err(AddressError::Bech32(_))
    ));
    // The bech32 (not bech32m) checksum of the same key.
    let bech32 = bech32_string::<Bech32>("trac", &[0x55; 32]);
    assert_eq!(bech32.len(), ADDRESS_LEN);
    assert_ne!(bech32, address);
    assert!(matches!(
        decode_address(&bech32),
        Err(AddressError::Bech32(_))
    ));
    // Characters outside the bech32 alphabet.
    let mut bad_char = address.into_bytes();
    bad_char[10] = b'b';
    assert!(matches!(
        decode_address(&String::from_utf8(bad_char).unwrap()),
        Err(AddressError::Bech32(_))
    ));
}

#[test]
fn nonzero_padding_bits_are_refused() {
    // 32 bytes are 256 bits in 52 five-bit characters (260 bits): the last 4 bits are padding
    // and must be zero, or two strings would name the same key.
    let key = PublicKey([0x66; 32]);
    let mut fes: Vec<Fe32> = key.0.iter().copied().bytes_to_fes().collect();
    assert_eq!(fes.len(), 52);
    let last = fes.last_mut().unwrap();
    *last = Fe32::try_from(last.to_u8() | 0b0001).unwrap();
    let hrp = Hrp::parse("trac").unwrap();
    let padded: String = fes
        .into_iter()
        .with_checksum::<Bech32m>(&hrp)
        .chars()
        .collect();
    assert_eq!(padded.len(), ADDRESS_LEN);
    assert_ne!(padded, encode_address(&key));
    assert!(
        decode_address(&padded).is_err(),
        "{padded} decoded although its padding is not zero"
    );
}
