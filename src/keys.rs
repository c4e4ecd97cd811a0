//! Group secrets, key IDs, keyring files and the channel key derivation.
//!
//! A group secret is 32 bytes from the operating system's CSPRNG. Everything
//! else is derived from it (PROTOCOL.md, "Group keys" and "Channels"):
//!
//! ```text
//! key_id      = SHA-256("mcsec v1 key id" || secret)[0..4]        (big-endian u32)
//! PRK         = HKDF-Extract[salt = none](secret)
//! channel_key = HKDF-Expand[PRK]("mcsec v2 channel key" || key_id || channel_id, 32)
//! ```
//!
//! A key file is UTF-8 text that matches PROTOCOL.md's ABNF exactly: one
//! key a line, comments starting in the first column, empty lines, LF or
//! CR LF line ends, and no other whitespace anywhere outside comments:
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
use std::time::SystemTime;

use hkdf::Hkdf;
use rand::TryRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::frame::ChannelId;
/// [`KeyId`] lives with the other header fields in [`crate::frame`]; here
/// too, where keys are made.
pub use crate::frame::{InvalidKeyId, KeyId};

/// Length of a group secret in bytes.
pub const SECRET_LEN: usize = 32;

/// The largest key file we read. A key line is about 120 bytes, so this holds
/// hundreds of keys; anything larger is not a key file.
pub const KEY_FILE_MAX_BYTES: u64 = 64 * 1024;

/// The first token of every key line.
pub const KEY_LINE_TAG: &str = "mcsec-key-v1";

/// The 15-byte label hashed in front of the secret to make its key ID.
const KEY_ID_LABEL: &[u8] = b"mcsec v1 key id";

/// The 20-byte HKDF info label for channel keys.
const CHANNEL_KEY_LABEL: &[u8] = b"mcsec v2 channel key";

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
/// (extracted once, expanded per channel) and when it was created.
#[derive(Clone)]
pub struct GroupKey {
    id: KeyId,
    secret: GroupSecret,
    prk: Zeroizing<[u8; 32]>,
    created: Option<Stamp>,
}

/// A `created=` stamp: the time, and the text it was read from, so a key
/// line is written back exactly as it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    time: SystemTime,
    text: Box<str>,
}

impl GroupKey {
    /// Makes a key from a secret, deriving its ID and HKDF PRK. `created`
    /// is kept to the second; a time outside the years 0000 to 9999, which
    /// a key line cannot hold, is dropped.
    pub fn new(secret: GroupSecret, created: Option<SystemTime>) -> Self {
        let created = created.and_then(|time| {
            let text = stamp::format(time)?;
            let time = stamp::parse(&text)?;
            Some(Stamp {
                time,
                text: text.into(),
            })
        });
        Self::with_stamp(secret, created)
    }

    fn with_stamp(secret: GroupSecret, created: Option<Stamp>) -> Self {
        let id = secret.key_id();
        let (mut prk, _) = Hkdf::<Sha256>::extract(None, secret.expose_bytes());
        let mut prk_bytes = Zeroizing::new([0u8; 32]);
        prk_bytes.copy_from_slice(&prk);
        prk.zeroize();
        Self {
            id,
            secret,
            prk: prk_bytes,
            created,
        }
    }

    /// A key whose ID is `id`, not the one its secret derives: two secrets
    /// under one ID, the 32-bit collision that `Opener::set_keyring` must
    /// not be fooled by. Tests only.
    #[cfg(test)]
    pub(crate) fn colliding(secret: GroupSecret, id: KeyId) -> Self {
        Self {
            id,
            ..Self::with_stamp(secret, None)
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
        self.created.as_ref().map(|s| s.time)
    }

    /// The `created=` stamp exactly as the key line has it.
    pub fn created_text(&self) -> Option<&str> {
        self.created.as_ref().map(|s| &*s.text)
    }

    /// The key's line in a key file (without a newline). It holds the secret,
    /// so it is zeroized when dropped.
    pub fn to_line(&self) -> Zeroizing<String> {
        let mut line = Zeroizing::new(String::with_capacity(128));
        line.push_str(KEY_LINE_TAG);
        line.push(' ');
        line.push_str(&self.id.to_string());
        line.push(' ');
        crate::hex::push(&mut line, self.secret.expose_bytes());
        if let Some(created) = &self.created {
            line.push_str(" created=");
            line.push_str(&created.text);
        }
        line
    }

    /// `HKDF-Expand[PRK]("mcsec v2 channel key" || key_id || channel_id, 32)`:
    /// the XChaCha20-Poly1305 key of every frame sealed under this key for
    /// `channel`. Derived once per (key, channel), never per frame.
    pub fn channel_key(&self, channel: &ChannelId) -> Zeroizing<[u8; 32]> {
        let mut okm = Zeroizing::new([0u8; 32]);
        // SHA-256's PRK is 32 bytes, the length extract gave us.
        let Ok(hkdf) = Hkdf::<Sha256>::from_prk(&self.prk[..]) else {
            unreachable!("a 32-byte PRK is valid for HKDF-SHA256");
        };
        let info: [&[u8]; 3] = [
            CHANNEL_KEY_LABEL,
            &self.id.to_be_bytes(),
            channel.as_bytes(),
        ];
        if hkdf.expand_multi_info(&info, &mut okm[..]).is_err() {
            unreachable!("32 bytes is within HKDF-SHA256's output limit");
        }
        okm
    }
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupKey")
            .field("id", &self.id)
            .field("created", &self.created_text())
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

    /// Parses key file text against PROTOCOL.md's grammar, exactly: LF or
    /// CR LF line ends, empty lines, comments that start in the first
    /// column, key lines, and nothing else (no stray whitespace, no control
    /// characters but a tab inside a comment). Errors carry the line number
    /// and no path; use [`Keyring::load`] for files.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<(usize, GroupKey)> = Vec::new();
        for (index, content) in file_lines(text).enumerate() {
            let line_no = index + 1;
            let at_line = |problem| KeyError::Line {
                path: PathBuf::new(),
                line: line_no,
                problem,
            };
            if content.is_empty() {
                continue;
            }
            if let Some(comment) = content.strip_prefix('#') {
                if comment.chars().all(is_comment_char) {
                    continue;
                }
                return Err(at_line(LineProblem::ControlCharacter));
            }
            let key = parse_key_line(content).map_err(at_line)?;
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

/// The `content` of each line of a key file (PROTOCOL.md's ABNF): the text
/// between line ends, where a line end is LF or CR LF. A CR anywhere else
/// stays in the content, where the grammar refuses it. A final line with
/// no line end is a line; an empty text after the last LF is not.
pub(crate) fn file_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.split_once('\n') {
            Some((line, after)) => {
                rest = Some(after);
                Some(line.strip_suffix('\r').unwrap_or(line))
            }
            None => {
                rest = None;
                (!current.is_empty()).then_some(current)
            }
        }
    })
}

