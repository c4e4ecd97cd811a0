//! Helpers shared by the tests that run real processes: key files, and
//! children whose output arrives line by line with deadlines.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mcsec");
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The channel of a group and port given as text: what `send` and `recv`
/// seal and open for without `--channel`.
pub fn channel(group: &str) -> mcsec::ChannelId {
    mcsec::ChannelId::group(group.parse().unwrap())
}

pub fn keyfile(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new(BIN)
        .args(["keygen", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    path
}

/// A running mcsec: its stdout and stderr arrive line by line on channels.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub out: Receiver<String>,
    pub err: Receiver<String>,
}

impl Drop for Proc {
    /// A failed assertion must not leave our child running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn spawn(args: &[&str], key: &Path) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("-k").arg(key);
    spawn_command(cmd)
}

/// Starts any command with piped stdin, stdout and stderr.
pub fn spawn_command(mut cmd: Command) -> Proc {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    Proc {
        stdin: child.stdin.take(),
        child,
        out,
        err,
    }
}

impl Proc {
    /// Waits for a stderr line containing `needle` (a readiness log line).
    pub fn wait_err(&self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.err.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no stderr line with {needle:?}");
    }

    /// The first stderr line with `needle` within `timeout`, if any; the
    /// lines before it are consumed.
    pub fn wait_err_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.err.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        None
    }

    pub fn wait_out(&self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.out.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no stdout line with {needle:?}");
    }

    /// Waits for exit (killing it at the deadline); returns stdout and
    /// stderr lines.
    pub fn finish(mut self) -> (std::process::ExitStatus, Vec<String>, Vec<String>) {
        drop(self.stdin.take());
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > end {
                self.child.kill().unwrap();
                panic!("process did not exit in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let collect = |rx: &Receiver<String>| {
            let mut v = Vec::new();
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
                v.push(line);
            }
            v
        };
        let out = collect(&self.out);
        let err = collect(&self.err);
        (status, out, err)
    }
}

/// The independent Python implementation of PROTOCOL.md. Without python3
/// the interop tests fail: they are the only independent check, and a
/// green run must not hide that they did not run. `MCSEC_SKIP_INTEROP=1`
/// lets them pass without python3 (saying so on stderr).
pub fn reference_impl() -> Option<PathBuf> {
    let python_ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if python_ok {
        return Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/mcsec_ref.py"));
    }
    assert!(
        std::env::var_os("MCSEC_SKIP_INTEROP").is_some(),
        "python3 not found: the interop tests need it. Install python3, or set \
         MCSEC_SKIP_INTEROP=1 to skip them (nothing then checks mcsec against an \
         independent implementation)"
    );
    eprintln!("skipping (MCSEC_SKIP_INTEROP is set): python3 not found");
    None
}

/// Whether this process may make a network namespace (`unshare -n`, as
/// root), for the tests that build veth pairs in one.
pub fn can_unshare() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["-n", "ip", "link", "show", "lo"])
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "unshare -n failed (not root?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A sender pinned to loopback (IP_MULTICAST_IF 127.0.0.1, TTL 1), for
/// injecting crafted frames.
pub fn injector(group: &str) -> mcsec::net::Sender {
    use std::net::{IpAddr, Ipv4Addr};
    let mut opts = mcsec::net::Options::default();
    opts.interface = Some(mcsec::net::InterfaceSpec::Addr(IpAddr::V4(
        Ipv4Addr::LOCALHOST,
    )));
    opts.ttl = 1;
    mcsec::net::Sender::open(group.parse().unwrap(), &opts).unwrap()
}

/// Every reject counter in `recv --format json` stats.
pub const REJECT_COUNTERS: [&str; 9] = [
    "replayed",
    "stale",
    "auth_failed",
    "unknown_key",
    "malformed",
    "oversize",
    "sender_table_full",
    "unknown_body",
    "bad_body",
];

/// The sum of every reject counter in a stats object.
pub fn rejected(stats: &serde_json::Value) -> u64 {
    REJECT_COUNTERS
        .iter()
        .map(|k| stats[k].as_u64().unwrap())
        .sum()
}

