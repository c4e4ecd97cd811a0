//! Files of any size, sent as RaptorQ symbols of independently encoded
//! blocks (body variant 5, PROTOCOL.md 2.1), and put back together with a
//! few bits of state per block.
//!
//! The sender ([`StreamEncoder`]) never holds the file: its caller reads
//! one block's bytes at a time (a window of a few, for interleaving) and
//! [`StreamEncoder::encode_block`] turns them into the symbols of one pass.
//!
//! The receiver ([`StreamReceiver`]) never holds the file either. A source
//! symbol is file bytes at a known offset, so [`StreamReceiver::push`]
//! answers it with a [`Write`]: the caller puts the bytes in its storage
//! (a temporary file) and the receiver only remembers that it arrived. A
//! lossless transfer therefore needs no decoding at all. Repair symbols are
//! held until a block has enough symbols to decode; then `push` hands out
//! a [`DecodeJob`] that owns what it needs and runs on any thread,
//! reading the block's source symbols back from storage. When every block
//! is in, a [`VerifyJob`] asks the caller to check the SHA-256 of what it
//! stored. Memory is charged for what is held (repair symbols, block and
//! file bookkeeping) against [`StreamConfig::max_held`], the longest-idle
//! file dropped first; a file's storage is the caller's, bounded by
//! [`StreamConfig::max_file`].
//!
//! Symbols come from authenticated frames, so from key holders; a key
//! holder can still be buggy or hostile, so nothing a symbol says makes
//! the receiver panic, allocate by a claimed size, or hold more than its
//! cap. A file is delivered only if its SHA-256 matches.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::OnceLock;
use std::time::Duration;

use raptorq::{
    EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder,
    SourceBlockEncoder, SourceBlockEncodingPlan,
};

use crate::body::{Body, MAX_FILE_PATH, STREAM_SYMBOL_MAX_OVERHEAD, StreamSymbol};
use crate::files::{FileStats, MAX_ESI, SymbolReject};
use crate::frame::Origin;
use crate::partial::PartialTable;

/// Most source symbols in one block (as for variant 3): decoding cost and
/// memory grow with it.
pub const MAX_BLOCK_SYMBOLS: u32 = crate::files::MAX_BLOCK_SYMBOLS;

/// Most bytes in one block (symbols times symbol size): 4 MiB, so that a
/// decode holds at most about 20 MiB ([`DecodeJob::working_bytes`]). A receiver
/// refuses larger blocks (`invalid`): at the 16 MiB variant 3 allows, a
/// key holder's blocks took 72 MiB each to decode, over what a receiver's
/// memory bound leaves for it; mcsec's sender makes 2048-symbol blocks
/// of at most this size, 2.7-2.9 MiB at a 1500-byte MTU.
pub const MAX_BLOCK_BYTES: u64 = 4 << 20;

/// What a block decode holds at its peak, as a fraction of its block's
/// bytes: 4, plus [`DECODE_WORKING_PER_SYMBOL`] for each of its symbols
/// (the read-back source symbols, their copies as packets, RaptorQ's
/// intermediate symbols and matrices, and the decoded block). Measured as
/// resident memory (tests/decode_memory.rs, test build), with glibc's mmap
/// threshold at 128 KiB as `mcsec recv` sets it, a tenth or a third of
/// the sources lost: 4.13x-4.21x the bytes of 2048 symbols of 1443 bytes
/// (this charges 5.0x), 4.74x-4.95x of 8192 of 512 (7.0x), and 10.9 MB for
/// 8192 symbols of 16 bytes (131 KB: about 1.3 KB a symbol beside its
/// bytes, which a charge of 4.5x the bytes alone missed 20-fold).
pub const DECODE_WORKING_FACTOR: (u64, u64) = (4, 1);

/// What a block decode holds for each of its symbols beyond
/// [`DECODE_WORKING_FACTOR`] of their bytes (see there): 1.5 KiB.
pub const DECODE_WORKING_PER_SYMBOL: u64 = 1536;

/// Source symbols per block that mcsec's sender chooses (at most
/// [`MAX_BLOCK_BYTES`] of them): large enough that one pass with a modest
/// repair percentage decodes every block through random loss of a few
/// percent less than it, small enough that a decode takes milliseconds.
pub const DEFAULT_BLOCK_SYMBOLS: u32 = 2048;

/// Blocks whose symbols a sender interleaves: a burst of loss costs each a
/// little rather than one a lot.
pub const WINDOW_BLOCKS: usize = 4;

/// Default largest file accepted: 16 GiB (a receiver's disk is the limit;
/// its memory is not).
pub const DEFAULT_MAX_FILE: u64 = 16 << 30;

/// Default cap on what all partial files hold in memory: 64 MiB.
pub const DEFAULT_MAX_HELD: usize = 64 << 20;

/// Default most partial files at once.
pub const DEFAULT_MAX_FILES: usize = 64;

/// Default time a partial file may wait for its next symbol.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes charged to every partial file, on top of its path.
pub const FILE_OVERHEAD: usize = 1024;

/// Bytes charged to every block being received, on top of its bitmap.
pub const BLOCK_OVERHEAD: usize = 256;

/// Bytes charged to every repair symbol held, on top of its bytes.
pub const SYMBOL_OVERHEAD: usize = 160;

/// Bytes charged per range of finished blocks.
pub const RANGE_OVERHEAD: usize = 64;

/// Decodes tried on one block's repair symbols before they are dropped.
pub const MAX_DECODE_ATTEMPTS: u32 = 4;

/// Files delivered lately, remembered so a carousel repeating them is not
/// delivered again.
pub const REMEMBERED_FILES: usize = 1024;

/// The shape of a file: its length, symbol size and block size, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    file_len: u64,
    symbol_size: u16,
    block_symbols: u32,
    symbols: u64,
    blocks: u64,
}

