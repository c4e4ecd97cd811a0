//! Signed senders against the real `mcsec recv --trust`, over loopback
//! multicast: a member that holds the group key but not the signing key
//! injects, replays, re-seals and floods; the signed feed still arrives
//! whole and in order at the trusting receiver, nothing forged is
//! delivered, each attack is counted under its own counter, and a control
//! receiver without --trust on the same group delivers the forgeries (so
//! the attack really ran). Plus the user-facing behaviour of --sign and
//! --trust: key and trust file errors, --raw fragments, --file, chat, and
//! how promptly a signed message goes out.
//!
//! Network safety: run inside `unshare --net` with lo only. Every command
//! gets `-i 127.0.0.1` (or `-i lo`) and TTL 1, every group is in
//! 239.255.96.0/24 with its own port, and the test's injecting socket is an
//! `mcsec::net::Sender` pinned to 127.0.0.1.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Proc, injector, keyfile, recv, spawn, terminate};
use mcsec::body::Manifest;
use mcsec::net::{self, InterfaceSpec};
use mcsec::signed::{SignerKey, frame_hash, signed_message};
use mcsec::{Body, ChannelId, Header, Keyring, Opener, OpenerConfig, Sealer, SenderId};

/// A group key, a signing key with its trust file, and a second signing key
/// nobody trusts (the attacker's own).
struct Keys {
    /// Holds the files; removed on drop.
    _dir: tempfile::TempDir,
    key: PathBuf,
    signer: PathBuf,
    trust: PathBuf,
    rogue_file: PathBuf,
    rogue: SignerKey,
}

fn run_ok(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path(), "group.key");
    let signer = dir.path().join("feed.signer");
    run_ok(&["signer", "new", "-o", path_str(&signer)]);
    // What the user does: `mcsec signer public feed.signer > feed.pub`.
    let public = run_ok(&["signer", "public", path_str(&signer)]);
    let trust = dir.path().join("feed.pub");
    std::fs::write(&trust, &public.stdout).unwrap();
    std::fs::set_permissions(&trust, std::fs::Permissions::from_mode(0o644)).unwrap();
    let rogue_file = dir.path().join("rogue.signer");
    run_ok(&["signer", "new", "-o", path_str(&rogue_file)]);
    let rogue = SignerKey::load(&rogue_file).unwrap();
    Keys {
        _dir: dir,
        key,
        signer,
        trust,
        rogue_file,
        rogue,
    }
}

impl Keys {
    fn ring(&self) -> Keyring {
        Keyring::load(&self.key).unwrap()
    }

    /// The trusted signer's ID, as the trust file has it.
    fn signer_id(&self) -> [u8; 8] {
        SignerKey::load(&self.signer).unwrap().id().0
    }

    /// `recv` arguments for a trusting receiver with this hold time.
    fn trusting<'a>(&'a self, hold: &'a str) -> Vec<&'a str> {
        vec![
            "--format",
            "json",
            "--trust",
            path_str(&self.trust),
            "--sig-hold",
            hold,
        ]
    }
}

const CONTROL: &[&str] = &["--format", "json"];

/// A datagram sealed by the attacker: any sender ID, any seq, any body,
/// under the group key (which it holds).
fn seal_as(
    ring: &Keyring,
    channel: &ChannelId,
    sender: SenderId,
    seq: u64,
    body: &Body<'_>,
) -> Vec<u8> {
    let mut s = Sealer::with_sender_id(ring.sending_key(), channel, sender, seq);
    s.set_max_datagram(65_507);
    let mut buf = vec![0u8; 65_507];
    let n = s.seal_body(mcsec::now_us(), body, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Seals raw plaintext bytes (a body that may not decode).
fn seal_plaintext(
    ring: &Keyring,
    channel: &ChannelId,
    sender: SenderId,
    seq: u64,
    plaintext: &[u8],
) -> Vec<u8> {
    let mut s = Sealer::with_sender_id(ring.sending_key(), channel, sender, seq);
    let mut buf = vec![0u8; 2048];
    let n = s.seal(mcsec::now_us(), plaintext, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn manifest_body<'a>(
    signer_id: [u8; 8],
    first_seq: u64,
    hashes: &'a [u8],
    sig: &[u8; 64],
) -> Body<'a> {
    let mut signature_r = [0u8; 32];
    let mut signature_s = [0u8; 32];
    signature_r.copy_from_slice(&sig[..32]);
    signature_s.copy_from_slice(&sig[32..]);
    Body::Manifest(Manifest {
        signer_id,
        first_seq,
        hashes,
        signature_r,
        signature_s,
    })
}

/// A signature by `key` over the manifest's signed message for this
/// channel, key and sender.
fn sign_with(
    key: &SignerKey,
    ring: &Keyring,
    channel: &ChannelId,
    sender: SenderId,
    first_seq: u64,
    hashes: &[u8],
) -> [u8; 64] {
    let mut message = Vec::new();
    signed_message(
        &mut message,
        channel,
        ring.sending_key().id(),
        &sender,
        first_seq,
        hashes,
    );
    key.sign(&message)
}

fn random_sender() -> SenderId {
    let mut id = [0u8; 16];
    id.iter_mut().for_each(|b| *b = rand_byte());
    SenderId(id)
}

fn rand_byte() -> u8 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = mcsec::now_us() | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 24) as u8
}

/// A genuine datagram as a member saw it on the group.
#[derive(Clone, Debug)]
struct Seen {
    bytes: Vec<u8>,
    header: Header,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Data(Vec<u8>),
    Manifest {
        signer_id: [u8; 8],
        first_seq: u64,
        hashes: Vec<u8>,
        sig: [u8; 64],
    },
    Other,
}

impl Seen {
    fn is_manifest(&self) -> bool {
        matches!(self.kind, Kind::Manifest { .. })
    }

    /// The plaintext body again, to re-seal it elsewhere.
    fn body(&self) -> Body<'_> {
        match &self.kind {
            Kind::Data(payload) => Body::Data(payload),
            Kind::Manifest {
                signer_id,
                first_seq,
                hashes,
                sig,
            } => manifest_body(*signer_id, *first_seq, hashes, sig),
            Kind::Other => panic!("not a data frame or a manifest"),
        }
    }
}

/// A member listening on the group with a plain socket: it sees the
/// genuine feed (sender ID, seqs, manifests) and what the test injected,
/// and tells them apart.
struct Tap {
    rx: net::Receiver,
    opener: Opener,
    /// Injected datagrams not seen yet, by bytes.
    pending: HashMap<Vec<u8>, usize>,
    genuine: VecDeque<Seen>,
    buf: Vec<u8>,
}

