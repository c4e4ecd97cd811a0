use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::*;
use crate::frame::SenderId;

const A: Origin = Origin {
    key_id: crate::KeyId(1),
    sender_id: SenderId([1; 16]),
};
const B: Origin = Origin {
    key_id: crate::KeyId(1),
    sender_id: SenderId([2; 16]),
};
const MS: u64 = 1000;
const NOW: u64 = 1_790_000_000_000_000;

fn file(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A sender's symbols for one pass, as owned (block, esi, bytes).
fn pass(enc: &StreamEncoder, data: &[u8], pass_no: u32, repair: u32) -> Vec<(u64, u32, Vec<u8>)> {
    let l = *enc.layout();
    let mut out = Vec::new();
    let blocks: Vec<u64> = (0..l.blocks()).collect();
    for window in blocks.chunks(WINDOW_BLOCKS) {
        let encoded: Vec<EncodedBlock> = window
            .iter()
            .map(|&b| {
                let start = l.block_offset(b) as usize;
                let end = start + l.block_data_len(b) as usize;
                enc.encode_block(b, data[start..end].to_vec(), pass_no, repair)
                    .unwrap()
            })
            .collect();
        for (i, esi, bytes) in interleave(&encoded) {
            out.push((encoded[i].block(), esi, bytes.to_vec()));
        }
    }
    out
}

/// An in-memory storage that runs every step and job at once.
#[derive(Default)]
struct Store {
    files: HashMap<Handle, Vec<u8>>,
    completed: Vec<(Completed, Vec<u8>)>,
    dropped: Vec<(Handle, DropReason)>,
    /// Each decode's reads of storage: (block, offset, length).
    reads: Vec<(u64, u64, usize)>,
}

impl Store {
    fn push(
        &mut self,
        rx: &mut StreamReceiver,
        now: u64,
        origin: Origin,
        enc: &StreamEncoder,
        (block, esi, bytes): &(u64, u32, Vec<u8>),
    ) -> Result<(), SymbolReject> {
        let Body::StreamSymbol(s) = enc.body(*block, *esi, bytes) else {
            unreachable!()
        };
        self.push_symbol(rx, now, origin, &s)
    }

    fn push_symbol(
        &mut self,
        rx: &mut StreamReceiver,
        now: u64,
        origin: Origin,
        s: &StreamSymbol<'_>,
    ) -> Result<(), SymbolReject> {
        let step = rx.push(now, origin, s);
        self.collect(rx);
        let step = step?;
        if let Some(new) = step.new_file {
            self.files
                .insert(new.handle, vec![0; new.layout.file_len() as usize]);
        }
        if let Some(w) = step.write {
            let f = self.files.get_mut(&w.handle).unwrap();
            f[w.offset as usize..w.offset as usize + w.len].copy_from_slice(&s.symbol[..w.len]);
        }
        let mut job = step.job;
        while let Some(j) = job.take() {
            job = self.run(rx, j);
        }
        self.collect(rx);
        Ok(())
    }

    fn run(&mut self, rx: &mut StreamReceiver, job: Job) -> Option<Job> {
        match job {
            Job::Decode(d) => {
                let f = self.files.get(&d.handle()).unwrap().clone();
                let (block, reads) = (d.block(), &mut self.reads);
                match d.run(|offset, buf| {
                    reads.push((block, offset, buf.len()));
                    buf.copy_from_slice(&f[offset as usize..offset as usize + buf.len()]);
                    Ok(())
                }) {
                    Decoded::Block {
                        handle,
                        block,
                        offset,
                        data,
                    } => {
                        let f = self.files.get_mut(&handle).unwrap();
                        f[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
                        rx.decoded(handle, block, true, Vec::new())
                    }
                    Decoded::Failed {
                        handle,
                        block,
                        repairs,
                    } => rx.decoded(handle, block, false, repairs),
                }
            }
            Job::Verify(v) => {
                let data = self.files.get(&v.handle).unwrap();
                let ok = sha(data) == v.sha256 && data.len() as u64 == v.file_len;
                if let Some(done) = rx.verified(v.handle, ok) {
                    let data = self.files.remove(&done.handle).unwrap();
                    self.completed.push((done, data));
                }
                None
            }
        }
    }

    fn collect(&mut self, rx: &mut StreamReceiver) {
        for (handle, why) in rx.take_dropped() {
            self.files.remove(&handle);
            self.dropped.push((handle, why));
        }
    }
}

fn encoder(id: u32, data: &[u8], k: u32) -> StreamEncoder {
    StreamEncoder::with_block_symbols(id, "dir/f.bin", data.len() as u64, sha(data), 1200, k)
        .unwrap()
}

#[test]
fn layout_edges() {
    // F a multiple of T and of K * T; a last block of one symbol; one symbol.
    let l = Layout::new(4000, 100, 10).unwrap();
    assert_eq!((l.blocks(), l.symbols_in(3), l.symbols_in(4)), (4, 10, 0));
    assert_eq!(l.block_data_len(3), 1000);
    let l = Layout::new(4001, 100, 10).unwrap();
    assert_eq!((l.blocks(), l.symbols_in(4)), (5, 1));
    assert_eq!(l.block_data_len(4), 1);
    assert_eq!(l.source_range(4, 0), Some((4000, 1)));
    assert_eq!(l.source_range(4, 1), None);
    assert_eq!(l.source_range(1, 3), Some((1300, 100)));
    let l = Layout::new(1, 100, 10).unwrap();
    assert_eq!(
        (l.blocks(), l.symbols_in(0), l.block_data_len(0)),
        (1, 1, 1)
    );
    assert!(Layout::new(0, 100, 10).is_none());
    assert!(Layout::new(10, 0, 10).is_none());
    assert!(Layout::new(10, 10, 0).is_none());
    assert!(Layout::new(10, 10, MAX_BLOCK_SYMBOLS + 1).is_none());
    // K x T at most MAX_BLOCK_BYTES, 4 MiB.
    assert!(Layout::new(10, 4096, 1025).is_none());
    assert!(Layout::new(10, 4096, 1024).is_some());
    assert!(Layout::new(10, 2049, 2048).is_none());
    assert!(Layout::new(10, 512, 8192).is_some());
}

#[test]
fn lossless_needs_no_decoding_and_writes_every_byte() {
    let data = file(100_000, 1);
    let enc = encoder(0, &data, 16);
    assert!(enc.layout().blocks() > 4, "several windows");
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    for s in pass(&enc, &data, 0, 10) {
        let _ = store.push(&mut rx, NOW, A, &enc, &s);
    }
    assert_eq!(store.completed.len(), 1);
    let (done, got) = &store.completed[0];
    assert_eq!(got, &data);
    assert_eq!(done.path, "dir/f.bin");
    assert_eq!(done.sha256, sha(&data));
    assert_eq!(rx.stats().decode_attempts, 0);
    assert_eq!(rx.stats().completed, 1);
    // The repair symbols that followed a block's last source symbol are extra.
    assert!(rx.stats().extra > 0);
    assert_eq!(rx.held_bytes(), 0);
    assert_eq!(rx.pending(), 0);
}

/// Full blocks are encoded from the file's shared plan, the short last
/// block from scratch; both give RFC 6330's symbols, those of an encoder
/// built for the block alone, in every pass.
#[test]
fn planned_blocks_give_the_same_symbols_as_unplanned_ones() {
    let data = file(200_000, 9);
    let enc = encoder(1, &data, 64);
    let l = *enc.layout();
    assert!(l.blocks() >= 3 && l.symbols_in(l.blocks() - 1) < 64);
    for pass_no in [0, 1, 3] {
        for b in 0..l.blocks() {
            let start = l.block_offset(b) as usize;
            let end = start + l.block_data_len(b) as usize;
            let got = enc
                .encode_block(b, data[start..end].to_vec(), pass_no, 20)
                .unwrap();
            let mut padded = data[start..end].to_vec();
            padded.resize(l.symbols_in(b) as usize * usize::from(l.symbol_size()), 0);
            let alone = SourceBlockEncoder::new(0, &l.oti(b), &padded);
            for i in 0..got.len() {
                let (esi, bytes) = got.symbol(i).unwrap();
                let want = if esi < l.symbols_in(b) {
                    alone.source_packets()[esi as usize].data().to_vec()
                } else {
                    alone.repair_packets(esi - l.symbols_in(b), 1)[0]
                        .data()
                        .to_vec()
                };
                assert_eq!(bytes, &want[..], "pass {pass_no} block {b} esi {esi}");
            }
        }
    }
    assert!(enc.plan.get().is_some());
}

#[test]
fn completes_through_loss_by_decoding() {
    let data = file(200_000, 2);
    let enc = encoder(7, &data, 64);
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    for (i, s) in pass(&enc, &data, 0, 40).into_iter().enumerate() {
        if i % 5 == 1 {
            continue; // a fifth lost
        }
        let _ = store.push(&mut rx, NOW, A, &enc, &s);
    }
    assert_eq!(store.completed.len(), 1, "{:?}", rx.stats());
    assert_eq!(store.completed[0].1, data);
    assert!(rx.stats().decode_attempts >= enc.layout().blocks() - 1);
    assert_eq!(rx.held_bytes(), 0);
    // A decode reads its block's stored symbols back in one read, from the
    // block's start to the end of its last stored symbol.
    let layout = *enc.layout();
    assert_eq!(store.reads.len() as u64, rx.stats().decode_attempts);
    for &(block, offset, len) in &store.reads {
        assert_eq!(offset, layout.block_offset(block), "{block}");
        assert!(len as u64 <= layout.block_data_len(block), "{block}: {len}");
        assert!(
            len as u64 > layout.block_data_len(block) / 2,
            "{block}: {len}"
        );
    }
}

#[test]
fn a_late_joiner_completes_from_a_later_pass_alone() {
    let data = file(50_000, 3);
    let enc = encoder(0, &data, 32);
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    let p2 = pass(&enc, &data, 2, 5);
    assert!(
        p2.iter()
            .all(|(b, esi, _)| *esi >= enc.layout().symbols_in(*b))
    );
    for s in &p2 {
        let _ = store.push(&mut rx, NOW, A, &enc, s);
    }
    assert_eq!(store.completed.len(), 1);
    assert_eq!(store.completed[0].1, data);
    // Pass 2's ESIs are new: none repeats pass 1's.
    let p1: std::collections::HashSet<_> = pass(&enc, &data, 1, 5)
        .into_iter()
        .map(|(b, e, _)| (b, e))
        .collect();
    assert!(p2.iter().all(|(b, e, _)| !p1.contains(&(*b, *e))));
}

#[test]
fn duplicates_and_reordering_deliver_once() {
    let data = file(30_000, 4);
    let enc = encoder(0, &data, 16);
    let mut symbols = pass(&enc, &data, 0, 20);
    symbols.reverse();
    let dup = symbols[3].clone();
    symbols.insert(5, dup);
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    for s in &symbols {
        let _ = store.push(&mut rx, NOW, A, &enc, s);
    }
    assert_eq!(rx.stats().duplicate, 1);
    assert_eq!(store.completed.len(), 1);
    assert_eq!(store.completed[0].1, data);
    // The carousel's next pass is extra, not a second file.
    for s in pass(&enc, &data, 1, 20) {
        assert_eq!(
            store.push(&mut rx, NOW, A, &enc, &s),
            Err(SymbolReject::Extra)
        );
    }
    assert_eq!(store.completed.len(), 1);
}

#[test]
fn another_sender_or_key_is_another_file() {
    let data = file(5_000, 5);
    let enc = encoder(0, &data, 16);
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    let other_key = Origin {
        key_id: crate::KeyId(2),
        ..A
    };
    for s in pass(&enc, &data, 0, 0) {
        store.push(&mut rx, NOW, A, &enc, &s).unwrap();
        store.push(&mut rx, NOW, B, &enc, &s).unwrap();
        store.push(&mut rx, NOW, other_key, &enc, &s).unwrap();
    }
    assert_eq!(store.completed.len(), 3);
}

#[test]
fn a_wrong_hash_is_counted_dropped_and_never_delivered() {
    let data = file(20_000, 6);
    let mut wrong = StreamEncoder::with_block_symbols(0, "x", 20_000, [9; 32], 1200, 16).unwrap();
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    for s in pass(&wrong, &data, 0, 0) {
        let _ = store.push(&mut rx, NOW, A, &wrong, &s);
    }
    assert_eq!(rx.stats().hash_mismatch, 1);
    assert!(store.completed.is_empty());
    assert_eq!(store.dropped.len(), 1);
    assert_eq!(store.dropped[0].1, DropReason::HashMismatch);
    assert!(store.files.is_empty(), "the storage is released");
    assert_eq!(rx.held_bytes(), 0);
    // A fresh pass starts the file again (and fails again).
    wrong = StreamEncoder::with_block_symbols(0, "x", 20_000, [9; 32], 1200, 16).unwrap();
    for s in pass(&wrong, &data, 1, 0) {
        let _ = store.push(&mut rx, NOW, A, &wrong, &s);
    }
    assert_eq!(rx.stats().hash_mismatch, 2);
}

#[test]
fn disagreeing_symbols_drop_the_file() {
    let data = file(20_000, 7);
    let enc = encoder(0, &data, 16);
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    let p = pass(&enc, &data, 0, 0);
    store.push(&mut rx, NOW, A, &enc, &p[0]).unwrap();
    assert_eq!(rx.pending(), 1);
    let other =
        StreamEncoder::with_block_symbols(0, "dir/g.bin", 20_000, sha(&data), 1200, 16).unwrap();
    // A path of the same length, so the same T: only the path differs.
    assert_eq!(other.layout(), enc.layout());
    let bytes = vec![0u8; usize::from(other.layout().symbol_size())];
    let Body::StreamSymbol(s) = other.body(0, 1, &bytes) else {
        unreachable!()
    };
    assert_eq!(
        store.push_symbol(&mut rx, NOW, A, &s),
        Err(SymbolReject::Conflict)
    );
    assert_eq!(rx.stats().conflict, 1);
    assert_eq!(rx.pending(), 0);
    assert_eq!(store.dropped, vec![(0, DropReason::Conflict)]);
    assert_eq!(rx.held_bytes(), 0);
}

fn crafted<'a>(
    file_len: u64,
    t: u16,
    k: u32,
    block: u64,
    esi: u32,
    path: &'a str,
    bytes: &'a [u8],
) -> StreamSymbol<'a> {
    StreamSymbol {
        file_id: 0,
        file_len,
        symbol_size: t,
        block_symbols: k,
        block,
        esi,
        sha256: [0; 32],
        path,
        symbol: bytes,
    }
}

