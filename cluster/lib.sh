# Shared settings and helpers for the container cluster scripts (scripts/cluster-up.sh,
# cluster-down.sh, netsplit.sh, nodes.sh, netsplit-evidence.sh). Sourced, not run.
# Everything the cluster needs at run time lives in cluster/run/ (git-ignored).
# shellcheck shell=bash

QKV_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QKV_RUN="$QKV_ROOT/cluster/run"
QKV_COMPOSE_FILE="$QKV_ROOT/cluster/docker-compose.yml"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quorumkv-target}"
QKV_BIN="${QKV_BIN:-$CARGO_TARGET_DIR/debug/quorumkv}"
# Settings chosen at cluster-up time win over the defaults below.
if [ -f "$QKV_RUN/cluster.env" ]; then
    # shellcheck source=/dev/null
    source "$QKV_RUN/cluster.env"
fi
# The compose project (prefix of the network and volume names).
export QKV_PROJECT="${QKV_PROJECT:-quorumkv}"
# First three octets of the private bridge network (a /24); nodes are .11 to .16 and the
# host (the bridge gateway) is .1. Override with QKV_NET=172.30.99 if it clashes.
export QKV_NET="${QKV_NET:-172.29.57}"
export QKV_IMAGE="${QKV_IMAGE:-quorumkv:dev}"
# The first layout's members: cluster-up.sh starts them, netsplit.sh cuts between them.
QKV_NODES=(n1 n2 n3 n4 n5)
# Extra nodes, to try layout changes: cluster-up.sh writes their certificates and configs
# (`joining = true`: they start outside the layout) but does not start them; `nodes.sh add
# n6` does (compose profile `extra`), and records it in $QKV_ADDED so that later
# cluster-up.sh runs start it with the others.
QKV_EXTRA_NODES=(n6)
QKV_ADDED="$QKV_RUN/added"
# shellcheck disable=SC2034  # used by the scripts that source this file
QKV_PORT=7000
QKV_CLUSTER_FILE="$QKV_RUN/cluster.toml"

# The container of a node: qkv-n1 ...
qkv_container() { echo "qkv-$1"; }

# A node's fixed IP address.
qkv_ip() {
    local n="${1#n}"
    case "$n" in [1-6]) echo "$QKV_NET.$((10 + n))" ;; *) echo "unknown node: $1" >&2; return 1 ;; esac
}

# The host as the containers see it (the bridge gateway).
qkv_host_ip() { echo "$QKV_NET.1"; }

# The node whose IP this is (or the IP itself).
qkv_name_of_ip() {
    local ip="${1%/32}" n
    for n in "${QKV_NODES[@]}" "${QKV_EXTRA_NODES[@]}"; do
        [ "$(qkv_ip "$n")" = "$ip" ] && { echo "$n"; return; }
    done
    [ "$ip" = "$(qkv_host_ip)" ] && { echo "host"; return; }
    echo "$ip"
}

qkv_is_node() {
    local n
    for n in "${QKV_NODES[@]}"; do [ "$n" = "$1" ] && return 0; done
    return 1
}

qkv_is_extra_node() {
    local n
    for n in "${QKV_EXTRA_NODES[@]}"; do [ "$n" = "$1" ] && return 0; done
    return 1
}

# The extra nodes `nodes.sh add` started (one a line in $QKV_ADDED), in that order.
qkv_added_nodes() {
    [ -f "$QKV_ADDED" ] || return 0
    local n
    while read -r n; do qkv_is_extra_node "$n" && echo "$n"; done <"$QKV_ADDED"
}

# Every node the cluster runs: the first layout's and the added ones.
qkv_cluster_nodes() {
    printf '%s\n' "${QKV_NODES[@]}"
    qkv_added_nodes
}

# A TOML array body of members `{ name, addr }` for the given nodes.
qkv_members_toml() {
    local n
    for n in "$@"; do
        echo "    { name = \"$n\", addr = \"$(qkv_ip "$n"):$QKV_PORT\" },"
    done
}

# (Re)write the host's client connection file, with every node the cluster runs as a
# contact point.
qkv_write_cluster_file() {
    local nodes
    mapfile -t nodes < <(qkv_cluster_nodes)
    cat >"$QKV_CLUSTER_FILE.tmp" <<TOML
# written by scripts/cluster-up.sh (and nodes.sh add): the client connection file for the
# container cluster
ca_cert = "certs/ca.pem"
client_cert = "certs/admin.pem"
client_key = "certs/admin.key"
keyspace = "default"
timeout_ms = 5000
contact_points = [
$(qkv_members_toml "${nodes[@]}")
]
TOML
    mv "$QKV_CLUSTER_FILE.tmp" "$QKV_CLUSTER_FILE"
}

# Wait until node $1 answers, at most until $SECONDS reaches $2; then print its log and
# fail.
qkv_wait_answers() {
    local n="$1" deadline="$2"
    until qkv status --node "$n" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$n did not answer in time; its log:" >&2
            docker logs --tail 30 "$(qkv_container "$n")" >&2 || true
            return 1
        fi
        sleep 1
    done
}

# docker compose v2 if present, else docker-compose v1.
qkv_compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -p "$QKV_PROJECT" -f "$QKV_COMPOSE_FILE" "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose -p "$QKV_PROJECT" -f "$QKV_COMPOSE_FILE" "$@"
    else
        echo "error: neither 'docker compose' nor 'docker-compose' is installed" >&2
        return 1
    fi
}

# running | paused | exited | missing
qkv_state() {
    local s
    s=$(docker inspect -f '{{.State.Status}}' "$(qkv_container "$1")" 2>/dev/null) || { echo missing; return; }
    echo "$s"
}

# The CLI against the container cluster.
qkv() { "$QKV_BIN" "$@" --cluster "$QKV_CLUSTER_FILE"; }
