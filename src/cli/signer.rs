//! `mcsec signer`: signing keys for signed senders.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mcsec::signed::{SignerFileError, SignerKey, TrustList, is_valid_name};

use super::{CliError, CliResult};

/// Make and show signing keys, for feeds that receivers can read but not
/// forge.
///
/// With only the group key, every receiver could also send. A sender that
/// signs (`mcsec send --sign FILE`) adds an Ed25519 signature every few
/// dozen frames; a receiver given its public key (`mcsec recv --trust
/// FILE`) delivers only frames that signature covers, so group members
/// without the signing key can no longer inject frames or move the
/// sender's replay window. The signing key is a secret (mode 0600); its public line is not.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  mcsec signer new -o feed.signer
  mcsec signer public feed.signer > feed.pub
  mcsec send -k group.key -g 239.255.0.1:5000 -i eth0 --sign feed.signer
  mcsec recv -k group.key -g 239.255.0.1:5000 -i eth0 --trust feed.pub

A trust file may hold several public lines (cat a.pub b.pub > trusted.pub):
a receiver trusts each, and shows the name of the one that signed.")]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    New(NewArgs),
    Public(PublicArgs),
}

/// Create a new signing key file (a secret: mode 0600, never overwritten
/// unless --force).
#[derive(Debug, clap::Args)]
struct NewArgs {
    /// Where to write the signing key.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,

    /// Replace FILE if it exists (atomically; FILE must be a regular file
    /// owned by you or root, not a symbolic link).
    #[arg(long)]
    force: bool,
}

/// Print the trust line of a signing key, for receivers' --trust files.
#[derive(Debug, clap::Args)]
struct PublicArgs {
    /// The signing key file.
    #[arg(value_name = "FILE")]
    key: PathBuf,

    /// The name receivers show for frames this key signed (1 to 64 of
    /// A-Z a-z 0-9 - _ . @). Default: the key file's name without its
    /// extension, when that is a valid name.
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    name: Option<String>,
}

fn parse_name(s: &str) -> Result<String, String> {
    if is_valid_name(s) {
        Ok(s.to_owned())
    } else {
        Err("a name is 1 to 64 of A-Z a-z 0-9 - _ . @".into())
    }
}

pub(crate) fn run(args: Args) -> CliResult {
    match args.command {
        Command::New(args) => new(args),
        Command::Public(args) => public(args),
    }
}

fn new(args: NewArgs) -> CliResult {
    let key = SignerKey::generate(Some(SystemTime::now())).map_err(signer_error)?;
    key.create_file(&args.output, args.force)
        .map_err(signer_error)?;
    note!(
        "created signing key {} in {} (mode 0600)\n\
         next: mcsec signer public {} > {}.pub",
        key.id(),
        args.output.display(),
        args.output.display(),
        default_name(&args.output).unwrap_or_else(|| "signer".into()),
    );
    Ok(())
}

fn public(args: PublicArgs) -> CliResult {
    let key = load_signer(&args.key)?;
    let name = args.name.or_else(|| default_name(&args.key));
    println!("{}", key.trust_line(name.as_deref()));
    Ok(())
}

/// The file's name without its extension, if that is a valid trust name.
fn default_name(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    is_valid_name(stem).then(|| stem.to_owned())
}

/// Loads a signing key file, with hints.
pub(crate) fn load_signer(path: &Path) -> Result<SignerKey, CliError> {
    SignerKey::load(path).map_err(signer_error)
}

/// Loads a trust file, with hints.
pub(crate) fn load_trust(path: &Path) -> Result<TrustList, CliError> {
    TrustList::load(path).map_err(|err| match err {
        SignerFileError::File(mcsec::KeyError::OpenPermissions { path, mode }) => CliError::new(
            format!(
                "{}: trust file is writable by group or others (mode {mode:04o}); whoever can write it chooses whom you trust",
                path.display()
            ),
        )
        .hint(format!("chmod go-w {}", path.display())),
        SignerFileError::Line { .. } | SignerFileError::NoTrust { .. } => {
            CliError::new(err.to_string()).hint(
                "a trust file holds lines printed by `mcsec signer public FILE`; \
                 did you pass the signing key itself, or a group key?",
            )
        }
        other => signer_error(other),
    })
}

fn signer_error(err: SignerFileError) -> CliError {
    match err {
        SignerFileError::File(key) => CliError::from(key),
        SignerFileError::SignerCount { .. } | SignerFileError::Line { .. } => {
            CliError::new(err.to_string())
                .hint("a signing key file is made by `mcsec signer new -o FILE`")
        }
        other => CliError::new(other.to_string()),
    }
}