impl Layout {
    /// A layout, if the parameters are within the limits
    /// ([`MAX_BLOCK_SYMBOLS`], [`MAX_BLOCK_BYTES`], all at least 1).
    pub fn new(file_len: u64, symbol_size: u16, block_symbols: u32) -> Option<Self> {
        let t = u64::from(symbol_size);
        if file_len == 0
            || t == 0
            || block_symbols == 0
            || block_symbols > MAX_BLOCK_SYMBOLS
            || u64::from(block_symbols) * t > MAX_BLOCK_BYTES
        {
            return None;
        }
        let symbols = file_len.div_ceil(t);
        Some(Self {
            file_len,
            symbol_size,
            block_symbols,
            symbols,
            blocks: symbols.div_ceil(u64::from(block_symbols)),
        })
    }

    /// The file's length.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes per symbol.
    pub fn symbol_size(&self) -> u16 {
        self.symbol_size
    }

    /// Source symbols in every block but the last.
    pub fn block_symbols(&self) -> u32 {
        self.block_symbols
    }

    /// Blocks in the file.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Source symbols in block `block` (0 past the end).
    pub fn symbols_in(&self, block: u64) -> u32 {
        if block.saturating_add(1) < self.blocks {
            self.block_symbols
        } else if block < self.blocks {
            let before = block * u64::from(self.block_symbols);
            u32::try_from(self.symbols - before).unwrap_or(0)
        } else {
            0
        }
    }

    /// Where block `block` starts in the file.
    pub fn block_offset(&self, block: u64) -> u64 {
        block
            .saturating_mul(u64::from(self.block_symbols))
            .saturating_mul(u64::from(self.symbol_size))
    }

    /// The file's bytes in block `block` (its last symbol may be short).
    pub fn block_data_len(&self, block: u64) -> u64 {
        let padded = u64::from(self.symbols_in(block)) * u64::from(self.symbol_size);
        padded.min(self.file_len.saturating_sub(self.block_offset(block)))
    }

    /// Where source symbol `esi` of `block` goes in the file, and how many
    /// of its bytes are the file's (the rest is padding). `None` for a
    /// repair symbol or a block past the end.
    pub fn source_range(&self, block: u64, esi: u32) -> Option<(u64, usize)> {
        if esi >= self.symbols_in(block) {
            return None;
        }
        let t = u64::from(self.symbol_size);
        let offset = self.block_offset(block).checked_add(u64::from(esi) * t)?;
        let len = t.min(self.file_len.checked_sub(offset)?);
        Some((offset, usize::try_from(len).ok()?))
    }

    fn oti(&self, block: u64) -> ObjectTransmissionInformation {
        let len = u64::from(self.symbols_in(block)) * u64::from(self.symbol_size);
        ObjectTransmissionInformation::new(len, self.symbol_size, 1, 1, 1)
    }
}

/// Why a file cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamSendError {
    /// Nothing to send.
    #[error("the file is empty")]
    Empty,
    /// The path is longer than [`MAX_FILE_PATH`] bytes.
    #[error("the path is {0} bytes, over the limit of 1024")]
    PathTooLong(usize),
    /// The frames are too small to carry a symbol.
    #[error("a frame's plaintext of {0} bytes has no room for a file symbol")]
    FrameTooSmall(usize),
    /// The block given is not the block's length, or past the end.
    #[error("block {block} needs {expected} bytes, was given {given}")]
    BlockLength {
        /// The block.
        block: u64,
        /// Its length in the file.
        expected: u64,
        /// The bytes given.
        given: usize,
    },
}

/// A file to send, described, not held: its caller reads the blocks.
#[derive(Debug, Clone)]
pub struct StreamEncoder {
    file_id: u32,
    layout: Layout,
    sha256: [u8; 32],
    path: String,
    /// RaptorQ's precomputed steps for a block of `layout.block_symbols`
    /// source symbols, made at the first such block: every full block
    /// reuses them instead of solving its constraint matrix afresh.
    plan: OnceLock<SourceBlockEncodingPlan>,
}

impl StreamEncoder {
    /// A file of `file_len` bytes whose SHA-256 is `sha256`, sent as file
    /// `file_id` of its session under `path` (a `/`-separated relative
    /// path), in symbols whose bodies fit a plaintext of `max_plaintext`
    /// bytes, [`DEFAULT_BLOCK_SYMBOLS`] to a block.
    pub fn new(
        file_id: u32,
        path: &str,
        file_len: u64,
        sha256: [u8; 32],
        max_plaintext: usize,
    ) -> Result<Self, StreamSendError> {
        Self::with_block_symbols(
            file_id,
            path,
            file_len,
            sha256,
            max_plaintext,
            DEFAULT_BLOCK_SYMBOLS,
        )
    }

    /// As [`Self::new`], with at most `block_symbols` source symbols per
    /// block (smaller blocks: tests reach many blocks cheaply).
    pub fn with_block_symbols(
        file_id: u32,
        path: &str,
        file_len: u64,
        sha256: [u8; 32],
        max_plaintext: usize,
        block_symbols: u32,
    ) -> Result<Self, StreamSendError> {
        if file_len == 0 {
            return Err(StreamSendError::Empty);
        }
        if path.len() > MAX_FILE_PATH {
            return Err(StreamSendError::PathTooLong(path.len()));
        }
        let room = max_plaintext
            .checked_sub(STREAM_SYMBOL_MAX_OVERHEAD + path.len())
            .filter(|r| *r > 0)
            .ok_or(StreamSendError::FrameTooSmall(max_plaintext))?;
        let symbol_size = u16::try_from(room).unwrap_or(u16::MAX);
        let t = u64::from(symbol_size);
        let k = u64::from(block_symbols.clamp(1, MAX_BLOCK_SYMBOLS))
            .min(MAX_BLOCK_BYTES / t)
            .max(1);
        let layout = Layout::new(file_len, symbol_size, u32::try_from(k).unwrap_or(1))
            .ok_or(StreamSendError::FrameTooSmall(max_plaintext))?;
        Ok(Self {
            file_id,
            layout,
            sha256,
            path: path.to_owned(),
            plan: OnceLock::new(),
        })
    }

