#!/usr/bin/env bash
# A node that was down for a write burst converges with no client read, under each
# self-healing mechanism alone (issue 14). For each MODE — hints (hinted handoff only,
# anti_entropy.enabled = false), aae (anti-entropy only, hints.enabled = false, exchanges
# every AAE_MS) and both — on a fresh 3-node dev cluster (real processes, RocksDB, fsync,
# keyspace `default` N=3 R=2 W=2):
#   1. kill -9 n3;
#   2. write KEYS keys (one shell process, W=2: n1 and n2 ack; with hints on, the write's
#      lead holds n3's copy as a hint — three nodes leave no stand-in beyond the replicas);
#   3. restart n3 and time until the mechanism says it is done — no hints pending for n3
#      anywhere (hints), the anti-entropy repair counters covering every key (aae) —
#      without any client read;
#   4. then check every key on n3's own copy (`get --replica n3`: no coordination, no
#      repair) and print the time to converge.
# Prints one line per mode; exits 1 if a mode did not converge within LIMIT seconds.
# Usage: scripts/self-healing-demo.sh [--keys N] [--aae-ms MS] [--limit SECS] [MODE...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
KEYS=300
AAE_MS=2000
LIMIT=120
MODES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) KEYS="$2"; shift 2 ;;
        --aae-ms) AAE_MS="$2"; shift 2 ;;
        --limit) LIMIT="$2"; shift 2 ;;
        hints|aae|both) MODES+=("$1"); shift ;;
        *) echo "usage: $0 [--keys N] [--aae-ms MS] [--limit SECS] [hints|aae|both]..." >&2; exit 2 ;;
    esac
done
[ ${#MODES[@]} -gt 0 ] || MODES=(hints aae both)
cargo build --locked --bin quorumkv
BIN="$CARGO_TARGET_DIR/debug/quorumkv"
WORK=$(mktemp -d)
PORT=7301

cleanup() {
    for p in "$WORK"/*/n*/pid; do
        [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

# metric NODE_DIR NAME: the sum of a Prometheus series on that node (0 if absent).
metric() {
    local addr
    addr=$(sed -n 's/^metrics_listen = "\(.*\)"/\1/p' "$1/node.toml")
    curl -s --max-time 2 "http://$addr/metrics" 2>/dev/null |
        awk -v n="$2" '$1 ~ "^"n"[{ ]" || $1 == n { s += $2 } END { print s + 0 }'
}

# set_in FILE SECTION FIELD VALUE: set FIELD in [SECTION] of a node.toml the dev cluster wrote.
set_in() {
    sed -i "/^\[$2\]/,/^\[/ s/^$3 = .*/$3 = $4/" "$1"
    grep -q "^$3 = $4\$" "$1" || { echo "could not set $2.$3 in $1" >&2; exit 1; }
}

stop_node() { kill -9 "$(cat "$1/pid")" 2>/dev/null || true; rm -f "$1/pid"; }
start_node() {
    ("$BIN" node --config "$1/node.toml" --pid-file "$1/pid" >>"$1/node.log" 2>&1 &)
}

fail=0
for mode in "${MODES[@]}"; do
    D="$WORK/$mode"
    "$BIN" dev-cluster --dir "$D" --nodes 3 --base-port "$PORT" --detach >/dev/null
    PORT=$((PORT + 10))
    CF="$D/cluster.toml"
    for n in n1 n2 n3; do stop_node "$D/$n"; done
    for n in n1 n2 n3; do
        cfg="$D/$n/node.toml"
        case "$mode" in
            hints) set_in "$cfg" anti_entropy enabled false ;;
            aae) set_in "$cfg" hints enabled false; set_in "$cfg" anti_entropy interval_ms "$AAE_MS" ;;
            both) set_in "$cfg" anti_entropy interval_ms "$AAE_MS" ;;
        esac
    done
    for n in n1 n2 n3; do start_node "$D/$n"; done
    timeout 30 bash -c "until '$BIN' status --cluster '$CF' >/dev/null 2>&1; do sleep 0.3; done"
    sleep 1
    stop_node "$D/n3"
    sleep 2 # the others' probes see n3 down
    seq 1 "$KEYS" | sed 's/.*/put heal:& v&/' >"$WORK/$mode.cmds"
    t_write=$(now_ms)
    "$BIN" shell --cluster "$CF" -f "$WORK/$mode.cmds" >"$WORK/$mode.shell.log" 2>&1 ||
        { echo "$mode: the write burst failed:"; tail -5 "$WORK/$mode.shell.log"; exit 1; }
    t_written=$(now_ms)
    repaired_before=$(( $(metric "$D/n1" quorumkv_aae_keys_repaired_total) + $(metric "$D/n2" quorumkv_aae_keys_repaired_total) ))
    start_node "$D/n3"
    t_back=$(now_ms)
    done_ms=""
    while [ $(( $(now_ms) - t_back )) -lt $((LIMIT * 1000)) ]; do
        case "$mode" in
            hints|both)
                pending=$(( $(metric "$D/n1" quorumkv_hints_pending) + $(metric "$D/n2" quorumkv_hints_pending) ))
                [ "$pending" = 0 ] && { done_ms=$(( $(now_ms) - t_back )); break; } ;;
            aae)
                repaired=$(( $(metric "$D/n1" quorumkv_aae_keys_repaired_total) + $(metric "$D/n2" quorumkv_aae_keys_repaired_total) + $(metric "$D/n3" quorumkv_aae_keys_repaired_total) - repaired_before ))
                [ "$repaired" -ge "$KEYS" ] && { done_ms=$(( $(now_ms) - t_back )); break; } ;;
        esac
        sleep 0.1
    done
    # Every key on n3's own copy (no coordination, no repair), again for those still
    # missing until none is or the limit passes (a repair counter can run ahead of the
    # keys when two replicas push the same key).
    missing=$(seq 1 "$KEYS")
    while :; do
        still=""
        for i in $missing; do
            out=$("$BIN" get --cluster "$CF" --replica n3 "heal:$i" 2>/dev/null || true)
            case "$out" in *"v$i"*) ;; *) still="$still $i" ;; esac
        done
        missing=$still
        [ -z "$missing" ] && break
        [ $(( $(now_ms) - t_back )) -ge $((LIMIT * 1000)) ] && break
        sleep 0.5
    done
    verified_ms=$(( $(now_ms) - t_back ))
    if [ -z "$done_ms" ] || [ -n "$missing" ]; then
        echo "$mode: NOT converged within ${LIMIT}s: $(echo $missing | wc -w) of $KEYS keys missing on n3 (mechanism done: ${done_ms:-never})" >&2
        fail=1
    else
        echo "$mode: $KEYS keys written in $((t_written - t_write)) ms with n3 down; $done_ms ms after n3 restarted the mechanism was done (no hint pending / every key repaired); every key verified on n3's own copy by $verified_ms ms"
    fi
    for n in n1 n2 n3; do stop_node "$D/$n"; done
done
exit $fail