#[test]
fn claims_over_the_limits_are_refused_before_anything_is_held() {
    let mut rx = StreamReceiver::new(StreamConfig {
        max_file: 1 << 20,
        ..StreamConfig::default()
    });
    let mut store = Store::default();
    let t = vec![0u8; 100];
    let long = "a".repeat(MAX_FILE_PATH + 1);
    let cases: Vec<(StreamSymbol<'_>, SymbolReject)> = vec![
        (
            crafted((1 << 20) + 1, 100, 10, 0, 0, "", &t),
            SymbolReject::Oversize,
        ),
        (crafted(0, 100, 10, 0, 0, "", &t), SymbolReject::Invalid),
        (crafted(1000, 0, 10, 0, 0, "", &[]), SymbolReject::Invalid),
        (crafted(1000, 100, 0, 0, 0, "", &t), SymbolReject::Invalid),
        (
            crafted(1000, 100, 8193, 0, 0, "", &t),
            SymbolReject::Invalid,
        ),
        (crafted(1000, 100, 10, 1, 0, "", &t), SymbolReject::Invalid),
        (
            crafted(1000, 100, 10, u64::MAX, 0, "", &t),
            SymbolReject::Invalid,
        ),
        (
            crafted(1000, 100, 10, 0, MAX_ESI + 1, "", &t),
            SymbolReject::Invalid,
        ),
        (
            crafted(1000, 100, 10, 0, 0, "", &t[..99]),
            SymbolReject::Invalid,
        ),
        (
            crafted(1000, 100, 10, 0, 0, &long, &t),
            SymbolReject::Invalid,
        ),
        (
            crafted(1000, 100, 10, 0, 0, "a/../b", &t),
            SymbolReject::Invalid,
        ),
        (
            crafted(1000, 100, 10, 0, 0, "..", &t),
            SymbolReject::Invalid,
        ),
    ];
    for (s, why) in &cases {
        assert_eq!(store.push_symbol(&mut rx, NOW, A, s), Err(*why), "{s:?}");
    }
    assert_eq!(rx.stats().oversize, 1);
    assert_eq!(rx.stats().invalid, cases.len() as u64 - 1);
    assert_eq!(rx.held_bytes(), 0);
    assert_eq!(rx.pending(), 0);
    // K * T over 4 MiB: once refused at 16 MiB, where a decode held 72.
    let big = vec![0u8; 4096];
    let s = crafted(1 << 20, 4096, 1025, 0, 0, "", &big);
    assert_eq!(
        store.push_symbol(&mut rx, NOW, A, &s),
        Err(SymbolReject::Invalid)
    );
}

