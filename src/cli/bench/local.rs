//! One host: a sender thread and a receiver thread, and the search for the highest rate under the loss target.

use super::*;

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub(super) struct Measured {
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) wall: Duration,
    pub(super) cpu_send: Option<Duration>,
    pub(super) cpu_recv: Option<Duration>,
}

impl Measured {
    pub(super) fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - (self.received.min(self.sent) as f64 / self.sent as f64)
    }

    pub(super) fn pps(&self) -> f64 {
        self.received as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub(super) fn sent_pps(&self) -> f64 {
        self.sent as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub(super) fn cpu_pct(&self, cpu: Option<Duration>) -> Option<f64> {
        cpu.map(|c| 100.0 * c.as_secs_f64() / self.wall.as_secs_f64().max(1e-9))
    }
}

pub(super) fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(net::thread_cpu_time()?.saturating_sub(start?))
}

/// One run with both sides in this process: the receiver on its own thread,
/// the sender on this one. With `latencies`, every datagram carries the
/// time it was stamped and the receiver records how long it took to arrive
/// and open, in nanoseconds.
pub(super) fn local_run(
    tx: &mut Tx,
    rx: &mut Rx,
    run: u32,
    pps: Option<f64>,
    duration: Duration,
    stop: &AtomicBool,
    mut latencies: Option<&mut Vec<u64>>,
) -> Result<Measured, CliError> {
    let done = AtomicBool::new(false);
    let sent_total = AtomicU64::new(0);
    let origin = Instant::now();
    tx.clock = latencies.is_some().then_some(origin);
    std::thread::scope(|s| {
        let receiver = s.spawn(|| -> Result<(u64, Option<Duration>), CliError> {
            if let Some(cpu) = rx.cpu {
                pin_thread(cpu);
            }
            let cpu0 = net::thread_cpu_time();
            let mut received = 0u64;
            loop {
                let arrived = rx.recv(|st| {
                    if st.run == run && st.kind == KIND_DATA {
                        received += 1;
                        if let Some(l) = latencies.as_deref_mut() {
                            let now =
                                u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                            l.push(now.saturating_sub(st.extra));
                        }
                    }
                })?;
                if arrived == 0 && done.load(Ordering::Acquire) {
                    break;
                }
                if done.load(Ordering::Acquire) && received >= sent_total.load(Ordering::Acquire) {
                    break;
                }
            }
            Ok((received, cpu_since(cpu0)))
        });
        if let Some(cpu) = tx.cpu {
            pin_thread(cpu);
        }
        let cpu0 = net::thread_cpu_time();
        let sent = send_run(tx, run, pps, duration, stop);
        let cpu_send = cpu_since(cpu0);
        if let Ok((n, _)) = &sent {
            sent_total.store(*n, Ordering::Release);
        }
        done.store(true, Ordering::Release);
        let (received, cpu_recv) = receiver
            .join()
            .map_err(|_| CliError::new("the receiver thread panicked"))??;
        let (sent, wall) = sent?;
        Ok(Measured {
            sent,
            received,
            wall,
            cpu_send,
            cpu_recv,
        })
    })
}

/// The highest rate (datagrams per second) at which a short run loses
/// under 0.1%: a flat-out probe, then bisection between what got through
/// and what was offered.
pub(super) fn search(
    mode: Mode,
    stop: &AtomicBool,
    trial: &mut dyn FnMut(Option<f64>, Duration) -> Result<Measured, CliError>,
) -> Result<Option<f64>, CliError> {
    let probe = trial(None, SEARCH_TRIAL)?;
    tracing::info!(
        "{}: flat out sent {:.0} pps, {:.0} pps arrived ({:.3}% loss)",
        mode.name(),
        probe.sent_pps(),
        probe.pps(),
        probe.loss() * 100.0
    );
    // Even a lossless probe is only a quarter second: flat out for longer
    // meets the receiver's scheduling hiccups, so search paced rates up to
    // what the sender managed.
    let mut good = 0.0f64;
    let mut bad = probe.sent_pps();
    let mut try_pps = probe.pps() * 0.97;
    if probe.sent_pps() <= 0.0 {
        return Ok(None);
    }
    for _ in 0..SEARCH_STEPS {
        if stopped(stop) {
            break;
        }
        let m = trial(Some(try_pps), SEARCH_TRIAL)?;
        let ok = m.loss() < LOSS_TARGET && m.sent_pps() >= try_pps * 0.95;
        tracing::info!(
            "{}: {:.0} pps offered, {:.0} sent, {:.0} arrived, {:.3}% loss: {}",
            mode.name(),
            try_pps,
            m.sent_pps(),
            m.pps(),
            m.loss() * 100.0,
            if ok { "ok" } else { "too fast" }
        );
        if ok {
            good = try_pps;
        } else {
            bad = try_pps;
        }
        try_pps = if good == 0.0 {
            bad / 2.0
        } else {
            (good + bad) / 2.0
        };
    }
    Ok(Some(if good > 0.0 { good } else { try_pps }))
}

