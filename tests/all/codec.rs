//! The canonical encoding (`trac_host::codec`): round trips, and refusal of every alternative
//! encoding of a value (docs/protocol.md §1).

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use trac_host::codec::{CodecError, decode, encode};
use trac_host::crypto::{Hash32, PublicKey, Signature};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    flag: bool,
    small: u8,
    note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Op {
    Ping,
    Transfer { to: PublicKey, amount: u128 },
    Memo(String),
    Pair(u64, i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    version: u8,
    seq: u64,
    amount: u128,
    delta: i64,
    memo: String,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    parent: Option<Hash32>,
    inner: Inner,
    nested: Option<Box<Inner>>,
    ops: Vec<Op>,
    hash: Hash32,
    key: PublicKey,
    sig: Signature,
}

/// The example struct of the codec documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Transfer {
    to: String,
    amount: u128,
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// u64 values spread over every MessagePack width (fixint, u8, u16, u32, u64).
fn any_width_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..128,
        128u64..256,
        256u64..65_536,
        65_536u64..(1 << 32),
        any::<u64>(),
        Just(u64::MAX),
    ]
}

/// i64 values spread over every MessagePack width, positive and negative.
fn any_width_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        -32i64..128,
        -128i64..-32,
        -32_768i64..-128,
        i64::from(i32::MIN)..-32_768,
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
    ]
}

fn any_u128() -> impl Strategy<Value = u128> {
    prop_oneof![0u128..256, any::<u128>(), Just(u128::MAX)]
}

fn any_hash() -> impl Strategy<Value = Hash32> {
    any::<[u8; 32]>().prop_map(Hash32)
}

fn any_key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn any_signature() -> impl Strategy<Value = Signature> {
    proptest::collection::vec(any::<u8>(), 64)
        .prop_map(|v| Signature(v.try_into().expect("64 bytes")))
}

fn any_inner() -> impl Strategy<Value = Inner> {
    (any::<bool>(), any::<u8>(), proptest::option::of(".{0,40}"))
        .prop_map(|(flag, small, note)| Inner { flag, small, note })
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Ping),
        (any_key(), any_u128()).prop_map(|(to, amount)| Op::Transfer { to, amount }),
        ".{0,40}".prop_map(Op::Memo),
        (any_width_u64(), any_width_i64()).prop_map(|(a, b)| Op::Pair(a, b)),
    ]
}

prop_compose! {
    fn any_record()(
        version in any::<u8>(),
        seq in any_width_u64(),
        amount in any_u128(),
        delta in any_width_i64(),
        memo in "\\PC{0,300}",
        data in proptest::collection::vec(any::<u8>(), 0..300),
        parent in proptest::option::of(any_hash()),
        inner in any_inner(),
        nested in proptest::option::of(any_inner().prop_map(Box::new)),
        ops in proptest::collection::vec(any_op(), 0..20),
        hash in any_hash(),
        key in any_key(),
        sig in any_signature(),
    ) -> Record {
        Record { version, seq, amount, delta, memo, data, parent, inner, nested, ops, hash, key, sig }
    }
}

/// Asserts the defining property of `decode` on arbitrary input: it never panics, and whatever
/// it accepts re-encodes to exactly the input.
fn assert_strict<T: Serialize + DeserializeOwned + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(value) = decode::<T>(bytes) {
        assert_eq!(
            encode(&value),
            bytes,
            "{value:?} was accepted from a non-canonical input"
        );
    }
}

fn assert_strict_all(bytes: &[u8]) {
    assert_strict::<Record>(bytes);
    assert_strict::<Op>(bytes);
    assert_strict::<Inner>(bytes);
    assert_strict::<Transfer>(bytes);
    assert_strict::<u64>(bytes);
    assert_strict::<i64>(bytes);
    assert_strict::<u8>(bytes);
    assert_strict::<u128>(bytes);
    assert_strict::<String>(bytes);
    assert_strict::<Hash32>(bytes);
    assert_strict::<Signature>(bytes);
    assert_strict::<Option<PublicKey>>(bytes);
    assert_strict::<Vec<Option<i64>>>(bytes);
    assert_strict::<serde_bytes::ByteBuf>(bytes);
}

