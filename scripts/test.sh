#!/usr/bin/env bash
# The test suite, as CI runs it (.ci/run calls this): formatting, lints, then every test
# of the workspace (unit, property, in-process clusters over the in-memory network and
# over QUIC+RocksDB, the real binary with kill -9, and the jepsen-like checker).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
quorumkv_prereqs
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --workspace --no-fail-fast
else
    cargo test --locked --workspace --no-fail-fast
fi
bash scripts/netsplit-evidence.sh