pub(super) fn options(args: &Args) -> net::Options {
    let mut opts = net::Options::default();
    opts.interface = Some(args.interface.clone());
    opts.ttl = args.ttl;
    opts.rcvbuf = Some(RCVBUF_BYTES);
    opts
}

pub(super) fn keyring(args: &Args) -> Result<Keyring, CliError> {
    match &args.key {
        Some(path) => load_keyring(path),
        None => Ok(Keyring::single(GroupKey::generate(SystemTime::now())?)),
    }
}

/// Both roles of a benchmark seal and open for this named channel, so a
/// sender and a receiver started apart agree whatever ports the modes use.
pub(super) fn channel() -> ChannelId {
    ChannelId::named("mcsec bench").expect("a short name is a channel")
}

pub(super) fn sealer(keyring: &Keyring, size: usize) -> Result<Sealer, CliError> {
    let mut sealer = Sealer::new(keyring.sending_key(), &channel())
        .map_err(|e| CliError::new(format!("starting a sender session: {e}")))?;
    sealer.set_max_datagram(size + OVERHEAD);
    Ok(sealer)
}

pub(super) fn opener(keyring: Keyring, size: usize) -> Opener {
    let mut config = OpenerConfig::default();
    config.max_datagram = size + OVERHEAD;
    Opener::new(keyring, channel(), config)
}

pub(super) fn run_local(args: &Args, modes: &[Mode], size: usize, stop: &AtomicBool) -> CliResult {
    let keyring = keyring(args)?;
    let mut run = rand_run_id();
    let mut reports: Vec<Report> = Vec::new();
    for &mode in modes {
        let (pps, m) = if mode == Mode::Iperf2 {
            let mut trial =
                |pps: Option<f64>, duration: Duration| iperf2_run(args, size, pps, duration);
            measure(args, mode, size, stop, &mut trial)?
        } else {
            let (mut tx, mut rx) = open_mode(args, args.group, &keyring, mode, size)?;
            let mut trial = |pps: Option<f64>, duration: Duration| {
                run = run.wrapping_add(1);
                local_run(&mut tx, &mut rx, run, pps, duration, stop, None)
            };
            let measured = measure(args, mode, size, stop, &mut trial)?;
            if rx.rejected > 0 || tx.send_errors > 0 {
                tracing::warn!(
                    "{}: {} datagrams rejected by the opener, {} sends refused by the kernel",
                    mode.name(),
                    rx.rejected,
                    tx.send_errors
                );
            }
            measured
        };
        let rate = pps.map(|p| (p * size as f64 * 8.0).round() as u64);
        // The baseline: iperf2 when it ran, else bench's own plain mode.
        let baseline = reports
            .iter()
            .find(|r| r.mode == Mode::Iperf2)
            .or_else(|| reports.iter().find(|r| r.mode == Mode::Plain));
        let vs_base = match baseline {
            Some(base) if base.mode != mode => Some((base.mode, m.pps() / base.m.pps().max(1e-9))),
            _ => None,
        };
        let report = Report {
            mode,
            role: "both",
            size,
            rate,
            searched: args.rate.is_none(),
            m,
            vs_base,
        };
        if args.format == Format::Json {
            print_json(&report)?;
        }
        reports.push(report);
        if stopped(stop) {
            break;
        }
    }
    if args.format == Format::Text {
        let mut lines = vec![
            format!(
                "{size}-byte payloads on {} via {}, TTL {}, {:?} per mode",
                args.group, args.interface, args.ttl, args.duration
            ),
            TEXT_HEADER.to_owned(),
        ];
        lines.extend(reports.iter().map(Report::text_row));
        for r in &reports {
            if let Some((base, ratio)) = r.vs_base {
                lines.push(format!(
                    "{} / {}: {ratio:.2} of the packet rate",
                    r.mode.name(),
                    base.name()
                ));
            }
        }
        // Signing's cost: the signed feed against the unsigned one.
        if let (Some(signed), Some(unsigned)) = (
            reports.iter().find(|r| r.mode == Mode::McsecSigned),
            reports.iter().find(|r| r.mode == Mode::Mcsec),
        ) {
            lines.push(format!(
                "mcsec-signed / mcsec: {:.2} of the packet rate",
                signed.m.pps() / unsigned.m.pps().max(1e-9)
            ));
        }
        print_text(&lines)?;
    }
    Ok(())
}
