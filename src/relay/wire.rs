//! Relay control datagrams on the wire (PROTOCOL.md, "Part 4: relay
//! control"): their layout, parsing and encoding, and the access keys that
//! MAC them.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::keys::{KeyId, Keyring};

pub(super) type HmacSha256 = Hmac<Sha256>;

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
/// The most nonces one IP address may hold in the cache: an eighth, so a
/// client (or a NAT of many) that floods accepted requests fills its share,
/// not everyone's.
pub const MAX_NONCES_PER_IP: usize = MAX_NONCES / 8;

/// HKDF info label of the access MAC key (21 bytes).
const ACCESS_LABEL: &[u8] = b"mcsec relay access v1";
/// HMAC label in front of a cookie's time and address (21 bytes).
pub(super) const COOKIE_LABEL: &[u8] = b"mcsec relay cookie v1";

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

/// A parsed request. The MAC is not checked yet: see [`Relay::handle`](super::Relay::handle).
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
    pub(super) signed: &'a [u8],
    pub(super) mac: &'a [u8; MAC_LEN],
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
    /// [`Client::handle`](super::Client::handle).
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
pub(super) struct AccessKey {
    pub(super) id: KeyId,
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
    pub(super) fn derive(key: &crate::GroupKey) -> Self {
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

    pub(super) fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.mac_key[..]) else {
            unreachable!("HMAC takes keys of any length");
        };
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of `tag` over `signed`.
    pub(super) fn verify(&self, signed: &[u8], tag: &[u8; MAC_LEN]) -> bool {
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
pub struct AccessKeys(pub(super) Vec<AccessKey>);

impl AccessKeys {
    /// Derives the MAC key of every key in `ring`.
    pub fn new(ring: &Keyring) -> Self {
        Self(ring.iter().map(AccessKey::derive).collect())
    }

    pub(super) fn get(&self, id: KeyId) -> Option<&AccessKey> {
        self.0.iter().find(|k| k.id == id)
    }

    pub(super) fn signing(&self) -> &AccessKey {
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

pub(super) fn encode_challenge(
    nonce: &[u8; NONCE_LEN],
    cookie: &[u8; COOKIE_LEN],
) -> [u8; CHALLENGE_LEN] {
    let mut out = [0u8; CHALLENGE_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4] = TYPE_CHALLENGE;
    out[8..24].copy_from_slice(nonce);
    out[24..].copy_from_slice(cookie);
    out
}

pub(super) fn encode_ack(key: &AccessKey, nonce: &[u8; NONCE_LEN], lease_s: u32) -> [u8; ACK_LEN] {
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
