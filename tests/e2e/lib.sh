#!/usr/bin/env bash
# Shared helpers for edgeway's end-to-end scripts. Everything lives in network namespaces
# named "$EW_PREFIX-*" that this run creates; cleanup() removes them and ends only the
# processes this run started, by PID.
set -euo pipefail

EW_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EW_PREFIX=${EW_PREFIX:-ew$$}
EW_TMP=$(mktemp -d "/tmp/$EW_PREFIX.XXXX")
EW_BIN=${EW_BIN:-$EW_ROOT/target/debug}
EW_CNI_DIR="$EW_TMP/cni-bin"
EW_PIDS=()
EW_FAILED=0

mkdir -p "$EW_CNI_DIR"
cp "$EW_BIN/edgeway" "$EW_CNI_DIR/edgeway"
for p in /usr/lib/cni/*; do ln -sf "$p" "$EW_CNI_DIR/"; done

log() { printf '%s [%s] %s\n' "$(date +%T)" "$EW_PREFIX" "$*" >&2; }
fail() { log "FAIL: $*"; EW_FAILED=1; exit 1; }

cleanup() {
  local rc=$?
  if [ -n "${EW_KEEP_ON_FAIL:-}" ] && [ "$rc" -ne 0 ]; then
    log "keeping $EW_PREFIX-* and $EW_TMP for debugging (agents: ${EW_PIDS[*]})"
    exit "$rc"
  fi
  for pid in "${EW_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${EW_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$EW_PREFIX-" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ -d "$EW_TMP" ]; then
    for f in "$EW_TMP"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }; done >&2
  fi
  rm -rf "$EW_TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ns() { echo "$EW_PREFIX-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

# make_ns NAME: a namespace with loopback up.
make_ns() {
  ip netns add "$(ns "$1")"
  ip -n "$(ns "$1")" link set lo up
}

# link_ns A IFA ADDR_A B IFB ADDR_B: a veth pair between two namespaces.
link_ns() {
  local a=$1 ifa=$2 addra=$3 b=$4 ifb=$5 addrb=$6
  ip link add "$ifa-$$" netns "$(ns "$a")" type veth peer name "$ifb-$$" netns "$(ns "$b")"
  ip -n "$(ns "$a")" link set "$ifa-$$" name "$ifa"
  ip -n "$(ns "$b")" link set "$ifb-$$" name "$ifb"
  ip -n "$(ns "$a")" addr add "$addra" dev "$ifa"
  ip -n "$(ns "$b")" addr add "$addrb" dev "$ifb"
  ip -n "$(ns "$a")" link set "$ifa" up
  ip -n "$(ns "$b")" link set "$ifb" up
}

# make_lan SWITCH "NODE ADDR/PREFIX"...: a bridge in namespace SWITCH with each node's eth0 on it.
make_lan() {
  local sw=$1; shift
  make_ns "$sw"
  in_ns "$sw" ip link add br0 type bridge
  in_ns "$sw" ip link set br0 up
  for pair in "$@"; do
    set -- $pair
    link_ns "$1" eth0 "$2" "$sw" "p-$1" "0.0.0.0/32"
    in_ns "$sw" ip addr flush dev "p-$1"
    in_ns "$sw" ip link set "p-$1" master br0
  done
}

# write_conflist NODE SUBNET [SUBNET6]: bridge + host-local + edgeway, from the example
# conflist; with SUBNET6 the pods are dual-stack.
write_conflist() {
  local node=$1 subnet=$2 subnet6=${3:-}
  mkdir -p "$EW_TMP/$node"
  python3 - "$EW_ROOT/conflist/10-bridge-host-local.conflist" "$EW_TMP/$node" "$subnet" "br-$node" "$subnet6" <<'PY'
import json, sys
src, d, subnet, br, subnet6 = sys.argv[1:]
c = json.load(open(src))
c["plugins"] = [p for p in c["plugins"] if p["type"] in ("bridge", "edgeway")]
b = c["plugins"][0]
b["bridge"] = br[:15]
b["ipam"]["ranges"] = [[{"subnet": subnet}]]
if subnet6:
    b["ipam"]["ranges"].append([{"subnet": subnet6}])
    b["ipam"]["routes"].append({"dst": "::/0"})
b["ipam"]["dataDir"] = d + "/ipam"
e = c["plugins"][1]
e["stateDir"] = d + "/state"
e["agentSocket"] = d + "/agent.sock"
json.dump(c, open(d + "/net.conflist", "w"), indent=1)
PY
}

# cni_exec NODE COMMAND CONTAINER NETNS CONF -> stdout of one plugin
_cni_plugin() {
  local node=$1 cmd=$2 cid=$3 netns=$4 conf=$5 type
  type=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["type"])' "$conf")
  printf '%s' "$conf" | CNI_COMMAND=$cmd CNI_CONTAINERID=$cid CNI_NETNS=$netns CNI_IFNAME=eth0 \
    CNI_PATH=$EW_CNI_DIR CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$cid" \
    ip netns exec "$(ns "$node")" "$EW_CNI_DIR/$type"
}

# _plugin_conf CONFLIST INDEX PREV -> the config libcni would hand plugin INDEX
_plugin_conf() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); i = int(sys.argv[2]); prev = sys.argv[3]
p = dict(c["plugins"][i]); p["name"] = c["name"]; p["cniVersion"] = c["cniVersion"]
if prev:
    p["prevResult"] = json.loads(prev)
print(json.dumps(p))
PY
}

# pod_add NODE POD [LIST]: creates netns "$NODE-$POD" and runs the ADD of the node's
# LIST.conflist (default net); prints the IP.
pod_add() {
  local node=$1 pod=$2 list="$EW_TMP/$1/${3:-net}.conflist" prev="" n i conf
  make_ns "$node-$pod"
  n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["plugins"]))' "$list")
  for ((i = 0; i < n; i++)); do
    conf=$(_plugin_conf "$list" "$i" "$prev")
    prev=$(_cni_plugin "$node" ADD "$pod" "/run/netns/$(ns "$node-$pod")" "$conf") || fail "ADD $pod plugin $i: $prev"
  done
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ips"][0]["address"].split("/")[0])' "$prev"
}

# pod_ip6 NODE POD: the pod's global IPv6 address.
pod_ip6() {
  ip -n "$(ns "$1-$2")" -6 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1 | head -n1
}

pod_del() {
  local node=$1 pod=$2 list="$EW_TMP/$1/net.conflist" n i conf
  n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["plugins"]))' "$list")
  for ((i = n - 1; i >= 0; i--)); do
    conf=$(_plugin_conf "$list" "$i" "")
    _cni_plugin "$node" DEL "$pod" "/run/netns/$(ns "$node-$pod")" "$conf" >/dev/null || fail "DEL $pod plugin $i"
  done
  ip netns del "$(ns "$node-$pod")"
}

# two_lans: node a1 (lan-a 198.51.100.0/24, pods 10.244.1.0/24) and node b1 (lan-b
# 203.0.113.0/24, pods 10.244.3.0/24) behind router r, which routes the underlays but no
# pod CIDR; the cluster secret and both nodes' conflists. No agent yet.
two_lans() {
  log "building the topology"
  for n in r a1 b1; do make_ns "$n"; done
  link_ns r lana 198.51.100.1/24 a1 eth0 198.51.100.11/24
  link_ns r lanb 203.0.113.1/24 b1 eth0 203.0.113.21/24
  in_ns r sysctl -qw net.ipv4.ip_forward=1
  in_ns a1 ip route add default via 198.51.100.1
  in_ns b1 ip route add default via 203.0.113.1
  write_secret secret
  write_conflist a1 10.244.1.0/24
  write_conflist b1 10.244.3.0/24
}

# write_secret: the cluster credential for this run (random, 0600).
write_secret() {
  head -c 32 /dev/urandom | base64 > "$EW_TMP/$1"
  chmod 600 "$EW_TMP/$1"
}

# agent_start NODE SEGMENT SECRET_FILE LISTEN_IP [BOOTSTRAP_MULTIADDR...]
agent_start() {
  local node=$1 segment=$2 secret=$3 ip=$4; shift 4
  local d="$EW_TMP/$node" boot=""
  mkdir -p "$d"
  for b in "$@"; do boot="$boot\"$b\","; done
  cat > "$d/agent.toml" <<TOML
nodeName = "$node"
stateDir = "$d/state"
segment = "$segment"
resyncIntervalSecs = 2
[api]
socket = "$d/agent.sock"
[p2p]
listen = ["/ip4/$ip/tcp/7333", "/ip4/$ip/udp/7333/quic-v1"]
bootstrap = [${boot%,}]
clusterSecretFile = "$EW_TMP/$secret"
peerGraceSecs = ${EW_GRACE:-20}
announceIntervalSecs = 5
TOML
  # Per-node additions (relay role, relays, ...), written by the test beforehand.
  [ -f "$d/extra.toml" ] && cat "$d/extra.toml" >> "$d/agent.toml"
  # Not through in_ns: $! must be the agent itself (ip netns exec execs it), so that
  # kill and kill -9 reach the agent and not a subshell.
  ip netns exec "$(ns "$node")" "$EW_BIN/edgeway-agent" --config "$d/agent.toml" --log "${EW_LOG:-info}" run >> "$EW_TMP/$node-agent.log" 2>&1 &
  EW_PIDS+=("$!")
  eval "EW_AGENT_PID_${node//-/_}=$!"
  wait_for "agent $node API" 10 test -S "$d/agent.sock"
}

agent_pid() { local v="EW_AGENT_PID_${1//-/_}"; echo "${!v}"; }

# agent_kill NODE [SIGNAL]: signals the node's agent and waits until it has exited.
agent_kill() {
  local pid
  pid=$(agent_pid "$1")
  kill "-${2:-TERM}" "$pid"
  dead() { ! kill -0 "$pid" 2>/dev/null; }
  wait_for "agent $1 (pid $pid) to exit" 10 dead
}

# api NODE PATH: GET on the node's agent socket.
api() { curl -sf --max-time 5 --unix-socket "$EW_TMP/$1/agent.sock" "http://agent$2"; }

peer_id() { api "$1" /v1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["peerId"])'; }

# wait_for WHAT SECONDS CMD...: retries CMD every 0.2 s, bounded.
wait_for() {
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || fail "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

# has_route NODE IP: edgeway's table on NODE routes IP (v4 or v6) through the tunnel.
# (A node without IPv6 routes has no v6 table 7332: that is no error here.)
has_route() { { in_ns "$1" ip route show table 7332; in_ns "$1" ip -6 route show table 7332 2>/dev/null || true; } | grep "^$2 "; } >/dev/null
no_route() { ! has_route "$1" "$2"; }

metric() { # metric NODE NAME_REGEX -> sum of matching samples
  api "$1" /metrics | awk -v re="$2" '$0 !~ /^#/ && $1 ~ re {s += $2} END {printf "%d\n", s}'
}

# members NODE N: NODE counts at least N proven members.
members() { [ "$(metric "$1" '^edgeway_peers$')" -ge "$2" ]; }
