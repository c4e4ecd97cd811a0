//! Group secrets, key IDs, keyring files and the per-sender key derivation.
//!
//! A group secret is 32 bytes from the operating system's CSPRNG. Everything
//! else is derived from it (PROTOCOL.md, "Group keys" and "Sealing"):
//!
//! ```text
//! key_id     = SHA-256("mcsec v1 key id" || secret)[0..4]        (big-endian u32)
//! PRK        = HKDF-Extract[salt = none](secret)
//! sender_key = HKDF-Expand[PRK]("mcsec v1 sender key" || key_id || sender_id, 32)
//! ```
//!
//! A key file is UTF-8 text with one key a line:
//!
//! ```text
//! mcsec-key-v1 <key_id: 8 hex> <secret: 64 hex> [created=<RFC 3339 UTC>]
//! ```
//!
//! Secrets live in types that zeroize on drop and whose `Debug` prints only
//! the key ID. Errors name the file and the line number, never the line.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use hkdf::Hkdf;
use rand::TryRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::frame::SenderId;

/// Length of a group secret in bytes.
pub const SECRET_LEN: usize = 32;

/// The largest key file we read. A key line is about 120 bytes, so this holds
/// hundreds of keys; anything larger is not a key file.
pub const KEY_FILE_MAX_BYTES: u64 = 64 * 1024;

/// The first token of every key line.
pub const KEY_LINE_TAG: &str = "mcsec-key-v1";

/// The 15-byte label hashed in front of the secret to make its key ID.
const KEY_ID_LABEL: &[u8] = b"mcsec v1 key id";

/// The 19-byte HKDF info label for per-sender keys.
const SENDER_KEY_LABEL: &[u8] = b"mcsec v1 sender key";

/// A key's public identifier: the first four bytes of
/// `SHA-256("mcsec v1 key id" || secret)`, big-endian.
///
/// Displays and parses as 8 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl KeyId {
    /// The ID as it appears on the wire.
    pub fn to_be_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = InvalidKeyId;

    /// Accepts exactly 8 lowercase hex digits, as key files write them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; 4] = crate::hex::decode_lower(s).ok_or(InvalidKeyId)?;
        Ok(Self(u32::from_be_bytes(bytes)))
    }
}

/// A string that is not 8 lowercase hex digits was given as a key ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key ID is 8 lowercase hex digits")]
pub struct InvalidKeyId;

/// A 32-byte group secret. Zeroized on drop; `Debug` shows only its key ID.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct GroupSecret([u8; SECRET_LEN]);

impl GroupSecret {
    /// Draws a new secret from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; SECRET_LEN];
        rand::rngs::SysRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| KeyError::Rng(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// Wraps existing secret bytes (from a test vector, say).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// The secret's bytes. Handle with care: they are the group's key.
    pub fn expose_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// `SHA-256("mcsec v1 key id" || secret)[0..4]` as a big-endian u32.
    pub fn key_id(&self) -> KeyId {
        let digest = Sha256::new()
            .chain_update(KEY_ID_LABEL)
            .chain_update(self.0)
            .finalize();
        let mut id = [0u8; 4];
        id.copy_from_slice(&digest[..4]);
        KeyId(u32::from_be_bytes(id))
    }
}

impl fmt::Debug for GroupSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupSecret")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// One key of a keyring: the secret, its ID, the HKDF pseudo-random key
/// (extracted once, expanded per sender) and when it was created.
#[derive(Clone)]
pub struct GroupKey {
    id: KeyId,
    secret: GroupSecret,
    prk: Zeroizing<[u8; 32]>,
    created: Option<SystemTime>,
}

impl GroupKey {
    /// Makes a key from a secret, deriving its ID and HKDF PRK.
    pub fn new(secret: GroupSecret, created: Option<SystemTime>) -> Self {
        let id = secret.key_id();
        let (prk, _) = Hkdf::<Sha256>::extract(None, secret.expose_bytes());
        let mut prk_bytes = Zeroizing::new([0u8; 32]);
        prk_bytes.copy_from_slice(&prk);
        Self {
            id,
            secret,
            prk: prk_bytes,
            created,
        }
    }

