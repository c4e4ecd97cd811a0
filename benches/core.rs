//! The sans-IO core against its baselines, measured in the same run:
//! sealing and opening a frame beside the bare ChaCha20-Poly1305 call on the
//! same buffer (a frame is XChaCha20-Poly1305, computed as ChaCha20-Poly1305
//! under the HChaCha20 subkey cached per sender), the replay window, and
//! what rejecting a forgery from an unknown sender costs: one HChaCha20
//! block in version 2 against the HKDF-SHA256 expansion version 1 paid.
//!
//! `cargo bench --bench core`; `-- --quick` for a fast pass. The ratio
//! `seal+open / aead` is what BENCHMARKS.md reports, not the absolute times.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mcsec::frame::{HEADER_LEN, OVERHEAD};
use mcsec::replay::ReplayWindow;
use mcsec::seal::aead_for_tests::{FrameAead, Session};
use mcsec::{ChannelId, GroupKey, GroupSecret, Keyring, Opener, OpenerConfig, Sealer};

const SIZES: [usize; 4] = [64, 512, 1400, 8192];
const NOW: u64 = 1_790_000_000_000_000;

fn key() -> GroupKey {
    GroupKey::new(GroupSecret::from_bytes([9; 32]), None)
}

fn channel() -> ChannelId {
    ChannelId::group("239.255.0.1:5000".parse().expect("an address"))
}

