#!/usr/bin/env bash
# Stop the container cluster started by scripts/cluster-up.sh. Data volumes are kept so
# the next cluster-up finds the data again; --purge also removes the volumes, the network
# and cluster/run/ (certificates, configs, the built image context), for a fresh start.
#
# Usage: scripts/cluster-down.sh [--purge]
set -euo pipefail
# shellcheck source=SCRIPTDIR/../cluster/lib.sh
source "$(dirname "$0")/../cluster/lib.sh"
cd "$QKV_ROOT"

PURGE=0
case "${1:-}" in
    --purge) PURGE=1 ;;
    "") ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "cluster-down: unknown argument $1" >&2; exit 2 ;;
esac

if ! docker info >/dev/null 2>&1; then
    echo "cluster-down: no Docker engine is reachable; nothing to stop" >&2
    [ "$PURGE" = 1 ] && rm -rf "$QKV_RUN"
    exit 0
fi
# Paused containers cannot be stopped; resume them first.
for n in "${QKV_NODES[@]}" "${QKV_EXTRA_NODES[@]}"; do
    [ "$(qkv_state "$n")" = paused ] && docker unpause "$(qkv_container "$n")" >/dev/null
done
# `--profile extra`: the extra nodes (n6) are stopped and removed too.
if [ "$PURGE" = 1 ]; then
    qkv_compose --profile extra down --volumes --remove-orphans -t 10
    rm -rf "$QKV_RUN"
    echo "cluster removed (containers, network, volumes, cluster/run)"
else
    qkv_compose --profile extra down --remove-orphans -t 10
    echo "cluster stopped; volumes kept (--purge removes them)"
fi
