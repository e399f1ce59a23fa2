#!/usr/bin/env bash
# The consistency matrix: a documented grid of `quorumkv jepsen` runs (conflict policies x
# N/R/W x nemeses x workloads), each judged by the jepsen-like checkers, then rewrites the
# matrix in docs/CONSISTENCY.md (between the `matrix:begin` and `matrix:end` markers) and
# keeps each run's readable summary in docs/matrix/. 13-25 minutes on a 2-core machine.
#
# Usage: scripts/consistency-matrix.sh [--time SECS] [--store DIR] [--only ROW,ROW..]
#                                      [--no-containers] [--no-docs]
#   --time S          seconds of workload per run (default 20; nemesis interval = S/5)
#   --store DIR       where runs are stored (default: store/matrix, git-ignored)
#   --only ROWS       run only these row numbers (e.g. --only 3,7); the table keeps the
#                     other rows' last results from the store
#   --no-containers   skip the rows on the containers target (marked "not run" in the
#                     table, with the reason) — they need a Docker engine
#   --no-docs         run and print the table, do not touch docs/
#
# The grid is below (GRID): one row per line, `target|keyspace spec|workload|nemesis|
# expected[|extra jepsen options]`. The expected outcome is written before the run and
# shown beside the measured one; a row whose result contradicts it is a bug to fix or a
# claim to correct.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TIME=20 STORE="$ROOT/store/matrix" ONLY="" CONTAINERS=1 DOCS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --time) TIME="$2"; shift ;;
        --store) STORE="$2"; shift ;;
        --only) ONLY=",$2,"; shift ;;
        --no-containers) CONTAINERS=0 ;;
        --no-docs) DOCS=0 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "consistency-matrix: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ "$TIME" =~ ^[0-9]+$ ]] && [ "$TIME" -ge 5 ] && [ "$TIME" -le 600 ] \
    || { echo "consistency-matrix: --time must be 5..600 seconds" >&2; exit 2; }

GRID=$(cat <<'GRID'
local|policy=siblings,n=3,r=2,w=2|set|none|valid: no acknowledged add lost
local|policy=siblings,n=3,r=2,w=2|set|kill|no add lost; replicas converge (the set key is read all along)
local|policy=siblings,n=3,r=2,w=2|set|pause|no add lost; converge
local|policy=lww-timestamp,n=3,r=2,w=2|set|none|invalid: concurrent read-extend-writes overwrite each other (adds lost)
local|policy=lww-timestamp,n=3,r=2,w=2|set|kill|invalid: adds lost
local|policy=set,n=3,r=2,w=2|set|none|valid: CRDT adds never lost
local|policy=set,n=3,r=2,w=2|set|kill|valid: CRDT adds never lost
local|policy=counter,n=3,r=2,w=2|counter|none|valid: final value within bounds
local|policy=counter,n=3,r=2,w=2|counter|kill|valid: within bounds
local|policy=siblings,n=3,r=2,w=2|sibling-register|none|valid: every acknowledged write visible or causally replaced
local|policy=siblings,n=3,r=2,w=2|sibling-register|kill|valid
local|policy=siblings,n=3,r=2,w=2|sibling-register|clock-skew|valid: siblings do not depend on clocks
local|policy=lww-timestamp,n=3,r=2,w=2|sibling-register|none|invalid: blind concurrent writes lost by design
local|policy=lww-timestamp,n=3,r=2,w=2|sibling-register|clock-skew|invalid: lost writes (a skewed clock picks winners)
local|policy=lww-timestamp,n=3,r=2,w=2|register|none|not linearizable is possible even without faults (R+W>N is not enough); measured
local|policy=lww-timestamp,n=3,r=2,w=2|register|kill|invalid: not linearizable
local|policy=siblings,n=3,r=2,w=2,read-repair=blocking|register|none|not linearizable (cas is read-then-conditional-write)
local|policy=siblings,n=3,r=1,w=1|visibility|none|P(seen) below 1 at small delays (R+W<=N), rising with delay
local|policy=siblings,n=3,r=2,w=2|visibility|none|P(seen)=1 at every delay without faults (R+W>N)
local|policy=siblings,n=3,r=2,w=2|visibility|kill|reads still see acked writes; never-read keys the killed node missed converge by anti-entropy within two intervals (default 60 s)|--converge-timeout 150
containers|policy=siblings,n=3,r=2,w=2|set|partition-halves|valid: no add lost across a netsplit
containers|policy=lww-timestamp,n=3,r=2,w=2|set|partition-halves|invalid: adds lost
containers|policy=siblings,n=3,r=2,w=2|sibling-register|partition-majorities-ring|valid
containers|policy=counter,n=3,r=2,w=2|counter|partition-bridge|final value within bounds (no acknowledged increment lost), but reads during the partition may miss increments acknowledged by stand-ins (sloppy quorum gives up the R+W>N overlap) and the counter checker judges every read: invalid (corrected after the first run said so; row 27 is the control)
containers|policy=set,n=3,r=2,w=2|set|partition-one|valid
containers|policy=siblings,n=3,r=1,w=1|visibility|partition-oneway|P(seen) below 1 at small delays; unread keys converge by anti-entropy within two intervals|--converge-timeout 150
containers|policy=counter,n=3,r=2,w=2,sloppy=false|counter|partition-bridge|valid: with strict quorums every read sees every increment acknowledged before it
GRID
)