/// A MessagePack `bin 8` of `bytes`.
fn bin8(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc4, u8::try_from(bytes.len()).expect("short")];
    out.extend_from_slice(bytes);
    out
}

/// Every MessagePack integer form that represents `v` (whether canonical or not).
fn integer_forms(v: i128) -> Vec<Vec<u8>> {
    let mut forms = Vec::new();
    if (0..128).contains(&v) {
        forms.push(vec![v as u8]);
    }
    if (-32..0).contains(&v) {
        forms.push(vec![v as i8 as u8]);
    }
    let unsigned: [(u8, u32); 4] = [(0xcc, 1), (0xcd, 2), (0xce, 4), (0xcf, 8)];
    for (marker, width) in unsigned {
        if v >= 0 && v < (1i128 << (8 * width)) {
            let mut f = vec![marker];
            f.extend_from_slice(&(v as u64).to_be_bytes()[8 - width as usize..]);
            forms.push(f);
        }
    }
    let signed: [(u8, u32); 4] = [(0xd0, 1), (0xd1, 2), (0xd2, 4), (0xd3, 8)];
    for (marker, width) in signed {
        let bound = 1i128 << (8 * width - 1);
        if v >= -bound && v < bound {
            let mut f = vec![marker];
            f.extend_from_slice(&(v as i64).to_be_bytes()[8 - width as usize..]);
            forms.push(f);
        }
    }
    forms
}

