//! The `mcsec` command line: one file per subcommand, errors with hints.

use std::fmt;
use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Set by `-q`: nothing but errors on standard error.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `-q` was given.
pub(crate) fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// `eprintln!` for what is not an error (summaries, notes, warnings):
/// silent under `-q`. Errors go through [`CliError`] or plain `eprintln!`.
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::cli::quiet() {
            eprintln!($($arg)*);
        }
    };
}

mod bench;
mod chat;
mod common;
mod demo;
mod doctor;
mod explain;
mod key;
mod keygen;
mod metrics;
mod notify;
mod pipeline;
mod progress;
mod recv;
mod recvfile;
mod relay;
mod relay_client;
mod send;
mod senders;
mod sendfile;
mod shell;
mod signer;

/// Secure, authenticated UDP multicast.
///
/// Every datagram is sealed with ChaCha20-Poly1305 under a pre-shared group
/// key: only holders of the key file can read the feed or inject into it,
/// and receivers drop replayed, stale, forged and tampered frames.
#[derive(Debug, Parser)]
#[command(name = "mcsec", version, propagate_version = true)]
#[command(after_help = EXIT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// More detail on standard error (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Only errors on standard error.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    Keygen(keygen::Args),
    Key(key::Args),
    Send(send::Args),
    Recv(recv::Args),
    Chat(chat::Args),
    Relay(relay::Args),
    Signer(signer::Args),
    Demo(demo::Args),
    Doctor(doctor::Args),
    Bench(bench::Args),
    Completions(shell::CompletionsArgs),
    Man(shell::ManArgs),
}

/// The top-level `--help` epilogue: where to start, and the exit statuses.
const EXIT_HELP: &str = "Start with: mcsec keygen -o group.key

Exit status:
  0  done (a signal, SIGINT or SIGTERM, that ends a run is not an error)
  1  an error: network, key file, input or output
  2  a usage error: a flag or value that cannot work (see the hint)
  3  recv --count N ended (--duration, SIGINT, SIGTERM) before N messages
     arrived; the counters still go to standard error (and json stdout)

SIGHUP never ends send, recv or chat: it reloads the key file.";

/// Exit status when `recv --count N` ends before N messages arrived.
pub(crate) const EXIT_INCOMPLETE: u8 = 3;

/// An error for the person at the terminal: what happened and what to do.
#[derive(Debug)]
pub(crate) struct CliError {
    message: String,
    hint: Option<String>,
    /// Standard output was closed under us (`mcsec ... | head`): exit 0
    /// quietly, as ripgrep does.
    broken_pipe: bool,
    /// A mistake in how the command was called: exit status 2.
    usage: bool,
    /// Another exit status than 1 (or 2 for `usage`).
    status: Option<u8>,
}

impl CliError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            broken_pipe: false,
            usage: false,
            status: None,
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            usage: true,
            ..Self::new(message)
        }
    }

    /// `recv --count N` ended before N messages: exit status 3.
    pub(crate) fn incomplete(message: impl Into<String>) -> Self {
        Self {
            status: Some(EXIT_INCOMPLETE),
            ..Self::new(message)
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
        // The library's hints name no option of ours; where one is the fix,
        // say it here.
        let hint = match &err {
            mcsec::KeyError::Exists { .. } => Some("pass --force to replace it".to_owned()),
            _ => err.hint(),
        };
        Self {
            message: err.to_string(),
            hint,
            broken_pipe: false,
            usage: false,
            status: None,
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

/// A hint for a flag people bring from iperf, mcjoin or uftp.
fn habit_hint(flag: &str) -> Option<&'static str> {
    let flag = flag.split('=').next().unwrap_or(flag);
    Some(match flag {
        "-p" | "--port" => {
            "the port goes in -g with the group, e.g. -g 239.255.0.1:5000 (there is no -p)"
        }
        "-T" => "the multicast TTL is -t, e.g. -t 4 (1, the default, stays on the local link)",
        "-b" | "--bandwidth" | "--bitrate" => {
            "pace with --rate, in bits per second, e.g. --rate 100M (send only)"
        }
        "-B" | "--bind" => "join and send on an interface with -i: a name, address or index",
        "-u" | "--udp" => "mcsec always speaks UDP: leave it out",
        _ => return None,
    })
}

/// Prints clap's error (or help, or version) with a hint for a flag from
/// another tool, and returns its exit status (2 for errors).
fn parse_error(err: &clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let hint = match (err.kind(), err.get(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(ContextValue::String(flag))) => habit_hint(flag),
        _ => None,
    };
    match hint {
        None => {
            let _ = err.print();
        }
        Some(hint) => {
            // The hint right under the error line, before usage.
            let text = err.to_string();
            let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
            eprintln!("{first}\nhint: {hint}\n{rest}");
        }
    }
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
}

/// glibc's malloc keeps freed memory of its per-thread arenas, and raises
/// its mmap threshold to the largest block freed: a receiver whose decode
/// threads allocate and free block-sized buffers (up to 16 MiB in flight)
/// grew with the file (171 MiB at 4 GiB, BENCHMARKS.md). A fixed 128 KiB
/// threshold sends those buffers to mmap, and their memory back to the
/// system when freed. Only `recv` sets it: a file sender frees its block
/// buffers as fast as it makes them, and paid for the fresh mappings in
/// page faults (about a tenth of its reader thread's time, BENCHMARKS.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_large_frees_to_the_system() {
    // SAFETY: mallopt sets a malloc parameter and touches no memory of
    // ours; it runs in main before any thread is started.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    if ok != 1 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_frees_to_the_system() {}

pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return parse_error(&err),
    };
    if matches!(cli.command, Command::Recv(_)) {
        return_large_frees_to_the_system();
    }
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        (false, 2) => tracing::Level::DEBUG,
        (false, _) => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_target(false)
        .without_time()
        .init();
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Key(args) => key::run(args),
        Command::Send(args) => send::run(args),
        Command::Recv(args) => recv::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Relay(args) => relay::run(args),
        Command::Signer(args) => signer::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Completions(args) => shell::completions(args),
        Command::Man(args) => shell::man(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.broken_pipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{err}");
            if let Some(status) = err.status {
                ExitCode::from(status)
            } else if err.usage {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
