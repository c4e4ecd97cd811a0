//! Signed senders (PROTOCOL.md Part 3): receivers that can read a feed but
//! cannot forge it.
//!
//! A signed sender seals frames as usual, keeps a 16-byte hash of each, and
//! every few dozen frames signs a **manifest** (body variant 4) listing
//! them, with Ed25519. The manifest goes out before the frames it lists and
//! once more after them. A receiver that trusts the signer's public key
//! ([`Verifier`]) delivers a frame only when a verified manifest lists its
//! exact hash, and commits its seq to the replay window only then: a member
//! who holds the group key but not the signing key can neither deliver a
//! frame of its own nor move the signer's window.
//!
//! ```text
//! frame_hash = SHA-256(datagram)[0..16]
//! signed     = "mcsec v2 manifest" || channel_id || key_id || sender_id || first_seq || hashes
//! manifest   = 04 || signer_id || varint(first_seq) || bytes(hashes) || Ed25519(signed)
//! ```
//!
//! Sans-IO like the rest of the core: [`SignedSealer`] emits datagrams to a
//! callback, [`Verifier`] takes datagrams and the time and returns frames.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::body::{Body, Manifest};
use crate::frame::{ChannelId, Header, OVERHEAD, SenderId};
use crate::keys::{KeyError, KeyId};
use crate::seal::{Opener, Reject, SealError, Sealer};

/// Bytes of a frame hash: SHA-256 truncated to 128 bits.
pub const HASH_LEN: usize = 16;

/// Most hashes one manifest may list.
pub const MAX_MANIFEST_HASHES: usize = 4096;

/// Bytes a manifest body adds to its hashes at most: the variant byte, the
/// signer ID, a u64 varint, the list's length varint (3 bytes up to 2 MiB)
/// and the signature.
pub const MANIFEST_OVERHEAD: usize = 1 + 8 + 10 + 3 + 64;

/// Default frames per manifest.
pub const DEFAULT_SIGN_EVERY: usize = 64;

/// Default longest wait of a frame at the sender before its batch is signed.
pub const DEFAULT_SIGN_INTERVAL: Duration = Duration::from_millis(10);

/// Default longest time a trusting receiver holds a frame no manifest lists.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(2);

/// Default most frames a trusting receiver holds at once.
pub const DEFAULT_MAX_HELD: usize = 4096;

/// Default most datagram bytes a trusting receiver holds at once.
pub const DEFAULT_MAX_HELD_BYTES: usize = 8 << 20;

/// Verified manifests remembered per sender session.
pub const RECORDS_PER_SENDER: usize = 16;

/// Default most sender sessions with remembered manifests.
pub const DEFAULT_MAX_SIGNED_SENDERS: usize = 1024;

const SIGNER_ID_LABEL: &[u8] = b"mcsec v2 signer id";
const MANIFEST_LABEL: &[u8] = b"mcsec v2 manifest";
const SIGNER_LINE_TAG: &str = "mcsec-signer-v1";
const TRUST_LINE_TAG: &str = "mcsec-signer-public-v1";
const MAX_NAME: usize = 64;

/// A frame's 16-byte hash: `SHA-256(datagram)[0..16]`.
pub type FrameHash = [u8; HASH_LEN];

/// The hash a manifest lists for a frame: SHA-256 of the whole datagram as
/// sent, truncated to 128 bits (an attacker needs a second preimage of a
/// frame it did not make).
pub fn frame_hash(datagram: &[u8]) -> FrameHash {
    let digest = Sha256::digest(datagram);
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(&digest[..HASH_LEN]);
    out
}

/// A signing key's 8-byte ID: `SHA-256("mcsec v2 signer id" || public)`,
/// first 8 bytes. It only picks the key; the signature proves it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignerId(pub [u8; 8]);

impl SignerId {
    /// The ID of a public key.
    pub fn of(public: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(SIGNER_ID_LABEL)
            .chain_update(public)
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self(id)
    }
}

impl fmt::Display for SignerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for SignerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerId({self})")
    }
}

/// What is wrong with a signing key file or a trust file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerFileError {
    /// Reading, permissions, size, UTF-8: as for group key files.
    #[error(transparent)]
    File(#[from] KeyError),
    /// A line does not match the grammar. Never holds the line itself.
    #[error("{}line {line}: {problem}", path_prefix(path))]
    Line {
        /// The file, empty for text.
        path: std::path::PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong.
        problem: SignerLineProblem,
    },
    /// A signing key file with no signer line, or more than one.
    #[error(
        "{}a signing key file holds exactly one mcsec-signer-v1 line; this one holds {found}",
        path_prefix(path)
    )]
    SignerCount {
        /// The file.
        path: std::path::PathBuf,
        /// How many it holds.
        found: usize,
    },
    /// A trust file with no trust line.
    #[error(
        "{}no mcsec-signer-public-v1 lines: nobody to trust",
        path_prefix(path)
    )]
    NoTrust {
        /// The file.
        path: std::path::PathBuf,
    },
    /// Two trust lines with one signer ID or one name.
    #[error(
        "{}line {line}: {what} is already on line {first_line}",
        path_prefix(path)
    )]
    Duplicate {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line of the second.
        line: usize,
        /// 1-based line of the first.
        first_line: usize,
        /// "signer 0123..." or "name feed".
        what: String,
    },
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
}

fn path_prefix(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        String::new()
    } else {
        format!("{}: ", path.display())
    }
}

impl SignerFileError {
    fn with_path(mut self, file: &Path) -> Self {
        match &mut self {
            Self::Line { path, .. }
            | Self::SignerCount { path, .. }
            | Self::NoTrust { path }
            | Self::Duplicate { path, .. } => *path = file.into(),
            Self::File(_) | Self::Rng => {}
        }
        self
    }
}

