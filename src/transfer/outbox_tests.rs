use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::frame::{self, Origin};
use crate::keys::{GroupKey, GroupSecret};
use crate::reassembly::{Reassembler, ReassemblyConfig};
use crate::signed::{SigReject, SignedFrame, TrustList, Trusted, Verifier, VerifierConfig};
use crate::{Opener, OpenerConfig};

const NOW: u64 = 1_790_000_000_000_000;
const MS: u64 = 1000;

fn gkey(byte: u8) -> GroupKey {
    GroupKey::new(GroupSecret::from_bytes([byte; 32]), None)
}

fn ch() -> ChannelId {
    ChannelId::group("239.255.0.1:5000".parse().unwrap())
}

fn plain(max_datagram: usize) -> Outbox {
    Outbox::new(Keyring::single(gkey(1)), ch(), max_datagram, None).unwrap()
}

fn signer() -> Arc<SignerKey> {
    Arc::new(SignerKey::from_seed(&[7; 32]))
}

fn signed(every: usize, interval: Duration) -> Outbox {
    let signing = Signing {
        key: signer(),
        every,
        interval,
    };
    Outbox::new(Keyring::single(gkey(1)), ch(), 1472, Some(signing)).unwrap()
}

fn opener() -> Opener {
    Opener::new(Keyring::single(gkey(1)), ch(), OpenerConfig::default())
}

/// Every ready batch, as (stride, count, datagrams), recycled.
fn drain(outbox: &mut Outbox) -> Vec<(usize, usize, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    while let Some(mut batch) = outbox.pop_batch() {
        batch.seal().unwrap();
        let datagrams: Vec<Vec<u8>> = batch.datagrams().map(<[u8]>::to_vec).collect();
        assert_eq!(datagrams.len(), batch.count());
        out.push((batch.stride(), batch.count(), datagrams));
        outbox.recycle(batch);
    }
    out
}

fn datagrams(batches: &[(usize, usize, Vec<Vec<u8>>)]) -> Vec<Vec<u8>> {
    batches.iter().flat_map(|b| b.2.iter().cloned()).collect()
}

/// Opens each datagram in order: (seq, sender, body as owned Data bytes,
/// or the fragment's fields).
fn open_all(o: &mut Opener, datagrams: &[Vec<u8>]) -> Vec<(u64, SenderId, Vec<u8>)> {
    datagrams
        .iter()
        .map(|d| {
            let mut rx = d.clone();
            let (header, body) = o.open_body(NOW, &mut rx).expect("authentic, in order");
            let bytes = match body {
                Body::Data(bytes) => bytes.to_vec(),
                other => format!("{other:?}").into_bytes(),
            };
            (header.seq, header.sender_id, bytes)
        })
        .collect()
}

#[test]
fn bodies_in_batches_out_that_open_in_order() {
    let mut outbox = plain(1472);
    outbox.set_batching(8, None);
    for i in 0..20u32 {
        let text = format!("m {i:02}");
        outbox
            .queue_body(NOW + u64::from(i), &Body::Data(text.as_bytes()))
            .unwrap();
        // A full batch is ready at once, not when the next body comes.
        if i == 7 {
            assert_eq!(outbox.ready(), 1);
        }
    }
    // Two full batches went; four wait for more until a flush.
    assert_eq!(outbox.ready(), 2);
    outbox.flush(NOW).unwrap();
    let batches = drain(&mut outbox);
    let counts: Vec<usize> = batches.iter().map(|b| b.1).collect();
    assert_eq!(counts, [8, 8, 4]);
    let opened = open_all(&mut opener(), &datagrams(&batches));
    for (i, (seq, sender, bytes)) in opened.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(*sender, outbox.sender_id());
        assert_eq!(bytes, format!("m {i:02}").as_bytes());
    }
    let stats = outbox.stats();
    assert_eq!((stats.datagrams, stats.batches, stats.sessions), (20, 3, 1));
}

