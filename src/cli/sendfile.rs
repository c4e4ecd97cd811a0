//! `mcsec send --file`: files and directories of any size, as RaptorQ
//! symbols of independently encoded blocks (body variant 5), in a carousel
//! of --repeat passes. A reader thread hashes each file, then reads and
//! encodes a window of blocks at a time while the main thread seals and
//! sends the previous window: neither ever holds the file, and the sender's
//! memory is a few windows whatever the file's size.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use mcsec::body::MAX_FILE_PATH;
use mcsec::transfer::stream::{EncodedBlock, StreamEncoder, WINDOW_BLOCKS, interleave};

use super::CliError;
use super::common::{Outbox, stopped};

/// One file to send: where it is, and the path receivers get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    disk: PathBuf,
    wire: String,
    len: u64,
    /// Device and inode the walk saw: the file opened must be this one.
    dev: u64,
    ino: u64,
}

/// The files named by --file: each file as its base name, each directory
/// walked (sorted, symbolic links and empty files skipped with a warning)
/// with its files' paths relative to the directory's parent, so
/// `--file photos` arrives as `photos/...`.
pub(crate) fn collect(paths: &[PathBuf], max_file: u64) -> Result<Vec<Source>, CliError> {
    let mut out = Vec::new();
    for path in paths {
        let shown = path.display();
        let meta =
            std::fs::metadata(path).map_err(|e| CliError::new(format!("opening {shown}: {e}")))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if meta.is_dir() {
            let before = out.len();
            walk(path, &name, max_file, &mut out)?;
            if out.len() == before {
                return Err(CliError::new(format!("{shown}: no files to send"))
                    .hint("receivers only accept non-empty regular files"));
            }
        } else if meta.is_file() {
            if meta.len() == 0 {
                return Err(CliError::new(format!("{shown} is empty"))
                    .hint("there is nothing to send; receivers only accept non-empty files"));
            }
            // A link named on the command line is followed here, once: the
            // file is then opened by its real path, never through a link.
            let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink());
            let disk = if link {
                std::fs::canonicalize(path)
                    .map_err(|e| CliError::new(format!("opening {shown}: {e}")))?
            } else {
                path.clone()
            };
            out.push(source(&disk, name, &meta, max_file)?);
        } else {
            return Err(CliError::new(format!(
                "{shown} is neither a regular file nor a directory"
            )));
        }
    }
    Ok(out)
}

fn source(
    disk: &Path,
    wire: String,
    meta: &std::fs::Metadata,
    max_file: u64,
) -> Result<Source, CliError> {
    let len = meta.len();
    if len > max_file {
        return Err(CliError::new(format!(
            "{} is {len} bytes, over --max-file ({max_file} bytes)",
            disk.display()
        ))
        .hint("raise --max-file here and on every receiver (mcsec recv --max-file)"));
    }
    if wire.len() > MAX_FILE_PATH {
        return Err(CliError::new(format!(
            "{}: its path is {} bytes, over the {MAX_FILE_PATH} a file symbol carries",
            disk.display(),
            wire.len()
        ))
        .hint("send it from a shallower directory"));
    }
    Ok(Source {
        disk: disk.to_path_buf(),
        wire,
        len,
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

fn walk(dir: &Path, prefix: &str, max_file: u64, out: &mut Vec<Source>) -> Result<(), CliError> {
    let read = |e: std::io::Error| CliError::new(format!("reading {}: {e}", dir.display()));
    let mut entries = std::fs::read_dir(dir)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let wire = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| CliError::new(format!("reading {}: {e}", path.display())))?;
        if meta.is_dir() {
            walk(&path, &wire, max_file, out)?;
        } else if meta.is_file() && meta.len() > 0 {
            out.push(source(&path, wire, &meta, max_file)?);
        } else {
            tracing::warn!(
                "skipping {}: {}",
                path.display(),
                if meta.is_file() {
                    "empty"
                } else {
                    "not a regular file or directory"
                }
            );
        }
    }
    Ok(())
}

/// What the reader thread hands the sender.
enum Produced {
    File(Arc<StreamEncoder>),
    Window(Vec<EncodedBlock>),
    Error(CliError),
}

/// How a carousel goes: --repeat passes, --repair percent of repair
/// symbols a pass, and (hidden, for benchmarks) --block-symbols.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Carousel {
    pub(crate) repeat: u32,
    pub(crate) repair: u32,
    pub(crate) block_symbols: u32,
}

