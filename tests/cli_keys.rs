//! `mcsec keygen` and `mcsec key`, run as the real binary.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

mod common;

use assert_cmd::cargo::cargo_bin_cmd;
use common::reference_impl;
use mcsec::Keyring;
use predicates::prelude::*;

fn mcsec() -> assert_cmd::Command {
    cargo_bin_cmd!("mcsec")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn secret_hex(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("mcsec-key-v1 "))
        .map(|l| l.split(' ').nth(2).unwrap().to_owned())
        .collect()
}

#[test]
fn keygen_writes_a_private_key_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("group.key");
    let out = mcsec().args(["keygen", "-o"]).arg(&key).assert().success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(mode(&key), 0o600);
    let ring = Keyring::load(&key).unwrap();
    assert!(
        stderr.contains(&ring.sending_key().id().to_string()),
        "{stderr}"
    );
    assert!(out.get_output().stdout.is_empty());
    // The secret is nowhere in what was printed.
    let secret = &secret_hex(&key)[0];
    assert!(!stderr.contains(secret.as_str()));

    let before = fs::read(&key).unwrap();
    mcsec()
        .args(["keygen", "-o"])
        .arg(&key)
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"))
        .stderr(predicate::str::contains("hint: pass --force"));
    assert_eq!(fs::read(&key).unwrap(), before);

    mcsec()
        .args(["keygen", "--force", "-o"])
        .arg(&key)
        .assert()
        .success();
    assert_ne!(fs::read(&key).unwrap(), before);
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn keygen_to_stdout_only_when_asked() {
    let out = mcsec().args(["keygen", "-o", "-"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let ring = Keyring::parse(&text).unwrap();
    assert_eq!(ring.len(), 1);
    // Without -o it is a usage error (exit 2), not a key on the terminal.
    mcsec().arg("keygen").assert().code(2).stdout("");
}

#[test]
fn key_list_rotate_retire() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    mcsec().args(["keygen", "-o"]).arg(&key).assert().success();
    let first = Keyring::load(&key).unwrap().sending_key().id().to_string();

    mcsec().args(["key", "rotate"]).arg(&key).assert().success();
    assert_eq!(mode(&key), 0o600);
    let ring = Keyring::load(&key).unwrap();
    let second = ring.sending_key().id().to_string();
    assert_ne!(first, second);

    let out = mcsec().args(["key", "list"]).arg(&key).assert().success();
    let list = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[1].starts_with(&first) && lines[1].ends_with(" receive"),
        "{list}"
    );
    assert!(
        lines[2].starts_with(&second) && lines[2].ends_with("send, receive"),
        "{list}"
    );
    for secret in secret_hex(&key) {
        assert!(!list.contains(&secret));
    }

    mcsec()
        .args(["key", "retire"])
        .arg(&key)
        .arg(&first)
        .assert()
        .success();
    let ring = Keyring::load(&key).unwrap();
    assert_eq!(ring.len(), 1);
    assert_eq!(ring.sending_key().id().to_string(), second);

    mcsec()
        .args(["key", "retire"])
        .arg(&key)
        .arg("nothex!!")
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a key ID"));
    mcsec()
        .args(["key", "retire"])
        .arg(&key)
        .arg(&second)
        .assert()
        .failure()
        .stderr(predicate::str::contains("only key"));
}

#[test]
fn rotate_keeps_a_0400_mode() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    mcsec().args(["keygen", "-o"]).arg(&key).assert().success();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
    mcsec().args(["key", "rotate"]).arg(&key).assert().success();
    assert_eq!(mode(&key), 0o400);
    assert_eq!(Keyring::load(&key).unwrap().len(), 2);
}

#[test]
fn open_key_file_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    mcsec().args(["keygen", "-o"]).arg(&key).assert().success();
    for bad in [0o644, 0o640, 0o604] {
        fs::set_permissions(&key, fs::Permissions::from_mode(bad)).unwrap();
        mcsec()
            .args(["key", "list"])
            .arg(&key)
            .assert()
            .failure()
            .stdout("")
            .stderr(predicate::str::contains(format!("mode {bad:04o}")))
            .stderr(predicate::str::contains(format!(
                "hint: restrict it to its owner: chmod 600 {}",
                key.display()
            )));
    }
}

#[test]
fn corrupt_key_file_errors_name_the_line_not_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    mcsec().args(["keygen", "-o"]).arg(&key).assert().success();
    let text = fs::read_to_string(&key).unwrap();
    let secret = secret_hex(&key).remove(0);
    // Change one hex digit of the secret: the derived key ID no longer matches.
    let flipped = if secret.starts_with('0') { "1" } else { "0" };
    let corrupt = text.replacen(&secret, &format!("{flipped}{}", &secret[1..]), 1);
    fs::write(&key, corrupt).unwrap();
    let out = mcsec().args(["key", "list"]).arg(&key).assert().failure();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("line 3: the key ID does not match"),
        "{stderr}"
    );
    assert!(!stderr.contains(&secret[1..]), "{stderr}");
}

