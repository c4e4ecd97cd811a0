//! Receiving files of any size (body variant 5): the shell around
//! [`mcsec::transfer::stream::StreamReceiver`]. The receive loop only
//! pushes symbols into it and hands the writes and jobs it asks for to one
//! worker thread, which owns the files: it writes symbols at their
//! offsets, decodes blocks, notes finished blocks for a later resume,
//! checks the SHA-256 and moves a finished file into place. A slow disk
//! fills the worker's queue; symbols that do not fit are dropped and
//! counted (`file_backpressure`), and the carousel brings them again: the
//! socket is never left unread.
//!
//! Storage: with --save-dir, a partial file is `.mcsec-SHA-LEN.part` in
//! that directory, beside `.mcsec-SHA-LEN.blocks`, a log of the blocks
//! stored. A receiver that restarts finds both and resumes: the blocks in
//! the log are not received again. Without --save-dir, partial files go to
//! a private temporary directory and are deleted once checked.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use mcsec::Header;
use mcsec::files::hex;
use mcsec::transfer::stream::{
    Completed, Decoded, DropReason, Handle, Job, Layout, NewFile, StreamConfig, StreamReceiver,
    sanitize_path,
};

use super::common::{Delivered, FileDone, Signer};

/// Bytes of symbol writes that may wait for the worker before symbols are
/// dropped (`file_backpressure`).
const MAX_QUEUED: usize = 32 << 20;

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

