//! Fault injection: a seeded in-process relay between `mcsec send` and
//! `mcsec recv` that drops, duplicates, delays (so reorders) and corrupts
//! datagrams. The receiver must deliver every intact message exactly once,
//! never deliver a corrupted one, and its counters must account for every
//! datagram the relay forwarded.
//!
//! Network safety: the relay receives on one loopback group and forwards
//! to another, both pinned to 127.0.0.1 with TTL 1; sender and receiver get
//! `-i 127.0.0.1`.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::{Duration, Instant};

use common::{keyfile, recv, rejected, spawn, terminate};
use mcsec::frame::peek_header;
use mcsec::net::{self, InterfaceSpec};

const MESSAGES: u64 = 300;

#[derive(Clone, Copy, Debug)]
struct Faults {
    drop: f64,
    corrupt: f64,
    duplicate: f64,
    delay: f64,
    seed: u64,
}

#[derive(Debug, Default)]
struct Tally {
    received: u64,
    dropped: BTreeSet<u64>,
    corrupted: BTreeSet<u64>,
    duplicated: u64,
    delayed: u64,
    /// Datagrams forwarded after one with a higher seq.
    reordered: u64,
    forwarded: u64,
}

/// xorshift64*: small, seeded, good enough to pick faults.
struct Rng(u64);

