//! What several subcommands share: network and key options, unit parsing,
//! signals, the receive-side pipeline from datagram to message.

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mcsec::files::{FileReceiver, ReceivedFile, SymbolReject};
use mcsec::net::{self, Group, InterfaceSpec, NetError};
use mcsec::reassembly::{FragmentReject, Reassembler};
use mcsec::transfer::outbox::{OutboxError, Queued};
use mcsec::{Body, ChannelId, Header, Keyring, Opener, Reject, SenderId};

use super::CliError;

impl From<NetError> for CliError {
    /// The library's hint, and where the fix is one of our options, which.
    fn from(err: NetError) -> Self {
        use mcsec::net::NetErrorKind as Kind;
        let flag = match err.kind() {
            Kind::NoSuchInterface | Kind::InterfaceUnusable | Kind::NoRoute => {
                Some("-i IF names the interface: a name, one of its addresses or its index")
            }
            Kind::InvalidGroup if err.to_string().contains("scope ID") => {
                Some("-i IF names the interface")
            }
            Kind::SourceFamily => Some("-s is the source"),
            _ => None,
        };
        let hint = match (err.hint(), flag) {
            (Some(hint), Some(flag)) => Some(format!("{hint} ({flag})")),
            (Some(hint), None) => Some(hint.to_owned()),
            (None, flag) => flag.map(str::to_owned),
        };
        let e = Self::new(err.to_string());
        match hint {
            Some(hint) => e.hint(hint),
            None => e,
        }
    }
}

/// Group and interface options shared by send, recv and chat.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NetArgs {
    /// The multicast group and port: ADDR:PORT or [ADDR]:PORT (IPv6).
    #[arg(env = "MCSEC_GROUP", short, long, value_name = "GROUP:PORT", value_parser = parse_group)]
    pub(crate) group: Group,

    /// The interface to send and join on: a name (eth0), one of its
    /// addresses (192.0.2.7) or its index. Default: the routing table's
    /// choice.
    #[arg(env = "MCSEC_INTERFACE", short, long, value_name = "IF", value_parser = parse_interface)]
    pub(crate) interface: Option<InterfaceSpec>,

    /// Largest datagram to send or accept, in bytes. Default: 1472 on IPv4,
    /// 1452 on IPv6 (a 1500-byte MTU).
    #[arg(env = "MCSEC_MAX_DATAGRAM", long, value_name = "BYTES", value_parser = parse_max_datagram)]
    pub(crate) max_datagram: Option<usize>,

    /// Seal and open frames for this channel name (1 to 255 bytes) instead
    /// of the group and port. Every frame is bound to its channel: a frame
    /// sealed for one group, port or name fails authentication on any
    /// other. Give the same name to senders and receivers that do not see
    /// the same group and port (behind a relay or a NAT that rewrites them).
    #[arg(env = "MCSEC_CHANNEL", long, value_name = "NAME", value_parser = parse_channel)]
    pub(crate) channel: Option<ChannelId>,
}

/// Options only a sending socket uses.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SendArgs {
    /// Multicast TTL (IPv6: hop limit). 1 keeps datagrams on the local link.
    #[arg(env = "MCSEC_TTL", short, long, default_value_t = net::DEFAULT_TTL, value_name = "TTL",
          value_parser = parse_ttl)]
    pub(crate) ttl: u32,

    /// Deliver our own datagrams to receivers on this host (the default).
    #[arg(long, overrides_with = "no_loop")]
    pub(crate) r#loop: bool,

    /// Do not deliver our own datagrams to receivers on this host.
    #[arg(long, overrides_with = "loop")]
    pub(crate) no_loop: bool,
}

/// Signing options of `send` and `chat`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SignArgs {
    /// Sign what is sent with this signing key (`mcsec signer new`).
    /// Receivers that --trust its public key deliver only frames it signed,
    /// so other holders of the group key can neither inject frames nor
    /// move this sender's replay window (they can still load receivers with
    /// bad signatures to check: SECURITY.md). Receivers without --trust
    /// read the feed as before.
    #[arg(env = "MCSEC_SIGN", long, value_name = "FILE")]
    pub(crate) sign: Option<PathBuf>,

    /// With --sign: frames per signature. Fewer costs more CPU and bytes,
    /// more holds frames longer. At most what fits one datagram (83 at 1472
    /// bytes).
    #[arg(env = "MCSEC_SIGN_EVERY", long, value_name = "N", default_value_t = mcsec::signed::DEFAULT_SIGN_EVERY,
          requires = "sign", value_parser = parse_sign_every)]
    pub(crate) sign_every: usize,

    /// With --sign: the longest a frame waits at the sender for its
    /// signature, the latency signing adds (e.g. 10ms, 1ms).
    #[arg(env = "MCSEC_SIGN_INTERVAL", long, value_name = "DURATION", default_value = "10ms", requires = "sign",
          value_parser = parse_duration)]
    pub(crate) sign_interval: Duration,
}

impl SignArgs {
    /// The signing setup, if --sign was given.
    pub(crate) fn signing(&self) -> Result<Option<Signing>, CliError> {
        let Some(path) = &self.sign else {
            return Ok(None);
        };
        let key = super::signer::load_signer(path)?;
        Ok(Some(Signing {
            key: Arc::new(key),
            every: self.sign_every,
            interval: self.sign_interval,
        }))
    }
}

fn parse_sign_every(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=mcsec::signed::MAX_MANIFEST_HASHES).contains(&n) => Ok(n),
        _ => Err(format!(
            "frames per signature is a number from 1 to {}",
            mcsec::signed::MAX_MANIFEST_HASHES
        )),
    }
}

/// A signing key and how often it signs.
pub(crate) use mcsec::transfer::outbox::Signing;

/// Trust options of `recv` and `chat`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TrustArgs {
    /// Deliver only frames signed by a key in this trust file (lines from
    /// `mcsec signer public`), and count the rest by cause: sig_unsigned,
    /// sig_bad, sig_forged, sig_expired... Without it, signed feeds are
    /// received like unsigned ones and signatures are not checked.
    #[arg(env = "MCSEC_TRUST", long, value_name = "FILE")]
    pub(crate) trust: Option<PathBuf>,

    /// With --trust: the longest a frame is held waiting for the signature
    /// that covers it (normally it arrives first), then dropped.
    #[arg(env = "MCSEC_SIG_HOLD", long, value_name = "DURATION", default_value = "2s", requires = "trust",
          value_parser = parse_duration)]
    pub(crate) sig_hold: Duration,
}

impl TrustArgs {
    /// The trusting receiver's signature layer, if --trust was given.
    pub(crate) fn verifier(&self) -> Result<Option<mcsec::signed::Verifier>, CliError> {
        let Some(path) = &self.trust else {
            return Ok(None);
        };
        let trust = super::signer::load_trust(path)?;
        let mut config = mcsec::signed::VerifierConfig::default();
        config.hold = self.sig_hold;
        tracing::info!(
            "trusting {} signing key(s) from {}",
            trust.keys().len(),
            path.display()
        );
        Ok(Some(mcsec::signed::Verifier::new(trust, config)))
    }
}

impl NetArgs {
    /// Socket options for receiving, or for sending with `send` options.
    pub(crate) fn options(&self, send: Option<&SendArgs>) -> net::Options {
        let mut opts = net::Options::default();
        opts.interface = self.interface.clone();
        if let Some(send) = send {
            opts.ttl = send.ttl;
            opts.multicast_loop = !send.no_loop;
        }
        opts
    }

    pub(crate) fn max_datagram(&self) -> usize {
        self.max_datagram
            .unwrap_or_else(|| self.group.default_max_datagram())
    }

