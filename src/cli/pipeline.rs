//! `--threads N`: the AEAD on N worker threads, the state on one.
//!
//! Sending ([`SealPipe`]): the caller's thread numbers frames in order
//! ([`mcsec::Sealer::assign`], or the library outbox that defers sealing:
//! [`mcsec::transfer::outbox::Outbox::defer_sealing`]) and lays their
//! plaintexts out in batches;
//! workers seal whole batches; sealed batches come back in the order they
//! were handed out, and the caller sends them in that order, so receivers
//! see exactly what one thread would have sent.
//!
//! Receiving ([`OpenPipe`]): the caller's thread reads a batch from the
//! socket, copies it into a job and hands it out; a worker authenticates
//! and decrypts each datagram ([`mcsec::seal::OpenWorker`], no state);
//! jobs come back in arrival order to the caller, whose
//! [`mcsec::Opener::open_checked`] runs the freshness and replay checks and
//! counts, as with one thread.
//!
//! Jobs go to workers in turn and come back from them in the same turn
//! ([`Ordered`]): that is the reorder step, with no table to keep. Queues
//! are bounded ([`DEPTH`] jobs a worker), so memory is too. A worker that
//! panics drops its end of the queues; the caller's next exchange with it
//! fails, and the command ends with an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use mcsec::seal::{ChannelKeys, OpenWorker, SealKey, Unsealed, Verdict};
use mcsec::{OpenerConfig, SealError, Sealer};

use super::CliError;

/// Jobs one worker holds at most: queued, in hand, or done and not yet
/// taken. With ~45 datagrams a job, 4 keeps a worker busy while the
/// caller's thread catches up, and bounds what is in flight to
/// 4 x 64 KiB a worker.
const DEPTH: usize = 4;

/// The most worker threads `--threads` starts.
pub(crate) const MAX_THREADS: usize = 64;

/// Parses `--threads`: 1 (the default: no worker threads) to 64.
pub(crate) fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!("threads is a number from 1 to {MAX_THREADS}")),
    }
}

fn worker_failed() -> CliError {
    CliError::new("a worker thread failed (see the message above)")
        .hint("this is a bug in mcsec; run with --threads 1 meanwhile, and report it")
}

/// N workers, each with its own bounded queues, fed in turn; results are
/// taken in the order the jobs were submitted.
pub(crate) struct Ordered<J, R> {
    jobs: Vec<SyncSender<J>>,
    results: Vec<Receiver<R>>,
    workers: Vec<JoinHandle<()>>,
    submitted: usize,
    taken: usize,
}

