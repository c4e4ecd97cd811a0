#!/usr/bin/env bash
# Files: mcsec against UFTP, in the same run (BENCHMARKS.md, "Files against
# UFTP"; issue 11's targets): one receiver on loopback multicast, or three
# receivers over a veth bridge.
#
#   bash benches/files_vs_uftp.sh [--quick] [--receivers 1|3] [--size MIB]
#                                 [--rounds N] [--loss PCT] [--rate RATE]
#                                 [--chrt] [--mcsec PATH] [--send-args ARGS]
#
# Runs as root, always inside a network namespace of its own (it
# re-executes itself under `unshare --net`): nothing it sends can leave
# the machine. Each round sends one random file with each tool, in
# alternating order, lossless and then with PCT% random loss on the data
# group (nftables, input chain: `numgen random mod 100 lt PCT drop`), and
# prints MB/s (file bytes over the wall time from the sender's start to
# the last receiver holding the whole file, verified) and peak RSS (GNU
# time) of the sender and of the largest receiver.
#
# --receivers 1 (the default): the sender and its receiver share the
# namespace, which has only `lo`; PCT defaults to 10, RATE to 3000M.
# --receivers 3: the sender's namespace holds a bridge (198.18.0.1/24) and
# three veth pairs to three receiver namespaces (198.18.0.11-13), made by
# the script and removed on exit; multicast is routed on the bridge and on
# each receiver's veth, and only there. Each receiver drops PCT% of the
# data group's datagrams with its own nftables rule, so each loses
# independently; PCT defaults to 5, RATE to 900M. Every receiver's copy is
# checked.
#
# mcsec: `send --file --rate RATE --repeat 20 --repair R` (RATE: on lo
# 3000M, where the sender's one encoding thread is the limit (about
# 160 MB/s of file) and nothing is lost; unpaced, bursts overflow the
# receiver's 4 MiB buffer and later passes are needed; over the bridge
# 900M, from a search at 600M to 1300M, where 1300M lost 0.5% at two
# receivers of three; R is 10, and PCT + 10 through loss, as a user who
# knows the loss would set it), killed as soon as every receiver (`recv --save-dir
# --count 1`, its counters in the work directory's recv.err.N) has
# exited; uftp 4.10:
# `uftp -Y aes256-gcm -h sha256 -e ecdh_ecdsa -K prime256v1 -R -1`,
# `uftpd -d -D DIR -K ec:prime256v1` (an EC key on each side: without
# the client's, ECDH-ECDSA sessions are refused), each bound with -I to its
# interface; uftp's time ends when it exits, after every receiver has
# reported the file complete.
# All receivers write to the same file system; mcsec's fsyncs the file
# before it renames it, uftp's does not.
#
# --send-args ARGS: more arguments for mcsec's send, split on spaces
# (e.g. "--block-symbols 1024", a hidden flag for benchmarks).
#
# --quick: 64 MiB, one round (CI runs it with one receiver, and with
# --receivers 3, so the script cannot rot; the CI asserts nothing about
# the figures). --chrt: run both tools' processes at real-time priority
# (chrt -f 10), for a machine that other work shares. KEEP=1 in the
# environment keeps the work directory (/var/tmp/mcsec-uftp.*).
set -euo pipefail

size_mib=1024
rounds=3
loss=""
rate=""
receivers=1
chrt=()
mcsec=""
send_args=""
while (($#)); do
  case "$1" in
    --quick) size_mib=64; rounds=1 ;;
    --receivers) receivers="$2"; shift ;;
    --size) size_mib="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    --loss) loss="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --chrt) chrt=(chrt -f 10) ;;
    --mcsec) mcsec="$2"; shift ;;
    --send-args) send_args="$2"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$receivers" == 1 || "$receivers" == 3 ]] || { echo "--receivers: 1 or 3" >&2; exit 2; }
