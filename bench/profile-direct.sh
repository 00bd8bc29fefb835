#!/usr/bin/env bash
# Profile the agent on the direct path: two nodes in different segments on one switch, a
# 12 s single-stream iperf3 between their pods, and `perf record -g` on one agent for 8 s
# of it. Prints iperf3's figure and perf's top symbols.
#
# Usage (as root, from the repository root; release binaries in target/release unless
# EW_BIN is set): bash bench/profile-direct.sh [sender|receiver]
# Namespaces ew<pid>-*, removed on exit (tests/e2e/lib.sh); nothing in the root namespace.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export EW_BIN=${EW_BIN:-$ROOT/target/release}
SIDE=${1:-sender}
case "$SIDE" in sender) NODE=d1 ;; receiver) NODE=d2 ;; *) echo "usage: $0 [sender|receiver]" >&2; exit 2 ;; esac
command -v perf >/dev/null || { echo "profile-direct: needs perf (apt install linux-perf)" >&2; exit 1; }
source "$ROOT/tests/e2e/lib.sh"

for n in d1 d2; do make_ns "$n"; done
make_lan sw "d1 203.0.113.21/24" "d2 203.0.113.22/24"
write_secret secret
EW_LOG=warn
write_conflist d1 10.244.1.0/24
write_conflist d2 10.244.2.0/24
agent_start d1 dc-1 secret 203.0.113.21
agent_start d2 dc-2 secret 203.0.113.22 "/ip4/203.0.113.21/tcp/7333/p2p/$(peer_id d1)"
P2=$(pod_add d2 pe)
pod_add d1 pe > /dev/null
wait_for "d1 to route to $P2" 30 has_route d1 "$P2"
wait_for "a first ping" 20 in_ns d1-pe ping -c1 -W1 "$P2"
in_ns d2-pe iperf3 -s -1 -D
sleep 0.5
in_ns d1-pe iperf3 -c "$P2" -t 12 -f g > "$EW_TMP/iperf.out" &
IPERF=$!
sleep 2
perf record -F 999 -g -p "$(agent_pid "$NODE")" -o "$EW_TMP/perf.data" -- sleep 8 2> /dev/null
wait "$IPERF"
grep receiver "$EW_TMP/iperf.out"
perf report -i "$EW_TMP/perf.data" --no-children --sort dso,symbol --stdio 2> /dev/null |
  grep -E '^ +[0-9]' | head -25
