//! The stamp at the start of every payload: run, sequence, send time.

use super::*;

/// The stamp at the front of every payload: magic, run ID, sequence, kind,
/// and (in an end marker) how many datagrams were sent. Little-endian.
pub(super) const STAMP_MAGIC: [u8; 4] = *b"mcsB";
pub(super) const STAMP_LEN: usize = 4 + 4 + 8 + 1 + 8;
pub(super) const KIND_DATA: u8 = 0;
pub(super) const KIND_END: u8 = 1;
/// Largest UDP payload (IPv4) minus mcsec's overhead.
pub(super) const MAX_PAYLOAD: usize = 65_507 - OVERHEAD;

/// Loss a searched rate may have: under 0.1%.
pub(super) const LOSS_TARGET: f64 = 0.001;
/// One step of the rate search; 1 probe + `SEARCH_STEPS` of these per mode.
pub(super) const SEARCH_TRIAL: Duration = Duration::from_millis(250);
pub(super) const SEARCH_STEPS: usize = 6;
/// A searched rate that loses too much over the whole run is measured
/// again at this fraction of itself, at most this many times.
pub(super) const CONFIRM_STEP: f64 = 0.95;
pub(super) const CONFIRM_RETRIES: usize = 3;
/// How long the receiver waits, once the sender is done, for stragglers.
pub(super) const DRAIN: Duration = Duration::from_millis(30);
/// At least this many datagrams back to back while catching up with the
/// schedule (or a whole batch, if larger), and at most this much lag
/// before the schedule forgives it.
pub(super) const BURST: u64 = 32;
pub(super) const MAX_LAG: Duration = Duration::from_millis(20);
/// The pacer's shortest sleep: at 1 Gbit/s of 1400-byte payloads it sends
/// about 22 datagrams per wake-up.
pub(super) const PACING_QUANTUM: Duration = Duration::from_micros(250);
/// Receive buffer asked for: absorbs scheduling hiccups at high rates.
pub(super) const RCVBUF_BYTES: usize = 8 << 20;
/// End markers sent by --role send, in case some are lost.
pub(super) const END_MARKERS: u32 = 5;

#[derive(Debug, Clone, Copy)]
pub(super) struct Stamp {
    pub(super) run: u32,
    pub(super) seq: u64,
    pub(super) kind: u8,
    pub(super) extra: u64,
}

impl Stamp {
    pub(super) fn write(&self, out: &mut [u8]) {
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

    pub(super) fn read(bytes: &[u8]) -> Option<Self> {
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
