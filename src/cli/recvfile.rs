//! Receiving files of any size (body variant 5): the shell around
//! [`mcsec::transfer::stream::StreamReceiver`]. The receive loop only
//! pushes symbols into it and hands the writes and jobs it asks for to one
//! worker thread, which owns the files: it writes symbols at their
//! offsets (hashing the file as it goes), hands block decodes to threads
//! of their own ([`decode`]), notes finished blocks for a later resume,
//! checks the SHA-256 and moves a finished file into place. A slow disk
//! fills the worker's queue; symbols that do not fit are dropped and
//! counted (`file_backpressure`), and the carousel brings them again: the
//! socket is never left unread.
//!
//! Storage: with --save-dir, a partial file is `.mcsec-SHA-LEN.part` in
//! that directory, beside `.mcsec-SHA-LEN.blocks`, a log of the blocks
//! stored. A receiver that restarts finds both and resumes: the blocks in
//! the log are not received again. Without --save-dir, partial files go to
//! a private temporary directory and are deleted once checked. What is
//! trusted on disk, and how, is [`store`]'s.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use mcsec::Header;
use mcsec::files::hex;
use mcsec::transfer::stream::{
    Completed, DropReason, Handle, Job, Layout, NewFile, StreamConfig, StreamReceiver,
    sanitize_path,
};

use super::CliError;
use super::common::{Delivered, FileDone, Signer};

mod decode;
mod store;

/// Bytes of symbol writes and decoded blocks that may wait for the worker
/// before symbols are dropped (`file_backpressure`). 16 MiB is 70 ms of
/// this machine's disk; at 32 MiB a receiver kept behind for a 4 GiB file
/// peaked at 175-177 MiB of RSS, over the 160 MiB bound, at 16 MiB at
/// 137-141 (BENCHMARKS.md, "Memory when the receiver falls behind").
const MAX_QUEUED: usize = 16 << 20;

/// Bytes counted for each write queued, on top of its data: the message
/// and its allocation.
const WRITE_OVERHEAD: usize = 128;

/// Consecutive source symbols of a file go to the worker as one write of
/// up to this many bytes: a syscall and a message per run, not per symbol.
const RUN_BYTES: usize = 256 << 10;

/// Runs open at once (a sender interleaves a few blocks).
const MAX_RUNS: usize = 16;

/// Source symbols on their way to the worker as one write: consecutive
/// bytes of one file.
struct Run {
    handle: Handle,
    offset: u64,
    bytes: Vec<u8>,
}

/// First line of a `.blocks` log: what the partial file must be.
fn log_header(layout: &Layout, sha256: &[u8; 32]) -> String {
    format!(
        "mcsec partial file v1 len {} symbol {} block {} sha256 {}\n",
        layout.file_len(),
        layout.symbol_size(),
        layout.block_symbols(),
        hex(sha256)
    )
}