/// Sends `signal` ("TERM", "INT", ...) to a running child.
pub fn signal(p: &Proc, signal: &str) {
    let killed = Command::new("kill")
        .args([&format!("-{signal}"), &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Gives a receiver a moment to drain, ends it with SIGTERM, and returns
/// its stdout lines, its json stats and its stderr lines.
pub fn terminate(receiver: Proc) -> (Vec<String>, serde_json::Value, Vec<String>) {
    std::thread::sleep(Duration::from_millis(300));
    signal(&receiver, "TERM");
    let (status, out, err) = receiver.finish();
    assert!(status.success(), "{err:?}");
    let stats = out
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "stats")
        .expect("stats line");
    (out, stats, err)
}

/// Starts `mcsec recv -v -g GROUP -i 127.0.0.1 EXTRA -k KEY` and waits
/// until it listens.
pub fn recv(group: &str, key: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["recv", "-v", "-g", group, "-i", "127.0.0.1"];
    args.extend_from_slice(extra);
    let p = spawn(&args, key);
    p.wait_err("receiving on");
    p
}

/// The address a `-v` command logged for --metrics ("metrics on
/// http://ADDR/metrics").
pub fn metrics_addr(p: &Proc) -> String {
    let line = p.wait_err("metrics on http://");
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("an address")
        .to_owned()
}

/// `GET path` from `addr` over HTTP/1.0: the status line and the body.
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// A counter's value in a Prometheus text body: `mcsec_NAME_total VALUE`.
pub fn metric(body: &str, name: &str) -> Option<u64> {
    let want = format!("mcsec_{name}_total ");
    body.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
}

/// [`recv`] with `--metrics 127.0.0.1:0`: the receiver, once it listens,
/// and its metrics address.
pub fn recv_with_metrics(group: &str, key: &Path, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["recv", "-v", "-g", group, "-i", "127.0.0.1"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--metrics", "127.0.0.1:0"]);
    let p = spawn(&args, key);
    // Logged before the socket opens.
    let addr = metrics_addr(&p);
    p.wait_err("receiving on");
    (p, addr)
}

/// Panics unless this process sees no interface but `lo`: for tests that
/// send multicast, which must never reach a real network.
pub fn only_loopback() {
    // /proc/self/net follows this process's namespace (/sys/class/net
    // follows the one sysfs was mounted in).
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap();
    let names: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert!(
        names.iter().all(|n| *n == "lo"),
        "interfaces {names:?}: run these tests inside `unshare --net` (see .ci/run)"
    );
}

/// Runs `f` on a thread of its own in a fresh network namespace with lo up,
/// the IPv4 multicast route on it, and an nftables input chain that drops
/// `drop_percent` percent of the datagrams to `dropped_group`. `None` when
/// that cannot be made and MCSEC_SKIP_NETNS is set.
pub fn in_lossy_netns<T: Send>(
    test: &str,
    dropped_group: &str,
    drop_percent: u32,
    f: impl FnOnce() -> T + Send,
) -> Option<T> {
    let may_skip = std::env::var_os("MCSEC_SKIP_NETNS").is_some();
    let skip = |why: String| {
        assert!(
            may_skip,
            "{why}: run the tests as root with nftables installed (as CI does), \
             or set MCSEC_SKIP_NETNS=1 to skip {test}"
        );
        eprintln!("skipping {test} (MCSEC_SKIP_NETNS is set): {why}");
    };
    let rule = format!("ip daddr {dropped_group} numgen random mod 100 lt {drop_percent} drop");
    let setup: Vec<(&str, Vec<&str>)> = vec![
        ("ip", vec!["link", "set", "lo", "up"]),
        (
            "ip",
            vec![
                "route",
                "add",
                "224.0.0.0/4",
                "dev",
                "lo",
                "src",
                "127.0.0.1",
            ],
        ),
        ("nft", vec!["add", "table", "ip", "t"]),
        (
            "nft",
            vec![
                "add",
                "chain",
                "ip",
                "t",
                "c",
                "{ type filter hook input priority 0; }",
            ],
        ),
        ("nft", vec!["add", "rule", "ip", "t", "c", &rule]),
    ];
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                skip(format!("unshare(CLONE_NEWNET) failed (not root?): {e}"));
                return None;
            }
            for (cmd, args) in &setup {
                let out = match Command::new(cmd).args(args).output() {
                    Ok(out) => out,
                    Err(e) => {
                        skip(format!("cannot run {cmd} (apt-get install nftables?): {e}"));
                        return None;
                    }
                };
                assert!(
                    out.status.success(),
                    "{cmd} {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Some(f())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
