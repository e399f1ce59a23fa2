#!/usr/bin/env bash
# Split-brain demo for every conflict policy, from the shell alone: starts the 5-node
# container cluster, creates one keyspace per policy, cuts one replica of key `k` off
# from the rest, writes on both sides with w=1, heals, and reads every keyspace with r=3.
# Tears the cluster down at the end (even on failure). Needs Docker (see OPERATIONS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
BIN="$CARGO_TARGET_DIR/debug/quorumkv"
trap 'scripts/cluster-down.sh --purge >/dev/null 2>&1 || true' EXIT
scripts/cluster-up.sh >/dev/null
export QUORUMKV_CLUSTER="$PWD/cluster/run/cluster.toml"
sh() { echo "\$ quorumkv shell $*" | sed 's/; /;\n      /g'; "$BIN" shell "$@" || true; }

sh -e "create keyspace sib n=3; create keyspace lwwts n=3 policy=lww-timestamp; create keyspace lwwa n=3 policy=lww-actor actor_priority=eu,us; create keyspace lwwc n=3 policy=lww-client; create keyspace hits n=3 policy=counter; create keyspace tags n=3 policy=set; create keyspace prof n=3 policy=map; create keyspace reg n=3 policy=register"
sh -e "use tags; sadd k shared; use sib; replicas k"
PL_TEXT=$("$BIN" replicas k --keyspace sib)
read -r -a PL <<<"$PL_TEXT"
A=${PL[0]}; B=${PL[1]}
OTHERS=$(for n in n1 n2 n3 n4 n5; do if [ "$n" != "$A" ]; then printf '%s,' "$n"; fi; done)
echo "\$ scripts/netsplit.sh split $A ${OTHERS%,}"
scripts/netsplit.sh split "$A" "${OTHERS%,}"
sh --node "$A" -e "use sib; put k from-$A w=1; use lwwts; put k from-$A w=1; use lwwa; put k from-$A-eu w=1 actor=eu; use lwwc; put k ts200-from-$A w=1 ts=200; use hits; incr k 5 w=1; use tags; get k r=1; srem k shared w=1; sadd k from-$A w=1; use prof; hset k name alice w=1; hincr k visits 2 w=1; use reg; rset k red w=1"
sleep 1
sh --node "$B" -e "use sib; put k from-$B w=1; use lwwts; put k from-$B w=1; use lwwa; put k from-$B-us w=1 actor=us; use lwwc; put k ts100-from-$B w=1 ts=100; use hits; incr k 3 w=1; use tags; sadd k shared w=1; sadd k from-$B w=1; use prof; hset k name bob w=1; hincr k visits 3 w=1; use reg; rset k blue w=1"
echo "\$ scripts/netsplit.sh heal"
scripts/netsplit.sh heal
sh -e "use sib; get k r=3; use lwwts; get k r=3; use lwwa; get k r=3; use lwwc; get k r=3; use hits; get k r=3; use tags; get k r=3; use prof; get k r=3; use reg; get k r=3"
