//! The `mcsec` command line: one file per subcommand, errors with hints.

use std::fmt;
use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod key;
mod keygen;

/// Secure, authenticated UDP multicast.
///
/// Every datagram is sealed with ChaCha20-Poly1305 under a pre-shared group
/// key: only holders of the key file can read the feed or inject into it,
/// and receivers drop replayed, stale, forged and tampered frames.
#[derive(Debug, Parser)]
#[command(name = "mcsec", version, propagate_version = true)]
#[command(after_help = "Start with: mcsec keygen -o group.key")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Keygen(keygen::Args),
    Key(key::Args),
}

/// An error for the person at the terminal: what happened and what to do.
#[derive(Debug)]
pub(crate) struct CliError {
    message: String,
    hint: Option<String>,
    /// Standard output was closed under us (`mcsec ... | head`): exit 0
    /// quietly, as ripgrep does.
    broken_pipe: bool,
}

impl CliError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            broken_pipe: false,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl From<mcsec::KeyError> for CliError {
    fn from(err: mcsec::KeyError) -> Self {
        Self {
            message: err.to_string(),
            hint: err.hint(),
            broken_pipe: false,
        }
    }
}

pub(crate) type CliResult = Result<(), CliError>;

/// Writes to stdout; a closed pipe (`mcsec key list k | head -1`) is not an
/// error worth reporting.
pub(crate) fn stdout_error(err: io::Error) -> CliError {
    let mut e = CliError::new(format!("writing to standard output: {err}"));
    e.broken_pipe = err.kind() == io::ErrorKind::BrokenPipe;
    e
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Key(args) => key::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.broken_pipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
