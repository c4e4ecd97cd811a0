//! Known-answer vectors, in the two formats PROTOCOL.md defines.
//!
//! `tests/vectors/*.txt`, one frame each (PROTOCOL.md 2.3):
//!
//! ```text
//! comment: what this case shows
//! secret: <64 hex>        the receiver's only key
//! channel: <hex>          the channel ID the receiver opens for
//! sender_id: <32 hex>
//! seq: <decimal>
//! timestamp: <decimal microseconds>   also the receiver's clock
//! body: <hex plaintext>
//! frame: <hex datagram>
//! expect: ok | reject <counter name>
//! ```
//!
//! `tests/vectors/sessions/*.txt`, one receiver through a run of datagrams
//! (PROTOCOL.md 2.4): settings, then `step: NOW FRAME EXPECT` lines.
//!
//! `tests/vectors/manifests/*.txt`, one signed manifest frame each, and
//! `tests/vectors/signed/*.txt`, one trusting receiver through a run of
//! datagrams, then its counters (PROTOCOL.md 3.6).
//!
//! `MCSEC_WRITE_VECTORS=1 cargo test --test vectors -- --ignored` rewrites
//! all four from the definitions at the bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcsec::body::{Manifest, StreamSymbol};
use mcsec::frame::{MAX_DATAGRAM_V4, MAX_DATAGRAM_V6, OVERHEAD};
use mcsec::signed::{
    Received, SignedSealer, SignerKey, TrustList, Trusted, Verifier, VerifierConfig, frame_hash,
    signed_message,
};
use mcsec::{
    Body, ChannelId, FileSymbol, GroupKey, GroupSecret, Keyring, Opener, OpenerConfig, Reject,
    Sealer, SenderId,
};

const FIELDS: [&str; 9] = [
    "comment",
    "secret",
    "channel",
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

fn session_dir() -> PathBuf {
    vector_dir().join("sessions")
}

struct Vector {
    secret: [u8; 32],
    channel: Vec<u8>,
    sender_id: [u8; 16],
    seq: u64,
    timestamp: u64,
    body: Vec<u8>,
    frame: Vec<u8>,
    expect: Option<Reject>,
}

fn lower_hex(name: &str, key: &str, value: &str) -> Vec<u8> {
    assert_eq!(
        value,
        value.to_lowercase(),
        "{name}: {key} must be lowercase"
    );
    hex::decode(value).unwrap_or_else(|e| panic!("{name}: {key}: {e}"))
}

fn parse_expect(name: &str, value: &str) -> Option<Reject> {
    match value {
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
    }
}

fn parse(name: &str, text: &str) -> Vector {
    let mut fields = BTreeMap::new();
    let mut order = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{name}: bad line {line:?}"));
        assert!(FIELDS.contains(&key), "{name}: unknown field {key}");
        assert!(
            fields.insert(key, value).is_none(),
            "{name}: repeated {key}"
        );
        order.push(key);
    }
    assert_eq!(order, FIELDS, "{name}: fields missing or out of order");
    let hex = |key: &str| lower_hex(name, key, fields[key]);
    Vector {
        secret: hex("secret").try_into().expect("secret is 32 bytes"),
        channel: hex("channel"),
        sender_id: hex("sender_id").try_into().expect("sender_id is 16 bytes"),
        seq: fields["seq"].parse().expect("seq"),
        timestamp: fields["timestamp"].parse().expect("timestamp"),
        body: hex("body"),
        frame: hex("frame"),
        expect: parse_expect(name, fields["expect"]),
    }
}

fn channel_of(name: &str, bytes: &[u8]) -> ChannelId {
    ChannelId::from_bytes(bytes).unwrap_or_else(|_| panic!("{name}: not a channel ID"))
}

/// The default maximum datagram for a channel: 1452 for IPv6, else 1472.
fn default_max_datagram(channel: &[u8]) -> usize {
    if channel.first() == Some(&6) {
        MAX_DATAGRAM_V6
    } else {
        MAX_DATAGRAM_V4
    }
}

fn seal_with(
    secret: [u8; 32],
    channel: &[u8],
    sender_id: [u8; 16],
    seq: u64,
    timestamp: u64,
    body: &[u8],
) -> Vec<u8> {
    let key = GroupKey::new(GroupSecret::from_bytes(secret), None);
    let channel = channel_of("seal", channel);
    let mut sealer = Sealer::with_sender_id(&key, &channel, SenderId(sender_id), seq);
    sealer.set_max_datagram(usize::MAX);
    let mut out = vec![0u8; body.len() + OVERHEAD];
    let n = sealer.seal(timestamp, body, &mut out).expect("seal");
    out.truncate(n);
    out
}

fn seal(v: &Vector) -> Vec<u8> {
    seal_with(
        v.secret,
        &v.channel,
        v.sender_id,
        v.seq,
        v.timestamp,
        &v.body,
    )
}

fn txt_files(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_vector_checks_out() {
    let names = txt_files(&vector_dir());
    // Every definition has its file (and `files_match_their_definitions`
    // checks the bytes), so the count cannot silently shrink.
    assert_eq!(
        names.len(),
        definitions().len(),
        "tests/vectors/*.txt and the definitions differ in number"
    );
    let mut seen_reasons = BTreeSet::new();
    let mut ok_variants = BTreeSet::new();
    let mut ok_channels = BTreeSet::new();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let v = parse(&name, &fs::read_to_string(&path).expect("readable"));
        let key = GroupKey::new(GroupSecret::from_bytes(v.secret), None);
        let mut config = OpenerConfig::default();
        config.max_datagram = default_max_datagram(&v.channel);
        let mut opener = Opener::new(Keyring::single(key), channel_of(&name, &v.channel), config);
        let mut frame = v.frame.clone();
        match v.expect {
            None => {
                assert_eq!(seal(&v), v.frame, "{name}: sealing differs");
                let (header, body) = opener
                    .open_body(v.timestamp, &mut frame)
                    .unwrap_or_else(|r| panic!("{name}: rejected as {r:?}"));
                assert_eq!(header.sender_id, SenderId(v.sender_id), "{name}");
                assert_eq!(header.seq, v.seq, "{name}");
                assert_eq!(header.timestamp_us, v.timestamp, "{name}");
                let mut plain = vec![0u8; body.encoded_len()];
                body.encode_into(&mut plain).expect("encode");
                assert_eq!(plain, v.body, "{name}: body");
                ok_variants.insert(v.body[0]);
                ok_channels.insert(v.channel[0]);
            }
            Some(reason) => {
                assert_eq!(
                    opener.open_body(v.timestamp, &mut frame).err(),
                    Some(reason),
                    "{name}"
                );
                assert_eq!(opener.stats().rejected(reason), 1, "{name}");
                assert_eq!(opener.stats().total_rejected(), 1, "{name}");
                let authentic = matches!(reason, Reject::UnknownBody | Reject::BadBody);
                assert_eq!(opener.sender_count(), usize::from(authentic), "{name}");
                seen_reasons.insert(reason.counter_name());
            }
        }
    }
    // Every reason a single frame can show, every body variant and every
    // channel kind. (replayed, stale and sender_table_full need a
    // receiver's history: the session vectors have them.)
    for reason in [
        Reject::Oversize,
        Reject::Malformed,
        Reject::UnknownKey,
        Reject::AuthFailed,
        Reject::UnknownBody,
        Reject::BadBody,
    ] {
        assert!(
            seen_reasons.contains(reason.counter_name()),
            "no vector for {reason:?}"
        );
    }
    assert_eq!(ok_variants, BTreeSet::from([0, 1, 2, 3, 5]));
    assert_eq!(ok_channels, BTreeSet::from([0, 4, 6]));
}

/// One receiver run (PROTOCOL.md 2.4).
struct Session {
    secrets: Vec<[u8; 32]>,
    channel: Vec<u8>,
    max_skew: u64,
    max_future_skew: u64,
    max_senders: usize,
    max_datagram: usize,
    steps: Vec<(u64, Vec<u8>, Option<Reject>)>,
}

fn parse_session(name: &str, text: &str) -> Session {
    let mut s = Session {
        secrets: Vec::new(),
        channel: Vec::new(),
        max_skew: 0,
        max_future_skew: 0,
        max_senders: 0,
        max_datagram: 0,
        steps: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{name}: bad line {line:?}"));
        if key != "secret" && key != "step" {
            assert!(seen.insert(key), "{name}: repeated {key}");
        }
        if key != "step" {
            assert!(s.steps.is_empty(), "{name}: {key} after the first step");
        }
        let number = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{name}: {key}: {e}"))
        };
        match key {
            "comment" => {}
            "secret" => s.secrets.push(
                lower_hex(name, key, value)
                    .try_into()
                    .expect("secret is 32 bytes"),
            ),
            "channel" => s.channel = lower_hex(name, key, value),
            "max_skew" => s.max_skew = number(),
            "max_future_skew" => s.max_future_skew = number(),
            "max_senders" => s.max_senders = number() as usize,
            "max_datagram" => s.max_datagram = number() as usize,
            "step" => {
                let mut parts = value.splitn(3, ' ');
                let now = parts
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("step time");
                let frame = lower_hex(name, key, parts.next().expect("step frame"));
                let expect = parse_expect(name, parts.next().expect("step expect"));
                s.steps.push((now, frame, expect));
            }
            other => panic!("{name}: unknown field {other}"),
        }
    }
    for key in [
        "comment",
        "channel",
        "max_skew",
        "max_future_skew",
        "max_senders",
        "max_datagram",
    ] {
        assert!(seen.contains(key), "{name}: missing {key}");
    }
    assert!(
        !s.secrets.is_empty() && !s.steps.is_empty(),
        "{name}: empty"
    );
    s
}

