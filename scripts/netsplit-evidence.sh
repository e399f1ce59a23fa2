#!/usr/bin/env bash
# Evidence that quorumkv behaves as designed under real network partitions — the "two
# moderators during a netsplit" story — on a 5-node cluster in Docker containers with
# iptables partitions (scripts/cluster-up.sh, scripts/netsplit.sh). N=3 R=2 W=2.
#
#  1. isolate a node: writes coordinated on the majority side still succeed; the same
#     writes coordinated by the isolated node (`--node`) fail with `quorum not reached`;
#  2. heal: the isolated node writes again;
#  3. split the cluster so the three replicas of one key are on both sides; two
#     "moderators" edit the same post from the same read (same causal context), one on
#     each side, with W=1, coordinated by a replica on their side (`quorumkv replicas`);
#     each side reads only its own edit;
#  4. heal, read with R=3: both edits come back as siblings, with their ids; a write with
#     the read's context resolves them into one value.
#
# Run by CI at the end of scripts/test.sh. Without a Docker engine it prints SKIPPED and
# exits 0. It refuses to run over an existing container cluster (it would destroy its data)
# and always tears its own cluster down (cluster-down.sh --purge), also on failure. Every
# wait is bounded; the whole run is capped at EVIDENCE_BUDGET seconds (default 600).
# The last line is `netsplit evidence: N passed, M failed`; the exit code is non-zero when
# a check failed.
# shellcheck disable=SC2317  # functions called from traps and `check` are reachable
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=SCRIPTDIR/../cluster/lib.sh
source cluster/lib.sh

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "netsplit evidence: SKIPPED: no docker engine (docker info failed)"
    exit 0
fi
if [ -n "$(docker ps -aq --filter 'name=^qkv-n[1-5]$')" ]; then
    echo "netsplit evidence: FAIL: a container cluster (qkv-n*) already exists; stop it first with scripts/cluster-down.sh --purge" >&2
    echo "netsplit evidence: 0 passed, 1 failed"
    exit 1
fi

START=$SECONDS
BUDGET=${EVIDENCE_BUDGET:-600}
PASSED=0
FAILED=0
FAILURES=()


pass() { PASSED=$((PASSED + 1)); echo "  PASS: $1"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); echo "  FAIL: $1"; }
check() { local what="$1"; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
over_budget() { [ $((SECONDS - START)) -ge "$BUDGET" ]; }

summary() {
    echo
    echo "== summary ($((SECONDS - START)) s including teardown)"
    local f
    for f in "${FAILURES[@]+"${FAILURES[@]}"}"; do echo "  FAILED: $f"; done
    if [ "$FAILED" = 0 ]; then echo "PASS"; else echo "FAIL"; fi
    echo "netsplit evidence: $PASSED passed, $FAILED failed"
}

# On every exit (the end, a failed early step, an unexpected error, Ctrl-C): heal, remove
# the cluster (containers, network, volumes, cluster/run), then print the summary last.
FINISHED=0
finish() {
    local rc=$?
    [ "$FINISHED" = 1 ] && return
    FINISHED=1
    trap '' INT TERM  # let the teardown finish
    if [ "$rc" != 0 ] && [ "$FAILED" = 0 ]; then fail "the evidence script stopped early (exit code $rc)"; fi
    echo
    echo "== teardown"
    scripts/netsplit.sh heal >/dev/null 2>&1 || true
    scripts/cluster-down.sh --purge >/dev/null 2>&1 || true
    if [ -n "$(docker ps -aq --filter 'name=^qkv-n[1-5]$')" ]; then
        fail "teardown: containers qkv-n* are still there"
    else
        echo "  cluster removed (containers, network, volumes, cluster/run)"
    fi
    summary
    if [ "$FAILED" != 0 ]; then exit 1; fi
}
trap finish EXIT
trap 'echo "interrupted"; exit 130' INT TERM

# Hold a partition at least this long (seconds) after it began: longer than the nodes' QUIC
# idle timeout (6 s), so connections across it die and must be re-dialled after heal.
hold_partition() { while [ $((SECONDS - $1)) -lt 8 ]; do sleep 1; done; }

# Run the CLI, echo the command and its output; OUT holds stdout+stderr, RC the exit code.
OUT="" RC=0
run() {
    echo "  \$ quorumkv $*"
    RC=0
    OUT=$(timeout 30 "$QKV_BIN" "$@" --cluster "$QKV_CLUSTER_FILE" 2>&1) || RC=$?
    # shellcheck disable=SC2001  # indent every line
    sed 's/^/      /' <<<"$OUT"
}
# Same, quietly (for polling).
run_quiet() { RC=0; OUT=$(timeout 30 "$QKV_BIN" "$@" --cluster "$QKV_CLUSTER_FILE" 2>&1) || RC=$?; }

# Sorted values of a `get --output json` reply, one per line.
json_values() {
    if command -v jq >/dev/null 2>&1; then
        jq -r '.values[]' <<<"$1" | sort
    else
        python3 -c 'import json,sys; print("\n".join(sorted(json.loads(sys.stdin.read())["values"])))' <<<"$1"
    fi
}
json_field() {
    if command -v jq >/dev/null 2>&1; then
        jq -r ".$2" <<<"$1"
    else
        python3 -c 'import json,sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$2" <<<"$1"
    fi
}

# Poll `quorumkv ARGS` until it succeeds: at most $1 seconds, at most one try a second.
retry_until_ok() {
    local secs="$1" i; shift
    for ((i = 0; i < secs; i++)); do
        run_quiet "$@"
        [ "$RC" = 0 ] && return 0
        over_budget && return 1
        sleep 1
    done
    return 1
}

# A key (prefix-1, prefix-2, ...) whose replicas satisfy the predicate "$2 REPLICAS...".
find_key() {
    local prefix="$1" pred="$2" i k
    for i in $(seq 1 60); do
        k="$prefix-$i"
        run_quiet replicas "$k" --node n2
        [ "$RC" = 0 ] || continue
        # shellcheck disable=SC2086  # word splitting of the replica list is wanted
        if "$pred" $OUT; then echo "$k"; return 0; fi
    done
    return 1
}
has_n1() { case " $* " in *" n1 "*) return 0 ;; esac; return 1; }

