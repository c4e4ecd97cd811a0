//! The plaintext inside a frame: one `postcard`-encoded [`Body`].
//!
//! Variant numbers are part of the wire format and never change or get
//! reused; SECURITY.md lists them. A receiver that meets a variant it does
//! not know counts it and drops it.

use serde::{Deserialize, Serialize};

/// One frame's plaintext.
///
/// Borrowed: decoding points into the decrypted datagram, encoding writes
/// straight into the frame buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Body<'a> {
    /// Variant 0: one application message, `0x00 || varint(len) || bytes`.
    Data(&'a [u8]),
    /// Variant 1: one piece of a message too large for one frame,
    /// `0x01 || varint(msg_id) || varint(index) || varint(count) ||
    /// varint(total_len) || varint(len) || bytes`.
    ///
    /// Every fragment but the last carries the same number of bytes `s`, so
    /// fragment `index` starts at `index * s` and the last one holds
    /// `total_len - (count - 1) * s` bytes (at least 1, at most `s`).
    /// `msg_id` is unique within a sender session.
    Fragment {
        /// Which message of this sender session.
        msg_id: u32,
        /// Which piece, `0..count`.
        index: u32,
        /// How many pieces (at least 1).
        count: u32,
        /// The whole message's length in bytes.
        total_len: u32,
        /// This piece.
        bytes: &'a [u8],
    },
    /// Variant 2: a chat line, `0x02 || varint(len) || nick || varint(len)
    /// || text`, both UTF-8. The nick is the sender's claim: any key holder
    /// can write any nick.
    Chat {
        /// The name the sender claims.
        nick: &'a str,
        /// The line.
        text: &'a str,
    },
    /// Variant 3: one RaptorQ (RFC 6330) encoding symbol of a file sent as a
    /// carousel with no back channel,
    /// `0x03 || varint(file_id) || varint(file_len) || varint(symbol_size)
    /// || source_blocks (1 byte) || sbn (1 byte) || varint(esi) ||
    /// sha256 (32 bytes) || varint(len) || name || varint(len) || symbol`.
    ///
    /// Every symbol carries all a receiver that joins late needs: the
    /// object transmission information is rebuilt from `file_len`,
    /// `symbol_size` and `source_blocks`, with one sub-block and symbol
    /// alignment 1 fixed; (`sbn`, `esi`) is the symbol's RFC 6330 payload
    /// ID; `symbol` holds exactly `symbol_size` bytes (the last source
    /// symbol is zero-padded). `sha256` is SHA-256 of the whole file and is
    /// checked after decoding. `name` is UTF-8, at most 255 bytes, empty
    /// for none: the sender's suggestion, sanitized before any use.
    /// `file_id` is unique within a sender session.
    FileSymbol(#[serde(borrow)] FileSymbol<'a>),
    /// Variant 4: a signed sender's list of frame hashes (PROTOCOL.md
    /// Part 3), `0x04 || signer_id (8) || varint(first_seq) ||
    /// varint(len) || hashes || signature (64)`.
    Manifest(#[serde(borrow)] Manifest<'a>),
    /// Variant 5: one RaptorQ encoding symbol of a file of any size cut
    /// into independently encoded blocks of `block_symbols` source symbols
    /// (PROTOCOL.md 2.1),
    /// `0x05 || varint(file_id) || varint(file_len) || varint(symbol_size)
    /// || varint(block_symbols) || varint(block) || varint(esi) ||
    /// sha256 (32 bytes) || varint(len) || path || varint(len) || symbol`.
    ///
    /// Block `b` is the file's bytes from `b * block_symbols *
    /// symbol_size`, zero-padded to whole symbols, encoded as an RFC 6330
    /// object of one source block; (`0`, `esi`) is the symbol's payload ID
    /// within it. `path` is a `/`-separated relative path suggestion, at
    /// most 1024 bytes of UTF-8, sanitized before any use.
    StreamSymbol(#[serde(borrow)] StreamSymbol<'a>),
}

/// The fields of [`Body::StreamSymbol`], in wire order. Decoding checks
/// only the bytes; [`crate::transfer`] checks the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSymbol<'a> {
    /// Which file of this sender session.
    pub file_id: u32,
    /// The file's length in bytes (at least 1).
    pub file_len: u64,
    /// Bytes in every symbol of this file.
    pub symbol_size: u16,
    /// Source symbols in every block but the last (which holds the rest).
    pub block_symbols: u32,
    /// Which block, from 0.
    pub block: u64,
    /// Encoding symbol ID within its block: source symbols `0..K`, then
    /// repair symbols.
    pub esi: u32,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
    /// Suggested relative path (`/`-separated), empty for none.
    pub path: &'a str,
    /// The encoding symbol, `symbol_size` bytes.
    pub symbol: &'a [u8],
}

/// The fields of [`Body::Manifest`], in wire order. Decoding checks only
/// the bytes; [`crate::signed`] checks the rest (the hash list's length,
/// the seq range, the signature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest<'a> {
    /// Which signing key signed it: [`crate::signed::SignerId`]'s bytes.
    pub signer_id: [u8; 8],
    /// The seq of the frame whose hash comes first.
    pub first_seq: u64,
    /// 16-byte frame hashes, end to end: frame `first_seq + i` at `16 i`.
    pub hashes: &'a [u8],
    /// The Ed25519 signature's first half (R).
    pub signature_r: [u8; 32],
    /// Its second half (S).
    pub signature_s: [u8; 32],
}

/// The fields of [`Body::FileSymbol`], in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSymbol<'a> {
    /// Which file of this sender session.
    pub file_id: u32,
    /// The file's length in bytes (at least 1).
    pub file_len: u64,
    /// Bytes in every symbol of this file.
    pub symbol_size: u16,
    /// How many RFC 6330 source blocks the file is split into (Z).
    pub source_blocks: u8,
    /// Source block number of this symbol, `0..source_blocks`.
    pub sbn: u8,
    /// Encoding symbol ID within its block: source symbols `0..K`, then
    /// repair symbols. Receivers take it below 2^21 (`files::MAX_ESI`).
    pub esi: u32,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
    /// Suggested file name, empty for none.
    pub name: &'a str,
    /// The encoding symbol.
    pub symbol: &'a [u8],
}

