#!/usr/bin/env python3
"""Replays mcsec_ref.py's own signed-session vectors into a live
`mcsec recv --trust` and compares what it delivers, in order, and its 3.5
counters with the vectors' hand-written expectations.

The vectors are made afresh with timestamps near now, and sent over
loopback multicast (239.255.0.1:5000, the vectors' channel, TTL 1, out of
127.0.0.1). Sessions whose steps need a receiver clock the test controls
(hold_expiry, core_checks_first) are skipped; untrusted_signer runs with a
short --sig-hold so that its held frames are dropped before the end.

Network safety: it refuses to run unless the only network interface is lo.
Run it as

    unshare --net -- bash -c 'ip link set lo up; \
        ip route add 224.0.0.0/4 dev lo src 127.0.0.1; \
        python3 tests/interop/replay_signed.py target/debug/mcsec'
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcsec_ref as m  # noqa: E402

SKIP = {"hold_expiry", "core_checks_first"}  # their steps move a receiver clock


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} MCSEC_BINARY", file=sys.stderr)
        return 2
    mcsec = sys.argv[1]
    links = sorted(n for _, n in socket.if_nameindex())
    if links != ["lo"]:
        print(f"refusing to run: interfaces {links}, not only lo (run inside unshare --net)",
              file=sys.stderr)
        return 2
    d = tempfile.mkdtemp()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    passed = failed = 0
    for p in m.make_signed_vectors(d, t0=m.now_us()):
        if p.parent.name != "signed" or p.stem in SKIP:
            continue
        head, trust, steps, counts = m.parse_signed_vector(p.read_text())
        kf, tf = os.path.join(d, "group.key"), os.path.join(d, "trust.pub")
        secret = bytes.fromhex(head["secret"][0])
        with open(os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(f"mcsec-key-v1 {m.key_id_of(secret):08x} {secret.hex()}\n")
        with open(tf, "w") as f:
            for t in trust:
                f.write(f"mcsec-signer-public-v1 {t.signer_id.hex()} {t.public.hex()}\n")
        hold = "200ms" if p.stem == "untrusted_signer" else "10s"
        with open(os.path.join(d, "err"), "w+") as err:
            rx = subprocess.Popen([mcsec, "recv", "-v", "-g", "239.255.0.1:5000", "-i", "127.0.0.1",
                                   "-k", kf, "--trust", tf, "--format", "json",
                                   "--duration", "2s", "--sig-hold", hold],
                                  stdout=subprocess.PIPE, stderr=err, text=True)
            for _ in range(500):
                err.seek(0)
                if "receiving on" in err.read():
                    break
                time.sleep(0.02)
            for _, _, frame, _ in steps:
                if frame is not None:
                    s.sendto(frame, ("239.255.0.1", 5000))
                    time.sleep(0.005)
            out, _ = rx.communicate(timeout=60)
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        got = [x["seq"] for x in lines if x.get("type") == "message"]
        stats = next((x for x in lines if x.get("type") == "stats"), {})
        want = [int(q) for _, _, _, e in steps if e.startswith("deliver ")
                for q in e[len("deliver "):].split(",")]
        diffs = [f"{c}: mcsec {stats.get(c)}, expected {v}" for c, v in counts.items()
                 if stats.get(c) != v]
        if got != want:
            diffs.insert(0, f"delivered seqs {got}, expected {want}")
        if diffs:
            failed += 1
            print(f"FAIL {p.stem}: {'; '.join(diffs)}")
        else:
            passed += 1
            print(f"ok   {p.stem}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
