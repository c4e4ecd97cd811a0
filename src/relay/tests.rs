//! Edge tests of src/relay/: every reject path, caps, expiry, restart.

use super::*;
use crate::{GroupKey, GroupSecret, Keyring};

const NOW: u64 = 1_790_000_000_000_000;

fn keys(byte: u8) -> AccessKeys {
    AccessKeys::new(&Keyring::single(GroupKey::new(
        GroupSecret::from_bytes([byte; 32]),
        None,
    )))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 2], port))
}

fn relay() -> Relay {
    Relay::new(keys(1), [9; 32], RelayConfig::default())
}

/// Subscribes `from` through the challenge; returns the ack.
fn subscribe(relay: &mut Relay, client: &mut Client, from: SocketAddr, now: u64) -> Vec<u8> {
    // Nonces of their own per address: addr(1) gets 1, 2 and 3.
    let base = u8::try_from(from.port() - 1).expect("a small port") * 16;
    let first = client.poll(now, [base + 1; 16]).expect("due");
    let Verdict::Reply(challenge) = relay.handle(now, from, &first) else {
        panic!("no challenge");
    };
    assert!(challenge.len() <= first.len());
    let second = client
        .handle(now, &challenge, [base + 2; 16])
        .expect("answer to the challenge");
    let Verdict::Reply(ack) = relay.handle(now, from, &second) else {
        panic!("not accepted");
    };
    assert_eq!(client.handle(now, &ack, [base + 3; 16]), None);
    assert_eq!(client.acked_us(), Some(now));
    ack
}

fn planned(relay: &mut Relay, now: u64, sizes: &[usize]) -> Vec<(SocketAddr, usize)> {
    let mut out = Vec::new();
    relay.plan(now, sizes, &mut out);
    out.sort();
    out
}

/// A rotation: the relay takes the new key beside the old, the client
/// switches to it and renews at once, and the relay can then retire the
/// old key without losing the client.
#[test]
fn a_client_given_new_keys_renews_with_them_at_once() {
    let mut relay = relay();
    let mut client = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut client, addr(1), NOW);
    assert_eq!(client.poll(NOW + 1, [7; 16]), None, "not due for 20 s");
    relay.set_keys(keys(2));
    client.set_keys(keys(2));
    let later = NOW + 1_000;
    let renewal = client.poll(later, [8; 16]).expect("due at once");
    let Verdict::Reply(ack) = relay.handle(later, addr(1), &renewal) else {
        panic!("the renewal under the new key was refused");
    };
    assert_eq!(client.handle(later, &ack, [9; 16]), None);
    assert_eq!(client.acked_us(), Some(later));
    assert_eq!(relay.rejected(ControlReject::BadAuth), 0);
    assert_eq!(relay.stats().accepted, 2);
}

#[test]
fn a_subscriber_proves_its_address_then_gets_the_feed() {
    let mut relay = relay();
    let mut client = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    assert!(planned(&mut relay, NOW, &[1400]).is_empty());
    subscribe(&mut relay, &mut client, addr(1), NOW);
    assert_eq!(planned(&mut relay, NOW, &[1400, 1400]), [(addr(1), 2)]);
    assert_eq!(relay.stats().challenged, 1);
    assert_eq!(relay.stats().accepted, 1);
}

#[test]
fn a_request_and_its_replies_round_trip() {
    let req = encode_request(&keys(1), Kind::Publish, NOW, [7; 16], [8; 20], 0);
    let Ok(Message::Request(r)) = parse(&req) else {
        panic!("not a request");
    };
    assert_eq!(
        (r.kind, r.time_us, r.nonce, r.cookie),
        (Kind::Publish, NOW, [7; 16], [8; 20])
    );
    assert!(is_control(&req));
    assert!(!is_control(&[0x02, 0, 0, 0]));
    let Ok(Message::Challenge { nonce, cookie }) = parse(&encode_challenge(&[5; 16], &[6; 20]))
    else {
        panic!("not a challenge");
    };
    assert_eq!((nonce, cookie), ([5; 16], [6; 20]));
}

