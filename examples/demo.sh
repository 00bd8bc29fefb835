#!/usr/bin/env bash
# edgeway demo: a simulated multi-LAN cluster in network namespaces on this machine.
#
#   public network 203.0.113.0/24 ("the internet")
#   ├── R   .10   relay (edgeway-agent with relay.enabled)
#   ├── c1  .11   cloud node, pods 10.244.1.0/24 ─┐ cloud segment: a VPC with public
#   ├── c2  .12   cloud node, pods 10.244.2.0/24 ─┘ addresses, pods routed natively
#   ├── N1  .1    NAT (MASQUERADE) ── edge-1 LAN 198.51.100.0/24: e1 .11, pods 10.244.5.0/24
#   └── N2  .2    NAT (MASQUERADE --random-fully, i.e. symmetric)
#                                   ── edge-2 LAN 198.18.0.0/24:   e2 .11, pods 10.244.6.0/24
#
# No router knows any pod CIDR and the edge LANs' private ranges are not routed: everything
# across a LAN boundary goes through edgeway, directly, hole-punched through N1, or through
# the relay where N2's symmetric NAT defeats hole punching.
#
# Usage: ./examples/demo.sh [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1

if [ "$(id -u)" -ne 0 ]; then echo "run the demo as root: it creates network namespaces" >&2; exit 1; fi
need=()
for p in ip:iproute2 ping:iputils-ping iperf3:iperf3 curl:curl; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then echo "cargo is needed to build edgeway (https://rustup.rs)" >&2; exit 1; fi
echo "building release binaries..."
cargo build --release --locked -q -p edgeway-plugin -p edgeway-agent

export EW_BIN="$PWD/target/release" EW_PREFIX="ewdemo$$" EW_LOG=warn
source tests/e2e/lib.sh
if [ "$KEEP" = 1 ]; then
  # Leave everything up; print how to tear it down instead.
  trap - EXIT
fi

log "building 3 segments: cloud (c1, c2), edge-1 (e1 behind NAT), edge-2 (e2 behind symmetric NAT)"
for n in r c1 c2 n1 n2 e1 e2; do make_ns "$n"; done
make_lan inet "r 203.0.113.10/24" "c1 203.0.113.11/24" "c2 203.0.113.12/24" "n1 203.0.113.1/24" "n2 203.0.113.2/24"
link_ns n1 lan 198.51.100.1/24 e1 eth0 198.51.100.11/24
link_ns n2 lan 198.18.0.1/24 e2 eth0 198.18.0.11/24
in_ns e1 ip route add default via 198.51.100.1
in_ns e2 ip route add default via 198.18.0.1
for n in n1 n2; do
  in_ns "$n" sysctl -qw net.ipv4.ip_forward=1
  # Like a home or carrier router: nothing unsolicited gets in.
  in_ns "$n" iptables -A INPUT -i eth0 -m conntrack --ctstate NEW,INVALID -j DROP
  in_ns "$n" iptables -A FORWARD -i eth0 -m conntrack --ctstate NEW,INVALID -j DROP
done
in_ns n1 iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
in_ns n2 iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE --random-fully
# The cloud segment routes its pods natively, as flannel host-gw or Calico would.
in_ns c1 ip route add 10.244.2.0/24 via 203.0.113.12
in_ns c2 ip route add 10.244.1.0/24 via 203.0.113.11

write_secret cluster-secret
declare -A SUBNET=([c1]=10.244.1.0/24 [c2]=10.244.2.0/24 [e1]=10.244.5.0/24 [e2]=10.244.6.0/24)
declare -A SEGMENT=([c1]=cloud [c2]=cloud [e1]=edge-1 [e2]=edge-2)
declare -A LISTEN=([c1]=203.0.113.11 [c2]=203.0.113.12 [e1]=0.0.0.0 [e2]=0.0.0.0)
for n in c1 c2 e1 e2; do write_conflist "$n" "${SUBNET[$n]}"; done
mkdir -p "$EW_TMP/r"
printf '[relay]\nenabled = true\n' > "$EW_TMP/r/extra.toml"
agent_start r relay cluster-secret 203.0.113.10
RELAY="/ip4/203.0.113.10/udp/7333/quic-v1/p2p/$(peer_id r)"
for n in c1 c2 e1 e2; do
  mkdir -p "$EW_TMP/$n"
  printf 'relays = ["%s"]\n' "$RELAY" > "$EW_TMP/$n/extra.toml"
  agent_start "$n" "${SEGMENT[$n]}" cluster-secret "${LISTEN[$n]}" /ip4/203.0.113.10/tcp/7333
