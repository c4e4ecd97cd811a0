//! The frame header: bytes to struct and back. No crypto, no I/O.
//!
//! ```text
//! offset size field
//!      0    4 magic and version: 6d 63 73 02 ("mcs", version 2)
//!      4    4 key_id
//!      8   16 sender_id
//!     24    8 seq
//!     32    8 timestamp (microseconds since the Unix epoch)
//!     40    n ciphertext of the body
//!   40+n   16 Poly1305 tag
//! ```
//!
//! All integers are big-endian. The 40 header bytes are the AEAD's
//! associated data. Every frame is sealed for one [`ChannelId`], which is
//! not on the wire: it is authenticated through the key.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// A key's public identifier: the first four bytes of
/// `SHA-256("mcsec v1 key id" || secret)` (made in [`crate::keys`]), big-endian.
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

/// Magic and protocol version: "mcs" then version 2. A version 1 frame
/// (`6d 63 73 01`) is malformed here, never half-read.
pub const MAGIC: [u8; 4] = *b"mcs\x02";

/// Length of the header, the AEAD's associated data.
pub const HEADER_LEN: usize = 40;

/// Length of the Poly1305 tag that ends every frame.
pub const TAG_LEN: usize = 16;

/// Bytes a frame adds to its plaintext body.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// The shortest possible frame: a header and a tag around an empty body.
pub const MIN_FRAME_LEN: usize = OVERHEAD;

/// Default largest datagram on IPv4: a 1500-byte MTU less 20 bytes of IP
/// header and 8 of UDP header.
pub const MAX_DATAGRAM_V4: usize = 1472;

/// Default largest datagram on IPv6: a 1500-byte MTU less 40 bytes of IPv6
/// header and 8 of UDP header.
pub const MAX_DATAGRAM_V6: usize = 1452;

/// A sender session's identity: 128 random bits, new every time a sender
/// starts or switches key.
///
/// Displays and parses as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SenderId(pub [u8; 16]);

impl SenderId {
    /// The ID's bytes as they appear on the wire.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The first 8 hex digits: enough to tell senders apart on screen.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for SenderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for SenderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SenderId({self})")
    }
}

impl FromStr for SenderId {
    type Err = InvalidSenderId;

    /// Accepts exactly 32 lowercase hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::hex::decode_lower(s).map(Self).ok_or(InvalidSenderId)
    }
}

/// A string that is not 32 lowercase hex digits was given as a sender ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a sender ID is 32 lowercase hex digits")]
pub struct InvalidSenderId;

/// Longest channel name, in bytes of UTF-8.
pub const MAX_CHANNEL_NAME: usize = 255;

/// The channel a frame is sealed for, as its ID bytes (PROTOCOL.md,
/// "Channels"):
///
/// ```text
/// IPv4 group and port   04 || address (4) || port (2)
/// IPv6 group and port   06 || address (16) || port (2)     no scope, no flow label
/// a name                00 || length (1) || name           1 to 255 bytes of UTF-8
/// ```
///
/// A frame opens only under the channel it was sealed for: the ID goes into
/// the channel key, so a frame replayed onto another group, port or name
/// fails authentication.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChannelId(Box<[u8]>);

impl ChannelId {
    /// The channel of a group and port. An IPv6 scope ID and flow label are
    /// not part of it: both ends name the same group from different links.
    pub fn group(addr: SocketAddr) -> Self {
        let mut bytes = Vec::with_capacity(19);
        match addr {
            SocketAddr::V4(v4) => {
                bytes.push(0x04);
                bytes.extend_from_slice(&v4.ip().octets());
            }
            SocketAddr::V6(v6) => {
                bytes.push(0x06);
                bytes.extend_from_slice(&v6.ip().octets());
            }
        }
        bytes.extend_from_slice(&addr.port().to_be_bytes());
        Self(bytes.into_boxed_slice())
    }

    /// A named channel: 1 to 255 bytes of UTF-8.
    pub fn named(name: &str) -> Result<Self, InvalidChannel> {
        let len = u8::try_from(name.len()).map_err(|_| InvalidChannel)?;
        if len == 0 {
            return Err(InvalidChannel);
        }
        let mut bytes = Vec::with_capacity(2 + name.len());
        bytes.push(0x00);
        bytes.push(len);
        bytes.extend_from_slice(name.as_bytes());
        Ok(Self(bytes.into_boxed_slice()))
    }

    /// Checks raw channel ID bytes (from a test vector, say) against the
    /// three shapes above.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidChannel> {
        let ok = match bytes.split_first() {
            Some((0x04, rest)) => rest.len() == 6,
            Some((0x06, rest)) => rest.len() == 18,
            Some((0x00, rest)) => match rest.split_first() {
                Some((len, name)) => {
                    *len != 0
                        && name.len() == usize::from(*len)
                        && std::str::from_utf8(name).is_ok()
                }
                None => false,
            },
            _ => false,
        };
        if ok {
            Ok(Self(bytes.into()))
        } else {
            Err(InvalidChannel)
        }
    }

    /// The ID's bytes, as they go into the channel key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name of a named channel.
    pub fn name(&self) -> Option<&str> {
        match self.0.split_first() {
            Some((0x00, rest)) => rest.get(1..).and_then(|n| std::str::from_utf8(n).ok()),
            _ => None,
        }
    }
}

