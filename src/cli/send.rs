//! `mcsec send`: seal messages and send them to a group.

use std::io::{BufRead, Read};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use super::common::{
    KeyArgs, KeyFile, NetArgs, Outbox, Pacer, SendArgs, SignArgs, parse_chunk, parse_duration,
    parse_file_size, parse_rate, stopped,
};

/// The pace of `--file` without --rate or --pps: a tenth of a gigabit
/// link, so a file sent on a shared LAN leaves room for everyone else
/// (and for receivers to keep up). `--rate unlimited` opts out.
const DEFAULT_FILE_RATE: u64 = 100_000_000;

/// An unpaced send warns once it has sent this many datagrams back to
/// back at more than [`FLOOD_DATAGRAMS_PER_SEC`]: about 370 kB, more than
/// a receiver's default buffer (rmem_default, 208 KiB) holds.
const FLOOD_DATAGRAMS: u64 = 256;

/// See [`FLOOD_DATAGRAMS`]: 10,000 full datagrams a second is about
/// 120 Mbit/s.
const FLOOD_DATAGRAMS_PER_SEC: f64 = 10_000.0;
use super::{CliError, CliResult};

/// Seal messages with the group key and send them to a multicast group.
///
/// By default every line of standard input is one message (without its
/// newline). With --raw, standard input is cut into --chunk byte messages.
/// With --message, one text is sent every --interval. A message too large
/// for one datagram is sent in fragments that receivers put back together.
/// Every datagram is sealed: only holders of the key can read it, and
/// receivers drop copies, old frames and forgeries.
///
/// With --file, files and directories of any size go out as RaptorQ FEC
/// symbols, one per datagram, in a carousel of --repeat passes: the first
/// sends each file's source symbols and --repair percent repair symbols,
/// each later pass as many fresh repair symbols. There is no back channel:
/// a receiver that lost some datagrams, or joined during a later pass,
/// completes a file from any pass's worth of symbols (`mcsec recv
/// --save-dir DIR`), and checks its SHA-256 before keeping it. Files are
/// read from disk a few blocks at a time (memory stays bounded at any
/// size) and must not change while they are sent. Symbolic links inside a
/// directory are skipped; a file replaced by a link, a FIFO or another
/// file after it was listed is skipped with a warning.
///
/// Frames are sealed for the group and port (or --channel): receivers on
/// any other group, port or channel reject them. The last key of the key
/// file seals. On SIGHUP (`kill -HUP PID`) the key file is read again
/// before the next message; if its last key changed (`mcsec key rotate`),
/// a new sender session starts under it. A file being sent keeps its key.
/// SIGHUP does not end `send` (a hung-up terminal included): end a repeating
/// send with Ctrl-C or SIGTERM.
///
/// With --sign FILE (a key from `mcsec signer new`), every --sign-every
/// frames, or --sign-interval after the first of them, a manifest of their
/// hashes is signed with Ed25519 and sent before them and once more after
/// them. Receivers that --trust the key's public line deliver only what it
/// signed; everything else (lines, --message, --raw, fragments, files with
/// their name, size and hash) works as without it. Frames wait at most
/// --sign-interval for their signature.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  echo hello | mcsec send -k group.key -g 239.255.0.1:5000 -i eth0
  mcsec send -k group.key -g 239.255.0.1:5000 -i lo --message tick --interval 1s --count 5
  mcsec send -k group.key -g 239.255.0.1:5000 -i eth0 --raw --chunk 64k --rate 100M < file
  mcsec send -k group.key -g 239.255.0.1:5000 -i eth0 --file photo.jpg --rate 20M
  mcsec send -k group.key -g 239.255.0.1:5000 -i eth0 --file disk.img --max-file 256M --repeat 10 --rate 50M
  mcsec send -k group.key -g 239.255.0.1:5000 -i eth0 --sign feed.signer --message tick --interval 1s

