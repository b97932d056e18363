#!/usr/bin/env bash
# Fails if ziggy-core reaches for the OS or for nondeterminism: files, sockets, wall clocks,
# threads, environment, processes, OS randomness, or hash-ordered collections.
set -euo pipefail
cd "$(dirname "$0")/.."

banned='std::fs|std::net|std::time|std::thread|std::env|std::process|std::os|Instant|SystemTime|HashMap|HashSet|RandomState|getrandom|rand::|thread_rng|tokio|libc'
# Code lines only: skip comment lines (doc comments may name what the core avoids).
# The Redis state machine and the protocol crate run inside the core's log too: the same rule.
hits=$(grep -rnE "$banned" core/src redis/src resp/src | grep -vE '^[^:]+:[0-9]+:\s*//' || true)
if [ -n "$hits" ]; then
  echo "ziggy-core, ziggy-redis and ziggy-resp must not use OS access or nondeterminism:"
  echo "$hits"
  exit 1
fi

# The core's only runtime dependency is crc32c (cargo alone answers this: no other tool needed).
deps=$(cargo tree -p ziggy-core -e normal --depth 1 --prefix none \
  | tail -n +2 | awk '{print $1}' | sort -u | tr '\n' ' ' | sed 's/ $//')
if [ "$deps" != "crc32c" ]; then
  echo "ziggy-core has unexpected runtime dependencies: $deps"
  exit 1
fi
echo "core purity: ok (no OS access, no hash-ordered collections; deps: $deps)"