/// The verdicts a fresh receiver with the session's settings gives.
fn run_session(name: &str, s: &Session) -> Vec<Option<Reject>> {
    let text: String = s
        .secrets
        .iter()
        .map(|secret| {
            let key = GroupKey::new(GroupSecret::from_bytes(*secret), None);
            format!("{}\n", *key.to_line())
        })
        .collect();
    let mut config = OpenerConfig::default();
    config.max_skew = Duration::from_micros(s.max_skew);
    config.max_future_skew = Duration::from_micros(s.max_future_skew);
    config.max_senders = s.max_senders;
    config.max_datagram = s.max_datagram;
    let mut opener = Opener::new(
        Keyring::parse(&text).expect("keyring"),
        channel_of(name, &s.channel),
        config,
    );
    s.steps
        .iter()
        .map(|(now, frame, _)| opener.open_body(*now, &mut frame.clone()).err())
        .collect()
}

#[test]
fn every_session_checks_out() {
    let names = txt_files(&session_dir());
    assert_eq!(
        names.len(),
        sessions().len(),
        "tests/vectors/sessions/*.txt and the definitions differ in number"
    );
    let mut reasons = BTreeSet::new();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let s = parse_session(&name, &fs::read_to_string(&path).expect("readable"));
        let got = run_session(&name, &s);
        for (i, ((_, _, want), got)) in s.steps.iter().zip(got).enumerate() {
            assert_eq!(got, *want, "{name}: step {}", i + 1);
            if let Some(r) = want {
                reasons.insert(r.counter_name());
            }
        }
    }
    for reason in [Reject::Stale, Reject::Replayed, Reject::SenderTableFull] {
        assert!(
            reasons.contains(reason.counter_name()),
            "no session for {reason:?}"
        );
    }
}

fn encode(body: &Body<'_>) -> Vec<u8> {
    let mut out = vec![0u8; body.encoded_len()];
    body.encode_into(&mut out).expect("encode");
    out
}

const SECRET: [u8; 32] = {
    let mut s = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        s[i] = i as u8;
        i += 1;
    }
    s
};
const SENDER: [u8; 16] = {
    let mut s = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        s[i] = 0xa0 + i as u8;
        i += 1;
    }
    s
};
const TIMESTAMP: u64 = 1_790_000_000_123_456;
const SEC: u64 = 1_000_000;

fn v4() -> Vec<u8> {
    ChannelId::group("239.255.0.1:5000".parse().unwrap())
        .as_bytes()
        .to_vec()
}

fn v6() -> Vec<u8> {
    ChannelId::group("[ff0e::114]:5000".parse().unwrap())
        .as_bytes()
        .to_vec()
}

