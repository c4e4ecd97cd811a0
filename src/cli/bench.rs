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

/// The stamp at the front of every payload: magic, run ID, sequence, kind,
/// and (in an end marker) how many datagrams were sent. Little-endian.
const STAMP_MAGIC: [u8; 4] = *b"mcsB";
const STAMP_LEN: usize = 4 + 4 + 8 + 1 + 8;
const KIND_DATA: u8 = 0;
const KIND_END: u8 = 1;
/// Largest UDP payload (IPv4) minus mcsec's overhead.
const MAX_PAYLOAD: usize = 65_507 - OVERHEAD;

/// Loss a searched rate may have: under 0.1%.
const LOSS_TARGET: f64 = 0.001;
/// One step of the rate search; 1 probe + `SEARCH_STEPS` of these per mode.
const SEARCH_TRIAL: Duration = Duration::from_millis(250);
const SEARCH_STEPS: usize = 6;
/// A searched rate that loses too much over the whole run is measured
/// again at this fraction of itself, at most this many times.
const CONFIRM_STEP: f64 = 0.95;
const CONFIRM_RETRIES: usize = 3;
/// How long the receiver waits, once the sender is done, for stragglers.
const DRAIN: Duration = Duration::from_millis(30);
/// At least this many datagrams back to back while catching up with the
/// schedule (or a whole batch, if larger), and at most this much lag
/// before the schedule forgives it.
const BURST: u64 = 32;
const MAX_LAG: Duration = Duration::from_millis(20);
/// The pacer's shortest sleep: at 1 Gbit/s of 1400-byte payloads it sends
/// about 22 datagrams per wake-up.
const PACING_QUANTUM: Duration = Duration::from_micros(250);
/// Receive buffer asked for: absorbs scheduling hiccups at high rates.
const RCVBUF_BYTES: usize = 8 << 20;
/// End markers sent by --role send, in case some are lost.
const END_MARKERS: u32 = 5;

#[derive(Debug, Clone, Copy)]
struct Stamp {
    run: u32,
    seq: u64,
    kind: u8,
    extra: u64,
}

impl Stamp {
    fn write(&self, out: &mut [u8]) {
        if let Some((magic, rest)) = out.split_first_chunk_mut::<4>()
            && let Some((run, rest)) = rest.split_first_chunk_mut::<4>()
            && let Some((seq, rest)) = rest.split_first_chunk_mut::<8>()
            && let Some((kind, rest)) = rest.split_first_chunk_mut::<1>()
            && let Some((extra, _)) = rest.split_first_chunk_mut::<8>()
        {
            *magic = STAMP_MAGIC;
            *run = self.run.to_le_bytes();
            *seq = self.seq.to_le_bytes();
            *kind = [self.kind];
            *extra = self.extra.to_le_bytes();
        }
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        let (magic, rest) = bytes.split_first_chunk::<4>()?;
        let (run, rest) = rest.split_first_chunk::<4>()?;
        let (seq, rest) = rest.split_first_chunk::<8>()?;
        let (kind, rest) = rest.split_first_chunk::<1>()?;
        let (extra, _) = rest.split_first_chunk::<8>()?;
        (*magic == STAMP_MAGIC).then(|| Self {
            run: u32::from_le_bytes(*run),
            seq: u64::from_le_bytes(*seq),
            kind: kind[0],
            extra: u64::from_le_bytes(*extra),
        })
    }
}

/// The sending side: one buffer of up to a batch of datagrams laid end to
/// end, reused for every batch.
struct Tx {
    sender: net::Sender,
    sealer: Option<Sealer>,
    /// mcsec-signed: the signing session (instead of `sealer`), the Data
    /// payload it seals, and a closed batch's datagrams.
    signed: Option<SignedSealer>,
    payload: Vec<u8>,
    emitted: Vec<u8>,
    emitted_ends: Vec<usize>,
    batched: bool,
    buf: Vec<u8>,
    size: usize,
    /// Bytes per datagram on the wire.
    stride: usize,
    /// Datagrams per syscall.
    cap: usize,
    /// Latency runs: each stamp carries the nanoseconds since this instant.
    clock: Option<Instant>,
    send_errors: u64,
    sent_any: bool,
    /// The CPU the sending thread runs on, if pinned.
    cpu: Option<usize>,
    /// --threads N: batches sealed on worker threads, and those sealed
    /// and not yet sent.
    pipe: Option<SealPipe>,
    sealed: Vec<SealJob>,
}

impl Tx {
    fn new(sender: net::Sender, sealer: Option<Sealer>, size: usize, batched: bool) -> Self {
        let stride = size + if sealer.is_some() { OVERHEAD } else { 0 };
        let cap = if batched { sender.max_batch(stride) } else { 1 };
        Self {
            sender,
            sealer,
            signed: None,
            payload: Vec::new(),
            emitted: Vec::new(),
            emitted_ends: Vec::new(),
            batched,
            buf: vec![0; stride * cap],
            size,
            stride,
            cap,
            clock: None,
            send_errors: 0,
            sent_any: false,
            cpu: None,
            pipe: None,
            sealed: Vec::new(),
        }
    }

