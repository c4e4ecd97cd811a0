//! Fuzz entry points. Each asserts an invariant, not only "no panic", and
//! runs both under cargo-fuzz (`fuzz/`) and, over the committed corpus, as
//! an ordinary test on stable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use crate::body::Body;
use crate::files::{EncodedSymbol, FileEncoder};
use crate::frame::{self, ChannelId, HEADER_LEN, SenderId};
use crate::keys::{GroupKey, GroupSecret, Keyring};
use crate::replay::{REPLAY_WINDOW_FRAMES, ReplayWindow};
use crate::seal::{Opener, OpenerConfig, Sealer};
use crate::transfer::stream::StreamEncoder;

/// The secret the `open` target's receiver holds. Seeds are sealed with it,
/// so mutations reach the AEAD.
pub const FUZZ_SECRET: [u8; 32] = [0x42; 32];

/// Header: whatever parses encodes back to the same 40 bytes.
pub fn frame_header(data: &[u8]) {
    if let Ok(header) = frame::peek_header(data) {
        assert_eq!(&header.encode()[..], &data[..HEADER_LEN]);
    }
    let mut copy = data.to_vec();
    if let Ok(parts) = frame::split_frame(&mut copy) {
        assert_eq!(parts.ciphertext.len() + frame::OVERHEAD, data.len());
    }
}

/// The channel the `open` target's receiver opens frames for.
pub fn fuzz_channel() -> ChannelId {
    ChannelId::group(std::net::SocketAddr::from(([239, 255, 0, 1], 5000)))
}

/// The sender whose genuine frame every `open` run starts with, so that
/// inputs reach the known-sender path (replay pre-check, cached subkey,
/// commit) as well as the new-sender one.
pub const FUZZ_SENDER: SenderId = SenderId([7; 16]);

/// The timestamp of that first genuine frame.
pub const FUZZ_NOW_US: u64 = 1_790_000_000_000_000;

/// Open: one receiver sees a genuine frame (seq 0 of [`FUZZ_SENDER`]), then
/// the input cut into datagrams (`len: u16 BE || bytes`, repeated; a short
/// last piece is one datagram), each opened at the clock of its own
/// timestamp so freshness passes. Invariants:
///
/// - a datagram is accepted only if it is exactly what a sealer holding the
///   key would produce for its header and plaintext on this channel (the
///   fuzzer may dig a genuine tag out of comparison tracing; that is not a
///   forgery);
/// - no (key, sender, seq) is accepted twice;
/// - the sender table holds exactly the senders of accepted frames;
/// - every datagram is counted once, as opened or as one reject.
pub fn open(data: &[u8]) {
    open_stats(data);
}

/// [`open`], returning the receiver's counters.
pub fn open_stats(data: &[u8]) -> crate::Stats {
    let key = GroupKey::new(GroupSecret::from_bytes(FUZZ_SECRET), None);
    let channel = fuzz_channel();
    let mut opener = Opener::new(
        Keyring::single(key.clone()),
        channel.clone(),
        OpenerConfig::default(),
    );
    let mut accepted = BTreeSet::new();
    let mut senders = BTreeSet::new();
    let mut first = fuzz_frame(&key, 0, b"first");
    let opened = opener
        .open(FUZZ_NOW_US, &mut first)
        .expect("the genuine first frame opens");
    accepted.insert((opened.header.sender_id, opened.header.seq));
    senders.insert(opened.header.sender_id);
    let mut count = 1u64;
    let mut rest = data;
    while !rest.is_empty() {
        let datagram = match rest.split_first_chunk::<2>() {
            Some((len, tail)) => {
                let (datagram, tail) =
                    tail.split_at(usize::from(u16::from_be_bytes(*len)).min(tail.len()));
                rest = tail;
                datagram
            }
            None => std::mem::take(&mut rest),
        };
        count += 1;
        let now = frame::peek_header(datagram).map_or(FUZZ_NOW_US, |h| h.timestamp_us);
        let mut copy = datagram.to_vec();
        if let Ok(opened) = opener.open(now, &mut copy) {
            let h = opened.header;
            let mut sealer = Sealer::with_sender_id(&key, &channel, h.sender_id, h.seq);
            sealer.set_max_datagram(usize::MAX);
            let mut resealed = vec![0u8; datagram.len()];
            let n = sealer
                .seal(h.timestamp_us, opened.plaintext, &mut resealed)
                .expect("an opened frame reseals");
            assert_eq!(
                &resealed[..n],
                datagram,
                "accepted a frame the key did not seal"
            );
            assert!(
                accepted.insert((h.sender_id, h.seq)),
                "accepted seq {} of {} twice",
                h.seq,
                h.sender_id
            );
            senders.insert(h.sender_id);
        }
        assert_eq!(opener.sender_count(), senders.len());
        assert_eq!(
            opener.stats().opened + opener.stats().total_rejected(),
            count
        );
    }
    *opener.stats()
}

/// A genuine frame of [`FUZZ_SENDER`] at seq `seq`, stamped [`FUZZ_NOW_US`]
/// + `seq` µs, sealed for [`fuzz_channel`].
pub fn fuzz_frame(key: &GroupKey, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut sealer = Sealer::with_sender_id(key, &fuzz_channel(), FUZZ_SENDER, seq);
    let mut buf = vec![0u8; 2048];
    let n = sealer
        .seal_body(FUZZ_NOW_US + seq, &Body::Data(payload), &mut buf)
        .expect("a short payload fits");
    buf.truncate(n);
    buf
}

/// Replay window: agrees with a set model on any sequence of seqs. Each
/// 9-byte chunk is an op: a mode byte and a u64, so inputs mix small steps
/// around the newest seq with arbitrary jumps.
pub fn replay_window(data: &[u8]) {
    let mut window = ReplayWindow::new();
    let mut seen = BTreeSet::new();
    for chunk in data.chunks_exact(9) {
        let Some((mode, value)) = chunk.split_first() else {
            continue;
        };
        let Ok(value) = <[u8; 8]>::try_from(value) else {
            continue;
        };
        let value = u64::from_be_bytes(value);
        let newest = window.newest().unwrap_or(0);
        let seq = match mode % 3 {
            0 => newest.wrapping_add(value % 4096).wrapping_sub(2048),
            1 => value,
            _ => u64::MAX - value % 4096,
        };
        let model_accepts = match seen.last() {
            Some(&top) if seq <= top && top - seq >= REPLAY_WINDOW_FRAMES => false,
            _ => !seen.contains(&seq),
        };
        let accepted = window.check(seq).is_ok();
        assert_eq!(accepted, model_accepts, "seq {seq}");
        if accepted {
            window.commit(seq);
            seen.insert(seq);
        }
    }
}

/// Key file parser: never panics; what it accepts round-trips; its errors
/// carry no secret material.
pub fn key_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Keyring::parse(text) {
        Ok(ring) => {
            // Every key writes back to a line that reads as the same key:
            // ID, secret and created stamp, byte for byte.
            for key in ring.iter() {
                let line = key.to_line();
                let again = Keyring::parse(&line).expect("a written line parses");
                let again = again.sending_key();
                assert_eq!(again.id(), key.id());
                assert_eq!(again.secret().expose_bytes(), key.secret().expose_bytes());
                assert_eq!(again.created(), key.created());
                assert_eq!(again.created_text(), key.created_text());
                assert_eq!(*again.to_line(), *line);
            }
            // The grammar has no whitespace outside comments: a keyring
            // parses only if every key line is exactly as written.
            let key_lines = text
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .filter(|l| !l.is_empty() && !l.starts_with('#'));
            for (line, key) in key_lines.zip(ring.iter()) {
                assert_eq!(line, &**key.to_line());
            }
        }
        Err(err) => {
            // Errors are built from fixed words, a line number and a key ID
            // (8 hex digits): never a run of hex long enough to be a secret
            // or a piece of one, whatever the input holds.
            let shown = format!("{err} {err:?}");
            let mut run = 0;
            for c in shown.chars() {
                run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
                assert!(run < 16, "error shows a long hex run: {shown}");
            }
        }
    }
}