#[test]
fn without_a_cookie_only_a_shorter_challenge_comes_back() {
    let mut relay = relay();
    let req = encode_request(&keys(1), Kind::Subscribe, NOW, [1; 16], [0; 20], 0);
    match relay.handle(NOW, addr(1), &req) {
        Verdict::Reply(r) => {
            assert_eq!(r.len(), CHALLENGE_LEN);
            assert!(r.len() < req.len());
        }
        v => panic!("{v:?}"),
    }
    assert_eq!(relay.subscriber_count(), 0);
}

#[test]
fn a_cookie_for_another_address_is_challenged_again() {
    let mut relay = relay();
    let mut client = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut client, addr(1), NOW);
    // The same client's next request, from a spoofed address.
    let req = encode_request(&keys(1), Kind::Subscribe, NOW, [4; 16], client.cookie, 0);
    assert!(
        matches!(relay.handle(NOW, addr(2), &req), Verdict::Reply(r) if r.len() == CHALLENGE_LEN)
    );
    assert_eq!(planned(&mut relay, NOW, &[100]), [(addr(1), 1)]);
}

#[test]
fn an_expired_cookie_is_challenged_again() {
    let mut relay = relay();
    let mut client = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut client, addr(1), NOW);
    let later = NOW + (u64::from(COOKIE_LIFETIME_S) + 1) * 1_000_000;
    let req = encode_request(&keys(1), Kind::Subscribe, later, [4; 16], client.cookie, 0);
    assert!(
        matches!(relay.handle(later, addr(1), &req), Verdict::Reply(r) if r.len() == CHALLENGE_LEN)
    );
}

#[test]
fn a_bad_mac_is_rejected_and_counted() {
    let mut relay = relay();
    let mut req = encode_request(&keys(1), Kind::Subscribe, NOW, [1; 16], [0; 20], 0);
    req[REQUEST_LEN - 1] ^= 1;
    assert_eq!(
        relay.handle(NOW, addr(1), &req),
        Verdict::Rejected(ControlReject::BadAuth)
    );
    // A tampered field, not the tag.
    let mut req = encode_request(&keys(1), Kind::Subscribe, NOW, [1; 16], [0; 20], 0);
    req[20] ^= 1;
    assert_eq!(
        relay.handle(NOW, addr(1), &req),
        Verdict::Rejected(ControlReject::BadAuth)
    );
    assert_eq!(relay.rejected(ControlReject::BadAuth), 2);
    assert_eq!(relay.stats().challenged, 0);
}

#[test]
fn the_wrong_access_key_gets_nothing() {
    let mut relay = relay();
    let mut client = Client::new(keys(2), Kind::Subscribe, 20_000_000);
    let req = client.poll(NOW, [1; 16]).expect("due");
    assert_eq!(
        relay.handle(NOW, addr(1), &req),
        Verdict::Rejected(ControlReject::BadAuth)
    );
    assert_eq!(relay.rejected(ControlReject::BadAuth), 1);
}

#[test]
fn a_stale_or_future_request_is_rejected_and_counted() {
    let mut relay = relay();
    for time in [NOW - MAX_SKEW_US - 1, NOW + MAX_SKEW_US + 1] {
        let req = encode_request(&keys(1), Kind::Subscribe, time, [1; 16], [0; 20], 0);
        assert_eq!(
            relay.handle(NOW, addr(1), &req),
            Verdict::Rejected(ControlReject::Stale)
        );
    }
    assert_eq!(relay.rejected(ControlReject::Stale), 2);
    // At the edge it is fresh (and challenged).
    let req = encode_request(
        &keys(1),
        Kind::Subscribe,
        NOW - MAX_SKEW_US,
        [1; 16],
        [0; 20],
        0,
    );
    assert!(matches!(
        relay.handle(NOW, addr(1), &req),
        Verdict::Reply(_)
    ));
}

#[test]
fn a_replayed_request_is_rejected_and_counted() {
    let mut relay = relay();
    let mut client = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut client, addr(1), NOW);
    let again = encode_request(&keys(1), Kind::Subscribe, NOW, [2; 16], client.cookie, 0);
    assert_eq!(
        relay.handle(NOW + 1, addr(1), &again),
        Verdict::Rejected(ControlReject::Replayed)
    );
    assert_eq!(relay.rejected(ControlReject::Replayed), 1);
}