    /// Stamps, seals (unless plain) and sends up to `n` datagrams numbered
    /// from `first.seq`, in one syscall when batched; returns how many it
    /// tried. Those the kernel refused are counted, except on the very
    /// first send, where a refusal is fatal: that is a setup problem, not
    /// load.
    fn send(&mut self, first: Stamp, n: u64) -> Result<u64, CliError> {
        if self.signed.is_some() {
            return self.send_signed(first, n);
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX).clamp(1, self.cap);
        let now = mcsec::now_us();
        if self.pipe.is_some() {
            return self.send_threaded(first, n, now);
        }
        for (i, frame) in self.buf.chunks_mut(self.stride).take(n).enumerate() {
            let mut stamp = first;
            stamp.seq = first.seq + i as u64;
            if let Some(origin) = self.clock {
                stamp.extra = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            }
            match &mut self.sealer {
                Some(sealer) => {
                    if let Some(p) = frame.get_mut(HEADER_LEN..) {
                        stamp.write(p);
                    }
                    sealer
                        .seal_in_place(now, frame, self.size)
                        .map_err(|e| CliError::new(format!("sealing: {e}")))?;
                }
                None => stamp.write(frame),
            }
        }
        let datagrams = std::mem::take(&mut self.buf);
        let result = self.transmit(datagrams.get(..n * self.stride).unwrap_or_default(), n);
        self.buf = datagrams;
        result?;
        Ok(n as u64)
    }