/// `%x09 / %x20-7E / %x80-10FFFF`: what a comment may hold after its `#`.
pub(crate) fn is_comment_char(c: char) -> bool {
    c == '\t' || (' '..='~').contains(&c) || c >= '\u{80}'
}

/// Parses one key line. The error never holds the line's text.
fn parse_key_line(line: &str) -> Result<GroupKey, LineProblem> {
    if line.starts_with(' ') || line.ends_with(' ') || line.contains("  ") || line.contains('\t') {
        return Err(LineProblem::StrayWhitespace);
    }
    if line.chars().any(|c| c.is_control()) {
        return Err(LineProblem::ControlCharacter);
    }
    // Fields are separated by single spaces.
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
    let created = match (fields.next(), fields.next()) {
        (None, _) => None,
        (Some(field), None) => {
            let text = field
                .strip_prefix("created=")
                .ok_or(LineProblem::UnexpectedField)?;
            let time = stamp::parse(text).ok_or(LineProblem::BadCreated)?;
            Some(Stamp {
                time,
                text: text.into(),
            })
        }
        (Some(_), Some(_)) => return Err(LineProblem::UnexpectedField),
    };
    // The ID is public, but comparing in constant time costs nothing and
    // keeps the rule "IDs of secrets compare in constant time" simple.
    if !bool::from(secret.key_id().to_be_bytes().ct_eq(&id.to_be_bytes())) {
        return Err(LineProblem::KeyIdMismatch);
    }
    Ok(GroupKey::with_stamp(secret, created))
}

/// `created=` stamps: `YYYY-MM-DDTHH:MM:SS[.1 to 9 digits]Z`, a real UTC
/// date and time (no leap second), years 0000 to 9999.
mod stamp {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const SECS_PER_DAY: i64 = 86_400;

    fn is_leap(year: i64) -> bool {
        year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
    }

    fn days_in_month(year: i64, month: u32) -> u32 {
        match month {
            2 if is_leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
    /// (Howard Hinnant's `days_from_civil`).
    fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = i64::from((month + 9) % 12);
        let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date of a day counted from 1970-01-01 (`civil_from_days`).
    fn civil_from_days(days: i64) -> (i64, u32, u32) {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        // Both are in range by construction: 1..=31 and 1..=12.
        (year, month as u32, day as u32)
    }

    fn digits(text: &str) -> Option<u32> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }

    /// The time a stamp names, or `None` if it is not one.
    pub(super) fn parse(text: &str) -> Option<SystemTime> {
        let main = text.strip_suffix('Z')?;
        let (whole, fraction) = match main.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (main, None),
        };
        let b = whole.as_bytes();
        if b.len() != 19
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let field = |range: std::ops::Range<usize>| whole.get(range).and_then(digits);
        let year = i64::from(field(0..4)?);
        let (month, day) = (field(5..7)?, field(8..10)?);
        let (hour, minute, second) = (field(11..13)?, field(14..16)?, field(17..19)?);
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let nanos = match fraction {
            None => 0,
            Some(f) if (1..=9).contains(&f.len()) => digits(f)? * 10u32.pow(9 - f.len() as u32),
            Some(_) => return None,
        };
        let secs = days_from_civil(year, month, day) * SECS_PER_DAY
            + i64::from(hour * 3600 + minute * 60 + second);
        let magnitude = Duration::new(secs.unsigned_abs(), 0);
        let whole_secs = if secs >= 0 {
            UNIX_EPOCH.checked_add(magnitude)?
        } else {
            UNIX_EPOCH.checked_sub(magnitude)?
        };
        whole_secs.checked_add(Duration::new(0, nanos))
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, rounded down), or `None`
    /// outside the years 0000 to 9999.
    pub(super) fn format(time: SystemTime) -> Option<String> {
        let secs = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).ok()?,
            Err(before) => {
                let d = before.duration();
                let whole = i64::try_from(d.as_secs()).ok()?;
                // Round toward the past: -0.5 s is 23:59:59 the day before.
                -whole - i64::from(d.subsec_nanos() > 0)
            }
        };
        let (year, month, day) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
        if !(0..=9999).contains(&year) {
            return None;
        }
        let in_day = secs.rem_euclid(SECS_PER_DAY);
        Some(format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            in_day / 3600,
            in_day / 60 % 60,
            in_day % 60
        ))
    }
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
    /// Leading or trailing whitespace, a tab, or two spaces in a row on a
    /// key line (and a line of only whitespace).
    StrayWhitespace,
    /// A control character (a CR that does not end the line, say) where the
    /// grammar has none.
    ControlCharacter,
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
            Self::StrayWhitespace => {
                "stray whitespace (fields are separated by single spaces; no tabs, no spaces at the ends, no blank-looking lines)"
            }
            Self::ControlCharacter => {
                "a control character (a carriage return not followed by a line feed, say); only a tab is allowed, inside a comment"
            }
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
    /// The key file belongs to another user (not root), who could rewrite it.
    #[error(
        "{}: key file is owned by user {owner}, not by this user ({me}) or root",
        path.display()
    )]
    ForeignOwner {
        /// The key file.
        path: PathBuf,
        /// Its owner's user ID.
        owner: u32,
        /// This process's effective user ID.
        me: u32,
    },
    /// The path is not a regular file.
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The path is a symbolic link where one is not followed.
    #[error("{}: is a symbolic link; refusing to replace it or what it points to", path.display())]
    Symlink {
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
    /// The key file changed (replaced, rewritten, given away) between our
    /// read and our rename; nothing was written.
    #[error(
        "{}: the key file changed while it was being rewritten; nothing was written",
        path.display()
    )]
    Changed {
        /// The key file.
        path: PathBuf,
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
            Self::ForeignOwner { path, me, .. } => Some(format!(
                "take ownership of it: chown {me} {}",
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
            Self::Io { source, path } if source.kind() == io::ErrorKind::PermissionDenied => {
                Some(format!(
                    "check the permissions of {} and of its directory",
                    path.display()
                ))
            }
            Self::NotAFile { .. } => {
                Some("a key file is a regular file: give the path of one".into())
            }
            Self::Symlink { path } => Some(format!(
                "give the path of the file itself, or remove the link {} first",
                path.display()
            )),
            Self::TooLarge { .. } | Self::NotText { .. } => {
                Some("a key file holds key lines and comments only: is this the right file?".into())
            }
            Self::Changed { .. } => Some(
                "another process changed it at the same time; check the file and run the command again"
                    .into(),
            ),
            Self::Exists { .. } => {
                Some("it is left as it was; write the new key file elsewhere".into())
            }
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

#[cfg(unix)]
fn os_error(path: &Path) -> impl FnOnce(rustix::io::Errno) -> KeyError + '_ {
    move |errno| KeyError::Io {
        path: path.into(),
        source: errno.into(),
    }
}

/// Reads a key file's text after checking, on the opened file itself, that
/// it is a regular file private to its owner and not too large.
fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        // A FIFO at the key path would block open(2) until a writer came;
        // non-blocking open returns at once and the type check refuses it.
        // On a regular file O_NONBLOCK changes nothing.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io_error(path))?;
    let (text, _) = read_opened(path, &file)?;
    Ok(text)
}

/// Reads a secret file (a signing key) with every check a key file gets.
pub(crate) fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    read_key_file(path)
}