impl FileSink {
    /// A sink that saves into `save_dir`, or checks files in a private
    /// temporary directory and discards them.
    pub(crate) fn start(config: StreamConfig, save_dir: Option<&Path>) -> std::io::Result<Self> {
        let (tmp, dir, resumable) = match save_dir {
            Some(dir) => (None, dir.to_path_buf(), true),
            None => {
                let tmp = tempfile::Builder::new().prefix("mcsec-recv-").tempdir()?;
                let dir = tmp.path().to_path_buf();
                (Some(tmp), dir, false)
            }
        };
        let (work_tx, work_rx) = mpsc::channel();
        let (reply_tx, reply_rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut worker = Worker {
            dir,
            resumable,
            parts: HashMap::new(),
            names: HashSet::new(),
            queued: Arc::clone(&queued),
            replies: reply_tx,
        };
        let handle = std::thread::Builder::new()
            .name("mcsec-files".into())
            .spawn(move || {
                while let Ok(work) = work_rx.recv() {
                    worker.run(work);
                }
            })?;
        Ok(Self {
            rx: StreamReceiver::new(config),
            work: Some(work_tx),
            replies: reply_rx,
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

    fn send(&mut self, work: Work) {
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
        signer: &Signer,
        from: Option<std::net::SocketAddr>,
    ) {
        let key = (mcsec::Origin::from(header), symbol.file_id);
        if let Some(&at) = self.failed.get(&key) {
            if now_us.saturating_sub(at) < FAILED_HOLD_US {
                return;
            }
            self.failed.remove(&key);
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
                    signer: signer.clone(),
                    from,
                    done: None,
                },
            );
            self.send(Work::Open(new));
        }
        if let Some(w) = step.write {
            let len = w.len;
            if self.queued.load(Ordering::Relaxed).saturating_add(len) > MAX_QUEUED {
                self.rx.unwrite(w.handle, w.offset);
                self.backpressure += 1;
                return;
            }
            let Some(bytes) = symbol.symbol.get(..len) else {
                return;
            };
            self.queued.fetch_add(len, Ordering::Relaxed);
            self.send(Work::Write {
                handle: w.handle,
                offset: w.offset,
                bytes: bytes.to_vec(),
            });
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
            let delete = matches!(why, DropReason::Conflict | DropReason::HashMismatch);
            if why == DropReason::HashMismatch {
                tracing::warn!("dropped a file: decoded file does not match its SHA-256");
            }
            self.send(Work::Close { handle, delete });
        }
    }

    /// Handles what the worker finished; files now saved come out of
    /// [`Self::next_file`].
    pub(crate) fn poll(&mut self, now_us: u64) {
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
        self.work = None;
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
    file: File,
    part: PathBuf,
    log: Option<File>,
    log_path: PathBuf,
    name: String,
}

/// The worker thread's side: it owns the files.
struct Worker {
    dir: PathBuf,
    resumable: bool,
    parts: HashMap<Handle, Part>,
    names: HashSet<String>,
    queued: Arc<AtomicUsize>,
    replies: mpsc::Sender<Reply>,
}

fn open_new(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn open_existing(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .append(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
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
                self.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                if let Some(p) = self.parts.get(&handle)
                    && let Err(e) = p.file.write_all_at(&bytes, offset)
                {
                    self.fail(handle, "writing", &e);
                }
            }
            Work::BlockDone { handle, block } => {
                if let Some(p) = self.parts.get_mut(&handle)
                    && let Some(log) = &mut p.log
                    && let Err(e) = log.write_all(&block.to_le_bytes())
                {
                    // Only a later resume loses: stop logging.
                    tracing::warn!("noting a stored block in {}: {e}", p.log_path.display());
                    p.log = None;
                }
            }
            Work::Job(Job::Decode(job)) => {
                let handle = job.handle();
                let block = job.block();
                let Some(p) = self.parts.get(&handle) else {
                    // Closed meanwhile: tell the receiver, which ignores it.
                    self.reply(Reply::Decoded {
                        handle,
                        block,
                        ok: false,
                        repairs: Vec::new(),
                    });
                    return;
                };
                let file = &p.file;
                match job.run(|offset, buf| file.read_exact_at(buf, offset)) {
                    Decoded::Block { offset, data, .. } => {
                        let written = file.write_all_at(&data, offset);
                        match written {
                            Ok(()) => self.reply(Reply::Decoded {
                                handle,
                                block,
                                ok: true,
                                repairs: Vec::new(),
                            }),
                            Err(e) => self.fail(handle, "writing", &e),
                        }
                    }
                    Decoded::Failed { repairs, .. } => self.reply(Reply::Decoded {
                        handle,
                        block,
                        ok: false,
                        repairs,
                    }),
                    _ => {}
                }
            }
            Work::Job(Job::Verify(job)) => {
                let ok = match self.parts.get(&job.handle) {
                    Some(p) => hash_file(&p.file, job.file_len)
                        .map(|h| h == job.sha256)
                        .unwrap_or(false),
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
                        let kept = part.as_ref().map(|p| p.part.display().to_string());
                        if let Some(p) = &part {
                            self.names.remove(&p.name);
                        }
                        tracing::error!(
                            "saving file {:?}: {e}{}",
                            super::common::printable(&path),
                            kept.map(|k| format!("; the checked file stays as {k}"))
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
                        let _ = std::fs::remove_file(&p.part);
                        let _ = std::fs::remove_file(&p.log_path);
                    }
                }
            }
        }
    }

    fn fail(&mut self, handle: Handle, what: &str, e: &std::io::Error) {
        if let Some(p) = self.parts.remove(&handle) {
            self.names.remove(&p.name);
            let error = format!("saving a file: {what} {}: {e}", p.part.display());
            self.reply(Reply::Failed { handle, error });
        }
    }

    fn open(&mut self, new: &NewFile) -> std::io::Result<()> {
        let sha = hex(&new.sha256);
        let base = format!(".mcsec-{}-{}", &sha[..16], new.layout.file_len());
        // Two senders of the same file at once: the second gets its own.
        let name = if self.names.contains(&base) {
            format!("{base}-{}", new.handle)
        } else {
            base
        };
        let part = self.dir.join(format!("{name}.part"));
        let log_path = self.dir.join(format!("{name}.blocks"));
        let header = log_header(&new.layout, &new.sha256);
        if self.resumable
            && let Some((file, log, blocks)) = resume(&part, &log_path, &header, &new.layout)
        {
            self.names.insert(name.clone());
            self.parts.insert(
                new.handle,
                Part {
                    file,
                    part,
                    log: Some(log),
                    log_path,
                    name,
                },
            );
            self.reply(Reply::Resumed {
                handle: new.handle,
                blocks,
            });
            return Ok(());
        }
        let file = open_new(&part)?;
        file.set_len(new.layout.file_len())?;
        let log = if self.resumable {
            let mut log = open_new(&log_path)?;
            log.write_all(header.as_bytes())?;
            Some(log)
        } else {
            None
        };
        self.names.insert(name.clone());
        self.parts.insert(
            new.handle,
            Part {
                file,
                part,
                log,
                log_path,
                name,
            },
        );
        Ok(())
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
        let _ = std::fs::remove_file(&p.log_path);
        if !self.resumable {
            let _ = std::fs::remove_file(&p.part);
            return Ok(None);
        }
        p.file.sync_all()?;
        drop(p.file);
        let components = sanitize_path(path).unwrap_or_else(|| vec![fallback.to_owned()]);
        let (name, dirs) = components
            .split_last()
            .map(|(n, d)| (n.clone(), d.to_vec()))
            .unwrap_or_else(|| (fallback.to_owned(), Vec::new()));
        let mut dir = self.dir.clone();
        for d in dirs {
            dir.push(d);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(std::io::Error::other(format!(
                        "{} exists and is not a directory",
                        dir.display()
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
                }
                Err(e) => return Err(e),
            }
        }
        place_noclobber(&p.part, &dir, &name).map(Some)
    }
}

use std::os::unix::fs::DirBuilderExt as _;

/// Links `part` into `dir` as `name`, or `name-1`, `name-2` ... before the
/// extension if taken, then removes `part`: never over an existing file.
pub(crate) fn place_noclobber(part: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    for n in 0..1000u32 {
        let candidate = if n == 0 {
            name.to_owned()
        } else {
            super::recv::numbered(stem, ext, n)
        };
        let dest = dir.join(&candidate);
        match std::fs::hard_link(part, &dest) {
            Ok(()) => {
                std::fs::remove_file(part)?;
                return Ok(dest);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "1000 files named like {name:?} exist in {}",
        dir.display()
    )))
}

/// A partial file and its log from an earlier run, if they match this
/// file: the file, the log (to append to) and the blocks it lists.
fn resume(
    part: &Path,
    log_path: &Path,
    header: &str,
    layout: &Layout,
) -> Option<(File, File, Vec<u64>)> {
    let file = open_existing(part).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() != layout.file_len() {
        return None;
    }
    let log_bytes = {
        let log = open_existing(log_path).ok()?;
        if !log.metadata().ok()?.is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(&log, 64 << 20), &mut bytes).ok()?;
        bytes
    };
    let rest = log_bytes.strip_prefix(header.as_bytes())?;
    let blocks: Vec<u64> = rest
        .chunks_exact(8)
        .filter_map(|c| <[u8; 8]>::try_from(c).ok().map(u64::from_le_bytes))
        .filter(|b| *b < layout.blocks())
        .collect();
    // A torn last entry is dropped: rewrite the log whole.
    let mut log = open_new(log_path).ok()?;
    log.write_all(header.as_bytes()).ok()?;
    for b in &blocks {
        log.write_all(&b.to_le_bytes()).ok()?;
    }
    Some((file, log, blocks))
}

/// SHA-256 of the first `len` bytes of `file`.
pub(crate) fn hash_file(file: &File, len: u64) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        let n = usize::try_from((len - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, offset)?;
        hasher.update(&*chunk);
        offset += n as u64;
    }
    Ok(hasher.finalize().into())
}