echo "== netsplit evidence: 5 nodes in containers, default keyspace N=3 R=2 W=2"
if ! scripts/cluster-up.sh --n 3 --r 2 --w 2 2>&1 | sed 's/^/  | /'; then
    fail "cluster-up: 5 nodes answer"
    exit 1
fi
pass "cluster-up: 5 nodes answer"

echo
echo "== 1. write 10 keys (W=2), each coordinated by a different node"
ok=1
for i in $(seq 0 9); do
    n="n$((i % 5 + 1))"
    run_quiet put "key-$i" "v1-$i" --node "$n"
    [ "$RC" = 0 ] || { ok=0; echo "    put key-$i via $n failed: $OUT"; }
done
check "10 writes with W=2 succeed on a healthy cluster" test "$ok" = 1

echo
echo "== 2. isolate n1"
T_SPLIT=$SECONDS
scripts/netsplit.sh isolate n1 | sed 's/^/  /'
# Until a node's failure detector (a ping every second) has seen n1 go silent, it may pick
# n1 to lead a write, and a lead that does not answer ends the write as indeterminate
# rather than trying a second lead (docs/CONSISTENCY.md). Wait (at most 15 s) until every
# majority node sees n1 down, as an operator would see in `quorumkv status`.
for n in n2 n3 n4 n5; do
    for _ in $(seq 1 30); do
        run_quiet status --node "$n" --output json
        grep -q '"name":"n1"[^}]*"state":"down"' <<<"$OUT" && break
        sleep 0.5
    done
done
KX=$(find_key post has_n1) || KX=""
echo "  key $KX has replicas: $(run_quiet replicas "$KX" --node n2; echo "$OUT") (n1 among them)"
ok=1
for i in $(seq 0 9); do
    n="n$((i % 4 + 2))"
    run_quiet put "key-$i" "v2-$i" --node "$n"
    [ "$RC" = 0 ] || { ok=0; echo "    put key-$i via $n failed: $OUT"; }
done
check "majority side (n2..n5 coordinating): 10 writes with W=2 succeed while n1 is cut off" test "$ok" = 1
run put "$KX" "written on the majority side" --node n3
check "majority side: a write of $KX (n1 is one of its replicas) succeeds" test "$RC" = 0
run put "$KX" "written via the isolated node" --node n1
check "isolated n1 coordinating: the write of $KX fails with 'quorum not reached ... needed 2, got 1'" \
    grep -q "quorum not reached for write: needed 2, got 1" <<<"$OUT"
run get "$KX" --node n1
check "isolated n1 coordinating: a read with R=2 fails with 'quorum not reached'" \
    grep -q "quorum not reached for read" <<<"$OUT"
run get "$KX" --node n4
check "majority side (n4 coordinating, R=2) reads the majority-side write" \
    test "$RC:$(head -n 1 <<<"$OUT")" = "0:written on the majority side"

