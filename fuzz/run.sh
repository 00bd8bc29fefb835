#!/usr/bin/env bash
# Fuzzes edgeway's parsers and decoders with cargo fuzz (libFuzzer), each target for a
# bounded time, and prints per target: executions, exec/s, corpus size and crashes.
#
# Usage: fuzz/run.sh [-t SECONDS] [TARGET...]
#   -t SECONDS  fuzzing time per target (default 60)
#   TARGET...   targets to run (default: every target in fuzz/Cargo.toml)
# Exits non-zero if a target does not build, or crashes, leaks, times out (10 s for one
# input) or runs out of memory (2 GiB) on any input.
#
# Toolchain: cargo fuzz passes rustc nightly-only flags (-Zsanitizer=address and the
# coverage instrumentation). This machine, like CI, has only the stable toolchain, so
# RUSTC_BOOTSTRAP=1 lets stable rustc accept them. It is set for the fuzz build alone,
# which has its own workspace and target dir (fuzz/target): the main build is untouched.
#
# Corpora: fuzz/corpus/<target> holds the committed seeds and is only read. What libFuzzer
# adds goes to fuzz/target/corpus/<target>, kept between runs (cargo clean drops it).
# Crashes go to fuzz/artifacts/<target>/; reproduce and minimise one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin <target> fuzz/artifacts/<target>/<file>
# from the repository root, then keep it as a regression test in the crate at fault.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECS=60
CARGO_FUZZ_VERSION=0.13.2
usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        -t) SECS=${2:?-t needs a number of seconds}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "fuzz/run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ $SECS =~ ^[1-9][0-9]*$ ]] || { echo "fuzz/run.sh: -t wants whole seconds, got $SECS" >&2; exit 2; }

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "--- installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
# Nothing else to add: the sanitizer runtimes ship in the stable rust-std component.

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
known=$(cargo fuzz list)
for t in "${targets[@]}"; do
    grep -qx -- "$t" <<<"$known" || { echo "fuzz/run.sh: no target $t; there are: $(echo $known)" >&2; exit 2; }
done

echo "--- building ${#targets[@]} fuzz targets"
for t in "${targets[@]}"; do
    cargo fuzz build "$t"
done

logs=fuzz/target/logs
mkdir -p "$logs"
failed=0
summary=()
for t in "${targets[@]}"; do
    seeds=fuzz/corpus/$t
    work=fuzz/target/corpus/$t
    mkdir -p "$work" "fuzz/artifacts/$t"
    dict=()
    case "$t" in plugin_request|prev_result) dict=(-dict=fuzz/dict/cni.dict) ;; esac
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    echo "--- $t: ${SECS}s (log: $logs/$t.log)"
    rc=0
    # The grown corpus comes first: libFuzzer writes new inputs to the first directory.
    cargo fuzz run "$t" "$work" "$seeds" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${dict[@]}" >"$logs/$t.log" 2>&1 || rc=$?
    # A run that never started (a build error) has none of these: not an error here.
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -1)
    corp=$( (grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$logs/$t.log" || true) | tail -1 | cut -d' ' -f2)
    crashes=$(( $(find "fuzz/artifacts/$t" -type f | wc -l) - before ))
    status=ok
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=FAILED
        failed=1
        [ "$crashes" -gt 0 ] || crashes="? (exit $rc)"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|thread .* panicked|Failing input|artifact_prefix|error)' "$logs/$t.log" | head -20 || true
    fi
    summary+=("$(printf '%-16s %12s %8s %12s  %s  %s' "$t" "${runs:-?}" "${rate:-?}" "${corp:-?}" "$crashes" "$status")")
done

echo "--- fuzzing summary (${SECS}s per target; corpus: inputs/bytes in memory at the end)"
printf '%-16s %12s %8s %12s  %s\n' target executions exec/s corpus crashes
printf '%s\n' "${summary[@]}"
exit "$failed"
