//! The socket shell: the only module that touches sockets and syscalls.
//!
//! It parses groups and interfaces, opens a multicast [`Sender`] or
//! [`Receiver`] with the options PROTOCOL.md's users need, and turns every
//! failure into a [`NetError`] with a hint. socket2 and nix stay private:
//! the public types here are std's.
//!
//! Safe defaults: TTL 1 (the datagram never leaves the link), loopback on,
//! `IP_MULTICAST_ALL` off (a socket hears only the groups it joined), and
//! `SO_REUSEADDR` before bind so several receivers on one host all get
//! every datagram. A receiver binds to the group's own address, so the
//! kernel hands it only datagrams sent to that group, even when another
//! program on the host has joined a different group on the same port.
//!
//! ```no_run
//! use mcsec::net::{Group, Options, Receiver, Sender};
//!
//! let group: Group = "239.255.0.1:5000".parse()?;
//! let mut opts = Options::default(); // TTL 1, loop on
//! opts.interface = Some("127.0.0.1".parse()?);
//! let receiver = Receiver::open(group, &opts)?;
//! Sender::open(group, &opts)?.send(b"sealed frame bytes")?;
//! let mut buf = [0u8; 1473];
//! if let Some((len, from)) = receiver.recv(&mut buf)? {
//!     println!("{len} bytes from {from}");
//! }
//! # Ok::<(), mcsec::net::NetError>(())
//! ```

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use nix::errno::Errno;
use nix::net::if_::InterfaceFlags;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};

use crate::frame::{MAX_DATAGRAM_V4, MAX_DATAGRAM_V6};

mod batch;
pub use batch::{BatchReceiver, Datagrams, RECV_BATCH};
mod unicast;
pub use unicast::{Fanout, FanoutMode};

/// Default multicast TTL (IPv4) or hop limit (IPv6): 1, the local link.
pub const DEFAULT_TTL: u32 = 1;

/// A socket failure: its kind, for programs; what happened and, when we
/// can tell, what to do about it, for the person at the terminal. Hints
/// name system tools (`ip`, `ss`, `sysctl`), never a program's own options:
/// a program that has them (mcsec's `-i`) adds them by [`NetError::kind`].
#[derive(Debug)]
pub struct NetError {
    kind: NetErrorKind,
    message: String,
    hint: Option<String>,
    source: Option<io::Error>,
}

/// What kind of failure a [`NetError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetErrorKind {
    /// Not a multicast group address and port (or one with a scope ID).
    InvalidGroup,
    /// An interface named in a way that cannot name one.
    InvalidInterface,
    /// No interface has that name, index or address.
    NoSuchInterface,
    /// The interface exists but cannot carry this: down, no MULTICAST flag,
    /// no address of the group's family, or gone.
    InterfaceUnusable,
    /// No route to the group: no interface was named and the routing table
    /// has none for multicast.
    NoRoute,
    /// A source-specific source of the other family than the group's.
    SourceFamily,
    /// An argument out of range (such as a segment size of 0).
    InvalidArgument,
    /// Any other refusal by the operating system; see [`NetError::io_error`].
    Os,
}

impl NetError {
    fn new(kind: NetErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> NetErrorKind {
        self.kind
    }

    fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The operating system's error, if one caused this.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A multicast group and UDP port: `239.255.0.1:5000` or `[ff15::1]:5000`.
/// The address family is the group's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Group(SocketAddr);

impl Group {
    /// The group address and port.
    pub fn addr(&self) -> SocketAddr {
        self.0
    }

    /// Whether the group is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.0.is_ipv6()
    }

    /// The default largest datagram on this family with a 1500-byte MTU.
    pub fn default_max_datagram(&self) -> usize {
        if self.is_ipv6() {
            MAX_DATAGRAM_V6
        } else {
            MAX_DATAGRAM_V4
        }
    }
}

impl Group {
    /// Whether the group's scope reaches beyond routers: IPv4 global scope
    /// (224.0.1.0 to 238.255.255.255, SSM's 232/8 and GLOP's 233/8 among
    /// them) or IPv6 organization or global scope (`ff08::/16`,
    /// `ff0e::/16` and their flag variants). Local-scope groups such as
    /// 239.255.0.0/16 or `ff15::` are not: TTL 1 is their normal use.
    pub fn is_routed_scope(&self) -> bool {
        match self.0.ip() {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                (224..=238).contains(&a) && !(a == 224 && b == 0 && c == 0)
            }
            IpAddr::V6(v6) => {
                let scope = v6.octets()[1] & 0x0f;
                scope >= 0x8
            }
        }
    }