#[test]
fn a_huge_claim_of_tiny_symbols_holds_little() {
    // 16 GiB of 1-byte symbols, one to a block: 2^34 blocks. Nothing may
    // be sized by the block count.
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    for block in [0, 1 << 33, (1 << 34) - 1] {
        let s = crafted(16 << 30, 1, 1, block, 1, "", &[7]);
        // A repair symbol: held, not written (storage is the caller's).
        let step = rx.push(NOW, A, &s).unwrap();
        assert!(step.write.is_none());
        store.collect(&mut rx);
    }
    assert!(rx.held_bytes() < 4096, "{}", rx.held_bytes());
}

#[test]
fn memory_stays_under_the_cap_and_the_idle_longest_goes() {
    let max_held = 200_000;
    let mut rx = StreamReceiver::new(StreamConfig {
        max_held,
        ..StreamConfig::default()
    });
    let mut store = Store::default();
    let sym = vec![1u8; 1000];
    // Repair symbols of many files, never enough to decode.
    for f in 0..50u32 {
        for esi in 0..5 {
            let mut s = crafted(1 << 20, 1000, 1000, 0, 1000 + esi, "", &sym);
            s.file_id = f;
            let _ = store.push_symbol(&mut rx, NOW + u64::from(f) * MS, A, &s);
            assert!(rx.held_bytes() <= max_held);
            assert!(rx.partial.is_consistent());
        }
    }
    assert!(rx.stats().evicted > 0);
    assert!(
        store
            .dropped
            .iter()
            .all(|(_, why)| *why == DropReason::Evicted)
    );
    // The newest files stayed, the oldest went.
    assert!(store.files.contains_key(&49));
    assert!(!store.files.contains_key(&0));
    // One file alone cannot take more than the cap.
    let mut rx = StreamReceiver::new(StreamConfig {
        max_held,
        ..StreamConfig::default()
    });
    let mut refused = 0;
    for esi in 0..1000 {
        let s = crafted(1 << 20, 1000, 1000, 0, 1000 + esi, "", &sym);
        if rx.push(NOW, A, &s).err() == Some(SymbolReject::MemoryFull) {
            refused += 1;
        }
        assert!(rx.held_bytes() <= max_held);
        assert!(rx.partial.is_consistent());
    }
    assert!(refused > 0);
    assert_eq!(rx.stats().memory_full, refused);
}

