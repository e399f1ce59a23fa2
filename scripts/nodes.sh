#!/usr/bin/env bash
# Process faults for the container cluster (scripts/cluster-up.sh): crash, pause and bring
# back nodes, to combine with network partitions (scripts/netsplit.sh).
#
#   kill NODE..     docker kill -s KILL: the process dies at once (RocksDB recovers on start)
#   start NODE..    docker start; then re-applies the current netsplit (a started container
#                   has a fresh network namespace without the iptables rules)
#   pause NODE..    docker pause (SIGSTOP-like freeze of every process: requests time out)
#   resume NODE..   docker unpause
#   restart NODE..  docker restart (SIGTERM, 10 s grace, start), then re-applies the netsplit
#   list            the state of every node's container
# NODE is n1..n5 or `all`.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../cluster/lib.sh
source "$(dirname "$0")/../cluster/lib.sh"

usage() { sed -n '2,13p' "$0"; }
[ $# -ge 1 ] || { usage; exit 2; }
ACTION="$1"; shift
docker info >/dev/null 2>&1 || { echo "nodes: no Docker engine is reachable" >&2; exit 1; }

if [ "$ACTION" = list ]; then
    for n in "${QKV_NODES[@]}"; do printf '%-3s %-15s %s\n' "$n" "$(qkv_ip "$n")" "$(qkv_state "$n")"; done
    exit 0
fi
case "$ACTION" in -h|--help|help) usage; exit 0 ;; esac
[ $# -ge 1 ] || { echo "nodes: $ACTION needs NODE (n1..n5 or all)" >&2; exit 2; }
targets=()
for n in "$@"; do
    if [ "$n" = all ]; then targets+=("${QKV_NODES[@]}"); continue; fi
    qkv_is_node "$n" || { echo "nodes: unknown node '$n' (nodes: ${QKV_NODES[*]})" >&2; exit 2; }
    targets+=("$n")
done

reapply=0
for n in "${targets[@]}"; do
    c=$(qkv_container "$n")
    state=$(qkv_state "$n")
    [ "$state" != missing ] || { echo "nodes: $n has no container (run scripts/cluster-up.sh)" >&2; exit 1; }
    case "$ACTION" in
        kill)
            if [ "$state" = running ] || [ "$state" = paused ]; then docker kill -s KILL "$c" >/dev/null; fi ;;
        start)
            if [ "$state" = paused ]; then docker unpause "$c" >/dev/null
            elif [ "$state" != running ]; then docker start "$c" >/dev/null; reapply=1; fi ;;
        pause)
            if [ "$state" = running ]; then docker pause "$c" >/dev/null; fi ;;
        resume)
            if [ "$state" = paused ]; then docker unpause "$c" >/dev/null; fi ;;
        restart)
            if [ "$state" = paused ]; then docker unpause "$c" >/dev/null; fi
            docker restart -t 10 "$c" >/dev/null; reapply=1 ;;
        *) echo "nodes: unknown action '$ACTION'" >&2; usage; exit 2 ;;
    esac
    echo "$n: $ACTION -> $(qkv_state "$n")"
done
if [ "$reapply" = 1 ] && [ -f "$QKV_RUN/netsplit.state" ] && [ "$(cat "$QKV_RUN/netsplit.state")" != heal ]; then
    "$(dirname "$0")/netsplit.sh" reapply
fi