    /// Sends `n` datagrams, `self.stride` bytes each, end to end.
    fn transmit(&mut self, datagrams: &[u8], n: usize) -> Result<(), CliError> {
        let result = if self.batched {
            self.sender.send_segments(datagrams, self.stride)
        } else {
            self.sender.send(datagrams).map(|()| 1)
        };
        match result {
            Ok(sent) => {
                self.sent_any = true;
                self.send_errors += (n - sent.min(n)) as u64;
            }
            Err(e) if self.sent_any => {
                tracing::debug!("send failed: {e}");
                self.send_errors += n as u64;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// --threads: stamps `n` datagrams and numbers them here, hands the
    /// batch to a worker, and sends the batches sealed so far, in order.
    fn send_threaded(&mut self, first: Stamp, n: usize, now: u64) -> Result<u64, CliError> {
        let (Some(pipe), Some(sealer)) = (self.pipe.as_mut(), self.sealer.as_mut()) else {
            return Ok(0);
        };
        let mut buf = pipe.buffer();
        buf.resize(n * self.stride, 0);
        for (i, frame) in buf.chunks_mut(self.stride).enumerate() {
            let mut stamp = first;
            stamp.seq = first.seq + i as u64;
            if let Some(p) = frame.get_mut(HEADER_LEN..) {
                stamp.write(p);
            }
            pipe.assign(sealer, now, self.size)
                .map_err(|e| CliError::new(format!("sealing: {e}")))?;
        }
        pipe.submit(sealer.seal_key(), buf, self.stride, n, &mut self.sealed)?;
        pipe.collect(false, &mut self.sealed)?;
        self.send_sealed()?;
        Ok(n as u64)
    }

    /// Sends the sealed batches taken back from the workers.
    fn send_sealed(&mut self) -> Result<(), CliError> {
        let mut sealed = std::mem::take(&mut self.sealed);
        let mut result = Ok(());
        for job in sealed.drain(..) {
            if result.is_ok() {
                result = job
                    .sealed()
                    .and_then(|datagrams| self.transmit(datagrams, job.count));
            }
            if let Some(pipe) = self.pipe.as_mut() {
                pipe.recycle(job);
            }
        }
        self.sealed = sealed;
        result
    }

    /// --threads: waits for every batch with the workers and sends it.
    fn drain(&mut self) -> Result<(), CliError> {
        if let Some(pipe) = self.pipe.as_mut() {
            pipe.collect(true, &mut self.sealed)?;
        }
        self.send_sealed()
    }
}

impl Tx {
    /// A signing sender: Data bodies through `signed`, which sends each
    /// batch when it closes.
    fn with_signing(mut self, signed: SignedSealer) -> Self {
        // A Data body the same size as the unsigned mode's raw payload:
        // the variant byte and the length's varint come out of it.
        let len = if self.size >= 3 + 128 {
            self.size - 3
        } else {
            self.size.saturating_sub(2)
        };
        self.payload = vec![0; len.max(STAMP_LEN)];
        self.signed = Some(signed);
        self
    }

    /// mcsec-signed: seals up to `n` Data frames into the signed batch,
    /// sending every batch that closes (manifest, frames, manifest).
    fn send_signed(&mut self, first: Stamp, n: u64) -> Result<u64, CliError> {
        let n = n.clamp(1, self.cap as u64);
        for i in 0..n {
            let mut stamp = first;
            stamp.seq = first.seq + i;
            if let Some(origin) = self.clock {
                stamp.extra = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            }
            stamp.write(&mut self.payload);
            let now = mcsec::now_us();
            let Some(signed) = &mut self.signed else {
                break;
            };
            signed
                .seal_body(now, &mcsec::Body::Data(&self.payload))
                .map_err(|e| CliError::new(format!("sealing: {e}")))?;
            if signed.is_due(now) {
                self.close_signed()?;
            }
        }
        Ok(n)
    }

    /// Sends the open signed batch, if any, if its time is up.
    fn poll_signed(&mut self) -> Result<(), CliError> {
        match &self.signed {
            Some(signed) if signed.is_due(mcsec::now_us()) => self.close_signed(),
            _ => Ok(()),
        }
    }

    /// Closes the open signed batch and sends it: runs of equal-sized
    /// datagrams in one syscall each.
    fn close_signed(&mut self) -> Result<(), CliError> {
        let Some(signed) = &mut self.signed else {
            return Ok(());
        };
        let (emitted, ends) = (&mut self.emitted, &mut self.emitted_ends);
        emitted.clear();
        ends.clear();
        signed
            .close_batch(mcsec::now_us(), &mut |datagram| {
                emitted.extend_from_slice(datagram);
                ends.push(emitted.len());
                Ok(())
            })
            .map_err(|e| CliError::new(format!("signing: {e}")))?;
        let mut start = 0;
        let mut i = 0;
        while i < self.emitted_ends.len() {
            let len = self.emitted_ends[i] - start;
            // The run of datagrams of this length, at most a batch.
            let mut j = i + 1;
            while j < self.emitted_ends.len()
                && j - i < self.cap
                && self.emitted_ends[j] - self.emitted_ends[j - 1] == len
            {
                j += 1;
            }
            let end = self.emitted_ends[j - 1];
            let run = self.emitted.get(start..end).unwrap_or_default();
            let count = j - i;
            let result = if self.batched {
                self.sender.send_segments(run, len)
            } else {
                self.sender.send(run).map(|()| 1)
            };
            match result {
                Ok(sent) => {
                    self.sent_any = true;
                    self.send_errors += (count - sent.min(count)) as u64;
                }
                Err(e) if self.sent_any => {
                    tracing::debug!("send failed: {e}");
                    self.send_errors += count as u64;
                }
                Err(e) => return Err(e.into()),
            }
            start = end;
            i = j;
        }
        Ok(())
    }
}

/// The receiving side: one datagram per syscall, or batches.
struct Rx {
    sock: RxSock,
    opener: Option<Opener>,
    /// mcsec-signed: delivers only what the bench's signing key signed.
    verifier: Option<Verifier>,
    rejected: u64,
    /// The CPU the receiving thread runs on, if pinned.
    cpu: Option<usize>,
    /// --threads N: batches checked on worker threads, and those checked
    /// and not yet taken.
    pipe: Option<OpenPipe>,
    checked: Vec<OpenJob>,
}

enum RxSock {
    Single {
        receiver: net::Receiver,
        buf: Vec<u8>,
    },
    Batch(net::BatchReceiver),
}

impl Rx {
    fn set_timeout(&self, timeout: Duration) -> Result<(), CliError> {
        let receiver = match &self.sock {
            RxSock::Single { receiver, .. } => receiver,
            RxSock::Batch(b) => b.receiver(),
        };
        Ok(receiver.set_timeout(Some(timeout))?)
    }

    /// Waits for datagrams (up to the timeout) and calls `each` with the
    /// stamp of every one that opens; returns how many datagrams arrived,
    /// 0 if none did.
    fn recv(&mut self, mut each: impl FnMut(Stamp)) -> Result<usize, CliError> {
        if self.pipe.is_some() {
            return self.recv_threaded(each);
        }
        let Self {
            sock,
            opener,
            verifier,
            rejected,
            ..
        } = self;
        let mut take = |datagram: &mut [u8]| {
            if let (Some(verifier), Some(opener)) = (verifier.as_mut(), opener.as_mut()) {
                let result =
                    verifier.receive_with(opener, mcsec::now_us(), datagram, &mut |frame| {
                        if let Ok(mcsec::Body::Data(payload)) = mcsec::Body::decode(frame.plaintext)
                            && let Some(stamp) = Stamp::read(payload)
                        {
                            each(stamp);
                        }
                    });
                // A manifest's second copy is expected, not a rejection.
                if result.is_err_and(|r| r != mcsec::signed::SigReject::Duplicate) {
                    *rejected += 1;
                }
                return;
            }
            let stamp = match opener {
                Some(opener) => match opener.open(mcsec::now_us(), datagram) {
                    Ok(opened) => Stamp::read(opened.plaintext),
                    Err(_) => {
                        *rejected += 1;
                        None
                    }
                },
                None => Stamp::read(datagram),
            };
            if let Some(stamp) = stamp {
                each(stamp);
            }
        };
        match sock {
            RxSock::Single { receiver, buf } => {
                let Some((len, _)) = receiver.recv(buf)? else {
                    return Ok(0);
                };
                take(buf.get_mut(..len).unwrap_or_default());
                Ok(1)
            }
            RxSock::Batch(batch) => {
                let n = batch.recv()?;
                for (datagram, _) in batch.datagrams() {
                    take(datagram);
                }
                Ok(n)
            }
        }
    }
}

impl Rx {
    /// --threads: hands each batch read to a worker, and opens (replay
    /// window, counts) the batches checked so far, in arrival order; all of
    /// them before a read that may block.
    fn recv_threaded(&mut self, mut each: impl FnMut(Stamp)) -> Result<usize, CliError> {
        let Self {
            sock: RxSock::Batch(batch),
            opener: Some(opener),
            pipe: Some(pipe),
            checked,
            rejected,
            ..
        } = self
        else {
            return Err(CliError::new("--threads needs mode mcsec"));
        };
        let n = batch.recv()?;
        pipe.submit(opener.channel_keys(), batch.datagrams(), checked)?;
        let idle = n == 0 || !super::pipeline::readable(batch.receiver().as_fd());
        pipe.collect(idle, checked)?;
        let now = mcsec::now_us();
        for mut job in checked.drain(..) {
            for (datagram, _, verdict) in job.datagrams() {
                match opener.open_checked(now, datagram, verdict) {
                    Ok(opened) => {
                        if let Some(stamp) = Stamp::read(opened.plaintext) {
                            each(stamp);
                        }
                    }
                    Err(_) => *rejected += 1,
                }
            }
            pipe.recycle(job);
        }
        Ok(n)
    }
}

/// Sends `run` for `duration` at `pps` (or flat out), paced against a
/// schedule: datagram n is due at start + n / pps. Returns how many were
/// sent and the time it took.
fn send_run(
    tx: &mut Tx,
    run: u32,
    pps: Option<f64>,
    duration: Duration,
    stop: &AtomicBool,
) -> Result<(u64, Duration), CliError> {
    let mut origin = Instant::now();
    let start = origin;
    let end = start + duration;
    let mut seq = 0u64;
    // Datagrams owed before `origin` moved (after a forgiven lag).
    let mut base = 0u64;
    loop {
        let now = Instant::now();
        if now >= end || stopped(stop) {
            break;
        }
        let budget = match pps {
            None => BURST.max(tx.cap as u64),
            Some(pps) => {
                let due = base + ((now - origin).as_secs_f64() * pps) as u64 + 1;
                let owed = due.saturating_sub(seq);
                if owed as f64 > (MAX_LAG.as_secs_f64() * pps).max(tx.cap.max(32) as f64) {
                    // Descheduled for a while: do not flood to catch up.
                    origin = now;
                    base = seq;
                    1
                } else if owed == 0 {
                    // Signed: a batch whose time is up goes before the nap.
                    tx.poll_signed()?;
                    let next = origin + Duration::from_secs_f64((seq - base) as f64 / pps);
                    // Sleeping overshoots by the timer slack and costs a
                    // wake-up, so at high rates sleep a whole quantum and
                    // send what is owed back to back: the average holds
                    // without spinning a core or waking per datagram.
                    std::thread::sleep(next.saturating_duration_since(now).max(PACING_QUANTUM));
                    continue;
                } else {
                    owed.min(BURST.max(tx.cap as u64))
                }
            }
        };
        let mut left = budget;
        while left > 0 {
            let stamp = Stamp {
                run,
                seq,
                kind: KIND_DATA,
                extra: 0,
            };
            let n = tx.send(stamp, left)?;
            seq += n;
            left -= n;
        }
    }
    // Signed: the last batch goes with its manifests; threaded, the batches
    // still with the workers.
    tx.close_signed()?;
    tx.drain()?;
    Ok((seq, start.elapsed()))
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    sent: u64,
    received: u64,
    wall: Duration,
    cpu_send: Option<Duration>,
    cpu_recv: Option<Duration>,
}

impl Measured {
    fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - (self.received.min(self.sent) as f64 / self.sent as f64)
    }

    fn pps(&self) -> f64 {
        self.received as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn sent_pps(&self) -> f64 {
        self.sent as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn cpu_pct(&self, cpu: Option<Duration>) -> Option<f64> {
        cpu.map(|c| 100.0 * c.as_secs_f64() / self.wall.as_secs_f64().max(1e-9))
    }
}

fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(net::thread_cpu_time()?.saturating_sub(start?))
}

/// One run with both sides in this process: the receiver on its own thread,
/// the sender on this one. With `latencies`, every datagram carries the
/// time it was stamped and the receiver records how long it took to arrive
/// and open, in nanoseconds.
fn local_run(
    tx: &mut Tx,
    rx: &mut Rx,
    run: u32,
    pps: Option<f64>,
    duration: Duration,
    stop: &AtomicBool,
    mut latencies: Option<&mut Vec<u64>>,
) -> Result<Measured, CliError> {
    let done = AtomicBool::new(false);
    let sent_total = AtomicU64::new(0);
    let origin = Instant::now();
    tx.clock = latencies.is_some().then_some(origin);
    std::thread::scope(|s| {
        let receiver = s.spawn(|| -> Result<(u64, Option<Duration>), CliError> {
            if let Some(cpu) = rx.cpu {
                pin_thread(cpu);
            }
            let cpu0 = net::thread_cpu_time();
            let mut received = 0u64;
            loop {
                let arrived = rx.recv(|st| {
                    if st.run == run && st.kind == KIND_DATA {
                        received += 1;
                        if let Some(l) = latencies.as_deref_mut() {
                            let now =
                                u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                            l.push(now.saturating_sub(st.extra));
                        }
                    }
                })?;
                if arrived == 0 && done.load(Ordering::Acquire) {
                    break;
                }
                if done.load(Ordering::Acquire) && received >= sent_total.load(Ordering::Acquire) {
                    break;
                }
            }
            Ok((received, cpu_since(cpu0)))
        });
        if let Some(cpu) = tx.cpu {
            pin_thread(cpu);
        }
        let cpu0 = net::thread_cpu_time();
        let sent = send_run(tx, run, pps, duration, stop);
        let cpu_send = cpu_since(cpu0);
        if let Ok((n, _)) = &sent {
            sent_total.store(*n, Ordering::Release);
        }
        done.store(true, Ordering::Release);
        let (received, cpu_recv) = receiver
            .join()
            .map_err(|_| CliError::new("the receiver thread panicked"))??;
        let (sent, wall) = sent?;
        Ok(Measured {
            sent,
            received,
            wall,
            cpu_send,
            cpu_recv,
        })
    })
}

/// The highest rate (datagrams per second) at which a short run loses
/// under 0.1%: a flat-out probe, then bisection between what got through
/// and what was offered.
fn search(
    mode: Mode,
    stop: &AtomicBool,
    trial: &mut dyn FnMut(Option<f64>, Duration) -> Result<Measured, CliError>,
) -> Result<Option<f64>, CliError> {
    let probe = trial(None, SEARCH_TRIAL)?;
    tracing::info!(
        "{}: flat out sent {:.0} pps, {:.0} pps arrived ({:.3}% loss)",
        mode.name(),
        probe.sent_pps(),
        probe.pps(),
        probe.loss() * 100.0
    );
    // Even a lossless probe is only a quarter second: flat out for longer
    // meets the receiver's scheduling hiccups, so search paced rates up to
    // what the sender managed.
    let mut good = 0.0f64;
    let mut bad = probe.sent_pps();
    let mut try_pps = probe.pps() * 0.97;
    if probe.sent_pps() <= 0.0 {
        return Ok(None);
    }
    for _ in 0..SEARCH_STEPS {
        if stopped(stop) {
            break;
        }
        let m = trial(Some(try_pps), SEARCH_TRIAL)?;
        let ok = m.loss() < LOSS_TARGET && m.sent_pps() >= try_pps * 0.95;
        tracing::info!(
            "{}: {:.0} pps offered, {:.0} sent, {:.0} arrived, {:.3}% loss: {}",
            mode.name(),
            try_pps,
            m.sent_pps(),
            m.pps(),
            m.loss() * 100.0,
            if ok { "ok" } else { "too fast" }
        );
        if ok {
            good = try_pps;
        } else {
            bad = try_pps;
        }
        try_pps = if good == 0.0 {
            bad / 2.0
        } else {
            (good + bad) / 2.0
        };
    }
    Ok(Some(if good > 0.0 { good } else { try_pps }))
}

fn options(args: &Args) -> net::Options {
    let mut opts = net::Options::default();
    opts.interface = Some(args.interface.clone());
    opts.ttl = args.ttl;
    opts.rcvbuf = Some(RCVBUF_BYTES);
    opts
}

fn keyring(args: &Args) -> Result<Keyring, CliError> {
    match &args.key {
        Some(path) => load_keyring(path),
        None => Ok(Keyring::single(GroupKey::generate(SystemTime::now())?)),
    }
}

/// Both roles of a benchmark seal and open for this named channel, so a
/// sender and a receiver started apart agree whatever ports the modes use.
fn channel() -> ChannelId {
    ChannelId::named("mcsec bench").expect("a short name is a channel")
}

fn sealer(keyring: &Keyring, size: usize) -> Result<Sealer, CliError> {
    let mut sealer = Sealer::new(keyring.sending_key(), &channel())
        .map_err(|e| CliError::new(format!("starting a sender session: {e}")))?;
    sealer.set_max_datagram(size + OVERHEAD);
    Ok(sealer)
}

fn opener(keyring: Keyring, size: usize) -> Opener {
    let mut config = OpenerConfig::default();
    config.max_datagram = size + OVERHEAD;
    Opener::new(keyring, channel(), config)
}

fn open_rx(
    args: &Args,
    group: Group,
    opener: Option<Opener>,
    size: usize,
    batched: bool,
) -> Result<Rx, CliError> {
    let receiver = net::Receiver::open(group, &options(args))?;
    if let Some(rb) = receiver.rcvbuf()
        && rb.granted < rb.requested
    {
        tracing::info!(
            "receive buffer: asked for {} bytes, got {} (raise net.core.rmem_max for more)",
            rb.requested,
            rb.granted
        );
    }
    // One byte more than the largest frame, so nothing is cut silently.
    let max = size + OVERHEAD;
    let sock = if batched {
        let batch = receiver.batched(max);
        tracing::info!("receiving in batches (UDP GRO: {})", batch.gro());
        RxSock::Batch(batch)
    } else {
        RxSock::Single {
            receiver,
            buf: vec![0; max + 1],
        }
    };
    let rx = Rx {
        sock,
        opener,
        verifier: None,
        rejected: 0,
        cpu: None,
        pipe: None,
        checked: Vec::new(),
    };
    rx.set_timeout(DRAIN)?;
    Ok(rx)
}

/// A result line, text or JSON.
struct Report {
    mode: Mode,
    role: &'static str,
    size: usize,
    rate: Option<u64>,
    searched: bool,
    m: Measured,
    /// The packet rate against the baseline's (iperf2, else plain).
    vs_base: Option<(Mode, f64)>,
}

impl Report {
    fn mbps(&self) -> f64 {
        self.m.pps() * self.size as f64 * 8.0 / 1e6
    }

    fn json(&self) -> serde_json::Value {
        let datagram = self.size + if self.mode.sealed() { OVERHEAD } else { 0 };
        let mut v = serde_json::json!({
            "type": "bench",
            "mode": self.mode.name(),
            "io": if self.mode.batched() { "batched" } else { "single" },
            "role": self.role,
            "size": self.size,
            "datagram": datagram,
            "rate": self.rate,
            "searched": self.searched,
            "duration_s": self.m.wall.as_secs_f64(),
            "sent": self.m.sent,
            "received": self.m.received,
            "sent_pps": self.m.sent_pps(),
            "pps": self.m.pps(),
            "mbps": self.mbps(),
            "loss": self.m.loss(),
            "cpu_send_pct": self.m.cpu_pct(self.m.cpu_send),
            "cpu_recv_pct": self.m.cpu_pct(self.m.cpu_recv),
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some((base, r)) = self.vs_base {
                obj.insert(format!("pps_vs_{}", base.name()), r.into());
            }
            if self.role == "send" {
                // Only the receiver knows what arrived.
                for field in ["received", "pps", "mbps", "loss"] {
                    obj.insert(field.into(), serde_json::Value::Null);
                }
            }
        }
        v
    }

    fn text_row(&self) -> String {
        let pct = |c: Option<f64>| c.map_or_else(|| "-".to_owned(), |c| format!("{c:.0}%"));
        let rate = match (self.searched, self.rate) {
            _ if self.role == "recv" => "-".to_owned(),
            (true, Some(_)) => "searched".to_owned(),
            (_, None) => "flat out".to_owned(),
            (false, Some(r)) => format!("{:.1}M", r as f64 / 1e6),
        };
        format!(
            "{:<15} {:>9} {:>10.0} {:>9.1} {:>8.3}% {:>8} {:>8}",
            self.mode.name(),
            rate,
            self.m.pps(),
            self.mbps(),
            self.m.loss() * 100.0,
            pct(self.m.cpu_pct(self.m.cpu_send)),
            pct(self.m.cpu_pct(self.m.cpu_recv)),
        )
    }
}

const TEXT_HEADER: &str =
    "mode                 rate        pps    Mbit/s     loss cpu send cpu recv";

/// CPU time used so far: this thread's, or with worker threads
/// (--threads N > 1) the whole process's.
fn cpu_time(threads: usize) -> Option<Duration> {
    if threads <= 1 {
        return net::thread_cpu_time();
    }
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
    let micros = |tv: nix::sys::time::TimeVal| {
        let us = i128::from(tv.tv_sec()) * 1_000_000 + i128::from(tv.tv_usec());
        u64::try_from(us).unwrap_or(0)
    };
    Some(Duration::from_micros(
        micros(usage.user_time()).saturating_add(micros(usage.system_time())),
    ))
}

/// Datagrams a second for each core's worth of CPU the measured side used.
fn per_core(pps: f64, cpu_pct: Option<f64>) -> Option<f64> {
    cpu_pct.filter(|c| *c > 0.0).map(|c| pps / (c / 100.0))
}

fn per_core_line(pps: f64, threads: usize, cpu_pct: Option<f64>) -> String {
    match per_core(pps, cpu_pct) {
        Some(rate) => format!(
            "threads {threads}: {rate:.0} pps per core (CPU {:.0}% of one core)",
            cpu_pct.unwrap_or_default()
        ),
        None => format!("threads {threads}: CPU time not known here"),
    }
}

/// A --role report as JSON, with the threads and the rate per core.
fn print_json_threads(report: &Report, threads: usize, cpu: Option<Duration>) -> CliResult {
    let mut v = report.json();
    let pps = if report.role == "send" {
        report.m.sent_pps()
    } else {
        report.m.pps()
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("threads".into(), threads.into());
        obj.insert(
            "pps_per_core".into(),
            per_core(pps, report.m.cpu_pct(cpu)).into(),
        );
    }
    print_line(&v.to_string())
}

fn print_json(report: &Report) -> CliResult {
    print_line(&report.json().to_string())
}

fn print_line(line: &str) -> CliResult {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").map_err(stdout_error)?;
    out.flush().map_err(stdout_error)
}

fn print_text(lines: &[String]) -> CliResult {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}").map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)
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

/// The iperf2 network device for this run: iperf2 binds its sockets to a
/// device (`ADDR%DEV`), so its multicast can leave by that device only.
fn iperf2_device(args: &Args) -> Result<&str, CliError> {
    match &args.interface {
        InterfaceSpec::Addr(a) if a.is_loopback() => Ok("lo"),
        InterfaceSpec::Name(n) if n == "lo" => Ok("lo"),
        other => Err(CliError::usage(format!(
            "the iperf2 baseline runs on loopback only, not on {other}"
        ))
        .hint("run it with -i lo (or 127.0.0.1), in a network namespace of its own")),
    }
}

/// One iperf2 run: `iperf -s` joined to the group on this run's device,
/// then `iperf -c` at `pps` datagrams a second (or flat out) for
/// `duration`, both with --size datagrams and a 4 MiB socket buffer, each
/// pinned to its CPU with taskset as mcsec's threads are. What arrived is
/// the server's own count.
fn iperf2_run(
    args: &Args,
    size: usize,
    pps: Option<f64>,
    duration: Duration,
) -> Result<Measured, CliError> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let device = iperf2_device(args)?;
    let addr = args.group.addr();
    let (std::net::IpAddr::V4(group), port) = (addr.ip(), addr.port()) else {
        return Err(CliError::usage(
            "the iperf2 baseline runs on IPv4 groups only",
        ));
    };
    let pinned = |cpu: Option<usize>, program: &str| {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), program]);
                c
            }
            None => Command::new(program),
        };
        cmd.stdin(Stdio::null());
        cmd
    };
    let (send_cpu, recv_cpu) = match args.cpus() {
        Cpus::Pinned { send, recv } => (Some(send), Some(recv)),
        Cpus::Free => (None, None),
    };
    let missing = |e: std::io::Error| {
        CliError::new(format!("running iperf: {e}"))
            .hint("the iperf2 baseline needs iperf 2 (Debian: apt-get install iperf) and taskset")
    };
    let len = size.to_string();
    let mut server = pinned(recv_cpu, "iperf")
        .args(["-s", "-u", "-e", "-B", &format!("{group}%{device}")])
        .args(["-p", &port.to_string(), "-l", &len, "-w", "4M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(missing)?;
    let Some(out) = server.stdout.take() else {
        return Err(CliError::new("iperf -s gave no output"));
    };
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let finish = |mut server: std::process::Child| {
        let _ = server.kill();
        let _ = server.wait();
    };
    // The server says it listens before the client may start.
    let started = Instant::now();
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("listening") => break,
            Ok(_) => {}
            Err(_) if started.elapsed() < Duration::from_secs(5) => {}
            Err(_) => {
                finish(server);
                return Err(CliError::new("iperf -s did not start listening"));
            }
        }
    }
    let bits = pps.map_or(100_000_000_000.0, |p| p * size as f64 * 8.0);
    let client = pinned(send_cpu, "iperf")
        .args(["-c", &group.to_string(), "-u", "-e"])
        .args(["-B", &format!("127.0.0.1%{device}")])
        .args(["-p", &port.to_string(), "-l", &len, "-w", "4M"])
        .args(["-T", &args.ttl.to_string()])
        .args(["-b", &format!("{bits:.0}")])
        .args(["-t", &format!("{:.3}", duration.as_secs_f64())])
        .output()
        .map_err(missing);
    let client = match client {
        Ok(c) if c.status.success() => c,
        Ok(c) => {
            finish(server);
            return Err(CliError::new(format!(
                "iperf -c failed: {}",
                String::from_utf8_lossy(&c.stderr).trim()
            )));
        }
        Err(e) => {
            finish(server);
            return Err(e);
        }
    };
    let sent = iperf2_sent(&String::from_utf8_lossy(&client.stdout));
    // The server reports once the client's last datagram arrived.
    let mut report = None;
    let waited = Instant::now();
    while report.is_none() && waited.elapsed() < Duration::from_secs(3) {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            report = iperf2_lost_total(&line);
        }
    }
    finish(server);
    let (Some(sent), Some((lost, total))) = (sent, report) else {
        return Err(CliError::new("could not read iperf's report"));
    };
    Ok(Measured {
        sent,
        received: total.saturating_sub(lost).min(sent),
        wall: duration,
        cpu_send: None,
        cpu_recv: None,
    })
}