#[test]
fn too_many_files_evict_the_idle_longest() {
    let mut rx = StreamReceiver::new(StreamConfig {
        max_files: 3,
        ..StreamConfig::default()
    });
    let mut store = Store::default();
    let sym = vec![1u8; 100];
    for f in 0..5u32 {
        let mut s = crafted(1 << 20, 100, 100, 0, 0, "", &sym);
        s.file_id = f;
        store
            .push_symbol(&mut rx, NOW + u64::from(f), A, &s)
            .unwrap();
        assert!(rx.pending() <= 3);
    }
    assert_eq!(rx.stats().evicted, 2);
}

#[test]
fn idle_files_time_out_and_release_their_storage() {
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    let sym = vec![1u8; 100];
    let s = crafted(1 << 20, 100, 100, 0, 0, "", &sym);
    store.push_symbol(&mut rx, NOW, A, &s).unwrap();
    assert_eq!(rx.expire(NOW + 60_000 * MS), 0);
    assert_eq!(rx.expire(NOW + 60_001 * MS), 1);
    assert_eq!(rx.stats().timed_out, 1);
    assert_eq!(rx.take_dropped(), vec![(0, DropReason::TimedOut)]);
    assert_eq!(rx.held_bytes(), 0);
}

#[test]
fn a_restarted_receiver_resumes_from_stored_blocks() {
    let data = file(120_000, 8);
    let enc = encoder(0, &data, 16);
    let blocks = enc.layout().blocks();
    let symbols = pass(&enc, &data, 0, 10);
    // The first run stores the first half of the blocks, then stops.
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    for s in symbols.iter().filter(|s| s.0 < blocks / 2) {
        let _ = store.push(&mut rx, NOW, A, &enc, s);
    }
    let stored = store.files.remove(&0).unwrap();
    // The second run: the caller finds the stored blocks and says so.
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    let later = pass(&enc, &data, 1, 10);
    let first = later.iter().find(|s| s.0 >= blocks / 2).unwrap();
    store.push(&mut rx, NOW, A, &enc, first).unwrap();
    store.files.insert(0, stored);
    assert_eq!(rx.resume(0, 0..blocks / 2).map(|_| ()), None);
    assert_eq!(rx.stats().blocks_resumed, blocks / 2);
    for s in later.iter().filter(|s| s.0 >= blocks / 2) {
        let _ = store.push(&mut rx, NOW, A, &enc, s);
    }
    assert_eq!(store.completed.len(), 1);
    assert_eq!(store.completed[0].1, data);
    // Resuming blocks already done, or out of range, changes nothing.
    let mut rx = StreamReceiver::default();
    store.push(&mut rx, NOW, A, &enc, &symbols[0]).unwrap();
    let before = rx.stats().blocks_resumed;
    let _ = rx.resume(1, [blocks, blocks + 5, u64::MAX]);
    assert_eq!(rx.stats().blocks_resumed, before);
}