/// Reads a public file that decides whom to trust (a trust file): a
/// regular file, not larger than [`KEY_FILE_MAX_BYTES`], UTF-8, and, on
/// Unix, writable by nobody but its owner, who is this user or root (as
/// OpenSSH's StrictModes treats authorized_keys): whoever can write it
/// can make us trust their key.
pub(crate) fn read_public_file(path: &Path) -> Result<String, KeyError> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        // As for key files: a FIFO must not block open(2); the type check
        // below refuses it.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io_error(path))?;
    let meta = file.metadata().map_err(io_error(path))?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile { path: path.into() });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(KeyError::OpenPermissions {
                path: path.into(),
                mode,
            });
        }
        check_owner(path, meta.uid())?;
    }
    let bytes = read_capped(path, &file)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| KeyError::NotText { path: path.into() })
}

/// Parses a `created=` stamp's text.
pub(crate) fn parse_stamp(text: &str) -> Option<SystemTime> {
    stamp::parse(text)
}

/// Formats a time as a `created=` stamp's text.
pub(crate) fn format_stamp(time: SystemTime) -> Option<String> {
    stamp::format(time)
}

/// Checks an opened key file through its descriptor (`fstat`: a regular
/// file, private to its owner, not too large), then reads it. Returns the
/// text and the metadata that was checked.
fn read_opened(path: &Path, file: &File) -> Result<(Zeroizing<String>, fs::Metadata), KeyError> {
    let meta = file.metadata().map_err(io_error(path))?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile { path: path.into() });
    }
    check_private(path, &meta, file)?;
    if meta.len() > KEY_FILE_MAX_BYTES {
        return Err(KeyError::TooLarge { path: path.into() });
    }
    let mut bytes = read_capped(path, file)?;
    // Move the bytes into the String without copying; on failure the Vec
    // comes back inside the error and is zeroized here.
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok((Zeroizing::new(text), meta)),
        Err(err) => {
            let mut rejected = err.into_bytes();
            rejected.zeroize();
            Err(KeyError::NotText { path: path.into() })
        }
    }
}

/// Reads at most [`KEY_FILE_MAX_BYTES`] from where `file` stands, refusing
/// more. The buffer is sized up front (plus one byte to see growth) so the
/// secret it holds is never reallocated and left behind in freed memory.
fn read_capped(path: &Path, file: &File) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    // Room for the most that can be read, whatever fstat said: a file
    // that grew since then must not make the buffer reallocate and leave
    // a copy of the secret in freed memory (found in review).
    let capacity = usize::try_from(KEY_FILE_MAX_BYTES + 1).unwrap_or(0);
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(KEY_FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() as u64 > KEY_FILE_MAX_BYTES {
        return Err(KeyError::TooLarge { path: path.into() });
    }
    Ok(bytes)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata, file: &File) -> Result<(), KeyError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = meta.permissions().mode() & 0o7777;
    // PROTOCOL.md requires refusing group/other read; we refuse any access
    // for them, as OpenSSH does: a key others can write, they can replace.
    if mode & 0o077 != 0 && !systemd_credential(path, meta, file) {
        return Err(KeyError::OpenPermissions {
            path: path.into(),
            mode,
        });
    }
    check_owner(path, meta.uid())
}

/// A key file someone else owns is theirs to rewrite (and, rewritten by us,
/// theirs to read): refuse it unless that someone is root (a service
/// reading a root-provisioned key).
#[cfg(unix)]
fn check_owner(path: &Path, owner: u32) -> Result<(), KeyError> {
    let me = process::effective_uid();
    if owner != me && owner != 0 {
        return Err(KeyError::ForeignOwner {
            path: path.into(),
            owner,
            me,
        });
    }
    Ok(())
}

#[cfg(unix)]
#[allow(unsafe_code)]
mod process {
    /// The process's effective user ID.
    pub(super) fn effective_uid() -> u32 {
        // SAFETY: geteuid(2) takes no arguments, touches no memory of ours
        // and cannot fail.
        unsafe { libc::geteuid() }
    }
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata, _file: &File) -> Result<(), KeyError> {
    Ok(())
}

