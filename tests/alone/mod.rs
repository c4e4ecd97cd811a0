//! Peak memory per test: a process's high-water mark is shared by every
//! test thread in it, so a test that measures memory runs itself again in
//! a child process, alone, and reads that child's own figures.

#![allow(dead_code, unreachable_pub)]

/// A field of /proc/self/status in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs test `name` of this test binary again in a child process, alone,
/// marked by the environment variable `marker`; true in that child, where
/// the test goes on; in the parent, asserts the child passed and returns
/// false.
pub fn alone(name: &str, marker: &str) -> bool {
    alone_with(name, marker, &[])
}

/// [`alone`], with `env` set in the child's environment.
pub fn alone_with(name: &str, marker: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var_os(marker).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(marker, "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("test result: ok. 1 passed"), "{stdout}");
    false
}

/// Peak resident memory gained since `before` (a `VmRSS:` reading), in
/// KiB; `None` where /proc has no such figures (not Linux), and a panic on
/// Linux if they are missing, so the measurement cannot quietly not run.
pub fn grown_since(before: Option<u64>) -> Option<u64> {
    match (before, status_kib("VmHWM:")) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ if cfg!(target_os = "linux") => panic!("no VmRSS/VmHWM in /proc/self/status"),
        _ => None,
    }
}
