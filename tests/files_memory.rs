//! What a key holder can make the file receiver hold, measured as the
//! receiver's resident memory, against what it charges itself
//! (`FileConfig::max_total`).
//!
//! As in `tests/reassembly_memory.rs`, each shape runs alone in a child
//! process (this test binary, that test only, one thread): the child reads
//! its resident memory before feeding a [`FileReceiver`] capped at 16 MiB
//! and its peak resident memory (`VmHWM`) after. A shape fills the cap
//! with symbols shaped like those of authenticated frames (valid
//! parameters, a name, a hash), never enough of a block to decode, until
//! the receiver starts evicting partial files, then goes on for as much
//! again, so eviction and reuse of freed memory are measured too.
//! `cargo test --test files_memory -- --nocapture` prints the figures
//! SECURITY.md quotes.
//!
//! Unlike reassembly, the file receiver's charge is an estimate, not what
//! the allocator holds, and some shapes cost several times the cap: a
//! partial file of one symbol is charged 977 bytes for an 8-byte symbol,
//! but holds a map entry, a B-tree of blocks, an ESI set and a vector of
//! packets, each its own allocation. Each shape's ceiling sits just above
//! what it measured (glibc 2.36, x86_64: 3.35x, 2.05x, 0.38x, 0.48x and
//! 0.91x the cap), so the figure SECURITY.md quotes is one a test measures
//! and cannot get worse unnoticed. These ceilings are not the goal: the
//! files issue (#11) rewrites this receiver and must bring every shape
//! under 1.0x the cap plus slack, as `reassembly_memory` asserts, and
//! lower these ceilings to that.

mod alone;

use mcsec::files::{FileConfig, FileReceiver, MAX_BLOCK_SYMBOLS, SymbolReject};
use mcsec::{FileSymbol, KeyId, Origin, SenderId};

/// The cap every shape fills.
const MAX_TOTAL: usize = 16 << 20;

/// Set in the child process that runs one shape alone.
const ALONE: &str = "MCSEC_FILES_MEMORY_ALONE";

/// Runs test `name` again in a child process, alone; true in that child.
fn alone(name: &str) -> bool {
    alone::alone(name, ALONE)
}

/// One symbol: (file_id, file_len, symbol_size, esi).
type Sym = (u32, u64, u16, u32);

const ORIGIN: Origin = Origin {
    key_id: KeyId(1),
    sender_id: SenderId([0xa1; 16]),
};

/// A name like one the command-line sender puts in its symbols.
const NAME: &str = "photo.jpg";

/// Feeds `symbols` to a receiver capped at [`MAX_TOTAL`] until it has
/// evicted (or refused) partial files after as many symbols as it took to
/// reach the cap, and asserts that peak resident memory grew by at most
/// `ceiling` times the cap.
fn fill(shape: &str, ceiling: f64, symbols: impl Iterator<Item = Sym>) {
    let mut config = FileConfig::default();
    config.max_total = MAX_TOTAL;
    let mut r = FileReceiver::new(config);
    // Every symbol's bytes, allocated before the first reading.
    let source = vec![0x5au8; 65_536];
    let before = alone::status_kib("VmRSS:");
    let mut pushed = 0u64;
    let mut full_at = None;
    for (file_id, file_len, symbol_size, esi) in symbols {
        let symbol = FileSymbol {
            file_id,
            file_len,
            symbol_size,
            source_blocks: 1,
            sbn: 0,
            esi,
            sha256: [0x3c; 32],
            name: NAME,
            symbol: &source[..usize::from(symbol_size)],
        };
        // One microsecond a symbol: the idle longest is the oldest, and
        // nothing times out.
        let out = r.push(pushed, ORIGIN, &symbol);
        assert!(
            matches!(out, Ok(None) | Err(SymbolReject::MemoryFull)),
            "{shape}: symbol {pushed} gave {out:?}"
        );
        pushed += 1;
        let stats = r.stats();
        assert_eq!(stats.decode_attempts, 0, "{shape}: a block was decoded");
        let churned = stats.evicted + stats.memory_full;
        if churned > 0 && full_at.is_none() {
            full_at = Some(pushed);
        }
        // As many symbols again after the cap was first reached.
        if full_at.is_some_and(|at| pushed >= 2 * at) {
            break;
        }
        assert!(r.held_bytes() <= MAX_TOTAL);
    }
    let full_at = full_at.unwrap_or_else(|| panic!("{shape}: never reached the cap"));
    let Some(grown) = alone::grown_since(before) else {
        return;
    };
    let cap_kib = (MAX_TOTAL / 1024) as u64;
    let ratio = grown as f64 / cap_kib as f64;
    let stats = r.stats();
    eprintln!(
        "files memory, {shape}: cap reached after {full_at} symbols, {pushed} pushed, \
         {} partial files held, {} evicted, {} refused; held {} KiB of {cap_kib} KiB; \
         peak RSS grew {grown} KiB = {ratio:.2}x the cap (ceiling {ceiling:.2}x)",
        r.pending(),
        stats.evicted,
        stats.memory_full,
        r.held_bytes() / 1024,
    );
    assert!(
        ratio <= ceiling,
        "{shape}: peak RSS grew {grown} KiB, {ratio:.2}x the cap of {cap_kib} KiB, \
         over the ceiling of {ceiling:.2}x"
    );
    drop(r);
}

/// Partial files of one `size`-byte symbol each: each file has two source
/// symbols, so one never makes a decoder.
fn one_symbol_files(size: u16) -> impl Iterator<Item = Sym> {
    (0u32..).map(move |file_id| (file_id, 2 * u64::from(size), size, 0))
}

/// File after file of one block of as many `size`-byte source symbols as a
/// block may hold, each sent but its last: never enough to decode.
fn many_symbol_files(size: u16) -> impl Iterator<Item = Sym> {
    let k = MAX_BLOCK_SYMBOLS;
    let file_len = u64::from(k) * u64::from(size);
    (0u32..).flat_map(move |file_id| (0..k - 1).map(move |esi| (file_id, file_len, size, esi)))
}

#[test]
fn partial_files_of_one_8_byte_symbol() {
    if alone("partial_files_of_one_8_byte_symbol") {
        fill(
            "partial files of one 8-byte symbol",
            3.6,
            one_symbol_files(8),
        );
    }
}

#[test]
fn partial_files_of_one_1400_byte_symbol() {
    if alone("partial_files_of_one_1400_byte_symbol") {
        fill(
            "partial files of one 1400-byte symbol",
            2.25,
            one_symbol_files(1400),
        );
    }
}

#[test]
fn files_of_many_8_byte_symbols() {
    if alone("files_of_many_8_byte_symbols") {
        fill("files of many 8-byte symbols", 0.45, many_symbol_files(8));
    }
}

#[test]
fn files_of_many_64_byte_symbols() {
    if alone("files_of_many_64_byte_symbols") {
        fill("files of many 64-byte symbols", 0.55, many_symbol_files(64));
    }
}

#[test]
fn files_of_many_1400_byte_symbols() {
    if alone("files_of_many_1400_byte_symbols") {
        fill(
            "files of many 1400-byte symbols",
            1.0,
            many_symbol_files(1400),
        );
    }
}
