//! Results as text or JSON lines, with CPU time per core.

use super::*;

/// A result line, text or JSON.
pub(super) struct Report {
    pub(super) mode: Mode,
    pub(super) role: &'static str,
    pub(super) size: usize,
    pub(super) rate: Option<u64>,
    pub(super) searched: bool,
    pub(super) m: Measured,
    /// The packet rate against the baseline's (iperf2, else plain).
    pub(super) vs_base: Option<(Mode, f64)>,
}

impl Report {
    fn mbps(&self) -> f64 {
        self.m.pps() * self.size as f64 * 8.0 / 1e6
    }

    fn json(&self) -> serde_json::Value {
        let datagram = self.size + if self.mode.sealed() { OVERHEAD } else { 0 };
        let mut v = serde_json::json!({
            "type": "bench",
            "mode": self.mode.name(),
            "io": if self.mode.batched() { "batched" } else { "single" },
            "role": self.role,
            "size": self.size,
            "datagram": datagram,
            "rate": self.rate,
            "searched": self.searched,
            "duration_s": self.m.wall.as_secs_f64(),
            "sent": self.m.sent,
            "received": self.m.received,
            "sent_pps": self.m.sent_pps(),
            "pps": self.m.pps(),
            "mbps": self.mbps(),
            "loss": self.m.loss(),
            "cpu_send_pct": self.m.cpu_pct(self.m.cpu_send),
            "cpu_recv_pct": self.m.cpu_pct(self.m.cpu_recv),
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some((base, r)) = self.vs_base {
                obj.insert(format!("pps_vs_{}", base.name()), r.into());
            }
            if self.role == "send" {
                // Only the receiver knows what arrived.
                for field in ["received", "pps", "mbps", "loss"] {
                    obj.insert(field.into(), serde_json::Value::Null);
                }
            }
        }
        v
    }

    pub(super) fn text_row(&self) -> String {
        let pct = |c: Option<f64>| c.map_or_else(|| "-".to_owned(), |c| format!("{c:.0}%"));
        let rate = match (self.searched, self.rate) {
            _ if self.role == "recv" => "-".to_owned(),
            (true, Some(_)) => "searched".to_owned(),
            (_, None) => "flat out".to_owned(),
            (false, Some(r)) => format!("{:.1}M", r as f64 / 1e6),
        };
        format!(
            "{:<15} {:>9} {:>10.0} {:>9.1} {:>8.3}% {:>8} {:>8}",
            self.mode.name(),
            rate,
            self.m.pps(),
            self.mbps(),
            self.m.loss() * 100.0,
            pct(self.m.cpu_pct(self.m.cpu_send)),
            pct(self.m.cpu_pct(self.m.cpu_recv)),
        )
    }
}

pub(super) const TEXT_HEADER: &str =
    "mode                 rate        pps    Mbit/s     loss cpu send cpu recv";

/// CPU time used so far: this thread's, or with worker threads
/// (--threads N > 1) the whole process's.
pub(super) fn cpu_time(threads: usize) -> Option<Duration> {
    if threads <= 1 {
        return net::thread_cpu_time();
    }
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
    let micros = |tv: nix::sys::time::TimeVal| {
        let us = i128::from(tv.tv_sec()) * 1_000_000 + i128::from(tv.tv_usec());
        u64::try_from(us).unwrap_or(0)
    };
    Some(Duration::from_micros(
        micros(usage.user_time()).saturating_add(micros(usage.system_time())),
    ))
}

/// Datagrams a second for each core's worth of CPU the measured side used.
pub(super) fn per_core(pps: f64, cpu_pct: Option<f64>) -> Option<f64> {
    cpu_pct.filter(|c| *c > 0.0).map(|c| pps / (c / 100.0))
}

pub(super) fn per_core_line(pps: f64, threads: usize, cpu_pct: Option<f64>) -> String {
    match per_core(pps, cpu_pct) {
        Some(rate) => format!(
            "threads {threads}: {rate:.0} pps per core (CPU {:.0}% of one core)",
            cpu_pct.unwrap_or_default()
        ),
        None => format!("threads {threads}: CPU time not known here"),
    }
}

/// A --role report as JSON, with the threads and the rate per core.
pub(super) fn print_json_threads(
    report: &Report,
    threads: usize,
    cpu: Option<Duration>,
) -> CliResult {
    let mut v = report.json();
    let pps = if report.role == "send" {
        report.m.sent_pps()
    } else {
        report.m.pps()
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("threads".into(), threads.into());
        obj.insert(
            "pps_per_core".into(),
            per_core(pps, report.m.cpu_pct(cpu)).into(),
        );
    }
    print_line(&v.to_string())
}

pub(super) fn print_json(report: &Report) -> CliResult {
    print_line(&report.json().to_string())
}

pub(super) fn print_line(line: &str) -> CliResult {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").map_err(stdout_error)?;
    out.flush().map_err(stdout_error)
}

pub(super) fn print_text(lines: &[String]) -> CliResult {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}").map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)
}
