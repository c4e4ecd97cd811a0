//! `mcsec bench`: an iperf-style throughput test of the real encrypted path
//! (`Sealer::seal_in_place` into one reused buffer, `Opener::open` in
//! place), beside the same traffic with no crypto.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use mcsec::frame::{HEADER_LEN, OVERHEAD};
use mcsec::net::{self, Group, InterfaceSpec};
use mcsec::signed::{SignedSealer, SignerKey, Verifier};
use mcsec::{ChannelId, GroupKey, Keyring, Opener, OpenerConfig, Sealer};

use super::common::{
    load_keyring, parse_duration, parse_group, parse_interface, parse_rate, stop_flag, stopped,
};
use super::pipeline::{OpenJob, OpenPipe, SealJob, SealPipe};
use super::{CliError, CliResult, stdout_error};
use std::os::fd::AsFd;

mod iperf;
mod latency;
mod local;
mod remote;
mod report;
mod rx;
mod stamp;
mod tx;

use self::iperf::*;
use self::latency::*;
use self::local::*;
use self::remote::*;
use self::report::*;
use self::rx::*;
use self::stamp::*;
use self::tx::*;

/// Measure throughput of sealed multicast against plain UDP.
///
/// By default one process runs a sender thread and a receiver thread on a
/// loopback group, first with no crypto and one syscall per datagram
/// (plain: what iperf does), then with mcsec's real seal and open, batched
/// (UDP GSO out, GRO in, where the kernel has them), and prints both with
/// their ratio. Without --rate it searches (about two seconds per mode) for
/// the highest rate with under 0.1% loss, then measures that rate for
/// --duration, stepping down 5% and measuring again if the long run loses
/// more. --modes adds the other two paths: plain-batched, mcsec-unbatched.
///
/// With --latency it measures one-way latency at a steady --pps instead.
///
/// With --role send or --role recv it runs one side only, for two hosts:
/// both need the same -k key file (or both --plain), the same -g and --size.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  mcsec bench
  mcsec bench --size 200 --duration 10s --format json
  mcsec bench --rate 500M --plain
  mcsec bench --modes plain,plain-batched,mcsec-unbatched,mcsec
  mcsec bench --latency --duration 10s
  mcsec bench --role recv -k group.key -g 239.255.77.1:47001 -i eth0
  mcsec bench --role send -k group.key -g 239.255.77.1:47001 -i eth0 --rate 1G

