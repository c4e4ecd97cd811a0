//! Seal and open frames with the library alone: no sockets, no clock of its
//! own (you pass the time in), nothing but bytes in and bytes out.
//!
//! ```sh
//! cargo run --example seal_open
//! ```
//!
//! A receiver takes the sealed datagram, and rejects a copy of it (replay),
//! a flipped bit (authentication), and the same frame opened for another
//! channel: every frame is bound to its group and port, or channel name.

use mcsec::{Body, ChannelId, GroupKey, Keyring, Opener, OpenerConfig, Reject, Sealer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every member holds the same key (normally a file from `mcsec keygen`).
    let key = GroupKey::generate(std::time::SystemTime::now())?;
    let channel = ChannelId::group("239.255.0.1:5000".parse()?);

    let mut sealer = Sealer::new(&key, &channel)?;
    let mut opener = Opener::new(
        Keyring::single(key.clone()),
        channel.clone(),
        OpenerConfig::default(),
    );

    // Seal: a datagram of at most 1472 bytes (a 1500-byte MTU, IPv4).
    let mut buf = [0u8; 1472];
    let len = sealer.seal_body(mcsec::now_us(), &Body::Data(b"ACME 101.25"), &mut buf)?;
    let sealed = buf[..len].to_vec();
    println!("sealed {len} bytes as sender {}", sealer.sender_id());

    // Open: opening works in place, so each attempt gets its own copy.
    let mut datagram = sealed.clone();
    let (header, body) = opener.open_body(mcsec::now_us(), &mut datagram)?;
    let Body::Data(payload) = body else {
        return Err("expected a data frame".into());
    };
    println!(
        "opened seq {} from {}: {}",
        header.seq,
        header.sender_id,
        String::from_utf8_lossy(payload)
    );

    // The same datagram again: a replay.
    let mut again = sealed.clone();
    let replayed = opener.open_body(mcsec::now_us(), &mut again).map(|_| ());
    assert_eq!(replayed, Err(Reject::Replayed));
    println!("a copy of it: {}", replayed.unwrap_err());

    // One bit flipped in the ciphertext of the next frame: fails
    // authentication. (The replay check comes first, so a tampered copy of
    // a frame already opened is reported as a replay.)
    let len = sealer.seal_body(mcsec::now_us(), &Body::Data(b"ACME 101.26"), &mut buf)?;
    let mut tampered = buf[..len].to_vec();
    if let Some(last) = tampered.last_mut() {
        *last ^= 1;
    }
    let forged = opener.open_body(mcsec::now_us(), &mut tampered).map(|_| ());
    assert_eq!(forged, Err(Reject::AuthFailed));
    println!("one bit flipped: {}", forged.unwrap_err());

    // A receiver of another channel with the same key: fails too.
    let other = ChannelId::named("another-feed")?;
    let mut elsewhere = Opener::new(Keyring::single(key), other, OpenerConfig::default());
    let mut copy = sealed.clone();
    let wrong_channel = elsewhere.open_body(mcsec::now_us(), &mut copy).map(|_| ());
    assert_eq!(wrong_channel, Err(Reject::AuthFailed));
    println!("opened for another channel: {}", wrong_channel.unwrap_err());

    println!("counters: {:?}", opener.stats());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        super::main().unwrap();
    }
}