#[test]
fn missing_key_file_suggests_keygen() {
    mcsec()
        .args(["key", "list", "/nonexistent/group.key"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "hint: create a key with: mcsec keygen -o",
        ));
}

/// `mcsec keygen`'s file is accepted by an independent implementation of
/// PROTOCOL.md (tests/interop/mcsec_ref.py, written from the spec alone),
/// and both derive the same key IDs.
#[test]
fn keygen_file_is_accepted_by_the_reference_implementation() {
    let Some(script) = reference_impl() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    mcsec().args(["keygen", "-o"]).arg(&key).assert().success();
    mcsec().args(["key", "rotate"]).arg(&key).assert().success();
    let ring = Keyring::load(&key).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg("check-keyfile")
        .arg(&key)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = ring.iter().map(|k| k.id().to_string()).collect();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&ids[0]) && !lines[0].contains("send"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&ids[1]) && lines[1].ends_with("send"),
        "{stdout}"
    );
}

/// `key list` shows a created= stamp as written, for every year the grammar
/// allows: it panicked on stamps before 1970 (found by the interop work).
#[test]
fn key_list_shows_any_stamp_the_grammar_allows() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("old.key");
    let a = mcsec::GroupKey::new(mcsec::GroupSecret::from_bytes([1; 32]), None);
    let b = mcsec::GroupKey::new(mcsec::GroupSecret::from_bytes([2; 32]), None);
    let text = format!(
        "{} created=0000-01-01T00:00:00Z\n{} created=1969-12-31T23:59:59.5Z\n",
        *a.to_line(),
        *b.to_line()
    );
    fs::write(&key, text).unwrap();
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = mcsec().args(["key", "list"]).arg(&key).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("0000-01-01T00:00:00Z"), "{stdout}");
    assert!(stdout.contains("1969-12-31T23:59:59.5Z"), "{stdout}");
}

/// The future bound may not exceed the past one (found in review: `recv
/// --max-skew 1s --max-future-skew 1h` let a key holder hold a table slot
/// for an hour). Refused before any socket is opened.
#[test]
fn recv_refuses_a_future_skew_above_the_past_skew() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    mcsec().args(["keygen", "-o"]).arg(&key).assert().success();
    let out = mcsec()
        .args(["recv", "-g", "239.255.0.1:5000", "-i", "lo"])
        .args(["--max-skew", "1s", "--max-future-skew", "1h", "-k"])
        .arg(&key)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains("--max-future-skew 1h is more than --max-skew 1s"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

/// Every vector file checks out against the independent implementation too.
#[test]
fn vectors_check_out_against_the_reference_implementation() {
    let Some(script) = reference_impl() else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let out = Command::new("python3")
        .arg(&script)
        .arg("check-vectors")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    let txt = |d: &Path| {
        fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "txt")
            })
            .count()
    };
    // Single-frame cases, session cases, manifests and signed sessions.
    let count = txt(&dir)
        + txt(&dir.join("sessions"))
        + txt(&dir.join("manifests"))
        + txt(&dir.join("signed"));
    assert!(txt(&dir.join("manifests")) > 0 && txt(&dir.join("signed")) > 0);
    assert!(count > 30, "{count}");
    assert!(
        stdout.contains(&format!("{count} passed, 0 failed")),
        "{stdout}"
    );
}

/// The independent implementation's own self-test (RFC 8439 and RFC 5869
/// vectors, framing, receive order) passes, so the checks above rest on
/// a reference that is itself checked. CI runs it too (.ci/run).
#[test]
fn the_reference_implementation_passes_its_self_test() {
    let Some(script) = reference_impl() else {
        return;
    };
    let out = Command::new("python3")
        .arg(&script)
        .arg("selftest")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    let passed: u32 = summary
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'N passed, 0 failed' line: {stdout}"));
    assert!(passed > 0, "{stdout}");
}

/// Regression: an error whose text merely contained "Broken pipe" (here, in
/// a path) used to exit 0 silently.
#[test]
fn only_a_real_broken_pipe_exits_zero() {
    mcsec()
        .args(["key", "rotate", "/nonexistent/Broken pipe/k"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("error:"));
}

fn owner(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).unwrap().uid()
}

/// A test that needs root fails without it, unless the run opts out with
/// MCSEC_SKIP_ROOT=1.
fn skip_without_root(what: &str) {
    assert!(
        std::env::var_os("MCSEC_SKIP_ROOT").is_some(),
        "{what} needs root: run the tests as root (as CI does), or set MCSEC_SKIP_ROOT=1 to skip it"
    );
    eprintln!("skipping {what} (MCSEC_SKIP_ROOT is set): needs root");
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of a file we just made is our effective user ID.
    let probe = tempfile::NamedTempFile::new().unwrap();
    fs::metadata(probe.path()).unwrap().uid() == 0
}

