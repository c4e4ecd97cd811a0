//! What fits mcsec into a shell and a service manager, run as the real
//! binary: completions, the man page. Nothing here sends a packet.

use std::io::Write;
use std::process::{Command, Stdio};

use assert_cmd::cargo::cargo_bin_cmd;

fn mcsec() -> assert_cmd::Command {
    cargo_bin_cmd!("mcsec")
}

fn stdout_of(args: &[&str]) -> String {
    let out = mcsec().args(args).assert().success();
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

/// Whether `program` can be run at all (it may not be installed).
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs `program args`, feeding `input`; returns (success, stdout, stderr).
fn run_with_input(program: &str, args: &[&str], input: &[u8]) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SUBCOMMANDS: [&str; 9] = [
    "keygen",
    "key",
    "send",
    "recv",
    "chat",
    "relay",
    "signer",
    "completions",
    "man",
];

#[test]
fn completions_for_every_shell_name_the_subcommands_and_flags() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.len() > 500, "{shell}: {} bytes", script.len());
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} lacks {sub}");
        }
        // Flags of subcommands, not just the top level.
        for flag in ["max-datagram", "save-dir", "sign-every"] {
            assert!(script.contains(flag), "{shell} lacks --{flag}");
        }
    }
    assert!(
        mcsec()
            .args(["completions", "tcsh"])
            .assert()
            .code(2)
            .get_output()
            .stderr
            .starts_with(b"error:")
    );
}

#[test]
fn bash_completion_parses_and_completes_a_subcommand() {
    let script = stdout_of(&["completions", "bash"]);
    let (ok, _, err) = run_with_input("bash", &["-n"], script.as_bytes());
    assert!(ok, "bash -n: {err}");
    // Loaded into a shell, it completes `mcsec re` to `recv`.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mcsec.bash");
    std::fs::write(&path, &script).unwrap();
    let probe = format!(
        "source {}; COMP_WORDS=(mcsec re); COMP_CWORD=1; COMP_LINE='mcsec re'; COMP_POINT=8; \
         _mcsec mcsec re mcsec; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let (ok, out, err) = run_with_input("bash", &["-c", &probe], b"");
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l == "recv"), "{out:?} {err}");
}

#[test]
fn the_man_page_is_roff_that_man_renders() {
    let page = stdout_of(&["man"]);
    // The roff skeleton: a title line and the standard sections.
    assert!(page.contains(".TH mcsec 1"), "{page:.300}");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH SUBCOMMANDS",
    ] {
        assert!(page.contains(section), "no {section}");
    }
    for sub in SUBCOMMANDS {
        assert!(page.contains(&format!("mcsec\\-{sub}")), "man lacks {sub}");
    }
    // And a formatter takes it without complaint, if one is installed.
    let formatted = if have("groff") {
        let (ok, out, err) =
            run_with_input("groff", &["-man", "-Tutf8", "-ww", "-z"], page.as_bytes());
        assert!(ok, "groff: {err}");
        assert!(err.trim().is_empty(), "groff warns: {err}");
        let _ = out;
        let (ok, out, err) = run_with_input("groff", &["-man", "-Tutf8"], page.as_bytes());
        assert!(ok, "{err}");
        Some(out)
    } else {
        None
    };
    if let Some(text) = formatted {
        let plain: String = text.replace('\u{8}', "");
        assert!(
            plain.contains("Secure, authenticated UDP multicast"),
            "{plain:.500}"
        );
    }
}

#[test]
fn quiet_means_only_errors() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("group.key");
    let signer = dir.path().join("feed.signer");
    let key_s = key.to_str().unwrap();
    let signer_s = signer.to_str().unwrap();
    let quiet_runs: [&[&str]; 5] = [
        &["-q", "keygen", "-o", key_s],
        &["-q", "key", "rotate", key_s],
        &["-q", "keygen", "-o", "-"],
        &["-q", "signer", "new", "-o", signer_s],
        &["key", "rotate", "-q", key_s],
    ];
    for args in quiet_runs {
        let out = mcsec().args(args).assert().success();
        let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(err.is_empty(), "{args:?} printed {err:?}");
    }
    // Retiring the sending key: a note, silenced too; not the error for
    // a key ID that is not there.
    let ring = mcsec::Keyring::load(&key).unwrap();
    let id = ring.sending_key().id().to_string();
    let out = mcsec()
        .args(["-q", "key", "retire", key_s, &id])
        .assert()
        .success();
    assert!(out.get_output().stderr.is_empty());
    let out = mcsec()
        .args(["-q", "key", "retire", key_s, &id])
        .assert()
        .failure();
    assert!(
        String::from_utf8_lossy(&out.get_output().stderr).starts_with("error:"),
        "{out:?}"
    );
    // Without -q, the same commands do speak.
    let out = mcsec().args(["key", "rotate", key_s]).assert().success();
    assert!(!out.get_output().stderr.is_empty());
}

