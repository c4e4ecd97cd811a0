//! Behaviour that had no test (issue 15): the sending defaults as the
//! datagrams carry them, files under default limits, `save()` edge cases,
//! the receive flags, IPv6 fragmentation and key rotation, each end to end
//! with the real binary.
//!
//! Network safety: the loopback tests pin every socket to 127.0.0.1 with
//! TTL 1 and groups in 239.255.0.0/16, like tests/cli_net.rs; run them in
//! a network namespace. The tests that need a veth pair make their own
//! namespace for their thread (unshare(CLONE_NEWNET)), with 198.18.0.0/24
//! and 2001:2::/64 (benchmarking ranges) on it: nothing they send can
//! leave it. Without the right to make one they say why and pass, unless
//! MCSEC_SKIP_NETNS=1 is set (as in tests/ipv6_netns.rs).

mod common;

use std::io::{IoSliceMut, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Proc, injector, keyfile, recv, spawn, terminate};
use mcsec::{Body, Keyring, Sealer};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

// ---------------------------------------------------------------------
// Helpers

/// Commands that build the private namespace: lo up with the IPv4
/// multicast route, and a veth pair `cov0` (198.18.0.1, 2001:2::1) and
/// `cov1` (198.18.0.2, 2001:2::2).
const NETNS_SETUP: &[&[&str]] = &[
    &["link", "set", "lo", "up"],
    &[
        "route",
        "add",
        "224.0.0.0/4",
        "dev",
        "lo",
        "src",
        "127.0.0.1",
    ],
    &[
        "link", "add", "cov0", "type", "veth", "peer", "name", "cov1",
    ],
    &["link", "set", "cov0", "up"],
    &["link", "set", "cov1", "up"],
    &["addr", "add", "198.18.0.1/24", "dev", "cov0"],
    &["addr", "add", "198.18.0.2/24", "dev", "cov1"],
    &["-6", "addr", "add", "2001:2::1/64", "dev", "cov0", "nodad"],
    &["-6", "addr", "add", "2001:2::2/64", "dev", "cov1", "nodad"],
];

/// Runs `f` on a thread of its own in a fresh network namespace built by
/// [`NETNS_SETUP`]; the processes it starts are in it too. `None` when
/// this host cannot make one and MCSEC_SKIP_NETNS is set; without it, a
/// test that cannot make its namespace fails.
fn in_netns<T: Send>(test: &str, f: impl FnOnce() -> T + Send) -> Option<T> {
    let may_skip = std::env::var_os("MCSEC_SKIP_NETNS").is_some();
    let skip = |why: String| {
        assert!(
            may_skip,
            "{why}: run the tests as root (as CI does), or set MCSEC_SKIP_NETNS=1 to skip {test}"
        );
        eprintln!("skipping {test} (MCSEC_SKIP_NETNS is set): {why}");
    };
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            // A network namespace is per thread: this one and what it
            // starts move, the rest of the test process stays.
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                skip(format!("unshare(CLONE_NEWNET) failed (not root?): {e}"));
                return None;
            }
            for args in NETNS_SETUP {
                let out = match Command::new("ip").args(*args).output() {
                    Ok(out) => out,
                    Err(e) => {
                        skip(format!("cannot run ip: {e}"));
                        return None;
                    }
                };
                let err = String::from_utf8_lossy(&out.stderr);
                if !out.status.success() && args.contains(&"veth") {
                    skip(format!("no veth here: {err}"));
                    return None;
                }
                assert!(out.status.success(), "ip {args:?}: {err}");
            }
            Some(f())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Starts `mcsec recv -v -g GROUP -i IFACE EXTRA -k KEY`, waits until it
/// listens.
fn recv_on(group: &str, iface: &str, key: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["recv", "-v", "-g", group, "-i", iface];
    args.extend_from_slice(extra);
    let p = spawn(&args, key);
    p.wait_err("receiving on");
    p
}

/// Runs `mcsec -v send ARGS -k KEY` to the end with `stdin`; returns its
/// stderr lines.
fn run_send(args: &[&str], key: &Path, stdin: &[u8]) -> Vec<String> {
    let mut all = vec!["-v", "send"];
    all.extend_from_slice(args);
    let mut p = spawn(&all, key);
    p.stdin.as_mut().unwrap().write_all(stdin).unwrap();
    let (status, _, err) = p.finish();
    assert!(status.success(), "send {args:?} failed: {err:?}");
    err
}

