//! Per-sender counts for `recv`'s reports: messages delivered, and the
//! loss counters of [`mcsec::loss`], summed per sender ID (over its key
//! IDs). Reports show the [`TOP_SENDERS`] senders with the most frames,
//! and say how many there were in all.
//!
//! Bounded: one entry per sender the loss tracker tracks (at most its
//! `max_senders`), so key holders inventing sender IDs cannot grow it
//! without limit. Metrics stay aggregate: a sender ID is random per
//! session, so a label per sender would add series on every restart.

use std::collections::HashMap;
use std::net::SocketAddr;

use mcsec::SenderId;
use mcsec::loss::LossTracker;

/// How many senders a report lists.
pub(crate) const TOP_SENDERS: usize = 8;

/// One sender's counts, or their growth over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) delivered: u64,
    pub(crate) received: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) reordered: u64,
}

impl Counts {
    /// Frames that authenticated, plus those lost: what the sender sent
    /// since we first heard it.
    fn traffic(&self) -> u64 {
        self.received.saturating_add(self.lost)
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            delivered: self.delivered.saturating_sub(before.delivered),
            received: self.received.saturating_sub(before.received),
            lost: self.lost.saturating_sub(before.lost),
            duplicates: self.duplicates.saturating_sub(before.duplicates),
            reordered: self.reordered.saturating_sub(before.reordered),
        }
    }
}

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) sender: SenderId,
    /// Where its last delivered message came from.
    pub(crate) from: Option<SocketAddr>,
    pub(crate) counts: Counts,
}

impl Row {
    pub(crate) fn json(&self) -> serde_json::Value {
        let c = &self.counts;
        let loss_percent = if c.traffic() == 0 {
            0.0
        } else {
            c.lost as f64 * 100.0 / c.traffic() as f64
        };
        serde_json::json!({
            "sender": self.sender.to_string(),
            "from": self.from.map(|f| f.to_string()),
            "delivered": c.delivered,
            "frames_received": c.received,
            "lost": c.lost,
            "loss_percent": loss_percent,
            "duplicates": c.duplicates,
            "reordered": c.reordered,
        })
    }

    /// `sender 1a2b3c4d from 127.0.0.1:40000: 83 delivered, lost 17 of
    /// 100 frames (17.0%), 2 duplicate, 1 reordered` (worded unlike the
    /// totals line, which scripts look for).
    pub(crate) fn words(&self) -> String {
        let c = &self.counts;
        let from = self.from.map_or_else(String::new, |f| format!(" from {f}"));
        let mut s = format!(
            "sender {}{from}: {} delivered",
            self.sender.short(),
            c.delivered
        );
        if c.traffic() > 0 {
            s.push_str(&format!(
                ", lost {} of {} frames ({:.1}%)",
                c.lost,
                c.traffic(),
                c.lost as f64 * 100.0 / c.traffic() as f64
            ));
        }
        for (n, what) in [(c.duplicates, "duplicate"), (c.reordered, "reordered")] {
            if n > 0 {
                s.push_str(&format!(", {n} {what}"));
            }
        }
        s
    }
}

/// What recv knows per sender beyond the loss tracker.
#[derive(Debug, Clone, Copy)]
struct Seen {
    delivered: u64,
    from: SocketAddr,
}

/// Per-sender delivered counts and the last interval's snapshot.
#[derive(Debug, Default)]
pub(crate) struct Senders {
    seen: HashMap<SenderId, Seen>,
    /// Counts at the last interval report.
    last: HashMap<SenderId, Counts>,
}

impl Senders {
    /// A message from `sender` was delivered; its last datagram came from
    /// `from`. Call [`Self::bound`] after each datagram.
    pub(crate) fn delivered(&mut self, sender: SenderId, from: SocketAddr) {
        let seen = self
            .seen
            .entry(sender)
            .or_insert(Seen { delivered: 0, from });
        seen.delivered = seen.delivered.saturating_add(1);
        seen.from = from;
    }

    /// Forgets senders the loss tracker no longer tracks, once the table
    /// holds twice as many as it does: a delivered message adds at most
    /// one sender, so the table stays within twice the tracker's bound.
    pub(crate) fn bound(&mut self, loss: &LossTracker) {
        if self.seen.len() > loss.sender_count().saturating_mul(2).max(TOP_SENDERS) {
            let tracked = tracked(loss);
            self.seen.retain(|id, _| tracked.contains_key(id));
            self.last.retain(|id, _| tracked.contains_key(id));
        }
    }

    /// Every sender's counts now.
    fn all(&self, loss: &LossTracker) -> HashMap<SenderId, Counts> {
        let mut all = tracked(loss);
        for (id, seen) in &self.seen {
            all.entry(*id).or_default().delivered = seen.delivered;
        }
        all
    }

