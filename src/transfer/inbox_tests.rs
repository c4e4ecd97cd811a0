//! Sans-IO tests of the receiver's [`Inbox`](super::Inbox): frames sealed
//! here go in with a driven clock, deliveries and rejects come out; no
//! socket, no sleep.

use std::time::Duration;

use super::*;
use crate::body::Body;
use crate::frame::{self, ChannelId, SenderId};
use crate::keys::{GroupKey, GroupSecret};
use crate::reassembly::ReassemblyConfig;
use crate::seal::{OpenerConfig, Sealer};
use crate::signed::{SignedSealer, SignerKey, TrustList, Trusted, VerifierConfig};

const NOW: u64 = 1_790_000_000_000_000;
const MS: u64 = 1_000;
const SEC: u64 = 1_000_000;
const SID: SenderId = SenderId([0x5e; 16]);

fn gkey(byte: u8) -> GroupKey {
    GroupKey::new(GroupSecret::from_bytes([byte; 32]), None)
}

fn ch() -> ChannelId {
    ChannelId::group("239.255.0.1:5000".parse().unwrap())
}

fn opener() -> Opener {
    Opener::new(Keyring::single(gkey(1)), ch(), OpenerConfig::default())
}

fn inbox() -> Inbox {
    Inbox::new(opener(), Reassembler::default(), FileReceiver::default())
}

/// `body` sealed by `sealer` at `now`.
fn seal(sealer: &mut Sealer, now: u64, body: &Body<'_>) -> Vec<u8> {
    sealer.set_max_datagram(1 << 20);
    let mut out = vec![0u8; body.encoded_len() + frame::OVERHEAD];
    let n = sealer.seal_body(now, body, &mut out).unwrap();
    out.truncate(n);
    out
}

/// A Data frame of group key 1 under [`SID`] at `seq`.
fn data(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut sealer = Sealer::with_sender_id(&gkey(1), &ch(), SID, seq);
    seal(&mut sealer, NOW, &Body::Data(payload))
}

fn rejected(pushed: Pushed<'_>) -> Rejected {
    match pushed {
        Pushed::Rejected(r) => r,
        other => panic!("not rejected: {other:?}"),
    }
}

fn message(pushed: Pushed<'_>) -> Vec<u8> {
    match pushed {
        Pushed::Delivered(Delivery::Message { payload, .. }) => payload.into_owned(),
        other => panic!("no message: {other:?}"),
    }
}

