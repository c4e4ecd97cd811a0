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

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::keys::{KeyId, Keyring};

type HmacSha256 = Hmac<Sha256>;

/// The first four bytes of every control datagram: "mcr" and version 1.
/// A v2 frame starts otherwise, so a relay tells control from data here.
pub const MAGIC: [u8; 4] = *b"mcr\x01";

/// Bytes of a subscribe, publish or unsubscribe request.
pub const REQUEST_LEN: usize = 92;
/// Bytes of a challenge: shorter than any request it answers.
pub const CHALLENGE_LEN: usize = 44;
/// Bytes of an acknowledgement.
pub const ACK_LEN: usize = 64;
/// Bytes of a cookie: 4 of time, 16 of MAC.
pub const COOKIE_LEN: usize = 20;
/// Bytes of a request nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of an HMAC-SHA256 tag.
const MAC_LEN: usize = 32;

/// How far a request's timestamp may be from the relay's clock, either way.
pub const MAX_SKEW_US: u64 = 30_000_000;
/// How long a cookie stays good after the relay issued it.
pub const COOKIE_LIFETIME_S: u32 = 120;
/// How long a subscription or a publisher lasts without a refresh: three
/// of the clients' default 20 s refreshes.
pub const DEFAULT_LEASE_US: u64 = 60_000_000;
/// The most nonces remembered; only requests with a valid MAC get in, so
/// only access key holders can fill it (then requests wait for room).
pub const MAX_NONCES: usize = 1 << 16;

/// HKDF info label of the access MAC key (21 bytes).
const ACCESS_LABEL: &[u8] = b"mcsec relay access v1";
/// HMAC label in front of a cookie's time and address (21 bytes).
const COOKIE_LABEL: &[u8] = b"mcsec relay cookie v1";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Send me every datagram of the feed.
    Subscribe,
    /// Let my data datagrams into the relay's group.
    Publish,
    /// Forget my subscription and my publishing right.
    Unsubscribe,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Self::Subscribe => 0x01,
            Self::Publish => 0x02,
            Self::Unsubscribe => 0x03,
        }
    }
}

const TYPE_CHALLENGE: u8 = 0x81;
const TYPE_ACK: u8 = 0x82;

/// A parsed request. The MAC is not checked yet: see [`Relay::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// What it asks for.
    pub kind: Kind,
    /// The access key it claims to be under.
    pub key_id: KeyId,
    /// The client's clock, microseconds since the Unix epoch.
    pub time_us: u64,
    /// Random, once per request.
    pub nonce: [u8; NONCE_LEN],
    /// The relay's last cookie for this client, or zeros.
    pub cookie: [u8; COOKIE_LEN],
    /// The cap a subscriber asks for, kilobits (1000 bits) a second; 0:
    /// none of its own (the relay's --rate-cap still holds).
    pub rate_kbit: u32,
    /// Bytes the MAC covers.
    signed: &'a [u8],
    mac: &'a [u8; MAC_LEN],
}

/// A parsed relay-to-client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// A client's request.
    Request(Request<'a>),
    /// "Prove you can hear me": send the request again with this cookie.
    Challenge {
        /// The nonce of the request answered.
        nonce: [u8; NONCE_LEN],
        /// The cookie to send back.
        cookie: [u8; COOKIE_LEN],
    },
    /// "Accepted": the lease granted. Its MAC is not checked yet: see
    /// [`Client::handle`].
    Ack {
        /// The access key it is under.
        key_id: KeyId,
        /// The nonce of the request accepted.
        nonce: [u8; NONCE_LEN],
        /// Seconds the subscription lasts without a refresh.
        lease_s: u32,
        /// Bytes the MAC covers.
        signed: &'a [u8],
        /// Its tag.
        mac: &'a [u8; MAC_LEN],
    },
}

/// Why bytes are not a control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not the control magic and version.
    #[error("not a relay control datagram")]
    NotControl,
    /// A type this version does not know.
    #[error("unknown relay control type")]
    UnknownType,
    /// Shorter or longer than its type's length, or reserved bytes set.
    #[error("malformed relay control datagram")]
    Malformed,
}

/// Whether `datagram` starts with the control magic (else it is data).
pub fn is_control(datagram: &[u8]) -> bool {
    datagram.starts_with(&MAGIC[..3])
}