#[test]
fn help_lists_the_exit_statuses() {
    let help = stdout_of(&["--help"]);
    for line in [
        "Exit status:",
        "  0  ",
        "  1  ",
        "  2  ",
        "  3  recv --count N",
    ] {
        assert!(help.contains(line), "{line:?} not in --help:\n{help}");
    }
    assert!(stdout_of(&["recv", "--help"]).contains("Exit status"));
}

#[test]
fn help_names_the_environment_variable_of_each_service_option() {
    let recv = stdout_of(&["recv", "--help"]);
    for var in [
        "MCSEC_KEY",
        "MCSEC_GROUP",
        "MCSEC_INTERFACE",
        "MCSEC_CHANNEL",
        "MCSEC_TRUST",
        "MCSEC_MAX_DATAGRAM",
        "MCSEC_SAVE_DIR",
        "MCSEC_FORMAT",
        "MCSEC_RCVBUF",
    ] {
        assert!(
            recv.contains(&format!("[env: {var}=")),
            "recv --help lacks {var}"
        );
    }
    let send = stdout_of(&["send", "--help"]);
    for var in [
        "MCSEC_KEY",
        "MCSEC_GROUP",
        "MCSEC_SIGN",
        "MCSEC_TTL",
        "MCSEC_RATE",
    ] {
        assert!(
            send.contains(&format!("[env: {var}=")),
            "send --help lacks {var}"
        );
    }
}

/// An option shows only in the --help of the commands where it acts:
/// `--relay-rate-cap` asks the relay to cap what it sends a subscriber, so
/// `recv` has it and `send` (a publisher) does not, and refuses it.
#[test]
fn the_relay_rate_cap_is_a_receivers_option_only() {
    assert!(stdout_of(&["recv", "--help"]).contains("--relay-rate-cap <BITS>"));
    assert!(!stdout_of(&["send", "--help"]).contains("--relay-rate-cap"));
    let out = mcsec()
        .args(["send", "-g", "239.255.0.1:5000", "--relay-rate-cap", "1M"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(
        err.contains("unexpected argument '--relay-rate-cap'"),
        "{err}"
    );
}

/// Like systemd's `LoadCredential=` for a service running as `uid`: the
/// key file owned by root, mode 0400, plus an ACL `user:UID:r--` (mask
/// `r--`), in a root-owned directory no one else can write.
fn make_credential(path: &std::path::Path, uid: u32, group_read: bool) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let mut acl = 2u32.to_le_bytes().to_vec();
    let group_perm = if group_read { 4 } else { 0 };
    for (tag, perm, id) in [
        (0x01u16, 4u16, u32::MAX),
        (0x02, 4, uid),
        (0x04, group_perm, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    rustix::fs::setxattr(
        path,
        "system.posix_acl_access",
        &acl,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
}

#[test]
fn a_systemd_credential_key_file_is_accepted_for_its_user_alone() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 || !have("setpriv") {
        eprintln!("skipping: needs root and setpriv to act as a service user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = dir.path().join("group.key");
    mcsec()
        .args(["keygen", "-q", "-o"])
        .arg(&key)
        .assert()
        .success();
    make_credential(&key, 61000, false);
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o440);
    let as_user = |uid: u32| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                env!("CARGO_BIN_EXE_mcsec"),
                "key",
                "list",
            ])
            .arg(&key)
            .output()
            .unwrap()
    };
    let out = as_user(61000);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("send, receive"),
        "{out:?}"
    );
    // Another user cannot read it at all; to root, its owner, it is a
    // file that another user may read: refused, as mode 0440 is.
    assert!(!as_user(61001).status.success());
    mcsec().args(["key", "list"]).arg(&key).assert().failure();
    // An ACL that lets the owning group read too is refused, like mode 0440.
    make_credential(&key, 61000, true);
    let out = as_user(61000);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mode 0440"),
        "{out:?}"
    );
    // And so is the right ACL in a directory others may write.
    make_credential(&key, 61000, false);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(!as_user(61000).status.success());
}

fn contrib(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/systemd")
        .join(name)
}