    /// A hint for a sender about to use TTL `ttl` on this group, when the
    /// two disagree: a routed group with TTL 1 never leaves the link.
    pub fn ttl_hint(&self, ttl: u32) -> Option<String> {
        (ttl <= 1 && self.is_routed_scope()).then(|| {
            format!(
                "{} is a routed (global or organization scope) group, but with TTL {ttl} \
                 datagrams never cross a router; set the TTL to the router hops to the \
                 furthest receiver",
                self.0.ip()
            )
        })
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Group {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addr: SocketAddr = s.parse().map_err(|_| {
            NetError::new(
                NetErrorKind::InvalidGroup,
                format!("{s:?} is not a group address and port"),
            )
            .with_hint("write ADDR:PORT or [ADDR]:PORT, e.g. 239.255.0.1:5000 or [ff15::1]:5000")
        })?;
        if !addr.ip().is_multicast() {
            return Err(NetError::new(
                NetErrorKind::InvalidGroup,
                format!("{} is not a multicast address", addr.ip()),
            )
            .with_hint(
                "multicast groups are 224.0.0.0/4 or ff00::/8; for private use pick one in \
                     239.255.0.0/16 (IPv4) or ff15::/16 (IPv6)",
            ));
        }
        // A scope ID (`[ff12::1%3]:P`) would pick the interface behind -i's
        // back: the kernel prefers it to IPV6_MULTICAST_IF.
        if let SocketAddr::V6(v6) = addr
            && v6.scope_id() != 0
        {
            return Err(NetError::new(
                NetErrorKind::InvalidGroup,
                format!("{s:?} has a scope ID (%{})", v6.scope_id()),
            )
            .with_hint("leave it out and name the interface on its own"));
        }
        if addr.port() == 0 {
            return Err(
                NetError::new(NetErrorKind::InvalidGroup, "port 0 is not a group port")
                    .with_hint("pick a port every member uses, e.g. 239.255.0.1:5000"),
            );
        }
        Ok(Self(addr))
    }
}

/// How the user named an interface: by name (`lo`), address (`127.0.0.1`)
/// or index (`1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSpec {
    /// An interface name such as `eth0`.
    Name(String),
    /// One of the interface's addresses.
    Addr(IpAddr),
    /// The interface index.
    Index(u32),
}

impl FromStr for InterfaceSpec {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(
                NetError::new(NetErrorKind::InvalidInterface, "empty interface name").with_hint(
                    "name an interface (lo), one of its addresses (127.0.0.1) or its index",
                ),
            );
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Addr(ip));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(Self::Index).map_err(|_| {
                NetError::new(
                    NetErrorKind::InvalidInterface,
                    format!("interface index {s} is out of range"),
                )
                .with_hint("list interfaces and their indexes with: ip link")
            });
        }
        Ok(Self::Name(s.to_owned()))
    }
}

impl fmt::Display for InterfaceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Addr(a) => a.fmt(f),
            Self::Index(i) => i.fmt(f),
        }
    }
}

/// A resolved network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// The IPv4 address it was named by, else its first, if it has one.
    pub ipv4: Option<Ipv4Addr>,
    /// Whether it carries the MULTICAST flag.
    pub multicast: bool,
    /// Whether it is a loopback interface.
    pub loopback: bool,
    /// Whether it is up.
    pub up: bool,
}

struct IfEntry {
    iface: Interface,
    addrs: Vec<IpAddr>,
}

fn list_interfaces() -> Result<Vec<IfEntry>, NetError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| {
        NetError::new(NetErrorKind::Os, format!("listing network interfaces: {e}"))
            .with_hint("the system refused getifaddrs; is /proc or /sys mounted?")
    })?;
    let mut out: Vec<IfEntry> = Vec::new();
    for a in addrs {
        let pos = match out.iter().position(|e| e.iface.name == a.interface_name) {
            Some(pos) => pos,
            None => {
                let index =
                    nix::net::if_::if_nametoindex(a.interface_name.as_str()).unwrap_or_default();
                out.push(IfEntry {
                    iface: Interface {
                        name: a.interface_name.clone(),
                        index,
                        ipv4: None,
                        multicast: a.flags.contains(InterfaceFlags::IFF_MULTICAST),
                        loopback: a.flags.contains(InterfaceFlags::IFF_LOOPBACK),
                        up: a.flags.contains(InterfaceFlags::IFF_UP),
                    },
                    addrs: Vec::new(),
                });
                out.len() - 1
            }
        };
        let Some(entry) = out.get_mut(pos) else {
            continue;
        };
        if let Some(sa) = a.address {
            if let Some(v4) = sa.as_sockaddr_in() {
                let ip = v4.ip();
                entry.iface.ipv4.get_or_insert(ip);
                entry.addrs.push(IpAddr::V4(ip));
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                entry.addrs.push(IpAddr::V6(v6.ip()));
            }
        }
    }
    Ok(out)
}

