//! The real binary over loopback multicast.
//!
//! Network safety: every command gets `-i 127.0.0.1` (or `-i lo`) and TTL 1,
//! every group is in 239.255.0.0/16, and the test's own injecting socket is
//! an `mcsec::net::Sender` pinned to 127.0.0.1. Each test has its own port
//! and every wait has a deadline, so nothing hangs.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mcsec::{Body, Keyring, Sealer};

mod common;

use common::{BIN, Proc, injector, keyfile, lines, recv, signal, spawn, terminate};

/// Starts `mcsec send -g GROUP -i 127.0.0.1 -t 1 EXTRA -k KEY`.
fn spawn_send(group: &str, key: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["send", "-g", group, "-i", "127.0.0.1", "-t", "1"];
    args.extend_from_slice(extra);
    spawn(&args, key)
}

fn send(group: &str, key: &Path, stdin: &[u8], extra: &[&str]) {
    let mut p = spawn_send(group, key, extra);
    p.stdin.as_mut().unwrap().write_all(stdin).unwrap();
    let (status, _, err) = p.finish();
    assert!(status.success(), "send failed: {err:?}");
}

fn json_lines(out: &[String]) -> Vec<serde_json::Value> {
    out.iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn stats(out: &[String]) -> serde_json::Value {
    json_lines(out)
        .into_iter()
        .find(|v| v["type"] == "stats")
        .expect("a stats line")
}

#[test]
fn send_recv_lines() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.1:46101";
    let r = recv(g, &key, &["--count", "3"]);
    send(g, &key, b"one\ntwo\r\nthree\n", &[]);
    let (status, out, err) = r.finish();
    assert!(status.success(), "{err:?}");
    assert_eq!(out, ["one", "two", "three"]);
    assert!(
        err.iter().any(|l| l.contains("3 messages delivered")),
        "{err:?}"
    );
}

#[test]
fn send_recv_raw_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.2:46102";
    let r = recv(g, &key, &["--count", "3", "--format", "raw"]);
    send(g, &key, b"abcdefghij", &["--raw", "--chunk", "4"]);
    let (status, out, _) = r.finish();
    assert!(status.success());
    assert_eq!(out.concat(), "abcdefghij");
}

#[test]
fn send_recv_json_text_and_binary() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.3:46103";
    let r = recv(g, &key, &["--count", "2", "--format", "json"]);
    send(g, &key, "héllo\n".as_bytes(), &[]);
    send(g, &key, &[0xff, 0x00, 0xfe], &["--raw"]);
    let (status, out, _) = r.finish();
    assert!(status.success());
    let v = json_lines(&out);
    assert_eq!(v.len(), 3, "{out:?}");
    assert_eq!(v[0]["type"], "message");
    assert_eq!(v[0]["payload"], "héllo");
    assert_eq!(v[0]["seq"], 0);
    assert_eq!(v[0]["sender"].as_str().unwrap().len(), 32);
    assert!(v[0]["timestamp_us"].as_u64().unwrap() > 1_600_000_000_000_000);
    assert_eq!(v[1]["payload_b64"], "/wD+");
    assert!(v[1].get("payload").is_none());
    assert!(
        out[0].starts_with(r#"{"type":"message","sender":"#),
        "{}",
        out[0]
    );
    assert_eq!(v[2]["type"], "stats");
    assert_eq!(v[2]["delivered"], 2);
    assert_eq!(v[2]["auth_failed"], 0);
}

#[test]
fn message_interval_count_and_pps_pacing() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.17:46117";
    let r = recv(g, &key, &["--count", "23"]);
    let start = Instant::now();
    send(
        g,
        &key,
        b"",
        &["--message", "tick", "--interval", "50ms", "--count", "3"],
    );
    let ticked = start.elapsed();
    let input: String = (0..20).map(|i| format!("p{i}\n")).collect();
    let start = Instant::now();
    send(g, &key, input.as_bytes(), &["--pps", "100"]);
    let paced = start.elapsed();
    let (status, out, _) = r.finish();
    assert!(status.success());
    assert_eq!(&out[..3], ["tick", "tick", "tick"]);
    assert_eq!(out.len(), 23);
    assert!(ticked >= Duration::from_millis(100), "{ticked:?}");
    // 20 datagrams at 100 per second: at least 19 gaps of 10 ms.
    assert!(paced >= Duration::from_millis(190), "{paced:?}");
}