impl fmt::Display for ChannelId {
    /// `239.255.0.1:5000`, `[ff0e::1]:5000`, or `name "feed"` (the name
    /// escaped as Rust's `Debug` does, so it cannot drive a terminal).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.name() {
            return write!(f, "name {name:?}");
        }
        let port = |rest: &[u8]| match rest.last_chunk::<2>() {
            Some(p) => u16::from_be_bytes(*p),
            None => 0,
        };
        match self.0.split_first() {
            Some((0x04, rest)) => match rest.first_chunk::<4>() {
                Some(a) => write!(f, "{}:{}", std::net::Ipv4Addr::from(*a), port(rest)),
                None => f.write_str("?"),
            },
            Some((0x06, rest)) => match rest.first_chunk::<16>() {
                Some(a) => write!(f, "[{}]:{}", std::net::Ipv6Addr::from(*a), port(rest)),
                None => f.write_str("?"),
            },
            _ => f.write_str("?"),
        }
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

/// Not a channel: a name that is empty or longer than 255 bytes, or ID
/// bytes of none of the three shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a channel name is 1 to 255 bytes of UTF-8")]
pub struct InvalidChannel;

/// Where an authenticated frame came from, as far as a receiver can tell:
/// the key it was sealed under and the sender session. Replay windows,
/// fragment reassembly and file reception keep one origin's state apart
/// from every other's, so a holder of one key of a keyring cannot feed
/// pieces into a message or file of a sender under another key by copying
/// its sender ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// The key the frame was sealed under.
    pub key_id: KeyId,
    /// The sender session.
    pub sender_id: SenderId,
}

impl From<&Header> for Origin {
    fn from(header: &Header) -> Self {
        Self {
            key_id: header.key_id,
            sender_id: header.sender_id,
        }
    }
}

/// A frame's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The ID of the group key the frame is sealed under.
    pub key_id: KeyId,
    /// The sending session.
    pub sender_id: SenderId,
    /// 0 for a session's first frame, then +1 per frame.
    pub seq: u64,
    /// The sender's clock when it sealed the frame, in microseconds since
    /// the Unix epoch.
    pub timestamp_us: u64,
}

impl Header {
    /// The header's 40 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        self.encode_into(&mut out);
        out
    }

    /// Writes the header's 40 bytes into `out`.
    pub fn encode_into(&self, out: &mut [u8; HEADER_LEN]) {
        let (magic, rest) = out.split_at_mut(4);
        let (key_id, rest) = rest.split_at_mut(4);
        let (sender_id, rest) = rest.split_at_mut(16);
        let (seq, timestamp) = rest.split_at_mut(8);
        magic.copy_from_slice(&MAGIC);
        key_id.copy_from_slice(&self.key_id.to_be_bytes());
        sender_id.copy_from_slice(&self.sender_id.0);
        seq.copy_from_slice(&self.seq.to_be_bytes());
        timestamp.copy_from_slice(&self.timestamp_us.to_be_bytes());
    }

    /// Decodes 40 header bytes, checking the magic and version.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        let (magic, rest) = split::<4>(bytes);
        if magic != MAGIC {
            return Err(FrameError::BadMagic);
        }
        let (key_id, rest) = split::<4>(rest);
        let (sender_id, rest) = split::<16>(rest);
        let (seq, rest) = split::<8>(rest);
        let (timestamp, _) = split::<8>(rest);
        Ok(Self {
            key_id: KeyId(u32::from_be_bytes(key_id)),
            sender_id: SenderId(sender_id),
            seq: u64::from_be_bytes(seq),
            timestamp_us: u64::from_be_bytes(timestamp),
        })
    }
}

/// Takes the first `N` bytes of a slice the caller knows holds them.
fn split<const N: usize>(bytes: &[u8]) -> ([u8; N], &[u8]) {
    match bytes.split_first_chunk::<N>() {
        Some((head, rest)) => (*head, rest),
        None => unreachable!("header fields are read from a fixed 40-byte array"),
    }
}

/// A datagram split into its three parts, borrowed from the datagram.
#[derive(Debug)]
pub struct FrameParts<'a> {
    /// The 40 header bytes (the AEAD's associated data).
    pub header_bytes: &'a [u8; HEADER_LEN],
    /// The decoded header.
    pub header: Header,
    /// The ciphertext of the body; decrypted in place by the opener.
    pub ciphertext: &'a mut [u8],
    /// The Poly1305 tag.
    pub tag: &'a [u8; TAG_LEN],
}