/// Body decoder: never panics; a decoded body re-encodes to exactly the
/// bytes it came from (one encoding per body).
pub fn body(data: &[u8]) {
    if let Ok(body) = Body::decode(data) {
        let mut out = vec![0u8; body.encoded_len()];
        let n = body.encode_into(&mut out).expect("encoded_len is enough");
        assert_eq!(&out[..n], data);
    }
}

/// Fragment reassembly: whatever fragments arrive, in whatever order and
/// timing, memory held stays under the cap, every message delivered has the
/// length its fragments announced, and everything is released once the
/// timeout passes. (Byte-exact content is checked by the unit tests, which
/// know the pieces' intended offsets.) Each 8-byte chunk is one
/// fragment: sender, msg_id, index, count, total_len (2 bytes), piece
/// length, time step.
pub fn reassembly(data: &[u8]) {
    use crate::reassembly::{Reassembler, ReassemblyConfig};
    let config = ReassemblyConfig {
        max_message: 4096,
        max_total: 16 * 1024,
        ..ReassemblyConfig::default()
    };
    let max_total = config.max_total;
    let timeout_us = u64::try_from(config.timeout.as_micros()).unwrap_or(u64::MAX);
    let mut r = Reassembler::new(config);
    let mut now = 1_000_000u64;
    for op in data.chunks_exact(8) {
        let [
            sender,
            msg_id,
            index,
            count,
            len_hi,
            len_lo,
            piece_len,
            step,
        ] = op
        else {
            continue;
        };
        let total_len = u32::from(u16::from_be_bytes([*len_hi, *len_lo]));
        now += u64::from(*step) * 50_000;
        // Piece bytes are a function of (msg_id, absolute offset), so a
        // message put together from the right pieces has a known content.
        let piece = usize::from(*piece_len);
        let offset = usize::from(*index) * piece;
        let bytes: Vec<u8> = (0..piece).map(|i| pattern(*msg_id, offset + i)).collect();
        let result = r.push(
            now,
            crate::Origin {
                key_id: crate::KeyId(u32::from(*sender / 4 % 2)),
                sender_id: crate::SenderId([*sender % 4; 16]),
            },
            u32::from(*msg_id),
            u32::from(*index),
            u32::from(*count),
            total_len,
            &bytes,
        );
        assert!(r.held_bytes() <= max_total, "held {} > cap", r.held_bytes());
        if let Ok(Some(message)) = result {
            assert_eq!(message.len() as u64, u64::from(total_len));
            // Its first byte is the first byte of fragment 0 of this
            // message (which the harness made from the pattern at offset 0).
            if let Some(first) = message.first() {
                assert_eq!(*first, pattern(*msg_id, 0));
            }
        }
    }
    r.expire(now + timeout_us + 1);
    assert_eq!(r.pending(), 0);
    assert_eq!(r.held_bytes(), 0);
}

fn pattern(msg_id: u8, offset: usize) -> u8 {
    (offset as u8) ^ msg_id.rotate_left(3)
}

/// Two real files the `file_symbols` target can send genuine symbols of:
/// 64-byte symbols, at most 8 to a block, so a few symbols complete a
/// block and the decoder is reached often. Each with the symbols of its
/// first two carousel passes.
fn fuzz_files() -> &'static [(FileEncoder, Vec<EncodedSymbol>); 2] {
    static FILES: OnceLock<[(FileEncoder, Vec<EncodedSymbol>); 2]> = OnceLock::new();
    FILES.get_or_init(|| {
        let make = |id: u32, len: usize, name: &str| {
            let data: Vec<u8> = (0..len).map(|i| pattern(id as u8, i)).collect();
            let plaintext = crate::body::FILE_SYMBOL_MAX_OVERHEAD + name.len() + 64;
            let enc = FileEncoder::with_block_limit(id, name, &data, plaintext, 1 << 20, 8)
                .expect("a small file encodes");
            let symbols = enc.pass(0, 25).chain(enc.pass(1, 25)).collect();
            (enc, symbols)
        };
        [make(1, 1000, "a.txt"), make(2, 200, "")]
    })
}

/// File symbols: whatever symbols arrive (genuine, genuine with one field
/// changed, or made up), from whichever senders, with whatever clock
/// steps, the memory charged never exceeds the budget, every file
/// delivered matches its SHA-256 (and, when it claims a real file's hash,
/// is that file), and everything is released once the timeout passes.
/// Each 12-byte chunk is one op: kind, sender, file, symbol index (2
/// bytes), time step, then six bytes of field values.
pub fn file_symbols(data: &[u8]) {
    use crate::body::FileSymbol;
    use crate::files::{FileConfig, FileReceiver};
    use sha2::{Digest, Sha256};

    let config = FileConfig {
        max_file: 4096,
        max_total: 24 * 1024,
        ..FileConfig::default()
    };
    let max_total = config.max_total;
    let timeout_us = u64::try_from(config.timeout.as_micros()).unwrap_or(u64::MAX);
    let files = fuzz_files();
    let mut r = FileReceiver::new(config);
    let mut now = 1_000_000u64;
    let junk = [0x5au8; 600];
    for op in data.chunks_exact(12) {
        let [kind, sender, file, hi, lo, step, v @ ..] = op else {
            continue;
        };
        let Ok(v) = <[u8; 6]>::try_from(v) else {
            continue;
        };
        now = now.saturating_add(u64::from(*step) * 100_000);
        let (enc, symbols) = &files[usize::from(*file % 2)];
        let index = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(genuine) = symbols.get(index % symbols.len().max(1)) else {
            continue;
        };
        let crate::Body::FileSymbol(real) = enc.body(genuine) else {
            continue;
        };
        let sym = match kind % 4 {
            0 => real,
            1 => match v[0] % 8 {
                0 => FileSymbol {
                    file_len: u64::from(u32::from_be_bytes([v[1], v[2], v[3], v[4]])),
                    ..real
                },
                1 => FileSymbol {
                    symbol_size: u16::from_be_bytes([v[1], v[2]]),
                    ..real
                },
                2 => FileSymbol {
                    source_blocks: v[1],
                    sbn: v[2],
                    ..real
                },
                3 => FileSymbol {
                    esi: u32::from_be_bytes([0, v[1], v[2], v[3]]) << (v[4] % 9),
                    ..real
                },
                4 => FileSymbol {
                    sha256: [v[1]; 32],
                    ..real
                },
                5 => FileSymbol {
                    file_id: u32::from(v[1]),
                    ..real
                },
                6 => FileSymbol {
                    name: if v[1] % 2 == 0 { "" } else { "b" },
                    ..real
                },
                _ => FileSymbol {
                    symbol: junk.get(..real.symbol.len()).unwrap_or_default(),
                    ..real
                },
            },
            2 => {
                let symbol_size = u16::from(v[1]) * 4 + u16::from(v[0] % 4);
                let len = if v[5] % 8 == 0 {
                    usize::from(v[5])
                } else {
                    usize::from(symbol_size)
                };
                FileSymbol {
                    file_id: u32::from(v[0] % 4),
                    file_len: u64::from(u16::from_be_bytes([v[2], v[3]])) << (v[4] % 8),
                    symbol_size,
                    source_blocks: v[4] % 5,
                    sbn: v[5] % 4,
                    esi: u32::from(v[3]),
                    sha256: [v[0]; 32],
                    name: "",
                    symbol: junk.get(..len).unwrap_or(&junk),
                }
            }
            _ => {
                // A long pause: partials may time out.
                now = now.saturating_add(u64::from(v[0]) * 1_000_000);
                real
            }
        };
        let origin = crate::Origin {
            key_id: crate::KeyId(u32::from(*sender / 3 % 2)),
            sender_id: crate::SenderId([*sender % 3; 16]),
        };
        let result = r.push(now, origin, &sym);
        assert!(r.held_bytes() <= max_total, "held {} > cap", r.held_bytes());
        if let Ok(Some(file)) = result {
            let digest: [u8; 32] = Sha256::digest(&file.data).into();
            assert_eq!(digest, file.sha256, "delivered a file that fails its hash");
            assert!(file.data.len() <= 4096);
            for (enc, _) in files {
                if enc.sha256() == file.sha256 {
                    assert_eq!(file.data.len() as u64, enc.file_len());
                }
            }
        }
    }
    r.expire(now.saturating_add(timeout_us).saturating_add(1));
    assert_eq!(r.pending(), 0);
    assert_eq!(r.held_bytes(), 0);
}

