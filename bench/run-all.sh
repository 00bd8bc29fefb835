#!/usr/bin/env bash
# All benchmarks, one after the other (the `make bench` of this repository): CNI ADD/DEL
# latency against sbr (bench/add-latency.sh), then the network benchmark (bench/net-bench.sh:
# native vs edgeway direct and relayed vs Nebula). Each rewrites only its own section of
# docs/benchmarks.md. Needs root; builds the release binaries once.
#
# Usage: bash bench/run-all.sh [--quick] [--no-build] [--no-doc]
#   --quick     shorter runs (add-latency -n 50; net-bench -n 3 -t 3), for a smoke test
#   --no-build  use the existing release binaries in target/release
#   --no-doc    print the tables, but leave docs/ alone
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=1
COMMON=()
ADD_ARGS=()
NET_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) ADD_ARGS+=(-n 50); NET_ARGS+=(-n 3 -t 3); shift ;;
    --no-build) BUILD=0; shift ;;
    --no-doc) COMMON+=(--no-doc); shift ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-all: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "run-all: must run as root (network namespaces)" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
  echo "run-all: building release binaries" >&2
  (cd "$ROOT" && cargo build --release --locked -p edgeway-plugin -p edgeway-agent)
fi
echo "run-all: ADD/DEL latency (bench/add-latency.sh)" >&2
bash "$ROOT/bench/add-latency.sh" --no-build "${COMMON[@]}" "${ADD_ARGS[@]}"
echo "run-all: network paths (bench/net-bench.sh)" >&2
bash "$ROOT/bench/net-bench.sh" --no-build "${COMMON[@]}" "${NET_ARGS[@]}"