impl<J: Send + 'static, R: Send + 'static> Ordered<J, R> {
    /// Starts `n` workers, each running what `make` returns on its jobs.
    pub(crate) fn spawn<W>(
        name: &str,
        n: usize,
        mut make: impl FnMut() -> W,
    ) -> Result<Self, CliError>
    where
        W: FnMut(J) -> R + Send + 'static,
    {
        let mut pool = Self {
            jobs: Vec::with_capacity(n),
            results: Vec::with_capacity(n),
            workers: Vec::with_capacity(n),
            submitted: 0,
            taken: 0,
        };
        for i in 0..n.max(1) {
            let (job_tx, job_rx) = sync_channel::<J>(DEPTH);
            let (result_tx, result_rx) = sync_channel::<R>(DEPTH);
            let mut work = make();
            let worker = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    for job in job_rx {
                        if result_tx.send(work(job)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| CliError::new(format!("starting a worker thread: {e}")))?;
            pool.jobs.push(job_tx);
            pool.results.push(result_rx);
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// Jobs handed out and not yet taken back.
    pub(crate) fn in_flight(&self) -> usize {
        self.submitted - self.taken
    }

    /// Whether a job must be taken back before the next is submitted.
    pub(crate) fn is_full(&self) -> bool {
        self.in_flight() >= self.jobs.len() * DEPTH
    }

    /// Hands `job` to the next worker in turn; never blocks while not
    /// [`Self::is_full`] (a worker then holds fewer than [`DEPTH`] jobs).
    pub(crate) fn submit(&mut self, job: J) -> Result<(), CliError> {
        let worker = self.submitted % self.jobs.len();
        self.jobs[worker].send(job).map_err(|_| worker_failed())?;
        self.submitted += 1;
        Ok(())
    }

    /// The oldest job's result: waits for it if `wait`, else only if it is
    /// done. `None` if nothing is in flight (or, without `wait`, done).
    pub(crate) fn take(&mut self, wait: bool) -> Result<Option<R>, CliError> {
        if self.in_flight() == 0 {
            return Ok(None);
        }
        let worker = &self.results[self.taken % self.results.len()];
        let result = if wait {
            worker.recv().map_err(|_| worker_failed())?
        } else {
            match worker.try_recv() {
                Ok(result) => result,
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => return Err(worker_failed()),
            }
        };
        self.taken += 1;
        Ok(Some(result))
    }

    /// Takes results in order into `ready`: all of them if `all`, else
    /// those already done (and the oldest, waiting, while the pool is
    /// full).
    pub(crate) fn collect(&mut self, all: bool, ready: &mut Vec<R>) -> Result<(), CliError> {
        while self.is_full() {
            ready.extend(self.take(true)?);
        }
        while let Some(result) = self.take(all)? {
            ready.push(result);
        }
        Ok(())
    }
}

impl<J, R> Drop for Ordered<J, R> {
    fn drop(&mut self) {
        // Both ends closed first, so no worker is left blocked on a queue.
        self.jobs.clear();
        self.results.clear();
        for worker in self.workers.drain(..) {
            // A worker's panic was reported when it happened.
            let _ = worker.join();
        }
    }
}

/// A batch of frames: plaintexts laid out end to end as frames (header
/// space, body, tag space), sealed in place by a worker.
pub(crate) struct SealJob {
    key: Option<SealKey>,
    frames: Vec<Unsealed>,
    /// The frames, end to end; sealed once the job is back.
    pub(crate) buf: Vec<u8>,
    /// Every frame's length but perhaps the last's.
    pub(crate) stride: usize,
    /// Frames in the batch.
    pub(crate) count: usize,
    result: Result<(), SealError>,
}

impl SealJob {
    fn seal(mut self) -> Self {
        let Some(key) = self.key.take() else {
            return self;
        };
        let mut start = 0;
        for frame in self.frames.drain(..) {
            let end = start + frame.len();
            let sealed = match self.buf.get_mut(start..end) {
                Some(slot) => key.seal(frame, slot),
                None => Err(SealError::BufferTooSmall),
            };
            if let Err(e) = sealed {
                self.result = Err(e);
                break;
            }
            start = end;
        }
        self
    }

    /// The job's frame list, emptied by sealing, for reuse elsewhere.
    pub(crate) fn take_frames(&mut self) -> Vec<Unsealed> {
        std::mem::take(&mut self.frames)
    }

    /// The sealed batch, or why it could not be sealed.
    pub(crate) fn sealed(&self) -> Result<&[u8], CliError> {
        match self.result {
            Ok(()) => Ok(&self.buf),
            Err(e) => Err(CliError::new(format!("sealing: {e}"))),
        }
    }
}

/// Sealing on worker threads, for `send --threads` and `bench --role send
/// --threads`.
pub(crate) struct SealPipe {
    pool: Ordered<SealJob, SealJob>,
    /// The frames numbered for the batch being laid out.
    frames: Vec<Unsealed>,
    spare: Vec<SealJob>,
}

impl SealPipe {
    pub(crate) fn new(threads: usize) -> Result<Self, CliError> {
        Ok(Self {
            pool: Ordered::spawn("mcsec-seal", threads, || SealJob::seal)?,
            frames: Vec::new(),
            spare: Vec::new(),
        })
    }

    /// Numbers a frame whose plaintext (`plaintext_len` bytes) the caller
    /// already put in place; it is the next in the batch.
    pub(crate) fn assign(
        &mut self,
        sealer: &mut Sealer,
        now_us: u64,
        plaintext_len: usize,
    ) -> Result<usize, SealError> {
        let frame = sealer.assign(now_us, plaintext_len)?;
        let len = frame.len();
        self.frames.push(frame);
        Ok(len)
    }

    /// A buffer for the next batch, empty.
    pub(crate) fn buffer(&mut self) -> Vec<u8> {
        self.spare
            .last_mut()
            .map(|job| std::mem::take(&mut job.buf))
            .unwrap_or_default()
    }

    /// Hands the batch in `buf` (the frames numbered since the last
    /// submit, `count` of them, all `stride` bytes but perhaps the last)
    /// to a worker. Sealed batches that had to be taken back first, to
    /// make room, are added to `ready`.
    pub(crate) fn submit(
        &mut self,
        key: SealKey,
        buf: Vec<u8>,
        stride: usize,
        count: usize,
        ready: &mut Vec<SealJob>,
    ) -> Result<(), CliError> {
        // The batch's frames only: one numbered since may wait for the
        // next batch (it did not fit this one's run).
        if count > self.frames.len() {
            return Err(CliError::new(format!(
                "a batch of {count} frames with {} numbered",
                self.frames.len()
            )));
        }
        let mut frames = self.spare_frames();
        frames.extend(self.frames.drain(..count));
        self.submit_frames(key, buf, frames, stride, count, ready)
    }

    /// A frame list from a spare job, empty.
    fn spare_frames(&mut self) -> Vec<Unsealed> {
        self.spare
            .last_mut()
            .map(|job| std::mem::take(&mut job.frames))
            .unwrap_or_default()
    }

    /// Hands the batch in `buf` to a worker: `frames` are its frames,
    /// numbered elsewhere (an [`mcsec::transfer::outbox::Outbox`] that
    /// defers sealing), `count` of them, all `stride` bytes but perhaps
    /// the last. Sealed batches that had to be taken back first, to make
    /// room, are added to `ready`.
    pub(crate) fn submit_frames(
        &mut self,
        key: SealKey,
        buf: Vec<u8>,
        frames: Vec<Unsealed>,
        stride: usize,
        count: usize,
        ready: &mut Vec<SealJob>,
    ) -> Result<(), CliError> {
        if count != frames.len() {
            return Err(CliError::new(format!(
                "a batch of {count} frames with {} numbered",
                frames.len()
            )));
        }
        while self.pool.is_full() {
            ready.extend(self.pool.take(true)?);
        }
        let mut job = self.spare.pop().unwrap_or_else(|| SealJob {
            key: None,
            frames: Vec::new(),
            buf: Vec::new(),
            stride: 0,
            count: 0,
            result: Ok(()),
        });
        job.key = Some(key);
        job.frames = frames;
        job.buf = buf;
        job.stride = stride;
        job.count = count;
        job.result = Ok(());
        self.pool.submit(job)
    }

    /// Sealed batches, in order, into `ready`: all of them if `all`, else
    /// those done.
    pub(crate) fn collect(&mut self, all: bool, ready: &mut Vec<SealJob>) -> Result<(), CliError> {
        self.pool.collect(all, ready)
    }

    /// A job sent, to reuse its buffers.
    pub(crate) fn recycle(&mut self, mut job: SealJob) {
        if self.spare.len() < DEPTH {
            job.buf.clear();
            job.frames.clear();
            self.spare.push(job);
        }
    }

    /// Whether batches are out with the workers.
    pub(crate) fn busy(&self) -> bool {
        self.pool.in_flight() > 0
    }
}

/// A batch of datagrams as read, checked in place by a worker.
pub(crate) struct OpenJob {
    keys: Option<Arc<ChannelKeys>>,
    buf: Vec<u8>,
    /// Each datagram's length and source, in arrival order.
    spans: Vec<(usize, SocketAddr)>,
    verdicts: Vec<Verdict>,
}

impl OpenJob {
    fn check(mut self, worker: &mut OpenWorker) -> Self {
        self.verdicts.clear();
        // Kept until the job is recycled: the opener judges a verdict
        // reached under retired keys only while someone holds them.
        let Some(keys) = self.keys.as_deref() else {
            return self;
        };
        let mut rest = self.buf.as_mut_slice();
        for (len, _) in &self.spans {
            let (datagram, tail) = std::mem::take(&mut rest).split_at_mut(*len);
            rest = tail;
            self.verdicts.push(worker.check(keys, datagram));
        }
        self
    }

    /// The datagrams, checked, with their sources and verdicts.
    pub(crate) fn datagrams(
        &mut self,
    ) -> impl Iterator<Item = (&mut [u8], SocketAddr, Verdict)> + '_ {
        let mut rest = self.buf.as_mut_slice();
        self.spans
            .iter()
            .zip(&self.verdicts)
            .map(move |((len, from), verdict)| {
                let (datagram, tail) = std::mem::take(&mut rest).split_at_mut(*len);
                rest = tail;
                (datagram, *from, *verdict)
            })
    }
}

/// Opening on worker threads, for `recv --threads` and `bench --role recv
/// --threads`.
pub(crate) struct OpenPipe {
    pool: Ordered<OpenJob, OpenJob>,
    spare: Vec<OpenJob>,
}

impl OpenPipe {
    pub(crate) fn new(threads: usize, config: &OpenerConfig) -> Result<Self, CliError> {
        let config = config.clone();
        Ok(Self {
            pool: Ordered::spawn("mcsec-open", threads, || {
                let mut worker = OpenWorker::new(&config);
                move |job: OpenJob| job.check(&mut worker)
            })?,
            spare: Vec::new(),
        })
    }

    /// Copies `datagrams` (one read from the socket) into a job and hands
    /// it to a worker, to be checked under `keys`. Checked jobs that had
    /// to be taken back first, to make room, are added to `ready`.
    pub(crate) fn submit<'a>(
        &mut self,
        keys: Arc<ChannelKeys>,
        datagrams: impl Iterator<Item = (&'a mut [u8], SocketAddr)>,
        ready: &mut Vec<OpenJob>,
    ) -> Result<(), CliError> {
        while self.pool.is_full() {
            ready.extend(self.pool.take(true)?);
        }
        let mut job = self.spare.pop().unwrap_or_else(|| OpenJob {
            keys: None,
            buf: Vec::new(),
            spans: Vec::new(),
            verdicts: Vec::new(),
        });
        job.buf.clear();
        job.spans.clear();
        for (datagram, from) in datagrams {
            job.buf.extend_from_slice(datagram);
            job.spans.push((datagram.len(), from));
        }
        if job.spans.is_empty() {
            self.spare.push(job);
            return Ok(());
        }
        job.keys = Some(keys);
        self.pool.submit(job)
    }

    /// Checked jobs, in arrival order, into `ready`: all of them if `all`,
    /// else those done.
    pub(crate) fn collect(&mut self, all: bool, ready: &mut Vec<OpenJob>) -> Result<(), CliError> {
        self.pool.collect(all, ready)
    }

    /// Whether batches are out with the workers.
    pub(crate) fn busy(&self) -> bool {
        self.pool.in_flight() > 0
    }

    /// A job handled, to reuse its buffers.
    pub(crate) fn recycle(&mut self, mut job: OpenJob) {
        job.keys = None;
        if self.spare.len() < DEPTH {
            self.spare.push(job);
        }
    }
}

/// Whether a read on `fd` would not block now: more datagrams are waiting.
pub(crate) fn readable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_submission_order() {
        let mut pool = Ordered::spawn("t", 3, || {
            |n: u64| {
                // Uneven work, so workers finish out of order.
                std::thread::sleep(std::time::Duration::from_micros((n * 7919) % 500));
                n
            }
        })
        .unwrap();
        let mut ready = Vec::new();
        for n in 0..100 {
            pool.collect(false, &mut ready).unwrap();
            pool.submit(n).unwrap();
        }
        pool.collect(true, &mut ready).unwrap();
        assert_eq!(ready, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_worker_that_panics_ends_the_run_with_an_error() {
        let mut pool = Ordered::spawn("t", 2, || {
            |n: u64| {
                assert!(n != 5, "worker panics on purpose (test)");
                n
            }
        })
        .unwrap();
        let mut ready = Vec::new();
        let mut failed = false;
        for n in 0..50 {
            if pool.collect(false, &mut ready).is_err() || pool.submit(n).is_err() {
                failed = true;
                break;
            }
        }
        failed |= pool.collect(true, &mut ready).is_err();
        assert!(failed, "the panic must surface as an error");
        assert_eq!(ready, (0..5).collect::<Vec<_>>());
    }
}
