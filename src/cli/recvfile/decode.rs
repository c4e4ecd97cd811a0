//! Block decodes on threads of their own, so the worker that writes
//! source symbols never waits for a solve, and blocks decode in parallel.
//! A decode thread only reads: it hands the decoded block back to the
//! worker ([`Work::Decoded`]), so every write to a file goes through the
//! worker's queue, in order, where the running hash sees it.
//!
//! Memory stays what a single decode took before: the blocks being
//! decoded at once total at most [`MAX_BLOCK_BYTES`] (any one block is
//! allowed alone), so a key holder's largest blocks decode one at a time.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, mpsc};

use mcsec::transfer::stream::{DecodeJob, Decoded, MAX_BLOCK_BYTES};

use super::{Reply, Work};

/// Most decode threads.
const MAX_THREADS: usize = 4;

struct Task {
    job: DecodeJob,
    file: Arc<File>,
    bytes: u64,
}

/// The decode threads, and the bytes of the blocks they hold.
pub(super) struct Decoders {
    tasks: Option<mpsc::Sender<Task>>,
    in_flight: Arc<(Mutex<u64>, Condvar)>,
}

impl Decoders {
    /// One thread a CPU (at most [`MAX_THREADS`]), answering on `replies`.
    pub(super) fn start(
        work: &mpsc::Sender<Work>,
        replies: &mpsc::Sender<Reply>,
    ) -> std::io::Result<Self> {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_THREADS);
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let in_flight = Arc::new((Mutex::new(0u64), Condvar::new()));
        for n in 0..threads {
            let rx = Arc::clone(&rx);
            let replies = replies.clone();
            let work = work.clone();
            let in_flight = Arc::clone(&in_flight);
            std::thread::Builder::new()
                .name(format!("mcsec-decode-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take the next task.
                        let task = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(task) = task else {
                            return;
                        };
                        // Gives the bytes back however the decode ends
                        // (a panic included), or the worker would wait
                        // for them forever.
                        let _release = Release {
                            in_flight: &in_flight,
                            bytes: task.bytes,
                        };
                        match decode(task) {
                            Ok(work_item) => {
                                let _ = work.send(work_item);
                            }
                            Err(reply) => {
                                let _ = replies.send(reply);
                            }
                        }
                    }
                })?;
        }
        Ok(Self {
            tasks: Some(tx),
            in_flight,
        })
    }

    /// Hands `job` to a decode thread, once the blocks in flight leave
    /// room for it (waiting until then: this is the only backpressure a
    /// burst of decodes puts on the worker).
    pub(super) fn submit(&self, job: DecodeJob, file: Arc<File>) {
        let bytes = job.bytes();
        let (lock, cvar) = &*self.in_flight;
        // A poisoned lock (a decode thread panicked holding it, which it
        // never does) stops the accounting, never the decode.
        if let Ok(mut n) = lock.lock() {
            while *n > 0 && n.saturating_add(bytes) > MAX_BLOCK_BYTES {
                n = match cvar.wait(n) {
                    Ok(n) => n,
                    Err(e) => e.into_inner(),
                };
            }
            *n = n.saturating_add(bytes);
        }
        if let Some(tasks) = &self.tasks {
            let _ = tasks.send(Task { job, file, bytes });
        }
    }
}

struct Release<'a> {
    in_flight: &'a (Mutex<u64>, Condvar),
    bytes: u64,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let (lock, cvar) = self.in_flight;
        let mut n = match lock.lock() {
            Ok(n) => n,
            Err(e) => e.into_inner(),
        };
        *n = n.saturating_sub(self.bytes);
        cvar.notify_all();
    }
}

/// Runs one decode: the decoded block for the worker to write, or the
/// failure for the receive loop.
fn decode(task: Task) -> Result<Work, Reply> {
    let Task { job, file, .. } = task;
    let handle = job.handle();
    let block = job.block();
    match job.run(|offset, buf| file.read_exact_at(buf, offset)) {
        Decoded::Block { offset, data, .. } => Ok(Work::Decoded {
            handle,
            block,
            offset,
            data,
        }),
        Decoded::Failed { repairs, .. } => Err(Reply::Decoded {
            handle,
            block,
            ok: false,
            repairs,
        }),
        // Decoded is non_exhaustive: a kind this version does not know
        // frees the block's state as a failure would.
        _ => Err(Reply::Decoded {
            handle,
            block,
            ok: false,
            repairs: Vec::new(),
        }),
    }
}