done

log "creating one pod per node through bridge + host-local + edgeway"
declare -A POD
for n in c1 c2 e1 e2; do POD[$n]=$(pod_add "$n" "pod-$n"); done
routes_ready() { [ "$(in_ns e1 ip route show table 7332 | wc -l)" -ge 3 ] && [ "$(in_ns c1 ip route show table 7332 | wc -l)" -ge 2 ]; }
wait_for "routes to converge" 20 routes_ready

path_of() { # path_of FROM TO: native (same segment) or the agent's path to the owner
  local from=$1 to=$2
  if [ "${SEGMENT[$from]}" = "${SEGMENT[$to]}" ]; then echo native; return; fi
  api "$from" /v1/status | python3 -c '
import json, sys
s = json.load(sys.stdin)
for p in s["peers"]:
    if p["nodeName"] == sys.argv[1]:
        print(p["path"] or "down"); break
else:
    print("unknown")' "$to"
}

echo
echo "Pod-to-pod connectivity (ping by pod IP; path; average RTT):"
printf '%-14s' "from \\ to"
for t in c1 c2 e1 e2; do printf '%-26s' "pod-$t ${POD[$t]}"; done
echo
# The first packet to a peer may have to wait for its connection; give each pair a few
# seconds (bounded) before measuring.
reachable() {
  local i
  for i in $(seq 1 20); do
    in_ns "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
  done
  return 1
}
FAILED=0
for f in c1 c2 e1 e2; do
  printf '%-14s' "pod-$f"
  for t in c1 c2 e1 e2; do
    if [ "$f" = "$t" ]; then printf '%-26s' "-"; continue; fi
    rtt=""
    if reachable "$f-pod-$f" "${POD[$t]}"; then
      rtt=$(in_ns "$f-pod-$f" ping -c 3 -i 0.2 -W 2 "${POD[$t]}" 2>/dev/null | awk -F/ '/rtt/ {print $5}') || true
    fi
    if [ -n "$rtt" ]; then
      printf '%-26s' "ok $(path_of "$f" "$t") ${rtt}ms"
    else
      printf '%-26s' "FAIL"
      FAILED=1
    fi
  done
  echo
done

echo
echo "Transfer speed, pod-c1 -> pod-e1 across LANs, $(path_of c1 e1) path (iperf3, 3 s):"
in_ns e1-pod-e1 iperf3 -s -1 -D >/dev/null 2>&1
sleep 0.5
in_ns c1-pod-c1 iperf3 -c "${POD[e1]}" -t 3 -f m 2>/dev/null | awk '/receiver/ {print "  " $7, $8}' ||
  echo "  iperf3 failed"

echo
echo "Status of e1 (edgeway-agent status):"
"$EW_BIN/edgeway-agent" status --socket "$EW_TMP/e1/agent.sock"

if [ "$FAILED" = 1 ]; then
  echo "some pods could not reach each other; agent logs are in $EW_TMP" >&2
  [ "$KEEP" = 1 ] || exit 1
fi

if [ "$KEEP" = 1 ]; then
  echo
  echo "The cluster is still up (namespaces $EW_PREFIX-*). Explore, e.g.:"
  echo "  ip netns exec $EW_PREFIX-c1 ip route show table 7332"
  echo "  $EW_BIN/edgeway-agent status --socket $EW_TMP/e1/agent.sock"
  echo "Tear it down with:"
  echo "  kill ${EW_PIDS[*]}; for n in \$(ip netns list | awk '/^$EW_PREFIX-/ {print \$1}'); do ip netns del \$n; done; rm -rf $EW_TMP"
fi
