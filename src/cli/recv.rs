//! `mcsec recv`: receive, authenticate and print a group's messages.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use mcsec::files::{FileConfig, FileReceiver, sanitize_name};
use mcsec::reassembly::{Reassembler, ReassemblyConfig};
use mcsec::transfer::stream::StreamConfig;
use mcsec::{Header, Opener, OpenerConfig};

use super::common::{
    Delivered, ErrorStreak, FileDone, Inbox, KeyArgs, KeyFile, NetArgs, TrustArgs, parse_bytes,
    parse_duration, parse_file_size, parse_source, stop_flag, stopped,
};
use super::{CliError, CliResult, stdout_error};

/// A --rejoin this long or longer lets a snooping switch without a querier
/// forget us first: its group membership interval is 260 s (RFC 2236 8.4:
/// robustness 2 times a 125 s query interval, plus 10 s).
const REJOIN_TOO_LATE: Duration = Duration::from_secs(260);

/// How long one wait for a datagram lasts before the loop looks at signals,
/// timers and the stats interval.
const POLL: Duration = Duration::from_millis(100);

/// Receive a group's messages and print those that authenticate.
///
/// Every datagram is checked (size, key, freshness, replay, then the AEAD
/// under this channel's key) before anything is printed; a bad datagram is
/// counted and dropped, never fatal. A frame sealed for another group, port
/// or --channel fails authentication here.
///
/// The key file is read again on SIGHUP (`kill -HUP PID`), and when frames
/// under a key ID it does not hold arrive after the file changed: after
/// `mcsec key rotate`, copy the file to every receiver and nothing is lost.
/// Senders under keys that stay keep their replay windows; a file that does
/// not load is reported and the keys in force stay. Large messages sent in fragments are put back together, within
/// --max-message bytes each. On exit (--count reached, --duration over,
/// Ctrl-C or SIGTERM) the counters go to standard error, and in json mode
/// also to standard output as a `{"type":"stats",...}` line; both list the
/// 8 senders with the most frames, each with its own counts (`senders`).
///
/// Loss is counted per sender from the seqs of frames that authenticated:
/// `lost` (seqs that never arrived, once the sender is 64 seqs further or
/// silent for 1s), `duplicates` (seqs that arrived again; also counted in
/// `replayed`), `reordered` (below the sender's newest seq), and
/// `kernel_drops` (the socket's receive buffer was full: raise --rcvbuf).
/// The words on exit give lost / (frames_received + lost) as a percentage.
///
/// With --trust FILE (public lines from `mcsec signer public`), only frames
/// signed by one of those keys (`mcsec send --sign`) are delivered; other
/// group members can no longer inject frames or move a signed sender's
/// replay window (SECURITY.md says what they can still do).
/// Each frame waits until the signature covering it arrives (normally just
/// before it), at most --sig-hold; what is not signed in time, or whose
/// signature fails, is dropped and counted (sig_unsigned, sig_expired,
/// sig_bad, sig_forged, sig_untrusted). In json mode each message names its
/// signer.
///
/// Files sent with `mcsec send --file` (any size, within --max-file) are
/// written block by block as their symbols arrive, decoded on a worker
/// thread, and delivered once their SHA-256 matches. With --save-dir a
/// file being received is `.mcsec-SHA-LEN.part` there, and moves into
/// place under its sender's path made safe (each component: no leading dot
/// or dash, no control, bidi or invisible characters; no `..`;
/// `file-SENDER-ID` when nothing is left), never over an existing file: a
/// `-1`, `-2` ... suffix is added instead. A receiver restarted during a
/// carousel resumes: the blocks it stored are not needed again. Without
/// --save-dir, files are checked in a temporary directory, reported, and
/// deleted. Memory stays bounded whatever the file size.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  mcsec recv -k group.key -g 239.255.0.1:5000 -i eth0
  mcsec recv -k group.key -g 239.255.0.1:5000 -i lo --format json --count 10
  mcsec recv -k group.key -g 232.1.1.1:5000 -i eth0 -s 192.0.2.7   (source-specific)
  mcsec recv -k group.key -g 239.255.0.1:5000 -i eth0 --save-dir ~/incoming
  mcsec recv -k group.key -g 239.255.0.1:5000 -i eth0 --save-dir . --max-file 256M --count 1
  mcsec recv -k group.key -g 239.255.0.1:5000 -i eth0 --trust feed.pub   (signed senders only)
  mcsec recv -k group.key -g 239.255.0.1:5000 -i eth0 --rejoin 60s   (a snooping switch, no querier)

Exit status: 0 done; 1 an error; 2 a usage error; 3 --count N ended
(--duration, SIGINT, SIGTERM) before N messages arrived. SIGHUP reloads
the key file and never ends recv.")]
pub(crate) struct Args {
    #[command(flatten)]
    key: KeyArgs,

