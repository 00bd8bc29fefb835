#!/usr/bin/env bash
# Benchmark: 200 pods ADDed then DELed on one node through the real bridge + host-local +
# edgeway + portmap chain (agent running), at several concurrency levels, with the release
# binaries. It runs the integration test `two_hundred_parallel_adds_then_dels`
# (tests/tests/parallel.rs), which also checks that nothing is lost or leaked, and prints its
# latency lines: p50/p99/max of edgeway's own call and of the whole chain, per wave.
#
# The agent resyncs at its default interval (10 s; EW_LOAD_RESYNC_SECS overrides it; the CI
# test itself uses 1 s, as a stress, which made no measurable difference to these figures).
# Plugins are spawned straight into the node namespace (setns(2) between fork and exec), so
# the timings hold no `ip netns exec`. Everything runs in namespaces with a per-run prefix,
# removed on exit. Needs root. Figures from a shared 2-vCPU machine are noisy.
#
# Usage: bash bench/pod-load.sh [--no-build] [-c "1 8 32 200"] [-r REPEATS]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=1
LEVELS="1 8 32 200"
REPEATS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0; shift ;;
    -c) LEVELS=${2:?-c needs a list}; shift 2 ;;
    -r) REPEATS=${2:?-r needs a number}; shift 2 ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pod-load: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $REPEATS =~ ^[0-9]+$ ]] && [ "$REPEATS" -ge 1 ] && [ "$REPEATS" -le 20 ] \
  || { echo "pod-load: -r must be 1..20" >&2; exit 2; }
for c in $LEVELS; do
  [[ $c =~ ^[0-9]+$ ]] && [ "$c" -ge 1 ] && [ "$c" -le 200 ] \
    || { echo "pod-load: concurrency must be 1..200, not $c" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "pod-load: must run as root (network namespaces)" >&2; exit 1; }

cd "$ROOT"
if [ "$BUILD" = 1 ]; then
  echo "pod-load: building release binaries and the test" >&2
  cargo build --release --locked -p edgeway-plugin -p edgeway-agent
  cargo test --locked -p edgeway-integration-tests --test parallel --no-run
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
for b in edgeway edgeway-agent; do
  [ -x "$BIN/$b" ] || { echo "pod-load: $BIN/$b missing (build, or drop --no-build)" >&2; exit 1; }
done

OUT=$(mktemp "/tmp/ewpodload$$.XXXX")
trap 'rm -f "$OUT"' EXIT
for c in $LEVELS; do
  for ((r = 1; r <= REPEATS; r++)); do
    echo "pod-load: concurrency $c, run $r/$REPEATS" >&2
    # The test's own Drop guards remove its namespaces, failure included.
    EDGEWAY_BIN_DIR=$BIN EW_LOAD_CONCURRENCY=$c EW_LOAD_RESYNC_SECS=${EW_LOAD_RESYNC_SECS:-10} timeout 300 \
      cargo test --locked -q -p edgeway-integration-tests --test parallel -- \
      --nocapture --exact two_hundred_parallel_adds_then_dels 2>&1 | tee -a "$OUT" | grep '^LOAD' >&2 \
      || true
    grep -q "^LOAD DEL pods=200 concurrency=$c " "$OUT" \
      || { echo "pod-load: the run at concurrency $c failed:" >&2; tail -n 30 "$OUT" >&2; exit 1; }
  done
done

echo
echo "200 pods on one node, release binaries, $(nproc) vCPUs, agent resync ${EW_LOAD_RESYNC_SECS:-10} s; ms;" \
  "edgeway = its own call, chain = bridge+host-local, edgeway, portmap"
printf '%-4s %5s | %9s %9s %9s | %9s %9s %9s | %8s\n' \
  wave conc edgew_p50 edgew_p99 edgew_max chain_p50 chain_p99 chain_max pods/s
grep '^LOAD' "$OUT" | python3 -c '
import sys
for line in sys.stdin:
    f = line.split()
    kv = dict(x.split("=", 1) for x in f[2:])
    print("%-4s %5s | %9s %9s %9s | %9s %9s %9s | %8s" % (f[1], kv["concurrency"],
        kv["edgeway_p50_ms"], kv["edgeway_p99_ms"], kv["edgeway_max_ms"],
        kv["chain_p50_ms"], kv["chain_p99_ms"], kv["chain_max_ms"], kv["per_s"]))'
