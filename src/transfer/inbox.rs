//! A receiver's pipeline, sans-IO: a datagram's bytes, where it came from
//! and the time go in; messages, chat lines and files come out, and every
//! datagram refused comes back as a kind to count or explain.
//!
//! [`Inbox`] opens each datagram with its [`Opener`] (or, given a
//! [`Verifier`], through the signature layer, which holds frames until a
//! signed manifest lists them), notes its seq for the loss counters, and
//! hands its body on: data as it is, fragments to a [`Reassembler`], file
//! symbols (body variant 3) to a [`FileReceiver`], symbols of files of any
//! size (variant 5) to the caller's [`StreamSink`]. It owns no socket,
//! clock, thread or output: the caller reads datagrams, passes the time in
//! ([`Now`]), and decides what to print, save or warn about.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use mcsec::files::FileReceiver;
//! use mcsec::reassembly::Reassembler;
//! use mcsec::transfer::inbox::{Delivery, Inbox, Now, Pushed};
//! use mcsec::{Body, ChannelId, GroupKey, Keyring, Opener, OpenerConfig, Sealer};
//!
//! let now = mcsec::now_us();
//! let key = GroupKey::generate(std::time::SystemTime::now())?;
//! let channel = ChannelId::named("example")?;
//! let mut sealer = Sealer::new(&key, &channel)?;
//! let mut datagram = vec![0; 1500];
//! let len = sealer.seal_body(now, &Body::Data(b"hello"), &mut datagram)?;
//! datagram.truncate(len);
//!
//! let opener = Opener::new(Keyring::single(key), channel, OpenerConfig::default());
//! let mut inbox = Inbox::new(opener, Reassembler::default(), FileReceiver::default());
//! match inbox.push(&mut datagram, None, Now::at(now)) {
//!     Pushed::Delivered(Delivery::Message { payload, .. }) => assert_eq!(&payload[..], b"hello"),
//!     other => panic!("not delivered: {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::body::StreamSymbol;
use crate::files::{FileReceiver, FileStats, ReceivedFile, SymbolReject};
use crate::loss::LossTracker;
use crate::reassembly::{FragmentReject, Reassembler, ReassemblyStats};
use crate::seal::Verdict;
use crate::signed::{SigReject, SignedFrame, SignedStats, Verifier};
use crate::{Body, Header, Keyring, Opener, Origin, Reject};

/// How often, at most, the loss counters settle idle senders' gaps while
/// frames keep arriving (monotonic microseconds).
const LOSS_SWEEP_US: u64 = 250_000;

/// Body drops kept for [`Inbox::next_dropped`]; beyond them, drops are
/// only counted (in the reassembler's and the file receiver's stats).
const MAX_DROPPED: usize = 64;

/// The two clocks an [`Inbox`] reads, as its caller read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Wall-clock time, microseconds since the Unix epoch: senders stamp
    /// their frames with it, so freshness (and how long a frame may wait
    /// for its signature) is judged by it.
    pub unix_us: u64,
    /// A monotonic clock, microseconds from any origin: how long partial
    /// messages and files wait, and when loss gaps settle. A step of the
    /// wall clock can neither keep them past their timeouts nor expire
    /// them early.
    pub mono_us: u64,
}

impl Now {
    /// Both clocks at `unix_us`: for tests and for callers without a
    /// monotonic clock of their own.
    pub fn at(unix_us: u64) -> Self {
        Self {
            unix_us,
            mono_us: unix_us,
        }
    }
}

/// Something the receiver got whole.
#[derive(Debug)]
#[non_exhaustive]
pub enum Delivery<'a> {
    /// Application data, whole (reassembled if it came in fragments).
    Message {
        /// The header of the frame that completed it.
        header: Header,
        /// The data: borrowed from the datagram when it came in one frame.
        payload: Cow<'a, [u8]>,
        /// The label of the trusted key that signed it; `None` without a
        /// [`Verifier`].
        signer: Option<Arc<str>>,
    },
    /// A chat line.
    Chat {
        /// Its frame's header.
        header: Header,
        /// The nick the sender claims (any key holder can claim any).
        nick: Cow<'a, str>,
        /// The line, unsanitized.
        text: Cow<'a, str>,
        /// The label of the trusted key that signed it; `None` without a
        /// [`Verifier`].
        signer: Option<Arc<str>>,
    },
    /// A file put back together from its symbols (body variant 3),
    /// SHA-256 checked.
    File {
        /// The header of the frame that completed it.
        header: Header,
        /// The file.
        file: ReceivedFile,
        /// The label of the trusted key that signed it; `None` without a
        /// [`Verifier`].
        signer: Option<Arc<str>>,
    },
}

