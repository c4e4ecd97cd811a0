//! A receiver loop over real multicast sockets: join a group, open each
//! datagram, print what authenticates and count what does not. A sender
//! thread in the same process feeds it.
//!
//! Network safety: the sockets are pinned to 127.0.0.1 with TTL 1 and the
//! group is in 239.255.0.0/16; still, run it in a network namespace of its
//! own, as the tests do:
//!
//! ```sh
//! cargo build --example receiver_loop
//! sudo unshare --net -- sh -c 'ip link set lo up;
//!   ip route add 224.0.0.0/4 dev lo src 127.0.0.1;
//!   target/debug/examples/receiver_loop'
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mcsec::net::{Group, InterfaceSpec, Options, Receiver, Sender};
use mcsec::{Body, ChannelId, GroupKey, Keyring, Opener, OpenerConfig, Sealer};

const MESSAGES: u32 = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let group: Group = "239.255.77.1:47701".parse()?;
    let mut opts = Options::default();
    opts.interface = Some(InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    opts.ttl = 1;

    let key = GroupKey::generate(std::time::SystemTime::now())?;
    let channel = ChannelId::group(group.addr());
    let mut opener = Opener::new(
        Keyring::single(key.clone()),
        channel.clone(),
        OpenerConfig::default(),
    );

    // Join first, so nothing sent is missed.
    let receiver = Receiver::open(group, &opts)?;
    receiver.set_timeout(Some(Duration::from_millis(100)))?;

    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let socket = Sender::open(group, &opts).map_err(|e| e.to_string())?;
        let mut sealer = Sealer::new(&key, &channel).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1472];
        for i in 0..MESSAGES * 20 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let text = format!("tick {i}");
            let len = sealer
                .seal_body(mcsec::now_us(), &Body::Data(text.as_bytes()), &mut buf)
                .map_err(|e| e.to_string())?;
            socket.send(&buf[..len]).map_err(|e| e.to_string())?;
            // Plus a datagram that is not a frame at all.
            socket.send(b"noise").map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    });

    let mut buf = vec![0u8; group.default_max_datagram()];
    let mut delivered = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered < MESSAGES && Instant::now() < deadline {
        // None: the timeout passed with nothing to read.
        let Some((len, from)) = receiver.recv(&mut buf)? else {
            continue;
        };
        match opener.open_body(mcsec::now_us(), &mut buf[..len]) {
            Ok((header, Body::Data(payload))) => {
                delivered += 1;
                println!(
                    "{from} sender {} seq {}: {}",
                    header.sender_id,
                    header.seq,
                    String::from_utf8_lossy(payload)
                );
            }
            Ok(_) => {}
            Err(reject) => println!("{from}: dropped ({reject})"),
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = sender.join();
    println!("counters: {:?}", opener.stats());
    if delivered < MESSAGES {
        return Err(format!("{delivered} of {MESSAGES} messages arrived").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Only inside a network namespace with nothing but lo (`.ci/run`
    /// runs the tests in one): this sends multicast.
    #[test]
    fn the_example_runs_on_loopback() {
        let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap();
        let names: Vec<&str> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert!(
            names.iter().all(|n| *n == "lo"),
            "interfaces {names:?}: run inside `unshare --net` (see .ci/run)"
        );
        super::main().unwrap();
    }
}
