#!/usr/bin/env bash
# Server CPU per SET (-P 16, 50 clients) of a single node and of a three-replica loopback
# cluster, side by side: how much more work replication costs, per replica (docs/bench-redis.md).
#   bench/cluster-cpu.sh          # after cargo build --release -p ziggy-io
set -euo pipefail
cd "$(dirname "$0")/.."
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
Z=./target/release/ziggy; D=$(mktemp -d); trap 'rm -rf "$D"' EXIT
N=1000000
$Z serve --data $D/s.data --port 7610 --no-http >/dev/null 2>&1 & S=$!
A=127.0.0.1:7711,127.0.0.1:7712,127.0.0.1:7713
for i in 0 1 2; do $Z serve --data $D/c$i.data --port $((7620+i)) --no-http --replica $i --addresses $A --cluster-id 3 >/dev/null 2>&1 & P[$i]=$!; done
for p in 7610 7620 7621 7622; do for k in $(seq 1 100); do redis-cli -p $p ping >/dev/null 2>&1 && break; sleep 0.1; done; done
for p in 7620 7621 7622; do redis-cli -p $p set warm up >/dev/null; done
L=7620; for p in 7620 7621 7622; do redis-cli -p $p info replication | grep -q raft_role:leader && L=$p; done
for round in 1 2; do
c0=$(cpu $S); r=$(redis-benchmark -p 7610 -t set -n $N -c 50 -P 16 --csv 2>/dev/null | awk -F'","' 'NR==2{print $2+0}'); c1=$(cpu $S)
echo "single: $r/s, server cpu $(( (c1-c0)*10000000/N )) ns/req"
for i in 0 1 2; do b[$i]=$(cpu ${P[$i]}); done
r=$(redis-benchmark -p $L -t set -n $N -c 50 -P 16 --csv 2>/dev/null | awk -F'","' 'NR==2{print $2+0}')
line="cluster (leader port $L): $r/s, cpu ns/req per replica:"; tot=0
for i in 0 1 2; do e=$(cpu ${P[$i]}); d=$(( (e-b[$i])*10000000/N )); tot=$((tot+d)); line="$line r$i=$d"; done
echo "$line total=$tot"
done
kill $S ${P[@]}; wait 2>/dev/null