impl Rng {
    /// splitmix64 of the seed, so small seeds still start well mixed.
    fn seeded(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn loopback_opts() -> net::Options {
    let mut opts = net::Options::default();
    opts.interface = Some(InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    opts.ttl = 1;
    opts
}

/// Relays `expect` datagrams from group `from` to group `to`, applying
/// `faults`, then returns what it did.
fn relay(from: &str, to: &str, faults: Faults, expect: u64) -> thread::JoinHandle<Tally> {
    let rx = net::Receiver::open(from.parse().unwrap(), &loopback_opts()).unwrap();
    let tx = net::Sender::open(to.parse().unwrap(), &loopback_opts()).unwrap();
    thread::spawn(move || {
        rx.set_timeout(Some(Duration::from_millis(2))).unwrap();
        let mut rng = Rng::seeded(faults.seed);
        let mut tally = Tally::default();
        let mut held: VecDeque<(Instant, u64, Vec<u8>)> = VecDeque::new();
        // The highest seq forwarded so far, to count what went out of order.
        let mut highest = None;
        let mut forward = |seq: u64, copy: &[u8], tally: &mut Tally| {
            tx.send(copy).unwrap();
            tally.forwarded += 1;
            if highest.is_some_and(|h| seq < h) {
                tally.reordered += 1;
            }
            highest = highest.max(Some(seq));
        };
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + Duration::from_secs(20);
        while (tally.received < expect || !held.is_empty()) && Instant::now() < deadline {
            if let Ok(Some((n, _))) = rx.recv(&mut buf) {
                tally.received += 1;
                let datagram = buf[..n].to_vec();
                let seq = peek_header(&datagram).map(|h| h.seq).unwrap_or(u64::MAX);
                let mut copies = Vec::new();
                if rng.chance(faults.drop) {
                    tally.dropped.insert(seq);
                } else if rng.chance(faults.corrupt) {
                    let mut bad = datagram;
                    let bit = rng.below(bad.len() as u64 * 8) as usize;
                    bad[bit / 8] ^= 1 << (bit % 8);
                    tally.corrupted.insert(seq);
                    copies.push(bad);
                } else if rng.chance(faults.duplicate) {
                    tally.duplicated += 1;
                    copies.push(datagram.clone());
                    copies.push(datagram);
                } else {
                    copies.push(datagram);
                }
                for copy in copies {
                    if rng.chance(faults.delay) {
                        tally.delayed += 1;
                        let wait = Duration::from_micros(1000 + rng.below(30_000));
                        held.push_back((Instant::now() + wait, seq, copy));
                    } else {
                        forward(seq, &copy, &mut tally);
                    }
                }
            }
            // Release what is due, in whatever order it falls due.
            let now = Instant::now();
            let mut i = 0;
            while i < held.len() {
                if held[i].0 <= now {
                    if let Some((_, seq, copy)) = held.remove(i) {
                        forward(seq, &copy, &mut tally);
                    }
                } else {
                    i += 1;
                }
            }
        }
        tally
    })
}

fn run(name: &str, port: u16, faults: Faults) {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let upstream = format!("239.255.93.1:{port}");
    let downstream = format!("239.255.93.2:{port}");
    // The relay forwards between two groups: both ends name the channel,
    // or every frame would fail as sealed for another channel.
    let receiver = recv(
        &downstream,
        &key,
        &["--format", "json", "--channel", "faults"],
    );
    let relay = relay(&upstream, &downstream, faults, MESSAGES);

    let mut sender = spawn(
        &[
            "send",
            "-g",
            &upstream,
            "-i",
            "127.0.0.1",
            "--pps",
            "3000",
            "--channel",
            "faults",
        ],
        &key,
    );
    let mut input = String::new();
    for i in 0..MESSAGES {
        input.push_str(&format!("message {i:04}\n"));
    }
    sender
        .stdin
        .as_mut()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let (status, _, err) = sender.finish();
    assert!(status.success(), "{err:?}");

    let tally = relay.join().unwrap();
    assert_eq!(
        tally.received, MESSAGES,
        "the kernel lost datagrams before the relay"
    );
    // Each fault this run asks for happened: a relay that forwards
    // everything untouched must not pass.
    let did = |p: f64, n: u64| p == 0.0 || n > 0;
    assert!(
        did(faults.drop, tally.dropped.len() as u64),
        "{name}: {tally:?}"
    );
    assert!(
        did(faults.corrupt, tally.corrupted.len() as u64),
        "{name}: {tally:?}"
    );
    assert!(did(faults.duplicate, tally.duplicated), "{name}: {tally:?}");
    assert!(did(faults.delay, tally.delayed), "{name}: {tally:?}");
    assert!(did(faults.delay, tally.reordered), "{name}: {tally:?}");
    let (out, stats, _) = terminate(receiver);
    let values: Vec<serde_json::Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let delivered: Vec<String> = values
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["payload"].as_str().unwrap().to_owned())
        .collect();

    // Exactly once, exactly as sent, and only the messages that arrived intact.
    let expected: Vec<String> = (0..MESSAGES)
        .filter(|seq| !tally.dropped.contains(seq) && !tally.corrupted.contains(seq))
        .map(|i| format!("message {i:04}"))
        .collect();
    let mut sorted = delivered.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "{name}: delivered set");
    assert_eq!(stats["delivered"], expected.len() as u64);
    // What the relay reordered reached the receiver out of order.
    let out_of_order = delivered.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(did(faults.delay, out_of_order as u64), "{name}: in order");

    // Every forwarded datagram is accounted for: delivered or rejected.
    let rejected = rejected(&stats);
    let lost = tally.dropped.len() as u64;
    assert_eq!(
        tally.forwarded,
        expected.len() as u64 + rejected,
        "{name}: {stats}"
    );
    assert_eq!(
        rejected,
        tally.duplicated + tally.corrupted.len() as u64,
        "{name}: {stats}"
    );
    assert_eq!(
        MESSAGES,
        expected.len() as u64 + lost + tally.corrupted.len() as u64
    );
    eprintln!(
        "faults {name}: sent {MESSAGES}, dropped {lost}, corrupted {}, duplicated {}, delayed {}, reordered {}; delivered {} (each once, {out_of_order} out of order), rejected {rejected} (replayed {}, auth_failed {}, other {}); lost or duplicated deliveries: 0",
        tally.corrupted.len(),
        tally.duplicated,
        tally.delayed,
        tally.reordered,
        delivered.len(),
        stats["replayed"],
        stats["auth_failed"],
        rejected - stats["replayed"].as_u64().unwrap() - stats["auth_failed"].as_u64().unwrap(),
    );
}

#[test]
fn duplication_and_reordering_deliver_everything_exactly_once() {
    run(
        "dup+reorder",
        46301,
        Faults {
            drop: 0.0,
            corrupt: 0.0,
            duplicate: 0.3,
            delay: 0.3,
            seed: 1,
        },
    );
}

#[test]
fn loss_is_accounted_for() {
    run(
        "loss",
        46302,
        Faults {
            drop: 0.15,
            corrupt: 0.0,
            duplicate: 0.0,
            delay: 0.0,
            seed: 2,
        },
    );
}

#[test]
fn corrupted_frames_are_never_delivered() {
    run(
        "corrupt",
        46303,
        Faults {
            drop: 0.0,
            corrupt: 0.2,
            duplicate: 0.0,
            delay: 0.0,
            seed: 3,
        },
    );
}

#[test]
fn every_fault_at_once() {
    run(
        "mixed",
        46304,
        Faults {
            drop: 0.1,
            corrupt: 0.1,
            duplicate: 0.2,
            delay: 0.3,
            seed: 4,
        },
    );
}