/// Sends `sources` as a carousel: --repeat passes, each over every file.
pub(crate) fn send_files(
    outbox: &mut Outbox,
    sources: Vec<Source>,
    carousel: Carousel,
    stop: Option<&AtomicBool>,
) -> Result<(), CliError> {
    let repeat = carousel.repeat;
    let files = sources.len() as u64;
    let total: u64 = sources.iter().map(|s| s.len).sum();
    let max_plaintext = outbox.max_plaintext();
    // Two windows in flight: one being sent, one being read and encoded.
    let (tx, rx) = mpsc::sync_channel(0);
    let reader = std::thread::Builder::new()
        .name("mcsec-read".into())
        .spawn(move || produce(&sources, max_plaintext, carousel, &tx))
        .map_err(|e| CliError::new(format!("starting the file reader: {e}")))?;
    let mut encoder: Option<Arc<StreamEncoder>> = None;
    let mut result = Ok(());
    // The bytes of every pass: a bar on a terminal, nothing when piped.
    let bar = super::progress::bars_wanted()
        .then(|| super::progress::byte_bar(total.saturating_mul(u64::from(repeat)), String::new()));
    let mut pass = 0u32;
    let mut last_file = None;
    'recv: for produced in &rx {
        match produced {
            Produced::File(e) => {
                // Back at the first file: the next pass.
                if last_file.is_some_and(|id| e.file_id() <= id) {
                    pass += 1;
                }
                last_file = Some(e.file_id());
                if let Some(bar) = &bar {
                    let path = super::common::printable(e.path());
                    bar.set_message(format!("pass {}/{repeat} {path}", pass + 1));
                }
                encoder = Some(e);
            }
            Produced::Window(blocks) => {
                let Some(enc) = &encoder else { continue };
                if let Some(bar) = &bar {
                    let layout = enc.layout();
                    bar.inc(
                        blocks
                            .iter()
                            .map(|b| layout.block_data_len(b.block()))
                            .sum(),
                    );
                }
                for (i, esi, bytes) in interleave(&blocks) {
                    if stop.is_some_and(stopped) {
                        break 'recv;
                    }
                    let Some(block) = blocks.get(i) else { continue };
                    if let Err(e) = outbox.queue_body(&enc.body(block.block(), esi, bytes)) {
                        result = Err(e);
                        break 'recv;
                    }
                }
            }
            Produced::Error(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // The reader stops at its next window once nobody listens.
    drop(rx);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if reader.join().is_err() {
        return Err(CliError::new("the file reader panicked"));
    }
    result?;
    if stop.is_some_and(stopped) {
        return outbox.finish();
    }
    outbox.flush()?;
    outbox.messages += files;
    Ok(())
}

/// The reader thread: hashes each file before its first pass, then reads
/// and encodes it a window of blocks at a time.
fn produce(
    sources: &[Source],
    max_plaintext: usize,
    carousel: Carousel,
    tx: &mpsc::SyncSender<Produced>,
) {
    let mut encoders: Vec<Option<Arc<StreamEncoder>>> = vec![None; sources.len()];
    for pass in 0..carousel.repeat {
        for (index, src) in sources.iter().enumerate() {
            let Some(slot) = encoders.get_mut(index) else {
                return;
            };
            match send_pass(src, index, slot, max_plaintext, pass, carousel, tx) {
                Ok(true) => {}
                // Nobody listens any more.
                Ok(false) => return,
                Err(e) => {
                    let _ = tx.send(Produced::Error(e));
                    return;
                }
            }
        }
        tracing::debug!("pass {pass} read");
    }
}

fn send_pass(
    src: &Source,
    index: usize,
    slot: &mut Option<Arc<StreamEncoder>>,
    max_plaintext: usize,
    pass: u32,
    carousel: Carousel,
    tx: &mpsc::SyncSender<Produced>,
) -> Result<bool, CliError> {
    let shown = src.disk.display();
    let failed = |what: &str, e: std::io::Error| CliError::new(format!("{what} {shown}: {e}"));
    let Some(file) = open_source(src)? else {
        // Refused with a warning: the other files go on.
        return Ok(true);
    };
    let len = file.metadata().map_err(|e| failed("reading", e))?.len();
    if len != src.len {
        return Err(CliError::new(format!(
            "{shown} changed size while being sent ({} bytes, now {len})",
            src.len
        ))
        .hint("send a file that is not being written to (a copy or a snapshot)"));
    }
    let encoder = match slot {
        Some(e) => Arc::clone(e),
        None => {
            let sha256 =
                super::recvfile::hash_file(&file, len).map_err(|e| failed("reading", e))?;
            let file_id = u32::try_from(index).unwrap_or(u32::MAX);
            let e = StreamEncoder::with_block_symbols(
                file_id,
                &src.wire,
                len,
                sha256,
                max_plaintext,
                carousel.block_symbols,
            )
            .map_err(|e| {
                CliError::new(format!("encoding {shown}: {e}"))
                    .hint("--max-datagram must leave room for a symbol and the file's path")
            })?;
            tracing::info!(
                "sending {shown} as {:?} ({len} bytes, sha256 {}): {} blocks of up to {} symbols of {} bytes",
                super::common::printable(&src.wire),
                mcsec::files::hex(&sha256),
                e.layout().blocks(),
                e.layout().block_symbols(),
                e.layout().symbol_size()
            );
            let e = Arc::new(e);
            *slot = Some(Arc::clone(&e));
            e
        }
    };
    if tx.send(Produced::File(Arc::clone(&encoder))).is_err() {
        return Ok(false);
    }
    let layout = *encoder.layout();
    let mut block = 0;
    while block < layout.blocks() {
        let end = block
            .saturating_add(WINDOW_BLOCKS as u64)
            .min(layout.blocks());
        let mut window = Vec::with_capacity(WINDOW_BLOCKS);
        for b in block..end {
            let n = usize::try_from(layout.block_data_len(b)).unwrap_or(usize::MAX);
            // Room for the padding: encode_block pads in place.
            let mut data = Vec::with_capacity(block_room(&layout, b));
            data.resize(n, 0);
            file.read_exact_at(&mut data, layout.block_offset(b))
                .map_err(|e| failed("reading", e))?;
            let encoded = encoder
                .encode_block(b, data, pass, carousel.repair)
                .map_err(|e| CliError::new(format!("encoding {shown}: {e}")))?;
            window.push(encoded);
        }
        if tx.send(Produced::Window(window)).is_err() {
            return Ok(false);
        }
        block = end;
    }
    Ok(true)
}

/// Opens a file the walk found, or refuses with a warning (`None`) what
/// was swapped in since: a symbolic link is not followed, a FIFO or device
/// is not blocked on, and the file must be the one the walk saw (device
/// and inode).
fn open_source(src: &Source) -> Result<Option<File>, CliError> {
    let shown = src.disk.display();
    let refuse = |why: &str| {
        tracing::warn!("skipping {shown}: {why} since the files to send were listed");
        Ok(None)
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&src.disk)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return refuse("it became a symbolic link");
        }
        // A socket.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return refuse("it is no longer a regular file");
        }
        Err(e) => return Err(CliError::new(format!("opening {shown}: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| CliError::new(format!("reading {shown}: {e}")))?;
    if !meta.file_type().is_file() {
        return refuse("it is no longer a regular file");
    }
    if (meta.dev(), meta.ino()) != (src.dev, src.ino) {
        return refuse("another file took its place");
    }
    Ok(Some(file))
}

/// The bytes block `b` takes padded to whole symbols.
fn block_room(layout: &mcsec::transfer::stream::Layout, b: u64) -> usize {
    let padded = u64::from(layout.symbols_in(b)) * u64::from(layout.symbol_size());
    usize::try_from(padded).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Lists `d/a.bin`, lets `swap` replace it, then reads it for sending:
    /// what `send_pass` returned and how many things it produced, or
    /// `None` if it was still blocked after 5 s.
    fn send_after_swap(swap: impl FnOnce(&Path, &Path)) -> Option<(bool, usize)> {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("a.bin");
        std::fs::write(&file, [b'a'; 40]).unwrap();
        let other = tmp.path().join("other");
        std::fs::write(&other, [b'b'; 40]).unwrap();
        let sources = collect(std::slice::from_ref(&dir), u64::MAX).unwrap();
        assert_eq!(sources.len(), 1);
        swap(&file, &other);
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (tx, rx) = mpsc::sync_channel(16);
            let carousel = Carousel {
                repeat: 1,
                repair: 0,
                block_symbols: mcsec::transfer::stream::DEFAULT_BLOCK_SYMBOLS,
            };
            let sent = send_pass(&sources[0], 0, &mut None, 1200, 0, carousel, &tx);
            drop(tx);
            let _ = done_tx.send((sent.is_ok_and(|more| more), rx.iter().count()));
        });
        done_rx.recv_timeout(Duration::from_secs(5)).ok()
    }

    #[test]
    fn a_file_swapped_for_a_symbolic_link_is_not_followed() {
        let sent = send_after_swap(|file, other| {
            std::fs::remove_file(file).unwrap();
            std::os::unix::fs::symlink(other, file).unwrap();
        });
        assert_eq!(sent, Some((true, 0)));
    }

    #[test]
    fn a_file_swapped_for_a_fifo_is_not_blocked_on() {
        let sent = send_after_swap(|file, _| {
            std::fs::remove_file(file).unwrap();
            let made = std::process::Command::new("mkfifo").arg(file).status();
            assert!(made.unwrap().success());
        });
        assert_eq!(sent, Some((true, 0)));
    }

    #[test]
    fn a_file_replaced_by_another_is_not_sent() {
        let sent = send_after_swap(|file, other| std::fs::rename(other, file).unwrap());
        assert_eq!(sent, Some((true, 0)));
    }

    #[test]
    fn the_file_listed_is_sent() {
        let sent = send_after_swap(|_, _| {});
        assert!(matches!(sent, Some((true, n)) if n > 0));
    }
}
