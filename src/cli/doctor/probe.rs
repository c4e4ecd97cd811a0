//! What `mcsec doctor` reads from the system: interfaces, the routing
//! table's choice, sysctls, `/proc/net/igmp{,6}`, and the firewall's rules.
//! Nothing here sends a packet: the route is found by connecting a UDP
//! socket, which only looks the route up.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;

use mcsec::net::InterfaceSpec;
use nix::net::if_::InterfaceFlags;

/// An interface as `ip addr` shows it.
#[derive(Debug, Clone)]
pub(super) struct IfInfo {
    pub(super) name: String,
    pub(super) index: u32,
    pub(super) up: bool,
    /// Carrier (IFF_RUNNING).
    pub(super) running: bool,
    pub(super) multicast: bool,
    pub(super) loopback: bool,
    pub(super) addrs: Vec<IpAddr>,
}

impl IfInfo {
    /// Whether `-i SPEC` names this interface.
    pub(super) fn matches(&self, spec: &InterfaceSpec) -> bool {
        match spec {
            InterfaceSpec::Name(n) => &self.name == n,
            InterfaceSpec::Index(i) => self.index == *i,
            InterfaceSpec::Addr(a) => self.addrs.contains(a),
        }
    }
}

/// Every interface, in the order the kernel lists them; empty when the
/// list cannot be read.
pub(super) fn interfaces() -> Vec<IfInfo> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IfInfo> = Vec::new();
    for a in addrs {
        let pos = match out.iter().position(|i| i.name == a.interface_name) {
            Some(pos) => pos,
            None => {
                out.push(IfInfo {
                    index: nix::net::if_::if_nametoindex(a.interface_name.as_str())
                        .unwrap_or_default(),
                    name: a.interface_name.clone(),
                    up: a.flags.contains(InterfaceFlags::IFF_UP),
                    running: a.flags.contains(InterfaceFlags::IFF_RUNNING),
                    multicast: a.flags.contains(InterfaceFlags::IFF_MULTICAST),
                    loopback: a.flags.contains(InterfaceFlags::IFF_LOOPBACK),
                    addrs: Vec::new(),
                });
                out.len() - 1
            }
        };
        let ip = a.address.and_then(|sa| {
            sa.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        });
        if let (Some(ip), Some(entry)) = (ip, out.get_mut(pos)) {
            entry.addrs.push(ip);
        }
    }
    out.sort_by_key(|i| i.index);
    out
}

/// The source address the routing table picks for `dest`: what a UDP
/// socket connected to it gets (connecting sends nothing).
pub(super) fn route_source(dest: SocketAddr) -> io::Result<SocketAddr> {
    let any: SocketAddr = match dest {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(any)?;
    sock.connect(dest)?;
    sock.local_addr()
}

/// [`route_source`] with the multicast interface set to `iface`, as
/// mcsec's sockets do with -i: whether the kernel lets them send there.
pub(super) fn route_source_via(dest: SocketAddr, iface: &IfInfo) -> io::Result<SocketAddr> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let (domain, any): (Domain, SocketAddr) = match dest {
        SocketAddr::V4(_) => (Domain::IPV4, (Ipv4Addr::UNSPECIFIED, 0).into()),
        SocketAddr::V6(_) => (Domain::IPV6, (Ipv6Addr::UNSPECIFIED, 0).into()),
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    match dest {
        SocketAddr::V4(_) => {
            let ip = iface.addrs.iter().find_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            });
            let Some(ip) = ip else {
                return Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("{} has no IPv4 address", iface.name),
                ));
            };
            sock.set_multicast_if_v4(&ip)?;
        }
        SocketAddr::V6(_) => sock.set_multicast_if_v6(iface.index)?,
    }
    sock.bind(&SockAddr::from(any))?;
    sock.connect(&SockAddr::from(dest))?;
    sock.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket address"))
}

