//! A [`StreamReceiver`] run on one thread, its storage and all: for a
//! program that would rather not handle writes, decode jobs and the final
//! hash itself. [`StreamReceiver::push_stored`] does all the work one symbol
//! brings, at once, in a [`Storage`] of the caller's: [`MemoryStorage`]
//! (files in memory, up to a cap), files on disk, anything that reads and
//! writes at offsets. Files the receiver drops (evicted, timed out, in
//! conflict, failing their hash) are removed from the storage as they go.
//! `mcsec recv` does the same work on threads (decodes in parallel, writes
//! behind a queue), which is faster; this is simpler.

use std::collections::HashMap;
use std::io;

use sha2::{Digest, Sha256};

use super::stream::{Completed, Decoded, Handle, Job, NewFile, StreamReceiver};
use crate::body::StreamSymbol;
use crate::files::SymbolReject;
use crate::frame::Origin;

/// Where a receiver keeps the files it is receiving, each by its handle.
pub trait Storage {
    /// A new file, `file.layout.file_len()` bytes; an error refuses it (its
    /// later symbols start it afresh).
    fn start(&mut self, file: &NewFile) -> io::Result<()>;

    /// Stores `bytes` of file `handle` at `offset`.
    fn write_at(&mut self, handle: Handle, offset: u64, bytes: &[u8]) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes of file `handle` from `offset`.
    fn read_at(&mut self, handle: Handle, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// The receiver dropped file `handle` (evicted, timed out, in
    /// conflict, failing its hash, abandoned): what it holds may go.
    fn remove(&mut self, handle: Handle);
}

/// Files whole in memory, zeroed at their start, at most `max_bytes` of
/// them together: a file that would go over is refused (a key holder
/// claims a file's length with one datagram, up to the receiver's
/// `max_file`).
#[derive(Debug, Default)]
pub struct MemoryStorage {
    files: HashMap<Handle, Vec<u8>>,
    held: u64,
    max_bytes: u64,
}

impl MemoryStorage {
    /// Storage for at most `max_bytes` of files at once.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            ..Self::default()
        }
    }

    /// Takes file `handle`'s bytes out (a completed file's, say).
    pub fn take(&mut self, handle: Handle) -> Option<Vec<u8>> {
        let bytes = self.files.remove(&handle)?;
        self.held = self.held.saturating_sub(bytes.len() as u64);
        Some(bytes)
    }

    /// Bytes held, all files together.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Files held.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is held.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl Storage for MemoryStorage {
    fn start(&mut self, file: &NewFile) -> io::Result<()> {
        let full = || io::Error::new(io::ErrorKind::OutOfMemory, "over the storage's cap");
        let len = file.layout.file_len();
        let held = self.held.checked_add(len).ok_or_else(full)?;
        if held > self.max_bytes {
            return Err(full());
        }
        let len = usize::try_from(len).map_err(|_| full())?;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).map_err(|_| full())?;
        bytes.resize(len, 0);
        self.take(file.handle);
        self.files.insert(file.handle, bytes);
        self.held = self.held.saturating_add(len as u64);
        Ok(())
    }

    fn write_at(&mut self, handle: Handle, offset: u64, bytes: &[u8]) -> io::Result<()> {
        span(self.files.get_mut(&handle), offset, bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }

    fn read_at(&mut self, handle: Handle, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.copy_from_slice(span(self.files.get_mut(&handle), offset, buf.len())?);
        Ok(())
    }

    fn remove(&mut self, handle: Handle) {
        self.take(handle);
    }
}

/// `len` bytes of `file` from `offset`, or an error if they are not all
/// there.
fn span(file: Option<&mut Vec<u8>>, offset: u64, len: usize) -> io::Result<&mut [u8]> {
    let outside = || io::Error::new(io::ErrorKind::UnexpectedEof, "outside the file");
    let file = file.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
    let start = usize::try_from(offset).map_err(|_| outside())?;
    let end = start.checked_add(len).ok_or_else(outside)?;
    file.get_mut(start..end).ok_or_else(outside)
}