/// Runs the real binary as user and group 12345 (util-linux `setpriv`), or
/// `None` when we cannot switch users: not root, or no setpriv.
fn mcsec_as_other_user() -> Option<Command> {
    if !is_root() {
        skip_without_root("switching users");
        return None;
    }
    let probe = Command::new("setpriv")
        .args([
            "--reuid",
            "12345",
            "--regid",
            "12345",
            "--clear-groups",
            "true",
        ])
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        skip_without_root("switching users with setpriv (util-linux)");
        return None;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", "12345", "--regid", "12345", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_mcsec"));
    Some(cmd)
}

/// Finding 1: `keygen --force` followed a symlink and wrote the new secret
/// into whatever it pointed at. It now refuses the link and touches neither
/// the link nor its target, dangling or not.
#[test]
fn keygen_force_refuses_a_symlink_and_leaves_its_target_alone() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.key");
    mcsec().args(["keygen", "-o"]).arg(&real).assert().success();
    let before = fs::read(&real).unwrap();
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let dangling = dir.path().join("dangling.key");
    let nowhere = dir.path().join("nowhere.key");
    std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
    for path in [&link, &dangling] {
        mcsec()
            .args(["keygen", "--force", "-o"])
            .arg(path)
            .assert()
            .failure()
            .stdout("")
            .stderr(predicate::str::contains(format!(
                "{}: is a symbolic link",
                path.display()
            )))
            .stderr(predicate::str::contains("hint: "));
        assert!(fs::symlink_metadata(path).unwrap().is_symlink());
    }
    assert_eq!(fs::read(&real).unwrap(), before);
    assert!(!nowhere.exists());
    // Not a regular file: refused too.
    mcsec()
        .args(["keygen", "--force", "-o"])
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a regular file"))
        .stderr(predicate::str::contains("hint: "));
}

/// Finding 1: as root, `keygen --force` over a file that user 12345 owns
/// used to write the new secret and hand the file back to 12345. Whoever
/// owns the old file could then read the new key. It is refused, and the
/// file is left as it was.
#[test]
fn keygen_force_refuses_a_file_another_user_owns() {
    if !is_root() {
        skip_without_root("giving a file away");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    mcsec().args(["keygen", "-o"]).arg(&key).assert().success();
    std::os::unix::fs::chown(&key, Some(12345), Some(12345)).unwrap();
    let before = fs::read(&key).unwrap();
    mcsec()
        .args(["keygen", "--force", "-o"])
        .arg(&key)
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!(
            "{}: key file is owned by user 12345",
            key.display()
        )))
        .stderr(predicate::str::contains("hint: "));
    assert_eq!(fs::read(&key).unwrap(), before);
    assert_eq!(owner(&key), 12345);
}

/// Finding 1, as an ordinary user (12345): `--force` replaces a file of
/// its own or one of root's, and the new file is the caller's, mode 0600,
/// whatever the old one's owner and mode; another user's file is refused.
#[test]
fn keygen_force_makes_the_new_file_the_callers_with_mode_0600() {
    let Some(_) = mcsec_as_other_user() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(12345), Some(12345)).unwrap();
    for (old_owner, old_mode) in [(0, 0o400), (12345, 0o640), (12345, 0o600)] {
        let key = dir.path().join(format!("k-{old_owner}-{old_mode:o}"));
        mcsec().args(["keygen", "-o"]).arg(&key).assert().success();
        let before = fs::read(&key).unwrap();
        std::os::unix::fs::chown(&key, Some(old_owner), Some(old_owner)).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(old_mode)).unwrap();
        let out = mcsec_as_other_user()
            .unwrap()
            .args(["keygen", "--force", "-o"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{old_owner} {old_mode:o}: {out:?}");
        assert_eq!(owner(&key), 12345, "{old_owner} {old_mode:o}");
        assert_eq!(mode(&key), 0o600, "{old_owner} {old_mode:o}");
        assert_ne!(fs::read(&key).unwrap(), before);
        assert_eq!(
            Keyring::parse(&fs::read_to_string(&key).unwrap())
                .unwrap()
                .len(),
            1
        );
    }
    // Someone else's file (neither the caller's nor root's): refused.
    let theirs = dir.path().join("theirs");
    mcsec()
        .args(["keygen", "-o"])
        .arg(&theirs)
        .assert()
        .success();
    std::os::unix::fs::chown(&theirs, Some(23456), Some(23456)).unwrap();
    let before = fs::read(&theirs).unwrap();
    let out = mcsec_as_other_user()
        .unwrap()
        .args(["keygen", "--force", "-o"])
        .arg(&theirs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("owned by user 23456"), "{stderr}");
    assert_eq!(fs::read(&theirs).unwrap(), before);
    assert_eq!(owner(&theirs), 23456);
}