#[test]
fn deferred_sealing_numbers_frames_that_seal_later_in_their_batches() {
    let mut outbox = plain(1472);
    outbox.set_batching(4, None);
    outbox.defer_sealing().unwrap();
    for i in 0..6u32 {
        outbox
            .queue_body(NOW, &Body::Data(format!("d {i}").as_bytes()))
            .unwrap();
    }
    outbox.flush(NOW).unwrap();
    let mut first = outbox.pop_batch().unwrap();
    assert!(!first.is_sealed());
    // Sealed elsewhere (a worker), from the parts.
    let (key, frames, mut buf) = first.take_unsealed().unwrap();
    let mut start = 0;
    for frame in frames {
        let len = frame.len();
        key.seal(frame, &mut buf[start..start + len]).unwrap();
        start += len;
    }
    let mut sealed: Vec<Vec<u8>> = buf.chunks(first.stride()).map(<[u8]>::to_vec).collect();
    outbox.recycle_buffer(buf);
    sealed.extend(datagrams(&drain(&mut outbox)));
    let opened = open_all(&mut opener(), &sealed);
    let texts: Vec<&[u8]> = opened.iter().map(|o| &o.2[..]).collect();
    assert_eq!(texts, [b"d 0", b"d 1", b"d 2", b"d 3", b"d 4", b"d 5"]);
    assert_eq!(
        signed(4, Duration::from_millis(10)).defer_sealing(),
        Err(OutboxError::DeferredSigned)
    );
}