/// `Sent N datagrams` from iperf's client output.
fn iperf2_sent(out: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let rest = l.split("Sent ").nth(1)?;
        let n = rest.strip_suffix(" datagrams")?.trim();
        n.parse().ok()
    })
}

/// `LOST/TOTAL (P%)` from an iperf server's report line.
fn iperf2_lost_total(line: &str) -> Option<(u64, u64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).find_map(|w| {
        let (lost, total) = w.first()?.split_once('/')?;
        w.get(1)?.starts_with('(').then_some(())?;
        Some((lost.parse().ok()?, total.parse().ok()?))
    })
}

fn run_local(args: &Args, modes: &[Mode], size: usize, stop: &AtomicBool) -> CliResult {
    let keyring = keyring(args)?;
    let mut run = rand_run_id();
    let mut reports: Vec<Report> = Vec::new();
    for &mode in modes {
        let (pps, m) = if mode == Mode::Iperf2 {
            let mut trial =
                |pps: Option<f64>, duration: Duration| iperf2_run(args, size, pps, duration);
            measure(args, mode, size, stop, &mut trial)?
        } else {
            let (mut tx, mut rx) = open_mode(args, args.group, &keyring, mode, size)?;
            let mut trial = |pps: Option<f64>, duration: Duration| {
                run = run.wrapping_add(1);
                local_run(&mut tx, &mut rx, run, pps, duration, stop, None)
            };
            let measured = measure(args, mode, size, stop, &mut trial)?;
            if rx.rejected > 0 || tx.send_errors > 0 {
                tracing::warn!(
                    "{}: {} datagrams rejected by the opener, {} sends refused by the kernel",
                    mode.name(),
                    rx.rejected,
                    tx.send_errors
                );
            }
            measured
        };
        let rate = pps.map(|p| (p * size as f64 * 8.0).round() as u64);
        // The baseline: iperf2 when it ran, else bench's own plain mode.
        let baseline = reports
            .iter()
            .find(|r| r.mode == Mode::Iperf2)
            .or_else(|| reports.iter().find(|r| r.mode == Mode::Plain));
        let vs_base = match baseline {
            Some(base) if base.mode != mode => Some((base.mode, m.pps() / base.m.pps().max(1e-9))),
            _ => None,
        };
        let report = Report {
            mode,
            role: "both",
            size,
            rate,
            searched: args.rate.is_none(),
            m,
            vs_base,
        };
        if args.format == Format::Json {
            print_json(&report)?;
        }
        reports.push(report);
        if stopped(stop) {
            break;
        }
    }
    if args.format == Format::Text {
        let mut lines = vec![
            format!(
                "{size}-byte payloads on {} via {}, TTL {}, {:?} per mode",
                args.group, args.interface, args.ttl, args.duration
            ),
            TEXT_HEADER.to_owned(),
        ];
        lines.extend(reports.iter().map(Report::text_row));
        for r in &reports {
            if let Some((base, ratio)) = r.vs_base {
                lines.push(format!(
                    "{} / {}: {ratio:.2} of the packet rate",
                    r.mode.name(),
                    base.name()
                ));
            }
        }
        // Signing's cost: the signed feed against the unsigned one.
        if let (Some(signed), Some(unsigned)) = (
            reports.iter().find(|r| r.mode == Mode::McsecSigned),
            reports.iter().find(|r| r.mode == Mode::Mcsec),
        ) {
            lines.push(format!(
                "mcsec-signed / mcsec: {:.2} of the packet rate",
                signed.m.pps() / unsigned.m.pps().max(1e-9)
            ));
        }
        print_text(&lines)?;
    }
    Ok(())
}

