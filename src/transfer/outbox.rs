//! A sender's pipeline, sans-IO: bodies and messages go in with the time,
//! batches of sealed datagrams come out. The [`Outbox`] seals each body in
//! the current sender session, fragments a message too large for one frame
//! ([`crate::reassembly::fragments`]), lays datagrams of one size end to end
//! into batches (a GSO run where the caller's kernel has it) no larger than
//! its pacer allows, and with a signing key holds frames in a signed batch
//! that goes out with its manifest (PROTOCOL.md 3.4) when it is full or its
//! time is up. A session that spends its seqs, or a keyring whose sending
//! key changed, starts a new sender session (a new sender ID).
//!
//! It never touches a socket, a clock or a thread: the caller passes
//! `now_us` (microseconds since the Unix epoch, [`crate::now_us`]), takes
//! each ready [`Batch`] with [`Outbox::pop_batch`], sends it (paced, see
//! [`super::pacer::Pacer::book`]) and gives its buffer back with
//! [`Outbox::recycle`]. A signed batch closes by its deadline only when the
//! caller asks: call [`Outbox::poll_signing`] at
//! [`Outbox::signing_deadline_us`].
//!
//! ```
//! use mcsec::transfer::outbox::Outbox;
//! use mcsec::{Body, ChannelId, GroupKey, Keyring, Opener, OpenerConfig};
//!
//! let key = GroupKey::generate(std::time::SystemTime::now())?;
//! let channel = ChannelId::group("239.255.0.1:5000".parse()?);
//! let mut outbox = Outbox::new(Keyring::single(key.clone()), channel.clone(), 1472, None)?;
//! let mut opener = Opener::new(Keyring::single(key), channel, OpenerConfig::default());
//!
//! let now_us = 1_790_000_000_000_000;
//! outbox.queue_body(now_us, &Body::Data(b"tick 42"))?;
//! outbox.flush(now_us)?;
//! while let Some(batch) = outbox.pop_batch() {
//!     for datagram in batch.datagrams() {
//!         // Here the caller sends `datagram`; a receiver opens it.
//!         let mut rx = datagram.to_vec();
//!         let (_, body) = opener.open_body(now_us, &mut rx).expect("authentic");
//!         assert_eq!(body, Body::Data(b"tick 42"));
//!     }
//!     outbox.recycle(batch);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;

use super::pacer::Pacer;
use crate::frame::{HEADER_LEN, OVERHEAD, SenderId};
use crate::keys::KeyId;
use crate::seal::{SealKey, Unsealed};
use crate::signed::{HASH_LEN, MANIFEST_OVERHEAD, SignedSealer, SignerKey};
use crate::{Body, ChannelId, Keyring, SealError, Sealer};

/// Spare batch buffers kept for reuse.
const SPARE_BUFFERS: usize = 8;

/// How a sender signs: a signing key, frames per manifest, and the longest
/// a frame waits for its manifest.
#[derive(Debug, Clone)]
pub struct Signing {
    /// The key that signs the manifests.
    pub key: Arc<SignerKey>,
    /// Frames per manifest: at most what one datagram's manifest lists
    /// ([`crate::signed::hashes_that_fit`]); fewer are used if more were
    /// asked ([`Outbox::signing_every`]).
    pub every: usize,
    /// The longest a frame waits in an open signed batch.
    pub interval: Duration,
}

/// Why the outbox could not take a body or message, or close a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// A new sender session could not be started (no randomness for its
    /// sender ID).
    #[error("starting a sender session: {0}")]
    Session(SealError),
    /// A body could not be sealed (too large for one frame, or the
    /// process was forked).
    #[error("sealing: {0}")]
    Seal(SealError),
    /// An open signed batch could not be closed.
    #[error("signing: {0}")]
    Sign(SealError),
    /// Datagrams of `max_datagram` bytes cannot carry a manifest, which
    /// needs `least`.
    #[error("a {max_datagram}-byte datagram is too small to sign: a manifest needs {least} bytes")]
    TooSmallToSign {
        /// The datagram size asked for.
        max_datagram: usize,
        /// The smallest that carries a manifest of one hash.
        least: usize,
    },
    /// A message that no fragmenting can carry: over 4 GiB, or datagrams
    /// too small for a fragment.
    #[error("a {len}-byte message cannot be fragmented")]
    CannotFragment {
        /// The message's length.
        len: usize,
    },
    /// A sealed frame came out larger than the outbox's datagram size (a
    /// bug, never the caller's input).
    #[error("sealed frame larger than its buffer")]
    FrameTooLarge,
    /// Deferred sealing was asked of a signing outbox: a manifest hashes
    /// sealed frames, so a signed session seals as it goes.
    #[error("a signing outbox cannot defer sealing")]
    DeferredSigned,
}

