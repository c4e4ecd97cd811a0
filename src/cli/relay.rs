//! `mcsec relay`: carry a group's sealed frames to subscribers beyond the
//! LAN, and publishers' frames into it, without a group key.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mcsec::net::{self, BatchReceiver, Fanout, FanoutMode, Group, InterfaceSpec, Receiver, Sender};
use mcsec::relay::{AccessKeys, Relay, RelayConfig, Verdict};

use super::common::{
    ErrorStreak, KeyFile, parse_bytes, parse_duration, parse_group, parse_interface, parse_rate,
    stop_flag, stopped,
};
use super::relay_client::{Subscription, resolve};
use super::{CliError, CliResult};

/// Forward a group's sealed frames to subscribers over unicast, and
/// publishers' frames into a group, without the group key.
///
/// The relay never opens a frame: it has no -k, forwards every datagram of
/// --from byte for byte to each subscriber, and lets datagrams of
/// publishers into --to unchanged. Receivers and senders seal and check end
/// to end as on the LAN (`recv --relay`, `send --relay`), so a relay that
/// is compromised can read nothing and forge nothing; it can drop, delay
/// or replay frames, which receivers' checks catch or count (SECURITY.md).
///
/// Subscribers and publishers prove the access key (--access, a key file
/// from `mcsec keygen`, not the group key) with fresh, unreplayable
/// requests, and first that they receive at their address (a cookie): an
/// address that has not proved both never gets a datagram of the feed,
/// and never more bytes than it sent. The relay forgets a client that has
/// not renewed for 60 s. SIGHUP rereads the access file (and
/// --upstream-access): rotate it as a group key, `mcsec key rotate`, then
/// SIGHUP the relay (in a chain, the top one first), then its clients,
/// and `mcsec key retire` the old key once they all have the new one.
///
/// On exit (SIGINT, SIGTERM) and every --stats-interval, the counters go
/// to standard error, with each subscriber's: forwarded, dropped for its
/// --rate-cap, refused by the kernel, and when it was last heard from.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  mcsec keygen -o access.key
  mcsec relay --from 239.255.0.1:5000 -i eth0 --listen 0.0.0.0:7600 --access access.key
  mcsec relay --to 239.255.0.1:5000 -i eth0 --listen 0.0.0.0:7600 --access access.key
  mcsec relay --upstream relay.example.net:7600 --listen 0.0.0.0:7601 --access access.key

Then, elsewhere, with the group key and the same access key:
  mcsec recv -k group.key -g 239.255.0.1:5000 --relay relay.example.net:7600 --access access.key
  mcsec send -k group.key -g 239.255.0.1:5000 --relay relay.example.net:7600 --access access.key")]
pub(crate) struct Args {
    /// Join this group and forward every datagram to each subscriber.
    #[arg(env = "MCSEC_RELAY_FROM", long, value_name = "GROUP:PORT", value_parser = parse_group,
          conflicts_with = "upstream")]
    from: Option<Group>,

    /// Subscribe to another relay at HOST:PORT and forward its feed (a
    /// chain of relays).
    #[arg(long, value_name = "HOST:PORT")]
    upstream: Option<String>,

    /// The access key file of the --upstream relay. Default: --access.
    #[arg(long, value_name = "FILE", requires = "upstream")]
    upstream_access: Option<PathBuf>,

    /// Send publishers' datagrams into this group.
    #[arg(env = "MCSEC_RELAY_TO", long, value_name = "GROUP:PORT", value_parser = parse_group)]
    to: Option<Group>,

    /// The interface to join --from and send --to on: a name, an address or
    /// an index. Default: the routing table's choice.
    #[arg(env = "MCSEC_INTERFACE", short, long, value_name = "IF", value_parser = parse_interface)]
    interface: Option<InterfaceSpec>,

    /// Multicast TTL of datagrams sent --to (1: the local link).
    #[arg(short, long, default_value_t = net::DEFAULT_TTL, value_name = "TTL")]
    ttl: u32,

    /// The UDP address subscribers and publishers reach: ADDR:PORT.
    #[arg(env = "MCSEC_RELAY_LISTEN", long, value_name = "ADDR:PORT")]
    listen: SocketAddr,

    /// The access key file (from `mcsec keygen`; not the group key).
    /// Requests must prove one of its keys; the last one is used to sign
    /// --upstream requests.
    #[arg(env = "MCSEC_ACCESS", long, value_name = "FILE")]
    access: PathBuf,

    /// The most subscribers at once (and, apart, the most publishers).
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_subscribers: u64,

    /// Each subscriber's cap, in bits per second (k, M, G): datagrams over
    /// it are dropped for that subscriber and counted. Default: no cap.
    #[arg(long, value_name = "BITS", value_parser = parse_rate)]
    rate_cap: Option<u64>,

    /// Largest datagram to forward, in bytes (longer ones are dropped).
    #[arg(long, value_name = "BYTES", default_value_t = 1472,
          value_parser = clap::value_parser!(u64).range(64..=65_507))]
    max_datagram: u64,

    /// How often to renew the --upstream subscription.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "20s")]
    relay_refresh: Duration,

    /// Print the counters and each subscriber's to standard error this often.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stats_interval: Option<Duration>,

    /// Receive buffer to ask the kernel for on --from's socket: the relay
    /// sends each datagram to every subscriber before it reads the next
    /// run, so a burst waits here (root may exceed net.core.rmem_max).
    #[arg(env = "MCSEC_RCVBUF", long, value_name = "BYTES", value_parser = parse_bytes,
          default_value = "4M")]
    rcvbuf: usize,

    #[command(flatten)]
    metrics: super::metrics::MetricsArgs,

    /// How copies go to subscribers: gso (one sendmmsg a run, cut by UDP
    /// GSO; falls back to mmsg where the kernel cannot), mmsg (one sendmmsg
    /// a run, a message a copy) or sendto (a syscall a copy: the baseline
    /// for benchmarks).
    #[arg(long, value_enum, default_value_t = Mode::Gso, hide = true)]
    fanout: Mode,
}

