//! Key files are read again while mcsec runs (issue #9, finding 3): on
//! SIGHUP for `recv` and `send`, and in `recv` when frames under an
//! unknown key ID arrive after its file changed. A file that does not load
//! leaves the keys in force; senders under keys that stay keep their
//! replay windows.
//!
//! Network safety: every socket is pinned to 127.0.0.1 with TTL 1, groups
//! in 239.255.0.0/16; run in a network namespace (as `.ci/run` does).

mod common;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, DEADLINE, injector, keyfile, recv, signal, spawn, terminate};
use mcsec::net::{self, InterfaceSpec};
use mcsec::{Body, Keyring, Sealer};

/// Replaces `path` with `text` atomically (a new inode), mode 0600, as an
/// operator's `cp` over `mv` or a config manager would.
fn replace(path: &Path, text: &[u8]) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

fn copy_key(from: &Path, to: &Path) -> PathBuf {
    replace(to, &fs::read(from).unwrap());
    to.to_owned()
}

fn mcsec_ok(args: &[&str], file: &Path) {
    let out = Command::new(BIN).args(args).arg(file).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// A sealer with the last key of `key`, for `group`'s channel.
fn sealer(key: &Path, group: &str) -> Sealer {
    Sealer::new(
        Keyring::load(key).unwrap().sending_key(),
        &common::channel(group),
    )
    .unwrap()
}

fn frame(s: &mut Sealer, text: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 1472];
    let n = s
        .seal_body(mcsec::now_us(), &Body::Data(text.as_bytes()), &mut buf)
        .unwrap();
    buf.truncate(n);
    buf
}

fn payloads(out: &[String]) -> Vec<String> {
    out.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "message")
        .map(|v| v["payload"].as_str().unwrap().to_owned())
        .collect()
}

/// A rotation that reaches the receiver's file before the sender switches
/// loses nothing, and needs no signal: the first frames under the new key
/// are unknown, the receiver looks at its file, finds the key, and the
/// next ones are delivered. Senders under the old key keep their windows.
#[test]
fn an_unknown_key_rereads_a_changed_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let old = keyfile(dir.path(), "old.key");
    let both = copy_key(&old, &dir.path().join("both.key"));
    mcsec_ok(&["key", "rotate"], &both);
    let mine = copy_key(&old, &dir.path().join("recv.key"));
    let g = "239.255.97.1:46701";
    let receiver = recv(g, &mine, &["--format", "json"]);
    let tx = injector(g);
    let mut a = sealer(&old, g);
    let mut b = sealer(&both, g);
    assert_ne!(a.key_id(), b.key_id());
    let early = frame(&mut a, "old key before");
    tx.send(&early).unwrap();
    tx.send(&frame(&mut b, "new key, too early")).unwrap();
    // The rotated file reaches the receiver; nobody signals it. Then the
    // sender switches: its very first frame is delivered.
    std::thread::sleep(Duration::from_millis(300));
    copy_key(&both, &mine);
    std::thread::sleep(Duration::from_millis(300));
    tx.send(&frame(&mut b, "new key first")).unwrap();
    let reloaded = receiver
        .wait_err_for("reloaded", DEADLINE)
        .expect("the receiver reread its file");
    assert!(reloaded.contains("after an unknown key ID"), "{reloaded}");
    tx.send(&frame(&mut b, "new key after")).unwrap();
    // The old key stays, and so does its sender's window.
    tx.send(&early).unwrap();
    tx.send(&frame(&mut a, "old key after")).unwrap();
    let (out, stats, err) = terminate(receiver);
    let got = payloads(&out);
    assert!(got.contains(&"new key after".to_owned()), "{got:?} {err:?}");
    assert!(got.contains(&"old key before".to_owned()), "{got:?}");
    assert!(got.contains(&"old key after".to_owned()), "{got:?}");
    assert!(got.contains(&"new key first".to_owned()), "{got:?}");
    assert!(!got.contains(&"new key, too early".to_owned()), "{got:?}");
    // Only the frame that came before the file changed was lost.
    assert_eq!(stats["unknown_key"], 1, "{stats}");
    assert_eq!(
        stats["replayed"], 1,
        "the old sender's window was kept: {stats}"
    );
}

