//! Batched I/O: many datagrams per syscall, because the kernel's
//! per-datagram path, not the cipher, is what limits a UDP sender.
//!
//! Sending, [`Sender::send_segments`]: a run of equal-size datagrams laid
//! end to end in one buffer. On Linux that is UDP GSO, one `sendmsg` with a
//! `UDP_SEGMENT` control message: the kernel cuts the buffer into
//! datagrams, and on loopback hands a GRO receiver the run whole. If the
//! kernel or the device refuses GSO, the sender falls back for good to one
//! `sendto` per datagram, as it does off Linux. [`Sender::send_batch`]
//! takes datagrams of any sizes, one `sendto` each.
//!
//! Receiving, [`BatchReceiver`]: with UDP GRO (Linux 5.0 and later), one
//! `recvmsg` returns a run of up to 64 same-size datagrams and the size to
//! cut it at; without it, one `recvmmsg` fills up to [`RECV_BATCH`] buffers.
//! Either way the caller walks the datagrams in place, in arrival order.
//!
//! All of it goes through nix's safe wrappers; there is no `unsafe` here.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::{NetError, Receiver, Sender, os_error};

/// The most datagrams one `recvmmsg` reads when the kernel has no GRO.
pub const RECV_BATCH: usize = 32;

/// The most segments one GSO send carries: `UDP_MAX_SEGMENTS` in
/// `include/linux/udp.h` (newer kernels allow 128; 64 works on all).
const GSO_MAX_SEGMENTS: usize = 64;

/// Without GSO, the most datagrams one call takes (a `sendto` each).
const SEND_BATCH: usize = 64;

/// A GRO buffer holds a whole coalesced run: at most 64 KiB of UDP payload.
const GRO_BUF: usize = 1 << 16;

/// The largest UDP payload one GSO send may carry in total.
fn max_gso_payload(ipv6: bool) -> usize {
    if ipv6 { 65_527 } else { 65_507 }
}

/// Whether this socket accepts `UDP_SEGMENT` (Linux 4.18 and later).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn probe_gso(sock: &socket2::Socket) -> bool {
    nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::UdpGsoSegment).is_ok()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn probe_gso(_sock: &socket2::Socket) -> bool {
    false
}