    #[command(flatten)]
    trust: TrustArgs,

    #[command(flatten)]
    metrics: super::metrics::MetricsArgs,

    #[command(flatten)]
    relay: super::relay_client::RelayArgs,

    /// With --relay: ask the relay to send at most this many bits a second
    /// (k, M, G), dropping the rest there rather than on a slow link (the
    /// relay's own --rate-cap holds too).
    #[arg(long, value_name = "BITS", value_parser = super::common::parse_rate,
          requires = "relay")]
    relay_rate_cap: Option<u64>,

    #[command(flatten)]
    net: NetArgs,

    /// Source-specific multicast: only receive datagrams from this source
    /// address (IPv4: IP_ADD_SOURCE_MEMBERSHIP; IPv6, on Linux:
    /// MCAST_JOIN_SOURCE_GROUP).
    #[arg(env = "MCSEC_SOURCE", short, long, value_name = "ADDR", value_parser = parse_source)]
    source: Option<IpAddr>,

    /// Output: `lines` (each message and a newline), `raw` (the bytes
    /// alone) or `json` (one object per line; payload_b64 when not UTF-8).
    #[arg(env = "MCSEC_FORMAT", short, long, value_enum, default_value_t = Format::Lines)]
    format: Format,

    /// In lines format, start each line with its sender: `[SENDER
    /// ADDR:PORT] ` (the sender ID's first 8 hex digits and the source
    /// address), so two senders on one group can be told apart.
    #[arg(long)]
    show_sender: bool,

    /// Stop after this many messages. Ending before that (--duration,
    /// Ctrl-C, SIGTERM) exits with status 3.
    #[arg(short = 'n', long, value_name = "N")]
    count: Option<u64>,

    /// Stop after this long (e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Report this often (e.g. 10s) what happened since the last report,
    /// as `iperf -i` does: messages and their rate, loss, and what was
    /// dropped, counted for the interval alone, and the busiest senders of
    /// the interval (in text only when more than one was active). On
    /// standard error; with --format json, as a `{"type":"interval",...}`
    /// line on standard output instead.
    #[arg(env = "MCSEC_STATS_INTERVAL", long, value_name = "DURATION", value_parser = parse_duration)]
    stats_interval: Option<Duration>,

    /// Leave the group and join it again this often (e.g. 60s): each join
    /// sends a fresh IGMP/MLD membership report. A switch that snoops IGMP
    /// on a link with no querier forgets members after about 260 s (4.5
    /// minutes) and cuts the stream; rejoining well within that keeps it
    /// (`mcsec doctor` says whether this may matter). Datagrams arriving in
    /// the instant between leave and join may be missed.
    #[arg(env = "MCSEC_REJOIN", long, value_name = "DURATION", value_parser = parse_duration)]
    rejoin: Option<Duration>,

    /// Oldest frame accepted: how far the sender's clock may be behind
    /// ours, plus the network's delay.
    #[arg(env = "MCSEC_MAX_SKEW", long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    max_skew: Duration,

    /// Newest frame accepted: how far the sender's clock may be ahead of
    /// ours (default 5s, or --max-skew if that is less; never more than
    /// --max-skew). Kept short because a key holder that stamps frames in
    /// the future holds a place in the sender table for this plus
    /// --max-skew.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_future_skew: Option<Duration>,

    /// Reject frames stamped before this receiver started: no replay of
    /// traffic recorded earlier, at the price of not hearing senders whose
    /// clock runs behind ours.
    #[arg(long)]
    strict_start: bool,

    /// Ask the kernel for this receive buffer (e.g. 16M); warns when it
    /// grants less.
    #[arg(env = "MCSEC_RCVBUF", long, value_name = "BYTES", value_parser = parse_bytes)]
    rcvbuf: Option<usize>,

    /// Largest message reassembled from fragments.
    #[arg(env = "MCSEC_MAX_MESSAGE", long, value_name = "BYTES", value_parser = parse_bytes, default_value = "1M")]
    max_message: usize,

    /// How long a fragmented message may wait for its next piece before it
    /// is dropped (raise it for large messages sent at a low --rate).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    reassembly_timeout: Duration,

    /// Write received files into this directory (it must exist), with
    /// their relative paths. Without it, files are checked and reported but
    /// not kept. It must belong to you (or root) and be writable by nobody
    /// else, sticky bit or not (as ssh's StrictModes wants of ~/.ssh):
    /// others who can create entries there could plant partial files or
    /// the directories files are saved into. Partial files left there are
    /// resumed by a later run, and removed by one started 7 days after
    /// they were last written.
    #[arg(env = "MCSEC_SAVE_DIR", long, value_name = "DIR")]
    save_dir: Option<PathBuf>,

    /// Largest file accepted: it guards the disk (files are stored as they
    /// arrive; memory stays bounded at any size). Files from senders older
    /// than this version are held in memory, up to 64M.
    #[arg(env = "MCSEC_MAX_FILE", long, value_name = "BYTES", value_parser = parse_file_size, default_value = "16G")]
    max_file: u64,

    /// How long a file being received may wait for its next symbol before
    /// it is dropped.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    file_timeout: Duration,

    /// Authenticate and decrypt on N worker threads (1 to 64); this thread
    /// keeps the socket, the replay windows and delivery, so order, counts
    /// and replay rules are those of one thread. 1 (the default) starts no
    /// threads. Not with --trust.
    #[arg(env = "MCSEC_THREADS", long, value_name = "N", default_value_t = 1,
          value_parser = super::pipeline::parse_threads)]
    threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Lines,
    Raw,
    Json,
}

