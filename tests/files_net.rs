//! `mcsec send --file` to `mcsec recv --save-dir` over loopback multicast:
//! directly, and through a seeded in-process relay that drops datagrams.
//! The file must arrive byte for byte, once, under its name, without
//! overwriting what is already in the directory.
//!
//! Network safety: everything is pinned to 127.0.0.1 with TTL 1. Run it in
//! a network namespace (see tests/faults.rs).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::{keyfile, recv, spawn, terminate};
use mcsec::net::{self, InterfaceSpec};

/// xorshift64*, seeded: makes the file's bytes and picks the losses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let data: Vec<u8> = (0..len).map(|_| (rng.next() >> 56) as u8).collect();
    std::fs::write(dir.join(name), &data).unwrap();
    data
}

fn loopback_opts() -> net::Options {
    let mut opts = net::Options::default();
    opts.interface = Some(InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    opts.ttl = 1;
    opts
}

/// Forwards datagrams from `from` to `to`, dropping one in `one_in`
/// (seeded), until nothing has come for a second after the first one.
/// Returns (received, dropped).
fn lossy_relay(from: &str, to: &str, one_in: u64, seed: u64) -> thread::JoinHandle<(u64, u64)> {
    let rx = net::Receiver::open(from.parse().unwrap(), &loopback_opts()).unwrap();
    let tx = net::Sender::open(to.parse().unwrap(), &loopback_opts()).unwrap();
    thread::spawn(move || {
        rx.set_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut rng = Rng(seed | 1);
        let (mut received, mut dropped) = (0, 0);
        let mut buf = vec![0u8; 65_536];
        let mut last = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && (received == 0 || last.elapsed() < Duration::from_secs(1))
        {
            if let Ok(Some((n, _))) = rx.recv(&mut buf) {
                received += 1;
                last = Instant::now();
                if rng.next().is_multiple_of(one_in) {
                    dropped += 1;
                } else {
                    tx.send(&buf[..n]).unwrap();
                }
            }
        }
        (received, dropped)
    })
}

/// A test's folder with a key file `k` and an empty save directory `in`.
fn key_and_save_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let save = dir.path().join("in");
    std::fs::create_dir(&save).unwrap();
    (dir, key, save)
}

fn file_lines(out: &[String]) -> Vec<serde_json::Value> {
    out.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "file")
        .collect()
}

