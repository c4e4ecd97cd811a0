//! `mcsec doctor` and `recv --rejoin` (issue 12), each test in a network
//! namespace of its own: only lo (and its multicast route), or a veth pair
//! with addresses from 198.18.0.0/15 and no route for multicast; some with
//! an nftables table. doctor's self-test sends only on the interface named
//! by -i, here lo or the veth, so nothing leaves the namespace.
//!
//! Without the right to make a namespace, or without `ip` or `nft`, a test
//! fails, unless MCSEC_SKIP_NETNS=1 is set (then it says why and passes).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, keyfile, spawn};

/// `ip` and `nft` commands that build a namespace.
type Setup<'a> = &'a [(&'a str, &'a [&'a str])];

const LO: Setup<'static> = &[
    // Every test reads the firewall with nft (or makes rules with it).
    ("nft", &["list", "ruleset"]),
    ("ip", &["link", "set", "lo", "up"]),
    (
        "ip",
        &[
            "route",
            "add",
            "224.0.0.0/4",
            "dev",
            "lo",
            "src",
            "127.0.0.1",
        ],
    ),
];

/// lo up without a multicast route, and a veth pair dr0 (198.18.1.1,
/// 2001:2:1::1) and dr1 (198.18.1.2).
const VETH: Setup<'static> = &[
    ("nft", &["list", "ruleset"]),
    ("ip", &["link", "set", "lo", "up"]),
    (
        "ip",
        &["link", "add", "dr0", "type", "veth", "peer", "name", "dr1"],
    ),
    ("ip", &["link", "set", "dr0", "up"]),
    ("ip", &["link", "set", "dr1", "up"]),
    ("ip", &["addr", "add", "198.18.1.1/24", "dev", "dr0"]),
    ("ip", &["addr", "add", "198.18.1.2/24", "dev", "dr1"]),
    (
        "ip",
        &["-6", "addr", "add", "2001:2:1::1/64", "dev", "dr0", "nodad"],
    ),
];

/// Runs `f` on a thread of its own in a fresh network namespace built by
/// `setup`; the processes it starts are in it too.
fn in_netns<T: Send>(test: &str, setup: Setup<'_>, f: impl FnOnce() -> T + Send) -> Option<T> {
    let may_skip = std::env::var_os("MCSEC_SKIP_NETNS").is_some();
    let skip = |why: String| {
        assert!(
            may_skip,
            "{why}: run the tests as root with iproute2 and nftables (as CI does), or set \
             MCSEC_SKIP_NETNS=1 to skip {test}"
        );
        eprintln!("skipping {test} (MCSEC_SKIP_NETNS is set): {why}");
    };
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                skip(format!("unshare(CLONE_NEWNET) failed (not root?): {e}"));
                return None;
            }
            for (cmd, args) in setup {
                let out = match Command::new(cmd).args(*args).output() {
                    Ok(out) => out,
                    Err(e) => {
                        skip(format!("cannot run {cmd}: {e}"));
                        return None;
                    }
                };
                assert!(
                    out.status.success(),
                    "{cmd} {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Some(f())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sets a sysctl of this namespace (`net.ipv4.conf.lo.rp_filter`), by
/// writing its file under /proc/sys.
fn sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// `mcsec doctor ARGS --format json`: exit code and findings.
fn doctor_json(args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let out = Command::new(BIN)
        .arg("doctor")
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let findings = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        findings,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one finding of `check` (the first, for interface).
fn finding<'a>(findings: &'a [serde_json::Value], check: &str) -> &'a serde_json::Value {
    findings
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding in {findings:#?}"))
}

#[test]
fn doctor_reports_a_namespace_with_only_lo_in_text_and_json() {
    let g = "239.255.130.1:46301";
    in_netns("doctor_reports...", LO, || {
        let out = Command::new(BIN)
            .args(["doctor", "-g", g, "-i", "lo"])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in text.lines().filter(|l| !l.starts_with("      hint: ")) {
            let (status, rest) = line.split_once(' ').unwrap();
            assert!(
                ["ok", "info", "warn"].contains(&status),
                "{line:?} in\n{text}"
            );
            assert!(rest.trim_start().contains(": "), "{line:?}");
        }
        assert!(
            text.contains("ok    interface: lo (index 1) <UP,RUNNING,LOOPBACK>"),
            "{text}"
        );
        assert!(
            text.contains("ok    self-test: joined 239.255.130.1:46301 on lo"),
            "{text}"
        );

        let (code, findings, err) = doctor_json(&["-g", g, "-i", "lo"]);
        assert_eq!(code, 0, "{findings:#?} {err}");
        let checks: Vec<&str> = findings
            .iter()
            .map(|f| f["check"].as_str().unwrap())
            .collect();
        for want in [
            "interface",
            "route",
            "rp_filter",
            "rmem",
            "firewall",
            "igmp",
            "querier",
            "membership",
            "self-test",
        ] {
            assert!(checks.contains(&want), "{want} missing from {checks:?}");
        }
        for f in &findings {
            assert_eq!(f["type"], "finding");
            assert!(
                ["ok", "info", "warn"].contains(&f["status"].as_str().unwrap()),
                "{f}"
            );
            assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()), "{f}");
            assert!(f["hint"].is_null() || f["hint"].is_string(), "{f}");
        }
        let lo = finding(&findings, "interface");
        assert_eq!(lo["status"], "ok", "-i lo is the chosen one: {lo}");
        assert_eq!(lo["data"]["chosen"], true);
        assert_eq!(finding(&findings, "route")["data"]["interface"], "lo");
        assert_eq!(finding(&findings, "membership")["status"], "ok");
        // nft is there, and the namespace has no rules.
        let fw = finding(&findings, "firewall");
        assert_eq!(
            (fw["status"].as_str(), fw["data"]["tool"].as_str()),
            (Some("ok"), Some("nft")),
            "{fw}"
        );
        // lo: no switch to snoop.
        assert_eq!(finding(&findings, "querier")["status"], "info");
    });
}

#[test]
fn a_firewall_that_drops_the_group_fails_the_self_test_with_a_hint() {
    let g = "239.255.130.2:46302";
    let drop = [
        ("nft", &["add", "table", "ip", "t"][..]),
        (
            "nft",
            &[
                "add",
                "chain",
                "ip",
                "t",
                "c",
                "{ type filter hook input priority 0; }",
            ][..],
        ),
        (
            "nft",
            &[
                "add",
                "rule",
                "ip",
                "t",
                "c",
                "ip",
                "daddr",
                "239.255.130.2",
                "drop",
            ][..],
        ),
    ];
    let setup: Vec<(&str, &[&str])> = LO.iter().copied().chain(drop).collect();
    in_netns("a_firewall_that_drops...", &setup, || {
        let (code, findings, err) = doctor_json(&["-g", g, "-i", "lo", "--timeout", "600ms"]);
        assert_eq!(code, 1, "a failed check exits 1: {findings:#?}");
        assert!(err.contains("error: 1 check failed"), "{err}");
        let test = finding(&findings, "self-test");
        assert_eq!(test["status"], "fail", "{test}");
        assert_eq!(test["data"]["sent"], 3, "{test}");
        let hint = test["hint"].as_str().unwrap();
        assert!(
            hint.contains("firewall") && hint.contains("46302"),
            "{hint}"
        );
        let fw = finding(&findings, "firewall");
        assert_eq!(fw["status"], "warn", "{fw}");
        assert!(
            fw["message"]
                .as_str()
                .unwrap()
                .contains("ip daddr 239.255.130.2 drop"),
            "{fw}"
        );
        // Another group on the same host passes.
        let (code, findings, _) = doctor_json(&["-g", "239.255.130.3:46302", "-i", "lo"]);
        assert_eq!(code, 0, "{findings:#?}");
        assert_eq!(finding(&findings, "self-test")["status"], "ok");
    });
}

#[test]
fn the_rp_filter_finding_reads_the_namespace_value() {
    let g = "239.255.130.4:46304";
    in_netns("the_rp_filter_finding...", LO, || {
        let rp = || {
            let (_, findings, _) = doctor_json(&["-g", g, "-i", "lo", "--no-self-test"]);
            finding(&findings, "rp_filter").clone()
        };
        sysctl("net.ipv4.conf.all.rp_filter", "1");
        let strict = rp();
        assert_eq!(strict["status"], "warn", "{strict}");
        assert_eq!(strict["data"]["effective"], 1);
        assert!(
            strict["hint"].as_str().unwrap().contains("rp_filter=2"),
            "{strict}"
        );
        sysctl("net.ipv4.conf.all.rp_filter", "0");
        sysctl("net.ipv4.conf.lo.rp_filter", "2");
        let loose = rp();
        assert_eq!(loose["status"], "ok", "{loose}");
        assert_eq!(loose["data"]["effective"], 2);
        assert_eq!(loose["data"]["interface_value"], 2);
        sysctl("net.ipv4.conf.lo.rp_filter", "0");
        assert_eq!(rp()["data"]["effective"], 0);
    });
}

#[test]
fn the_rmem_finding_reads_rmem_max_and_says_what_to_set() {
    let g = "239.255.130.5:46305";
    in_netns("the_rmem_finding...", LO, || {
        // Read-only in a namespace on recent kernels: compare with it.
        let max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let rmem = |bytes: u64| {
            let b = bytes.to_string();
            let (_, findings, _) =
                doctor_json(&["-g", g, "-i", "lo", "--no-self-test", "--rcvbuf", &b]);
            finding(&findings, "rmem").clone()
        };
        let fits = rmem(max / 2);
        assert_eq!(fits["status"], "ok", "{fits}");
        assert_eq!(fits["data"]["rmem_max"], max);
        let over = rmem(max * 2);
        assert_eq!(over["status"], "warn", "{over}");
        assert_eq!(over["data"]["rmem_max"], max);
        let want = format!("sysctl -w net.core.rmem_max={}", max * 2);
        assert!(over["hint"].as_str().unwrap().contains(&want), "{over}");
    });
}

#[test]
fn doctor_on_a_veth_without_a_multicast_route() {
    let g = "239.255.130.6:46306";
    in_netns("doctor_on_a_veth...", VETH, || {
        sysctl("net.ipv4.conf.dr0.force_igmp_version", "2");
        let (code, findings, err) = doctor_json(&["-g", g, "-i", "dr0"]);
        assert_eq!(code, 0, "{findings:#?} {err}");
        let route = finding(&findings, "route");
        assert_eq!(route["status"], "warn", "-i makes up for it: {route}");
        assert!(
            route["hint"]
                .as_str()
                .unwrap()
                .contains("ip route add 224.0.0.0/4")
        );
        let chosen = findings
            .iter()
            .find(|f| f["check"] == "interface" && f["data"]["chosen"] == true)
            .unwrap();
        assert_eq!(chosen["data"]["name"], "dr0");
        assert_eq!(chosen["status"], "ok");
        let igmp = finding(&findings, "igmp");
        assert!(
            igmp["message"].as_str().unwrap().contains("IGMPv2 (forced"),
            "{igmp}"
        );
        let querier = finding(&findings, "querier");
        assert_eq!(querier["status"], "warn", "{querier}");
        assert!(
            querier["hint"].as_str().unwrap().contains("--rejoin"),
            "{querier}"
        );
        assert_eq!(finding(&findings, "self-test")["status"], "ok");
        assert_eq!(finding(&findings, "membership")["status"], "ok");

        // No -i and no route: the route fails, and nothing is sent.
        let (code, findings, _) = doctor_json(&["-g", g]);
        assert_eq!(code, 1);
        assert_eq!(finding(&findings, "route")["status"], "fail");
        let test = finding(&findings, "self-test");
        assert_eq!(test["status"], "info", "{test}");
        assert!(test["hint"].as_str().unwrap().contains("-i IF"));

        // An interface that is not there.
        let (code, findings, _) = doctor_json(&["-g", g, "-i", "nosuch0"]);
        assert_eq!(code, 1);
        let bad = finding(&findings, "interface");
        assert_eq!(bad["status"], "fail", "{bad}");
        assert!(bad["hint"].as_str().unwrap().contains("ip addr"));
    });
}

#[test]
fn doctor_on_ipv6_reads_mld_and_igmp6() {
    in_netns("doctor_on_ipv6...", VETH, || {
        // lo has no IPv6 multicast route: mcsec could not send there.
        let (code, findings, _) = doctor_json(&["-g", "[ff15::130:9]:46309", "-i", "lo"]);
        assert_eq!(code, 1, "{findings:#?}");
        let route = finding(&findings, "route");
        assert_eq!(route["status"], "fail", "{route}");
        assert!(
            route["hint"]
                .as_str()
                .unwrap()
                .contains("ip -6 route add ff00::/8 dev lo"),
            "{route}"
        );
        // The veth: sends with -i, membership listed in /proc/net/igmp6.
        let (code, findings, err) = doctor_json(&["-g", "[ff15::130:9]:46309", "-i", "dr0"]);
        assert_eq!(code, 0, "{findings:#?} {err}");
        // Whether the table also routes ff00::/8 there without -i depends
        // on when the kernel added the interface's multicast route.
        let route = finding(&findings, "route");
        assert_ne!(route["status"], "fail", "{route}");
        assert!(
            route["message"]
                .as_str()
                .unwrap()
                .contains("on dr0 (from 2001:2:1::1) with -i"),
            "{route}"
        );
        assert!(
            finding(&findings, "igmp")["message"]
                .as_str()
                .unwrap()
                .starts_with("MLD on dr0")
        );
        assert_eq!(finding(&findings, "membership")["status"], "ok");
        assert_eq!(finding(&findings, "self-test")["status"], "ok");
        assert!(findings.iter().all(|f| f["check"] != "rp_filter"));
    });
}

/// IGMP datagrams this namespace has sent so far (an nftables counter on
/// output, made by [`count_igmp`]).
fn igmp_sent() -> u64 {
    let out = Command::new("nft")
        .args(["list", "chain", "ip", "mcast", "out"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let after = text
        .split("counter packets ")
        .nth(1)
        .unwrap_or_else(|| panic!("no counter in {text}"));
    after.split_whitespace().next().unwrap().parse().unwrap()
}

fn count_igmp() {
    run("nft", &["add", "table", "ip", "mcast"]);
    run(
        "nft",
        &[
            "add",
            "chain",
            "ip",
            "mcast",
            "out",
            "{ type filter hook output priority 0; }",
        ],
    );
    run(
        "nft",
        &[
            "add", "rule", "ip", "mcast", "out", "ip", "protocol", "igmp", "counter",
        ],
    );
}

#[test]
fn recv_rejoin_sends_fresh_reports_and_keeps_receiving() {
    let g = "239.255.130.7:46307";
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    in_netns("recv_rejoin...", VETH, || {
        // IGMPv2: a report on each join and a leave on each leave, at once.
        sysctl("net.ipv4.conf.dr0.force_igmp_version", "2");
        count_igmp();
        let listen = |extra: &[&str]| {
            let mut args = vec!["recv", "-v", "-g", g, "-i", "dr0", "--duration", "2s"];
            args.extend_from_slice(extra);
            let p = spawn(&args, &key);
            p.wait_err("receiving on");
            p
        };
        let before = igmp_sent();
        let (status, _, err) = listen(&[]).finish();
        assert!(status.success(), "{err:?}");
        let plain = igmp_sent() - before;

        let before = igmp_sent();
        let p = listen(&["--rejoin", "200ms", "-vv"]);
        // Still hears the group between rejoins.
        std::thread::sleep(Duration::from_millis(900));
        let send = spawn(
            &[
                "send",
                "-g",
                g,
                "-i",
                "dr0",
                "-t",
                "1",
                "-m",
                "after rejoins",
            ],
            &key,
        );
        let (status, _, err) = send.finish();
        assert!(status.success(), "{err:?}");
        let (status, out, err) = p.finish();
        assert!(status.success(), "{err:?}");
        let rejoining = igmp_sent() - before;
        assert_eq!(out, ["after rejoins"], "{err:?}");
        assert!(
            err.iter().filter(|l| l.contains("left and joined")).count() >= 5,
            "{err:?}"
        );
        assert!(
            rejoining >= plain + 8,
            "IGMP sent: {rejoining} with --rejoin 200ms, {plain} without"
        );
    });
}

#[test]
fn recv_rejoin_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let out = Command::new(BIN)
        .args(["recv", "-g", "239.255.130.8:46308", "--rejoin", "0s", "-k"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--rejoin 0") && err.contains("hint: "),
        "{err}"
    );
}

/// --rejoin for the other kinds of join: IPv4 source-specific (on lo),
/// IPv6 any-source and IPv6 source-specific (on the veth). Each leaves and
/// joins without a warning and still hears its group afterwards.
#[test]
fn recv_rejoin_works_for_source_specific_and_ipv6_joins() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "k");
    let setup: Vec<(&str, &[&str])> = VETH.iter().copied().chain([LO[2]]).collect();
    in_netns("recv_rejoin_works...", &setup, || {
        let cases: [(&str, &str, &[&str]); 3] = [
            ("232.1.130.10:46310", "127.0.0.1", &["-s", "127.0.0.1"]),
            ("[ff15::130:10]:46311", "dr0", &[]),
            ("[ff15::130:10]:46312", "dr0", &["-s", "2001:2:1::1"]),
        ];
        for (g, iface, extra) in cases {
            let mut args = vec!["recv", "-vv", "-g", g, "-i", iface, "--duration", "1500ms"];
            args.extend_from_slice(&["--rejoin", "200ms"]);
            args.extend_from_slice(extra);
            let p = spawn(&args, &key);
            p.wait_err("receiving on");
            std::thread::sleep(Duration::from_millis(900));
            let send = spawn(&["send", "-q", "-g", g, "-i", iface, "-m", "late"], &key);
            let (status, _, err) = send.finish();
            assert!(status.success(), "{g}: {err:?}");
            let (status, out, err) = p.finish();
            assert!(status.success(), "{g}: {err:?}");
            assert_eq!(out, ["late"], "{g}: {err:?}");
            assert!(
                err.iter().filter(|l| l.contains("left and joined")).count() >= 4,
                "{g}: {err:?}"
            );
            assert!(err.iter().all(|l| !l.contains("--rejoin:")), "{g}: {err:?}");
        }
    });
}
