//! `mcsec recv`: receive, authenticate and print a group's messages.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use mcsec::net::Receiver;
use mcsec::reassembly::{Reassembler, ReassemblyConfig};
use mcsec::{Header, Opener, OpenerConfig};

use super::common::{
    Delivered, ErrorStreak, Inbox, KeyArgs, NetArgs, load_keyring, parse_bytes, parse_duration,
    parse_source, stop_flag, stopped,
};
use super::{CliError, CliResult, stdout_error};

/// How long one wait for a datagram lasts before the loop looks at signals,
/// timers and the stats interval.
const POLL: Duration = Duration::from_millis(100);

/// Receive a group's messages and print those that authenticate.
///
/// Every datagram is checked (size, key, freshness, replay, then the AEAD)
/// before anything is printed; a bad datagram is counted and dropped, never
/// fatal. Large messages sent in fragments are put back together, within
/// --max-message bytes each. On exit (--count reached, --duration over,
/// Ctrl-C or SIGTERM) the counters go to standard error, and in json mode
/// also to standard output as a `{"type":"stats",...}` line.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  mcsec recv -k group.key -g 239.255.0.1:5000 -i eth0
  mcsec recv -k group.key -g 239.255.0.1:5000 -i lo --format json --count 10
  mcsec recv -k group.key -g 232.1.1.1:5000 -i eth0 -s 192.0.2.7   (source-specific)")]
pub(crate) struct Args {
    #[command(flatten)]
    key: KeyArgs,

    #[command(flatten)]
    net: NetArgs,

    /// Source-specific multicast: only receive datagrams from this source
    /// address (IPv4: IP_ADD_SOURCE_MEMBERSHIP; IPv6, on Linux:
    /// MCAST_JOIN_SOURCE_GROUP).
    #[arg(short, long, value_name = "ADDR", value_parser = parse_source)]
    source: Option<IpAddr>,

    /// Output: `lines` (each message and a newline), `raw` (the bytes
    /// alone) or `json` (one object per line; payload_b64 when not UTF-8).
    #[arg(short, long, value_enum, default_value_t = Format::Lines)]
    format: Format,

    /// Stop after this many messages.
    #[arg(short = 'n', long, value_name = "N")]
    count: Option<u64>,

    /// Stop after this long (e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Print the counters to standard error this often (e.g. 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stats_interval: Option<Duration>,

    /// Largest clock difference accepted between sender and receiver.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    max_skew: Duration,

    /// Reject frames stamped before this receiver started: no replay of
    /// traffic recorded earlier, at the price of not hearing senders whose
    /// clock runs behind ours.
    #[arg(long)]
    strict_start: bool,

    /// Ask the kernel for this receive buffer (e.g. 16M); warns when it
    /// grants less.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    rcvbuf: Option<usize>,

    /// Largest message reassembled from fragments.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes, default_value = "1M")]
    max_message: usize,

    /// How long a fragmented message may wait for its next piece before it
    /// is dropped (raise it for large messages sent at a low --rate).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    reassembly_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Lines,
    Raw,
    Json,
}

