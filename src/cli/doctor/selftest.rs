//! doctor's live self-test: join on the chosen interface, send a frame
//! sealed under a throw-away key there (TTL 1, loop on), receive it back.
//! Called only with -i: it never sends on an interface the user did not
//! name.

use std::time::{Duration, Instant};

use mcsec::net::{Group, InterfaceSpec, Options, Receiver, Sender};
use mcsec::{Body, ChannelId, GroupKey, Keyring, Opener, OpenerConfig, Sealer};

use super::probe::{self, IfInfo};
use super::{Finding, Status};

/// Joins on the chosen interface, sends a sealed frame there under a
/// throwaway key, and waits for it to come back.
pub(super) fn run(
    group: Group,
    spec: &InterfaceSpec,
    iface: &IfInfo,
    timeout: Duration,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut opts = Options::default();
    opts.interface = Some(spec.clone());
    opts.ttl = 1;
    opts.multicast_loop = true;
    let fail = |what: &str, e: mcsec::net::NetError| {
        let mut f = Finding::new("self-test", Status::Fail, format!("{what}: {e}"));
        if let Some(h) = e.hint() {
            f = f.hint(h);
        }
        f
    };
    let receiver = match Receiver::open(group, &opts) {
        Ok(r) => r,
        Err(e) => return vec![fail("joining", e)],
    };
    if let Some(finding) = membership(group, &iface.name) {
        out.push(finding);
    }
    let sender = match Sender::open(group, &opts) {
        Ok(s) => s,
        Err(e) => {
            out.push(fail("opening the sending socket", e));
            return out;
        }
    };
    let channel = ChannelId::group(group.addr());
    let sealed = GroupKey::generate(std::time::SystemTime::now())
        .map_err(|e| e.to_string())
        .and_then(|key| {
            let sealer = Sealer::new(&key, &channel).map_err(|e| e.to_string())?;
            Ok((key, sealer))
        });
    let (key, mut sealer) = match sealed {
        Ok(pair) => pair,
        Err(e) => {
            out.push(Finding::new(
                "self-test",
                Status::Fail,
                format!("making a throwaway key: {e}"),
            ));
            return out;
        }
    };
    let mut opener = Opener::new(Keyring::single(key), channel, OpenerConfig::default());
    if let Err(e) = receiver.set_timeout(Some(Duration::from_millis(50))) {
        out.push(fail("setting a receive timeout", e));
        return out;
    }
    let started = Instant::now();
    let mut sent = 0u32;
    let mut others = 0u64;
    let mut buf = vec![0u8; 65536];
    let mut frame = vec![0u8; group.default_max_datagram()];
    // Up to three frames, spread over the timeout: one lost on a busy
    // host is not a verdict.
    let gap = timeout / 3;
    let mut next_send = started;
    let back = loop {
        let now = Instant::now();
        if now.duration_since(started) >= timeout {
            break None;
        }
        if sent < 3 && now >= next_send {
            let body = Body::Data(b"mcsec doctor self-test");
            match sealer.seal_body(mcsec::now_us(), &body, &mut frame) {
                Ok(len) => {
                    if let Err(e) = sender.send(&frame[..len]) {
                        out.push(fail("sending", e));
                        return out;
                    }
                }
                Err(e) => {
                    out.push(Finding::new(
                        "self-test",
                        Status::Fail,
                        format!("sealing: {e}"),
                    ));
                    return out;
                }
            }
            sent += 1;
            next_send = now + gap;
        }
        match receiver.recv(&mut buf) {
            Ok(Some((len, from))) => {
                // recv never reports more than the buffer holds.
                let datagram = &mut buf[..len];
                if opener.open_body(mcsec::now_us(), datagram).is_ok() {
                    break Some(from);
                }
                // Another program's traffic on this group and port.
                others += 1;
            }
            Ok(None) => {}
            Err(e) => {
                out.push(fail("receiving", e));
                return out;
            }
        }
    };
    let port = group.addr().port();
    let finding = match back {
        Some(from) => Finding::new(
            "self-test",
            Status::Ok,
            format!(
                "joined {group} on {}, sent a sealed frame there (TTL 1) and received it back \
                 from {from} in {} ms (this host's loop: other hosts are not tested)",
                iface.name,
                started.elapsed().as_millis()
            ),
        )
        .with("from", from.to_string()),
        None => Finding::new(
            "self-test",
            Status::Fail,
            format!(
                "joined {group} on {}, sent {sent} sealed frame{} there (TTL 1); none came back \
                 within {}",
                iface.name,
                if sent == 1 { "" } else { "s" },
                humantime::format_duration(timeout)
            ),
        )
        .hint(format!(
            "something on this host drops UDP to {} port {port}: a firewall rule (see the \
             firewall finding; nft list ruleset), or an input policy that drops; \
             watch with: tcpdump -ni {} udp port {port}",
            group.addr().ip(),
            iface.name
        )),
    };
    out.push(
        finding
            .with("sent", sent)
            .with("other_datagrams", others)
            .with("interface", iface.name.clone()),
    );
    out
}

/// Whether the kernel lists our membership of `group` on `iface`
/// (`/proc/net/igmp`, `/proc/net/igmp6`), while the self-test holds it.
fn membership(group: Group, iface: &str) -> Option<Finding> {
    let listed = probe::joined(group.addr().ip(), iface)?;
    Some(if listed {
        Finding::new(
            "membership",
            Status::Ok,
            format!(
                "the kernel lists {} as joined on {iface}",
                group.addr().ip()
            ),
        )
    } else {
        Finding::new(
            "membership",
            Status::Warn,
            format!(
                "joined {} on {iface}, but the kernel does not list it there",
                group.addr().ip()
            ),
        )
        .hint("another interface may have taken the join: name it by address, -i ADDR")
    })
}
