//! mcsec and an independent implementation of PROTOCOL.md
//! (tests/interop/mcsec_ref.py, written from the specification alone) talk
//! to each other over real loopback multicast, both ways.
//!
//! Network safety: both sides send with IP_MULTICAST_IF 127.0.0.1, TTL 1,
//! and join on 127.0.0.1; groups are in 239.255.0.0/16.

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, keyfile, recv, reference_impl as reference, spawn_command};

/// Frames `mcsec send` seals are read by the reference receiver.
#[test]
fn reference_receiver_reads_what_mcsec_sends() {
    let Some(script) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let group = "239.255.91.1:46201";
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args([
            "recv",
            "--group",
            group,
            "--count",
            "3",
            "--timeout",
            "15",
            "--keyfile",
        ])
        .arg(&key);
    let receiver = spawn_command(cmd);
    receiver.wait_err("listening on");

    let out = Command::new(BIN)
        .args(["send", "-g", group, "-i", "127.0.0.1", "-k"])
        .arg(&key)
        .args([
            "--message",
            "tick from rust",
            "--count",
            "3",
            "--interval",
            "20ms",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let (status, lines, err) = receiver.finish();
    assert!(
        status.success(),
        "reference receiver failed: {lines:?} {err:?}"
    );
    assert_eq!(lines.len(), 3, "{lines:?} {err:?}");
    let sender = lines[0].split(' ').next().unwrap().to_owned();
    for (seq, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("{sender} {seq} tick from rust"));
    }
    // Its counters: nothing dropped.
    let stats = err
        .iter()
        .find(|l| l.starts_with('{'))
        .expect("counters line");
    let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
    assert_eq!(stats["delivered"], 3);
    assert_eq!(stats["auth_failed"], 0);
}

/// Frames the reference sender seals are printed by `mcsec recv`, and a
/// reference sender with another key is refused as unknown_key.
#[test]
fn mcsec_receiver_prints_what_the_reference_sends() {
    let Some(script) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let other = keyfile(dir.path(), "other");
    let group = "239.255.91.2:46202";
    let receiver = recv(group, &key, &["--format", "json", "--count", "3"]);

    let send = |keyfile: &Path, message: &str, count: &str| {
        let out = Command::new("python3")
            .arg(&script)
            .args([
                "send",
                "--group",
                group,
                "--message",
                message,
                "--count",
                count,
            ])
            .args(["--interval-ms", "20", "--keyfile"])
            .arg(keyfile)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    send(&other, "from an outsider", "2");
    send(&key, "tick from python", "3");

    let (status, lines, err) = receiver.finish();
    assert!(status.success(), "{err:?}");
    let values: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<_> = values.iter().filter(|v| v["type"] == "message").collect();
    assert_eq!(messages.len(), 3, "{lines:?}");
    for (seq, m) in messages.iter().enumerate() {
        assert_eq!(m["payload"], "tick from python");
        assert_eq!(m["seq"], seq as u64);
    }
    let stats = values.iter().find(|v| v["type"] == "stats").expect("stats");
    assert_eq!(stats["delivered"], 3);
    assert_eq!(stats["unknown_key"], 2, "{stats}");
}
