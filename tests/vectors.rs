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
//! `MCSEC_WRITE_VECTORS=1 cargo test --test vectors -- --ignored` rewrites
//! both from the definitions at the bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcsec::frame::{MAX_DATAGRAM_V4, MAX_DATAGRAM_V6, OVERHEAD};
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
    assert_eq!(ok_variants, BTreeSet::from([0, 1, 2, 3]));
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
            "An authentic frame whose body is variant 5, which this version does not know".into(),
            bad_body(vec![0x05, 0x00], Reject::UnknownBody),
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