#[test]
fn truncated_long_and_unknown_datagrams_are_malformed() {
    let mut relay = relay();
    let req = encode_request(&keys(1), Kind::Subscribe, NOW, [1; 16], [0; 20], 0);
    let mut long = req.to_vec();
    long.push(0);
    let mut unknown = req;
    unknown[4] = 0x7f;
    let mut reserved = req;
    reserved[6] = 1;
    let challenge = encode_challenge(&[1; 16], &[2; 20]);
    for bad in [
        &req[..REQUEST_LEN - 1],
        &long,
        &unknown,
        &reserved,
        &req[..4],
        &challenge,
    ] {
        assert_eq!(
            relay.handle(NOW, addr(1), bad),
            Verdict::Rejected(ControlReject::Malformed)
        );
    }
    assert_eq!(parse(&unknown), Err(ParseError::UnknownType));
    assert_eq!(parse(b"mcr\x02xxxx"), Err(ParseError::NotControl));
    assert_eq!(relay.rejected(ControlReject::Malformed), 6);
}

#[test]
fn past_max_subscribers_a_new_one_is_refused_and_counted() {
    let config = RelayConfig {
        max_subscribers: 1,
        ..RelayConfig::default()
    };
    let mut relay = Relay::new(keys(1), [9; 32], config);
    let mut one = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut one, addr(1), NOW);
    let mut two = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    let first = two.poll(NOW, [5; 16]).expect("due");
    let Verdict::Reply(challenge) = relay.handle(NOW, addr(2), &first) else {
        panic!("no challenge");
    };
    let second = two.handle(NOW, &challenge, [6; 16]).expect("answer");
    assert_eq!(
        relay.handle(NOW, addr(2), &second),
        Verdict::Rejected(ControlReject::Full)
    );
    assert_eq!(relay.rejected(ControlReject::Full), 1);
    // The one already there refreshes fine.
    let refresh = encode_request(&keys(1), Kind::Subscribe, NOW, [7; 16], one.cookie, 0);
    assert!(
        matches!(relay.handle(NOW, addr(1), &refresh), Verdict::Reply(r) if r.len() == ACK_LEN)
    );
}

#[test]
fn a_silent_subscriber_is_forgotten_and_a_refreshed_one_is_not() {
    let mut relay = relay();
    let mut one = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    let mut two = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut one, addr(1), NOW);
    subscribe(&mut relay, &mut two, addr(2), NOW);
    let later = NOW + 30_000_000;
    let req = two.poll(later, [8; 16]).expect("refresh due");
    assert!(matches!(relay.handle(later, addr(2), &req), Verdict::Reply(r) if r.len() == ACK_LEN));
    let end = NOW + DEFAULT_LEASE_US;
    relay.expire(end);
    assert_eq!(planned(&mut relay, end, &[10]), [(addr(2), 1)]);
    assert_eq!(relay.stats().expired, 1);
}

#[test]
fn a_subscriber_over_its_cap_is_capped_and_another_is_not() {
    let config = RelayConfig {
        rate_cap_bytes: Some(1_000_000),
        ..RelayConfig::default()
    };
    let mut relay = Relay::new(keys(1), [9; 32], config);
    let mut one = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut one, addr(1), NOW);
    // 100 000 bytes of burst: 71 datagrams of 1400 then nothing.
    let run = [1400; 64];
    assert_eq!(planned(&mut relay, NOW, &run), [(addr(1), 64)]);
    assert_eq!(planned(&mut relay, NOW, &run), [(addr(1), 7)]);
    assert_eq!(relay.stats().dropped_cap, 57);
    // A tenth of a second later, 100 000 bytes more.
    assert_eq!(planned(&mut relay, NOW + 100_000, &run), [(addr(1), 64)]);
}

#[test]
fn a_subscriber_asking_for_a_cap_is_capped_and_another_is_not() {
    let mut relay = relay();
    let mut slow = Client::new(keys(1), Kind::Subscribe, 20_000_000).with_rate_cap(8_000);
    let mut fast = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut slow, addr(1), NOW);
    subscribe(&mut relay, &mut fast, addr(2), NOW);
    // 8 Mbit/s is 1 MB/s: 100 000 bytes of burst, then 71 of 1400.
    assert_eq!(
        planned(&mut relay, NOW, &[1400; 64]),
        [(addr(1), 64), (addr(2), 64)]
    );
    assert_eq!(
        planned(&mut relay, NOW, &[1400; 64]),
        [(addr(1), 7), (addr(2), 64)]
    );
    let stats: HashMap<_, _> = relay.subscribers().collect();
    assert_eq!(stats[&addr(1)].dropped_cap, 57);
    assert_eq!(stats[&addr(2)].dropped_cap, 0);
}