    /// The channel frames are sealed for: `--channel`, or the group and port.
    pub(crate) fn channel(&self) -> ChannelId {
        self.channel
            .clone()
            .unwrap_or_else(|| ChannelId::group(self.group.addr()))
    }
}

fn parse_channel(s: &str) -> Result<ChannelId, String> {
    ChannelId::named(s).map_err(|_| {
        format!(
            "a channel name is 1 to 255 bytes; this one is {} bytes\n  hint: give every sender and receiver of the feed the same --channel",
            s.len()
        )
    })
}

/// A value parser's message: the error and its hint, as the CLI gives it.
fn with_hint(err: NetError) -> String {
    let e = CliError::from(err);
    match e.hint {
        Some(h) => format!("{}\n  hint: {h}", e.message),
        None => e.message,
    }
}

pub(crate) fn parse_group(s: &str) -> Result<Group, String> {
    // A port past 65535 is a typo worth naming, not "not a group".
    if let Some((_, port)) = s.rsplit_once(':')
        && port.len() <= 10
        && port.parse::<u64>().is_ok_and(|p| p > 65_535)
    {
        return Err(format!(
            "port {port} is out of range\n  hint: a UDP port is 1 to 65535, e.g. 239.255.0.1:5000"
        ));
    }
    let group: Group = s.parse().map_err(with_hint)?;
    if let Some(why) = reserved_group(group.addr().ip()) {
        return Err(format!(
            "{} is {why}\n  hint: use a group of your own: 239.255.0.0/16 (IPv4, this \
             organisation) or [ff15::1234]:PORT (IPv6)",
            group.addr().ip()
        ));
    }
    Ok(group)
}

/// Why a group may not carry a feed: link-local control groups, which
/// every host on the link receives and switches flood to every port.
fn reserved_group(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [224, 0, 0] => Some(
            "in 224.0.0.0/24, the link-local control block (all hosts, routers, \
             OSPF, IGMP, mDNS): every host on the link gets it and switches flood it",
        ),
        IpAddr::V6(v6) if matches!(v6.segments(), [0xff01 | 0xff02, 0, 0, 0, 0, 0, 0, 1 | 2]) => {
            Some("the all-nodes or all-routers group: every host or router gets it")
        }
        _ => None,
    }
}

/// The smallest --max-datagram that can carry a fragment of one byte: a
/// frame's header and tag plus a fragment's header.
pub(crate) const MIN_MAX_DATAGRAM: usize =
    mcsec::frame::OVERHEAD + mcsec::body::FRAGMENT_MAX_OVERHEAD + 1;

fn parse_ttl(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err(
            "TTL 0 sends nothing past this host's own sockets\n  hint: -t 1 keeps \
             datagrams on the local link (the default); more crosses routers"
                .into(),
        ),
        Ok(n) if n <= 255 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a TTL\n  hint: a TTL is 1 to 255; 1 (the default) keeps datagrams on the local link"
        )),
    }
}

/// `--chunk`: a message size of at least one byte.
pub(crate) fn parse_chunk(s: &str) -> Result<usize, String> {
    match parse_bytes(s)? {
        0 => Err(
            "a chunk of 0 bytes carries nothing\n  hint: leave --chunk out to fill \
             each datagram, or give a size such as 1400 or 64k"
                .into(),
        ),
        n => Ok(n),
    }
}

pub(crate) fn parse_interface(s: &str) -> Result<InterfaceSpec, String> {
    s.parse().map_err(with_hint)
}

pub(crate) fn parse_source(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an IP address\n  hint: -s takes the sender's address, e.g. -s 192.0.2.7"
        )
    })
}

fn parse_max_datagram(s: &str) -> Result<usize, String> {
    let n = parse_bytes(s)?;
    if !(MIN_MAX_DATAGRAM..=65_507).contains(&n) {
        return Err(format!(
            "{n} is not a usable datagram size\n  hint: between {MIN_MAX_DATAGRAM} and 65507 \
             bytes; {MIN_MAX_DATAGRAM} leaves one byte of message per datagram"
        ));
    }
    Ok(n)
}

/// A number with an optional suffix: `k`, `M`, `G` (powers of `unit`).
fn parse_suffixed(s: &str, unit: u64) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (s.get(..i)?, unit),
        Some((i, 'm' | 'M')) => (s.get(..i)?, unit * unit),
        Some((i, 'g' | 'G')) => (s.get(..i)?, unit * unit * unit),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// Bytes: `4096`, `64k`, `16M` (binary: 16M = 16 MiB).
pub(crate) fn parse_bytes(s: &str) -> Result<usize, String> {
    parse_suffixed(s, 1024)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{s:?} is not a size\n  hint: write e.g. 65536, 64k or 16M"))
}

/// A file size: as [`parse_bytes`], up to 2^64 - 1 (16G, 2T).
pub(crate) fn parse_file_size(s: &str) -> Result<u64, String> {
    parse_suffixed(s, 1024)
        .ok_or_else(|| format!("{s:?} is not a size\n  hint: write e.g. 64M or 16G"))
}

/// Bits per second: `100M` is 100,000,000 bit/s (decimal, as links are
/// rated).
pub(crate) fn parse_rate(s: &str) -> Result<u64, String> {
    match parse_suffixed(s, 1000) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a rate\n  hint: bits per second, e.g. 500k, 100M or 1G"
        )),
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e})\n  hint: write e.g. 500ms, 1s or 2m"))
}

/// Loads the keyring, turning a key error into one with its hint.
pub(crate) fn load_keyring(path: &Path) -> Result<Keyring, CliError> {
    Ok(Keyring::load(path)?)
}

/// How often, at most, a receiver that meets unknown key IDs looks at its
/// key file's metadata for a change: a stat(2) ten times a second at
/// worst, whatever rate of unknown key IDs arrives. The file is read only
/// when its metadata changed.
const UNKNOWN_KEY_RECHECK: Duration = Duration::from_millis(100);

/// A key file that is read again on SIGHUP, and, for a receiver that meets
/// a key ID it does not know, when the file changed (looked at no more than
/// every [`UNKNOWN_KEY_RECHECK`]): a rotation that reaches a receiver's
/// file before the sender switches keys loses nothing, because the frame
/// that finds the key unknown is opened after the reload. A file that
/// fails to load is reported and the keys in force stay.
#[derive(Debug)]
pub(crate) struct KeyFile {
    path: PathBuf,
    hup: Arc<AtomicBool>,
    /// What the file looked like when it was last loaded.
    seen: Option<FileStamp>,
    /// What it looked like when it last failed to load: warned about once.
    failed: Option<FileStamp>,
    /// When an unknown key ID last made us look at the file.
    last_check: Option<Instant>,
}

/// Enough of a file's metadata to tell that it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    })
}

impl KeyFile {
    /// Loads the key file and starts listening for SIGHUP.
    pub(crate) fn open(path: &Path) -> Result<(Self, Keyring), CliError> {
        let seen = file_stamp(path);
        let keyring = load_keyring(path)?;
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
            .map_err(|e| CliError::new(format!("installing a signal handler: {e}")))?;
        let keys = Self {
            path: path.to_owned(),
            hup,
            seen,
            failed: None,
            last_check: None,
        };
        Ok((keys, keyring))
    }

