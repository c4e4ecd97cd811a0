//! `--threads N` on the real binaries: a threaded receiver delivers the
//! same feed, in the same order, and counts the same rejects as one
//! thread; a threaded sender's stream arrives whole and in order.
//!
//! Network safety: run inside `unshare --net` (checked first); the
//! injector and the commands are pinned to 127.0.0.1 with TTL 1, groups
//! are in 239.255.0.0/16.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{REJECT_COUNTERS, injector, keyfile, only_loopback, recv, spawn, terminate};
use mcsec::frame::MAX_DATAGRAM_V4;
use mcsec::{Body, Keyring, Sealer};

/// Held by the tests whose counts a flood on the same two cores could
/// upset (kernel drops), and by the flood.
static QUIET: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sealer(key: &Path, group: &str) -> Sealer {
    Sealer::new(
        Keyring::load(key).unwrap().sending_key(),
        &common::channel(group),
    )
    .unwrap()
}

fn seal_at(s: &mut Sealer, now_us: u64, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM_V4];
    let n = s.seal_body(now_us, &Body::Data(payload), &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// A feed of valid frames from two senders with every kind of bad frame
/// among them; and the payloads one receiver must deliver, in order.
fn hostile_feed(key: &Path, other_key: &Path, group: &str) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut a = sealer(key, group);
    let mut b = sealer(key, group);
    let mut stranger = sealer(other_key, group);
    let mut feed = Vec::new();
    let mut want = Vec::new();
    let mut held = Vec::new();
    for i in 0..600u32 {
        let now = mcsec::now_us();
        let s = if i % 3 == 0 { &mut b } else { &mut a };
        let text = format!("m {i}");
        let frame = seal_at(s, now, text.as_bytes());
        feed.push(frame.clone());
        want.push(text);
        match i % 10 {
            // A replay beside its original (same batch), and one much later.
            1 => feed.push(frame.clone()),
            2 => held.push(frame.clone()),
            // Tampered body; tampered seq.
            3 => {
                let mut bad = frame.clone();
                bad[45] ^= 0x10;
                feed.push(bad);
                let mut bad = frame.clone();
                bad[31] ^= 1;
                feed.push(bad);
            }
            // Forged: a sender ID never seen.
            4 => {
                let mut forged = frame.clone();
                forged[12] ^= 0x5a;
                feed.push(forged);
            }
            // Unknown key, stale, malformed, oversize.
            5 => {
                feed.push(seal_at(&mut stranger, now, b"stranger"));
                feed.push(seal_at(s, now - 3_600_000_000, b"an hour old"));
                feed.push(frame[..30].to_vec());
                feed.push(vec![7u8; 2000]);
            }
            _ => {}
        }
    }
    feed.extend(held);
    (feed, want)
}