#[test]
fn two_receivers_on_one_port_both_get_everything() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.4:46104";
    let a = recv(g, &key, &["--count", "20"]);
    let b = recv(g, &key, &["--count", "20"]);
    let input: String = (0..20).map(|i| format!("msg {i}\n")).collect();
    send(g, &key, input.as_bytes(), &[]);
    let expected: Vec<String> = (0..20).map(|i| format!("msg {i}")).collect();
    for r in [a, b] {
        let (status, out, _) = r.finish();
        assert!(status.success());
        assert_eq!(out, expected);
    }
}

#[test]
fn two_chat_members_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.5:46105";
    let args = |nick: &'static str| vec!["chat", "-v", "-g", g, "-i", "lo", "--nick", nick];
    let mut alice = spawn(&args("alice"), &key);
    let mut bob = spawn(&args("bob"), &key);
    alice.wait_err("as sender");
    bob.wait_err("as sender");
    writeln!(alice.stdin.as_mut().unwrap(), "hi from alice").unwrap();
    writeln!(bob.stdin.as_mut().unwrap(), "hi from bob").unwrap();
    // Every stdout line is kept: the ones read while waiting too.
    let mut alice_saw = out_until(&alice, "hi from bob");
    let mut bob_saw = out_until(&bob, "hi from alice");
    assert!(
        alice_saw.last().unwrap().starts_with("<bob@"),
        "{alice_saw:?}"
    );
    assert!(
        bob_saw.last().unwrap().starts_with("<alice@"),
        "{bob_saw:?}"
    );
    // Each first line has now reached every member's socket, its sender's
    // too; a second line from the other side comes after it, so waiting
    // for that one means an echo of the own first line was read.
    writeln!(alice.stdin.as_mut().unwrap(), "bye from alice").unwrap();
    writeln!(bob.stdin.as_mut().unwrap(), "bye from bob").unwrap();
    alice_saw.extend(out_until(&alice, "bye from bob"));
    bob_saw.extend(out_until(&bob, "bye from alice"));
    // Nobody is shown their own line.
    for (p, mut saw, own) in [(alice, alice_saw, "from alice"), (bob, bob_saw, "from bob")] {
        let (status, out, err) = p.finish();
        assert!(status.success(), "{err:?}");
        saw.extend(out);
        assert_eq!(saw.len(), 2, "{saw:?}");
        assert!(!saw.iter().any(|l| l.contains(own)), "{own}: {saw:?}");
    }
}

/// Stdout lines up to and including the first that contains `needle`.
fn out_until(p: &Proc, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let end = Instant::now() + common::DEADLINE;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(line) = p.out.recv_timeout(left) else {
            break;
        };
        let done = line.contains(needle);
        seen.push(line);
        if done {
            return seen;
        }
    }
    panic!("no stdout line with {needle:?}: {seen:?}");
}

#[test]
fn large_message_is_fragmented_and_reassembled() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.6:46106";
    let big: String = (0..100_000u32)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let r = recv(g, &key, &["--count", "2", "--format", "json"]);
    send(
        g,
        &key,
        format!("{big}\nsmall\n").as_bytes(),
        &["--rate", "50M", "--pps", "20000"],
    );
    let (status, out, _) = r.finish();
    assert!(status.success());
    let v = json_lines(&out);
    assert_eq!(v[0]["payload"].as_str().unwrap(), big);
    assert_eq!(v[1]["payload"], "small");
    let s = &v[2];
    assert_eq!(s["messages_reassembled"], 1);
    assert!(s["frames_opened"].as_u64().unwrap() > 60);
}

/// Bytes that repeat only every 251, so a lost or reordered datagram shows.
fn pattern(len: u32) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn binary_payload(v: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    let payload = v["payload_b64"].as_str().expect("a binary payload");
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .unwrap()
}