Defaults: TTL 1 (the local link only), loop on, one message per line;
with --file, 3 passes, 10% repair symbols and a 100M pace (--rate
unlimited: none). Other sends are unpaced, and warn if they flood.")]
pub(crate) struct Args {
    #[command(flatten)]
    key: KeyArgs,

    #[command(flatten)]
    net: NetArgs,

    #[command(flatten)]
    send: SendArgs,

    #[command(flatten)]
    sign: SignArgs,

    #[command(flatten)]
    metrics: super::metrics::MetricsArgs,

    #[command(flatten)]
    relay: super::relay_client::RelayArgs,

    /// Read standard input as bytes, cut into --chunk byte messages,
    /// instead of as lines.
    #[arg(long, conflicts_with = "message")]
    raw: bool,

    /// Message size for --raw (e.g. 1400, 64k). Default: what fits in one
    /// datagram.
    #[arg(long, value_name = "BYTES", value_parser = parse_chunk, requires = "raw")]
    chunk: Option<usize>,

    /// Send this text instead of reading standard input.
    #[arg(short, long, value_name = "TEXT", conflicts_with = "file")]
    message: Option<String>,

    /// Send this file, or this directory and everything under it, as
    /// RaptorQ FEC symbols in a carousel (see above), instead of reading
    /// standard input. Repeat it for more. Receivers see a file's base
    /// name, and a directory's files under the directory's name.
    #[arg(long, value_name = "PATH", conflicts_with = "raw")]
    file: Vec<PathBuf>,

    /// With --file: passes of the carousel. More passes let receivers that
    /// join late, or lose more, still complete the file.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "file",
          value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,

    /// With --file: repair symbols per pass, as a percentage of the file's
    /// source symbols (the loss a single pass survives, roughly).
    #[arg(long, value_name = "PERCENT", default_value_t = 10, requires = "file",
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    repair: u32,

    /// With --file: source symbols per block (at most 8192, and 4 MiB of
    /// them), for benchmarks: larger blocks survive more loss for the same
    /// repair percentage, smaller ones decode faster.
    #[arg(long, value_name = "N", default_value_t = mcsec::transfer::stream::DEFAULT_BLOCK_SYMBOLS,
          requires = "file", hide = true,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(mcsec::transfer::stream::MAX_BLOCK_SYMBOLS)))]
    block_symbols: u32,

    /// With --file: refuse files larger than this (receivers refuse files
    /// over their own --max-file, 16G by default).
    #[arg(env = "MCSEC_MAX_FILE", long, value_name = "BYTES", value_parser = parse_file_size, default_value = "16G",
          requires = "file")]
    max_file: u64,

    /// With --message: wait this long between messages (e.g. 1s, 250ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "message")]
    interval: Option<Duration>,

    /// With --message: send it this many times. Default: once, or forever
    /// with --interval.
    #[arg(short = 'n', long, value_name = "N", requires = "message")]
    count: Option<u64>,

    /// Pace to this many bits per second, counting IP and UDP headers
    /// (k, M, G: powers of 1000; e.g. 100M). `unlimited` (or 0): no pace.
    /// Default: 100M with --file (unless --pps); otherwise no pace, and a
    /// warning when a send floods (256 datagrams back to back at over
    /// 10,000 a second).
    #[arg(env = "MCSEC_RATE", long, value_name = "BITS", value_parser = parse_send_rate)]
    rate: Option<Rate>,

    /// Pace to at most this many datagrams per second.
    #[arg(env = "MCSEC_PPS", long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pps: Option<u64>,

    /// Seal on N worker threads (1 to 64): this thread numbers the frames
    /// and sends the sealed batches in order, so receivers see what one
    /// thread sends. 1 (the default) starts no threads. It pays with
    /// batches (--raw, --file); a line at a time gains nothing. Not with
    /// --sign.
    #[arg(env = "MCSEC_THREADS", long, value_name = "N", default_value_t = 1,
          value_parser = super::pipeline::parse_threads)]
    threads: usize,

    /// The summary at the end: `text` (one line on standard error, not
    /// under -q) or `json` (one object on standard output).
    #[arg(env = "MCSEC_SEND_FORMAT", long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// What --rate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rate {
    Bits(u64),
    /// `--rate unlimited` or `--rate 0`: no pace, and no warning.
    Unlimited,
}

