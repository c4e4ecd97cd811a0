//! # mcsec: secure, authenticated UDP multicast
//!
//! A sans-IO core that seals payloads into frames only holders of a group
//! key can read or forge, and opens them with replay and freshness checks,
//! exactly as `PROTOCOL.md` (version 2) specifies:
//!
//! - [`keys`]: group secrets, key IDs, keyring files, channel keys;
//! - [`frame`]: the 40-byte header, bytes to struct and back;
//! - [`seal`]: [`Sealer`] and [`Opener`], the receive checks and counters;
//! - [`replay`]: the per-sender replay window;
//! - [`loss`]: per-sender loss, duplicates and reordering, from seqs;
//! - [`body`]: the plaintext, one body variant, byte-exact;
//! - [`reassembly`]: fragmenting large messages and reassembling them;
//! - [`relay`]: the key-less relay's control messages, subscribers and
//!   rate caps (PROTOCOL.md Part 4);
//! - [`transfer`]: the product over the core, still sans-IO: a sender's
//!   [`transfer::outbox::Outbox`] (bodies in, batches of sealed datagrams
//!   out: fragments, signed batches, session rollover) and
//!   [`transfer::pacer::Pacer`];
//! - `files` and `transfer::stream` (feature `files`, on by default):
//!   files as RaptorQ symbols, of any size, block by block through storage;
//! - `net` (feature `net`, on by default): the socket shell, the only
//!   module that does I/O.
//!
//! The frame AEAD is RustCrypto's pure-Rust ChaCha20-Poly1305 unless the
//! `ring` feature (on by default, through `cli`) swaps in `ring`'s
//! assembly, 2.4 to 3.3 times faster per 1456-byte datagram; the bytes are
//! the same.
//!
//! Apart from `net`, nothing here touches a socket or reads the clock: time goes in as an
//! argument (microseconds since the Unix epoch), verdicts come out.
//!
//! ```
//! use mcsec::{Body, ChannelId, GroupKey, Keyring, Opener, OpenerConfig, Sealer};
//!
//! let key = GroupKey::generate(std::time::SystemTime::now())?;
//! // Every frame is sealed for one channel: a group and port, or a name.
//! let channel = ChannelId::group("239.255.0.1:5000".parse()?);
//! let mut sealer = Sealer::new(&key, &channel)?;
//! let mut opener = Opener::new(Keyring::single(key), channel, OpenerConfig::default());
//!
//! let now_us = 1_790_000_000_000_000;
//! let mut buf = [0u8; 1472];
//! let len = sealer.seal_body(now_us, &Body::Data(b"tick 42"), &mut buf)?;
//! let datagram = buf[..len].to_vec(); // what goes on the wire
//!
//! // Opening decrypts in place, in the receiver's own buffer.
//! let mut rx = datagram.clone();
//! let (header, body) = opener.open_body(now_us, &mut rx).expect("authentic");
//! assert_eq!(body, Body::Data(b"tick 42"));
//! assert_eq!(header.seq, 0);
//!
//! // The same datagram again is a replay, and is counted as one.
//! let mut again = datagram.clone();
//! assert_eq!(opener.open_body(now_us, &mut again).err(), Some(mcsec::Reject::Replayed));
//! assert_eq!(opener.stats().replayed, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod body;
mod cipher;
#[cfg(feature = "files")]
pub mod files;
mod fork;
pub mod frame;
#[cfg(all(any(fuzzing, test), feature = "files"))]
#[doc(hidden)]
pub mod fuzzing;
mod hex;
pub mod keys;
pub mod loss;
#[cfg(feature = "net")]
pub mod net;
mod partial;
pub mod reassembly;
pub mod relay;
pub mod replay;
pub mod seal;
pub mod signed;
pub mod text;
pub mod transfer;

pub use body::{Body, BodyError, FileSymbol};
pub use frame::{ChannelId, FrameError, Header, KeyId, Origin, SenderId};
pub use keys::{GroupKey, GroupSecret, KeyError, Keyring};
pub use seal::{Opened, Opener, OpenerConfig, Reject, SealError, Sealer, Stats};

/// Microseconds since the Unix epoch by the system clock: the `now` the core
/// functions take. A clock before 1970 reads as 0.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
