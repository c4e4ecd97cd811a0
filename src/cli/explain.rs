//! Rejected datagrams explained on stderr (issue #12): one warning per
//! cause and source address a minute, a few lines a minute in all, each
//! with a hint at the likely mistake. The counters still count every one.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

/// How long a cause and source stay quiet after their warning.
pub(crate) const PER_CAUSE: Duration = Duration::from_secs(60);

/// Warnings a minute at most, whatever the causes and sources.
pub(crate) const PER_MINUTE: usize = 5;

/// Entries kept before old ones are swept: spoofed sources cannot grow
/// the table without bound.
const MAX_ENTRIES: usize = 4096;

/// Decides which rejects are worth a line. Sans-IO: the caller passes the
/// time (any monotonic clock, as a duration since some start).
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    last: HashMap<(&'static str, Option<IpAddr>), Duration>,
    recent: VecDeque<Duration>,
}

impl RateLimiter {
    /// Whether a warning for `cause` from `source` may go out `now`; if so,
    /// it is counted as gone.
    pub(crate) fn allow(
        &mut self,
        cause: &'static str,
        source: Option<IpAddr>,
        now: Duration,
    ) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= PER_CAUSE)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= PER_MINUTE {
            return false;
        }
        let key = (cause, source);
        if let Some(t) = self.last.get(&key)
            && now.saturating_sub(*t) < PER_CAUSE
        {
            return false;
        }
        if self.last.len() >= MAX_ENTRIES {
            self.last.retain(|_, t| now.saturating_sub(*t) < PER_CAUSE);
            if self.last.len() >= MAX_ENTRIES {
                return false;
            }
        }
        self.last.insert(key, now);
        self.recent.push_back(now);
        true
    }
}

/// What a warning says: the cause, the facts the datagram gave away, and
/// the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Sealed under a key ID the key file does not hold.
    UnknownKey(mcsec::KeyId),
    Malformed,
    Oversize(usize),
    /// How far the frame's clock was from ours, in seconds: positive when
    /// the frame is older, negative when it is ahead.
    Stale(i64),
    AuthFailed,
    /// With --trust: frames nobody signed, or a signer not trusted.
    SigUnsigned,
    SigUntrusted,
}

impl Cause {
    /// The counter this cause is counted under.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::UnknownKey(_) => "unknown_key",
            Self::Malformed => "malformed",
            Self::Oversize(_) => "oversize",
            Self::Stale(_) => "stale",
            Self::AuthFailed => "auth_failed",
            Self::SigUnsigned => "sig_unsigned",
            Self::SigUntrusted => "sig_untrusted",
        }
    }

    /// The warning line, hint included.
    pub(crate) fn line(self, from: Option<IpAddr>, key_file: &str, trust_file: &str) -> String {
        let from = from.map_or_else(|| "an unknown source".to_string(), |a| a.to_string());
        let what = match self {
            Self::UnknownKey(id) => {
                format!("key {id} from {from} is not in {key_file}: an old or wrong key file?")
            }
            Self::Malformed => {
                format!("from {from}: not an mcsec v2 frame: another program on this port?")
            }
            Self::Oversize(len) => format!(
                "from {from}: a {len}-byte datagram, over --max-datagram: a peer with a larger --max-datagram?"
            ),
            Self::Stale(secs) if secs >= 0 => {
                format!("from {from}: a frame {secs} s old: clocks: is NTP running?")
            }
            Self::Stale(secs) => format!(
                "from {from}: a frame {} s ahead: clocks: is NTP running?",
                secs.unsigned_abs()
            ),
            Self::AuthFailed => format!(
                "from {from}: authentication failed: sealed for another channel or key, or tampered"
            ),
            Self::SigUnsigned => format!(
                "frames held for a signature that never came: \
                 a sender that does not sign, or signs with a key not in {trust_file}"
            ),
            Self::SigUntrusted => format!(
                "from {from}: {}: a sender that does not sign, or signs with a key not in {trust_file}",
                self.name()
            ),
        };
        format!("warning: dropped ({}) {what}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 0, 2)));

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn once_per_cause_and_source_a_minute() {
        let mut r = RateLimiter::default();
        assert!(r.allow("unknown_key", A, s(0)));
        for t in 0..60 {
            assert!(!r.allow("unknown_key", A, s(t)), "at {t} s");
        }
        // Another source, another cause: their own line.
        assert!(r.allow("unknown_key", B, s(1)));
        assert!(r.allow("stale", A, s(2)));
        // A minute on, the first one may speak again.
        assert!(r.allow("unknown_key", A, s(60)));
        assert!(!r.allow("unknown_key", A, s(61)));
    }

    #[test]
    fn a_handful_of_lines_a_minute_in_all() {
        let mut r = RateLimiter::default();
        let sources: Vec<Option<IpAddr>> = (1..=50u8)
            .map(|i| Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i))))
            .collect();
        let allowed = sources
            .iter()
            .filter(|src| r.allow("malformed", **src, s(10)))
            .count();
        assert_eq!(allowed, PER_MINUTE);
        // Still full 59 s after the burst, open again after 60.
        assert!(!r.allow("stale", A, s(69)));
        assert!(r.allow("stale", A, s(70)));
    }

    #[test]
    fn spoofed_sources_do_not_grow_the_table_without_bound() {
        let mut r = RateLimiter::default();
        for i in 0..(MAX_ENTRIES as u32 * 3) {
            let src = Some(IpAddr::V4(std::net::Ipv4Addr::from(i)));
            // One a minute: every one is let through the global limit.
            r.allow("malformed", src, Duration::from_secs(60) * i);
        }
        assert!(r.last.len() <= MAX_ENTRIES);
    }

    #[test]
    fn lines_name_the_facts_and_the_hint() {
        let l = Cause::UnknownKey(mcsec::KeyId(0x55eb_8c1f)).line(A, "group.key", "");
        assert!(
            l.contains("key 55eb8c1f from 10.9.0.1 is not in group.key: an old or wrong key file?"),
            "{l}"
        );
        assert!(Cause::Stale(42).line(A, "", "").contains("42 s old"));
        assert!(Cause::Stale(-7).line(A, "", "").contains("7 s ahead"));
        assert!(
            Cause::SigUntrusted
                .line(A, "", "feed.pub")
                .contains("not in feed.pub")
        );
    }
}
