//! Progress of file transfers: bars on standard error when it is a
//! terminal (and not -q), JSON lines with `recv --format json`, nothing
//! when piped. Drawing is indicatif's: rates, ETA, redraw limits.

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether bars are drawn: standard error is a terminal and -q is off.
pub(crate) fn bars_wanted() -> bool {
    std::io::stderr().is_terminal() && !super::quiet()
}

/// A bar of `len` bytes: bytes, rate and time left.
pub(crate) fn byte_bar(len: u64, message: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// One file being received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileProgress {
    pub(crate) handle: u64,
    pub(crate) sender: mcsec::SenderId,
    pub(crate) file_id: u32,
    /// The sender's path, unsanitized.
    pub(crate) path: String,
    pub(crate) stored: u64,
    pub(crate) len: u64,
}

impl FileProgress {
    /// `{"type":"progress",...}`, with the receiver's `lost` count.
    pub(crate) fn json(&self, lost: u64) -> serde_json::Value {
        serde_json::json!({
            "type": "progress",
            "sender": self.sender.to_string(),
            "file_id": self.file_id,
            "path": self.path,
            "stored": self.stored,
            "len": self.len,
            "lost": lost,
        })
    }
}

/// A bar per file being received.
pub(crate) struct FileBars {
    multi: MultiProgress,
    bars: HashMap<u64, ProgressBar>,
}

impl FileBars {
    pub(crate) fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: HashMap::new(),
        }
    }

    /// Shows `files` (new ones get a bar, finished or dropped ones lose
    /// theirs), with the datagrams lost and the blocks recovered so far.
    pub(crate) fn update(&mut self, files: &[FileProgress], lost: u64, recovered: u64) {
        self.bars.retain(|handle, bar| {
            let keep = files.iter().any(|f| f.handle == *handle);
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
        for f in files {
            let bar = self.bars.entry(f.handle).or_insert_with(|| {
                let name = super::common::printable(&f.path);
                self.multi.add(byte_bar(f.len, name))
            });
            bar.set_position(f.stored);
            let name = super::common::printable(&f.path);
            bar.set_message(format!(
                "{name} (lost {lost}, blocks recovered {recovered})"
            ));
        }
    }
}

impl Drop for FileBars {
    fn drop(&mut self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
    }
}
