#!/usr/bin/env bash
# Files: mcsec against UFTP, one receiver, loopback multicast, in the same
# run (BENCHMARKS.md, "Files against UFTP"; issue 11's targets).
#
#   bash benches/files_vs_uftp.sh [--quick] [--size MIB] [--rounds N]
#                                 [--loss PCT] [--rate RATE] [--chrt]
#                                 [--mcsec PATH]
#
# Runs as root, always inside a network namespace of its own with only
# `lo` (it re-executes itself under `unshare --net`): nothing it sends can
# leave the machine. Each round sends one random file with each tool, in
# alternating order, lossless and then with PCT% random loss on the data
# group (nftables, input chain: `numgen random mod 100 lt PCT drop`), and
# prints MB/s (file bytes over the wall time from the sender's start to the
# receiver holding the whole file, verified) and both sides' peak RSS
# (GNU time). mcsec: `send --file --rate RATE --repeat 20 --repair R`
# (RATE 1300M by default: the fastest this loopback carried without loss
# in a quick search, 1G to 1600M; unpaced, the lo backlog drops and later
# passes are needed; R is 10, and PCT + 10 through loss, as a user who
# knows the loss would set it), killed as soon as the receiver (`recv
# --save-dir --count 1`) exits; uftp 4.10:
# `uftp -Y aes256-gcm -h sha256 -e ecdh_ecdsa -K prime256v1 -R -1`,
# `uftpd -d -D DIR -K ec:prime256v1` (an EC key on each side: without
# the client's, ECDH-ECDSA sessions are refused).
# Both receivers write to the same file system; mcsec's fsyncs the file
# before it renames it, uftp's does not.
#
# --quick: 64 MiB, one round (CI runs this so the script cannot rot; the
# CI asserts nothing about its figures). --chrt: run both tools' processes
# at real-time priority (chrt -f 10), for a machine that other work shares.
set -euo pipefail

size_mib=1024
rounds=3
loss=10
rate=1300M
chrt=()
mcsec=""
while (($#)); do
  case "$1" in
    --quick) size_mib=64; rounds=1 ;;
    --size) size_mib="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    --loss) loss="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --chrt) chrt=(chrt -f 10) ;;
    --mcsec) mcsec="$2"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in "$size_mib" "$rounds" "$loss"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "not a number: $v" >&2; exit 2; }
done

