//! Splitting large messages into [`Body::Fragment`]s and putting them back
//! together, under a memory and a time bound. Sans-IO: time goes in as an
//! argument.
//!
//! Fragments reach the [`Reassembler`] only after their frame authenticated,
//! so every byte here came from a key holder; but a key holder can be buggy
//! or hostile, so nothing it sends can make the receiver panic or hold more
//! than [`ReassemblyConfig::max_total`] bytes, or hold them for longer than
//! [`ReassemblyConfig::timeout`] after their last piece arrived.
//!
//! Memory is charged for what arrived, never for what a fragment announces:
//! a partial message holds the pieces it has received, so claiming a 1 MiB
//! message costs one piece, not a megabyte. What is charged is what the
//! allocator holds for them: a partial message keeps its pieces in one
//! buffer, grown by half again when full (never past the message's length)
//! and charged for its capacity, plus [`PARTIAL_OVERHEAD`] for its
//! bookkeeping and [`PIECE_OVERHEAD`] for each piece that arrived out of
//! order. When the cap is reached, the partial message that has waited
//! longest since its last piece makes room.
//!
//! Time is any monotonic clock in microseconds: a receiver should pass a
//! monotonic reading, so a wall-clock step cannot stretch the timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::body::{Body, FRAGMENT_MAX_OVERHEAD};
use crate::frame::Origin;
use crate::partial::PartialTable;

/// Default largest message reassembled: 1 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

/// Default cap on the bytes held by all partial messages together: 16 MiB.
pub const DEFAULT_MAX_TOTAL: usize = 16 << 20;

/// Bytes charged to every partial message on top of the buffer its pieces
/// are kept in: what it costs the allocator beyond that buffer. Without it a
/// key holder could pin millions of tiny partial messages under the byte
/// cap. With glibc's malloc on a 64-bit target, at worst: the partial
/// itself (96), its share of the hash table just after the table doubled
/// and while the old table is still there (113), its entry in the queue by
/// activity (93), the rounding of its buffer's allocation (31), and the
/// first node of its index of pieces that arrived out of order (112): 445.
/// `tests/reassembly_memory.rs` measures the resident memory of the worst
/// cases against this.
pub const PARTIAL_OVERHEAD: usize = 448;

/// Bytes charged to every piece that arrives out of order (after a gap, or
/// after another piece that did), on top of its bytes: its entry in the
/// message's index, a B-tree of at least 5 entries in 11 to a 112-byte leaf
/// node, and its share of the inner nodes. Pieces that arrive in order, as
/// a sender sends them, need no entry and are charged only their bytes.
pub const PIECE_OVERHEAD: usize = 32;

/// Default time a partial message may wait for its missing fragments.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The piece size for fragments that fit in a plaintext of `max_plaintext`
/// bytes, or `None` if not even one byte fits.
pub fn fragment_size(max_plaintext: usize) -> Option<usize> {
    max_plaintext
        .checked_sub(FRAGMENT_MAX_OVERHEAD)
        .filter(|s| *s > 0)
}

/// Splits `message` into fragment bodies that each encode to at most
/// `max_plaintext` bytes. `None` if the message is longer than u32::MAX
/// bytes or `max_plaintext` is too small for a fragment.
pub fn fragments(
    msg_id: u32,
    message: &[u8],
    max_plaintext: usize,
) -> Option<impl Iterator<Item = Body<'_>>> {
    let size = fragment_size(max_plaintext)?;
    let total_len = u32::try_from(message.len()).ok()?;
    let count = u32::try_from(message.len().div_ceil(size).max(1)).ok()?;
    let pieces = message.chunks(size).chain(
        // An empty message is one empty fragment.
        message.is_empty().then_some(&[][..]),
    );
    Some(
        pieces
            .zip(0..count)
            .map(move |(bytes, index)| Body::Fragment {
                msg_id,
                index,
                count,
                total_len,
                bytes,
            }),
    )
}

