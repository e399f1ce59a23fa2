#!/usr/bin/env bash
# Side-by-side benchmark: the same YCSB workload, generator and histograms against
#   * a bare QUIC echo server (the ceiling: what the network stack alone allows),
#   * quorumkv: 3 nodes on loopback, N=3 R=2 W=2, RocksDB with fsync'd WAL,
#   * etcd: a 3-member cluster on loopback (Debian's etcd-server; fsyncs its WAL),
#   * Redis: one server with appendonly + appendfsync always (Debian's redis-server).
# Every store is started here on 127.0.0.1 and stopped on exit; nothing else is touched.
#
# Writes to $OUT (default ./bench-compare-out): one JSON report per run, compare.md (the
# table, the targets of issue 7 and how the run was made) and compare.svg (latency by
# percentile and throughput over time).
#
#   scripts/bench-compare.sh            # release build, 3 x 20 s per store (~10 min)
#   scripts/bench-compare.sh --smoke    # debug build, 2 s runs: checks the script and the
#                                       # drivers end to end (scripts/test.sh runs this)
# Knobs (environment): DURATION (s), REPEATS, RECORDS, CONCURRENCY, VALUE_SIZE, WORKLOAD,
# OUT, PORT_BASE (ports PORT_BASE..PORT_BASE+20 on 127.0.0.1 must be free).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
if [ $# -gt 0 ]; then
    echo "usage: $0 [--smoke]   (knobs are environment variables; see the header)" >&2
    exit 2
fi

if [ $SMOKE = 1 ]; then
    DURATION=${DURATION:-2} REPEATS=${REPEATS:-1} RECORDS=${RECORDS:-500}
    CONCURRENCY=${CONCURRENCY:-8} PROFILE=debug
    OUT=${OUT:-$(mktemp -d /tmp/quorumkv-compare-smoke.XXXXXX)}
    NOTE="Smoke run on the debug build with 2-second runs: checks that every driver and the report work; these figures are not measurements."
else
    DURATION=${DURATION:-20} REPEATS=${REPEATS:-3} RECORDS=${RECORDS:-10000}
    CONCURRENCY=${CONCURRENCY:-32} PROFILE=release
    OUT=${OUT:-$ROOT/bench-compare-out}
    NOTE=""
fi
VALUE_SIZE=${VALUE_SIZE:-100}
WORKLOAD=${WORKLOAD:-a}
PORT_BASE=${PORT_BASE:-17300}
for v in DURATION REPEATS RECORDS CONCURRENCY VALUE_SIZE PORT_BASE; do
    [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || { echo "error: $v must be a positive integer (got '${!v}')" >&2; exit 2; }
done
[[ $WORKLOAD =~ ^[a-f]$ ]] || { echo "error: WORKLOAD must be one of a..f (got '$WORKLOAD')" >&2; exit 2; }

source scripts/prereqs.sh
quorumkv_prereqs
quorumkv_peer_prereqs

if [ $PROFILE = release ]; then
    cargo build --locked --release --bin quorumkv
else
    cargo build --locked --bin quorumkv
fi
BIN=$CARGO_TARGET_DIR/$PROFILE/quorumkv

REDIS_PORT=$PORT_BASE
ETCD_CLIENT=($((PORT_BASE + 1)) $((PORT_BASE + 3)) $((PORT_BASE + 5)))
ETCD_PEER=($((PORT_BASE + 2)) $((PORT_BASE + 4)) $((PORT_BASE + 6)))
QKV_PORT=$((PORT_BASE + 10))
for p in $REDIS_PORT "${ETCD_CLIENT[@]}" "${ETCD_PEER[@]}"; do
    if ss -Htln "sport = :$p" | grep -q .; then
        echo "error: TCP port $p on this machine is taken; set PORT_BASE to a free range" >&2
        exit 1
    fi
done
for p in $QKV_PORT $((QKV_PORT + 1)) $((QKV_PORT + 2)); do
    if ss -Huln "sport = :$p" | grep -q .; then
        echo "error: UDP port $p on this machine is taken; set PORT_BASE to a free range" >&2
        exit 1
    fi
done

WORK=$(mktemp -d /tmp/quorumkv-compare.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for f in "$WORK"/qkv/*/pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    # Give them up to 10 s to exit cleanly (etcd syncs its WAL), then force.
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for f in "$WORK"/qkv/*/pid; do
        [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
    done
    rm -rf "$WORK"
    # A smoke run's output only proves the script works; do not leave it in /tmp.
    if [ $SMOKE = 1 ] && [ -z "${KEEP_OUT:-}" ]; then rm -rf "$OUT"; fi
}
trap cleanup EXIT
mkdir -p "$OUT"

wait_for() { # what, seconds, command...
    local what=$1 secs=$2; shift 2
    for _ in $(seq $((secs * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "error: $what did not come up within ${secs}s" >&2
    return 1
}

echo "== starting redis on 127.0.0.1:$REDIS_PORT (appendonly, appendfsync always)"
mkdir -p "$WORK/redis"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/redis" \
    --appendonly yes --appendfsync always --save "" --daemonize no \
    --logfile "$WORK/redis/redis.log" &
PIDS+=($!)
wait_for redis 20 redis-cli -p "$REDIS_PORT" ping

echo "== starting a 3-member etcd cluster on 127.0.0.1:${ETCD_CLIENT[*]}"
cluster=""
for i in 0 1 2; do cluster+="${cluster:+,}e$((i + 1))=http://127.0.0.1:${ETCD_PEER[$i]}"; done
for i in 0 1 2; do
    mkdir -p "$WORK/etcd"
    etcd --name "e$((i + 1))" --data-dir "$WORK/etcd/e$((i + 1))" \
        --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${ETCD_PEER[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-token quorumkv-bench \
        --initial-cluster-state new >"$WORK/etcd/e$((i + 1)).log" 2>&1 &
    PIDS+=($!)
done
ETCD_EPS="127.0.0.1:${ETCD_CLIENT[0]},127.0.0.1:${ETCD_CLIENT[1]},127.0.0.1:${ETCD_CLIENT[2]}"
wait_for etcd 60 env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_EPS" endpoint health

echo "== starting quorumkv: 3 nodes, N=3 R=2 W=2, fsync'd WAL, UDP $QKV_PORT-$((QKV_PORT + 2))"
"$BIN" dev-cluster --dir "$WORK/qkv" --nodes 3 --n 3 --r 2 --w 2 \
    --base-port "$QKV_PORT" --detach >"$WORK/qkv-start.log" 2>&1 ||
    { cat "$WORK/qkv-start.log" >&2; exit 1; }
QKV_CLUSTER=$WORK/qkv/cluster.toml

common=(--workload "$WORKLOAD" --records "$RECORDS" --value-size "$VALUE_SIZE"
    --concurrency "$CONCURRENCY" --duration "$DURATION" --quiet --seed 42)
target_args() {
    case $1 in
    echo) echo "--target echo" ;;
    quorumkv) echo "--target quorumkv --cluster $QKV_CLUSTER" ;;
    etcd) echo "--target etcd://$ETCD_EPS" ;;
    redis) echo "--target redis://127.0.0.1:$REDIS_PORT" ;;
    esac
}
STORES=(echo quorumkv etcd redis)
COMMANDS=()
bench() { # label json args...
    local label=$1 json=$2; shift 2
    COMMANDS+=("quorumkv bench $* --label '$label' --json $(basename "$json")")
    # Bounded: the run phase stops after --duration; the load phase and every request
    # are bounded by the per-request timeout. The outer timeout is a last resort.
    timeout --kill-after=10 $((DURATION * 3 + 300)) \
        "$BIN" bench "$@" --label "$label" --json "$json" >"$json.txt"
    echo "   $label: $(head -n 1 "$json.txt" | cut -c1-150)"
    [ "$(wc -l <"$json.txt")" -gt 2 ] && sed -n '2,$p' "$json.txt" | tail -n +1 | head -n 3 | sed 's/^/     /'
    return 0
}

echo "== load phase ($RECORDS records) for each store"
for s in "${STORES[@]}"; do
    # shellcheck disable=SC2046
    bench "$s" "$OUT/$s-load.json" $(target_args "$s") "${common[@]}" --load-only
done
echo "== peak: closed loop, $CONCURRENCY workers, ${DURATION}s, $REPEATS round(s) in rotating order"
for r in $(seq "$REPEATS"); do
    for k in "${!STORES[@]}"; do
        s=${STORES[$(((k + r - 1) % ${#STORES[@]}))]}
        # shellcheck disable=SC2046
        bench "$s" "$OUT/$s-peak-$r.json" $(target_args "$s") "${common[@]}" --skip-load
    done
done

# The median round of each store by run throughput.
median_of() {
    python3 - "$@" <<'EOF'
import json, sys
runs = sorted(sys.argv[1:], key=lambda p: json.load(open(p))["run"]["throughput"])
print(runs[len(runs) // 2])
EOF
}
# The store's row: its median round, with the load phase of its load run (so the table
# also shows the insert-only write rate).
for s in "${STORES[@]}"; do
    python3 - "$(median_of "$OUT/$s"-peak-*.json)" "$OUT/$s-load.json" "$OUT/$s.json" <<'EOF'
import json, sys
run, load = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
run["load"] = load["load"]
json.dump(run, open(sys.argv[3], "w"), indent=1)
EOF
done

HALF=$(python3 -c "import json;print(max(1, round(json.load(open('$OUT/quorumkv.json'))['run']['throughput'] / 2)))")
echo "== half of quorumkv's peak: open loop at $HALF ops/s for quorumkv and echo"
bench "quorumkv @ half load" "$OUT/quorumkv-half.json" $(target_args quorumkv) "${common[@]}" --skip-load --rate "$HALF"
bench "echo @ same rate" "$OUT/echo-half.json" $(target_args echo) "${common[@]}" --skip-load --rate "$HALF"

echo "== report"
"$BIN" bench-report "$OUT/echo.json" "$OUT/quorumkv.json" "$OUT/etcd.json" "$OUT/redis.json" \
    "$OUT/quorumkv-half.json" "$OUT/echo-half.json" --markdown "$OUT/table.md"
"$BIN" bench-report "$OUT/echo.json" "$OUT/quorumkv.json" "$OUT/etcd.json" "$OUT/redis.json" \
    --plot "$OUT/compare.svg" --plot-ops update,read --markdown /dev/null \
    --title "YCSB $WORKLOAD, closed loop, $CONCURRENCY workers, ${DURATION}s (median of $REPEATS)"

python3 - "$OUT" "$REPEATS" >"$OUT/targets.md" <<'EOF'
import glob, json, os, statistics, sys
out, repeats = sys.argv[1], int(sys.argv[2])
load = lambda n: json.load(open(os.path.join(out, n)))
def thr(r, op=None):
    run = r["run"]
    return run["throughput"] if op is None else run["operations"].get(op, {}).get("throughput", 0.0)
echo, qkv, etcd = load("echo.json"), load("quorumkv.json"), load("etcd.json")
qh, eh = load("quorumkv-half.json"), load("echo-half.json")
def rounds(store):
    return sorted(json.load(open(p))["run"]["throughput"] for p in glob.glob(os.path.join(out, f"{store}-peak-*.json")))
rate = thr(qkv) / thr(echo)
qp50 = qh["run"]["operations"]["update"]["p50_us"]
ep50 = eh["run"]["operations"]["update"]["p50_us"]
wr = thr(qkv, "update") / max(thr(etcd, "update"), 1e-9)
ld = load("quorumkv-load.json")["load"]["throughput"] / max(load("etcd-load.json")["load"]["throughput"], 1e-9)
ok = lambda c: "**met**" if c else "**missed**"
print("| target | measured | goal | |")
print("|---|---|---|---|")
print(f"| quorumkv request rate / echo request rate | {thr(qkv):.0f} / {thr(echo):.0f} = {rate:.2f} | ≥ 0.33 | {ok(rate >= 1/3)} |")
print(f"| quorumkv update p50 at half its peak ({qh['parameters']['rate']:.0f} ops/s) / echo p50 at that rate | {qp50} µs / {ep50} µs = {qp50/ep50:.1f}× | ≤ 3× | {ok(qp50 <= 3*ep50)} |")
print(f"| quorumkv / etcd write throughput (updates in the run) | {thr(qkv,'update'):.0f} / {thr(etcd,'update'):.0f} = {wr:.2f}× | ≥ 3× | {ok(wr >= 3)} |")
print(f"| quorumkv / etcd write throughput (load phase, inserts only) | {ld:.2f}× | ≥ 3× | {ok(ld >= 3)} |")
print()
print(f"Run throughput of each round (ops/s, sorted; the table uses the median round of {repeats}):")
print()
for s in ("echo", "quorumkv", "etcd", "redis"):
    rs = rounds(s)
    print(f"* {s}: " + ", ".join(f"{x:.0f}" for x in rs) + (f" (median {statistics.median(rs):.0f})" if rs else ""))
EOF

{
    echo "# quorumkv vs echo, etcd and Redis ($(date -u +%Y-%m-%d))"
    echo
    [ -n "$NOTE" ] && { echo "$NOTE"; echo; }
    cat "$OUT/table.md"
    echo
    cat "$OUT/targets.md"
    echo
    echo "## Setup"
    echo
    echo "* machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr); everything on 127.0.0.1"
    echo "* quorumkv $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?') ($PROFILE build): 3 nodes, keyspace default N=3 R=2 W=2 (siblings), RocksDB WAL fsync'd before acknowledging"
    echo "* etcd $(etcd --version | awk '/etcd Version/{print $3}'): 3 members, default settings (WAL fsync'd per batch, linearizable reads)"
    echo "* $(redis-server --version | cut -d' ' -f1-3): appendonly yes, appendfsync always"
    echo "* workload $WORKLOAD, $RECORDS records of $VALUE_SIZE bytes, $CONCURRENCY workers, ${DURATION}s per run, seed 42"
    echo
    echo "Commands (quorumkv = $BIN):"
    echo
    echo '```'
    printf '%s\n' "${COMMANDS[@]}"
    echo '```'
} >"$OUT/compare.md"
echo
cat "$OUT/compare.md"
echo
for f in compare.md compare.svg; do
    [ -s "$OUT/$f" ] || { echo "error: $OUT/$f was not written" >&2; exit 1; }
done
grep -q '<svg' "$OUT/compare.svg" || { echo "error: $OUT/compare.svg is not an SVG" >&2; exit 1; }
echo "wrote $OUT/compare.md and $OUT/compare.svg"