    /// A new keyring if SIGHUP arrived, or if `unknown_key` (a datagram
    /// under a key ID the keyring lacks is waiting) and the file changed
    /// since it was loaded.
    pub(crate) fn poll(&mut self, unknown_key: bool) -> Option<Keyring> {
        let hup = self.hup.swap(false, Ordering::Relaxed);
        let recheck = unknown_key
            && self
                .last_check
                .is_none_or(|t| t.elapsed() >= UNKNOWN_KEY_RECHECK);
        if !(hup || recheck) {
            return None;
        }
        if recheck {
            self.last_check = Some(Instant::now());
        }
        let stamp = file_stamp(&self.path);
        if !hup && stamp == self.seen {
            return None;
        }
        let why = if hup { "SIGHUP" } else { "an unknown key ID" };
        match Keyring::load(&self.path) {
            Ok(ring) => {
                self.seen = stamp;
                self.failed = None;
                let ids: Vec<String> = ring.iter().map(|k| k.id().to_string()).collect();
                tracing::info!(
                    "reloaded {} after {why}: keys {}",
                    self.path.display(),
                    ids.join(", ")
                );
                Some(ring)
            }
            Err(e) => {
                // Not `seen`: a fix written in place within the same
                // timestamp tick must still be read. Rereads are bounded by
                // UNKNOWN_KEY_RECHECK; the warning comes once per version.
                if hup || stamp != self.failed {
                    let e = CliError::from(e);
                    tracing::warn!(
                        "reloading the key file after {why} failed; the keys loaded before stay in force: {e}"
                    );
                }
                self.failed = stamp;
                None
            }
        }
    }
}

/// The `-k` option.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KeyArgs {
    /// The group key file (from `mcsec keygen`; must be mode 0600).
    #[arg(env = "MCSEC_KEY", short, long, value_name = "FILE")]
    pub(crate) key: PathBuf,
}

/// Set by SIGINT or SIGTERM; loops check it and wind down.
pub(crate) fn stop_flag() -> Result<Arc<AtomicBool>, CliError> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .map_err(|e| CliError::new(format!("installing a signal handler: {e}")))?;
    }
    Ok(flag)
}

