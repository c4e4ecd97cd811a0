//! The replay window: a sliding bitmap of the sequence numbers a sender has
//! used (RFC 6479).
//!
//! [`ReplayWindow::check`] runs before the AEAD is opened and changes
//! nothing; [`ReplayWindow::commit`] runs only after the frame authenticated.
//! A forged frame can therefore never move the window.
//!
//! The bitmap is a ring of 64-bit words. When the newest seq moves into a new
//! word, the words it skips are cleared; one word is always kept spare so the
//! word holding the newest seq never overlaps the oldest one still in the
//! window. Both operations are O(1) but for clearing at most
//! [`RING_WORDS`] words on a jump.

/// Words in the ring. A power of two, so `% RING_WORDS` is a mask.
pub const RING_WORDS: usize = 32;

const WORD_BITS: u64 = u64::BITS as u64;

/// Bits in the ring.
const RING_BITS: u64 = RING_WORDS as u64 * WORD_BITS;

/// How far behind the newest accepted seq a frame may be and still be
/// accepted once: seqs `newest - (REPLAY_WINDOW_FRAMES - 1) ..= newest`.
/// PROTOCOL.md asks for at least 1024; one word of the ring is the spare
/// that RFC 6479 keeps, which leaves 1984.
pub const REPLAY_WINDOW_FRAMES: u64 = RING_BITS - WORD_BITS;

/// Why [`ReplayWindow::check`] refused a seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// The seq was accepted before.
    Duplicate,
    /// The seq is older than the window reaches; it may or may not have been
    /// seen, so it is refused.
    TooOld,
}

