//! The frame AEAD: ChaCha20-Poly1305 (RFC 8439) in place with a detached
//! tag, under one key, from one of two backends.
//!
//! ```text
//! (buf, tag) = ChaCha20-Poly1305[key, nonce](aad, buf)    key 32 B, nonce 12 B, tag 16 B
//! ```
//!
//! - [`RustCrypto`]: the `chacha20poly1305` crate, pure Rust; always
//!   compiled. Its key schedule zeroizes on drop.
//! - [`Ring`] (cargo feature `ring`, which `cli` turns on): `ring`'s
//!   BoringSSL-derived assembly, which picks AVX2 (or whatever the CPU
//!   has) at run time, so one portable binary gets the fast path: 2.4 to
//!   3.3 times faster per 1456-byte datagram here (BENCHMARKS.md, "The
//!   cipher: backends"). `ring` does not zeroize its copy of the key.
//!
//! Both compute the same bytes (the tests below, tests/wycheproof.rs and
//! tests/vectors.rs hold each to that). [`Session`] is the one frames use:
//! `Ring` when the feature is on, else `RustCrypto`. The XChaCha20 step
//! (the HChaCha20 subkey) stays in src/seal.rs, once per sender session.

use crate::frame::TAG_LEN;

/// Key length in bytes (RFC 8439, section 2.8).
pub const KEY_LEN: usize = 32;
/// Nonce length in bytes (RFC 8439, section 2.8).
pub const NONCE_LEN: usize = 12;

/// One ChaCha20-Poly1305 key, ready to seal and open in place.
///
/// Implemented by each backend; the methods are the only way frames touch
/// the AEAD, so the known-answer suites run against them cover the wiring.
pub trait FrameAead: Sized {
    /// The backend's name, as benchmarks and `--version` report it.
    const NAME: &'static str;

    /// Sets up the key.
    fn new(key: &[u8; KEY_LEN]) -> Self;

    /// Encrypts `buf` in place and returns the tag; `None` only if `buf`
    /// is longer than the AEAD allows (about 256 GiB).
    fn seal_in_place_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Option<[u8; TAG_LEN]>;

    /// Decrypts `buf` in place if `tag` verifies. On `false` the contents
    /// of `buf` are unspecified (ring zeroes them, RustCrypto leaves the
    /// ciphertext): a caller must not use them.
    #[must_use]
    fn open_in_place_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool;
}

/// The backend frames use: `ring` when that feature is on.
#[cfg(feature = "ring")]
pub type Session = Ring;
/// The backend frames use: `ring` when that feature is on.
#[cfg(not(feature = "ring"))]
pub type Session = RustCrypto;

/// RustCrypto's `chacha20poly1305`: pure Rust, zeroized on drop.
pub struct RustCrypto(chacha20poly1305::ChaCha20Poly1305);

impl FrameAead for RustCrypto {
    const NAME: &'static str = "rustcrypto";

    #[inline]
    fn new(key: &[u8; KEY_LEN]) -> Self {
        use chacha20poly1305::KeyInit;
        Self(chacha20poly1305::ChaCha20Poly1305::new(key.into()))
    }

    #[inline]
    fn seal_in_place_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Option<[u8; TAG_LEN]> {
        use chacha20poly1305::aead::AeadInOut;
        self.0
            .encrypt_inout_detached(nonce.into(), aad, buf.into())
            .ok()
            .map(Into::into)
    }

    #[inline]
    fn open_in_place_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        use chacha20poly1305::aead::AeadInOut;
        self.0
            .decrypt_inout_detached(nonce.into(), aad, buf.into(), tag.into())
            .is_ok()
    }
}

/// `ring`'s `CHACHA20_POLY1305`. Its key schedule is the raw key, kept in
/// `LessSafeKey` and not zeroized when dropped (SECURITY.md says so).
#[cfg(feature = "ring")]
pub struct Ring(ring::aead::LessSafeKey);

#[cfg(feature = "ring")]
impl FrameAead for Ring {
    const NAME: &'static str = "ring";

    #[inline]
    fn new(key: &[u8; KEY_LEN]) -> Self {
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
            .expect("a 32-byte key is CHACHA20_POLY1305's key length");
        Self(ring::aead::LessSafeKey::new(key))
    }

