//! `mcsec chat`: a line-by-line group chat over the sealed feed.

use std::io::{BufRead, Write};
use std::sync::mpsc::TryRecvError;
use std::time::Duration;

use mcsec::net::{Receiver, Sender};
use mcsec::reassembly::Reassembler;
use mcsec::{Body, Opener, OpenerConfig};

use super::common::{
    Delivered, ErrorStreak, Inbox, KeyArgs, KeyFile, NetArgs, Outbox, Pacer, SendArgs, SignArgs,
    TrustArgs, chat_line, display_nick,
};
use super::{CliError, CliResult, stdout_error};

/// Longest nick accepted, in bytes.
const MAX_NICK: usize = 32;

/// Chat with the other holders of a group key.
///
/// Each line you type is sent to the group; lines from others are shown as
/// `<nick@sender unsigned> text`, where sender is the first 8 hex digits of
/// their session's random sender ID.
///
/// NICKS ARE CLAIMS, NOT PROOF: the key proves a line came from some key
/// holder, but any key holder can pick any nick. The sender ID tells
/// sessions apart; it does not say who is behind one.
///
/// Signed chat: each member signs with --sign (their own `mcsec signer new`
/// key), and members --trust a file of the public lines of everyone they
/// accept. Lines then show `<nick@sender signed:NAME> text`, NAME being the
/// trust file's name for the key that signed, and lines nobody trusted
/// signed are dropped.
/// Standard input ending (Ctrl-D) or Ctrl-C leaves the chat. The key file
/// is read again on SIGHUP, and when lines under an unknown key ID arrive
/// after the file changed.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:
  mcsec chat -k group.key -g 239.255.0.2:5001 -i eth0 --nick alice

Defaults: TTL 1, loop on (so two members on one host hear each other).")]
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
    trust: TrustArgs,

    #[command(flatten)]
    metrics: super::metrics::MetricsArgs,

    /// The name to show with your lines (a claim, not proof; at most 32
    /// bytes).
    #[arg(long, value_name = "NAME")]
    nick: String,
}

pub(crate) fn run(args: Args) -> CliResult {
    if args.nick.is_empty() || args.nick.len() > MAX_NICK || args.nick != display_nick(&args.nick) {
        return Err(
            CliError::usage(format!("{:?} is not a usable nick", args.nick))
                .hint("1 to 32 bytes; no control or invisible characters, and none of < > @"),
        );
    }
    let (keys, keyring) = KeyFile::open(&args.key.key)?;
    let opts = args.net.options(Some(&args.send));
    let receiver = Receiver::open(args.net.group, &opts)?;
    receiver.set_timeout(Some(Duration::from_millis(100)))?;
    let sender = Sender::open(args.net.group, &opts)?;
    if let Some(hint) = args.net.group.ttl_hint(args.send.ttl) {
        tracing::warn!("{hint} (-t N)");
    }
    let max_datagram = args.net.max_datagram();
    let channel = args.net.channel();
    let mut outbox = Outbox::new(
        keyring.clone(),
        channel.clone(),
        sender,
        max_datagram,
        Pacer::new(None, None, false),
        args.sign.signing()?,
    )?;

    let mut config = OpenerConfig::default();
    config.max_datagram = max_datagram;
    let mut inbox = Inbox::new(
        Opener::new(keyring, channel, config),
        Reassembler::default(),
    );
    // One reload serves both sides: the receiver's keyring is swapped, and
    // the sender starts a new session if the last key changed.
    inbox.watch_keys(keys, true);
    inbox.trust(args.trust.verifier()?);
    // --metrics: what was received and what was sent, in one registry.
    let mut metrics = match args.metrics.metrics {
        Some(addr) => {
            let mut names: Vec<&'static str> =
                inbox.counters().iter().map(|(name, _)| *name).collect();
            names.extend(super::metrics::SEND_COUNTERS);
            Some(super::metrics::Metrics::start(addr, &names)?)
        }
        None => None,
    };
    let stop = super::common::stop_flag()?;

    // Typing happens on its own thread; the main thread listens, so a
    // signal or a closed stdout ends the chat promptly.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
        // Dropping lines_tx tells the main thread that input ended.
    });

    let mut receiver = receiver.batched(max_datagram);
    let mut out = std::io::stdout().lock();
    let mut input_done = false;
    let mut streak = ErrorStreak::default();
    super::notify::ready(&format!(
        "chatting on {} as {}",
        args.net.group,
        display_nick(&args.nick)
    ));
    // The loop wakes at least every 100 ms (the receive timeout) to ping
    // the watchdog, so the pings stop only if it hangs.
    let mut chat = || -> CliResult {
        loop {
            super::notify::keepalive();
            inbox.reload_keys();
            if let Some(m) = metrics.as_mut().filter(|m| m.due()) {
                let mut values = inbox.counters();
                values.extend(outbox.counters());
                m.update(&values, false);
            }
            if let Some(ring) = inbox.take_reloaded() {
                outbox.set_keyring(ring)?;
            }
            loop {
                let line = match lines_rx.try_recv() {
                    Ok(line) => line,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        input_done = true;
                        break;
                    }
                };
                let body = Body::Chat {
                    nick: &args.nick,
                    text: &line,
                };
                if body.encoded_len() > outbox.max_plaintext() {
                    eprintln!(
                        "warning: line not sent: longer than one datagram allows ({} bytes)",
                        outbox.max_plaintext()
                    );
                    continue;
                }
                outbox.send_body(&body)?;
                // A line is signed and sent at once: chat waits for no batch.
                outbox.finish()?;
            }
            if super::common::stopped(&stop) || input_done {
                break;
            }
            // Idle or a transient error: free timed-out partial messages.
            if streak.recv(&mut receiver)? == 0 {
                inbox.expire();
                continue;
            }
            for (datagram, _from) in receiver.datagrams() {
                // With --trust, one datagram (a signature) can release several.
                let first = inbox.take(datagram);
                let released = first
                    .into_iter()
                    .chain(std::iter::from_fn(|| inbox.next_released()));
                for msg in released {
                    let Delivered::Chat {
                        header,
                        nick,
                        text,
                        signer,
                    } = msg
                    else {
                        continue;
                    };
                    if header.sender_id == outbox.sender_id() {
                        continue;
                    }
                    writeln!(
                        out,
                        "{}",
                        chat_line(&header, &nick, &text, signer.as_deref())
                    )
                    .and_then(|()| out.flush())
                    .map_err(stdout_error)?;
                }
            }
        }
        Ok(())
    };
    let result = chat();
    super::notify::stopping();
    result
}