here=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${MCSEC_UFTP_BENCH_NS:-}" ]]; then
  ((EUID == 0)) || { echo "run as root: the benchmark makes a network namespace" >&2; exit 1; }
  for tool in uftp uftpd nft /usr/bin/time unshare ip; do
    command -v "$tool" >/dev/null || {
      echo "missing $tool (Debian: apt-get install uftp nftables time iproute2)" >&2; exit 1; }
  done
  if [[ -z "$mcsec" ]]; then
    (cd "$here" && cargo build --release --bin mcsec --quiet)
    mcsec="$here/target/release/mcsec"
  fi
  args=(--size "$size_mib" --rounds "$rounds" --loss "$loss" --rate "$rate" --mcsec "$mcsec")
  ((${#chrt[@]})) && args+=(--chrt)
  exec env MCSEC_UFTP_BENCH_NS=1 unshare --net -- bash "$0" "${args[@]}"
fi

# In the namespace from here on.
ip link set lo up
# uftpd joins on an interface by name, which needs the MULTICAST flag.
ip link set lo multicast on
ip route add 224.0.0.0/4 dev lo src 127.0.0.1
[[ -x "$mcsec" ]] || { echo "no mcsec binary at $mcsec" >&2; exit 1; }

work=$(mktemp -d /var/tmp/mcsec-uftp.XXXXXX)
cleanup() {
  pkill -P $$ 2>/dev/null || true
  nft delete table ip t 2>/dev/null || true
  [[ -n "${KEEP:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT

mcsec_group=239.255.77.1
mcsec_port=47001
uftp_pub=239.255.77.2
uftp_priv=239.255.77.3
uftp_port=47002

src="$work/file.bin"
head -c "$((size_mib << 20))" /dev/urandom >"$src"
want=$(sha256sum "$src" | cut -d' ' -f1)
bytes=$(stat -c %s "$src")
"$mcsec" keygen -o "$work/group.key" >/dev/null 2>&1

set_loss() { # PCT: drop PCT% of datagrams to the data groups
  nft delete table ip t 2>/dev/null || true
  (($1 > 0)) || return 0
  nft add table ip t
  nft add chain ip t c '{ type filter hook input priority 0; }'
  nft add rule ip t c ip daddr "{ $mcsec_group, $uftp_priv }" numgen random mod 100 lt "$1" drop
}

now() { date +%s.%N; }

check() { # FILE: the received copy, whole
  [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$want" ]]
}

run_mcsec() { # PCT; prints: seconds send_rss_kib recv_rss_kib
  local dir="$work/mcsec.out" t0 t1 repair=10
  (($1 > 0)) && repair=$(($1 + 10))
  rm -rf "$dir"; mkdir -p "$dir"
  /usr/bin/time -f %M -o "$work/recv.rss" "${chrt[@]}" "$mcsec" recv -k "$work/group.key" \
    -g "$mcsec_group:$mcsec_port" -i 127.0.0.1 --save-dir "$dir" --count 1 \
    --rcvbuf 16M --duration 600s -q >/dev/null 2>"$work/recv.err" &
  local rpid=$!
  sleep 0.3
  t0=$(now)
  /usr/bin/time -f %M -o "$work/send.rss" "${chrt[@]}" "$mcsec" send -k "$work/group.key" \
    -g "$mcsec_group:$mcsec_port" -i 127.0.0.1 --file "$src" --rate "$rate" \
    --repair "$repair" --repeat 20 -q 2>"$work/send.err" &
  local spid=$!
  wait "$rpid" || { cat "$work/recv.err" >&2; echo "mcsec recv failed" >&2; }
  t1=$(now)
  # Stop the sender, not GNU time, which then writes its figure.
  pkill -TERM -P "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  check "$dir/file.bin" || { echo "mcsec: the file did not arrive whole" >&2; return 1; }
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') $(tail -n1 "$work/send.rss") $(tail -n1 "$work/recv.rss")"
}

run_uftp() { # prints: seconds send_rss_kib recv_rss_kib
  local dir="$work/uftp.out" t0 t1
  rm -rf "$dir"; mkdir -p "$dir"
  /usr/bin/time -f %M -o "$work/uftpd.rss" "${chrt[@]}" uftpd -d -D "$dir" -I lo -K ec:prime256v1 \
    -M "$uftp_pub" -p "$uftp_port" -B 16777216 -x 0 >/dev/null 2>&1 &
  local dpid=$!
  sleep 0.3
  t0=$(now)
  /usr/bin/time -f %M -o "$work/uftp.rss" "${chrt[@]}" uftp -Y aes256-gcm -h sha256 \
    -e ecdh_ecdsa -K prime256v1 -R -1 -I lo -M "$uftp_pub" -P "$uftp_priv" -p "$uftp_port" \
    -B 16777216 -x 0 "$src" >"$work/uftp.log" 2>&1 || {
    cat "$work/uftp.log" >&2; echo "uftp failed" >&2; }
  t1=$(now)
  pkill -TERM -P "$dpid" 2>/dev/null || true
  wait "$dpid" 2>/dev/null || true
  check "$dir/file.bin" || { echo "uftp: the file did not arrive whole" >&2; return 1; }
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') $(tail -n1 "$work/uftp.rss") $(tail -n1 "$work/uftpd.rss")"
}

mbs() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.1f", b / s / 1e6 }'; }

printf "%s MiB, %s round(s), loss 0%% and %s%%, mcsec at %s, %s\n" "$size_mib" "$rounds" \
  "$loss" "$rate" "$("$mcsec" --version)"
printf "%-6s %-5s %-6s %10s %10s %14s %14s\n" round loss tool MB/s seconds "send RSS KiB" "recv RSS KiB"
failed=0
for ((r = 1; r <= rounds; r++)); do
  for pct in 0 "$loss"; do
    set_loss "$pct"
    order=(mcsec uftp)
    ((r % 2 == 0)) && order=(uftp mcsec)
    declare -A speed=()
    for tool in "${order[@]}"; do
      if out=$("run_$tool" "$pct"); then
        read -r secs srss rrss <<<"$out"
        speed[$tool]=$(mbs "$secs")
        printf "%-6s %-5s %-6s %10s %10.2f %14s %14s\n" "$r" "$pct%" "$tool" "${speed[$tool]}" \
          "$secs" "$srss" "$rrss"
      else
        failed=$((failed + 1))
        printf "%-6s %-5s %-6s %10s\n" "$r" "$pct%" "$tool" failed
      fi
    done
    if [[ -n "${speed[mcsec]:-}" && -n "${speed[uftp]:-}" ]]; then
      printf "%-6s %-5s ratio mcsec/uftp: %s\n" "$r" "$pct%" \
        "$(awk -v m="${speed[mcsec]}" -v u="${speed[uftp]}" 'BEGIN { printf "%.2f", m / u }')"
    fi
    unset speed
  done
done
set_loss 0
((failed == 0)) || { echo "$failed transfer(s) failed" >&2; exit 1; }