/// Whether a key file that shows group bits is a credential that systemd's
/// `LoadCredential=` gave a service running as a user other than root
/// (`User=`, `DynamicUser=`), readable by root and this user alone.
///
/// systemd writes each credential owned by root with mode 0400 into a
/// root-owned directory on a read-only mount, and grants the service's
/// user read access with a POSIX ACL (`user:UID:r--`); with an ACL, stat
/// shows its mask (`r--`) in the group bits, so the file reads as mode
/// 0440. Accepted only if the ACL itself says what the plain check wants:
/// the file is root's, nobody may write or execute it, the only named user
/// is this one, the owning group, named groups and others get nothing, and
/// its directory is root's and writable by nobody else. (Where the file
/// system has no ACLs, systemd chowns the file to the service's user with
/// mode 0400, which the plain check accepts as it is.)
#[cfg(target_os = "linux")]
fn systemd_credential(path: &Path, meta: &fs::Metadata, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != 0 || meta.mode() & 0o7777 != 0o440 {
        return false;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir_ok = fs::metadata(dir).is_ok_and(|d| d.uid() == 0 && d.mode() & 0o022 == 0);
    let mut acl = [0u8; 1024];
    let Ok(len) = rustix::fs::fgetxattr(file, "system.posix_acl_access", &mut acl[..]) else {
        return false;
    };
    dir_ok && acl_private_to(acl.get(..len).unwrap_or_default(), process::effective_uid())
}

#[cfg(all(unix, not(target_os = "linux")))]
fn systemd_credential(_path: &Path, _meta: &fs::Metadata, _file: &File) -> bool {
    false
}

/// Whether a Linux `system.posix_acl_access` value (version 2: a u32, then
/// entries of tag u16, permissions u16 and ID u32, little-endian) grants
/// read access to named user `me` and to no other user or group but the
/// owner, and write or execute access to nobody.
#[cfg(unix)]
fn acl_private_to(acl: &[u8], me: u32) -> bool {
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const READ: u16 = 0x4;
    let Some((version, entries)) = acl.split_first_chunk::<4>() else {
        return false;
    };
    if u32::from_le_bytes(*version) != 2 || entries.len() % 8 != 0 {
        return false;
    }
    let mut grants_me = false;
    for entry in entries.chunks_exact(8) {
        let (Some(tag), Some(perm), Some(id)) = (
            entry.first_chunk::<2>().map(|b| u16::from_le_bytes(*b)),
            entry
                .get(2..4)
                .and_then(|b| b.try_into().ok())
                .map(u16::from_le_bytes),
            entry
                .get(4..8)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes),
        ) else {
            return false;
        };
        let ok = match tag {
            USER_OBJ | MASK => perm & !READ == 0,
            USER if id == me => {
                grants_me = perm == READ;
                perm & !READ == 0
            }
            GROUP_OBJ | OTHER => perm == 0,
            // Another named user, any named group, an unknown tag: more
            // readers than this user, or an ACL we do not understand.
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    grants_me
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

/// Creates a key file, owned by the calling user, with mode 0600.
///
/// Refuses to replace an existing file unless `force`. With `force`, the
/// file at `path` is replaced atomically (readers see the old key or the
/// new) if it is a regular file, not a symbolic link, owned by the caller or
/// by root; the new file belongs to the caller whoever owned the old one,
/// so the new secret is never handed to the old file's owner. Symbolic links
/// in the directories leading to `path` are followed; only the last
/// component is checked.
pub fn create_key_file(path: &Path, key: &GroupKey, force: bool) -> Result<(), KeyError> {
    let text = new_key_file_text(key);
    create_secret_file(path, text.as_bytes(), force)
}

/// Creates a secret file (a key file, a signing key) with `text`, as
/// [`create_key_file`] describes.
pub(crate) fn create_secret_file(path: &Path, text: &[u8], force: bool) -> Result<(), KeyError> {
    if force {
        return replace_with_new_file(path, text);
    }
    let mut options = fs::OpenOptions::new();
    // O_CREAT | O_EXCL: never follows a symlink, never opens an existing file.
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
    let written = restrict_new_file(&file)
        .and_then(|()| file.write_all(text))
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        // Leave no half-written key file behind.
        let _ = fs::remove_file(path);
        return Err(KeyError::Io {
            path: path.into(),
            source,
        });
    }
    sync_parent_dir(path);
    Ok(())
}

/// Sets a new key file's mode to exactly 0600, whatever the umask left.
fn restrict_new_file(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(())
    }
}

/// Appends a new key to a key file, making it the sending key. Returns the
/// new key's ID.
///
/// The file is replaced atomically and keeps its owner, group and mode, as
/// read from the descriptor the keys were read from. Through a symbolic
/// link, the file it points to (resolved once, at the start) is updated and
/// the link kept. If the file changes between the read and the rename
/// (replaced, rewritten, given away), nothing is written and the result is
/// [`KeyError::Changed`]. The new line takes the file's line end (CRLF if
/// its first line ends so, else LF).
pub fn rotate_key_file(path: &Path, now: SystemTime) -> Result<KeyId, KeyError> {
    let held = HeldKeyFile::open(path)?;
    let text = held.text();
    let ring = Keyring::parse(text).map_err(|e| e.with_path(path))?;
    let mut key = GroupKey::generate(now)?;
    // Two keys with one ID would make the file invalid; a 32-bit collision
    // is rare but possible, so draw again.
    while ring.get(key.id()).is_some() {
        key = GroupKey::generate(now)?;
    }
    let eol = match text.find('\n') {
        Some(end) if text[..end].ends_with('\r') => "\r\n",
        _ => "\n",
    };
    let mut new_text = Zeroizing::new(String::with_capacity(text.len() + 128));
    new_text.push_str(text);
    if !new_text.is_empty() && !new_text.ends_with('\n') {
        new_text.push_str(eol);
    }
    new_text.push_str(&key.to_line());
    new_text.push_str(eol);
    held.replace(path, new_text.as_bytes())?;
    Ok(key.id())
}

/// Removes the key with `id` from a key file (its line only; comments stay,
/// and every other line keeps its own line end, LF or CRLF). Refuses to
/// remove the only key. Replaces the file as [`rotate_key_file`] does, with
/// the same checks.
pub fn retire_key_file(path: &Path, id: KeyId) -> Result<(), KeyError> {
    let held = HeldKeyFile::open(path)?;
    let text = held.text();
    let ring = Keyring::parse(text).map_err(|e| e.with_path(path))?;
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
    // `split_inclusive('\n')` yields the same lines as the `lines()` the
    // parser numbers, each with its line end attached.
    let mut new_text = Zeroizing::new(String::with_capacity(text.len()));
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if index + 1 != line_no {
            new_text.push_str(line);
        }
    }
    held.replace(path, new_text.as_bytes())
}

/// A key file opened to be rewritten: the directory that holds the real
/// file (symbolic links resolved once, at open), its name there, the open
/// file and what was read from it. From then on nothing is looked up by
/// path: the mode and owner come from the descriptor (`fstat`), and the
/// replacement is created and renamed relative to the directory's
/// descriptor (`openat`, `renameat`).
#[cfg(unix)]
struct HeldKeyFile {
    dir: File,
    name: std::ffi::OsString,
    file: File,
    meta: fs::Metadata,
    text: Zeroizing<String>,
}

#[cfg(unix)]
impl HeldKeyFile {
    fn open(path: &Path) -> Result<Self, KeyError> {
        use rustix::fs::{CWD, Mode, OFlags, openat};
        let real = fs::canonicalize(path).map_err(io_error(path))?;
        let (Some(dir_path), Some(name)) = (real.parent(), real.file_name()) else {
            return Err(KeyError::NotAFile { path: path.into() });
        };
        let dir = openat(
            CWD,
            dir_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(os_error(path))?;
        // O_NOFOLLOW: a name that became a symlink since we resolved it is a
        // change. O_NONBLOCK: a FIFO does not block the open.
        let file = openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| match errno {
            rustix::io::Errno::LOOP => KeyError::Changed { path: path.into() },
            other => os_error(path)(other),
        })?;
        let file = File::from(file);
        let (text, meta) = read_opened(path, &file)?;
        Ok(Self {
            dir: File::from(dir),
            name: name.to_owned(),
            file,
            meta,
            text,
        })
    }

    fn text(&self) -> &str {
        &self.text
    }

