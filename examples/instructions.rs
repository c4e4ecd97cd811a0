//! A fixed workload for instruction counting, which unlike wall time is
//! repeatable on a noisy machine:
//!
//! ```sh
//! cargo build --release --example instructions
//! for mode in base aead_open open aead_seal seal; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions $mode 1400 2>&1 | grep Collected
//! done
//! ```
//!
//! Every mode first seals the same 20,000 frames (that is `base`), then does
//! its work on each: `aead_open`/`aead_seal` the bare ChaCha20-Poly1305 call
//! with the frame's own key, nonce and header, `open`/`seal` mcsec's
//! `Opener::open`/`Sealer::seal_in_place`. (mode - base) / 20,000 is the
//! cost of one operation; BENCHMARKS.md compares them.

use std::hint::black_box;

use mcsec::frame::{HEADER_LEN, OVERHEAD, TAG_LEN};
use mcsec::seal::aead_for_tests::{FrameAead, Session};
use mcsec::{GroupKey, GroupSecret, Keyring, Opener, OpenerConfig, Sealer};

const FRAMES: usize = 20_000;
const NOW: u64 = 1_790_000_000_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: instructions base|aead_open|open|aead_seal|seal SIZE";
    let mode = args.next().ok_or(usage)?;
    let size: usize = args.next().ok_or(usage)?.parse()?;

    let key = GroupKey::new(GroupSecret::from_bytes([9; 32]), None);
    let channel = mcsec::ChannelId::named("instructions")?;
    let mut sealer = Sealer::new(&key, &channel)?;
    sealer.set_max_datagram(usize::MAX);
    let mut frames = Vec::with_capacity(FRAMES);
    for _ in 0..FRAMES {
        let mut frame = vec![0u8; size + OVERHEAD];
        sealer.seal_in_place(NOW, &mut frame, size)?;
        frames.push(frame);
    }
    // The bare AEAD under the same key a frame uses: the XChaCha20 subkey
    // HChaCha20(channel_key, sender_id).
    let channel_key = key.channel_key(&channel);
    let subkey: [u8; 32] = chacha20::hchacha::<chacha20::R20>(
        (&*channel_key).into(),
        sealer.sender_id().as_bytes().into(),
    )
    .into();
    // The backend frames use (src/cipher.rs).
    let aead = Session::new(&subkey);
    let mut config = OpenerConfig::default();
    config.max_datagram = usize::MAX;
    let mut opener = Opener::new(Keyring::single(key.clone()), channel, config);

    let mut done = 0usize;
    for mut frame in frames {
        let (header, rest) = frame.split_at_mut(HEADER_LEN);
        let (body, tag) = rest.split_at_mut(size);
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&header[24..32]);
        let ok = match mode.as_str() {
            "base" => true,
            "aead_open" => {
                let tag: [u8; TAG_LEN] = (&*tag).try_into()?;
                aead.open_in_place_detached(&nonce, header, body, &tag)
            }
            "aead_seal" => match aead.seal_in_place_detached(&nonce, header, body) {
                Some(t) => {
                    tag.copy_from_slice(&t);
                    true
                }
                None => false,
            },
            "open" => opener.open(NOW, &mut frame).is_ok(),
            "seal" => sealer.seal_in_place(NOW, &mut frame, size).is_ok(),
            _ => return Err(usage.into()),
        };
        done += usize::from(ok);
    }
    if done != FRAMES {
        return Err(format!("only {done} of {FRAMES} operations succeeded").into());
    }
    black_box(done);
    Ok(())
}
