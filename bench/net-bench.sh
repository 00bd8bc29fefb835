#!/usr/bin/env bash
# Network benchmark: pod-to-pod throughput, RTT and agent CPU/memory, side by side in ONE
# run and one topology, for
#   1. native        a routed veth path (bridge pods, host-gw style routes): the limit;
#   2. edgeway direct two nodes in different segments that reach each other directly;
#   3. edgeway relayed two nodes behind NAT routers (one MASQUERADE --random-fully), through
#                    the relay agent in the public namespace;
#   4. Nebula direct the same node pair as 2, lighthouse in the public namespace;
#   5. Nebula relayed the same NAT'd pair as 3, the lighthouse also serving as Nebula relay.
# Every figure is pod to pod: Nebula carries the pods' subnets through `unsafe_routes`.
#
# Everything lives in network namespaces named ewnb<pid>-* that this script creates and
# removes on exit (Ctrl-C and failures included, via tests/e2e/lib.sh's trap); nothing is
# added to the root namespace. Nebula's CA and certificates are generated into the run's
# temp dir and deleted with it. Needs root.
#
# Usage: bash bench/net-bench.sh [options]
#   -n N              iperf3 runs per path and stream count; the median is reported (default 5)
#   -t SECS           length of each iperf3 run (default 5)
#   -P STREAMS        streams for the multi-stream figure (default 4)
#   --omit SECS       iperf3 -O: leading seconds of each run not counted (default 0)
#   --pings N         pings per path for the RTT figures (default 200)
#   --ping-interval S seconds between pings (default 0.01)
#   --idle SECS       window for the idle CPU figure (default 10)
#   --nat-a MODE      NAT in front of e1: symmetric (default, so the path stays relayed;
#                     agents retry hole punching) or port-preserving;
#                     the NAT in front of e2 is always symmetric (--random-fully)
#   --bin DIR         take edgeway and edgeway-agent from DIR (implies --no-build)
#   --no-build        use the existing release binaries in target/release
#   --no-doc          print the tables, but leave docs/ alone
#   --save FILE       also keep the raw results (JSON); re-render them later with
#                     python3 bench/net_bench.py render --results FILE --root . [--doc ... --svg ...]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=5
DURATION=5
STREAMS=4
OMIT=0
PINGS=200
PING_INTERVAL=0.01
IDLE=10
NAT_A=symmetric
BUILD=1
WRITE_DOC=1
BIN=
SAVE=

usage() { sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "net-bench: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    -n) RUNS=${2:?-n needs a value}; shift 2 ;;
    -t) DURATION=${2:?-t needs a value}; shift 2 ;;
    -P) STREAMS=${2:?-P needs a value}; shift 2 ;;
    --omit) OMIT=${2:?}; shift 2 ;;
    --pings) PINGS=${2:?}; shift 2 ;;
    --ping-interval) PING_INTERVAL=${2:?}; shift 2 ;;
    --idle) IDLE=${2:?}; shift 2 ;;
    --nat-a) NAT_A=${2:?}; shift 2 ;;
    --bin) BIN=$(cd "${2:?}" && pwd); BUILD=0; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-doc) WRITE_DOC=0; shift ;;
    --save) SAVE=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "net-bench: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$RUNS" "$DURATION" "$STREAMS" "$OMIT" "$PINGS" "$IDLE"; do
  [[ $v =~ ^[0-9]+$ ]] || die "not a whole number: $v"
done
[[ $PING_INTERVAL =~ ^[0-9]*\.?[0-9]+$ ]] || die "not a number: $PING_INTERVAL"
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 100 ] || die "-n must be 1..100"
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 300 ] || die "-t must be 1..300"
[ "$STREAMS" -ge 2 ] && [ "$STREAMS" -le 64 ] || die "-P must be 2..64"
[ "$PINGS" -ge 10 ] && [ "$PINGS" -le 10000 ] || die "--pings must be 10..10000"
[ "$IDLE" -ge 1 ] && [ "$IDLE" -le 600 ] || die "--idle must be 1..600"
case "$NAT_A" in port-preserving|symmetric) ;; *) die "--nat-a: port-preserving or symmetric" ;; esac
[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces)"

need=()
for p in ip:iproute2 ping:iputils-ping iperf3:iperf3 curl:curl iptables:iptables \
         nebula:nebula nebula-cert:nebula python3:python3; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || need+=(containernetworking-plugins)
if [ "${#need[@]}" -gt 0 ]; then
  echo "net-bench: installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

if [ "$BUILD" = 1 ]; then
  echo "net-bench: building release binaries" >&2
  (cd "$ROOT" && cargo build --release --locked -p edgeway-plugin -p edgeway-agent)
