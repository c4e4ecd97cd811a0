//! Unit tests of the signed-sender core (PROTOCOL.md Part 3): the sender's
//! batches, the trusting receiver's verdicts and counters, its memory
//! bounds, and the signer and trust files.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::frame;
use crate::keys::{GroupKey, GroupSecret, Keyring};
use crate::seal::OpenerConfig;

const NOW: u64 = 1_790_000_000_000_000;
const MS: u64 = 1_000;
const SEC: u64 = 1_000_000;
/// The signed sender's session.
const SID: SenderId = SenderId([0x5e; 16]);
/// The default hold, in microseconds.
const HOLD: u64 = 2 * SEC;

fn gkey(byte: u8) -> GroupKey {
    GroupKey::new(GroupSecret::from_bytes([byte; 32]), None)
}

fn ch() -> ChannelId {
    ChannelId::group("239.255.0.1:5000".parse().unwrap())
}

fn other_ch() -> ChannelId {
    ChannelId::named("elsewhere").unwrap()
}

fn signer(byte: u8) -> SignerKey {
    SignerKey::from_seed(&[byte; 32])
}

fn trusting(keys: &[&SignerKey]) -> TrustList {
    TrustList::new(
        keys.iter()
            .map(|k| Trusted::new(&k.public(), None).unwrap())
            .collect(),
    )
}

fn keyring(keys: &[&GroupKey]) -> Keyring {
    let text: String = keys.iter().map(|k| format!("{}\n", *k.to_line())).collect();
    Keyring::parse(&text).unwrap()
}

fn config(hold: Duration, max_held: usize, max_held_bytes: usize) -> VerifierConfig {
    VerifierConfig {
        hold,
        max_held,
        max_held_bytes,
        ..VerifierConfig::default()
    }
}

/// A signed session: group key 1, signer 7, sender [`SID`] from `first_seq`.
fn session(first_seq: u64, every: usize) -> SignedSealer {
    SignedSealer::new(
        Sealer::with_sender_id(&gkey(1), &ch(), SID, first_seq),
        Arc::new(signer(7)),
        ch(),
        every,
        Duration::from_millis(10),
    )
}

fn payload(seq: u64) -> Vec<u8> {
    format!("frame {seq:03}").into_bytes()
}

/// Seals `n` Data frames (payload [`payload`] of their seq) and closes the
/// batch: the datagrams it emitted, in order.
fn batch(s: &mut SignedSealer, now: u64, n: usize) -> Vec<Vec<u8>> {
    for _ in 0..n {
        let seq = s.sealer().next_seq().unwrap();
        s.seal_body(now, &Body::Data(&payload(seq))).unwrap();
    }
    close(s, now)
}

fn close(s: &mut SignedSealer, now: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    s.close_batch(now, &mut |d| {
        out.push(d.to_vec());
        Ok(())
    })
    .unwrap();
    out
}

fn seq_of(datagram: &[u8]) -> u64 {
    frame::peek_header(datagram).unwrap().seq
}

fn seqs(datagrams: &[Vec<u8>]) -> Vec<u64> {
    datagrams.iter().map(|d| seq_of(d)).collect()
}

/// A frame sealed by a member: the group key, no signing key, any sender ID
/// and seq.
fn member_with(
    key: &GroupKey,
    channel: &ChannelId,
    sender: SenderId,
    seq: u64,
    plain: &[u8],
) -> Vec<u8> {
    let mut sealer = Sealer::with_sender_id(key, channel, sender, seq);
    sealer.set_max_datagram(1 << 20);
    let mut out = vec![0u8; plain.len() + frame::OVERHEAD];
    let n = sealer.seal(NOW, plain, &mut out).unwrap();
    out.truncate(n);
    out
}

fn encode(body: &Body<'_>) -> Vec<u8> {
    let mut out = vec![0u8; body.encoded_len()];
    body.encode_into(&mut out).unwrap();
    out
}

/// A member's Data frame under `sender` at `seq`.
fn member(sender: SenderId, seq: u64) -> Vec<u8> {
    member_with(
        &gkey(1),
        &ch(),
        sender,
        seq,
        &encode(&Body::Data(b"not from the signer")),
    )
}

/// The plaintext of a datagram of group key 1 on [`ch`].
fn plaintext(datagram: &[u8]) -> Vec<u8> {
    let mut o = Opener::new(Keyring::single(gkey(1)), ch(), OpenerConfig::default());
    let mut copy = datagram.to_vec();
    o.open(NOW, &mut copy).unwrap().plaintext.to_vec()
}

/// A manifest made by hand: `key` signs the signed message for `sealer`'s
/// key, sender ID and [`ch`]; `tamper` may then change the signature;
/// the body claims `claimed` and carries `hashes`.
fn manifest_with(
    sealer: &mut Sealer,
    key: &SignerKey,
    claimed: SignerId,
    first_seq: u64,
    signed_hashes: &[u8],
    sent_hashes: &[u8],
    tamper: impl FnOnce(&mut [u8; 64]),
) -> Vec<u8> {
    let mut message = Vec::new();
    signed_message(
        &mut message,
        &ch(),
        sealer.key_id(),
        &sealer.sender_id(),
        first_seq,
        signed_hashes,
    );
    let mut signature = key.sign(&message);
    tamper(&mut signature);
    let body = Body::Manifest(Manifest {
        signer_id: claimed.0,
        first_seq,
        hashes: sent_hashes,
        signature_r: signature[..32].try_into().unwrap(),
        signature_s: signature[32..].try_into().unwrap(),
    });
    sealer.set_max_datagram(1 << 20);
    let mut out = vec![0u8; body.encoded_len() + frame::OVERHEAD];
    let n = sealer.seal_body(NOW, &body, &mut out).unwrap();
    out.truncate(n);
    out
}

/// A correctly signed manifest by signer 7 for `sealer`'s session on [`ch`].
fn manifest(sealer: &mut Sealer, first_seq: u64, hashes: &[u8]) -> Vec<u8> {
    let key = signer(7);
    manifest_with(sealer, &key, key.id(), first_seq, hashes, hashes, |_| {})
}

fn hash_pattern(count: usize) -> Vec<u8> {
    (0..count * HASH_LEN).map(|i| (i * 7 + 3) as u8).collect()
}

/// A trusting receiver: an opener for group key 1 on [`ch`] and a verifier.
struct Rx {
    o: Opener,
    v: Verifier,
    frames: Vec<SignedFrame>,
}

impl Rx {
    fn new(trust: TrustList) -> Self {
        Self::with(trust, VerifierConfig::default())
    }

    fn with(trust: TrustList, config: VerifierConfig) -> Self {
        Self::on(
            keyring(&[&gkey(1)]),
            ch(),
            OpenerConfig::default(),
            trust,
            config,
        )
    }

    fn on(
        keys: Keyring,
        channel: ChannelId,
        core: OpenerConfig,
        trust: TrustList,
        config: VerifierConfig,
    ) -> Self {
        Self {
            o: Opener::new(keys, channel, core),
            v: Verifier::new(trust, config),
            frames: Vec::new(),
        }
    }

    /// Receives one datagram: the verdict and the seqs it delivered.
    fn recv(&mut self, now: u64, datagram: &[u8]) -> (Result<Received, SigReject>, Vec<u64>) {
        let mut out = Vec::new();
        let verdict = self.v.receive(&mut self.o, now, datagram, &mut out);
        let delivered = out.iter().map(|f| f.header.seq).collect();
        self.frames.extend(out);
        (verdict, delivered)
    }

    fn held(&mut self, now: u64, datagram: &[u8]) {
        assert_eq!(self.recv(now, datagram), (Ok(Received::Held), vec![]));
    }

    fn delivers(&mut self, now: u64, datagram: &[u8]) {
        let seq = seq_of(datagram);
        assert_eq!(
            self.recv(now, datagram),
            (Ok(Received::Delivered), vec![seq]),
            "seq {seq}"
        );
    }

    fn rejects(&mut self, now: u64, datagram: &[u8], reason: SigReject) {
        assert_eq!(self.recv(now, datagram), (Err(reason), vec![]));
    }

