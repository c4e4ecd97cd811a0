//! Running mcsec as an operator or a service manager does (issue #12):
//! honest exit statuses, `-q`, SIGHUP, environment variables, sd_notify.
//!
//! Network safety: every command gets `-i 127.0.0.1` and TTL 1, every group
//! is in 239.255.0.0/16, and the tests refuse to run outside a network
//! namespace that has only `lo` (as `.ci/run` makes).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

mod common;

use common::{Proc, keyfile, recv, signal, spawn};

fn spawn_send(group: &str, key: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["send", "-g", group, "-i", "127.0.0.1", "-t", "1"];
    args.extend_from_slice(extra);
    spawn(&args, key)
}

fn send_lines(group: &str, key: &Path, stdin: &[u8]) {
    let mut p = spawn_send(group, key, &[]);
    p.stdin.as_mut().unwrap().write_all(stdin).unwrap();
    let (status, _, err) = p.finish();
    assert!(status.success(), "send failed: {err:?}");
}

fn stats(out: &[String]) -> serde_json::Value {
    out.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "stats")
        .expect("a stats line")
}

#[test]
fn quiet_recv_that_gets_its_count_prints_nothing_on_stderr() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.120.1:46201";
    // No readiness line under -q: a ticker that goes on until it is heard.
    let r = spawn(
        &["recv", "-q", "-g", g, "-i", "127.0.0.1", "--count", "2"],
        &key,
    );
    let ticker = spawn_send(
        g,
        &key,
        &[
            "-q",
            "--message",
            "tick",
            "--interval",
            "100ms",
            "--count",
            "150",
        ],
    );
    let (status, out, err) = r.finish();
    assert!(status.success(), "{err:?}");
    assert_eq!(out, ["tick", "tick"]);
    assert!(err.is_empty(), "-q printed {err:?}");
    signal(&ticker, "TERM");
    let (status, _, err) = ticker.finish();
    assert!(status.success(), "{err:?}");
    assert!(err.is_empty(), "send -q printed {err:?}");
}

#[test]
fn recv_count_cut_short_by_duration_exits_3_and_says_how_many() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.120.2:46202";
    let args = [
        "recv",
        "-q",
        "-g",
        g,
        "-i",
        "127.0.0.1",
        "--count",
        "5",
        "--duration",
        "500ms",
    ];
    let (status, out, err) = spawn(&args, &key).finish();
    assert_eq!(status.code(), Some(3), "{err:?}");
    assert!(out.is_empty(), "{out:?}");
    // Under -q, the error alone: no summary line.
    assert_eq!(
        err,
        ["error: 0 of 5 messages (--count) arrived: --duration 500ms ended"]
    );
    // Without --count, the same --duration is a success.
    let no_count = [
        "recv",
        "-q",
        "-g",
        g,
        "-i",
        "127.0.0.1",
        "--duration",
        "200ms",
    ];
    let (status, _, err) = spawn(&no_count, &key).finish();
    assert!(status.success(), "{err:?}");
}

#[test]
fn recv_count_cut_short_by_sigterm_exits_3_with_its_counters() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.120.3:46203";
    let r = recv(g, &key, &["--count", "5", "--format", "json"]);
    send_lines(g, &key, b"one\n");
    r.wait_out("\"one\"");
    signal(&r, "TERM");
    let (status, out, err) = r.finish();
    assert_eq!(status.code(), Some(3), "{err:?}");
    // The counters are not lost: json stats and the summary line.
    assert_eq!(stats(&out)["delivered"], 1);
    assert!(
        err.iter().any(|l| l.contains("1 message delivered")),
        "{err:?}"
    );
    assert_eq!(
        err.last().map(String::as_str),
        Some("error: 1 of 5 messages (--count) arrived: stopped by a signal")
    );
}

#[test]
fn sighup_reloads_and_never_ends_recv_or_send() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.120.4:46204";
    let r = recv(g, &key, &["--count", "2", "--format", "json"]);
    send_lines(g, &key, b"before\n");
    r.wait_out("\"before\"");
    signal(&r, "HUP");
    r.wait_err("reloaded");
    // A repeating sender gets SIGHUP too, and goes on.
    let mut ticker = spawn_send(
        g,
        &key,
        &[
            "-v",
            "--message",
            "after",
            "--interval",
            "100ms",
            "--count",
            "150",
        ],
    );
    ticker.wait_err("as sender");
    signal(&ticker, "HUP");
    ticker.wait_err("reloaded");
    let (status, out, err) = r.finish();
    assert!(status.success(), "{err:?}");
    let st = stats(&out);
    assert_eq!(st["delivered"], 2, "{out:?}");
    assert!(out.iter().any(|l| l.contains("\"after\"")), "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        ticker.child.try_wait().unwrap().is_none(),
        "SIGHUP ended send"
    );
    signal(&ticker, "TERM");
    let (status, _, err) = ticker.finish();
    assert!(status.success(), "{err:?}");
}

