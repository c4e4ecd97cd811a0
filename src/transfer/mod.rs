//! The product over the core, still sans-IO: what mcsec builds from sealed
//! frames.
//!
//! - `stream` (feature `files`): files of any size as independently encoded RaptorQ blocks
//!   (body variant 5, [`crate::Body::StreamSymbol`]): a sender that reads
//!   and encodes block by block, and a receiver whose state is a few bits
//!   per block, that tells its caller where to write each symbol and hands
//!   decoding out as jobs that run on any thread.
//!
//! - [`pacer`]: a sender's rate limit as deadlines: book a batch, get the
//!   instant it may go; the caller does the waiting.
//!
//! Nothing here touches a socket, a file or the clock: bytes and time go
//! in, datagram bodies, writes and jobs come out. `mcsec send --file` and
//! `mcsec recv --save-dir` are thin shells over it (threads, files,
//! sockets), and so can a library user's program be: see
//! `examples/file_transfer.rs`.

pub mod pacer;
#[cfg(feature = "files")]
pub mod stream;