/// Limits for a [`Reassembler`]. `Default` gives the defaults above.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReassemblyConfig {
    /// Largest message accepted, in bytes.
    pub max_message: usize,
    /// Most bytes held by all partial messages together, counting the
    /// buffers their pieces are kept in, [`PARTIAL_OVERHEAD`] for each and
    /// [`PIECE_OVERHEAD`] for each piece that arrived out of order: what
    /// the allocator gives them, so resident memory stays within it (see
    /// SECURITY.md for the measured figure).
    pub max_total: usize,
    /// How long a partial message waits for its missing pieces.
    pub timeout: Duration,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        Self {
            max_message: DEFAULT_MAX_MESSAGE,
            max_total: DEFAULT_MAX_TOTAL,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why a fragment was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum FragmentReject {
    /// The message is larger than `max_message`.
    #[error("message too large to reassemble")]
    Oversize,
    /// Holding it would exceed `max_total`.
    #[error("reassembly memory full")]
    MemoryFull,
    /// Inconsistent with itself (index out of range, wrong piece length)
    /// or with earlier pieces of the same message (count, length, size);
    /// the partial message is dropped.
    #[error("inconsistent fragment")]
    Conflict,
    /// A piece already held.
    #[error("duplicate fragment")]
    Duplicate,
}

/// What the reassembler has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReassemblyStats {
    /// Messages completed.
    pub completed: u64,
    /// Partial messages dropped for taking longer than the timeout.
    pub timed_out: u64,
    /// Fragments of messages over `max_message`.
    pub oversize: u64,
    /// Fragments refused because the memory cap was reached and nothing
    /// else could make room.
    pub memory_full: u64,
    /// Partial messages dropped to make room for newer pieces.
    pub evicted: u64,
    /// Inconsistent fragments.
    pub conflict: u64,
    /// Pieces received twice.
    pub duplicate: u64,
}

struct Partial {
    count: u32,
    total_len: usize,
    /// Bytes in every piece but the last.
    piece: usize,
    /// The pieces received, in the order they arrived, each in a slot of
    /// `piece` bytes (the last piece's slot padded with zeros): one
    /// allocation per message, whatever the size of its pieces. Put in
    /// index order, in place, when the message completes.
    data: Vec<u8>,
    /// Pieces `0..prefix` arrived first and in order, each in the slot of
    /// its index: they need no entry in `slots`.
    prefix: u32,
    /// The slot of every other piece received, by index.
    slots: BTreeMap<u32, u32>,
}

impl Partial {
    /// The capacity `data` grows to so that one more slot fits: half as
    /// many slots again (so a message is copied about twice as it grows,
    /// and never holds more than a third of its buffer unused), never more
    /// slots than the message has.
    fn grown_capacity(&self) -> usize {
        let needed = self.data.len().saturating_add(self.piece);
        if needed <= self.data.capacity() {
            return self.data.capacity();
        }
        let count = usize::try_from(self.count).unwrap_or(usize::MAX);
        let slots = self.data.capacity() / self.piece.max(1);
        let grown = slots.saturating_add(slots / 2).min(count);
        grown.saturating_mul(self.piece).max(needed)
    }

    /// Pieces received.
    fn received(&self) -> usize {
        usize::try_from(self.prefix)
            .unwrap_or(usize::MAX)
            .saturating_add(self.slots.len())
    }

    fn has(&self, index: u32) -> bool {
        index < self.prefix || self.slots.contains_key(&index)
    }

    /// Whether piece `index` would need an entry in `slots`.
    fn needs_slot_entry(&self, index: u32) -> bool {
        !(self.slots.is_empty() && index == self.prefix)
    }

    /// Adds a piece in the next slot.
    fn add(&mut self, index: u32, bytes: &[u8]) {
        if self.needs_slot_entry(index) {
            let slot = u32::try_from(self.received()).unwrap_or(u32::MAX);
            self.slots.insert(index, slot);
        } else {
            self.prefix += 1;
        }
        self.data.extend_from_slice(bytes);
        // Only the last piece is shorter: pad its slot.
        let end = self.data.len() + self.piece - bytes.len().min(self.piece);
        self.data.resize(end, 0);
    }

