//! The sending side: plain or sealed, one datagram per syscall or batched, paced.

use super::*;

/// The sending side: one buffer of up to a batch of datagrams laid end to
/// end, reused for every batch.
pub(super) struct Tx {
    pub(super) sender: net::Sender,
    pub(super) sealer: Option<Sealer>,
    /// mcsec-signed: the signing session (instead of `sealer`), the Data
    /// payload it seals, and a closed batch's datagrams.
    signed: Option<SignedSealer>,
    payload: Vec<u8>,
    emitted: Vec<u8>,
    emitted_ends: Vec<usize>,
    batched: bool,
    buf: Vec<u8>,
    size: usize,
    /// Bytes per datagram on the wire.
    stride: usize,
    /// Datagrams per syscall.
    pub(super) cap: usize,
    /// Latency runs: each stamp carries the nanoseconds since this instant.
    pub(super) clock: Option<Instant>,
    pub(super) send_errors: u64,
    sent_any: bool,
    /// The CPU the sending thread runs on, if pinned.
    pub(super) cpu: Option<usize>,
    /// --threads N: batches sealed on worker threads, and those sealed
    /// and not yet sent.
    pub(super) pipe: Option<SealPipe>,
    sealed: Vec<SealJob>,
}

impl Tx {
    pub(super) fn new(
        sender: net::Sender,
        sealer: Option<Sealer>,
        size: usize,
        batched: bool,
    ) -> Self {
        let stride = size + if sealer.is_some() { OVERHEAD } else { 0 };
        let cap = if batched { sender.max_batch(stride) } else { 1 };
        Self {
            sender,
            sealer,
            signed: None,
            payload: Vec::new(),
            emitted: Vec::new(),
            emitted_ends: Vec::new(),
            batched,
            buf: vec![0; stride * cap],
            size,
            stride,
            cap,
            clock: None,
            send_errors: 0,
            sent_any: false,
            cpu: None,
            pipe: None,
            sealed: Vec::new(),
        }
    }

    /// Stamps, seals (unless plain) and sends up to `n` datagrams numbered
    /// from `first.seq`, in one syscall when batched; returns how many it
    /// tried. Those the kernel refused are counted, except on the very
    /// first send, where a refusal is fatal: that is a setup problem, not
    /// load.
    pub(super) fn send(&mut self, first: Stamp, n: u64) -> Result<u64, CliError> {
        if self.signed.is_some() {
            return self.send_signed(first, n);
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX).clamp(1, self.cap);
        let now = mcsec::now_us();
        if self.pipe.is_some() {
            return self.send_threaded(first, n, now);
        }
        for (i, frame) in self.buf.chunks_mut(self.stride).take(n).enumerate() {
            let mut stamp = first;
            stamp.seq = first.seq + i as u64;
            if let Some(origin) = self.clock {
                stamp.extra = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            }
            match &mut self.sealer {
                Some(sealer) => {
                    if let Some(p) = frame.get_mut(HEADER_LEN..) {
                        stamp.write(p);
                    }
                    sealer
                        .seal_in_place(now, frame, self.size)
                        .map_err(|e| CliError::new(format!("sealing: {e}")))?;
                }
                None => stamp.write(frame),
            }
        }
        let datagrams = std::mem::take(&mut self.buf);
        let result = self.transmit(datagrams.get(..n * self.stride).unwrap_or_default(), n);
        self.buf = datagrams;
        result?;
        Ok(n as u64)
    }

