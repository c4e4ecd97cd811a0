//! Attacks on the real `mcsec recv` over loopback multicast: every
//! mutation of a frame, and a flood of forgeries beside a valid feed with
//! the receiver's peak memory measured. Plus: no command prints key bytes,
//! at any verbosity.
//!
//! Network safety: the injector is an `mcsec::net::Sender` pinned to
//! 127.0.0.1 with TTL 1, receivers get `-i 127.0.0.1`, groups are in
//! 239.255.0.0/16.

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Proc, injector, keyfile, recv, rejected, spawn, terminate};
use mcsec::frame::MAX_DATAGRAM_V4;
use mcsec::net::{self, InterfaceSpec};
use mcsec::{Body, Keyring, Sealer};

fn sealer(key: &Path, group: &str) -> Sealer {
    Sealer::new(
        Keyring::load(key).unwrap().sending_key(),
        &common::channel(group),
    )
    .unwrap()
}

fn seal(s: &mut Sealer, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM_V4];
    let n = s
        .seal_body(mcsec::now_us(), &Body::Data(payload), &mut buf)
        .unwrap();
    buf.truncate(n);
    buf
}

/// Every single-bit flip and every truncation of a valid frame, sent to the
/// real receiver: none delivered, each counted once.
#[test]
fn every_mutation_sent_to_recv_is_rejected_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let group = "239.255.94.1:46401";
    let receiver = recv(group, &key, &["--format", "json"]);
    let tx = injector(group);
    let mut s = sealer(&key, group);
    let frame = seal(&mut s, b"ACME 101.25");
    let mut sent = 0u64;
    for bit in 0..frame.len() * 8 {
        let mut f = frame.clone();
        f[bit / 8] ^= 1 << (bit % 8);
        tx.send(&f).unwrap();
        sent += 1;
        // Pace, so the kernel's receive queue never overflows: every
        // datagram must reach mcsec to be counted.
        if sent.is_multiple_of(32) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Zero-length datagrams included.
    for len in 0..frame.len() {
        tx.send(&frame[..len]).unwrap();
        sent += 1;
        if sent.is_multiple_of(32) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // The original still gets through afterwards: nothing used its seq.
    tx.send(&frame).unwrap();
    let (out, stats, _) = terminate(receiver);
    let delivered: Vec<_> = out.iter().filter(|l| l.contains("\"message\"")).collect();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert!(delivered[0].contains("ACME 101.25"));
    assert_eq!(rejected(&stats), sent, "{stats}");
    eprintln!(
        "mutations over loopback: {sent} sent to mcsec recv, 0 delivered, {sent} counted ({stats})"
    );
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 200,000 forged datagrams with random sender IDs and the group's real key
/// ID, with a valid feed interleaved, sent to the real receiver: the feed
/// arrives whole, and the receiver's peak memory stays flat.
#[test]
fn a_flood_of_forgeries_beside_a_valid_feed() {
    const FORGED: u64 = 200_000;
    const EVERY: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let group = "239.255.94.2:46402";
    let receiver = recv(group, &key, &["--format", "json", "--rcvbuf", "8M"]);
    let pid = receiver.child.id();
    let tx = injector(group);
    let mut feed = sealer(&key, group);
    let mut other = sealer(&key, group);
    let template = seal(&mut other, &[0u8; 100]);
    let mut forged = template.clone();
    let mut x = 0x243f_6a88_85a3_08d3u64;
    // The receiver's own peak before the flood, once the feed's first frame
    // (its sender state, output buffers) has been through.
    tx.send(&seal(&mut feed, b"first")).unwrap();
    let mut feed_sent = 1;
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = peak_rss_kib(pid);
    for i in 0..FORGED {
        let tag_at = forged.len() - 16;
        for at in [8, 16, tag_at, tag_at + 8] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            forged[at..at + 8].copy_from_slice(&x.to_be_bytes());
        }
        tx.send(&forged).unwrap();
        if i % EVERY == 0 {
            tx.send(&seal(&mut feed, &i.to_be_bytes())).unwrap();
            feed_sent += 1;
            // Pace: the point is the receiver's work per datagram, not
            // overflowing the kernel's queue.
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    let rss_after = peak_rss_kib(pid);
    let (out, stats, _) = terminate(receiver);
    let delivered = out.iter().filter(|l| l.contains("\"message\"")).count() as u64;
    assert_eq!(
        delivered, feed_sent,
        "the valid feed arrives whole: {stats}"
    );
    let auth_failed = stats["auth_failed"].as_u64().unwrap();
    assert_eq!(rejected(&stats), auth_failed, "{stats}");
    // Datagrams the kernel dropped under the flood never reached mcsec; the
    // ones that did were all counted as forgeries.
    assert!(auth_failed >= FORGED * 9 / 10, "{stats}");
    let (Some(before), Some(after)) = (rss_before, rss_after) else {
        if cfg!(target_os = "linux") {
            panic!("no VmHWM for recv");
        }
        return;
    };
    eprintln!(
        "flood over loopback: {FORGED} forged sent, {auth_failed} reached recv and failed auth, 0 delivered; feed {delivered} of {feed_sent}; recv peak RSS {before} KiB before, {after} KiB after"
    );
    assert!(
        after <= before + 1024,
        "recv's peak RSS grew from {before} to {after} KiB"
    );
}

/// Every secret in a key file, as bytes.
fn secrets_in(key: &Path) -> Vec<Vec<u8>> {
    std::fs::read_to_string(key)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("mcsec-key-v1 "))
        .map(|l| hex::decode(l.split(' ').nth(2).unwrap()).unwrap())
        .collect()
}

/// The ways a secret could be printed: hex in both cases, base64 standard
/// and URL-safe, with and without padding.
fn encodings(secret: &[u8]) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    vec![
        hex::encode(secret),
        hex::encode_upper(secret),
        STANDARD.encode(secret),
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
    ]
}

/// Runs in `text` that look like key material: 32 or more hex digits, or
/// 20 or more base64 characters (either alphabet) that mix upper case,
/// lower case and digits as random bytes do.
fn long_runs(text: &str) -> Vec<String> {
    let mut runs = Vec::new();
    let mut split = |is_part: fn(char) -> bool, keep: &dyn Fn(&str) -> bool| {
        for run in text.split(|c: char| !is_part(c)) {
            if keep(run) {
                runs.push(run.to_owned());
            }
        }
    };
    split(|c| c.is_ascii_hexdigit(), &|r| r.len() >= 32);
    split(
        |c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_' | '='),
        &|r| {
            r.len() >= 20
                && r.chars().any(|c| c.is_ascii_uppercase())
                && r.chars().any(|c| c.is_ascii_lowercase())
                && r.chars().any(|c| c.is_ascii_digit())
        },
    );
    runs
}

/// No command prints a key's secret, at any verbosity, on any stream:
/// neither the secrets of the key file (including keys added by `key
/// rotate`, read after it ran) in any common encoding, nor anything else
/// that looks like key material (the keys derived from them, the demo's
/// own throw-away key), apart from the sender IDs the receiver reports.
#[test]
fn no_key_bytes_in_any_output_at_any_verbosity() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let group = "239.255.94.3:46403";
    let mut lines = Vec::new();
    let run = |args: &[&str], file: &Path| {
        let out = Command::new(BIN).args(args).arg(file).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        [
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ]
    };
    // Two keys from the start: send and chat seal under the new one.
    lines.extend(run(&["-vvv", "key", "rotate"], &key));
    let other = dir.path().join("other");
    lines.extend(run(&["-vvv", "keygen", "-o"], &other));
    let mut collect = |p: Proc| {
        let (status, out, err) = p.finish();
        assert!(status.success(), "{err:?}");
        lines.extend(out);
        lines.extend(err);
    };
    for v in ["-v", "-vv", "-vvv"] {
        let r = spawn(
            &[
                "recv",
                v,
                "-g",
                group,
                "-i",
                "127.0.0.1",
                "--count",
                "3",
                "--format",
                "json",
            ],
            &key,
        );
        r.wait_err("receiving on");
        let mut send = spawn(&["send", v, "-g", group, "-i", "127.0.0.1"], &key);
        send.stdin
            .as_mut()
            .unwrap()
            .write_all(b"one\ntwo\n")
            .unwrap();
        collect(send);
        let mut chat = spawn(
            &["chat", v, "-g", group, "-i", "127.0.0.1", "--nick", "ana"],
            &key,
        );
        chat.stdin.as_mut().unwrap().write_all(b"hi\n").unwrap();
        collect(chat);
        collect(r);
    }
    for args in [
        &["key", "list"][..],
        &["key", "rotate"],
        &["-vvv", "key", "list"],
    ] {
        lines.extend(run(args, &key));
    }
    let demo = Command::new(BIN).args(["-vvv", "demo"]).output().unwrap();
    assert!(demo.status.success());
    lines.push(String::from_utf8_lossy(&demo.stdout).into_owned());
    lines.push(String::from_utf8_lossy(&demo.stderr).into_owned());
    assert!(lines.len() > 20, "{lines:?}");
    let all = lines.join("\n");

    // Read after every rotation: the first key, two added, and another file.
    let mut secrets = secrets_in(&key);
    assert_eq!(secrets.len(), 3, "one key plus two rotations");
    secrets.extend(secrets_in(&other));
    for secret in &secrets {
        for encoded in encodings(secret) {
            // The whole secret, and any 16-character piece of it.
            for piece in encoded.as_bytes().chunks(16).filter(|p| p.len() >= 8) {
                let piece = std::str::from_utf8(piece).unwrap();
                assert!(!all.contains(piece), "secret bytes in output: {piece}");
            }
        }
    }

    // Anything else that looks like key material. The receiver reports
    // each sender's 128-bit random ID in full (public: it is in every
    // frame's header); nothing else long and random may appear.
    let sender_ids: std::collections::HashSet<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["sender"].as_str().map(str::to_owned))
        .collect();
    assert!(sender_ids.len() >= 6, "two senders a round: {sender_ids:?}");
    for id in &sender_ids {
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let unexplained: Vec<String> = long_runs(&all)
        .into_iter()
        .filter(|run| !sender_ids.contains(run))
        .collect();
    assert!(
        unexplained.is_empty(),
        "key-like runs in output: {unexplained:?}"
    );
}