/// How many variants this version knows: variant numbers `0..KNOWN_VARIANTS`.
pub const KNOWN_VARIANTS: u32 = 6;

/// Longest file name a [`Body::FileSymbol`] may carry, in bytes.
pub const MAX_FILE_NAME: usize = 255;

/// The most bytes a [`Body::FileSymbol`] adds to its symbol besides the
/// name: the variant byte, varints of a u32 (5), u64 (10), u16 (3), the two
/// block bytes, the ESI varint (5), the hash (32), the name's length varint
/// (2 for a name of at most 255 bytes) and the symbol's (3, for a symbol
/// under 2 MiB).
pub const FILE_SYMBOL_MAX_OVERHEAD: usize = 1 + 5 + 10 + 3 + 1 + 1 + 5 + 32 + 2 + 3;

/// Longest path a [`Body::StreamSymbol`] may carry, in bytes.
pub const MAX_FILE_PATH: usize = 1024;

/// The most bytes a [`Body::StreamSymbol`] adds to its symbol besides the
/// path: the variant byte, varints of a u32 (5), u64 (10), u16 (3), u32
/// (5), u64 (10), u32 (5), the hash (32), the path's length varint (2 for
/// a path under 16 KiB) and the symbol's (3, for a symbol under 2 MiB).
pub const STREAM_SYMBOL_MAX_OVERHEAD: usize = 1 + 5 + 10 + 3 + 5 + 10 + 5 + 32 + 2 + 3;

/// The most bytes a [`Body::Fragment`] adds to its piece: the variant byte,
/// four u32 varints (5 bytes each at most) and the length varint of a piece
/// under 2 MiB (3 bytes).
pub const FRAGMENT_MAX_OVERHEAD: usize = 1 + 4 * 5 + 3;

/// Bytes the `Data` variant adds to its payload: the variant byte and the
/// length varint (at most 3 bytes for a payload under 2 MiB).
pub const fn data_overhead(payload_len: usize) -> usize {
    1 + varint_len(payload_len)
}

const fn varint_len(n: usize) -> usize {
    varint_len_u64(n as u64)
}

