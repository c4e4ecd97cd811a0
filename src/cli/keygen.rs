//! `mcsec keygen`: make a group key file.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use mcsec::GroupKey;
use mcsec::keys;

use super::{CliResult, stdout_error};

/// Create a new group key file (a secret: mode 0600).
///
/// Everyone who holds the file can read the group's traffic and send on it,
/// so hand it only to members, over a channel you trust. The key ID is
/// printed to standard error; the secret is never printed unless you ask
/// for `-o -`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  mcsec keygen -o group.key          new key file, mode 0600
  mcsec keygen -o group.key --force  replace an existing file atomically
  mcsec keygen -o - | ssh host 'umask 077; cat > group.key'")]
pub(crate) struct Args {
    /// Where to write the key file; `-` writes the key to standard output.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,

    /// Replace FILE if it exists (atomically: readers see the old key or
    /// the new, never half of one). FILE must then be a regular file, not a
    /// symbolic link, owned by you or by root; the new file is yours, mode
    /// 0600, whoever owned the old one.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(args: Args) -> CliResult {
    let key = GroupKey::generate(SystemTime::now())?;
    if args.output.as_os_str() == "-" {
        let text = keys::new_key_file_text(&key);
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(stdout_error)?;
        note!("key {} written to standard output", key.id());
        return Ok(());
    }
    keys::create_key_file(&args.output, &key, args.force)?;
    note!(
        "created key {} in {} (mode 0600)",
        key.id(),
        args.output.display()
    );
    Ok(())
}
