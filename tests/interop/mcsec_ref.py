#!/usr/bin/env python3
"""mcsec_ref.py - independent reference implementation of the mcsec v1 wire protocol.

Written only from PROTOCOL.md (mcsec wire protocol, version 1) and the RFCs it
cites, in pure Python 3.11 standard library, to cross-check other
implementations. It is deliberately simple and slow: clarity over speed.

Contents
  * RFC 8439 ChaCha20, Poly1305 and the ChaCha20-Poly1305 AEAD
  * RFC 5869 HKDF-SHA256
  * mcsec: key IDs, key files, frame sealing, the receive pipeline with its
    reject reasons, an RFC 6479-style replay window and a bounded sender table
  * a command line (run with -h):  selftest, keyid, check-keyfile,
    check-vectors, seal, open, send, recv

Network safety: `send` and `recv` only ever use IPv4 multicast groups
(224.0.0.0/4) on the loopback interface 127.0.0.1 with TTL 1.  They never send
to any other address.
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass, field
from datetime import datetime
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
# mcsec v1: constants, key IDs, per-sender keys, frames
# =============================================================================

MAGIC = b"mcs\x01"               # 6d 63 73 01: "mcs", version 1
HEADER_LEN = 40
TAG_LEN = 16
OVERHEAD = HEADER_LEN + TAG_LEN  # 56: the minimum frame length
DEFAULT_MAX_DATAGRAM = 1472      # IPv4 (1452 on IPv6)
DEFAULT_SKEW_US = 30_000_000     # 30 s
DEFAULT_MAX_SENDERS = 4096
REPLAY_WINDOW = 1024             # frames per (key_id, sender_id); spec says "at least 1024"
KEY_ID_LABEL = b"mcsec v1 key id"          # 15 bytes
SENDER_KEY_LABEL = b"mcsec v1 sender key"  # 19 bytes
U64_MAX = (1 << 64) - 1

# Reject reasons, each with its own counter (names as used in test vectors).
REJECT_REASONS = ("malformed", "oversize", "unknown_key", "stale",
                  "replayed", "auth_failed", "sender_table_full")
assert len(KEY_ID_LABEL) == 15 and len(SENDER_KEY_LABEL) == 19


def key_id_of(secret: bytes) -> int:
    """Key ID: first 4 bytes, big-endian, of SHA-256("mcsec v1 key id" || secret)."""
    return int.from_bytes(hashlib.sha256(KEY_ID_LABEL + secret).digest()[:4], "big")


@dataclass
class GroupKey:
    secret: bytes
    key_id: int
    created: str | None = None
    # The HKDF extract step depends only on the secret, so it is cached per key.
    prk: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.prk = hkdf_extract(None, self.secret)

    def sender_key(self, sender_id: bytes) -> bytes:
        """HKDF-SHA256(salt=none, IKM=secret, info=label||key_id(4 BE)||sender_id(16), L=32)."""
        info = SENDER_KEY_LABEL + self.key_id.to_bytes(4, "big") + sender_id
        return hkdf_expand(self.prk, info, 32)


def make_key(secret: bytes, created: str | None = None) -> GroupKey:
    if len(secret) != 32:
        raise ValueError("secret must be 32 bytes")
    return GroupKey(secret, key_id_of(secret), created)


def nonce_for(seq: int) -> bytes:
    """Nonce: 4 zero bytes || seq (8 bytes, big-endian)."""
    return b"\x00\x00\x00\x00" + seq.to_bytes(8, "big")


def pack_header(key_id: int, sender_id: bytes, seq: int, timestamp: int) -> bytes:
    if len(sender_id) != 16:
        raise ValueError("sender_id must be 16 bytes")
    if not (0 <= seq <= U64_MAX and 0 <= timestamp <= U64_MAX and 0 <= key_id <= _MASK32):
        raise ValueError("header field out of range")
    return MAGIC + struct.pack(">I", key_id) + sender_id + struct.pack(">QQ", seq, timestamp)


@dataclass(frozen=True)
class Header:
    key_id: int
    sender_id: bytes
    seq: int
    timestamp: int

    @classmethod
    def parse(cls, frame: bytes) -> "Header":
        key_id, = struct.unpack_from(">I", frame, 4)
        seq, ts = struct.unpack_from(">QQ", frame, 24)
        return cls(key_id, bytes(frame[8:24]), seq, ts)

    def describe(self) -> str:
        return (f"key_id={self.key_id:08x} sender_id={self.sender_id.hex()} "
                f"seq={self.seq} timestamp={self.timestamp}")


def seal(key: GroupKey, sender_id: bytes, seq: int, timestamp: int, body: bytes) -> bytes:
    """Build one frame: header (also the AAD) || ChaCha20-Poly1305(body)."""
    header = pack_header(key.key_id, sender_id, seq, timestamp)
    return header + aead_encrypt(key.sender_key(sender_id), nonce_for(seq), body, header)


# -----------------------------------------------------------------------------
# Body: postcard encoding. Only variant 0, Data(bytes), is defined here.
# -----------------------------------------------------------------------------

def encode_varint(n: int) -> bytes:
    """Unsigned LEB128 (postcard's varint): 7 bits per byte, low group first."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(buf: bytes, pos: int, max_bytes: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint of at most max_bytes; returns (value, new pos)."""
    value = 0
    for i in range(max_bytes):
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, pos
    raise ValueError("varint too long")


def encode_data_body(payload: bytes) -> bytes:
    """Variant 0, Data(bytes): 0x00 || varint(len) || bytes."""
    return b"\x00" + encode_varint(len(payload)) + payload


def decode_body(body: bytes) -> tuple[int, bytes | None]:
    """Returns (variant, payload). payload is None for variants other than 0.

    Raises ValueError if the body cannot be decoded. The enum discriminant is a
    varint u32 (at most 5 bytes); a length is a varint usize (taken as u64, at
    most 10 bytes). Trailing bytes after a Data value are treated as an error
    (interpretation: a body is exactly "one postcard-encoded value")."""
    variant, pos = decode_varint(body, 0, 5)
    if variant != 0:
        return variant, None
    n, pos = decode_varint(body, pos, 10)
    if pos + n != len(body):
        raise ValueError("Data length does not match the body")
    return 0, body[pos:]


# =============================================================================
# Key files
# =============================================================================

class KeyFileError(Exception):
    pass


@dataclass
class Keyring:
    keys: dict[int, GroupKey]  # by key ID, in file order
    send_key: GroupKey         # the LAST key line

    @classmethod
    def single(cls, secret: bytes) -> "Keyring":
        k = make_key(secret)
        return cls({k.key_id: k}, k)


_HEX8 = re.compile(r"[0-9a-f]{8}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# RFC 3339 date-time restricted to UTC ("Z"); optional fractional seconds.
_RFC3339_UTC = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?Z")


def _valid_rfc3339_utc(s: str) -> bool:
    m = _RFC3339_UTC.fullmatch(s)
    if not m:
        return False
    y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
    try:  # RFC 3339 allows a leap second (60); datetime does not, so check 59 instead
        datetime(y, mo, d, h, mi, 59 if sec == 60 else sec)
    except ValueError:
        return False
    return True


def parse_keyfile_text(text: str) -> Keyring:
    """Parse key file contents. Error messages name the line number and never
    echo the line (it may contain a secret).

    Interpretations (strict on purpose): fields are separated by single spaces;
    a trailing CR (CRLF files) is removed; a blank line is one that is empty or
    whitespace only; a comment line has '#' as its very first character."""
    keys: dict[int, GroupKey] = {}
    last: GroupKey | None = None
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.strip() == "" or line.startswith("#"):
            continue
        where = f"line {lineno}"
        parts = line.split(" ")
        if parts[0] != "mcsec-key-v1":
            raise KeyFileError(f"{where}: not a key line (expected 'mcsec-key-v1 ...')")
        if len(parts) not in (3, 4):
            raise KeyFileError(f"{where}: expected 'mcsec-key-v1 KEYID SECRET [created=...]' "
                               f"separated by single spaces")
        kid_hex, secret_hex = parts[1], parts[2]
        if not _HEX8.fullmatch(kid_hex):
            raise KeyFileError(f"{where}: key ID must be 8 lowercase hex digits")
        if not _HEX64.fullmatch(secret_hex):
            raise KeyFileError(f"{where}: secret must be 64 lowercase hex digits")
        created = None
        if len(parts) == 4:
            if not parts[3].startswith("created="):
                raise KeyFileError(f"{where}: unexpected 4th field (only created=... allowed)")
            created = parts[3][len("created="):]
            if not _valid_rfc3339_utc(created):
                raise KeyFileError(f"{where}: created= is not an RFC 3339 UTC time "
                                   f"(like 2024-01-31T12:00:00Z)")
        key = make_key(bytes.fromhex(secret_hex), created)
        if key.key_id != int(kid_hex, 16):
            raise KeyFileError(f"{where}: key ID does not match the secret (corrupt key line)")
        if key.key_id in keys:
            raise KeyFileError(f"{where}: duplicate key ID {key.key_id:08x}")
        keys[key.key_id] = key
        last = key
    if last is None:
        raise KeyFileError("no key lines")
    return Keyring(keys, last)


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
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not valid UTF-8") from None
    try:
        return parse_keyfile_text(text)
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e}") from None


# =============================================================================
# Receiving: replay window, sender table, the ordered pipeline
# =============================================================================

@dataclass
class SenderState:
    highest: int     # highest accepted seq
    bitmap: int      # bit i set = seq (highest - i) accepted; i < REPLAY_WINDOW
    newest_ts: int   # newest accepted timestamp (for eviction)

    def is_replay(self, seq: int) -> bool:
        if seq > self.highest:
            return False
        age = self.highest - seq
        if age >= REPLAY_WINDOW:  # older than the window: rejected
            return True
        return bool(self.bitmap >> age & 1)

    def commit(self, seq: int, ts: int) -> None:
        if seq > self.highest:
            shift = seq - self.highest
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.highest = seq
        else:
            self.bitmap |= 1 << (self.highest - seq)
        self.newest_ts = max(self.newest_ts, ts)


@dataclass
class ReplayState:
    """Per-(key_id, sender_id) replay windows in a bounded table."""
    max_senders: int = DEFAULT_MAX_SENDERS
    senders: dict[tuple[int, bytes], SenderState] = field(default_factory=dict)

    def precheck(self, key_id: int, sender_id: bytes, seq: int) -> bool:
        """True if the frame is a replay of (or older than) what the known sender sent."""
        st = self.senders.get((key_id, sender_id))
        return st is not None and st.is_replay(seq)

    def commit(self, h: Header, now: int, skew: int) -> bool:
        """Record an authenticated frame. False if a new sender cannot get a slot."""
        k = (h.key_id, h.sender_id)
        st = self.senders.get(k)
        if st is None:
            if len(self.senders) >= self.max_senders:
                # Only a sender whose newest accepted timestamp is older than
                # now - skew may be evicted; pick the oldest such one.
                victim = min(self.senders, key=lambda x: self.senders[x].newest_ts)
                if not self.senders[victim].newest_ts < now - skew:
                    return False
                del self.senders[victim]
            self.senders[k] = SenderState(h.seq, 1, h.timestamp)
        else:
            st.commit(h.seq, h.timestamp)
        return True


def receive(frame: bytes, keyring: Keyring, now: int, state: ReplayState,
            skew: int = DEFAULT_SKEW_US, max_datagram: int = DEFAULT_MAX_DATAGRAM):
    """Open one datagram following PROTOCOL.md "Receiving", in its order.

    Returns ("ok", Header, plaintext) or ("reject", reason). The body is not
    decoded here (step 8 is the caller's: see decode_body)."""
    # 1. length (too short: malformed; too long: oversize)
    if len(frame) < OVERHEAD:
        return ("reject", "malformed")
    if len(frame) > max_datagram:
        return ("reject", "oversize")
    # 2. magic and version
    if frame[:4] != MAGIC:
        return ("reject", "malformed")
    h = Header.parse(frame)
    # 3. key ID in the keyring
    key = keyring.keys.get(h.key_id)
    if key is None:
        return ("reject", "unknown_key")
    # 4. freshness (inclusive: a difference of exactly `skew` is accepted)
    if abs(now - h.timestamp) > skew:
        return ("reject", "stale")
    # 5. replay pre-check, only if the sender is known
    if state.precheck(h.key_id, h.sender_id, h.seq):
        return ("reject", "replayed")
    # 6. AEAD open, AAD = the 40-byte header
    header = bytes(frame[:HEADER_LEN])
    plain = aead_decrypt(key.sender_key(h.sender_id), nonce_for(h.seq),
                         bytes(frame[HEADER_LEN:]), header)
    if plain is None:
        return ("reject", "auth_failed")
    # 7. commit seq, creating sender state if new (bounded table)
    if not state.commit(h, now, skew):
        return ("reject", "sender_table_full")
    return ("ok", h, plain)


def now_us() -> int:
    return time.time_ns() // 1000


# =============================================================================
# Test vector files
# =============================================================================

VECTOR_FIELDS = ("comment", "secret", "sender_id", "seq", "timestamp", "body", "frame", "expect")


def parse_vector(text: str) -> dict[str, str]:
    v: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep:
            raise ValueError(f"line {lineno}: expected 'name: value'")
        if name not in VECTOR_FIELDS:
            raise ValueError(f"line {lineno}: unknown field {name!r}")
        if name in v:
            raise ValueError(f"line {lineno}: duplicate field {name!r}")
        v[name] = value.strip()
    return v


def _hexfield(v: dict[str, str], name: str, length: int | None = None) -> bytes:
    s = v[name]
    if not re.fullmatch(r"([0-9a-f]{2})*", s):
        raise ValueError(f"{name}: not lowercase hex")
    b = bytes.fromhex(s)
    if length is not None and len(b) != length:
        raise ValueError(f"{name}: expected {length} bytes, got {len(b)}")
    return b


def check_vector(text: str) -> str | None:
    """Verify one vector; returns None if it holds, else why not."""
    v = parse_vector(text)
    need = ["secret", "timestamp", "frame", "expect"]
    expect = v.get("expect", "")
    if expect == "ok":
        need += ["sender_id", "seq", "body"]
    missing = [n for n in need if n not in v]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    secret = _hexfield(v, "secret", 32)
    frame = _hexfield(v, "frame")
    if not re.fullmatch(r"\d+", v["timestamp"]):
        raise ValueError("timestamp: not a decimal integer")
    now = int(v["timestamp"])
    keyring = Keyring.single(secret)
    verdict = receive(frame, keyring, now, ReplayState())

    if expect == "ok":
        sender_id = _hexfield(v, "sender_id", 16)
        if not re.fullmatch(r"\d+", v["seq"]):
            raise ValueError("seq: not a decimal integer")
        seq = int(v["seq"])
        body = _hexfield(v, "body")
        expected = seal(keyring.send_key, sender_id, seq, now, body)
        if expected != frame:
            diff = next((i for i in range(min(len(expected), len(frame)))
                         if expected[i] != frame[i]), min(len(expected), len(frame)))
            return (f"frame differs from seal() (lengths {len(frame)} vs {len(expected)}, "
                    f"first difference at byte {diff}); expected {expected.hex()}")
        if verdict[0] != "ok":
            return f"open gave reject {verdict[1]}, expected ok"
        _, h, plain = verdict
        want = Header(keyring.send_key.key_id, sender_id, seq, now)
        if h != want:
            return f"opened header {h.describe()} != {want.describe()}"
        if plain != body:
            return f"opened body {plain.hex()} != {body.hex()}"
        return None
    m = re.fullmatch(r"reject (\w+)", expect)
    if not m or m.group(1) not in REJECT_REASONS:
        raise ValueError(f"expect: must be 'ok' or 'reject <one of {', '.join(REJECT_REASONS)}>'")
    if verdict[0] == "ok":
        return f"open gave ok, expected reject {m.group(1)}"
    if verdict[1] != m.group(1):
        return f"open gave reject {verdict[1]}, expected reject {m.group(1)}"
    return None


# =============================================================================
# Self-test
# =============================================================================

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

    # RFC 8439 2.3.2: ChaCha20 block function.
    blk = chacha20_block(bytes(range(32)), 1, hx("000000090000004a00000000"))
    check("RFC 8439 2.3.2 chacha20 block", blk == hx(
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"))

    # RFC 8439 2.5.2: Poly1305.
    tag = poly1305_mac(b"Cryptographic Forum Research Group",
                       hx("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b"))
    check("RFC 8439 2.5.2 poly1305", tag == hx("a8061dc1305136c6c22b8baf0c0127a9"))

    # RFC 8439 2.8.2: AEAD.
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
    sealed = aead_encrypt(key, nonce, pt, aad)
    check("RFC 8439 2.8.2 aead encrypt", sealed == ct + tag)
    check("RFC 8439 2.8.2 aead decrypt", aead_decrypt(key, nonce, ct + tag, aad) == pt)
    bad = bytearray(ct + tag); bad[-1] ^= 1
    check("RFC 8439 2.8.2 aead rejects flipped tag", aead_decrypt(key, nonce, bytes(bad), aad) is None)
    check("RFC 8439 2.8.2 aead rejects changed aad", aead_decrypt(key, nonce, ct + tag, aad[:-1]) is None)

    # RFC 5869 test case 1 (and case 3: no salt, as mcsec uses).
    ikm = b"\x0b" * 22
    prk = hkdf_extract(hx("000102030405060708090a0b0c"), ikm)
    check("RFC 5869 case 1 PRK", prk == hx(
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"))
    check("RFC 5869 case 1 OKM", hkdf_expand(prk, hx("f0f1f2f3f4f5f6f7f8f9"), 42) == hx(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        "34007208d5b887185865"))
    check("RFC 5869 case 3 OKM (no salt)", hkdf_sha256(None, ikm, b"", 42) == hx(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        "9d201395faa4b61a96c8"))

    # Postcard body.
    check("body Data(b'abc') = 00 03 616263", encode_data_body(b"abc") == hx("0003616263"))
    check("varint 300 = ac 02", encode_varint(300) == hx("ac02"))
    check("decode Data(200 bytes)", decode_body(encode_data_body(b"x" * 200)) == (0, b"x" * 200))

    # Seal/open roundtrip and every reject reason.
    secret = bytes(range(32))
    kr = Keyring.single(secret)
    sid = bytes(range(16, 32))
    ts = 1_700_000_000_000_000
    body = encode_data_body(b"hello")
    fr = seal(kr.send_key, sid, 7, ts, body)
    check("frame length = body + 56", len(fr) == len(body) + 56)
    check("frame header layout", fr[:4] == MAGIC and fr[4:8] == kr.send_key.key_id.to_bytes(4, "big")
          and fr[8:24] == sid and fr[24:32] == (7).to_bytes(8, "big") and fr[32:40] == ts.to_bytes(8, "big"))
    st = ReplayState()
    r = receive(fr, kr, ts, st)
    check("roundtrip ok", r[0] == "ok" and r[2] == body and r[1] == Header(kr.send_key.key_id, sid, 7, ts))
    check("second copy replayed", receive(fr, kr, ts, st) == ("reject", "replayed"))
    check("older seq in window accepted", receive(seal(kr.send_key, sid, 3, ts, body), kr, ts, st)[0] == "ok")
    far = seal(kr.send_key, sid, 7 + REPLAY_WINDOW, ts, body)
    check("seq ahead by window accepted", receive(far, kr, ts, st)[0] == "ok")
    # Highest is now 1031: seq 8 (1023 behind) is the oldest still in the window.
    check("unseen seq older than window replayed",
          receive(seal(kr.send_key, sid, 6, ts, body), kr, ts, st) == ("reject", "replayed"))
    check("unseen seq at window edge accepted",
          receive(seal(kr.send_key, sid, 8, ts, body), kr, ts, st)[0] == "ok")
    check("short frame malformed", receive(fr[:55], kr, ts, ReplayState()) == ("reject", "malformed"))
    check("bad magic malformed", receive(b"mcs\x02" + fr[4:], kr, ts, ReplayState()) == ("reject", "malformed"))
    big = seal(kr.send_key, sid, 0, ts, b"\x00" * (1472 - 56 + 1))
    check("1473-byte frame oversize", receive(big, kr, ts, ReplayState()) == ("reject", "oversize"))
    edge = seal(kr.send_key, sid, 0, ts, b"\x00" * (1472 - 56))
    check("1472-byte frame ok", receive(edge, kr, ts, ReplayState())[0] == "ok")
    other = Keyring.single(bytes(32))
    check("unknown key", receive(fr, other, ts, ReplayState()) == ("reject", "unknown_key"))
    check("stale (+30.000001 s)", receive(fr, kr, ts + 30_000_001, ReplayState()) == ("reject", "stale"))
    check("stale (-30.000001 s)", receive(fr, kr, ts - 30_000_001, ReplayState()) == ("reject", "stale"))
    check("exactly 30 s accepted", receive(fr, kr, ts + 30_000_000, ReplayState())[0] == "ok")
    for pos, what in ((4 + 3, "key_id"), (8, "sender_id"), (31, "seq"), (39, "timestamp"),
                      (40, "ciphertext"), (len(fr) - 1, "tag")):
        t = bytearray(fr); t[pos] ^= 0x01
        want = "unknown_key" if what == "key_id" else "auth_failed"
        check(f"flipped {what} -> {want}", receive(bytes(t), kr, ts, ReplayState()) == ("reject", want))
    st2 = ReplayState(max_senders=1)
    check("table: first sender ok", receive(fr, kr, ts, st2)[0] == "ok")
    fr2 = seal(kr.send_key, bytes(16), 0, ts, body)
    check("table full -> sender_table_full", receive(fr2, kr, ts, st2) == ("reject", "sender_table_full"))
    check("table full, forged new sender -> auth_failed",
          receive(fr2[:-1] + bytes([fr2[-1] ^ 1]), kr, ts, st2) == ("reject", "auth_failed"))
    later = ts + 30_000_001
    fr3 = seal(kr.send_key, bytes(16), 0, later, body)
    check("stale sender evicted for new one", receive(fr3, kr, later, st2)[0] == "ok")

    # Key file parsing.
    line = f"mcsec-key-v1 {kr.send_key.key_id:08x} {secret.hex()}"
    k2 = make_key(bytes([1]) * 32)
    line2 = f"mcsec-key-v1 {k2.key_id:08x} {k2.secret.hex()} created=2024-01-31T12:00:00Z"
    ring = parse_keyfile_text(f"# comment\n\n{line}\n{line2}\n")
    check("keyfile: two keys, last is send", len(ring.keys) == 2 and ring.send_key.key_id == k2.key_id)

    def refused(text: str, lineno: int | None) -> bool:
        try:
            parse_keyfile_text(text)
        except KeyFileError as e:
            msg = str(e)
            return secret.hex() not in msg and (lineno is None or f"line {lineno}" in msg)
        return False
    wrong_id = f"mcsec-key-v1 {(kr.send_key.key_id ^ 1):08x} {secret.hex()}"
    check("keyfile: wrong key ID refused", refused(f"#\n{wrong_id}\n", 2))
    check("keyfile: duplicate refused", refused(f"{line}\n{line}\n", 2))
    check("keyfile: uppercase refused", refused(line.upper().replace("MCSEC-KEY-V1", "mcsec-key-v1"), 1))
    check("keyfile: bad created refused", refused(line + " created=yesterday", 1))
    check("keyfile: non-UTC created refused", refused(line + " created=2024-01-31T12:00:00+01:00", 1))
    check("keyfile: extra field refused", refused(line + " created=2024-01-31T12:00:00Z x", 1))
    check("keyfile: empty refused", refused("# nothing\n", None))
    return passed, failed


# =============================================================================
# Command line
# =============================================================================

def _parse_group(s: str) -> tuple[str, int]:
    """'239.x.y.z:PORT' -> (group, port); refuses anything outside 224.0.0.0/4."""
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"error: --group must be IPV4GROUP:PORT, got {s!r}")
    try:
        addr = ipaddress.IPv4Address(host)
    except ValueError:
        raise SystemExit(f"error: {host!r} is not an IPv4 address") from None
    if addr not in ipaddress.IPv4Network("224.0.0.0/4"):
        raise SystemExit(f"error: {addr} is not a multicast group (224.0.0.0/4); refusing")
    return str(addr), int(port)


def _keyring_or_exit(path: str) -> Keyring:
    try:
        return load_keyfile(path)
    except KeyFileError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1)


def _hex_arg(s: str, n: int, what: str) -> bytes:
    if not re.fullmatch(r"[0-9a-fA-F]{%d}" % (2 * n), s):
        raise SystemExit(f"error: {what} must be {2 * n} hex digits")
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
    files = sorted(Path(a.dir).glob("*.txt"))
    p = f = 0
    for path in files:
        try:
            why = check_vector(path.read_text(encoding="utf-8"))
        except (ValueError, OSError, UnicodeDecodeError) as e:
            why = f"bad vector file: {e}"
        if why is None:
            p += 1
            print(f"ok {path.stem}")
        else:
            f += 1
            print(f"FAIL {path.stem}: {why}")
    if not files:
        print(f"no *.txt vector files in {a.dir}")
    print(f"{p} passed, {f} failed")
    return 1 if f or not files else 0


def _body_from_args(a) -> bytes:
    if a.body is not None:
        return _hex_arg(a.body, len(a.body) // 2, "--body")
    return encode_data_body(a.data.encode("utf-8"))


def cmd_seal(a) -> int:
    ring = _keyring_or_exit(a.keyfile)
    sid = _hex_arg(a.sender_id, 16, "--sender-id") if a.sender_id else secrets.token_bytes(16)
    ts = a.timestamp if a.timestamp is not None else now_us()
    print(seal(ring.send_key, sid, a.seq, ts, _body_from_args(a)).hex())
    return 0


def cmd_open(a) -> int:
    ring = _keyring_or_exit(a.keyfile)
    frame = _hex_arg(a.frame, len(a.frame) // 2, "FRAMEHEX")
    now = a.now if a.now is not None else now_us()
    v = receive(frame, ring, now, ReplayState(), a.skew_us, a.max_datagram)
    if v[0] != "ok":
        print(f"reject {v[1]}")
        return 1
    _, h, plain = v
    try:
        variant, payload = decode_body(plain)
        decoded = (f"data={_payload_text(payload)}" if variant == 0
                   else f"unknown_variant={variant}")
    except ValueError as e:
        decoded = f"undecodable_body ({e})"
    print(f"ok {h.describe()} body={plain.hex()} {decoded}")
    return 0


def _loopback_socket() -> socket.socket:
    """UDP socket whose multicast goes only out of 127.0.0.1, TTL 1, loop on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return s


def cmd_send(a) -> int:
    group, port = _parse_group(a.group)  # refuses non-multicast before any socket exists
    ring = _keyring_or_exit(a.keyfile)
    body = encode_data_body(a.message.encode("utf-8"))
    if len(body) + OVERHEAD > DEFAULT_MAX_DATAGRAM:
        print(f"error: message too large for one frame ({len(body) + OVERHEAD} > "
              f"{DEFAULT_MAX_DATAGRAM} bytes; this tool does not fragment)", file=sys.stderr)
        return 1
    sid = secrets.token_bytes(16)  # fresh sender session
    s = _loopback_socket()
    try:
        s.bind(("127.0.0.1", 0))
        for seq in range(a.count):
            if seq > U64_MAX:  # never let seq wrap
                break
            s.sendto(seal(ring.send_key, sid, seq, now_us(), body), (group, port))
            if seq + 1 < a.count:
                time.sleep(a.interval_ms / 1000)
    finally:
        s.close()
    print(f"sent {a.count} frame(s) as sender {sid.hex()} to {group}:{port} via 127.0.0.1",
          file=sys.stderr)
    return 0


def cmd_recv(a) -> int:
    group, port = _parse_group(a.group)
    ring = _keyring_or_exit(a.keyfile)
    counters = {"delivered": 0, **{r: 0 for r in REJECT_REASONS},
                "unknown_variant": 0, "bad_body": 0}
    state = ReplayState()
    s = _loopback_socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((group, port))  # binding the group address filters out other traffic (Linux)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 socket.inet_aton(group) + socket.inet_aton("127.0.0.1"))
    # Tests wait for this line before they start sending.
    print(f"listening on {group}:{port} via 127.0.0.1", file=sys.stderr, flush=True)
    deadline = time.monotonic() + a.timeout if a.timeout is not None else None
    rc = 0
    try:
        while a.count is None or counters["delivered"] < a.count:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    rc = 3
                    break
                s.settimeout(left)
            try:
                data = s.recv(65536)
            except socket.timeout:
                rc = 3
                break
            v = receive(data, ring, now_us(), state, a.skew_us, a.max_datagram)
            if v[0] != "ok":
                counters[v[1]] += 1
                continue
            _, h, plain = v
            try:  # 8. decode the body
                variant, payload = decode_body(plain)
            except ValueError:
                counters["bad_body"] += 1
                continue
            if variant != 0:
                counters["unknown_variant"] += 1
                continue
            counters["delivered"] += 1
            print(f"{h.sender_id.hex()} {h.seq} {_payload_text(payload)}", flush=True)
    except KeyboardInterrupt:
        rc = 130
    finally:
        s.close()
        print(json.dumps(counters), file=sys.stderr, flush=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="mcsec v1 reference implementation (Python)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    sub.add_parser("selftest", help="RFC vectors and protocol self-tests").set_defaults(fn=cmd_selftest)

    p = sub.add_parser("keyid", help="print the key ID of a 64-hex secret")
    p.add_argument("secret", metavar="SECRET_HEX")
    p.set_defaults(fn=cmd_keyid)

    p = sub.add_parser("check-keyfile", help="parse a key file and list its keys")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(fn=cmd_check_keyfile)

    p = sub.add_parser("check-vectors", help="verify DIR/*.txt test vectors")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(fn=cmd_check_vectors)

    def add_rx_opts(p):
        p.add_argument("--skew-us", type=int, default=DEFAULT_SKEW_US)
        p.add_argument("--max-datagram", type=int, default=DEFAULT_MAX_DATAGRAM)

    p = sub.add_parser("seal", help="print one frame as hex")
    p.add_argument("--keyfile", required=True)
    p.add_argument("--sender-id", metavar="HEX32")
    p.add_argument("--seq", type=int, default=0)
    p.add_argument("--timestamp", type=int, metavar="US")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", metavar="TEXT", help="payload, sealed as Data(bytes)")
    g.add_argument("--body", metavar="HEX", help="raw postcard body (plaintext) as hex")
    p.set_defaults(fn=cmd_seal)

    p = sub.add_parser("open", help="open one frame and print the verdict")
    p.add_argument("--keyfile", required=True)
    p.add_argument("--now", type=int, metavar="US")
    add_rx_opts(p)
    p.add_argument("frame", metavar="FRAMEHEX")
    p.set_defaults(fn=cmd_open)

    p = sub.add_parser("send", help="send Data frames to a multicast group over loopback only")
    p.add_argument("--keyfile", required=True)
    p.add_argument("--group", required=True, metavar="GROUP:PORT")
    p.add_argument("--message", required=True, metavar="TEXT")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--interval-ms", type=int, default=100)
    p.set_defaults(fn=cmd_send)

    p = sub.add_parser("recv", help="receive frames from a multicast group on loopback")
    p.add_argument("--keyfile", required=True)
    p.add_argument("--group", required=True, metavar="GROUP:PORT")
    p.add_argument("--count", type=int, help="exit 0 after N delivered messages")
    p.add_argument("--timeout", type=float, metavar="S", help="exit 3 after S seconds")
    add_rx_opts(p)
    p.set_defaults(fn=cmd_recv)

    a = ap.parse_args(argv)
    if a.cmd == "seal" and not 0 <= a.seq <= U64_MAX:
        ap.error("--seq out of range")
    if getattr(a, "count", None) is not None and a.count < 0:
        ap.error("--count must be >= 0")
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