pub(crate) fn run(args: Args) -> CliResult {
    if args.rejoin.is_some_and(|d| d.is_zero()) {
        return Err(
            CliError::usage("--rejoin 0 would leave and join without pause")
                .hint("give an interval well within 260 s, e.g. --rejoin 60s"),
        );
    }
    if args.threads > 1 && args.trust.trust.is_some() {
        return Err(CliError::usage("--threads and --trust: not together yet")
            .hint("a trusting receiver checks signatures on one thread; drop --threads"));
    }
    let (keys, keyring) = KeyFile::open(&args.key.key)?;
    let mut opts = args.net.options(None);
    opts.source = args.source;
    opts.rcvbuf = args.rcvbuf;
    let max_datagram = args.net.max_datagram();
    let mut config = OpenerConfig::default();
    config.max_skew = args.max_skew;
    config.max_future_skew = match args.max_future_skew {
        Some(future) if future > args.max_skew => {
            return Err(CliError::usage(format!(
                "--max-future-skew {} is more than --max-skew {}",
                humantime::format_duration(future),
                humantime::format_duration(args.max_skew)
            ))
            .hint("frames may be accepted less far into the future than into the past, not further; raise --max-skew or lower --max-future-skew"));
        }
        Some(future) => future,
        None => mcsec::seal::DEFAULT_MAX_FUTURE_SKEW.min(args.max_skew),
    };
    config.max_datagram = max_datagram;
    config.not_before_us = args.strict_start.then(mcsec::now_us);
    let mut reassembly = ReassemblyConfig::default();
    reassembly.max_message = args.max_message;
    reassembly.timeout = args.reassembly_timeout;
    // Room for two of the largest messages at once, and never less than the
    // default. Memory is charged for bytes received, not announced, so this
    // is what key holders can make us hold, not what one frame can claim.
    reassembly.max_total = args.max_message.saturating_mul(2).max(reassembly.max_total);
    if let Some(dir) = &args.save_dir
        && !dir.is_dir()
    {
        return Err(
            CliError::usage(format!("--save-dir {}: not a directory", dir.display()))
                .hint(format!("create it first: mkdir -p {}", dir.display())),
        );
    }
    let mut files = FileConfig::default();
    // Variant 3 (older senders) is held in memory: at most 64M a file.
    files.max_file = args.max_file.min(mcsec::files::DEFAULT_MAX_FILE);
    files.timeout = args.file_timeout;
    // Two of the largest files at once, as for fragments; charged for
    // symbols held, not for lengths announced.
    let one = mcsec::files::budget_for(files.max_file, 1200);
    files.max_total = one.saturating_mul(2).max(files.max_total);
    let channel = args.net.channel();
    let mut inbox = Inbox::with_files(
        Opener::new(keyring, channel.clone(), config),
        Reassembler::new(reassembly),
        FileReceiver::new(files),
    );
    let mut streams = StreamConfig::default();
    streams.max_file = args.max_file;
    streams.timeout = args.file_timeout;
    inbox.streams = Some(super::recvfile::FileSink::start(
        streams,
        args.save_dir.as_deref(),
    )?);
    inbox.watch_keys(keys, false);
    inbox.trust(args.trust.verifier()?);
    let mut metrics = match args.metrics.metrics {
        Some(addr) => {
            let mut names = vec!["delivered", "datagrams_read"];
            names.extend(inbox.counters().iter().map(|(name, _)| *name));
            Some(super::metrics::Metrics::start(addr, &names)?)
        }
        None => None,
    };
    inbox.explain_rejects(&args.key.key, args.trust.trust.as_deref());
    let terminal = std::io::stdout().is_terminal();

    let stop = stop_flag()?;
    let (receiver, mut relay) = super::relay_client::open_receiver(
        &args.relay,
        args.relay_rate_cap,
        args.net.group,
        &opts,
    )?;
    if let Some(buf) = receiver.rcvbuf()
        && buf.granted < buf.requested
    {
        note!(
            "warning: asked for a {} byte receive buffer, the kernel granted {}\n\
             hint: raise the limit: sysctl -w net.core.rmem_max={}",
            buf.requested,
            buf.granted,
            buf.requested
        );
    }
    receiver.set_timeout(Some(POLL))?;
    if let Some(every) = args.rejoin
        && every >= REJOIN_TOO_LATE
    {
        note!(
            "warning: --rejoin {} is not within the 260 s a snooping switch remembers a member\n\
             hint: rejoin at most every 125 s, e.g. --rejoin 60s",
            humantime::format_duration(every)
        );
    }
    tracing::info!("receiving on {} (channel {channel})", args.net.group);
    super::notify::ready(&format!(
        "receiving on {} (channel {channel})",
        args.net.group
    ));

    // Batches: a whole GRO run, or up to 32 datagrams, per syscall. A
    // datagram longer than the largest frame accepted still shows up as
    // oversize instead of being cut to fit.
    let mut receiver = receiver.batched(max_datagram);
    // --threads: batches go to workers and come back checked, in order.
    let mut pipe = match args.threads {
        1 => None,
        n => Some(super::pipeline::OpenPipe::new(n, inbox.opener().config())?),
    };
    let mut checked = Vec::new();
    let started = Instant::now();
    let mut last_join = Instant::now();
    let mut last_stats = Instant::now();
    let mut last_counters = inbox.counters();
    let mut last_delivered: u64 = 0;
    let mut delivered: u64 = 0;
    let mut senders = super::senders::Senders::default();
    let mut streak = ErrorStreak::default();
    // Files in progress: bars on a terminal, JSON lines once a second.
    let mut bars = (args.format != Format::Json && super::progress::bars_wanted())
        .then(super::progress::FileBars::new);
    let mut last_progress = Instant::now();
    let mut out = std::io::stdout().lock();
    // Stopping (a signal, --duration) with batches out with --threads'
    // workers: one more turn reads nothing and takes them all back, so
    // what was read from the socket is delivered and counted, as with one
    // thread.
    let mut ending = false;
    // Every datagram taken from the socket: each is counted somewhere
    // (opened, rejected, or relay control) before the receiver stops.
    let mut datagrams_read: u64 = 0;
    let result = 'recv: loop {
        super::notify::keepalive();
        if args.count.is_some_and(|n| delivered >= n) {
            break Ok(());
        }
        if stopped(&stop) || args.duration.is_some_and(|d| started.elapsed() >= d) {
            if ending || !pipe.as_ref().is_some_and(|p| p.busy()) {
                break Ok(());
            }
            ending = true;
        }
        inbox.reload_keys();
        if let Some(sub) = relay.as_mut() {
            sub.poll();
        }
        if let Some(every) = args.rejoin
            && last_join.elapsed() >= every
        {
            // A failed rejoin (the interface went down a moment) is worth
            // a warning, not the end of the receiver: the next try may work.
            match receiver.receiver().rejoin() {
                Ok(()) => tracing::debug!("left and joined {} again", args.net.group),
                Err(e) => tracing::warn!("--rejoin: {e}"),
            }
            last_join = Instant::now();
        }
        if let Some(m) = metrics.as_mut().filter(|m| m.due()) {
            let mut values = inbox.counters();
            values.push(("delivered", delivered));
            values.push(("datagrams_read", datagrams_read));
            m.update(&values, false);
        }
        if let Some(every) = args.stats_interval
            && last_stats.elapsed() >= every
        {
            let seconds = last_stats.elapsed().as_secs_f64();
            let now = inbox.counters();
            let (rows, active) = senders.interval(inbox.loss());
            let report = Interval {
                seconds,
                delivered: delivered.saturating_sub(last_delivered),
                counters: interval_counters(&last_counters, &now),
                senders: rows,
                active,
            };
            if args.format == Format::Json {
                if let Err(e) = writeln!(out, "{}", report.json())
                    .and_then(|()| out.flush())
                    .map_err(stdout_error)
                {
                    break 'recv Err(e);
                }
            } else {
                note!("{}", report.words());
                // One sender: the line above is its line.
                if report.active > 1 {
                    for row in &report.senders {
                        note!("  {}", row.words());
                    }
                    if active > report.senders.len() {
                        note!("{}", senders_shown(report.senders.len(), active));
                    }
                }
            }
            last_stats = Instant::now();
            last_counters = now;
            last_delivered = delivered;
        }
        inbox.poll_files();
        let every = if bars.is_some() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        };
        if last_progress.elapsed() >= every {
            last_progress = Instant::now();
            let (files, lost, recovered) = inbox.file_progress();
            if let Some(bars) = bars.as_mut() {
                bars.update(&files, lost, recovered);
            } else if args.format == Format::Json {
                for f in &files {
                    if let Err(e) = writeln!(out, "{}", f.json(lost))
                        .and_then(|()| out.flush())
                        .map_err(stdout_error)
                    {
                        break 'recv Err(e);
                    }
                }
            }
        }
        while let Some(msg) = inbox.next_file() {
            delivered += 1;
            let (saved, from) = match &msg {
                Delivered::File { file, .. } => (file.saved.clone(), file.from),
                _ => (None, None),
            };
            let from = from.unwrap_or_else(|| (std::net::Ipv4Addr::UNSPECIFIED, 0).into());
            senders.delivered(header_of(&msg).sender_id, from);
            let seen = Seen {
                from,
                at: std::time::SystemTime::now(),
            };
            seen.log(&msg);
            let how = How {
                format: args.format,
                terminal,
                show_sender: args.show_sender,
            };
            if let Err(e) = print(&mut out, how, &msg, saved.as_deref(), &seen) {
                break 'recv Err(e);
            }
            if args.count.is_some_and(|n| delivered >= n) {
                break 'recv Ok(());
            }
        }
        let read = if ending {
            Ok(0)
        } else {
            streak.recv(&mut receiver)
        };
        match read {
            // Idle or a transient error: free the memory of messages
            // that will never complete, even while nothing arrives.
            Ok(0) if !pipe.as_ref().is_some_and(|p| p.busy()) => {
                inbox.expire();
                continue;
            }
            Ok(0) => inbox.expire(),
            Ok(n) => datagrams_read += n as u64,
            Err(e) => break Err(e.into()),
        }
        inbox.set_kernel_drops(receiver.kernel_drops());
        if let Some(pipe) = pipe.as_mut() {
            let keys = inbox.opener().channel_keys();
            let datagrams = receiver
                .datagrams()
                .filter(|(datagram, _)| !relay.as_mut().is_some_and(|sub| sub.take(datagram)));
            let handed = pipe
                .submit(keys, datagrams, &mut checked)
                // All that is done while more waits; all of it before the
                // socket may block, so nothing waits for the next datagram.
                .and_then(|()| {
                    let idle = ending || !super::pipeline::readable(receiver.receiver().as_fd());
                    pipe.collect(idle, &mut checked)
                });
            if let Err(e) = handed {
                break Err(e);
            }
        }
        let batch: Box<dyn Iterator<Item = _>> = match &pipe {
            None => Box::new(receiver.datagrams().map(|(d, from)| (d, from, None))),
            Some(_) => Box::new(
                checked
                    .iter_mut()
                    .flat_map(|job| job.datagrams())
                    .map(|(d, from, verdict)| (d, from, Some(verdict))),
            ),
        };
        for (datagram, from, verdict) in batch {
            if verdict.is_none() && relay.as_mut().is_some_and(|sub| sub.take(datagram)) {
                continue;
            }
            // With --trust, one datagram (a manifest) can release several.
            inbox.set_source(from);
            let first = inbox.take_checked(datagram, Some(from.ip()), verdict);
            let mut released = first
                .into_iter()
                .chain(std::iter::from_fn(|| inbox.next_released()));
            for msg in released.by_ref() {
                delivered += 1;
                senders.delivered(header_of(&msg).sender_id, from);
                let saved = match (&msg, &args.save_dir) {
                    (Delivered::File { file, .. }, _) if file.saved.is_some() => file.saved.clone(),
                    (Delivered::File { file, .. }, Some(dir)) => match save(dir, file) {
                        Ok(path) => Some(path),
                        Err(e) => {
                            // A full disk fails this file, not the receiver.
                            eprintln!("{e}");
                            None
                        }
                    },
                    _ => None,
                };
                let seen = Seen {
                    from,
                    at: std::time::SystemTime::now(),
                };
                seen.log(&msg);
                let how = How {
                    format: args.format,
                    terminal,
                    show_sender: args.show_sender,
                };
                if let Err(e) = print(&mut out, how, &msg, saved.as_deref(), &seen) {
                    break 'recv Err(e);
                }
                if args.count.is_some_and(|n| delivered >= n) {
                    break 'recv Ok(());
                }
            }
            senders.bound(inbox.loss());
        }
        if let Some(pipe) = pipe.as_mut() {
            for job in checked.drain(..) {
                pipe.recycle(job);
            }
        }
    };
    super::notify::stopping();
    if let Some(sub) = &relay {
        sub.leave();
    }
    inbox.finish();
    if let Some(m) = metrics.as_mut() {
        let mut values = inbox.counters();
        values.push(("delivered", delivered));
        values.push(("datagrams_read", datagrams_read));
        m.update(&values, true);
    }
    note!("{}", words(&inbox, delivered));
    let (rows, total) = senders.top(inbox.loss());
    for row in &rows {
        note!("  {}", row.words());
    }
    if total > rows.len() {
        note!("{}", senders_shown(rows.len(), total));
    }
    if args.format == Format::Json {
        let mut stats = serde_json::Map::new();
        stats.insert("type".into(), "stats".into());
        stats.insert("delivered".into(), delivered.into());
        stats.insert("datagrams_read".into(), datagrams_read.into());
        for (name, value) in inbox.counters() {
            stats.insert(name.into(), value.into());
        }
        stats.insert("senders_total".into(), total.into());
        stats.insert(
            "senders".into(),
            rows.iter().map(super::senders::Row::json).collect(),
        );
        let line = serde_json::Value::Object(stats).to_string();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(stdout_error)?;
    }
    result?;
    // Ended early (--duration, a signal) with fewer than --count: a script
    // waiting for N messages must not take that for success.
    match args.count {
        Some(n) if delivered < n => {
            let why = if stopped(&stop) {
                "stopped by a signal".to_owned()
            } else {
                format!(
                    "--duration {} ended",
                    humantime::format_duration(args.duration.unwrap_or_default())
                )
            };
            Err(CliError::incomplete(format!(
                "{delivered} of {n} messages (--count) arrived: {why}"
            )))
        }
        _ => Ok(()),
    }
}

