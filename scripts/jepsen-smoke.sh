#!/usr/bin/env bash
# CI's harness smoke (at most ~3 minutes): two short `quorumkv jepsen` runs on the local
# target that show the harness can fail as well as pass.
#   1. the set workload on an lww-timestamp keyspace, six clients read-extend-writing the
#      one key: concurrent writes overwrite each other, so acknowledged adds are lost —
#      the run must be judged INVALID (exit 1);
#   2. the same on a siblings keyspace, where concurrent writes become siblings that the
#      next writer unions — it must be judged VALID (exit 0).
# Runs are stored under $QKV_JEPSEN_STORE (default: a temporary directory).
# Usage: scripts/jepsen-smoke.sh [--time SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
TIME=8
[ "${1:-}" = "--time" ] && TIME="$2"
cargo build --locked --bin quorumkv
BIN="$CARGO_TARGET_DIR/debug/quorumkv"
STORE="${QKV_JEPSEN_STORE:-$(mktemp -d)}"
common=(jepsen --target local --nodes 3 --workload set --concurrency 6 --time "$TIME"
        --quiet 2 --converge-timeout 20 --seed 7 --store "$STORE")

expect() { # expect CODE NAME ARGS...
    local want="$1" name="$2" code=0
    shift 2
    echo "== jepsen smoke: $name (expect exit $want)"
    timeout 120 "$BIN" "${common[@]}" --name "$name" "$@" || code=$?
    if [ "$code" != "$want" ]; then
        echo "jepsen smoke: $name exited $code, expected $want; run: $STORE/$name/latest" >&2
        exit 1
    fi
    for f in history.edn results.json summary.txt latency.svg rate.svg timeline.html; do
        [ -s "$STORE/$name/latest/$f" ] || { echo "jepsen smoke: $name lacks $f" >&2; exit 1; }
    done
}

expect 1 smoke-set-lww --keyspace policy=lww-timestamp,n=3,r=2,w=2
expect 0 smoke-set-siblings --keyspace policy=siblings,n=3,r=2,w=2
echo "jepsen smoke: ok (runs in $STORE)"