Defaults: loopback (-i 127.0.0.1), TTL 1, group 239.255.77.1:47001. A
benchmark sends as fast as it can: only name a real interface (-i eth0) on a
network you are allowed to flood.")]
pub(crate) struct Args {
    /// The multicast group and port.
    #[arg(short, long, value_name = "GROUP:PORT", value_parser = parse_group,
          default_value = "239.255.77.1:47001")]
    group: Group,

    /// The interface to send and join on (name, address or index).
    #[arg(short, long, value_name = "IF", value_parser = parse_interface,
          default_value = "127.0.0.1")]
    interface: InterfaceSpec,

    /// Multicast TTL (IPv6: hop limit).
    #[arg(short, long, default_value_t = net::DEFAULT_TTL, value_name = "TTL",
          value_parser = clap::value_parser!(u32).range(0..=255))]
    ttl: u32,

    /// The group key file; needed with --role unless --plain. Default: a
    /// fresh key in memory.
    #[arg(short, long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// Payload bytes per datagram (mcsec adds 56 bytes of header and tag).
    #[arg(long, value_name = "BYTES", default_value_t = 1400,
          value_parser = clap::value_parser!(u64).range(STAMP_LEN as u64..=MAX_PAYLOAD as u64))]
    size: u64,

    /// How long the measured run lasts (e.g. 5s, 500ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    duration: Duration,

    /// Send at this payload rate in bits per second (k, M, G: powers of
    /// 1000) instead of searching for the highest lossless one.
    #[arg(long, value_name = "BITS", value_parser = parse_rate)]
    rate: Option<u64>,

    /// The paths to measure, in order (comma-separated): plain (no crypto,
    /// a syscall per datagram, like iperf), plain-batched, mcsec (sealed,
    /// batched with GSO/GRO), mcsec-unbatched and mcsec-signed (batched,
    /// with a signature every --sign-every frames, checked by a trusting
    /// receiver). Ratios are against plain, and signed against mcsec.
    /// Default: plain,mcsec; with --role, mcsec (and exactly one).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "MODES",
          conflicts_with_all = ["plain", "no_plain"])]
    modes: Option<Vec<Mode>>,

    /// Pin the sender to CPU SEND and the receiver to CPU RECV (e.g. 0,1),
    /// iperf2's processes included (with taskset). Default: none, the
    /// scheduler places both. Over loopback the kernel's receive work runs
    /// on the sending CPU, and pinned runs on a 2-core VM came out bimodal
    /// (see BENCHMARKS.md), so pin only where that does not happen.
    #[arg(long, value_name = "SEND,RECV|none", value_parser = parse_cpus)]
    cpus: Option<Cpus>,

    /// mcsec-signed: frames per signature.
    #[arg(long, value_name = "N", default_value_t = mcsec::signed::DEFAULT_SIGN_EVERY)]
    sign_every: usize,

    /// mcsec-signed: the longest a frame waits for its signature.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10ms")]
    sign_interval: Duration,

    /// Only the baseline: --modes plain.
    #[arg(long, conflicts_with = "no_plain")]
    plain: bool,

    /// Only mcsec, without the plain baseline: --modes mcsec.
    #[arg(long)]
    no_plain: bool,

    /// Measure one-way latency instead of throughput: datagrams at --pps
    /// (default 1000 a second) per mode for --duration, each stamped when
    /// sealed and timed when opened, the modes taking turns, each on its own
    /// port (the group's port, then the next ones); prints percentiles per
    /// mode and what each adds over plain.
    #[arg(long, conflicts_with = "rate")]
    latency: bool,

    /// With --latency: datagrams per second.
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "latency",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pps: u64,

    /// Run both sides in this process, or only one (for two hosts).
    #[arg(long, value_enum, default_value_t = Role::Both)]
    role: Role,

    /// With --role send or --role recv (mode mcsec): seal or open on N
    /// worker threads, through the pipeline `send --threads` and `recv
    /// --threads` use. CPU is then the whole process's, and the report adds
    /// the rate per core.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = super::pipeline::parse_threads)]
    threads: usize,

    /// With --role recv: report once nothing has arrived for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2s")]
    idle: Duration,

    /// Output: a text table, or one JSON object per measured mode.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Where the two sides run: CPU numbers, or not pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cpus {
    Pinned { send: usize, recv: usize },
    Free,
}

fn parse_cpus(s: &str) -> Result<Cpus, String> {
    if s == "none" {
        return Ok(Cpus::Free);
    }
    let parsed = s
        .split_once(',')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
    match parsed {
        Some((send, recv)) if send < 1024 && recv < 1024 => Ok(Cpus::Pinned { send, recv }),
        _ => Err("give two CPU numbers, SEND,RECV (e.g. 0,1), or none".into()),
    }
}

impl Args {
    /// The pinning in force: --cpus, else none.
    fn cpus(&self) -> Cpus {
        self.cpus.unwrap_or(Cpus::Free)
    }
}