#[test]
fn publishers_alone_get_into_the_group() {
    let mut relay = relay();
    let mut client = Client::new(keys(1), Kind::Publish, 20_000_000);
    assert!(!relay.accept_data(NOW, addr(1), 100));
    subscribe(&mut relay, &mut client, addr(1), NOW);
    assert!(relay.accept_data(NOW, addr(1), 100));
    assert!(!relay.accept_data(NOW, addr(2), 100));
    assert_eq!(relay.stats().data_unauthorized, 2);
    // A publisher is not a subscriber.
    assert!(planned(&mut relay, NOW, &[10]).is_empty());
}

#[test]
fn what_the_relay_does_not_offer_is_refused_and_counted() {
    let config = RelayConfig {
        accept_publishers: false,
        ..RelayConfig::default()
    };
    let mut relay = Relay::new(keys(1), [9; 32], config);
    let mut client = Client::new(keys(1), Kind::Publish, 20_000_000);
    let first = client.poll(NOW, [1; 16]).expect("due");
    let Verdict::Reply(challenge) = relay.handle(NOW, addr(1), &first) else {
        panic!("no challenge");
    };
    let second = client.handle(NOW, &challenge, [2; 16]).expect("answer");
    assert_eq!(
        relay.handle(NOW, addr(1), &second),
        Verdict::Rejected(ControlReject::NotOffered)
    );
    assert_eq!(relay.rejected(ControlReject::NotOffered), 1);
    assert!(!relay.accept_data(NOW, addr(1), 100));
}

#[test]
fn unsubscribe_stops_the_feed() {
    let mut relay = relay();
    let mut client = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut client, addr(1), NOW);
    let bye = client.goodbye(NOW, [9; 16]);
    assert!(matches!(
        relay.handle(NOW, addr(1), &bye),
        Verdict::Reply(_)
    ));
    assert!(planned(&mut relay, NOW, &[10]).is_empty());
}

#[test]
fn a_client_ignores_forged_and_unasked_replies() {
    let mut client = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    let _ = client.poll(NOW, [1; 16]);
    // An ack under another key, and one for another nonce.
    let forged = encode_ack(&keys(2).0[0], &[1; 16], 60);
    let other = encode_ack(&keys(1).0[0], &[2; 16], 60);
    assert_eq!(client.handle(NOW, &forged, [3; 16]), None);
    assert_eq!(client.handle(NOW, &other, [3; 16]), None);
    assert_eq!(client.acked_us(), None);
    assert_eq!(
        client.handle(NOW, &encode_challenge(&[9; 16], &[1; 20]), [3; 16]),
        None
    );
}

#[test]
fn a_relay_restart_is_survived_by_the_next_refresh() {
    let mut client = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    let mut relay = relay();
    subscribe(&mut relay, &mut client, addr(1), NOW);
    // A new process: a new cookie secret, no subscribers.
    let mut relay = Relay::new(keys(1), [10; 32], RelayConfig::default());
    let later = NOW + 20_000_000;
    let req = client.poll(later, [4; 16]).expect("refresh due");
    let Verdict::Reply(challenge) = relay.handle(later, addr(1), &req) else {
        panic!("no challenge");
    };
    let again = client.handle(later, &challenge, [5; 16]).expect("answer");
    let Verdict::Reply(ack) = relay.handle(later, addr(1), &again) else {
        panic!("not accepted");
    };
    client.handle(later, &ack, [6; 16]);
    assert_eq!(client.acked_us(), Some(later));
    assert_eq!(planned(&mut relay, later, &[10]), [(addr(1), 1)]);
}

/// A cookie the relay issued to `from` at `now`.
fn cookie_for(relay: &mut Relay, from: SocketAddr, now: u64) -> [u8; COOKIE_LEN] {
    let mut client = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    let Verdict::Reply(challenge) = relay.handle(now, from, &client.poll(now, [0; 16]).unwrap())
    else {
        panic!("no challenge");
    };
    client.handle(now, &challenge, [1; 16]);
    client.cookie
}