/// `mcsec send --file PATH` to `group` on loopback at `pps` datagrams a
/// second (paced only so that loopback does not overflow a receiver's
/// buffer on a loaded machine); its stderr lines.
fn send_file(group: &str, key: &Path, path: &Path, pps: &str) -> Vec<String> {
    let path = path.to_str().unwrap();
    let args = ["-g", group, "-i", "127.0.0.1", "--pps", pps, "--file", path];
    run_send(&args, key, b"")
}

/// Waits for a stdout line containing `needle`, keeping every line read
/// on the way (`Proc::wait_out` drops them).
fn keep_until(p: &Proc, needle: &str, kept: &mut Vec<String>) {
    let end = std::time::Instant::now() + common::DEADLINE;
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        let Ok(line) = p.out.recv_timeout(left) else {
            break;
        };
        let found = line.contains(needle);
        kept.push(line);
        if found {
            return;
        }
    }
    panic!("no stdout line with {needle:?}; got {kept:?}");
}

/// Parsed JSON lines of one `type`.
fn of_type(out: &[String], kind: &str) -> Vec<serde_json::Value> {
    out.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == kind)
        .collect()
}

fn payloads(out: &[String]) -> Vec<String> {
    of_type(out, "message")
        .iter()
        .map(|v| v["payload"].as_str().unwrap_or("<binary>").to_owned())
        .collect()
}

/// A socket of the test's own on `group`, joined on the interface with
/// address `if_v4` (IPv4) or index `if_v6` (IPv6), that reports each
/// datagram's TTL or hop limit.
fn ttl_socket(group: SocketAddr, if_v4: Ipv4Addr, if_v6: u32) -> Socket {
    let domain = if group.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    sock.set_reuse_address(true).unwrap();
    match group.ip() {
        IpAddr::V4(g) => {
            sock.bind(&SockAddr::from(group)).unwrap();
            sock.join_multicast_v4(&g, &if_v4).unwrap();
            setsockopt(&sock, sockopt::Ipv4RecvTtl, &true).unwrap();
        }
        IpAddr::V6(g) => {
            sock.set_only_v6(true).unwrap();
            sock.bind(&SockAddr::from(group)).unwrap();
            sock.join_multicast_v6(&g, if_v6).unwrap();
            setsockopt(&sock, sockopt::Ipv6RecvHopLimit, &true).unwrap();
        }
    }
    sock.set_read_timeout(Some(common::DEADLINE)).unwrap();
    sock
}

/// The next datagram's TTL (IPv4) or hop limit (IPv6), as the IP header
/// carried it.
fn next_ttl(sock: &Socket) -> i32 {
    let mut buf = [0u8; 2048];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!(libc::c_int);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("a datagram before the deadline");
    let ttl = msg.cmsgs().unwrap().find_map(|c| match c {
        ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => Some(t),
        _ => None,
    });
    ttl.expect("a TTL or hop limit control message")
}

fn index_of(iface: &str) -> u32 {
    nix::net::if_::if_nametoindex(iface).unwrap()
}

// ---------------------------------------------------------------------
// Network-safety defaults, as the datagrams carry them

/// `mcsec send` without `-t` sends with TTL 1: read from the IP header of
/// what arrives, with `-t 5` as the control that the reading is real.
#[test]
fn send_without_t_sends_ttl_1() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.98.1:46901";
    let sock = ttl_socket(g.parse().unwrap(), Ipv4Addr::LOCALHOST, 0);
    run_send(&["-g", g, "-i", "127.0.0.1", "-m", "x"], &key, b"");
    assert_eq!(next_ttl(&sock), 1, "the default TTL");
    run_send(
        &["-g", g, "-i", "127.0.0.1", "-m", "x", "-t", "5"],
        &key,
        b"",
    );
    assert_eq!(next_ttl(&sock), 5, "-t 5");
}

/// IPv6: without `-t`, hop limit 1, on the interface asked for (the
/// datagram arrives on the veth's other end), with `-t 3` as control.
#[test]
fn send_without_t_sends_hop_limit_1_on_the_interface_asked_for() {
    in_netns("send_without_t_sends_hop_limit_1", || {
        let dir = tempfile::tempdir().unwrap();
        let key = keyfile(dir.path(), "k");
        let g = "[ff15::98:2]:46902";
        let sock = ttl_socket(g.parse().unwrap(), Ipv4Addr::UNSPECIFIED, index_of("cov1"));
        let send = |extra: &[&str]| {
            let mut args = vec!["-g", g, "-i", "cov0", "--no-loop", "-m", "x"];
            args.extend_from_slice(extra);
            run_send(&args, &key, b"");
        };
        send(&[]);
        assert_eq!(next_ttl(&sock), 1, "the default hop limit");
        send(&["-t", "3"]);
        assert_eq!(next_ttl(&sock), 3, "-t 3");
    });
}