/// What is wrong with one line of a signer or trust file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignerLineProblem {
    /// Not a comment, not empty, and not the line this file holds.
    NotASignerLine(&'static str),
    /// The signer ID is not 16 lowercase hex digits.
    BadSignerId,
    /// The seed or public key is not 64 lowercase hex digits.
    BadKey,
    /// The public key is not the canonical encoding of a point of
    /// edwards25519 outside the small-order subgroup.
    NotAPoint,
    /// The signer ID is not the one the key gives: the line is corrupt.
    SignerIdMismatch,
    /// The name is not 1 to 64 of `A-Z a-z 0-9 - _ . @`.
    BadName,
    /// The `created=` stamp is not an RFC 3339 UTC time.
    BadCreated,
    /// More fields than the grammar has.
    UnexpectedField,
    /// Whitespace or a control character where the grammar has none.
    Whitespace,
}

impl fmt::Display for SignerLineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotASignerLine(tag) => write!(f, "not a `{tag}` line, a comment or empty"),
            Self::BadSignerId => f.write_str("the signer ID is not 16 lowercase hex digits"),
            Self::BadKey => f.write_str("the key is not 64 lowercase hex digits"),
            Self::NotAPoint => f.write_str(
                "the public key is not a valid Ed25519 public key (not a canonical point of the curve, or of small order)",
            ),
            Self::SignerIdMismatch => {
                f.write_str("the signer ID does not match the key: the line is corrupt")
            }
            Self::BadName => f.write_str("the name is not 1 to 64 of A-Z a-z 0-9 - _ . @"),
            Self::BadCreated => f.write_str("the created= stamp is not an RFC 3339 UTC time"),
            Self::UnexpectedField => f.write_str("unexpected text after the last field"),
            Self::Whitespace => f.write_str(
                "stray whitespace or a control character (fields are separated by single spaces)",
            ),
        }
    }
}

/// Whether `name` is a valid trust-file name: 1 to 64 of
/// `A-Z a-z 0-9 - _ . @`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// The lines of a file that is a comment, empty or one of `tag`'s lines,
/// as (1-based number, fields), after the grammar's whitespace rules.
fn content_lines<'a>(
    text: &'a str,
    tag: &'static str,
) -> impl Iterator<Item = Result<(usize, Vec<&'a str>), SignerFileError>> + 'a {
    crate::keys::file_lines(text)
        .enumerate()
        .filter_map(move |(index, content)| {
            let line = index + 1;
            let err = |problem| {
                Some(Err(SignerFileError::Line {
                    path: std::path::PathBuf::new(),
                    line,
                    problem,
                }))
            };
            if content.is_empty() {
                return None;
            }
            if let Some(comment) = content.strip_prefix('#') {
                if comment.chars().all(crate::keys::is_comment_char) {
                    return None;
                }
                return err(SignerLineProblem::Whitespace);
            }
            if content.starts_with(' ')
                || content.ends_with(' ')
                || content.contains("  ")
                || content.chars().any(char::is_control)
            {
                return err(SignerLineProblem::Whitespace);
            }
            let fields: Vec<&str> = content.split(' ').collect();
            if fields.first() != Some(&tag) {
                return err(SignerLineProblem::NotASignerLine(tag));
            }
            Some(Ok((line, fields)))
        })
}

fn line_error(line: usize, problem: SignerLineProblem) -> SignerFileError {
    SignerFileError::Line {
        path: std::path::PathBuf::new(),
        line,
        problem,
    }
}

fn parse_signer_id(text: &str) -> Result<SignerId, SignerLineProblem> {
    crate::hex::decode_lower::<8>(text)
        .map(SignerId)
        .ok_or(SignerLineProblem::BadSignerId)
}

/// An Ed25519 signing key, with its ID. Zeroized on drop; `Debug` shows the
/// ID only.
pub struct SignerKey {
    key: SigningKey,
    id: SignerId,
    created: Option<String>,
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerKey").field("id", &self.id).finish()
    }
}

impl SignerKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate(created: Option<std::time::SystemTime>) -> Result<Self, SignerFileError> {
        use rand::TryRng;
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::SysRng
            .try_fill_bytes(seed.as_mut())
            .map_err(|_| SignerFileError::Rng)?;
        let mut key = Self::from_seed(&seed);
        key.created = created.and_then(crate::keys::format_stamp);
        Ok(key)
    }

    /// The key of a 32-byte seed (RFC 8032).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let id = SignerId::of(key.verifying_key().as_bytes());
        Self {
            key,
            id,
            created: None,
        }
    }

    /// Its ID.
    pub fn id(&self) -> SignerId {
        self.id
    }

    /// Its public key.
    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs a message.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The key file line, `mcsec-signer-v1 ID SEED [created=STAMP]`.
    pub fn to_line(&self) -> Zeroizing<String> {
        let mut line = Zeroizing::new(String::with_capacity(128));
        line.push_str(SIGNER_LINE_TAG);
        line.push(' ');
        line.push_str(&self.id.to_string());
        line.push(' ');
        crate::hex::push(&mut line, self.key.as_bytes());
        if let Some(stamp) = &self.created {
            line.push_str(" created=");
            line.push_str(stamp);
        }
        line
    }

    /// The trust-file line for this key's public half.
    pub fn trust_line(&self, name: Option<&str>) -> String {
        let mut line = format!("{TRUST_LINE_TAG} {} ", self.id);
        crate::hex::push(&mut line, &self.public());
        if let Some(name) = name {
            line.push(' ');
            line.push_str(name);
        }
        line
    }

    /// Parses signing key file text (PROTOCOL.md 3.1): exactly one
    /// `mcsec-signer-v1` line, comments and empty lines.
    pub fn parse(text: &str) -> Result<Self, SignerFileError> {
        let mut found: Vec<Self> = Vec::new();
        let mut lines = 0;
        for item in content_lines(text, SIGNER_LINE_TAG) {
            let (line, fields) = item?;
            lines += 1;
            let key = parse_signer_fields(&fields).map_err(|p| line_error(line, p))?;
            found.push(key);
        }
        match found.pop() {
            Some(key) if lines == 1 => Ok(key),
            _ => Err(SignerFileError::SignerCount {
                path: std::path::PathBuf::new(),
                found: lines,
            }),
        }
    }

    /// Reads a signing key file with the group key file's checks (mode,
    /// owner, size, a regular file).
    pub fn load(path: &Path) -> Result<Self, SignerFileError> {
        let text = crate::keys::read_secret_file(path)?;
        Self::parse(&text).map_err(|e| e.with_path(path))
    }

    /// Writes a new signing key file, mode 0600; refuses to replace one
    /// unless `force` (then as `keygen --force` does).
    pub fn create_file(&self, path: &Path, force: bool) -> Result<(), SignerFileError> {
        let mut text = Zeroizing::new(String::with_capacity(256));
        text.push_str(
            "# mcsec signing key: a secret. Whoever holds it can sign frames that\n\
             # receivers trusting its public key accept. Keep it mode 0600.\n",
        );
        text.push_str(&self.to_line());
        text.push('\n');
        crate::keys::create_secret_file(path, text.as_bytes(), force)?;
        Ok(())
    }
}

