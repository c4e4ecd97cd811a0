//! Loss, duplicates and reordering per sender, from the seqs that arrive.
//!
//! Every frame carries its sender's seq, one more than the last. A receiver
//! that notes the seq of every frame that authenticated can tell, per
//! (key ID, sender ID):
//!
//! - **lost**: seqs that never arrived. A gap is only counted once the
//!   sender is [`LossConfig::reorder_allowance`] seqs further, or has been
//!   idle for [`LossConfig::idle_us`]: until then a late frame may still fill
//!   it. A frame that arrives after its seq was counted lost (but within
//!   the window) takes it back: it counts as reordered instead.
//! - **duplicates**: a seq that arrived before.
//! - **reordered**: a frame that arrived below the newest seq seen.
//!
//! Seqs before the first frame seen from a sender (a receiver that joined
//! late) and after the last (the sender's last frames, lost) cannot be
//! told from frames never sent, and are not counted.
//!
//! Sans-IO like the rest of the core: seqs and a monotonic time in
//! microseconds go in, counts come out. The table is bounded
//! ([`LossConfig::max_senders`], like the opener's sender table): a new
//! sender in a full table takes the place of the longest idle one, whose
//! open gaps are settled (counted lost) first.

use std::collections::HashMap;

use crate::{KeyId, SenderId};

/// Words in a sender's bitmap of seqs seen.
const WORDS: usize = 32;
/// Seqs the bitmap remembers below the newest, the newest included.
pub const WINDOW: u64 = (WORDS as u64) * 64;

/// Settings of a [`LossTracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LossConfig {
    /// How many seqs further a sender must be before a gap is counted lost
    /// (at most [`WINDOW`] / 2).
    pub reorder_allowance: u64,
    /// A sender silent this long (microseconds) has its open gaps counted
    /// lost.
    pub idle_us: u64,
    /// Most senders tracked at once.
    pub max_senders: usize,
}

/// Default [`LossConfig::reorder_allowance`].
pub const DEFAULT_REORDER_ALLOWANCE: u64 = 64;
/// Default [`LossConfig::idle_us`]: one second.
pub const DEFAULT_IDLE_US: u64 = 1_000_000;

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            reorder_allowance: DEFAULT_REORDER_ALLOWANCE,
            idle_us: DEFAULT_IDLE_US,
            max_senders: crate::seal::DEFAULT_MAX_SENDERS,
        }
    }
}

/// Counts for one sender, or summed over all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LossCounts {
    /// Distinct seqs that arrived.
    pub received: u64,
    /// Seqs that never arrived (settled gaps).
    pub lost: u64,
    /// Seqs that arrived again.
    pub duplicates: u64,
    /// Frames that arrived below the newest seq seen.
    pub reordered: u64,
}

impl LossCounts {
    /// Lost as a share of the frames settled (received plus lost), 0 to 1.
    pub fn loss_ratio(&self) -> f64 {
        let total = self.received.saturating_add(self.lost);
        if total == 0 {
            0.0
        } else {
            self.lost as f64 / total as f64
        }
    }
}

/// What [`LossTracker::arrived`] made of a seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Above the newest seq (or the sender's first).
    InOrder,
    /// Below the newest, not seen before.
    Reordered,
    /// Seen before.
    Duplicate,
}

struct SenderLoss {
    /// The first seq seen: nothing before it is counted.
    first: u64,
    newest: u64,
    /// Every seq below this is decided: arrived, or counted lost.
    settled: u64,
    last_us: u64,
    /// Bit `s % WINDOW` is set if seq `s` (within the window) arrived.
    seen: [u64; WORDS],
    counts: LossCounts,
}

