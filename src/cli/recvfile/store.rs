//! The save directory and the partial files in it, all reached through
//! one directory descriptor opened at startup: a path swapped afterwards
//! (the directory renamed, a component replaced by a link) changes
//! nothing, and the final link into place is `linkat` between two
//! descriptors, with no window between a check and its use.
//!
//! Who may touch what (SECURITY.md, "Files in --save-dir"):
//! - the save directory must be ours (or root's) and writable by nobody
//!   else, sticky bit or not, as OpenSSH's StrictModes wants of `~/.ssh`:
//!   whoever can create entries in it can plant partial files and the
//!   directories files are saved into;
//! - a partial file found there is resumed only if it and its log are
//!   regular files of ours, private (mode & 0o077 == 0), with one link,
//!   not locked by another receiver and made for the same file; a planted
//!   one is removed and made afresh (`O_CREAT|O_EXCL|O_NOFOLLOW`), and one
//!   made for a different file, or in use, is left alone: the transfer
//!   takes the next free name;
//! - a partial file in use is locked (`flock`) while its transfer runs.

use std::fs::File;
use std::io::{Seek as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use mcsec::transfer::stream::Layout;

use crate::cli::CliError;

/// The process's effective user ID.
#[allow(unsafe_code)]
pub(super) fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, touches no memory of ours
    // and cannot fail.
    unsafe { libc::geteuid() }
}

/// Most bytes of a `.blocks` log read back (8 bytes a block: 2^23 blocks).
const MAX_LOG_BYTES: u64 = 64 << 20;

/// Names tried for one file's partial file (`NAME`, `NAME-1` ...) before
/// giving up: others are in use or belong to other files.
pub(super) const MAX_PART_NAMES: u32 = 100;

/// Opens `dir` for saving files and checks it is safe to: a directory of
/// ours (or root's) that neither group nor others may write.
pub(super) fn open_save_dir(dir: &Path) -> Result<OwnedFd, CliError> {
    let shown = dir.display();
    let fd = rustix::fs::openat(
        CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| CliError::usage(format!("--save-dir {shown}: {e}")))?;
    let st =
        rustix::fs::fstat(&fd).map_err(|e| CliError::new(format!("--save-dir {shown}: {e}")))?;
    check_save_dir(dir, st.st_uid, st.st_mode, effective_uid())?;
    Ok(fd)
}

/// The rule [`open_save_dir`] applies, apart for tests.
pub(super) fn check_save_dir(dir: &Path, owner: u32, mode: u32, me: u32) -> Result<(), CliError> {
    let shown = dir.display();
    if owner != me && owner != 0 {
        return Err(CliError::usage(format!(
            "--save-dir {shown} belongs to user {owner}, not to this user ({me})"
        ))
        .hint(format!(
            "save into a directory of your own (mkdir -m 700 DIR): whoever owns {shown} can plant or swap what mcsec writes there"
        )));
    }
    if mode & 0o022 != 0 {
        return Err(CliError::usage(format!(
            "--save-dir {shown} is writable by {} (mode {:04o})",
            if mode & 0o002 != 0 { "everyone" } else { "its group" },
            mode & 0o7777
        ))
        .hint(format!(
            "chmod go-w {shown}, or use a directory of your own: others who can create entries there (sticky bit or not) can plant partial files and the directories files are saved into"
        )));
    }
    Ok(())
}

/// What is on disk under a partial file's name.
pub(super) enum Found {
    /// Nothing.
    Absent,
    /// A partial file of this file, checked and locked: the file, its log
    /// (rewritten whole, to append to) and the blocks it lists.
    Resumable(File, File, Vec<u64>),
    /// A partial file of another file whose name collides, or one another
    /// receiver is writing: not ours to touch.
    Foreign,
    /// Ours but of no use (no log, a damaged one): made afresh.
    Stale,
    /// Not safe to resume (planted, or left with the wrong owner, mode or
    /// links): made afresh, and said why.
    Unsafe(String),
}

fn part_name(name: &str) -> String {
    format!("{name}.part")
}

fn log_name(name: &str) -> String {
    format!("{name}.blocks")
}

/// Opens an existing partial file or log without following a link or
/// blocking on a FIFO, and checks it is safe to trust: a regular file of
/// ours, private, with no other link.
fn open_checked(dir: &OwnedFd, name: &str, me: u32) -> Result<Option<File>, String> {
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(format!("{name} is a symbolic link")),
        Err(e) => return Err(format!("{name} cannot be opened ({e})")),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("{name}: {e}"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(format!("{name} is not a regular file"));
    }
    if st.st_uid != me {
        return Err(format!("{name} belongs to user {}", st.st_uid));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(format!(
            "{name} is open to others (mode {:04o})",
            st.st_mode & 0o7777
        ));
    }
    if st.st_nlink != 1 {
        return Err(format!("{name} has {} links", st.st_nlink));
    }
    Ok(Some(File::from(fd)))
}