impl Tap {
    fn new(group: &str, k: &Keys) -> Self {
        let mut opts = net::Options::default();
        opts.interface = Some(InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        opts.rcvbuf = Some(4 << 20);
        let rx = net::Receiver::open(group.parse().unwrap(), &opts).unwrap();
        rx.set_timeout(Some(Duration::from_millis(200))).unwrap();
        Self {
            rx,
            opener: Opener::new(k.ring(), common::channel(group), OpenerConfig::default()),
            pending: HashMap::new(),
            genuine: VecDeque::new(),
            buf: vec![0u8; 65_536],
        }
    }

    /// One datagram off the group, if one comes within the timeout.
    fn pump(&mut self) -> bool {
        let Some((n, _)) = self.rx.recv(&mut self.buf).unwrap() else {
            return false;
        };
        let bytes = self.buf[..n].to_vec();
        if let Some(left) = self.pending.get_mut(&bytes) {
            *left -= 1;
            if *left == 0 {
                self.pending.remove(&bytes);
            }
            return true;
        }
        let mut copy = bytes.clone();
        let opened = self
            .opener
            .open_uncommitted(mcsec::now_us(), &mut copy)
            .expect("a genuine frame opens");
        let header = opened.header;
        let kind = match Body::decode(opened.plaintext) {
            Ok(Body::Data(p)) => Kind::Data(p.to_vec()),
            Ok(Body::Manifest(m)) => {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&m.signature_r);
                sig[32..].copy_from_slice(&m.signature_s);
                Kind::Manifest {
                    signer_id: m.signer_id,
                    first_seq: m.first_seq,
                    hashes: m.hashes.to_vec(),
                    sig,
                }
            }
            _ => Kind::Other,
        };
        self.genuine.push_back(Seen {
            bytes,
            header,
            kind,
        });
        true
    }

    /// Sends `datagrams` to the group and waits until this member saw each
    /// of them: every receiver on the group has them queued by then.
    fn inject(&mut self, tx: &net::Sender, datagrams: &[Vec<u8>]) {
        for d in datagrams {
            *self.pending.entry(d.clone()).or_default() += 1;
            tx.send(d).unwrap();
        }
        let end = Instant::now() + common::DEADLINE;
        while !self.pending.is_empty() {
            assert!(Instant::now() < end, "injected datagrams not seen");
            self.pump();
        }
    }

    fn next_genuine(&mut self) -> Seen {
        let end = Instant::now() + common::DEADLINE;
        while self.genuine.is_empty() {
            assert!(Instant::now() < end, "no genuine datagram on the group");
            self.pump();
        }
        self.genuine.pop_front().unwrap()
    }

    /// One signed batch of the feed, as sent: manifest, frames, manifest.
    fn batch(&mut self) -> Vec<Seen> {
        let first = self.next_genuine();
        assert!(first.is_manifest(), "a batch starts with its manifest");
        let mut batch = vec![first];
        loop {
            let next = self.next_genuine();
            let done = next.is_manifest();
            batch.push(next);
            if done {
                return batch;
            }
        }
    }
}

/// Checks a batch's shape: frames `first..first + n`, the manifest at
/// `first + n` listing their hashes, its second copy at `first + n + 1`.
fn check_batch(batch: &[Seen], first: u64, n: usize) -> SenderId {
    assert_eq!(batch.len(), n + 2, "{batch:?}");
    let sender = batch[0].header.sender_id;
    let m = &batch[0];
    assert_eq!(m.header.seq, first + n as u64);
    assert_eq!(batch[n + 1].header.seq, first + n as u64 + 1);
    let Kind::Manifest {
        first_seq, hashes, ..
    } = &m.kind
    else {
        unreachable!()
    };
    assert_eq!(*first_seq, first);
    for (i, frame) in batch[1..=n].iter().enumerate() {
        assert_eq!(frame.header.sender_id, sender);
        assert_eq!(frame.header.seq, first + i as u64);
        assert_eq!(&hashes[16 * i..16 * i + 16], &frame_hash(&frame.bytes));
    }
    sender
}

/// `mcsec send -g GROUP -i 127.0.0.1 --sign FILE EXTRA`, reading stdin.
fn signed_send(group: &str, k: &Keys, extra: &[&str]) -> Proc {
    let mut args = vec![
        "send",
        "-v",
        "-g",
        group,
        "-i",
        "127.0.0.1",
        "--sign",
        path_str(&k.signer),
    ];
    args.extend_from_slice(extra);
    spawn(&args, &k.key)
}

fn write_stdin(p: &mut Proc, text: &str) {
    let stdin = p.stdin.as_mut().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();
}

/// The json objects of a receiver's stdout of one `type`.
fn of_type(out: &[String], kind: &str) -> Vec<serde_json::Value> {
    out.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == kind)
        .collect()
}

/// The payloads a receiver delivered, in order.
fn payloads(out: &[String]) -> Vec<String> {
    of_type(out, "message")
        .iter()
        .map(|v| v["payload"].as_str().unwrap().to_owned())
        .collect()
}

/// Counters in a stats object, by name.
fn counts(stats: &serde_json::Value, names: &[&str]) -> Vec<(String, u64)> {
    names
        .iter()
        .map(|n| {
            (
                (*n).to_owned(),
                stats[*n].as_u64().unwrap_or_else(|| panic!("no {n}")),
            )
        })
        .collect()
}

/// Every counter of the stats line that must be 0 unless named in
/// `expected`, and the named ones with their values.
fn assert_counts(stats: &serde_json::Value, expected: &[(&str, u64)]) {
    const WATCHED: &[&str] = &[
        "replayed",
        "stale",
        "auth_failed",
        "unknown_key",
        "malformed",
        "oversize",
        "sender_table_full",
        "unknown_body",
        "bad_body",
        "manifests_ignored",
        "manifests_verified",
        "manifest_duplicate",
        "sig_untrusted",
        "sig_invalid",
        "sig_bad",
        "sig_forged",
        "sig_unsigned",
        "sig_expired",
        "sig_hold_full",
        "sig_conflict",
    ];
    let want: Vec<(String, u64)> = WATCHED
        .iter()
        .map(|n| {
            let v = expected
                .iter()
                .find(|(name, _)| name == n)
                .map_or(0, |(_, v)| *v);
            ((*n).to_owned(), v)
        })
        .collect();
    for (name, _) in expected {
        assert!(
            WATCHED.contains(name) || name == &"frames_signed" || name == &"delivered",
            "{name}"
        );
    }
    let got = counts(stats, WATCHED);
    assert_eq!(got, want, "{stats}");
    for (name, v) in expected {
        if matches!(*name, "frames_signed" | "delivered") {
            assert_eq!(stats[*name], *v, "{name}: {stats}");
        }
    }
}

fn feed_lines(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("feed {i}")).collect()
}