/// Loop is on by default (a receiver on the sending interface of the same
/// host hears the sender) and `--no-loop` turns it off. On a veth: on lo,
/// the device itself hands every datagram back, loop or not.
#[test]
fn loop_is_on_by_default_and_no_loop_clears_it() {
    in_netns("loop_is_on_by_default_and_no_loop_clears_it", || {
        let dir = tempfile::tempdir().unwrap();
        let key = keyfile(dir.path(), "k");
        let g = "239.255.98.3:46903";
        let r = recv_on(g, "198.18.0.1", &key, &["--format", "json"]);
        let sent = |extra: &[&str], text: &str| {
            let mut args = vec!["-g", g, "-i", "198.18.0.1", "-m", text];
            args.extend_from_slice(extra);
            let err = run_send(&args, &key, b"");
            // The sender did send it: the kernel took the datagram.
            assert!(
                err.iter()
                    .any(|l| l.contains("sent 1 messages in 1 datagrams")),
                "{err:?}"
            );
        };
        sent(&["--no-loop"], "not looped");
        sent(&[], "looped by default");
        sent(&["--no-loop", "--loop"], "looped again");
        let (out, stats, err) = terminate(r);
        assert_eq!(
            payloads(&out),
            ["looped by default", "looped again"],
            "{err:?}"
        );
        assert_eq!(stats["delivered"], 2);
    });
}

// ---------------------------------------------------------------------
// IPv6 fragmentation

/// A message larger than one IPv6 datagram goes out in fragments of at
/// most 1452 bytes (the receiver's default limit, so none is oversize)
/// and comes back whole.
#[test]
fn ipv6_message_larger_than_a_datagram_is_fragmented_and_reassembled() {
    in_netns("ipv6_fragmentation", || {
        let dir = tempfile::tempdir().unwrap();
        let key = keyfile(dir.path(), "k");
        let g = "[ff15::98:4]:46904";
        let r = recv_on(g, "cov1", &key, &["--format", "json"]);
        let line: String = (0..6000u32)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let input = format!("{line}\nafter\n");
        run_send(
            &["-g", g, "-i", "cov0", "--no-loop"],
            &key,
            input.as_bytes(),
        );
        let (out, stats, err) = terminate(r);
        let got = payloads(&out);
        let lens: Vec<usize> = got.iter().map(String::len).collect();
        assert!(got == [line.as_str(), "after"], "lengths {lens:?}; {err:?}");
        assert_eq!(stats["messages_reassembled"], 1, "{stats}");
        // 6000 bytes need at least five 1452-byte datagrams, plus "after".
        assert!(stats["frames_opened"].as_u64().unwrap() >= 6, "{stats}");
        assert_eq!(common::rejected(&stats), 0, "{stats}");
    });
}