/// Finds the interface `spec` names and checks that it can carry multicast.
///
/// An interface without the MULTICAST flag is refused, except loopback:
/// Linux delivers multicast on `lo` although it does not set the flag.
pub fn resolve_interface(spec: &InterfaceSpec) -> Result<Interface, NetError> {
    let all = list_interfaces()?;
    let found = all.into_iter().find(|e| match spec {
        InterfaceSpec::Name(n) => &e.iface.name == n,
        InterfaceSpec::Index(i) => e.iface.index == *i,
        InterfaceSpec::Addr(a) => e.addrs.contains(a),
    });
    let Some(entry) = found else {
        let what = match spec {
            InterfaceSpec::Name(n) => format!("no network interface named {n:?}"),
            InterfaceSpec::Index(i) => format!("no network interface with index {i}"),
            InterfaceSpec::Addr(a) => format!("no network interface has the address {a}"),
        };
        return Err(
            NetError::new(NetErrorKind::NoSuchInterface, what).with_hint(
                "list interfaces with: ip addr; name one by its name, an address or its index",
            ),
        );
    };
    let mut iface = entry.iface;
    // Named by one of several addresses: send from and join on that one.
    if let InterfaceSpec::Addr(IpAddr::V4(a)) = spec {
        iface.ipv4 = Some(*a);
    }
    if !iface.multicast && !iface.loopback {
        return Err(NetError::new(
            NetErrorKind::InterfaceUnusable,
            format!("interface {} does not have the MULTICAST flag", iface.name),
        )
        .with_hint(format!(
            "enable it with: ip link set {} multicast on, or choose another interface",
            iface.name
        )));
    }
    if !iface.up {
        return Err(NetError::new(
            NetErrorKind::InterfaceUnusable,
            format!("interface {} is down", iface.name),
        )
        .with_hint(format!("bring it up with: ip link set {} up", iface.name)));
    }
    Ok(iface)
}

/// Socket options for a [`Sender`] or [`Receiver`]. `Default` gives the
/// safe defaults: the kernel's choice of interface, TTL 1, loop on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The interface to send on and join on; `None` lets the routing table
    /// decide.
    pub interface: Option<InterfaceSpec>,
    /// Multicast TTL / hop limit (default 1).
    pub ttl: u32,
    /// Whether this host's own receivers hear what it sends (default on).
    pub multicast_loop: bool,
    /// Source-specific multicast: receive only from this source (IPv4).
    pub source: Option<IpAddr>,
    /// Receive buffer to ask the kernel for, in bytes.
    pub rcvbuf: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            interface: None,
            ttl: DEFAULT_TTL,
            multicast_loop: true,
            source: None,
            rcvbuf: None,
        }
    }
}

fn errno_is(err: &io::Error, errno: Errno) -> bool {
    err.raw_os_error() == Some(errno as i32)
}

/// Wraps an OS error with context and the hint that fits it.
fn os_error(context: String, err: io::Error, group: &Group, iface: Option<&Interface>) -> NetError {
    let named = iface.map_or_else(|| "the interface".to_owned(), |i| i.name.clone());
    let mut kind = NetErrorKind::Os;
    let hint = if errno_is(&err, Errno::ENETUNREACH) || errno_is(&err, Errno::EHOSTUNREACH) {
        kind = NetErrorKind::NoRoute;
        Some(format!(
            "no route to {}: name an interface that carries multicast, or add a route, e.g. \
             ip route add {} dev IFACE",
            group.addr().ip(),
            if group.is_ipv6() {
                "ff00::/8"
            } else {
                "224.0.0.0/4"
            }
        ))
    } else if errno_is(&err, Errno::EADDRINUSE) {
        Some(format!(
            "port {} is taken by a program that did not set SO_REUSEADDR; stop it or pick \
             another port (see: ss -ulpn)",
            group.addr().port()
        ))
    } else if errno_is(&err, Errno::ENODEV) {
        kind = NetErrorKind::InterfaceUnusable;
        Some(format!(
            "the interface is gone or cannot do multicast; check {named} against: ip link"
        ))
    } else if errno_is(&err, Errno::EADDRNOTAVAIL) {
        kind = NetErrorKind::InterfaceUnusable;
        Some(format!(
            "the interface has no usable address for this group's family; check {named} \
             against: ip addr"
        ))
    } else if errno_is(&err, Errno::ENOBUFS) {
        Some(
            "the kernel's limit on group memberships is reached; raise \
             net.ipv4.igmp_max_memberships or close other listeners"
                .to_owned(),
        )
    } else if errno_is(&err, Errno::EPERM) || errno_is(&err, Errno::EACCES) {
        Some("a firewall or security policy refused it; check nft/iptables rules".to_owned())
    } else {
        None
    };
    NetError {
        kind,
        message: format!("{context}: {err}"),
        hint,
        source: Some(err),
    }
}

fn new_socket(group: &Group) -> Result<Socket, NetError> {
    let domain = if group.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| os_error("creating a UDP socket".to_owned(), e, group, None))
}

fn resolve(opts: &Options) -> Result<Option<Interface>, NetError> {
    opts.interface.as_ref().map(resolve_interface).transpose()
}