/// Splits a datagram into header, ciphertext and tag without copying.
///
/// Checks only the length and the magic; everything else is the opener's
/// job.
pub fn split_frame(datagram: &mut [u8]) -> Result<FrameParts<'_>, FrameError> {
    let (header_bytes, rest) = datagram
        .split_first_chunk_mut::<HEADER_LEN>()
        .ok_or(FrameError::TooShort)?;
    let (ciphertext, tag) = rest
        .split_last_chunk_mut::<TAG_LEN>()
        .ok_or(FrameError::TooShort)?;
    let header = Header::decode(header_bytes)?;
    Ok(FrameParts {
        header_bytes,
        header,
        ciphertext,
        tag,
    })
}

/// Reads just the header of a datagram, for tools that inspect frames
/// without a key (a relay, a dissector).
pub fn peek_header(datagram: &[u8]) -> Result<Header, FrameError> {
    if datagram.len() < MIN_FRAME_LEN {
        return Err(FrameError::TooShort);
    }
    let (header_bytes, _) = datagram
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(FrameError::TooShort)?;
    Header::decode(header_bytes)
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than a header and a tag (56 bytes).
    #[error("shorter than the 56-byte minimum frame")]
    TooShort,
    /// The first four bytes are not `6d 63 73 02`.
    #[error("not an mcsec version 2 frame (bad magic)")]
    BadMagic,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            key_id: KeyId(0x0102_0304),
            sender_id: SenderId(*b"0123456789abcdef"),
            seq: 0x1112_1314_1516_1718,
            timestamp_us: 0x2122_2324_2526_2728,
        }
    }

    #[test]
    fn header_layout_matches_protocol() {
        let bytes = sample().encode();
        assert_eq!(&bytes[0..4], b"mcs\x02");
        assert_eq!(&bytes[4..8], &[1, 2, 3, 4]);
        assert_eq!(&bytes[8..24], b"0123456789abcdef");
        assert_eq!(
            &bytes[24..32],
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
        assert_eq!(
            &bytes[32..40],
            &[0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28]
        );
        assert_eq!(Header::decode(&bytes), Ok(sample()));
    }

    #[test]
    fn split_frame_checks_length_and_magic() {
        for len in 0..MIN_FRAME_LEN {
            let mut short = vec![0u8; len];
            if len >= 4 {
                short[..4].copy_from_slice(&MAGIC);
            }
            assert_eq!(
                split_frame(&mut short).unwrap_err(),
                FrameError::TooShort,
                "len {len}"
            );
        }
        let mut frame = vec![0u8; MIN_FRAME_LEN + 3];
        frame[..HEADER_LEN].copy_from_slice(&sample().encode());
        let parts = split_frame(&mut frame).unwrap();
        assert_eq!(parts.header, sample());
        assert_eq!(parts.ciphertext.len(), 3);
        // A version 1 frame is malformed, not half-read.
        frame[3] = 1;
        assert_eq!(split_frame(&mut frame).unwrap_err(), FrameError::BadMagic);
    }

    #[test]
    fn channel_ids_are_byte_exact() {
        let v4 = ChannelId::group("239.255.0.1:5000".parse().unwrap());
        assert_eq!(v4.as_bytes(), [4, 239, 255, 0, 1, 0x13, 0x88]);
        assert_eq!(v4.to_string(), "239.255.0.1:5000");
        // Scope and flow label are not part of an IPv6 channel.
        let a: SocketAddr = "[ff0e::1%7]:5000".parse().unwrap();
        let b: SocketAddr = "[ff0e::1]:5000".parse().unwrap();
        let v6 = ChannelId::group(a);
        assert_eq!(v6, ChannelId::group(b));
        let mut want = vec![6, 0xff, 0x0e];
        want.extend([0; 13]);
        want.extend([1, 0x13, 0x88]);
        assert_eq!(v6.as_bytes(), want);
        assert_eq!(v6.to_string(), "[ff0e::1]:5000");
        let named = ChannelId::named("feed").unwrap();
        assert_eq!(named.as_bytes(), b"\x00\x04feed");
        assert_eq!(named.name(), Some("feed"));
        assert_eq!(named.to_string(), "name \"feed\"");
        assert!(ChannelId::named("").is_err());
        assert!(ChannelId::named(&"x".repeat(255)).is_ok());
        assert!(ChannelId::named(&"x".repeat(256)).is_err());
        for id in [&v4, &v6, &named] {
            assert_eq!(ChannelId::from_bytes(id.as_bytes()).as_ref(), Ok(id));
        }
        for bad in [
            &b""[..],
            &[4, 1, 2, 3, 4, 5],
            &[4, 1, 2, 3, 4, 5, 6, 7],
            &[6; 18],
            &[0, 0],
            &[0, 2, b'a'],
            &[0, 1, 0xff],
            &[5, 1, 2, 3, 4, 5, 6],
        ] {
            assert_eq!(ChannelId::from_bytes(bad), Err(InvalidChannel), "{bad:?}");
        }
    }

    #[test]
    fn sender_id_text_round_trips() {
        let id = SenderId([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(id.to_string().parse::<SenderId>(), Ok(id));
        assert_eq!(id.short(), "abababab");
        assert!("ab".parse::<SenderId>().is_err());
        assert!("zz".repeat(16).parse::<SenderId>().is_err());
        assert!("+a".repeat(16).parse::<SenderId>().is_err());
    }
}