const fn varint_len_u64(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

impl<'a> Body<'a> {
    /// Decodes a whole plaintext. Trailing bytes are an error: the format
    /// has none.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, BodyError> {
        // postcard writes the variant as a varint u32; read it alone first
        // so an unknown variant is told apart from a broken known one.
        let (variant, rest) =
            postcard::take_from_bytes::<u32>(bytes).map_err(|_| BodyError::Malformed)?;
        // The number itself must be minimal too, even for a variant we do
        // not know: `84 00` is a malformed 4, not an unknown variant.
        if bytes.len() - rest.len() != varint_len_u64(u64::from(variant)) {
            return Err(BodyError::Malformed);
        }
        if variant >= KNOWN_VARIANTS {
            return Err(BodyError::UnknownVariant(variant));
        }
        match postcard::take_from_bytes::<Self>(bytes) {
            // postcard accepts over-long varints (`80 00` for 0); a body has
            // one encoding, so anything longer than it is malformed.
            Ok((body, [])) if body.encoded_len() == bytes.len() => Ok(body),
            _ => Err(BodyError::Malformed),
        }
    }

    /// Encodes into the front of `out`, returning the length written.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<usize, BodyError> {
        let needed = self.encoded_len();
        let Some(dest) = out.get_mut(..needed) else {
            return Err(BodyError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        };
        match postcard::to_slice(self, dest) {
            Ok(written) => Ok(written.len()),
            Err(_) => Err(BodyError::BufferTooSmall {
                needed,
                available: out.len(),
            }),
        }
    }

    /// Length of the encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Data(payload) => data_overhead(payload.len()) + payload.len(),
            Self::Fragment {
                msg_id,
                index,
                count,
                total_len,
                bytes,
            } => {
                1 + [msg_id, index, count, total_len]
                    .iter()
                    .map(|v| varint_len(**v as usize))
                    .sum::<usize>()
                    + varint_len(bytes.len())
                    + bytes.len()
            }
            Self::Chat { nick, text } => {
                1 + varint_len(nick.len()) + nick.len() + varint_len(text.len()) + text.len()
            }
            Self::FileSymbol(FileSymbol {
                file_id,
                file_len,
                symbol_size,
                esi,
                sha256,
                name,
                symbol,
                ..
            }) => {
                1 + varint_len_u64(u64::from(*file_id))
                    + varint_len_u64(*file_len)
                    + varint_len_u64(u64::from(*symbol_size))
                    + 2
                    + varint_len_u64(u64::from(*esi))
                    + sha256.len()
                    + varint_len(name.len())
                    + name.len()
                    + varint_len(symbol.len())
                    + symbol.len()
            }
            Self::Manifest(Manifest {
                first_seq, hashes, ..
            }) => 1 + 8 + varint_len_u64(*first_seq) + varint_len(hashes.len()) + hashes.len() + 64,
            Self::StreamSymbol(StreamSymbol {
                file_id,
                file_len,
                symbol_size,
                block_symbols,
                block,
                esi,
                sha256,
                path,
                symbol,
            }) => {
                1 + varint_len_u64(u64::from(*file_id))
                    + varint_len_u64(*file_len)
                    + varint_len_u64(u64::from(*symbol_size))
                    + varint_len_u64(u64::from(*block_symbols))
                    + varint_len_u64(*block)
                    + varint_len_u64(u64::from(*esi))
                    + sha256.len()
                    + varint_len(path.len())
                    + path.len()
                    + varint_len(symbol.len())
                    + symbol.len()
            }
        }
    }
}