if [[ -z "$loss" ]]; then
  loss=10
  ((receivers == 1)) || loss=5
fi
if [[ -z "$rate" ]]; then
  rate=3000M
  ((receivers == 1)) || rate=900M
fi
for v in "$size_mib" "$rounds" "$loss"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "not a number: $v" >&2; exit 2; }
done

here=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${MCSEC_UFTP_BENCH_NS:-}" ]]; then
  ((EUID == 0)) || { echo "run as root: the benchmark makes network namespaces" >&2; exit 1; }
  for tool in uftp uftpd nft /usr/bin/time unshare nsenter ip bridge; do
    command -v "$tool" >/dev/null || {
      echo "missing $tool (Debian: apt-get install uftp nftables time iproute2 util-linux)" >&2; exit 1; }
  done
  if [[ -z "$mcsec" ]]; then
    (cd "$here" && cargo build --release --bin mcsec --quiet)
    mcsec="$here/target/release/mcsec"
  fi
  args=(--size "$size_mib" --rounds "$rounds" --loss "$loss" --rate "$rate" --mcsec "$mcsec"
    --receivers "$receivers")
  ((${#chrt[@]})) && args+=(--chrt)
  [[ -n "$send_args" ]] && args+=(--send-args "$send_args")
  exec env MCSEC_UFTP_BENCH_NS=1 unshare --net -- bash "$0" "${args[@]}"
fi

# In the sender's namespace from here on: every process in it, and in the
# receivers' namespaces, is this script's.
[[ -x "$mcsec" ]] || { echo "no mcsec binary at $mcsec" >&2; exit 1; }
own_ns=$(readlink /proc/self/ns/net)
rx_ns=() # the receivers' namespaces (net:[inode]), --receivers 3

work=$(mktemp -d /var/tmp/mcsec-uftp.XXXXXX)
cleanup() {
  set +e
  # Every process in a namespace this script made, but this shell: the
  # tools, GNU time, and the sleeps that hold the receivers' namespaces
  # (which go with them, and their veths with them).
  local sig p ns n
  for sig in TERM KILL; do
    n=0
    for p in /proc/[0-9]*; do
      p=${p#/proc/}
      ((p == $$ || p == BASHPID)) && continue
      ns=$(readlink "/proc/$p/ns/net" 2>/dev/null) || continue
      if [[ "$ns" == "$own_ns" || " ${rx_ns[*]} " == *" $ns "* ]]; then
        kill -"$sig" "$p" 2>/dev/null && n=$((n + 1))
      fi
    done
    ((n)) || break
    [[ $sig == TERM ]] && sleep 0.5
  done
  [[ -n "${KEEP:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mcsec_group=239.255.77.1
mcsec_port=47001
uftp_pub=239.255.77.2
uftp_priv=239.255.77.3
uftp_port=47002

# Per receiver i: rx_run[i] (a command prefix that enters its namespace),
# rx_if[i], rx_addr[i]; the sender's tx_if and tx_addr.
rx_run=() rx_if=() rx_addr=()
ip link set lo up
if ((receivers == 1)); then
  # uftpd joins on an interface by name, which needs the MULTICAST flag.
  ip link set lo multicast on
  ip route add 224.0.0.0/4 dev lo src 127.0.0.1
  tx_if=lo tx_addr=127.0.0.1
  rx_run[1]="" rx_if[1]=lo rx_addr[1]=127.0.0.1
else
  # A bridge in the sender's namespace; a veth pair to each receiver's.
  # No IGMP snooping: the bridge floods the groups to every port, as a
  # switch without a querier would.
  tx_if=br0 tx_addr=198.18.0.1
  ip link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  ip addr add "$tx_addr/24" dev br0
  ip link set br0 up
  ip route add 224.0.0.0/4 dev br0 src "$tx_addr"
  for ((i = 1; i <= receivers; i++)); do
    unshare --net -- sleep infinity &
    holder=$!
    for _ in {1..100}; do
      ns=$(readlink "/proc/$holder/ns/net" 2>/dev/null) || ns=""
      [[ -n "$ns" && "$ns" != "$own_ns" ]] && break
      sleep 0.01
    done
    [[ -n "$ns" && "$ns" != "$own_ns" ]] || { echo "no namespace for receiver $i" >&2; exit 1; }
    rx_ns+=("$ns")
    rx_run[i]="nsenter -t $holder -n --" rx_if[i]=r$i rx_addr[i]=198.18.0.$((10 + i))
    ip link add "s$i" type veth peer name "r$i"
    ip link set "r$i" netns "$holder"
    ip link set "s$i" master br0 up
    ${rx_run[i]} ip link set lo up
    ${rx_run[i]} ip addr add "${rx_addr[i]}/24" dev "r$i"
    ${rx_run[i]} ip link set "r$i" up
    ${rx_run[i]} ip route add 224.0.0.0/4 dev "r$i" src "${rx_addr[i]}"
  done
  # Every bridge port forwarding before anything is measured.
  for ((i = 1; i <= receivers; i++)); do
    for _ in {1..100}; do
      bridge link show dev "s$i" | grep -q "state forwarding" && break
      sleep 0.05
    done
  done
fi

src="$work/file.bin"
head -c "$((size_mib << 20))" /dev/urandom >"$src"
want=$(sha256sum "$src" | cut -d' ' -f1)
bytes=$(stat -c %s "$src")
"$mcsec" keygen -o "$work/group.key" >/dev/null 2>&1

set_loss() { # PCT: each receiver drops PCT% of datagrams to the data groups
  local i
  for ((i = 1; i <= receivers; i++)); do
    ${rx_run[i]} nft delete table ip t 2>/dev/null || true
    (($1 > 0)) || continue
    ${rx_run[i]} nft add table ip t
    ${rx_run[i]} nft add chain ip t c '{ type filter hook input priority 0; }'
    ${rx_run[i]} nft add rule ip t c ip daddr "{ $mcsec_group, $uftp_priv }" \
      numgen random mod 100 lt "$1" drop
  done
}

now() { date +%s.%N; }

check() { # FILE: the received copy, whole
  [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$want" ]]
}

largest_rss() { # PREFIX: the largest figure in PREFIX.1 ... PREFIX.N
  local i m=0 v
  for ((i = 1; i <= receivers; i++)); do
    v=$(tail -n1 "$1.$i" 2>/dev/null) || v=0
    [[ "$v" =~ ^[0-9]+$ ]] || v=0
    ((v > m)) && m=$v
  done
  echo "$m"
}

# Each run starts with nothing waiting to be written back: the source file
# just made, or the last run's copies, would otherwise be flushed inside
# the next run's time (mcsec fsyncs, and ext4 commits other files' data
# with it).
settle_disk() { sync; }

run_mcsec() { # PCT; prints: seconds send_rss_kib largest_recv_rss_kib
  local t0 t1 repair=10 i ok=1 rpids=()
  settle_disk
  (($1 > 0)) && repair=$(($1 + 10))
  for ((i = 1; i <= receivers; i++)); do
    rm -rf "$work/mcsec.out.$i"; mkdir -p "$work/mcsec.out.$i"
    ${rx_run[i]} /usr/bin/time -f %M -o "$work/recv.rss.$i" "${chrt[@]}" "$mcsec" recv \
      -k "$work/group.key" -g "$mcsec_group:$mcsec_port" -i "${rx_addr[i]}" \
      --save-dir "$work/mcsec.out.$i" --count 1 --rcvbuf 16M --duration 600s \
      >/dev/null 2>"$work/recv.err.$i" &
    rpids[i]=$!
  done
  sleep 0.3
  t0=$(now)
  /usr/bin/time -f %M -o "$work/send.rss" "${chrt[@]}" "$mcsec" send -k "$work/group.key" \
    -g "$mcsec_group:$mcsec_port" -i "$tx_addr" --file "$src" --rate "$rate" \
    --repair "$repair" --repeat 20 -q $send_args 2>"$work/send.err" &
  local spid=$!
  for ((i = 1; i <= receivers; i++)); do
    wait "${rpids[i]}" || {
      cat "$work/recv.err.$i" >&2; echo "mcsec recv $i failed" >&2; }
  done
  t1=$(now)
  # Stop the sender, not GNU time, which then writes its figure.
  pkill -TERM -P "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  for ((i = 1; i <= receivers; i++)); do
    check "$work/mcsec.out.$i/file.bin" || {
      echo "mcsec: the file did not arrive whole at receiver $i" >&2; ok=0; }
  done
  ((ok)) || return 1
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') $(tail -n1 "$work/send.rss") $(largest_rss "$work/recv.rss")"
}

run_uftp() { # prints: seconds send_rss_kib largest_recv_rss_kib
  local t0 t1 i ok=1 dpids=()
  settle_disk
  for ((i = 1; i <= receivers; i++)); do
    rm -rf "$work/uftp.out.$i"; mkdir -p "$work/uftp.out.$i"
    ${rx_run[i]} /usr/bin/time -f %M -o "$work/uftpd.rss.$i" "${chrt[@]}" uftpd -d \
      -D "$work/uftp.out.$i" -I "${rx_if[i]}" -K ec:prime256v1 -M "$uftp_pub" -p "$uftp_port" \
      -B 16777216 -x 0 >/dev/null 2>&1 &
    dpids[i]=$!
  done
  sleep 0.3
  t0=$(now)
  /usr/bin/time -f %M -o "$work/uftp.rss" "${chrt[@]}" uftp -Y aes256-gcm -h sha256 \
    -e ecdh_ecdsa -K prime256v1 -R -1 -I "$tx_if" -M "$uftp_pub" -P "$uftp_priv" \
    -p "$uftp_port" -B 16777216 -x 0 "$src" >"$work/uftp.log" 2>&1 || {
    cat "$work/uftp.log" >&2; echo "uftp failed" >&2; }
  t1=$(now)
  for ((i = 1; i <= receivers; i++)); do
    pkill -TERM -P "${dpids[i]}" 2>/dev/null || true
    wait "${dpids[i]}" 2>/dev/null || true
  done
  for ((i = 1; i <= receivers; i++)); do
    check "$work/uftp.out.$i/file.bin" || {
      echo "uftp: the file did not arrive whole at receiver $i" >&2; ok=0; }
  done
  ((ok)) || return 1
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') $(tail -n1 "$work/uftp.rss") $(largest_rss "$work/uftpd.rss")"
}

mbs() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.1f", b / s / 1e6 }'; }

where="one receiver on lo"
((receivers == 1)) || where="$receivers receivers over a veth bridge, each losing independently"
printf "%s MiB, %s round(s), %s, loss 0%% and %s%%, mcsec at %s%s, %s\n" "$size_mib" "$rounds" \
  "$where" "$loss" "$rate" "${send_args:+ $send_args}" "$("$mcsec" --version)"
printf "%-6s %-5s %-6s %10s %10s %14s %14s\n" round loss tool MB/s seconds "send RSS KiB" "recv RSS KiB"
failed=0
for ((r = 1; r <= rounds; r++)); do
  for pct in 0 "$loss"; do
    set_loss "$pct"
    order=(mcsec uftp)
    ((r % 2 == 0)) && order=(uftp mcsec)
    declare -A speed=()
    for tool in "${order[@]}"; do
      # In the background: `wait` returns at once on SIGINT or SIGTERM, and
      # the trap then ends everything the script started.
      "run_$tool" "$pct" >"$work/result" &
      if wait $!; then
        read -r secs srss rrss <"$work/result"
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
