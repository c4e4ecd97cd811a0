//! `mcsec completions SHELL` and `mcsec man`: shell completions and a man
//! page, generated from the same clap definitions as the parser and
//! `--help`, so they cannot fall behind a new flag.

use std::io::Write;

use clap::CommandFactory;

use super::{CliResult, stdout_error};

/// Print a shell completion script to standard output.
///
/// Load it for this shell session, or install it where the shell looks
/// for completions:
///
///   bash: mcsec completions bash > /etc/bash_completion.d/mcsec
///         (or ~/.local/share/bash-completion/completions/mcsec)
///   zsh:  mcsec completions zsh > "${fpath[1]}/_mcsec"
///   fish: mcsec completions fish > ~/.config/fish/completions/mcsec.fish
///   elvish: mcsec completions elvish >> ~/.config/elvish/rc.elv
///   powershell: mcsec completions powershell >> $PROFILE
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  source <(mcsec completions bash)
  mcsec completions zsh > ~/.zfunc/_mcsec")]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    shell: clap_complete::Shell,
}

/// Print mcsec's man page (roff) to standard output.
///
/// Read it with `mcsec man | man -l -`, or install it:
/// `mcsec man > /usr/local/share/man/man1/mcsec.1`.
#[derive(Debug, clap::Args)]
pub(crate) struct ManArgs {}

pub(crate) fn completions(args: CompletionsArgs) -> CliResult {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "mcsec", &mut out);
    write_all(&out)
}

pub(crate) fn man(_args: ManArgs) -> CliResult {
    let mut out = Vec::new();
    clap_mangen::Man::new(super::Cli::command())
        .render(&mut out)
        .map_err(stdout_error)?;
    write_all(&out)
}

fn write_all(bytes: &[u8]) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(stdout_error)
}
