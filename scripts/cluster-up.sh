#!/usr/bin/env bash
# Start a 5-node quorumkv cluster in Docker containers (n1..n5 on a private bridge network,
# one RocksDB volume per node), so partitions can be made with real packet drops
# (scripts/netsplit.sh) and processes killed/paused (scripts/nodes.sh).
#
# Steps: build the binary (debug, shared cache) and the image if it changed
# (cluster/build-image.sh; no registry needed), write certificates (`quorumkv certs`,
# each node's certificate carries its container IP) and node configs under cluster/run/,
# `docker-compose up`, wait (bounded) until every node answers, and write
# cluster/run/cluster.toml for the CLI and shell on the host. The extra node n6 gets its
# certificate and a config with `joining = true` but is not started: `scripts/nodes.sh add
# n6` starts it (and from then on, this script starts it too).
#
# Usage: scripts/cluster-up.sh [--n 3] [--r 2] [--w 2] [--no-build] [--image TAG] [--timeout SECS]
#                              [--allow-clock-offset]
#   --n/--r/--w  replication of the `default` keyspace (used when it is first created;
#                to change it on an existing cluster, `cluster-down.sh --purge` first)
#   --no-build   do not run cargo build (use the binary already in $CARGO_TARGET_DIR)
#   --image TAG  run this existing image as is (e.g. one built from
#                cluster/Dockerfile.registry): no cargo build, no offline image build
#   --timeout S  how long to wait for every node to answer (default 90)
#   --allow-clock-offset  let admin clients move the nodes' clocks (fault injection for
#                `quorumkv jepsen --nemesis clock-skew`; test clusters only). Takes effect
#                when a node (re)starts: `scripts/nodes.sh restart all`
# Environment: QKV_NET=172.29.57 (first three octets of the /24), QKV_IMAGE=quorumkv:dev.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../cluster/lib.sh
source "$(dirname "$0")/../cluster/lib.sh"
cd "$QKV_ROOT"

N=3 R=2 W=2 BUILD=1 USE_IMAGE=0 TIMEOUT=90 FAULTS_TOML=""
while [ $# -gt 0 ]; do
    case "$1" in
        --n) N="$2"; shift ;;
        --r) R="$2"; shift ;;
        --w) W="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --image) QKV_IMAGE="$2"; USE_IMAGE=1; shift ;;
        --timeout) TIMEOUT="$2"; shift ;;
        --allow-clock-offset) FAULTS_TOML=$'\n[faults]\nallow_clock_offset = true' ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "cluster-up: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for v in "$N" "$R" "$W"; do
    [[ "$v" =~ ^[1-5]$ ]] || { echo "cluster-up: n, r and w must be 1..5" >&2; exit 2; }
done
{ [ "$R" -le "$N" ] && [ "$W" -le "$N" ]; } || { echo "cluster-up: r and w must not exceed n" >&2; exit 2; }

docker info >/dev/null 2>&1 || { echo "cluster-up: no Docker engine is reachable (docker info failed)" >&2; exit 1; }

if [ "$USE_IMAGE" = 1 ]; then
    docker image inspect "$QKV_IMAGE" >/dev/null 2>&1 || { echo "cluster-up: no image $QKV_IMAGE" >&2; exit 1; }
else
    if [ "$BUILD" = 1 ]; then
        # shellcheck source=SCRIPTDIR/prereqs.sh
        source scripts/prereqs.sh
        quorumkv_prereqs
        cargo build --locked --bin quorumkv
    fi
    [ -x "$QKV_BIN" ] || { echo "cluster-up: no binary at $QKV_BIN" >&2; exit 1; }
    bash cluster/build-image.sh --binary "$QKV_BIN" --tag "$QKV_IMAGE"
fi
# The host's CLI (certificates, cluster.toml, waiting) needs the binary either way.
[ -x "$QKV_BIN" ] || { echo "cluster-up: no binary at $QKV_BIN (cargo build --bin quorumkv)" >&2; exit 1; }

# --- certificates and configs ----------------------------------------------------------
mkdir -p "$QKV_RUN/certs" "$QKV_RUN/nodes"
cat > "$QKV_RUN/cluster.env" <<ENV
# written by scripts/cluster-up.sh; read by the other cluster scripts
QKV_NET=$QKV_NET
QKV_IMAGE=$QKV_IMAGE
QKV_PROJECT=$QKV_PROJECT
ENV
# The first layout: n1..n5. An extra node lists them too (the nodes it contacts).
members="$(qkv_members_toml "${QKV_NODES[@]}")"
# The host's CLI is the cluster's operator (it creates keyspaces): an admin certificate.
# Re-runs keep every existing key and only re-issue the certificates.
"$QKV_BIN" certs --dir "$QKV_RUN/certs" --admin admin >/dev/null
for n in "${QKV_NODES[@]}" "${QKV_EXTRA_NODES[@]}"; do
    joining=false
    qkv_is_extra_node "$n" && joining=true
    "$QKV_BIN" certs --dir "$QKV_RUN/certs" --node "$n" --ip "$(qkv_ip "$n"),127.0.0.1" >/dev/null
    d="$QKV_RUN/nodes/$n"
    mkdir -p "$d"
    cp "$QKV_RUN/certs/ca.pem" "$QKV_RUN/certs/cluster.key" "$QKV_RUN/certs/$n.pem" "$QKV_RUN/certs/$n.key" "$d/"
    cat > "$d/node.toml" <<TOML
# written by scripts/cluster-up.sh; mounted read-only at /etc/quorumkv in container qkv-$n
name = "$n"
listen = "0.0.0.0:$QKV_PORT"
data_dir = "/var/lib/quorumkv/data"

[tls]
ca_cert = "ca.pem"
cert = "$n.pem"
key = "$n.key"

[storage]
engine = "rocksdb"
sync = true

[timeouts]
request_ms = 2000
connect_ms = 1000
idle_ms = 6000

[cluster]
joining = $joining
nodes = [
$members
]

[[keyspaces]]
name = "default"
n = $N
r = $R
w = $W
$FAULTS_TOML
TOML
done
qkv_write_cluster_file

# --- start and wait ---------------------------------------------------------------------
mapfile -t added < <(qkv_added_nodes)
if [ ${#added[@]} -gt 0 ]; then
    # Nodes added earlier (`nodes.sh add`) are part of the cluster now: start them too.
    qkv_compose --profile extra up -d --remove-orphans "${QKV_NODES[@]}" "${added[@]}"
else
    qkv_compose up -d --remove-orphans "${QKV_NODES[@]}"
fi
echo "waiting (at most ${TIMEOUT}s) for every node to answer ..."
deadline=$((SECONDS + TIMEOUT))
for n in "${QKV_NODES[@]}" "${added[@]}"; do
    qkv_wait_answers "$n" "$deadline" || { echo "cluster-up: $n did not answer within ${TIMEOUT}s" >&2; exit 1; }
    echo "  $n ($(qkv_ip "$n"):$QKV_PORT) answers"
done
cat <<MSG
cluster up: $((5 + ${#added[@]})) nodes, default keyspace n=$N r=$R w=$W
  export QUORUMKV_CLUSTER=$QKV_CLUSTER_FILE
  $QKV_BIN status
  $QKV_BIN put k v --node n2        # --node picks the coordinator
  scripts/netsplit.sh isolate n1 | halves | ring | bridge | oneway n1 n2 | heal | show
  scripts/nodes.sh kill|start|pause|resume|restart n3
  scripts/nodes.sh add n6           # one more node, outside the layout, ready to join
  scripts/cluster-down.sh [--purge]
MSG