/// A run of datagrams to send back to back: `count` of them laid end to
/// end, all `stride` bytes but perhaps the last (shorter). A kernel with
/// UDP GSO takes it in one call.
pub struct Batch {
    bytes: Vec<u8>,
    stride: usize,
    count: usize,
    /// Deferred sealing: the frames numbered for this batch, and the key
    /// of their session.
    unsealed: Option<(SealKey, Vec<Unsealed>)>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.bytes.len())
            .field("stride", &self.stride)
            .field("count", &self.count)
            .field("sealed", &self.is_sealed())
            .finish()
    }
}

impl Batch {
    /// The datagrams, end to end. Unsealed (header and tag space not yet
    /// written) while [`Self::is_sealed`] is false.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Every datagram's length but perhaps the last's.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// How many datagrams.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Each datagram, in order.
    pub fn datagrams(&self) -> std::slice::Chunks<'_, u8> {
        self.bytes.chunks(self.stride.max(1))
    }

    /// Whether the datagrams are sealed: always, unless the outbox defers
    /// sealing ([`Outbox::defer_sealing`]) and [`Self::seal`] or the
    /// caller's threads have not sealed them yet.
    pub fn is_sealed(&self) -> bool {
        self.unsealed.is_none()
    }

    /// Deferred sealing: takes the frames to seal and their session's key,
    /// with the buffer they lie in. Seal each frame `i` with
    /// [`SealKey::seal`] in `bytes[i * stride..]`, on any thread, before
    /// sending; give the buffer back with [`Outbox::recycle_buffer`] and
    /// the emptied frame list with [`Outbox::recycle_frames`].
    /// `None` if the batch is sealed.
    pub fn take_unsealed(&mut self) -> Option<(SealKey, Vec<Unsealed>, Vec<u8>)> {
        let (key, frames) = self.unsealed.take()?;
        Some((key, frames, std::mem::take(&mut self.bytes)))
    }

    /// Deferred sealing: seals the batch's frames here, in place.
    pub fn seal(&mut self) -> Result<(), SealError> {
        let Some((key, frames)) = self.unsealed.take() else {
            return Ok(());
        };
        let mut start = 0usize;
        for frame in frames {
            let end = start.saturating_add(frame.len());
            let slot = self
                .bytes
                .get_mut(start..end)
                .ok_or(SealError::BufferTooSmall)?;
            key.seal(frame, slot)?;
            start = end;
        }
        Ok(())
    }
}

/// What [`Outbox::queue_message`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Queued {
    /// One `Data` frame.
    Whole,
    /// Fragments of message `msg_id`, `count` of them.
    Fragments {
        /// The message's ID in its sender session.
        msg_id: u32,
        /// Frames it took.
        count: usize,
    },
}

/// The outbox's counters: what it queued and made into batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Messages taken by [`Outbox::queue_message`].
    pub messages: u64,
    /// Datagrams put in batches (frames and manifests).
    pub datagrams: u64,
    /// Bytes of those datagrams (UDP payloads).
    pub bytes: u64,
    /// Batches made.
    pub batches: u64,
    /// Sender sessions started, the first included.
    pub sessions: u64,
    /// Signed batches closed (each with its manifest, twice).
    pub manifests: u64,
}

/// A sender session: plain, or signing its frames in batches.
enum Session {
    Plain(Sealer),
    Signed(SignedSealer),
}

impl Session {
    fn sealer(&self) -> &Sealer {
        match self {
            Self::Plain(sealer) => sealer,
            Self::Signed(signed) => signed.sealer(),
        }
    }
}