/// SIGHUP rereads the file and never kills; a broken file is reported and
/// the keys in force stay; a retired key's frames are unknown afterwards.
#[test]
fn sighup_reloads_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let old = keyfile(dir.path(), "old.key");
    let both = copy_key(&old, &dir.path().join("both.key"));
    mcsec_ok(&["key", "rotate"], &both);
    let mine = copy_key(&old, &dir.path().join("recv.key"));
    let g = "239.255.97.2:46702";
    let receiver = recv(g, &mine, &["--format", "json"]);
    let tx = injector(g);
    let mut a = sealer(&old, g);
    let mut b = sealer(&both, g);
    tx.send(&frame(&mut a, "a1")).unwrap();

    // A broken file: the old keys stay in force.
    replace(&mine, b"mcsec-key-v1 not a key\n");
    signal(&receiver, "HUP");
    assert!(
        receiver
            .wait_err_for("failed; the keys loaded before stay in force", DEADLINE)
            .is_some(),
        "no warning for the broken file"
    );
    tx.send(&frame(&mut a, "a2")).unwrap();

    // The new key only (the old one retired), on SIGHUP.
    copy_key(&both, &dir.path().join("new.key"));
    let out = Command::new(BIN)
        .args(["key", "retire"])
        .arg(dir.path().join("new.key"))
        .arg(a.key_id().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    copy_key(&dir.path().join("new.key"), &mine);
    signal(&receiver, "HUP");
    assert!(
        receiver.wait_err_for("reloaded", DEADLINE).is_some(),
        "no reload"
    );
    tx.send(&frame(&mut a, "a3")).unwrap();
    tx.send(&frame(&mut b, "b1")).unwrap();
    let (out, stats, err) = terminate(receiver);
    assert_eq!(payloads(&out), ["a1", "a2", "b1"], "{err:?}");
    assert_eq!(stats["unknown_key"], 1, "{stats}");
    assert_eq!(common::rejected(&stats), 1, "{stats}");
}

/// `send` reads its file again on SIGHUP and, when the last key changed,
/// starts a new session under it: frames on the wire carry the new key ID,
/// a new sender ID, and seq from 0.
#[test]
fn sighup_makes_send_seal_with_a_rotated_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "send.key");
    let old_id = Keyring::load(&key).unwrap().sending_key().id();
    let g = "239.255.97.3:46703";
    let mut opts = net::Options::default();
    opts.interface = Some(InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let tap = net::Receiver::open(g.parse().unwrap(), &opts).unwrap();
    tap.set_timeout(Some(Duration::from_secs(5))).unwrap();
    let sender = spawn(
        &[
            "send",
            "-v",
            "-g",
            g,
            "-i",
            "127.0.0.1",
            "--message",
            "tick",
            "--interval",
            "50ms",
        ],
        &key,
    );
    let mut buf = vec![0u8; 2048];
    let mut next = || {
        let (n, _) = tap.recv(&mut buf).unwrap().expect("a frame");
        mcsec::frame::peek_header(&buf[..n]).unwrap()
    };
    let first = next();
    assert_eq!(first.key_id, old_id);
    mcsec_ok(&["key", "rotate"], &key);
    let new_id = Keyring::load(&key).unwrap().sending_key().id();
    assert_ne!(new_id, old_id);
    // Not before the signal: rotation alone changes nothing for a sender.
    std::thread::sleep(Duration::from_millis(200));
    let still = next();
    assert_eq!(still.key_id, old_id);
    signal(&sender, "HUP");
    let start = Instant::now();
    let switched = loop {
        let h = next();
        if h.key_id == new_id {
            break h;
        }
        assert_eq!(h.key_id, old_id);
        assert!(start.elapsed() < DEADLINE, "never switched keys");
    };
    assert_ne!(switched.sender_id, first.sender_id, "a new session");
    assert_eq!(switched.seq, 0);
    let after = next();
    assert_eq!(
        (after.key_id, after.sender_id, after.seq),
        (new_id, switched.sender_id, 1)
    );
    signal(&sender, "TERM");
    let (status, _, err) = sender.finish();
    assert!(status.success(), "SIGHUP or SIGTERM killed send: {err:?}");
}
