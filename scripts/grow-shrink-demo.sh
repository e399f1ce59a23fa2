#!/usr/bin/env bash
# Grow a running 3-node dev cluster to 4 and shrink it back while a benchmark and a
# writer load it, then check that nothing acknowledged was lost (issue 15's "done when").
# On a fresh dev cluster (real processes, RocksDB, fsync; keyspace `default` N=3 R=2 W=2):
#   1. load RECORDS records, then start `quorumkv bench` (YCSB A, 50% updates) for the whole
#      run, and a writer putting distinct keys `demo:I` one CLI call at a time, noting each
#      acknowledged one;
#   2. `dev-cluster --add n4`, `cluster join n4`, `cluster plan`, `cluster commit`; wait
#      until every node holds one live layout version (the transfer to n4 is done);
#   3. `cluster leave n4`, `cluster commit`; wait the same way; stop n4;
#   4. stop the load; read every acknowledged key back (R=2) from the three remaining
#      nodes' layout and count the missing ones.
# Prints each step's timing, the bench summary and the check; exits 1 if a key is missing.
# Usage: scripts/grow-shrink-demo.sh [--records N] [--settle SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
RECORDS=5000
SETTLE=20
while [ $# -gt 0 ]; do
    case "$1" in
        --records) RECORDS="$2"; shift 2 ;;
        --settle) SETTLE="$2"; shift 2 ;;
        *) echo "usage: $0 [--records N] [--settle SECS]" >&2; exit 2 ;;
    esac
done
cargo build --locked --bin quorumkv
BIN="$CARGO_TARGET_DIR/debug/quorumkv"
WORK=$(mktemp -d)
D="$WORK/dc"
CF="$D/cluster.toml"
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "$D"/n*/pid; do
        [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
T0=$(now_ms)
say() { printf '[%6.1fs] %s\n' "$(echo "($(now_ms) - $T0) / 1000" | bc -l)" "$*"; }
q() { "$BIN" "$@" --cluster "$CF"; }

# Wait until every node answering `cluster status` holds exactly one live version, VERSION.
settled() {
    local want=$1 deadline=$(( $(now_ms) + 120000 ))
    while [ "$(now_ms)" -lt "$deadline" ]; do
        local ok=1
        for n in "${NODES[@]}"; do
            live=$(q cluster status --node "$n" --output json 2>/dev/null |
                python3 -c 'import json,sys; print(",".join(str(l["version"]) for l in json.load(sys.stdin)["history"]["live"]))' 2>/dev/null || echo "?")
            [ "$live" = "$want" ] || { ok=0; break; }
        done
        [ $ok = 1 ] && return 0
        sleep 0.2
    done
    echo "the layout change did not complete within 120 s" >&2
    return 1
}

"$BIN" dev-cluster --dir "$D" --nodes 3 --base-port 7401 --detach >/dev/null
NODES=(n1 n2 n3)
say "3-node dev cluster up in $D"
q bench --workload a --records "$RECORDS" --load-only -q >/dev/null
say "loaded $RECORDS records"
q bench --workload a --records "$RECORDS" --skip-load --concurrency 8 \
    --duration $((SETTLE * 2 + 40)) --json "$WORK/bench.json" -q >"$WORK/bench.log" 2>&1 &
PIDS+=($!)
: >"$WORK/acked"
(
    i=0
    while [ ! -f "$WORK/stop" ] && [ $i -lt 20000 ]; do
        i=$((i + 1))
        if "$BIN" put "demo:$i" "v$i" --cluster "$CF" >/dev/null 2>&1; then
            echo "demo:$i v$i" >>"$WORK/acked"
        fi
    done
) &
PIDS+=($!)
sleep 5

say "adding n4"
"$BIN" dev-cluster --dir "$D" --add n4 | grep -m1 "cluster join" || true
NODES=(n1 n2 n3 n4)
addr=$(sed -n 's/^listen = "\(.*\)"/\1/p' "$D/n4/node.toml")
q cluster join n4 "$addr" >/dev/null
q cluster plan | sed 's/^/    /'
t=$(now_ms)
q cluster commit
settled 2
say "grown: every node holds layout v2 only (transfer done $(( $(now_ms) - t )) ms after the commit)"
sleep "$SETTLE"

t=$(now_ms)
q cluster leave n4 >/dev/null
q cluster commit
settled 3
say "shrunk: every node holds layout v3 only ($(( $(now_ms) - t )) ms after the commit)"
NODES=(n1 n2 n3)
kill "$(cat "$D/n4/pid")"
sleep "$SETTLE"

touch "$WORK/stop"
wait "${PIDS[1]}" 2>/dev/null || true
wait "${PIDS[0]}" 2>/dev/null || true
say "load stopped; bench:"
python3 - "$WORK/bench.json" <<'EOF' | sed 's/^/    /'
import json, sys
run = json.load(open(sys.argv[1]))["run"]
ops = ", ".join(f"{k} {v['count']} (p50 {v['p50_us'] / 1000:.1f} ms, p99 {v['p99_us'] / 1000:.1f} ms)"
                for k, v in run["operations"].items())
print(f"{run['ops']} ok in {run['elapsed_s']:.0f} s ({run['throughput']:.0f} ops/s): {ops}; errors: {run['errors']}")
EOF
acked=$(wc -l <"$WORK/acked")
missing=0
while read -r key value; do
    out=$("$BIN" get "$key" --cluster "$CF" 2>/dev/null || true)
    case "$out" in *"$value"*) ;; *) missing=$((missing + 1)); echo "missing: $key ($value): $out" >&2 ;; esac
done <"$WORK/acked"
say "writer: $acked acknowledged puts during the grow and shrink; $missing missing when read back at R=2"
[ "$missing" = 0 ]