enum Work {
    Open(NewFile),
    Write {
        handle: Handle,
        offset: u64,
        bytes: Vec<u8>,
    },
    BlockDone {
        handle: Handle,
        block: u64,
    },
    Job(Job),
    /// A decode thread's block, to write unless the block is already
    /// stored (by its source symbols or a resume) and taken by the hash.
    Decoded {
        handle: Handle,
        block: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// The end: the decode threads hold senders too, so the queue never
    /// closes by itself.
    Stop,
    Save {
        handle: Handle,
        path: String,
        fallback: String,
    },
    Close {
        handle: Handle,
        delete: bool,
    },
}

enum Reply {
    Resumed {
        handle: Handle,
        blocks: Vec<u64>,
    },
    Decoded {
        handle: Handle,
        block: u64,
        ok: bool,
        repairs: Vec<(u32, Vec<u8>)>,
    },
    Verified {
        handle: Handle,
        ok: bool,
    },
    Saved {
        handle: Handle,
        path: Option<PathBuf>,
    },
    Failed {
        handle: Handle,
        error: String,
    },
}

/// Who a file came from, for its delivery.
struct Meta {
    header: Header,
    file_id: u32,
    path: String,
    signer: Signer,
    from: Option<std::net::SocketAddr>,
    done: Option<Completed>,
}

/// The receive loop's side: see the module docs.
pub(crate) struct FileSink {
    rx: StreamReceiver,
    work: Option<mpsc::Sender<Work>>,
    replies: mpsc::Receiver<Reply>,
    runs: Vec<Run>,
    queued: Arc<AtomicUsize>,
    meta: HashMap<Handle, Meta>,
    worker: Option<JoinHandle<()>>,
    ready: VecDeque<Delivered<'static>>,
    backpressure: u64,
    storage_errors: u64,
    /// Files whose storage failed, and when: their symbols are ignored
    /// for a while rather than fail again, one error each.
    failed: HashMap<(mcsec::Origin, u32), u64>,
    _tmp: Option<tempfile::TempDir>,
}

/// How long the symbols of a file whose storage failed are ignored.
const FAILED_HOLD_US: u64 = 60_000_000;

/// The library's inbox hands this sink the variant-5 symbols it opens.
impl mcsec::transfer::inbox::StreamSink for FileSink {
    fn symbol(
        &mut self,
        now_mono_us: u64,
        header: &Header,
        symbol: &mcsec::body::StreamSymbol<'_>,
        signer: Option<&Arc<str>>,
        from: Option<std::net::SocketAddr>,
    ) {
        self.push(now_mono_us, header, symbol, signer, from);
    }
}

impl FileSink {
    /// A sink that saves into `save_dir`, or checks files in a private
    /// temporary directory and discards them. A save directory others
    /// could plant files in is refused (see [`store`]); partial files left
    /// in it longer than [`store::STALE_AFTER`] are removed.
    pub(crate) fn start(config: StreamConfig, save_dir: Option<&Path>) -> Result<Self, CliError> {
        let starting =
            |e: std::io::Error| CliError::new(format!("starting the file receiver: {e}"));
        let (tmp, dir, resumable) = match save_dir {
            Some(dir) => (None, dir.to_path_buf(), true),
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("mcsec-recv-")
                    .tempdir()
                    .map_err(starting)?;
                let dir = tmp.path().to_path_buf();
                (Some(tmp), dir, false)
            }
        };
        let dirfd = store::open_save_dir(&dir)?;
        if resumable {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let swept = store::sweep(&dirfd, now, store::STALE_AFTER);
            if swept > 0 {
                tracing::info!(
                    "removed {swept} partial files and logs in {} not written for {} days",
                    dir.display(),
                    store::STALE_AFTER.as_secs() / 86_400
                );
            }
        }
        let (work_tx, work_rx) = mpsc::channel();
        let (reply_tx, reply_rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut worker = Worker {
            dir,
            dirfd,
            resumable,
            parts: HashMap::new(),
            names: HashSet::new(),
            queued: Arc::clone(&queued),
            decoders: decode::Decoders::start(&work_tx, &reply_tx, &queued).map_err(starting)?,
            replies: reply_tx,
        };
        let handle = std::thread::Builder::new()
            .name("mcsec-files".into())
            .spawn(move || {
                while let Ok(work) = work_rx.recv() {
                    if matches!(work, Work::Stop) {
                        break;
                    }
                    worker.run(work);
                }
            })
            .map_err(starting)?;
        Ok(Self {
            rx: StreamReceiver::new(config),
            work: Some(work_tx),
            replies: reply_rx,
            runs: Vec::new(),
            queued,
            meta: HashMap::new(),
            worker: Some(handle),
            ready: VecDeque::new(),
            backpressure: 0,
            storage_errors: 0,
            failed: HashMap::new(),
            _tmp: tmp,
        })
    }

    /// Hands `work` to the worker, after the writes waiting in runs: a
    /// decode reads what they write, and a block is logged after its bytes.
    fn send(&mut self, work: Work) {
        if !matches!(work, Work::Write { .. }) {
            self.flush_runs();
        }
        self.send_now(work);
    }

    fn flush_runs(&mut self) {
        for run in std::mem::take(&mut self.runs) {
            self.send_now(Work::Write {
                handle: run.handle,
                offset: run.offset,
                bytes: run.bytes,
            });
        }
    }

    /// Adds a source symbol's bytes to the run they continue, or starts one.
    fn write(&mut self, handle: Handle, offset: u64, bytes: &[u8]) {
        let at = self.runs.iter().position(|r| {
            r.handle == handle && r.offset.checked_add(r.bytes.len() as u64) == Some(offset)
        });
        let run = match at {
            Some(i) => i,
            None => {
                if self.runs.len() >= MAX_RUNS {
                    let oldest = self.runs.remove(0);
                    self.send_now(Work::Write {
                        handle: oldest.handle,
                        offset: oldest.offset,
                        bytes: oldest.bytes,
                    });
                }
                self.queued.fetch_add(WRITE_OVERHEAD, Ordering::Relaxed);
                self.runs.push(Run {
                    handle,
                    offset,
                    bytes: Vec::with_capacity(RUN_BYTES.min(64 << 10)),
                });
                self.runs.len() - 1
            }
        };
        self.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        let full = match self.runs.get_mut(run) {
            Some(r) => {
                r.bytes.extend_from_slice(bytes);
                r.bytes.len() >= RUN_BYTES
            }
            None => false,
        };
        if full {
            let r = self.runs.remove(run);
            self.send_now(Work::Write {
                handle: r.handle,
                offset: r.offset,
                bytes: r.bytes,
            });
        }
    }

    fn send_now(&mut self, work: Work) {
        if let Some(tx) = &self.work
            && tx.send(work).is_err()
        {
            // The worker is gone (it panicked): nothing more can be stored.
            self.work = None;
            tracing::error!("the file worker stopped; files can no longer be received");
        }
    }

    fn job(&mut self, job: Option<Job>) {
        if let Some(job) = job {
            self.send(Work::Job(job));
        }
    }

