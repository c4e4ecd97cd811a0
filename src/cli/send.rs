//! `mcsec send`: seal messages and send them to a group.

use std::io::{BufRead, Read};
use std::os::fd::AsFd;
use std::time::Duration;

use mcsec::net;

use super::common::{
    KeyArgs, NetArgs, Outbox, Pacer, SendArgs, load_keyring, parse_bytes, parse_duration,
    parse_rate, stopped,
};
use super::{CliError, CliResult};

/// Seal messages with the group key and send them to a multicast group.
///
/// By default every line of standard input is one message (without its
/// newline). With --raw, standard input is cut into --chunk byte messages.
/// With --message, one text is sent every --interval. A message too large
/// for one datagram is sent in fragments that receivers put back together.
/// Every datagram is sealed: only holders of the key can read it, and
/// receivers drop copies, old frames and forgeries.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  echo hello | mcsec send -k group.key -g 239.255.0.1:5000 -i eth0
  mcsec send -k group.key -g 239.255.0.1:5000 -i lo --message tick --interval 1s --count 5
  mcsec send -k group.key -g 239.255.0.1:5000 -i eth0 --raw --chunk 64k --rate 100M < file

Defaults: TTL 1 (the local link only), loop on, one message per line.")]
pub(crate) struct Args {
    #[command(flatten)]
    key: KeyArgs,

    #[command(flatten)]
    net: NetArgs,

    #[command(flatten)]
    send: SendArgs,

    /// Read standard input as bytes, cut into --chunk byte messages,
    /// instead of as lines.
    #[arg(long, conflicts_with = "message")]
    raw: bool,

    /// Message size for --raw (e.g. 1400, 64k). Default: what fits in one
    /// datagram.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes, requires = "raw")]
    chunk: Option<usize>,

    /// Send this text instead of reading standard input.
    #[arg(short, long, value_name = "TEXT")]
    message: Option<String>,

    /// With --message: wait this long between messages (e.g. 1s, 250ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "message")]
    interval: Option<Duration>,

    /// With --message: send it this many times. Default: once, or forever
    /// with --interval.
    #[arg(short = 'n', long, value_name = "N", requires = "message")]
    count: Option<u64>,

    /// Pace to this many bits per second, counting IP and UDP headers
    /// (k, M, G: powers of 1000; e.g. 100M).
    #[arg(long, value_name = "BITS", value_parser = parse_rate)]
    rate: Option<u64>,

    /// Pace to at most this many datagrams per second.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pps: Option<u64>,
}

pub(crate) fn run(args: Args) -> CliResult {
    let keyring = load_keyring(&args.key.key)?;
    let sender = net::Sender::open(args.net.group, &args.net.options(Some(&args.send)))?;
    if let Some(hint) = args.net.group.ttl_hint(args.send.ttl) {
        tracing::warn!("{hint}");
    }
    // Ctrl-C and SIGTERM end a paced or repeating send promptly; without a
    // handler installed, they end the process at once, as they should.
    let paced = args.rate.is_some() || args.pps.is_some();
    let stop = if args.message.is_some() || paced {
        Some(super::common::stop_flag()?)
    } else {
        None
    };
    let mut pacer = Pacer::new(args.rate, args.pps, args.net.group.is_ipv6());
    if let Some(stop) = &stop {
        pacer = pacer.stop_on(std::sync::Arc::clone(stop));
    }
    let mut outbox = Outbox::new(keyring, sender, args.net.max_datagram(), pacer)?;

    if let Some(text) = &args.message {
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
                super::common::sleep_unless_stopped(&stop, every);
                if super::common::stopped(&stop) {
                    break;
                }
            }
            outbox.send_message(text.as_bytes())?;
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
        let stdin = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| CliError::new(format!("reading standard input: {e}")))?;
        let mut input = std::io::BufReader::with_capacity(256 << 10, std::fs::File::from(stdin));
        loop {
            if stop.as_deref().is_some_and(stopped) {
                break;
            }
            let n = read_chunk(&mut input, &mut buf, &mut outbox)?;
            let Some(piece) = buf.get(..n) else { break };
            if piece.is_empty() {
                break;
            }
            outbox.queue_message(piece)?;
            if n < chunk {
                break;
            }
        }
        outbox.flush()?;
    } else {
        let mut input = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .map_err(|e| CliError::new(format!("reading standard input: {e}")))?;
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
        }
    }
    tracing::info!(
        "sent {} messages in {} datagrams ({} batches) as sender {}",
        outbox.messages,
        outbox.datagrams,
        outbox.batches,
        outbox.sender_id()
    );
    Ok(())
}

/// Reads until `buf` is full or input ends; returns the bytes read. Before
/// any read that would block, sends what `outbox` holds: a datagram never
/// waits on a slow producer, only on the batch it is part of.
fn read_chunk(
    input: &mut std::io::BufReader<std::fs::File>,
    buf: &mut [u8],
    outbox: &mut Outbox,
) -> Result<usize, CliError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        if !more_waiting(input) {
            outbox.flush()?;
        }
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // What was read before the error still goes out.
                outbox.flush()?;
                return Err(CliError::new(format!("reading standard input: {e}")));
            }
        }
    }
    Ok(filled)
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