/// A sealer for `key`'s sending key, and a frame maker.
fn seal(sealer: &mut Sealer, at_us: u64, body: &Body<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let n = sealer.seal_body(at_us, body, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn sealer_for(key: &Path, group: &str) -> Sealer {
    Sealer::new(
        Keyring::load(key).unwrap().sending_key(),
        &common::channel(group),
    )
    .unwrap()
}

/// Frames a test injects, both receivers of a pair hear: one with the
/// flag under test, one with the defaults as the control.
fn pair(group: &str, key: &Path, flag: &[&str]) -> (Proc, Proc) {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(flag);
    let flagged = recv(group, key, &args);
    let control = recv(group, key, &["--format", "json"]);
    (flagged, control)
}

/// xorshift64*, seeded: a file's bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
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

// ---------------------------------------------------------------------
// Files under default limits

/// A file larger than one RaptorQ source block at default settings (8192
/// symbols) arrives whole through a receiver with no file flags.
#[test]
fn a_file_of_several_blocks_arrives_at_default_settings() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let save = dir.path().join("in");
    std::fs::create_dir(&save).unwrap();
    let g = "239.255.98.5:46905";
    // 12 MiB: about 9300 symbols of a 1472-byte datagram.
    let data = random_bytes(12 << 20, 5);
    let path = dir.path().join("big.bin");
    std::fs::write(&path, &data).unwrap();
    let r = recv(
        g,
        &key,
        &["--format", "json", "--save-dir", save.to_str().unwrap()],
    );
    // Paced only so that loopback does not overflow the receiver's buffer
    // on a loaded machine.
    let err = send_file(g, &key, &path, "20000");
    let line = err
        .iter()
        .find(|l| l.contains("symbols of"))
        .unwrap_or_else(|| panic!("{err:?}"));
    let blocks: u64 = line
        .split("): ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(blocks > 1, "one block only: {line}");
    let (out, stats, err) = terminate(r);
    let files = of_type(&out, "file");
    assert_eq!(files.len(), 1, "{stats} {err:?}");
    assert_eq!(files[0]["len"], 12 << 20);
    let saved = files[0]["saved"].as_str().unwrap();
    assert!(
        std::fs::read(saved).unwrap() == data,
        "the saved bytes differ"
    );
    assert_eq!(stats["files_completed"], 1);
    assert_eq!(stats["file_hash_mismatch"], 0);
}

/// A file over the receiver's --max-file is refused and counted, and
/// nothing is saved; a receiver with the default limit takes it.
#[test]
fn a_file_over_max_file_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let save = dir.path().join("in");
    std::fs::create_dir(&save).unwrap();
    let g = "239.255.98.6:46906";
    let path = dir.path().join("f.bin");
    std::fs::write(&path, random_bytes(300_000, 6)).unwrap();
    let (limited, control) = pair(
        g,
        &key,
        &["--max-file", "100k", "--save-dir", save.to_str().unwrap()],
    );
    send_file(g, &key, &path, "5000");
    let (out, stats, err) = terminate(limited);
    assert!(of_type(&out, "file").is_empty(), "{out:?}");
    assert_eq!(stats["files_completed"], 0, "{stats}");
    assert!(stats["file_oversize"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        err.iter().any(|l| l.contains("file oversize")),
        "the counter in words: {err:?}"
    );
    assert_eq!(std::fs::read_dir(&save).unwrap().count(), 0);
    let (out, stats, _) = terminate(control);
    assert_eq!(of_type(&out, "file").len(), 1, "{stats}");
}

/// A partial file that waits longer than --file-timeout for its next
/// symbol is dropped and counted: the rest of its symbols, arriving
/// later, do not complete it. The same symbols complete the file on a
/// receiver with the default (60 s) timeout.
#[test]
fn a_partial_file_is_dropped_after_file_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.98.7:46907";
    let mut sealer = sealer_for(&key, g);
    let data = random_bytes(60_000, 7);
    let encoder =
        mcsec::files::FileEncoder::new(0, "part.bin", &data, sealer.max_plaintext(), 1 << 20)
            .unwrap();
    let k = usize::try_from(encoder.source_symbols()).unwrap();
    assert!(k > 8, "{k}");
    // Source symbols first, then repair.
    let frames: Vec<Vec<u8>> = encoder
        .pass(0, 50)
        .map(|s| seal(&mut sealer, mcsec::now_us(), &encoder.body(&s)))
        .collect();
    let (timed, control) = pair(g, &key, &["--file-timeout", "1s"]);
    let inj = injector(g);
    for f in &frames[..k / 2] {
        inj.send(f).unwrap();
    }
    std::thread::sleep(Duration::from_millis(2500));
    // Fewer than k symbols: alone, they cannot make the file.
    for f in &frames[k / 2..k + 2] {
        inj.send(f).unwrap();
    }
    let (out, stats, _) = terminate(control);
    assert_eq!(of_type(&out, "file").len(), 1, "{stats}");
    let (out, stats, _) = terminate(timed);
    assert!(of_type(&out, "file").is_empty(), "{out:?}");
    assert_eq!(stats["files_completed"], 0, "{stats}");
    assert!(stats["file_timed_out"].as_u64().unwrap() >= 1, "{stats}");
}

// ---------------------------------------------------------------------
// save(): a directory it cannot write, links at the target name

/// Wraps `recv` so that root loses the capabilities that let it write
/// into a read-only directory; as another user, plain `recv`.
fn recv_without_dac_override(group: &str, key: &Path, extra: &[&str], probe: &Path) -> Proc {
    let can_override = std::fs::write(probe.join(".probe"), b"").is_ok();
    let mut cmd = if can_override {
        std::fs::remove_file(probe.join(".probe")).unwrap();
        let mut c = Command::new("setpriv");
        c.args([
            "--bounding-set",
            "-dac_override,-dac_read_search",
            "--",
            BIN,
        ]);
        c
    } else {
        Command::new(BIN)
    };
    cmd.args(["recv", "-v", "-g", group, "-i", "127.0.0.1"])
        .args(extra)
        .arg("-k")
        .arg(key);
    let p = common::spawn_command(cmd);
    p.wait_err("receiving on");
    p
}

/// A --save-dir that cannot be written fails that file, with an error on
/// stderr; the receiver keeps receiving and ends normally.
#[test]
fn a_read_only_save_dir_fails_the_file_not_the_receiver() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let save = dir.path().join("ro");
    std::fs::create_dir(&save).unwrap();
    std::fs::set_permissions(&save, std::fs::Permissions::from_mode(0o555)).unwrap();
    let g = "239.255.98.8:46908";
    let path = dir.path().join("f.bin");
    std::fs::write(&path, random_bytes(20_000, 8)).unwrap();
    let r = recv_without_dac_override(
        g,
        &key,
        &["--format", "json", "--save-dir", save.to_str().unwrap()],
        &save,
    );
    send_file(g, &key, &path, "5000");
    run_send(&["-g", g, "-i", "127.0.0.1", "-m", "still here"], &key, b"");
    let mut out = Vec::new();
    keep_until(&r, "still here", &mut out);
    let (rest, stats, err) = terminate(r);
    out.extend(rest);
    // Files are stored as they arrive: with nowhere to store it, the file
    // fails, once, with the reason; the receiver goes on.
    assert!(of_type(&out, "file").is_empty(), "{out:?}");
    let errors: Vec<_> = err
        .iter()
        .filter(|l| l.starts_with("error: saving") && l.contains("f.bin"))
        .collect();
    assert_eq!(errors.len(), 1, "{err:?}");
    assert!(errors[0].contains("denied"), "{err:?}");
    assert_eq!(payloads(&out), ["still here"], "{err:?}");
    assert_eq!(stats["delivered"], 1);
    assert_eq!(stats["file_storage_errors"], 1, "{stats}");
    std::fs::set_permissions(&save, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(std::fs::read_dir(&save).unwrap().count(), 0);
}

/// A --save-dir others can write (sticky bit or not) is refused before
/// anything is received: an error naming the mode, a hint, exit status 2.
#[test]
fn a_save_dir_others_can_write_is_refused_at_startup() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let save = dir.path().join("shared");
    std::fs::create_dir(&save).unwrap();
    for mode in [0o777, 0o1777, 0o770] {
        std::fs::set_permissions(&save, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut child = Command::new(BIN)
            .args(["recv", "-g", "239.255.98.10:46910", "-i", "127.0.0.1", "-k"])
            .arg(&key)
            .arg("--save-dir")
            .arg(&save)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("recv started with --save-dir mode {mode:o}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(2), "{mode:o}: {err}");
        assert!(err.contains("is writable by"), "{mode:o}: {err}");
        assert!(err.contains("hint: chmod go-w"), "{mode:o}: {err}");
    }
}

/// A symlink, or a dangling one, at the target name is never followed and
/// never replaced: the file is saved under a numbered name beside it.
#[test]
fn links_at_the_target_name_are_neither_followed_nor_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let save = dir.path().join("in");
    let src = dir.path().join("src");
    std::fs::create_dir(&save).unwrap();
    std::fs::create_dir(&src).unwrap();
    let target = dir.path().join("target.txt");
    std::fs::write(&target, b"keep").unwrap();
    let nowhere = dir.path().join("nowhere.bin");
    std::os::unix::fs::symlink(&target, save.join("a.bin")).unwrap();
    std::os::unix::fs::symlink(&nowhere, save.join("b.bin")).unwrap();
    let g = "239.255.98.9:46909";
    let r = recv(
        g,
        &key,
        &["--format", "json", "--save-dir", save.to_str().unwrap()],
    );
    let mut sent = Vec::new();
    let mut out = Vec::new();
    for (name, seed) in [("a.bin", 91), ("b.bin", 92)] {
        let data = random_bytes(20_000, seed);
        let path = src.join(name);
        std::fs::write(&path, &data).unwrap();
        send_file(g, &key, &path, "5000");
        keep_until(&r, &format!("\"name\":\"{name}\""), &mut out);
        sent.push(data);
    }
    let (rest, _, err) = terminate(r);
    out.extend(rest);
    let saved: Vec<String> = of_type(&out, "file")
        .iter()
        .map(|f| f["saved"].as_str().unwrap_or("").to_owned())
        .collect();
    let expected = [save.join("a-1.bin"), save.join("b-1.bin")];
    assert_eq!(saved.len(), 2, "{out:?} {err:?}");
    for ((got, want), data) in saved.iter().zip(&expected).zip(&sent) {
        assert_eq!(Path::new(got), want);
        assert!(std::fs::read(want).unwrap() == *data, "{want:?} differs");
    }
    // The links are still links, to where they pointed; nothing was
    // written through them.
    assert_eq!(std::fs::read_link(save.join("a.bin")).unwrap(), target);
    assert_eq!(std::fs::read_link(save.join("b.bin")).unwrap(), nowhere);
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert!(!nowhere.exists() && nowhere.symlink_metadata().is_err());
    // Two links, two files, no temporary file left.
    assert_eq!(std::fs::read_dir(&save).unwrap().count(), 4);
}

// ---------------------------------------------------------------------
// Receive flags, end to end

/// --max-skew 2s: a frame stamped 5 s in the past is stale (and the future
/// bound drops to 2 s with it); --max-future-skew 1s: one stamped 1.5 s
/// ahead is stale; one stamped now passes both. The defaults (30 s past,
/// 5 s future) take all three.
#[test]
fn max_skew_and_max_future_skew_bound_each_side() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.98.10:46910";
    let (past, control) = pair(g, &key, &["--max-skew", "2s"]);
    let future = recv(g, &key, &["--format", "json", "--max-future-skew", "1s"]);
    let mut sealer = sealer_for(&key, g);
    let inj = injector(g);
    let now = mcsec::now_us();
    for (at, text) in [
        (now - 5_000_000, "past"),
        (now + 1_500_000, "future"),
        (mcsec::now_us(), "now"),
    ] {
        inj.send(&seal(&mut sealer, at, &Body::Data(text.as_bytes())))
            .unwrap();
    }
    let (out, stats, _) = terminate(past);
    assert_eq!(payloads(&out), ["future", "now"]);
    assert_eq!(
        (
            &stats["stale"],
            &stats["stale_past"],
            &stats["stale_future"]
        ),
        (&1.into(), &1.into(), &0.into()),
        "{stats}"
    );
    let (out, stats, _) = terminate(future);
    assert_eq!(payloads(&out), ["past", "now"]);
    assert_eq!(
        (
            &stats["stale"],
            &stats["stale_past"],
            &stats["stale_future"]
        ),
        (&1.into(), &0.into(), &1.into()),
        "{stats}"
    );
    let (out, stats, _) = terminate(control);
    assert_eq!(payloads(&out), ["past", "future", "now"]);
    assert_eq!(stats["stale"], 0, "{stats}");
}