#[test]
fn resuming_every_block_asks_for_verification() {
    let data = file(10_000, 9);
    let enc = encoder(0, &data, 16);
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    let symbols = pass(&enc, &data, 0, 0);
    store.push(&mut rx, NOW, A, &enc, &symbols[0]).unwrap();
    store.files.insert(0, data.clone());
    let job = rx.resume(0, 0..enc.layout().blocks());
    assert!(matches!(job, Some(Job::Verify(_))));
    assert!(store.run(&mut rx, job.unwrap()).is_none());
    assert_eq!(store.completed.len(), 1);
}

#[test]
fn garbage_repairs_decode_to_a_hash_mismatch_and_are_never_delivered() {
    let mut rx = StreamReceiver::default();
    let mut store = Store::default();
    // K = 4 of 10-byte symbols, repair symbols of garbage: they solve (any
    // K independent symbols do) to the wrong bytes.
    for esi in 4..8u32 {
        let bytes = vec![esi as u8; 10];
        let s = crafted(40, 10, 4, 0, esi, "", &bytes);
        store.push_symbol(&mut rx, NOW, A, &s).unwrap();
    }
    assert_eq!(rx.stats().decode_attempts, 1);
    assert_eq!(rx.stats().hash_mismatch, 1);
    assert!(store.completed.is_empty());
    assert_eq!(rx.held_bytes(), 0);
}

