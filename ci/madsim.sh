#!/usr/bin/env bash
# The real server code under madsim (io/tests/madsim_cluster.rs): a batch of fresh random seeds
# of the three-replica cluster under kills and partitions, one seed run twice to prove it replays
# exactly, and the planted bug that shows the check can fail. A failing seed prints itself;
# replay it with MADSIM_TEST_SEED=<seed> and the same command.
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-20}"
start=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
export RUSTFLAGS="--cfg madsim"
run() { cargo test -p ziggy-io --test madsim_cluster --target-dir target/madsim --quiet "$@"; }
echo "madsim: $count seeds from $start"
MADSIM_TEST_SEED="$start" MADSIM_TEST_NUM="$count" \
    run a_cluster_under_kills_and_partitions_stays_linearizable
echo "madsim: seed $start twice, for determinism"
MADSIM_TEST_SEED="$start" MADSIM_TEST_CHECK_DETERMINISM=1 \
    run a_cluster_under_kills_and_partitions_stays_linearizable
echo "madsim: the planted bug"
run a_leader_committing_without_a_quorum_is_caught