impl SenderLoss {
    fn new(seq: u64, now_us: u64) -> Self {
        let mut s = Self {
            first: seq,
            newest: seq,
            settled: seq,
            last_us: now_us,
            seen: [0; WORDS],
            counts: LossCounts::default(),
        };
        s.set(seq);
        s.counts.received = 1;
        s
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn in_window(&self, seq: u64) -> bool {
        seq <= self.newest && self.newest - seq < WINDOW
    }

    fn is_set(&self, seq: u64) -> bool {
        let (w, m) = Self::bit(seq);
        self.in_window(seq) && self.seen.get(w).is_some_and(|x| x & m != 0)
    }

    fn set(&mut self, seq: u64) {
        let (w, m) = Self::bit(seq);
        if let Some(x) = self.seen.get_mut(w) {
            *x |= m;
        }
    }

    fn clear(&mut self, seq: u64) {
        let (w, m) = Self::bit(seq);
        if let Some(x) = self.seen.get_mut(w) {
            *x &= !m;
        }
    }

    /// Decides every seq below `bound` (at most `newest + 1`): those not
    /// seen are lost. Returns how many were counted lost.
    fn settle_to(&mut self, bound: u64) -> u64 {
        let bound = bound.min(self.newest.saturating_add(1));
        let mut lost = 0;
        while self.settled < bound {
            if !self.is_set(self.settled) {
                lost += 1;
            }
            self.settled += 1;
        }
        self.counts.lost = self.counts.lost.saturating_add(lost);
        lost
    }

    /// Moves the newest seq up to `seq`, settling what falls behind by the
    /// allowance first. Returns seqs counted lost.
    fn advance(&mut self, seq: u64, allowance: u64) -> u64 {
        let bound = seq.saturating_add(1).saturating_sub(allowance);
        // What the old window can decide.
        let mut lost = self.settle_to(bound);
        // Seqs skipped over (newest, seq) that are already past the
        // allowance: lost without a look, none of them arrived.
        if bound > self.settled {
            let skipped = bound - self.settled;
            lost += skipped;
            self.counts.lost = self.counts.lost.saturating_add(skipped);
            self.settled = bound;
        }
        // Clear the bits the window now reuses: (old newest, seq].
        let gap = seq - self.newest;
        if gap >= WINDOW {
            self.seen = [0; WORDS];
        } else {
            let mut s = self.newest + 1;
            while s <= seq {
                self.clear(s);
                s += 1;
            }
        }
        self.newest = seq;
        self.set(seq);
        lost
    }
}

/// Per-sender loss, duplicate and reorder counts (see the module's
/// documentation).
pub struct LossTracker {
    config: LossConfig,
    senders: HashMap<(KeyId, SenderId), SenderLoss, foldhash::fast::RandomState>,
    totals: LossCounts,
    evicted: u64,
}

impl std::fmt::Debug for LossTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossTracker")
            .field("config", &self.config)
            .field("senders", &self.senders.len())
            .field("totals", &self.totals)
            .finish()
    }
}

impl Default for LossTracker {
    fn default() -> Self {
        Self::new(LossConfig::default())
    }
}

impl LossTracker {
    /// A tracker with `config` (its allowance capped at half the window).
    pub fn new(mut config: LossConfig) -> Self {
        config.reorder_allowance = config.reorder_allowance.clamp(1, WINDOW / 2);
        config.max_senders = config.max_senders.max(1);
        Self {
            config,
            senders: HashMap::default(),
            totals: LossCounts::default(),
            evicted: 0,
        }
    }

    /// Counts summed over every sender, those evicted included.
    pub fn totals(&self) -> LossCounts {
        self.totals
    }

    /// Senders tracked now.
    pub fn sender_count(&self) -> usize {
        self.senders.len()
    }

    /// Senders forgotten to make room.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// One sender's counts, if it is tracked.
    pub fn sender(&self, key_id: KeyId, sender_id: SenderId) -> Option<LossCounts> {
        self.senders.get(&(key_id, sender_id)).map(|s| s.counts)
    }