#[test]
fn a_block_that_keeps_failing_gives_its_repairs_back() {
    let mut rx = StreamReceiver::default();
    let sym = vec![3u8; 100];
    let mut job = None;
    for esi in 10..20u32 {
        let s = crafted(1000, 100, 10, 0, esi, "", &sym);
        job = rx.push(NOW, A, &s).unwrap().job.or(job);
    }
    let Some(Job::Decode(mut d)) = job else {
        panic!("a decode job at K symbols")
    };
    let held = rx.held_bytes();
    for attempt in 1..=MAX_DECODE_ATTEMPTS {
        // As if the decode failed: the repairs come back, and the next
        // try waits for a few more symbols.
        let repairs = std::mem::take(&mut d.repairs);
        assert!(rx.decoded(0, 0, false, repairs).is_none());
        if attempt == MAX_DECODE_ATTEMPTS {
            break;
        }
        // Two more (K / 32, at least 2): none arrives during the decode.
        let mut next = None;
        for esi in 0..2u32 {
            let s = crafted(1000, 100, 10, 0, 100 * attempt + esi, "", &sym);
            next = rx.push(NOW, A, &s).unwrap().job.or(next);
        }
        let Some(Job::Decode(again)) = next else {
            panic!("another try after attempt {attempt}")
        };
        d = again;
    }
    assert_eq!(rx.stats().undecodable, 1);
    assert!(rx.held_bytes() < held, "{} >= {held}", rx.held_bytes());
    // The block starts over: K fresh symbols make a new job.
    let mut next = None;
    for esi in 0..10u32 {
        let s = crafted(1000, 100, 10, 0, 1000 + esi, "", &sym);
        next = rx.push(NOW, A, &s).unwrap().job.or(next);
    }
    assert!(matches!(next, Some(Job::Decode(_))));
}

#[test]
fn paths_are_made_safe_component_by_component() {
    assert_eq!(
        sanitize_path("photos/2026/a.jpg"),
        Some(vec!["photos".into(), "2026".into(), "a.jpg".into()])
    );
    assert_eq!(
        sanitize_path("/abs//./x"),
        Some(vec!["abs".into(), "x".into()])
    );
    assert_eq!(sanitize_path("a/../b"), None);
    assert_eq!(sanitize_path(".."), None);
    assert_eq!(sanitize_path(""), None);
    assert_eq!(sanitize_path("./"), None);
    assert_eq!(
        sanitize_path(".hidden/-rf/\u{202e}x"),
        Some(vec!["_hidden".into(), "_rf".into(), "_x".into()])
    );
}

