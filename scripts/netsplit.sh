#!/usr/bin/env bash
# Network partitions for the container cluster (scripts/cluster-up.sh), made the way Jepsen
# makes them: iptables DROP rules inside the nodes' containers (`docker exec qkv-nX
# iptables ...`), matching the other nodes' IPs, so only inter-node traffic is cut and the
# host can still reach every node's client port (unless --clients-too).
#
# All rules live in one dedicated chain, QKV-NETSPLIT, jumped to from INPUT and OUTPUT;
# `heal` removes the jumps and the chain and touches nothing else. A cut "A's packets to B
# are dropped" is enforced on both ends: A drops output to B, B drops input from A.
# Every action replaces the current partition (it is not added to it), so each action is
# idempotent and `heal` reverses any of them. The last action is saved in
# cluster/run/netsplit.state; `reapply` restores it (scripts/nodes.sh does so after a
# container start, since a restarted container gets a fresh network namespace).
#
# Usage: scripts/netsplit.sh [--clients-too] ACTION
#   isolate NODE          NODE and the other four cannot talk
#   halves                n1,n2 | n3,n4,n5
#   split G1 G2 [G3..]    groups of comma-separated nodes, e.g. split n1,n2 n3,n4,n5;
#                         every node in exactly one group
#   bridge [NODE]         two halves that share NODE (default n3), which sees everyone:
#                         {n1,n2,n3} and {n3,n4,n5}
#   ring                  majorities ring: each node sees itself and its two neighbours on
#                         the ring n1..n5 (a majority), no two see the same majority
#   oneway FROM TO        FROM's packets to TO are dropped, TO's packets to FROM are not
#   heal                  remove every rule this script added
#   show                  print the rules of every node, with node names for IPs
#   reapply               apply the last saved action again
#   --clients-too         (isolate, halves, split) also cut the host (the bridge gateway,
#                         where the CLI runs) off from every node outside the last group
#                         (for isolate: from the isolated node)
set -euo pipefail
# shellcheck source=SCRIPTDIR/../cluster/lib.sh
source "$(dirname "$0")/../cluster/lib.sh"

CHAIN=QKV-NETSPLIT
STATE="$QKV_RUN/netsplit.state"

usage() { sed -n '2,30p' "$0"; }
die() { echo "netsplit: $*" >&2; exit 2; }

CLIENTS_TOO=0
if [ "${1:-}" = "--clients-too" ]; then CLIENTS_TOO=1; shift; fi
[ $# -ge 1 ] || { usage; exit 2; }
ACTION="$1"; shift

docker info >/dev/null 2>&1 || die "no Docker engine is reachable"

# Directed cuts "a b": a's packets to b are dropped. a or b may be "host".
CUTS=()
cut_both() { CUTS+=("$1 $2" "$2 $1"); }

# Cut every node of group $1 (space-separated) from every node not in it.
cut_group_from_rest() {
    local g=" $1 " a b
    for a in $1; do
        for b in "${QKV_NODES[@]}"; do
            case "$g" in *" $b "*) ;; *) CUTS+=("$a $b" "$b $a") ;; esac
        done
    done
}

check_node() { qkv_is_node "$1" || die "unknown node '$1' (nodes: ${QKV_NODES[*]})"; }

