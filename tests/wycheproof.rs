//! Project Wycheproof's ChaCha20-Poly1305 vectors, run against the AEAD
//! exactly as mcsec wires it (in place, detached tag), for each backend
//! compiled in (src/cipher.rs).

#[cfg(feature = "ring")]
use mcsec::seal::aead_for_tests::Ring;
use mcsec::seal::aead_for_tests::{FrameAead, RustCrypto};
use wycheproof::TestResult;
use wycheproof::aead::{TestName, TestSet};

#[test]
fn wycheproof_chacha20_poly1305_rustcrypto() {
    check_backend::<RustCrypto>();
}

#[cfg(feature = "ring")]
#[test]
fn wycheproof_chacha20_poly1305_ring() {
    check_backend::<Ring>();
}

fn check_backend<A: FrameAead>() {
    let set = TestSet::load(TestName::ChaCha20Poly1305).expect("bundled vectors load");
    let (mut run, mut skipped) = (0usize, 0usize);
    for group in &set.test_groups {
        // Frames always use a 12-byte nonce, a 32-byte key and a 16-byte tag;
        // vectors for other sizes test an API shape mcsec does not have.
        if group.nonce_size != 96 || group.key_size != 256 || group.tag_size != 128 {
            skipped += group.tests.len();
            continue;
        }
        for t in &group.tests {
            let id = t.tc_id;
            let key: [u8; 32] = t.key.as_slice().try_into().expect("key size checked");
            let nonce: [u8; 12] = t.nonce.as_slice().try_into().expect("nonce size checked");
            let valid = t.result != TestResult::Invalid;

            let aead = A::new(&key);
            let mut buf = t.pt.to_vec();
            let tag = aead
                .seal_in_place_detached(&nonce, &t.aad, &mut buf)
                .expect("encrypt");
            if valid {
                assert_eq!(buf, t.ct.as_slice(), "tc {id}: ciphertext");
                assert_eq!(&tag[..], t.tag.as_slice(), "tc {id}: tag");
            }

            let mut buf = t.ct.to_vec();
            let opened = match <[u8; 16]>::try_from(t.tag.as_slice()) {
                Ok(tag) => aead.open_in_place_detached(&nonce, &t.aad, &mut buf, &tag),
                Err(_) => false,
            };
            assert_eq!(opened, valid, "tc {id}: {:?}", t.comment);
            if opened {
                assert_eq!(buf, t.pt.as_slice(), "tc {id}: plaintext");
            }
            run += 1;
        }
    }
    eprintln!(
        "wycheproof ({}): {run} vectors run, {skipped} skipped for other sizes",
        A::NAME
    );
    assert!(run >= 300, "only {run} vectors ran");
}