#[test]
fn the_encoder_refuses_what_receivers_would() {
    assert_eq!(
        StreamEncoder::new(0, "x", 0, [0; 32], 1400).err(),
        Some(StreamSendError::Empty)
    );
    let long = "p".repeat(MAX_FILE_PATH + 1);
    assert_eq!(
        StreamEncoder::new(0, &long, 10, [0; 32], 1400).err(),
        Some(StreamSendError::PathTooLong(MAX_FILE_PATH + 1))
    );
    assert_eq!(
        StreamEncoder::new(0, "x", 10, [0; 32], 70).err(),
        Some(StreamSendError::FrameTooSmall(70))
    );
    let enc = StreamEncoder::new(0, "x", 10_000, [0; 32], 1400).unwrap();
    assert!(enc.encode_block(0, vec![0; 9_999], 0, 0).is_err());
    assert!(enc.encode_block(1, Vec::new(), 0, 0).is_err());
    // Every body fits the plaintext it was made for.
    let t = usize::from(enc.layout().symbol_size());
    let sym = vec![0u8; t];
    let body = enc.body(u64::MAX, MAX_ESI, &sym);
    assert!(body.encoded_len() <= 1400);
    // Large files get large blocks, within the limits.
    let enc = StreamEncoder::new(0, "x", 1 << 40, [0; 32], 1400).unwrap();
    assert_eq!(enc.layout().block_symbols(), DEFAULT_BLOCK_SYMBOLS);
    assert!(enc.layout().blocks() > 1 << 17);
}

#[test]
fn one_file_over_the_cap_sheds_repairs_and_still_completes() {
    // Loss a little above the repair rate leaves every block of the first
    // pass a few symbols short, each holding its repair symbols: far more
    // than the cap. The blocks furthest from decoding give theirs up, so
    // later passes complete the file instead of being refused for memory.
    let data = file(64 * 64 * 1100, 9);
    let enc = encoder(3, &data, 64);
    assert_eq!(enc.layout().blocks(), 64);
    let max_held = 60_000;
    let mut rx = StreamReceiver::new(StreamConfig {
        max_held,
        ..StreamConfig::default()
    });
    let mut store = Store::default();
    let mut passes = 0;
    for p in 0..4 {
        passes += 1;
        for (i, s) in pass(&enc, &data, p, 10).into_iter().enumerate() {
            if i % 8 == 3 {
                continue; // an eighth lost
            }
            let _ = store.push(&mut rx, NOW, A, &enc, &s);
            assert!(rx.held_bytes() <= max_held);
            assert!(rx.partial.is_consistent());
        }
        if !store.completed.is_empty() {
            break;
        }
    }
    assert_eq!(
        store.completed.len(),
        1,
        "{passes} passes: {:?}",
        rx.stats()
    );
    assert_eq!(store.completed[0].1, data);
    assert!(passes <= 3, "{passes} passes");
    assert!(rx.stats().memory_full > 0, "the cap was reached");
    assert_eq!(rx.held_bytes(), 0);
}

