#!/usr/bin/env bash
# Fuzz every target of fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each (default 60), one
# after the other, and print the executions each ran. Exits non-zero if a target crashes
# (the input that did it is in fuzz/artifacts/TARGET/; reproduce with
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...`). scripts/test.sh runs
# a short smoke of it; docs/FUZZING.md records the long runs and what they found.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Environment: FUZZ_SANITIZER (default `none`: the targets and their decoders are safe
# Rust; `address` adds AddressSanitizer at about half the speed), QUORUMKV_FUZZ_TARGET_DIR
# (build cache, default ~/.cache/quorumkv-fuzz-target: fuzzing's compiler flags differ from
# the main build's, so it has its own), QUORUMKV_FUZZ_CORPUS (inputs found so far, kept
# between runs, default ~/.cache/quorumkv-fuzz-corpus).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
case "$seconds" in
    ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...] (SECONDS must be a whole number)" >&2; exit 2 ;;
esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_decode object_decode context_decode key_decode crdt_apply)
sanitizer="${FUZZ_SANITIZER:-none}"
export CARGO_TARGET_DIR="${QUORUMKV_FUZZ_TARGET_DIR:-$HOME/.cache/quorumkv-fuzz-target}"
corpus_root="${QUORUMKV_FUZZ_CORPUS:-$HOME/.cache/quorumkv-fuzz-corpus}"
# cargo-fuzz's version is pinned so CI's fresh installs behave like the runs recorded in
# docs/FUZZING.md.
cargo_fuzz_version="0.13.2"

# libFuzzer instrumentation needs a nightly compiler.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "installing the nightly toolchain (fuzzing needs it)" >&2
    timeout 900 rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
    echo "installing cargo-fuzz $cargo_fuzz_version" >&2
    timeout 1200 cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

# One build of every target (release code with debug assertions and overflow checks, as
# cargo-fuzz does by default; the fuzz crate's Cargo.lock is committed).
start=$(date +%s)
nice -n 10 cargo +nightly fuzz build --sanitizer "$sanitizer"
echo "fuzz build: $(( $(date +%s) - start ))s"

summary=()
failed=0
for t in "${targets[@]}"; do
    corpus="$corpus_root/$t"
    mkdir -p "$corpus" "fuzz/seeds/$t"
    log="$(mktemp)"
    # MessagePack tokens (field names, edge integers) for the targets that decode it.
    dict=()
    case "$t" in
        frame_decode|object_decode|context_decode) dict=(-dict=fuzz/dicts/msgpack.dict) ;;
    esac
    # New inputs go to the first directory (the cache); the committed seeds are read only.
    if nice -n 10 cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "$corpus" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        "${dict[@]}" >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed=1
        # The crash report: what libFuzzer and the panic said.
        grep -E "panicked|ERROR|SUMMARY|Test unit written|deadly signal|stack overflow|out-of-memory|timeout" "$log" | head -20 >&2 || true
        tail -n 40 "$log" >&2
    fi
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    summary+=("$(printf '%-16s %-7s %12s executions in %ss, corpus %s inputs' \
        "$t" "$status" "${execs:-?}" "$seconds" "$(find "$corpus" -type f | wc -l)")")
    rm -f "$log"
done
printf '%s\n' "${summary[@]}"
exit "$failed"