pub(crate) fn stopped(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

/// Sleeps for `total`, waking early if `flag` is set.
pub(crate) fn sleep_unless_stopped(flag: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while !stopped(flag) {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            return;
        };
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Receive errors in a row after which the error is taken as permanent.
const MAX_ERRORS_IN_A_ROW: u32 = 100;

/// Receives with tolerance for transient errors (ENOBUFS, ENOMEM): they are
/// logged and skipped; one that repeats [`MAX_ERRORS_IN_A_ROW`] times in a
/// row is permanent and would only spin, so it is returned.
#[derive(Debug, Default)]
pub(crate) struct ErrorStreak(u32);

impl ErrorStreak {
    /// How many datagrams `receiver.datagrams()` now yields: 0 for a
    /// timeout or a transient error.
    pub(crate) fn recv(&mut self, receiver: &mut net::BatchReceiver) -> Result<usize, NetError> {
        match receiver.recv() {
            Ok(0) => Ok(0),
            Ok(n) => {
                self.0 = 0;
                Ok(n)
            }
            Err(e) => {
                self.0 += 1;
                if self.0 >= MAX_ERRORS_IN_A_ROW {
                    return Err(e);
                }
                tracing::warn!("{e}");
                Ok(0)
            }
        }
    }
}

/// The library's [`mcsec::transfer::pacer::Pacer`] with the waiting done:
/// sleeps until each batch's deadline, or until a signal.
pub(crate) struct Pacer {
    inner: mcsec::transfer::pacer::Pacer,
    /// Set by a signal: stop waiting.
    stop: Option<Arc<AtomicBool>>,
}

impl Pacer {
    pub(crate) fn new(bits_per_sec: Option<u64>, pps: Option<u64>, ipv6: bool) -> Self {
        Self {
            inner: mcsec::transfer::pacer::Pacer::new(bits_per_sec, pps, ipv6),
            stop: None,
        }
    }

    /// Makes waits end early once `flag` is set (Ctrl-C, SIGTERM).
    pub(crate) fn stop_on(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// The library pacer: its rates size an outbox's batches.
    pub(crate) fn inner(&self) -> &mcsec::transfer::pacer::Pacer {
        &self.inner
    }

    /// Waits until `count` datagrams totalling `bytes` may go, back to back.
    pub(crate) fn wait_for(&mut self, count: usize, bytes: usize) {
        if !self.inner.is_paced() {
            return;
        }
        let now = Instant::now();
        let due = self.inner.book(now, count, bytes);
        if due > now {
            match &self.stop {
                Some(flag) => sleep_unless_stopped(flag, due - now),
                None => std::thread::sleep(due - now),
            }
        }
    }
}

/// The CLI's sender: the library's [`mcsec::transfer::outbox::Outbox`]
/// (sealing, fragments, batches sized to the pacer, signed batches,
/// session rollover) with the I/O done: the socket, pacing by sleeping,
/// --threads workers, SIGHUP key reloads, --metrics and the counters of
/// what the kernel took. A fragmented message's datagrams go out in
/// batches (a GSO run where the kernel has it) as large as the pacer
/// allows. With a signing key, frames wait in a signed batch (at most
/// --sign-every frames or --sign-interval) and go out with their manifest
/// when it closes.
pub(crate) struct Outbox {
    inner: mcsec::transfer::outbox::Outbox,
    /// Reread on SIGHUP, between messages.
    keys: Option<KeyFile>,
    signing: Option<Signing>,
    /// Sessions the library had started when last looked at (a new one
    /// repeats the --sign-every warning, as each session fits its own).
    sessions: u64,
    sender: net::Sender,
    pacer: Pacer,
    pub(crate) datagrams: u64,
    pub(crate) messages: u64,
    /// UDP payload bytes handed to the kernel.
    pub(crate) bytes: u64,
    /// Batches sent: runs of datagrams handed to the kernel at once.
    pub(crate) batches: u64,
    /// --metrics: the counters above, served.
    metrics: Option<super::metrics::Metrics>,
    /// --threads N (N > 1): batches sealed on worker threads. The library
    /// outbox numbers the frames and lays them out
    /// ([`mcsec::transfer::outbox::Outbox::defer_sealing`]); the workers
    /// seal them.
    pipe: Option<super::pipeline::SealPipe>,
}

/// A library outbox error as the CLI says it: `--max-datagram` too small
/// to sign is a usage error with its fix; a message too large to fragment
/// names the limits.
fn outbox_error(err: OutboxError) -> CliError {
    match err {
        OutboxError::TooSmallToSign {
            max_datagram,
            least,
        } => CliError::usage(format!(
            "--max-datagram {max_datagram} is too small to sign: a signature \
             (a manifest) needs datagrams of {least} bytes"
        ))
        .hint(format!("raise --max-datagram to {least} or more")),
        OutboxError::CannotFragment { .. } => CliError::new(err.to_string())
            .hint("messages are limited to 4 GiB and --max-datagram to at least 81 bytes"),
        _ => CliError::new(err.to_string()),
    }
}

impl From<OutboxError> for CliError {
    fn from(err: OutboxError) -> Self {
        outbox_error(err)
    }
}

impl Outbox {
    /// An outbox for one sender session at a time, signing its frames
    /// with `signing` if given.
    pub(crate) fn new(
        keyring: Keyring,
        channel: ChannelId,
        sender: net::Sender,
        max_datagram: usize,
        pacer: Pacer,
        signing: Option<Signing>,
    ) -> Result<Self, CliError> {
        let mut inner = mcsec::transfer::outbox::Outbox::new(
            keyring,
            channel.clone(),
            max_datagram,
            signing.clone(),
        )?;
        inner.set_batching(sender.max_batch(max_datagram), Some(pacer.inner().clone()));
        tracing::info!(
            "sending to {} (channel {channel}) as sender {} with key {}{}",
            sender.group(),
            inner.sender_id(),
            inner.key_id(),
            signing
                .as_ref()
                .map(|s| format!(", signed by {}", s.key.id()))
                .unwrap_or_default()
        );
        let mut outbox = Self {
            inner,
            keys: None,
            signing,
            sessions: 0,
            sender,
            pacer,
            datagrams: 0,
            messages: 0,
            bytes: 0,
            metrics: None,
            batches: 0,
            pipe: None,
        };
        outbox.note_sessions();
        Ok(outbox)
    }

    /// Warns, for each sender session started since last time, if fewer
    /// frames than --sign-every fit one manifest.
    fn note_sessions(&mut self) {
        let sessions = self.inner.stats().sessions;
        if sessions == self.sessions {
            return;
        }
        self.sessions = sessions;
        if let (Some(signing), Some(every)) = (&self.signing, self.inner.signing_every())
            && every < signing.every
        {
            tracing::warn!(
                "--sign-every {}: only {} hashes fit one {}-byte datagram; signing every {}",
                signing.every,
                every,
                self.inner.max_datagram(),
                every
            );
        }
    }

    /// Seals on `threads` worker threads (more than 1), in order. Signed
    /// sessions seal on this thread: a manifest hashes the sealed frames.
    pub(crate) fn use_threads(&mut self, threads: usize) -> Result<(), CliError> {
        if threads > 1 {
            if self.signing.is_some() {
                return Err(CliError::usage("--threads and --sign: not together yet")
                    .hint("a signing sender seals on one thread; drop --threads"));
            }
            self.inner.defer_sealing()?;
            self.pipe = Some(super::pipeline::SealPipe::new(threads)?);
        }
        Ok(())
    }

    pub(crate) fn sender_id(&self) -> SenderId {
        self.inner.sender_id()
    }

    /// Rereads `keys` on SIGHUP (see [`Self::reload_keys`]).
    pub(crate) fn watch_keys(&mut self, keys: KeyFile) {
        self.keys = Some(keys);
    }

    /// Between messages: if SIGHUP asked for it, rereads the key file (see
    /// [`Self::set_keyring`]).
    pub(crate) fn reload_keys(&mut self) -> Result<(), CliError> {
        match self.keys.as_mut().and_then(|keys| keys.poll(false)) {
            Some(ring) => self.set_keyring(ring),
            None => Ok(()),
        }
    }

    /// Takes a reloaded keyring. If its last key is not the one in use,
    /// sends what is queued and starts a new sender session under it.
    pub(crate) fn set_keyring(&mut self, ring: Keyring) -> Result<(), CliError> {
        let result = self.inner.set_keyring(ring, mcsec::now_us());
        // What the old session queued goes, even if the new one failed.
        self.send_ready(true)?;
        if result? {
            self.note_sessions();
            tracing::info!(
                "sending with key {} as sender {}",
                self.inner.key_id(),
                self.inner.sender_id()
            );
        }
        Ok(())
    }

    pub(crate) fn max_plaintext(&self) -> usize {
        self.inner.max_plaintext()
    }

    /// Seals and sends one body.
    pub(crate) fn send_body(&mut self, body: &Body<'_>) -> Result<(), CliError> {
        self.queue_body(body)?;
        self.flush()
    }

    /// Seals one body and queues it, sending the batch first if it is full
    /// or the new datagram does not fit its run. Signed: into the signed
    /// batch, which goes out when it is full or its time is up.
    pub(crate) fn queue_body(&mut self, body: &Body<'_>) -> Result<(), CliError> {
        let result = self.inner.queue_body(mcsec::now_us(), body);
        self.note_sessions();
        self.send_ready(false)?;
        Ok(result?)
    }

    /// Signed: closes the open batch if it is full or its time is up, and
    /// sends its datagrams (manifest, frames, manifest).
    pub(crate) fn poll_signing(&mut self) -> Result<(), CliError> {
        let result = self.inner.poll_signing(mcsec::now_us());
        self.send_ready(true)?;
        Ok(result?)
    }

    /// When the open signed batch must go out, if there is one.
    pub(crate) fn signing_deadline(&self) -> Option<Instant> {
        let deadline = self.inner.signing_deadline_us()?;
        let left = deadline.saturating_sub(mcsec::now_us());
        Some(Instant::now() + Duration::from_micros(left))
    }

    /// Sends what is queued, once the pacer allows; signed, the open batch
    /// goes too if its time is up (else it waits for more frames, at most
    /// --sign-interval: see [`Self::signing_deadline`]).
    pub(crate) fn flush(&mut self) -> Result<(), CliError> {
        let result = self.inner.flush(mcsec::now_us());
        self.send_ready(true)?;
        Ok(result?)
    }

    /// Sends everything now, an open signed batch included: before the
    /// sender waits for long, switches session, or exits.
    pub(crate) fn finish(&mut self) -> Result<(), CliError> {
        let result = self.inner.finish(mcsec::now_us());
        self.send_ready(true)?;
        Ok(result?)
    }

    /// Waits until `fd` is readable, sending the open signed batch when it
    /// is due. Returns `false`, at once, if `stop` is set (Ctrl-C, SIGTERM)
    /// before that. Without a batch open and without `stop`, returns at once:
    /// the caller's read may block.
    pub(crate) fn wait_readable(
        &mut self,
        fd: std::os::fd::BorrowedFd<'_>,
        stop: Option<&AtomicBool>,
    ) -> Result<bool, CliError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        loop {
            super::notify::keepalive();
            if stop.is_some_and(stopped) {
                return Ok(false);
            }
            let deadline = self.signing_deadline();
            if deadline.is_none() && stop.is_none() {
                return Ok(true);
            }
            // Look at the stop flag at least every 100 ms.
            let slice = Duration::from_millis(100);
            let left = deadline.map_or(slice, |d| {
                d.saturating_duration_since(Instant::now()).min(slice)
            });
            let ms = u16::try_from(left.as_millis().saturating_add(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(n) if n > 0 => return Ok(true),
                Ok(_) => self.poll_signing()?,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    self.finish()?;
                    return Ok(true);
                }
            }
        }
    }

    /// Sleeps for `total` (waking early if `stop` is set), sending the open
    /// signed batch when it is due.
    pub(crate) fn sleep(&mut self, stop: &AtomicBool, total: Duration) -> Result<(), CliError> {
        let end = Instant::now() + total;
        loop {
            super::notify::keepalive();
            let now = Instant::now();
            if now >= end || stopped(stop) {
                return Ok(());
            }
            // Wake at least every second: a watchdog ping may be due.
            let wake = self
                .signing_deadline()
                .map_or(end, |d| d.min(end))
                .min(now + Duration::from_secs(1));
            sleep_unless_stopped(stop, wake.saturating_duration_since(now));
            self.poll_signing()?;
        }
    }

    /// Hands the batches the library made ready to the kernel, in order.
    /// With --threads, hands them to the workers instead and sends the
    /// batches sealed so far (all of them, waiting, if `all`), in order.
    fn send_ready(&mut self, all: bool) -> Result<(), CliError> {
        if let Some(mut pipe) = self.pipe.take() {
            let result = self.send_through(&mut pipe, all);
            self.pipe = Some(pipe);
            return result;
        }
        while let Some(batch) = self.inner.pop_batch() {
            let result = self.transmit(batch.bytes(), batch.stride(), batch.count());
            self.inner.recycle(batch);
            result?;
        }
        Ok(())
    }

    fn send_through(
        &mut self,
        pipe: &mut super::pipeline::SealPipe,
        all: bool,
    ) -> Result<(), CliError> {
        let mut ready = Vec::new();
        while let Some(mut batch) = self.inner.pop_batch() {
            let (stride, count) = (batch.stride(), batch.count());
            match batch.take_unsealed() {
                Some((key, frames, buf)) => {
                    pipe.submit_frames(key, buf, frames, stride, count, &mut ready)?;
                }
                // Sealed already (never, with --threads): it goes after
                // those handed out before it.
                None => {
                    pipe.collect(true, &mut ready)?;
                    for job in ready.drain(..) {
                        self.transmit(job.sealed()?, job.stride, job.count)?;
                        self.recycle_job(pipe, job);
                    }
                    self.transmit(batch.bytes(), stride, count)?;
                    self.inner.recycle(batch);
                }
            }
        }
        if all || pipe.busy() {
            pipe.collect(all, &mut ready)?;
        }
        for job in ready {
            self.transmit(job.sealed()?, job.stride, job.count)?;
            self.recycle_job(pipe, job);
        }
        Ok(())
    }

    /// A sent job's buffer back to the library outbox, the job to the pipe.
    fn recycle_job(
        &mut self,
        pipe: &mut super::pipeline::SealPipe,
        mut job: super::pipeline::SealJob,
    ) {
        self.inner.recycle_buffer(std::mem::take(&mut job.buf));
        self.inner.recycle_frames(job.take_frames());
        pipe.recycle(job);
    }

    /// Sends `count` sealed datagrams laid end to end in `batch`, all
    /// `stride` bytes but the last, once the pacer allows.
    fn transmit(&mut self, batch: &[u8], stride: usize, count: usize) -> Result<(), CliError> {
        super::notify::keepalive();
        self.pacer.wait_for(count, batch.len());
        let mut rest = batch;
        while !rest.is_empty() {
            // A short count means a later syscall failed: resend the rest,
            // and a lasting error shows itself then.
            let sent = self.sender.send_segments(rest, stride)?;
            if sent == 0 {
                return Err(CliError::new(
                    "the kernel took none of a batch of datagrams",
                ));
            }
            rest = rest.get(sent.saturating_mul(stride)..).unwrap_or_default();
        }
        self.datagrams += count as u64;
        self.bytes += batch.len() as u64;
        self.batches += 1;
        // Four atomic adds a batch: cheap enough to keep it exact.
        self.update_metrics(true);
        Ok(())
    }

    /// Serves this outbox's counters at `addr` (--metrics).
    pub(crate) fn serve_metrics(
        &mut self,
        addr: Option<std::net::SocketAddr>,
    ) -> Result<(), CliError> {
        if let Some(addr) = addr {
            self.metrics = Some(super::metrics::Metrics::start(
                addr,
                &super::metrics::SEND_COUNTERS,
            )?);
        }
        Ok(())
    }

    /// The counters, as --metrics serves them.
    pub(crate) fn counters(&self) -> [(&'static str, u64); 4] {
        [
            ("messages", self.messages),
            ("datagrams", self.datagrams),
            ("bytes", self.bytes),
            ("batches", self.batches),
        ]
    }

    /// Hands the counters to --metrics (every 250 ms at most, unless
    /// `now`).
    pub(crate) fn update_metrics(&mut self, now: bool) {
        if self.metrics.as_ref().is_some_and(|m| now || m.due()) {
            let values = self.counters();
            if let Some(metrics) = &mut self.metrics {
                metrics.update(&values, now);
            }
        }
    }

    /// Sends one message: one Data frame if it fits, else fragments.
    pub(crate) fn send_message(&mut self, message: &[u8]) -> Result<(), CliError> {
        self.queue_message(message)?;
        self.flush()
    }

    /// Seals one message and queues its datagrams: they go when a batch
    /// fills or at [`Self::flush`].
    pub(crate) fn queue_message(&mut self, message: &[u8]) -> Result<(), CliError> {
        self.reload_keys()?;
        let data = Body::Data(message);
        if data.encoded_len() > self.max_plaintext()
            && message.len() > mcsec::reassembly::DEFAULT_MAX_MESSAGE
            && u32::try_from(message.len()).is_ok()
            && mcsec::reassembly::fragment_size(self.max_plaintext()).is_some()
        {
            tracing::warn!(
                "a {}-byte message is over the receivers' default --max-message (1M); \
                 receivers need a larger --max-message to accept it",
                message.len()
            );
        }
        let result = self.inner.queue_message(mcsec::now_us(), message);
        self.note_sessions();
        self.send_ready(false)?;
        if let Queued::Fragments { msg_id, .. } = result? {
            tracing::debug!(
                "message {msg_id} ({} bytes) sent in fragments",
                message.len()
            );
        }
        self.messages += 1;
        Ok(())
    }
}

/// A message that came out of the pipeline.
#[derive(Debug)]
pub(crate) enum Delivered<'a> {
    /// Application data, whole (reassembled if it came in fragments).
    Message {
        header: Header,
        payload: Cow<'a, [u8]>,
        signer: Signer,
    },
    /// A chat line.
    Chat {
        header: Header,
        nick: Cow<'a, str>,
        text: Cow<'a, str>,
        signer: Signer,
    },
    /// A file put back together from its symbols, SHA-256 checked.
    File {
        header: Header,
        file: FileDone,
        signer: Signer,
    },
}

/// A file received whole and checked.
#[derive(Debug)]
pub(crate) struct FileDone {
    pub(crate) sender: mcsec::SenderId,
    pub(crate) file_id: u32,
    /// The sender's name or path, unsanitized.
    pub(crate) name: String,
    pub(crate) sha256: [u8; 32],
    pub(crate) len: u64,
    /// A variant-3 file, held whole, for the caller to save.
    pub(crate) data: Option<Vec<u8>>,
    /// A variant-5 file, already saved (with --save-dir) here.
    pub(crate) saved: Option<std::path::PathBuf>,
    /// Where its first symbol came from (variant 5).
    pub(crate) from: Option<std::net::SocketAddr>,
}

impl From<ReceivedFile> for FileDone {
    fn from(f: ReceivedFile) -> Self {
        Self {
            sender: f.sender,
            file_id: f.file_id,
            name: f.name,
            sha256: f.sha256,
            len: f.data.len() as u64,
            data: Some(f.data),
            saved: None,
            from: None,
        }
    }
}

/// Who signed a delivered message: the trusted key's name (or its ID),
/// or `None` when the receiver does not check signatures.
pub(crate) type Signer = Option<Arc<str>>;

use mcsec::transfer::inbox::{Delivery, Dropped, Now, Pushed, StreamSink};

impl<'a> Delivered<'a> {
    /// What the library's inbox delivered, as the CLI shows it; `None` for
    /// a kind this CLI does not know.
    fn from_delivery(delivery: Delivery<'a>) -> Option<Self> {
        match delivery {
            Delivery::Message {
                header,
                payload,
                signer,
            } => Some(Self::Message {
                header,
                payload,
                signer,
            }),
            Delivery::Chat {
                header,
                nick,
                text,
                signer,
            } => Some(Self::Chat {
                header,
                nick,
                text,
                signer,
            }),
            Delivery::File {
                header,
                file,
                signer,
            } => Some(Self::File {
                header,
                file: file.into(),
                signer,
            }),
            _ => None,
        }
    }
}

/// The library's [`mcsec::transfer::inbox::Inbox`] (open, check
/// signatures, count loss, reassemble) with what a command adds around it:
/// the clocks, key file reloads, the file sink for files of any size
/// (variant 5), the kernel's drop count, and warnings that explain rejects.
pub(crate) struct Inbox {
    inner: mcsec::transfer::inbox::Inbox,
    /// Files of any size (variant 5), stored as they arrive.
    pub(crate) streams: Option<super::recvfile::FileSink>,
    /// The source of the datagram being taken, as the caller said.
    source: Option<std::net::SocketAddr>,
    /// Datagrams the kernel dropped on the socket (SO_RXQ_OVFL), as the
    /// caller last read it.
    kernel_drops: u64,
    /// The inbox's monotonic clock, so a wall-clock step can neither keep
    /// partial messages past their timeout nor expire them early.
    started: Instant,
    /// Reread on SIGHUP, or when unknown key IDs arrive and it changed.
    keys: Option<KeyFile>,
    /// A keyring reloaded since [`Self::take_reloaded`] last looked, for a
    /// caller that also sends (chat).
    reloaded: Option<Keyring>,
    report_reloads: bool,
    /// Warnings that explain rejects, if asked for.
    explain: Option<Explainer>,
    /// With --trust: sig_unsigned as last explained.
    unsigned_seen: u64,
}

/// Rate-limited warnings on rejected datagrams ([`super::explain`]).
struct Explainer {
    limiter: super::explain::RateLimiter,
    key_file: String,
    trust_file: String,
}

impl Inbox {
    pub(crate) fn new(opener: Opener, reassembler: Reassembler) -> Self {
        Self::with_files(opener, reassembler, FileReceiver::default())
    }

    pub(crate) fn with_files(
        opener: Opener,
        reassembler: Reassembler,
        files: FileReceiver,
    ) -> Self {
        Self {
            inner: mcsec::transfer::inbox::Inbox::new(opener, reassembler, files),
            streams: None,
            source: None,
            kernel_drops: 0,
            started: Instant::now(),
            keys: None,
            reloaded: None,
            report_reloads: false,
            explain: None,
            unsigned_seen: 0,
        }
    }

    /// The opener: its keyring, configuration and counters.
    pub(crate) fn opener(&self) -> &Opener {
        self.inner.opener()
    }

    /// With --trust: a warning when frames were dropped for want of a
    /// trusted signature since the last look (they were held, so their
    /// source is not known here).
    fn explain_unsigned(&mut self) {
        let Some(unsigned) = self.inner.signed_stats().map(|s| s.sig_unsigned) else {
            return;
        };
        if unsigned <= self.unsigned_seen {
            return;
        }
        self.unsigned_seen = unsigned;
        let now_mono = self.started.elapsed();
        if let Some(explain) = &mut self.explain
            && !super::quiet()
            && explain.limiter.allow("sig_unsigned", None, now_mono)
        {
            let cause = super::explain::Cause::SigUnsigned;
            eprintln!(
                "{}",
                cause.line(None, &explain.key_file, &explain.trust_file)
            );
        }
    }

    /// Warns on stderr (unless -q) about rejected datagrams, at most once
    /// per cause and source a minute, naming the key and trust files in
    /// the hints.
    pub(crate) fn explain_rejects(&mut self, key_file: &Path, trust_file: Option<&Path>) {
        self.explain = Some(Explainer {
            limiter: super::explain::RateLimiter::default(),
            key_file: key_file.display().to_string(),
            trust_file: trust_file
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        });
    }

    /// A warning for a rejected datagram, if it has a hint and the rate
    /// limit allows one.
    fn explain(
        &mut self,
        reason: mcsec::signed::SigReject,
        peeked: Option<&Header>,
        len: usize,
        from: Option<IpAddr>,
    ) {
        use super::explain::Cause;
        use mcsec::signed::SigReject;
        let now_mono = self.started.elapsed();
        let Some(explain) = &mut self.explain else {
            return;
        };
        let cause = match reason {
            SigReject::Core(Reject::Oversize) => Cause::Oversize(len),
            SigReject::Core(Reject::Malformed) => Cause::Malformed,
            SigReject::Core(Reject::UnknownKey) => match peeked {
                Some(h) => Cause::UnknownKey(h.key_id),
                None => Cause::Malformed,
            },
            SigReject::Core(Reject::Stale) => {
                let Some(h) = peeked else { return };
                let now = i128::from(mcsec::now_us());
                let secs = (now - i128::from(h.timestamp_us)) / 1_000_000;
                Cause::Stale(i64::try_from(secs).unwrap_or(i64::MAX))
            }
            SigReject::Core(Reject::AuthFailed) => Cause::AuthFailed,
            SigReject::Untrusted => Cause::SigUntrusted,
            _ => return,
        };
        if super::quiet() || !explain.limiter.allow(cause.name(), from, now_mono) {
            return;
        }
        eprintln!(
            "{}",
            cause.line(from, &explain.key_file, &explain.trust_file)
        );
    }

    /// Delivers only what keys of `verifier`'s trust list signed.
    pub(crate) fn trust(&mut self, verifier: Option<mcsec::signed::Verifier>) {
        self.inner.set_verifier(verifier);
    }

    /// Rereads `keys` when [`KeyFile::poll`] says so (see
    /// [`Self::reload_keys`]); with `report`, each new keyring is also kept
    /// for [`Self::take_reloaded`].
    pub(crate) fn watch_keys(&mut self, keys: KeyFile, report: bool) {
        self.keys = Some(keys);
        self.report_reloads = report;
    }

    /// Between datagrams: swaps in the keyring SIGHUP asked for, if any.
    pub(crate) fn reload_keys(&mut self) {
        self.poll_keys(false);
    }

    /// The keyring reloaded since the last call, if any.
    pub(crate) fn take_reloaded(&mut self) -> Option<Keyring> {
        self.reloaded.take()
    }

    /// Swaps in a reloaded keyring if there is one: senders under keys that
    /// remain keep their replay windows.
    fn poll_keys(&mut self, unknown_key: bool) {
        if let Some(ring) = self.keys.as_mut().and_then(|keys| keys.poll(unknown_key)) {
            if self.report_reloads {
                self.reloaded = Some(ring.clone());
            }
            self.inner.set_keyring(ring);
        }
    }

    fn monotonic_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The two clocks the library's inbox reads: the wall clock judges
    /// freshness (the sender's stamps are wall-clock time), the monotonic
    /// one times out partial messages and files.
    fn now(&self) -> Now {
        Now {
            unix_us: mcsec::now_us(),
            mono_us: self.monotonic_us(),
        }
    }

    /// Frees partial messages that timed out, even while nothing arrives,
    /// and drops held frames whose signature did not come in time.
    pub(crate) fn expire(&mut self) {
        let now = self.now();
        self.inner.expire(now);
        self.explain_unsigned();
    }

    /// Before the counters are read for the last time: frames still held
    /// for a signature are dropped and counted, so every frame is.
    pub(crate) fn finish(&mut self) {
        self.inner.finish();
    }

    /// The kernel's count of datagrams it dropped on the socket
    /// ([`mcsec::net::BatchReceiver::kernel_drops`]).
    pub(crate) fn set_kernel_drops(&mut self, drops: u64) {
        self.kernel_drops = drops;
    }

    /// One datagram in; the message it completes, if any. With --trust, one
    /// datagram can release several: take the rest with
    /// [`Self::next_released`].
    pub(crate) fn take<'a>(&mut self, datagram: &'a mut [u8]) -> Option<Delivered<'a>> {
        self.take_from(datagram, None)
    }

    /// [`Self::take`] for a datagram from `from` (the source address the
    /// socket reported), which warnings on rejects name.
    pub(crate) fn take_from<'a>(
        &mut self,
        datagram: &'a mut [u8],
        from: Option<IpAddr>,
    ) -> Option<Delivered<'a>> {
        self.take_checked(datagram, from, None)
    }

    /// [`Self::take_from`] for a datagram a worker thread may have checked
    /// already (recv --threads): its verdict stands in for the AEAD.
    pub(crate) fn take_checked<'a>(
        &mut self,
        datagram: &'a mut [u8],
        from: Option<IpAddr>,
        verdict: Option<mcsec::seal::Verdict>,
    ) -> Option<Delivered<'a>> {
        // A key ID we do not hold: perhaps the file gained it. Look before
        // opening, so the frame that finds it is not lost to the reload.
        if self.keys.is_some()
            && let Ok(header) = mcsec::frame::peek_header(datagram)
            && self.inner.opener().keyring().get(header.key_id).is_none()
        {
            self.poll_keys(true);
        }
        let now = self.now();
        let source = self.source;
        let streams = self.streams.as_mut();
        let pushed = match (verdict, streams) {
            (Some(verdict), streams) => self.inner.push_checked(
                datagram,
                source,
                now,
                verdict,
                streams.map(|s| s as &mut dyn StreamSink),
            ),
            (None, Some(streams)) => self.inner.push_with(datagram, source, now, streams),
            (None, None) => self.inner.push(datagram, source, now),
        };
        let first = match pushed {
            Pushed::Delivered(delivery) => Delivered::from_delivery(delivery),
            Pushed::Rejected(rejected) => {
                tracing::debug!("dropped a datagram: {}", rejected.reason);
                self.explain(
                    rejected.reason,
                    rejected.header.as_ref(),
                    rejected.len,
                    from,
                );
                None
            }
            Pushed::VerdictRefused => {
                // recv refuses --threads with --trust: the signature layer
                // opens frames itself, and this one was decrypted already.
                tracing::error!("dropped a datagram checked on a worker thread under --trust");
                return None;
            }
            _ => None,
        };
        while let Some(dropped) = self.inner.next_dropped() {
            match dropped {
                Dropped::Fragment(why) => log_fragment_reject(why),
                Dropped::FileSymbol(why) => log_symbol_reject(why),
                _ => {}
            }
        }
        if self.inner.verifier().is_some() {
            self.explain_unsigned();
            return self.next_released();
        }
        first
    }

    /// A message released with an earlier datagram, if any is waiting.
    pub(crate) fn next_released(&mut self) -> Option<Delivered<'static>> {
        while let Some(delivery) = self.inner.next_delivery() {
            if let Some(delivered) = Delivered::from_delivery(delivery) {
                return Some(delivered);
            }
        }
        None
    }

    /// Loss, duplicates and reordering per sender.
    pub(crate) fn loss(&self) -> &mcsec::loss::LossTracker {
        self.inner.loss()
    }

    /// The source address of the datagrams taken next.
    pub(crate) fn set_source(&mut self, from: std::net::SocketAddr) {
        self.source = Some(from);
    }

    /// Handles what the file worker finished (see
    /// [`super::recvfile::FileSink::poll`]).
    pub(crate) fn poll_files(&mut self) {
        let now = self.monotonic_us();
        if let Some(sink) = &mut self.streams {
            sink.poll(now);
        }
    }

    /// How far each file of any size being received is, the datagrams lost
    /// so far, and the blocks decoded.
    pub(crate) fn file_progress(&self) -> (Vec<super::progress::FileProgress>, u64, u64) {
        let files = self
            .streams
            .as_ref()
            .map(super::recvfile::FileSink::progress)
            .unwrap_or_default();
        let decoded = self
            .streams
            .as_ref()
            .map_or(0, |s| s.stats().0.decode_attempts);
        (files, self.inner.loss().totals().lost, decoded)
    }

    /// A file of any size received, checked and saved.
    pub(crate) fn next_file(&mut self) -> Option<Delivered<'static>> {
        self.streams
            .as_mut()
            .and_then(super::recvfile::FileSink::next_file)
    }

    /// Counters, as `(name, value)`, in a fixed order.
    pub(crate) fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.inner.opener().stats();
        let r = self.inner.reassembly_stats();
        let (stream, backpressure, storage_errors) = self
            .streams
            .as_ref()
            .map(super::recvfile::FileSink::stats)
            .unwrap_or_default();
        let f = add_file_stats(self.inner.file_stats(), &stream);
        let mut out = vec![("frames_opened", s.opened)];
        out.extend(
            Reject::ALL
                .iter()
                .map(|x| (x.counter_name(), s.rejected(*x))),
        );
        out.extend([
            // Why frames were stale: older than --max-skew, further ahead
            // than --max-future-skew, or before a strict start or the
            // newest frame of a forgotten sender. They sum to `stale`.
            ("stale_past", s.stale_past),
            ("stale_future", s.stale_future),
            ("stale_forgotten", s.stale_forgotten),
            ("evicted", s.evicted),
            ("messages_reassembled", r.completed),
            ("fragment_timed_out", r.timed_out),
            ("fragment_oversize", r.oversize),
            ("fragment_memory_full", r.memory_full),
            ("fragment_evicted", r.evicted),
            ("fragment_conflict", r.conflict),
            ("fragment_duplicate", r.duplicate),
            ("files_completed", f.completed),
            ("file_hash_mismatch", f.hash_mismatch),
            ("file_oversize", f.oversize),
            ("file_memory_full", f.memory_full),
            ("file_evicted", f.evicted),
            ("file_timed_out", f.timed_out),
            ("file_conflict", f.conflict),
            ("file_invalid", f.invalid),
            ("file_duplicate", f.duplicate),
            ("file_extra", f.extra),
            ("file_undecodable", f.undecodable),
            ("file_decode_attempts", f.decode_attempts),
            ("file_blocks_resumed", f.blocks_resumed),
            ("file_backpressure", backpressure),
            ("file_storage_errors", storage_errors),
            ("manifests_ignored", self.inner.manifests_ignored()),
        ]);
        // With --trust: what the signature layer saw (PROTOCOL.md 3.5).
        let signed = self.inner.signed_stats().copied().unwrap_or_default();
        out.push(("frames_signed", signed.delivered));
        out.extend(signed.counters());
        // What the network did, from the seqs of frames that authenticated
        // (see mcsec::loss), and what the kernel dropped on the socket.
        let loss = self.inner.loss().totals();
        out.extend([
            ("frames_received", loss.received),
            ("lost", loss.lost),
            ("duplicates", loss.duplicates),
            ("reordered", loss.reordered),
            ("kernel_drops", self.kernel_drops),
        ]);
        out
    }
}