fn bench_seal_open(c: &mut Criterion) {
    for size in SIZES {
        let mut group = c.benchmark_group(format!("frame/{size}"));
        group.throughput(Throughput::Bytes(size as u64));

        // Baseline: the bare AEAD, in place, with a 40-byte AAD, from the
        // backend frames use (src/cipher.rs; benches/cipher.rs compares
        // the backends).
        let aead = Session::new(&[7u8; 32]);
        let aad = [0u8; HEADER_LEN];
        let mut buf = vec![0u8; size];
        let mut n = 0u64;
        group.bench_function("aead_seal", |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                black_box(aead.seal_in_place_detached(&nonce, &aad, &mut buf[..]))
            })
        });

        // The same on the payload at offset 40 of a frame-sized buffer,
        // where `seal_in_place` finds it: same alignment, same buffer.
        let mut frame_buf = vec![0u8; size + OVERHEAD];
        group.bench_function("aead_seal_at_40", |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                let payload = &mut frame_buf[HEADER_LEN..HEADER_LEN + size];
                black_box(aead.seal_in_place_detached(&nonce, &aad, payload))
            })
        });

        let key = key();
        let mut sealer = Sealer::new(&key, &channel()).expect("rng");
        sealer.set_max_datagram(usize::MAX);
        let mut frame = vec![0u8; size + OVERHEAD];
        group.bench_function("mcsec_seal", |b| {
            b.iter(|| black_box(sealer.seal_in_place(NOW, &mut frame, size)))
        });

        // Opening consumes a seq, so every iteration gets a freshly sealed
        // frame (sealed outside the timed part).
        let mut config = OpenerConfig::default();
        config.max_datagram = usize::MAX;
        let mut opener = Opener::new(Keyring::single(key.clone()), channel(), config);
        let mut src = Sealer::new(&key, &channel()).expect("rng");
        src.set_max_datagram(usize::MAX);
        let fresh = |s: &mut Sealer| {
            let mut f = vec![0u8; size + OVERHEAD];
            s.seal_in_place(NOW, &mut f, size).expect("seal");
            f
        };
        group.bench_function("mcsec_open", |b| {
            b.iter_batched_ref(
                || fresh(&mut src),
                |f| black_box(opener.open(NOW, f).is_ok()),
                BatchSize::SmallInput,
            )
        });
        let mut ct = vec![0u8; size];
        let tag = aead
            .seal_in_place_detached(&[0; 12], &aad, &mut ct[..])
            .expect("seal");
        group.bench_function("aead_open", |b| {
            b.iter_batched_ref(
                || ct.clone(),
                |f| black_box(aead.open_in_place_detached(&[0; 12], &aad, &mut f[..], &tag)),
                BatchSize::SmallInput,
            )
        });
        // The same bare AEAD on a ciphertext at offset 40 of its buffer, where
        // a frame's ciphertext sits: separates alignment from mcsec's work.
        let mut framed = vec![0u8; HEADER_LEN];
        framed.extend_from_slice(&ct);
        group.bench_function("aead_open_at_40", |b| {
            b.iter_batched_ref(
                || framed.clone(),
                |f| {
                    black_box(aead.open_in_place_detached(
                        &[0; 12],
                        &aad,
                        &mut f[HEADER_LEN..],
                        &tag,
                    ))
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

fn bench_replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay");
    let mut window = ReplayWindow::new();
    let mut seq = 0u64;
    group.bench_function("check_commit_in_order", |b| {
        b.iter(|| {
            seq += 1;
            if window.check(black_box(seq)).is_ok() {
                window.commit(seq);
            }
        })
    });
    let mut window = ReplayWindow::new();
    window.commit(1_000_000);
    group.bench_function("check_duplicate", |b| {
        b.iter(|| black_box(window.check(black_box(1_000_000))))
    });
    group.finish();
}

/// Rejecting a forged frame (a wrong tag) from a sender never seen: the
/// whole `open`, and the per-sender key step alone beside what version 1
/// did there (HKDF-SHA256 expand from a cached PRK, as `GroupKey` did).
fn bench_unknown_sender(c: &mut Criterion) {
    use hkdf::Hkdf;
    use sha2::Sha256;
    let mut group = c.benchmark_group("unknown_sender");
    let key = key();
    let mut opener = Opener::new(
        Keyring::single(key.clone()),
        channel(),
        OpenerConfig::default(),
    );
    let mut forged = vec![0u8; 64 + OVERHEAD];
    Sealer::new(&key, &channel())
        .expect("rng")
        .seal_in_place(NOW, &mut forged, 64)
        .expect("seal");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let mut id = 0u128;
    group.bench_function("reject_forgery_64", |b| {
        b.iter_batched_ref(
            || {
                id += 1;
                let mut f = forged.clone();
                f[8..24].copy_from_slice(&id.to_be_bytes());
                f
            },
            |f| black_box(opener.open(NOW, f).is_err()),
            BatchSize::SmallInput,
        )
    });
    let channel_key = [5u8; 32];
    group.bench_function("v2_hchacha20_subkey", |b| {
        b.iter(|| {
            id += 1;
            black_box(chacha20::hchacha::<chacha20::R20>(
                (&channel_key).into(),
                (&id.to_be_bytes()).into(),
            ))
        })
    });
    let (prk, _) = Hkdf::<Sha256>::extract(None, &[9u8; 32]);
    group.bench_function("v1_hkdf_sender_key", |b| {
        b.iter(|| {
            id += 1;
            let hkdf = Hkdf::<Sha256>::from_prk(&prk).expect("32-byte PRK");
            let mut okm = [0u8; 32];
            let info: [&[u8]; 3] = [b"mcsec v1 sender key", &[1, 2, 3, 4], &id.to_be_bytes()];
            hkdf.expand_multi_info(&info, &mut okm).expect("32 bytes");
            black_box(okm)
        })
    });
    group.finish();
}

/// Signed senders (PROTOCOL.md Part 3): one batch of 64 frames of 1400
/// payload bytes, sealed plain against sealed and signed (64 seals, 64
/// hashes, one Ed25519 signature, two manifests), and received plain
/// against through a trusting `Verifier` (66 opens, 64 hashes, one
/// verification, one duplicate manifest). Ratios per batch are what
/// BENCHMARKS.md reports; the parts are measured alone beside them.
fn bench_signed(c: &mut Criterion) {
    use mcsec::Body;
    use mcsec::signed::{SignedSealer, SignerKey, TrustList, Trusted, Verifier, VerifierConfig};
    use std::sync::Arc;
    use std::time::Duration;

    const BATCH: usize = 64;
    let payload = vec![7u8; 1397];
    let body = Body::Data(&payload);
    let key = key();
    let signer = Arc::new(SignerKey::from_seed(&[5; 32]));
    let trusted = Trusted::new(&signer.public(), None).expect("a public key");
    let mut group = c.benchmark_group("signed/1400");
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut plain = Sealer::new(&key, &channel()).expect("rng");
    let mut buf = vec![0u8; 1472];
    group.bench_function("seal_batch_plain", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                black_box(plain.seal_body(NOW, &body, &mut buf).expect("seal"));
            }
        })
    });
    let fresh_signed = || {
        SignedSealer::new(
            Sealer::new(&key, &channel()).expect("rng"),
            Arc::clone(&signer),
            channel(),
            BATCH,
            Duration::from_secs(1),
        )
    };
    let mut signed = fresh_signed();
    group.bench_function("seal_batch_signed", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                signed.seal_body(NOW, &body).expect("seal");
            }
            signed
                .close_batch(NOW, &mut |d| {
                    black_box(d);
                    Ok(())
                })
                .expect("close");
        })
    });

    // Receiving: pre-sealed batches, each opened by a fresh receiver state
    // only as often as the window needs (a batch is new seqs every time).
    let mut config = OpenerConfig::default();
    config.max_datagram = 1472;
    let plain_batch = |s: &mut Sealer| -> Vec<Vec<u8>> {
        (0..BATCH)
            .map(|_| {
                let mut f = vec![0u8; 1472];
                let n = s.seal_body(NOW, &body, &mut f).expect("seal");
                f.truncate(n);
                f
            })
            .collect()
    };
    let mut src = Sealer::new(&key, &channel()).expect("rng");
    let mut opener = Opener::new(Keyring::single(key.clone()), channel(), config.clone());
    group.bench_function("open_batch_plain", |b| {
        b.iter_batched_ref(
            || plain_batch(&mut src),
            |frames| {
                for f in frames.iter_mut() {
                    black_box(opener.open_body(NOW, f).is_ok());
                }
            },
            BatchSize::SmallInput,
        )
    });
    let mut signed_src = fresh_signed();
    let signed_batch = |s: &mut SignedSealer| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for _ in 0..BATCH {
            s.seal_body(NOW, &body).expect("seal");
        }
        s.close_batch(NOW, &mut |d| {
            out.push(d.to_vec());
            Ok(())
        })
        .expect("close");
        out
    };
    let mut s_opener = Opener::new(Keyring::single(key.clone()), channel(), config);
    let mut verifier = Verifier::new(TrustList::new(vec![trusted]), VerifierConfig::default());
    group.bench_function("open_batch_signed", |b| {
        b.iter_batched_ref(
            || signed_batch(&mut signed_src),
            |frames| {
                for f in frames.iter() {
                    let _ = verifier.receive_with(&mut s_opener, NOW, f, &mut |d| {
                        black_box(d.plaintext);
                    });
                }
            },
            BatchSize::SmallInput,
        )
    });
    assert_eq!(
        verifier.stats().sig_forged + verifier.stats().sig_bad + verifier.stats().sig_unsigned,
        0
    );

    // The parts, alone.
    let datagram = vec![3u8; 1456];
    group.throughput(Throughput::Elements(1));
    group.bench_function("sha256_1456", |b| {
        b.iter(|| black_box(mcsec::signed::frame_hash(black_box(&datagram))))
    });
    let message = vec![1u8; 1100];
    group.bench_function("ed25519_sign_manifest", |b| {
        b.iter(|| black_box(signer.sign(black_box(&message))))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_seal_open,
    bench_replay,
    bench_unknown_sender,
    bench_signed
);
criterion_main!(benches);
