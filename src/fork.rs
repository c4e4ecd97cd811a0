//! Which process a sender session belongs to.
//!
//! A [`Sealer`](crate::Sealer) copied into a child by `fork(2)` would seal
//! with the same sender ID and seqs as its parent: the same nonces under
//! the same key, which destroys both confidentiality and authenticity. A
//! sealer records the process it was made in and refuses to seal in
//! another.
//!
//! On Linux the process is told by a word in a page marked
//! `MADV_WIPEONFORK`: the kernel hands every child made without shared
//! memory (`fork`, glibc's `_Fork`, a raw `clone` without `CLONE_VM`) a
//! zeroed copy, whatever user-space handlers did or did not run. The word
//! holds the process ID of the process that armed it, and the check on
//! every seal is one relaxed atomic load. Where the page cannot be had (an
//! older kernel, another system), the check compares process IDs, one
//! `getpid` per seal.
//!
//! Not detected: a restored virtual machine snapshot, or a process image
//! checkpointed and restored (CRIU), which resume with the same memory and
//! process ID. Start new sessions after those.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The process a sealer was made in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    /// The process ID, as the wipe-on-fork word held it (or as getpid
    /// said, without the page).
    pid: u64,
    /// The wipe-on-fork word, looked up once here so that the check on
    /// every seal is a single load.
    word: Option<&'static AtomicU64>,
}

impl Owner {
    /// The current process.
    pub(crate) fn current() -> Self {
        let pid = u64::from(std::process::id());
        let word = marker();
        if let Some(word) = word {
            // Zero in a child the page was wiped for: arm it again for this
            // process. Sealers copied from the parent recorded the parent's
            // ID and keep refusing.
            if word.load(Ordering::Relaxed) != pid {
                word.store(pid, Ordering::Relaxed);
            }
        }
        Self { pid, word }
    }

    /// Whether this is still the process the owner was taken in.
    #[inline(always)]
    pub(crate) fn is_current(&self) -> bool {
        match self.word {
            Some(word) => word.load(Ordering::Relaxed) == self.pid,
            None => u64::from(std::process::id()) == self.pid,
        }
    }
}

/// The word in the wipe-on-fork page, if this system has one.
fn marker() -> Option<&'static AtomicU64> {
    static MARKER: OnceLock<Option<&'static AtomicU64>> = OnceLock::new();
    *MARKER.get_or_init(wipe_on_fork_word)
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn wipe_on_fork_word() -> Option<&'static AtomicU64> {
    const PAGE: usize = 4096;
    // SAFETY: an anonymous private mapping of one page at an address the
    // kernel chooses; no file, no existing memory is touched. The result is
    // checked against MAP_FAILED below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `page` is the start of the one-page mapping made above, and
    // PAGE is its length; madvise only changes what fork does with it.
    let advised = unsafe { libc::madvise(page, PAGE, libc::MADV_WIPEONFORK) };
    if advised != 0 {
        // SAFETY: unmaps exactly the mapping made above, which nothing
        // else refers to.
        unsafe { libc::munmap(page, PAGE) };
        return None;
    }
    // SAFETY: the mapping is page-aligned (so aligned for a u64), readable
    // and writable, zero-filled (a valid AtomicU64 of 0), and never
    // unmapped: it lives as long as the process, so a 'static reference is
    // sound. Only atomics touch it.
    Some(unsafe { &*page.cast::<AtomicU64>() })
}

#[cfg(not(target_os = "linux"))]
fn wipe_on_fork_word() -> Option<&'static AtomicU64> {
    None
}