    /// The verifier's non-zero counters, by name.
    fn counts(&self) -> Vec<(&'static str, u64)> {
        self.v
            .stats()
            .counters()
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .collect()
    }

    fn knows_signer_session(&self) -> bool {
        self.o.knows_sender(gkey(1).id(), SID)
    }
}

// ---------------------------------------------------------------------
// The sender's batch and the receiver's whole feed.

#[test]
fn a_batch_is_manifest_frames_manifest_and_verifies_in_order() {
    let mut s = session(10, 64);
    let d = batch(&mut s, NOW, 5);
    // Frames 10..14, the manifest at 15 before them and at 16 after them.
    assert_eq!(seqs(&d), [15, 10, 11, 12, 13, 14, 16]);
    assert_eq!(s.manifests(), 1);
    assert_eq!(s.batched(), 0);
    let hashes: Vec<u8> = d[1..6].iter().flat_map(|f| frame_hash(f)).collect();
    let key = signer(7);
    // Both copies carry one body: signer 7, first_seq 10, the frames'
    // hashes, and a signature over the signed message.
    for copy in [&d[0], &d[6]] {
        let plain = plaintext(copy);
        let Ok(Body::Manifest(m)) = Body::decode(&plain) else {
            panic!("not a manifest");
        };
        assert_eq!(m.signer_id, key.id().0);
        assert_eq!(m.first_seq, 10);
        assert_eq!(m.hashes, &hashes[..]);
        let mut message = Vec::new();
        signed_message(&mut message, &ch(), gkey(1).id(), &SID, 10, &hashes);
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&m.signature_r);
        signature[32..].copy_from_slice(&m.signature_s);
        VerifyingKey::from_bytes(&key.public())
            .unwrap()
            .verify_strict(&message, &Signature::from_bytes(&signature))
            .unwrap();
    }
    assert_eq!(plaintext(&d[0]), plaintext(&d[6]));
    // The next batch starts after the two manifests.
    let next = batch(&mut s, NOW + MS, 2);
    assert_eq!(seqs(&next), [19, 17, 18, 20]);

    // Trusted as the second of two keys: frames say signer 1.
    let mut rx = Rx::new(trusting(&[&signer(8), &key]));
    assert_eq!(rx.recv(NOW, &d[0]), (Ok(Received::Verified), vec![]));
    for f in &d[1..6] {
        rx.delivers(NOW, f);
    }
    rx.rejects(NOW, &d[6], SigReject::Duplicate);
    assert_eq!(
        rx.recv(NOW + MS, &next[0]),
        (Ok(Received::Verified), vec![])
    );
    rx.delivers(NOW + MS, &next[1]);
    rx.delivers(NOW + MS, &next[2]);
    rx.rejects(NOW + MS, &next[3], SigReject::Duplicate);

    let got: Vec<u64> = rx.frames.iter().map(|f| f.header.seq).collect();
    assert_eq!(got, [10, 11, 12, 13, 14, 17, 18]);
    for f in &rx.frames {
        assert_eq!(f.signer, 1);
        assert_eq!(f.header.sender_id, SID);
        assert_eq!(f.header.key_id, gkey(1).id());
        assert_eq!(
            Body::decode(&f.plaintext),
            Ok(Body::Data(&payload(f.header.seq)))
        );
    }
    assert_eq!(
        rx.counts(),
        [("manifests_verified", 2), ("manifest_duplicate", 2)]
    );
    assert_eq!(rx.v.stats().delivered, 7);
    assert_eq!(rx.v.stats().held, 0);
    // Only frames are committed, never a manifest's own seq.
    assert_eq!(rx.o.stats().opened, 7);
    assert_eq!(rx.o.stats().total_rejected(), 0);
    assert_eq!(rx.o.sender_count(), 1);
    assert_eq!((rx.v.held(), rx.v.held_bytes()), (0, 0));
}

#[test]
fn a_batch_closes_when_full_or_due() {
    assert_eq!(hashes_that_fit(frame::MAX_DATAGRAM_V4), 83);
    // More than fits one manifest is clamped; zero means one.
    assert_eq!(session(0, 1000).every(), 83);
    assert_eq!(session(0, 0).every(), 1);
    let mut s = session(0, 3);
    assert_eq!(s.every(), 3);
    assert_eq!(s.deadline_us(), None);
    assert!(!s.is_due(NOW));
    // Nothing to close: nothing emitted, no seq used.
    assert!(close(&mut s, NOW).is_empty());
    assert_eq!(s.sealer().next_seq(), Some(0));
    s.seal_body(NOW, &Body::Data(b"a")).unwrap();
    assert_eq!(s.deadline_us(), Some(NOW + 10 * MS));
    assert!(!s.is_due(NOW + 10 * MS - 1));
    assert!(s.is_due(NOW + 10 * MS));
    s.seal_body(NOW + MS, &Body::Data(b"b")).unwrap();
    assert!(!s.is_due(NOW + MS));
    s.seal_body(NOW + 2 * MS, &Body::Data(b"c")).unwrap();
    assert!(s.is_due(NOW + 2 * MS));
    assert_eq!(seqs(&close(&mut s, NOW + 2 * MS)), [3, 0, 1, 2, 4]);
    assert_eq!(s.deadline_us(), None);
    // The largest manifest still fits the datagram.
    let mut full = session(u64::MAX / 2, 83);
    let d = batch(&mut full, NOW, 83);
    assert_eq!(d.len(), 85);
    assert!(d.iter().all(|f| f.len() <= frame::MAX_DATAGRAM_V4));
    let mut rx = Rx::new(trusting(&[&signer(7)]));
    assert_eq!(rx.recv(NOW, &d[0]), (Ok(Received::Verified), vec![]));
    for f in &d[1..84] {
        rx.delivers(NOW, f);
    }
}

// ---------------------------------------------------------------------
// Loss and reordering.

#[test]
fn frames_wait_for_a_lost_first_copy_and_go_in_seq_order() {
    let d = batch(&mut session(0, 64), NOW, 6);
    let mut rx = Rx::new(trusting(&[&signer(7)]));
    // The first copy is lost; the frames arrive out of order, one twice.
    for i in [3, 1, 6, 2, 5, 4, 2] {
        rx.held(NOW + MS, &d[i]);
    }
    assert_eq!(rx.v.held(), 7);
    assert!(rx.v.held_bytes() >= d[1..7].iter().map(Vec::len).sum::<usize>());
    assert!(!rx.knows_signer_session());
    assert_eq!(rx.o.sender_count(), 0);
    // The second copy releases them, in seq order; the copy of seq 1 is a
    // replay once the first is committed.
    assert_eq!(
        rx.recv(NOW + 2 * MS, &d[7]),
        (Ok(Received::Verified), vec![0, 1, 2, 3, 4, 5])
    );
    assert_eq!((rx.v.held(), rx.v.held_bytes()), (0, 0));
    assert_eq!(rx.o.stats().replayed, 1);
    assert!(rx.knows_signer_session());
    // The first copy, late: a duplicate.
    rx.rejects(NOW + 3 * MS, &d[0], SigReject::Duplicate);
    assert_eq!(
        rx.counts(),
        [("manifests_verified", 1), ("manifest_duplicate", 1)]
    );
    assert_eq!(rx.v.stats().delivered, 6);
}

#[test]
fn a_reordered_feed_is_delivered_whole() {
    let mut s = session(0, 64);
    let a = batch(&mut s, NOW, 3); // frames 0..2, manifests 3 and 4
    let b = batch(&mut s, NOW, 3); // frames 5..7, manifests 8 and 9
    let mut rx = Rx::new(trusting(&[&signer(7)]));
    // Batch b's frames first, then a's manifest, a's frames, b's manifest.
    for f in &b[1..4] {
        rx.held(NOW, f);
    }
    assert_eq!(rx.recv(NOW, &a[4]), (Ok(Received::Verified), vec![]));
    rx.delivers(NOW, &a[2]);
    rx.delivers(NOW, &a[1]);
    assert_eq!(rx.v.held(), 3);
    assert_eq!(rx.recv(NOW, &b[0]), (Ok(Received::Verified), vec![5, 6, 7]));
    rx.delivers(NOW, &a[3]);
    rx.rejects(NOW, &b[4], SigReject::Duplicate);
    rx.rejects(NOW, &a[0], SigReject::Duplicate);
    assert_eq!(rx.v.held(), 0);
    assert_eq!(rx.v.stats().delivered, 6);
}

