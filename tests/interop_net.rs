//! mcsec and an independent implementation of PROTOCOL.md
//! (tests/interop/mcsec_ref.py, written from the specification alone) talk
//! to each other both ways: over loopback IPv4 multicast on the default
//! channel (the group and port) and on a named channel, and over IPv6
//! multicast across a veth pair in a network namespace the test makes.
//! Frames sealed for another channel or port are `auth_failed` on both.
//! Files (body variant 5) go both ways as source symbols: the reference has
//! no RaptorQ, so it sends no repair symbols and ignores mcsec's.
//!
//! Network safety: over IPv4 both sides send with IP_MULTICAST_IF
//! 127.0.0.1, TTL 1, and join on 127.0.0.1; groups are in 239.255.0.0/16.
//! IPv6 runs only inside `unshare -n` (a namespace with nothing but lo and
//! the veth pair it makes), hop limit 1.

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, Proc, keyfile, recv, reference_impl as reference, spawn_command, terminate};

/// Starts the reference receiver (exits after `count` Data messages or 15 s)
/// and waits until it listens.
fn py_recv(script: &Path, group: &str, key: &Path, count: &str, extra: &[&str]) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args([
            "recv",
            "--group",
            group,
            "--count",
            count,
            "--timeout",
            "15",
        ])
        .args(extra)
        .arg("--keyfile")
        .arg(key);
    let p = spawn_command(cmd);
    p.wait_err("listening on");
    p
}

