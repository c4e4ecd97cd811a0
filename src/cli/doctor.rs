//! `mcsec doctor`: why does my multicast not work?
//!
//! The checks the smcroute and omping troubleshooting guides walk through,
//! in one command: interfaces and their flags, the route the group takes,
//! rp_filter, receive buffer limits, the firewall, IGMP/MLD and snooping,
//! and a live self-test. Each check gives findings (ok, info, warn, fail)
//! with a hint. The reading of system state (`/proc`, `nft`, `iptables`)
//! lives in [`probe`], the self-test in [`selftest`]; this file turns what
//! they saw into findings.
//!
//! Network safety: the self-test sends only with `-i` (on that interface,
//! TTL 1) and never without it.

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use mcsec::net::{Group, InterfaceSpec};

use super::common::{parse_bytes, parse_duration, parse_group, parse_interface};
use super::{CliError, CliResult, stdout_error};

mod probe;
mod selftest;

use probe::{Firewall, IfInfo};

/// What a receive buffer should be allowed to grow to for a busy feed:
/// 4 MiB holds about 2800 full datagrams, some 45 ms at 1 Gbit/s.
const RECOMMENDED_RCVBUF: usize = 4 << 20;

/// How long a snooping switch remembers a member without reports: the
/// group membership interval, 260 s (RFC 2236 8.4, RFC 3376 8.4).
const MEMBERSHIP_INTERVAL_S: u64 = 260;

/// Check a host for what stops multicast: interfaces, route, rp_filter,
/// buffers, firewall, IGMP/MLD, and a live self-test.
///
/// Each finding says ok, info, warn or fail, what was seen, and a hint.
/// The live self-test joins the group on the interface named by -i, sends
/// a frame sealed with a throwaway key there (TTL 1, loop on) and waits to
/// receive it back. It runs only with -i, so nothing is ever sent on an
/// interface you did not choose; --no-self-test sends nothing at all. It
/// proves this host's path through the firewall and the socket layer, not
/// that other hosts hear the group.
///
/// The firewall check runs `nft list ruleset` (or `iptables -S`); without
/// them, or without the right to run them, it says it could not tell.
/// Exit status: 0 when no finding failed, 1 when one did, 2 usage error.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  mcsec doctor -g 239.255.0.1:5000 -i eth0
  mcsec doctor -g 239.255.0.1:5000 -i eth0 --format json | jq 'select(.status != \"ok\")'
  mcsec doctor -g 239.255.0.1:5000 --no-self-test   (checks only; sends nothing)")]
pub(crate) struct Args {
    /// The multicast group and port to diagnose: ADDR:PORT or [ADDR]:PORT.
    #[arg(env = "MCSEC_GROUP", short, long, value_name = "GROUP:PORT", value_parser = parse_group)]
    group: Group,

    /// The interface that should carry the group: a name, address or
    /// index. The self-test runs only on it. Default: the route's choice
    /// (checks only, no self-test).
    #[arg(env = "MCSEC_INTERFACE", short, long, value_name = "IF", value_parser = parse_interface)]
    interface: Option<InterfaceSpec>,

    /// Output: `text`, or `json` (one object per finding, a line each).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// The receive buffer you mean to give `recv --rcvbuf`: checked
    /// against net.core.rmem_max. Default: 4M.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    rcvbuf: Option<usize>,

    /// How long the self-test waits for its frame to come back.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2s")]
    timeout: Duration,

