#!/usr/bin/env bash
# ZiggyDB against redis-server, in the same run, with redis-benchmark (50 clients; -P 1 and -P 16):
#
#   - SET and INCR: ZiggyDB (durable: every acknowledged write is fdatasync'd) against Redis with
#     appendonly yes and appendfsync always (as durable);
#   - GET: ZiggyDB against Redis with no persistence at all;
#   - SET on a three-replica ZiggyDB cluster (loopback) against the single node;
#   - the collections' writes (LPUSH RPUSH LPOP SADD HSET ZADD): ZiggyDB against Redis
#     appendfsync always.
#
# Installs redis-server and redis-tools from Debian's packages if missing. Each measurement is
# the median of ROUNDS runs, the systems alternating so that a noisy neighbour hits both alike.
#
#   bench/redis-compare.sh                 # ROUNDS=3 N=100000 (N x 10 with -P 16)
#   ROUNDS=5 N=200000 bench/redis-compare.sh
#   PARTS=collections bench/redis-compare.sh   # one part only (strings, collections)
#
# Prints a Markdown table (docs/bench-redis.md holds the figures and the machine).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
N=${N:-100000}
PARTS=${PARTS:-strings collections}
COLLECTION_TESTS="lpush rpush lpop sadd hset zadd"
CLIENTS=50
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ziggy-redis-compare.XXXXXX")
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

install_redis() {
    if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
        return
    fi
    echo "installing redis-server and redis-tools from Debian's packages" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >&2
}

wait_port() { # wait until something answers PING on port $1
    for _ in $(seq 1 600); do
        if redis-cli -p "$1" ping >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    return 1
}

start_redis() { # $1 port, $2 name, then redis-server options
    local port=$1 name=$2
    shift 2
    mkdir -p "$WORK/$name"
    redis-server --port "$port" --dir "$WORK/$name" --save "" --daemonize no "$@" \
        >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
}

start_ziggy() { # $1 port, $2 name, then extra ziggy serve options
    local port=$1 name=$2
    shift 2
    ./target/release/ziggy serve --data "$WORK/$name.data" --port "$port" --no-http "$@" \
        >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
}

# requests per second of one redis-benchmark run: $1 port, $2 test, $3 pipeline depth
rps() {
    local n=$N
    [ "$3" -gt 1 ] && n=$((N * 10))
    redis-benchmark -p "$1" -t "$2" -n "$n" -c "$CLIENTS" -P "$3" --csv 2>/dev/null |
        awk -F'","' 'NR == 2 { print $2 + 0 }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

install_redis
echo "building ziggy (release)" >&2
cargo build --release -p ziggy-io --bin ziggy >&2

start_redis 6390 redis-always --appendonly yes --appendfsync always
start_redis 6391 redis-memory --appendonly no
start_ziggy 7390 ziggy
wait_port 7390
peers=127.0.0.1:7491,127.0.0.1:7492,127.0.0.1:7493
for i in 0 1 2; do
    start_ziggy $((7391 + i)) "cluster$i" --replica "$i" --addresses "$peers" --cluster-id 7
done
for i in 0 1 2; do wait_port $((7391 + i)); done
# A write through every replica: each registers its lanes before the clock runs.
for i in 0 1 2; do redis-cli -p $((7391 + i)) set warm up >/dev/null; done
leader_port=$(for i in 0 1 2; do
    if redis-cli -p $((7391 + i)) info replication | grep -q '^raft_role:leader'; then
        echo $((7391 + i))
    fi
done | head -1 || true)
leader_port=${leader_port:-7391}

declare -A RESULT
measure() { # $1 label, $2 port, $3 test, $4 depth
    local runs=()
    for _ in $(seq 1 "$ROUNDS"); do runs+=("$(rps "$2" "$3" "$4")"); done
    RESULT["$1 $3 $4"]=$(printf '%s\n' "${runs[@]}" | median)
    echo "$1 $3 -P $4: ${runs[*]} -> ${RESULT["$1 $3 $4"]}" >&2
}

has_part() { [[ " $PARTS " == *" $1 "* ]]; }

for depth in 1 16; do
    if has_part strings; then
        for test in set incr; do
            measure redis-always 6390 "$test" "$depth"
            measure ziggy 7390 "$test" "$depth"
        done
        measure redis-memory 6391 get "$depth"
        measure ziggy 7390 get "$depth"
        measure cluster "$leader_port" set "$depth"
    fi
    if has_part collections; then
        for test in $COLLECTION_TESTS; do
            measure redis-always 6390 "$test" "$depth"
            measure ziggy 7390 "$test" "$depth"
        done
    fi
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
row() { # $1 name, $2 ziggy key, $3 reference key, $4 target
    local z=${RESULT[$2]} r=${RESULT[$3]}
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$z" "$r" "$(ratio "$z" "$r")" "$4"
}

echo
echo "redis-benchmark $(redis-benchmark --version | awk '{print $2}'), redis-server" \
    "$(redis-server --version | awk '{print $3}' | cut -d= -f2), $CLIENTS clients," \
    "median of $ROUNDS runs, requests/s"
echo
echo "| test | ZiggyDB | reference | ratio | target |"
echo "|---|---:|---:|---:|---|"
for depth in 1 16; do
    if has_part strings; then
        row "SET -P $depth (vs Redis appendfsync always)" "ziggy set $depth" "redis-always set $depth" ">= 1"
        row "INCR -P $depth (vs Redis appendfsync always)" "ziggy incr $depth" "redis-always incr $depth" ">= 1"
        row "GET -P $depth (vs Redis, no persistence)" "ziggy get $depth" "redis-memory get $depth" ">= 0.7"
        row "SET -P $depth, 3-replica cluster (vs single node)" "cluster set $depth" "ziggy set $depth" ">= 0.8"
    fi
    if has_part collections; then
        for test in $COLLECTION_TESTS; do
            name=$(echo "$test" | tr '[:lower:]' '[:upper:]')
            row "$name -P $depth (vs Redis appendfsync always)" "ziggy $test $depth" "redis-always $test $depth" ">= 1"
        done
    fi
done
