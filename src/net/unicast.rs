//! Unicast for the relay and its clients: sockets that carry sealed frames
//! as the multicast ones do, and [`Fanout`], one datagram run to many
//! subscribers in as few syscalls as the kernel allows.
//!
//! Fan-out is the relay's whole job. Per batch it makes one `sendmmsg` whose
//! messages are, with UDP GSO, one per subscriber (the run of datagrams laid
//! end to end and a `UDP_SEGMENT` control message: the kernel cuts it), and
//! without GSO one per datagram and subscriber. [`FanoutMode::Sendto`] is
//! the baseline benches/fanout.rs measures against: one `sendto` a copy.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::AtomicBool;

use super::{Group, Receiver, Sender, batch};

/// The most segments one GSO message carries (`UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;
/// The most UDP payload one GSO message carries (IPv4; IPv6 allows 20 more).
const GSO_MAX_BYTES: usize = 65_507;
/// The most messages one `sendmmsg` takes (`UIO_MAXIOV`).
const MMSG_MAX: usize = 1024;

impl Receiver {
    /// A receiver over a unicast socket (a relay's subscriber): it carries
    /// the frames of `group`, the channel they are sealed for, though they
    /// arrive from the relay. Batch it as a multicast one.
    pub fn from_unicast(sock: UdpSocket, group: Group) -> Self {
        Self {
            sock,
            group,
            rcvbuf: None,
            iface: None,
            source: None,
        }
    }
}

impl Receiver {
    /// Reads return at once, with nothing if nothing waits (a loop that
    /// polls several sockets, such as a relay's).
    pub fn set_nonblocking(&self) -> Result<(), super::NetError> {
        self.sock.set_nonblocking(true).map_err(|e| {
            super::os_error(
                "making the socket non-blocking".to_owned(),
                e,
                &self.group,
                None,
            )
        })
    }
}

impl AsFd for Receiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Sender {
    /// A sender over a unicast socket already connected to a relay: frames
    /// of `group` go there (GSO runs included) instead of to the group.
    pub fn from_unicast(sock: UdpSocket, group: Group) -> Self {
        let gso = {
            let sock2 = socket2::SockRef::from(&sock);
            batch::probe_gso(&sock2)
        };
        Self {
            sock,
            group,
            interface: None,
            gso: AtomicBool::new(gso),
        }
    }
}

/// How [`Fanout`] hands copies to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FanoutMode {
    /// One `sendmmsg` a batch, one message a subscriber, cut by UDP GSO.
    Gso,
    /// One `sendmmsg` a batch, one message a datagram and subscriber.
    Mmsg,
    /// One `sendto` a copy: the baseline.
    Sendto,
}

/// One message of a fan-out: which destination, which bytes, cut how.
#[derive(Debug, Clone, Copy)]
struct Piece {
    dest: usize,
    start: usize,
    len: usize,
    segments: usize,
}

/// Sends runs of datagrams to many addresses from one unicast socket (the
/// relay's listening one, so NATs on the way see the address they mapped).
#[derive(Debug)]
pub struct Fanout {
    sock: UdpSocket,
    mode: FanoutMode,
    pieces: Vec<Piece>,
}

impl Fanout {
    /// Fans out from `sock`, with GSO where the kernel has it.
    pub fn new(sock: UdpSocket) -> Self {
        let gso = batch::probe_gso(&socket2::SockRef::from(&sock));
        let mode = if !gso {
            FanoutMode::Mmsg
        } else {
            FanoutMode::Gso
        };
        Self {
            sock,
            mode: if cfg!(target_os = "linux") {
                mode
            } else {
                FanoutMode::Sendto
            },
            pieces: Vec::new(),
        }
    }

    /// The socket (to receive on, and for control replies).
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// How copies go now.
    pub fn mode(&self) -> FanoutMode {
        self.mode
    }

    /// Chooses how copies go (benchmarks compare them). GSO is only taken
    /// where the kernel has it.
    pub fn set_mode(&mut self, mode: FanoutMode) {
        let gso = batch::probe_gso(&socket2::SockRef::from(&self.sock));
        self.mode = match mode {
            FanoutMode::Gso if !gso => FanoutMode::Mmsg,
            m if !cfg!(target_os = "linux") && m != FanoutMode::Sendto => FanoutMode::Sendto,
            m => m,
        };
    }