/// Two real files the `stream_symbols` target sends genuine variant-5
/// symbols of: 1000 bytes in 60-byte symbols, 4 to a block (5 blocks),
/// and 100 bytes (one block), each with its first two passes.
#[allow(clippy::type_complexity)]
fn fuzz_streams() -> &'static [(StreamEncoder, Vec<(u64, u32, Vec<u8>)>, Vec<u8>); 2] {
    static FILES: OnceLock<[(StreamEncoder, Vec<(u64, u32, Vec<u8>)>, Vec<u8>); 2]> =
        OnceLock::new();
    FILES.get_or_init(|| {
        let make = |id: u32, len: usize, path: &str| {
            let data: Vec<u8> = (0..len).map(|i| pattern(id as u8, i)).collect();
            let sha: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&data).into();
            let plaintext = crate::body::STREAM_SYMBOL_MAX_OVERHEAD + path.len() + 60;
            let enc = StreamEncoder::with_block_symbols(id, path, len as u64, sha, plaintext, 4)
                .expect("a small file encodes");
            let l = *enc.layout();
            let mut symbols = Vec::new();
            for pass in 0..2 {
                for b in 0..l.blocks() {
                    let start = l.block_offset(b) as usize;
                    let end = start + l.block_data_len(b) as usize;
                    let block = enc
                        .encode_block(
                            b,
                            data.get(start..end).unwrap_or_default().to_vec(),
                            pass,
                            50,
                        )
                        .expect("a block encodes");
                    for i in 0..block.len() {
                        if let Some((esi, bytes)) = block.symbol(i) {
                            symbols.push((b, esi, bytes.to_vec()));
                        }
                    }
                }
            }
            (enc, symbols, data)
        };
        [make(1, 1000, "d/a.txt"), make(2, 100, "")]
    })
}

/// Stream symbols (variant 5) into a [`StreamReceiver`] with an in-memory
/// store, jobs run at once or failed on purpose: whatever arrives, the
/// memory charged never exceeds the cap, every file delivered matches its
/// SHA-256 (and, when it claims a real file's hash, is that file), and
/// everything is released once the timeout passes. Each 12-byte chunk is
/// one op: kind, sender, file, symbol index (2 bytes), time step, then six
/// bytes of field values.
pub fn stream_symbols(data: &[u8]) {
    use crate::body::StreamSymbol;
    use crate::transfer::stream::{Decoded, Job, StreamConfig, StreamReceiver};
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;

    let config = StreamConfig {
        max_file: 4096,
        max_held: 16 * 1024,
        max_files: 4,
        ..StreamConfig::default()
    };
    let max_held = config.max_held;
    let timeout_us = u64::try_from(config.timeout.as_micros()).unwrap_or(u64::MAX);
    let files = fuzz_streams();
    let mut r = StreamReceiver::new(config);
    let mut store: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut now = 1_000_000u64;
    let junk = [0x5au8; 600];
    for op in data.chunks_exact(12) {
        let [kind, sender, file, hi, lo, step, v @ ..] = op else {
            continue;
        };
        let Ok(v) = <[u8; 6]>::try_from(v) else {
            continue;
        };
        now = now.saturating_add(u64::from(*step) * 100_000);
        let (enc, symbols, _) = &files[usize::from(*file % 2)];
        let index = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some((block, esi, bytes)) = symbols.get(index % symbols.len().max(1)) else {
            continue;
        };
        let crate::Body::StreamSymbol(real) = enc.body(*block, *esi, bytes) else {
            continue;
        };
        let sym = match kind % 4 {
            0 | 3 => real,
            1 => match v[0] % 8 {
                0 => StreamSymbol {
                    file_len: u64::from(u32::from_be_bytes([v[1], v[2], v[3], v[4]])),
                    ..real
                },
                1 => StreamSymbol {
                    symbol_size: u16::from_be_bytes([v[1], v[2]]),
                    ..real
                },
                2 => StreamSymbol {
                    block_symbols: u32::from(v[1]),
                    block: u64::from(v[2]) << (v[3] % 64),
                    ..real
                },
                3 => StreamSymbol {
                    esi: u32::from_be_bytes([0, v[1], v[2], v[3]]) << (v[4] % 9),
                    ..real
                },
                4 => StreamSymbol {
                    sha256: [v[1]; 32],
                    ..real
                },
                5 => StreamSymbol {
                    file_id: u32::from(v[1]),
                    ..real
                },
                6 => StreamSymbol {
                    path: ["", "b", "..", "a/../b", "./x"][usize::from(v[1] % 5)],
                    ..real
                },
                _ => StreamSymbol {
                    symbol: junk.get(..real.symbol.len()).unwrap_or_default(),
                    ..real
                },
            },
            _ => {
                let symbol_size = u16::from(v[1] % 64) + 1;
                let len = if v[5] % 8 == 0 {
                    usize::from(v[5])
                } else {
                    usize::from(symbol_size)
                };
                StreamSymbol {
                    file_id: u32::from(v[0] % 4),
                    file_len: u64::from(u16::from_be_bytes([v[2], v[3]])) << (v[4] % 8),
                    symbol_size,
                    block_symbols: u32::from(v[4] % 9),
                    block: u64::from(v[5] % 4),
                    esi: u32::from(v[3]),
                    sha256: [v[0]; 32],
                    path: "",
                    symbol: junk.get(..len).unwrap_or(&junk),
                }
            }
        };
        let origin = crate::Origin {
            key_id: crate::KeyId(u32::from(*sender / 3 % 2)),
            sender_id: crate::SenderId([*sender % 3; 16]),
        };
        let result = r.push(now, origin, &sym);
        for (handle, _) in r.take_dropped() {
            store.remove(&handle);
        }
        assert!(r.held_bytes() <= max_held, "held {} > cap", r.held_bytes());
        let Ok(step) = result else { continue };
        if let Some(new) = step.new_file {
            assert!(new.layout.file_len() <= 4096);
            store.insert(new.handle, vec![0; new.layout.file_len() as usize]);
        }
        if let Some(w) = step.write {
            let f = store.get_mut(&w.handle).expect("storage for a write");
            let dest = f
                .get_mut(w.offset as usize..w.offset as usize + w.len)
                .expect("a write inside the file");
            dest.copy_from_slice(sym.symbol.get(..w.len).expect("a write within the symbol"));
        }
        let mut job = step.job;
        // Kind 3 fails its decode on purpose: the repairs come back.
        let fail = kind % 4 == 3;
        while let Some(j) = job.take() {
            job = match j {
                Job::Decode(d) => {
                    let handle = d.handle();
                    let Some(f) = store.get(&handle) else {
                        continue;
                    };
                    let f = f.clone();
                    match d.run(|offset, buf| {
                        let src = f
                            .get(offset as usize..offset as usize + buf.len())
                            .ok_or_else(|| std::io::Error::other("outside"))?;
                        buf.copy_from_slice(src);
                        Ok(())
                    }) {
                        Decoded::Block {
                            block,
                            offset,
                            data,
                            ..
                        } if !fail => {
                            let f = store.get_mut(&handle).expect("storage");
                            f.get_mut(offset as usize..offset as usize + data.len())
                                .expect("a block inside the file")
                                .copy_from_slice(&data);
                            r.decoded(handle, block, true, Vec::new())
                        }
                        Decoded::Failed { block, repairs, .. } => {
                            r.decoded(handle, block, false, repairs)
                        }
                        Decoded::Block { block, .. } => r.decoded(handle, block, false, Vec::new()),
                    }
                }
                Job::Verify(v) => {
                    let Some(f) = store.get(&v.handle) else {
                        continue;
                    };
                    let digest: [u8; 32] = Sha256::digest(f).into();
                    let ok = digest == v.sha256 && f.len() as u64 == v.file_len;
                    if let Some(done) = r.verified(v.handle, ok) {
                        let data = store.remove(&done.handle).expect("storage");
                        let digest: [u8; 32] = Sha256::digest(&data).into();
                        assert_eq!(digest, done.sha256, "delivered a file that fails its hash");
                        for (enc, _, real) in files {
                            if enc.sha256() == done.sha256 {
                                assert_eq!(&data, real);
                            }
                        }
                    }
                    None
                }
            };
        }
        for (handle, _) in r.take_dropped() {
            store.remove(&handle);
        }
        assert!(r.held_bytes() <= max_held, "held {} > cap", r.held_bytes());
    }
    r.expire(now.saturating_add(timeout_us).saturating_add(1));
    assert_eq!(r.pending(), 0);
    assert_eq!(r.held_bytes(), 0);
}