/// `mcsec ARGS` with `env` as its only MCSEC_ settings.
fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::spawn_command(cmd)
}

#[test]
fn a_unit_can_configure_send_and_recv_with_environment_variables_alone() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let key_s = key.to_str().unwrap();
    let env = [
        ("MCSEC_KEY", key_s),
        ("MCSEC_GROUP", "239.255.120.5:46205"),
        ("MCSEC_INTERFACE", "127.0.0.1"),
        ("MCSEC_CHANNEL", "env-ticker"),
        ("MCSEC_TTL", "1"),
    ];
    let r = spawn_env(&["recv", "-v", "--count", "1", "--format", "json"], &env);
    let line = r.wait_err("receiving on");
    assert!(
        line.contains("239.255.120.5:46205") && line.contains("env-ticker"),
        "{line}"
    );
    let mut ticker = spawn_env(
        &[
            "send",
            "--message",
            "from env",
            "--interval",
            "100ms",
            "--count",
            "150",
        ],
        &env,
    );
    let (status, out, err) = r.finish();
    assert!(status.success(), "{err:?}");
    assert!(out.iter().any(|l| l.contains("\"from env\"")), "{out:?}");
    let _ = ticker.child.kill();
    // A flag still wins over its variable: another channel hears nothing.
    let r = spawn_env(
        &[
            "recv",
            "--channel",
            "other",
            "--duration",
            "1s",
            "--format",
            "json",
        ],
        &env,
    );
    let mut ticker2 = spawn_env(
        &[
            "send",
            "--message",
            "from env",
            "--interval",
            "100ms",
            "--count",
            "150",
        ],
        &env,
    );
    let (status, out, err) = r.finish();
    assert!(status.success(), "{err:?}");
    assert_eq!(stats(&out)["delivered"], 0, "{out:?}");
    assert!(stats(&out)["auth_failed"].as_u64().unwrap() > 0, "{out:?}");
    let _ = ticker2.child.kill();
}

