//! The Wireshark dissector in contrib/wireshark/mcsec.lua (issue #12),
//! run by tshark on a tcpdump capture of real `mcsec send` traffic.
//!
//! Needs tshark and tcpdump (`apt-get install tshark tcpdump`; .ci/run
//! installs them): without them the test fails, unless
//! `MCSEC_SKIP_TSHARK=1`, so a green run never hides that it did not run.
//!
//! Network safety: every datagram goes to 127.0.0.1 or to a group in
//! 239.255.0.0/16 with `-i 127.0.0.1` and TTL 1, and the test refuses to
//! run outside a network namespace that has only `lo` (as `.ci/run` makes).

use std::ffi::OsStr;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{BIN, keyfile, spawn, spawn_command};

const DISSECTOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/wireshark/mcsec.lua");

/// False (and says why) when tshark or tcpdump is missing and
/// `MCSEC_SKIP_TSHARK=1`; panics when one is missing without it.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["tshark", "tcpdump"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| !s.success())
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("MCSEC_SKIP_TSHARK").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED (MCSEC_SKIP_TSHARK=1): {missing:?} not installed");
        return false;
    }
    panic!(
        "{missing:?} not installed: apt-get install tshark tcpdump \
         (or MCSEC_SKIP_TSHARK=1 to skip this test)"
    );
}

