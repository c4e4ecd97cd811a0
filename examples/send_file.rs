//! A file in about 30 lines: the library's `Outbox` seals it as RaptorQ
//! symbols in batches, a sixth of the datagrams are lost, and the receiver
//! opens the rest and stores, decodes and checks the file in memory with
//! `StreamReceiver::push_stored`. No sockets: a batch's datagrams are what
//! `mcsec send` hands the kernel in one call.
//!
//! ```sh
//! cargo run --example send_file
//! ```

use mcsec::transfer::outbox::Outbox;
use mcsec::transfer::storage::MemoryStorage;
use mcsec::transfer::stream::{StreamEncoder, StreamReceiver, interleave};
use mcsec::{Body, ChannelId, GroupKey, Keyring, Opener, OpenerConfig, Origin, now_us};
use sha2::{Digest, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (key, channel) = (
        GroupKey::generate(std::time::SystemTime::now())?,
        ChannelId::named("files")?,
    );
    let mut outbox = Outbox::new(Keyring::single(key.clone()), channel.clone(), 1472, None)?;
    let mut opener = Opener::new(Keyring::single(key), channel, OpenerConfig::default());
    let (mut receiver, mut disk) = (StreamReceiver::default(), MemoryStorage::new(64 << 20));
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let sha256 = Sha256::digest(&data).into();
    let enc = StreamEncoder::new(
        0,
        "photo.raw",
        data.len() as u64,
        sha256,
        outbox.max_plaintext(),
    )?;
    for b in 0..enc.layout().blocks() {
        let at = enc.layout().block_offset(b) as usize;
        let bytes = data[at..][..enc.layout().block_data_len(b) as usize].to_vec();
        let block = enc.encode_block(b, bytes, 0, 30)?; // its sources and 30% repair
        for (_, esi, symbol) in interleave(std::slice::from_ref(&block)) {
            outbox.queue_body(now_us(), &enc.body(b, esi, symbol))?;
        }
        outbox.finish(now_us())?;
        while let Some(batch) = outbox.pop_batch() {
            for datagram in batch.datagrams().enumerate().filter(|(i, _)| i % 6 != 5) {
                let mut datagram = datagram.1.to_vec();
                let Ok((header, Body::StreamSymbol(s))) = opener.open_body(now_us(), &mut datagram)
                else {
                    continue;
                };
                if let Ok(Some(done)) =
                    receiver.push_stored(now_us(), Origin::from(&header), &s, &mut disk)
                {
                    assert_eq!(disk.take(done.handle), Some(data));
                    println!("{}: {} bytes, SHA-256 checked", done.path, done.file_len);
                    return Ok(());
                }
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