fn parse_send_rate(s: &str) -> Result<Rate, String> {
    match s {
        "0" | "unlimited" => Ok(Rate::Unlimited),
        _ => parse_rate(s)
            .map(Rate::Bits)
            .map_err(|e| format!("{e}, or unlimited (no pace)")),
    }
}

/// The bit rate a send is paced to: --rate, or for a file without --rate
/// and --pps, [`DEFAULT_FILE_RATE`].
fn effective_rate(rate: Option<Rate>, file: bool, pps: Option<u64>) -> Option<u64> {
    match rate {
        Some(Rate::Bits(bits)) => Some(bits),
        Some(Rate::Unlimited) => None,
        None if file && pps.is_none() => Some(DEFAULT_FILE_RATE),
        None => None,
    }
}

/// Notices an unpaced send that floods the network: [`FLOOD_DATAGRAMS`]
/// or more sent at over [`FLOOD_DATAGRAMS_PER_SEC`]. Time comes in as an
/// argument; the caller prints the warning once.
#[derive(Debug)]
struct FloodWatch {
    since: std::time::Instant,
    datagrams: u64,
    bytes: u64,
    warned: bool,
}

impl FloodWatch {
    fn new(now: std::time::Instant) -> Self {
        Self {
            since: now,
            datagrams: 0,
            bytes: 0,
            warned: false,
        }
    }

    /// With the running totals sent so far: the rate of a flood just seen
    /// (datagrams and bits a second), the first time only.
    fn check(&mut self, now: std::time::Instant, datagrams: u64, bytes: u64) -> Option<(f64, f64)> {
        if self.warned {
            return None;
        }
        let n = datagrams.saturating_sub(self.datagrams);
        let secs = now.saturating_duration_since(self.since).as_secs_f64();
        if n < FLOOD_DATAGRAMS {
            // Too few yet: a slow sender restarts the window each second.
            if secs >= 1.0 {
                self.since = now;
                self.datagrams = datagrams;
                self.bytes = bytes;
            }
            return None;
        }
        let pps = n as f64 / secs.max(1e-6);
        let bps = bytes.saturating_sub(self.bytes) as f64 * 8.0 / secs.max(1e-6);
        self.since = now;
        self.datagrams = datagrams;
        self.bytes = bytes;
        if pps < FLOOD_DATAGRAMS_PER_SEC {
            return None;
        }
        self.warned = true;
        Some((pps, bps))
    }
}

/// What a send did, for the summary line.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Summary {
    messages: u64,
    datagrams: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Summary {
    /// Datagrams a second and bits a second (UDP payload) over `elapsed`.
    fn rates(&self) -> (f64, f64) {
        let secs = self.elapsed.as_secs_f64();
        if secs <= 0.0 {
            return (0.0, 0.0);
        }
        (self.datagrams as f64 / secs, self.bytes as f64 * 8.0 / secs)
    }

    fn text(&self) -> String {
        let (pps, bps) = self.rates();
        format!(
            "sent {} message{} in {} datagram{} ({} bytes) in {:.3} s: {:.1} datagrams/s, {}",
            self.messages,
            if self.messages == 1 { "" } else { "s" },
            self.datagrams,
            if self.datagrams == 1 { "" } else { "s" },
            self.bytes,
            self.elapsed.as_secs_f64(),
            pps,
            bits_per_sec(bps)
        )
    }

    fn json(&self) -> String {
        let (pps, bps) = self.rates();
        serde_json::json!({
            "type": "summary",
            "messages": self.messages,
            "datagrams": self.datagrams,
            "bytes": self.bytes,
            "seconds": self.elapsed.as_secs_f64(),
            "datagrams_per_sec": pps,
            "bits_per_sec": bps,
        })
        .to_string()
    }
}

