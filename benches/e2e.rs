//! One datagram through the real path over loopback multicast, against the
//! same path with no crypto, measured in the same run.
//!
//! Each iteration runs on one thread. `plain` sends the payload with
//! `net::Sender::send` to 239.255.77.2:47002 (interface 127.0.0.1, TTL 1)
//! and takes it back with `net::Receiver::recv` on a receiver joined to the
//! group on 127.0.0.1. `mcsec` does the same with `Sealer::seal_in_place`
//! into one reused buffer before the send and `Opener::open` in place after
//! the recv, each with a fresh `mcsec::now_us()`. Both use the same two
//! sockets, at 64, 512 and 1400 bytes of payload.
//!
//! Linux delivers loopback multicast inside the sender's `sendto`, so the
//! datagram is already queued when `recv` runs and nothing sleeps (checked:
//! 100,000 of 100,000 were). The difference `mcsec - plain` is the time
//! security adds to one datagram on the real path: the one-way latency it
//! adds when nothing queues. It includes the 56 bytes of overhead crossing
//! the kernel twice. It excludes wake-up and scheduling latency, which a
//! receiver blocked in another thread pays; `mcsec bench --latency`
//! measures that. Read the difference, not the absolute times.
//!
//! Sending is pinned to 127.0.0.1 with TTL 1; run it in a network namespace
//! with only `lo`, as CI does:
//!
//! ```sh
//! cargo bench --no-run
//! unshare -n sh -c 'ip link set lo up; ip route add 224.0.0.0/4 dev lo src 127.0.0.1
//!   CARGO_NET_OFFLINE=true cargo bench --bench e2e'
//! ```
//!
//! A datagram that does not arrive within `RECV_TIMEOUT`, or arrives with
//! the wrong length, or does not open, stops the bench: a bench that
//! silently measures nothing is worse than none.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mcsec::frame::{HEADER_LEN, OVERHEAD};
use mcsec::net::{Group, InterfaceSpec, NetError, Options, Receiver, Sender};
use mcsec::{GroupKey, GroupSecret, Keyring, Opener, OpenerConfig, Sealer};

const SIZES: [usize; 3] = [64, 512, 1400];
/// No test uses this group and port.
const GROUP: &str = "239.255.77.2:47002";
/// Long enough never to fire when delivery works; short enough that a lost
/// datagram fails the run instead of hanging it.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// Prints `error:` and `hint:` lines and exits: the sockets are the
/// bench's precondition, and CI runs it where they must open.
fn fail(what: &str, e: &NetError) -> ! {
    eprintln!("error: e2e bench: {what} ({GROUP} on 127.0.0.1): {e}");
    if let Some(hint) = e.hint() {
        eprintln!("hint: {hint}");
    }
    eprintln!(
        "hint: run it in a namespace with only lo: unshare -n sh -c 'ip link set lo up; \
         ip route add 224.0.0.0/4 dev lo src 127.0.0.1; cargo bench --bench e2e'"
    );
    std::process::exit(1)
}

fn open_path() -> (Group, Sender, Receiver) {
    let group: Group = GROUP
        .parse()
        .unwrap_or_else(|e| fail("parsing the group", &e));
    let mut opts = Options::default();
    opts.interface = Some(InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    opts.ttl = 1;
    let receiver =
        Receiver::open(group, &opts).unwrap_or_else(|e| fail("opening the receiver", &e));
    receiver
        .set_timeout(Some(RECV_TIMEOUT))
        .unwrap_or_else(|e| fail("setting the receive timeout", &e));
    let sender = Sender::open(group, &opts).unwrap_or_else(|e| fail("opening the sender", &e));
    (group, sender, receiver)
}

fn send(sender: &Sender, datagram: &[u8]) {
    sender
        .send(datagram)
        .unwrap_or_else(|e| fail("sending", &e));
}

/// Receives one datagram into `buf` and checks it is `sent` bytes long.
fn recv(receiver: &Receiver, buf: &mut [u8], sent: usize) -> usize {
    match receiver.recv(buf) {
        Ok(Some((len, _))) => {
            assert_eq!(len, sent, "e2e bench: sent {sent} bytes, received {len}");
            len
        }
        Ok(None) => {
            panic!("e2e bench: a {sent}-byte datagram did not arrive within {RECV_TIMEOUT:?}")
        }
        Err(e) => fail("receiving", &e),
    }
}

fn bench_e2e(c: &mut Criterion) {
    let (group, sender, receiver) = open_path();
    // One byte more than the largest datagram, so an oversize one shows.
    let mut buf = vec![0u8; group.default_max_datagram() + 1];

    let key = GroupKey::new(GroupSecret::from_bytes([9; 32]), None);
    let channel = mcsec::ChannelId::group(group.addr());
    let mut sealer = Sealer::new(&key, &channel).expect("rng");
    let mut opener = Opener::new(Keyring::single(key), channel, OpenerConfig::default());

    for size in SIZES {
        let mut bench = c.benchmark_group(format!("e2e/{size}"));
        bench.throughput(Throughput::Elements(1));

        let payload = vec![0x5a; size];
        bench.bench_function("plain", |b| {
            b.iter(|| {
                send(&sender, black_box(&payload));
                black_box(recv(&receiver, &mut buf, size))
            })
        });

        let mut frame = vec![0u8; size + OVERHEAD];
        frame[HEADER_LEN..HEADER_LEN + size].copy_from_slice(&payload);
        bench.bench_function("mcsec", |b| {
            b.iter(|| {
                let len = sealer
                    .seal_in_place(mcsec::now_us(), &mut frame, size)
                    .expect("e2e bench: seal");
                send(&sender, &frame[..len]);
                let got = recv(&receiver, &mut buf, len);
                let opened = opener
                    .open(mcsec::now_us(), &mut buf[..got])
                    .expect("e2e bench: a frame this process sealed did not open");
                assert_eq!(opened.plaintext.len(), size);
                black_box(opened.plaintext.len())
            })
        });
        bench.finish();
    }
}

criterion_group!(benches, bench_e2e);
criterion_main!(benches);