/// Parses a control datagram: one match on (type, length) decides its
/// shape; nothing is copied but fixed-size fields.
pub fn parse(datagram: &[u8]) -> Result<Message<'_>, ParseError> {
    let (magic, rest) = datagram
        .split_first_chunk::<4>()
        .ok_or(ParseError::NotControl)?;
    if *magic != MAGIC {
        return Err(ParseError::NotControl);
    }
    let (&[kind, r0, r1, r2], body) = rest.split_first_chunk::<4>().ok_or(ParseError::Malformed)?;
    if [r0, r1, r2] != [0; 3] {
        return Err(ParseError::Malformed);
    }
    match (kind, datagram.len()) {
        (0x01..=0x03, REQUEST_LEN) => {
            let (signed, mac) = datagram
                .split_last_chunk::<MAC_LEN>()
                .ok_or(ParseError::Malformed)?;
            let (key_id, body) = body.split_first_chunk::<4>().ok_or(ParseError::Malformed)?;
            let (time, body) = body.split_first_chunk::<8>().ok_or(ParseError::Malformed)?;
            let (nonce, body) = body
                .split_first_chunk::<NONCE_LEN>()
                .ok_or(ParseError::Malformed)?;
            let (cookie, body) = body
                .split_first_chunk::<COOKIE_LEN>()
                .ok_or(ParseError::Malformed)?;
            let (rate, _) = body.split_first_chunk::<4>().ok_or(ParseError::Malformed)?;
            let kind = match kind {
                0x01 => Kind::Subscribe,
                0x02 => Kind::Publish,
                _ => Kind::Unsubscribe,
            };
            Ok(Message::Request(Request {
                kind,
                key_id: KeyId(u32::from_be_bytes(*key_id)),
                time_us: u64::from_be_bytes(*time),
                nonce: *nonce,
                cookie: *cookie,
                rate_kbit: u32::from_be_bytes(*rate),
                signed,
                mac,
            }))
        }
        (TYPE_CHALLENGE, CHALLENGE_LEN) => {
            let (nonce, body) = body
                .split_first_chunk::<NONCE_LEN>()
                .ok_or(ParseError::Malformed)?;
            let cookie = <[u8; COOKIE_LEN]>::try_from(body).map_err(|_| ParseError::Malformed)?;
            Ok(Message::Challenge {
                nonce: *nonce,
                cookie,
            })
        }
        (TYPE_ACK, ACK_LEN) => {
            let (signed, mac) = datagram
                .split_last_chunk::<MAC_LEN>()
                .ok_or(ParseError::Malformed)?;
            let (key_id, body) = body.split_first_chunk::<4>().ok_or(ParseError::Malformed)?;
            let (nonce, body) = body
                .split_first_chunk::<NONCE_LEN>()
                .ok_or(ParseError::Malformed)?;
            let (lease, _) = body.split_first_chunk::<4>().ok_or(ParseError::Malformed)?;
            Ok(Message::Ack {
                key_id: KeyId(u32::from_be_bytes(*key_id)),
                nonce: *nonce,
                lease_s: u32::from_be_bytes(*lease),
                signed,
                mac,
            })
        }
        (0x01..=0x03 | TYPE_CHALLENGE | TYPE_ACK, _) => Err(ParseError::Malformed),
        _ => Err(ParseError::UnknownType),
    }
}

/// One access key's MAC key, derived once.
#[derive(Clone)]
struct AccessKey {
    id: KeyId,
    mac_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AccessKey {
    /// `HKDF-Expand[HKDF-Extract(secret)]("mcsec relay access v1" || key_id, 32)`.
    fn derive(key: &crate::GroupKey) -> Self {
        let hkdf = Hkdf::<Sha256>::new(None, key.secret().expose_bytes());
        let mut mac_key = Zeroizing::new([0u8; 32]);
        let info: [&[u8]; 2] = [ACCESS_LABEL, &key.id().to_be_bytes()];
        if hkdf.expand_multi_info(&info, &mut mac_key[..]).is_err() {
            unreachable!("32 bytes is within HKDF-SHA256's output limit");
        }
        Self {
            id: key.id(),
            mac_key,
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.mac_key[..]) else {
            unreachable!("HMAC takes keys of any length");
        };
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of `tag` over `signed`.
    fn verify(&self, signed: &[u8], tag: &[u8; MAC_LEN]) -> bool {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.mac_key[..]) else {
            unreachable!("HMAC takes keys of any length");
        };
        mac.update(signed);
        mac.verify_slice(tag).is_ok()
    }
}

/// The access keys of a key file: every one is accepted, the last one
/// (the newest) signs, as with group keys.
#[derive(Clone, Debug)]
pub struct AccessKeys(Vec<AccessKey>);

impl AccessKeys {
    /// Derives the MAC key of every key in `ring`.
    pub fn new(ring: &Keyring) -> Self {
        Self(ring.iter().map(AccessKey::derive).collect())
    }