/// The seed of a signing key file, as written.
fn signer_seed(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("mcsec-signer-v1 "))
        .map(|l| l.split(' ').nth(2).unwrap().to_owned())
        .unwrap()
}

#[test]
fn signer_new_writes_a_private_key_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.signer");
    let out = mcsec()
        .args(["signer", "new", "-o"])
        .arg(&file)
        .assert()
        .success();
    assert_eq!(mode(&file), 0o600);
    let key = mcsec::signed::SignerKey::load(&file).unwrap();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains(&key.id().to_string()), "{stderr}");
    assert!(stderr.contains("mcsec signer public"), "{stderr}");
    assert!(out.get_output().stdout.is_empty());
    let seed = signer_seed(&file);
    assert!(!stderr.contains(&seed), "{stderr}");

    let before = fs::read(&file).unwrap();
    mcsec()
        .args(["signer", "new", "-o"])
        .arg(&file)
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"))
        .stderr(predicate::str::contains("hint: pass --force"));
    assert_eq!(fs::read(&file).unwrap(), before);

    mcsec()
        .args(["signer", "new", "--force", "-o"])
        .arg(&file)
        .assert()
        .success();
    assert_ne!(fs::read(&file).unwrap(), before);
    assert_ne!(signer_seed(&file), seed);
    assert_eq!(mode(&file), 0o600);
}

/// `signer public` prints one trust line, named after the file or --name,
/// that the trust-file parser takes (recv --trust is driven with such a
/// line in tests/signed_net.rs), and no secret.
#[test]
fn signer_public_prints_a_trust_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.signer");
    mcsec()
        .args(["signer", "new", "-o"])
        .arg(&file)
        .assert()
        .success();
    let key = mcsec::signed::SignerKey::load(&file).unwrap();
    let public = |extra: &[&str], file: &Path| {
        let out = mcsec()
            .args(["signer", "public"])
            .args(extra)
            .arg(file)
            .assert()
            .success();
        String::from_utf8(out.get_output().stdout.clone()).unwrap()
    };
    let line = public(&[], &file);
    assert_eq!(line, format!("{}\n", key.trust_line(Some("feed"))));
    assert!(!line.contains(&signer_seed(&file)), "{line}");
    let trust = mcsec::signed::TrustList::parse(&line).unwrap();
    assert_eq!(trust.keys().len(), 1);
    assert_eq!(trust.keys()[0].id(), key.id());
    assert_eq!(trust.keys()[0].name(), Some("feed"));

    let named = public(&["--name", "ops@example.org"], &file);
    let trust = mcsec::signed::TrustList::parse(&named).unwrap();
    assert_eq!(trust.keys()[0].name(), Some("ops@example.org"));
    assert_eq!(trust.keys()[0].id(), key.id());
    mcsec()
        .args(["signer", "public", "--name", "two words"])
        .arg(&file)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("a name is 1 to 64 of"));

    // A file name that is no valid name gives a line without one.
    let odd = dir.path().join("my key.signer");
    fs::copy(&file, &odd).unwrap();
    fs::set_permissions(&odd, fs::Permissions::from_mode(0o600)).unwrap();
    let line = public(&[], &odd);
    assert_eq!(line, format!("{}\n", key.trust_line(None)));
    let trust = mcsec::signed::TrustList::parse(&line).unwrap();
    assert_eq!(trust.keys()[0].name(), None);
}

#[test]
fn a_signing_key_others_can_read_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.signer");
    mcsec()
        .args(["signer", "new", "-o"])
        .arg(&file)
        .assert()
        .success();
    for bad in [0o640, 0o604, 0o644] {
        fs::set_permissions(&file, fs::Permissions::from_mode(bad)).unwrap();
        mcsec()
            .args(["signer", "public"])
            .arg(&file)
            .assert()
            .failure()
            .stdout("")
            .stderr(predicate::str::contains(format!("mode {bad:04o}")))
            .stderr(predicate::str::contains(format!(
                "hint: restrict it to its owner: chmod 600 {}",
                file.display()
            )));
    }
}

#[test]
fn a_group_key_is_not_a_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("group.key");
    mcsec().args(["keygen", "-o"]).arg(&key).assert().success();
    mcsec()
        .args(["signer", "public"])
        .arg(&key)
        .assert()
        .failure()
        .stdout("")
        .stderr(predicate::str::contains("not a `mcsec-signer-v1` line"))
        .stderr(predicate::str::contains(
            "hint: a signing key file is made by `mcsec signer new -o FILE`",
        ));
}