/// Latency percentiles of one mode, in microseconds.
struct Latency {
    mode: Mode,
    samples: usize,
    lost: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn from(mode: Mode, mut ns: Vec<u64>, lost: u64) -> Self {
        ns.sort_unstable();
        let at = |q: f64| {
            let i = ((ns.len() as f64 - 1.0) * q).round() as usize;
            ns.get(i).map_or(f64::NAN, |&v| v as f64 / 1000.0)
        };
        Self {
            mode,
            samples: ns.len(),
            lost,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// One-way latency at a low, steady rate: the time from stamping (just
/// before sealing) to opening, per mode. The modes take turns datagram by
/// datagram, each on its own port with its own receiver thread, so they
/// meet the same machine at the same moments and none waits behind another.
fn run_latency(args: &Args, modes: &[Mode], size: usize, stop: &AtomicBool) -> CliResult {
    const WARM_UP: Duration = Duration::from_millis(200);
    let keyring = keyring(args)?;
    let run = rand_run_id();
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for (i, &mode) in modes.iter().enumerate() {
        let group = port_offset(args.group, i)?;
        let (tx, rx) = open_mode(args, group, &keyring, mode, size)?;
        txs.push(tx);
        rxs.push(rx);
    }
    let pps = args.pps as f64;
    let per_mode = ((WARM_UP + args.duration).as_secs_f64() * pps).ceil() as u64;
    let warm = (WARM_UP.as_secs_f64() * pps).ceil() as u64;
    let origin = Instant::now();
    for tx in &mut txs {
        tx.clock = Some(origin);
    }
    let done = AtomicBool::new(false);
    let (sent, got) = std::thread::scope(|s| {
        let receivers: Vec<_> = rxs
            .iter_mut()
            .map(|rx| {
                let done = &done;
                s.spawn(move || -> Result<Vec<u64>, CliError> {
                    let mut ns = Vec::with_capacity(usize::try_from(per_mode).unwrap_or(0));
                    loop {
                        let arrived = rx.recv(|st| {
                            if st.run == run && st.kind == KIND_DATA && st.seq >= warm {
                                let now =
                                    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                                ns.push(now.saturating_sub(st.extra));
                            }
                        })?;
                        if arrived == 0 && done.load(Ordering::Acquire) {
                            break;
                        }
                    }
                    Ok(ns)
                })
            })
            .collect();
        let sent = latency_send(&mut txs, run, pps, per_mode, stop);
        done.store(true, Ordering::Release);
        let got: Vec<Result<Vec<u64>, CliError>> = receivers
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| CliError::new("a receiver thread panicked"))?
            })
            .collect();
        (sent, got)
    });
    let sent = sent?;
    let mut results = Vec::new();
    for (&mode, ns) in modes.iter().zip(got) {
        let ns = ns?;
        let expected = sent.saturating_sub(warm);
        let lost = expected.saturating_sub(ns.len() as u64);
        results.push(Latency::from(mode, ns, lost));
    }
    print_latency(args, size, &results)
}

