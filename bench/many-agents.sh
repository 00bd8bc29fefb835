#!/usr/bin/env bash
# Benchmark: as many agents as this machine holds in one simulated cluster (default 50 release
# agents on one switch, 5 segments, 2 pods each through bridge + host-local + edgeway). Prints
# how long the cluster takes to converge (every agent knows every other; every agent routes
# exactly the other segments' pods; every agent is connected to every other; one new pod
# reaches every other segment), each agent's memory (VmRSS, VmHWM: min/median/max) and CPU,
# and the CPU the settled cluster uses. It runs tests/e2e/many-agents.sh with these settings,
# so it fails if the cluster does not converge within the bound.
#
# Everything lives in namespaces with a per-run prefix, removed on exit (Ctrl-C included);
# nothing touches the root namespace. Needs root. 50 agents load a 2-vCPU machine: run it
# when nothing else heavy runs, and not in a loop.
#
# Usage: bash bench/many-agents.sh [--no-build] [-n AGENTS] [-s SEGMENTS] [-p PODS_PER_NODE]
#                                  [--bound SECS] [--idle SECS]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=1
AGENTS=50
SEGMENTS=5
PODS=2
BOUND=120
IDLE=10
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0; shift ;;
    -n) AGENTS=${2:?}; shift 2 ;;
    -s) SEGMENTS=${2:?}; shift 2 ;;
    -p) PODS=${2:?}; shift 2 ;;
    --bound) BOUND=${2:?}; shift 2 ;;
    --idle) IDLE=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "many-agents: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "many-agents: must run as root (network namespaces)" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
  echo "many-agents: building release binaries" >&2
  (cd "$ROOT" && cargo build --release --locked -p edgeway-plugin -p edgeway-agent)
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
for b in edgeway edgeway-agent; do
  [ -x "$BIN/$b" ] || { echo "many-agents: $BIN/$b missing (build, or drop --no-build)" >&2; exit 1; }
done

# The agents log at warn: 50 agents at info write a lot, and the log is not the point here.
EW_BIN=$BIN EW_AGENTS=$AGENTS EW_SEGMENTS=$SEGMENTS EW_PODS_PER_NODE=$PODS \
  EW_BOUND_SECS=$BOUND EW_IDLE_SECS=$IDLE EW_LOG=${EW_LOG:-warn} EW_PREFIX=ewma$$ \
  bash "$ROOT/tests/e2e/many-agents.sh"