/// Where and when a message came: the source address of the datagram that
/// completed it (its last fragment or symbol, or with --trust the one that
/// released it), and our clock then.
struct Seen {
    from: std::net::SocketAddr,
    at: std::time::SystemTime,
}

impl Seen {
    /// RFC 3339, in UTC, to the microsecond.
    fn time(&self) -> String {
        humantime::format_rfc3339_micros(self.at).to_string()
    }

    /// `-v`: one line per message, where it came from.
    fn log(&self, msg: &Delivered<'_>) {
        let (kind, header) = match msg {
            Delivered::Message { header, .. } => ("message", header),
            Delivered::Chat { header, .. } => ("chat line", header),
            Delivered::File { header, .. } => ("file", header),
        };
        tracing::info!(
            "{kind} from {} (sender {}, key {}, seq {}) at {}",
            self.from,
            header.sender_id,
            header.key_id,
            header.seq,
            self.time()
        );
    }

    /// The JSON fields every message gets.
    fn add_to(&self, header: &Header, m: &mut serde_json::Map<String, serde_json::Value>) {
        m.insert("from".into(), self.from.to_string().into());
        m.insert("key_id".into(), header.key_id.to_string().into());
        m.insert("received".into(), self.time().into());
    }
}

/// How messages are written.
#[derive(Debug, Clone, Copy)]
struct How {
    format: Format,
    terminal: bool,
    show_sender: bool,
}