/// The sending half: a socket whose multicast interface, TTL and loop are
/// set, aimed at one group.
#[derive(Debug)]
pub struct Sender {
    sock: UdpSocket,
    group: Group,
    interface: Option<Interface>,
    /// Cleared for good when the kernel refuses a GSO send.
    gso: AtomicBool,
}

impl Sender {
    /// Opens a socket to send to `group` with `opts`.
    pub fn open(group: Group, opts: &Options) -> Result<Self, NetError> {
        let iface = resolve(opts)?;
        let sock = new_socket(&group)?;
        let fail = |what: &str, e| os_error(what.to_owned(), e, &group, iface.as_ref());
        let bind: SocketAddr = match group.addr() {
            SocketAddr::V4(_) => {
                let ip = match &iface {
                    Some(i) => i.ipv4.ok_or_else(|| {
                        NetError::new(
                            NetErrorKind::InterfaceUnusable,
                            format!("interface {} has no IPv4 address", i.name),
                        )
                        .with_hint("give it one (ip addr add), or use an IPv6 group")
                    })?,
                    None => Ipv4Addr::UNSPECIFIED,
                };
                sock.set_multicast_if_v4(&ip)
                    .map_err(|e| fail("setting IP_MULTICAST_IF", e))?;
                sock.set_multicast_ttl_v4(opts.ttl)
                    .map_err(|e| fail("setting IP_MULTICAST_TTL", e))?;
                sock.set_multicast_loop_v4(opts.multicast_loop)
                    .map_err(|e| fail("setting IP_MULTICAST_LOOP", e))?;
                SocketAddrV4::new(ip, 0).into()
            }
            SocketAddr::V6(_) => {
                let index = iface.as_ref().map_or(0, |i| i.index);
                sock.set_multicast_if_v6(index)
                    .map_err(|e| fail("setting IPV6_MULTICAST_IF", e))?;
                sock.set_multicast_hops_v6(opts.ttl)
                    .map_err(|e| fail("setting IPV6_MULTICAST_HOPS", e))?;
                sock.set_multicast_loop_v6(opts.multicast_loop)
                    .map_err(|e| fail("setting IPV6_MULTICAST_LOOP", e))?;
                SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0).into()
            }
        };
        sock.bind(&SockAddr::from(bind))
            .map_err(|e| fail("binding the sending socket", e))?;
        // Connected, as iperf's sender is: the kernel looks the route up
        // once here (through the IP_MULTICAST_IF set above) instead of on
        // every datagram, which made an unconnected sendto loop about a
        // third slower than iperf2's. Multicast draws no ICMP errors, so a
        // connected socket reports nothing an unconnected one would not.
        sock.connect(&SockAddr::from(group.addr()))
            .map_err(|e| fail("connecting the sending socket to the group", e))?;
        let gso = AtomicBool::new(batch::probe_gso(&sock));
        Ok(Self {
            sock: sock.into(),
            group,
            interface: iface,
            gso,
        })
    }

    /// The group this sends to.
    pub fn group(&self) -> Group {
        self.group
    }

    /// The interface it sends on, if one was named.
    pub fn interface(&self) -> Option<&Interface> {
        self.interface.as_ref()
    }

    /// The local address datagrams come from.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.sock.local_addr().map_err(|e| {
            os_error(
                "reading the socket's address".to_owned(),
                e,
                &self.group,
                None,
            )
        })
    }

    /// Sends one datagram to the group.
    pub fn send(&self, datagram: &[u8]) -> Result<(), NetError> {
        let mut result = self.sock.send(datagram);
        // A connected (unicast) socket reports a pending ICMP error on its
        // next send: "fragmentation needed" as EMSGSIZE, whatever this
        // datagram's size, and anyone on the path can forge one. The error
        // is taken by that report; send again, once. (A datagram really too
        // large fails again.)
        if result
            .as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(libc::EMSGSIZE))
        {
            result = self.sock.send(datagram);
        }
        match result {
            Ok(_) => Ok(()),
            // Only a unicast sender (to a relay) hears this: the relay was
            // away for an earlier datagram. UDP promised nothing; go on, and
            // the publisher's renewals bring the relay back.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
            Err(e) => Err(os_error(
                format!("sending to {}", self.group),
                e,
                &self.group,
                self.interface.as_ref(),
            )),
        }
    }
}

/// The receiving half: a socket bound to the group's address and port
/// (so it only sees datagrams sent to that group), joined on one interface.
#[derive(Debug)]
pub struct Receiver {
    sock: UdpSocket,
    group: Group,
    rcvbuf: Option<RcvBuf>,
    /// What the membership was joined with, to leave and join it again.
    iface: Option<Interface>,
    source: Option<IpAddr>,
}

/// What the kernel granted for a requested receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RcvBuf {
    /// Bytes asked for.
    pub requested: usize,
    /// Bytes the kernel gave (Linux reports double, for bookkeeping; this
    /// is the usable half).
    pub granted: usize,
}