    /// Writes `bytes` to a new file in the directory with the old file's
    /// owner, group and mode, checks that the old file is unchanged, renames
    /// the new one over it and syncs the directory.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mut tmp = TempInDir::create(&self.dir, path)?;
        tmp.file.write_all(bytes).map_err(io_error(path))?;
        // Keep the owner: root rotating root's key for a service must not
        // change it. `check_private` has made sure it is us or root.
        let (uid, gid) = (self.meta.uid(), self.meta.gid());
        let made = tmp.file.metadata().map_err(io_error(path))?;
        if (made.uid(), made.gid()) != (uid, gid) {
            std::os::unix::fs::fchown(&tmp.file, Some(uid), Some(gid)).map_err(io_error(path))?;
        }
        tmp.file
            .set_permissions(fs::Permissions::from_mode(self.meta.mode() & 0o7777))
            .and_then(|()| tmp.file.sync_all())
            .map_err(io_error(path))?;
        before_rename();
        self.check_unchanged(path)?;
        tmp.rename_over(&self.name, path)?;
        // Durable rename. Best effort: not every filesystem syncs directories.
        let _ = self.dir.sync_all();
        Ok(())
    }

    /// Refuses if the file we read is no longer the one at our name, or if
    /// it changed: metadata (`fstat` against the one we checked: size,
    /// times, mode, owner) and content (read again and compared, since a
    /// same-size write can land within one tick of the file system's clock).
    fn check_unchanged(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        let changed = || KeyError::Changed { path: path.into() };
        let now = self.file.metadata().map_err(io_error(path))?;
        let (a, b) = (&self.meta, &now);
        let same = a.dev() == b.dev()
            && a.ino() == b.ino()
            && a.mode() == b.mode()
            && a.uid() == b.uid()
            && a.gid() == b.gid()
            && a.size() == b.size()
            && (a.mtime(), a.mtime_nsec()) == (b.mtime(), b.mtime_nsec())
            && (a.ctime(), a.ctime_nsec()) == (b.ctime(), b.ctime_nsec());
        if !same {
            return Err(changed());
        }
        let ours = rustix::fs::fstat(&self.file).map_err(os_error(path))?;
        let named = match rustix::fs::statat(
            &self.dir,
            &self.name,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => return Err(changed()),
            Err(errno) => return Err(os_error(path)(errno)),
        };
        if (named.st_dev, named.st_ino) != (ours.st_dev, ours.st_ino) {
            return Err(changed());
        }
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
        let again = match read_capped(path, file) {
            Ok(bytes) => bytes,
            Err(KeyError::TooLarge { .. }) => return Err(changed()),
            Err(other) => return Err(other),
        };
        if !bool::from(again.as_slice().ct_eq(self.text.as_bytes())) {
            return Err(changed());
        }
        Ok(())
    }
}

/// A new file in a directory (by the directory's descriptor), mode 0600,
/// owned by us; removed on drop unless renamed into place.
#[cfg(unix)]
struct TempInDir<'a> {
    dir: &'a File,
    name: String,
    file: File,
    renamed: bool,
}

#[cfg(unix)]
impl<'a> TempInDir<'a> {
    fn create(dir: &'a File, path: &Path) -> Result<Self, KeyError> {
        use rustix::fs::{Mode, OFlags, openat};
        for _ in 0..16 {
            let mut random = [0u8; 8];
            rand::rngs::SysRng
                .try_fill_bytes(&mut random)
                .map_err(|e| KeyError::Rng(e.to_string()))?;
            let suffix = crate::hex::encode(&random);
            // Short and fixed, whatever the key file's name: never too long.
            let name = format!(".mcsec-key-{suffix}.tmp");
            // O_EXCL | O_NOFOLLOW: a file or link planted under the name is
            // never opened; mode 0600 from the first moment.
            match openat(
                dir,
                name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::RUSR | Mode::WUSR,
            ) {
                Ok(fd) => {
                    let file = File::from(fd);
                    let tmp = Self {
                        dir,
                        name,
                        file,
                        renamed: false,
                    };
                    // The umask may have taken bits off: exactly 0600.
                    restrict_new_file(&tmp.file).map_err(io_error(path))?;
                    return Ok(tmp);
                }
                Err(rustix::io::Errno::EXIST) => {}
                Err(errno) => return Err(os_error(path)(errno)),
            }
        }
        Err(KeyError::Io {
            path: path.into(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "could not create a temporary file beside it",
            ),
        })
    }

    fn rename_over(mut self, name: &std::ffi::OsStr, path: &Path) -> Result<(), KeyError> {
        rustix::fs::renameat(self.dir, self.name.as_str(), self.dir, name)
            .map_err(os_error(path))?;
        self.renamed = true;
        Ok(())
    }
}

#[cfg(unix)]
impl Drop for TempInDir<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            let _ =
                rustix::fs::unlinkat(self.dir, self.name.as_str(), rustix::fs::AtFlags::empty());
        }
    }
}

/// `keygen --force`: replaces whatever regular file of ours (or root's) is
/// at `path` with a new file of ours, mode 0600. The last component of
/// `path` is looked at without following it (`fstatat(AT_SYMLINK_NOFOLLOW)`)
/// through its directory's descriptor, and looked at again just before the
/// rename: if it changed, nothing is replaced.
#[cfg(unix)]
fn replace_with_new_file(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use rustix::fs::{CWD, Mode, OFlags, openat};
    let Some(name) = path.file_name() else {
        return Err(KeyError::NotAFile { path: path.into() });
    };
    let dir_path = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = File::from(
        openat(
            CWD,
            dir_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(os_error(path))?,
    );
    let before = replaceable(&dir, name, path)?;
    let mut tmp = TempInDir::create(&dir, path)?;
    tmp.file
        .write_all(bytes)
        .and_then(|()| tmp.file.sync_all())
        .map_err(io_error(path))?;
    before_rename();
    if replaceable(&dir, name, path)? != before {
        return Err(KeyError::Changed { path: path.into() });
    }
    tmp.rename_over(name, path)?;
    let _ = dir.sync_all();
    Ok(())
}

/// What is at `name` in `dir`, without following a link: nothing (`None`),
/// or a regular file owned by us or root (its device and inode). Anything
/// else is refused.
#[cfg(unix)]
fn replaceable(
    dir: &File,
    name: &std::ffi::OsStr,
    path: &Path,
) -> Result<Option<(u64, u64)>, KeyError> {
    use rustix::fs::{AtFlags, FileType, statat};
    let stat = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(errno) => return Err(os_error(path)(errno)),
    };
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => {}
        FileType::Symlink => return Err(KeyError::Symlink { path: path.into() }),
        _ => return Err(KeyError::NotAFile { path: path.into() }),
    }
    check_owner(path, stat.st_uid)?;
    #[allow(clippy::useless_conversion)] // dev_t and ino_t vary by platform
    Ok(Some((u64::from(stat.st_dev), u64::from(stat.st_ino))))
}

/// Elsewhere: the key file as read, and a plain atomic replace.
#[cfg(not(unix))]
struct HeldKeyFile {
    text: Zeroizing<String>,
}

#[cfg(not(unix))]
impl HeldKeyFile {
    fn open(path: &Path) -> Result<Self, KeyError> {
        Ok(Self {
            text: read_key_file(path)?,
        })
    }

    fn text(&self) -> &str {
        &self.text
    }

    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
        before_rename();
        let again = read_key_file(path)?;
        if !bool::from(again.as_bytes().ct_eq(self.text.as_bytes())) {
            return Err(KeyError::Changed { path: path.into() });
        }
        replace_with_new_file(path, bytes)
    }
}

#[cfg(not(unix))]
fn replace_with_new_file(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_error(path))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_error(path))?;
    tmp.persist(path).map_err(|e| KeyError::Io {
        path: path.into(),
        source: e.error,
    })?;
    sync_parent_dir(path);
    Ok(())
}

