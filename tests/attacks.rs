//! The attack suite against the sans-IO core: every mutation of a valid
//! frame, replays across restarts, and a flood of forgeries beside a valid
//! feed. Each test counts what it tried and what got through, and prints
//! the figures SECURITY.md quotes (`cargo test --test attacks -- --nocapture`).

mod alone;

use std::collections::HashSet;

use mcsec::frame::{HEADER_LEN, MAX_DATAGRAM_V4, OVERHEAD};
use mcsec::{Body, GroupKey, GroupSecret, Keyring, Opener, OpenerConfig, Reject, Sealer};

const NOW: u64 = 1_790_000_000_000_000;
const SEC: u64 = 1_000_000;

/// The channel every frame here is sealed for and opened on.
fn ch() -> mcsec::ChannelId {
    mcsec::ChannelId::group("239.255.0.1:5000".parse().unwrap())
}

fn key(byte: u8) -> GroupKey {
    GroupKey::new(GroupSecret::from_bytes([byte; 32]), None)
}

fn opener(key: &GroupKey) -> Opener {
    Opener::new(Keyring::single(key.clone()), ch(), OpenerConfig::default())
}

fn seal(s: &mut Sealer, now: u64, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM_V4];
    let n = s
        .seal_body(now, &Body::Data(payload), &mut buf)
        .expect("seal");
    buf.truncate(n);
    buf
}

fn try_open(o: &mut Opener, now: u64, frame: &[u8]) -> Result<Vec<u8>, Reject> {
    let mut copy = frame.to_vec();
    o.open(now, &mut copy)
        .map(|opened| opened.plaintext.to_vec())
}

#[test]
fn every_bit_flip_and_truncation_is_rejected_and_counted() {
    let k = key(1);
    let mut s = Sealer::new(&k, &ch()).expect("rng");
    let frame = seal(&mut s, NOW, b"a ticker line: ACME 101.25");
    let mut o = opener(&k);
    let mut tried = 0u64;
    for bit in 0..frame.len() * 8 {
        let mut f = frame.clone();
        f[bit / 8] ^= 1 << (bit % 8);
        assert!(try_open(&mut o, NOW, &f).is_err(), "bit {bit} accepted");
        tried += 1;
    }
    for len in 0..frame.len() {
        assert!(
            try_open(&mut o, NOW, &frame[..len]).is_err(),
            "length {len} accepted"
        );
        tried += 1;
    }
    let stats = *o.stats();
    assert_eq!(stats.opened, 0);
    assert_eq!(stats.total_rejected(), tried, "every mutation counted once");
    assert_eq!(o.sender_count(), 0);
    // Flips in the magic are malformed, in the key ID unknown, in the
    // timestamp's high bytes stale; everything else fails the tag.
    assert_eq!(stats.malformed, 32 + 56, "{stats:?}");
    assert_eq!(stats.unknown_key, 32, "{stats:?}");
    assert!(
        stats.stale > 0 && stats.auth_failed > frame.len() as u64 * 6,
        "{stats:?}"
    );
    eprintln!(
        "mutations: {tried} tried, 0 accepted ({} auth_failed, {} malformed, {} unknown_key, {} stale)",
        stats.auth_failed, stats.malformed, stats.unknown_key, stats.stale
    );
    // The genuine frame still opens: no mutation used up its seq.
    assert!(try_open(&mut o, NOW, &frame).is_ok());
}

#[test]
fn header_fields_swapped_between_senders_are_rejected() {
    let k = key(2);
    let mut a = Sealer::new(&k, &ch()).expect("rng");
    let mut b = Sealer::new(&k, &ch()).expect("rng");
    let fa = seal(&mut a, NOW, b"from a");
    // b's second frame, so that every field but the key ID differs.
    let _ = seal(&mut b, NOW, b"unused");
    let fb = seal(&mut b, NOW + 7, b"from b");
    let mut o = opener(&k);
    // Field ranges: key ID, sender ID, seq, timestamp, and the whole header.
    let fields = [(4..8), (8..24), (24..32), (32..40), (0..HEADER_LEN)];
    let mut tried = 0;
    for range in fields {
        for (x, y) in [(&fa, &fb), (&fb, &fa)] {
            let mut f = x.clone();
            f[range.clone()].copy_from_slice(&y[range.clone()]);
            if f == *x {
                continue;
            }
            assert!(try_open(&mut o, NOW, &f).is_err(), "swap {range:?}");
            tried += 1;
        }
    }
    // Ciphertext and tag swapped under the other's header.
    let mut f = fa[..HEADER_LEN].to_vec();
    f.extend_from_slice(&fb[HEADER_LEN..]);
    assert!(try_open(&mut o, NOW, &f).is_err());
    tried += 1;
    assert_eq!(o.stats().total_rejected(), tried);
    assert_eq!(tried, 9, "key ID is shared; every other swap is distinct");
    assert_eq!(o.sender_count(), 0);
    eprintln!("swaps: {tried} header-field swaps between two senders, 0 accepted");
    assert!(try_open(&mut o, NOW, &fa).is_ok() && try_open(&mut o, NOW, &fb).is_ok());
}