fn named() -> Vec<u8> {
    ChannelId::named("stock-ticker")
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// The definitions the single-frame files are written from.
fn definitions() -> Vec<(&'static str, String, Vector)> {
    let other_secret: [u8; 32] = std::array::from_fn(|i| 0xff - i as u8);
    let data = |payload: &[u8]| encode(&Body::Data(payload));
    let ok_on = |channel: Vec<u8>, seq, body: Vec<u8>| {
        let mut v = Vector {
            secret: SECRET,
            channel,
            sender_id: SENDER,
            seq,
            timestamp: TIMESTAMP,
            body,
            frame: Vec::new(),
            expect: None,
        };
        v.frame = seal(&v);
        v
    };
    let ok = |seq, body| ok_on(v4(), seq, body);
    let reject = |mut v: Vector, reason, f: &dyn Fn(&mut Vec<u8>)| {
        f(&mut v.frame);
        v.expect = Some(reason);
        v
    };
    // Sealed for `sealed_for`, given to a receiver of the v4 channel.
    let elsewhere = |sealed_for: Vec<u8>| {
        let mut v = ok_on(sealed_for, 1, data(b"hello, multicast"));
        v.channel = v4();
        v.expect = Some(Reject::AuthFailed);
        v
    };
    // Authentic frames whose body is what the receiver refuses.
    let bad_body = |plain: Vec<u8>, reason| {
        let mut v = ok(4, plain);
        v.expect = Some(reason);
        v
    };
    // Payloads that make the datagram exactly each default maximum:
    // 1472 - 56 = 1416 = 1 variant + 2 length + 1413; 1452 - 56 = 1396 = 3 + 1393.
    let max_v4: Vec<u8> = (0..1413u32).map(|i| (i % 251) as u8).collect();
    let max_v6: Vec<u8> = (0..1393u32).map(|i| (i % 241) as u8).collect();
    assert_eq!(data(&max_v4).len() + OVERHEAD, MAX_DATAGRAM_V4);
    assert_eq!(data(&max_v6).len() + OVERHEAD, MAX_DATAGRAM_V6);
    let short = data(b"hello, multicast");
    let mut wrong_key = ok(7, short.clone());
    wrong_key.secret = other_secret;
    wrong_key.frame = seal(&wrong_key);
    wrong_key.secret = SECRET;
    let fragment = encode(&Body::Fragment {
        msg_id: 300,
        index: 1,
        count: 3,
        total_len: 2500,
        bytes: &[0x66; 1000],
    });
    let chat = encode(&Body::Chat {
        nick: "alice",
        text: "hello, caf\u{e9} \u{1f600}",
    });
    let symbol: Vec<u8> = (0..64u8).collect();
    let file_symbol = encode(&Body::FileSymbol(FileSymbol {
        file_id: 0,
        file_len: 100,
        symbol_size: 64,
        source_blocks: 1,
        sbn: 0,
        esi: 1,
        sha256: [0x5c; 32],
        name: "photo.jpg",
        symbol: &symbol,
    }));
    // A repair symbol (ESI 6 >= K_b = 5) of block 300 of B = 3125: the
    // block and file_len varints take two and three bytes.
    let stream_symbol = encode(&Body::StreamSymbol(StreamSymbol {
        file_id: 1,
        file_len: 1_000_000,
        symbol_size: 64,
        block_symbols: 5,
        block: 300,
        esi: 6,
        sha256: [0x5c; 32],
        path: "photos/2026/cat.jpg",
        symbol: &symbol,
    }));
    let mut trailing = short.clone();
    trailing.push(0x00);
    vec![
        ("data_empty", "Data of an empty payload, first frame of a session, IPv4 channel 239.255.0.1:5000".into(), ok(0, data(b""))),
        ("data_short", "Data of a short text payload".into(), ok(1, short.clone())),
        (
            "data_max_ipv4",
            "Data whose frame fills the default IPv4 maximum datagram (1472 bytes); the length varint takes two bytes".into(),
            ok(2, data(&max_v4)),
        ),
        (
            "data_max_ipv6",
            "Data on the IPv6 channel [ff0e::114]:5000 whose frame fills the default IPv6 maximum datagram (1452 bytes)".into(),
            ok_on(v6(), 2, data(&max_v6)),
        ),
        (
            "data_named_channel",
            "Data on the channel named stock-ticker".into(),
            ok_on(named(), 1, short.clone()),
        ),
        (
            "data_big_seq",
            "Data with a seq above 2^32, to pin the nonce and header byte order".into(),
            ok(0x0000_0102_0304_0506, data(b"seq")),
        ),
        (
            "fragment",
            "Fragment (variant 1): piece 1 of 3 of message 300, 2500 bytes in all, pieces of 1000".into(),
            ok(5, fragment),
        ),
        ("chat", "Chat (variant 2): nick alice, a line with UTF-8".into(), ok(6, chat)),
        (
            "file_symbol",
            "FileSymbol (variant 3): ESI 1 of a 100-byte file photo.jpg in one block of 64-byte symbols".into(),
            ok(7, file_symbol),
        ),
        (
            "stream_symbol",
            "StreamSymbol (variant 5): repair symbol ESI 6 of block 300 (of 3125) of a 1000000-byte file photos/2026/cat.jpg in blocks of 5 symbols of 64 bytes".into(),
            ok(8, stream_symbol),
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
            "data_short with one bit of the sender ID (offset 8) flipped: another XChaCha20 nonce".into(),
            reject(ok(1, short.clone()), Reject::AuthFailed, &|f| f[8] ^= 0x80),
        ),
        (
            "tampered_header_timestamp",
            "data_short with the lowest bit of the timestamp (offset 39) flipped: still fresh, but authenticated".into(),
            reject(ok(1, short.clone()), Reject::AuthFailed, &|f| f[39] ^= 0x01),
        ),
        (
            "tampered_ciphertext",
            "data_short with the first ciphertext byte (offset 40) flipped".into(),
            reject(ok(1, short.clone()), Reject::AuthFailed, &|f| f[40] ^= 0x01),
        ),
        (
            "other_port",
            "data_short sealed for 239.255.0.1:5001, received on 239.255.0.1:5000: another channel".into(),
            elsewhere(ChannelId::group("239.255.0.1:5001".parse().unwrap()).as_bytes().to_vec()),
        ),
        (
            "other_group",
            "data_short sealed for 239.255.0.2:5000, received on 239.255.0.1:5000: another channel".into(),
            elsewhere(ChannelId::group("239.255.0.2:5000".parse().unwrap()).as_bytes().to_vec()),
        ),
        (
            "other_name",
            "data_short sealed for the channel named stock-ticker, received on 239.255.0.1:5000".into(),
            elsewhere(named()),
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
            "version_1",
            "data_short with the version byte (offset 3) set to 1: a version 1 frame is malformed".into(),
            reject(ok(1, short.clone()), Reject::Malformed, &|f| f[3] = 0x01),
        ),
        (
            "oversize",
            "A valid frame of 1473 bytes, one over the default IPv4 maximum datagram".into(),
            reject(ok(3, data(&[0x5a; 1414])), Reject::Oversize, &|_| {}),
        ),
        (
            "oversize_ipv6",
            "A valid frame of 1453 bytes on the IPv6 channel, one over the default IPv6 maximum datagram".into(),
            reject(ok_on(v6(), 3, data(&[0x5a; 1394])), Reject::Oversize, &|_| {}),
        ),
        (
            "unknown_variant",
            "An authentic frame whose body is variant 127, far above the last this version knows (5)".into(),
            bad_body(vec![0x7f, 0x00], Reject::UnknownBody),
        ),
        (
            "non_minimal_varint",
            "An authentic Data body whose length 0 is written 80 00: not minimal".into(),
            bad_body(vec![0x00, 0x80, 0x00], Reject::BadBody),
        ),
        (
            "non_minimal_variant",
            "An authentic body whose variant number 4 is written 84 00: malformed, not an unknown variant".into(),
            bad_body(vec![0x84, 0x00, 0x00], Reject::BadBody),
        ),
        (
            "trailing_byte",
            "An authentic Data body with one byte after it".into(),
            bad_body(trailing, Reject::BadBody),
        ),
        (
            "truncated_body",
            "An authentic Data body announcing 5 bytes and holding 2".into(),
            bad_body(vec![0x00, 0x05, 0x61, 0x62], Reject::BadBody),
        ),
        (
            "bad_utf8_chat",
            "An authentic Chat body whose nick is not UTF-8".into(),
            bad_body(vec![0x02, 0x01, 0xff, 0x00], Reject::BadBody),
        ),
    ]
}

/// The definitions the session files are written from.
fn sessions() -> Vec<(&'static str, Session, String)> {
    let short = |text: &[u8]| encode(&Body::Data(text));
    let frame = |sender: u8, seq: u64, ts: u64| {
        seal_with(SECRET, &v4(), [sender; 16], seq, ts, &short(b"tick"))
    };
    let base = |steps| Session {
        secrets: vec![SECRET],
        channel: v4(),
        max_skew: 30 * SEC,
        max_future_skew: 5 * SEC,
        max_senders: 4096,
        max_datagram: MAX_DATAGRAM_V4,
        steps,
    };
    let ok = |now: u64, f: Vec<u8>| (now, f, None);
    let no = |now: u64, f: Vec<u8>, r: Reject| (now, f, Some(r));
    let t = TIMESTAMP;
    let window = 1984;
    let mut table = base(vec![
        ok(t, frame(1, 0, t)),
        ok(t, frame(2, 0, t)),
        // A's newest (t) is exactly max_skew old: not yet evictable.
        no(
            t + 30 * SEC,
            frame(3, 0, t + 30 * SEC),
            Reject::SenderTableFull,
        ),
        // A microsecond later it is: A goes, C comes in.
        ok(t + 30 * SEC + 1, frame(3, 0, t + 30 * SEC + 1)),
        // B is now the oldest, at t, and evictable too: D evicts it.
        ok(t + 30 * SEC + 1, frame(4, 0, t + 30 * SEC + 1)),
        // The clock steps back: a new sender stamped t is fresh, but at or
        // before the newest stamp of a forgotten sender.
        no(t + 30 * SEC, frame(5, 0, t), Reject::Stale),
        // C and D are known and not idle: E is refused.
        no(
            t + 30 * SEC + 2,
            frame(6, 0, t + 30 * SEC + 2),
            Reject::SenderTableFull,
        ),
        // C's next frame still opens.
        ok(t + 30 * SEC + 2, frame(3, 1, t + 30 * SEC + 2)),
    ]);
    table.max_senders = 2;
    let mut future = base(vec![
        // Stamped at the future edge: its slot is held for 5 + 30 s.
        ok(t, frame(1, 0, t + 5 * SEC)),
        no(
            t + 35 * SEC,
            frame(2, 0, t + 35 * SEC),
            Reject::SenderTableFull,
        ),
        ok(t + 35 * SEC + 1, frame(2, 0, t + 35 * SEC + 1)),
    ]);
    future.max_senders = 1;
    let mut rotation = base(vec![
        ok(t, frame(1, 0, t)),
        ok(
            t,
            seal_with([0x77; 32], &v4(), [9; 16], 0, t, &short(b"new key")),
        ),
        no(
            t,
            seal_with([0x78; 32], &v4(), [9; 16], 1, t, &short(b"x")),
            Reject::UnknownKey,
        ),
    ]);
    rotation.secrets.push([0x77; 32]);
    vec![
        (
            "skew_edges",
            base(vec![
                ok(t, frame(1, 0, t - 30 * SEC)),
                ok(t, frame(1, 1, t + 5 * SEC)),
                no(t, frame(1, 2, t - 30 * SEC - 1), Reject::Stale),
                no(t, frame(1, 3, t + 5 * SEC + 1), Reject::Stale),
                // A stale frame used no seq: its seq opens when fresh.
                ok(t, frame(1, 2, t)),
            ]),
            "Both freshness edges are inclusive: 30 s into the past, 5 s into the future; one microsecond beyond either is stale".into(),
        ),
        (
            "replay_window",
            base(vec![
                ok(t, frame(1, window, t)),
                no(t, frame(1, window, t), Reject::Replayed),
                ok(t, frame(1, 1, t)),
                no(t, frame(1, 0, t), Reject::Replayed),
                no(t, frame(1, 1, t), Reject::Replayed),
                ok(t, frame(1, window + 1, t)),
                no(t, frame(1, 1, t), Reject::Replayed),
                ok(t, frame(1, 2, t)),
                ok(t, frame(1, u64::MAX, t)),
                no(t, frame(1, window + 2, t), Reject::Replayed),
                // Another sender is not affected.
                ok(t, frame(2, 0, t)),
            ]),
            "The 1984-frame window: after seq 1984, seq 1 is inside and seq 0 is out; each seq opens once; a jump to 2^64-1 moves the window past everything".into(),
        ),
        (
            "table_full_and_eviction",
            table,
            "A table of 2: a new sender is refused while the others are not idle, evicts one once its newest frame is older than max_skew, and the newest stamp of a forgotten sender makes earlier stamps of unknown senders stale".into(),
        ),
        (
            "future_stamp_holds_a_slot",
            future,
            "A table of 1: a sender stamping 5 s ahead holds its slot until its stamp is 30 s old, 35 s after it sent".into(),
        ),
        (
            "keyring_of_two",
            rotation,
            "A keyring of two keys accepts frames under either; a third key is unknown".into(),
        ),
    ]
}

#[test]
#[ignore = "writes tests/vectors; run with MCSEC_WRITE_VECTORS=1"]
fn write_vectors() {
    assert!(
        std::env::var_os("MCSEC_WRITE_VECTORS").is_some(),
        "set MCSEC_WRITE_VECTORS=1 to rewrite tests/vectors"
    );
    let dir = vector_dir();
    fs::create_dir_all(&dir).expect("mkdir");
    let expect = |e: &Option<Reject>| match e {
        None => "ok".to_owned(),
        Some(r) => format!("reject {}", r.counter_name()),
    };
    for (name, comment, v) in definitions() {
        let text = format!(
            "comment: {comment}\nsecret: {}\nchannel: {}\nsender_id: {}\nseq: {}\ntimestamp: {}\nbody: {}\nframe: {}\nexpect: {}\n",
            hex::encode(v.secret),
            hex::encode(&v.channel),
            hex::encode(v.sender_id),
            v.seq,
            v.timestamp,
            hex::encode(&v.body),
            hex::encode(&v.frame),
            expect(&v.expect),
        );
        fs::write(dir.join(format!("{name}.txt")), text).expect("write");
    }
    fs::create_dir_all(session_dir()).expect("mkdir");
    for (name, s, comment) in sessions() {
        let mut text = format!("comment: {comment}\n");
        for secret in &s.secrets {
            text.push_str(&format!("secret: {}\n", hex::encode(secret)));
        }
        text.push_str(&format!(
            "channel: {}\nmax_skew: {}\nmax_future_skew: {}\nmax_senders: {}\nmax_datagram: {}\n",
            hex::encode(&s.channel),
            s.max_skew,
            s.max_future_skew,
            s.max_senders,
            s.max_datagram
        ));
        for (now, frame, want) in &s.steps {
            text.push_str(&format!(
                "step: {now} {} {}\n",
                hex::encode(frame),
                expect(want)
            ));
        }
        fs::write(session_dir().join(format!("{name}.txt")), text).expect("write");
    }
    write_signed_vectors();
}

#[test]
fn files_match_their_definitions() {
    // The files are the contract; the definitions are how they were made.
    // If these drift apart, one of them was edited by hand.
    for (name, _, v) in definitions() {
        let path = vector_dir().join(format!("{name}.txt"));
        let text = fs::read_to_string(&path).unwrap_or_else(|_| panic!("{name}.txt missing"));
        let file = parse(name, &text);
        assert_eq!(file.channel, v.channel, "{name}");
        assert_eq!(file.frame, v.frame, "{name}");
        assert_eq!(file.body, v.body, "{name}");
        assert_eq!(file.expect, v.expect, "{name}");
    }
    for (name, s, _) in sessions() {
        let path = session_dir().join(format!("{name}.txt"));
        let text = fs::read_to_string(&path).unwrap_or_else(|_| panic!("{name}.txt missing"));
        let file = parse_session(name, &text);
        assert_eq!(file.steps, s.steps, "{name}");
        assert_eq!(file.secrets, s.secrets, "{name}");
    }
}

// ---------------------------------------------------------------------
// Signed senders (PROTOCOL.md 3.6).

const MANIFEST_FIELDS: [&str; 11] = [
    "comment",
    "secret",
    "channel",
    "seed",
    "sender_id",
    "seq",
    "timestamp",
    "first_seq",
    "hashes",
    "body",
    "frame",
];

/// The counters of PROTOCOL.md 3.5, in the order a `counts` line lists them.
const SIGNED_COUNTERS: [&str; 10] = [
    "manifests_verified",
    "manifest_duplicate",
    "sig_untrusted",
    "sig_invalid",
    "sig_bad",
    "sig_forged",
    "sig_unsigned",
    "sig_expired",
    "sig_hold_full",
    "sig_conflict",
];

fn manifest_dir() -> PathBuf {
    vector_dir().join("manifests")
}

fn signed_dir() -> PathBuf {
    vector_dir().join("signed")
}

/// One manifest construction case (PROTOCOL.md 3.6).
struct ManifestVector {
    secret: [u8; 32],
    channel: Vec<u8>,
    seed: [u8; 32],
    sender_id: [u8; 16],
    seq: u64,
    timestamp: u64,
    first_seq: u64,
    hashes: Vec<u8>,
    body: Vec<u8>,
    frame: Vec<u8>,
}

fn parse_manifest(name: &str, text: &str) -> ManifestVector {
    let mut fields = BTreeMap::new();
    let mut order = Vec::new();
    for line in text.lines() {
        let (key, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{name}: bad line {line:?}"));
        assert!(
            MANIFEST_FIELDS.contains(&key),
            "{name}: unknown field {key}"
        );
        assert!(
            fields.insert(key, value).is_none(),
            "{name}: repeated {key}"
        );
        order.push(key);
    }
    assert_eq!(
        order, MANIFEST_FIELDS,
        "{name}: fields missing or out of order"
    );
    let hex = |key: &str| lower_hex(name, key, fields[key]);
    let number = |key: &str| -> u64 {
        fields[key]
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {key}: {e}"))
    };
    ManifestVector {
        secret: hex("secret").try_into().expect("secret is 32 bytes"),
        channel: hex("channel"),
        seed: hex("seed").try_into().expect("seed is 32 bytes"),
        sender_id: hex("sender_id").try_into().expect("sender_id is 16 bytes"),
        seq: number("seq"),
        timestamp: number("timestamp"),
        first_seq: number("first_seq"),
        hashes: hex("hashes"),
        body: hex("body"),
        frame: hex("frame"),
    }
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The signed message of PROTOCOL.md 3.3, spelled out here and checked
/// against the library's.
fn manifest_message(
    channel: &[u8],
    secret: [u8; 32],
    sender_id: [u8; 16],
    first_seq: u64,
    hashes: &[u8],
) -> Vec<u8> {
    let key = GroupKey::new(GroupSecret::from_bytes(secret), None);
    let mut message = b"mcsec v2 manifest".to_vec();
    message.extend_from_slice(channel);
    message.extend_from_slice(&key.id().to_be_bytes());
    message.extend_from_slice(&sender_id);
    message.extend_from_slice(&first_seq.to_be_bytes());
    message.extend_from_slice(hashes);
    let mut library = Vec::new();
    signed_message(
        &mut library,
        &channel_of("message", channel),
        key.id(),
        &SenderId(sender_id),
        first_seq,
        hashes,
    );
    assert_eq!(
        library, message,
        "signed_message differs from PROTOCOL.md 3.3"
    );
    message
}

/// A Manifest body, spelled out: `04 || signer_id || varint(first_seq) ||
/// varint(len) || hashes || signature`, checked against the library's
/// encoding of the same fields.
fn manifest_body(
    signer_id: [u8; 8],
    first_seq: u64,
    hashes: &[u8],
    signature: [u8; 64],
) -> Vec<u8> {
    let mut body = vec![0x04];
    body.extend_from_slice(&signer_id);
    push_varint(&mut body, first_seq);
    push_varint(&mut body, hashes.len() as u64);
    body.extend_from_slice(hashes);
    body.extend_from_slice(&signature);
    let library = encode(&Body::Manifest(Manifest {
        signer_id,
        first_seq,
        hashes,
        signature_r: signature[..32].try_into().unwrap(),
        signature_s: signature[32..].try_into().unwrap(),
    }));
    assert_eq!(
        library, body,
        "the Manifest encoding differs from PROTOCOL.md 3.3"
    );
    body
}

/// What a manifest vector's `body` and `frame` must be.
fn make_manifest(v: &ManifestVector) -> (Vec<u8>, Vec<u8>) {
    let key = SignerKey::from_seed(&v.seed);
    let message = manifest_message(&v.channel, v.secret, v.sender_id, v.first_seq, &v.hashes);
    let body = manifest_body(key.id().0, v.first_seq, &v.hashes, key.sign(&message));
    let frame = seal_with(v.secret, &v.channel, v.sender_id, v.seq, v.timestamp, &body);
    (body, frame)
}

/// A trusting receiver with default core settings for `channel`.
fn trusting_receiver(
    secret: [u8; 32],
    channel: &[u8],
    trust: &[([u8; 8], [u8; 32])],
    hold_us: u64,
) -> (Opener, Verifier) {
    let key = GroupKey::new(GroupSecret::from_bytes(secret), None);
    let mut core = OpenerConfig::default();
    core.max_datagram = default_max_datagram(channel);
    let opener = Opener::new(Keyring::single(key), channel_of("receiver", channel), core);
    let trust = TrustList::new(
        trust
            .iter()
            .map(|(id, public)| {
                let trusted = Trusted::new(public, None).expect("a trusted key is a point");
                assert_eq!(trusted.id().0, *id, "a trust line's signer ID is its key's");
                trusted
            })
            .collect(),
    );
    let mut config = VerifierConfig::default();
    config.hold = Duration::from_micros(hold_us);
    (opener, Verifier::new(trust, config))
}

#[test]
fn every_manifest_vector_checks_out() {
    let names = txt_files(&manifest_dir());
    assert!(!names.is_empty(), "no tests/vectors/manifests/*.txt");
    assert_eq!(
        names.len(),
        manifest_definitions().len(),
        "tests/vectors/manifests/*.txt and the definitions differ in number"
    );
    let mut channels = BTreeSet::new();
    let mut counts = BTreeSet::new();
    let mut first_seqs = BTreeSet::new();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let v = parse_manifest(&name, &fs::read_to_string(&path).expect("readable"));
        let (body, frame) = make_manifest(&v);
        assert_eq!(body, v.body, "{name}: body differs");
        assert_eq!(frame, v.frame, "{name}: frame differs");
        // A receiver trusting the seed's key verifies it.
        let key = SignerKey::from_seed(&v.seed);
        let (mut opener, mut verifier) = trusting_receiver(
            v.secret,
            &v.channel,
            &[(key.id().0, key.public())],
            2_000_000,
        );
        let mut out = Vec::new();
        assert_eq!(
            verifier.receive(&mut opener, v.timestamp, &v.frame, &mut out),
            Ok(Received::Verified),
            "{name}"
        );
        assert!(
            v.hashes.len().is_multiple_of(16) && !v.hashes.is_empty(),
            "{name}"
        );
        channels.insert(v.channel[0]);
        counts.insert(v.hashes.len() / 16);
        first_seqs.insert(v.first_seq);
    }
    assert_eq!(channels, BTreeSet::from([0, 4, 6]));
    assert!(counts.contains(&1) && counts.contains(&64), "{counts:?}");
    assert!(first_seqs.contains(&0) && first_seqs.iter().any(|s| *s > 1 << 56));
}

/// What one step of a signed session did (PROTOCOL.md 3.6 `EXPECT`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Deliver(Vec<u64>),
    Hold,
    None,
    Reject(String),
}

impl Expect {
    fn parse(name: &str, text: &str) -> Self {
        match text {
            "hold" => Self::Hold,
            "none" => Self::None,
            _ => {
                if let Some(seqs) = text.strip_prefix("deliver ") {
                    Self::Deliver(
                        seqs.split(',')
                            .map(|s| {
                                assert!(
                                    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
                                    "{name}: bad seq {s:?}"
                                );
                                s.parse().unwrap_or_else(|e| panic!("{name}: {s}: {e}"))
                            })
                            .collect(),
                    )
                } else if let Some(counter) = text.strip_prefix("reject ") {
                    assert!(
                        Reject::from_counter_name(counter).is_some()
                            || SIGNED_COUNTERS[1..].contains(&counter),
                        "{name}: unknown counter {counter}"
                    );
                    Self::Reject(counter.to_owned())
                } else {
                    panic!("{name}: bad expect {text:?}")
                }
            }
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deliver(seqs) => {
                let seqs: Vec<String> = seqs.iter().map(u64::to_string).collect();
                write!(f, "deliver {}", seqs.join(","))
            }
            Self::Hold => f.write_str("hold"),
            Self::None => f.write_str("none"),
            Self::Reject(counter) => write!(f, "reject {counter}"),
        }
    }
}

/// One trusting receiver run (PROTOCOL.md 3.6).
#[derive(Debug, PartialEq, Eq)]
struct SignedSession {
    secret: [u8; 32],
    channel: Vec<u8>,
    /// (signer ID, public key), in order.
    trust: Vec<([u8; 8], [u8; 32])>,
    hold_us: u64,
    /// The clock, the datagram (`None` for `-`), the verdict.
    steps: Vec<(u64, Option<Vec<u8>>, Expect)>,
    counts: Vec<(String, u64)>,
}

fn parse_signed(name: &str, text: &str) -> SignedSession {
    let mut s = SignedSession {
        secret: [0; 32],
        channel: Vec::new(),
        trust: Vec::new(),
        hold_us: 0,
        steps: Vec::new(),
        counts: Vec::new(),
    };
    let mut keys = Vec::new();
    for line in text.lines() {
        let (key, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{name}: bad line {line:?}"));
        if keys.last() != Some(&key) || !matches!(key, "trust" | "step") {
            keys.push(key);
        }
        match key {
            "comment" => {}
            "secret" => {
                s.secret = lower_hex(name, key, value)
                    .try_into()
                    .expect("secret is 32 bytes")
            }
            "channel" => s.channel = lower_hex(name, key, value),
            "trust" => {
                let (id, public) = value
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{name}: bad trust {value:?}"));
                s.trust.push((
                    lower_hex(name, key, id)
                        .try_into()
                        .expect("signer ID is 8 bytes"),
                    lower_hex(name, key, public)
                        .try_into()
                        .expect("public key is 32 bytes"),
                ));
            }
            "hold_us" => {
                s.hold_us = value
                    .parse()
                    .unwrap_or_else(|e| panic!("{name}: hold_us: {e}"))
            }
            "step" => {
                let mut parts = value.splitn(3, ' ');
                let now = parts
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{name}: step time in {value:?}"));
                let frame = match parts.next().expect("step frame") {
                    "-" => None,
                    hex => {
                        assert!(hex.len() >= 2, "{name}: empty datagram");
                        Some(lower_hex(name, key, hex))
                    }
                };
                let expect = Expect::parse(name, parts.next().expect("step expect"));
                if frame.is_none() {
                    assert_eq!(expect, Expect::None, "{name}: a `-` step expects none");
                }
                s.steps.push((now, frame, expect));
            }
            "counts" => {
                for pair in value.split(' ') {
                    let (counter, count) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("{name}: bad count {pair:?}"));
                    s.counts.push((
                        counter.to_owned(),
                        count
                            .parse()
                            .unwrap_or_else(|e| panic!("{name}: {counter}: {e}")),
                    ));
                }
            }
            other => panic!("{name}: unknown field {other}"),
        }
    }
    // comment, secret, channel, one or more trust, hold_us, one or more
    // step, counts: each once, in that order.
    assert_eq!(
        keys,
        [
            "comment", "secret", "channel", "trust", "hold_us", "step", "counts"
        ],
        "{name}: fields missing, repeated or out of order"
    );
    let counters: Vec<&str> = s.counts.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        counters, SIGNED_COUNTERS,
        "{name}: counts must list every counter, in order"
    );
    s
}