/// Why a plaintext is not a body this version can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// A variant this version does not know (from a newer sender).
    #[error("unknown body variant {0}")]
    UnknownVariant(u32),
    /// A known variant that does not decode, or has trailing bytes.
    #[error("malformed body")]
    Malformed,
    /// The output buffer cannot hold the encoding.
    #[error("body needs {needed} bytes, buffer has {available}")]
    BufferTooSmall {
        /// Bytes the encoding needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(body: &Body<'_>) -> Vec<u8> {
        let mut out = vec![0u8; body.encoded_len()];
        let n = body.encode_into(&mut out).unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn data_is_variant_zero_varint_length_bytes() {
        assert_eq!(encode(&Body::Data(b"")), [0x00, 0x00]);
        assert_eq!(encode(&Body::Data(b"abc")), [0x00, 0x03, b'a', b'b', b'c']);
        let long = vec![7u8; 300];
        let enc = encode(&Body::Data(&long));
        // 300 = 0b10_0101100 -> LEB128 ac 02
        assert_eq!(&enc[..3], &[0x00, 0xac, 0x02]);
        assert_eq!(&enc[3..], &long[..]);
        assert_eq!(Body::decode(&enc), Ok(Body::Data(&long)));
    }

    #[test]
    fn encoded_len_matches_postcard_at_varint_edges() {
        for len in [0, 1, 127, 128, 16_383, 16_384, 70_000] {
            let payload = vec![1u8; len];
            let body = Body::Data(&payload);
            let reference = postcard::to_allocvec(&body).unwrap();
            assert_eq!(body.encoded_len(), reference.len(), "len {len}");
            assert_eq!(encode(&body), reference);
        }
    }

    #[test]
    fn decode_refuses_trailing_truncated_and_unknown() {
        assert_eq!(
            Body::decode(&[0x00, 0x01, 0xaa, 0xbb]),
            Err(BodyError::Malformed)
        );
        assert_eq!(Body::decode(&[0x00, 0x02, 0xaa]), Err(BodyError::Malformed));
        assert_eq!(Body::decode(&[]), Err(BodyError::Malformed));
        assert_eq!(Body::decode(&[0x00]), Err(BodyError::Malformed));
        // Over-long varints, in the length and in the variant.
        assert_eq!(Body::decode(&[0x00, 0x80, 0x00]), Err(BodyError::Malformed));
        assert_eq!(Body::decode(&[0x80, 0x00, 0x00]), Err(BodyError::Malformed));
        assert_eq!(
            Body::decode(&[0x00, 0x81, 0x00, 0xaa]),
            Err(BodyError::Malformed)
        );
        assert_eq!(
            Body::decode(&[0x09, 0x00]),
            Err(BodyError::UnknownVariant(9))
        );
        // An over-long number of an unknown variant is malformed too.
        assert_eq!(Body::decode(&[0x84, 0x00, 0x00]), Err(BodyError::Malformed));
        assert_eq!(
            Body::decode(&[0xff, 0xff, 0xff, 0xff, 0x00]),
            Err(BodyError::Malformed)
        );
        assert_eq!(
            Body::decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(BodyError::UnknownVariant(u32::MAX))
        );
        // A varint longer than a u32 allows is malformed, not a variant.
        assert_eq!(
            Body::decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(BodyError::Malformed)
        );
    }

    #[test]
    fn fragment_and_chat_layouts() {
        let frag = Body::Fragment {
            msg_id: 300,
            index: 1,
            count: 2,
            total_len: 5,
            bytes: b"xy",
        };
        assert_eq!(
            encode(&frag),
            [0x01, 0xac, 0x02, 0x01, 0x02, 0x05, 0x02, b'x', b'y']
        );
        assert_eq!(Body::decode(&encode(&frag)), Ok(frag));
        let chat = Body::Chat {
            nick: "al",
            text: "hi",
        };
        assert_eq!(encode(&chat), [0x02, 0x02, b'a', b'l', 0x02, b'h', b'i']);
        assert_eq!(Body::decode(&encode(&chat)), Ok(chat));
        // Chat text must be UTF-8.
        assert_eq!(
            Body::decode(&[0x02, 0x01, b'a', 0x01, 0xff]),
            Err(BodyError::Malformed)
        );
        assert_eq!(Body::decode(&[0x06]), Err(BodyError::UnknownVariant(6)));
    }

    #[test]
    fn file_symbol_layout() {
        let sym = Body::FileSymbol(FileSymbol {
            file_id: 300,
            file_len: 5,
            symbol_size: 2,
            source_blocks: 1,
            sbn: 0,
            esi: 129,
            sha256: [0xee; 32],
            name: "a",
            symbol: b"xy",
        });
        let mut want = vec![0x03, 0xac, 0x02, 0x05, 0x02, 0x01, 0x00, 0x81, 0x01];
        want.extend_from_slice(&[0xee; 32]);
        want.extend_from_slice(&[0x01, b'a', 0x02, b'x', b'y']);
        assert_eq!(encode(&sym), want);
        assert_eq!(postcard::to_allocvec(&sym).unwrap(), want);
        assert_eq!(Body::decode(&want), Ok(sym));
        // The name must be UTF-8; an over-long ESI varint is malformed.
        let mut bad = want.clone();
        bad[42] = 0xff;
        assert_eq!(Body::decode(&bad), Err(BodyError::Malformed));
        let mut long = want[..7].to_vec();
        long.extend_from_slice(&[0x81, 0x81, 0x00]);
        long.extend_from_slice(&want[9..]);
        assert_eq!(Body::decode(&long), Err(BodyError::Malformed));
        // Truncated inside the hash.
        assert_eq!(Body::decode(&want[..20]), Err(BodyError::Malformed));
    }

    #[test]
    fn file_symbol_overhead_bound_holds_at_the_extremes() {
        let symbol = vec![0u8; (1 << 21) - 1];
        let name = "n".repeat(MAX_FILE_NAME);
        let sym = Body::FileSymbol(FileSymbol {
            file_id: u32::MAX,
            file_len: u64::MAX,
            symbol_size: u16::MAX,
            source_blocks: u8::MAX,
            sbn: u8::MAX,
            esi: u32::MAX,
            sha256: [0; 32],
            name: &name,
            symbol: &symbol,
        });
        assert_eq!(
            sym.encoded_len(),
            FILE_SYMBOL_MAX_OVERHEAD + name.len() + symbol.len()
        );
        assert_eq!(
            postcard::to_allocvec(&sym).unwrap().len(),
            sym.encoded_len()
        );
    }

    #[test]
    fn stream_symbol_layout() {
        let sym = Body::StreamSymbol(StreamSymbol {
            file_id: 300,
            file_len: 5,
            symbol_size: 2,
            block_symbols: 2,
            block: 1,
            esi: 129,
            sha256: [0xee; 32],
            path: "d/a",
            symbol: b"xy",
        });
        let mut want = vec![0x05, 0xac, 0x02, 0x05, 0x02, 0x02, 0x01, 0x81, 0x01];
        want.extend_from_slice(&[0xee; 32]);
        want.extend_from_slice(&[0x03, b'd', b'/', b'a', 0x02, b'x', b'y']);
        assert_eq!(encode(&sym), want);
        assert_eq!(postcard::to_allocvec(&sym).unwrap(), want);
        assert_eq!(Body::decode(&want), Ok(sym));
        // The path must be UTF-8; an over-long block varint is malformed.
        let mut bad = want.clone();
        bad[42] = 0xff;
        assert_eq!(Body::decode(&bad), Err(BodyError::Malformed));
        let mut long = want[..6].to_vec();
        long.extend_from_slice(&[0x81, 0x00]);
        long.extend_from_slice(&want[7..]);
        assert_eq!(Body::decode(&long), Err(BodyError::Malformed));
        assert_eq!(Body::decode(&want[..20]), Err(BodyError::Malformed));
        let mut trailing = want.clone();
        trailing.push(0);
        assert_eq!(Body::decode(&trailing), Err(BodyError::Malformed));
    }

    #[test]
    fn stream_symbol_overhead_bound_holds_at_the_extremes() {
        let symbol = vec![0u8; (1 << 21) - 1];
        let path = "n".repeat(MAX_FILE_PATH);
        let sym = Body::StreamSymbol(StreamSymbol {
            file_id: u32::MAX,
            file_len: u64::MAX,
            symbol_size: u16::MAX,
            block_symbols: u32::MAX,
            block: u64::MAX,
            esi: u32::MAX,
            sha256: [0; 32],
            path: &path,
            symbol: &symbol,
        });
        assert_eq!(
            sym.encoded_len(),
            STREAM_SYMBOL_MAX_OVERHEAD + path.len() + symbol.len()
        );
        assert_eq!(
            postcard::to_allocvec(&sym).unwrap().len(),
            sym.encoded_len()
        );
    }

    #[test]
    fn fragment_overhead_bound_holds_at_the_extremes() {
        let piece = vec![0u8; (1 << 21) - 1];
        let frag = Body::Fragment {
            msg_id: u32::MAX,
            index: u32::MAX,
            count: u32::MAX,
            total_len: u32::MAX,
            bytes: &piece,
        };
        assert_eq!(frag.encoded_len(), FRAGMENT_MAX_OVERHEAD + piece.len());
        assert_eq!(
            postcard::to_allocvec(&frag).unwrap().len(),
            frag.encoded_len()
        );
    }

    #[test]
    fn encode_into_a_short_buffer_fails_cleanly() {
        let mut out = [0u8; 4];
        assert_eq!(
            Body::Data(b"abcd").encode_into(&mut out),
            Err(BodyError::BufferTooSmall {
                needed: 6,
                available: 4
            })
        );
    }
}