/// 1. A member injects frames under the signer's sender ID: at the seqs of
///    the next genuine frame and manifest (before they are sent), behind
///    (seqs already delivered, and a manifest's), and ahead of the feed.
///    The trusting receiver delivers the feed whole and in order and none
///    of them: those at seqs a verified manifest lists are `sig_forged`,
///    the rest wait and expire (`sig_expired`). The control receiver
///    delivers the forgeries and loses the genuine frames whose seqs they
///    took.
#[test]
fn frames_injected_under_the_signers_sender_id() {
    const N: u64 = 8;
    let k = keys();
    let ring = k.ring();
    let group = "239.255.96.1:46601";
    let channel = common::channel(group);
    let trusting = recv(group, &k.key, &k.trusting("500ms"));
    let control = recv(group, &k.key, CONTROL);
    let mut tap = Tap::new(group, &k);
    let tx = injector(group);
    let mut send = signed_send(group, &k, &[]);
    write_stdin(&mut send, "feed 0\n");
    let sender = check_batch(&tap.batch(), 0, 1);
    let mut forged = Vec::new();
    for i in 1..N {
        // One frame per batch: frame 3i, manifests 3i+1 and 3i+2.
        let next = 3 * i;
        let forge = |seq: u64, what: &str| {
            let text = format!("FORGED {what} {i}");
            seal_as(&ring, &channel, sender, seq, &Body::Data(text.as_bytes()))
        };
        let round = [
            forge(next, "upcoming"),
            forge(next + 1, "upcoming-manifest-seq"),
            forge(next - 3, "behind"),
            forge(next - 1, "behind-manifest-seq"),
            forge(3 * N + 10 + i, "ahead"),
        ];
        tap.inject(&tx, &round);
        forged.extend(round);
        write_stdin(&mut send, &format!("feed {i}\n"));
        assert_eq!(check_batch(&tap.batch(), next, 1), sender);
    }
    let (status, _, err) = send.finish();
    assert!(status.success(), "{err:?}");
    // The held forgeries' time (--sig-hold 500ms) runs out.
    std::thread::sleep(Duration::from_millis(1500));

    let (out, stats, _) = terminate(trusting);
    assert_eq!(payloads(&out), feed_lines(0..N), "{stats}");
    let r = N - 1;
    assert_counts(
        &stats,
        &[
            ("delivered", N),
            ("frames_signed", N),
            ("manifests_verified", N),
            ("manifest_duplicate", N),
            // At the next frame's seq: held, then refused when its
            // manifest came.
            ("sig_forged", r),
            // At a delivered frame's seq: the window refuses it first.
            ("replayed", r),
            // At seqs no manifest lists: held until their time ran out.
            ("sig_expired", 3 * r),
        ],
    );
    for v in of_type(&out, "message") {
        assert_eq!(v["signer"], "feed");
    }

    let (out, stats, _) = terminate(control);
    let got = payloads(&out);
    let mut want = vec!["feed 0".to_owned()];
    for i in 1..N {
        // The forgeries at fresh seqs, in the order they came; the genuine
        // frame at the seq the first one took is a replay here.
        want.push(format!("FORGED upcoming {i}"));
        want.push(format!("FORGED upcoming-manifest-seq {i}"));
        want.push(format!("FORGED ahead {i}"));
    }
    assert_eq!(got, want, "{stats}");
    assert_eq!(stats["replayed"], 4 * r, "{stats}");
    eprintln!(
        "{} frames forged under the signer's sender ID: trusting receiver delivered the {N} \
         genuine ones only ({r} sig_forged, {r} replayed, {} sig_expired); control delivered {} \
         forgeries and lost {r} genuine frames",
        forged.len(),
        3 * r,
        3 * r
    );
}

/// Re-seals every datagram of `feed` under `channel` and `sender` at its
/// own seq: the same bodies (manifests included), as a member can.
fn reseal(ring: &Keyring, feed: &[Seen], channel: &ChannelId, sender: SenderId) -> Vec<Vec<u8>> {
    feed.iter()
        .map(|s| seal_as(ring, channel, sender, s.header.seq, &s.body()))
        .collect()
}

/// 2. Genuine manifests replayed: alone (verbatim: `manifest_duplicate`),
///    and re-sealed with their frames under another sender ID, for another
///    group, and for another --channel name (`sig_bad`: the signature
///    covers the channel, key and sender ID; the frames are never
///    delivered, `sig_unsigned`). Control receivers deliver the re-sealed
///    frames.
#[test]
fn genuine_manifests_replayed_and_resealed_elsewhere() {
    const N: u64 = 4;
    let k = keys();
    let ring = k.ring();
    let (g1, g2, g3) = (
        "239.255.96.2:46602",
        "239.255.96.3:46603",
        "239.255.96.4:46604",
    );
    let beta = ChannelId::named("beta").unwrap();
    let hold = "500ms";
    let t1 = recv(g1, &k.key, &k.trusting(hold));
    let c1 = recv(g1, &k.key, CONTROL);
    let t2 = recv(g2, &k.key, &k.trusting(hold));
    let c2 = recv(g2, &k.key, CONTROL);
    let mut t3_args = k.trusting(hold);
    t3_args.extend(["--channel", "beta"]);
    let t3 = recv(g3, &k.key, &t3_args);
    let c3 = recv(g3, &k.key, &["--format", "json", "--channel", "beta"]);
    let mut tap = Tap::new(g1, &k);
    let mut send = signed_send(g1, &k, &[]);
    let mut feed = Vec::new();
    for i in 0..N {
        write_stdin(&mut send, &format!("feed {i}\n"));
        let batch = tap.batch();
        check_batch(&batch, 3 * i, 1);
        feed.extend(batch);
    }
    let (status, _, err) = send.finish();
    assert!(status.success(), "{err:?}");
    let sender = feed[0].header.sender_id;
    let (manifests, frames): (Vec<Seen>, Vec<Seen>) =
        feed.iter().cloned().partition(Seen::is_manifest);

    // Verbatim on the same group: the manifests alone, then the frames.
    let tx1 = injector(g1);
    let bytes = |v: &[Seen]| v.iter().map(|s| s.bytes.clone()).collect::<Vec<_>>();
    tap.inject(&tx1, &bytes(&manifests));
    tap.inject(&tx1, &bytes(&frames));
    // Re-sealed, frames and manifests, under another sender ID.
    let other = random_sender();
    tap.inject(&tx1, &reseal(&ring, &feed, &common::channel(g1), other));
    // Re-sealed for another group, and for a --channel name, under the
    // signer's own sender ID and seqs.
    for d in reseal(&ring, &feed, &common::channel(g2), sender) {
        injector(g2).send(&d).unwrap();
    }
    for d in reseal(&ring, &feed, &beta, sender) {
        injector(g3).send(&d).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));

    let n = N;
    let (out, stats, _) = terminate(t1);
    assert_eq!(payloads(&out), feed_lines(0..N), "{stats}");
    assert_counts(
        &stats,
        &[
            ("frames_signed", n),
            ("manifests_verified", n),
            // The second copies, then the 2N replayed.
            ("manifest_duplicate", 3 * n),
            ("replayed", n),
            // Re-sealed under another sender ID.
            ("sig_bad", 2 * n),
            ("sig_unsigned", n),
        ],
    );
    let (out, stats, _) = terminate(c1);
    // The genuine feed, then the frames re-sealed under another sender ID.
    let mut twice = feed_lines(0..N);
    twice.extend(feed_lines(0..N));
    assert_eq!(payloads(&out), twice, "{stats}");
    for (t, c, what) in [(t2, c2, "another group"), (t3, c3, "a --channel name")] {
        let (out, stats, _) = terminate(t);
        assert_eq!(payloads(&out), Vec::<String>::new(), "{what}: {stats}");
        assert_counts(&stats, &[("sig_bad", 2 * n), ("sig_unsigned", n)]);
        let (out, stats, _) = terminate(c);
        assert_eq!(payloads(&out), feed_lines(0..N), "{what}: {stats}");
    }
    eprintln!(
        "{} genuine manifests replayed verbatim: {} manifest_duplicate; re-sealed under another \
         sender ID, for another group and for another channel: all sig_bad, their frames \
         sig_unsigned, while the control receivers delivered them",
        2 * N,
        2 * N
    );
}