/// A fake systemd: a datagram socket the child is told about through
/// NOTIFY_SOCKET; returns the messages received within `wait` that
/// satisfy `until` (or all of them at the deadline).
fn notifications(
    socket: &std::os::unix::net::UnixDatagram,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let end = std::time::Instant::now() + common::DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < end && !until(&got) {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

fn count(got: &[String], what: &str) -> usize {
    got.iter().filter(|m| m.lines().any(|l| l == what)).count()
}

#[test]
fn recv_and_send_tell_systemd_they_are_ready_and_alive() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let key_s = key.to_str().unwrap();
    let path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    let path_s = path.to_str().unwrap();
    let g = "239.255.120.6:46206";
    let base = ["-g", g, "-i", "127.0.0.1", "-k", key_s];
    // recv, with a 400 ms watchdog: ready once listening, then a ping at
    // least every 200 ms.
    let r = spawn_env(
        &[&["recv", "-q"][..], &base].concat(),
        &[("NOTIFY_SOCKET", path_s), ("WATCHDOG_USEC", "400000")],
    );
    let got = notifications(&socket, |got| count(got, "WATCHDOG=1") >= 4);
    assert!(
        got.first()
            .is_some_and(|m| m.starts_with("READY=1\nSTATUS=receiving on 239.255.120.6:46206")),
        "{got:?}"
    );
    assert!(count(&got, "WATCHDOG=1") >= 4, "{got:?}");
    signal(&r, "TERM");
    let got = notifications(&socket, |got| count(got, "STOPPING=1") == 1);
    assert_eq!(count(&got, "STOPPING=1"), 1, "{got:?}");
    let (status, _, err) = r.finish();
    assert!(status.success(), "{err:?}");

    // send reading lines from a quiet stdin: its wait for input pings too.
    let mut s = spawn_env(
        &[&["send", "-q"][..], &base].concat(),
        &[("NOTIFY_SOCKET", path_s), ("WATCHDOG_USEC", "400000")],
    );
    let got = notifications(&socket, |got| count(got, "WATCHDOG=1") >= 4);
    assert!(
        got.first()
            .is_some_and(|m| m.starts_with("READY=1\nSTATUS=sending to")),
        "{got:?}"
    );
    assert!(count(&got, "WATCHDOG=1") >= 4, "{got:?}");
    drop(s.stdin.take());
    let (status, _, err) = s.finish();
    assert!(status.success(), "{err:?}");
    let got = notifications(&socket, |got| count(got, "STOPPING=1") == 1);
    assert_eq!(count(&got, "STOPPING=1"), 1, "{got:?}");

    // No watchdog asked for (or one meant for another PID): READY=1 alone.
    let r = spawn_env(
        &[&["recv", "-q", "--duration", "1s"][..], &base].concat(),
        &[
            ("NOTIFY_SOCKET", path_s),
            ("WATCHDOG_USEC", "400000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    let (status, _, _) = r.finish();
    assert!(status.success());
    let got = notifications(&socket, |got| count(got, "STOPPING=1") == 1);
    assert_eq!(count(&got, "READY=1"), 1, "{got:?}");
    assert_eq!(count(&got, "WATCHDOG=1"), 0, "{got:?}");
}

#[test]
fn an_abstract_notify_socket_works_too() {
    use std::os::linux::net::SocketAddrExt;
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let name = format!("mcsec-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    let at = format!("@{name}");
    let r = spawn_env(
        &[
            "recv",
            "-q",
            "-g",
            "239.255.120.7:46207",
            "-i",
            "127.0.0.1",
            "--duration",
            "300ms",
            "-k",
            key.to_str().unwrap(),
        ],
        &[("NOTIFY_SOCKET", &at)],
    );
    let got = notifications(&socket, |got| count(got, "STOPPING=1") == 1);
    assert_eq!(count(&got, "READY=1"), 1, "{got:?}");
    assert!(r.finish().0.success());
}

#[test]
fn frames_under_an_unknown_key_are_explained_once_with_key_and_source() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let other = keyfile(dir.path(), "other");
    // The key ID is the second field of the key line.
    let text = std::fs::read_to_string(&other).unwrap();
    let id = text
        .lines()
        .find(|l| l.starts_with("mcsec-key-"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    let g = "239.255.120.9:46209";
    let r = recv(g, &key, &["--duration", "4s"]);
    let p = spawn_send(
        g,
        &other,
        &[
            "-q",
            "--message",
            "x",
            "--interval",
            "10ms",
            "--count",
            "50",
        ],
    );
    let (status, _, err) = p.finish();
    assert!(status.success(), "{err:?}");
    let (_, _, err) = r.finish();
    let warnings: Vec<&String> = err.iter().filter(|l| l.contains("unknown_key")).collect();
    assert_eq!(warnings.len(), 1, "{err:#?}");
    let w = warnings[0];
    assert!(
        w.contains(&format!("key {id} from 127.0.0.1 is not in")),
        "{w}"
    );
    assert!(w.contains("an old or wrong key file?"), "{w}");
    // The counters still count all 50.
    assert!(err.iter().any(|l| l.contains("50 unknown key")), "{err:#?}");
}

#[test]
fn send_ends_with_a_summary_in_text_or_json() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.120.10:46210";
    let common = ["--message", "hello", "--count", "3"];
    // Text: one line on stderr, nothing on stdout.
    let (status, out, err) = spawn_send(g, &key, &common).finish();
    assert!(status.success(), "{err:?}");
    assert!(out.is_empty(), "{out:?}");
    let line: Vec<&String> = err.iter().filter(|l| l.starts_with("sent ")).collect();
    assert_eq!(line.len(), 1, "{err:?}");
    assert!(
        line[0].contains("sent 3 messages in 3 datagrams (")
            && line[0].contains(" bytes) in ")
            && line[0].contains("datagrams/s"),
        "{}",
        line[0]
    );
    // -q: no summary.
    let mut quiet = vec!["-q"];
    quiet.extend_from_slice(&common);
    let (status, _, err) = spawn_send(g, &key, &quiet).finish();
    assert!(status.success());
    assert!(err.iter().all(|l| !l.starts_with("sent ")), "{err:?}");
    // JSON: one object on stdout.
    let mut json = vec!["--format", "json"];
    json.extend_from_slice(&common);
    let (status, out, err) = spawn_send(g, &key, &json).finish();
    assert!(status.success(), "{err:?}");
    assert_eq!(out.len(), 1, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(v["type"], "summary");
    assert_eq!(v["messages"], 3);
    assert_eq!(v["datagrams"], 3);
    assert!(v["bytes"].as_u64().unwrap() > 3 * 56, "{v}");
    assert!(v["seconds"].as_f64().is_some() && v["bits_per_sec"].as_f64().is_some());
}

#[test]
fn chat_tells_systemd_it_is_ready_alive_and_stopping() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    let mut c = spawn_env(
        &[
            "chat",
            "-q",
            "-g",
            "239.255.120.11:46211",
            "-i",
            "127.0.0.1",
            "--nick",
            "ops",
            "-k",
            key.to_str().unwrap(),
        ],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let got = notifications(&socket, |got| count(got, "WATCHDOG=1") >= 4);
    assert!(
        got.first().is_some_and(
            |m| m.starts_with("READY=1\nSTATUS=chatting on 239.255.120.11:46211 as ops")
        ),
        "{got:?}"
    );
    assert!(count(&got, "WATCHDOG=1") >= 4, "{got:?}");
    // Input ends (Ctrl-D): chat leaves, telling systemd.
    drop(c.stdin.take());
    let got = notifications(&socket, |got| count(got, "STOPPING=1") == 1);
    assert_eq!(count(&got, "STOPPING=1"), 1, "{got:?}");
    let (status, _, err) = c.finish();
    assert!(status.success(), "{err:?}");
}

/// `send ... --format json` to a group nobody hears: the summary object.
fn send_summary(
    g: &str,
    key: &Path,
    extra: &[&str],
    stdin: &[u8],
) -> (serde_json::Value, Vec<String>) {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(extra);
    let mut p = spawn_send(g, key, &args);
    p.stdin.as_mut().unwrap().write_all(stdin).unwrap();
    let (status, out, err) = p.finish();
    assert!(status.success(), "{err:?}");
    let summary = serde_json::from_str(out.last().expect("a summary")).unwrap();
    (summary, err)
}

#[test]
fn a_file_without_rate_goes_at_the_default_pace_and_unlimited_lifts_it() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.120.12:46212";
    let file = dir.path().join("f.bin");
    std::fs::write(&file, vec![7u8; 3 << 20]).unwrap();
    let f = file.to_str().unwrap();
    let once = ["--file", f, "--repeat", "1", "--repair", "0", "-v"];
    let (paced, err) = send_summary(g, &key, &once, b"");
    assert!(
        err.iter()
            .any(|l| l.contains("pacing the file to 100.00 Mbit/s (the default")),
        "{err:?}"
    );
    assert!(
        err.iter().any(|l| l.contains("pace: 100.00 Mbit/s")),
        "{err:?}"
    );
    // 100 Mbit/s counts IP and UDP headers (28 bytes a datagram); the
    // summary counts payload. A loaded machine only makes it slower, so
    // the time it took is bounded below by the pace (less the pacer's
    // 1 ms burst), and its payload rate above.
    let bytes = paced["bytes"].as_f64().unwrap();
    let wire_bits = (bytes + 28.0 * paced["datagrams"].as_f64().unwrap()) * 8.0;
    let seconds = paced["seconds"].as_f64().unwrap();
    assert!(seconds >= wire_bits / 100e6 - 0.002, "{paced}");
    assert!(paced["bits_per_sec"].as_f64().unwrap() <= 100e6, "{paced}");
    // --rate unlimited: no pace (timing it against the paced run is left
    // to quiet machines: under load an unpaced run can be slower still).
    let (free, err) = send_summary(
        g,
        &key,
        &[&once[..], &["--rate", "unlimited"]].concat(),
        b"",
    );
    assert!(
        err.iter().all(|l| !l.contains("pacing the file")),
        "{err:?}"
    );
    assert!(
        err.iter().any(|l| l.contains("pace: no bit rate")),
        "{err:?}"
    );
    assert_eq!(free["bytes"], paced["bytes"]);
    // --rate and --pps replace the default.
    let (_, err) = send_summary(g, &key, &[&once[..], &["--rate", "300M"]].concat(), b"");
    assert!(
        err.iter().all(|l| !l.contains("pacing the file")),
        "{err:?}"
    );
    assert!(
        err.iter().any(|l| l.contains("pace: 300.00 Mbit/s")),
        "{err:?}"
    );
    let (_, err) = send_summary(g, &key, &[&once[..], &["--pps", "50000"]].concat(), b"");
    assert!(
        err.iter()
            .any(|l| l.contains("pace: no bit rate, at most 50000 datagrams/s")),
        "{err:?}"
    );
}

#[test]
fn an_unpaced_flood_warns_once_and_a_paced_or_slow_send_does_not() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.120.13:46213";
    let bulk = vec![b'x'; 2 << 20];
    let warned = |err: &[String]| err.iter().filter(|l| l.contains("sending unpaced")).count();
    let (_, err) = send_summary(g, &key, &["--raw"], &bulk);
    assert_eq!(warned(&err), 1, "{err:?}");
    assert!(
        err.iter().any(|l| l.contains("hint: pace with --rate")),
        "{err:?}"
    );
    // One large message (a 1 MiB line), in fragments, unpaced: the same.
    let mut big = vec![b'y'; 1 << 20];
    big.push(b'\n');
    let (_, err) = send_summary(g, &key, &[], &big);
    assert_eq!(warned(&err), 1, "{err:?}");
    for extra in [
        &["--rate", "200M"][..],
        &["--rate", "unlimited"],
        &["--pps", "20000"],
    ] {
        let (_, err) = send_summary(g, &key, &[&["--raw"][..], extra].concat(), &bulk);
        assert_eq!(warned(&err), 0, "{extra:?}: {err:?}");
    }
    let lines = b"a\nb\nc\n".repeat(10);
    let (_, err) = send_summary(g, &key, &[], &lines);
    assert_eq!(warned(&err), 0, "{err:?}");
}

#[test]
fn a_bad_rate_names_unlimited_in_its_hint() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let out = std::process::Command::new(common::BIN)
        .args(["send", "-g", "239.255.120.14:46214", "--rate", "fast", "-k"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"fast\" is not a rate") && err.contains("unlimited"),
        "{err}"
    );
}

#[test]
fn recv_reports_each_sender_on_its_own() {
    common::only_loopback();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let g = "239.255.120.15:46215";
    let r = recv(
        g,
        &key,
        &[
            "--format",
            "json",
            "--stats-interval",
            "300ms",
            "--duration",
            "3s",
        ],
    );
    let text = recv(g, &key, &["--stats-interval", "200ms", "--duration", "3s"]);
    // Two tickers at once, so some interval has both.
    let ticks = |n: &str| {
        spawn_send(
            g,
            &key,
            &["-q", "-m", "t", "--count", n, "--interval", "50ms"],
        )
    };
    for p in [ticks("10"), ticks("6")] {
        let (status, _, err) = p.finish();
        assert!(status.success(), "{err:?}");
    }
    let (status, out, err) = r.finish();
    assert!(status.success(), "{err:?}");
    let s = stats(&out);
    assert_eq!(s["delivered"], 16, "{out:?}");
    assert_eq!(s["senders_total"], 2, "{s}");
    let senders = s["senders"].as_array().unwrap();
    let delivered: Vec<u64> = senders
        .iter()
        .map(|x| x["delivered"].as_u64().unwrap())
        .collect();
    assert_eq!(delivered, [10, 6], "busiest first: {s}");
    for x in senders {
        assert_eq!(x["lost"], 0, "{x}");
        assert_eq!(x["frames_received"], x["delivered"], "{x}");
        assert!(x["from"].as_str().unwrap().starts_with("127.0.0.1:"), "{x}");
        assert_eq!(x["sender"].as_str().unwrap().len(), 32, "{x}");
    }
    assert_ne!(senders[0]["sender"], senders[1]["sender"]);
    // The intervals add up to the same, sender by sender.
    let mut per: std::collections::HashMap<String, u64> = Default::default();
    for line in &out {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] == "interval" {
            assert_eq!(
                v["senders_active"].as_u64().unwrap() as usize,
                v["senders"].as_array().unwrap().len(),
                "{v}"
            );
            for x in v["senders"].as_array().unwrap() {
                *per.entry(x["sender"].as_str().unwrap().to_owned())
                    .or_default() += x["delivered"].as_u64().unwrap();
            }
        }
    }
    let mut sums: Vec<u64> = per.values().copied().collect();
    sums.sort_unstable();
    assert_eq!(sums, [6, 10], "{out:#?}");
    // Text: a line per sender after the totals.
    assert_eq!(
        err.iter().filter(|l| l.starts_with("  sender ")).count(),
        2,
        "{err:?}"
    );
    // In text, an interval with both senders lists them under its line;
    // all of them, so no "(the N senders with the most frames" note.
    let (status, _, err) = text.finish();
    assert!(status.success(), "{err:?}");
    let listed = err.iter().filter(|l| l.starts_with("  sender ")).count();
    assert!(
        listed >= 4,
        "two at the end and two in an interval: {err:#?}"
    );
    assert!(
        err.iter().all(|l| !l.contains("senders with the most")),
        "{err:#?}"
    );
}