fn parse_signer_fields(fields: &[&str]) -> Result<SignerKey, SignerLineProblem> {
    let (id, seed, created) = match fields {
        [_, id, seed] => (id, seed, None),
        [_, id, seed, created] => (id, seed, Some(*created)),
        [_] | [_, _] => return Err(SignerLineProblem::BadKey),
        _ => return Err(SignerLineProblem::UnexpectedField),
    };
    let id = parse_signer_id(id)?;
    let seed =
        Zeroizing::new(crate::hex::decode_lower::<32>(seed).ok_or(SignerLineProblem::BadKey)?);
    let created = match created {
        None => None,
        Some(field) => {
            let text = field
                .strip_prefix("created=")
                .ok_or(SignerLineProblem::UnexpectedField)?;
            crate::keys::parse_stamp(text).ok_or(SignerLineProblem::BadCreated)?;
            Some(text.to_owned())
        }
    };
    let mut key = SignerKey::from_seed(&seed);
    if key.id != id {
        return Err(SignerLineProblem::SignerIdMismatch);
    }
    key.created = created;
    Ok(key)
}

/// One trusted public key.
#[derive(Debug, Clone)]
pub struct Trusted {
    id: SignerId,
    key: VerifyingKey,
    name: Option<String>,
}

impl Trusted {
    /// A trusted key from its 32 bytes.
    /// `None` unless `public` is the canonical encoding of a point of
    /// edwards25519 that is not of small order: no signature could ever
    /// verify under anything else (`verify_strict`).
    pub fn new(public: &[u8; 32], name: Option<String>) -> Option<Self> {
        let key = VerifyingKey::from_bytes(public).ok()?;
        if key.is_weak() || key.to_edwards().compress().to_bytes() != *public {
            return None;
        }
        Some(Self {
            id: SignerId::of(public),
            key,
            name,
        })
    }

    /// Its ID.
    pub fn id(&self) -> SignerId {
        self.id
    }

    /// Its name in the trust file, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The name, or else the ID in hex: what a receiver shows.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.id.to_string())
    }
}

/// The public keys a receiver trusts (a trust file).
#[derive(Debug, Clone)]
pub struct TrustList {
    keys: Vec<Trusted>,
}

impl TrustList {
    /// Trusts exactly these keys.
    pub fn new(keys: Vec<Trusted>) -> Self {
        Self { keys }
    }

    /// Parses a trust file (PROTOCOL.md 3.1).
    pub fn parse(text: &str) -> Result<Self, SignerFileError> {
        let mut keys: Vec<(usize, Trusted)> = Vec::new();
        for item in content_lines(text, TRUST_LINE_TAG) {
            let (line, fields) = item?;
            let (id, public, name) = match fields.as_slice() {
                [_, id, public] => (id, public, None),
                [_, id, public, name] => (id, public, Some(*name)),
                [_] | [_, _] => return Err(line_error(line, SignerLineProblem::BadKey)),
                _ => return Err(line_error(line, SignerLineProblem::UnexpectedField)),
            };
            let id = parse_signer_id(id).map_err(|p| line_error(line, p))?;
            let public = crate::hex::decode_lower::<32>(public)
                .ok_or(line_error(line, SignerLineProblem::BadKey))?;
            if let Some(name) = name
                && !is_valid_name(name)
            {
                return Err(line_error(line, SignerLineProblem::BadName));
            }
            if SignerId::of(&public) != id {
                return Err(line_error(line, SignerLineProblem::SignerIdMismatch));
            }
            let trusted = Trusted::new(&public, name.map(str::to_owned))
                .ok_or(line_error(line, SignerLineProblem::NotAPoint))?;
            for (first_line, other) in &keys {
                // Labels (the name, or else the signer ID in hex) are what a
                // receiver shows: no two lines may share one.
                let what = if other.id == trusted.id {
                    Some(format!("signer {id}"))
                } else if other.label() == trusted.label() {
                    Some(format!("name {}", trusted.label()))
                } else {
                    None
                };
                if let Some(what) = what {
                    return Err(SignerFileError::Duplicate {
                        path: std::path::PathBuf::new(),
                        line,
                        first_line: *first_line,
                        what,
                    });
                }
            }
            keys.push((line, trusted));
        }
        if keys.is_empty() {
            return Err(SignerFileError::NoTrust {
                path: std::path::PathBuf::new(),
            });
        }
        Ok(Self {
            keys: keys.into_iter().map(|(_, k)| k).collect(),
        })
    }