fn messages(out: &[String]) -> Vec<String> {
    out.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "message")
        .map(|v| v["payload"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_threaded_receiver_delivers_and_counts_as_one_thread_does() {
    only_loopback();
    let _quiet = QUIET.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let other = keyfile(dir.path(), "other");
    let group = "239.255.97.1:46701";
    // Buffers that hold the whole feed, so a loaded machine (CI runs the
    // tests in parallel) does not drop what the comparison needs.
    let one = recv(group, &key, &["--format", "json", "--rcvbuf", "16M"]);
    let two = recv(
        group,
        &key,
        &["--format", "json", "--rcvbuf", "16M", "--threads", "2"],
    );
    let (feed, want) = hostile_feed(&key, &other, group);
    let tx = injector(group);
    for (n, frame) in feed.iter().enumerate() {
        tx.send(frame).unwrap();
        // Bursts, so batches are in flight together, paced so that no
        // receive queue overflows: every datagram must be counted.
        if n % 16 == 15 {
            std::thread::sleep(Duration::from_millis(4));
        }
    }
    let results: Vec<_> = [one, two].into_iter().map(terminate).collect();
    for (_, stats, _) in &results {
        // Else the two did not see the same feed, and nothing is compared.
        assert_eq!(
            stats["kernel_drops"], 0,
            "a loaded machine dropped datagrams: {stats}"
        );
    }
    let (out, stats, _) = &results[0];
    assert_eq!(messages(out), want, "one thread: {stats}");
    let sent = feed.len() as u64;
    let counted: u64 = REJECT_COUNTERS
        .iter()
        .map(|k| stats[k].as_u64().unwrap())
        .sum();
    assert_eq!(counted + want.len() as u64, sent, "{stats}");
    for k in [
        "replayed",
        "auth_failed",
        "unknown_key",
        "stale",
        "malformed",
        "oversize",
    ] {
        assert!(stats[k].as_u64().unwrap() > 0, "{k}: {stats}");
    }
    for (threads, (out_n, stats_n, _)) in [(2, &results[1])] {
        assert_eq!(messages(out_n), want, "--threads {threads}: {stats_n}");
        for k in REJECT_COUNTERS {
            assert_eq!(
                stats_n[k], stats[k],
                "--threads {threads}, {k}: {stats_n} vs {stats}"
            );
        }
    }
}

#[test]
fn send_with_two_threads_arrives_in_order_and_complete() {
    only_loopback();
    const CHUNKS: usize = 3000;
    const CHUNK: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let group = "239.255.97.2:46702";
    let count = CHUNKS.to_string();
    let receiver = recv(
        group,
        &key,
        &["--format", "json", "--count", &count, "--duration", "12s"],
    );
    let chunk = CHUNK.to_string();
    let mut send = spawn(
        &[
            "send",
            "-g",
            group,
            "-i",
            "127.0.0.1",
            "--raw",
            "--chunk",
            &chunk,
            "--threads",
            "2",
            "--rate",
            "30M",
        ],
        &key,
    );
    let mut input = Vec::with_capacity(CHUNKS * CHUNK);
    for i in 0..CHUNKS {
        let mut piece = format!("chunk {i:06} ").into_bytes();
        piece.resize(CHUNK, b'.');
        input.extend_from_slice(&piece);
    }
    send.stdin.as_mut().unwrap().write_all(&input).unwrap();
    drop(send.stdin.take());
    let (status, _, err) = send.finish();
    assert!(status.success(), "{err:?}");
    let (status, out, err) = receiver.finish();
    assert!(
        status.success(),
        "{:?}",
        &err[err.len().saturating_sub(4)..]
    );
    let got = messages(&out);
    assert_eq!(got.len(), CHUNKS, "{err:?}");
    for (i, payload) in got.iter().enumerate() {
        assert!(
            payload.starts_with(&format!("chunk {i:06} ")),
            "message {i} is {:?}",
            &payload[..16]
        );
        assert_eq!(payload.len(), CHUNK);
    }
}

/// Signing and trusting stay on one thread for now: asked for both, the
/// commands refuse with a usage error instead of doing something else.
#[test]
fn threads_with_sign_trust_or_both_roles_are_usage_errors() {
    only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let signer = dir.path().join("signer");
    let out = std::process::Command::new(common::BIN)
        .args(["signer", "new", "-o"])
        .arg(&signer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let group = "239.255.97.3:46703";
    let signer = signer.to_str().unwrap();
    let key_arg = key.to_str().unwrap();
    let runs: [(&[&str], &str); 3] = [
        (
            &[
                "send",
                "-g",
                group,
                "-i",
                "127.0.0.1",
                "-m",
                "x",
                "--threads",
                "2",
                "--sign",
                signer,
                "-k",
                key_arg,
            ],
            "--threads and --sign",
        ),
        (
            &[
                "recv",
                "-g",
                group,
                "-i",
                "127.0.0.1",
                "--threads",
                "2",
                "--trust",
                "/nonexistent",
                "-k",
                key_arg,
            ],
            "--threads and --trust",
        ),
        (&["bench", "--threads", "2"], "give --role send or recv"),
    ];
    for (args, want) in runs {
        let out = std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// A threaded receiver stopped in the middle of a flood: the batches its
/// workers were opening when the signal came are taken back and counted,
/// so every datagram it read is opened or rejected, as with one thread
/// (threads review T4).
#[test]
fn a_threaded_receiver_stopped_mid_flood_counts_every_datagram_it_read() {
    only_loopback();
    let _quiet = QUIET.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let group = "239.255.97.3:46703";
    let receiver = recv(
        group,
        &key,
        &["--format", "json", "--rcvbuf", "4M", "--threads", "2"],
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (key, stop) = (key.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut s = sealer(&key, group);
            let tx = injector(group);
            let payload = [0x5a; 200];
            let mut sent = 0u64;
            // Sealed as it goes (the frames stay fresh however long the
            // flood runs on a loaded machine), 64 to a GSO run: faster
            // than two threads open them, so the socket never runs dry
            // and batches are always out with the workers.
            let mut run = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                run.clear();
                let mut len = 0;
                for _ in 0..64 {
                    let frame = seal_at(&mut s, mcsec::now_us(), &payload);
                    len = frame.len();
                    run.extend_from_slice(&frame);
                }
                if let Ok(n) = tx.send_segments(&run, len) {
                    sent += n as u64;
                }
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    // The signal lands while the flood goes on: batches are out with the
    // workers then.
    let (_, stats, err) = terminate(receiver);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap();
    let read = stats["datagrams_read"].as_u64().unwrap();
    let opened = stats["frames_opened"].as_u64().unwrap();
    let rejected: u64 = REJECT_COUNTERS
        .iter()
        .map(|k| stats[k].as_u64().unwrap())
        .sum();
    assert!(
        read > 1000,
        "the flood did not reach the receiver ({sent} sent): {stats}"
    );
    assert_eq!(
        read,
        opened + rejected,
        "read but never counted: {stats} {err:?}"
    );
    assert_eq!(stats["delivered"].as_u64(), Some(opened), "{stats}");
}
