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
#   add NODE..      start an extra node (n6), which cluster-up.sh configures but does not
#                   start: it runs outside the layout (`joining = true`) until an operator
#                   joins it. Waits (at most 90 s) until it answers, adds it to
#                   cluster/run/cluster.toml, prints the `quorumkv cluster join` step; later
#                   cluster-up.sh runs start it with the others
#   list            the state of every node's container
# NODE is n1..n5, an added extra node, or `all` (those together).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../cluster/lib.sh
source "$(dirname "$0")/../cluster/lib.sh"

usage() { sed -n '2,18p' "$0"; }
[ $# -ge 1 ] || { usage; exit 2; }
ACTION="$1"; shift
docker info >/dev/null 2>&1 || { echo "nodes: no Docker engine is reachable" >&2; exit 1; }

if [ "$ACTION" = list ]; then
    for n in "${QKV_NODES[@]}" "${QKV_EXTRA_NODES[@]}"; do printf '%-3s %-15s %s\n' "$n" "$(qkv_ip "$n")" "$(qkv_state "$n")"; done
    exit 0
fi
case "$ACTION" in -h|--help|help) usage; exit 0 ;; esac
[ $# -ge 1 ] || { echo "nodes: $ACTION needs NODE (n1..n5, ${QKV_EXTRA_NODES[*]} or all)" >&2; exit 2; }

if [ "$ACTION" = add ]; then
    if [ "$(qkv_state n1)" = missing ] || [ ! -f "$QKV_CLUSTER_FILE" ]; then
        echo "nodes: the cluster is not up (run scripts/cluster-up.sh first)" >&2; exit 1
    fi
    for n in "$@"; do
        qkv_is_extra_node "$n" ||
            { echo "nodes: add takes an extra node (${QKV_EXTRA_NODES[*]}); n1..n5 are started by cluster-up.sh" >&2; exit 2; }
        [ -f "$QKV_RUN/nodes/$n/node.toml" ] ||
            { echo "nodes: no config for $n in $QKV_RUN/nodes (re-run scripts/cluster-up.sh)" >&2; exit 1; }
    done
    for n in "$@"; do
        state=$(qkv_state "$n")
        if [ "$state" = paused ]; then docker unpause "$(qkv_container "$n")" >/dev/null
        elif [ "$state" != running ]; then qkv_compose --profile extra up -d "$n"; fi
        qkv_added_nodes | grep -qx "$n" || echo "$n" >>"$QKV_ADDED"
        qkv_write_cluster_file
        qkv_wait_answers "$n" $((SECONDS + 90)) || { echo "nodes: $n did not answer within 90 s" >&2; exit 1; }
        echo "$n ($(qkv_ip "$n"):$QKV_PORT) answers; it is a contact point in $QKV_CLUSTER_FILE."
        echo "It owns nothing until it joins the layout (stage the join, check what moves, commit):"
        echo "  $QKV_BIN cluster join $n $(qkv_ip "$n"):$QKV_PORT --cluster $QKV_CLUSTER_FILE"
        echo "  $QKV_BIN cluster plan --cluster $QKV_CLUSTER_FILE"
        echo "  $QKV_BIN cluster commit --cluster $QKV_CLUSTER_FILE"
    done
    if [ -f "$QKV_RUN/netsplit.state" ] && [ "$(cat "$QKV_RUN/netsplit.state")" != heal ]; then
        echo "note: netsplit.sh cuts only between n1..n5; $* is not partitioned" >&2
    fi
    exit 0
fi

targets=()
for n in "$@"; do
    if [ "$n" = all ]; then mapfile -t -O "${#targets[@]}" targets < <(qkv_cluster_nodes); continue; fi
    qkv_is_node "$n" || qkv_is_extra_node "$n" ||
        { echo "nodes: unknown node '$n' (nodes: ${QKV_NODES[*]} ${QKV_EXTRA_NODES[*]})" >&2; exit 2; }
    targets+=("$n")
done

reapply=0
for n in "${targets[@]}"; do
    c=$(qkv_container "$n")
    state=$(qkv_state "$n")
    if [ "$state" = missing ]; then
        if qkv_is_extra_node "$n"; then echo "nodes: $n has no container (start it with: scripts/nodes.sh add $n)" >&2
        else echo "nodes: $n has no container (run scripts/cluster-up.sh)" >&2; fi
        exit 1
    fi
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