/// Writes one message. In `lines` format on a terminal, control characters
/// and invalid UTF-8 are replaced, so a sender cannot drive the reader's
/// terminal; piped, the payload's bytes are written as they came.
fn print(
    out: &mut impl Write,
    how: How,
    msg: &Delivered<'_>,
    saved: Option<&Path>,
    seen: &Seen,
) -> Result<(), CliError> {
    let How {
        format,
        terminal,
        show_sender,
    } = how;
    if show_sender && format == Format::Lines {
        let header = header_of(msg);
        write!(out, "[{} {}] ", header.sender_id.short(), seen.from).map_err(stdout_error)?;
    }
    let res = match (format, msg) {
        (
            Format::Json,
            Delivered::File {
                header,
                file,
                signer,
            },
        ) => {
            writeln!(
                out,
                "{}",
                file_json(header, file, saved, signer.as_deref(), seen)
            )
        }
        (Format::Raw, Delivered::File { file, .. }) => {
            // Standard output carries the messages' bytes alone.
            note!("{}", file_line(file, saved));
            Ok(())
        }
        (Format::Lines, Delivered::File { file, .. }) => {
            writeln!(out, "{}", file_line(file, saved))
        }
        (Format::Raw, Delivered::Message { payload, .. }) => out.write_all(payload),
        (Format::Raw, Delivered::Chat { nick, text, .. }) => out.write_all(
            format!(
                "<{}> {}\n",
                super::common::display_nick(nick),
                super::common::printable(text)
            )
            .as_bytes(),
        ),
        (Format::Lines, Delivered::Message { payload, .. }) if terminal => {
            let text = super::common::printable_bytes(payload);
            out.write_all(text.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
        }
        (Format::Lines, Delivered::Message { payload, .. }) => {
            out.write_all(payload).and_then(|()| out.write_all(b"\n"))
        }
        (
            Format::Lines,
            Delivered::Chat {
                header,
                nick,
                text,
                signer,
            },
        ) => out.write_all(
            format!(
                "{}\n",
                super::common::chat_line(header, nick, text, signer.as_deref())
            )
            .as_bytes(),
        ),
        (Format::Json, msg) => writeln!(out, "{}", json(msg, seen)),
    };
    res.and_then(|()| out.flush()).map_err(stdout_error)
}

/// `file "photo.jpg" (1234 bytes, sha256 ...) from SENDER: saved as PATH`.
fn file_line(file: &FileDone, saved: Option<&Path>) -> String {
    let outcome = match saved {
        Some(path) => format!(
            "saved as {}",
            super::common::printable(&path.to_string_lossy())
        ),
        None => "not saved (no --save-dir, or saving failed)".to_owned(),
    };
    format!(
        "file {:?} ({} bytes, sha256 {}) from {}: {outcome}",
        super::common::printable(&file.name),
        file.len,
        mcsec::files::hex(&file.sha256),
        file.sender,
    )
}

fn file_json(
    header: &Header,
    file: &FileDone,
    saved: Option<&Path>,
    signer: Option<&str>,
    seen: &Seen,
) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("type".into(), "file".into());
    m.insert("sender".into(), header.sender_id.to_string().into());
    seen.add_to(header, &mut m);
    if let Some(signer) = signer {
        m.insert("signer".into(), signer.into());
    }
    m.insert("file_id".into(), file.file_id.into());
    m.insert("name".into(), file.name.clone().into());
    m.insert("len".into(), file.len.into());
    m.insert("sha256".into(), mcsec::files::hex(&file.sha256).into());
    m.insert(
        "saved".into(),
        saved.map_or(serde_json::Value::Null, |p| {
            p.to_string_lossy().into_owned().into()
        }),
    );
    serde_json::Value::Object(m)
}