    /// Reads a trust file (public: no permission checks beyond a size cap).
    pub fn load(path: &Path) -> Result<Self, SignerFileError> {
        let text = crate::keys::read_public_file(path)?;
        Self::parse(&text).map_err(|e| e.with_path(path))
    }

    /// The keys, in file order.
    pub fn keys(&self) -> &[Trusted] {
        &self.keys
    }

    fn find(&self, id: &[u8; 8]) -> Option<usize> {
        self.keys.iter().position(|k| &k.id.0 == id)
    }
}

/// Writes the signed message of PROTOCOL.md 3.3 into `out` (cleared first).
pub fn signed_message(
    out: &mut Vec<u8>,
    channel: &ChannelId,
    key_id: KeyId,
    sender_id: &SenderId,
    first_seq: u64,
    hashes: &[u8],
) {
    out.clear();
    out.reserve(MANIFEST_LABEL.len() + channel.as_bytes().len() + 28 + hashes.len());
    out.extend_from_slice(MANIFEST_LABEL);
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(sender_id.as_bytes());
    out.extend_from_slice(&first_seq.to_be_bytes());
    out.extend_from_slice(hashes);
}

/// Most hashes that fit one manifest in a datagram of `max_datagram` bytes.
pub fn hashes_that_fit(max_datagram: usize) -> usize {
    (max_datagram.saturating_sub(OVERHEAD + MANIFEST_OVERHEAD) / HASH_LEN).min(MAX_MANIFEST_HASHES)
}

/// A sender session that signs: seals frames into a batch, and when the
/// batch closes emits the manifest, the batch's frames and the manifest
/// again (PROTOCOL.md 3.4).
pub struct SignedSealer {
    sealer: Sealer,
    key: std::sync::Arc<SignerKey>,
    channel: ChannelId,
    every: usize,
    interval_us: u64,
    /// Sealed frames of the open batch, end to end, and where each ends.
    frames: Vec<u8>,
    ends: Vec<usize>,
    hashes: Vec<u8>,
    first_seq: u64,
    /// When the open batch's first frame was sealed (caller's clock).
    opened_at_us: Option<u64>,
    message: Vec<u8>,
    manifests: u64,
}

impl fmt::Debug for SignedSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedSealer")
            .field("sealer", &self.sealer)
            .field("signer", &self.key.id)
            .field("batched", &self.ends.len())
            .finish_non_exhaustive()
    }
}

impl SignedSealer {
    /// Signs `sealer`'s frames with `key`: a manifest every `every` frames
    /// (at most what fits one datagram) or `interval` after a batch's first
    /// frame, whichever comes first.
    pub fn new(
        sealer: Sealer,
        key: std::sync::Arc<SignerKey>,
        channel: ChannelId,
        every: usize,
        interval: Duration,
    ) -> Self {
        let every = every.clamp(1, hashes_that_fit(sealer.max_datagram()).max(1));
        Self {
            sealer,
            key,
            channel,
            every,
            interval_us: u64::try_from(interval.as_micros()).unwrap_or(u64::MAX),
            frames: Vec::new(),
            ends: Vec::new(),
            hashes: Vec::new(),
            first_seq: 0,
            opened_at_us: None,
            message: Vec::new(),
            manifests: 0,
        }
    }

    /// The session's sealer (its sender ID, key, sizes).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Frames per manifest in force (after fitting the datagram size).
    pub fn every(&self) -> usize {
        self.every
    }

    /// Manifests signed so far.
    pub fn manifests(&self) -> u64 {
        self.manifests
    }

    /// The largest body that fits one frame.
    pub fn max_plaintext(&self) -> usize {
        self.sealer.max_plaintext()
    }

    /// Frames waiting in the open batch.
    pub fn batched(&self) -> usize {
        self.ends.len()
    }

    /// When the open batch must close (caller's clock), if one is open.
    pub fn deadline_us(&self) -> Option<u64> {
        self.opened_at_us
            .map(|at| at.saturating_add(self.interval_us))
    }

    /// Whether the open batch must close now: full, or its time is up.
    pub fn is_due(&self, now_us: u64) -> bool {
        self.ends.len() >= self.every || self.deadline_us().is_some_and(|d| now_us >= d)
    }

    /// Seals `body` into the open batch. `now_us` stamps the frame and
    /// starts the batch's clock. Two seqs are always kept for the batch's
    /// manifests: [`SealError::SequenceExhausted`] comes two frames early,
    /// and the batch can still be closed. A full batch (as many frames as
    /// one manifest lists) refuses with [`SealError::BatchFull`] until
    /// [`SignedSealer::close_batch`].
    pub fn seal_body(&mut self, now_us: u64, body: &Body<'_>) -> Result<(), SealError> {
        let seq = self.sealer.next_seq().ok_or(SealError::SequenceExhausted)?;
        if seq > u64::MAX - 2 {
            return Err(SealError::SequenceExhausted);
        }
        if self.ends.len() >= self.every {
            return Err(SealError::BatchFull);
        }
        let start = self.frames.len();
        let room = self.sealer.max_datagram();
        self.frames.resize(start + room, 0);
        let sealed = self
            .frames
            .get_mut(start..)
            .ok_or(SealError::BufferTooSmall)
            .and_then(|buf| self.sealer.seal_body(now_us, body, buf));
        let len = match sealed {
            Ok(len) => len,
            Err(e) => {
                self.frames.truncate(start);
                return Err(e);
            }
        };
        self.frames.truncate(start + len);
        let hash = frame_hash(self.frames.get(start..).unwrap_or_default());
        if self.ends.is_empty() {
            self.first_seq = seq;
            self.opened_at_us = Some(now_us);
        }
        self.hashes.extend_from_slice(&hash);
        self.ends.push(self.frames.len());
        Ok(())
    }