/// Pins the calling thread to `cpu`; a failure (a CPU this process may not
/// use) is reported once and the run goes on unpinned.
fn pin_thread(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(e) = pinned {
        tracing::warn!("could not pin a benchmark thread to CPU {cpu}: {e}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    Both,
    Send,
    Recv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// One path to measure: with or without crypto, one syscall per datagram
/// or batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// No crypto, one `sendto` and one `recvfrom` per datagram: what iperf
    /// and most UDP tools do, and the baseline ratios are taken against.
    Plain,
    /// No crypto, batched like mcsec.
    PlainBatched,
    /// Sealed and opened, batched: UDP GSO on send, GRO on receive (or
    /// sendmmsg and recvmmsg where the kernel lacks them).
    Mcsec,
    /// Sealed and opened, one syscall per datagram.
    McsecUnbatched,
    /// iperf2 (`iperf -u`, Debian's `iperf`), run as two processes pinned
    /// like mcsec's threads, with the same datagram size and socket buffer:
    /// the tool a user would pick instead, and the baseline ratios are
    /// taken against when it runs.
    Iperf2,
    /// Sealed, batched and signed (PROTOCOL.md Part 3): a manifest every
    /// --sign-every frames, verified by a receiver that trusts the key.
    /// Payloads travel as Data bodies the same size on the wire as mcsec's.
    McsecSigned,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::PlainBatched => "plain-batched",
            Self::Mcsec => "mcsec",
            Self::McsecUnbatched => "mcsec-unbatched",
            Self::McsecSigned => "mcsec-signed",
            Self::Iperf2 => "iperf2",
        }
    }

    fn sealed(self) -> bool {
        matches!(self, Self::Mcsec | Self::McsecUnbatched | Self::McsecSigned)
    }

    fn batched(self) -> bool {
        matches!(self, Self::PlainBatched | Self::Mcsec | Self::McsecSigned)
    }
}

impl Args {
    fn modes(&self) -> Vec<Mode> {
        if self.plain {
            vec![Mode::Plain]
        } else if self.no_plain {
            vec![Mode::Mcsec]
        } else if let Some(modes) = &self.modes {
            modes.clone()
        } else if self.role == Role::Both {
            vec![Mode::Plain, Mode::Mcsec]
        } else {
            vec![Mode::Mcsec]
        }
    }
}

pub(crate) fn run(args: Args) -> CliResult {
    let size = usize::try_from(args.size).map_err(|_| CliError::usage("--size is too large"))?;
    let modes = args.modes();
    if args.role != Role::Both {
        if modes.len() != 1 {
            return Err(CliError::usage("--role runs one mode")
                .hint("give --modes one of plain, plain-batched, mcsec, mcsec-unbatched"));
        }
        if args.no_plain {
            return Err(CliError::usage("--no-plain only applies without --role")
                .hint("with --role, pass --plain to measure plain UDP, or nothing for mcsec"));
        }
        if modes.contains(&Mode::Iperf2) {
            return Err(
                CliError::usage("the iperf2 baseline runs with both sides here")
                    .hint("for two hosts, run iperf -s and iperf -c yourself"),
            );
        }
        if modes.contains(&Mode::McsecSigned) {
            return Err(
                CliError::usage("mcsec-signed runs with both sides in one process")
                    .hint("its signing key is made in memory for the run; drop --role"),
            );
        }
        if args.threads > 1 && modes != [Mode::Mcsec] {
            return Err(CliError::usage("--threads seals or opens: mode mcsec only")
                .hint("drop --modes, or --threads"));
        }
        if args.latency {
            return Err(CliError::usage("--latency needs both sides in one process")
                .hint("drop --role: one clock must stamp and time each datagram"));
        }
        if modes.iter().any(|m| m.sealed()) && args.key.is_none() {
            return Err(
                CliError::usage("--role send and --role recv need a key file").hint(
                    "give both sides the same -k FILE (from mcsec keygen), or pass --plain to both",
                ),
            );
        }
    }
    if !matches!(args.interface, InterfaceSpec::Addr(a) if a.is_loopback())
        && !matches!(&args.interface, InterfaceSpec::Name(n) if n == "lo")
    {
        tracing::warn!(
            "benchmarking on {} with TTL {}: this sends as fast as it can",
            args.interface,
            args.ttl
        );
    }
    if args.latency && modes.contains(&Mode::Iperf2) {
        return Err(
            CliError::usage("--latency does not run the iperf2 baseline")
                .hint("iperf2 reports no one-way latency for multicast; use --modes plain,mcsec"),
        );
    }
    if args.threads > 1 && args.role == Role::Both {
        return Err(
            CliError::usage("--threads measures one side: give --role send or recv")
                .hint("run `bench --role recv --threads N` and `bench --role send` side by side"),
        );
    }
    let stop = stop_flag()?;
    let mode = modes.first().copied().unwrap_or(Mode::Mcsec);
    match args.role {
        Role::Both if args.latency => run_latency(&args, &modes, size, &stop),
        Role::Both => run_local(&args, &modes, size, &stop),
        Role::Send => run_send(&args, mode, size, &stop),
        Role::Recv => run_recv(&args, mode, size, &stop),
    }
}

