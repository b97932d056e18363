#!/usr/bin/env bash
# Runs a bounded batch of fresh random vopr seeds on each state machine: COUNT seeds of the
# key-value machine, and REDIS_COUNT (default COUNT / 2) of the Redis data model. Every seed
# prints its own result line; a failure prints the violated invariant and the command that
# replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-2000}"
redis_count="${2:-$((count / 2))}"
start=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
echo "vopr batch: $count kv seeds from $start, $redis_count redis seeds from $((start + count))"
cargo build -p ziggy-sim --release --quiet
./target/release/vopr --seed "$start" --count "$count" --jobs 2
./target/release/vopr --machine redis --seed "$((start + count))" --count "$redis_count" --jobs 2