/// The verdicts and final counters a fresh trusting receiver gives.
fn run_signed(s: &SignedSession) -> (Vec<Expect>, Vec<(String, u64)>) {
    let (mut opener, mut verifier) = trusting_receiver(s.secret, &s.channel, &s.trust, s.hold_us);
    let verdicts = s
        .steps
        .iter()
        .map(|(now, frame, _)| {
            let Some(frame) = frame else {
                verifier.expire(*now);
                return Expect::None;
            };
            let mut out = Vec::new();
            let result = verifier.receive(&mut opener, *now, frame, &mut out);
            let delivered: Vec<u64> = out.iter().map(|f| f.header.seq).collect();
            match result {
                Ok(Received::Held) => {
                    assert!(delivered.is_empty());
                    Expect::Hold
                }
                Ok(Received::Delivered) => {
                    assert_eq!(delivered.len(), 1);
                    Expect::Deliver(delivered)
                }
                Ok(Received::Verified) if delivered.is_empty() => Expect::None,
                Ok(Received::Verified) => Expect::Deliver(delivered),
                Err(reason) => {
                    assert!(delivered.is_empty());
                    Expect::Reject(reason.counter_name().to_owned())
                }
            }
        })
        .collect();
    let counts = verifier
        .stats()
        .counters()
        .iter()
        .map(|(name, n)| ((*name).to_owned(), *n))
        .collect();
    (verdicts, counts)
}

