//! `recv --relay` and `send --relay`: subscribing to, or publishing
//! through, an `mcsec relay` (PROTOCOL.md Part 4), and `relay --upstream`.
//!
//! The feed's frames travel the same socket as the control requests, so a
//! NAT on the way maps both alike. Frames are opened (or sealed) for the
//! `-g` group or `--channel` exactly as on the LAN: the relay only forwards.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mcsec::net::{Group, Receiver, Sender};
use mcsec::relay::{AccessKeys, Client, Kind, NONCE_LEN};

use super::CliError;
use super::common::{KeyFile, parse_duration};

/// How long without an acknowledgement before saying the relay is silent.
const SILENT_WARNING: Duration = Duration::from_secs(5);
/// How long `send --relay` waits for the relay to accept it as a publisher.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);
/// Renewals gone unanswered before warning that the relay stopped
/// acknowledging (at most half its lease: it forgets a silent subscriber
/// after the lease, and the warning should come first).
const LAPSED_RENEWALS: u64 = 3;

/// `--relay HOST:PORT --access FILE`, for recv and send.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RelayArgs {
    /// Go through an `mcsec relay` at HOST:PORT instead of the group, for
    /// a network multicast does not reach. Frames are still sealed and
    /// opened end to end for -g's group (or --channel): the relay cannot
    /// read or forge them.
    #[arg(
        env = "MCSEC_RELAY",
        long,
        value_name = "HOST:PORT",
        requires = "access"
    )]
    pub(crate) relay: Option<String>,

    /// The relay's access key file (`mcsec keygen -o access.key`, the one
    /// the relay has; not the group key). Reread on SIGHUP, so that a
    /// rotation reaches the relay's clients as it reaches the relay.
    #[arg(env = "MCSEC_ACCESS", long, value_name = "FILE", requires = "relay")]
    pub(crate) access: Option<PathBuf>,

    /// How often to renew the subscription with the relay, within common
    /// NAT timeouts (the relay forgets a client silent for 60 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "20s",
          hide_default_value = false)]
    pub(crate) relay_refresh: Duration,
}

/// Resolves `HOST:PORT` (the first address).
pub(crate) fn resolve(spec: &str, flag: &str) -> Result<SocketAddr, CliError> {
    let mut addrs = spec.to_socket_addrs().map_err(|e| {
        CliError::usage(format!("{flag} {spec}: {e}")).hint(format!(
            "give HOST:PORT, e.g. {flag} relay.example.net:7600"
        ))
    })?;
    addrs
        .next()
        .ok_or_else(|| CliError::usage(format!("{flag} {spec}: no address")))
}

/// A socket for talking to `relay`, bound to the wildcard of its family;
/// connected to it if `connected` (a sender's).
///
/// A subscriber's stays unconnected: a connected UDP socket reports the
/// ICMP "port unreachable" of a restarting relay as an error on its next
/// receive, and a receiver should wait that out, not count errors.
fn open_socket(relay: SocketAddr, connected: bool) -> Result<UdpSocket, CliError> {
    let bind: SocketAddr = if relay.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind)
        .and_then(|s| {
            if connected {
                s.connect(relay)?;
            }
            Ok(s)
        })
        .map_err(|e| {
            CliError::new(format!("opening a socket to the relay {relay}: {e}"))
                .hint("check the address and that this host has a route to it")
        })?;
    Ok(sock)
}

/// Random bytes for a request nonce.
fn nonce() -> [u8; NONCE_LEN] {
    use rand::TryRng;
    let mut n = [0u8; NONCE_LEN];
    // The OS CSPRNG does not fail once the process runs; if it did, a
    // nonce of zeros is only refused as a replay, never accepted twice.
    let _ = rand::rngs::SysRng.try_fill_bytes(&mut n);
    n
}

/// A subscription kept alive from a receive loop: the loop calls
/// [`Subscription::poll`] each turn and hands every datagram to
/// [`Subscription::take`] first.
#[derive(Debug)]
pub(crate) struct Subscription {
    sock: UdpSocket,
    client: Client,
    /// The access key file, reread on SIGHUP.
    access: KeyFile,
    relay: SocketAddr,
    started: Instant,
    warned: bool,
    was_acked: bool,
    lapse: Lapse,
}