    fn get(&self, id: KeyId) -> Option<&AccessKey> {
        self.0.iter().find(|k| k.id == id)
    }

    fn signing(&self) -> &AccessKey {
        let Some(last) = self.0.last() else {
            unreachable!("a keyring is never empty");
        };
        last
    }
}

/// Builds a request under the newest access key.
pub fn encode_request(
    keys: &AccessKeys,
    kind: Kind,
    time_us: u64,
    nonce: [u8; NONCE_LEN],
    cookie: [u8; COOKIE_LEN],
    rate_kbit: u32,
) -> [u8; REQUEST_LEN] {
    let key = keys.signing();
    let mut out = [0u8; REQUEST_LEN];
    let mut signed = Vec::with_capacity(REQUEST_LEN - MAC_LEN);
    signed.extend_from_slice(&MAGIC);
    signed.extend_from_slice(&[kind.byte(), 0, 0, 0]);
    signed.extend_from_slice(&key.id.to_be_bytes());
    signed.extend_from_slice(&time_us.to_be_bytes());
    signed.extend_from_slice(&nonce);
    signed.extend_from_slice(&cookie);
    signed.extend_from_slice(&rate_kbit.to_be_bytes());
    let tag = key.mac(&[&signed]);
    out[..REQUEST_LEN - MAC_LEN].copy_from_slice(&signed);
    out[REQUEST_LEN - MAC_LEN..].copy_from_slice(&tag);
    out
}

fn encode_challenge(nonce: &[u8; NONCE_LEN], cookie: &[u8; COOKIE_LEN]) -> [u8; CHALLENGE_LEN] {
    let mut out = [0u8; CHALLENGE_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4] = TYPE_CHALLENGE;
    out[8..24].copy_from_slice(nonce);
    out[24..].copy_from_slice(cookie);
    out
}

fn encode_ack(key: &AccessKey, nonce: &[u8; NONCE_LEN], lease_s: u32) -> [u8; ACK_LEN] {
    let mut out = [0u8; ACK_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4] = TYPE_ACK;
    out[8..12].copy_from_slice(&key.id.to_be_bytes());
    out[12..28].copy_from_slice(nonce);
    out[28..32].copy_from_slice(&lease_s.to_be_bytes());
    let tag = key.mac(&[&out[..32]]);
    out[32..].copy_from_slice(&tag);
    out
}

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
    /// The nonce cache is full of fresh nonces: try again shortly.
    Busy,
    /// A subscribe to a relay with no feed, or a publish to one with no
    /// group to publish into.
    NotOffered,
}

