#!/bin/bash
# `--threads` on each side (issue 14): BENCHMARKS.md, "Threads".
# Run inside a fresh network namespace with lo up and 224.0.0.0/4 on it:
#   unshare --net -- bash -c 'ip link set lo up; ip route add 224.0.0.0/4 dev lo src 127.0.0.1; benches/threads.sh'
# Prints one line per run: recv runs with the receiver's JSON report, then
# its partner's; send runs with the sender's report.
set -u
M=${MCSEC:-target/release/mcsec}
G=239.255.77.9:47009
OUT=$(mktemp -d)
K=$OUT/k
$M keygen -o "$K" >/dev/null
recv_round() { # $1 threads, $2 recv cpus, $3 sender's extra flags
  taskset -c $2 $M bench --role recv -k $K -g $G --threads $1 --format json --idle 1s > $OUT/r.json 2>/dev/null &
  local rp=$!
  sleep 0.5
  taskset -c 0 $M bench --role send -k $K -g $G --threads 2 --duration 3s ${3:-} --format json > $OUT/s.json 2>/dev/null
  wait $rp
  echo "recv threads=$1 cpus=$2 sender=[${3:-}] $(cat $OUT/r.json) SENDER $(cat $OUT/s.json | head -c 400)"
}
send_round() { # $1 threads, $2 send cpus
  taskset -c 1 $M bench --role recv --modes plain-batched -g $G --idle 1s > /dev/null 2>&1 &
  local rp=$!
  sleep 0.5
  taskset -c $2 $M bench --role send -k $K -g $G --threads $1 --duration 3s --format json 2>/dev/null
  kill $rp; wait $rp 2>/dev/null
}
for round in ${ROUNDS:-1 2 3}; do
  for t in 1 2; do recv_round $t 1; recv_round $t 0,1; recv_round $t 0,1 "--rate 1500M"; send_round $t 0; send_round $t 0,1; done
done