    /// The whole message, once every piece is here: the slots put in index
    /// order in place, one cycle of the permutation at a time, so
    /// completing a message allocates nothing.
    fn into_message(mut self) -> Vec<u8> {
        if !self.slots.is_empty() {
            let piece = self.piece;
            // The prefix is in place already: only the rest moves.
            for start in self.prefix..self.count {
                let mut cur = start;
                // The slot holding index `cur`'s piece; mark `cur` done.
                while let Some(at) = self.slots.get_mut(&cur) {
                    let next = std::mem::replace(at, cur);
                    if next == cur || next == start {
                        break;
                    }
                    // Slot `cur` takes its piece from slot `next`, which
                    // takes what `cur` held: the start's piece, which
                    // travels along the cycle to the slot that wants it.
                    let (lo, hi) = (cur.min(next) as usize, cur.max(next) as usize);
                    let (left, right) = self.data.split_at_mut(hi * piece);
                    left[lo * piece..(lo + 1) * piece].swap_with_slice(&mut right[..piece]);
                    cur = next;
                }
            }
        }
        self.data.truncate(self.total_len);
        self.data
    }
}

/// Puts fragmented messages back together, keyed by (sender, msg_id).
#[derive(Default)]
pub struct Reassembler {
    config: ReassemblyConfig,
    /// Partial messages, charged against `max_total`, by their last piece.
    partial: PartialTable<(Origin, u32), Box<Partial>>,
    stats: ReassemblyStats,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("config", &self.config)
            .field("partial", &self.partial.len())
            .field("held", &self.partial.held())
            .field("stats", &self.stats)
            .finish()
    }
}

/// The piece size every non-last fragment of a message with this shape has,
/// derived from one fragment; `None` if the fragment cannot belong to a
/// well-formed message.
fn piece_size(index: u32, count: u32, total_len: usize, len: usize) -> Option<usize> {
    if count == 0 || index >= count {
        return None;
    }
    let others = usize::try_from(count - 1).ok()?;
    let piece = if index + 1 < count {
        len
    } else if others == 0 {
        total_len
    } else {
        let rest = total_len.checked_sub(len)?;
        if rest % others != 0 {
            return None;
        }
        rest / others
    };
    // The last piece holds 1..=piece bytes (0 only for an empty message).
    let last = total_len.checked_sub(piece.checked_mul(others)?)?;
    let ok = if total_len == 0 {
        count == 1 && len == 0
    } else {
        piece > 0 && last >= 1 && last <= piece && (index + 1 < count || len == last)
    };
    ok.then_some(piece)
}

impl Reassembler {
    /// A reassembler with these limits.
    pub fn new(config: ReassemblyConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    /// Bytes charged to partial messages (see [`PARTIAL_OVERHEAD`]).
    pub fn held_bytes(&self) -> usize {
        self.partial.held()
    }

    /// Partial messages held.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    fn reject(&mut self, why: FragmentReject) -> Result<Option<Vec<u8>>, FragmentReject> {
        let counter = match why {
            FragmentReject::Oversize => &mut self.stats.oversize,
            FragmentReject::MemoryFull => &mut self.stats.memory_full,
            FragmentReject::Conflict => &mut self.stats.conflict,
            FragmentReject::Duplicate => &mut self.stats.duplicate,
        };
        *counter = counter.saturating_add(1);
        Err(why)
    }

    fn drop_partial(&mut self, key: &(Origin, u32)) {
        self.partial.remove(key);
    }

    /// Drops partial messages whose last piece came more than the timeout
    /// ago; returns how many. O(log n) per partial dropped: call it as often
    /// as you like.
    pub fn expire(&mut self, now_us: u64) -> usize {
        let timeout_us = u64::try_from(self.config.timeout.as_micros()).unwrap_or(u64::MAX);
        let mut dropped = 0;
        while self.partial.pop_expired(now_us, timeout_us).is_some() {
            dropped += 1;
        }
        self.stats.timed_out = self.stats.timed_out.saturating_add(dropped as u64);
        dropped
    }

    /// Frees at least `needed` bytes under the cap by dropping the partials
    /// idle longest, other than `keep`. False if even that is not enough.
    fn make_room(&mut self, needed: usize, keep: &(Origin, u32)) -> bool {
        while self.partial.held().saturating_add(needed) > self.config.max_total {
            let Some(victim) = self.partial.idlest_except(keep) else {
                return false;
            };
            self.drop_partial(&victim);
            self.stats.evicted = self.stats.evicted.saturating_add(1);
        }
        true
    }