impl Delivery<'_> {
    /// The header of the frame that completed it.
    pub fn header(&self) -> &Header {
        match self {
            Self::Message { header, .. }
            | Self::Chat { header, .. }
            | Self::File { header, .. } => header,
        }
    }

    /// The label of the trusted key that signed it, if a [`Verifier`]
    /// checked it.
    pub fn signer(&self) -> Option<&str> {
        match self {
            Self::Message { signer, .. }
            | Self::Chat { signer, .. }
            | Self::File { signer, .. } => signer.as_deref(),
        }
    }

    /// The same delivery, owning its bytes.
    pub fn into_owned(self) -> Delivery<'static> {
        match self {
            Self::Message {
                header,
                payload,
                signer,
            } => Delivery::Message {
                header,
                payload: Cow::Owned(payload.into_owned()),
                signer,
            },
            Self::Chat {
                header,
                nick,
                text,
                signer,
            } => Delivery::Chat {
                header,
                nick: Cow::Owned(nick.into_owned()),
                text: Cow::Owned(text.into_owned()),
                signer,
            },
            Self::File {
                header,
                file,
                signer,
            } => Delivery::File {
                header,
                file,
                signer,
            },
        }
    }
}

/// A datagram refused, and what can be said about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejected {
    /// Why: one of the core's reasons ([`SigReject::Core`]), or, with a
    /// [`Verifier`], one of the signature layer's.
    pub reason: SigReject,
    /// Its header as parsed before opening, if it parsed: NOT
    /// authenticated (anyone can write any header), only a clue such as
    /// the unknown key ID a frame named or the timestamp of a stale one.
    pub header: Option<Header>,
    /// Its length in bytes.
    pub len: usize,
}

/// What [`Inbox::push`] made of one datagram.
#[derive(Debug)]
#[non_exhaustive]
pub enum Pushed<'a> {
    /// It completed something: a message, a chat line or a file.
    Delivered(Delivery<'a>),
    /// It was authentic (or held for its signature) and taken, with
    /// nothing to deliver from it alone: a fragment or file symbol of
    /// something not yet whole, a symbol handed to the [`StreamSink`], a
    /// manifest. With a [`Verifier`], what it released waits in
    /// [`Inbox::next_delivery`]; a body refused waits in
    /// [`Inbox::next_dropped`].
    Taken,
    /// It was refused and counted.
    Rejected(Rejected),
    /// [`Inbox::push_checked`] on an inbox with a [`Verifier`]: the
    /// signature layer opens frames itself and cannot take one opened
    /// elsewhere, so the datagram was dropped, uncounted.
    VerdictRefused,
}

/// An authentic frame whose body a reassembler refused (counted in its
/// stats): see [`Inbox::next_dropped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dropped {
    /// A fragment (see [`Inbox::reassembly_stats`]).
    Fragment(FragmentReject),
    /// A file symbol of body variant 3 (see [`Inbox::file_stats`]).
    FileSymbol(SymbolReject),
}

/// Where an [`Inbox`] hands symbols of files of any size (body variant 5,
/// [`crate::transfer::stream`]): the caller's receiver, which decides
/// where they are written and on which thread they are decoded. The inbox
/// keeps none of them.
pub trait StreamSink {
    /// One symbol of an authentic frame (listed in a verified manifest,
    /// with a [`Verifier`]), at `now_mono_us` ([`Now::mono_us`]), from the
    /// source the caller gave with its datagram.
    fn symbol(
        &mut self,
        now_mono_us: u64,
        header: &Header,
        symbol: &StreamSymbol<'_>,
        signer: Option<&Arc<str>>,
        from: Option<SocketAddr>,
    );
}