/// A fragmented message goes out in batches (GSO runs), paced per batch:
/// 600 kB at 40 Mbit/s takes about 120 ms, whatever the batch size.
#[test]
fn batched_fragments_keep_the_rate_and_arrive_whole() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.23:46123";
    let big = pattern(600_000);
    let r = recv(g, &key, &["--count", "1", "--format", "json"]);
    let start = Instant::now();
    send(
        g,
        &key,
        &big,
        &["--raw", "--chunk", "600000", "--rate", "40M"],
    );
    let took = start.elapsed();
    let (status, out, _) = r.finish();
    assert!(status.success());
    let v = json_lines(&out);
    assert!(binary_payload(&v[0]) == big, "the message arrived changed");
    assert_eq!(v[1]["messages_reassembled"], 1);
    // 600 kB plus headers at 40 Mbit/s is at least 120 ms.
    assert!(took >= Duration::from_millis(115), "{took:?}");
}

/// Raw input that is all there (a file) goes out in batches across
/// messages, paced, and arrives whole and in order.
#[test]
fn raw_input_is_batched_across_messages_and_paced() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.24:46124";
    let data = pattern(300_000);
    // 1000-byte messages: one datagram each.
    let messages = 300;
    let r = recv(
        g,
        &key,
        &["--count", &messages.to_string(), "--format", "json"],
    );
    let start = Instant::now();
    send(
        g,
        &key,
        &data,
        &["--raw", "--chunk", "1000", "--rate", "40M"],
    );
    let took = start.elapsed();
    let (status, out, _) = r.finish();
    assert!(status.success());
    let v = json_lines(&out);
    assert_eq!(v.len(), messages + 1, "every message, then the stats");
    let got: Vec<u8> = v[..messages].iter().flat_map(binary_payload).collect();
    assert!(got == data, "the input arrived changed");
    assert!(took >= Duration::from_millis(55), "{took:?}");
}

/// Regression: a whole chunk read from a pipe waited in the batch until
/// the next chunk was complete, so a producer that paused longer than the
/// skew lost it as stale. A datagram never waits on a slow producer.
#[test]
fn raw_chunks_from_a_slow_pipe_go_out_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.25:46125";
    let r = recv(g, &key, &["--count", "2"]);
    let mut p = spawn_send(g, &key, &["--raw", "--chunk", "4"]);
    let stdin = p.stdin.as_mut().unwrap();
    // One whole chunk and half of the next; then the producer pauses.
    stdin.write_all(b"AAAABB").unwrap();
    stdin.flush().unwrap();
    r.wait_out("AAAA");
    p.stdin.as_mut().unwrap().write_all(b"BB").unwrap();
    let (status, _, err) = p.finish();
    assert!(status.success(), "{err:?}");
    let (status, out, _) = r.finish();
    assert!(status.success());
    assert_eq!(out, ["BBBB"], "the first line was taken by wait_out");
}

#[test]
fn message_over_max_message_is_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.7:46107";
    let r = recv(
        g,
        &key,
        &["--count", "1", "--format", "json", "--max-message", "4k"],
    );
    send(
        g,
        &key,
        format!("{}\nafter\n", "x".repeat(5000)).as_bytes(),
        &[],
    );
    let (status, out, _) = r.finish();
    assert!(status.success());
    let v = json_lines(&out);
    assert_eq!(v[0]["payload"], "after");
    assert!(v[1]["fragment_oversize"].as_u64().unwrap() >= 1);
}

#[test]
fn source_specific_receiver_hears_only_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.15:46115";
    // The sender binds to 127.0.0.1 (its -i), so that is its source.
    let good = recv(
        g,
        &key,
        &["-s", "127.0.0.1", "--count", "1", "--format", "json"],
    );
    let other = recv(g, &key, &["-s", "127.0.0.2", "--format", "json"]);
    send(g, &key, b"from lo\n", &[]);
    let (status, out, _) = good.finish();
    assert!(status.success());
    assert_eq!(json_lines(&out)[0]["payload"], "from lo");
    // The other receiver was listening the whole time the frame flew.
    let (_, stats, _) = terminate(other);
    assert_eq!(stats["frames_opened"], 0);
}