impl Sender {
    /// Whether sends still use UDP GSO (false once the kernel refused it).
    pub fn gso(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// The most datagrams of `segment` bytes that one syscall carries now.
    pub fn max_batch(&self, segment: usize) -> usize {
        if self.gso() {
            (max_gso_payload(self.group.is_ipv6()) / segment.max(1)).clamp(1, GSO_MAX_SEGMENTS)
        } else {
            SEND_BATCH
        }
    }

    /// Sends `datagrams` cut into datagrams of `segment` bytes each (the
    /// last may be shorter), in order, in as few syscalls as the kernel
    /// allows; returns how many datagrams were sent.
    ///
    /// An error before anything was sent is returned; after that, the count
    /// so far (resend the rest, and a lasting error shows itself then).
    pub fn send_segments(&self, datagrams: &[u8], segment: usize) -> Result<usize, NetError> {
        if segment == 0 {
            return Err(NetError::new(
                super::NetErrorKind::InvalidArgument,
                "a batch of datagrams needs a segment size above 0",
            ));
        }
        let mut sent = 0;
        let mut rest = datagrams;
        while !rest.is_empty() {
            let take = rest
                .len()
                .min(self.max_batch(segment).saturating_mul(segment));
            let (chunk, tail) = rest.split_at(take);
            let result = if chunk.len() <= segment {
                self.send(chunk).map(|()| 1)
            } else if self.gso() {
                self.send_gso(chunk, segment)
            } else {
                self.send_each(chunk.chunks(segment))
            };
            match result {
                Ok(n) => {
                    sent += n;
                    if n < chunk.len().div_ceil(segment) {
                        return Ok(sent);
                    }
                }
                Err(e) if sent == 0 => return Err(e),
                Err(_) => return Ok(sent),
            }
            rest = tail;
        }
        Ok(sent)
    }

    /// Sends several datagrams, of any sizes, in order; returns how many
    /// were sent. One `sendto` each: for a run of equal sizes,
    /// [`Self::send_segments`] is the fast way.
    pub fn send_batch(&self, datagrams: &[&[u8]]) -> Result<usize, NetError> {
        let mut sent = 0;
        for chunk in datagrams.chunks(SEND_BATCH) {
            match self.send_each(chunk.iter().copied()) {
                Ok(n) => {
                    sent += n;
                    if n < chunk.len() {
                        return Ok(sent);
                    }
                }
                Err(e) if sent == 0 => return Err(e),
                Err(_) => return Ok(sent),
            }
        }
        Ok(sent)
    }

    fn send_error(&self, err: std::io::Error) -> NetError {
        os_error(
            format!("sending to {}", self.group),
            err,
            &self.group,
            self.interface.as_ref(),
        )
    }

    /// One GSO send of `chunk`; on a refusal that means "no GSO here",
    /// turns GSO off and sends the chunk the other way.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn send_gso(&self, chunk: &[u8], segment: usize) -> Result<usize, NetError> {
        use nix::errno::Errno;
        use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
        use std::os::fd::AsRawFd;

        let count = chunk.len().div_ceil(segment);
        let Ok(size) = u16::try_from(segment) else {
            return self.send_each(chunk.chunks(segment));
        };
        // The socket is connected to the group: no address per call.
        match sendmsg::<SockaddrStorage>(
            self.sock.as_raw_fd(),
            &[IoSlice::new(chunk)],
            &[ControlMessage::UdpGsoSegments(&size)],
            MsgFlags::empty(),
            None,
        ) {
            Ok(_) => Ok(count),
            // A relay that was away (unicast senders only): as in `send`.
            Err(Errno::ECONNREFUSED) => Ok(count),
            // A segment larger than the path MTU (a narrow link, or one
            // learned from ICMP, even a forged one): this chunk datagram
            // by datagram, which the kernel may fragment; GSO stays for the
            // next, as the path MTU may grow back.
            Err(Errno::EMSGSIZE | Errno::EINVAL) => self.send_each(chunk.chunks(segment)),
            // EIO: the device cannot checksum for us; ENOPROTOOPT,
            // EOPNOTSUPP: no GSO here. Stop asking and send datagram by
            // datagram (a real error shows itself there).
            Err(Errno::EIO | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP) => {
                self.gso.store(false, Ordering::Relaxed);
                self.send_each(chunk.chunks(segment))
            }
            Err(e) => Err(self.send_error(e.into())),
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn send_gso(&self, chunk: &[u8], segment: usize) -> Result<usize, NetError> {
        self.send_each(chunk.chunks(segment))
    }

    /// Up to [`SEND_BATCH`] datagrams, one `sendto` each; returns how many
    /// the kernel took.
    ///
    /// Not `sendmmsg`: nix 0.32 reads the uninitialized address slots of
    /// its headers when counting what was sent, and every kernel with
    /// `sendmmsg` but without GSO (3.0 to 4.17) is long out of support.
    fn send_each<'a>(&self, datagrams: impl Iterator<Item = &'a [u8]>) -> Result<usize, NetError> {
        let mut sent = 0;
        for d in datagrams.take(SEND_BATCH) {
            match self.send(d) {
                Ok(()) => sent += 1,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }
}

/// One buffer's worth of received datagrams: where they start in the
/// receiver's memory, how many bytes, the size each is cut at, the sender.
#[derive(Debug, Clone, Copy)]
struct Filled {
    len: usize,
    stride: usize,
    from: SocketAddr,
}

impl Filled {
    /// How many datagrams: an empty buffer is one zero-length datagram.
    fn count(&self) -> usize {
        self.len.div_ceil(self.stride.max(1)).max(1)
    }
}

/// Stands in for a sender address the kernel did not report.
const UNKNOWN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// The datagrams of one [`BatchReceiver::recv`], from
/// [`BatchReceiver::datagrams`].
#[derive(Debug)]
pub struct Datagrams<'a> {
    slots: std::iter::Zip<std::slice::ChunksMut<'a, u8>, std::slice::Iter<'a, Filled>>,
    rest: &'a mut [u8],
    stride: usize,
    from: SocketAddr,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = (&'a mut [u8], SocketAddr);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if !self.rest.is_empty() {
                let cut = self.stride.min(self.rest.len());
                let (datagram, rest) = std::mem::take(&mut self.rest).split_at_mut(cut);
                self.rest = rest;
                return Some((datagram, self.from));
            }
            let (slot, filled) = self.slots.next()?;
            let data = slot.get_mut(..filled.len).unwrap_or_default();
            if data.is_empty() {
                return Some((data, filled.from));
            }
            self.rest = data;
            self.stride = filled.stride.max(1);
            self.from = filled.from;
        }
    }
}

