//! The key-less relay's control protocol and state (PROTOCOL.md, "Part 4:
//! relay control"), sans-IO: bytes and `now` in, verdicts and replies out.
//!
//! A relay forwards sealed frames byte for byte and never holds a group
//! key. Who may receive from it (subscribe) or send through it (publish) is
//! decided by a separate access key, in the key file format:
//!
//! ```text
//! mac_key = HKDF-Expand[HKDF-Extract[salt = none](access_secret)]
//!               ("mcsec relay access v1" || key_id, 32)
//! request = magic || type || 00 00 00 || key_id || time_us || nonce || cookie
//!           || rate_kbit || HMAC-SHA256(mac_key, everything before)
//! cookie  = time_s || HMAC-SHA256(relay_secret, "mcsec relay cookie v1"
//!                                   || time_s || ip || port)[0..16]
//! ```
//!
//! A request is accepted only with a valid MAC, a timestamp within
//! [`MAX_SKEW_US`] of the relay's clock, a nonce not seen before, and a
//! cookie the relay issued to the very address it came from (return
//! routability). Without that cookie the relay answers with a challenge
//! that carries one, and the challenge is shorter than the request: an
//! address that never proved it receives never gets more bytes than it
//! sent, and never a datagram of a feed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use hmac::{KeyInit, Mac};
use zeroize::Zeroizing;

use wire::{COOKIE_LABEL, HmacSha256, encode_ack, encode_challenge};

mod client;
mod wire;

pub use client::{Client, RETRY_US};
pub use wire::{
    ACK_LEN, AccessKeys, CHALLENGE_LEN, COOKIE_LEN, COOKIE_LIFETIME_S, DEFAULT_LEASE_US, Kind,
    MAGIC, MAX_NONCES, MAX_NONCES_PER_IP, MAX_SKEW_US, Message, NONCE_LEN, ParseError, REQUEST_LEN,
    Request, encode_request, is_control, parse,
};

/// Why the relay refused a control datagram. One row each in
/// [`ControlReject::ALL`]: its counter name and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ControlReject {
    /// Truncated, too long, reserved bytes set, or an unknown type.
    Malformed,
    /// The MAC does not verify, or the key ID is not in the access file:
    /// one opaque reason, so a prober learns nothing.
    BadAuth,
    /// The timestamp is more than [`MAX_SKEW_US`] from the relay's clock.
    Stale,
    /// The nonce was seen before: a replayed request.
    Replayed,
    /// Already --max-subscribers subscribers (or as many publishers).
    Full,
    /// The nonce cache is full of fresh nonces, or holds this address's
    /// share of it ([`MAX_NONCES_PER_IP`]): try again shortly.
    Busy,
    /// Older than a request already accepted from the same address (one
    /// held back and let through late, such as a subscribe after the
    /// client's unsubscribe).
    OutOfOrder,
    /// A subscribe to a relay with no feed, or a publish to one with no
    /// group to publish into.
    NotOffered,
}

impl ControlReject {
    /// Every reason, its counter name and its help text.
    pub const ALL: [(Self, &'static str, &'static str); 8] = [
        (
            Self::Malformed,
            "control_malformed",
            "Control datagrams truncated, too long or of an unknown type",
        ),
        (
            Self::BadAuth,
            "control_bad_auth",
            "Requests whose MAC failed or whose access key is unknown",
        ),
        (
            Self::Stale,
            "control_stale",
            "Requests whose timestamp is outside the allowed skew",
        ),
        (
            Self::Replayed,
            "control_replayed",
            "Requests whose nonce was seen before",
        ),
        (
            Self::Full,
            "control_full",
            "Requests refused because the subscriber or publisher table is full",
        ),
        (
            Self::Busy,
            "control_busy",
            "Requests refused while the nonce cache (or the address's share of it) was full",
        ),
        (
            Self::OutOfOrder,
            "control_out_of_order",
            "Requests older than one already accepted from the same address",
        ),
        (
            Self::NotOffered,
            "control_not_offered",
            "Subscribes to a relay without a feed, publishes to one without --to",
        ),
    ];

    /// The counter name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(r, ..)| *r == self)
            .map_or("control_unknown", |(_, name, _)| name)
    }
}