/// Watches a client's acknowledgements: warns once when renewals have gone
/// unanswered for [`LAPSED_RENEWALS`] refreshes (at most half the relay's
/// lease), and says when they are answered again.
#[derive(Debug)]
struct Lapse {
    relay: SocketAddr,
    /// Warned, and no acknowledgement since.
    lapsed: bool,
    /// How long without an acknowledgement before the warning.
    after_us: u64,
}

impl Lapse {
    fn new(relay: SocketAddr, refresh: Duration) -> Self {
        Self {
            relay,
            lapsed: false,
            after_us: micros(refresh)
                .saturating_mul(LAPSED_RENEWALS)
                .min(mcsec::relay::DEFAULT_LEASE_US / 2),
        }
    }

    /// After each turn: the last acknowledgement (none yet: nothing to say
    /// here) and the time.
    fn check(&mut self, acked_us: Option<u64>, now_us: u64) {
        let Some(at) = acked_us else {
            return;
        };
        let silent = now_us.saturating_sub(at);
        if !self.lapsed && silent >= self.after_us {
            self.lapsed = true;
            tracing::warn!(
                "the relay {} has not acknowledged a renewal for {:.0} s, and forgets a client \
                 silent for {} s: is it running, and is --access still one of its keys \
                 (SIGHUP rereads the file)?",
                self.relay,
                silent as f64 / 1e6,
                mcsec::relay::DEFAULT_LEASE_US / 1_000_000
            );
        } else if self.lapsed && silent < self.after_us {
            self.lapsed = false;
            tracing::info!("the relay {} acknowledges again", self.relay);
        }
    }
}

impl Subscription {
    /// Subscribes to `relay`: the receiver the feed arrives on (for
    /// `group`'s frames) and the subscription to keep.
    pub(crate) fn open(
        relay: SocketAddr,
        access: &Path,
        refresh: Duration,
        rate_bits: Option<u64>,
        group: Group,
    ) -> Result<(Receiver, Self), CliError> {
        let (access, ring) = KeyFile::open(access)?;
        let sock = open_socket(relay, false)?;
        let control = sock
            .try_clone()
            .map_err(|e| CliError::new(format!("cloning the relay socket: {e}")))?;
        let mut sub = Self {
            sock: control,
            client: Client::new(AccessKeys::new(&ring), Kind::Subscribe, micros(refresh))
                .with_rate_cap(
                    rate_bits.map_or(0, |b| u32::try_from(b / 1000).unwrap_or(u32::MAX).max(1)),
                ),
            access,
            relay,
            started: Instant::now(),
            warned: false,
            was_acked: false,
            lapse: Lapse::new(relay, refresh),
        };
        sub.poll();
        Ok((Receiver::from_unicast(sock, group), sub))
    }

    /// Sends a request if one is due (the first, a refresh, a retry).
    pub(crate) fn poll(&mut self) {
        // Lapsed: the file is looked at again whenever it changes (a key
        // file fixed after a failed reload), not only on SIGHUP.
        if let Some(ring) = self.access.poll(self.lapse.lapsed) {
            self.client.set_keys(AccessKeys::new(&ring));
        }
        let now = mcsec::now_us();
        if let Some(req) = self.client.poll(now, nonce()) {
            // A lost request is asked again: an error here (no route yet)
            // is for the log, not the end of the receiver.
            if let Err(e) = self.sock.send_to(&req, self.relay) {
                tracing::debug!("subscribing at {}: {e}", self.relay);
            }
        }
        let acked = self.client.acked_us();
        self.lapse.check(acked, now);
        match acked {
            Some(_) if !self.was_acked => {
                self.was_acked = true;
                tracing::info!("subscribed at the relay {}", self.relay);
            }
            None if !self.warned && self.started.elapsed() >= SILENT_WARNING => {
                self.warned = true;
                tracing::warn!(
                    "the relay {} has not accepted the subscription yet: is it running, and is \
                     --access the relay's access key?",
                    self.relay
                );
            }
            _ => {}
        }
    }