/// The signer of the `manifest` target's genuine feed.
pub const FUZZ_SIGNER_SEED: [u8; 32] = [0x24; 32];

/// The genuine signed sender's session in the `manifest` target.
pub const FUZZ_SIGNED_SENDER: SenderId = SenderId([0x5e; 16]);

/// A second group key the `manifest` target's receiver also holds, so
/// inputs can re-seal the genuine feed under another key of the keyring.
pub const FUZZ_SECOND_SECRET: [u8; 32] = [0x43; 32];

/// The `manifest` target's receiver holds at most this many frames...
pub const FUZZ_MAX_HELD: usize = 4;
/// ... and at most this many bytes (a frame is charged its length + 160):
/// five short frames fit, four of the longest a member makes do not, so
/// either bound can be the one that binds.
pub const FUZZ_MAX_HELD_BYTES: usize = 1200;
/// ... for at most this long (µs).
pub const FUZZ_HOLD_US: u64 = 100_000;

/// The genuine feed: two batches of four Data frames by
/// [`FUZZ_SIGNED_SENDER`], each `[manifest, frames.., manifest]`.
struct SignedFeed {
    /// Every datagram the signer sent, in sending order.
    datagrams: Vec<Vec<u8>>,
    /// Each frame the signer sealed (manifests aside): its header and
    /// plaintext, by seq.
    frames: BTreeMap<u64, (frame::Header, Vec<u8>)>,
    /// The two manifests' plaintexts.
    manifests: [Vec<u8>; 2],
    /// The signer's ID.
    signer_id: [u8; 8],
}

fn signed_feed() -> &'static SignedFeed {
    use crate::signed::{SignedSealer, SignerKey};
    static FEED: OnceLock<SignedFeed> = OnceLock::new();
    FEED.get_or_init(|| {
        let key = GroupKey::new(GroupSecret::from_bytes(FUZZ_SECRET), None);
        let signer = SignerKey::from_seed(&FUZZ_SIGNER_SEED);
        let signer_id = signer.id().0;
        let mut signed = SignedSealer::new(
            Sealer::with_sender_id(&key, &fuzz_channel(), FUZZ_SIGNED_SENDER, 0),
            std::sync::Arc::new(signer),
            fuzz_channel(),
            4,
            std::time::Duration::from_millis(10),
        );
        let mut datagrams = Vec::new();
        for batch in 0..2u64 {
            for i in 0..4u64 {
                let text = format!("signed {}", batch * 6 + i);
                signed
                    .seal_body(FUZZ_NOW_US, &Body::Data(text.as_bytes()))
                    .expect("a short body seals");
            }
            signed
                .close_batch(FUZZ_NOW_US, &mut |d| {
                    datagrams.push(d.to_vec());
                    Ok(())
                })
                .expect("the batch closes");
        }
        let mut opener = Opener::new(
            Keyring::single(key),
            fuzz_channel(),
            OpenerConfig::default(),
        );
        let mut frames = BTreeMap::new();
        let mut manifests = Vec::new();
        for datagram in &datagrams {
            let mut copy = datagram.clone();
            let opened = opener
                .open(FUZZ_NOW_US, &mut copy)
                .expect("the genuine feed opens");
            match Body::decode(opened.plaintext) {
                Ok(Body::Manifest(_)) => manifests.push(opened.plaintext.to_vec()),
                _ => {
                    frames.insert(
                        opened.header.seq,
                        (opened.header, opened.plaintext.to_vec()),
                    );
                }
            }
        }
        // Each manifest was sent twice: keep one of each.
        manifests.dedup();
        let manifests: [Vec<u8>; 2] = manifests.try_into().expect("two batches");
        SignedFeed {
            datagrams,
            frames,
            manifests,
            signer_id,
        }
    })
}

/// What one run of the `manifest` target saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestRun {
    /// The verifier's counters.
    pub stats: crate::signed::SignedStats,
    /// The core's counters.
    pub core: crate::Stats,
}

/// Signed senders: a trusting receiver (an [`Opener`] holding
/// [`FUZZ_SECRET`] and [`FUZZ_SECOND_SECRET`], a `Verifier` trusting
/// [`FUZZ_SIGNER_SEED`]) gets the genuine feed's datagrams in any order,
/// any number of times, damaged, mixed with frames and manifests that a
/// member holding the group keys but not the signing key makes from the
/// input, while the clock moves (and sometimes steps back). Each 4-byte
/// chunk is an op: kind, then three argument bytes (kind 5 also takes
/// further input bytes as a plaintext). Invariants:
///
/// - every frame delivered is one the signer sealed, byte for byte (its
///   header and plaintext), under the signer's index, and none twice;
///   the frames one manifest releases go in seq order;
/// - only delivered frames are committed: the core's `opened` equals the
///   frames delivered, and the sender table holds the signer's session at
///   most;
/// - `held() <= FUZZ_MAX_HELD` and `held_bytes() <= FUZZ_MAX_HELD_BYTES`
///   after every datagram, and nothing is held once the hold has passed.
pub fn manifest(data: &[u8]) {
    manifest_run(data);
}