/// Limits of a [`Relay`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RelayConfig {
    /// The most subscribers at once (and, apart, the most publishers).
    pub max_subscribers: usize,
    /// Each subscriber's cap, bytes a second of datagrams; `None`: no cap.
    pub rate_cap_bytes: Option<u64>,
    /// How long a subscription lasts without a refresh.
    pub lease_us: u64,
    /// Whether there is a feed to subscribe to.
    pub accept_subscribers: bool,
    /// Whether there is a group to publish into.
    pub accept_publishers: bool,
    /// The largest datagram forwarded either way, in bytes.
    pub max_datagram: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_subscribers: 1024,
            rate_cap_bytes: None,
            lease_us: DEFAULT_LEASE_US,
            accept_subscribers: true,
            accept_publishers: true,
            max_datagram: crate::frame::MAX_DATAGRAM_V4,
        }
    }
}

/// One subscriber's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberStats {
    /// Datagrams handed to the kernel for it.
    pub forwarded: u64,
    /// Datagrams not sent because it was over its rate cap.
    pub dropped_cap: u64,
    /// Datagrams the kernel refused for it (a full send buffer).
    pub dropped_send: u64,
    /// When its last accepted request arrived, µs since the Unix epoch.
    pub last_seen_us: u64,
}

#[derive(Debug, Clone)]
struct Subscriber {
    expires_us: u64,
    /// Its cap, bytes a second: the relay's or its own, the lower.
    cap: Option<u64>,
    /// Token bucket: bytes it may still get, and when it was last filled.
    tokens: u64,
    filled_us: u64,
    stats: SubscriberStats,
}

/// The relay's counters, beside [`ControlReject`]'s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Requests accepted (subscribe, publish, unsubscribe and refreshes).
    pub accepted: u64,
    /// Challenges sent: requests without a valid cookie for their address.
    pub challenged: u64,
    /// Subscribers and publishers forgotten for want of a refresh.
    pub expired: u64,
    /// Data datagrams from addresses that are not publishers, dropped.
    pub data_unauthorized: u64,
    /// Data datagrams from publishers let into the group.
    pub published: u64,
    /// Datagrams empty or longer than the largest forwarded, dropped
    /// (from the feed or from publishers).
    pub data_bad_size: u64,
    /// Copies handed to the kernel, all subscribers together.
    pub forwarded: u64,
    /// Copies not sent for a subscriber's rate cap.
    pub dropped_cap: u64,
    /// Copies the kernel refused.
    pub dropped_send: u64,
    /// Datagrams on an --upstream feed's socket from another address than
    /// the upstream relay, dropped (never fanned out).
    pub data_foreign: u64,
    /// Datagrams of a feed that start as a control datagram does (`mcr`),
    /// dropped: a relay never forwards one (PROTOCOL.md 4.2).
    pub data_control: u64,
}

/// What to do after a control datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Send this reply to the sender (never longer than what it sent).
    Reply(Vec<u8>),
    /// Dropped and counted.
    Rejected(ControlReject),
}

/// How often a full nonce cache may be swept for stale nonces on demand.
const SWEEP_EVERY_US: u64 = 100_000;

/// The relay's state: access keys, cookie secret, subscribers, publishers,
/// the nonce cache and the counters.
#[derive(Debug)]
pub struct Relay {
    keys: AccessKeys,
    cookie_secret: Zeroizing<[u8; 32]>,
    config: RelayConfig,
    subscribers: HashMap<SocketAddr, Subscriber, foldhash::fast::RandomState>,
    publishers: HashMap<SocketAddr, u64, foldhash::fast::RandomState>,
    /// Nonce, when it can be forgotten (its request is stale by then) and
    /// the address it came from.
    nonces: HashMap<[u8; NONCE_LEN], (u64, IpAddr), foldhash::fast::RandomState>,
    /// How many of the nonces each address holds.
    nonces_by_ip: HashMap<IpAddr, usize, foldhash::fast::RandomState>,
    /// Each address's newest accepted request time, until that request is
    /// stale: an older request from there is refused (out of order).
    newest: HashMap<SocketAddr, u64, foldhash::fast::RandomState>,
    /// When the nonce cache was last swept.
    swept_us: u64,
    rejects: [u64; ControlReject::ALL.len()],
    stats: RelayStats,
}