/// A captured session replayed at once, after the window slid, after a
/// receiver restart (within the skew, with strict start, past the skew).
#[test]
fn replays_of_a_captured_session() {
    let k = key(3);
    let mut s = Sealer::new(&k, &ch()).expect("rng");
    let captured: Vec<Vec<u8>> = (0..50).map(|i| seal(&mut s, NOW + i, b"tick")).collect();

    // At once, to the receiver that saw them.
    let mut o = opener(&k);
    for f in &captured {
        assert!(try_open(&mut o, NOW, f).is_ok());
    }
    let mut accepted = 0;
    for f in &captured {
        accepted += u32::from(try_open(&mut o, NOW, f).is_ok());
    }
    assert_eq!(accepted, 0);
    assert_eq!(o.stats().replayed, 50);

    // After the window slid past them.
    for i in 0..3000 {
        assert!(try_open(&mut o, NOW, &seal(&mut s, NOW + 100 + i, b"more")).is_ok());
    }
    for f in &captured {
        assert_eq!(try_open(&mut o, NOW, f), Err(Reject::Replayed));
    }

    // After a restart, within the skew: the new receiver has no window, so
    // each captured frame is accepted once. This is the bound SECURITY.md
    // states: frames from the last `skew` seconds, once each.
    let mut restarted = opener(&k);
    let mut once = 0;
    for _ in 0..3 {
        for f in &captured {
            once += u32::from(try_open(&mut restarted, NOW + 10 * SEC, f).is_ok());
        }
    }
    assert_eq!(once, 50, "accepted once each, never twice");

    // With strict start, none.
    let mut strict = Opener::new(Keyring::single(k.clone()), ch(), {
        let mut c = OpenerConfig::default();
        c.not_before_us = Some(NOW + SEC);
        c
    });
    for f in &captured {
        assert_eq!(try_open(&mut strict, NOW + 10 * SEC, f), Err(Reject::Stale));
    }
    // Past the skew, none, strict or not.
    let mut late = opener(&k);
    for f in &captured {
        assert_eq!(try_open(&mut late, NOW + 31 * SEC, f), Err(Reject::Stale));
    }
    eprintln!(
        "replays: 100 tried at once or after the window slid: 0 accepted; after restart within skew: 50 of 150 (once each); strict start: 0 of 50; past skew: 0 of 50"
    );
}

#[test]
fn seq_max_from_a_key_holder_then_normal_traffic() {
    let k = key(4);
    let mut o = opener(&k);
    let mut honest = Sealer::new(&k, &ch()).expect("rng");
    let mut evil = Sealer::new(&k, &ch()).expect("rng");
    // The insider impersonates nobody here, just uses the top of its space.
    let mut top = Sealer::with_sender_id(&k, &ch(), evil.sender_id(), u64::MAX);
    assert!(try_open(&mut o, NOW, &seal(&mut evil, NOW, b"0")).is_ok());
    let top_frame = seal(&mut top, NOW, b"top");
    assert!(try_open(&mut o, NOW, &top_frame).is_ok());
    assert_eq!(try_open(&mut o, NOW, &top_frame), Err(Reject::Replayed));
    // Its own earlier seqs are now far behind the window: refused.
    assert_eq!(
        try_open(&mut o, NOW, &seal(&mut evil, NOW, b"1")),
        Err(Reject::Replayed)
    );
    // Everyone else is untouched.
    for i in 0..100 {
        assert!(try_open(&mut o, NOW, &seal(&mut honest, NOW + i, b"ok")).is_ok());
    }
}

/// Set in the child process that runs the flood alone.
const ALONE: &str = "MCSEC_ATTACKS_FLOOD_ALONE";