#[test]
fn a_large_message_fragments_and_reassembles() {
    let mut outbox = plain(200);
    outbox.set_batching(64, None);
    let message: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let queued = outbox.queue_message(NOW, &message).unwrap();
    let Queued::Fragments { msg_id: 0, count } = queued else {
        panic!("not fragmented: {queued:?}");
    };
    assert!(count > 25, "{count} fragments");
    assert_eq!(outbox.queue_message(NOW, b"small").unwrap(), Queued::Whole);
    outbox.flush(NOW).unwrap();
    let all = datagrams(&drain(&mut outbox));
    assert_eq!(all.len(), count + 1);
    assert!(all.iter().all(|d| d.len() <= 200));
    let mut o = opener();
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut whole = Vec::new();
    for d in &all {
        let mut rx = d.clone();
        let (header, body) = o.open_body(NOW, &mut rx).unwrap();
        match body {
            Body::Fragment {
                msg_id,
                index,
                count,
                total_len,
                bytes,
            } => {
                let origin = Origin::from(&header);
                if let Some(m) = r
                    .push(NOW, origin, msg_id, index, count, total_len, bytes)
                    .unwrap()
                {
                    whole.push(m);
                }
            }
            Body::Data(bytes) => whole.push(bytes.to_vec()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(whole, [message, b"small".to_vec()]);
    assert_eq!(outbox.stats().messages, 2);
    // Too large for any fragment: a kind, not a panic.
    let mut tiny = plain(frame::OVERHEAD + 8);
    assert_eq!(
        tiny.queue_message(NOW, &[0; 100]),
        Err(OutboxError::CannotFragment { len: 100 })
    );
}

#[test]
fn batches_are_no_larger_than_the_pacer_allows() {
    // 20,000 datagrams a second: 20 in a millisecond, under a cap of 44.
    let mut outbox = plain(1472);
    outbox.set_batching(44, Some(Pacer::new(None, Some(20_000), false)));
    for _ in 0..50 {
        outbox.queue_body(NOW, &Body::Data(&[1; 1000])).unwrap();
    }
    outbox.flush(NOW).unwrap();
    let counts: Vec<usize> = drain(&mut outbox).iter().map(|b| b.1).collect();
    assert_eq!(counts, [20, 20, 10]);
    // Unpaced: the caller's cap.
    outbox.set_batching(44, Some(Pacer::new(None, None, false)));
    for _ in 0..50 {
        outbox.queue_body(NOW, &Body::Data(&[1; 1000])).unwrap();
    }
    outbox.flush(NOW).unwrap();
    let counts: Vec<usize> = drain(&mut outbox).iter().map(|b| b.1).collect();
    assert_eq!(counts, [44, 6]);
}

#[test]
fn a_shorter_datagram_ends_a_run_and_a_longer_one_starts_the_next() {
    let mut outbox = plain(1472);
    outbox.set_batching(44, None);
    for len in [100, 100, 100, 50, 100, 200, 200] {
        outbox.queue_body(NOW, &Body::Data(&vec![9; len])).unwrap();
    }
    // 100 x3 + 50 closed by the shorter one; 100 closed by the longer 200.
    assert_eq!(outbox.ready(), 2);
    outbox.flush(NOW).unwrap();
    let batches = drain(&mut outbox);
    let shapes: Vec<(usize, usize)> = batches.iter().map(|b| (b.1, b.2.len())).collect();
    assert_eq!(shapes, [(4, 4), (1, 1), (2, 2)]);
    let lens: Vec<Vec<usize>> = batches
        .iter()
        .map(|b| b.2.iter().map(Vec::len).collect())
        .collect();
    let frame = |n: usize| n + 1 + frame::OVERHEAD + if n > 127 { 2 } else { 1 };
    assert_eq!(
        lens,
        [
            vec![frame(100), frame(100), frame(100), frame(50)],
            vec![frame(100)],
            vec![frame(200), frame(200)]
        ]
    );
    // Each batch's stride is its first datagram's length.
    assert_eq!(batches[0].0, frame(100));
    let opened = open_all(&mut opener(), &datagrams(&batches));
    assert_eq!(opened.len(), 7);
}

/// A trusting receiver's verdicts on `datagrams`, and the frames it
/// delivered.
fn verify(datagrams: &[Vec<u8>]) -> Vec<SignedFrame> {
    let mut o = opener();
    let trust = TrustList::new(vec![Trusted::new(&signer().public(), None).unwrap()]);
    let mut v = Verifier::new(trust, VerifierConfig::default());
    let mut out = Vec::new();
    for d in datagrams {
        match v.receive(&mut o, NOW, d, &mut out) {
            // A manifest's second copy, after the first verified.
            Ok(_) | Err(SigReject::Duplicate) => {}
            Err(e) => panic!("rejected: {e:?}"),
        }
    }
    assert_eq!(v.stats().manifest_duplicate, v.stats().manifests_verified);
    assert!(v.stats().manifests_verified > 0);
    assert_eq!(v.held(), 0, "every frame listed by a manifest");
    out
}

#[test]
fn signed_batches_close_at_their_count_and_a_verifier_accepts_them() {
    let mut outbox = signed(4, Duration::from_secs(3600));
    outbox.set_batching(44, None);
    assert_eq!(outbox.signing_every(), Some(4));
    for i in 0..10u8 {
        outbox.queue_body(NOW, &Body::Data(&[i; 10])).unwrap();
    }
    // Two batches of 4 closed, each: manifest, 4 frames, manifest.
    let batches = drain(&mut outbox);
    let all = datagrams(&batches);
    assert_eq!(all.len(), 12);
    assert_eq!(outbox.stats().manifests, 2);
    // Two frames wait for their signature; finishing sends them signed.
    outbox.finish(NOW).unwrap();
    let mut all = all;
    all.extend(datagrams(&drain(&mut outbox)));
    assert_eq!(all.len(), 16);
    let delivered = verify(&all);
    let bodies: Vec<Vec<u8>> = delivered.iter().map(|f| f.plaintext.clone()).collect();
    let want: Vec<Vec<u8>> = (0..10u8)
        .map(|i| {
            let mut e = vec![0; 64];
            let n = Body::Data(&[i; 10]).encode_into(&mut e).unwrap();
            e.truncate(n);
            e
        })
        .collect();
    assert_eq!(bodies, want);
}

#[test]
fn a_signed_batch_closes_at_its_deadline_when_polled() {
    let mut outbox = signed(64, Duration::from_millis(10));
    outbox.set_batching(44, None);
    assert_eq!(outbox.signing_deadline_us(), None);
    outbox.queue_body(NOW, &Body::Data(b"a")).unwrap();
    outbox.queue_body(NOW + 3 * MS, &Body::Data(b"b")).unwrap();
    // The first frame's time sets the deadline.
    assert_eq!(outbox.signing_deadline_us(), Some(NOW + 10 * MS));
    outbox.poll_signing(NOW + 10 * MS - 1).unwrap();
    outbox.flush(NOW + 10 * MS - 1).unwrap();
    assert_eq!(outbox.ready(), 0, "held until the deadline");
    outbox.poll_signing(NOW + 10 * MS).unwrap();
    assert_eq!(outbox.signing_deadline_us(), None);
    let all = datagrams(&drain(&mut outbox));
    assert_eq!(all.len(), 4);
    let delivered = verify(&all);
    assert_eq!(delivered.len(), 2);
}

#[test]
fn sequence_exhaustion_starts_a_new_sender_id() {
    let mut outbox = plain(1472);
    outbox.set_batching(44, None);
    outbox.start_at_seq(u64::MAX - 1);
    let first = outbox.sender_id();
    for i in 0..4u8 {
        outbox.queue_body(NOW, &Body::Data(&[i])).unwrap();
    }
    outbox.flush(NOW).unwrap();
    assert_ne!(outbox.sender_id(), first);
    let batches = drain(&mut outbox);
    // The old session's batch closed before the new session's frames.
    assert_eq!(batches.len(), 2);
    let opened = open_all(&mut opener(), &datagrams(&batches));
    let seqs: Vec<(u64, bool)> = opened.iter().map(|o| (o.0, o.1 == first)).collect();
    assert_eq!(
        seqs,
        [
            (u64::MAX - 1, true),
            (u64::MAX, true),
            (0, false),
            (1, false)
        ]
    );
    assert_eq!(outbox.stats().sessions, 2);

    // Signed: two seqs are kept for the manifests; the old batch is signed.
    let mut outbox = signed(64, Duration::from_secs(3600));
    outbox.set_batching(44, None);
    outbox.start_at_seq(u64::MAX - 3);
    let first = outbox.sender_id();
    for i in 0..4u8 {
        outbox.queue_body(NOW, &Body::Data(&[i])).unwrap();
    }
    outbox.finish(NOW).unwrap();
    assert_ne!(outbox.sender_id(), first);
    let all = datagrams(&drain(&mut outbox));
    let delivered = verify(&all);
    let senders: Vec<bool> = delivered
        .iter()
        .map(|f| f.header.sender_id == first)
        .collect();
    assert_eq!(senders, [true, true, false, false]);
}

#[test]
fn a_key_reload_keeps_the_sender_id_unless_the_key_changed() {
    let mut outbox = plain(1472);
    outbox.set_batching(44, None);
    let first = outbox.sender_id();
    outbox.queue_body(NOW, &Body::Data(b"one")).unwrap();
    assert!(!outbox.set_keyring(Keyring::single(gkey(1)), NOW).unwrap());
    assert_eq!(outbox.sender_id(), first);
    assert_eq!(outbox.ready(), 0, "nothing closed for the same key");
    assert!(outbox.set_keyring(Keyring::single(gkey(2)), NOW).unwrap());
    assert_ne!(outbox.sender_id(), first);
    assert_eq!(outbox.key_id(), gkey(2).id());
    // What was queued under the old key went first.
    outbox.queue_body(NOW, &Body::Data(b"two")).unwrap();
    outbox.flush(NOW).unwrap();
    let all = datagrams(&drain(&mut outbox));
    assert_eq!(all.len(), 2);
    let mut old = opener();
    assert_eq!(open_all(&mut old, &all[..1])[0].2, b"one");
    let mut new = Opener::new(Keyring::single(gkey(2)), ch(), OpenerConfig::default());
    assert_eq!(open_all(&mut new, &all[1..])[0].2, b"two");
}

#[test]
fn too_small_to_sign_is_a_kind() {
    let signing = Signing {
        key: signer(),
        every: 4,
        interval: Duration::from_millis(10),
    };
    let err = Outbox::new(Keyring::single(gkey(1)), ch(), 100, Some(signing)).unwrap_err();
    assert!(matches!(
        err,
        OutboxError::TooSmallToSign {
            max_datagram: 100,
            ..
        }
    ));
}