/// 3. Manifests a member without the signing key can make, under the
///    signer's sender ID: the genuine hash list
///    truncated (to whole hashes: `sig_bad`; to a partial hash or none:
///    `sig_invalid`), hash lists of frames never sent (signed by an
///    untrusted key but claiming the trusted signer: `sig_bad`; under the
///    untrusted key's own ID: `sig_untrusted`), first_seq at the end of the
///    seq space (past it: `sig_invalid`; within it: `sig_bad`), a body cut
///    short (`bad_body`), an unknown variant (`unknown_body`), and the
///    genuine manifest again under a new header seq, as is and with a
///    signature bit flipped (`manifest_duplicate`: already verified).
///    The feed goes on whole and in order; the frames those manifests list
///    are never delivered, while the control receiver delivers them.
#[test]
fn forged_and_malformed_manifests() {
    const N: u64 = 6;
    let k = keys();
    let ring = k.ring();
    let group = "239.255.96.5:46605";
    let channel = common::channel(group);
    let trusting = recv(group, &k.key, &k.trusting("500ms"));
    let control = recv(group, &k.key, CONTROL);
    let mut tap = Tap::new(group, &k);
    let tx = injector(group);
    let mut send = signed_send(group, &k, &[]);
    // Three lines at once: one batch of three frames, seqs 0 to 2, its
    // manifest at 3 and 4.
    write_stdin(&mut send, "feed 0\nfeed 1\nfeed 2\n");
    let batch = tap.batch();
    let sender = check_batch(&batch, 0, 3);
    let Kind::Manifest {
        signer_id,
        first_seq,
        hashes,
        sig,
    } = batch[0].kind.clone()
    else {
        unreachable!()
    };
    assert_eq!(signer_id, k.signer_id());
    let trusted = signer_id;
    let rogue_id = k.rogue.id().0;
    // Seqs for the injected manifests' own headers: past the feed's, and
    // within the replay window of the control receiver (which commits
    // them) from the feed's next seqs.
    let mut seq = 100;
    let mut next_seq = || {
        seq += 1;
        seq
    };
    let manifest = |seq: u64, signer_id, first_seq, hashes: &[u8], sig: &[u8; 64]| {
        seal_as(
            &ring,
            &channel,
            sender,
            seq,
            &manifest_body(signer_id, first_seq, hashes, sig),
        )
    };
    let rogue_sig =
        |first_seq, hashes: &[u8]| sign_with(&k.rogue, &ring, &channel, sender, first_seq, hashes);

    // Frames never sent by the signer, at seqs ahead of the feed, and a
    // hash list for them.
    let never: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let text = format!("FORGED never signed {i}");
            seal_as(
                &ring,
                &channel,
                sender,
                200 + i,
                &Body::Data(text.as_bytes()),
            )
        })
        .collect();
    let never_hashes: Vec<u8> = never.iter().flat_map(|d| frame_hash(d)).collect();
    let mut flipped = sig;
    flipped[10] ^= 0x20;
    let random_hashes: Vec<u8> = (0..16 * 3).map(|_| rand_byte()).collect();
    let one_hash = &hashes[..16];
    // The genuine manifest's body without its last byte.
    let mut cut = vec![0u8; 2048];
    let len = manifest_body(trusted, first_seq, &hashes, &sig)
        .encode_into(&mut cut)
        .unwrap();
    cut.truncate(len - 1);
    let mut attacks: Vec<(&str, Vec<u8>)> = vec![
        // A manifest already verified is a duplicate before its signature
        // is looked at (PROTOCOL.md 3.5, step 3): it releases nothing new.
        (
            "manifest_duplicate",
            manifest(next_seq(), trusted, first_seq, &hashes, &flipped),
        ),
        (
            "sig_bad",
            manifest(next_seq(), trusted, first_seq, &hashes[..32], &sig),
        ),
        (
            "sig_invalid",
            manifest(next_seq(), trusted, first_seq, &hashes[..47], &sig),
        ),
        (
            "sig_invalid",
            manifest(next_seq(), trusted, first_seq, &[], &sig),
        ),
        (
            "sig_bad",
            manifest(
                next_seq(),
                trusted,
                200,
                &never_hashes,
                &rogue_sig(200, &never_hashes),
            ),
        ),
        (
            "sig_untrusted",
            manifest(
                next_seq(),
                rogue_id,
                200,
                &never_hashes,
                &rogue_sig(200, &never_hashes),
            ),
        ),
        // For the next genuine frame's seq, before it is sent.
        (
            "sig_bad",
            manifest(
                next_seq(),
                trusted,
                5,
                &random_hashes,
                &rogue_sig(5, &random_hashes),
            ),
        ),
        (
            "sig_invalid",
            manifest(
                next_seq(),
                trusted,
                u64::MAX - 1,
                &random_hashes,
                &rogue_sig(u64::MAX - 1, &random_hashes),
            ),
        ),
        (
            "sig_bad",
            manifest(
                next_seq(),
                trusted,
                u64::MAX,
                one_hash,
                &rogue_sig(u64::MAX, one_hash),
            ),
        ),
        (
            "sig_bad",
            manifest(
                next_seq(),
                trusted,
                u64::MAX - 2,
                &random_hashes,
                &rogue_sig(u64::MAX - 2, &random_hashes),
            ),
        ),
        (
            "bad_body",
            seal_plaintext(&ring, &channel, sender, next_seq(), &cut),
        ),
        (
            "unknown_body",
            seal_plaintext(&ring, &channel, sender, next_seq(), &[0x7f, 0x00]),
        ),
        (
            "manifest_duplicate",
            manifest(next_seq(), trusted, first_seq, &hashes, &sig),
        ),
    ];
    // The frames first, so that they wait for a manifest.
    tap.inject(&tx, &never);
    let datagrams: Vec<Vec<u8>> = attacks.iter().map(|(_, d)| d.clone()).collect();
    tap.inject(&tx, &datagrams);
    for i in 3..N {
        write_stdin(&mut send, &format!("feed {i}\n"));
        check_batch(&tap.batch(), 5 + 3 * (i - 3), 1);
    }
    let (status, _, err) = send.finish();
    assert!(status.success(), "{err:?}");
    std::thread::sleep(Duration::from_millis(1500));

    let (out, stats, _) = terminate(trusting);
    assert_eq!(payloads(&out), feed_lines(0..N), "{stats}");
    let count = |name: &str| attacks.iter().filter(|(n, _)| *n == name).count() as u64;
    let batches = 1 + N - 3;
    assert_counts(
        &stats,
        &[
            ("frames_signed", N),
            ("manifests_verified", batches),
            ("manifest_duplicate", batches + count("manifest_duplicate")),
            ("sig_bad", count("sig_bad")),
            ("sig_invalid", count("sig_invalid")),
            ("sig_untrusted", count("sig_untrusted")),
            ("bad_body", count("bad_body")),
            ("unknown_body", count("unknown_body")),
            // The frames never signed, held until their time ran out.
            ("sig_expired", never.len() as u64),
        ],
    );
    let (out, stats, _) = terminate(control);
    let mut want = feed_lines(0..3);
    want.extend((0..4).map(|i| format!("FORGED never signed {i}")));
    want.extend(feed_lines(3..N));
    assert_eq!(payloads(&out), want, "{stats}");
    attacks.retain(|(n, _)| !n.ends_with("_body"));
    assert_eq!(
        stats["manifests_ignored"],
        2 * batches + attacks.len() as u64,
        "{stats}"
    );
    eprintln!(
        "{} forged or malformed manifests under the signer's sender ID: each counted by cause, \
         the feed whole; control delivered the 4 frames they listed",
        datagrams.len()
    );
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 4. A flood of fresh sender IDs beside a signed feed: `flood` frames of
///    `size` bytes of payload, each under a new sender ID, and for every
///    eighth a plausible manifest listing the frame's hash, signed by an
///    untrusted key (under its own ID: `sig_untrusted`; claiming the
///    trusted one: `sig_bad`). The trusting receiver holds at most 4096
///    frames and 8 MiB and drops the oldest (`sig_hold_full`); the rest
///    expire unsigned. The feed arrives whole and in order; the receiver's
///    peak RSS grows by at most 14 MiB, where holding the whole flood
///    would take 21 MiB (small frames) or 35 MiB (large). Of the 14: the
///    hold's 8 MiB bound; about 3.6 MiB for the 4096 fresh senders every
///    table now tracks (replay windows of 256 bytes, loss and explain
///    entries; the small-frame flood, which holds only 5.4 MiB, grows by
///    9.0 MiB); what the allocator adds and slack. Measured with large
///    frames: 12.0-12.4 MiB. The control receiver delivers the flood.
fn flood_beside_a_signed_feed(group: &str, flood: u64, size: usize, max_datagram: &str) {
    const LINES: u64 = 60;
    let k = keys();
    let ring = k.ring();
    let channel = common::channel(group);
    let mut args = k.trusting("3s");
    args.extend(["--rcvbuf", "16M", "--max-datagram", max_datagram]);
    let trusting = recv(group, &k.key, &args);
    let control_args = [
        "--format",
        "json",
        "--rcvbuf",
        "16M",
        "--max-datagram",
        max_datagram,
    ];
    let control = recv(group, &k.key, &control_args);
    let pid = trusting.child.id();
    let tx = injector(group);
    let mut send = signed_send(group, &k, &[]);
    // The feed: a line every 25 ms, from its own thread, across the flood.
    write_stdin(&mut send, "feed 0\n");
    trusting.wait_out("feed 0");
    std::thread::sleep(Duration::from_millis(200));
    let before = peak_rss_kib(pid);
    let mut stdin = send.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 1..LINES {
            std::thread::sleep(Duration::from_millis(25));
            writeln!(stdin, "feed {i}").unwrap();
        }
    });
    let payload = vec![b'x'; size];
    let (mut untrusted, mut bad) = (0u64, 0u64);
    for i in 0..flood {
        let sender = random_sender();
        let frame = seal_as(&ring, &channel, sender, 0, &Body::Data(&payload));
        tx.send(&frame).unwrap();
        if i % 8 == 0 {
            let hash = frame_hash(&frame);
            let sig = sign_with(&k.rogue, &ring, &channel, sender, 0, &hash);
            let claimed = if i % 16 == 0 {
                untrusted += 1;
                k.rogue.id().0
            } else {
                bad += 1;
                k.signer_id()
            };
            let body = manifest_body(claimed, 0, &hash, &sig);
            tx.send(&seal_as(&ring, &channel, sender, 1, &body))
                .unwrap();
        }
        // Pace: the point is the receiver's memory, not overflowing the
        // kernel's queue (every datagram must reach mcsec to be counted).
        if i % 32 == 31 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    feeder.join().unwrap();
    let (status, _, err) = send.finish();
    assert!(status.success(), "{err:?}");
    let after = peak_rss_kib(pid);
    // The held flood's time (--sig-hold 3s) runs out.
    std::thread::sleep(Duration::from_millis(4000));

    let (out, stats, _) = terminate(trusting);
    let full = stats["sig_hold_full"].as_u64().unwrap();
    let unsigned = stats["sig_unsigned"].as_u64().unwrap();
    let grown = after.saturating_sub(before);
    eprintln!(
        "flood of {flood} fresh sender IDs, {size} bytes each ({untrusted} untrusted manifests, {bad} claiming the \
         trusted signer): {full} sig_hold_full, {unsigned} sig_unsigned; recv peak RSS {before} \
         KiB before, {after} KiB after (+{grown} KiB)"
    );
    // Held: at most 8 MiB counted as datagram bytes plus a fixed charge;
    // the senders' tables about 3.6 MiB; the allocator and slack the rest.
    assert!(grown <= 14 * 1024, "recv's peak RSS grew by {grown} KiB");
    // "feed 0" was read above.
    assert_eq!(payloads(&out), feed_lines(1..LINES), "{stats}");
    assert!(full > 0, "{stats}");
    assert_eq!(full + unsigned, flood, "{stats}");
    let signed_manifests = stats["manifests_verified"].as_u64().unwrap();
    assert!(signed_manifests >= 1, "{stats}");
    assert_counts(
        &stats,
        &[
            ("frames_signed", LINES),
            ("manifests_verified", signed_manifests),
            ("manifest_duplicate", signed_manifests),
            ("sig_untrusted", untrusted),
            ("sig_bad", bad),
            ("sig_hold_full", full),
            ("sig_unsigned", unsigned),
        ],
    );

    let (out, stats, _) = terminate(control);
    let flood_delivered = payloads(&out)
        .iter()
        .filter(|p| p.starts_with("xxx"))
        .count();
    // Until its sender table is full (4096): fresh senders cost it. What
    // the kernel dropped from its full socket buffer under load (CI once
    // dropped 532) was never opened; it is counted, not lost silently.
    let kernel_drops = stats["kernel_drops"].as_u64().unwrap() as usize;
    assert!(
        flood_delivered + kernel_drops >= 4000,
        "{flood_delivered} + {kernel_drops}: {stats}"
    );
}

