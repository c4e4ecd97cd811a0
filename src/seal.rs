//! Sealing frames ([`Sealer`]) and opening them ([`Opener`]).
//!
//! ```text
//! channel_key = HKDF-SHA256[salt = none](secret, "mcsec v2 channel key" || key_id || channel_id, 32)
//! frame       = header || XChaCha20-Poly1305[channel_key, sender_id || seq](aad = header, body)
//! ```
//!
//! computed, with the same bytes, as
//!
//! ```text
//! subkey = HChaCha20(channel_key, sender_id)          once per sender session
//! frame  = header || ChaCha20-Poly1305[subkey, 00 00 00 00 || seq](aad = header, body)
//! ```
//!
//! so a sender, and a receiver for each known sender, keeps `subkey`'s
//! cipher and pays per frame exactly what ChaCha20-Poly1305 costs. The
//! 24-byte nonce never repeats under one channel key: the sender ID is 128
//! random bits per session and seq never repeats within one. Both sides
//! take the time as an argument and do no I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::TryRng;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::body::{Body, BodyError};
use crate::cipher::{FrameAead, NONCE_LEN, Session};
use crate::frame::{
    self, ChannelId, HEADER_LEN, Header, MAX_DATAGRAM_V4, MIN_FRAME_LEN, OVERHEAD, SenderId,
    TAG_LEN,
};
use crate::keys::{GroupKey, KeyId, Keyring};
use crate::replay::ReplayWindow;

/// The ChaCha20-Poly1305 of one sender session on one channel: its key is
/// `HChaCha20(channel_key, sender_id)`, the XChaCha20 subkey
/// (draft-irtf-cfrg-xchacha-03, section 2.3).
fn session_cipher(channel_key: &[u8; 32], sender_id: &SenderId) -> Session {
    // Wiped where it was made: no copy of the subkey is left in our memory.
    let mut subkey =
        chacha20::hchacha::<chacha20::R20>(channel_key.into(), sender_id.as_bytes().into());
    let cipher = Session::new(subkey.as_ref());
    subkey.as_mut_slice().zeroize();
    cipher
}

/// `00 00 00 00 || seq`: the last 8 bytes of the XChaCha20 nonce
/// `sender_id || seq`, as ChaCha20-Poly1305 takes them after HChaCha20 has
/// consumed the first 16.
fn nonce(seq: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    let (_zeros, seq_bytes) = nonce.split_at_mut(4);
    seq_bytes.copy_from_slice(&seq.to_be_bytes());
    nonce
}

/// The frame AEAD with an arbitrary key and nonce, for known-answer suites
/// such as Wycheproof, and each backend for benchmarks. Not part of the API.
#[doc(hidden)]
pub mod aead_for_tests {
    #[cfg(feature = "ring")]
    pub use crate::cipher::Ring;
    pub use crate::cipher::{FrameAead, KEY_LEN, NONCE_LEN, RustCrypto, Session};
}

/// Seals frames for one sender session on one channel: a fresh random
/// sender ID, seq from 0 up, a hard stop before seq would wrap, and a
/// refusal to seal in a process forked from the one that made it.
///
/// A restored virtual machine snapshot cannot be detected from inside: a
/// sealer that runs again from the same snapshot reuses nonces. Start a new
/// `Sealer` (a new sender ID) after a restore.
pub struct Sealer {
    key_id: KeyId,
    sender_id: SenderId,
    /// Shared with this session's [`SealKey`]s, which seal on other threads.
    cipher: Arc<Session>,
    /// The seq of the next frame; `None` once u64::MAX has been used.
    next_seq: Option<u64>,
    max_datagram: usize,
    /// The process this session belongs to: a copy made by `fork` would
    /// reuse its nonces.
    owner: crate::fork::Owner,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .field("sender_id", &self.sender_id)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A new sender session under `key` for `channel`, with a sender ID
    /// drawn from the operating system's CSPRNG. Frames are at most
    /// [`MAX_DATAGRAM_V4`] bytes until [`Sealer::set_max_datagram`] says
    /// otherwise.
    pub fn new(key: &GroupKey, channel: &ChannelId) -> Result<Self, SealError> {
        let mut id = [0u8; 16];
        rand::rngs::SysRng
            .try_fill_bytes(&mut id)
            .map_err(|_| SealError::Rng)?;
        Ok(Self::from_parts(key, channel, SenderId(id), 0))
    }

    fn from_parts(
        key: &GroupKey,
        channel: &ChannelId,
        sender_id: SenderId,
        first_seq: u64,
    ) -> Self {
        Self {
            key_id: key.id(),
            sender_id,
            cipher: Arc::new(session_cipher(&key.channel_key(channel), &sender_id)),
            next_seq: Some(first_seq),
            max_datagram: MAX_DATAGRAM_V4,
            owner: crate::fork::Owner::current(),
        }
    }

    /// A sender session with a chosen ID and first seq, for known-answer
    /// tests only.
    ///
    /// Two sealers with the same key, channel and sender ID reuse nonces,
    /// which destroys confidentiality and authenticity. Never use this to
    /// send.
    #[cfg(any(test, fuzzing, feature = "hazmat-test-vectors"))]
    pub fn with_sender_id(
        key: &GroupKey,
        channel: &ChannelId,
        sender_id: SenderId,
        first_seq: u64,
    ) -> Self {
        Self::from_parts(key, channel, sender_id, first_seq)
    }

    /// Sets the largest datagram this sealer will produce (at least 56).
    pub fn set_max_datagram(&mut self, max_datagram: usize) {
        self.max_datagram = max_datagram.max(MIN_FRAME_LEN);
    }

    /// The largest datagram this sealer will produce.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// The largest plaintext body that fits in one frame.
    pub fn max_plaintext(&self) -> usize {
        self.max_datagram - OVERHEAD
    }

    /// This session's sender ID.
    pub fn sender_id(&self) -> SenderId {
        self.sender_id
    }

    /// The key this session seals under.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The seq the next frame will carry, or `None` if the session is spent
    /// (start a new [`Sealer`]).
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// Seals `plaintext` (an encoded body) into the front of `out`,
    /// returning the datagram's length.
    pub fn seal(
        &mut self,
        now_us: u64,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let len = plaintext.len();
        self.check_size(len, out.len())?;
        let Some(dest) = out.get_mut(HEADER_LEN..HEADER_LEN + len) else {
            return Err(SealError::BufferTooSmall);
        };
        dest.copy_from_slice(plaintext);
        self.seal_in_place(now_us, out, len)
    }

    /// Encodes `body` into `out` after the header space and seals it there:
    /// the payload is copied once, from the caller's bytes into the frame.
    pub fn seal_body(
        &mut self,
        now_us: u64,
        body: &Body<'_>,
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let len = body.encoded_len();
        self.check_size(len, out.len())?;
        let Some(dest) = out.get_mut(HEADER_LEN..HEADER_LEN + len) else {
            return Err(SealError::BufferTooSmall);
        };
        body.encode_into(dest).map_err(SealError::Body)?;
        self.seal_in_place(now_us, out, len)
    }