source scripts/prereqs.sh
quorumkv_prereqs
cargo build --locked --bin quorumkv
BIN="$CARGO_TARGET_DIR/debug/quorumkv"
mkdir -p "$STORE"
if [ "$CONTAINERS" = 1 ] && ! docker info >/dev/null 2>&1; then
    echo "consistency-matrix: no Docker engine: the containers rows are not run" >&2
    CONTAINERS=0
fi
# The containers rows bring the compose cluster up; take it down again at the end unless it
# was already running before (then it is someone else's).
if [ "$CONTAINERS" = 1 ] && ! docker ps --format '{{.Names}}' | grep -q '^qkv-n1$'; then
    trap 'bash scripts/cluster-down.sh --purge >/dev/null 2>&1 || true' EXIT
fi
INTERVAL=$((TIME / 5))
[ "$INTERVAL" -ge 1 ] || INTERVAL=1
started=$SECONDS
row=0
: > "$STORE/rows.txt"
while IFS='|' read -r target keyspace workload nemesis expected extra; do
    row=$((row + 1))
    name=$(printf 'row%02d' "$row")
    echo "$row|$target|$keyspace|$workload|$nemesis|$expected|$name" >> "$STORE/rows.txt"
    if [ -n "$ONLY" ] && [[ "$ONLY" != *",$row,"* ]]; then continue; fi
    if [ "$target" = containers ] && [ "$CONTAINERS" = 0 ]; then
        rm -rf "${STORE:?}/$name"
        continue
    fi
    echo "== row $row ($((SECONDS - started)) s so far): $workload on $keyspace, $target, nemesis $nemesis"
    code=0
    # Convergence is given 20 s unless the row says otherwise.
    [[ "$extra" == *--converge-timeout* ]] || extra="--converge-timeout 20 $extra"
    timeout $((TIME * 4 + 400)) "$BIN" jepsen --target "$target" --keyspace "$keyspace" \
        --workload "$workload" --nemesis "$nemesis" --nemesis-interval "$INTERVAL" \
        --time "$TIME" --quiet 3 --concurrency 6 --seed "$row" \
        --store "$STORE" --name "$name" --repo "$ROOT" ${extra:+$extra} > "$STORE/$name.out" 2>&1 || code=$?
    echo "   exit $code: $(head -1 "$STORE/$name/latest/summary.txt" 2>/dev/null || echo 'no summary (see '"$STORE/$name.out"')')"
done <<< "$GRID"
echo "matrix runs took $((SECONDS - started)) s"

