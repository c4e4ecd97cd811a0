//! Known-answer vectors in `tests/vectors/*.txt`, one case per file.
//!
//! ```text
//! comment: what this case shows
//! secret: <64 hex>        the receiver's only key
//! sender_id: <32 hex>
//! seq: <decimal>
//! timestamp: <decimal microseconds>   also the receiver's clock
//! body: <hex plaintext, the postcard body>
//! frame: <hex datagram>
//! expect: ok | reject <counter name>
//! ```
//!
//! For `ok`, sealing (secret, sender_id, seq, timestamp, body) must give
//! `frame` byte for byte, and opening `frame` must give back `body`. For
//! `reject`, opening `frame` with a fresh receiver holding only `secret`
//! (default settings, clock at `timestamp`) must fail with that counter.
//!
//! `MCSEC_WRITE_VECTORS=1 cargo test --test vectors -- --ignored` rewrites
//! the files from the definitions at the bottom.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use mcsec::frame::{MAX_DATAGRAM_V4, OVERHEAD};
use mcsec::{Body, GroupKey, GroupSecret, Keyring, Opener, OpenerConfig, Reject, Sealer, SenderId};

const FIELDS: [&str; 8] = [
    "comment",
    "secret",
    "sender_id",
    "seq",
    "timestamp",
    "body",
    "frame",
    "expect",
];

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

struct Vector {
    secret: [u8; 32],
    sender_id: [u8; 16],
    seq: u64,
    timestamp: u64,
    body: Vec<u8>,
    frame: Vec<u8>,
    expect: Option<Reject>,
}

fn parse(name: &str, text: &str) -> Vector {
    let mut fields = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{name}: bad line {line:?}"));
        assert!(FIELDS.contains(&key), "{name}: unknown field {key}");
        assert!(
            fields.insert(key, value).is_none(),
            "{name}: repeated {key}"
        );
    }
    for key in FIELDS {
        assert!(fields.contains_key(key), "{name}: missing {key}");
    }
    let hex = |key: &str| {
        let value = fields[key];
        assert_eq!(
            value,
            value.to_lowercase(),
            "{name}: {key} must be lowercase"
        );
        hex::decode(value).unwrap_or_else(|e| panic!("{name}: {key}: {e}"))
    };
    let expect = match fields["expect"] {
        "ok" => None,
        other => {
            let counter = other
                .strip_prefix("reject ")
                .unwrap_or_else(|| panic!("{name}: bad expect {other:?}"));
            Some(
                Reject::from_counter_name(counter)
                    .unwrap_or_else(|| panic!("{name}: unknown counter {counter}")),
            )
        }
    };
    Vector {
        secret: hex("secret").try_into().expect("secret is 32 bytes"),
        sender_id: hex("sender_id").try_into().expect("sender_id is 16 bytes"),
        seq: fields["seq"].parse().expect("seq"),
        timestamp: fields["timestamp"].parse().expect("timestamp"),
        body: hex("body"),
        frame: hex("frame"),
        expect,
    }
}

fn seal(v: &Vector) -> Vec<u8> {
    let key = GroupKey::new(GroupSecret::from_bytes(v.secret), None);
    let mut sealer = Sealer::with_sender_id(&key, SenderId(v.sender_id), v.seq);
    sealer.set_max_datagram(usize::MAX);
    let mut out = vec![0u8; v.body.len() + OVERHEAD];
    let n = sealer.seal(v.timestamp, &v.body, &mut out).expect("seal");
    out.truncate(n);
    out
}

#[test]
fn every_vector_checks_out() {
    let mut names: Vec<_> = fs::read_dir(vector_dir())
        .expect("tests/vectors exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    names.sort();
    assert!(names.len() >= 7, "expected the vector set, found {names:?}");
    let mut seen_reasons = Vec::new();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let v = parse(&name, &fs::read_to_string(&path).expect("readable"));
        let key = GroupKey::new(GroupSecret::from_bytes(v.secret), None);
        let mut opener = Opener::new(Keyring::single(key), OpenerConfig::default());
        let mut frame = v.frame.clone();
        match v.expect {
            None => {
                assert_eq!(seal(&v), v.frame, "{name}: sealing differs");
                let opened = opener
                    .open(v.timestamp, &mut frame)
                    .unwrap_or_else(|r| panic!("{name}: rejected as {r:?}"));
                assert_eq!(opened.plaintext, &v.body[..], "{name}");
                assert_eq!(opened.header.sender_id, SenderId(v.sender_id), "{name}");
                assert_eq!(opened.header.seq, v.seq, "{name}");
                assert_eq!(opened.header.timestamp_us, v.timestamp, "{name}");
                assert!(Body::decode(opened.plaintext).is_ok(), "{name}: body");
            }
            Some(reason) => {
                assert_eq!(
                    opener.open(v.timestamp, &mut frame).err(),
                    Some(reason),
                    "{name}"
                );
                assert_eq!(opener.stats().rejected(reason), 1, "{name}");
                assert_eq!(opener.sender_count(), 0, "{name}");
                seen_reasons.push(reason);
            }
        }
    }
    for reason in [
        Reject::AuthFailed,
        Reject::UnknownKey,
        Reject::Malformed,
        Reject::Oversize,
    ] {
        assert!(seen_reasons.contains(&reason), "no vector for {reason:?}");
    }
}

