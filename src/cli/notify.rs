//! systemd's readiness and watchdog protocol (sd_notify(3)), by hand: a
//! few datagrams to the Unix socket named by `$NOTIFY_SOCKET`, so mcsec
//! links no libsystemd and pulls no crate for it. Without the variable
//! (not run by systemd with `Type=notify`), every call does nothing.
//!
//! `READY=1` goes once the socket is open (recv: joined and listening;
//! send: the sender socket open). With `WatchdogSec=` systemd sets
//! `$WATCHDOG_USEC`; [`keepalive`] then sends `WATCHDOG=1` every half of
//! it, from the loops that do the work (recv's receive loop, send's waits
//! and sends), so a loop that hangs stops the pings and systemd restarts
//! the service.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half of `$WATCHDOG_USEC`, if the watchdog is on for this process.
    every: Option<Duration>,
    last: Option<Instant>,
}

impl Notifier {
    fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        let addr = match bytes.split_first() {
            Some((b'/', _)) => SocketAddr::from_pathname(&path).ok()?,
            Some((b'@', name)) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name).ok()?
            }
            _ => {
                tracing::warn!(
                    "NOTIFY_SOCKET={path:?} is neither a path nor @abstract; not notifying"
                );
                return None;
            }
        };
        let socket = UnixDatagram::unbound().ok()?;
        // The watchdog is ours if WATCHDOG_PID is unset or names us.
        let ours = std::env::var("WATCHDOG_PID")
            .map_or(true, |pid| pid.trim() == std::process::id().to_string());
        let every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|us| us.trim().parse::<u64>().ok())
            .filter(|us| *us > 0 && ours)
            .map(|us| Duration::from_micros(us / 2));
        Some(Self {
            socket,
            addr,
            every,
            last: None,
        })
    }

    fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::debug!("sd_notify {state:?}: {e}");
        }
    }
}

fn notifier() -> &'static Mutex<Option<Notifier>> {
    static NOTIFIER: OnceLock<Mutex<Option<Notifier>>> = OnceLock::new();
    NOTIFIER.get_or_init(|| Mutex::new(Notifier::from_env()))
}

fn with(f: impl FnOnce(&mut Notifier)) {
    let mut guard = match notifier().lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(n) = guard.as_mut() {
        f(n);
    }
}

/// Tells systemd the service is up, with a status line for `systemctl
/// status`, and sends the first watchdog ping.
pub(crate) fn ready(status: &str) {
    with(|n| {
        let status: String = status.chars().filter(|c| *c != '\n').collect();
        n.send(&format!("READY=1\nSTATUS={status}"));
        if n.every.is_some() {
            n.send("WATCHDOG=1");
            n.last = Some(Instant::now());
        }
    });
}

/// Sends `WATCHDOG=1` if half the watchdog interval passed since the last.
pub(crate) fn keepalive() {
    with(|n| {
        if let Some(every) = n.every
            && n.last.is_none_or(|t| t.elapsed() >= every)
        {
            n.send("WATCHDOG=1");
            n.last = Some(Instant::now());
        }
    });
}

/// Tells systemd the service is shutting down.
pub(crate) fn stopping() {
    with(|n| n.send("STOPPING=1"));
}

/// Whether systemd watches this process with a watchdog: loops that would
/// block must then wake to ping.
pub(crate) fn watchdog_on() -> bool {
    let mut on = false;
    with(|n| on = n.every.is_some());
    on
}