impl Receiver {
    /// Opens a socket that receives datagrams sent to `group`.
    pub fn open(group: Group, opts: &Options) -> Result<Self, NetError> {
        let iface = resolve(opts)?;
        let sock = new_socket(&group)?;
        let fail = |what: String, e| os_error(what, e, &group, iface.as_ref());
        sock.set_reuse_address(true)
            .map_err(|e| fail("setting SO_REUSEADDR".to_owned(), e))?;
        let rcvbuf = match opts.rcvbuf {
            None => None,
            Some(requested) => {
                sock.set_recv_buffer_size(requested)
                    .map_err(|e| fail("setting SO_RCVBUF".to_owned(), e))?;
                let reported = sock
                    .recv_buffer_size()
                    .map_err(|e| fail("reading SO_RCVBUF".to_owned(), e))?;
                let granted = if cfg!(target_os = "linux") {
                    reported / 2
                } else {
                    reported
                };
                Some(RcvBuf { requested, granted })
            }
        };
        if group.is_ipv6() {
            sock.set_only_v6(true)
                .map_err(|e| fail("setting IPV6_V6ONLY".to_owned(), e))?;
        }
        sock.bind(&SockAddr::from(group.addr())).map_err(|e| {
            fail(
                format!("binding to {group} (to receive the group's datagrams)"),
                e,
            )
        })?;
        #[cfg(target_os = "linux")]
        match group.addr().ip() {
            IpAddr::V4(_) => sock
                .set_multicast_all_v4(false)
                .map_err(|e| fail("clearing IP_MULTICAST_ALL".to_owned(), e))?,
            IpAddr::V6(_) => sock
                .set_multicast_all_v6(false)
                .map_err(|e| fail("clearing IPV6_MULTICAST_ALL".to_owned(), e))?,
        }
        membership(&sock, group, iface.as_ref(), opts.source, Membership::Join)?;
        Ok(Self {
            sock: sock.into(),
            group,
            rcvbuf,
            iface,
            source: opts.source,
        })
    }

    /// The group this receives.
    pub fn group(&self) -> Group {
        self.group
    }

    /// Leaves the group and joins it again at once, so the kernel sends a
    /// fresh membership report (IGMP or MLD). A switch that snoops IGMP
    /// without a querier on the link forgets members after its membership
    /// interval (260 s by default, RFC 2236 8.4 and RFC 3376 8.4); joining
    /// again before then keeps the stream flowing. Datagrams that arrive
    /// between the leave and the join may be missed.
    pub fn rejoin(&self) -> Result<(), NetError> {
        let sock = socket2::SockRef::from(&self.sock);
        let (group, iface, source) = (self.group, self.iface.as_ref(), self.source);
        membership(&sock, group, iface, source, Membership::Leave)?;
        membership(&sock, group, iface, source, Membership::Join)
    }

    /// The receive buffer asked for and granted, if one was asked for.
    pub fn rcvbuf(&self) -> Option<RcvBuf> {
        self.rcvbuf
    }

    /// How long [`Receiver::recv`] waits before returning `None`; `None`
    /// waits forever.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), NetError> {
        // A zero timeout means "forever" to the kernel and an error to std.
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        self.sock.set_read_timeout(timeout).map_err(|e| {
            os_error(
                "setting the receive timeout".to_owned(),
                e,
                &self.group,
                None,
            )
        })
    }

    /// Receives one datagram into `buf`: its length and where it came from,
    /// or `None` if the timeout passed or a signal interrupted the wait. A
    /// datagram longer than `buf` is cut to `buf.len()`; pass a buffer
    /// larger than the biggest frame accepted so such a datagram shows up
    /// as oversize.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<(usize, SocketAddr)>, NetError> {
        match self.sock.recv_from(buf) {
            Ok(got) => Ok(Some(got)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(os_error(
                format!("receiving on {}", self.group),
                e,
                &self.group,
                None,
            )),
        }
    }
}

/// Which way [`membership`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    Join,
    Leave,
}