    /// Sends the first `count` datagrams of `run` (datagrams of `stride`
    /// bytes end to end, the last maybe shorter) to each `(address, count)`
    /// of `dests`; `sent[i]` becomes how many the kernel took for
    /// `dests[i]`. A copy the kernel refuses (a full buffer, an unreachable
    /// address) is skipped, not retried; the last such error is returned
    /// beside the counts, for the log.
    pub fn send(
        &mut self,
        run: &[u8],
        stride: usize,
        dests: &[(SocketAddr, usize)],
        sent: &mut Vec<usize>,
    ) -> Option<io::Error> {
        sent.clear();
        sent.resize(dests.len(), 0);
        let stride = stride.max(1);
        let split = self.mode != FanoutMode::Gso;
        self.pieces.clear();
        for (dest, (_, count)) in dests.iter().enumerate() {
            let bytes = count.saturating_mul(stride).min(run.len());
            let per = if split {
                1
            } else {
                (GSO_MAX_BYTES / stride).clamp(1, GSO_MAX_SEGMENTS)
            };
            let mut start = 0;
            while start < bytes {
                let len = per.saturating_mul(stride).min(bytes - start);
                self.pieces.push(Piece {
                    dest,
                    start,
                    len,
                    segments: len.div_ceil(stride),
                });
                start += len;
            }
        }
        let pieces = std::mem::take(&mut self.pieces);
        let error = match self.mode {
            FanoutMode::Sendto => self.send_each(run, dests, &pieces, sent),
            #[cfg(target_os = "linux")]
            FanoutMode::Gso | FanoutMode::Mmsg => {
                sys::send_mmsg(&self.sock, run, stride, dests, &pieces, sent)
            }
            #[cfg(not(target_os = "linux"))]
            _ => self.send_each(run, dests, &pieces, sent),
        };
        self.pieces = pieces;
        match error {
            Some(e) if self.mode == FanoutMode::Gso && gso_refused(&e) => {
                // The device or kernel will not cut runs: send what the
                // refusal left unsent one datagram a message, from now on.
                self.mode = FanoutMode::Mmsg;
                let rest: Vec<(SocketAddr, usize)> = dests
                    .iter()
                    .zip(sent.iter())
                    .map(|((addr, count), done)| (*addr, count.saturating_sub(*done)))
                    .collect();
                let done = sent.clone();
                let skip: Vec<usize> = done.iter().map(|d| d.saturating_mul(stride)).collect();
                let mut again = Vec::new();
                let mut last = None;
                // Each destination's remainder starts after what it got.
                for (i, (addr, count)) in rest.iter().enumerate() {
                    if *count == 0 {
                        continue;
                    }
                    let tail = run.get(skip[i]..).unwrap_or_default();
                    if let Some(e) = self.send(tail, stride, &[(*addr, *count)], &mut again) {
                        last = Some(e);
                    }
                    sent[i] = done[i] + again.first().copied().unwrap_or(0);
                }
                last
            }
            e => e,
        }
    }

    fn send_each(
        &self,
        run: &[u8],
        dests: &[(SocketAddr, usize)],
        pieces: &[Piece],
        sent: &mut [usize],
    ) -> Option<io::Error> {
        let mut last = None;
        for piece in pieces {
            let Some((addr, _)) = dests.get(piece.dest) else {
                continue;
            };
            let bytes = &run[piece.start..piece.start + piece.len];
            let stride = piece.len.div_ceil(piece.segments.max(1)).max(1);
            for datagram in bytes.chunks(stride) {
                match self.sock.send_to(datagram, addr) {
                    Ok(_) => sent[piece.dest] += 1,
                    Err(e) => last = Some(e),
                }
            }
        }
        last
    }
}