#[test]
fn a_file_arrives_whole_and_never_overwrites() {
    let (dir, key, save) = key_and_save_dir();
    // Already there: must survive.
    std::fs::write(save.join("photo.bin"), b"old").unwrap();
    let data = random_file(dir.path(), "photo.bin", 300_000, 7);
    let group = "239.255.95.1:46501";
    let receiver = recv(
        group,
        &key,
        &["--format", "json", "--save-dir", save.to_str().unwrap()],
    );
    let path = dir.path().join("photo.bin");
    let sender = spawn(
        &[
            "send",
            "-g",
            group,
            "-i",
            "127.0.0.1",
            "--pps",
            "5000",
            "--file",
            path.to_str().unwrap(),
        ],
        &key,
    );
    let (status, _, err) = sender.finish();
    assert!(status.success(), "{err:?}");
    let (out, stats, err) = terminate(receiver);
    let files = file_lines(&out);
    assert_eq!(files.len(), 1, "{out:?} {err:?}");
    assert_eq!(files[0]["name"], "photo.bin");
    assert_eq!(files[0]["len"], 300_000);
    let saved = files[0]["saved"].as_str().unwrap();
    assert_eq!(Path::new(saved), save.join("photo-1.bin"));
    assert_eq!(std::fs::read(saved).unwrap(), data);
    assert_eq!(std::fs::read(save.join("photo.bin")).unwrap(), b"old");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(saved).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // Three passes, one delivery; no temporary file left behind.
    assert_eq!(stats["files_completed"], 1);
    assert!(stats["file_extra"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(std::fs::read_dir(&save).unwrap().count(), 2);
}

/// `send --block-symbols` (hidden, for benchmarks) sets the blocks a file
/// is cut into; the file still arrives whole. Out of range is refused.
#[test]
fn block_symbols_sets_the_sender_s_blocks() {
    let (dir, key, save) = key_and_save_dir();
    let data = random_file(dir.path(), "small.bin", 100_000, 11);
    let path = dir.path().join("small.bin");
    let group = "239.255.95.7:46507";
    let receiver = recv(
        group,
        &key,
        &["--format", "json", "--save-dir", save.to_str().unwrap()],
    );
    let send = |k: &str| {
        spawn(
            &[
                "send",
                "-v",
                "-g",
                group,
                "-i",
                "127.0.0.1",
                "--pps",
                "5000",
                "--block-symbols",
                k,
                "--file",
                path.to_str().unwrap(),
            ],
            &key,
        )
        .finish()
    };
    let (status, _, err) = send("16");
    assert!(status.success(), "{err:?}");
    assert!(
        err.iter().any(|l| l.contains("blocks of up to 16 symbols")),
        "{err:?}"
    );
    let (out, _, err) = terminate(receiver);
    let files = file_lines(&out);
    assert_eq!(files.len(), 1, "{out:?} {err:?}");
    assert_eq!(
        std::fs::read(files[0]["saved"].as_str().unwrap()).unwrap(),
        data
    );
    for bad in ["0", "8193"] {
        let (status, _, err) = send(bad);
        assert_eq!(status.code(), Some(2), "{bad}: {err:?}");
    }
}

#[test]
fn a_file_completes_through_a_lossy_relay_and_without_save_dir_is_not_written() {
    let (dir, key, save) = key_and_save_dir();
    let data = random_file(dir.path(), "data.bin", 300_000, 11);
    let upstream = "239.255.95.2:46502";
    let downstream = "239.255.95.3:46503";
    // The relay forwards between two groups: both ends name the channel.
    let saving = recv(
        downstream,
        &key,
        &[
            "--format",
            "json",
            "--save-dir",
            save.to_str().unwrap(),
            "--channel",
            "files",
        ],
    );
    // Without --save-dir, in a working directory of its own: the place a
    // file would land if "not saved" meant "saved under its name here".
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.args(["recv", "-v", "-g", downstream, "-i", "127.0.0.1"])
        .args(["--format", "json", "--channel", "files", "-k"])
        .arg(&key)
        .current_dir(&cwd);
    let reporting = common::spawn_command(cmd);
    reporting.wait_err("receiving on");
    // One datagram in eight lost.
    let relay = lossy_relay(upstream, downstream, 8, 3);
    let path = dir.path().join("data.bin");
    let sender = spawn(
        &[
            "send",
            "-g",
            upstream,
            "-i",
            "127.0.0.1",
            "--pps",
            "5000",
            "--file",
            path.to_str().unwrap(),
            "--repeat",
            "2",
            "--channel",
            "files",
        ],
        &key,
    );
    let (status, _, err) = sender.finish();
    assert!(status.success(), "{err:?}");
    let (received, dropped) = relay.join().unwrap();
    assert!(dropped > 0 && received > 400, "{received} {dropped}");

    let (out, stats, err) = terminate(saving);
    let files = file_lines(&out);
    assert_eq!(files.len(), 1, "{out:?} {err:?}");
    assert_eq!(
        std::fs::read(files[0]["saved"].as_str().unwrap()).unwrap(),
        data
    );
    assert_eq!(stats["file_hash_mismatch"], 0);

    let (out, stats, _) = terminate(reporting);
    let files = file_lines(&out);
    assert_eq!(files.len(), 1, "{out:?}");
    assert_eq!(files[0]["saved"], serde_json::Value::Null);
    assert_eq!(stats["files_completed"], 1);
    // Only the saving receiver wrote anything, and only the file.
    assert_eq!(std::fs::read_dir(&save).unwrap().count(), 1);
    let written: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();
    assert!(written.is_empty(), "{written:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
}
