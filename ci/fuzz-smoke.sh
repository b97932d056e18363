#!/usr/bin/env bash
# A short fuzz run of every target. cargo-fuzz on the stable toolchain needs --sanitizer none.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
cd fuzz
for target in wal_recovery superblock lsm_blocks resp; do
  echo "fuzz: $target for ${seconds}s"
  cargo fuzz run "$target" --sanitizer none -- -max_total_time="$seconds" 2>&1 | grep -E "^Done|panicked|ERROR|SUMMARY" || true
  if ls artifacts/"$target"/crash-* >/dev/null 2>&1; then
    echo "fuzz: $target found a crash:"; ls artifacts/"$target"/
    exit 1
  fi
done
