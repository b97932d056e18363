#!/usr/bin/env bash
# Runs a bounded batch of fresh random vopr seeds. Every seed prints its own result line; a
# failure prints the violated invariant and the command that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-2000}"
start=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
echo "vopr batch: $count seeds from $start"
cargo build -p ziggy-sim --release --quiet
./target/release/vopr --seed "$start" --count "$count" --jobs 2