/// `--fanout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Gso,
    Mmsg,
    Sendto,
}

/// How long one wait for the sockets lasts before the loop looks at
/// signals, expiry and the stats interval.
const POLL_MS: u16 = 100;

/// The most datagrams a GSO run carries, and its most bytes.
const RUN_SEGMENTS: usize = 64;
const RUN_BYTES: usize = 65_507;

/// Runs of equal-size datagrams, waiting to be fanned out.
#[derive(Debug, Default)]
struct Runs {
    buf: Vec<u8>,
    sizes: Vec<usize>,
    stride: usize,
    dests: Vec<(SocketAddr, usize)>,
    sent: Vec<usize>,
}

impl Runs {
    /// Adds one datagram, sending the run first if it cannot join it.
    fn push(&mut self, datagram: &[u8], relay: &mut Relay, fan: &mut Fanout, now: u64) {
        let joins = self.sizes.last().is_some_and(|last| *last == self.stride)
            && datagram.len() <= self.stride
            && self.sizes.len() < RUN_SEGMENTS
            && self.buf.len() + datagram.len() <= RUN_BYTES;
        if !joins {
            self.flush(relay, fan, now);
            self.stride = datagram.len();
        }
        self.buf.extend_from_slice(datagram);
        self.sizes.push(datagram.len());
    }

    /// Sends the run to every subscriber its cap allows.
    fn flush(&mut self, relay: &mut Relay, fan: &mut Fanout, now: u64) {
        if self.sizes.is_empty() {
            return;
        }
        relay.plan(now, &self.sizes, &mut self.dests);
        if !self.dests.is_empty() {
            if let Some(e) = fan.send(&self.buf, self.stride, &self.dests, &mut self.sent) {
                tracing::debug!("forwarding: {e}");
            }
            for ((addr, planned), sent) in self.dests.iter().zip(&self.sent) {
                relay.sent(*addr, *planned, *sent);
            }
        }
        self.buf.clear();
        self.sizes.clear();
    }
}