/// --reassembly-timeout 1s: a message whose last fragment comes 2.5 s
/// after the others is dropped and counted; the default (10 s) waits.
#[test]
fn reassembly_timeout_drops_a_slow_message() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.98.11:46911";
    let (timed, control) = pair(g, &key, &["--reassembly-timeout", "1s"]);
    let mut sealer = sealer_for(&key, g);
    let message = random_bytes(3000, 11);
    let pieces: Vec<Body<'_>> = mcsec::reassembly::fragments(1, &message, sealer.max_plaintext())
        .unwrap()
        .collect();
    assert_eq!(pieces.len(), 3);
    let inj = injector(g);
    for (i, piece) in pieces.iter().enumerate() {
        if i == pieces.len() - 1 {
            std::thread::sleep(Duration::from_millis(2500));
        }
        inj.send(&seal(&mut sealer, mcsec::now_us(), piece))
            .unwrap();
    }
    let (out, stats, _) = terminate(control);
    assert_eq!(of_type(&out, "message").len(), 1, "{stats}");
    assert_eq!(stats["messages_reassembled"], 1, "{stats}");
    let (out, stats, _) = terminate(timed);
    assert!(of_type(&out, "message").is_empty(), "{out:?}");
    assert!(
        stats["fragment_timed_out"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(stats["messages_reassembled"], 0, "{stats}");
}

/// --stats-interval 1s prints the counters on stderr while running: in
/// a 3.5 s run, at least twice before the final line. Without it, only
/// the final line.
#[test]
fn stats_interval_prints_counters_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.98.12:46912";
    let periodic = recv(g, &key, &["--stats-interval", "1s", "--duration", "3500ms"]);
    let quiet = recv(g, &key, &["--duration", "3500ms"]);
    run_send(&["-g", g, "-i", "127.0.0.1", "-m", "x"], &key, b"");
    let counted = |p: Proc| {
        let (status, out, err) = p.finish();
        assert!(status.success(), "{err:?}");
        assert_eq!(out, ["x"]);
        err.into_iter()
            .filter(|l| l.contains(" delivered; "))
            .collect::<Vec<_>>()
    };
    let lines = counted(periodic);
    assert!(lines.len() >= 3, "{lines:?}");
    assert!(
        lines.last().unwrap().starts_with("1 message delivered"),
        "{lines:?}"
    );
    let lines = counted(quiet);
    assert_eq!(
        lines,
        ["1 message delivered; 0 of 1 frames lost (0.0%); nothing dropped"]
    );
}