/// A [`Receiver`] that reads many datagrams per syscall into buffers it
/// owns, and hands them out in place.
///
/// ```no_run
/// use mcsec::net::{Group, Options, Receiver};
///
/// let group: Group = "239.255.0.1:5000".parse()?;
/// let mut opts = Options::default();
/// opts.interface = Some("127.0.0.1".parse()?);
/// let mut rx = Receiver::open(group, &opts)?.batched(1473);
/// loop {
///     rx.recv()?;
///     for (datagram, from) in rx.datagrams() {
///         println!("{} bytes from {from}", datagram.len());
///     }
/// }
/// # Ok::<(), mcsec::net::NetError>(())
/// ```
#[derive(Debug)]
pub struct BatchReceiver {
    inner: Receiver,
    gro: bool,
    slot: usize,
    buf: Vec<u8>,
    filled: Vec<Filled>,
    /// Set once [`BatchReceiver::datagrams`] has handed out this batch:
    /// opened in place, it must not be handed out again.
    handed_out: bool,
    /// The kernel's count of datagrams it dropped on this socket, as the
    /// last datagram read reported it (SO_RXQ_OVFL).
    kernel_drops: u64,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    cmsg: Vec<u8>,
}

impl Receiver {
    /// Turns this receiver into one that reads in batches, for datagrams of
    /// up to `max_datagram` bytes (longer ones arrive cut to one byte more,
    /// so they still show up as oversize).
    ///
    /// On Linux it turns UDP GRO on where the kernel has it; the socket
    /// then delivers coalesced runs that only a batch receiver can cut
    /// apart, which is why this consumes the [`Receiver`].
    pub fn batched(self, max_datagram: usize) -> BatchReceiver {
        self.batched_with(max_datagram, true)
    }