/// `stem-N.ext`, within the 255-byte name limit: the extension keeps at
/// most 200 bytes, the stem what is left.
pub(crate) fn numbered(stem: &str, ext: &str, n: u32) -> String {
    let suffix = format!("-{n}");
    let mut ext_end = ext.len().min(200);
    while !ext.is_char_boundary(ext_end) {
        ext_end -= 1;
    }
    let ext = ext.get(..ext_end).unwrap_or_default();
    let mut end = stem
        .len()
        .min(255usize.saturating_sub(suffix.len() + ext.len()));
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}{ext}", stem.get(..end).unwrap_or_default())
}

/// Writes a received file into `dir` atomically, under its sanitized name
/// (or `file-SENDER-ID`), adding `-1`, `-2` ... before the extension rather
/// than replace an existing file. The file is created mode 0600.
fn save(dir: &Path, file: &FileDone) -> Result<PathBuf, CliError> {
    let name = sanitize_name(&file.name)
        .unwrap_or_else(|| format!("file-{}-{}", file.sender, file.file_id));
    let failed = |what: &str, e: std::io::Error| {
        CliError::new(format!("saving {name:?} in {}: {what}: {e}", dir.display()))
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".mcsec-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|e| failed("creating a temporary file", e))?;
    tmp.write_all(file.data.as_deref().unwrap_or_default())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| failed("writing", e))?;
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name.as_str(), ""),
    };
    for n in 0..1000u32 {
        let candidate = if n == 0 {
            name.clone()
        } else {
            numbered(stem, ext, n)
        };
        let path = dir.join(&candidate);
        match tmp.persist_noclobber(&path) {
            Ok(_) => return Ok(path),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => tmp = e.file,
            Err(e) => return Err(failed("renaming into place", e.error)),
        }
    }
    Err(CliError::new(format!(
        "saving {name:?} in {}: 1000 files of that name exist",
        dir.display()
    ))
    .hint("move or remove old copies"))
}