/// Claims `file` for this transfer; false if another receiver holds it.
fn lock(file: &File) -> std::io::Result<bool> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        // A file system without locks: only one receiver a directory (as
        // SECURITY.md advises) keeps two apart there.
        Err(Errno::OPNOTSUPP | Errno::NOLCK) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// What is under `name` in `dir`, for a file of `layout` whose log starts
/// with `header`.
pub(super) fn inspect(dir: &OwnedFd, name: &str, header: &str, layout: &Layout) -> Found {
    let me = effective_uid();
    let file = match open_checked(dir, &part_name(name), me) {
        Ok(Some(f)) => f,
        Ok(None) => {
            // A log alone is of no use: made afresh with its file.
            return Found::Absent;
        }
        Err(why) => return Found::Unsafe(why),
    };
    match lock(&file) {
        Ok(true) => {}
        Ok(false) => return Found::Foreign,
        Err(e) => return Found::Unsafe(format!("{}: {e}", part_name(name))),
    }
    let log = match open_checked(dir, &log_name(name), me) {
        Ok(Some(l)) => l,
        Ok(None) => return Found::Stale,
        Err(why) => return Found::Unsafe(why),
    };
    let mut bytes = Vec::new();
    if std::io::Read::read_to_end(&mut std::io::Read::take(&log, MAX_LOG_BYTES), &mut bytes)
        .is_err()
    {
        return Found::Stale;
    }
    let Some(rest) = bytes.strip_prefix(header.as_bytes()) else {
        // Same name, another file (the name holds 64 bits of its hash and
        // its length; an older log of another layout): leave it to it.
        if bytes.starts_with(b"mcsec partial file v1 ") {
            return Found::Foreign;
        }
        return Found::Stale;
    };
    match file.metadata() {
        Ok(m) if m.len() == layout.file_len() => {}
        _ => return Found::Stale,
    }
    let blocks: Vec<u64> = rest
        .chunks_exact(8)
        .filter_map(|c| <[u8; 8]>::try_from(c).ok().map(u64::from_le_bytes))
        .filter(|b| *b < layout.blocks())
        .collect();
    // A torn last entry is dropped: the log is rewritten whole.
    match rewrite_log(&log, header, &blocks) {
        Ok(log) => Found::Resumable(file, log, blocks),
        Err(_) => Found::Stale,
    }
}

fn rewrite_log(log: &File, header: &str, blocks: &[u64]) -> std::io::Result<File> {
    let mut log = log.try_clone()?;
    log.set_len(0)?;
    log.rewind()?;
    let mut bytes = header.as_bytes().to_vec();
    for b in blocks {
        bytes.extend_from_slice(&b.to_le_bytes());
    }
    log.write_all(&bytes)?;
    Ok(log)
}

/// Creates `name`'s partial file (and its log, with `header`, when
/// `header` is given) afresh: whatever is there is removed, then each is
/// made with `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600, and the file locked.
/// `AlreadyExists` if another made one in between.
pub(super) fn create(
    dir: &OwnedFd,
    name: &str,
    len: u64,
    header: Option<&str>,
) -> std::io::Result<(File, Option<File>)> {
    let part = part_name(name);
    let log = log_name(name);
    for n in [&part, &log] {
        match rustix::fs::unlinkat(dir, n.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let excl = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(0o600);
    let file = File::from(rustix::fs::openat(
        dir,
        part.as_str(),
        OFlags::RDWR | excl,
        mode,
    )?);
    if !lock(&file)? {
        return Err(std::io::ErrorKind::AlreadyExists.into());
    }
    file.set_len(len)?;
    let log = match header {
        Some(header) => {
            let mut log = File::from(rustix::fs::openat(
                dir,
                log.as_str(),
                OFlags::WRONLY | excl,
                mode,
            )?);
            log.write_all(header.as_bytes())?;
            Some(log)
        }
        None => None,
    };
    Ok((file, log))
}

/// Removes `name`'s partial file and log.
pub(super) fn remove(dir: &OwnedFd, name: &str) {
    let _ = rustix::fs::unlinkat(dir, part_name(name).as_str(), AtFlags::empty());
    let _ = rustix::fs::unlinkat(dir, log_name(name).as_str(), AtFlags::empty());
}

/// Removes `name`'s log alone (its file is about to move into place).
pub(super) fn remove_log(dir: &OwnedFd, name: &str) {
    let _ = rustix::fs::unlinkat(dir, log_name(name).as_str(), AtFlags::empty());
}

/// Opens (making it, mode 0700, if missing) each directory of `dirs`
/// under `dir`, never following a link: the descriptor of the last.
pub(super) fn open_dirs(dir: &OwnedFd, shown: &Path, dirs: &[String]) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut cur = rustix::fs::openat(dir, ".", flags, Mode::empty())?;
    let mut path = shown.to_path_buf();
    for d in dirs {
        path.push(d);
        let next = match rustix::fs::openat(&cur, d.as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&cur, d.as_str(), Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                rustix::fs::openat(&cur, d.as_str(), flags, Mode::empty())
                    .map_err(|e| not_a_dir(&path, e))?
            }
            Err(e) => return Err(not_a_dir(&path, e)),
        };
        cur = next;
    }
    Ok(cur)
}