/// `group` with its port moved up by `offset`: one port per mode.
fn port_offset(group: Group, offset: usize) -> Result<Group, CliError> {
    let mut addr = group.addr();
    let port = u16::try_from(offset)
        .ok()
        .and_then(|o| addr.port().checked_add(o))
        .ok_or_else(|| {
            CliError::usage(format!("{group}: no room above the port for every mode"))
        })?;
    addr.set_port(port);
    Ok(addr.to_string().parse()?)
}

/// Sends `per_mode` datagrams of each mode at `pps` each, the modes taking
/// turns; returns how many each sent.
fn latency_send(
    txs: &mut [Tx],
    run: u32,
    pps: f64,
    per_mode: u64,
    stop: &AtomicBool,
) -> Result<u64, CliError> {
    let start = Instant::now();
    let step = 1.0 / (pps * txs.len().max(1) as f64);
    let mut k = 0u64;
    let mut seq = 0u64;
    while seq < per_mode && !stopped(stop) {
        for tx in txs.iter_mut() {
            let due = start + Duration::from_secs_f64(k as f64 * step);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let stamp = Stamp {
                run,
                seq,
                kind: KIND_DATA,
                extra: 0,
            };
            tx.send(stamp, 1)?;
            k += 1;
        }
        seq += 1;
        for tx in txs.iter_mut() {
            tx.poll_signed()?;
        }
    }
    for tx in txs.iter_mut() {
        tx.close_signed()?;
    }
    Ok(seq)
}