    /// Takes one fragment of an authenticated frame from `sender` (its key
    /// and sender session: pieces under another key are another message). Returns
    /// the whole message when this piece completes it, `None` while pieces
    /// are missing.
    // The arguments are Body::Fragment's fields, kept apart so the caller
    // does not rebuild a Body it just matched on.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        now_us: u64,
        sender: Origin,
        msg_id: u32,
        index: u32,
        count: u32,
        total_len: u32,
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, FragmentReject> {
        self.expire(now_us);
        let Ok(total_len) = usize::try_from(total_len) else {
            return self.reject(FragmentReject::Oversize);
        };
        if total_len > self.config.max_message {
            return self.reject(FragmentReject::Oversize);
        }
        let key = (sender, msg_id);
        let Some(piece) = piece_size(index, count, total_len, bytes.len()) else {
            self.drop_partial(&key);
            return self.reject(FragmentReject::Conflict);
        };
        let existing = self.partial.get(&key);
        if let Some(p) = existing
            && (p.count != count || p.total_len != total_len || p.piece != piece)
        {
            self.drop_partial(&key);
            return self.reject(FragmentReject::Conflict);
        }
        // A one-piece message needs no state.
        if count == 1 {
            return Ok(Some(bytes.to_vec()));
        }
        if existing.is_some_and(|p| p.has(index)) {
            return self.reject(FragmentReject::Duplicate);
        }
        let mut fresh = None;
        let p = match existing {
            Some(p) => p,
            None => fresh.insert(Box::new(Partial {
                count,
                total_len,
                piece,
                data: Vec::new(),
                prefix: 0,
                slots: BTreeMap::new(),
            })),
        };
        let capacity = p.grown_capacity();
        let growth = capacity - p.data.capacity();
        let charge = growth
            + if p.needs_slot_entry(index) {
                PIECE_OVERHEAD
            } else {
                0
            }
            + if fresh.is_some() { PARTIAL_OVERHEAD } else { 0 };
        if !self.make_room(charge, &key) {
            return self.reject(FragmentReject::MemoryFull);
        }
        if let Some(p) = fresh {
            self.partial.insert(key, p, now_us);
        }
        let reserved = self.partial.get_mut(&key).map(|mut p| {
            let more = capacity - p.data.len();
            (p.data.try_reserve_exact(more).is_ok(), p.received())
        });
        match reserved {
            None => return Ok(None),
            Some((false, received)) => {
                if received == 0 {
                    self.partial.remove(&key);
                }
                return self.reject(FragmentReject::MemoryFull);
            }
            Some((true, _)) => {}
        }
        self.partial.touch(&key, now_us);
        let Some(mut p) = self.partial.get_mut(&key) else {
            return Ok(None);
        };
        p.charge(charge);
        p.add(index, bytes);
        let complete = p.received() == usize::try_from(count).unwrap_or(usize::MAX);
        if !complete {
            return Ok(None);
        }
        let Some(done) = self.partial.remove(&key) else {
            return Ok(None);
        };
        let message = done.into_message();
        self.stats.completed = self.stats.completed.saturating_add(1);
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Origin = Origin {
        key_id: crate::KeyId(1),
        sender_id: crate::SenderId([1; 16]),
    };
    const B: Origin = Origin {
        key_id: crate::KeyId(1),
        sender_id: crate::SenderId([2; 16]),
    };
    const MS: u64 = 1000;

    type Frag = (u32, u32, u32, u32, Vec<u8>);

    fn split(msg_id: u32, msg: &[u8], max_plaintext: usize) -> Vec<Frag> {
        fragments(msg_id, msg, max_plaintext)
            .unwrap()
            .map(|b| match b {
                Body::Fragment {
                    msg_id,
                    index,
                    count,
                    total_len,
                    bytes,
                } => (msg_id, index, count, total_len, bytes.to_vec()),
                other => panic!("not a fragment: {other:?}"),
            })
            .collect()
    }

    fn push(
        r: &mut Reassembler,
        now: u64,
        s: Origin,
        f: &Frag,
    ) -> Result<Option<Vec<u8>>, FragmentReject> {
        r.push(now, s, f.0, f.1, f.2, f.3, &f.4)
    }

    fn message(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn fragments_fit_and_reassemble_in_order() {
        let msg = message(5000);
        let frags = split(9, &msg, 1416);
        assert_eq!(frags.len(), 4);
        for b in fragments(9, &msg, 1416).unwrap() {
            assert!(b.encoded_len() <= 1416);
        }
        let mut r = Reassembler::default();
        let mut out = None;
        for f in &frags {
            out = push(&mut r, 0, A, f).unwrap();
        }
        assert_eq!(out, Some(msg));
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.pending(), 0);
        assert_eq!(r.stats().completed, 1);
    }

    #[test]
    fn pieces_under_another_key_are_another_message() {
        // Found in review: "EVIL" under one key and "good" under another,
        // with the same sender ID and msg_id, came out as "EVILgood".
        let mut r = Reassembler::default();
        let other_key = Origin {
            key_id: crate::KeyId(2),
            ..A
        };
        assert_eq!(r.push(0, other_key, 7, 0, 2, 8, b"EVIL"), Ok(None));
        assert_eq!(r.push(0, A, 7, 1, 2, 8, b"good"), Ok(None));
        assert_eq!(
            r.push(0, A, 7, 0, 2, 8, b"real"),
            Ok(Some(b"realgood".to_vec()))
        );
    }

    #[test]
    fn out_of_order_and_interleaved_senders() {
        let m1 = message(3000);
        let m2: Vec<u8> = message(2900).iter().map(|b| b ^ 0x55).collect();
        let f1 = split(1, &m1, 500);
        let f2 = split(1, &m2, 500);
        let mut r = Reassembler::default();
        let mut done = Vec::new();
        for i in (0..f1.len()).rev() {
            if let Some(m) = push(&mut r, 0, A, &f1[i]).unwrap() {
                done.push(m);
            }
            if let Some(m) = push(&mut r, 0, B, &f2[i]).unwrap() {
                done.push(m);
            }
        }
        assert_eq!(done, vec![m1, m2]);
    }

    #[test]
    fn duplicate_piece_is_counted_and_harmless() {
        let msg = message(1000);
        let f = split(3, &msg, 300);
        let mut r = Reassembler::default();
        assert_eq!(push(&mut r, 0, A, &f[0]), Ok(None));
        assert_eq!(push(&mut r, 0, A, &f[0]), Err(FragmentReject::Duplicate));
        let mut out = None;
        for x in &f[1..] {
            out = push(&mut r, 0, A, x).unwrap();
        }
        assert_eq!(out, Some(msg));
        assert_eq!(r.stats().duplicate, 1);
    }

    #[test]
    fn missing_piece_times_out_and_frees_memory() {
        let msg = message(1000);
        let f = split(3, &msg, 300);
        let mut r = Reassembler::default();
        for x in &f[..f.len() - 1] {
            assert_eq!(push(&mut r, 0, A, x), Ok(None));
        }
        let held: Vec<usize> = f[..f.len() - 1].iter().map(|x| x.4.len()).collect();
        assert_eq!(held.len(), 3);
        assert_eq!(r.held_bytes(), charge(&held));
        assert_eq!(r.expire(9_999 * MS), 0);
        assert_eq!(r.expire(10_001 * MS), 1);
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.stats().timed_out, 1);
        // The late last piece starts a new partial; it does not complete.
        assert_eq!(push(&mut r, 10_002 * MS, A, &f[f.len() - 1]), Ok(None));
    }