/// The two file receivers' counters, summed.
fn add_file_stats(
    a: &mcsec::files::FileStats,
    b: &mcsec::files::FileStats,
) -> mcsec::files::FileStats {
    let mut f = *a;
    for (x, y) in [
        (&mut f.completed, b.completed),
        (&mut f.hash_mismatch, b.hash_mismatch),
        (&mut f.oversize, b.oversize),
        (&mut f.memory_full, b.memory_full),
        (&mut f.evicted, b.evicted),
        (&mut f.timed_out, b.timed_out),
        (&mut f.conflict, b.conflict),
        (&mut f.invalid, b.invalid),
        (&mut f.duplicate, b.duplicate),
        (&mut f.extra, b.extra),
        (&mut f.undecodable, b.undecodable),
        (&mut f.decode_attempts, b.decode_attempts),
        (&mut f.blocks_resumed, b.blocks_resumed),
        (&mut f.backpressure, b.backpressure),
        (&mut f.abandoned, b.abandoned),
    ] {
        *x = x.saturating_add(y);
    }
    f
}

fn log_fragment_reject(why: FragmentReject) {
    tracing::debug!("dropped a fragment: {why}");
}

fn log_symbol_reject(why: SymbolReject) {
    match why {
        SymbolReject::HashMismatch => tracing::warn!("dropped a file: {why}"),
        _ => tracing::trace!("dropped a file symbol: {why}"),
    }
}