/// A bit rate for people: 1.2 Mbit/s.
fn bits_per_sec(bps: f64) -> String {
    match bps {
        b if b >= 1e9 => format!("{:.2} Gbit/s", b / 1e9),
        b if b >= 1e6 => format!("{:.2} Mbit/s", b / 1e6),
        b if b >= 1e3 => format!("{:.2} kbit/s", b / 1e3),
        b => format!("{b:.0} bit/s"),
    }
}

pub(crate) fn run(args: Args) -> CliResult {
    let (keys, keyring) = KeyFile::open(&args.key.key)?;
    let signing = args.sign.signing()?;
    // Look at the files before joining anything: a bad path fails fast.
    let files = if args.file.is_empty() {
        None
    } else {
        Some(super::sendfile::collect(&args.file, args.max_file)?)
    };
    let sender = super::relay_client::open_sender(
        &args.relay,
        args.net.group,
        &args.net.options(Some(&args.send)),
    )?;
    if let Some(hint) = args.net.group.ttl_hint(args.send.ttl) {
        tracing::warn!("{hint} (-t N)");
    }
    // Ctrl-C and SIGTERM end a paced or repeating send promptly; without a
    // handler installed, they end the process at once, as they should. A
    // signing send catches them too, to send its open batch first.
    let rate = effective_rate(args.rate, files.is_some(), args.pps);
    if files.is_some() && args.rate.is_none() && args.pps.is_none() {
        note!(
            "pacing the file to {} (the default for --file; --rate sets another, --rate \
             unlimited none)",
            bits_per_sec(DEFAULT_FILE_RATE as f64)
        );
    }
    let paced = rate.is_some() || args.pps.is_some();
    tracing::info!(
        "pace: {}{}",
        rate.map_or_else(|| "no bit rate".to_owned(), |r| bits_per_sec(r as f64)),
        args.pps
            .map_or_else(String::new, |n| format!(", at most {n} datagrams/s"))
    );
    let signs = args.sign.sign.is_some();
    // Under a systemd watchdog, waits for input must wake to ping.
    let watchdog = super::notify::watchdog_on();
    let stop = if args.message.is_some() || files.is_some() || paced || signs || watchdog {
        Some(super::common::stop_flag()?)
    } else {
        None
    };
    let mut pacer = Pacer::new(rate, args.pps, args.net.group.is_ipv6());
    if let Some(stop) = &stop {
        pacer = pacer.stop_on(std::sync::Arc::clone(stop));
    }
    let mut outbox = Outbox::new(
        keyring,
        args.net.channel(),
        sender,
        args.net.max_datagram(),
        pacer,
        signing,
    )?;
    outbox.use_threads(args.threads)?;
    outbox.watch_keys(keys);
    outbox.serve_metrics(args.metrics.metrics)?;
    super::notify::ready(&format!("sending to {}", args.net.group));
    let started = std::time::Instant::now();
    // Unpaced, and not on purpose (--rate unlimited): say so if it floods.
    let mut flood = (!paced && args.rate.is_none()).then(|| FloodWatch::new(started));
    let mut watch = |outbox: &Outbox| {
        if let Some(w) = flood.as_mut()
            && let Some((pps, bps)) =
                w.check(std::time::Instant::now(), outbox.datagrams, outbox.bytes)
        {
            note!(
                "warning: sending unpaced: {FLOOD_DATAGRAMS} datagrams or more went out back \
                 to back ({pps:.0} datagrams/s, {}), which can crowd a shared LAN and overflow \
                 receivers' buffers\n\
                 hint: pace with --rate (e.g. --rate 100M) or --pps; --rate unlimited says it \
                 is meant (and silences this)",
                bits_per_sec(bps)
            );
        }
    };

    if let Some(files) = files {
        let carousel = super::sendfile::Carousel {
            repeat: args.repeat,
            repair: args.repair,
            block_symbols: args.block_symbols,
        };
        super::sendfile::send_files(&mut outbox, files, carousel, stop.as_deref())?;
    } else if let Some(text) = &args.message {
        let count = args
            .count
            .unwrap_or(if args.interval.is_some() { u64::MAX } else { 1 });
        let stop = match stop {
            Some(stop) => stop,
            None => super::common::stop_flag()?,
        };
        for i in 0..count {
            if super::common::stopped(&stop) {
                break;
            }
            if i > 0
                && let Some(every) = args.interval
            {
                outbox.sleep(&stop, every)?;
                if super::common::stopped(&stop) {
                    break;
                }
            }
            outbox.send_message(text.as_bytes())?;
            watch(&outbox);
        }
    } else if args.raw {
        let chunk = args
            .chunk
            .unwrap_or_else(|| outbox.max_plaintext().saturating_sub(4))
            .max(1);
        let mut buf = vec![0u8; chunk];
        // Our own buffer over standard input, so we can tell whether more
        // input is waiting: while it is, datagrams are sent in batches; when
        // the producer is slower than the network, each goes at once.
        let mut input = stdin_reader()?;
        loop {
            if stop.as_deref().is_some_and(stopped) {
                break;
            }
            let n = read_chunk(&mut input, &mut buf, &mut outbox, stop.as_deref())?;
            let Some(piece) = buf.get(..n) else { break };
            if piece.is_empty() {
                break;
            }
            outbox.queue_message(piece)?;
            watch(&outbox);
            if n < chunk {
                break;
            }
        }
        outbox.flush()?;
    } else {
        let mut input = stdin_reader()?;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = read_line(&mut input, &mut line, &mut outbox, stop.as_deref())?;
            if n == 0 || stop.as_deref().is_some_and(stopped) {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            outbox.send_message(&line)?;
            watch(&outbox);
        }
    }
    outbox.finish()?;
    watch(&outbox);
    outbox.update_metrics(true);
    super::notify::stopping();
    tracing::info!(
        "sent {} messages in {} datagrams ({} batches) as sender {}",
        outbox.messages,
        outbox.datagrams,
        outbox.batches,
        outbox.sender_id()
    );
    let summary = Summary {
        messages: outbox.messages,
        datagrams: outbox.datagrams,
        bytes: outbox.bytes,
        elapsed: started.elapsed(),
    };
    match args.format {
        Format::Text => note!("{}", summary.text()),
        Format::Json => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", summary.json())
                .and_then(|()| out.flush())
                .map_err(super::stdout_error)?;
        }
    }
    Ok(())
}

