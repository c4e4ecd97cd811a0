//! A file transfer without sockets: the file goes out block by block as
//! RaptorQ symbols, one sealed frame each; a fifth of the frames are lost
//! on the way; the receiver opens the rest, stores source symbols where
//! they belong, decodes blocks that lost some, and checks the SHA-256.
//! Here the "disk" on both ends is a `Vec<u8>`; `mcsec send --file` and
//! `mcsec recv --save-dir` do the same with files, sockets and a worker
//! thread.
//!
//! ```sh
//! cargo run --example file_transfer
//! ```

use mcsec::transfer::stream::{Decoded, Job, StreamEncoder, StreamReceiver, interleave};
use mcsec::{Body, ChannelId, GroupKey, Keyring, Opener, OpenerConfig, Origin, Sealer};
use sha2::{Digest, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = GroupKey::generate(std::time::SystemTime::now())?;
    let channel = ChannelId::named("files")?;
    let mut sealer = Sealer::new(&key, &channel)?;
    let mut opener = Opener::new(Keyring::single(key), channel, OpenerConfig::default());
    let mut receiver = StreamReceiver::default();

    // 2 MB of something, under the path the receiver will see.
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let sha256 = Sha256::digest(&data).into();
    let enc = StreamEncoder::new(
        0,
        "reports/q4.bin",
        data.len() as u64,
        sha256,
        sealer.max_plaintext(),
    )?;
    let layout = *enc.layout();
    let mut disk = Vec::new(); // the receiver's storage
    let (mut buf, mut sent) = (vec![0u8; 1472], 0u32);
    // One pass: each block's source symbols and 30% repair symbols.
    for b in 0..layout.blocks() {
        let start = layout.block_offset(b) as usize;
        let bytes = data[start..][..layout.block_data_len(b) as usize].to_vec();
        let block = enc.encode_block(b, bytes, 0, 30)?;
        for (_, esi, bytes) in interleave(std::slice::from_ref(&block)) {
            let len = sealer.seal_body(mcsec::now_us(), &enc.body(b, esi, bytes), &mut buf)?;
            sent += 1;
            if sent % 5 == 0 {
                continue; // the network drops every fifth datagram
            }
            let mut datagram = buf[..len].to_vec();
            let Ok((header, Body::StreamSymbol(s))) =
                opener.open_body(mcsec::now_us(), &mut datagram)
            else {
                continue;
            };
            let Ok(step) = receiver.push(mcsec::now_us(), Origin::from(&header), &s) else {
                continue;
            };
            if let Some(new) = step.new_file {
                disk = vec![0; new.layout.file_len() as usize];
            }
            if let Some(w) = step.write {
                disk[w.offset as usize..][..w.len].copy_from_slice(&s.symbol[..w.len]);
            }
            let mut job = step.job;
            while let Some(j) = job.take() {
                job = match j {
                    Job::Decode(d) => match d.run(|at, out| {
                        out.copy_from_slice(&disk[at as usize..][..out.len()]);
                        Ok(())
                    }) {
                        Decoded::Block {
                            handle,
                            block,
                            offset,
                            data,
                        } => {
                            disk[offset as usize..][..data.len()].copy_from_slice(&data);
                            receiver.decoded(handle, block, true, Vec::new())
                        }
                        Decoded::Failed {
                            handle,
                            block,
                            repairs,
                        } => receiver.decoded(handle, block, false, repairs),
                        _ => None,
                    },
                    Job::Verify(v) => {
                        let ok = <[u8; 32]>::from(Sha256::digest(&disk)) == v.sha256;
                        if let Some(done) = receiver.verified(v.handle, ok) {
                            assert_eq!(disk, data);
                            println!(
                                "{:?}: {} bytes, sha256 {}, after {sent} datagrams ({} lost)",
                                done.path,
                                done.file_len,
                                mcsec::files::hex(&done.sha256),
                                sent / 5
                            );
                            return Ok(());
                        }
                        None
                    }
                    _ => None,
                };
            }
        }
    }
    Err("the file did not complete".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        super::main().unwrap();
    }
}