    /// Sends `n` datagrams, `self.stride` bytes each, end to end.
    fn transmit(&mut self, datagrams: &[u8], n: usize) -> Result<(), CliError> {
        let result = if self.batched {
            self.sender.send_segments(datagrams, self.stride)
        } else {
            self.sender.send(datagrams).map(|()| 1)
        };
        match result {
            Ok(sent) => {
                self.sent_any = true;
                self.send_errors += (n - sent.min(n)) as u64;
            }
            Err(e) if self.sent_any => {
                tracing::debug!("send failed: {e}");
                self.send_errors += n as u64;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// --threads: stamps `n` datagrams and numbers them here, hands the
    /// batch to a worker, and sends the batches sealed so far, in order.
    fn send_threaded(&mut self, first: Stamp, n: usize, now: u64) -> Result<u64, CliError> {
        let (Some(pipe), Some(sealer)) = (self.pipe.as_mut(), self.sealer.as_mut()) else {
            return Ok(0);
        };
        let mut buf = pipe.buffer();
        buf.resize(n * self.stride, 0);
        for (i, frame) in buf.chunks_mut(self.stride).enumerate() {
            let mut stamp = first;
            stamp.seq = first.seq + i as u64;
            if let Some(p) = frame.get_mut(HEADER_LEN..) {
                stamp.write(p);
            }
            pipe.assign(sealer, now, self.size)
                .map_err(|e| CliError::new(format!("sealing: {e}")))?;
        }
        pipe.submit(sealer.seal_key(), buf, self.stride, n, &mut self.sealed)?;
        pipe.collect(false, &mut self.sealed)?;
        self.send_sealed()?;
        Ok(n as u64)
    }

    /// Sends the sealed batches taken back from the workers.
    fn send_sealed(&mut self) -> Result<(), CliError> {
        let mut sealed = std::mem::take(&mut self.sealed);
        let mut result = Ok(());
        for job in sealed.drain(..) {
            if result.is_ok() {
                result = job
                    .sealed()
                    .and_then(|datagrams| self.transmit(datagrams, job.count));
            }
            if let Some(pipe) = self.pipe.as_mut() {
                pipe.recycle(job);
            }
        }
        self.sealed = sealed;
        result
    }

    /// --threads: waits for every batch with the workers and sends it.
    fn drain(&mut self) -> Result<(), CliError> {
        if let Some(pipe) = self.pipe.as_mut() {
            pipe.collect(true, &mut self.sealed)?;
        }
        self.send_sealed()
    }
}

impl Tx {
    /// A signing sender: Data bodies through `signed`, which sends each
    /// batch when it closes.
    pub(super) fn with_signing(mut self, signed: SignedSealer) -> Self {
        // A Data body the same size as the unsigned mode's raw payload:
        // the variant byte and the length's varint come out of it.
        let len = if self.size >= 3 + 128 {
            self.size - 3
        } else {
            self.size.saturating_sub(2)
        };
        self.payload = vec![0; len.max(STAMP_LEN)];
        self.signed = Some(signed);
        self
    }

    /// mcsec-signed: seals up to `n` Data frames into the signed batch,
    /// sending every batch that closes (manifest, frames, manifest).
    fn send_signed(&mut self, first: Stamp, n: u64) -> Result<u64, CliError> {
        let n = n.clamp(1, self.cap as u64);
        for i in 0..n {
            let mut stamp = first;
            stamp.seq = first.seq + i;
            if let Some(origin) = self.clock {
                stamp.extra = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            }
            stamp.write(&mut self.payload);
            let now = mcsec::now_us();
            let Some(signed) = &mut self.signed else {
                break;
            };
            signed
                .seal_body(now, &mcsec::Body::Data(&self.payload))
                .map_err(|e| CliError::new(format!("sealing: {e}")))?;
            if signed.is_due(now) {
                self.close_signed()?;
            }
        }
        Ok(n)
    }

    /// Sends the open signed batch, if any, if its time is up.
    pub(super) fn poll_signed(&mut self) -> Result<(), CliError> {
        match &self.signed {
            Some(signed) if signed.is_due(mcsec::now_us()) => self.close_signed(),
            _ => Ok(()),
        }
    }

    /// Closes the open signed batch and sends it: runs of equal-sized
    /// datagrams in one syscall each.
    pub(super) fn close_signed(&mut self) -> Result<(), CliError> {
        let Some(signed) = &mut self.signed else {
            return Ok(());
        };
        let (emitted, ends) = (&mut self.emitted, &mut self.emitted_ends);
        emitted.clear();
        ends.clear();
        signed
            .close_batch(mcsec::now_us(), &mut |datagram| {
                emitted.extend_from_slice(datagram);
                ends.push(emitted.len());
                Ok(())
            })
            .map_err(|e| CliError::new(format!("signing: {e}")))?;
        let mut start = 0;
        let mut i = 0;
        while i < self.emitted_ends.len() {
            let len = self.emitted_ends[i] - start;
            // The run of datagrams of this length, at most a batch.
            let mut j = i + 1;
            while j < self.emitted_ends.len()
                && j - i < self.cap
                && self.emitted_ends[j] - self.emitted_ends[j - 1] == len
            {
                j += 1;
            }
            let end = self.emitted_ends[j - 1];
            let run = self.emitted.get(start..end).unwrap_or_default();
            let count = j - i;
            let result = if self.batched {
                self.sender.send_segments(run, len)
            } else {
                self.sender.send(run).map(|()| 1)
            };
            match result {
                Ok(sent) => {
                    self.sent_any = true;
                    self.send_errors += (count - sent.min(count)) as u64;
                }
                Err(e) if self.sent_any => {
                    tracing::debug!("send failed: {e}");
                    self.send_errors += count as u64;
                }
                Err(e) => return Err(e.into()),
            }
            start = end;
            i = j;
        }
        Ok(())
    }
}

/// Sends `run` for `duration` at `pps` (or flat out), paced against a
/// schedule: datagram n is due at start + n / pps. Returns how many were
/// sent and the time it took.
pub(super) fn send_run(
    tx: &mut Tx,
    run: u32,
    pps: Option<f64>,
    duration: Duration,
    stop: &AtomicBool,
) -> Result<(u64, Duration), CliError> {
    let mut origin = Instant::now();
    let start = origin;
    let end = start + duration;
    let mut seq = 0u64;
    // Datagrams owed before `origin` moved (after a forgiven lag).
    let mut base = 0u64;
    loop {
        let now = Instant::now();
        if now >= end || stopped(stop) {
            break;
        }
        let budget = match pps {
            None => BURST.max(tx.cap as u64),
            Some(pps) => {
                let due = base + ((now - origin).as_secs_f64() * pps) as u64 + 1;
                let owed = due.saturating_sub(seq);
                if owed as f64 > (MAX_LAG.as_secs_f64() * pps).max(tx.cap.max(32) as f64) {
                    // Descheduled for a while: do not flood to catch up.
                    origin = now;
                    base = seq;
                    1
                } else if owed == 0 {
                    // Signed: a batch whose time is up goes before the nap.
                    tx.poll_signed()?;
                    let next = origin + Duration::from_secs_f64((seq - base) as f64 / pps);
                    // Sleeping overshoots by the timer slack and costs a
                    // wake-up, so at high rates sleep a whole quantum and
                    // send what is owed back to back: the average holds
                    // without spinning a core or waking per datagram.
                    std::thread::sleep(next.saturating_duration_since(now).max(PACING_QUANTUM));
                    continue;
                } else {
                    owed.min(BURST.max(tx.cap as u64))
                }
            }
        };
        let mut left = budget;
        while left > 0 {
            let stamp = Stamp {
                run,
                seq,
                kind: KIND_DATA,
                extra: 0,
            };
            let n = tx.send(stamp, left)?;
            seq += n;
            left -= n;
        }
    }
    // Signed: the last batch goes with its manifests; threaded, the batches
    // still with the workers.
    tx.close_signed()?;
    tx.drain()?;
    Ok((seq, start.elapsed()))
}