    /// Seals in place: `buf[40..40 + plaintext_len]` already holds the
    /// plaintext. Writes the header before it and the tag after it, and
    /// returns the datagram's length (`plaintext_len + 56`).
    pub fn seal_in_place(
        &mut self,
        now_us: u64,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, SealError> {
        self.check_size(plaintext_len, buf.len())?;
        if !self.owner.is_current() {
            return forked();
        }
        let seq = self.next_seq.ok_or(SealError::SequenceExhausted)?;
        let header = Header {
            key_id: self.key_id,
            sender_id: self.sender_id,
            seq,
            timestamp_us: now_us,
        };
        let total = seal_frame(&self.cipher, &header, buf, plaintext_len)?;
        // Only a frame that was actually sealed uses up its seq.
        self.next_seq = seq.checked_add(1);
        Ok(total)
    }

    fn check_size(&self, plaintext_len: usize, buf_len: usize) -> Result<(), SealError> {
        let total = plaintext_len
            .checked_add(OVERHEAD)
            .ok_or(SealError::TooLarge)?;
        if total > self.max_datagram {
            return Err(SealError::TooLarge);
        }
        if total > buf_len {
            return Err(SealError::BufferTooSmall);
        }
        Ok(())
    }
}

/// Writes `header` into `buf[..40]`, seals `buf[40..40 + plaintext_len]`
/// in place under `header.seq`'s nonce and writes the tag after it;
/// returns the frame's length. The caller vouches that `header.seq` is
/// used once.
fn seal_frame(
    cipher: &Session,
    header: &Header,
    buf: &mut [u8],
    plaintext_len: usize,
) -> Result<usize, SealError> {
    let total = plaintext_len + OVERHEAD;
    let Some(frame) = buf.get_mut(..total) else {
        return Err(SealError::BufferTooSmall);
    };
    let Some((header_bytes, rest)) = frame.split_first_chunk_mut::<HEADER_LEN>() else {
        return Err(SealError::BufferTooSmall);
    };
    let Some((body, tag_out)) = rest.split_last_chunk_mut::<TAG_LEN>() else {
        return Err(SealError::BufferTooSmall);
    };
    header.encode_into(header_bytes);
    let tag = cipher
        .seal_in_place_detached(&nonce(header.seq), header_bytes, body)
        .ok_or(SealError::TooLarge)?;
    tag_out.copy_from_slice(&tag);
    Ok(total)
}

/// Out of line: the seal loop stays as tight as it was without the check.
#[cold]
#[inline(never)]
fn forked() -> Result<usize, SealError> {
    Err(SealError::Forked)
}

/// Why a frame could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The session used seq u64::MAX; a new [`Sealer`] (a new sender ID)
    /// must take over. Never let seq wrap: that reuses nonces.
    #[error("sender session exhausted its sequence numbers; start a new one")]
    SequenceExhausted,
    /// The frame would exceed the configured maximum datagram size.
    #[error("message too large for one frame")]
    TooLarge,
    /// The output buffer is smaller than the frame.
    #[error("output buffer too small for the frame")]
    BufferTooSmall,
    /// The body could not be encoded.
    #[error("{0}")]
    Body(BodyError),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
    /// This sealer was made in another process, which this one was forked
    /// from: both copies would seal with the same nonces. Make a new
    /// [`Sealer`] in this process.
    #[error("this sender session belongs to the process it was forked from; start a new one")]
    Forked,
    /// A signed batch holds as many frames as one manifest lists: close it
    /// ([`crate::signed::SignedSealer::close_batch`]) before sealing more.
    #[error("the signed batch is full; close it first")]
    BatchFull,
    /// An [`Unsealed`] frame given to the [`SealKey`] of another session.
    #[error("the frame belongs to another sender session")]
    WrongSession,
}

/// Receiver settings. `Default` gives PROTOCOL.md's defaults, except that
/// less skew is allowed into the future than into the past.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenerConfig {
    /// Largest age accepted: receiver clock - frame timestamp (default
    /// 30 s). A sender is forgotten only once its newest frame is this old.
    pub max_skew: Duration,
    /// Largest lead accepted: frame timestamp - receiver clock (default
    /// 5 s). Kept short because a key holder that stamps its frames in the
    /// future holds its slot in the sender table for this plus `max_skew`.
    /// Never more than `max_skew` (PROTOCOL.md allows less into the future
    /// than into the past, not more): a larger value acts as `max_skew`.
    pub max_future_skew: Duration,
    /// Largest datagram accepted (default 1472, IPv4 with a 1500-byte MTU).
    pub max_datagram: usize,
    /// Most senders tracked at once (default 4096).
    pub max_senders: usize,
    /// Strict start: reject every frame stamped before this time
    /// (microseconds since the Unix epoch; usually the receiver's start).
    pub not_before_us: Option<u64>,
}

/// Default allowed clock skew into the past.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(30);

/// Default allowed clock skew into the future.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(5);

/// Default size of the sender table.
pub const DEFAULT_MAX_SENDERS: usize = 4096;

impl Default for OpenerConfig {
    fn default() -> Self {
        Self {
            max_skew: DEFAULT_MAX_SKEW,
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
            max_datagram: MAX_DATAGRAM_V4,
            max_senders: DEFAULT_MAX_SENDERS,
            not_before_us: None,
        }
    }
}

/// Why a datagram was dropped. One counter in [`Stats`] each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// Longer than the configured maximum datagram.
    #[error("oversize datagram")]
    Oversize,
    /// Shorter than 56 bytes, or not an mcsec version 2 frame.
    #[error("malformed frame")]
    Malformed,
    /// Sealed under a key ID the keyring does not hold.
    #[error("unknown key")]
    UnknownKey,
    /// Timestamp outside the allowed skew, or before a strict start
    /// ([`Stats`] also counts which of these).
    #[error("stale frame")]
    Stale,
    /// The sender's seq was used before or is behind its window.
    #[error("replayed frame")]
    Replayed,
    /// The AEAD refused it: forged, corrupted, or sealed for another
    /// channel. Deliberately says no more.
    #[error("authentication failed")]
    AuthFailed,
    /// Authentic, but from a new sender while the table is full of senders
    /// that may not yet be evicted.
    #[error("sender table full")]
    SenderTableFull,
    /// Authentic, but a body variant this version does not know.
    #[error("unknown body variant")]
    UnknownBody,
    /// Authentic, but the body does not decode.
    #[error("malformed body")]
    BadBody,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Self; 9] = [
        Self::Oversize,
        Self::Malformed,
        Self::UnknownKey,
        Self::Stale,
        Self::Replayed,
        Self::AuthFailed,
        Self::SenderTableFull,
        Self::UnknownBody,
        Self::BadBody,
    ];

    /// The counter's name, as in stats output and test vectors.
    pub fn counter_name(self) -> &'static str {
        match self {
            Self::Oversize => "oversize",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::Stale => "stale",
            Self::Replayed => "replayed",
            Self::AuthFailed => "auth_failed",
            Self::SenderTableFull => "sender_table_full",
            Self::UnknownBody => "unknown_body",
            Self::BadBody => "bad_body",
        }
    }

    /// The reason whose counter has this name.
    pub fn from_counter_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.counter_name() == name)
    }
}

/// What an [`Opener`] has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Frames that authenticated and passed every check.
    pub opened: u64,
    /// See [`Reject::Oversize`].
    pub oversize: u64,
    /// See [`Reject::Malformed`].
    pub malformed: u64,
    /// See [`Reject::UnknownKey`].
    pub unknown_key: u64,
    /// See [`Reject::Stale`]: the sum of the three causes below.
    pub stale: u64,
    /// Stale: older than `max_skew`.
    pub stale_past: u64,
    /// Stale: further ahead than `max_future_skew`.
    pub stale_future: u64,
    /// Stale: stamped before a strict start, or at or before the newest
    /// frame of a sender this receiver forgot.
    pub stale_forgotten: u64,
    /// See [`Reject::Replayed`].
    pub replayed: u64,
    /// See [`Reject::AuthFailed`].
    pub auth_failed: u64,
    /// See [`Reject::SenderTableFull`].
    pub sender_table_full: u64,
    /// See [`Reject::UnknownBody`].
    pub unknown_body: u64,
    /// See [`Reject::BadBody`].
    pub bad_body: u64,
    /// Idle senders dropped from the table to make room.
    pub evicted: u64,
}

impl Stats {
    /// The counter for one reject reason.
    pub fn rejected(&self, reason: Reject) -> u64 {
        match reason {
            Reject::Oversize => self.oversize,
            Reject::Malformed => self.malformed,
            Reject::UnknownKey => self.unknown_key,
            Reject::Stale => self.stale,
            Reject::Replayed => self.replayed,
            Reject::AuthFailed => self.auth_failed,
            Reject::SenderTableFull => self.sender_table_full,
            Reject::UnknownBody => self.unknown_body,
            Reject::BadBody => self.bad_body,
        }
    }