impl Relay {
    /// A relay checking requests against `keys`; `cookie_secret` comes from
    /// the CSPRNG at start (cookies do not outlive the process).
    pub fn new(keys: AccessKeys, cookie_secret: [u8; 32], config: RelayConfig) -> Self {
        Self {
            keys,
            cookie_secret: Zeroizing::new(cookie_secret),
            config,
            subscribers: HashMap::default(),
            publishers: HashMap::default(),
            nonces: HashMap::default(),
            nonces_by_ip: HashMap::default(),
            newest: HashMap::default(),
            swept_us: 0,
            rejects: [0; ControlReject::ALL.len()],
            stats: RelayStats::default(),
        }
    }

    /// Replaces the access keys (the access file was rotated).
    pub fn set_keys(&mut self, keys: AccessKeys) {
        self.keys = keys;
    }

    /// The counters.
    pub fn stats(&self) -> RelayStats {
        self.stats
    }

    /// How many control datagrams were refused for `reason`.
    pub fn rejected(&self, reason: ControlReject) -> u64 {
        ControlReject::ALL
            .iter()
            .position(|(r, ..)| *r == reason)
            .map_or(0, |i| self.rejects[i])
    }

    /// Every counter, by name, rejects included.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats;
        let mut out = vec![
            ("control_accepted", s.accepted),
            ("control_challenged", s.challenged),
            ("expired", s.expired),
            ("data_unauthorized", s.data_unauthorized),
            ("data_bad_size", s.data_bad_size),
            ("data_foreign", s.data_foreign),
            ("data_control", s.data_control),
            ("published", s.published),
            ("forwarded", s.forwarded),
            ("dropped_cap", s.dropped_cap),
            ("dropped_send", s.dropped_send),
            ("subscribers", self.subscribers.len() as u64),
        ];
        for (i, (_, name, _)) in ControlReject::ALL.iter().enumerate() {
            out.push((name, self.rejects[i]));
        }
        out
    }

    /// Subscribers and their counters.
    pub fn subscribers(&self) -> impl Iterator<Item = (SocketAddr, SubscriberStats)> + '_ {
        self.subscribers.iter().map(|(a, s)| (*a, s.stats))
    }

    /// How many subscribers there are now.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    fn reject(&mut self, reason: ControlReject) -> Verdict {
        if let Some(i) = ControlReject::ALL.iter().position(|(r, ..)| *r == reason) {
            self.rejects[i] = self.rejects[i].saturating_add(1);
        }
        Verdict::Rejected(reason)
    }

    /// `time_s || HMAC(cookie_secret, label || time_s || ip || port)[0..16]`.
    pub(crate) fn cookie(&self, time_s: u32, from: SocketAddr) -> [u8; COOKIE_LEN] {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.cookie_secret[..]) else {
            unreachable!("HMAC takes keys of any length");
        };
        mac.update(COOKIE_LABEL);
        mac.update(&time_s.to_be_bytes());
        match from.ip() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&from.port().to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut cookie = [0u8; COOKIE_LEN];
        cookie[..4].copy_from_slice(&time_s.to_be_bytes());
        cookie[4..].copy_from_slice(&tag[..16]);
        cookie
    }

    fn cookie_ok(&self, now_us: u64, from: SocketAddr, cookie: &[u8; COOKIE_LEN]) -> bool {
        use subtle::ConstantTimeEq;
        let (time, _) = cookie.split_first_chunk::<4>().unwrap_or((&[0; 4], &[]));
        let time_s = u32::from_be_bytes(*time);
        let now_s = now_s(now_us);
        // Issued by us, at most a second ahead (a clock step), not expired.
        if time_s > now_s.saturating_add(1) || now_s.saturating_sub(time_s) > COOKIE_LIFETIME_S {
            return false;
        }
        bool::from(self.cookie(time_s, from).ct_eq(cookie))
    }

    /// Handles one control datagram from `from`.
    pub fn handle(&mut self, now_us: u64, from: SocketAddr, datagram: &[u8]) -> Verdict {
        // Replies are for clients; a relay takes none.
        let Ok(Message::Request(request)) = parse(datagram) else {
            return self.reject(ControlReject::Malformed);
        };
        let Some(key) = self.keys.get(request.key_id) else {
            return self.reject(ControlReject::BadAuth);
        };
        if !key.verify(request.signed, request.mac) {
            return self.reject(ControlReject::BadAuth);
        }
        let key = key.clone();
        if now_us.abs_diff(request.time_us) > MAX_SKEW_US {
            return self.reject(ControlReject::Stale);
        }
        if !self.cookie_ok(now_us, from, &request.cookie) {
            // No state, no nonce remembered: a challenge is all an address
            // that has not shown it hears us gets, and it is shorter than
            // the request.
            self.stats.challenged += 1;
            let cookie = self.cookie(now_s(now_us), from);
            return Verdict::Reply(encode_challenge(&request.nonce, &cookie).to_vec());
        }
        if self.nonces.contains_key(&request.nonce) {
            return self.reject(ControlReject::Replayed);
        }
        if self
            .newest
            .get(&from)
            .is_some_and(|newest| request.time_us < *newest)
        {
            return self.reject(ControlReject::OutOfOrder);
        }
        let ip = from.ip();
        let held = |r: &Self| r.nonces_by_ip.get(&ip).copied().unwrap_or(0);
        if self.nonces.len() >= MAX_NONCES || held(self) >= MAX_NONCES_PER_IP {
            // A sweep walks the whole cache: at most one every 100 ms, so a
            // flood of requests over its share cannot buy one each.
            if now_us.saturating_sub(self.swept_us) >= SWEEP_EVERY_US {
                self.forget_stale(now_us);
            }
            if self.nonces.len() >= MAX_NONCES || held(self) >= MAX_NONCES_PER_IP {
                return self.reject(ControlReject::Busy);
            }
        }
        let offered = match request.kind {
            Kind::Subscribe => self.config.accept_subscribers,
            Kind::Publish => self.config.accept_publishers,
            Kind::Unsubscribe => true,
        };
        if !offered {
            return self.reject(ControlReject::NotOffered);
        }
        let expires = now_us.saturating_add(self.config.lease_us);
        let own = (request.rate_kbit > 0).then(|| u64::from(request.rate_kbit) * 1000 / 8);
        let cap = match (self.config.rate_cap_bytes, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match request.kind {
            Kind::Subscribe => {
                if let Some(sub) = self.subscribers.get_mut(&from) {
                    sub.expires_us = expires;
                    sub.cap = cap;
                    sub.stats.last_seen_us = now_us;
                } else {
                    if self.subscribers.len() >= self.config.max_subscribers {
                        return self.reject(ControlReject::Full);
                    }
                    let sub = Subscriber {
                        expires_us: expires,
                        cap,
                        tokens: burst(cap),
                        filled_us: now_us,
                        stats: SubscriberStats {
                            last_seen_us: now_us,
                            ..SubscriberStats::default()
                        },
                    };
                    self.subscribers.insert(from, sub);
                }
            }
            Kind::Publish => {
                if !self.publishers.contains_key(&from)
                    && self.publishers.len() >= self.config.max_subscribers
                {
                    return self.reject(ControlReject::Full);
                }
                self.publishers.insert(from, expires);
            }
            Kind::Unsubscribe => {
                self.subscribers.remove(&from);
                self.publishers.remove(&from);
            }
        }
        // Fresh through time + skew, so forgettable just after.
        let forget = request.time_us.saturating_add(MAX_SKEW_US + 1);
        self.nonces.insert(request.nonce, (forget, ip));
        *self.nonces_by_ip.entry(ip).or_insert(0) += 1;
        let newest = self.newest.entry(from).or_insert(request.time_us);
        *newest = (*newest).max(request.time_us);
        self.stats.accepted += 1;
        let lease_s = u32::try_from(self.config.lease_us / 1_000_000).unwrap_or(u32::MAX);
        Verdict::Reply(encode_ack(&key, &request.nonce, lease_s).to_vec())
    }

    /// Whether a datagram of the feed is one to forward (not empty, not
    /// longer than the largest, not a control datagram); counts it if not.
    pub fn accept_feed(&mut self, datagram: &[u8]) -> bool {
        if !self.fits(datagram.len()) {
            false
        } else if is_control(datagram) {
            self.stats.data_control += 1;
            false
        } else {
            true
        }
    }

    /// Whether `len` bytes are a size to forward; counted if not.
    fn fits(&mut self, len: usize) -> bool {
        let ok = len > 0 && len <= self.config.max_datagram;
        if !ok {
            self.stats.data_bad_size += 1;
        }
        ok
    }

    /// Whether a datagram that arrived on an upstream feed's socket from
    /// `from` is the upstream relay's (`upstream`), to forward; counts it
    /// if not. That socket is unconnected (so ICMP of a restarting upstream
    /// does not end it), so anyone who finds its port can send to it.
    pub fn accept_upstream(&mut self, from: SocketAddr, upstream: SocketAddr) -> bool {
        let ok = from == upstream;
        if !ok {
            self.stats.data_foreign += 1;
        }
        ok
    }

    /// Whether a data datagram of `len` bytes from `from` may go into the
    /// group (from a publisher whose lease holds, and of a size to
    /// forward); counts it either way.
    pub fn accept_data(&mut self, now_us: u64, from: SocketAddr, len: usize) -> bool {
        if self.publishers.get(&from).is_none_or(|e| *e <= now_us) {
            self.stats.data_unauthorized += 1;
            false
        } else if !self.fits(len) {
            false
        } else {
            self.stats.published += 1;
            true
        }
    }

    /// Forgets subscribers and publishers whose lease ran out, and nonces
    /// past their time.
    pub fn expire(&mut self, now_us: u64) {
        let before = self.subscribers.len() + self.publishers.len();
        self.subscribers.retain(|_, s| s.expires_us > now_us);
        self.publishers.retain(|_, e| *e > now_us);
        let after = self.subscribers.len() + self.publishers.len();
        self.stats.expired += (before - after) as u64;
        self.forget_stale(now_us);
    }

    /// Forgets the nonces and request times of requests stale at `now_us`.
    fn forget_stale(&mut self, now_us: u64) {
        self.swept_us = now_us;
        let by_ip = &mut self.nonces_by_ip;
        self.nonces.retain(|_, (forget, ip)| {
            let keep = *forget > now_us;
            if !keep && let Some(n) = by_ip.get_mut(ip) {
                *n = n.saturating_sub(1);
            }
            keep
        });
        by_ip.retain(|_, n| *n > 0);
        self.newest
            .retain(|_, time| time.saturating_add(MAX_SKEW_US) >= now_us);
    }

    /// Plans sending a run of datagrams of `sizes` bytes to every
    /// subscriber whose lease holds: fills `out` with each one's address
    /// and how many of the run (a prefix) its rate cap allows now; the rest
    /// count as dropped for the cap.
    pub fn plan(&mut self, now_us: u64, sizes: &[usize], out: &mut Vec<(SocketAddr, usize)>) {
        out.clear();
        for (addr, sub) in &mut self.subscribers {
            if sub.expires_us <= now_us {
                continue;
            }
            let burst = burst(sub.cap);
            let admitted = match sub.cap {
                None => sizes.len(),
                Some(rate) => {
                    let elapsed = now_us.saturating_sub(sub.filled_us);
                    let earned = u64::try_from(u128::from(elapsed) * u128::from(rate) / 1_000_000)
                        .unwrap_or(u64::MAX);
                    sub.tokens = sub.tokens.saturating_add(earned).min(burst);
                    sub.filled_us = now_us;
                    let mut n = 0;
                    for size in sizes {
                        let Some(left) = sub.tokens.checked_sub(*size as u64) else {
                            break;
                        };
                        sub.tokens = left;
                        n += 1;
                    }
                    n
                }
            };
            let dropped = (sizes.len() - admitted) as u64;
            sub.stats.dropped_cap += dropped;
            self.stats.dropped_cap += dropped;
            if admitted > 0 {
                out.push((*addr, admitted));
            }
        }
    }

    /// Records what the kernel took of a planned send to `addr`: `sent` of
    /// `planned` datagrams.
    pub fn sent(&mut self, addr: SocketAddr, planned: usize, sent: usize) {
        let refused = planned.saturating_sub(sent) as u64;
        self.stats.forwarded += sent as u64;
        self.stats.dropped_send += refused;
        if let Some(sub) = self.subscribers.get_mut(&addr) {
            sub.stats.forwarded += sent as u64;
            sub.stats.dropped_send += refused;
        }
    }
}

/// A tenth of a second of `cap` (bytes a second), and never less than one
/// run of 64 KiB, so a GSO run is not cut for being a run.
fn burst(cap: Option<u64>) -> u64 {
    cap.map_or(u64::MAX, |cap| (cap / 10).max(1 << 16))
}

fn now_s(now_us: u64) -> u32 {
    u32::try_from(now_us / 1_000_000).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
