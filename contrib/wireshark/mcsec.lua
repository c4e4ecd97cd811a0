-- Wireshark dissector for mcsec, wire protocol version 2 (PROTOCOL.md 1.3).
--
-- A heuristic UDP dissector: mcsec has no fixed port, so every UDP
-- datagram that starts with the v2 magic "mcs\x02" and is at least 56 bytes
-- long (the 40-byte header and the 16-byte tag) is shown as mcsec. Only the
-- header is in the clear; the body is encrypted and is shown as its length.
--
--   tshark -X lua_script:contrib/wireshark/mcsec.lua -r capture.pcap -Y mcsec
--   wireshark -X lua_script:contrib/wireshark/mcsec.lua capture.pcap
--
-- or copy this file to ~/.local/lib/wireshark/plugins/ to load it always.
-- On a port that another dissector claims, add
-- `-o udp.try_heuristic_first:TRUE` (Wireshark: Preferences, Protocols, UDP,
-- "Try heuristic sub-dissectors first").
--
-- Frame (all integers big-endian):
--   offset  size  field
--        0     4  magic and version: 6d 63 73 02
--        4     4  key_id
--        8    16  sender_id
--       24     8  seq
--       32     8  timestamp: microseconds since the Unix epoch
--       40     n  ciphertext of the body
--     40+n    16  Poly1305 tag

local HEADER_LEN = 40
local TAG_LEN = 16
local MIN_LEN = HEADER_LEN + TAG_LEN
local MAGIC = "mcs" -- the first three bytes; the fourth is the version
local VERSION = 2

local mcsec = Proto("mcsec", "mcsec authenticated multicast")

local f = {
    magic = ProtoField.string("mcsec.magic", "Magic"),
    version = ProtoField.uint8("mcsec.version", "Version", base.DEC),
    key_id = ProtoField.uint32("mcsec.key_id", "Key ID", base.HEX),
    sender_id = ProtoField.bytes("mcsec.sender_id", "Sender ID"),
    seq = ProtoField.uint64("mcsec.seq", "Sequence number", base.DEC),
    timestamp = ProtoField.uint64("mcsec.timestamp", "Timestamp (µs since the epoch)", base.DEC),
    time = ProtoField.absolute_time("mcsec.time", "Sender time", base.UTC),
    ciphertext = ProtoField.bytes("mcsec.ciphertext", "Ciphertext (encrypted body)"),
    ciphertext_len = ProtoField.uint32("mcsec.ciphertext_len", "Ciphertext length", base.DEC),
    tag = ProtoField.bytes("mcsec.tag", "Tag (Poly1305)"),
}
mcsec.fields = { f.magic, f.version, f.key_id, f.sender_id, f.seq, f.timestamp,
    f.time, f.ciphertext, f.ciphertext_len, f.tag }

-- True when the datagram is an mcsec v2 frame as far as the clear header
-- can tell (the tag can only be checked with the key).
local function is_mcsec(tvb)
    if tvb:reported_len() < MIN_LEN or tvb:len() < 4 then
        return false
    end
    return tvb:range(0, 3):string() == MAGIC and tvb:range(3, 1):uint() == VERSION
end

local truncated = ProtoExpert.new("mcsec.truncated", "Capture ends before the frame does",
    expert.group.MALFORMED, expert.severity.NOTE)
mcsec.experts = { truncated }

function mcsec.dissector(tvb, pinfo, tree)
    if not is_mcsec(tvb) then
        return 0
    end
    -- The length on the wire; a capture with a short snaplen may hold
    -- less (`captured`): fields past its end are left out, not errors.
    local len = tvb:reported_len()
    local captured = tvb:len()
    local n = len - MIN_LEN
    pinfo.cols.protocol = "MCSEC"

    local t = tree:add(mcsec, tvb(), "mcsec v2 frame")
    local function have(offset, size)
        return offset + size <= captured
    end
    t:add(f.magic, tvb(0, 3))
    t:add(f.version, tvb(3, 1))
    local info = "mcsec"
    if have(4, 4) then
        t:add(f.key_id, tvb(4, 4))
        info = info .. string.format(" key %08x", tvb(4, 4):uint())
    end
    if have(8, 16) then
        t:add(f.sender_id, tvb(8, 16))
        info = info .. " sender " .. tvb(8, 4):bytes():tohex(true)
    end
    if have(24, 8) then
        t:add(f.seq, tvb(24, 8))
        info = info .. " seq " .. tostring(tvb(24, 8):uint64())
    end
    if have(32, 8) then
        local us = tvb(32, 8):uint64()
        t:add(f.timestamp, tvb(32, 8))
        local secs = (us / 1000000):tonumber()
        local nsecs = (us % 1000000):tonumber() * 1000
        t:add(f.time, tvb(32, 8), NSTime.new(secs, nsecs))
    end
    t:add(f.ciphertext_len, n):set_generated()
    if n > 0 and have(HEADER_LEN, n) then
        t:add(f.ciphertext, tvb(HEADER_LEN, n))
    end
    if have(HEADER_LEN + n, TAG_LEN) then
        t:add(f.tag, tvb(HEADER_LEN + n, TAG_LEN))
    else
        t:add_proto_expert_info(truncated)
    end
    pinfo.cols.info = info
    return len
end

local function heuristic(tvb, pinfo, tree)
    if not is_mcsec(tvb) then
        return false
    end
    mcsec.dissector(tvb, pinfo, tree)
    return true
end

mcsec:register_heuristic("udp", heuristic)