    /// Every datagram rejected, for any reason.
    pub fn total_rejected(&self) -> u64 {
        Reject::ALL.iter().map(|r| self.rejected(*r)).sum()
    }

    fn count(&mut self, reason: Reject) {
        let counter = match reason {
            Reject::Oversize => &mut self.oversize,
            Reject::Malformed => &mut self.malformed,
            Reject::UnknownKey => &mut self.unknown_key,
            Reject::Stale => &mut self.stale,
            Reject::Replayed => &mut self.replayed,
            Reject::AuthFailed => &mut self.auth_failed,
            Reject::SenderTableFull => &mut self.sender_table_full,
            Reject::UnknownBody => &mut self.unknown_body,
            Reject::BadBody => &mut self.bad_body,
        };
        *counter = counter.saturating_add(1);
    }
}

/// A frame that passed every check: its header and its plaintext, which was
/// decrypted in place inside the caller's datagram buffer.
#[derive(Debug)]
pub struct Opened<'a> {
    /// The authenticated header.
    pub header: Header,
    /// The plaintext body bytes.
    pub plaintext: &'a [u8],
}

/// What the receiver keeps per (key, sender), created only after a frame
/// from that sender authenticated.
struct SenderState {
    /// ChaCha20-Poly1305 under `HChaCha20(channel_key, sender_id)`.
    cipher: Session,
    window: ReplayWindow,
    /// Newest timestamp accepted from this sender; it may be evicted once
    /// this falls behind the receiver's clock by more than the skew.
    newest_timestamp_us: u64,
}

/// The receiver's sender table, hashed with foldhash rather than SipHash:
/// a lookup is the largest cost `open` adds over the AEAD, and it runs on
/// every frame. HashDoS does not apply the usual way here. Sender IDs are
/// chosen by whoever sends, but an entry is inserted only after its frame
/// authenticated, and the table never holds more than `max_senders`: a
/// forged frame finds nothing and inserts nothing, so only key holders can
/// place entries, and the worst a colliding set of them can do is make a
/// lookup scan at most `max_senders` entries. The seed is random per table,
/// so collisions cannot be prepared offline either.
type SenderTable = HashMap<(KeyId, SenderId), SenderState, foldhash::fast::RandomState>;

/// Opens frames for a receiver: checks, in PROTOCOL.md's order, size, magic,
/// key, freshness, replay, the AEAD, and only then records the sender.
///
/// Nothing is allocated and no state is created for a frame that does not
/// authenticate. Every rejection is counted in [`Opener::stats`].
pub struct Opener {
    keyring: Keyring,
    channel: ChannelId,
    /// `channel_key` of each key in `keyring`, for `channel`: derived once
    /// per key, so an unknown sender costs one HChaCha20, not an HKDF.
    channel_keys: Arc<ChannelKeys>,
    /// The `channel_keys` of recent keyrings, newest last, so a
    /// [`Verdict`] reached under one of them can still be judged after a
    /// reload (see [`Opener::open_checked`]).
    retired_keys: Vec<Arc<ChannelKeys>>,
    config: OpenerConfig,
    /// `config.max_skew` in microseconds, and the future bound (never more),
    /// converted once rather than per frame.
    skew_us: u64,
    future_us: u64,
    senders: SenderTable,
    /// A lower bound on every tracked sender's `newest_timestamp_us`, so a
    /// full table can refuse a new sender in O(1) instead of scanning it
    /// for every replay of an authentic frame.
    oldest_newest_bound_us: u64,
    /// The newest timestamp of any sender evicted so far. A frame from an
    /// unknown sender stamped at or before it could be a replay of an
    /// evicted sender (possible only if the receiver's clock stepped back),
    /// so it is stale. Always older than the skew when set, so it never
    /// holds up an honest new sender.
    forgotten_high_water_us: Option<u64>,
    /// The same, per key ID, for senders a keyring reload forgot while
    /// their frames could still be fresh (up to `max_future_skew` ahead):
    /// kept per key, so retiring one key does not hold up new senders of
    /// the others.
    reload_marks: Vec<(KeyId, u64)>,
    stats: Stats,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("keyring", &self.keyring)
            .field("channel", &self.channel)
            .field("config", &self.config)
            .field("senders", &self.senders.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Opener {
    /// A receiver for `channel` that accepts every key in `keyring`.
    pub fn new(keyring: Keyring, channel: ChannelId, config: OpenerConfig) -> Self {
        Self {
            channel_keys: Arc::new(ChannelKeys::new(&keyring, &channel)),
            retired_keys: Vec::new(),
            keyring,
            channel,
            skew_us: micros(config.max_skew),
            future_us: micros(config.max_future_skew).min(micros(config.max_skew)),
            config,
            senders: SenderTable::default(),
            oldest_newest_bound_us: u64::MAX,
            forgotten_high_water_us: None,
            reload_marks: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration in force.
    pub fn config(&self) -> &OpenerConfig {
        &self.config
    }

    /// The channel this receiver opens frames for.
    pub fn channel(&self) -> &ChannelId {
        &self.channel
    }

    /// The keyring in force.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// How many senders the table holds.
    pub fn sender_count(&self) -> usize {
        self.senders.len()
    }

    /// Whether the table holds state for this sender under this key.
    pub fn knows_sender(&self, key_id: KeyId, sender_id: SenderId) -> bool {
        self.senders.contains_key(&(key_id, sender_id))
    }

    /// Swaps in a new keyring (after a rotation). Senders under keys that
    /// remain keep their replay windows; senders under removed keys are
    /// forgotten, and their frames are from then on `unknown_key`.
    pub fn set_keyring(&mut self, keyring: Keyring) {
        let old = &self.keyring;
        let marks = &mut self.reload_marks;
        self.senders.retain(|(key_id, _), state| {
            // Same ID is not enough: a new secret can collide on 32 bits, and
            // a cached cipher must never outlive its secret.
            let same_secret = match (old.get(*key_id), keyring.get(*key_id)) {
                (Some(a), Some(b)) => {
                    bool::from(a.secret().expose_bytes().ct_eq(b.secret().expose_bytes()))
                }
                _ => false,
            };
            if !same_secret {
                match marks.iter_mut().find(|(id, _)| id == key_id) {
                    Some((_, mark)) => *mark = (*mark).max(state.newest_timestamp_us),
                    None => marks.push((*key_id, state.newest_timestamp_us)),
                }
            }
            same_secret
        });
        let new = Arc::new(ChannelKeys::new(&keyring, &self.channel));
        let old = std::mem::replace(&mut self.channel_keys, new);
        // Kept while a worker's job (or a caller) still holds it, so its
        // verdicts can be judged; dropped once nothing does.
        self.retired_keys.retain(|keys| Arc::strong_count(keys) > 1);
        self.retired_keys.push(old);
        self.keyring = keyring;
    }

    /// Opens one datagram at receiver time `now_us` (microseconds since the
    /// Unix epoch), decrypting in place. The datagram's contents are
    /// unspecified after a rejection.
    pub fn open<'a>(&mut self, now_us: u64, datagram: &'a mut [u8]) -> Result<Opened<'a>, Reject> {
        let result = self.open_inner(now_us, datagram, true);
        self.counted(result)
    }

    /// Counts an outcome of opening: `opened`, or its reject reason. Every
    /// way to open (here and on workers) counts through this, once.
    pub(crate) fn counted<'a>(
        &mut self,
        result: Result<Opened<'a>, Reject>,
    ) -> Result<Opened<'a>, Reject> {
        match result {
            Ok(opened) => {
                self.stats.opened = self.stats.opened.saturating_add(1);
                Ok(opened)
            }
            Err(reason) => {
                self.stats.count(reason);
                Err(reason)
            }
        }
    }