    fn rows(&self, counts: HashMap<SenderId, Counts>) -> Vec<Row> {
        let mut rows: Vec<Row> = counts
            .into_iter()
            .map(|(sender, counts)| Row {
                sender,
                from: self.seen.get(&sender).map(|s| s.from),
                counts,
            })
            .collect();
        // Most traffic first; the sender ID breaks ties, so the order is
        // stable from one report to the next.
        rows.sort_by(|a, b| {
            (b.counts.traffic(), b.counts.delivered)
                .cmp(&(a.counts.traffic(), a.counts.delivered))
                .then(a.sender.0.cmp(&b.sender.0))
        });
        rows
    }

    /// The top senders by frames since the start, and how many senders
    /// there are in all.
    pub(crate) fn top(&self, loss: &LossTracker) -> (Vec<Row>, usize) {
        let mut rows = self.rows(self.all(loss));
        let total = rows.len();
        rows.truncate(TOP_SENDERS);
        (rows, total)
    }

    /// The top senders by frames since the last call (senders with nothing
    /// in the interval left out), and how many were active.
    pub(crate) fn interval(&mut self, loss: &LossTracker) -> (Vec<Row>, usize) {
        let now = self.all(loss);
        let grown: HashMap<SenderId, Counts> = now
            .iter()
            .map(|(id, c)| {
                (
                    *id,
                    c.since(&self.last.get(id).copied().unwrap_or_default()),
                )
            })
            .filter(|(_, c)| *c != Counts::default())
            .collect();
        self.last = now;
        let mut rows = self.rows(grown);
        let total = rows.len();
        rows.truncate(TOP_SENDERS);
        (rows, total)
    }
}

/// The loss tracker's counts, summed per sender ID.
fn tracked(loss: &LossTracker) -> HashMap<SenderId, Counts> {
    let mut out: HashMap<SenderId, Counts> = HashMap::new();
    for ((_, sender), c) in loss.senders() {
        let e = out.entry(sender).or_default();
        e.received = e.received.saturating_add(c.received);
        e.lost = e.lost.saturating_add(c.lost);
        e.duplicates = e.duplicates.saturating_add(c.duplicates);
        e.reordered = e.reordered.saturating_add(c.reordered);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcsec::KeyId;

    const K: KeyId = KeyId(7);

    fn from(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn each_sender_has_its_own_counts_busiest_first() {
        let mut loss = LossTracker::default();
        let mut s = Senders::default();
        let (a, b) = (SenderId([1; 16]), SenderId([2; 16]));
        // a: 10 seqs, every other one lost; b: 30 in order.
        for seq in (0..10).filter(|q| q % 2 == 0) {
            loss.arrived(K, a, seq, 0);
            s.delivered(a, from(1));
        }
        for seq in 0..30 {
            loss.arrived(K, b, seq, 0);
            s.delivered(b, from(2));
        }
        loss.arrived(K, b, 29, 0);
        loss.settle_all();
        let (rows, total) = s.top(&loss);
        assert_eq!(total, 2);
        assert_eq!(rows[0].sender, b);
        assert_eq!(rows[0].counts.delivered, 30);
        assert_eq!(rows[0].counts.duplicates, 1);
        assert_eq!(rows[1].sender, a);
        assert_eq!(rows[1].from, Some(from(1)));
        assert_eq!((rows[1].counts.received, rows[1].counts.lost), (5, 4));
        assert!(
            rows[1].words().contains("lost 4 of 9 frames (44.4%)"),
            "{}",
            rows[1].words()
        );
        assert_eq!(rows[1].json()["lost"], 4);
    }

    #[test]
    fn intervals_count_growth_and_leave_idle_senders_out() {
        let mut loss = LossTracker::default();
        let mut s = Senders::default();
        let (a, b) = (SenderId([1; 16]), SenderId([2; 16]));
        for seq in 0..5 {
            loss.arrived(K, a, seq, 0);
            s.delivered(a, from(1));
        }
        let (rows, active) = s.interval(&loss);
        assert_eq!((rows.len(), active), (1, 1));
        assert_eq!(rows[0].counts.delivered, 5);
        loss.arrived(K, b, 0, 0);
        s.delivered(b, from(2));
        let (rows, active) = s.interval(&loss);
        assert_eq!(active, 1, "a sent nothing in this interval: {rows:?}");
        assert_eq!(rows[0].sender, b);
        assert_eq!(rows[0].counts.delivered, 1);
    }

    #[test]
    fn reports_list_at_most_the_top_senders() {
        let mut loss = LossTracker::default();
        let mut s = Senders::default();
        for i in 0..20u8 {
            let id = SenderId([i; 16]);
            for seq in 0..u64::from(i) + 1 {
                loss.arrived(K, id, seq, 0);
                s.delivered(id, from(u16::from(i)));
                s.bound(&loss);
            }
        }
        let (rows, total) = s.top(&loss);
        assert_eq!((rows.len(), total), (TOP_SENDERS, 20));
        assert_eq!(rows[0].sender, SenderId([19; 16]));
    }
}