    /// Takes one variant-5 symbol of an authenticated frame.
    pub(crate) fn push(
        &mut self,
        now_us: u64,
        header: &Header,
        symbol: &mcsec::body::StreamSymbol<'_>,
        signer: Option<&Arc<str>>,
        from: Option<std::net::SocketAddr>,
    ) {
        let key = (mcsec::Origin::from(header), symbol.file_id);
        if let Some(&at) = self.failed.get(&key) {
            if now_us.saturating_sub(at) < FAILED_HOLD_US {
                return;
            }
            self.failed.remove(&key);
        }
        // Backpressure before the receiver takes the symbol: one refused
        // here was never received, and a later pass brings it again. (Taken
        // and then undone, it could already have finished its block.)
        let room = symbol.symbol.len().saturating_add(WRITE_OVERHEAD);
        if self.queued.load(Ordering::Relaxed).saturating_add(room) > MAX_QUEUED {
            self.backpressure += 1;
            return;
        }
        let step = self.rx.push(now_us, mcsec::Origin::from(header), symbol);
        self.drops();
        let step = match step {
            Ok(step) => step,
            Err(why) => {
                tracing::trace!("dropped a file symbol: {why}");
                return;
            }
        };
        if let Some(new) = step.new_file {
            tracing::debug!(
                "receiving file {:?} ({} bytes) from {}",
                super::common::printable(&new.path),
                new.layout.file_len(),
                header.sender_id
            );
            self.meta.insert(
                new.handle,
                Meta {
                    header: *header,
                    file_id: symbol.file_id,
                    path: new.path.clone(),
                    signer: signer.cloned(),
                    from,
                    done: None,
                },
            );
            self.send(Work::Open(new));
        }
        if let Some(w) = step.write {
            let Some(bytes) = symbol.symbol.get(..w.len) else {
                // Never: the receiver checked the symbol against its layout.
                return;
            };
            self.write(w.handle, w.offset, bytes);
        }
        if let (Some(block), Some(w)) = (step.finished, step.write) {
            self.send(Work::BlockDone {
                handle: w.handle,
                block,
            });
        }
        self.job(step.job);
    }

    /// Storage the receiver gave up: closed, and deleted unless a later
    /// run may resume it.
    fn drops(&mut self) {
        for (handle, why) in self.rx.take_dropped() {
            self.meta.remove(&handle);
            // Only bytes known bad are deleted. A conflict says nothing of
            // the blocks stored, which may be another transfer's (a partial
            // file resumed from an earlier run): kept for a later resume.
            let delete = why == DropReason::HashMismatch;
            if why == DropReason::HashMismatch {
                tracing::warn!("dropped a file: decoded file does not match its SHA-256");
            }
            self.send(Work::Close { handle, delete });
        }
    }

    /// Handles what the worker finished; files now saved come out of
    /// [`Self::next_file`].
    pub(crate) fn poll(&mut self, now_us: u64) {
        self.flush_runs();
        self.rx.expire(now_us);
        self.drops();
        while let Ok(reply) = self.replies.try_recv() {
            match reply {
                Reply::Resumed { handle, blocks } => {
                    let n = blocks.len();
                    let job = self.rx.resume(handle, blocks);
                    tracing::info!("resuming a partial file: {n} blocks already stored");
                    self.job(job);
                }
                Reply::Decoded {
                    handle,
                    block,
                    ok,
                    repairs,
                } => {
                    if ok {
                        self.send(Work::BlockDone { handle, block });
                    }
                    let job = self.rx.decoded(handle, block, ok, repairs);
                    self.job(job);
                }
                Reply::Verified { handle, ok } => {
                    if let Some(done) = self.rx.verified(handle, ok) {
                        let path = done.path.clone();
                        let fallback = format!("file-{}-{}", done.origin.sender_id, done.file_id);
                        if let Some(meta) = self.meta.get_mut(&handle) {
                            meta.done = Some(done);
                        }
                        self.send(Work::Save {
                            handle,
                            path,
                            fallback,
                        });
                    }
                }
                Reply::Saved { handle, path } => {
                    let Some(meta) = self.meta.remove(&handle) else {
                        continue;
                    };
                    let Some(done) = meta.done else { continue };
                    self.ready.push_back(Delivered::File {
                        header: meta.header,
                        file: FileDone {
                            sender: done.origin.sender_id,
                            file_id: done.file_id,
                            name: done.path,
                            sha256: done.sha256,
                            len: done.file_len,
                            data: None,
                            saved: path,
                            from: meta.from,
                        },
                        signer: meta.signer,
                    });
                }
                Reply::Failed { handle, error } => {
                    self.storage_errors += 1;
                    // As every error: on standard error, under -q too.
                    eprintln!("error: {error}");
                    if let Some(meta) = self.meta.remove(&handle) {
                        let key = (mcsec::Origin::from(&meta.header), meta.file_id);
                        self.failed.insert(key, now_us);
                        // Bounded: a few files fail at once, not thousands.
                        if self.failed.len() > 1024 {
                            self.failed
                                .retain(|_, at| now_us.saturating_sub(*at) < FAILED_HOLD_US);
                        }
                    }
                    self.rx.abandon(handle);
                    self.drops();
                }
            }
        }
        self.drops();
    }