/// A number under `/proc/sys`, e.g. `net/core/rmem_max`.
pub(super) fn sysctl(path: &str) -> Option<u64> {
    // Interface names never hold a `/`, but a `..` would walk out.
    if path.split('/').any(|part| part == ".." || part.is_empty()) {
        return None;
    }
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The Querier column of `/proc/net/igmp` for `iface` (`V1`, `V2`, `V3`):
/// the IGMP version the kernel speaks there.
pub(super) fn igmp_querier(iface: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/igmp").ok()?;
    igmp_entries(&text)
        .into_iter()
        .find(|e| e.device == iface)
        .map(|e| e.querier)
}

/// Whether the kernel lists `group` as joined on `iface`; `None` when it
/// cannot be read.
pub(super) fn joined(group: IpAddr, iface: &str) -> Option<bool> {
    match group {
        IpAddr::V4(g) => {
            let text = std::fs::read_to_string("/proc/net/igmp").ok()?;
            Some(
                igmp_entries(&text)
                    .iter()
                    .any(|e| e.device == iface && e.groups.contains(&g)),
            )
        }
        IpAddr::V6(g) => {
            let text = std::fs::read_to_string("/proc/net/igmp6").ok()?;
            Some(igmp6_groups(&text, iface).contains(&g))
        }
    }
}

struct IgmpEntry {
    device: String,
    querier: String,
    groups: Vec<Ipv4Addr>,
}

/// Parses `/proc/net/igmp`: a line per device (`1\tlo : 1 V3`), then a
/// line per group, its address in hex as the kernel holds it (network
/// order, printed as a native integer).
fn igmp_entries(text: &str) -> Vec<IgmpEntry> {
    let mut out: Vec<IgmpEntry> = Vec::new();
    for line in text.lines().skip(1) {
        if line.starts_with(char::is_whitespace) {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            if let (Ok(n), Some(entry)) = (u32::from_str_radix(hex, 16), out.last_mut()) {
                entry.groups.push(Ipv4Addr::from(n.to_ne_bytes()));
            }
            continue;
        }
        let Some((head, tail)) = line.split_once(':') else {
            continue;
        };
        let device = head.split_whitespace().nth(1).unwrap_or_default();
        let querier = tail.split_whitespace().nth(1).unwrap_or_default();
        out.push(IgmpEntry {
            device: device.to_owned(),
            querier: querier.to_owned(),
            groups: Vec::new(),
        });
    }
    out
}

/// The groups `/proc/net/igmp6` lists on `iface` (`idx dev group-hex ...`).
fn igmp6_groups(text: &str, iface: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_, dev, hex) = (f.next()?, f.next()?, f.next()?);
            if dev != iface || hex.len() != 32 {
                return None;
            }
            u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
        })
        .collect()
}

/// The firewall's rules, or why they could not be read.
#[derive(Debug)]
pub(super) enum Firewall {
    Unknown(String),
    Rules { tool: &'static str, text: String },
}

/// `nft list ruleset`, else `iptables -S`.
pub(super) fn firewall() -> Firewall {
    let mut why = Vec::new();
    for (tool, args) in [("nft", &["list", "ruleset"][..]), ("iptables", &["-S"][..])] {
        match Command::new(tool).args(args).output() {
            Ok(out) if out.status.success() => {
                return Firewall::Rules {
                    tool,
                    text: String::from_utf8_lossy(&out.stdout).into_owned(),
                };
            }
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                why.push(format!(
                    "{tool} {} failed: {}",
                    args.join(" "),
                    err.lines().next().unwrap_or("no message").trim()
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                why.push(format!("{tool} is not installed"));
            }
            Err(e) => why.push(format!("running {tool}: {e}")),
        }
    }
    Firewall::Unknown(why.join("; "))
}

/// Whether a rule line ends a datagram.
fn drops(words: &[&str]) -> bool {
    words
        .iter()
        .any(|w| matches!(*w, "drop" | "reject" | "DROP" | "REJECT"))
}

/// Whether a rule line names the group address or the port.
fn names(words: &[&str], ip: IpAddr, port: u16) -> bool {
    let ip = ip.to_string();
    let port = port.to_string();
    words
        .iter()
        .any(|w| *w == ip || w.strip_suffix("/32") == Some(&ip))
        || words
            .windows(2)
            .any(|p| matches!(p[0], "dport" | "--dport") && p[1] == port)
}

/// Whether any rule drops at all.
pub(super) fn accepts_all(text: &str) -> bool {
    !text.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        drops(&words) || l.contains("policy drop")
    })
}