/// A chat line as shown: `<nick@sender signed:NAME> text` when a trusted
/// key signed it, `<nick@sender unsigned> text` when signatures are not
/// checked (no --trust): the nick alone is only a claim.
pub(crate) fn chat_line(header: &Header, nick: &str, text: &str, signer: Option<&str>) -> String {
    let signed = match signer {
        Some(name) => format!("signed:{}", printable(name)),
        None => "unsigned".into(),
    };
    format!(
        "<{}@{} {signed}> {}",
        display_nick(nick),
        header.sender_id.short(),
        printable(text)
    )
}

/// Replaces terminal control characters and invisible or direction-changing
/// format characters in text a key holder chose ([`mcsec::text::printable`]).
pub(crate) fn printable(s: &str) -> String {
    mcsec::text::printable(s)
}

/// Longest nick shown, in characters.
pub(crate) const MAX_NICK_CHARS: usize = 32;

/// A received nick as shown in `<nick@sender>`: printable, at most 32
/// characters, and without `<`, `>` or `@`, so that no nick can close the
/// prefix and fake another sender's.
pub(crate) fn display_nick(nick: &str) -> String {
    printable(nick)
        .chars()
        .take(MAX_NICK_CHARS)
        .map(|c| if matches!(c, '<' | '>' | '@') { '?' } else { c })
        .collect()
}