#[test]
fn every_signed_session_checks_out() {
    let names = txt_files(&signed_dir());
    assert!(!names.is_empty(), "no tests/vectors/signed/*.txt");
    assert_eq!(
        names.len(),
        signed_sessions().len(),
        "tests/vectors/signed/*.txt and the definitions differ in number"
    );
    let mut kinds = BTreeSet::new();
    let mut nonzero = BTreeSet::new();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let s = parse_signed(&name, &fs::read_to_string(&path).expect("readable"));
        let (verdicts, counts) = run_signed(&s);
        for (i, ((now, frame, want), got)) in s.steps.iter().zip(verdicts).enumerate() {
            assert_eq!(got, *want, "{name}: step {} (at {now})", i + 1);
            kinds.insert(match (frame, want) {
                (None, _) => "-".to_owned(),
                (_, Expect::Reject(r)) => format!("reject {r}"),
                (_, e) => e
                    .to_string()
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        assert_eq!(counts, s.counts, "{name}: counts");
        nonzero.extend(
            counts
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(c, _)| c.clone()),
        );
    }
    for kind in [
        "deliver",
        "hold",
        "none",
        "-",
        "reject manifest_duplicate",
        "reject sig_untrusted",
        "reject sig_invalid",
        "reject sig_bad",
        "reject sig_forged",
        "reject replayed",
        "reject bad_body",
    ] {
        assert!(kinds.contains(kind), "no signed session step with {kind}");
    }
    for counter in &SIGNED_COUNTERS[..8] {
        assert!(
            nonzero.contains(*counter),
            "no signed session counts {counter}"
        );
    }
}

/// The signer the signed vectors trust, and one they do not.
const SEED: [u8; 32] = {
    let mut s = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        s[i] = 0x40 + i as u8;
        i += 1;
    }
    s
};
const OTHER_SEED: [u8; 32] = [0x99; 32];

fn trust_of(seed: &[u8; 32]) -> ([u8; 8], [u8; 32]) {
    let key = SignerKey::from_seed(seed);
    (key.id().0, key.public())
}

fn tick(seq: u64) -> Vec<u8> {
    encode(&Body::Data(format!("tick {seq}").as_bytes()))
}