#[test]
fn sealed_frames_come_out_as_messages_and_chat_lines() {
    let mut rx = inbox();
    let mut d = data(0, b"hello");
    match rx.push(&mut d, None, Now::at(NOW)) {
        Pushed::Delivered(Delivery::Message {
            header,
            payload,
            signer,
        }) => {
            // One frame: the payload is the datagram's own bytes.
            assert!(matches!(payload, Cow::Borrowed(b"hello")));
            assert_eq!((header.sender_id, header.seq), (SID, 0));
            assert_eq!(signer, None);
        }
        other => panic!("{other:?}"),
    }
    let mut sealer = Sealer::with_sender_id(&gkey(1), &ch(), SID, 1);
    let mut c = seal(
        &mut sealer,
        NOW,
        &Body::Chat {
            nick: "alice",
            text: "hi",
        },
    );
    match rx.push(&mut c, None, Now::at(NOW)) {
        Pushed::Delivered(d @ Delivery::Chat { .. }) => {
            assert_eq!(d.header().seq, 1);
            assert_eq!(d.signer(), None);
            let Delivery::Chat { nick, text, .. } = d else {
                unreachable!()
            };
            assert_eq!((&*nick, &*text), ("alice", "hi"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.opener().stats().opened, 2);
    assert_eq!(rx.loss().totals().received, 2);
    assert!(rx.next_delivery().is_none());
}

#[test]
fn every_reject_is_counted_and_reported_with_its_header() {
    let mut rx = inbox();
    let now = Now::at(NOW);
    let good = data(5, b"x");

    // Tampered: one ciphertext bit.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let r = rejected(rx.push(&mut bad, None, now));
    assert_eq!(r.reason, SigReject::Core(Reject::AuthFailed));
    assert_eq!(r.header.map(|h| h.seq), Some(5));
    assert_eq!(r.len, good.len());

    // Unknown key: the header names the key ID.
    let mut other = {
        let mut s = Sealer::with_sender_id(&gkey(2), &ch(), SID, 0);
        seal(&mut s, NOW, &Body::Data(b"x"))
    };
    let r = rejected(rx.push(&mut other, None, now));
    assert_eq!(r.reason, SigReject::Core(Reject::UnknownKey));
    assert_eq!(r.header.map(|h| h.key_id), Some(gkey(2).id()));

    // Truncated: no header to show.
    let mut short = good[..10].to_vec();
    let r = rejected(rx.push(&mut short, None, now));
    assert_eq!(r.reason, SigReject::Core(Reject::Malformed));
    assert_eq!(r.header, None);

    // Oversize: larger than the opener's max_datagram.
    let mut big = vec![0u8; OpenerConfig::default().max_datagram + 1];
    let r = rejected(rx.push(&mut big, None, now));
    assert_eq!(r.reason, SigReject::Core(Reject::Oversize));

    // Stale: the same frame, 31 s later by the driven wall clock.
    let mut late = good.clone();
    let r = rejected(rx.push(&mut late, None, Now::at(NOW + 31 * SEC)));
    assert_eq!(r.reason, SigReject::Core(Reject::Stale));
    assert_eq!(r.header.map(|h| h.timestamp_us), Some(NOW));

    // Replayed: accepted once, refused the second time.
    let mut first = good.clone();
    assert_eq!(message(rx.push(&mut first, None, now)), b"x");
    let mut again = good.clone();
    let r = rejected(rx.push(&mut again, None, now));
    assert_eq!(r.reason, SigReject::Core(Reject::Replayed));

    let s = rx.opener().stats();
    assert_eq!(
        (
            s.auth_failed,
            s.unknown_key,
            s.malformed,
            s.oversize,
            s.stale,
            s.replayed,
            s.opened
        ),
        (1, 1, 1, 1, 1, 1, 1)
    );
    // The replay was a duplicate for the loss counters; nothing else that
    // failed arrived.
    let loss = rx.loss().totals();
    assert_eq!((loss.received, loss.duplicates), (1, 1));
}

fn fragment(seq: u64, msg_id: u32, index: u32, count: u32, total: u32, bytes: &[u8]) -> Vec<u8> {
    let mut sealer = Sealer::with_sender_id(&gkey(1), &ch(), SID, seq);
    seal(
        &mut sealer,
        NOW,
        &Body::Fragment {
            msg_id,
            index,
            count,
            total_len: total,
            bytes,
        },
    )
}

#[test]
fn fragments_in_any_order_reassemble_and_refused_ones_are_reported() {
    let whole: Vec<u8> = (0..30u8).collect();
    let pieces: Vec<&[u8]> = whole.chunks(10).collect();
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
        let mut rx = inbox();
        let mut out = Vec::new();
        for (seq, &i) in order.iter().enumerate() {
            let mut d = fragment(seq as u64, 7, i, 3, 30, pieces[i as usize]);
            match rx.push(&mut d, None, Now::at(NOW)) {
                Pushed::Taken => {}
                Pushed::Delivered(Delivery::Message {
                    payload, header, ..
                }) => {
                    assert_eq!(header.seq, 2, "only the last piece completes it");
                    out.push(payload.into_owned());
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(out, std::slice::from_ref(&whole), "{order:?}");
        assert_eq!(rx.reassembly_stats().completed, 1);
    }

    // A piece that contradicts the message's length: refused, counted and
    // reported; the message still completes from the right pieces.
    let mut rx = inbox();
    let mut d = fragment(0, 9, 0, 3, 30, pieces[0]);
    assert!(matches!(rx.push(&mut d, None, Now::at(NOW)), Pushed::Taken));
    let mut d = fragment(1, 9, 1, 3, 31, pieces[1]);
    assert!(matches!(rx.push(&mut d, None, Now::at(NOW)), Pushed::Taken));
    assert_eq!(
        rx.next_dropped(),
        Some(Dropped::Fragment(FragmentReject::Conflict))
    );
    assert_eq!(rx.next_dropped(), None);
    assert_eq!(rx.reassembly_stats().conflict, 1);
}

#[test]
fn a_partial_message_times_out_by_the_monotonic_clock() {
    let mut rx = Inbox::new(
        opener(),
        Reassembler::new(ReassemblyConfig {
            timeout: Duration::from_secs(10),
            ..ReassemblyConfig::default()
        }),
        FileReceiver::default(),
    );
    let mono = 5 * SEC;
    let mut d = fragment(0, 1, 0, 2, 4, b"ab");
    let now = Now {
        unix_us: NOW,
        mono_us: mono,
    };
    assert!(matches!(rx.push(&mut d, None, now), Pushed::Taken));
    // The wall clock jumping far ahead does not expire it...
    rx.expire(Now {
        unix_us: NOW + 3_600 * SEC,
        mono_us: mono + SEC,
    });
    assert_eq!(rx.reassembly_stats().timed_out, 0);
    // ...the monotonic clock passing its timeout does.
    rx.expire(Now {
        unix_us: NOW,
        mono_us: mono + 10 * SEC + 1,
    });
    assert_eq!(rx.reassembly_stats().timed_out, 1);
}

#[test]
fn loss_counts_come_from_seq_gaps() {
    let mut rx = inbox();
    for seq in [0, 1, 3, 4, 7] {
        let mut d = data(seq, b"x");
        message(rx.push(&mut d, None, Now::at(NOW)));
    }
    // Seq 2 comes late: reordered, not lost.
    let mut d = data(2, b"x");
    message(rx.push(&mut d, None, Now::at(NOW + MS)));
    rx.finish();
    let loss = rx.loss().totals();
    assert_eq!(
        (loss.received, loss.lost, loss.reordered, loss.duplicates),
        (6, 2, 1, 0)
    );
    assert_eq!(rx.loss().sender(gkey(1).id(), SID).map(|c| c.lost), Some(2));
}

fn signer(byte: u8) -> SignerKey {
    SignerKey::from_seed(&[byte; 32])
}

/// A signed session: group key 1, signer 7, sender [`SID`] from seq 10.
fn session() -> SignedSealer {
    SignedSealer::new(
        Sealer::with_sender_id(&gkey(1), &ch(), SID, 10),
        Arc::new(signer(7)),
        ch(),
        64,
        Duration::from_millis(10),
    )
}

fn trusting() -> Inbox {
    let mut rx = inbox();
    let trust = TrustList::new(vec![
        Trusted::new(&signer(7).public(), Some("ops".into())).unwrap(),
    ]);
    rx.set_verifier(Some(Verifier::new(
        trust,
        VerifierConfig {
            hold: Duration::from_secs(2),
            ..VerifierConfig::default()
        },
    )));
    rx
}

#[test]
fn with_a_verifier_only_frames_a_signed_manifest_lists_are_delivered() {
    let mut s = session();
    for i in 0..3u8 {
        s.seal_body(NOW, &Body::Data(&[b'a' + i])).unwrap();
    }
    let mut d = Vec::new();
    s.close_batch(NOW, &mut |x| {
        d.push(x.to_vec());
        Ok(())
    })
    .unwrap();
    // Manifest, frames 10..12, manifest again.
    assert_eq!(d.len(), 5);
    let mut rx = trusting();
    let now = Now::at(NOW);

    // A member's unsigned frame (its own session), and the signed frames before their
    // manifest: held, nothing delivered.
    let mut member = {
        let mut s = Sealer::with_sender_id(&gkey(1), &ch(), SenderId([0x11; 16]), 0);
        seal(&mut s, NOW, &Body::Data(b"unsigned"))
    };
    assert!(matches!(rx.push(&mut member, None, now), Pushed::Taken));
    for f in &d[1..4] {
        let mut f = f.clone();
        assert!(matches!(rx.push(&mut f, None, now), Pushed::Taken));
        assert!(rx.next_delivery().is_none());
    }
    assert_eq!(rx.verifier().map(Verifier::held), Some(4));

    // The manifest releases the three, in seq order, with the signer's
    // label.
    let mut m = d[0].clone();
    assert!(matches!(rx.push(&mut m, None, now), Pushed::Taken));
    let mut got = Vec::new();
    while let Some(delivery) = rx.next_delivery() {
        assert_eq!(delivery.signer(), Some("ops"));
        let Delivery::Message {
            header, payload, ..
        } = delivery
        else {
            panic!("not a message");
        };
        got.push((header.seq, payload.into_owned()));
    }
    assert_eq!(
        got,
        [
            (10, b"a".to_vec()),
            (11, b"b".to_vec()),
            (12, b"c".to_vec())
        ]
    );
    // The second copy is a duplicate, reported as a signature reject.
    let mut m = d[4].clone();
    let r = rejected(rx.push(&mut m, None, now));
    assert_eq!(r.reason, SigReject::Duplicate);

    // The member's frame is never delivered: its hold runs out.
    rx.expire(Now::at(NOW + 2 * SEC + 1));
    assert!(rx.next_delivery().is_none());
    let stats = rx.signed_stats().copied().unwrap_or_default();
    assert_eq!((stats.delivered, stats.sig_unsigned), (3, 1));
    assert_eq!(rx.manifests_ignored(), 0);
    // Every datagram that authenticated arrived, manifests included.
    assert_eq!(rx.loss().totals().received, 6);
}

#[test]
fn without_a_verifier_manifests_are_ignored_and_counted() {
    let mut s = session();
    s.seal_body(NOW, &Body::Data(b"a")).unwrap();
    let mut d = Vec::new();
    s.close_batch(NOW, &mut |x| {
        d.push(x.to_vec());
        Ok(())
    })
    .unwrap();
    let mut rx = inbox();
    let mut out = Vec::new();
    for f in &d {
        let mut f = f.clone();
        match rx.push(&mut f, None, Now::at(NOW)) {
            Pushed::Delivered(Delivery::Message {
                payload, signer, ..
            }) => {
                assert_eq!(signer, None);
                out.push(payload.into_owned());
            }
            Pushed::Taken => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(out, [b"a".to_vec()]);
    assert_eq!(rx.manifests_ignored(), 2);
}

/// Remembers what it was handed.
#[derive(Default)]
struct Sink(Vec<(u32, u64, Option<SocketAddr>)>);

impl StreamSink for Sink {
    fn symbol(
        &mut self,
        now_mono_us: u64,
        _header: &Header,
        symbol: &StreamSymbol<'_>,
        _signer: Option<&Arc<str>>,
        from: Option<SocketAddr>,
    ) {
        self.0.push((symbol.file_id, now_mono_us, from));
    }
}

#[test]
fn stream_symbols_go_to_the_callers_sink_or_are_counted() {
    let symbol = StreamSymbol {
        file_id: 3,
        file_len: 4,
        symbol_size: 4,
        block_symbols: 1,
        block: 0,
        esi: 0,
        sha256: [0; 32],
        path: "f",
        symbol: b"abcd",
    };
    let from: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let mut rx = inbox();
    let mut sink = Sink::default();
    let now = Now {
        unix_us: NOW,
        mono_us: 42,
    };
    let mut d = {
        let mut s = Sealer::with_sender_id(&gkey(1), &ch(), SID, 0);
        seal(&mut s, NOW, &Body::StreamSymbol(symbol))
    };
    let mut copy = d.clone();
    assert!(matches!(
        rx.push_with(&mut d, Some(from), now, &mut sink),
        Pushed::Taken
    ));
    assert_eq!(sink.0, [(3, 42, Some(from))]);
    assert_eq!(rx.stream_symbols_ignored(), 0);
    // Without a sink, a fresh one (not a replay) is dropped and counted.
    let mut rx = inbox();
    assert!(matches!(rx.push(&mut copy, None, now), Pushed::Taken));
    assert_eq!(rx.stream_symbols_ignored(), 1);
}

#[test]
fn a_file_comes_out_whole_from_its_symbols_in_any_order() {
    let data: Vec<u8> = (0..5_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let encoder = crate::files::FileEncoder::new(4, "notes.txt", &data, 1_000, 1 << 20).unwrap();
    let mut sealer = Sealer::with_sender_id(&gkey(1), &ch(), SID, 0);
    let mut datagrams: Vec<Vec<u8>> = encoder
        .pass(0, 0)
        .map(|symbol| seal(&mut sealer, NOW, &encoder.body(&symbol)))
        .collect();
    assert!(datagrams.len() > 2);
    datagrams.reverse();
    let mut rx = inbox();
    let mut files = Vec::new();
    for mut d in datagrams {
        match rx.push(&mut d, None, Now::at(NOW)) {
            Pushed::Taken => {}
            Pushed::Delivered(Delivery::File { file, header, .. }) => {
                assert_eq!(header.sender_id, SID);
                files.push(file);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0].name.as_str(), &files[0].data),
        ("notes.txt", &data)
    );
    assert_eq!(rx.file_stats().completed, 1);
}

#[test]
fn a_new_keyring_opens_what_the_old_one_could_not() {
    let mut rx = inbox();
    let mut s = Sealer::with_sender_id(&gkey(2), &ch(), SID, 0);
    let d = seal(&mut s, NOW, &Body::Data(b"rekeyed"));
    let r = rejected(rx.push(&mut d.clone(), None, Now::at(NOW)));
    assert_eq!(r.reason, SigReject::Core(Reject::UnknownKey));
    let ring = format!("{}\n{}\n", *gkey(1).to_line(), *gkey(2).to_line());
    rx.set_keyring(Keyring::parse(&ring).unwrap());
    assert_eq!(
        message(rx.push(&mut d.clone(), None, Now::at(NOW))),
        b"rekeyed"
    );
}

#[test]
fn a_verdict_from_another_thread_stands_in_for_the_aead() {
    let mut rx = inbox();
    let keys = rx.opener().channel_keys();
    let mut worker = crate::seal::OpenWorker::new(rx.opener().config());
    let mut d = data(0, b"checked");
    let verdict = worker.check(&keys, &mut d);
    assert_eq!(
        message(rx.push_checked(&mut d, None, Now::at(NOW), verdict, None)),
        b"checked"
    );
    assert_eq!(rx.opener().stats().opened, 1);
    // Not with a verifier: the signature layer opens frames itself.
    let mut rx = trusting();
    let keys = rx.opener().channel_keys();
    let mut d = data(1, b"checked");
    let verdict = worker.check(&keys, &mut d);
    assert!(matches!(
        rx.push_checked(&mut d, None, Now::at(NOW), verdict, None),
        Pushed::VerdictRefused
    ));
    assert_eq!(rx.opener().stats().opened, 0);
}