#[test]
fn a_repair_for_the_block_nearest_decoding_sheds_the_one_furthest() {
    // Two blocks of K = 20: block 1 holds 15 sources and a repair (needs
    // 4), block 0 only repairs. Once block 0's repairs fill the cap, one
    // more for block 0 is refused (block 1 needs less), but one for
    // block 1 takes block 0's place.
    let sym = vec![7u8; 1000];
    let mut rx = StreamReceiver::new(StreamConfig {
        max_held: 20_000,
        ..StreamConfig::default()
    });
    let file_len = 40 * 1000;
    for esi in 0..15 {
        rx.push(NOW, A, &crafted(file_len, 1000, 20, 1, esi, "", &sym))
            .unwrap();
    }
    rx.push(NOW, A, &crafted(file_len, 1000, 20, 1, 20, "", &sym))
        .unwrap();
    let mut esi = 20;
    while rx
        .push(NOW, A, &crafted(file_len, 1000, 20, 0, esi, "", &sym))
        .is_ok()
    {
        esi += 1;
        assert!(esi < 40, "the cap was never reached");
    }
    assert!(esi - 20 < 16, "block 0 still needs more than block 1");
    assert_eq!(rx.stats().memory_full, 1);
    // Block 1's next repair: block 0's are shed for it.
    rx.push(NOW, A, &crafted(file_len, 1000, 20, 1, 21, "", &sym))
        .unwrap();
    assert!(rx.stats().memory_full > 1, "block 0's repairs counted");
    assert!(rx.held_bytes() <= 20_000);
    assert!(rx.partial.is_consistent());
    // A repair for a block that has its K already (decoding) never
    // sheds another block's.
    let mut rx = StreamReceiver::new(StreamConfig {
        max_held: 20_000,
        ..StreamConfig::default()
    });
    let mut decoding = false;
    for esi in (0..15).chain(20..25) {
        let step = rx
            .push(NOW, A, &crafted(file_len, 1000, 20, 1, esi, "", &sym))
            .unwrap();
        decoding |= matches!(step.job, Some(Job::Decode(_)));
    }
    assert!(decoding, "block 1 has K: a decode job (never run here)");
    let mut esi = 20;
    while rx
        .push(NOW, A, &crafted(file_len, 1000, 20, 0, esi, "", &sym))
        .is_ok()
    {
        esi += 1;
    }
    let (held, full) = (rx.held_bytes(), rx.stats().memory_full);
    for e in 25..30 {
        let got = rx.push(NOW, A, &crafted(file_len, 1000, 20, 1, e, "", &sym));
        assert_eq!(got.err(), Some(SymbolReject::MemoryFull));
    }
    assert_eq!(rx.stats().memory_full, full + 5, "only the 5 refused");
    assert_eq!(rx.held_bytes(), held, "block 0 kept its repairs");
}

#[test]
fn a_failed_decode_retries_at_once_with_the_symbols_that_came_meanwhile() {
    // A decode is slow; the rest of the block's pass arrives while it
    // runs. If it fails, the retry counts from what the failed attempt
    // had, so it starts at once, not a pass later.
    let mut rx = StreamReceiver::default();
    let sym = vec![3u8; 100];
    let mut job = None;
    for esi in 10..20u32 {
        let s = crafted(1000, 100, 10, 0, esi, "", &sym);
        job = rx.push(NOW, A, &s).unwrap().job.or(job);
    }
    let Some(Job::Decode(mut d)) = job else {
        panic!("a decode job at K symbols")
    };
    for esi in 20..23u32 {
        let s = crafted(1000, 100, 10, 0, esi, "", &sym);
        assert!(
            rx.push(NOW, A, &s).unwrap().job.is_none(),
            "one decode at a time"
        );
    }
    let repairs = std::mem::take(&mut d.repairs);
    let Some(Job::Decode(again)) = rx.decoded(0, 0, false, repairs) else {
        panic!("a retry at once: K + 3 symbols are there")
    };
    assert_eq!(again.repairs.len(), 13);
    assert_eq!(rx.stats().decode_attempts, 2);
    // The retry failing too waits for a few more than it had.
    assert!(rx.decoded(0, 0, false, again.repairs).is_none());
    let mut next = None;
    for esi in 23..25u32 {
        let s = crafted(1000, 100, 10, 0, esi, "", &sym);
        next = rx.push(NOW, A, &s).unwrap().job.or(next);
    }
    assert!(matches!(next, Some(Job::Decode(_))));
}

/// The sender's blocks: 2048 symbols at an Ethernet MTU, and no more than
/// a receiver takes (4 MiB) at a jumbo frame's or the largest datagram's
/// symbol size, where 2048 symbols would be 17 or 127 MiB.
#[test]
fn the_sender_s_blocks_stay_within_what_a_receiver_takes() {
    for max_plaintext in [1400, 8900, 65_000] {
        let enc = StreamEncoder::new(0, "f.bin", 1 << 40, [0; 32], max_plaintext).unwrap();
        let l = enc.layout();
        let (k, t) = (u64::from(l.block_symbols()), u64::from(l.symbol_size()));
        assert!(k * t <= 4 << 20, "{max_plaintext}: {k} x {t}");
        assert_eq!(k, ((4 << 20) / t).min(2048), "{max_plaintext}");
        assert!(Layout::new(1 << 40, l.symbol_size(), l.block_symbols()).is_some());
    }
    let enc = StreamEncoder::new(0, "f.bin", 1 << 40, [0; 32], 1400).unwrap();
    assert_eq!(enc.layout().block_symbols(), 2048);
}