/// A sender's pipeline from bodies and messages to batches of datagrams:
/// see the [module docs](self).
pub struct Outbox {
    keyring: Keyring,
    channel: ChannelId,
    session: Session,
    signing: Option<Signing>,
    max_datagram: usize,
    next_msg_id: u32,
    /// Batches hold at most this many datagrams...
    max_batch: usize,
    /// ... and at most what this pacer lets go back to back.
    pacer: Option<Pacer>,
    /// Plain sessions number frames and leave sealing to the caller.
    defer: bool,
    /// One datagram, sealed or laid out to be sealed.
    buf: Vec<u8>,
    /// The open batch: datagrams end to end, all `stride` bytes but the
    /// last, `batched` of them (and their frames, deferred).
    batch: Vec<u8>,
    batched: usize,
    stride: usize,
    unsealed: Vec<Unsealed>,
    /// A closed signed batch's datagrams, end to end, and where each ends.
    emitted: Vec<u8>,
    emitted_ends: Vec<usize>,
    ready: VecDeque<Batch>,
    spare: Vec<Vec<u8>>,
    spare_frames: Vec<Vec<Unsealed>>,
    stats: OutboxStats,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("sealer", self.session.sealer())
            .field("signing", &self.signing.as_ref().map(|s| s.key.id()))
            .field("batched", &self.batched)
            .field("ready", &self.ready.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox sending on `channel` under `keyring`'s sending key, in
    /// datagrams of at most `max_datagram` bytes, signing its frames with
    /// `signing` if given. Batches hold one datagram until
    /// [`Self::set_batching`] says otherwise.
    pub fn new(
        keyring: Keyring,
        channel: ChannelId,
        max_datagram: usize,
        signing: Option<Signing>,
    ) -> Result<Self, OutboxError> {
        let session = new_session(&keyring, &channel, max_datagram, signing.as_ref())?;
        let max_datagram = session.sealer().max_datagram();
        Ok(Self {
            keyring,
            channel,
            session,
            signing,
            max_datagram,
            next_msg_id: 0,
            max_batch: 1,
            pacer: None,
            defer: false,
            buf: vec![0; max_datagram],
            batch: Vec::new(),
            batched: 0,
            stride: 0,
            unsealed: Vec::new(),
            emitted: Vec::new(),
            emitted_ends: Vec::new(),
            ready: VecDeque::new(),
            spare: Vec::new(),
            spare_frames: Vec::new(),
            stats: OutboxStats {
                sessions: 1,
                ..OutboxStats::default()
            },
        })
    }

    /// Batches hold at most `max_batch` datagrams (what the caller's
    /// socket takes in one call), and with `pacer`, at most what it lets
    /// go back to back ([`Pacer::batch_for`]). Only the pacer's rates are
    /// read: the caller books each batch on its own pacer.
    pub fn set_batching(&mut self, max_batch: usize, pacer: Option<Pacer>) {
        self.max_batch = max_batch.max(1);
        self.pacer = pacer;
    }

    /// From now on, a plain session's frames are numbered and laid out in
    /// their batch but not sealed: each [`Batch`] carries them and their
    /// key ([`Batch::take_unsealed`]), for the caller to seal on other
    /// threads, in any order, before sending the batch. A signing outbox
    /// refuses ([`OutboxError::DeferredSigned`]): a manifest hashes sealed
    /// frames.
    pub fn defer_sealing(&mut self) -> Result<(), OutboxError> {
        if self.signing.is_some() {
            return Err(OutboxError::DeferredSigned);
        }
        self.defer = true;
        Ok(())
    }

    /// The current session's sender ID.
    pub fn sender_id(&self) -> SenderId {
        self.session.sealer().sender_id()
    }

    /// The key the current session seals under.
    pub fn key_id(&self) -> KeyId {
        self.session.sealer().key_id()
    }

    /// The largest body that fits one frame.
    pub fn max_plaintext(&self) -> usize {
        self.session.sealer().max_plaintext()
    }

    /// The largest datagram this outbox makes.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Signing: frames per manifest in force, which is fewer than
    /// [`Signing::every`] asked if that many hashes do not fit one
    /// datagram. `None` without signing.
    pub fn signing_every(&self) -> Option<usize> {
        match &self.session {
            Session::Signed(signed) => Some(signed.every()),
            Session::Plain(_) => None,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> &OutboxStats {
        &self.stats
    }

    /// Takes a reloaded keyring. If its sending key is not the one in use
    /// (ID and secret compared, the secret in constant time), closes
    /// what is queued (the open signed batch included) and starts a new
    /// sender session under the new key: returns `true` then.
    pub fn set_keyring(&mut self, ring: Keyring, now_us: u64) -> Result<bool, OutboxError> {
        let (old, new) = (self.keyring.sending_key(), ring.sending_key());
        let same = old.id() == new.id()
            && bool::from(old.secret().expose_bytes()[..].ct_eq(&new.secret().expose_bytes()[..]));
        self.keyring = ring;
        if !same {
            self.new_session(now_us)?;
        }
        Ok(!same)
    }

    /// Ends the session (its last signed batch closes) and starts a new
    /// one: a new sender ID under the keyring's sending key.
    fn new_session(&mut self, now_us: u64) -> Result<(), OutboxError> {
        self.finish(now_us)?;
        self.session = new_session(
            &self.keyring,
            &self.channel,
            self.max_datagram,
            self.signing.as_ref(),
        )?;
        self.next_msg_id = 0;
        self.stats.sessions += 1;
        Ok(())
    }

    /// Seals `body` stamped `now_us` and queues it. A batch closes (ready
    /// for [`Self::pop_batch`]) when it is full, when this datagram does
    /// not fit its run (longer than the others), or when this one ends it
    /// (shorter). Signing: the frame goes into the open signed batch,
    /// which closes (manifest, frames, manifest) when full or due.
    pub fn queue_body(&mut self, now_us: u64, body: &Body<'_>) -> Result<(), OutboxError> {
        if let Session::Signed(signed) = &mut self.session {
            match signed.seal_body(now_us, body) {
                Ok(()) => {}
                Err(SealError::SequenceExhausted) => {
                    // Never let seq wrap: a new session, a new sender ID.
                    self.new_session(now_us)?;
                    if let Session::Signed(signed) = &mut self.session {
                        signed.seal_body(now_us, body).map_err(OutboxError::Seal)?;
                    }
                }
                Err(e) => return Err(OutboxError::Seal(e)),
            }
            return self.poll_signing(now_us);
        }
        let sealed = match &mut self.session {
            Session::Plain(sealer) if self.defer => {
                assign_body(sealer, now_us, body, &mut self.buf).map(|f| (f.len(), Some(f)))
            }
            Session::Plain(sealer) => sealer
                .seal_body(now_us, body, &mut self.buf)
                .map(|len| (len, None)),
            Session::Signed(_) => return Ok(()),
        };
        let (len, frame) = match sealed {
            Ok(sealed) => sealed,
            Err(SealError::SequenceExhausted) => {
                // Never let seq wrap: a new session, a new sender ID.
                self.new_session(now_us)?;
                return self.queue_body(now_us, body);
            }
            Err(e) => return Err(OutboxError::Seal(e)),
        };
        self.queue_datagram(len, frame)
    }

    /// Queues `message`: one `Data` frame if it fits, else fragments
    /// (each one frame, queued as by [`Self::queue_body`]). Receivers
    /// reassemble a message up to their own limit
    /// ([`crate::reassembly::DEFAULT_MAX_MESSAGE`] by default).
    pub fn queue_message(&mut self, now_us: u64, message: &[u8]) -> Result<Queued, OutboxError> {
        let data = Body::Data(message);
        let queued = if data.encoded_len() <= self.max_plaintext() {
            self.queue_body(now_us, &data)?;
            Queued::Whole
        } else {
            if self.next_msg_id == u32::MAX {
                // msg_id is unique within a session: a new one, not a wrap.
                self.new_session(now_us)?;
            }
            let msg_id = self.next_msg_id;
            self.next_msg_id += 1;
            let Some(pieces) = crate::reassembly::fragments(msg_id, message, self.max_plaintext())
            else {
                return Err(OutboxError::CannotFragment { len: message.len() });
            };
            let mut count = 0;
            for body in pieces {
                self.queue_body(now_us, &body)?;
                count += 1;
            }
            Queued::Fragments { msg_id, count }
        };
        self.stats.messages += 1;
        Ok(queued)
    }

    /// Queues the first `len` bytes of `self.buf`, a datagram (and its
    /// frame, deferred).
    fn queue_datagram(&mut self, len: usize, frame: Option<Unsealed>) -> Result<(), OutboxError> {
        if len > self.buf.len() {
            return Err(OutboxError::FrameTooLarge);
        }
        let cap = match &self.pacer {
            Some(pacer) => pacer.batch_for(len, self.max_batch),
            None => self.max_batch,
        };
        if self.batched > 0 && (len > self.stride || self.batched >= cap) {
            self.close_open();
        }
        if self.batched == 0 {
            self.stride = len;
        }
        self.batch
            .extend_from_slice(self.buf.get(..len).unwrap_or_default());
        self.unsealed.extend(frame);
        self.batched += 1;
        // A shorter datagram ends a run; a full batch goes now.
        if len < self.stride || self.batched >= cap {
            self.close_open();
        }
        Ok(())
    }

    /// Signing: closes the open signed batch if it is full or its time is
    /// up (then what is queued closes too, so all of it can go now).
    pub fn poll_signing(&mut self, now_us: u64) -> Result<(), OutboxError> {
        match &self.session {
            Session::Signed(signed) if signed.is_due(now_us) => self.close_signed(now_us),
            _ => Ok(()),
        }
    }

    /// Signing: when the open signed batch must close (the caller's clock,
    /// as `now_us`), if one is open. Call [`Self::poll_signing`] then.
    pub fn signing_deadline_us(&self) -> Option<u64> {
        match &self.session {
            Session::Signed(signed) => signed.deadline_us(),
            Session::Plain(_) => None,
        }
    }

    /// Closes the open signed batch now, whatever its size, queues its
    /// datagrams (manifest, frames, manifest) and closes the open batch.
    fn close_signed(&mut self, now_us: u64) -> Result<(), OutboxError> {
        let Session::Signed(signed) = &mut self.session else {
            return Ok(());
        };
        let (emitted, ends) = (&mut self.emitted, &mut self.emitted_ends);
        emitted.clear();
        ends.clear();
        let before = signed.manifests();
        signed
            .close_batch(now_us, &mut |datagram| {
                emitted.extend_from_slice(datagram);
                ends.push(emitted.len());
                Ok(())
            })
            .map_err(OutboxError::Sign)?;
        self.stats.manifests += signed.manifests() - before;
        let emitted = std::mem::take(&mut self.emitted);
        let ends = std::mem::take(&mut self.emitted_ends);
        let mut start = 0;
        let mut result = Ok(());
        for end in &ends {
            let datagram = emitted.get(start..*end).unwrap_or_default();
            start = *end;
            let Some(dest) = self.buf.get_mut(..datagram.len()) else {
                result = Err(OutboxError::FrameTooLarge);
                break;
            };
            dest.copy_from_slice(datagram);
            if let Err(e) = self.queue_datagram(datagram.len(), None) {
                result = Err(e);
                break;
            }
        }
        self.emitted = emitted;
        self.emitted_ends = ends;
        result?;
        self.close_open();
        Ok(())
    }

    /// Closes what is queued so it can go now: the open batch, and the
    /// open signed batch if it is due (else it waits for more frames, at
    /// most its interval: see [`Self::signing_deadline_us`]).
    pub fn flush(&mut self, now_us: u64) -> Result<(), OutboxError> {
        self.poll_signing(now_us)?;
        self.close_open();
        Ok(())
    }

    /// Closes everything queued, an open signed batch included: before the
    /// sender waits for long, switches session, or exits.
    pub fn finish(&mut self, now_us: u64) -> Result<(), OutboxError> {
        self.close_signed(now_us)?;
        self.close_open();
        Ok(())
    }

    /// The oldest batch ready to send, if any. Send batches in the order
    /// they come: receivers then see seqs in order.
    pub fn pop_batch(&mut self) -> Option<Batch> {
        self.ready.pop_front()
    }

    /// Batches ready to send.
    pub fn ready(&self) -> usize {
        self.ready.len()
    }

    /// Gives a sent batch's buffer back for reuse.
    pub fn recycle(&mut self, batch: Batch) {
        self.recycle_buffer(batch.bytes);
    }

    /// Gives a buffer (from [`Batch::take_unsealed`]) back for reuse.
    pub fn recycle_buffer(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buf.capacity() > 0 {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Moves the open batch, if any, to the ready queue.
    fn close_open(&mut self) {
        if self.batched == 0 {
            return;
        }
        let next = self.spare.pop().unwrap_or_default();
        let bytes = std::mem::replace(&mut self.batch, next);
        let unsealed = if self.unsealed.is_empty() {
            None
        } else {
            let next = self.spare_frames.pop().unwrap_or_default();
            let frames = std::mem::replace(&mut self.unsealed, next);
            Some((self.session.sealer().seal_key(), frames))
        };
        self.stats.datagrams += self.batched as u64;
        self.stats.bytes += bytes.len() as u64;
        self.stats.batches += 1;
        self.ready.push_back(Batch {
            bytes,
            stride: self.stride,
            count: self.batched,
            unsealed,
        });
        self.batched = 0;
    }

    /// Gives a frame list (from [`Batch::take_unsealed`], its frames
    /// sealed) back for reuse. Frames still in it are dropped unsealed:
    /// their seqs are spent, and receivers see a gap.
    pub fn recycle_frames(&mut self, mut frames: Vec<Unsealed>) {
        if self.spare_frames.len() < SPARE_BUFFERS && frames.capacity() > 0 {
            frames.clear();
            self.spare_frames.push(frames);
        }
    }

    /// Starts a session whose first seq is `first_seq`, to reach sequence
    /// exhaustion in a test.
    #[cfg(test)]
    pub(crate) fn start_at_seq(&mut self, first_seq: u64) {
        let mut sealer = Sealer::with_sender_id(
            self.keyring.sending_key(),
            &self.channel,
            SenderId([0xee; 16]),
            first_seq,
        );
        sealer.set_max_datagram(self.max_datagram);
        self.session = match &self.signing {
            None => Session::Plain(sealer),
            Some(s) => Session::Signed(SignedSealer::new(
                sealer,
                Arc::clone(&s.key),
                self.channel.clone(),
                s.every,
                s.interval,
            )),
        };
    }
}

/// Numbers a frame for `body` and writes the body into `buf` after the
/// header space: the frame, unsealed, is `buf[..len]`.
fn assign_body(
    sealer: &mut Sealer,
    now_us: u64,
    body: &Body<'_>,
    buf: &mut [u8],
) -> Result<Unsealed, SealError> {
    let plaintext = body.encoded_len();
    let Some(dest) = buf.get_mut(HEADER_LEN..) else {
        return Err(SealError::BufferTooSmall);
    };
    let Some(dest) = dest.get_mut(..plaintext) else {
        return Err(SealError::TooLarge);
    };
    body.encode_into(dest).map_err(SealError::Body)?;
    let frame = sealer.assign(now_us, plaintext)?;
    if frame.len() > buf.len() {
        return Err(SealError::BufferTooSmall);
    }
    Ok(frame)
}

fn new_session(
    keyring: &Keyring,
    channel: &ChannelId,
    max_datagram: usize,
    signing: Option<&Signing>,
) -> Result<Session, OutboxError> {
    let mut sealer = Sealer::new(keyring.sending_key(), channel).map_err(OutboxError::Session)?;
    sealer.set_max_datagram(max_datagram);
    Ok(match signing {
        None => Session::Plain(sealer),
        Some(signing) => {
            // A manifest of one hash must fit whatever its first seq: else
            // sealing fails when a batch closes, perhaps hours in.
            if crate::signed::hashes_that_fit(max_datagram) == 0 {
                return Err(OutboxError::TooSmallToSign {
                    max_datagram,
                    least: OVERHEAD + MANIFEST_OVERHEAD + HASH_LEN,
                });
            }
            Session::Signed(SignedSealer::new(
                sealer,
                Arc::clone(&signing.key),
                channel.clone(),
                signing.every,
                signing.interval,
            ))
        }
    })
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