#[test]
fn receiver_ignores_other_groups_on_its_port() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let port = 46116;
    let mine = format!("239.255.90.16:{port}");
    let theirs = format!("239.255.91.16:{port}");
    // A member of the other group on the same port makes the kernel deliver
    // that group to this host; our receiver must still not see it.
    let bystander = recv(&theirs, &key, &["--count", "1"]);
    let r = recv(&mine, &key, &["--count", "1", "--format", "json"]);
    send(&theirs, &key, b"not for you\n", &[]);
    send(&mine, &key, b"for you\n", &[]);
    let (status, out, _) = r.finish();
    assert!(status.success());
    let v = json_lines(&out);
    assert_eq!(v[0]["payload"], "for you");
    assert_eq!(v[1]["frames_opened"], 1);
    let (status, out, _) = bystander.finish();
    assert!(status.success());
    assert_eq!(out, ["not for you"]);
}

#[test]
fn wrong_key_delivers_nothing_and_counts_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let other = keyfile(dir.path(), "other");
    let g = "239.255.90.8:46108";
    let r = recv(g, &other, &["--format", "json"]);
    send(g, &key, b"secret 1\nsecret 2\nsecret 3\n", &[]);
    // Ended by SIGTERM once the sender is done, not by a timer that a
    // loaded machine can outrun.
    let (out, s, err) = terminate(r);
    assert_eq!(out.len(), 1, "only the stats line: {out:?}");
    assert_eq!(s["delivered"], 0);
    assert_eq!(s["unknown_key"], 3);
    assert!(err.iter().any(|l| l.contains("3 unknown key")), "{err:?}");
}

#[test]
fn tampered_replayed_and_stale_frames_are_rejected_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.9:46109";
    let ring = Keyring::load(&key).unwrap();
    let mut sealer = Sealer::new(ring.sending_key(), &common::channel(g)).unwrap();
    let inj = injector(g);
    let r = recv(g, &key, &["--count", "2", "--format", "json"]);

    let mut buf = [0u8; 1472];
    let now = mcsec::now_us();
    let mut frame = |sealer: &mut Sealer, ts: u64, text: &[u8]| {
        let n = sealer.seal_body(ts, &Body::Data(text), &mut buf).unwrap();
        buf[..n].to_vec()
    };
    let good = frame(&mut sealer, now, b"first");
    inj.send(&good).unwrap();
    inj.send(&good).unwrap(); // replay
    let mut tampered = frame(&mut sealer, now, b"tampered");
    tampered[44] ^= 0x80;
    inj.send(&tampered).unwrap();
    let stale = frame(&mut sealer, now - 120_000_000, b"stale");
    inj.send(&stale).unwrap();
    inj.send(&[0u8; 20]).unwrap(); // malformed
    inj.send(&[0u8; 1600]).unwrap(); // oversize
    let mut future = [0u8; 64];
    let n = sealer
        .seal(mcsec::now_us(), &[0x09, 0x00], &mut future)
        .unwrap();
    inj.send(&future[..n]).unwrap(); // authentic, but a body variant from the future
    inj.send(&frame(&mut sealer, mcsec::now_us(), b"last"))
        .unwrap();

    let (status, out, _) = r.finish();
    assert!(status.success());
    let v = json_lines(&out);
    assert_eq!(v[0]["payload"], "first");
    assert_eq!(v[1]["payload"], "last");
    let s = &v[2];
    assert_eq!(s["delivered"], 2);
    assert_eq!(s["replayed"], 1);
    assert_eq!(s["auth_failed"], 1);
    assert_eq!(s["stale"], 1);
    assert_eq!(s["malformed"], 1);
    assert_eq!(s["oversize"], 1);
    assert_eq!(s["unknown_body"], 1);
}