/// A million forged datagrams with random sender IDs and a valid key ID,
/// with a valid feed interleaved: the feed is delivered whole, the forgeries
/// create no state, and memory stays flat.
///
/// Peak memory is per process, and the other tests in this binary run in
/// parallel threads: the flood runs alone in a child process (this test
/// binary, this test only), which measures its own peak before and after.
#[test]
fn a_million_forgeries_beside_a_valid_feed() {
    const NAME: &str = "a_million_forgeries_beside_a_valid_feed";
    if !alone::alone(NAME, ALONE) {
        return;
    }
    const FORGED: u64 = 1_000_000;
    const EVERY: u64 = 1000;
    let k = key(5);
    let mut o = opener(&k);
    let mut feed = Sealer::new(&k, &ch()).expect("rng");
    let template = seal(&mut Sealer::new(&k, &ch()).expect("rng"), NOW, &[0u8; 100]);
    let before = alone::status_kib("VmHWM:");
    let mut delivered = Vec::new();
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut forged = template.clone();
    let mut buf = vec![0u8; MAX_DATAGRAM_V4];
    for i in 0..FORGED {
        // xorshift: a fresh sender ID and tag for every forgery.
        let tag_at = template.len() - 16;
        for at in [8, 16, tag_at, tag_at + 8] {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            forged[at..at + 8].copy_from_slice(&rng_state.to_be_bytes());
        }
        buf[..forged.len()].copy_from_slice(&forged);
        assert!(o.open(NOW, &mut buf[..forged.len()]).is_err());
        if i % EVERY == 0 {
            let mut frame = seal(&mut feed, NOW, &i.to_be_bytes());
            let (_, body) = o.open_body(NOW, &mut frame).expect("valid feed frame");
            let Body::Data(payload) = body else {
                panic!("not data")
            };
            delivered.push(u64::from_be_bytes(payload.try_into().expect("8 bytes")));
        }
    }
    let after = alone::status_kib("VmHWM:");
    let expected: Vec<u64> = (0..FORGED).step_by(EVERY as usize).collect();
    assert_eq!(
        delivered, expected,
        "the valid feed arrives whole and in order"
    );
    assert_eq!(o.stats().auth_failed, FORGED);
    assert_eq!(o.sender_count(), 1, "only the real sender has state");
    let unique: HashSet<_> = delivered.iter().collect();
    assert_eq!(unique.len(), delivered.len());
    let (Some(before), Some(after)) = (before, after) else {
        if cfg!(target_os = "linux") {
            panic!("no VmHWM in /proc/self/status");
        }
        return;
    };
    {
        let grown = after.saturating_sub(before);
        eprintln!(
            "flood: {FORGED} forged, 0 accepted, 0 sender states; feed {} of {} delivered; peak RSS {before} KiB -> {after} KiB (+{grown} KiB)",
            delivered.len(),
            expected.len()
        );
        assert!(grown < 4 * 1024, "peak memory grew by {grown} KiB");
    }
}

#[test]
fn junk_datagrams_of_every_kind_are_counted() {
    let k = key(6);
    let mut o = opener(&k);
    let mut cases: Vec<(Vec<u8>, Reject)> = vec![
        (Vec::new(), Reject::Malformed),
        (vec![0u8; 1], Reject::Malformed),
        (vec![0u8; OVERHEAD - 1], Reject::Malformed),
        (vec![0xffu8; MAX_DATAGRAM_V4 + 1], Reject::Oversize),
        (vec![0u8; 65_507], Reject::Oversize),
        // Another protocol on the same port: a DNS query and an SSDP line.
        (
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01".to_vec(),
            Reject::Malformed,
        ),
        (
            b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n\r\n".to_vec(),
            Reject::Malformed,
        ),
    ];
    // The right magic and a known key ID but garbage after it.
    let mut fake = b"mcs\x02".to_vec();
    fake.extend_from_slice(&k.id().to_be_bytes());
    fake.resize(200, 0xaa);
    fake[32..40].copy_from_slice(&NOW.to_be_bytes());
    cases.push((fake, Reject::AuthFailed));
    for (datagram, reason) in &cases {
        assert_eq!(
            try_open(&mut o, NOW, datagram),
            Err(*reason),
            "{} bytes",
            datagram.len()
        );
    }
    assert_eq!(o.stats().total_rejected(), cases.len() as u64);
    assert_eq!(o.sender_count(), 0);
}
