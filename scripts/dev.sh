#!/usr/bin/env bash
# The main job: build quorumkv and run a local 3-node cluster on 127.0.0.1 with embedded
# RocksDB (Ctrl-C stops it). Extra arguments go to `quorumkv dev-cluster`, e.g.
#   scripts/dev.sh --nodes 5 --n 4 --w 2
# The cluster's files live in ./dev-cluster; talk to it with
#   $CARGO_TARGET_DIR/debug/quorumkv get --cluster dev-cluster/cluster.toml KEY
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
quorumkv_prereqs
cargo build --locked --bin quorumkv
# A stable path to the binary for the instructions the cluster prints.
ln -sf "$CARGO_TARGET_DIR/debug/quorumkv" ./quorumkv
exec ./quorumkv dev-cluster --dir dev-cluster "$@"