// ---------------------------------------------------------------------
// Members: the group key, no signing key.

#[test]
fn member_frames_before_the_manifest_are_held_and_never_delivered() {
    let d = batch(&mut session(100, 64), NOW, 5); // frames 100..104, manifests 105, 106
    let mut rx = Rx::new(trusting(&[&signer(7)]));
    let ahead = member(SID, 100 + 5000);
    let behind = member(SID, 40);
    let same = member(SID, 102);
    for f in [&ahead, &behind, &same] {
        rx.held(NOW, f);
        // Nothing is committed: no table slot, no window.
        assert!(!rx.knows_signer_session());
        assert_eq!(rx.o.sender_count(), 0);
    }
    assert_eq!(rx.o.stats().opened, 0);
    // The genuine manifest releases the same-seq forgery as forged.
    assert_eq!(rx.recv(NOW, &d[0]), (Ok(Received::Verified), vec![]));
    assert_eq!(rx.counts(), [("manifests_verified", 1), ("sig_forged", 1)]);
    // The window did not move to 5100: the genuine feed goes through whole,
    // seq 102 included.
    for f in &d[1..6] {
        rx.delivers(NOW, f);
    }
    rx.rejects(NOW, &d[6], SigReject::Duplicate);
    // The other two are still held; their time runs out.
    assert_eq!(rx.v.held(), 2);
    rx.v.expire(NOW + HOLD);
    assert_eq!(rx.v.held(), 2);
    rx.v.expire(NOW + HOLD + 1);
    assert_eq!((rx.v.held(), rx.v.held_bytes()), (0, 0));
    assert_eq!(
        rx.counts(),
        [
            ("manifests_verified", 1),
            ("manifest_duplicate", 1),
            ("sig_forged", 1),
            ("sig_expired", 2),
        ]
    );
    assert!(
        rx.frames
            .iter()
            .all(|f| f.plaintext == encode(&Body::Data(&payload(f.header.seq))))
    );
    assert_eq!(rx.v.stats().delivered, 5);
    assert_eq!(rx.o.stats().opened, 5);
}

#[test]
fn member_frames_after_the_manifest_are_never_delivered() {
    let d = batch(&mut session(100, 64), NOW, 5);
    let mut rx = Rx::new(trusting(&[&signer(7)]));
    assert_eq!(rx.recv(NOW, &d[0]), (Ok(Received::Verified), vec![]));
    rx.delivers(NOW, &d[1]); // 100
    rx.delivers(NOW, &d[2]); // 101
    // The seq of a delivered frame: a replay, refused before the AEAD.
    rx.rejects(NOW, &member(SID, 101), SigReject::Core(Reject::Replayed));
    // A seq the manifest lists, not yet arrived: forged.
    rx.rejects(NOW, &member(SID, 103), SigReject::Forged);
    // Seqs it does not list (behind, the manifest's own, far ahead): held.
    rx.held(NOW, &member(SID, 40));
    rx.held(NOW, &member(SID, 105));
    rx.held(NOW, &member(SID, 100 + 5000));
    // Nothing moved the window: the rest of the feed, 102 included, and
    // the genuine 103 after its forgery.
    rx.delivers(NOW, &d[4]); // 103
    rx.delivers(NOW, &d[5]); // 104
    rx.delivers(NOW, &d[3]); // 102
    rx.rejects(NOW, &d[2], SigReject::Core(Reject::Replayed));
    rx.rejects(NOW, &d[6], SigReject::Duplicate);
    rx.v.expire(NOW + HOLD + 1);
    assert_eq!(
        rx.counts(),
        [
            ("manifests_verified", 1),
            ("manifest_duplicate", 1),
            ("sig_forged", 1),
            ("sig_expired", 3),
        ]
    );
    assert_eq!(rx.o.stats().replayed, 2);
    let got: Vec<u64> = rx.frames.iter().map(|f| f.header.seq).collect();
    assert_eq!(got, [100, 101, 103, 104, 102]);
    assert_eq!(rx.v.held(), 0);
}

#[test]
fn member_manifests_create_no_record() {
    let mut rx = Rx::new(trusting(&[&signer(7)]));
    let mut sealer = Sealer::with_sender_id(&gkey(1), &ch(), SID, 0);
    let fake = hash_pattern(2);
    // Signed by a key the receiver does not trust.
    let own = signer(9);
    let m = manifest_with(&mut sealer, &own, own.id(), 0, &fake, &fake, |_| {});
    rx.rejects(NOW, &m, SigReject::Untrusted);
    // Claiming the trusted signer, signed by another key.
    let m = manifest_with(&mut sealer, &own, signer(7).id(), 0, &fake, &fake, |_| {});
    rx.rejects(NOW, &m, SigReject::BadSignature);
    rx.held(NOW, &member(SID, 0));
    assert!(rx.v.records.is_empty());
    assert!(!rx.knows_signer_session());
    // With no verified manifest, the held frame is unsigned, not expired.
    rx.v.expire(NOW + HOLD + 1);
    assert_eq!(
        rx.counts(),
        [("sig_untrusted", 1), ("sig_bad", 1), ("sig_unsigned", 1)]
    );
    assert_eq!(rx.o.stats().opened, 0);
    assert_eq!(rx.o.sender_count(), 0);
}

#[test]
fn a_resealed_manifest_does_not_verify() {
    let d = batch(&mut session(0, 64), NOW, 3); // manifest at 3
    let body = plaintext(&d[0]);
    let frames: Vec<Vec<u8>> = d[1..4].iter().map(|f| plaintext(f)).collect();
    let other_sender = SenderId([0x77; 16]);
    let (k1, k2) = (gkey(1), gkey(2));
    let mut rx = Rx::on(
        keyring(&[&k1, &k2]),
        ch(),
        OpenerConfig::default(),
        trusting(&[&signer(7)]),
        VerifierConfig::default(),
    );
    // Under another sender ID, and under another group key of the keyring,
    // with the frames re-sealed the same way: the manifest is sig_bad and
    // the frames wait until they expire.
    for (key, sender) in [(&k1, other_sender), (&k2, SID)] {
        rx.rejects(
            NOW,
            &member_with(key, &ch(), sender, 3, &body),
            SigReject::BadSignature,
        );
        for (i, plain) in frames.iter().enumerate() {
            rx.held(NOW, &member_with(key, &ch(), sender, i as u64, plain));
        }
    }
    // Sealed for another channel: the AEAD refuses it here...
    rx.rejects(
        NOW,
        &member_with(&k1, &other_ch(), SID, 3, &body),
        SigReject::Core(Reject::AuthFailed),
    );
    // ... and a receiver of that channel refuses its signature.
    let mut there = Rx::on(
        keyring(&[&k1]),
        other_ch(),
        OpenerConfig::default(),
        trusting(&[&signer(7)]),
        VerifierConfig::default(),
    );
    there.rejects(
        NOW,
        &member_with(&k1, &other_ch(), SID, 3, &body),
        SigReject::BadSignature,
    );
    there.held(NOW, &member_with(&k1, &other_ch(), SID, 0, &frames[0]));
    assert!(there.v.records.is_empty());
    assert_eq!(there.counts(), [("sig_bad", 1)]);

    assert!(rx.v.records.is_empty());
    assert_eq!(rx.o.sender_count(), 0);
    // The genuine feed still goes through.
    assert_eq!(rx.recv(NOW, &d[0]), (Ok(Received::Verified), vec![]));
    for f in &d[1..4] {
        rx.delivers(NOW, f);
    }
    rx.v.expire(NOW + HOLD + 1);
    assert_eq!(
        rx.counts(),
        [
            ("manifests_verified", 1),
            ("sig_bad", 2),
            ("sig_unsigned", 6)
        ]
    );
    assert_eq!(rx.v.stats().delivered, 3);
    assert_eq!(rx.o.sender_count(), 1);
    assert!(
        rx.frames
            .iter()
            .all(|f| f.header.sender_id == SID && f.header.key_id == k1.id())
    );
}