/// The receiver's pipeline: open, check signatures (optionally), count
/// loss, reassemble, deliver. See the [module documentation](self).
pub struct Inbox {
    opener: Opener,
    reassembler: Reassembler,
    files: FileReceiver,
    /// The signature layer, and its trusted keys' labels by index.
    verifier: Option<Verifier>,
    labels: Vec<Arc<str>>,
    /// Frames the signature layer released, reused between datagrams.
    signed_frames: Vec<SignedFrame>,
    /// What released frames completed, for [`Self::next_delivery`].
    deliveries: VecDeque<Delivery<'static>>,
    dropped: VecDeque<Dropped>,
    /// Without a verifier: manifests seen and ignored.
    manifests_ignored: u64,
    /// Variant-5 symbols that came with no [`StreamSink`] to take them.
    stream_symbols_ignored: u64,
    /// Lost, duplicate and reordered frames, per sender, from their seqs.
    loss: LossTracker,
    /// When `loss` last settled the gaps of idle senders (monotonic).
    loss_swept_us: u64,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("signed", &self.verifier.is_some())
            .field("deliveries", &self.deliveries.len())
            .field("manifests_ignored", &self.manifests_ignored)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// An inbox that opens with `opener`, puts fragments back together in
    /// `reassembler` and variant-3 files in `files`. It delivers every
    /// authentic frame until [`Self::set_verifier`] says otherwise.
    pub fn new(opener: Opener, reassembler: Reassembler, files: FileReceiver) -> Self {
        Self {
            opener,
            reassembler,
            files,
            verifier: None,
            labels: Vec::new(),
            signed_frames: Vec::new(),
            deliveries: VecDeque::new(),
            dropped: VecDeque::new(),
            manifests_ignored: 0,
            stream_symbols_ignored: 0,
            loss: LossTracker::default(),
            loss_swept_us: 0,
        }
    }

    /// With `Some`: delivers only frames that keys of the verifier's trust
    /// list signed (PROTOCOL.md part 3), each with its key's label. With
    /// `None`: every authentic frame, and manifests are ignored.
    ///
    /// Set it before the first datagram: a verifier set later finds
    /// unsigned fragments and files already in the reassemblers, which a
    /// signed piece could complete under its signer's label, and one
    /// replaced drops the frames it held without counting them.
    pub fn set_verifier(&mut self, verifier: Option<Verifier>) {
        self.labels = verifier
            .as_ref()
            .map(|v| v.trust().keys().iter().map(|k| k.label().into()).collect())
            .unwrap_or_default();
        self.verifier = verifier;
    }