/// A Data frame "tick SEQ" under SECRET, stamped TIMESTAMP.
fn tick_frame(channel: &[u8], sender: [u8; 16], seq: u64) -> Vec<u8> {
    seal_with(SECRET, channel, sender, seq, TIMESTAMP, &tick(seq))
}

/// The definitions the manifest files are written from: manifests over the
/// hashes of real "tick SEQ" frames of the same session.
fn manifest_definitions() -> Vec<(&'static str, String, ManifestVector)> {
    let make = |channel: Vec<u8>, first_seq: u64, count: u64| {
        let hashes: Vec<u8> = (first_seq..=first_seq + (count - 1))
            .flat_map(|seq| frame_hash(&tick_frame(&channel, SENDER, seq)))
            .collect();
        let mut v = ManifestVector {
            secret: SECRET,
            channel,
            seed: SEED,
            sender_id: SENDER,
            seq: first_seq.wrapping_add(count),
            timestamp: TIMESTAMP,
            first_seq,
            hashes,
            body: Vec::new(),
            frame: Vec::new(),
        };
        (v.body, v.frame) = make_manifest(&v);
        v
    };
    vec![
        (
            "ipv4_one_hash",
            "A manifest of one frame (seq 0, Data \"tick 0\") on 239.255.0.1:5000, sealed as seq 1".into(),
            make(v4(), 0, 1),
        ),
        (
            "ipv4_64_hashes",
            "A manifest of 64 frames (seqs 0 to 63, Data \"tick SEQ\") on 239.255.0.1:5000, sealed as seq 64".into(),
            make(v4(), 0, 64),
        ),
        (
            "ipv6_64_hashes",
            "A manifest of 64 frames from seq 1000 on [ff0e::114]:5000, sealed as seq 1064".into(),
            make(v6(), 1000, 64),
        ),
        (
            "named_big_first_seq",
            "A manifest of 3 frames from seq 2^56 + 0x0102030405 on the channel named stock-ticker: a 9-byte first_seq varint".into(),
            make(named(), (1 << 56) + 0x01_0203_0405, 3),
        ),
        (
            "ipv4_last_seqs",
            "The last manifest a session can send: frames 2^64-4 and 2^64-3, sealed as seq 2^64-2 (its second copy takes 2^64-1): a 10-byte first_seq varint".into(),
            make(v4(), u64::MAX - 3, 2),
        ),
    ]
}

/// A signed sender's session: SECRET, signer SEED, `sender` from
/// `first_seq`, frames and manifests stamped TIMESTAMP.
fn signed_feed(channel: &[u8], sender: [u8; 16], first_seq: u64) -> SignedSealer {
    signed_feed_by(&SEED, channel, sender, first_seq)
}

/// [`signed_feed`], signed with the key of `seed`.
fn signed_feed_by(
    seed: &[u8; 32],
    channel: &[u8],
    sender: [u8; 16],
    first_seq: u64,
) -> SignedSealer {
    let key = GroupKey::new(GroupSecret::from_bytes(SECRET), None);
    let mut sealer = Sealer::with_sender_id(
        &key,
        &channel_of("feed", channel),
        SenderId(sender),
        first_seq,
    );
    sealer.set_max_datagram(default_max_datagram(channel));
    SignedSealer::new(
        sealer,
        std::sync::Arc::new(SignerKey::from_seed(seed)),
        channel_of("feed", channel),
        64,
        Duration::from_millis(10),
    )
}

/// One batch of "tick SEQ" frames: `[manifest, frames.., manifest]`.
fn signed_batch(feed: &mut SignedSealer, n: usize) -> Vec<Vec<u8>> {
    signed_batch_of(feed, n, "tick")
}

/// [`signed_batch`] of "WORD SEQ" frames.
fn signed_batch_of(feed: &mut SignedSealer, n: usize, word: &str) -> Vec<Vec<u8>> {
    for _ in 0..n {
        let seq = feed.sealer().next_seq().expect("seqs left");
        feed.seal_body(TIMESTAMP, &Body::Data(format!("{word} {seq}").as_bytes()))
            .expect("seal");
    }
    let mut out = Vec::new();
    feed.close_batch(TIMESTAMP, &mut |d| {
        out.push(d.to_vec());
        Ok(())
    })
    .expect("close");
    out
}

/// A manifest frame made by hand, as a key holder could: `seed` signs
/// (`first_seq`, `signed_hashes`) for `sender` on v4; the body claims
/// `claimed` and carries `sent_hashes`; `tamper` may change the signature.
fn crafted_manifest(
    sender: [u8; 16],
    seq: u64,
    seed: &[u8; 32],
    claimed: [u8; 8],
    first_seq: u64,
    hashes: (&[u8], &[u8]),
    tamper: &dyn Fn(&mut [u8; 64]),
) -> Vec<u8> {
    let key = SignerKey::from_seed(seed);
    let (signed_hashes, sent_hashes) = hashes;
    let message = manifest_message(&v4(), SECRET, sender, first_seq, signed_hashes);
    let mut signature = key.sign(&message);
    tamper(&mut signature);
    let body = manifest_body(claimed, first_seq, sent_hashes, signature);
    seal_with(SECRET, &v4(), sender, seq, TIMESTAMP, &body)
}

/// The plaintext of a datagram sealed under SECRET for `channel`.
fn plaintext_of(channel: &[u8], datagram: &[u8]) -> Vec<u8> {
    let key = GroupKey::new(GroupSecret::from_bytes(SECRET), None);
    let mut config = OpenerConfig::default();
    config.max_datagram = usize::MAX;
    let mut opener = Opener::new(Keyring::single(key), channel_of("open", channel), config);
    let mut copy = datagram.to_vec();
    opener
        .open(TIMESTAMP, &mut copy)
        .expect("a genuine frame opens")
        .plaintext
        .to_vec()
}

fn counts(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    for (name, _) in pairs {
        assert!(SIGNED_COUNTERS.contains(name), "{name}");
    }
    SIGNED_COUNTERS
        .iter()
        .map(|c| {
            let n = pairs
                .iter()
                .find(|(name, _)| name == c)
                .map_or(0, |(_, n)| *n);
            ((*c).to_owned(), n)
        })
        .collect()
}

