//! The bounded table of partial things every reassembling receiver keeps:
//! fragmented messages ([`crate::reassembly`]), variant-3 files
//! ([`crate::files`]) and variant-5 streams ([`crate::transfer::stream`]).
//!
//! Each entry is charged bytes against its owner's cap, and the table keeps
//! them ordered by their last activity, so the one to time out next and the
//! one to evict first are found in O(log n). The table keeps the sum of the
//! charges (`held`) equal to what its entries are charged, in one place:
//! its owners add and give back bytes through it and never count apart.
//! What to count (stats) and what to tell a caller when an entry goes is
//! the owner's: [`PartialTable::pop_expired`] and [`PartialTable::remove`]
//! hand the entry back.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::ops::{Deref, DerefMut};

/// Partial entries by key, charged and ordered by last activity.
pub(crate) struct PartialTable<K, V> {
    entries: HashMap<K, Slot<V>>,
    /// Every entry by the time of its last activity: the front is the next
    /// to time out, and the first to go when room is needed.
    by_activity: BTreeSet<(u64, K)>,
    /// The sum of every entry's cost.
    held: usize,
}

struct Slot<V> {
    value: V,
    /// What this entry is charged.
    cost: usize,
    /// When it last saw activity.
    last_us: u64,
}

impl<K, V> std::fmt::Debug for PartialTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialTable")
            .field("len", &self.entries.len())
            .field("held", &self.held)
            .finish()
    }
}

impl<K, V> Default for PartialTable<K, V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            by_activity: BTreeSet::new(),
            held: 0,
        }
    }
}

/// One entry, borrowed to change it and its charge together.
pub(crate) struct EntryMut<'a, V> {
    slot: &'a mut Slot<V>,
    held: &'a mut usize,
}

impl<V> EntryMut<'_, V> {
    /// Charges this entry `bytes` more.
    pub(crate) fn charge(&mut self, bytes: usize) {
        self.slot.cost = self.slot.cost.saturating_add(bytes);
        *self.held = self.held.saturating_add(bytes);
    }

    /// Gives back `bytes` of this entry's charge (at most all of it).
    #[cfg_attr(not(feature = "files"), allow(dead_code))]
    pub(crate) fn refund(&mut self, bytes: usize) {
        let bytes = bytes.min(self.slot.cost);
        self.slot.cost -= bytes;
        *self.held = self.held.saturating_sub(bytes);
    }

    /// What this entry is charged.
    #[cfg(test)]
    pub(crate) fn cost(&self) -> usize {
        self.slot.cost
    }
}

impl<V> Deref for EntryMut<'_, V> {
    type Target = V;
    fn deref(&self) -> &V {
        &self.slot.value
    }
}

impl<V> DerefMut for EntryMut<'_, V> {
    fn deref_mut(&mut self) -> &mut V {
        &mut self.slot.value
    }
}

impl<K: Copy + Eq + Hash + Ord, V> PartialTable<K, V> {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The sum of every entry's charge.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// How many entries the table has room for without growing.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// Whether `held` is the sum of the entries' charges and every entry is
    /// in the activity order once: what the table keeps true.
    #[cfg(test)]
    pub(crate) fn is_consistent(&self) -> bool {
        let sum = self.entries.values().map(|s| s.cost).sum::<usize>();
        sum == self.held
            && self.by_activity.len() == self.entries.len()
            && self
                .entries
                .iter()
                .all(|(k, s)| self.by_activity.contains(&(s.last_us, *k)))
    }