    /// [`Opener::open`], then decodes the body (step 8). An authentic frame
    /// whose body is unknown or malformed still used its seq, and is
    /// counted as `unknown_body` or `bad_body` instead of `opened`.
    pub fn open_body<'a>(
        &mut self,
        now_us: u64,
        datagram: &'a mut [u8],
    ) -> Result<(Header, Body<'a>), Reject> {
        let opened = self.open(now_us, datagram)?;
        self.decode_opened(opened)
    }

    /// Step 8: decodes an opened frame's body; one that does not decode
    /// is counted as `unknown_body` or `bad_body` instead of `opened`.
    fn decode_opened<'a>(&mut self, opened: Opened<'a>) -> Result<(Header, Body<'a>), Reject> {
        match Body::decode(opened.plaintext) {
            Ok(body) => Ok((opened.header, body)),
            Err(err) => {
                let reason = match err {
                    BodyError::UnknownVariant(_) => Reject::UnknownBody,
                    _ => Reject::BadBody,
                };
                self.stats.opened = self.stats.opened.saturating_sub(1);
                self.stats.count(reason);
                Err(reason)
            }
        }
    }

    /// Steps 1 to 6 only: checks and decrypts in place like
    /// [`Opener::open`], but commits nothing. The sender's window does not
    /// move and no table entry is made; [`Opener::commit`] does that later,
    /// once something else (a signature) vouches for the frame. A success
    /// is not counted as `opened` until the commit; rejections are counted.
    pub fn open_uncommitted<'a>(
        &mut self,
        now_us: u64,
        datagram: &'a mut [u8],
    ) -> Result<Opened<'a>, Reject> {
        self.open_inner(now_us, datagram, false)
            .inspect_err(|reason| self.stats.count(*reason))
    }

    /// Counts a rejection found outside the opener (a body that does not
    /// decode, after [`Opener::open_uncommitted`]), and returns it.
    pub fn count_rejected(&mut self, reason: Reject) -> Reject {
        self.stats.count(reason);
        reason
    }

    /// Step 7 for a frame that [`Opener::open_uncommitted`] accepted:
    /// checks its seq against the window again (a copy may have been
    /// committed since) and commits it, creating the sender's state if it is
    /// new. Counts `opened`, or the reason (`replayed`,
    /// `sender_table_full`, `unknown_key` after a reload).
    pub fn commit(&mut self, now_us: u64, header: &Header) -> Result<(), Reject> {
        match self.commit_inner(now_us, header) {
            Ok(()) => {
                self.stats.opened = self.stats.opened.saturating_add(1);
                Ok(())
            }
            Err(reason) => {
                self.stats.count(reason);
                Err(reason)
            }
        }
    }

    fn commit_inner(&mut self, now_us: u64, header: &Header) -> Result<(), Reject> {
        let id = (header.key_id, header.sender_id);
        if let Some(state) = self.senders.get_mut(&id) {
            if state.window.check(header.seq).is_err() {
                return Err(Reject::Replayed);
            }
            state.window.commit(header.seq);
            state.newest_timestamp_us = state.newest_timestamp_us.max(header.timestamp_us);
            return Ok(());
        }
        let Some(channel_key) = self.channel_keys.get(header.key_id) else {
            return Err(Reject::UnknownKey);
        };
        let cipher = session_cipher(channel_key, &header.sender_id);
        self.make_room(now_us, self.skew_us)?;
        self.insert_sender(id, cipher, header);
        Ok(())
    }

    fn insert_sender(&mut self, id: (KeyId, SenderId), cipher: Session, header: &Header) {
        self.oldest_newest_bound_us = self.oldest_newest_bound_us.min(header.timestamp_us);
        let mut window = ReplayWindow::new();
        window.commit(header.seq);
        self.senders.insert(
            id,
            SenderState {
                cipher,
                window,
                newest_timestamp_us: header.timestamp_us,
            },
        );
    }

    fn open_inner<'a>(
        &mut self,
        now_us: u64,
        datagram: &'a mut [u8],
        commit: bool,
    ) -> Result<Opened<'a>, Reject> {
        // 1. Length.
        if datagram.len() > self.config.max_datagram {
            return Err(Reject::Oversize);
        }
        if datagram.len() < MIN_FRAME_LEN {
            return Err(Reject::Malformed);
        }
        // 2. Magic and version.
        let parts = frame::split_frame(datagram).map_err(|_| Reject::Malformed)?;
        let header = parts.header;
        // 3. Key (its channel key is looked up again for a new sender).
        if self.channel_keys.get(header.key_id).is_none() {
            return Err(Reject::UnknownKey);
        }
        // 4. Freshness.
        self.check_fresh(now_us, &header)?;
        let skew_us = self.skew_us;
        let id = (header.key_id, header.sender_id);
        let nonce = nonce(header.seq);
        // A known sender: one table lookup serves steps 5 to 7.
        if let Some(state) = self.senders.get_mut(&id) {
            // 5. Replay pre-check.
            if state.window.check(header.seq).is_err() {
                return Err(Reject::Replayed);
            }
            // 6. AEAD, with the cached per-sender key.
            if !state.cipher.open_in_place_detached(
                &nonce,
                parts.header_bytes,
                parts.ciphertext,
                parts.tag,
            ) {
                return Err(Reject::AuthFailed);
            }
            // 7. Commit.
            if commit {
                state.window.commit(header.seq);
                state.newest_timestamp_us = state.newest_timestamp_us.max(header.timestamp_us);
            }
            return Ok(Opened {
                header,
                plaintext: parts.ciphertext,
            });
        }
        // A new sender. 5. It has no window; the only history is what was
        // forgotten (see `forgotten_high_water_us`).
        self.check_not_forgotten(&header)?;
        // 6. AEAD under the session's subkey, one HChaCha20 block on the
        // stack, kept only if the frame authenticates.
        let Some(channel_key) = self.channel_keys.get(header.key_id) else {
            return Err(Reject::UnknownKey);
        };
        let cipher = session_cipher(channel_key, &header.sender_id);
        if !cipher.open_in_place_detached(&nonce, parts.header_bytes, parts.ciphertext, parts.tag) {
            return Err(Reject::AuthFailed);
        }
        // 7. Commit, creating the sender's state.
        if commit {
            self.make_room(now_us, skew_us)?;
            self.insert_sender(id, cipher, &header);
        }
        Ok(Opened {
            header,
            plaintext: parts.ciphertext,
        })
    }

    /// Step 4, freshness: at most max_skew old, at most max_future_skew
    /// ahead, and not before a strict start.
    fn check_fresh(&mut self, now_us: u64, header: &Header) -> Result<(), Reject> {
        if now_us.saturating_sub(header.timestamp_us) > self.skew_us {
            self.stats.stale_past = self.stats.stale_past.saturating_add(1);
            return Err(Reject::Stale);
        }
        if header.timestamp_us.saturating_sub(now_us) > self.future_us {
            self.stats.stale_future = self.stats.stale_future.saturating_add(1);
            return Err(Reject::Stale);
        }
        if self
            .config
            .not_before_us
            .is_some_and(|start| header.timestamp_us < start)
        {
            self.stats.stale_forgotten = self.stats.stale_forgotten.saturating_add(1);
            return Err(Reject::Stale);
        }
        Ok(())
    }

    /// Step 5 for a sender not in the table: stale if it is stamped at or
    /// before the newest frame of a sender this receiver forgot.
    fn check_not_forgotten(&mut self, header: &Header) -> Result<(), Reject> {
        let reload_mark = self
            .reload_marks
            .iter()
            .find_map(|(id, mark)| (*id == header.key_id).then_some(*mark));
        if self
            .forgotten_high_water_us
            .max(reload_mark)
            .is_some_and(|mark| header.timestamp_us <= mark)
        {
            self.stats.stale_forgotten = self.stats.stale_forgotten.saturating_add(1);
            return Err(Reject::Stale);
        }
        Ok(())
    }

    /// Makes room for one more sender, evicting the longest-idle one if the
    /// table is full and that sender's newest frame is already stale (so
    /// none of its frames can be replayed once it is forgotten).
    fn make_room(&mut self, now_us: u64, skew_us: u64) -> Result<(), Reject> {
        if self.senders.len() < self.config.max_senders {
            return Ok(());
        }
        let idle_before = now_us.saturating_sub(skew_us);
        // O(1) refusal while no tracked sender can be idle yet: replaying an
        // authentic frame of a new sender at a full table must cost no more
        // than a forged frame does.
        if self.oldest_newest_bound_us >= idle_before {
            return Err(Reject::SenderTableFull);
        }
        let oldest = self
            .senders
            .iter()
            .min_by_key(|(_, s)| s.newest_timestamp_us)
            .map(|(id, s)| (*id, s.newest_timestamp_us));
        let Some((id, newest)) = oldest else {
            return Err(Reject::SenderTableFull);
        };
        // The true minimum is a valid bound, and still one after the
        // oldest is removed.
        self.oldest_newest_bound_us = newest;
        if newest >= idle_before {
            return Err(Reject::SenderTableFull);
        }
        self.senders.remove(&id);
        self.forgotten_high_water_us = self.forgotten_high_water_us.max(Some(newest));
        self.stats.evicted = self.stats.evicted.saturating_add(1);
        Ok(())
    }
}