/// SHA-256 of the first `len` bytes of file `handle`, read back 1 MiB at a
/// time; `None` if they cannot be read.
fn hash(storage: &mut impl Storage, handle: Handle, len: u64) -> Option<[u8; 32]> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from((len - at).min(buf.len() as u64)).ok()?;
        let chunk = buf.get_mut(..n)?;
        storage.read_at(handle, at, chunk).ok()?;
        sha.update(&*chunk);
        at += n as u64;
    }
    Some(sha.finalize().into())
}

impl StreamReceiver {
    /// [`Self::push`], then everything the symbol brings, done here: the
    /// new file started in `storage`, the source symbol written, blocks
    /// decoded from what `storage` holds and written back, and the whole
    /// file's SHA-256 checked when its last block is in. Returns the file
    /// when this symbol completed it and its hash matched.
    ///
    /// Storage that fails (an error from `storage`) abandons its file
    /// ([`Self::abandon`], counted in [`crate::files::FileStats::abandoned`]):
    /// later symbols start it afresh. Every file the
    /// receiver drops is removed from `storage` ([`Storage::remove`])
    /// before this returns; a completed file stays, for the caller.
    pub fn push_stored(
        &mut self,
        now_us: u64,
        origin: Origin,
        symbol: &StreamSymbol<'_>,
        storage: &mut impl Storage,
    ) -> Result<Option<Completed>, SymbolReject> {
        let result = self.push_stored_inner(now_us, origin, symbol, storage);
        for (handle, _) in self.take_dropped() {
            storage.remove(handle);
        }
        result
    }

