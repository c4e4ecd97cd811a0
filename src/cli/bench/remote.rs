//! `--role send` and `--role recv`: one side each, for two hosts.

use super::*;

pub(super) fn run_send(args: &Args, mode: Mode, size: usize, stop: &AtomicBool) -> CliResult {
    let sealer = match mode.sealed() {
        false => None,
        true => Some(sealer(&keyring(args)?, size)?),
    };
    let sender = net::Sender::open(args.group, &options(args))?;
    let mut tx = Tx::new(sender, sealer, size, mode.batched());
    if args.threads > 1 {
        tx.pipe = Some(SealPipe::new(args.threads)?);
    }
    let run = rand_run_id();
    let pps = args.rate.map(|rate| rate as f64 / (size as f64 * 8.0));
    let cpu0 = cpu_time(args.threads);
    let (sent, wall) = send_run(&mut tx, run, pps, args.duration, stop)?;
    let cpu_send = cpu_time(args.threads)
        .zip(cpu0)
        .map(|(b, a)| b.saturating_sub(a));
    for _ in 0..END_MARKERS {
        std::thread::sleep(Duration::from_millis(2));
        tx.send(
            Stamp {
                run,
                seq: sent,
                kind: KIND_END,
                extra: sent,
            },
            1,
        )?;
    }
    let m = Measured {
        sent,
        received: sent,
        wall,
        cpu_send,
        cpu_recv: None,
    };
    let report = Report {
        mode,
        role: "send",
        size,
        rate: args.rate,
        searched: false,
        m,
        vs_base: None,
    };
    match args.format {
        Format::Json => print_json_threads(&report, args.threads, cpu_send),
        Format::Text => print_text(&[
            format!(
                "sent {sent} {size}-byte payloads to {} ({}); the receiver reports loss",
                args.group,
                mode.name()
            ),
            TEXT_HEADER.to_owned(),
            report.text_row(),
            per_core_line(m.sent_pps(), args.threads, m.cpu_pct(cpu_send)),
        ]),
    }
}

pub(super) fn run_recv(args: &Args, mode: Mode, size: usize, stop: &AtomicBool) -> CliResult {
    let opener = match mode.sealed() {
        false => None,
        true => Some(opener(keyring(args)?, size)),
    };
    let mut rx = open_rx(args, args.group, opener, size, mode.batched())?;
    if args.threads > 1
        && let Some(opener) = &rx.opener
    {
        rx.pipe = Some(OpenPipe::new(args.threads, opener.config())?);
    }
    rx.set_timeout(Duration::from_millis(100))?;
    tracing::warn!("waiting for a sender on {}", args.group);
    // The first stamped datagram picks the run; others are ignored.
    let mut first: Option<Stamp> = None;
    let mut received = 0u64;
    let mut highest = 0u64;
    let mut lowest = u64::MAX;
    let mut announced = None;
    let mut start = Instant::now();
    let mut cpu0 = None;
    let mut last = start;
    while !stopped(stop) && announced.is_none() {
        rx.recv(|st| {
            let run = match first {
                Some(f) => f.run,
                None if st.kind == KIND_DATA => {
                    first = Some(st);
                    start = Instant::now();
                    cpu0 = cpu_time(args.threads);
                    st.run
                }
                None => return,
            };
            if st.run != run || announced.is_some() {
                return;
            }
            if st.kind == KIND_END {
                announced = Some(st.extra);
                return;
            }
            received += 1;
            highest = highest.max(st.seq);
            lowest = lowest.min(st.seq);
            last = Instant::now();
        })?;
        if first.is_some() && last.elapsed() >= args.idle {
            break;
        }
    }
    if first.is_none() {
        return Ok(());
    }
    // Joined late: count from the first seq seen, not from 0.
    let expected = announced.unwrap_or(highest + 1).saturating_sub(lowest);
    let m = Measured {
        sent: expected,
        received,
        wall: last.duration_since(start).max(Duration::from_millis(1)),
        cpu_send: None,
        cpu_recv: cpu_time(args.threads)
            .zip(cpu0)
            .map(|(b, a)| b.saturating_sub(a)),
    };
    if announced.is_none() {
        tracing::warn!("no end marker arrived; loss counts up to the highest seq seen");
    }
    let report = Report {
        mode,
        role: "recv",
        size,
        rate: None,
        searched: false,
        m,
        vs_base: None,
    };
    match args.format {
        Format::Json => print_json_threads(&report, args.threads, m.cpu_recv),
        Format::Text => print_text(&[
            format!(
                "received {received} of {expected} {size}-byte payloads on {} ({})",
                args.group,
                mode.name()
            ),
            TEXT_HEADER.to_owned(),
            report.text_row(),
            per_core_line(m.pps(), args.threads, m.cpu_pct(m.cpu_recv)),
        ]),
    }
}