    /// A new random key stamped with `created`.
    pub fn generate(created: SystemTime) -> Result<Self, KeyError> {
        Ok(Self::new(GroupSecret::generate()?, Some(created)))
    }

    /// The key's ID.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The group secret.
    pub fn secret(&self) -> &GroupSecret {
        &self.secret
    }

    /// When the key was created, if its line says.
    pub fn created(&self) -> Option<SystemTime> {
        self.created
    }

    /// The key's line in a key file (without a newline). It holds the secret,
    /// so it is zeroized when dropped.
    pub fn to_line(&self) -> Zeroizing<String> {
        let mut line = Zeroizing::new(String::with_capacity(128));
        line.push_str(KEY_LINE_TAG);
        line.push(' ');
        line.push_str(&self.id.to_string());
        line.push(' ');
        for byte in self.secret.expose_bytes() {
            crate::hex::push_byte(&mut line, *byte);
        }
        if let Some(created) = self.created {
            line.push_str(" created=");
            line.push_str(&humantime::format_rfc3339_seconds(created).to_string());
        }
        line
    }

    /// `HKDF-Expand[PRK]("mcsec v1 sender key" || key_id || sender_id, 32)`.
    pub fn sender_key(&self, sender_id: &SenderId) -> Zeroizing<[u8; 32]> {
        let mut okm = Zeroizing::new([0u8; 32]);
        // SHA-256's PRK is 32 bytes, the length extract gave us.
        let Ok(hkdf) = Hkdf::<Sha256>::from_prk(&self.prk[..]) else {
            unreachable!("a 32-byte PRK is valid for HKDF-SHA256");
        };
        let info: [&[u8]; 3] = [
            SENDER_KEY_LABEL,
            &self.id.to_be_bytes(),
            sender_id.as_bytes(),
        ];
        if hkdf.expand_multi_info(&info, &mut okm[..]).is_err() {
            unreachable!("32 bytes is within HKDF-SHA256's output limit");
        }
        okm
    }

    /// The AEAD for one sender of this key.
    pub(crate) fn sender_cipher(&self, sender_id: &SenderId) -> ChaCha20Poly1305 {
        let key = self.sender_key(sender_id);
        let key: &[u8; 32] = &key;
        ChaCha20Poly1305::new(key.into())
    }
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupKey")
            .field("id", &self.id)
            .field(
                "created",
                &self.created.map(humantime::format_rfc3339_seconds),
            )
            .finish_non_exhaustive()
    }
}

/// The keys of a key file, in file order. Never empty.
///
/// Receivers accept every key; senders seal with the last one.
#[derive(Clone, Debug)]
pub struct Keyring {
    /// Each key with the 1-based line number it came from (0 if it did not
    /// come from text).
    keys: Vec<(usize, GroupKey)>,
}

impl Keyring {
    /// A keyring of one key.
    pub fn single(key: GroupKey) -> Self {
        Self {
            keys: vec![(0, key)],
        }
    }

