//! Lowercase hex, strict: the only form key files, IDs and hashes are
//! written in. Both ways go through `base16ct`, which is constant-time:
//! a group secret's digits are made and parsed without a branch or a table
//! lookup on its value.

use zeroize::Zeroize;

/// Decodes exactly `2 * N` lowercase hex digits.
pub(crate) fn decode_lower<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    match base16ct::lower::decode(s, &mut out) {
        Ok(decoded) if decoded.len() == N => Some(out),
        _ => {
            // What was decoded before the bad digit may be part of a secret.
            out.zeroize();
            None
        }
    }
}

/// Appends the lowercase hex digits of `bytes`, 64 at a time through a
/// stack buffer that is wiped afterwards (the bytes may be a secret).
pub(crate) fn push(s: &mut String, bytes: &[u8]) {
    let mut buf = [0u8; 128];
    for chunk in bytes.chunks(64) {
        if let Ok(digits) = base16ct::lower::encode_str(chunk, &mut buf) {
            s.push_str(digits);
        }
    }
    buf.zeroize();
}

/// `bytes` in lowercase hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    push(&mut s, bytes);
    s
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
        assert_eq!(decode_lower::<1>(" a"), None);
        assert_eq!(decode_lower::<0>(""), Some([]));
    }

    #[test]
    fn every_byte_round_trips_and_long_input_is_whole() {
        let all: Vec<u8> = (0..=255u8).collect();
        let s = encode(&all);
        assert_eq!(s.len(), 512);
        assert!(s.starts_with("000102") && s.ends_with("fdfeff"), "{s}");
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).unwrap();
            assert_eq!(decode_lower::<1>(text), Some([i as u8]));
        }
        let mut line = String::from("x ");
        push(&mut line, &[0xab, 0x01]);
        assert_eq!(line, "x ab01");
    }
}
