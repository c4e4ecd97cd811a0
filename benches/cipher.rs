//! The frame AEAD alone, each backend compiled in side by side in the same
//! run: RustCrypto's `chacha20poly1305` (always) and `ring` (feature
//! `ring`, on by default through `cli`). ChaCha20-Poly1305 in place with a
//! detached tag and a 40-byte header as AAD, as `src/seal.rs` calls it, on
//! 64, 512 and 1456 bytes: 1456 is the whole datagram of a 1400-byte
//! payload (issue #14's unit), so it slightly overstates that frame's
//! cipher work (its encrypted body is about 1400 bytes).
//!
//! `cargo bench --bench cipher`; `-- --quick` for a fast pass. Ids are
//! `cipher/SIZE/BACKEND_seal` and `..._open`; BENCHMARKS.md ("The cipher:
//! backends") reports them.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mcsec::frame::HEADER_LEN;
#[cfg(feature = "ring")]
use mcsec::seal::aead_for_tests::Ring;
use mcsec::seal::aead_for_tests::{FrameAead, RustCrypto};

const SIZES: [usize; 3] = [64, 512, 1456];

fn nonce(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    nonce
}

fn bench_backend<A: FrameAead>(c: &mut Criterion) {
    let aead = A::new(&[7; 32]);
    let aad = [0x4du8; HEADER_LEN];
    for size in SIZES {
        let mut group = c.benchmark_group(format!("cipher/{size}"));
        group.throughput(Throughput::Bytes(size as u64));

        let mut buf = vec![0x55u8; size];
        let mut n = 0u64;
        group.bench_function(format!("{}_seal", A::NAME), |b| {
            b.iter(|| {
                n += 1;
                black_box(aead.seal_in_place_detached(&nonce(n), &aad, black_box(&mut buf)))
            })
        });

        // Opening decrypts in place, so each iteration gets its own copy
        // of one sealed buffer (copied outside the timed part); every open
        // succeeds, as an authentic frame's does.
        let mut sealed = vec![0x55u8; size];
        let tag = aead
            .seal_in_place_detached(&nonce(1), &aad, &mut sealed)
            .expect("a small buffer seals");
        let mut check = sealed.clone();
        assert!(aead.open_in_place_detached(&nonce(1), &aad, &mut check, &tag));
        group.bench_function(format!("{}_open", A::NAME), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| black_box(aead.open_in_place_detached(&nonce(1), &aad, buf, &tag)),
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

fn benches(c: &mut Criterion) {
    bench_backend::<RustCrypto>(c);
    #[cfg(feature = "ring")]
    bench_backend::<Ring>(c);
}

criterion_group!(cipher, benches);
criterion_main!(cipher);