    fn push_stored_inner(
        &mut self,
        now_us: u64,
        origin: Origin,
        symbol: &StreamSymbol<'_>,
        storage: &mut impl Storage,
    ) -> Result<Option<Completed>, SymbolReject> {
        let step = self.push(now_us, origin, symbol)?;
        if let Some(new) = &step.new_file
            && storage.start(new).is_err()
        {
            self.abandon(new.handle);
            return Ok(None);
        }
        if let Some(w) = step.write {
            let stored = symbol
                .symbol
                .get(..w.len)
                .map(|bytes| storage.write_at(w.handle, w.offset, bytes));
            if !matches!(stored, Some(Ok(()))) {
                self.abandon(w.handle);
                return Ok(None);
            }
        }
        let mut next = step.job;
        let mut completed = None;
        while let Some(job) = next.take() {
            next = match job {
                Job::Decode(decode) => {
                    let handle = decode.handle();
                    match decode.run(|at, buf| storage.read_at(handle, at, buf)) {
                        Decoded::Block {
                            handle,
                            block,
                            offset,
                            data,
                        } => {
                            if storage.write_at(handle, offset, &data).is_ok() {
                                self.decoded(handle, block, true, Vec::new())
                            } else {
                                self.abandon(handle);
                                None
                            }
                        }
                        Decoded::Failed {
                            handle,
                            block,
                            repairs,
                        } => self.decoded(handle, block, false, repairs),
                    }
                }
                Job::Verify(verify) => {
                    let ok = hash(storage, verify.handle, verify.file_len) == Some(verify.sha256);
                    completed = self.verified(verify.handle, ok).or(completed);
                    None
                }
            };
        }
        Ok(completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::stream::{StreamEncoder, interleave};
    use crate::{Body, KeyId, SenderId};

    const ORIGIN: Origin = Origin {
        key_id: KeyId(1),
        sender_id: SenderId([3; 16]),
    };

    /// `data` as symbols of blocks of `k`, each block with 30% repair,
    /// every `lose`-th symbol lost, into a receiver and memory.
    fn send(data: &[u8], k: u32, lose: usize, sha256: [u8; 32]) -> Option<(Completed, Vec<u8>)> {
        let enc =
            StreamEncoder::with_block_symbols(7, "a/b.bin", data.len() as u64, sha256, 600, k)
                .unwrap();
        let mut rx = StreamReceiver::default();
        let mut disk = MemoryStorage::new(1 << 20);
        let mut n = 0;
        for b in 0..enc.layout().blocks() {
            let start = enc.layout().block_offset(b) as usize;
            let bytes = data[start..][..enc.layout().block_data_len(b) as usize].to_vec();
            let block = enc.encode_block(b, bytes, 0, 30).unwrap();
            for (_, esi, symbol) in interleave(std::slice::from_ref(&block)) {
                n += 1;
                if n % lose == 0 {
                    continue;
                }
                let Body::StreamSymbol(s) = enc.body(b, esi, symbol) else {
                    unreachable!("a stream encoder makes stream symbols");
                };
                if let Ok(Some(done)) = rx.push_stored(0, ORIGIN, &s, &mut disk) {
                    let bytes = disk.take(done.handle).unwrap();
                    assert!(disk.is_empty());
                    return Some((done, bytes));
                }
            }
        }
        None
    }

    #[test]
    fn a_file_through_loss_is_stored_decoded_and_checked() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 253) as u8).collect();
        let sha256 = Sha256::digest(&data).into();
        // Every 5th symbol lost: every block decodes.
        let (done, bytes) = send(&data, 64, 5, sha256).expect("the file completes");
        assert_eq!(bytes, data);
        assert_eq!((done.file_len, done.path.as_str()), (200_000, "a/b.bin"));
    }

    #[test]
    fn a_file_whose_hash_does_not_match_is_never_completed() {
        let data: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
        assert!(send(&data, 64, 5, [9; 32]).is_none());
    }

    /// Storage that refuses every write: its file is abandoned, never
    /// completed, and nothing panics.
    struct Refusing;

    impl Storage for Refusing {
        fn start(&mut self, _: &NewFile) -> io::Result<()> {
            Ok(())
        }
        fn write_at(&mut self, _: Handle, _: u64, _: &[u8]) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
        fn read_at(&mut self, _: Handle, _: u64, _: &mut [u8]) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
        fn remove(&mut self, _: Handle) {}
    }

    /// One symbol each of many files (any key holder can claim them):
    /// the files the receiver evicts leave the storage with it, and the
    /// storage's cap refuses what would go over it.
    #[test]
    fn files_the_receiver_drops_leave_the_storage() {
        use crate::transfer::stream::StreamConfig;
        let mut rx = StreamReceiver::new(StreamConfig {
            max_files: 4,
            ..StreamConfig::default()
        });
        let mut disk = MemoryStorage::new(8 << 20);
        let symbol = vec![0u8; 1000];
        for file_id in 0..200u32 {
            let s = StreamSymbol {
                file_id,
                file_len: 1 << 20,
                symbol_size: 1000,
                block_symbols: 64,
                block: 0,
                esi: 0,
                sha256: [file_id as u8; 32],
                path: "",
                symbol: &symbol,
            };
            let _ = rx.push_stored(0, ORIGIN, &s, &mut disk);
            assert!(rx.pending() <= 4);
            assert!(disk.len() <= 4, "{} files held", disk.len());
        }
        // A claim over the cap is refused, and its file dropped.
        let s = StreamSymbol {
            file_id: 999,
            file_len: 100 << 20,
            symbol_size: 1000,
            block_symbols: 64,
            block: 0,
            esi: 0,
            sha256: [1; 32],
            path: "",
            symbol: &symbol,
        };
        assert!(matches!(rx.push_stored(0, ORIGIN, &s, &mut disk), Ok(None)));
        assert!(disk.held() <= 8 << 20);
    }

    #[test]
    fn storage_that_fails_abandons_its_file() {
        let data = vec![1u8; 10_000];
        let enc = StreamEncoder::with_block_symbols(1, "", 10_000, [0; 32], 600, 64).unwrap();
        let block = enc.encode_block(0, data, 0, 10).unwrap();
        let mut rx = StreamReceiver::default();
        let k = enc.layout().symbols_in(0);
        let mut sources = 0u64;
        for (_, esi, symbol) in interleave(std::slice::from_ref(&block)) {
            let Body::StreamSymbol(s) = enc.body(0, esi, symbol) else {
                unreachable!("a stream encoder makes stream symbols");
            };
            assert!(matches!(
                rx.push_stored(0, ORIGIN, &s, &mut Refusing),
                Ok(None)
            ));
            // A source symbol is written at once: its failed write
            // abandons the file (a repair symbol is only held).
            if esi < k {
                sources += 1;
                assert_eq!(rx.pending(), 0, "an abandoned file is not held");
            }
        }
        assert!(sources > 0);
        // Counted: each source symbol started the file afresh and its
        // write failed.
        assert_eq!(rx.stats().abandoned, sources);
    }
}