/// Joins (or leaves) `group` on `iface`, from `source` alone if given.
fn membership(
    sock: &Socket,
    group: Group,
    iface: Option<&Interface>,
    source: Option<IpAddr>,
    how: Membership,
) -> Result<(), NetError> {
    let fail = |what: String, e| os_error(what, e, &group, iface);
    let join = how == Membership::Join;
    let verb = if join { "joining" } else { "leaving" };
    match (group.addr().ip(), source) {
        (IpAddr::V4(g), source) => {
            let if_addr = iface.and_then(|i| i.ipv4).unwrap_or(Ipv4Addr::UNSPECIFIED);
            match source {
                Some(IpAddr::V4(src)) => {
                    // The IPv4 source-specific join names its interface
                    // by address: INADDR_ANY would let the kernel pick
                    // another one.
                    if let Some(i) = iface.filter(|i| i.ipv4.is_none()) {
                        return Err(NetError::new(
                            NetErrorKind::InterfaceUnusable,
                            format!(
                                "interface {} has no IPv4 address, which a source-specific \
                             join on {g} needs",
                                i.name
                            ),
                        )
                        .with_hint("give it one (ip addr add), or use an IPv6 group"));
                    }
                    let res = if join {
                        sock.join_ssm_v4(&src, &g, &if_addr)
                    } else {
                        sock.leave_ssm_v4(&src, &g, &if_addr)
                    };
                    res.map_err(|e| fail(format!("{verb} {g} for source {src} (SSM)"), e))
                }
                Some(IpAddr::V6(src)) => Err(NetError::new(
                    NetErrorKind::SourceFamily,
                    format!("source {src} is IPv6 but the group {g} is IPv4"),
                )
                .with_hint("give a source address of the group's family")),
                None => {
                    let by = match iface {
                        Some(i) if i.ipv4.is_none() => InterfaceIndexOrAddress::Index(i.index),
                        _ => InterfaceIndexOrAddress::Address(if_addr),
                    };
                    let res = if join {
                        sock.join_multicast_v4_n(&g, &by)
                    } else {
                        sock.leave_multicast_v4_n(&g, &by)
                    };
                    res.map_err(|e| fail(format!("{verb} {g}"), e))
                }
            }
        }
        (IpAddr::V6(g), source) => {
            let index = iface.map_or(0, |i| i.index);
            match source {
                Some(IpAddr::V6(src)) => ssm_v6::membership(sock, g, src, index, join)
                    .map_err(|e| fail(format!("{verb} {g} for source {src} (SSM)"), e)),
                Some(IpAddr::V4(src)) => Err(NetError::new(
                    NetErrorKind::SourceFamily,
                    format!("source {src} is IPv4 but the group {g} is IPv6"),
                )
                .with_hint("give a source address of the group's family")),
                None => {
                    let res = if join {
                        sock.join_multicast_v6(&g, index)
                    } else {
                        sock.leave_multicast_v6(&g, index)
                    };
                    res.map_err(|e| fail(format!("{verb} {g}"), e))
                }
            }
        }
    }
}