    fn batched_with(self, max_datagram: usize, try_gro: bool) -> BatchReceiver {
        let gro = try_gro && enable_gro(&self);
        enable_rxq_ovfl(&self);
        let slot = if gro {
            GRO_BUF
        } else {
            max_datagram.saturating_add(1)
        };
        let slots = if gro { 1 } else { RECV_BATCH };
        BatchReceiver {
            inner: self,
            gro,
            slot,
            buf: vec![0; slot * slots],
            filled: Vec::with_capacity(slots),
            handed_out: false,
            kernel_drops: 0,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            // Room for the UDP_GRO and SO_RXQ_OVFL messages only: a socket
            // option that adds control messages (PKTINFO, timestamps) needs
            // more here, or the kernel cuts them and a run reads as one
            // datagram.
            cmsg: nix::cmsg_space!(libc::c_int, u32),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn enable_gro(receiver: &Receiver) -> bool {
    use nix::sys::socket::{setsockopt, sockopt::UdpGroSegment};
    setsockopt(&receiver.sock, UdpGroSegment, &true).is_ok()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn enable_gro(_receiver: &Receiver) -> bool {
    false
}

/// Asks the kernel to report, with each datagram, how many it dropped on
/// this socket so far (a full receive buffer). Best effort: without it,
/// [`BatchReceiver::kernel_drops`] stays 0.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn enable_rxq_ovfl(receiver: &Receiver) -> bool {
    use nix::sys::socket::{setsockopt, sockopt::RxqOvfl};
    setsockopt(&receiver.sock, RxqOvfl, &1).is_ok()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn enable_rxq_ovfl(_receiver: &Receiver) -> bool {
    false
}

/// Timeouts and signals end a wait with nothing; anything else is an error.
fn quiet(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

impl BatchReceiver {
    /// The receiver underneath: its group, receive buffer and timeout.
    pub fn receiver(&self) -> &Receiver {
        &self.inner
    }

    /// Whether the kernel coalesces datagrams for this socket (UDP GRO).
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// Datagrams the kernel dropped on this socket since it was opened,
    /// because its receive buffer was full (Linux: SO_RXQ_OVFL: each
    /// datagram carries the count as of its own arrival, so drops show
    /// once a datagram that came after them is read; 0 elsewhere). Raise `Options::rcvbuf` (and net.core.rmem_max) if it
    /// grows.
    pub fn kernel_drops(&self) -> u64 {
        self.kernel_drops
    }

    fn note_drops(&mut self, drops: u32) {
        // The kernel's counter is a u32 that wraps; keep the newest.
        self.kernel_drops = u64::from(drops);
    }

    /// Waits (up to the receiver's timeout) for datagrams and reads what
    /// has arrived; returns how many datagrams [`Self::datagrams`] now
    /// yields, 0 if the timeout passed or a signal interrupted the wait.
    pub fn recv(&mut self) -> Result<usize, NetError> {
        self.filled.clear();
        self.handed_out = false;
        let result = if self.gro {
            self.recv_gro()
        } else {
            self.recv_many()
        };
        match result {
            Ok(()) => Ok(self.filled.iter().map(Filled::count).sum()),
            Err(e) if quiet(&e) => Ok(0),
            Err(e) => Err(os_error(
                format!("receiving on {}", self.inner.group),
                e,
                &self.inner.group,
                None,
            )),
        }
    }

    /// The datagrams the last [`Self::recv`] read, in arrival order, each
    /// writable in place (to open it) and with its sender's address. A
    /// zero-length datagram comes out as an empty slice. Once per
    /// [`Self::recv`]: a second call yields nothing, since the first may
    /// have changed the datagrams in place.
    pub fn datagrams(&mut self) -> Datagrams<'_> {
        let filled = if self.handed_out {
            &[][..]
        } else {
            &self.filled[..]
        };
        self.handed_out = true;
        Datagrams {
            slots: self.buf.chunks_mut(self.slot).zip(filled.iter()),
            rest: &mut [],
            stride: 1,
            from: UNKNOWN,
        }
    }

    /// One `recvmsg` into the GRO buffer: one datagram, or a run of
    /// same-size datagrams and the size they were cut from.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn recv_gro(&mut self) -> std::io::Result<()> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        let fd = self.inner.sock.as_raw_fd();
        let slot = self.buf.get_mut(..self.slot).unwrap_or_default();
        let mut iov = [IoSliceMut::new(slot)];
        let msg =
            recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut self.cmsg), MsgFlags::empty())?;
        let len = msg.bytes;
        let mut stride = len;
        let mut drops = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::UdpGroSegments(size) => {
                        stride = usize::try_from(size).ok().filter(|&s| s > 0).unwrap_or(len);
                    }
                    ControlMessageOwned::RxqOvfl(n) => drops = Some(n),
                    _ => {}
                }
            }
        }
        let from = msg.address.and_then(|a| to_std(&a)).unwrap_or(UNKNOWN);
        self.filled.push(Filled { len, stride, from });
        if let Some(n) = drops {
            self.note_drops(n);
        }
        Ok(())
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn recv_gro(&mut self) -> std::io::Result<()> {
        self.recv_many()
    }

    /// One `recvmmsg`: up to [`RECV_BATCH`] datagrams, waiting only for the
    /// first.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn recv_many(&mut self) -> std::io::Result<()> {
        use nix::sys::socket::{
            ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg,
        };
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        let fd = self.inner.sock.as_raw_fd();
        // nix's headers hold raw pointers (so a receiver keeping them could
        // not move between threads) and keep the control length the last
        // call left. Made per call, then: this is the path for kernels
        // without GRO (before 5.0), and one allocation reads 32 datagrams.
        let mut headers =
            MultiHeaders::<SockaddrStorage>::preallocate(RECV_BATCH, Some(nix::cmsg_space!(u32)));
        let mut slots = self.buf.chunks_mut(self.slot);
        let mut iovs: [[IoSliceMut<'_>; 1]; RECV_BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let results = recvmmsg(fd, &mut headers, &mut iovs, MsgFlags::MSG_WAITFORONE, None)?;
        let mut drops = None;
        for msg in results {
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::RxqOvfl(n) = c {
                        drops = Some(n);
                    }
                }
            }
            // Every message keeps its place: slot i holds message i.
            self.filled.push(Filled {
                len: msg.bytes,
                stride: msg.bytes,
                from: msg.address.and_then(|a| to_std(&a)).unwrap_or(UNKNOWN),
            });
        }
        if let Some(n) = drops {
            self.note_drops(n);
        }
        Ok(())
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn recv_many(&mut self) -> std::io::Result<()> {
        let slot = self.buf.get_mut(..self.slot).unwrap_or_default();
        let (len, from) = self.inner.sock.recv_from(slot)?;
        self.filled.push(Filled {
            len,
            stride: len,
            from,
        });
        Ok(())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn to_std(addr: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;
    use crate::net::{Group, InterfaceSpec, Options};

    fn loopback() -> Options {
        Options {
            interface: Some(InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST))),
            rcvbuf: Some(1 << 20),
            ..Options::default()
        }
    }

    fn pair(port: u16, max: usize, gro: bool) -> (Sender, BatchReceiver) {
        let group: Group = format!("239.255.77.2:{port}").parse().unwrap();
        let rx = Receiver::open(group, &loopback()).unwrap();
        rx.set_timeout(Some(Duration::from_secs(2))).unwrap();
        (
            Sender::open(group, &loopback()).unwrap(),
            rx.batched_with(max, gro),
        )
    }

    /// Everything that arrives until `want` datagrams are in, with how many
    /// `recv` calls it took.
    fn collect(rx: &mut BatchReceiver, want: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut calls) = (Vec::new(), 0);
        while got.len() < want {
            let n = rx.recv().unwrap();
            assert!(n > 0, "timed out after {} of {want}", got.len());
            calls += 1;
            let before = got.len();
            got.extend(rx.datagrams().map(|(d, from)| {
                assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
                d.to_vec()
            }));
            assert_eq!(got.len() - before, n, "recv's count matches what it yields");
        }
        (got, calls)
    }

    /// 100 datagrams of 300 bytes and a 37-byte tail, each with its index.
    fn run_of(count: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut each: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8; 300]).collect();
        each.push(vec![0xee; 37]);
        (each.concat(), each)
    }

    #[test]
    fn a_segmented_run_arrives_whole_and_in_order() {
        let (tx, mut rx) = pair(47321, 1000, true);
        let (buf, each) = run_of(100);
        assert_eq!(tx.send_segments(&buf, 300).unwrap(), 101);
        let (got, calls) = collect(&mut rx, 101);
        assert_eq!(got, each);
        if cfg!(target_os = "linux") {
            // Loopback takes GSO, and a GRO socket gets runs of up to 64
            // datagrams per call instead of one.
            assert!(tx.gso(), "the kernel refused GSO on loopback");
            assert!(rx.gro());
            assert!(calls <= 4, "{calls} recv calls for 101 datagrams");
        }
    }

    #[test]
    fn without_gso_or_gro_the_same_run_arrives_the_same() {
        let (tx, mut rx) = pair(47322, 1000, false);
        tx.gso.store(false, Ordering::Relaxed);
        assert_eq!(tx.max_batch(300), SEND_BATCH);
        let (buf, each) = run_of(100);
        assert_eq!(tx.send_segments(&buf, 300).unwrap(), 101);
        let (got, calls) = collect(&mut rx, 101);
        assert_eq!(got, each);
        assert!(!rx.gro());
        if cfg!(target_os = "linux") {
            assert!(calls < 101, "recvmmsg read one datagram per call");
        }
    }

    #[test]
    fn mixed_sizes_empty_and_oversize_datagrams_keep_their_places() {
        for gro in [true, false] {
            let port = if gro { 47323 } else { 47324 };
            let (tx, mut rx) = pair(port, 100, gro);
            let big = vec![7u8; 500];
            let sent: [&[u8]; 5] = [b"one", b"", &big, b"four", b"five!"];
            assert_eq!(tx.send_batch(&sent).unwrap(), 5);
            let (got, _) = collect(&mut rx, 5);
            // With GRO the buffer holds any datagram whole; without, an
            // oversize one is cut one byte past the limit, so it still
            // shows up as oversize.
            let cut = if rx.gro() { 500 } else { 101 };
            let want: Vec<Vec<u8>> = vec![
                b"one".to_vec(),
                Vec::new(),
                vec![7u8; cut],
                b"four".to_vec(),
                b"five!".to_vec(),
            ];
            assert_eq!(got, want, "gro {gro}");
        }
    }

    #[test]
    fn a_batch_is_handed_out_once() {
        let (tx, mut rx) = pair(47327, 100, true);
        tx.send(b"once").unwrap();
        assert_eq!(rx.recv().unwrap(), 1);
        assert_eq!(rx.datagrams().count(), 1);
        assert_eq!(rx.datagrams().count(), 0, "opened in place already");
    }

    #[test]
    fn a_quiet_group_times_out_with_nothing() {
        let (_tx, mut rx) = pair(47325, 100, true);
        rx.receiver()
            .set_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        assert_eq!(rx.recv().unwrap(), 0);
        assert_eq!(rx.datagrams().count(), 0);
    }

    #[test]
    fn a_full_receive_buffer_shows_as_kernel_drops() {
        for gro in [true, false] {
            let port = if gro { 47328 } else { 47329 };
            let group: Group = format!("239.255.77.2:{port}").parse().unwrap();
            // The smallest buffer the kernel grants: a few datagrams.
            let opts = Options {
                rcvbuf: Some(1),
                ..loopback()
            };
            let rx = Receiver::open(group, &opts).unwrap();
            rx.set_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut rx = rx.batched_with(1000, gro);
            let tx = Sender::open(group, &loopback()).unwrap();
            assert_eq!(rx.kernel_drops(), 0);
            // One at a time, unread: most cannot fit.
            for _ in 0..200 {
                tx.send(&[1u8; 900]).unwrap();
            }
            // Each datagram carries the count as of its arrival: read
            // what fit, then one sent after the drops.
            rx.receiver()
                .set_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            while rx.recv().unwrap() > 0 {
                rx.datagrams().count();
            }
            tx.send(&[2u8; 900]).unwrap();
            rx.receiver()
                .set_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            assert_eq!(rx.recv().unwrap(), 1);
            rx.datagrams().count();
            if cfg!(target_os = "linux") {
                let drops = rx.kernel_drops();
                assert!(
                    (100..200).contains(&drops),
                    "gro {gro}: {drops} kernel drops"
                );
            }
        }
    }

    #[test]
    fn a_zero_segment_size_is_an_error() {
        let (tx, _rx) = pair(47326, 100, true);
        assert!(tx.send_segments(b"abc", 0).is_err());
        assert_eq!(tx.send_segments(b"", 10).unwrap(), 0);
    }
}