fn not_a_dir(path: &Path, e: Errno) -> std::io::Error {
    match e {
        Errno::NOTDIR | Errno::LOOP => {
            std::io::Error::other(format!("{} exists and is not a directory", path.display()))
        }
        e => e.into(),
    }
}

/// Links `name`'s partial file from `dir` into `to` as `file`, or
/// `file-1`, `file-2` ... before the extension if taken, then removes the
/// partial file: never over an existing file, and between descriptors
/// (`linkat`), so nothing swapped in a path can redirect it. The name it
/// took.
pub(super) fn place_noclobber(
    dir: &OwnedFd,
    name: &str,
    to: &OwnedFd,
    shown: &Path,
    file: &str,
) -> std::io::Result<PathBuf> {
    let part = part_name(name);
    let (stem, ext) = match file.rfind('.') {
        Some(i) if i > 0 => file.split_at(i),
        _ => (file, ""),
    };
    for n in 0..1000u32 {
        let candidate = if n == 0 {
            file.to_owned()
        } else {
            crate::cli::recv::numbered(stem, ext, n)
        };
        match rustix::fs::linkat(dir, part.as_str(), to, candidate.as_str(), AtFlags::empty()) {
            Ok(()) => {
                rustix::fs::unlinkat(dir, part.as_str(), AtFlags::empty())?;
                return Ok(shown.join(candidate));
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other(format!(
        "1000 files named like {file:?} exist in {}",
        shown.display()
    )))
}

/// How long a partial file left in the save directory is kept after it
/// was last written: the next receiver started there after that removes
/// it (and its log).
pub(super) const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Removes the partial files and logs in `dir` not written for
/// `older_than` (as of `now`, seconds since the epoch): only regular
/// files of ours, named as ours, and no partial file another receiver
/// holds. How many it removed.
pub(super) fn sweep(dir: &OwnedFd, now: i64, older_than: std::time::Duration) -> usize {
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return 0;
    };
    let cutoff = now.saturating_sub(i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX));
    let me = effective_uid();
    let mut removed = 0;
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        let ours =
            name.starts_with(".mcsec-") && (name.ends_with(".part") || name.ends_with(".blocks"));
        if !ours {
            continue;
        }
        let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || st.st_uid != me
            || st.st_mtime >= cutoff
        {
            continue;
        }
        if name.ends_with(".part") {
            let Ok(Some(file)) = open_checked(dir, name, me) else {
                continue;
            };
            if !lock(&file).unwrap_or(false) {
                continue;
            }
        }
        if rustix::fs::unlinkat(dir, name, AtFlags::empty()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const ME: u32 = 1000;

    #[test]
    fn a_save_dir_only_we_can_write_is_accepted() {
        let dir = Path::new("d");
        for (owner, mode) in [(ME, 0o700), (ME, 0o755), (ME, 0o1700), (0, 0o755)] {
            assert!(
                check_save_dir(dir, owner, mode, ME).is_ok(),
                "{owner} {mode:o}"
            );
        }
    }

    #[test]
    fn a_save_dir_others_can_write_or_own_is_refused() {
        let dir = Path::new("d");
        // Sticky or not: others could still create entries in it.
        for (owner, mode) in [
            (ME, 0o775),
            (ME, 0o757),
            (ME, 0o777),
            (ME, 0o1777),
            (ME, 0o1770),
            (0, 0o1777),
            (1001, 0o700),
        ] {
            assert!(
                check_save_dir(dir, owner, mode, ME).is_err(),
                "{owner} {mode:o}"
            );
        }
    }

    #[test]
    fn a_world_writable_save_dir_is_refused_at_startup() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(open_save_dir(tmp.path()).is_ok());
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(open_save_dir(tmp.path()).is_err());
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn stale_partial_files_are_swept_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let fd = open_save_dir(tmp.path()).unwrap();
        let (_file, _log) = create(&fd, ".mcsec-aa-1", 1, Some("h\n")).unwrap();
        drop((_file, _log));
        std::fs::write(tmp.path().join("kept.part"), b"x").unwrap();
        std::fs::write(tmp.path().join(".mcsec-x"), b"x").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // Written just now: kept.
        assert_eq!(sweep(&fd, now, STALE_AFTER), 0);
        // A week later, one held by a receiver is kept too.
        let later = now + STALE_AFTER.as_secs() as i64 + 1;
        let (held, _) = create(&fd, ".mcsec-bb-1", 1, None).unwrap();
        assert_eq!(sweep(&fd, later, STALE_AFTER), 2);
        assert_eq!(
            names(tmp.path()),
            [".mcsec-bb-1.part", ".mcsec-x", "kept.part"]
        );
        drop(held);
        assert_eq!(sweep(&fd, later, STALE_AFTER), 1);
    }
}
