//! `--latency`: one-way latency at a steady rate.

use super::*;

/// Latency percentiles of one mode, in microseconds.
pub(super) struct Latency {
    mode: Mode,
    samples: usize,
    lost: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn from(mode: Mode, mut ns: Vec<u64>, lost: u64) -> Self {
        ns.sort_unstable();
        let at = |q: f64| {
            let i = ((ns.len() as f64 - 1.0) * q).round() as usize;
            ns.get(i).map_or(f64::NAN, |&v| v as f64 / 1000.0)
        };
        Self {
            mode,
            samples: ns.len(),
            lost,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// One-way latency at a low, steady rate: the time from stamping (just
/// before sealing) to opening, per mode. The modes take turns datagram by
/// datagram, each on its own port with its own receiver thread, so they
/// meet the same machine at the same moments and none waits behind another.
pub(super) fn run_latency(
    args: &Args,
    modes: &[Mode],
    size: usize,
    stop: &AtomicBool,
) -> CliResult {
    const WARM_UP: Duration = Duration::from_millis(200);
    let keyring = keyring(args)?;
    let run = rand_run_id();
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for (i, &mode) in modes.iter().enumerate() {
        let group = port_offset(args.group, i)?;
        let (tx, rx) = open_mode(args, group, &keyring, mode, size)?;
        txs.push(tx);
        rxs.push(rx);
    }
    let pps = args.pps as f64;
    let per_mode = ((WARM_UP + args.duration).as_secs_f64() * pps).ceil() as u64;
    let warm = (WARM_UP.as_secs_f64() * pps).ceil() as u64;
    let origin = Instant::now();
    for tx in &mut txs {
        tx.clock = Some(origin);
    }
    let done = AtomicBool::new(false);
    let (sent, got) = std::thread::scope(|s| {
        let receivers: Vec<_> = rxs
            .iter_mut()
            .map(|rx| {
                let done = &done;
                s.spawn(move || -> Result<Vec<u64>, CliError> {
                    let mut ns = Vec::with_capacity(usize::try_from(per_mode).unwrap_or(0));
                    loop {
                        let arrived = rx.recv(|st| {
                            if st.run == run && st.kind == KIND_DATA && st.seq >= warm {
                                let now =
                                    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                                ns.push(now.saturating_sub(st.extra));
                            }
                        })?;
                        if arrived == 0 && done.load(Ordering::Acquire) {
                            break;
                        }
                    }
                    Ok(ns)
                })
            })
            .collect();
        let sent = latency_send(&mut txs, run, pps, per_mode, stop);
        done.store(true, Ordering::Release);
        let got: Vec<Result<Vec<u64>, CliError>> = receivers
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| CliError::new("a receiver thread panicked"))?
            })
            .collect();
        (sent, got)
    });
    let sent = sent?;
    let mut results = Vec::new();
    for (&mode, ns) in modes.iter().zip(got) {
        let ns = ns?;
        let expected = sent.saturating_sub(warm);
        let lost = expected.saturating_sub(ns.len() as u64);
        results.push(Latency::from(mode, ns, lost));
    }
    print_latency(args, size, &results)
}

/// `group` with its port moved up by `offset`: one port per mode.
pub(super) fn port_offset(group: Group, offset: usize) -> Result<Group, CliError> {
    let mut addr = group.addr();
    let port = u16::try_from(offset)
        .ok()
        .and_then(|o| addr.port().checked_add(o))
        .ok_or_else(|| {
            CliError::usage(format!("{group}: no room above the port for every mode"))
        })?;
    addr.set_port(port);
    Ok(addr.to_string().parse()?)
}

/// Sends `per_mode` datagrams of each mode at `pps` each, the modes taking
/// turns; returns how many each sent.
pub(super) fn latency_send(
    txs: &mut [Tx],
    run: u32,
    pps: f64,
    per_mode: u64,
    stop: &AtomicBool,
) -> Result<u64, CliError> {
    let start = Instant::now();
    let step = 1.0 / (pps * txs.len().max(1) as f64);
    let mut k = 0u64;
    let mut seq = 0u64;
    while seq < per_mode && !stopped(stop) {
        for tx in txs.iter_mut() {
            let due = start + Duration::from_secs_f64(k as f64 * step);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let stamp = Stamp {
                run,
                seq,
                kind: KIND_DATA,
                extra: 0,
            };
            tx.send(stamp, 1)?;
            k += 1;
        }
        seq += 1;
        for tx in txs.iter_mut() {
            tx.poll_signed()?;
        }
    }
    for tx in txs.iter_mut() {
        tx.close_signed()?;
    }
    Ok(seq)
}

pub(super) fn print_latency(args: &Args, size: usize, results: &[Latency]) -> CliResult {
    let plain_p50 = results
        .iter()
        .find(|l| l.mode == Mode::Plain)
        .map(|l| l.p50);
    if args.format == Format::Json {
        for l in results {
            let added = plain_p50
                .filter(|_| l.mode != Mode::Plain)
                .map(|p| l.p50 - p);
            let v = serde_json::json!({
                "type": "latency",
                "mode": l.mode.name(),
                "size": size,
                "pps": args.pps,
                "samples": l.samples,
                "lost": l.lost,
                "p50_us": l.p50,
                "p90_us": l.p90,
                "p99_us": l.p99,
                "max_us": l.max,
                "added_p50_us": added,
            });
            print_line(&v.to_string())?;
        }
        return Ok(());
    }
    let mut lines = vec![
        format!(
            "one-way latency, {size}-byte payloads at {} a second per mode, modes taking turns, \
             on {} and up via {}, {:?}",
            args.pps, args.group, args.interface, args.duration
        ),
        "mode              samples  lost    p50 us    p90 us    p99 us    max us".to_owned(),
    ];
    for l in results {
        lines.push(format!(
            "{:<16} {:>8} {:>5} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            l.mode.name(),
            l.samples,
            l.lost,
            l.p50,
            l.p90,
            l.p99,
            l.max
        ));
    }
    if let Some(p) = plain_p50 {
        for l in results.iter().filter(|l| l.mode != Mode::Plain) {
            lines.push(format!(
                "{} adds {:.1} us at p50 over plain",
                l.mode.name(),
                l.p50 - p
            ));
        }
    }
    print_text(&lines)
}

pub(super) fn rand_run_id() -> u32 {
    // Not a secret: only tells one run's datagrams from another's.
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ (std::process::id() << 16)
}