    /// Closes the open batch, if any: calls `emit` with the manifest, each
    /// frame in seq order, and the manifest's second copy.
    pub fn close_batch(
        &mut self,
        now_us: u64,
        emit: &mut dyn FnMut(&[u8]) -> Result<(), SealError>,
    ) -> Result<(), SealError> {
        if self.ends.is_empty() {
            return Ok(());
        }
        signed_message(
            &mut self.message,
            &self.channel,
            self.sealer.key_id(),
            &self.sealer.sender_id(),
            self.first_seq,
            &self.hashes,
        );
        let signature = self.key.sign(&self.message);
        let (r, s) = signature.split_at(32);
        let mut signature_r = [0u8; 32];
        let mut signature_s = [0u8; 32];
        signature_r.copy_from_slice(r);
        signature_s.copy_from_slice(s);
        let body = Body::Manifest(Manifest {
            signer_id: self.key.id.0,
            first_seq: self.first_seq,
            hashes: &self.hashes,
            signature_r,
            signature_s,
        });
        let mut manifest = vec![0u8; self.sealer.max_datagram()];
        let len = self.sealer.seal_body(now_us, &body, &mut manifest)?;
        emit(manifest.get(..len).unwrap_or_default())?;
        let mut start = 0;
        for end in &self.ends {
            emit(self.frames.get(start..*end).unwrap_or_default())?;
            start = *end;
        }
        let len = self.sealer.seal_body(now_us, &body, &mut manifest)?;
        emit(manifest.get(..len).unwrap_or_default())?;
        self.manifests += 1;
        self.frames.clear();
        self.ends.clear();
        self.hashes.clear();
        self.opened_at_us = None;
        Ok(())
    }
}

/// Settings of a trusting receiver. `Default` is PROTOCOL.md 3.5's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifierConfig {
    /// Longest a frame is held waiting for a manifest.
    pub hold: Duration,
    /// Most frames held at once.
    pub max_held: usize,
    /// Most datagram bytes held at once.
    pub max_held_bytes: usize,
    /// Most sender sessions whose verified manifests are remembered.
    pub max_signed_senders: usize,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            hold: DEFAULT_HOLD,
            max_held: DEFAULT_MAX_HELD,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            max_signed_senders: DEFAULT_MAX_SIGNED_SENDERS,
        }
    }
}

/// Why a trusting receiver dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigReject {
    /// One of the core's reasons (steps 1 to 8).
    #[error(transparent)]
    Core(#[from] Reject),
    /// A manifest by a signer the trust file does not hold.
    #[error("manifest by an untrusted signer")]
    Untrusted,
    /// A manifest whose hash list or seq range is not valid.
    #[error("invalid manifest")]
    Invalid,
    /// A manifest whose signature does not verify.
    #[error("bad manifest signature")]
    BadSignature,
    /// A second copy of a manifest already verified (not an attack).
    #[error("duplicate manifest")]
    Duplicate,
    /// A frame whose hash differs from the one its manifest lists.
    #[error("frame does not match its signed manifest")]
    Forged,
    /// A verified manifest by one trusted signer for a sender session
    /// that another trusted signer's manifests already hold.
    #[error("manifest by another signer than the one this sender session belongs to")]
    Conflict,
}

impl SigReject {
    /// The counter's name (PROTOCOL.md 1.7 and 3.5).
    pub fn counter_name(self) -> &'static str {
        match self {
            Self::Core(r) => r.counter_name(),
            Self::Untrusted => "sig_untrusted",
            Self::Invalid => "sig_invalid",
            Self::BadSignature => "sig_bad",
            Self::Duplicate => "manifest_duplicate",
            Self::Forged => "sig_forged",
            Self::Conflict => "sig_conflict",
        }
    }
}

/// What a trusting receiver counted (PROTOCOL.md 3.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedStats {
    /// Frames delivered under a verified signature.
    pub delivered: u64,
    /// Frames held, waiting for a manifest.
    pub held: u64,
    /// Manifests whose signature verified.
    pub manifests_verified: u64,
    /// Second copies of manifests already verified.
    pub manifest_duplicate: u64,
    /// Manifests by a signer not trusted.
    pub sig_untrusted: u64,
    /// Manifests with an invalid hash list or seq range.
    pub sig_invalid: u64,
    /// Manifests whose signature failed.
    pub sig_bad: u64,
    /// Frames whose hash differs from their verified manifest's.
    pub sig_forged: u64,
    /// Held frames of senders that never showed a verified manifest,
    /// dropped when their time was up.
    pub sig_unsigned: u64,
    /// Held frames of signed senders that no manifest listed in time.
    pub sig_expired: u64,
    /// Held frames dropped to make room.
    pub sig_hold_full: u64,
    /// Verified manifests for a sender session another signer holds.
    pub sig_conflict: u64,
}