fi
[ -n "$BIN" ] || BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
for b in edgeway edgeway-agent; do
  [ -x "$BIN/$b" ] || die "$BIN/$b missing (build, or drop --no-build)"
done

export EW_BIN="$BIN" EW_PREFIX="ewnb$$" EW_LOG=${EW_LOG:-warn}
# lib.sh: namespaces "$EW_PREFIX-*", the temp dir, the cleanup trap, agents and pods.
# shellcheck source=../tests/e2e/lib.sh
source "$ROOT/tests/e2e/lib.sh"

# ------------------------------------------------------------------------- topology
#
#                     public switch "sw", 203.0.113.0/24
#   ┌───────────────┬───────────────┬───────────────┬────────────────────┐
#   pub .10         d1 .21          d2 .22          na .1 (NAT)          nb .2 (NAT, --random-fully)
#   relay agent,    agent, nebula   agent, nebula   │ 198.51.100.0/24    │ 198.18.0.0/24
#   Nebula LH+relay                                 e1 .11               e2 .11
#                                                   agent, nebula        agent, nebula
# Pods (bridge + host-local; the edgeway pods also chain edgeway):
#   d1: pe 10.244.1.0/24 (edgeway)  pn 10.244.11.0/24 (native)  pb 10.244.21.0/24 (Nebula)
#   d2: pe 10.244.2.0/24            pn 10.244.12.0/24           pb 10.244.22.0/24
#   e1: pe 10.244.3.0/24                                        pb 10.244.23.0/24
#   e2: pe 10.244.4.0/24                                        pb 10.244.24.0/24
# Nebula overlay: 10.244.200.0/24. Each pod kind has its own bridge, so the paths never
# share a rule or a route: edgeway's `from <pod> lookup 7332` rules exist only for pe pods,
# the native routes only cover pn subnets, Nebula's unsafe routes only pb subnets.

log "building the topology (NAT at e1: $NAT_A; at e2: symmetric)"
for n in pub d1 d2 na nb e1 e2; do make_ns "$n"; done
make_lan sw "pub 203.0.113.10/24" "d1 203.0.113.21/24" "d2 203.0.113.22/24" \
  "na 203.0.113.1/24" "nb 203.0.113.2/24"
link_ns na lan 198.51.100.1/24 e1 eth0 198.51.100.11/24
link_ns nb lan 198.18.0.1/24 e2 eth0 198.18.0.11/24
in_ns e1 ip route add default via 198.51.100.1
in_ns e2 ip route add default via 198.18.0.1
for n in na nb d1 d2 e1 e2; do in_ns "$n" sysctl -qw net.ipv4.ip_forward=1; done
if [ "$NAT_A" = symmetric ]; then
  in_ns na iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE --random-fully
else
  in_ns na iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
fi
in_ns nb iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE --random-fully