impl ControlReject {
    /// Every reason, its counter name and its help text.
    pub const ALL: [(Self, &'static str, &'static str); 7] = [
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
            "Requests refused while the nonce cache was full",
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

/// The relay's state: access keys, cookie secret, subscribers, publishers,
/// the nonce cache and the counters.
#[derive(Debug)]
pub struct Relay {
    keys: AccessKeys,
    cookie_secret: Zeroizing<[u8; 32]>,
    config: RelayConfig,
    subscribers: HashMap<SocketAddr, Subscriber, foldhash::fast::RandomState>,
    publishers: HashMap<SocketAddr, u64, foldhash::fast::RandomState>,
    /// Nonce and when it can be forgotten (its request is stale by then).
    nonces: HashMap<[u8; NONCE_LEN], u64, foldhash::fast::RandomState>,
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
        if self.nonces.len() >= MAX_NONCES {
            self.nonces.retain(|_, forget| *forget > now_us);
            if self.nonces.len() >= MAX_NONCES {
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
        // Stale after time + skew, so forgettable then.
        self.nonces
            .insert(request.nonce, request.time_us.saturating_add(MAX_SKEW_US));
        self.stats.accepted += 1;
        let lease_s = u32::try_from(self.config.lease_us / 1_000_000).unwrap_or(u32::MAX);
        Verdict::Reply(encode_ack(&key, &request.nonce, lease_s).to_vec())
    }

    /// Whether a datagram of the feed, `len` bytes, is one to forward (not
    /// empty, not longer than the largest); counts it if not.
    pub fn accept_feed(&mut self, len: usize) -> bool {
        let ok = len > 0 && len <= self.config.max_datagram;
        if !ok {
            self.stats.data_bad_size += 1;
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
        } else if !self.accept_feed(len) {
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
        self.nonces.retain(|_, forget| *forget > now_us);
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

/// A client's side: subscribes (or publishes) and keeps it fresh. The shell
/// sends what [`Client::poll`] and [`Client::handle`] return, from the
/// socket the feed arrives on (so a NAT maps both the same way), and hands
/// every control datagram that arrives there to [`Client::handle`].
#[derive(Debug)]
pub struct Client {
    keys: AccessKeys,
    kind: Kind,
    refresh_us: u64,
    rate_kbit: u32,
    cookie: [u8; COOKIE_LEN],
    /// The nonce of the request in flight.
    pending: Option<[u8; NONCE_LEN]>,
    next_us: u64,
    /// When the relay last acknowledged, µs since the Unix epoch.
    acked_us: Option<u64>,
    /// Challenges answered in a row without an acknowledgement: a relay
    /// that keeps challenging is not worth a request per challenge.
    challenges: u32,
}

/// How often a client asks again when no acknowledgement came.
pub const RETRY_US: u64 = 1_000_000;

impl Client {
    /// A client that asks for `kind` every `refresh_us`.
    pub fn new(keys: AccessKeys, kind: Kind, refresh_us: u64) -> Self {
        Self {
            keys,
            kind,
            refresh_us,
            rate_kbit: 0,
            cookie: [0; COOKIE_LEN],
            pending: None,
            next_us: 0,
            acked_us: None,
            challenges: 0,
        }
    }

    /// Asks the relay to cap what it sends us at `kbit` kilobits a second
    /// (a slow link: better dropped at the relay than on the way).
    pub fn with_rate_cap(mut self, kbit: u32) -> Self {
        self.rate_kbit = kbit;
        self
    }

    /// When the relay last acknowledged us.
    pub fn acked_us(&self) -> Option<u64> {
        self.acked_us
    }

    /// A request to send now, if one is due (`nonce` is fresh randomness,
    /// used only if so).
    pub fn poll(&mut self, now_us: u64, nonce: [u8; NONCE_LEN]) -> Option<[u8; REQUEST_LEN]> {
        if now_us < self.next_us {
            return None;
        }
        // Without an answer, ask again soon; with one, at the refresh.
        self.next_us = now_us.saturating_add(RETRY_US.min(self.refresh_us));
        self.challenges = 0;
        Some(self.request(now_us, nonce))
    }

    fn request(&mut self, now_us: u64, nonce: [u8; NONCE_LEN]) -> [u8; REQUEST_LEN] {
        self.pending = Some(nonce);
        encode_request(
            &self.keys,
            self.kind,
            now_us,
            nonce,
            self.cookie,
            self.rate_kbit,
        )
    }

    /// A request that leaves the relay: unsubscribe.
    pub fn goodbye(&self, now_us: u64, nonce: [u8; NONCE_LEN]) -> [u8; REQUEST_LEN] {
        encode_request(&self.keys, Kind::Unsubscribe, now_us, nonce, self.cookie, 0)
    }

    /// Takes a control datagram from the relay; returns a request to send
    /// at once (the answer to a challenge), if any. Anything that does not
    /// answer our request in flight is ignored.
    pub fn handle(
        &mut self,
        now_us: u64,
        datagram: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Option<[u8; REQUEST_LEN]> {
        let pending = self.pending?;
        match parse(datagram).ok()? {
            Message::Challenge {
                nonce: echoed,
                cookie,
            } if echoed == pending => {
                self.challenges += 1;
                if self.challenges > 2 {
                    return None;
                }
                self.cookie = cookie;
                Some(self.request(now_us, nonce))
            }
            Message::Ack {
                key_id,
                nonce: echoed,
                signed,
                mac,
                ..
            } if echoed == pending => {
                let key = self.keys.get(key_id)?;
                if !key.verify(signed, mac) {
                    return None;
                }
                self.pending = None;
                self.challenges = 0;
                self.acked_us = Some(now_us);
                self.next_us = now_us.saturating_add(self.refresh_us);
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