impl SignedStats {
    /// The counters of PROTOCOL.md 3.5, named, in its order.
    pub fn counters(&self) -> [(&'static str, u64); 10] {
        [
            ("manifests_verified", self.manifests_verified),
            ("manifest_duplicate", self.manifest_duplicate),
            ("sig_untrusted", self.sig_untrusted),
            ("sig_invalid", self.sig_invalid),
            ("sig_bad", self.sig_bad),
            ("sig_forged", self.sig_forged),
            ("sig_unsigned", self.sig_unsigned),
            ("sig_expired", self.sig_expired),
            ("sig_hold_full", self.sig_hold_full),
            ("sig_conflict", self.sig_conflict),
        ]
    }

    fn count(&mut self, reason: SigReject) {
        let counter = match reason {
            SigReject::Core(_) => return,
            SigReject::Untrusted => &mut self.sig_untrusted,
            SigReject::Invalid => &mut self.sig_invalid,
            SigReject::BadSignature => &mut self.sig_bad,
            SigReject::Duplicate => &mut self.manifest_duplicate,
            SigReject::Forged => &mut self.sig_forged,
            SigReject::Conflict => &mut self.sig_conflict,
        };
        *counter = counter.saturating_add(1);
    }
}

/// A frame a trusting receiver delivers: authentic under the group key and
/// listed by a verified manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFrame {
    /// Its header.
    pub header: Header,
    /// Its plaintext body.
    pub plaintext: Vec<u8>,
    /// Which trusted key signed it: an index into [`TrustList::keys`].
    pub signer: usize,
}

/// A delivered frame, borrowed (see [`Verifier::receive_with`]).
#[derive(Debug, Clone, Copy)]
pub struct SignedRef<'a> {
    /// Its header.
    pub header: &'a Header,
    /// Its plaintext body.
    pub plaintext: &'a [u8],
    /// Which trusted key signed it: an index into [`TrustList::keys`].
    pub signer: usize,
}

/// What one datagram did in a trusting receiver, when it was not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A frame a verified manifest lists: delivered (pushed to `out`).
    Delivered,
    /// A frame no verified manifest lists yet: held.
    Held,
    /// A manifest that verified; the held frames it lists went to `out`
    /// (or were counted as forged or replayed instead).
    Verified,
}

/// A verified manifest, remembered for frames that arrive after it.
struct Record {
    first_seq: u64,
    hashes: Box<[u8]>,
    signer: usize,
}

impl Record {
    fn hash_of(&self, seq: u64) -> Option<&[u8]> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        let start = index.checked_mul(HASH_LEN)?;
        self.hashes.get(start..start.checked_add(HASH_LEN)?)
    }
}

struct SenderRecords {
    /// Newest last.
    records: VecDeque<Record>,
    /// When a manifest of this sender last verified, in verification order.
    verified_tick: u64,
}

/// A frame held until a manifest lists it.
struct Held {
    header: Header,
    hash: FrameHash,
    plaintext: Vec<u8>,
    arrived_us: u64,
    charge: usize,
}

/// Where a held frame sits: by sender, then seq, then arrival.
type HeldKey = (KeyId, SenderId, u64, u64);

