//! The product over the core, still sans-IO: what mcsec builds from sealed
//! frames.
//!
//! - `stream` (feature `files`): files of any size as independently encoded RaptorQ blocks
//!   (body variant 5, [`crate::Body::StreamSymbol`]): a sender that reads
//!   and encodes block by block, and a receiver whose state is a few bits
//!   per block, that tells its caller where to write each symbol and hands
//!   decoding out as jobs that run on any thread.
//!
//! - [`outbox`]: a sender's pipeline: bodies and messages in, batches of
//!   sealed datagrams out; it fragments large messages, sizes batches (GSO
//!   runs) to what the pacer allows, signs frames in batches with their
//!   manifests, and starts a new sender session when seqs run out or the
//!   sending key changes.
//!
//! - `inbox` (feature `files`): a receiver's pipeline: datagrams in
//!   (bytes, source, time), messages, chat lines and files out, every
//!   refused datagram as a kind ([`crate::signed::SigReject`]) with its
//!   unauthenticated header, for the caller to count or explain. It opens
//!   frames (through the signature layer when given a trust list), counts
//!   loss from their seqs, puts fragments and variant-3 files back
//!   together, and hands variant-5 symbols to a sink the caller owns, so
//!   the threads and files of `stream` stay the caller's.
//!
//! - `storage` (feature `files`): a `stream` receiver run on one thread,
//!   writes, decodes and the final hash done at once in the caller's
//!   storage (memory, files), for programs that want a file and not jobs.
//!
//! - [`pacer`]: a sender's rate limit as deadlines: book a batch, get the
//!   instant it may go; the caller does the waiting.
//!
//! A sender is an [`outbox::Outbox`] and a [`pacer::Pacer`]: queue each
//! body or message with the time, take the batches that are ready, book
//! each on the pacer and send it when the pacer says; call
//! `poll_signing` at the outbox's signing deadline and `finish` before
//! exiting. `mcsec send` and `mcsec chat` are that loop with a socket, a
//! sleep and, for `--threads`, workers that seal what the outbox numbered
//! (`Outbox::defer_sealing`).
//!
//! Nothing here touches a socket, a file or the clock: bytes and time go
//! in, datagram bodies, writes, jobs and deliveries come out. `mcsec send
//! --file`, `mcsec recv` and `mcsec chat` are thin shells over it
//! (threads, files, sockets, warnings), and so can a library user's
//! program be: see `examples/file_transfer.rs`.

#[cfg(feature = "files")]
pub mod inbox;
pub mod outbox;
pub mod pacer;
#[cfg(feature = "files")]
pub mod storage;
#[cfg(feature = "files")]
pub mod stream;
