//! What one block decode holds at its peak, measured as resident memory,
//! against what a receiver charges it ([`DecodeJob::working_bytes`]).
//!
//! Each shape runs alone in a child process (this test binary, that test
//! only, one thread; see `tests/alone`), with glibc's mmap threshold fixed
//! at 128 KiB through its environment (`MALLOC_MMAP_THRESHOLD_`), as
//! `mcsec recv` fixes it with mallopt. The child makes one block's decode
//! job (sources lost, repair symbols held), resets its high-water mark
//! (`/proc/self/clear_refs`), runs the decode, and asserts that its peak
//! resident memory grew by no more than the job's working bytes.
//! `cargo test --test decode_memory -- --nocapture` prints the figures
//! SECURITY.md quotes.

mod alone;

use mcsec::transfer::stream::{Decoded, Job, StreamEncoder, StreamReceiver};
use mcsec::{Body, KeyId, Origin, SenderId};

/// Set in the child process that runs one shape alone.
const ALONE: &str = "MCSEC_DECODE_MEMORY_ALONE";

/// Runs test `name` again, alone, with `mcsec recv`'s mmap threshold.
fn alone(name: &str) -> bool {
    alone::alone_with(name, ALONE, &[("MALLOC_MMAP_THRESHOLD_", "131072")])
}

/// One block of `k` symbols of `t` bytes with every `1/lost_every`-th
/// source symbol lost: decodes it and asserts its peak is charged.
fn decode(k: u32, t: u16, lost_every: u32) {
    // The frame size whose symbols are t bytes.
    let probe = StreamEncoder::with_block_symbols(0, "f", 1, [0; 32], 4096, k).unwrap();
    let frame = 4096 - usize::from(probe.layout().symbol_size()) + usize::from(t);
    let len = u64::from(k) * u64::from(t);
    let enc = StreamEncoder::with_block_symbols(0, "f", len, [0; 32], frame, k).unwrap();
    assert_eq!(enc.layout().symbol_size(), t);
    assert_eq!(enc.layout().blocks(), 1);
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let block = enc.encode_block(0, data.clone(), 0, 40).unwrap();
    let origin = Origin {
        key_id: KeyId(1),
        sender_id: SenderId([1; 16]),
    };
    let mut rx = StreamReceiver::default();
    let mut job = None;
    for i in 0..block.len() {
        let (esi, symbol) = block.symbol(i).unwrap();
        if esi < k && esi % lost_every == 0 {
            continue;
        }
        let Body::StreamSymbol(s) = enc.body(0, esi, symbol) else {
            unreachable!("a stream encoder makes stream symbols");
        };
        if let Some(Job::Decode(d)) = rx.push(0, origin, &s).unwrap().job {
            job = Some(d);
            break;
        }
    }
    drop(block);
    let job = job.expect("enough symbols for a decode");
    let (bytes, charged) = (job.bytes(), job.working_bytes());
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
    let before = alone::status_kib("VmRSS:");
    let decoded = job.run(|at, out| {
        out.copy_from_slice(&data[at as usize..][..out.len()]);
        Ok(())
    });
    let Some(grown) = alone::grown_since(before) else {
        return;
    };
    let Decoded::Block { data: got, .. } = decoded else {
        panic!("the decode failed");
    };
    assert_eq!(got, data);
    let grown = grown * 1024;
    eprintln!(
        "K={k} T={}, 1 in {lost_every} sources lost: peak +{grown} B, {:.2}x its block; charged {charged} B",
        enc.layout().symbol_size(),
        grown as f64 / bytes as f64
    );
    assert!(grown <= charged, "{grown} > {charged}");
}

#[test]
fn a_block_of_2048_symbols_with_a_tenth_lost() {
    if alone("a_block_of_2048_symbols_with_a_tenth_lost") {
        decode(2048, 1443, 10);
    }
}

#[test]
fn a_block_of_2048_symbols_with_a_third_lost() {
    if alone("a_block_of_2048_symbols_with_a_third_lost") {
        decode(2048, 1443, 3);
    }
}

#[test]
fn a_block_of_512_symbols() {
    if alone("a_block_of_512_symbols") {
        decode(512, 1443, 10);
    }
}

#[test]
fn the_largest_block_a_key_holder_may_send() {
    if alone("the_largest_block_a_key_holder_may_send") {
        // 8192 symbols of 512 bytes: 4 MiB, MAX_BLOCK_BYTES.
        decode(8192, 512, 10);
    }
}

#[test]
fn the_largest_block_with_a_third_lost() {
    if alone("the_largest_block_with_a_third_lost") {
        decode(8192, 512, 3);
    }
}

/// Many small symbols: what each symbol costs beside its bytes (a key
/// holder picks the symbol size).
#[test]
fn a_block_of_8192_symbols_of_16_bytes() {
    if alone("a_block_of_8192_symbols_of_16_bytes") {
        decode(8192, 16, 10);
    }
}

#[test]
fn a_block_of_8192_symbols_of_1_byte() {
    if alone("a_block_of_8192_symbols_of_1_byte") {
        decode(8192, 1, 3);
    }
}