/// [`manifest`], returning the counters.
pub fn manifest_run(data: &[u8]) -> ManifestRun {
    use crate::signed::{SignerKey, TrustList, Trusted, Verifier, VerifierConfig};
    let feed = signed_feed();
    let key = GroupKey::new(GroupSecret::from_bytes(FUZZ_SECRET), None);
    let second = GroupKey::new(GroupSecret::from_bytes(FUZZ_SECOND_SECRET), None);
    let keyring =
        Keyring::parse(&format!("{}\n{}\n", *key.to_line(), *second.to_line())).expect("two keys");
    let mut opener = Opener::new(keyring, fuzz_channel(), OpenerConfig::default());
    let signer = SignerKey::from_seed(&FUZZ_SIGNER_SEED);
    let trusted = Trusted::new(&signer.public(), None).expect("a public key");
    let mut verifier = Verifier::new(
        TrustList::new(vec![trusted]),
        VerifierConfig {
            hold: std::time::Duration::from_micros(FUZZ_HOLD_US),
            max_held: FUZZ_MAX_HELD,
            max_held_bytes: FUZZ_MAX_HELD_BYTES,
            ..VerifierConfig::default()
        },
    );
    let elsewhere = ChannelId::named("elsewhere").expect("a name");
    let filler = [b'm'; 127];
    let mut now = FUZZ_NOW_US;
    let mut latest = now;
    let mut delivered = BTreeSet::new();
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((op, tail)) = rest.split_first_chunk::<4>() {
        rest = tail;
        let [kind, a, b, c] = *op;
        let pool = &feed.datagrams;
        let pick = |i: u8| {
            pool.get(usize::from(i) % pool.len())
                .cloned()
                .unwrap_or_default()
        };
        let datagram = match kind % 8 {
            // A genuine datagram, as sent.
            0 | 1 => pick(a),
            // One with a bit flipped.
            2 => {
                let mut d = pick(a);
                let at = usize::from(b) % d.len().max(1);
                if let Some(byte) = d.get_mut(at) {
                    *byte ^= 1 << (c % 8);
                }
                d
            }
            // One cut short.
            3 => {
                let mut d = pick(a);
                d.truncate(usize::from(b));
                d
            }
            // A member's Data frame of 0 to 126 bytes.
            4 => {
                let body = Body::Data(filler.get(..usize::from(c / 2)).unwrap_or_default());
                let mut plaintext = vec![0u8; body.encoded_len()];
                if body.encode_into(&mut plaintext).is_err() {
                    continue;
                }
                member_frame(&key, &fuzz_channel(), a, b, c, now, &plaintext)
            }
            // A member seals a plaintext: a genuine manifest or frame's, or
            // input bytes; under either key, on this channel or another.
            5 => {
                let plaintext: Vec<u8> = match c % 4 {
                    0 => feed.manifests[usize::from(b % 2)].clone(),
                    1 => feed
                        .frames
                        .values()
                        .nth(usize::from(b) % feed.frames.len())
                        .map(|(_, p)| p.clone())
                        .unwrap_or_default(),
                    _ => {
                        let len = usize::from(c / 4).min(rest.len());
                        let (bytes, tail) = rest.split_at(len);
                        rest = tail;
                        bytes.to_vec()
                    }
                };
                let group = if a & 0x20 == 0 { &key } else { &second };
                let channel = if a & 0x40 == 0 {
                    fuzz_channel()
                } else {
                    elsewhere.clone()
                };
                member_frame(group, &channel, a, b, c, now, &plaintext)
            }
            // A member's manifest claiming the trusted signer: the genuine
            // hashes or made-up ones, the genuine signature or none.
            6 => {
                let genuine = &feed.manifests[usize::from(a % 2)];
                let Ok(Body::Manifest(m)) = Body::decode(genuine) else {
                    continue;
                };
                let made_up: Vec<u8> = (0..usize::from(c % 40)).map(|i| i as u8 ^ b).collect();
                let body = Body::Manifest(crate::body::Manifest {
                    signer_id: feed.signer_id,
                    first_seq: if a & 2 == 0 {
                        m.first_seq
                    } else {
                        u64::from(b)
                    },
                    hashes: if a & 4 == 0 { m.hashes } else { &made_up },
                    signature_r: if a & 8 == 0 { m.signature_r } else { [b; 32] },
                    signature_s: if a & 16 == 0 { m.signature_s } else { [c; 32] },
                });
                let mut plaintext = vec![0u8; body.encoded_len()];
                if body.encode_into(&mut plaintext).is_err() {
                    continue;
                }
                member_frame(&key, &fuzz_channel(), a, b, c, now, &plaintext)
            }
            // The clock moves: mostly on, by up to half a second; now and
            // then back a little.
            _ => {
                now = now
                    .saturating_add(u64::from(a) * 2_000)
                    .saturating_sub(u64::from(b % 16) * 1_000);
                latest = latest.max(now);
                if c % 4 == 0 {
                    verifier.expire(now);
                }
                continue;
            }
        };
        out.clear();
        let _ = verifier.receive(&mut opener, now, &datagram, &mut out);
        // Released frames go in seq order.
        assert!(
            out.windows(2).all(|w| w[0].header.seq < w[1].header.seq),
            "released out of seq order"
        );
        for frame in &out {
            let genuine = feed.frames.get(&frame.header.seq);
            assert!(
                frame.header.sender_id == FUZZ_SIGNED_SENDER
                    && genuine.is_some_and(|(h, p)| *h == frame.header && *p == frame.plaintext),
                "delivered a frame the signer did not seal: {:?}",
                frame.header
            );
            assert_eq!(frame.signer, 0);
            assert!(
                delivered.insert(frame.header.seq),
                "delivered seq {} twice",
                frame.header.seq
            );
        }
        assert!(verifier.held() <= FUZZ_MAX_HELD, "held {}", verifier.held());
        assert!(
            verifier.held_bytes() <= FUZZ_MAX_HELD_BYTES,
            "held {} bytes",
            verifier.held_bytes()
        );
        assert_eq!(opener.stats().opened, delivered.len() as u64);
        assert_eq!(verifier.stats().delivered, delivered.len() as u64);
        assert!(opener.sender_count() <= 1);
        assert_eq!(
            opener.sender_count(),
            usize::from(opener.knows_sender(key.id(), FUZZ_SIGNED_SENDER))
        );
    }
    verifier.expire(latest.saturating_add(FUZZ_HOLD_US + 1));
    assert_eq!((verifier.held(), verifier.held_bytes()), (0, 0));
    ManifestRun {
        stats: *verifier.stats(),
        core: *opener.stats(),
    }
}

/// A frame a member seals: the signer's sender ID or another (`a`), a seq
/// near the genuine ones or near the end (`a`, `b`), stamped `now`.
fn member_frame(
    key: &GroupKey,
    channel: &ChannelId,
    a: u8,
    b: u8,
    c: u8,
    now: u64,
    plaintext: &[u8],
) -> Vec<u8> {
    let sender = if a & 1 == 0 {
        FUZZ_SIGNED_SENDER
    } else {
        SenderId([c; 16])
    };
    let seq = if a & 0x80 == 0 {
        u64::from(b % 16)
    } else {
        u64::MAX - u64::from(b)
    };
    let mut sealer = Sealer::with_sender_id(key, channel, sender, seq);
    let mut out = vec![0u8; plaintext.len() + frame::OVERHEAD];
    sealer.set_max_datagram(out.len());
    match sealer.seal(now, plaintext, &mut out) {
        Ok(n) => {
            out.truncate(n);
            out
        }
        Err(_) => Vec::new(),
    }
}

/// The relay target's clock: every request is judged at this time.
pub const FUZZ_RELAY_NOW: u64 = 1_790_000_000_000_000;

/// The relay target's access key, cookie secret and client address.
fn fuzz_relay() -> (Keyring, [u8; 32], std::net::SocketAddr) {
    let key = GroupKey::new(GroupSecret::from_bytes([0x43; 32]), None);
    let from = std::net::SocketAddr::from(([198, 18, 0, 2], 40_000));
    (Keyring::single(key), [0x44; 32], from)
}

/// A request under the relay target's key, with a cookie valid for its
/// client now (`cookie`) or zeros: the relay target's seeds.
pub fn fuzz_relay_request(kind: crate::relay::Kind, nonce: u8, cookie: bool) -> Vec<u8> {
    use crate::relay::{AccessKeys, Relay, RelayConfig, encode_request};
    let (ring, secret, from) = fuzz_relay();
    let keys = AccessKeys::new(&ring);
    let relay = Relay::new(keys.clone(), secret, RelayConfig::default());
    let now_s = u32::try_from(FUZZ_RELAY_NOW / 1_000_000).unwrap_or(u32::MAX);
    let cookie = if cookie {
        relay.cookie(now_s, from)
    } else {
        [0; 20]
    };
    encode_request(&keys, kind, FUZZ_RELAY_NOW, [nonce; 16], cookie, 0).to_vec()
}

/// Relay control: whatever parses as a request under our key encodes back
/// to the same bytes; the relay never answers with more bytes than it got
/// (no amplification), accepts a datagram at most once (the second time is
/// a replay), and accepts only what was made with the key.
pub fn relay_control(data: &[u8]) {
    use crate::relay::{AccessKeys, Message, Relay, RelayConfig, Verdict, encode_request, parse};
    let (ring, secret, from) = fuzz_relay();
    let keys = AccessKeys::new(&ring);
    let genuine = |r: &crate::relay::Request<'_>| {
        encode_request(&keys, r.kind, r.time_us, r.nonce, r.cookie, r.rate_kbit)
    };
    let request = match parse(data) {
        Ok(Message::Request(r)) => {
            assert_eq!(data.len(), crate::relay::REQUEST_LEN);
            if r.key_id == ring.sending_key().id() {
                let again = genuine(&r);
                assert_eq!(again[..again.len() - 32], data[..data.len() - 32]);
            }
            Some(r)
        }
        _ => None,
    };
    let mut relay = Relay::new(keys.clone(), secret, RelayConfig::default());
    for _ in 0..2 {
        if let Verdict::Reply(reply) = relay.handle(FUZZ_RELAY_NOW, from, data) {
            assert!(
                reply.len() <= data.len(),
                "{} bytes for {}",
                reply.len(),
                data.len()
            );
        }
    }
    let accepted = relay.stats().accepted;
    assert!(accepted <= 1, "accepted twice");
    if accepted == 1 {
        let r = request.expect("only a request is accepted");
        assert_eq!(&genuine(&r)[..], data, "accepted without the key");
    }
}