/// Small frames: the bound of 4096 frames holds.
#[test]
fn a_flood_of_fresh_sender_ids_beside_a_signed_feed() {
    flood_beside_a_signed_feed("239.255.96.6:46606", 16_000, 1200, "1472");
}

/// Large frames: the bound of 8 MiB holds (about 1000 frames of 8 KiB).
#[test]
fn a_flood_of_large_frames_beside_a_signed_feed() {
    flood_beside_a_signed_feed("239.255.96.7:46607", 4_500, 8000, "9000");
}

/// `sent N messages in D datagrams` from `send -v`: D.
fn datagrams_sent(err: &[String]) -> u64 {
    let line = err
        .iter()
        .find(|l| l.contains(" datagrams ("))
        .unwrap_or_else(|| panic!("{err:?}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "datagrams").unwrap();
    words[at - 1].parse().unwrap()
}

/// A trusting receiver delivers nothing of a feed that is not signed
/// (`sig_unsigned`) or signed by a key it does not trust (`sig_untrusted`
/// for each manifest, `sig_unsigned` for the frames); a control receiver
/// delivers both.
#[test]
fn unsigned_and_untrusted_feeds_are_not_delivered() {
    const N: u64 = 5;
    let k = keys();
    let group = "239.255.96.8:46608";
    let trusting = recv(group, &k.key, &k.trusting("300ms"));
    let control = recv(group, &k.key, CONTROL);
    let base = ["send", "-v", "-g", group, "-i", "127.0.0.1", "-n", "5"];
    let mut plain = base.to_vec();
    plain.extend(["-m", "plain"]);
    let (status, _, err) = spawn(&plain, &k.key).finish();
    assert!(status.success(), "{err:?}");
    let mut rogue = base.to_vec();
    rogue.extend(["-m", "rogue", "--sign", path_str(&k.rogue_file)]);
    let (status, _, err) = spawn(&rogue, &k.key).finish();
    assert!(status.success(), "{err:?}");
    let manifests = datagrams_sent(&err) - N;
    assert!(manifests >= 2 && manifests.is_multiple_of(2), "{err:?}");
    std::thread::sleep(Duration::from_millis(1000));

    let (out, stats, _) = terminate(trusting);
    assert_eq!(payloads(&out), Vec::<String>::new(), "{stats}");
    assert_counts(
        &stats,
        &[("sig_unsigned", 2 * N), ("sig_untrusted", manifests)],
    );
    let (out, stats, _) = terminate(control);
    let mut want = vec!["plain".to_owned(); N as usize];
    want.extend(vec!["rogue".to_owned(); N as usize]);
    assert_eq!(payloads(&out), want, "{stats}");
    assert_counts(&stats, &[("manifests_ignored", manifests)]);
}

/// Runs mcsec with `args` and `-k key`; it must fail, print nothing on
/// stdout, and say each of `needles` on stderr.
fn fails_with(args: &[String], key: &Path, needles: &[&str]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, out, err) = spawn(&args, key).finish();
    assert!(!status.success(), "{args:?} succeeded");
    assert!(out.is_empty(), "{out:?}");
    let err = err.join("\n");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: no {needle:?} in {err}");
    }
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// A trust file others can write, a group key or a signing key given as a
/// trust file, and a signing key others can read or a group key given as
/// one: each refused before anything is sent or received, with a hint.
#[test]
fn trust_and_signing_key_files_are_checked_with_hints() {
    let k = keys();
    let group = "239.255.96.9:46609";
    let with_trust = |cmd: &str, trust: &Path| {
        let mut v = owned(&[cmd, "-g", group, "-i", "127.0.0.1", "--trust"]);
        v.push(path_str(trust).to_owned());
        if cmd == "chat" {
            v.extend(owned(&["--nick", "ana"]));
        }
        v
    };
    let set_mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    for mode in [0o666, 0o646, 0o664] {
        set_mode(&k.trust, mode);
        let shown = format!("mode {mode:04o}");
        let hint = format!("hint: chmod go-w {}", k.trust.display());
        for cmd in ["recv", "chat"] {
            fails_with(
                &with_trust(cmd, &k.trust),
                &k.key,
                &["trust file is writable by group or others", &shown, &hint],
            );
        }
    }
    set_mode(&k.trust, 0o644);
    let hint = "hint: a trust file holds lines printed by `mcsec signer public FILE`";
    for wrong in [&k.key, &k.signer] {
        for cmd in ["recv", "chat"] {
            fails_with(
                &with_trust(cmd, wrong),
                &k.key,
                &["not a `mcsec-signer-public-v1` line", hint],
            );
        }
    }

    let with_sign = |signer: &Path| {
        let mut v = owned(&["send", "-g", group, "-i", "127.0.0.1", "-m", "x", "--sign"]);
        v.push(path_str(signer).to_owned());
        v
    };
    set_mode(&k.signer, 0o640);
    let hint = format!(
        "hint: restrict it to its owner: chmod 600 {}",
        k.signer.display()
    );
    fails_with(&with_sign(&k.signer), &k.key, &["mode 0640", &hint]);
    set_mode(&k.signer, 0o600);
    fails_with(
        &with_sign(&k.key),
        &k.key,
        &["hint: a signing key file is made by `mcsec signer new -o FILE`"],
    );
}

/// `send --sign --raw` with messages larger than one datagram (fragments),
/// and `send --sign --file`: the trusting receiver delivers the messages
/// whole, saves the file with --save-dir, and names the signer in JSON.
#[test]
fn signed_raw_fragments_and_file() {
    let k = keys();
    let group = "239.255.96.10:46610";
    // Two 5000-byte messages, four or so fragments each.
    let text: String = (0..10_000u32)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let trusting = recv(group, &k.key, &k.trusting("2s"));
    let mut raw = signed_send(group, &k, &["--raw", "--chunk", "5000"]);
    write_stdin(&mut raw, &text);
    let (status, _, err) = raw.finish();
    assert!(status.success(), "{err:?}");
    assert!(datagrams_sent(&err) >= 8 + 2, "{err:?}");
    let (out, stats, _) = terminate(trusting);
    let messages = of_type(&out, "message");
    assert_eq!(messages.len(), 2, "{stats}");
    for (m, want) in messages.iter().zip([&text[..5000], &text[5000..]]) {
        assert_eq!(m["payload"], want);
        assert_eq!(m["signer"], "feed");
    }
    assert_eq!(stats["messages_reassembled"], 2, "{stats}");
    let frames = stats["frames_signed"].as_u64().unwrap();
    assert!(frames >= 8, "{stats}");
    assert_counts(
        &stats,
        &[
            ("frames_signed", frames),
            (
                "manifests_verified",
                stats["manifests_verified"].as_u64().unwrap(),
            ),
            (
                "manifest_duplicate",
                stats["manifests_verified"].as_u64().unwrap(),
            ),
        ],
    );

    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("in");
    std::fs::create_dir(&save).unwrap();
    let file = dir.path().join("report.txt");
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let mut args = k.trusting("2s");
    args.extend(["--save-dir", path_str(&save), "--count", "1"]);
    let trusting = recv(group, &k.key, &args);
    let (status, _, err) = signed_send(group, &k, &["--file", path_str(&file)]).finish();
    assert!(status.success(), "{err:?}");
    let (status, out, err) = trusting.finish();
    assert!(status.success(), "{err:?}");
    let files = of_type(&out, "file");
    assert_eq!(files.len(), 1, "{out:?}");
    assert_eq!(files[0]["signer"], "feed", "{out:?}");
    assert_eq!(files[0]["name"], "report.txt");
    let saved = save.join("report.txt");
    assert_eq!(files[0]["saved"], path_str(&saved));
    assert_eq!(std::fs::read(&saved).unwrap(), data);
}

/// Stdout lines up to and including the first that contains `needle`.
fn out_until(p: &Proc, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let end = Instant::now() + common::DEADLINE;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(line) = p.out.recv_timeout(left) else {
            break;
        };
        let done = line.contains(needle);
        seen.push(line);
        if done {
            return seen;
        }
    }
    panic!("no stdout line with {needle:?}: {seen:?}");
}