/// tshark with the dissector loaded: `first` (`-G` must come first),
/// then `-X lua_script:...`, then `rest`. Its own config directory stays
/// empty so that a user's preferences cannot change what it shows.
fn tshark(home: &Path, first: &[&str], rest: &[&OsStr]) -> Vec<String> {
    let out = Command::new("tshark")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .args(first)
        .arg("-X")
        .arg(format!("lua_script:{DISSECTOR}"))
        .args(rest)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tshark {first:?} {rest:?} failed: {err}"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// tshark reading `pcap` with the dissector loaded.
fn tshark_read(home: &Path, pcap: &Path, args: &[&str]) -> Vec<String> {
    let mut rest = vec![OsStr::new("-r"), pcap.as_os_str()];
    rest.extend(args.iter().map(OsStr::new));
    tshark(home, &[], &rest)
}

/// Captures UDP on lo into `pcap` until `count` datagrams are in it,
/// while `traffic` runs.
fn capture(pcap: &Path, count: usize, traffic: impl FnOnce()) {
    let mut cmd = Command::new("tcpdump");
    // -Z root: Debian's tcpdump otherwise drops to the tcpdump user, which
    // may not write into our temporary directory. -U: write each packet
    // as it comes. -c: stop after the datagrams we send, flushing the file.
    cmd.args(["-i", "lo", "-n", "-U", "-Z", "root", "-c"])
        .arg(count.to_string())
        .arg("-w")
        .arg(pcap)
        .arg("udp");
    let dump = spawn_command(cmd);
    // tcpdump says "listening on lo" once the capture is live.
    dump.wait_err("listening on");
    traffic();
    let mut dump = dump;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = dump.child.try_wait().unwrap() {
            assert!(status.success(), "tcpdump: {status}");
            break;
        }
        assert!(
            Instant::now() < end,
            "tcpdump did not see {count} UDP datagrams in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn key_id(key: &Path) -> String {
    let out = Command::new(BIN)
        .args(["key", "list"])
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    // A header line, then one line per key: its ID first.
    text.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 8 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no key ID in `mcsec key list`: {text:?}"))
        .to_owned()
}

#[test]
fn tshark_shows_the_header_of_real_mcsec_frames_and_nothing_else() {
    common::only_loopback();
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let key = keyfile(dir.path(), "k");
    let key_id = key_id(&key);
    let pcap: PathBuf = dir.path().join("mcsec.pcap");
    let group = "239.255.121.7:46207";

    // The dissector loads, also as root (some builds run no Lua as root):
    // a tshark that did not load it knows no "mcsec" protocol.
    let protocols = tshark(&home, &["-G", "protocols"], &[]);
    assert!(
        protocols
            .iter()
            .any(|l| l.split('\t').nth(2) == Some("mcsec")),
        "tshark did not load {DISSECTOR} (Lua disabled, or running as root?)"
    );
    // ... as a heuristic UDP dissector, enabled.
    let heuristics = tshark(&home, &["-G", "heuristic-decodes"], &[]);
    assert!(
        heuristics.iter().any(|l| l == "udp\tmcsec\tT"),
        "mcsec is not an enabled heuristic on udp: {heuristics:?}"
    );

    let started_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros();
    // Three mcsec frames, then three UDP datagrams that are not mcsec: text,
    // a version 1 magic, and a v2 magic one byte shorter than a frame.
    let not_mcsec: [Vec<u8>; 3] = [
        b"this is not mcsec, but it is long enough to be a frame; ......".to_vec(),
        [b"mcs\x01".as_slice(), &[7; 60]].concat(),
        [b"mcs\x02".as_slice(), &[7; 51]].concat(),
    ];
    capture(&pcap, 6, || {
        let send = spawn(
            &[
                "send",
                "-q",
                "-g",
                group,
                "-i",
                "127.0.0.1",
                "-t",
                "1",
                "--message",
                "tick",
                "--count",
                "3",
                "--interval",
                "50ms",
            ],
            &key,
        );
        let (status, _, err) = send.finish();
        assert!(status.success(), "send failed: {err:?}");
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        for d in &not_mcsec {
            sock.send_to(d, "127.0.0.1:46207").unwrap();
        }
    });

    // All six were captured as UDP; three are mcsec.
    let all = tshark_read(&home, &pcap, &["-T", "fields", "-e", "udp.length"]);
    assert_eq!(all.len(), 6, "{all:?}");
    let rows = tshark_read(
        &home,
        &pcap,
        &[
            "-Y",
            "mcsec",
            "-T",
            "fields",
            "-e",
            "mcsec.key_id",
            "-e",
            "mcsec.seq",
            "-e",
            "mcsec.sender_id",
            "-e",
            "mcsec.version",
            "-e",
            "mcsec.ciphertext_len",
            "-e",
            "mcsec.timestamp",
            "-e",
            "mcsec.tag",
            "-e",
            "udp.payload",
        ],
    );
    assert_eq!(rows.len(), 3, "not 3 mcsec frames: {rows:?}");
    let fields: Vec<Vec<&str>> = rows.iter().map(|r| r.split('\t').collect()).collect();
    for (seq, f) in fields.iter().enumerate() {
        assert_eq!(f[0], format!("0x{key_id}"), "key ID: {f:?}");
        assert_eq!(f[1], seq.to_string(), "seq: {f:?}");
        assert_eq!(f[2].len(), 32, "a 16-byte sender ID: {f:?}");
        assert_eq!(f[2], fields[0][2], "one sender: {fields:?}");
        assert_eq!(f[3], "2", "version: {f:?}");
        // Data body "tick": variant 0, a length byte, 4 bytes.
        assert_eq!(f[4], "6", "ciphertext length: {f:?}");
        // Against the datagram's bytes: the magic, then key ID and sender
        // ID where PROTOCOL.md 1.3 puts them, the tag last.
        let payload = f[7];
        assert_eq!(payload.len(), 2 * (56 + 6), "{f:?}");
        assert_eq!(&payload[..8], "6d637302", "{f:?}");
        assert_eq!(&payload[8..16], key_id, "{f:?}");
        assert_eq!(&payload[16..48], f[2], "sender ID: {f:?}");
        assert_eq!(f[6].len(), 32, "a 16-byte tag: {f:?}");
        assert!(payload.ends_with(f[6]), "tag: {f:?}");
        // The sender's clock, which is ours: between the start and an
        // hour later (no timing assertion, only the right field).
        let ts: u128 = f[5].parse().unwrap();
        assert!(
            (started_us..started_us + 3_600_000_000).contains(&ts),
            "timestamp {ts} µs, test started at {started_us} µs"
        );
    }

    // The info column, as Wireshark's packet list shows it.
    let info = tshark_read(
        &home,
        &pcap,
        &["-Y", "mcsec", "-T", "fields", "-e", "_ws.col.Info"],
    );
    assert_eq!(
        info[2],
        format!("mcsec key {key_id} sender {} seq 2", &fields[0][2][..8])
    );

    // The three that are not mcsec are plain UDP, not mcsec.
    let rest = tshark_read(
        &home,
        &pcap,
        &["-Y", "udp && !mcsec", "-T", "fields", "-e", "udp.length"],
    );
    let lengths: Vec<String> = not_mcsec
        .iter()
        .map(|d| (d.len() + 8).to_string())
        .collect();
    assert_eq!(rest, lengths, "the datagrams that are not mcsec");
}