#[test]
fn a_full_nonce_cache_refuses_and_counts_until_its_nonces_go_stale() {
    let mut relay = relay();
    // Nine hosts; the first eight fill the cache, each its share.
    let hosts: Vec<SocketAddr> = (0..9)
        .map(|i| SocketAddr::from(([198, 18, 1, i], 7000)))
        .collect();
    let cookies: Vec<_> = hosts
        .iter()
        .map(|h| cookie_for(&mut relay, *h, NOW))
        .collect();
    let mut n = 0u64;
    for (host, cookie) in hosts.iter().zip(&cookies).take(8) {
        for _ in 0..MAX_NONCES_PER_IP {
            n += 1;
            let mut nonce = [0xee; 16];
            nonce[..8].copy_from_slice(&n.to_be_bytes());
            let req = encode_request(&keys(1), Kind::Subscribe, NOW, nonce, *cookie, 0);
            assert!(
                matches!(relay.handle(NOW, *host, &req), Verdict::Reply(r) if r.len() == ACK_LEN),
                "renewal {n}"
            );
        }
    }
    assert_eq!(n as usize, MAX_NONCES);
    let one_more = encode_request(&keys(1), Kind::Subscribe, NOW, [0xdd; 16], cookies[8], 0);
    assert_eq!(
        relay.handle(NOW, hosts[8], &one_more),
        Verdict::Rejected(ControlReject::Busy)
    );
    assert_eq!(relay.rejected(ControlReject::Busy), 1);
    // Once they are stale they are forgotten, and room comes back.
    let later = NOW + MAX_SKEW_US + 1;
    let fresh = encode_request(&keys(1), Kind::Subscribe, later, [0xdc; 16], cookies[8], 0);
    assert!(
        matches!(relay.handle(later, hosts[8], &fresh), Verdict::Reply(r) if r.len() == ACK_LEN)
    );
}

#[test]
fn empty_and_oversize_datagrams_are_dropped_and_counted() {
    let mut relay = relay();
    let mut client = Client::new(keys(1), Kind::Publish, 20_000_000);
    subscribe(&mut relay, &mut client, addr(1), NOW);
    assert!(relay.accept_data(NOW, addr(1), 1472));
    assert!(!relay.accept_data(NOW, addr(1), 1473));
    assert!(!relay.accept_data(NOW, addr(1), 0));
    assert!(relay.accept_feed(&[0x42]));
    assert!(!relay.accept_feed(&[0x42; 1473]));
    assert!(!relay.accept_feed(&[]));
    assert_eq!(relay.stats().data_bad_size, 4);
    assert_eq!(relay.stats().published, 1);
}

/// PROTOCOL.md 4.2: a datagram that starts as a control datagram does is
/// never forwarded, whoever put it into the group (a subscriber's client
/// takes every such datagram as control).
#[test]
fn a_feed_datagram_that_looks_like_control_is_not_forwarded() {
    let mut relay = relay();
    assert!(!relay.accept_feed(b"mcr\x01\x02\0\0\0"));
    assert!(!relay.accept_feed(b"mcr"));
    assert!(relay.accept_feed(b"mc"));
    assert!(relay.accept_feed(b"mcs\x01"));
    assert_eq!(relay.stats().data_control, 2);
    assert_eq!(relay.stats().data_bad_size, 0);
}

/// Review (relayreview R2): a request is fresh up to and including
/// `time_us + MAX_SKEW_US`, so its nonce must be remembered through that
/// microsecond; `expire` (and the Busy sweep) forget it there.
#[test]
fn a_nonce_is_remembered_for_as_long_as_its_request_is_fresh() {
    let mut relay = relay();
    let mut client = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut client, addr(1), NOW);
    let req = encode_request(&keys(1), Kind::Subscribe, NOW, [0x55; 16], client.cookie, 0);
    assert!(matches!(relay.handle(NOW, addr(1), &req), Verdict::Reply(r) if r.len() == ACK_LEN));
    // The last microsecond the request is fresh: the relay's once-a-second
    // sweep happens to run then, and the same datagram comes again.
    let edge = NOW + MAX_SKEW_US;
    relay.expire(edge);
    assert!(
        matches!(relay.handle(edge, addr(1), &req), Verdict::Rejected(_)),
        "a replay was accepted"
    );
    assert_eq!(relay.stats().accepted, 2);
}