    /// The relay's address.
    pub(crate) fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// Whether `datagram` was the relay's control message (taken here)
    /// rather than a frame of the feed.
    pub(crate) fn take(&mut self, datagram: &[u8]) -> bool {
        if !mcsec::relay::is_control(datagram) {
            return false;
        }
        if let Some(req) = self.client.handle(mcsec::now_us(), datagram, nonce())
            && let Err(e) = self.sock.send_to(&req, self.relay)
        {
            tracing::debug!("answering the relay {}: {e}", self.relay);
        }
        true
    }

    /// Leaves the relay (on exit): it stops sending at once.
    pub(crate) fn leave(&self) {
        let _ = self
            .sock
            .send_to(&self.client.goodbye(mcsec::now_us(), nonce()), self.relay);
    }
}

/// `send --relay`: a sender whose frames go to the relay, accepted as a
/// publisher (waits for the relay's acknowledgement) and kept so by a
/// thread that refreshes.
pub(crate) fn publisher(
    relay: SocketAddr,
    access: &Path,
    refresh: Duration,
    group: Group,
) -> Result<Sender, CliError> {
    let (mut access, ring) = KeyFile::open(access)?;
    let sock = open_socket(relay, true)?;
    let control = sock
        .try_clone()
        .map_err(|e| CliError::new(format!("cloning the relay socket: {e}")))?;
    control
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| CliError::new(format!("setting a timeout: {e}")))?;
    let mut client = Client::new(AccessKeys::new(&ring), Kind::Publish, micros(refresh));
    let started = Instant::now();
    while client.acked_us().is_none() {
        if started.elapsed() >= PUBLISH_WAIT {
            return Err(CliError::new(format!(
                "the relay {relay} did not accept us as a publisher within {} s",
                PUBLISH_WAIT.as_secs()
            ))
            .hint(
                "check that the relay runs with --to GROUP:PORT, and that --access is the \
                 relay's access key file",
            ));
        }
        exchange(&control, &mut client);
    }
    tracing::info!("publishing through the relay {relay}");
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::Builder::new()
        .name("relay-publish".into())
        .spawn(move || {
            let mut lapse = Lapse::new(relay, refresh);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(ring) = access.poll(lapse.lapsed) {
                    client.set_keys(AccessKeys::new(&ring));
                }
                exchange(&control, &mut client);
                lapse.check(client.acked_us(), mcsec::now_us());
            }
        })
        .map_err(|e| CliError::new(format!("starting the relay thread: {e}")))?;
    Ok(Sender::from_unicast(sock, group))
}

/// A refresh interval in microseconds, at least 1.
fn micros(refresh: Duration) -> u64 {
    u64::try_from(refresh.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One turn of a publisher: send what is due, read one reply (100 ms).
fn exchange(sock: &UdpSocket, client: &mut Client) {
    if let Some(req) = client.poll(mcsec::now_us(), nonce()) {
        let _ = sock.send(&req);
    }
    let mut buf = [0u8; 128];
    if let Ok(n) = sock.recv(&mut buf)
        && let Some(datagram) = buf.get(..n)
        && let Some(req) = client.handle(mcsec::now_us(), datagram, nonce())
    {
        let _ = sock.send(&req);
    }
}

/// recv's receiver: the group's, or with --relay the relay's feed and the
/// subscription that keeps it coming.
pub(crate) fn open_receiver(
    args: &RelayArgs,
    rate_cap: Option<u64>,
    group: Group,
    opts: &mcsec::net::Options,
) -> Result<(Receiver, Option<Subscription>), CliError> {
    match (&args.relay, &args.access) {
        (Some(relay), Some(access)) => {
            let addr = resolve(relay, "--relay")?;
            let (receiver, sub) =
                Subscription::open(addr, access, args.relay_refresh, rate_cap, group)?;
            tracing::info!("subscribing to {group} at the relay {addr}");
            Ok((receiver, Some(sub)))
        }
        _ => Ok((Receiver::open(group, opts)?, None)),
    }
}

/// send's sender: the group's, or with --relay the relay's.
pub(crate) fn open_sender(
    args: &RelayArgs,
    group: Group,
    opts: &mcsec::net::Options,
) -> Result<Sender, CliError> {
    match (&args.relay, &args.access) {
        (Some(relay), Some(access)) => publisher(
            resolve(relay, "--relay")?,
            access,
            args.relay_refresh,
            group,
        ),
        _ => Ok(Sender::open(group, opts)?),
    }
}
