#!/usr/bin/env bash
# Run a swarm of the deterministic simulator (docs/SIMULATION.md): every seed of the range
# is a whole cluster under seeded faults, judged by the jepsen-like checkers; failing seeds
# are printed with the check that failed, and each replays exactly with
# `quorumkv sim --seed S [--trace]` (same flags).
#
#   scripts/swarm.sh --seeds 1000 [--from 0] [any `quorumkv sim` flag, e.g. --ops 10000
#                    --faults crash,partition --nodes 5 --jobs 2]
#
# Builds a release binary without the RocksDB engine (the simulator uses simulated disks),
# in its own cache, so it neither waits for nor disturbs the main build. Exit 0 only when
# every seed passes.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=200
from=0
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --from) from="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
case "$seeds$from" in
    *[!0-9]*) echo "error: --seeds and --from take whole numbers (got --seeds $seeds --from $from)" >&2; exit 2 ;;
esac
export CARGO_TARGET_DIR="${QUORUMKV_SIM_TARGET_DIR:-$HOME/.cache/quorumkv-sim-target}"
cargo build --locked --release --no-default-features --bin quorumkv >&2
exec "$CARGO_TARGET_DIR/release/quorumkv" sim --seeds "$from..$((from + seeds))" "${args[@]}"
