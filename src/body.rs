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
}

/// How many variants this version knows: variant numbers `0..KNOWN_VARIANTS`.
pub const KNOWN_VARIANTS: u32 = 3;

/// The most bytes a [`Body::Fragment`] adds to its piece: the variant byte,
/// four u32 varints (5 bytes each at most) and the length varint of a piece
/// under 2 MiB (3 bytes).
pub const FRAGMENT_MAX_OVERHEAD: usize = 1 + 4 * 5 + 3;

/// Bytes the `Data` variant adds to its payload: the variant byte and the
/// length varint (at most 3 bytes for a payload under 2 MiB).
pub const fn data_overhead(payload_len: usize) -> usize {
    1 + varint_len(payload_len)
}

const fn varint_len(mut n: usize) -> usize {
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
        let (variant, _) =
            postcard::take_from_bytes::<u32>(bytes).map_err(|_| BodyError::Malformed)?;
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
        assert_eq!(Body::decode(&[0x03]), Err(BodyError::UnknownVariant(3)));
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