# plain_conflist NODE NAME SUBNET BRIDGE: bridge + host-local only (no edgeway).
plain_conflist() {
  local node=$1 name=$2 subnet=$3 br=$4
  mkdir -p "$EW_TMP/$node"
  cat > "$EW_TMP/$node/$name.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bench-$name", "plugins": [
 {"type": "bridge", "bridge": "$br", "isGateway": true, "ipMasq": false, "hairpinMode": true,
  "ipam": {"type": "host-local", "dataDir": "$EW_TMP/$node/ipam-$name",
           "ranges": [[{"subnet": "$subnet"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}
JSON
}

# ------------------------------------------------------------------------- edgeway
log "starting edgeway agents (relay in pub; d1, d2 direct; e1, e2 behind NAT)"
write_secret secret
mkdir -p "$EW_TMP/pub" "$EW_TMP/e1" "$EW_TMP/e2"
printf '[relay]\nenabled = true\n' > "$EW_TMP/pub/extra.toml"
agent_start pub public secret 203.0.113.10
PUB_ID=$(peer_id pub)
RELAY_QUIC="/ip4/203.0.113.10/udp/7333/quic-v1/p2p/$PUB_ID"
BOOT=/ip4/203.0.113.10/tcp/7333
for n in e1 e2; do printf 'relays = ["%s"]\n' "$RELAY_QUIC" > "$EW_TMP/$n/extra.toml"; done
write_conflist d1 10.244.1.0/24
write_conflist d2 10.244.2.0/24
write_conflist e1 10.244.3.0/24
write_conflist e2 10.244.4.0/24
agent_start d1 dc-1 secret 203.0.113.21 "$BOOT"
agent_start d2 dc-2 secret 203.0.113.22 "$BOOT"
# Each agent listens on its LAN address only: on 0.0.0.0 it would also offer its Nebula
# overlay address, and e1 would reach e2 "directly" through Nebula's tunnel.
agent_start e1 edge-a secret 198.51.100.11 "$BOOT"
agent_start e2 edge-b secret 198.18.0.11 "$BOOT"

log "creating pods through the real bridge + host-local (+ edgeway) plugins"
D1_PE=$(pod_add d1 pe)
D2_PE=$(pod_add d2 pe)
E1_PE=$(pod_add e1 pe)
E2_PE=$(pod_add e2 pe)
plain_conflist d1 native 10.244.11.0/24 brn
plain_conflist d2 native 10.244.12.0/24 brn
D1_PN=$(pod_add d1 pn native)
D2_PN=$(pod_add d2 pn native)
in_ns d1 ip route add 10.244.12.0/24 via 203.0.113.22
in_ns d2 ip route add 10.244.11.0/24 via 203.0.113.21
plain_conflist d1 nebula 10.244.21.0/24 brb
plain_conflist d2 nebula 10.244.22.0/24 brb
plain_conflist e1 nebula 10.244.23.0/24 brb
plain_conflist e2 nebula 10.244.24.0/24 brb
D1_PB=$(pod_add d1 pb nebula)
D2_PB=$(pod_add d2 pb nebula)
E1_PB=$(pod_add e1 pb nebula)
E2_PB=$(pod_add e2 pb nebula)

wait_for "d1 to route to $D2_PE" 30 has_route d1 "$D2_PE"
wait_for "d2 to route to $D1_PE" 30 has_route d2 "$D1_PE"
wait_for "e1 to route to $E2_PE" 30 has_route e1 "$E2_PE"
wait_for "e2 to route to $E1_PE" 30 has_route e2 "$E1_PE"

# ------------------------------------------------------------------------- Nebula
log "starting Nebula (throwaway CA in the run's temp dir; lighthouse and relay in pub)"
NEB=$EW_TMP/nebula
mkdir -p "$NEB"
chmod 700 "$NEB"
nebula-cert ca -name "edgeway-bench-$EW_PREFIX" -duration 12h \
  -out-crt "$NEB/ca.crt" -out-key "$NEB/ca.key" >/dev/null
# neb_node NODE OVERLAY_IP SUBNET PEER_OVERLAY PEER_SUBNET RELAYS
neb_node() {
  local node=$1 ip=$2 subnet=$3 peer=$4 peer_subnet=$5 relays=$6 am_lh=false am_relay=false
  local sub_arg=() lh_hosts='["10.244.200.1"]' routes="[]"
  [ -n "$subnet" ] && sub_arg=(-subnets "$subnet")
  if [ "$node" = pub ]; then am_lh=true; am_relay=true; lh_hosts="[]"; fi
  [ -n "$peer_subnet" ] && routes="[{route: \"$peer_subnet\", via: \"$peer\"}]"
  nebula-cert sign -ca-crt "$NEB/ca.crt" -ca-key "$NEB/ca.key" -name "$node" -ip "$ip/24" \
    "${sub_arg[@]}" -out-crt "$NEB/$node.crt" -out-key "$NEB/$node.key"
  cat > "$NEB/$node.yml" <<YAML
pki:
  ca: $NEB/ca.crt
  cert: $NEB/$node.crt
  key: $NEB/$node.key
static_host_map:
  "10.244.200.1": ["203.0.113.10:4242"]
lighthouse:
  am_lighthouse: $am_lh
  interval: 60
  hosts: $lh_hosts
  local_allow_list:
    interfaces:
      eth0: true
listen:
  host: 0.0.0.0
  port: 4242
punchy:
  punch: true
relay:
  am_relay: $am_relay
  use_relays: true
  relays: $relays
tun:
  disabled: false
  dev: nebula1
  unsafe_routes: $routes
logging:
  level: warning
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
YAML
  ip netns exec "$(ns "$node")" nebula -config "$NEB/$node.yml" >> "$EW_TMP/$node-nebula.log" 2>&1 &
  EW_PIDS+=("$!")
  eval "NEB_PID_$node=$!"
}
neb_node pub 10.244.200.1 "" "" "" "[]"
neb_node d1 10.244.200.11 10.244.21.0/24 10.244.200.12 10.244.22.0/24 "[]"
neb_node d2 10.244.200.12 10.244.22.0/24 10.244.200.11 10.244.21.0/24 "[]"
neb_node e1 10.244.200.13 10.244.23.0/24 10.244.200.14 10.244.24.0/24 '["10.244.200.1"]'
neb_node e2 10.244.200.14 10.244.24.0/24 10.244.200.13 10.244.23.0/24 '["10.244.200.1"]'
neb_up() { in_ns "$1" ip link show nebula1; }
for n in pub d1 d2 e1 e2; do wait_for "nebula in $n" 15 neb_up "$n"; done
# The unsafe routes are how pod traffic enters Nebula; without them the row would be empty.
neb_route() { in_ns "$1" ip route show "$2" | grep nebula1 >/dev/null; }
for pair in d1:10.244.22.0/24 d2:10.244.21.0/24 e1:10.244.24.0/24 e2:10.244.23.0/24; do
  wait_for "nebula's route to ${pair#*:} in ${pair%%:*}" 15 neb_route "${pair%%:*}" "${pair#*:}"
done

# ------------------------------------------------------------------------- measure
SPEC=$EW_TMP/spec.json
cat > "$SPEC" <<JSON
{
 "paths": [
  {"key": "native", "label": "native (routed veth)", "kind": "native",
   "client_ns": "$(ns d1-pn)", "server_ns": "$(ns d2-pn)", "server_ip": "$D2_PN", "procs": {}},
  {"key": "edgeway-direct", "label": "edgeway, direct", "kind": "edgeway",
   "client_ns": "$(ns d1-pe)", "server_ns": "$(ns d2-pe)", "server_ip": "$D2_PE",
   "procs": {"agent d1 (sender)": $(agent_pid d1), "agent d2 (receiver)": $(agent_pid d2)},
   "status": {"socket": "$EW_TMP/d1/agent.sock", "peer": "d2"}},
  {"key": "edgeway-relayed", "label": "edgeway, relayed (NAT)", "kind": "edgeway",
   "client_ns": "$(ns e1-pe)", "server_ns": "$(ns e2-pe)", "server_ip": "$E2_PE",
   "procs": {"agent e1 (sender)": $(agent_pid e1), "agent e2 (receiver)": $(agent_pid e2),
             "agent pub (relay)": $(agent_pid pub)},
   "status": {"socket": "$EW_TMP/e1/agent.sock", "peer": "e2"}},
  {"key": "nebula-direct", "label": "Nebula, direct", "kind": "nebula",
   "client_ns": "$(ns d1-pb)", "server_ns": "$(ns d2-pb)", "server_ip": "$D2_PB",
   "procs": {"nebula d1 (sender)": $NEB_PID_d1, "nebula d2 (receiver)": $NEB_PID_d2}},
  {"key": "nebula-relayed", "label": "Nebula, relayed (NAT)", "kind": "nebula",
   "client_ns": "$(ns e1-pb)", "server_ns": "$(ns e2-pb)", "server_ip": "$E2_PB",
   "procs": {"nebula e1 (sender)": $NEB_PID_e1, "nebula e2 (receiver)": $NEB_PID_e2,
             "nebula pub (lighthouse, relay)": $NEB_PID_pub}}
 ],
 "idle_procs": {
  "agent pub (relay)": $(agent_pid pub), "agent d1": $(agent_pid d1), "agent d2": $(agent_pid d2),
  "agent e1": $(agent_pid e1), "agent e2": $(agent_pid e2),
  "nebula pub (lighthouse)": $NEB_PID_pub, "nebula d1": $NEB_PID_d1, "nebula d2": $NEB_PID_d2,
  "nebula e1": $NEB_PID_e1, "nebula e2": $NEB_PID_e2
 },
 "relay_host": {"ns": "$(ns pub)", "dev": "eth0"},
 "config": {"runs": $RUNS, "duration": $DURATION, "streams": $STREAMS, "omit": $OMIT,
            "pings": $PINGS, "ping_interval": $PING_INTERVAL, "idle": $IDLE,
            "nat_a": "$NAT_A", "agent_log": "$EW_LOG"},
 "bin": "$BIN"
}
JSON

log "measuring: $RUNS x ${DURATION}s per path, 1 and $STREAMS streams; $PINGS pings; ${IDLE}s idle"
# In the background and waited for, so that Ctrl-C reaches lib.sh's trap at once.
"$PY" "$ROOT/bench/net_bench.py" run --spec "$SPEC" --out "$EW_TMP/results.json" &
EW_PIDS+=("$!")
wait "$!" || fail "the measurement driver failed"
for n in pub d1 d2 e1 e2; do
  kill -0 "$(agent_pid "$n")" 2>/dev/null || fail "the agent on $n died during the run"
done

if [ -n "$SAVE" ]; then cp "$EW_TMP/results.json" "$SAVE"; log "raw results saved to $SAVE"; fi
DOC_ARGS=()
[ "$WRITE_DOC" = 1 ] && DOC_ARGS=(--doc "$ROOT/docs/benchmarks.md" --svg "$ROOT/docs/benchmarks-throughput.svg")
"$PY" "$ROOT/bench/net_bench.py" render --results "$EW_TMP/results.json" --root "$ROOT" "${DOC_ARGS[@]}"
log "done"