/// CPU time (user + system) the calling thread has used so far, from
/// `getrusage(RUSAGE_THREAD)`. `None` where the system cannot tell.
///
/// `mcsec bench` reads it at both ends of a run to report each side's CPU
/// as a share of one core.
pub fn thread_cpu_time() -> Option<Duration> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::resource::{UsageWho, getrusage};
        let usage = getrusage(UsageWho::RUSAGE_THREAD).ok()?;
        let micros = |tv: nix::sys::time::TimeVal| {
            let us = i128::from(tv.tv_sec()) * 1_000_000 + i128::from(tv.tv_usec());
            u64::try_from(us).unwrap_or(0)
        };
        Some(Duration::from_micros(
            micros(usage.user_time()).saturating_add(micros(usage.system_time())),
        ))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program reads the kind; the person reads a hint that names system
    /// tools, never one program's options (mcsec's CLI adds those).
    #[test]
    fn errors_carry_kinds_and_hints_name_no_option() {
        let cases: Vec<(NetError, NetErrorKind)> = vec![
            (
                "nonsense".parse::<Group>().unwrap_err(),
                NetErrorKind::InvalidGroup,
            ),
            (
                "10.0.0.1:5000".parse::<Group>().unwrap_err(),
                NetErrorKind::InvalidGroup,
            ),
            (
                "[ff12::1%3]:5000".parse::<Group>().unwrap_err(),
                NetErrorKind::InvalidGroup,
            ),
            (
                "239.1.1.1:0".parse::<Group>().unwrap_err(),
                NetErrorKind::InvalidGroup,
            ),
            (
                "".parse::<InterfaceSpec>().unwrap_err(),
                NetErrorKind::InvalidInterface,
            ),
            (
                "99999999999".parse::<InterfaceSpec>().unwrap_err(),
                NetErrorKind::InvalidInterface,
            ),
            (
                resolve_interface(&InterfaceSpec::Name("nosuchif9".into())).unwrap_err(),
                NetErrorKind::NoSuchInterface,
            ),
            (
                resolve_interface(&InterfaceSpec::Index(u32::MAX)).unwrap_err(),
                NetErrorKind::NoSuchInterface,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
            let hint = err.hint().unwrap_or_default();
            assert!(!hint.is_empty(), "{err}: no hint");
            for option in [" -i", " -s", "--"] {
                assert!(
                    !hint.contains(option),
                    "{err}: the hint names {option:?}: {hint}"
                );
            }
        }
    }

    #[test]
    fn group_parsing() {
        let g: Group = "239.255.0.1:5000".parse().unwrap();
        assert!(!g.is_ipv6());
        assert_eq!(g.default_max_datagram(), 1472);
        let g: Group = "[ff15::1]:5000".parse().unwrap();
        assert!(g.is_ipv6());
        assert_eq!(g.default_max_datagram(), 1452);
        let e = "10.0.0.1:5000".parse::<Group>().unwrap_err();
        assert!(e.to_string().contains("not a multicast"));
        assert!(e.hint().unwrap().contains("239.255"));
        assert!("239.255.0.1".parse::<Group>().is_err());
        assert!("239.255.0.1:0".parse::<Group>().is_err());
        assert!("ff15::1:5000".parse::<Group>().is_err());
        // TTL 1 on a routed group is worth a hint; on a local one it is normal.
        for (group, routed) in [
            ("233.252.0.1:5000", true),
            ("232.1.1.1:5000", true),
            ("224.0.0.251:5353", false),
            ("239.255.0.1:5000", false),
            ("[ff0e::1]:5000", true),
            ("[ff1e::1]:5000", true),
            ("[ff15::1]:5000", false),
            ("[ff02::1]:5000", false),
        ] {
            let g: Group = group.parse().unwrap();
            assert_eq!(g.is_routed_scope(), routed, "{group}");
            assert_eq!(g.ttl_hint(1).is_some(), routed, "{group}");
            assert!(g.ttl_hint(16).is_none());
            // The library names no option (the CLI adds "-t N").
            assert!(!g.ttl_hint(1).unwrap_or_default().contains("-t"), "{group}");
        }
        // Regression: a scope ID silently overrode -i.
        let e = "[ff12::7%3]:5000".parse::<Group>().unwrap_err();
        assert!(e.to_string().contains("scope ID"), "{e}");
        assert!(e.hint().unwrap().contains("name the interface"), "{e}");
    }

    #[test]
    fn interface_spec_parsing() {
        assert_eq!(
            "lo".parse::<InterfaceSpec>().unwrap(),
            InterfaceSpec::Name("lo".into())
        );
        assert_eq!(
            "127.0.0.1".parse::<InterfaceSpec>().unwrap(),
            InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            "1".parse::<InterfaceSpec>().unwrap(),
            InterfaceSpec::Index(1)
        );
        assert!("99999999999".parse::<InterfaceSpec>().is_err());
        assert!("".parse::<InterfaceSpec>().is_err());
    }

    #[test]
    fn loopback_resolves_by_name_address_and_index() {
        let by_addr =
            resolve_interface(&InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST))).unwrap();
        assert!(by_addr.loopback);
        assert_eq!(by_addr.ipv4, Some(Ipv4Addr::LOCALHOST));
        let by_name = resolve_interface(&InterfaceSpec::Name(by_addr.name.clone())).unwrap();
        assert_eq!(by_name, by_addr);
        let by_index = resolve_interface(&InterfaceSpec::Index(by_addr.index)).unwrap();
        assert_eq!(by_index, by_addr);
    }

    #[test]
    fn missing_interface_has_a_hint() {
        let e = resolve_interface(&InterfaceSpec::Name("nosuchif0".into())).unwrap_err();
        assert!(e.to_string().contains("nosuchif0"));
        assert!(e.hint().unwrap().contains("ip addr"));
    }

    /// The safe defaults, read back from the kernel: what `Options` says
    /// is not enough, the socket must carry it. Sends nothing.
    #[test]
    fn sender_socket_options_read_back_from_the_kernel() {
        let defaults = Options::default();
        assert_eq!(defaults.ttl, 1);
        assert!(defaults.multicast_loop);
        assert_eq!(defaults.interface, None);

        // IPv4, defaults: TTL 1, loop on, the kernel's choice of interface.
        let group: Group = "239.255.77.2:47312".parse().unwrap();
        let s = Sender::open(group, &defaults).unwrap();
        let sock = socket2::SockRef::from(&s.sock);
        assert_eq!(sock.multicast_ttl_v4().unwrap(), 1);
        assert!(sock.multicast_loop_v4().unwrap());
        assert_eq!(sock.multicast_if_v4().unwrap(), Ipv4Addr::UNSPECIFIED);

        // IPv4, an interface asked for and loop off: both on the socket,
        // the TTL still 1.
        let opts = Options {
            interface: Some(InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST))),
            multicast_loop: false,
            ..Options::default()
        };
        let s = Sender::open(group, &opts).unwrap();
        let sock = socket2::SockRef::from(&s.sock);
        assert_eq!(sock.multicast_ttl_v4().unwrap(), 1);
        assert!(!sock.multicast_loop_v4().unwrap());
        assert_eq!(sock.multicast_if_v4().unwrap(), Ipv4Addr::LOCALHOST);
        assert_eq!(
            s.local_addr().unwrap().ip(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );

        // An explicit TTL reaches the socket too.
        let s = Sender::open(group, &Options { ttl: 7, ..opts }).unwrap();
        assert_eq!(
            socket2::SockRef::from(&s.sock).multicast_ttl_v4().unwrap(),
            7
        );

        // IPv6: hop limit 1, loop on, then the interface asked for (by
        // index) and loop off. Setting these sends nothing, so no route is
        // needed; a host without IPv6 at all cannot make the socket.
        let group: Group = "[ff15::77:2]:47312".parse().unwrap();
        let Ok(s) = Sender::open(group, &Options::default()) else {
            eprintln!("no IPv6 socket on this host: IPv6 half skipped");
            return;
        };
        let sock = socket2::SockRef::from(&s.sock);
        assert_eq!(sock.multicast_hops_v6().unwrap(), 1);
        assert!(sock.multicast_loop_v6().unwrap());
        assert_eq!(sock.multicast_if_v6().unwrap(), 0);
        let lo = resolve_interface(&InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST))).unwrap();
        let opts = Options {
            interface: Some(InterfaceSpec::Index(lo.index)),
            multicast_loop: false,
            ..Options::default()
        };
        let s = Sender::open(group, &opts).unwrap();
        let sock = socket2::SockRef::from(&s.sock);
        assert_eq!(sock.multicast_hops_v6().unwrap(), 1);
        assert!(!sock.multicast_loop_v6().unwrap());
        assert_eq!(sock.multicast_if_v6().unwrap(), lo.index);
    }

    #[test]
    fn loopback_send_and_receive() {
        let group: Group = "239.255.77.1:47311".parse().unwrap();
        let opts = Options {
            interface: Some(InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST))),
            rcvbuf: Some(1 << 16),
            ..Options::default()
        };
        let r1 = Receiver::open(group, &opts).unwrap();
        let r2 = Receiver::open(group, &opts).unwrap();
        assert!(r1.rcvbuf().unwrap().granted > 0);
        let s = Sender::open(group, &opts).unwrap();
        assert_eq!(s.send_batch(&[b"one", b"two"]).unwrap(), 2);
        assert_eq!(s.send_segments(b"threefour!", 5).unwrap(), 2);
        for r in [&r1, &r2] {
            r.set_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = r.recv(&mut buf).unwrap().unwrap();
            assert_eq!(&buf[..n], b"one");
            assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
            let (n, _) = r.recv(&mut buf).unwrap().unwrap();
            assert_eq!(&buf[..n], b"two");
            // A plain receiver has no GRO, so a GSO run arrives one by one.
            let (n, _) = r.recv(&mut buf).unwrap().unwrap();
            assert_eq!(&buf[..n], b"three");
            let (n, _) = r.recv(&mut buf).unwrap().unwrap();
            assert_eq!(&buf[..n], b"four!");
        }
        r1.set_timeout(Some(Duration::from_millis(20))).unwrap();
        assert!(r1.recv(&mut [0u8; 64]).unwrap().is_none());
    }
}