/// The definitions the files are written from.
fn definitions() -> Vec<(&'static str, String, Vector)> {
    let secret: [u8; 32] = std::array::from_fn(|i| i as u8);
    let other_secret: [u8; 32] = std::array::from_fn(|i| 0xff - i as u8);
    let sender_id: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
    let timestamp = 1_790_000_000_123_456;
    let data = |payload: &[u8]| {
        let body = Body::Data(payload);
        let mut out = vec![0u8; body.encoded_len()];
        body.encode_into(&mut out).expect("encode");
        out
    };
    let ok = |seq, body: Vec<u8>| {
        let mut v = Vector {
            secret,
            sender_id,
            seq,
            timestamp,
            body,
            frame: Vec::new(),
            expect: None,
        };
        v.frame = seal(&v);
        v
    };
    let reject = |mut v: Vector, reason, f: &dyn Fn(&mut Vec<u8>)| {
        f(&mut v.frame);
        v.expect = Some(reason);
        v
    };
    // A payload that makes the datagram exactly the IPv4 default maximum:
    // 1472 - 56 overhead = 1416 plaintext = 1 variant + 2 length + 1413.
    let max_payload: Vec<u8> = (0..1413u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(data(&max_payload).len() + OVERHEAD, MAX_DATAGRAM_V4);
    let short = data(b"hello, multicast");
    let mut wrong_key = ok(7, short.clone());
    wrong_key.secret = other_secret;
    wrong_key.frame = seal(&wrong_key);
    wrong_key.secret = secret;
    let over_payload = vec![0x5au8; 1414];
    vec![
        ("data_empty", "Data of an empty payload, first frame of a session".into(), ok(0, data(b""))),
        ("data_short", "Data of a short text payload".into(), ok(1, data(b"hello, multicast"))),
        (
            "data_max_ipv4",
            "Data whose frame fills the default IPv4 maximum datagram (1472 bytes); the length varint takes two bytes".into(),
            ok(2, data(&max_payload)),
        ),
        (
            "data_big_seq",
            "Data with a seq above 2^32, to pin the nonce and header byte order".into(),
            ok(0x0000_0102_0304_0506, data(b"seq")),
        ),
        (
            "tampered_tag",
            "data_short with the last bit of the tag flipped".into(),
            reject(ok(1, short.clone()), Reject::AuthFailed, &|f| {
                let last = f.len() - 1;
                f[last] ^= 0x01;
            }),
        ),
        (
            "tampered_header_seq",
            "data_short with one bit of the seq field (offset 31) flipped: the header is authenticated".into(),
            reject(ok(1, short.clone()), Reject::AuthFailed, &|f| f[31] ^= 0x02),
        ),
        (
            "tampered_header_sender",
            "data_short with one bit of the sender ID (offset 8) flipped: a different per-sender key".into(),
            reject(ok(1, short.clone()), Reject::AuthFailed, &|f| f[8] ^= 0x80),
        ),
        (
            "tampered_ciphertext",
            "data_short with the first ciphertext byte (offset 40) flipped".into(),
            reject(ok(1, short.clone()), Reject::AuthFailed, &|f| f[40] ^= 0x01),
        ),
        (
            "wrong_key",
            "data_short sealed under a different secret (ff fe .. e0): its key ID is not in the receiver's keyring".into(),
            reject(wrong_key, Reject::UnknownKey, &|_| {}),
        ),
        (
            "truncated_below_minimum",
            "data_short cut to 55 bytes, one short of header plus tag".into(),
            reject(ok(1, short.clone()), Reject::Malformed, &|f| f.truncate(55)),
        ),
        (
            "truncated_by_one",
            "data_short missing its last byte: long enough to parse, but the tag no longer verifies".into(),
            reject(ok(1, short.clone()), Reject::AuthFailed, &|f| {
                f.pop();
            }),
        ),
        (
            "bad_version",
            "data_short with the version byte (offset 3) set to 2".into(),
            reject(ok(1, short.clone()), Reject::Malformed, &|f| f[3] = 0x02),
        ),
        (
            "oversize",
            "A valid frame of 1473 bytes, one over the default IPv4 maximum datagram".into(),
            reject(ok(3, data(&over_payload)), Reject::Oversize, &|_| {}),
        ),
    ]
}

#[test]
#[ignore = "writes tests/vectors; run with MCSEC_WRITE_VECTORS=1"]
fn write_vectors() {
    if std::env::var_os("MCSEC_WRITE_VECTORS").is_none() {
        return;
    }
    let dir = vector_dir();
    fs::create_dir_all(&dir).expect("mkdir");
    for (name, comment, v) in definitions() {
        let expect = match v.expect {
            None => "ok".to_owned(),
            Some(r) => format!("reject {}", r.counter_name()),
        };
        let text = format!(
            "comment: {comment}\nsecret: {}\nsender_id: {}\nseq: {}\ntimestamp: {}\nbody: {}\nframe: {}\nexpect: {expect}\n",
            hex::encode(v.secret),
            hex::encode(v.sender_id),
            v.seq,
            v.timestamp,
            hex::encode(&v.body),
            hex::encode(&v.frame),
        );
        fs::write(dir.join(format!("{name}.txt")), text).expect("write");
    }
}

#[test]
fn files_match_their_definitions() {
    // The files are the contract; the definitions are how they were made.
    // If these drift apart, one of them was edited by hand.
    for (name, _, v) in definitions() {
        let path = vector_dir().join(format!("{name}.txt"));
        let text = fs::read_to_string(&path).unwrap_or_else(|_| panic!("{name}.txt missing"));
        let file = parse(name, &text);
        assert_eq!(file.frame, v.frame, "{name}");
        assert_eq!(file.body, v.body, "{name}");
        assert_eq!(file.expect, v.expect, "{name}");
    }
}
