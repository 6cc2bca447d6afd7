#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 30).
# Installs cargo-fuzz when missing. Crashes are kept in fuzz/artifacts/.
# FUZZ_DEV=1 builds the targets without optimisation (what CI does: the
# build takes minutes less, the fuzzing runs slower).
set -euo pipefail
seconds="${1:-30}"
cd "$(dirname "$0")/.."
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes nightly-only flags; this lets the stable toolchain
# accept them.
export RUSTC_BOOTSTRAP=1
target_dir="fuzz/target"
profile=()
if [ "${FUZZ_DEV:-0}" = 1 ]; then
    profile=(--dev)
fi
cargo fuzz build "${profile[@]}" --target-dir "$target_dir"
failed=()
for t in $(cargo fuzz list); do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz.sh: $t for ${seconds}s" >&2
    # Fresh findings go to a scratch corpus; the seed corpus stays as committed.
    scratch="$target_dir/corpus/$t"
    mkdir -p "$scratch"
    if ! cargo fuzz run "${profile[@]}" --target-dir "$target_dir" "$t" "$scratch" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1; then
        failed+=("$t")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: every target ran ${seconds}s without a crash" >&2
