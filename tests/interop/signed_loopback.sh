#!/usr/bin/env bash
# Signed senders (PROTOCOL.md Part 3) end to end through mcsec_ref.py's own
# command line: `send --sign` into `recv --trust`, over loopback multicast.
#
# Network safety: this sends packets, so it refuses to run unless it is in a
# network namespace whose only interface is lo. Run it as
#
#   unshare --net -- bash -c 'ip link set lo up; \
#       ip route add 224.0.0.0/4 dev lo src 127.0.0.1; \
#       bash tests/interop/signed_loopback.sh'
#
# It prints "N passed, 0 failed" and exits 0 when every check holds.
set -u
cd "$(dirname "$0")"
REF="$PWD/mcsec_ref.py"

links=$(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | tr '\n' ' ')
if [ "$links" != "lo " ]; then
    echo "refusing to run: interfaces are '$links', not only lo (run inside unshare --net)" >&2
    exit 2
fi

DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
GROUP=239.255.0.77:46777
passed=0
failed=0
check() { # name, then a command that must succeed
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
    fi
}
counter() { # file, name: a counter from the JSON line on stderr
    python3 -c 'import json, sys
line = [l for l in open(sys.argv[1]) if l.startswith("{")][-1]
print(json.loads(line).get(sys.argv[2], "absent"))' "$1" "$2"
}
listen() { # out, err, recv args...: starts a receiver, waits until it listens
    local out=$1 err=$2
    shift 2
    python3 "$REF" recv --keyfile "$DIR/group.key" --group "$GROUP" "$@" >"$out" 2>"$err" &
    RX=$!
    for _ in $(seq 100); do
        grep -q 'listening on' "$err" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "receiver did not start: $(cat "$err")" >&2
    return 1
}
send() { # message, count, extra args...
    local msg=$1 n=$2
    shift 2
    python3 "$REF" send --keyfile "$DIR/group.key" --group "$GROUP" --message "$msg" \
        --count "$n" --interval-ms 2 "$@" 2>>"$DIR/send_err"
}

python3 -c 'import hashlib, secrets
s = secrets.token_bytes(32)
kid = hashlib.sha256(b"mcsec v1 key id" + s).digest()[:4].hex()
print(f"mcsec-key-v1 {kid} {s.hex()}")' >"$DIR/group.key"
chmod 600 "$DIR/group.key"
python3 "$REF" signer-new -o "$DIR/alice.key" 2>/dev/null
python3 "$REF" signer-new -o "$DIR/mallory.key" 2>/dev/null
python3 "$REF" signer-public "$DIR/alice.key" >"$DIR/trust"
python3 "$REF" signer-public "$DIR/alice.key" --name x | sed 's/ x$//' >"$DIR/trust_unnamed"
alice_id=$(awk '{print $2}' "$DIR/trust")

# 1. A signed sender, a receiver that trusts it: every message, signer=alice.
listen "$DIR/o1" "$DIR/e1" --trust "$DIR/trust" --count 7 --timeout 20
send "signed hello" 7 --sign "$DIR/alice.key" --sign-every 3 --sign-interval 1000
wait $RX
check "signed: exit 0 after 7 messages" test $? -eq 0
check "signed: 7 lines, each with signer=alice" \
    test "$(grep -c ' signed hello signer=alice$' "$DIR/o1")" -eq 7
check "signed: manifests verified (3 batches), duplicates counted" \
    test "$(counter "$DIR/e1" manifests_verified)" -eq 3 -a "$(counter "$DIR/e1" manifest_duplicate)" -ge 2
check "signed: the JSON line has every 3.5 counter" python3 -c 'import json, sys
line = [l for l in open(sys.argv[1]) if l.startswith("{")][-1]
d = json.loads(line)
sys.exit(0 if all(c in d for c in "manifests_verified manifest_duplicate sig_untrusted sig_invalid sig_bad sig_forged sig_unsigned sig_expired sig_hold_full".split()) else 1)' "$DIR/e1"

# 2. A trust line without a name: the signer ID in hex.
listen "$DIR/o2" "$DIR/e2" --trust "$DIR/trust_unnamed" --count 2 --timeout 20
send "anonymous" 2 --sign "$DIR/alice.key"
wait $RX
check "unnamed signer: signer=<signer ID hex>" \
    test "$(grep -c " anonymous signer=$alice_id\$" "$DIR/o2")" -eq 2

# 3. An unsigned sender, and one signed by an untrusted key: nothing delivered.
listen "$DIR/o3" "$DIR/e3" --trust "$DIR/trust" --sig-hold 200 --timeout 4
send "unsigned" 3
send "mallory" 2 --sign "$DIR/mallory.key"
wait $RX
check "untrusted: no message delivered" test ! -s "$DIR/o3"
check "untrusted: sig_unsigned 5 (held frames dropped after --sig-hold)" \
    test "$(counter "$DIR/e3" sig_unsigned)" -eq 5
check "untrusted: sig_untrusted 2 (mallory's manifest, twice)" \
    test "$(counter "$DIR/e3" sig_untrusted)" -eq 2

# 4. Without --trust: a signed feed is received as an unsigned one.
listen "$DIR/o4" "$DIR/e4" --timeout 4
send "plain" 4 --sign "$DIR/alice.key" --sign-every 2
wait $RX
check "no trust: 4 messages, no signer field" test "$(grep -c ' plain$' "$DIR/o4")" -eq 4
check "no trust: manifests_ignored 4, delivered 4" \
    test "$(counter "$DIR/e4" manifests_ignored)" -eq 4 -a "$(counter "$DIR/e4" delivered)" -eq 4
check "no trust: no replay counted for the second manifest copy" \
    test "$(counter "$DIR/e4" replayed)" -eq 0

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
