//! `mcsec key`: list, rotate and retire the keys of a key file.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use mcsec::keys;
use mcsec::{KeyId, Keyring};

use super::{CliError, CliResult, stdout_error};

/// Inspect and rotate the keys in a key file.
///
/// A key file may hold several keys. Receivers accept all of them; senders
/// seal with the last one. To rotate a group's key without a gap or a
/// restart:
///
/// 1. `mcsec key rotate FILE` and copy the file to every member. Running
///    receivers (`recv`, `chat`) read it again by themselves when the first
///    frame under the new key arrives (or on `kill -HUP PID`).
///
/// 2. `kill -HUP` each sender (`send`, `chat`): it switches to the new last
///    key, as a new sender session.
///
/// 3. When no one sends with the old key any more, `mcsec key retire` it,
///    copy the file again and `kill -HUP` the receivers.
///
/// A file that fails to load on reload is reported, and the keys in force
/// stay.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeyCommand {
    /// List key IDs, creation dates and which key sends. Never the secrets.
    List {
        /// The key file.
        file: PathBuf,
    },
    /// Append a new key; it becomes the sending key.
    ///
    /// The file is replaced atomically and keeps its owner and mode. Through a symbolic link, the
    /// file it points to is updated and the link kept. If the file changes
    /// while it is being rewritten, nothing is written.
    Rotate {
        /// The key file.
        file: PathBuf,
    },
    /// Remove a key (by its 8-hex-digit ID) from the file.
    ///
    /// Other lines stay
    /// as they are, line ends included; the file is replaced as by `rotate`.
    Retire {
        /// The key file.
        file: PathBuf,
        /// The key ID, as `mcsec key list` shows it.
        key_id: String,
    },
}

pub(crate) fn run(args: Args) -> CliResult {
    match args.command {
        KeyCommand::List { file } => list(&file),
        KeyCommand::Rotate { file } => {
            let id = keys::rotate_key_file(&file, SystemTime::now())?;
            note!(
                "added key {id} to {}; it is now the sending key\n\
                 next: copy the file to every member; running receivers read it when frames under \
                 {id} arrive (or on SIGHUP); running senders switch on SIGHUP (kill -HUP PID), \
                 new ones start with it",
                file.display()
            );
            Ok(())
        }
        KeyCommand::Retire { file, key_id } => {
            let id: KeyId = key_id.parse().map_err(|_| {
                CliError::new(format!("{key_id:?} is not a key ID"))
                    .hint("a key ID is 8 lowercase hex digits; see: mcsec key list FILE")
            })?;
            let before = Keyring::load(&file)?;
            let was_sending = before.sending_key().id() == id;
            keys::retire_key_file(&file, id)?;
            note!("removed key {id} from {}", file.display());
            if was_sending {
                let now = Keyring::load(&file)?;
                note!(
                    "note: {id} was the sending key; senders that load this file (or get SIGHUP) \
                     seal with {}",
                    now.sending_key().id()
                );
            }
            Ok(())
        }
    }
}

fn list(file: &std::path::Path) -> CliResult {
    let ring = Keyring::load(file)?;
    let sending = ring.sending_key().id();
    let mut out = std::io::stdout().lock();
    let mut text = String::from("KEY ID    CREATED               USE\n");
    for key in ring.iter() {
        // As the file writes it: any year 0000 to 9999 the grammar allows
        // (humantime's formatter panics before 1970).
        let created = key.created_text().unwrap_or("-");
        let role = if key.id() == sending {
            "send, receive"
        } else {
            "receive"
        };
        text.push_str(&format!(
            "{:<9} {created:<21} {role}\n",
            key.id().to_string()
        ));
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}