/// `chat --sign`: a peer that trusts the key shows the lines as
/// `signed:NAME`, one that does not as `unsigned`; the trusting peer drops
/// an unsigned member's lines.
#[test]
fn signed_chat_lines_show_their_signer() {
    let k = keys();
    let g = "239.255.96.11:46611";
    let chat = |nick: &'static str, extra: &[&str]| {
        let mut args = vec!["chat", "-v", "-g", g, "-i", "lo", "--nick", nick];
        args.extend_from_slice(extra);
        let p = spawn(&args, &k.key);
        p.wait_err("as sender");
        p
    };
    let mut alice = chat("alice", &["--sign", path_str(&k.signer)]);
    let bob = chat("bob", &["--trust", path_str(&k.trust)]);
    let mut carol = chat("carol", &[]);
    writeln!(alice.stdin.as_mut().unwrap(), "hello from alice").unwrap();
    let bob_saw = out_until(&bob, "hello from alice");
    let carol_saw = out_until(&carol, "hello from alice");
    let short = |line: &str| line.split('@').nth(1).unwrap()[..8].to_owned();
    let alice_id = short(&bob_saw[0]);
    assert_eq!(
        bob_saw,
        [format!("<alice@{alice_id} signed:feed> hello from alice")]
    );
    assert_eq!(
        carol_saw,
        [format!("<alice@{alice_id} unsigned> hello from alice")]
    );
    // An unsigned line: alice (who trusts nobody) shows it, bob drops it.
    writeln!(carol.stdin.as_mut().unwrap(), "from carol").unwrap();
    let alice_saw = out_until(&alice, "from carol");
    assert!(
        alice_saw[0].starts_with("<carol@") && alice_saw[0].ends_with(" unsigned> from carol"),
        "{alice_saw:?}"
    );
    writeln!(alice.stdin.as_mut().unwrap(), "second from alice").unwrap();
    let bob_saw = out_until(&bob, "second from alice");
    assert_eq!(
        bob_saw,
        [format!("<alice@{alice_id} signed:feed> second from alice")]
    );
    for p in [alice, bob, carol] {
        let (status, out, err) = p.finish();
        assert!(status.success(), "{err:?}");
        assert!(!out.iter().any(|l| l.contains("from carol")), "{out:?}");
    }
}

