#!/usr/bin/env python3
"""mcsec_ref.py - independent implementation of the mcsec wire protocol, version 2.

Written only from PROTOCOL.md (mcsec wire protocol, version 2) and the
documents it cites (RFC 8439, RFC 5869, draft-irtf-cfrg-xchacha-03, RFC 6330
for the FileSymbol partition, RFC 8032 for Ed25519), in pure Python 3.11
standard library, to cross-check mcsec. It is deliberately simple and slow:
clarity over speed. It needs no third-party package (not `cryptography`).

Contents
  * RFC 8439 ChaCha20, Poly1305 and the ChaCha20-Poly1305 AEAD
  * HChaCha20 and XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03)
  * RFC 5869 HKDF-SHA256
  * RFC 8032 Ed25519 (PureEdDSA): keys from a seed, signing, and the strict
    verification PROTOCOL.md 3.5 asks for (canonical encodings, S < L, R and
    A not of small order, the cofactorless equation)
  * mcsec v2: key IDs, the exact key-file grammar, channel IDs and channel
    keys, frame sealing, body encoding and strict decoding (variants 0-5),
    the receiver (steps 1 to 8 in order, counters, a 1984-frame replay
    window, a bounded sender table with eviction and the forgotten-sender
    mark), single-frame and session vector checks
  * variant 5 files without RaptorQ: the block layout (Kt, B, K_b, offsets),
    the receiver limits (oversize / invalid), path components (empty and
    '.' ignored, '..' invalid) and a sanitizer for them; a sender of every
    source symbol of every block, and a receiver that rebuilds a file from
    its source symbols alone (repair symbols, ESI >= K_b, ignored), checks
    its SHA-256 and saves it without overwriting
  * Part 3, signed senders: signer IDs, the signing key file and trust file
    grammars, frame hashes, the Manifest body and its signed message, the
    signing sender (batches: manifest, frames, manifest again) and the
    trusting receiver (held frames, records, every 3.5 counter), manifest
    and signed-session vector checks, and a writer of our own such vectors
  * a command line (run with -h): selftest, keyid, check-keyfile,
    check-vectors, make-signed-vectors, signer-new, signer-public,
    check-signer, check-trust, seal, open, send (--sign, --file), recv
    (--trust, --save-dir)

`recv --trust FILE` prints each delivered Data message as
`SENDER_ID SEQ PAYLOAD signer=NAME` (NAME: the trust line's name, else the
signer ID in hex) and adds every 3.5 counter to the JSON line on stderr.
`recv --save-dir DIR` prints each saved file as
`file SENDER_ID FILE_ID LEN SHA256 SAVED_PATH` and adds the file counters
(files_completed, file_*) to that JSON line.

Network safety: `send` and `recv` only use multicast groups. IPv4 is pinned
to the loopback interface (IP_MULTICAST_IF 127.0.0.1, TTL 1, joined on
127.0.0.1). IPv6 needs an explicit --interface (meant for a veth inside a
private network namespace; IPv6 multicast does not work on lo) and uses hop
limit 1.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import socket
import stat
import struct
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

# =============================================================================
# RFC 8439: ChaCha20
# =============================================================================

_MASK32 = 0xFFFFFFFF


def _rotl32(v: int, n: int) -> int:
    return ((v << n) & _MASK32) | (v >> (32 - n))


def _quarter_round(s: list[int], a: int, b: int, c: int, d: int) -> None:
    """RFC 8439 section 2.1 / 2.2: the quarter round on four words of the state."""
    s[a] = (s[a] + s[b]) & _MASK32; s[d] = _rotl32(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & _MASK32; s[b] = _rotl32(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & _MASK32; s[d] = _rotl32(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & _MASK32; s[b] = _rotl32(s[b] ^ s[c], 7)


def chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    """RFC 8439 section 2.3: one 64-byte keystream block (32-bit counter, 96-bit nonce)."""
    if len(key) != 32 or len(nonce) != 12 or not 0 <= counter <= _MASK32:
        raise ValueError("chacha20_block: bad key, nonce or counter")
    # "expand 32-byte k" constants, 8 key words, counter, 3 nonce words (all little-endian).
    state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    state += list(struct.unpack("<8I", key))
    state += [counter]
    state += list(struct.unpack("<3I", nonce))
    w = state[:]
    for _ in range(10):  # 20 rounds = 10 x (column round + diagonal round)
        _quarter_round(w, 0, 4, 8, 12)
        _quarter_round(w, 1, 5, 9, 13)
        _quarter_round(w, 2, 6, 10, 14)
        _quarter_round(w, 3, 7, 11, 15)
        _quarter_round(w, 0, 5, 10, 15)
        _quarter_round(w, 1, 6, 11, 12)
        _quarter_round(w, 2, 7, 8, 13)
        _quarter_round(w, 3, 4, 9, 14)
    return struct.pack("<16I", *((w[i] + state[i]) & _MASK32 for i in range(16)))


def chacha20_xor(key: bytes, counter: int, nonce: bytes, data: bytes) -> bytes:
    """RFC 8439 section 2.4: encrypt/decrypt `data` starting at block `counter`."""
    out = bytearray()
    for i in range(0, len(data), 64):
        chunk = data[i:i + 64]
        ks = chacha20_block(key, counter + i // 64, nonce)[:len(chunk)]
        x = int.from_bytes(chunk, "little") ^ int.from_bytes(ks, "little")
        out += x.to_bytes(len(chunk), "little")
    return bytes(out)


# =============================================================================
# RFC 8439: Poly1305 and the AEAD
# =============================================================================

_P1305 = (1 << 130) - 5


def poly1305_mac(msg: bytes, key: bytes) -> bytes:
    """RFC 8439 section 2.5: one-time authenticator with a 32-byte key (r || s)."""
    if len(key) != 32:
        raise ValueError("poly1305: key must be 32 bytes")
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF  # clamp
    s = int.from_bytes(key[16:], "little")
    acc = 0
    for i in range(0, len(msg), 16):
        block = msg[i:i + 16] + b"\x01"  # append the 0x01 "high bit" byte
        acc = ((acc + int.from_bytes(block, "little")) * r) % _P1305
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _pad16(b: bytes) -> bytes:
    return b"\x00" * (-len(b) % 16)


def _aead_tag(key: bytes, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
    otk = chacha20_block(key, 0, nonce)[:32]  # section 2.6: Poly1305 key from block 0
    mac_data = (aad + _pad16(aad) + ct + _pad16(ct)
                + struct.pack("<QQ", len(aad), len(ct)))
    return poly1305_mac(mac_data, otk)


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """RFC 8439 section 2.8: returns ciphertext || 16-byte tag."""
    ct = chacha20_xor(key, 1, nonce, plaintext)
    return ct + _aead_tag(key, nonce, aad, ct)


def aead_decrypt(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes | None:
    """RFC 8439 section 2.8: returns the plaintext, or None if the tag does not verify."""
    if len(sealed) < 16:
        return None
    ct, tag = sealed[:-16], sealed[-16:]
    if not hmac.compare_digest(_aead_tag(key, nonce, aad, ct), tag):
        return None
    return chacha20_xor(key, 1, nonce, ct)


# =============================================================================
# RFC 5869: HKDF-SHA256
# =============================================================================

def hkdf_extract(salt: bytes | None, ikm: bytes) -> bytes:
    """RFC 5869 section 2.2. A missing salt is HashLen (32) zero bytes."""
    if not salt:
        salt = b"\x00" * 32
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 section 2.3: T(i) = HMAC(PRK, T(i-1) || info || i)."""
    if length > 255 * 32:
        raise ValueError("hkdf: length too large")
    okm, t = b"", b""
    for i in range(1, -(-length // 32) + 1):
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
    return okm[:length]


def hkdf_sha256(salt: bytes | None, ikm: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


# =============================================================================
# draft-irtf-cfrg-xchacha-03: HChaCha20 and XChaCha20-Poly1305
# =============================================================================

@functools.lru_cache(maxsize=8192)
def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """Section 2.2: the ChaCha20 state with a 128-bit nonce in words 12-15,
    20 rounds, no final addition; output words 0-3 and 12-15 (little-endian)."""
    if len(key) != 32 or len(nonce16) != 16:
        raise ValueError("hchacha20: key must be 32 bytes and nonce 16 bytes")
    w = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    w += list(struct.unpack("<8I", key))
    w += list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        _quarter_round(w, 0, 4, 8, 12)
        _quarter_round(w, 1, 5, 9, 13)
        _quarter_round(w, 2, 6, 10, 14)
        _quarter_round(w, 3, 7, 11, 15)
        _quarter_round(w, 0, 5, 10, 15)
        _quarter_round(w, 1, 6, 11, 12)
        _quarter_round(w, 2, 7, 8, 13)
        _quarter_round(w, 3, 4, 9, 14)
    return struct.pack("<8I", *(w[0:4] + w[12:16]))


def _xchacha_split(key: bytes, nonce24: bytes) -> tuple[bytes, bytes]:
    """Section 2.3: subkey = HChaCha20(key, nonce[0:16]); 12-byte nonce =
    4 zero bytes || nonce[16:24]."""
    if len(nonce24) != 24:
        raise ValueError("xchacha20: nonce must be 24 bytes")
    return hchacha20(key, bytes(nonce24[:16])), b"\x00" * 4 + bytes(nonce24[16:])


def xchacha_aead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, aad: bytes) -> bytes:
    subkey, nonce12 = _xchacha_split(key, nonce24)
    return aead_encrypt(subkey, nonce12, plaintext, aad)


def xchacha_aead_decrypt(key: bytes, nonce24: bytes, sealed: bytes, aad: bytes) -> bytes | None:
    subkey, nonce12 = _xchacha_split(key, nonce24)
    return aead_decrypt(subkey, nonce12, sealed, aad)


# =============================================================================
# RFC 8032: Ed25519 (PureEdDSA over edwards25519), for Part 3's signed senders
# =============================================================================

ED_P = 2**255 - 19                                          # the field prime p
ED_L = 2**252 + 27742317777372353535851937790883648493      # the group order L
ED_D = -121665 * pow(121666, ED_P - 2, ED_P) % ED_P          # d = -121665/121666
_ED_SQRT_M1 = pow(2, (ED_P - 1) // 4, ED_P)                  # a square root of -1
_EdPoint = tuple[int, int, int, int]                         # extended (X, Y, Z, T), x=X/Z, y=Y/Z, xy=T/Z
_ED_IDENTITY: _EdPoint = (0, 1, 1, 0)


def _ed_recover_x(y: int, sign: int) -> int | None:
    """RFC 8032 5.1.3 steps 1 to 4: x from y and the sign bit, or None when
    the encoding is not canonical (y >= p), y is on no point, or x = 0 with
    sign bit 1."""
    if y >= ED_P:
        return None
    u = (y * y - 1) % ED_P
    v = (ED_D * y * y + 1) % ED_P
    x = u * pow(v, 3, ED_P) * pow(u * pow(v, 7, ED_P), (ED_P - 5) // 8, ED_P) % ED_P
    vxx = v * x * x % ED_P
    if vxx == u:
        pass
    elif vxx == -u % ED_P:
        x = x * _ED_SQRT_M1 % ED_P
    else:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = ED_P - x
    return x


def _ed_add(p: _EdPoint, q: _EdPoint) -> _EdPoint:
    """RFC 8032 5.1.4 addition (a = -1, extended coordinates)."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % ED_P
    b = (y1 + x1) * (y2 + x2) % ED_P
    c = 2 * t1 * t2 * ED_D % ED_P
    d = 2 * z1 * z2 % ED_P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % ED_P, g * h % ED_P, f * g % ED_P, e * h % ED_P


def _ed_double(p: _EdPoint) -> _EdPoint:
    """RFC 8032 5.1.4 doubling."""
    x1, y1, z1, _ = p
    a = x1 * x1 % ED_P
    b = y1 * y1 % ED_P
    c = 2 * z1 * z1 % ED_P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % ED_P
    g = a - b
    f = c + g
    return e * f % ED_P, g * h % ED_P, f * g % ED_P, e * h % ED_P


def _ed_mul(k: int, p: _EdPoint) -> _EdPoint:
    """[k]P by double-and-add (not constant time: this is a test tool)."""
    q = _ED_IDENTITY
    for bit in bin(k)[2:]:
        q = _ed_double(q)
        if bit == "1":
            q = _ed_add(q, p)
    return q


def _ed_equal(p: _EdPoint, q: _EdPoint) -> bool:
    return ((p[0] * q[2] - q[0] * p[2]) % ED_P == 0
            and (p[1] * q[2] - q[1] * p[2]) % ED_P == 0)


def ed_encode(p: _EdPoint) -> bytes:
    """RFC 8032 5.1.2: y little-endian, the low bit of x in bit 255."""
    zi = pow(p[2], ED_P - 2, ED_P)
    x, y = p[0] * zi % ED_P, p[1] * zi % ED_P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def ed_decode(b: bytes) -> _EdPoint | None:
    """RFC 8032 5.1.3, canonical encodings only; None if it fails."""
    if len(b) != 32:
        return None
    n = int.from_bytes(b, "little")
    y = n & ((1 << 255) - 1)
    x = _ed_recover_x(y, n >> 255)
    if x is None:
        return None
    return x, y, 1, x * y % ED_P


_ED_BY = 4 * pow(5, ED_P - 2, ED_P) % ED_P
ED_BASE: _EdPoint = (_ed_recover_x(_ED_BY, 0), _ED_BY, 1,  # type: ignore[assignment]
                     _ed_recover_x(_ED_BY, 0) * _ED_BY % ED_P)  # type: ignore[operator]


@functools.lru_cache(maxsize=1)
def _ed_base_table() -> tuple[_EdPoint, ...]:
    """[2^i]B for i < 256, so that [k]B needs only additions."""
    t = [ED_BASE]
    for _ in range(255):
        t.append(_ed_double(t[-1]))
    return tuple(t)


def _ed_mul_base(k: int) -> _EdPoint:
    q = _ED_IDENTITY
    for i, pt in enumerate(_ed_base_table()):
        if k >> i & 1:
            q = _ed_add(q, pt)
    return q


def ed_small_order(p: _EdPoint) -> bool:
    """[8]P is the identity: P is one of the 8 points of small order."""
    q = _ed_double(_ed_double(_ed_double(p)))
    return q[0] % ED_P == 0 and (q[1] - q[2]) % ED_P == 0


def _order8_point() -> _EdPoint:
    """A point of order 8: [L]P for the first y >= 2 on the curve whose
    torsion part has order 8 (deterministic)."""
    y = 2
    while True:
        p = ed_decode(y.to_bytes(32, "little"))
        if p is not None:
            t = _ed_mul(ED_L, p)  # in the torsion subgroup: order 1, 2, 4 or 8
            if not _ed_equal(_ed_double(_ed_double(t)), _ED_IDENTITY):
                return t
        y += 1


def _ed_expand(seed: bytes) -> tuple[int, bytes]:
    """RFC 8032 5.1.5 steps 1 to 2: the clamped scalar s and the prefix."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    h = hashlib.sha512(seed).digest()
    a = bytearray(h[:32])
    a[0] &= 248
    a[31] &= 127
    a[31] |= 64
    return int.from_bytes(a, "little"), h[32:]


def ed25519_public(seed: bytes) -> bytes:
    """RFC 8032 5.1.5: the public key of a 32-byte seed."""
    return ed_encode(_ed_mul_base(_ed_expand(seed)[0]))


def _ed_hint(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little") % ED_L


def ed25519_sign(seed: bytes, msg: bytes, public: bytes | None = None) -> bytes:
    """RFC 8032 5.1.6 (deterministic): R || S."""
    s, prefix = _ed_expand(seed)
    a = public if public is not None else ed_encode(_ed_mul_base(s))
    r = _ed_hint(prefix, msg)
    rb = ed_encode(_ed_mul_base(r))
    k = _ed_hint(rb, a, msg)
    return rb + ((r + k * s) % ED_L).to_bytes(32, "little")


def ed25519_verify(public: bytes, msg: bytes, sig: bytes) -> bool:
    """RFC 8032 5.1.7 with the checks PROTOCOL.md 3.5 names (those of
    ed25519-dalek's verify_strict): canonical encodings of A and R, S < L,
    neither A nor R of small order, and the cofactorless equation
    [S]B = R + [k]A (R compared by its encoding)."""
    if len(public) != 32 or len(sig) != 64:
        return False
    a = ed_decode(public)
    r = ed_decode(sig[:32])
    s = int.from_bytes(sig[32:], "little")
    if a is None or r is None or s >= ED_L or ed_small_order(a) or ed_small_order(r):
        return False
    k = _ed_hint(sig[:32], public, msg)
    neg_a = (-a[0] % ED_P, a[1], a[2], -a[3] % ED_P)
    return ed_encode(_ed_add(_ed_mul_base(s), _ed_mul(k, neg_a))) == sig[:32]


# =============================================================================
# mcsec v2: constants, key IDs, channels, frames (PROTOCOL.md 1.1 to 1.4)
# =============================================================================

MAGIC = b"mcs\x02"               # 6d 63 73 02: "mcs", version 2
HEADER_LEN = 40
TAG_LEN = 16
OVERHEAD = HEADER_LEN + TAG_LEN  # 56: the shortest frame
MAX_DATAGRAM_V4 = 1472           # 1500 - 20 - 8
MAX_DATAGRAM_V6 = 1452           # 1500 - 40 - 8
DEFAULT_MAX_SKEW_US = 30_000_000         # 30 s into the past
DEFAULT_MAX_FUTURE_SKEW_US = 5_000_000   # 5 s into the future
DEFAULT_MAX_SENDERS = 4096
REPLAY_WINDOW = 1984             # mcsec's window (PROTOCOL.md 1.7 and 2.2)
KEY_ID_LABEL = b"mcsec v1 key id"            # 15 bytes (unchanged in v2)
CHANNEL_KEY_LABEL = b"mcsec v2 channel key"  # 20 bytes
U16_MAX = (1 << 16) - 1
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
assert len(KEY_ID_LABEL) == 15 and len(CHANNEL_KEY_LABEL) == 20

# Every reject reason has its own counter (names as in the vectors).
REJECT_REASONS = ("oversize", "malformed", "unknown_key", "stale", "replayed",
                  "auth_failed", "sender_table_full", "unknown_body", "bad_body")


def key_id_of(secret: bytes) -> int:
    """Key ID: first 4 bytes, big-endian, of SHA-256("mcsec v1 key id" || secret)."""
    return int.from_bytes(hashlib.sha256(KEY_ID_LABEL + secret).digest()[:4], "big")


# ---- channels (1.2) ---------------------------------------------------------

def channel_ipv4(addr: str, port: int) -> bytes:
    return b"\x04" + ipaddress.IPv4Address(addr).packed + port.to_bytes(2, "big")


def channel_ipv6(addr: str, port: int) -> bytes:
    """No scope ID, zone or flow label: ff02::1%eth0 and ff02::1%2 are one channel."""
    return b"\x06" + ipaddress.IPv6Address(addr.split("%", 1)[0]).packed + port.to_bytes(2, "big")


def channel_name(name: str | bytes) -> bytes:
    raw = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    raw.decode("utf-8")  # must be UTF-8 (raises UnicodeDecodeError, a ValueError)
    if not 1 <= len(raw) <= 255:
        raise ValueError("a channel name is 1 to 255 bytes of UTF-8")
    return b"\x00" + bytes([len(raw)]) + raw


def check_channel_id(cid: bytes) -> bytes:
    """Validates one of the three shapes; returns it unchanged."""
    ok = ((len(cid) == 7 and cid[0] == 4) or (len(cid) == 19 and cid[0] == 6)
          or (len(cid) >= 3 and cid[0] == 0 and cid[1] == len(cid) - 2))
    if not ok:
        raise ValueError(f"not a channel ID: {cid.hex()}")
    if cid[0] == 0:
        cid[2:].decode("utf-8")
    return cid


def describe_channel(cid: bytes) -> str:
    if cid[0] == 4:
        return f"{ipaddress.IPv4Address(cid[1:5])}:{int.from_bytes(cid[5:7], 'big')}"
    if cid[0] == 6:
        return f"[{ipaddress.IPv6Address(cid[1:17])}]:{int.from_bytes(cid[17:19], 'big')}"
    return "name " + cid[2:].decode("utf-8", "replace")


def default_max_datagram(cid: bytes) -> int:
    """2.3: 1452 for an IPv6 channel, 1472 otherwise."""
    return MAX_DATAGRAM_V6 if cid[:1] == b"\x06" else MAX_DATAGRAM_V4


# ---- keys (1.1, 1.2) --------------------------------------------------------

@dataclass
class GroupKey:
    secret: bytes
    key_id: int
    created: str | None = None
    _ck: dict[bytes, bytes] = field(default_factory=dict, repr=False, compare=False)

    def channel_key(self, channel_id: bytes) -> bytes:
        """HKDF-SHA256(salt=none, IKM=secret,
        info="mcsec v2 channel key" || key_id (4, BE) || channel_id, L=32)."""
        ck = self._ck.get(channel_id)
        if ck is None:
            info = CHANNEL_KEY_LABEL + self.key_id.to_bytes(4, "big") + channel_id
            ck = self._ck[channel_id] = hkdf_sha256(None, self.secret, info, 32)
        return ck


def make_key(secret: bytes, created: str | None = None) -> GroupKey:
    if len(secret) != 32:
        raise ValueError("secret must be 32 bytes")
    return GroupKey(secret, key_id_of(secret), created)


# ---- the frame and sealing (1.3, 1.4) ---------------------------------------

@dataclass(frozen=True)
class Header:
    key_id: int
    sender_id: bytes
    seq: int
    timestamp: int

    def pack(self) -> bytes:
        if len(self.sender_id) != 16:
            raise ValueError("sender_id must be 16 bytes")
        if not (0 <= self.key_id <= U32_MAX and 0 <= self.seq <= U64_MAX
                and 0 <= self.timestamp <= U64_MAX):
            raise ValueError("header field out of range")
        return (MAGIC + self.key_id.to_bytes(4, "big") + self.sender_id
                + self.seq.to_bytes(8, "big") + self.timestamp.to_bytes(8, "big"))

    @classmethod
    def parse(cls, frame: bytes) -> "Header":
        return cls(int.from_bytes(frame[4:8], "big"), bytes(frame[8:24]),
                   int.from_bytes(frame[24:32], "big"), int.from_bytes(frame[32:40], "big"))

    def describe(self) -> str:
        return (f"key_id={self.key_id:08x} sender_id={self.sender_id.hex()} "
                f"seq={self.seq} timestamp={self.timestamp}")


def seal(key: GroupKey, channel_id: bytes, sender_id: bytes, seq: int, timestamp: int,
         body: bytes) -> bytes:
    """One frame: header (also the AAD) || XChaCha20-Poly1305 under the channel key,
    nonce sender_id || seq. Computed the fast way of 1.4 (HChaCha20 subkey, then
    RFC 8439 with nonce 00000000 || seq); the selftest checks both ways agree."""
    header = Header(key.key_id, sender_id, seq, timestamp).pack()
    subkey = hchacha20(key.channel_key(channel_id), sender_id)
    return header + aead_encrypt(subkey, b"\x00" * 4 + seq.to_bytes(8, "big"), body, header)


def seal_slow(key: GroupKey, channel_id: bytes, sender_id: bytes, seq: int, timestamp: int,
              body: bytes) -> bytes:
    """The same frame through the generic XChaCha20-Poly1305 with the 24-byte nonce."""
    header = Header(key.key_id, sender_id, seq, timestamp).pack()
    return header + xchacha_aead_encrypt(key.channel_key(channel_id),
                                         sender_id + seq.to_bytes(8, "big"), body, header)


def open_frame(key: GroupKey, channel_id: bytes, frame: bytes) -> bytes | None:
    """AEAD open of a frame whose header was already parsed; None if it fails."""
    sender_id = bytes(frame[8:24])
    subkey = hchacha20(key.channel_key(channel_id), sender_id)
    return aead_decrypt(subkey, b"\x00" * 4 + bytes(frame[24:32]),
                        bytes(frame[HEADER_LEN:]), bytes(frame[:HEADER_LEN]))


# =============================================================================
# Bodies (1.5, 2.1): exact encoding, strict decoding
# =============================================================================

class BadBody(ValueError):
    """A known variant that does not decode (counted bad_body)."""


class UnknownBody(ValueError):
    """A variant number this implementation does not know (counted unknown_body)."""


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128, minimal: 7 bits per byte, low group first."""
    if n < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_VARINT_BYTES = {16: 3, 32: 5, 64: 10}


def decode_varint(buf: bytes, pos: int, bits: int) -> tuple[int, int]:
    """A minimal varint that fits a u16/u32/u64 field; returns (value, new pos).
    Raises BadBody if truncated, longer than the field allows, non-minimal, or
    too large for the field."""
    max_bytes = _VARINT_BYTES[bits]
    value = 0
    for i in range(max_bytes):
        if pos >= len(buf):
            raise BadBody(f"truncated varint (u{bits})")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if i > 0 and b == 0:
                raise BadBody(f"non-minimal varint (u{bits})")
            if value >> bits:
                raise BadBody(f"varint too large for u{bits}")
            return value, pos
    raise BadBody(f"varint longer than {max_bytes} bytes (u{bits})")


class _Reader:
    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def varint(self, bits: int) -> int:
        v, self.pos = decode_varint(self.buf, self.pos, bits)
        return v

    def fixed(self, n: int, what: str) -> bytes:
        if len(self.buf) - self.pos < n:
            raise BadBody(f"truncated {what}")
        b = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return b

    def bytes_(self, what: str) -> bytes:
        return self.fixed(self.varint(64), what)

    def str_(self, what: str) -> str:
        raw = self.bytes_(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadBody(f"{what} is not UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise BadBody(f"{len(self.buf) - self.pos} byte(s) after the body")


@dataclass(frozen=True)
class Data:
    payload: bytes


@dataclass(frozen=True)
class Fragment:
    msg_id: int
    index: int
    count: int
    total_len: int
    piece: bytes


@dataclass(frozen=True)
class Chat:
    nick: str
    text: str


@dataclass(frozen=True)
class FileSymbol:
    file_id: int
    file_len: int
    symbol_size: int
    source_blocks: int
    sbn: int
    esi: int
    sha256: bytes
    name: str
    symbol: bytes


@dataclass(frozen=True)
class StreamSymbol:
    """Variant 5 (2.1): one symbol of a file cut into blocks of K source symbols."""
    file_id: int        # u32
    file_len: int       # u64: F
    symbol_size: int    # u16: T
    block_symbols: int  # u32: K
    block: int          # u64: b
    esi: int            # u32
    sha256: bytes       # 32 bytes, of the whole file
    path: str           # '/'-separated suggestion, sanitized before use
    symbol: bytes


@dataclass(frozen=True)
class Manifest:
    """Variant 4 (3.3): frame hashes of one sender session, signed."""
    signer_id: bytes   # 8 bytes
    first_seq: int     # u64
    hashes: bytes      # count x 16 bytes (checked by the trusting receiver, not here)
    signature: bytes   # 64 bytes: R || S


Body = Data | Fragment | Chat | FileSymbol | Manifest | StreamSymbol


def _b(x: bytes) -> bytes:
    return encode_varint(len(x)) + x


def encode_body(b: Body) -> bytes:
    if isinstance(b, Data):
        return b"\x00" + _b(b.payload)
    if isinstance(b, Fragment):
        return (b"\x01" + encode_varint(b.msg_id) + encode_varint(b.index)
                + encode_varint(b.count) + encode_varint(b.total_len) + _b(b.piece))
    if isinstance(b, Chat):
        return b"\x02" + _b(b.nick.encode()) + _b(b.text.encode())
    if isinstance(b, FileSymbol):
        return (b"\x03" + encode_varint(b.file_id) + encode_varint(b.file_len)
                + encode_varint(b.symbol_size) + bytes([b.source_blocks, b.sbn])
                + encode_varint(b.esi) + b.sha256 + _b(b.name.encode()) + _b(b.symbol))
    if isinstance(b, Manifest):
        if len(b.signer_id) != 8 or len(b.signature) != 64:
            raise ValueError("a Manifest has an 8-byte signer ID and a 64-byte signature")
        return b"\x04" + b.signer_id + encode_varint(b.first_seq) + _b(b.hashes) + b.signature
    if isinstance(b, StreamSymbol):
        if len(b.sha256) != 32:
            raise ValueError("a StreamSymbol has a 32-byte SHA-256")
        return (b"\x05" + encode_varint(b.file_id) + encode_varint(b.file_len)
                + encode_varint(b.symbol_size) + encode_varint(b.block_symbols)
                + encode_varint(b.block) + encode_varint(b.esi) + b.sha256
                + _b(b.path.encode()) + _b(b.symbol))
    raise TypeError(b)


def encode_data_body(payload: bytes) -> bytes:
    return encode_body(Data(payload))


def decode_body(body: bytes) -> Body:
    """Decodes exactly one body. Raises UnknownBody for a variant number other
    than 0-5, BadBody for a known variant that does not decode. The variant
    number is read as a u32 varint (PROTOCOL.md does not give its field size:
    see the report); a variant varint that is itself malformed is BadBody."""
    r = _Reader(body, 0)
    variant = r.varint(32)
    if variant == 0:
        out: Body = Data(r.bytes_("payload"))
    elif variant == 1:
        out = Fragment(r.varint(32), r.varint(32), r.varint(32), r.varint(32), r.bytes_("piece"))
    elif variant == 2:
        out = Chat(r.str_("nick"), r.str_("text"))
    elif variant == 3:
        file_id, file_len, t = r.varint(32), r.varint(64), r.varint(16)
        z, sbn = r.fixed(1, "source_blocks")[0], r.fixed(1, "sbn")[0]
        out = FileSymbol(file_id, file_len, t, z, sbn, r.varint(32), r.fixed(32, "sha256"),
                         r.str_("name"), r.bytes_("symbol"))
    elif variant == 4:
        out = Manifest(r.fixed(8, "signer_id"), r.varint(64), r.bytes_("hashes"),
                       r.fixed(64, "signature"))
    elif variant == 5:
        file_id, file_len, t = r.varint(32), r.varint(64), r.varint(16)
        k, block, esi = r.varint(32), r.varint(64), r.varint(32)
        out = StreamSymbol(file_id, file_len, t, k, block, esi, r.fixed(32, "sha256"),
                           r.str_("path"), r.bytes_("symbol"))
    else:
        raise UnknownBody(f"variant {variant}")
    r.end()
    return out


# ---- receiving-layer checks of 2.1 (after the body decoded) -----------------

def fragment_verdict(f: Fragment, max_message: int = 1 << 20) -> str | None:
    """What one piece alone says (2.1 Variant 1): None if consistent, else the
    reassembly counter. The piece-size rules that need other pieces of the
    same message are the reassembler's; this checks what one piece can."""
    if f.total_len > max_message:
        return "oversize"
    n = len(f.piece)
    if f.count < 1 or f.index >= f.count:
        return "conflict"  # PROTOCOL.md names no counter for this: see the report
    if f.count == 1:
        return None if n == f.total_len else "conflict"
    if f.total_len < f.count:
        return "conflict"
    if f.index == f.count - 1:  # the last piece alone
        rest = f.total_len - n
        if n < 1 or rest % (f.count - 1) or rest // (f.count - 1) < n:
            return "conflict"
        return None
    s = n
    last = f.total_len - (f.count - 1) * s
    return None if s >= 1 and 1 <= last <= s else "conflict"


RFC6330_MAX_F = 942_574_504_275


def partition(i: int, j: int) -> tuple[int, int, int, int]:
    """RFC 6330 4.4.1.2: Partition[I, J] = (IL, IS, JL, JS)."""
    il, is_ = -(-i // j), i // j
    jl = i - is_ * j
    return il, is_, jl, j - jl


def file_symbol_verdict(s: FileSymbol, max_file: int = 64 << 20) -> str | None:
    """2.1 Variant 3's receiver limits on one symbol: None, 'oversize' or 'invalid'."""
    if s.file_len > max_file or s.file_len > RFC6330_MAX_F:
        return "oversize"
    if s.file_len < 1 or s.symbol_size < 1 or s.source_blocks < 1:
        return "invalid"  # 'file_len >= 1', 'T >= 1', 'Z >= 1': no counter named
    kt = -(-s.file_len // s.symbol_size)
    if s.source_blocks > kt or s.sbn >= s.source_blocks:
        return "invalid"
    if s.esi >= 1 << 21 or len(s.symbol) != s.symbol_size or len(s.name.encode()) > 255:
        return "invalid"
    kl = partition(kt, s.source_blocks)[0]  # the largest block
    if kl > 8192 or kl * s.symbol_size > 16 << 20:
        return "invalid"
    return None


# ---- variant 5: blocks, receiver limits, paths (2.1 Variant 5) --------------

STREAM_MAX_FILE = 16 << 30           # mcsec's default --max-file for variant 5 (16 GiB)
STREAM_MAX_BLOCK_SYMBOLS = 8192      # K <= 8192
STREAM_MAX_BLOCK_BYTES = 4 << 20     # K x T <= 4 MiB
STREAM_MAX_PATH = 1024               # bytes of UTF-8
STREAM_MAX_ESI = 1 << 21             # esi < 2^21
COMPONENT_MAX = 255                  # bytes: what a file system takes in one name
# The body's fields around the symbol at their longest, without the path:
# variant (1), file_id (5), file_len (10), T (3), K (5), block (10), esi (5),
# sha256 (32), path length (2: under 16 KiB), symbol length (3).
STREAM_FIELDS_MAX = 1 + 5 + 10 + 3 + 5 + 10 + 5 + 32 + 2 + 3


@dataclass(frozen=True)
class StreamLayout:
    """How variant 5 cuts F bytes: Kt = ceil(F / T) source symbols, B = ceil(Kt / K)
    blocks, K_b = K in every block but the last, which holds Kt - (B - 1) x K."""
    file_len: int       # F >= 1
    symbol_size: int    # T >= 1
    block_symbols: int  # K >= 1

    def __post_init__(self) -> None:
        if self.file_len < 1 or self.symbol_size < 1 or self.block_symbols < 1:
            raise ValueError("F, T and K must each be at least 1")

    @property
    def total_symbols(self) -> int:
        return -(-self.file_len // self.symbol_size)

    @property
    def blocks(self) -> int:
        return -(-self.total_symbols // self.block_symbols)

    def symbols_in(self, b: int) -> int:
        """K_b."""
        if not 0 <= b < self.blocks:
            raise ValueError(f"block {b} of {self.blocks}")
        if b < self.blocks - 1:
            return self.block_symbols
        return self.total_symbols - (self.blocks - 1) * self.block_symbols

    def block_span(self, b: int) -> tuple[int, int]:
        """(offset, length) of block b's bytes in the file: from b x K x T,
        min(K_b x T, F - offset) of them (then zero-padded to K_b x T)."""
        off = b * self.block_symbols * self.symbol_size
        return off, min(self.symbols_in(b) * self.symbol_size, self.file_len - off)

    def symbol_offset(self, b: int, esi: int) -> int:
        """Where source symbol esi of block b starts in the file: (b x K + esi) x T."""
        return (b * self.block_symbols + esi) * self.symbol_size

    def source_symbol(self, data: bytes, b: int, esi: int) -> bytes:
        """Source symbol esi < K_b of block b: T bytes of the file from
        (b x K + esi) x T, zero-padded."""
        if not 0 <= esi < self.symbols_in(b):
            raise ValueError(f"ESI {esi} is not a source symbol of block {b}")
        off = self.symbol_offset(b, esi)
        return data[off:off + self.symbol_size].ljust(self.symbol_size, b"\x00")


def stream_path_components(path: str) -> list[str]:
    """The components of a variant-5 path as far as PROTOCOL.md fixes them:
    split on '/', empty and '.' components ignored. ValueError for a path
    over 1024 bytes or with a '..' component (counted 'invalid')."""
    if len(path.encode()) > STREAM_MAX_PATH:
        raise ValueError(f"path over {STREAM_MAX_PATH} bytes")
    parts = path.split("/")
    if ".." in parts:
        raise ValueError("path has a '..' component")
    return [c for c in parts if c not in ("", ".")]


def sanitize_component(c: str) -> str | None:
    """Variant 3's name rules, as PROTOCOL.md states them, for one component:
    control, bidi, zero-width and line/paragraph separator characters
    (Unicode Cc, Cf, Zl, Zp) and the separators '/' and '\\' become '_', a
    leading dot becomes '_' (so never '.' or '..'), and the name is cut to
    255 bytes on a character boundary. None if nothing is left. The exact
    replacements are this implementation's: the spec fixes what is refused,
    not what replaces it."""
    out = "".join("_" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") or ch in "/\\"
                  else ch for ch in c)
    if out.startswith("."):
        out = "_" + out[1:]
    out = out.encode()[:COMPONENT_MAX].decode("utf-8", "ignore")
    return out or None


def stream_symbol_verdict(s: StreamSymbol, max_file: int = STREAM_MAX_FILE) -> str | None:
    """2.1 Variant 5's receiver limits on one symbol: None, 'oversize' or 'invalid'."""
    if s.file_len > max_file:
        return "oversize"
    if s.file_len < 1 or s.symbol_size < 1 or s.block_symbols < 1:
        return "invalid"
    if (s.block_symbols > STREAM_MAX_BLOCK_SYMBOLS
            or s.block_symbols * s.symbol_size > STREAM_MAX_BLOCK_BYTES):
        return "invalid"
    if s.block >= StreamLayout(s.file_len, s.symbol_size, s.block_symbols).blocks:
        return "invalid"
    if s.esi >= STREAM_MAX_ESI or len(s.symbol) != s.symbol_size:
        return "invalid"
    try:
        stream_path_components(s.path)
    except ValueError:
        return "invalid"
    return None


def stream_symbol_size(max_datagram: int, path: str) -> int:
    """A T that fits one frame of max_datagram bytes with this path: the
    frame less header and tag, less the body's fields at their longest."""
    return min(0xFFFF, max_datagram - OVERHEAD - STREAM_FIELDS_MAX - len(path.encode()))


def stream_block_symbols(t: int) -> int:
    """mcsec's K (informative): min(2048, floor(4 MiB / T))."""
    return min(2048, STREAM_MAX_BLOCK_BYTES // t)


def stream_source_symbols(file_id: int, data: bytes, t: int, k: int,
                          path: str) -> list[StreamSymbol]:
    """Every source symbol of every block, block by block, in ESI order: all a
    receiver needs when nothing is lost (no repair symbols: no RaptorQ)."""
    lay = StreamLayout(len(data), t, k)
    sha = hashlib.sha256(data).digest()
    return [StreamSymbol(file_id, len(data), t, k, b, esi, sha, path, lay.source_symbol(data, b, esi))
            for b in range(lay.blocks) for esi in range(lay.symbols_in(b))]


@dataclass(frozen=True)
class StreamFile:
    """A file rebuilt from its source symbols, its SHA-256 checked."""
    key_id: int
    sender_id: bytes
    file_id: int
    path: str
    data: bytes


@dataclass
class _StreamPartial:
    params: tuple       # (F, T, K, sha256, path): what every symbol must repeat
    layout: StreamLayout
    symbols: dict[tuple[int, int], bytes] = field(default_factory=dict)


STREAM_COUNTERS = ("files_completed", "file_hash_mismatch", "file_oversize", "file_invalid",
                   "file_conflict", "file_duplicate", "file_extra", "file_repair_ignored")


class StreamFileReceiver:
    """Rebuilds variant-5 files from their source symbols alone: it has no
    RaptorQ decoder, so repair symbols (ESI >= K_b) are counted and ignored,
    and a file completes once every source symbol of every block arrived.
    A file is keyed by (key_id, sender_id, file_id). Symbols are held in
    memory: this is a checker for small files, not a file receiver."""

    def __init__(self, max_file: int = STREAM_MAX_FILE) -> None:
        self.max_file = max_file
        self.partials: dict[tuple[int, bytes, int], _StreamPartial] = {}
        self.done: set[tuple[int, bytes, int]] = set()
        self.counters = dict.fromkeys(STREAM_COUNTERS, 0)

    def push(self, key_id: int, sender_id: bytes, s: StreamSymbol) -> StreamFile | None:
        """One authentic symbol; returns the file it completes, if any."""
        why = stream_symbol_verdict(s, self.max_file)
        if why is not None:
            self.counters[f"file_{why}"] += 1
            return None
        key = (key_id, sender_id, s.file_id)
        if key in self.done:
            self.counters["file_extra"] += 1
            return None
        params = (s.file_len, s.symbol_size, s.block_symbols, s.sha256, s.path)
        p = self.partials.get(key)
        if p is None:
            p = self.partials[key] = _StreamPartial(
                params, StreamLayout(s.file_len, s.symbol_size, s.block_symbols))
        elif p.params != params:
            del self.partials[key]  # "drop the file": a later symbol starts it afresh
            self.counters["file_conflict"] += 1
            return None
        if s.esi >= p.layout.symbols_in(s.block):
            self.counters["file_repair_ignored"] += 1
            return None
        if (s.block, s.esi) in p.symbols:
            self.counters["file_duplicate"] += 1
            return None
        p.symbols[(s.block, s.esi)] = s.symbol
        if len(p.symbols) < p.layout.total_symbols:
            return None
        del self.partials[key]
        data = b"".join(p.symbols[(b, e)] for b in range(p.layout.blocks)
                        for e in range(p.layout.symbols_in(b)))[:s.file_len]
        if hashlib.sha256(data).digest() != s.sha256:
            self.counters["file_hash_mismatch"] += 1  # discarded; a later symbol starts afresh
            return None
        self.done.add(key)
        self.counters["files_completed"] += 1
        return StreamFile(key_id, sender_id, s.file_id, s.path, data)


def save_stream_file(save_dir: Path, f: StreamFile) -> Path:
    """Creates f under save_dir at its sanitized path, making the directories,
    never following a link and never overwriting: NAME, then NAME-1.EXT,
    NAME-2.EXT, ... A path with nothing usable is saved as file-<file_id>."""
    comps = [c for c in (sanitize_component(x) for x in stream_path_components(f.path)) if c]
    if not comps:
        comps = [f"file-{f.file_id}"]
    d = save_dir
    for c in comps[:-1]:
        d = d / c
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            if d.is_symlink() or not d.is_dir():
                raise OSError(f"{d} exists and is not a directory") from None
    stem, ext = os.path.splitext(comps[-1])
    n = 0
    while True:
        target = d / (comps[-1] if n == 0 else f"{stem}-{n}{ext}")
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            n += 1
            continue
        with os.fdopen(fd, "wb") as out:
            out.write(f.data)
        return target


# =============================================================================
# Key files (1.1): the exact grammar
# =============================================================================

class KeyFileError(Exception):
    pass


@dataclass
class Keyring:
    keys: dict[int, GroupKey]  # by key ID, in file order
    send_key: GroupKey         # the LAST key line

    @classmethod
    def of(cls, secrets_: list[bytes]) -> "Keyring":
        keys: dict[int, GroupKey] = {}
        for s in secrets_:
            k = make_key(s)
            if k.key_id in keys:
                raise ValueError(f"duplicate key ID {k.key_id:08x}")
            keys[k.key_id] = k
        return cls(keys, list(keys.values())[-1])


# key-line = "mcsec-key-v1" SP key-id SP secret [SP "created=" stamp]
_KEY_LINE = re.compile(
    r"mcsec-key-v1 ([0-9a-f]{8}) ([0-9a-f]{64})"
    r"(?: created=([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.[0-9]{1,9})?Z)?", re.ASCII)
# comment = "#" *( %x09 / %x20-7E / %x80-10FFFF )
_COMMENT = re.compile(r"#[\t\x20-\x7e\u0080-\ud7ff\ue000-\U0010ffff]*")


def _real_utc(y: int, mo: int, d: int, h: int, mi: int, s: int) -> bool:
    """Proleptic Gregorian, years 0000-9999, no leap second."""
    if not (1 <= mo <= 12 and h <= 23 and mi <= 59 and s <= 59):
        return False
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][mo - 1]
    return 1 <= d <= days


def _split_lines(text: str) -> list[str]:
    """key-file = *line [last]; eol = LF / CR LF. Only the one CR directly
    before an LF belongs to the line end; any other CR stays in the content
    (where no rule allows it)."""
    parts = text.split("\n")
    lines = [p[:-1] if p.endswith("\r") else p for p in parts[:-1]]
    if parts[-1] != "":
        lines.append(parts[-1])  # a final line without an end: kept whole
    return lines


def parse_keyfile_text(text: str) -> Keyring:
    """Parse key file contents exactly as the ABNF says. Errors name the line by
    its number, never by its content (it may hold a secret)."""
    keys: dict[int, GroupKey] = {}
    last: GroupKey | None = None
    for lineno, line in enumerate(_split_lines(text), start=1):
        if line == "":
            continue
        if line[0] == "#":
            if not _COMMENT.fullmatch(line):
                raise KeyFileError(f"line {lineno}: a comment may hold only tabs, printable "
                                   f"ASCII and characters from U+0080 up")
            continue
        m = _KEY_LINE.fullmatch(line)
        if not m:
            raise KeyFileError(
                f"line {lineno}: not an empty line, a comment ('#' first) or a key line "
                f"'mcsec-key-v1 KEYID SECRET [created=YYYY-MM-DDTHH:MM:SS[.frac]Z]' "
                f"(lowercase hex, single spaces, nothing else)")
        kid_hex, secret_hex = m.group(1), m.group(2)
        created = None
        if m.group(3) is not None:
            if not _real_utc(*(int(g) for g in m.groups()[2:8])):
                raise KeyFileError(f"line {lineno}: created= is not a real UTC date and time")
            created = line[line.index(" created=") + len(" created="):]
        key = make_key(bytes.fromhex(secret_hex), created)
        if key.key_id != int(kid_hex, 16):
            raise KeyFileError(f"line {lineno}: key ID does not match the secret (corrupt key line)")
        if key.key_id in keys:
            raise KeyFileError(f"line {lineno}: duplicate key ID {key.key_id:08x}")
        keys[key.key_id] = key
        last = key
    if last is None:
        raise KeyFileError("no key line")
    return Keyring(keys, last)


def parse_keyfile_bytes(data: bytes) -> Keyring:
    try:
        text = data.decode("utf-8")  # strict: no surrogates, no overlongs
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise KeyFileError(f"line {line}: not valid UTF-8") from None
    return parse_keyfile_text(text)


def load_keyfile(path: str) -> Keyring:
    """Read and parse a key file, refusing (on POSIX) one that group or others can read."""
    try:
        with open(path, "rb") as f:
            if os.name == "posix":
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
                if mode & (stat.S_IRGRP | stat.S_IROTH):
                    raise KeyFileError(
                        f"{path}: key file mode {mode:04o} lets group or others read it; "
                        f"refusing to use it. Fix: chmod 600 {path}")
            data = f.read()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return parse_keyfile_bytes(data)
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e}") from None


# =============================================================================
# Receiving (1.7, 2.2): the ordered checks, the window, the sender table
# =============================================================================

def _sat_sub(a: int, b: int) -> int:
    """Differences are computed without wrapping, saturating at 0 (2.2)."""
    return a - b if a > b else 0


@dataclass
class SenderState:
    newest: int      # newest accepted seq
    bitmap: int      # bit i set: seq (newest - i) accepted; i < REPLAY_WINDOW
    newest_ts: int   # newest accepted timestamp (eviction, forgotten mark)

    def is_replay(self, seq: int) -> bool:
        """Seq already accepted, or older than the window."""
        if seq > self.newest:
            return False
        age = self.newest - seq
        if age >= REPLAY_WINDOW:  # newest - 1983 is inside, newest - 1984 out
            return True
        return bool(self.bitmap >> age & 1)

    def commit(self, seq: int, ts: int) -> None:
        if seq > self.newest:
            shift = seq - self.newest
            kept = self.bitmap << shift if shift < REPLAY_WINDOW else 0
            self.bitmap = (kept | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.newest = seq
        else:
            self.bitmap |= 1 << (self.newest - seq)
        self.newest_ts = max(self.newest_ts, ts)


@dataclass
class Verdict:
    reason: str                 # "ok" or a reject counter's name
    header: Header | None = None
    plaintext: bytes | None = None
    body: Body | None = None

    @property
    def ok(self) -> bool:
        return self.reason == "ok"


class Receiver:
    """One receiver: a keyring, its channel ID, settings, and its sender table."""

    def __init__(self, keyring: Keyring, channel_id: bytes, *,
                 max_skew: int = DEFAULT_MAX_SKEW_US,
                 max_future_skew: int = DEFAULT_MAX_FUTURE_SKEW_US,
                 max_senders: int = DEFAULT_MAX_SENDERS,
                 max_datagram: int | None = None,
                 strict_start: int | None = None) -> None:
        self.keyring = keyring
        self.channel_id = check_channel_id(channel_id)
        self.max_skew = max_skew
        self.max_future_skew = max_future_skew
        self.max_senders = max_senders
        self.max_datagram = max_datagram if max_datagram is not None else default_max_datagram(channel_id)
        self.strict_start = strict_start  # receiver start (us) in strict mode, else None
        self.senders: dict[tuple[int, bytes], SenderState] = {}  # insertion order kept
        self.forgotten_mark: int | None = None  # newest timestamp of any evicted sender
        self.reload_marks: dict[int, int] = {}  # per key ID: newest timestamp of a sender a reload forgot
        # manifests_ignored (3.5, last paragraph): a Manifest this receiver,
        # which trusts nobody, committed and then dropped instead of delivering.
        self.counters = {"delivered": 0, **{r: 0 for r in REJECT_REASONS}, "manifests_ignored": 0}

    def _forget(self, st: SenderState) -> None:
        if self.forgotten_mark is None or st.newest_ts > self.forgotten_mark:
            self.forgotten_mark = st.newest_ts

    def receive(self, d: bytes, now: int) -> Verdict:
        """Steps 1 to 8 of 1.7, in order; counts the verdict."""
        v = self._receive(bytes(d), now)
        if v.ok and isinstance(v.body, Manifest):
            self.counters["manifests_ignored"] += 1
        else:
            self.counters["delivered" if v.ok else v.reason] += 1
        return v

    def _receive(self, d: bytes, now: int) -> Verdict:
        opened = self._open(d, now)
        if isinstance(opened, Verdict):
            return opened
        h, plain = opened
        why = self._commit(h, now)
        if why is not None:
            return Verdict(why, h)
        # 8. decode the body
        try:
            body = decode_body(plain)
        except UnknownBody:
            return Verdict("unknown_body", h, plain)
        except BadBody:
            return Verdict("bad_body", h, plain)
        return Verdict("ok", h, plain, body)

    def _open(self, d: bytes, now: int) -> Verdict | tuple[Header, bytes]:
        """Steps 1 to 6: a reject Verdict, or the header and the plaintext."""
        # 1. length
        if len(d) > self.max_datagram:
            return Verdict("oversize")
        if len(d) < OVERHEAD:
            return Verdict("malformed")
        # 2. magic and version
        if d[:4] != MAGIC:
            return Verdict("malformed")
        h = Header.parse(d)
        # 3. key
        key = self.keyring.keys.get(h.key_id)
        if key is None:
            return Verdict("unknown_key")
        # 4. freshness, both bounds inclusive; strict mode: not before our start
        if (_sat_sub(now, h.timestamp) > self.max_skew
                or _sat_sub(h.timestamp, now) > self.max_future_skew
                or (self.strict_start is not None and h.timestamp < self.strict_start)):
            return Verdict("stale")
        # 5. replay pre-check (known sender) / forgotten-sender mark (unknown sender)
        sk = (h.key_id, h.sender_id)
        st = self.senders.get(sk)
        if st is not None:
            if st.is_replay(h.seq):
                return Verdict("replayed")
        elif ((self.forgotten_mark is not None and h.timestamp <= self.forgotten_mark)
              or (h.key_id in self.reload_marks and h.timestamp <= self.reload_marks[h.key_id])):
            return Verdict("stale")
        # 6. AEAD under this key's channel key for our channel
        plain = open_frame(key, self.channel_id, d)
        if plain is None:
            return Verdict("auth_failed")
        return h, plain

    def _commit(self, h: Header, now: int) -> str | None:
        """Step 7: mark seq in the sender's window, or create the sender (which
        may evict an idle one); 'sender_table_full' if nobody may be evicted."""
        sk = (h.key_id, h.sender_id)
        st = self.senders.get(sk)
        if st is not None:
            st.commit(h.seq, h.timestamp)
            return None
        if len(self.senders) >= self.max_senders:
            if not self.senders:
                return "sender_table_full"  # max_senders == 0
            # The sender with the oldest newest timestamp (the first such
            # in table order on a tie), if strictly older than now - max_skew.
            vk = min(self.senders, key=lambda k: self.senders[k].newest_ts)
            if not self.senders[vk].newest_ts < _sat_sub(now, self.max_skew):
                return "sender_table_full"
            self._forget(self.senders.pop(vk))
        self.senders[sk] = SenderState(h.seq, 1, h.timestamp)
        return None

    def reload(self, keyring: Keyring) -> None:
        """2.2 keyring reload: senders under keys that remain with the same secret
        keep their windows; the others are forgotten (the mark moves)."""
        for sk in list(self.senders):
            old = self.keyring.keys.get(sk[0])
            new = keyring.keys.get(sk[0])
            if old is None or new is None or new.secret != old.secret:
                st = self.senders.pop(sk)
                self.reload_marks[sk[0]] = max(self.reload_marks.get(sk[0], st.newest_ts), st.newest_ts)
        self.keyring = keyring


def now_us() -> int:
    return time.time_ns() // 1000


# =============================================================================
# Part 3: signed senders (PROTOCOL.md 3.1 to 3.5)
# =============================================================================

SIGNER_ID_LABEL = b"mcsec v2 signer id"    # 18 bytes
MANIFEST_LABEL = b"mcsec v2 manifest"      # 17 bytes
assert len(SIGNER_ID_LABEL) == 18 and len(MANIFEST_LABEL) == 17
FRAME_HASH_LEN = 16
MAX_MANIFEST_HASHES = 4096                 # 3.3: at most 16 x 4096 bytes of hashes
DEFAULT_SIG_HOLD_US = 2_000_000            # 3.5: --sig-hold, 2 s
HOLD_MAX_FRAMES = 4096                     # 3.5: at most 4096 frames held ...
HOLD_MAX_BYTES = 8 << 20                   # ... and 8 MiB, each frame counted as
HELD_FRAME_OVERHEAD = 160                  # its datagram's length plus 160 bytes
RECORDS_PER_SENDER = 16                    # 3.5: the 16 most recently verified manifests
RECORD_MAX_SENDERS = 1024                  # ... for at most 1024 senders
DEFAULT_SIGN_EVERY = 64                    # 3.4: --sign-every
DEFAULT_SIGN_INTERVAL_MS = 10              # 3.4: --sign-interval
# Every counter of 3.5, in PROTOCOL.md's order (the `counts` line of 3.6).
SIG_COUNTERS = ("manifests_verified", "manifest_duplicate", "sig_untrusted", "sig_invalid",
                "sig_bad", "sig_forged", "sig_unsigned", "sig_expired", "sig_hold_full",
                "sig_conflict")


def signer_id_of(public: bytes) -> bytes:
    """3.1: first 8 bytes of SHA-256("mcsec v2 signer id" || public)."""
    return hashlib.sha256(SIGNER_ID_LABEL + public).digest()[:8]


def frame_hash(datagram: bytes) -> bytes:
    """3.2: first 16 bytes of SHA-256 over the whole datagram as sent."""
    return hashlib.sha256(datagram).digest()[:FRAME_HASH_LEN]


def manifest_message(channel_id: bytes, key_id: int, sender_id: bytes, first_seq: int,
                     hashes: bytes) -> bytes:
    """3.3: the signed message."""
    return (MANIFEST_LABEL + channel_id + key_id.to_bytes(4, "big") + sender_id
            + first_seq.to_bytes(8, "big") + hashes)


def manifest_verdict(m: Manifest) -> str | None:
    """3.3's checks after the body decoded: None, or 'sig_invalid'."""
    n, rest = divmod(len(m.hashes), FRAME_HASH_LEN)
    if rest or not 1 <= n <= MAX_MANIFEST_HASHES or m.first_seq + n - 1 > U64_MAX:
        return "sig_invalid"
    return None


@dataclass(frozen=True)
class Signer:
    """A signing key (3.1): the seed, its public key and signer ID."""
    seed: bytes
    public: bytes
    signer_id: bytes
    created: str | None = None

    @classmethod
    def from_seed(cls, seed: bytes, created: str | None = None) -> "Signer":
        public = ed25519_public(seed)
        return cls(seed, public, signer_id_of(public), created)

    def manifest(self, channel_id: bytes, key_id: int, sender_id: bytes, first_seq: int,
                 hashes: bytes) -> Manifest:
        msg = manifest_message(channel_id, key_id, sender_id, first_seq, hashes)
        return Manifest(self.signer_id, first_seq, hashes,
                        ed25519_sign(self.seed, msg, self.public))

    def trust_line(self, name: str | None = None) -> str:
        return (f"mcsec-signer-public-v1 {self.signer_id.hex()} {self.public.hex()}"
                + (f" {name}" if name else ""))


@dataclass(frozen=True)
class TrustedSigner:
    """One trust line (3.1)."""
    signer_id: bytes
    public: bytes
    name: str | None = None

    def label(self) -> str:
        """What a receiver shows: the name, else the signer ID in hex."""
        return self.name or self.signer_id.hex()


# ---- signing key files and trust files (3.1) ---------------------------------

_STAMP = (r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
          r"(?:\.[0-9]{1,9})?Z")
# signer-line = "mcsec-signer-v1" SP signer-id SP seed [SP "created=" stamp]
_SIGNER_LINE = re.compile(r"mcsec-signer-v1 ([0-9a-f]{16}) ([0-9a-f]{64})(?: created=(%s))?"
                          % _STAMP, re.ASCII)
# trust-line = "mcsec-signer-public-v1" SP signer-id SP public [SP name]
# name = 1*64( ALPHA / DIGIT / "-" / "_" / "." / "@" )
NAME_RE = r"[A-Za-z0-9_.@-]{1,64}"
_TRUST_LINE = re.compile(r"mcsec-signer-public-v1 ([0-9a-f]{16}) ([0-9a-f]{64})(?: (%s))?"
                         % NAME_RE, re.ASCII)


def _content_lines(text: str, line_re: re.Pattern, what: str):
    """The lines of a 1.1-style file (eol, comment, empty lines) whose content
    must otherwise fully match line_re: yields (line number, match). Errors
    name the line by its number, never by its content."""
    for lineno, line in enumerate(_split_lines(text), start=1):
        if line == "":
            continue
        if line[0] == "#":
            if not _COMMENT.fullmatch(line):
                raise KeyFileError(f"line {lineno}: a comment may hold only tabs, printable "
                                   f"ASCII and characters from U+0080 up")
            continue
        m = line_re.fullmatch(line)
        if not m:
            raise KeyFileError(f"line {lineno}: not an empty line, a comment ('#' first) or {what} "
                               f"(lowercase hex, single spaces, nothing else)")
        yield lineno, m


def _stamp_of(m: re.Match, first_group: int, lineno: int) -> str | None:
    """The created= stamp (group first_group) checked as a real UTC date and time."""
    if m.group(first_group) is None:
        return None
    if not _real_utc(*(int(g) for g in m.groups()[first_group:first_group + 6])):
        raise KeyFileError(f"line {lineno}: created= is not a real UTC date and time")
    return m.group(first_group)


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise KeyFileError(f"line {line}: not valid UTF-8") from None


def parse_signer_text(text: str) -> Signer:
    """3.1 signing key file: exactly one signer line whose signer ID is that of
    the seed's public key."""
    found: Signer | None = None
    for lineno, m in _content_lines(text, _SIGNER_LINE,
                                    "a signer line 'mcsec-signer-v1 SIGNERID SEED [created=STAMP]'"):
        created = _stamp_of(m, 3, lineno)
        if found is not None:
            raise KeyFileError(f"line {lineno}: a second signer line (a signing key file "
                               f"holds exactly one)")
        sg = Signer.from_seed(bytes.fromhex(m.group(2)), created)
        if sg.signer_id.hex() != m.group(1):
            raise KeyFileError(f"line {lineno}: signer ID does not match the seed (corrupt signer line)")
        found = sg
    if found is None:
        raise KeyFileError("no signer line")
    return found


def parse_trust_text(text: str, check_points: bool = True) -> list[TrustedSigner]:
    """3.1 trust file: one or more trust lines; each signer ID that of its
    public key; no two lines with one signer ID or one name. With check_points
    (the default; PROTOCOL.md does not say, see the report) a public key that
    is not a canonical encoding of a curve point of large order is refused: no
    signature could ever verify under it."""
    out: list[TrustedSigner] = []
    ids: set[bytes] = set()
    labels: set[str] = set()  # 3.1: a line's name, else its signer ID in hex
    for lineno, m in _content_lines(text, _TRUST_LINE,
                                    "a trust line 'mcsec-signer-public-v1 SIGNERID PUBLIC [NAME]'"):
        sid, public, name = bytes.fromhex(m.group(1)), bytes.fromhex(m.group(2)), m.group(3)
        if signer_id_of(public) != sid:
            raise KeyFileError(f"line {lineno}: signer ID {sid.hex()} is not that of its public key")
        if check_points:
            pt = ed_decode(public)
            if pt is None or ed_small_order(pt):
                raise KeyFileError(f"line {lineno}: the public key is not a usable Ed25519 key "
                                   f"({'not a canonical point encoding' if pt is None else 'small order'})")
        if sid in ids:
            raise KeyFileError(f"line {lineno}: signer ID {sid.hex()} is already trusted by an "
                               f"earlier line")
        label = name if name is not None else sid.hex()
        if label in labels:
            raise KeyFileError(f"line {lineno}: label {label!r} is already used by an earlier line")
        ids.add(sid)
        labels.add(label)
        out.append(TrustedSigner(sid, public, name))
    if not out:
        raise KeyFileError("no trust line")
    return out


def load_signer_file(path: str) -> Signer:
    """Read a signing key file, refusing (on POSIX) one that group or others can read."""
    try:
        with open(path, "rb") as f:
            if os.name == "posix":
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
                if mode & (stat.S_IRGRP | stat.S_IROTH):
                    raise KeyFileError(
                        f"{path}: signing key file mode {mode:04o} lets group or others read "
                        f"it; refusing to use it. Fix: chmod 600 {path}")
            data = f.read()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return parse_signer_text(_utf8(data))
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e}") from None


def load_trust_file(path: str) -> list[TrustedSigner]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return parse_trust_text(_utf8(data))
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e}") from None


def write_new_signer(path: str) -> Signer:
    """A fresh signing key file: mode 0600, never overwriting (O_EXCL)."""
    sg = Signer.from_seed(secrets.token_bytes(32),
                          time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    line = f"mcsec-signer-v1 {sg.signer_id.hex()} {sg.seed.hex()} created={sg.created}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return sg


def default_trust_name(path: str) -> str | None:
    """3.1: the key file's name without the extension, when that is a valid name."""
    stem = Path(path).stem
    return stem if re.fullmatch(NAME_RE, stem, re.ASCII) else None


# ---- the signed sender (3.4) --------------------------------------------------

def max_sign_every(max_datagram: int) -> int:
    """The most frame hashes one manifest holds in a datagram of max_datagram
    bytes, with first_seq's varint at its longest (10 bytes)."""
    n = 0
    while (OVERHEAD + len(encode_body(Manifest(bytes(8), U64_MAX, bytes(16 * (n + 1)), bytes(64))))
           <= max_datagram):
        n += 1
    return n


class SignedSession:
    """One sender session that signs (3.4): seal() buffers frames into the
    current batch; close_batch() returns the datagrams to send, in order:
    the manifest, the batch's frames, the manifest again."""

    def __init__(self, key: GroupKey, channel_id: bytes, signer: Signer,
                 sender_id: bytes | None = None, first_seq: int = 0) -> None:
        self.key, self.channel_id, self.signer = key, channel_id, signer
        self.sender_id = sender_id if sender_id is not None else secrets.token_bytes(16)
        self.seq = first_seq
        self.batch: list[bytes] = []
        self.batch_start = first_seq

    def seal(self, body: bytes, timestamp: int) -> None:
        if not self.batch:
            self.batch_start = self.seq
        if self.seq + 2 > U64_MAX:
            raise OverflowError("seq would wrap: start a new session")
        self.batch.append(seal(self.key, self.channel_id, self.sender_id, self.seq, timestamp, body))
        self.seq += 1

    def close_batch(self, timestamp: int, timestamp2: int | None = None) -> list[bytes]:
        if not self.batch:
            return []
        s, n = self.batch_start, len(self.batch)
        m = encode_body(self.signer.manifest(self.channel_id, self.key.key_id, self.sender_id, s,
                                             b"".join(frame_hash(f) for f in self.batch)))
        first = seal(self.key, self.channel_id, self.sender_id, s + n, timestamp, m)
        second = seal(self.key, self.channel_id, self.sender_id, s + n + 1,
                      timestamp if timestamp2 is None else timestamp2, m)
        out = [first, *self.batch, second]
        self.batch = []
        self.seq = s + n + 2
        return out


# ---- the trusting receiver (3.5) ----------------------------------------------

@dataclass
class _Held:
    order: int          # arrival order (global)
    arrival: int        # receiver clock at arrival, us
    header: Header
    fhash: bytes
    size: int           # what the 8 MiB bound counts: datagram length + 160
    plaintext: bytes
    body: Body


@dataclass
class _Record:
    first_seq: int
    hashes: bytes
    signer: TrustedSigner

    def hash_for(self, seq: int) -> bytes | None:
        i = seq - self.first_seq
        if 0 <= i < len(self.hashes) // FRAME_HASH_LEN:
            return self.hashes[FRAME_HASH_LEN * i:FRAME_HASH_LEN * (i + 1)]
        return None


@dataclass
class Delivery:
    header: Header
    plaintext: bytes
    body: Body
    signer: TrustedSigner


@dataclass
class SigVerdict:
    """What one datagram did: 'deliver' (deliveries non-empty), 'hold', 'none'
    (a manifest verified and delivered nothing) or 'reject' (reason set)."""
    kind: str
    reason: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)

    def expect(self) -> str:
        """The EXPECT string of 3.6."""
        if self.kind == "deliver":
            return "deliver " + ",".join(str(d.header.seq) for d in self.deliveries)
        return f"reject {self.reason}" if self.kind == "reject" else self.kind


class TrustingReceiver(Receiver):
    """3.5: the core's steps 1 to 6, then no commit until a verified manifest
    lists the frame's hash; held frames, records, every 3.5 counter."""

    def __init__(self, keyring: Keyring, channel_id: bytes, trust: list[TrustedSigner], *,
                 hold: int = DEFAULT_SIG_HOLD_US, hold_frames: int = HOLD_MAX_FRAMES,
                 hold_bytes: int = HOLD_MAX_BYTES, records_per_sender: int = RECORDS_PER_SENDER,
                 record_senders: int = RECORD_MAX_SENDERS, **kw) -> None:
        super().__init__(keyring, channel_id, **kw)
        self.trust = {t.signer_id: t for t in trust}
        self.hold = hold
        self.hold_frames, self.hold_bytes = hold_frames, hold_bytes
        self.records_per_sender, self.record_senders = records_per_sender, record_senders
        self.held: dict[int, _Held] = {}                            # by arrival order
        self.held_by: dict[tuple[int, bytes], dict[int, _Held]] = {}
        self.held_size = 0
        # Per sender: its recorded manifests (all of one signer, the session's
        # owner), the sender whose newest manifest is the oldest first.
        self.records: dict[tuple[int, bytes], list[_Record]] = {}
        # 3.5: which signer each session belongs to, apart from its records.
        self.owners: dict[tuple[int, bytes], bytes] = {}
        self._order = 0
        self._next_expiry: int | None = None
        self.counters.update({c: 0 for c in SIG_COUNTERS})

    # -- holding --
    def _unhold(self, x: _Held) -> None:
        del self.held[x.order]
        sk = (x.header.key_id, x.header.sender_id)
        per = self.held_by[sk]
        del per[x.order]
        if not per:
            del self.held_by[sk]
        self.held_size -= x.size

    def _hold(self, x: _Held) -> None:
        while self.held and (len(self.held) + 1 > self.hold_frames
                             or self.held_size + x.size > self.hold_bytes):
            self._unhold(next(iter(self.held.values())))  # the oldest held frame
            self.counters["sig_hold_full"] += 1
        self.held[x.order] = x
        self.held_by.setdefault((x.header.key_id, x.header.sender_id), {})[x.order] = x
        self.held_size += x.size
        if self._next_expiry is None or x.arrival + self.hold + 1 < self._next_expiry:
            self._next_expiry = x.arrival + self.hold + 1

    def expire(self, now: int) -> None:
        """Drop frames held longer than `hold` (now - arrival > hold): sig_expired
        if a manifest is recorded for their sender, else sig_unsigned."""
        if self._next_expiry is None or now < self._next_expiry:
            return
        for x in list(self.held.values()):
            if _sat_sub(now, x.arrival) > self.hold:
                self._unhold(x)
                sk = (x.header.key_id, x.header.sender_id)
                self.counters["sig_expired" if self.records.get(sk) else "sig_unsigned"] += 1
        self._next_expiry = (min(x.arrival for x in self.held.values()) + self.hold + 1
                             if self.held else None)

    def drain(self) -> None:
        """The receiver stops: every frame still held is dropped and counted as
        if it expired (sig_expired or sig_unsigned), so that the counters
        account for every frame."""
        for x in list(self.held.values()):
            self._unhold(x)
            sk = (x.header.key_id, x.header.sender_id)
            self.counters["sig_expired" if self.records.get(sk) else "sig_unsigned"] += 1
        self._next_expiry = None

    def next_expiry(self) -> int | None:
        """The receiver clock at which expire() may next drop something."""
        return self._next_expiry

    # -- records --
    def _claim(self, sk: tuple[int, bytes], signer_id: bytes) -> None:
        """3.5: the first signer whose manifest for a session verified owns it;
        owners are forgotten only when neither the records nor the sender
        table hold the session, swept when 2 x (table + records) are known."""
        if len(self.owners) >= 2 * (self.max_senders + self.record_senders):
            self.owners = {k: v for k, v in self.owners.items()
                           if k in self.records or k in self.senders}
        self.owners[sk] = signer_id

    def _record(self, sk: tuple[int, bytes], rec: _Record) -> None:
        """3.5: a session keeps the manifests of its 16 highest first_seqs; one
        below all of a full session's is not recorded and is not activity."""
        recs = self.records.get(sk)
        if recs is not None and len(recs) >= self.records_per_sender:
            lowest = min(range(len(recs)), key=lambda i: recs[i].first_seq)
            if rec.first_seq < recs[lowest].first_seq:
                return
            del recs[lowest]
        recs = self.records.pop(sk, None)
        if recs is None:
            recs = []
            while self.records and len(self.records) >= self.record_senders:
                # the sender whose newest manifest is the oldest: first in the dict
                del self.records[next(iter(self.records))]
        recs.append(rec)
        del recs[:-self.records_per_sender]
        self.records[sk] = recs  # re-inserted last: its newest manifest is the newest

    # -- commit and deliver --
    def _commit_deliver(self, h: Header, plain: bytes, body: Body, signer: TrustedSigner,
                        now: int, out: list[Delivery]) -> str | None:
        """Core step 7 for a frame a verified manifest lists: its seq may turn out
        replayed, or the table full. Returns the reject reason, or None."""
        st = self.senders.get((h.key_id, h.sender_id))
        why = "replayed" if st is not None and st.is_replay(h.seq) else self._commit(h, now)
        if why is not None:
            self.counters[why] += 1
            return why
        self.counters["delivered"] += 1
        out.append(Delivery(h, plain, body, signer))
        return None

    def receive(self, d: bytes, now: int) -> SigVerdict:  # type: ignore[override]
        """Expire what has been held too long, then judge the datagram."""
        self.expire(now)
        return self._receive_trusting(bytes(d), now)

    def _reject(self, reason: str) -> SigVerdict:
        self.counters[reason] += 1
        return SigVerdict("reject", reason)

    def _receive_trusting(self, d: bytes, now: int) -> SigVerdict:
        opened = self._open(d, now)
        if isinstance(opened, Verdict):
            return self._reject(opened.reason)
        h, plain = opened
        try:
            body = decode_body(plain)
        except UnknownBody:
            return self._reject("unknown_body")
        except BadBody:
            return self._reject("bad_body")
        sk = (h.key_id, h.sender_id)
        out: list[Delivery] = []
        if isinstance(body, Manifest):
            signer = self.trust.get(body.signer_id)
            if signer is None:
                return self._reject("sig_untrusted")
            if manifest_verdict(body) is not None:
                return self._reject("sig_invalid")
            for r in self.records.get(sk, ()):
                if (r.first_seq == body.first_seq and r.hashes == body.hashes
                        and r.signer.signer_id == body.signer_id):
                    return self._reject("manifest_duplicate")
            msg = manifest_message(self.channel_id, h.key_id, h.sender_id, body.first_seq, body.hashes)
            if not ed25519_verify(signer.public, msg, body.signature):
                return self._reject("sig_bad")
            owner = self.owners.get(sk)
            if owner is not None and owner != body.signer_id:
                # The session belongs to the first signer whose manifest for it
                # verified, for as long as the records or the table know it.
                return self._reject("sig_conflict")
            if owner is None:
                self._claim(sk, body.signer_id)
            self.counters["manifests_verified"] += 1
            rec = _Record(body.first_seq, body.hashes, signer)
            self._record(sk, rec)
            listed = [x for x in self.held_by.get(sk, {}).values() if rec.hash_for(x.header.seq)]
            for x in sorted(listed, key=lambda x: (x.header.seq, x.order)):
                self._unhold(x)
                if rec.hash_for(x.header.seq) == x.fhash:
                    self._commit_deliver(x.header, x.plaintext, x.body, signer, now, out)
                else:
                    self.counters["sig_forged"] += 1
            return SigVerdict("deliver", None, out) if out else SigVerdict("none")
        fh = frame_hash(d)
        for r in reversed(self.records.get(sk, ())):  # the most recently recorded that lists it
            want = r.hash_for(h.seq)
            if want is None:
                continue
            if want != fh:
                return self._reject("sig_forged")
            why = self._commit_deliver(h, plain, body, r.signer, now, out)
            return SigVerdict("reject", why) if why else SigVerdict("deliver", None, out)
        self._order += 1
        self._hold(_Held(self._order, now, h, fh, len(d) + HELD_FRAME_OVERHEAD, plain, body))
        return SigVerdict("hold")



# =============================================================================
# Test vector files (2.3 single-frame, 2.4 sessions)
# =============================================================================

SINGLE_FIELDS = ("comment", "secret", "channel", "sender_id", "seq", "timestamp",
                 "body", "frame", "expect")
SESSION_HEAD = ("comment", "secret", "channel", "max_skew", "max_future_skew",
                "max_senders", "max_datagram")


class VectorFileError(ValueError):
    pass


def _fields(text: str) -> list[tuple[int, str, str]]:
    """`name: value` lines (a value may be empty). Blank lines are skipped."""
    out = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line == "":
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise VectorFileError(f"line {lineno}: expected 'name: value'")
        out.append((lineno, name, value.removeprefix(" ")))
    return out


def _hex(s: str, what: str, length: int | None = None) -> bytes:
    if not re.fullmatch(r"(?:[0-9a-f]{2})*", s, re.ASCII):
        raise VectorFileError(f"{what}: not lowercase hex")
    b = bytes.fromhex(s)
    if length is not None and len(b) != length:
        raise VectorFileError(f"{what}: expected {length} bytes, got {len(b)}")
    return b


def _dec(s: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]+", s, re.ASCII):
        raise VectorFileError(f"{what}: not a decimal integer")
    return int(s)


def _expect(s: str) -> str:
    if s == "ok":
        return "ok"
    m = re.fullmatch(r"reject ([a-z_]+)", s)
    if not m or m.group(1) not in REJECT_REASONS:
        raise VectorFileError(f"expect: {s!r} is not 'ok' or 'reject <counter>'")
    return m.group(1)


def check_single_vector(text: str) -> str | None:
    """One 2.3 case; returns None if it holds, else why not."""
    fl = _fields(text)
    names = tuple(n for _, n, _ in fl)
    if names != SINGLE_FIELDS:
        raise VectorFileError(f"fields {', '.join(names)}; expected exactly, in order: "
                              f"{', '.join(SINGLE_FIELDS)}")
    v = {n: val for _, n, val in fl}
    secret = _hex(v["secret"], "secret", 32)
    channel = check_channel_id(_hex(v["channel"], "channel"))
    sender_id = _hex(v["sender_id"], "sender_id", 16)
    seq, ts = _dec(v["seq"], "seq"), _dec(v["timestamp"], "timestamp")
    body, frame = _hex(v["body"], "body"), _hex(v["frame"], "frame")
    want = _expect(v["expect"])

    ring = Keyring.of([secret])
    rx = Receiver(ring, channel)
    got = rx.receive(frame, ts)
    if want == "ok":
        sealed = seal(ring.send_key, channel, sender_id, seq, ts, body)
        if sealed != frame:
            n = min(len(sealed), len(frame))
            diff = next((i for i in range(n) if sealed[i] != frame[i]), n)
            return (f"frame differs from our seal (lengths {len(frame)} vs {len(sealed)}, "
                    f"first difference at byte {diff}); ours {sealed.hex()}")
        if not got.ok:
            return f"receive gave reject {got.reason}, expected ok"
        if got.header != Header(ring.send_key.key_id, sender_id, seq, ts):
            return f"header {got.header.describe()} differs"
        if got.plaintext != body:
            return f"body {got.plaintext.hex()} != {body.hex()}"
        if encode_body(got.body) != body:
            return "the decoded body does not re-encode to the same bytes"
        return None
    if got.ok:
        return f"receive gave ok, expected reject {want}"
    if got.reason != want:
        return f"receive gave reject {got.reason}, expected reject {want}"
    recorded = len(rx.senders)
    if want in ("unknown_body", "bad_body"):
        if recorded != 1:
            return f"{want}: the frame authenticated, so its sender must be recorded"
    elif recorded:
        return f"reject {want} created sender state"
    return None


def check_session_vector(text: str) -> list[str]:
    """One 2.4 run; returns the list of failures (empty if it holds)."""
    fl = _fields(text)
    head: dict[str, list[str]] = {}
    steps: list[tuple[int, str]] = []
    for lineno, name, value in fl:
        if name == "step":
            steps.append((lineno, value))
        elif steps:
            raise VectorFileError(f"line {lineno}: {name!r} after the first step")
        elif name not in SESSION_HEAD:
            raise VectorFileError(f"line {lineno}: unknown field {name!r}")
        elif name in head and name != "secret":
            raise VectorFileError(f"line {lineno}: duplicate field {name!r}")
        else:
            head.setdefault(name, []).append(value)
    missing = [n for n in SESSION_HEAD if n not in head]
    if missing or not steps:
        raise VectorFileError(f"missing: {', '.join(missing) or 'step'}")
    ring = Keyring.of([_hex(s, "secret", 32) for s in head["secret"]])
    rx = Receiver(ring, check_channel_id(_hex(head["channel"][0], "channel")),
                  max_skew=_dec(head["max_skew"][0], "max_skew"),
                  max_future_skew=_dec(head["max_future_skew"][0], "max_future_skew"),
                  max_senders=_dec(head["max_senders"][0], "max_senders"),
                  max_datagram=_dec(head["max_datagram"][0], "max_datagram"))
    fails = []
    for i, (lineno, value) in enumerate(steps, start=1):
        parts = value.split(" ")
        if len(parts) not in (3, 4):
            raise VectorFileError(f"line {lineno}: step must be 'NOW FRAME EXPECT'")
        now, frame = _dec(parts[0], "step NOW"), _hex(parts[1], "step FRAME")
        want = _expect(" ".join(parts[2:]))
        got = rx.receive(frame, now).reason
        if got != want:
            fails.append(f"step {i} (line {lineno}): got {'ok' if got == 'ok' else 'reject ' + got}, "
                         f"expected {'ok' if want == 'ok' else 'reject ' + want}")
    return fails


MANIFEST_FIELDS = ("comment", "secret", "channel", "seed", "sender_id", "seq", "timestamp",
                   "first_seq", "hashes", "body", "frame")
SIGNED_HEAD = ("comment", "secret", "channel", "trust", "hold_us")


def _first_diff(a: bytes, b: bytes) -> str:
    n = min(len(a), len(b))
    i = next((i for i in range(n) if a[i] != b[i]), n)
    return f"lengths {len(a)} vs {len(b)}, first difference at byte {i}"


def check_manifest_vector(text: str) -> str | None:
    """One 3.6 manifest construction case; None if it holds, else why not."""
    fl = _fields(text)
    names = tuple(n for _, n, _ in fl)
    if names != MANIFEST_FIELDS:
        raise VectorFileError(f"fields {', '.join(names)}; expected exactly, in order: "
                              f"{', '.join(MANIFEST_FIELDS)}")
    v = {n: val for _, n, val in fl}
    key = make_key(_hex(v["secret"], "secret", 32))
    channel = check_channel_id(_hex(v["channel"], "channel"))
    signer = Signer.from_seed(_hex(v["seed"], "seed", 32))
    sender_id = _hex(v["sender_id"], "sender_id", 16)
    seq, ts = _dec(v["seq"], "seq"), _dec(v["timestamp"], "timestamp")
    first_seq, hashes = _dec(v["first_seq"], "first_seq"), _hex(v["hashes"], "hashes")
    body, frame = _hex(v["body"], "body"), _hex(v["frame"], "frame")
    if len(hashes) % FRAME_HASH_LEN:
        raise VectorFileError("hashes: not a multiple of 16 bytes")
    m = signer.manifest(channel, key.key_id, sender_id, first_seq, hashes)
    ours = encode_body(m)
    if ours != body:
        return f"body differs from ours ({_first_diff(body, ours)}); ours {ours.hex()}"
    try:
        if decode_body(body) != m:
            return "the body does not decode back to the same manifest"
    except ValueError as e:
        return f"the body does not decode: {e}"
    if not ed25519_verify(signer.public, manifest_message(channel, key.key_id, sender_id,
                                                          first_seq, hashes), m.signature):
        return "our own signature does not verify"
    sealed = seal(key, channel, sender_id, seq, ts, body)
    if sealed != frame:
        return f"frame differs from our seal ({_first_diff(frame, sealed)}); ours {sealed.hex()}"
    got = Receiver(Keyring.of([key.secret]), channel).receive(frame, ts)
    if not got.ok or got.body != m:
        return f"the core receiver gives {got.reason}, not this manifest"
    return None


_SIG_REJECTS = frozenset(REJECT_REASONS) | frozenset(SIG_COUNTERS) - {"manifests_verified"}


def _sig_expect(s: str) -> str:
    if s in ("hold", "none"):
        return s
    m = re.fullmatch(r"deliver ((?:0|[1-9][0-9]*)(?:,(?:0|[1-9][0-9]*))*)", s, re.ASCII)
    if m:
        return s
    m = re.fullmatch(r"reject ([a-z_]+)", s, re.ASCII)
    if m and m.group(1) in _SIG_REJECTS:
        return s
    raise VectorFileError(f"expect: {s!r} is not 'deliver SEQS', 'hold', 'none' or 'reject <counter>'")


def parse_signed_vector(text: str):
    """A 3.6 signed session: (head, steps, counts) or VectorFileError."""
    fl = _fields(text)
    head: dict[str, list[str]] = {}
    steps: list[tuple[int, int, bytes | None, str]] = []
    counts: dict[str, int] | None = None
    for lineno, name, value in fl:
        if counts is not None:
            raise VectorFileError(f"line {lineno}: {name!r} after the counts line")
        if name == "step":
            parts = value.split(" ", 2)
            if len(parts) != 3:
                raise VectorFileError(f"line {lineno}: step must be 'NOW FRAME EXPECT'")
            frame = None if parts[1] == "-" else _hex(parts[1], "step FRAME")
            if frame is not None and not frame:
                raise VectorFileError(f"line {lineno}: an empty FRAME (use '-' for no datagram)")
            exp = _sig_expect(parts[2])
            if frame is None and exp != "none":
                raise VectorFileError(f"line {lineno}: a step without a datagram expects 'none'")
            steps.append((lineno, _dec(parts[0], "step NOW"), frame, exp))
        elif name == "counts":
            if not steps:
                raise VectorFileError(f"line {lineno}: counts before any step")
            counts = {}
            for pair in value.split(" "):
                m = re.fullmatch(r"([a-z_]+)=(0|[1-9][0-9]*)", pair, re.ASCII)
                if not m or m.group(1) in counts:
                    raise VectorFileError(f"line {lineno}: counts: bad or repeated pair {pair!r}")
                counts[m.group(1)] = int(m.group(2))
            if tuple(counts) != SIG_COUNTERS:  # 3.6: every 3.5 counter, in this order
                raise VectorFileError(f"line {lineno}: counts names {' '.join(counts)}; expected "
                                      f"exactly, in order: {' '.join(SIG_COUNTERS)}")
        elif steps:
            raise VectorFileError(f"line {lineno}: {name!r} after the first step")
        elif name not in SIGNED_HEAD:
            raise VectorFileError(f"line {lineno}: unknown field {name!r}")
        elif name in head and name != "trust":
            raise VectorFileError(f"line {lineno}: duplicate field {name!r}")
        else:
            head.setdefault(name, []).append(value)
    missing = [n for n in SIGNED_HEAD if n not in head]
    if missing or not steps or counts is None:
        raise VectorFileError(f"missing: {', '.join(missing + ([] if steps else ['step']) + ([] if counts is not None else ['counts']))}")
    trust = []
    for t in head["trust"]:
        m = re.fullmatch(r"([0-9a-f]{16}) ([0-9a-f]{64})", t, re.ASCII)
        if not m:
            raise VectorFileError(f"trust: {t!r} is not 'SIGNER_ID PUBLIC'")
        trust.append(TrustedSigner(bytes.fromhex(m.group(1)), bytes.fromhex(m.group(2))))
    # A trust file refuses the same signer ID twice or a signer ID that is not
    # its key's; a vector's trust lines follow the same rules.
    text_lines = "\n".join(f"mcsec-signer-public-v1 {t.signer_id.hex()} {t.public.hex()}" for t in trust)
    try:
        parse_trust_text(text_lines, check_points=False)
    except KeyFileError as e:
        raise VectorFileError(f"trust: {e}") from None
    return head, trust, steps, counts


def run_signed_vector(text: str) -> list[str]:
    """One 3.6 signed session; returns the list of failures (empty if it holds)."""
    head, trust, steps, counts = parse_signed_vector(text)
    channel = check_channel_id(_hex(head["channel"][0], "channel"))
    rx = TrustingReceiver(Keyring.of([_hex(head["secret"][0], "secret", 32)]), channel, trust,
                          hold=_dec(head["hold_us"][0], "hold_us"))
    fails = []
    for i, (lineno, now, frame, want) in enumerate(steps, start=1):
        if frame is None:
            rx.expire(now)
            got = "none"
        else:
            got = rx.receive(frame, now).expect()
        if got != want:
            fails.append(f"step {i} (line {lineno}): got {got!r}, expected {want!r}")
    for name, want_n in counts.items():
        if rx.counters[name] != want_n:
            fails.append(f"counts: {name}={rx.counters[name]}, expected {want_n}")
    return fails


# ---- our own Part 3 vectors (until the lead's exist; kept for the self-test) ----

def _manifest_with_sig(m: Manifest, sig: bytes) -> bytes:
    return encode_body(Manifest(m.signer_id, m.first_seq, m.hashes, sig))


def _counts_line(c: dict[str, int]) -> str:
    return " ".join(f"{n}={c.get(n, 0)}" for n in SIG_COUNTERS)


def make_signed_vectors(d: str, t0: int = 1_790_000_000_000_000) -> list[Path]:
    """Writes DIR/manifests/*.txt and DIR/signed/*.txt: frames made by this
    implementation, every EXPECT and count written by hand from PROTOCOL.md
    3.5 (so checking them tests the receiver, not an echo of it). t0 is the
    first frame's timestamp (a live receiver needs one near its clock)."""
    base = Path(d)
    (base / "manifests").mkdir(parents=True, exist_ok=True)
    (base / "signed").mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    secret = bytes(range(32))
    key = make_key(secret)
    ch = channel_ipv4("239.255.0.1", 5000)
    sa = Signer.from_seed(hashlib.sha256(b"mcsec test signer a").digest())
    sb = Signer.from_seed(hashlib.sha256(b"mcsec test signer b").digest())  # never trusted
    sc = Signer.from_seed(hashlib.sha256(b"mcsec test signer c").digest())
    sid = bytes(range(0xA0, 0xB0))
    sid2 = bytes(range(0xB0, 0xC0))
    sid3 = bytes(range(0xC0, 0xD0))

    def manifest_case(name, comment, channel, signer, sender_id, seq, ts, first_seq, hashes):
        body = encode_body(signer.manifest(channel, key.key_id, sender_id, first_seq, hashes))
        frame = seal(key, channel, sender_id, seq, ts, body)
        text = (f"comment: {comment}\nsecret: {secret.hex()}\nchannel: {channel.hex()}\n"
                f"seed: {signer.seed.hex()}\nsender_id: {sender_id.hex()}\nseq: {seq}\n"
                f"timestamp: {ts}\nfirst_seq: {first_seq}\nhashes: {hashes.hex()}\n"
                f"body: {body.hex()}\nframe: {frame.hex()}\n")
        p = base / "manifests" / f"{name}.txt"
        p.write_text(text)
        written.append(p)

    def batch(signer=sa, sender_id=sid, first_seq=0, n=3, ts=t0, channel=ch):
        ss = SignedSession(key, channel, signer, sender_id, first_seq)
        for i in range(n):
            ss.seal(encode_data_body(f"message {first_seq + i}".encode()), ts + i)
        m1, *frames, m2 = ss.close_batch(ts + n, ts + n + 1)
        return m1, frames, m2

    def session(name, comment, steps, counts, trust=(sa,), hold=DEFAULT_SIG_HOLD_US, extra_trust=()):
        lines = [f"comment: {comment}", f"secret: {secret.hex()}", f"channel: {ch.hex()}"]
        lines += [f"trust: {t.signer_id.hex()} {t.public.hex()}" for t in trust]
        lines += [f"trust: {s.hex()} {p.hex()}" for s, p in extra_trust]
        lines.append(f"hold_us: {hold}")
        lines += [f"step: {now} {'-' if fr is None else fr.hex()} {exp}" for now, fr, exp in steps]
        lines.append(f"counts: {_counts_line(counts)}")
        p = base / "signed" / f"{name}.txt"
        p.write_text("\n".join(lines) + "\n")
        written.append(p)

    # -- manifest construction --
    m1, (f0, f1, f2), m2 = batch()
    manifest_case("one_hash", "A manifest of one frame hash, sealed as seq 1",
                  ch, sa, sid, 1, t0 + 1, 0, frame_hash(f0))
    manifest_case("three_hashes_named_channel", "Three hashes on the named channel 'ticker'",
                  channel_name("ticker"), sa, sid, 3, t0 + 3, 0,
                  frame_hash(f0) + frame_hash(f1) + frame_hash(f2))
    manifest_case("ipv6_big_first_seq", "IPv6 channel [ff15::6]:46710, first_seq 2^40 (a 6-byte varint)",
                  channel_ipv6("ff15::6", 46710), sc, sid2, 2**40 + 2, t0, 2**40,
                  hashlib.sha256(b"a").digest()[:16] + hashlib.sha256(b"b").digest()[:16])
    manifest_case("most_hashes_ipv4", "83 hashes: the most one manifest holds in 1472 bytes",
                  ch, sa, sid, 83, t0, 0, b"".join(hashlib.sha256(bytes([i])).digest()[:16]
                                                     for i in range(83)))

    # -- signed sessions --
    session("in_order", "Manifest first, then its frames one by one; the second copy, and the "
            "first again, are duplicates; a delivered frame again is a replay",
            [(t0 + 10, m1, "none"), (t0 + 11, f0, "deliver 0"), (t0 + 12, f1, "deliver 1"),
             (t0 + 13, f2, "deliver 2"), (t0 + 14, m2, "reject manifest_duplicate"),
             (t0 + 15, m1, "reject manifest_duplicate"), (t0 + 16, f1, "reject replayed")],
            {"manifests_verified": 1, "manifest_duplicate": 2})
    session("first_manifest_lost", "The first manifest is lost: frames are held, the second "
            "copy releases them",
            [(t0 + 10, f0, "hold"), (t0 + 11, f1, "hold"), (t0 + 12, f2, "hold"),
             (t0 + 13, m2, "deliver 0,1,2")],
            {"manifests_verified": 1})
    session("release_in_seq_order", "Frames held out of order are released in ascending seq",
            [(t0 + 10, f2, "hold"), (t0 + 11, f0, "hold"), (t0 + 12, f1, "hold"),
             (t0 + 13, m1, "deliver 0,1,2"), (t0 + 14, m2, "reject manifest_duplicate")],
            {"manifests_verified": 1, "manifest_duplicate": 1})
    forged = seal(key, ch, sid, 1, t0 + 1, encode_data_body(b"forged by a key holder"))
    session("forged_frame", "A key holder's frame at a listed seq with another hash: sig_forged "
            "when released and when it arrives after the manifest; its seq stays free for the "
            "real frame",
            [(t0 + 10, forged, "hold"), (t0 + 11, f0, "hold"), (t0 + 12, m1, "deliver 0"),
             (t0 + 13, forged, "reject sig_forged"), (t0 + 14, f1, "deliver 1"),
             (t0 + 15, f2, "deliver 2")],
            {"manifests_verified": 1, "sig_forged": 2})
    session("duplicate_held_frame", "One frame held twice: the first copy is delivered, the "
            "second is a replay when released",
            [(t0 + 10, f0, "hold"), (t0 + 11, f0, "hold"), (t0 + 12, m1, "deliver 0"),
             (t0 + 13, f0, "reject replayed")],
            {"manifests_verified": 1})
    b1, (g0, g1, _), b2 = batch(signer=sb)
    hold = DEFAULT_SIG_HOLD_US
    session("untrusted_signer", "A signer not in the trust file: its frames are held, then "
            "dropped as unsigned exactly after hold_us",
            [(t0 + 10, b1, "reject sig_untrusted"), (t0 + 20, g0, "hold"), (t0 + 30, g1, "hold"),
             (t0 + 20 + hold, None, "none"), (t0 + 21 + hold, None, "none"),
             (t0 + 40, b2, "reject sig_untrusted"), (t0 + 31 + hold, None, "none")],
            {"sig_untrusted": 2, "sig_unsigned": 2})

    # Signatures that must not verify (3.5 step 4): each re-sealed by a key holder.
    man = decode_body(open_frame(key, ch, m1))
    assert isinstance(man, Manifest)
    msg = manifest_message(ch, key.key_id, sid, 0, man.hashes)
    s_a = _ed_expand(sa.seed)[0]
    flipped = bytearray(man.signature)
    flipped[40] ^= 1
    s_plus_l = man.signature[:32] + (int.from_bytes(man.signature[32:], "little") + ED_L).to_bytes(32, "little")
    r_id = ed_encode(_ED_IDENTITY)  # R of small order with S = k s: [S]B = R + [k]A holds
    small_r = r_id + (_ed_hint(r_id, sa.public, msg) * s_a % ED_L).to_bytes(32, "little")
    rr = _ed_hint(b"mixed r")
    r_mixed = ed_encode(_ed_add(_ed_mul_base(rr), _order8_point()))
    mixed = r_mixed + ((rr + _ed_hint(r_mixed, sa.public, msg) * s_a) % ED_L).to_bytes(32, "little")
    # A public key of small order (the identity): R = [r]B, S = r solves the equation.
    small_a = ed_encode(_ED_IDENTITY)
    small_a_id = signer_id_of(small_a)
    small_a_body = encode_body(Manifest(small_a_id, 0, man.hashes, ed_encode(_ed_mul_base(rr))
                                        + rr.to_bytes(32, "little")))

    def reseal(body: bytes, seq: int = 3, sender_id: bytes = sid) -> bytes:
        return seal(key, ch, sender_id, seq, t0 + 3, body)
    session("bad_signatures", "Manifests that decode but whose signature must not verify "
            "(RFC 8032 5.1.7 with verify_strict's checks): a flipped bit, S + L, R of small "
            "order, R with a torsion component (passes only a cofactored check), and the "
            "honest body re-sealed under another sender ID; a manifest by a public key of "
            "small order is untrusted (3.1: no trust file can hold such a key)",
            [(t0 + 10, reseal(_manifest_with_sig(man, bytes(flipped))), "reject sig_bad"),
             (t0 + 11, reseal(_manifest_with_sig(man, s_plus_l)), "reject sig_bad"),
             (t0 + 12, reseal(_manifest_with_sig(man, small_r)), "reject sig_bad"),
             (t0 + 13, reseal(_manifest_with_sig(man, mixed)), "reject sig_bad"),
             (t0 + 14, reseal(small_a_body), "reject sig_untrusted"),
             (t0 + 15, reseal(encode_body(man), 3, sid2), "reject sig_bad"),
             (t0 + 16, f0, "hold"), (t0 + 17, m2, "deliver 0"), (t0 + 18, f1, "deliver 1")],
            {"sig_bad": 5, "sig_untrusted": 1, "manifests_verified": 1})

    def signed_body(signer, first_seq, hashes):
        return encode_body(signer.manifest(ch, key.key_id, sid, first_seq, hashes))
    h16 = frame_hash(f0)
    session("invalid_manifests", "3.3's checks after the body decoded, before any signature: "
            "hashes not a multiple of 16, no hashes, a last seq past 2^64 - 1; the last seq "
            "exactly 2^64 - 1 verifies; an untrusted signer is judged first",
            [(t0 + 10, reseal(signed_body(sa, 0, h16[:15])), "reject sig_invalid"),
             (t0 + 11, reseal(signed_body(sa, 0, b"")), "reject sig_invalid"),
             (t0 + 12, reseal(signed_body(sa, U64_MAX, h16 + h16)), "reject sig_invalid"),
             (t0 + 13, reseal(signed_body(sa, U64_MAX - 1, h16 + h16)), "none"),
             (t0 + 14, reseal(signed_body(sb, 0, b"")), "reject sig_untrusted")],
            {"sig_invalid": 3, "manifests_verified": 1, "sig_untrusted": 1})
    session("bodies_that_do_not_decode", "A trusting receiver counts unknown_body and bad_body "
            "without committing: the real frame at the same seq is delivered later",
            [(t0 + 10, seal(key, ch, sid, 0, t0, bytes.fromhex("0400")), "reject bad_body"),
             (t0 + 11, seal(key, ch, sid, 1, t0, bytes.fromhex("09")), "reject unknown_body"),
             (t0 + 12, seal(key, ch, sid, 2, t0, encode_body(man) + b"\x00"), "reject bad_body"),
             (t0 + 13, m1, "none"), (t0 + 14, f0, "deliver 0"), (t0 + 15, f1, "deliver 1"),
             (t0 + 16, f2, "deliver 2")],
            {"manifests_verified": 1})
    c1, (e5,), _ = batch(first_seq=5, n=1)
    h1, (k0,), _ = batch(sender_id=sid3, n=1)
    other = seal(key, ch, sid2, 0, t0, encode_data_body(b"never signed"))
    session("hold_expiry", "hold_us 1000: a frame exactly hold_us old is still held and "
            "released; one older is dropped, sig_expired when a manifest is recorded for its "
            "sender, sig_unsigned when none is; a dropped frame's seq was never committed",
            [(t0, f0, "hold"), (t0, other, "hold"), (t0 + 1000, c1, "none"),
             (t0 + 1001, None, "none"), (t0 + 1001, m1, "none"), (t0 + 1002, f0, "deliver 0"),
             (t0 + 2000, k0, "hold"), (t0 + 3000, h1, "deliver 0"), (t0 + 3001, e5, "deliver 5")],
            {"manifests_verified": 3, "sig_expired": 1, "sig_unsigned": 1}, hold=1000)
    steps: list[tuple[int, bytes | None, str]] = []
    first: tuple[bytes, bytes, bytes] | None = None
    for i in range(17):  # one-frame batches: frame 3i, manifests 3i+1 and 3i+2
        a1, (fr,), a2 = batch(first_seq=3 * i, n=1, ts=t0 + 10 * i)
        if i == 0:
            first = (a1, fr, a2)
            steps.append((t0 + 10 * i, a1, "none"))
        else:
            steps += [(t0 + 10 * i, a1, "none"), (t0 + 10 * i + 1, fr, f"deliver {3 * i}")]
    assert first is not None
    steps += [(t0 + 200, first[1], "hold"), (t0 + 201, first[2], "deliver 0")]
    session("sixteen_records", "A sender's 16 most recently verified manifests are recorded: "
            "after 17, the first is forgotten, so its frame is held and its second copy verifies "
            "again instead of being a duplicate",
            steps, {"manifests_verified": 18})
    c_m1, (c_f0,), _ = batch(signer=sc, sender_id=sid2, n=1)
    x_hashes = bytes(16) + man.hashes[16:32]  # seq 0 with another hash, seq 1 as A signed
    m_x = reseal(encode_body(sc.manifest(ch, key.key_id, sid, 0, x_hashes)), 7)
    m_bad = reseal(_manifest_with_sig(sc.manifest(ch, key.key_id, sid, 0, x_hashes), bytes(64)), 8)
    session("session_belongs_to_first_signer", "Two trusted signers: once A's manifest for a "
            "sender session verified, C's correctly signed manifest for it is sig_conflict "
            "(judged after the signature: a bad one is still sig_bad) and changes nothing; C "
            "signs its own session",
            [(t0 + 10, m1, "none"), (t0 + 11, m_x, "reject sig_conflict"),
             (t0 + 12, m_bad, "reject sig_bad"), (t0 + 13, f0, "deliver 0"),
             (t0 + 14, f1, "deliver 1"), (t0 + 15, c_f0, "hold"), (t0 + 16, c_m1, "deliver 0"),
             (t0 + 17, m_x, "reject sig_conflict")],
            {"manifests_verified": 2, "sig_conflict": 2, "sig_bad": 1}, trust=(sa, sc))
    session("core_checks_first", "The core's steps 1 to 6 still come first: stale, another "
            "channel, a frame too short",
            [(t0 + 3 + 30_000_001, m1, "reject stale"),
             (t0 + 10, batch(channel=channel_name("ticker"))[0], "reject auth_failed"),
             (t0 + 11, m1[:55], "reject malformed"), (t0 + 12, m1, "none")],
            {"manifests_verified": 1})
    return written


def check_vector_dir(d: str) -> int:
    """Prints one line per case; returns the exit code. DIR/*.txt and
    DIR/sessions/*.txt must hold vectors; DIR/manifests/ and DIR/signed/
    (Part 3) too, once they exist."""
    base = Path(d)
    kinds = [("frame", sorted(base.glob("*.txt")), f"{d}/*.txt", True),
             ("session", sorted((base / "sessions").glob("*.txt")), f"{d}/sessions/*.txt", True),
             ("manifest", sorted((base / "manifests").glob("*.txt")), f"{d}/manifests/*.txt",
              (base / "manifests").exists()),
             ("signed", sorted((base / "signed").glob("*.txt")), f"{d}/signed/*.txt",
              (base / "signed").exists())]
    p = f = 0
    for kind, files, _, _ in kinds:
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
                if kind == "frame":
                    why = check_single_vector(text)
                elif kind == "manifest":
                    why = check_manifest_vector(text)
                else:
                    fails = (check_session_vector if kind == "session" else run_signed_vector)(text)
                    why = "; ".join(fails) if fails else None
            except (ValueError, OSError) as e:  # VectorFileError, bad UTF-8, ...
                why = f"bad vector file: {e}"
            if why is None:
                p += 1
                print(f"ok   {kind} {path.stem}")
            else:
                f += 1
                print(f"FAIL {kind} {path.stem}: {why}")
    print(", ".join(f"{len(files)} {kind}" for kind, files, _, _ in kinds) + " vector(s)")
    empty = False
    for kind, files, where, required in kinds:
        if required and not files:
            empty = True
            print(f"error: no {kind} vectors ({where})")
    print(f"{p} passed, {f} failed")
    return 1 if f or empty else 0


# =============================================================================
# Self-test
# =============================================================================

# RFC 8032 section 7.1 TEST 1024: the 1023-byte message, as hex.
_RFC8032_TEST_1024_MSG = (
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1"
    "e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a"
    "7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc10"
    "3b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d"
    "502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089b"
    "eccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969b"
    "e3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988d"
    "cda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7"
    "984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac09"
    "43bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f161"
    "0e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8ca"
    "c60c905c15fc910840b94c00a0b9d0"
)


def _selftest() -> tuple[int, int]:
    passed = failed = 0

    def check(name: str, cond: bool) -> None:
        nonlocal passed, failed
        if cond:
            passed += 1
            print(f"ok   {name}")
        else:
            failed += 1
            print(f"FAIL {name}")

    hx = bytes.fromhex

    # ---- RFC 8439 -----------------------------------------------------------
    blk = chacha20_block(bytes(range(32)), 1, hx("000000090000004a00000000"))
    check("RFC 8439 2.3.2 chacha20 block", blk == hx(
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"))
    tag = poly1305_mac(b"Cryptographic Forum Research Group",
                       hx("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b"))
    check("RFC 8439 2.5.2 poly1305", tag == hx("a8061dc1305136c6c22b8baf0c0127a9"))
    pt = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one "
          b"tip for the future, sunscreen would be it.")
    aad = hx("50515253c0c1c2c3c4c5c6c7")
    key = bytes(range(0x80, 0xA0))
    nonce = hx("070000004041424344454647")
    ct = hx("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
            "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
            "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
            "3ff4def08e4b7a9de576d26586cec64b6116")
    tag = hx("1ae10b594f09e26a7e902ecbd0600691")
    check("RFC 8439 2.8.2 aead encrypt", aead_encrypt(key, nonce, pt, aad) == ct + tag)
    check("RFC 8439 2.8.2 aead decrypt", aead_decrypt(key, nonce, ct + tag, aad) == pt)
    bad = bytearray(ct + tag); bad[-1] ^= 1
    check("RFC 8439 2.8.2 aead rejects a flipped tag", aead_decrypt(key, nonce, bytes(bad), aad) is None)
    check("RFC 8439 2.8.2 aead rejects changed aad", aead_decrypt(key, nonce, ct + tag, aad[:-1]) is None)

    # ---- RFC 5869 -----------------------------------------------------------
    ikm = b"\x0b" * 22
    prk = hkdf_extract(hx("000102030405060708090a0b0c"), ikm)
    check("RFC 5869 case 1 PRK", prk == hx(
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"))
    check("RFC 5869 case 1 OKM", hkdf_expand(prk, hx("f0f1f2f3f4f5f6f7f8f9"), 42) == hx(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"))
    check("RFC 5869 case 3 OKM (no salt)", hkdf_sha256(None, ikm, b"", 42) == hx(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"))

    # ---- draft-irtf-cfrg-xchacha-03 -----------------------------------------
    sub = hchacha20(bytes(range(32)), hx("000000090000004a0000000031415927"))
    check("xchacha-03 2.2.1 hchacha20", sub == hx(
        "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"))
    xn = hx("404142434445464748494a4b4c4d4e4f5051525354555657")
    xct = hx("bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
             "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
             "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
             "21f9664c97637da9768812f615c68b13b52e")
    xtag = hx("c0875924c1c7987947deafd8780acf49")
    check("xchacha-03 A.3.1 aead encrypt", xchacha_aead_encrypt(key, xn, pt, aad) == xct + xtag)
    check("xchacha-03 A.3.1 aead decrypt", xchacha_aead_decrypt(key, xn, xct + xtag, aad) == pt)

    # ---- channels and keys ----------------------------------------------------
    check("channel 239.255.0.1:5000", channel_ipv4("239.255.0.1", 5000) == hx("04efff00011388"))
    check("channel [ff02::1%eth0]:5000 == [ff02::1%2]:5000 == no zone",
          channel_ipv6("ff02::1%eth0", 5000) == channel_ipv6("ff02::1%2", 5000)
          == hx("06" + "ff02" + "00" * 13 + "01" + "1388"))
    check("channel name 'ab'", channel_name("ab") == hx("00026162"))
    for bad_name in ("", "x" * 256):
        try:
            channel_name(bad_name); ok_ = False
        except ValueError:
            ok_ = True
        check(f"channel name of {len(bad_name)} bytes refused", ok_)
    secret = bytes(range(32))
    k = make_key(secret)
    check("key ID = SHA-256('mcsec v1 key id' || secret)[0:4]",
          k.key_id == int.from_bytes(hashlib.sha256(b"mcsec v1 key id" + secret).digest()[:4], "big"))
    cid = channel_ipv4("239.255.0.1", 5000)
    check("channel key = HKDF(none, secret, label || key_id || channel)",
          k.channel_key(cid) == hmac.new(hmac.new(b"\x00" * 32, secret, hashlib.sha256).digest(),
                                         b"mcsec v2 channel key" + k.key_id.to_bytes(4, "big")
                                         + cid + b"\x01", hashlib.sha256).digest())
    check("channel keys differ per channel", k.channel_key(cid) != k.channel_key(channel_name("a")))

    # ---- bodies -------------------------------------------------------------
    check("Data(b'abc') = 00 03 616263", encode_data_body(b"abc") == hx("0003616263"))
    check("varint 300 = ac 02", encode_varint(300) == hx("ac02"))
    samples = [Data(b""), Data(b"x" * 200), Fragment(7, 1, 3, 5, b"ab"), Chat("n\u00e9", "hi"),
               FileSymbol(0, 10, 4, 1, 0, 2, bytes(32), "f.txt", b"abcd")]
    for s in samples:
        check(f"body roundtrip {type(s).__name__}", decode_body(encode_body(s)) == s)

    def verdict(b: bytes) -> str:
        try:
            decode_body(b)
            return "ok"
        except UnknownBody:
            return "unknown_body"
        except BadBody:
            return "bad_body"
    for name, b, want in [
        ("empty body", b"", "bad_body"),
        ("variant 300", b"\xac\x02", "unknown_body"),
        ("variant 0 as 80 00 (non-minimal)", b"\x80\x00\x00", "bad_body"),
        ("Data trailing byte", hx("000161ff"), "bad_body"),
        ("Data truncated payload", hx("000261"), "bad_body"),
        ("Data len 81 00 (non-minimal)", hx("008100"), "bad_body"),
        ("Data len of 11 bytes", hx("00") + b"\x80" * 10 + b"\x00", "bad_body"),
        ("Data len 2^64 (10 bytes)", hx("00") + b"\x80" * 9 + b"\x02", "bad_body"),
        ("Data len 2^64-1 (10 bytes, truncated payload)", hx("00") + b"\xff" * 9 + b"\x01", "bad_body"),
        ("Fragment msg_id 2^32", hx("01") + b"\x80\x80\x80\x80\x10" + hx("00010000"), "bad_body"),
        ("Fragment msg_id 2^32-1", hx("01") + b"\xff\xff\xff\xff\x0f" + hx("00010000"), "ok"),
        ("Fragment 6-byte varint", hx("01") + b"\x80\x80\x80\x80\x80\x00" + hx("00010000"), "bad_body"),
        ("Chat nick not UTF-8", hx("0201ff00"), "bad_body"),
        ("Chat trailing byte", hx("0200000a"), "bad_body"),
        ("FileSymbol symbol_size 2^16", encode_body(samples[4])[:1] + hx("000a") + hx("808004"), "bad_body"),
        ("FileSymbol sha256 truncated", hx("03000a04010002") + bytes(31), "bad_body"),
        ("FileSymbol name not UTF-8", hx("03000a04010002") + bytes(32) + hx("01c0") + hx("0461626364"), "bad_body"),
    ]:
        check(f"decode {name} -> {want}", verdict(b) == want)
    check("FileSymbol T=65535 (3-byte varint) decodes",
          verdict(hx("03000a") + encode_varint(65535) + hx("010002") + bytes(32) + hx("00") + hx("00")) == "ok")
    check("fragment: consistent middle piece", fragment_verdict(Fragment(0, 1, 3, 5, b"ab")) is None)
    check("fragment: last piece alone", fragment_verdict(Fragment(0, 2, 3, 5, b"a")) is None)
    check("fragment: last piece longer than s", fragment_verdict(Fragment(0, 2, 3, 4, b"ab")) == "conflict")
    check("fragment: empty message", fragment_verdict(Fragment(0, 0, 1, 0, b"")) is None)
    check("fragment: index >= count", fragment_verdict(Fragment(0, 3, 3, 5, b"a")) == "conflict")
    check("fragment: over --max-message", fragment_verdict(Fragment(0, 0, 2, 2 << 20, b"a")) == "oversize")
    check("file symbol: fine", file_symbol_verdict(samples[4]) is None)
    check("file symbol: sbn >= Z", file_symbol_verdict(FileSymbol(0, 10, 4, 1, 1, 0, bytes(32), "", b"abcd")) == "invalid")
    check("file symbol: Z > Kt", file_symbol_verdict(FileSymbol(0, 10, 4, 4, 0, 0, bytes(32), "", b"abcd")) == "invalid")
    check("file symbol: short symbol", file_symbol_verdict(FileSymbol(0, 10, 4, 1, 0, 0, bytes(32), "", b"abc")) == "invalid")
    check("file symbol: block of 8193 symbols", file_symbol_verdict(FileSymbol(0, 8193, 1, 1, 0, 0, bytes(32), "", b"a")) == "invalid")
    check("RFC 6330 Partition[10, 3] = (4, 3, 1, 2)", partition(10, 3) == (4, 3, 1, 2))

    # ---- sealing and the receiver --------------------------------------------
    ring = Keyring.of([secret])
    sid = bytes(range(16, 32))
    ts = 1_700_000_000_000_000
    body = encode_data_body(b"hello")
    fr = seal(ring.send_key, cid, sid, 7, ts, body)
    check("seal: HChaCha20 subkey path == XChaCha20-Poly1305", fr == seal_slow(ring.send_key, cid, sid, 7, ts, body))
    check("frame length = body + 56", len(fr) == len(body) + 56)
    check("frame header layout", fr[:4] == hx("6d637302") and fr[4:8] == k.key_id.to_bytes(4, "big")
          and fr[8:24] == sid and fr[24:32] == (7).to_bytes(8, "big") and fr[32:40] == ts.to_bytes(8, "big"))

    def rx(**kw) -> Receiver:
        return Receiver(ring, cid, **kw)

    r = rx()
    v = r.receive(fr, ts)
    check("roundtrip ok", v.ok and v.body == Data(b"hello") and v.header == Header(k.key_id, sid, 7, ts))
    check("second copy replayed", r.receive(fr, ts).reason == "replayed")
    check("older unseen seq accepted", r.receive(seal(k, cid, sid, 3, ts, body), ts).ok)
    r = rx()
    r.receive(seal(k, cid, sid, 2000, ts, body), ts)
    check("window: newest - 1983 inside", r.receive(seal(k, cid, sid, 2000 - 1983, ts, body), ts).ok)
    check("window: newest - 1984 out", r.receive(seal(k, cid, sid, 2000 - 1984, ts, body), ts).reason == "replayed")
    check("window: far ahead inside", r.receive(seal(k, cid, sid, 10**12, ts, body), ts).ok)
    check("window: after a jump past the window, newest - 1 is fresh",
          r.receive(seal(k, cid, sid, 10**12 - 1, ts, body), ts).ok)
    check("window: after a jump past the window, newest - 1983 is fresh",
          r.receive(seal(k, cid, sid, 10**12 - 1983, ts, body), ts).ok)
    check("window: old newest now out", r.receive(seal(k, cid, sid, 2001, ts, body), ts).reason == "replayed")
    check("other channel -> auth_failed",
          rx().receive(seal(k, channel_name("other"), sid, 0, ts, body), ts).reason == "auth_failed")
    check("other port -> auth_failed",
          rx().receive(seal(k, channel_ipv4("239.255.0.1", 5001), sid, 0, ts, body), ts).reason == "auth_failed")
    check("v1 magic -> malformed", rx().receive(b"mcs\x01" + fr[4:], ts).reason == "malformed")
    check("55 bytes -> malformed", rx().receive(fr[:55], ts).reason == "malformed")
    check("1473 bytes -> oversize", rx().receive(seal(k, cid, sid, 0, ts, bytes(1473 - 56)), ts).reason == "oversize")
    edge = seal(k, cid, sid, 0, ts, encode_data_body(bytes(1413)))
    check("1472 bytes (Data of 1413) ok", len(edge) == 1472 and rx().receive(edge, ts).ok)
    check("IPv6 channel: 1452 max", Receiver(ring, channel_ipv6("ff0e::1", 1)).max_datagram == 1452)
    check("unknown key", Receiver(Keyring.of([bytes(32)]), cid).receive(fr, ts).reason == "unknown_key")
    check("stale: 30 s old is fresh", rx().receive(fr, ts + 30_000_000).ok)
    check("stale: 30.000001 s old", rx().receive(fr, ts + 30_000_001).reason == "stale")
    check("stale: 5 s ahead is fresh", rx().receive(fr, ts - 5_000_000).ok)
    check("stale: 5.000001 s ahead", rx().receive(fr, ts - 5_000_001).reason == "stale")
    check("strict start: before start -> stale", rx(strict_start=ts + 1).receive(fr, ts).reason == "stale")
    for pos, what in ((7, "key_id"), (8, "sender_id"), (31, "seq"), (39, "timestamp"),
                      (40, "ciphertext"), (len(fr) - 1, "tag")):
        t = bytearray(fr); t[pos] ^= 1
        want = "unknown_key" if what == "key_id" else "auth_failed"  # timestamp: 1 us, fresh
        check(f"flipped {what} -> {want}", rx().receive(bytes(t), ts).reason == want)
    r = rx()
    v = r.receive(seal(k, cid, sid, 0, ts, hx("09")), ts)
    check("unknown variant -> unknown_body, sender recorded", v.reason == "unknown_body" and len(r.senders) == 1)
    check("its seq is used", r.receive(seal(k, cid, sid, 0, ts, body), ts).reason == "replayed")
    v = r.receive(seal(k, cid, sid, 1, ts, hx("000161ff")), ts)
    check("trailing byte -> bad_body", v.reason == "bad_body")

    # Sender table: refusal, eviction, the forgotten mark.
    r = rx(max_senders=1)
    a, b_, c = b"\xaa" * 16, b"\xbb" * 16, b"\xcc" * 16
    check("table: first sender", r.receive(seal(k, cid, a, 0, ts, body), ts).ok)
    check("table: full, A not idle -> sender_table_full",
          r.receive(seal(k, cid, b_, 0, ts, body), ts + 30_000_000).reason == "sender_table_full")
    check("table: refused frame's seq not committed, forged -> auth_failed",
          r.receive(seal(k, cid, b_, 0, ts, body)[:-1] + b"\x00", ts).reason == "auth_failed")
    later = ts + 30_000_001
    check("table: A idle > max_skew, evicted for B", r.receive(seal(k, cid, b_, 0, later, body), later).ok)
    check("forgotten mark: unknown sender at A's timestamp -> stale",
          r.receive(seal(k, cid, c, 0, ts, body), ts + 1).reason == "stale")
    check("forgotten mark: A replayed after a clock step back -> stale",
          r.receive(seal(k, cid, a, 0, ts, body), ts).reason == "stale")
    check("forgotten mark: known sender B unaffected", r.receive(seal(k, cid, b_, 1, later, body), later).ok)
    r = rx()
    r.receive(fr, ts)
    k2 = make_key(b"\x01" * 32)
    r.reload(Keyring(dict(ring.keys, **{}) | {k2.key_id: k2}, k2))
    check("reload keeping the key keeps the window", r.receive(fr, ts).reason == "replayed")
    r.reload(Keyring({k2.key_id: k2}, k2))
    r.reload(ring)
    check("reload dropping the key forgets its senders (mark per key)",
          not r.senders and r.reload_marks.get(k.key_id) == ts and r.forgotten_mark is None)

    # ---- variant 5: StreamSymbol (2.1) ----------------------------------------
    ss = StreamSymbol(300, 5, 2, 2, 1, 129, b"\xee" * 32, "d/a", b"xy")
    enc5 = encode_body(ss)
    check("StreamSymbol encoding: 05 || file_id || file_len || T || K || block || esi || sha256 "
          "|| str(path) || bytes(symbol)",
          enc5 == hx("05ac02050202018101") + b"\xee" * 32 + hx("03642f61") + hx("027879"))
    check("StreamSymbol roundtrip", decode_body(enc5) == ss)
    big = StreamSymbol(U32_MAX, U64_MAX, 0xFFFF, U32_MAX, U64_MAX, U32_MAX, bytes(32), "p", b"")
    check("StreamSymbol at every field's maximum roundtrips (10-byte u64, 5-byte u32, 3-byte u16)",
          decode_body(encode_body(big)) == big
          and len(encode_body(big)) == 1 + 5 + 10 + 3 + 5 + 10 + 5 + 32 + 1 + 1 + 1)
    head = hx("050005")  # variant, file_id 0, file_len 5
    for name, b, want in [
        ("StreamSymbol T 2^16", head + hx("808004") + enc5[5:], "bad_body"),
        ("StreamSymbol K 2^32", head + hx("02") + b"\x80\x80\x80\x80\x10" + enc5[6:], "bad_body"),
        ("StreamSymbol block 2^64", head + hx("0202") + b"\x80" * 9 + b"\x02" + enc5[7:], "bad_body"),
        ("StreamSymbol block 2^64-1", head + hx("0202") + b"\xff" * 9 + b"\x01" + enc5[7:], "ok"),
        ("StreamSymbol block 01 as 81 00 (non-minimal)", head + hx("0202") + hx("8100") + enc5[7:],
         "bad_body"),
        ("StreamSymbol esi 2^32", enc5[:7] + b"\x80\x80\x80\x80\x10" + enc5[9:], "bad_body"),
        ("StreamSymbol sha256 truncated", enc5[:9] + b"\xee" * 31, "bad_body"),
        ("StreamSymbol path not UTF-8", enc5[:41] + hx("01c0") + hx("027879"), "bad_body"),
        ("StreamSymbol symbol past the end", enc5[:-1], "bad_body"),
        ("StreamSymbol trailing byte", enc5 + b"\x00", "bad_body"),
        ("StreamSymbol 05 00 (truncated)", hx("0500"), "bad_body"),
        ("StreamSymbol with K = 0 and an empty symbol (decodes; invalid later)",
         head + hx("02000000") + bytes(32) + hx("0000"), "ok"),
    ]:
        check(f"decode {name} -> {want}", verdict(b) == want)

    def lay_of(f: int, t: int, k: int) -> tuple:
        lay = StreamLayout(f, t, k)
        return (lay.total_symbols, lay.blocks, [lay.symbols_in(b) for b in range(lay.blocks)],
                [lay.block_span(b) for b in range(lay.blocks)])
    check("layout F=10 T=4 K=2: Kt 3, B 2, K_b (2, 1), spans (0, 8) (8, 2)",
          lay_of(10, 4, 2) == (3, 2, [2, 1], [(0, 8), (8, 2)]))
    check("layout F a multiple of T (12, 4, K=2): the last symbol is whole",
          lay_of(12, 4, 2) == (3, 2, [2, 1], [(0, 8), (8, 4)]))
    check("layout F a multiple of K x T (16, 4, 2): B 2, the last block full",
          lay_of(16, 4, 2) == (4, 2, [2, 2], [(0, 8), (8, 8)]))
    check("layout of one symbol (F=1, T=4, K=5): one block of one symbol, one byte",
          lay_of(1, 4, 5) == (1, 1, [1], [(0, 1)]))
    check("layout with a last block of 1 symbol (F=17, T=4, K=2): K_b (2, 2, 1)",
          lay_of(17, 4, 2) == (5, 3, [2, 2, 1], [(0, 8), (8, 8), (16, 1)]))
    check("layout K > Kt (F=10, T=4, K=8192): one block of Kt", lay_of(10, 4, 8192) == (3, 1, [3], [(0, 10)]))
    check("layout T = 1: one symbol per byte", lay_of(5, 1, 2) == (5, 3, [2, 2, 1],
                                                                  [(0, 2), (2, 2), (4, 1)]))
    lay = StreamLayout(17, 4, 2)
    data17 = bytes(range(1, 18))
    check("source symbol esi of block b starts at (b x K + esi) x T",
          [lay.source_symbol(data17, b, e) for b in range(3) for e in range(lay.symbols_in(b))]
          == [data17[i:i + 4].ljust(4, b"\x00") for i in range(0, 17, 4)]
          and lay.source_symbol(data17, 2, 0) == b"\x11\x00\x00\x00" and lay.symbol_offset(1, 1) == 12)
    for name, f_ in [("block beyond B", lambda: lay.symbols_in(3)),
                     ("ESI K_b is not a source symbol", lambda: lay.source_symbol(data17, 2, 1)),
                     ("F = 0", lambda: StreamLayout(0, 4, 2)),
                     ("T = 0", lambda: StreamLayout(1, 0, 2)),
                     ("K = 0", lambda: StreamLayout(1, 4, 0))]:
        try:
            f_(); ok_ = False
        except ValueError:
            ok_ = True
        check(f"layout refuses {name}", ok_)

    sv = StreamSymbol(0, 17, 4, 2, 2, 0, bytes(32), "d/f.bin", b"abcd")
    check("stream symbol: fine (last block, its one source symbol)", stream_symbol_verdict(sv) is None)
    for name, kw, want in [
        ("file_len 0", dict(file_len=0), "invalid"),
        ("T 0", dict(symbol_size=0, symbol=b""), "invalid"),
        ("K 0", dict(block_symbols=0), "invalid"),
        ("K 8193", dict(file_len=1 << 20, symbol_size=1, block_symbols=8193, block=0, symbol=b"a"),
         "invalid"),
        ("K 8192, T 512: K x T = 4 MiB", dict(file_len=1 << 30, symbol_size=512, block_symbols=8192,
                                           block=0, symbol=bytes(512)), None),
        ("K 8192, T 513: K x T over 4 MiB", dict(file_len=1 << 30, symbol_size=513,
                                                 block_symbols=8192, block=0, symbol=bytes(513)),
         "invalid"),
        ("K 2048, T 2049: K x T over 4 MiB", dict(file_len=1 << 30, symbol_size=2049,
                                                  block_symbols=2048, block=0, symbol=bytes(2049)),
         "invalid"),
        ("block = B", dict(block=3), "invalid"),
        ("block 2^64 - 1", dict(block=U64_MAX), "invalid"),
        ("esi 2^21 - 1 (a repair symbol)", dict(esi=(1 << 21) - 1), None),
        ("esi 2^21", dict(esi=1 << 21), "invalid"),
        ("symbol one byte short", dict(symbol=b"abc"), "invalid"),
        ("symbol one byte long", dict(symbol=b"abcde"), "invalid"),
        ("path of 1024 bytes", dict(path="x" * 1024), None),
        ("path of 1025 bytes", dict(path="x" * 1025), "invalid"),
        ("path of 1024 bytes counted in UTF-8", dict(path="\u00e9" * 513), "invalid"),
        ("path '..'", dict(path=".."), "invalid"),
        ("path 'a/../b'", dict(path="a/../b"), "invalid"),
        ("path '../x'", dict(path="../x"), "invalid"),
        ("path 'a/..'", dict(path="a/.."), "invalid"),
        ("path 'a/..b/.../c..' (no '..' component)", dict(path="a/..b/.../c.."), None),
        ("path '/abs//./x' (empty and '.' components)", dict(path="/abs//./x"), None),
        ("file_len 16 GiB", dict(file_len=16 << 30, block=0), None),
        ("file_len 16 GiB + 1", dict(file_len=(16 << 30) + 1, block=0), "oversize"),
        ("file_len 2^64 - 1 with T 0 (oversize first)", dict(file_len=U64_MAX, symbol_size=0), "oversize"),
    ]:
        fields_ = {**sv.__dict__, **kw}
        check(f"stream symbol: {name} -> {want or 'fine'}",
              stream_symbol_verdict(StreamSymbol(**fields_)) == want)
    check("stream symbol: --max-file 16 -> 17 bytes oversize",
          stream_symbol_verdict(sv, max_file=16) == "oversize" and stream_symbol_verdict(sv, 17) is None)
    check("path components: empty and '.' ignored",
          [stream_path_components(p) for p in ("", "/", "a//./b/", "./x", "/abs/x")]
          == [[], [], ["a", "b"], ["x"], ["abs", "x"]])
    check("sanitize: leading dot, backslash, control, bidi, zero-width, separators, 255 bytes",
          [sanitize_component(c) for c in (".bashrc", "...", "a\\b", "x\ny", "evil\u202egpj.exe",
                                           "zw\u200bsp", "l\u2028p", "ok name.txt",
                                           "\u00e9" * 200)]
          == ["_bashrc", "_..", "a_b", "x_y", "evil_gpj.exe", "zw_sp", "l_p", "ok name.txt",
              "\u00e9" * 127])

    # The source-only sender and receiver: a multi-block file, shuffled, with
    # repair ESIs, duplicates and a conflicting symbol mixed in.
    file5 = bytes((i * 7 + 3) % 251 for i in range(1000))
    srcs = stream_source_symbols(9, file5, 64, 3, "sub/./f.bin")
    check("source-only sender: Kt symbols, every one T bytes, block by block",
          len(srcs) == 16 and all(len(x.symbol) == 64 for x in srcs)
          and [(x.block, x.esi) for x in srcs[-4:]] == [(4, 0), (4, 1), (4, 2), (5, 0)]
          and srcs[-1].symbol == file5[960:].ljust(64, b"\x00"))
    order = srcs[::-1]
    order.insert(3, StreamSymbol(9, 1000, 64, 3, 0, 3, srcs[0].sha256, "sub/./f.bin", bytes(64)))
    order.insert(5, order[4])
    sr = StreamFileReceiver()
    got_files = [f_ for x in order if (f_ := sr.push(1, sid, x)) is not None]
    check("source-only receiver: the file, once, byte for byte",
          len(got_files) == 1 and got_files[0].data == file5 and got_files[0].path == "sub/./f.bin")
    check("source-only receiver: a repair ESI ignored, a duplicate counted",
          sr.counters["file_repair_ignored"] == 1 and sr.counters["file_duplicate"] == 1
          and sr.counters["files_completed"] == 1)
    check("source-only receiver: symbols after completion are extra",
          sr.push(1, sid, srcs[0]) is None and sr.counters["file_extra"] == 1)
    check("source-only receiver: another sender's file is another file",
          sr.push(1, bytes(16), srcs[0]) is None and len(sr.partials) == 1)
    sr = StreamFileReceiver()
    sr.push(1, sid, srcs[0])
    other_path = StreamSymbol(**{**srcs[1].__dict__, "path": "other"})
    check("source-only receiver: a symbol disagreeing on the path drops the file (conflict)",
          sr.push(1, sid, other_path) is None and sr.counters["file_conflict"] == 1 and not sr.partials)
    sr = StreamFileReceiver()
    bad_sym = StreamSymbol(**{**srcs[2].__dict__, "symbol": bytes(64)})
    check("source-only receiver: a wrong symbol fails the SHA-256 check, nothing delivered",
          all(sr.push(1, sid, x) is None for x in [bad_sym] + srcs[:2] + srcs[3:])
          and sr.counters["file_hash_mismatch"] == 1 and sr.counters["files_completed"] == 0)
    sr = StreamFileReceiver(max_file=999)
    check("source-only receiver: a file over --max-file is counted oversize, not held",
          sr.push(1, sid, srcs[0]) is None and sr.counters["file_oversize"] == 1 and not sr.partials)
    sr = StreamFileReceiver()
    check("source-only receiver: a '..' path is counted invalid, not held",
          sr.push(1, sid, StreamSymbol(**{**srcs[0].__dict__, "path": "../x"})) is None
          and sr.counters["file_invalid"] == 1 and not sr.partials)
    check("T fits the frame: a source symbol of the largest T seals to the maximum datagram or less",
          len(seal(ring.send_key, cid, sid, 0, ts, encode_body(stream_source_symbols(
              U32_MAX, b"x" * 100_000, stream_symbol_size(1472, "a/b.c"), 4096, "a/b.c")[-1])))
          <= 1472)
    import tempfile
    with tempfile.TemporaryDirectory() as td:
        base = Path(td)
        f1 = StreamFile(1, sid, 9, "/sub/./.f.bin", b"one")
        paths = [save_stream_file(base, f1), save_stream_file(base, f1),
                 save_stream_file(base, StreamFile(1, sid, 4, "./", b"x"))]
        check("save: under the sanitized path, directories made, never overwriting",
              paths == [base / "sub" / "_f.bin", base / "sub" / "_f-1.bin", base / "file-4"]
              and paths[0].read_bytes() == b"one" and paths[1].read_bytes() == b"one")
        os.symlink(td, base / "link")
        try:
            save_stream_file(base, StreamFile(1, sid, 1, "link/x", b"x")); ok_ = False
        except OSError:
            ok_ = not (base / "x").exists()
        check("save: never through a link in the save directory", ok_)

    # ---- key files ------------------------------------------------------------
    line = f"mcsec-key-v1 {k.key_id:08x} {secret.hex()}"
    line2 = f"mcsec-key-v1 {k2.key_id:08x} {k2.secret.hex()} created=2024-02-29T12:00:00.123456789Z"
    kr = parse_keyfile_text(f"# comment\t\u00e9\u0085\n\n{line}\r\n{line2}")
    check("keyfile: two keys, the last seals, CRLF, no final eol",
          list(kr.keys) == [k.key_id, k2.key_id] and kr.send_key.key_id == k2.key_id)

    def refused(text: str, lineno: int | None) -> bool:
        try:
            parse_keyfile_text(text)
        except KeyFileError as e:
            msg = str(e)
            return secret.hex() not in msg and (lineno is None or msg.startswith(f"line {lineno}:"))
        return False
    for name, text, ln in [
        ("wrong key ID", f"#\nmcsec-key-v1 {k.key_id ^ 1:08x} {secret.hex()}\n", 2),
        ("duplicate", f"{line}\n{line}\n", 2),
        ("uppercase hex", f"mcsec-key-v1 {k.key_id:08X} {secret.hex()}", 1),
        ("bare CR", f"{line}\r", 1),
        ("CR CR LF", f"{line}\r\r\n", 1),
        ("CR inside a comment", f"#a\rb\n{line}\n", 1),
        ("indented comment", f" #x\n{line}\n", 1),
        ("line of spaces", f"{line}\n  \n", 2),
        ("trailing space", f"{line} \n", 1),
        ("two spaces", line.replace(" ", "  ", 1), 1),
        ("tab between fields", line.replace(" ", "\t", 1), 1),
        ("DEL in a comment", f"#\x7f\n{line}", 1),
        ("ESC in a comment", f"#\x1b\n{line}", 1),
        ("created= not UTC", f"{line} created=2024-01-31T12:00:00+01:00", 1),
        ("lowercase t", f"{line} created=2024-01-31t12:00:00Z", 1),
        ("29 Feb 1900", f"{line} created=1900-02-29T00:00:00Z", 1),
        ("leap second", f"{line} created=2016-12-31T23:59:60Z", 1),
        ("hour 24", f"{line} created=2024-01-31T24:00:00Z", 1),
        ("10 fraction digits", f"{line} created=2024-01-31T12:00:00.1234567890Z", 1),
        ("empty fraction", f"{line} created=2024-01-31T12:00:00.Z", 1),
        ("Unicode digit", f"{line} created=202\u0664-01-31T12:00:00Z", 1),
        ("extra field", f"{line} created=2024-01-31T12:00:00Z x", 1),
        ("no key line", "# nothing\n", None),
        ("empty file", "", None),
    ]:
        check(f"keyfile: {name} refused", refused(text, ln))
    for name, text in [
        ("29 Feb 2000", f"{line} created=2000-02-29T23:59:59Z"),
        ("year 0000", f"{line} created=0000-01-01T00:00:00Z"),
        ("C1 control in a comment (ABNF: %x80 up)", f"#\u0085\n{line}"),
        ("empty comment, empty lines", f"#\n\n\r\n{line}\n\n"),
    ]:
        try:
            parse_keyfile_text(text); ok_ = True
        except KeyFileError:
            ok_ = False
        check(f"keyfile: {name} accepted", ok_)
    try:
        parse_keyfile_bytes(line.encode() + b"\n#\xed\xa0\x80\n"); ok_ = False
    except KeyFileError as e:
        ok_ = str(e).startswith("line 2:")
    check("keyfile: a surrogate (not UTF-8) refused at line 2", ok_)

    # ---- RFC 8032 Ed25519 -------------------------------------------------------
    check("RFC 8032 base point B = (15112221...7762202, 4/5)",
          ED_BASE[0] == 15112221349535400772501151409588531511454012693041857206046113283949847762202
          and ED_BASE[1] == 46316835694926478169428394003475163141307993866256225615783033603165251855960)
    check("d = -121665/121666 (RFC 8032 Table 1 value)",
          ED_D == 37095705934669439343138083508754565189542113879843219016388785533085940283555)
    rfc8032 = [  # section 7.1: (name, seed, public, message, signature)
        ("TEST 1", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
         "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
         "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
         "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
        ("TEST 2", "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
         "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
         "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e"
         "458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
        ("TEST 3", "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
         "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
         "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290"
         "ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
        ("TEST 1024", "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
         "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e", _RFC8032_TEST_1024_MSG,
         "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f45"
         "28ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03"),
        ("TEST SHA(abc)", "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
         "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
         hashlib.sha512(b"abc").hexdigest(),
         "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ec"
         "fdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"),
    ]
    check("RFC 8032 TEST 1024's message is 1023 bytes", len(hx(_RFC8032_TEST_1024_MSG)) == 1023)
    for name, seed_h, pub_h, msg_h, sig_h in rfc8032:
        seed_b, pub_b, msg_b, sig_b = hx(seed_h), hx(pub_h), hx(msg_h), hx(sig_h)
        check(f"RFC 8032 {name}: public key", ed25519_public(seed_b) == pub_b)
        check(f"RFC 8032 {name}: signature", ed25519_sign(seed_b, msg_b) == sig_b)
        check(f"RFC 8032 {name}: verifies", ed25519_verify(pub_b, msg_b, sig_b))
    _, seed1, pub1, _, sig1h = rfc8032[0]
    seed1_b, pub1_b, sig1 = hx(seed1), hx(pub1), hx(sig1h)
    s1 = int.from_bytes(sig1[32:], "little")
    check("Ed25519 reject: S + L (S >= L; a lax verifier accepts it)",
          not ed25519_verify(pub1_b, b"", sig1[:32] + (s1 + ED_L).to_bytes(32, "little")))
    for pos in (0, 31, 32, 63):
        flipped = bytearray(sig1); flipped[pos] ^= 1
        check(f"Ed25519 reject: signature bit flipped in byte {pos}",
              not ed25519_verify(pub1_b, b"", bytes(flipped)))
    check("Ed25519 reject: another message", not ed25519_verify(pub1_b, b"\x00", sig1))
    flipped = bytearray(pub1_b); flipped[0] ^= 1
    check("Ed25519 reject: public key bit flipped", not ed25519_verify(bytes(flipped), b"", sig1))
    ident = ed_encode(_ED_IDENTITY)
    r_big = _ed_hint(b"r")
    check("Ed25519 reject: public key of small order (identity; R = [r]B, S = r solves "
          "the equation)", not ed25519_verify(ident, b"m", ed_encode(_ed_mul_base(r_big))
                                                + r_big.to_bytes(32, "little")))
    s_1 = _ed_expand(seed1_b)[0]
    k_1 = _ed_hint(ident, pub1_b, b"m")
    check("Ed25519 reject: R of small order (identity, S = k s solves the equation)",
          not ed25519_verify(pub1_b, b"m", ident + (k_1 * s_1 % ED_L).to_bytes(32, "little")))
    t8 = _order8_point()
    torsion = [_ed_mul(i, t8) for i in range(8)]
    check("the 8 points of small order: distinct, all small order; B is not",
          len({ed_encode(p) for p in torsion}) == 8 and all(ed_small_order(p) for p in torsion)
          and not ed_small_order(ED_BASE) and not ed_small_order(ed_decode(pub1_b)))
    r_m = ed_encode(_ed_add(_ed_mul_base(12345), t8))
    k_m = _ed_hint(r_m, pub1_b, b"m")
    mixed_sig = r_m + ((12345 + k_m * s_1) % ED_L).to_bytes(32, "little")
    a1 = ed_decode(pub1_b)
    cofactored = _ed_equal(_ed_mul(8, _ed_mul_base((12345 + k_m * s_1) % ED_L)),
                           _ed_mul(8, _ed_add(ed_decode(r_m), _ed_mul(k_m, a1))))
    check("Ed25519 reject: R with a torsion component (cofactored equation holds, "
          "cofactorless does not)", cofactored and not ed25519_verify(pub1_b, b"m", mixed_sig))
    check("Ed25519 decode: y >= p refused (identity as y = p + 1)",
          ed_decode(((ED_P + 1)).to_bytes(32, "little")) is None)
    check("Ed25519 decode: x = 0 with the sign bit refused",
          ed_decode((1 | 1 << 255).to_bytes(32, "little")) is None)
    check("Ed25519 decode: a y on no point refused", ed_decode((2).to_bytes(32, "little")) is None
          or ed_decode((3).to_bytes(32, "little")) is None)
    check("Ed25519 reject: a public key that is not a point",
          not ed25519_verify(b"\xff" * 32, b"", sig1))

    # ---- Part 3: signer IDs, signing key files, trust files (3.1) ---------------
    sa = Signer.from_seed(bytes(range(32)))
    check("signer ID = SHA-256('mcsec v2 signer id' || public)[0:8]",
          sa.signer_id == hashlib.sha256(b"mcsec v2 signer id" + sa.public).digest()[:8])
    sline = f"mcsec-signer-v1 {sa.signer_id.hex()} {sa.seed.hex()}"
    got = parse_signer_text(f"# my key\t\u00e9\r\n\n{sline} created=2024-02-29T00:00:00.5Z")
    check("signer file: comment, CRLF, created=, no final eol",
          got.seed == sa.seed and got.created == "2024-02-29T00:00:00.5Z")

    def refused_as(parse, text: str, lineno: int | None, secret_hex: str | None = None) -> bool:
        try:
            parse(text)
        except KeyFileError as e:
            msg = str(e)
            return ((secret_hex is None or secret_hex not in msg)
                    and (lineno is None or msg.startswith(f"line {lineno}:")))
        return False
    other_sg = Signer.from_seed(bytes(32))
    for name, text, ln in [
        ("no signer line", "# none\n", None),
        ("empty file", "", None),
        ("two signer lines", f"{sline}\n{sline}\n", 2),
        ("two different signer lines",
         f"{sline}\nmcsec-signer-v1 {other_sg.signer_id.hex()} {other_sg.seed.hex()}\n", 2),
        ("wrong signer ID", f"mcsec-signer-v1 {other_sg.signer_id.hex()} {sa.seed.hex()}", 1),
        ("uppercase hex", sline.upper().replace("MCSEC-SIGNER-V1", "mcsec-signer-v1"), 1),
        ("short seed", sline[:-2], 1),
        ("trailing space", sline + " ", 1),
        ("tab", sline.replace(" ", "\t", 1), 1),
        ("a group key line", f"#\nmcsec-key-v1 {k.key_id:08x} {secret.hex()}\n", 2),
        ("a trust line", f"#\n\n{sa.trust_line()}\n", 3),
        ("29 Feb 2023", f"{sline} created=2023-02-29T00:00:00Z", 1),
        ("bare CR", f"{sline}\r", 1),
    ]:
        check(f"signer file: {name} refused (by line number, seed not shown)",
              refused_as(parse_signer_text, text, ln, sa.seed.hex()))
    sb_ = Signer.from_seed(bytes([7] * 32))
    tl_a, tl_b = sa.trust_line("alice"), sb_.trust_line("bob@example.org")
    tr = parse_trust_text(f"# trust\n{tl_a}\r\n\n{tl_b}\n{other_sg.trust_line()}")
    check("trust file: three signers, names and no name",
          [(t_.signer_id, t_.name) for t_ in tr]
          == [(sa.signer_id, "alice"), (sb_.signer_id, "bob@example.org"), (other_sg.signer_id, None)]
          and tr[2].label() == other_sg.signer_id.hex() and tr[0].label() == "alice")
    check("trust file: a 64-character name, two lines without a name",
          len(parse_trust_text(f"{sa.trust_line('x' * 64)}\n{sb_.trust_line()}\n{other_sg.trust_line()}")) == 3)
    for name, text, ln in [
        ("no trust line", "#\n", None),
        ("empty file", "", None),
        ("signer ID not its key's",
         f"mcsec-signer-public-v1 {sb_.signer_id.hex()} {sa.public.hex()} x", 1),
        ("same signer ID twice", f"{tl_a}\n{sa.trust_line('other')}\n", 2),
        ("same name twice", f"{tl_a}\n{sb_.trust_line('alice')}\n", 2),
        ("a name that is another line's signer ID (3.1: labels)",
         f"{sb_.trust_line()}\n{sa.trust_line(sb_.signer_id.hex())}\n", 2),
        ("name of 65 characters", sa.trust_line("x" * 65), 1),
        ("name with '+'", sa.trust_line("a+b"), 1),
        ("name with a non-ASCII letter", sa.trust_line("\u00e9"), 1),
        ("empty name (trailing space)", sa.trust_line() + " ", 1),
        ("two spaces before the name", sa.trust_line().replace(" ", "  ") + " x", 1),
        ("uppercase public key", sa.trust_line().upper().replace("MCSEC-SIGNER-PUBLIC-V1",
                                                                 "mcsec-signer-public-v1"), 1),
        ("a signer line (secret)", f"{sline}\n", 1),
        ("a public key of small order (ours, see the report)",
         f"#\nmcsec-signer-public-v1 {signer_id_of(ident).hex()} {ident.hex()}", 2),
    ]:
        check(f"trust file: {name} refused", refused_as(parse_trust_text, text, ln))
    check("signer-public default name: the file name without the extension",
          (default_trust_name("/x/alice.key"), default_trust_name("bob"),
           default_trust_name("d/a b.key"), default_trust_name("alice.signer.key"))
          == ("alice", "bob", None, "alice.signer"))
    import tempfile
    with tempfile.TemporaryDirectory() as td:
        path = os.path.join(td, "new.key")
        sg_new = write_new_signer(path)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        check("signer-new: mode 0600, reads back", mode == 0o600 and load_signer_file(path) == sg_new)
        try:
            write_new_signer(path); ok_ = False
        except FileExistsError:
            ok_ = load_signer_file(path) == sg_new
        check("signer-new: never overwrites", ok_)
        os.chmod(path, 0o640)
        try:
            load_signer_file(path); ok_ = False
        except KeyFileError as e:
            ok_ = "chmod 600" in str(e)
        check("signing key file readable by group refused", ok_)

    # ---- Part 3: frame hashes, the Manifest body, the signed message (3.2, 3.3) --
    check("frame_hash = SHA-256(datagram)[0:16]", frame_hash(fr) == hashlib.sha256(fr).digest()[:16])
    mf = Manifest(sa.signer_id, 300, bytes(range(32)), bytes(range(64)))
    enc = encode_body(mf)
    check("Manifest encoding: 04 || signer_id || varint(first_seq) || bytes(hashes) || signature",
          enc == b"\x04" + sa.signer_id + hx("ac02") + b"\x20" + bytes(range(32)) + bytes(range(64)))
    check("Manifest roundtrip", decode_body(enc) == mf)
    for name, b, want in [
        ("variant 6", b"\x06", "unknown_body"),
        ("Manifest 04 00 (truncated)", hx("0400"), "bad_body"),
        ("Manifest trailing byte", enc + b"\x00", "bad_body"),
        ("Manifest signature short", enc[:-1], "bad_body"),
        ("Manifest first_seq non-minimal", b"\x04" + sa.signer_id + hx("ac82") + enc[11:], "bad_body"),
        ("Manifest first_seq 2^64", b"\x04" + sa.signer_id + b"\x80" * 9 + b"\x02" + enc[11:], "bad_body"),
        ("Manifest hashes length past the end", b"\x04" + sa.signer_id + hx("00") + hx("ff01")
         + bytes(64), "bad_body"),
        ("Manifest with 15 hash bytes (decodes; sig_invalid later)",
         encode_body(Manifest(sa.signer_id, 0, bytes(15), bytes(64))), "ok"),
    ]:
        check(f"decode {name} -> {want}", verdict(b) == want)
    check("3.3 checks: 1 and 4096 hashes fine, 0, 4097 and 15 bytes not",
          [manifest_verdict(Manifest(sa.signer_id, 0, bytes(n), bytes(64))) for n in (16, 16 * 4096, 0, 16 * 4097, 15)]
          == [None, None, "sig_invalid", "sig_invalid", "sig_invalid"])
    check("3.3 checks: last seq 2^64 - 1 fine, 2^64 not",
          manifest_verdict(Manifest(sa.signer_id, U64_MAX - 1, bytes(32), bytes(64))) is None
          and manifest_verdict(Manifest(sa.signer_id, U64_MAX, bytes(32), bytes(64))) == "sig_invalid")
    check("signed message = label || channel || key_id || sender_id || first_seq (8) || hashes",
          manifest_message(cid, k.key_id, sid, 258, b"h" * 16)
          == b"mcsec v2 manifest" + cid + k.key_id.to_bytes(4, "big") + sid + hx("0000000000000102") + b"h" * 16)
    check("3.4: 83 hashes fit one manifest in 1472 bytes, 84 do not", max_sign_every(1472) == 83)

    # ---- Part 3: the sender (3.4) ----------------------------------------------------
    ss = SignedSession(k, cid, sa, sid)
    for i in range(3):
        ss.seal(encode_data_body(b"x%d" % i), ts)
    out = ss.close_batch(ts)
    hdrs = [Header.parse(x).seq for x in out]
    bodies = [open_frame(k, cid, x) for x in out]
    check("3.4 batch: manifest (seq 3), frames 0-2, the same manifest again (seq 4)",
          hdrs == [3, 0, 1, 2, 4] and bodies[0] == bodies[4]
          and decode_body(bodies[0]) == sa.manifest(cid, k.key_id, sid, 0,
                                                    b"".join(frame_hash(x) for x in out[1:4])))
    ss.seal(encode_data_body(b"next"), ts)
    nxt = ss.close_batch(ts)
    check("3.4: the next batch starts at s + n + 2",
          [Header.parse(x).seq for x in nxt] == [6, 5, 7] and ss.seq == 8)

    # ---- Part 3: the trusting receiver (3.5) -----------------------------------------
    trust_a = [TrustedSigner(sa.signer_id, sa.public, "alice")]

    def trx(**kw) -> TrustingReceiver:
        return TrustingReceiver(ring, cid, trust_a, **kw)
    for lost in range(len(out)):
        r = trx()
        delivered = []
        for i, x in enumerate(out):
            if i != lost:
                delivered += [d.header.seq for d in r.receive(x, ts).deliveries]
        check(f"losing datagram {lost} of 5 loses only that datagram",
              sorted(delivered) == [s_ for s_ in (0, 1, 2) if hdrs[lost] != s_]
              and r.counters["manifests_verified"] == 1)
    r = trx()
    r.receive(out[0], ts)
    st = r.senders.get((k.key_id, sid))
    check("a manifest's own seq is never committed, and verifying creates no sender state", st is None)
    v = r.receive(out[1], ts)
    check("delivery names the signer", v.expect() == "deliver 0" and v.deliveries[0].signer.label() == "alice")
    check("a manifest's own seq is never committed (after a delivery)",
          not r.senders[(k.key_id, sid)].is_replay(3) and r.senders[(k.key_id, sid)].is_replay(0))
    r = rx()
    check("without trust: a Manifest is committed, counted manifests_ignored, not delivered",
          r.receive(out[0], ts).ok and r.counters["manifests_ignored"] == 1
          and r.counters["delivered"] == 0 and r.receive(out[0], ts).reason == "replayed")
    # Hold bounds, with small bounds (the defaults are the spec's numbers).
    check("hold and record bounds are 3.5's: 2 s, 4096 frames, 8 MiB, 16 per sender, 1024 senders",
          (DEFAULT_SIG_HOLD_US, HOLD_MAX_FRAMES, HOLD_MAX_BYTES, RECORDS_PER_SENDER, RECORD_MAX_SENDERS)
          == (2_000_000, 4096, 8 << 20, 16, 1024))
    r = trx(hold_frames=2)
    check("hold: 2 frames fit", [r.receive(x, ts).kind for x in out[3:0:-1]] == ["hold"] * 3
          and r.counters["sig_hold_full"] == 1 and len(r.held) == 2)
    v = r.receive(out[4], ts)
    check("hold full: the oldest held frame (seq 2) was the one dropped",
          v.expect() == "deliver 0,1" and r.counters["sig_hold_full"] == 1)
    r = trx(hold_bytes=2 * (len(out[1]) + 160))
    for x in out[1:4]:
        r.receive(x, ts)
    check("hold: the byte bound (datagram + 160 bytes each) drops the oldest too",
          r.counters["sig_hold_full"] == 1 and r.held_size == 2 * (len(out[1]) + 160)
          and r.receive(out[0], ts).expect() == "deliver 1,2")
    r = trx(hold_bytes=2 * (len(out[1]) + 160) - 1)
    for x in out[1:4]:
        r.receive(x, ts)
    check("hold: one byte short of two frames holds one", r.counters["sig_hold_full"] == 2)
    r = trx(hold=1000)
    r.receive(out[1], ts)
    r.receive(out[2], ts + 1)
    r.expire(ts + 1001)
    check("expiry: at one clock, a frame hold + 1 old goes, one exactly hold old stays",
          r.counters["sig_unsigned"] == 1 and [x.header.seq for x in r.held.values()] == [1])
    # Records for at most N senders: the one whose newest manifest is the oldest goes.
    r = trx(record_senders=2)
    batches = []
    for n_ in range(3):
        s_s = SignedSession(k, cid, sa, bytes([n_]) * 16)
        s_s.seal(encode_data_body(b"r"), ts)
        batches.append(s_s.close_batch(ts))
    for b_ in batches:
        r.receive(b_[0], ts)
    check("records: 3 senders in 2 slots drop the first sender's record",
          r.receive(batches[0][1], ts).kind == "hold" and r.receive(batches[1][1], ts).kind == "deliver"
          and r.receive(batches[2][1], ts).kind == "deliver")
    check("records: the second copy verifies again, releasing the held frame",
          r.receive(batches[0][2], ts).expect() == "deliver 0")
    # sig_conflict lasts as long as the owner's records.
    sc_ = Signer.from_seed(bytes([9] * 32))
    trust_ac = trust_a + [TrustedSigner(sc_.signer_id, sc_.public, "carol")]

    def c_body(sender: bytes) -> bytes:
        return encode_body(sc_.manifest(cid, k.key_id, sender, 0, bytes(16)))
    r = TrustingReceiver(ring, cid, trust_ac, record_senders=1)
    r.receive(batches[0][0], ts)  # alice owns sender 00..
    check("sig_conflict: carol signing into alice's session",
          r.receive(seal(k, cid, bytes(16), 9, ts, c_body(bytes(16))), ts).expect() == "reject sig_conflict")
    r.receive(seal(k, cid, b"\x07" * 16, 9, ts, c_body(b"\x07" * 16)), ts)  # evicts alice's records
    check("sig_conflict: alice's ownership outlives her records (3.5): carol's is still refused",
          r.receive(seal(k, cid, bytes(16), 10, ts, c_body(bytes(16))), ts).expect()
          == "reject sig_conflict"
          and r.counters["sig_conflict"] == 2 and r.counters["manifests_verified"] == 2)
    r.owners = {sk: v for sk, v in r.owners.items() if sk in r.records or sk in r.senders}
    check("sig_conflict: once a sweep forgets a session nobody holds, carol's verifies",
          r.receive(seal(k, cid, bytes(16), 11, ts, c_body(bytes(16))), ts).expect() == "none"
          and r.counters["manifests_verified"] == 3)
    r = trx()
    r.receive(batches[0][0], ts)
    r.receive(out[1], ts)                 # no record for sid: unsigned when drained
    r.receive(batches[0][2][:-1] + b"\x00", ts)  # auth_failed: never held
    s0 = SignedSession(k, cid, sa, bytes(16), 5)
    s0.seal(encode_data_body(b"late"), ts)
    r.receive(s0.batch[0], ts)            # sender 00.. has a record: expired when drained
    r.drain()
    check("drain at stop: held frames counted sig_unsigned / sig_expired, nothing held",
          r.counters["sig_unsigned"] == 1 and r.counters["sig_expired"] == 1 and not r.held
          and r.held_size == 0)
    # A release that meets a full sender table.
    r = trx(max_senders=1)
    check("release into a full sender table -> sender_table_full, not delivered",
          r.receive(batches[0][0], ts).kind == "none" and r.receive(batches[0][1], ts).kind == "deliver"
          and r.receive(batches[1][1], ts).kind == "hold"
          and r.receive(batches[1][0], ts).expect() == "none"
          and r.counters["sender_table_full"] == 1 and r.counters["delivered"] == 1)

    # ---- Part 3: our signed vectors, written and checked through the file format ----
    with tempfile.TemporaryDirectory() as td:
        for path in make_signed_vectors(td):
            text = path.read_text()
            try:
                why = (check_manifest_vector(text) if path.parent.name == "manifests"
                       else "; ".join(run_signed_vector(text)) or None)
            except ValueError as e:
                why = str(e)
            check(f"our vector {path.parent.name}/{path.stem}" + (f": {why}" if why else ""), why is None)
        # A broken vector must fail: the last step's expectation changed.
        p_ = Path(td) / "signed" / "in_order.txt"
        broken = p_.read_text().replace("reject replayed", "deliver 1")
        check("a vector whose expectation is wrong fails", run_signed_vector(broken) != [])
        broken = p_.read_text().replace("manifest_duplicate=2", "manifest_duplicate=1")
        check("a vector whose counts are wrong fails", run_signed_vector(broken) != [])
        broken = p_.read_text().replace(" sig_conflict=0", "")
        try:
            run_signed_vector(broken); ok_ = False
        except VectorFileError:
            ok_ = True
        check("a counts line without every 3.5 counter, in order, is refused", ok_)
    return passed, failed


# =============================================================================
# Command line
# =============================================================================

@dataclass(frozen=True)
class Group:
    family: int   # socket.AF_INET or AF_INET6
    addr: str     # without zone
    port: int
    zone: str | None = None

    def channel_id(self) -> bytes:
        if self.family == socket.AF_INET:
            return channel_ipv4(self.addr, self.port)
        return channel_ipv6(self.addr, self.port)


def parse_group(s: str) -> Group:
    """'A.B.C.D:PORT' or '[V6ADDR(%ZONE)]:PORT'; only multicast groups."""
    m = re.fullmatch(r"\[([^\]%]+)(?:%([^\]]+))?\]:([0-9]{1,5})", s, re.ASCII)
    if m:
        try:
            a6 = ipaddress.IPv6Address(m.group(1))
        except ValueError:
            raise SystemExit(f"error: {m.group(1)!r} is not an IPv6 address") from None
        port = int(m.group(3))
        if not a6.is_multicast:
            raise SystemExit(f"error: {a6} is not a multicast group (ff00::/8); refusing")
        g = Group(socket.AF_INET6, str(a6), port, m.group(2))
    else:
        host, sep, port_s = s.rpartition(":")
        if not sep or not re.fullmatch(r"[0-9]{1,5}", port_s, re.ASCII):
            raise SystemExit(f"error: --group must be IPV4GROUP:PORT or [IPV6GROUP]:PORT, got {s!r}")
        try:
            a4 = ipaddress.IPv4Address(host)
        except ValueError:
            raise SystemExit(f"error: {host!r} is not an IPv4 address") from None
        if not a4.is_multicast:
            raise SystemExit(f"error: {a4} is not a multicast group (224.0.0.0/4); refusing")
        port = int(port_s)
        g = Group(socket.AF_INET, str(a4), port)
    if not 0 < g.port < 65536:
        raise SystemExit(f"error: port {g.port} out of range")
    return g


def _ifindex(g: Group, interface: str | None) -> int:
    """IPv4 is pinned to 127.0.0.1 (returns 0); IPv6 needs an interface name or index."""
    if g.family == socket.AF_INET:
        if interface not in (None, "127.0.0.1", "lo"):
            raise SystemExit("error: IPv4 is pinned to the loopback interface 127.0.0.1 "
                             "(--interface may only be 127.0.0.1 or lo)")
        return 0
    spec = interface or g.zone
    if not spec:
        raise SystemExit("error: IPv6 needs --interface NAME|INDEX (or a %zone in the group)")
    if spec.isdigit():
        return int(spec)
    try:
        return socket.if_nametoindex(spec)
    except OSError:
        raise SystemExit(f"error: no interface {spec!r}") from None


def _channel_of(a, g: Group | None) -> bytes:
    if getattr(a, "channel", None) is not None:
        try:
            return channel_name(a.channel)
        except ValueError as e:
            raise SystemExit(f"error: --channel: {e}") from None
    if getattr(a, "channel_id", None) is not None:
        try:
            return check_channel_id(_hex_arg(a.channel_id, None, "--channel-id"))
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    if g is None:
        raise SystemExit("error: give --group, --channel or --channel-id")
    return g.channel_id()


def _keyring_or_exit(path: str) -> Keyring:
    try:
        return load_keyfile(path)
    except KeyFileError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1)


def _signer_or_exit(path: str) -> Signer:
    try:
        return load_signer_file(path)
    except KeyFileError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1)


def _trust_or_exit(path: str) -> list[TrustedSigner]:
    try:
        return load_trust_file(path)
    except KeyFileError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1)


def _hex_arg(s: str, n: int | None, what: str) -> bytes:
    pat = r"(?:[0-9a-fA-F]{2})*" if n is None else r"[0-9a-fA-F]{%d}" % (2 * n)
    if not re.fullmatch(pat, s, re.ASCII):
        raise SystemExit(f"error: {what} must be {'an even number of' if n is None else 2 * n} hex digits")
    return bytes.fromhex(s)


def _payload_text(p: bytes) -> str:
    """Payload as UTF-8 if it decodes to printable text, else 'hex:<hex>'."""
    try:
        t = p.decode("utf-8")
        if t.isprintable():
            return t
    except UnicodeDecodeError:
        pass
    return "hex:" + p.hex()


def cmd_selftest(_a) -> int:
    p, f = _selftest()
    print(f"{p} passed, {f} failed")
    return 1 if f else 0


def cmd_keyid(a) -> int:
    print(f"{key_id_of(_hex_arg(a.secret, 32, 'SECRET_HEX')):08x}")
    return 0


def cmd_check_keyfile(a) -> int:
    ring = _keyring_or_exit(a.file)
    for k in ring.keys.values():
        send = " send" if k is ring.send_key else ""
        print(f"{k.key_id:08x} created={k.created or '-'}{send}")
    return 0


def cmd_check_vectors(a) -> int:
    return check_vector_dir(a.dir)


def cmd_make_signed_vectors(a) -> int:
    for p in make_signed_vectors(a.dir):
        print(p)
    return 0


def cmd_signer_new(a) -> int:
    try:
        sg = write_new_signer(a.output)
    except FileExistsError:
        print(f"error: {a.output} exists; refusing to overwrite a file", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {a.output}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"wrote signing key {sg.signer_id.hex()} to {a.output} (mode 0600)", file=sys.stderr)
    return 0


def cmd_signer_public(a) -> int:
    sg = _signer_or_exit(a.file)
    if a.name is not None and not re.fullmatch(NAME_RE, a.name, re.ASCII):
        print("error: --name must be 1 to 64 of A-Z a-z 0-9 - _ . @", file=sys.stderr)
        return 1
    print(sg.trust_line(a.name if a.name is not None else default_trust_name(a.file)))
    return 0


def cmd_check_signer(a) -> int:
    sg = _signer_or_exit(a.file)
    print(f"{sg.signer_id.hex()} public={sg.public.hex()} created={sg.created or '-'}")
    return 0


def cmd_check_trust(a) -> int:
    for t_ in _trust_or_exit(a.file):
        print(f"{t_.signer_id.hex()} {t_.public.hex()} name={t_.name or '-'}")
    return 0


def cmd_seal(a) -> int:
    ring = _keyring_or_exit(a.keyfile)
    cid = _channel_of(a, parse_group(a.group) if a.group else None)
    sid = _hex_arg(a.sender_id, 16, "--sender-id") if a.sender_id else secrets.token_bytes(16)
    ts = a.timestamp if a.timestamp is not None else now_us()
    body = _hex_arg(a.body, None, "--body") if a.body is not None else encode_data_body(a.data.encode())
    print(seal(ring.send_key, cid, sid, a.seq, ts, body).hex())
    return 0


def _describe_body(b: Body) -> str:
    if isinstance(b, Data):
        return f"data={_payload_text(b.payload)}"
    if isinstance(b, Chat):
        return f"chat nick={b.nick!r} text={b.text!r}"
    if isinstance(b, Fragment):
        return (f"fragment msg_id={b.msg_id} index={b.index} count={b.count} "
                f"total_len={b.total_len} piece={len(b.piece)}B check={fragment_verdict(b) or 'ok'}")
    if isinstance(b, Manifest):
        return (f"manifest signer_id={b.signer_id.hex()} first_seq={b.first_seq} "
                f"hashes={len(b.hashes)}B signature={b.signature.hex()} "
                f"check={manifest_verdict(b) or 'ok'}")
    if isinstance(b, StreamSymbol):
        why = stream_symbol_verdict(b)
        where = ""
        if why is None:  # the layout only means something for a valid symbol
            lay = StreamLayout(b.file_len, b.symbol_size, b.block_symbols)
            kb = lay.symbols_in(b.block)
            kind = f"source offset={lay.symbol_offset(b.block, b.esi)}" if b.esi < kb else "repair"
            where = f"B={lay.blocks} K_b={kb} {kind} "
        return (f"stream_symbol file_id={b.file_id} file_len={b.file_len} T={b.symbol_size} "
                f"K={b.block_symbols} block={b.block} esi={b.esi} {where}"
                f"sha256={b.sha256.hex()} path={b.path!r} check={why or 'ok'}")
    return (f"file_symbol file_id={b.file_id} file_len={b.file_len} T={b.symbol_size} "
            f"Z={b.source_blocks} sbn={b.sbn} esi={b.esi} name={b.name!r} "
            f"check={file_symbol_verdict(b) or 'ok'}")


def _receiver(a, ring: Keyring, cid: bytes, trust: list[TrustedSigner] | None = None) -> Receiver:
    kw = dict(max_skew=a.max_skew_us, max_future_skew=a.max_future_skew_us,
              max_senders=a.max_senders, max_datagram=a.max_datagram,
              strict_start=now_us() if a.strict_start else None)
    if trust is not None:
        return TrustingReceiver(ring, cid, trust, hold=a.sig_hold * 1000, **kw)
    return Receiver(ring, cid, **kw)


def cmd_open(a) -> int:
    ring = _keyring_or_exit(a.keyfile)
    cid = _channel_of(a, parse_group(a.group) if a.group else None)
    frame = _hex_arg(a.frame, None, "FRAMEHEX")
    v = _receiver(a, ring, cid).receive(frame, a.now if a.now is not None else now_us())
    if not v.ok:
        print(f"reject {v.reason}")
        return 1
    print(f"ok {v.header.describe()} body={v.plaintext.hex()} {_describe_body(v.body)}")
    return 0


def _socket(g: Group, ifindex: int, loop: bool) -> socket.socket:
    """IPv4: multicast only out of 127.0.0.1, TTL 1, loop on. IPv6: out of the
    given interface, hop limit 1."""
    s = socket.socket(g.family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    if g.family == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    else:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1 if loop else 0)
    return s


def _scope(g: Group, ifindex: int) -> int:
    """Scope ID for the socket address: only interface- and link-local groups need one."""
    return ifindex if g.family == socket.AF_INET6 and int(g.addr.split(":")[0][2:] or "0", 16) & 0xF in (1, 2) else 0


def cmd_send(a) -> int:
    g = parse_group(a.group)  # refuses non-multicast before any socket exists
    ifindex = _ifindex(g, a.interface)
    cid = _channel_of(a, g)
    ring = _keyring_or_exit(a.keyfile)
    limit = a.max_datagram or default_max_datagram(g.channel_id())
    if a.file is not None:
        return _send_file(a, g, ifindex, cid, ring, limit)
    body = encode_data_body(a.message.encode("utf-8"))
    if len(body) + OVERHEAD > limit:
        print(f"error: message too large for one frame ({len(body) + OVERHEAD} > {limit} "
              f"bytes; this tool does not fragment)", file=sys.stderr)
        return 1
    signer = _signer_or_exit(a.sign) if a.sign else None
    if signer is not None:
        most = max_sign_every(limit)
        if not 1 <= a.sign_every <= most:
            print(f"error: --sign-every must be 1 to {most} (what one manifest holds in "
                  f"{limit} bytes)", file=sys.stderr)
            return 1
        if a.sign_interval < 0:
            print("error: --sign-interval must be >= 0", file=sys.stderr)
            return 1
    sid = secrets.token_bytes(16)  # a fresh sender session
    manifests = 0
    s, dest = _open_sender(g, ifindex, a.loop)
    try:
        if signer is None:
            for seq in range(a.count):  # a.count is far below 2^64: seq never wraps
                s.sendto(seal(ring.send_key, cid, sid, seq, now_us(), body), dest)
                if seq + 1 < a.count:
                    time.sleep(a.interval_ms / 1000)
        else:
            manifests = _send_signed(a, s, dest, ring.send_key, cid, sid, signer, body)
    finally:
        s.close()
    via = "127.0.0.1" if g.family == socket.AF_INET else f"interface {ifindex}"
    signed = (f", plus {manifests} manifest frame(s) signed by {signer.signer_id.hex()}"
              if signer is not None else "")
    print(f"sent {a.count} frame(s) as sender {sid.hex()} to {a.group} via {via} "
          f"for channel {describe_channel(cid)}{signed}", file=sys.stderr)
    return 0


def _open_sender(g: Group, ifindex: int, loop: bool) -> tuple[socket.socket, tuple]:
    """A sending socket (see _socket) bound to 127.0.0.1 for IPv4, and the destination."""
    s = _socket(g, ifindex, loop if g.family == socket.AF_INET6 else True)
    if g.family == socket.AF_INET:
        s.bind(("127.0.0.1", 0))
        return s, (g.addr, g.port)
    return s, (g.addr, g.port, 0, _scope(g, ifindex))


def _send_file(a, g: Group, ifindex: int, cid: bytes, ring: Keyring, limit: int) -> int:
    """send --file: variant 5, source symbols only (no RaptorQ here), every
    source symbol of every block once per pass (--count passes), block by
    block, --interval-ms apart."""
    try:
        with open(a.file, "rb") as fh:
            data = fh.read()
    except OSError as e:
        print(f"error: --file {a.file}: {e.strerror}", file=sys.stderr)
        return 1
    path = a.path if a.path is not None else os.path.basename(a.file)
    t = a.symbol_size if a.symbol_size is not None else stream_symbol_size(limit, path)
    k = a.block_symbols if a.block_symbols is not None else stream_block_symbols(max(t, 1))
    bad = None
    if not data:
        bad = f"--file {a.file} is empty: a variant-5 file has at least 1 byte"
    elif not 1 <= t <= 0xFFFF:
        bad = f"--symbol-size must be 1 to 65535 (and fit --max-datagram {limit}), got {t}"
    elif not 1 <= k <= STREAM_MAX_BLOCK_SYMBOLS or k * t > STREAM_MAX_BLOCK_BYTES:
        bad = (f"--block-symbols must be 1 to {STREAM_MAX_BLOCK_SYMBOLS} with "
               f"--block-symbols x --symbol-size at most 4 MiB, got {k} x {t}")
    elif not 0 <= a.file_id <= U32_MAX:
        bad = "--file-id must be 0 to 2^32 - 1"
    else:
        try:
            stream_path_components(path)
        except ValueError as e:
            bad = f"--path {path!r}: {e}"
    if bad is None and a.sign:
        bad = "--sign with --file is not supported by this tool"
    if bad is not None:
        print(f"error: {bad}", file=sys.stderr)
        return 1
    symbols = stream_source_symbols(a.file_id, data, t, k, path)
    first = encode_body(symbols[0])
    if len(first) + OVERHEAD > limit:
        print(f"error: a symbol's frame is {len(first) + OVERHEAD} bytes, over {limit}; "
              f"lower --symbol-size", file=sys.stderr)
        return 1
    sid = secrets.token_bytes(16)
    s, dest = _open_sender(g, ifindex, a.loop)
    seq = 0
    try:
        for _ in range(a.count):
            for sym in symbols:
                s.sendto(seal(ring.send_key, cid, sid, seq, now_us(), encode_body(sym)), dest)
                seq += 1
                time.sleep(a.interval_ms / 1000)
    finally:
        s.close()
    lay = StreamLayout(len(data), t, k)
    print(f"sent file {a.file_id} ({len(data)} bytes, path {path!r}, T={t} K={k} "
          f"B={lay.blocks} last K_b={lay.symbols_in(lay.blocks - 1)}) as {seq} source "
          f"symbol frame(s) from sender {sid.hex()} to {a.group}; sha256 "
          f"{hashlib.sha256(data).hexdigest()}", file=sys.stderr)
    return 0


def _send_signed(a, s: socket.socket, dest: tuple, key: GroupKey, cid: bytes, sid: bytes,
                 signer: Signer, body: bytes) -> int:
    """3.4: batches of at most --sign-every frames, closed --sign-interval ms
    after their first frame or at the end; each goes out as manifest, frames,
    manifest again. Returns the number of manifest frames sent."""
    ss = SignedSession(key, cid, signer, sid)
    interval = a.sign_interval / 1000
    deadline: float | None = None  # when the open batch must close (monotonic)
    sent = 0

    def close() -> None:
        nonlocal deadline, sent
        for dg in ss.close_batch(now_us()):
            s.sendto(dg, dest)
        sent += 2
        deadline = None

    for i in range(a.count):
        if deadline is not None and time.monotonic() >= deadline:
            close()
        if not ss.batch:
            deadline = time.monotonic() + interval
        ss.seal(body, now_us())
        if len(ss.batch) >= a.sign_every:
            close()
        if i + 1 < a.count:
            wake = time.monotonic() + a.interval_ms / 1000
            if deadline is not None and deadline < wake:
                time.sleep(max(0.0, deadline - time.monotonic()))
                close()
            time.sleep(max(0.0, wake - time.monotonic()))
    if ss.batch:
        close()  # the session ends
    return sent


def cmd_recv(a) -> int:
    g = parse_group(a.group)
    ifindex = _ifindex(g, a.interface)
    cid = _channel_of(a, g)
    ring = _keyring_or_exit(a.keyfile)
    if a.sig_hold < 0:
        print("error: --sig-hold must be >= 0", file=sys.stderr)
        return 1
    if a.files is not None and not a.save_dir:
        print("error: --files needs --save-dir DIR", file=sys.stderr)
        return 1
    if a.save_dir and not os.path.isdir(a.save_dir):
        print(f"error: --save-dir {a.save_dir} is not a directory; create it first", file=sys.stderr)
        return 1
    trust = _trust_or_exit(a.trust) if a.trust else None
    rx = _receiver(a, ring, cid, trust)
    files = StreamFileReceiver(a.max_file) if a.save_dir else None
    other = {"fragment": 0, "chat": 0, "file_symbol": 0, "stream_symbol": 0}
    kinds = {Fragment: "fragment", Chat: "chat", FileSymbol: "file_symbol",
             StreamSymbol: "stream_symbol"}
    s = _socket(g, ifindex, False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Opening a frame takes this pure-Python code milliseconds: a deep queue
    # keeps a burst (a file's symbols) from overflowing it (capped by rmem_max).
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    if g.family == socket.AF_INET:
        s.bind((g.addr, g.port))  # binding the group filters out other traffic (Linux)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     socket.inet_aton(g.addr) + socket.inet_aton("127.0.0.1"))
        via = "127.0.0.1"
    else:
        s.bind((g.addr, g.port, 0, _scope(g, ifindex)))
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                     socket.inet_pton(socket.AF_INET6, g.addr) + struct.pack("@I", ifindex))
        via = f"interface {ifindex}"
    # Tests wait for this line before they start sending.
    print(f"listening on {a.group} via {via} for channel {describe_channel(cid)}",
          file=sys.stderr, flush=True)
    deadline = time.monotonic() + a.timeout if a.timeout is not None else None
    printed = saved = 0
    rc = 0

    def finished() -> bool:
        if a.count is None and a.files is None:
            return False  # until --timeout or ^C
        return ((a.count is None or printed >= a.count)
                and (a.files is None or saved >= a.files))

    try:
        while not finished():
            wait: float | None = None
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    rc = 3
                    break
            expiry = rx.next_expiry() if isinstance(rx, TrustingReceiver) else None
            if expiry is not None:  # wake up to drop held frames on time
                until = max(0.0, (expiry - now_us()) / 1e6) + 0.001
                wait = until if wait is None else min(wait, until)
            s.settimeout(wait)
            try:
                data = s.recv(65536)
            except socket.timeout:
                if isinstance(rx, TrustingReceiver):
                    rx.expire(now_us())
                continue  # the deadline is checked at the top
            if isinstance(rx, TrustingReceiver):
                got = [(d.header, d.body, f" signer={d.signer.label()}")
                       for d in rx.receive(data, now_us()).deliveries]
            else:
                v = rx.receive(data, now_us())
                got = [(v.header, v.body, "")] if v.ok else []
            for h, body, signer in got:
                if isinstance(body, Manifest):
                    continue  # counted manifests_ignored by the receiver
                if isinstance(body, Data):
                    if a.count is not None and printed >= a.count:
                        break
                    printed += 1
                    print(f"{h.sender_id.hex()} {h.seq} {_payload_text(body.payload)}{signer}",
                          flush=True)
                elif isinstance(body, StreamSymbol) and files is not None:
                    f = files.push(h.key_id, h.sender_id, body)
                    if f is None:
                        continue
                    try:
                        where = save_stream_file(Path(a.save_dir), f)
                    except OSError as e:
                        print(f"error: saving file {f.file_id} ({f.path!r}): {e}", file=sys.stderr)
                        continue
                    saved += 1
                    print(f"file {h.sender_id.hex()} {f.file_id} {len(f.data)} "
                          f"{hashlib.sha256(f.data).hexdigest()} {where}{signer}", flush=True)
                else:  # decoded, but this tool only prints Data
                    other[kinds[type(body)]] += 1
    except KeyboardInterrupt:
        rc = 130
    finally:
        s.close()
        if isinstance(rx, TrustingReceiver):
            rx.drain()  # frames still held are counted, as mcsec does
        print(json.dumps({**rx.counters, **other, **(files.counters if files else {})}),
              file=sys.stderr, flush=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="mcsec wire protocol v2: independent implementation (Python)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    sub.add_parser("selftest", help="RFC and draft vectors, protocol self-checks").set_defaults(fn=cmd_selftest)

    p = sub.add_parser("keyid", help="print the key ID of a 64-hex secret")
    p.add_argument("secret", metavar="SECRET_HEX")
    p.set_defaults(fn=cmd_keyid)

    p = sub.add_parser("check-keyfile", help="parse a key file and list its keys")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(fn=cmd_check_keyfile)

    p = sub.add_parser("check-vectors", help="verify DIR/*.txt, DIR/sessions/*.txt and, once "
                       "they exist, DIR/manifests/*.txt and DIR/signed/*.txt vectors")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(fn=cmd_check_vectors)

    p = sub.add_parser("make-signed-vectors",
                       help="write this implementation's Part 3 vectors to DIR/manifests and DIR/signed")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(fn=cmd_make_signed_vectors)

    p = sub.add_parser("signer-new", help="write a new signing key file (mode 0600, never overwrites)")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.set_defaults(fn=cmd_signer_new)

    p = sub.add_parser("signer-public", help="print the trust line of a signing key file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", metavar="NAME", help="default: the file name without its extension")
    p.set_defaults(fn=cmd_signer_public)

    p = sub.add_parser("check-signer", help="parse a signing key file; print its signer ID and public key")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(fn=cmd_check_signer)

    p = sub.add_parser("check-trust", help="parse a trust file and list its signers")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(fn=cmd_check_trust)

    def add_channel_opts(p, group_required: bool) -> None:  # --channel: see PROTOCOL.md 1.2
        p.add_argument("--group", required=group_required, metavar="GROUP:PORT",
                       help="A.B.C.D:PORT or [V6GROUP]:PORT; also the default channel")
        c = p.add_mutually_exclusive_group()
        c.add_argument("--channel", metavar="NAME", help="seal/open for this channel name")
        c.add_argument("--channel-id", metavar="HEX",
                       help="seal/open for this channel ID (e.g. another group's, for tests)")

    def add_rx_opts(p) -> None:
        p.add_argument("--max-skew-us", type=int, default=DEFAULT_MAX_SKEW_US)
        p.add_argument("--max-future-skew-us", type=int, default=DEFAULT_MAX_FUTURE_SKEW_US)
        p.add_argument("--max-senders", type=int, default=DEFAULT_MAX_SENDERS)
        p.add_argument("--max-datagram", type=int, help="default 1472 (IPv4, name), 1452 (IPv6)")
        p.add_argument("--strict-start", action="store_true",
                       help="reject frames stamped before this receiver started")

    p = sub.add_parser("seal", help="print one frame as hex")
    p.add_argument("--keyfile", required=True)
    add_channel_opts(p, False)
    p.add_argument("--sender-id", metavar="HEX32")
    p.add_argument("--seq", type=int, default=0)
    p.add_argument("--timestamp", type=int, metavar="US")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", metavar="TEXT", help="payload, sealed as a Data body")
    g.add_argument("--body", metavar="HEX", help="the raw body (plaintext) as hex")
    p.set_defaults(fn=cmd_seal)

    p = sub.add_parser("open", help="open one frame and print the verdict")
    p.add_argument("--keyfile", required=True)
    add_channel_opts(p, False)
    p.add_argument("--now", type=int, metavar="US")
    add_rx_opts(p)
    p.add_argument("frame", metavar="FRAMEHEX")
    p.set_defaults(fn=cmd_open)

    p = sub.add_parser("send", help="send Data frames to a multicast group (IPv4: loopback only)")
    p.add_argument("--keyfile", required=True)
    add_channel_opts(p, True)
    p.add_argument("--interface", metavar="NAME|INDEX", help="IPv6: the interface (required)")
    p.add_argument("--loop", action="store_true", help="IPv6: loop our datagrams back locally")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--message", metavar="TEXT")
    what.add_argument("--file", metavar="PATH",
                      help="send a file as variant-5 source symbols only (no repair: no RaptorQ)")
    p.add_argument("--path", metavar="PATH", help="with --file: the path suggested to receivers "
                   "(default: the file's name)")
    p.add_argument("--symbol-size", type=int, metavar="T",
                   help="with --file: bytes per symbol (default: the largest that fits a frame)")
    p.add_argument("--block-symbols", type=int, metavar="K",
                   help="with --file: source symbols per block (default min(2048, 4 MiB / T))")
    p.add_argument("--file-id", type=int, default=0, metavar="N")
    p.add_argument("--count", type=int, default=1, help="frames; with --file, passes over the file")
    p.add_argument("--interval-ms", type=int, default=100)
    p.add_argument("--max-datagram", type=int)
    p.add_argument("--sign", metavar="SIGNERFILE", help="sign the session with this signing key (3.4)")
    p.add_argument("--sign-every", type=int, default=DEFAULT_SIGN_EVERY, metavar="N",
                   help=f"frames per manifest (default {DEFAULT_SIGN_EVERY})")
    p.add_argument("--sign-interval", type=int, default=DEFAULT_SIGN_INTERVAL_MS, metavar="MS",
                   help=f"close a batch this long after its first frame (default {DEFAULT_SIGN_INTERVAL_MS})")
    p.set_defaults(fn=cmd_send)

    p = sub.add_parser("recv", help="receive frames from a multicast group (IPv4: loopback only)")
    p.add_argument("--keyfile", required=True)
    add_channel_opts(p, True)
    p.add_argument("--interface", metavar="NAME|INDEX", help="IPv6: the interface (required)")
    p.add_argument("--count", type=int, help="exit 0 after N printed Data messages")
    p.add_argument("--save-dir", metavar="DIR", help="rebuild variant-5 files from their source "
                   "symbols (repair symbols ignored: no RaptorQ) and save them under DIR")
    p.add_argument("--files", type=int, metavar="N", help="exit 0 after N saved files "
                   "(with --count: after both)")
    p.add_argument("--max-file", type=int, default=STREAM_MAX_FILE, metavar="BYTES",
                   help="with --save-dir: larger files are counted file_oversize (default 16 GiB)")
    p.add_argument("--timeout", type=float, metavar="S", help="exit 3 after S seconds")
    add_rx_opts(p)
    p.add_argument("--trust", metavar="FILE", help="deliver only frames a trusted signer signed (3.5)")
    p.add_argument("--sig-hold", type=int, default=DEFAULT_SIG_HOLD_US // 1000, metavar="MS",
                   help=f"hold unsigned frames this long (default {DEFAULT_SIG_HOLD_US // 1000})")
    p.set_defaults(fn=cmd_recv)

    a = ap.parse_args(argv)
    if a.cmd == "seal" and not 0 <= a.seq <= U64_MAX:
        ap.error("--seq out of range")
    if getattr(a, "count", None) is not None and a.count < 0:
        ap.error("--count must be >= 0")
    if getattr(a, "files", None) is not None and a.files < 0:
        ap.error("--files must be >= 0")
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