/// The reference sender: `count` Data frames of `message`, 20 ms apart.
fn py_send(script: &Path, group: &str, key: &Path, message: &str, count: &str, extra: &[&str]) {
    let out = Command::new("python3")
        .arg(script)
        .args(["send", "--group", group, "--message", message])
        .args(["--count", count, "--interval-ms", "20"])
        .args(extra)
        .arg("--keyfile")
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// `mcsec send` on loopback: `count` Data frames of `message`, 20 ms apart.
fn mcsec_send(group: &str, key: &Path, message: &str, count: &str, extra: &[&str]) {
    let out = Command::new(BIN)
        .args(["send", "-g", group, "-i", "127.0.0.1", "-k"])
        .arg(key)
        .args(["--message", message, "--count", count, "--interval", "20ms"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Waits for the reference receiver; checks that it printed exactly
/// `SENDER SEQ message` for seq 0..count of one sender, and returns its
/// counters (the JSON line on stderr).
fn py_finish(receiver: Proc, message: &str, count: usize) -> serde_json::Value {
    let (status, lines, err) = receiver.finish();
    assert!(
        status.success(),
        "reference receiver failed: {lines:?} {err:?}"
    );
    assert_eq!(lines.len(), count, "{lines:?} {err:?}");
    let sender = lines[0].split(' ').next().unwrap().to_owned();
    for (seq, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("{sender} {seq} {message}"));
    }
    let stats = err
        .iter()
        .find(|l| l.starts_with('{'))
        .expect("counters line");
    serde_json::from_str(stats).unwrap()
}

/// Waits for `mcsec recv --format json --count N`; checks that it printed
/// `message` with seq 0..count, and returns its stats object.
fn mcsec_finish(receiver: Proc, message: &str, count: usize) -> serde_json::Value {
    let (status, lines, err) = receiver.finish();
    assert!(status.success(), "{err:?}");
    let values: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<_> = values.iter().filter(|v| v["type"] == "message").collect();
    assert_eq!(messages.len(), count, "{lines:?}");
    for (seq, m) in messages.iter().enumerate() {
        assert_eq!(m["payload"], message);
        assert_eq!(m["seq"], seq as u64);
    }
    values
        .iter()
        .find(|v| v["type"] == "stats")
        .expect("stats")
        .clone()
}

/// Frames `mcsec send` seals are read by the reference receiver.
#[test]
fn reference_receiver_reads_what_mcsec_sends() {
    let Some(script) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let group = "239.255.91.1:46201";
    let receiver = py_recv(&script, group, &key, "3", &[]);
    mcsec_send(group, &key, "tick from rust", "3", &[]);
    let stats = py_finish(receiver, "tick from rust", 3);
    assert_eq!(stats["delivered"], 3, "{stats}");
    assert_eq!(stats["auth_failed"], 0, "{stats}");
}

/// Frames the reference sender seals are printed by `mcsec recv`; a
/// reference sender with another key is `unknown_key`, and one that seals
/// for another port of the same group is `auth_failed`.
#[test]
fn mcsec_receiver_prints_what_the_reference_sends() {
    let Some(script) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let other = keyfile(dir.path(), "other");
    let group = "239.255.91.2:46202";
    let receiver = recv(group, &key, &["--format", "json", "--count", "3"]);
    py_send(&script, group, &other, "from an outsider", "2", &[]);
    // Channel ID of 239.255.91.2, port 46203 (one above the real one).
    let other_port = format!("04{:02x}{:02x}{:02x}{:02x}{:04x}", 239, 255, 91, 2, 46203);
    py_send(
        &script,
        group,
        &key,
        "for another port",
        "2",
        &["--channel-id", &other_port],
    );
    py_send(&script, group, &key, "tick from python", "3", &[]);
    let stats = mcsec_finish(receiver, "tick from python", 3);
    assert_eq!(stats["delivered"], 3, "{stats}");
    assert_eq!(stats["unknown_key"], 2, "{stats}");
    assert_eq!(stats["auth_failed"], 2, "{stats}");
}

/// A named channel, mcsec to the reference: frames for another name, and
/// frames for the group's own channel, fail authentication there.
#[test]
fn named_channel_mcsec_to_reference() {
    let Some(script) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let group = "239.255.91.3:46204";
    let receiver = py_recv(&script, group, &key, "3", &["--channel", "ticker"]);
    mcsec_send(group, &key, "wrong name", "2", &["--channel", "tickex"]);
    mcsec_send(group, &key, "no name", "1", &[]);
    mcsec_send(group, &key, "named", "3", &["--channel", "ticker"]);
    let stats = py_finish(receiver, "named", 3);
    assert_eq!(stats["delivered"], 3, "{stats}");
    assert_eq!(stats["auth_failed"], 3, "{stats}");
}

/// A named channel, the reference to mcsec, with the same negative cases.
#[test]
fn named_channel_reference_to_mcsec() {
    let Some(script) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let group = "239.255.91.4:46205";
    let receiver = recv(
        group,
        &key,
        &["--format", "json", "--count", "3", "--channel", "ticker"],
    );
    py_send(
        &script,
        group,
        &key,
        "wrong name",
        "2",
        &["--channel", "tickex"],
    );
    py_send(&script, group, &key, "no name", "1", &[]);
    py_send(&script, group, &key, "named", "3", &["--channel", "ticker"]);
    let stats = mcsec_finish(receiver, "named", 3);
    assert_eq!(stats["delivered"], 3, "{stats}");
    assert_eq!(stats["auth_failed"], 3, "{stats}");
}

/// The reference checks every vector (single-frame and sessions) and
/// passes its own self-test.
#[test]
fn reference_checks_the_vectors_and_itself() {
    let Some(script) = reference() else { return };
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    for args in [
        vec!["check-vectors", vectors.to_str().unwrap()],
        vec!["selftest"],
    ] {
        let out = Command::new("python3")
            .arg(&script)
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
        assert!(!stdout.contains("FAIL"), "{stdout}");
    }
}

/// Both ways over IPv6: the reference receives what mcsec sends, then mcsec
/// receives what the reference sends, on a veth pair in a fresh namespace.
const IPV6_SCRIPT: &str = r#"
set -e
ip link set lo up
ip link add v6a type veth peer name v6b
ip link set v6a up
ip link set v6b up
ip -6 addr add fd00:6::1/64 dev v6a nodad
ip -6 addr add fd00:6::2/64 dev v6b nodad
wait_for() {
    i=0
    until grep -q "$1" "$2"; do
        i=$((i + 1)); [ $i -lt 200 ] || { cat "$2" >&2; exit 3; }
        sleep 0.05
    done
}
python3 "$REF" recv --keyfile "$KEY" --group '[ff15::6]:46710' --interface v6b \
    --count 2 --timeout 10 >"$DIR/py_out" 2>"$DIR/py_err" &
PY=$!
wait_for 'listening on' "$DIR/py_err"
printf 'rust over v6\nrust over v6\n' \
    | "$MCSEC" send -k "$KEY" -g '[ff15::6]:46710' -i v6a --no-loop
wait $PY
"$MCSEC" recv -v -k "$KEY" -g '[ff15::6]:46711' -i v6b --count 2 --format json \
    --duration 10s >"$DIR/rs_out" 2>"$DIR/rs_err" &
RS=$!
wait_for 'receiving on' "$DIR/rs_err"
python3 "$REF" send --keyfile "$KEY" --group '[ff15::6]:46711' --interface v6a \
    --message 'python over v6' --count 2 --interval-ms 20
wait $RS
"#;

#[test]
fn ipv6_both_ways_over_veth_in_a_private_namespace() {
    let Some(script) = reference() else { return };
    // As in tests/ipv6_netns.rs: a skip would hide that the IPv6 path never
    // ran, so it fails unless MCSEC_SKIP_NETNS is set.
    let may_skip = std::env::var_os("MCSEC_SKIP_NETNS").is_some();
    const HOW: &str =
        "run the tests as root (as CI does), or set MCSEC_SKIP_NETNS=1 to skip this test";
    if let Err(why) = common::can_unshare() {
        assert!(may_skip, "{why}: {HOW}");
        eprintln!("skipping ipv6_both_ways_over_veth_in_a_private_namespace: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let out = Command::new("timeout")
        .args(["60", "unshare", "-n", "sh", "-c", IPV6_SCRIPT])
        .env("MCSEC", BIN)
        .env("REF", &script)
        .env("KEY", &key)
        .env("DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Operation not supported") && stderr.contains("veth") {
        assert!(may_skip, "this kernel has no veth: {HOW}: {stderr}");
        eprintln!("skipping: this kernel has no veth: {stderr}");
        return;
    }
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(
        out.status.success(),
        "{stderr}\npy_err: {}\nrs_err: {}",
        read("py_err"),
        read("rs_err")
    );

    // mcsec -> reference.
    let py_out = read("py_out");
    let lines: Vec<&str> = py_out.lines().collect();
    assert_eq!(lines.len(), 2, "{py_out}");
    let sender = lines[0].split(' ').next().unwrap();
    for (seq, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("{sender} {seq} rust over v6"));
    }
    let py_err = read("py_err");
    let stats: serde_json::Value =
        serde_json::from_str(py_err.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(stats["delivered"], 2, "{stats}");

    // reference -> mcsec.
    let rs_out = read("rs_out");
    let values: Vec<serde_json::Value> = rs_out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<_> = values.iter().filter(|v| v["type"] == "message").collect();
    assert_eq!(messages.len(), 2, "{rs_out}");
    for (seq, m) in messages.iter().enumerate() {
        assert_eq!(m["payload"], "python over v6");
        assert_eq!(m["seq"], seq as u64);
    }
    let stats = values.iter().find(|v| v["type"] == "stats").expect("stats");
    assert_eq!(stats["delivered"], 2, "{stats}");
    assert_eq!(common::rejected(stats), 0, "{stats}");
}

/// A signing key made by mcsec, its trust line, and a group key.
fn signer_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let signer = dir.join("feed.signer");
    let out = Command::new(BIN)
        .args(["signer", "new", "-o"])
        .arg(&signer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(BIN)
        .args(["signer", "public"])
        .arg(&signer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let trust = dir.join("feed.pub");
    std::fs::write(&trust, &out.stdout).unwrap();
    (signer, trust)
}

/// PROTOCOL.md Part 3 both ways: the reference signs (with mcsec's signing
/// key file) and `mcsec recv --trust` delivers every message, named; mcsec
/// signs and the reference's trusting receiver delivers every message.
#[test]
fn signed_feeds_both_ways() {
    let Some(script) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let (signer, trust) = signer_files(dir.path());
    let trust_s = trust.to_str().unwrap();
    let signer_s = signer.to_str().unwrap();

    let group = "239.255.91.9:46209";
    let receiver = recv(
        group,
        &key,
        &["--format", "json", "--count", "3", "--trust", trust_s],
    );
    py_send(
        &script,
        group,
        &key,
        "signed by python",
        "3",
        &["--sign", signer_s],
    );
    let (status, lines, err) = receiver.finish();
    assert!(status.success(), "{err:?}");
    let values: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<_> = values.iter().filter(|v| v["type"] == "message").collect();
    assert_eq!(messages.len(), 3, "{lines:?}");
    for m in &messages {
        assert_eq!(m["payload"], "signed by python", "{m}");
        assert_eq!(m["signer"], "feed", "{m}");
    }
    let stats = values.iter().find(|v| v["type"] == "stats").unwrap();
    assert_eq!(stats["frames_signed"], 3, "{stats}");
    assert!(
        stats["manifests_verified"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(stats["sig_bad"], 0, "{stats}");

    let group = "239.255.91.10:46210";
    let receiver = py_recv(&script, group, &key, "3", &["--trust", trust_s]);
    mcsec_send(group, &key, "signed by rust", "3", &["--sign", signer_s]);
    let (status, lines, err) = receiver.finish();
    assert!(status.success(), "{lines:?} {err:?}");
    assert_eq!(lines.len(), 3, "{lines:?} {err:?}");
    let mut last = None;
    for line in &lines {
        let mut fields = line.splitn(3, ' ');
        let _sender = fields.next();
        let seq: u64 = fields.next().unwrap().parse().unwrap();
        // Manifests take seqs too: the messages' seqs only increase.
        assert!(last.is_none_or(|l| seq > l), "{lines:?}");
        last = Some(seq);
        assert_eq!(
            fields.next().unwrap(),
            "signed by rust signer=feed",
            "{lines:?}"
        );
    }
}

/// Runs a script of the reference implementation that sends (it refuses to
/// run anywhere but a namespace of its own with only lo) in a fresh
/// network namespace.
fn in_private_namespace(command: &str) -> std::process::Output {
    if let Err(why) = common::can_unshare() {
        assert!(
            std::env::var_os("MCSEC_SKIP_NETNS").is_some(),
            "{why}: this test needs a network namespace of its own. Run as root, \
             or set MCSEC_SKIP_NETNS=1 to skip it"
        );
        eprintln!("skipping (MCSEC_SKIP_NETNS is set): {why}");
        return Command::new("true").output().unwrap();
    }
    Command::new("unshare")
        .args(["--net", "--", "bash", "-c"])
        .arg(format!(
            "ip link set lo up && ip route add 224.0.0.0/4 dev lo src 127.0.0.1 && {command}"
        ))
        .output()
        .unwrap()
}

/// The reference's own signed-session vectors (expectations written by
/// hand from PROTOCOL.md), replayed into a live `mcsec recv --trust`: the
/// same deliveries in the same order, the same counters.
#[test]
fn reference_signed_sessions_replayed_into_mcsec() {
    let Some(script) = reference() else { return };
    let replay = script.with_file_name("replay_signed.py");
    let out = in_private_namespace(&format!("python3 {} {BIN}", replay.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var_os("MCSEC_SKIP_NETNS").is_none() {
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
        assert!(!stdout.contains(" 0 passed"), "{stdout}");
    }
}

// ---------------------------------------------------------------------
// Files (PROTOCOL.md 2.1, variant 5) without RaptorQ: the reference sends
// and receives source symbols only, which checks the block layout (B,
// K_b, every offset, the zero padding) and the path rules against mcsec.

/// Deterministic file contents (xorshift64*).
fn file_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The reference sends a multi-block file as source symbols only, and
/// `mcsec recv --save-dir` rebuilds it under its path. 5000 bytes in
/// symbols of 256 and blocks of 3: Kt = 20, B = 7, the last block 2
/// symbols, the last symbol 136 bytes of file and 120 of padding; the path
/// has an empty and a `.` component, which are ignored.
#[test]
fn reference_sends_a_multi_block_file_to_mcsec() {
    let Some(script) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let save = dir.path().join("in");
    std::fs::create_dir(&save).unwrap();
    let data = file_bytes(5000, 5);
    let file = dir.path().join("report.bin");
    std::fs::write(&file, &data).unwrap();
    let group = "239.255.91.20:46220";
    let receiver = recv(
        group,
        &key,
        &["--format", "json", "--save-dir", save.to_str().unwrap()],
    );
    let out = Command::new("python3")
        .arg(&script)
        .args(["send", "--group", group, "--file"])
        .arg(&file)
        .args(["--path", "docs//./q4/report.bin", "--file-id", "7"])
        .args(["--symbol-size", "256", "--block-symbols", "3"])
        .args(["--interval-ms", "2", "--keyfile"])
        .arg(&key)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("T=256 K=3 B=7 last K_b=2) as 20 source"),
        "{said}"
    );
    let line = receiver.wait_out(r#""type":"file""#);
    let got: serde_json::Value = serde_json::from_str(&line).unwrap();
    let want = save.join("docs/q4/report.bin");
    assert_eq!(got["file_id"], 7, "{got}");
    assert_eq!(got["len"], 5000, "{got}");
    assert_eq!(got["sha256"], sha256_hex(&data), "{got}");
    assert_eq!(got["saved"], want.to_str().unwrap(), "{got}");
    assert_eq!(std::fs::read(&want).unwrap(), data);
    let (_, stats, err) = terminate(receiver);
    assert_eq!(stats["files_completed"], 1, "{stats} {err:?}");
    assert_eq!(stats["frames_opened"], 20, "{stats}");
    assert_eq!(common::rejected(&stats), 0, "{stats}");
    for counter in ["file_invalid", "file_conflict", "file_hash_mismatch"] {
        assert_eq!(stats[counter], 0, "{counter}: {stats}");
    }
}

/// `mcsec send --file DIR` to the reference receiver, which rebuilds each
/// file from its source symbols alone, checks the SHA-256 and saves it
/// under the relative path mcsec suggests. Small frames make many symbols
/// per file, the last one padded. Every frame is accounted for: the source
/// symbols rebuilt the files, and the rest (the first file's repair symbols
/// come before the second file's source symbols) were ignored.
#[test]
fn mcsec_sends_a_directory_to_the_reference() {
    let Some(script) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let save = dir.path().join("in");
    std::fs::create_dir(&save).unwrap();
    let proj = dir.path().join("proj");
    std::fs::create_dir_all(proj.join("sub")).unwrap();
    let files = [
        ("proj/a.bin", file_bytes(3001, 6)),
        ("proj/sub/notes.txt", file_bytes(1500, 7)),
    ];
    for (path, data) in &files {
        std::fs::write(dir.path().join(path), data).unwrap();
    }
    let group = "239.255.91.21:46221";
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(["recv", "--group", group, "--save-dir"])
        .arg(&save)
        .args(["--files", "2", "--timeout", "30", "--keyfile"])
        .arg(&key);
    let receiver = spawn_command(cmd);
    receiver.wait_err("listening on");
    let sender = Command::new(BIN)
        .args(["send", "-v", "-g", group, "-i", "127.0.0.1", "-k"])
        .arg(&key)
        .args(["--pps", "100", "--max-datagram", "400", "--file"])
        .arg(&proj)
        .output()
        .unwrap();
    assert!(sender.status.success(), "{sender:?}");
    // "... : 1 blocks of up to K symbols of T bytes"
    let said = String::from_utf8_lossy(&sender.stderr);
    let t: usize = said
        .lines()
        .find_map(|l| l.split(" symbols of ").nth(1)?.strip_suffix(" bytes"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no symbol size logged: {said}"));
    let sources: usize = files.iter().map(|(_, d)| d.len().div_ceil(t)).sum();
    let (status, lines, err) = receiver.finish();
    assert!(status.success(), "{lines:?} {err:?}");
    assert_eq!(lines.len(), 2, "{lines:?} {err:?}");
    for (file_id, ((path, data), line)) in files.iter().zip(&lines).enumerate() {
        let saved = save.join(path);
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 6, "{line}");
        assert_eq!(fields[0], "file", "{line}");
        assert_eq!(
            fields[2..4],
            [file_id.to_string(), data.len().to_string()],
            "{line}"
        );
        assert_eq!(fields[4], sha256_hex(data), "{line}");
        assert_eq!(fields[5], saved.to_str().unwrap(), "{line}");
        assert_eq!(std::fs::read(&saved).unwrap(), *data, "{path}");
    }
    let stats: serde_json::Value =
        serde_json::from_str(err.iter().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(stats["files_completed"], 2, "{stats}");
    let ignored = ["file_extra", "file_repair_ignored", "file_duplicate"]
        .iter()
        .map(|c| stats[c].as_u64().unwrap())
        .sum::<u64>();
    assert!(ignored >= 1, "{stats}");
    assert_eq!(
        stats["delivered"],
        sources as u64 + ignored,
        "T={t}: {stats}"
    );
    for counter in ["auth_failed", "bad_body", "file_invalid", "file_conflict"] {
        assert_eq!(stats[counter], 0, "{counter}: {stats}");
    }
}