    /// How far each file being received is.
    pub(crate) fn progress(&self) -> Vec<super::progress::FileProgress> {
        let mut out: Vec<_> = self
            .rx
            .progress()
            .into_iter()
            .filter_map(|(handle, stored, len)| {
                let meta = self.meta.get(&handle)?;
                Some(super::progress::FileProgress {
                    handle,
                    sender: meta.header.sender_id,
                    file_id: meta.file_id,
                    path: meta.path.clone(),
                    stored,
                    len,
                })
            })
            .collect();
        out.sort_by_key(|f| f.handle);
        out
    }

    /// A file received, checked and (with --save-dir) saved.
    pub(crate) fn next_file(&mut self) -> Option<Delivered<'static>> {
        self.ready.pop_front()
    }

    /// The receiver's counters, and the shell's own.
    pub(crate) fn stats(&self) -> (mcsec::files::FileStats, u64, u64) {
        (*self.rx.stats(), self.backpressure, self.storage_errors)
    }

    /// Waits for the worker to finish what it was given (partial files
    /// stay, for a later resume).
    pub(crate) fn finish(&mut self) {
        self.flush_runs();
        if let Some(work) = self.work.take() {
            let _ = work.send(Work::Stop);
        }
        if let Some(worker) = self.worker.take()
            && worker.join().is_err()
        {
            tracing::error!("the file worker panicked");
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.finish();
    }
}

struct Part {
    /// Shared with the decode threads.
    file: Arc<File>,
    /// `NAME` of `NAME.part` and `NAME.blocks` in the worker's directory.
    name: String,
    log: Option<File>,
    hash: Running,
}

/// The SHA-256 of a partial file's prefix, carried forward as its bytes
/// are written, so verifying a whole file reads back only what arrived
/// out of order (a lossless transfer: nothing).
struct Running {
    hasher: Sha256,
    /// Bytes `hasher` has taken: the file's first `hashed` bytes.
    hashed: u64,
    layout: Layout,
    /// Blocks stored whole at or past the block `hashed` is in.
    done: BTreeSet<u64>,
    /// A write landed on bytes already taken: the prefix is no longer
    /// what the file holds, and the verdict reads the whole file again.
    stale: bool,
}

impl Running {
    fn new(layout: Layout, resumed: &[u64]) -> Self {
        Self {
            hasher: Sha256::new(),
            hashed: 0,
            layout,
            done: resumed.iter().copied().collect(),
            stale: false,
        }
    }

    /// Bytes written at `offset`: taken if they continue the prefix.
    fn wrote(&mut self, offset: u64, bytes: &[u8]) {
        if offset == self.hashed && !self.stale {
            self.hasher.update(bytes);
            self.hashed += bytes.len() as u64;
        } else if offset < self.hashed {
            self.stale = true;
        }
    }

    /// Whether block `block` is stored whole: told done, or taken.
    fn is_stored(&self, block: u64) -> bool {
        let end = self
            .layout
            .block_offset(block)
            .saturating_add(self.layout.block_data_len(block));
        self.done.contains(&block) || end <= self.hashed
    }

    /// Block `block` is stored whole: reads back and takes what of it, and
    /// of the stored blocks after it, continues the prefix.
    fn block_done(&mut self, file: &File, block: u64) -> std::io::Result<()> {
        self.done.insert(block);
        let block_bytes = self.layout.block_offset(1);
        while !self.stale && self.hashed < self.layout.file_len() && block_bytes > 0 {
            let b = self.hashed / block_bytes;
            if !self.done.contains(&b) {
                break;
            }
            let end = self
                .layout
                .block_offset(b)
                .saturating_add(self.layout.block_data_len(b));
            hash_range(file, &mut self.hasher, self.hashed, end)?;
            self.hashed = end;
            self.done = self.done.split_off(&(b + 1));
        }
        Ok(())
    }

    /// The whole file's SHA-256, reading back what is not yet taken.
    fn finish(&self, file: &File) -> std::io::Result<[u8; 32]> {
        if self.stale {
            return hash_file(file, self.layout.file_len());
        }
        let mut hasher = self.hasher.clone();
        hash_range(file, &mut hasher, self.hashed, self.layout.file_len())?;
        Ok(hasher.finalize().into())
    }
}

/// The worker thread's side: it owns the files.
struct Worker {
    /// The directory, for messages: everything goes through `dirfd`.
    dir: PathBuf,
    dirfd: OwnedFd,
    resumable: bool,
    parts: HashMap<Handle, Part>,
    names: HashSet<String>,
    queued: Arc<AtomicUsize>,
    replies: mpsc::Sender<Reply>,
    decoders: decode::Decoders,
}

impl Worker {
    fn reply(&self, reply: Reply) {
        // The sink is gone only when the receiver is ending.
        let _ = self.replies.send(reply);
    }