/// --max-datagram 200: a 300-byte frame is counted oversize, a 150-byte
/// one delivered; the default limit takes both.
#[test]
fn max_datagram_counts_larger_frames_oversize() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.98.13:46913";
    let (limited, control) = pair(g, &key, &["--max-datagram", "200"]);
    let mut sealer = sealer_for(&key, g);
    let inj = injector(g);
    let big = seal(&mut sealer, mcsec::now_us(), &Body::Data(&[b'b'; 241]));
    let small = seal(&mut sealer, mcsec::now_us(), &Body::Data(&[b's'; 92]));
    assert_eq!((big.len(), small.len()), (300, 150));
    inj.send(&big).unwrap();
    inj.send(&small).unwrap();
    let (out, stats, _) = terminate(limited);
    assert_eq!(payloads(&out), ["s".repeat(92)]);
    assert_eq!(stats["oversize"], 1, "{stats}");
    let (out, stats, _) = terminate(control);
    assert_eq!(payloads(&out), ["b".repeat(241), "s".repeat(92)]);
    assert_eq!(stats["oversize"], 0, "{stats}");
}

// ---------------------------------------------------------------------
// Key rotation

/// After `mcsec key rotate`, `send` seals under the new (last) key; a
/// receiver with old and new keys accepts senders with either file; a
/// receiver with only the old key counts the new sender's frames as
/// unknown_key.
#[test]
fn key_rotation_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let old = keyfile(dir.path(), "old.key");
    let new = dir.path().join("new.key");
    std::fs::copy(&old, &new).unwrap();
    let rotated = Command::new(BIN)
        .args(["key", "rotate"])
        .arg(&new)
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{rotated:?}");
    let old_ring = Keyring::load(&old).unwrap();
    let new_ring = Keyring::load(&new).unwrap();
    let old_id = old_ring.sending_key().id();
    let new_id = new_ring.sending_key().id();
    assert_ne!(old_id, new_id);
    let ids: Vec<_> = new_ring.iter().map(|k| k.id()).collect();
    assert_eq!(ids, [old_id, new_id], "old first, new last");

    let g = "239.255.98.14:46914";
    let both = recv(g, &new, &["--format", "json"]);
    let only_old = recv(g, &old, &["--format", "json"]);
    // The test's own socket reads the key ID each frame was sealed under.
    let mut opts = mcsec::net::Options::default();
    opts.interface = Some(mcsec::net::InterfaceSpec::Addr(IpAddr::V4(
        Ipv4Addr::LOCALHOST,
    )));
    let tap = mcsec::net::Receiver::open(g.parse().unwrap(), &opts).unwrap();
    tap.set_timeout(Some(common::DEADLINE)).unwrap();
    let key_id_of_next = || {
        let mut buf = [0u8; 2048];
        let (n, _) = tap.recv(&mut buf).unwrap().expect("a frame");
        mcsec::frame::peek_header(&buf[..n]).unwrap().key_id
    };
    run_send(&["-g", g, "-i", "127.0.0.1", "-m", "from old"], &old, b"");
    assert_eq!(key_id_of_next(), old_id);
    run_send(&["-g", g, "-i", "127.0.0.1", "-m", "from new"], &new, b"");
    assert_eq!(key_id_of_next(), new_id, "send seals under the last key");

    let (out, stats, _) = terminate(both);
    assert_eq!(payloads(&out), ["from old", "from new"]);
    assert_eq!(common::rejected(&stats), 0, "{stats}");
    let (out, stats, _) = terminate(only_old);
    assert_eq!(payloads(&out), ["from old"]);
    assert_eq!(stats["unknown_key"], 1, "{stats}");
    assert_eq!(common::rejected(&stats), 1, "{stats}");
}