fn json(msg: &Delivered<'_>, seen: &Seen) -> serde_json::Value {
    let base = |header: &Header, kind: &str, signer: Option<&str>| {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), kind.into());
        m.insert("sender".into(), header.sender_id.to_string().into());
        seen.add_to(header, &mut m);
        m.insert("seq".into(), header.seq.into());
        m.insert("timestamp_us".into(), header.timestamp_us.into());
        if let Some(signer) = signer {
            m.insert("signer".into(), signer.into());
        }
        m
    };
    match msg {
        Delivered::Message {
            header,
            payload,
            signer,
        } => {
            let mut m = base(header, "message", signer.as_deref());
            match std::str::from_utf8(payload) {
                Ok(text) => m.insert("payload".into(), text.into()),
                Err(_) => m.insert(
                    "payload_b64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(payload)
                        .into(),
                ),
            };
            serde_json::Value::Object(m)
        }
        Delivered::Chat {
            header,
            nick,
            text,
            signer,
        } => {
            let mut m = base(header, "chat", signer.as_deref());
            m.insert("nick".into(), nick.as_ref().into());
            m.insert("text".into(), text.as_ref().into());
            serde_json::Value::Object(m)
        }
        Delivered::File {
            header,
            file,
            signer,
        } => file_json(header, file, None, signer.as_deref(), seen),
    }
}