/// The definitions the signed session files are written from.
fn signed_sessions() -> Vec<(&'static str, String, SignedSession)> {
    let t = TIMESTAMP;
    let hold = 2 * SEC;
    let member = [0x3c; 16];
    let base = |steps, counts| SignedSession {
        secret: SECRET,
        channel: v4(),
        trust: vec![trust_of(&SEED)],
        hold_us: hold,
        steps,
        counts,
    };
    let at = |now: u64, f: &[u8], e: Expect| (now, Some(f.to_vec()), e);
    let wait = |now: u64| (now, None, Expect::None);
    let deliver = |seqs: &[u64]| Expect::Deliver(seqs.to_vec());
    let reject = |name: &str| Expect::Reject(name.to_owned());
    use Expect::{Hold, None as Nothing};
    // A member's frame: the group key, no signing key, the signer's
    // sender ID, its own contents.
    let forged = |seq: u64| {
        seal_with(
            SECRET,
            &v4(),
            SENDER,
            seq,
            TIMESTAMP,
            &encode(&Body::Data(b"not from the signer")),
        )
    };

    // Whole feed: two batches, trusted as the second of two signers.
    let mut feed = signed_feed(&v4(), SENDER, 0);
    let a = signed_batch(&mut feed, 3); // frames 0..2, manifests 3 and 4
    let b = signed_batch(&mut feed, 2); // frames 5, 6, manifests 7 and 8
    let mut whole = base(
        vec![
            at(t, &a[0], Nothing),
            at(t, &a[1], deliver(&[0])),
            at(t, &a[2], deliver(&[1])),
            at(t, &a[3], deliver(&[2])),
            at(t, &a[4], reject("manifest_duplicate")),
            at(t + 1, &b[0], Nothing),
            at(t + 1, &b[1], deliver(&[5])),
            at(t + 1, &b[2], deliver(&[6])),
            at(t + 1, &b[3], reject("manifest_duplicate")),
            at(t + 2, &a[2], reject("replayed")),
        ],
        counts(&[("manifests_verified", 2), ("manifest_duplicate", 2)]),
    );
    whole.trust.insert(0, trust_of(&OTHER_SEED));

    // The first copy lost; frames out of order.
    let d = signed_batch(&mut signed_feed(&v4(), SENDER, 0), 4); // manifests 4 and 5
    let lost = base(
        vec![
            at(t, &d[3], Hold),
            at(t, &d[1], Hold),
            at(t, &d[4], Hold),
            at(t, &d[2], Hold),
            at(t + 1000, &d[5], deliver(&[0, 1, 2, 3])),
            at(t + 2000, &d[0], reject("manifest_duplicate")),
        ],
        counts(&[("manifests_verified", 1), ("manifest_duplicate", 1)]),
    );

    // A member's frames under the signer's sender ID, far ahead of the
    // window: held, never delivered, and the window does not move.
    let d = signed_batch(&mut signed_feed(&v4(), SENDER, 0), 3); // manifests 3 and 4
    let ahead = base(
        vec![
            at(t, &forged(5000), Hold),
            at(t, &d[0], Nothing),
            at(t, &d[1], deliver(&[0])),
            at(t, &d[2], deliver(&[1])),
            at(t, &d[3], deliver(&[2])),
            at(t, &forged(5001), Hold),
            at(t, &d[4], reject("manifest_duplicate")),
            wait(t + hold),
            wait(t + hold + 1),
        ],
        counts(&[
            ("manifests_verified", 1),
            ("manifest_duplicate", 1),
            ("sig_expired", 2),
        ]),
    );

    // Behind: a delivered seq is a replay; a lower seq and the manifest's
    // own seq are listed by nothing, so they wait and expire.
    let d = signed_batch(&mut signed_feed(&v4(), SENDER, 100), 3); // manifests 103 and 104
    let behind = base(
        vec![
            at(t, &d[0], Nothing),
            at(t, &d[1], deliver(&[100])),
            at(t, &d[2], deliver(&[101])),
            at(t, &forged(101), reject("replayed")),
            at(t, &forged(50), Hold),
            at(t, &forged(103), Hold),
            at(t, &d[3], deliver(&[102])),
            at(t, &d[4], reject("manifest_duplicate")),
            wait(t + hold + 1),
        ],
        counts(&[
            ("manifests_verified", 1),
            ("manifest_duplicate", 1),
            ("sig_expired", 2),
        ]),
    );

    // The same seqs as genuine frames, with other contents.
    let d = signed_batch(&mut signed_feed(&v4(), SENDER, 0), 4); // manifests 4 and 5
    let same = base(
        vec![
            at(t, &forged(1), Hold),
            at(t, &d[2], Hold),
            at(t, &forged(2), Hold),
            // Released in seq order, arrival order among equal seqs: the
            // forged 1 is counted, the genuine 1 delivered, the forged 2
            // counted.
            at(t, &d[0], deliver(&[1])),
            at(t, &d[1], deliver(&[0])),
            at(t, &forged(3), reject("sig_forged")),
            at(t, &d[4], deliver(&[3])),
            at(t, &d[3], deliver(&[2])),
            at(t, &d[5], reject("manifest_duplicate")),
        ],
        counts(&[
            ("manifests_verified", 1),
            ("manifest_duplicate", 1),
            ("sig_forged", 3),
        ]),
    );

    // The genuine manifest and frames re-sealed by a member under another
    // sender ID.
    let other = [0x77; 16];
    let d = signed_batch(&mut signed_feed(&v4(), SENDER, 0), 2); // manifests 2 and 3
    let reseal = |seq: u64, genuine: &[u8]| {
        seal_with(
            SECRET,
            &v4(),
            other,
            seq,
            TIMESTAMP,
            &plaintext_of(&v4(), genuine),
        )
    };
    let resealed = base(
        vec![
            at(t, &reseal(2, &d[0]), reject("sig_bad")),
            at(t, &reseal(0, &d[1]), Hold),
            at(t, &reseal(1, &d[2]), Hold),
            at(t, &d[0], Nothing),
            at(t, &d[1], deliver(&[0])),
            at(t, &d[2], deliver(&[1])),
            wait(t + hold + 1),
        ],
        counts(&[
            ("manifests_verified", 1),
            ("sig_bad", 1),
            ("sig_unsigned", 2),
        ]),
    );

    // A manifest signed for 239.255.0.1:5000, sealed by a member for the
    // channel named stock-ticker: the AEAD passes there, the signature not.
    let d = signed_batch(&mut signed_feed(&v4(), SENDER, 0), 2);
    let mut channel = base(
        vec![
            at(
                t,
                &seal_with(
                    SECRET,
                    &named(),
                    SENDER,
                    2,
                    TIMESTAMP,
                    &plaintext_of(&v4(), &d[0]),
                ),
                reject("sig_bad"),
            ),
            // Its own frames, sealed for the named channel, are not the
            // ones listed: they wait, unsigned.
            at(t, &tick_frame(&named(), SENDER, 0), Hold),
            // The genuine frame of the v4 channel fails the AEAD here.
            at(t, &d[1], reject("auth_failed")),
            wait(t + hold + 1),
        ],
        counts(&[("sig_bad", 1), ("sig_unsigned", 1)]),
    );
    channel.channel = named();

    // A signer the receiver does not trust.
    let key = GroupKey::new(GroupSecret::from_bytes(SECRET), None);
    let mut untrusted_feed = SignedSealer::new(
        Sealer::with_sender_id(&key, &channel_of("feed", &v4()), SenderId(SENDER), 0),
        std::sync::Arc::new(SignerKey::from_seed(&OTHER_SEED)),
        channel_of("feed", &v4()),
        64,
        Duration::from_millis(10),
    );
    let mut d = Vec::new();
    for seq in 0..2u64 {
        untrusted_feed
            .seal_body(TIMESTAMP, &Body::Data(format!("tick {seq}").as_bytes()))
            .expect("seal");
    }
    untrusted_feed
        .close_batch(TIMESTAMP, &mut |f| {
            d.push(f.to_vec());
            Ok(())
        })
        .expect("close");
    let untrusted = base(
        vec![
            at(t, &d[0], reject("sig_untrusted")),
            at(t, &d[1], Hold),
            at(t, &d[2], Hold),
            at(t, &d[3], reject("sig_untrusted")),
            wait(t + hold + 1),
        ],
        counts(&[("sig_untrusted", 2), ("sig_unsigned", 2)]),
    );

    // Bad signatures: a bit of R, of S, of a hash after signing, and the
    // trusted signer's ID on another key's signature.
    let two: Vec<u8> = (0..32u8).collect();
    let mut flipped = two.clone();
    flipped[20] ^= 0x01;
    let trusted_id = trust_of(&SEED).0;
    let sig = |seq, seed: &[u8; 32], sent: &[u8], tamper: &dyn Fn(&mut [u8; 64])| {
        crafted_manifest(SENDER, seq, seed, trusted_id, 0, (&two, sent), tamper)
    };
    let bad = base(
        vec![
            at(
                t,
                &sig(10, &SEED, &two, &|s| s[0] ^= 0x01),
                reject("sig_bad"),
            ),
            at(
                t,
                &sig(11, &SEED, &two, &|s| s[63] ^= 0x02),
                reject("sig_bad"),
            ),
            at(t, &sig(12, &SEED, &flipped, &|_| {}), reject("sig_bad")),
            at(t, &sig(13, &OTHER_SEED, &two, &|_| {}), reject("sig_bad")),
            // The untampered one verifies.
            at(t, &sig(14, &SEED, &two, &|_| {}), Nothing),
        ],
        counts(&[("manifests_verified", 1), ("sig_bad", 4)]),
    );

    // Invalid manifests, each correctly signed: hash lists that are not
    // whole hashes, none, and a seq range past 2^64 - 1; an untrusted one
    // is refused as untrusted first; a truncated body does not decode.
    let valid = |seq, first_seq, hashes: &[u8]| {
        crafted_manifest(
            SENDER,
            seq,
            &SEED,
            trusted_id,
            first_seq,
            (hashes, hashes),
            &|_| {},
        )
    };
    let mut truncated = plaintext_of(&v4(), &valid(0, 0, &two));
    truncated.pop();
    let invalid = base(
        vec![
            at(t, &valid(20, 0, &two[..15]), reject("sig_invalid")),
            at(t, &valid(21, 0, &two[..17]), reject("sig_invalid")),
            at(t, &valid(22, 0, &[]), reject("sig_invalid")),
            at(t, &valid(23, u64::MAX, &two), reject("sig_invalid")),
            at(
                t,
                &crafted_manifest(
                    SENDER,
                    24,
                    &OTHER_SEED,
                    trust_of(&OTHER_SEED).0,
                    0,
                    (&[], &[]),
                    &|_| {},
                ),
                reject("sig_untrusted"),
            ),
            at(
                t,
                &seal_with(SECRET, &v4(), SENDER, 25, TIMESTAMP, &truncated),
                reject("bad_body"),
            ),
            // The last seq itself is in range; sealed as seq 25, which the
            // body that did not decode left unused.
            at(t, &valid(25, u64::MAX, &two[..16]), Nothing),
        ],
        counts(&[
            ("manifests_verified", 1),
            ("sig_untrusted", 1),
            ("sig_invalid", 4),
        ]),
    );

    // Duplicates: the same datagram (a manifest's seq is never committed),
    // the second copy, the body re-sealed at another seq.
    let d = signed_batch(&mut signed_feed(&v4(), SENDER, 0), 2); // manifests 2 and 3
    let duplicate = base(
        vec![
            at(t, &d[0], Nothing),
            at(t, &d[0], reject("manifest_duplicate")),
            at(t, &d[3], reject("manifest_duplicate")),
            at(
                t,
                &seal_with(
                    SECRET,
                    &v4(),
                    SENDER,
                    9,
                    TIMESTAMP,
                    &plaintext_of(&v4(), &d[0]),
                ),
                reject("manifest_duplicate"),
            ),
            at(t, &d[1], deliver(&[0])),
            at(t, &d[2], deliver(&[1])),
        ],
        counts(&[("manifests_verified", 1), ("manifest_duplicate", 3)]),
    );

    // Expiry, with a hold of 100 ms: exactly the hold old is still held;
    // a microsecond more is not, whether a `-` step or a datagram moves
    // the clock there.
    let ms = 1_000;
    let mut feed = signed_feed(&v4(), SENDER, 0);
    let a = signed_batch(&mut feed, 2); // frames 0, 1, manifests 2 and 3
    let b = signed_batch(&mut feed, 2); // frames 4, 5, manifests 6 and 7
    let mut expiry = base(
        vec![
            at(t, &a[1], Hold),
            at(t, &a[2], Hold),
            wait(t + 100 * ms),
            at(t + 100 * ms, &a[3], deliver(&[0, 1])),
            at(t + 200 * ms, &b[1], Hold),
            at(t + 200 * ms, &b[2], Hold),
            wait(t + 300 * ms + 1),
            at(t + 300 * ms + 1, &b[3], Nothing),
            at(t + 400 * ms, &tick_frame(&v4(), member, 0), Hold),
            at(t + 500 * ms + 1, &tick_frame(&v4(), member, 1), Hold),
            wait(t + 600 * ms + 1),
            wait(t + 600 * ms + 2),
        ],
        counts(&[
            ("manifests_verified", 2),
            ("sig_unsigned", 2),
            ("sig_expired", 2),
        ]),
    );
    expiry.hold_us = 100 * ms;

    // Two trusted signers: the second signs frames into the first's
    // session, at the seqs the first uses next.
    let mut feed = signed_feed(&v4(), SENDER, 0);
    let a = signed_batch(&mut feed, 2); // frames 0, 1, manifests 2 and 3
    let o = signed_batch_of(
        &mut signed_feed_by(&OTHER_SEED, &v4(), SENDER, 4),
        2,
        "other",
    ); // frames 4, 5, manifests 6 and 7
    let b = signed_batch(&mut feed, 2); // frames 4, 5, manifests 6 and 7
    let mut conflict = base(
        vec![
            at(t, &a[0], Nothing),
            at(t, &a[1], deliver(&[0])),
            at(t, &a[2], deliver(&[1])),
            at(t, &a[3], reject("manifest_duplicate")),
            at(t, &o[0], reject("sig_conflict")),
            at(t, &o[1], Hold),
            at(t, &o[2], Hold),
            at(t, &o[3], reject("sig_conflict")),
            at(t, &b[0], Nothing),
            at(t, &b[1], deliver(&[4])),
            at(t, &b[2], deliver(&[5])),
            at(t, &b[3], reject("manifest_duplicate")),
        ],
        counts(&[
            ("manifests_verified", 2),
            ("manifest_duplicate", 2),
            ("sig_conflict", 2),
            ("sig_forged", 2),
        ]),
    );
    conflict.trust.push(trust_of(&OTHER_SEED));

    vec![
        (
            "whole_feed",
            "A signed sender's whole feed, two batches: manifest, frames, second copy; trusted as the second of two signers".into(),
            whole,
        ),
        (
            "lost_first_copy",
            "The first manifest copy lost: frames held out of order, released in seq order by the second copy; the first copy, late, is a duplicate".into(),
            lost,
        ),
        (
            "member_ahead",
            "A member (group key, no signing key) sends under the signer's sender ID at seqs 5000 and 5001, before and after the manifest: held, never delivered, the genuine seqs 0 to 2 still delivered, then expired".into(),
            ahead,
        ),
        (
            "member_behind",
            "A member sends under the signer's sender ID at a delivered seq (replayed), a lower seq and the manifest's own seq (listed by nothing: held, then expired)".into(),
            behind,
        ),
        (
            "member_same_seq",
            "A member sends under the signer's sender ID at the seqs of genuine frames, before the manifest (held, then sig_forged on release) and after it (sig_forged at once); the genuine frames are delivered".into(),
            same,
        ),
        (
            "resealed_sender",
            "The genuine manifest and frames re-sealed by a member under another sender ID: the signature covers the sender ID, so sig_bad, and the frames wait unsigned".into(),
            resealed,
        ),
        (
            "resealed_channel",
            "A receiver of the channel named stock-ticker: a manifest signed for 239.255.0.1:5000 re-sealed by a member for stock-ticker is sig_bad; the genuine v4 frame fails the AEAD".into(),
            channel,
        ),
        (
            "untrusted",
            "A correctly signed feed by a signer the receiver does not trust: both copies sig_untrusted, the frames wait unsigned".into(),
            untrusted,
        ),
        (
            "bad_signature",
            "Manifests claiming the trusted signer: a bit of R flipped, a bit of S, a bit of a hash after signing, another key's signature: sig_bad; the untampered one verifies".into(),
            bad,
        ),
        (
            "invalid",
            "Correctly signed manifests with 15, 17 and 0 bytes of hashes and a seq range past 2^64-1 are sig_invalid; an untrusted invalid one is sig_untrusted; a truncated body is bad_body and leaves its seq unused; first_seq 2^64-1 with one hash verifies".into(),
            invalid,
        ),
        (
            "duplicate",
            "A manifest verified once: the same datagram again, its second copy and its body re-sealed at another seq are duplicates, not verified again".into(),
            duplicate,
        ),
        (
            "expiry",
            "A hold of 100 ms: a frame exactly 100 ms old is still held, one a microsecond older is dropped (sig_expired once its sender has a verified manifest, else sig_unsigned), by a `-` step or before a datagram is judged".into(),
            expiry,
        ),
        (
            "conflict",
            "Two trusted signers: the second signs frames into the first's sender session at its next seqs: sig_conflict (the session belongs to the first signer whose manifest verified), the frames held until the first signer's manifest for those seqs shows them sig_forged; the genuine frames are delivered".into(),
            conflict,
        ),
    ]
}