/// --stats-interval with --format json: one `{"type":"interval"}` line per
/// interval on stdout, counting that interval alone (as `iperf -i` does),
/// not the running totals. A ticker of 40 messages at 20 a second: no
/// interval of half a second holds more than about 10 of them, and the
/// intervals add up to the total (less the part after the last report).
#[test]
fn stats_intervals_count_each_interval_alone() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.98.14:46914";
    let receiver = recv(
        g,
        &key,
        &[
            "--format",
            "json",
            "--stats-interval",
            "500ms",
            "--duration",
            "3s",
        ],
    );
    let (status, _, err) = spawn(
        &[
            "send",
            "-g",
            g,
            "-i",
            "127.0.0.1",
            "-m",
            "tick",
            "--interval",
            "50ms",
            "-n",
            "40",
        ],
        &key,
    )
    .finish();
    assert!(status.success(), "{err:?}");
    let (status, out, err) = receiver.finish();
    assert!(status.success(), "{err:?}");
    let values: Vec<serde_json::Value> = out
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let intervals: Vec<&serde_json::Value> =
        values.iter().filter(|v| v["type"] == "interval").collect();
    let total = values.iter().find(|v| v["type"] == "stats").expect("stats")["delivered"]
        .as_u64()
        .unwrap();
    assert_eq!(total, 40, "{out:?}");
    assert!(intervals.len() >= 4, "{out:?}");
    let per: Vec<u64> = intervals
        .iter()
        .map(|v| v["delivered"].as_u64().unwrap())
        .collect();
    assert!(
        per.iter().all(|n| *n <= 16),
        "totals, not intervals: {per:?}"
    );
    let sum: u64 = per.iter().sum();
    assert!(sum <= total && sum + 16 >= total, "{per:?} against {total}");
    for v in &intervals {
        assert!(v["seconds"].as_f64().unwrap() >= 0.5, "{v}");
        assert!(v["frames_received"].is_u64() && v["lost"] == 0, "{v}");
    }
}