/// A trusting receiver's signature layer (PROTOCOL.md 3.5), used with the
/// core's [`Opener`]: it opens each datagram without committing, holds what
/// no verified manifest lists yet, and commits and delivers a frame only
/// once a manifest lists its exact hash.
pub struct Verifier {
    trust: TrustList,
    config: VerifierConfig,
    hold_us: u64,
    records: HashMap<(KeyId, SenderId), SenderRecords, foldhash::fast::RandomState>,
    /// The signer each sender session belongs to: the first whose manifest
    /// for it verified. Kept apart from `records`, which another trusted
    /// signer can push out with sessions of its own: a session is forgotten
    /// here only once neither the core's sender table nor `records` knows
    /// it, so another trusted key can never take it over while its window
    /// lives.
    owners: HashMap<(KeyId, SenderId), usize, foldhash::fast::RandomState>,
    ticks: u64,
    held: BTreeMap<HeldKey, Held>,
    /// Held frames in arrival order (keys may be gone already).
    arrivals: VecDeque<HeldKey>,
    held_bytes: usize,
    arrival_no: u64,
    scratch: Vec<u8>,
    message: Vec<u8>,
    stats: SignedStats,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("trusted", &self.trust.keys.len())
            .field("held", &self.held.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Bytes a held frame is charged besides its datagram: the entry, its keys
/// and the allocation's bookkeeping.
const HELD_OVERHEAD: usize = 160;

impl Verifier {
    /// A trusting receiver's signature layer.
    pub fn new(trust: TrustList, config: VerifierConfig) -> Self {
        Self {
            trust,
            hold_us: u64::try_from(config.hold.as_micros()).unwrap_or(u64::MAX),
            config,
            records: HashMap::default(),
            owners: HashMap::default(),
            ticks: 0,
            held: BTreeMap::new(),
            arrivals: VecDeque::new(),
            held_bytes: 0,
            arrival_no: 0,
            scratch: Vec::new(),
            message: Vec::new(),
            stats: SignedStats::default(),
        }
    }

    /// The trusted keys.
    pub fn trust(&self) -> &TrustList {
        &self.trust
    }

    /// Counters so far.
    pub fn stats(&self) -> &SignedStats {
        &self.stats
    }

    /// Frames held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Datagram bytes held now, with each frame's fixed charge.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// One datagram at receiver time `now_us`: steps 1 to 6 by `opener`
    /// (which counts the core's rejections), then PROTOCOL.md 3.5. Frames
    /// delivered are pushed to `out`, in order. Held frames whose time is up
    /// are dropped first.
    pub fn receive(
        &mut self,
        opener: &mut Opener,
        now_us: u64,
        datagram: &[u8],
        out: &mut Vec<SignedFrame>,
    ) -> Result<Received, SigReject> {
        self.receive_with(opener, now_us, datagram, &mut |frame| {
            out.push(SignedFrame {
                header: *frame.header,
                plaintext: frame.plaintext.to_vec(),
                signer: frame.signer,
            });
        })
    }

    /// [`Verifier::receive`], handing each delivered frame to `deliver`
    /// borrowed: no copy of its plaintext.
    pub fn receive_with(
        &mut self,
        opener: &mut Opener,
        now_us: u64,
        datagram: &[u8],
        deliver: &mut dyn FnMut(SignedRef<'_>),
    ) -> Result<Received, SigReject> {
        self.expire(now_us);
        let result = self.receive_inner(opener, now_us, datagram, deliver);
        if let Err(reason) = result {
            self.stats.count(reason);
        }
        result
    }

    fn receive_inner(
        &mut self,
        opener: &mut Opener,
        now_us: u64,
        datagram: &[u8],
        deliver: &mut dyn FnMut(SignedRef<'_>),
    ) -> Result<Received, SigReject> {
        // The AEAD first, on a copy: the datagram stays as sent, to be
        // hashed once it proved authentic.
        self.scratch.clear();
        self.scratch.extend_from_slice(datagram);
        let opened = opener.open_uncommitted(now_us, &mut self.scratch)?;
        let header = opened.header;
        let plaintext = opened.plaintext;
        let body = match Body::decode(plaintext) {
            Ok(body) => body,
            Err(crate::body::BodyError::UnknownVariant(_)) => {
                return Err(opener.count_rejected(Reject::UnknownBody).into());
            }
            Err(_) => return Err(opener.count_rejected(Reject::BadBody).into()),
        };
        if let Body::Manifest(manifest) = body {
            let channel = opener.channel().clone();
            let manifest = OwnedManifest::from(&manifest);
            return self.manifest(opener, now_us, &channel, &header, &manifest, deliver);
        }
        let hash = frame_hash(datagram);
        let id = (header.key_id, header.sender_id);
        if let Some(records) = self.records.get(&id)
            && let Some(record) = records
                .records
                .iter()
                .rev()
                .find(|r| r.hash_of(header.seq).is_some())
        {
            if record.hash_of(header.seq) != Some(&hash[..]) {
                return Err(SigReject::Forged);
            }
            let signer = record.signer;
            opener.commit(now_us, &header)?;
            self.stats.delivered = self.stats.delivered.saturating_add(1);
            deliver(SignedRef {
                header: &header,
                plaintext,
                signer,
            });
            return Ok(Received::Delivered);
        }
        let plaintext = plaintext.to_vec();
        self.hold(now_us, header, hash, plaintext, datagram.len());
        Ok(Received::Held)
    }

    fn manifest(
        &mut self,
        opener: &mut Opener,
        now_us: u64,
        channel: &ChannelId,
        header: &Header,
        manifest: &OwnedManifest,
        deliver: &mut dyn FnMut(SignedRef<'_>),
    ) -> Result<Received, SigReject> {
        let signer = self
            .trust
            .find(&manifest.signer_id)
            .ok_or(SigReject::Untrusted)?;
        let count = manifest.hashes.len() / HASH_LEN;
        if !manifest.hashes.len().is_multiple_of(HASH_LEN)
            || count == 0
            || count > MAX_MANIFEST_HASHES
            || manifest.first_seq.checked_add(count as u64 - 1).is_none()
        {
            return Err(SigReject::Invalid);
        }
        let id = (header.key_id, header.sender_id);
        if let Some(records) = self.records.get(&id)
            && records.records.iter().any(|r| {
                r.first_seq == manifest.first_seq
                    && r.signer == signer
                    && *r.hashes == *manifest.hashes
            })
        {
            return Err(SigReject::Duplicate);
        }
        let Some(trusted) = self.trust.keys.get(signer) else {
            return Err(SigReject::Untrusted);
        };
        signed_message(
            &mut self.message,
            channel,
            header.key_id,
            &header.sender_id,
            manifest.first_seq,
            &manifest.hashes,
        );
        let signature = Signature::from_bytes(&manifest.signature);
        if trusted
            .key
            .verify_strict(&self.message, &signature)
            .is_err()
        {
            return Err(SigReject::BadSignature);
        }
        // A sender session belongs to the first signer whose manifest for it
        // verified: one trusted key cannot sign frames into another's
        // session, so labels and windows stay with their signer.
        match self.owners.get(&id) {
            Some(&owner) if owner != signer => return Err(SigReject::Conflict),
            Some(_) => {}
            None => self.claim(opener, id, signer),
        }
        self.stats.manifests_verified = self.stats.manifests_verified.saturating_add(1);
        let record = Record {
            first_seq: manifest.first_seq,
            hashes: manifest.hashes.clone().into_boxed_slice(),
            signer,
        };
        self.record(id, record);
        // Release what it lists, in seq order.
        let last = manifest.first_seq + (count as u64 - 1);
        let keys: Vec<HeldKey> = self
            .held
            .range((id.0, id.1, manifest.first_seq, 0)..=(id.0, id.1, last, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(held) = self.held.remove(&key) else {
                continue;
            };
            self.held_bytes = self.held_bytes.saturating_sub(held.charge);
            let index = usize::try_from(held.header.seq - manifest.first_seq).unwrap_or(usize::MAX);
            let listed = manifest
                .hashes
                .get(index.saturating_mul(HASH_LEN)..)
                .and_then(|rest| rest.get(..HASH_LEN));
            if listed != Some(&held.hash[..]) {
                self.stats.sig_forged = self.stats.sig_forged.saturating_add(1);
                continue;
            }
            if opener.commit(now_us, &held.header).is_err() {
                continue;
            }
            self.stats.delivered = self.stats.delivered.saturating_add(1);
            deliver(SignedRef {
                header: &held.header,
                plaintext: &held.plaintext,
                signer,
            });
        }
        Ok(Received::Verified)
    }

    /// Makes `signer` the owner of sender session `id`. At most twice the
    /// sessions the core's table and the records can hold are remembered;
    /// when that is reached, the sessions neither knows are forgotten (at
    /// least half of them), so the cost stays constant per claim on average.
    fn claim(&mut self, opener: &Opener, id: (KeyId, SenderId), signer: usize) {
        let bound = opener
            .config()
            .max_senders
            .saturating_add(self.config.max_signed_senders.max(1))
            .saturating_mul(2);
        if self.owners.len() >= bound {
            let records = &self.records;
            self.owners
                .retain(|k, _| opener.knows_sender(k.0, k.1) || records.contains_key(k));
        }
        self.owners.insert(id, signer);
    }

    fn record(&mut self, id: (KeyId, SenderId), record: Record) {
        // A session keeps the manifests of its highest seqs, not the last
        // verified: a manifest frame's header is not signed, so a member can
        // re-seal old manifests at will, and they must not push out the
        // current one (its frames would be held instead of checked on
        // arrival). One older than every record of a full session is not
        // recorded, and does not count as the session's activity.
        if let Some(entry) = self.records.get_mut(&id)
            && entry.records.len() >= RECORDS_PER_SENDER
        {
            let Some((lowest, first_seq)) = entry
                .records
                .iter()
                .enumerate()
                .map(|(i, r)| (i, r.first_seq))
                .min_by_key(|(_, first_seq)| *first_seq)
            else {
                return;
            };
            if record.first_seq < first_seq {
                return;
            }
            entry.records.remove(lowest);
        }
        self.ticks += 1;
        if !self.records.contains_key(&id)
            && self.records.len() >= self.config.max_signed_senders.max(1)
            && let Some(oldest) = self
                .records
                .iter()
                .min_by_key(|(_, r)| r.verified_tick)
                .map(|(k, _)| *k)
        {
            self.records.remove(&oldest);
        }
        let entry = self.records.entry(id).or_insert_with(|| SenderRecords {
            records: VecDeque::new(),
            verified_tick: 0,
        });
        entry.verified_tick = self.ticks;
        entry.records.push_back(record);
    }

    fn hold(
        &mut self,
        now_us: u64,
        header: Header,
        hash: FrameHash,
        plaintext: Vec<u8>,
        datagram_len: usize,
    ) {
        let charge = datagram_len + HELD_OVERHEAD;
        // A frame that could never fit is dropped alone: emptying the hold
        // would not make room for it.
        if self.config.max_held == 0 || charge > self.config.max_held_bytes {
            self.stats.sig_hold_full = self.stats.sig_hold_full.saturating_add(1);
            return;
        }
        while !self.held.is_empty()
            && (self.held.len() >= self.config.max_held
                || self.held_bytes + charge > self.config.max_held_bytes)
        {
            if self.drop_oldest().is_some() {
                self.stats.sig_hold_full = self.stats.sig_hold_full.saturating_add(1);
            }
        }
        self.arrival_no += 1;
        let key = (header.key_id, header.sender_id, header.seq, self.arrival_no);
        self.held.insert(
            key,
            Held {
                header,
                hash,
                plaintext,
                arrived_us: now_us,
                charge,
            },
        );
        self.arrivals.push_back(key);
        self.held_bytes += charge;
        self.stats.held = self.stats.held.saturating_add(1);
    }

    /// Removes the oldest frame still held; `None` if the queue ran dry.
    fn drop_oldest(&mut self) -> Option<Held> {
        while let Some(key) = self.arrivals.pop_front() {
            if let Some(held) = self.held.remove(&key) {
                self.held_bytes = self.held_bytes.saturating_sub(held.charge);
                return Some(held);
            }
        }
        None
    }

    /// Drops every held frame, counted as if its time were up: for a
    /// receiver that stops, so its counters account for every frame.
    pub fn finish(&mut self) {
        self.drop_held(u64::MAX, true);
    }

    /// Drops held frames older than the hold time: `sig_expired` for a
    /// sender with a verified manifest, else `sig_unsigned`.
    pub fn expire(&mut self, now_us: u64) {
        self.drop_held(now_us, false);
    }

    fn drop_held(&mut self, now_us: u64, all: bool) {
        while let Some(key) = self.arrivals.front().copied() {
            let Some(held) = self.held.get(&key) else {
                self.arrivals.pop_front();
                continue;
            };
            if !all && now_us.saturating_sub(held.arrived_us) <= self.hold_us {
                break;
            }
            self.arrivals.pop_front();
            if let Some(held) = self.held.remove(&key) {
                self.held_bytes = self.held_bytes.saturating_sub(held.charge);
                let id = (held.header.key_id, held.header.sender_id);
                if self.records.contains_key(&id) {
                    self.stats.sig_expired = self.stats.sig_expired.saturating_add(1);
                } else {
                    self.stats.sig_unsigned = self.stats.sig_unsigned.saturating_add(1);
                }
            }
        }
        // Keep the queue from growing with keys released long ago.
        if self.arrivals.len() > 2 * self.held.len() + 64 {
            let held = &self.held;
            self.arrivals.retain(|k| held.contains_key(k));
        }
    }
}

/// A manifest's fields, copied out of the plaintext buffer.
struct OwnedManifest {
    signer_id: [u8; 8],
    first_seq: u64,
    hashes: Vec<u8>,
    signature: [u8; 64],
}

impl From<&Manifest<'_>> for OwnedManifest {
    fn from(m: &Manifest<'_>) -> Self {
        let mut signature = [0u8; 64];
        let (r, s) = signature.split_at_mut(32);
        r.copy_from_slice(&m.signature_r);
        s.copy_from_slice(&m.signature_s);
        Self {
            signer_id: m.signer_id,
            first_seq: m.first_seq,
            hashes: m.hashes.to_vec(),
            signature,
        }
    }
}

#[cfg(test)]
#[path = "signed_tests.rs"]
mod tests;