/// The relay client target's requests: the first, which the relay
/// challenges, and the answer to that challenge, in flight when the
/// target's datagram arrives.
const FUZZ_CLIENT_FIRST: [u8; 16] = [0x31; 16];
const FUZZ_CLIENT_PENDING: [u8; 16] = [0x32; 16];

/// The relay client target's setup: a client that asked the relay target
/// to subscribe, was challenged, and answered; the relay, and the answer
/// (the request in flight).
fn fuzz_client() -> (crate::relay::Client, crate::relay::Relay, Vec<u8>) {
    use crate::relay::{AccessKeys, Client, Kind, Relay, RelayConfig, Verdict};
    let (ring, secret, from) = fuzz_relay();
    let keys = AccessKeys::new(&ring);
    let mut relay = Relay::new(keys.clone(), secret, RelayConfig::default());
    let mut client = Client::new(keys, Kind::Subscribe, 20_000_000);
    let first = client
        .poll(FUZZ_RELAY_NOW, FUZZ_CLIENT_FIRST)
        .expect("a new client's first request is due");
    let Verdict::Reply(challenge) = relay.handle(FUZZ_RELAY_NOW, from, &first) else {
        panic!("a request without a cookie is challenged");
    };
    let answer = client
        .handle(FUZZ_RELAY_NOW, &challenge, FUZZ_CLIENT_PENDING)
        .expect("a challenge to the request in flight is answered");
    (client, relay, answer.to_vec())
}

/// The relay client's seeds: the relay's acknowledgement of the request
/// in flight, and a challenge to it.
pub fn fuzz_client_seeds() -> (Vec<u8>, Vec<u8>) {
    use crate::relay::Verdict;
    let (_, mut relay, answer) = fuzz_client();
    let (_, _, from) = fuzz_relay();
    let Verdict::Reply(ack) = relay.handle(FUZZ_RELAY_NOW, from, &answer) else {
        panic!("the answer to a challenge is accepted");
    };
    let mut challenge = b"mcr\x01\x81\0\0\0".to_vec();
    challenge.extend_from_slice(&FUZZ_CLIENT_PENDING);
    challenge.extend_from_slice(&[0x35; 20]);
    (ack, challenge)
}