/// The next message a json receiver delivers within `timeout`, and when it
/// reached the test (µs since the epoch, the clock `send` stamps frames
/// with).
fn message_within(p: &Proc, timeout: Duration) -> Option<(serde_json::Value, u64)> {
    let end = Instant::now() + timeout;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(line) = p.out.recv_timeout(left) else {
            break;
        };
        let at = mcsec::now_us();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["type"] == "message" {
            return Some((v, at));
        }
    }
    None
}

fn next_message(p: &Proc) -> (serde_json::Value, u64) {
    message_within(p, common::DEADLINE).expect("a message")
}

/// A generous bound for a 10 ms --sign-interval on a loaded machine, and
/// well below the pauses the tests make.
const PROMPT_US: u64 = 1_000_000;

/// With --sign, `send --message --interval` signs and sends each message
/// within --sign-interval (10 ms), not with the next one: the timer fires
/// while send sleeps between messages.
#[test]
fn signed_messages_go_out_while_send_sleeps() {
    let k = keys();
    let group = "239.255.96.12:46612";
    let trusting = recv(group, &k.key, &k.trusting("2s"));
    let send = signed_send(
        group,
        &k,
        &["-m", "tick", "--interval", "100ms", "-n", "10"],
    );
    let mut last_seq = None;
    for _ in 0..10 {
        let (m, at) = next_message(&trusting);
        let lag = at.saturating_sub(m["timestamp_us"].as_u64().unwrap());
        assert!(lag < PROMPT_US, "a message waited {lag} µs: {m}");
        assert_eq!(m["signer"], "feed");
        let seq = m["seq"].as_u64().unwrap();
        assert!(last_seq.is_none_or(|last| seq > last), "{m}");
        last_seq = Some(seq);
    }
    assert!(send.finish().0.success());
    // Three seconds between two messages: the first must not wait for the
    // second.
    let send = signed_send(group, &k, &["-m", "tock", "--interval", "3s", "-n", "2"]);
    let (m, at) = next_message(&trusting);
    let lag = at.saturating_sub(m["timestamp_us"].as_u64().unwrap());
    assert!(lag < PROMPT_US, "the first message waited {lag} µs: {m}");
    let (m, _) = next_message(&trusting);
    assert_eq!(m["payload"], "tock");
    assert!(send.finish().0.success());
    let (_, stats, _) = terminate(trusting);
    assert_counts(
        &stats,
        &[
            ("frames_signed", 12),
            (
                "manifests_verified",
                stats["manifests_verified"].as_u64().unwrap(),
            ),
            (
                "manifest_duplicate",
                stats["manifests_verified"].as_u64().unwrap(),
            ),
        ],
    );
}

/// With --sign, a line read from stdin is signed and sent within
/// --sign-interval while send waits for the next one: after a whole line,
/// and when the pipe also holds the start of the next line.
#[test]
fn signed_lines_go_out_while_send_waits_on_stdin() {
    let k = keys();
    let group = "239.255.96.13:46613";
    let trusting = recv(group, &k.key, &k.trusting("2s"));
    let mut send = signed_send(group, &k, &[]);
    send.wait_err("as sender");
    const PAUSE: Duration = Duration::from_secs(3);
    for (write, arrives, rest) in [("one\n", "one", ""), ("two\nthr", "two", "ee\n")] {
        let written = mcsec::now_us();
        write_stdin(&mut send, write);
        let Some((m, at)) = message_within(&trusting, PAUSE - Duration::from_millis(500)) else {
            panic!("{arrives:?} waited for the next line");
        };
        assert_eq!(m["payload"], arrives);
        let lag = at.saturating_sub(written);
        assert!(lag < PROMPT_US, "{arrives:?} waited {lag} µs");
        // Nothing more for a while.
        std::thread::sleep(PAUSE);
        write_stdin(&mut send, rest);
    }
    let (status, _, err) = send.finish();
    assert!(status.success(), "{err:?}");
    let (out, stats, _) = terminate(trusting);
    assert_eq!(payloads(&out), ["three"], "{stats}");
    assert_eq!(stats["frames_signed"], 3, "{stats}");
}

/// --sign refuses a --max-datagram that cannot hold a manifest of one hash
/// at any seq (before, send failed when a batch closed: at once below 147
/// bytes, after about 5,500 messages at 148), and signs at the least size.
#[test]
fn signing_needs_datagrams_that_hold_a_manifest() {
    let k = keys();
    let group = "239.255.96.14:46614";
    // 81 is the least --max-datagram at all (less is refused before
    // --sign is looked at), still too small for a manifest.
    for size in ["81", "148", "157"] {
        let mut args = owned(&["send", "-g", group, "-i", "127.0.0.1", "-m", "x"]);
        args.extend(owned(&[
            "--max-datagram",
            size,
            "--sign",
            path_str(&k.signer),
        ]));
        fails_with(
            &args,
            &k.key,
            &[
                &format!("--max-datagram {size} is too small to sign"),
                "hint: raise --max-datagram to 158 or more",
            ],
        );
    }
    let trusting = recv(group, &k.key, &k.trusting("2s"));
    let sent = signed_send(
        group,
        &k,
        &["-m", "small", "-n", "3", "--max-datagram", "158"],
    );
    let (status, _, err) = sent.finish();
    assert!(status.success(), "{err:?}");
    let (out, stats, _) = terminate(trusting);
    assert_eq!(payloads(&out), ["small", "small", "small"], "{stats}");
}