# Components (one per argument, comma-separated names) -> cuts between components.
components() {
    local -a groups=("$@")
    local seen=" " g n i j a b
    [ ${#groups[@]} -ge 2 ] || die "split needs at least two groups, e.g. split n1,n2 n3,n4,n5"
    for g in "${groups[@]}"; do
        for n in ${g//,/ }; do
            check_node "$n"
            case "$seen" in *" $n "*) die "$n is in two groups" ;; esac
            seen+="$n "
        done
    done
    for n in "${QKV_NODES[@]}"; do
        case "$seen" in *" $n "*) ;; *) die "$n is in no group (list every node)" ;; esac
    done
    for ((i = 0; i < ${#groups[@]}; i++)); do
        for ((j = 0; j < ${#groups[@]}; j++)); do
            [ "$i" = "$j" ] && continue
            for a in ${groups[i]//,/ }; do
                for b in ${groups[j]//,/ }; do CUTS+=("$a $b"); done
            done
        done
    done
    if [ "$CLIENTS_TOO" = 1 ]; then
        local last=$((${#groups[@]} - 1))
        for ((i = 0; i < last; i++)); do
            for a in ${groups[i]//,/ }; do cut_both "$a" host; done
        done
    fi
}

ip_of() { if [ "$1" = host ]; then qkv_host_ip; else qkv_ip "$1"; fi; }

# The shell script that makes one node's chain hold exactly the given rules (or, with no
# rules, removes the chain and its jumps). Runs inside the container (busybox sh).
node_script() {
    local rules="$1"
    if [ -z "$rules" ]; then
        cat <<SH
for c in INPUT OUTPUT; do
  i=0; while [ \$i -lt 10 ] && iptables -w -C \$c -j $CHAIN 2>/dev/null; do iptables -w -D \$c -j $CHAIN; i=\$((i+1)); done
done
if iptables -w -n -L $CHAIN >/dev/null 2>&1; then iptables -w -F $CHAIN && iptables -w -X $CHAIN; fi
SH
    else
        cat <<SH
set -e
iptables -w -N $CHAIN 2>/dev/null || true
iptables -w -C INPUT -j $CHAIN 2>/dev/null || iptables -w -I INPUT 1 -j $CHAIN
iptables -w -C OUTPUT -j $CHAIN 2>/dev/null || iptables -w -I OUTPUT 1 -j $CHAIN
iptables -w -F $CHAIN
$rules
SH
    fi
}

# Apply CUTS to every running node, in parallel. Stopped nodes are skipped (a container
# that starts again gets a fresh network namespace: `reapply` after starting it).
apply() {
    local n c a b rules ins outs pids=() names=() failed=0 i
    for n in "${QKV_NODES[@]}"; do
        ins="" outs=""
        for c in "${CUTS[@]+"${CUTS[@]}"}"; do
            read -r a b <<<"$c"
            [ "$b" = "$n" ] && ins+="iptables -w -A $CHAIN -s $(ip_of "$a") -j DROP"$'\n'
            [ "$a" = "$n" ] && outs+="iptables -w -A $CHAIN -d $(ip_of "$b") -j DROP"$'\n'
        done
        rules="$(sort -u <<<"$ins")"$'\n'"$(sort -u <<<"$outs")"
        [ -n "$ins$outs" ] || rules=""
        case "$(qkv_state "$n")" in
            running) ;;
            paused) echo "netsplit: $n is paused; resume it first (scripts/nodes.sh resume $n)" >&2; failed=1; continue ;;
            *) echo "netsplit: $n is not running; skipped (run '$0 reapply' after starting it)" >&2; continue ;;
        esac
        docker exec -u 0 "$(qkv_container "$n")" sh -c "$(node_script "$rules")" &
        pids+=($!); names+=("$n")
    done
    for i in "${!pids[@]}"; do
        wait "${pids[i]}" || { echo "netsplit: applying rules on ${names[i]} failed" >&2; failed=1; }
    done
    return "$failed"
}

show() {
    local n out line
    for n in "${QKV_NODES[@]}"; do
        case "$(qkv_state "$n")" in
            running) ;;
            *) echo "$n ($(qkv_ip "$n")): container $(qkv_state "$n")"; continue ;;
        esac
        # Our chain, its rules and the jumps to it from INPUT/OUTPUT.
        out=$(docker exec -u 0 "$(qkv_container "$n")" sh -c "iptables -w -S | grep -e '$CHAIN'" 2>/dev/null || true)
        if ! grep -q -e "^-A $CHAIN " <<<"$out"; then
            echo "$n ($(qkv_ip "$n")): no netsplit rules"
            continue
        fi
        local from="" to=""
        echo "$n ($(qkv_ip "$n")):"
        while read -r line; do
            case "$line" in
                "-A $CHAIN -s "*) ip=${line#"-A $CHAIN -s "}; ip=${ip%% *}; from+=" $(qkv_name_of_ip "$ip")" ;;
                "-A $CHAIN -d "*) ip=${line#"-A $CHAIN -d "}; ip=${ip%% *}; to+=" $(qkv_name_of_ip "$ip")" ;;
            esac
            echo "    $line"
        done <<<"$out"
        echo "    => drops packets from:${from:- (none)}; drops packets to:${to:- (none)}"
    done
    if [ -f "$STATE" ]; then echo "last action: $(cat "$STATE")"; fi
}

save_state() { mkdir -p "$QKV_RUN"; echo "$*" >"$STATE"; }

case "$ACTION" in
    isolate)
        [ $# -eq 1 ] || die "usage: isolate NODE"
        check_node "$1"
        cut_group_from_rest "$1"
        [ "$CLIENTS_TOO" = 1 ] && cut_both "$1" host
        ;;
    halves)
        [ $# -eq 0 ] || die "usage: halves"
        components n1,n2 n3,n4,n5
        ;;
    split)
        components "$@"
        ;;
    bridge)
        [ $# -le 1 ] || die "usage: bridge [NODE]"
        [ "$CLIENTS_TOO" = 0 ] || die "--clients-too applies to isolate, halves and split"
        mid="${1:-n3}"; check_node "$mid"
        others=(); for n in "${QKV_NODES[@]}"; do [ "$n" != "$mid" ] && others+=("$n"); done
        for a in "${others[@]:0:2}"; do for b in "${others[@]:2:2}"; do cut_both "$a" "$b"; done; done
        ;;
    ring)
        [ $# -eq 0 ] || die "usage: ring"
        [ "$CLIENTS_TOO" = 0 ] || die "--clients-too applies to isolate, halves and split"
        # Node i sees i-1, i, i+1 (cyclically): 3 of 5, a majority; it drops i-2 and i+2.
        cnt=${#QKV_NODES[@]}
        for ((i = 0; i < cnt; i++)); do
            for d in 2 3; do  # i+2 and i+3 = i-2 (mod 5)
                CUTS+=("${QKV_NODES[i]} ${QKV_NODES[(i + d) % cnt]}")
            done
        done
        ;;
    oneway)
        [ $# -eq 2 ] || die "usage: oneway FROM TO"
        [ "$CLIENTS_TOO" = 0 ] || die "--clients-too applies to isolate, halves and split"
        check_node "$1"; check_node "$2"; [ "$1" != "$2" ] || die "FROM and TO must differ"
        CUTS+=("$1 $2")
        ;;
    heal)
        [ $# -eq 0 ] || die "usage: heal"
        ;;
    show)
        show
        exit 0
        ;;
    reapply)
        [ -f "$STATE" ] || { echo "netsplit: nothing to reapply"; exit 0; }
        read -r -a saved <"$STATE"
        exec "$0" "${saved[@]}"
        ;;
    -h|--help|help) usage; exit 0 ;;
    *) die "unknown action '$ACTION' (see --help)" ;;
esac

if [ "$CLIENTS_TOO" = 1 ]; then save_state --clients-too "$ACTION" "$@"; else save_state "$ACTION" "$@"; fi
apply
if [ "$ACTION" = heal ]; then
    echo "healed: no netsplit rules on any running node"
else
    desc="$ACTION${*:+ $*}"
    [ "$CLIENTS_TOO" = 1 ] && desc+=" (clients too)"
    echo "applied: $desc"
fi