// ---------------------------------------------------------------------------------------------
// Round trips

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn records_round_trip(record in any_record()) {
        let bytes = encode(&record);
        prop_assert_eq!(decode::<Record>(&bytes), Ok(record));
    }

    #[test]
    fn enums_round_trip(op in any_op()) {
        let bytes = encode(&op);
        prop_assert_eq!(decode::<Op>(&bytes), Ok(op));
    }

    #[test]
    fn scalars_round_trip(
        a in any_width_u64(),
        b in any_width_i64(),
        c in any_u128(),
        d in any::<u8>(),
        s in "\\PC{0,100}",
    ) {
        prop_assert_eq!(decode::<u64>(&encode(&a)), Ok(a));
        prop_assert_eq!(decode::<i64>(&encode(&b)), Ok(b));
        prop_assert_eq!(decode::<u128>(&encode(&c)), Ok(c));
        prop_assert_eq!(decode::<u8>(&encode(&d)), Ok(d));
        prop_assert_eq!(decode::<String>(&encode(&s)), Ok(s));
    }

    /// Of all the integer forms of a u64 exactly one, the shortest, is accepted.
    #[test]
    fn u64_has_exactly_one_accepted_integer_form(v in any_width_u64()) {
        let canonical = encode(&v);
        for form in integer_forms(i128::from(v)) {
            let decoded = decode::<u64>(&form);
            if form == canonical {
                prop_assert_eq!(decoded, Ok(v));
            } else {
                prop_assert_eq!(decoded, Err(CodecError::NonCanonical), "form {:02x?}", form);
            }
        }
    }

    /// Of all the integer forms of an i64 exactly one is accepted.
    #[test]
    fn i64_has_exactly_one_accepted_integer_form(v in any_width_i64()) {
        let canonical = encode(&v);
        let forms = integer_forms(i128::from(v));
        prop_assert!(forms.contains(&canonical), "canonical form {:02x?} is an integer form", canonical);
        for form in forms {
            let decoded = decode::<i64>(&form);
            if form == canonical {
                prop_assert_eq!(decoded, Ok(v));
            } else {
                prop_assert!(decoded.is_err(), "non-canonical form {:02x?} accepted", form);
            }
        }
    }

    /// A u128 is only accepted as a 16-byte bin, never in any integer form.
    #[test]
    fn u128_written_as_an_integer_is_refused(v in any_width_u64()) {
        prop_assert_eq!(encode(&u128::from(v)), bin8(&u128::from(v).to_be_bytes()));
        for form in integer_forms(i128::from(v)) {
            prop_assert!(decode::<u128>(&form).is_err(), "integer form {:02x?} accepted", form);
        }
    }

    /// Every proper prefix of an encoding is refused.
    #[test]
    fn truncated_input_is_refused(record in any_record()) {
        let bytes = encode(&record);
        for len in 0..bytes.len() {
            prop_assert!(decode::<Record>(&bytes[..len]).is_err(), "prefix of {} bytes accepted", len);
        }
    }

    /// Trailing bytes after a valid encoding are refused and counted.
    #[test]
    fn trailing_bytes_are_refused(
        record in any_record(),
        tail in proptest::collection::vec(any::<u8>(), 1..20),
    ) {
        let mut bytes = encode(&record);
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(decode::<Record>(&bytes), Err(CodecError::TrailingBytes(tail.len())));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes: decoding never panics, and anything accepted is canonical.
    #[test]
    fn random_bytes_decode_strictly_or_not_at_all(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        assert_strict_all(&bytes);
    }

    /// Valid encodings with one byte changed, inserted or removed (closer to valid than random
    /// bytes, so they reach deeper into the decoder).
    #[test]
    fn mutated_encodings_decode_strictly_or_not_at_all(
        record in any_record(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        mutation in 0..3u8,
    ) {
        let mut bytes = encode(&record);
        let at = position.index(bytes.len());
        match mutation {
            0 => bytes[at] ^= byte.max(1),
            1 => bytes.insert(at, byte),
            _ => {
                bytes.remove(at);
            }
        }
        assert_strict_all(&bytes);
        if let Ok(decoded) = decode::<Record>(&bytes) {
            // A changed byte may yield another valid record, but never the same one.
            prop_assert_ne!(decoded, record);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Specific refusals

#[test]
fn documented_sample_encodes_as_positional_array() {
    let t = Transfer {
        to: "bob".into(),
        amount: 5,
    };
    let mut expected = vec![0x92, 0xa3, b'b', b'o', b'b', 0xc4, 0x10];
    expected.extend_from_slice(&5u128.to_be_bytes());
    assert_eq!(encode(&t), expected);
    assert_eq!(decode::<Transfer>(&expected), Ok(t));
}

#[test]
fn u128_field_written_as_integer_is_refused() {
    // The documented example: the amount written as a positive fixint.
    assert!(decode::<Transfer>(&[0x92, 0xa3, b'b', b'o', b'b', 0x05]).is_err());
    // ... and as a uint64.
    let mut bytes = vec![0x92, 0xa3, b'b', b'o', b'b', 0xcf];
    bytes.extend_from_slice(&5u64.to_be_bytes());
    assert!(decode::<Transfer>(&bytes).is_err());
}

#[test]
fn u128_of_wrong_length_is_refused() {
    for len in [0usize, 1, 8, 15, 17, 32] {
        let bytes = bin8(&vec![0u8; len]);
        assert!(
            matches!(decode::<u128>(&bytes), Err(CodecError::Malformed(_))),
            "u128 from {len} bytes"
        );
    }
}

#[test]
fn non_canonical_integer_widths_are_refused() {
    // u64 5 as uint32 (ce) although it fits in a positive fixint.
    assert_eq!(
        decode::<u64>(&[0xce, 0, 0, 0, 5]),
        Err(CodecError::NonCanonical)
    );
    assert_eq!(decode::<u64>(&[0xcc, 5]), Err(CodecError::NonCanonical));
    // 300 as uint32 instead of uint16.
    assert_eq!(
        decode::<u64>(&[0xce, 0, 0, 1, 0x2c]),
        Err(CodecError::NonCanonical)
    );
    assert_eq!(decode::<u64>(&[0xcd, 1, 0x2c]), Ok(300));
    // -1 as int8 instead of a negative fixint.
    assert_eq!(decode::<i64>(&[0xd0, 0xff]), Err(CodecError::NonCanonical));
    assert_eq!(decode::<i64>(&[0xff]), Ok(-1));
    // The same inside a struct: `seq` of a record written as uint64.
    let record = sample_record();
    let canonical = encode(&record);
    // version (1) is at offset 1, seq (7) at offset 2.
    assert_eq!(&canonical[..3], &[0x9d, 0x01, 0x07]);
    let mut wide = vec![0x9d, 0x01, 0xcf];
    wide.extend_from_slice(&7u64.to_be_bytes());
    wide.extend_from_slice(&canonical[3..]);
    assert_eq!(decode::<Record>(&wide), Err(CodecError::NonCanonical));
}

#[test]
fn fixed_size_bytes_of_wrong_length_are_refused() {
    for len in [0usize, 1, 31, 33, 64] {
        let bytes = bin8(&vec![0x11; len]);
        assert!(
            matches!(decode::<Hash32>(&bytes), Err(CodecError::Malformed(_))),
            "Hash32 from {len} bytes"
        );
        assert!(
            matches!(decode::<PublicKey>(&bytes), Err(CodecError::Malformed(_))),
            "PublicKey from {len} bytes"
        );
    }
    assert!(decode::<Signature>(&bin8(&[0x11; 63])).is_err());
    assert!(decode::<Signature>(&bin8(&[0x11; 65])).is_err());
    assert_eq!(decode::<Hash32>(&bin8(&[0x11; 32])), Ok(Hash32([0x11; 32])));
    assert_eq!(
        decode::<Signature>(&bin8(&[0x22; 64])),
        Ok(Signature([0x22; 64]))
    );
}

#[test]
fn fixed_size_bytes_in_other_forms_are_refused() {
    // bin 16 with the right length is a longer length form.
    let mut bin16 = vec![0xc5, 0x00, 0x20];
    bin16.extend_from_slice(&[0x11; 32]);
    assert_eq!(decode::<Hash32>(&bin16), Err(CodecError::NonCanonical));
    // A string of 32 bytes, and an array of 32 integers, are not bin.
    let mut str8 = vec![0xd9, 0x20];
    str8.extend_from_slice(&[b'a'; 32]);
    assert!(decode::<Hash32>(&str8).is_err());
    let mut array = vec![0xdc, 0x00, 0x20];
    array.extend_from_slice(&[0x01; 32]);
    assert!(decode::<Hash32>(&array).is_err());
}

#[test]
fn floats_are_refused_where_integers_are_expected() {
    let f32_five = [0xca, 0x40, 0xa0, 0x00, 0x00]; // 5.0f32
    let mut f64_five = vec![0xcb];
    f64_five.extend_from_slice(&5.0f64.to_be_bytes());
    for bytes in [&f32_five[..], &f64_five[..]] {
        assert!(
            matches!(decode::<u64>(bytes), Err(CodecError::Malformed(_))),
            "{bytes:02x?}"
        );
        assert!(
            matches!(decode::<i64>(bytes), Err(CodecError::Malformed(_))),
            "{bytes:02x?}"
        );
        assert!(
            matches!(decode::<u8>(bytes), Err(CodecError::Malformed(_))),
            "{bytes:02x?}"
        );
        assert!(decode::<u128>(bytes).is_err(), "{bytes:02x?}");
    }
    // Inside a struct: the `small: u8` of Inner written as a float.
    assert_eq!(
        decode::<Inner>(&[0x93, 0xc3, 0x05, 0xc0]).map(|i| i.small),
        Ok(5)
    );
    assert!(decode::<Inner>(&[0x93, 0xc3, 0xca, 0x40, 0xa0, 0x00, 0x00, 0xc0]).is_err());
}

#[test]
fn other_alternative_forms_are_refused() {
    // A struct written as a map with field names.
    let mut map = vec![0x82, 0xa2, b't', b'o', 0xa3, b'b', b'o', b'b'];
    map.extend_from_slice(&[0xa6, b'a', b'm', b'o', b'u', b'n', b't']);
    map.extend_from_slice(&bin8(&5u128.to_be_bytes()));
    assert!(decode::<Transfer>(&map).is_err());
    // A struct with one field too many or too few.
    let canonical = encode(&Transfer {
        to: "bob".into(),
        amount: 5,
    });
    let mut extra = canonical.clone();
    extra[0] = 0x93;
    extra.push(0x00);
    assert!(decode::<Transfer>(&extra).is_err());
    assert!(decode::<Transfer>(&[0x91, 0xa3, b'b', b'o', b'b']).is_err());
    // A string as a longer str8 form, and as bin.
    assert_eq!(
        decode::<String>(&[0xd9, 0x03, b'b', b'o', b'b']),
        Err(CodecError::NonCanonical)
    );
    assert!(decode::<String>(&bin8(b"bob")).is_err());
    // Bytes written as a str, and as an array of integers.
    assert!(decode::<serde_bytes::ByteBuf>(&[0xa3, b'a', b'b', b'c']).is_err());
    assert!(decode::<serde_bytes::ByteBuf>(&[0x93, 0x01, 0x02, 0x03]).is_err());
    // A unit variant written by index instead of by name; an unknown name.
    assert_eq!(decode::<Op>(&[0xa4, b'P', b'i', b'n', b'g']), Ok(Op::Ping));
    assert!(decode::<Op>(&[0x00]).is_err());
    assert!(decode::<Op>(&[0xa4, b'P', b'o', b'n', b'g']).is_err());
    // Some(None)-style ambiguity does not exist for plain options: nil is None.
    assert_eq!(decode::<Option<u64>>(&[0xc0]), Ok(None));
    assert_eq!(decode::<Option<u64>>(&[0x07]), Ok(Some(7)));
}

#[test]
fn empty_and_trailing_input() {
    assert!(matches!(decode::<u64>(&[]), Err(CodecError::Malformed(_))));
    assert_eq!(
        decode::<u64>(&[0x05, 0x00]),
        Err(CodecError::TrailingBytes(1))
    );
    let mut bytes = encode(&sample_record());
    bytes.extend_from_slice(&[0xc0, 0xc0, 0xc0]);
    assert_eq!(decode::<Record>(&bytes), Err(CodecError::TrailingBytes(3)));
}

#[test]
fn hostile_length_prefixes_fail_cleanly() {
    // Lengths far beyond the input must not allocate them or panic.
    let cases: [&[u8]; 6] = [
        &[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],
        &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
        &[0xdd, 0xff, 0xff, 0xff, 0xff, 0x00],
        &[0xdf, 0xff, 0xff, 0xff, 0xff, 0x00],
        &[0xdc, 0xff, 0xff],
        &[0xc5, 0xff, 0xff, 0x00],
    ];
    for bytes in cases {
        assert_strict_all(bytes);
        assert!(decode::<Record>(bytes).is_err());
        assert!(decode::<Vec<Option<i64>>>(bytes).is_err());
        assert!(decode::<serde_bytes::ByteBuf>(bytes).is_err());
    }
    // Deep nesting fails without exhausting the stack.
    let deep = vec![0x91; 100_000];
    assert!(decode::<Vec<Option<i64>>>(&deep).is_err());
    assert!(decode::<Record>(&deep).is_err());
}

fn sample_record() -> Record {
    Record {
        version: 1,
        seq: 7,
        amount: 1_000_000_000_000_000_000,
        delta: -3,
        memo: "hi".into(),
        data: vec![0xde, 0xad],
        parent: None,
        inner: Inner {
            flag: true,
            small: 200,
            note: Some("n".into()),
        },
        nested: None,
        ops: vec![
            Op::Ping,
            Op::Transfer {
                to: PublicKey([0x33; 32]),
                amount: 5,
            },
            Op::Memo("m".into()),
            Op::Pair(u64::MAX, i64::MIN),
        ],
        hash: Hash32([0x22; 32]),
        key: PublicKey([0x44; 32]),
        sig: Signature([0x55; 64]),
    }
}