    /// Run the checks but send nothing.
    #[arg(long)]
    no_self_test: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// How a finding bears on multicast working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Info,
    Warn,
    Fail,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One thing doctor saw: a check's name, a verdict, words, a hint, and the
/// values behind it (for scripts).
#[derive(Debug)]
struct Finding {
    check: &'static str,
    status: Status,
    message: String,
    hint: Option<String>,
    data: serde_json::Map<String, serde_json::Value>,
}

impl Finding {
    fn new(check: &'static str, status: Status, message: impl Into<String>) -> Self {
        Self {
            check,
            status,
            message: message.into(),
            hint: None,
            data: serde_json::Map::new(),
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    fn text(&self) -> String {
        let mut s = format!("{:<5} {}: {}", self.status.word(), self.check, self.message);
        if let Some(hint) = &self.hint {
            s.push_str(&format!("\n      hint: {hint}"));
        }
        s
    }

    fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), "finding".into());
        m.insert("check".into(), self.check.into());
        m.insert("status".into(), self.status.word().into());
        m.insert("message".into(), self.message.clone().into());
        m.insert(
            "hint".into(),
            self.hint
                .clone()
                .map_or(serde_json::Value::Null, Into::into),
        );
        if !self.data.is_empty() {
            m.insert("data".into(), self.data.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

/// Writes findings as they come, so a slow check shows what came before.
struct Report {
    format: Format,
    failed: usize,
    out: std::io::StdoutLock<'static>,
}

impl Report {
    fn add(&mut self, finding: Finding) -> CliResult {
        if finding.status == Status::Fail {
            self.failed += 1;
        }
        let line = match self.format {
            Format::Text => finding.text(),
            Format::Json => finding.json().to_string(),
        };
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(stdout_error)
    }
}

pub(crate) fn run(args: Args) -> CliResult {
    let mut report = Report {
        format: args.format,
        failed: 0,
        out: std::io::stdout().lock(),
    };
    let group = args.group;
    let interfaces = probe::interfaces();
    // The interface doctor looks at: -i's, else the route's.
    let chosen = match &args.interface {
        Some(spec) => match interfaces.iter().find(|i| i.matches(spec)) {
            Some(found) => Some(found.clone()),
            None => {
                report.add(
                    Finding::new(
                        "interface",
                        Status::Fail,
                        format!("-i {spec}: no such interface"),
                    )
                    .hint("list interfaces with: ip addr; pass -i NAME, -i ADDRESS or -i INDEX"),
                )?;
                None
            }
        },
        None => None,
    };
    for iface in &interfaces {
        report.add(interface_finding(iface, chosen.as_ref()))?;
    }
    let routed = route(&mut report, group, &interfaces, chosen.as_ref())?;
    let looked_at = chosen.as_ref().or(routed.as_ref());
    if !group.is_ipv6() {
        report.add(rp_filter(looked_at))?;
    }
    report.add(rmem(args.rcvbuf))?;
    report.add(firewall(&probe::firewall(), group))?;
    for finding in igmp(group, looked_at) {
        report.add(finding)?;
    }
    match (&args.interface, &chosen) {
        _ if args.no_self_test => report.add(Finding::new(
            "self-test",
            Status::Info,
            "skipped (--no-self-test): nothing was sent",
        ))?,
        (None, _) => report.add(
            Finding::new(
                "self-test",
                Status::Info,
                "skipped: the self-test sends only on an interface you name",
            )
            .hint("pass -i IF to join, send and receive a test frame on IF"),
        )?,
        (Some(_), None) => {}
        (Some(spec), Some(iface)) => {
            for finding in selftest::run(group, spec, iface, args.timeout) {
                report.add(finding)?;
            }
        }
    }
    match report.failed {
        0 => Ok(()),
        n => Err(
            CliError::new(format!("{n} check{} failed", if n == 1 { "" } else { "s" }))
                .hint("each failed finding above has a hint"),
        ),
    }
}

fn interface_finding(iface: &IfInfo, chosen: Option<&IfInfo>) -> Finding {
    let is_chosen = chosen.is_some_and(|c| c.name == iface.name);
    let mut flags = Vec::new();
    for (on, word) in [
        (iface.up, "UP"),
        (iface.running, "RUNNING"),
        (iface.multicast, "MULTICAST"),
        (iface.loopback, "LOOPBACK"),
    ] {
        if on {
            flags.push(word);
        }
    }
    let addrs: Vec<String> = iface.addrs.iter().map(IpAddr::to_string).collect();
    let message = format!(
        "{} (index {}) <{}> {}",
        iface.name,
        iface.index,
        flags.join(","),
        if addrs.is_empty() {
            "no addresses".to_owned()
        } else {
            addrs.join(" ")
        }
    );
    let mut finding = Finding::new("interface", Status::Info, message)
        .with("name", iface.name.clone())
        .with("index", iface.index)
        .with("flags", flags.clone())
        .with("addresses", addrs)
        .with("chosen", is_chosen);
    if !is_chosen {
        return finding;
    }
    // Linux delivers multicast on lo without the MULTICAST flag.
    finding.status = if !iface.up {
        finding = finding.hint(format!("bring it up: ip link set {} up", iface.name));
        Status::Fail
    } else if !iface.multicast && !iface.loopback {
        finding = finding.hint(format!(
            "turn multicast on: ip link set {} multicast on",
            iface.name
        ));
        Status::Fail
    } else if !iface.running {
        finding = finding.hint("no carrier: check the cable, the switch port or the peer");
        Status::Warn
    } else {
        Status::Ok
    };
    finding
}

/// The routing table's choice for the group (`ip route get`): the source
/// address a UDP socket connected to it gets, with and without -i's
/// interface as its multicast interface (as mcsec's sockets set it).
/// Returns the interface the table picks without -i.
fn route(
    report: &mut Report,
    group: Group,
    interfaces: &[IfInfo],
    chosen: Option<&IfInfo>,
) -> Result<Option<IfInfo>, CliError> {
    let ip = group.addr().ip();
    let add = if group.is_ipv6() {
        "ip -6 route add ff00::/8 dev"
    } else {
        "ip route add 224.0.0.0/4 dev"
    };
    let free = probe::route_source(group.addr());
    let routed = free.as_ref().ok().and_then(|local| {
        interfaces
            .iter()
            .find(|i| i.addrs.contains(&local.ip()))
            .cloned()
    });
    let name = routed.as_ref().map_or("?", |i| i.name.as_str());
    let finding = match (chosen, &free) {
        (None, Err(e)) => Finding::new(
            "route",
            Status::Fail,
            format!("the routing table has no route to {ip}: {e}"),
        )
        .hint(format!(
            "pass -i IF to send and recv, or add a route: {add} IF"
        )),
        (None, Ok(local)) => Finding::new(
            "route",
            Status::Ok,
            format!(
                "the routing table sends {ip} out of {name} (from {}), as `ip route get {ip}` \
                 would",
                local.ip()
            ),
        )
        .with("source", local.ip().to_string()),
        (Some(c), _) => match probe::route_source_via(group.addr(), c) {
            Err(e) => Finding::new(
                "route",
                Status::Fail,
                format!("the kernel refuses to send to {ip} on {}: {e}", c.name),
            )
            .hint(format!("add a route: {add} {}", c.name)),
            Ok(local) => {
                let via = format!("on {} (from {}) with -i", c.name, local.ip());
                match &free {
                    Err(e) => Finding::new(
                        "route",
                        Status::Warn,
                        format!(
                            "mcsec can send to {ip} {via}, but the routing table has no route \
                             to it without -i: {e}"
                        ),
                    )
                    .hint(format!(
                        "every sender and receiver here needs -i {0}; or add a route: {add} {0}",
                        c.name
                    )),
                    Ok(_) if name == c.name => Finding::new(
                        "route",
                        Status::Ok,
                        format!("mcsec sends to {ip} {via}, where the routing table sends it too"),
                    ),
                    Ok(_) => Finding::new(
                        "route",
                        Status::Info,
                        format!(
                            "mcsec sends to {ip} {via}; without -i the routing table would \
                             send it out of {name}"
                        ),
                    )
                    .hint(format!(
                        "every sender and receiver here needs -i {0} (or a route: {add} {0})",
                        c.name
                    )),
                }
                .with("source", local.ip().to_string())
            }
        },
    };
    report.add(finding.with("interface", name))?;
    Ok(routed)
}

fn rp_filter(iface: Option<&IfInfo>) -> Finding {
    let Some(iface) = iface else {
        return Finding::new(
            "rp_filter",
            Status::Info,
            "no interface to look at (no -i, no route)",
        );
    };
    let all = probe::sysctl("net/ipv4/conf/all/rp_filter");
    let own = probe::sysctl(&format!("net/ipv4/conf/{}/rp_filter", iface.name));
    let (Some(all), Some(own)) = (all, own) else {
        return Finding::new(
            "rp_filter",
            Status::Info,
            format!("could not read rp_filter for {}", iface.name),
        )
        .hint("is /proc/sys mounted?");
    };
    // The kernel uses the larger of conf/all and conf/IF (ip-sysctl.rst).
    let effective = all.max(own);
    let finding = |status, words: &str| {
        Finding::new(
            "rp_filter",
            status,
            format!(
                "{} on {} (all={all}, {}={own}): {words}",
                effective, iface.name, iface.name
            ),
        )
        .with("interface", iface.name.clone())
        .with("all", all)
        .with("interface_value", own)
        .with("effective", effective)
    };
    match effective {
        0 => finding(Status::Ok, "off"),
        2 => finding(
            Status::Ok,
            "loose: datagrams from any source with some route back pass",
        ),
        _ => finding(
            Status::Warn,
            "strict: a datagram whose source routes back out of another interface is dropped \
             silently",
        )
        .hint(format!(
            "if senders reach this host on {0} but are routed elsewhere, make it loose: \
             sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{0}.rp_filter=2",
            iface.name
        )),
    }
}

fn rmem(rcvbuf: Option<usize>) -> Finding {
    let wanted = rcvbuf.unwrap_or(RECOMMENDED_RCVBUF);
    let max = probe::sysctl("net/core/rmem_max");
    let default = probe::sysctl("net/core/rmem_default");
    let (Some(max), Some(default)) = (max, default) else {
        return Finding::new(
            "rmem",
            Status::Info,
            "could not read net.core.rmem_max and rmem_default",
        )
        .hint("is /proc/sys mounted?");
    };
    let finding = Finding::new(
        "rmem",
        Status::Ok,
        format!(
            "net.core.rmem_max is {max}, rmem_default {default}: recv gets {default} bytes of \
             receive buffer, and up to {max} with --rcvbuf"
        ),
    )
    .with("rmem_max", max)
    .with("rmem_default", default)
    .with("wanted", wanted);
    if max >= wanted as u64 {
        return finding;
    }
    let mut finding = finding.hint(format!(
        "raise the limit: sysctl -w net.core.rmem_max={wanted} (keep it in /etc/sysctl.d/), then \
         recv --rcvbuf {wanted}"
    ));
    finding.status = Status::Warn;
    finding.message.push_str(&format!(
        "; below {wanted}{}: a burst overflows the buffer and shows as kernel_drops",
        if rcvbuf.is_some() {
            " (--rcvbuf)"
        } else {
            ", what a busy feed wants"
        }
    ));
    finding
}

fn firewall(seen: &Firewall, group: Group) -> Finding {
    let port = group.addr().port();
    let ip = group.addr().ip();
    match seen {
        Firewall::Unknown(why) => {
            Finding::new("firewall", Status::Info, format!("could not tell: {why}")).hint(format!(
                "check by hand that UDP to {ip} port {port} is accepted on input (the self-test \
             shows whether it arrives)"
            ))
        }
        Firewall::Rules { tool, text } => {
            let suspects = probe::suspect_rules(text, ip, port);
            let mut finding = if suspects.is_empty() {
                Finding::new(
                    "firewall",
                    Status::Ok,
                    if text.trim().is_empty() || probe::accepts_all(text) {
                        format!("{tool}: no rules that drop")
                    } else {
                        format!("{tool}: no rule names {ip}, port {port} or drops all input")
                    },
                )
            } else {
                Finding::new(
                    "firewall",
                    Status::Warn,
                    format!(
                        "{tool}: {} rule{} may drop UDP to {ip} port {port}: {}",
                        suspects.len(),
                        if suspects.len() == 1 { "" } else { "s" },
                        suspects.join(" | ")
                    ),
                )
                .hint(format!(
                    "accept it before those rules, e.g. nft insert rule inet filter input \
                     ip daddr {ip} udp dport {port} accept (your table and chain names)"
                ))
            };
            finding = finding.with("tool", *tool).with("suspects", suspects);
            finding
        }
    }
}

/// IGMP (IPv4) or MLD (IPv6): the version in use, and whether snooping
/// without a querier may cut the stream.
fn igmp(group: Group, iface: Option<&IfInfo>) -> Vec<Finding> {
    let Some(iface) = iface else {
        return vec![Finding::new(
            "igmp",
            Status::Info,
            "no interface to look at (no -i, no route)",
        )];
    };
    let name = &iface.name;
    let (proto, version, evidence) = if group.is_ipv6() {
        let forced = probe::sysctl(&format!("net/ipv6/conf/{name}/force_mld_version"));
        let version = match forced {
            Some(1) => "MLDv1 (forced)".to_owned(),
            Some(2) => "MLDv2 (forced)".to_owned(),
            Some(_) => "MLDv2, or v1 if a v1 querier is heard".to_owned(),
            None => "unknown".to_owned(),
        };
        ("MLD", version, None)
    } else {
        let forced = probe::sysctl(&format!("net/ipv4/conf/{name}/force_igmp_version"))
            .filter(|v| *v != 0)
            .or_else(|| probe::sysctl("net/ipv4/conf/all/force_igmp_version"));
        let querier = probe::igmp_querier(name);
        let version = match (forced, &querier) {
            (Some(v), _) if v != 0 => format!("IGMPv{v} (forced: force_igmp_version={v})"),
            (_, Some(q)) => format!("IGMP{}", q.to_lowercase()),
            _ => "IGMP (version unknown)".to_owned(),
        };
        // Only an old-version querier leaves a trace here: the kernel
        // falls back to its version when it hears one.
        let heard = match (forced, querier.as_deref()) {
            (None | Some(0), Some(q @ ("V1" | "V2"))) => Some(q.to_owned()),
            _ => None,
        };
        ("IGMP", version, heard)
    };
    let mut out = vec![
        Finding::new(
            "igmp",
            Status::Info,
            format!("{proto} on {name}: {version}"),
        )
        .with("interface", name.clone())
        .with("version", version.clone()),
    ];
    let snooping = if iface.loopback {
        Finding::new(
            "querier",
            Status::Info,
            format!("{name} is loopback: no switch, so no snooping to worry about"),
        )
    } else if let Some(v) = evidence {
        Finding::new(
            "querier",
            Status::Ok,
            format!("an {proto}{} querier was heard on {name}", v.to_lowercase()),
        )
    } else {
        Finding::new(
            "querier",
            Status::Warn,
            format!(
                "could not tell whether {name}'s link has an {proto} querier: a switch that \
                 snoops {proto} without one forgets this host {MEMBERSHIP_INTERVAL_S} s (about \
                 4.5 minutes) after its last report, and the stream stops"
            ),
        )
        .hint(
            "run recv with --rejoin 60s (a fresh report every minute), or enable a querier on \
             the switch or router (Linux bridge: ip link set BRIDGE type bridge \
             mcast_querier 1)",
        )
    };
    out.push(snooping.with("interface", name.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Group {
        "239.255.1.2:5000".parse().unwrap()
    }

    #[test]
    fn a_rule_that_drops_the_group_or_port_is_suspect() {
        let nft = "table ip t {\n\tchain c {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tip daddr 239.255.1.2 drop\n\t}\n}\n";
        let f = firewall(
            &Firewall::Rules {
                tool: "nft",
                text: nft.into(),
            },
            group(),
        );
        assert_eq!(f.status, Status::Warn, "{f:?}");
        assert!(f.message.contains("ip daddr 239.255.1.2 drop"), "{f:?}");
        let other = nft.replace("239.255.1.2", "239.255.9.9");
        let f = firewall(
            &Firewall::Rules {
                tool: "nft",
                text: other,
            },
            group(),
        );
        assert_eq!(f.status, Status::Ok, "{f:?}");
        let port = "table inet f {\n chain i {\n  type filter hook input priority 0; policy accept;\n  udp dport 5000 reject\n }\n}\n";
        let f = firewall(
            &Firewall::Rules {
                tool: "nft",
                text: port.into(),
            },
            group(),
        );
        assert_eq!(f.status, Status::Warn, "{f:?}");
        let policy = "table inet f {\n chain i {\n  type filter hook input priority 0; policy drop;\n  tcp dport 22 accept\n }\n}\n";
        let f = firewall(
            &Firewall::Rules {
                tool: "nft",
                text: policy.into(),
            },
            group(),
        );
        assert_eq!(f.status, Status::Warn, "{f:?}");
        let accepted = policy.replace("tcp dport 22", "udp dport 5000");
        let f = firewall(
            &Firewall::Rules {
                tool: "nft",
                text: accepted,
            },
            group(),
        );
        assert_eq!(f.status, Status::Ok, "{f:?}");
        let ipt = "-P INPUT ACCEPT\n-A INPUT -p udp -m udp --dport 5000 -j DROP\n";
        let f = firewall(
            &Firewall::Rules {
                tool: "iptables",
                text: ipt.into(),
            },
            group(),
        );
        assert_eq!(f.status, Status::Warn, "{f:?}");
        let f = firewall(&Firewall::Unknown("nft: not found".into()), group());
        assert_eq!(f.status, Status::Info, "{f:?}");
        assert!(f.message.contains("could not tell"));
    }

    #[test]
    fn a_finding_is_one_json_object_with_its_hint() {
        let f = Finding::new("rmem", Status::Warn, "low")
            .hint("raise it")
            .with("rmem_max", 5);
        let j = f.json();
        assert_eq!(j["type"], "finding");
        assert_eq!(j["status"], "warn");
        assert_eq!(j["hint"], "raise it");
        assert_eq!(j["data"]["rmem_max"], 5);
        assert_eq!(f.text(), "warn  rmem: low\n      hint: raise it");
    }
}