    /// Every tracked sender and its counts.
    pub fn senders(&self) -> impl Iterator<Item = ((KeyId, SenderId), LossCounts)> + '_ {
        self.senders.iter().map(|(id, s)| (*id, s.counts))
    }

    /// A frame with this seq arrived from this sender at `now_us`
    /// (monotonic microseconds) and proved authentic.
    pub fn arrived(
        &mut self,
        key_id: KeyId,
        sender_id: SenderId,
        seq: u64,
        now_us: u64,
    ) -> Arrival {
        let id = (key_id, sender_id);
        if !self.senders.contains_key(&id) {
            if self.senders.len() >= self.config.max_senders {
                self.evict_one();
            }
            self.senders.insert(id, SenderLoss::new(seq, now_us));
            self.totals.received = self.totals.received.saturating_add(1);
            return Arrival::InOrder;
        }
        let allowance = self.config.reorder_allowance;
        let Some(s) = self.senders.get_mut(&id) else {
            return Arrival::InOrder;
        };
        s.last_us = s.last_us.max(now_us);
        let before = s.counts;
        let arrival = if seq > s.newest {
            s.advance(seq, allowance);
            s.counts.received = s.counts.received.saturating_add(1);
            Arrival::InOrder
        } else if s.is_set(seq) {
            s.counts.duplicates = s.counts.duplicates.saturating_add(1);
            Arrival::Duplicate
        } else {
            if s.in_window(seq) {
                s.set(seq);
                if seq < s.settled && seq >= s.first {
                    // Counted lost already: it was only late.
                    s.counts.lost = s.counts.lost.saturating_sub(1);
                }
            }
            s.counts.received = s.counts.received.saturating_add(1);
            s.counts.reordered = s.counts.reordered.saturating_add(1);
            Arrival::Reordered
        };
        let after = s.counts;
        self.add_delta(before, after);
        arrival
    }

    /// A datagram whose header claims this seq was refused as a replay
    /// before its AEAD was checked. If the sender is tracked and the seq
    /// arrived before, it counts as a duplicate; returns whether it did.
    /// The header is not authenticated: a copy of a header made by anyone
    /// counts as well.
    pub fn replayed(&mut self, key_id: KeyId, sender_id: SenderId, seq: u64) -> bool {
        let Some(s) = self.senders.get_mut(&(key_id, sender_id)) else {
            return false;
        };
        if !s.is_set(seq) {
            return false;
        }
        s.counts.duplicates = s.counts.duplicates.saturating_add(1);
        self.totals.duplicates = self.totals.duplicates.saturating_add(1);
        true
    }

    /// Counts the open gaps of senders idle since before `now_us - idle`
    /// as lost. Cheap enough to call often; every tracked sender is looked at.
    pub fn expire(&mut self, now_us: u64) {
        let idle = self.config.idle_us;
        let mut lost = 0u64;
        for s in self.senders.values_mut() {
            if now_us.saturating_sub(s.last_us) >= idle && s.settled <= s.newest {
                lost = lost.saturating_add(s.settle_to(s.newest.saturating_add(1)));
            }
        }
        self.totals.lost = self.totals.lost.saturating_add(lost);
    }

    /// Counts every open gap as lost: before the counts are read for the
    /// last time.
    pub fn settle_all(&mut self) {
        let mut lost = 0u64;
        for s in self.senders.values_mut() {
            lost = lost.saturating_add(s.settle_to(s.newest.saturating_add(1)));
        }
        self.totals.lost = self.totals.lost.saturating_add(lost);
    }

    fn evict_one(&mut self) {
        let oldest = self
            .senders
            .iter()
            .min_by_key(|(_, s)| s.last_us)
            .map(|(id, _)| *id);
        if let Some(id) = oldest
            && let Some(mut s) = self.senders.remove(&id)
        {
            let lost = s.settle_to(s.newest.saturating_add(1));
            self.totals.lost = self.totals.lost.saturating_add(lost);
            self.evicted = self.evicted.saturating_add(1);
        }
    }

    fn add_delta(&mut self, before: LossCounts, after: LossCounts) {
        let t = &mut self.totals;
        t.received = t
            .received
            .saturating_add(after.received.saturating_sub(before.received));
        t.duplicates = t
            .duplicates
            .saturating_add(after.duplicates.saturating_sub(before.duplicates));
        t.reordered = t
            .reordered
            .saturating_add(after.reordered.saturating_sub(before.reordered));
        // Lost goes up (gaps settled) or down by one (a late frame).
        t.lost = t
            .lost
            .saturating_add(after.lost.saturating_sub(before.lost))
            .saturating_sub(before.lost.saturating_sub(after.lost));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: KeyId = KeyId(0x0102_0304);
    const S: SenderId = SenderId([9; 16]);

    fn tracker(allowance: u64) -> LossTracker {
        LossTracker::new(LossConfig {
            reorder_allowance: allowance,
            idle_us: 1_000_000,
            max_senders: 4,
        })
    }

    fn feed(t: &mut LossTracker, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            t.arrived(K, S, seq, 0);
        }
    }

    #[test]
    fn every_fifth_seq_missing_is_a_fifth_lost() {
        let mut t = tracker(8);
        feed(&mut t, (0..1000).filter(|s| s % 5 != 2));
        t.settle_all();
        let c = t.totals();
        assert_eq!(c.received, 800);
        assert_eq!(c.lost, 200);
        assert_eq!((c.duplicates, c.reordered), (0, 0));
        assert!((c.loss_ratio() - 0.2).abs() < 1e-9);
        assert_eq!(t.sender(K, S), Some(c));
    }

    #[test]
    fn a_gap_is_lost_only_past_the_allowance_or_when_idle() {
        let mut t = tracker(4);
        feed(&mut t, [10, 11, 13]);
        assert_eq!(t.totals().lost, 0, "12 may still come");
        feed(&mut t, [14, 15]);
        assert_eq!(t.totals().lost, 0, "the sender is 3 further");
        feed(&mut t, [16]);
        assert_eq!(t.totals().lost, 1, "4 further: 12 is lost");
        // A gap at the top, then silence.
        feed(&mut t, [18]);
        t.expire(999_999);
        assert_eq!(t.totals().lost, 1, "not idle yet");
        t.expire(1_000_000);
        assert_eq!(t.totals().lost, 2, "idle: 17 is lost");
        // Nothing before the first seq is counted.
        assert_eq!(t.totals().received, 7);
    }

    #[test]
    fn late_frames_are_reordered_and_take_their_loss_back() {
        let mut t = tracker(2);
        feed(&mut t, [0, 2, 1]);
        let c = t.totals();
        assert_eq!((c.lost, c.reordered, c.received), (0, 1, 3));
        feed(&mut t, [5, 6, 7, 8]);
        assert_eq!(t.totals().lost, 2, "3 and 4 counted lost");
        feed(&mut t, [4]);
        let c = t.totals();
        assert_eq!((c.lost, c.reordered, c.received), (1, 2, 8));
        assert_eq!(t.arrived(K, S, 4, 0), Arrival::Duplicate);
        assert_eq!(t.totals().duplicates, 1);
        assert_eq!(t.totals().lost, 1);
    }

    #[test]
    fn duplicates_are_counted_once_per_copy_and_never_as_received() {
        let mut t = tracker(8);
        assert_eq!(t.arrived(K, S, 0, 0), Arrival::InOrder);
        assert_eq!(t.arrived(K, S, 0, 0), Arrival::Duplicate);
        assert_eq!(t.arrived(K, S, 1, 0), Arrival::InOrder);
        assert_eq!(t.arrived(K, S, 1, 0), Arrival::Duplicate);
        assert!(t.replayed(K, S, 0));
        assert!(!t.replayed(K, S, 7), "never seen: not a duplicate");
        assert!(!t.replayed(K, SenderId([1; 16]), 0), "unknown sender");
        let c = t.totals();
        assert_eq!((c.received, c.duplicates, c.lost), (2, 3, 0));
    }

    #[test]
    fn a_huge_jump_counts_its_gap_without_walking_it() {
        let mut t = tracker(64);
        feed(&mut t, [0, 1_000_000_000, 1_000_000_001]);
        t.settle_all();
        assert_eq!(t.totals().lost, 999_999_999);
        // The window was cleared: an old bit does not alias a new seq.
        assert_eq!(
            t.arrived(K, S, 1_000_000_000 - WINDOW + 2, 0),
            Arrival::Reordered
        );
        assert_eq!(t.totals().lost, 999_999_998);
        // Seq 0's bit is the one of this seq, in the window: it did not
        // arrive, so it is late, not a duplicate.
        let alias = (1_000_000_001 / WINDOW) * WINDOW;
        assert_eq!(t.arrived(K, S, alias, 0), Arrival::Reordered);
    }

    #[test]
    fn seqs_far_below_the_window_are_reordered_not_aliased() {
        let mut t = tracker(64);
        feed(&mut t, 0..(WINDOW * 2));
        // seq 5 shares its bit with WINDOW + 5, which arrived; but it is
        // far below the window: not a duplicate, and no loss to take back.
        assert_eq!(t.arrived(K, S, 5, 0), Arrival::Reordered);
        assert_eq!(t.totals().lost, 0);
    }

    #[test]
    fn senders_are_counted_apart_and_the_table_is_bounded() {
        let mut t = tracker(2);
        for i in 0..6u8 {
            let sender = SenderId([i; 16]);
            for seq in [0, 2, 3, 4] {
                t.arrived(K, sender, seq, u64::from(i));
            }
        }
        assert_eq!(t.sender_count(), 4);
        assert_eq!(t.evicted(), 2);
        t.settle_all();
        // Evicted senders' loss stays in the totals.
        assert_eq!(t.totals().lost, 6);
        assert_eq!(t.totals().received, 24);
        assert_eq!(t.sender(K, SenderId([5; 16])).map(|c| c.lost), Some(1));
        assert_eq!(t.sender(K, SenderId([0; 16])), None, "oldest evicted");
        // Another key, same sender ID: another sender.
        t.arrived(KeyId(9), SenderId([5; 16]), 100, 10);
        assert_eq!(
            t.sender(KeyId(9), SenderId([5; 16])).map(|c| c.received),
            Some(1)
        );
    }
}
