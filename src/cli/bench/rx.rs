//! The receiving side: one datagram per syscall or batched, opened or not.

use super::*;

/// The receiving side: one datagram per syscall, or batches.
pub(super) struct Rx {
    sock: RxSock,
    pub(super) opener: Option<Opener>,
    /// mcsec-signed: delivers only what the bench's signing key signed.
    pub(super) verifier: Option<Verifier>,
    pub(super) rejected: u64,
    /// The CPU the receiving thread runs on, if pinned.
    pub(super) cpu: Option<usize>,
    /// --threads N: batches checked on worker threads, and those checked
    /// and not yet taken.
    pub(super) pipe: Option<OpenPipe>,
    checked: Vec<OpenJob>,
}

pub(super) enum RxSock {
    Single {
        receiver: net::Receiver,
        buf: Vec<u8>,
    },
    Batch(net::BatchReceiver),
}

impl Rx {
    pub(super) fn set_timeout(&self, timeout: Duration) -> Result<(), CliError> {
        let receiver = match &self.sock {
            RxSock::Single { receiver, .. } => receiver,
            RxSock::Batch(b) => b.receiver(),
        };
        Ok(receiver.set_timeout(Some(timeout))?)
    }

    /// Waits for datagrams (up to the timeout) and calls `each` with the
    /// stamp of every one that opens; returns how many datagrams arrived,
    /// 0 if none did.
    pub(super) fn recv(&mut self, mut each: impl FnMut(Stamp)) -> Result<usize, CliError> {
        if self.pipe.is_some() {
            return self.recv_threaded(each);
        }
        let Self {
            sock,
            opener,
            verifier,
            rejected,
            ..
        } = self;
        let mut take = |datagram: &mut [u8]| {
            if let (Some(verifier), Some(opener)) = (verifier.as_mut(), opener.as_mut()) {
                let result =
                    verifier.receive_with(opener, mcsec::now_us(), datagram, &mut |frame| {
                        if let Ok(mcsec::Body::Data(payload)) = mcsec::Body::decode(frame.plaintext)
                            && let Some(stamp) = Stamp::read(payload)
                        {
                            each(stamp);
                        }
                    });
                // A manifest's second copy is expected, not a rejection.
                if result.is_err_and(|r| r != mcsec::signed::SigReject::Duplicate) {
                    *rejected += 1;
                }
                return;
            }
            let stamp = match opener {
                Some(opener) => match opener.open(mcsec::now_us(), datagram) {
                    Ok(opened) => Stamp::read(opened.plaintext),
                    Err(_) => {
                        *rejected += 1;
                        None
                    }
                },
                None => Stamp::read(datagram),
            };
            if let Some(stamp) = stamp {
                each(stamp);
            }
        };
        match sock {
            RxSock::Single { receiver, buf } => {
                let Some((len, _)) = receiver.recv(buf)? else {
                    return Ok(0);
                };
                take(buf.get_mut(..len).unwrap_or_default());
                Ok(1)
            }
            RxSock::Batch(batch) => {
                let n = batch.recv()?;
                for (datagram, _) in batch.datagrams() {
                    take(datagram);
                }
                Ok(n)
            }
        }
    }
}

impl Rx {
    /// --threads: hands each batch read to a worker, and opens (replay
    /// window, counts) the batches checked so far, in arrival order; all of
    /// them before a read that may block.
    fn recv_threaded(&mut self, mut each: impl FnMut(Stamp)) -> Result<usize, CliError> {
        let Self {
            sock: RxSock::Batch(batch),
            opener: Some(opener),
            pipe: Some(pipe),
            checked,
            rejected,
            ..
        } = self
        else {
            return Err(CliError::new("--threads needs mode mcsec"));
        };
        let n = batch.recv()?;
        pipe.submit(opener.channel_keys(), batch.datagrams(), checked)?;
        let idle = n == 0 || !crate::cli::pipeline::readable(batch.receiver().as_fd());
        pipe.collect(idle, checked)?;
        let now = mcsec::now_us();
        for mut job in checked.drain(..) {
            for (datagram, _, verdict) in job.datagrams() {
                match opener.open_checked(now, datagram, verdict) {
                    Ok(opened) => {
                        if let Some(stamp) = Stamp::read(opened.plaintext) {
                            each(stamp);
                        }
                    }
                    Err(_) => *rejected += 1,
                }
            }
            pipe.recycle(job);
        }
        Ok(n)
    }
}

pub(super) fn open_rx(
    args: &Args,
    group: Group,
    opener: Option<Opener>,
    size: usize,
    batched: bool,
) -> Result<Rx, CliError> {
    let receiver = net::Receiver::open(group, &options(args))?;
    if let Some(rb) = receiver.rcvbuf()
        && rb.granted < rb.requested
    {
        tracing::info!(
            "receive buffer: asked for {} bytes, got {} (raise net.core.rmem_max for more)",
            rb.requested,
            rb.granted
        );
    }
    // One byte more than the largest frame, so nothing is cut silently.
    let max = size + OVERHEAD;
    let sock = if batched {
        let batch = receiver.batched(max);
        tracing::info!("receiving in batches (UDP GRO: {})", batch.gro());
        RxSock::Batch(batch)
    } else {
        RxSock::Single {
            receiver,
            buf: vec![0; max + 1],
        }
    };
    let rx = Rx {
        sock,
        opener,
        verifier: None,
        rejected: 0,
        cpu: None,
        pipe: None,
        checked: Vec::new(),
    };
    rx.set_timeout(DRAIN)?;
    Ok(rx)
}