// Test seam: runs between reading a key file and renaming its replacement
// over it, so tests can change the file at the worst moment. Per thread, so
// tests running in parallel do not see each other's hooks.
#[cfg(test)]
thread_local! {
    static BEFORE_RENAME: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
fn before_rename() {
    BEFORE_RENAME.with(|hook| {
        if let Some(hook) = hook.borrow_mut().as_mut() {
            hook();
        }
    });
}

#[cfg(not(test))]
fn before_rename() {}

/// Makes a rename or create in `path`'s directory durable. Best effort: not
/// every platform or filesystem can sync a directory.
fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
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
        let text = format!(
            "# comment\t\u{e9}\u{1f600}\n\n#\r\n{}\r\n\n{}",
            *a.to_line(),
            *b.to_line()
        );
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
                LineProblem::StrayWhitespace,
            ),
            (
                format!("mcsec-key-v1  {id} {hex}"),
                LineProblem::StrayWhitespace,
            ),
            (
                format!("mcsec-key-v1\t{id} {hex}"),
                LineProblem::StrayWhitespace,
            ),
            (
                format!(" mcsec-key-v1 {id} {hex}"),
                LineProblem::StrayWhitespace,
            ),
            ("  # indented".to_owned(), LineProblem::StrayWhitespace),
            (" ".to_owned(), LineProblem::StrayWhitespace),
            ("\t".to_owned(), LineProblem::StrayWhitespace),
            ("# bell \u{7}".to_owned(), LineProblem::ControlCharacter),
            ("# cr \r inside".to_owned(), LineProblem::ControlCharacter),
            ("# del \u{7f}".to_owned(), LineProblem::ControlCharacter),
            (
                format!("mcsec-key-v1 {id} {hex}\r\r"),
                LineProblem::ControlCharacter,
            ),
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
    fn created_stamps_are_strict_rfc3339_utc() {
        let at = |secs: i64, nanos: u32| {
            let base = if secs >= 0 {
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs.unsigned_abs())
            } else {
                SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
            };
            base + std::time::Duration::new(0, nanos)
        };
        for (good, secs, nanos) in [
            ("2026-01-31T12:00:00Z", 1_769_860_800, 0),
            ("2026-01-31T12:00:00.5Z", 1_769_860_800, 500_000_000),
            ("2026-01-31T12:00:00.123456789Z", 1_769_860_800, 123_456_789),
            ("1970-01-01T00:00:00Z", 0, 0),
            ("1969-12-31T23:59:59Z", -1, 0),
            ("2024-02-29T00:00:00Z", 1_709_164_800, 0),
            ("2000-02-29T23:59:59Z", 951_868_799, 0),
            ("0000-01-01T00:00:00Z", -62_167_219_200, 0),
            ("9999-12-31T23:59:59Z", 253_402_300_799, 0),
        ] {
            assert_eq!(stamp::parse(good), Some(at(secs, nanos)), "{good}");
            if nanos == 0 {
                assert_eq!(stamp::format(at(secs, 0)).as_deref(), Some(good));
            }
        }
        for bad in [
            "2026-01-31T12:00:00.Z",
            "2026-01-31T12:00:00.1234567890Z",
            "2026-01-31T12:00:60Z",
            "2026-01-31T24:00:00Z",
            "2026-01-31T12:60:00Z",
            "2026-13-01T12:00:00Z",
            "2026-00-01T12:00:00Z",
            "2026-01-00T12:00:00Z",
            "2026-04-31T12:00:00Z",
            "2025-02-29T12:00:00Z",
            "1900-02-29T12:00:00Z",
            "2026-01-31T12:00:00z",
            "2026-01-31T12:00:00.5.5Z",
            "2026-01-31T12:00:00.-5Z",
            "2026-01-31T12:0+:00Z",
            "١٩٧٠-01-01T00:00:00Z",
            "2026-01-31t12:00:00Z",
            "2026-01-31 12:00:00Z",
            "2026-01-31T12:00:00",
            "2026-01-31T12:00:00+00:00",
            "2026-02-30T12:00:00Z",
            "2026-1-31T12:00:00Z",
            "+2026-01-31T12:00:00Z",
        ] {
            assert!(stamp::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_lf_or_crlf_end_lines_and_blank_lines_are_empty() {
        let line = GroupKey::new(secret(0x21), None).to_line().to_string();
        assert!(Keyring::parse(&format!("{line}\r\n")).is_ok());
        assert!(Keyring::parse(&format!("\r\n\n{line}")).is_ok());
        assert!(matches!(
            Keyring::parse(&format!(" \t\n{line}\n")),
            Err(KeyError::Line { line: 1, .. })
        ));
        assert!(matches!(
            Keyring::parse(&format!("\r{line}\n")),
            Err(KeyError::Line { line: 1, .. })
        ));
        assert!(matches!(
            Keyring::parse(&format!("{line}\r\r\n")),
            Err(KeyError::Line { line: 1, .. })
        ));
        assert!(matches!(
            Keyring::parse(&format!("\u{a0}\n{line}\n")),
            Err(KeyError::Line { line: 1, .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn rotate_through_a_symlink_updates_the_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.key");
        let link = dir.path().join("link.key");
        create_key_file(
            &real,
            &GroupKey::generate(SystemTime::now()).unwrap(),
            false,
        )
        .unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let id = rotate_key_file(&link, SystemTime::now()).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(Keyring::load(&real).unwrap().sending_key().id(), id);
        // No temp files left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(matches!(
            Keyring::load(&fifo),
            Err(KeyError::NotAFile { .. })
        ));
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

    /// Every permission bit, owners, and symlinks: the verdicts SECURITY.md
    /// promises.
    #[cfg(unix)]
    #[test]
    fn permission_matrix() {
        use std::os::unix::fs::{PermissionsExt, chown, symlink};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = GroupKey::generate(SystemTime::now()).unwrap();
        create_key_file(&path, &key, false).unwrap();
        let me = process::effective_uid();
        let mut tried = 0;
        for mode in 0..0o1000u32 {
            // Reading needs the owner's read bit unless we are root.
            if me != 0 && mode & 0o400 == 0 {
                continue;
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let verdict = Keyring::load(&path);
            let private = mode & 0o077 == 0;
            match verdict {
                Ok(_) => assert!(private, "mode {mode:04o} accepted"),
                Err(KeyError::OpenPermissions { mode: m, .. }) => {
                    assert!(!private, "mode {mode:04o} refused");
                    assert_eq!(m, mode);
                }
                Err(e) => panic!("mode {mode:04o}: {e}"),
            }
            tried += 1;
        }
        assert!(tried >= 256);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

        // A symlink is judged by its target, whatever the link's own mode.
        let link = dir.path().join("link");
        symlink(&path, &link).unwrap();
        assert!(Keyring::load(&link).is_ok());
        let open = dir.path().join("open");
        fs::copy(&path, &open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
        let open_link = dir.path().join("open_link");
        symlink(&open, &open_link).unwrap();
        assert!(matches!(
            Keyring::load(&open_link),
            Err(KeyError::OpenPermissions { mode: 0o644, .. })
        ));

        // Owners: only as root can we hand the file to someone else.
        if me == 0 {
            chown(&path, Some(65534), None).unwrap();
            match Keyring::load(&path) {
                Err(
                    err @ KeyError::ForeignOwner {
                        owner: 65534,
                        me: 0,
                        ..
                    },
                ) => {
                    assert!(err.hint().unwrap().contains("chown 0"));
                }
                other => panic!("foreign owner: {other:?}"),
            }
            chown(&path, Some(0), None).unwrap();
            assert!(Keyring::load(&path).is_ok());
        } else {
            skip_without_root("the foreign-owner case");
        }
    }

    /// A test part that needs root fails without it, unless the run opts
    /// out with MCSEC_SKIP_ROOT=1: a green run must not hide what did not
    /// run.
    #[cfg(unix)]
    fn skip_without_root(what: &str) {
        assert!(
            std::env::var_os("MCSEC_SKIP_ROOT").is_some(),
            "{what} needs root: run the tests as root (as CI does), or set MCSEC_SKIP_ROOT=1 to skip it"
        );
        eprintln!("skipping {what} (MCSEC_SKIP_ROOT is set): needs root");
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

    /// Runs `f` with `hook` called between the read and the rename.
    fn with_hook<T>(hook: impl FnMut() + 'static, f: impl FnOnce() -> T) -> T {
        BEFORE_RENAME.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
        let out = f();
        BEFORE_RENAME.with(|h| *h.borrow_mut() = None);
        out
    }

    /// A key file of two keys at `dir/name`; returns its path and key IDs.
    fn two_key_file(dir: &Path, name: &str) -> (PathBuf, KeyId, KeyId) {
        let path = dir.join(name);
        let first = GroupKey::generate(SystemTime::now()).unwrap();
        create_key_file(&path, &first, false).unwrap();
        let second = rotate_key_file(&path, SystemTime::now()).unwrap();
        (path, first.id(), second)
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Rotates or retires (the first key), as `rotate` says.
    fn rewrite(path: &Path, rotate: bool, first: KeyId) -> Result<(), KeyError> {
        if rotate {
            rotate_key_file(path, SystemTime::now()).map(|_| ())
        } else {
            retire_key_file(path, first)
        }
    }

    fn assert_changed(result: Result<(), KeyError>, path: &Path) {
        match result {
            Err(err @ KeyError::Changed { .. }) => {
                assert!(
                    err.to_string()
                        .starts_with(&format!("{}: ", path.display()))
                );
                assert!(err.hint().is_some());
            }
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    /// Finding 2: a file renamed over the key file after we read it used to
    /// lend its mode (and owner) to the new file: here the new secret came
    /// out world-readable. Now the swap is seen and nothing is written.
    #[cfg(unix)]
    #[test]
    fn rotate_and_retire_refuse_a_file_swapped_before_the_rename() {
        use std::os::unix::fs::PermissionsExt;
        for rotate in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (path, first, _) = two_key_file(dir.path(), "k");
            let other = dir.path().join("other");
            create_key_file(
                &other,
                &GroupKey::generate(SystemTime::now()).unwrap(),
                false,
            )
            .unwrap();
            fs::set_permissions(&other, fs::Permissions::from_mode(0o644)).unwrap();
            let other_bytes = fs::read(&other).unwrap();
            let (from, to) = (other.clone(), path.clone());
            let result = with_hook(
                move || fs::rename(&from, &to).unwrap(),
                || rewrite(&path, rotate, first),
            );
            assert_changed(result, &path);
            assert_eq!(fs::read(&path).unwrap(), other_bytes, "rotate={rotate}");
            assert_eq!(mode_of(&path), 0o644);
            // No temporary file is left behind.
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        }
    }

    /// Finding 2: a file rewritten in place (same inode) after we read it:
    /// appended to, or changed byte for byte at the same size, perhaps within
    /// one tick of the file system's clock.
    #[cfg(unix)]
    #[test]
    fn rotate_and_retire_refuse_a_file_changed_in_place() {
        use std::os::unix::fs::FileExt;
        for rotate in [true, false] {
            for append in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                let (path, first, _) = two_key_file(dir.path(), "k");
                let target = path.clone();
                let result = with_hook(
                    move || {
                        let file = fs::OpenOptions::new().write(true).open(&target).unwrap();
                        if append {
                            let len = file.metadata().unwrap().len();
                            file.write_all_at(b"# more\n", len).unwrap();
                        } else {
                            // "# mcsec" becomes "#!mcsec": still a comment.
                            file.write_all_at(b"!", 1).unwrap();
                        }
                    },
                    || rewrite(&path, rotate, first),
                );
                assert_changed(result, &path);
                let text = fs::read_to_string(&path).unwrap();
                assert_eq!(Keyring::parse(&text).unwrap().len(), 2);
                assert_eq!(text.ends_with("# more\n"), append);
                assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
            }
        }
    }

    /// Finding 2: the owner of the new file comes from the file we read, and
    /// a file given away after we read it is refused. As root the old code
    /// looked the owner up again by path and handed the new secret to 12345.
    #[cfg(unix)]
    #[test]
    fn rotate_and_retire_refuse_a_file_given_away_before_the_rename() {
        use std::os::unix::fs::MetadataExt;
        if process::effective_uid() != 0 {
            skip_without_root("giving a file away");
            return;
        }
        for rotate in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (path, first, _) = two_key_file(dir.path(), "k");
            let before = fs::read(&path).unwrap();
            let target = path.clone();
            let result = with_hook(
                move || std::os::unix::fs::chown(&target, Some(12345), Some(12345)).unwrap(),
                || rewrite(&path, rotate, first),
            );
            assert_changed(result, &path);
            assert_eq!(fs::read(&path).unwrap(), before);
            assert_eq!(fs::metadata(&path).unwrap().uid(), 12345);
        }
    }

    /// The content is compared too, not only the metadata: a same-size
    /// write within one tick of a coarse file-system clock leaves size and
    /// times as they were. Simulated by changing what we hold as read.
    #[cfg(unix)]
    #[test]
    fn a_change_the_metadata_does_not_show_is_still_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = two_key_file(dir.path(), "k");
        let before = fs::read(&path).unwrap();
        let mut held = HeldKeyFile::open(&path).unwrap();
        let mut other = held.text().to_owned();
        other.replace_range(1..2, "!");
        held.text = Zeroizing::new(other);
        assert_changed(held.replace(&path, b"# anything\n"), &path);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// `keygen --force` looks at its target again just before the rename: a
    /// symlink put there since the first look is refused (neither it nor what
    /// it points to is touched), and so is another file swapped in.
    #[cfg(unix)]
    #[test]
    fn force_refuses_a_target_that_changes_before_the_rename() {
        use std::os::unix::fs::symlink;
        for existed in [true, false] {
            for link in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("k");
                if existed {
                    let key = GroupKey::generate(SystemTime::now()).unwrap();
                    create_key_file(&path, &key, false).unwrap();
                }
                let victim = dir.path().join("victim");
                fs::write(&victim, "not a key\n").unwrap();
                let (v, p) = (victim.clone(), path.clone());
                let result = with_hook(
                    move || {
                        if link {
                            let _ = fs::remove_file(&p);
                            symlink(&v, &p).unwrap();
                        } else {
                            fs::copy(&v, dir_of(&p).join("swap")).unwrap();
                            fs::rename(dir_of(&p).join("swap"), &p).unwrap();
                        }
                    },
                    || {
                        create_key_file(
                            &path,
                            &GroupKey::generate(SystemTime::now()).unwrap(),
                            true,
                        )
                    },
                );
                match (link, result) {
                    (true, Err(err @ KeyError::Symlink { .. })) => assert!(err.hint().is_some()),
                    (false, result) => assert_changed(result, &path),
                    (true, other) => panic!("expected Symlink, got {other:?}"),
                }
                assert_eq!(fs::read_to_string(&victim).unwrap(), "not a key\n");
                assert_eq!(fs::read_to_string(&path).unwrap(), "not a key\n");
                assert_eq!(fs::symlink_metadata(&path).unwrap().is_symlink(), link);
                assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
            }
        }
    }

    fn dir_of(path: &Path) -> &Path {
        path.parent().unwrap()
    }

    /// A symlinked key file is resolved once: if the link is pointed
    /// elsewhere between our read and our rename, we still update the file
    /// we read, and the link's new target is not touched. The old code
    /// resolved the link again and wrote the rotated keys over the new
    /// target, with the new target's mode (here 0644).
    #[cfg(unix)]
    #[test]
    fn a_symlink_retargeted_midway_is_not_followed_again() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        for rotate in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (real, first, second) = two_key_file(dir.path(), "real.key");
            let other = dir.path().join("other.key");
            create_key_file(
                &other,
                &GroupKey::generate(SystemTime::now()).unwrap(),
                false,
            )
            .unwrap();
            fs::set_permissions(&other, fs::Permissions::from_mode(0o644)).unwrap();
            let other_bytes = fs::read(&other).unwrap();
            let link = dir.path().join("link.key");
            symlink(&real, &link).unwrap();
            let (l, o) = (link.clone(), other.clone());
            let result = with_hook(
                move || {
                    fs::remove_file(&l).unwrap();
                    symlink(&o, &l).unwrap();
                },
                || rewrite(&link, rotate, first),
            );
            result.unwrap();
            let ring = Keyring::load(&real).unwrap();
            assert_eq!(ring.len(), if rotate { 3 } else { 1 });
            assert!(ring.get(second).is_some());
            assert_eq!(mode_of(&real), 0o600);
            assert_eq!(fs::read(&other).unwrap(), other_bytes);
            assert_eq!(mode_of(&other), 0o644);
            assert_eq!(fs::read_link(&link).unwrap(), other);
        }
    }

    /// Rotate and retire keep CRLF line ends: a rotated line takes the
    /// file's line end, and retire keeps each remaining line's own.
    #[test]
    fn rotate_and_retire_keep_crlf_line_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = GroupKey::generate(SystemTime::now()).unwrap();
        let b = GroupKey::generate(SystemTime::now()).unwrap();
        let text = format!("# crlf\r\n{}\r\n# lf\n{}\r\n", *a.to_line(), *b.to_line());
        fs::write(&path, &text).unwrap();
        restrict(&path);
        let c = rotate_key_file(&path, SystemTime::now()).unwrap();
        let ring = Keyring::load(&path).unwrap();
        let c_line = ring.get(c).unwrap().to_line();
        let rotated = fs::read_to_string(&path).unwrap();
        assert_eq!(rotated, format!("{text}{}\r\n", *c_line));
        retire_key_file(&path, a.id()).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("# crlf\r\n# lf\n{}\r\n{}\r\n", *b.to_line(), *c_line)
        );
        // A last line without a line end gets the file's (LF here).
        let lf = dir.path().join("lf");
        fs::write(&lf, format!("{}\n{}", *a.to_line(), *b.to_line())).unwrap();
        restrict(&lf);
        let d = rotate_key_file(&lf, SystemTime::now()).unwrap();
        let d_line = Keyring::load(&lf).unwrap().get(d).unwrap().to_line();
        assert_eq!(
            fs::read_to_string(&lf).unwrap(),
            format!("{}\n{}\n{}\n", *a.to_line(), *b.to_line(), *d_line)
        );
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

#[cfg(all(test, unix))]
mod credential_tests {
    use super::acl_private_to;

    /// A `system.posix_acl_access` value from (tag, perm, id) entries.
    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend(tag.to_le_bytes());
            v.extend(perm.to_le_bytes());
            v.extend(id.to_le_bytes());
        }
        v
    }

    const NONE: u32 = u32::MAX;

    #[test]
    fn only_an_acl_that_adds_this_user_alone_makes_a_credential() {
        // What systemd writes for a service running as UID 61000: owner
        // r--, user:61000:r--, group ---, mask r--, other ---.
        let systemd = [
            (0x01, 4, NONE),
            (0x02, 4, 61000),
            (0x04, 0, NONE),
            (0x10, 4, NONE),
            (0x20, 0, NONE),
        ];
        assert!(acl_private_to(&acl(&systemd), 61000));
        // For another user it grants nothing.
        assert!(!acl_private_to(&acl(&systemd), 61001));
        let with = |i: usize, e: (u16, u16, u32)| {
            let mut v = systemd.to_vec();
            v[i] = e;
            acl(&v)
        };
        // The owning group or others may read; a second named user; a
        // named group; write access for us; an unknown tag.
        assert!(!acl_private_to(&with(2, (0x04, 4, NONE)), 61000));
        assert!(!acl_private_to(&with(4, (0x20, 4, NONE)), 61000));
        assert!(!acl_private_to(&with(0, (0x02, 4, 61001)), 61000));
        assert!(!acl_private_to(&with(2, (0x08, 4, 0)), 61000));
        assert!(!acl_private_to(&with(1, (0x02, 6, 61000)), 61000));
        assert!(!acl_private_to(&with(3, (0x10, 6, NONE)), 61000));
        assert!(!acl_private_to(&with(4, (0x40, 0, NONE)), 61000));
        // Malformed: another version, a cut entry, nothing.
        let mut v = acl(&systemd);
        v[0] = 1;
        assert!(!acl_private_to(&v, 61000));
        let v = acl(&systemd);
        assert!(!acl_private_to(&v[..v.len() - 1], 61000));
        assert!(!acl_private_to(&[], 61000));
        assert!(!acl_private_to(&acl(&[]), 61000));
    }
}