    /// An encoder for a block of `k` source symbols in `padded`: from the
    /// file's shared plan if the block is full-sized, else from scratch.
    fn block_encoder(&self, block: u64, k: u32, padded: &[u8]) -> SourceBlockEncoder {
        let oti = self.layout.oti(block);
        match u16::try_from(k) {
            Ok(k16) if k == self.layout.block_symbols => {
                let plan = self
                    .plan
                    .get_or_init(|| SourceBlockEncodingPlan::generate(k16));
                SourceBlockEncoder::with_encoding_plan(0, &oti, padded, plan)
            }
            _ => SourceBlockEncoder::new(0, &oti, padded),
        }
    }

    /// The file's shape.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Its ID in the session.
    pub fn file_id(&self) -> u32 {
        self.file_id
    }

    /// Its SHA-256.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// The path sent.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The symbols of block `block` in carousel pass `pass`, from the
    /// block's bytes ([`Layout::block_data_len`] of them, from
    /// [`Layout::block_offset`]; given with room for
    /// [`Layout::symbols_in`] × symbol size, the padding costs no copy). Pass 0 is every source symbol and then
    /// `repair_percent`% repair symbols (rounded up); each later pass as
    /// many symbols again, all repair symbols no earlier pass used (until
    /// the ESI space wraps), so any one pass alone completes the block.
    /// Repair symbols are computed only when asked for: a pass 0 with no
    /// repair costs a copy.
    pub fn encode_block(
        &self,
        block: u64,
        data: Vec<u8>,
        pass: u32,
        repair_percent: u32,
    ) -> Result<EncodedBlock, StreamSendError> {
        let expected = self.layout.block_data_len(block);
        if block >= self.layout.blocks() || data.len() as u64 != expected {
            return Err(StreamSendError::BlockLength {
                block,
                expected,
                given: data.len(),
            });
        }
        let k = self.layout.symbols_in(block);
        let t = usize::from(self.layout.symbol_size);
        let mut padded = data;
        padded.resize(k as usize * t, 0);
        let repair =
            u32::try_from((u64::from(k) * u64::from(repair_percent)).div_ceil(100)).unwrap_or(0);
        let count = k.saturating_add(repair);
        // Repair symbol numbers (ESI - K) this pass uses, as runs that do
        // not wrap; the space of repair numbers ends at MAX_ESI.
        let space = MAX_ESI.saturating_sub(k).saturating_add(1);
        let (first, n) = if pass == 0 {
            (0u64, repair)
        } else {
            (
                u64::from(repair) + u64::from(pass - 1) * u64::from(count),
                count,
            )
        };
        let mut repairs = Vec::new();
        let mut esis = Vec::new();
        if n > 0 && space > 0 {
            let encoder = self.block_encoder(block, k, &padded);
            let mut next = u32::try_from(first % u64::from(space)).unwrap_or(0);
            let mut left = n;
            while left > 0 {
                let run = left.min(space - next);
                for packet in encoder.repair_packets(next, run) {
                    let (id, bytes) = packet.split();
                    esis.push(id.encoding_symbol_id());
                    repairs.extend_from_slice(&bytes);
                }
                left -= run;
                next = 0;
            }
        }
        let sources = if pass == 0 { k } else { 0 };
        if pass != 0 {
            padded = Vec::new();
        }
        Ok(EncodedBlock {
            block,
            symbol_size: t,
            sources,
            data: padded,
            esis,
            repairs,
        })
    }

    /// The body that carries symbol `esi` of `block`.
    pub fn body<'a>(&'a self, block: u64, esi: u32, symbol: &'a [u8]) -> Body<'a> {
        Body::StreamSymbol(StreamSymbol {
            file_id: self.file_id,
            file_len: self.layout.file_len,
            symbol_size: self.layout.symbol_size,
            block_symbols: self.layout.block_symbols,
            block,
            esi,
            sha256: self.sha256,
            path: &self.path,
            symbol,
        })
    }
}

/// One block's symbols for one pass, from [`StreamEncoder::encode_block`].
#[derive(Debug, Clone)]
pub struct EncodedBlock {
    block: u64,
    symbol_size: usize,
    sources: u32,
    data: Vec<u8>,
    esis: Vec<u32>,
    repairs: Vec<u8>,
}

impl EncodedBlock {
    /// Which block.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// Symbols in this pass.
    pub fn len(&self) -> usize {
        self.sources as usize + self.esis.len()
    }

    /// True if this pass has no symbols of it.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Symbol `i` of this pass: its ESI and bytes.
    pub fn symbol(&self, i: usize) -> Option<(u32, &[u8])> {
        let t = self.symbol_size;
        if let Ok(esi) = u32::try_from(i)
            && esi < self.sources
        {
            return Some((esi, self.data.get(i * t..(i + 1) * t)?));
        }
        let r = i.checked_sub(self.sources as usize)?;
        Some((*self.esis.get(r)?, self.repairs.get(r * t..(r + 1) * t)?))
    }
}

/// The symbols of a window of blocks, interleaved: the first of each
/// block, then the second of each, and so on. Yields (index into
/// `blocks`, ESI, bytes).
pub fn interleave(blocks: &[EncodedBlock]) -> impl Iterator<Item = (usize, u32, &[u8])> + '_ {
    let longest = blocks.iter().map(EncodedBlock::len).max().unwrap_or(0);
    (0..longest).flat_map(move |i| {
        blocks
            .iter()
            .enumerate()
            .filter_map(move |(b, block)| block.symbol(i).map(|(esi, bytes)| (b, esi, bytes)))
    })
}