/// Review (relayreview R1): one access key holder, from addresses it has
/// proved on one host, fills the nonce cache with accepted requests (dated
/// 30 s ahead so each is kept 60 s); without a per-IP share every other
/// client's refresh was then refused as Busy, and their leases ran out.
/// Now the flood fills its IP's share and is refused there, counted, while
/// a client on another host is served.
#[test]
fn one_address_filling_the_nonce_cache_does_not_lock_out_another() {
    let mut relay = relay();
    let elsewhere = SocketAddr::from(([198, 18, 0, 3], 2));
    let mut victim = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut victim, elsewhere, NOW);
    let ahead = NOW + MAX_SKEW_US;
    let mut accepted = 0;
    // From many ports of one host: the share is the IP's.
    for i in 0..MAX_NONCES {
        let from = addr(1000 + (i % 16) as u16);
        let mut hog = Client::new(keys(1), Kind::Subscribe, 20_000_000);
        let cookie = match relay.handle(NOW, from, &hog.poll(NOW, [0; 16]).unwrap()) {
            Verdict::Reply(r) => {
                hog.handle(NOW, &r, [1; 16]);
                hog.cookie
            }
            v => panic!("{v:?}"),
        };
        let mut nonce = [0xee; 16];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let req = encode_request(&keys(1), Kind::Unsubscribe, ahead, nonce, cookie, 0);
        match relay.handle(NOW, from, &req) {
            Verdict::Reply(r) if r.len() == ACK_LEN => accepted += 1,
            Verdict::Rejected(ControlReject::Busy) => break,
            v => panic!("request {i}: {v:?}"),
        }
    }
    // The victim's subscribe took one nonce of its own host's share.
    assert_eq!(accepted, MAX_NONCES_PER_IP, "the flood's accepted requests");
    assert_eq!(relay.rejected(ControlReject::Busy), 1);
    // The victim's refresh, on time.
    let later = NOW + 20_000_000;
    let refresh = victim.poll(later, [0x77; 16]).expect("refresh due");
    assert!(
        matches!(relay.handle(later, elsewhere, &refresh), Verdict::Reply(r) if r.len() == ACK_LEN),
        "the victim's refresh was refused: {:?}",
        relay.handle(later, elsewhere, &refresh)
    );
    // Once the flood's requests are stale, its host has its share back.
    relay.expire(ahead + MAX_SKEW_US + 1);
    let mut hog = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    let late = ahead + MAX_SKEW_US + 1;
    subscribe(&mut relay, &mut hog, addr(3), late);
}

/// Review (relayreview R5): a network attacker holds back a client's
/// refresh and lets it through after the client's unsubscribe (sent as it
/// exits): each has a fresh nonce and timestamp, so the late subscribe is
/// accepted and the feed goes to the departed client's address (perhaps
/// someone else's by then, behind a NAT) for a whole lease. Requests from
/// one address should be taken in the order of their timestamps.
#[test]
fn a_subscribe_older_than_an_accepted_unsubscribe_is_refused() {
    let mut relay = relay();
    let mut client = Client::new(keys(1), Kind::Subscribe, 20_000_000);
    subscribe(&mut relay, &mut client, addr(1), NOW);
    let refresh = client
        .poll(NOW + 20_000_000, [0x61; 16])
        .expect("refresh due");
    let goodbye = client.goodbye(NOW + 20_000_001, [0x62; 16]);
    let at = NOW + 20_000_002;
    assert!(matches!(relay.handle(at, addr(1), &goodbye), Verdict::Reply(r) if r.len() == ACK_LEN));
    // The held-back refresh, a second later.
    let late = at + 1_000_000;
    let verdict = relay.handle(late, addr(1), &refresh);
    assert!(
        planned(&mut relay, late, &[100]).is_empty(),
        "the departed client is subscribed again: {verdict:?}"
    );
    assert_eq!(verdict, Verdict::Rejected(ControlReject::OutOfOrder));
    assert_eq!(relay.rejected(ControlReject::OutOfOrder), 1);
}