pub(crate) fn run(args: Args) -> CliResult {
    if args.from.is_none() && args.upstream.is_none() && args.to.is_none() {
        return Err(
            CliError::usage("a relay needs --from, --upstream or --to").hint(
                "forward a group with --from GROUP:PORT, or let publishers in with --to GROUP:PORT",
            ),
        );
    }
    let (mut key_file, ring) = KeyFile::open(&args.access)?;
    let keys = AccessKeys::new(&ring);
    let mut opts = net::Options::default();
    opts.interface = args.interface.clone();
    opts.ttl = args.ttl;
    opts.rcvbuf = Some(args.rcvbuf);
    let max_datagram = usize::try_from(args.max_datagram).unwrap_or(1472);

    let listen = UdpSocket::bind(args.listen).map_err(|e| {
        CliError::new(format!("--listen {}: {e}", args.listen))
            .hint("pick a free port, on an address of this host (0.0.0.0:7600, say)")
    })?;
    listen
        .set_nonblocking(true)
        .map_err(|e| CliError::new(format!("--listen: {e}")))?;
    let bound = listen.local_addr().unwrap_or(args.listen);
    let mut fan = Fanout::new(listen);
    fan.set_mode(match args.fanout {
        Mode::Gso => FanoutMode::Gso,
        Mode::Mmsg => FanoutMode::Mmsg,
        Mode::Sendto => FanoutMode::Sendto,
    });
    tracing::info!("fan-out: {:?}", fan.mode());

    let from = match args.from {
        Some(group) => {
            let receiver = Receiver::open(group, &opts)?;
            receiver.set_nonblocking()?;
            Some(receiver.batched(max_datagram))
        }
        None => None,
    };
    let mut upstream = match &args.upstream {
        Some(spec) => {
            let addr = resolve(spec, "--upstream")?;
            // Its own copy of the access file, reread on SIGHUP as the
            // relay's is.
            let access = args.upstream_access.as_deref().unwrap_or(&args.access);
            // The frames are never opened here: the group is only a label.
            let label: Group = "239.255.255.255:9"
                .parse()
                .map_err(|e| CliError::new(format!("{e}")))?;
            let (receiver, sub) =
                Subscription::open(addr, access, args.relay_refresh, None, label)?;
            receiver.set_nonblocking()?;
            Some((receiver.batched(max_datagram), sub))
        }
        None => None,
    };
    let to = match args.to {
        Some(group) => Some(Sender::open(group, &opts)?),
        None => None,
    };

    let mut config = RelayConfig::default();
    config.max_subscribers = usize::try_from(args.max_subscribers).unwrap_or(usize::MAX);
    config.rate_cap_bytes = args.rate_cap.map(|bits| bits / 8);
    config.accept_publishers = to.is_some();
    config.accept_subscribers = from.is_some() || upstream.is_some();
    config.max_datagram = max_datagram;
    let mut relay = Relay::new(keys, cookie_secret()?, config);
    let stop = stop_flag()?;
    let what = [
        args.from.map(|g| format!("forwarding {g}")),
        args.upstream
            .as_ref()
            .map(|u| format!("forwarding the relay {u}")),
        args.to.map(|g| format!("publishing into {g}")),
    ];
    let what: Vec<String> = what.into_iter().flatten().collect();
    tracing::info!("relay on {bound}: {}", what.join(", "));
    super::notify::ready(&format!("relay on {bound}"));
    // After the line above, which scripts wait for.
    let mut metrics = match args.metrics.metrics {
        Some(addr) => {
            // Counters only: the subscriber count goes down as well as up.
            let names: Vec<&'static str> = relay
                .counters()
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| *n != "subscribers")
                .collect();
            Some(super::metrics::Metrics::start_relay(addr, &names)?)
        }
        None => None,
    };

    let mut runs = Runs::default();
    let mut buf = vec![0u8; 65_536];
    let mut streak = ErrorStreak::default();
    let mut up_streak = ErrorStreak::default();
    let mut from = from;
    let mut last_stats = Instant::now();
    let mut last_expire = Instant::now();
    let result = loop {
        super::notify::keepalive();
        if stopped(&stop) {
            break Ok(());
        }
        if let Some(ring) = key_file.poll(false) {
            relay.set_keys(AccessKeys::new(&ring));
        }
        if last_expire.elapsed() >= Duration::from_secs(1) {
            relay.expire(mcsec::now_us());
            last_expire = Instant::now();
        }
        if let Some((_, sub)) = upstream.as_mut() {
            sub.poll();
        }
        if let Some(m) = metrics.as_mut().filter(|m| m.due()) {
            m.update(&relay.counters(), false);
            m.update_subscribers(&subscriber_rows(&relay));
        }
        if let Some(every) = args.stats_interval
            && last_stats.elapsed() >= every
        {
            report(&relay);
            last_stats = Instant::now();
        }
        let ready = match wait(
            &fan,
            from.as_ref().map(BatchReceiver::receiver),
            upstream.as_ref().map(|(r, _)| r.receiver()),
        ) {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        if ready[0] {
            serve(&mut relay, &fan, to.as_ref(), &mut buf);
        }
        if ready[1]
            && let Some(rx) = from.as_mut()
            && let Err(e) = drain(rx, &mut streak, None, &mut runs, &mut relay, &mut fan)
        {
            break Err(e);
        }
        if ready[2]
            && let Some((rx, sub)) = upstream.as_mut()
            && let Err(e) = drain(
                rx,
                &mut up_streak,
                Some(sub),
                &mut runs,
                &mut relay,
                &mut fan,
            )
        {
            break Err(e);
        }
    };
    if let Some((_, sub)) = &upstream {
        sub.leave();
    }
    if let Some(m) = metrics.as_mut() {
        m.update(&relay.counters(), true);
        m.update_subscribers(&subscriber_rows(&relay));
    }
    report(&relay);
    result
}

/// 32 bytes from the OS CSPRNG: the key of this process's cookies.
fn cookie_secret() -> Result<[u8; 32], CliError> {
    use rand::TryRng;
    let mut secret = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut secret)
        .map_err(|e| CliError::new(format!("reading the system's random generator: {e}")))?;
    Ok(secret)
}