// ---------------------------------------------------------------------
// What a manifest must be.

/// Adds the group order L to a signature's S (little-endian): the same
/// signature in a non-canonical encoding.
fn add_l(signature: &mut [u8; 64]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (s, l) in signature[32..].iter_mut().zip(L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
}

#[test]
fn untrusted_bad_and_invalid_manifests_are_refused() {
    let key = signer(7);
    let mut rx = Rx::new(trusting(&[&key]));
    let mut sealer = Sealer::with_sender_id(&gkey(1), &ch(), SID, 1000);
    let two = hash_pattern(2);
    let mut m = |first_seq, signed: &[u8], sent: &[u8], tamper: &dyn Fn(&mut [u8; 64])| {
        manifest_with(&mut sealer, &key, key.id(), first_seq, signed, sent, tamper)
    };
    let flipped_hash = {
        let mut h = two.clone();
        h[17] ^= 0x01;
        h
    };
    let cases: Vec<(Vec<u8>, SigReject)> = vec![
        // A bit of R, a bit of S, a bit of a hash after signing, S + L.
        (m(0, &two, &two, &|s| s[0] ^= 0x01), SigReject::BadSignature),
        (
            m(0, &two, &two, &|s| s[40] ^= 0x01),
            SigReject::BadSignature,
        ),
        (m(0, &two, &flipped_hash, &|_| {}), SigReject::BadSignature),
        (m(0, &two, &two, &add_l), SigReject::BadSignature),
        // Hash lists that are not whole hashes, or none; each correctly
        // signed, so only the check can refuse them.
        (m(0, &two[..15], &two[..15], &|_| {}), SigReject::Invalid),
        (m(0, &two[..17], &two[..17], &|_| {}), SigReject::Invalid),
        (m(0, &two[..31], &two[..31], &|_| {}), SigReject::Invalid),
        (m(0, &[], &[], &|_| {}), SigReject::Invalid),
        // first_seq + count - 1 beyond 2^64 - 1.
        (m(u64::MAX, &two, &two, &|_| {}), SigReject::Invalid),
        (
            m(u64::MAX - 5, &hash_pattern(7), &hash_pattern(7), &|_| {}),
            SigReject::Invalid,
        ),
    ];
    for (i, (frame, reason)) in cases.iter().enumerate() {
        assert_eq!(rx.recv(NOW, frame), (Err(*reason), vec![]), "case {i}");
    }
    assert!(rx.v.records.is_empty());
    // An untrusted signer is refused before anything else is looked at.
    let stranger = signer(9);
    let m = manifest_with(
        &mut sealer,
        &stranger,
        stranger.id(),
        u64::MAX,
        &[],
        &[],
        |_| {},
    );
    rx.rejects(NOW, &m, SigReject::Untrusted);
    assert_eq!(
        rx.counts(),
        [("sig_untrusted", 1), ("sig_invalid", 6), ("sig_bad", 4)]
    );
    // The edges that are valid: the last seq itself, reached exactly.
    assert_eq!(
        rx.recv(NOW, &manifest(&mut sealer, u64::MAX, &hash_pattern(1))),
        (Ok(Received::Verified), vec![])
    );
    assert_eq!(
        rx.recv(NOW, &manifest(&mut sealer, u64::MAX - 1, &hash_pattern(2))),
        (Ok(Received::Verified), vec![])
    );
    assert_eq!(rx.v.stats().manifests_verified, 2);
    // No manifest, verified or not, commits its own seq.
    assert_eq!(rx.o.sender_count(), 0);
    assert_eq!(rx.o.stats().opened, 0);
}

#[test]
fn a_manifest_lists_at_most_4096_hashes() {
    let big = OpenerConfig {
        max_datagram: 1 << 20,
        ..OpenerConfig::default()
    };
    let mut rx = Rx::on(
        keyring(&[&gkey(1)]),
        ch(),
        big,
        trusting(&[&signer(7)]),
        VerifierConfig::default(),
    );
    let mut sealer = Sealer::with_sender_id(&gkey(1), &ch(), SID, 10_000);
    rx.rejects(
        NOW,
        &manifest(&mut sealer, 0, &hash_pattern(MAX_MANIFEST_HASHES + 1)),
        SigReject::Invalid,
    );
    assert_eq!(
        rx.recv(
            NOW,
            &manifest(&mut sealer, 0, &hash_pattern(MAX_MANIFEST_HASHES))
        ),
        (Ok(Received::Verified), vec![])
    );
    assert_eq!(rx.counts(), [("manifests_verified", 1), ("sig_invalid", 1)]);
}

#[test]
fn a_truncated_or_unknown_body_is_counted_without_a_commit() {
    let mut rx = Rx::new(trusting(&[&signer(7)]));
    let d = batch(&mut session(0, 64), NOW, 2);
    let mut body = plaintext(&d[0]);
    body.pop();
    let truncated = member_with(&gkey(1), &ch(), SID, 50, &body);
    rx.rejects(NOW, &truncated, SigReject::Core(Reject::BadBody));
    let unknown = member_with(&gkey(1), &ch(), SID, 51, &[0x7f, 0x00]);
    rx.rejects(NOW, &unknown, SigReject::Core(Reject::UnknownBody));
    assert_eq!((rx.o.stats().bad_body, rx.o.stats().unknown_body), (1, 1));
    assert_eq!(rx.o.sender_count(), 0);
    assert!(rx.counts().is_empty());
    // Their seqs were not used: the same seqs open later.
    assert_eq!(
        rx.recv(
            NOW,
            &member_with(&gkey(1), &ch(), SID, 50, &plaintext(&d[0]))
        ),
        (Ok(Received::Verified), vec![])
    );
}

#[test]
fn a_duplicate_is_not_verified_twice() {
    let d = batch(&mut session(0, 64), NOW, 2); // manifests at 2 and 3
    let mut rx = Rx::new(trusting(&[&signer(7)]));
    assert_eq!(rx.recv(NOW, &d[0]), (Ok(Received::Verified), vec![]));
    // The very same datagram: its seq was never committed, so the core
    // passes it, and the record catches it.
    rx.rejects(NOW, &d[0], SigReject::Duplicate);
    rx.rejects(NOW, &d[3], SigReject::Duplicate);
    // Same fields, a broken signature: still a duplicate, so no signature
    // was checked.
    let body = plaintext(&d[0]);
    let mut broken = body.clone();
    let last = broken.len() - 1;
    broken[last] ^= 0x01;
    rx.rejects(
        NOW,
        &member_with(&gkey(1), &ch(), SID, 9, &broken),
        SigReject::Duplicate,
    );
    assert_eq!(
        rx.counts(),
        [("manifests_verified", 1), ("manifest_duplicate", 3)]
    );
    // Another first_seq over the same hashes is another manifest.
    let Ok(Body::Manifest(m)) = Body::decode(&body) else {
        panic!("not a manifest")
    };
    let mut sealer = Sealer::with_sender_id(&gkey(1), &ch(), SID, 10);
    assert_eq!(
        rx.recv(NOW, &manifest(&mut sealer, 1, m.hashes)),
        (Ok(Received::Verified), vec![])
    );
    assert_eq!(rx.v.stats().manifests_verified, 2);
}

// ---------------------------------------------------------------------
// Hold bounds and expiry.

/// The charge of a held frame of `len` bytes.
fn charge(len: usize) -> usize {
    len + HELD_OVERHEAD
}

#[test]
fn at_most_max_held_frames_wait_and_the_oldest_goes() {
    let d = batch(&mut session(0, 64), NOW, 5); // second copy at index 6
    let mut rx = Rx::with(
        trusting(&[&signer(7)]),
        config(DEFAULT_HOLD, 3, DEFAULT_MAX_HELD_BYTES),
    );
    for (i, f) in d[1..6].iter().enumerate() {
        rx.held(NOW + i as u64, f);
        assert!(rx.v.held() <= 3);
    }
    assert_eq!(rx.counts(), [("sig_hold_full", 2)]);
    assert_eq!(rx.recv(NOW, &d[6]), (Ok(Received::Verified), vec![2, 3, 4]));
}

#[test]
fn at_most_max_held_bytes_wait_and_the_oldest_goes() {
    let d = batch(&mut session(0, 64), NOW, 5);
    let len = d[1].len();
    assert!(d[1..6].iter().all(|f| f.len() == len));
    let mut rx = Rx::with(
        trusting(&[&signer(7)]),
        config(DEFAULT_HOLD, 100, 3 * charge(len)),
    );
    for f in &d[1..6] {
        rx.held(NOW, f);
        assert!(rx.v.held_bytes() <= 3 * charge(len));
    }
    assert_eq!(rx.v.held(), 3);
    assert_eq!(rx.v.held_bytes(), 3 * charge(len));
    assert_eq!(rx.counts(), [("sig_hold_full", 2)]);
    assert_eq!(rx.recv(NOW, &d[6]), (Ok(Received::Verified), vec![2, 3, 4]));
}

#[test]
fn a_frame_too_large_to_hold_does_not_flush_the_others() {
    let d = batch(&mut session(0, 64), NOW, 3);
    let len = d[1].len();
    let mut rx = Rx::with(
        trusting(&[&signer(7)]),
        config(DEFAULT_HOLD, 100, 3 * charge(len)),
    );
    for f in &d[1..4] {
        rx.held(NOW, f);
    }
    // A frame whose charge alone exceeds the budget cannot be held: it is
    // dropped, and only it.
    let large = member_with(
        &gkey(1),
        &ch(),
        SID,
        50,
        &encode(&Body::Data(&vec![0; 3 * charge(len)])),
    );
    assert!(charge(large.len()) > 3 * charge(len));
    rx.held(NOW, &large);
    assert_eq!(rx.v.held(), 3);
    assert_eq!(rx.counts(), [("sig_hold_full", 1)]);
    assert_eq!(rx.recv(NOW, &d[4]), (Ok(Received::Verified), vec![0, 1, 2]));
}

#[test]
fn held_frames_expire_unsigned_or_expired() {
    let mut s = session(0, 64);
    let a = batch(&mut s, NOW, 2); // frames 0, 1; manifests 2, 3
    let b = batch(&mut s, NOW, 2); // frames 4, 5; manifests 6, 7
    let hold = 100 * MS;
    let mut rx = Rx::with(
        trusting(&[&signer(7)]),
        config(Duration::from_micros(hold), 4096, 1 << 20),
    );
    // Before any manifest: the signed sender's frame and a stranger's.
    rx.held(NOW, &a[1]);
    rx.held(NOW, &member(SenderId([1; 16]), 0));
    // Exactly the hold time later both are still held...
    rx.v.expire(NOW + hold);
    assert_eq!(rx.v.held(), 2);
    // ... a microsecond later, neither: no manifest was verified for
    // either sender, so both are unsigned.
    rx.v.expire(NOW + hold + 1);
    assert_eq!((rx.v.held(), rx.v.held_bytes()), (0, 0));
    assert_eq!(rx.counts(), [("sig_unsigned", 2)]);
    // Once the sender has a verified manifest, its frames that none lists
    // expire as sig_expired; receiving is what drives expiry too.
    let t = NOW + SEC;
    assert_eq!(rx.recv(t, &a[3]), (Ok(Received::Verified), vec![]));
    rx.delivers(t, &a[2]);
    rx.held(t, &b[1]);
    rx.held(t, &b[2]);
    rx.held(t + hold, &member(SenderId([2; 16]), 0));
    assert_eq!(rx.v.held(), 3);
    rx.held(t + hold + 1, &member(SenderId([3; 16]), 0));
    assert_eq!(rx.v.held(), 2);
    assert_eq!(
        rx.counts(),
        [
            ("manifests_verified", 1),
            ("sig_unsigned", 2),
            ("sig_expired", 2)
        ]
    );
    // An expired frame is gone: its manifest now releases nothing.
    assert_eq!(
        rx.recv(t + hold + 1, &b[3]),
        (Ok(Received::Verified), vec![])
    );
}

#[test]
fn a_flood_of_fresh_senders_stays_within_the_bounds() {
    let max_held = 50;
    let max_bytes = 40 * charge(200);
    let mut rx = Rx::with(
        trusting(&[&signer(7)]),
        config(DEFAULT_HOLD, max_held, max_bytes),
    );
    for i in 0..10_000u32 {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let len = (i as usize * 37) % 400;
        let f = member_with(
            &gkey(1),
            &ch(),
            SenderId(id),
            u64::from(i),
            &encode(&Body::Data(&vec![1; len])),
        );
        rx.held(NOW + u64::from(i), &f);
        assert!(rx.v.held() <= max_held);
        assert!(rx.v.held_bytes() <= max_bytes);
        assert!(rx.v.arrivals.len() <= 2 * rx.v.held() + 64 + 1);
    }
    assert_eq!(rx.o.sender_count(), 0);
    assert!(rx.v.records.is_empty());
}

#[test]
fn a_flood_of_100k_frames_leaves_no_state() {
    let mut rx = Rx::new(trusting(&[&signer(7)]));
    let n = 100_000u64;
    let body = encode(&Body::Data(b"flood"));
    for i in 0..n {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        // A fresh session each, some at seq 0, some far on: 20 per ms.
        let f = member_with(&gkey(1), &ch(), SenderId(id), i % 3 * i, &body);
        rx.held(NOW + i / 20 * MS, &f);
        assert!(rx.v.held() <= DEFAULT_MAX_HELD);
        assert!(rx.v.held_bytes() <= DEFAULT_MAX_HELD_BYTES);
    }
    assert!(rx.v.records.is_empty());
    assert_eq!(rx.o.sender_count(), 0);
    assert_eq!(rx.o.stats().opened, 0);
    // Frames this small fill the count first; none waited out its hold.
    assert_eq!(rx.v.held(), DEFAULT_MAX_HELD);
    let s = *rx.v.stats();
    assert_eq!(s.held, n);
    assert_eq!(s.sig_hold_full, n - DEFAULT_MAX_HELD as u64);
    rx.v.expire(NOW + n / 20 * MS + HOLD + 1);
    assert_eq!((rx.v.held(), rx.v.held_bytes()), (0, 0));
    assert!(rx.v.arrivals.len() <= 64);
    let s = *rx.v.stats();
    assert_eq!(s.sig_unsigned, DEFAULT_MAX_HELD as u64);
    assert_eq!(s.delivered, 0);
}

#[test]
fn only_the_newest_records_are_kept() {
    let mut rx = Rx::with(
        trusting(&[&signer(7)]),
        VerifierConfig {
            max_signed_senders: 2,
            ..VerifierConfig::default()
        },
    );
    // One session: 17 batches of one frame; the first batch's record goes.
    let mut s = session(0, 64);
    let batches: Vec<_> = (0..=RECORDS_PER_SENDER)
        .map(|_| batch(&mut s, NOW, 1))
        .collect();
    for b in &batches {
        assert_eq!(rx.recv(NOW, &b[0]), (Ok(Received::Verified), vec![]));
    }
    assert_eq!(
        rx.v.records[&(gkey(1).id(), SID)].records.len(),
        RECORDS_PER_SENDER
    );
    // A frame of the first batch no longer finds its manifest; the second
    // copy of that manifest is verified again rather than a duplicate.
    rx.held(NOW, &batches[0][1]);
    assert_eq!(
        rx.recv(NOW, &batches[0][2]),
        (Ok(Received::Verified), vec![0])
    );
    // It is older than every record kept, so it is not recorded: the
    // second batch's record stays (a re-sealed old manifest must not push
    // out a newer one).
    rx.delivers(NOW, &batches[1][1]);
    rx.delivers(NOW, &batches[2][1]);
    // Two more sessions: the one whose newest manifest is oldest loses its
    // records, so its frames wait.
    let mut sessions: Vec<SignedSealer> = [0x61u8, 0x62]
        .iter()
        .map(|b| {
            SignedSealer::new(
                Sealer::with_sender_id(&gkey(1), &ch(), SenderId([*b; 16]), 0),
                Arc::new(signer(7)),
                ch(),
                64,
                Duration::from_millis(10),
            )
        })
        .collect();
    let x = batch(&mut sessions[0], NOW, 2);
    let y = batch(&mut sessions[1], NOW, 2);
    assert_eq!(rx.recv(NOW, &x[0]), (Ok(Received::Verified), vec![]));
    // SID's newest manifest is older than x's: y's record evicts SID's.
    assert_eq!(rx.recv(NOW, &y[0]), (Ok(Received::Verified), vec![]));
    assert_eq!(rx.v.records.len(), 2);
    assert!(!rx.v.records.contains_key(&(gkey(1).id(), SID)));
    rx.held(NOW, &batches[3][1]);
    rx.delivers(NOW, &x[1]);
    rx.delivers(NOW, &y[1]);
}

// ---------------------------------------------------------------------
// The end of a session's seqs.

#[test]
fn a_session_near_the_last_seq_keeps_two_for_its_manifests() {
    let mut s = session(u64::MAX - 5, 64);
    for _ in 0..4 {
        s.seal_body(NOW, &Body::Data(b"x")).unwrap();
    }
    // u64::MAX - 1 would be the fifth frame: refused, two frames early.
    assert_eq!(
        s.seal_body(NOW, &Body::Data(b"x")),
        Err(SealError::SequenceExhausted)
    );
    assert_eq!(s.batched(), 4);
    let d = close(&mut s, NOW);
    assert_eq!(
        seqs(&d),
        [
            u64::MAX - 1,
            u64::MAX - 5,
            u64::MAX - 4,
            u64::MAX - 3,
            u64::MAX - 2,
            u64::MAX
        ]
    );
    assert_eq!(s.sealer().next_seq(), None);
    assert_eq!(
        s.seal_body(NOW, &Body::Data(b"x")),
        Err(SealError::SequenceExhausted)
    );
    assert!(close(&mut s, NOW).is_empty());
    let mut rx = Rx::new(trusting(&[&signer(7)]));
    assert_eq!(rx.recv(NOW, &d[0]), (Ok(Received::Verified), vec![]));
    for f in &d[1..5] {
        rx.delivers(NOW, f);
    }
    rx.rejects(NOW, &d[5], SigReject::Duplicate);

    // A batch closed earlier leaves the same two at the end.
    let mut s = session(u64::MAX - 5, 64);
    assert_eq!(
        seqs(&batch(&mut s, NOW, 1)),
        [u64::MAX - 4, u64::MAX - 5, u64::MAX - 3]
    );
    s.seal_body(NOW, &Body::Data(b"x")).unwrap();
    assert_eq!(
        s.seal_body(NOW, &Body::Data(b"x")),
        Err(SealError::SequenceExhausted)
    );
    assert_eq!(
        seqs(&close(&mut s, NOW)),
        [u64::MAX - 1, u64::MAX - 2, u64::MAX]
    );
}

// ---------------------------------------------------------------------
// Signing key files and trust files.

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn line_problem(result: Result<impl fmt::Debug, SignerFileError>) -> (usize, SignerLineProblem) {
    match result {
        Err(SignerFileError::Line { line, problem, .. }) => (line, problem),
        other => panic!("not a line error: {other:?}"),
    }
}

#[test]
fn a_signer_line_round_trips() {
    let key = signer(7);
    let line = key.to_line();
    assert_eq!(
        *line,
        format!("mcsec-signer-v1 {} {}", key.id(), hex_of(&[7; 32]))
    );
    let again = SignerKey::parse(&line).unwrap();
    assert_eq!((again.id(), again.public()), (key.id(), key.public()));
    assert_eq!(*again.to_line(), *line);
    // The signer ID is SHA-256("mcsec v2 signer id" || public)[..8].
    let digest = Sha256::new()
        .chain_update(b"mcsec v2 signer id")
        .chain_update(key.public())
        .finalize();
    assert_eq!(key.id().0, digest[..8]);
    // A created= stamp is written and kept exactly as written.
    let made = SignerKey::generate(Some(UNIX_EPOCH + Duration::from_secs(1_790_000_000))).unwrap();
    assert!(
        made.to_line().ends_with(" created=2026-09-21T14:13:20Z"),
        "{}",
        *made.to_line()
    );
    let again = SignerKey::parse(&made.to_line()).unwrap();
    assert_eq!(*again.to_line(), *made.to_line());
    let stamped = format!("{} created=2024-02-29T23:59:59.123456789Z", *key.to_line());
    assert_eq!(*SignerKey::parse(&stamped).unwrap().to_line(), stamped);
    assert!(
        !SignerKey::generate(None)
            .unwrap()
            .to_line()
            .contains("created")
    );
    // Comments, empty lines, CR LF, no final line end.
    let file = format!(
        "# mcsec signing key\r\n\r\n#\tcomment \u{85}\n{}",
        *key.to_line()
    );
    assert_eq!(SignerKey::parse(&file).unwrap().id(), key.id());
    // Debug shows the ID only.
    let shown = format!("{key:?}");
    assert!(shown.contains(&key.id().to_string()));
    assert!(!shown.contains(&hex_of(&[7; 32])));
}

#[test]
fn every_signer_line_problem_is_named() {
    use SignerLineProblem as P;
    let key = signer(7);
    let id = key.id().to_string();
    let seed = hex_of(&[7; 32]);
    let other_id = signer(8).id().to_string();
    let tag = "mcsec-signer-v1";
    let cases: Vec<(String, P)> = vec![
        (
            "mcsec-key-v1 0011223344556677 x".into(),
            P::NotASignerLine(tag),
        ),
        ("hello".into(), P::NotASignerLine(tag)),
        (
            format!("mcsec-signer-public-v1 {id} {}", hex_of(&key.public())),
            P::NotASignerLine(tag),
        ),
        (
            format!("{tag} {} {seed}", id.to_uppercase()),
            P::BadSignerId,
        ),
        (format!("{tag} {} {seed}", &id[..15]), P::BadSignerId),
        (format!("{tag} {id}0 {seed}"), P::BadSignerId),
        (format!("{tag} {id} {}", &seed[..63]), P::BadKey),
        (format!("{tag} {id} {}", seed.replace('7', "G")), P::BadKey),
        (
            format!("{tag} {id} {}", hex_of(&[0xab; 32]).to_uppercase()),
            P::BadKey,
        ),
        (format!("{tag} {id}"), P::BadKey),
        (tag.into(), P::BadKey),
        (format!("{tag} {other_id} {seed}"), P::SignerIdMismatch),
        (
            format!("{tag} {id} {seed} created=2025-02-29T00:00:00Z"),
            P::BadCreated,
        ),
        (
            format!("{tag} {id} {seed} created=2026-09-21 13:46:40Z"),
            P::UnexpectedField,
        ),
        (
            format!("{tag} {id} {seed} created=yesterday"),
            P::BadCreated,
        ),
        (format!("{tag} {id} {seed} created="), P::BadCreated),
        (format!("{tag} {id} {seed} name"), P::UnexpectedField),
        (
            format!("{tag} {id} {seed} created=2026-09-21T13:46:40Z x"),
            P::UnexpectedField,
        ),
        (format!(" {tag} {id} {seed}"), P::Whitespace),
        (format!("{tag} {id} {seed} "), P::Whitespace),
        (format!("{tag}  {id} {seed}"), P::Whitespace),
        (format!("{tag}\t{id} {seed}"), P::Whitespace),
        (format!("{tag} {id} {seed}\r\r"), P::Whitespace),
        (format!("{tag} {id}\r{seed}"), P::Whitespace),
        ("  # indented comment".into(), P::Whitespace),
        ("# a bell \u{7}".into(), P::Whitespace),
        (" ".into(), P::Whitespace),
    ];
    for (line, problem) in cases {
        let text = format!("# first\n\n{line}\n");
        let err = SignerKey::parse(&text).map(|_| ());
        let shown = err
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert_eq!(line_problem(err), (3, problem), "{line:?}");
        // The message names the line, never its secret.
        assert!(shown.starts_with("line 3: "), "{shown}");
        assert!(!shown.contains(&seed[..16]), "{shown}");
    }
}

#[test]
fn a_signing_key_file_holds_exactly_one_key() {
    let one = signer(7).to_line();
    let two = signer(8).to_line();
    for (text, found) in [
        (String::new(), 0),
        ("# nothing here\n\n".into(), 0),
        (format!("{}\n{}\n", *one, *two), 2),
        (format!("{}\n# again\n{}\n", *one, *one), 2),
    ] {
        match SignerKey::parse(&text) {
            Err(SignerFileError::SignerCount { found: f, .. }) => assert_eq!(f, found, "{text:?}"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

/// 32 bytes that do not decode to a point of edwards25519.
fn not_a_point() -> [u8; 32] {
    (2u8..=255)
        .map(|b| {
            let mut bytes = [0u8; 32];
            bytes[0] = b;
            bytes
        })
        .find(|bytes| VerifyingKey::from_bytes(bytes).is_err())
        .expect("some y has no x")
}

#[test]
fn trust_files_parse_with_names_and_refuse_duplicates() {
    let (a, b, c) = (signer(7), signer(8), signer(9));
    let text = format!(
        "# who we trust\n{}\n\n{}\r\n{}",
        a.trust_line(Some("feed")),
        b.trust_line(None),
        c.trust_line(Some("ops@example.org"))
    );
    let list = TrustList::parse(&text).unwrap();
    let ids: Vec<SignerId> = list.keys().iter().map(Trusted::id).collect();
    assert_eq!(ids, [a.id(), b.id(), c.id()]);
    let names: Vec<Option<&str>> = list.keys().iter().map(Trusted::name).collect();
    assert_eq!(names, [Some("feed"), None, Some("ops@example.org")]);
    assert_eq!(list.keys()[0].label(), "feed");
    assert_eq!(list.keys()[1].label(), b.id().to_string());
    assert_eq!(
        a.trust_line(Some("feed")),
        format!(
            "mcsec-signer-public-v1 {} {} feed",
            a.id(),
            hex_of(&a.public())
        )
    );
    // A trust line parses back to its key, with or without a name.
    for name in [None, Some("x"), Some(&*"n".repeat(64))] {
        let list = TrustList::parse(&a.trust_line(name)).unwrap();
        assert_eq!(list.keys()[0].id(), a.id());
        assert_eq!(list.keys()[0].name(), name);
        assert_eq!(list.find(&a.id().0), Some(0));
    }

    let duplicate = |text: String| match TrustList::parse(&text) {
        Err(SignerFileError::Duplicate {
            line,
            first_line,
            what,
            ..
        }) => (line, first_line, what),
        other => panic!("{text:?}: {other:?}"),
    };
    assert_eq!(
        duplicate(format!(
            "{}\n# x\n{}\n",
            a.trust_line(Some("one")),
            a.trust_line(Some("two"))
        )),
        (3, 1, format!("signer {}", a.id()))
    );
    assert_eq!(
        duplicate(format!(
            "{}\n{}\n",
            a.trust_line(Some("feed")),
            b.trust_line(Some("feed"))
        )),
        (2, 1, "name feed".into())
    );
    // Two nameless lines are not a duplicate name.
    assert!(TrustList::parse(&format!("{}\n{}\n", a.trust_line(None), b.trust_line(None))).is_ok());
    for text in ["", "# none\n", "\n\n"] {
        assert!(
            matches!(TrustList::parse(text), Err(SignerFileError::NoTrust { .. })),
            "{text:?}"
        );
    }
}

#[test]
fn every_trust_line_problem_is_named() {
    use SignerLineProblem as P;
    let a = signer(7);
    let id = a.id().to_string();
    let public = hex_of(&a.public());
    let tag = "mcsec-signer-public-v1";
    let bad_point = not_a_point();
    let cases: Vec<(String, P)> = vec![
        (a.to_line().to_string(), P::NotASignerLine(tag)),
        (
            format!("{tag} {} {public}", id.to_uppercase()),
            P::BadSignerId,
        ),
        (format!("{tag} {id} {}", public.to_uppercase()), P::BadKey),
        (format!("{tag} {id} {}", &public[..62]), P::BadKey),
        (format!("{tag} {id}"), P::BadKey),
        (format!("{tag} {id} {public} feed!"), P::BadName),
        (
            format!("{tag} {id} {public} {}", "n".repeat(65)),
            P::BadName,
        ),
        (format!("{tag} {id} {public} caf\u{e9}"), P::BadName),
        (
            format!("{tag} {id} {public} feed extra"),
            P::UnexpectedField,
        ),
        (
            format!("{tag} {} {public}", signer(8).id()),
            P::SignerIdMismatch,
        ),
        (
            format!("{tag} {} {}", SignerId::of(&bad_point), hex_of(&bad_point)),
            P::NotAPoint,
        ),
        (format!("{tag} {id} {public} "), P::Whitespace),
        (format!("{tag} {id}  {public}"), P::Whitespace),
        (format!("{tag} {id} {public}\tfeed"), P::Whitespace),
    ];
    for (line, problem) in cases {
        let text = format!("{}\n{line}\n", signer(9).trust_line(None));
        assert_eq!(
            line_problem(TrustList::parse(&text)),
            (2, problem),
            "{line:?}"
        );
    }
}

// ---------------------------------------------------------------------
// Receivers that trust nobody.

#[test]
fn a_receiver_without_trust_commits_a_manifest_like_any_frame() {
    let d = batch(&mut session(0, 64), NOW, 2); // manifests at 2 and 3
    let mut o = Opener::new(Keyring::single(gkey(1)), ch(), OpenerConfig::default());
    let mut first = d[0].clone();
    let (header, body) = o.open_body(NOW, &mut first).unwrap();
    assert_eq!(header.seq, 2);
    let Body::Manifest(m) = body else {
        panic!("not a manifest: {body:?}")
    };
    assert_eq!((m.signer_id, m.first_seq), (signer(7).id().0, 0));
    assert_eq!(m.hashes.len(), 2 * HASH_LEN);
    // It used its seq: the sender is known, and the same datagram again is
    // a replay. The frames and the second copy open as unsigned frames.
    assert!(o.knows_sender(gkey(1).id(), SID));
    assert_eq!(
        o.open_body(NOW, &mut d[0].clone()).err(),
        Some(Reject::Replayed)
    );
    for f in &d[1..4] {
        assert!(o.open_body(NOW, &mut f.clone()).is_ok());
    }
    assert_eq!(o.stats().opened, 4);
    assert_eq!(o.stats().replayed, 1);
}

/// A batch holds what one manifest lists: the frame after a full batch is
/// refused (nothing sealed, its seq unused) until the batch is closed.
/// Before, it was sealed, and every later close failed with `TooLarge`.
#[test]
fn a_full_batch_refuses_more_frames_until_it_closes() {
    let mut s = session(0, 3);
    for seq in 0..3 {
        s.seal_body(NOW, &Body::Data(&payload(seq))).unwrap();
    }
    assert!(s.is_due(NOW));
    assert_eq!(
        s.seal_body(NOW, &Body::Data(&payload(3))),
        Err(SealError::BatchFull)
    );
    assert_eq!(s.sealer().next_seq(), Some(3));
    let sent = close(&mut s, NOW);
    assert_eq!(seqs(&sent), [3, 0, 1, 2, 4]);
    s.seal_body(NOW, &Body::Data(&payload(5))).unwrap();
    assert_eq!(seqs(&close(&mut s, NOW)), [6, 5, 7]);
}

/// A trust line whose public key no signature can verify under is refused
/// at load: a small-order point (the identity, encoded `01 00 .. 00`) and
/// a non-canonical encoding (y = p + 3, which decodes as y = 3). Before,
/// both loaded and every manifest of theirs was `sig_bad` at best.
#[test]
fn trust_lines_with_unusable_public_keys_are_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    // p + 3 = 2^255 - 16, little-endian: f0 ff .. ff 7f.
    let mut non_canonical = [0xffu8; 32];
    non_canonical[0] = 0xf0;
    non_canonical[31] = 0x7f;
    for public in [identity, non_canonical] {
        assert!(Trusted::new(&public, None).is_none(), "{public:02x?}");
        let mut line = format!("mcsec-signer-public-v1 {} ", SignerId::of(&public));
        for b in public {
            line.push_str(&format!("{b:02x}"));
        }
        assert!(
            matches!(
                TrustList::parse(&line),
                Err(SignerFileError::Line {
                    problem: SignerLineProblem::NotAPoint,
                    ..
                })
            ),
            "{line}"
        );
    }
    // A real key still loads.
    assert!(Trusted::new(&signer(7).public(), None).is_some());
}

// ---------------------------------------------------------------------
// Review (sig-review): attacks on the records' bounds.

/// A signed session of signer `key` under `sender` on [`ch`], from `first_seq`.
fn session_of(key: u8, sender: SenderId, first_seq: u64) -> SignedSealer {
    SignedSealer::new(
        Sealer::with_sender_id(&gkey(1), &ch(), sender, first_seq),
        Arc::new(signer(key)),
        ch(),
        64,
        Duration::from_millis(10),
    )
}

/// Signer 9 (trusted, with the group key) pushes signer 7's session out of
/// the records with manifests for sessions of its own, then signs frames
/// into signer 7's session: the session must still belong to signer 7.
#[test]
fn a_signer_cannot_take_a_session_over_by_evicting_its_records() {
    let alice = signer(7);
    let bob = signer(9);
    let mut rx = Rx::with(
        trusting(&[&alice, &bob]),
        VerifierConfig {
            max_signed_senders: 2,
            ..VerifierConfig::default()
        },
    );
    let mut a = session(0, 64);
    let first = batch(&mut a, NOW, 1);
    assert_eq!(rx.recv(NOW, &first[0]), (Ok(Received::Verified), vec![]));
    rx.delivers(NOW, &first[1]);
    // Bob's own sessions evict Alice's records (1024 of them by default).
    for b in [0xb1u8, 0xb2] {
        let mut own = session_of(9, SenderId([b; 16]), 0);
        let out = batch(&mut own, NOW, 1);
        assert_eq!(rx.recv(NOW, &out[0]), (Ok(Received::Verified), vec![]));
    }
    assert!(!rx.v.records.contains_key(&(gkey(1).id(), SID)));
    // Bob signs a frame into Alice's session, far ahead.
    let mut takeover = session_of(9, SID, 1_000_000);
    let out = batch(&mut takeover, NOW, 1);
    rx.rejects(NOW, &out[0], SigReject::Conflict);
    rx.held(NOW, &out[1]);
    // Alice's next batch is still hers, delivered, labelled hers.
    let next = batch(&mut a, NOW, 1);
    assert_eq!(rx.recv(NOW, &next[0]), (Ok(Received::Verified), vec![]));
    rx.delivers(NOW, &next[1]);
    assert!(rx.frames.iter().all(|f| f.signer == 0));
    assert_eq!(rx.v.stats().sig_conflict, 1);
}

/// The owners of sessions (kept apart from the records) stay bounded: a
/// trusted signer opening session after session cannot grow them, and a
/// session whose window the core still holds keeps its owner.
#[test]
fn session_owners_stay_bounded() {
    let mut rx = Rx::on(
        keyring(&[&gkey(1)]),
        ch(),
        OpenerConfig {
            max_senders: 4,
            ..OpenerConfig::default()
        },
        trusting(&[&signer(7), &signer(9)]),
        VerifierConfig {
            max_signed_senders: 2,
            ..VerifierConfig::default()
        },
    );
    let mut a = session(0, 64);
    let first = batch(&mut a, NOW, 1);
    assert_eq!(rx.recv(NOW, &first[0]), (Ok(Received::Verified), vec![]));
    rx.delivers(NOW, &first[1]);
    for i in 0..1000u32 {
        let mut id = [0xbb; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let mut own = session_of(9, SenderId(id), 0);
        let out = batch(&mut own, NOW, 1);
        assert_eq!(rx.recv(NOW, &out[0]), (Ok(Received::Verified), vec![]));
        assert!(rx.v.owners.len() <= 2 * (4 + 2), "{}", rx.v.owners.len());
    }
    let mut takeover = session_of(9, SID, 500);
    let out = batch(&mut takeover, NOW, 1);
    rx.rejects(NOW, &out[0], SigReject::Conflict);
}

/// A receiver shows a frame's signer by its name, or else by its signer
/// ID in hex: a name that is another (nameless) line's ID would show two
/// keys under one label. The trust line of a signer who chose that name is
/// refused, in either order.
#[test]
fn a_name_cannot_be_another_signers_label() {
    let (a, b) = (signer(7), signer(8));
    let a_label = a.id().to_string();
    for text in [
        format!("{}\n{}\n", a.trust_line(None), b.trust_line(Some(&a_label))),
        format!("{}\n{}\n", b.trust_line(Some(&a_label)), a.trust_line(None)),
    ] {
        match TrustList::parse(&text) {
            Err(SignerFileError::Duplicate {
                line: 2,
                first_line: 1,
                ..
            }) => {}
            Ok(list) => panic!(
                "labels {:?}",
                list.keys().iter().map(Trusted::label).collect::<Vec<_>>()
            ),
            other => panic!("{other:?}"),
        }
    }
    // A line may name itself by its own ID.
    assert!(TrustList::parse(&format!("{}\n", a.trust_line(Some(&a_label)))).is_ok());
}

/// A trust file path that is a FIFO is refused at once, as a key file's
/// is, rather than blocking the receiver's start until a writer comes.
#[cfg(unix)]
#[test]
fn a_trust_file_that_is_a_fifo_is_refused_without_blocking() {
    let dir = std::env::temp_dir().join(format!("mcsec-trust-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("trust.pub");
    let _ = std::fs::remove_file(&fifo);
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(TrustList::load(&path).map(|_| ()));
    });
    let result = rx.recv_timeout(Duration::from_secs(20));
    if result.is_err() {
        // Unblock the reader before failing.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
    }
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(Err(SignerFileError::File(KeyError::NotAFile { .. }))) => {}
        other => panic!("{other:?}"),
    }
}

/// A member (group key, no signing key) re-seals old manifests of the
/// signer's session (their headers are not signed, so each is a fresh
/// frame under any seq): each verifies again and, until now, pushed out
/// the newest record, so the frames of the batch whose manifest came
/// first were held instead of checked on arrival, and then crowded out of
/// the hold store: the signer's feed stopped.
#[test]
fn resealed_old_manifests_cannot_push_out_the_current_one() {
    let mut rx = Rx::with(
        trusting(&[&signer(7)]),
        config(DEFAULT_HOLD, 4, DEFAULT_MAX_HELD_BYTES),
    );
    let mut s = session(0, 64);
    let batches: Vec<_> = (0..=RECORDS_PER_SENDER + 1)
        .map(|_| batch(&mut s, NOW, 1))
        .collect();
    for b in &batches {
        assert_eq!(rx.recv(NOW, &b[0]), (Ok(Received::Verified), vec![]));
        rx.delivers(NOW, &b[1]);
    }
    // The member's copies of the first 16 manifests, under fresh seqs.
    let mut member_sealer = Sealer::with_sender_id(&gkey(1), &ch(), SID, 1 << 40);
    member_sealer.set_max_datagram(1 << 20);
    let resealed: Vec<Vec<u8>> = batches[..RECORDS_PER_SENDER]
        .iter()
        .map(|b| {
            let body = plaintext(&b[0]);
            let mut out = vec![0u8; body.len() + frame::OVERHEAD];
            let n = member_sealer.seal(NOW, &body, &mut out).unwrap();
            out.truncate(n);
            out
        })
        .collect();
    // The signer's next batch: its manifest comes first ...
    let current = batch(&mut s, NOW, 1);
    assert_eq!(rx.recv(NOW, &current[0]), (Ok(Received::Verified), vec![]));
    // ... then the member's re-sealed manifests (each still costs one
    // verification, as any manifest-shaped datagram may) ...
    for m in &resealed {
        let _ = rx.recv(NOW, m);
    }
    // ... and the signer's frame is still checked on arrival and delivered,
    // not held where a flood of frames could crowd it out.
    rx.delivers(NOW, &current[1]);
    // The second copy is recognised.
    rx.rejects(NOW, &current[2], SigReject::Duplicate);
}