    #[test]
    fn oversize_message_is_refused_before_allocating() {
        let mut r = Reassembler::new(ReassemblyConfig {
            max_message: 1000,
            ..ReassemblyConfig::default()
        });
        assert_eq!(
            r.push(0, A, 1, 0, 3, 1001, &[0; 400]),
            Err(FragmentReject::Oversize)
        );
        assert_eq!(
            r.push(0, A, 1, 0, u32::MAX, u32::MAX, &[0; 1]),
            Err(FragmentReject::Oversize)
        );
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.stats().oversize, 2);
    }

    /// The charge for up to three pieces of one size that arrived in
    /// order: their buffer grows a slot at a time up to three.
    fn charge(pieces: &[usize]) -> usize {
        assert!(pieces.len() <= 3 && pieces.windows(2).all(|w| w[0] == w[1]));
        PARTIAL_OVERHEAD + pieces.iter().sum::<usize>()
    }

    #[test]
    fn the_buffer_grows_by_half_and_is_charged_its_capacity() {
        // 10 pieces of 100 bytes, in order.
        let mut r = Reassembler::default();
        let mut held = Vec::new();
        for index in 0..9 {
            assert_eq!(r.push(0, A, 1, index, 10, 1000, &[1; 100]), Ok(None));
            held.push(r.held_bytes() - PARTIAL_OVERHEAD);
        }
        // Slots for 1, 2, 3, 4, then half as many again each time: 6, 9,
        // and then no more than the whole message.
        assert_eq!(
            held,
            [100, 200, 300, 400, 600, 600, 900, 900, 900],
            "capacity charged after each piece"
        );
        let whole = r.push(0, A, 1, 9, 10, 1000, &[1; 100]).unwrap().unwrap();
        assert_eq!(whole.len(), 1000);
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn the_table_gives_back_its_memory_when_mostly_empty() {
        let mut r = Reassembler::default();
        for id in 0..20_000 {
            assert_eq!(r.push(0, A, id, 0, 2, 2, b"x"), Ok(None));
        }
        assert!(r.partial.capacity() >= 20_000);
        assert_eq!(r.expire(20_000 * MS), 20_000);
        assert!(r.partial.capacity() <= 64, "{}", r.partial.capacity());
        // And completed messages leave no table behind either.
        for id in 0..20_000 {
            assert_eq!(r.push(30_000 * MS, A, id, 0, 2, 2, b"x"), Ok(None));
        }
        for id in 0..20_000 {
            assert!(r.push(30_000 * MS, A, id, 1, 2, 2, b"y").unwrap().is_some());
        }
        assert!(r.partial.capacity() <= 64, "{}", r.partial.capacity());
    }

    #[test]
    fn only_pieces_out_of_order_are_charged_an_index_entry() {
        let mut r = Reassembler::default();
        // 0 and 1 in order, then 3 after a gap, then 2: two entries.
        for (index, entries) in [(0, 0), (1, 0), (3, 1), (2, 2)] {
            assert_eq!(r.push(0, A, 1, index, 5, 50, &[index as u8; 10]), Ok(None));
            let bytes = r.partial.get(&(A, 1)).map_or(0, |p| p.data.capacity());
            assert_eq!(
                r.held_bytes(),
                PARTIAL_OVERHEAD + bytes + entries * PIECE_OVERHEAD,
                "after piece {index}"
            );
        }
        // The last piece completes it: the slots are put back in order.
        let whole = r.push(0, A, 1, 4, 5, 50, &[4; 10]).unwrap().unwrap();
        let expected: Vec<u8> = (0..5u8).flat_map(|i| [i; 10]).collect();
        assert_eq!(whole, expected);
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn a_short_last_piece_that_arrives_first_is_put_last() {
        // 3 pieces of 4 bytes and a last one of 1: the short one first,
        // in the middle and last, with the others in and out of order.
        let msg = message(13);
        let f = split(1, &msg, FRAGMENT_MAX_OVERHEAD + 4);
        assert_eq!(f.len(), 4);
        let orders = [
            [3, 0, 1, 2],
            [3, 2, 1, 0],
            [1, 3, 0, 2],
            [0, 3, 2, 1],
            [2, 0, 3, 1],
        ];
        for order in orders {
            let mut r = Reassembler::default();
            let mut out = None;
            for i in order {
                out = push(&mut r, 0, A, &f[i]).unwrap();
            }
            assert_eq!(out.as_ref(), Some(&msg), "{order:?}");
        }
    }

    #[test]
    fn a_full_cap_evicts_the_partial_idle_longest() {
        let mut r = Reassembler::new(ReassemblyConfig {
            max_total: 2 * charge(&[500]),
            ..ReassemblyConfig::default()
        });
        assert_eq!(r.push(0, A, 1, 0, 2, 1000, &[0; 500]), Ok(None));
        assert_eq!(r.push(MS, A, 2, 0, 2, 1000, &[0; 500]), Ok(None));
        // A third message makes room by dropping message 1, idle longest.
        assert_eq!(r.push(2 * MS, B, 3, 0, 2, 1000, &[0; 500]), Ok(None));
        assert_eq!(r.stats().evicted, 1);
        assert_eq!(r.pending(), 2);
        assert!(
            r.push(3 * MS, A, 2, 1, 2, 1000, &[0; 500])
                .unwrap()
                .is_some()
        );
        // Message 1's second piece now starts over; it cannot complete.
        assert_eq!(r.push(4 * MS, A, 1, 1, 2, 1000, &[0; 500]), Ok(None));
        assert!(r.held_bytes() <= 2 * charge(&[500]));
    }

    #[test]
    fn a_piece_bigger_than_the_cap_is_refused() {
        let mut r = Reassembler::new(ReassemblyConfig {
            max_total: charge(&[100]),
            ..ReassemblyConfig::default()
        });
        assert_eq!(
            r.push(0, A, 1, 0, 2, 1000, &[0; 500]),
            Err(FragmentReject::MemoryFull)
        );
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.stats().memory_full, 1);
    }

    /// Regression: a partial message used to be charged (and allocated)
    /// its announced length on its first piece, so 16 one-piece claims of
    /// "1 MiB" blocked every fragmented message for the whole timeout.
    #[test]
    fn announced_sizes_cost_nothing_until_the_bytes_arrive() {
        let mut r = Reassembler::default();
        for id in 0..1000 {
            let index = 0;
            let count = 754;
            assert_eq!(
                r.push(0, A, id, index, count, 1 << 20, &[7; 1391]),
                Ok(None)
            );
        }
        assert!(r.held_bytes() < 1000 * (1391 + PIECE_OVERHEAD + PARTIAL_OVERHEAD) + 1);
        assert_eq!(r.stats().memory_full, 0);
        // An honest message still gets through.
        let msg = message(5000);
        let mut out = None;
        for f in &split(1, &msg, 1416) {
            out = push(&mut r, MS, B, f).unwrap();
        }
        assert_eq!(out, Some(msg));
    }

    #[test]
    fn the_timeout_runs_from_the_last_piece() {
        let msg = message(4000);
        let f = split(4, &msg, 1100);
        assert!(f.len() >= 4);
        let mut r = Reassembler::default();
        let mut out = None;
        // One piece every 6 s: 18 s in all, each gap within the 10 s timeout.
        for (i, x) in f.iter().enumerate() {
            out = push(&mut r, i as u64 * 6_000 * MS, A, x).unwrap();
        }
        assert_eq!(out, Some(msg));
        assert_eq!(r.stats().timed_out, 0);
    }

    #[test]
    fn conflicting_count_or_length_drops_the_partial() {
        let mut r = Reassembler::default();
        assert_eq!(r.push(0, A, 1, 0, 3, 1000, &[0; 400]), Ok(None));
        assert_eq!(
            r.push(0, A, 1, 1, 4, 1000, &[0; 400]),
            Err(FragmentReject::Conflict)
        );
        assert_eq!(r.pending(), 0);
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.push(0, A, 2, 0, 3, 1000, &[0; 400]), Ok(None));
        assert_eq!(
            r.push(0, A, 2, 1, 3, 1200, &[0; 400]),
            Err(FragmentReject::Conflict)
        );
        assert_eq!(r.stats().conflict, 2);
    }

    #[test]
    fn malformed_shapes_are_conflicts() {
        let mut r = Reassembler::default();
        // index past count, zero count, a last piece longer than the others,
        // a middle piece whose size leaves no room for the last.
        for (index, count, total, len) in [
            (3, 3, 900, 300),
            (0, 0, 10, 10),
            (2, 3, 900, 500),
            (0, 3, 900, 450),
            (0, 1, 10, 9),
            (0, 2, 0, 0),
        ] {
            assert_eq!(
                r.push(0, A, 7, index, count, total, &vec![0; len]),
                Err(FragmentReject::Conflict),
                "{index} {count} {total} {len}"
            );
        }
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn empty_and_single_piece_messages() {
        let mut r = Reassembler::default();
        let f = split(1, b"", 100);
        assert_eq!(f.len(), 1);
        assert_eq!(push(&mut r, 0, A, &f[0]), Ok(Some(Vec::new())));
        let f = split(2, b"hello", 100);
        assert_eq!(push(&mut r, 0, A, &f[0]), Ok(Some(b"hello".to_vec())));
        assert!(fragments(0, b"x", FRAGMENT_MAX_OVERHEAD).is_none());
    }

    #[test]
    fn tiny_partials_are_charged_their_overhead() {
        let mut r = Reassembler::new(ReassemblyConfig {
            max_total: 100 * charge(&[1]),
            ..ReassemblyConfig::default()
        });
        for id in 0..1000 {
            assert_eq!(r.push(0, A, id, 0, 2, 2, b"x"), Ok(None));
        }
        assert_eq!(r.pending(), 100);
        assert_eq!(r.stats().evicted, 900);
        assert_eq!(r.held_bytes(), 100 * charge(&[1]));
    }

    #[test]
    fn expiry_skips_completed_and_reused_keys() {
        let mut r = Reassembler::default();
        // msg 1 completes; msg 2 stays partial; msg 1's key is reused later.
        assert_eq!(r.push(0, A, 1, 0, 2, 2, b"a"), Ok(None));
        assert!(r.push(0, A, 1, 1, 2, 2, b"b").unwrap().is_some());
        assert_eq!(r.push(0, A, 2, 0, 2, 2, b"a"), Ok(None));
        assert_eq!(r.push(5_000 * MS, A, 1, 0, 2, 2, b"a"), Ok(None));
        // At 10.5 s only msg 2 is past the timeout.
        assert_eq!(r.expire(10_500 * MS), 1);
        assert_eq!(r.pending(), 1);
        assert_eq!(r.expire(15_001 * MS), 1);
        assert_eq!(r.pending(), 0);
        assert_eq!(r.held_bytes(), 0);
        // Many completed messages do not make the queue grow without bound.
        for id in 10..10_000 {
            r.push(20_000 * MS, B, id, 0, 2, 2, b"a").unwrap();
            r.push(20_000 * MS, B, id, 1, 2, 2, b"b").unwrap();
        }
        assert!(r.partial.is_consistent());
    }

    #[test]
    fn any_split_in_any_order_round_trips() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &(0usize..20_000, 25usize..1500, any::<u64>()),
                |(len, max_plaintext, shuffle)| {
                    let msg = message(len);
                    let mut frags = split(5, &msg, max_plaintext);
                    for b in fragments(5, &msg, max_plaintext).unwrap() {
                        prop_assert!(b.encoded_len() <= max_plaintext);
                    }
                    // A cheap deterministic shuffle.
                    let n = frags.len();
                    for i in 0..n {
                        let j = (shuffle.rotate_left(i as u32) as usize) % n;
                        frags.swap(i, j);
                    }
                    let mut r = Reassembler::default();
                    let mut done = Vec::new();
                    for f in &frags {
                        if let Some(m) = push(&mut r, 0, A, f).unwrap() {
                            done.push(m);
                        }
                    }
                    prop_assert_eq!(done, vec![msg]);
                    prop_assert_eq!(r.held_bytes(), 0);
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn never_panics_on_arbitrary_fragments() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &proptest::collection::vec(
                    (0u32..4, 0u32..6, 0u32..6, 0u32..3000, 0usize..1200),
                    1..60,
                ),
                |frags| {
                    let mut r = Reassembler::new(ReassemblyConfig {
                        max_total: 5000,
                        timeout: Duration::from_millis(500),
                        ..ReassemblyConfig::default()
                    });
                    for (t, (id, index, count, total, len)) in frags.into_iter().enumerate() {
                        let t = t as u64 % 7;
                        let _ = r.push(t * 100_000, A, id, index, count, total, &vec![1; len]);
                        prop_assert!(r.held_bytes() <= 5000);
                        prop_assert!(r.partial.is_consistent());
                    }
                    Ok(())
                },
            )
            .unwrap();
    }
}