/// Limits for a [`StreamReceiver`]. `Default` gives the defaults above.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    /// Largest file accepted, in bytes (the caller's storage).
    pub max_file: u64,
    /// Most bytes of memory all partial files may hold, overheads included.
    pub max_held: usize,
    /// Most partial files at once.
    pub max_files: usize,
    /// How long a partial file waits for its next symbol.
    pub timeout: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            max_file: DEFAULT_MAX_FILE,
            max_held: DEFAULT_MAX_HELD,
            max_files: DEFAULT_MAX_FILES,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A number that names one partial file between the receiver and its
/// caller's storage; never reused within a receiver.
pub type Handle = u64;

/// A file seen for the first time: the caller makes its storage.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewFile {
    /// Names it from now on.
    pub handle: Handle,
    /// Its sender (key and session).
    pub origin: Origin,
    /// Its ID in the sender's session.
    pub file_id: u32,
    /// Its shape.
    pub layout: Layout,
    /// SHA-256 announced.
    pub sha256: [u8; 32],
    /// The sender's path, unsanitized (see [`sanitize_path`]).
    pub path: String,
}

/// Bytes to store: the symbol's first `len` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    /// Which file.
    pub handle: Handle,
    /// Where in it.
    pub offset: u64,
    /// How many of the symbol's bytes (the rest is padding).
    pub len: usize,
}

/// What [`StreamReceiver::push`] asks of its caller, in this order: make
/// storage for a new file, write the symbol, run a job.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Step {
    /// A file seen for the first time.
    pub new_file: Option<NewFile>,
    /// The symbol's bytes to store.
    pub write: Option<Write>,
    /// A block this symbol finished (its last source symbol arrived), to
    /// note after the write for a later resume.
    pub finished: Option<u64>,
    /// Work to do after the write.
    pub job: Option<Job>,
}

/// Work that [`StreamReceiver`] hands out, to run on any thread.
#[derive(Debug)]
#[non_exhaustive]
pub enum Job {
    /// Decode a block from the source symbols stored and the repair
    /// symbols held.
    Decode(DecodeJob),
    /// Every block is stored: check the file's SHA-256.
    Verify(VerifyJob),
}

/// Check a stored file: SHA-256 of its `file_len` bytes against `sha256`,
/// then tell [`StreamReceiver::verified`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyJob {
    /// Which file.
    pub handle: Handle,
    /// Its length.
    pub file_len: u64,
    /// What its SHA-256 must be.
    pub sha256: [u8; 32],
}

/// Decode one block: see [`DecodeJob::run`].
#[derive(Debug)]
pub struct DecodeJob {
    handle: Handle,
    block: u64,
    layout: Layout,
    have: Vec<u64>,
    repairs: Vec<(u32, Vec<u8>)>,
}

/// What a [`DecodeJob`] came to.
#[derive(Debug)]
#[non_exhaustive]
pub enum Decoded {
    /// The block's bytes, to store at `offset`; then tell
    /// [`StreamReceiver::decoded`] with `true`.
    Block {
        /// Which file.
        handle: Handle,
        /// Which block.
        block: u64,
        /// Where it goes.
        offset: u64,
        /// The file's bytes of the block.
        data: Vec<u8>,
    },
    /// The symbols were not enough (rarely, with exactly K) or the storage
    /// could not be read; give `repairs` back to [`StreamReceiver::decoded`]
    /// with `false`.
    Failed {
        /// Which file.
        handle: Handle,
        /// Which block.
        block: u64,
        /// The repair symbols, for the next try.
        repairs: Vec<(u32, Vec<u8>)>,
    },
}

impl DecodeJob {
    /// Which file.
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// Which block.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// The block's bytes (its symbols times the symbol size).
    pub fn bytes(&self) -> u64 {
        u64::from(self.layout.symbols_in(self.block)) * u64::from(self.layout.symbol_size)
    }

    /// What [`Self::run`] holds at its peak, on top of the job itself:
    /// [`DECODE_WORKING_FACTOR`] times [`Self::bytes`], and
    /// [`DECODE_WORKING_PER_SYMBOL`] for each symbol. A caller that
    /// bounds its memory charges a running decode this, not its block's
    /// bytes.
    pub fn working_bytes(&self) -> u64 {
        let symbols = u64::from(self.layout.symbols_in(self.block));
        (self.bytes().saturating_mul(DECODE_WORKING_FACTOR.0) / DECODE_WORKING_FACTOR.1)
            .saturating_add(symbols.saturating_mul(DECODE_WORKING_PER_SYMBOL))
    }

    /// Decodes: reads back the source symbols that arrived with one
    /// `read_at(offset, buf)` (exactly `buf.len()` bytes of the file, from
    /// the block's start to the end of its last stored symbol; bytes of
    /// symbols that never arrived are read and ignored), adds the repair
    /// symbols, and solves.
    pub fn run(self, mut read_at: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>) -> Decoded {
        let failed = |repairs| Decoded::Failed {
            handle: self.handle,
            block: self.block,
            repairs,
        };
        let layout = self.layout;
        let k = layout.symbols_in(self.block);
        let t = usize::from(layout.symbol_size);
        let oti = layout.oti(self.block);
        let mut decoder =
            SourceBlockDecoder::new(0, &oti, u64::from(k) * u64::from(layout.symbol_size));
        let mut packets = Vec::with_capacity(k as usize + self.repairs.len());
        // Each stored source symbol: where it starts in the block and its
        // length (the file's bytes of it).
        let start = layout.block_offset(self.block);
        let mut ranges: Vec<(u32, usize, usize)> = Vec::new();
        for esi in 0..k {
            if !bit(&self.have, u64::from(esi)) {
                continue;
            }
            let Some((offset, len)) = layout.source_range(self.block, esi) else {
                return failed(self.repairs);
            };
            let Some(at) = offset
                .checked_sub(start)
                .and_then(|at| usize::try_from(at).ok())
            else {
                return failed(self.repairs);
            };
            ranges.push((esi, at, len));
        }
        // The stored bytes, read once and kept: what the decoder returns
        // for them is put back as stored, so a block decoded from bad
        // repair symbols (a key holder's) never changes bytes already
        // stored, which a caller may have hashed as they were written.
        let span = ranges.last().map_or(0, |&(_, at, len)| at + len);
        let mut stored = vec![0u8; span];
        if span > 0 && read_at(start, &mut stored).is_err() {
            return failed(self.repairs);
        }
        for &(esi, at, len) in &ranges {
            let mut symbol = vec![0u8; t];
            let (Some(dst), Some(src)) = (symbol.get_mut(..len), stored.get(at..at + len)) else {
                return failed(self.repairs);
            };
            dst.copy_from_slice(src);
            packets.push(EncodingPacket::new(PayloadId::new(0, esi), symbol));
        }
        // Copies: a failed decode gives the repair symbols back.
        for (esi, bytes) in &self.repairs {
            packets.push(EncodingPacket::new(PayloadId::new(0, *esi), bytes.clone()));
        }
        let Some(mut data) = decoder.decode(packets) else {
            return failed(self.repairs);
        };
        for &(_, at, len) in &ranges {
            if let (Some(dst), Some(src)) = (data.get_mut(at..at + len), stored.get(at..at + len)) {
                dst.copy_from_slice(src);
            }
        }
        let Ok(len) = usize::try_from(layout.block_data_len(self.block)) else {
            return failed(self.repairs);
        };
        data.truncate(len);
        Decoded::Block {
            handle: self.handle,
            block: self.block,
            offset: layout.block_offset(self.block),
            data,
        }
    }
}