    fn run(&mut self, work: Work) {
        match work {
            Work::Open(new) => {
                let handle = new.handle;
                if let Err(e) = self.open(&new) {
                    self.reply(Reply::Failed {
                        handle,
                        error: format!(
                            "saving file {:?} in {}: creating its partial file: {e}",
                            super::common::printable(&new.path),
                            self.dir.display()
                        ),
                    });
                }
            }
            Work::Write {
                handle,
                offset,
                bytes,
            } => {
                self.queued
                    .fetch_sub(bytes.len() + WRITE_OVERHEAD, Ordering::Relaxed);
                if let Some(p) = self.parts.get_mut(&handle) {
                    match p.file.write_all_at(&bytes, offset) {
                        Ok(()) => p.hash.wrote(offset, &bytes),
                        Err(e) => self.fail(handle, "writing", &e),
                    }
                }
            }
            Work::BlockDone { handle, block } => {
                let Some(p) = self.parts.get_mut(&handle) else {
                    return;
                };
                if let Some(log) = &mut p.log
                    && let Err(e) = log.write_all(&block.to_le_bytes())
                {
                    // Only a later resume loses: stop logging.
                    tracing::warn!(
                        "noting a stored block in {}: {e}",
                        self.dir.join(format!("{}.blocks", p.name)).display()
                    );
                    p.log = None;
                }
                if let Err(e) = p.hash.block_done(&p.file, block) {
                    self.fail(handle, "reading", &e);
                }
            }
            Work::Job(Job::Decode(job)) => {
                let Some(p) = self.parts.get(&job.handle()) else {
                    // Closed meanwhile: tell the receiver, which ignores it.
                    self.reply(Reply::Decoded {
                        handle: job.handle(),
                        block: job.block(),
                        ok: false,
                        repairs: Vec::new(),
                    });
                    return;
                };
                self.decoders.submit(job, Arc::clone(&p.file));
            }
            Work::Decoded {
                handle,
                block,
                offset,
                data,
            } => {
                // Charged by the decode thread that queued it.
                self.queued
                    .fetch_sub(data.len() + WRITE_OVERHEAD, Ordering::Relaxed);
                let Some(p) = self.parts.get_mut(&handle) else {
                    return;
                };
                // Stored already: what is there stays, as the hash took it.
                if !p.hash.is_stored(block) {
                    if let Err(e) = p.file.write_all_at(&data, offset) {
                        self.fail(handle, "writing", &e);
                        return;
                    }
                    p.hash.wrote(offset, &data);
                }
                self.reply(Reply::Decoded {
                    handle,
                    block,
                    ok: true,
                    repairs: Vec::new(),
                });
            }
            Work::Stop => {}
            Work::Job(Job::Verify(job)) => {
                let ok = match self.parts.get(&job.handle) {
                    Some(p) => {
                        job.file_len == p.hash.layout.file_len()
                            && p.hash.finish(&p.file).is_ok_and(|h| h == job.sha256)
                    }
                    None => false,
                };
                self.reply(Reply::Verified {
                    handle: job.handle,
                    ok,
                });
            }
            Work::Job(_) => {}
            Work::Save {
                handle,
                path,
                fallback,
            } => {
                let saved = self.save(handle, &path, &fallback);
                match saved {
                    Ok(path) => self.reply(Reply::Saved { handle, path }),
                    Err(e) => {
                        // Keep the checked file where it is, and say so.
                        let part = self.parts.remove(&handle);
                        let kept = part
                            .as_ref()
                            .map(|p| self.dir.join(format!("{}.part", p.name)));
                        if let Some(p) = &part {
                            self.names.remove(&p.name);
                        }
                        tracing::error!(
                            "saving file {:?}: {e}{}",
                            super::common::printable(&path),
                            kept.map(|k| format!("; the checked file stays as {}", k.display()))
                                .unwrap_or_default()
                        );
                        self.reply(Reply::Saved { handle, path: None });
                    }
                }
            }
            Work::Close { handle, delete } => {
                if let Some(p) = self.parts.remove(&handle) {
                    self.names.remove(&p.name);
                    if delete || !self.resumable {
                        store::remove(&self.dirfd, &p.name);
                    }
                }
            }
        }
    }

    fn fail(&mut self, handle: Handle, what: &str, e: &std::io::Error) {
        if let Some(p) = self.parts.remove(&handle) {
            self.names.remove(&p.name);
            let error = format!(
                "saving a file: {what} {}: {e}",
                self.dir.join(format!("{}.part", p.name)).display()
            );
            self.reply(Reply::Failed { handle, error });
        }
    }