#[test]
fn the_systemd_units_have_the_settings_a_service_needs_and_verify() {
    let units = ["mcsec-recv@.service", "mcsec-send@.service"];
    for unit in units {
        let text = std::fs::read_to_string(contrib(unit)).unwrap();
        let settings: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && l.contains('='))
            .collect();
        for wanted in [
            "Type=notify",
            "NotifyAccess=main",
            "WatchdogSec=30s",
            "EnvironmentFile=/etc/mcsec/%i.env",
            "LoadCredential=group.key:/etc/mcsec/%i.key",
            "Environment=MCSEC_KEY=%d/group.key",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
            "CapabilityBoundingSet=",
        ] {
            assert!(settings.contains(&wanted), "{unit} lacks {wanted}");
        }
        assert!(
            settings
                .iter()
                .any(|l| l.starts_with("ExecStart=/usr/bin/mcsec ")),
            "{unit}"
        );
    }
    // systemd's own check, where it is installed: no warning, no error.
    // It wants the binary to exist, so ExecStart points at the one built.
    if !have("systemd-analyze") {
        eprintln!("systemd-analyze not installed: checked the settings only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for unit in units {
        let text = std::fs::read_to_string(contrib(unit))
            .unwrap()
            .replace("/usr/bin/mcsec", env!("CARGO_BIN_EXE_mcsec"));
        let path = dir.path().join(unit.replace("@.", "@test."));
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

#[test]
fn every_variable_in_the_example_env_file_is_one_mcsec_reads() {
    let env = std::fs::read_to_string(contrib("ticker.env")).unwrap();
    let help = stdout_of(&["recv", "--help"]) + &stdout_of(&["send", "--help"]);
    let mut seen = 0;
    for line in env.lines() {
        let line = line.trim_start_matches('#');
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        if !name.starts_with("MCSEC_") || name == "MCSEC_SEND_ARGS" {
            continue;
        }
        assert!(
            help.contains(&format!("[env: {name}=")),
            "{name} is read by no option"
        );
        seen += 1;
    }
    assert!(seen >= 8, "{seen}");
}

/// `mcsec ARGS` fails at parsing: exit 2, `error:` first, and a hint that
/// contains `hint`. Nothing is opened: the key path need not exist.
fn usage_error(args: &[&str], hint: &str) {
    let out = mcsec().args(args).assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    let hint_line = err
        .lines()
        .find(|l| l.trim_start().starts_with("hint: "))
        .unwrap_or_else(|| panic!("{args:?}: no hint in {err}"));
    assert!(hint_line.contains(hint), "{args:?}: {hint_line:?}");
    assert!(out.get_output().stdout.is_empty());
}

#[test]
fn flags_from_iperf_and_mcjoin_get_a_hint() {
    let g = ["-k", "/nonexistent/k", "-g", "239.255.0.1:5000"];
    for sub in ["send", "recv"] {
        let with = |extra: &[&'static str]| [&[sub][..], &g, extra].concat();
        usage_error(&with(&["-p", "5000"]), "-g 239.255.0.1:5000");
        usage_error(&with(&["--port=5000"]), "-g 239.255.0.1:5000");
        usage_error(&with(&["-T", "4"]), "-t");
        usage_error(&with(&["-b", "10M"]), "--rate 100M");
    }
    // A flag nobody brings from elsewhere: clap's error, without a hint.
    let out = mcsec().args(["send", "--frobnicate"]).assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.starts_with("error: ") && !err.contains("hint:"),
        "{err}"
    );
}

#[test]
fn impossible_values_are_usage_errors_with_a_hint() {
    let send = |extra: &[&'static str]| [&["send", "-k", "/nonexistent/k"][..], extra].concat();
    let g = ["-g", "239.255.0.1:5000"];
    usage_error(
        &send(&[&g[..], &["--raw", "--chunk", "0"]].concat()),
        "--chunk",
    );
    usage_error(
        &send(&[&g[..], &["--max-datagram", "64"]].concat()),
        "between 81",
    );
    usage_error(
        &send(&[&g[..], &["--max-datagram", "65508"]].concat()),
        "65507",
    );
    usage_error(&send(&[&g[..], &["-t", "0"]].concat()), "-t 1");
    usage_error(&send(&[&g[..], &["-t", "256"]].concat()), "1 to 255");
    usage_error(&send(&["-g", "239.255.0.1:0"]), "every member uses");
    usage_error(&send(&["-g", "239.255.0.1:70000"]), "1 to 65535");
    for control in ["224.0.0.1:5000", "224.0.0.251:5353", "[ff02::1]:5000"] {
        usage_error(&send(&["-g", control]), "239.255.0.0/16");
        usage_error(&["recv", "-k", "k", "-g", control], "239.255.0.0/16");
    }
    // The smallest datagram that carries a fragment is accepted.
    let help_ok = mcsec()
        .args([
            "send",
            "-g",
            "239.255.0.1:5000",
            "--max-datagram",
            "81",
            "--help",
        ])
        .assert()
        .success();
    assert!(!help_ok.get_output().stdout.is_empty());
}