    /// Parses key file text. Errors carry the line number and no path; use
    /// [`Keyring::load`] for files.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<(usize, GroupKey)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            // PROTOCOL.md: blank lines and lines starting with `#` are
            // ignored. Taken literally (an indented `#` is not a comment), so
            // that every file we accept, other implementations accept too.
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let key = parse_key_line(line).map_err(|problem| KeyError::Line {
                path: PathBuf::new(),
                line: line_no,
                problem,
            })?;
            if let Some((first_line, _)) = keys.iter().find(|(_, k)| k.id == key.id) {
                return Err(KeyError::DuplicateKeyId {
                    path: PathBuf::new(),
                    line: line_no,
                    first_line: *first_line,
                    id: key.id,
                });
            }
            keys.push((line_no, key));
        }
        if keys.is_empty() {
            return Err(KeyError::NoKeys {
                path: PathBuf::new(),
            });
        }
        Ok(Self { keys })
    }

    /// Reads and parses a key file, refusing one that group or others can
    /// access (on Unix), one that is not a regular file and one larger than
    /// [`KEY_FILE_MAX_BYTES`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        Self::parse(&text).map_err(|e| e.with_path(path))
    }

    /// The key senders seal with: the last key line.
    pub fn sending_key(&self) -> &GroupKey {
        match self.keys.last() {
            Some((_, key)) => key,
            None => unreachable!("a keyring is never empty"),
        }
    }

    /// The key with this ID, if the keyring holds it.
    pub fn get(&self, id: KeyId) -> Option<&GroupKey> {
        self.keys.iter().map(|(_, k)| k).find(|k| k.id == id)
    }

    /// Every key, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &GroupKey> {
        self.keys.iter().map(|(_, k)| k)
    }

    /// How many keys the keyring holds (at least one).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a keyring holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn line_of(&self, id: KeyId) -> Option<usize> {
        self.keys
            .iter()
            .find(|(_, k)| k.id == id)
            .map(|(line, _)| *line)
    }
}

/// Parses one non-comment line. The error never holds the line's text.
fn parse_key_line(line: &str) -> Result<GroupKey, LineProblem> {
    // Fields are separated by single spaces, as PROTOCOL.md writes them.
    let mut fields = line.split(' ');
    if fields.next() != Some(KEY_LINE_TAG) {
        return Err(LineProblem::NotAKeyLine);
    }
    let id: KeyId = fields
        .next()
        .ok_or(LineProblem::MissingKeyId)?
        .parse()
        .map_err(|_| LineProblem::BadKeyId)?;
    let secret_hex = fields.next().ok_or(LineProblem::MissingSecret)?;
    let secret = GroupSecret::from_bytes(
        crate::hex::decode_lower::<SECRET_LEN>(secret_hex).ok_or(LineProblem::BadSecret)?,
    );
    let mut created = None;
    for field in fields {
        match field.strip_prefix("created=") {
            Some(stamp) if created.is_none() => {
                created = Some(parse_created(stamp).ok_or(LineProblem::BadCreated)?);
            }
            _ => return Err(LineProblem::UnexpectedField),
        }
    }
    // The ID is public, but comparing in constant time costs nothing and
    // keeps the rule "IDs of secrets compare in constant time" simple.
    if !bool::from(secret.key_id().to_be_bytes().ct_eq(&id.to_be_bytes())) {
        return Err(LineProblem::KeyIdMismatch);
    }
    Ok(GroupKey::new(secret, created))
}

/// RFC 3339 in UTC: the stamp must end in `Z`.
fn parse_created(stamp: &str) -> Option<SystemTime> {
    if !stamp.ends_with('Z') {
        return None;
    }
    humantime::parse_rfc3339(stamp).ok()
}

/// What is wrong with one line of a key file. Never holds the line itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineProblem {
    /// The line does not start with `mcsec-key-v1`.
    NotAKeyLine,
    /// The key ID is missing.
    MissingKeyId,
    /// The key ID is not 8 lowercase hex digits.
    BadKeyId,
    /// The secret is missing.
    MissingSecret,
    /// The secret is not 64 lowercase hex digits.
    BadSecret,
    /// The `created=` stamp is not RFC 3339 in UTC.
    BadCreated,
    /// A field other than one `created=` follows the secret.
    UnexpectedField,
    /// The key ID is not the one derived from the secret: the line is corrupt.
    KeyIdMismatch,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAKeyLine => "not a key line (expected it to start with `mcsec-key-v1`)",
            Self::MissingKeyId => "the key ID is missing",
            Self::BadKeyId => "the key ID is not 8 lowercase hex digits",
            Self::MissingSecret => "the secret is missing",
            Self::BadSecret => "the secret is not 64 lowercase hex digits",
            Self::BadCreated => {
                "the created= stamp is not an RFC 3339 UTC time (like 2026-01-31T12:00:00Z)"
            }
            Self::UnexpectedField => {
                "unexpected text after the secret (only one created=... may follow)"
            }
            Self::KeyIdMismatch => "the key ID does not match the secret: the line is corrupt",
        })
    }
}