/// Standard input through our own buffer, so we can tell whether more
/// input is waiting (and wait for it with a timeout).
fn stdin_reader() -> Result<std::io::BufReader<std::fs::File>, CliError> {
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| CliError::new(format!("reading standard input: {e}")))?;
    Ok(std::io::BufReader::with_capacity(
        256 << 10,
        std::fs::File::from(stdin),
    ))
}

/// Reads until `buf` is full or input ends; returns the bytes read. Before
/// any read that would block, sends what `outbox` holds: a datagram never
/// waits on a slow producer, only on the batch it is part of.
fn read_chunk(
    input: &mut std::io::BufReader<std::fs::File>,
    buf: &mut [u8],
    outbox: &mut Outbox,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<usize, CliError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        if !more_waiting(input) {
            outbox.flush()?;
            if !outbox.wait_readable(input.get_ref().as_fd(), stop)? {
                break;
            }
        }
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // What was read before the error still goes out.
                outbox.finish()?;
                return Err(CliError::new(format!("reading standard input: {e}")));
            }
        }
    }
    Ok(filled)
}

/// Reads one line into `line` (with its newline, if it has one); returns
/// its length, 0 at the end of input. Signed: a batch waiting for more
/// lines goes out when its time is up, not when the next line is complete,
/// so no read that could block starts while a batch is open. Stopped
/// (`stop` set) while waiting: 0, the partial line dropped.
fn read_line(
    input: &mut std::io::BufReader<std::fs::File>,
    line: &mut Vec<u8>,
    outbox: &mut Outbox,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<usize, CliError> {
    loop {
        let buffered = input.buffer();
        if let Some(end) = buffered.iter().position(|b| *b == b'\n') {
            line.extend_from_slice(buffered.get(..=end).unwrap_or_default());
            input.consume(end + 1);
            return Ok(line.len());
        }
        // Part of a line: keep it, and wait for the rest.
        let partial = buffered.len();
        line.extend_from_slice(buffered);
        input.consume(partial);
        if !outbox.wait_readable(input.get_ref().as_fd(), stop)? {
            line.clear();
            return Ok(0);
        }
        match input.fill_buf() {
            Ok([]) => return Ok(line.len()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CliError::new(format!("reading standard input: {e}"))),
        }
    }
}

/// Whether reading `input` now would not block: bytes buffered, or the
/// descriptor readable (or at its end).
fn more_waiting(input: &std::io::BufReader<std::fs::File>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    if !input.buffer().is_empty() {
        return true;
    }
    let mut fds = [PollFd::new(input.get_ref().as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_gives_counts_and_rates() {
        let s = Summary {
            messages: 10,
            datagrams: 20,
            bytes: 25_000,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            s.text(),
            "sent 10 messages in 20 datagrams (25000 bytes) in 2.000 s: 10.0 datagrams/s, 100.00 kbit/s"
        );
        let j: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
        assert_eq!(j["type"], "summary");
        assert_eq!(j["datagrams"], 20);
        assert_eq!(j["bytes"], 25_000);
        assert_eq!(j["bits_per_sec"], 100_000.0);
        let none = Summary {
            elapsed: Duration::ZERO,
            ..s
        };
        assert_eq!(none.rates(), (0.0, 0.0));
    }

    #[test]
    fn a_flood_is_noticed_once_and_a_trickle_never() {
        use std::time::Instant;
        let t0 = Instant::now();
        let mut w = FloodWatch::new(t0);
        // 1000 datagrams over 10 s: 100 a second, never a flood.
        for i in 1..=1000u64 {
            let at = t0 + Duration::from_millis(i * 10);
            assert_eq!(w.check(at, i, i * 1400), None, "{i}");
        }
        // Then 300 in 10 ms: 30,000 a second.
        let at = t0 + Duration::from_millis(10_010);
        let (pps, bps) = w.check(at, 1300, 1300 * 1400).expect("a flood");
        assert!((pps - 30_000.0).abs() < 1.0, "{pps}");
        assert!((bps - 30_000.0 * 1400.0 * 8.0).abs() < 1e3, "{bps}");
        // Once only.
        let later = at + Duration::from_millis(10);
        assert_eq!(w.check(later, 2000, 2000 * 1400), None);
        // 255 back to back is not yet a flood.
        let mut w = FloodWatch::new(t0);
        assert_eq!(w.check(t0 + Duration::from_millis(1), 255, 0), None);
    }

    #[test]
    fn files_default_to_a_pace_that_rate_or_pps_replace() {
        assert_eq!(effective_rate(None, true, None), Some(DEFAULT_FILE_RATE));
        assert_eq!(effective_rate(None, true, Some(100)), None);
        assert_eq!(effective_rate(Some(Rate::Unlimited), true, None), None);
        assert_eq!(effective_rate(Some(Rate::Bits(5)), true, None), Some(5));
        assert_eq!(effective_rate(None, false, None), None);
        assert_eq!(parse_send_rate("unlimited"), Ok(Rate::Unlimited));
        assert_eq!(parse_send_rate("0"), Ok(Rate::Unlimited));
        assert_eq!(parse_send_rate("20M"), Ok(Rate::Bits(20_000_000)));
    }
}