/// A file received whole and verified, from [`StreamReceiver::verified`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completed {
    /// Its storage.
    pub handle: Handle,
    /// Its sender.
    pub origin: Origin,
    /// Its ID in the sender's session.
    pub file_id: u32,
    /// The sender's path, unsanitized.
    pub path: String,
    /// Its length.
    pub file_len: u64,
    /// Its SHA-256, checked.
    pub sha256: [u8; 32],
}

/// Why a partial file's storage is no longer needed by the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Its symbols disagreed.
    Conflict,
    /// Idle longer than the timeout.
    TimedOut,
    /// Idle longest when room was needed.
    Evicted,
    /// Its SHA-256 did not match.
    HashMismatch,
    /// Its caller gave up on it ([`StreamReceiver::abandon`]).
    Abandoned,
}

/// Bits `0..n`, all clear.
fn bitmap(n: u32) -> Vec<u64> {
    vec![0; (n as usize).div_ceil(64)]
}

fn bit(map: &[u64], i: u64) -> bool {
    map.get((i / 64) as usize)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Sets bit `i`; false if it was set already or is out of range.
fn set_bit(map: &mut [u64], i: u64) -> bool {
    let Some(w) = map.get_mut((i / 64) as usize) else {
        return false;
    };
    let mask = 1 << (i % 64);
    let was = *w & mask != 0;
    *w |= mask;
    !was
}

/// Finished blocks as ranges `start..end`, merged: a file completed in
/// order is one range whatever its size.
#[derive(Debug, Default, Clone)]
struct Ranges {
    ranges: BTreeMap<u64, u64>,
    count: u64,
}

impl Ranges {
    fn contains(&self, b: u64) -> bool {
        self.ranges
            .range(..=b)
            .next_back()
            .is_some_and(|(_, &end)| b < end)
    }

    /// Adds `b`; returns the change in the number of ranges (-1, 0 or 1),
    /// or `None` if it was there already.
    fn insert(&mut self, b: u64) -> Option<i32> {
        if self.contains(b) {
            return None;
        }
        self.count += 1;
        let before = self
            .ranges
            .range(..b)
            .next_back()
            .filter(|(_, end)| **end == b)
            .map(|(s, _)| *s);
        let after = b
            .checked_add(1)
            .and_then(|n| self.ranges.get(&n).map(|e| (n, *e)));
        match (before, after) {
            (Some(s), Some((n, e))) => {
                self.ranges.remove(&n);
                self.ranges.insert(s, e);
                Some(-1)
            }
            (Some(s), None) => {
                self.ranges.insert(s, b + 1);
                Some(0)
            }
            (None, Some((n, e))) => {
                self.ranges.remove(&n);
                self.ranges.insert(b, e);
                Some(0)
            }
            (None, None) => {
                self.ranges.insert(b, b + 1);
                Some(1)
            }
        }
    }
}

#[derive(Debug)]
struct Active {
    have: Vec<u64>,
    sources: u32,
    /// Repair symbols held, and the ESIs of every repair symbol taken
    /// (also those out in a decode job).
    repairs: Vec<(u32, Vec<u8>)>,
    repair_esis: HashSet<u32>,
    decoding: bool,
    attempts: u32,
    next_attempt: usize,
    /// Symbols the decode in flight (or the last one) started with: a
    /// failed one retries with a few more than that.
    tried: usize,
    cost: usize,
}

impl Active {
    fn received(&self) -> usize {
        self.sources as usize + self.repair_esis.len()
    }
}

#[derive(Debug)]
struct Incoming {
    handle: Handle,
    layout: Layout,
    sha256: [u8; 32],
    path: String,
    done: Ranges,
    active: HashMap<u64, Active>,
    verifying: bool,
    /// At least the largest need (source symbols still missing) of any
    /// block holding repair symbols it could shed: needs only fall as
    /// symbols arrive, so a repair for a block needing this many or more
    /// is refused without a scan.
    shed_bound: u32,
}

impl Incoming {
    fn same_file(&self, s: &StreamSymbol<'_>) -> bool {
        self.layout.file_len == s.file_len
            && self.layout.symbol_size == s.symbol_size
            && self.layout.block_symbols == s.block_symbols
            && self.sha256 == s.sha256
            && self.path == s.path
    }
}

type Key = (Origin, u32);

/// Puts files of variant-5 symbols back together, keyed by (origin,
/// file_id), with the bytes in its caller's storage. See the module docs.
#[derive(Debug, Default)]
pub struct StreamReceiver {
    config: StreamConfig,
    /// Partial files, charged against `max_held`, by their last symbol.
    partial: PartialTable<Key, Incoming>,
    handles: HashMap<Handle, Key>,
    done: HashMap<Key, [u8; 32]>,
    done_order: VecDeque<Key>,
    dropped: Vec<(Handle, DropReason)>,
    next_handle: Handle,
    stats: FileStats,
}

/// Checks a symbol's parameters against the limits, before anything is
/// allocated for it.
fn check(s: &StreamSymbol<'_>, max_file: u64) -> Result<Layout, SymbolReject> {
    if s.file_len > max_file {
        return Err(SymbolReject::Oversize);
    }
    let layout =
        Layout::new(s.file_len, s.symbol_size, s.block_symbols).ok_or(SymbolReject::Invalid)?;
    if s.block >= layout.blocks()
        || s.esi > MAX_ESI
        || s.symbol.len() != usize::from(s.symbol_size)
        || s.path.len() > MAX_FILE_PATH
        || s.path.split('/').any(|c| c == "..")
    {
        return Err(SymbolReject::Invalid);
    }
    Ok(layout)
}

impl StreamReceiver {
    /// A receiver with these limits.
    pub fn new(config: StreamConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &FileStats {
        &self.stats
    }

    /// Bytes of memory charged to partial files.
    pub fn held_bytes(&self) -> usize {
        self.partial.held()
    }

    /// Partial files.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// How far each partial file is: its handle, the bytes stored (blocks
    /// finished, and source symbols of blocks in progress) and its length.
    pub fn progress(&self) -> Vec<(Handle, u64, u64)> {
        self.partial
            .values()
            .map(|p| {
                let t = u64::from(p.layout.symbol_size);
                let block = u64::from(p.layout.block_symbols) * t;
                let finished = p.done.count.saturating_mul(block);
                let active: u64 = p.active.values().map(|a| u64::from(a.sources) * t).sum();
                let stored = finished.saturating_add(active).min(p.layout.file_len);
                (p.handle, stored, p.layout.file_len)
            })
            .collect()
    }

    /// Storage the receiver no longer needs since the last call, and why.
    /// The list grows until taken: a caller that keeps storage per file
    /// takes it after every [`Self::push`] (and [`Self::expire`]), and frees
    /// what it names, or a key holder who starts and drops files makes the
    /// caller hold them all ([`Self::push_stored`] does this itself).
    pub fn take_dropped(&mut self) -> Vec<(Handle, DropReason)> {
        std::mem::take(&mut self.dropped)
    }

    fn reject<T>(&mut self, why: SymbolReject) -> Result<T, SymbolReject> {
        let s = &mut self.stats;
        let counter = match why {
            SymbolReject::Invalid => &mut s.invalid,
            SymbolReject::Oversize => &mut s.oversize,
            SymbolReject::MemoryFull => &mut s.memory_full,
            SymbolReject::Conflict => &mut s.conflict,
            SymbolReject::Duplicate => &mut s.duplicate,
            SymbolReject::Extra => &mut s.extra,
            SymbolReject::HashMismatch => &mut s.hash_mismatch,
            SymbolReject::Undecodable => &mut s.undecodable,
        };
        *counter = counter.saturating_add(1);
        Err(why)
    }

    fn drop_partial(&mut self, key: &Key, why: DropReason) {
        if let Some(p) = self.partial.remove(key) {
            self.handles.remove(&p.handle);
            self.dropped.push((p.handle, why));
        }
    }

    /// Drops partial files idle longer than the timeout; returns how many.
    pub fn expire(&mut self, now_us: u64) -> usize {
        let timeout_us = u64::try_from(self.config.timeout.as_micros()).unwrap_or(u64::MAX);
        let mut n = 0;
        while let Some((_, p)) = self.partial.pop_expired(now_us, timeout_us) {
            self.handles.remove(&p.handle);
            self.dropped.push((p.handle, DropReason::TimedOut));
            n += 1;
        }
        self.stats.timed_out = self.stats.timed_out.saturating_add(n as u64);
        n
    }

    /// Frees room for `needed` more bytes (and one more file if `new`) by
    /// dropping the partial files idle longest, other than `keep`.
    fn make_room(&mut self, needed: usize, new: bool, keep: &Key) -> bool {
        while self.partial.held().saturating_add(needed) > self.config.max_held
            || (new && self.partial.len() >= self.config.max_files)
        {
            let Some(victim) = self.partial.idlest_except(keep) else {
                return false;
            };
            self.drop_partial(&victim, DropReason::Evicted);
            self.stats.evicted = self.stats.evicted.saturating_add(1);
        }
        true
    }

    fn charge(&mut self, key: &Key, block: Option<u64>, bytes: usize) {
        if let Some(mut p) = self.partial.get_mut(key) {
            p.charge(bytes);
            if let Some(a) = block.and_then(|b| p.active.get_mut(&b)) {
                a.cost = a.cost.saturating_add(bytes);
            }
        }
    }

    /// Marks `block` finished: its bookkeeping and repair symbols go. A
    /// verify job when it was the last.
    fn finish_block(&mut self, key: &Key, block: u64) -> Option<Job> {
        let mut p = self.partial.get_mut(key)?;
        let freed = p.active.remove(&block).map_or(0, |a| a.cost);
        let ranges: i32 = p.done.insert(block).unwrap_or_default();
        p.refund(freed);
        // A new range is charged; a merge gives one back.
        if ranges > 0 {
            p.charge(RANGE_OVERHEAD);
        } else if ranges < 0 {
            p.refund(RANGE_OVERHEAD);
        }
        if p.done.count == p.layout.blocks() && !p.verifying {
            p.verifying = true;
            return Some(Job::Verify(VerifyJob {
                handle: p.handle,
                file_len: p.layout.file_len,
                sha256: p.sha256,
            }));
        }
        None
    }

    /// Frees room for `needed` bytes of file `key`'s own, when no other
    /// file can give it, by dropping the repair symbols of its block that
    /// needs the most symbols still: every repair symbol it held is worth
    /// less than one for a block closer to decoding. `need` is what the
    /// new symbol's block still needs (0 once it has K or is decoding); a
    /// source symbol always sheds (the first pass alone carries them:
    /// they are worth more than any repair).
    /// Without this, a single file's blocks that a pass left short would
    /// hold the cap and refuse every later repair: a carousel would
    /// never complete them.
    fn shed(&mut self, key: &Key, block: u64, source: bool, need: u32, needed: usize) -> bool {
        // A repair for a block that has its K symbols (or is decoding)
        // adds nothing yet: it never costs another block its repairs.
        if !source && need == 0 {
            return false;
        }
        while self.partial.held().saturating_add(needed) > self.config.max_held {
            let Some(mut entry) = self.partial.get_mut(key) else {
                return false;
            };
            let p: &mut Incoming = &mut entry;
            if !source && need >= p.shed_bound {
                return false;
            }
            let layout = p.layout;
            let mut bound = 0;
            let mut victim = None;
            for (b, a) in &p.active {
                if a.decoding || a.repairs.is_empty() {
                    continue;
                }
                let n = layout.symbols_in(*b).saturating_sub(a.received() as u32);
                bound = bound.max(n);
                if *b != block && victim.is_none_or(|(m, v)| (n, *b) > (m, v)) {
                    victim = Some((n, *b));
                }
            }
            // Over every block that could shed, this one's included.
            p.shed_bound = bound;
            let Some((victim_need, victim)) = victim else {
                return false;
            };
            if !source && victim_need <= need {
                return false;
            }
            let Some(a) = p.active.get_mut(&victim) else {
                return false;
            };
            let shed = a.repairs.len() as u64;
            let mut freed = 0usize;
            for (esi, bytes) in a.repairs.drain(..) {
                a.repair_esis.remove(&esi);
                freed = freed.saturating_add(bytes.len() + SYMBOL_OVERHEAD);
            }
            let freed = freed.min(a.cost);
            a.cost -= freed;
            a.next_attempt = layout.symbols_in(victim) as usize;
            entry.refund(freed);
            self.stats.memory_full = self.stats.memory_full.saturating_add(shed);
        }
        true
    }

    /// Takes one symbol of an authenticated frame from `origin`.
    pub fn push(
        &mut self,
        now_us: u64,
        origin: Origin,
        symbol: &StreamSymbol<'_>,
    ) -> Result<Step, SymbolReject> {
        self.expire(now_us);
        let key = (origin, symbol.file_id);
        if let Some(hash) = self.done.get(&key) {
            let why = if *hash == symbol.sha256 {
                SymbolReject::Extra
            } else {
                SymbolReject::Conflict
            };
            return self.reject(why);
        }
        let layout = match check(symbol, self.config.max_file) {
            Ok(l) => l,
            Err(why) => return self.reject(why),
        };
        if self.partial.get(&key).is_some_and(|p| !p.same_file(symbol)) {
            self.drop_partial(&key, DropReason::Conflict);
            return self.reject(SymbolReject::Conflict);
        }
        let k = layout.symbols_in(symbol.block);
        let is_source = symbol.esi < k;
        let (exists, block_done, active) = match self.partial.get(&key) {
            Some(p) => (
                true,
                p.done.contains(symbol.block) || p.verifying,
                p.active.get(&symbol.block),
            ),
            None => (false, false, None),
        };
        if block_done {
            return self.reject(SymbolReject::Extra);
        }
        let duplicate = active.is_some_and(|a| {
            if is_source {
                bit(&a.have, u64::from(symbol.esi))
            } else {
                a.repair_esis.contains(&symbol.esi)
            }
        });
        if duplicate {
            return self.reject(SymbolReject::Duplicate);
        }
        let file_charge = if exists {
            0
        } else {
            FILE_OVERHEAD + symbol.path.len() + RANGE_OVERHEAD
        };
        let mut block_charge = 0usize;
        if active.is_none() {
            block_charge += BLOCK_OVERHEAD + bitmap(k).len() * 8;
        }
        if !is_source {
            block_charge += symbol.symbol.len() + SYMBOL_OVERHEAD;
        }
        let need = match active {
            Some(a) if a.decoding => 0,
            Some(a) => k.saturating_sub(a.received() as u32),
            None => k,
        };
        let needed = file_charge + block_charge;
        if !self.make_room(needed, !exists, &key)
            && !self.shed(&key, symbol.block, is_source, need, needed)
        {
            return self.reject(SymbolReject::MemoryFull);
        }
        let mut step = Step::default();
        if !exists {
            let handle = self.next_handle;
            self.next_handle += 1;
            self.handles.insert(handle, key);
            self.partial.insert(
                key,
                Incoming {
                    handle,
                    layout,
                    sha256: symbol.sha256,
                    path: symbol.path.to_owned(),
                    done: Ranges::default(),
                    active: HashMap::new(),
                    verifying: false,
                    shed_bound: 0,
                },
                now_us,
            );
            step.new_file = Some(NewFile {
                handle,
                origin,
                file_id: symbol.file_id,
                layout,
                sha256: symbol.sha256,
                path: symbol.path.to_owned(),
            });
        }
        self.partial.touch(&key, now_us);
        let Some(mut entry) = self.partial.get_mut(&key) else {
            return self.reject(SymbolReject::MemoryFull);
        };
        let p: &mut Incoming = &mut entry;
        let handle = p.handle;
        let a = p.active.entry(symbol.block).or_insert_with(|| Active {
            have: bitmap(k),
            sources: 0,
            repairs: Vec::new(),
            repair_esis: HashSet::new(),
            decoding: false,
            attempts: 0,
            next_attempt: k as usize,
            tried: 0,
            cost: 0,
        });
        if is_source {
            set_bit(&mut a.have, u64::from(symbol.esi));
            a.sources += 1;
            if let Some((offset, len)) = layout.source_range(symbol.block, symbol.esi) {
                step.write = Some(Write {
                    handle,
                    offset,
                    len,
                });
            }
        } else {
            a.repair_esis.insert(symbol.esi);
            a.repairs.push((symbol.esi, symbol.symbol.to_vec()));
            if !a.decoding {
                let need = k.saturating_sub(a.received() as u32);
                p.shed_bound = p.shed_bound.max(need);
            }
        }
        let complete = a.sources == k;
        let decode = !complete && !a.decoding && a.received() >= a.next_attempt;
        let job = decode.then(|| {
            a.decoding = true;
            a.tried = a.received();
            Job::Decode(DecodeJob {
                handle,
                block: symbol.block,
                layout,
                have: a.have.clone(),
                repairs: std::mem::take(&mut a.repairs),
            })
        });
        self.charge(&key, None, file_charge);
        self.charge(&key, Some(symbol.block), block_charge);
        if complete {
            step.finished = Some(symbol.block);
            step.job = self.finish_block(&key, symbol.block);
        } else {
            step.job = job;
        }
        if decode {
            self.stats.decode_attempts = self.stats.decode_attempts.saturating_add(1);
        }
        Ok(step)
    }

    /// Forgets a partial file whose storage failed; a later symbol of it
    /// starts it afresh.
    pub fn abandon(&mut self, handle: Handle) {
        if let Some(key) = self.handles.get(&handle).copied() {
            self.drop_partial(&key, DropReason::Abandoned);
            self.stats.abandoned = self.stats.abandoned.saturating_add(1);
        }
    }

    /// Marks blocks of a new file as already stored (a receiver resuming
    /// from storage a previous run left). A verify job if that is all.
    pub fn resume(&mut self, handle: Handle, blocks: impl IntoIterator<Item = u64>) -> Option<Job> {
        let key = *self.handles.get(&handle)?;
        let mut job = None;
        for b in blocks {
            let p = self.partial.get(&key)?;
            if b >= p.layout.blocks() || p.done.contains(b) {
                continue;
            }
            self.stats.blocks_resumed = self.stats.blocks_resumed.saturating_add(1);
            job = self.finish_block(&key, b).or(job);
        }
        job
    }

    /// The outcome of a [`DecodeJob`]: `ok` once its block is stored. A
    /// failed decode keeps its repair symbols and tries again with a few
    /// more than it had, a few times; then they are dropped and the
    /// carousel's next pass brings fresh ones. The retry is returned at
    /// once if the symbols that arrived during the decode are enough:
    /// counted from the symbols held when the failure comes back, it would
    /// wait for the next pass whenever the rest of the block's pass arrived
    /// during a slow decode.
    pub fn decoded(
        &mut self,
        handle: Handle,
        block: u64,
        ok: bool,
        repairs: Vec<(u32, Vec<u8>)>,
    ) -> Option<Job> {
        let key = *self.handles.get(&handle)?;
        if ok {
            return self.finish_block(&key, block);
        }
        let mut entry = self.partial.get_mut(&key)?;
        let p: &mut Incoming = &mut entry;
        let k = p.layout.symbols_in(block) as usize;
        let a = p.active.get_mut(&block)?;
        a.decoding = false;
        a.attempts += 1;
        if a.attempts >= MAX_DECODE_ATTEMPTS {
            // Give the memory back and start this block's repairs afresh.
            let freed: usize = a
                .repairs
                .iter()
                .chain(repairs.iter())
                .map(|(_, b)| b.len() + SYMBOL_OVERHEAD)
                .sum::<usize>()
                .min(a.cost);
            a.repairs.clear();
            a.repair_esis.clear();
            a.attempts = 0;
            a.next_attempt = k;
            a.cost = a.cost.saturating_sub(freed);
            entry.refund(freed);
            self.stats.undecodable = self.stats.undecodable.saturating_add(1);
            return None;
        }
        a.repairs.extend(repairs);
        a.next_attempt = a.tried.saturating_add((k / 32).max(2));
        if a.received() < a.next_attempt {
            return None;
        }
        a.decoding = true;
        a.tried = a.received();
        self.stats.decode_attempts = self.stats.decode_attempts.saturating_add(1);
        Some(Job::Decode(DecodeJob {
            handle,
            block,
            layout: p.layout,
            have: a.have.clone(),
            repairs: std::mem::take(&mut a.repairs),
        }))
    }

    /// The outcome of a [`VerifyJob`]. On a match the file is delivered
    /// (once: a carousel repeating it gets [`SymbolReject::Extra`]); on a
    /// mismatch it is dropped and counted, and the carousel may bring it
    /// again.
    pub fn verified(&mut self, handle: Handle, matches: bool) -> Option<Completed> {
        let key = *self.handles.get(&handle)?;
        if !matches {
            self.drop_partial(&key, DropReason::HashMismatch);
            self.stats.hash_mismatch = self.stats.hash_mismatch.saturating_add(1);
            return None;
        }
        let p = self.partial.remove(&key)?;
        self.handles.remove(&handle);
        if self.done.insert(key, p.sha256).is_none() {
            self.done_order.push_back(key);
        }
        while self.done_order.len() > REMEMBERED_FILES {
            if let Some(old) = self.done_order.pop_front() {
                self.done.remove(&old);
            }
        }
        self.stats.completed = self.stats.completed.saturating_add(1);
        Some(Completed {
            handle,
            origin: key.0,
            file_id: key.1,
            path: p.path,
            file_len: p.layout.file_len,
            sha256: p.sha256,
        })
    }
}

/// A received relative path made safe to create under a directory: every
/// component through [`crate::files::sanitize_name`], empty and `.`
/// components dropped. `None` if a component is `..` or nothing usable is
/// left.
pub fn sanitize_path(path: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(crate::files::sanitize_name(c)?),
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