/// Everything that can go wrong with keys and key files.
///
/// No variant holds secret bytes or the text of a key line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The key file is readable or writable by group or others.
    #[error(
        "{}: key file is accessible by group or others (mode {mode:04o}); it holds a secret",
        path.display()
    )]
    OpenPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is not a regular file.
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The key file is larger than [`KEY_FILE_MAX_BYTES`].
    #[error("{}: larger than {KEY_FILE_MAX_BYTES} bytes: not a key file", path.display())]
    TooLarge {
        /// The key file.
        path: PathBuf,
    },
    /// The key file is not UTF-8 text.
    #[error("{}: not UTF-8 text", display_path(path))]
    NotText {
        /// The key file.
        path: PathBuf,
    },
    /// A line of the key file is not a valid key line.
    #[error("{}: line {line}: {problem}", display_path(path))]
    Line {
        /// The key file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: LineProblem,
    },
    /// Two lines hold the same key.
    #[error(
        "{}: line {line}: key {id} is already on line {first_line}",
        display_path(path)
    )]
    DuplicateKeyId {
        /// The key file.
        path: PathBuf,
        /// 1-based line of the second copy.
        line: usize,
        /// 1-based line of the first copy.
        first_line: usize,
        /// The repeated ID.
        id: KeyId,
    },
    /// The key file holds no key lines.
    #[error("{}: no keys in the file", display_path(path))]
    NoKeys {
        /// The key file.
        path: PathBuf,
    },
    /// The file to create exists already.
    #[error("{}: already exists", path.display())]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// No key with that ID is in the file.
    #[error("{}: no key {id} in the file", path.display())]
    NoSuchKey {
        /// The key file.
        path: PathBuf,
        /// The ID asked for.
        id: KeyId,
    },
    /// Retiring the only key would leave an empty keyring.
    #[error("{}: key {id} is the only key; retiring it would leave no key", path.display())]
    LastKey {
        /// The key file.
        path: PathBuf,
        /// The ID asked for.
        id: KeyId,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Rng(String),
}

fn display_path(path: &Path) -> std::path::Display<'_> {
    if path.as_os_str().is_empty() {
        Path::new("key text").display()
    } else {
        path.display()
    }
}

impl KeyError {
    fn with_path(self, file: &Path) -> Self {
        match self {
            Self::NotText { .. } => Self::NotText { path: file.into() },
            Self::Line { line, problem, .. } => Self::Line {
                path: file.into(),
                line,
                problem,
            },
            Self::DuplicateKeyId {
                line,
                first_line,
                id,
                ..
            } => Self::DuplicateKeyId {
                path: file.into(),
                line,
                first_line,
                id,
            },
            Self::NoKeys { .. } => Self::NoKeys { path: file.into() },
            other => other,
        }
    }

    /// A suggestion for the person who met this error, if there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::OpenPermissions { path, .. } => Some(format!(
                "restrict it to its owner: chmod 600 {}",
                path.display()
            )),
            Self::Io { source, path } if source.kind() == io::ErrorKind::NotFound => Some(format!(
                "create a key with: mcsec keygen -o {}",
                path.display()
            )),
            Self::Line {
                problem: LineProblem::KeyIdMismatch,
                ..
            } => Some("the line was altered or truncated; restore the file from its source".into()),
            Self::Exists { .. } => Some("pass --force to replace it".into()),
            Self::LastKey { .. } => Some("to stop using the group, delete the key file".into()),
            _ => None,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.into(),
        source,
    }
}

