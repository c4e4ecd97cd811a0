//! A file transfer without sockets: the file goes out as RaptorQ symbols,
//! one sealed frame each; a fifth of the frames are lost on the way; the
//! receiver opens the rest and puts the file back together from any
//! enough of them, then checks its SHA-256. This is what `mcsec send
//! --file` and `mcsec recv --save-dir` do around their sockets.
//!
//! ```sh
//! cargo run --example file_transfer
//! ```

use mcsec::files::{FileConfig, FileEncoder, FileReceiver};
use mcsec::{Body, ChannelId, GroupKey, Keyring, Opener, OpenerConfig, Origin, Sealer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = GroupKey::generate(std::time::SystemTime::now())?;
    let channel = ChannelId::named("files")?;
    let mut sealer = Sealer::new(&key, &channel)?;
    let mut opener = Opener::new(Keyring::single(key), channel, OpenerConfig::default());
    let mut receiver = FileReceiver::new(FileConfig::default());

    // 200 kB of something, under a name the receiver will see.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let encoder = FileEncoder::new(0, "report.bin", &data, sealer.max_plaintext(), 64 << 20)?;
    println!(
        "{} bytes as {} source symbols of {} bytes",
        data.len(),
        encoder.source_symbols(),
        encoder.symbol_size()
    );

    let mut buf = vec![0u8; 1472];
    let (mut sent, mut lost) = (0u32, 0u32);
    let started = std::time::Instant::now();
    // Passes of the carousel: the first with 30% repair symbols, later ones
    // with fresh repair symbols, until the receiver has the file.
    for pass in 0..10 {
        for symbol in encoder.pass(pass, 30) {
            let len = sealer.seal_body(mcsec::now_us(), &encoder.body(&symbol), &mut buf)?;
            sent += 1;
            // The network drops every fifth datagram.
            if sent % 5 == 0 {
                lost += 1;
                continue;
            }
            let mut datagram = buf[..len].to_vec();
            let Ok((header, Body::FileSymbol(symbol))) =
                opener.open_body(mcsec::now_us(), &mut datagram)
            else {
                continue;
            };
            let monotonic = started.elapsed().as_micros() as u64;
            if let Some(file) = receiver.push(monotonic, Origin::from(&header), &symbol)? {
                assert_eq!(file.data, data);
                println!(
                    "{:?}: {} bytes, sha256 {}, after {sent} datagrams ({lost} lost) in pass {pass}",
                    file.name,
                    file.data.len(),
                    mcsec::files::hex(&file.sha256)
                );
                return Ok(());
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
