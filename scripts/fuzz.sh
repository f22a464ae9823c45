#!/usr/bin/env bash
# Runs the cargo-fuzz targets on the stable toolchain (no sanitizer), FUZZ_SECONDS each
# (default 30), and prints one line of figures per target. Exits non-zero on the first crash,
# whose input libFuzzer leaves in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [target...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config cni_args annotations resolv_conf records)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install --locked --quiet cargo-fuzz
fi

# One build for all targets, so the timed runs below are fuzzing, not compiling.
(cd fuzz && cargo fuzz build --sanitizer none)

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
printf '%-12s %12s %10s %8s %8s\n' target executions exec/s corpus crashes
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus"
    seeds=()
    [ -d "fuzz/seeds/$t" ] && seeds=("$PWD/fuzz/seeds/$t")
    # The config target starts from the very files the config tests read: one copy of them.
    [ "$t" = config ] && seeds=("$PWD/tests/fixtures/config")
    status=0
    (cd fuzz && cargo fuzz run "$t" --sanitizer none "$PWD/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) \
        >"$logs/$t" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t" | tail -1)
    size=$(find "$corpus" -type f | wc -l)
    crashes=0
    [ $status -eq 0 ] || crashes=1
    printf '%-12s %12s %10s %8s %8s\n' "$t" "${runs:-?}" "${rate:-?}" "$size" "$crashes"
    if [ $status -ne 0 ]; then
        echo "fuzz target $t failed (exit $status); its output:" >&2
        tail -n 60 "$logs/$t" >&2
        exit 1
    fi
done