/// --metrics on recv and send: the Prometheus text format at /metrics,
/// every counter of the JSON stats line with HELP and TYPE lines, values
/// that match what happened, and 404 elsewhere.
#[test]
fn metrics_serve_every_counter() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.98.15:46915";
    let (receiver, rx_metrics) = common::recv_with_metrics(g, &key, &["--format", "json"]);
    let mut sender = spawn(
        &[
            "send",
            "-v",
            "-g",
            g,
            "-i",
            "127.0.0.1",
            "--metrics",
            "127.0.0.1:0",
        ],
        &key,
    );
    let tx_metrics = common::metrics_addr(&sender);
    sender
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"one\ntwo\nthree\n")
        .unwrap();
    receiver.wait_out("three");
    std::thread::sleep(Duration::from_millis(600));
    let (status, body) = common::http_get(&tx_metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(common::metric(&body, "messages"), Some(3), "{body}");
    assert_eq!(common::metric(&body, "datagrams"), Some(3), "{body}");
    let (status, body) = common::http_get(&rx_metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(common::metric(&body, "delivered"), Some(3), "{body}");
    assert_eq!(common::metric(&body, "frames_opened"), Some(3), "{body}");
    assert_eq!(common::metric(&body, "auth_failed"), Some(0), "{body}");
    assert!(body.contains("# HELP mcsec_lost "), "{body}");
    assert!(body.contains("# TYPE mcsec_lost counter"), "{body}");
    let (status, _) = common::http_get(&rx_metrics, "/other");
    assert!(status.contains("404"), "{status}");
    drop(sender.stdin.take());
    let (status, _, err) = sender.finish();
    assert!(status.success(), "{err:?}");
    let (_, stats, _) = terminate(receiver);
    // Every counter of the stats line is served; the per-sender list is
    // not (metrics stay totals: sender IDs are random per session).
    for (name, _) in stats.as_object().unwrap() {
        if matches!(name.as_str(), "type" | "senders" | "senders_total") {
            continue;
        }
        assert!(
            common::metric(&body, name).is_some(),
            "{name} not served: {body}"
        );
    }
}