/// A session captured off the group by a listener, replayed to `mcsec recv`:
/// at once (none accepted), to a restarted receiver within the skew (each
/// once, the bound SECURITY.md states), and to a restarted receiver with
/// --strict-start (none). Frames from two captured senders with header
/// fields swapped: none accepted.
#[test]
fn a_captured_session_replayed_to_recv() {
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let group = "239.255.94.4:46404";
    let recv_args = [
        "recv",
        "-v",
        "-g",
        group,
        "-i",
        "127.0.0.1",
        "--format",
        "json",
    ];

    // The eavesdropper: a plain listener on the group.
    let mut opts = net::Options::default();
    opts.interface = Some(InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let tap = net::Receiver::open(group.parse().unwrap(), &opts).unwrap();
    tap.set_timeout(Some(Duration::from_secs(5))).unwrap();
    let first = spawn(&recv_args, &key);
    first.wait_err("receiving on");
    let mut send = spawn(&["send", "-g", group, "-i", "127.0.0.1"], &key);
    let lines: String = (0..N).map(|i| format!("tick {i}\n")).collect();
    send.stdin
        .as_mut()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(send.finish().0.success());
    let mut captured = Vec::new();
    let mut buf = vec![0u8; 2048];
    while captured.len() < N {
        let (n, _) = tap.recv(&mut buf).unwrap().expect("captured a frame");
        captured.push(buf[..n].to_vec());
    }

    let tx = injector(group);
    let replay = |tx: &net::Sender| {
        for f in &captured {
            tx.send(f).unwrap();
        }
    };
    // At once, to the receiver that saw them.
    replay(&tx);
    let (out, stats, _) = terminate(first);
    let delivered = out.iter().filter(|l| l.contains("\"message\"")).count();
    assert_eq!(delivered, N, "only the originals");
    assert_eq!(stats["replayed"], N as u64, "{stats}");

    // A restarted receiver, within the skew: each frame once, never twice.
    let restarted = spawn(&recv_args, &key);
    restarted.wait_err("receiving on");
    replay(&tx);
    replay(&tx);
    let (out, stats, _) = terminate(restarted);
    let delivered = out.iter().filter(|l| l.contains("\"message\"")).count();
    assert_eq!(delivered, N, "{stats}");
    assert_eq!(stats["replayed"], N as u64, "{stats}");

    // With --strict-start: none.
    let mut strict_args = recv_args.to_vec();
    strict_args.push("--strict-start");
    let strict = spawn(&strict_args, &key);
    strict.wait_err("receiving on");
    replay(&tx);
    let (out, stats, _) = terminate(strict);
    let delivered = out.iter().filter(|l| l.contains("\"message\"")).count();
    assert_eq!(delivered, 0, "{stats}");
    assert_eq!(stats["stale"], N as u64, "{stats}");
    assert_eq!(rejected(&stats), N as u64, "{stats}");

    // Two captured frames with their header fields swapped, to a receiver
    // where they are fresh and their seqs unseen: only the AEAD can refuse
    // them, which proves the header is authenticated.
    let fresh = spawn(&recv_args, &key);
    fresh.wait_err("receiving on");
    let (a, b) = (&captured[0], &captured[1]);
    for range in [24..32, 32..40, 24..40] {
        let mut f = a.clone();
        f[range.clone()].copy_from_slice(&b[range]);
        tx.send(&f).unwrap();
    }
    let (out, stats, _) = terminate(fresh);
    let delivered = out.iter().filter(|l| l.contains("\"message\"")).count();
    assert_eq!(delivered, 0, "{stats}");
    assert_eq!(stats["auth_failed"], 3, "{stats}");
    assert_eq!(rejected(&stats), 3, "{stats}");

    // The same key on another group, and on another port of this group:
    // the captured frames were sealed for this channel and fail there.
    for other in ["239.255.94.5:46404", "239.255.94.4:46405"] {
        let mut args = recv_args.to_vec();
        args[3] = other;
        let elsewhere = spawn(&args, &key);
        elsewhere.wait_err("receiving on");
        let tx = injector(other);
        for f in &captured {
            tx.send(f).unwrap();
        }
        let (out, stats, _) = terminate(elsewhere);
        let delivered = out.iter().filter(|l| l.contains("\"message\"")).count();
        assert_eq!(delivered, 0, "{other}: {stats}");
        assert_eq!(stats["auth_failed"], N as u64, "{other}: {stats}");
        assert_eq!(rejected(&stats), N as u64, "{other}: {stats}");
    }
    eprintln!(
        "replays over loopback: {N} at once: 0 accepted; {} to a restarted receiver: {N} accepted (each once); {N} with --strict-start: 0 accepted; 3 header swaps to a fresh receiver: 3 auth_failed; {N} onto another group and {N} onto another port: 0 accepted, all auth_failed",
        2 * N
    );
}
