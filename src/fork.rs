//! Which process a sender session belongs to.
//!
//! A [`Sealer`](crate::Sealer) copied into a child by `fork(2)` would seal
//! with the same sender ID and seqs as its parent: the same nonces under
//! the same key, which destroys both confidentiality and authenticity. A
//! sealer records the fork generation it was made in and refuses to seal in
//! another.
//!
//! The generation is a counter that a `pthread_atfork` child handler bumps,
//! so the check on every seal is one relaxed atomic load, not a `getpid`
//! system call. If the handler cannot be registered, the check falls back
//! to comparing process IDs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bumped in every child that `fork` makes, once the handler is in.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Whether the child handler is registered.
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// The process a sealer was made in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    generation: u64,
    pid: u32,
}

impl Owner {
    /// The current process.
    pub(crate) fn current() -> Self {
        register();
        Self {
            generation: GENERATION.load(Ordering::Relaxed),
            pid: std::process::id(),
        }
    }

    /// Whether this is still the process the owner was taken in.
    #[inline]
    pub(crate) fn is_current(&self) -> bool {
        if REGISTERED.load(Ordering::Relaxed) {
            GENERATION.load(Ordering::Relaxed) == self.generation
        } else {
            std::process::id() == self.pid
        }
    }
}

#[cfg(unix)]
extern "C" fn in_child() {
    // Async-signal-safe: one atomic add.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: pthread_atfork(3) only stores the three function pointers;
        // `in_child` is a plain `extern "C" fn` that lives as long as the
        // program and does nothing but an atomic add, which is safe in the
        // child of a multithreaded fork.
        let status = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        REGISTERED.store(status == 0, Ordering::Relaxed);
    });
}

#[cfg(not(unix))]
fn register() {}