    /// Swaps in a new keyring: senders under keys that remain keep their
    /// replay windows ([`Opener::set_keyring`]).
    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.opener.set_keyring(keyring);
    }

    /// The opener: its keyring, configuration and counters.
    pub fn opener(&self) -> &Opener {
        &self.opener
    }

    /// The signature layer, if there is one.
    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    /// One datagram in, from `from` if the caller knows. It is decrypted
    /// in place, and a message it completes alone borrows it. Symbols of
    /// files of any size (variant 5) are dropped and counted
    /// ([`Self::stream_symbols_ignored`]): see [`Self::push_with`].
    pub fn push<'a>(
        &mut self,
        datagram: &'a mut [u8],
        from: Option<SocketAddr>,
        now: Now,
    ) -> Pushed<'a> {
        self.push_inner(datagram, from, now, None, None)
    }

    /// [`Self::push`], handing variant-5 symbols to `streams`.
    pub fn push_with<'a>(
        &mut self,
        datagram: &'a mut [u8],
        from: Option<SocketAddr>,
        now: Now,
        streams: &mut dyn StreamSink,
    ) -> Pushed<'a> {
        self.push_inner(datagram, from, now, None, Some(streams))
    }

    /// [`Self::push_with`] for a datagram already checked on another
    /// thread ([`crate::seal::OpenWorker`]): its `verdict` stands in for
    /// the AEAD. Not with a [`Verifier`] ([`Pushed::VerdictRefused`]).
    pub fn push_checked<'a>(
        &mut self,
        datagram: &'a mut [u8],
        from: Option<SocketAddr>,
        now: Now,
        verdict: Verdict,
        streams: Option<&mut dyn StreamSink>,
    ) -> Pushed<'a> {
        self.push_inner(datagram, from, now, Some(verdict), streams)
    }

    fn push_inner<'a>(
        &mut self,
        datagram: &'a mut [u8],
        from: Option<SocketAddr>,
        now: Now,
        verdict: Option<Verdict>,
        streams: Option<&mut dyn StreamSink>,
    ) -> Pushed<'a> {
        // Not authenticated: only for the loss counters once the verdict
        // is in, and for the caller to explain a reject.
        let peeked = crate::frame::peek_header(datagram).ok();
        let len = datagram.len();
        if self.verifier.is_some() {
            if verdict.is_some() {
                return Pushed::VerdictRefused;
            }
            return match self.push_signed(datagram, peeked.as_ref(), from, now, streams) {
                Ok(()) => Pushed::Taken,
                Err(reason) => Pushed::Rejected(Rejected {
                    reason,
                    header: peeked,
                    len,
                }),
            };
        }
        let opened = match verdict {
            None => self.opener.open_body(now.unix_us, datagram),
            Some(verdict) => self
                .opener
                .open_body_checked(now.unix_us, datagram, verdict),
        };
        let (header, body) = match opened {
            Ok(opened) => opened,
            Err(reason) => {
                self.note_reject(reason, peeked.as_ref(), now.mono_us);
                return Pushed::Rejected(Rejected {
                    reason: reason.into(),
                    header: peeked,
                    len,
                });
            }
        };
        // Every committed seq, manifests (both copies) included.
        self.note_arrival(&header, now.mono_us);
        if let Body::Manifest(_) = body {
            self.manifests_ignored = self.manifests_ignored.saturating_add(1);
            return Pushed::Taken;
        }
        match self.dispatch(header, body, None, now.mono_us, from, streams) {
            Some(delivery) => Pushed::Delivered(delivery),
            None => Pushed::Taken,
        }
    }

    /// With a verifier: the datagram through the signature layer; what it
    /// releases goes to `self.deliveries`.
    fn push_signed(
        &mut self,
        datagram: &[u8],
        peeked: Option<&Header>,
        from: Option<SocketAddr>,
        now: Now,
        mut streams: Option<&mut (dyn StreamSink + '_)>,
    ) -> Result<(), SigReject> {
        let Some(verifier) = &mut self.verifier else {
            return Ok(());
        };
        let mut frames = std::mem::take(&mut self.signed_frames);
        let result = verifier.receive(&mut self.opener, now.unix_us, datagram, &mut frames);
        // For the loss counters: every datagram that authenticated arrived,
        // whatever the signature layer made of it. Manifests take seqs but
        // are never committed here, so they are noted by arrival, as held
        // frames are.
        match result {
            Err(SigReject::Core(reason)) => self.note_reject(reason, peeked, now.mono_us),
            _ => {
                if let Some(header) = peeked {
                    self.note_arrival(header, now.mono_us);
                }
            }
        }
        for frame in frames.drain(..) {
            let signer = self.labels.get(frame.signer).cloned();
            let Ok(body) = Body::decode(&frame.plaintext) else {
                continue;
            };
            let streams = streams.as_deref_mut();
            if let Some(delivery) =
                self.dispatch(frame.header, body, signer, now.mono_us, from, streams)
            {
                self.deliveries.push_back(delivery.into_owned());
            }
        }
        self.signed_frames = frames;
        result.map(|_| ())
    }

    /// An authentic body to its consumer: data as it is, fragments and
    /// file symbols to their reassemblers, stream symbols to the sink.
    fn dispatch<'b>(
        &mut self,
        header: Header,
        body: Body<'b>,
        signer: Option<Arc<str>>,
        mono_us: u64,
        from: Option<SocketAddr>,
        streams: Option<&mut (dyn StreamSink + '_)>,
    ) -> Option<Delivery<'b>> {
        match body {
            Body::Data(payload) => Some(Delivery::Message {
                header,
                payload: payload.into(),
                signer,
            }),
            Body::Fragment {
                msg_id,
                index,
                count,
                total_len,
                bytes,
            } => match self.reassembler.push(
                mono_us,
                Origin::from(&header),
                msg_id,
                index,
                count,
                total_len,
                bytes,
            ) {
                Ok(Some(whole)) => Some(Delivery::Message {
                    header,
                    payload: whole.into(),
                    signer,
                }),
                Ok(None) => None,
                Err(why) => {
                    self.note_dropped(Dropped::Fragment(why));
                    None
                }
            },
            Body::Chat { nick, text } => Some(Delivery::Chat {
                header,
                nick: nick.into(),
                text: text.into(),
                signer,
            }),
            Body::FileSymbol(symbol) => {
                match self.files.push(mono_us, Origin::from(&header), &symbol) {
                    Ok(Some(file)) => Some(Delivery::File {
                        header,
                        file,
                        signer,
                    }),
                    Ok(None) => None,
                    Err(why) => {
                        self.note_dropped(Dropped::FileSymbol(why));
                        None
                    }
                }
            }
            Body::StreamSymbol(symbol) => {
                match streams {
                    Some(sink) => sink.symbol(mono_us, &header, &symbol, signer.as_ref(), from),
                    None => {
                        self.stream_symbols_ignored = self.stream_symbols_ignored.saturating_add(1);
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn note_dropped(&mut self, why: Dropped) {
        if self.dropped.len() < MAX_DROPPED {
            self.dropped.push_back(why);
        }
    }

    /// Notes an authentic frame's seq for the loss counters, and now and
    /// then settles the gaps of idle senders.
    fn note_arrival(&mut self, header: &Header, mono_us: u64) {
        self.loss
            .arrived(header.key_id, header.sender_id, header.seq, mono_us);
        if mono_us.saturating_sub(self.loss_swept_us) >= LOSS_SWEEP_US {
            self.loss.expire(mono_us);
            self.loss_swept_us = mono_us;
        }
    }

    /// What a rejection tells the loss counters about the datagram whose
    /// header (not yet authenticated) was `peeked`: a frame that
    /// authenticated but whose body failed still arrived; a replay of a
    /// seq that arrived before is a duplicate.
    fn note_reject(&mut self, reason: Reject, peeked: Option<&Header>, mono_us: u64) {
        let Some(header) = peeked else {
            return;
        };
        match reason {
            Reject::UnknownBody | Reject::BadBody | Reject::SenderTableFull => {
                self.note_arrival(header, mono_us);
            }
            Reject::Replayed => {
                self.loss
                    .replayed(header.key_id, header.sender_id, header.seq);
            }
            _ => {}
        }
    }

    /// A delivery released by an earlier datagram (with a [`Verifier`],
    /// one manifest can release many frames), oldest first. Take them all
    /// after each push: they are held until taken.
    pub fn next_delivery(&mut self) -> Option<Delivery<'static>> {
        self.deliveries.pop_front()
    }

    /// An authentic frame's body that a reassembler refused lately, oldest
    /// first (the last few only; all are counted in the stats).
    pub fn next_dropped(&mut self) -> Option<Dropped> {
        self.dropped.pop_front()
    }

    /// Frees partial messages and files that timed out, settles loss gaps
    /// of idle senders, and drops frames held for a signature that did not
    /// come in time: call it now and then, even while nothing arrives.
    pub fn expire(&mut self, now: Now) {
        self.loss.expire(now.mono_us);
        self.loss_swept_us = now.mono_us;
        self.reassembler.expire(now.mono_us);
        self.files.expire(now.mono_us);
        if let Some(verifier) = &mut self.verifier {
            verifier.expire(now.unix_us);
        }
    }

    /// Before the counters are read for the last time: frames still held
    /// for a signature are dropped and counted, and every loss gap is
    /// settled, so every frame is counted.
    pub fn finish(&mut self) {
        if let Some(verifier) = &mut self.verifier {
            verifier.finish();
        }
        self.loss.settle_all();
    }

    /// Loss, duplicates and reordering per sender, from the seqs of frames
    /// that authenticated ([`crate::loss`]).
    pub fn loss(&self) -> &LossTracker {
        &self.loss
    }

    /// The fragment reassembler's counters.
    pub fn reassembly_stats(&self) -> &ReassemblyStats {
        self.reassembler.stats()
    }

    /// The variant-3 file receiver's counters.
    pub fn file_stats(&self) -> &FileStats {
        self.files.stats()
    }

    /// The signature layer's counters, with a [`Verifier`].
    pub fn signed_stats(&self) -> Option<&SignedStats> {
        self.verifier.as_ref().map(Verifier::stats)
    }

    /// Without a [`Verifier`]: manifests that authenticated and were
    /// ignored.
    pub fn manifests_ignored(&self) -> u64 {
        self.manifests_ignored
    }

    /// Variant-5 symbols that authenticated with no [`StreamSink`] to take
    /// them.
    pub fn stream_symbols_ignored(&self) -> u64 {
        self.stream_symbols_ignored
    }
}

#[cfg(test)]
#[path = "inbox_tests.rs"]
mod tests;
