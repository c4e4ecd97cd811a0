//! The iperf2 baseline, run by the same command.

use super::*;

/// The iperf2 network device for this run: iperf2 binds its sockets to a
/// device (`ADDR%DEV`), so its multicast can leave by that device only.
pub(super) fn iperf2_device(args: &Args) -> Result<&str, CliError> {
    match &args.interface {
        InterfaceSpec::Addr(a) if a.is_loopback() => Ok("lo"),
        InterfaceSpec::Name(n) if n == "lo" => Ok("lo"),
        other => Err(CliError::usage(format!(
            "the iperf2 baseline runs on loopback only, not on {other}"
        ))
        .hint("run it with -i lo (or 127.0.0.1), in a network namespace of its own")),
    }
}

/// One iperf2 run: `iperf -s` joined to the group on this run's device,
/// then `iperf -c` at `pps` datagrams a second (or flat out) for
/// `duration`, both with --size datagrams and a 4 MiB socket buffer, each
/// pinned to its CPU with taskset as mcsec's threads are. What arrived is
/// the server's own count.
pub(super) fn iperf2_run(
    args: &Args,
    size: usize,
    pps: Option<f64>,
    duration: Duration,
) -> Result<Measured, CliError> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let device = iperf2_device(args)?;
    let addr = args.group.addr();
    let (std::net::IpAddr::V4(group), port) = (addr.ip(), addr.port()) else {
        return Err(CliError::usage(
            "the iperf2 baseline runs on IPv4 groups only",
        ));
    };
    let pinned = |cpu: Option<usize>, program: &str| {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), program]);
                c
            }
            None => Command::new(program),
        };
        cmd.stdin(Stdio::null());
        cmd
    };
    let (send_cpu, recv_cpu) = match args.cpus() {
        Cpus::Pinned { send, recv } => (Some(send), Some(recv)),
        Cpus::Free => (None, None),
    };
    let missing = |e: std::io::Error| {
        CliError::new(format!("running iperf: {e}"))
            .hint("the iperf2 baseline needs iperf 2 (Debian: apt-get install iperf) and taskset")
    };
    let len = size.to_string();
    let mut server = pinned(recv_cpu, "iperf")
        .args(["-s", "-u", "-e", "-B", &format!("{group}%{device}")])
        .args(["-p", &port.to_string(), "-l", &len, "-w", "4M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(missing)?;
    let Some(out) = server.stdout.take() else {
        return Err(CliError::new("iperf -s gave no output"));
    };
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let finish = |mut server: std::process::Child| {
        let _ = server.kill();
        let _ = server.wait();
    };
    // The server says it listens before the client may start.
    let started = Instant::now();
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("listening") => break,
            Ok(_) => {}
            Err(_) if started.elapsed() < Duration::from_secs(5) => {}
            Err(_) => {
                finish(server);
                return Err(CliError::new("iperf -s did not start listening"));
            }
        }
    }
    let bits = pps.map_or(100_000_000_000.0, |p| p * size as f64 * 8.0);
    let client = pinned(send_cpu, "iperf")
        .args(["-c", &group.to_string(), "-u", "-e"])
        .args(["-B", &format!("127.0.0.1%{device}")])
        .args(["-p", &port.to_string(), "-l", &len, "-w", "4M"])
        .args(["-T", &args.ttl.to_string()])
        .args(["-b", &format!("{bits:.0}")])
        .args(["-t", &format!("{:.3}", duration.as_secs_f64())])
        .output()
        .map_err(missing);
    let client = match client {
        Ok(c) if c.status.success() => c,
        Ok(c) => {
            finish(server);
            return Err(CliError::new(format!(
                "iperf -c failed: {}",
                String::from_utf8_lossy(&c.stderr).trim()
            )));
        }
        Err(e) => {
            finish(server);
            return Err(e);
        }
    };
    let sent = iperf2_sent(&String::from_utf8_lossy(&client.stdout));
    // The server reports once the client's last datagram arrived.
    let mut report = None;
    let waited = Instant::now();
    while report.is_none() && waited.elapsed() < Duration::from_secs(3) {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            report = iperf2_lost_total(&line);
        }
    }
    finish(server);
    let (Some(sent), Some((lost, total))) = (sent, report) else {
        return Err(CliError::new("could not read iperf's report"));
    };
    Ok(Measured {
        sent,
        received: total.saturating_sub(lost).min(sent),
        wall: duration,
        cpu_send: None,
        cpu_recv: None,
    })
}

/// `Sent N datagrams` from iperf's client output.
pub(super) fn iperf2_sent(out: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let rest = l.split("Sent ").nth(1)?;
        let n = rest.strip_suffix(" datagrams")?.trim();
        n.parse().ok()
    })
}

/// `LOST/TOTAL (P%)` from an iperf server's report line.
pub(super) fn iperf2_lost_total(line: &str) -> Option<(u64, u64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).find_map(|w| {
        let (lost, total) = w.first()?.split_once('/')?;
        w.get(1)?.starts_with('(').then_some(())?;
        Some((lost.parse().ok()?, total.parse().ok()?))
    })
}