    #[inline]
    fn seal_in_place_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Option<[u8; TAG_LEN]> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(*nonce),
                ring::aead::Aad::from(aad),
                buf,
            )
            .ok()?;
        <[u8; TAG_LEN]>::try_from(tag.as_ref()).ok()
    }

    #[inline]
    fn open_in_place_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        self.0
            .open_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(*nonce),
                ring::aead::Aad::from(aad),
                ring::aead::Tag::from(*tag),
                buf,
                0..,
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8439, section 2.8.2: the AEAD test vector.
    fn rfc8439<A: FrameAead>() {
        let key: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
        let nonce = [
            0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
        ];
        let aad = [
            0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        ];
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let want_tag = [
            0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60,
            0x06, 0x91,
        ];
        let want_ct_start = [0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb];
        let want_ct_end = [0x61, 0x16];
        let aead = A::new(&key);
        let mut buf = pt.to_vec();
        let tag = aead
            .seal_in_place_detached(&nonce, &aad, &mut buf)
            .expect("small");
        assert_eq!(tag, want_tag, "{}", A::NAME);
        assert_eq!(&buf[..8], &want_ct_start, "{}", A::NAME);
        assert_eq!(&buf[buf.len() - 2..], &want_ct_end, "{}", A::NAME);
        assert!(aead.open_in_place_detached(&nonce, &aad, &mut buf, &tag));
        assert_eq!(&buf[..], &pt[..], "{}", A::NAME);
    }

    /// A flipped bit anywhere (tag, ciphertext, AAD, nonce) is refused.
    fn refuses_tampering<A: FrameAead>() {
        let aead = A::new(&[3; 32]);
        let nonce = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let aad = [1u8; 40];
        let mut sealed = vec![5u8; 100];
        let tag = aead
            .seal_in_place_detached(&nonce, &aad, &mut sealed)
            .expect("small");
        let mut bad_tag = tag;
        bad_tag[15] ^= 1;
        let mut buf = sealed.clone();
        assert!(!aead.open_in_place_detached(&nonce, &aad, &mut buf, &bad_tag));
        let mut buf = sealed.clone();
        buf[50] ^= 0x80;
        assert!(!aead.open_in_place_detached(&nonce, &aad, &mut buf, &tag));
        let mut bad_aad = aad;
        bad_aad[0] ^= 1;
        let mut buf = sealed.clone();
        assert!(!aead.open_in_place_detached(&nonce, &bad_aad, &mut buf, &tag));
        let mut bad_nonce = nonce;
        bad_nonce[11] ^= 1;
        let mut buf = sealed.clone();
        assert!(!aead.open_in_place_detached(&bad_nonce, &aad, &mut buf, &tag));
        let mut buf = sealed;
        assert!(aead.open_in_place_detached(&nonce, &aad, &mut buf, &tag));
        assert_eq!(buf, vec![5u8; 100]);
    }

    #[test]
    fn rustcrypto_rfc8439_vector() {
        rfc8439::<RustCrypto>();
    }

    #[test]
    fn rustcrypto_refuses_tampering() {
        refuses_tampering::<RustCrypto>();
    }

    #[cfg(feature = "ring")]
    #[test]
    fn ring_rfc8439_vector() {
        rfc8439::<Ring>();
    }

    #[cfg(feature = "ring")]
    #[test]
    fn ring_refuses_tampering() {
        refuses_tampering::<Ring>();
    }

    /// The two backends agree byte for byte at every length a frame body
    /// can have around the block sizes (64 for ChaCha20, 16 for Poly1305),
    /// with and without AAD, and each opens the other's output.
    #[cfg(feature = "ring")]
    #[test]
    fn ring_and_rustcrypto_agree() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 1) as u8);
        let (r, c) = (Ring::new(&key), RustCrypto::new(&key));
        for len in (0..=300).chain([1399, 1400, 1416, 1417, 1456, 8192]) {
            for aad_len in [0, 1, 40] {
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&(len as u64 * 3 + aad_len as u64).to_be_bytes());
                let aad: Vec<u8> = (0..aad_len).map(|i| i as u8 ^ 0x5a).collect();
                let pt: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
                let (mut a, mut b) = (pt.clone(), pt.clone());
                let ta = r
                    .seal_in_place_detached(&nonce, &aad, &mut a)
                    .expect("fits");
                let tb = c
                    .seal_in_place_detached(&nonce, &aad, &mut b)
                    .expect("fits");
                assert_eq!((&a, ta), (&b, tb), "len {len}, aad {aad_len}");
                assert!(c.open_in_place_detached(&nonce, &aad, &mut a, &ta));
                assert!(r.open_in_place_detached(&nonce, &aad, &mut b, &tb));
                assert_eq!((&a, &b), (&pt, &pt), "len {len}, aad {aad_len}");
            }
        }
    }
}
