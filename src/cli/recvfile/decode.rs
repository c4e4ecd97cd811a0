//! Block decodes on threads of their own, so the worker that writes
//! source symbols never waits for a solve, and blocks decode in parallel.
//! A decode thread only reads: it hands the decoded block back to the
//! worker ([`Work::Decoded`]), so every write to a file goes through the
//! worker's queue, in order, where the running hash sees it.
//!
//! Each decode handed to the threads is charged what it holds at its peak,
//! [`DecodeJob::working_bytes`] (4 times its block and 1.5 KiB a symbol,
//! above what was measured in resident memory), from the moment it is
//! handed over until it ends; the decodes charged at once total at most
//! [`MAX_DECODING`] (any one is allowed alone), so a key holder's largest
//! blocks (8192 symbols, 4 MiB: 28 MiB charged) decode one at a time, its
//! smallest (8192 symbols of 1 byte, 12 MiB charged for the 11 MB they
//! hold) three at a time, and the 2.8 MiB blocks of a 1500-byte MTU (14.3
//! MiB charged) three at a time (two running, one ready for the next free
//! thread).
//! A decoded block waiting for the worker is charged to the worker's queue
//! like the writes in it: when the worker falls behind, the receive loop
//! refuses symbols (`file_backpressure`) instead of decoded blocks piling
//! up uncounted behind its writes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};

use mcsec::transfer::stream::{DecodeJob, Decoded};

use super::{Reply, WRITE_OVERHEAD, Work};

/// Most decode threads.
const MAX_THREADS: usize = 4;

/// Most working memory charged to decodes at once (see the module docs).
/// It was 16 MiB of blocks, charged at their bytes alone: under a quarter
/// of what their decodes held.
const MAX_DECODING: u64 = 44 << 20;

struct Task {
    job: DecodeJob,
    file: Arc<File>,
    bytes: u64,
}

/// The decode threads, and the working memory charged to their decodes.
pub(super) struct Decoders {
    tasks: Option<mpsc::Sender<Task>>,
    in_flight: Arc<(Mutex<u64>, Condvar)>,
}

impl Decoders {
    /// One thread a CPU (at most [`MAX_THREADS`]), answering on `replies`.
    /// `queued` is the worker queue's charge, which each decoded block
    /// joins until the worker has written it.
    pub(super) fn start(
        work: &mpsc::Sender<Work>,
        replies: &mpsc::Sender<Reply>,
        queued: &Arc<AtomicUsize>,
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
            let queued = Arc::clone(queued);
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
                                if let Work::Decoded { data, .. } = &work_item {
                                    queued
                                        .fetch_add(data.len() + WRITE_OVERHEAD, Ordering::Relaxed);
                                }
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

    /// Hands `job` to a decode thread, once the decodes charged leave
    /// room for it (waiting until then: this is the only backpressure a
    /// burst of decodes puts on the worker).
    pub(super) fn submit(&self, job: DecodeJob, file: Arc<File>) {
        let bytes = job.working_bytes();
        let (lock, cvar) = &*self.in_flight;
        // A poisoned lock (a decode thread panicked holding it, which it
        // never does) stops the accounting, never the decode.
        if let Ok(mut n) = lock.lock() {
            while *n > 0 && n.saturating_add(bytes) > MAX_DECODING {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mcsec::body::Body;
    use mcsec::frame::Origin;
    use mcsec::transfer::stream::{Job, StreamEncoder, StreamReceiver, interleave};
    use mcsec::{KeyId, SenderId};
    use sha2::Digest as _;

    use super::*;

    /// A decode job for block 0 of a 4-block file with its first source
    /// symbol lost, and the partial file a receiver stored for it.
    fn lossy_block() -> (DecodeJob, File, Vec<u8>) {
        let data: Vec<u8> = (0..4000u32).map(|i| (i * 13 + i / 7) as u8).collect();
        let sha: [u8; 32] = sha2::Sha256::digest(&data).into();
        let enc =
            StreamEncoder::with_block_symbols(0, "f.bin", data.len() as u64, sha, 300, 4).unwrap();
        let l = *enc.layout();
        let block = enc
            .encode_block(0, data[..l.block_data_len(0) as usize].to_vec(), 0, 100)
            .unwrap();
        let file = tempfile::tempfile().unwrap();
        file.set_len(data.len() as u64).unwrap();
        let origin = Origin {
            key_id: KeyId(1),
            sender_id: SenderId([1; 16]),
        };
        let mut rx = StreamReceiver::default();
        for (_, esi, bytes) in interleave(std::slice::from_ref(&block)) {
            if esi == 0 {
                continue;
            }
            let Body::StreamSymbol(s) = enc.body(0, esi, bytes) else {
                unreachable!()
            };
            let step = rx.push(1, origin, &s).unwrap();
            if let Some(w) = step.write {
                file.write_all_at(&s.symbol[..w.len], w.offset).unwrap();
            }
            if let Some(Job::Decode(job)) = step.job {
                return (job, file, data[..l.block_data_len(0) as usize].to_vec());
            }
        }
        panic!("no decode job");
    }

    /// A decoded block waiting for the worker counts in the worker's queue
    /// (the receive loop's backpressure); the worker gives the charge back
    /// when it takes the block (without that, every file through loss would
    /// stall on backpressure: tests/files_*).
    #[test]
    fn a_decoded_block_waiting_for_the_worker_is_charged_to_its_queue() {
        let (job, file, block) = lossy_block();
        let (work_tx, work_rx) = mpsc::channel();
        let (reply_tx, _replies) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let decoders = Decoders::start(&work_tx, &reply_tx, &queued).unwrap();
        decoders.submit(job, Arc::new(file));
        // The worker is busy: the decoded block waits in its queue.
        let Ok(Work::Decoded { data, .. }) = work_rx.recv_timeout(Duration::from_secs(10)) else {
            panic!("no decoded block");
        };
        assert_eq!(&data[..block.len()], &block[..], "decoded");
        assert_eq!(
            queued.load(Ordering::Relaxed),
            data.len() + WRITE_OVERHEAD,
            "charged while it waits"
        );
    }
}