    /// Finds the partial file of `new`: its own from an earlier run, else
    /// a new one under the first name free. A name another file or
    /// another receiver holds is left alone (see [`store`]).
    fn open(&mut self, new: &NewFile) -> std::io::Result<()> {
        let sha = hex(&new.sha256);
        let base = format!(".mcsec-{}-{}", &sha[..16], new.layout.file_len());
        let header = log_header(&new.layout, &new.sha256);
        for n in 0..store::MAX_PART_NAMES {
            // Two senders of the same file at once: the second gets its own.
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            if self.names.contains(&name) {
                continue;
            }
            let mut planted = false;
            if self.resumable {
                match store::inspect(&self.dirfd, &name, &header, &new.layout) {
                    store::Found::Resumable(file, log, blocks) => {
                        self.names.insert(name.clone());
                        self.parts.insert(
                            new.handle,
                            Part {
                                file: Arc::new(file),
                                name,
                                log: Some(log),
                                hash: Running::new(new.layout, &blocks),
                            },
                        );
                        self.reply(Reply::Resumed {
                            handle: new.handle,
                            blocks,
                        });
                        return Ok(());
                    }
                    store::Found::Foreign => continue,
                    store::Found::Unsafe(why) => {
                        tracing::warn!(
                            "not resuming a partial file in {}: {why}; starting it afresh",
                            self.dir.display()
                        );
                        planted = true;
                    }
                    store::Found::Absent | store::Found::Stale => {}
                }
            }
            let header = self.resumable.then_some(header.as_str());
            match store::create(&self.dirfd, &name, new.layout.file_len(), header) {
                Ok((file, log)) => {
                    self.names.insert(name.clone());
                    self.parts.insert(
                        new.handle,
                        Part {
                            file: Arc::new(file),
                            name,
                            log,
                            hash: Running::new(new.layout, &[]),
                        },
                    );
                    return Ok(());
                }
                // Made by another receiver in between, or something planted
                // that cannot be removed (a directory): the next name.
                Err(e) if planted || e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(format!(
            "{} names like {base}.part are taken",
            store::MAX_PART_NAMES
        )))
    }

    /// Moves a checked file into place under its sanitized path (or
    /// `fallback`), never over an existing file. `None` without a save
    /// directory: the file is deleted.
    fn save(
        &mut self,
        handle: Handle,
        path: &str,
        fallback: &str,
    ) -> std::io::Result<Option<PathBuf>> {
        let Some(p) = self.parts.remove(&handle) else {
            return Err(std::io::Error::other("its partial file is gone"));
        };
        self.names.remove(&p.name);
        if !self.resumable {
            store::remove(&self.dirfd, &p.name);
            return Ok(None);
        }
        store::remove_log(&self.dirfd, &p.name);
        let components = sanitize_path(path).unwrap_or_else(|| vec![fallback.to_owned()]);
        let (file, dirs) = components
            .split_last()
            .map(|(n, d)| (n.clone(), d.to_vec()))
            .unwrap_or_else(|| (fallback.to_owned(), Vec::new()));
        let mut shown = self.dir.clone();
        shown.extend(&dirs);
        let result = p
            .file
            .sync_all()
            .and_then(|()| store::open_dirs(&self.dirfd, &self.dir, &dirs))
            .and_then(|to| {
                store::place_noclobber(&self.dirfd, &p.name, &to, &shown, &file).map(Some)
            });
        if result.is_err() {
            // Kept, with its name, for the error to point at.
            self.names.insert(p.name.clone());
            self.parts.insert(handle, p);
        }
        result
    }
}

/// SHA-256 of the first `len` bytes of `file`.
pub(crate) fn hash_file(file: &File, len: u64) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    hash_range(file, &mut hasher, 0, len)?;
    Ok(hasher.finalize().into())
}

/// Feeds bytes `from..to` of `file` to `hasher`.
fn hash_range(file: &File, hasher: &mut Sha256, from: u64, to: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; usize::try_from(to.saturating_sub(from).min(1 << 20)).unwrap_or(0)];
    let mut offset = from;
    while offset < to {
        let n = usize::try_from((to - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, offset)?;
        hasher.update(&*chunk);
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::{Duration, Instant};

    use mcsec::body::StreamSymbol;
    use mcsec::{KeyId, SenderId};

    use super::*;

    /// 40 bytes in 2 blocks of 2 symbols of 10 bytes: source symbols are
    /// the file's own bytes, so no RaptorQ is needed.
    const DATA: &[u8; 40] = b"0123456789abcdefghijABCDEFGHIJklmnopqrst";

    #[test]
    fn the_running_hash_takes_writes_in_order_and_reads_back_the_rest() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
        let want: [u8; 32] = Sha256::digest(&data).into();
        // 4 blocks of 3 symbols of 1000 bytes, the last 1000 bytes short.
        let layout = Layout::new(data.len() as u64, 1000, 3).unwrap();
        assert_eq!(layout.blocks(), 4);
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.set_len(data.len() as u64).unwrap();
        let write = |h: &mut Running, from: usize, to: usize| {
            file.write_all_at(&data[from..to], from as u64).unwrap();
            h.wrote(from as u64, &data[from..to]);
        };
        // In order: taken as written, nothing left to read back.
        let mut h = Running::new(layout, &[]);
        write(&mut h, 0, 3000);
        write(&mut h, 3000, 10_000);
        assert_eq!(h.hashed, 10_000);
        assert_eq!(h.finish(&file).unwrap(), want);
        // Out of order: block 1 arrives first (not taken), then block 0's
        // first symbol; block 0 completes by a decode (written without
        // `wrote`): the prefix takes blocks 0 and 1 back from the file.
        std::fs::write(dir.path().join("f"), vec![0u8; data.len()]).unwrap();
        let mut h = Running::new(layout, &[3]);
        write(&mut h, 3000, 6000);
        h.block_done(&file, 1).unwrap();
        assert_eq!(h.hashed, 0);
        write(&mut h, 0, 1000);
        assert_eq!(h.hashed, 1000);
        file.write_all_at(&data[1000..3000], 1000).unwrap();
        h.block_done(&file, 0).unwrap();
        assert_eq!(h.hashed, 6000);
        // Block 3 was resumed (stored by an earlier run); block 2 ends it.
        file.write_all_at(&data[6000..], 6000).unwrap();
        h.block_done(&file, 2).unwrap();
        assert_eq!(h.hashed, 10_000);
        assert_eq!(h.finish(&file).unwrap(), want);
        // A write over bytes already taken (a decoded block landing
        // after late source symbols, say) makes the verdict read the
        // whole file again: it is on what the file holds.
        let mut h = Running::new(layout, &[]);
        write(&mut h, 0, 5000);
        file.write_all_at(&[0xff; 10], 0).unwrap();
        h.wrote(0, &[0xff; 10]);
        assert!(h.stale);
        write(&mut h, 5000, 10_000);
        assert_ne!(h.finish(&file).unwrap(), want, "the changed bytes are seen");
        assert!(!h.is_stored(3));
        file.write_all_at(&data[..10], 0).unwrap();
        assert_eq!(h.finish(&file).unwrap(), want);
        // Stored: told done (a resume), or taken whole.
        let mut h = Running::new(layout, &[2]);
        write(&mut h, 0, 3000);
        assert!(h.is_stored(0) && h.is_stored(2));
        assert!(!h.is_stored(1) && !h.is_stored(3));
    }
    const T: u16 = 10;

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    fn header(sender: u8) -> Header {
        Header {
            key_id: KeyId(1),
            sender_id: SenderId([sender; 16]),
            seq: 0,
            timestamp_us: 0,
        }
    }

    /// Source symbol `esi` of `block` of [`DATA`] cut in blocks of `k`.
    fn symbol<'a>(k: u32, block: u64, esi: u32, path: &'a str) -> StreamSymbol<'a> {
        let at = ((block * u64::from(k) + u64::from(esi)) * u64::from(T)) as usize;
        StreamSymbol {
            file_id: 0,
            file_len: DATA.len() as u64,
            symbol_size: T,
            block_symbols: k,
            block,
            esi,
            sha256: sha(DATA),
            path,
            symbol: &DATA[at..at + usize::from(T)],
        }
    }

    fn sink(dir: &Path) -> FileSink {
        FileSink::start(StreamConfig::default(), Some(dir)).unwrap()
    }

    fn push(sink: &mut FileSink, sender: u8, s: &StreamSymbol<'_>) {
        sink.push(1, &header(sender), s, None, None);
    }

    /// Polls until a file is delivered: where it was saved.
    fn delivered(sink: &mut FileSink) -> Option<PathBuf> {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            sink.poll(2);
            if let Some(Delivered::File { file, .. }) = sink.next_file() {
                return file.saved;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Polls until the worker has answered what it was given.
    fn settle(sink: &mut FileSink) {
        for _ in 0..20 {
            sink.poll(2);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn partials(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".mcsec-"))
            .collect();
        names.sort();
        names
    }

    fn base() -> String {
        format!(".mcsec-{}-{}", &hex(&sha(DATA))[..16], DATA.len())
    }

    /// Leaves in `dir` what a receiver stopped after block 0 leaves.
    fn leave_block_0(dir: &Path) {
        let mut sink = sink(dir);
        push(&mut sink, 9, &symbol(2, 0, 0, "f.bin"));
        push(&mut sink, 9, &symbol(2, 0, 1, "f.bin"));
        sink.finish();
        let b = base();
        assert_eq!(partials(dir), [format!("{b}.blocks"), format!("{b}.part")]);
    }

    #[test]
    fn a_symbol_refused_for_backpressure_is_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(dir.path());
        push(&mut sink, 1, &symbol(2, 0, 0, "f.bin"));
        // The worker's queue is full: the block's last symbol is refused.
        sink.queued.fetch_add(MAX_QUEUED, Ordering::Relaxed);
        push(&mut sink, 1, &symbol(2, 0, 1, "f.bin"));
        sink.queued.fetch_sub(MAX_QUEUED, Ordering::Relaxed);
        assert_eq!(sink.stats().1, 1, "counted as backpressure");
        // The carousel's next pass.
        for (b, esi) in [(0, 1), (1, 0), (1, 1)] {
            push(&mut sink, 1, &symbol(2, b, esi, "f.bin"));
        }
        let saved = delivered(&mut sink).expect("the file arrives whole");
        assert_eq!(std::fs::read(saved).unwrap(), DATA);
        assert_eq!(sink.rx.stats().hash_mismatch, 0);
        sink.finish();
        // Delivered: nothing partial stays behind.
        assert_eq!(partials(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_conflict_keeps_a_partial_file_resumed_from_another_transfer() {
        let dir = tempfile::tempdir().unwrap();
        leave_block_0(dir.path());
        let before = std::fs::read(dir.path().join(format!("{}.blocks", base()))).unwrap();
        // Another sender announces the same file: its transfer resumes it,
        // then contradicts itself (same file ID, another path).
        let mut sink = sink(dir.path());
        push(&mut sink, 2, &symbol(2, 1, 0, "f.bin"));
        settle(&mut sink);
        assert_eq!(sink.rx.stats().blocks_resumed, 1);
        push(&mut sink, 2, &symbol(2, 1, 1, "other.bin"));
        assert_eq!(sink.rx.stats().conflict, 1);
        settle(&mut sink);
        sink.finish();
        let b = base();
        assert_eq!(
            partials(dir.path()),
            [format!("{b}.blocks"), format!("{b}.part")]
        );
        let after = std::fs::read(dir.path().join(format!("{b}.blocks"))).unwrap();
        assert_eq!(after, before, "block 0 is still noted");
    }

    #[test]
    fn a_partial_file_of_another_layout_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        leave_block_0(dir.path());
        let b = base();
        let log = std::fs::read(dir.path().join(format!("{b}.blocks"))).unwrap();
        let part = std::fs::read(dir.path().join(format!("{b}.part"))).unwrap();
        // Same hash and length (so the same name), blocks of 4 symbols.
        let mut sink = sink(dir.path());
        for esi in 0..4 {
            push(&mut sink, 2, &symbol(4, 0, esi, "g.bin"));
        }
        let saved = delivered(&mut sink).expect("the file arrives");
        assert_eq!(std::fs::read(saved).unwrap(), DATA);
        sink.finish();
        assert_eq!(
            std::fs::read(dir.path().join(format!("{b}.blocks"))).unwrap(),
            log
        );
        assert_eq!(
            std::fs::read(dir.path().join(format!("{b}.part"))).unwrap(),
            part
        );
    }

    /// Plants `NAME.part` (made by `plant`) and a matching log that claims
    /// no block, then receives the file whole: `victim` must not change.
    /// What it planted stays only if not `removable`.
    fn receive_beside_planted(removable: bool, plant: impl FnOnce(&Path, &Path)) {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, [b'V'; 40]).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let b = base();
        let layout = Layout::new(40, T, 2).unwrap();
        let log = dir.path().join(format!("{b}.blocks"));
        std::fs::write(&log, log_header(&layout, &sha(DATA))).unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
        plant(&victim, &dir.path().join(format!("{b}.part")));
        let mut sink = sink(dir.path());
        for (blk, esi) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            push(&mut sink, 1, &symbol(2, blk, esi, "f.bin"));
        }
        let saved = delivered(&mut sink).expect("the file arrives");
        assert_eq!(std::fs::read(saved).unwrap(), DATA);
        assert_eq!(sink.stats().2, 0, "no storage error");
        sink.finish();
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            [b'V'; 40],
            "victim untouched"
        );
        let planted = [format!("{b}.blocks"), format!("{b}.part")];
        let left = partials(dir.path());
        if removable {
            assert_eq!(left, Vec::<String>::new());
        } else {
            assert!(left.iter().all(|n| planted.contains(n)), "{left:?}");
        }
    }

    #[test]
    fn a_planted_hard_link_is_not_written_through() {
        receive_beside_planted(true, |victim, part| {
            std::fs::hard_link(victim, part).unwrap()
        });
    }

    #[test]
    fn a_planted_directory_is_stepped_around() {
        receive_beside_planted(false, |_, part| std::fs::create_dir(part).unwrap());
    }

    #[test]
    fn a_planted_symbolic_link_is_replaced_not_followed() {
        receive_beside_planted(true, |victim, part| {
            std::os::unix::fs::symlink(victim, part).unwrap()
        });
    }

    #[test]
    fn a_partial_file_others_could_touch_is_not_resumed() {
        let spoil_mode = |part: &Path| {
            std::fs::set_permissions(part, std::fs::Permissions::from_mode(0o644)).unwrap();
        };
        let spoil_owner = |part: &Path| std::os::unix::fs::chown(part, Some(65534), None).unwrap();
        let mut spoilers: Vec<&dyn Fn(&Path)> = vec![&spoil_mode];
        // Only root can give a file away.
        if store::effective_uid() == 0 {
            spoilers.push(&spoil_owner);
        }
        for spoil in spoilers {
            let dir = tempfile::tempdir().unwrap();
            leave_block_0(dir.path());
            spoil(&dir.path().join(format!("{}.part", base())));
            let mut sink = sink(dir.path());
            push(&mut sink, 1, &symbol(2, 1, 0, "f.bin"));
            settle(&mut sink);
            assert_eq!(sink.rx.stats().blocks_resumed, 0);
            sink.finish();
        }
    }
}
