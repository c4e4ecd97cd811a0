//! `mcsec demo`: the whole story in one process, on loopback only.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Duration;

use mcsec::net::{self, Group, InterfaceSpec, Receiver, Sender};
use mcsec::reassembly::Reassembler;
use mcsec::{Body, ChannelId, GroupKey, Keyring, Opener, OpenerConfig, Reject, Sealer};

use super::common::{Delivered, Inbox, parse_group};
use super::recv::words;
use super::{CliError, CliResult};

const TICKER: [&str; 5] = [
    "AAPL 189.91 +0.42",
    "MSFT 411.20 -1.05",
    "NVDA 903.55 +12.70",
    "AMZN 178.15 +0.88",
    "GOOG 152.33 -0.21",
];

/// Show mcsec at work without touching the network.
///
/// In one process, on loopback only (the multicast interface and the
/// membership are pinned to 127.0.0.1, TTL 1): makes a throw-away key, opens
/// a receiver and a sender on a loopback group, delivers a short ticker
/// feed, then injects a replayed frame, a tampered frame, a frame of the
/// same key captured on another group (frames are bound to their group and
/// port) and a frame under another key, shows each rejected, and prints the
/// counters. Exits 0 if everything behaved.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:
  mcsec demo
  mcsec demo -g 239.255.42.42:47000

Default group: 239.255.42.42 on a free port.")]
pub(crate) struct Args {
    /// The loopback group to use. Default: 239.255.42.42 on a free port.
    #[arg(short, long, value_name = "GROUP:PORT", value_parser = parse_group)]
    group: Option<Group>,
}

fn free_port() -> Result<u16, CliError> {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| CliError::new(format!("finding a free UDP port: {e}")))
}

pub(crate) fn run(args: Args) -> CliResult {
    let group = match args.group {
        Some(g) => g,
        None => parse_group(&format!("239.255.42.42:{}", free_port()?)).map_err(CliError::new)?,
    };
    if group.is_ipv6() {
        return Err(CliError::usage("the demo runs on IPv4 loopback")
            .hint("pass an IPv4 group such as 239.255.42.42:47000"));
    }
    let mut opts = net::Options::default();
    opts.interface = Some(InterfaceSpec::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    opts.ttl = 1;
    opts.multicast_loop = true;

    let key = GroupKey::generate(std::time::SystemTime::now())?;
    println!(
        "key {} (throw-away), group {group} on 127.0.0.1, TTL 1",
        key.id()
    );
    let receiver = Receiver::open(group, &opts)?;
    receiver.set_timeout(Some(Duration::from_secs(2)))?;
    let sender = Sender::open(group, &opts)?;
    let channel = ChannelId::group(group.addr());
    let mut sealer = Sealer::new(&key, &channel).map_err(|e| CliError::new(e.to_string()))?;
    // The same key, another group: what a frame captured there looks like.
    let elsewhere = ChannelId::group(std::net::SocketAddr::new(
        Ipv4Addr::new(239, 255, 42, 43).into(),
        group.addr().port(),
    ));
    let mut other_group =
        Sealer::new(&key, &elsewhere).map_err(|e| CliError::new(e.to_string()))?;
    let mut inbox = Inbox::new(
        Opener::new(Keyring::single(key), channel, OpenerConfig::default()),
        Reassembler::default(),
    );

    let mut buf = [0u8; 1500];
    let mut first_frame = Vec::new();
    let mut delivered = 0u64;
    let mut receive = |inbox: &mut Inbox, label: &str| -> Result<bool, CliError> {
        let Some((n, _)) = receiver.recv(&mut buf)? else {
            return Err(CliError::new("no datagram came back over loopback")
                .hint("is lo up? try: ip link set lo up"));
        };
        let Some(dg) = buf.get_mut(..n) else {
            return Ok(false);
        };
        match inbox.take(dg) {
            Some(Delivered::Message {
                header, payload, ..
            }) => {
                println!(
                    "  delivered  {:<28} from {} seq {}",
                    String::from_utf8_lossy(&payload),
                    header.sender_id.short(),
                    header.seq
                );
                Ok(true)
            }
            Some(Delivered::Chat { .. } | Delivered::File { .. }) => Ok(true),
            None => {
                println!("  rejected   {label}");
                Ok(false)
            }
        }
    };

    println!("ticker feed:");
    let mut frame = [0u8; 1472];
    for tick in TICKER {
        let len = sealer
            .seal_body(mcsec::now_us(), &Body::Data(tick.as_bytes()), &mut frame)
            .map_err(|e| CliError::new(e.to_string()))?;
        let dg = frame.get(..len).unwrap_or_default();
        if first_frame.is_empty() {
            first_frame = dg.to_vec();
        }
        sender.send(dg)?;
        if receive(&mut inbox, tick)? {
            delivered += 1;
        }
    }

    println!("attacks:");
    sender.send(&first_frame)?;
    receive(&mut inbox, "a replay of the first tick")?;

    // A fresh seq so the replay check passes and the AEAD has to decide.
    let len = sealer
        .seal_body(mcsec::now_us(), &Body::Data(b"AAPL 1.00 -99%"), &mut frame)
        .map_err(|e| CliError::new(e.to_string()))?;
    let mut forged = frame.get(..len).unwrap_or_default().to_vec();
    if let Some(b) = forged.get_mut(45) {
        *b ^= 0x01;
    }
    sender.send(&forged)?;
    receive(&mut inbox, "a frame with one ciphertext bit flipped")?;

    let len = other_group
        .seal_body(mcsec::now_us(), &Body::Data(b"AAPL 1.00 -99%"), &mut frame)
        .map_err(|e| CliError::new(e.to_string()))?;
    sender.send(frame.get(..len).unwrap_or_default())?;
    receive(
        &mut inbox,
        "a frame of the same key captured on another group",
    )?;

    let outsider = GroupKey::generate(std::time::SystemTime::now())?;
    let mut outsider =
        Sealer::new(&outsider, &elsewhere).map_err(|e| CliError::new(e.to_string()))?;
    let len = outsider
        .seal_body(mcsec::now_us(), &Body::Data(b"BUY EVERYTHING"), &mut frame)
        .map_err(|e| CliError::new(e.to_string()))?;
    sender.send(frame.get(..len).unwrap_or_default())?;
    receive(
        &mut inbox,
        "a frame sealed under a key the group does not hold",
    )?;

    let stats = *inbox.opener().stats();
    println!("counters: {}", words(&inbox, delivered));
    let expect = [
        (Reject::Replayed, 1),
        (Reject::AuthFailed, 2),
        (Reject::UnknownKey, 1),
    ];
    let ok = delivered == TICKER.len() as u64
        && expect.iter().all(|(r, n)| stats.rejected(*r) == *n)
        && stats.total_rejected() == 4;
    if ok {
        println!("demo passed: every tick delivered, every injected frame rejected");
        Ok(())
    } else {
        Err(CliError::new("the demo did not behave as expected")
            .hint("run with -v and report it; counters are above"))
    }
}
