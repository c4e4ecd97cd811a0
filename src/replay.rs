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

    #[test]
    fn bits_from_a_previous_lap_of_the_ring_are_cleared() {
        // seq and seq + RING_BITS share a bit; the slide must clear it.
        let mut w = ReplayWindow::new();
        accept(&mut w, 3).unwrap();
        accept(&mut w, 3 + RING_BITS).unwrap();
        let mut w2 = ReplayWindow::new();
        accept(&mut w2, 3).unwrap();
        accept(&mut w2, 3 + RING_BITS - 1).unwrap();
        assert_eq!(w2.check(3 + RING_BITS), Ok(()));
        for step in 1..RING_BITS {
            let mut w = ReplayWindow::new();
            accept(&mut w, 0).unwrap();
            accept(&mut w, step).unwrap();
            // Every seq in the window that was not used is still free.
            for seq in step.saturating_sub(W - 1)..step {
                let expect = if seq == 0 {
                    Err(ReplayError::Duplicate)
                } else {
                    Ok(())
                };
                assert_eq!(w.check(seq), expect, "step {step} seq {seq}");
            }
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
        // A jump from 0 to the top clears the whole ring.
        let mut w = ReplayWindow::new();
        accept(&mut w, 0).unwrap();
        accept(&mut w, u64::MAX).unwrap();
        assert_eq!(w.check(u64::MAX - W + 1), Ok(()));
        assert_eq!(w.check(u64::MAX - (W - 1)), Ok(()));
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
