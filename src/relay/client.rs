//! The client's side of relay control: `recv --relay` and `send --relay`
//! subscribe and publish with it.

use super::wire::{COOKIE_LEN, NONCE_LEN, REQUEST_LEN};
use super::{AccessKeys, Kind, Message, encode_request, parse};

/// A client's side: subscribes (or publishes) and keeps it fresh. The shell
/// sends what [`Client::poll`] and [`Client::handle`] return, from the
/// socket the feed arrives on (so a NAT maps both the same way), and hands
/// every control datagram that arrives there to [`Client::handle`].
#[derive(Debug)]
pub struct Client {
    keys: AccessKeys,
    kind: Kind,
    refresh_us: u64,
    rate_kbit: u32,
    pub(super) cookie: [u8; COOKIE_LEN],
    /// The nonce of the request in flight.
    pending: Option<[u8; NONCE_LEN]>,
    next_us: u64,
    /// When the relay last acknowledged, µs since the Unix epoch.
    acked_us: Option<u64>,
    /// Challenges answered in a row without an acknowledgement: a relay
    /// that keeps challenging is not worth a request per challenge.
    challenges: u32,
}

/// How often a client asks again when no acknowledgement came.
pub const RETRY_US: u64 = 1_000_000;

impl Client {
    /// A client that asks for `kind` every `refresh_us`.
    pub fn new(keys: AccessKeys, kind: Kind, refresh_us: u64) -> Self {
        Self {
            keys,
            kind,
            refresh_us,
            rate_kbit: 0,
            cookie: [0; COOKIE_LEN],
            pending: None,
            next_us: 0,
            acked_us: None,
            challenges: 0,
        }
    }

    /// Asks the relay to cap what it sends us at `kbit` kilobits a second
    /// (a slow link: better dropped at the relay than on the way).
    pub fn with_rate_cap(mut self, kbit: u32) -> Self {
        self.rate_kbit = kbit;
        self
    }

    /// Swaps in reloaded access keys (a rotation: `mcsec key rotate`, then
    /// `key retire` once every client has the new key). The next request
    /// is due at once, made with the newest of them, so the relay sees
    /// the new key (and an answer under a key no longer held is ignored)
    /// before it drops the old one.
    pub fn set_keys(&mut self, keys: AccessKeys) {
        self.keys = keys;
        self.next_us = 0;
    }

    /// When the relay last acknowledged us.
    pub fn acked_us(&self) -> Option<u64> {
        self.acked_us
    }

    /// A request to send now, if one is due (`nonce` is fresh randomness,
    /// used only if so).
    pub fn poll(&mut self, now_us: u64, nonce: [u8; NONCE_LEN]) -> Option<[u8; REQUEST_LEN]> {
        if now_us < self.next_us {
            return None;
        }
        // Without an answer, ask again soon; with one, at the refresh.
        self.next_us = now_us.saturating_add(RETRY_US.min(self.refresh_us));
        self.challenges = 0;
        Some(self.request(now_us, nonce))
    }

    fn request(&mut self, now_us: u64, nonce: [u8; NONCE_LEN]) -> [u8; REQUEST_LEN] {
        self.pending = Some(nonce);
        encode_request(
            &self.keys,
            self.kind,
            now_us,
            nonce,
            self.cookie,
            self.rate_kbit,
        )
    }

    /// A request that leaves the relay: unsubscribe.
    pub fn goodbye(&self, now_us: u64, nonce: [u8; NONCE_LEN]) -> [u8; REQUEST_LEN] {
        encode_request(&self.keys, Kind::Unsubscribe, now_us, nonce, self.cookie, 0)
    }

    /// Takes a control datagram from the relay; returns a request to send
    /// at once (the answer to a challenge), if any. Anything that does not
    /// answer our request in flight is ignored.
    pub fn handle(
        &mut self,
        now_us: u64,
        datagram: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Option<[u8; REQUEST_LEN]> {
        let pending = self.pending?;
        match parse(datagram).ok()? {
            Message::Challenge {
                nonce: echoed,
                cookie,
            } if echoed == pending => {
                self.challenges += 1;
                if self.challenges > 2 {
                    return None;
                }
                self.cookie = cookie;
                Some(self.request(now_us, nonce))
            }
            Message::Ack {
                key_id,
                nonce: echoed,
                signed,
                mac,
                ..
            } if echoed == pending => {
                let key = self.keys.get(key_id)?;
                if !key.verify(signed, mac) {
                    return None;
                }
                self.pending = None;
                self.challenges = 0;
                self.acked_us = Some(now_us);
                self.next_us = now_us.saturating_add(self.refresh_us);
                None
            }
            _ => None,
        }
    }
}