/// A payload for a terminal: printable text, with control bytes and
/// invalid UTF-8 replaced, so a sender cannot drive the reader's terminal.
pub(crate) fn printable_bytes(payload: &[u8]) -> String {
    printable(&String::from_utf8_lossy(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_key_file_is_read_again_until_it_loads() {
        // Found in review: a failed load marked the file as seen, so a fix
        // written in place within the same timestamp tick (coarse clocks,
        // FAT, NFS) was never read on an unknown key ID.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let good = mcsec::keys::new_key_file_text(
            &mcsec::GroupKey::generate(std::time::SystemTime::now()).unwrap(),
        );
        let write = |text: &[u8]| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        };
        write(good.as_bytes());
        let (mut keys, _) = KeyFile::open(&path).unwrap();
        assert!(keys.poll(true).is_none(), "unchanged: not read");
        write(b"broken\n");
        keys.last_check = None;
        assert!(keys.poll(true).is_none(), "broken: nothing loads");
        // Whatever the file's timestamps say next, it is not taken as seen.
        assert_ne!(keys.seen, file_stamp(&path));
        write(good.as_bytes());
        keys.last_check = None;
        assert!(keys.poll(true).is_some(), "the fix is read");
        assert_eq!(keys.seen, file_stamp(&path));
        // Rate limit: a second unknown key at once does not even stat.
        write(b"broken again\n");
        assert!(keys.poll(true).is_none());
        assert_eq!(keys.failed, None);
    }

    /// `send`'s and `chat`'s network flags, as the subcommands flatten them.
    #[derive(Debug, clap::Parser)]
    struct SendFlags {
        #[command(flatten)]
        net: NetArgs,
        #[command(flatten)]
        send: SendArgs,
    }

    fn send_options(args: &[&str]) -> net::Options {
        use clap::Parser;
        let flags =
            SendFlags::try_parse_from(["send", "-g", "239.255.0.1:5000"].iter().chain(args))
                .unwrap();
        flags.net.options(Some(&flags.send))
    }

    #[test]
    fn send_flags_default_to_ttl_1_and_loop_on() {
        // No -t, no -i, no loop flag: the safe defaults.
        let opts = send_options(&[]);
        assert_eq!(opts.ttl, 1);
        assert!(opts.multicast_loop);
        assert_eq!(opts.interface, None);
        // Each flag reaches the options, and only its own field.
        let opts = send_options(&["--no-loop"]);
        assert!(!opts.multicast_loop);
        assert_eq!(opts.ttl, 1);
        assert!(send_options(&["--no-loop", "--loop"]).multicast_loop);
        assert!(!send_options(&["--loop", "--no-loop"]).multicast_loop);
        assert_eq!(send_options(&["-t", "4"]).ttl, 4);
        assert_eq!(
            send_options(&["-i", "127.0.0.1"]).interface,
            Some(InterfaceSpec::Addr(IpAddr::V4(
                std::net::Ipv4Addr::LOCALHOST
            )))
        );
        // A receiver's options never carry a sender's TTL or loop choice.
        let recv = <SendFlags as clap::Parser>::try_parse_from([
            "recv",
            "-g",
            "239.255.0.1:5000",
            "-t",
            "9",
        ])
        .unwrap()
        .net
        .options(None);
        assert_eq!(recv, net::Options::default());
    }

    #[test]
    fn sizes_are_binary_rates_are_decimal() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64k"), Ok(65_536));
        assert_eq!(parse_bytes("16M"), Ok(16 << 20));
        assert_eq!(parse_rate("100M"), Ok(100_000_000));
        assert_eq!(parse_rate("1G"), Ok(1_000_000_000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        for bad in ["", "M", "1.5M", "-1", "12Q", "99999999999999999999G"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn printable_defuses_terminal_escapes() {
        assert_eq!(
            printable("hi\u{1b}[2J\r\n"),
            "hi\u{fffd}[2J\u{fffd}\u{fffd}"
        );
        assert_eq!(printable("héllo"), "héllo");
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn hostile_text_cannot_drive_the_terminal_or_fake_a_sender() {
        // OSC 52 clipboard write, window title, clear screen, a bidi
        // override, zero-width and line separators.
        let hostile = "a\u{1b}]52;c;aGk=\u{7}b\u{1b}[2J\u{202e}olleh\u{200b}\u{2028}\r\n";
        assert_eq!(
            printable(hostile),
            "a\u{fffd}]52;c;aGk=\u{fffd}b\u{fffd}[2J\u{fffd}olleh\u{fffd}\u{fffd}\u{fffd}\u{fffd}"
        );
        // Every class that is_unsafe_to_show names, with printable
        // neighbours that must stay: C0, DEL, C1 (NEL, CSI), soft hyphen,
        // Arabic letter mark, Mongolian vowel separator, zero-width and
        // direction marks, line/paragraph separators and embeddings, word
        // joiner and invisible operators, isolates and deprecated format
        // characters, BOM, interlinear annotation.
        let cases = [
            ("x\u{0}\u{1f}y", "x\u{fffd}\u{fffd}y"),
            ("x\u{7f}\u{85}\u{9b}y", "x\u{fffd}\u{fffd}\u{fffd}y"),
            ("x\u{ad}\u{61c}\u{180e}y", "x\u{fffd}\u{fffd}\u{fffd}y"),
            (
                "x\u{200b}\u{200f}\u{2028}\u{202e}y",
                "x\u{fffd}\u{fffd}\u{fffd}\u{fffd}y",
            ),
            (
                "x\u{2060}\u{2064}\u{2066}\u{206f}y",
                "x\u{fffd}\u{fffd}\u{fffd}\u{fffd}y",
            ),
            ("x\u{feff}\u{fff9}\u{fffb}y", "x\u{fffd}\u{fffd}\u{fffd}y"),
            // Just outside those ranges: shown as they are.
            (
                "\u{a0}\u{ae}\u{2010}\u{2027}\u{202f}\u{2065}\u{fffc}",
                "\u{a0}\u{ae}\u{2010}\u{2027}\u{202f}\u{2065}\u{fffc}",
            ),
            (
                "<b>héllo 世界 🙂</b> \"q\" \\n",
                "<b>héllo 世界 🙂</b> \"q\" \\n",
            ),
        ];
        for (input, shown) in cases {
            assert_eq!(printable(input), shown, "{input:?}");
        }
        assert_eq!(printable_bytes(b"ok\xff\x1b"), "ok\u{fffd}\u{fffd}");
        assert_eq!(display_nick("alice@0badc0de> "), "alice?0badc0de? ");
        assert_eq!(
            display_nick(&"n".repeat(100)).chars().count(),
            MAX_NICK_CHARS
        );
        assert_eq!(display_nick("\u{202e}eve"), "\u{fffd}eve");
    }
}