/// One sender's replay window.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// The highest seq committed, or `None` before the first.
    newest: Option<u64>,
    ring: [u64; RING_WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window: every seq passes `check`.
    pub fn new() -> Self {
        Self {
            newest: None,
            ring: [0; RING_WORDS],
        }
    }

    /// The highest seq committed so far.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// Would `seq` be accepted? Changes nothing.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        let Some(newest) = self.newest else {
            return Ok(());
        };
        if seq > newest {
            return Ok(());
        }
        // seq <= newest, so this cannot underflow.
        if newest - seq >= REPLAY_WINDOW_FRAMES {
            return Err(ReplayError::TooOld);
        }
        let (word, mask) = position(seq);
        if self.ring[word] & mask != 0 {
            Err(ReplayError::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Records `seq` as used. Call only after `check(seq)` passed and the
    /// frame authenticated; on a seq that `check` refuses it does nothing
    /// wrong but also nothing useful.
    pub fn commit(&mut self, seq: u64) {
        match self.newest {
            Some(newest) if seq <= newest => {
                if newest - seq >= REPLAY_WINDOW_FRAMES {
                    return;
                }
            }
            Some(newest) => {
                // Clear every word that the window slides onto: those after
                // newest's word up to and including seq's, at most the whole
                // ring. The subtraction is of two quotients with
                // seq > newest, so it cannot underflow.
                let newest_word = newest / WORD_BITS;
                let steps = (seq / WORD_BITS - newest_word).min(RING_WORDS as u64);
                for step in 1..=steps {
                    // Word indexes are taken mod RING_WORDS; wrapping_add
                    // keeps that correct even for words near u64::MAX / 64.
                    let word = newest_word.wrapping_add(step) % RING_WORDS as u64;
                    self.ring[word as usize] = 0;
                }
                self.newest = Some(seq);
            }
            None => {
                self.ring = [0; RING_WORDS];
                self.newest = Some(seq);
            }
        }
        let (word, mask) = position(seq);
        self.ring[word] |= mask;
    }
}

/// The ring word and bit mask for `seq`.
fn position(seq: u64) -> (usize, u64) {
    let bit = seq % RING_BITS;
    ((bit / WORD_BITS) as usize, 1 << (bit % WORD_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    const W: u64 = REPLAY_WINDOW_FRAMES;

    fn accept(w: &mut ReplayWindow, seq: u64) -> Result<(), ReplayError> {
        w.check(seq)?;
        w.commit(seq);
        Ok(())
    }

    #[test]
    fn window_is_at_least_what_protocol_requires() {
        const { assert!(REPLAY_WINDOW_FRAMES >= 1024) };
        assert!(RING_WORDS.is_power_of_two());
    }

    /// Walks the window's edges in the manner of boringtun's
    /// `test_replay_counter`.
    #[test]
    fn replay_counter_edges() {
        let mut w = ReplayWindow::new();
        assert_eq!(accept(&mut w, 0), Ok(()));
        assert_eq!(accept(&mut w, 0), Err(ReplayError::Duplicate));
        assert_eq!(accept(&mut w, 1), Ok(()));
        assert_eq!(accept(&mut w, 1), Err(ReplayError::Duplicate));
        assert_eq!(accept(&mut w, 9), Ok(()));
        assert_eq!(accept(&mut w, 8), Ok(()));
        assert_eq!(accept(&mut w, 7), Ok(()));
        assert_eq!(accept(&mut w, 7), Err(ReplayError::Duplicate));
        assert_eq!(accept(&mut w, W + 9 - 1), Ok(()));
        // newest = W + 8: seq 9 is exactly W - 1 behind, the oldest allowed.
        assert_eq!(accept(&mut w, 9), Err(ReplayError::Duplicate));
        assert_eq!(accept(&mut w, 10), Ok(()));
        assert_eq!(accept(&mut w, 8), Err(ReplayError::TooOld));
        assert_eq!(accept(&mut w, 2 * W + 100), Ok(()));
        assert_eq!(accept(&mut w, W + 8), Err(ReplayError::TooOld));
        assert_eq!(accept(&mut w, W + 101), Ok(()));
        assert_eq!(accept(&mut w, W + 100), Err(ReplayError::TooOld));
        assert_eq!(accept(&mut w, W + 101), Err(ReplayError::Duplicate));
        // Every seq still in the window can be taken once after a jump.
        let mut w = ReplayWindow::new();
        accept(&mut w, 5 * W).unwrap();
        for seq in (4 * W + 1..5 * W).rev() {
            assert_eq!(accept(&mut w, seq), Ok(()), "seq {seq}");
        }
        assert_eq!(accept(&mut w, 4 * W), Err(ReplayError::TooOld));
        for seq in 4 * W + 1..=5 * W {
            assert_eq!(
                accept(&mut w, seq),
                Err(ReplayError::Duplicate),
                "seq {seq}"
            );
        }
    }

    /// Every seq in the window below `newest`, with what `check` must say
    /// given that exactly the seqs in `used` were accepted.
    fn assert_window(w: &ReplayWindow, used: impl Fn(u64) -> bool, what: &str) {
        let newest = w.newest().unwrap();
        for seq in newest.saturating_sub(W - 1)..newest {
            let expect = if used(seq) {
                Err(ReplayError::Duplicate)
            } else {
                Ok(())
            };
            assert_eq!(w.check(seq), expect, "{what}: newest {newest} seq {seq}");
        }
    }

    #[test]
    fn bits_from_a_previous_lap_of_the_ring_are_cleared() {
        // Every bit of the ring set: seqs 0..RING_BITS, all accepted. Any
        // seq above them shares its bit with one of them.
        let mut full = ReplayWindow::new();
        for seq in 0..RING_BITS {
            accept(&mut full, seq).unwrap();
        }
        // Forward in small strides through three laps, leaving gaps: each
        // slide must clear the bits the window moves onto, and only those.
        for stride in [7, 100] {
            let used = |seq: u64| seq < RING_BITS || (seq - RING_BITS).is_multiple_of(stride);
            let mut w = full.clone();
            for seq in (RING_BITS..4 * RING_BITS).step_by(stride as usize) {
                accept(&mut w, seq).unwrap();
                assert_window(&w, used, "walk");
            }
        }
        // One jump of every length up to two laps: the seqs skipped over,
        // which share bits with the full lap before, are all free.
        for step in 1..=2 * RING_BITS {
            let mut w = full.clone();
            let newest = RING_BITS - 1 + step;
            accept(&mut w, newest).unwrap();
            assert_window(&w, |seq| seq < RING_BITS, "jump");
        }
        // A single stale bit: 3, then 3 + RING_BITS is inside the window
        // from newest = 3 + RING_BITS + 1 to 3 + RING_BITS + W - 1.
        for newest in 3 + RING_BITS + 1..3 + RING_BITS + W {
            let mut w = ReplayWindow::new();
            accept(&mut w, 3).unwrap();
            accept(&mut w, newest).unwrap();
            assert_eq!(w.check(3 + RING_BITS), Ok(()), "newest {newest}");
        }
    }

    #[test]
    fn top_of_the_sequence_space_is_sound() {
        let mut w = ReplayWindow::new();
        accept(&mut w, u64::MAX - 5).unwrap();
        accept(&mut w, u64::MAX).unwrap();
        assert_eq!(accept(&mut w, u64::MAX), Err(ReplayError::Duplicate));
        assert_eq!(accept(&mut w, u64::MAX - 5), Err(ReplayError::Duplicate));
        assert_eq!(accept(&mut w, u64::MAX - 1), Ok(()));
        assert_eq!(accept(&mut w, u64::MAX - W), Err(ReplayError::TooOld));
        assert_eq!(accept(&mut w, 0), Err(ReplayError::TooOld));
        // A jump from a full ring to the top clears the whole ring: every
        // seq in the new window shares its bit with one of 0..RING_BITS.
        let mut w = ReplayWindow::new();
        for seq in 0..RING_BITS {
            accept(&mut w, seq).unwrap();
        }
        accept(&mut w, u64::MAX).unwrap();
        assert_window(&w, |_| false, "jump to the top");
        assert_eq!(w.check(u64::MAX - W), Err(ReplayError::TooOld));
    }

    /// The specification the window implements, without any cleverness.
    struct Model {
        seen: BTreeSet<u64>,
    }

    impl Model {
        fn accept(&mut self, seq: u64) -> bool {
            if let Some(&newest) = self.seen.last()
                && seq <= newest
                && newest - seq >= W
            {
                return false;
            }
            self.seen.insert(seq)
        }
    }

    fn seq_strategy() -> impl Strategy<Value = Vec<u64>> {
        // Mix small steps near a moving point with big jumps and the top of
        // the space, so edges and ring laps are all exercised.
        let op = prop_oneof![
            4 => 0u64..3 * RING_BITS,
            1 => any::<u64>(),
            1 => u64::MAX - 3 * RING_BITS..=u64::MAX,
        ];
        prop::collection::vec(op, 1..400)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn agrees_with_a_set_model(seqs in seq_strategy()) {
            let mut w = ReplayWindow::new();
            let mut model = Model { seen: BTreeSet::new() };
            for seq in seqs {
                let want = model.accept(seq);
                let got = accept(&mut w, seq).is_ok();
                prop_assert_eq!(got, want, "seq {}", seq);
            }
        }

        #[test]
        fn check_never_changes_state(seqs in seq_strategy(), probe in any::<u64>()) {
            let mut w = ReplayWindow::new();
            for seq in seqs {
                let _ = accept(&mut w, seq);
            }
            let before = w.clone();
            let _ = w.check(probe);
            prop_assert_eq!(before.newest, w.newest);
            prop_assert_eq!(before.ring, w.ring);
        }
    }
}