#[test]
fn fragments_arriving_out_of_order_are_reassembled() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.18:46118";
    let ring = Keyring::load(&key).unwrap();
    let mut sealer = Sealer::new(ring.sending_key(), &common::channel(g)).unwrap();
    let message: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let pieces: Vec<Body<'_>> = mcsec::reassembly::fragments(7, &message, sealer.max_plaintext())
        .unwrap()
        .collect();
    assert!(pieces.len() >= 7);
    let r = recv(g, &key, &["--count", "1", "--format", "json"]);
    let inj = injector(g);
    let mut buf = [0u8; 1472];
    // Reverse order, and the third piece twice.
    let mut order: Vec<usize> = (0..pieces.len()).rev().collect();
    order.insert(1, 2);
    for i in order {
        let n = sealer
            .seal_body(mcsec::now_us(), &pieces[i], &mut buf)
            .unwrap();
        inj.send(&buf[..n]).unwrap();
    }
    let (status, out, _) = r.finish();
    assert!(status.success());
    let v = json_lines(&out);
    use base64::Engine;
    let got = base64::engine::general_purpose::STANDARD
        .decode(v[0]["payload_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(got, message);
    // The second copy of piece 2 (a fresh frame, so not a replay) is
    // counted and does no harm.
    assert_eq!(v[1]["fragment_duplicate"], 1);
    assert_eq!(v[1]["messages_reassembled"], 1);
}

#[test]
fn strict_start_rejects_frames_stamped_before_start() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.10:46110";
    let ring = Keyring::load(&key).unwrap();
    let mut sealer = Sealer::new(ring.sending_key(), &common::channel(g)).unwrap();
    let before = mcsec::now_us();
    let mut buf = [0u8; 1472];
    let n = sealer
        .seal_body(before, &Body::Data(b"old"), &mut buf)
        .unwrap();
    let old = buf[..n].to_vec();
    let r = recv(
        g,
        &key,
        &["--count", "1", "--format", "json", "--strict-start"],
    );
    let inj = injector(g);
    inj.send(&old).unwrap();
    let n = sealer
        .seal_body(mcsec::now_us(), &Body::Data(b"new"), &mut buf)
        .unwrap();
    inj.send(&buf[..n]).unwrap();
    let (status, out, _) = r.finish();
    assert!(status.success());
    let v = json_lines(&out);
    assert_eq!(v[0]["payload"], "new");
    assert_eq!(v[1]["stale"], 1);
}

#[test]
fn sigterm_ends_recv_with_stats() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.11:46111";
    let r = recv(g, &key, &["--format", "json"]);
    send(g, &key, b"x\n", &[]);
    r.wait_out("\"payload\":\"x\"");
    signal(&r, "TERM");
    let (status, out, err) = r.finish();
    assert!(status.success(), "{err:?}");
    assert_eq!(stats(&out)["delivered"], 1);
    assert!(
        err.iter().any(|l| l.contains("1 message delivered")),
        "{err:?}"
    );
}

#[test]
fn open_permission_key_file_is_refused_with_hint() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["recv", "-g", "239.255.90.12:46112", "-i", "127.0.0.1", "-k"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:"), "{err}");
    assert!(err.contains("hint:") && err.contains("chmod 600"), "{err}");
}

#[test]
fn bad_group_and_interface_get_hints() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let out = Command::new(BIN)
        .args(["recv", "-g", "10.1.2.3:5000", "-i", "127.0.0.1", "-k"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a multicast address") && err.contains("239.255"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["send", "-g", "239.255.90.13:46113", "-i", "nosuchif9", "-k"])
        .arg(&key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: no network interface named \"nosuchif9\""),
        "{err}"
    );
    // The library's hint, and the option that fixes it, which the CLI adds.
    assert!(err.contains("hint: list interfaces with: ip addr"), "{err}");
    assert!(err.contains("(-i IF names the interface"), "{err}");
}

#[test]
fn demo_passes() {
    let out = Command::new(BIN).arg("demo").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("delivered  ").count(), 5, "{text}");
    assert_eq!(text.matches("rejected   ").count(), 4, "{text}");
    // Protocol v2: a frame of the right key, captured on another group.
    assert!(text.contains("captured on another group"), "{text}");
    assert!(text.contains("demo passed"));
}

#[test]
fn help_has_examples_and_defaults() {
    for cmd in ["send", "recv", "chat", "demo"] {
        let out = Command::new(BIN).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{cmd}: {text}");
        assert!(
            text.contains("default") || text.contains("Default"),
            "{cmd}: {text}"
        );
    }
    let out = Command::new(BIN).args(["chat", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("NICKS ARE CLAIMS, NOT PROOF"));
}

#[test]
fn broken_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.14:46114";
    let mut child = Command::new(BIN)
        .args(["recv", "-v", "-g", g, "-i", "127.0.0.1", "-k"])
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the only read end of its stdout: its first write gets EPIPE.
    drop(child.stdout.take());
    let p = Proc {
        out: mpsc::channel().1,
        err: lines(child.stderr.take().unwrap()),
        stdin: None,
        child,
    };
    p.wait_err("receiving on");
    send(g, &key, b"a\nb\n", &[]);
    let (status, _, err) = p.finish();
    assert!(status.success(), "{err:?}");
    assert!(!err.iter().any(|l| l.contains("error")), "{err:?}");
}

