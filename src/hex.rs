//! Lowercase hex, strict: the only form key files and IDs are written in.

/// Decodes exactly `2 * N` lowercase hex digits.
pub(crate) fn decode_lower<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = (nibble(*hi)? << 4) | nibble(*lo)?;
    }
    Some(out)
}

/// Appends the two lowercase hex digits of `byte`.
pub(crate) fn push_byte(s: &mut String, byte: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    s.push(char::from(DIGITS[usize::from(byte >> 4)]));
    s.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_is_strict() {
        assert_eq!(decode_lower::<2>("00ff"), Some([0, 255]));
        assert_eq!(decode_lower::<2>("00FF"), None);
        assert_eq!(decode_lower::<2>("00f"), None);
        assert_eq!(decode_lower::<2>("00fff"), None);
        assert_eq!(decode_lower::<2>("0g00"), None);
        assert_eq!(decode_lower::<1>("+a"), None);
        assert_eq!(decode_lower::<1>("é"), None);
    }

    #[test]
    fn push_byte_round_trips() {
        let mut s = String::new();
        for b in 0..=255u8 {
            push_byte(&mut s, b);
        }
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).unwrap();
            assert_eq!(decode_lower::<1>(text), Some([i as u8]));
        }
    }
}