/// The sending and receiving halves of one mode, on `group`.
fn open_mode(
    args: &Args,
    group: Group,
    keyring: &Keyring,
    mode: Mode,
    size: usize,
) -> Result<(Tx, Rx), CliError> {
    let (sealer, opener) = if mode.sealed() {
        (
            Some(sealer(keyring, size)?),
            Some(opener(keyring.clone(), size)),
        )
    } else {
        (None, None)
    };
    let mut rx = open_rx(args, group, opener, size, mode.batched())?;
    let sender = net::Sender::open(group, &options(args))?;
    let mut tx = Tx::new(sender, sealer, size, mode.batched());
    if let Cpus::Pinned { send, recv } = args.cpus() {
        tx.cpu = Some(send);
        rx.cpu = Some(recv);
    }
    if mode == Mode::McsecSigned {
        // One signing key per process, made here: both roles run in it.
        let key = std::sync::Arc::new(
            SignerKey::generate(None)
                .map_err(|e| CliError::new(format!("making a signing key: {e}")))?,
        );
        let public = key.public();
        let Some(trusted) = mcsec::signed::Trusted::new(&public, Some("bench".into())) else {
            return Err(CliError::new("a generated signing key has no public key"));
        };
        if let Some(sealer) = tx.sealer.take() {
            tx = tx.with_signing(SignedSealer::new(
                sealer,
                key,
                channel(),
                args.sign_every,
                args.sign_interval,
            ));
        }
        rx.verifier = Some(Verifier::new(
            mcsec::signed::TrustList::new(vec![trusted]),
            mcsec::signed::VerifierConfig::default(),
        ));
    }
    tracing::info!(
        "{}: up to {} datagrams per send{}",
        mode.name(),
        tx.cap,
        if mode.batched() && tx.sender.gso() {
            " (UDP GSO)"
        } else {
            ""
        }
    );
    Ok((tx, rx))
}

/// The rate to report for one mode, and its measurement: --rate as given,
/// or the highest rate a search found under 0.1% loss, held for
/// --duration and stepped down 5% (at most three times) while the long
/// run loses more.
fn measure(
    args: &Args,
    mode: Mode,
    size: usize,
    stop: &AtomicBool,
    trial: &mut dyn FnMut(Option<f64>, Duration) -> Result<Measured, CliError>,
) -> Result<(Option<f64>, Measured), CliError> {
    let mut pps = match args.rate {
        Some(rate) => Some(rate as f64 / (size as f64 * 8.0)),
        None => search(mode, stop, trial)?,
    };
    tracing::info!(
        "{}: measuring {} for {:?}",
        mode.name(),
        pps.map_or_else(|| "flat out".to_owned(), |p| format!("{p:.0} pps")),
        args.duration
    );
    let mut m = trial(pps, args.duration)?;
    // A searched rate held for a quarter second; the long run meets more
    // of the machine's hiccups. Over the loss target, it steps down and
    // measures again, so the rate reported is one that held.
    let mut retries = 0;
    while args.rate.is_none() && m.loss() >= LOSS_TARGET && retries < CONFIRM_RETRIES {
        let Some(p) = pps.filter(|_| !stopped(stop)) else {
            break;
        };
        retries += 1;
        pps = Some(p * CONFIRM_STEP);
        tracing::info!(
            "{}: lost {:.3}% at {p:.0} pps; measuring again at {:.0} pps",
            mode.name(),
            m.loss() * 100.0,
            p * CONFIRM_STEP
        );
        m = trial(pps, args.duration)?;
    }
    Ok((pps, m))
}

#[cfg(test)]
mod tests;