fn print_latency(args: &Args, size: usize, results: &[Latency]) -> CliResult {
    let plain_p50 = results
        .iter()
        .find(|l| l.mode == Mode::Plain)
        .map(|l| l.p50);
    if args.format == Format::Json {
        for l in results {
            let added = plain_p50
                .filter(|_| l.mode != Mode::Plain)
                .map(|p| l.p50 - p);
            let v = serde_json::json!({
                "type": "latency",
                "mode": l.mode.name(),
                "size": size,
                "pps": args.pps,
                "samples": l.samples,
                "lost": l.lost,
                "p50_us": l.p50,
                "p90_us": l.p90,
                "p99_us": l.p99,
                "max_us": l.max,
                "added_p50_us": added,
            });
            print_line(&v.to_string())?;
        }
        return Ok(());
    }
    let mut lines = vec![
        format!(
            "one-way latency, {size}-byte payloads at {} a second per mode, modes taking turns, \
             on {} and up via {}, {:?}",
            args.pps, args.group, args.interface, args.duration
        ),
        "mode              samples  lost    p50 us    p90 us    p99 us    max us".to_owned(),
    ];
    for l in results {
        lines.push(format!(
            "{:<16} {:>8} {:>5} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            l.mode.name(),
            l.samples,
            l.lost,
            l.p50,
            l.p90,
            l.p99,
            l.max
        ));
    }
    if let Some(p) = plain_p50 {
        for l in results.iter().filter(|l| l.mode != Mode::Plain) {
            lines.push(format!(
                "{} adds {:.1} us at p50 over plain",
                l.mode.name(),
                l.p50 - p
            ));
        }
    }
    print_text(&lines)
}