    /// The entry's value.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|s| &s.value)
    }

    /// The entry, to change it or its charge.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<EntryMut<'_, V>> {
        let slot = self.entries.get_mut(key)?;
        Some(EntryMut {
            slot,
            held: &mut self.held,
        })
    }

    /// Every entry's value, in no order.
    #[cfg_attr(not(feature = "files"), allow(dead_code))]
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.values().map(|s| &s.value)
    }

    /// Adds `value` under `key`, charged nothing yet, active at `now_us`;
    /// an entry already there is replaced and handed back with its charge
    /// given back.
    pub(crate) fn insert(&mut self, key: K, value: V, now_us: u64) -> Option<V> {
        let old = self.remove(&key);
        self.entries.insert(
            key,
            Slot {
                value,
                cost: 0,
                last_us: now_us,
            },
        );
        self.by_activity.insert((now_us, key));
        old
    }

    /// Marks `key` active at `now_us`: the last to time out, and the last
    /// to be evicted.
    pub(crate) fn touch(&mut self, key: &K, now_us: u64) {
        if let Some(slot) = self.entries.get_mut(key) {
            self.by_activity.remove(&(slot.last_us, *key));
            slot.last_us = now_us;
            self.by_activity.insert((now_us, *key));
        }
    }

    /// Takes `key`'s entry out, giving back its charge.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.entries.remove(key)?;
        self.held = self.held.saturating_sub(slot.cost);
        self.by_activity.remove(&(slot.last_us, *key));
        self.shrink();
        Some(slot.value)
    }

    /// Takes out the entry idle longest if it has been idle more than
    /// `timeout_us` at `now_us`. Call it until `None` to expire them all.
    pub(crate) fn pop_expired(&mut self, now_us: u64, timeout_us: u64) -> Option<(K, V)> {
        let &(last_us, key) = self.by_activity.first()?;
        if now_us.saturating_sub(last_us) <= timeout_us {
            return None;
        }
        self.remove(&key).map(|v| (key, v))
    }

    /// The key idle longest other than `keep`: the one to evict first.
    pub(crate) fn idlest_except(&self, keep: &K) -> Option<K> {
        self.by_activity
            .iter()
            .map(|&(_, key)| key)
            .find(|key| key != keep)
    }

    /// Gives back the table's memory once it is mostly empty: owners charge
    /// each entry its share of the table as it is when full, so a table left
    /// at the size a flood of entries grew it to would hold memory that
    /// nothing is charged for. Halving only below a quarter full keeps the
    /// rehashing to O(1) per entry, amortized.
    fn shrink(&mut self) {
        let len = self.entries.len();
        if self.entries.capacity() > 64 && len < self.entries.capacity() / 4 {
            self.entries.shrink_to(len * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PartialTable<u32, &'static str> {
        PartialTable::default()
    }

    fn charge(t: &mut PartialTable<u32, &'static str>, key: u32, bytes: usize) {
        if let Some(mut e) = t.get_mut(&key) {
            e.charge(bytes);
        }
    }

    fn refund(t: &mut PartialTable<u32, &'static str>, key: u32, bytes: usize) {
        if let Some(mut e) = t.get_mut(&key) {
            e.refund(bytes);
        }
    }

    #[test]
    fn held_is_the_sum_of_the_charges_through_every_change() {
        let mut t = table();
        t.insert(1, "a", 10);
        t.insert(2, "b", 20);
        charge(&mut t, 1, 100);
        charge(&mut t, 2, 50);
        assert_eq!(t.held(), 150);
        refund(&mut t, 1, 30);
        assert_eq!(t.held(), 120);
        // A refund never gives back more than the entry was charged.
        refund(&mut t, 2, 1000);
        assert_eq!(t.held(), 70);
        assert_eq!(t.get_mut(&2).map(|e| e.cost()), Some(0));
        assert_eq!(t.remove(&1), Some("a"));
        assert_eq!(t.held(), 0);
        // Replacing an entry gives back the old one's charge.
        charge(&mut t, 2, 5);
        assert_eq!(t.insert(2, "c", 30), Some("b"));
        assert_eq!((t.held(), t.len(), t.get(&2)), (0, 1, Some(&"c")));
        assert!(t.is_consistent());
    }

    #[test]
    fn entries_expire_and_are_evicted_idlest_first() {
        let mut t = table();
        t.insert(1, "a", 10);
        t.insert(2, "b", 20);
        t.insert(3, "c", 30);
        // 1 was active last: 2 is now the idlest.
        t.touch(&1, 40);
        assert_eq!(t.idlest_except(&0), Some(2));
        assert_eq!(t.idlest_except(&2), Some(3));
        // Idle more than 15 us at 46: 2 (26) and 3 (16), not 1 (6).
        assert_eq!(t.pop_expired(46, 15), Some((2, "b")));
        assert_eq!(t.pop_expired(46, 15), Some((3, "c")));
        assert_eq!(t.pop_expired(46, 15), None);
        assert_eq!(t.len(), 1);
        // Exactly the timeout is not past it.
        assert_eq!(t.pop_expired(55, 15), None);
        assert_eq!(t.pop_expired(56, 15), Some((1, "a")));
        assert_eq!(t.idlest_except(&0), None);
    }

    #[test]
    fn the_table_gives_back_its_memory_when_mostly_empty() {
        let mut t = table();
        for i in 0..4096 {
            t.insert(i, "x", u64::from(i));
        }
        let full = t.capacity();
        for i in 0..4090 {
            t.remove(&i);
        }
        assert!(t.capacity() < full / 16, "{} of {full}", t.capacity());
        assert_eq!(t.len(), 6);
    }
}