/// Rules that may drop UDP to `ip` port `port` on input: drops that name
/// the group or port, drops with no match at all, and input chains whose
/// policy drops when no rule accepts the port. In nft or iptables -S text.
pub(super) fn suspect_rules(text: &str, ip: IpAddr, port: u16) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let accepted = lines.iter().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.iter().any(|w| matches!(*w, "accept" | "ACCEPT")) && names(&words, ip, port)
    });
    let mut out = Vec::new();
    let mut input_chain = false;
    for line in &lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("chain ") {
            input_chain = false;
        }
        if line.contains("hook input") {
            input_chain = true;
            if line.contains("policy drop") && !accepted {
                out.push(format!("input policy drop ({line})"));
            }
            continue;
        }
        if *line == "-P INPUT DROP" && !accepted {
            out.push((*line).to_owned());
            continue;
        }
        if !drops(&words) {
            continue;
        }
        let iptables_input = line.starts_with("-A INPUT");
        let everything = matches!(
            words.as_slice(),
            ["drop" | "reject"] | ["-A", "INPUT", "-j", _]
        );
        let counted = matches!(words.as_slice(), ["counter", ..] if words.len() <= 6);
        if names(&words, ip, port) || ((input_chain || iptables_input) && (everything || counted)) {
            out.push((*line).to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn igmp_lines_give_devices_queriers_and_groups() {
        let text = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
                    1\tlo        :     2      V3\n\
                    \t\t\t\t010000E0     1 0:00000000\t\t0\n\
                    \t\t\t\t0201FFEF     1 0:00000000\t\t0\n\
                    4\teth0      :     1      V2\n\
                    \t\t\t\t010000E0     1 0:00000000\t\t0\n";
        let e = igmp_entries(text);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].device.as_str(), e[0].querier.as_str()), ("lo", "V3"));
        if cfg!(target_endian = "little") {
            assert_eq!(
                e[0].groups,
                [Ipv4Addr::new(224, 0, 0, 1), Ipv4Addr::new(239, 255, 1, 2)]
            );
        }
        assert_eq!(
            (e[1].device.as_str(), e[1].querier.as_str()),
            ("eth0", "V2")
        );
    }

    #[test]
    fn igmp6_lines_give_groups_per_device() {
        let text = "1    lo              ff020000000000000000000000000001     1 0000000C 0\n\
                    1    lo              ff150000000000000000000000000007     1 00000004 0\n\
                    2    eth0            ff020000000000000000000000000001     1 0000000C 0\n";
        let lo = igmp6_groups(text, "lo");
        assert_eq!(lo.len(), 2);
        assert!(lo.contains(&"ff15::7".parse().unwrap()));
        assert!(!igmp6_groups(text, "eth0").contains(&"ff15::7".parse().unwrap()));
    }

    #[test]
    fn sysctl_paths_cannot_walk_out_of_proc_sys() {
        assert_eq!(sysctl("net/../../etc/hostname"), None);
        assert_eq!(sysctl("net/ipv4/conf//rp_filter"), None);
    }

    #[test]
    fn only_drops_that_can_hit_the_group_are_suspect() {
        let ip: IpAddr = "239.255.1.2".parse().unwrap();
        let s = |t: &str| suspect_rules(t, ip, 5000);
        assert_eq!(s("udp dport 50000 drop").len(), 0);
        assert_eq!(s("udp dport 5000 drop").len(), 1);
        assert_eq!(s("ip daddr 239.255.1.2 counter drop").len(), 1);
        assert_eq!(s("-A INPUT -d 239.255.1.2/32 -j DROP").len(), 1);
        assert_eq!(s("-A INPUT -j DROP").len(), 1);
        assert_eq!(s("-A OUTPUT -p tcp --dport 22 -j DROP").len(), 0);
        assert_eq!(
            s("-P INPUT DROP\n-A INPUT -p udp --dport 5000 -j ACCEPT").len(),
            0
        );
        assert!(accepts_all("table ip t {\n}\n"));
        assert!(!accepts_all("udp dport 1 drop"));
    }
}