/// Regression: a paced send slept through Ctrl-C and SIGTERM (at --rate 1
/// the next datagram was hours away).
#[test]
fn sigterm_interrupts_a_paced_send() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.20:46120";
    let p = spawn(
        &[
            "send",
            "-v",
            "-g",
            g,
            "-i",
            "127.0.0.1",
            "--rate",
            "1",
            "--message",
            "tick",
            "--count",
            "3",
        ],
        &key,
    );
    p.wait_err("as sender");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let asked = std::time::Instant::now();
    signal(&p, "TERM");
    let (status, _, err) = p.finish();
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(2),
        "{err:?}"
    );
    assert!(status.success(), "{err:?}");
}

/// Regression: after SIGINT a paced raw send stopped pacing and sent the
/// rest of its input flat out. It now stops reading and ends.
#[test]
fn sigint_ends_a_paced_raw_send_instead_of_unpacing_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.26:46126";
    let r = recv(g, &key, &["--format", "json"]);
    // 1000 messages of 100 bytes at 100 a second: ten seconds of input.
    let mut p = spawn_send(g, &key, &["-v", "--raw", "--chunk", "100", "--pps", "100"]);
    p.stdin
        .as_mut()
        .unwrap()
        .write_all(&[b'x'; 100_000])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(&p, "INT");
    let (status, _, err) = p.finish();
    // Stopped by its handler, and ended with its summary: not killed by
    // SIGINT's default action.
    assert!(status.success(), "{status}: {err:?}");
    assert!(err.iter().any(|l| l.contains("sent ")), "{err:?}");
    let (_, stats, _) = terminate(r);
    let delivered = stats["delivered"].as_u64().unwrap();
    assert!(
        (1..200).contains(&delivered),
        "{delivered} delivered: {err:?}"
    );
}

/// Hostile chat nicks cannot close the `<nick@sender>` prefix or reorder
/// the line.
#[test]
fn hostile_chat_nicks_are_defanged() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.90.21:46121";
    let bob = spawn(&["chat", "-v", "-g", g, "-i", "lo", "--nick", "bob"], &key);
    bob.wait_err("as sender");
    let mut sealer = Sealer::new(
        Keyring::load(&key).unwrap().sending_key(),
        &common::channel(g),
    )
    .unwrap();
    let mut buf = vec![0u8; 1472];
    let n = sealer
        .seal_body(
            mcsec::now_us(),
            &Body::Chat {
                nick: "alice@0badc0de> \u{202e}",
                text: "olleh\u{1b}[2J",
            },
            &mut buf,
        )
        .unwrap();
    injector(g).send(&buf[..n]).unwrap();
    let line = bob.wait_out("olleh");
    let short = sealer.sender_id().short();
    assert_eq!(
        line,
        format!("<alice?0badc0de? \u{fffd}@{short} unsigned> olleh\u{fffd}[2J")
    );
    // And nobody can pick such a nick for themselves.
    let out = Command::new(BIN)
        .args(["chat", "-g", g, "-i", "lo", "--nick", "a@b", "-k"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let (status, _, err) = bob.finish();
    assert!(status.success(), "{err:?}");
}

/// TTL 1 on a routed group draws a hint (nothing is sent: stdin is empty).
#[test]
fn ttl_one_on_a_routed_group_gets_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    // 233.252.0.0/24 is MCAST-TEST-NET (RFC 6676), for documentation.
    let out = Command::new(BIN)
        .args(["send", "-g", "233.252.0.1:46122", "-i", "127.0.0.1", "-k"])
        .arg(&key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("never cross a router") && err.contains("-t N"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["send", "-g", "239.255.90.22:46122", "-i", "127.0.0.1", "-k"])
        .arg(&key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("router"));
}