/// Waits (at most [`POLL_MS`]) until one of the sockets is readable:
/// [listen, --from, --upstream].
fn wait(
    fan: &Fanout,
    from: Option<&Receiver>,
    upstream: Option<&Receiver>,
) -> Result<[bool; 3], CliError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = vec![PollFd::new(fan.socket().as_fd(), PollFlags::POLLIN)];
    let mut slots = [Some(0), None, None];
    for (i, r) in [(1, from), (2, upstream)] {
        if let Some(r) = r {
            slots[i] = Some(fds.len());
            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
        }
    }
    match poll(&mut fds, PollTimeout::from(POLL_MS)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(CliError::new(format!("waiting for datagrams: {e}"))),
    }
    let mut ready = [false; 3];
    for (i, slot) in slots.iter().enumerate() {
        if let Some(s) = slot {
            ready[i] = fds[*s]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR));
        }
    }
    Ok(ready)
}

/// The most reads of a feed before its runs go out: under load the
/// socket holds more, and reading it first makes runs long enough for GSO
/// (64 datagrams); when it is empty the runs go at once.
const DRAIN_READS: usize = 64;

/// Reads what waits on a feed's socket (non-blocking), in runs, then fans
/// the runs out. With `sub`, the relay's control datagrams are taken out
/// first (--upstream).
fn drain(
    rx: &mut BatchReceiver,
    streak: &mut ErrorStreak,
    mut sub: Option<&mut Subscription>,
    runs: &mut Runs,
    relay: &mut Relay,
    fan: &mut Fanout,
) -> Result<(), CliError> {
    let now = mcsec::now_us();
    for _ in 0..DRAIN_READS {
        if streak.recv(rx)? == 0 {
            break;
        }
        for (d, from) in rx.datagrams() {
            if let Some(s) = sub.as_mut() {
                // Only the upstream relay's datagrams: control or feed.
                if !relay.accept_upstream(from, s.relay()) || s.take(d) {
                    continue;
                }
            }
            if relay.accept_feed(d) {
                runs.push(d, relay, fan, now);
            }
        }
    }
    runs.flush(relay, fan, now);
    Ok(())
}

/// Reads what waits on the listening socket (at most 256 datagrams, so the
/// feed is not starved): control requests are answered, publishers' data
/// goes into --to.
fn serve(relay: &mut Relay, fan: &Fanout, to: Option<&Sender>, buf: &mut [u8]) {
    for _ in 0..256 {
        let (len, from) = match fan.socket().recv_from(buf) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                // ICMP errors of earlier sends and the like: not fatal.
                tracing::debug!("listening socket: {e}");
                continue;
            }
        };
        let datagram = &buf[..len.min(buf.len())];
        let now = mcsec::now_us();
        if mcsec::relay::is_control(datagram) {
            match relay.handle(now, from, datagram) {
                Verdict::Reply(reply) => {
                    if let Err(e) = fan.socket().send_to(&reply, from) {
                        tracing::debug!("replying to {from}: {e}");
                    }
                }
                Verdict::Rejected(reason) => {
                    tracing::debug!("control datagram from {from} refused: {}", reason.name());
                }
                _ => {}
            }
            continue;
        }
        if !relay.accept_data(now, from, len) {
            continue;
        }
        if let Some(to) = to
            && let Err(e) = to.send(datagram)
        {
            tracing::warn!("sending into {}: {e}", to.group());
        }
    }
}

/// The counters and each subscriber's, on standard error.
/// Each subscriber's figures, for the metrics endpoint.
fn subscriber_rows(relay: &Relay) -> Vec<super::metrics::SubscriberRow> {
    relay
        .subscribers()
        .map(|(addr, s)| super::metrics::SubscriberRow {
            addr,
            forwarded: s.forwarded,
            dropped_cap: s.dropped_cap,
            dropped_send: s.dropped_send,
            last_seen: i64::try_from(s.last_seen_us / 1_000_000).unwrap_or(i64::MAX),
        })
        .collect()
}

fn report(relay: &Relay) {
    let counters = relay.counters();
    let words: Vec<String> = counters
        .iter()
        .filter(|(name, value)| *value > 0 || matches!(*name, "forwarded" | "subscribers"))
        .map(|(name, value)| format!("{name} {value}"))
        .collect();
    note!("relay: {}", words.join(", "));
    let now = mcsec::now_us();
    let mut subs: Vec<_> = relay.subscribers().collect();
    subs.sort_by_key(|(addr, _)| *addr);
    for (addr, s) in subs {
        let ago = now.saturating_sub(s.last_seen_us) / 1_000_000;
        note!(
            "  subscriber {addr}: forwarded {}, dropped_cap {}, dropped_send {}, last seen {ago}s ago",
            s.forwarded,
            s.dropped_cap,
            s.dropped_send
        );
    }
}