hold_partition "$T_SPLIT"
scripts/netsplit.sh show | sed 's/^/  /'
echo
echo "== 3. heal (after $((SECONDS - T_SPLIT)) s of isolation)"
scripts/netsplit.sh heal | sed 's/^/  /'
t0=$SECONDS
if retry_until_ok 45 put "$KX" "n1 is back" --node n1 -w 3; then
    pass "after heal, n1 coordinates a W=3 write of $KX again ($((SECONDS - t0)) s after heal)"
else
    fail "after heal, n1 coordinates a W=3 write of $KX again (last: $OUT)"
fi

echo
echo "== 4. split brain: two moderators edit the same post on both sides of a netsplit"
POST=forum-post-42
run replicas "$POST" --node n2
read -r RA RB RC3 <<<"$OUT"
if [ "$RC" != 0 ] || [ -z "$RC3" ]; then
    fail "quorumkv replicas $POST lists three replicas"
    exit 1
fi
OTHERS=()
for n in "${QKV_NODES[@]}"; do case " $RA $RB $RC3 " in *" $n "*) ;; *) OTHERS+=("$n") ;; esac; done
SIDE_A="$RA,${OTHERS[0]}"
SIDE_B="$RB,$RC3,${OTHERS[1]}"
echo "  replicas of $POST: $RA $RB $RC3 -> side A = {$SIDE_A} (moderator A's coordinator $RA), side B = {$SIDE_B} (moderator B's coordinator $RB)"
run put "$POST" "original post" -w 3 --node "$RA"
check "the original post is written to all three replicas (W=3)" test "$RC" = 0
run get "$POST" -r 3 --output json --node "$RA"
CTX0=$(json_field "$OUT" context 2>/dev/null || echo "")
check "both moderators read the post (R=3) and get one value and a context" test "$(json_values "$OUT" 2>/dev/null)" = "original post"

T_SPLIT=$SECONDS
scripts/netsplit.sh split "$SIDE_A" "$SIDE_B" | sed 's/^/  /'
run put "$POST" "edited by moderator A" --context "$CTX0" -w 1 --node "$RA"
check "side A: moderator A's edit succeeds with W=1, coordinated by replica $RA" test "$RC" = 0
run put "$POST" "edited by moderator B" --context "$CTX0" -w 1 --node "$RB"
check "side B: moderator B's edit succeeds with W=1, coordinated by replica $RB" test "$RC" = 0
run get "$POST" -r 1 --node "$RA"
check "side A reads only A's edit (R=1)" test "$(head -n 1 <<<"$OUT")" = "edited by moderator A"
run get "$POST" -r 1 --node "$RB"
check "side B reads only B's edit (R=1)" test "$(head -n 1 <<<"$OUT")" = "edited by moderator B"

hold_partition "$T_SPLIT"
echo
echo "== 5. heal (after $((SECONDS - T_SPLIT)) s of split) and read with R=3: both edits are siblings"
scripts/netsplit.sh heal | sed 's/^/  /'
t0=$SECONDS
got=""
for ((i = 0; i < 45; i++)); do
    run_quiet get "$POST" -r 3 --output json --node "${OTHERS[0]}"
    if [ "$RC" = 0 ]; then
        got=$(json_values "$OUT")
        if [ "$(wc -l <<<"$got")" -ge 2 ]; then break; fi
    fi
    over_budget && break
    sleep 1
done
echo "  after heal ($((SECONDS - t0)) s), R=3 read coordinated by ${OTHERS[0]}:"
run get "$POST" -r 3 --node "${OTHERS[0]}"
run get "$POST" -r 3 --output json --node "${OTHERS[0]}"
check "the R=3 read returns exactly the two edits as siblings" \
    test "$(json_values "$OUT" 2>/dev/null)" = "$(printf 'edited by moderator A\nedited by moderator B')"
CTX2=$(json_field "$OUT" context 2>/dev/null || echo "")
if command -v jq >/dev/null 2>&1; then
    echo "  sibling ids (dots): $(jq -r '[.siblings[] | "\(.id)=\(.value)"] | join(", ")' <<<"$OUT")"
fi
new_context() { [ -n "$CTX2" ] && [ "$CTX2" != "null" ] && [ "$CTX2" != "$CTX0" ]; }
check "the siblings come with a new causal context (covering both edits)" new_context

echo
echo "== 6. resolve: a write with the sibling read's context replaces both"
run put "$POST" "merged by moderator A and B" --context "$CTX2" -w 3 --node "$RB"
run get "$POST" -r 3 --output json --node "$RA"
check "after the resolving write, R=3 reads one value" test "$(json_values "$OUT" 2>/dev/null)" = "merged by moderator A and B"

# finish (the EXIT trap) tears down and prints the summary.
exit 0