/// The header of the frame that completed a message.
fn header_of<'m>(msg: &'m Delivered<'_>) -> &'m Header {
    match msg {
        Delivered::Message { header, .. }
        | Delivered::Chat { header, .. }
        | Delivered::File { header, .. } => header,
    }
}

/// `  (the 8 senders with the most frames of 12)`.
fn senders_shown(shown: usize, total: usize) -> String {
    format!("  (the {shown} senders with the most frames, of {total})")
}

/// What happened in one --stats-interval.
struct Interval {
    seconds: f64,
    delivered: u64,
    counters: Vec<(&'static str, u64)>,
    /// The busiest senders in the interval, and how many were active.
    senders: Vec<super::senders::Row>,
    active: usize,
}

impl Interval {
    /// `last 1.0 s: 20 messages delivered (20.0/s); ...`.
    fn words(&self) -> String {
        format!(
            "last {:.1} s: {} ({:.1}/s)",
            self.seconds,
            counter_words(&self.counters, self.delivered),
            self.delivered as f64 / self.seconds.max(1e-9)
        )
    }

    fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), "interval".into());
        m.insert("seconds".into(), self.seconds.into());
        m.insert("delivered".into(), self.delivered.into());
        m.insert(
            "delivered_per_s".into(),
            (self.delivered as f64 / self.seconds.max(1e-9)).into(),
        );
        for (name, value) in &self.counters {
            m.insert((*name).into(), (*value).into());
        }
        m.insert("senders_active".into(), self.active.into());
        m.insert(
            "senders".into(),
            self.senders.iter().map(super::senders::Row::json).collect(),
        );
        serde_json::Value::Object(m)
    }
}

/// Each counter's growth from `before` to `after` (same names, same order).
fn interval_counters(
    before: &[(&'static str, u64)],
    after: &[(&'static str, u64)],
) -> Vec<(&'static str, u64)> {
    after
        .iter()
        .map(|(name, now)| {
            let was = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v);
            (*name, now.saturating_sub(was))
        })
        .collect()
}

/// The counters in words: "3 messages delivered; 1 of 4 frames lost
/// (25.0%); dropped: 1 replayed, ...". Lost, duplicate and reordered frames
/// are what the network did; "dropped" is what this receiver refused.
pub(crate) fn words(inbox: &Inbox, delivered: u64) -> String {
    counter_words(&inbox.counters(), delivered)
}

fn counter_words(counters: &[(&'static str, u64)], delivered: u64) -> String {
    let get = |want: &str| {
        counters
            .iter()
            .find(|(name, _)| *name == want)
            .map_or(0, |(_, v)| *v)
    };
    let dropped: Vec<String> = counters
        .iter()
        .filter(|(name, v)| {
            *v > 0
                && !matches!(
                    *name,
                    "frames_opened"
                        | "messages_reassembled"
                        | "files_completed"
                        // Parts of `stale`, not drops of their own.
                        | "stale_past"
                        | "stale_future"
                        | "stale_forgotten"
                        // Signatures that did their job; and the second
                        // copy of each manifest, sent on purpose.
                        | "frames_signed"
                        | "manifests_verified"
                        | "manifest_duplicate"
                        | "manifests_ignored"
                        // What the network did: said apart, below.
                        | "frames_received"
                        | "lost"
                        | "duplicates"
                        | "reordered"
                        | "kernel_drops"
                )
        })
        .map(|(name, v)| format!("{v} {}", name.replace('_', " ")))
        .collect();
    let plural = if delivered == 1 { "" } else { "s" };
    let mut out = format!("{delivered} message{plural} delivered");
    let (received, lost) = (get("frames_received"), get("lost"));
    let sent = received.saturating_add(lost);
    if sent > 0 {
        out.push_str(&format!(
            "; {lost} of {sent} frames lost ({:.1}%)",
            lost as f64 * 100.0 / sent as f64
        ));
    }
    for (name, what) in [
        ("duplicates", "duplicate"),
        ("reordered", "reordered"),
        (
            "kernel_drops",
            "dropped by the kernel (receive buffer full)",
        ),
    ] {
        let n = get(name);
        if n > 0 {
            out.push_str(&format!(", {n} {what}"));
        }
    }
    if dropped.is_empty() {
        out.push_str("; nothing dropped");
    } else {
        out.push_str(&format!("; dropped: {}", dropped.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn numbered_names_stay_within_255_bytes() {
        assert_eq!(numbered("photo", ".jpg", 1), "photo-1.jpg");
        // Found in review: a 253-byte extension made a 257-byte name.
        let ext = format!(".{}", "x".repeat(252));
        let name = numbered("ab", &ext, 1);
        assert!(name.len() <= 255, "{}", name.len());
        assert!(name.contains("-1."));
        let long = numbered(&"é".repeat(200), ".txt", 999);
        assert!(long.len() <= 255 && long.ends_with("-999.txt"), "{long}");
    }
}
