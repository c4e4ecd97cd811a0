//! Pacing, sans-IO: a sender books each batch of datagrams with the time it
//! is ready, and gets back the instant the batch may go. The pacer never
//! sleeps and never reads a clock; its caller waits (or polls, or sets a
//! timer) until the deadline, so tests drive time and a library user's
//! event loop stays its own.

use std::time::{Duration, Instant};

/// The longest one booking holds the next back: a day, far beyond any
/// real batch at any real rate, and short enough to add to any `Instant`.
const LONGEST: Duration = Duration::from_secs(86_400);

/// A rate limit in bits a second of IP datagrams (payload, UDP and IP
/// headers counted), in datagrams a second, or both (the stricter holds).
#[derive(Debug, Clone)]
pub struct Pacer {
    bits_per_sec: Option<u64>,
    pps: Option<u64>,
    /// When the next booking may start; `None` before the first.
    next: Option<Instant>,
    /// IP and UDP header bytes counted per datagram: 28 on IPv4, 48 on IPv6.
    header_bytes: u64,
}

impl Pacer {
    /// A pacer for `bits_per_sec` and `pps` (`None`: no limit of that
    /// kind) over IPv6 if `ipv6`, else IPv4.
    pub fn new(bits_per_sec: Option<u64>, pps: Option<u64>, ipv6: bool) -> Self {
        Self {
            bits_per_sec,
            pps,
            next: None,
            header_bytes: if ipv6 { 48 } else { 28 },
        }
    }

    /// Whether any limit is set: an unpaced sender need not book at all.
    pub fn is_paced(&self) -> bool {
        self.bits_per_sec.is_some() || self.pps.is_some()
    }

    /// How many datagrams of `len` bytes to send back to back at most:
    /// about a millisecond's worth at the set rates, so batches do not turn
    /// into bursts a slow link has to queue; `max` when unpaced.
    pub fn batch_for(&self, len: usize, max: usize) -> usize {
        const BURST: f64 = 1e-3;
        let bits = (len as u64).saturating_add(self.header_bytes) as f64 * 8.0;
        let by_rate = self
            .bits_per_sec
            .map_or(f64::INFINITY, |r| r as f64 * BURST / bits);
        let by_pps = self.pps.map_or(f64::INFINITY, |p| p as f64 * BURST);
        let n = by_rate.min(by_pps);
        if n.is_finite() {
            (n as usize).clamp(1, max.max(1))
        } else {
            max.max(1)
        }
    }

    /// Books `count` datagrams totalling `bytes` (payloads) to go back to
    /// back, ready at `now`: returns when they may go, `now` or later. The
    /// next booking starts when these have had their time at the rate, so a
    /// sender that falls behind does not burst to catch up beyond that.
    pub fn book(&mut self, now: Instant, count: usize, bytes: usize) -> Instant {
        if !self.is_paced() {
            return now;
        }
        let start = match self.next {
            Some(next) if next > now => next,
            _ => now,
        };
        let bits = (bytes as u64)
            .saturating_add(self.header_bytes.saturating_mul(count as u64))
            .saturating_mul(8);
        let secs = |x: f64| Duration::try_from_secs_f64(x).unwrap_or(LONGEST);
        let by_rate = self
            .bits_per_sec
            .map_or(Duration::ZERO, |r| secs(bits as f64 / r.max(1) as f64));
        let by_pps = self
            .pps
            .map_or(Duration::ZERO, |p| secs(count as f64 / p.max(1) as f64));
        let took = by_rate.max(by_pps).min(LONGEST);
        self.next = Some(start.checked_add(took).unwrap_or(start));
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn unpaced_is_always_now() {
        let mut p = Pacer::new(None, None, false);
        let t0 = Instant::now();
        for i in 0..1000 {
            assert_eq!(p.book(t0 + MS * i, 44, 64_000), t0 + MS * i);
        }
    }

    #[test]
    fn datagrams_are_spaced_by_the_stricter_limit() {
        // 200 a second: 5 ms apart, whatever the size.
        let mut p = Pacer::new(None, Some(200), false);
        let t0 = Instant::now();
        let due: Vec<_> = (0..5).map(|_| p.book(t0, 1, 100)).collect();
        assert_eq!(due, (0..5).map(|i| t0 + MS * 5 * i).collect::<Vec<_>>());
        // 8 Mbit/s: 972 payload bytes and 28 of headers are 1 ms.
        let mut p = Pacer::new(Some(8_000_000), None, false);
        for i in 0..11 {
            assert_eq!(p.book(t0, 1, 972), t0 + MS * i);
        }
        // Both: the datagram rate is the stricter here (10 ms against 1 ms).
        let mut p = Pacer::new(Some(8_000_000), Some(100), false);
        p.book(t0, 1, 972);
        assert_eq!(p.book(t0, 1, 972), t0 + MS * 10);
        // IPv6 counts 48 header bytes: 952 + 48 is 1 ms.
        let mut p = Pacer::new(Some(8_000_000), None, true);
        p.book(t0, 1, 952);
        assert_eq!(p.book(t0, 1, 952), t0 + MS);
    }

    #[test]
    fn a_batch_takes_as_long_as_its_datagrams_would() {
        // 200 a second in batches of 5: 25 ms a batch.
        let mut p = Pacer::new(None, Some(200), false);
        let t0 = Instant::now();
        let due: Vec<_> = (0..4).map(|_| p.book(t0, 5, 500)).collect();
        assert_eq!(due, (0..4).map(|i| t0 + MS * 25 * i).collect::<Vec<_>>());
        // 8 Mbit/s, batches of 10 datagrams of 1000 bytes with headers.
        let mut p = Pacer::new(Some(8_000_000), None, false);
        p.book(t0, 10, 9_720);
        assert_eq!(p.book(t0, 10, 9_720), t0 + MS * 10);
    }

    #[test]
    fn a_sender_that_was_idle_starts_now_and_does_not_burst() {
        let mut p = Pacer::new(None, Some(1000), false);
        let t0 = Instant::now();
        p.book(t0, 1, 100);
        // Idle for a second: the next goes when it is ready, and the one
        // after a millisecond later, not at once to make up for the idle.
        let later = t0 + MS * 1000;
        assert_eq!(p.book(later, 1, 100), later);
        assert_eq!(p.book(later, 1, 100), later + MS);
    }

    #[test]
    fn batches_are_a_millisecond_of_the_rate_at_most() {
        let batch = |bits, pps| Pacer::new(bits, pps, false).batch_for(1456, 44);
        assert_eq!(batch(None, None), 44);
        // 1 Gbit/s: 1 ms is 85 datagrams of 1484 bytes with headers.
        assert_eq!(batch(Some(1_000_000_000), None), 44);
        // 100 Mbit/s: 8.4 of them.
        assert_eq!(batch(Some(100_000_000), None), 8);
        assert_eq!(batch(Some(1_000_000), None), 1);
        assert_eq!(batch(None, Some(20_000)), 20);
        assert_eq!(batch(None, Some(10)), 1);
    }

    #[test]
    fn absurd_inputs_do_not_panic() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(1), Some(1), true);
        p.book(t0, usize::MAX, usize::MAX);
        assert_eq!(p.book(t0, usize::MAX, usize::MAX), t0 + LONGEST);
        assert_eq!(p.batch_for(usize::MAX, 0), 1);
    }
}