/// A duration in microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Each key's `channel_key` for one channel, as one keyring gave them:
/// shared, read-only, with the threads that check frames for an
/// [`Opener`] ([`OpenWorker`]).
pub struct ChannelKeys {
    /// Unique in the process: names this set in a [`Verdict`].
    generation: u64,
    keys: Vec<(KeyId, Zeroizing<[u8; 32]>)>,
}

impl std::fmt::Debug for ChannelKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelKeys")
            .field("generation", &self.generation)
            .field(
                "key_ids",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ChannelKeys {
    fn new(keyring: &Keyring, channel: &ChannelId) -> Self {
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            keys: keyring
                .iter()
                .map(|key| (key.id(), key.channel_key(channel)))
                .collect(),
        }
    }

    fn get(&self, key_id: KeyId) -> Option<&[u8; 32]> {
        self.keys
            .iter()
            .find_map(|(id, key)| (*id == key_id).then_some(&**key))
    }
}

mod parallel;
pub use parallel::{OpenWorker, SealKey, Unsealed, Verdict};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::GroupSecret;
    use crate::replay::REPLAY_WINDOW_FRAMES;
    use chacha20poly1305::KeyInit;
    use chacha20poly1305::aead::AeadInOut;
    use chacha20poly1305::aead::inout::InOutBuf;
    use std::collections::HashSet;

    const NOW: u64 = 1_790_000_000_000_000;
    const SEC: u64 = 1_000_000;

    fn key(byte: u8) -> GroupKey {
        GroupKey::new(GroupSecret::from_bytes([byte; 32]), None)
    }

    /// The channel every test seals for, unless it says otherwise.
    fn ch() -> ChannelId {
        ChannelId::group("239.255.0.1:5000".parse().unwrap())
    }

    fn opener(key: &GroupKey) -> Opener {
        Opener::new(Keyring::single(key.clone()), ch(), OpenerConfig::default())
    }

    fn seal(sealer: &mut Sealer, now: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let n = sealer
            .seal_body(now, &Body::Data(payload), &mut buf)
            .unwrap();
        buf.truncate(n);
        buf
    }

    fn open(o: &mut Opener, now: u64, frame: &[u8]) -> Result<Vec<u8>, Reject> {
        let mut copy = frame.to_vec();
        let (_, body) = o.open_body(now, &mut copy)?;
        let Body::Data(data) = body else {
            panic!("test frames carry Data bodies")
        };
        Ok(data.to_vec())
    }

    #[test]
    fn seal_then_open() {
        let k = key(1);
        let mut s = Sealer::new(&k, &ch()).unwrap();
        let mut o = opener(&k);
        for i in 0..10u8 {
            let frame = seal(&mut s, NOW + u64::from(i), &[i; 5]);
            assert_eq!(frame.len(), OVERHEAD + 2 + 5);
            assert_eq!(open(&mut o, NOW, &frame), Ok(vec![i; 5]));
        }
        assert_eq!(o.stats().opened, 10);
        assert_eq!(o.stats().total_rejected(), 0);
        assert_eq!(o.sender_count(), 1);
    }

    #[test]
    fn every_reject_reason_is_counted() {
        let k = key(2);
        let mut s = Sealer::new(&k, &ch()).unwrap();
        let mut o = opener(&k);
        let good = seal(&mut s, NOW, b"hello");
        assert!(open(&mut o, NOW, &good).is_ok());

        let mut cases: Vec<(Reject, Vec<u8>)> = Vec::new();
        cases.push((Reject::Oversize, vec![0u8; MAX_DATAGRAM_V4 + 1]));
        cases.push((Reject::Malformed, good[..MIN_FRAME_LEN - 1].to_vec()));
        // A version 1 frame: refused as malformed, never half-read.
        let mut bad_magic = seal(&mut s, NOW, b"x");
        bad_magic[3] = 1;
        cases.push((Reject::Malformed, bad_magic));
        cases.push((
            Reject::UnknownKey,
            seal(&mut Sealer::new(&key(3), &ch()).unwrap(), NOW, b"x"),
        ));
        cases.push((Reject::Stale, seal(&mut s, NOW - 31 * SEC, b"x")));
        cases.push((Reject::Stale, seal(&mut s, NOW + 6 * SEC, b"x")));
        cases.push((
            Reject::AuthFailed,
            seal(
                &mut Sealer::new(&k, &ChannelId::named("other").unwrap()).unwrap(),
                NOW,
                b"x",
            ),
        ));
        cases.push((Reject::Replayed, good.clone()));
        let mut tampered = seal(&mut s, NOW, b"x");
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        cases.push((Reject::AuthFailed, tampered));
        let mut unknown = vec![0u8; 64];
        let n = s.seal(NOW, &[0x7f, 0x00], &mut unknown).unwrap();
        cases.push((Reject::UnknownBody, unknown[..n].to_vec()));
        let n = s.seal(NOW, &[0x00, 0x05, 0x01], &mut unknown).unwrap();
        cases.push((Reject::BadBody, unknown[..n].to_vec()));

        for (reason, frame) in cases {
            let before = o.stats().rejected(reason);
            let total = o.stats().total_rejected();
            assert_eq!(open(&mut o, NOW, &frame), Err(reason));
            assert_eq!(o.stats().rejected(reason), before + 1, "{reason:?}");
            assert_eq!(o.stats().total_rejected(), total + 1, "{reason:?}");
        }
        assert_eq!(o.stats().opened, 1);

        // Sender table full: a table of one, whose sender is not idle.
        let mut small = Opener::new(
            Keyring::single(k.clone()),
            ch(),
            OpenerConfig {
                max_senders: 1,
                ..OpenerConfig::default()
            },
        );
        assert!(open(&mut small, NOW, &seal(&mut s, NOW, b"a")).is_ok());
        let mut other = Sealer::new(&k, &ch()).unwrap();
        assert_eq!(
            open(&mut small, NOW, &seal(&mut other, NOW, b"b")),
            Err(Reject::SenderTableFull)
        );
        assert_eq!(small.stats().sender_table_full, 1);
        assert!(!small.knows_sender(k.id(), other.sender_id()));
    }

    #[test]
    fn counter_names_are_distinct_and_round_trip() {
        let names: HashSet<_> = Reject::ALL.iter().map(|r| r.counter_name()).collect();
        assert_eq!(names.len(), Reject::ALL.len());
        for r in Reject::ALL {
            assert_eq!(Reject::from_counter_name(r.counter_name()), Some(r));
        }
    }

    #[test]
    fn forged_frames_never_create_sender_state() {
        let k = key(4);
        let mut o = opener(&k);
        let mut s = Sealer::new(&k, &ch()).unwrap();
        let frame = seal(&mut s, NOW, b"payload");
        // Flip every bit of the frame in turn.
        for bit in 0..frame.len() * 8 {
            let mut f = frame.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            assert!(open(&mut o, NOW, &f).is_err(), "bit {bit}");
        }
        assert_eq!(o.sender_count(), 0);
        assert_eq!(o.stats().opened, 0);
        // The untouched frame still opens: no forged copy consumed its seq.
        assert!(open(&mut o, NOW, &frame).is_ok());
        assert_eq!(o.sender_count(), 1);
    }

    #[test]
    fn tampered_frame_with_known_sender_does_not_move_the_window() {
        let k = key(5);
        let mut o = opener(&k);
        let mut s = Sealer::new(&k, &ch()).unwrap();
        assert!(open(&mut o, NOW, &seal(&mut s, NOW, b"a")).is_ok());
        // A forged frame claiming seq u64::MAX for the known sender.
        let mut forged = seal(&mut s, NOW, b"b");
        forged[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(open(&mut o, NOW, &forged), Err(Reject::AuthFailed));
        // Frames that follow are still accepted.
        for _ in 0..5 {
            assert!(open(&mut o, NOW, &seal(&mut s, NOW, b"c")).is_ok());
        }
    }

    #[test]
    fn replays_rejected_within_window_and_beyond() {
        let k = key(6);
        let mut o = opener(&k);
        let mut s = Sealer::new(&k, &ch()).unwrap();
        let frames: Vec<_> = (0..REPLAY_WINDOW_FRAMES + 50)
            .map(|_| seal(&mut s, NOW, b""))
            .collect();
        // Deliver out of order: odd seqs first, then even.
        for f in frames.iter().skip(1).step_by(2).take(20) {
            assert!(open(&mut o, NOW, f).is_ok());
        }
        for f in frames.iter().step_by(2).take(20) {
            assert!(open(&mut o, NOW, f).is_ok());
        }
        for f in frames.iter().take(40) {
            assert_eq!(open(&mut o, NOW, f), Err(Reject::Replayed));
        }
        assert!(open(&mut o, NOW, frames.last().unwrap()).is_ok());
        // Newest is now W + 49. Seq 49 is W behind: out of the window,
        // though never delivered. Seq 50 is the oldest still inside.
        assert_eq!(open(&mut o, NOW, &frames[49]), Err(Reject::Replayed));
        assert!(open(&mut o, NOW, &frames[50]).is_ok());
        assert_eq!(o.stats().replayed, 41);
    }

    #[test]
    fn skew_edges_and_strict_start() {
        let k = key(7);
        let mut s = Sealer::new(&k, &ch()).unwrap();
        let mut o = opener(&k);
        // Both edges inclusive: 30 s into the past, 5 s into the future.
        assert!(open(&mut o, NOW, &seal(&mut s, NOW - 30 * SEC, b"")).is_ok());
        assert!(open(&mut o, NOW, &seal(&mut s, NOW + 5 * SEC, b"")).is_ok());
        assert_eq!(
            open(&mut o, NOW, &seal(&mut s, NOW - 30 * SEC - 1, b"")),
            Err(Reject::Stale)
        );
        assert_eq!(
            open(&mut o, NOW, &seal(&mut s, NOW + 5 * SEC + 1, b"")),
            Err(Reject::Stale)
        );
        assert_eq!(
            (
                o.stats().stale,
                o.stats().stale_past,
                o.stats().stale_future
            ),
            (2, 1, 1)
        );
        // Each side is set on its own.
        let mut wide = Opener::new(
            Keyring::single(k.clone()),
            ch(),
            OpenerConfig {
                max_skew: Duration::from_secs(2),
                max_future_skew: Duration::from_secs(3600),
                ..OpenerConfig::default()
            },
        );
        // The future bound never exceeds the past one: 60 s ahead acts as 2 s.
        assert!(open(&mut wide, NOW, &seal(&mut s, NOW + 2 * SEC, b"")).is_ok());
        assert_eq!(
            open(&mut wide, NOW, &seal(&mut s, NOW + 2 * SEC + 1, b"")),
            Err(Reject::Stale)
        );
        assert_eq!(wide.stats().stale_future, 1);
        assert_eq!(
            open(&mut wide, NOW, &seal(&mut s, NOW - 2 * SEC - 1, b"")),
            Err(Reject::Stale)
        );
        assert_eq!(wide.stats().stale_past, 1);
        let mut strict = Opener::new(
            Keyring::single(k.clone()),
            ch(),
            OpenerConfig {
                not_before_us: Some(NOW),
                ..OpenerConfig::default()
            },
        );
        assert_eq!(
            open(&mut strict, NOW + SEC, &seal(&mut s, NOW - 1, b"")),
            Err(Reject::Stale)
        );
        assert!(open(&mut strict, NOW + SEC, &seal(&mut s, NOW, b"")).is_ok());
        assert_eq!(
            (strict.stats().stale, strict.stats().stale_forgotten),
            (1, 1)
        );
    }

    #[test]
    fn a_sender_stamping_ahead_holds_its_slot_only_for_both_skews() {
        // The pinning attack: a key holder stamps its frames as far ahead as
        // allowed. Its slot frees once its newest stamp is max_skew old,
        // that is max_future_skew + max_skew after it sent.
        let k = key(24);
        let mut o = Opener::new(
            Keyring::single(k.clone()),
            ch(),
            OpenerConfig {
                max_senders: 1,
                ..OpenerConfig::default()
            },
        );
        let mut pinner = Sealer::new(&k, &ch()).unwrap();
        assert!(open(&mut o, NOW, &seal(&mut pinner, NOW + 5 * SEC, b"")).is_ok());
        let mut honest = Sealer::new(&k, &ch()).unwrap();
        let at_35 = NOW + 35 * SEC;
        assert_eq!(
            open(&mut o, at_35, &seal(&mut honest, at_35, b"")),
            Err(Reject::SenderTableFull)
        );
        let after = at_35 + 1;
        assert!(open(&mut o, after, &seal(&mut honest, after, b"")).is_ok());
        // Stamps beyond the future skew never get a slot at all.
        let mut far = Sealer::new(&k, &ch()).unwrap();
        assert_eq!(
            open(&mut o, after, &seal(&mut far, after + 5 * SEC + 1, b"")),
            Err(Reject::Stale)
        );
        assert_eq!(o.stats().stale_future, 1);
    }

    #[test]
    fn idle_senders_are_evicted_busy_ones_are_not() {
        let k = key(8);
        let mut o = Opener::new(
            Keyring::single(k.clone()),
            ch(),
            OpenerConfig {
                max_senders: 2,
                ..OpenerConfig::default()
            },
        );
        let mut a = Sealer::new(&k, &ch()).unwrap();
        let mut b = Sealer::new(&k, &ch()).unwrap();
        let mut c = Sealer::new(&k, &ch()).unwrap();
        let a0 = seal(&mut a, NOW, b"a0");
        assert!(open(&mut o, NOW, &a0).is_ok());
        assert!(open(&mut o, NOW + 10 * SEC, &seal(&mut b, NOW + 10 * SEC, b"b")).is_ok());
        // At NOW + 30 s, a's newest frame (NOW) is exactly at the skew: not
        // yet stale, so a may not be evicted.
        assert_eq!(
            open(&mut o, NOW + 30 * SEC, &seal(&mut c, NOW + 30 * SEC, b"c")),
            Err(Reject::SenderTableFull)
        );
        // A microsecond later it may.
        let later = NOW + 30 * SEC + 1;
        assert!(open(&mut o, later, &seal(&mut c, later, b"c")).is_ok());
        assert_eq!(o.stats().evicted, 1);
        assert!(!o.knows_sender(k.id(), a.sender_id()));
        assert!(o.knows_sender(k.id(), b.sender_id()));
        // a's old frame cannot come back: it is stale.
        assert_eq!(open(&mut o, later, &a0), Err(Reject::Stale));
    }

    #[test]
    fn a_full_table_refuses_without_scanning_until_someone_can_be_idle() {
        let k = key(18);
        let mut o = Opener::new(
            Keyring::single(k.clone()),
            ch(),
            OpenerConfig {
                max_senders: 3,
                ..OpenerConfig::default()
            },
        );
        for i in 0..3 {
            let mut s = Sealer::new(&k, &ch()).unwrap();
            assert!(open(&mut o, NOW, &seal(&mut s, NOW + i, b"")).is_ok());
        }
        assert_eq!(o.oldest_newest_bound_us, NOW);
        let mut late = Sealer::new(&k, &ch()).unwrap();
        let frame = seal(&mut late, NOW + 5 * SEC, b"");
        for _ in 0..10 {
            assert_eq!(
                open(&mut o, NOW + 5 * SEC, &frame),
                Err(Reject::SenderTableFull)
            );
        }
        assert_eq!(o.stats().sender_table_full, 10);
        // Once the oldest is past the skew, the scan runs and evicts it.
        let later = NOW + 31 * SEC;
        assert!(open(&mut o, later, &seal(&mut late, later, b"")).is_ok());
        assert_eq!(o.stats().evicted, 1);
    }

    #[test]
    fn a_clock_step_back_does_not_revive_a_forgotten_sender() {
        let k = key(19);
        let mut o = Opener::new(
            Keyring::single(k.clone()),
            ch(),
            OpenerConfig {
                max_senders: 1,
                ..OpenerConfig::default()
            },
        );
        let mut a = Sealer::new(&k, &ch()).unwrap();
        let a0 = seal(&mut a, NOW, b"a0");
        assert!(open(&mut o, NOW, &a0).is_ok());
        let later = NOW + 60 * SEC;
        let mut b = Sealer::new(&k, &ch()).unwrap();
        assert!(open(&mut o, later, &seal(&mut b, later, b"b")).is_ok());
        assert_eq!(o.stats().evicted, 1);
        // Free the slot, then step the clock back to when a0 was fresh.
        o.set_keyring(Keyring::single(key(20)));
        o.set_keyring(Keyring::single(k.clone()));
        assert_eq!(o.sender_count(), 0);
        assert_eq!(open(&mut o, NOW, &a0), Err(Reject::Stale));
    }

    #[test]
    fn retiring_one_key_does_not_hold_up_new_senders_of_another() {
        // Found in review: one receiver-wide mark made every new sender,
        // under any key, stale until a retired key's newest stamp (up to
        // max_future_skew ahead) had passed.
        let (k1, k2) = (key(27), key(28));
        let both = format!("{}\n{}\n", *k1.to_line(), *k2.to_line());
        let mut o = Opener::new(
            Keyring::parse(&both).unwrap(),
            ch(),
            OpenerConfig::default(),
        );
        let mut ahead = Sealer::new(&k1, &ch()).unwrap();
        let stamped_ahead = seal(&mut ahead, NOW + 5 * SEC, b"");
        assert!(open(&mut o, NOW, &stamped_ahead).is_ok());
        o.set_keyring(Keyring::single(k2.clone()));
        let mut behind = Sealer::new(&k2, &ch()).unwrap();
        assert!(open(&mut o, NOW, &seal(&mut behind, NOW - 9 * SEC, b"")).is_ok());
        // The mark still guards the key whose senders were forgotten.
        o.set_keyring(Keyring::parse(&both).unwrap());
        assert_eq!(open(&mut o, NOW, &stamped_ahead), Err(Reject::Stale));
        let mut other = Sealer::new(&k1, &ch()).unwrap();
        assert_eq!(
            open(&mut o, NOW, &seal(&mut other, NOW + 4 * SEC, b"")),
            Err(Reject::Stale)
        );
        assert_eq!(o.stats().stale_forgotten, 2);
    }

    #[test]
    fn set_keyring_drops_senders_whose_secret_changed() {
        let k = key(21);
        let mut o = opener(&k);
        let mut s = Sealer::new(&k, &ch()).unwrap();
        assert!(open(&mut o, NOW, &seal(&mut s, NOW, b"")).is_ok());
        o.set_keyring(Keyring::single(k.clone()));
        assert_eq!(o.sender_count(), 1, "the same secret keeps its senders");
        o.set_keyring(Keyring::single(key(22)));
        assert_eq!(o.sender_count(), 0);
    }

    #[test]
    fn set_keyring_drops_a_sender_whose_key_id_stays_but_secret_changes() {
        // Two secrets under one key ID: a 32-bit collision, about 2^17
        // SHA-256s to find, so a test-only constructor makes one.
        let old = key(25);
        let new = GroupKey::colliding(GroupSecret::from_bytes([26; 32]), old.id());
        assert_eq!(old.id(), new.id());
        let mut o = opener(&old);
        let mut s_old = Sealer::new(&old, &ch()).unwrap();
        let mut s_new = Sealer::new(&new, &ch()).unwrap();
        let early = seal(&mut s_old, NOW, b"old");
        assert!(open(&mut o, NOW, &early).is_ok());
        assert_eq!(
            open(&mut o, NOW, &seal(&mut s_new, NOW, b"")),
            Err(Reject::AuthFailed),
            "a frame of the new secret before the reload"
        );
        o.set_keyring(Keyring::single(new.clone()));
        // The old sender's state (and its cached subkey) is gone ...
        assert_eq!(o.sender_count(), 0);
        assert!(!o.knows_sender(old.id(), s_old.sender_id()));
        // ... the channel key is the new secret's ...
        assert!(open(&mut o, NOW + 1, &seal(&mut s_new, NOW + 1, b"new")).is_ok());
        // ... and the old secret's frames fail, old or new.
        assert_eq!(
            open(&mut o, NOW + 1, &seal(&mut s_old, NOW + 1, b"")),
            Err(Reject::AuthFailed)
        );
        assert_eq!(open(&mut o, NOW + 1, &early), Err(Reject::Stale));
    }

    #[test]
    fn sealer_stops_before_seq_wraps() {
        let k = key(9);
        let mut s = Sealer::with_sender_id(&k, &ch(), SenderId([1; 16]), u64::MAX - 1);
        let mut buf = [0u8; 128];
        assert!(s.seal(NOW, b"", &mut buf).is_ok());
        assert_eq!(s.next_seq(), Some(u64::MAX));
        assert!(s.seal(NOW, b"", &mut buf).is_ok());
        let header = frame::peek_header(&buf).unwrap();
        assert_eq!(header.seq, u64::MAX);
        assert_eq!(s.next_seq(), None);
        assert_eq!(
            s.seal(NOW, b"", &mut buf),
            Err(SealError::SequenceExhausted)
        );
        assert_eq!(
            s.seal(NOW, b"", &mut buf),
            Err(SealError::SequenceExhausted)
        );
    }

    #[test]
    fn seq_u64_max_from_a_key_holder_keeps_the_window_sound() {
        let k = key(10);
        let mut o = opener(&k);
        let mut honest = Sealer::new(&k, &ch()).unwrap();
        assert!(open(&mut o, NOW, &seal(&mut honest, NOW, b"1")).is_ok());
        let mut top = Sealer::with_sender_id(&k, &ch(), SenderId([2; 16]), u64::MAX);
        let top_frame = seal(&mut top, NOW, b"top");
        assert!(open(&mut o, NOW, &top_frame).is_ok());
        assert_eq!(open(&mut o, NOW, &top_frame), Err(Reject::Replayed));
        // Another sender is unaffected.
        assert!(open(&mut o, NOW, &seal(&mut honest, NOW, b"2")).is_ok());
    }

    #[test]
    fn a_failed_seal_does_not_use_a_seq() {
        let k = key(11);
        let mut s = Sealer::new(&k, &ch()).unwrap();
        let mut small = [0u8; 10];
        assert_eq!(
            s.seal(NOW, b"abc", &mut small),
            Err(SealError::BufferTooSmall)
        );
        let big = vec![0u8; MAX_DATAGRAM_V4];
        let mut out = vec![0u8; 4096];
        assert_eq!(s.seal(NOW, &big, &mut out), Err(SealError::TooLarge));
        assert_eq!(s.next_seq(), Some(0));
        // The largest plaintext that fits makes exactly a maximum datagram.
        let fits = vec![0u8; s.max_plaintext()];
        assert_eq!(s.seal(NOW, &fits, &mut out), Ok(MAX_DATAGRAM_V4));
        assert_eq!(s.next_seq(), Some(1));
    }

    #[test]
    fn a_million_seals_never_repeat_a_nonce() {
        use chacha20poly1305::XChaCha20Poly1305;
        let k = key(12);
        let channel = ch();
        let mut s = Sealer::new(&k, &channel).unwrap();
        let sender = s.sender_id();
        // The textbook AEAD under the channel key, outside the sealer: a
        // frame verifies under it only with the nonce the sealer really
        // used, so the header's (sender, seq) is proven to be the nonce.
        let x = XChaCha20Poly1305::new((&*k.channel_key(&channel)).into());
        let mut nonces = HashSet::with_capacity(1_000_000);
        let mut buf = [0u8; 64];
        for expected in 0..1_000_000u64 {
            let n = s.seal(NOW, b"", &mut buf).unwrap();
            let header = frame::peek_header(&buf[..n]).unwrap();
            assert_eq!(header.sender_id, sender);
            assert_eq!(header.seq, expected);
            let mut nonce = [0u8; 24];
            nonce[..16].copy_from_slice(sender.as_bytes());
            nonce[16..].copy_from_slice(&header.seq.to_be_bytes());
            let (aad, rest) = buf[..n].split_at_mut(HEADER_LEN);
            let (body, tag) = rest.split_at_mut(n - OVERHEAD);
            let tag = chacha20poly1305::Tag::from(<[u8; 16]>::try_from(&*tag).unwrap());
            assert!(
                x.decrypt_inout_detached((&nonce).into(), aad, InOutBuf::from(body), &tag)
                    .is_ok(),
                "frame {expected} was not sealed with nonce sender_id || seq"
            );
            assert!(nonces.insert(nonce), "nonce repeated at {expected}");
        }
    }

    #[test]
    fn sealers_never_share_a_sender_id() {
        let k = key(13);
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            assert!(seen.insert(Sealer::new(&k, &ch()).unwrap().sender_id()));
        }
    }

    #[test]
    fn keyring_rotation_keeps_old_and_new_keys() {
        let old = key(14);
        let new = key(15);
        let mut o = opener(&old);
        let mut s_old = Sealer::new(&old, &ch()).unwrap();
        let mut s_new = Sealer::new(&new, &ch()).unwrap();
        assert!(open(&mut o, NOW, &seal(&mut s_old, NOW, b"")).is_ok());
        assert_eq!(
            open(&mut o, NOW, &seal(&mut s_new, NOW, b"")),
            Err(Reject::UnknownKey)
        );
        let text = format!("{}\n{}\n", *old.to_line(), *new.to_line());
        o.set_keyring(Keyring::parse(&text).unwrap());
        assert_eq!(o.sender_count(), 1);
        assert!(open(&mut o, NOW, &seal(&mut s_old, NOW, b"")).is_ok());
        assert!(open(&mut o, NOW, &seal(&mut s_new, NOW, b"")).is_ok());
        o.set_keyring(Keyring::single(new.clone()));
        assert_eq!(o.sender_count(), 1);
        assert_eq!(
            open(&mut o, NOW, &seal(&mut s_old, NOW, b"")),
            Err(Reject::UnknownKey)
        );
    }

    #[test]
    fn a_frame_opens_only_on_its_own_channel() {
        let k = key(16);
        let group = |s: &str| ChannelId::group(s.parse().unwrap());
        let channels = [
            group("239.255.0.1:5000"),
            group("239.255.0.2:5000"),
            group("239.255.0.1:5001"),
            group("[ff0e::1]:5000"),
            group("[ff0e::1]:5001"),
            ChannelId::named("feed").unwrap(),
            ChannelId::named("feed2").unwrap(),
        ];
        for (i, sealed_for) in channels.iter().enumerate() {
            let mut s = Sealer::new(&k, sealed_for).unwrap();
            let frame = seal(&mut s, NOW, b"x");
            for (j, opened_on) in channels.iter().enumerate() {
                let mut o = Opener::new(
                    Keyring::single(k.clone()),
                    opened_on.clone(),
                    OpenerConfig::default(),
                );
                let got = open(&mut o, NOW, &frame);
                if i == j {
                    assert_eq!(got, Ok(b"x".to_vec()));
                } else {
                    assert_eq!(got, Err(Reject::AuthFailed), "{sealed_for} on {opened_on}");
                    assert_eq!(o.stats().auth_failed, 1);
                    assert_eq!(o.sender_count(), 0);
                }
            }
        }
    }

    #[test]
    fn the_cached_subkey_is_xchacha20_poly1305() {
        use chacha20poly1305::XChaCha20Poly1305;
        let k = key(17);
        let channel = ch();
        let sender = SenderId(*b"0123456789abcdef");
        let mut s = Sealer::with_sender_id(&k, &channel, sender, 5);
        let frame = seal(&mut s, NOW, b"payload");
        // The same frame from the textbook construction: XChaCha20-Poly1305
        // under the channel key with the 24-byte nonce sender_id || seq.
        let channel_key = k.channel_key(&channel);
        let x = XChaCha20Poly1305::new((&*channel_key).into());
        let mut nonce = [0u8; 24];
        nonce[..16].copy_from_slice(&sender.0);
        nonce[16..].copy_from_slice(&5u64.to_be_bytes());
        let mut sealed = [&[0u8, 7][..], b"payload"].concat();
        let tag = x
            .encrypt_inout_detached(
                (&nonce).into(),
                &frame[..HEADER_LEN],
                InOutBuf::from(&mut sealed[..]),
            )
            .unwrap();
        sealed.extend_from_slice(&tag);
        assert_eq!(&frame[HEADER_LEN..], &sealed[..]);
    }

    /// Runs `make_child` (a fork of some kind) and, in the child, tries to
    /// seal with the parent's sealer; true if the child was refused.
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn child_is_refused(s: &mut Sealer, make_child: fn() -> libc::pid_t) -> bool {
        let mut buf = [0u8; 128];
        let pid = make_child();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let refused = s.seal(NOW, b"child", &mut buf) == Err(SealError::Forked);
            // A new session in the child is fine, and the copy still is not.
            let fresh =
                Sealer::new(&key(23), &ch()).is_ok_and(|mut f| f.seal(NOW, b"", &mut buf).is_ok());
            let still = s.seal(NOW, b"child", &mut buf) == Err(SealError::Forked);
            // SAFETY: _exit(2) ends the child without running the parent's
            // destructors or the test harness's atexit handlers.
            unsafe { libc::_exit(if refused && fresh && still { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child made above; `status` is a valid int.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)]
    fn a_forked_copy_of_a_sealer_refuses_to_seal() {
        let k = key(23);
        let mut s = Sealer::new(&k, &ch()).unwrap();
        let mut buf = [0u8; 128];
        assert!(s.seal(NOW, b"parent", &mut buf).is_ok());
        // SAFETY (both): the child only seals (no allocation on the refused
        // path), makes one sealer and calls _exit.
        assert!(child_is_refused(&mut s, || unsafe { libc::fork() }), "fork");
        // A raw clone runs no pthread_atfork handlers, as glibc's _Fork
        // does not: the kernel's wipe-on-fork page still tells.
        assert!(
            child_is_refused(&mut s, || unsafe {
                libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) as libc::pid_t
            }),
            "raw clone"
        );
        // The parent goes on.
        assert!(s.seal(NOW, b"parent again", &mut buf).is_ok());
    }
}