fn write_signed_vectors() {
    fs::create_dir_all(manifest_dir()).expect("mkdir");
    for (name, comment, v) in manifest_definitions() {
        let text = format!(
            "comment: {comment}\nsecret: {}\nchannel: {}\nseed: {}\nsender_id: {}\nseq: {}\ntimestamp: {}\nfirst_seq: {}\nhashes: {}\nbody: {}\nframe: {}\n",
            hex::encode(v.secret),
            hex::encode(&v.channel),
            hex::encode(v.seed),
            hex::encode(v.sender_id),
            v.seq,
            v.timestamp,
            v.first_seq,
            hex::encode(&v.hashes),
            hex::encode(&v.body),
            hex::encode(&v.frame),
        );
        fs::write(manifest_dir().join(format!("{name}.txt")), text).expect("write");
    }
    fs::create_dir_all(signed_dir()).expect("mkdir");
    for (name, comment, s) in signed_sessions() {
        let mut text = format!(
            "comment: {comment}\nsecret: {}\nchannel: {}\n",
            hex::encode(s.secret),
            hex::encode(&s.channel)
        );
        for (id, public) in &s.trust {
            text.push_str(&format!(
                "trust: {} {}\n",
                hex::encode(id),
                hex::encode(public)
            ));
        }
        text.push_str(&format!("hold_us: {}\n", s.hold_us));
        for (now, frame, expect) in &s.steps {
            let frame = frame.as_ref().map_or_else(|| "-".to_owned(), hex::encode);
            text.push_str(&format!("step: {now} {frame} {expect}\n"));
        }
        let counts: Vec<String> = s.counts.iter().map(|(c, n)| format!("{c}={n}")).collect();
        text.push_str(&format!("counts: {}\n", counts.join(" ")));
        fs::write(signed_dir().join(format!("{name}.txt")), text).expect("write");
    }
}

#[test]
fn signed_files_match_their_definitions() {
    for (name, _, v) in manifest_definitions() {
        let path = manifest_dir().join(format!("{name}.txt"));
        let text =
            fs::read_to_string(&path).unwrap_or_else(|_| panic!("manifests/{name}.txt missing"));
        let file = parse_manifest(name, &text);
        assert_eq!(file.channel, v.channel, "{name}");
        assert_eq!(file.hashes, v.hashes, "{name}");
        assert_eq!(file.body, v.body, "{name}");
        assert_eq!(file.frame, v.frame, "{name}");
    }
    for (name, _, s) in signed_sessions() {
        let path = signed_dir().join(format!("{name}.txt"));
        let text =
            fs::read_to_string(&path).unwrap_or_else(|_| panic!("signed/{name}.txt missing"));
        assert_eq!(parse_signed(name, &text), s, "{name}");
    }
}