/// A trust file of several `signer public --name` lines (cat a.pub b.pub):
/// the receiver trusts each key and names the one that signed each
/// message.
#[test]
fn a_trust_file_of_several_named_keys() {
    let k = keys();
    let group = "239.255.96.15:46615";
    let mut lines = String::new();
    for (file, name) in [(&k.signer, "ops@example.org"), (&k.rogue_file, "second")] {
        let out = run_ok(&["signer", "public", "--name", name, path_str(file)]);
        lines.push_str(std::str::from_utf8(&out.stdout).unwrap());
    }
    std::fs::write(&k.trust, lines).unwrap();
    let trusting = recv(group, &k.key, &k.trusting("2s"));
    for (file, text) in [(&k.signer, "from ops"), (&k.rogue_file, "from second")] {
        let args = ["send", "-g", group, "-i", "127.0.0.1", "-m", text, "--sign"];
        let mut args = owned(&args);
        args.push(path_str(file).to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, _, err) = spawn(&args, &k.key).finish();
        assert!(status.success(), "{err:?}");
    }
    let (out, stats, _) = terminate(trusting);
    let got: Vec<(String, String)> = of_type(&out, "message")
        .iter()
        .map(|m| (m["payload"].to_string(), m["signer"].to_string()))
        .collect();
    assert_eq!(
        got,
        [
            (r#""from ops""#.into(), r#""ops@example.org""#.into()),
            (r#""from second""#.into(), r#""second""#.into()),
        ],
        "{stats}"
    );
    assert_eq!(stats["manifests_verified"], 2, "{stats}");
}

/// Two keys in one trust file (signed chat): one trusted signer cannot
/// sign frames into another's sender session. Bob, trusted, seals frames
/// under Alice's sender ID at her next seqs and signs them with his own
/// key: the session belongs to Alice, whose manifest verified first, so
/// Bob's manifest is `sig_conflict`, his frames are held until Alice's
/// manifest for those seqs shows them forged, and Alice's next batch is still delivered, labelled hers. (Before the
/// binding, Bob's frames were delivered as his and Alice's then counted
/// `replayed`; a reviewer also completed a message of Alice's with a
/// fragment of Bob's.)
#[test]
fn a_trusted_signer_cannot_sign_into_another_signers_session() {
    use mcsec::signed::SignedSealer;
    use std::sync::Arc;
    let k = keys();
    let group = "239.255.96.16:46616";
    let channel = common::channel(group);
    let mut lines = String::new();
    for (file, name) in [(&k.signer, "alice"), (&k.rogue_file, "bob")] {
        let out = run_ok(&["signer", "public", "--name", name, path_str(file)]);
        lines.push_str(std::str::from_utf8(&out.stdout).unwrap());
    }
    std::fs::write(&k.trust, lines).unwrap();
    let trusting = recv(group, &k.key, &k.trusting("1s"));
    let ring = k.ring();
    let alice = Arc::new(SignerKey::load(&k.signer).unwrap());
    let sealer = Sealer::new(ring.sending_key(), &channel).unwrap();
    let alice_id = sealer.sender_id();
    let mut session = SignedSealer::new(sealer, alice, channel.clone(), 4, Duration::from_secs(60));
    let inject = injector(group);
    let send_batch = |session: &mut SignedSealer, texts: &[&str]| {
        for t in texts {
            session
                .seal_body(mcsec::now_us(), &Body::Data(t.as_bytes()))
                .unwrap();
        }
        let mut out = Vec::new();
        session
            .close_batch(mcsec::now_us(), &mut |d| {
                out.push(d.to_vec());
                Ok(())
            })
            .unwrap();
        for d in &out {
            inject.send(d).unwrap();
        }
    };
    // Alice's first batch: seqs 0..2, manifests at 2 and 3.
    send_batch(&mut session, &["a0", "a1"]);
    std::thread::sleep(Duration::from_millis(200));
    // Bob: frames at Alice's next seqs 4 and 5, and his manifest for them.
    let bob_frames: Vec<Vec<u8>> = (4..6u64)
        .map(|seq| seal_as(&ring, &channel, alice_id, seq, &Body::Data(b"bob was here")))
        .collect();
    let mut hashes = Vec::new();
    for f in &bob_frames {
        hashes.extend_from_slice(&frame_hash(f));
    }
    let sig = sign_with(&k.rogue, &ring, &channel, alice_id, 4, &hashes);
    let manifest = seal_as(
        &ring,
        &channel,
        alice_id,
        6,
        &manifest_body(k.rogue.id().0, 4, &hashes, &sig),
    );
    inject.send(&manifest).unwrap();
    for f in &bob_frames {
        inject.send(f).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    // Alice goes on: her next batch takes seqs 4 and 5 for real.
    send_batch(&mut session, &["a4", "a5"]);
    let (out, stats, _) = terminate(trusting);
    let got: Vec<(String, String)> = of_type(&out, "message")
        .iter()
        .map(|m| (m["payload"].to_string(), m["signer"].to_string()))
        .collect();
    let alice_said = |p: &str| (format!("\"{p}\""), "\"alice\"".to_owned());
    assert_eq!(
        got,
        [
            alice_said("a0"),
            alice_said("a1"),
            alice_said("a4"),
            alice_said("a5")
        ],
        "{stats}"
    );
    assert_eq!(stats["sig_conflict"], 1, "{stats}");
    // Held until Alice's manifest for seqs 4 and 5 came: not hers.
    assert_eq!(stats["sig_forged"], 2, "{stats}");
    assert_eq!(stats["manifests_verified"], 2, "{stats}");
    assert_eq!(stats["replayed"], 0, "{stats}");
}

/// Frames still held for a signature when the receiver stops are counted
/// (as `sig_unsigned` here), so the counters account for every frame.
#[test]
fn frames_held_at_exit_are_counted() {
    let k = keys();
    let group = "239.255.96.17:46617";
    let trusting = recv(group, &k.key, &k.trusting("60s"));
    let (status, _, err) = spawn(
        &[
            "send",
            "-g",
            group,
            "-i",
            "127.0.0.1",
            "-m",
            "unsigned",
            "-n",
            "3",
        ],
        &k.key,
    )
    .finish();
    assert!(status.success(), "{err:?}");
    let (out, stats, _) = terminate(trusting);
    assert!(payloads(&out).is_empty(), "{stats}");
    assert_eq!(stats["sig_unsigned"], 3, "{stats}");
}

/// Ctrl-C or SIGTERM while `send --sign` waits on stdin sends the open
/// batch before it exits: a line read is never lost to a long
/// --sign-interval.
#[test]
fn a_signed_send_stopped_while_waiting_sends_its_open_batch() {
    let k = keys();
    let group = "239.255.96.18:46618";
    let trusting = recv(group, &k.key, &k.trusting("2s"));
    let mut send = signed_send(group, &k, &["--sign-interval", "60s"]);
    send.wait_err("as sender");
    write_stdin(&mut send, "last words\n");
    std::thread::sleep(Duration::from_millis(500));
    common::signal(&send, "TERM");
    let (status, _, err) = send.finish();
    assert!(status.success(), "{err:?}");
    let (out, stats, _) = terminate(trusting);
    assert_eq!(payloads(&out), ["last words"], "{stats}");
}