/// EIO: the device cannot checksum; ENOPROTOOPT, EOPNOTSUPP: no GSO here.
/// (EMSGSIZE and EINVAL for one destination mean its path is narrower than
/// a segment: that destination's copies go one by one, and GSO stays.)
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sys {
    //! `sendmmsg(2)` with a `UDP_SEGMENT` control message per message: nix
    //! 0.32's wrapper reads uninitialized address slots when counting what
    //! was sent, so this calls libc.

    use std::io;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use super::{MMSG_MAX, Piece};

    /// A control buffer for one `UDP_SEGMENT` message: `CMSG_SPACE(2)` is
    /// 24 bytes on 64-bit Linux and 16 on 32-bit; u64s keep it aligned.
    type Cmsg = [u64; 3];

    /// Sends `pieces` in `sendmmsg` calls of at most [`MMSG_MAX`] messages;
    /// adds what the kernel took to `sent` per destination. A message the
    /// kernel refuses is skipped and its error kept; GSO refusals stop the
    /// call (the caller switches mode and resends the rest).
    pub(super) fn send_mmsg(
        sock: &UdpSocket,
        run: &[u8],
        stride: usize,
        dests: &[(SocketAddr, usize)],
        pieces: &[Piece],
        sent: &mut [usize],
    ) -> Option<io::Error> {
        let addrs: Vec<socket2::SockAddr> = dests
            .iter()
            .map(|(a, _)| socket2::SockAddr::from(*a))
            .collect();
        let Ok(segment) = u16::try_from(stride) else {
            return Some(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let mut iovs: Vec<libc::iovec> = Vec::with_capacity(pieces.len());
        let mut cmsgs: Vec<Cmsg> = vec![[0; 3]; pieces.len()];
        for piece in pieces {
            let bytes = &run[piece.start..piece.start + piece.len];
            iovs.push(libc::iovec {
                iov_base: bytes.as_ptr().cast_mut().cast(),
                iov_len: bytes.len(),
            });
        }
        // SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic on their argument.
        let (space, cmsg_len) = unsafe { (libc::CMSG_SPACE(2), libc::CMSG_LEN(2)) };
        debug_assert!(space as usize <= std::mem::size_of::<Cmsg>());
        let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(pieces.len());
        for ((piece, iov), cmsg) in pieces.iter().zip(iovs.iter_mut()).zip(cmsgs.iter_mut()) {
            let addr = &addrs[piece.dest];
            // SAFETY: an all-zero msghdr is a valid empty one (POSIX
            // leaves no field with a niche).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = addr.as_ptr().cast_mut().cast();
            msg.msg_namelen = addr.len();
            msg.msg_iov = iov;
            msg.msg_iovlen = 1;
            if piece.segments > 1 {
                msg.msg_control = cmsg.as_mut_ptr().cast();
                msg.msg_controllen = space as _;
                // SAFETY: msg_control points at `cmsg`, CMSG_SPACE(2)
                // bytes, 8-aligned, zeroed and alive until the call
                // returns; CMSG_FIRSTHDR is therefore non-null and its data
                // has room for the u16 written (unaligned-safe).
                unsafe {
                    let hdr = libc::CMSG_FIRSTHDR(&msg);
                    (*hdr).cmsg_level = libc::SOL_UDP;
                    (*hdr).cmsg_type = libc::UDP_SEGMENT;
                    (*hdr).cmsg_len = cmsg_len as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast::<u16>(), segment);
                }
            }
            hdrs.push(libc::mmsghdr {
                msg_hdr: msg,
                msg_len: 0,
            });
        }
        let mut last = None;
        let mut at = 0;
        let total = hdrs.len();
        while at < total {
            let chunk = &mut hdrs[at..(at + MMSG_MAX).min(total)];
            // SAFETY: every header points into `addrs`, `iovs`, `cmsgs` and
            // `run`, all alive and unmoved until after the call; the count
            // is the chunk's length (at most UIO_MAXIOV); the fd is our
            // open socket.
            let n = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    chunk.as_mut_ptr(),
                    chunk.len() as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                let piece = &pieces[at];
                if piece.segments > 1
                    && matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::EINVAL))
                {
                    // This destination's path is narrower than a segment (a
                    // VPN, PPPoE, or a learned path MTU): its copies go one
                    // datagram a message, which the kernel may fragment;
                    // the others keep GSO.
                    let bytes = &run[piece.start..piece.start + piece.len];
                    for datagram in bytes.chunks(stride) {
                        match sock.send_to(datagram, dests[piece.dest].0) {
                            Ok(_) => sent[piece.dest] += 1,
                            Err(e) => last = Some(e),
                        }
                    }
                    at += 1;
                    continue;
                }
                if piece.segments > 1 && super::gso_refused(&e) {
                    return Some(e);
                }
                // The first message of the chunk failed: skip it.
                last = Some(e);
                at += 1;
                continue;
            }
            let n = usize::try_from(n).unwrap_or(0).min(chunk.len());
            for piece in &pieces[at..at + n] {
                sent[piece.dest] += piece.segments;
            }
            // A count of 0 without an error: skip the message, never spin.
            at += n.max(1);
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receivers(n: usize) -> Vec<UdpSocket> {
        (0..n)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
                s.set_read_timeout(Some(std::time::Duration::from_millis(500)))
                    .expect("timeout");
                s
            })
            .collect()
    }

    fn run_of(count: usize, size: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|i| std::iter::repeat_n(i as u8, size))
            .collect()
    }

    #[test]
    fn every_mode_delivers_each_subscriber_its_prefix_in_order() {
        for mode in [FanoutMode::Gso, FanoutMode::Mmsg, FanoutMode::Sendto] {
            let rx = receivers(3);
            let mut fan = Fanout::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
            fan.set_mode(mode);
            // 5 datagrams of 300 bytes, the last 100.
            let mut run = run_of(5, 300);
            run.truncate(4 * 300 + 100);
            let dests: Vec<(SocketAddr, usize)> = rx
                .iter()
                .zip([5, 2, 0])
                .map(|(s, n)| (s.local_addr().expect("addr"), n))
                .collect();
            let mut sent = Vec::new();
            assert!(fan.send(&run, 300, &dests, &mut sent).is_none(), "{mode:?}");
            assert_eq!(sent, [5, 2, 0], "{mode:?}");
            let mut buf = [0u8; 2000];
            for (s, (_, n)) in rx.iter().zip(&dests) {
                for i in 0..*n {
                    let len = s.recv(&mut buf).expect("datagram");
                    let want = if i == 4 { 100 } else { 300 };
                    assert_eq!(len, want, "{mode:?}");
                    assert!(buf[..len].iter().all(|b| *b == i as u8), "{mode:?}");
                }
                s.set_nonblocking(true).expect("nonblocking");
                assert!(s.recv(&mut buf).is_err(), "{mode:?}: more than planned");
            }
        }
    }
}