pub(crate) fn run(args: Args) -> CliResult {
    let keyring = load_keyring(&args.key.key)?;
    let mut opts = args.net.options(None);
    opts.source = args.source;
    opts.rcvbuf = args.rcvbuf;
    let max_datagram = args.net.max_datagram();
    let mut config = OpenerConfig::default();
    config.max_skew = args.max_skew;
    config.max_datagram = max_datagram;
    config.not_before_us = args.strict_start.then(mcsec::now_us);
    let mut reassembly = ReassemblyConfig::default();
    reassembly.max_message = args.max_message;
    reassembly.timeout = args.reassembly_timeout;
    // Room for two of the largest messages at once, and never less than the
    // default. Memory is charged for bytes received, not announced, so this
    // is what key holders can make us hold, not what one frame can claim.
    reassembly.max_total = args.max_message.saturating_mul(2).max(reassembly.max_total);
    let mut inbox = Inbox::new(Opener::new(keyring, config), Reassembler::new(reassembly));
    let terminal = std::io::stdout().is_terminal();

    let stop = stop_flag()?;
    let receiver = Receiver::open(args.net.group, &opts)?;
    if let Some(buf) = receiver.rcvbuf()
        && buf.granted < buf.requested
    {
        eprintln!(
            "warning: asked for a {} byte receive buffer, the kernel granted {}\n\
             hint: raise the limit: sysctl -w net.core.rmem_max={}",
            buf.requested, buf.granted, buf.requested
        );
    }
    receiver.set_timeout(Some(POLL))?;
    tracing::info!("receiving on {}", args.net.group);

    // Batches: a whole GRO run, or up to 32 datagrams, per syscall. A
    // datagram longer than the largest frame accepted still shows up as
    // oversize instead of being cut to fit.
    let mut receiver = receiver.batched(max_datagram);
    let started = Instant::now();
    let mut last_stats = Instant::now();
    let mut delivered: u64 = 0;
    let mut streak = ErrorStreak::default();
    let mut out = std::io::stdout().lock();
    let result = 'recv: loop {
        if stopped(&stop) {
            break Ok(());
        }
        if args.count.is_some_and(|n| delivered >= n) {
            break Ok(());
        }
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break Ok(());
        }
        if let Some(every) = args.stats_interval
            && last_stats.elapsed() >= every
        {
            eprintln!("{}", words(&inbox, delivered));
            last_stats = Instant::now();
        }
        match streak.recv(&mut receiver) {
            Ok(0) => {
                // Idle or a transient error: free the memory of messages
                // that will never complete, even while nothing arrives.
                inbox.expire();
                continue;
            }
            Ok(_) => {}
            Err(e) => break Err(e.into()),
        }
        for (datagram, _from) in receiver.datagrams() {
            let Some(msg) = inbox.take(datagram) else {
                continue;
            };
            delivered += 1;
            if let Err(e) = print(&mut out, args.format, terminal, &msg) {
                break 'recv Err(e);
            }
            if args.count.is_some_and(|n| delivered >= n) {
                break 'recv Ok(());
            }
        }
    };
    eprintln!("{}", words(&inbox, delivered));
    if args.format == Format::Json {
        let mut stats = serde_json::Map::new();
        stats.insert("type".into(), "stats".into());
        stats.insert("delivered".into(), delivered.into());
        for (name, value) in inbox.counters() {
            stats.insert(name.into(), value.into());
        }
        let line = serde_json::Value::Object(stats).to_string();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(stdout_error)?;
    }
    result
}

/// Writes one message. In `lines` format on a terminal, control characters
/// and invalid UTF-8 are replaced, so a sender cannot drive the reader's
/// terminal; piped, the payload's bytes are written as they came.
fn print(
    out: &mut impl Write,
    format: Format,
    terminal: bool,
    msg: &Delivered<'_>,
) -> Result<(), CliError> {
    let res = match (format, msg) {
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
        (Format::Lines, Delivered::Chat { header, nick, text }) => out.write_all(
            format!(
                "<{}@{}> {}\n",
                super::common::display_nick(nick),
                header.sender_id.short(),
                super::common::printable(text)
            )
            .as_bytes(),
        ),
        (Format::Json, msg) => writeln!(out, "{}", json(msg)),
    };
    res.and_then(|()| out.flush()).map_err(stdout_error)
}

fn json(msg: &Delivered<'_>) -> serde_json::Value {
    let base = |header: &Header, kind: &str| {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), kind.into());
        m.insert("sender".into(), header.sender_id.to_string().into());
        m.insert("seq".into(), header.seq.into());
        m.insert("timestamp_us".into(), header.timestamp_us.into());
        m
    };
    match msg {
        Delivered::Message { header, payload } => {
            let mut m = base(header, "message");
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
        Delivered::Chat { header, nick, text } => {
            let mut m = base(header, "chat");
            m.insert("nick".into(), (*nick).into());
            m.insert("text".into(), (*text).into());
            serde_json::Value::Object(m)
        }
    }
}

/// The counters in words: "3 messages delivered; dropped: 1 replayed, ...".
pub(crate) fn words(inbox: &Inbox, delivered: u64) -> String {
    let dropped: Vec<String> = inbox
        .counters()
        .into_iter()
        .filter(|(name, v)| *v > 0 && *name != "frames_opened" && *name != "messages_reassembled")
        .map(|(name, v)| format!("{v} {}", name.replace('_', " ")))
        .collect();
    let plural = if delivered == 1 { "" } else { "s" };
    if dropped.is_empty() {
        format!("{delivered} message{plural} delivered; nothing dropped")
    } else {
        format!(
            "{delivered} message{plural} delivered; dropped: {}",
            dropped.join(", ")
        )
    }
}