/// IPv6 source-specific joins: socket2 has none, so one setsockopt here.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod ssm_v6 {
    use std::io;
    use std::net::Ipv6Addr;
    use std::os::fd::AsRawFd;

    use socket2::Socket;

    /// MCAST_JOIN_SOURCE_GROUP (RFC 3678): receive `group` on interface
    /// `index` (0: the kernel's choice) only from `source`; with `join`
    /// false, MCAST_LEAVE_SOURCE_GROUP undoes it.
    pub(super) fn membership(
        sock: &Socket,
        group: Ipv6Addr,
        source: Ipv6Addr,
        index: u32,
        join: bool,
    ) -> io::Result<()> {
        let req = libc::group_source_req {
            gsr_interface: index,
            gsr_group: storage(group),
            gsr_source: storage(source),
        };
        let len = libc::socklen_t::try_from(std::mem::size_of_val(&req))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the fd is an open socket we own for the whole call; `req`
        // is a fully initialised group_source_req that outlives the call,
        // and `len` is its exact size, so the kernel reads only within it.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IPV6,
                if join {
                    libc::MCAST_JOIN_SOURCE_GROUP
                } else {
                    libc::MCAST_LEAVE_SOURCE_GROUP
                },
                (&raw const req).cast::<libc::c_void>(),
                len,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `addr` as a sockaddr_in6 inside a sockaddr_storage.
    fn storage(addr: Ipv6Addr) -> libc::sockaddr_storage {
        // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a
        // valid value of it.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let sin6 = libc::sockaddr_in6 {
            sin6_family: libc::sa_family_t::try_from(libc::AF_INET6).unwrap_or_default(),
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: addr.octets(),
            },
            sin6_scope_id: 0,
        };
        // SAFETY: sockaddr_storage is defined (POSIX) to be large enough and
        // aligned enough for every sockaddr type, sockaddr_in6 included, and
        // both are plain data, so writing one at its start is sound.
        unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
        storage
    }
}

#[cfg(not(target_os = "linux"))]
mod ssm_v6 {
    use std::io;
    use std::net::Ipv6Addr;

    pub(super) fn membership(
        _sock: &socket2::Socket,
        _group: Ipv6Addr,
        _source: Ipv6Addr,
        _index: u32,
        _join: bool,
    ) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "IPv6 source-specific multicast is implemented on Linux only",
        ))
    }
}
