#!/usr/bin/env bash
# The test suite, as CI runs it (.ci/run calls this): formatting, lints, then every test
# of the workspace (unit, property, in-process clusters over the in-memory network and
# over QUIC+RocksDB, the real binary with kill -9, the deterministic simulator and the
# jepsen-like checker), a 200-seed simulator swarm, a short run of every fuzz target, the
# Jepsen-style harness smoke, the netsplit evidence over containers, and a smoke run of
# scripts/bench-compare.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
quorumkv_prereqs
quorumkv_peer_prereqs
# Default features only (they include the `peers` drivers): the same feature set as
# scripts/dev.sh, so both reuse one RocksDB build (see Cargo.toml [features]).
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --workspace --no-fail-fast
else
    cargo test --locked --workspace --no-fail-fast
fi
# The deterministic simulator's swarm (docs/SIMULATION.md): 200 seeds of a 3-node cluster
# under every fault, on the debug binary the tests just built; longer swarms:
# scripts/swarm.sh --seeds N.
cargo build --locked --bin quorumkv
"$CARGO_TARGET_DIR/debug/quorumkv" sim --seeds 0..200
# Fuzz smoke: every fuzz target for 10 seconds (scripts/fuzz.sh installs cargo-fuzz if
# missing; the fuzz crate builds without RocksDB in its own target dir). Long runs and
# their findings: docs/FUZZING.md.
bash scripts/fuzz.sh 10
# The Jepsen-style harness on the local target (docs/HARNESS.md): one configuration that
# must be judged invalid (a set on lww-timestamp loses adds) and one that must be valid
# (the same on siblings), so the harness is shown to be able to fail.
bash scripts/jepsen-smoke.sh
bash scripts/netsplit-evidence.sh
# The comparison script end to end on the debug build: Redis, a 3-member etcd cluster,
# quorumkv and the echo ceiling, 2-second runs (checks the drivers and the report, not
# performance).
bash scripts/bench-compare.sh --smoke