/// Reads a key file's text after checking, on the opened file itself, that
/// it is a regular file private to its owner and not too large.
fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let file = File::open(path).map_err(io_error(path))?;
    let meta = file.metadata().map_err(io_error(path))?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile { path: path.into() });
    }
    check_private(path, &meta)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(KEY_FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() as u64 > KEY_FILE_MAX_BYTES {
        return Err(KeyError::TooLarge { path: path.into() });
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(_) => Err(KeyError::NotText { path: path.into() }),
    }
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    // PROTOCOL.md requires refusing group/other read; we refuse any access
    // for them, as OpenSSH does: a key others can write, they can replace.
    if mode & 0o077 != 0 {
        return Err(KeyError::OpenPermissions {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

/// The text of a key file holding `key`, with a comment that says what it is.
pub fn new_key_file_text(key: &GroupKey) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(256));
    text.push_str("# mcsec group key file: a secret. Anyone holding it can read and send\n");
    text.push_str("# on the group. Keep it mode 0600; never commit it.\n");
    text.push_str(&key.to_line());
    text.push('\n');
    text
}

/// Creates a key file with mode 0600. Refuses to replace an existing file
/// unless `force`, in which case the old file is replaced atomically.
pub fn create_key_file(path: &Path, key: &GroupKey, force: bool) -> Result<(), KeyError> {
    let text = new_key_file_text(key);
    if force {
        return replace_file(path, text.as_bytes(), 0o600);
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            KeyError::Exists { path: path.into() }
        } else {
            KeyError::Io {
                path: path.into(),
                source,
            }
        }
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

/// Appends a new key to a key file, making it the sending key. The file is
/// replaced atomically and keeps its mode. Returns the new key's ID.
pub fn rotate_key_file(path: &Path, now: SystemTime) -> Result<KeyId, KeyError> {
    let text = read_key_file(path)?;
    let ring = Keyring::parse(&text).map_err(|e| e.with_path(path))?;
    let mut key = GroupKey::generate(now)?;
    // Two keys with one ID would make the file invalid; a 32-bit collision
    // is rare but possible, so draw again.
    while ring.get(key.id()).is_some() {
        key = GroupKey::generate(now)?;
    }
    let mut new_text = Zeroizing::new(String::with_capacity(text.len() + 128));
    new_text.push_str(&text);
    if !new_text.is_empty() && !new_text.ends_with('\n') {
        new_text.push('\n');
    }
    new_text.push_str(&key.to_line());
    new_text.push('\n');
    replace_file(path, new_text.as_bytes(), file_mode(path)?)?;
    Ok(key.id())
}

/// Removes the key with `id` from a key file (its line only; comments stay).
/// Refuses to remove the only key.
pub fn retire_key_file(path: &Path, id: KeyId) -> Result<(), KeyError> {
    let text = read_key_file(path)?;
    let ring = Keyring::parse(&text).map_err(|e| e.with_path(path))?;
    let Some(line_no) = ring.line_of(id) else {
        return Err(KeyError::NoSuchKey {
            path: path.into(),
            id,
        });
    };
    if ring.len() == 1 {
        return Err(KeyError::LastKey {
            path: path.into(),
            id,
        });
    }
    let mut new_text = Zeroizing::new(String::with_capacity(text.len()));
    for (index, line) in text.lines().enumerate() {
        if index + 1 != line_no {
            new_text.push_str(line);
            new_text.push('\n');
        }
    }
    replace_file(path, new_text.as_bytes(), file_mode(path)?)
}

#[cfg(unix)]
fn file_mode(path: &Path) -> Result<u32, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(io_error(path))?;
    Ok(meta.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn file_mode(_path: &Path) -> Result<u32, KeyError> {
    Ok(0o600)
}

/// Writes `bytes` to a new file beside `path` with `mode`, syncs it and
/// renames it over `path`: readers see the old file or the new, never half.
fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // tempfile creates the file 0600 and with O_EXCL, so the secret is never
    // readable by others, even for a moment.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_error(path))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_error(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_error(path))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.persist(path).map_err(|e| KeyError::Io {
        path: path.into(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> GroupSecret {
        GroupSecret::from_bytes([byte; SECRET_LEN])
    }

    #[test]
    fn key_id_is_first_four_bytes_of_labelled_sha256() {
        let s = secret(7);
        let mut hasher = Sha256::new();
        hasher.update(b"mcsec v1 key id");
        hasher.update([7u8; 32]);
        let digest = hasher.finalize();
        let expected = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        assert_eq!(s.key_id(), KeyId(expected));
    }

    #[test]
    fn line_round_trips() {
        let key = GroupKey::new(
            secret(0xab),
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)),
        );
        let line = key.to_line();
        assert!(line.ends_with(" created=2023-11-14T22:13:20Z"), "{}", *line);
        let ring = Keyring::parse(&line).unwrap();
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.sending_key().id(), key.id());
        assert_eq!(ring.sending_key().secret().expose_bytes(), &[0xab; 32]);
        assert_eq!(ring.sending_key().created(), key.created());
    }

    #[test]
    fn comments_blank_lines_and_last_key_sends() {
        let a = GroupKey::new(secret(1), None);
        let b = GroupKey::new(secret(2), None);
        let text = format!("# comment\n\n   \n{}\r\n\n{}\n", *a.to_line(), *b.to_line());
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.sending_key().id(), b.id());
        assert!(ring.get(a.id()).is_some());
        assert!(ring.get(KeyId(a.id().0 ^ 1)).is_none());
    }

    fn line_error(text: &str) -> (usize, LineProblem) {
        match Keyring::parse(text) {
            Err(KeyError::Line { line, problem, .. }) => (line, problem),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn bad_lines_name_their_number_and_problem() {
        let good = GroupKey::new(secret(0xab), None).to_line().to_string();
        let id = good.split(' ').nth(1).unwrap().to_owned();
        let hex = good.split(' ').nth(2).unwrap().to_owned();
        let cases = [
            ("mcsec-key-v2 x y".to_owned(), LineProblem::NotAKeyLine),
            ("mcsec-key-v1".to_owned(), LineProblem::MissingKeyId),
            (format!("mcsec-key-v1 {id}"), LineProblem::MissingSecret),
            (
                format!("mcsec-key-v1 {} {hex}", id.to_uppercase()),
                LineProblem::BadKeyId,
            ),
            (
                format!("mcsec-key-v1 {id} {}", hex.to_uppercase()),
                LineProblem::BadSecret,
            ),
            (
                format!("mcsec-key-v1 {id} {}", &hex[..62]),
                LineProblem::BadSecret,
            ),
            (
                format!("mcsec-key-v1 {id} {hex} extra"),
                LineProblem::UnexpectedField,
            ),
            (
                format!("mcsec-key-v1 {id} {hex} "),
                LineProblem::UnexpectedField,
            ),
            (format!("mcsec-key-v1  {id} {hex}"), LineProblem::BadKeyId),
            (
                format!("mcsec-key-v1\t{id} {hex}"),
                LineProblem::NotAKeyLine,
            ),
            ("  # indented".to_owned(), LineProblem::NotAKeyLine),
            (
                format!("mcsec-key-v1 {id} {hex} created=2026-01-01T00:00:00+01:00"),
                LineProblem::BadCreated,
            ),
            (
                format!(
                    "mcsec-key-v1 {id} {hex} created=2026-01-01T00:00:00Z created=2026-01-01T00:00:00Z"
                ),
                LineProblem::UnexpectedField,
            ),
            (
                format!("mcsec-key-v1 00000000 {hex}"),
                LineProblem::KeyIdMismatch,
            ),
        ];
        for (line, problem) in cases {
            let text = format!("# header\n\n{line}\n");
            assert_eq!(line_error(&text), (3, problem), "line {line:?}");
        }
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let line = GroupKey::new(secret(4), None).to_line().to_string();
        match Keyring::parse(&format!("{line}\n#\n{line}\n")) {
            Err(KeyError::DuplicateKeyId {
                line: 3,
                first_line: 1,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_keyring_is_refused() {
        assert!(matches!(
            Keyring::parse("# nothing\n\n"),
            Err(KeyError::NoKeys { .. })
        ));
    }

    #[test]
    fn secret_debug_and_errors_print_no_key_bytes() {
        let s = secret(0x5a);
        let hex_secret = "5a".repeat(32);
        let debug = format!("{s:?} {:?}", GroupKey::new(s.clone(), None));
        assert!(!debug.contains(&hex_secret), "{debug}");
        assert!(!debug.contains("90, 90"), "{debug}");
        assert!(debug.contains(&s.key_id().to_string()), "{debug}");
        // Errors about a line holding the secret never echo it.
        let line = GroupKey::new(s, None).to_line().to_string();
        let bad = line.replacen("mcsec-key-v1 ", "mcsec-key-v1 00000000 ", 1);
        for text in [
            bad.clone(),
            format!("{line} junk"),
            format!("{line}\n{line}"),
        ] {
            let err = Keyring::parse(&text).unwrap_err();
            let shown = format!("{err} {err:?} {:?}", err.hint());
            assert!(!shown.contains(&hex_secret), "{shown}");
        }
    }

    #[test]
    fn generated_secrets_differ() {
        let a = GroupSecret::generate().unwrap();
        let b = GroupSecret::generate().unwrap();
        assert_ne!(a.expose_bytes(), b.expose_bytes());
    }

    #[cfg(unix)]
    #[test]
    fn key_file_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = GroupKey::generate(SystemTime::now()).unwrap();
        create_key_file(&path, &key, false).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o644, false),
            (0o640, false),
            (0o604, false),
            (0o620, false),
            (0o602, false),
        ] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let result = Keyring::load(&path);
            match (ok, &result) {
                (true, Ok(ring)) => assert_eq!(ring.sending_key().id(), key.id()),
                (false, Err(KeyError::OpenPermissions { mode: m, .. })) => {
                    assert_eq!(*m, mode);
                    let err = result.as_ref().unwrap_err();
                    assert!(err.to_string().contains(&format!("{mode:04o}")));
                    assert!(err.hint().unwrap().contains("chmod 600"));
                }
                _ => panic!("mode {mode:o}: {result:?}"),
            }
        }
    }

    #[test]
    fn create_never_overwrites_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let first = GroupKey::generate(SystemTime::now()).unwrap();
        let second = GroupKey::generate(SystemTime::now()).unwrap();
        create_key_file(&path, &first, false).unwrap();
        assert!(matches!(
            create_key_file(&path, &second, false),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(Keyring::load(&path).unwrap().sending_key().id(), first.id());
        create_key_file(&path, &second, true).unwrap();
        assert_eq!(
            Keyring::load(&path).unwrap().sending_key().id(),
            second.id()
        );
    }

    #[test]
    fn rotate_appends_and_retire_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let first = GroupKey::generate(SystemTime::now()).unwrap();
        create_key_file(&path, &first, false).unwrap();
        let new_id = rotate_key_file(&path, SystemTime::now()).unwrap();
        let ring = Keyring::load(&path).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.sending_key().id(), new_id);
        assert!(ring.get(first.id()).is_some());
        // The comment header survives.
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .starts_with("# mcsec group key file")
        );

        retire_key_file(&path, first.id()).unwrap();
        let ring = Keyring::load(&path).unwrap();
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.sending_key().id(), new_id);
        assert!(matches!(
            retire_key_file(&path, first.id()),
            Err(KeyError::NoSuchKey { .. })
        ));
        assert!(matches!(
            retire_key_file(&path, new_id),
            Err(KeyError::LastKey { .. })
        ));
    }

    #[test]
    fn oversized_and_binary_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        fs::write(&big, vec![b'#'; KEY_FILE_MAX_BYTES as usize + 1]).unwrap();
        restrict(&big);
        assert!(matches!(
            Keyring::load(&big),
            Err(KeyError::TooLarge { .. })
        ));
        let bin = dir.path().join("bin");
        fs::write(&bin, [0xff, 0xfe, 0x00]).unwrap();
        restrict(&bin);
        assert!(matches!(Keyring::load(&bin), Err(KeyError::NotText { .. })));
        assert!(matches!(
            Keyring::load(dir.path()),
            Err(KeyError::NotAFile { .. })
        ));
    }

    fn restrict(path: &Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}
