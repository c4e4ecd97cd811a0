//! The relay's fan-out: one run of datagrams to N subscribers, three ways,
//! measured in the same run.
//!
//! - `gso`: `net::Fanout` in its default mode, one `sendmmsg` a run, one
//!   message a subscriber cut by UDP GSO (the kernel segments it);
//! - `mmsg`: one `sendmmsg` a run, one message a datagram and subscriber;
//! - `sendto`: one `sendto` a copy, the baseline.
//!
//! A run is 16 datagrams of 1400 bytes (what the relay reads in one go
//! under load); subscribers are 1, 10 and 50 unicast sockets on 127.0.0.1.
//! Only the sends are timed (criterion's `iter_custom`): after each run
//! every subscriber's socket is drained, untimed, and must hold exactly its
//! 16 datagrams of 1400 bytes, or the bench stops. So no queue overflows,
//! loopback delivery (done inside the sender's syscall) is in the time, and
//! a mode that loses copies cannot look fast. Throughput is in copies.
//!
//! Everything is bound to 127.0.0.1 and sent unicast to 127.0.0.1: nothing
//! can leave the host, namespace or not. CI runs it with --quick.

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mcsec::net::{Fanout, FanoutMode};

const SEGMENT: usize = 1400;
const RUN: usize = 16;
const SUBSCRIBERS: [usize; 3] = [1, 10, 50];

fn subscribers(n: usize) -> (Vec<UdpSocket>, Vec<(SocketAddr, usize)>) {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1");
            s.set_read_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            s
        })
        .collect();
    let dests = socks
        .iter()
        .map(|s| (s.local_addr().expect("address"), RUN))
        .collect();
    (socks, dests)
}

/// Takes each subscriber's run back, checking it is whole.
fn drain(socks: &[UdpSocket], buf: &mut [u8]) {
    for (i, s) in socks.iter().enumerate() {
        for j in 0..RUN {
            match s.recv(buf) {
                Ok(SEGMENT) => {}
                Ok(n) => panic!("subscriber {i}: datagram {j} is {n} bytes, not {SEGMENT}"),
                Err(e) => panic!("subscriber {i}: datagram {j} missing: {e}"),
            }
        }
    }
}

fn fanout(c: &mut Criterion) {
    let run: Vec<u8> = (0..RUN * SEGMENT).map(|i| i as u8).collect();
    let mut buf = vec![0u8; 65_536];
    for n in SUBSCRIBERS {
        let (socks, dests) = subscribers(n);
        let mut group = c.benchmark_group(format!("fanout/{n}"));
        group.throughput(Throughput::Elements((n * RUN) as u64));
        for (name, mode) in [
            ("gso", FanoutMode::Gso),
            ("mmsg", FanoutMode::Mmsg),
            ("sendto", FanoutMode::Sendto),
        ] {
            let mut fan = Fanout::new(UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1"));
            fan.set_mode(mode);
            if fan.mode() != mode {
                eprintln!(
                    "fanout/{n}/{name}: the kernel has no GSO here; measured as {:?}",
                    fan.mode()
                );
            }
            let mut sent = Vec::new();
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let err = fan.send(black_box(&run), SEGMENT, &dests, &mut sent);
                        total += start.elapsed();
                        assert!(err.is_none(), "{err:?}");
                        assert!(sent.iter().all(|s| *s == RUN), "{sent:?}");
                        drain(&socks, &mut buf);
                    }
                    total
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