fn rand_run_id() -> u32 {
    // Not a secret: only tells one run's datagrams from another's.
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ (std::process::id() << 16)
}

fn run_send(args: &Args, mode: Mode, size: usize, stop: &AtomicBool) -> CliResult {
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

fn run_recv(args: &Args, mode: Mode, size: usize, stop: &AtomicBool) -> CliResult {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf2_reports_are_read() {
        // iperf 2.1.8 -e, client and server, as seen on this machine.
        let client = "[  1] 0.0000-1.0000 sec  62.5 MBytes   524 Mbits/sec  46815/0    46816 pps\n\
                      [  1] Sent 46817 datagrams\n";
        assert_eq!(iperf2_sent(client), Some(46817));
        let server = "[  1] 0.0000-1.0002 sec  62.5 MBytes   524 Mbits/sec   0.000 ms 12/46816 (0.026%) \
                      0.002/0.001/0.062/0.001 ms 46805 pps 46816/0(0) pkts 35089137";
        assert_eq!(iperf2_lost_total(server), Some((12, 46816)));
        // Not a report: the interval header, and the packets column alone.
        assert_eq!(
            iperf2_lost_total("[ ID] Interval Transfer Lost/Total Datagrams"),
            None
        );
        assert_eq!(iperf2_lost_total("46816/0(0) pkts"), None);
        assert_eq!(iperf2_sent("Server listening on UDP port 5001"), None);
    }

    #[test]
    fn cpus_parse() {
        assert_eq!(parse_cpus("0,1"), Ok(Cpus::Pinned { send: 0, recv: 1 }));
        assert_eq!(parse_cpus("none"), Ok(Cpus::Free));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("a,b").is_err());
        assert!(parse_cpus("0,99999").is_err());
    }
}
