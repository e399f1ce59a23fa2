#!/usr/bin/env bash
# Where a loaded quorumkv cluster spends its CPU: starts a 3-node release cluster on
# loopback (N=3 R=2 W=2, fsync'd), loads it, runs YCSB A under `perf record` (all CPUs,
# call graphs), and writes a flamegraph plus the top symbols and the context-switch
# rate. Needs root or perf_event_paranoid <= 1; installs linux-perf and inferno if
# missing. Call graphs by DWARF unwinding: release builds keep no frame pointers.
#
#   scripts/profile.sh                 # -> ./profile-out/{flamegraph.svg,top.txt,stat.txt}
# Knobs (environment): DURATION (s, default 10), CONCURRENCY (32), OUT, PORT_BASE (17600),
# BIN (a quorumkv binary to profile instead of building this checkout: before/after).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-32}
OUT=${OUT:-$PWD/profile-out}
PORT_BASE=${PORT_BASE:-17600}
for v in DURATION CONCURRENCY PORT_BASE; do
    [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || { echo "error: $v must be a positive integer (got '${!v}')" >&2; exit 2; }
done

source scripts/prereqs.sh
quorumkv_prereqs
command -v perf >/dev/null 2>&1 || quorumkv_apt_install linux-perf
command -v inferno-flamegraph >/dev/null 2>&1 || cargo install --locked inferno
if [ -z "${BIN:-}" ]; then
    cargo build --locked --release --bin quorumkv
    BIN=$CARGO_TARGET_DIR/release/quorumkv
fi
[ -x "$BIN" ] || { echo "error: BIN=$BIN is not an executable" >&2; exit 2; }

WORK=$(mktemp -d /tmp/quorumkv-profile.XXXXXX)
cleanup() {
    for f in "$WORK"/qkv/*/pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    sleep 1
    for f in "$WORK"/qkv/*/pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT"

"$BIN" dev-cluster --dir "$WORK/qkv" --nodes 3 --n 3 --r 2 --w 2 --base-port "$PORT_BASE" \
    --detach >"$WORK/start.log" 2>&1 || { cat "$WORK/start.log" >&2; exit 1; }
bench=("$BIN" bench --cluster "$WORK/qkv/cluster.toml" --workload a --records 10000
    --concurrency "$CONCURRENCY" --quiet)
"${bench[@]}" --load-only >/dev/null
# The pid files hold no trailing newline: join them explicitly.
pids=$(for f in "$WORK"/qkv/*/pid; do cat "$f"; echo; done | paste -sd, -)

"${bench[@]}" --skip-load --duration $((DURATION + 4)) >"$OUT/bench.txt" &
bench_pid=$!
sleep 2
perf stat -e context-switches,cpu-migrations,task-clock -p "$pids" -- sleep 3 2>"$OUT/stat.txt"
perf record -e cpu-clock -F 199 --call-graph dwarf,16384 -a -o "$WORK/perf.data" -- sleep $((DURATION - 3 > 1 ? DURATION - 3 : 1)) 2>/dev/null
wait $bench_pid
perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph \
    --title "quorumkv: 3 nodes, YCSB A, $CONCURRENCY workers" >"$OUT/flamegraph.svg"
perf report -i "$WORK/perf.data" --no-children --sort sym -g none --stdio 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -40 >"$OUT/top.txt"
head -n 1 "$OUT/bench.txt"
grep -E 'context-switches|task-clock' "$OUT/stat.txt"
echo "wrote $OUT/flamegraph.svg, $OUT/top.txt, $OUT/stat.txt"