python3 - "$STORE" "$ROOT" "$DOCS" "$TIME" <<'PY'
import json, os, shutil, sys
store, root, docs, time_s = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
rows = [l.rstrip("\n").split("|") for l in open(os.path.join(store, "rows.txt"))]
out_dir = os.path.join(root, "docs", "matrix")
if docs:
    os.makedirs(out_dir, exist_ok=True)

def lost_share(w, r):
    wl = r.get("workload", {})
    if w == "set":
        s = wl.get("set", {})
        ack = s.get("acknowledged_count", 0)
        lost = len(s.get("lost", []))
        return f"{lost} of {ack}" + (f" ({100*lost/ack:.0f}%)" if ack and lost else "")
    if w == "sibling-register":
        keys = wl.get("siblings", {}).get("keys", [])
        ack = sum(k.get("acknowledged_count", 0) for k in keys)
        lost = sum(len(k.get("lost", [])) for k in keys)
        res = sum(len(k.get("resurrected", [])) for k in keys)
        extra = f", {res} resurrected" if res else ""
        return f"{lost} of {ack}" + (f" ({100*lost/ack:.0f}%)" if ack and lost else "") + extra
    if w == "counter":
        c = wl.get("counter", {})
        b = c.get("final_bounds")
        return f"final {wl.get('final_read')} in {b}" if b else "n/a"
    return "n/a"

def vis(w, r):
    if w != "visibility":
        return ""
    d = {x["delay_ms"]: x for x in r.get("workload", {}).get("delays", [])}
    parts = []
    for ms in (0, 5, 50, 500):
        if ms in d and d[ms]["reads"]:
            parts.append(f"{ms} ms: {d[ms]['probability']:.3f}")
    return "P(seen) " + ", ".join(parts) if parts else ""

lines = [
    f"Measured by `scripts/consistency-matrix.sh` ({time_s} s of workload per run, 6 clients, nemesis interval {int(time_s)//5} s; local = 3 node processes, containers = the 5-node compose cluster). Verdict = the workload's checker and the convergence check together. The convergence check begins after the heal and a 3 s quiet period.",
    "",
    "| # | workload | keyspace | target, nemesis | expected | verdict (checker) | acknowledged writes lost | converged (ms after the check began) | visibility | summary |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for num, target, ks, w, nem, expected, name in rows:
    res = os.path.join(store, name, "latest", "results.json")
    if not os.path.exists(res):
        why = "not run (no Docker engine)" if target == "containers" else "not run"
        lines.append(f"| {num} | {w} | `{ks}` | {target}, {nem} | {expected} | {why} | | | | |")
        continue
    r = json.load(open(res))
    conv = r.get("convergence", {})
    if conv.get("converged"):
        c = f"yes, {conv.get('after_ms')} ms" + (f" (one check round: {conv['first_round_ms']} ms)" if conv.get("first_round_ms", 0) >= 1000 else "")
    else:
        c = f"**no**: {conv.get('differing_keys', '?')} of {conv.get('keys')} keys differ after {conv.get('after_ms', 0)/1000:.0f} s"
    summary = os.path.join(store, name, "latest", "summary.txt")
    link = ""
    if docs and os.path.exists(summary):
        dest = os.path.join(out_dir, f"{name}.txt")
        shutil.copyfile(summary, dest)
        link = f"[{name}](matrix/{name}.txt)"
    lines.append(
        f"| {num} | {w} | `{ks}` | {target}, {nem} | {expected} | **{r.get('verdict')}** ({r.get('workload_verdict')}) | {lost_share(w, r)} | {c} | {vis(w, r)} | {link} |"
    )
table = "\n".join(lines)
print(table)
if docs:
    path = os.path.join(root, "docs", "CONSISTENCY.md")
    text = open(path).read()
    begin, end = "<!-- matrix:begin -->", "<!-- matrix:end -->"
    if begin not in text or end not in text:
        sys.exit(f"{path} lacks the {begin} / {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    open(path, "w").write(head + begin + "\n" + table + "\n" + end + tail)
    print(f"rewrote the matrix in {path}")
PY