/// Relay client (`Client::handle`), with a request in flight: it answers
/// only a challenge that echoes that request's nonce, with one request
/// under its key that carries the challenge's cookie; it takes an
/// acknowledgement only if it echoes the nonce and was made with the
/// access key, and then nothing more until its next request; anything
/// else changes nothing.
pub fn relay_client(data: &[u8]) {
    use crate::relay::{AccessKeys, Client, Kind, Message, parse};
    let (ring, _, _) = fuzz_relay();
    let keys = AccessKeys::new(&ring);
    // Nothing in flight: nothing is answered or taken.
    let mut idle = Client::new(keys, Kind::Subscribe, 20_000_000);
    assert!(idle.handle(FUZZ_RELAY_NOW, data, [0x33; 16]).is_none());
    assert!(idle.acked_us().is_none());
    let (mut client, _, _) = fuzz_client();
    let parsed = parse(data);
    let answer = client.handle(FUZZ_RELAY_NOW, data, [0x34; 16]);
    if let Some(request) = answer {
        let Ok(Message::Challenge { nonce, cookie }) = parsed else {
            panic!("answered what is not a challenge");
        };
        assert_eq!(
            nonce, FUZZ_CLIENT_PENDING,
            "answered a challenge to another request"
        );
        let Ok(Message::Request(r)) = parse(&request) else {
            panic!("the answer is not a request");
        };
        assert_eq!(
            (r.kind, r.nonce, r.cookie),
            (Kind::Subscribe, [0x34; 16], cookie)
        );
        assert_eq!(r.key_id, ring.sending_key().id());
    }
    if client.acked_us().is_some() {
        // Only the relay's own ack of the request in flight: a MAC under
        // the access key over every other byte.
        let (ack, _) = fuzz_client_seeds();
        assert_eq!(data, &ack[..], "took an ack the relay did not make");
        // Nothing is in flight now: the same ack again is nothing.
        assert!(client.handle(FUZZ_RELAY_NOW, data, [0x36; 16]).is_none());
    }
}

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus folder.
pub const TARGETS: [(&str, Target); 11] = [
    ("frame_header", frame_header),
    ("open", open),
    ("replay_window", replay_window),
    ("key_file", key_file),
    ("body", body),
    ("reassembly", reassembly),
    ("file_symbols", file_symbols),
    ("manifest", manifest),
    ("stream_symbols", stream_symbols),
    ("relay_control", relay_control),
    ("relay_client", relay_client),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Writes the seed corpus: `MCSEC_WRITE_CORPUS=1 cargo test --lib
    /// write_seed_corpus -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus"]
    fn write_seed_corpus() {
        assert!(
            std::env::var_os("MCSEC_WRITE_CORPUS").is_some(),
            "set MCSEC_WRITE_CORPUS=1 to write fuzz/corpus"
        );
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let write = |target: &str, name: &str, bytes: &[u8]| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        };
        let key = GroupKey::new(GroupSecret::from_bytes(FUZZ_SECRET), None);
        // Datagrams for the `open` target: `len: u16 BE || bytes` each.
        let datagrams = |frames: &[&[u8]]| -> Vec<u8> {
            frames
                .iter()
                .flat_map(|f| {
                    let mut d = u16::try_from(f.len()).unwrap().to_be_bytes().to_vec();
                    d.extend_from_slice(f);
                    d
                })
                .collect()
        };
        for (i, payload) in [&b""[..], b"hello", &[0xa5; 300], &[1; 1413]]
            .iter()
            .enumerate()
        {
            let seq = i as u64 + 1;
            let frame = fuzz_frame(&key, seq, payload);
            let n = frame.len();
            write("frame_header", &format!("frame{i}"), &frame);
            // The known sender's next frame, then the same frame again (a
            // replay), then a forgery of it: the known-sender path.
            let mut forged = frame.clone();
            forged[n - 16..].fill(0);
            // A forgery at a seq the window has not seen, so it reaches the
            // AEAD under the cached subkey.
            let mut ahead = fuzz_frame(&key, seq + 10, payload);
            let m = ahead.len();
            ahead[m - 16..].fill(0);
            write(
                "open",
                &format!("known_sender{i}"),
                &datagrams(&[&frame, &frame, &ahead]),
            );
            // A forgery first, then the genuine frame: the forgery must
            // not have used up its seq.
            write(
                "open",
                &format!("forged_then_genuine{i}"),
                &datagrams(&[&forged, &frame]),
            );
            write("open", &format!("truncated{i}"), &forged[..n.min(60)]);
            let body = Body::Data(payload);
            let mut plain = vec![0u8; body.encoded_len()];
            body.encode_into(&mut plain).unwrap();
            write("body", &format!("data{i}"), &plain);
        }
        // A new sender beside the known one.
        let mut other = Sealer::with_sender_id(&key, &fuzz_channel(), SenderId([9; 16]), 0);
        let mut buf = vec![0u8; 128];
        let n = other
            .seal_body(FUZZ_NOW_US, &Body::Data(b"new"), &mut buf)
            .unwrap();
        write(
            "open",
            "new_sender",
            &datagrams(&[&buf[..n], &fuzz_frame(&key, 1, b"known")]),
        );
        write("body", "unknown_variant", &[0x7f, 0x00]);
        write("frame_header", "short", b"mcs\x02");
        let ops: Vec<u8> = (0u8..60)
            .flat_map(|i| {
                let mut op = vec![i % 3];
                op.extend_from_slice(&(u64::from(i) * 977).to_be_bytes());
                op
            })
            .collect();
        write("replay_window", "mixed", &ops);
        write(
            "replay_window",
            "top",
            &[2, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5],
        );
        let k1 = GroupKey::new(GroupSecret::from_bytes([1; 32]), None);
        let k2 = GroupKey::new(
            GroupSecret::from_bytes([2; 32]),
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000)),
        );
        write(
            "key_file",
            "two_keys",
            format!("# c\n\n{}\n{}\n", *k1.to_line(), *k2.to_line()).as_bytes(),
        );
        write(
            "key_file",
            "bad_id",
            k1.to_line()
                .replacen("mcsec-key-v1 ", "mcsec-key-v1 0", 1)
                .as_bytes(),
        );
        write("key_file", "empty", b"# nothing\n");
        // Three pieces of 100, 100 and 50 bytes of one 250-byte message, out
        // of order, a duplicate, then a conflicting count.
        write(
            "reassembly",
            "three_pieces",
            &[
                1, 7, 2, 3, 0, 250, 50, 1, 1, 7, 0, 3, 0, 250, 100, 1, 1, 7, 0, 3, 0, 250, 100, 1,
                1, 7, 1, 3, 0, 250, 100, 1, 2, 9, 0, 2, 0, 10, 5, 1, 2, 9, 1, 3, 0, 10, 5, 1,
            ],
        );
    }

    /// Ops for `file_symbols`: `kind, sender, file, index (2 bytes), step,
    /// six field bytes`.
    fn file_op(kind: u8, sender: u8, file: u8, index: u16, v: [u8; 6]) -> Vec<u8> {
        let mut op = vec![kind, sender, file];
        op.extend_from_slice(&index.to_be_bytes());
        op.push(0);
        op.extend_from_slice(&v);
        op
    }

    #[test]
    #[ignore = "writes fuzz/corpus"]
    fn write_relay_control_seeds() {
        use crate::relay::Kind;
        assert!(
            std::env::var_os("MCSEC_WRITE_CORPUS").is_some(),
            "set MCSEC_WRITE_CORPUS=1 to write fuzz/corpus"
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/relay_control");
        std::fs::create_dir_all(&dir).unwrap();
        let accepted = fuzz_relay_request(Kind::Subscribe, 1, true);
        std::fs::write(dir.join("subscribe_accepted"), &accepted).unwrap();
        let publish = fuzz_relay_request(Kind::Publish, 2, true);
        std::fs::write(dir.join("publish_accepted"), &publish).unwrap();
        let challenged = fuzz_relay_request(Kind::Subscribe, 3, false);
        std::fs::write(dir.join("subscribe_challenged"), &challenged).unwrap();
        let mut bad_mac = accepted.clone();
        bad_mac[91] ^= 1;
        std::fs::write(dir.join("bad_mac"), &bad_mac).unwrap();
        std::fs::write(dir.join("truncated"), &accepted[..60]).unwrap();
        let mut challenge = b"mcr\x01\x81\0\0\0".to_vec();
        challenge.extend_from_slice(&[5; 36]);
        std::fs::write(dir.join("challenge"), &challenge).unwrap();
    }

    #[test]
    #[ignore = "writes fuzz/corpus"]
    fn write_relay_client_seeds() {
        assert!(
            std::env::var_os("MCSEC_WRITE_CORPUS").is_some(),
            "set MCSEC_WRITE_CORPUS=1 to write fuzz/corpus"
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/relay_client");
        std::fs::create_dir_all(&dir).unwrap();
        let (ack, challenge) = fuzz_client_seeds();
        std::fs::write(dir.join("ack"), &ack).unwrap();
        std::fs::write(dir.join("challenge"), &challenge).unwrap();
        let mut forged = ack.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        std::fs::write(dir.join("ack_bad_mac"), &forged).unwrap();
        let mut other = challenge.clone();
        other[8] ^= 1;
        std::fs::write(dir.join("challenge_other_nonce"), &other).unwrap();
    }

    #[test]
    fn relay_client_seeds_reach_both_paths() {
        use crate::relay::Message;
        // The genuine ack is taken and the challenge answered, so the
        // seeds reach the paths the target checks; a forged ack is not.
        let (ack, challenge) = fuzz_client_seeds();
        relay_client(&ack);
        relay_client(&challenge);
        let (mut client, _, _) = fuzz_client();
        let mut forged = ack.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(client.handle(FUZZ_RELAY_NOW, &forged, [9; 16]).is_none());
        assert!(client.acked_us().is_none());
        assert!(matches!(
            crate::relay::parse(&forged),
            Ok(Message::Ack { .. })
        ));
        assert!(client.handle(FUZZ_RELAY_NOW, &ack, [9; 16]).is_none());
        assert_eq!(client.acked_us(), Some(FUZZ_RELAY_NOW));
        let (mut client, _, _) = fuzz_client();
        assert!(client.handle(FUZZ_RELAY_NOW, &challenge, [9; 16]).is_some());
    }

    #[test]
    fn relay_seeds_are_accepted_once() {
        use crate::relay::Kind;
        use crate::relay::{AccessKeys, Relay, RelayConfig};
        // The invariants hold for genuine requests, which the relay takes
        // (so the seeds reach the accepting path), once.
        let seed = fuzz_relay_request(Kind::Subscribe, 1, true);
        relay_control(&seed);
        relay_control(&fuzz_relay_request(Kind::Unsubscribe, 1, true));
        let (ring, secret, from) = fuzz_relay();
        let mut relay = Relay::new(AccessKeys::new(&ring), secret, RelayConfig::default());
        relay.handle(FUZZ_RELAY_NOW, from, &seed);
        relay.handle(FUZZ_RELAY_NOW, from, &seed);
        assert_eq!(relay.stats().accepted, 1);
    }

    #[test]
    #[ignore = "writes fuzz/corpus"]
    fn write_file_symbols_seeds() {
        assert!(
            std::env::var_os("MCSEC_WRITE_CORPUS").is_some(),
            "set MCSEC_WRITE_CORPUS=1 to write fuzz/corpus"
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/file_symbols");
        std::fs::create_dir_all(&dir).unwrap();
        let genuine = |file: u8, count: u16, skip: u16| -> Vec<u8> {
            (0..count)
                .filter(|i| skip == 0 || i % skip != 0)
                .flat_map(|i| file_op(0, 0, file, i, [0; 6]))
                .collect()
        };
        // Every symbol of both files, in order: both complete.
        let mut both = genuine(0, 40, 0);
        both.extend(genuine(1, 10, 0));
        std::fs::write(dir.join("both_files"), &both).unwrap();
        // A third lost, then a wrong hash, a conflict, and a long pause.
        let mut lossy = genuine(0, 60, 3);
        lossy.extend(file_op(1, 1, 1, 0, [4, 9, 0, 0, 0, 0]));
        lossy.extend(file_op(1, 1, 1, 1, [0, 0, 0, 9, 0, 0]));
        lossy.extend(file_op(3, 0, 0, 2, [200, 0, 0, 0, 0, 0]));
        std::fs::write(dir.join("lossy_then_conflicts"), &lossy).unwrap();
        // Made-up symbols from three senders.
        let made_up: Vec<u8> = (0u8..30)
            .flat_map(|i| file_op(2, i, 0, 0, [i, i.wrapping_mul(7), 1, i, i % 5, i]))
            .collect();
        std::fs::write(dir.join("made_up"), &made_up).unwrap();
        // A genuine FileSymbol body for the body target.
        let (enc, symbols) = &fuzz_files()[0];
        let body = enc.body(&symbols[0]);
        let mut plain = vec![0u8; body.encoded_len()];
        body.encode_into(&mut plain).unwrap();
        let body_dir = dir.with_file_name("body");
        std::fs::write(body_dir.join("file_symbol"), &plain).unwrap();
    }

    #[test]
    #[ignore = "writes fuzz/corpus"]
    fn write_stream_symbols_seeds() {
        assert!(
            std::env::var_os("MCSEC_WRITE_CORPUS").is_some(),
            "set MCSEC_WRITE_CORPUS=1 to write fuzz/corpus"
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/stream_symbols");
        std::fs::create_dir_all(&dir).unwrap();
        let genuine = |kind: u8, file: u8, count: u16, skip: u16| -> Vec<u8> {
            (0..count)
                .filter(|i| skip == 0 || i % skip != 0)
                .flat_map(|i| file_op(kind, 0, file, i, [0; 6]))
                .collect()
        };
        // Every first-pass symbol of both files: both complete.
        let mut both = genuine(0, 0, 30, 0);
        both.extend(genuine(0, 1, 3, 0));
        std::fs::write(dir.join("both_files"), &both).unwrap();
        // A third lost (decodes), some decodes failed on purpose.
        let mut lossy = genuine(0, 0, 60, 3);
        lossy.extend(genuine(3, 0, 60, 2));
        std::fs::write(dir.join("lossy_and_failing"), &lossy).unwrap();
        // Conflicts, a wrong hash and made-up symbols from three senders.
        let mut odd = genuine(0, 0, 5, 0);
        odd.extend(file_op(1, 0, 0, 6, [4, 9, 0, 0, 0, 0]));
        odd.extend(file_op(1, 1, 0, 7, [6, 2, 0, 0, 0, 0]));
        odd.extend(
            (0u8..30).flat_map(|i| file_op(2, i, 0, 0, [i, i.wrapping_mul(7), 1, i, i % 9, i])),
        );
        std::fs::write(dir.join("conflicts_and_made_up"), &odd).unwrap();
        let (enc, symbols, _) = &fuzz_streams()[0];
        let (b, esi, bytes) = &symbols[0];
        let body = enc.body(*b, *esi, bytes);
        let mut plain = vec![0u8; body.encoded_len()];
        body.encode_into(&mut plain).unwrap();
        std::fs::write(dir.with_file_name("body").join("stream_symbol"), &plain).unwrap();
    }

    #[test]
    fn stream_seeds_complete_both_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/stream_symbols");
        // Replaying the seed must not panic; both_files is what a lossless
        // receiver sees, so it is checked to complete through the target's
        // own asserts (a file that fails its hash panics).
        stream_symbols(&std::fs::read(root.join("both_files")).unwrap());
    }

    #[test]
    fn open_seeds_reach_the_known_sender_path() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/open");
        let stats = open_stats(&std::fs::read(root.join("known_sender1")).unwrap());
        // The first frame, its successor; then a replay and a forgery of
        // the known sender, each judged against its window and subkey.
        assert_eq!((stats.opened, stats.replayed, stats.auth_failed), (2, 1, 1));
        let stats = open_stats(&std::fs::read(root.join("forged_then_genuine1")).unwrap());
        assert_eq!((stats.opened, stats.auth_failed), (2, 1));
        let stats = open_stats(&std::fs::read(root.join("new_sender")).unwrap());
        assert_eq!(stats.opened, 3);
    }

    /// Ops for the `manifest` target, and their files.
    fn manifest_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let op = |kind: u8, a: u8, b: u8, c: u8| vec![kind, a, b, c];
        let feed = |skip: &[u8]| -> Vec<u8> {
            (0u8..12)
                .filter(|i| !skip.contains(i))
                .flat_map(|i| op(0, i, 0, 0))
                .collect()
        };
        let wait = op(7, 60, 0, 0); // 120 ms: past the hold
        let mut lost = feed(&[0]);
        lost.extend(&wait);
        // A member's frames at genuine seqs and elsewhere, before the
        // feed, and at a listed seq after its manifest; then forged and
        // re-sealed manifests. Member seqs 12 to 15 are never committed.
        let mut mix: Vec<u8> = [
            op(4, 0, 1, 0),    // held, forged on release
            op(4, 0, 2, 0),    // held, forged on release
            op(4, 1, 3, 9),    // another sender: held, unsigned
            op(4, 0x80, 5, 0), // seq 2^64 - 6: held, expired
            op(0, 0, 0, 0),    // the first manifest
            op(4, 0, 3, 0),    // listed, not yet arrived: forged
        ]
        .concat();
        mix.extend(feed(&[0]));
        mix.extend(
            [
                op(6, 4, 12, 10),                // 10 bytes of made-up hashes
                op(6, 8, 13, 0),                 // R replaced
                op(6, 2, 14, 0),                 // another first_seq
                op(6, 0, 15, 0),                 // as signed: a duplicate
                op(5, 0x01, 0, 0),               // the manifest under another sender
                op(5, 0x20, 1, 0),               // under the second key
                op(5, 0x40, 12, 0),              // for another channel
                op(5, 0x00, 13, 1),              // frame 7's plaintext at seq 13
                op(5, 0x00, 14, 4 * 8 + 2),      // 8 bytes of plaintext follow:
                vec![0x04, 1, 2, 3, 4, 5, 6, 7], // a truncated manifest
                op(7, 30, 0, 1),
                op(3, 0, 40, 0), // a datagram cut to 40 bytes
                op(2, 0, 50, 3), // a bit of the first manifest flipped
                wait.clone(),
            ]
            .concat(),
        );
        // Strangers flood the hold while the first copy is lost.
        let mut flood = feed(&[0, 5]);
        // Short frames fill the count, long ones the bytes.
        for i in 0u8..12 {
            flood.extend(op(4, 1, i, i));
        }
        for i in 0u8..12 {
            flood.extend(op(4, 1, i, 230 + i));
        }
        flood.extend(op(0, 5, 0, 0));
        flood.extend(&wait);
        // The clock steps back while frames are held.
        let mut back = feed(&[0, 6]);
        back.extend(op(7, 0, 15, 0));
        back.extend(op(0, 6, 0, 0));
        back.extend(op(7, 90, 0, 0));
        vec![
            ("whole_feed", feed(&[])),
            ("lost_first_copy", lost),
            ("member_mix", mix),
            ("hold_flood", flood),
            ("clock_back", back),
        ]
    }

    #[test]
    #[ignore = "writes fuzz/corpus"]
    fn write_manifest_seeds() {
        assert!(
            std::env::var_os("MCSEC_WRITE_CORPUS").is_some(),
            "set MCSEC_WRITE_CORPUS=1 to write fuzz/corpus"
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/manifest");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in manifest_seeds() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn manifest_seeds_reach_every_path() {
        let seeds: BTreeMap<_, _> = manifest_seeds().into_iter().collect();
        let run = |name: &str| manifest_run(&seeds[name]);
        let whole = run("whole_feed");
        assert_eq!(
            (
                whole.stats.delivered,
                whole.stats.manifests_verified,
                whole.stats.manifest_duplicate
            ),
            (8, 2, 2)
        );
        assert_eq!(whole.core.opened, 8);
        // The first batch waits for its second copy.
        let lost = run("lost_first_copy");
        assert_eq!((lost.stats.delivered, lost.stats.held), (8, 4));
        let mix = run("member_mix");
        let s = mix.stats;
        assert_eq!(s.delivered, 8, "{mix:?}");
        assert_eq!(
            (s.sig_forged, s.sig_bad, s.sig_invalid, s.manifest_duplicate),
            (3, 3, 1, 4),
            "{mix:?}"
        );
        assert_eq!((s.sig_unsigned, s.sig_expired), (1, 2), "{mix:?}");
        let c = mix.core;
        assert_eq!(
            (c.auth_failed, c.bad_body, c.malformed),
            (2, 1, 1),
            "{mix:?}"
        );
        let flood = run("hold_flood");
        assert!(flood.stats.sig_hold_full > 0, "{flood:?}");
        let back = run("clock_back");
        assert_eq!(back.stats.delivered, 8, "{back:?}");
    }

    /// The committed corpus, run through the same entry points on stable.
    #[test]
    fn corpus_holds_every_invariant() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut count = 0;
            for entry in entries {
                let path = entry.unwrap().path();
                target(&std::fs::read(&path).unwrap());
                count += 1;
            }
            assert!(count > 0, "empty corpus for {name}");
        }
    }
}
